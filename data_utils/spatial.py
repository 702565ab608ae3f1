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
    points = ops.reshape(identity_grid(spatial_shape), (-1, rank))
    coords = ops.einsum("bij,nj->bni", matrix[:, :, :rank], points) + matrix[:, None, :, rank]
    return ops.reshape(coords, (-1, *[int(n) for n in spatial_shape], rank))


def apply_affine_to_grid(matrix, grid):
    """Map every point of a grid ``(B, *spatial, rank)`` through affine matrices ``(B, rank+1, rank+1)``."""
    rank = grid.shape[-1]
    matrix = _as_batched_matrix(matrix, rank)
    b = ops.shape(grid)[0]
    flat = ops.reshape(grid, (b, -1, rank))
    out = ops.einsum("bij,bnj->bni", matrix[:, :, :rank], flat) + matrix[:, None, :, rank]
    return ops.reshape(out, ops.shape(grid))


def displacement_to_grid(displacement):
    """Sampling grid ``identity + displacement`` for a field ``(B, *spatial, rank)`` in voxels."""
    spatial_shape = displacement.shape[1:-1]
    return identity_grid(spatial_shape, dtype=displacement.dtype)[None] + displacement


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
    """Per-axis lower/upper indices, linear weights and nearest weights for every output point.

    Returns, for each axis, a list of two ``(index, w_linear, w_nearest)`` tuples (lower, upper).
    Indices are clipped into range; for zero padding the weights of out-of-range corners are 0.
    """
    terms = []
    for axis, size in enumerate(in_shape):
        c = _fold(coords[..., axis], size, padding)
        lower = ops.floor(c)
        frac = c - lower
        lower_i = ops.cast(lower, "int32")
        upper_i = lower_i + 1
        w_lin = (1.0 - frac, frac)
        up_near = ops.cast(frac >= 0.5, "float32")
        w_near = (1.0 - up_near, up_near)
        axis_terms = []
        for k, idx in enumerate((lower_i, upper_i)):
            wl, wn = w_lin[k], w_near[k]
            if padding == "zeros":
                valid = ops.cast(ops.logical_and(idx >= 0, idx <= size - 1), "float32")
                wl, wn = wl * valid, wn * valid
            axis_terms.append((ops.clip(idx, 0, size - 1), wl, wn))
        terms.append(axis_terms)
    return terms


def _gather_sample(values, coords, n_linear, padding, interpolation):
    """Core sampler: interpolate the first ``n_linear`` channels, nearest-sample the rest.

    Args:
        values: ``(B, *in_spatial, C)`` float32.
        coords: ``(B, *out_spatial, rank)``.
        n_linear: how many leading channels use ``interpolation``; the others use nearest.
    """
    rank = coords.shape[-1]
    in_shape = [int(n) for n in values.shape[1:-1]]
    channels = values.shape[-1]
    batch = ops.shape(values)[0]
    n_in = 1
    for n in in_shape:
        n_in *= n
    flat = ops.reshape(values, (-1, channels))
    out_shape = (-1, *[int(n) for n in coords.shape[1:-1]])
    coords = ops.reshape(ops.cast(coords, "float32"), (batch, -1, rank))
    base = ops.arange(batch, dtype="int32")[:, None] * n_in
    strides = [1] * rank
    for a in range(rank - 2, -1, -1):
        strides[a] = strides[a + 1] * in_shape[a + 1]

    if interpolation == "nearest" and n_linear == channels:
        idx = base
        weight = None
        for axis, size in enumerate(in_shape):
            c = _fold(coords[..., axis], size, padding)
            i = ops.cast(ops.floor(c + 0.5), "int32")
            if padding == "zeros":
                valid = ops.cast(ops.logical_and(i >= 0, i <= size - 1), "float32")
                weight = valid if weight is None else weight * valid
            idx = idx + ops.clip(i, 0, size - 1) * strides[axis]
        out = ops.take(flat, idx, axis=0)
        if weight is not None:
            out = out * weight[..., None]
        return ops.reshape(out, (*out_shape, channels))

    terms = _corner_terms(coords, in_shape, padding)
    linear_out = None
    nearest_out = None
    for corner in itertools.product((0, 1), repeat=rank):
        idx = base
        w_lin = None
        w_near = None
        for axis, k in enumerate(corner):
            i, wl, wn = terms[axis][k]
            idx = idx + i * strides[axis]
            w_lin = wl if w_lin is None else w_lin * wl
            w_near = wn if w_near is None else w_near * wn
        v = ops.take(flat, idx, axis=0)  # (B, N_out, C): one gather for all channels
        if interpolation == "nearest":
            w_lin = w_near
        if n_linear > 0:
            term = v[..., :n_linear] * w_lin[..., None]
            linear_out = term if linear_out is None else linear_out + term
        if n_linear < channels:
            term = v[..., n_linear:] * w_near[..., None]
            nearest_out = term if nearest_out is None else nearest_out + term
    parts = [p for p in (linear_out, nearest_out) if p is not None]
    out = parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)
    return ops.reshape(out, (*out_shape, channels))


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
    out = _gather_sample(ops.cast(image, "float32"), grid, image.shape[-1], padding, interpolation)
    return ops.cast(out, dtype)


def _label_channels(label, rank):
    """Return ``(label as (B, *spatial, 1+) float32, had_channel_axis)``."""
    label = ops.convert_to_tensor(label)
    if len(label.shape) == rank + 1:
        return ops.cast(label[..., None], "float32"), False
    if len(label.shape) == rank + 2:
        return ops.cast(label, "float32"), True
    raise ValueError(
        f"`label` must be (B, *spatial) or (B, *spatial, C) with {rank} spatial axes, got {label.shape}."
    )


def sample_image_and_label(image, label, grid, padding="zeros", label_padding=None):
    """Resample an image (linear) and its label map (nearest) at the same grid in one gather pass.

    The label is appended to the image's channels, so every corner is gathered once for both;
    the label channels are combined with nearest-neighbour weights, so class values are never
    blended and stay exactly the same set of integers.

    Args:
        image: ``(B, *spatial, C)`` float.
        label: ``(B, *spatial)`` or ``(B, *spatial, L)`` integer or float label map.
        grid: ``(B, *out_spatial, rank)``.
        padding: padding for the image. ``label_padding`` (default: the same) for the label; with
            ``"zeros"`` outside voxels become class 0 (background).

    Returns:
        ``(image, label)`` resampled; the label keeps its dtype and its shape convention.
    """
    _check_modes("linear", padding)
    label_padding = padding if label_padding is None else label_padding
    _check_modes("nearest", label_padding)
    image = ops.convert_to_tensor(image)
    rank = len(image.shape) - 2
    label_dtype = ops.convert_to_tensor(label).dtype
    lab, had_channel = _label_channels(label, rank)
    if label_padding != padding:
        out_image = sample(image, grid, "linear", padding)
        out_label = _gather_sample(lab, grid, 0, label_padding, "nearest")
    else:
        c = image.shape[-1]
        both = ops.concatenate([ops.cast(image, "float32"), lab], axis=-1)
        out = _gather_sample(both, grid, c, padding, "linear")
        out_image, out_label = ops.cast(out[..., :c], image.dtype), out[..., c:]
    if "int" in str(label_dtype):
        out_label = ops.round(out_label)
    out_label = ops.cast(out_label, label_dtype)
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
