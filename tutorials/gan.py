# %% [markdown]
# # Generative adversarial networks: synthesise ultrasound-like images, then translate T1 MR into T2.
#
# **Lecture topic:** generative adversarial networks (GANs) and image synthesis.
#
# **What you will learn:**
# - the adversarial game: a generator turns noise into images, a discriminator tells real from
#   generated, and each is trained against the other (Goodfellow et al. 2014; DCGAN, Radford et al. 2016);
# - how to read GAN training curves, which do not simply fall: the two losses balance each other;
# - how to judge generated images without trusting the losses (here: the intensity histogram);
# - conditional image-to-image synthesis (pix2pix): a U-Net generator, a patch discriminator and an
#   L1 term that turn a T1-weighted slice into a T2-weighted one.
#
# **Data:** synthetic B-mode ultrasound images (``data_utils.synthetic.make_ultrasound_dataset``) for the
# DCGAN; registered T1/T2 head slices (``data_utils.synthetic.make_modality_pairs``) for pix2pix.
#
# **Run it:**  ``python tutorials/gan.py [--quick]``  (about 2 min on a laptop CPU; ``--quick`` ~20 s).
# A few minutes of CPU training give rough images; the point is the mechanics and the curves.
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
tut = common.start("gan", "DCGAN ultrasound synthesis and pix2pix T1-to-T2 translation", quick=QUICK)

import keras
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

import models
from data_utils.synthetic import make_modality_pairs, make_ultrasound_dataset

from training.adversarial import GANTrainer, Pix2PixTrainer


IMAGE_SIZE = tut.pick(32, 16)  # pixels per side of the ultrasound images
NUM_IMAGES = tut.pick(1024, 384)  # --quick: 24 steps an epoch
LATENT_DIM = 32  # length of the generator's noise vector z
GAN_EPOCHS = tut.pick(30, 8)
BATCH_SIZE = 16
GAN_LEARNING_RATE = 2e-4  # DCGAN's Adam(2e-4, beta_1=0.5)
PAIR_SIZE = 32  # pixels per side of the T1/T2 slices
NUM_PAIRS = tut.pick(256, 80)
P2P_EPOCHS = tut.pick(20, 6)
P2P_LEARNING_RATE = 1e-3  # faster than the paper's 2e-4: a few hundred steps must do here
BN_MOMENTUM = 0.8  # BatchNorm running averages keep up in a short run (Keras default 0.99)
L1_WEIGHT = 100.0  # pix2pix's weight of the L1 term against the adversarial term

# %% [markdown]
# ## Part 1: DCGAN on ultrasound-like images
# The generator maps a noise vector ``z`` to an image with transposed convolutions (ending in
# ``tanh``, so images are scaled to [-1, 1]); the discriminator is a CNN that outputs one logit,
# "real" or "generated". Every training step: the discriminator learns on a batch of real and a
# batch of generated images, then the generator learns to make the discriminator call its images
# real. ``GANTrainer`` holds both networks and both optimisers and does this in ``train_step``.

# %%
images, _, _ = make_ultrasound_dataset(NUM_IMAGES, image_size=IMAGE_SIZE, num_classes=2, seed=tut.seed)
real = images * 2.0 - 1.0
# With Keras' default batch-norm momentum (0.99) the generator's BatchNorm still uses almost its
# initial statistics at inference after a few hundred steps, and every sample comes out as the same
# grey fan: it looks like mode collapse but is only stale running averages. Hence bn_momentum.
generator = models.get("dcgan_generator", latent_dim=LATENT_DIM, output_shape=(IMAGE_SIZE, IMAGE_SIZE, 1),
                       filters=(128, 64, 32), bn_momentum=BN_MOMENTUM)
discriminator = models.get("dcgan_discriminator", input_shape=(IMAGE_SIZE, IMAGE_SIZE, 1), filters=(32, 64, 128))
print(f"generator {generator.count_params():,} parameters, discriminator {discriminator.count_params():,}")


