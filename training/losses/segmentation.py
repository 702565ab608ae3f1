"""Segmentation losses: soft Dice, generalised Dice, Dice + CE, cross-entropy, focal, Tversky."""

from __future__ import annotations

from collections.abc import Sequence

from keras import ops

from training.losses.core import (
    _EPS,
    loss_class,
    _drop_background,
    _log_probabilities,
    _prepare,
    _spatial_axes,
    smooth_labels,
)


def soft_dice_score(
    y_true,
    y_pred,
    *,
    batch: bool = False,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    squared_pred: bool = False,
    from_logits: bool = False,
):
    """Soft Dice score of every class, ``(2 sum(t p) + smooth_nr) / (sum(t) + sum(p) + smooth_dr)``.

    Args:
        y_true: labels ``(B, *spatial)`` / ``(B, *spatial, 1)`` or one-hot ``(B, *spatial, K)``.
        y_pred: probabilities (or logits with ``from_logits``) ``(B, *spatial, K)``.
        batch: pool the sums over the batch too (one score per class for the whole batch).
        smooth_nr, smooth_dr: smoothing added to numerator and denominator (see module docstring).
        squared_pred: use ``sum(t^2) + sum(p^2)`` in the denominator (the V-Net form).
        from_logits: apply softmax (sigmoid for ``K == 1``) to ``y_pred`` first.

    Returns:
        float32 ``(B, K)``, or ``(K,)`` with ``batch=True``; 1 is perfect overlap.
    """
    y_true, y_pred = _prepare(y_true, y_pred, from_logits)
    axes = _spatial_axes(len(y_pred.shape))
    if batch:
        axes = (0,) + axes
    intersection = ops.sum(y_true * y_pred, axis=axes)
    if squared_pred:
        denominator = ops.sum(ops.square(y_true), axis=axes) + ops.sum(ops.square(y_pred), axis=axes)
    else:
        denominator = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    return (2.0 * intersection + smooth_nr) / (denominator + smooth_dr)


def soft_dice_loss(
    y_true,
    y_pred,
    *,
    include_background: bool = True,
    batch: bool = False,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    squared_pred: bool = False,
    from_logits: bool = False,
):
    """Soft Dice loss, ``1 - Dice`` averaged over classes (same definition as MONAI's ``DiceLoss``).

    Args:
        y_true: labels ``(B, *spatial)`` / ``(B, *spatial, 1)`` or one-hot ``(B, *spatial, K)``.
        y_pred: probabilities (or logits with ``from_logits``) ``(B, *spatial, K)``.
        include_background: keep class 0 in the average; ``False`` drops it (ignored when ``K == 1``).
        batch: pool the sums over the batch ("batch Dice"), which is steadier when many samples miss a
            structure (e.g. 2D slices); otherwise Dice is computed per sample. Under a distribution
            strategy the pooling covers each replica's share of the batch.
        smooth_nr, smooth_dr, squared_pred, from_logits: see :func:`soft_dice_score`.

    Returns:
        float32 ``(B,)``, or a scalar with ``batch=True``; in ``[0, 1]``.
    """
    dice = soft_dice_score(
        y_true, y_pred, batch=batch, smooth_nr=smooth_nr, smooth_dr=smooth_dr,
        squared_pred=squared_pred, from_logits=from_logits,
    )
    if not include_background:
        (dice,) = _drop_background(dice)
    return ops.mean(1.0 - dice, axis=-1)


