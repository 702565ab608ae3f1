# %% [markdown]
# # Capacity and constraints: under- and overfitting, L1 against L2, hard and soft parameter sharing
#
# **Lecture topic:** model capacity and generalisation; constraining parameters (norm penalties and
# parameter sharing).
#
# **What you will learn**
# - how training and test error move as capacity grows: underfitting on the left, overfitting on the
#   right, the U-shaped test curve in between;
# - why an L1 penalty sets many weights exactly (or nearly) to zero while L2 only shrinks them, shown
#   with weight histograms (`training.regularization.add_weight_penalty` for a Keras network);
# - hard parameter sharing (one network for two related tasks or sites) against soft sharing (two
#   networks tied by a penalty on their difference, `training.regularization.SoftParameterSharing`),
#   and how the tie lets a site with few patients borrow from a site with many.
#
# **Data:** a smooth measurement-against-age curve with noise (capacity), scikit-learn's breast-cancer
# table (569 patients, 30 measurements of cell nuclei; L1/L2), and two simulated hospitals whose
# outcome depends on the same 20 measurements in slightly different ways (parameter sharing). Nothing
# is downloaded.
#
# **Run it:**  `python tutorials/capacity_and_constraints.py [--quick]`  (about a minute on a laptop CPU;
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
tut = common.start("capacity_and_constraints", "Capacity (U-shaped test error), L1 vs L2 sparsity, hard and soft parameter sharing", quick=QUICK)

import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import sklearn  # noqa: E402
from numpy.polynomial import Legendre  # noqa: E402
from sklearn.datasets import load_breast_cancer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import mean_squared_error  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from training import metrics, regularization  # noqa: E402

# Capacity
NUM_POINTS = 20  # training patients per draw
NOISE = 0.25  # measurement noise (standard deviation)
DEGREES = list(range(0, 15))  # polynomial degree = capacity
NUM_DRAWS = tut.pick(200, 50)  # training sets drawn, to average out the luck of one draw
# L1 / L2
PENALTY = 1e-3  # the same weight for the L1 and the L2 penalty of the Keras network
C_LOGISTIC = 0.1  # inverse penalty strength of the logistic regressions
KERAS_EPOCHS = tut.pick(60, 30)
# Parameter sharing
NUM_FEATURES = 20
SITE_A, SITE_B = 30, 300  # patients at the small and the large hospital
SITE_A_VAL, SITE_TEST = 100, 2000  # site-A validation (chooses the strength) and test patients
SITE_SHIFT = 0.5  # how different the two sites' relations are (relative size of the difference)
STRENGTHS = tut.pick([1e-3, 1e-2, 0.03, 0.1, 0.3, 1.0, 10.0], [0.03, 0.3, 3.0])  # tying strengths tried
SHARING_EPOCHS = tut.pick(12, 8)

# %% [markdown]
# ## Capacity: the U-shaped test error
# How does a measurement change with age? We fit polynomials of growing degree to 20 patients. The
# degree is the model's **capacity**: degree 0 is a constant, degree 14 can pass through almost every
# point. We draw many training sets of 20 patients, fit every degree to each, and average the training
# error and the error on 2000 new patients.

# %%
rng = np.random.default_rng(tut.seed)


def truth(x):
    """The true curve (unknown to the model): a smooth decline with a plateau; x is age scaled to [-1, 1]."""
    return 1.0 - 0.6 * x - 1.2 * x**2 + 0.5 * np.sin(4.0 * x)


x_new = rng.uniform(-1, 1, 2000)
y_new = truth(x_new) + NOISE * rng.normal(size=x_new.size)
train_error = np.zeros((NUM_DRAWS, len(DEGREES)))
test_error = np.zeros((NUM_DRAWS, len(DEGREES)))
for draw in range(NUM_DRAWS):
    x = rng.uniform(-1, 1, NUM_POINTS)
    y = truth(x) + NOISE * rng.normal(size=NUM_POINTS)
    for j, degree in enumerate(DEGREES):
        fit = Legendre.fit(x, y, degree)  # least squares in a well-conditioned polynomial basis
        train_error[draw, j] = mean_squared_error(y, fit(x))
        test_error[draw, j] = mean_squared_error(y_new, fit(x_new))
