"""Tests for data_utils.augment: seeded, batched 2D/3D augmentations and their composition."""

import numpy as np
import pytest
import tensorflow as tf

from data_utils import augment


def _volume(rng, shape=(2, 16, 16, 16, 1)):
    return rng.uniform(0.5, 1.5, size=shape).astype("float32")


def test_bias_field_is_smooth_positive_and_seeded(rng):
    x = np.ones((2, 16, 16, 16, 1), "float32")
    a = augment.bias_field(x, seed=3).numpy()
    assert a.shape == x.shape
    np.testing.assert_array_equal(a, augment.bias_field(x, seed=3).numpy())
    assert np.abs(a - augment.bias_field(x, seed=4).numpy()).max() > 1e-3
    assert (a > 0).all()
    # Smooth: on average neighbouring voxels differ far less than the field varies overall.
    assert np.abs(np.diff(a, axis=1)).mean() < 0.15 * (a.max() - a.min())
    # The two samples of the batch get different fields.
    assert np.abs(a[0] - a[1]).max() > 1e-3


def test_bias_field_identity_cases(rng):
    x = _volume(rng, (2, 32, 32, 1))
    np.testing.assert_array_equal(augment.bias_field(x, 1, prob=0.0).numpy(), x)
    np.testing.assert_array_equal(augment.bias_field(x, 1, coeff_range=(0.0, 0.0)).numpy(), x)
    with pytest.raises(ValueError, match="prob"):
        augment.bias_field(x, 1, prob=1.5)
    with pytest.raises(ValueError, match="batched"):
        augment.bias_field(x[0], 1)


def test_rician_noise_statistics_and_identity(rng):
    x = np.full((2, 32, 32, 1), 5.0, "float32")
    out = augment.rician_noise(x, [1, 2], std=0.5, sample_std=False).numpy()
    assert (out >= 0).all()
    # For a large signal A, Rician ~ N(sqrt(A^2 + s^2), s): std close to s.
    assert abs(out.std() - 0.5) < 0.1
    np.testing.assert_array_equal(out, augment.rician_noise(x, [1, 2], std=0.5, sample_std=False).numpy())
    assert not np.array_equal(out, augment.rician_noise(x, [1, 3], std=0.5, sample_std=False).numpy())
    np.testing.assert_array_equal(augment.rician_noise(x, 1, prob=0.0).numpy(), x)
    np.testing.assert_allclose(augment.rician_noise(x, 1, std=0.0).numpy(), x, rtol=1e-6)
