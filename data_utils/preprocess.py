"""Preprocessing: orientation, spacing, intensities, cropping and padding, for volumes and batches.

Two kinds of function, named so you can tell them apart:

**NumPy, for whole volumes, offline** (before the data enters ``tf.data``; arrays are
unbatched, spatial axes first, e.g. ``(D, H, W)``):

- :func:`resample_to_spacing` (linear for images, nearest for labels), :func:`resize`
  (reorientation to RAS+ is ``data_utils.io.to_canonical``)
- :func:`zscore` (optionally over non-zero voxels only), :func:`percentile_scale`,
  :func:`window_ct` (Hounsfield units, presets in :data:`CT_WINDOWS`)
- :func:`foreground_bbox`, :func:`crop_to_foreground` (with a margin), :func:`pad_or_crop` (centred)

**TensorFlow graph ops, per batch inside ``tf.data`` or a model** (suffix ``_tf``; batched,
channels-last ``(B, H, W, C)`` or ``(B, D, H, W, C)``; statistics per sample and channel):

- :func:`zscore_tf`, :func:`percentile_scale_tf`, :func:`window_ct_tf`, :func:`pad_or_crop_tf`
  (resampling of batches is ``data_utils.spatial``, the one resampler of tensors)

The two agree: each ``_tf`` op gives the NumPy function's result on every sample (tested).
"""

from __future__ import annotations

from collections.abc import Sequence


import numpy as np
import tensorflow as tf
from scipy import ndimage

from data_utils import io

