# %% [markdown]
# # Research topics in one sitting: multiple-instance learning, adversarial examples, domain adaptation, meta-learning.
#
# **Lecture topic:** research topics (MIL, adversarial learning, domain adaptation, meta-learning).
#
# **What you will learn:**
# - multiple-instance learning with attention pooling: learn from bag labels, find the instances;
# - adversarial examples (FGSM): a change too small to see flips a classifier, and adversarial
#   training makes it more robust;
# - domain adaptation with gradient reversal (DANN): the same anatomy from another probe;
# - a first look at meta-learning (Reptile): learn an initialisation that adapts in a few steps.
#
# **Data:** synthetic bags of tissue patches (``make_mil_dataset``) and B-mode ultrasound images from two
# probes (``make_ultrasound_dataset`` with ``sector=True``/``False``); sine curves for meta-learning.
#
# **Run it:**  ``python tutorials/research_topics.py [--quick]``  (about 3 min on a laptop CPU;
# ``--quick`` ~30 s).
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
tut = common.start("research_topics", "Research topics: MIL, adversarial examples, DANN, meta-learning", quick=QUICK)

import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

from data_utils.synthetic import make_ultrasound_dataset  # noqa: E402
from data_utils.synthetic.mil import make_mil_dataset  # noqa: E402
from training import metrics  # noqa: E402
from training.domain_adaptation import DANNTrainer  # noqa: E402
from training.mil import MILTrainer, attention_mil_model  # noqa: E402

NUM_BAGS = tut.pick(400, 160)
BAG_SIZE = 8
PATCH = 16
MIL_EPOCHS = tut.pick(20, 8)
IMAGE_SIZE = 32
NUM_IMAGES = tut.pick(800, 240)  # per probe
CLS_EPOCHS = tut.pick(15, 10)
CLS_BATCH = 16
FGSM_EPSILON = 0.03  # image intensities are in [0, 1]
META_ITERATIONS = tut.pick(2000, 500)
results = {}

# %% [markdown]
# ## 1. Multiple-instance learning
# A bag of patches is positive if any patch shows a lesion; only bags are labelled. Attention
# pooling (Ilse et al. 2018) weighs the patches; after training, the weights point at the lesions.

# %%
mil = make_mil_dataset(NUM_BAGS, bag_size=BAG_SIZE, patch_size=PATCH, seed=tut.seed, lesion_contrast=(1.5, 2.5))
split = int(0.75 * NUM_BAGS)
encoder = keras.Sequential([
    keras.Input((PATCH, PATCH, 1)), layers.Conv2D(16, 3, activation="relu"), layers.MaxPooling2D(),
    layers.Conv2D(32, 3, activation="relu"), layers.GlobalMaxPooling2D(),
], name="patch_encoder")
mil_trainer = MILTrainer(attention_mil_model((PATCH, PATCH, 1), encoder=encoder, attention_dim=16, max_instances=BAG_SIZE))
mil_trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
bags = tf.data.Dataset.from_tensor_slices({"bag": mil["bags"][:split], "label": mil["bag_labels"][:split]})
mil_trainer.fit(bags.shuffle(512, seed=tut.seed).batch(16), epochs=MIL_EPOCHS, verbose=0,
                callbacks=[tut.progress("attention MIL")])
test_bags = {"bag": mil["bags"][split:]}
probability = np.asarray(mil_trainer(test_bags))[:, 0]
results["mil_bag_accuracy"] = float(np.mean((probability > 0.5) == mil["bag_labels"][split:]))
attention = np.asarray(mil_trainer.attention(test_bags))
positive = mil["bag_labels"][split:] == 1
top = attention[positive].argmax(axis=1)
results["mil_attention_hits_lesion"] = float(np.mean(mil["instance_labels"][split:][positive][np.arange(len(top)), top]))
print(f"MIL: bag accuracy {results['mil_bag_accuracy']:.2f}; the most attended patch is a lesion in "
      f"{results['mil_attention_hits_lesion']:.0%} of positive bags (chance ~{mil['instance_labels'][positive.nonzero()[0] + split].mean():.0%})")