def generalized_dice_loss(
    y_true,
    y_pred,
    *,
    include_background: bool = True,
    batch: bool = False,
    weight_type: str = "square",
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    from_logits: bool = False,
):
    """Generalised Dice loss (Sudre et al. 2017): classes weighted by inverse (squared) volume.

    ``1 - 2 sum_c w_c sum(t_c p_c) / sum_c w_c (sum(t_c) + sum(p_c))`` with ``w_c = 1 / sum(t_c)^2``.
    A class absent from the truth would get an infinite weight; as in MONAI it gets the largest finite
    weight instead, so a false positive there still costs something.

    Args:
        y_true, y_pred, include_background, batch, smooth_nr, smooth_dr, from_logits: as in
            :func:`soft_dice_loss`.
        weight_type: ``"square"`` (``1/V^2``), ``"simple"`` (``1/V``) or ``"uniform"`` (``1``).

    Returns:
        float32 ``(B,)``, or a scalar with ``batch=True``.
    """
    if weight_type not in ("square", "simple", "uniform"):
        raise ValueError(f"weight_type must be 'square', 'simple' or 'uniform'; got {weight_type!r}")
    y_true, y_pred = _prepare(y_true, y_pred, from_logits)
    if not include_background:
        y_true, y_pred = _drop_background(y_true, y_pred)
    axes = _spatial_axes(len(y_pred.shape))
    if batch:
        axes = (0,) + axes
    intersection = ops.sum(y_true * y_pred, axis=axes)
    volume = ops.sum(y_true, axis=axes)
    denominator = volume + ops.sum(y_pred, axis=axes)
    present = volume > 0
    safe_volume = ops.where(present, volume, 1.0)
    if weight_type == "square":
        weight = 1.0 / ops.square(safe_volume)
    elif weight_type == "simple":
        weight = 1.0 / safe_volume
    else:
        weight = ops.ones_like(volume)
    weight = ops.where(present, weight, 0.0)
    largest = ops.max(weight, axis=-1, keepdims=True)
    weight = ops.where(present, weight, largest)
    numerator = 2.0 * ops.sum(intersection * weight, axis=-1) + smooth_nr
    denominator = ops.sum(denominator * weight, axis=-1) + smooth_dr
    return 1.0 - numerator / denominator


def cross_entropy(
    y_true,
    y_pred,
    *,
    class_weights: Sequence[float] | None = None,
    label_smoothing: float = 0.0,
    from_logits: bool = False,
):
    """Per-sample (optionally class-weighted, label-smoothed) categorical cross-entropy.

    With ``class_weights`` every voxel counts ``w[label]`` times and the sum is divided by the total
    weight of the sample (the weighted mean used by PyTorch's ``CrossEntropyLoss(weight=...)``, but per
    sample), so rare structures can be up-weighted without changing the loss scale.

    Args:
        y_true: labels ``(B, *spatial)`` / ``(B, *spatial, 1)`` or one-hot ``(B, *spatial, K)``.
        y_pred: probabilities (or logits with ``from_logits``) ``(B, *spatial, K)``; ``K == 1`` is
            treated as binary (sigmoid) cross-entropy.
        class_weights: one weight per class (two for ``K == 1``: background, foreground), or ``None``.
        label_smoothing: see :func:`smooth_labels`.
        from_logits: ``y_pred`` holds raw scores.

    Returns:
        float32 ``(B,)``: mean over voxels of ``-sum_k t_k log p_k``.
    """
    one_hot, log_p = _log_probabilities(y_true, y_pred, from_logits)
    targets = smooth_labels(one_hot, label_smoothing) if label_smoothing else one_hot
    per_voxel = -ops.sum(targets * log_p, axis=-1)
    axes = tuple(range(1, len(per_voxel.shape)))
    if class_weights is None:
        return ops.mean(per_voxel, axis=axes)
    weights = ops.convert_to_tensor(list(class_weights), dtype="float32")
    if weights.shape[0] != one_hot.shape[-1]:
        raise ValueError(
            f"class_weights needs {one_hot.shape[-1]} values (one per class); got {len(class_weights)}"
        )
    voxel_weight = ops.sum(one_hot * weights, axis=-1)
    return ops.sum(voxel_weight * per_voxel, axis=axes) / ops.maximum(ops.sum(voxel_weight, axis=axes), _EPS)