def histogram_distance(a, b, bins=20):
    """Total-variation distance between two pixel-intensity histograms on [-1, 1] (0 = identical, 1 = disjoint)."""
    ha = np.histogram(np.clip(a, -1, 1), bins=bins, range=(-1, 1))[0] / a.size
    hb = np.histogram(np.clip(b, -1, 1), bins=bins, range=(-1, 1))[0] / b.size
    return 0.5 * float(np.abs(ha - hb).sum())


def diversity(images):
    """Mean distance between two different images of a set (pixels, L2): 0 if all are the same."""
    flat = images.reshape(len(images), -1).astype("float64")
    squared = (flat**2).sum(axis=1)
    distances = np.sqrt(np.maximum(squared[:, None] + squared[None] - 2 * flat @ flat.T, 0.0))
    return float(distances[np.triu_indices(len(images), 1)].mean())


gan = GANTrainer(generator, discriminator, latent_dim=LATENT_DIM, seed=tut.seed)
gan.compile(generator_optimizer=keras.optimizers.Adam(GAN_LEARNING_RATE, beta_1=0.5),
            discriminator_optimizer=keras.optimizers.Adam(GAN_LEARNING_RATE, beta_1=0.5))
histogram_before = histogram_distance(gan.generate(256, seed=1), real)
dataset = tf.data.Dataset.from_tensor_slices(real).shuffle(NUM_IMAGES, seed=tut.seed).batch(BATCH_SIZE, drop_remainder=True)
gan_history = gan.fit(dataset, epochs=GAN_EPOCHS, verbose=2).history
generated = gan.generate(256, seed=1)
histogram_after = histogram_distance(generated, real)
# Mode collapse shows as generated images that are much more alike than real ones: compare the mean
# distance between two generated images with that between two real ones (1 = as varied as the data).
diversity_ratio = diversity(generated) / diversity(real[:256])
print(f"intensity-histogram distance to real images: {histogram_before:.3f} untrained, {histogram_after:.3f} trained")
print(f"diversity (mean distance between two samples) generated / real: {diversity_ratio:.2f} "
      f"({'no collapse' if diversity_ratio > 0.3 else 'the samples are collapsing onto a few modes'})")

# %% [markdown]
# ## Reading the curves
# A GAN's losses are not a score: the discriminator's loss rises when the generator improves, and
# vice versa. What to watch: neither side should win outright (discriminator loss near 0 means the
# generator gets no useful gradient), and ``d_real`` vs ``d_fake`` (the discriminator's mean logits
# on real and generated images) should stay within reach of each other. In this short run the
# discriminator stays ahead (see the numbers printed below); the non-saturating generator loss
# ``-log D(G(z))`` still gives the generator a strong gradient then, which is why DCGAN uses it.
#
# Look at the samples too: they differ from one another (the diversity printed above: 1 would be as
# varied as the real images, near 0 all the same), and they have the fan and its speckle, but a run
# this short rarely draws a clear cyst, which half of the real images show. More epochs help.

# %%
p_real, p_fake = 1 / (1 + np.exp(-gan_history["d_real"][-1])), 1 / (1 + np.exp(-gan_history["d_fake"][-1]))
print(f"last epoch: the discriminator gives real images p(real) ~ {p_real:.2f} and generated ones ~ {p_fake:.2f} "
      f"(sigmoid of the mean logits); {'it is ahead' if p_real - p_fake > 0.2 else 'neither side wins'}")
fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
axes[0].plot(gan_history["d_loss"], label="discriminator")
axes[0].plot(gan_history["g_loss"], label="generator")
axes[0].set(xlabel="epoch", title="losses"), axes[0].legend()
axes[1].plot(gan_history["d_real"], label="on real"), axes[1].plot(gan_history["d_fake"], label="on generated")
axes[1].set(xlabel="epoch", title="mean discriminator logit"), axes[1].legend()
axes[2].hist(real.ravel(), bins=40, range=(-1, 1), alpha=0.6, density=True, label="real")
axes[2].hist(generated.ravel(), bins=40, range=(-1, 1), alpha=0.6, density=True, label="generated")
axes[2].set(title="pixel intensities"), axes[2].legend()
tut.save_figure(fig, "gan_curves.png")

