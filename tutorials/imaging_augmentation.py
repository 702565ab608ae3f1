# %% [markdown]
# # Imaging-specific augmentation: CT windows and projective transforms, MR bias field and Rician noise, ultrasound speckle
#
# **Lecture topic:** data augmentation that models how medical images are made, not only generic
# flips and crops.
#
# **What you will learn**
# - **CT** intensities are physical (Hounsfield units, HU): a network sees them through a *window*
#   (centre, width); jittering the window per sample mimics scanners and readers; a **projective**
#   (perspective) transform mimics an object seen at an angle (tilted gantry, oblique slice);
# - **MR** has no absolute scale: a smooth multiplicative **bias field** (coil sensitivity) and
#   **Rician** noise (the magnitude of complex Gaussian noise) are what changes between scanners;
# - **ultrasound** is dominated by multiplicative **speckle**;
# - how each looks, and what augmenting with the MR and CT ones does to a segmentation network
#   tested on images from a "different scanner".
#
# Every augmentation here is a seeded graph op from `data_utils.augment` (same seed, same output;
# usable inside `tf.data` and as a Keras layer); image and label move together in the spatial ones.
#
# **Data:** synthetic head slices in T1 and CT (`data_utils.synthetic.make_modality_pairs`) with a
# tissue map, and ultrasound-like images (`data_utils.synthetic.make_ultrasound_dataset`).
#
# **Run it:** `python tutorials/imaging_augmentation.py [--quick] [--seed N]` (about 1.5 minutes on a
# laptop CPU; `--quick` about 20 s, MR experiment only), or open it as a notebook (`jupytext --to
# notebook`, VS Code, Jupyter, Colab) and set `QUICK = True` below or the environment variable
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
tut = common.start("imaging_augmentation", "CT, MR and ultrasound augmentation shown, and what it does to a model", quick=QUICK)

import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import models  # noqa: E402
from data_utils import augment  # noqa: E402
from data_utils.datasets import Case, split_cases  # noqa: E402
from data_utils.preprocess import CT_WINDOWS, window_ct  # noqa: E402
from data_utils.synthetic import make_modality_pairs, make_ultrasound_dataset  # noqa: E402
from training.losses import DiceCELoss  # noqa: E402
from training.metrics import dice_score  # noqa: E402

IMAGE_SIZE = 32
NUM_IMAGES = tut.pick(500, 200)  # slices per modality experiment; split 60/15/25
EPOCHS = tut.pick(12, 5)
BATCH_SIZE = 16
LEARNING_RATE = 1e-2
CLASSES = ("outside the brain", "CSF", "grey matter", "white matter")
TISSUE_TO_CLASS = np.array([0, 0, 0, 1, 2, 3, 3])  # air, scalp, skull, CSF, grey, white, lesion -> CLASSES
MR_CHAIN = [augment.BiasField(coeff_range=(0.0, 0.7), prob=0.8), augment.RicianNoise(std=0.06, prob=0.8)]  # std: sigma ~ U(0, 0.06)
CT_CHAIN = [augment.Projective(distortion=0.15, prob=0.8),
            augment.CTWindow(window="brain", center_shift=15.0, width_scale=0.3, prob=0.8)]
RUN_CT_EXPERIMENT = not tut.quick  # the quick run trains the MR pair only

# %% [markdown]
# ## CT: windows in Hounsfield units, and a projective transform
# Air is -1000 HU, water 0, soft tissue 20-80, bone up to ~2000. A display window (centre, width)
# maps `[c - w/2, c + w/2]` to black..white and clips the rest: the brain window (40/80) separates grey
# and white matter (40 vs 28 HU here) but saturates the skull; the bone window shows the skull and
# makes the brain one grey. `augment.ct_window` windows every sample and, with `center_shift` /
# `width_scale`, draws each sample's window at random around the nominal one.
#
# To use real CT, load it in HU (`data_utils.io.load_nifti` keeps the scanner's values):
#
# ```python
# from data_utils.io import load_nifti
# volume = load_nifti("/path/to/ct.nii.gz")     # volume.array in HU
# ```

# %%
ct_data = make_modality_pairs(4, image_size=64, contrasts=("ct",), seed=tut.seed)
ct = ct_data["ct"][:1]  # (1, 64, 64, 1) in HU
fig, axes = plt.subplots(2, 4, figsize=(12, 6.2))
axes[0, 0].imshow(ct[0, ..., 0], cmap="gray")
axes[0, 0].set_title(f"raw HU ({ct.min():.0f} .. {ct.max():.0f})", fontsize=9)
for ax, name in zip(axes[0, 1:], ("brain", "soft_tissue", "bone")):
    ax.imshow(window_ct(ct[0, ..., 0], window=name), cmap="gray", vmin=0, vmax=1)
    ax.set_title(f"{name} window {CT_WINDOWS[name]}", fontsize=9)
