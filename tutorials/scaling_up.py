# %% [markdown]
# # Scaling up: several devices, mixed precision and XLA — and what changes on a GPU
#
# **Lecture topic:** optimisation in practice (training faster without changing the answer).
#
# **What you will learn**
# - how data parallelism works: `MirroredStrategy` splits each GLOBAL batch over replicas and sums
#   their gradients, so each replica must divide its loss by the global batch size;
# - that training on two replicas gives the same losses as one device with the same global batch
#   (we split this CPU into two logical devices to see it without a GPU);
# - what mixed precision is (16-bit compute, 32-bit weights), why float16 needs loss scaling and
#   bfloat16 does not, and how to switch it on;
# - how to measure whether bfloat16 or XLA (`jit_compile=True`) actually helps on YOUR machine;
# - what changes on a GPU box or a cluster (`get_strategy()`, `TF_CONFIG`).
#
# **Run it:**  `python tutorials/scaling_up.py [--quick]`  (about 1-2 minutes on a laptop CPU; `--quick` ~20 s).
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

# %% [markdown]
# ## Devices first
# Logical devices must be created before TensorFlow starts using the CPU, so the strategy is chosen
# first, before any tensor exists. On a machine with GPUs we use them instead.

# %%
tut = common.start("scaling_up", "MirroredStrategy, mixed precision and XLA", quick=QUICK)

import tensorflow as tf  # noqa: E402

from training import distribute  # noqa: E402

ON_GPU = bool(tf.config.list_physical_devices("GPU"))
N_CPU_REPLICAS = 2  # logical CPU devices used to show mirroring without a GPU
strategy = distribute.get_strategy(num_cpu_replicas=None if ON_GPU else N_CPU_REPLICAS, verbose=True)

import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from data_utils.synthetic import phantom  # noqa: E402
from training import loop, precision  # noqa: E402

IMAGE_SIZE = tut.pick(48, 32)  # pixels per side
NUM_IMAGES = tut.pick(256, 96)  # lesion present in half of them
GLOBAL_BATCH = 16  # samples per step over ALL replicas
EPOCHS = tut.pick(6, 3)
LEARNING_RATE = 0.05
SPEED_STEPS = tut.pick(15, 3)  # timed training steps per precision setting

# %% [markdown]
# ## Data: "is there a lesion?"
# Small MR-like images (soft tissue texture + Rician noise); half contain a bright blob.

# %%
rng = np.random.default_rng(tut.seed)
coords = phantom.coordinate_grid((IMAGE_SIZE, IMAGE_SIZE))
images, labels = [], []
for i in range(NUM_IMAGES):
    image = 0.3 + 0.05 * phantom.smooth_field((IMAGE_SIZE, IMAGE_SIZE), rng, cell=6.0)
    has_lesion = i % 2
    if has_lesion:
        centre = rng.uniform(-IMAGE_SIZE / 4, IMAGE_SIZE / 4, size=2)
        radius = rng.uniform(IMAGE_SIZE / 12, IMAGE_SIZE / 7)
        lesion = phantom.soft_mask(phantom.blob_distance(coords, rng, centre, (radius, radius * 0.8)))
        image = image + 0.4 * lesion
    images.append(phantom.rician_noise(image, rng, sigma=0.05))
    labels.append(has_lesion)
x = np.stack(images)[..., None].astype("float32")
y = np.array(labels, "float32")[:, None]
# Real images instead: a CSV listing image files and their class, loaded by the kit:
#   from data_utils.layouts import csv_classification_cases, load_classification_cases
#   cases, class_names = csv_classification_cases("data/lesions/labels.csv", image_column="image", label_column="lesion")
#   arrays = load_classification_cases(cases)  # {"image": (N, H, W, 1), "label": (N,), ...}
#   x, y = arrays["image"], arrays["label"].astype("float32")[:, None]
dataset = tf.data.Dataset.from_tensor_slices({"image": x, "label": y}).batch(GLOBAL_BATCH, drop_remainder=True)
print(f"{len(x)} images {x.shape[1:]}, {int(y.sum())} with a lesion")