mean_train, median_test = train_error.mean(0), np.median(test_error, 0)  # median: a few wild fits at high degree
best = int(np.argmin(median_test))
print("degree:     " + " ".join(f"{d:6d}" for d in DEGREES))
print("train MSE:  " + " ".join(f"{e:6.3f}" for e in mean_train))
print("test MSE:   " + " ".join(f"{e:6.3f}" for e in median_test))
print(f"lowest test error at degree {DEGREES[best]} ({median_test[best]:.3f}; the noise alone gives {NOISE**2:.3f}); "
      f"degree 1 underfits ({median_test[1] / median_test[best]:.1f}x), degree {DEGREES[-1]} overfits "
      f"({median_test[-1] / median_test[best]:.1f}x) while its training error is the lowest ({mean_train[-1]:.3f})")

fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
axes[0].plot(DEGREES, mean_train, "o-", label="training error")
axes[0].plot(DEGREES, median_test, "s-", label="test error (new patients)")
axes[0].axhline(NOISE**2, color="grey", ls=":", label="noise level")
axes[0].axvline(DEGREES[best], color="k", lw=0.8)
far = next(j for j in range(best, len(DEGREES)) if median_test[j] > 5 * median_test[best])  # well into overfitting
axes[0].annotate("underfitting", (1, median_test[1]), xytext=(0.5, median_test[1] * 3), arrowprops={"arrowstyle": "->"})
axes[0].annotate("overfitting", (DEGREES[far], median_test[far]), xytext=(DEGREES[far] - 4, median_test[far] * 2),
                 arrowprops={"arrowstyle": "->"})
axes[0].set_ylim(NOISE**2 / 3, 40 * median_test[best])  # the highest degrees go off the top: far worse still
axes[0].set(yscale="log", xlabel="capacity (polynomial degree)", ylabel="mean squared error",
            title=f"Training and test error against capacity ({NUM_DRAWS} training sets of {NUM_POINTS})")
axes[0].legend()
x = rng.uniform(-1, 1, NUM_POINTS)
y = truth(x) + NOISE * rng.normal(size=NUM_POINTS)
grid = np.linspace(-1, 1, 300)
axes[1].plot(x, y, "ko", ms=4, label="one training set")
axes[1].plot(grid, truth(grid), "k--", lw=1, label="true curve")
for degree, what in ((1, "underfits"), (DEGREES[best], "about right"), (DEGREES[-1], "overfits")):
    axes[1].plot(grid, Legendre.fit(x, y, degree)(grid), label=f"degree {degree}: {what}")
axes[1].set(ylim=(y.min() - 1, y.max() + 1), xlabel="age (scaled to [-1, 1])", ylabel="measurement",
            title="Three capacities fitted to the same 20 patients")
axes[1].legend(fontsize=8)
tut.save_figure(fig, "capacity_u_curve.png")

# %% [markdown]
# ## Constraining parameters: L1 against L2
# A norm penalty adds ``lambda * sum|w|`` (L1) or ``lambda * sum w^2`` (L2) to the loss. The L2
# gradient ``2 lambda w`` shrinks a weight in proportion to its size, so it gets small but never
# zero. The L1 gradient ``lambda sign(w)`` pushes every weight towards zero with the same force,
# however small it already is: weights that do not earn their keep end up exactly at zero. L1 gives
# **sparse** models, which here means a diagnosis that uses only a few of the 30 measurements.
#
# First logistic regression (scikit-learn, which solves the L1 problem exactly), then a small Keras
# network with the kit's ``add_weight_penalty``. The breast-cancer table: 569 patients, 30
# measurements of cell nuclei in a fine-needle aspirate, benign or malignant. To use your own table,
# load it as an array ``(patients, measurements)`` with labels, e.g. ``numpy.loadtxt("my.csv", delimiter=",")``.

# %%
table = load_breast_cancer()
x_fit, x_hold, y_fit, y_hold = train_test_split(table.data, (table.target == 0).astype(int),  # 1 = malignant
                                                test_size=0.4, stratify=table.target, random_state=tut.seed)
