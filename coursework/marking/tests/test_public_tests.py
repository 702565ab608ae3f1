"""Marking: the kit's public unit tests (the fast lane) still pass in the group's fork."""

import importlib.util
import sys

from coursework.marking.fixtures import run_command


def test_public_unit_tests_pass():
    """``pytest -m "not slow" tests`` passes (the group has not broken the shared library)."""
    args = [sys.executable, "-m", "pytest", "tests", "-m", "not slow", "-q", "-p", "no:cacheprovider"]
    if importlib.util.find_spec("xdist") is not None:
        args += ["-n", "2"]
    run_command(args)
