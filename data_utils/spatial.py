"""The kit's one resampler: batched 2D/3D sampling at voxel coordinates, written with ``keras.ops``.

Everything spatial in the kit goes through here: random affine and elastic augmentation
(``data_utils.augment``), the warping layer of the registration model, resizing and resampling.
It uses ``keras.ops`` only, so it runs on any Keras backend and inside a model.

Conventions (shapes):
- images ``(B, *spatial, C)``: ``(B, H, W, C)`` in 2D, ``(B, D, H, W, C)`` in 3D;
- sampling grids ``(B, *out_spatial, rank)``: for every output voxel, the (fractional) *input* voxel
  index to read, in array-axis order (``(d, h, w)`` in 3D);
- displacement fields ``(B, *spatial, rank)`` in voxels: output voxel ``x`` reads input ``x + u(x)``;
- affine matrices ``(B, rank + 1, rank + 1)`` (or ``(B, rank, rank + 1)``, or unbatched) map an output
  voxel index to the input voxel index it reads, like ``scipy.ndimage.affine_transform``'s
  ``matrix``/``offset``. They are sampling ("pull") transforms, as in MONAI's ``Affine``.

Composition: a chain of transforms ``T_1, ..., T_n`` applied one after the other to an image is one
sampling map ``x -> M_1 M_2 ... M_n x`` when all are affine, or, with displacement fields in the chain,
the map built by :func:`compose_grid`. The image is then interpolated once, which is both faster and
sharper than resampling after every step.

Padding (values read outside the input): ``"zeros"`` (constant 0), ``"border"`` (nearest edge value)
or ``"reflection"`` (mirror about the edge voxel centres, like PyTorch's ``grid_sample`` with
``align_corners=True``).
"""

from __future__ import annotations

import itertools

from keras import ops

PADDING_MODES = ("zeros", "border", "reflection")
INTERPOLATIONS = ("linear", "nearest")


# --------------------------------------------------------------------------------------------
# Grids
# --------------------------------------------------------------------------------------------


def identity_grid(spatial_shape, dtype="float32"):
    """The voxel-index grid of a 2D/3D shape: ``grid[i, j, k] == (i, j, k)``.

    Args:
        spatial_shape: ``(H, W)`` or ``(D, H, W)``.

    Returns:
        Tensor ``(*spatial_shape, rank)``.
    """
    axes = [ops.arange(int(n), dtype=dtype) for n in spatial_shape]
    return ops.stack(ops.meshgrid(*axes, indexing="ij"), axis=-1)


def _as_batched_matrix(matrix, rank):
    """Return ``(B, rank, rank + 1)`` from ``(rank+1, rank+1)``, ``(B, rank+1, rank+1)`` or ``(B, rank, rank+1)``."""
    matrix = ops.convert_to_tensor(matrix)
    if len(matrix.shape) == 2:
        matrix = matrix[None]
    if len(matrix.shape) != 3 or matrix.shape[-1] != rank + 1 or matrix.shape[-2] not in (rank, rank + 1):
        raise ValueError(
            f"Affine `matrix` must have shape (B, {rank + 1}, {rank + 1}) or (B, {rank}, {rank + 1}) "
            f"for a {rank}D image, got {matrix.shape}."
        )
    return ops.cast(matrix[:, :rank, :], "float32")


def _per_sample(values, ndim):
    """Reshape ``(B,)`` values so they broadcast against a tensor with ``ndim`` axes."""
    return ops.reshape(values, (-1,) + (1,) * (ndim - 1))


def _affine_map(matrix, points, rank):
    """``A_b @ p + t_b`` for coordinate components ``points[j]`` that broadcast to ``(B, *spatial)``.

    Written as ``rank * rank`` broadcast multiply-adds (one per matrix entry), not as a matrix
    product over a flattened point list: under XLA this fuses with the sampler that reads the
    coordinates, so the ``(B, *spatial, rank)`` grid is never written to memory.

    Returns:
        A list of ``rank`` tensors ``(B, *spatial)``, the mapped coordinate along each axis.
    """
    ndim = rank + 1
    out = []
    for i in range(rank):
        value = None
        for j in range(rank):
            term = _per_sample(matrix[:, i, j], ndim) * points[j]
            value = term if value is None else value + term
        out.append(value + _per_sample(matrix[:, i, rank], ndim))
    return out


