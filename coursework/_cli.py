"""What the coursework entry points share: quiet TensorFlow start-up, one-line user errors, signals."""

from __future__ import annotations

import argparse
import contextlib
import importlib.abc
import importlib.util
import os
import signal
import sys
from collections.abc import Callable

from data_utils.environment import configure_tensorflow

# TensorFlow's C++ start-up log (oneDNN notice, CUDA probing on machines without a GPU) would bury
# the one line a student needs to read. Set TF_CPP_MIN_LOG_LEVEL=0 to see it again.
_SHOW_TF_LOG = configure_tensorflow(TF_CPP_MIN_LOG_LEVEL="3")["TF_CPP_MIN_LOG_LEVEL"] in ("0", "1")


@contextlib.contextmanager
def _fd2_to_devnull():
    """Send file descriptor 2 to /dev/null for the block; Python errors raised in it still show."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            sys.stderr.flush()
            os.dup2(devnull.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


class _QuietLoader:
    """Wraps TensorFlow's module loader: its first import runs with fd 2 hidden."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with _fd2_to_devnull():
            self._loader.exec_module(module)

    def __getattr__(self, name):  # everything else (get_source, is_package, ...) as the real loader
        return getattr(self._loader, name)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` like the next finders do, with a loader that hides its start-up notices."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: TensorFlow is imported once per process
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def hide_tensorflow_start_up_notices() -> None:
    """Hide TensorFlow's C++ start-up notices (written to fd 2) whenever it is first imported.

    Those notices are printed while the native libraries load, before any log level applies. An
    entry point calls this first and lets TensorFlow load where it is first needed, so checks of
    paths and settings that come before answer in under a second instead of after ~8 s.
    """
    if _SHOW_TF_LOG or "tensorflow" in sys.modules:
        return
    if not any(isinstance(finder, _QuietTensorFlowFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowFinder())


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and Keras now, with the C++ start-up notices hidden (see above)."""
    hide_tensorflow_start_up_notices()
    import keras  # noqa: F401
    import tensorflow  # noqa: F401


USER_ERROR_STATUS = 2
INTERRUPTED_STATUS = 130  # what a shell reports for Ctrl-C (128 + SIGINT)


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` whose errors are one line, ``error: <message>``, with exit status 2.

    argparse prints the whole usage block before its error; a student then has to find the one
    line that matters, and a CI log shows a wall of options. ``--help`` still shows everything.
    """

    def error(self, message: str):
        self.exit(USER_ERROR_STATUS, f"error: {message} (see --help)\n")


class UserError(Exception):
    """A problem the user can fix (a path, a file, a setting); shown as one line, no traceback."""


def _user_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [UserError]
    try:
        from data_utils.io import DataError

        types.append(DataError)
    except ImportError:  # pragma: no cover - data_utils is part of the kit
        pass
    from training.config import ConfigError

    types.append(ConfigError)
    return tuple(types)


def one_line(err: BaseException) -> str:
    """The first line of an error message (the rest is detail a traceback would show)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _terminate_like_ctrl_c(signum, frame):
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def handle_sigterm_like_ctrl_c() -> None:
    """Make SIGTERM (a CI timeout, ``kill``, a closing session) raise ``KeyboardInterrupt``.

    Python's default for SIGTERM is to die on the spot, skipping every ``finally``; as an
    exception it unwinds like Ctrl-C, so temporary files are removed and an interrupted run is
    kept for ``--resume``. Only the main thread can install handlers; elsewhere this does nothing.
    """
    try:
        signal.signal(signal.SIGTERM, _terminate_like_ctrl_c)
    except ValueError:  # not the main thread (e.g. an entry point called from a worker thread)
        pass


def run_cli(work: Callable[[], int]) -> int:
    """Run an entry point's body; user errors become ``error: <one line>`` and exit status 2.

    Ctrl-C and SIGTERM end it with status 130 after the body's own clean-up has run. TensorFlow is
    imported only where an entry point first needs it, after the path checks (train: building the
    datasets, or a registry-backed option; predict and evaluate: ``load_run``), so a mistyped path
    is reported in under a second instead of after ~10 s.
    """
    errors = _user_error_types()
    previous = signal.getsignal(signal.SIGTERM)
    handle_sigterm_like_ctrl_c()
    try:
        return work()
    except errors as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return USER_ERROR_STATUS
    except KeyboardInterrupt as err:
        # The body may re-raise with what was kept and how to go on; show that line.
        print(f"interrupted: {one_line(err)}" if str(err) else "interrupted", file=sys.stderr)
        return INTERRUPTED_STATUS
    finally:
        try:
            signal.signal(signal.SIGTERM, previous)
        except (ValueError, TypeError):
            pass
