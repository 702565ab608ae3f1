"""Tests for data_utils.spatial: the kit's batched 2D/3D resampler (keras.ops only)."""

import inspect
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.ndimage as ndi

from data_utils import spatial

SCIPY_MODE = {"zeros": "grid-constant", "border": "nearest", "reflection": "mirror"}


def _matrices(shape, batch=2):
    rank = len(shape)
    rotation = np.array([[0.3]] if rank == 2 else [[0.2, -0.1, 0.3]], "float32").repeat(batch, 0)
    rotation[1] *= -1.5
    return spatial.affine_matrix(
        shape,
        rotation=rotation,
        scale=np.full((batch, rank), 1.1, "float32"),
        shear=np.full((batch, rank * (rank - 1)), 0.05, "float32"),
        translation=np.full((batch, rank), 1.5, "float32"),
    ).numpy()


def _scipy_affine(x, matrices, order, mode):
    return np.stack([
        np.stack([ndi.affine_transform(x[b, ..., c], matrices[b], order=order, mode=mode)
                  for c in range(x.shape[-1])], -1)
        for b in range(x.shape[0])
    ])


def test_identity_grid_holds_voxel_indices():
    grid = np.asarray(spatial.identity_grid((3, 4, 5)))
    assert grid.shape == (3, 4, 5, 3)
    np.testing.assert_array_equal(grid[2, 1, 4], [2, 1, 4])


@pytest.mark.parametrize("shape", [(20, 24), (10, 12, 14)])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
def test_affine_matches_scipy_linear(rng, shape, padding):
    x = rng.random((2, *shape, 2)).astype("float32")
    matrices = _matrices(shape)
    out = np.asarray(spatial.affine_transform(x, matrices, padding=padding))
    ref = _scipy_affine(x, matrices, order=1, mode=SCIPY_MODE[padding])
    np.testing.assert_allclose(out, ref, atol=1e-4)


@pytest.mark.parametrize("shape", [(20, 24), (10, 12, 14)])
def test_nearest_and_label_match_scipy_order0(rng, shape):
    x = rng.random((2, *shape, 1)).astype("float32")
    label = rng.integers(0, 4, (2, *shape)).astype("int32")
    matrices = _matrices(shape)
    out = np.asarray(spatial.affine_transform(x, matrices, interpolation="nearest"))
    np.testing.assert_allclose(out, _scipy_affine(x, matrices, 0, "grid-constant"), atol=1e-6)
    image, warped = spatial.sample_image_and_label(x, label, spatial.affine_grid(matrices, shape))
    warped = np.asarray(warped)
    assert warped.dtype == np.int32 and warped.shape == label.shape
    np.testing.assert_array_equal(warped, _scipy_affine(label[..., None], matrices, 0, "grid-constant")[..., 0])
    np.testing.assert_allclose(np.asarray(image), _scipy_affine(x, matrices, 1, "grid-constant"), atol=1e-4)


def test_label_with_channel_axis_keeps_its_shape(rng):
    label = rng.integers(0, 3, (1, 8, 8, 1)).astype("int32")
    image = rng.random((1, 8, 8, 2)).astype("float32")
    grid = spatial.identity_grid((8, 8))[None]
    out_image, out_label = spatial.sample_image_and_label(image, label, grid)
    np.testing.assert_array_equal(np.asarray(out_label), label)
    np.testing.assert_allclose(np.asarray(out_image), image, atol=1e-6)


def test_warp_zero_and_integer_displacement(rng):
    x = rng.random((2, 12, 10, 8, 1)).astype("float32")
    zero = np.zeros((2, 12, 10, 8, 3), "float32")
    np.testing.assert_allclose(np.asarray(spatial.warp(x, zero)), x, atol=1e-6)
    shift = zero.copy()
    shift[..., 2] = 2.0  # read two voxels further along the last axis
    out = np.asarray(spatial.warp(x, shift, padding="border"))
    np.testing.assert_allclose(out[..., :-2, :], x[..., 2:, :], atol=1e-6)
    np.testing.assert_allclose(out[..., -2:, :], np.repeat(x[..., -1:, :], 2, axis=3), atol=1e-6)


def test_affine_matrix_identity_and_exact_rotation(rng):
    shape = (9, 9)
    identity = spatial.affine_matrix(shape, rotation=np.zeros((1, 1), "float32"),
                                     scale=np.ones((1, 2), "float32"))
    np.testing.assert_allclose(np.asarray(identity)[0], np.eye(3), atol=1e-7)
    x = rng.random((1, *shape, 1)).astype("float32")
    quarter = spatial.affine_matrix(shape, rotation=np.full((1, 1), np.pi / 2, "float32"))
    out = np.asarray(spatial.affine_transform(x, quarter))
    # Sampling x_in = R x_out with R a +90 degree rotation turns the content by -90 degrees.
    np.testing.assert_allclose(out[0, ..., 0], np.rot90(x[0, ..., 0], k=-1), atol=1e-4)


