"""Evaluation metrics (NumPy, in millimetres) and, imported on first use, the streaming Keras Dice metric.

Evaluation works on whole label volumes after prediction: integer arrays ``(*spatial)`` (2D or 3D),
with the voxel spacing in millimetres per axis (``data_utils.io`` reads it from the NIfTI header).
Distances are Euclidean in millimetres, so anisotropic voxels (e.g. 0.8 x 0.8 x 3 mm) are handled.

Empty-mask rule (every function here follows it, so no NaN or infinity ever reaches a mean):

=====================================  ======  =====  =======================================
situation for one structure            Dice    IoU    HD95 / average surface distance
=====================================  ======  =====  =======================================
truth and prediction both empty        1       1      0 mm
exactly one of them empty              0       0      the image diagonal in mm (worst case)
=====================================  ======  =====  =======================================

The image diagonal is ``sqrt(sum((shape * spacing)^2))``: no two voxels of the image are further
apart, so a missed (or hallucinated) structure scores as badly as any prediction could. MONAI returns
NaN (Dice) and NaN/inf (distances) in these cases instead; everything else agrees with MONAI's
``DiceMetric``, ``HausdorffDistanceMetric(percentile=95)`` and ``SurfaceDistanceMetric(symmetric=True)``.

Ratios whose denominator is zero (sensitivity with no true positives to find, precision with
nothing predicted, ...) return ``zero_division`` (1.0 by default: there was nothing to get wrong).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

# ----------------------------------------------------------------------------------------------
# Overlap
# ----------------------------------------------------------------------------------------------


def _binary_pair(pred, truth) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred).astype(bool)
    truth = np.asarray(truth).astype(bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} does not match truth shape {truth.shape}")
    return pred, truth


def dice_score(pred, truth) -> float:
    """Dice overlap ``2 |P & T| / (|P| + |T|)`` of two binary masks (1 if both are empty).

    Args:
        pred, truth: binary masks of the same shape (any dimension).

    Returns:
        float in ``[0, 1]``.
    """
    pred, truth = _binary_pair(pred, truth)
    total = pred.sum() + truth.sum()
    if total == 0:
        return 1.0
    return float(2.0 * np.logical_and(pred, truth).sum() / total)


def iou_score(pred, truth) -> float:
    """Intersection over union (Jaccard index) of two binary masks (1 if both are empty).

    Args:
        pred, truth: binary masks of the same shape.

    Returns:
        float in ``[0, 1]``.
    """
    pred, truth = _binary_pair(pred, truth)
    union = np.logical_or(pred, truth).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(pred, truth).sum() / union)


def confusion_counts(pred, truth) -> dict[str, int]:
    """True/false positives/negatives of two binary masks.

    Args:
        pred, truth: binary masks of the same shape.

    Returns:
        ``{"tp": int, "fp": int, "fn": int, "tn": int}``.
    """
    pred, truth = _binary_pair(pred, truth)
    tp = int(np.logical_and(pred, truth).sum())
    fp = int(np.logical_and(pred, ~truth).sum())
    fn = int(np.logical_and(~pred, truth).sum())
    return {"tp": tp, "fp": fp, "fn": fn, "tn": int(pred.size - tp - fp - fn)}


def _ratio(numerator: int, denominator: int, zero_division: float) -> float:
    return float(numerator / denominator) if denominator else float(zero_division)


def sensitivity(pred, truth, *, zero_division: float = 1.0) -> float:
    """Sensitivity (recall, true-positive rate) ``TP / (TP + FN)`` of binary masks."""
    c = confusion_counts(pred, truth)
    return _ratio(c["tp"], c["tp"] + c["fn"], zero_division)


def specificity(pred, truth, *, zero_division: float = 1.0) -> float:
    """Specificity (true-negative rate) ``TN / (TN + FP)`` of binary masks."""
    c = confusion_counts(pred, truth)
    return _ratio(c["tn"], c["tn"] + c["fp"], zero_division)


def precision(pred, truth, *, zero_division: float = 1.0) -> float:
    """Precision (positive predictive value) ``TP / (TP + FP)`` of binary masks."""
    c = confusion_counts(pred, truth)
    return _ratio(c["tp"], c["tp"] + c["fp"], zero_division)


def accuracy(pred, truth) -> float:
    """Fraction of voxels (or samples) where the labels agree; works for multi-class labels too.

    Args:
        pred, truth: arrays of labels of the same shape.

    Returns:
        float in ``[0, 1]``.
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} does not match truth shape {truth.shape}")
    if pred.size == 0:
        raise ValueError("accuracy of empty arrays is undefined")
    return float(np.mean(pred == truth))


