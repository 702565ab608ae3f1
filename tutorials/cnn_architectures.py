# %% [markdown]
# # CNN architectures: Inception, ResNet and DenseNet blocks, skip connections and what they cost
#
# **Lecture topic:** CNN architectures (Inception, ResNet, DenseNet) and feature maps.
#
# **What you will learn**
# - what an Inception block, a residual block and a dense block compute, and how many parameters
#   each spends on the same input;
# - how the zoo's presets compare with the published parameter counts and compute (FLOPs);
# - why skip connections make deep networks trainable: the gradient reaching the first layer of a deep
#   plain network is tiny, while a residual network of the same depth passes it through unchanged;
# - how to look inside a trained CNN: the feature maps of its early and late layers on ultrasound images.
#
# **Data:** synthetic B-mode ultrasound images (`data_utils.synthetic.make_ultrasound_dataset`): normal
# tissue, cyst, solid mass, calcification.
#
# **Run it:**  `python tutorials/cnn_architectures.py [--quick]`  (about 2 minutes on a laptop CPU;
# `--quick` ~20 s).
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
tut = common.start("cnn_architectures", "Inception, ResNet and DenseNet blocks; skip connections; feature maps", quick=QUICK)

import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

import models  # noqa: E402
from data_utils.synthetic import make_ultrasound_dataset  # noqa: E402
from models.blocks import dense_block, residual_block  # noqa: E402
from models.flops import count_flops  # noqa: E402
from models.inception import inception_block  # noqa: E402

# The zoo's ImageNet presets (224 x 224 x 3, 1000 classes) with published numbers: parameters and
# forward multiply-adds ("GMACs"; 1 MAC = 2 FLOPs), from the papers / torchvision / keras.applications.
PUBLISHED = {
    "vgg16": (138.36e6, 15.5),
    "googlenet": (6.8e6, 1.5),
    "resnet18": (11.69e6, 1.8),
    "resnet50": (25.6e6, 4.1),
    "densenet121": (8.0e6, 2.9),
}
PRESETS = tut.pick(list(PUBLISHED), ["googlenet", "resnet18"])  # building VGG-16 alone allocates 138M weights
DEPTH = tut.pick(24, 16)  # convolution layers of the plain net (the residual net has DEPTH // 2 blocks)
IMAGE_SIZE = 32  # pixels of the ultrasound images (40 mm field of view)
NUM_TRAIN = tut.pick(800, 240)
NUM_TEST = tut.pick(400, 120)
EPOCHS = tut.pick(12, 6)
BATCH_SIZE = 32
LEARNING_RATE = 3e-3
BN_MOMENTUM = 0.8  # running statistics of batch norm follow quickly (Keras default 0.99 suits long runs)

# %% [markdown]
# ## Three blocks on the same input
# Take one feature map of 16 channels and 32 x 32 pixels and pass it through each block:
#
# - **Inception** (GoogLeNet): four branches side by side, ``1x1``, ``1x1 -> 3x3``, ``1x1 -> 5x5`` and
#   ``3x3 max pool -> 1x1``, concatenated. The network looks at several scales at once; the cheap
#   ``1x1`` "reduce" convolutions shrink the channels before the expensive ``3x3`` and ``5x5``.
# - **Residual** (ResNet): ``y = relu(x + F(x))`` with ``F`` two ``3x3`` convolutions. The block only
#   has to learn the *change* to its input, and ``x`` itself skips ahead.
# - **Dense** (DenseNet): each layer sees the concatenation of everything before it and adds
#   ``growth_rate`` new channels. Features are reused instead of re-learned, so layers can be narrow.

# %%
def block_model(make_block, name):
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 16))
    return keras.Model(inputs, make_block(inputs), name=name)


blocks = {
    "inception": block_model(lambda x: inception_block(x, (8, 12, 16, 2, 4, 4)), "inception"),
    "residual": block_model(lambda x: residual_block(x, 16), "residual"),
    "dense (4 layers, k=8)": block_model(lambda x: dense_block(x, 4, growth_rate=8), "dense"),
}
for name, block in blocks.items():
    print(f"{name:>22s}: {block.input.shape[1:]} -> {block.output.shape[1:]}, "
          f"{block.count_params():6,d} parameters, {count_flops(block) / 1e6:6.1f} MFLOPs")