scaler = StandardScaler().fit(x_fit)  # statistics of the training patients only
x_fit, x_hold = scaler.transform(x_fit).astype("float32"), scaler.transform(x_hold).astype("float32")
NEW_PENALTY_API = tuple(int(v) for v in sklearn.__version__.split(".")[:2]) >= (1, 8)  # l1_ratio replaced penalty=
logistic = {}
for penalty in ("l1", "l2"):
    choice = {"l1_ratio": float(penalty == "l1")} if NEW_PENALTY_API else {"penalty": penalty}
    model = LogisticRegression(C=C_LOGISTIC, solver="liblinear", **choice).fit(x_fit, y_fit)
    coefficients = model.coef_.ravel()
    logistic[penalty] = {"coef": coefficients, "zero": float(np.mean(coefficients == 0)),
                         "accuracy": metrics.accuracy(model.predict(x_hold), y_hold)}
    used = [table.feature_names[i] for i in np.flatnonzero(coefficients)]
    print(f"logistic regression, {penalty.upper()}: {len(used)} of 30 measurements used, "
          f"test accuracy {logistic[penalty]['accuracy']:.3f}" + (f"; it keeps: {', '.join(used)}" if penalty == "l1" else ""))


def keras_network(label, l1=0.0, l2=0.0):
    """A 30-32-1 network with a weight penalty on both kernels, trained on the breast-cancer table."""
    tut.reseed()
    inputs = keras.Input((x_fit.shape[1],))
    hidden = keras.layers.Dense(32, activation="relu", name="hidden")(inputs)
    network = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(hidden))
    regularization.add_weight_penalty(network, l1=l1, l2=l2)
    network.compile(keras.optimizers.Adam(3e-3), "binary_crossentropy", steps_per_execution=8)
    network.fit(x_fit, y_fit, epochs=KERAS_EPOCHS, batch_size=32, verbose=0, callbacks=[tut.progress(label)])
    return network


networks = {"L1": keras_network("L1 penalty", l1=PENALTY), "L2": keras_network("L2 penalty", l2=PENALTY)}
kernels = {name: keras.ops.convert_to_numpy(n.get_layer("hidden").kernel).ravel() for name, n in networks.items()}
SMALL = 0.01  # |w| below this is "switched off" (Adam leaves L1 weights jittering around zero, not at it)
small = {name: float(np.mean(np.abs(k) < SMALL)) for name, k in kernels.items()}
network_accuracy = {name: metrics.accuracy(n.predict(x_hold, verbose=0)[:, 0] > 0.5, y_hold) for name, n in networks.items()}
for name in networks:
    print(f"Keras network, {name} penalty {PENALTY}: {small[name]:.0%} of the {kernels[name].size} hidden-layer weights "
          f"have |w| < {SMALL}, test accuracy {network_accuracy[name]:.3f}")

fig, axes = plt.subplots(1, 2, figsize=(12, 4))
bins = np.linspace(-1.2, 1.2, 41)
for penalty, colour in (("l2", "tab:blue"), ("l1", "tab:orange")):
    axes[0].hist(logistic[penalty]["coef"], bins=bins, alpha=0.6, color=colour,
                 label=f"{penalty.upper()}: {logistic[penalty]['zero']:.0%} exactly zero")
axes[0].set(xlabel="coefficient", ylabel="measurements", title="Logistic regression: 30 coefficients")
log_bins = np.linspace(-5, 0.5, 45)
for name, colour in (("L2", "tab:blue"), ("L1", "tab:orange")):
    axes[1].hist(np.log10(np.abs(kernels[name]) + 1e-6), bins=log_bins, alpha=0.6, color=colour,
                 label=f"{name}: {small[name]:.0%} below {SMALL}")
axes[1].axvline(np.log10(SMALL), color="k", ls=":")
axes[1].set(xlabel="log10 |weight|", ylabel="weights", title="Keras network: hidden-layer weights (log scale)")
for ax in axes:
    ax.legend()
tut.save_figure(fig, "l1_vs_l2_weights.png")

