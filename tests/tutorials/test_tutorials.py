"""Run every tutorial with --quick and check it exits cleanly, writes figures and reaches its learning outcome.

Each tutorial states its own expected outcome through ``Tutorial.finish(results, expect=...)``; a
missed expectation makes the script exit with status 1, so this test fails if a tutorial stops teaching
what it claims.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TUTORIALS = sorted(p for p in (REPO_ROOT / "tutorials").glob("*.py") if p.stem != "common" and not p.stem.startswith("_"))
TIME_LIMIT_S = 120  # --quick promises ~20 s of work; TensorFlow start-up and a loaded CI machine get generous margin


def test_there_are_tutorials():
    assert TUTORIALS, "no tutorials found in tutorials/"


@pytest.mark.slow
@pytest.mark.parametrize("script", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_quick(script: Path, tmp_path: Path):
    env = {**os.environ, "MPLBACKEND": "Agg", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", "--out", str(tmp_path)],
        cwd=tmp_path,  # runs from anywhere, writes nothing next to the sources
        env=env,
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT_S,
    )
    assert proc.returncode == 0, f"{script.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    figures = list(tmp_path.glob("*.png"))
    assert figures, f"{script.name} wrote no PNG figure"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["quick"] is True
    assert summary["checks"], f"{script.name} states no expected learning outcome"
    assert all(check["passed"] for check in summary["checks"].values())
