"""Automated marking: run the fork's code in a sandbox, score what it wrote, write the marks once.

Usage::

    # lecturer: mark a group's fork from the lecturer's own checkout of the kit (authoritative)
    python -m coursework.mark --submission forks/group-07 --instructor-dir ~/instructor --out marks/group-07
    python -m coursework.mark --init-instructor-dir ~/instructor   # a sample instructor directory
    python -m coursework.mark --roster marks/                      # marks/roster.csv from every group's marks
    python -m coursework.mark --write-checksums                    # record the protected files' checksums

    # group: the same marking of your own checkout (a self-check, not the lecturer's mark)
    python -m coursework.mark                          # trains with your config, then marks
    python -m coursework.mark --run-dir results/baseline   # mark an existing run (its provenance is trusted)
    python -m coursework.mark --items predict_contract,dice      # run a few items while developing

Trust model. The scheme, the marking tests, their fixtures, the metric code and the scorer come
from the checkout this module lives in and from the instructor directory, never from the
submission: nothing of the submission is imported into a marker process, and marker processes
run Python with ``-I`` from folders the marker owns, so a submission's ``conftest.py``,
``sitecustomize.py``, ``*.pth`` or pytest settings are never picked up. The submission's code (its
training, prediction and tests, and whatever they start) runs only in :mod:`coursework.sandbox`,
as an unprivileged user that cannot read the held-out labels, the instructor directory or the
marker's files, and every process it started is killed before anything is scored or written.

What it does, in order:

1. **Integrity.** Compares the submission's copies of the scheme, marking tests, runner and metric
   code with the lecturer's SHA-256 checksums (the instructor directory's ``checksums`` if there is
   one, else ``coursework/marking/checksums`` of this checkout). A difference fails the
   ``integrity`` item and no other item is marked.
2. **Scheme check.** Every marking test (public and instructor) must be an item and every item's
   test must exist; points must add up to the scheme's ``total``; otherwise the run fails.
3. **Student steps** in the sandbox, only those the selected items need: ``train`` (the fork's
   training with the scheme's arguments into a fresh run folder), ``predict`` (the predict
   contract on the held-out images), ``retrain`` and ``predict_repro`` (the same training again,
   from the run's saved config, and its predictions), ``public_tests`` (the lecturer's public unit
   tests against the fork's library). Each has a time limit; its outputs are copied out safely.
4. **Items**: each marking test runs as its own pytest process with its time limit, on the copies;
   predictions are validated and scored by :mod:`coursework.scoring`.
5. **Reports**, written once at the end: ``OUT/results.json`` (Gradescope), ``OUT/report.xml``
   (JUnit), ``OUT/marks.md``; the last line printed is ``MARK: NN.N%`` (CI reads it).

Hidden items (visibility other than ``visible``) are reported with their score but without
their output.
"""

from __future__ import annotations

import argparse
import ast
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import yaml

from coursework import scoring
from coursework.sandbox import LEVELS, Limits, Sandbox, SandboxError, StepResult, run_in_session
from data_utils.io import atomic_write

ROOT = Path(__file__).resolve().parent.parent
MARKING = ROOT / "coursework" / "marking"
SCHEME = MARKING / "scheme.yaml"
PUBLIC_TESTS = MARKING / "tests"
CHECKSUMS = MARKING / "checksums"
PYTEST_INI = MARKING / "pytest.ini"
# Files the marks depend on besides the tests: the scheme, this runner, the sandbox, the scorer,
# the shared fixtures and the metric code. A group must leave them as they are.
PROTECTED = [
    "coursework/marking/scheme.yaml",
    "coursework/marking/fixtures.py",
    "coursework/marking/pytest.ini",
    "coursework/mark.py",
    "coursework/sandbox.py",
    "coursework/scoring.py",
    "training/metrics.py",
]
VISIBLE = "visible"
OUTPUT_TAIL = 4000
# Student steps, in the order they run, and the steps each one needs first.
STEPS = ("train", "predict", "retrain", "predict_repro", "public_tests")
STEP_NEEDS = {"predict": ("train",), "retrain": ("train",), "predict_repro": ("retrain",)}
STEP_DEFAULTS = {"train": 900, "predict": 300, "retrain": 900, "predict_repro": 300, "public_tests": 900}
RUN_FILES = ("config.yaml", "history.csv", "metrics.json", "split.json", "model.keras", "loss_curves.png")
MAX_RUN_FILE_BYTES = 512 << 20
MAX_REPORT_BYTES = 2 << 20
SELF_CHECK_NOTE = ("Self-check: this mark was computed by the submission's own copy of the marker. "
                   "It is not the course mark; the lecturer's marking of the submission is.")
REPORT_NOTE = ("The report item checks completeness only (every section present with some text) and "
               "earns no points; the report's quality and honesty are marked by people.")


class MarkingError(Exception):
    """The marking run itself cannot go on (bad scheme, bad arguments)."""


@dataclass
class Item:
    """One marked item of the scheme, and its outcome once run."""

    id: str
    name: str
    points: float
    visibility: str = VISIBLE
    time_limit_s: float = 120.0
    test: str | None = None  # "file.py::test_name", relative to its suite's tests folder
    builtin: str | None = None
    band: dict | None = None
    steps: list[str] = field(default_factory=list)  # student steps the item's test needs
    suite_dir: Path = PUBLIC_TESTS
    # outcome
    score: float = 0.0
    status: str = "failed"
    output: str = ""
    value: float | None = None
    seconds: float = 0.0
    ran: bool = False

    @property
    def nodeid(self) -> str:
        file, _, name = (self.test or "").partition("::")
        return f"{self.suite_dir / file}::{name}"


@dataclass
class Scheme:
    title: str
    total: float
    items: list[Item]
    heldout: dict = field(default_factory=dict)
    training_args: list[str] = field(default_factory=list)
    overall_time_limit_s: float = 3000.0
    steps: dict = field(default_factory=dict)  # step name -> {time_limit_s, args}
    sandbox: dict = field(default_factory=dict)  # Limits fields
    settings: set = field(default_factory=set)  # top-level keys the file set (an instructor scheme overrides these)

    def step_limit(self, name: str) -> float:
        return float((self.steps.get(name) or {}).get("time_limit_s", STEP_DEFAULTS[name]))

    def override(self, other: "Scheme") -> None:
        """Take the marking settings an instructor scheme sets (its items are merged separately)."""
        for key in ("heldout", "training_args", "overall_time_limit_s", "sandbox"):
            if key in other.settings:
                setattr(self, key, getattr(other, key))
        if "steps" in other.settings:
            self.steps = {**self.steps, **{k: {**(self.steps.get(k) or {}), **v} for k, v in other.steps.items()}}


