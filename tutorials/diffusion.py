# %% [markdown]
# # Denoising diffusion models: destroy images with noise, learn to undo it, generate from pure noise.
#
# **Lecture topic:** diffusion models (DDPM and DDIM).
#
# **What you will learn:**
# - the forward process: Gaussian noise added in many small steps, and the closed form
#   ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` that jumps to any step at once;
# - how the noise schedule (linear vs cosine) decides how fast the image disappears;
# - the training objective: a U-Net told the step ``t`` predicts the noise ``eps`` in ``x_t``, with a
#   plain mean squared error (Ho et al. 2020);
# - sampling: DDPM walks back through every step with fresh noise; DDIM takes a few big
#   deterministic steps with the same network, and we time both.
#
# **Data:** synthetic B-mode ultrasound images (``data_utils.synthetic.make_ultrasound_dataset``),
# scaled to [-1, 1].
#
# **Run it:**  ``python tutorials/diffusion.py [--quick]``  (about 2 min on a laptop CPU; ``--quick`` ~20 s).
# The samples of a few minutes' CPU training are blurry sketches; on a GPU, train 100x longer.
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
tut = common.start("diffusion", "Denoising diffusion (DDPM/DDIM) on ultrasound-like images", quick=QUICK)

import time  # noqa: E402

import keras
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

import models
from data_utils.synthetic import make_ultrasound_dataset
from models import diffusion
from training.diffusion_training import DiffusionTrainer

IMAGE_SIZE = tut.pick(32, 16)  # pixels per side
NUM_IMAGES = tut.pick(512, 256)  # training images
TIMESTEPS = tut.pick(400, 50)  # T, steps of the forward process
SCHEDULE = "cosine"  # "linear" (DDPM) or "cosine" (Nichol & Dhariwal); compare them below
EPOCHS = tut.pick(20, 5)
BATCH_SIZE = 32
LEARNING_RATE = 2e-3
EMA_DECAY = tut.pick(0.99, 0.9)  # the sampling network is an average of recent weights
BASE_FILTERS = 16  # channels of the U-Net's first level
DDIM_STEPS = tut.pick(25, 5)  # network calls of the fast sampler
NUM_SAMPLES = 8

# %% [markdown]
# ## The data
# Ultrasound-like images with speckle, scaled from [0, 1] to [-1, 1]: the samplers assume that
# range, and pure noise has the same scale.

# %%
images, _, _ = make_ultrasound_dataset(NUM_IMAGES + 64, image_size=IMAGE_SIZE, num_classes=2, seed=tut.seed)
images = images * 2.0 - 1.0
x_train, x_eval = images[:NUM_IMAGES], images[NUM_IMAGES:]
print(f"train {x_train.shape}, held-out {x_eval.shape}, range [{images.min():.2f}, {images.max():.2f}]")

# %% [markdown]
# ## The forward process: noise, step by step
# Each step keeps ``sqrt(1 - beta_t)`` of the image and adds noise of variance ``beta_t``. After
# ``t`` steps the signal that is left is ``sqrt(abar_t)`` with ``abar_t = prod(1 - beta_s)``, so
# ``x_t`` can be drawn in one go (``models.diffusion.q_sample``). The schedule of ``beta_t`` matters:
# the linear schedule destroys a small image in the first third of the steps, wasting the rest on
# pure noise; the cosine schedule spreads the destruction evenly.

# %%
schedules = {kind: diffusion.make_schedule(kind, TIMESTEPS) for kind in ("linear", "cosine")}
show_steps = np.linspace(0, TIMESTEPS - 1, 6).astype(int)
noise = np.random.default_rng(tut.seed).standard_normal(x_train[:1].shape).astype("float32")
fig, axes = plt.subplots(2, len(show_steps) + 1, figsize=(2 * (len(show_steps) + 1), 4.4))
for row, (kind, schedule) in enumerate(schedules.items()):
    axes[row, 0].plot(schedule.alphas_cumprod, label="signal abar_t")
    axes[row, 0].set_title(f"{kind}: abar_t", fontsize=9)
    axes[row, 0].set_ylim(0, 1.02)
    for col, t in enumerate(show_steps, start=1):
        x_t = keras.ops.convert_to_numpy(diffusion.q_sample(schedule, x_train[:1], np.array([t]), noise))
        axes[row, col].imshow(x_t[0, ..., 0], cmap="gray", vmin=-1.5, vmax=1.5)
        axes[row, col].set_title(f"t = {t}", fontsize=9)
        axes[row, col].axis("off")
tut.save_figure(fig, "forward_process.png")
for kind, schedule in schedules.items():
    half = int(np.argmax(schedule.alphas_cumprod < 0.5))
    print(f"{kind:>6s}: half the signal variance is gone after {half} of {TIMESTEPS} steps")

