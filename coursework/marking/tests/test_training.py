"""Marking: the group's training run completes from its config and writes every output."""

import json
import os
import sys
from pathlib import Path

from coursework.marking.fixtures import run_command

REQUIRED_FILES = ("config.yaml", "history.csv", "metrics.json", "model.keras", "loss_curves.png")


def test_training_run_completes():
    """Train with the group's config (or check the given run) and find every required output."""
    run_dir = Path(os.environ["MARKING_RUN_DIR"])
    if os.environ.get("MARKING_REUSE_RUN") != "1":
        extra = json.loads(os.environ.get("MARKING_TRAINING_ARGS", "[]"))
        run_command(
            [sys.executable, "-m", "coursework.train", "--results-dir", str(run_dir.parent),
             "--run-name", run_dir.name, *extra]
        )
    assert run_dir.is_dir(), f"the training run did not create {run_dir}"
    missing = [name for name in REQUIRED_FILES if not (run_dir / name).is_file()]
    assert not missing, f"{run_dir} lacks {', '.join(missing)}"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "mean_dice" in metrics, f"{run_dir / 'metrics.json'} has no mean_dice"
    assert list(run_dir.glob("predictions/*.nii.gz")), f"{run_dir}/predictions has no test predictions"
