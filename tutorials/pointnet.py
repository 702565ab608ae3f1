# %% [markdown]
# # PointNet: learning from organ-surface point clouds, whatever order the points come in.
#
# **Lecture topic:** point clouds and PointNet (permutation-invariant networks).
#
# **What you will learn:**
# - why a network for point sets must give the same answer for every ordering of the points, and how
#   "the same MLP on every point, then a max over points" achieves it (and a plain MLP does not);
# - how to train the zoo's ``pointnet`` to classify organ surfaces (kidney, bladder, vessel bifurcation,
#   ventricle) seen in random orientations;
# - what the T-Net does (a learned alignment matrix) and why its orthogonality penalty
#   ``||I - A A^T||^2`` keeps it close to a rotation;
# - "critical points": the few points that decide the max-pooled global feature, and that the whole
#   network's output depends on them alone.
#
# **Data:** synthetic organ-surface point clouds (``data_utils.synthetic.make_pointcloud_dataset``).
#
# **Run it:**  ``python tutorials/pointnet.py [--quick]``  (about 2 minutes on a laptop CPU; ``--quick`` ~20 s).
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
tut = common.start("pointnet", "PointNet: permutation invariance, T-Net, critical points", quick=QUICK)

import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

import models  # noqa: E402
from data_utils.synthetic import make_pointcloud_dataset  # noqa: E402
from models.pointnet import OrthogonalRegularizer  # noqa: E402

NUM_POINTS = tut.pick(512, 256)  # points sampled on each organ surface
NUM_TRAIN = tut.pick(800, 320)
NUM_TEST = tut.pick(400, 200)
SCALE = tut.pick(0.25, 0.125)  # PointNet widths x SCALE (1.0 is the paper's 3.5M-parameter model)
EPOCHS = tut.pick(15, 6)
BATCH_SIZE = 32
LEARNING_RATE = 3e-3
BN_MOMENTUM = 0.8  # batch norm's running statistics keep up in a short run (Keras default 0.99)

# %% [markdown]
# ## The data: organ surfaces as point sets
# A surface mesh from a segmentation can be turned into a set of points on the surface. A set has no
# order: the same kidney can be listed point by point in any of ``N!`` orders. Each cloud is also
# randomly rotated, since patients and scanners do not agree on a pose.

# %%
# With real data instead of the phantom: any (N, P, 3) float array of surface points (for example
# sampled from the boundary voxels of segmentation masks, in mm) and an (N,) integer label array,
# e.g. from `np.load("clouds.npz")`, take the place of `points` and `labels` below.
points, labels, _ = make_pointcloud_dataset(NUM_TRAIN + NUM_TEST, num_points=NUM_POINTS, seed=tut.seed)
class_names = ("kidney", "bladder", "vessel bifurcation", "ventricle")
x_train, y_train = points[:NUM_TRAIN], labels[:NUM_TRAIN]
x_test, y_test = points[NUM_TRAIN:], labels[NUM_TRAIN:]

fig = plt.figure(figsize=(12, 3.2))
for c in range(4):
    ax = fig.add_subplot(1, 4, c + 1, projection="3d")
    p = x_train[np.flatnonzero(y_train == c)[0]]
    ax.scatter(p[:, 0], p[:, 1], p[:, 2], s=2, c=p[:, 2], cmap="viridis")
    ax.set_title(class_names[c], fontsize=9)
    ax.set_axis_off()
tut.save_figure(fig, "organ_point_clouds.png")

# %% [markdown]
# ## Permutation invariance
# A function ``f`` of a set must satisfy ``f(shuffled points) = f(points)``. PointNet gets this by
# construction: ``f(x_1, ..., x_N) = g(max_i h(x_i))``, where ``h`` is a small MLP applied to every
# point with the *same* weights (a ``1x1`` convolution) and the max is taken over points per feature.
# Max, like sum or mean, does not care about order.
#
# Compare with the obvious alternative: flatten the ``N x 3`` coordinates into one vector and feed it to
# an MLP. Each input neuron is then tied to "point number 17", so shuffling changes the answer. We
# check both, untrained, on the same shuffled clouds.

# %%
keras.utils.set_random_seed(tut.seed)
pointnet = models.get("pointnet", num_points=None, num_classes=4, scale=SCALE)
flat_mlp = keras.Sequential([keras.Input((NUM_POINTS, 3)), layers.Flatten(), layers.Dense(64, activation="relu"),
                             layers.Dense(4, activation="softmax")], name="flattened_mlp")