def affine_grid(matrix, spatial_shape):
    """Sampling grid of an affine map: ``grid[b, x] = A_b @ x + t_b`` for every output voxel ``x``.

    Args:
        matrix: ``(B, rank + 1, rank + 1)`` homogeneous matrices (output index -> input index).
        spatial_shape: output spatial shape, ``(H, W)`` or ``(D, H, W)``.

    Returns:
        Grid ``(B, *spatial_shape, rank)``.
    """
    rank = len(spatial_shape)
    matrix = _as_batched_matrix(matrix, rank)
    # The index along axis j as a (1, ..., n_j, ..., 1) tensor: broadcasting builds the grid.
    points = []
    for j, n in enumerate(spatial_shape):
        shape = [1] * (rank + 1)
        shape[j + 1] = int(n)
        points.append(ops.reshape(ops.arange(int(n), dtype="float32"), shape))
    return ops.stack(_affine_map(matrix, points, rank), axis=-1)


def apply_affine_to_grid(matrix, grid):
    """Map every point of a grid ``(B, *spatial, rank)`` through affine matrices ``(B, rank+1, rank+1)``."""
    rank = grid.shape[-1]
    matrix = _as_batched_matrix(matrix, rank)
    return ops.stack(_affine_map(matrix, [grid[..., j] for j in range(rank)], rank), axis=-1)


def displacement_to_grid(displacement):
    """Sampling grid ``identity + displacement`` for a field ``(B, *spatial, rank)`` in voxels."""
    spatial_shape = displacement.shape[1:-1]
    return identity_grid(spatial_shape, dtype=displacement.dtype)[None] + displacement


def _upsample_axis_by(x, axis, factor, n_out):
    """Linear upsampling by an integer ``factor`` along ``axis`` (corners aligned), cut to ``n_out``.

    ``out[f k + j] = x[k] + (x[k + 1] - x[k]) j / f``: slices, one broadcast blend and a reshape,
    with no gather (XLA would recompute a gather in every fused consumer). Only ``axis`` needs a
    static size (the batch may be unknown, as in ``tf.data``).
    """
    ndim = len(x.shape)
    n_in = int(x.shape[axis])

    def along(start, size):  # x[..., start:start + size, ...] on `axis`, everything elsewhere
        return ops.slice(x, [start if a == axis else 0 for a in range(ndim)],
                         [size if a == axis else -1 for a in range(ndim)])

    lower, upper = along(0, n_in - 1), along(1, n_in - 1)
    steps = [1] * (ndim + 1)
    steps[axis + 1] = factor
    frac = ops.reshape(ops.arange(factor, dtype=x.dtype) / float(factor), steps)
    blended = ops.expand_dims(lower, axis + 1) + ops.expand_dims(upper - lower, axis + 1) * frac
    dims = ops.shape(x)
    merged = ops.reshape(blended, [dims[a] if a != axis else (n_in - 1) * factor for a in range(ndim)])
    out = ops.concatenate([merged, along(n_in - 1, 1)], axis=axis)
    return ops.slice(out, [0] * ndim, [n_out if a == axis else -1 for a in range(ndim)])