jittered = augment.ct_window(np.repeat(ct, 2, axis=0), [tut.seed, 1], window="brain", center_shift=15.0, width_scale=0.3).numpy()
label = ct_data["label"][:1].repeat(2, axis=0)
moved, moved_label = augment.random_projective(np.repeat(ct, 2, axis=0), [tut.seed, 2], label=label, distortion=0.15)
for ax, image, title in ((axes[1, 0], jittered[0], "brain window, jittered (1)"),
                         (axes[1, 1], jittered[1], "brain window, jittered (2)")):
    ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
for ax, k in zip(axes[1, 2:], range(2)):
    ax.imshow(window_ct(moved.numpy()[k, ..., 0], window="bone"), cmap="gray", vmin=0, vmax=1)
    ax.contour(moved_label.numpy()[k] == 2, levels=[0.5], colors="red", linewidths=0.7)  # the skull label moved with it
    ax.set_title(f"projective transform ({k + 1}), bone window\nred: the skull label, moved alike", fontsize=9)
for ax in axes.ravel():
    ax.axis("off")
tut.save_figure(fig, "ct_windows_and_projective.png")

# %% [markdown]
# ## MR: bias field and Rician noise
# The receive coil's sensitivity falls off with distance: the image is multiplied by a smooth field
# (`augment.bias_field`, a polynomial in log space as in MONAI). The magnitude image of complex
# Gaussian noise is Rician (`augment.rician_noise`): biased upwards in dark regions, near-Gaussian in
# bright ones. Both change between scanners and sessions; the anatomy does not.

# %%
mr = make_modality_pairs(1, image_size=64, contrasts=("t1",), seed=tut.seed, artefacts=False)["t1"]
fields = augment.bias_field(np.ones((3, 64, 64, 1), "float32"), [tut.seed, 3], coeff_range=(0.2, 0.4)).numpy()
biased = np.repeat(mr, 3, axis=0) * fields
noisy = augment.rician_noise(np.repeat(mr, 3, axis=0), [tut.seed, 4], std=0.1).numpy()  # sigma ~ U(0, 0.1) per sample
fig, axes = plt.subplots(2, 4, figsize=(12, 6.2))
axes[0, 0].imshow(mr[0, ..., 0], cmap="gray", vmin=0, vmax=1.2)
axes[0, 0].set_title("T1, no artefacts", fontsize=9)
for k in range(3):
    axes[0, k + 1].imshow(biased[k, ..., 0], cmap="gray", vmin=0, vmax=1.2)
    axes[0, k + 1].contour(fields[k, ..., 0], levels=5, cmap="autumn", linewidths=0.6)
    axes[0, k + 1].set_title(f"bias field {k + 1} (contours: {fields[k].min():.2f}..{fields[k].max():.2f})", fontsize=9)
    axes[1, k + 1].imshow(noisy[k, ..., 0], cmap="gray", vmin=0, vmax=1.2)
    axes[1, k + 1].set_title(f"Rician noise, sample {k + 1}", fontsize=9)
background = noisy[:, :6, :6, 0]  # air in a corner: pure noise, no signal
axes[1, 0].hist(background.ravel(), bins=30, color="tab:grey")
axes[1, 0].set(title="air after Rician noise: never negative", xlabel="intensity")
for ax in list(axes[0]) + list(axes[1, 1:]):
    ax.axis("off")
tut.save_figure(fig, "mr_bias_and_rician.png")

# %% [markdown]
# ## Ultrasound: speckle
# Speckle is the interference of echoes from many sub-resolution scatterers: multiplicative, grainy
# noise. The phantom already has it; `augment.speckle_noise` multiplies by `1 + n`, `n ~ N(0, sigma)`,
# to vary its strength. (This tutorial shows speckle on the image only; try training with it on the
# ultrasound classification task of `convolution_basics.py`.)

# %%
us_images, _, _ = make_ultrasound_dataset(4, image_size=64, seed=tut.seed)
us_image = us_images[:1].astype("float32")
fig, axes = plt.subplots(1, 4, figsize=(12, 3.3))
for ax, sigma in zip(axes, (0.0, 0.2, 0.4, 0.6)):
    speckled = augment.speckle_noise(us_image, [tut.seed, 5], std=(sigma, sigma)).numpy()
    ax.imshow(speckled[0, ..., 0], cmap="gray", vmin=0, vmax=float(us_image.max()))
    ax.set_title(f"speckle sigma {sigma}" + (" (phantom as made)" if sigma == 0 else ""), fontsize=9)
    ax.axis("off")