# ----------------------------------------------------------------------------- scheme
def load_scheme(path: Path, suite_dir: Path, *, id_prefix: str = "") -> Scheme:
    """Read a scheme file; raise MarkingError naming the file for anything malformed."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MarkingError(f"{path}: marking scheme not found") from None
    except yaml.YAMLError as err:
        raise MarkingError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("items"), list):
        raise MarkingError(f"{path}: expected a mapping with an 'items' list")
    defaults = raw.get("defaults") or {}
    items = []
    for i, entry in enumerate(raw["items"]):
        if not isinstance(entry, dict) or "id" not in entry or "points" not in entry:
            raise MarkingError(f"{path}: item {i + 1} needs at least 'id' and 'points'")
        if bool(entry.get("test")) == bool(entry.get("builtin")):
            raise MarkingError(f"{path}: item {entry['id']!r} needs exactly one of 'test' or 'builtin'")
        band = entry.get("band")
        if band is not None and not (isinstance(band, dict) and {"zero", "full"} <= set(band)):
            raise MarkingError(f"{path}: item {entry['id']!r}: band needs 'zero' and 'full' values")
        if band is not None and band["zero"] == band["full"]:
            raise MarkingError(f"{path}: item {entry['id']!r}: band 'zero' and 'full' must differ")
        items.append(
            Item(
                id=id_prefix + str(entry["id"]),
                name=str(entry.get("name", entry["id"])),
                points=float(entry["points"]),
                visibility=str(entry.get("visibility", defaults.get("visibility", VISIBLE))),
                time_limit_s=float(entry.get("time_limit_s", defaults.get("time_limit_s", 120))),
                test=entry.get("test"),
                builtin=entry.get("builtin"),
                band=band,
                steps=_item_steps(path, entry),
                suite_dir=suite_dir,
            )
        )
    ids = [it.id for it in items]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise MarkingError(f"{path}: duplicate item ids {', '.join(dupes)}")
    return Scheme(
        title=str(raw.get("title", "Marking")),
        total=float(raw.get("total", sum(it.points for it in items))),
        items=items,
        heldout=dict(raw.get("heldout") or {}),
        training_args=[str(a) for a in raw.get("training_args") or []],
        overall_time_limit_s=float(raw.get("overall_time_limit_s", 3000)),
        steps=_steps_settings(path, raw.get("steps")),
        sandbox=_sandbox_settings(path, raw.get("sandbox")),
        settings=set(raw),
    )


def _item_steps(path: Path, entry: dict) -> list[str]:
    steps = entry.get("steps") or []
    if not isinstance(steps, list) or any(s not in STEPS for s in steps):
        raise MarkingError(f"{path}: item {entry['id']!r}: steps must be a list of {', '.join(STEPS)}")
    return [str(s) for s in steps]


def _steps_settings(path: Path, raw) -> dict:
    raw = raw or {}
    if not isinstance(raw, dict) or any(k not in STEPS or not isinstance(v, dict) for k, v in raw.items()):
        raise MarkingError(f"{path}: 'steps' must map step names ({', '.join(STEPS)}) to settings")
    return {k: dict(v) for k, v in raw.items()}


def _sandbox_settings(path: Path, raw) -> dict:
    raw = raw or {}
    known = set(vars(Limits()))
    if not isinstance(raw, dict) or set(raw) - known:
        raise MarkingError(f"{path}: 'sandbox' settings must be among {', '.join(sorted(known))}")
    return {k: int(v) for k, v in raw.items()}


def collect_test_ids(tests_dir: Path) -> set[str]:
    """``file.py::test_name`` of every test function in a folder, read with ``ast`` (never imported)."""
    ids = set()
    if not tests_dir.is_dir():
        return ids
    for path in sorted(tests_dir.glob("test_*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except SyntaxError as err:
            raise MarkingError(f"{path}: marking test file does not parse ({err.msg}, line {err.lineno})") from None
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
                ids.add(f"{path.name}::{node.name}")
            elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                for sub in node.body:
                    if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)) and sub.name.startswith("test"):
                        ids.add(f"{path.name}::{node.name}::{sub.name}")
    return ids


def check_scheme(scheme: Scheme, suites: list[tuple[Scheme, Path, Path]]) -> list[str]:
    """Problems that make the scheme unusable: tests missing from it, missing tests, wrong total."""
    problems = []
    for sub, tests_dir, scheme_path in suites:
        found = collect_test_ids(tests_dir)
        listed = {it.test for it in sub.items if it.test}
        for missing in sorted(found - listed):
            problems.append(f"{scheme_path}: marking test {missing} is not an item of the scheme")
        for absent in sorted(listed - found):
            problems.append(f"{scheme_path}: item test {absent} does not exist in {tests_dir}")
        points = sum(it.points for it in sub.items)
        if abs(points - sub.total) > 1e-9:
            problems.append(f"{scheme_path}: item points add up to {points:g}, but total is {sub.total:g}")
        for it in sub.items:
            if it.builtin and it.builtin != "integrity":
                problems.append(f"{scheme_path}: item {it.id!r}: unknown builtin {it.builtin!r}")
    return problems


# ----------------------------------------------------------------------------- integrity
sha256 = scoring.sha256_file


def protected_files(root: Path = ROOT) -> list[str]:
    """Repository-relative paths whose checksums the lecturer records."""
    tests = sorted(p.relative_to(root).as_posix() for p in (root / "coursework/marking/tests").glob("*.py"))
    return PROTECTED + tests


def write_checksums(path: Path, root: Path = ROOT) -> Path:
    """Record the SHA-256 of every protected file (``sha256sum -c`` format). Lecturer's tool."""
    lines = [f"{sha256(root / rel)}  {rel}" for rel in protected_files(root)]
    _atomic_write(path, "\n".join(lines) + "\n")
    return path


