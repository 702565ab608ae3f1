# %% [markdown]
# # Up-sampling and dense prediction: un-pooling, transposed and linear up-sampling; FCN vs patches
#
# **Lecture topic:** segmentation networks: how a decoder gets back to full resolution, and why a
# fully convolutional network replaces a classifier slid over the image.
#
# **What you will learn**
# - three ways to up-sample, side by side in 2D and 3D: max **un-pooling** with the encoder's pooling
#   indices (SegNet), **transposed convolution** (learned) and **linear** (bilinear / trilinear) interpolation;
# - that linear up-sampling *is* a transposed convolution with a fixed "tent" kernel, and whether a
#   learned transposed convolution is necessary: three decoders trained on the same task;
# - how a patch classifier becomes a **fully convolutional network** (its dense layers rewritten as
#   convolutions): the same weights give the same label map, far faster.
#
# **Data:** synthetic T1-weighted head slices (`data_utils.synthetic.make_modality_pairs`), 32 x 32
# pixels; the task is to label each pixel as outside the brain (air, scalp, skull), CSF or brain tissue
# (grey and white matter, lesions).
#
# **Run it:** `python tutorials/upsampling_and_dense_prediction.py [--quick] [--seed N]` (about 1.5
# minutes on a laptop CPU; `--quick` about 25 s), or open it as a notebook (`jupytext --to notebook`,
# VS Code, Jupyter, Colab) and set `QUICK = True` below or the environment variable
# `TUTORIAL_QUICK=1` for the short run.

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
tut = common.start("upsampling_and_dense_prediction", "Un-pooling, transposed and linear up-sampling; FCN vs patch classifier", quick=QUICK)

import time  # noqa: E402

import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

from data_utils.datasets import Case, split_cases  # noqa: E402
from data_utils.synthetic import make_modality_pairs  # noqa: E402
from models.blocks import conv_norm_act  # noqa: E402
from models.upsampling import LinearUpSampling, MaxPoolingWithIndices, MaxUnpooling  # noqa: E402
from training.losses import DiceCELoss  # noqa: E402
from training.metrics import dice_score  # noqa: E402

IMAGE_SIZE = 32
NUM_IMAGES = tut.pick(600, 240)  # slices, each from its own synthetic head; split 60/15/25
CLASSES = ("outside the brain", "CSF", "brain tissue")
TISSUE_TO_CLASS = np.array([0, 0, 0, 1, 2, 2, 2])  # air, scalp, skull, CSF, grey, white, lesion -> CLASSES
NUM_CLASSES = len(CLASSES)
EPOCHS = tut.pick(12, 4)  # per decoder variant
BATCH_SIZE = 16
LEARNING_RATE = 1e-2
PATCH = 13  # the patch classifier's input (its receptive field)
NUM_PATCHES = tut.pick(40000, 8000)  # training patches for the classifier
PATCH_EPOCHS = tut.pick(6, 2)
PATCH_BATCH = 4096  # patches per forward pass of the classifier
TIMED_SLICES = 24  # test slices labelled both ways and timed

# %% [markdown]
# ## The data
# Each slice comes from its own synthetic head, so slices are independent "patients"; the kit's
# `split_cases` splits them into training, validation and test sets by id. To train on a folder of
# your own data instead, load volumes with `data_utils.datasets.load_cases` and cut slices:
#
# ```python
# from data_utils.datasets import find_cases, load_cases, split_cases
# cases = split_cases(find_cases("/path/to/folder"), val_fraction=0.15, test_fraction=0.25, seed=tut.seed)
# volumes = load_cases(cases["train"])   # [{"image": (D, H, W), "label": (D, H, W), ...}]
# ```

# %%
data = make_modality_pairs(NUM_IMAGES, image_size=IMAGE_SIZE, contrasts=("t1",), seed=tut.seed)
images, tissue = data["t1"].astype("float32"), TISSUE_TO_CLASS[data["label"]].astype("int32")
ids = [Case(case_id=f"slice{i:04d}", image_path=None, label_path=None) for i in range(NUM_IMAGES)]
split = {k: np.array([int(c.case_id[5:]) for c in v]) for k, v in split_cases(ids, 0.15, 0.25, tut.seed).items()}
x_train, y_train = images[split["train"]], tissue[split["train"]]
x_val, y_val = images[split["val"]], tissue[split["val"]]
x_test, y_test = images[split["test"]], tissue[split["test"]]
print(f"train {len(x_train)}, validation {len(x_val)}, test {len(x_test)} slices of {IMAGE_SIZE} x {IMAGE_SIZE}")


