"""The kit's TensorFlow settings, in one place: applied when ``data_utils`` (or ``models`` or
``training``, which import it) is imported, before anything imports TensorFlow.

- ``TF_ENABLE_ONEDNN_OPTS=1``: oneDNN kernels; on AVX2 CPUs, where TensorFlow leaves them off by
  default, they make conv-net training 2-4x faster (see README, "Speed").
- ``TF_CPP_MIN_LOG_LEVEL=2``: hide TensorFlow's start-up information messages.

TensorFlow reads both once, when it is imported. A script that imports ``tensorflow`` or ``keras``
before the kit runs without them; :func:`configure_tensorflow` then warns in one line. Values you
set yourself in the environment are kept.
"""

from __future__ import annotations

import os
import sys
import warnings

SETTINGS = {"TF_ENABLE_ONEDNN_OPTS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


def configure_tensorflow() -> None:
    """Set the kit's defaults for variables not already set; warn if TensorFlow was imported first."""
    late = "tensorflow" in sys.modules and "TF_ENABLE_ONEDNN_OPTS" not in os.environ
    for key, value in SETTINGS.items():
        os.environ.setdefault(key, value)
    if late:
        warnings.warn(
            "TensorFlow was imported before the kit could set TF_ENABLE_ONEDNN_OPTS=1, so it runs without "
            "oneDNN (training can be 2-4x slower on CPU): import models/data_utils/training first, or set "
            "TF_ENABLE_ONEDNN_OPTS=1 in the environment.",
            RuntimeWarning,
            stacklevel=2,
        )
