# %% [markdown]
# # Unsupervised deformable image registration: a network that learns to warp one image onto another
#
# **Lecture topic:** image registration.
#
# **What you will learn**
# - what deformable registration computes: a displacement field `u` such that the moving image read
#   at `x + u(x)` looks like the fixed image at `x`;
# - the warping layer (a spatial transformer): resampling an image at displaced positions, written so
#   that gradients flow back into the displacement field;
# - unsupervised training (VoxelMorph): image similarity (local normalised cross-correlation) plus a
#   bending-energy penalty that keeps the field smooth; no true deformations are needed to train;
# - how to judge a registration without trusting the loss: label Dice and landmark distance before
#   and after, the error against a known field, deformation grids and the Jacobian determinant
#   (where it is <= 0 the transform folds space over itself, which anatomy never does).
#
# **Data:** synthetic 2D image pairs from `data_utils.synthetic.make_registration_pairs`: one phantom
# anatomy (a body with three organs) and the same anatomy deformed by a known smooth random field,
# each with its own noise, plus label maps and landmarks. Knowing the true field lets us check what
# the network learned in a way real data never allows.
#
# **Run it:**  `python tutorials/registration.py [--quick]`  (about 2 min on a laptop CPU; `--quick` ~20 s).
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
tut = common.start("registration", "Unsupervised deformable registration (VoxelMorph) on synthetic image pairs", quick=QUICK)

import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

import models  # noqa: E402
from data_utils import spatial  # noqa: E402
from data_utils.synthetic import make_registration_pairs  # noqa: E402
from training import losses, metrics  # noqa: E402
from training.registration_training import RegistrationTrainer  # noqa: E402

IMAGE_SIZE = tut.pick(64, 32)  # pixels per side; divisible by 2 ** (number of encoder levels)
MAX_DISPLACEMENT = tut.pick(6.0, 4.0)  # largest true displacement per axis, in pixels
NUM_TRAIN = tut.pick(256, 48)  # training pairs (the network never sees their true fields)
NUM_TEST = tut.pick(32, 16)  # held-out pairs, only for the evaluation
EPOCHS = tut.pick(30, 16)
BATCH_SIZE = 8
LEARNING_RATE = 3e-3
SIMILARITY = "lncc"  # local normalised cross-correlation in 9x9 windows; try "ssd"
REGULARISATION_WEIGHT = 1.0  # weight of the bending energy against the similarity
ORGANS = (1, 2, 3)  # label values of the three organs (0 is background)

# %% [markdown]
# ## The data: pairs with a known deformation
# ``moving`` is the anatomy as drawn; ``fixed`` is the same anatomy deformed by a smooth random
# field ``u`` (in pixels, one vector per pixel, components in array-axis order ``(dy, dx)``), so that
# ``fixed(x) = moving(x + u(x))``. Registration must find that field from the two images alone.
# The difference image shows what is wrong before registration: the organ edges do not line up.

# %%
train = make_registration_pairs(NUM_TRAIN, shape=(IMAGE_SIZE, IMAGE_SIZE), seed=tut.seed,
                                max_displacement=MAX_DISPLACEMENT)
test = make_registration_pairs(NUM_TEST, shape=(IMAGE_SIZE, IMAGE_SIZE), seed=tut.seed + 1000,
                               max_displacement=MAX_DISPLACEMENT)
print(f"train: moving {train['moving'].shape}, fixed {train['fixed'].shape}, field {train['displacement'].shape}")
# Real image pairs instead (no true field then, so keep the label and landmark checks below):
#   from data_utils.layouts import paired_folder_cases
#   from data_utils.io import load_nifti
#   cases = paired_folder_cases("data/pairs/moving", "data/pairs/fixed")  # same file names in both folders
#   moving = np.stack([load_nifti(c.image_path).array for c in cases])[..., None]  # (N, H, W, 1), same grid as fixed
#   fixed = np.stack([load_nifti(c.label_path).array for c in cases])[..., None]


def deformation_grid(ax, ddf, step=4, colour="tab:blue"):
    """Draw where a regular grid of output pixels reads the moving image: lines through x + u(x)."""
    size = ddf.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype("float32")
    y_read, x_read = yy + ddf[..., 0], xx + ddf[..., 1]
    for i in range(0, size, step):
        ax.plot(x_read[i, :], y_read[i, :], color=colour, lw=0.7)  # a row of the grid
        ax.plot(x_read[:, i], y_read[:, i], color=colour, lw=0.7)  # a column of the grid
    ax.set_xlim(-0.5, size - 0.5)
    ax.set_ylim(size - 0.5, -0.5)  # image convention: row 0 at the top
    ax.set_aspect("equal")
    ax.set_xticks([]), ax.set_yticks([])