# %% [markdown]
# ## Training the noise predictor
# Each training step: take clean images, draw a random step ``t`` and noise ``eps`` per image, make
# ``x_t`` with ``q_sample``, and ask the network for ``eps`` given ``(x_t, t)``. The loss is the mean
# squared error between true and predicted noise. Predicting the noise is the same as predicting
# the clean image (``x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``), so a network that
# predicts noise well has learned what ultrasound images look like.
#
# ``DiffusionTrainer`` does exactly this in its ``train_step`` and keeps an exponential moving
# average (EMA) of the weights for sampling. The U-Net (``models.get("diffusion_unet")``) is told
# ``t`` through a sinusoidal embedding added inside every residual block; its output layer starts at
# zero, so before training it predicts "no noise" and the loss is the noise variance, 1.
#
# To see learning clearly we score a fixed held-out set with fixed ``t`` and noise before and after.

# %%
network = models.get("diffusion_unet", input_shape=(IMAGE_SIZE, IMAGE_SIZE, 1), base_filters=BASE_FILTERS,
                     channel_mults=(1, 2), num_res_blocks=1)
print(f"noise-predicting U-Net: {network.count_params():,} parameters")
trainer = DiffusionTrainer(network, schedule=SCHEDULE, timesteps=TIMESTEPS, ema_decay=EMA_DECAY, seed=tut.seed)
trainer.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE))

eval_rng = np.random.default_rng(tut.seed + 1)
eval_batch = {
    "image": x_eval,
    "noise": eval_rng.standard_normal(x_eval.shape).astype("float32"),
    "timestep": eval_rng.integers(0, TIMESTEPS, len(x_eval)).astype("int32"),
}
loss_before = trainer.evaluate(eval_batch, batch_size=len(x_eval), verbose=0, return_dict=True)["loss"]
dataset = tf.data.Dataset.from_tensor_slices(x_train).shuffle(NUM_IMAGES, seed=tut.seed).batch(BATCH_SIZE)
history = trainer.fit(dataset, epochs=EPOCHS, verbose=2).history
loss_after = trainer.evaluate(eval_batch, batch_size=len(x_eval), verbose=0, return_dict=True)["loss"]
print(f"held-out noise-prediction MSE (EMA network): {loss_before:.3f} before, {loss_after:.3f} after training")

# %% [markdown]
# ## Denoising in one step: how good is the network at each noise level?
# From a single prediction we can estimate the clean image at any ``t``. At small ``t`` the estimate
# is sharp; at large ``t`` little of the image is left and the best guess is a blurry "average
# ultrasound image". Sampling will chain many such small guesses.

