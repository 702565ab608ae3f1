"""Tests for coursework.mark: scheme checks, bands, integrity, reports, time limits, and real marking runs.

The slow tests mark copies of the repository (a "student fork" in a temporary folder) so that a
solution can be edited, or the scheme re-recorded as a lecturer would, without touching the kit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from coursework import mark

from .conftest import REPO, run_module

BASELINE = yaml.safe_load((REPO / "coursework/marking/BASELINE.yaml").read_text())


# ----------------------------------------------------------------------------- helpers
def make_fork(tmp_path: Path) -> Path:
    """A copy of the parts of the repository the marking needs (data/ is shared, read-only use)."""
    fork = tmp_path / "fork"
    for name in ("coursework", "models", "data_utils", "training"):
        shutil.copytree(REPO / name, fork / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "pyproject.toml", fork / "pyproject.toml")
    (fork / "data").symlink_to(REPO / "data", target_is_directory=True)
    return fork


def run_mark(fork: Path, *args: str, timeout: float = 600):
    proc = run_module("coursework.mark", *args, cwd=fork, timeout=timeout, env={"PYTHONPATH": str(fork)})
    results = fork / "marks" / "results.json"
    report = json.loads(results.read_text()) if results.is_file() else None
    return proc, report


def item(report: dict, item_id: str) -> dict:
    return next(t for t in report["tests"] if t["name"].startswith(f"{item_id}:"))


def mark_line(stdout: str) -> float:
    found = re.findall(r"^MARK: (\d+\.\d+)%$", stdout, flags=re.M)
    assert found, f"no MARK line in:\n{stdout[-2000:]}"
    return float(found[-1])


# ----------------------------------------------------------------------------- fast: units
@pytest.mark.parametrize(
    "value, band, expected",
    [
        (0.60, {"zero": 0.60, "full": 0.85}, 0.0),
        (0.725, {"zero": 0.60, "full": 0.85}, 15.0),
        (0.90, {"zero": 0.60, "full": 0.85}, 30.0),
        (0.10, {"zero": 0.60, "full": 0.85}, 0.0),
        (12.5, {"zero": 20.0, "full": 5.0}, 15.0),  # HD95: lower is better
        (3.0, {"zero": 20.0, "full": 5.0}, 30.0),
        (float("nan"), {"zero": 0.60, "full": 0.85}, 0.0),
    ],
)
def test_band_score_is_linear_and_clipped(value, band, expected):
    assert mark.band_score(value, band, 30.0) == pytest.approx(expected)


def test_repository_scheme_is_consistent_and_adds_up():
    scheme = mark.load_scheme(mark.SCHEME, mark.PUBLIC_TESTS)
    assert mark.check_scheme(scheme, [(scheme, mark.PUBLIC_TESTS, mark.SCHEME)]) == []
    assert sum(i.points for i in scheme.items) == scheme.total == 100
    assert {i.id for i in scheme.items} >= {"integrity", "training", "predict_contract", "dice", "hd95",
                                            "reproducibility", "report", "public_tests"}


def test_recorded_checksums_match_the_repository():
    """The lecturer's checksums file is up to date, so the untouched template passes integrity."""
    assert mark.verify_checksums(mark.CHECKSUMS) == []


def _mini_suite(tmp_path: Path, scheme_text: str, tests_text: str) -> tuple[Path, Path]:
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_x.py").write_text(tests_text)
    scheme = tmp_path / "scheme.yaml"
    scheme.write_text(scheme_text)
    return scheme, tests


def test_check_scheme_finds_unlisted_tests_missing_tests_and_bad_totals(tmp_path):
    scheme_path, tests = _mini_suite(
        tmp_path,
        "total: 10\nitems:\n  - {id: a, test: test_x.py::test_a, points: 4}\n  - {id: gone, test: test_x.py::test_gone, points: 4}\n",
        "def test_a():\n    pass\n\ndef test_b():\n    pass\n\nclass TestC:\n    def test_d(self):\n        pass\n",
    )
    scheme = mark.load_scheme(scheme_path, tests)
    problems = mark.check_scheme(scheme, [(scheme, tests, scheme_path)])
    text = "\n".join(problems)
    assert "test_x.py::test_b is not an item" in text
    assert "test_x.py::TestC::test_d is not an item" in text
    assert "test_x.py::test_gone does not exist" in text
    assert "add up to 8, but total is 10" in text


@pytest.mark.parametrize(
    "text, message",
    [
        ("items: 3\n", "'items' list"),
        ("items:\n  - {id: a}\n", "needs at least 'id' and 'points'"),
        ("items:\n  - {id: a, points: 1}\n", "exactly one of 'test' or 'builtin'"),
        ("items:\n  - {id: a, points: 1, test: t.py::t, band: {zero: 1}}\n", "band needs"),
        ("items:\n  - {id: a, points: 1, builtin: integrity}\n  - {id: a, points: 1, builtin: integrity}\n", "duplicate item ids a"),
        ("items: [\n", "not valid YAML"),
    ],
)
def test_malformed_schemes_are_refused_with_the_file_name(tmp_path, text, message):
    path = tmp_path / "scheme.yaml"
    path.write_text(text)
    with pytest.raises(mark.MarkingError, match=re.escape(message)) as info:
        mark.load_scheme(path, tmp_path)
    assert str(path) in str(info.value)


