"""Tests for training.metrics: hand-computed values, the empty-mask rule, scipy/MONAI/sklearn references."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from training import metrics as M

REPO = Path(__file__).resolve().parents[2]


def _blobs(rng, shape, num_labels=2, sigma=2.0):
    """A smooth random label map with ``num_labels`` structures (thresholded smoothed noise)."""
    field = ndimage.gaussian_filter(rng.normal(size=shape), sigma)
    edges = np.quantile(field, np.linspace(0.55, 0.95, num_labels + 1))
    return np.digitize(field, edges[:-1]).astype(np.int32)  # 0 below the first edge, then 1..num_labels


def _perturb(labels, rng):
    """A plausible prediction: the truth, dilated/eroded a little and with a few flipped voxels."""
    pred = labels.copy()
    pred[ndimage.binary_dilation(labels == 1) & (labels == 0)] = 1
    flips = rng.random(labels.shape) < 0.01
    pred[flips] = rng.integers(0, labels.max() + 1, size=flips.sum())
    return pred


# ---------------------------------------------------------------------------------------------
# Overlap and confusion metrics
# ---------------------------------------------------------------------------------------------


def test_overlap_metrics_hand_computed():
    truth = np.array([1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    pred = np.array([1, 1, 0, 1, 0, 0, 0, 0], dtype=bool)  # TP 2, FP 1, FN 1, TN 4
    assert M.confusion_counts(pred, truth) == {"tp": 2, "fp": 1, "fn": 1, "tn": 4}
    assert M.dice_score(pred, truth) == pytest.approx(4 / 6)
    assert M.iou_score(pred, truth) == pytest.approx(2 / 4)
    assert M.sensitivity(pred, truth) == pytest.approx(2 / 3)
    assert M.specificity(pred, truth) == pytest.approx(4 / 5)
    assert M.precision(pred, truth) == pytest.approx(2 / 3)
    assert M.accuracy(pred, truth) == pytest.approx(6 / 8)
    assert M.accuracy(np.array([0, 1, 2]), np.array([0, 2, 2])) == pytest.approx(2 / 3)


def test_empty_masks_never_give_nan():
    empty = np.zeros((4, 5), dtype=bool)
    full = np.zeros((4, 5), dtype=bool)
    full[1, 1] = True
    assert M.dice_score(empty, empty) == 1.0 and M.iou_score(empty, empty) == 1.0
    assert M.dice_score(full, empty) == 0.0 and M.iou_score(empty, full) == 0.0
    assert M.hd95(empty, empty) == 0.0 and M.average_surface_distance(empty, empty) == 0.0
    diagonal = math.hypot(4 * 2.0, 5 * 0.5)
    assert M.worst_case_distance((4, 5), (2.0, 0.5)) == pytest.approx(diagonal)
    assert M.hd95(full, empty, spacing=(2.0, 0.5)) == pytest.approx(diagonal)
    assert M.average_surface_distance(empty, full, spacing=(2.0, 0.5)) == pytest.approx(diagonal)
    assert M.sensitivity(empty, empty) == 1.0 and M.precision(empty, full) == 1.0
    assert M.sensitivity(empty, empty, zero_division=0.0) == 0.0
    with pytest.raises(ValueError, match="non-empty"):
        M.surface_distances(full, empty)


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match=r"prediction shape \(3, 3\) does not match truth shape \(3, 4\)"):
        M.dice_score(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="spacing"):
        M.hd95(np.ones((3, 3)), np.ones((3, 3)), spacing=(1.0, 1.0, 1.0))


def test_roc_auc_matches_sklearn_and_rejects_one_class(rng):
    from sklearn.metrics import roc_auc_score

    truth = rng.integers(0, 2, size=50)
    scores = truth + rng.normal(scale=0.8, size=50)
    assert M.roc_auc(truth, scores) == pytest.approx(roc_auc_score(truth, scores))
    assert M.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)  # 3 of 4 pairs ordered
    probs = np.stack([1 - scores, scores], axis=1)
    assert M.roc_auc(truth, probs) == pytest.approx(roc_auc_score(truth, scores))
    three = rng.integers(0, 3, size=60)
    p3 = rng.dirichlet(np.ones(3), size=60)
    assert M.roc_auc(three, p3) == pytest.approx(roc_auc_score(three, p3, multi_class="ovr"))
    with pytest.raises(ValueError, match="two classes"):
        M.roc_auc([1, 1, 1], [0.2, 0.3, 0.4])


def test_sensitivity_at_specificity_hand_computed():
    truth = [0, 0, 0, 0, 1, 1, 1, 1]
    scores = [0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9]
    # Threshold 0.4 recalls one healthy case (0.6): specificity 3/4, and finds all four positives.
    assert M.sensitivity_at_specificity(truth, scores, 0.75) == pytest.approx(
        {"sensitivity": 1.0, "specificity": 0.75, "threshold": 0.4})
    # No healthy case recalled: only the three scores above 0.6 count as positive.
    assert M.sensitivity_at_specificity(truth, scores, 1.0) == pytest.approx(
        {"sensitivity": 0.75, "specificity": 1.0, "threshold": 0.7})
    # Asking for 0.8 cannot be met exactly (steps of 0.25): the next stricter point is used.
    assert M.sensitivity_at_specificity(truth, scores, 0.8)["specificity"] == 1.0


def test_sensitivity_at_specificity_matches_brute_force(rng):
    truth = rng.integers(0, 2, 200)
    scores = truth + rng.normal(0, 1.0, 200)
    point = M.sensitivity_at_specificity(truth, scores, 0.9)
    best = 0.0
    for threshold in np.unique(scores):
        pred = scores >= threshold
        if M.specificity(pred, truth) >= 0.9:
            best = max(best, M.sensitivity(pred, truth))
    assert point["sensitivity"] == pytest.approx(best)
    assert point["specificity"] >= 0.9
    assert M.sensitivity(scores >= point["threshold"], truth) == pytest.approx(point["sensitivity"])


@pytest.mark.parametrize("truth, scores, spec", [
    ([1, 1, 1], [0.2, 0.3, 0.4], 0.9),  # one class only
    ([0, 1, 2], [0.2, 0.3, 0.4], 0.9),  # not binary
    ([0, 1], [0.2, 0.3, 0.4], 0.9),  # lengths differ
    ([0, 1], [0.2, 0.3], 1.5),  # specificity out of range
])
def test_sensitivity_at_specificity_errors(truth, scores, spec):
    with pytest.raises(ValueError):
        M.sensitivity_at_specificity(truth, scores, spec)


def test_bootstrap_ci_brackets_the_auc_and_matches_hanley_mcneil(rng):
    n = 300
    truth = np.repeat([0, 1], n // 2)
    scores = truth * 1.2 + rng.normal(size=n)
    ci = M.bootstrap_ci(truth, scores, num_resamples=400, seed=1)
    assert ci["estimate"] == pytest.approx(M.roc_auc(truth, scores))
    assert ci["low"] < ci["estimate"] < ci["high"]
    # Hanley & McNeil (1982) standard error of an AUC: the bootstrap should agree within ~25%.
    a, n1, n0 = ci["estimate"], n // 2, n // 2
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = math.sqrt((a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0))
    assert ci["std"] == pytest.approx(se, rel=0.25)
    assert ci["high"] - ci["low"] == pytest.approx(2 * 1.96 * se, rel=0.3)
    assert M.bootstrap_ci(truth, scores, num_resamples=400, seed=1) == ci  # seeded
    small = M.bootstrap_ci(truth[::5], scores[::5], num_resamples=400, seed=1)
    assert small["high"] - small["low"] > ci["high"] - ci["low"]  # fewer patients, wider interval


def test_bootstrap_ci_of_another_metric_keeps_class_counts(rng):
    truth = np.array([0] * 30 + [1] * 10)
    scores = rng.random(40)
    seen = []

    def positive_fraction(t, s):
        seen.append(t.mean())
        return float(np.mean(s[t == 1]))

    ci = M.bootstrap_ci(truth, scores, positive_fraction, num_resamples=50, seed=0)
    assert set(seen) == {0.25}  # stratified: every resample has 10 positives of 40
    assert ci["estimate"] == pytest.approx(scores[truth == 1].mean())
    with pytest.raises(ValueError, match="num_resamples"):
        M.bootstrap_ci(truth, scores, num_resamples=1)
    with pytest.raises(ValueError, match="confidence"):
        M.bootstrap_ci(truth, scores, confidence=1.0)
    with pytest.raises(ValueError, match="binary"):
        M.bootstrap_ci([1] * 40, scores)


# ---------------------------------------------------------------------------------------------
# Surface distances
# ---------------------------------------------------------------------------------------------


def test_hausdorff_hand_computed_with_anisotropic_spacing():
    a = np.zeros((6, 6), dtype=bool)
    b = np.zeros((6, 6), dtype=bool)
    a[0, 0] = True
    b[3, 4] = True
    assert M.hausdorff_distance(a, b, percentile=100) == pytest.approx(5.0)
    assert M.hd95(a, b, spacing=(2.0, 1.0)) == pytest.approx(math.hypot(6.0, 4.0))
    # Two squares, one shifted by one row (3 mm): every surface voxel is 0 or 3 mm from the other surface.
    c = np.zeros((10, 10), dtype=bool)
    c[2:6, 2:6] = True
    d = np.roll(c, 1, axis=0)
    assert M.hausdorff_distance(c, d, spacing=(3.0, 1.0), percentile=100) == pytest.approx(3.0)
    assert M.average_surface_distance(c, c, spacing=(3.0, 1.0)) == 0.0


@pytest.mark.parametrize("shape,spacing", [((40, 36), (0.5, 1.2)), ((20, 24, 12), (0.8, 0.8, 3.0))])
def test_surface_distances_match_brute_force(rng, shape, spacing):
    truth = _blobs(rng, shape, num_labels=1) == 1
    pred = _perturb(truth.astype(np.int32), rng) == 1
    to_truth, to_pred = M.surface_distances(pred, truth, spacing)
    # Reference: all pairwise distances between surface voxels, in mm.
    structure = ndimage.generate_binary_structure(len(shape), 1)
    s_pred = np.argwhere(pred & ~ndimage.binary_erosion(pred, structure)) * spacing
    s_truth = np.argwhere(truth & ~ndimage.binary_erosion(truth, structure)) * spacing
    pairwise = cdist(s_pred, s_truth)
    np.testing.assert_allclose(np.sort(to_truth), np.sort(pairwise.min(axis=1)), atol=1e-9)
    np.testing.assert_allclose(np.sort(to_pred), np.sort(pairwise.min(axis=0)), atol=1e-9)
    expected_hd95 = max(np.percentile(pairwise.min(axis=1), 95), np.percentile(pairwise.min(axis=0), 95))
    assert M.hd95(pred, truth, spacing) == pytest.approx(expected_hd95)


def test_masks_touching_the_border_have_a_surface_there():
    a = np.zeros((5, 5), dtype=bool)
    a[:, :2] = True  # touches three borders
    b = np.zeros((5, 5), dtype=bool)
    b[:, :3] = True
    to_b, to_a = M.surface_distances(a, b)
    assert to_b.max() == pytest.approx(1.0) and to_a.max() == pytest.approx(1.0)


@pytest.mark.slow  # importing torch + MONAI takes several seconds
@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("shape,spacing", [((48, 40), (0.7, 1.3)), ((24, 28, 12), (0.8, 0.8, 3.0))])
def test_evaluate_segmentation_matches_monai(monai, rng, shape, spacing):
    mm = monai.metrics
    truth = _blobs(rng, shape, num_labels=3)
    pred = _perturb(truth, rng)
    report = M.evaluate_segmentation(pred, truth, spacing, labels={"a": 1, "b": 2, "c": 3})

    p, t = (monai.channels_first(np.eye(4, dtype=np.float32)[x][None]) for x in (pred, truth))
    dice = mm.DiceMetric(include_background=False, reduction="none")(p, t).numpy()[0]
    hd = mm.HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")(p, t, spacing=spacing)
    asd = mm.SurfaceDistanceMetric(include_background=False, symmetric=True, reduction="none")(p, t, spacing=spacing)
    np.testing.assert_allclose(list(report["dice"].values()), dice, rtol=1e-6)
    np.testing.assert_allclose(list(report["hd95_mm"].values()), hd.numpy()[0], rtol=1e-5)
    np.testing.assert_allclose(list(report["asd_mm"].values()), asd.numpy()[0], rtol=1e-5)
    assert report["mean_dice"] == pytest.approx(float(np.mean(dice)), rel=1e-6)


# ---------------------------------------------------------------------------------------------
# evaluate_segmentation and aggregate_cases
# ---------------------------------------------------------------------------------------------


def test_evaluate_segmentation_report(rng):
    truth = _blobs(rng, (20, 20, 10), num_labels=2)
    pred = truth.copy()
    pred[pred == 2] = 0  # structure 2 missed entirely
    report = M.evaluate_segmentation(pred, truth, spacing=(1.0, 1.0, 2.5), labels={"gland": 1, "lesion": 2, "absent": 3})
    assert report["dice"] == {"gland": 1.0, "lesion": 0.0, "absent": 1.0}
    assert report["hd95_mm"]["gland"] == 0.0 and report["hd95_mm"]["absent"] == 0.0
    assert report["hd95_mm"]["lesion"] == pytest.approx(M.worst_case_distance((20, 20, 10), (1.0, 1.0, 2.5)))
    assert report["empty"] == {"lesion": "prediction", "absent": "both"}
    assert report["mean_dice"] == pytest.approx(2 / 3)
    json.dumps(report, allow_nan=False)  # finite, JSON-ready
    assert M.evaluate_segmentation(pred, truth, labels={1: "gland", 2: "lesion"})["dice"] == {"gland": 1.0, "lesion": 0.0}
    by_value = M.evaluate_segmentation(pred, truth, labels=[1, 2])
    assert list(by_value["dice"]) == ["label_1", "label_2"]
    assert list(M.evaluate_segmentation(pred, truth)["dice"]) == ["label_1", "label_2"]


def test_evaluate_segmentation_errors():
    with pytest.raises(ValueError, match="shape"):
        M.evaluate_segmentation(np.zeros((4, 4), int), np.zeros((4, 5), int), labels=[1])
    with pytest.raises(ValueError, match="integer labels"):
        M.evaluate_segmentation(np.full((4, 4), 0.5), np.zeros((4, 4), int), labels=[1])
    with pytest.raises(ValueError, match="no structures"):
        M.evaluate_segmentation(np.zeros((4, 4), int), np.zeros((4, 4), int))


def test_aggregate_cases(rng):
    truth = _blobs(rng, (16, 16), num_labels=2)
    reports = [
        M.evaluate_segmentation(truth, truth, labels={"a": 1, "b": 2}),
        M.evaluate_segmentation(np.zeros_like(truth), truth, labels={"a": 1, "b": 2}),
    ]
    summary = M.aggregate_cases(reports)
    assert summary["num_cases"] == 2
    assert summary["dice"] == {"a": 0.5, "b": 0.5} and summary["mean_dice"] == 0.5
    assert summary["std_dice"]["a"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least one"):
        M.aggregate_cases([])
    with pytest.raises(ValueError, match="different structures"):
        M.aggregate_cases([reports[0], M.evaluate_segmentation(truth, truth, labels={"x": 1, "b": 2})])


# ---------------------------------------------------------------------------------------------
# Synthesis and registration metrics
# ---------------------------------------------------------------------------------------------


def test_psnr_and_ssim_against_scikit_image(rng):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    truth = ndimage.gaussian_filter(rng.random((32, 32)), 2)
    noisy = truth + rng.normal(scale=0.02, size=truth.shape)
    # Hand value: MSE 0.01 on range 1 -> 20 dB.
    assert M.psnr(np.full(4, 0.1), np.array([0.0, 0.2, 0.0, 0.2]), data_range=1.0) == pytest.approx(20.0)
    assert M.psnr(noisy, truth, data_range=1.0) == pytest.approx(peak_signal_noise_ratio(truth, noisy, data_range=1.0))
    assert M.psnr(truth, truth) == math.inf
    expected = structural_similarity(truth, noisy, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False)
    assert M.ssim(noisy, truth, data_range=1.0) == pytest.approx(expected)
    assert M.ssim(truth, truth) == pytest.approx(1.0)
    assert M.ssim(noisy, truth) > M.ssim(truth + rng.normal(scale=0.2, size=truth.shape), truth)
    volume = ndimage.gaussian_filter(rng.random((12, 12, 12)), 1)
    assert M.ssim(volume, volume) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 11"):
        M.ssim(np.ones((8, 8)), np.ones((8, 8)), data_range=1.0)
    with pytest.raises(ValueError, match="data_range"):
        M.psnr(np.ones(3), np.ones(3))


def test_jacobian_and_folding_golden():
    coords = np.stack(np.meshgrid(np.arange(6.0), np.arange(7.0), indexing="ij"), axis=-1)
    zero = np.zeros((6, 7, 2))
    np.testing.assert_allclose(M.jacobian_determinant(zero), 1.0)
    # u = A x with A = [[0.5, 0], [0, -0.5]]: J = diag(1.5, 0.5), det 0.75 everywhere.
    scaled = coords * np.array([0.5, -0.5])
    np.testing.assert_allclose(M.jacobian_determinant(scaled), 0.75)
    # u = -2 x along axis 0 mirrors the grid: det = -1, every voxel folds.
    mirror = np.zeros((6, 7, 2))
    mirror[..., 0] = -2 * coords[..., 0]
    assert M.folding_percentage(mirror) == 100.0
    # Batched and 3D; displacements given in mm with 2 mm voxels halve the derivatives.
    coords3 = np.stack(np.meshgrid(*[np.arange(5.0)] * 3, indexing="ij"), axis=-1)
    field = np.stack([np.zeros_like(coords3), coords3 * 0.2])
    dets = M.jacobian_determinant(field)
    assert dets.shape == (2, 5, 5, 5)
    np.testing.assert_allclose(dets[1], 1.2**3)
    np.testing.assert_allclose(M.jacobian_determinant(coords3 * 0.2, spacing=2.0), 1.1**3)
    assert M.folding_percentage(field) == 0.0
    with pytest.raises(ValueError, match="displacement field"):
        M.jacobian_determinant(np.zeros((5, 5, 4)))


def test_target_registration_error():
    moved = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 2.0]])
    fixed = np.array([[3.0, 4.0, 0.0], [1.0, 2.0, 2.0]])
    np.testing.assert_allclose(M.target_registration_error(moved, fixed), [5.0, 0.0])
    np.testing.assert_allclose(M.target_registration_error(moved, fixed, spacing=(1.0, 0.5, 2.0)), [math.hypot(3, 2), 0.0])
    with pytest.raises(ValueError, match="landmarks"):
        M.target_registration_error(moved, fixed[:1])


# ---------------------------------------------------------------------------------------------
# Streaming Keras metric
# ---------------------------------------------------------------------------------------------


def test_evaluate_segmentation_reports_what_hd95_and_asd_compute():
    truth = np.zeros((6, 20, 20), np.int32)
    truth[2:4, 5:12, 5:12] = 1
    truth[1:5, 14:18, 3:9] = 2
    pred = np.roll(truth, 2, axis=2)
    pred[pred == 2] = 0  # structure 2 missed: the empty-mask rule applies
    spacing = (3.0, 1.0, 0.5)
    report = M.evaluate_segmentation(pred, truth, spacing, labels={"a": 1, "b": 2})
    for name, value in (("a", 1), ("b", 2)):
        assert report["hd95_mm"][name] == M.hd95(pred == value, truth == value, spacing)
        assert report["asd_mm"][name] == M.average_surface_distance(pred == value, truth == value, spacing)
    assert report["hd95_mm"]["a"] == pytest.approx(2 * 0.5) and report["empty"] == {"b": "prediction"}


def test_evaluation_metrics_import_without_keras():
    """The NumPy evaluation (used by the marking, in processes of their own) does not load Keras or
    TensorFlow, seconds of start-up; ``training.metrics.DiceMetric`` still works, imported on first use."""
    code = ("import sys, training.metrics as m; assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules; "
            "m.evaluate_segmentation(__import__('numpy').ones((4, 4), int), __import__('numpy').ones((4, 4), int)); "
            "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    # The Keras metric is resolved on first use (here, where Keras is loaded already: no second start-up).
    import training.metrics
    import training.streaming_metrics

    assert training.metrics.DiceMetric is training.streaming_metrics.DiceMetric