# %% [markdown]
# ## Data parallelism in one picture
# `strategy.run(fn)` calls `fn` once per replica, each on its own slice of the batch. Gradients are
# then SUMMED over replicas. If every replica used the mean over its own 8 samples, the sum of two
# replicas would be twice the gradient of one device. So each replica divides its summed loss by the
# GLOBAL batch (16): `distribute.compute_average_loss`. Summed over replicas, that is the mean.

# %%
def replica_share():
    per_sample = tf.fill([GLOBAL_BATCH // strategy.num_replicas_in_sync], 2.0)  # a loss of 2 per sample
    return distribute.compute_average_loss(per_sample, global_batch_size=GLOBAL_BATCH)


shares = strategy.experimental_local_results(strategy.run(replica_share))
print("each replica's share:", [round(float(s), 3) for s in shares], "-> summed:", round(float(sum(shares)), 3))
print("(Keras' own loss objects do this for you: they divide by the number of replicas.)")

# %% [markdown]
# ## One device vs two replicas, same global batch
# The explicit loop (`training.loop.train`) runs the same training step under either strategy.
# Build the model AND the optimiser inside `strategy.scope()` so their variables are mirrored.

# %%
def build_classifier():
    tut.reseed()  # the same initial weights for both runs
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(h)
    h = keras.layers.GlobalMaxPooling2D()(h)
    outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32")(h)
    return keras.Model(inputs, outputs)


histories = {}
for name, strat in (("one device", tf.distribute.get_strategy()), (f"{strategy.num_replicas_in_sync} replicas", strategy)):
    with strat.scope():
        model = build_classifier()
        optimizer = keras.optimizers.SGD(LEARNING_RATE, momentum=0.9)
    history = loop.train(model, dataset, EPOCHS, strategy=strat, optimizer=optimizer,
                         loss_fn=keras.losses.BinaryCrossentropy(reduction=None), verbose=1)
    histories[name] = history.history["loss"]
    print(f"{name:>12s}: loss per epoch", np.round(histories[name], 4))

(one_name, one), (many_name, many) = histories.items()
max_difference = float(np.max(np.abs(np.array(one) - np.array(many))))
print(f"largest difference between the two runs: {max_difference:.2e} (float32 rounding)")

fig, ax = plt.subplots(figsize=(5, 3.5))
ax.plot(range(1, EPOCHS + 1), one, "-o", label=one_name)
ax.plot(range(1, EPOCHS + 1), many, "--x", markersize=10, label=many_name)
ax.set(xlabel="epoch", ylabel="training loss", title="Same global batch, same curve")
ax.legend()
tut.save_figure(fig, "replicas_same_loss.png")

# %% [markdown]
# ## Mixed precision: 16-bit compute, 32-bit weights
# A layer under `mixed_float16` or `mixed_bfloat16` computes in 16 bits but keeps float32 weights
# (updates smaller than float16's resolution would otherwise vanish). float16's range is small:
# gradients below ~6e-8 become 0, so a `LossScaleOptimizer` multiplies the loss (e.g. by 2**15)
# and divides the gradients back. bfloat16 has float32's range, so it needs no loss scaling.
# Keep the last activation in float32 so probabilities and the loss are computed in full precision.

# %%
for policy_name in ("mixed_float16", "mixed_bfloat16"):
    with precision.policy(policy_name):
        layer = keras.layers.Dense(4)
        layer.build((None, 8))
        optimizer = precision.wrap_optimizer(keras.optimizers.Adam())
    print(f"{policy_name:>15s}: computes in {layer.compute_dtype}, stores weights in {layer.variable_dtype}, "
          f"optimizer {type(optimizer).__name__}")
print("policy now:", precision.current_policy())

# %% [markdown]
# ## Does it help here? Measure.
# bfloat16 pays off on TPUs, recent GPUs and CPUs with bfloat16 units; float16 on NVIDIA tensor
# cores. XLA fuses operations into fewer kernels. None of this is guaranteed: time a few steps.

# %%
settings = [("float32", False), ("float32", True)]
settings.append(("mixed_float16", False) if ON_GPU else ("mixed_bfloat16", False))
speed = {}
for policy_name, xla in settings:
    label = policy_name + (" + XLA" if xla else "")
    speed[label] = precision.measure_training_throughput(
        policy_name, input_shape=(IMAGE_SIZE * 2, IMAGE_SIZE * 2, 1), batch_size=GLOBAL_BATCH,
        steps=SPEED_STEPS, warmup=2, jit_compile=xla, seed=tut.seed,
    )
    print(f"{label:>22s}: {speed[label]:8.1f} samples/s")
print("this CPU has bfloat16 instructions:", precision.cpu_supports_bf16())

fig, ax = plt.subplots(figsize=(5, 3.5))
ax.barh(list(speed), list(speed.values()), color=["tab:gray", "tab:blue", "tab:orange"])
ax.set(xlabel="training samples / s", title="small conv net, " + ("GPU" if ON_GPU else "CPU"))
tut.save_figure(fig, "precision_speed.png")

# %% [markdown]
# ## What changes on a GPU box or a cluster
# - `distribute.get_strategy()` picks `MirroredStrategy` over all visible GPUs by itself; keep the
#   GLOBAL batch per step = per-GPU batch x number of GPUs (and scale the learning rate with care).
# - `precision.set_policy("auto")` switches to `mixed_float16` on a GPU; `model.compile` adds loss
#   scaling, and in a custom step use `precision.wrap_optimizer` + `optimizer.scale_loss(loss)`.
# - `model.compile(..., jit_compile=True)` (or `loop.train(..., jit_compile=True)`) fuses operations
#   into fewer GPU kernels, which often helps there; the first step is slower while XLA compiles. On
#   a CPU it can hurt: XLA's CPU convolutions skip the oneDNN kernels (measure, as above).
# - Several machines: start the same script on each with `TF_CONFIG` naming all workers
#   (`distribute.make_tf_config(["host1:12345", "host2:12345"], index)`); `get_strategy()` then
#   returns a `MultiWorkerMirroredStrategy`. Use `training.loop.train` there: with TensorFlow 2.21
#   `fit()` fails under that strategy, while the explicit loop trains identically on every worker.

# %%
print("example TF_CONFIG for worker 0:", distribute.make_tf_config(["10.0.0.1:12345", "10.0.0.2:12345"], 0))

tut.finish(
    {"max_loss_difference": max_difference, "loss_drop": one[0] - one[-1],
     **{f"samples_per_s {k}": v for k, v in speed.items()}},
    # --quick measured 6e-8 - 1.2e-7 over seeds 0-2, oneDNN on/off, AMD EPYC AVX-512; full run, seed 0: 1.5e-8
    expect={"max_loss_difference": ("<=", 1e-4),
            "loss_drop": (">=", 0.005)},  # measured 0.034-0.134 (--quick); full run, seed 0, oneDNN on: 0.601
)

# %% [markdown]
# ## What we learned
# - Data parallelism = split the global batch, sum the gradients; divide the loss by the GLOBAL batch.
# - With that rule, one device and N replicas follow the same loss curve.
# - Mixed precision keeps float32 weights; float16 needs loss scaling, bfloat16 does not.
# - Speed-ups depend on the hardware: measure before you switch.
#
# ## Try next
# 1. Divide the loss by the LOCAL batch instead (`keras.ops.mean` without scaling) in a custom step:
#    how far apart are the two curves now, and why by that factor?
# 2. Set `N_CPU_REPLICAS = 4` and compare the losses again.
# 3. On a GPU: compare `float32`, `mixed_float16` and `mixed_float16 + XLA` on a U-Net from `models`.
# 4. Run two workers on your laptop with `TF_CONFIG` and `loop.train` (see tests/training/test_distribute.py).
