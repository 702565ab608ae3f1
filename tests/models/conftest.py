"""Fixtures shared by the model-zoo tests: a `.keras` save/load round-trip check."""

import keras
import numpy as np
import pytest


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
        for a, b in zip(keras.tree.flatten(before), keras.tree.flatten(after)):
            np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), atol=atol)
        assert loaded.count_params() == model.count_params()
        return loaded

    return check
