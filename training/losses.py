"""Loss functions for segmentation, registration, generative models and regularisation.

Every loss comes in two forms:

- a **function** (``soft_dice_loss(y_true, y_pred, ...)``) returning one value per sample, shape ``(B,)``
  (or a scalar where the loss is pooled over the batch, which is said in its docstring), and
- a **Keras ``Loss`` class** (``SoftDiceLoss(...)``) for ``model.compile(loss=...)``, registered for
  serialisation so a saved ``.keras`` model that was compiled with it loads again.

Conventions for the segmentation losses:

- ``y_pred`` holds probabilities ``(B, *spatial, K)`` from a softmax (or, for ``K == 1``, the foreground
  probability from a sigmoid). Pass ``from_logits=True`` when the model outputs raw scores instead.
- ``y_true`` is an integer label map ``(B, *spatial)`` or ``(B, *spatial, 1)``, or a one-hot /
  soft-label tensor ``(B, *spatial, K)``. For ``K == 1`` it is the 0/1 foreground mask.
- ``*spatial`` is ``(H, W)`` or ``(D, H, W)``: everything works in 2D and 3D.
- All arithmetic is done in float32, so the losses are safe under ``mixed_float16``/``mixed_bfloat16``.
- Only ``keras.ops`` is used (except ``gradient_penalty``, which needs a gradient tape), so the losses
  run inside ``tf.function`` graphs and under ``tf.distribute`` strategies.

Smoothing terms in Dice-like losses (``smooth_nr`` added to the numerator, ``smooth_dr`` to the
denominator, both ``1e-5`` by default as in MONAI) keep the ratio defined when a structure is absent:
if truth and prediction are both empty the Dice score is ``smooth_nr / smooth_dr = 1`` (loss 0); if the
truth is empty but something is predicted, the score falls towards 0 (loss towards 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

_EPS = 1e-7


# ----------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------


def _spatial_axes(rank: int) -> tuple[int, ...]:
    """Axes between batch and channel of a tensor of the given rank."""
    return tuple(range(1, rank - 1))


def to_one_hot(y_true, num_classes: int, pred_rank: int):
    """Turn a label map (or an already one-hot tensor) into float32 one-hot targets.

    Args:
        y_true: integer labels ``(B, *spatial)`` or ``(B, *spatial, 1)``, or one-hot ``(B, *spatial, K)``.
        num_classes: ``K``, the number of channels of the prediction.
        pred_rank: rank of the prediction tensor, ``len((B, *spatial, K))``.

    Returns:
        float32 tensor ``(B, *spatial, K)``; for ``K == 1`` the foreground mask ``(B, *spatial, 1)``.

    Raises:
        ValueError: if the shapes cannot be matched.
    """
    y_true = ops.convert_to_tensor(y_true)
    rank = len(y_true.shape)
    if rank == pred_rank - 1:
        if num_classes == 1:
            return ops.expand_dims(ops.cast(y_true, "float32"), -1)
        labels = y_true
    elif rank == pred_rank:
        last = y_true.shape[-1]
        if num_classes == 1 or (last == num_classes and num_classes > 1):
            return ops.cast(y_true, "float32")
        if last != 1:
            raise ValueError(
                f"y_true has {last} channels but y_pred has {num_classes}: pass labels (B, *spatial) or "
                f"(B, *spatial, 1), or one-hot (B, *spatial, {num_classes})"
            )
        labels = ops.squeeze(y_true, axis=-1)
    else:
        raise ValueError(
            f"y_true of rank {rank} does not fit y_pred of rank {pred_rank}: expected labels "
            f"(B, *spatial) / (B, *spatial, 1) or one-hot (B, *spatial, K)"
        )
    return ops.one_hot(ops.cast(labels, "int32"), num_classes, dtype="float32")


def _probabilities(y_pred, from_logits: bool):
    """float32 probabilities from a prediction; softmax (or sigmoid for one channel) of logits."""
    y_pred = ops.cast(y_pred, "float32")
    if y_pred.shape[-1] is None:
        raise ValueError("y_pred must have a known number of channels (classes) in its last axis")
    if from_logits:
        return ops.sigmoid(y_pred) if y_pred.shape[-1] == 1 else ops.softmax(y_pred, axis=-1)
    return y_pred


def _prepare(y_true, y_pred, from_logits: bool):
    """One-hot float32 targets and float32 probabilities, both ``(B, *spatial, K)``."""
    y_pred = _probabilities(y_pred, from_logits)
    y_true = to_one_hot(y_true, y_pred.shape[-1], len(y_pred.shape))
    return y_true, y_pred


def _log_probabilities(y_true, y_pred, from_logits: bool):
    """One-hot targets and log-probabilities; a single sigmoid channel becomes two (background, foreground)."""
    y_pred = ops.cast(y_pred, "float32")
    num_classes = y_pred.shape[-1]
    y_true = to_one_hot(y_true, num_classes, len(y_pred.shape))
    if num_classes == 1:
        y_true = ops.concatenate([1.0 - y_true, y_true], axis=-1)
        if from_logits:
            # log(sigmoid(z)) = -softplus(-z), log(1 - sigmoid(z)) = -softplus(z): stable for large |z|.
            log_p = ops.concatenate([-ops.softplus(y_pred), -ops.softplus(-y_pred)], axis=-1)
        else:
            p = ops.clip(y_pred, _EPS, 1.0 - _EPS)
            log_p = ops.log(ops.concatenate([1.0 - p, p], axis=-1))
    elif from_logits:
        log_p = ops.log_softmax(y_pred, axis=-1)
    else:
        log_p = ops.log(ops.clip(y_pred, _EPS, 1.0))
    return y_true, log_p


def _drop_background(*tensors):
    """Remove channel 0 (the background class) when there is more than one channel."""
    if tensors[0].shape[-1] == 1:
        return tensors  # one sigmoid channel *is* the foreground
    return tuple(t[..., 1:] for t in tensors)


def smooth_labels(one_hot, epsilon: float):
    """Label smoothing: move ``epsilon`` of the probability mass evenly onto all classes.

    Args:
        one_hot: one-hot targets ``(..., K)``.
        epsilon: amount of smoothing in ``[0, 1)``; 0 returns the targets unchanged.

    Returns:
        ``(1 - epsilon) * one_hot + epsilon / K``, same shape.
    """
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1); got {epsilon}")
    one_hot = ops.cast(one_hot, "float32")
    num_classes = one_hot.shape[-1]
    return one_hot * (1.0 - epsilon) + epsilon / num_classes


# ----------------------------------------------------------------------------------------------
# Segmentation losses (functional form)
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# Registration: image similarity and displacement-field regularisers
# ----------------------------------------------------------------------------------------------


def ssd_loss(y_true, y_pred):
    """Sum of squared differences, as a mean over voxels (mean squared error) per sample.

    Args:
        y_true: fixed image ``(B, *spatial, C)``. y_pred: warped moving image, same shape.

    Returns:
        float32 ``(B,)``.
    """
    diff = ops.cast(y_true, "float32") - ops.cast(y_pred, "float32")
    return ops.mean(ops.square(diff), axis=tuple(range(1, len(diff.shape))))


mse_loss = ssd_loss


def l1_loss(y_true, y_pred):
    """Mean absolute error over voxels per sample (the L1 term of pix2pix-style image synthesis).

    Args:
        y_true: target image ``(B, *spatial, C)``. y_pred: predicted image, same shape.

    Returns:
        float32 ``(B,)``.
    """
    diff = ops.cast(y_true, "float32") - ops.cast(y_pred, "float32")
    return ops.mean(ops.abs(diff), axis=tuple(range(1, len(diff.shape))))


mae_loss = l1_loss


def _window(window: int | Sequence[int], spatial_shape: Sequence[int | None]) -> tuple[int, ...]:
    rank = len(spatial_shape)
    size = (int(window),) * rank if isinstance(window, int) else tuple(int(w) for w in window)
    if len(size) != rank:
        raise ValueError(f"window {window} has {len(size)} sizes but the images have {rank} spatial axes")
    for w, s in zip(size, spatial_shape):
        if s is not None and w > s:
            raise ValueError(f"window {size} is larger than the image {tuple(spatial_shape)}; use a smaller window")
    return size


def local_ncc(y_true, y_pred, *, window: int | Sequence[int] = 9, eps: float = 1e-5):
    """Local (squared) normalised cross-correlation map, the VoxelMorph/DeepReg similarity.

    In every ``window`` neighbourhood ``ncc = cov(t, p)^2 / (var(t) var(p) + eps)``, in ``[0, 1]``;
    statistics come from box filters (average pooling, "valid" positions only).

    Args:
        y_true: fixed image ``(B, *spatial, C)``. y_pred: warped moving image, same shape.
        window: box size, an int for every axis or one per spatial axis (2D or 3D).
        eps: keeps flat regions (zero variance) finite.

    Returns:
        float32 ``(B, *valid_spatial, C)``.
    """
    t = ops.cast(y_true, "float32")
    p = ops.cast(y_pred, "float32")
    size = _window(window, t.shape[1:-1])

    def box(x):
        return ops.average_pool(x, pool_size=size, strides=1, padding="valid")

    mean_t, mean_p = box(t), box(p)
    cross = box(t * p) - mean_t * mean_p
    var_t = ops.maximum(box(t * t) - mean_t * mean_t, 0.0)
    var_p = ops.maximum(box(p * p) - mean_p * mean_p, 0.0)
    return ops.square(cross) / (var_t * var_p + eps)


def local_ncc_loss(y_true, y_pred, *, window: int | Sequence[int] = 9, eps: float = 1e-5):
    """Local normalised cross-correlation loss, ``1 - mean(local_ncc)``: 0 for locally identical images.

    Args:
        See :func:`local_ncc`.

    Returns:
        float32 ``(B,)`` in ``[0, 1]``.
    """
    ncc = local_ncc(y_true, y_pred, window=window, eps=eps)
    return 1.0 - ops.mean(ncc, axis=tuple(range(1, len(ncc.shape))))


def mutual_information(
    y_true,
    y_pred,
    *,
    num_bins: int = 23,
    sigma_ratio: float = 0.5,
    min_value: float = 0.0,
    max_value: float = 1.0,
):
    """Global mutual information from a Gaussian (Parzen-window) joint histogram, in nats.

    Intensities are clipped to ``[min_value, max_value]`` (normalise images to ``[0, 1]`` first) and
    each voxel is spread over ``num_bins`` bins with Gaussian weights of width
    ``sigma_ratio * bin spacing``, which makes the histogram differentiable (as in DeepReg).

    Args:
        y_true: fixed image ``(B, *spatial, C)``. y_pred: warped moving image, same shape.
        num_bins: histogram bins. sigma_ratio: Parzen width relative to the bin spacing.
        min_value, max_value: intensity range of the histogram.

    Returns:
        float32 ``(B,)``, >= 0; larger means more shared information.
    """
    if num_bins < 2 or max_value <= min_value:
        raise ValueError("mutual_information needs num_bins >= 2 and max_value > min_value")
    centres = ops.linspace(min_value, max_value, num_bins)
    sigma = sigma_ratio * (max_value - min_value) / (num_bins - 1)
    scale = 1.0 / (2.0 * sigma**2)

    def parzen(x):
        x = ops.clip(ops.cast(x, "float32"), min_value, max_value)
        x = ops.reshape(x, (ops.shape(x)[0], -1, 1))  # (B, N, 1)
        w = ops.exp(-scale * ops.square(x - centres))  # (B, N, bins)
        return w / ops.sum(w, axis=-1, keepdims=True)

    w_t, w_p = parzen(y_true), parzen(y_pred)
    n = ops.cast(ops.shape(w_t)[1], "float32")
    p_joint = ops.einsum("bni,bnj->bij", w_t, w_p) / n
    p_t = ops.mean(w_t, axis=1)
    p_p = ops.mean(w_p, axis=1)
    p_indep = ops.expand_dims(p_t, 2) * ops.expand_dims(p_p, 1)
    return ops.sum(p_joint * ops.log((p_joint + _EPS) / (p_indep + _EPS)), axis=(1, 2))


def global_mutual_information_loss(y_true, y_pred, **kwargs):
    """Negative global mutual information (minimise it to align images); see :func:`mutual_information`.

    Returns:
        float32 ``(B,)``.
    """
    return -mutual_information(y_true, y_pred, **kwargs)


def _central_difference(field, axis: int):
    """``(f[i+1] - f[i-1]) / 2`` along spatial ``axis``, on the interior of every spatial axis.

    Args:
        field: ``(B, *spatial, C)``. axis: 1 .. number of spatial axes.

    Returns:
        ``(B, *(spatial - 2), C)``.
    """
    rank = len(field.shape) - 2
    inner = [slice(1, -1)] * rank

    def take(axis_slice):
        index = list(inner)
        index[axis - 1] = axis_slice
        return field[(slice(None), *index, slice(None))]

    return (take(slice(2, None)) - take(slice(None, -2))) / 2.0


def _check_ddf(ddf, min_size: int):
    ddf = ops.cast(ddf, "float32")
    rank = len(ddf.shape) - 2
    if rank not in (2, 3) or ddf.shape[-1] != rank:
        raise ValueError(
            f"expected a displacement field (B, H, W, 2) or (B, D, H, W, 3); got shape {tuple(ddf.shape)}"
        )
    if any(s is not None and s < min_size for s in ddf.shape[1:-1]):
        raise ValueError(f"displacement field needs at least {min_size} voxels per axis; got {tuple(ddf.shape)}")
    return ddf, rank


def bending_energy(ddf):
    """Bending energy of a dense displacement field: mean of all squared second derivatives.

    ``sum_ij (d^2 u / dx_i dx_j)^2`` (mixed terms counted for both orders, i.e. twice), from central
    differences with unit voxel spacing, averaged over interior voxels and displacement components
    (DeepReg's definition). Zero for any affine field.

    Args:
        ddf: displacement field ``(B, H, W, 2)`` or ``(B, D, H, W, 3)``, at least 5 voxels per axis.

    Returns:
        float32 ``(B,)``.
    """
    ddf, rank = _check_ddf(ddf, 5)
    first = [_central_difference(ddf, i) for i in range(1, rank + 1)]
    energy = 0.0
    for i in range(rank):
        for j in range(rank):
            energy = energy + ops.square(_central_difference(first[i], j + 1))
    return ops.mean(energy, axis=tuple(range(1, rank + 2)))


def gradient_norm(ddf, *, norm: str = "l2"):
    """Diffusion regulariser: mean squared (``"l2"``) or absolute (``"l1"``) first derivatives of a field.

    Args:
        ddf: displacement field ``(B, H, W, 2)`` or ``(B, D, H, W, 3)``, at least 3 voxels per axis.
        norm: ``"l2"`` (sum of squared derivatives) or ``"l1"`` (sum of absolute derivatives).

    Returns:
        float32 ``(B,)``: per voxel ``sum_i |d u / dx_i|^q``, averaged over voxels and components.
    """
    if norm not in ("l1", "l2"):
        raise ValueError(f"norm must be 'l1' or 'l2'; got {norm!r}")
    ddf, rank = _check_ddf(ddf, 3)
    total = 0.0
    for i in range(1, rank + 1):
        d = _central_difference(ddf, i)
        total = total + (ops.square(d) if norm == "l2" else ops.abs(d))
    return ops.mean(total, axis=tuple(range(1, rank + 2)))


# ----------------------------------------------------------------------------------------------
# Generative models
# ----------------------------------------------------------------------------------------------


def kl_divergence(z_mean, z_log_var):
    """KL divergence of ``N(z_mean, exp(z_log_var))`` from ``N(0, I)``, summed over latent axes (VAE).

    Args:
        z_mean, z_log_var: ``(B, latent...)``.

    Returns:
        float32 ``(B,)``: ``-0.5 * sum(1 + log_var - mean^2 - exp(log_var))``.
    """
    z_mean = ops.cast(z_mean, "float32")
    z_log_var = ops.cast(z_log_var, "float32")
    kl = -0.5 * (1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))
    return ops.sum(kl, axis=tuple(range(1, len(kl.shape))))


# "minimax" is the generator loss of the original value function (Goodfellow et al. 2014); it
# saturates when the discriminator wins and is there to be compared with "non_saturating".
GAN_KINDS = ("non_saturating", "minimax", "least_squares", "wasserstein")


def _gan_kind(kind: str) -> str:
    if kind not in GAN_KINDS:
        raise ValueError(f"GAN loss kind must be one of {GAN_KINDS}; got {kind!r}")
    return kind


def gan_discriminator_loss(real_output, fake_output, *, kind: str = "non_saturating", from_logits: bool = True):
    """Discriminator (critic) loss on its outputs for real and generated samples.

    - ``"non_saturating"`` and ``"minimax"``: binary cross-entropy, ``-log D(x) - log(1 - D(G(z)))``
      (the negated value function ``V(D, G)``; the two kinds differ only in the generator's loss);
    - ``"least_squares"`` (LSGAN): ``0.5 (D(x) - 1)^2 + 0.5 D(G(z))^2`` on the raw outputs;
    - ``"wasserstein"`` (WGAN critic): ``mean D(G(z)) - mean D(x)``; add :func:`gradient_penalty`.

    Args:
        real_output, fake_output: discriminator outputs ``(B, ...)``.
        kind: one of ``GAN_KINDS``.
        from_logits: for ``"non_saturating"``: outputs are logits (``False``: probabilities).

    Returns:
        float32 scalar, averaged over the batch.
    """
    kind = _gan_kind(kind)
    real = ops.cast(real_output, "float32")
    fake = ops.cast(fake_output, "float32")
    if kind == "wasserstein":
        return ops.mean(fake) - ops.mean(real)
    if kind == "least_squares":
        return 0.5 * ops.mean(ops.square(real - 1.0)) + 0.5 * ops.mean(ops.square(fake))
    if from_logits:
        return ops.mean(ops.softplus(-real)) + ops.mean(ops.softplus(fake))
    real = ops.clip(real, _EPS, 1.0 - _EPS)
    fake = ops.clip(fake, _EPS, 1.0 - _EPS)
    return -ops.mean(ops.log(real)) - ops.mean(ops.log(1.0 - fake))


def gan_generator_loss(fake_output, *, kind: str = "non_saturating", from_logits: bool = True):
    """Generator loss on the discriminator's outputs for generated samples.

    - ``"non_saturating"``: ``-log D(G(z))`` (strong gradients when the discriminator wins);
    - ``"minimax"``: ``log(1 - D(G(z)))``, the value function's own term: its gradient with respect
      to the logit is ``-D(G(z))``, which vanishes exactly when the discriminator rejects the fakes;
    - ``"least_squares"``: ``0.5 (D(G(z)) - 1)^2``;
    - ``"wasserstein"``: ``-mean D(G(z))``.

    Args:
        fake_output: discriminator outputs ``(B, ...)``. kind, from_logits: see
            :func:`gan_discriminator_loss`.

    Returns:
        float32 scalar.
    """
    kind = _gan_kind(kind)
    fake = ops.cast(fake_output, "float32")
    if kind == "wasserstein":
        return -ops.mean(fake)
    if kind == "least_squares":
        return 0.5 * ops.mean(ops.square(fake - 1.0))
    if kind == "minimax":
        if from_logits:
            return -ops.mean(ops.softplus(fake))  # log(1 - sigmoid(a)) = -softplus(a)
        return ops.mean(ops.log(ops.clip(1.0 - fake, _EPS, 1.0)))
    if from_logits:
        return ops.mean(ops.softplus(-fake))
    return -ops.mean(ops.log(ops.clip(fake, _EPS, 1.0)))


def gradient_penalty(critic, real, fake, *, alpha=None, seed=None, target_norm: float = 1.0):
    """WGAN-GP gradient penalty: ``mean((||grad_x D(x_hat)||_2 - target_norm)^2)``.

    ``x_hat`` lies on random straight lines between real and generated samples (Gulrajani et al. 2017).
    Uses a TensorFlow gradient tape, so it runs with the TensorFlow backend (the kit's default).

    Args:
        critic: a callable model ``(B, ...) -> (B, ...)``.
        real, fake: real and generated batches of the same shape ``(B, ...)``.
        alpha: interpolation weights ``(B, 1, ..., 1)``; drawn uniformly from ``seed`` when ``None``.
        seed: an int or ``keras.random.SeedGenerator`` for ``alpha`` (pass a generator in a training loop
            so every step gets fresh weights).
        target_norm: the gradient norm the critic is pushed towards (1 for a 1-Lipschitz critic).

    Returns:
        float32 scalar.
    """
    import tensorflow as tf

    real = ops.cast(real, "float32")
    fake = ops.cast(fake, "float32")
    if alpha is None:
        shape = (ops.shape(real)[0],) + (1,) * (len(real.shape) - 1)
        alpha = keras.random.uniform(shape, seed=seed)
    x_hat = real + ops.cast(alpha, "float32") * (fake - real)
    with tf.GradientTape() as tape:
        tape.watch(x_hat)
        score = ops.cast(critic(x_hat, training=True), "float32")
    grads = tape.gradient(score, x_hat)
    norms = ops.sqrt(ops.sum(ops.square(grads), axis=tuple(range(1, len(grads.shape)))) + 1e-12)
    return ops.mean(ops.square(norms - target_norm))


# ----------------------------------------------------------------------------------------------
# Keras Loss classes
# ----------------------------------------------------------------------------------------------


class _FunctionLoss(keras.losses.Loss):
    """A ``keras.losses.Loss`` calling one of the functions above with fixed keyword arguments."""

    _function = None

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype=None, **kwargs):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        # Sequences become lists so the config is plain JSON.
        self._kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}

    def call(self, y_true, y_pred):
        return type(self)._function(y_true, y_pred, **self._kwargs)

    def get_config(self):
        return {**super().get_config(), **self._kwargs}


@keras.saving.register_keras_serializable(package="medkit")
class SoftDiceLoss(_FunctionLoss):
    """Soft Dice loss for ``compile``; arguments as in :func:`soft_dice_loss`."""

    _function = staticmethod(soft_dice_loss)

    def __init__(self, include_background=True, batch=False, smooth_nr=1e-5, smooth_dr=1e-5,
                 squared_pred=False, from_logits=False, name="soft_dice_loss", **base):
        super().__init__(name=name, include_background=include_background, batch=batch,
                         smooth_nr=smooth_nr, smooth_dr=smooth_dr, squared_pred=squared_pred,
                         from_logits=from_logits, **base)


@keras.saving.register_keras_serializable(package="medkit")
class GeneralizedDiceLoss(_FunctionLoss):
    """Generalised Dice loss for ``compile``; arguments as in :func:`generalized_dice_loss`."""

    _function = staticmethod(generalized_dice_loss)

    def __init__(self, include_background=True, batch=False, weight_type="square", smooth_nr=1e-5,
                 smooth_dr=1e-5, from_logits=False, name="generalized_dice_loss", **base):
        super().__init__(name=name, include_background=include_background, batch=batch,
                         weight_type=weight_type, smooth_nr=smooth_nr, smooth_dr=smooth_dr,
                         from_logits=from_logits, **base)


@keras.saving.register_keras_serializable(package="medkit")
class DiceCELoss(_FunctionLoss):
    """Dice + cross-entropy loss for ``compile``; arguments as in :func:`dice_ce_loss`."""

    _function = staticmethod(dice_ce_loss)

    def __init__(self, lambda_dice=1.0, lambda_ce=1.0, include_background=True, batch=False,
                 smooth_nr=1e-5, smooth_dr=1e-5, class_weights=None, label_smoothing=0.0,
                 from_logits=False, name="dice_ce_loss", **base):
        super().__init__(name=name, lambda_dice=lambda_dice, lambda_ce=lambda_ce,
                         include_background=include_background, batch=batch, smooth_nr=smooth_nr,
                         smooth_dr=smooth_dr, class_weights=class_weights,
                         label_smoothing=label_smoothing, from_logits=from_logits, **base)


@keras.saving.register_keras_serializable(package="medkit")
class CrossEntropyLoss(_FunctionLoss):
    """(Weighted, label-smoothed) cross-entropy for ``compile``; arguments as in :func:`cross_entropy`."""

    _function = staticmethod(cross_entropy)

    def __init__(self, class_weights=None, label_smoothing=0.0, from_logits=False,
                 name="cross_entropy_loss", **base):
        super().__init__(name=name, class_weights=class_weights, label_smoothing=label_smoothing,
                         from_logits=from_logits, **base)


@keras.saving.register_keras_serializable(package="medkit")
class FocalLoss(_FunctionLoss):
    """Focal loss for ``compile``; arguments as in :func:`focal_loss`."""

    _function = staticmethod(focal_loss)

    def __init__(self, gamma=2.0, alpha=None, from_logits=False, name="focal_loss", **base):
        super().__init__(name=name, gamma=gamma, alpha=alpha, from_logits=from_logits, **base)


@keras.saving.register_keras_serializable(package="medkit")
class TverskyLoss(_FunctionLoss):
    """Tversky loss for ``compile``; arguments as in :func:`tversky_loss`."""

    _function = staticmethod(tversky_loss)

    def __init__(self, alpha=0.5, beta=0.5, include_background=True, batch=False, smooth_nr=1e-5,
                 smooth_dr=1e-5, from_logits=False, name="tversky_loss", **base):
        super().__init__(name=name, alpha=alpha, beta=beta, include_background=include_background,
                         batch=batch, smooth_nr=smooth_nr, smooth_dr=smooth_dr,
                         from_logits=from_logits, **base)


@keras.saving.register_keras_serializable(package="medkit")
class SSDLoss(_FunctionLoss):
    """Sum of squared differences (mean squared error per sample) for ``compile``."""

    _function = staticmethod(ssd_loss)

    def __init__(self, name="ssd_loss", **base):
        super().__init__(name=name, **base)


@keras.saving.register_keras_serializable(package="medkit")
class L1Loss(_FunctionLoss):
    """Mean absolute error per sample for ``compile``; see :func:`l1_loss`."""

    _function = staticmethod(l1_loss)

    def __init__(self, name="l1_loss", **base):
        super().__init__(name=name, **base)


@keras.saving.register_keras_serializable(package="medkit")
class LocalNCCLoss(_FunctionLoss):
    """Local normalised cross-correlation loss for ``compile``; arguments as in :func:`local_ncc_loss`."""

    _function = staticmethod(local_ncc_loss)

    def __init__(self, window=9, eps=1e-5, name="local_ncc_loss", **base):
        super().__init__(name=name, window=window, eps=eps, **base)


@keras.saving.register_keras_serializable(package="medkit")
class GlobalMutualInformationLoss(_FunctionLoss):
    """Negative global mutual information for ``compile``; arguments as in :func:`mutual_information`."""

    _function = staticmethod(global_mutual_information_loss)

    def __init__(self, num_bins=23, sigma_ratio=0.5, min_value=0.0, max_value=1.0,
                 name="global_mutual_information_loss", **base):
        super().__init__(name=name, num_bins=num_bins, sigma_ratio=sigma_ratio, min_value=min_value,
                         max_value=max_value, **base)


class _RegulariserLoss(_FunctionLoss):
    """A displacement regulariser as a loss: ``y_pred`` is the field; ``y_true`` is ignored (pass zeros)."""

    def call(self, y_true, y_pred):
        return type(self)._function(y_pred, **self._kwargs)


@keras.saving.register_keras_serializable(package="medkit")
class BendingEnergyLoss(_RegulariserLoss):
    """Bending energy of the predicted displacement field (``y_true`` ignored); see :func:`bending_energy`."""

    _function = staticmethod(bending_energy)

    def __init__(self, name="bending_energy_loss", **base):
        super().__init__(name=name, **base)


@keras.saving.register_keras_serializable(package="medkit")
class GradientNormLoss(_RegulariserLoss):
    """Gradient norm of the predicted displacement field (``y_true`` ignored); see :func:`gradient_norm`."""

    _function = staticmethod(gradient_norm)

    def __init__(self, norm="l2", name="gradient_norm_loss", **base):
        super().__init__(name=name, norm=norm, **base)


LOSSES = {
    "dice": SoftDiceLoss,
    "generalized_dice": GeneralizedDiceLoss,
    "dice_ce": DiceCELoss,
    "cross_entropy": CrossEntropyLoss,
    "focal": FocalLoss,
    "tversky": TverskyLoss,
    "ssd": SSDLoss,
    "mse": SSDLoss,
    "l1": L1Loss,
    "mae": L1Loss,
    "lncc": LocalNCCLoss,
    "gmi": GlobalMutualInformationLoss,
    "bending_energy": BendingEnergyLoss,
    "gradient_norm": GradientNormLoss,
}


def get(name: str, **kwargs) -> keras.losses.Loss:
    """Build a loss by its short name (``LOSSES`` lists them), e.g. ``get("dice_ce", batch=True)``.

    Args:
        name: a key of ``LOSSES``.
        **kwargs: arguments of the loss class.

    Returns:
        A ``keras.losses.Loss`` instance.

    Raises:
        ValueError: for an unknown name.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[name](**kwargs)
