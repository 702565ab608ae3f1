"""Tests for data_utils.synthetic.phantom: the shared 2D/3D phantom primitives."""

import numpy as np
import pytest

from data_utils.synthetic import phantom


@pytest.mark.parametrize("shape,spacing", [((4, 6), (2.0, 0.5)), ((3, 4, 5), 1.5)])
def test_coordinate_grid(shape, spacing):
    grid = phantom.coordinate_grid(shape, spacing)
    assert grid.shape == shape + (len(shape),) and grid.dtype == np.float32
    np.testing.assert_allclose(grid.reshape(-1, len(shape)).mean(axis=0), 0.0, atol=1e-5)
    step = np.broadcast_to(spacing, (len(shape),))
    np.testing.assert_allclose(grid[(1,) * len(shape)] - grid[(0,) * len(shape)], step)
    corner = phantom.coordinate_grid(shape, spacing, center=False)
    np.testing.assert_allclose(corner[(0,) * len(shape)], 0.0)


@pytest.mark.parametrize("ndim", [2, 3])
def test_random_rotation_is_a_rotation(ndim):
    rotation = phantom.random_rotation(np.random.default_rng(0), ndim, 40.0)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(ndim), atol=1e-12)
    assert np.linalg.det(rotation) == pytest.approx(1.0)
    np.testing.assert_allclose(phantom.random_rotation(np.random.default_rng(0), ndim, 0.0), np.eye(ndim))
    with pytest.raises(ValueError, match="ndim"):
        phantom.random_rotation(np.random.default_rng(0), 4)


def test_ellipsoid_distance_is_signed_distance_along_axes():
    grid = phantom.coordinate_grid((81, 81, 81), 0.5)
    d = phantom.ellipsoid_distance(grid, (0, 0, 0), (5, 10, 15))
    assert d[40, 40, 40] < 0
    # On the axes the estimate is the exact distance to the surface.
    assert d[40 + 16, 40, 40] == pytest.approx(3.0, abs=1e-3)  # 8 mm along the 5 mm semi-axis
    assert d[40, 40, 40 + 24] == pytest.approx(-3.0, abs=1e-3)
    volume = np.count_nonzero(d < 0) * 0.5**3
    assert volume == pytest.approx(4 / 3 * np.pi * 5 * 10 * 15, rel=0.02)
    # A rotation by 90 degrees in the (1, 2) plane swaps the semi-axes.
    rot = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=float)
    rotated = phantom.ellipsoid_distance(grid, (0, 0, 0), (5, 10, 15), rot)
    np.testing.assert_allclose(rotated, np.swapaxes(d, 1, 2), atol=1e-4)
    with pytest.raises(ValueError, match="radii"):
        phantom.ellipsoid_distance(grid, (0, 0, 0), (0, 1, 1))


def test_ellipse_distance_2d():
    grid = phantom.coordinate_grid((21, 21), 0.5)
    d = phantom.ellipsoid_distance(grid, (1.0, 0.0), (2.0, 3.0))
    assert d[12, 10] < 0 and d[0, 0] > 0
    assert d[10 + 2 + 4, 10] == pytest.approx(0.0, abs=1e-3)  # y = 3 mm = centre + radius


@pytest.mark.parametrize("shape", [(16, 20), (8, 16, 12)])
def test_smooth_field_is_smooth_normalised_and_seeded(shape):
    field = phantom.smooth_field(shape, np.random.default_rng(1), cell=6)
    assert field.shape == shape and field.dtype == np.float32
    assert abs(field.mean()) < 1e-4 and field.std() == pytest.approx(1.0, abs=1e-3)
    white = np.random.default_rng(1).standard_normal(shape)
    # Neighbouring values are strongly correlated, unlike white noise.
    assert np.mean(np.abs(np.diff(field, axis=-1))) < 0.3 * np.mean(np.abs(np.diff(white, axis=-1)))
    np.testing.assert_array_equal(field, phantom.smooth_field(shape, np.random.default_rng(1), cell=6))
    assert not np.array_equal(field, phantom.smooth_field(shape, np.random.default_rng(2), cell=6))