# %% [markdown]
# ## Hard and soft parameter sharing
# Two hospitals predict the same outcome from the same 20 measurements. Their scanners and
# populations differ a little, so the true relation differs a little too. Hospital A has only 30
# patients, hospital B has 300. Three ways to train a network for hospital A:
# - **independent**: A's own network on A's 30 patients (20 inputs, 30 patients: it overfits);
# - **hard sharing**: one network for both hospitals, trained on all 330 patients (it cannot
#   represent the difference between them);
# - **soft sharing**: each hospital keeps its own network, and training adds
#   ``strength * ||theta_A - theta_B||^2`` (``SoftParameterSharing``): A's network may differ from
#   B's, but pays for every difference. ``strength = 0`` is "independent", a huge strength is "hard".
#
# The strength is chosen on 100 validation patients from hospital A, and the chosen network is
# scored on 2000 new test patients from hospital A.

# %%
w_a = rng.normal(size=(NUM_FEATURES, 1))
shift = rng.normal(size=(NUM_FEATURES, 1))
w_b = w_a + SITE_SHIFT * np.linalg.norm(w_a) / np.linalg.norm(shift) * shift


def patients(n, weights):
    """``n`` patients ``(n, 20)`` and their outcomes ``(n, 1)`` (a linear relation plus noise of variance 1)."""
    x = rng.normal(size=(n, NUM_FEATURES)).astype("float32")
    return x, (x @ weights + rng.normal(size=(n, 1))).astype("float32")


(xa, ya), (xb, yb) = patients(SITE_A, w_a), patients(SITE_B, w_b)
(xa_val, ya_val), (xa_test, ya_test) = patients(SITE_A_VAL, w_a), patients(SITE_TEST, w_a)
repeat = SITE_B // SITE_A  # the tied model takes one batch from each site: cycle A's patients to B's length
xa_cycled, ya_cycled = np.tile(xa, (repeat, 1)), np.tile(ya, (repeat, 1))


