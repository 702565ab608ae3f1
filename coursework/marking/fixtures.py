"""Pytest plugin shared by the public and the hidden marking tests (loaded with ``-p``).

The marker (``python -m coursework.mark``) runs the submission's code in its sandbox first (the
student steps), copies what it wrote into the marker's own folder, and then runs every marked
item as its own isolated pytest process. Marking tests never run student code and never import
from the submission: they read the copies through these fixtures and score them with
:mod:`coursework.scoring`. What the marker passes, through environment variables:

- ``MARKING_STEPS``: ``steps.json``, what the marker observed of each student step (status,
  time, log tail); ``MARKING_ARTIFACTS``: the copies (``run/``, ``predictions/``, ``repro_run/``,
  ``repro_predictions/``, ``public_tests.xml``, ``report/``).
- ``MARKING_HELDOUT_DIR``: held-out volumes ``<case>_img.nii.gz`` + ``<case>_mask.nii.gz``.
- ``MARKING_SUBMISSION``: the submission's folder, for tests that read its text files.
- ``MARKING_VALUE_FILE``: where a metric item writes the value its band is scored from.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from coursework import scoring
from coursework.scoring import case_name, prediction_name  # noqa: F401  (the names hidden tests use)


def _env_path(name: str) -> Path:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the marking tests with `python -m coursework.mark`")
    return Path(value)


def load_steps() -> dict:
    """What the marker observed of every student step it ran (``{}`` if none ran)."""
    path = _env_path("MARKING_STEPS")
    return json.loads(path.read_text()) if path.is_file() else {}


def require_step(steps: dict, name: str) -> dict:
    """The record of step ``name``; fail the test with the step's reason if it did not succeed."""
    step = steps.get(name)
    if step is None:
        pytest.fail(f"the student step {name!r} was not run (the scheme item must list it in `steps`)")
    if step.get("blocked_by") in steps:  # report the step that failed first, with its own reason
        require_step(steps, step["blocked_by"])
    if not step.get("ok"):
        if step.get("timed_out"):
            why = f"it was stopped at its time limit after {step.get('seconds', 0):.0f} s"
        elif step.get("skipped"):
            why = step.get("log_tail", "it was not run")
        else:
            why = f"it exited with status {step.get('returncode')}"
        pytest.fail(f"student step {name!r} failed: {why}\n{step.get('log_tail', '')[-1500:]}")
    return step


@pytest.fixture(scope="session")
def steps() -> dict:
    """``{step name: record}`` of the student steps (see :func:`load_steps`)."""
    return load_steps()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """The marker's copies of what student code wrote."""
    return _env_path("MARKING_ARTIFACTS")


@pytest.fixture(scope="session")
def submission_dir() -> Path:
    """The submission's folder (read its files as text; never import from it)."""
    return _env_path("MARKING_SUBMISSION")


@pytest.fixture(scope="session")
def heldout_cases() -> list[tuple[str, Path, Path]]:
    """Held-out ``(case, image, mask)`` triples; never seen by the submission's code (masks never)."""
    try:
        return scoring.heldout_cases(_env_path("MARKING_HELDOUT_DIR"))
    except FileNotFoundError as err:
        pytest.fail(str(err))


@pytest.fixture(scope="session")
def heldout_inputs(heldout_cases) -> list[Path]:
    """The held-out images the predict step was given."""
    return [image for _, image, _ in heldout_cases]


def _predictions(steps: dict, artifacts: Path, step: str, label: str) -> Path:
    require_step(steps, step)
    info = json.loads((artifacts / f"{label}.json").read_text())
    if not info["listed"]:
        pytest.fail(f"the {step} step left no output folder (or replaced it with a link)")
    return artifacts / label


@pytest.fixture(scope="session")
def predictions(steps, artifacts) -> Path:
    """The copied predictions on the held-out inputs, made by the ``predict`` step with the marked run."""
    return _predictions(steps, artifacts, "predict", "predictions")


@pytest.fixture(scope="session")
def refused_predictions(steps, artifacts) -> dict:
    """``{file name: reason}`` of prediction files the marker refused to copy (links, special files...)."""
    require_step(steps, "predict")
    return json.loads((artifacts / "predictions.json").read_text())["refused"]


@pytest.fixture(scope="session")
def repro_predictions(steps, artifacts) -> Path:
    """Predictions of the run the ``retrain`` step made from the marked run's saved config."""
    return _predictions(steps, artifacts, "predict_repro", "repro_predictions")


def run_manifest(artifacts: Path, label: str = "run") -> dict:
    """Which of a run's required files exist (``{"files": {name: {"present", "reason"}}, ...}``)."""
    path = artifacts / label / "manifest.json"
    if not path.is_file():
        pytest.fail(f"no files of the {label.replace('_', ' ')} were collected")
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def run_dir(steps, artifacts) -> Path:
    """The marker's copy of the marked run's small files (config.yaml, history.csv, metrics.json)."""
    require_step(steps, "train")
    run_manifest(artifacts)
    return artifacts / "run"


def scores(pred_dir: Path, heldout_cases) -> list[dict]:
    """Per-case metrics of a predictions folder, computed once per marking run and shared by the items.

    The metrics come from :func:`coursework.scoring.score_predictions` (validated files, the
    lecturer's ``training.metrics``); a contract problem fails the test with its reason.
    """
    cache = _env_path("MARKING_WORK_DIR") / "scores" / f"{Path(pred_dir).name}.json"
    if not cache.is_file():
        try:
            found = {"results": scoring.score_predictions(pred_dir, heldout_cases)}
        except scoring.PredictionError as err:
            found = {"error": str(err)}
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(found))
        os.replace(tmp, cache)
    found = json.loads(cache.read_text())
    if "error" in found:
        pytest.fail(f"the predictions cannot be scored: {found['error']}")
    return found["results"]


@pytest.fixture(scope="session")
def heldout_scores(predictions, heldout_cases) -> list[dict]:
    """Per-case metrics (``evaluate_segmentation`` dicts) of the marked run's held-out predictions."""
    return scores(predictions, heldout_cases)


@pytest.fixture(scope="session")
def repro_scores(repro_predictions, heldout_cases) -> list[dict]:
    """Per-case metrics of the re-run's held-out predictions."""
    return scores(repro_predictions, heldout_cases)


@pytest.fixture
def record_value():
    """Write the measured value that the scheme's band turns into marks."""

    def record(value: float, **details) -> None:
        path = os.environ.get("MARKING_VALUE_FILE")
        if path:
            Path(path).write_text(json.dumps({"value": float(value), **details}))

    return record