def verify_checksums(path: Path, root: Path = ROOT) -> list[str]:
    """Differences between the protected files and the recorded checksums (empty if none)."""
    if not path.is_file():
        return [f"checksums file {path} is missing"]
    recorded = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            digest, _, rel = line.strip().partition("  ")
            recorded[rel.strip()] = digest
    problems = []
    for rel, digest in recorded.items():
        file = root / rel
        if file.is_symlink() or (file.exists() and not file.is_file()):
            problems.append(f"{rel}: not a regular file")
        elif not file.is_file():
            problems.append(f"{rel}: missing")
        elif sha256(file) != digest:
            problems.append(f"{rel}: modified")
    for rel in protected_files(root):
        if rel not in recorded:
            problems.append(f"{rel}: not in the lecturer's checksums (added or renamed)")
    return problems


# ----------------------------------------------------------------------------- running items
def _tail(text: str, limit: int = OUTPUT_TAIL) -> str:
    text = text.strip()
    return text if len(text) <= limit else "...\n" + text[-limit:]


def _junit_outcome(xml_path: Path) -> tuple[bool, str]:
    """(passed, message) from a pytest JUnit file with one test case."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, FileNotFoundError):
        return False, "the test produced no report (it crashed or was killed)"
    cases = list(root.iter("testcase"))
    if not cases:
        return False, "no test was collected (check the item's test name)"
    for case in cases:
        for tag in ("failure", "error"):
            node = case.find(tag)
            if node is not None:
                return False, (node.get("message") or tag).strip()
        node = case.find("skipped")
        if node is not None:
            return False, f"skipped: {(node.get('message') or '').strip()}"
    return True, ""


def marker_python(code: str, *args: str) -> list[str]:
    """A command running ``code`` in an isolated interpreter that sees only this checkout.

    ``-I`` drops the script's folder, the working directory, ``PYTHON*`` variables and the user's
    site-packages from the path; only the lecturer's checkout is put in front.
    """
    return [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); {code}", *args]


def marker_env(extra: dict | None = None) -> dict:
    """Environment of a marker sub-process: a few basics, never PYTEST_* or PYTHON* settings."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "TF_ENABLE_ONEDNN_OPTS")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONDONTWRITEBYTECODE": "1", **(extra or {})}


def run_test_item(item: Item, env: dict, work: Path, time_limit: float) -> None:
    """Run one marking test as its own isolated pytest process, killing it at ``time_limit`` seconds.

    The process imports only the lecturer's checkout: its working directory and rootdir are a
    folder of the marker, settings come from ``coursework/marking/pytest.ini`` (``-c``), no
    ``conftest.py`` is loaded and no cache is written.
    """
    xml_path = work / "items" / f"{item.id}.xml"
    value_path = work / "items" / f"{item.id}.value.json"
    log_path = work / "items" / f"{item.id}.log"
    cwd = work / "pytest"
    cwd.mkdir(parents=True, exist_ok=True)
    for path in (xml_path, value_path):
        path.unlink(missing_ok=True)
    args = [item.nodeid, "-c", str(PYTEST_INI), "--rootdir", str(cwd), "--noconftest",
            "-p", "coursework.marking.fixtures", "-p", "no:cacheprovider",
            "-q", "--tb=short", "--junitxml", str(xml_path)]
    cmd = marker_python("import pytest; sys.exit(pytest.main(sys.argv[1:]))", *args)
    item_env = {**env, "MARKING_VALUE_FILE": str(value_path), "MARKING_ITEM_TIME_LIMIT": f"{time_limit:.0f}"}
    start = time.monotonic()
    timed_out = run_in_session(cmd, cwd=cwd, env=item_env, log_path=log_path, time_limit=time_limit) is None
    item.seconds = time.monotonic() - start
    item.ran = True
    log_text = log_path.read_text(encoding="utf-8", errors="replace")
    if timed_out:
        item.status, item.score = "failed", 0.0
        item.output = f"Stopped: the time limit of {time_limit:.0f} s was reached.\n" + _tail(log_text, 1500)
        return
    passed, message = _junit_outcome(xml_path)
    if not passed:
        item.status, item.score = "failed", 0.0
        item.output = _tail(f"{message}\n\n{log_text}")
        return
    if item.band is None:
        item.status, item.score = "passed", item.points
        item.output = "passed"
        return
    try:
        item.value = float(json.loads(value_path.read_text())["value"])
    except (FileNotFoundError, KeyError, ValueError, TypeError):
        item.status, item.score = "failed", 0.0
        item.output = "the test passed but recorded no value for its band"
        return
    item.score = band_score(item.value, item.band, item.points)
    item.status = "passed" if item.score > 0 else "failed"
    item.output = (
        f"measured {item.value:.4g}; band: 0 marks at {item.band['zero']}, full marks at "
        f"{item.band['full']} -> {item.score:.2f}/{item.points:g}"
    )


def band_score(value: float, band: dict, points: float) -> float:
    """Linear marks between ``band['zero']`` (0 marks) and ``band['full']`` (all points), clipped.

    Works both ways: Dice (higher is better, zero < full) and HD95 (lower is better, zero > full).
    """
    if value != value:  # NaN scores nothing
        return 0.0
    fraction = (value - band["zero"]) / (band["full"] - band["zero"])
    return round(points * min(1.0, max(0.0, fraction)), 4)


# ----------------------------------------------------------------------------- reports
def _shown_output(item: Item) -> str:
    return item.output if item.visibility == VISIBLE else ""


def write_reports(out: Path, title: str, items: list[Item], total: float, elapsed: float, notes: list[str]) -> float:
    """Write results.json, report.xml and marks.md atomically; return the percentage."""
    out.mkdir(parents=True, exist_ok=True)
    score = sum(it.score for it in items)
    percent = 100.0 * score / total if total else 0.0
    results = {
        "score": round(score, 4),
        "max_score": total,
        "execution_time": round(elapsed, 1),
        "output": "\n".join(notes) if notes else f"{title}: {percent:.1f}%",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": [
            {
                "name": f"{it.id}: {it.name}",
                "score": round(it.score, 4),
                "max_score": it.points,
                "status": it.status,
                "visibility": it.visibility,
                "output": _shown_output(it) or ("(hidden test: output withheld)" if it.visibility != VISIBLE else ""),
                **({"number": it.id}),
            }
            for it in items
        ],
    }
    _atomic_write(out / "results.json", json.dumps(results, indent=2) + "\n")
    _atomic_write(out / "report.xml", _junit_xml(title, items, elapsed))
    _atomic_write(out / "marks.md", _markdown(title, items, score, total, percent, notes))
    return percent


