"""Tests for data_utils.synthetic.pointclouds: organ-surface point clouds with part labels."""

import time

import numpy as np
import pytest

from data_utils.synthetic import pointclouds
from data_utils.synthetic.pointclouds import make_pointcloud_dataset


@pytest.fixture(scope="module")
def clouds():
    return make_pointcloud_dataset(80, num_points=256, seed=0)


def _shape_features(points):
    """Rotation-invariant descriptors: covariance eigenvalues and a histogram of distances to the centre."""
    centred = points - points.mean(axis=1, keepdims=True)
    eig = np.linalg.eigvalsh(np.einsum("npi,npj->nij", centred, centred) / points.shape[1])
    radius = np.linalg.norm(centred, axis=2)
    hist = np.stack([np.histogram(r, bins=8, range=(0, 1.1))[0] for r in radius]) / points.shape[1]
    return np.concatenate([eig, hist], axis=1)


def test_shapes_dtypes_and_ranges(clouds):
    points, labels, point_labels = clouds
    assert points.shape == (80, 256, 3) and points.dtype == np.float32
    assert labels.shape == (80,) and labels.dtype == np.int32
    assert point_labels.shape == (80, 256) and point_labels.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(labels), [20, 20, 20, 20])
    assert np.linalg.norm(points, axis=2).max() < 1.1  # unit sphere plus jitter
    np.testing.assert_allclose(points.mean(axis=1), 0.0, atol=0.01)


def test_part_labels_belong_to_the_class(clouds):
    _, labels, point_labels = clouds
    for label, parts in zip(labels, point_labels, strict=True):
        allowed = pointclouds.CLASS_PARTS[int(label)]
        assert set(np.unique(parts)) == set(allowed)  # every part present, no foreign part
    assert sorted(p for parts in pointclouds.CLASS_PARTS.values() for p in parts) == list(range(len(pointclouds.PART_NAMES)))


def test_points_lie_on_the_surface():
    points, labels, parts = make_pointcloud_dataset(8, num_points=256, seed=1, rotate=False, noise=0.0)
    # Bladder dome points: on an ellipsoid, so no point is near the cloud's centre (a surface, not a volume).
    for cloud, label in zip(points, labels, strict=True):
        radius = np.linalg.norm(cloud - cloud.mean(axis=0), axis=1)
        if label == 1:
            assert radius.min() > 0.25
    # The ventricle's base part is one flat disc: all its points share the same z (no rotation).
    for cloud, label, part in zip(points, labels, parts, strict=True):
        if label == 3:
            assert np.ptp(cloud[part == 8, 2]) < 1e-5
            assert np.all(cloud[part == 7, 2] < cloud[part == 8, 2].max() + 1e-5)


def test_rotation_changes_pose_but_not_shape():
    still, _, _ = make_pointcloud_dataset(4, num_points=128, seed=2, rotate=False, noise=0.0)
    turned, _, _ = make_pointcloud_dataset(4, num_points=128, seed=2, rotate=True, noise=0.0)
    assert not np.allclose(still, turned, atol=1e-2)
    np.testing.assert_allclose(np.sort(np.linalg.norm(still, axis=2)), np.sort(np.linalg.norm(turned, axis=2)), atol=1e-5)
    rotation = pointclouds.random_rotation_matrix(np.random.default_rng(0))
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-10)
    assert np.linalg.det(rotation) == pytest.approx(1.0)


def test_same_seed_same_clouds_different_seed_differs():
    a = make_pointcloud_dataset(4, num_points=64, seed=3)
    b = make_pointcloud_dataset(4, num_points=64, seed=3)
    c = make_pointcloud_dataset(4, num_points=64, seed=4)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.allclose(a[0], c[0])


def test_classes_are_separable_by_a_small_model(clouds):
    from sklearn.linear_model import LogisticRegression

    train_points, train_labels, _ = make_pointcloud_dataset(160, num_points=256, seed=10)
    model = LogisticRegression(max_iter=5000).fit(_shape_features(train_points), train_labels)
    accuracy = model.score(_shape_features(clouds[0]), clouds[1])  # a different seed
    assert accuracy > 0.8, accuracy  # chance is 0.25


def test_argument_errors():
    with pytest.raises(ValueError, match="num_classes"):
        make_pointcloud_dataset(4, num_classes=1)
    with pytest.raises(ValueError, match="num_points"):
        make_pointcloud_dataset(4, num_points=2)
    with pytest.raises(ValueError, match="noise"):
        make_pointcloud_dataset(4, noise=-0.1)


def test_tutorial_sized_dataset_is_fast():
    start = time.perf_counter()
    make_pointcloud_dataset(256, num_points=1024, seed=0)
    assert time.perf_counter() - start < 5.0  # about 0.8 s on 2 cores
