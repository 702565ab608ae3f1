# %% [markdown]
# # Multi-task learning: segment brain tissue and detect lesions with one shared encoder.
#
# **Lecture topic:** multi-task learning (research topics).
#
# **What you will learn:**
# - hard parameter sharing: one encoder, one head per task (a segmentation decoder and a classifier);
# - why the loss weights matter: two losses on different scales, and a gradient for each;
# - learned homoscedastic-uncertainty weighting (Kendall, Gal & Cipolla 2018): one learned
#   log-variance per task replaces hand-tuned weights;
# - how to compare a multi-task model with single-task models of the same size, and how to recognise
#   negative transfer (sharing that hurts) when it happens.
#
# **Data:** synthetic FLAIR-like head slices (``data_utils.synthetic.make_modality_pairs``) with a tissue
# map (air, scalp, skull, CSF, grey matter, white matter, lesion). Task 1 segments the tissues;
# task 2 says whether the slice contains a white-matter lesion.
#
# **Run it:**  ``python tutorials/multitask_learning.py [--quick]``  (about 2 min on a laptop CPU;
# ``--quick`` ~25 s).
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
tut = common.start("multitask_learning", "Multi-task learning: tissue segmentation + lesion detection", quick=QUICK)

import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

from data_utils.synthetic import make_modality_pairs  # noqa: E402
from training import losses  # noqa: E402
from training.metrics import dice_score  # noqa: E402
from training.multitask import MultiTaskTrainer  # noqa: E402

IMAGE_SIZE = 32
NUM_CLASSES = 7  # tissue labels 0..6, 6 = lesion
NUM_TRAIN = tut.pick(600, 200)
NUM_TEST = tut.pick(200, 100)
EPOCHS = tut.pick(20, 6)
BATCH = 16
LEARNING_RATE = 3e-3
FIXED_WEIGHTS = {"segmentation": 1.0, "lesion": 1.0}

# %% [markdown]
# ## The data
# Each slice has a tissue map; a slice is "lesion positive" if any pixel is lesion.

# %%
# With real data instead of the phantom: a folder of NIfTI pairs (case000_img.nii.gz + case000_mask.nii.gz)
# loads as slices with `data_utils.datasets`:
#     cases = find_cases("my_data/")   # then split_cases(cases, 0.15, 0.25, seed) by patient
#     slices = stack_slices(load_cases(cases, normalize="zscore_nonzero"))   # image (N, H, W, 1), label (N, H, W)
# and the per-image task label (here: a lesion present or not) follows from each label slice.
data = make_modality_pairs(NUM_TRAIN + NUM_TEST, image_size=IMAGE_SIZE, contrasts=("flair",), seed=tut.seed)
images = data["flair"].astype("float32")
tissue = data["label"].astype("int32")
lesion = (tissue == NUM_CLASSES - 1).any(axis=(1, 2)).astype("int32")
x_train, x_test = images[:NUM_TRAIN], images[NUM_TRAIN:]
seg_train, seg_test = tissue[:NUM_TRAIN], tissue[NUM_TRAIN:]
les_train, les_test = lesion[:NUM_TRAIN], lesion[NUM_TRAIN:]
print(f"train {x_train.shape}, lesion-positive fraction {les_train.mean():.2f}")

fig, axes = plt.subplots(2, 4, figsize=(10, 5))
for j in range(4):
    axes[0, j].imshow(x_train[j, ..., 0], cmap="gray")
    axes[0, j].set_title("lesion" if les_train[j] else "no lesion")
    axes[1, j].imshow(seg_train[j], cmap="tab10", vmin=0, vmax=9)
    for ax in axes[:, j]:
        ax.axis("off")
tut.save_figure(fig, "data.png")


# %% [markdown]
# ## One encoder, two heads
# A small encoder-decoder computes full-resolution features; a 1x1 convolution turns them into the
# segmentation (softmax per pixel) and a global max-pooling classifier into lesion yes/no. Both
# heads share every other weight, so each task's gradient shapes the features the other uses.

# %%
def build(heads=("segmentation", "lesion")):
    keras.utils.set_random_seed(tut.seed)
    inp = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1))
    e1 = layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
    e2 = layers.Conv2D(32, 3, padding="same", activation="relu")(layers.MaxPooling2D()(e1))
    d = layers.Concatenate()([layers.UpSampling2D()(e2), e1])
    d = layers.Conv2D(16, 3, padding="same", activation="relu")(d)
    outputs = {}
    if "segmentation" in heads:
        outputs["segmentation"] = layers.Conv2D(NUM_CLASSES, 1, activation="softmax", dtype="float32")(d)
    if "lesion" in heads:
        # The classifier reads the decoder's full-resolution features: a lesion is a few pixels.
        outputs["lesion"] = layers.Dense(2, activation="softmax", dtype="float32")(layers.GlobalMaxPooling2D()(d))
    return keras.Model(inp, outputs)


TASK_LOSSES = {"segmentation": losses.dice_ce_loss, "lesion": losses.cross_entropy}


def dataset(heads):
    targets = {"segmentation": seg_train, "lesion": les_train}
    return tf.data.Dataset.from_tensor_slices(
        {"image": x_train, **{h: targets[h] for h in heads}}).shuffle(1024, seed=tut.seed).batch(BATCH)


def evaluate(model):
    out = model.predict(x_test, verbose=0, batch_size=64)
    scores = {}
    if "segmentation" in out:
        pred = out["segmentation"].argmax(-1)
        # The kit's Dice over the whole test set, one tissue at a time (the background, 0, is left out).
        dice = [dice_score(pred == k, seg_test == k) for k in range(1, NUM_CLASSES)]
        scores["mean_dice"] = float(np.mean(dice))
    if "lesion" in out:
        scores["lesion_accuracy"] = float(np.mean(out["lesion"].argmax(-1) == les_test))
    return scores