fig, ax = plt.subplots(figsize=(6, 2.8))
ax.barh(list(blocks), [b.count_params() for b in blocks.values()], color=["C0", "C1", "C2"])
for i, b in enumerate(blocks.values()):
    ax.text(b.count_params(), i, f" {b.output.shape[-1]} channels out", va="center", fontsize=8)
ax.set(xlabel="parameters", title="Three blocks on a 32 x 32 x 16 input")
tut.save_figure(fig, "block_parameters.png")

# %% [markdown]
# ## The zoo against the papers
# We build the presets at their ImageNet size and count parameters and FLOPs with
# ``models.flops.count_flops`` (convolutions and dense layers; 1 multiply-add = 2 FLOPs). Small
# differences from the published numbers come from biases, batch-norm statistics and auxiliary heads:
# the paper trains GoogLeNet with two auxiliary classifiers; the zoo's default, like torchvision's,
# has none (``models.get("googlenet", aux_heads=True)`` adds them, for training only).
# Compare VGG-16 with ResNet-18 below: most of VGG-16's weights sit in its three fully connected
# layers, so its parameter count grows far more than its compute.

# %%
zoo_rows = []
print(f"{'model':>12s} {'params (ours)':>14s} {'published':>10s} {'GMACs (ours)':>13s} {'published':>10s}")
for name in PRESETS:
    model = models.get(name)
    params, gmacs = model.count_params(), count_flops(model) / 2e9
    zoo_rows.append((name, params, gmacs))
    print(f"{name:>12s} {params / 1e6:13.2f}M {PUBLISHED[name][0] / 1e6:9.2f}M {gmacs:13.2f} {PUBLISHED[name][1]:10.1f}")
    del model
    keras.backend.clear_session()  # free the big presets before the next one
param_ratio = max(abs(p / PUBLISHED[n][0] - 1) for n, p, _ in zoo_rows)
mac_ratio = max(abs(g / PUBLISHED[n][1] - 1) for n, _, g in zoo_rows)
counted = {n: (p, g) for n, p, g in zoo_rows}
vgg_params, vgg_gmacs = counted.get("vgg16", PUBLISHED["vgg16"])  # the quick run does not build VGG-16
vgg_over_resnet = (vgg_params / counted["resnet18"][0], vgg_gmacs / counted["resnet18"][1])
print(f"VGG-16 has {vgg_over_resnet[0]:.1f}x the parameters of ResNet-18 for {vgg_over_resnet[1]:.1f}x the compute"
      + ("" if "vgg16" in counted else " (VGG-16: published numbers; the full run counts the zoo's)"))

fig, ax = plt.subplots(figsize=(5.5, 4))
for name, params, gmacs in zoo_rows:
    ax.scatter(gmacs, params / 1e6, s=40)
    ax.annotate(name, (gmacs, params / 1e6), xytext=(4, 4), textcoords="offset points", fontsize=8)
ax.set(xscale="log", yscale="log", xlabel="compute per image (GMACs)", ylabel="parameters (millions)",
       title="Model zoo at 224 x 224")
tut.save_figure(fig, "zoo_params_flops.png")

# %% [markdown]
# ## Why skip connections matter: gradient flow
# Two networks of the same depth, no batch normalisation, Keras' default (Glorot) initialisation:
#
# - **plain**: ``DEPTH`` convolutions with ReLU, one after another;
# - **residual**: ``DEPTH // 2`` residual blocks, i.e. the same ``DEPTH`` convolutions, plus skips.
#
# In the plain net, backpropagation multiplies the gradient by every layer's Jacobian on the way
# down; with this initialisation each ReLU layer roughly halves the signal, so the first layers
# receive almost nothing and barely learn. In ``x + F(x)`` the derivative has an identity term, so the
# gradient reaches the first layer undiminished. We measure the gradient norm of every convolution's
# features after every stage on one batch, before any training: the signal backpropagation carries.