fig, axes = plt.subplots(2, BAG_SIZE, figsize=(12, 3.4))
for row, b in enumerate(np.flatnonzero(positive)[:2]):
    for k in range(BAG_SIZE):
        axes[row, k].imshow(mil["bags"][split + b, k, ..., 0], cmap="gray")
        lesion = "lesion " if mil["instance_labels"][split + b, k] else ""
        axes[row, k].set_title(f"{lesion}a={attention[b, k]:.2f}", fontsize=8, color="red" if lesion else "black")
        axes[row, k].axis("off")
tut.save_figure(fig, "mil_attention.png")

# %% [markdown]
# ## 2. Adversarial examples and adversarial training
# The fast gradient sign method (Goodfellow et al. 2015) moves every pixel by ``epsilon`` in the
# direction that increases the loss. Adversarial training adds such images to every batch.

# %%
# With real data instead of the phantom: a CSV of (image, label) rows loads as
#     cases, class_names = data_utils.layouts.csv_classification_cases("labels.csv")
#     images, labels = (data_utils.layouts.load_classification_cases(cases)[k] for k in ("image", "label"))
# (split by patient with `data_utils.datasets.split_cases`), or a MedMNIST-style .npz, already split:
# `data_utils.formats.load_npz("breastmnist.npz")["train"]["image"]`.
x_src, y_src, class_names = make_ultrasound_dataset(NUM_IMAGES, image_size=IMAGE_SIZE, num_classes=2, seed=tut.seed)
x_tgt, y_tgt, _ = make_ultrasound_dataset(NUM_IMAGES, image_size=IMAGE_SIZE, num_classes=2, seed=tut.seed + 1, sector=False)
half = NUM_IMAGES // 2


def classifier():
    keras.utils.set_random_seed(tut.seed)
    return keras.Sequential([
        keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1)), layers.Conv2D(16, 3, activation="relu"), layers.MaxPooling2D(),
        layers.Conv2D(32, 3, activation="relu"), layers.GlobalAveragePooling2D(), layers.Dense(2, activation="softmax"),
    ])


def fgsm(model, x, y, epsilon=FGSM_EPSILON):
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = keras.losses.sparse_categorical_crossentropy(y, model(x))
    return tf.clip_by_value(x + epsilon * tf.sign(tape.gradient(loss, x)), 0.0, 1.0).numpy()


def accuracy(model, x, y):
    """Fraction of images in ``x`` (N, H, W, 1) whose predicted class equals ``y`` (N,)."""
    return metrics.accuracy(model.predict(x, verbose=0).argmax(axis=1), y)


plain = classifier()
plain.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
plain.fit(x_src[:half], y_src[:half], epochs=CLS_EPOCHS, batch_size=CLS_BATCH, verbose=0,
          callbacks=[tut.progress("plain classifier")])
x_adv = fgsm(plain, x_src[half:], y_src[half:])
results["clean_accuracy"] = accuracy(plain, x_src[half:], y_src[half:])
results["fgsm_accuracy"] = accuracy(plain, x_adv, y_src[half:])

robust = classifier()
robust.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
for _ in range(CLS_EPOCHS):  # each epoch: attack the current model, train on clean + adversarial
    x_train_adv = fgsm(robust, x_src[:half], y_src[:half])
    robust.fit(np.concatenate([x_src[:half], x_train_adv]), np.concatenate([y_src[:half], y_src[:half]]),
               epochs=1, batch_size=CLS_BATCH, verbose=0)
results["robust_clean_accuracy"] = accuracy(robust, x_src[half:], y_src[half:])
results["robust_fgsm_accuracy"] = accuracy(robust, fgsm(robust, x_src[half:], y_src[half:]), y_src[half:])
print(f"FGSM eps={FGSM_EPSILON}: plain model {results['clean_accuracy']:.2f} -> {results['fgsm_accuracy']:.2f}; "
      f"adversarially trained {results['robust_clean_accuracy']:.2f} -> {results['robust_fgsm_accuracy']:.2f}")
robust_gain = results["robust_fgsm_accuracy"] - results["fgsm_accuracy"]
print(f"under attack, adversarial training changed the accuracy by {robust_gain:+.2f} "
      f"({'it helped' if robust_gain > 0.02 else 'no gain in this run'}; each model is attacked through its own gradient)")

