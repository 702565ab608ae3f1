"""Spatial augmentations (image and label together).

Each has a *sampler* (``draw_*``) returning the random transform as ``("affine", (B, r+1, r+1))`` or
``("displacement", (B, *spatial, r))``, so that :class:`~data_utils.augment.Compose` can fuse
consecutive spatial transforms into one resampling (``data_utils.spatial.compose_grid``).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from data_utils import spatial as sp
from data_utils.augment.seeding import (
    no_autograph,
    _apply_mask,
    _batch_size,
    _check_prob,
    _pair,
    _per_sample,
    _range,
    _uniform,
    as_seed,
    spatial_rank,
    split_seed,
)
from data_utils.augment.intensity import smooth


def _axis_ranges(value, n: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-parameter (low, high) bounds from ``v`` (meaning ``(-v, v)`` for all ``n``), or ``n``
    entries each a number ``v`` or a ``(low, high)`` pair."""
    values = [value] * n if isinstance(value, (int, float)) else list(value)
    if len(values) != n:
        raise ValueError(f"`{name}` must be a number or {n} numbers/(low, high) pairs, got {value}.")
    bounds = [_pair(v, name) if isinstance(v, (int, float)) else _range(v, name) for v in values]
    return np.array([b[0] for b in bounds], "float32"), np.array([b[1] for b in bounds], "float32")


def _random_in(seed, batch, bounds) -> tf.Tensor:
    low, high = bounds
    u = tf.random.stateless_uniform([batch, len(low)], seed=seed)
    return tf.constant(low)[None] + u * tf.constant(high - low)[None]


def _identity_matrices(batch, rank):
    return tf.eye(rank + 1, batch_shape=[batch])


def _gate_matrix(mask, matrix, rank):
    """Identity for samples whose ``mask`` is False."""
    return tf.where(mask[:, None, None], matrix, _identity_matrices(tf.shape(matrix)[0], rank))


def _default_axes(axes, rank):
    axes = list(range(rank)) if axes is None else [int(a) for a in axes]
    axes = [a + rank if a < 0 else a for a in axes]
    if any(a < 0 or a >= rank for a in axes):
        raise ValueError(f"`axes` must index the {rank} spatial axes (0..{rank - 1} or negative), got {axes}.")
    return axes


@no_autograph
def draw_flip(seed, batch, spatial_shape, prob: float = 0.5, axes=None):
    """Random flips as sampling matrices: each listed spatial axis flipped with probability ``prob``.

    Returns ``("affine", (B, r+1, r+1))``. MONAI's ``RandFlip`` flips all its axes together;
    here each axis is decided independently (nnU-Net's mirroring), which covers more variants.
    """
    _check_prob(prob)
    rank = len(spatial_shape)
    axes = _default_axes(axes, rank)
    u = tf.random.stateless_uniform([batch, rank], seed=as_seed(seed))
    selected = tf.constant([a in axes for a in range(rank)])[None]
    flips = tf.logical_and(u < prob, selected)  # (B, r)
    sign = tf.where(flips, -1.0, 1.0)
    shift = tf.where(flips, tf.constant([n - 1.0 for n in spatial_shape])[None], 0.0)
    top = tf.concat([tf.linalg.diag(sign), shift[:, :, None]], axis=2)
    bottom = tf.tile(tf.constant([[[0.0] * rank + [1.0]]]), [batch, 1, 1])
    return "affine", tf.concat([top, bottom], axis=1)


