# %% [markdown]
# # Loss functions: cross-entropy, Dice, focal and Tversky on small lesions; L1 against L2 with outliers
#
# **Lecture topic:** loss functions for segmentation and regression.
#
# **What you will learn**
# - why plain cross-entropy struggles when the structure is a tiny fraction of the image (class
#   imbalance), and how the Dice loss, which scores overlap relative to the structure's size, does not;
# - what the focal loss changes (it down-weights pixels already classified well) and what it does not;
# - how the Tversky loss with `beta > alpha` trades precision for sensitivity (fewer missed lesions,
#   more false alarms);
# - why an L1 (absolute) loss ignores gross outliers that drag an L2 (squared) fit away.
#
# Every loss here is the kit's (`training.losses`), as the coursework uses them.
#
# **Data:** synthetic FLAIR MR head slices (`data_utils.synthetic.make_modality_pairs`) with small
# white-matter lesions (about 0.2% of the pixels), and a simulated biomarker-against-age table with
# corrupted entries. Nothing is downloaded.
#
# **Run it:**  `python tutorials/loss_functions.py [--quick]`  (about a minute on a laptop CPU;
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
tut = common.start("loss_functions", "Cross-entropy, Dice, focal and Tversky on small lesions; L1 vs L2 regression", quick=QUICK)

import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from data_utils.datasets import sample_patches  # noqa: E402
from data_utils.synthetic import make_modality_pairs  # noqa: E402
from data_utils.synthetic.modalities import TISSUE_LABELS  # noqa: E402
from training import losses, metrics  # noqa: E402

IMAGE_SIZE = 64  # pixels (a 220 mm field of view)
NUM_TRAIN, NUM_TEST = tut.pick((320, 160), (160, 80))  # head slices of different "patients"
PATCH = 32  # training patches; the trained network is fully convolutional and segments whole slices
NUM_PATCHES = tut.pick(960, 384)
FOREGROUND_RATIO = 0.7  # patches centred on a lesion pixel (the rest anywhere): a standard counter to imbalance
EPOCHS = tut.pick(12, 8)
LEARNING_RATE = 3e-3
TVERSKY_ALPHA, TVERSKY_BETA = 0.1, 0.9  # weights of false positives and false negatives
NUM_PATIENTS, OUTLIER_FRACTION = 200, 0.1  # regression table

LESION = next(k for k, v in TISSUE_LABELS.items() if v == "lesion")

# %% [markdown]
# ## Small lesions: a heavily imbalanced segmentation
# White-matter lesions are bright on FLAIR and small: a few pixels of a 64 x 64 slice, and some
# slices have none. Training and test slices come from different seeds (different patients).
#
# To use your own scans, load a folder of NIfTI pairs with the kit and cut slices::
#
#     from data_utils.datasets import load_cases, split_cases
#     from data_utils.layouts import folder_cases            # <case>_img.nii.gz / <case>_mask.nii.gz
#     splits = split_cases(folder_cases("/path/to/flair"), val_fraction=0.15, test_fraction=0.15)
#     train_volumes = load_cases(splits["train"])             # dicts with "image", "label" (D, H, W)
#
# and pass the volumes to `sample_patches` below with a patch size such as `(1, 32, 32)`.