fig, axes = plt.subplots(1, 4, figsize=(13, 3.4))
axes[0].imshow(train["moving"][0, ..., 0], cmap="gray"), axes[0].set_title("moving")
axes[1].imshow(train["fixed"][0, ..., 0], cmap="gray"), axes[1].set_title("fixed")
difference = axes[2].imshow(train["fixed"][0, ..., 0] - train["moving"][0, ..., 0], cmap="RdBu_r", vmin=-0.6, vmax=0.6)
axes[2].set_title("fixed - moving")
fig.colorbar(difference, ax=axes[2], fraction=0.046)
deformation_grid(axes[3], train["displacement"][0])
axes[3].set_title("true deformation grid")
for ax in axes[:3]:
    ax.axis("off")
tut.save_figure(fig, "pair_and_true_field.png")

# %% [markdown]
# ## The warping layer
# To warp an image with a field, every output pixel ``x`` reads the moving image at the position
# ``x + u(x)``. That position is rarely a whole pixel, so the value is interpolated from the
# neighbouring pixels (bilinear in 2D). Interpolation is a weighted sum whose weights depend
# smoothly on ``u``, so the warp is differentiable in ``u``: this is what lets a network learn the
# field through the image it produces (Jaderberg et al.'s spatial transformer).
#
# The kit has one resampler, ``data_utils.spatial``: ``identity_grid`` gives every pixel its own
# coordinates, ``sample`` reads an image at arbitrary coordinates, and ``warp(image, u)`` is the two
# together. Warping ``moving`` with the TRUE field should give ``fixed`` back, up to the noise.

# %%
moving0, fixed0, u0 = train["moving"][:1], train["fixed"][:1], train["displacement"][:1]
read_at = spatial.identity_grid((IMAGE_SIZE, IMAGE_SIZE))[None] + u0  # (1, H, W, 2): where to read
by_hand = keras.ops.convert_to_numpy(spatial.sample(moving0, read_at, interpolation="linear", padding="border"))
warped_true = keras.ops.convert_to_numpy(spatial.warp(moving0, u0))
print(f"sample(identity + u) equals warp(u): max difference {np.abs(by_hand - warped_true).max():.2e}")
print(f"MSE to fixed: moving {np.mean((moving0 - fixed0) ** 2):.4f}, "
      f"moving warped by the true field {np.mean((warped_true - fixed0) ** 2):.4f} "
      f"(noise floor 2 x 0.03^2 = {2 * 0.03 ** 2:.4f})")

# %% [markdown]
# ## The unsupervised loss: similarity + smoothness
# Without the true field, we train on what we can measure:
#
# ```
# loss = (1 - local NCC(fixed, moving warped by u)) + lambda * bending_energy(u)
# ```
#
# Local NCC compares the images in small windows, so it ignores slow brightness changes and
# rewards edges that line up. On its own, a similarity term would happily tear the image apart to
# match the noise; bending energy (the mean squared second derivative of ``u``) charges for every
# bend of the field and is zero for any affine transform. ``lambda`` trades accuracy for smoothness.
# Both terms live in ``training.losses``. Evaluated on the example pair:

# %%
zero_field = np.zeros_like(u0)
for name, field, image in (("zero field (no registration)", zero_field, moving0), ("true field", u0, warped_true)):
    similarity = float(losses.local_ncc_loss(fixed0, image)[0])
    bending = float(losses.bending_energy(field)[0])
    print(f"{name:>30s}: 1 - LNCC = {similarity:.3f}, bending energy = {bending:.5f}")

# %% [markdown]
# ## The network: VoxelMorph
# A small U-Net reads the two images side by side (two channels) and outputs two channels: the
# field ``u``. Its last convolution starts near zero, so the untrained network predicts the
# identity. The model from the zoo also contains the warping layer and returns both the warped
# image and the field; the trainer (a ``keras.Model`` with its own ``train_step``) computes the
# loss above, so ``fit()``, callbacks and progress bars work as usual.

# %%
network = models.get("voxelmorph", input_shape=(IMAGE_SIZE, IMAGE_SIZE, 1),
                     encoder_filters=(16, 32, 32), decoder_filters=(32, 32, 32, 16))
