# %% [markdown]
# # Convolution basics: a convolution by hand, stride, padding, pooling, and a CNN on ultrasound images
#
# **Lecture topic:** convolutional neural networks.
#
# **What you will learn**
# - what a convolutional layer computes, by doing the classic 3x3-input, 2x2-kernel example by hand
#   and checking it against `keras.layers.Conv2D` with the same weights;
# - that deep learning's "convolution" is really cross-correlation (the kernel is not flipped);
# - how stride and padding set the output size: `out = floor((n + 2p - k) / s) + 1`;
# - what max and average pooling do, and why a convolution needs far fewer weights than a dense layer;
# - how a small CNN from the model zoo learns to tell normal tissue, cysts, solid masses and
#   calcifications apart on B-mode ultrasound-like images.
#
# **Run it:**  `python tutorials/convolution_basics.py [--quick]`  (about 1 minute on a laptop CPU; `--quick` ~15 s).
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
tut = common.start("convolution_basics", "Convolution by hand, stride, padding, pooling and a CNN on ultrasound", quick=QUICK)

import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import signal  # noqa: E402
from sklearn.metrics import confusion_matrix  # noqa: E402

import models  # noqa: E402
from data_utils.synthetic import make_ultrasound_dataset  # noqa: E402

IMAGE_SIZE = tut.pick(48, 32)  # ultrasound image side in pixels
NUM_TRAIN = tut.pick(800, 320)  # training images (4 balanced classes)
NUM_VAL = 100  # validation images: watched during training (for choosing epochs, learning rate, ...)
NUM_TEST = 200  # held-out test images, used once at the end
EPOCHS = tut.pick(15, 8)
BATCH_SIZE = 32
LEARNING_RATE = 3e-3
CNN_FILTERS = (8, 16, 32)  # channels of the three conv stages (each: 3x3 conv + 2x2 max pooling)

# %% [markdown]
# ## A convolution by hand
# Slide the 2x2 kernel over the 3x3 input; at each position multiply the overlapping numbers and
# add them up. The top-left output is ``0*0 + 1*1 + 3*2 + 4*3 = 19``. With no padding and stride 1
# the output is 2x2.

# %%
x_small = np.arange(9, dtype="float32").reshape(3, 3)  # [[0 1 2] [3 4 5] [6 7 8]]
k_small = np.array([[0, 1], [2, 3]], dtype="float32")


def conv2d_by_hand(image, kernel, stride=1, padding=0):
    """2D cross-correlation of one channel, as a conv layer computes it (no kernel flip)."""
    image = np.pad(image, padding)
    kh, kw = kernel.shape
    out_h = (image.shape[0] - kh) // stride + 1
    out_w = (image.shape[1] - kw) // stride + 1
    out = np.zeros((out_h, out_w), dtype=image.dtype)
    for i in range(out_h):
        for j in range(out_w):
            window = image[i * stride: i * stride + kh, j * stride: j * stride + kw]
            out[i, j] = np.sum(window * kernel)
    return out


by_hand = conv2d_by_hand(x_small, k_small)
print("by hand:\n", by_hand)

# The same with a Keras layer: kernel shape is (kh, kw, in_channels, out_channels).
conv_layer = keras.layers.Conv2D(1, kernel_size=2, use_bias=False)
conv_layer.build((1, 3, 3, 1))
conv_layer.set_weights([k_small[:, :, None, None]])
by_keras = keras.ops.convert_to_numpy(conv_layer(x_small[None, :, :, None]))[0, :, :, 0]
print("Conv2D:\n", by_keras)
conv_error = float(np.max(np.abs(by_hand - by_keras)))
np.testing.assert_allclose(by_hand, by_keras, atol=1e-5)

# Mathematicians' convolution flips the kernel first; scipy has both.
flipped = signal.convolve2d(x_small, k_small, mode="valid")
print("true convolution (kernel flipped):\n", flipped, "\n= correlation with the flipped kernel:",
      np.allclose(flipped, conv2d_by_hand(x_small, k_small[::-1, ::-1])))

