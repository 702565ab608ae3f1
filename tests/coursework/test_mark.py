"""Tests for coursework.mark: scheme checks, bands, integrity, reports, steps, roster and self-check runs.

Self-check runs mark copies of the repository (a "student fork" in a temporary folder) from the
fork itself; lecturer-mode marking of cheating forks is in test_mark_cheating.py.
"""

from __future__ import annotations

import json
import re
import shutil
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
    found = re.findall(r"^MARK: (\d+\.\d+)%", stdout, flags=re.M)
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
        ("items:\n  - {id: a, points: 1, test: t.py::t, steps: [compile]}\n", "steps must be a list of"),
        ("steps: {deploy: {time_limit_s: 1}}\nitems: []\n", "'steps' must map step names"),
        ("sandbox: {cpus: 2}\nitems: []\n", "'sandbox' settings must be among"),
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
    text = test_file.read_text()
    assert 'value, per_case = _mean(heldout_scores, "mean_dice")' in text
    test_file.write_text(text.replace('value, per_case = _mean(heldout_scores, "mean_dice")', "value, per_case = 1.0, []"))
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
    # integrity 5 + report 0 (a completeness check worth no points) + h1 12 + h2 0, out of 5 + 0 + 12 + 8
    assert mark_line(proc.stdout) == pytest.approx(100 * 17 / 25, abs=0.05)
    assert "Self-check" in (fork / "marks" / "marks.md").read_text() and "(self-check;" in proc.stdout


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


# ----------------------------------------------------------------------------- steps, overrides, roster
def test_items_need_the_steps_they_list_and_those_steps_need():
    items = [mark.Item(id="a", name="a", points=1, test="t.py::a", steps=["predict_repro"]),
             mark.Item(id="b", name="b", points=1, test="t.py::b", steps=["public_tests"])]
    assert mark.needed_steps(items) == ["train", "retrain", "predict_repro", "public_tests"]
    assert mark.needed_steps([mark.Item(id="c", name="c", points=1, test="t.py::c")]) == []


def test_public_tests_run_the_lecturer_settings_on_two_workers_unless_the_scheme_chooses(tmp_path):
    ini, root, junit = tmp_path / "pyproject.toml", tmp_path / "submission", tmp_path / "junit.xml"
    argv = mark.public_tests_argv(["tests", "-m", "not slow"], ini, root, junit, xdist=True)
    assert argv[1:6] == ["-m", "pytest", "tests", "-m", "not slow"]
    assert argv[argv.index("-c") + 1] == str(ini) and argv[argv.index("--rootdir") + 1] == str(root)
    assert argv[argv.index("--junitxml") + 1] == str(junit) and "no:cacheprovider" in argv
    assert argv[-2:] == ["-n", "2"]
    assert mark.public_tests_argv(["tests", "-n", "0"], ini, root, junit, xdist=True).count("-n") == 1
    assert "-n" not in mark.public_tests_argv(["tests"], ini, root, junit, xdist=False)


def test_repository_scheme_items_name_their_steps():
    scheme = mark.load_scheme(mark.SCHEME, mark.PUBLIC_TESTS)
    steps = {it.id: it.steps for it in scheme.items}
    assert steps["dice"] == ["predict"] and "retrain" in steps["reproducibility"]
    assert steps["report"] == [] and steps["public_tests"] == ["public_tests"]
    assert next(it for it in scheme.items if it.id == "report").points == 0  # completeness earns nothing


def test_instructor_scheme_overrides_only_the_settings_it_sets(tmp_path):
    public = mark.load_scheme(mark.SCHEME, mark.PUBLIC_TESTS)
    path = tmp_path / "scheme.yaml"
    path.write_text("total: 0\nitems: []\ntraining_args: [--quick]\nsteps: {train: {time_limit_s: 30}}\n")
    public.override(mark.load_scheme(path, tmp_path))
    assert public.training_args == ["--quick"]
    assert public.step_limit("train") == 30 and public.step_limit("predict") == 300  # untouched
    assert public.heldout == {"num_cases": 4, "seed": 7919}


def test_roster_has_one_row_per_group_with_item_scores(tmp_path):
    for group, score in (("group-a", 10), ("group-b", 4)):
        items = [mark.Item(id="x", name="x", points=10, score=score, status="passed", ran=True)]
        mark.write_reports(tmp_path / group, "Marks", items, 10, 1.0, [])
    path = mark.write_roster(tmp_path)
    lines = path.read_text().splitlines()
    assert lines[0] == "group,score,max_score,percent,x"
    assert lines[1:] == ["group-a,10,10,100.0,10", "group-b,4,10,40.0,4"]
    with pytest.raises(mark.MarkingError, match="no <group>/results.json"):
        mark.write_roster(tmp_path / "group-a")


def test_marker_refuses_a_submission_that_holds_the_marker(tmp_path):
    proc = run_module("coursework.mark", "--submission", str(REPO), "--out", str(tmp_path / "m"), timeout=60)
    assert proc.returncode == 2 and "outside the submission" in proc.stderr


def test_marker_processes_run_isolated_from_the_working_directory(tmp_path):
    """A sitecustomize.py or module in the working directory is not imported by a marker process."""
    (tmp_path / "sitecustomize.py").write_text("raise SystemExit('fork code ran')\n")
    (tmp_path / "data_utils.py").write_text("raise SystemExit('fork code ran')\n")
    import subprocess

    proc = subprocess.run(mark.marker_python("import data_utils.io; print(data_utils.io.__file__)"), cwd=tmp_path,
                          env=mark.marker_env({"PYTHONPATH": str(tmp_path)}), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(REPO / "data_utils" / "io.py")
    assert "PYTEST_ADDOPTS" not in mark.marker_env() and "PYTHONPATH" not in mark.marker_env()


def test_protected_file_replaced_by_a_link_fails_integrity(tmp_path):
    """A link is never followed for the checksum (it could point at a pipe and hang the marker)."""
    fork = make_fork(tmp_path)
    scheme = fork / "coursework/marking/scheme.yaml"
    scheme.unlink()
    scheme.symlink_to(mark.SCHEME)
    assert mark.verify_checksums(mark.CHECKSUMS, fork) == ["coursework/marking/scheme.yaml: not a regular file"]
