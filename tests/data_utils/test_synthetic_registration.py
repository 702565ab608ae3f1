"""Tests for data_utils.synthetic.registration: image pairs with a known smooth deformation."""

import time

import numpy as np
import pytest

from data_utils import spatial
from data_utils.synthetic import registration
from data_utils.synthetic.registration import make_registration_pairs


@pytest.fixture(scope="module")
def pairs_2d():
    return make_registration_pairs(6, shape=(48, 40), seed=0, max_displacement=4.0, num_landmarks=10)


def _dice(a, b, k):
    a, b = a == k, b == k
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_shapes_dtypes_2d(pairs_2d):
    p = pairs_2d
    assert p["moving"].shape == p["fixed"].shape == (6, 48, 40, 1)
    assert p["moving_label"].shape == p["fixed_label"].shape == (6, 48, 40)
    assert p["displacement"].shape == (6, 48, 40, 2)
    assert p["fixed_landmarks"].shape == p["moving_landmarks"].shape == (6, 10, 2)
    for key in ("moving", "fixed", "displacement", "fixed_landmarks", "moving_landmarks"):
        assert p[key].dtype == np.float32 and np.all(np.isfinite(p[key]))
    assert p["moving_label"].dtype == p["fixed_label"].dtype == np.int32
    assert set(np.unique(p["moving_label"])) == set(registration.LABEL_NAMES)
    assert np.abs(p["displacement"]).max() <= 4.0 + 1e-5 and np.abs(p["displacement"]).max() > 2.0


def test_3d_pairs():
    p = make_registration_pairs(2, shape=(16, 20, 24), seed=1, max_displacement=2.0, num_landmarks=4)
    assert p["moving"].shape == (2, 16, 20, 24, 1) and p["displacement"].shape == (2, 16, 20, 24, 3)
    assert p["fixed_landmarks"].shape == (2, 4, 3)
    warped = np.asarray(spatial.warp(p["moving_label"][..., None].astype(np.float32), p["displacement"], "nearest"))
    np.testing.assert_array_equal(warped[..., 0].astype(np.int32), p["fixed_label"])


def test_same_seed_same_pairs_different_seed_differs():
    a = make_registration_pairs(2, shape=(24, 24), seed=3)
    b = make_registration_pairs(2, shape=(24, 24), seed=3)
    c = make_registration_pairs(2, shape=(24, 24), seed=4)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.allclose(a["displacement"], c["displacement"])
    assert not np.array_equal(a["moving_label"], c["moving_label"])


def test_known_deformation_maps_moving_onto_fixed(pairs_2d):
    p = pairs_2d
    warped_label = np.asarray(spatial.warp(p["moving_label"][..., None].astype(np.float32), p["displacement"], "nearest"))[..., 0]
    np.testing.assert_array_equal(warped_label.astype(np.int32), p["fixed_label"])
    warped = np.asarray(spatial.warp(p["moving"], p["displacement"]))
    # What is left after warping is the independent noise of the two images (std 0.03 each).
    assert np.abs(warped - p["fixed"]).mean() < 0.6 * np.abs(p["moving"] - p["fixed"]).mean()
    before = np.mean([_dice(p["moving_label"][i], p["fixed_label"][i], k) for i in range(6) for k in (1, 2, 3)])
    assert before < 0.92  # the deformation is not negligible: labels must be registered


def test_landmarks_are_the_same_anatomical_points(pairs_2d):
    p = pairs_2d
    n = np.arange(6)[:, None]
    fixed_idx = p["fixed_landmarks"].astype(int)
    fixed_classes = p["fixed_label"][n, fixed_idx[..., 0], fixed_idx[..., 1]]
    assert np.all(fixed_classes > 0)  # landmarks are inside organs
    assert set(np.unique(fixed_classes[:, :3])) == {1, 2, 3}  # one in each organ first
    moving_idx = np.floor(p["moving_landmarks"] + 0.5).astype(int)
    moving_idx = np.clip(moving_idx, 0, np.array(p["moving_label"].shape[1:]) - 1)
    moving_classes = p["moving_label"][n, moving_idx[..., 0], moving_idx[..., 1]]
    assert np.mean(moving_classes == fixed_classes) > 0.95
    error = np.linalg.norm(p["moving_landmarks"] - p["fixed_landmarks"], axis=-1)
    assert error.mean() > 0.5  # the target registration error before registration is not zero


def test_zero_displacement_gives_the_same_anatomy():
    p = make_registration_pairs(2, shape=(24, 24), seed=0, max_displacement=0.0)
    np.testing.assert_array_equal(p["moving_label"], p["fixed_label"])
    np.testing.assert_array_equal(p["moving_landmarks"], p["fixed_landmarks"])


def test_argument_errors():
    with pytest.raises(ValueError, match="shape"):
        make_registration_pairs(1, shape=(8, 8))
    with pytest.raises(ValueError, match="shape"):
        make_registration_pairs(1, shape=(16,))
    with pytest.raises(ValueError, match="max_displacement"):
        make_registration_pairs(1, shape=(16, 16), max_displacement=-1)


def test_tutorial_sized_dataset_is_fast():
    make_registration_pairs(1, shape=(16, 16), seed=0)
    start = time.perf_counter()
    make_registration_pairs(64, shape=(64, 64), seed=0)
    make_registration_pairs(8, shape=(32, 32, 32), seed=0)
    assert time.perf_counter() - start < 6.0  # about 1 s on 2 cores