def test_compose_all_affine_stays_a_matrix_and_equals_product():
    shape = (6, 7)
    a = spatial.affine_matrix(shape, translation=np.array([[1.0, 2.0]], "float32"))
    b = spatial.affine_matrix(shape, scale=np.array([[1.2, 0.9]], "float32"))
    kind, m = spatial.compose_grid([("affine", a), ("affine", b)], shape)
    assert kind == "affine"
    np.testing.assert_allclose(np.asarray(m), np.asarray(a) @ np.asarray(b), atol=1e-6)


def test_compose_fuses_affine_and_displacement_like_sequential_resampling():
    shape = (24, 24)
    yy, xx = np.meshgrid(np.arange(24), np.arange(24), indexing="ij")
    smooth = np.sin(yy / 5.0) * np.cos(xx / 4.0)
    x = smooth[None, ..., None].astype("float32")
    a = spatial.affine_matrix(shape, rotation=np.array([[0.2]], "float32"))
    u = np.zeros((1, *shape, 2), "float32")
    u[..., 0] = 1.5 * np.sin(xx / 6.0)
    kind, grid = spatial.compose_grid([("affine", a), ("displacement", u)], shape)
    assert kind == "grid"
    fused = np.asarray(spatial.sample(x, grid, padding="border"))
    step1 = spatial.affine_transform(x, a, padding="border")
    sequential = np.asarray(spatial.warp(step1, u, padding="border"))
    inner = (slice(None), slice(4, -4), slice(4, -4))
    np.testing.assert_allclose(fused[inner], sequential[inner], atol=0.03)


def test_errors_name_the_problem(rng):
    x = rng.random((1, 8, 8, 1)).astype("float32")
    grid = spatial.identity_grid((8, 8))[None]
    with pytest.raises(ValueError, match="padding"):
        spatial.sample(x, grid, padding="wrap")
    with pytest.raises(ValueError, match="interpolation"):
        spatial.sample(x, grid, interpolation="cubic")
    with pytest.raises(ValueError, match="grid"):
        spatial.sample(x, spatial.identity_grid((8, 8, 8))[None])
    with pytest.raises(ValueError, match="matrix"):
        spatial.affine_grid(np.eye(4, dtype="float32"), (8, 8))
    with pytest.raises(ValueError, match="empty"):
        spatial.compose_grid([], (8, 8))


@pytest.mark.slow
def test_xla_compiled_sampling_matches_eager(rng):
    tf = pytest.importorskip("tensorflow")
    x = rng.random((2, 10, 10, 10, 1)).astype("float32")
    matrices = _matrices((10, 10, 10))

    def run(x, m):
        return spatial.affine_transform(x, m, padding="reflection")

    eager = np.asarray(run(x, matrices))
    compiled = tf.function(run, jit_compile=True)(x, matrices).numpy()
    np.testing.assert_allclose(compiled, eager, atol=1e-5)


def test_module_uses_keras_ops_only():
    source = inspect.getsource(spatial)
    assert "import tensorflow" not in source and "import torch" not in source and "import jax" not in source


@pytest.mark.slow
def test_runs_on_the_jax_backend():
    pytest.importorskip("jax")
    code = textwrap.dedent("""
        import numpy as np, scipy.ndimage as ndi
        from data_utils import spatial
        x = np.random.default_rng(0).random((1, 9, 10, 11, 1)).astype("float32")
        m = spatial.affine_matrix((9, 10, 11), rotation=np.array([[0.1, 0.2, 0.3]], "float32"))
        out = np.asarray(spatial.affine_transform(x, m))
        ref = ndi.affine_transform(x[0, ..., 0], np.asarray(m)[0], order=1, mode="grid-constant")
        assert np.abs(out[0, ..., 0] - ref).max() < 1e-4, np.abs(out[0, ..., 0] - ref).max()
        import keras; print(keras.backend.backend())
    """)
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            cwd=os.getcwd(), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("jax")


def test_warp_is_differentiable_in_the_displacement(rng):
    tf = pytest.importorskip("tensorflow")
    yy, xx = np.meshgrid(np.arange(12), np.arange(12), indexing="ij")
    x = np.sin(yy / 3.0 + xx / 4.0)[None, ..., None].astype("float32")
    u = tf.Variable(np.full((1, 12, 12, 2), 0.3, "float32"))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(spatial.warp(x, u, padding="border") ** 2)
    grad = tape.gradient(loss, u).numpy()
    assert np.abs(grad).max() > 1e-3
    # Matches a finite difference of the loss along one displacement entry (interior voxel).
    eps = 1e-2
    bumped = u.numpy().copy()
    bumped[0, 5, 6, 1] += eps
    numeric = (float(tf.reduce_sum(spatial.warp(x, bumped, padding="border") ** 2)) - float(loss)) / eps
    assert numeric == pytest.approx(grad[0, 5, 6, 1], rel=0.1, abs=1e-3)


