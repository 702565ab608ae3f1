"""A sandbox for untrusted student code: the fork's train, predict and tests, and all they start.

The marker (``python -m coursework.mark``) runs every student step through :class:`Sandbox`. It
uses the strongest isolation the machine allows and says which one it used:

``namespaces``
    The marker is root and ``unshare`` (util-linux) works: the step runs in new mount, PID, IPC
    and network namespaces. The marker's files, the instructor directory, the held-out labels,
    the lecturer's checkout and ``/root`` are covered by empty read-only ``tmpfs`` mounts; the
    interpreter's prefix and the virtual environment are bind-mounted back read-only; ``/tmp`` and
    ``/dev/shm`` are fresh. The step runs as a dedicated unprivileged uid. When the PID
    namespace's first process exits, the kernel kills every process left in it.
``uid``
    The marker is root but namespaces are refused (a container without ``CAP_SYS_ADMIN``): the
    step runs as the dedicated uid and gid with no supplementary groups, so only file permissions
    keep it from the marker's files. A probe run checks that they do.
``none``
    The marker is not root: the step runs as the marker's own user (a self-check on a laptop).
    Leftover processes are found by their session and an environment tag only, which a process
    can shed. Lecturer-mode marking refuses this level unless ``--unsafe-same-user`` is given.

In every level the step gets an allow-listed environment (no ``MARKING_*``, CI variables or
secrets; a fresh ``HOME`` and ``TMPDIR``), its own session, a wall-clock limit and resource limits
(processes, file size, optionally address space). After each step every process it left behind is
killed: in ``uid``/``namespaces`` found through ``/proc`` by the sandbox uid (which nothing else
uses), so double-forked and ``setsid`` processes are found too. :meth:`Sandbox.ensure_clean`
raises if any survive; the marker calls it before it scores and before it writes marks.

The ``--inside`` entry point below is what runs (as root, inside the new namespaces) between
``unshare`` and the student's command; it uses the standard library only and is started with
``python -I``, so nothing from the fork is on its path.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

LEVELS = ("namespaces", "uid", "none")
# The dedicated sandbox uid is derived from the marker's pid (unique among live processes), far
# above the ids that distributions hand out, so no other process or user shares it.
UID_BASE = 3_000_000
# Environment variables passed to student code unchanged (everything else is dropped).
PASS_ENV = ("LANG", "LC_ALL", "TZ", "TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL", "OMP_NUM_THREADS",
            "CUDA_VISIBLE_DEVICES", "KERAS_BACKEND")
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
ENV_TAG = "COURSEWORK_SANDBOX_TAG"  # finds leftovers of the 'none' level through /proc/<pid>/environ

# mount(2) flags
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18


class SandboxError(Exception):
    """The sandbox cannot be set up, or student processes survived a step."""


@dataclass
class Limits:
    """Resource limits of one student step (0 = no limit)."""

    max_processes: int = 4096  # RLIMIT_NPROC of the sandbox uid (threads count)
    max_file_mb: int = 4096  # RLIMIT_FSIZE: largest file a step may write
    memory_mb: int = 0  # RLIMIT_AS; off by default: TensorFlow and CUDA reserve large address ranges


@dataclass
class StepResult:
    """What the marker observed of one student step."""

    name: str
    returncode: int | None
    timed_out: bool
    seconds: float
    log: str
    leftovers_killed: int = 0
    isolation: str = "none"

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def reason(self) -> str:
        """One paragraph on why the step failed ('' if it did not)."""
        if self.timed_out:
            return f"step {self.name!r} was stopped at its time limit ({self.seconds:.0f} s)\n{self.log[-1500:]}"
        if self.returncode != 0:
            return f"step {self.name!r} exited with status {self.returncode}:\n{self.log[-1500:]}"
        return ""

    def to_json(self) -> dict:
        return {"name": self.name, "returncode": self.returncode, "timed_out": self.timed_out,
                "seconds": round(self.seconds, 1), "ok": self.ok, "leftovers_killed": self.leftovers_killed,
                "isolation": self.isolation, "log_tail": self.log[-4000:]}


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = (lambda s: s.encode() if s is not None else None)
    if _libc().mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} -> {target}: {os.strerror(err)}")


def _within(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def process_uids(pid: int) -> set[int]:
    """Real, effective, saved and filesystem uid of a process (empty if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return {int(v) for v in line.split()[1:]}
    except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
        pass
    return set()


def _is_zombie(pid: int) -> bool:
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


def _has_tag(pid: int, tag: str) -> bool:
    try:
        return f"{ENV_TAG}={tag}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def find_processes(uid: int | None = None, tag: str | None = None) -> list[int]:
    """Live (non-zombie) processes running as ``uid`` or carrying the sandbox ``tag`` in their environment."""
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        pid = int(entry)
        if (uid is not None and uid in process_uids(pid)) or (tag is not None and _has_tag(pid, tag)):
            if not _is_zombie(pid):
                found.append(pid)
    return found


def kill_processes(uid: int | None = None, tag: str | None = None, timeout: float = 10.0) -> tuple[int, list[int]]:
    """SIGKILL every process of the sandbox until none is left; return (killed, survivors)."""
    killed = 0
    deadline = time.monotonic() + timeout
    while True:
        pids = find_processes(uid, tag)
        if not pids or time.monotonic() > deadline:
            return killed, pids
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.05)


