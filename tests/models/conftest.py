"""Fixtures shared by the model-zoo tests: a `.keras` round-trip check, toy tasks and a training check."""

import keras
import numpy as np
import pytest

from training.trainer_base import build_optimizers


@pytest.fixture
def assert_round_trip(tmp_path):
    """Return a checker: save ``model`` as ``.keras``, reload it, and compare outputs on ``x``.

    The checker returns the reloaded model. Outputs must agree to float32 round-off (inference mode,
    so dropout and batch-norm statistics are deterministic).
    """

    def check(model: keras.Model, x, atol: float = 1e-5) -> keras.Model:
        path = tmp_path / f"{model.name}.keras"
        model.save(path)
        loaded = keras.models.load_model(path)
        before = model(x, training=False)
        after = loaded(x, training=False)
        for a, b in zip(keras.tree.flatten(before), keras.tree.flatten(after), strict=True):
            np.testing.assert_allclose(
                keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), atol=atol
            )
        assert loaded.count_params() == model.count_params()
        return loaded

    return check


def make_bars(n: int, size: int = 16, rank: int = 2, seed: int = 0):
    """A 3-class image task a small conv net learns in a few dozen steps.

    Class 0: a bright bar across axis 0; class 1: a bright bar across the last axis; class 2: a bright
    cube/square blob. Gaussian noise (sigma 0.3) on top. Returns ``x (n, *[size]*rank, 1)`` float32
    and ``y (n,)`` int32.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 0.3, (n,) + (size,) * rank + (1,)).astype("float32")
    y = rng.integers(0, 3, n).astype("int32")
    for i in range(n):
        if y[i] == 2:
            centre = rng.integers(4, size - 4, rank)
            x[i][tuple(slice(c - 2, c + 2) for c in centre)] += 1.0
        else:
            index = [slice(None)] * rank
            start = rng.integers(2, size - 3)
            index[0 if y[i] == 0 else rank - 1] = slice(start, start + 2)
            x[i][tuple(index)] += 1.0
    return x, y


@pytest.fixture
def bars():
    """Return :func:`make_bars` (seeded; call with ``seed=1`` for a held-out set)."""
    return make_bars


def count_trainable(model: keras.Model) -> int:
    """Trainable parameters (what PyTorch reports; Keras' count_params adds batch norm statistics)."""
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


@pytest.fixture
def trainable_params():
    """Return :func:`count_trainable` (fixtures are how test modules share helpers here)."""
    return count_trainable


def fit_classifier(model: keras.Model, train, test, *, learning_rate: float, epochs: int, batch_size: int = 16):
    """Train a classifier (Adam, sparse cross-entropy) on ``train = (x, y)``; score it on ``test``.

    Returns:
        ``(first epoch's loss, last epoch's loss, accuracy on test)``.
    """
    model.compile(keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy", metrics=["accuracy"])
    build_optimizers(model)  # Adam's variables before fit: the first step is traced once, not twice
    loss = model.fit(*train, batch_size=batch_size, epochs=epochs, verbose=0).history["loss"]
    return loss[0], loss[-1], model.evaluate(*test, verbose=0)[1]


@pytest.fixture
def learn():
    """Return :func:`fit_classifier`."""
    return fit_classifier


def head_in_numpy(model: keras.Model, x, features_of: str, weights_of: str) -> np.ndarray:
    """The model's softmax output recomputed in NumPy from the features entering its head.

    Args:
        model, x: the model and an input batch.
        features_of: the layer whose *input* is taken as features; a global pooling layer
            (``"head_pool"``) is recomputed as a mean over the spatial axes.
        weights_of: the dense or ``1x1`` convolution layer holding the head's kernel and bias.

    Returns:
        ``(B, ..., K)`` probabilities, to compare with ``model(x)``.
    """
    features = keras.ops.convert_to_numpy(keras.Model(model.input, model.get_layer(features_of).input)(x))
    if features_of.endswith("_pool"):
        features = features.mean(axis=tuple(range(1, features.ndim - 1)))
    kernel, bias = model.get_layer(weights_of).get_weights()
    logits = features @ kernel.reshape(-1, kernel.shape[-1]) + bias
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.fixture
def numpy_head():
    """Return :func:`head_in_numpy`."""
    return head_in_numpy