@no_autograph
def draw_rot90(seed, batch, spatial_shape, prob: float = 0.5, axes=(-2, -1)):
    """Random rotation by 90, 180 or 270 degrees in the plane of two spatial axes (equal sizes).

    Returns ``("affine", (B, r+1, r+1))``; exact (integer) matrices, so resampling is lossless.
    """
    _check_prob(prob)
    rank = len(spatial_shape)
    p, q = _default_axes(axes, rank)
    if spatial_shape[p] != spatial_shape[q]:
        raise ValueError(
            f"rot90 needs equal sizes on axes {p} and {q} to keep the shape, got {tuple(spatial_shape)}."
        )
    seeds = split_seed(seed, 2)
    k = tf.random.stateless_uniform([batch], seed=seeds[0], minval=1, maxval=4, dtype=tf.int32)
    k = tf.where(_apply_mask(seeds[1], batch, prob), k, 0)
    cos = tf.gather(tf.constant([1.0, 0.0, -1.0, 0.0]), k)
    sin = tf.gather(tf.constant([0.0, 1.0, 0.0, -1.0]), k)
    centre = (spatial_shape[p] - 1) / 2.0
    rows = []
    eye = np.eye(rank + 1, dtype="float32")
    for i in range(rank + 1):
        row = [tf.fill([batch], float(eye[i, j])) for j in range(rank + 1)]
        if i == p:
            row[p], row[q], row[rank] = cos, -sin, centre - centre * (cos - sin)
        elif i == q:
            row[p], row[q], row[rank] = sin, cos, centre - centre * (sin + cos)
        rows.append(tf.stack(row, axis=-1))
    return "affine", tf.stack(rows, axis=1)


@no_autograph
def draw_affine(
    seed, batch, spatial_shape, prob: float = 1.0, rotation=0.0, scale=0.0, shear=0.0, translation=0.0
):
    """Random affine sampling matrices about the image centre (MONAI ``RandAffine`` parameters).

    Args:
        seed: stateless seed. batch: batch size. spatial_shape: ``(H, W)`` or ``(D, H, W)``.
        prob: per-sample probability (others get the identity).
        rotation: radians; ``v`` means ``U(-v, v)``; one angle in 2D, three in 3D (MONAI ``rotate_range``).
        scale: ``v`` means factor ``1 + U(-v, v)`` per axis (MONAI ``scale_range``).
        shear: ``v`` means ``U(-v, v)`` for each of the ``r(r-1)`` coefficients (MONAI ``shear_range``).
        translation: voxels, ``v`` means ``U(-v, v)`` per axis (MONAI ``translate_range``).
        Each may also be a per-parameter list of numbers or ``(low, high)`` pairs.

    Returns:
        ``("affine", (B, r+1, r+1))``.
    """
    _check_prob(prob)
    rank = len(spatial_shape)
    seeds = split_seed(seed, 5)
    n_rot = 1 if rank == 2 else 3
    rot = _random_in(seeds[0], batch, _axis_ranges(rotation, n_rot, "rotation"))
    scl = 1.0 + _random_in(seeds[1], batch, _axis_ranges(scale, rank, "scale"))
    shr = _random_in(seeds[2], batch, _axis_ranges(shear, rank * (rank - 1), "shear"))
    trn = _random_in(seeds[3], batch, _axis_ranges(translation, rank, "translation"))
    matrix = sp.affine_matrix(spatial_shape, rotation=rot, scale=scl, shear=shr, translation=trn)
    return "affine", _gate_matrix(_apply_mask(seeds[4], batch, prob), matrix, rank)