def run_in_session(cmd: list[str], *, cwd, env: dict, log_path: Path, time_limit: float) -> int | None:
    """Run ``cmd`` as the leader of a new session, output to ``log_path``; kill its process group when done.

    Returns:
        The exit status, or ``None`` if it was killed at ``time_limit`` seconds.
    """
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return proc.wait(timeout=time_limit)
        except subprocess.TimeoutExpired:
            return None
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the rest of its group, on time-out or not
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()


class Sandbox:
    """Runs student commands with the strongest isolation available (see the module docstring).

    Args:
        area: folder for the sandbox's files (a home, a tmp, the submission copy); created here.
        hide: paths the student must not see (instructor directory, held-out labels, the marker's
            work and output folders, the lecturer's checkout).
        expose: read-only paths the student may use even if they lie under a hidden one (the
            interpreter prefix and the virtual environment are always exposed).
        secrets_to_probe: files a probe run must fail to open (checked once, in :meth:`setup`).
        allow_same_user: accept the ``none`` level (self-check, or ``--unsafe-same-user``).
        limits: resource limits of every step.
        levels: levels to try, strongest first (tests pin one).
    """

    def __init__(self, area: Path, *, hide=(), expose=(), secrets_to_probe=(), allow_same_user=False,
                 limits: Limits | None = None, levels=LEVELS):
        self.area = Path(area)
        self.hide = [Path(p).resolve() for p in hide if p]
        prefixes = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), Path(sys.executable).resolve().parent.parent}
        self.expose = sorted({Path(p).resolve() for p in expose} | prefixes)
        self.secrets = [Path(p) for p in secrets_to_probe]
        self.allow_same_user = allow_same_user
        self.limits = limits or Limits()
        self.levels = [lvl for lvl in levels if lvl in LEVELS]
        self.uid = self.gid = None
        self.tag = secrets.token_hex(8)
        self.level: str | None = None
        self.refusals: dict[str, str] = {}

    # ------------------------------------------------------------------ set-up
    def setup(self) -> str:
        """Create the area, pick the strongest working level; return it.

        Raises:
            SandboxError: no level passes its probe (the message says why for each).
        """
        self.area.mkdir(parents=True, exist_ok=True)
        os.chmod(self.area, 0o711)  # traversable, not listable, by the sandbox uid
        for name in ("home", "tmp"):
            (self.area / name).mkdir(exist_ok=True)
        is_root = os.geteuid() == 0
        for level in self.levels:
            if level != "none" and not is_root:
                self.refusals[level] = "the marker is not root, so it cannot switch to a sandbox user"
                continue
            if level == "none" and not self.allow_same_user:
                self.refusals[level] = "running student code as the marker's own user was not allowed"
                continue
            if level == "namespaces" and not shutil.which("unshare"):
                self.refusals[level] = "`unshare` (util-linux) is not installed"
                continue
            if any(_within(self.area.resolve(), h) for h in self.hide):
                raise SandboxError(f"sandbox area {self.area} lies inside a hidden path")
            self.level = level
            if level != "none":
                self.uid = self.gid = UID_BASE + os.getpid()
                self._own(self.area / "home")
                self._own(self.area / "tmp")
                kill_processes(self.uid)  # a crashed marker with the same pid long ago
            problem = self._probe()
            if problem is None:
                return level
            self.refusals[level] = problem
            self.level = None
        raise SandboxError("no sandbox level is usable: " + "; ".join(f"{k}: {v}" for k, v in self.refusals.items()))

    def describe(self) -> str:
        """One line for the marks: the level used and why stronger ones were not."""
        text = {"namespaces": "separate mount/PID/IPC/network namespaces, unprivileged sandbox uid",
                "uid": "unprivileged sandbox uid (no namespaces)",
                "none": "the marker's own user (NOT isolated)"}.get(self.level or "", "not set up")
        skipped = "; ".join(f"{k} not used: {v}" for k, v in self.refusals.items())
        return f"student code ran with isolation '{self.level}' ({text})" + (f"; {skipped}" if skipped else "")

    def _own(self, path: Path) -> None:
        """Hand ``path`` (recursively, links not followed) to the sandbox uid."""
        if self.uid is None:
            return
        for dirpath, dirnames, filenames in os.walk(path):
            os.lchown(dirpath, self.uid, self.gid)
            for name in dirnames + filenames:
                os.lchown(os.path.join(dirpath, name), self.uid, self.gid)

    def give(self, path: Path) -> Path:
        """Make ``path`` (in the area) writable by student code; return it."""
        Path(path).mkdir(parents=True, exist_ok=True)
        self._own(Path(path))
        return Path(path)

    def _probe(self) -> str | None:
        """Run a tiny step that must start Python, be the sandbox uid, and fail to open every secret."""
        code = (
            "import os, sys, json\n"
            "bad = []\n"
            "for p in json.loads(sys.argv[1]):\n"
            "    try:\n"
            "        open(p, 'rb').close(); bad.append(p)\n"
            "    except OSError:\n"
            "        pass\n"
            "print(json.dumps({'uid': os.getuid(), 'readable': bad}))\n"
        )
        result = self.run("probe", [sys.executable, "-I", "-S", "-c", code, json.dumps([str(s) for s in self.secrets])],
                          cwd=self.area / "home", time_limit=60)
        if not result.ok:
            return f"a probe process did not run ({result.reason().strip()[:300]})"
        try:
            answer = json.loads(result.log.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return f"the probe printed no answer: {result.log[-300:]}"
        if self.uid is not None and answer["uid"] != self.uid:
            return f"the probe ran as uid {answer['uid']}, not the sandbox uid {self.uid}"
        if answer["readable"] and self.level != "none":
            return "student code could read " + ", ".join(answer["readable"][:5])
        return None

    # ------------------------------------------------------------------ running
    def env(self, extra: dict | None = None) -> dict:
        """The allow-listed environment of a student step."""
        home, tmp = self.area / "home", self.area / "tmp"
        env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
        env.update({"PATH": f"{Path(sys.executable).parent}:{SAFE_PATH}",
                    "HOME": str(home), "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg",
                    "TF_CPP_MIN_LOG_LEVEL": env.get("TF_CPP_MIN_LOG_LEVEL", "2"), ENV_TAG: self.tag})
        env.update(extra or {})
        return env

    def run(self, name: str, argv: list[str], *, cwd: Path, time_limit: float, env_extra: dict | None = None,
            log_path: Path | None = None) -> StepResult:
        """Run one student command in the sandbox; kill everything it left; return what was observed."""
        if self.level is None:
            raise SandboxError("Sandbox.setup() was not called")
        env = self.env(env_extra)
        spec = {"argv": [str(a) for a in argv], "cwd": str(cwd), "env": env, "uid": self.uid, "gid": self.gid,
                "limits": vars(self.limits), "namespaces": self.level == "namespaces",
                "hide": [str(p) for p in self.hide], "expose": [str(p) for p in self.expose],
                "area": str(self.area.resolve())}
        if self.level == "none":
            cmd, popen_env = spec["argv"], env
        else:
            helper = [sys.executable, "-I", "-S", str(Path(__file__).resolve()), "--inside", json.dumps(spec)]
            cmd = (["unshare", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc", "--ipc", "--net", "--"]
                   + helper if self.level == "namespaces" else helper)
            popen_env = {"PATH": SAFE_PATH}
        log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix=f"{name}-", suffix=".log")[1])
        start = time.monotonic()
        returncode = run_in_session(cmd, cwd=cwd if self.level == "none" else "/", env=popen_env,
                                    log_path=log_path, time_limit=time_limit)
        seconds = time.monotonic() - start
        killed = self.ensure_clean()
        text = log_path.read_bytes()[-20000:].decode("utf-8", errors="replace")
        return StepResult(name, returncode, returncode is None, seconds, text, killed, self.level)

    def ensure_clean(self) -> int:
        """Kill every process the sandbox left; return how many were killed.

        Raises:
            SandboxError: some survived ten seconds of SIGKILL (nothing may be scored or written then).
        """
        if self.level is None:
            return 0
        killed, survivors = kill_processes(self.uid, self.tag if self.uid is None else None)
        if survivors:
            raise SandboxError(f"student processes {survivors} survived SIGKILL; nothing is marked")
        return killed