# %%
def slices(num_images: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """FLAIR slices ``(N, 64, 64, 1)`` and binary lesion masks ``(N, 64, 64)``."""
    data = make_modality_pairs(num_images, image_size=IMAGE_SIZE, contrasts=("flair",), seed=seed, lesion_probability=0.8)
    return data["flair"], (data["label"] == LESION).astype(np.int32)


x_train, y_train = slices(NUM_TRAIN, seed=tut.seed)
x_test, y_test = slices(NUM_TEST, seed=tut.seed + 1000)
print(f"lesion pixels: {y_train.mean():.2%} of the training slices ({1 / y_train.mean():.0f} background pixels "
      f"per lesion pixel); {np.mean(y_train.sum(axis=(1, 2)) == 0):.0%} of slices have no lesion")

# Foreground-balanced patches (data_utils.datasets.sample_patches works on (D, H, W) volumes: a slice is D = 1).
volumes = [{"image": x[None, ..., 0], "label": y[None], "case_id": f"slice{i:03d}"} for i, (x, y) in enumerate(zip(x_train, y_train))]
patches = list(sample_patches(volumes, (1, PATCH, PATCH), NUM_PATCHES, np.random.default_rng(tut.seed), FOREGROUND_RATIO))
x_patch = np.stack([p["image"][0] for p in patches])
y_patch = np.stack([p["label"][0] for p in patches])
print(f"{NUM_PATCHES} training patches of {PATCH}x{PATCH}: lesion pixels {y_patch.mean():.2%} (still very imbalanced)")

shown = np.argsort(y_test.sum(axis=(1, 2)))[-4:]  # the test slices with the largest lesions
fig, axes = plt.subplots(1, 4, figsize=(12, 3.4))
for ax, index in zip(axes, shown):
    ax.imshow(x_test[index, ..., 0], cmap="gray", vmin=0, vmax=1.1)
    ax.contour(y_test[index], levels=[0.5], colors="red", linewidths=0.8)
    ax.set_title(f"test slice {index}: {y_test[index].sum()} lesion px", fontsize=9)
    ax.axis("off")
fig.suptitle("FLAIR slices; red outline: the lesion (truth)")
tut.save_figure(fig, "lesions.png")

# %% [markdown]
# ## Four losses
# With `p` the predicted lesion probability and `t` the truth per pixel:
# - **cross-entropy** `-mean(t log p + (1 - t) log(1 - p))`: every pixel counts the same, so with 100
#   background pixels per lesion pixel, "all background" is already a low loss;
# - **Dice** `1 - 2 sum(p t) / (sum p + sum t)` (lesion class only): overlap relative to the lesion's
#   own size, so a missed lesion costs the whole loss however small it is;
# - **focal** `-mean((1 - p_t)^gamma log p_t)`: cross-entropy with well-classified pixels down-weighted
#   (`gamma = 2`), but still a mean over pixels;
# - **Tversky** `1 - TP / (TP + alpha FP + beta FN)`: Dice is `alpha = beta = 0.5`; `beta = 0.9`
#   makes a missed lesion pixel nine times as costly as a false alarm.
#
# The network is the same small fully convolutional net for every loss (four 3x3 convolutions, dilated
# to see 31 pixels, then a per-pixel softmax), trained from the same initial weights.
# (In the quick run cross-entropy and focal usually find nothing at all; trained longer, as in the full
# run, cross-entropy finds lesions too but misses more of each lesion's pixels than Dice: the printed
# sensitivities show which happened in your run.)
# The four networks are trained side by side in one `fit`: one Keras model with four outputs, one
# loss each. They share no weights, so each network's gradient comes from its own loss alone.

# %%
LOSSES = {
    "cross-entropy": losses.CrossEntropyLoss(),
    "Dice": losses.SoftDiceLoss(include_background=False),
    "focal": losses.FocalLoss(gamma=2.0),
    f"Tversky ({TVERSKY_ALPHA}, {TVERSKY_BETA})": losses.TverskyLoss(alpha=TVERSKY_ALPHA, beta=TVERSKY_BETA, include_background=False),
}


def segmenter(name: str) -> keras.Model:
    """A small fully convolutional network: ``(B, H, W, 1)`` -> per-pixel class probabilities ``(B, H, W, 2)``."""
    tut.reseed()  # the same initial weights for every loss
    inputs = keras.Input((None, None, 1))
    x = inputs
    for dilation in (1, 2, 4, 1):
        x = keras.layers.Conv2D(8, 3, padding="same", dilation_rate=dilation, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Conv2D(2, 1, activation="softmax")(x), name=name)


networks = {name: segmenter(f"net{i}") for i, name in enumerate(LOSSES)}
image = keras.Input((None, None, 1))
side_by_side = keras.Model(image, [net(image) for net in networks.values()])
side_by_side.compile(keras.optimizers.Adam(LEARNING_RATE), loss=list(LOSSES.values()), steps_per_execution=10)
side_by_side.fit(x_patch, [y_patch] * len(LOSSES), epochs=EPOCHS, batch_size=32, verbose=0,
                 callbacks=[tut.progress("four networks, one loss each"), tut.tensorboard("four_losses")])

scores, predictions = {}, {}
for name, net in networks.items():
    probability = keras.ops.convert_to_numpy(net(x_test))[..., 1]  # whole 64 x 64 test slices
    predictions[name] = probability > 0.5
    scores[name] = {"dice": metrics.dice_score(predictions[name], y_test),  # pooled over all test pixels
                    "sensitivity": metrics.sensitivity(predictions[name], y_test),
                    "precision": metrics.precision(predictions[name], y_test)}
    print(f"{name:20s}: test Dice {scores[name]['dice']:.3f}, sensitivity {scores[name]['sensitivity']:.3f}, "
          f"precision {scores[name]['precision']:.3f}, lesion pixels predicted {int(predictions[name].sum())} "
          f"(truth {int(y_test.sum())})")
tversky = f"Tversky ({TVERSKY_ALPHA}, {TVERSKY_BETA})"
missed = [n for n in ("cross-entropy", "focal") if scores[n]["sensitivity"] < 0.1]
if missed:
    print(f"after {EPOCHS} epochs, {' and '.join(missed)} still {'predicts' if len(missed) == 1 else 'predict'} (almost) no lesion at all: "
          "'all background' is a good enough mean over pixels")
print(f"lesion pixels found (sensitivity): cross-entropy {scores['cross-entropy']['sensitivity']:.0%}, "
      f"Dice {scores['Dice']['sensitivity']:.0%}: a per-pixel mean is biased towards the majority class")
print(f"Tversky against Dice: sensitivity {scores[tversky]['sensitivity'] - scores['Dice']['sensitivity']:+.3f}, "
      f"precision {scores[tversky]['precision'] - scores['Dice']['precision']:+.3f}")

fig, axes = plt.subplots(1 + len(LOSSES), 4, figsize=(11, 2.9 * (1 + len(LOSSES))))
for column, index in enumerate(shown):
    for row, name in enumerate(["truth", *LOSSES]):
        ax = axes[row, column]
        ax.imshow(x_test[index, ..., 0], cmap="gray", vmin=0, vmax=1.1)
        mask = y_test[index] if name == "truth" else predictions[name][index]
        ax.imshow(np.ma.masked_equal(mask.astype(int), 0), cmap="autumn", vmin=0, vmax=1, alpha=0.7)
        if name != "truth":
            ax.contour(y_test[index], levels=[0.5], colors="cyan", linewidths=0.6)
        ax.set_title(name if column == 0 else "", fontsize=9, loc="left")
        ax.axis("off")
fig.legend(handles=[plt.Rectangle((0, 0), 1, 1, color="yellow"), plt.Line2D([], [], color="cyan")],
           labels=["lesion (truth in the first row, prediction below)", "true lesion outline"], loc="lower center", ncol=2)
fig.suptitle("Held-out test slices: what each loss segments", y=0.995)
tut.save_figure(fig, "segmentations.png")

fig, ax = plt.subplots(figsize=(7, 3.8))
width = 0.25
for k, measure in enumerate(("dice", "sensitivity", "precision")):
    ax.bar(np.arange(len(LOSSES)) + (k - 1) * width, [scores[n][measure] for n in LOSSES], width, label=measure)
ax.set(xticks=range(len(LOSSES)), xticklabels=list(LOSSES), ylim=(0, 1.05), ylabel="test score (all test pixels)",
       title=f"Same network, same data, four losses ({EPOCHS} epochs)")
ax.legend()
tut.save_figure(fig, "loss_comparison.png")

# %% [markdown]
# ## Regression: L1 against L2 when some targets are wrong
# A biomarker falls linearly with age; in 10% of patients the recorded value is grossly wrong (a
# failed segmentation, a unit error). The L2 loss `mean((y - f(x))^2)` grows with the square of an
# error, so a few huge errors dominate it and pull the line towards them; its minimiser is the
# conditional *mean*. The L1 loss `mean(|y - f(x)|)` grows linearly: an outlier pulls no harder
# than any other point that lies on the same side, and the minimiser is the conditional *median*,
# which the outliers barely move. Both lines are one Dense unit trained with the kit's `SSDLoss`
# (mean squared error) and `L1Loss`, side by side in one model as above.

# %%
rng = np.random.default_rng(tut.seed)
age = rng.uniform(-1, 1, (NUM_PATIENTS, 1)).astype("float32")  # age, scaled to [-1, 1]
true_slope, true_intercept = -1.5, 0.5
value = (true_slope * age + true_intercept + 0.1 * rng.normal(size=age.shape)).astype("float32")
corrupted = np.zeros(NUM_PATIENTS, bool)
corrupted[rng.choice(NUM_PATIENTS, int(round(OUTLIER_FRACTION * NUM_PATIENTS)), replace=False)] = True
value[corrupted] += rng.uniform(3, 6, (int(corrupted.sum()), 1)).astype("float32")  # gross errors, all upwards

tut.reseed()
line_inputs = keras.Input((1,))
lines = {"L2 (SSDLoss)": keras.layers.Dense(1, name="l2_line"), "L1 (L1Loss)": keras.layers.Dense(1, name="l1_line")}
regression = keras.Model(line_inputs, [layer(line_inputs) for layer in lines.values()])
regression.compile(keras.optimizers.Adam(0.05), loss=[losses.SSDLoss(), losses.L1Loss()], steps_per_execution=20)
regression.fit(np.tile(age, (20, 1)), [np.tile(value, (20, 1))] * 2, epochs=tut.pick(15, 10), batch_size=NUM_PATIENTS,
               verbose=0, callbacks=[tut.progress("two lines, L2 and L1")])
grid = np.linspace(-1, 1, 101, dtype="float32")[:, None]
line_error = {}
for name, layer in lines.items():
    kernel, bias = (float(keras.ops.convert_to_numpy(w).ravel()[0]) for w in layer.weights)
    line_error[name] = float(np.mean(np.abs(kernel * grid + bias - (true_slope * grid + true_intercept))))
    print(f"{name}: slope {kernel:+.2f}, intercept {bias:+.2f} (truth {true_slope:+.2f}, {true_intercept:+.2f}); "
          f"mean distance from the true line {line_error[name]:.3f}")
print(f"with {corrupted.mean():.0%} corrupted values the L2 line is {line_error['L2 (SSDLoss)'] / line_error['L1 (L1Loss)']:.1f}x "
      "further from the truth than the L1 line")

fig, ax = plt.subplots(figsize=(7, 4.2))
ax.scatter(age[~corrupted], value[~corrupted], s=10, color="grey", label="patients")
ax.scatter(age[corrupted], value[corrupted], s=18, color="tab:red", marker="x", label="corrupted values")
ax.plot(grid, true_slope * grid + true_intercept, "k--", label="true relation")
for name, layer in lines.items():
    ax.plot(grid, keras.ops.convert_to_numpy(layer(grid)), lw=2, label=f"fit with {name}")
ax.set(xlabel="age (scaled)", ylabel="biomarker", title="Outliers pull the L2 fit, not the L1 fit")
ax.legend(fontsize=8)
tut.save_figure(fig, "l1_vs_l2_regression.png")

# %% [markdown]
# ## What we learned
# - With a structure of a fraction of a percent of the pixels, per-pixel means (cross-entropy, focal)
#   can be low while nothing is segmented; overlap losses (Dice, Tversky) normalise by the
#   structure's size. In practice Dice + cross-entropy (`DiceCELoss`) combines the stable gradients
#   of one with the imbalance-robustness of the other.
# - Focal loss alone re-weights easy pixels but does not re-balance the classes; it is usually
#   combined with a class weight (`alpha`) or a Dice term.
# - Tversky with `beta > alpha` finds more lesion pixels and raises more false alarms: choose it when
#   a missed lesion is worse than an extra one to check.
# - L2 regression follows the mean and is pulled by outliers; L1 follows the median and is not.
#
# ## Try next
# 1. Train longer (`EPOCHS = 40`): does cross-entropy eventually find the lesions? At what cost in time?
# 2. Add `losses.CrossEntropyLoss(class_weights=[1, 50])` and `losses.FocalLoss(alpha=[0.25, 0.75])`:
#    how close do they get to Dice?
# 3. Set `FOREGROUND_RATIO = 0` (uniform patches): which losses still learn?
# 4. Sweep `TVERSKY_BETA` from 0.5 to 0.95 and plot sensitivity against precision.
# 5. Make the outliers symmetric (half up, half down): is the L2 slope still wrong? Why?

# %%
results = {
    "dice_ce": scores["cross-entropy"]["dice"],
    "dice_dice": scores["Dice"]["dice"],
    "dice_focal": scores["focal"]["dice"],
    "dice_tversky": scores[tversky]["dice"],
    "dice_gain_over_ce": scores["Dice"]["dice"] - scores["cross-entropy"]["dice"],
    "dice_minus_ce_sensitivity": scores["Dice"]["sensitivity"] - scores["cross-entropy"]["sensitivity"],
    "tversky_minus_dice_sensitivity": scores[tversky]["sensitivity"] - scores["Dice"]["sensitivity"],
    "tversky_minus_dice_precision": scores[tversky]["precision"] - scores["Dice"]["precision"],
    "l2_over_l1_line_error": line_error["L2 (SSDLoss)"] / line_error["L1 (L1Loss)"],
}
# Measured over --quick seeds 0-2 with oneDNN on and off (AMD EPYC, AVX-512), and one full run (seed 0).
tut.finish(results, expect={
    "dice_dice": (">=", 0.6),  # quick 0.78-0.84; full 0.86
    "dice_gain_over_ce": (">=", tut.pick(-0.05, 0.4)),  # quick 0.78-0.84 (CE finds nothing); full 0.003 (CE catches up)
    "dice_minus_ce_sensitivity": (">=", tut.pick(0.04, 0.4)),  # quick 0.87-0.89 (seeds 0-2, oneDNN on); full 0.10
    "tversky_minus_dice_sensitivity": (">=", 0.04),  # quick 0.073-0.119; full 0.082
    "tversky_minus_dice_precision": ("<=", -0.1),  # quick -0.61 to -0.29; full -0.18
    "l2_over_l1_line_error": (">=", 5.0),  # quick 16.8-57.6; full 19.4
})
