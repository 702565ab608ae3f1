"""Intensity augmentations (image only): bias field, noise, gamma, contrast, histogram shift,
blur, low resolution and cutout."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from data_utils import spatial as sp
from data_utils.augment.seeding import (
    no_autograph,
    _batch_and_seeds,
    _apply_mask,
    _batch_size,
    _check_prob,
    _normal,
    _normal_pair,
    _pair,
    _range,
    _select,
    _uniform,
    spatial_rank,
    split_seed,
)


def _legendre_basis(n: int, degree: int) -> tf.Tensor:
    """Legendre polynomials P_0..P_degree sampled on linspace(-1, 1, n): shape ``(n, degree + 1)``."""
    x = np.linspace(-1.0, 1.0, n)
    basis = np.stack(
        [np.polynomial.legendre.legval(x, np.eye(degree + 1)[i]) for i in range(degree + 1)], axis=-1
    )
    return tf.constant(basis, dtype=tf.float32)


def _bias_log_field(seed, batch, spatial_shape, degree, coeff_range) -> tf.Tensor:
    """Random log bias field ``(B, *spatial)``: a polynomial of total degree <= ``degree``."""
    rank = len(spatial_shape)
    # One coefficient per product P_i(z) P_j(y) P_k(x) with i + j + k <= degree (as in MONAI).
    grids = np.meshgrid(*[np.arange(degree + 1)] * rank, indexing="ij")
    allowed = tf.constant(sum(grids) <= degree, dtype=tf.float32)
    coeffs = _uniform(seed, [batch] + [degree + 1] * rank, *coeff_range) * allowed
    bases = [_legendre_basis(n, degree) for n in spatial_shape]
    if rank == 2:
        return tf.einsum("bij,yi,xj->byx", coeffs, bases[0], bases[1])
    # Contract one axis at a time: cheaper than a single 4-operand einsum on 96^3 volumes.
    t = tf.einsum("bijk,xk->bijx", coeffs, bases[2])
    t = tf.einsum("bijx,yj->biyx", t, bases[1])
    return tf.einsum("biyx,zi->bzyx", t, bases[0])


@no_autograph
def bias_field(image, seed, prob: float = 1.0, degree: int = 3, coeff_range=(0.0, 0.1)) -> tf.Tensor:
    """Multiply by a smooth random MR bias field ``exp(polynomial)`` (MONAI ``RandBiasField``).

    The log field is a sum of products of Legendre polynomials over the normalised coordinates
    ``[-1, 1]`` with total degree <= ``degree``; each coefficient is uniform in ``coeff_range``,
    drawn per sample. All channels of a sample share the field (MONAI does the same).

    Args:
        image: float tensor ``(B, *spatial, C)``, 2D or 3D.
        seed: stateless seed, shape-[2] int tensor or int.
        prob: probability that each sample is augmented.
        degree: maximum total polynomial degree (>= 1).
        coeff_range: ``(low, high)`` range of the coefficients; ``(0, 0)`` gives the identity.

    Returns:
        ``image * field``, same shape and dtype float32.
    """
    _check_prob(prob)
    if int(degree) < 1:
        raise ValueError(f"`degree` must be >= 1, got {degree}.")
    coeff_range = _range(coeff_range, "coeff_range")
    image = tf.convert_to_tensor(image, tf.float32)
    spatial_rank(image)
    seeds = split_seed(seed, 2)
    batch = _batch_size(image)
    log_field = _bias_log_field(seeds[0], batch, image.shape[1:-1], int(degree), coeff_range)
    out = image * tf.exp(log_field)[..., None]
    return _select(_apply_mask(seeds[1], batch, prob), out, image)


@no_autograph
def rician_noise(
    image, seed, prob: float = 1.0, mean: float = 0.0, std: float = 1.0, relative: bool = False,
    sample_std: bool = True, channel_wise: bool = False,
) -> tf.Tensor:
    """Add Rician noise, the noise of MR magnitude images (MONAI ``RandRicianNoise``).

    ``out = sqrt((image + n1)^2 + n2^2)`` with ``n1, n2 ~ N(mean, sigma)`` independent per voxel.
    ``sigma`` is uniform in ``[0, std]`` per sample when ``sample_std`` (else ``std``); with
    ``relative`` it is multiplied by the standard deviation of the sample's intensities.
    With ``channel_wise`` each channel gets its own ``sigma`` (and its own statistics).

    Args:
        image: float tensor ``(B, *spatial, C)``.
        seed: stateless seed, shape-[2] int tensor or int.
        prob: probability that each sample is augmented.
        mean, std: mean of the Gaussian components and (the upper bound of) their std.
        relative: scale ``sigma`` by the image's intensity std.
        sample_std: draw ``sigma`` uniformly from ``[0, std]`` instead of using ``std``.
        channel_wise: draw ``sigma`` per channel rather than per sample.

    Returns:
        Noisy image, same shape, float32, non-negative where noise was added.
    """
    _check_prob(prob)
    image, rank, batch, seeds = _batch_and_seeds(image, seed, 4)
    sigma_shape = [batch] + [1] * rank + [image.shape[-1] if channel_wise else 1]
    sigma = _uniform(seeds[0], sigma_shape, 0.0, std) if sample_std else tf.fill(sigma_shape, float(std))
    if relative:
        axes = list(range(1, rank + 1)) if channel_wise else list(range(1, rank + 2))
        sigma = sigma * tf.math.reduce_std(image, axis=axes, keepdims=True)
    z1, z2 = _normal_pair(seeds[1], tf.shape(image))
    out = tf.sqrt(tf.square(image + mean + sigma * z1) + tf.square(mean + sigma * z2))
    return _select(_apply_mask(seeds[3], batch, prob), out, image)


@no_autograph
def gaussian_noise(image, seed, prob: float = 1.0, mean: float = 0.0, std: float = 0.1, sample_std: bool = True):
    """Add Gaussian noise ``N(mean, sigma)`` (MONAI ``RandGaussianNoise``).

    Args:
        image: ``(B, *spatial, C)``.
        seed: stateless seed. prob: per-sample probability.
        mean, std: noise mean and (the upper bound of) its std.
        sample_std: draw ``sigma`` uniformly from ``[0, std]`` per sample (MONAI's default).

    Returns:
        Noisy image, same shape, float32.
    """
    _check_prob(prob)
    image, rank, batch, seeds = _batch_and_seeds(image, seed, 3)
    shape = [batch] + [1] * (rank + 1)
    sigma = _uniform(seeds[0], shape, 0.0, std) if sample_std else tf.fill(shape, float(std))
    out = image + mean + sigma * _normal(seeds[1], tf.shape(image))
    return _select(_apply_mask(seeds[2], batch, prob), out, image)


@no_autograph
def speckle_noise(image, seed, prob: float = 1.0, std=(0.0, 0.2)):
    """Multiply by ``1 + n``, ``n ~ N(0, sigma)``: the multiplicative speckle of ultrasound images.

    Args:
        image: ``(B, *spatial, C)``.
        seed: stateless seed. prob: per-sample probability.
        std: ``(low, high)`` range of ``sigma``, drawn per sample; ``0`` gives the identity.

    Returns:
        Speckled image, same shape, float32.
    """
    _check_prob(prob)
    low, high = _range(std, "std")
    image, rank, batch, seeds = _batch_and_seeds(image, seed, 3)
    sigma = _uniform(seeds[0], [batch] + [1] * (rank + 1), low, high)
    out = image * (1.0 + sigma * _normal(seeds[1], tf.shape(image)))
    return _select(_apply_mask(seeds[2], batch, prob), out, image)


@no_autograph
def ct_window(image, seed, prob: float = 1.0, center: float = 40.0, width: float = 400.0, window: str | None = None,
              center_shift: float = 0.0, width_scale: float = 0.0, out_range=(0.0, 1.0)):
    """CT windowing in Hounsfield units, with a random window per sample.

    Maps ``[c - w/2, c + w/2]`` HU linearly onto ``out_range`` and clips outside, with the window's
    centre ``c = center + U(-center_shift, center_shift)`` HU and width
    ``w = width * (1 + U(-width_scale, width_scale))`` drawn per sample. Every sample is windowed (the
    network needs the same input range); ``prob`` chooses which samples get a jittered window, the
    others the nominal one. Jitter mimics the spread of calibration and reconstruction kernels
    between scanners and of the windows radiologists pick. With ``center_shift = width_scale = 0`` it
    equals :func:`data_utils.preprocess.window_ct_tf` (the identity on a preprocessed image).

    Args:
        image: ``(B, *spatial, C)`` in HU.
        seed: stateless seed. prob: per-sample probability of a jittered window.
        center, width: the nominal window in HU (soft tissue 40/400 by default).
        window: a preset name from :data:`data_utils.preprocess.CT_WINDOWS` (overrides center/width).
        center_shift: HU; ``v`` means a shift ``U(-v, v)``.
        width_scale: relative; ``v`` means a factor ``1 + U(-v, v)``, with ``0 <= v < 1``.
        out_range: ``(low, high)`` of the output.

    Returns:
        The windowed image, float32, same shape, values in ``out_range``.
    """
    from data_utils.preprocess import CT_WINDOWS

    _check_prob(prob)
    if window is not None:
        if window not in CT_WINDOWS:
            raise ValueError(f"unknown CT window {window!r}; choose from {sorted(CT_WINDOWS)}.")
        center, width = CT_WINDOWS[window]
    if width <= 0 or center_shift < 0 or not 0 <= width_scale < 1:
        raise ValueError(
            f"ct_window needs width > 0, center_shift >= 0 and 0 <= width_scale < 1; got {width}, {center_shift}, {width_scale}."
        )
    low, high = _pair(out_range, "out_range") if isinstance(out_range, (int, float)) else _range(out_range, "out_range")
    image, rank, batch, seeds = _batch_and_seeds(image, seed, 3)
    jitter = tf.cast(_apply_mask(seeds[2], batch, prob), tf.float32)
    shape = [batch] + [1] * (rank + 1)
    c = center + tf.reshape(jitter * _uniform(seeds[0], [batch], -center_shift, center_shift), shape)
    w = width * (1.0 + tf.reshape(jitter * _uniform(seeds[1], [batch], -width_scale, width_scale), shape))
    unit = tf.clip_by_value((image - (c - w / 2.0)) / w, 0.0, 1.0)
    return low + (high - low) * unit


def _minmax(image, rank):
    axes = list(range(1, rank + 2))
    lo = tf.reduce_min(image, axis=axes, keepdims=True)
    hi = tf.reduce_max(image, axis=axes, keepdims=True)
    return lo, hi


@no_autograph
def gamma(image, seed, prob: float = 1.0, gamma_range=(0.5, 4.5)):
    """Random gamma on the min-max normalised intensities (MONAI ``RandAdjustContrast``).

    ``out = ((x - min) / (max - min + 1e-7)) ** g * (max - min) + min`` with ``g`` uniform in
    ``gamma_range`` per sample; min and max are per sample over all channels. ``g = 1`` is the identity.

    Args:
        image: ``(B, *spatial, C)``. seed: stateless seed. prob: per-sample probability.
        gamma_range: ``(low, high)`` range of the exponent (> 0).

    Returns:
        Image, same shape and intensity range, float32.
    """
    _check_prob(prob)
    low, high = _range(gamma_range, "gamma_range")
    if low <= 0:
        raise ValueError(f"`gamma_range` must be positive, got {gamma_range}.")
    image, rank, batch, seeds = _batch_and_seeds(image, seed, 2)
    g = _uniform(seeds[0], [batch] + [1] * (rank + 1), low, high)
    lo, hi = _minmax(image, rank)
    span = hi - lo
    # x ** g as exp(g log x): 5x faster than tf.pow on CPU; log(0) = -inf gives 0 ** g = 0.
    unit = tf.maximum((image - lo) / (span + 1e-7), 0.0)
    out = tf.exp(g * tf.math.log(unit)) * span + lo
    return _select(_apply_mask(seeds[1], batch, prob), out, image)


@no_autograph
def brightness(image, seed, prob: float = 1.0, offset=0.1):
    """Add a random offset per sample (MONAI ``RandShiftIntensity``).

    Args:
        image: ``(B, *spatial, C)``. seed: stateless seed. prob: per-sample probability.
        offset: ``v`` for ``U(-v, v)`` or a ``(low, high)`` range.
    """
    _check_prob(prob)
    low, high = _pair(offset, "offset")
    image, rank, batch, seeds = _batch_and_seeds(image, seed, 2)
    out = image + _uniform(seeds[0], [batch] + [1] * (rank + 1), low, high)
    return _select(_apply_mask(seeds[1], batch, prob), out, image)


@no_autograph
def contrast(image, seed, prob: float = 1.0, factor=(0.75, 1.25)):
    """Scale intensities about the per-sample, per-channel mean: ``(x - mean) * f + mean``.

    Like ``tf.image.random_contrast``; MONAI's ``RandScaleIntensity`` scales about 0 instead.

    Args:
        image: ``(B, *spatial, C)``. seed: stateless seed. prob: per-sample probability.
        factor: ``(low, high)`` range of ``f``; ``1`` is the identity.
    """
    _check_prob(prob)
    low, high = _range(factor, "factor")
    image, rank, batch, seeds = _batch_and_seeds(image, seed, 2)
    f = _uniform(seeds[0], [batch] + [1] * (rank + 1), low, high)
    mean = tf.reduce_mean(image, axis=list(range(1, rank + 1)), keepdims=True)
    out = (image - mean) * f + mean
    return _select(_apply_mask(seeds[1], batch, prob), out, image)


@no_autograph
def histogram_shift(image, seed, prob: float = 1.0, num_control_points: int = 10):
    """Random monotone piecewise-linear intensity remapping (MONAI ``RandHistogramShift``).

    Control points are evenly spaced over each sample's ``[min, max]``; their targets are moved by up
    to half a spacing (independently, which keeps the map monotone), the end points stay fixed.
    MONAI draws the inner targets one after the other between their neighbours; the spread is similar.

    Args:
        image: ``(B, *spatial, C)``. seed: stateless seed. prob: per-sample probability.
        num_control_points: number of control points (>= 3).
    """
    _check_prob(prob)
    n = int(num_control_points)
    if n < 3:
        raise ValueError(f"`num_control_points` must be >= 3, got {num_control_points}.")
    image, rank, batch, seeds = _batch_and_seeds(image, seed, 2)
    ref = tf.linspace(0.0, 1.0, n)  # (n,)
    jitter = _uniform(seeds[0], [batch, n], -0.5, 0.5) / (n - 1)
    inner = tf.concat([tf.zeros([1]), tf.ones([n - 2]), tf.zeros([1])], axis=0)
    target = ref[None] + jitter * inner[None]  # (B, n), monotone, ends fixed
    lo, hi = _minmax(image, rank)
    t = (image - lo) / (hi - lo + 1e-7) * (n - 1)  # position in control-point units
    seg = tf.clip_by_value(tf.floor(t), 0.0, n - 2.0)
    frac = t - seg
    seg = tf.cast(seg, tf.int32)
    flat_seg = tf.reshape(seg, [batch, -1])
    y0 = tf.reshape(tf.gather(target, flat_seg, batch_dims=1), tf.shape(image))
    y1 = tf.reshape(tf.gather(target, flat_seg + 1, batch_dims=1), tf.shape(image))
    out = (y0 + (y1 - y0) * frac) * (hi - lo) + lo
    return _select(_apply_mask(seeds[1], batch, prob), out, image)



def _gaussian_taps(sigma, radius):
    """Per-sample normalised Gaussian taps ``(B, 2 * radius + 1)`` for sigmas ``(B,)``."""
    offsets = tf.range(-radius, radius + 1, dtype=tf.float32)
    s = tf.maximum(sigma, 1e-3)[:, None]
    w = tf.exp(-0.5 * tf.square(offsets[None] / s))
    return w / tf.reduce_sum(w, axis=1, keepdims=True)


def _tap_matrices(n: int, radius: int, padding: str) -> np.ndarray:
    """Static ``(2r+1, n, n)`` one-hot matrices: ``P[t, i, j] = 1`` if tap ``t`` of output ``i`` reads ``j``.

    ``"SYMMETRIC"`` mirrors at the borders (like ``tf.pad``'s symmetric mode), ``"CONSTANT"`` drops
    taps outside (zero padding).
    """
    taps = np.zeros((2 * radius + 1, n, n), "float32")
    for t, offset in enumerate(range(-radius, radius + 1)):
        for i in range(n):
            j = i + offset
            if padding == "SYMMETRIC":
                period = 2 * n
                j = j % period
                j = period - 1 - j if j >= n else j
            elif not 0 <= j < n:
                continue
            taps[t, i, j] += 1.0
    return taps


def _interpolation_matrix(n_out: int, n_in: int, ratio: float) -> np.ndarray:
    """Static ``(n_out, n_in)`` linear-interpolation matrix reading input ``i * ratio`` (border clamp)."""
    m = np.zeros((n_out, n_in), "float32")
    for i in range(n_out):
        c = min(max(i * ratio, 0.0), n_in - 1.0)
        lo = int(np.floor(c))
        hi = min(lo + 1, n_in - 1)
        m[i, lo] += 1.0 - (c - lo)
        m[i, hi] += c - lo
    return m


def _along_axis(x, matrix, axis: int):
    """Apply ``(B, n_out, n_in)`` or ``(n_out, n_in)`` matrices along spatial axis ``axis`` of ``x``."""
    letters = "zyx"[3 - (x.shape.rank - 2):]
    src = "b" + letters + "c"
    dst = src.replace(letters[axis], "o")
    m = ("b" if matrix.shape.rank == 3 else "") + "o" + letters[axis]
    return tf.einsum(f"{m},{src}->{dst}", matrix, x)


@no_autograph
def smooth(image, sigma, radius: int, padding: str = "SYMMETRIC", upsample=None):
    """Separable Gaussian smoothing with a different sigma per sample (and per axis).

    Each axis is one batched matrix product with a banded Gaussian matrix: fast on CPU and under
    XLA, and it lets a following linear upsampling (``upsample``) ride in the same product.

    Args:
        image: ``(B, *spatial, C)``.
        sigma: ``(B,)`` or ``(B, rank)`` standard deviations in voxels (None: no smoothing).
        radius: kernel half-width in voxels (static).
        padding: ``"SYMMETRIC"`` mirrors at the borders, ``"CONSTANT"`` pads zeros.
        upsample: optional ``(out_shape, ratios)``: afterwards interpolate linearly to ``out_shape``
            reading input index ``i * ratio`` on each axis.

    Returns:
        Smoothed image ``(B, *spatial, C)`` (or ``(B, *out_shape, C)``).
    """
    rank = spatial_rank(image)
    if sigma is not None:
        sigma = tf.convert_to_tensor(sigma, tf.float32)
        if sigma.shape.rank == 1:
            sigma = tf.tile(sigma[:, None], [1, rank])
    out = image
    for axis in range(rank):
        n = int(image.shape[axis + 1])
        matrix = None
        r = min(int(radius), n - 1)
        if sigma is not None and r > 0:
            taps = _gaussian_taps(sigma[:, axis], r)  # (B, 2r+1)
            matrix = tf.einsum("bt,tij->bij", taps, tf.constant(_tap_matrices(n, r, padding)))
        if upsample is not None:
            out_shape, ratios = upsample
            if int(out_shape[axis]) != n or float(ratios[axis]) != 1.0:
                up = tf.constant(_interpolation_matrix(int(out_shape[axis]), n, float(ratios[axis])))
                matrix = up if matrix is None else tf.einsum("oi,bij->boj", up, matrix)
        if matrix is not None:
            out = _along_axis(out, matrix, axis)
    return out


@no_autograph
def gaussian_blur(image, seed, prob: float = 1.0, sigma=(0.25, 1.5), truncate: float = 3.0):
    """Gaussian blur with a random sigma per sample and axis (MONAI ``RandGaussianSmooth``).

    Borders are mirrored; the kernel is truncated at ``truncate`` sigmas (MONAI: 4, with an erf
    approximation of the kernel).

    Args:
        image: ``(B, *spatial, C)``. seed: stateless seed. prob: per-sample probability.
        sigma: ``(low, high)`` range in voxels; ``0`` gives the identity.
    """
    _check_prob(prob)
    low, high = _range(sigma, "sigma")
    image, rank, batch, seeds = _batch_and_seeds(image, seed, 2)
    if high <= 0:
        return image
    s = _uniform(seeds[0], [batch, rank], low, high)
    out = smooth(image, s, int(math.ceil(truncate * high)))
    return _select(_apply_mask(seeds[1], batch, prob), out, image)


@no_autograph
def low_resolution(image, seed, prob: float = 1.0, zoom_range=(0.5, 1.0)):
    """Simulate a low-resolution acquisition (MONAI ``RandSimulateLowResolution``).

    Each sample is downsampled by a factor ``z`` (uniform in ``zoom_range``; ``1`` is the identity)
    with nearest neighbour and upsampled back with linear interpolation, both by the kit's
    resampler, so the batch keeps one static shape.

    Args:
        image: ``(B, *spatial, C)``. seed: stateless seed. prob: per-sample probability.
        zoom_range: ``(low, high)`` within ``(0, 1]``.
    """
    _check_prob(prob)
    low, high = _range(zoom_range, "zoom_range")
    if low <= 0 or high > 1:
        raise ValueError(f"`zoom_range` must lie in (0, 1], got {zoom_range}.")
    image, rank, batch, seeds = _batch_and_seeds(image, seed, 2)
    shape = [int(n) for n in image.shape[1:-1]]
    z = _uniform(seeds[0], [batch], low, high)
    eye = tf.eye(rank + 1, batch_shape=[batch])
    diag = tf.concat([tf.tile(z[:, None], [1, rank]), tf.ones([batch, 1])], axis=1)
    down = tf.linalg.set_diag(eye, tf.concat([1.0 / diag[:, :rank], diag[:, rank:]], axis=1))
    up = tf.linalg.set_diag(eye, diag)
    coarse = sp.sample(image, sp.affine_grid(down, shape), "nearest", "border")
    out = sp.sample(coarse, sp.affine_grid(up, shape), "linear", "border")
    return _select(_apply_mask(seeds[1], batch, prob), out, image)


def _box_mask(seed, batch, shape, size_low, size_high):
    """Random axis-aligned boxes: ``(B, *shape)`` float mask, side ``U(low, high) * n`` per axis."""
    rank = len(shape)
    seeds = split_seed(seed, 2)
    sizes = _uniform(seeds[0], [batch, rank], size_low, size_high)
    centres = _uniform(seeds[1], [batch, rank], 0.0, 1.0)
    mask = None
    for axis, n in enumerate(shape):
        pos = (tf.range(n, dtype=tf.float32) + 0.5) / n  # voxel centres in [0, 1]
        inside = tf.abs(pos[None] - centres[:, axis : axis + 1]) <= sizes[:, axis : axis + 1] / 2
        inside = tf.reshape(tf.cast(inside, tf.float32), [-1] + [n if a == axis else 1 for a in range(rank)])
        mask = inside if mask is None else mask * inside
    return mask


@no_autograph
def cutout(image, seed, prob: float = 1.0, size=(0.1, 0.3), fill: float = 0.0):
    """Set one random box per sample to ``fill`` (MONAI ``RandCoarseDropout`` with one hole).

    Args:
        image: ``(B, *spatial, C)``. seed: stateless seed. prob: per-sample probability.
        size: ``(low, high)`` box side as a fraction of each axis; ``0`` gives the identity.
        fill: value written into the box.
    """
    _check_prob(prob)
    low, high = _range(size, "size")
    image = tf.convert_to_tensor(image, tf.float32)
    spatial_rank(image)
    batch = _batch_size(image)
    seeds = split_seed(seed, 2)
    mask = _box_mask(seeds[0], batch, [int(n) for n in image.shape[1:-1]], low, high)[..., None]
    out = image * (1.0 - mask) + fill * mask
    return _select(_apply_mask(seeds[1], batch, prob), out, image)

