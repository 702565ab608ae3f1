"""Tests for data_utils.augment.spatial: flips, rotations, affine and elastic transforms with labels."""

import numpy as np
import pytest
import tensorflow as tf

from data_utils import augment
from tests.data_utils.augment.helpers import volume


def test_flip_prob_one_reverses_every_axis(rng):
    x = volume(rng, (2, 6, 7, 8, 1))
    label = rng.integers(0, 3, (2, 6, 7, 8)).astype("int32")
    out, lab = augment.flip(x, 1, label=label, prob=1.0)
    np.testing.assert_array_equal(out.numpy(), x[:, ::-1, ::-1, ::-1])
    np.testing.assert_array_equal(lab.numpy(), label[:, ::-1, ::-1, ::-1])
    np.testing.assert_array_equal(augment.flip(x, 1, prob=0.0).numpy(), x)
    only_last = augment.flip(x, 1, prob=1.0, axes=[-1]).numpy()
    np.testing.assert_array_equal(only_last, x[:, :, :, ::-1])


def test_rot90_is_an_exact_rotation(rng):
    x = volume(rng, (8, 6, 6, 1))
    out = augment.rot90(x, 4, prob=1.0).numpy()
    for b in range(8):
        assert any(np.array_equal(out[b, ..., 0], np.rot90(x[b, ..., 0], k)) for k in (1, 2, 3))
    with pytest.raises(ValueError, match="equal sizes"):
        augment.rot90(volume(rng, (1, 6, 8, 1)), 1)


@pytest.mark.parametrize("shape", [(2, 24, 24), (2, 16, 16, 16)])
def test_zero_strength_spatial_is_identity(rng, shape):
    x = volume(rng, (*shape, 1))
    np.testing.assert_allclose(augment.random_affine(x, 1).numpy(), x, atol=1e-5)
    np.testing.assert_allclose(augment.random_affine(x, 1, prob=0.0, rotation=0.5).numpy(), x, atol=1e-5)
    np.testing.assert_allclose(augment.elastic(x, 1, magnitude=0.0).numpy(), x, atol=1e-5)
    np.testing.assert_allclose(augment.elastic(x, 1, prob=0.0).numpy(), x, atol=1e-5)


def test_random_affine_matches_scipy_with_the_drawn_matrix(rng):
    import scipy.ndimage as ndi

    x = volume(rng, (2, 12, 14, 16, 1))
    kwargs = dict(rotation=0.3, scale=0.1, shear=0.05, translation=2.0)
    _, matrices = augment.draw_affine(tf.constant([3, 4]), 2, (12, 14, 16), **kwargs)
    out = augment.random_affine(x, [3, 4], padding="zeros", **kwargs).numpy()
    for b in range(2):
        ref = ndi.affine_transform(x[b, ..., 0], matrices.numpy()[b], order=1, mode="grid-constant")
        np.testing.assert_allclose(out[b, ..., 0], ref, atol=1e-4)
    assert not np.allclose(matrices[0], matrices[1]), "samples get their own parameters"


def test_elastic_fields_are_bounded_smooth_and_gated():
    shape = (24, 24, 24)
    _, control = augment.draw_elastic([1, 2], 2, shape, mode="control", magnitude=(2.0, 3.0),
                                      num_control_points=4)
    field = augment.realize_transform(("field", control), shape)[1].numpy()
    assert field.shape == (2, *shape, 3)
    assert 0.5 < np.abs(field).max() <= 3.0 + 1e-5
    _, gauss = augment.draw_elastic([1, 2], 2, shape, sigma=(4.0, 5.0), magnitude=(100.0, 100.0))
    field = augment.realize_transform(("field", gauss), shape)[1].numpy()
    assert field.shape == (2, *shape, 3) and np.abs(field).max() > 0.5
    # Smooth: neighbouring displacements differ much less than the displacements themselves.
    assert np.abs(np.diff(field, axis=1)).mean() < 0.2 * np.abs(field).mean()
    _, off = augment.draw_elastic([1, 2], 2, shape, prob=0.0)
    np.testing.assert_array_equal(augment.realize_transform(("field", off), shape)[1].numpy(), 0.0)
    with pytest.raises(ValueError, match="mode"):
        augment.draw_elastic([1, 2], 1, shape, mode="bspline")


@pytest.mark.parametrize("shape", [(3, 20, 24), (2, 12, 12, 12)])
def test_projective_is_seeded_keeps_lines_straight_and_zero_is_identity(rng, shape):
    x = volume(rng, (*shape, 1))
    np.testing.assert_allclose(augment.random_projective(x, 1, distortion=0.0).numpy(), x, atol=1e-5)
    np.testing.assert_allclose(augment.random_projective(x, 1, prob=0.0).numpy(), x, atol=1e-5)
    a = augment.random_projective(x, [4, 1], distortion=0.2).numpy()
    np.testing.assert_array_equal(a, augment.random_projective(x, [4, 1], distortion=0.2).numpy())
    assert np.abs(a - augment.random_projective(x, [4, 2], distortion=0.2).numpy()).max() > 1e-3
    kind, field = augment.draw_projective([4, 1], shape[0], shape[1:], distortion=0.2)
    assert kind == "displacement" and field.shape == (shape[0], *shape[1:], len(shape) - 1)
    # A homography maps straight lines to straight lines: the sample points of one grid line are collinear.
    points = np.moveaxis(np.indices(shape[1:]), 0, -1) + field.numpy()[0]
    line = points[(3,) * (len(shape) - 2)] - points[(3,) * (len(shape) - 2)][0]  # (W, rank), from its start
    unit = line[-1] / np.linalg.norm(line[-1])
    assert np.abs(line - np.outer(line @ unit, unit)).max() < 1e-3
    assert np.abs(field.numpy()).max() > 0.3  # and it does move the sample points


def test_projective_rejects_folding_distortion(rng):
    with pytest.raises(ValueError, match="distortion"):
        augment.random_projective(volume(rng, (1, 8, 8, 1)), 0, distortion=0.5)


def test_smooth_transform_leaves_only_the_upsampling_and_passes_others_through():
    from data_utils.augment.spatial import realize_for_xla, smooth_transform

    shape = (20, 20, 20)
    drawn = augment.draw_elastic([3, 4], 2, shape, sigma=(4.0, 5.0), magnitude=(10.0, 20.0))
    kind, smoothed = smooth_transform(drawn)
    assert kind == "field" and smoothed["sigma"] is None and smoothed["amplitude"] is None
    assert smoothed["noise"].shape == drawn[1]["noise"].shape  # still at the coarse resolution
    assert smooth_transform((kind, smoothed))[1] is smoothed, "smoothing twice is a no-op"
    direct = augment.realize_transform(drawn, shape)[1].numpy()
    np.testing.assert_allclose(augment.realize_transform((kind, smoothed), shape)[1].numpy(), direct, atol=1e-5)
    np.testing.assert_allclose(realize_for_xla(drawn, shape)[1].numpy(), direct, atol=1e-4)
    assert np.abs(direct).max() > 0.5
    affine = augment.draw_affine([1, 2], 2, shape, rotation=0.2)
    assert smooth_transform(affine) is affine and realize_for_xla(affine, shape) is affine
