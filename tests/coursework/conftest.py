"""Fixtures of the coursework tests: one quick training run shared by every test that needs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_module(module: str, *args: str, cwd: Path = REPO, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` as a user would, from ``cwd``; return the finished process."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def run_main_noting_tensorflow(module: str, *args: str) -> tuple[subprocess.CompletedProcess, bool]:
    """Run ``module.main(args)`` in a fresh Python, as ``python -m module`` does; return the finished
    process and whether TensorFlow had been imported when ``main`` returned."""
    code = (f"import sys; from {module} import main; status = main({list(args)!r}); "
            "print('tensorflow' in sys.modules); sys.exit(status)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    return proc, proc.stdout.strip().splitlines()[-1:] == ["True"]


def _lock(path: Path):
    """An exclusive lock file, so pytest-xdist workers train the quick run only once."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: each worker trains its own run
        return None
    handle = open(path, "w")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def shared_quick_dir(run_id: str) -> Path:
    """The folder of test run ``run_id``'s quick run when the xdist controller starts it in the background."""
    return Path(tempfile.gettempdir()) / f"kit-coursework-quick-{run_id}"


def train_quick(shared: Path) -> dict:
    """Run ``python -m coursework.train --quick`` into ``shared/results``; return its record."""
    start = time.perf_counter()
    proc = run_module("coursework.train", "--quick", "--results-dir", str(shared / "results"), timeout=600)
    info = {"run_dir": str(shared / "results" / "quick"), "seconds": time.perf_counter() - start,
            "stdout": proc.stdout, "results_dir": str(shared / "results"), "returncode": proc.returncode,
            "stderr": proc.stderr[-3000:]}
    return info


def write_record(path: Path, data: dict) -> None:
    """Write ``data`` as JSON to ``path`` atomically (a reader never sees half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def made_once(tmp_path_factory, name: str, make) -> dict:
    """``make(folder)`` run once per test session, its JSON-able result shared by every xdist worker.

    The folder ``<session base temp>/<name>`` is shared by the workers; the first to ask runs ``make``
    under a lock and records the result, the others wait for the lock and read the record.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the parent of the per-worker base temp is shared by the workers
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    handle = _lock(folder / ".lock")
    try:
        record = folder / "record.json"
        if not record.is_file():
            write_record(record, make(folder))
        return json.loads(record.read_text())
    finally:
        if handle is not None:
            handle.close()


def start_quick_run_in_background(run_id: str) -> subprocess.Popen:
    """Start the shared quick run now, without waiting (called by the pytest-xdist controller)."""
    shared = shared_quick_dir(run_id)
    shared.mkdir(parents=True, exist_ok=True)
    code = ("import sys, pathlib; from tests.coursework.conftest import train_quick, write_record; "
            "p = pathlib.Path(sys.argv[1]); write_record(p / 'run.json', train_quick(p))")
    with open(shared / "background.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-c", code, str(shared)], cwd=REPO, stdout=log, stderr=log,
                                   env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
    (shared / "started").touch()
    return process


def _wait_for(info_file: Path, timeout: float = 900) -> dict:
    deadline = time.monotonic() + timeout
    while not info_file.is_file():
        assert time.monotonic() < deadline, f"the background quick run wrote no {info_file} in {timeout:.0f} s"
        time.sleep(1.0)
    return json.loads(info_file.read_text())


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory) -> dict:
    """``python -m coursework.train --quick`` run once per test session (shared across workers).

    Under pytest-xdist the controller starts it in the background when the session starts
    (``tests/conftest.py``) and this waits for it; otherwise the first worker to ask trains it
    while holding a lock, and the others wait.

    Returns:
        ``{"run_dir": Path, "seconds": float, "stdout": str, "results_dir": Path}``.
    """
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run_id and (shared_quick_dir(run_id) / "started").exists():
        info = _wait_for(shared_quick_dir(run_id) / "run.json")
    else:
        info = made_once(tmp_path_factory, "coursework-quick", train_quick)
    assert info["returncode"] == 0, f"quick run failed:\n{info['stdout'][-3000:]}\n{info['stderr']}"
    return {**info, "run_dir": Path(info["run_dir"]), "results_dir": Path(info["results_dir"])}