fig, axes = plt.subplots(1, 3, figsize=(8, 2.8), gridspec_kw={"width_ratios": [3, 2, 2]})
for ax, array, title in zip(axes, (x_small, k_small, by_hand), ("input 3x3", "kernel 2x2", "output 2x2")):
    ax.imshow(array, cmap="Blues", vmin=0, vmax=max(array.max(), 1) * 1.5)
    for (i, j), value in np.ndenumerate(array):
        ax.text(j, i, f"{value:g}", ha="center", va="center", fontsize=14)
    ax.set(title=title, xticks=[], yticks=[])
axes[0].add_patch(plt.Rectangle((-0.5, -0.5), 2, 2, fill=False, ec="red", lw=3))  # the window of output[0, 0]
axes[2].add_patch(plt.Rectangle((-0.5, -0.5), 1, 1, fill=False, ec="red", lw=3))
tut.save_figure(fig, "convolution_by_hand.png")

# %% [markdown]
# ## Stride and padding
# **Padding** ``p`` adds ``p`` rows/columns of zeros around the input (``padding="same"`` in Keras
# pads so that stride 1 keeps the size). **Stride** ``s`` moves the window ``s`` pixels at a time.
# An ``n``-pixel input and a ``k``-pixel kernel give ``floor((n + 2p - k) / s) + 1`` outputs.
# We check the formula, our function and Keras against each other for a few settings.

# %%
def output_size(n, k, s=1, p=0):
    return (n + 2 * p - k) // s + 1


x_medium = np.arange(49, dtype="float32").reshape(7, 7)
k_medium = np.ones((3, 3), dtype="float32")
for stride, padding in ((1, 0), (2, 0), (1, 1), (2, 1), (3, 1)):
    ours = conv2d_by_hand(x_medium, k_medium, stride, padding)
    layer = keras.layers.Conv2D(1, 3, strides=stride, use_bias=False)
    padded = np.pad(x_medium, padding)[None, :, :, None]  # Keras' "valid" after explicit zero padding
    layer.build(padded.shape)
    layer.set_weights([k_medium[:, :, None, None]])
    theirs = keras.ops.convert_to_numpy(layer(padded))[0, :, :, 0]
    conv_error = max(conv_error, float(np.max(np.abs(ours - theirs))))
    assert ours.shape[0] == output_size(7, 3, stride, padding) == theirs.shape[0]
    print(f"7x7 input, 3x3 kernel, stride {stride}, padding {padding}: output {ours.shape} (formula "
          f"{output_size(7, 3, stride, padding)})")

# %% [markdown]
# ## Pooling
# Pooling summarises each window with its maximum (or mean), with stride = window size by default.
# It has no weights; it halves the resolution, so later layers see a larger part of the image
# (a larger receptive field) and small shifts of a feature change the output less.

# %%
x_pool = np.array([[1, 3, 2, 1], [4, 6, 5, 0], [3, 1, 1, 2], [0, 2, 8, 4]], dtype="float32")
max_by_hand = x_pool.reshape(2, 2, 2, 2).max(axis=(1, 3))  # split into 2x2 blocks, take each max
mean_by_hand = x_pool.reshape(2, 2, 2, 2).mean(axis=(1, 3))
max_by_keras = keras.ops.convert_to_numpy(keras.layers.MaxPooling2D(2)(x_pool[None, :, :, None]))[0, :, :, 0]
mean_by_keras = keras.ops.convert_to_numpy(keras.layers.AveragePooling2D(2)(x_pool[None, :, :, None]))[0, :, :, 0]
np.testing.assert_allclose(max_by_hand, max_by_keras)
np.testing.assert_allclose(mean_by_hand, mean_by_keras)
print("max pooling:\n", max_by_hand, "\naverage pooling:\n", mean_by_hand)

