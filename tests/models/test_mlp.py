"""MLP: shapes, heads, options, parameter count, save/load, errors, learning (classification and regression)."""

import keras
import numpy as np
import pytest

import models
from models.mlp import mlp


@pytest.mark.parametrize(
    "task, outputs, check",
    [
        ("classification", 4, lambda y: np.allclose(y.sum(-1), 1.0, atol=1e-5)),
        ("binary", 1, lambda y: ((y > 0) & (y < 1)).all()),
        ("regression", 3, lambda y: np.isfinite(y).all()),
    ],
)
def test_heads_give_the_right_kind_of_output(task, outputs, check, rng):
    model = mlp((10,), outputs, widths=(8,), task=task)
    y = keras.ops.convert_to_numpy(model(rng.normal(size=(5, 10)).astype("float32")))
    assert y.shape == (5, outputs)
    assert y.dtype == np.float32
    assert check(y)


def test_forward_pass_matches_numpy(rng):
    model = mlp((5,), 3, widths=(8, 4), activation="tanh")
    x = rng.normal(size=(6, 5)).astype("float32")
    h = x
    for name in ("dense1", "dense2"):
        kernel, bias = model.get_layer(name).get_weights()
        h = np.tanh(h @ kernel + bias)
    kernel, bias = model.get_layer("head_dense").get_weights()
    logits = h @ kernel + bias
    expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), expected, atol=1e-5)


def test_parameter_count_is_the_sum_of_dense_layers():
    # 784*256+256 + 256*128+128 + 128*10+10
    assert models.get("mlp").count_params() == 235_146
    # width/depth form; batch norm drops the dense bias and adds 4 numbers per unit.
    model = mlp(10, 2, width=8, depth=3, batch_norm=True)
    assert model.count_params() == (10 * 8 + 4 * 8) + 2 * (8 * 8 + 4 * 8) + (8 * 2 + 2)
    assert mlp(10, 2, depth=0).count_params() == 10 * 2 + 2  # logistic regression


def test_dropout_is_active_only_in_training(rng):
    model = mlp((10,), 2, widths=(64,), dropout=0.5)
    x = rng.normal(size=(4, 10)).astype("float32")
    np.testing.assert_allclose(model(x, training=False), model(x, training=False))
    assert not np.allclose(model(x, training=True), model(x, training=False))


def test_save_load_round_trip(assert_round_trip, rng):
    model = mlp((6,), 3, widths=(8, 8), dropout=0.1, batch_norm=True, activation="gelu", bn_momentum=0.8)
    loaded = assert_round_trip(model, rng.normal(size=(4, 6)).astype("float32"))
    assert [l.momentum for l in loaded.layers if isinstance(l, keras.layers.BatchNormalization)] == [0.8, 0.8]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(input_shape=(8, 8, 1)), "Flatten"),
        (dict(task="ranking"), "task"),
        (dict(dropout=1.0), "dropout"),
        (dict(widths=(8, 0)), "positive"),
        (dict(num_classes=0), "num_classes"),
    ],
)
def test_bad_arguments_give_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mlp(**(dict(input_shape=(8,), num_classes=2) | kwargs))


@pytest.mark.slow
def test_mlp_learns_breast_cancer_classification():
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(data.target))
    x, y = data.data[order].astype("float32"), data.target[order].astype("int32")
    mean, std = x[:400].mean(0), x[:400].std(0)
    x = (x - mean) / std
    model = mlp(x.shape[1:], 2, widths=(32, 16), dropout=0.1)
    model.compile(
        keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    history = model.fit(x[:400], y[:400], batch_size=32, epochs=10, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    _, accuracy = model.evaluate(x[400:], y[400:], verbose=0)
    assert accuracy > 0.9


@pytest.mark.slow
def test_mlp_learns_a_nonlinear_regression():
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, (1024, 2)).astype("float32")
    y = (np.sin(2 * x[:, :1]) + x[:, 1:] ** 2).astype("float32")
    model = mlp((2,), 1, widths=(64, 64), task="regression")
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    model.fit(x[:768], y[:768], batch_size=64, epochs=25, verbose=0)
    pred = keras.ops.convert_to_numpy(model.predict(x[768:], verbose=0))
    r2 = 1 - np.mean((pred - y[768:]) ** 2) / np.var(y[768:])
    assert r2 > 0.9, f"R^2 {r2:.3f}"
