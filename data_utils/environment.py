"""The kit's TensorFlow settings, in one place: applied when ``data_utils`` (or ``models`` or
``training``, which import it) is imported, before anything imports TensorFlow.

- ``TF_ENABLE_ONEDNN_OPTS=1``: oneDNN kernels; on AVX2 CPUs, where TensorFlow leaves them off by
  default, they make conv-net training 2-4x faster (see README, "Speed").
- ``TF_CPP_MIN_LOG_LEVEL=2``: hide TensorFlow's start-up information messages.

TensorFlow reads both once, when it is imported. A script that imports ``tensorflow`` or ``keras``
before the kit runs without them; :func:`configure_tensorflow` then warns in one line. Values you
set yourself in the environment are kept (``TF_CPP_MIN_LOG_LEVEL=0`` shows the log again). An entry
point that wants another default passes it, e.g. the coursework command line
``configure_tensorflow(TF_CPP_MIN_LOG_LEVEL="3")``.

:func:`quick_exit_after_tensorflow` (also applied on import of ``data_utils``) shortens the second
and a half a Python process with TensorFlow loaded spends shutting down.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import warnings

SETTINGS = {"TF_ENABLE_ONEDNN_OPTS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


# The values the kit set itself: a variable that still holds one may be changed by a later call.
_SET_BY_KIT: dict[str, str] = {}


def configure_tensorflow(**overrides: str) -> dict[str, str]:
    """Set the kit's defaults for variables the user has not set; warn if TensorFlow was imported first.

    Args:
        **overrides: another default for one of ``SETTINGS``, e.g. ``TF_CPP_MIN_LOG_LEVEL="3"``. It
            replaces the kit's earlier value (TensorFlow reads these only when it is imported) but
            never a value the user set in the environment.

    Returns:
        The values of ``SETTINGS``' variables now in the environment.

    Raises:
        ValueError: an override that is not one of ``SETTINGS``.
    """
    unknown = sorted(set(overrides) - set(SETTINGS))
    if unknown:
        raise ValueError(f"configure_tensorflow: unknown setting(s) {unknown}; expected some of {sorted(SETTINGS)}")
    late = "tensorflow" in sys.modules and "TF_ENABLE_ONEDNN_OPTS" not in os.environ
    for key, value in {**SETTINGS, **overrides}.items():
        if key not in os.environ or os.environ[key] == _SET_BY_KIT.get(key):
            os.environ[key] = _SET_BY_KIT[key] = str(value)
    if late:
        warnings.warn(
            "TensorFlow was imported before the kit could set TF_ENABLE_ONEDNN_OPTS=1, so it runs without "
            "oneDNN (training can be 2-4x slower on CPU): import models/data_utils/training first, or set "
            "TF_ENABLE_ONEDNN_OPTS=1 in the environment.",
            RuntimeWarning,
            stacklevel=2,
        )
    return {key: os.environ[key] for key in SETTINGS}


def freeze_long_lived_objects() -> int:
    """Leave every object alive now out of later garbage collections (``gc.freeze()``).

    Once TensorFlow, Keras and a model are loaded, about half a million objects stay alive until
    the process ends, and every full collection walks all of them: 0.3-0.4 s each on 2 AMD EPYC
    cores, several times in a training run and once more at exit. Called when those objects
    exist (``python -m coursework.train`` calls it after building the model), later full
    collections walk only what was made afterwards. A frozen object is still freed as soon as
    nothing refers to it; only one caught in a reference cycle waits for the process to end, so
    call this in a process that keeps what it has built until then.

    Returns:
        The number of objects frozen so far (``gc.get_freeze_count()``).
    """
    gc.freeze()
    return gc.get_freeze_count()


def _last_collection_then_freeze() -> None:
    gc.collect()  # garbage made so far is finalised as usual (files closed, __del__ run)
    gc.freeze()  # what is left is live until the process ends: the collector need not walk it again


_EXIT_HOOK_REGISTERED = False


def quick_exit_after_tensorflow() -> None:
    """Let the interpreter exit in about 0.5 s instead of 1.6 s once TensorFlow is loaded.

    While Python shuts down it clears every module and runs the cyclic garbage collector several
    times over every object still alive; TensorFlow and Keras leave millions of them, so a process
    that did nothing but ``import tensorflow`` spends about 1.6 s exiting (measured on 2 AMD EPYC
    cores). At exit, after the other exit handlers have run (this one is registered when
    ``data_utils`` is imported, before TensorFlow, and exit handlers run last-registered first),
    one ordinary collection finalises the garbage made so far and ``gc.freeze()`` then moves the
    objects still alive out of the collector's sight. Memory is returned to the system by the
    process ending, as it is anyway. Calling this again does nothing.
    """
    global _EXIT_HOOK_REGISTERED
    if not _EXIT_HOOK_REGISTERED:
        atexit.register(_last_collection_then_freeze)
        _EXIT_HOOK_REGISTERED = True