def dice_ce_loss(
    y_true,
    y_pred,
    *,
    lambda_dice: float = 1.0,
    lambda_ce: float = 1.0,
    include_background: bool = True,
    batch: bool = False,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    class_weights: Sequence[float] | None = None,
    label_smoothing: float = 0.0,
    from_logits: bool = False,
):
    """Dice + cross-entropy: ``lambda_dice * soft_dice_loss + lambda_ce * cross_entropy``.

    The usual default for medical segmentation (nnU-Net, MONAI ``DiceCELoss``): cross-entropy gives
    smooth early gradients for every voxel, Dice keeps small structures from being ignored.

    Args:
        See :func:`soft_dice_loss` and :func:`cross_entropy`.

    Returns:
        float32 ``(B,)``.
    """
    dice = soft_dice_loss(
        y_true, y_pred, include_background=include_background, batch=batch,
        smooth_nr=smooth_nr, smooth_dr=smooth_dr, from_logits=from_logits,
    )
    ce = cross_entropy(
        y_true, y_pred, class_weights=class_weights, label_smoothing=label_smoothing,
        from_logits=from_logits,
    )
    return lambda_dice * dice + lambda_ce * ce


def focal_loss(
    y_true,
    y_pred,
    *,
    gamma: float = 2.0,
    alpha: float | Sequence[float] | None = None,
    from_logits: bool = False,
):
    """Focal loss (Lin et al. 2017): cross-entropy down-weighted on voxels already classified well.

    Per voxel ``-sum_k alpha_k t_k (1 - p_k)^gamma log p_k``; ``gamma = 0`` and no ``alpha`` gives
    plain cross-entropy.

    Args:
        y_true, y_pred, from_logits: as in :func:`cross_entropy`.
        gamma: focusing parameter (>= 0).
        alpha: one weight for all classes, one per class, or ``None`` (1).

    Returns:
        float32 ``(B,)``: mean over voxels.
    """
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0; got {gamma}")
    one_hot, log_p = _log_probabilities(y_true, y_pred, from_logits)
    modulating = ops.power(1.0 - ops.exp(log_p), gamma)
    per_class = -one_hot * modulating * log_p
    if alpha is not None:
        weights = ops.convert_to_tensor(alpha if isinstance(alpha, (int, float)) else list(alpha), "float32")
        per_class = per_class * weights
    per_voxel = ops.sum(per_class, axis=-1)
    return ops.mean(per_voxel, axis=tuple(range(1, len(per_voxel.shape))))


def tversky_loss(
    y_true,
    y_pred,
    *,
    alpha: float = 0.5,
    beta: float = 0.5,
    include_background: bool = True,
    batch: bool = False,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    from_logits: bool = False,
):
    """Tversky loss: ``1 - TP / (TP + alpha FP + beta FN)`` averaged over classes.

    ``alpha = beta = 0.5`` is the soft Dice loss; ``beta > alpha`` punishes missed voxels more, which
    trades precision for sensitivity on small lesions (Salehi et al. 2017; MONAI's convention).

    Args:
        alpha: weight of false positives. beta: weight of false negatives.
        Others: as in :func:`soft_dice_loss`.

    Returns:
        float32 ``(B,)``, or a scalar with ``batch=True``.
    """
    y_true, y_pred = _prepare(y_true, y_pred, from_logits)
    if not include_background:
        y_true, y_pred = _drop_background(y_true, y_pred)
    axes = _spatial_axes(len(y_pred.shape))
    if batch:
        axes = (0,) + axes
    tp = ops.sum(y_true * y_pred, axis=axes)
    fp = ops.sum((1.0 - y_true) * y_pred, axis=axes)
    fn = ops.sum(y_true * (1.0 - y_pred), axis=axes)
    index = (tp + smooth_nr) / (tp + alpha * fp + beta * fn + smooth_dr)
    return ops.mean(1.0 - index, axis=-1)



# One Keras class per loss for ``compile(loss=...)``; the options are the function's keywords.
SoftDiceLoss = loss_class("SoftDiceLoss", soft_dice_loss)
GeneralizedDiceLoss = loss_class("GeneralizedDiceLoss", generalized_dice_loss)
DiceCELoss = loss_class("DiceCELoss", dice_ce_loss)
CrossEntropyLoss = loss_class("CrossEntropyLoss", cross_entropy)
FocalLoss = loss_class("FocalLoss", focal_loss)
TverskyLoss = loss_class("TverskyLoss", tversky_loss)
