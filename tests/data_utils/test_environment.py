"""Tests for data_utils.environment: the kit's TensorFlow settings and the late-import warning."""

import sys
import warnings

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
