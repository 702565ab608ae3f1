"""PointNet: shapes, parameter count, T-Nets and their regulariser, order invariance, save/load, errors, learning."""

import keras
import numpy as np
import pytest

import models
from models.pointnet import OrthogonalRegularizer, pointnet, pointnet_segmentation, transform_net

SMALL = dict(scale=0.0625)


def test_classifier_output_and_paper_parameter_count(trainable_params, rng):
    model = models.get("pointnet")
    # Qi et al. 2017 report 3.5M parameters for the ModelNet40 classifier.
    assert trainable_params(model) == 3_473_969
    y = keras.ops.convert_to_numpy(model(rng.normal(size=(2, 1024, 3)).astype("float32")))
    assert y.shape == (2, 40)
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-5)


def test_segmentation_labels_every_point(rng):
    model = pointnet_segmentation(num_points=64, num_classes=5, **SMALL)
    y = keras.ops.convert_to_numpy(model(rng.normal(size=(2, 64, 3)).astype("float32")))
    assert y.shape == (2, 64, 5)
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-5)


def test_classifier_is_invariant_to_point_order(rng):
    model = pointnet(num_points=None, num_classes=4, **SMALL)
    points = rng.normal(size=(2, 128, 3)).astype("float32")
    shuffled = points[:, rng.permutation(128)]
    np.testing.assert_allclose(
        model(points, training=False), model(shuffled, training=False), atol=1e-5
    )


def test_segmentation_is_equivariant_to_point_order(rng):
    model = pointnet_segmentation(num_points=32, num_classes=3, **SMALL)
    points = rng.normal(size=(1, 32, 3)).astype("float32")
    order = rng.permutation(32)
    y = keras.ops.convert_to_numpy(model(points, training=False))
    y_shuffled = keras.ops.convert_to_numpy(model(points[:, order], training=False))
    np.testing.assert_allclose(y[:, order], y_shuffled, atol=1e-5)


def test_orthogonal_regularizer_values():
    reg = OrthogonalRegularizer(2, weight=0.5)
    identity = np.eye(2, dtype="float32").reshape(1, 4)
    assert float(reg(identity)) == pytest.approx(0.0)
    # A = 2I: ||I - 4I||_F^2 = 2 * 9 = 18; a rotation is orthogonal, so no penalty.
    assert float(reg(2 * identity)) == pytest.approx(0.5 * 18)
    c, s = np.cos(0.3), np.sin(0.3)
    rotation = np.array([[c, -s, s, c]], "float32")
    assert float(reg(rotation)) == pytest.approx(0.0, abs=1e-6)
    assert OrthogonalRegularizer.from_config(reg.get_config()).weight == 0.5


def test_transform_net_starts_as_identity_and_adds_its_penalty(rng):
    x = keras.Input((16, 4))
    model = keras.Model(x, transform_net(x, 4, scale=0.0625, reg_weight=0.001))
    points = rng.normal(size=(2, 16, 4)).astype("float32")
    np.testing.assert_allclose(model(points, training=False), points, atol=1e-5)
    assert len(model.losses) == 1
    assert float(model.losses[0]) == pytest.approx(0.0, abs=1e-6)


def test_save_load_round_trip_keeps_regularizer(assert_round_trip, rng):
    model = pointnet(num_points=32, num_classes=3, **SMALL)
    loaded = assert_round_trip(model, rng.normal(size=(2, 32, 3)).astype("float32"))
    assert isinstance(
        loaded.get_layer("feature_tnet_transform").activity_regularizer, OrthogonalRegularizer
    )


@pytest.mark.parametrize(
    "builder, kwargs, match",
    [
        (pointnet, dict(num_points=0), "num_points"),
        (pointnet, dict(num_features=0), "num_features"),
        (pointnet_segmentation, dict(num_points=None), "num_points"),
    ],
)
def test_bad_arguments_give_clear_errors(builder, kwargs, match):
    with pytest.raises(ValueError, match=match):
        builder(**kwargs, **SMALL)


def _shape_clouds(n, num_points=64, seed=0):
    """Points on a sphere (0), a cube surface (1) or a cylinder (2), randomly rotated about z."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n).astype("int32")
    clouds = np.empty((n, num_points, 3), "float32")
    for i, label in enumerate(labels):
        if label == 0:
            p = rng.normal(size=(num_points, 3))
            p /= np.linalg.norm(p, axis=1, keepdims=True)
        elif label == 1:
            p = rng.uniform(-1, 1, (num_points, 3))
            face = rng.integers(0, 3, num_points)
            p[np.arange(num_points), face] = rng.choice([-1.0, 1.0], num_points)
        else:
            angle = rng.uniform(0, 2 * np.pi, num_points)
            p = np.stack([np.cos(angle), np.sin(angle), rng.uniform(-1, 1, num_points)], axis=1)
        t = rng.uniform(0, 2 * np.pi)
        rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
        clouds[i] = p @ rot.T + rng.normal(0, 0.02, (num_points, 3))
    return clouds, labels


@pytest.mark.slow
def test_small_pointnet_learns_to_tell_shapes_apart(learn):
    x, y = _shape_clouds(256)
    x_test, y_test = _shape_clouds(96, seed=1)
    model = pointnet(num_points=64, num_classes=3, scale=0.125, norm="none", dropout=0.0)
    first, last, accuracy = learn(model, (x, y), (x_test, y_test), learning_rate=3e-3, epochs=6)
    assert last < 0.5 * first and accuracy > 0.8