# ---------------------------------------------------------------------- inside the namespaces
def _hide_and_expose(hide: list[str], expose: list[str], area: str) -> None:
    """Cover hidden paths with empty read-only tmpfs mounts; bind exposed paths back read-only.

    The sandbox's own area is bound back writable wherever it lies (under ``/tmp`` too).
    """
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    # Open the exposed paths before anything is covered: the bind source is then the open file.
    handles = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in expose if os.path.isdir(p)}
    area_fd = os.open(area, os.O_PATH | os.O_DIRECTORY)
    covered = []
    for path in sorted(set(hide) | {"/root", "/tmp", "/dev/shm"}, key=len):
        if os.path.isdir(path) and not os.path.islink(path):  # inside a covered parent: already gone
            scratch = path in ("/tmp", "/dev/shm")
            _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=256m" if scratch else "mode=0755,size=1m")
            if not scratch:
                covered.append(path)
    for path in sorted(handles, key=len):
        os.makedirs(path, mode=0o755, exist_ok=True)  # a mount point inside a covering tmpfs
        _mount(f"/proc/self/fd/{handles[path]}", path, None, MS_BIND | MS_REC)
        _mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.makedirs(area, mode=0o755, exist_ok=True)
    _mount(f"/proc/self/fd/{area_fd}", area, None, MS_BIND)
    for path in covered:
        _mount(None, path, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    if shutil.which("ip"):  # loopback up, for tests that talk to a local server; no other network
        subprocess.run(["ip", "link", "set", "lo", "up"], check=False, capture_output=True)


def _drop(spec: dict):
    """preexec_fn of the student process (after the uid switch): limits and no new privileges."""
    lim = spec["limits"]

    def apply() -> None:
        if lim["max_processes"]:
            resource.setrlimit(resource.RLIMIT_NPROC, (lim["max_processes"],) * 2)
        if lim["max_file_mb"]:
            resource.setrlimit(resource.RLIMIT_FSIZE, (lim["max_file_mb"] << 20,) * 2)
        if lim["memory_mb"]:
            resource.setrlimit(resource.RLIMIT_AS, (lim["memory_mb"] << 20,) * 2)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        _libc().prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: setuid binaries cannot give root back

    return apply


def inside(spec: dict) -> int:
    """Body of ``python -I sandbox.py --inside SPEC``: set up the view, drop to the uid, run, reap."""
    if spec["namespaces"]:
        _hide_and_expose(spec["hide"], spec["expose"], spec["area"])
    try:
        proc = subprocess.Popen(spec["argv"], cwd=spec["cwd"], env=spec["env"], user=spec["uid"], group=spec["gid"],
                                extra_groups=[], preexec_fn=_drop(spec), stdin=subprocess.DEVNULL)
    except OSError as err:  # e.g. the interpreter is not readable by the sandbox uid
        print(f"sandbox: cannot start {spec['argv'][0]} as uid {spec['uid']}: {err.strerror}", flush=True)
        return 126
    if spec["namespaces"]:
        # PID 1 of the namespace: reap orphans until the student's main process ends; when this
        # process exits, the kernel kills whatever is left in the namespace.
        while True:
            pid, status = os.wait()
            if pid == proc.pid:
                return os.waitstatus_to_exitcode(status)
    return proc.wait()


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--inside":
    code = inside(json.loads(sys.argv[2]))
    sys.exit(code if code >= 0 else 128 - code)
