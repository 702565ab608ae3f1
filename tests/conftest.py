"""Shared pytest fixtures: fixed seeds, quiet TensorFlow, and a fresh Keras session per test."""

# The kit's TensorFlow settings, before TensorFlow is imported anywhere.
import data_utils  # noqa: F401, I001
from pathlib import Path

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


# ----------------------------------------------------------------------------- background work
# Under pytest-xdist the controller process sits idle while the workers test. It starts the one
# long computation that several test modules share, the MirroredStrategy trainer runs (a subprocess,
# about 80 s on 2 cores), as soon as the session starts, so that no worker idles on its lock.
_TESTS = Path(__file__).resolve().parent
_BACKGROUND = pytest.StashKey()  # the background subprocess, in the controller's config.stash


def _selects_mirrored_tests(config) -> bool:
    if "not slow" in (config.option.markexpr or ""):
        return False
    training = _TESTS / "training"
    for arg in config.args:
        path = Path(arg.split("::")[0]).resolve()
        if path == training or training.is_relative_to(path) or path.is_relative_to(training):
            return True
    return False


def pytest_configure(config):
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        return  # a worker, or no xdist: the tests run the subprocess themselves when they need it
    if not _selects_mirrored_tests(config):
        return
    import uuid

    from tests.training import mirrored_trainers

    config.option.testrunuid = config.option.testrunuid or uuid.uuid4().hex  # handed to the workers
    config.stash[_BACKGROUND] = mirrored_trainers.start_in_background(config.option.testrunuid)


def pytest_unconfigure(config):
    process = config.stash.get(_BACKGROUND, None)
    if process is not None:
        from tests.training import mirrored_trainers

        mirrored_trainers.clean_up(config.option.testrunuid, process)