LABEL_CMAP = plt.matplotlib.colors.ListedColormap(["black", "tab:blue", "tab:orange"])


def mean_dice(pred, truth):
    """Dice of CSF and of brain tissue, each pooled over all test pixels, averaged."""
    return float(np.mean([dice_score(pred == k, truth == k) for k in range(1, NUM_CLASSES)]))


# %% [markdown]
# ## Three ways back up, in 2D and 3D
# - **Max un-pooling**: the encoder's `MaxPoolingWithIndices` remembers where in each 2x2 window the
#   maximum was; `MaxUnpooling` writes each value back there and zeros the other three. No weights:
#   the exact positions come from the encoder, the gaps are filled in by the convolution after it.
# - **Transposed convolution**: each input pixel "paints" a learned k x k patch, stride 2 apart.
# - **Linear interpolation** (`LinearUpSampling`): a fixed weighted average of the neighbours;
#   bilinear in 2D, trilinear in 3D (Keras' own `UpSampling3D` can only repeat voxels).
#
# Linear interpolation by 2 gives each output pixel weights 3/4 and 1/4 of its two nearest inputs per
# axis. That is a transposed convolution with stride 2 and the fixed 4-tap kernel
# `[1/4, 3/4, 3/4, 1/4]` (its outer product in 2D and 3D): we check it below. So a learned
# transposed convolution can represent linear up-sampling; the question is whether learning helps.

# %%
tent = np.array([0.25, 0.75, 0.75, 0.25], np.float32)
image_2d = x_train[:1]
volume_3d = np.repeat(image_2d[:, None], 8, axis=1)[:, :, 8:24, 8:24] * np.linspace(0.6, 1.0, 8)[None, :, None, None, None]
linear_vs_tent = {}
shown = {}
for rank, x in ((2, image_2d), (3, volume_3d.astype("float32"))):
    pooled, indices = MaxPoolingWithIndices(2)(x)
    unpooled = MaxUnpooling(2)([pooled, indices])
    transpose = (layers.Conv2DTranspose if rank == 2 else layers.Conv3DTranspose)(1, 4, strides=2, padding="same", use_bias=False)
    transpose.build(pooled.shape)
    kernel = np.outer(tent, tent) if rank == 2 else np.einsum("i,j,k->ijk", tent, tent, tent)
    transpose.set_weights([kernel[..., None, None]])
    linear = LinearUpSampling(2)(pooled)
    tent_output = transpose(pooled)
    interior = (slice(None),) + (slice(1, -1),) * rank  # the transposed conv pads with zeros, interpolation repeats the edge
    linear_vs_tent[rank] = float(np.abs(np.asarray(linear)[interior] - np.asarray(tent_output)[interior]).max())
    print(f"{rank}D: {tuple(x.shape[1:-1])} -> pooled {tuple(pooled.shape[1:-1])} -> up {tuple(linear.shape[1:-1])}; "
          f"max |linear - tent transposed conv| inside the border: {linear_vs_tent[rank]:.2e}")
    take = (lambda a: np.asarray(a)[0, ..., 0]) if rank == 2 else (lambda a: np.asarray(a)[0, np.shape(a)[1] // 2, ..., 0])
    shown[rank] = [take(a) for a in (x, pooled, unpooled, tent_output, linear)]

titles = ["input", "max-pooled (2x)", "max un-pooled", "transposed conv\n(tent kernel)", "linear (bi/trilinear)"]
fig, axes = plt.subplots(2, 5, figsize=(13, 5.5))
for row, rank in enumerate((2, 3)):
    vmax = shown[rank][0].max()
    for col, (panel, title) in enumerate(zip(shown[rank], titles)):
        axes[row, col].imshow(panel, cmap="gray", vmin=0, vmax=vmax)
        axes[row, col].set_title(f"{rank}D: {title}" + (", middle slice" if rank == 3 else ""), fontsize=9)
        axes[row, col].axis("off")
fig.suptitle("Down by max pooling, back up three ways (the same grey scale in each row)")
tut.save_figure(fig, "three_upsamplings.png")

# %% [markdown]
# ## Is transposed convolution necessary? Three decoders, one task
# The same encoder (two levels of convolutions and 2x max pooling), no skip connections (so the
# decoder alone must recover the detail), and three decoders that differ only in how they up-sample:
# un-pooling with the encoder's indices, a learned 2x2 transposed convolution (as in U-Net), or
# linear up-sampling followed by a 3x3 convolution. Instance normalisation (no running statistics
# to converge in a short run). Trained with Dice + cross-entropy; scored by the mean Dice of CSF and
# brain tissue on the test slices. The quick run trains each for only a few epochs: its ranking of
# the three is a first look, not a verdict (run the full version and several seeds).

# %%
NORM = "instance"


def encoder_decoder(method: str) -> keras.Model:
    inp = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1))
    x, indices = inp, []
    for filters in (8, 16):
        x = conv_norm_act(conv_norm_act(x, filters, norm=NORM), filters, norm=NORM)
        x, index = MaxPoolingWithIndices(2)(x)
        indices.append(index)
    x = conv_norm_act(x, 32, norm=NORM)
    for filters, index in zip((16, 8), indices[::-1]):
        if method == "unpooling":
            x = MaxUnpooling(2)([conv_norm_act(x, filters, 1, norm=NORM), index])  # back to where the maxima were
        elif method == "transposed":
            x = layers.Conv2DTranspose(filters, 2, strides=2)(x)
        else:
            x = conv_norm_act(LinearUpSampling(2)(x), filters, norm=NORM)
        x = conv_norm_act(x, filters, norm=NORM)
    out = layers.Conv2D(NUM_CLASSES, 1, activation="softmax", dtype="float32")(x)
    return keras.Model(inp, out, name=f"decoder_{method}")