def upsample_linear(x, out_shape, ratios):
    """Separable linear interpolation of ``x`` ``(B, *in_spatial, C)`` to ``(B, *out_shape, C)``.

    Output index ``i`` along axis ``a`` reads input index ``i * ratios[a]`` (clamped to the input's
    extent). A ratio ``1 / f`` with integer ``f`` (a coarse elastic field) is done with slices and
    one blend per axis, element-wise work that XLA fuses into whatever reads the result, so a
    coarse field can be upsampled inside the resampling program; other ratios use two static
    gathers per axis.

    Args:
        x: ``(B, *in_spatial, C)`` with a static shape.
        out_shape: ``(H', W')`` or ``(D', H', W')``.
        ratios: per axis, input voxels per output voxel (``(n_in - 1) / (n_out - 1)`` aligns corners).

    Returns:
        ``(B, *out_shape, C)``; an axis with ``n_out == n_in`` and ratio 1 is left as it is.
    """
    import numpy as np

    rank = len(out_shape)
    for axis in range(rank):
        n_in, n_out, ratio = int(x.shape[axis + 1]), int(out_shape[axis]), float(ratios[axis])
        if n_in == n_out and ratio == 1.0:
            continue
        factor = round(1.0 / ratio) if ratio > 0 else 0
        if factor >= 1 and n_in >= 2 and abs(factor * ratio - 1.0) < 1e-9 and (n_in - 1) * factor + 1 >= n_out:
            x = _upsample_axis_by(x, axis + 1, factor, n_out)
            continue
        c = np.clip(np.arange(n_out) * ratio, 0.0, n_in - 1.0)
        lower = np.floor(c).astype("int32")
        upper = np.minimum(lower + 1, n_in - 1).astype("int32")
        shape = [1] * (rank + 2)
        shape[axis + 1] = n_out
        frac = ops.reshape(ops.convert_to_tensor((c - lower).astype("float32")), shape)
        low = ops.take(x, ops.convert_to_tensor(lower), axis=axis + 1)
        high = ops.take(x, ops.convert_to_tensor(upper), axis=axis + 1)
        x = low + (high - low) * frac
    return x


def compose_grid(transforms, spatial_shape, padding="border"):
    """Fuse a chain of spatial transforms into ONE sampling grid (or one affine matrix).

    ``transforms`` is a list of ``("affine", matrix (B, r+1, r+1))`` and
    ``("displacement", field (B, *spatial, r))`` applied to the image in list order (first listed,
    first applied). Pulling back from the output, an output voxel ``x`` reads the input at
    ``T_1(T_2(...T_n(x)))`` where an affine step is ``M x`` and a displacement step is
    ``x + u(x)``. Consecutive affines are multiplied, so an all-affine chain stays a matrix.
    A displacement field that is not the last step is itself interpolated (linearly) at the
    points it is composed with.

    Args:
        transforms: list of ``(kind, tensor)`` pairs as above.
        spatial_shape: spatial shape of the output (equal to the displacement fields' shape).
        padding: how displacement fields are read outside their extent.

    Returns:
        ``("affine", matrix)`` when every step is affine, else ``("grid", grid (B, *spatial, r))``.
    """
    rank = len(spatial_shape)
    grid = None  # None means "the identity"
    matrix = None  # a pending affine to apply to `grid` (or to the identity)

    def flush(grid, matrix):
        if matrix is None:
            return grid
        if grid is None:
            return affine_grid(matrix, spatial_shape)
        return apply_affine_to_grid(matrix, grid)

    for kind, value in reversed(list(transforms)):
        if kind == "affine":
            m = _homogeneous(value, rank)
            matrix = m if matrix is None else ops.matmul(m, matrix)
        elif kind == "displacement":
            grid = flush(grid, matrix)
            matrix = None
            if grid is None:
                grid = displacement_to_grid(value)
            else:
                grid = grid + sample(value, grid, interpolation="linear", padding=padding)
        else:
            raise ValueError(f"Transform kind must be 'affine' or 'displacement', got {kind!r}.")
    if grid is None:
        if matrix is None:
            raise ValueError("`transforms` is empty: nothing to compose.")
        return "affine", matrix
    return "grid", flush(grid, matrix)


def _homogeneous(matrix, rank):
    """Return ``(B, rank+1, rank+1)`` homogeneous matrices."""
    m = _as_batched_matrix(matrix, rank)
    last = ops.zeros_like(m[:, :1, :])
    last = ops.concatenate([last[..., :rank], ops.ones_like(last[..., :1])], axis=-1)
    return ops.concatenate([m, last], axis=1)


# --------------------------------------------------------------------------------------------
# Affine matrices about the image centre
# --------------------------------------------------------------------------------------------


