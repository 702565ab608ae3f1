"""Reproducible runs: one call to seed everything, and a record of the software a run used.

``set_seed(seed)`` at the top of a script (before building models or datasets) makes a run repeat
exactly on the same machine and software:

- on **CPU**, two runs with the same seed give bit-identical weights (tested, with the kit's default
  ``TF_ENABLE_ONEDNN_OPTS=1``, in ``tests/training/test_reproducibility.py``);
- on **GPU**, ``deterministic=True`` selects deterministic cuDNN/cuBLAS kernels via TensorFlow's op
  determinism, so runs repeat on the same GPU model, driver and library versions; a few ops without a
  deterministic GPU kernel then raise an error rather than silently differ, and training is somewhat
  slower. Different GPU models, CPU vs GPU, other thread counts or other package versions give
  results that differ in the last digits (and then diverge slowly), never bit-identical ones.

What the seed covers: Python's ``random``, NumPy's legacy global generator, TensorFlow's global seed
and Keras' global ``SeedGenerator`` (layer initialisers, dropout, ``fit(shuffle=True)``). Data
pipelines should still take explicit seeds (``tf.data`` shuffles, stateless augmentations) and
NumPy code should use ``np.random.default_rng(seed)``, as the kit does.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

import numpy as np

# Distribution names, as pip knows them, of the packages a run's results depend on.
PACKAGES = (
    "tensorflow", "keras", "numpy", "scipy", "nibabel", "scikit-learn", "scikit-image",
    "matplotlib", "h5py", "PyYAML", "torch", "monai", "jax",
)


def set_seed(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy, TensorFlow and Keras, and optionally make TensorFlow ops deterministic.

    Args:
        seed: a non-negative integer.
        deterministic: turn on TensorFlow's op determinism (deterministic kernels and a fixed
            order of floating-point reductions; an error for ops that cannot be deterministic).
            ``False`` turns it off again.

    Raises:
        ValueError: for a negative or non-integer seed.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    seed = int(seed)
    # Only child processes read PYTHONHASHSEED; setting it keeps subprocess workers consistent.
    os.environ["PYTHONHASHSEED"] = str(seed)

    import keras

    # Seeds Python's `random`, NumPy's global generator, tf.random and Keras' global SeedGenerator.
    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        from tensorflow.python.framework import config as tf_config

        if deterministic:
            tf.config.experimental.enable_op_determinism()
        elif tf_config.is_op_determinism_enabled():
            tf_config.disable_op_determinism()


def package_versions(packages=PACKAGES) -> dict[str, str | None]:
    """Versions of Python and of the packages a run depends on, for saving with its config.

    Args:
        packages: distribution names to look up (default ``PACKAGES``).

    Returns:
        ``{"python": "3.11.9", "platform": "...", "tensorflow": "2.21.0", ..., "keras_backend": "tensorflow",
        "TF_ENABLE_ONEDNN_OPTS": "1"}``; packages that are not installed map to ``None``.
    """
    versions: dict[str, str | None] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "executable": sys.executable,
    }
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["keras_backend"] = os.environ.get("KERAS_BACKEND", "tensorflow")
    if "keras" in sys.modules:
        versions["keras_backend"] = sys.modules["keras"].backend.backend()
    versions["TF_ENABLE_ONEDNN_OPTS"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    return versions
