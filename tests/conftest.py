"""Shared pytest fixtures: fixed seeds, quiet TensorFlow, and a fresh Keras session per test."""

# The kit's TensorFlow settings, before TensorFlow is imported anywhere.
import data_utils  # noqa: F401, I001
import keras
import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    """Each test starts from the same global seed and a clean Keras graph/name scope."""
    # free_memory=False skips gc.collect(), which costs ~0.8 s per call once TensorFlow is loaded.
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(1234)
    yield
    keras.backend.clear_session(free_memory=False)


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded NumPy generator for building test inputs (never used inside graph code)."""
    return np.random.default_rng(0)


@pytest.fixture
def monai():
    """MONAI as the golden reference (an optional dependency: the test skips without it).

    Returns a namespace with ``torch``, ``losses`` and ``metrics`` (``monai.losses``/``monai.metrics``)
    and ``channels_first(x)``: a batched channels-last array ``(B, *spatial, C)`` as the torch tensor
    ``(B, C, *spatial)`` MONAI expects.
    """
    import types

    pytest.importorskip("monai")
    torch = pytest.importorskip("torch")
    import monai.losses
    import monai.metrics

    def channels_first(x):
        return torch.from_numpy(np.moveaxis(np.asarray(x), -1, 1).copy())

    return types.SimpleNamespace(torch=torch, losses=monai.losses, metrics=monai.metrics, channels_first=channels_first)