def roc_auc(truth, scores, *, multi_class: str = "ovr") -> float:
    """Area under the ROC curve (scikit-learn), for binary or multi-class classification.

    Args:
        truth: class labels ``(N,)``.
        scores: ``(N,)`` scores of the positive class, or ``(N, K)`` class probabilities.
        multi_class: scikit-learn's multi-class strategy (``"ovr"`` or ``"ovo"``).

    Returns:
        float in ``[0, 1]``; 0.5 is chance.

    Raises:
        ValueError: if ``truth`` holds a single class (AUC is undefined then).
    """
    from sklearn.metrics import roc_auc_score

    truth = np.asarray(truth).ravel()
    scores = np.asarray(scores)
    classes = np.unique(truth)
    if classes.size < 2:
        raise ValueError(f"ROC AUC needs at least two classes in truth; got only {classes.tolist()}")
    if scores.ndim == 2 and scores.shape[1] == 2:
        scores = scores[:, 1]
    if scores.ndim == 2:
        return float(roc_auc_score(truth, scores, multi_class=multi_class))
    return float(roc_auc_score(truth, scores))


def sensitivity_at_specificity(truth, scores, specificity: float = 0.9) -> dict[str, float]:
    """The best sensitivity a score reaches while keeping at least a given specificity.

    How a clinician reads a ROC curve: "if I may recall at most 1 in 10 healthy patients
    (specificity 0.9), what fraction of the diseased do I find?" The threshold is chosen on the
    data given, so for an honest figure choose it on validation data and apply it to the test set.

    Args:
        truth: binary labels ``(N,)`` (1 = diseased, the positive class).
        scores: ``(N,)`` scores, larger meaning more likely positive.
        specificity: the specificity to keep, in ``[0, 1]``.

    Returns:
        ``{"sensitivity", "specificity", "threshold"}``: the operating point (predict positive where
        ``score >= threshold``) with the highest sensitivity among those with specificity
        ``>= specificity``; its actual specificity may be higher than asked (scores are discrete).

    Raises:
        ValueError: if ``truth`` is not binary with both classes present, or shapes differ.
    """
    from sklearn.metrics import roc_curve

    truth, scores = _binary_scores(truth, scores)
    if not 0.0 <= specificity <= 1.0:
        raise ValueError(f"specificity must be in [0, 1]; got {specificity}")
    fpr, tpr, thresholds = roc_curve(truth, scores)
    allowed = (1.0 - fpr) >= specificity - 1e-12  # fpr = 0 (threshold inf) is always allowed
    best = int(np.flatnonzero(allowed)[np.argmax(tpr[allowed])])
    return {"sensitivity": float(tpr[best]), "specificity": float(1.0 - fpr[best]), "threshold": float(thresholds[best])}


def _binary_scores(truth, scores) -> tuple[np.ndarray, np.ndarray]:
    truth = np.asarray(truth).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if truth.shape != scores.shape:
        raise ValueError(f"truth has {truth.size} labels but scores has {scores.size} values")
    classes = np.unique(truth)
    if classes.size != 2 or not set(classes.tolist()) <= {0, 1}:
        raise ValueError(f"truth must hold both binary labels 0 and 1; got {classes.tolist()}")
    return truth.astype(np.int64), scores


