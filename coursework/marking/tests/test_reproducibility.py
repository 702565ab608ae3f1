"""Marking: the training run is reproducible from the config saved with it."""

import csv
import math
import sys
from pathlib import Path

from coursework.marking.fixtures import run_command

EPOCHS_CHECKED = 1
RELATIVE_TOLERANCE = 1e-3


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_training_reproduces_from_saved_config(run_dir, work_dir):
    """Re-run the first epoch from ``config.yaml`` (same seed, data and schedule) and compare the history."""
    out = work_dir / "repro"
    run_command(
        [sys.executable, "-m", "coursework.train", "--config", str(run_dir / "config.yaml"),
         "--results-dir", str(out), "--run-name", "repro", "--stop-after-epochs", str(EPOCHS_CHECKED)]
    )
    original = _rows(run_dir / "history.csv")
    again = _rows(out / "repro" / "history.csv")
    assert len(again) == EPOCHS_CHECKED, f"re-run wrote {len(again)} epochs, expected {EPOCHS_CHECKED}"
    assert len(original) >= EPOCHS_CHECKED, f"{run_dir / 'history.csv'} has no epochs"
    for epoch in range(EPOCHS_CHECKED):
        for key in ("loss", "val_loss"):
            a, b = float(original[epoch][key]), float(again[epoch][key])
            assert math.isclose(a, b, rel_tol=RELATIVE_TOLERANCE, abs_tol=1e-6), (
                f"epoch {epoch + 1} {key}: saved run {a:.6f}, re-run {b:.6f} (seed or config not reproducible)"
            )
