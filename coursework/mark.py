"""Automated marking: run the marking tests item by item and turn their outcomes into a mark.

Usage::

    python -m coursework.mark                          # train with the group's config, then mark
    python -m coursework.mark --run-dir results/baseline   # mark an existing run (CI: train stage)
    python -m coursework.mark --instructor-dir /path/to/hidden   # or MARKING_INSTRUCTOR_DIR=...
    python -m coursework.mark --items predict_contract,dice      # run a few items while developing
    python -m coursework.mark --write-checksums        # lecturer: record the checksums file

What it does, in order:

1. **Integrity.** Hashes the scheme, the marking tests and the code they rely on and compares
   them with the SHA-256 checksums file the lecturer controls (the instructor directory's
   ``checksums`` if there is one, else ``coursework/marking/checksums``). Any difference is a
   failed ``integrity`` item and no other item is marked: edited files are never trusted.
2. **Scheme check.** Every test function in the marking suites (public and instructor) must be
   an item in the scheme, every item's test must exist, and the points must add up to the
   scheme's ``total``; otherwise the run fails (exit status 1).
3. **Items.** Each item runs as its own pytest process with the item's time limit; a hung or
   crashed item is killed (with all its child processes) and scored 0, and marking goes on.
   Metric items record a value (e.g. mean Dice) that the scheme's linear band turns into marks.
4. **Reports**, rewritten after every item so that they survive a killed job:
   ``marks/results.json`` (Gradescope schema), ``marks/report.xml`` (JUnit), ``marks/marks.md``.
   The last line printed is ``MARK: NN.N%`` (CI reads it with a ``coverage:`` regex).

Hidden items (visibility other than ``visible``) are reported with their score but without
their output. Marks come only from test outcomes and the scheme.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import yaml

from data_utils.io import atomic_write

ROOT = Path(__file__).resolve().parent.parent
MARKING = ROOT / "coursework" / "marking"
SCHEME = MARKING / "scheme.yaml"
PUBLIC_TESTS = MARKING / "tests"
CHECKSUMS = MARKING / "checksums"
PYTEST_INI = MARKING / "pytest.ini"
# Files the marks depend on besides the tests: the scheme, this runner, the shared fixtures and
# the metric code the tests call. A group must leave them as they are.
PROTECTED = [
    "coursework/marking/scheme.yaml",
    "coursework/marking/fixtures.py",
    "coursework/marking/pytest.ini",
    "coursework/mark.py",
    "training/metrics.py",
]
VISIBLE = "visible"
OUTPUT_TAIL = 4000


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
    uses_heldout: bool = False
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
    overall_time_limit_s: float = 1800.0


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
                uses_heldout=bool(entry.get("uses_heldout", False)),
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
        overall_time_limit_s=float(raw.get("overall_time_limit_s", 1800)),
    )


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
def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


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
        if not file.is_file():
            problems.append(f"{rel}: missing")
        elif sha256(file) != digest:
            problems.append(f"{rel}: modified")
    for rel in protected_files(root):
        if rel not in recorded:
            problems.append(f"{rel}: not in the lecturer's checksums (added or renamed)")
    return problems


# ----------------------------------------------------------------------------- running items
def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


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


def run_test_item(item: Item, env: dict, work: Path, time_limit: float) -> None:
    """Run one pytest item in its own process group, killing it at ``time_limit`` seconds."""
    xml_path = work / "items" / f"{item.id}.xml"
    value_path = work / "items" / f"{item.id}.value.json"
    log_path = work / "items" / f"{item.id}.log"
    for p in (xml_path, value_path):
        p.unlink(missing_ok=True)
    cmd = [
        sys.executable, "-m", "pytest", item.nodeid,
        "-c", str(PYTEST_INI), "--rootdir", str(ROOT), "--noconftest",
        "-p", "coursework.marking.fixtures", "-p", "no:cacheprovider",
        "-q", "--tb=short", "--junitxml", str(xml_path),
    ]
    item_env = {**env, "MARKING_VALUE_FILE": str(value_path), "MARKING_ITEM_TIME_LIMIT": f"{time_limit:.0f}"}
    start = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log:
        # A new session makes the item the leader of a process group, so a timeout kills the
        # test together with any training or prediction process it started.
        proc = subprocess.Popen(cmd, cwd=ROOT, env=item_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=time_limit)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.wait()
            timed_out = True
        finally:
            _kill_group(proc)  # stray grandchildren of a finished test
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
def prepare_heldout(scheme: Scheme, instructor: Path | None, work: Path, time_limit: float) -> Path:
    """The held-out data folder: the instructor's ``data/`` if given, else synthetic cases.

    The synthetic marking set uses its own seed (from the scheme), so its cases are never the
    ones the group trains, validates or selects models on.
    """
    if instructor is not None and (instructor / "data").is_dir():
        return instructor / "data"
    out = work / "heldout"
    marker = out / ".complete"
    num_cases = int(scheme.heldout.get("num_cases", 4))
    seed = int(scheme.heldout.get("seed", 2024))
    if marker.is_file() and marker.read_text().strip() == f"{num_cases} {seed}":
        return out
    if out.exists():
        shutil.rmtree(out)
    code = (
        "import sys; from data_utils.synthetic.pelvic import generate_pelvic_dataset; "
        "generate_pelvic_dataset(sys.argv[1], num_cases=int(sys.argv[2]), seed=int(sys.argv[3]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(out), str(num_cases), str(seed)],
        cwd=ROOT, capture_output=True, text=True, timeout=time_limit,
    )
    if proc.returncode != 0:
        raise MarkingError("could not generate the held-out marking data: " + _tail(proc.stderr, 800))
    marker.write_text(f"{num_cases} {seed}\n")
    return out


# ----------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m coursework.mark", description=__doc__.split("\n")[0])
    parser.add_argument("--instructor-dir", default=os.environ.get("MARKING_INSTRUCTOR_DIR"),
                        help="folder of hidden tests (tests/), held-out data (data/), scheme.yaml and "
                             "checksums; default: $MARKING_INSTRUCTOR_DIR")
    parser.add_argument("--out", default="marks", help="where the reports go (default: marks)")
    parser.add_argument("--run-dir", default=None,
                        help="mark this existing run instead of training one (results/<run-name>)")
    parser.add_argument("--items", default=None, help="comma-separated item ids to run (default: all)")
    parser.add_argument("--work-dir", default=None, help="scratch folder (default: <out>/work)")
    parser.add_argument("--write-checksums", action="store_true",
                        help="lecturer: record the checksums of the protected files and exit")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.write_checksums:
        path = write_checksums(CHECKSUMS)
        print(f"wrote {path.relative_to(ROOT)} ({len(protected_files())} files)")
        return 0
    out = Path(args.out).resolve()
    work = Path(args.work_dir).resolve() if args.work_dir else out / "work"
    (work / "items").mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    notes: list[str] = []

    # SIGTERM (a CI job timeout) becomes an exception so the reports are still written.
    def _terminate(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _terminate)

    instructor = Path(args.instructor_dir).resolve() if args.instructor_dir else None
    if instructor is not None and not instructor.is_dir():
        print(f"error: instructor directory {instructor} does not exist", file=sys.stderr)
        return 2

    try:
        scheme = load_scheme(SCHEME, PUBLIC_TESTS)
        suites = [(scheme, PUBLIC_TESTS, SCHEME)]
        if instructor is not None and (instructor / "scheme.yaml").is_file():
            hidden = load_scheme(instructor / "scheme.yaml", instructor / "tests")
            suites.append((hidden, instructor / "tests", instructor / "scheme.yaml"))
        elif instructor is not None and (instructor / "tests").is_dir():
            # Hidden tests without a scheme would be marked by nothing: refuse rather than ignore them.
            suites.append((Scheme("hidden", 0.0, []), instructor / "tests", instructor / "scheme.yaml"))
    except MarkingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1

    items = [it for sub, _, _ in suites for it in sub.items]
    total = sum(sub.total for sub, _, _ in suites)
    checksums = instructor / "checksums" if instructor is not None and (instructor / "checksums").is_file() else CHECKSUMS

    # 1. integrity
    problems = verify_checksums(checksums)
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
        print("MARK: 0.0%")
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

    if not integrity_ok:
        notes.append("Integrity check failed: no item was marked. Restore the lecturer's files (see the integrity item).")
        for it in selected:
            if not it.builtin:
                it.score, it.status, it.output = 0.0, "failed", "not marked: the integrity check failed"
        percent = write_reports(out, scheme.title, selected, total, time.monotonic() - start, notes)
        _print_summary(selected, percent)
        return 1

    # 3. items, one process each
    run_dir = Path(args.run_dir).resolve() if args.run_dir else work / "runs" / "marking"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "MARKING_WORK_DIR": str(work),
        "MARKING_RUN_DIR": str(run_dir),
        "MARKING_REUSE_RUN": "1" if args.run_dir else "0",
        "MARKING_TRAINING_ARGS": json.dumps(scheme.training_args),
    }
    if not args.run_dir and run_dir.exists():
        shutil.rmtree(run_dir)  # a run left by an earlier marking run must not be marked again
    shutil.rmtree(work / "predictions", ignore_errors=True)
    deadline = start + scheme.overall_time_limit_s
    try:
        if any(it.uses_heldout for it in selected):
            env["MARKING_HELDOUT_DIR"] = str(prepare_heldout(scheme, instructor, work, max(60.0, deadline - time.monotonic())))
        write_reports(out, scheme.title, selected, total, time.monotonic() - start, notes)
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
            write_reports(out, scheme.title, selected, total, time.monotonic() - start, notes)
    except MarkingError as err:
        notes.append(str(err))
        print(f"error: {err}", file=sys.stderr)
    except KeyboardInterrupt as err:
        notes.append(f"Marking was interrupted ({err}); items not run score 0.")
    percent = write_reports(out, scheme.title, selected, total, time.monotonic() - start, notes)
    _print_summary(selected, percent)
    return 0


def _print_summary(items: list[Item], percent: float) -> None:
    for it in items:
        hidden = " (hidden)" if it.visibility != VISIBLE else ""
        print(f"  {it.id:<20}{hidden} {it.score:6.2f} / {it.points:<5g} {it.status}")
    print(f"MARK: {percent:.1f}%", flush=True)


if __name__ == "__main__":
    sys.exit(main())