def test_reports_follow_gradescope_and_junit_and_hide_hidden_output(tmp_path):
    items = [
        mark.Item(id="a", name="visible one", points=10, score=10, status="passed", output="fine", ran=True),
        mark.Item(id="b", name="secret one", points=5, score=0, status="failed", output="SECRET DETAIL",
                  visibility="hidden", ran=True),
    ]
    percent = mark.write_reports(tmp_path, "Marks", items, 15, 1.0, [])
    assert percent == pytest.approx(100 * 10 / 15)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["score"] == 10
    assert [t["max_score"] for t in results["tests"]] == [10, 5]
    assert {t["status"] for t in results["tests"]} == {"passed", "failed"}
    for t in results["tests"]:
        assert set(t) >= {"name", "score", "max_score", "status", "visibility", "output"}
    everything = "".join(p.read_text() for p in tmp_path.iterdir())
    assert "SECRET DETAIL" not in everything
    suite = ET.parse(tmp_path / "report.xml").getroot().find("testsuite")
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    assert "| `b` (hidden) |" in (tmp_path / "marks.md").read_text()


def test_edited_scheme_fails_integrity_and_nothing_is_marked(tmp_path):
    """Tampering: a scheme edited to make a band easier is caught; no item earns marks."""
    fork = make_fork(tmp_path)
    scheme = fork / "coursework/marking/scheme.yaml"
    scheme.write_text(scheme.read_text().replace("band: {zero: 0.60, full: 0.85}", "band: {zero: 0.0, full: 0.1}"))
    proc, report = run_mark(fork, "--items", "integrity,dice", timeout=120)
    assert proc.returncode == 1
    assert item(report, "integrity")["status"] == "failed"
    assert "coursework/marking/scheme.yaml: modified" in item(report, "integrity")["output"]
    assert report["score"] == 0 and mark_line(proc.stdout) == 0.0
    assert (fork / "marks/marks.md").is_file() and (fork / "marks/report.xml").is_file()


def test_edited_or_added_marking_test_fails_integrity(tmp_path):
    fork = make_fork(tmp_path)
    test_file = fork / "coursework/marking/tests/test_metrics.py"
    test_file.write_text(test_file.read_text().replace("value = _mean(results, \"mean_dice\")", "value = 1.0"))
    (fork / "coursework/marking/tests/test_extra.py").write_text("def test_free_marks():\n    pass\n")
    proc, report = run_mark(fork, "--items", "integrity", timeout=120)
    assert proc.returncode == 1
    output = item(report, "integrity")["output"]
    assert "test_metrics.py: modified" in output
    assert "test_extra.py: not in the lecturer's checksums" in output


def test_unknown_item_selection_is_refused(tmp_path):
    fork = make_fork(tmp_path)
    proc, _ = run_mark(fork, "--items", "dice,nonsense", timeout=120)
    assert proc.returncode == 2 and "unknown item(s) nonsense" in proc.stderr


