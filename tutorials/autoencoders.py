# %% [markdown]
# # Autoencoders and variational autoencoders on pelvic MR slices: compress, reconstruct, generate.
#
# **Lecture topic:** autoencoders (and a first generative model).
#
# **What you will learn:**
# - what an autoencoder is: an encoder squeezes an image through a small code (the bottleneck), a
#   decoder rebuilds it, and the reconstruction error is the only training signal (no labels);
# - why reconstructions are blurred: what the code cannot hold (fine texture, noise) is replaced by
#   its average, which is what a mean-squared error rewards;
# - the variational autoencoder (VAE): the encoder outputs a Gaussian per image, the
#   reparameterisation trick samples from it differentiably, and a KL term pulls all Gaussians
#   towards N(0, I);
# - what that buys: a smooth latent space (does it organise the anatomy? we measure it), and new
#   images by decoding random draws from the prior.
#
# **Data:** axial slices of synthetic male-pelvis T2 MR volumes (``data_utils.synthetic.pelvic``:
# bladder, prostate and rectum in textured tissue with a bias field and Rician noise). Slices of the
# test volumes are never seen in training.
#
# **Run it:**  ``python tutorials/autoencoders.py [--quick]``  (about 2 min on a laptop CPU; ``--quick`` ~25 s).
#
# In a notebook (`jupytext --to notebook`, VS Code, Jupyter, Colab), set `QUICK = True` in the
# first cell or the environment variable `TUTORIAL_QUICK=1` for the short run.

# %%
# Setup: inside a checkout of the kit this cell only finds tutorials/ (from there or from the repository root);
# on a fresh machine or Colab it first clones the kit from KIT_URL (your course's copy) and installs it.
# (Every notebook carries this cell because a notebook must run on its own.)
QUICK = False  # True, or the environment variable TUTORIAL_QUICK=1, chooses the short run
import os, sys  # noqa: E401
kit = next((d for d in (sys.path[0], ".", "tutorials", "kit/tutorials") if os.path.isfile(os.path.join(d or ".", "common.py"))), None)
if kit is None and os.system(f"git clone -q {os.environ.get('KIT_URL', '')} kit && {sys.executable} -m pip install -q -r kit/requirements.txt"):
    raise RuntimeError("could not clone and install the kit from KIT_URL (set os.environ['KIT_URL'] to your course's git URL)")
sys.path.insert(0, os.path.abspath(kit or "kit/tutorials"))
import common  # noqa: E402

# %%
tut = common.start("autoencoders", "Convolutional autoencoder and VAE on pelvic MR slices", quick=QUICK)

import keras
import matplotlib.pyplot as plt
import numpy as np
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

import models
from data_utils.synthetic.pelvic import PELVIC_LABELS, make_pelvic_case
from models.autoencoder import get_decoder, get_encoder

IMAGE_SIZE = 32  # pixels per side of a slice (a 120 mm field of view)
SLICES_PER_VOLUME = 12  # axial slices, 8 mm apart, from the top of the bladder to below the prostate
NUM_TRAIN_VOLUMES = tut.pick(48, 12)  # two of them are held back for validation
NUM_TEST_VOLUMES = tut.pick(8, 4)
EPOCHS = tut.pick(30, 8)  # autoencoder epochs
VAE_EPOCHS = tut.pick(60, 12)  # the VAE is cheaper per step and needs longer to use its code
VAE_BATCH_SIZE = 8  # small batches: more, noisier updates help the VAE start using its latent code
BATCH_SIZE = 16
LEARNING_RATE = 3e-3
AE_FILTERS = (16, 32, 64)  # encoder channels; each stage halves the size: 32 -> 16 -> 8 -> 4
AE_CODE_CHANNELS = 4  # the bottleneck is 4 x 4 x 4 = 64 numbers for 1024 pixels
LATENT_DIM = 2  # the VAE's latent vector; 2 so that we can draw the latent space directly
KL_WEIGHT = 0.01  # beta of the VAE, relative to a per-pixel MSE (small: these slices differ only subtly)
INITIAL_LOG_VAR = -4.0  # start of the encoder's log-variance output (see the VAE cell)