rng = np.random.default_rng(tut.seed)
clouds = x_test[:16]
shuffled = np.stack([c[rng.permutation(NUM_POINTS)] for c in clouds])
invariance = {}
for net in (pointnet, flat_mlp):
    original, permuted = net.predict(clouds, verbose=0), net.predict(shuffled, verbose=0)
    invariance[net.name] = float(np.max(np.abs(original - permuted)))
    print(f"{net.name:>14s}: max |f(points) - f(shuffled points)| = {invariance[net.name]:.2e}")

fig, ax = plt.subplots(figsize=(5, 3))
ax.bar(list(invariance), [max(v, 1e-9) for v in invariance.values()], color=["C0", "C3"])
ax.set(yscale="log", ylabel="max change in class probabilities", title="Shuffle the points: who notices?")
tut.save_figure(fig, "permutation_invariance.png")

# %% [markdown]
# ## Train PointNet to classify organs
# The zoo's ``pointnet`` with every width scaled by ``SCALE``: input T-Net, shared MLP (64, 64),
# feature T-Net, shared MLP (64, 128, 1024), max pool, classifier. ``fit`` adds the feature T-Net's
# orthogonality penalty to the loss automatically (it is an activity regulariser, so it is in
# ``model.losses``).

# %%
for layer in pointnet.layers:
    if isinstance(layer, layers.BatchNormalization):
        layer.momentum = BN_MOMENTUM
# The learning rate decays to zero over the run (cosine): the last epochs take small steps, so the
# final weights, and batch norm's running statistics with them, settle instead of jumping between
# epochs (with a constant rate the test accuracy of single epochs swings between 0.55 and 0.85).
schedule = keras.optimizers.schedules.CosineDecay(LEARNING_RATE, decay_steps=EPOCHS * -(-NUM_TRAIN // BATCH_SIZE))
pointnet.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy",
                 metrics=["accuracy"])
history = pointnet.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=EPOCHS, verbose=2,
                       callbacks=[tut.tensorboard("pointnet")]).history
