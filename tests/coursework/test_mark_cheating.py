"""Cheating forks: every known attack on the marking, marked in lecturer mode, must not raise the mark.

Each test builds a "fork" (a copy of the kit's packages in a temporary folder) with one attack in
it and marks it from this checkout with ``--submission``, as a lecturer would. Most attacks live
in a ten-line fake ``coursework/predict.py`` (no TensorFlow), so a marking run costs seconds; the
attacker is assumed to know every path (they are baked into the fake scripts).

The sandbox needs root (a sandbox user to switch to), as in CI containers; elsewhere the module
is skipped. The whole module is marked slow.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
import yaml

from coursework.mark import band_score

from .conftest import REPO, run_module
from .test_mark import BASELINE, item, make_fork, mark_line

# Every test here runs the marker end to end (a few seconds each, more where metrics are computed),
# so the whole module is in the slow lane.
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                                 reason="lecturer-mode marking needs root to switch to a sandbox user")]

SECRET_NAME = "SECRET-ANSWER-7d1f.txt"

# A fake predict contract: helpers every cheating predict script starts with.
PREDICT_HEAD = '''
import os, sys
from pathlib import Path
import nibabel as nib
import numpy as np

IN, OUT = Path(sys.argv[1]), Path(sys.argv[2])
OUT.mkdir(parents=True, exist_ok=True)
INPUTS = sorted(p for p in IN.iterdir() if p.name.endswith(".nii.gz"))

def pred_path(p):
    return OUT / p.name.replace("_img.nii.gz", "_pred.nii.gz")

def write(p, data):
    image = nib.load(str(p))
    nib.save(nib.Nifti1Image(np.asarray(data, np.uint8), image.affine), str(pred_path(p)))

def background():
    for p in INPUTS:
        write(p, np.zeros(nib.load(str(p)).shape))
'''


# ----------------------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="session")
def instructor(tmp_path_factory) -> Path:
    """``--init-instructor-dir`` output plus a hidden test that wants a secret file, and short step limits."""
    path = tmp_path_factory.mktemp("instructor") / "instructor"
    proc = run_module("coursework.mark", "--init-instructor-dir", str(path), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in path.iterdir()) == ["checksums", "data", "scheme.yaml", "tests"]
    assert len(list((path / "data").glob("*_mask.nii.gz"))) == 4
    (path / "tests" / "test_secret.py").write_text(
        "def test_secret_file(submission_dir):\n"
        f"    assert (submission_dir / 'coursework' / {SECRET_NAME!r}).is_file()\n")
    scheme = yaml.safe_load((path / "scheme.yaml").read_text())
    scheme["items"].append({"id": "hidden_file", "name": "a hidden check", "test": "test_secret.py::test_secret_file",
                            "points": 10, "visibility": "hidden", "steps": ["predict"]})
    scheme["total"] = 20
    # Limits with room for the honest fork's real re-training on a busy machine (the fakes take seconds).
    scheme["steps"] = {"predict": {"time_limit_s": 300}, "train": {"time_limit_s": 600}, "retrain": {"time_limit_s": 600},
                       "predict_repro": {"time_limit_s": 300},
                       # One module on one process: two xdist workers would import TensorFlow twice more.
                       "public_tests": {"args": ["tests/training/test_config.py", "-n", "0"], "time_limit_s": 300}}
    (path / "scheme.yaml").write_text(yaml.safe_dump(scheme, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def given_run(tmp_path_factory) -> Path:
    """A stand-in run folder for ``--run-dir`` where the fake predict scripts ignore the model."""
    run = tmp_path_factory.mktemp("run") / "given"
    run.mkdir()
    (run / "config.yaml").write_text("seed: 1\n")
    (run / "model.keras").write_bytes(b"not a model")
    return run


def fake_predict(fork: Path, body: str) -> None:
    (fork / "coursework" / "predict.py").write_text(PREDICT_HEAD + body)


def mark_fork(fork: Path, instructor: Path, items: str, *, run_dir: Path | None = None, env: dict | None = None,
              timeout: float = 300):
    """Lecturer-mode marking of ``fork`` from this checkout; returns (process, results.json, out folder)."""
    out = fork.parent / "marks"
    args = ["--submission", str(fork), "--instructor-dir", str(instructor), "--out", str(out), "--items", items]
    if run_dir is not None:
        args += ["--run-dir", str(run_dir)]
    proc = run_module("coursework.mark", *args, cwd=REPO, timeout=timeout, env=env)
    results = out / "results.json"
    return proc, (json.loads(results.read_text()) if results.is_file() else None), out


def step_log(out: Path, step: str) -> str:
    return (out / "work" / "steps" / f"{step}.log").read_text(errors="replace")


# ----------------------------------------------------------------------------- the attacks
def test_predict_cannot_copy_the_heldout_masks(tmp_path, instructor, given_run):
    """Attack: predict copies the held-out masks (through MARKING_HELDOUT_DIR or the known path) as its output."""
    fork = make_fork(tmp_path)
    fake_predict(fork, f'''
stolen = 0
for p in INPUTS:
    for folder in (os.environ.get("MARKING_HELDOUT_DIR", ""), {str(instructor / "data")!r}):
        try:
            data = open(os.path.join(folder, p.name.replace("_img", "_mask")), "rb").read()
        except OSError as err:
            print("cannot read", folder, type(err).__name__)
            continue
        pred_path(p).write_bytes(data)
        stolen += 1
        break
    else:
        write(p, np.zeros(nib.load(str(p)).shape))
print("stolen", stolen)
''')
    proc, report, out = mark_fork(fork, instructor, "predict_contract,dice", run_dir=given_run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "stolen 0" in step_log(out, "predict")
    assert item(report, "predict_contract")["status"] == "passed"  # all-background maps keep the contract ...
    assert item(report, "dice")["score"] == 0  # ... and score nothing


def test_student_code_cannot_read_the_instructor_dir_or_plant_the_hidden_tests_file(tmp_path, instructor, given_run):
    """Attack: predict reads the hidden tests and creates the file a hidden test wants, in the fork."""
    fork = make_fork(tmp_path)
    fake_predict(fork, f'''
background()
found = []
for folder in ({str(instructor)!r}, {str(instructor / "tests")!r}):
    try:
        found += [open(os.path.join(folder, n)).read() for n in os.listdir(folder) if n.endswith((".py", ".yaml"))]
    except OSError as err:
        print("cannot read", folder, type(err).__name__)
print("read", len(found), "instructor files")
for target in ({str(fork / "coursework")!r}, "coursework"):
    try:
        Path(target, {SECRET_NAME!r}).write_text("planted")
        print("planted in", target)
    except OSError as err:
        print("cannot plant in", target, type(err).__name__)
''')
    proc, report, out = mark_fork(fork, instructor, "predict_contract,hidden_file", run_dir=given_run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = step_log(out, "predict")
    assert "read 0 instructor files" in log and f"planted in {fork / 'coursework'}" not in log
    assert not (fork / "coursework" / SECRET_NAME).exists()
    assert item(report, "hidden_file")["score"] == 0
    assert item(report, "predict_contract")["score"] == 15


def test_fork_package_init_cannot_replace_the_metric_code(tmp_path, instructor, given_run):
    """Attack: coursework/__init__.py patches training.metrics so that all-background maps score Dice 1."""
    fork = make_fork(tmp_path)
    (fork / "coursework" / "__init__.py").write_text(
        "import training.metrics as _m\n"
        "def _perfect(pred, truth, spacing=None, labels=None):\n"
        "    names = list(labels or {'x': 1})\n"
        "    return {'dice': {n: 1.0 for n in names}, 'hd95_mm': {n: 0.0 for n in names}, 'mean_dice': 1.0,\n"
        "            'mean_hd95_mm': 0.0, 'mean_iou': 1.0, 'mean_asd_mm': 0.0, 'iou': {}, 'asd_mm': {}, 'empty': {}}\n"
        "_m.evaluate_segmentation = _perfect\n")
    for name in ("sitecustomize.py", "conftest.py"):  # files Python and pytest load by themselves
        shutil.copy2(fork / "coursework" / "__init__.py", fork / name)
    (fork / "pytest.ini").write_text("[pytest]\naddopts = -p no:junitxml\n")
    fake_predict(fork, "background()\n")
    proc, report, _ = mark_fork(fork, instructor, "dice,hd95", run_dir=given_run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert item(report, "dice")["score"] == 0 and item(report, "hd95")["score"] == 0
    assert item(report, "dice")["output"].startswith("measured 0")


def test_detached_process_cannot_rewrite_the_marks(tmp_path, instructor, given_run):
    """Attack: predict starts a detached process (new session, double fork) that rewrites the marks later."""
    fork = make_fork(tmp_path)
    pid_file = tmp_path / "daemon.pid"
    marks = tmp_path / "marks"
    fake_predict(fork, f'''
background()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        for target in ({str(pid_file)!r}, "daemon.pid"):
            try:
                Path(target).write_text(str(os.getpid()))
            except OSError:
                pass
        import time
        time.sleep(4)
        for name in ("results.json", "marks.md"):
            try:
                Path({str(marks)!r}, name).write_text('{{"score": 100, "max_score": 100, "tests": []}}')
            except OSError:
                pass
    os._exit(0)
''')
    proc, report, out = mark_fork(fork, instructor, "predict_contract", run_dir=given_run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = {n: (out / n).read_bytes() for n in ("results.json", "marks.md", "report.xml")}
    time.sleep(6)
    assert {n: (out / n).read_bytes() for n in written} == written
    assert report["score"] == 15 and not pid_file.exists()


def test_edited_scheme_with_rerecorded_checksums_fails_lecturer_integrity(tmp_path, instructor):
    """Attack: the fork edits a band and re-records its own checksums (passes the fork's self-check only)."""
    fork = make_fork(tmp_path)
    scheme = fork / "coursework/marking/scheme.yaml"
    scheme.write_text(scheme.read_text().replace("band: {zero: 0.60, full: 0.85}", "band: {zero: 0.0, full: 0.1}"))
    assert run_module("coursework.mark", "--write-checksums", cwd=fork, env={"PYTHONPATH": str(fork)}).returncode == 0
    proc, report, out = mark_fork(fork, instructor, "integrity,dice")
    assert proc.returncode == 1
    assert "coursework/marking/scheme.yaml: modified" in item(report, "integrity")["output"]
    assert report["score"] == 0 and mark_line(proc.stdout) == 0.0
    assert not (out / "work" / "steps.json").exists()  # no student code ran


def test_fake_training_earns_neither_training_nor_reproducibility(tmp_path, instructor):
    """Attack: train.py writes every expected file (its model a committed file) without learning anything."""
    fork = make_fork(tmp_path)
    (fork / "weights").mkdir()
    (fork / "weights" / "model.keras").write_bytes(b"committed model bytes" * 100)
    (fork / "coursework" / "train.py").write_text('''
import sys, shutil
from pathlib import Path
args = sys.argv[1:]
run = Path(args[args.index("--results-dir") + 1]) / args[args.index("--run-name") + 1]
(run / "predictions").mkdir(parents=True)
(run / "config.yaml").write_text("seed: 1\\n")
(run / "history.csv").write_text("epoch,loss,val_loss\\n0,0.5,0.5\\n")
(run / "metrics.json").write_text('{"mean_dice": 0.99}')
(run / "loss_curves.png").write_bytes(b"png")
(run / "predictions" / "case_pred.nii.gz").write_bytes(b"x")
shutil.copyfile("weights/model.keras", run / "model.keras")
''')
    fake_predict(fork, "background()\n")
    proc, report, _ = mark_fork(fork, instructor, "training,reproducibility,predict_contract")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert item(report, "training")["score"] == 0
    assert "copy of a file in the submission" in item(report, "training")["output"]
    assert item(report, "reproducibility")["score"] == 0
    assert "below 0.4" in item(report, "reproducibility")["output"] or "only" in item(report, "reproducibility")["output"]
    assert item(report, "predict_contract")["score"] == 15


def test_deleting_tests_does_not_pass_a_broken_library(tmp_path, instructor):
    """Attack: the fork breaks the library and deletes tests/ so that nothing fails."""
    fork = make_fork(tmp_path)
    config = fork / "training" / "config.py"
    config.write_text(config.read_text() + "\n\ndef from_dict(*args, **kwargs):\n    raise RuntimeError('broken')\n")
    assert not (fork / "tests").exists()
    proc, report, out = mark_fork(fork, instructor, "public_tests")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert item(report, "public_tests")["score"] == 0
    assert "exited with status 1" in item(report, "public_tests")["output"]
    assert "RuntimeError: broken" in step_log(out, "public_tests")


def test_filler_report_earns_nothing(tmp_path, instructor):
    """Attack: every report section filled with filler text passes the completeness check and earns 0 points."""
    fork = make_fork(tmp_path)
    report_file = fork / "coursework" / "report" / "report.md"
    sections = ("Abstract", "Introduction", "Methods", "Experiments", "Results", "Discussion", "Contribution statement")
    report_file.write_text("\n".join(f"# {s}\n\n" + "lorem ipsum dolor " * 20 for s in sections))
    proc, report, out = mark_fork(fork, instructor, "integrity,report")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert item(report, "report")["status"] == "passed" and item(report, "report")["max_score"] == 0
    assert report["score"] == 5 and report["max_score"] == 5
    assert "completeness only" in (out / "marks.md").read_text()


def test_marker_environment_and_secrets_do_not_reach_student_code(tmp_path, instructor, given_run):
    """Attack: predict prints its environment; CI variables, secrets and MARKING_* must not be in it."""
    fork = make_fork(tmp_path)
    fake_predict(fork, "background()\nfor k, v in sorted(os.environ.items()):\n    print('ENV', k, '=', v)\n"
                       "print('HOME-FILES', os.listdir(os.environ['HOME']))\n")
    secrets = {"CI_JOB_TOKEN": "tok-123456", "MARKING_INSTRUCTOR_DIR": str(instructor), "AWS_SECRET_ACCESS_KEY": "aws-987",
               "GITLAB_TOKEN": "glpat-xyz",
               # A marker entry of its own: the repository path itself is legitimately part of PATH in CI.
               "PYTHONPATH": f"{REPO}{os.pathsep}/pythonpath-marker-5721"}
    proc, report, out = mark_fork(fork, instructor, "predict_contract", run_dir=given_run, env=secrets)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = step_log(out, "predict")
    assert "ENV HOME" in log and "HOME-FILES []" in log
    for name, value in secrets.items():
        leaked = value.split(os.pathsep)[-1]  # for PYTHONPATH: its marker entry
        assert f"ENV {name} " not in log and leaked not in log
    assert "ENV MARKING_" not in log and "ENV CI" not in log


# ----------------------------------------------------------------------------- bad submissions
def test_broken_predict_and_non_nifti_outputs_score_zero_with_reasons(tmp_path, instructor, given_run):
    """Bad input: predictions that are a link to a mask, a text file named .nii.gz, a wrong shape; report still marked."""
    fork = make_fork(tmp_path)
    fake_predict(fork, f'''
for i, p in enumerate(INPUTS):
    if i == 0:
        os.symlink({str(instructor / "data" / "case000_mask.nii.gz")!r}, pred_path(p))
    elif i == 1:
        pred_path(p).write_text("not a nifti file")
    else:
        write(p, np.zeros((4, 4, 4)))
''')
    proc, report, out = mark_fork(fork, instructor, "predict_contract,dice,report", run_dir=given_run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    contract = item(report, "predict_contract")
    assert contract["score"] == 0
    assert "symbolic link" in contract["output"] and "not a readable NIfTI file" in contract["output"]
    assert "shape (4, 4, 4)" in contract["output"]
    assert item(report, "dice")["score"] == 0 and "cannot be scored" in item(report, "dice")["output"]
    assert item(report, "report")["status"] == "failed"  # marked although predict was broken
    assert "symbolic link" in (out / "marks.md").read_text()


def test_missing_crashing_and_hanging_steps(tmp_path, instructor, given_run):
    """Bad input: no predict contract at all, and a training step that hangs with a detached child."""
    fork = make_fork(tmp_path)
    (fork / "coursework" / "predict.py").unlink()
    (fork / "coursework" / "train.py").write_text(
        "import os, subprocess, time\n"
        "subprocess.Popen(['sleep', '600'], start_new_session=True)\n"
        "time.sleep(600)\n")
    instr = tmp_path / "instructor"
    shutil.copytree(instructor, instr)
    scheme = yaml.safe_load((instr / "scheme.yaml").read_text())
    scheme["steps"]["train"] = {"time_limit_s": 8}
    (instr / "scheme.yaml").write_text(yaml.safe_dump(scheme, sort_keys=False))
    started = time.monotonic()
    proc, report, out = mark_fork(fork, instr, "training,predict_contract,integrity")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert time.monotonic() - started < 120
    training = item(report, "training")
    assert training["score"] == 0 and "time limit" in training["output"]
    assert "student step 'train' failed: it was stopped at its time limit" in item(report, "predict_contract")["output"]
    assert item(report, "integrity")["score"] == 5
    assert not any(json.loads((out / "work" / "steps.json").read_text())[s].get("ok") for s in ("train", "predict"))


def test_predict_without_the_contract_scores_zero_and_is_reported(tmp_path, instructor, given_run):
    """Bad input: a submission whose coursework/predict.py is missing: predict_contract 0 with the reason."""
    fork = make_fork(tmp_path)
    (fork / "coursework" / "predict.py").unlink()
    proc, report, out = mark_fork(fork, instructor, "predict_contract", run_dir=given_run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    contract = item(report, "predict_contract")
    assert contract["score"] == 0 and "exited with status 1" in contract["output"]
    assert "No module named coursework.predict" in (out / "marks.md").read_text()


# ----------------------------------------------------------------------------- the honest fork
def test_honest_fork_is_marked_as_documented(tmp_path, quick_run, instructor):
    """The untouched template, trained once (the shared quick run), marked in lecturer mode.

    Measured items: the marker re-trains it from the saved config in the sandbox (reproducibility)
    and scores the predictions of both runs itself.
    """
    fork = make_fork(tmp_path)
    items = "integrity,training,predict_contract,dice,hd95,reproducibility,report"
    out = tmp_path / "marks"
    proc = run_module("coursework.mark", "--submission", str(fork), "--instructor-dir", str(instructor), "--out", str(out),
                      "--items", items, "--run-dir", str(quick_run["run_dir"]), "--training-data", str(REPO / "data"),
                      cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "results.json").read_text())
    for passed in ("integrity", "training", "predict_contract", "reproducibility"):
        assert item(report, passed)["status"] == "passed", item(report, passed)["output"]
    print(proc.stdout[-900:])  # the measured figure, for coursework/marking/BASELINE.yaml
    fixed = sum(float(item(report, i)["score"]) for i in ("integrity", "training", "predict_contract", "reproducibility"))
    assert fixed == BASELINE["quick_profile_fixed_points"]
    # The banded items score what the marker measured, by the scheme's bands. The quick model's
    # held-out Dice sits near the bottom of its band, so their points differ between CPUs.
    scheme = {entry["id"]: entry for entry in yaml.safe_load((REPO / "coursework/marking/scheme.yaml").read_text())["items"]}
    banded = 0.0
    for item_id in ("dice", "hd95"):
        entry, scored = scheme[item_id], item(report, item_id)
        measured = float(re.search(r"measured ([0-9.]+)", scored["output"]).group(1))
        expected = band_score(measured, entry["band"], entry["points"])
        assert float(scored["score"]) == pytest.approx(expected, abs=0.01), scored["output"]
        banded += float(scored["score"])
    assert float(re.search(r"measured ([0-9.]+)", item(report, "dice")["output"]).group(1)) >= 0.4  # it learned
    assert mark_line(proc.stdout) == pytest.approx(100 * (fixed + banded) / float(report["max_score"]), abs=0.06)
    marks = (out / "marks.md").read_text()
    assert "its provenance is trusted" in marks and "isolation '" in marks
    assert "Self-check" not in marks


# ----------------------------------------------------------------------------- isolation policy
def test_lecturer_mode_refuses_to_run_student_code_unisolated(tmp_path, instructor, given_run):
    """Without a sandbox user, lecturer marking refuses (exit 2, no marks) unless --unsafe-same-user says otherwise."""
    fork = make_fork(tmp_path)
    fake_predict(fork, "background()\n")
    out = tmp_path / "marks"
    args = ["--submission", str(fork), "--instructor-dir", str(instructor), "--out", str(out),
            "--items", "predict_contract", "--run-dir", str(given_run), "--isolation", "none"]
    proc = run_module("coursework.mark", *args, cwd=REPO, timeout=300)
    assert proc.returncode == 2 and "refusing to run student code" in proc.stderr
    assert "--unsafe-same-user" in proc.stderr and not (out / "results.json").exists()
    proc = run_module("coursework.mark", *args, "--unsafe-same-user", cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    marks = (out / "marks.md").read_text()
    assert "UNSAFE" in marks and "isolation 'none'" in marks
    assert json.loads((out / "results.json").read_text())["score"] == 15