# %% [markdown]
# ## The data: slices through synthetic pelvic MR volumes
# Each volume is drawn from its own seed; we cut it into axial slices and scale each volume to
# about [0, 1] (MR intensities have no absolute unit). Volumes, not slices, are split into train
# and test, so no test slice has a neighbour in the training set. We keep the bladder area of every
# slice: not to train on, but to see later whether the latent space has organised the anatomy.

# %%
def load_slices(seeds):
    """Slices (N, H, W, 1) in [0, 1] and the bladder area (pixels) of each."""
    images, bladder = [], []
    for seed in seeds:
        case = make_pelvic_case(seed, shape=(SLICES_PER_VOLUME, IMAGE_SIZE, IMAGE_SIZE),
                                spacing=(8.0, 120.0 / IMAGE_SIZE, 120.0 / IMAGE_SIZE))
        images.append(np.clip(case["image"] / np.percentile(case["image"], 99.5), 0.0, 1.0))
        bladder.append((case["label"] == 1).sum(axis=(1, 2)))
    return np.concatenate(images)[..., None].astype("float32"), np.concatenate(bladder)


first_test_seed = 10_000 * (tut.seed + 1)  # train and test volumes come from disjoint seeds
x_train, _ = load_slices(range(first_test_seed - NUM_TRAIN_VOLUMES, first_test_seed))
# The last two training volumes are held back for validation (the curves); the test volumes are only
# used for the final numbers.
x_train, x_val = x_train[:-2 * SLICES_PER_VOLUME], x_train[-2 * SLICES_PER_VOLUME:]
x_test, bladder_test = load_slices(range(first_test_seed, first_test_seed + NUM_TEST_VOLUMES))
# Real data instead: a folder of NIfTI pairs (case000_img.nii.gz + case000_mask.nii.gz), split by case:
#   from data_utils.datasets import find_cases, load_cases, split_cases
#   split = split_cases(find_cases("data/pelvic"), val_fraction=0.0, test_fraction=0.2, seed=tut.seed)
#   scale = lambda v: np.clip(v / np.percentile(v, 99.5), 0, 1)  # then resample slices to IMAGE_SIZE
#   x_test = np.concatenate([scale(c["image"]) for c in load_cases(split["test"])])[..., None]
print(f"train {x_train.shape}, test {x_test.shape} ({PELVIC_LABELS[1]} visible in "
      f"{np.mean(bladder_test > 0):.0%} of test slices)")

# A baseline any model must beat: always predict the average training slice.
mean_image_mse = float(np.mean((x_test - x_train.mean(axis=0)) ** 2))
print(f"MSE of predicting the mean slice: {mean_image_mse:.4f}")

fig, axes = plt.subplots(1, SLICES_PER_VOLUME, figsize=(1.3 * SLICES_PER_VOLUME, 1.6))
for k, ax in enumerate(axes):
    ax.imshow(x_test[k, ..., 0], cmap="gray", vmin=0, vmax=1)
    ax.set_title(f"slice {k}", fontsize=8)
    ax.axis("off")
tut.save_figure(fig, "pelvic_slices.png")

# %% [markdown]
# ## A convolutional autoencoder
# The encoder is a stack of stride-2 convolutions (each halves the size), ending in a 1x1
# convolution to a few channels: the code. The decoder mirrors it with transposed convolutions.
# Trained with ``fit(x, x)``: the input is its own target. The bottleneck is what makes it learn
# something: 64 numbers cannot store 1024 pixels, so the network must keep what slices share
# (organ shapes, positions, brightness) and drop what they do not (texture, noise).

# %%
autoencoder = models.get("conv_autoencoder", input_shape=(IMAGE_SIZE, IMAGE_SIZE, 1), filters=AE_FILTERS,
                         latent_channels=AE_CODE_CHANNELS, norm="instance")