# %%
def deep_net(residual):
    """A stem convolution, then DEPTH // 2 stages of two 3x3 convolutions, kept as separate models
    so that we can watch the signal between stages."""
    def stage(i):
        inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 16))
        if residual:
            x = residual_block(inputs, 16, norm="none", use_bias=True)
        else:
            x = layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
            x = layers.Conv2D(16, 3, padding="same", activation="relu")(x)
        return keras.Model(inputs, x, name=f"stage{i + 1}")

    stem = keras.Sequential([keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1)), layers.Conv2D(16, 3, padding="same", activation="relu")])
    head = keras.Sequential([keras.Input((IMAGE_SIZE, IMAGE_SIZE, 16)), layers.GlobalAveragePooling2D(),
                             layers.Dense(4, activation="softmax")])
    return [stem] + [stage(i) for i in range(DEPTH // 2)] + [head]


def backpropagated_gradient_norms(parts, x, y):
    """RMS of d(loss)/d(features) at the output of the stem and of every stage (input side first)."""
    with tf.GradientTape() as tape:
        features = []
        h = tf.convert_to_tensor(x)
        for part in parts[:-1]:
            h = part(h)
            tape.watch(h)
            features.append(h)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, parts[-1](h)))
    grads = tape.gradient(loss, features)
    return np.array([float(tf.sqrt(tf.reduce_mean(g ** 2))) for g in grads])


images, labels, class_names = make_ultrasound_dataset(NUM_TRAIN + NUM_TEST, image_size=IMAGE_SIZE, seed=tut.seed)
# Real images instead: a MedMNIST-style .npz (e.g. BreastMNIST), resized to IMAGE_SIZE:
#   from data_utils.formats import load_npz
#   splits = load_npz("data/breastmnist.npz")  # {"train": {"image": (N, H, W, 1), "label": (N,)}, "test": ...}
x_train, y_train = images[:NUM_TRAIN], labels[:NUM_TRAIN]
x_test, y_test = images[NUM_TRAIN:], labels[NUM_TRAIN:]

grad_norms = {}
for residual in (False, True):
    tut.reseed()  # both networks start from the same random state
    name = "residual" if residual else "plain"
    grad_norms[name] = backpropagated_gradient_norms(deep_net(residual), x_train[:64], y_train[:64])
    print(f"{name:>8s}: gradient after the stem {grad_norms[name][0]:.2e}, after the last stage {grad_norms[name][-1]:.2e}")
# How much of the gradient at the output end survives down to the input end.
survival = {k: v[0] / v[-1] for k, v in grad_norms.items()}

fig, ax = plt.subplots(figsize=(6.5, 3.5))
for name, norms in grad_norms.items():
    ax.semilogy(np.arange(len(norms)), norms, "o-", ms=3, label=f"{name} (first/last = {survival[name]:.2g})")
ax.set(xlabel="stage (0 = stem, next to the input)", ylabel="RMS of d loss / d features",
       title=f"Gradient flow at initialisation, {DEPTH + 1} convolutions")
ax.legend()
tut.save_figure(fig, "gradient_flow.png")

# %% [markdown]
# ## Train a small ResNet on ultrasound images
# A ResNet from the zoo with two stages of one residual block each (``stem="small"``: no early
# down-sampling, because our images are only 32 pixels wide), trained to tell the four classes apart.
# One practical detail: batch normalisation predicts with *running averages* of the batch statistics
# it saw in training. With Keras' default momentum (0.99) those averages lag far behind the weights
# after only a few dozen steps, and the test accuracy can fall far below the training accuracy.
# For a short run we let the averages follow faster (try the default and see).

# %%
tut.reseed()
cnn = models.get("resnet", input_shape=(IMAGE_SIZE, IMAGE_SIZE, 1), num_classes=len(class_names),
                 blocks=(1, 1), base_filters=16, stem="small")
for layer in cnn.layers:
    if isinstance(layer, layers.BatchNormalization):
        layer.momentum = BN_MOMENTUM
cnn.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="sparse_categorical_crossentropy",
            metrics=["accuracy"])
history = cnn.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=EPOCHS, verbose=2,
                  callbacks=[tut.tensorboard("resnet")])
test_loss, test_accuracy = cnn.evaluate(x_test, y_test, verbose=0)
print(f"test accuracy {test_accuracy:.3f} (chance {1 / len(class_names):.2f}), {cnn.count_params():,} parameters")