decoder_dice, decoder_params, decoder_history, decoder_pred = {}, {}, {}, {}
for method in ("unpooling", "transposed", "linear"):
    tut.reseed()
    model = encoder_decoder(method)
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss=DiceCELoss())
    decoder_history[method] = model.fit(x_train, y_train, validation_data=(x_val, y_val), batch_size=BATCH_SIZE,
                                        epochs=EPOCHS, verbose=0, callbacks=[tut.progress(f"decoder: {method}")]).history
    decoder_pred[method] = model.predict(x_test, verbose=0).argmax(-1)
    decoder_dice[method], decoder_params[method] = mean_dice(decoder_pred[method], y_test), model.count_params()
    print(f"{method:>10s}: {decoder_params[method]:,} parameters, test mean Dice {decoder_dice[method]:.3f}")
keras.backend.clear_session()
best = max(decoder_dice, key=decoder_dice.get)
gap = decoder_dice["linear"] - decoder_dice["transposed"]
print(f"best decoder here: {best}; linear minus transposed: {gap:+.3f} Dice "
      f"({'learned up-sampling did not help' if gap >= -0.02 else 'the learned transposed convolution helped'})")

fig, axes = plt.subplots(1, 5, figsize=(16, 3.4))
for method, history in decoder_history.items():
    line, = axes[0].plot(history["loss"], label=f"{method} (train)")
    axes[0].plot(history["val_loss"], "--", color=line.get_color())
axes[0].set(xlabel="epoch", ylabel="Dice + CE", title="training (solid), validation (dashed)")
axes[0].legend(fontsize=7)
axes[1].imshow(y_test[0], cmap=LABEL_CMAP, vmin=0, vmax=NUM_CLASSES - 1, interpolation="nearest")
axes[1].set_title("test slice: truth", fontsize=9)
for ax, method in zip(axes[2:], decoder_pred):
    ax.imshow(decoder_pred[method][0], cmap=LABEL_CMAP, vmin=0, vmax=NUM_CLASSES - 1, interpolation="nearest")
    ax.set_title(f"{method}: Dice {decoder_dice[method]:.3f}", fontsize=9)
for ax in axes[1:]:
    ax.axis("off")
handles = [plt.Rectangle((0, 0), 1, 1, color=LABEL_CMAP(k)) for k in range(NUM_CLASSES)]
fig.legend(handles, CLASSES, loc="lower center", ncol=NUM_CLASSES, fontsize=8, bbox_to_anchor=(0.6, -0.06))
tut.save_figure(fig, "decoders.png")

# %% [markdown]
# ## Dense prediction: a patch classifier, and the same weights as a fully convolutional network
# The old way to segment: train a classifier that says which tissue the *centre pixel* of a 13 x 13
# patch is, then slide it over the image, one patch per pixel. Its layers are two valid 5x5
# convolutions (13 -> 9 -> 5 pixels) and two dense layers. A dense layer on a flattened 5 x 5 x 32 map
# *is* a 5x5 convolution with as many filters as it has units (32), and the last dense layer a 1x1 convolution: reshape the
# weights and the classifier becomes a fully convolutional network (FCN, Long et al. 2015) that takes a
# whole (padded) image and returns the label map in one pass, sharing every overlapping computation
# that the sliding window repeats 169 times per pixel.