def rotation_matrix(angles):
    """Rotation matrices ``(B, r, r)`` from angles in radians.

    Args:
        angles: ``(B, 1)`` in 2D or ``(B, 3)`` in 3D. In 3D the angles rotate about array axes 0, 1
            and 2 in turn and the result is ``R2 @ R1 @ R0``, MONAI's ``create_rotate`` order.
    """
    angles = ops.cast(angles, "float32")
    c, s = ops.cos(angles), ops.sin(angles)
    one, zero = ops.ones_like(c[:, 0]), ops.zeros_like(c[:, 0])
    if angles.shape[-1] == 1:
        return ops.reshape(ops.stack([c[:, 0], -s[:, 0], s[:, 0], c[:, 0]], axis=-1), (-1, 2, 2))
    if angles.shape[-1] != 3:
        raise ValueError(f"`angles` must have shape (B, 1) in 2D or (B, 3) in 3D, got {angles.shape}.")

    def mat(*entries):
        return ops.reshape(ops.stack(entries, axis=-1), (-1, 3, 3))

    r0 = mat(one, zero, zero, zero, c[:, 0], -s[:, 0], zero, s[:, 0], c[:, 0])
    r1 = mat(c[:, 1], zero, s[:, 1], zero, one, zero, -s[:, 1], zero, c[:, 1])
    r2 = mat(c[:, 2], -s[:, 2], zero, s[:, 2], c[:, 2], zero, zero, zero, one)
    return ops.matmul(r2, ops.matmul(r1, r0))


def shear_matrix(shear, rank):
    """Shear matrices ``(B, r, r)``: 2 coefficients in 2D, 6 in 3D, placed off the diagonal row by row.

    Matches MONAI's ``create_shear``: 2D ``[[1, s0], [s1, 1]]``;
    3D ``[[1, s0, s1], [s2, 1, s3], [s4, s5, 1]]``.
    """
    shear = ops.cast(shear, "float32")
    n_coeff = rank * (rank - 1)
    if shear.shape[-1] != n_coeff:
        raise ValueError(f"`shear` must have shape (B, {n_coeff}) in {rank}D, got {shear.shape}.")
    one = ops.ones_like(shear[:, 0])
    entries, k = [], 0
    for i in range(rank):
        for j in range(rank):
            if i == j:
                entries.append(one)
            else:
                entries.append(shear[:, k])
                k += 1
    return ops.reshape(ops.stack(entries, axis=-1), (-1, rank, rank))


def affine_matrix(spatial_shape, rotation=None, scale=None, shear=None, translation=None):
    """Sampling matrices ``(B, r+1, r+1)`` for rotation, shear, scaling and translation about the centre.

    The output voxel ``x`` reads the input at ``c + R @ Sh @ (S @ (x - c) + t)`` with ``c`` the image
    centre, which is MONAI's ``AffineGrid`` order (``rotate @ shear @ translate @ scale`` on centred
    coordinates). Being a sampling map, ``scale > 1`` shrinks the visible anatomy (zooms out), as in
    MONAI; rotating by ``+a`` turns the image content by ``-a``.

    Args:
        spatial_shape: ``(H, W)`` or ``(D, H, W)``.
        rotation: ``(B, 1)`` (2D) or ``(B, 3)`` (3D) angles in radians, or None.
        scale: ``(B, r)`` scale factors (1 = unchanged), or None.
        shear: ``(B, r(r-1))`` shear coefficients, or None.
        translation: ``(B, r)`` in voxels, or None.
        At least one must be given; it sets the batch size.

    Returns:
        Tensor ``(B, r+1, r+1)``.
    """
    rank = len(spatial_shape)
    given = [p for p in (rotation, scale, shear, translation) if p is not None]
    if not given:
        raise ValueError("affine_matrix needs at least one of rotation, scale, shear, translation.")
    batch = ops.shape(given[0])[0]
    eye = ops.broadcast_to(ops.eye(rank, dtype="float32")[None], (batch, rank, rank))
    linear = eye
    if scale is not None:
        linear = ops.cast(scale, "float32")[:, None, :] * eye  # diag(scale)
    offset = ops.zeros((batch, rank), dtype="float32")
    if translation is not None:
        offset = ops.cast(translation, "float32")
    outer = eye
    if rotation is not None:
        outer = rotation_matrix(rotation)
    if shear is not None:
        outer = ops.matmul(outer, shear_matrix(shear, rank))
    linear = ops.matmul(outer, linear)
    offset = ops.einsum("bij,bj->bi", outer, offset)
    centre = ops.convert_to_tensor([(int(n) - 1) / 2.0 for n in spatial_shape], dtype="float32")
    # x_in = c + L (x - c) + o  =  L x + (c - L c + o)
    shift = centre[None] - ops.einsum("bij,j->bi", linear, centre) + offset
    top = ops.concatenate([linear, shift[:, :, None]], axis=-1)
    bottom = ops.broadcast_to(
        ops.convert_to_tensor([[0.0] * rank + [1.0]], dtype="float32")[None], (batch, 1, rank + 1)
    )
    return ops.concatenate([top, bottom], axis=1)


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