def network(name):
    tut.reseed()  # both hospitals' networks start from the same weights
    inputs = keras.Input((NUM_FEATURES,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(1)(hidden), name=name)


def mse(model, x, y):
    return mean_squared_error(y, keras.ops.convert_to_numpy(model(x)))


hard = network("shared")
hard.compile(keras.optimizers.Adam(1e-2), "mse", steps_per_execution=25)
hard.fit(np.concatenate([xa_cycled, xb] * 5), np.concatenate([ya_cycled, yb] * 5), epochs=SHARING_EPOCHS,
         batch_size=120, verbose=0, callbacks=[tut.progress("hard sharing: one network, both hospitals")])
sharing = {"hard": {"val": mse(hard, xa_val, ya_val), "test": mse(hard, xa_test, ya_test)}}
for strength in [0.0, *STRENGTHS]:
    tied = regularization.SoftParameterSharing(network("hospital_a"), network("hospital_b"), strength=strength)
    tied.compile(keras.optimizers.Adam(1e-2), loss=["mse", "mse"], steps_per_execution=25)
    tied.fit([np.tile(xa_cycled, (5, 1)), np.tile(xb, (5, 1))], [np.tile(ya_cycled, (5, 1)), np.tile(yb, (5, 1))],
             epochs=SHARING_EPOCHS, batch_size=60, verbose=0, callbacks=[tut.progress(f"soft sharing, strength {strength:g}")])
    sharing[strength] = {"val": mse(tied.network_a, xa_val, ya_val), "test": mse(tied.network_a, xa_test, ya_test),
                         "distance": float(regularization.tying_penalty(tied.network_a, tied.network_b))}
    print(f"strength {strength:6g}: hospital A validation MSE {sharing[strength]['val']:.2f}, "
          f"||theta_A - theta_B||^2 = {sharing[strength]['distance']:.3f}")
chosen = min(STRENGTHS, key=lambda s: sharing[s]["val"])  # on validation patients, never the test set
independent, soft, shared = sharing[0.0]["test"], sharing[chosen]["test"], sharing["hard"]["test"]
print(f"hospital A test MSE: independent {independent:.2f}, hard sharing {shared:.2f}, "
      f"soft sharing (strength {chosen:g}, chosen on validation) {soft:.2f} (noise alone: 1.00)")
best_other = "hard sharing" if shared < independent else "independent"
print(f"soft sharing is {min(independent, shared) / soft:.2f}x better than the better of the other two ({best_other})")

fig, ax = plt.subplots(figsize=(7, 4.2))
ax.plot(STRENGTHS, [sharing[s]["test"] for s in STRENGTHS], "o-", label="soft sharing (test)")
ax.plot(STRENGTHS, [sharing[s]["val"] for s in STRENGTHS], "x:", color="tab:blue", label="soft sharing (validation)")
ax.axhline(independent, color="tab:red", ls="--", label="independent, strength 0 (test)")
ax.axhline(shared, color="tab:green", ls="--", label="hard sharing, one network (test)")
ax.plot(chosen, soft, "k*", ms=12, label=f"chosen on validation: {chosen:g}")
ax.set(xscale="log", xlabel="tying strength", ylabel="hospital A mean squared error",
       title="Soft parameter sharing: between independent and one network")
ax.legend(fontsize=8)
tut.save_figure(fig, "parameter_sharing.png")

# %% [markdown]
# ## What we learned
# - Training error falls as capacity grows; test error falls (less underfitting), bottoms out, and
#   rises again (overfitting). Capacity is chosen where the test-like (validation) error is lowest.
# - L1 pushes weights to exactly zero (sparse, fewer measurements used); L2 shrinks all weights
#   smoothly. With a stochastic optimiser such as Adam, L1 weights hover *near* zero rather than at it.
# - Hard sharing is one network for related tasks; soft sharing keeps one network each and pays for
#   their difference. A small site borrows strength from a large one, without being forced to be identical.
#
# ## Try next
# 1. Give the capacity experiment 200 patients instead of 20. Where does the minimum move, and why?
# 2. Raise ``C_LOGISTIC`` (a weaker penalty): how many measurements does L1 keep? Plot the number
#    kept against ``C`` (the "regularisation path").
# 3. Set ``SITE_SHIFT = 0`` (identical hospitals) and ``SITE_SHIFT = 2``: which of hard and soft
#    sharing wins in each case?
# 4. Tie only the kernels (``SoftParameterSharing(..., which="kernels")``): does leaving the biases
#    free help when the hospitals differ by an offset?

# %%
results = {
    "best_degree": DEGREES[best],
    "underfit_over_best": median_test[1] / median_test[best],
    "overfit_over_best": median_test[-1] / median_test[best],
    "train_error_max_over_best": mean_train[-1] / mean_train[best],
    "logistic_l1_zero_fraction": logistic["l1"]["zero"],
    "logistic_l2_zero_fraction": logistic["l2"]["zero"],
    "logistic_l1_minus_l2_accuracy": logistic["l1"]["accuracy"] - logistic["l2"]["accuracy"],
    "keras_l1_minus_l2_small_weights": small["L1"] - small["L2"],
    "independent_over_soft": independent / soft,
    "hard_over_soft": shared / soft,
}
# Measured over --quick seeds 0-2 with oneDNN on and off (AMD EPYC, AVX-512); the ranges are beside the bars.
# The full run (seed 0) measured: 3.45, 3.7e4, 0.28, 0.80, 0, -0.026, 0.68, 3.90, 1.87 (in this order).
tut.finish(results, expect={
    "underfit_over_best": (">=", 2.5),  # measured 3.53-3.61
    "overfit_over_best": (">=", 2.0),  # measured 3.9e4-1.1e6 (degree 14 through 20 points)
    "train_error_max_over_best": ("<=", 0.8),  # measured 0.27-0.29
    "logistic_l1_zero_fraction": (">=", 0.5),  # measured 0.73-0.80
    "logistic_l2_zero_fraction": ("<=", 0.0),  # measured 0 (L2 shrinks but never zeroes a coefficient)
    "logistic_l1_minus_l2_accuracy": (">=", -0.06),  # measured -0.026 to +0.009: sparsity costs little accuracy
    "keras_l1_minus_l2_small_weights": (">=", 0.25),  # measured 0.46-0.49
    "independent_over_soft": (">=", 1.4),  # measured 1.84-2.24
    "hard_over_soft": (">=", 1.1),  # measured 1.23-1.53
})