fig, axes = plt.subplots(1, 3, figsize=(8, 2.8))
for ax, img, title in zip(axes, [x_src[half], x_adv[0], x_adv[0] - x_src[half]],
                          ["original", f"FGSM, eps={FGSM_EPSILON}", "difference (x10)"]):
    if "difference" in title:  # scaled by 10 with fixed limits: +-eps becomes +-10 eps on a fixed grey scale
        shown = ax.imshow(10 * img[..., 0], cmap="gray", vmin=-1, vmax=1)
        fig.colorbar(shown, ax=ax, shrink=0.8, label="10 x (adversarial - original)")
    else:
        ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=1)
    ax.set_title(title), ax.axis("off")
tut.save_figure(fig, "fgsm_example.png")

# %% [markdown]
# ## 3. Domain adaptation: from a curvilinear to a linear probe
# The source images are fan-shaped (curvilinear probe), the target images rectangular (linear
# probe), and the target has no labels. DANN adds a domain classifier behind a gradient-reversal
# layer so the features stop telling the probes apart.

# %%
results["source_only_target_accuracy"] = accuracy(plain, x_tgt[half:], y_tgt[half:])
keras.utils.set_random_seed(tut.seed)
features = keras.Sequential([
    keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1)), layers.Conv2D(16, 3, activation="relu"), layers.MaxPooling2D(),
    layers.Conv2D(32, 3, activation="relu"), layers.GlobalAveragePooling2D(),
])
label_head = keras.Sequential([keras.Input((32,)), layers.Dense(2, activation="softmax")])
domain_head = keras.Sequential([keras.Input((32,)), layers.Dense(32, activation="relu"), layers.Dense(1)])
steps = CLS_EPOCHS * (half // CLS_BATCH)
dann = DANNTrainer(features, label_head, domain_head, total_steps=steps, domain_weight=0.5)
dann.compile(optimizer=keras.optimizers.Adam(3e-3))
pairs = tf.data.Dataset.zip((
    tf.data.Dataset.from_tensor_slices({"image": x_src[:half], "label": y_src[:half]}).shuffle(512, seed=tut.seed).batch(CLS_BATCH, drop_remainder=True),
    tf.data.Dataset.from_tensor_slices(x_tgt[:half]).shuffle(512, seed=tut.seed).batch(CLS_BATCH, drop_remainder=True),
))
dann_history = dann.fit(pairs, epochs=CLS_EPOCHS, verbose=0, callbacks=[tut.progress("DANN")]).history
results["dann_target_accuracy"] = dann.evaluate(
    {"image": x_tgt[half:], "label": y_tgt[half:]}, verbose=0, return_dict=True, batch_size=64)["accuracy"]
dann_gain = results["dann_target_accuracy"] - results["source_only_target_accuracy"]
print(f"target-probe accuracy: source only {results['source_only_target_accuracy']:.2f}, "
      f"DANN {results['dann_target_accuracy']:.2f} ({dann_gain:+.2f}: "
      f"{'adaptation helped' if dann_gain > 0.02 else 'adaptation did not help in this run'})")

# %% [markdown]
# ## 4. A first look at meta-learning: Reptile
# Each *task* is a sine curve with its own amplitude and phase, seen through 10 points. Reptile
# (Nichol et al. 2018) repeats: copy the weights, take a few SGD steps on one task, move the shared
# initialisation a little towards the adapted weights. The result is an initialisation from which
# a few steps fit a new curve, which a random or an averaged initialisation cannot do.

# %%
rng = np.random.default_rng(tut.seed)


def sine_task():
    amplitude, phase = rng.uniform(0.5, 3.0), rng.uniform(0, np.pi)
    return lambda x: amplitude * np.sin(x + phase)


def mlp():
    return keras.Sequential([keras.Input((1,)), layers.Dense(32, activation="tanh"),
                             layers.Dense(32, activation="tanh"), layers.Dense(1)])


@tf.function
def sgd_step(model, x, y, lr):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((model(x) - y) ** 2)
    for v, g in zip(model.trainable_variables, tape.gradient(loss, model.trainable_variables)):
        v.assign_sub(lr * g)


def adapt(model, weights, task, steps=5, lr=0.02):
    """Few SGD steps on 10 points of ``task`` starting from ``weights``; returns the adapted weights."""
    model.set_weights(weights)
    x = rng.uniform(-5, 5, (10, 1)).astype("float32")
    y = task(x).astype("float32")
    for _ in range(steps):
        sgd_step(model, tf.constant(x), tf.constant(y), tf.constant(lr))
    return model.get_weights()


def test_error(model, weights, num_tasks=20):
    grid = np.linspace(-5, 5, 50, dtype="float32")[:, None]
    errors = []
    for _ in range(num_tasks):
        task = sine_task()
        model.set_weights(adapt(model, weights, task))
        errors.append(float(np.mean((model.predict(grid, verbose=0) - task(grid)) ** 2)))
    return float(np.mean(errors))


keras.utils.set_random_seed(tut.seed)
net = mlp()
random_init = net.get_weights()
meta = [w.copy() for w in random_init]
for iteration in range(META_ITERATIONS):
    adapted = adapt(net, meta, sine_task(), steps=5)
    step = 0.1 * (1 - iteration / META_ITERATIONS)  # outer step size, annealed
    meta = [m + step * (a - m) for m, a in zip(meta, adapted)]
results["random_init_error"] = test_error(net, random_init)
results["reptile_error"] = test_error(net, meta)
print(f"sine MSE after 5 steps on 10 points: random init {results['random_init_error']:.2f}, "
      f"Reptile init {results['reptile_error']:.2f}")

grid = np.linspace(-5, 5, 100, dtype="float32")[:, None]
task = sine_task()
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(grid, task(grid), "k", label="true curve")
for weights, name in ((random_init, "random init"), (meta, "Reptile init")):
    net.set_weights(adapt(net, weights, task))
    ax.plot(grid, net.predict(grid, verbose=0), label=f"{name}, 5 steps")
ax.legend(fontsize=8), ax.set_title("adapting to a new sine curve from 10 points")
tut.save_figure(fig, "reptile_sine.png")

# %% [markdown]
# ## What we learned
# - MIL learns from bag labels alone, and attention says where to look.
# - A perturbation of a few grey levels can fool a network (the drop is printed and checked);
#   whether training on such perturbations makes it more robust is printed too: measure it.
# - Unlabelled images from a new scanner or probe can be used to make features domain-invariant;
#   whether that beats the source-only model must be measured on labelled target data, as above.
#   The adversarial game needs more steps than the classifier alone, and a domain gap this large
#   (fan versus rectangle) is hard to bridge with a few hundred unlabelled images, so a short run
#   may show no gain. Exercise 3 explores it.
# - Meta-learning learns *how to start*: Reptile's initialisation adapts in a few steps.
#
# Try next:
# 1. MIL: lower ``lesion_contrast`` to ``(0.5, 1.0)`` (the look-alike vessels become a real
#    problem); compare attention pooling with mean and max pooling.
# 2. Plot test accuracy against ``FGSM_EPSILON`` for the plain and the robust classifier.
# 3. DANN: run without ``--quick``; set ``domain_weight=0`` and compare; plot ``dann_history["domain_accuracy"]``
#    (near 0.5 means the features no longer reveal the probe).
# 4. Reptile: use 1 inner step instead of 5. What changes, and why (see Nichol et al., section 5)?

# %%
results["fgsm_drop"] = results["clean_accuracy"] - results["fgsm_accuracy"]
results["reptile_error_ratio"] = results["reptile_error"] / results["random_init_error"]
results["adversarial_training_gain"] = robust_gain
results["dann_gain"] = dann_gain
# Measured --quick, seeds 0-2 x TF_ENABLE_ONEDNN_OPTS 1/0 (AMD EPYC AVX-512), beside each bar.
tut.finish(results, expect={
    "mil_bag_accuracy": (">=", 0.6),  # 0.725-0.75
    "mil_attention_hits_lesion": (">=", 0.5),  # 0.76-0.91
    "clean_accuracy": (">=", 0.65),  # 0.73-0.775
    "fgsm_drop": (">=", 0.1),  # 0.28-0.36
    "reptile_error_ratio": ("<=", 0.92),  # 0.57-0.84 (below 1: the Reptile start adapts better than a random one)
})
