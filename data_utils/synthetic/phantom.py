"""NumPy building blocks for synthetic medical-image phantoms, in 2D and 3D.

Every generator in ``data_utils.synthetic`` draws its anatomy from these primitives, so they are
written for any spatial rank (the rank is ``len(shape)``) and take an explicit
``np.random.Generator`` (``np.random.default_rng(seed)``): the same seed gives the same phantom.

Geometry works in millimetres on a voxel grid with a given spacing:

- :func:`coordinate_grid`: the mm position of every voxel centre, ``(*shape, ndim)``.
- :func:`ellipsoid_distance`: an approximate signed distance (mm) to a rotated ellipsoid
  (ellipse in 2D), negative inside. Shapes are combined and thickened by adding to distances.
- :func:`smooth_field` / :func:`random_displacement`: smooth random scalar and vector fields, used
  to make boundaries irregular (:func:`blob_distance`) and to deform the whole anatomy;
  ``data_utils.spatial.warp`` resamples an image or label map through a displacement.
- :func:`soft_mask`: distance -> membership in ``[0, 1]`` with a soft edge of a given width:
  this is where partial volume comes from (a voxel on an edge is part tissue, part neighbour).
- :func:`paint`: blend a tissue intensity into an image through a membership.

Appearance:

- :func:`texture`: correlated random texture with unit standard deviation.
- :func:`slice_profile_blur`: Gaussian blur matched to the voxel size (thick slices blur more).
- :func:`downsample_mean`: block averaging, for phantoms drawn on a finer grid (supersampling).
- :func:`bias_field` / :func:`rician_noise`: MR artefacts. They call the graph ops in
  ``data_utils.augment`` (one definition of each in the kit) with a seed drawn from ``rng``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def _as_tuple(value, ndim: int, name: str) -> tuple[float, ...]:
    """Broadcast a number or a sequence to a tuple of ``ndim`` floats."""
    if np.isscalar(value):
        return (float(value),) * ndim
    value = tuple(float(v) for v in value)
    if len(value) != ndim:
        raise ValueError(f"`{name}` must have {ndim} values (one per spatial axis), got {value}.")
    return value


def coordinate_grid(shape: Sequence[int], spacing=1.0, center: bool = True) -> np.ndarray:
    """Return the position in mm of every voxel centre.

    Args:
        shape: spatial shape, e.g. ``(D, H, W)`` or ``(H, W)``.
        spacing: voxel size in mm per axis (a number means isotropic).
        center: if True the grid's centre is at 0 mm, otherwise voxel 0 is at 0 mm.

    Returns:
        float32 array ``(*shape, ndim)``; ``grid[..., i]`` is the coordinate along axis ``i``.
    """
    shape = tuple(int(s) for s in shape)
    spacing = _as_tuple(spacing, len(shape), "spacing")
    axes = []
    for n, s in zip(shape, spacing):
        pos = np.arange(n, dtype=np.float32) * s
        axes.append(pos - pos.mean() if center else pos)
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).astype(np.float32)


def random_rotation(rng: np.random.Generator, ndim: int, max_angle_deg: float = 15.0) -> np.ndarray:
    """Draw a random rotation matrix with each angle uniform in ``[-max, max]`` degrees.

    Args:
        rng: NumPy generator.
        ndim: 2 (one angle) or 3 (three Euler angles, composed about axes 0, 1 and 2).
        max_angle_deg: largest absolute angle in degrees; 0 gives the identity.

    Returns:
        ``(ndim, ndim)`` float64 orthonormal matrix with determinant +1.
    """
    if ndim not in (2, 3):
        raise ValueError(f"`ndim` must be 2 or 3, got {ndim}.")
    angles = np.deg2rad(rng.uniform(-max_angle_deg, max_angle_deg, size=1 if ndim == 2 else 3))
    if ndim == 2:
        c, s = np.cos(angles[0]), np.sin(angles[0])
        return np.array([[c, -s], [s, c]])
    rotation = np.eye(3)
    for axis, angle in enumerate(angles):
        c, s = np.cos(angle), np.sin(angle)
        i, j = [a for a in range(3) if a != axis]
        r = np.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        rotation = rotation @ r
    return rotation


def ellipsoid_distance(coords: np.ndarray, center, radii, rotation: np.ndarray | None = None) -> np.ndarray:
    """Approximate signed distance in mm to an ellipsoid (ellipse in 2D); negative inside.

    Uses the first-order estimate ``(|q| - 1) / |grad |q||`` with ``q`` the point in the
    ellipsoid's normalised frame. It is exact on the surface's normal near the surface, which
    is all that soft edges and wall thicknesses need.

    Args:
        coords: ``(*shape, ndim)`` positions in mm (from :func:`coordinate_grid`).
        center: ``ndim`` centre coordinates in mm.
        radii: ``ndim`` semi-axes in mm (along the rotated axes).
        rotation: optional ``(ndim, ndim)`` rotation of the ellipsoid's axes.

    Returns:
        float32 array ``shape``.
    """
    ndim = coords.shape[-1]
    center = np.asarray(_as_tuple(center, ndim, "center"), np.float32)
    radii = np.asarray(_as_tuple(radii, ndim, "radii"), np.float32)
    if np.any(radii <= 0):
        raise ValueError(f"`radii` must be positive, got {radii}.")
    matrix = np.eye(ndim) if rotation is None else np.asarray(rotation, np.float64)
    # Rows of R^T take a point into the ellipsoid's frame; dividing by the radii normalises it.
    # Component-wise arithmetic: several times faster than a (N, 3) x (3, 3) matmul in NumPy.
    local = [coords[..., j] - center[j] for j in range(ndim)]
    q = []
    for i in range(ndim):
        qi = local[0] * np.float32(matrix[0, i] / radii[i])
        for j in range(1, ndim):
            if matrix[j, i] != 0:
                qi += local[j] * np.float32(matrix[j, i] / radii[i])
        q.append(qi)
    norm_q = np.sqrt(sum(qi * qi for qi in q)) + np.float32(1e-6)
    grad = np.sqrt(sum((qi / r) ** 2 for qi, r in zip(q, radii))) + np.float32(1e-9)
    return ((norm_q - 1.0) * norm_q / grad).astype(np.float32)


@functools.lru_cache(maxsize=64)
def _upsample_matrix(n: int, m: int) -> np.ndarray:
    """``(n, m)`` matrix sampling a length-``m`` control signal at ``n`` points by cubic B-splines."""
    positions = np.linspace(1.0, m - 2.0, n)
    columns = [ndimage.map_coordinates(np.eye(m)[j], positions[None], order=3, mode="nearest") for j in range(m)]
    return np.stack(columns, axis=1).astype(np.float32)


def smooth_field(
    shape: Sequence[int],
    rng: np.random.Generator,
    cell: float | Sequence[float] = 8.0,
) -> np.ndarray:
    """Draw a smooth random scalar field with zero mean and unit standard deviation.

    White noise on a coarse control grid (one point every ``cell`` voxels) is interpolated with
    cubic splines to the full grid, so features are about ``cell`` voxels wide. Cheap on large
    volumes because only the coarse grid is random.

    Args:
        shape: spatial shape of the field.
        rng: NumPy generator.
        cell: control-point spacing in voxels, per axis or one number.

    Returns:
        float32 array ``shape``.
    """
    shape = tuple(int(s) for s in shape)
    cell = _as_tuple(cell, len(shape), "cell")
    coarse_shape = tuple(max(2, int(np.ceil(n / c)) + 2) for n, c in zip(shape, cell))
    field = rng.standard_normal(coarse_shape).astype(np.float32)
    # Cubic-spline upsampling, one axis at a time (a tensor product: much faster than 3D interpolation).
    for axis in reversed(range(len(shape))):
        matrix = _upsample_matrix(shape[axis], coarse_shape[axis])
        field = np.moveaxis(np.moveaxis(field, axis, -1) @ matrix.T, -1, axis)
        field = np.ascontiguousarray(field)
    field -= field.mean()
    return (field / (field.std() + 1e-6)).astype(np.float32)


def random_displacement(
    shape: Sequence[int], rng: np.random.Generator, max_mm: float, cell: float | Sequence[float] = 8.0
) -> np.ndarray:
    """Draw a smooth random displacement field in mm, one component per axis.

    Args:
        shape: spatial shape.
        rng: NumPy generator.
        max_mm: scale of the displacement (about 2.5 standard deviations; values are clipped here).
        cell: control-point spacing in voxels (bigger is smoother).

    Returns:
        float32 array ``(*shape, ndim)``; add it to :func:`coordinate_grid` to deform a phantom.
    """
    fields = [np.clip(smooth_field(shape, rng, cell) / 2.5, -1, 1) * max_mm for _ in shape]
    return np.stack(fields, axis=-1).astype(np.float32)


def blob_distance(
    coords: np.ndarray,
    rng: np.random.Generator,
    center,
    radii,
    irregularity_mm: float = 0.0,
    max_angle_deg: float = 0.0,
    cell: float | Sequence[float] = 8.0,
) -> np.ndarray:
    """Signed distance (mm) to a smooth random blob: a rotated ellipsoid with a wobbly surface.

    Args:
        coords: ``(*shape, ndim)`` positions in mm.
        rng: NumPy generator.
        center, radii: ellipsoid centre and semi-axes in mm.
        irregularity_mm: amplitude (std, mm) of the smooth surface perturbation; 0 gives an ellipsoid.
        max_angle_deg: random rotation range in degrees.
        cell: feature size of the perturbation in voxels.

    Returns:
        float32 array ``coords.shape[:-1]``, negative inside.
    """
    ndim = coords.shape[-1]
    rotation = random_rotation(rng, ndim, max_angle_deg) if max_angle_deg > 0 else None
    distance = ellipsoid_distance(coords, center, radii, rotation)
    if irregularity_mm > 0:
        distance = distance + irregularity_mm * smooth_field(coords.shape[:-1], rng, cell)
    return distance


def soft_mask(distance: np.ndarray, width: float = 0.5) -> np.ndarray:
    """Turn a signed distance into a membership in ``[0, 1]`` with a soft edge.

    Args:
        distance: signed distance in mm (negative inside).
        width: edge width in mm (the logistic scale); about half a voxel gives realistic partial
            volume. ``0`` gives a hard mask.

    Returns:
        float32 array, 1 deep inside, 0.5 on the surface, 0 far outside.
    """
    if width <= 0:
        return (distance < 0).astype(np.float32)
    return (0.5 * (1.0 - np.tanh(distance / (2.0 * width)))).astype(np.float32)


def paint(image: np.ndarray, membership: np.ndarray, value) -> np.ndarray:
    """Blend ``value`` into ``image`` where ``membership`` is high: ``image*(1-m) + value*m``.

    Painting tissues from the back to the front gives occlusion (later tissues win) and
    partial-volume mixing on soft edges. ``value`` may be a number or an array (textured tissue).
    Modifies ``image`` in place and returns it.
    """
    image *= 1.0 - membership
    image += membership * value
    return image


def texture(shape: Sequence[int], rng: np.random.Generator, sigma_vox=1.0) -> np.ndarray:
    """Correlated random tissue texture with zero mean and unit standard deviation.

    Args:
        shape: spatial shape.
        rng: NumPy generator.
        sigma_vox: correlation length (Gaussian sigma) in voxels, per axis or one number.

    Returns:
        float32 array ``shape``.
    """
    noise = rng.standard_normal(tuple(int(s) for s in shape)).astype(np.float32)
    noise = ndimage.gaussian_filter(noise, sigma=_as_tuple(sigma_vox, len(shape), "sigma_vox"), mode="wrap")
    noise -= noise.mean()
    return noise / (noise.std() + 1e-6)


def slice_profile_blur(image: np.ndarray, spacing, fwhm_vox: float = 1.0) -> np.ndarray:
    """Blur an image with a Gaussian point-spread function of ``fwhm_vox`` voxels per axis.

    A voxel integrates signal over its whole extent; on an anisotropic grid the thick axis blurs
    more millimetres. ``spacing`` is accepted so callers state the grid they blur; the blur is
    one FWHM per voxel on each axis, i.e. ``fwhm_vox * spacing`` mm.

    Args:
        image: array ``shape``.
        spacing: voxel size per axis (only its length is checked).
        fwhm_vox: full width at half maximum, in voxels.

    Returns:
        float32 array, same shape.
    """
    _as_tuple(spacing, image.ndim, "spacing")
    sigma = fwhm_vox / 2.3548
    return ndimage.gaussian_filter(image.astype(np.float32), sigma=sigma, mode="nearest")


def downsample_mean(array: np.ndarray, factors) -> np.ndarray:
    """Average non-overlapping blocks of ``factors`` voxels (supersampled drawing -> partial volume).

    Args:
        array: array whose shape is divisible by ``factors``.
        factors: integer block size per axis, or one integer.

    Returns:
        float32 array of shape ``array.shape // factors``.
    """
    factors = tuple(int(f) for f in _as_tuple(factors, array.ndim, "factors"))
    if any(n % f for n, f in zip(array.shape, factors)):
        raise ValueError(f"shape {array.shape} is not divisible by factors {factors}.")
    split = []
    for n, f in zip(array.shape, factors):
        split += [n // f, f]
    return array.reshape(split).mean(axis=tuple(range(1, 2 * array.ndim, 2)), dtype=np.float32)


def _tf_seed(rng: np.random.Generator) -> list[int]:
    return [int(v) for v in rng.integers(0, 2**31 - 1, size=2)]


def bias_field(
    image: np.ndarray,
    rng: np.random.Generator,
    degree: int = 3,
    coeff_range=(-0.15, 0.15),
) -> np.ndarray:
    """Multiply an unbatched image by a smooth random MR bias field ``exp(Legendre polynomial)``.

    Calls :func:`data_utils.augment.bias_field` (MONAI ``RandBiasField`` semantics) with a stateless
    seed drawn from ``rng``, so the result is deterministic given the generator's state.

    Args:
        image: float array ``(H, W)`` or ``(D, H, W)``.
        rng: NumPy generator.
        degree: polynomial degree of the log field.
        coeff_range: ``(low, high)`` range of each polynomial coefficient.

    Returns:
        float32 array, same shape.
    """
    from data_utils import augment  # TensorFlow only when a phantom is actually made

    out = augment.bias_field(image[None, ..., None], seed=_tf_seed(rng), degree=degree, coeff_range=coeff_range)
    return out.numpy()[0, ..., 0]


def rician_noise(image: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Add Rician noise of a fixed ``sigma`` to an unbatched magnitude image.

    ``sqrt((x + n1)^2 + n2^2)`` with ``n1, n2 ~ N(0, sigma)``, through
    :func:`data_utils.augment.rician_noise` with a seed drawn from ``rng``.

    Args:
        image: float array ``(H, W)`` or ``(D, H, W)``.
        rng: NumPy generator.
        sigma: noise standard deviation in image units.

    Returns:
        float32 array, same shape, non-negative.
    """
    from data_utils import augment

    out = augment.rician_noise(image[None, ..., None], seed=_tf_seed(rng), std=float(sigma), sample_std=False)
    return out.numpy()[0, ..., 0]