# %% [markdown]
# ## The data: B-mode ultrasound-like images
# `make_ultrasound_dataset` simulates four classes: normal tissue, a cyst (dark, round, bright
# back wall and brighter tissue below), a solid mass (dark, irregular) and a calcification (a tiny
# bright spot with a dark acoustic shadow below). Position and size vary, and speckle covers
# everything, so no single pixel gives the class away: the network must learn shapes. Every image is
# an independent draw, so taking the first images for training, the next for validation and the rest
# for testing keeps the three sets apart (with real data, split by patient: `data_utils.datasets.split_cases`).

# %%
images, labels, class_names = make_ultrasound_dataset(NUM_TRAIN + NUM_VAL + NUM_TEST, image_size=IMAGE_SIZE, seed=tut.seed)
# Real images instead: a MedMNIST-style .npz (e.g. BreastMNIST) with train/val/test splits:
#   from data_utils.formats import load_npz
#   splits = load_npz("data/breastmnist.npz")  # {"train": {"image": (N, H, W, 1), "label": (N,)}, "val": ..., "test": ...}
#   x_train, y_train = splits["train"]["image"], splits["train"]["label"]  # and likewise "val", "test"
x_train, y_train = images[:NUM_TRAIN], labels[:NUM_TRAIN]
x_val, y_val = images[NUM_TRAIN:NUM_TRAIN + NUM_VAL], labels[NUM_TRAIN:NUM_TRAIN + NUM_VAL]
x_test, y_test = images[NUM_TRAIN + NUM_VAL:], labels[NUM_TRAIN + NUM_VAL:]
print(f"train {x_train.shape}, validation {x_val.shape}, test {x_test.shape}, classes {class_names}")

fig, axes = plt.subplots(2, 4, figsize=(9, 4.6))
for c, name in enumerate(class_names):
    for row in range(2):
        axes[row, c].imshow(x_train[np.flatnonzero(y_train == c)[row], :, :, 0], cmap="gray", vmin=0, vmax=1)
        axes[row, c].axis("off")
    axes[0, c].set_title(name)
tut.save_figure(fig, "ultrasound_examples.png")

# %% [markdown]
# ## What a hand-made kernel finds
# Before learning kernels, use two that people designed: Sobel filters respond to vertical and
# horizontal edges. A CNN's first layer learns kernels like these, and many others, from data.

# %%
sobel_x = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype="float32")
example = x_train[np.flatnonzero(y_train == 1)[0], :, :, 0]  # a cyst
edges_x = conv2d_by_hand(example, sobel_x, padding=1)
edges_y = conv2d_by_hand(example, sobel_x.T, padding=1)
fig, axes = plt.subplots(1, 3, figsize=(9, 3))
for ax, array, title in zip(axes, (example, edges_x, edges_y), ("cyst", "Sobel x: vertical edges", "Sobel y: horizontal edges")):
    ax.imshow(array, cmap="gray")
    ax.set_title(title)
    ax.axis("off")
tut.save_figure(fig, "sobel_edges.png")

# %% [markdown]
# ## A CNN classifier from the zoo
# A small VGG-style network: three stages of (3x3 convolution + ReLU, 2x2 max pooling), then a
# small dense head. Count the parameters: a 3x3 convolution from 8 to 16 channels has
# ``3*3*8*16 + 16 = 1168`` weights wherever it is applied; a dense layer from a 32x32 image to just
# 16 units already needs ``32*32*16 + 16 = 16400``.

# %%
cnn = models.get("vgg", input_shape=(IMAGE_SIZE, IMAGE_SIZE, 1), num_classes=len(class_names),
                 convs_per_stage=(1,) * len(CNN_FILTERS), filters=CNN_FILTERS, fc_units=(32,), dropout=0.0)
for layer in cnn.layers:
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw, c_in, c_out = layer.kernel.shape
        print(f"{layer.name:>14s}: {kh}x{kw}x{c_in}x{c_out} + {c_out} = {layer.count_params()} parameters")
print(f"whole CNN: {cnn.count_params()} parameters")
cnn.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
history = cnn.fit(x_train, y_train, epochs=EPOCHS, batch_size=BATCH_SIZE, validation_data=(x_val, y_val),
                  verbose=2, callbacks=[tut.tensorboard("cnn")])