def _fold(coords, size, padding):
    """Bring coordinates into the valid range for 'border' and 'reflection' padding."""
    top = float(size - 1)
    if padding == "border":
        return ops.clip(coords, 0.0, top)
    if padding == "reflection":
        if size == 1:
            return ops.zeros_like(coords)
        period = 2.0 * top
        c = ops.abs(coords - period * ops.floor(coords / period))
        return ops.clip(ops.where(c > top, period - c, c), 0.0, top)
    return coords


def _check_modes(interpolation, padding):
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"`interpolation` must be one of {INTERPOLATIONS}, got {interpolation!r}.")
    if padding not in PADDING_MODES:
        raise ValueError(f"`padding` must be one of {PADDING_MODES}, got {padding!r}.")


def _corner_terms(coords, in_shape, padding):
    """Per-axis corner indices and weights of every output point.

    Args:
        coords: ``(B, N, rank)`` input voxel coordinates.
        in_shape: the input's spatial shape.
        padding: one of :data:`PADDING_MODES`.

    Returns:
        For each axis ``(lower, upper, frac, nearest, valid)``: the lower and upper neighbour
        indices (clipped into range), the linear weight of the upper one, the nearest neighbour's
        index (``upper`` where ``frac >= 0.5``) and, for zero padding only, float masks
        ``(lower_valid, upper_valid, nearest_valid)`` of the corners that lie inside (else None).
    """
    terms = []
    for axis, size in enumerate(in_shape):
        c = _fold(coords[..., axis], size, padding)
        lower = ops.floor(c)
        frac = c - lower
        lower_i = ops.cast(lower, "int32")
        upper_i = lower_i + 1
        nearest_i = ops.where(frac >= 0.5, upper_i, lower_i)
        valid = None
        if padding == "zeros":
            valid = tuple(ops.cast(ops.logical_and(i >= 0, i <= size - 1), "float32")
                          for i in (lower_i, upper_i, nearest_i))
        clip = [ops.clip(i, 0, size - 1) for i in (lower_i, upper_i, nearest_i)]
        terms.append((clip[0], clip[1], frac, clip[2], valid))
    return terms


def _strides(in_shape):
    """Flat-index stride of each spatial axis of a C-ordered ``in_shape``."""
    strides = [1] * len(in_shape)
    for a in range(len(in_shape) - 2, -1, -1):
        strides[a] = strides[a + 1] * int(in_shape[a + 1])
    return strides


def _take(flat, idx):
    """Rows ``idx`` of ``flat`` ``(N, C)``; a one-channel table is gathered as a vector (faster)."""
    if flat.shape[-1] == 1:
        return ops.take(flat[:, 0], idx, axis=0)[..., None]
    return ops.take(flat, idx, axis=0)