def _atomic_write(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _junit_xml(title: str, items: list[Item], elapsed: float) -> str:
    failures = sum(1 for it in items if it.status != "passed")
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        f'<testsuites><testsuite name={quoteattr(title)} tests="{len(items)}" failures="{failures}" errors="0" time="{elapsed:.1f}">',
    ]
    for it in items:
        lines.append(
            f'<testcase classname="marking" name={quoteattr(f"{it.id}: {it.name} [{it.score:.2f}/{it.points:g}]")} time="{it.seconds:.1f}">'
        )
        if it.status != "passed":
            message = _shown_output(it).splitlines()[0] if _shown_output(it) else "failed (hidden)"
            lines.append(f"<failure message={quoteattr(message[:300])}>{escape(_shown_output(it))}</failure>")
        elif _shown_output(it):
            lines.append(f"<system-out>{escape(_shown_output(it))}</system-out>")
        lines.append("</testcase>")
    lines.append("</testsuite></testsuites>")
    return "\n".join(lines) + "\n"


def _markdown(title: str, items: list[Item], score: float, total: float, percent: float, notes: list[str]) -> str:
    lines = [f"# {title}", "", f"**Mark: {score:.2f} / {total:g} ({percent:.1f}%)**", ""]
    lines += [f"> {note}" for note in notes] + ([""] if notes else [])
    lines += ["| item | what is checked | marks | result | time (s) |", "| --- | --- | ---: | --- | ---: |"]
    for it in items:
        result = it.status if it.ran or it.builtin else "not run"
        if it.value is not None and it.visibility == VISIBLE:
            result += f" ({it.value:.3f})"
        hidden = " (hidden)" if it.visibility != VISIBLE else ""
        lines.append(f"| `{it.id}`{hidden} | {it.name} | {it.score:.2f} / {it.points:g} | {result} | {it.seconds:.0f} |")
    lines.append("")
    for it in items:
        if it.visibility == VISIBLE and it.output and it.status != "passed":
            lines += [f"## `{it.id}`", "", "```", it.output.strip(), "```", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- held-out data
INSTRUCTOR_SEED = 104729  # the sample instructor directory's held-out cases (no fork generates this seed)


def generate_cases(out: Path, num_cases: int, seed: int, time_limit: float = 600) -> Path:
    """Synthetic pelvic cases from the lecturer's generator, in an isolated marker process."""
    out.parent.mkdir(parents=True, exist_ok=True)
    code = ("from data_utils.synthetic.pelvic import generate_pelvic_dataset as g; "
            "g(sys.argv[1], num_cases=int(sys.argv[2]), seed=int(sys.argv[3]))")
    proc = subprocess.run(marker_python(code, str(out), str(num_cases), str(seed)), cwd=out.parent,
                          env=marker_env(), capture_output=True, text=True, timeout=time_limit)
    if proc.returncode != 0:
        raise MarkingError("could not generate the held-out marking data: " + _tail(proc.stderr, 800))
    return out


def prepare_heldout(scheme: Scheme, instructor: Path | None, work: Path, time_limit: float) -> Path:
    """The held-out data folder: the instructor's ``data/`` if given, else synthetic cases.

    The synthetic marking set uses its own seed (from the scheme), so its cases are never the
    ones the group trains, validates or selects models on.
    """
    if instructor is not None and (instructor / "data").is_dir():
        return instructor / "data"
    num_cases = int(scheme.heldout.get("num_cases", 4))
    seed = int(scheme.heldout.get("seed", 2024))
    return generate_cases(work / "heldout", num_cases, seed, time_limit)


# ----------------------------------------------------------------------------- student steps
@dataclass
class Context:
    """One marking run's places and state: where student code runs and where its outputs are copied."""

    submission: Path
    area: Path  # the sandbox's folder
    sandbox: Sandbox
    work: Path  # the marker's own scratch folder (student code cannot see it)
    scheme: Scheme
    heldout: Path | None
    run_dir: Path | None  # --run-dir: a run trained elsewhere (trusted provenance)
    deadline: float
    steps: dict = field(default_factory=dict)

    @property
    def artifacts(self) -> Path:
        return self.work / "artifacts"


def needed_steps(items: list[Item]) -> list[str]:
    """The student steps the items need, with the steps those need, in running order."""
    wanted = {s for it in items for s in it.steps}
    grew = True
    while grew:
        more = {n for s in wanted for n in STEP_NEEDS.get(s, ())}
        grew = not more <= wanted
        wanted |= more
    return [s for s in STEPS if s in wanted]


def stage_submission(ctx: Context, training_data: Path | None) -> Path:
    """Copy the submission into the sandbox, owned by the sandbox user.

    Links are copied as links and never followed by the marker (a fork's ``data`` link to the
    instructor directory stays a link the sandbox cannot resolve). ``training_data`` (the
    lecturer's ``--training-data``) replaces the fork's ``data/``, to save generating the
    synthetic training set again for every fork.
    """
    dst = ctx.area / "submission"
    skip = shutil.ignore_patterns(".git", "results", "marks", ".venv*", "__pycache__", "*.pyc")

    def ignore(folder, names):  # also pipes, sockets and devices: only files, folders and links are copied
        special = {n for n in names if not (os.path.islink(os.path.join(folder, n)) or os.path.isfile(os.path.join(folder, n))
                                            or os.path.isdir(os.path.join(folder, n)))}
        return set(skip(folder, names)) | special

    shutil.copytree(ctx.submission, dst, symlinks=True, ignore=ignore)
    if training_data is not None:
        if (dst / "data").is_symlink() or (dst / "data").is_file():
            (dst / "data").unlink()
        shutil.rmtree(dst / "data", ignore_errors=True)
        shutil.copytree(training_data, dst / "data", symlinks=True)
    ctx.sandbox.give(dst)
    return dst


def stage_inputs(ctx: Context) -> Path:
    """The held-out images (never the masks) where student code can read them."""
    inputs = ctx.area / "inputs"
    inputs.mkdir(mode=0o755)
    for _, image, _ in scoring.heldout_cases(ctx.heldout):
        shutil.copyfile(image, inputs / image.name)
        os.chmod(inputs / image.name, 0o644)
    return inputs


def _record(ctx: Context, name: str, data: dict) -> None:
    ctx.steps[name] = data
    _atomic_write(ctx.work / "steps.json", json.dumps(ctx.steps, indent=2) + "\n")


def _skip(ctx: Context, name: str, blocker: str) -> None:
    _record(ctx, name, {"name": name, "ok": False, "skipped": True, "blocked_by": blocker,
                        "log_tail": f"not run: step {blocker!r} did not succeed"})


def run_step(ctx: Context, name: str, argv: list[str], cwd: Path | None = None) -> StepResult:
    """Run one student command in the sandbox within its limit and the overall deadline."""
    left = ctx.deadline - time.monotonic()
    if left <= 1:
        result = StepResult(name, None, True, 0.0, "not run: the overall marking time limit was reached", 0, ctx.sandbox.level)
    else:
        limit = min(ctx.scheme.step_limit(name), left)
        print(f"[mark] step {name} in the sandbox (limit {limit:.0f} s) ...", flush=True)
        (ctx.work / "steps").mkdir(parents=True, exist_ok=True)
        result = ctx.sandbox.run(name, argv, cwd=cwd or ctx.area / "submission", time_limit=limit,
                                 env_extra={"PYTHONDONTWRITEBYTECODE": "1"}, log_path=ctx.work / "steps" / f"{name}.log")
        state = "ok" if result.ok else ("timed out" if result.timed_out else f"exit {result.returncode}")
        print(f"[mark] step {name}: {state} in {result.seconds:.0f} s", flush=True)
    _record(ctx, name, result.to_json())
    return result


def collect_run(ctx: Context, run: Path, label: str, owner: int | None) -> dict:
    """Copy a run's small files out of the sandbox; record which required files exist (manifest.json)."""
    dst = ctx.artifacts / label
    dst.mkdir(parents=True, exist_ok=True)
    rel = run.relative_to(ctx.area)
    manifest: dict = {"files": {}, "test_predictions": 0, "model_in_submission": False}
    for name in RUN_FILES:
        reason = scoring.copy_untrusted(ctx.area, str(rel / name), dst / name, owner_uid=owner, max_bytes=MAX_RUN_FILE_BYTES)
        manifest["files"][name] = {"present": reason is None, "reason": reason}
    model = dst / "model.keras"
    if model.is_file():
        manifest["model_in_submission"] = _copy_of_submission_file(ctx.submission, model)
        model.unlink()  # only its digest is needed
    names = scoring.list_untrusted_dir(ctx.area, str(rel / "predictions")) or []
    manifest["test_predictions"] = sum(n.endswith(scoring.NIFTI_SUFFIXES) for n in names)
    _atomic_write(dst / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return manifest


def _copy_of_submission_file(submission: Path, file: Path) -> bool:
    """True if ``file`` is byte-identical to a file committed in the submission (a model not trained here)."""
    size, digest = file.stat().st_size, None
    for dirpath, dirnames, filenames in os.walk(submission):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file() or path.stat().st_size != size:
                continue
            digest = digest or scoring.sha256_file(file)
            if scoring.sha256_file(path) == digest:
                return True
    return False


def collect_predictions(ctx: Context, out: Path, label: str, owner: int | None) -> None:
    """Copy every NIfTI file of a predictions folder out of the sandbox; record what was refused and why."""
    dst = ctx.artifacts / label
    dst.mkdir(parents=True, exist_ok=True)
    rel = out.relative_to(ctx.area)
    names = scoring.list_untrusted_dir(ctx.area, str(rel))
    refused = {}
    limit = 4 * len(list((ctx.area / "inputs").iterdir())) + 8
    for name in (names or [])[:limit]:
        if name.endswith(scoring.NIFTI_SUFFIXES):
            reason = scoring.copy_untrusted(ctx.area, str(rel / name), dst / name, owner_uid=owner)
            if reason:
                refused[name] = reason
    info = {"listed": names is not None, "refused": refused, "too_many": len(names or []) > limit}
    _atomic_write(ctx.artifacts / f"{label}.json", json.dumps(info, indent=2) + "\n")


def run_student_steps(ctx: Context, steps: list[str]) -> None:
    """Run the needed steps in order; a failed step makes the steps that need it 'not run'."""
    py = sys.executable
    runs = ctx.sandbox.give(ctx.area / "runs")
    owner = ctx.sandbox.uid
    run = None
    for name in steps:
        missing = [n for n in STEP_NEEDS.get(name, ()) if not ctx.steps.get(n, {}).get("ok")]
        if missing:
            _skip(ctx, name, missing[0])
            continue
        if name == "train" and ctx.run_dir is not None:
            run = ctx.area / "given-run"
            shutil.copytree(ctx.run_dir, run, symlinks=True)
            collect_run(ctx, run, "run", None)  # copied out before any student code can touch it
            ctx.sandbox.give(run)  # its files may be private to the marker's user (atomic writes are 0600)
            _record(ctx, name, {"name": name, "ok": True, "trusted": True, "source": str(ctx.run_dir),
                                "log_tail": "run given with --run-dir: not trained by the marker (provenance trusted)"})
        elif name == "train":
            run_step(ctx, name, [py, "-m", "coursework.train", "--results-dir", str(runs), "--run-name", "marking",
                                 *ctx.scheme.training_args])
            run = runs / "marking"
            collect_run(ctx, run, "run", owner)
        elif name in ("predict", "predict_repro"):
            source = run if name == "predict" else runs / "repro"
            label = "predictions" if name == "predict" else "repro_predictions"
            out = ctx.sandbox.give(ctx.area / "out" / label)
            run_step(ctx, name, [py, "-m", "coursework.predict", str(ctx.area / "inputs"), str(out), "--run-dir", str(source)])
            collect_predictions(ctx, out, label, owner)
        elif name == "retrain":
            run_step(ctx, name, [py, "-m", "coursework.train", "--config", str(run / "config.yaml"),
                                 "--results-dir", str(runs), "--run-name", "repro"])
            collect_run(ctx, runs / "repro", "repro_run", owner)
        elif name == "public_tests":
            run_public_tests(ctx)


def run_public_tests(ctx: Context) -> None:
    """The lecturer's public unit tests (replacing the fork's tests/) against the fork's library, in the sandbox."""
    sub = ctx.area / "submission"
    shutil.rmtree(sub / "tests", ignore_errors=True)
    if (sub / "tests").is_symlink():
        (sub / "tests").unlink()
    shutil.copytree(ROOT / "tests", sub / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    ini = ctx.area / "lecturer" / "pyproject.toml"
    ini.parent.mkdir(exist_ok=True)
    shutil.copyfile(ROOT / "pyproject.toml", ini)
    out = ctx.sandbox.give(ctx.area / "out" / "public_tests")
    args = (ctx.scheme.steps.get("public_tests") or {}).get("args", ["tests", "-m", "not slow"])
    run_step(ctx, "public_tests", public_tests_argv(args, ini, sub, out / "junit.xml"))
    reason = scoring.copy_untrusted(ctx.area, "out/public_tests/junit.xml", ctx.artifacts / "public_tests.xml",
                                    owner_uid=ctx.sandbox.uid, max_bytes=16 << 20)
    ctx.steps["public_tests"]["junit"] = reason or "copied"
    _record(ctx, "public_tests", ctx.steps["public_tests"])


def public_tests_argv(args, ini: Path, rootdir: Path, junit: Path, xdist: bool | None = None) -> list[str]:
    """The command of the public-tests step: pytest with the scheme's ``args`` and the lecturer's settings.

    Two workers (``-n 2``) when pytest-xdist is installed and ``args`` choose no worker count themselves
    (an instructor scheme can pass ``-n 0`` for a handful of tests, where starting workers costs more
    than it saves).
    """
    args = [str(a) for a in args]
    argv = [sys.executable, "-m", "pytest", *args, "-c", str(ini), "--rootdir", str(rootdir), "-p", "no:cacheprovider",
            "-q", "--junitxml", str(junit)]
    if "-n" not in args and (_has_module("xdist") if xdist is None else xdist):
        argv += ["-n", "2"]
    return argv


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def collect_report(ctx: Context) -> None:
    """Copy the report (text only, no links) out of the submission for the report item."""
    for name in ("report.md", "report.tex"):
        scoring.copy_untrusted(ctx.submission, f"coursework/report/{name}", ctx.artifacts / "report" / name,
                               max_bytes=MAX_REPORT_BYTES)


# ----------------------------------------------------------------------------- instructor tools
SAMPLE_HIDDEN_TEST = '''"""Hidden marking test (sample): Dice of the prostate alone, the hardest structure."""

import numpy as np


def test_prostate_dice(heldout_scores, record_value):
    """Mean prostate Dice on the instructor's held-out cases; the scheme's band scores it.

    ``heldout_scores``: per-case ``training.metrics.evaluate_segmentation`` results of the validated
    predictions (fixtures of coursework/marking/fixtures.py; never import from the submission).
    """
    value = float(np.mean([r["dice"]["prostate"] for r in heldout_scores]))
    record_value(value)
'''

SAMPLE_SCHEME = '''# Hidden items of the lecturer's marking (never in a student fork). Same format as
# coursework/marking/scheme.yaml; points add up to this file's own `total`.
# Settings given here replace the public scheme's: heldout, training_args, steps, sandbox,
# overall_time_limit_s (e.g. `training_args: ["--epochs", "20"]`).
title: "Hidden items"
total: 10
items:
  - id: hidden_prostate
    name: Prostate Dice on the instructor's held-out cases
    test: test_hidden.py::test_prostate_dice
    points: 10
    band: {zero: 0.50, full: 0.85}
    visibility: hidden
    steps: [predict]
'''


def init_instructor_dir(path: Path, num_cases: int = 4, seed: int = INSTRUCTOR_SEED) -> Path:
    """Write a sample instructor directory: held-out cases, one hidden test, its scheme, the checksums.

    Raises:
        MarkingError: ``path`` exists and is not empty.
    """
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise MarkingError(f"{path}: exists and is not empty; give a new folder")
    (path / "tests").mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)  # held-out labels: readable by the lecturer only
    generate_cases(path / "data", num_cases, seed)
    _atomic_write(path / "tests" / "test_hidden.py", SAMPLE_HIDDEN_TEST)
    _atomic_write(path / "scheme.yaml", SAMPLE_SCHEME)
    write_checksums(path / "checksums")
    return path


def write_roster(marks_root: Path) -> Path:
    """``marks_root/roster.csv``: one row per group folder holding a ``results.json`` (Gradescope).

    Raises:
        MarkingError: no group's results were found.
    """
    rows, items = [], []
    for results in sorted(Path(marks_root).glob("*/results.json")):
        data = json.loads(results.read_text())
        scores = {t.get("number") or t["name"].split(":")[0]: t["score"] for t in data["tests"]}
        items += [k for k in scores if k not in items]
        percent = 100.0 * data["score"] / data["max_score"] if data["max_score"] else 0.0
        rows.append({"group": results.parent.name, "score": data["score"], "max_score": data["max_score"],
                     "percent": round(percent, 1), **scores})
    if not rows:
        raise MarkingError(f"{marks_root}: no <group>/results.json found")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["group", "score", "max_score", "percent", *items], restval="")
    writer.writeheader()
    writer.writerows(rows)
    out = Path(marks_root) / "roster.csv"
    _atomic_write(out, buffer.getvalue())
    return out


# ----------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m coursework.mark", description=__doc__.split("\n")[0])
    parser.add_argument("--submission", default=None, metavar="FORK",
                        help="lecturer: mark this checkout of a group's fork with this checkout's scheme, tests "
                             "and scorer (default: mark this checkout itself, as a self-check)")
    parser.add_argument("--instructor-dir", default=os.environ.get("MARKING_INSTRUCTOR_DIR"),
                        help="folder of hidden tests (tests/), held-out data (data/), scheme.yaml and "
                             "checksums; default: $MARKING_INSTRUCTOR_DIR")
    parser.add_argument("--out", default="marks", help="where the reports go (default: marks)")
    parser.add_argument("--run-dir", default=None,
                        help="mark this existing run instead of training one (its provenance is trusted)")
    parser.add_argument("--items", default=None, help="comma-separated item ids to run (default: all)")
    parser.add_argument("--work-dir", default=None, help="the marker's scratch folder (default: <out>/work)")
    parser.add_argument("--training-data", default=None, metavar="DIR",
                        help="copy this folder in as the submission's data/ (e.g. the generated synthetic "
                             "training set, so that it is not generated again for every fork)")
    parser.add_argument("--expose", action="append", default=[], metavar="DIR",
                        help="a folder student code may read in place (read-only; its files must be "
                             "readable by others); repeatable")
    parser.add_argument("--isolation", choices=LEVELS, action="append", default=None,
                        help="only try this isolation level (repeatable; default: the strongest that works)")
    parser.add_argument("--unsafe-same-user", action="store_true",
                        help="lecturer mode: run student code as this user if no sandbox user is available "
                             "(printed on the marks)")
    parser.add_argument("--write-checksums", action="store_true",
                        help="lecturer: record the checksums of the protected files and exit")
    parser.add_argument("--init-instructor-dir", default=None, metavar="DIR",
                        help="lecturer: write a sample instructor directory and exit")
    parser.add_argument("--roster", default=None, metavar="MARKS_DIR",
                        help="lecturer: write MARKS_DIR/roster.csv from MARKS_DIR/<group>/results.json and exit")
    return parser.parse_args(argv)


def _load_suites(instructor: Path | None) -> tuple[Scheme, list[tuple[Scheme, Path, Path]]]:
    scheme = load_scheme(SCHEME, PUBLIC_TESTS)
    suites = [(scheme, PUBLIC_TESTS, SCHEME)]
    if instructor is not None and (instructor / "scheme.yaml").is_file():
        hidden = load_scheme(instructor / "scheme.yaml", instructor / "tests")
        scheme.override(hidden)
        suites.append((hidden, instructor / "tests", instructor / "scheme.yaml"))
    elif instructor is not None and (instructor / "tests").is_dir():
        # Hidden tests without a scheme would be marked by nothing: refuse rather than ignore them.
        suites.append((Scheme("hidden", 0.0, []), instructor / "tests", instructor / "scheme.yaml"))
    return scheme, suites


def _hidden_paths(paths, area: Path) -> list[Path]:
    """Paths to cover in the sandbox; '/' and the area's own ancestors cannot be covered."""
    out = []
    for p in paths:
        if p is None:
            continue
        p = Path(p).resolve()
        if p != Path("/") and not (area.resolve() == p or p in area.resolve().parents):
            out.append(p)
    return out


def _secrets(work: Path, heldout: Path | None, instructor: Path | None) -> list[Path]:
    """Files the sandbox probe must fail to read: a canary of the marker, a held-out mask, instructor files."""
    canary = work / ".canary"
    canary.write_text("marker file\n")
    os.chmod(canary, 0o644)  # readable by mode: only the folders (or the namespaces) keep it away
    found = [canary]
    if heldout is not None:
        found += [m for _, _, m in scoring.heldout_cases(heldout)][:1]
    if instructor is not None:
        found += [p for p in sorted(instructor.rglob("*")) if p.is_file()][:3]
    return found


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.write_checksums:
            path = write_checksums(CHECKSUMS)
            print(f"wrote {path.relative_to(ROOT)} ({len(protected_files())} files)")
            return 0
        if args.init_instructor_dir:
            path = init_instructor_dir(Path(args.init_instructor_dir))
            print(f"wrote the sample instructor directory {path} (data/, tests/, scheme.yaml, checksums)")
            return 0
        if args.roster:
            print(f"wrote {write_roster(Path(args.roster))}")
            return 0
    except MarkingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return mark(args)


def mark(args: argparse.Namespace) -> int:
    """One marking run (see the module docstring); returns the exit status."""
    lecturer = args.submission is not None
    submission = Path(args.submission).resolve() if lecturer else ROOT
    out = Path(args.out).resolve()
    work = Path(args.work_dir).resolve() if args.work_dir else out / "work"
    instructor = Path(args.instructor_dir).resolve() if args.instructor_dir else None
    if not submission.is_dir():
        print(f"error: --submission {submission}: not a folder", file=sys.stderr)
        return 2
    if lecturer and (submission == ROOT or submission in ROOT.parents or submission in Path.cwd().resolve().parents
                     or submission == Path.cwd().resolve()):
        print(f"error: --submission {submission} holds this marker or the working directory: run the marker from "
              "the lecturer's own checkout, outside the submission", file=sys.stderr)
        return 2
    if instructor is not None and not instructor.is_dir():
        print(f"error: instructor directory {instructor} does not exist", file=sys.stderr)
        return 2
    shutil.rmtree(work, ignore_errors=True)  # nothing of an earlier run is marked again
    out.mkdir(parents=True, exist_ok=True)
    (work / "items").mkdir(parents=True)
    for folder in (out, work):
        os.chmod(folder, 0o700)
    start = time.monotonic()
    notes: list[str] = [f"Lecturer marking of {submission.name} with the scheme, tests and scorer of the "
                        "lecturer's checkout." if lecturer else SELF_CHECK_NOTE]

    # SIGTERM (a CI job timeout) becomes an exception so the reports are still written.
    def _terminate(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _terminate)

    try:
        scheme, suites = _load_suites(instructor)
    except MarkingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    items = [it for sub, _, _ in suites for it in sub.items]
    total = sum(sub.total for sub, _, _ in suites)
    checksums = instructor / "checksums" if instructor is not None and (instructor / "checksums").is_file() else CHECKSUMS

    # 1. integrity of the submission's marking files
    problems = verify_checksums(checksums, submission)
    integrity_ok = not problems
    for it in items:
        if it.builtin == "integrity":
            it.ran = True
            if integrity_ok:
                it.status, it.score, it.output = "passed", it.points, f"all files match {checksums.name}"
            else:
                it.status, it.score = "failed", 0.0
                it.output = "Marking files differ from the lecturer's checksums:\n" + "\n".join(problems)

    # 2. scheme consistency
    scheme_problems = check_scheme(scheme, suites)
    if scheme_problems:
        for p in scheme_problems:
            print(f"error: {p}", file=sys.stderr)
        notes.append("Marking scheme check failed: " + "; ".join(scheme_problems))
        for it in items:
            it.score = 0.0  # an inconsistent scheme gives no marks at all, not even for integrity
            if not it.builtin:
                it.status, it.output = "failed", "not marked: the marking scheme check failed"
        write_reports(out, scheme.title, items, total, time.monotonic() - start, notes)
        _print_summary(items, 0.0, lecturer)
        return 1

    selected = items
    if args.items:
        wanted = [w.strip() for w in args.items.split(",") if w.strip()]
        unknown = sorted(set(wanted) - {it.id for it in items})
        if unknown:
            print(f"error: --items: unknown item(s) {', '.join(unknown)}; items are {', '.join(it.id for it in items)}", file=sys.stderr)
            return 2
        selected = [it for it in items if it.id in wanted]
        total = sum(it.points for it in selected)
        notes.append(f"Partial marking: only items {', '.join(wanted)} were run.")
    if any(it.id == "report" for it in selected):
        notes.append(REPORT_NOTE)

    if not integrity_ok:
        notes.append("Integrity check failed: no item was marked. Restore the lecturer's files (see the integrity item).")
        for it in selected:
            if not it.builtin:
                it.score, it.status, it.output = 0.0, "failed", "not marked: the integrity check failed"
        percent = write_reports(out, scheme.title, selected, total, time.monotonic() - start, notes)
        _print_summary(selected, percent, lecturer)
        return 1

    deadline = start + scheme.overall_time_limit_s
    steps = needed_steps([it for it in selected if not it.builtin])
    area = Path(tempfile.mkdtemp(prefix="coursework-sandbox-", dir="/var/tmp" if os.access("/var/tmp", os.W_OK) else None))
    sandbox = None
    status = 0
    try:
        heldout = None
        if {"predict", "predict_repro"} & set(steps):
            heldout = prepare_heldout(scheme, instructor, work, max(60.0, deadline - time.monotonic()))
        run_dir = Path(args.run_dir).resolve() if args.run_dir else None
        if run_dir is not None and not (run_dir / "config.yaml").is_file():
            raise MarkingError(f"--run-dir {run_dir}: no config.yaml (is it a finished run of coursework.train?)")
        if run_dir is not None:
            notes.append(f"Run {run_dir.name} was given with --run-dir: it was not trained by the marker, and its "
                         "provenance is trusted.")
        if steps:
            hide = _hidden_paths([ROOT, instructor, out, work, heldout, Path.home(), Path.cwd(), submission], area)
            sandbox = Sandbox(area, hide=hide, expose=args.expose,
                              secrets_to_probe=_secrets(work, heldout, instructor),
                              allow_same_user=(not lecturer) or args.unsafe_same_user,
                              limits=Limits(**scheme.sandbox), levels=args.isolation or LEVELS)
            try:
                level = sandbox.setup()
            except SandboxError as err:
                print(f"error: refusing to run student code: {err}", file=sys.stderr)
                if lecturer:
                    print("(give --unsafe-same-user to run it as this user anyway; the marks will say so)", file=sys.stderr)
                return 2
            notes.append(sandbox.describe() + ".")
            if level == "none" and lecturer:
                notes.append("UNSAFE: --unsafe-same-user: student code ran as the marker's own user and could read "
                             "everything the marker can; these marks cannot be trusted.")
            ctx = Context(submission, area, sandbox, work, scheme, heldout, run_dir, deadline)
            stage_submission(ctx, Path(args.training_data).resolve() if args.training_data else None)
            if heldout is not None:
                stage_inputs(ctx)
            run_student_steps(ctx, steps)
            sandbox.ensure_clean()
        ctx_report = Context(submission, area, sandbox, work, scheme, heldout, run_dir, deadline)
        collect_report(ctx_report)
        env = marker_env({
            "MARKING_WORK_DIR": str(work),
            "MARKING_ARTIFACTS": str(work / "artifacts"),
            "MARKING_STEPS": str(work / "steps.json"),
            "MARKING_SUBMISSION": str(submission),
            **({"MARKING_HELDOUT_DIR": str(heldout)} if heldout is not None else {}),
        })
        for it in selected:
            if it.builtin:
                continue
            left = deadline - time.monotonic()
            if left <= 1:
                it.status, it.output = "failed", "not run: the overall marking time limit was reached"
                continue
            print(f"[mark] {it.id} (limit {min(it.time_limit_s, left):.0f} s) ...", flush=True)
            run_test_item(it, env, work, min(it.time_limit_s, left))
            print(f"[mark] {it.id}: {it.status} {it.score:.2f}/{it.points:g} in {it.seconds:.0f} s", flush=True)
    except MarkingError as err:
        notes.append(str(err))
        print(f"error: {err}", file=sys.stderr)
    except KeyboardInterrupt as err:
        notes.append(f"Marking was interrupted ({err}); items not run score 0.")
        status = 130
    finally:
        try:
            if sandbox is not None:
                sandbox.ensure_clean()  # nothing of the student's may run while the marks are written
        except SandboxError as err:
            print(f"error: {err}", file=sys.stderr)
            return 3
        shutil.rmtree(area, ignore_errors=True)
    percent = write_reports(out, scheme.title, selected, total, time.monotonic() - start, notes)
    _print_summary(selected, percent, lecturer)
    return status


def _print_summary(items: list[Item], percent: float, lecturer: bool = False) -> None:
    for it in items:
        hidden = " (hidden)" if it.visibility != VISIBLE else ""
        print(f"  {it.id:<20}{hidden} {it.score:6.2f} / {it.points:<5g} {it.status}")
    print(f"MARK: {percent:.1f}%" + ("" if lecturer else " (self-check; the lecturer's marking is authoritative)"), flush=True)


if __name__ == "__main__":
    sys.exit(main())