code_shape = get_encoder(autoencoder).output.shape[1:]
print(f"autoencoder: {autoencoder.count_params():,} parameters, code {code_shape} "
      f"= {int(np.prod(code_shape))} numbers per {IMAGE_SIZE * IMAGE_SIZE}-pixel slice")
autoencoder.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="mse")
ae_history = autoencoder.fit(x_train, x_train, validation_data=(x_val, x_val), epochs=EPOCHS,
                             batch_size=BATCH_SIZE, verbose=2, callbacks=[tut.tensorboard("autoencoder")]).history
ae_reconstruction = autoencoder.predict(x_test, verbose=0)
ae_mse = float(np.mean((ae_reconstruction - x_test) ** 2))
print(f"autoencoder test MSE {ae_mse:.4f} (mean-slice baseline {mean_image_mse:.4f})")

# %% [markdown]
# ## The variational autoencoder
# An ordinary autoencoder's codes can sit anywhere; decoding a code that no image produced gives
# rubbish, so it cannot generate. A VAE makes the code space usable:
# - the encoder outputs a mean ``mu`` and a log-variance ``log s^2`` for every image;
# - the code is a *sample* ``z = mu + s * eps`` with ``eps ~ N(0, I)`` (the reparameterisation trick:
#   the randomness is in ``eps``, so gradients still reach ``mu`` and ``s``);
# - a KL term ``KL(N(mu, s^2) || N(0, I))`` charges for moving away from the standard normal.
#
# The decoder therefore has to cope with whole neighbourhoods of codes, and all images share one
# region around the origin: any point drawn from N(0, I) decodes to a plausible slice. The kit's
# ``models.get("vae")`` adds the KL term itself (``add_loss``), so ``compile(loss="mse")`` and
# ``fit(x, x)`` train the full objective (the evidence lower bound, scaled per pixel).

# %%
vae = models.get("vae", input_shape=(IMAGE_SIZE, IMAGE_SIZE, 1), latent_dim=LATENT_DIM, filters=(16, 32),
                 dense_units=64, kl_weight=KL_WEIGHT / (IMAGE_SIZE * IMAGE_SIZE), seed=tut.seed)
# Start every posterior narrow (log-variance -4, standard deviation 0.14) instead of N(mu, 1): with
# unit noise on the codes the decoder first learns to ignore them and may never start using them
# ("posterior collapse"); the KL term widens the posteriors again where that costs nothing.
get_encoder(vae).get_layer("z_log_var").bias.assign(np.full(LATENT_DIM, INITIAL_LOG_VAR, "float32"))
vae.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="mse")
vae_history = vae.fit(x_train, x_train, validation_data=(x_val, x_val), epochs=VAE_EPOCHS,
                      batch_size=VAE_BATCH_SIZE, verbose=2, callbacks=[tut.tensorboard("vae")]).history
vae_reconstruction = vae.predict(x_test, verbose=0)  # at inference the VAE decodes the mean mu
vae_mse = float(np.mean((vae_reconstruction - x_test) ** 2))
print(f"VAE ({LATENT_DIM} latent numbers) test MSE {vae_mse:.4f}")

fig, ax = plt.subplots(figsize=(5, 3.2))
ax.plot(ae_history["val_loss"], label="autoencoder (validation MSE)")
ax.plot(vae_history["val_loss"], label="VAE (validation MSE + KL)")
ax.axhline(mean_image_mse, color="grey", ls="--", label="predict the mean slice")
ax.set(xlabel="epoch", ylabel="loss", title="Learning to reconstruct")
ax.legend(fontsize=8)
tut.save_figure(fig, "loss_curves.png")