# The test clouds are used once, after training (nothing was chosen by looking at them).
test_accuracy = float(pointnet.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"])
print(f"test accuracy {test_accuracy:.3f} (chance 0.25), {pointnet.count_params():,} parameters")

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(history["accuracy"], label="train")
ax.plot(EPOCHS - 1, test_accuracy, "s", color="C1", label="test, after training")
ax.axhline(0.25, color="k", ls=":", label="chance")
ax.set(xlabel="epoch", ylabel="accuracy", title="PointNet on rotated organ surfaces")
ax.legend()
tut.save_figure(fig, "training_curves.png")

# %% [markdown]
# ## The T-Nets and the orthogonality penalty
# A T-Net is a mini-PointNet that looks at the whole cloud and outputs a matrix ``A``; the points (or
# per-point features) are multiplied by it, to bring every cloud to a canonical pose before the main
# network reads it. A rotation is orthogonal (``A A^T = I``): it moves points without squashing or
# stretching. For the 64 x 64 feature transform, PointNet adds the penalty
# ``0.001 * ||I - A A^T||_F^2`` to keep ``A`` close to orthogonal, which makes training more stable.
# Below we compute the penalty by hand on the trained network's matrices and check it against the
# library's ``OrthogonalRegularizer``. Look at the numbers: with the paper's small weight the penalty
# is a gentle pull, not a constraint, and ``A A^T`` is visibly not the identity after a short training
# (exercise 3 asks how far it drifts without the penalty).

# %%
matrices = keras.Model(pointnet.input, [pointnet.get_layer("input_tnet_matrix").output,
                                        pointnet.get_layer("feature_tnet_matrix").output])
input_A, feature_A = matrices.predict(x_test[:32], verbose=0)
k = feature_A.shape[-1]
deviation_by_hand = np.mean(np.sum((np.eye(k) - feature_A @ feature_A.transpose(0, 2, 1)) ** 2, axis=(1, 2)))
deviation_library = float(OrthogonalRegularizer(k, weight=1.0)(feature_A))
input_deviation = np.mean(np.sum((np.eye(3) - input_A @ input_A.transpose(0, 2, 1)) ** 2, axis=(1, 2)))
print(f"feature T-Net ({k}x{k}): mean ||I - A A^T||^2 = {deviation_by_hand:.4f} "
      f"(library: {deviation_library:.4f}); input T-Net (3x3, not penalised): {input_deviation:.4f}")

fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
axes[0].imshow(input_A[0], cmap="coolwarm", vmin=-1.5, vmax=1.5)
axes[0].set_title("input T-Net A (3x3)", fontsize=9)
im = axes[1].imshow(feature_A[0], cmap="coolwarm", vmin=-1, vmax=1)
axes[1].set_title(f"feature T-Net A ({k}x{k})", fontsize=9)
axes[2].imshow(feature_A[0] @ feature_A[0].T, cmap="coolwarm", vmin=-1, vmax=1)
axes[2].set_title("A A$^T$ (the identity if A were orthogonal)", fontsize=9)
fig.colorbar(im, ax=axes, shrink=0.8)
tut.save_figure(fig, "tnet_matrices.png")

# %% [markdown]
# ## Critical points
# Max pooling keeps, for each feature channel, the value of a single point: the one with the largest
# response. The set of those winners over all channels (and over the T-Nets' own max pools) is the
# cloud's **critical point set**. Every other point could be deleted, or moved anywhere its features stay
# below the maxima, without changing the output. That is why PointNet is robust to missing points and
# outliers, and it shows what shape the network "looks at". We find the critical points, delete all the
# others, and check that the prediction does not change.

# %%
pool_inputs = ["input_tnet_mlp_3_act", "feature_tnet_mlp_3_act", "mlp2_3_act"]
per_point = keras.Model(pointnet.input, [pointnet.get_layer(n).output for n in pool_inputs])
critical_fraction, critical_change = [], []
fig = plt.figure(figsize=(12, 3.4))
for c in range(4):
    i = int(np.flatnonzero(y_test == c)[0])
    cloud = x_test[i:i + 1]
    # Direct calls (inference mode) rather than predict(): every cloud here has a different size.
    features = [keras.ops.convert_to_numpy(f) for f in per_point(cloud, training=False)]
    critical = np.unique(np.concatenate([f[0].argmax(axis=0) for f in features]))
    full = keras.ops.convert_to_numpy(pointnet(cloud, training=False))
    only_critical = keras.ops.convert_to_numpy(pointnet(cloud[:, critical], training=False))
    critical_fraction.append(len(critical) / NUM_POINTS)
    critical_change.append(float(np.max(np.abs(full - only_critical))))
    ax = fig.add_subplot(1, 4, c + 1, projection="3d")
    ax.scatter(*cloud[0].T, s=1, c="lightgray")
    ax.scatter(*cloud[0, critical].T, s=6, c="C3")
    ax.set_title(f"{class_names[c]}: {len(critical)} of {NUM_POINTS} critical", fontsize=8)
    ax.set_axis_off()
tut.save_figure(fig, "critical_points.png")
print(f"critical points: {np.mean(critical_fraction):.0%} of the cloud on average; "
      f"largest change in output when keeping only them: {max(critical_change):.2e}")

# %% [markdown]
# ## What we learned
# - A shared per-point MLP followed by a symmetric pooling (max) is invariant to the order of the
#   points, by construction; a flattening MLP is not.
# - PointNet learns to classify organ shapes in arbitrary orientations from a few hundred examples.
# - A T-Net predicts an alignment matrix; penalising ``||I - A A^T||^2`` pulls the feature transform
#   towards an orthogonal one (rotate features, do not collapse them); at weight 0.001 the pull is gentle.
# - The output depends only on the critical points, the winners of the max pools; the rest of the
#   cloud can go.
#
# ## Try next
# 1. Retrain with ``input_transform=False, feature_transform=False`` in ``models.get``. How much do the
#    T-Nets help on rotated clouds? And with ``make_pointcloud_dataset(..., rotate=False)``?
# 2. Replace max pooling by average pooling (copy ``models/pointnet.py``'s backbone). Are there still
#    critical points? Is the network still permutation invariant?
# 3. Train with ``reg_weight=0`` and compare ``||I - A A^T||^2`` of the feature T-Net.
# 4. Delete a random half of each test cloud and measure the accuracy. Then delete half of the
#    critical points instead.
# 5. Segment the organ parts with ``models.get("pointnet_seg", ...)`` and the per-point labels that
#    ``make_pointcloud_dataset`` returns as its third output.

# %%
tut.finish(
    {
        "pointnet_shuffle_change": invariance["pointnet"],
        "flat_mlp_shuffle_change": invariance["flattened_mlp"],
        "test_accuracy": test_accuracy,
        "feature_tnet_orthogonality_error": deviation_by_hand,
        "orthogonality_library_mismatch": abs(deviation_by_hand - deviation_library),
        "critical_point_fraction": float(np.mean(critical_fraction)),
        "critical_only_output_change": max(critical_change),
    },
    expect={
        # Quick runs, seeds 0-2, oneDNN on and off (AMD EPYC, AVX-512): shuffle and critical-point
        # changes exactly 0 (the bars leave room for float32 round-off in other CPUs' kernels), flat
        # MLP shuffle change 0.28-0.35, test accuracy 0.825-0.895 (chance 0.25).
        "pointnet_shuffle_change": ("<=", 1e-4),
        "flat_mlp_shuffle_change": (">=", 1e-2),
        "test_accuracy": (">=", 0.6),
        "orthogonality_library_mismatch": ("<=", 1e-3),
        "critical_only_output_change": ("<=", 1e-3),
    },
)
