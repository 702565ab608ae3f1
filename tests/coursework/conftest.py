"""Fixtures of the coursework tests: one quick training run shared by every test that needs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_module(module: str, *args: str, cwd: Path = REPO, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` as a user would, from ``cwd``; return the finished process."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def _lock(path: Path):
    """An exclusive lock file, so pytest-xdist workers train the quick run only once."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: each worker trains its own run
        return None
    handle = open(path, "w")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory) -> dict:
    """``python -m coursework.train --quick`` run once per test session (shared across workers).

    Returns:
        ``{"run_dir": Path, "seconds": float, "stdout": str, "results_dir": Path}``.
    """
    # The parent of the per-worker base temp is shared by all xdist workers of this session.
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    shared = root / "coursework-quick"
    shared.mkdir(parents=True, exist_ok=True)
    handle = _lock(shared / ".lock")
    try:
        info_file = shared / "run.json"
        if info_file.is_file():
            info = json.loads(info_file.read_text())
        else:
            start = time.perf_counter()
            proc = run_module("coursework.train", "--quick", "--results-dir", str(shared / "results"), timeout=600)
            seconds = time.perf_counter() - start
            assert proc.returncode == 0, f"quick run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            info = {"run_dir": str(shared / "results" / "quick"), "seconds": seconds, "stdout": proc.stdout,
                    "results_dir": str(shared / "results")}
            info_file.write_text(json.dumps(info))
    finally:
        if handle is not None:
            handle.close()
    return {**info, "run_dir": Path(info["run_dir"]), "results_dir": Path(info["results_dir"])}