# %%
HALF = PATCH // 2


def patch_classifier() -> keras.Model:
    inp = keras.Input((PATCH, PATCH, 1))
    x = layers.Conv2D(16, 5, activation="relu")(inp)
    x = layers.Conv2D(32, 5, activation="relu")(x)
    x = layers.Dense(32, activation="relu")(layers.Flatten()(x))
    return keras.Model(inp, layers.Dense(NUM_CLASSES, activation="softmax")(x), name="patch_classifier")


def fully_convolutional(classifier: keras.Model) -> keras.Model:
    """The classifier's weights in an all-convolutional network for images of any size."""
    inp = keras.Input((None, None, 1))
    conv1, conv2 = layers.Conv2D(16, 5, activation="relu"), layers.Conv2D(32, 5, activation="relu")
    conv3, conv4 = layers.Conv2D(32, 5, activation="relu"), layers.Conv2D(NUM_CLASSES, 1, activation="softmax")
    model = keras.Model(inp, conv4(conv3(conv2(conv1(inp)))), name="fcn")
    c1, c2, _, d1, d2 = [la for la in classifier.layers[1:]]
    conv1.set_weights(c1.get_weights())
    conv2.set_weights(c2.get_weights())
    # Flatten orders (row, column, channel), the layout of a conv kernel (kh, kw, c_in, c_out).
    conv3.set_weights([d1.get_weights()[0].reshape(5, 5, 32, 32), d1.get_weights()[1]])
    conv4.set_weights([d2.get_weights()[0].reshape(1, 1, 32, NUM_CLASSES), d2.get_weights()[1]])
    return model


def pad(x):
    return np.pad(x, ((0, 0), (HALF, HALF), (HALF, HALF), (0, 0)), mode="reflect")


rng = np.random.default_rng(tut.seed)
padded_train = pad(x_train)
pick = rng.integers(0, [len(x_train), IMAGE_SIZE, IMAGE_SIZE], size=(NUM_PATCHES, 3))
train_patches = np.stack([padded_train[i, r:r + PATCH, c:c + PATCH] for i, r, c in pick])
train_centres = y_train[pick[:, 0], pick[:, 1], pick[:, 2]]
tut.reseed()
classifier = patch_classifier()
classifier.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="sparse_categorical_crossentropy")
classifier.fit(train_patches, train_centres, batch_size=128, epochs=PATCH_EPOCHS, verbose=0,
               callbacks=[tut.progress("patch classifier")])
fcn = fully_convolutional(classifier)

padded_test = pad(x_test)
timed = padded_test[:TIMED_SLICES]  # labelled both ways, compared and timed
test_patches = np.lib.stride_tricks.sliding_window_view(timed[..., 0], (PATCH, PATCH), axis=(1, 2))
test_patches = np.ascontiguousarray(test_patches.reshape(-1, PATCH, PATCH, 1))  # one patch per pixel
print(f"{len(timed)} test slices = {len(test_patches):,} patches of {PATCH} x {PATCH}")


def by_patches():
    """The classifier, slid over every pixel: one forward pass per patch (in batches)."""
    return np.concatenate([keras.ops.convert_to_numpy(classifier(test_patches[i:i + PATCH_BATCH], training=False))
                           for i in range(0, len(test_patches), PATCH_BATCH)])


def by_fcn():
    """The same weights as an FCN: one forward pass per (padded) slice, all slices at once."""
    return keras.ops.convert_to_numpy(fcn(timed, training=False))


# Direct calls rather than predict(): the forward passes themselves are timed, not the loop around them.
by_patches(), by_fcn()  # first calls set up the kernels: keep them out of the timing
times = {"patch by patch": [], "FCN": []}
for _ in range(2):  # interleaved, best of two: the machine may be busy
    for name, run in (("patch by patch", by_patches), ("FCN", by_fcn)):
        start = time.perf_counter()
        out = run()
        times[name].append(time.perf_counter() - start)
        if name == "FCN":
            fcn_out = out
        else:
            patch_out = out
seconds = {k: min(v) for k, v in times.items()}
speedup = seconds["patch by patch"] / seconds["FCN"]
by_patch, by_fcn = patch_out.reshape(fcn_out.shape), fcn_out
same_map = float(np.abs(by_patch - by_fcn).max())
dense_dice = mean_dice(keras.ops.convert_to_numpy(fcn(padded_test)).argmax(-1), y_test)  # every test slice
print(f"max |patch-by-patch - FCN| probability: {same_map:.2e}; the label maps agree on "
      f"{np.mean(by_patch.argmax(-1) == by_fcn.argmax(-1)):.2%} of pixels")
