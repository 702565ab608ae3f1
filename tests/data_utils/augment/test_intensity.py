"""Tests for data_utils.augment.intensity and .kspace: image-only augmentations (seeds, probability, identity, MONAI agreement)."""

import numpy as np
import pytest

from data_utils import augment
from tests.data_utils.augment.helpers import volume


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
    x = volume(rng, (2, 32, 32, 1))
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


# ---- every intensity augmentation: seeds, probability, identity, 2D and 3D --------------------

INTENSITY = {
    # name: (function, zero-strength kwargs)
    "bias_field": (augment.bias_field, {"coeff_range": (0.0, 0.0)}),
    "rician_noise": (augment.rician_noise, {"std": 0.0}),
    "gaussian_noise": (augment.gaussian_noise, {"std": 0.0}),
    "speckle_noise": (augment.speckle_noise, {"std": 0.0}),
    "gamma": (augment.gamma, {"gamma_range": (1.0, 1.0)}),
    "brightness": (augment.brightness, {"offset": 0.0}),
    "contrast": (augment.contrast, {"factor": (1.0, 1.0)}),
    "histogram_shift": (augment.histogram_shift, None),
    "gibbs_ringing": (augment.gibbs_ringing, {"alpha": (0.0, 0.0)}),
    "kspace_spikes": (augment.kspace_spikes, {"num_spikes": 0}),
    "gaussian_blur": (augment.gaussian_blur, {"sigma": (0.0, 0.0)}),
    "low_resolution": (augment.low_resolution, {"zoom_range": (1.0, 1.0)}),
    "cutout": (augment.cutout, {"size": (0.0, 0.0)}),
}


@pytest.mark.parametrize("name", sorted(INTENSITY))
@pytest.mark.parametrize("shape", [(2, 16, 16, 1), (2, 12, 12, 12, 2)])
def test_intensity_seeded_probability_and_identity(rng, name, shape):
    fn, zero = INTENSITY[name]
    x = volume(rng, shape)
    a = fn(x, [7, 1]).numpy()
    assert a.shape == x.shape and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, fn(x, [7, 1]).numpy())
    assert np.abs(a - fn(x, [7, 2]).numpy()).max() > 1e-4, "different seeds must differ"
    np.testing.assert_array_equal(fn(x, [7, 1], prob=0.0).numpy(), x)
    if zero is not None:
        np.testing.assert_allclose(fn(x, [7, 1], **zero).numpy(), x, atol=1e-5)


def test_probability_selects_samples_per_sample(rng):
    x = volume(rng, (64, 4, 4, 1))
    out = augment.brightness(x, 5, prob=0.5, offset=(1.0, 2.0)).numpy()
    changed = np.abs(out - x).reshape(64, -1).max(axis=1) > 0.5
    assert 15 < changed.sum() < 49


def test_gamma_keeps_the_intensity_range(rng):
    x = volume(rng, (2, 16, 16, 1))
    out = augment.gamma(x, 1, gamma_range=(2.0, 3.0)).numpy()
    np.testing.assert_allclose(out.min(axis=(1, 2, 3)), x.min(axis=(1, 2, 3)), atol=1e-5)
    np.testing.assert_allclose(out.max(axis=(1, 2, 3)), x.max(axis=(1, 2, 3)), atol=1e-5)
    assert out.mean() < x.mean()  # gamma > 1 darkens the mid-tones


def test_histogram_shift_is_monotone(rng):
    x = volume(rng, (1, 32, 32, 1))
    out = augment.histogram_shift(x, 3, num_control_points=6).numpy().ravel()
    order = np.argsort(x.ravel())
    assert (np.diff(out[order]) >= -1e-5).all()


# ---- agreement with MONAI's definitions ----------------------------------------------------------


@pytest.mark.slow
def test_bias_field_matches_monai_for_fixed_coefficients(rng):
    transforms = pytest.importorskip("monai.transforms")
    x = volume(rng, (1, 10, 12, 14, 1))
    ours = augment.bias_field(x, 1, degree=3, coeff_range=(0.05, 0.05)).numpy()[0, ..., 0]
    monai = transforms.RandBiasField(degree=3, coeff_range=(0.05, 0.05), prob=1.0)
    theirs = np.asarray(monai(x[0, ..., 0][None]))[0]
    np.testing.assert_allclose(ours, theirs, rtol=1e-4)


@pytest.mark.slow
def test_gamma_and_gibbs_match_monai(rng):
    transforms = pytest.importorskip("monai.transforms")
    x = volume(rng, (1, 16, 20, 1))
    ours = augment.gamma(x, 1, gamma_range=(2.0, 2.0)).numpy()[0, ..., 0]
    theirs = np.asarray(transforms.AdjustContrast(gamma=2.0)(x[0, ..., 0][None]))[0]
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    ours = augment.gibbs_ringing(x, 1, alpha=(0.4, 0.4)).numpy()[0, ..., 0]
    theirs = np.asarray(transforms.GibbsNoise(alpha=0.4)(x[0, ..., 0][None]))[0]
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


# ---- CT windowing in Hounsfield units ---------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 16, 16, 1), (2, 8, 8, 8, 1)])
def test_ct_window_seeded_jitter_and_zero_jitter_is_the_fixed_window(rng, shape):
    from data_utils.preprocess import window_ct_tf

    hu = rng.uniform(-1000, 1500, size=shape).astype("float32")
    fixed = augment.ct_window(hu, [3, 1], window="brain").numpy()
    np.testing.assert_allclose(fixed, window_ct_tf(hu, window="brain").numpy(), atol=1e-6)  # edge: identity
    np.testing.assert_allclose(augment.ct_window(hu, [3, 1], window="brain", center_shift=50.0, prob=0.0).numpy(), fixed)
    a = augment.ct_window(hu, [3, 1], center_shift=30.0, width_scale=0.3).numpy()
    np.testing.assert_array_equal(a, augment.ct_window(hu, [3, 1], center_shift=30.0, width_scale=0.3).numpy())
    assert np.abs(a - augment.ct_window(hu, [3, 2], center_shift=30.0, width_scale=0.3).numpy()).max() > 1e-3
    assert a.min() >= 0.0 and a.max() <= 1.0 and a.dtype == np.float32
    # Each sample has its own window: the per-sample mapping differs.
    assert not np.allclose(a[0], augment.ct_window(hu[:1], [0, 0]).numpy()[0])


def test_ct_window_hand_values_and_errors():
    hu = np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0], np.float32).reshape(1, 5, 1, 1)
    out = augment.ct_window(hu, 0, center=40.0, width=400.0, out_range=(-1.0, 1.0)).numpy().ravel()
    np.testing.assert_allclose(out, [-1.0, -1.0, 0.0, 1.0, 1.0], atol=1e-6)
    with pytest.raises(ValueError, match="unknown CT window"):
        augment.ct_window(hu, 0, window="liverish")
    with pytest.raises(ValueError, match="width > 0"):
        augment.ct_window(hu, 0, width=0.0)