# %%
schedule = trainer.schedule
probe_steps = np.linspace(TIMESTEPS // 10, int(0.8 * TIMESTEPS), 4).astype(int)  # at t = T - 1, abar ~ 0: nothing left
fig, axes = plt.subplots(3, len(probe_steps), figsize=(2.4 * len(probe_steps), 7))
for col, t in enumerate(probe_steps):
    t_batch = np.full((1,), t, "int32")
    x_t = keras.ops.convert_to_numpy(diffusion.q_sample(schedule, x_eval[:1], t_batch, eval_batch["noise"][:1]))
    eps = trainer.ema_network.predict_on_batch([x_t, t_batch])
    abar = schedule.alphas_cumprod[t]
    x0_hat = np.clip((x_t - np.sqrt(1 - abar) * eps) / np.sqrt(abar), -1, 1)
    for row, (image, title) in enumerate(((x_eval[0], "clean"), (x_t[0], f"x_t, t = {t}"), (x0_hat[0], "estimate of x_0"))):
        axes[row, col].imshow(image[..., 0], cmap="gray", vmin=-1, vmax=1)
        axes[row, col].set_title(title, fontsize=9)
        axes[row, col].axis("off")
tut.save_figure(fig, "one_step_denoising.png")

# %% [markdown]
# ## Sampling: DDPM and DDIM
# **DDPM** (ancestral sampling) starts from pure noise and takes all ``T`` steps back: at each one
# it estimates the clean image, moves a little towards it and adds a little fresh noise. **DDIM**
# uses the same trained network but a deterministic update that can jump over steps, so 10-50
# network calls replace ``T``. Same seed, same starting noise: compare the pictures and the clock.
#
# A fair clock needs one warm-up call first: the first call with a new batch shape compiles the
# network's predict function (seconds), and whichever sampler ran first would be charged for it.
# Once compiled, both samplers cost about the same per network call, so the time ratio should be
# close to the ratio of calls; what is left over is each step's own NumPy work and noise draws.
#
# Do not expect recognisable ultrasound images from a CPU run of this size: the quick run's samples
# are speckle-like texture in a rough fan at best, the full run's blurry sketches. Compare the pixel
# statistics printed below with the real images', and train far longer on a GPU (exercise 4).

# %%
sample_shape = (NUM_SAMPLES, IMAGE_SIZE, IMAGE_SIZE, 1)
trainer.ema_network.predict_on_batch([np.zeros(sample_shape, "float32"), np.zeros(NUM_SAMPLES, "int32")])  # warm-up
start_time = time.perf_counter()
ddpm_images = diffusion.ddpm_sample(trainer.ema_network, schedule, (NUM_SAMPLES, IMAGE_SIZE, IMAGE_SIZE, 1), seed=tut.seed)
ddpm_seconds = time.perf_counter() - start_time
start_time = time.perf_counter()
ddim_images = diffusion.ddim_sample(trainer.ema_network, schedule, (NUM_SAMPLES, IMAGE_SIZE, IMAGE_SIZE, 1),
                                    seed=tut.seed, num_steps=DDIM_STEPS)
ddim_seconds = time.perf_counter() - start_time
call_ratio, time_ratio = TIMESTEPS / DDIM_STEPS, ddpm_seconds / ddim_seconds
print(f"DDPM: {TIMESTEPS} network calls in {ddpm_seconds:.2f} s ({1e3 * ddpm_seconds / TIMESTEPS:.1f} ms a call); "
      f"DDIM: {DDIM_STEPS} calls in {ddim_seconds:.2f} s ({1e3 * ddim_seconds / DDIM_STEPS:.1f} ms a call)")
print(f"DDIM made {call_ratio:.0f}x fewer network calls and took {time_ratio:.1f}x less time "
      f"({time_ratio / call_ratio:.2f} of the call ratio; timings on a shared machine vary)")

fig, axes = plt.subplots(3, NUM_SAMPLES, figsize=(1.6 * NUM_SAMPLES, 5.2))
for row, (batch, name) in enumerate(((x_eval, "real"), (ddpm_images, f"DDPM, {TIMESTEPS} steps"),
                                     (ddim_images, f"DDIM, {DDIM_STEPS} steps"))):
    for col in range(NUM_SAMPLES):
        axes[row, col].imshow(batch[col, ..., 0], cmap="gray", vmin=-1, vmax=1)
        axes[row, col].set_xticks([]), axes[row, col].set_yticks([])
    axes[row, 0].set_ylabel(name, fontsize=9)
tut.save_figure(fig, "samples_ddpm_ddim.png")

fig, ax = plt.subplots(figsize=(5, 3.2))
ax.plot(history["loss"])
ax.set(xlabel="epoch", ylabel="noise-prediction MSE", title="Training loss (1 = predicting no noise)")
tut.save_figure(fig, "training_loss.png")

# A crude check that samples look like the data: mean and spread of pixel values.
print(f"pixel mean/std  real {x_eval.mean():+.2f}/{x_eval.std():.2f}   DDPM {ddpm_images.mean():+.2f}/"
      f"{ddpm_images.std():.2f}   DDIM {ddim_images.mean():+.2f}/{ddim_images.std():.2f}")

# %% [markdown]
# ## What we learned
# - A diffusion model never learns to generate directly: it learns one simple thing, to predict
#   the noise in a noisy image, at every noise level. Generation is that skill applied repeatedly.
# - The schedule decides where training effort goes; for small images the cosine schedule keeps
#   useful signal over more steps than the linear one.
# - The same network can be sampled slowly and stochastically (DDPM, ``T`` calls) or quickly and
#   deterministically (DDIM, a few dozen calls), which is what makes diffusion practical.
#
# Try next:
# 1. Set ``SCHEDULE = "linear"`` and compare the held-out loss and the samples.
# 2. Vary ``DDIM_STEPS`` (1, 5, 25, 100) with the same seed: when do the samples stop changing?
# 3. Sample with ``diffusion.ddim_sample(..., eta=1.0)``: what does the noise do?
# 4. Train longer (``EPOCHS = 200``) on a GPU at ``IMAGE_SIZE = 64``; add attention with
#    ``attention_levels=(1,)`` in ``models.get("diffusion_unet", ...)``.
# 5. Conditional generation: train one model per class of ``make_ultrasound_dataset`` (or add the
#    class as an input channel) and generate cysts on request.

# %%
tut.finish(
    {"eval_loss_before": loss_before, "eval_loss_after": loss_after, "first_epoch_loss": history["loss"][0],
     "last_epoch_loss": history["loss"][-1], "ddpm_seconds": ddpm_seconds, "ddim_seconds": ddim_seconds,
     "ddim_speedup": time_ratio, "ddim_speedup_over_call_ratio": time_ratio / call_ratio},
    expect={
        # Measured --quick, seeds 0-2 x TF_ENABLE_ONEDNN_OPTS 1/0 (AMD EPYC AVX-512), beside each bar.
        "eval_loss_after": ("<=", 0.6 * loss_before),  # 0.26-0.29 x loss_before: it learned to denoise
        "last_epoch_loss": ("<=", 0.8 * history["loss"][0]),  # 0.27-0.29 x the first epoch's: the loss fell
        "ddim_speedup": (">=", 0.3 * call_ratio),  # 7.8-14.8x for 10x fewer calls (wall clock: loose bar)
    },
)