@no_autograph
def draw_elastic(
    seed, batch, spatial_shape, prob: float = 1.0, sigma=(5.0, 7.0), magnitude=(50.0, 150.0),
    mode: str = "gaussian", num_control_points: int = 5,
):
    """A smooth random displacement field ``(B, *spatial, r)`` in voxels.

    ``mode="gaussian"`` follows MONAI ``Rand3DElastic``: uniform ``[-1, 1]`` noise per voxel and axis,
    Gaussian-smoothed with ``sigma`` (voxels, uniform in its range per sample) and multiplied by
    ``magnitude`` (uniform in its range). Difference, for speed: for ``sigma >= 4`` the noise is drawn
    and smoothed on a grid coarser by ``f = floor(min sigma / 2)``, scaled by ``f**(r/2)`` to keep
    the same amplitude, and interpolated back; the field has the same smoothness and statistics.

    ``mode="control"`` (like MONAI ``Rand2DElastic`` and DeepReg): displacements uniform in
    ``[-magnitude, magnitude]`` voxels on ``num_control_points`` points per axis, interpolated
    linearly (MONAI interpolates with B-splines).

    Returns:
        ``("displacement", (B, *spatial, r))``; zero for samples not selected by ``prob``.
    """
    _check_prob(prob)
    rank = len(spatial_shape)
    seeds = split_seed(seed, 4)
    mag_low, mag_high = _range(magnitude, "magnitude")
    mag = _uniform(seeds[0], [batch], mag_low, mag_high)
    keep = tf.cast(_apply_mask(seeds[3], batch, prob), tf.float32)
    if mode == "gaussian":
        sig_low, sig_high = _range(sigma, "sigma")
        factor = max(1, int(sig_low // 2))
        coarse = [int(math.ceil((n - 1) / factor)) + 1 for n in spatial_shape]
        noise = _uniform(seeds[1], [batch, *coarse, rank], -1.0, 1.0)
        sig = _uniform(seeds[2], [batch], sig_low, sig_high) / factor
        radius = int(math.ceil(3.0 * sig_high / factor))
        amplitude = mag * keep * (factor ** (rank / 2.0))
        ratios = [1.0 / factor] * rank
    elif mode == "control":
        m = int(num_control_points)
        if m < 2:
            raise ValueError(f"`num_control_points` must be >= 2, got {num_control_points}.")
        noise = _uniform(seeds[1], [batch] + [m] * rank + [rank], -1.0, 1.0)
        sig, radius, amplitude = None, 0, mag * keep
        # Coarse index = fine index * (m - 1) / (n - 1): the corners of both grids coincide.
        ratios = [(m - 1) / max(n - 1, 1) for n in spatial_shape]
    else:
        raise ValueError(f"`mode` must be 'gaussian' or 'control', got {mode!r}.")
    # The smoothing and upsampling happen in realize_transform, inside the (possibly XLA-compiled)
    # resampling step; only the random draws are made here, so XLA and graph mode agree.
    return "field", {"noise": noise, "sigma": sig, "radius": radius, "amplitude": amplitude,
                     "ratios": tuple(ratios)}


@no_autograph
def draw_projective(seed, batch, spatial_shape, prob: float = 1.0, distortion=0.1):
    """Random projective (perspective) sampling maps as displacement fields ``(B, *spatial, r)``.

    In centred coordinates ``u = (x - c) / h`` (``c`` the centre, ``h`` the half-extent of each axis,
    so ``u`` is in ``[-1, 1]``), the output voxel ``x`` reads the input at ``c + h * u / (1 + p . u)``:
    a homography whose only non-affine part is the perspective row ``p``, drawn per sample and axis from
    ``U(-distortion, distortion)``. Straight lines stay straight but parallel lines converge, as when
    the object is seen at an angle (a tilted CT gantry, an oblique slice, a projection radiograph
    taken off-axis). Combine with :func:`draw_affine` for rotation, scale and shift. ``distortion = 0``
    (or ``prob = 0``) gives the identity. MONAI has no projective transform; torchvision's
    ``RandomPerspective`` is the 2D counterpart (it moves the four corners instead).

    Args:
        seed: stateless seed. batch: batch size. spatial_shape: ``(H, W)`` or ``(D, H, W)``.
        prob: per-sample probability (others get zero displacement).
        distortion: largest ``|p_i|``; must be below ``1 / rank`` so that ``1 + p . u > 0`` everywhere.

    Returns:
        ``("displacement", (B, *spatial, r))`` in voxels.
    """
    _check_prob(prob)
    rank = len(spatial_shape)
    distortion = float(distortion)
    if not 0.0 <= distortion < 1.0 / rank:
        raise ValueError(f"`distortion` must be in [0, 1/{rank}) for a {rank}D image (the map must not fold); got {distortion}.")
    seeds = split_seed(seed, 2)
    keep = tf.cast(_apply_mask(seeds[1], batch, prob), tf.float32)[:, None]
    p = _uniform(seeds[0], [batch, rank], -distortion, distortion) * keep  # (B, r)
    centre = tf.constant([(n - 1) / 2.0 for n in spatial_shape], tf.float32)
    half = tf.constant([max((n - 1) / 2.0, 1.0) for n in spatial_shape], tf.float32)
    points = tf.convert_to_tensor(sp.identity_grid(spatial_shape), tf.float32)  # (*spatial, r)
    u = (points - centre) / half
    denominator = 1.0 + tf.einsum("br,...r->b...", p, u)[..., None]  # (B, *spatial, 1)
    return "displacement", (u[None] / denominator - u[None]) * half


def smooth_transform(transform):
    """Smooth an elastic draw at its coarse resolution and scale it; other transforms pass through.

    ``("field", {...})`` from :func:`draw_elastic` becomes a ``("field", {...})`` whose ``noise`` is
    the smoothed, scaled coarse displacement (``sigma`` None, ``amplitude`` 1): what is left for
    :func:`realize_transform` is the linear upsampling to full size. Compose runs this step outside
    XLA (batched matrix products are faster on oneDNN) and the upsampling inside the resampling.
    """
    kind, value = transform
    if kind != "field" or value["sigma"] is None and value["amplitude"] is None:
        return transform
    rank = value["noise"].shape.rank - 2
    field = value["noise"]
    if value["sigma"] is not None:
        field = smooth(field, value["sigma"], value["radius"])
    # Scaling the coarse field equals scaling the upsampled one (interpolation is linear), at 1/f^r the cost.
    field = field * _per_sample(value["amplitude"], rank + 2)
    return "field", {"noise": field, "sigma": None, "radius": 0, "amplitude": None, "ratios": value["ratios"]}


def realize_transform(transform, spatial_shape):
    """Turn a drawn transform into ``("affine", M)`` or ``("displacement", (B, *spatial, r))``.

    Elastic draws come as ``("field", {...})``: coarse noise that is smoothed and scaled
    (:func:`smooth_transform`, a no-op if done already) and interpolated linearly up to
    ``spatial_shape`` (``data_utils.spatial.upsample_linear``).
    """
    kind, value = smooth_transform(transform)
    if kind != "field":
        return kind, value
    return "displacement", sp.upsample_linear(value["noise"], spatial_shape, value["ratios"])


def _resample(image, label, transforms, padding, interpolation="linear"):
    """Fuse drawn transforms into one grid and resample image (linear) and label (nearest) once."""
    shape = [int(n) for n in image.shape[1:-1]]
    realized = [realize_transform(t, shape) for t in transforms]
    kind, value = sp.compose_grid(realized, shape, padding="border")
    grid = sp.affine_grid(value, shape) if kind == "affine" else value
    if label is None:
        return sp.sample(image, grid, interpolation, padding), None
    return sp.sample_image_and_label(image, label, grid, padding=padding, interpolation=interpolation)


# The same, compiled with XLA: 2-5x faster for 3D on CPU. Random draws stay outside it.
_resample_xla = tf.function(_resample, jit_compile=True, autograph=False)


@tf.function(jit_compile=True, autograph=False)
def _upsample_field_xla(transform, spatial_shape):
    """:func:`realize_transform` of a smoothed elastic field as its own XLA program.

    Upsampling inside the resampling program would be fused into every reader of the grid and so
    recomputed several times; compiled alone it is written out once (about 4x faster than in
    graph mode, whose slices and blends each make a full-size copy).
    """
    return realize_transform(transform, spatial_shape)[1]


def realize_for_xla(transform, spatial_shape):
    """Prepare a drawn transform for :data:`_resample_xla`: elastic fields smoothed (oneDNN) and upsampled (XLA)."""
    transform = smooth_transform(transform)
    if transform[0] != "field":
        return transform
    return "displacement", _upsample_field_xla(transform, list(spatial_shape))


def _spatial_call(sampler, image, seed, label, padding, interpolation="linear", **kwargs):
    image = tf.convert_to_tensor(image, tf.float32)
    spatial_rank(image)
    shape = [int(n) for n in image.shape[1:-1]]
    transform = sampler(seed, _batch_size(image), shape, **kwargs)
    out_image, out_label = _resample(image, None if label is None else tf.convert_to_tensor(label),
                                     [transform], padding, interpolation)
    return out_image if label is None else (out_image, out_label)


@no_autograph
def flip(image, seed, label=None, prob: float = 0.5, axes=None):
    """Randomly flip each spatial axis with probability ``prob`` (per sample, per axis).

    Args:
        image: ``(B, *spatial, C)``. seed: stateless seed.
        label: optional ``(B, *spatial)`` or ``(B, *spatial, L)`` label map, flipped identically.
        axes: spatial axes that may flip (default all; 0 is the first spatial axis).

    Returns:
        The flipped image, or ``(image, label)`` when a label is given.
    """
    image = tf.convert_to_tensor(image, tf.float32)
    rank = spatial_rank(image)
    _, matrix = draw_flip(seed, _batch_size(image), image.shape[1:-1], prob=prob, axes=axes)
    flips = tf.linalg.diag_part(matrix)[:, :rank] < 0  # (B, r)
    tensors = [image] if label is None else [image, tf.convert_to_tensor(label)]
    for axis in range(rank):
        tensors = [
            tf.where(_per_sample(flips[:, axis], t.shape.rank), tf.reverse(t, [axis + 1]), t) for t in tensors
        ]
    return tensors[0] if label is None else tuple(tensors)


@no_autograph
def rot90(image, seed, label=None, prob: float = 0.5, axes=(-2, -1)):
    """Randomly rotate by 90, 180 or 270 degrees in the plane of ``axes`` (sizes must match).

    Returns the image, or ``(image, label)`` when a label is given. Lossless.
    """
    return _spatial_call(draw_rot90, image, seed, label, "border", "nearest", prob=prob, axes=axes)


@no_autograph
def random_affine(
    image, seed, label=None, prob: float = 1.0, rotation=0.0, scale=0.0, shear=0.0, translation=0.0,
    padding: str = "reflection",
):
    """Random affine transform about the centre (MONAI ``RandAffine``); image linear, label nearest.

    Args:
        image: ``(B, *spatial, C)``. seed: stateless seed.
        label: optional label map ``(B, *spatial)`` or ``(B, *spatial, L)``; stays integer.
        prob, rotation, scale, shear, translation: see :func:`draw_affine`.
        padding: ``"reflection"`` (MONAI's default), ``"border"`` or ``"zeros"``.

    Returns:
        The image, or ``(image, label)`` when a label is given.
    """
    return _spatial_call(draw_affine, image, seed, label, padding, prob=prob, rotation=rotation,
                         scale=scale, shear=shear, translation=translation)


@no_autograph
def elastic(
    image, seed, label=None, prob: float = 1.0, sigma=(5.0, 7.0), magnitude=(50.0, 150.0),
    mode: str = "gaussian", num_control_points: int = 5, padding: str = "reflection",
):
    """Elastic deformation by a smooth random displacement field (MONAI ``Rand3DElastic``/``Rand2DElastic``).

    Args: see :func:`draw_elastic`; ``label`` and ``padding`` as in :func:`random_affine`.

    Returns:
        The image, or ``(image, label)`` when a label is given.
    """
    return _spatial_call(draw_elastic, image, seed, label, padding, prob=prob, sigma=sigma,
                         magnitude=magnitude, mode=mode, num_control_points=num_control_points)



@no_autograph
def random_projective(image, seed, label=None, prob: float = 1.0, distortion=0.1, padding: str = "border"):
    """Random projective (perspective) transform, image linear, label nearest (see :func:`draw_projective`).

    Args:
        image: ``(B, *spatial, C)``. seed: stateless seed.
        label: optional label map ``(B, *spatial)`` or ``(B, *spatial, L)``; stays integer.
        prob, distortion: see :func:`draw_projective`.
        padding: ``"border"`` by default: a CT's edge is air, and repeating it keeps air outside the
            field of view (``"zeros"`` would paint water, 0 HU); ``"reflection"`` and ``"zeros"`` also work.

    Returns:
        The image, or ``(image, label)`` when a label is given.
    """
    return _spatial_call(draw_projective, image, seed, label, padding, prob=prob, distortion=distortion)