# %% [markdown]
# ## Reconstructions
# Both rebuild the organs; both lose the fine texture. The VAE has only two numbers per slice and
# a KL penalty, so it can keep only the big picture (how much bladder, where the rectum is). One
# might expect the autoencoder, with 32 times as many numbers, to be far better on new slices. It is
# not, in these short runs: the VAE's test error is at most about 1.5x the autoencoder's (the ratio is
# printed; 0.99-1.45 in our quick runs, seeds 0-2 with oneDNN on and off), and the autoencoder's
# training error is below its test error (0.69-0.84x). Part of what its extra numbers store is each
# training slice's own texture and noise, which does not carry over to new slices: it overfits.

# %%
print(f"test MSE: autoencoder ({int(np.prod(code_shape))} numbers) {ae_mse:.4f}, VAE ({LATENT_DIM} numbers) "
      f"{vae_mse:.4f}, mean slice {mean_image_mse:.4f}; the VAE's error is {vae_mse / ae_mse:.2f}x the "
      f"autoencoder's")
print(f"autoencoder: training MSE {ae_history['loss'][-1]:.4f} vs test MSE {ae_mse:.4f} "
      f"({ae_history['loss'][-1] / ae_mse:.2f}x): {'it overfits' if ae_history['loss'][-1] < 0.9 * ae_mse else 'no clear overfitting'}")
show = np.linspace(0, len(x_test) - 1, 8).astype(int)
fig, axes = plt.subplots(3, len(show), figsize=(1.5 * len(show), 4.8))
for row, (images, name) in enumerate(((x_test, "input"), (ae_reconstruction, "autoencoder"),
                                      (vae_reconstruction, "VAE"))):
    for col, i in enumerate(show):
        axes[row, col].imshow(images[i, ..., 0], cmap="gray", vmin=0, vmax=1)
        axes[row, col].set_xticks([]), axes[row, col].set_yticks([])
    axes[row, 0].set_ylabel(name)
tut.save_figure(fig, "reconstructions.png")

# %% [markdown]
# ## The latent space
# Every test slice becomes one point ``mu`` in the VAE's 2D latent space. We colour the points by
# bladder area, something the VAE was never told about: if slices with similar anatomy land close
# together, the code has organised the anatomy by itself. Next to it we decode a regular grid of
# latent points: walking across the space morphs one anatomy smoothly into another.

# %%
z_mean, z_log_var = get_encoder(vae).predict(x_test, verbose=0)
decoder = get_decoder(vae)
grid_size = 7
grid = np.linspace(-2.0, 2.0, grid_size)  # +-2 standard deviations of the prior
grid_codes = np.array([[gx, gy] + [0.0] * (LATENT_DIM - 2) for gy in grid[::-1] for gx in grid], "float32")
decoded_grid = decoder.predict(grid_codes, verbose=0)[..., 0]
mosaic = decoded_grid.reshape(grid_size, grid_size, IMAGE_SIZE, IMAGE_SIZE).transpose(0, 2, 1, 3)
mosaic = mosaic.reshape(grid_size * IMAGE_SIZE, grid_size * IMAGE_SIZE)

fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
points = axes[0].scatter(z_mean[:, 0], z_mean[:, 1], c=bladder_test, cmap="viridis", s=18)
fig.colorbar(points, ax=axes[0], label="bladder area (pixels)")
axes[0].set(xlabel="z[0]", ylabel="z[1]", title="test slices in the VAE latent space")
axes[1].imshow(mosaic, cmap="gray", vmin=0, vmax=1, extent=(-2.0, 2.0, -2.0, 2.0))
axes[1].set(xlabel="z[0]", ylabel="z[1]", title="decoded latent grid")
tut.save_figure(fig, "latent_space.png")

# %% [markdown]
# ## Sampling new slices from the prior
# Draw ``z ~ N(0, I)`` and decode: slices that no scanner produced. They are blurry (the price of
# a 2-number code and a pixel loss) but anatomically plausible. Decoding random codes with the plain
# autoencoder's decoder gives no such guarantee, because nothing made its codes fill a known region.