tut.save_figure(fig, "ultrasound_speckle.png")

# %% [markdown]
# ## What augmentation does to a model: train on one scanner, test on another
# A small U-Net (`models.get("unet")`) segments four classes (outside the brain, CSF, grey, white
# matter) on 32 x 32 slices. Each experiment trains it twice on the same images, without and with
# the modality's augmentation (`augment.apply_to_dataset`, fresh randomness every batch), then tests
# both on held-out slices as acquired, and on the same slices as "another scanner" would give them:
# - **MR**: training images without artefacts; the other scanner adds a strong bias field and Rician
#   noise (augmentation: `BiasField`, `RicianNoise`);
# - **CT** (full run only): training images in the nominal brain window; the other scanner's
#   calibration is 12 HU off and the slices are seen at an angle (augmentation: window jitter and
#   `Projective`).
# The shifts are drawn from the kinds of change the augmentation models (not the same samples): that
# is the bet augmentation makes, and it only pays where the bet is right.

# %%
def split_ids(n):
    ids = [Case(case_id=f"slice{i:04d}", image_path=None, label_path=None) for i in range(n)]
    return {k: np.array([int(c.case_id[5:]) for c in v]) for k, v in split_cases(ids, 0.15, 0.25, tut.seed).items()}


def mean_dice(pred, truth):
    return float(np.mean([dice_score(pred == k, truth == k) for k in range(1, len(CLASSES))]))


