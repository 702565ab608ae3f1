"""Tests for data_utils.environment: the kit's TensorFlow settings and the late-import warning."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from data_utils import environment


def test_defaults_are_set_and_user_values_kept(monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")  # a choice of the user's: kept
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        environment.configure_tensorflow()
    import os

    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "0" and os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"


def test_warns_in_one_line_when_tensorflow_came_first(monkeypatch):
    import tensorflow  # noqa: F401  (already imported by the test session)

    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    with pytest.warns(RuntimeWarning, match="imported before the kit") as record:
        environment.configure_tensorflow()
    assert "\n" not in str(record[0].message)
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        environment.configure_tensorflow()  # set (by the kit or the user) before: no warning


def test_an_entry_point_default_replaces_the_kits_but_not_the_users(monkeypatch):
    import os

    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    monkeypatch.setattr(environment, "_SET_BY_KIT", {})
    assert environment.configure_tensorflow()["TF_CPP_MIN_LOG_LEVEL"] == "2"
    # The coursework CLI asks for a quieter start-up after the kit's default was applied.
    assert environment.configure_tensorflow(TF_CPP_MIN_LOG_LEVEL="3")["TF_CPP_MIN_LOG_LEVEL"] == "3"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")  # the user's choice: shows the log again
    assert environment.configure_tensorflow(TF_CPP_MIN_LOG_LEVEL="3")["TF_CPP_MIN_LOG_LEVEL"] == "0"
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    with pytest.raises(ValueError, match="unknown setting.*TF_LOG_LEVEL"):
        environment.configure_tensorflow(TF_LOG_LEVEL="3")


def test_exit_hook_finalises_garbage_then_freezes_what_is_alive(tmp_path):
    """At exit the garbage made so far is still finalised, then the live objects are frozen.

    A handler registered before ``data_utils`` is imported runs after the kit's (exit handlers
    run last-registered first), so it sees the frozen objects; the cycle below is garbage from
    the start, so only a collection finalises it.
    """
    script = tmp_path / "exit.py"
    script.write_text(
        "import atexit, gc\n"
        "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0, flush=True))\n"
        "import data_utils\n"
        "from data_utils import environment\n"
        "n = atexit._ncallbacks()\n"
        "environment.quick_exit_after_tensorflow()  # again: still one hook\n"
        "print('one hook', atexit._ncallbacks() == n)\n"
        "class Noisy:\n"
        "    def __del__(self):\n"
        "        print('finalised', flush=True)\n"
        "a = Noisy(); a.me = a; del a  # a reference cycle: garbage for the collector only\n"
    )
    root = str(Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": root}, check=True).stdout
    assert out.splitlines() == ["one hook True", "finalised", "frozen True"]


def test_freeze_long_lived_objects_takes_them_out_of_later_collections():
    import gc

    keep = [[i] for i in range(1000)]  # tracked containers, alive from now on
    try:
        before = gc.get_freeze_count()
        frozen = environment.freeze_long_lived_objects()
        assert frozen == gc.get_freeze_count() >= before + len(keep)
        assert all(gc.is_tracked(item) for item in keep)
        # A collection now looks only at what came later: the frozen lists are not in any generation.
        assert not any(item is keep[0] for item in gc.get_objects())
    finally:
        gc.unfreeze()