fig, axes = plt.subplots(2, 8, figsize=(12, 3.3))
for col in range(8):
    axes[0, col].imshow(real[col, ..., 0], cmap="gray", vmin=-1, vmax=1)
    axes[1, col].imshow(generated[col, ..., 0], cmap="gray", vmin=-1, vmax=1)
    axes[0, col].axis("off"), axes[1, col].axis("off")
axes[0, 0].set_title("real", loc="left"), axes[1, 0].set_title("generated", loc="left")
tut.save_figure(fig, "gan_samples.png")

# %% [markdown]
# ## Part 2: conditional synthesis with pix2pix (T1 -> T2)
# Now the generator is given an image, not noise: a T1-weighted slice, and must produce the T2
# slice of the same head. CSF is dark on T1 and bright on T2, grey and white matter swap order, so
# no intensity curve does it: the network must recognise tissues from context. The pix2pix recipe:
# - a U-Net generator (skip connections carry the anatomy through at full resolution);
# - a PatchGAN discriminator that sees (T1, T2) pairs and judges every patch: real pair or not;
# - an L1 term (weight 100) that pulls the output towards the true T2; the adversarial term keeps
#   it sharp where L1 alone would blur.

# %%
pairs = make_modality_pairs(NUM_PAIRS + 16, image_size=PAIR_SIZE, contrasts=("t1", "t2"), seed=tut.seed)
t1 = np.clip(pairs["t1"], 0, 1.2) / 0.6 - 1.0  # MR about [0, 1.2] -> [-1, 1]
t2 = np.clip(pairs["t2"], 0, 1.2) / 0.6 - 1.0
t1_train, t2_train, t1_test, t2_test = t1[:NUM_PAIRS], t2[:NUM_PAIRS], t1[NUM_PAIRS:], t2[NUM_PAIRS:]
unet = models.get("pix2pix_generator", input_shape=(PAIR_SIZE, PAIR_SIZE, 1), output_channels=1,
                  filters=(32, 64, 128), bn_momentum=BN_MOMENTUM)
# The critic sees one tensor, the (T1, T2) channels side by side, as the trainer hands it over.
critic = models.get("patchgan_discriminator", input_shape=(PAIR_SIZE, PAIR_SIZE, 1), target_channels=1,
                    filters=(32, 64, 128), bn_momentum=BN_MOMENTUM)
pix2pix = Pix2PixTrainer(unet, critic, l1_weight=L1_WEIGHT, seed=tut.seed)
pix2pix.compile(generator_optimizer=keras.optimizers.Adam(P2P_LEARNING_RATE, beta_1=0.5),
                discriminator_optimizer=keras.optimizers.Adam(P2P_LEARNING_RATE, beta_1=0.5))


def test_l1():
    """Mean absolute error of synthetic vs true T2 on the held-out heads, and the synthetic images.

    The generator runs in inference mode: no dropout, BatchNorm with its running statistics (which
    follow a short run thanks to ``BN_MOMENTUM``).
    """
    synthetic = keras.ops.convert_to_numpy(unet(t1_test, training=False))
    return float(np.mean(np.abs(synthetic - t2_test))), synthetic


l1_before, _ = test_l1()
train_pairs = tf.data.Dataset.from_tensor_slices({"image": t1_train, "target": t2_train})
train_pairs = train_pairs.shuffle(NUM_PAIRS, seed=tut.seed).batch(16)
p2p_history = pix2pix.fit(train_pairs, epochs=P2P_EPOCHS, verbose=2).history
l1_after, synthetic_t2 = test_l1()
identity_l1 = float(np.mean(np.abs(t1_test - t2_test)))  # "synthesis" by copying the T1 image
mean_t2_l1 = float(np.mean(np.abs(t2_train.mean(axis=0) - t2_test)))  # ignore the input: the average T2 slice
print(f"test L1 (T2 scaled to [-1, 1]): untrained {l1_before:.3f}, copy T1 {identity_l1:.3f}, "
      f"average training T2 {mean_t2_l1:.3f}, pix2pix {l1_after:.3f}")