# %% [markdown]
# ## Feature maps: what the layers respond to
# A feature map is one channel of a layer's output. We build a second model that shares the trained
# weights and returns the outputs of an early layer (the stem) and a late one (the last block), each
# map with its own colour scale (dark = low, bright = high). Early maps look like filtered copies of
# the image (edges, bright and dark regions); late maps have seen a larger part of the image. Which of
# them pick out a cyst or a shadow? Look, and compare the four classes.

# %%
probe = keras.Model(cnn.input, [cnn.get_layer("stem_act").output, cnn.get_layer("stage2_block1_out").output])
shown = [int(np.flatnonzero(y_test == c)[0]) for c in range(len(class_names))]
early, late = probe.predict(x_test[shown], verbose=0)
num_maps = 6
fig, axes = plt.subplots(len(shown), 1 + num_maps, figsize=(1.5 * (1 + num_maps), 1.6 * len(shown)))
for row, i in enumerate(shown):
    axes[row, 0].imshow(x_test[i, ..., 0], cmap="gray")
    axes[row, 0].set_title(class_names[y_test[i]], fontsize=8)
    strongest_late = np.argsort(late[row].mean(axis=(0, 1)))[::-1]
    for j in range(num_maps // 2):
        axes[row, 1 + j].imshow(early[row, ..., j], cmap="magma")
        axes[row, 1 + num_maps // 2 + j].imshow(late[row, ..., strongest_late[j]], cmap="magma")
    axes[row, 1].set_title("early (stem)" if row == 0 else "", fontsize=8)
    axes[row, 1 + num_maps // 2].set_title("late (last block)" if row == 0 else "", fontsize=8)
for ax in axes.ravel():
    ax.axis("off")
tut.save_figure(fig, "feature_maps.png")

# %% [markdown]
# ## What we learned
# - Inception widens (several kernel sizes in parallel, with ``1x1`` reductions), ResNet adds
#   (``x + F(x)``), DenseNet concatenates (every layer sees all earlier ones). The same input costs
#   very different numbers of parameters in each.
# - Parameter count and compute are different things: VGG-16 has about 12x the parameters of
#   ResNet-18 but under 9x its compute (printed above), because dense layers hold many weights
#   and do little work per weight, while convolutions reuse each weight at every pixel.
# - Without skips, the gradient fades on its way to the first layers of a deep network; with skips
#   far more of it arrives (the ratio is printed above). This is a main reason why networks of
#   50-150 layers became trainable.
# - Feature maps show a trained CNN going from local filters to class-specific responses.
#
# ## Try next
# 1. Add ``BatchNormalization`` after every convolution of the plain net. How does its gradient curve
#    change? (Batch norm was the other fix for deep networks, published the same year as ResNet.)
# 2. Train the plain and residual deep nets for a few epochs on the ultrasound data and plot both
#    loss curves. Which learns at all?
# 3. Replace the ResNet by ``models.get("densenet", ...)`` with ``stem="small"`` and compare accuracy
#    per parameter.
# 4. Compute the parameters of an Inception block by hand from its six filter numbers and check it
#    against ``count_params()``.
# 5. Plot the feature maps of a *misclassified* test image. What did the network look at?

# %%
tut.finish(
    {
        "plain_gradient_survival": survival["plain"],
        "residual_gradient_survival": survival["residual"],
        "survival_ratio_residual_over_plain": survival["residual"] / survival["plain"],
        "zoo_max_param_deviation": param_ratio,
        "zoo_max_gmac_deviation": mac_ratio,
        "test_accuracy": test_accuracy,
    },
    expect={
        "survival_ratio_residual_over_plain": (">=", 50.0),  # skips keep the gradient alive; measured 400-910 over seeds 0-2, oneDNN on/off, AMD EPYC AVX-512
        "zoo_max_param_deviation": ("<=", 0.1),  # within 10% of the published counts; measured 0.029
        "zoo_max_gmac_deviation": ("<=", 0.15),  # measured 0.055
        "test_accuracy": (">=", 0.5),  # chance is 0.25; measured 0.692-0.767
    },
)