def train(heads, weighting="fixed"):
    model = build(heads)
    weights = None if weighting == "uncertainty" else {h: FIXED_WEIGHTS[h] for h in heads}
    trainer = MultiTaskTrainer(model, {h: TASK_LOSSES[h] for h in heads}, loss_weights=weights, weighting=weighting)
    trainer.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE))
    history = trainer.fit(dataset(heads), epochs=EPOCHS, verbose=0,
                          callbacks=[tut.progress(f"{' + '.join(heads)} ({weighting} weights)")])
    return model, history.history


# %% [markdown]
# ## Single-task models, then the two multi-task weightings

# %%
results = {}
seg_only, _ = train(("segmentation",))
results["segmentation only"] = evaluate(seg_only)
les_only, _ = train(("lesion",))
results["lesion only"] = evaluate(les_only)
fixed, fixed_history = train(("segmentation", "lesion"), "fixed")
results["multi-task, fixed weights"] = evaluate(fixed)
learned, learned_history = train(("segmentation", "lesion"), "uncertainty")
results["multi-task, learned weights"] = evaluate(learned)
for name, scores in results.items():
    print(f"{name:>30s}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
# Transfer: the best multi-task score minus the single-task one (negative = sharing hurt that task).
shared = [results["multi-task, fixed weights"], results["multi-task, learned weights"]]
dice_transfer = max(r["mean_dice"] for r in shared) - results["segmentation only"]["mean_dice"]
lesion_transfer = max(r["lesion_accuracy"] for r in shared) - results["lesion only"]["lesion_accuracy"]
for task, gain in (("segmentation (mean Dice)", dice_transfer), ("lesion detection (accuracy)", lesion_transfer)):
    print(f"{task}: best multi-task minus single-task {gain:+.3f}: "
          + ("negative transfer, sharing hurt" if gain < -0.01 else "sharing helped" if gain > 0.01 else "no clear difference"))

# %% [markdown]
# ## What the learned weights did
# With ``loss = 0.5 exp(-s_i) L_i + 0.5 s_i`` the best ``exp(-s_i)`` is ``1 / L_i``: a task whose loss
# stays high (noisy, hard) gets a small weight, an easy one a large weight. Plot the weights against
# the epochs next to the task losses.

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 3.5))
for task in ("segmentation", "lesion"):
    axes[0].plot(fixed_history[f"{task}_loss"], label=f"{task} (fixed)")
    axes[0].plot(learned_history[f"{task}_loss"], "--", label=f"{task} (learned)")
    axes[1].plot(learned_history[f"{task}_weight"], label=task)
axes[0].set_yscale("log"), axes[0].set_title("task losses"), axes[0].legend(fontsize=8), axes[0].set_xlabel("epoch")
axes[1].set_title("learned weight exp(-s)"), axes[1].legend(), axes[1].set_xlabel("epoch")
names = list(results)
axes[2].bar(range(4), [results[n].get("mean_dice", np.nan) for n in names], width=0.4, label="mean Dice")
axes[2].bar(np.arange(4) + 0.4, [results[n].get("lesion_accuracy", np.nan) for n in names], width=0.4,
            label="lesion accuracy")
axes[2].set_xticks(np.arange(4) + 0.2, ["seg\nonly", "lesion\nonly", "MTL\nfixed", "MTL\nlearned"])
axes[2].set_ylim(0, 1), axes[2].legend(fontsize=8), axes[2].set_title("test scores")
tut.save_figure(fig, "multitask_results.png")

# %% [markdown]
# ## What we learned
# - One shared encoder can serve two tasks at almost the cost of one.
# - The loss weights are hyperparameters with a large effect; learning them from the homoscedastic
#   uncertainty removes a search and adapts during training.
# - Sharing is not free. The transfer printed above (best multi-task score minus single-task score,
#   per task) is negative when the tasks pull the small shared network in different directions:
#   negative transfer. Always train the single-task baselines; the exercises look for the settings
#   where sharing pays.
#
# Try next:
# 1. Set ``FIXED_WEIGHTS = {"segmentation": 1.0, "lesion": 20.0}`` (and the reverse). Which task suffers?
# 2. Run without ``--quick`` (more images and epochs), then with a wider network (double every
#    filter count). Does the gap to the single-task models close?
# 3. Train with fewer images (``NUM_TRAIN = 50``): does sharing help more when data is scarce?
# 4. Use ``training.multitask.TaskConditionedTrainer`` to make one network segment either the lesion or
#    the CSF, chosen by a one-hot task input.

# %%
mtl = results["multi-task, learned weights"]
tut.finish(
    {"mtl_mean_dice": mtl["mean_dice"], "mtl_lesion_accuracy": mtl["lesion_accuracy"],
     "seg_only_mean_dice": results["segmentation only"]["mean_dice"],
     "lesion_only_accuracy": results["lesion only"]["lesion_accuracy"],
     "fixed_mean_dice": results["multi-task, fixed weights"]["mean_dice"],
     "dice_transfer": dice_transfer, "lesion_transfer": lesion_transfer},
    # Measured --quick, seeds 0-2 x TF_ENABLE_ONEDNN_OPTS 1/0 (AMD EPYC AVX-512): single-task Dice
    # 0.42-0.47, lesion accuracy 0.93-0.97; multi-task Dice 0.25-0.36.
    expect={"seg_only_mean_dice": (">=", 0.35), "lesion_only_accuracy": (">=", 0.8), "mtl_mean_dice": (">=", 0.15)},
)