# (centre, width) in Hounsfield units of common CT display windows.
CT_WINDOWS = {
    "soft_tissue": (40.0, 400.0),
    "abdomen": (40.0, 400.0),
    "liver": (60.0, 160.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "mediastinum": (50.0, 350.0),
}


# --------------------------------------------------------------------------------------------
# NumPy: whole volumes
# --------------------------------------------------------------------------------------------


def resample_to_spacing(
    array: np.ndarray,
    spacing: Sequence[float],
    target_spacing: Sequence[float],
    *,
    is_label: bool = False,
) -> tuple[np.ndarray, tuple[float, ...]]:
    """Resample a volume to a new voxel spacing, keeping its physical extent.

    Images use linear interpolation, label maps nearest neighbour (labels stay integers from the
    original set). The new shape is ``round(shape * spacing / target_spacing)``; voxel edges of the
    first and last voxels stay where they were (``scipy.ndimage.zoom`` with ``grid_mode=True``).

    Args:
        array: ``(D, H, W)`` (or any rank matching ``spacing``).
        spacing: current voxel size in mm per axis.
        target_spacing: wanted voxel size in mm per axis.
        is_label: nearest-neighbour interpolation for label maps.

    Returns:
        ``(resampled array, actual spacing)``; the actual spacing differs from the target only by
        the rounding of the shape.
    """
    spacing = np.asarray(spacing, np.float64)
    target = np.asarray(target_spacing, np.float64)
    if spacing.shape != (array.ndim,) or target.shape != (array.ndim,):
        raise ValueError(f"`spacing` and `target_spacing` need {array.ndim} values, got {tuple(spacing)} and {tuple(target)}.")
    if np.any(spacing <= 0) or np.any(target <= 0):
        raise ValueError("voxel spacings must be positive.")
    shape = np.maximum(1, np.round(np.array(array.shape) * spacing / target)).astype(int)
    out = resize(array, tuple(shape), is_label=is_label)
    actual = tuple(float(v) for v in spacing * np.array(array.shape) / shape)
    return out, actual


def resize(array: np.ndarray, shape: Sequence[int], *, is_label: bool = False) -> np.ndarray:
    """Resize an unbatched array to exactly ``shape`` (linear, or nearest for labels).

    Uses pixel-edge alignment (``grid_mode=True``), the same convention as ``tf.image.resize``
    with half-pixel centres.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != array.ndim:
        raise ValueError(f"`shape` {shape} must have one size per axis of an array of shape {array.shape}.")
    factors = [t / n for t, n in zip(shape, array.shape)]
    order = 0 if is_label else 1
    source = array if is_label else np.asarray(array, np.float32)
    out = ndimage.zoom(source, factors, order=order, mode="nearest", grid_mode=True)
    return pad_or_crop(out, shape)  # zoom may be off by one voxel from rounding


def zscore(array: np.ndarray, *, nonzero: bool = False, eps: float = 1e-8) -> np.ndarray:
    """Normalise to zero mean and unit standard deviation.

    Args:
        array: image of any shape.
        nonzero: compute the statistics over non-zero voxels only and leave zero voxels at 0
            (for images whose background was masked to 0, e.g. skull-stripped brains).
        eps: added to the standard deviation so a constant image gives zeros, not NaN.

    Returns:
        float32 array, same shape.
    """
    array = np.asarray(array, np.float32)
    if not nonzero:
        return ((array - array.mean()) / (array.std() + eps)).astype(np.float32)
    mask = array != 0
    if not mask.any():
        return np.zeros_like(array)
    values = array[mask]
    out = np.zeros_like(array)
    out[mask] = (values - values.mean()) / (values.std() + eps)
    return out


def percentile_scale(
    array: np.ndarray,
    lower: float = 0.5,
    upper: float = 99.5,
    out_range=(0.0, 1.0),
    clip: bool = True,
) -> np.ndarray:
    """Map the ``lower``..``upper`` percentiles of the intensities linearly to ``out_range``.

    Robust to a few extreme voxels (MR hot spots), unlike min-max scaling.

    Returns:
        float32 array; with ``clip`` values outside the percentiles are clipped to ``out_range``.
    """
    if not 0.0 <= lower < upper <= 100.0:
        raise ValueError(f"need 0 <= lower < upper <= 100, got lower={lower}, upper={upper}.")
    array = np.asarray(array, np.float32)
    lo, hi = np.percentile(array, [lower, upper])
    a, b = out_range
    out = (array - lo) / max(hi - lo, 1e-8) * (b - a) + a
    return np.clip(out, min(a, b), max(a, b)).astype(np.float32) if clip else out.astype(np.float32)


def _window(center, width, window):
    if window is not None:
        if window not in CT_WINDOWS:
            raise ValueError(f"unknown CT window {window!r}; choose from {sorted(CT_WINDOWS)}.")
        center, width = CT_WINDOWS[window]
    if width <= 0:
        raise ValueError(f"window `width` must be positive, got {width}.")
    return float(center), float(width)


def window_ct(
    array: np.ndarray,
    center: float = 40.0,
    width: float = 400.0,
    *,
    window: str | None = None,
    out_range=(0.0, 1.0),
) -> np.ndarray:
    """Apply a CT display window: Hounsfield units in ``[center - width/2, center + width/2]`` -> ``out_range``.

    Args:
        array: CT intensities in HU.
        center, width: the window in HU (default soft tissue, 40/400).
        window: a preset name from :data:`CT_WINDOWS` (overrides ``center``/``width``).
        out_range: output range; values outside the window are clipped.

    Returns:
        float32 array.
    """
    center, width = _window(center, width, window)
    a, b = out_range
    out = (np.asarray(array, np.float32) - (center - width / 2.0)) / width
    return (np.clip(out, 0.0, 1.0) * (b - a) + a).astype(np.float32)


def foreground_bbox(mask: np.ndarray, margin: int | Sequence[int] = 0) -> tuple[slice, ...]:
    """Bounding box of the non-zero voxels of ``mask``, grown by ``margin`` voxels and clipped.

    Returns:
        a tuple of slices, one per axis (the whole array when the mask is empty).
    """
    mask = np.asarray(mask) != 0
    margin = (int(margin),) * mask.ndim if np.isscalar(margin) else tuple(int(m) for m in margin)
    if not mask.any():
        return tuple(slice(0, n) for n in mask.shape)
    box = []
    for axis, n in enumerate(mask.shape):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(0, hits[0] - margin[axis]), min(n, hits[-1] + 1 + margin[axis])))
    return tuple(box)


def crop_to_foreground(
    image: np.ndarray,
    label: np.ndarray | None = None,
    *,
    margin: int | Sequence[int] = 0,
    threshold: float | None = None,
):
    """Crop an image (and its label) to the bounding box of the foreground plus a margin.

    The foreground is ``label > 0`` when a label is given, otherwise ``image > threshold``
    (default: above the image's minimum, i.e. everything but the background padding).

    Returns:
        ``(image_crop, label_crop, box)`` where ``box`` is the tuple of slices used
        (``label_crop`` is None without a label).
    """
    if label is not None:
        if np.shape(label) != np.shape(image):
            raise ValueError(f"label shape {np.shape(label)} != image shape {np.shape(image)}.")
        mask = np.asarray(label) > 0
    else:
        mask = np.asarray(image) > (np.min(image) if threshold is None else threshold)
    box = foreground_bbox(mask, margin)
    return image[box], (label[box] if label is not None else None), box


def pad_or_crop(array: np.ndarray, shape: Sequence[int], value: float = 0) -> np.ndarray:
    """Centre-pad (with ``value``) or centre-crop the leading axes of ``array`` to ``shape``.

    Axes beyond ``len(shape)`` (e.g. channels) are left alone. When the difference is odd the
    extra voxel is padded after / cropped from the end, like ``tf.image.resize_with_crop_or_pad``.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) > array.ndim:
        raise ValueError(f"`shape` {shape} has more axes than the array {array.shape}.")
    crops, pads = [], []
    for n, t in zip(array.shape, shape):
        start = max(0, (n - t) // 2)
        crops.append(slice(start, start + min(n, t)))
        before = max(0, (t - n) // 2)
        pads.append((before, max(0, t - n) - before))
    out = array[tuple(crops)]
    pads += [(0, 0)] * (array.ndim - len(shape))
    return np.pad(out, pads, constant_values=value) if any(sum(p) for p in pads) else out


# --------------------------------------------------------------------------------------------
# TensorFlow graph ops: batched, channels-last
# --------------------------------------------------------------------------------------------


def _spatial_axes(x: tf.Tensor) -> list[int]:
    if x.shape.rank not in (4, 5):
        raise ValueError(f"expected a batched channels-last tensor (B, H, W, C) or (B, D, H, W, C), got shape {x.shape}.")
    return list(range(1, x.shape.rank - 1))


def zscore_tf(x, *, nonzero: bool = False, eps: float = 1e-8) -> tf.Tensor:
    """Per-sample, per-channel z-score of a batch (graph op; see :func:`zscore`).

    Args:
        x: ``(B, *spatial, C)``.
        nonzero: statistics over non-zero voxels only; zero voxels stay 0.

    Returns:
        float32 tensor, same shape.
    """
    x = tf.convert_to_tensor(x, tf.float32)
    axes = _spatial_axes(x)
    if not nonzero:
        mean, var = tf.nn.moments(x, axes=axes, keepdims=True)
        return (x - mean) / (tf.sqrt(var) + eps)
    mask = tf.cast(tf.not_equal(x, 0.0), tf.float32)
    count = tf.maximum(tf.reduce_sum(mask, axis=axes, keepdims=True), 1.0)
    mean = tf.reduce_sum(x * mask, axis=axes, keepdims=True) / count
    var = tf.reduce_sum(tf.square(x - mean) * mask, axis=axes, keepdims=True) / count
    return (x - mean) / (tf.sqrt(var) + eps) * mask


def _percentile_tf(flat: tf.Tensor, q: float) -> tf.Tensor:
    """Percentile along axis 1 of ``(B, N, C)`` with linear interpolation (NumPy's default)."""
    values = tf.sort(flat, axis=1)
    n = tf.cast(tf.shape(values)[1], tf.float32)
    position = q / 100.0 * (n - 1.0)
    low = tf.cast(tf.floor(position), tf.int32)
    high = tf.minimum(low + 1, tf.shape(values)[1] - 1)
    frac = position - tf.floor(position)
    return tf.gather(values, low, axis=1) * (1.0 - frac) + tf.gather(values, high, axis=1) * frac


def percentile_scale_tf(
    x,
    lower: float = 0.5,
    upper: float = 99.5,
    out_range=(0.0, 1.0),
    clip: bool = True,
) -> tf.Tensor:
    """Per-sample, per-channel percentile scaling of a batch (graph op; see :func:`percentile_scale`)."""
    if not 0.0 <= lower < upper <= 100.0:
        raise ValueError(f"need 0 <= lower < upper <= 100, got lower={lower}, upper={upper}.")
    x = tf.convert_to_tensor(x, tf.float32)
    _spatial_axes(x)
    channels = x.shape[-1]
    flat = tf.reshape(x, [tf.shape(x)[0], -1, channels])
    lo = _percentile_tf(flat, lower)
    hi = _percentile_tf(flat, upper)
    shape = [-1] + [1] * (x.shape.rank - 2) + [channels]
    lo, hi = tf.reshape(lo, shape), tf.reshape(hi, shape)
    a, b = (float(v) for v in out_range)
    out = (x - lo) / tf.maximum(hi - lo, 1e-8) * (b - a) + a
    return tf.clip_by_value(out, min(a, b), max(a, b)) if clip else out


def window_ct_tf(
    x,
    center: float = 40.0,
    width: float = 400.0,
    *,
    window: str | None = None,
    out_range=(0.0, 1.0),
) -> tf.Tensor:
    """CT windowing as a graph op (elementwise, any shape; see :func:`window_ct`)."""
    center, width = _window(center, width, window)
    a, b = (float(v) for v in out_range)
    out = (tf.convert_to_tensor(x, tf.float32) - (center - width / 2.0)) / width
    return tf.clip_by_value(out, 0.0, 1.0) * (b - a) + a


def pad_or_crop_tf(x, shape: Sequence[int], value: float = 0.0) -> tf.Tensor:
    """Centre-pad or centre-crop the spatial axes of a batch to ``shape`` (graph op; see :func:`pad_or_crop`).

    Args:
        x: ``(B, *spatial, C)``.
        shape: target spatial shape, ``(H, W)`` or ``(D, H, W)``.

    Returns:
        ``(B, *shape, C)``.
    """
    x = tf.convert_to_tensor(x)
    axes = _spatial_axes(x)
    if len(shape) != len(axes):
        raise ValueError(f"`shape` {tuple(shape)} must have {len(axes)} sizes for input of shape {x.shape}.")
    dynamic = tf.shape(x)
    begin, size, paddings = [0], [-1], [[0, 0]]
    for axis, target in zip(axes, shape):
        n = dynamic[axis]
        begin.append(tf.maximum(0, (n - target) // 2))
        size.append(tf.minimum(n, target))
        before = tf.maximum(0, (target - n) // 2)
        paddings.append([before, tf.maximum(0, target - n) - before])
    begin.append(0)
    size.append(-1)
    paddings.append([0, 0])
    out = tf.slice(x, tf.stack(begin), tf.stack(size))
    out = tf.pad(out, tf.stack(paddings), constant_values=tf.cast(value, x.dtype))
    return tf.ensure_shape(out, [x.shape[0], *shape, x.shape[-1]])