def train_and_test(x, y, split, chain, label, preprocess, tests):
    """Train a small U-Net; Dice on each test set.

    Training images go through ``chain`` (the augmentation, ending with any preprocessing), or through
    ``preprocess`` alone when ``chain`` is None; validation and test images through ``preprocess``.
    """
    tut.reseed()
    net = models.get("unet", input_shape=(IMAGE_SIZE, IMAGE_SIZE, 1), num_classes=len(CLASSES), depth=2,
                     base_filters=8, norm="instance", upsampling="resize")
    net.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss=DiceCELoss())
    train = tf.data.Dataset.from_tensor_slices({"image": x[split["train"]], "label": y[split["train"]]})
    # Endless (`repeat`), with `steps_per_epoch` marking the epochs: a pipeline that ends every epoch is
    # rebuilt every epoch, which on a set this small costs more than the epoch's training. Batching
    # after `repeat` keeps every batch full, so the training step is compiled for one shape only.
    train = train.shuffle(len(split["train"]), seed=tut.seed).repeat().batch(BATCH_SIZE)
    steps = chain or ([preprocess] if preprocess else [])
    if steps:
        train = augment.apply_to_dataset(train, steps, seed=tut.seed)  # fresh seeds for every batch
    train = train.map(lambda e: (e["image"], e["label"]))
    prepare = augment.Compose([preprocess]) if preprocess else (lambda images, seed: images)
    val = tf.data.Dataset.from_tensor_slices((prepare(x[split["val"]], 0), y[split["val"]])).batch(len(split["val"])).cache()
    net.fit(train, validation_data=val, epochs=EPOCHS, steps_per_epoch=-(-len(split["train"]) // BATCH_SIZE), verbose=0,
            callbacks=[tut.progress(label), tut.tensorboard(label)])
    # One call on the whole (small) test set: no predict loop to compile.
    return {name: mean_dice(keras.ops.convert_to_numpy(net(prepare(images, 0), training=False)).argmax(-1), truth)
            for name, (images, truth) in tests.items()}


experiments = {}
# With real data instead of the phantom: a folder of NIfTI pairs (case000_img.nii.gz + case000_mask.nii.gz)
# loads as slices with `data_utils.datasets`:
#     cases = find_cases("my_data/")   # then split_cases(cases, 0.15, 0.25, seed) by patient
#     slices = stack_slices(load_cases(cases, normalize="zscore_nonzero"))   # image (N, H, W, 1), label (N, H, W)
mr_data = make_modality_pairs(NUM_IMAGES, image_size=IMAGE_SIZE, contrasts=("t1",), seed=tut.seed + 100, artefacts=False)
mr_x, mr_y = mr_data["t1"].astype("float32"), TISSUE_TO_CLASS[mr_data["label"]].astype("int32")
mr_split = split_ids(NUM_IMAGES)
mr_test = mr_x[mr_split["test"]]
# The "other scanner": a strong field and noise, drawn once with a seed the training never uses.
other_scanner = augment.rician_noise(augment.bias_field(mr_test, [999, 1], coeff_range=(0.6, 0.7)), [999, 2],
                                     std=0.05, sample_std=False).numpy()
mr_tests = {"as acquired": (mr_test, mr_y[mr_split["test"]]), "other scanner": (other_scanner, mr_y[mr_split["test"]])}
experiments["MR"] = {setting: train_and_test(mr_x, mr_y, mr_split, chain, f"MR, {setting}", None, mr_tests)
                     for setting, chain in (("no augmentation", None), ("bias field + Rician", MR_CHAIN))}

if RUN_CT_EXPERIMENT:
    ct_all = make_modality_pairs(NUM_IMAGES, image_size=IMAGE_SIZE, contrasts=("ct",), seed=tut.seed + 200)
    ct_x, ct_y = ct_all["ct"].astype("float32"), TISSUE_TO_CLASS[ct_all["label"]].astype("int32")
    ct_split = split_ids(NUM_IMAGES)
    test_x, test_y = ct_x[ct_split["test"]], ct_y[ct_split["test"]]
    tilted, tilted_y = augment.random_projective(test_x + 12.0, [999, 3], label=test_y, distortion=0.12)
    ct_tests = {"as acquired": (test_x, test_y), "other scanner": (tilted.numpy(), tilted_y.numpy())}
    nominal = augment.CTWindow(window="brain")
    experiments["CT"] = {setting: train_and_test(ct_x, ct_y, ct_split, chain, f"CT, {setting}", nominal, ct_tests)
                         for setting, chain in (("no augmentation", None), ("window jitter + projective", CT_CHAIN))}

gains = {}
for modality, runs in experiments.items():
    (plain_name, plain), (aug_name, augmented) = runs.items()
    gains[modality] = augmented["other scanner"] - plain["other scanner"]
    for name, scores in runs.items():
        print(f"{modality} {name:>28s}: Dice as acquired {scores['as acquired']:.3f}, other scanner {scores['other scanner']:.3f}")
    print(f"{modality}: augmentation changes the other scanner's Dice by {gains[modality]:+.3f} "
          f"and the as-acquired Dice by {augmented['as acquired'] - plain['as acquired']:+.3f}")

fig, axes = plt.subplots(1, len(experiments), figsize=(5.5 * len(experiments), 3.6), squeeze=False)
for ax, (modality, runs) in zip(axes[0], experiments.items()):
    for j, (name, scores) in enumerate(runs.items()):
        ax.bar(np.arange(2) + (j - 0.5) * 0.35, [scores["as acquired"], scores["other scanner"]], 0.35, label=name)
    ax.set_xticks(range(2), ["test, as acquired", "test, other scanner"])
    ax.set(ylabel="mean Dice (3 tissues)", ylim=(0, 1), title=f"{modality}: trained with vs without augmentation")
    ax.legend(fontsize=8)
tut.save_figure(fig, "augmentation_and_robustness.png")

# %% [markdown]
# ## What we learned
# - CT is windowed in HU; a random window per sample and a projective transform model scanner
#   calibration and viewing angle. MR changes by smooth multiplicative fields and Rician noise;
#   ultrasound by speckle. Each is a seeded graph op in `data_utils.augment`.
# - Trained without them, the network learned the one scanner's intensities; the measured drop on
#   the "other scanner" and what augmentation recovered are printed above. Augmentation can also
#   cost a little on images like the training ones (also printed): it trades fit for robustness.
#
# ## Try next
# 1. Remove `RicianNoise` from `MR_CHAIN`. How much of the recovery was the bias field's?
# 2. Make the other scanner's bias field twice as strong as any in training. Does augmentation still help?
# 3. Add `augment.SpeckleNoise(std=(0.0, 0.4))` to the training of the ultrasound classifier in
#    `convolution_basics.py` and test it on images with more speckle.
# 4. Train on CT with the bone window only. Which tissues can the network still separate?

# %%
tut.finish(
    {
        **{f"{m.lower()}_{'aug' if i else 'plain'}_{t.replace(' ', '_')}": s[t]
           for m, runs in experiments.items() for i, s in enumerate(runs.values()) for t in s},
        **{f"{m.lower()}_augmentation_gain_other_scanner": g for m, g in gains.items()},
    },
    expect={
        # --quick, measured over seeds 0-2 with oneDNN on and off, AMD EPYC AVX-512; small U-Nets after 5 epochs
        # vary a lot between seeds, so the bars are low:
        "mr_augmentation_gain_other_scanner": (">=", 0.015),  # measured 0.056-0.203
        "mr_aug_as_acquired": (">=", 0.4),  # measured 0.468-0.679
    },
)