print(f"VoxelMorph: {network.count_params():,} parameters, outputs {sorted(network.output_names)}")
trainer = RegistrationTrainer(network, similarity=SIMILARITY, regulariser="bending_energy",
                              regularisation_weight=REGULARISATION_WEIGHT)
trainer.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE))
pairs = tf.data.Dataset.from_tensor_slices({"moving": train["moving"], "fixed": train["fixed"]})
pairs = pairs.shuffle(NUM_TRAIN, seed=tut.seed).batch(BATCH_SIZE)
history = trainer.fit(pairs, epochs=EPOCHS, verbose=2, callbacks=[tut.tensorboard("voxelmorph")]).history

fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
axes[0].plot(history["similarity"]), axes[0].set_title(f"similarity (1 - {SIMILARITY.upper()})")
axes[1].plot(history["regularisation"]), axes[1].set_title("bending energy")
for ax in axes:
    ax.set_xlabel("epoch")
tut.save_figure(fig, "training_curves.png")

# %% [markdown]
# ## Did it register? Measure on pairs the network has never seen
# The loss fell, but the loss is what the network optimised. Independent evidence:
# - **Dice of the organ labels**: warp the moving labels with the predicted field (nearest
#   neighbour, so labels stay whole numbers) and compare with the fixed labels;
# - **landmarks**: a landmark at ``p`` in the fixed image should sit at ``p + u(p)`` in the moving one;
#   the target registration error (TRE) is the distance to where it really is;
# - **endpoint error** against the true field, which only a synthetic experiment can give.

# %%
outputs = network.predict([test["moving"], test["fixed"]], batch_size=BATCH_SIZE, verbose=0)
predicted, warped = outputs["displacement"], outputs["warped"]
warped_labels = keras.ops.convert_to_numpy(
    spatial.warp(test["moving_label"][..., None].astype("float32"), predicted, interpolation="nearest"))
warped_labels = np.rint(warped_labels[..., 0]).astype("int32")


def mean_organ_dice(labels, reference):
    """Dice per organ, averaged over organs and pairs."""
    return float(np.mean([[metrics.dice_score(a == k, b == k) for k in ORGANS]
                          for a, b in zip(labels, reference, strict=True)]))


def mean_tre(field):
    """Mean landmark distance (pixels) when fixed landmarks p are mapped to p + field(p)."""
    errors = []
    for f, p_fixed, p_moving in zip(field, test["fixed_landmarks"], test["moving_landmarks"], strict=True):
        index = tuple(np.rint(p_fixed).astype(int).T)
        errors.append(metrics.target_registration_error(p_fixed + f[index], p_moving))
    return float(np.mean(errors))


no_field = np.zeros_like(predicted)
results = {
    "lncc_loss_before": float(np.mean(losses.local_ncc_loss(test["fixed"], test["moving"]))),
    "lncc_loss_after": float(np.mean(losses.local_ncc_loss(test["fixed"], warped))),
    "dice_before": mean_organ_dice(test["moving_label"], test["fixed_label"]),
    "dice_after": mean_organ_dice(warped_labels, test["fixed_label"]),
    "tre_before_px": mean_tre(no_field),
    "tre_after_px": mean_tre(predicted),
    "endpoint_error_before_px": float(np.mean(np.linalg.norm(test["displacement"], axis=-1))),
    "endpoint_error_after_px": float(np.mean(np.linalg.norm(test["displacement"] - predicted, axis=-1))),
    "folding_percent": metrics.folding_percentage(predicted),
}
for key, value in results.items():
    print(f"{key:>26s}: {value:.4f}")

# %% [markdown]
# ## Before and after, pair by pair
# Contours of the fixed labels (white) drawn over the moving image and over the warped image: after
# registration the organs should sit inside them, and the difference images (same colour scale,
# bar on the right) should lose most of their structure. The printed numbers above say how far.

# %%
show = min(3, NUM_TEST)
fig, axes = plt.subplots(show, 5, figsize=(14, 2.9 * show), squeeze=False)
for row in range(show):
    panels = [
        (test["moving"][row, ..., 0], "moving", "gray", None),
        (test["fixed"][row, ..., 0], "fixed", "gray", None),
        (warped[row, ..., 0], "warped moving", "gray", None),
        (test["fixed"][row, ..., 0] - test["moving"][row, ..., 0], "fixed - moving", "RdBu_r", 0.6),
        (test["fixed"][row, ..., 0] - warped[row, ..., 0], "fixed - warped", "RdBu_r", 0.6),
    ]
    for ax, (image, title, cmap, limit) in zip(axes[row], panels, strict=True):
        shown = ax.imshow(image, cmap=cmap, vmin=-limit if limit else None, vmax=limit)
        if title in ("moving", "warped moving"):
            for organ in ORGANS:
                ax.contour(test["fixed_label"][row] == organ, levels=[0.5], colors="white", linewidths=0.7)
        ax.set_title(title)
        ax.axis("off")
    fig.colorbar(shown, ax=axes[row, 3:], fraction=0.03, label="intensity difference")
