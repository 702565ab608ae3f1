"""Pytest plugin shared by the public and the hidden marking tests (loaded with ``-p``).

The marking runner (``python -m coursework.mark``) runs every marked item as its own pytest
process and passes what the tests need through environment variables:

- ``MARKING_WORK_DIR``: scratch folder of this marking run (predictions, re-training).
- ``MARKING_RUN_DIR``: the group's trained run (``results/<run-name>/`` layout).
- ``MARKING_REUSE_RUN``: ``1`` when that run was given with ``--run-dir`` (do not retrain).
- ``MARKING_HELDOUT_DIR``: held-out volumes ``<case>_img.nii.gz`` + ``<case>_mask.nii.gz``.
- ``MARKING_VALUE_FILE``: where a metric item writes the value its band is scored from.
- ``MARKING_ITEM_TIME_LIMIT``: the item's time limit in seconds (for sub-process timeouts).

Nothing here imports TensorFlow: the group's code runs in sub-processes, so a crash or a hang
in it is an item failure and never takes the marking run down.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

IMAGE_SUFFIXES = ("_img.nii.gz", "_img.nii")
MASK_SUFFIXES = ("_mask.nii.gz", "_mask.nii")
COMPLETE_MARKER = ".complete"


def _env_path(name: str) -> Path:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the marking tests with `python -m coursework.mark`")
    return Path(value)


def case_name(path: Path, suffixes=IMAGE_SUFFIXES) -> str:
    """Case id of ``<case>_img.nii.gz`` (or any ``<name>.nii(.gz)``: the name itself)."""
    name = path.name
    for suffix in suffixes:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name.removesuffix(".gz").removesuffix(".nii")


def prediction_name(input_path: Path) -> str:
    """The file the predict contract writes for ``input_path``: ``<case>_pred.nii.gz``."""
    return f"{case_name(input_path)}_pred.nii.gz"


def run_command(args: list[str], *, timeout: float | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the group's code in a child process; fail the test with its last lines on error."""
    if timeout is None:
        timeout = float(os.environ.get("MARKING_ITEM_TIME_LIMIT", "600"))
    try:
        proc = subprocess.run(
            args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=os.environ.copy()
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`{' '.join(args)}` did not finish within {timeout:.0f} s")
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        pytest.fail(f"`{' '.join(args)}` exited with status {proc.returncode}:\n{tail}")
    return proc


@pytest.fixture(scope="session")
def work_dir() -> Path:
    """Scratch folder of this marking run."""
    path = _env_path("MARKING_WORK_DIR")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def run_dir() -> Path:
    """The group's trained run directory (must exist: produced by the training item)."""
    path = _env_path("MARKING_RUN_DIR")
    if not (path / "model.keras").is_file():
        pytest.fail(f"no trained model at {path / 'model.keras'}: the training item did not produce a run")
    return path


@pytest.fixture(scope="session")
def heldout_cases() -> list[tuple[str, Path, Path]]:
    """Held-out ``(case, image, mask)`` triples; never seen in training or model selection."""
    root = _env_path("MARKING_HELDOUT_DIR")
    images = sorted(p for p in root.iterdir() if p.name.endswith(IMAGE_SUFFIXES))
    if not images:
        pytest.fail(f"no held-out images (*_img.nii.gz) in {root}")
    cases = []
    for image in images:
        case = case_name(image)
        masks = [root / f"{case}{s}" for s in MASK_SUFFIXES if (root / f"{case}{s}").is_file()]
        if not masks:
            pytest.fail(f"held-out image {image} has no mask {case}_mask.nii.gz")
        cases.append((case, image, masks[0]))
    return cases


@pytest.fixture(scope="session")
def heldout_inputs(work_dir, heldout_cases) -> Path:
    """A folder holding only the held-out images (the group's code never sees the masks)."""
    inputs = work_dir / "heldout_inputs"
    if inputs.exists():
        shutil.rmtree(inputs)
    inputs.mkdir(parents=True)
    for _, image, _ in heldout_cases:
        shutil.copy2(image, inputs / image.name)
    return inputs


def make_predictions(run: Path, inputs: Path, out: Path) -> Path:
    """Run the predict contract ``python -m coursework.predict IN OUT --run-dir RUN``."""
    if out.exists():
        shutil.rmtree(out)
    run_command([sys.executable, "-m", "coursework.predict", str(inputs), str(out), "--run-dir", str(run)])
    return out


@pytest.fixture(scope="session")
def predictions(work_dir, run_dir, heldout_inputs) -> Path:
    """Predictions on the held-out inputs, made once per marking run and shared by the items."""
    out = work_dir / "predictions"
    if not (out / COMPLETE_MARKER).is_file():
        make_predictions(run_dir, heldout_inputs, out)
        (out / COMPLETE_MARKER).write_text("ok\n")
    return out


@pytest.fixture
def record_value():
    """Write the measured value that the scheme's band turns into marks."""

    def record(value: float, **details) -> None:
        path = os.environ.get("MARKING_VALUE_FILE")
        if path:
            Path(path).write_text(json.dumps({"value": float(value), **details}))

    return record