def _linear_gather(flat, base, terms, strides):
    """Bi/trilinear interpolation: ``2**rank`` gathers from ``flat`` ``(B*N_in, C)`` with shared weights."""
    out = None
    for corner in itertools.product((0, 1), repeat=len(terms)):
        idx, weight = base, None
        for axis, k in enumerate(corner):
            lower, upper, frac, _, valid = terms[axis]
            idx = idx + (upper if k else lower) * strides[axis]
            w = frac if k else 1.0 - frac
            if valid is not None:
                w = w * valid[k]
            weight = w if weight is None else weight * w
        term = _take(flat, idx) * weight[..., None]  # (B, N_out, C)
        out = term if out is None else out + term
    return out


def _nearest_gather(flat, base, terms, strides):
    """Nearest-neighbour sampling: ONE gather from ``flat`` ``(B*N_in, C)`` at the nearest corner.

    The values are copied, not blended, so integer labels keep their dtype and their classes;
    with zero padding, points outside read 0.
    """
    idx, valid = base, None
    for axis, (_, _, _, nearest, masks) in enumerate(terms):
        idx = idx + nearest * strides[axis]
        if masks is not None:
            valid = masks[2] if valid is None else valid * masks[2]
    out = _take(flat, idx)
    if valid is not None:
        out = ops.where(valid[..., None] > 0, out, ops.zeros_like(out))
    return out


def _flat_sample(values, coords, padding, interpolation, terms=None):
    """Core sampler: every channel of ``values`` with one ``interpolation`` at ``coords``.

    Args:
        values: ``(B, *in_spatial, C)`` (float32 for linear; any dtype for nearest).
        coords: ``(B, *out_spatial, rank)``.
        terms: precomputed :func:`_corner_terms` of these coordinates (shared by image and label).

    Returns:
        ``(B, *out_spatial, C)``.
    """
    rank = coords.shape[-1]
    in_shape = [int(n) for n in values.shape[1:-1]]
    channels = values.shape[-1]
    batch = ops.shape(values)[0]
    n_in = 1
    for n in in_shape:
        n_in *= n
    out_shape = (-1, *[int(n) for n in coords.shape[1:-1]], channels)
    if terms is None:
        terms = _corner_terms(ops.reshape(ops.cast(coords, "float32"), (batch, -1, rank)), in_shape, padding)
    flat = ops.reshape(values, (-1, channels))
    base = ops.arange(batch, dtype="int32")[:, None] * n_in
    gather = _linear_gather if interpolation == "linear" else _nearest_gather
    return ops.reshape(gather(flat, base, terms, _strides(in_shape)), out_shape)


def sample(image, grid, interpolation="linear", padding="zeros"):
    """Read a batch of images at fractional voxel coordinates (bi/trilinear or nearest).

    Args:
        image: ``(B, *in_spatial, C)``.
        grid: ``(B, *out_spatial, rank)`` input voxel indices to read (see the module docstring).
        interpolation: ``"linear"`` (bilinear in 2D, trilinear in 3D) or ``"nearest"``.
        padding: ``"zeros"``, ``"border"`` or ``"reflection"``.

    Returns:
        ``(B, *out_spatial, C)`` in the image's float dtype (integer images come back float32).
    """
    _check_modes(interpolation, padding)
    image = ops.convert_to_tensor(image)
    rank = len(image.shape) - 2
    if rank not in (2, 3) or grid.shape[-1] != rank or len(grid.shape) != rank + 2:
        raise ValueError(
            f"sample expects image (B, *spatial, C) with 2 or 3 spatial axes and grid "
            f"(B, *out_spatial, {rank}); got image {image.shape} and grid {grid.shape}."
        )
    dtype = image.dtype if "float" in str(image.dtype) else "float32"
    out = _flat_sample(ops.cast(image, "float32"), grid, padding, interpolation)
    return ops.cast(out, dtype)


def _label_channels(label, rank):
    """Return ``(label as (B, *spatial, 1+) in its own dtype, had_channel_axis)``."""
    label = ops.convert_to_tensor(label)
    if len(label.shape) == rank + 1:
        return label[..., None], False
    if len(label.shape) == rank + 2:
        return label, True
    raise ValueError(
        f"`label` must be (B, *spatial) or (B, *spatial, C) with {rank} spatial axes, got {label.shape}."
    )


