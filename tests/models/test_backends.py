"""Every registered model gives TensorFlow's outputs under the JAX and PyTorch Keras backends.

Models use only ``keras.layers`` / ``keras.ops``, so they should be backend-agnostic; this checks it
value for value (``tests/models/_backend_forward.py``). The TensorFlow reference is made in the test
process: it builds every registered model in its small ``example`` configuration and saves its
weights, inputs and outputs. The JAX and PyTorch runs are subprocesses (the backend is fixed when
Keras is first imported); they build the same models, load those weights and must reproduce the
outputs (float32 round-off allowed). A backend whose package is not installed is skipped; install them with
``pip install -r requirements-dev.txt``. Training loops stay TensorFlow.

Slow: on 2 AVX2 cores the reference takes about 35 s, PyTorch about 30 s for ~40 models, and JAX about
25 s for one model per family (each model's inference step is compiled, seconds of CPU per model,
even with the random initialisers skipped since the reference weights replace them); set
``KIT_BACKEND_SWEEP=all`` to check every model under JAX too.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import models

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("_backend_forward.py")


def _forward_module():
    """``_backend_forward.py`` as a module (it is a script, not collected by pytest)."""
    spec = importlib.util.spec_from_file_location("_backend_forward", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _models_to_check(backend: str) -> list[str]:
    """Every registered model, or (JAX, unless KIT_BACKEND_SWEEP=all) the first model of each family."""
    if backend != "jax" or os.environ.get("KIT_BACKEND_SWEEP") == "all":
        return models.list_models()
    families = sorted({models.get_spec(name).family for name in models.list_models()})
    return [models.list_models(family)[0] for family in families]


def test_jax_subset_covers_every_family():
    names = _models_to_check("jax")
    assert {models.get_spec(n).family for n in names} == {models.get_spec(n).family for n in models.list_models()}


def _run(backend: str, *args: str) -> dict:
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu",
               CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1700)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["backend"] == backend
    return report["results"]


@pytest.fixture(scope="module")
def tensorflow_reference(tmp_path_factory):
    """Weights, inputs and outputs of every registered model under TensorFlow (in this process,
    which has imported TensorFlow already: a subprocess would spend ~8 s of CPU importing it again)."""
    folder = tmp_path_factory.mktemp("tensorflow_reference")
    results = _forward_module().check_all([], save=str(folder))
    failures = {name: msg for name, msg in results.items() if msg != "ok"}
    assert not failures, f"models failing under tensorflow: {json.dumps(failures, indent=1)}"
    return folder


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("backend, package", [("jax", "jax"), ("torch", "torch")])
def test_every_registered_model_matches_tensorflow_under_backend(backend, package, tensorflow_reference):
    if importlib.util.find_spec(package) is None:
        pytest.skip(
            f"{package} is not installed: `pip install -r requirements-dev.txt` to test the {backend} backend"
        )
    names = _models_to_check(backend)
    results = _run(backend, "--reference", str(tensorflow_reference), *names)
    assert set(results) == set(names), "the subprocess saw a different registry"
    failures = {name: msg for name, msg in results.items() if msg != "ok"}
    assert not failures, f"models differing from tensorflow under {backend}: {json.dumps(failures, indent=1)}"