print(f"pix2pix's error is {l1_after / identity_l1:.2f} x that of copying T1 and {l1_after / mean_t2_l1:.2f} x that "
      "of the average T2 slice" + (": these synthetic heads are so alike that the average is a strong baseline, "
                                   "and in this short run pix2pix has learned little more than that average head "
                                   "(the synthetic T2s below look alike); train longer to see each head's own "
                                   "anatomy" if l1_after > 0.8 * mean_t2_l1 else ""))

fig, axes = plt.subplots(3, 6, figsize=(10, 5.4))
for col in range(6):
    for row, (batch, name) in enumerate(((t1_test, "T1 (input)"), (synthetic_t2, "synthetic T2"), (t2_test, "true T2"))):
        axes[row, col].imshow(batch[col, ..., 0], cmap="gray", vmin=-1, vmax=1)
        axes[row, col].set_xticks([]), axes[row, col].set_yticks([])
        axes[row, 0].set_ylabel(name, fontsize=9)
tut.save_figure(fig, "pix2pix_t1_to_t2.png")

# %% [markdown]
# ## What we learned
# - A GAN learns to generate by competition; its losses show the balance of the game, not the
#   quality of the images, so judge samples by other means: the intensity histogram for quality and
#   the distance between samples for diversity here (FID on real projects).
# - Stale BatchNorm statistics can make every sample look the same at inference; check the
#   diversity number before calling it mode collapse.
# - Conditional GANs turn synthesis into translation: the input image fixes the anatomy and the
#   network only has to learn how each tissue looks in the other contrast.
# - Judge a translation against the simple answers: copying the input and predicting the average
#   target. Here pix2pix beats copying T1 clearly (the ratios are printed above); how far it gets
#   below the average T2 slice is the honest measure of what it learned about each head.
# - The L1 term does most of the work in a short run; in the pix2pix paper the adversarial term is
#   what keeps textures and edges sharp, which needs far longer training than this (exercise 2).
#
# Try next:
# 1. Train the DCGAN with ``gan_loss="least_squares"`` or ``"wasserstein"`` (with ``discriminator_steps=5``).
#    Do the curves and samples behave differently?
# 2. Set ``L1_WEIGHT = 0`` (adversarial only) and then train with L1 only (a plain U-Net regression,
#    ``unet.compile(loss="mae")``). Compare sharpness and the lesion visibility in T2.
# 3. Synthesise CT from T1 (``contrasts=("t1", "ct")``): why is the skull easy and the air/bone
#    boundary the hard part?
# 4. Mode collapse: shrink the generator (``filters=(32, 16, 8)``) and look at the sample diversity.

# %%
tut.finish(
    {"histogram_distance_untrained": histogram_before, "histogram_distance_trained": histogram_after,
     "final_d_loss": gan_history["d_loss"][-1], "diversity_ratio": diversity_ratio,
     "pix2pix_l1_untrained": l1_before, "copy_t1_l1": identity_l1, "mean_t2_l1": mean_t2_l1,
     "pix2pix_over_copy_t1": l1_after / identity_l1, "pix2pix_l1_trained": l1_after, "pix2pix_train_l1_first": p2p_history["l1"][0],
     "pix2pix_train_l1_last": p2p_history["l1"][-1]},
    expect={
        "histogram_distance_trained": ("<=", 0.5 * histogram_before),  # generated intensities move towards real ones
        # --quick over seeds 0-2, oneDNN on and off, AMD EPYC AVX-512 (15-20 s CPU): histogram distance
        # 0.173-0.231 of 0.866; diversity 0.443-0.586 (0.20 with Keras' default BatchNorm momentum);
        # pix2pix train L1 last / first 0.17-0.21; pix2pix / copy-T1 0.390-0.436; D ahead (p 0.81-0.86 vs 0.14-0.17).
        "diversity_ratio": (">=", 0.3),  # no mode collapse
        "pix2pix_train_l1_last": ("<=", 0.75 * p2p_history["l1"][0]),  # the translation is being learned
        "pix2pix_over_copy_t1": ("<=", 0.6),  # and it beats copying the input on unseen heads
    },
)
