"""Registration losses: image similarity (SSD, L1, local NCC, mutual information) and
displacement-field regularisers (bending energy, gradient norm)."""

from __future__ import annotations

from collections.abc import Sequence

from keras import ops

from training.losses.core import _EPS, _RegulariserLoss, loss_class


def ssd_loss(y_true, y_pred):
    """Sum of squared differences, as a mean over voxels (mean squared error) per sample.

    Args:
        y_true: fixed image ``(B, *spatial, C)``. y_pred: warped moving image, same shape.

    Returns:
        float32 ``(B,)``.
    """
    diff = ops.cast(y_true, "float32") - ops.cast(y_pred, "float32")
    return ops.mean(ops.square(diff), axis=tuple(range(1, len(diff.shape))))


def l1_loss(y_true, y_pred):
    """Mean absolute error over voxels per sample (the L1 term of pix2pix-style image synthesis).

    Args:
        y_true: target image ``(B, *spatial, C)``. y_pred: predicted image, same shape.

    Returns:
        float32 ``(B,)``.
    """
    diff = ops.cast(y_true, "float32") - ops.cast(y_pred, "float32")
    return ops.mean(ops.abs(diff), axis=tuple(range(1, len(diff.shape))))


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



# One Keras class per loss for ``compile(loss=...)``; the options are the function's keywords.
SSDLoss = loss_class("SSDLoss", ssd_loss)
L1Loss = loss_class("L1Loss", l1_loss)
LocalNCCLoss = loss_class("LocalNCCLoss", local_ncc_loss)
GlobalMutualInformationLoss = loss_class("GlobalMutualInformationLoss", global_mutual_information_loss,
                                         options_of=mutual_information)
# The regularisers see only the predicted displacement field (``y_true`` is ignored).
BendingEnergyLoss = loss_class("BendingEnergyLoss", bending_energy, base=_RegulariserLoss)
GradientNormLoss = loss_class("GradientNormLoss", gradient_norm, base=_RegulariserLoss)