# %%
rng = np.random.default_rng(tut.seed)
prior_samples = decoder.predict(rng.standard_normal((16, LATENT_DIM)).astype("float32"), verbose=0)
fig, axes = plt.subplots(2, 8, figsize=(12, 3.2))
for ax, image in zip(axes.ravel(), prior_samples, strict=True):
    ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
    ax.axis("off")
fig.suptitle("VAE: decoded samples z ~ N(0, I)")
tut.save_figure(fig, "prior_samples.png")

# Does the latent code carry information? KL per latent dimension (0 = ignored, "posterior collapse").
kl_per_dim = 0.5 * np.mean(z_mean**2 + np.exp(z_log_var) - 1.0 - z_log_var, axis=0)
print("KL per latent dimension (nats):", np.round(kl_per_dim, 3))

# How much of the bladder area can a straight line through the latent space explain? (R^2, 0 to 1)
bladder_r2 = float(r2_score(bladder_test, LinearRegression().fit(z_mean, bladder_test).predict(z_mean)))
print(f"bladder area explained linearly by the 2 latent numbers: R^2 = {bladder_r2:.2f} ("
      + ("the code tracks the bladder size" if bladder_r2 > 0.3 else
         "little: in this run the code has not lined up with the bladder size; look at the scatter for "
         "other structure, and train longer") + ")")

# %% [markdown]
# ## What we learned
# - An autoencoder learns a compressed description of its data with no labels at all; what does
#   not fit through the bottleneck comes back as its average, so reconstructions are smooth.
# - A VAE encodes a distribution, not a point, and pays a KL price for straying from N(0, I). Its
#   latent space is continuous (neighbouring codes decode to similar slices; check whether the
#   bladder size, never given as a label, varies smoothly across it), and it can generate by
#   decoding prior samples.
# - The KL weight (beta) trades reconstruction for a well-behaved latent space; too much and the
#   code is ignored (every KL per dimension near 0).
#
# Try next:
# 1. Make the bottleneck smaller (``AE_CODE_CHANNELS = 1``) and larger (16). How does the test MSE
#    change, and when does the "autoencoder" start copying noise?
# 2. Set ``KL_WEIGHT`` to 1.0 and to 0.01. Look at the latent scatter, the prior samples and the
#    KL per dimension. Which setting collapses, which one cannot generate?
# 3. Use ``LATENT_DIM = 16`` and plot the first two principal components of ``z_mean`` instead.
# 4. Denoising autoencoder: add Rician noise to the inputs only (``data_utils.augment.rician_noise``)
#    and keep clean targets. Does it remove the noise from new images?
# 5. Anomaly detection: draw slices with an unusual anatomy and compare their reconstruction errors
#    with those of normal slices.

# %%
tut.finish(
    {"mean_image_mse": mean_image_mse, "autoencoder_mse": ae_mse, "vae_mse": vae_mse,
     "vae_over_autoencoder_mse": vae_mse / ae_mse, "ae_train_over_test_mse": ae_history["loss"][-1] / ae_mse,
     "vae_kl_largest_dimension": float(kl_per_dim.max()),
     "latent_bladder_r2": bladder_r2, "final_ae_train_loss": ae_history["loss"][-1]},
    expect={
        # Quick runs, seeds 0-2, oneDNN on and off (AMD EPYC, AVX-512), this version: AE/mean-slice MSE
        # 0.61-0.75, VAE/mean-slice 0.73-0.88, largest KL 2.6-4.7 nats (the latent code is used: no
        # posterior collapse). An AVX2 machine gave AE/mean 0.81 with an earlier version.
        "autoencoder_mse": ("<=", 0.9 * mean_image_mse),  # better than the average slice
        "vae_mse": ("<=", 1.1 * mean_image_mse),  # two numbers per slice: about as good as the average
        "vae_kl_largest_dimension": (">=", 0.5),
        "ae_train_over_test_mse": ("<=", 0.9),  # the autoencoder overfits: 0.69-0.84
    },
)