def sample_image_and_label(image, label, grid, padding="zeros", label_padding=None, interpolation="linear"):
    """Resample an image (linear) and its label map (nearest) at the same grid.

    The corner indices and weights are computed once for both: the image is interpolated from its
    ``2**rank`` neighbours, and the label is copied from the nearest of those same neighbours (the
    upper one on each axis where the fractional part is >= 0.5) in ONE gather in its own dtype, so
    class values are never blended and stay exactly the same set of integers. (Carrying the label
    as an extra channel through all ``2**rank`` gathers gives the same values 2-3x slower.)

    Args:
        image: ``(B, *spatial, C)`` float.
        label: ``(B, *spatial)`` or ``(B, *spatial, L)`` integer or float label map.
        grid: ``(B, *out_spatial, rank)``.
        padding: padding for the image. ``label_padding`` (default: the same) for the label; with
            ``"zeros"`` outside voxels become class 0 (background).
        interpolation: the image's, ``"linear"`` or ``"nearest"`` (lossless flips and 90-degree
            rotations); the label is always sampled nearest.

    Returns:
        ``(image, label)`` resampled; the label keeps its dtype and its shape convention.
    """
    _check_modes(interpolation, padding)
    label_padding = padding if label_padding is None else label_padding
    _check_modes("nearest", label_padding)
    image = ops.convert_to_tensor(image)
    rank = len(image.shape) - 2
    lab, had_channel = _label_channels(label, rank)
    in_shape = [int(n) for n in image.shape[1:-1]]
    if grid.shape[-1] != rank or len(grid.shape) != rank + 2 or list(lab.shape[1:-1]) != in_shape:
        raise ValueError(f"sample_image_and_label expects a label with the image's spatial shape and grid "
                         f"(B, *out_spatial, {rank}); got image {image.shape}, label {tuple(lab.shape)} "
                         f"and grid {grid.shape}.")
    coords = ops.reshape(ops.cast(grid, "float32"), (ops.shape(image)[0], -1, rank))
    terms = _corner_terms(coords, in_shape, padding)
    dtype = image.dtype if "float" in str(image.dtype) else "float32"
    out_image = ops.cast(_flat_sample(ops.cast(image, "float32"), grid, padding, interpolation, terms), dtype)
    if label_padding != padding:
        terms = _corner_terms(coords, in_shape, label_padding)
    out_label = _flat_sample(lab, grid, label_padding, "nearest", terms)
    if not had_channel:
        out_label = out_label[..., 0]
    return out_image, out_label


def warp(image, displacement, interpolation="linear", padding="border"):
    """Warp images by a dense displacement field: ``out(x) = image(x + u(x))``.

    Args:
        image: ``(B, *spatial, C)``.
        displacement: ``(B, *spatial, rank)`` in voxels.
        interpolation, padding: see :func:`sample`.

    Returns:
        ``(B, *spatial, C)``.
    """
    return sample(image, displacement_to_grid(ops.cast(displacement, "float32")), interpolation, padding)


def affine_transform(image, matrix, output_shape=None, interpolation="linear", padding="zeros"):
    """Resample images through affine sampling matrices (output index -> input index).

    ``affine_transform(x, M)`` equals ``scipy.ndimage.affine_transform(x[b, ..., c], M[b],
    order=1, mode="grid-constant")`` per sample and channel, up to float32 rounding.

    Args:
        image: ``(B, *spatial, C)``.
        matrix: ``(B, r+1, r+1)`` or ``(r+1, r+1)`` (broadcast over the batch).
        output_shape: output spatial shape (default: the input's).
        interpolation, padding: see :func:`sample`.

    Returns:
        ``(B, *output_shape, C)``.
    """
    image = ops.convert_to_tensor(image)
    output_shape = tuple(image.shape[1:-1]) if output_shape is None else tuple(output_shape)
    matrix = ops.convert_to_tensor(matrix, dtype="float32")
    if len(matrix.shape) == 2:
        matrix = ops.broadcast_to(matrix[None], (ops.shape(image)[0], *matrix.shape))
    return sample(image, affine_grid(matrix, output_shape), interpolation, padding)