probabilities = cnn.predict(x_test, verbose=0)
predicted = probabilities.argmax(axis=-1)
test_accuracy = float(np.mean(predicted == y_test))
print(f"test accuracy {test_accuracy:.3f} (chance: {1 / len(class_names):.2f})")

confusion = confusion_matrix(y_test, predicted, labels=range(len(class_names)))
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
axes[0].plot(history.history["accuracy"], label="train")
axes[0].plot(history.history["val_accuracy"], label="validation")
axes[0].axhline(test_accuracy, color="k", ls=":", label=f"test, after training ({test_accuracy:.2f})")
axes[0].set(xlabel="epoch", ylabel="accuracy", title="Learning curves")
axes[0].legend()
axes[1].imshow(confusion, cmap="Blues")
for (i, j), count in np.ndenumerate(confusion):
    axes[1].text(j, i, count, ha="center", va="center")
axes[1].set(xticks=range(len(class_names)), yticks=range(len(class_names)), xlabel="predicted", ylabel="true",
            title="Confusion matrix (test)")
axes[1].set_xticklabels(class_names, rotation=30)
axes[1].set_yticklabels(class_names)
tut.save_figure(fig, "cnn_training.png")

# %% [markdown]
# ## What the first layer learned
# The outputs (feature maps) of the first convolution for one calcification image. Look for maps
# that light up at the bright spot, at edges, or in the dark shadow below it (each has its own colour bar).

# %%
first_conv = next(layer for layer in cnn.layers if isinstance(layer, keras.layers.Conv2D))
feature_model = keras.Model(cnn.input, first_conv.output)
calcification = x_test[np.flatnonzero(y_test == len(class_names) - 1)[:1]]
feature_maps = keras.ops.convert_to_numpy(feature_model(calcification))[0]
fig, axes = plt.subplots(1, 1 + feature_maps.shape[-1], figsize=(2 * (1 + feature_maps.shape[-1]), 2.2))
axes[0].imshow(calcification[0, :, :, 0], cmap="gray")
axes[0].set_title(class_names[-1], fontsize=8)
for c, ax in enumerate(axes[1:]):
    shown = ax.imshow(feature_maps[:, :, c], cmap="magma")
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
    ax.set_title(f"map {c}", fontsize=8)
for ax in axes:
    ax.axis("off")
tut.save_figure(fig, "feature_maps.png")

# %% [markdown]
# ## What we learned
# - A convolution slides one small kernel over the image: multiply, add, move. Keras' `Conv2D`
#   computes exactly our loop (a cross-correlation), for every input/output channel pair.
# - Stride and padding set the output size, ``floor((n + 2p - k) / s) + 1``; pooling shrinks the
#   map without any weights.
# - Weight sharing makes convolutions cheap in parameters and able to find a pattern anywhere.
# - A three-stage CNN learns the four ultrasound classes well above chance from a few hundred images.
#
# ## Try next
# 1. Compute the 3x3 example by hand with stride 2 and padding 1; check with `conv2d_by_hand`.
# 2. Replace the CNN by `models.get("mlp", ...)` on flattened images with a similar number of
#    parameters. Which is better, and why?
# 3. Turn off the speckle (`speckle=0` in `make_ultrasound_dataset`): does accuracy change?
# 4. Which classes are confused most? Look at the images: why might that be hard?
# 5. Write a 2x2 max pooling with stride 1 by hand (hint: `conv2d_by_hand` with `max` instead of `sum`).

# %%
tut.finish(
    {"conv_max_abs_error": conv_error, "cnn_test_accuracy": test_accuracy,
     "cnn_first_epoch_loss": history.history["loss"][0], "cnn_final_loss": history.history["loss"][-1]},
    expect={"conv_max_abs_error": ("<=", 1e-4),  # measured 0 over seeds 0-2, oneDNN on/off, AMD EPYC AVX-512
            "cnn_test_accuracy": (">=", 0.5)},  # chance 0.25; measured 0.670-0.765
)
