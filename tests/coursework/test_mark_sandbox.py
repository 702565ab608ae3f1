"""Tests for coursework.sandbox: allow-listed environment, isolation, limits, and no process left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from coursework import sandbox

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="switching to a sandbox user needs root")


def _namespaces(tmp_path, **kwargs) -> sandbox.Sandbox:
    box = sandbox.Sandbox(tmp_path / "area", levels=["namespaces"], **kwargs)
    try:
        box.setup()
    except sandbox.SandboxError as err:
        pytest.skip(f"namespaces unavailable here: {err}")
    return box


def test_environment_is_allow_listed(tmp_path, monkeypatch):
    for name in ("MARKING_HELDOUT_DIR", "CI_JOB_TOKEN", "SECRET_KEY", "PYTHONPATH", "LD_PRELOAD"):
        monkeypatch.setenv(name, "leak")
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    box = sandbox.Sandbox(tmp_path / "area")
    env = box.env({"EXTRA": "1"})
    assert "leak" not in env.values()
    assert env["HOME"] == str(tmp_path / "area" / "home") and env["TMPDIR"] == str(tmp_path / "area" / "tmp")
    assert env["TF_ENABLE_ONEDNN_OPTS"] == "0" and env["EXTRA"] == "1"


def test_same_user_level_is_refused_unless_allowed(tmp_path):
    box = sandbox.Sandbox(tmp_path / "area", levels=["none"])
    with pytest.raises(sandbox.SandboxError, match="own user was not allowed"):
        box.setup()
    allowed = sandbox.Sandbox(tmp_path / "area2", levels=["none"], allow_same_user=True)
    assert allowed.setup() == "none" and "NOT isolated" in allowed.describe()


def test_leftovers_of_the_same_user_level_are_found_by_tag_and_killed(tmp_path):
    box = sandbox.Sandbox(tmp_path / "area", levels=["none"], allow_same_user=True)
    box.setup()
    code = "import subprocess; subprocess.Popen(['sleep', '300'], start_new_session=True)"
    result = box.run("spawn", [sys.executable, "-c", code], cwd=tmp_path, time_limit=60)
    assert result.ok and result.leftovers_killed >= 1
    assert sandbox.find_processes(tag=box.tag) == []


def test_time_limit_stops_a_hanging_step(tmp_path):
    box = sandbox.Sandbox(tmp_path / "area", levels=["none"], allow_same_user=True)
    box.setup()
    started = time.monotonic()
    result = box.run("hang", [sys.executable, "-c", "import time; time.sleep(300)"], cwd=tmp_path, time_limit=2)
    assert result.timed_out and not result.ok and time.monotonic() - started < 30
    assert "time limit" in result.reason()


@ROOT_ONLY
def test_namespaces_hide_secrets_drop_privileges_and_kill_double_forks(tmp_path):
    secret_dir = tmp_path / "instructor"
    secret_dir.mkdir()
    (secret_dir / "scheme.yaml").write_text("secret")
    os.chmod(tmp_path, 0o755)
    box = _namespaces(tmp_path, hide=[secret_dir], secrets_to_probe=[secret_dir / "scheme.yaml"])
    code = ("import os, subprocess, sys\n"
            "print('uid', os.getuid(), 'gid', os.getgid(), 'groups', os.getgroups())\n"
            "try:\n"
            f"    print('listing', os.listdir({str(secret_dir)!r}))\n"
            "except OSError as err:\n"
            "    print('listing', type(err).__name__)\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    subprocess.Popen(['sleep', '300'])\n"
            "    os._exit(0)\n"
            "try:\n"
            "    open('/etc/owned-by-sandbox', 'w')\n"
            "except OSError as err:\n"
            "    print('write', type(err).__name__)\n")
    result = box.run("t", [sys.executable, "-c", code], cwd=tmp_path / "area" / "home", time_limit=60)
    assert result.ok, result.log
    assert f"uid {box.uid} gid {box.gid} groups []" in result.log
    assert ("listing []" in result.log or "listing FileNotFoundError" in result.log), result.log
    assert "write PermissionError" in result.log
    assert sandbox.find_processes(uid=box.uid) == []
    assert box.describe().startswith("student code ran with isolation 'namespaces'")


@ROOT_ONLY
def test_probe_refuses_a_level_that_can_read_a_secret(tmp_path):
    """A secret the sandbox can still read (here: a folder given to ``expose`` by mistake) stops the set-up."""
    shared = tmp_path / "shared"
    shared.mkdir()
    readable = shared / "world-readable.txt"
    readable.write_text("labels")
    for path in (tmp_path, shared):
        os.chmod(path, 0o755)
    os.chmod(readable, 0o644)
    box = sandbox.Sandbox(tmp_path / "area", levels=["namespaces"], expose=[shared], secrets_to_probe=[readable])
    with pytest.raises(sandbox.SandboxError, match="could read .*world-readable.txt|unshare"):
        box.setup()


@ROOT_ONLY
def test_process_limit_applies_to_the_sandbox_user(tmp_path):
    box = _namespaces(tmp_path, limits=sandbox.Limits(max_processes=20))
    code = ("import subprocess\nprocs = []\n"
            "try:\n    for _ in range(60):\n        procs.append(subprocess.Popen(['sleep', '30']))\n"
            "except OSError as err:\n    print('refused after', len(procs), type(err).__name__)\n")
    result = box.run("fork", [sys.executable, "-c", code], cwd=tmp_path / "area" / "home", time_limit=60)
    assert "refused after" in result.log, result.log
    assert sandbox.find_processes(uid=box.uid) == []


def test_inside_entry_point_reports_an_unstartable_command(tmp_path):
    spec = {"argv": [str(tmp_path / "missing")], "cwd": str(tmp_path), "env": {}, "uid": None, "gid": None,
            "limits": vars(sandbox.Limits()), "namespaces": False, "hide": [], "expose": [], "area": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-I", "-S", sandbox.__file__, "--inside", __import__("json").dumps(spec)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 126 and "sandbox: cannot start" in proc.stdout