def _np_upsample(x, out_shape, ratios):
    """Reference: np.interp along each spatial axis at input index i * ratio (clamped)."""
    for axis, (n_out, ratio) in enumerate(zip(out_shape, ratios)):
        n_in = x.shape[axis + 1]
        points = np.clip(np.arange(n_out) * ratio, 0, n_in - 1)
        x = np.apply_along_axis(lambda v: np.interp(points, np.arange(n_in), v), axis + 1, x)
    return x


@pytest.mark.parametrize("out_shape, ratios", [
    ((24, 17, 13), (0.5, 0.5, 0.5)),  # integer factors: the slice-and-blend path
    ((24, 17, 19), (0.5, 0.5, 1 / 3)),
    ((20, 16, 12), (12 / 19, 8 / 15, 6 / 11)),  # corner-aligned control points: the gather path
])
def test_upsample_linear_matches_numpy_interp(rng, out_shape, ratios):
    x = rng.random((2, 13, 9, 7, 3)).astype("float32")
    out = np.asarray(spatial.upsample_linear(x, out_shape, ratios))
    assert out.shape == (2, *out_shape, 3)
    np.testing.assert_allclose(out, _np_upsample(x, out_shape, ratios), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(spatial.upsample_linear(x, (13, 9, 7), (1.0, 1.0, 1.0))), x)


def test_upsample_linear_compiles_with_an_unknown_batch(rng):
    tf = pytest.importorskip("tensorflow")
    x = rng.random((2, 7, 5, 2)).astype("float32")
    run = tf.function(lambda v: spatial.upsample_linear(v, (12, 9), (0.5, 0.5)), jit_compile=True,
                      input_signature=[tf.TensorSpec([None, 7, 5, 2])])
    np.testing.assert_allclose(run(x).numpy(), _np_upsample(x, (12, 9), (0.5, 0.5)), atol=1e-5)


@pytest.mark.parametrize("dtype", ["int32", "uint8", "float32"])
def test_label_is_copied_from_the_nearest_corner_in_its_dtype(rng, dtype):
    shape = (9, 10, 11)
    label = rng.integers(0, 5, (2, *shape)).astype(dtype)
    image = rng.random((2, *shape, 1)).astype("float32")
    matrices = _matrices(shape)
    grid = spatial.affine_grid(matrices, shape)
    out_image, out_label = spatial.sample_image_and_label(image, label, grid, padding="zeros")
    out_label = np.asarray(out_label)
    assert out_label.dtype == np.dtype(dtype) and out_label.shape == label.shape
    # The nearest neighbour of each output voxel, computed independently; outside reads class 0.
    g = np.asarray(grid)
    lower = np.floor(g)
    near = (lower + (g - lower >= 0.5)).astype(int)
    inside = np.all((near >= 0) & (near < np.array(shape)), axis=-1)
    near = np.clip(near, 0, np.array(shape) - 1)
    b = np.arange(2)[:, None, None, None]
    expected = np.where(inside, label[b, near[..., 0], near[..., 1], near[..., 2]], 0)
    np.testing.assert_array_equal(out_label, expected)
    np.testing.assert_allclose(np.asarray(out_image), _scipy_affine(image, matrices, 1, "grid-constant"), atol=1e-4)
    # Nearest image sampling reads the same voxels as the label.
    flat = np.asarray(spatial.sample_image_and_label(image, label, grid, padding="zeros", interpolation="nearest")[0])
    np.testing.assert_array_equal(flat[..., 0], np.where(inside, image[b, near[..., 0], near[..., 1], near[..., 2], 0], 0))


def test_label_of_another_shape_is_refused(rng):
    image = rng.random((1, 8, 8, 1)).astype("float32")
    with pytest.raises(ValueError, match="label"):
        spatial.sample_image_and_label(image, np.zeros((1, 8, 9), "int32"), spatial.identity_grid((8, 8))[None])


def test_apply_affine_to_grid_equals_the_affine_grid(rng):
    shape = (5, 6, 7)
    m = _matrices(shape)
    grid = spatial.apply_affine_to_grid(m, spatial.identity_grid(shape)[None].numpy().repeat(2, 0))
    np.testing.assert_allclose(np.asarray(grid), np.asarray(spatial.affine_grid(m, shape)), atol=1e-5)
    points = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    expected = np.einsum("bij,...j->b...i", m[:, :3, :3], points) + m[:, None, None, None, :3, 3]
    np.testing.assert_allclose(np.asarray(grid), expected, atol=1e-4)