def bootstrap_ci(
    truth,
    scores,
    metric=None,
    *,
    num_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Percentile bootstrap confidence interval of a metric computed from labels and scores.

    The test set is a sample of patients; another sample would give another AUC. The bootstrap
    estimates that spread by re-drawing ``N`` patients with replacement ``num_resamples`` times and
    recomputing the metric. Resampling is stratified (positives and negatives are re-drawn
    separately, keeping their counts), so every resample has both classes and a defined AUC.

    Args:
        truth: binary labels ``(N,)``.
        scores: ``(N,)`` scores of the positive class.
        metric: ``metric(truth, scores) -> float``; default :func:`roc_auc`.
        num_resamples: number of bootstrap samples (>= 100 for a 95% interval).
        confidence: coverage of the interval, in ``(0, 1)``.
        seed: seed of the resampling.

    Returns:
        ``{"estimate", "low", "high", "std"}``: the metric on the data as given, the interval's ends
        (percentiles ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` of the resampled values) and
        the bootstrap standard error.

    Raises:
        ValueError: for non-binary ``truth``, ``num_resamples < 2`` or ``confidence`` outside ``(0, 1)``.
    """
    truth, scores = _binary_scores(truth, scores)
    if int(num_resamples) < 2:
        raise ValueError(f"num_resamples must be >= 2; got {num_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1); got {confidence}")
    metric = roc_auc if metric is None else metric
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(truth == c) for c in (0, 1)]
    values = np.empty(int(num_resamples))
    for i in range(int(num_resamples)):
        index = np.concatenate([rng.choice(g, size=g.size, replace=True) for g in groups])
        values[i] = metric(truth[index], scores[index])
    tail = 50.0 * (1.0 - confidence)
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return {"estimate": float(metric(truth, scores)), "low": float(low), "high": float(high), "std": float(values.std(ddof=1))}


# ----------------------------------------------------------------------------------------------
# Surface distances
# ----------------------------------------------------------------------------------------------


def _spacing(spacing, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    spacing = tuple(float(s) for s in np.atleast_1d(spacing))
    if len(spacing) == 1:
        spacing = spacing * ndim
    if len(spacing) != ndim or any(s <= 0 for s in spacing):
        raise ValueError(f"spacing must give {ndim} positive voxel sizes (mm); got {spacing}")
    return spacing


def worst_case_distance(shape: Sequence[int], spacing=None) -> float:
    """The image diagonal in millimetres, ``sqrt(sum((shape * spacing)^2))``: the empty-mask value.

    Args:
        shape: spatial shape of the image. spacing: voxel size per axis in mm (default 1).

    Returns:
        float, mm.
    """
    spacing = _spacing(spacing, len(shape))
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing))))


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of the mask with a face-neighbour outside it (the image border counts as outside)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def surface_distances(pred, truth, spacing=None) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from every surface voxel of one mask to the nearest surface voxel of the other.

    Surfaces are the mask voxels with a face-neighbour outside the mask; distances come from scipy's
    Euclidean distance transform with the voxel ``spacing`` (as in MONAI).

    Args:
        pred, truth: non-empty binary masks of the same shape, 2D or 3D.
        spacing: voxel size per axis in mm (default 1 mm).

    Returns:
        ``(pred_to_truth, truth_to_pred)``: 1-D float arrays, one distance per surface voxel.

    Raises:
        ValueError: if a mask is empty (the caller applies the empty-mask rule).
    """
    pred, truth = _binary_pair(pred, truth)
    spacing = _spacing(spacing, pred.ndim)
    if not pred.any() or not truth.any():
        raise ValueError("surface distances need two non-empty masks")
    # Work inside the bounding box of both masks (plus one voxel): same distances, much less work.
    coords = np.argwhere(pred | truth)
    low = np.maximum(coords.min(axis=0) - 1, 0)
    high = np.minimum(coords.max(axis=0) + 2, pred.shape)
    box = tuple(slice(lo, hi) for lo, hi in zip(low, high))
    surface_pred, surface_truth = _surface(pred[box]), _surface(truth[box])
    to_truth = ndimage.distance_transform_edt(~surface_truth, sampling=spacing)[surface_pred]
    to_pred = ndimage.distance_transform_edt(~surface_pred, sampling=spacing)[surface_truth]
    return to_truth, to_pred


def _distance_metrics(pred, truth, spacing, percentile: float = 95.0) -> tuple[float, float, str | None]:
    """Percentile Hausdorff distance and ASSD from one surface-distance computation, empty rule applied.

    Returns:
        ``(hausdorff_mm, assd_mm, empty)`` with ``empty`` ``"both"``, ``"truth"`` or ``"prediction"``
        where the empty-mask rule gave the distances (0 if both are empty, the diagonal if one is),
        else ``None``.
    """
    pred, truth = _binary_pair(pred, truth)
    has_pred, has_truth = bool(pred.any()), bool(truth.any())
    if not has_pred and not has_truth:
        return 0.0, 0.0, "both"
    if not (has_pred and has_truth):
        worst = worst_case_distance(pred.shape, spacing)
        return worst, worst, "truth" if has_pred else "prediction"
    to_truth, to_pred = surface_distances(pred, truth, spacing)
    hausdorff = float(max(np.percentile(to_truth, percentile), np.percentile(to_pred, percentile)))
    return hausdorff, float(np.concatenate([to_truth, to_pred]).mean()), None


def hausdorff_distance(pred, truth, spacing=None, *, percentile: float = 95.0) -> float:
    """Symmetric percentile Hausdorff distance in mm (``percentile=95`` is HD95, 100 the classic HD).

    The larger of the two directed percentile distances, as in MONAI's
    ``HausdorffDistanceMetric(percentile=95)``. Empty masks follow the module's empty-mask rule.

    Args:
        pred, truth: binary masks of the same shape, 2D or 3D.
        spacing: voxel size per axis in mm (default 1 mm).
        percentile: in ``[0, 100]``.

    Returns:
        float, mm.
    """
    return _distance_metrics(pred, truth, spacing, percentile)[0]


def hd95(pred, truth, spacing=None) -> float:
    """95th-percentile Hausdorff distance in mm; see :func:`hausdorff_distance`."""
    return hausdorff_distance(pred, truth, spacing, percentile=95.0)


def average_surface_distance(pred, truth, spacing=None) -> float:
    """Average symmetric surface distance (ASSD) in mm: mean over both surfaces' distances.

    Matches MONAI's ``SurfaceDistanceMetric(symmetric=True)``; empty masks follow the empty-mask rule.

    Args:
        pred, truth: binary masks of the same shape, 2D or 3D. spacing: mm per axis.

    Returns:
        float, mm.
    """
    return _distance_metrics(pred, truth, spacing)[1]


# ----------------------------------------------------------------------------------------------
# Segmentation report
# ----------------------------------------------------------------------------------------------


def _label_names(labels, pred: np.ndarray, truth: np.ndarray) -> dict[str, int]:
    if labels is None:
        values = np.union1d(np.unique(pred), np.unique(truth))
        labels = [int(v) for v in values if v != 0]
    if isinstance(labels, Mapping):
        if all(isinstance(k, (int, np.integer)) and isinstance(v, str) for k, v in labels.items()):
            labels = {name: value for value, name in labels.items()}  # {1: "bladder"} is accepted too
        return {str(name): int(value) for name, value in labels.items()}
    return {f"label_{int(value)}": int(value) for value in labels}


def evaluate_segmentation(pred, truth, spacing=None, labels=None) -> dict:
    """Per-structure Dice, IoU, HD95 and average surface distance of one case, and their means.

    Args:
        pred: predicted label map, integer ``(D, H, W)`` or ``(H, W)``.
        truth: ground-truth label map, same shape.
        spacing: voxel size per axis in mm (default 1 mm).
        labels: structures to score: ``{"name": label_value}`` (or ``{label_value: "name"}``), a list of label values (named
            ``"label_<value>"``), or ``None`` for every non-zero value found in either map (pass them
            explicitly so every case reports the same structures).

    Returns:
        ``{"dice": {name: float}, "iou": {...}, "hd95_mm": {...}, "asd_mm": {...}, "mean_dice": float,
        "mean_iou": float, "mean_hd95_mm": float, "mean_asd_mm": float,
        "empty": {name: "both" | "truth" | "prediction"}}``; ``"empty"`` lists only structures where the
        empty-mask rule was applied. All values are finite floats (JSON-ready).

    Raises:
        ValueError: on a shape mismatch, bad spacing or non-integer labels.
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} does not match truth shape {truth.shape}")
    for what, array in (("prediction", pred), ("truth", truth)):
        if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
            if not np.all(np.equal(np.mod(array, 1), 0)):
                raise ValueError(f"{what} must hold integer labels; got non-integer values of dtype {array.dtype}")
    spacing = _spacing(spacing, pred.ndim)
    names = _label_names(labels, pred, truth)
    if not names:
        raise ValueError("no structures to score: both label maps are all background; pass labels={name: value}")
    report: dict = {"dice": {}, "iou": {}, "hd95_mm": {}, "asd_mm": {}, "empty": {}}
    for name, value in names.items():
        p, t = pred == value, truth == value
        report["dice"][name] = dice_score(p, t)
        report["iou"][name] = iou_score(p, t)
        # HD95 and ASD share one surface-distance computation (the costly part).
        report["hd95_mm"][name], report["asd_mm"][name], empty = _distance_metrics(p, t, spacing, 95.0)
        if empty is not None:
            report["empty"][name] = empty
    for key in ("dice", "iou", "hd95_mm", "asd_mm"):
        values = list(report[key].values())
        report[f"mean_{key}"] = float(np.mean(values))
    return report


def aggregate_cases(reports: Sequence[dict]) -> dict:
    """Average :func:`evaluate_segmentation` reports over cases, per structure and overall.

    Args:
        reports: one report per case, all scoring the same structures.

    Returns:
        ``{"num_cases": int, "dice": {name: mean}, ..., "mean_dice": float, ...}``, plus ``"std_<key>"``
        per structure.

    Raises:
        ValueError: if the list is empty or the reports name different structures.
    """
    if not reports:
        raise ValueError("aggregate_cases needs at least one case report")
    names = list(reports[0]["dice"])
    out: dict = {"num_cases": len(reports)}
    for key in ("dice", "iou", "hd95_mm", "asd_mm"):
        table = []
        for report in reports:
            if list(report[key]) != names:
                raise ValueError(f"case reports name different structures: {names} vs {list(report[key])}")
            table.append([report[key][n] for n in names])
        table = np.asarray(table, dtype=float)
        out[key] = {n: float(v) for n, v in zip(names, table.mean(axis=0))}
        out[f"std_{key}"] = {n: float(v) for n, v in zip(names, table.std(axis=0))}
        out[f"mean_{key}"] = float(table.mean())
    return out


# ----------------------------------------------------------------------------------------------
# Synthesis and registration
# ----------------------------------------------------------------------------------------------


def _data_range(truth: np.ndarray, data_range) -> float:
    if data_range is None:
        data_range = float(truth.max() - truth.min())
    if data_range <= 0:
        raise ValueError("data_range must be positive; pass it explicitly for a constant reference image")
    return float(data_range)


def psnr(pred, truth, *, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range^2 / MSE)``; ``inf`` for identical images.

    Args:
        pred, truth: images of the same shape. data_range: intensity range (default: that of ``truth``).

    Returns:
        float, dB.
    """
    pred, truth = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} does not match truth shape {truth.shape}")
    data_range = _data_range(truth, data_range)
    mse = np.mean((pred - truth) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(data_range**2 / mse))


def ssim(pred, truth, *, data_range: float | None = None, gaussian_weights: bool = True) -> float:
    """Structural similarity (Wang et al. 2004) of 2D or 3D single-channel images, via scikit-image.

    Uses the paper's settings (Gaussian window, sigma 1.5, population covariance), so images need at
    least 11 voxels per axis; ``gaussian_weights=False`` uses a 7-voxel box window instead.

    Args:
        pred, truth: images of the same shape. data_range: intensity range (default: that of ``truth``).

    Returns:
        float in ``[-1, 1]``; 1 for identical images.
    """
    from skimage.metrics import structural_similarity

    pred, truth = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} does not match truth shape {truth.shape}")
    kwargs = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False} if gaussian_weights else {}
    window = 11 if gaussian_weights else 7
    if min(truth.shape) < window:
        raise ValueError(f"ssim needs at least {window} voxels per axis; got image shape {truth.shape}")
    return float(structural_similarity(truth, pred, data_range=_data_range(truth, data_range), **kwargs))


def jacobian_determinant(ddf, spacing=None) -> np.ndarray:
    """Jacobian determinant of the transform ``x -> x + u(x)`` of a dense displacement field.

    Derivatives are central differences (one-sided at the border, ``numpy.gradient``). Component ``i``
    of ``u`` is the displacement along array axis ``i``, in the same units as ``spacing``.

    Args:
        ddf: ``(*spatial, ndim)`` or batched ``(B, *spatial, ndim)``, 2D or 3D, displacements in voxels
            (or in mm with ``spacing``).
        spacing: voxel size per axis (default 1, i.e. displacements in voxels).

    Returns:
        ``(*spatial)`` or ``(B, *spatial)`` determinants; 1 means no local volume change, <= 0 folding.
    """
    ddf = np.asarray(ddf, dtype=np.float64)
    ndim = ddf.shape[-1]
    if ndim not in (2, 3) or ddf.ndim not in (ndim + 1, ndim + 2):
        raise ValueError(f"expected a displacement field (*spatial, ndim) or (B, *spatial, ndim); got shape {ddf.shape}")
    if ddf.ndim == ndim + 2:
        return np.stack([jacobian_determinant(field, spacing) for field in ddf])
    spacing = _spacing(spacing, ndim)
    if any(s < 2 for s in ddf.shape[:-1]):
        raise ValueError(f"displacement field needs at least 2 voxels per axis; got shape {ddf.shape}")
    jac = np.empty(ddf.shape[:-1] + (ndim, ndim))
    for i in range(ndim):
        grads = np.gradient(ddf[..., i], *spacing)
        for j in range(ndim):
            jac[..., i, j] = grads[j] + (1.0 if i == j else 0.0)
    return np.linalg.det(jac)


def folding_percentage(ddf, spacing=None) -> float:
    """Percentage of voxels where the transform folds (Jacobian determinant <= 0).

    Args:
        ddf, spacing: see :func:`jacobian_determinant`.

    Returns:
        float in ``[0, 100]``.
    """
    return float(100.0 * np.mean(jacobian_determinant(ddf, spacing) <= 0))


def target_registration_error(moved_points, fixed_points, spacing=None) -> np.ndarray:
    """Target registration error: distance between corresponding landmarks after registration.

    Args:
        moved_points: ``(N, ndim)`` landmark positions mapped by the registration.
        fixed_points: ``(N, ndim)`` the corresponding landmarks in the fixed image.
        spacing: voxel size per axis to convert voxel coordinates to mm (``None``: already in mm).

    Returns:
        ``(N,)`` distances (mm); report their mean (and spread).
    """
    moved = np.asarray(moved_points, dtype=np.float64)
    fixed = np.asarray(fixed_points, dtype=np.float64)
    if moved.shape != fixed.shape or moved.ndim != 2:
        raise ValueError(f"landmarks must be two (N, ndim) arrays of equal shape; got {moved.shape} and {fixed.shape}")
    spacing = np.asarray(_spacing(spacing, moved.shape[1]))
    return np.sqrt(np.sum(((moved - fixed) * spacing) ** 2, axis=1))


def __getattr__(name: str):
    """``training.metrics.DiceMetric``: the streaming Keras metric, imported on first use (with Keras)."""
    if name == "DiceMetric":
        from training.streaming_metrics import DiceMetric

        return DiceMetric
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