axes[0, 0].legend(handles=[Line2D([], [], color="white", lw=1.5, label="fixed organs")], loc="lower left",
                  fontsize=7, facecolor="0.3", labelcolor="white")
tut.save_figure(fig, "before_after.png")

# %% [markdown]
# ## Is the field plausible? Deformation grid and Jacobian determinant
# The grid shows where each output pixel reads from; the learned grid should bend like the true
# one. The Jacobian determinant ``det(I + du/dx)`` is the local change of area: 1 means unchanged,
# above 1 the moving image is stretched out to fill the pixel's neighbourhood, below 1 squeezed, and
# at or below 0 the transform folds (two places map onto one). ``training.metrics`` computes it and
# the percentage of folded pixels; a good registration of real anatomy folds nowhere.

# %%
jacobian = metrics.jacobian_determinant(predicted[0])
fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
deformation_grid(axes[0], test["displacement"][0], colour="tab:green")
axes[0].set_title("true field")
deformation_grid(axes[1], predicted[0])
axes[1].set_title("predicted field")
im = axes[2].imshow(jacobian, cmap="RdBu_r", vmin=0.0, vmax=2.0)
if jacobian.min() <= 0:
    axes[2].contour(jacobian, levels=[0.0], colors="black", linewidths=1.0)
axes[2].set_title(f"Jacobian determinant (folding {metrics.folding_percentage(predicted[0]):.2f}%)")
axes[2].axis("off")
fig.colorbar(im, ax=axes[2], fraction=0.046)
tut.save_figure(fig, "deformation_and_jacobian.png")

# %% [markdown]
# ## What we learned
# - Registration predicts a displacement field; the warping layer turns it into an image by
#   interpolation, and because interpolation is differentiable the network can learn the field from
#   an image similarity alone: no true deformations, no labels.
# - The regulariser is not decoration: it decides what kind of fields are allowed. Bending energy
#   keeps them smooth and (with a large enough weight) free of folds.
# - Judge a registration with things it did not optimise: label overlap, landmarks, the Jacobian.
#   A falling similarity loss on its own can hide a torn, folded field.
#
# Try next:
# 1. Set ``REGULARISATION_WEIGHT = 0``: the similarity gets better, but look at the Jacobian map
#    and the folding percentage. Then try 10: what happens to Dice?
# 2. Change ``SIMILARITY`` to ``"ssd"``. The images share their intensities here, so it works; why
#    would it fail between an MR and a CT image, and what would ``"gmi"`` (mutual information) fix?
# 3. Weak supervision: ``RegistrationTrainer(..., label_weight=1.0)`` adds a Dice loss on warped
#    labels during training (batches then need ``"moving_label"`` and ``"fixed_label"``, as one-hot
#    maps). How much does Dice improve, and does the landmark error follow?
# 4. Increase ``MAX_DISPLACEMENT`` to 10 pixels. When does the network stop coping, and does
#    ``models.get("voxelmorph", ..., integration_steps=7)`` (a diffeomorphic field) fold less?
# 5. Run it in 3D: ``make_registration_pairs(..., shape=(32, 32, 32))`` and an input shape
#    ``(32, 32, 32, 1)``. Everything else stays the same.

# %%
tut.finish(
    results,
    expect={
        # measured over seeds 0-2, oneDNN on/off, AMD EPYC AVX-512: Dice gain 0.115-0.165, LNCC loss ratio 0.48-0.54, TRE ratio 0.57-0.67,
        # folding 0-0.018%
        "dice_after": (">=", results["dice_before"] + 0.08),  # organs overlap clearly better
        "lncc_loss_after": ("<=", 0.75 * results["lncc_loss_before"]),  # images clearly more alike
        "tre_after_px": ("<=", 0.85 * results["tre_before_px"]),  # landmarks closer
        "folding_percent": ("<=", 1.0),  # and the field stays (almost) fold-free
    },
)