print(f"patch by patch {seconds['patch by patch']:.3f} s, FCN {seconds['FCN']:.3f} s: the FCN is {speedup:.1f}x faster; "
      f"test mean Dice {dense_dice:.3f} (receptive field {PATCH} pixels, no up-sampling needed)")

fig, axes = plt.subplots(1, 4, figsize=(14, 3.4))
axes[0].imshow(x_test[0, ..., 0], cmap="gray")
axes[0].set_title("test slice", fontsize=9)
axes[1].imshow(by_patch[0].argmax(-1), cmap=LABEL_CMAP, vmin=0, vmax=NUM_CLASSES - 1, interpolation="nearest")
axes[1].set_title("patch classifier, one patch per pixel", fontsize=9)
axes[2].imshow(by_fcn[0].argmax(-1), cmap=LABEL_CMAP, vmin=0, vmax=NUM_CLASSES - 1, interpolation="nearest")
axes[2].set_title(f"FCN, one pass (max diff {same_map:.1e})", fontsize=9)
for ax in axes[:3]:
    ax.axis("off")
axes[3].bar(list(seconds), list(seconds.values()), color=["tab:red", "tab:green"])
axes[3].set(ylabel="seconds", title=f"label maps of {len(timed)} slices: {speedup:.0f}x")
fig.legend(handles, CLASSES, loc="lower center", ncol=NUM_CLASSES, fontsize=8, bbox_to_anchor=(0.4, -0.06))
tut.save_figure(fig, "fcn_vs_patches.png")

# %% [markdown]
# ## What we learned
# - Un-pooling puts values back exactly where the encoder's maxima were (no weights); a transposed
#   convolution learns its up-sampling; linear interpolation is fixed, and equals a transposed
#   convolution with a tent kernel (checked above in 2D and 3D, up to the border).
# - On this task, the three decoders' test Dice is printed above: compare them with their parameter
#   counts before paying for learned up-sampling.
# - A classifier's dense layers are convolutions in disguise. Rewritten as an FCN, the same weights give
#   the same label map (to float round-off) in one pass instead of one pass per pixel.
#
# ## Try next
# 1. Add U-Net's skip connections to `encoder_decoder` (concatenate the encoder's feature map after each
#    up-sampling). Which decoder gains most, and does the choice of up-sampling still matter?
# 2. Use a 3x3 transposed convolution with stride 2 (kernel size not a multiple of the stride): look
#    for checkerboard patterns in the untrained output and in the predictions.
# 3. Put a 2x max pooling into the patch classifier. Why does the FCN's output now shrink, and how do
#    "shift and stitch" or dilated convolutions recover a full-resolution map?
# 4. Train `encoder_decoder` in 3D on the pelvic phantom (`data_utils.synthetic.pelvic`): every layer used
#    here has a 3D version (`LinearUpSampling` is trilinear there).

# %%
tut.finish(
    {
        "linear_vs_tent_max_diff_2d": linear_vs_tent[2],
        "linear_vs_tent_max_diff_3d": linear_vs_tent[3],
        **{f"test_dice_{m}": d for m, d in decoder_dice.items()},
        "worst_decoder_dice": min(decoder_dice.values()),
        "linear_minus_transposed_dice": gap,
        **{f"params_{m}": p for m, p in decoder_params.items()},
        "fcn_vs_patch_max_diff": same_map,
        "fcn_speedup": speedup,
        "fcn_test_dice": dense_dice,
    },
    expect={
        # --quick, measured over seeds 0-2, oneDNN on and off, AMD EPYC AVX-512 (a busy machine):
        "linear_vs_tent_max_diff_2d": ("<=", 1e-5),  # measured 1.2e-7
        "linear_vs_tent_max_diff_3d": ("<=", 1e-5),  # measured 1.2e-7
        "worst_decoder_dice": (">=", 0.35),  # measured 0.46-0.47 (quick; the full run trains longer)
        "fcn_vs_patch_max_diff": ("<=", 1e-4),  # measured ~2e-6
        "fcn_speedup": (">=", 2.5),  # measured 28-40x (direct forward passes, best of two)
        "fcn_test_dice": (">=", 0.4),  # measured 0.65-0.75
    },
)
