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
# Under pytest-xdist the controller process sits idle while the workers test. It starts the long
# computations that several tests share as soon as the session starts: the MirroredStrategy trainer
# runs (a subprocess, about 80 s on 2 cores) and the coursework quick run (about 45 s). No worker
# then idles on their locks, and the two workers stay busy with other tests meanwhile.
_TESTS = Path(__file__).resolve().parent
_BACKGROUND = pytest.StashKey()  # {name: subprocess}, in the controller's config.stash


def _selects(config, folder: str) -> bool:
    """Whether this session's arguments select the (slow) tests in ``tests/<folder>``."""
    if "not slow" in (config.option.markexpr or ""):
        return False
    wanted = _TESTS / folder
    for arg in config.args:
        path = Path(arg.split("::")[0]).resolve()
        if path == wanted or wanted.is_relative_to(path) or path.is_relative_to(wanted):
            return True
    return False


def pytest_configure(config):
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        return  # a worker, or no xdist: the tests run these themselves when they need them
    import uuid

    from tests.coursework import conftest as coursework
    from tests.training import mirrored_trainers

    config.option.testrunuid = config.option.testrunuid or uuid.uuid4().hex  # handed to the workers
    started = {}
    if _selects(config, "training"):
        started["mirrored"] = mirrored_trainers.start_in_background(config.option.testrunuid)
    if _selects(config, "coursework"):
        started["quick_run"] = coursework.start_quick_run_in_background(config.option.testrunuid)
    config.stash[_BACKGROUND] = started


def pytest_unconfigure(config):
    started = config.stash.get(_BACKGROUND, {})
    for process in started.values():
        if process.poll() is None:  # an interrupted session
            process.kill()
            process.wait()
    if "mirrored" in started:
        from tests.training import mirrored_trainers

        mirrored_trainers.clean_up(config.option.testrunuid)
    if "quick_run" in started:
        import shutil

        from tests.coursework import conftest as coursework

        shutil.rmtree(coursework.shared_quick_dir(config.option.testrunuid), ignore_errors=True)