def test_random_displacement_bounded():
    disp = phantom.random_displacement((6, 10, 12), np.random.default_rng(0), max_mm=3.0)
    assert disp.shape == (6, 10, 12, 3) and np.abs(disp).max() <= 3.0 + 1e-6 and np.abs(disp).max() > 0.5


def test_blob_distance_irregularity():
    grid = phantom.coordinate_grid((32, 32), 1.0)
    plain = phantom.blob_distance(grid, np.random.default_rng(0), (0, 0), (8, 10))
    np.testing.assert_allclose(plain, phantom.ellipsoid_distance(grid, (0, 0), (8, 10)))
    wobbly = phantom.blob_distance(grid, np.random.default_rng(0), (0, 0), (8, 10), irregularity_mm=1.5, max_angle_deg=30)
    assert 0.5 < np.std(wobbly - plain) < 20


def test_soft_mask_partial_volume():
    distance = np.array([-10.0, -0.5, 0.0, 0.5, 10.0])
    soft = phantom.soft_mask(distance, 0.5)
    np.testing.assert_allclose(soft[[0, 2, 4]], [1.0, 0.5, 0.0], atol=1e-4)
    assert 0.5 < soft[1] < 1.0 and 0.0 < soft[3] < 0.5 and soft[1] + soft[3] == pytest.approx(1.0)
    np.testing.assert_array_equal(phantom.soft_mask(distance, 0.0), [1, 1, 0, 0, 0])


def test_paint_blends_by_membership():
    image = np.full(3, 10.0, np.float32)
    out = phantom.paint(image, np.array([0.0, 0.25, 1.0], np.float32), 2.0)
    np.testing.assert_allclose(out, [10.0, 8.0, 2.0])
    assert out is image


def test_texture_statistics():
    tex = phantom.texture((32, 32), np.random.default_rng(0), sigma_vox=2.0)
    assert tex.mean() == pytest.approx(0.0, abs=1e-5) and tex.std() == pytest.approx(1.0, abs=1e-3)
    assert np.corrcoef(tex[:, :-1].ravel(), tex[:, 1:].ravel())[0, 1] > 0.7


def test_slice_profile_blur_and_downsample_mean():
    image = np.zeros((9, 9), np.float32)
    image[4, 4] = 1.0
    blurred = phantom.slice_profile_blur(image, (1.0, 1.0), fwhm_vox=2.0)
    assert blurred.sum() == pytest.approx(1.0, abs=1e-5) and blurred[4, 4] < 0.5 and blurred[4, 5] > 0
    array = np.arange(16, dtype=np.float32).reshape(4, 4)
    np.testing.assert_allclose(phantom.downsample_mean(array, 2), [[2.5, 4.5], [10.5, 12.5]])
    with pytest.raises(ValueError, match="divisible"):
        phantom.downsample_mean(array, 3)


def test_bias_field_and_rician_noise_are_seeded():
    image = np.full((6, 12, 12), 100.0, np.float32)
    biased = phantom.bias_field(image, np.random.default_rng(0), coeff_range=(-0.2, 0.2))
    np.testing.assert_array_equal(biased, phantom.bias_field(image, np.random.default_rng(0), coeff_range=(-0.2, 0.2)))
    assert biased.std() > 1.0 and biased.min() > 0
    # A bias field is smooth: neighbouring voxels differ far less than the field varies overall.
    assert np.abs(np.diff(biased, axis=-1)).max() < 0.5 * (biased.max() - biased.min())
    np.testing.assert_allclose(phantom.bias_field(image, np.random.default_rng(0), coeff_range=(0.0, 0.0)), image)

    noisy = phantom.rician_noise(np.zeros((64, 64), np.float32), np.random.default_rng(0), sigma=2.0)
    # Rician noise on zero signal is Rayleigh: mean sigma * sqrt(pi / 2), never negative.
    assert noisy.min() >= 0 and noisy.mean() == pytest.approx(2.0 * np.sqrt(np.pi / 2), rel=0.05)
    np.testing.assert_array_equal(noisy, phantom.rician_noise(np.zeros((64, 64), np.float32), np.random.default_rng(0), 2.0))