def test_instructor_directory_merges_hidden_items(tmp_path):
    """Hidden tests run with the public fixtures; their score counts, their output is withheld."""
    fork = make_fork(tmp_path)
    instructor = tmp_path / "instructor"
    (instructor / "tests").mkdir(parents=True)
    (instructor / "tests/test_hidden.py").write_text(
        "def test_secret_passes():\n    print('HIDDEN-OUTPUT')\n\n"
        "def test_secret_fails():\n    assert False, 'HIDDEN-REASON'\n"
    )
    (instructor / "scheme.yaml").write_text(
        "total: 20\nitems:\n"
        "  - {id: h1, name: hidden pass, test: test_hidden.py::test_secret_passes, points: 12, visibility: hidden}\n"
        "  - {id: h2, name: hidden fail, test: test_hidden.py::test_secret_fails, points: 8, visibility: hidden}\n"
    )
    proc, report = run_mark(fork, "--instructor-dir", str(instructor), "--items", "integrity,report,h1,h2", timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert item(report, "h1")["score"] == 12 and item(report, "h1")["visibility"] == "hidden"
    assert item(report, "h2")["score"] == 0 and item(report, "h2")["status"] == "failed"
    everything = "".join((fork / "marks" / n).read_text() for n in ("results.json", "report.xml", "marks.md")) + proc.stdout
    assert "HIDDEN-OUTPUT" not in everything and "HIDDEN-REASON" not in everything
    # integrity 5 + report 0 (template not written) + h1 12 + h2 0, out of 5 + 10 + 12 + 8
    assert mark_line(proc.stdout) == pytest.approx(100 * 17 / 35, abs=0.05)


def test_instructor_test_missing_from_its_scheme_fails_the_run(tmp_path):
    fork = make_fork(tmp_path)
    instructor = tmp_path / "instructor"
    (instructor / "tests").mkdir(parents=True)
    (instructor / "tests/test_hidden.py").write_text("def test_unlisted():\n    pass\n")
    (instructor / "scheme.yaml").write_text("total: 0\nitems: []\n")
    proc, report = run_mark(fork, "--instructor-dir", str(instructor), timeout=120)
    assert proc.returncode == 1
    assert "test_hidden.py::test_unlisted is not an item of the scheme" in proc.stderr
    assert report["score"] == 0


# ----------------------------------------------------------------------------- slow: marking runs
@pytest.mark.slow
def test_untouched_template_scores_the_documented_baseline(quick_run, tmp_path):
    """Every item but the public test suite, on the shared quick run: the documented fast-profile mark."""
    fork = make_fork(tmp_path)
    items = "integrity,training,predict_contract,dice,hd95,reproducibility,report"
    proc, report = run_mark(fork, "--run-dir", str(quick_run["run_dir"]), "--items", items)
    assert proc.returncode == 0, proc.stderr[-2000:]
    statuses = {t["name"].split(":")[0]: t["status"] for t in report["tests"]}
    for passed in ("integrity", "training", "predict_contract", "reproducibility"):
        assert statuses[passed] == "passed", item(report, passed)["output"]
    assert statuses["report"] == "failed"  # the template's sections are still empty
    assert mark_line(proc.stdout) == pytest.approx(BASELINE["quick_profile_mark_percent"], abs=3.0)
    assert item(report, "dice")["output"].startswith("measured ")


@pytest.mark.slow
def test_all_background_solution_scores_low_on_metric_items(quick_run, tmp_path):
    fork = make_fork(tmp_path)
    solution = fork / "coursework/solution.py"
    solution.write_text(solution.read_text() + (
        "\n\ndef predict_volume(model, image, cfg, batch_size=16):\n"
        "    return np.zeros(image.shape, np.int32)  # an all-background 'solution'\n"
    ))
    proc, report = run_mark(fork, "--run-dir", str(quick_run["run_dir"]), "--items", "predict_contract,dice,hd95")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert item(report, "predict_contract")["status"] == "passed"  # the contract holds ...
    assert item(report, "dice")["score"] == 0 and item(report, "hd95")["score"] == 0  # ... but it finds nothing
    assert re.match(r"measured 0(\.0+)?;", item(report, "dice")["output"]), item(report, "dice")["output"]


@pytest.mark.slow
def test_hanging_training_is_stopped_and_marks_are_still_written(tmp_path):
    fork = make_fork(tmp_path)
    pid_file = tmp_path / "hung.pid"
    solution = fork / "coursework/solution.py"
    text = solution.read_text()
    # The training process records its pid as soon as it imports the solution, then hangs in build_model.
    text = text.replace(
        "from __future__ import annotations\n",
        f"from __future__ import annotations\nimport os as _os\nopen({str(pid_file)!r}, 'w').write(str(_os.getpid()))\n", 1)
    text = text.replace(
        'def build_model(cfg: CourseworkConfig, input_shape: tuple[int, ...], num_classes: int = NUM_CLASSES):\n',
        'def build_model(cfg: CourseworkConfig, input_shape: tuple[int, ...], num_classes: int = NUM_CLASSES):\n'
        '    import time; time.sleep(3600)\n', 1)
    solution.write_text(text)
    # The lecturer shortens the training limit for this test and re-records the checksums.
    scheme = fork / "coursework/marking/scheme.yaml"
    text = scheme.read_text()
    start = text.index("  - id: training")
    scheme.write_text(text[:start] + text[start:].replace("time_limit_s: 600", "time_limit_s: 25", 1))
    run_module("coursework.mark", "--write-checksums", cwd=fork, env={"PYTHONPATH": str(fork)})
    started = time.monotonic()
    proc, report = run_mark(fork, "--items", "integrity,training,report", timeout=240)
    assert time.monotonic() - started < 120
    assert proc.returncode == 0, proc.stderr[-2000:]
    training = item(report, "training")
    assert training["status"] == "failed" and training["score"] == 0
    assert "time limit of 25 s" in training["output"]
    assert item(report, "integrity")["status"] == "passed"
    for name in ("results.json", "report.xml", "marks.md"):
        assert (fork / "marks" / name).is_file()
    assert mark_line(proc.stdout) == pytest.approx(100 * 5 / 25, abs=0.05)
    # The hung training process (a grandchild of the runner) was killed with its item.
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert not _alive(pid), f"hung training process {pid} is still running"


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a killed process that nobody has reaped yet counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    if status.is_file():
        return "State:\tZ" not in status.read_text()
    return True
