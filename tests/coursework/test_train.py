"""Tests for coursework.train: the main job's outputs, its user errors, and that it learns."""

import csv
import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import keras
import nibabel as nib
import numpy as np
import pytest

from coursework import train
from coursework.config import CourseworkConfig
from data_utils import io
from training.config import load_config

from .conftest import REPO, made_once, run_main_noting_tensorflow, run_module

PNG = b"\x89PNG\r\n\x1a\n"


def _write_pairs(folder: Path, n: int = 3, shape=(4, 16, 16), foreground: bool = True) -> list[Path]:
    """``n`` tiny valid image/mask pairs; returns the image paths."""
    folder.mkdir(parents=True, exist_ok=True)
    affine = io.dhw_affine(shape, (3.0, 1.5, 1.5))
    rng = np.random.default_rng(0)
    images = []
    for i in range(n):
        label = np.zeros(shape, np.int32)
        if foreground:
            label[1:3, 4:8, 4:8] = 1 + i % 3
        images.append(io.save_nifti(rng.normal(size=shape).astype(np.float32), affine, folder / f"c{i}_img.nii.gz"))
        io.save_nifti(label, affine, folder / f"c{i}_mask.nii.gz")
    return images


def _run_in_process(tmp_path, *args, capsys):
    """``coursework.train.main`` with results under ``tmp_path``; returns (status, stderr lines)."""
    status = train.main(["--results-dir", str(tmp_path / "results"), "--run-name", "r", *args])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return status, err


def _assert_no_results(tmp_path):
    results = tmp_path / "results"
    assert not results.exists() or list(results.iterdir()) == [], f"left behind: {list(results.iterdir())}"


EXPECTED_PAIRS = "expected a folder of <case>_img.nii.gz / <case>_mask.nii.gz pairs"
# A network and a run small enough to train in seconds: enough to exercise every path of the job.
TINY = ["--depth", "1", "--base-filters", "4", "--epochs", "3", "--steps-per-epoch", "2", "--batch-size", "4",
        "--overlays", "0"]


def test_wrong_data_path_is_one_line_error(tmp_path, capsys):
    missing = tmp_path / "no-such-folder"
    status, err = _run_in_process(tmp_path, "--data", str(missing), capsys=capsys)
    assert status == 2
    assert err == [f"error: {missing}: data folder not found ({EXPECTED_PAIRS})"]
    _assert_no_results(tmp_path)


def test_data_path_that_is_a_file_says_so(tmp_path, capsys):
    (tmp_path / "pairs.zip").write_bytes(b"PK")
    status, err = _run_in_process(tmp_path, "--data", str(tmp_path / "pairs.zip"), capsys=capsys)
    assert status == 2
    assert err == [f"error: {tmp_path / 'pairs.zip'}: is a file, not a folder ({EXPECTED_PAIRS})"]
    _assert_no_results(tmp_path)


def test_a_finished_run_is_never_replaced_silently(tmp_path, capsys):
    finished = tmp_path / "results" / "r"
    finished.mkdir(parents=True)
    (finished / "metrics.json").write_text('{"mean_dice": 0.5}')
    status, err = _run_in_process(tmp_path, "--data", str(tmp_path), capsys=capsys)
    assert status == 2 and len(err) == 1
    assert err[0].startswith(f"error: {finished}: a finished run of this name exists")
    assert "--overwrite" in err[0] and "another --run-name" in err[0]
    assert (finished / "metrics.json").read_text() == '{"mean_dice": 0.5}'
    status, err = _run_in_process(tmp_path, "--resume", capsys=capsys)
    assert status == 2 and "this run is finished, there is nothing to resume" in err[0]


def test_an_interrupted_run_is_resumed_or_removed_never_ignored(tmp_path, capsys):
    kept = tmp_path / "results" / ".r.incomplete"
    kept.mkdir(parents=True)
    status, err = _run_in_process(tmp_path, capsys=capsys)
    assert status == 2 and len(err) == 1
    assert err[0].startswith(f"error: {kept}: an interrupted run named 'r' is kept here")
    for way in ("--resume", "--overwrite", "another --run-name"):
        assert way in err[0]
    # --overwrite removes it (and the randomly named leftovers of earlier versions) and starts afresh.
    legacy = tmp_path / "results" / ".r.incomplete-x1y2"
    legacy.mkdir()
    (kept / "stale.txt").write_text("old")
    cfg = train.CourseworkConfig(results_dir=str(tmp_path / "results"), run_name="r")
    assert train.prepare_run_dir(cfg, overwrite=True) == kept
    assert list(kept.iterdir()) == [] and not legacy.exists()


def test_resume_needs_an_interrupted_run_with_the_same_settings(tmp_path, capsys):
    status, err = _run_in_process(tmp_path, "--resume", capsys=capsys)
    assert status == 2 and err == [f"error: {tmp_path / 'results' / '.r.incomplete'}: no interrupted run named 'r' "
                                   "to resume; run without --resume"]
    from coursework.config import parse
    from training.config import save_config

    argv = ["--results-dir", str(tmp_path / "results"), "--run-name", "r", "--epochs", "2"]
    save_config(parse(argv), tmp_path / "results" / ".r.incomplete" / "config.yaml")
    status, err = _run_in_process(tmp_path, "--resume", "--epochs", "3", capsys=capsys)
    assert status == 2 and len(err) == 1
    assert "the interrupted run used other settings (epochs 2 -> 3)" in err[0] and "--overwrite" in err[0]
    with pytest.raises(SystemExit):
        train.main(["--resume", "--overwrite"])
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [7, -1])
def test_labels_outside_the_classes_stop_with_the_file_and_values(tmp_path, capsys, bad):
    _write_pairs(tmp_path / "data")
    mask = tmp_path / "data" / "c1_mask.nii.gz"
    label = np.asarray(nib.load(str(mask)).dataobj).astype(np.int32)
    label[0, 0, 0] = bad
    io.save_nifti(label, nib.load(str(mask)).affine, mask)
    status, err = _run_in_process(tmp_path, "--data", str(tmp_path / "data"), capsys=capsys)
    assert status == 2 and len(err) == 1
    assert err[0].startswith(f"error: {mask}: label values [{bad}] are outside 0..3")
    _assert_no_results(tmp_path)


def test_a_training_set_without_foreground_stops(tmp_path, capsys):
    _write_pairs(tmp_path / "data", n=4, foreground=False)
    status, err = _run_in_process(tmp_path, "--data", str(tmp_path / "data"), capsys=capsys)
    assert status == 2 and len(err) == 1
    assert "have no foreground labels (every mask voxel is 0)" in err[0]
    _assert_no_results(tmp_path)


@pytest.mark.slow
def test_a_diverging_run_stops_with_the_step_and_keeps_nothing(tmp_path, capsys):
    _write_pairs(tmp_path / "data", n=5)
    status, err = _run_in_process(tmp_path, "--data", str(tmp_path / "data"), *TINY, "--learning-rate", "1e30",
                                  capsys=capsys)
    assert status == 2
    line = [e for e in err if e.startswith("error: ")]
    assert len(line) == 1 and line[0].startswith("error: training diverged: Non-finite loss")
    assert "at epoch 1, batch" in line[0] and "kept" not in line[0]
    _assert_no_results(tmp_path)


def test_missing_label_names_the_file(tmp_path, capsys):
    images = _write_pairs(tmp_path / "data")
    (tmp_path / "data" / "c1_mask.nii.gz").unlink()
    status, err = _run_in_process(tmp_path, "--data", str(tmp_path / "data"), capsys=capsys)
    assert status == 2 and len(err) == 1
    assert err[0].startswith("error: ") and "c1_mask.nii.gz" in err[0] and images[1].name in err[0]
    _assert_no_results(tmp_path)


def test_corrupt_nifti_names_the_file(tmp_path, capsys):
    images = _write_pairs(tmp_path / "data")
    raw = images[2].read_bytes()
    images[2].write_bytes(raw[: len(raw) // 2])  # truncated download
    status, err = _run_in_process(tmp_path, "--data", str(tmp_path / "data"), capsys=capsys)
    assert status == 2 and len(err) == 1
    assert err[0].startswith("error: ") and "c2_img.nii.gz" in err[0]
    _assert_no_results(tmp_path)


def test_too_few_cases_is_a_user_error(tmp_path, capsys):
    _write_pairs(tmp_path / "data", n=2)
    status, err = _run_in_process(tmp_path, "--data", str(tmp_path / "data"), capsys=capsys)
    assert status == 2 and "need at least 3" in err[0]
    _assert_no_results(tmp_path)


def test_cli_errors_come_before_tensorflow_without_traceback(tmp_path):
    """``python -m coursework.train`` checks the data folder and the run's name before TensorFlow loads
    (about 8 s): a mistyped path is answered at once, in one line, with status 2."""
    results = ["--results-dir", str(tmp_path / "results")]
    proc, tensorflow = run_main_noting_tensorflow("coursework.train", "--data", str(tmp_path / "nope"), *results)
    assert proc.returncode == 2 and not tensorflow
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope'}: data folder not found ({EXPECTED_PAIRS})"]
    _assert_no_results(tmp_path)
    (tmp_path / "results" / "r").mkdir(parents=True)
    proc, tensorflow = run_main_noting_tensorflow("coursework.train", *results, "--run-name", "r")
    assert proc.returncode == 2 and not tensorflow
    assert proc.stderr.strip().splitlines()[0].startswith(f"error: {tmp_path / 'results' / 'r'}: a finished run")


@pytest.mark.slow
def test_quick_run_writes_every_output(quick_run):
    run_dir = quick_run["run_dir"]
    # Finished runs only: no temporary folders left next to it.
    assert [p.name for p in run_dir.parent.iterdir()] == ["quick"]
    assert quick_run["seconds"] < 300, "the quick run must stay a smoke test (under a minute on 2 idle cores)"
    # TensorFlow loaded mid-run (after the data checks), its C++ import-time notices hidden all the
    # same. (Later log lines, such as a failed CUDA probe at the first op, follow TF_CPP_MIN_LOG_LEVEL,
    # which the test session sets to 2.)
    for notice in ("absl::InitializeLog", "oneDNN custom operations"):
        assert notice not in quick_run["stderr"], quick_run["stderr"]

    cfg = load_config(CourseworkConfig, run_dir / "config.yaml")
    assert cfg.run_name == "quick" and cfg.epochs == 4
    versions = __import__("yaml").safe_load((run_dir / "config.yaml").read_text())["versions"]
    assert versions["keras"] == keras.__version__

    split = json.loads((run_dir / "split.json").read_text())
    ids = {name: {c["case_id"] for c in split[name]} for name in ("train", "val", "test")}
    assert ids["test"] and ids["val"] and ids["train"]
    assert not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"]) and not (ids["train"] & ids["val"])

    with open(run_dir / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == cfg.epochs
    dice = {"dice", "dice_bladder", "dice_prostate", "dice_rectum"}
    assert {"loss", "val_loss"} | dice | {f"val_{k}" for k in dice} <= set(rows[0])
    assert not any("accuracy" in k for k in rows[0])  # pixel accuracy misleads for segmentation
    assert all(0.0 <= float(rows[-1][k]) <= 1.0 for k in dice)
    # The progress line shows mean foreground Dice, not pixel accuracy.
    progress = [line for line in quick_run["stdout"].splitlines() if " - loss: " in line]
    assert len(progress) == cfg.epochs and all(" - dice: " in line and "accuracy" not in line for line in progress)
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["num_cases"] == len(ids["test"]) and set(metrics["per_case"]) == ids["test"]
    assert set(metrics["dice"]) == {"bladder", "prostate", "rectum"}
    assert 0.0 <= metrics["mean_dice"] <= 1.0 and np.isfinite(metrics["mean_hd95_mm"])

    model = keras.models.load_model(run_dir / "model.keras", compile=False)
    assert model.output_shape[-1] == 4
    assert (run_dir / "loss_curves.png").read_bytes()[:8] == PNG
    overlays = sorted((run_dir / "overlays").glob("overlay_*.png"))
    assert len(overlays) == min(cfg.overlays, len(ids["test"]))
    assert all(p.read_bytes()[:8] == PNG for p in overlays)

    for case in split["test"]:
        pred = nib.load(str(run_dir / "predictions" / f"{case['case_id']}_pred.nii.gz"))
        image = nib.load(case["image"])
        assert pred.shape == image.shape
        np.testing.assert_allclose(pred.affine, image.affine, atol=1e-5)
        assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1, 2, 3}


@pytest.mark.slow
def test_quick_model_beats_the_threshold_baseline(quick_run):
    """Learning is needed and happens: the quick U-Net beats the best per-voxel intensity threshold."""
    from data_utils.datasets import Case, load_cases
    from data_utils.synthetic.pelvic import threshold_baseline

    run_dir = quick_run["run_dir"]
    split = json.loads((run_dir / "split.json").read_text())

    def cases(name):
        return load_cases([Case(c["case_id"], Path(c["image"]), Path(c["label"])) for c in split[name]], normalize=None)

    baseline = threshold_baseline(cases("train"), cases("test"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["mean_dice"] > baseline["mean_dice"] + 0.1, (metrics["mean_dice"], baseline["mean_dice"])


@pytest.mark.slow
def test_3d_patch_mode_trains_and_predicts_whole_volumes(quick_run, tmp_path):
    """``--mode 3d``: a 3D U-Net on patches, evaluated on whole volumes by sliding windows."""
    # quick_run: the quick data set exists, so no two processes generate it at the same time.
    # A small 3D U-Net (depth 2, 8 channels): the mode's plumbing is under test, not its Dice; the
    # default depth 4 cost 8 s more of CPU, mostly in the sliding-window passes over whole volumes.
    proc = run_module("coursework.train", "--quick", "--mode", "3d", "--patch-size", "16", "32", "32",
                      "--depth", "2", "--base-filters", "8",
                      "--batch-size", "1", "--epochs", "1", "--steps-per-epoch", "2", "--overlays", "0",
                      "--results-dir", str(tmp_path / "results"), "--run-name", "unet3d")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "results" / "unet3d"
    model = keras.models.load_model(run_dir / "model.keras", compile=False)
    assert len(model.input_shape) == 5  # (B, D, H, W, C)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["num_cases"] >= 1 and np.isfinite(metrics["mean_dice"])
    split = json.loads((run_dir / "split.json").read_text())
    for case in split["test"]:
        pred = nib.load(str(run_dir / "predictions" / f"{case['case_id']}_pred.nii.gz"))
        assert pred.shape == nib.load(case["image"]).shape


# ----------------------------------------------------------------------------- interrupted runs
# Runs coursework.train with a callback that signals the process itself at a given epoch and batch
# (after that epoch's predecessor was checkpointed): a real SIGTERM or SIGKILL, at a known point.
_SIGNALLING_TRAIN = """
import os, signal, sys
import keras
from coursework import train

name, epoch, batch = os.environ["SIGNAL_AT"].split(":")


class SignalAt(keras.callbacks.Callback):
    def on_epoch_begin(self, e, logs=None):
        self.epoch = e

    def on_train_batch_end(self, b, logs=None):
        if self.epoch == int(epoch) and b == int(batch):
            os.kill(os.getpid(), getattr(signal, name))


build = train.build_callbacks
train.build_callbacks = lambda cfg, run_dir: build(cfg, run_dir) + [SignalAt()]
sys.exit(train.main(sys.argv[1:]))
"""


def _train_process(args, signal_at=None, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if signal_at:
        env["SIGNAL_AT"] = signal_at
    cmd = [sys.executable, "-c", _SIGNALLING_TRAIN] if signal_at else [sys.executable, "-m", "coursework.train"]
    return subprocess.run(cmd + list(args), cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
                          umask=0o022)


def _make_interrupted_runs(root: Path) -> dict:
    """Train the tiny run "a" straight through and "b" with a SIGTERM and a SIGKILL; see below."""
    _write_pairs(root / "data", n=5)
    args = ["--data", str(root / "data"), "--results-dir", str(root / "results"), *TINY, "--epochs", "4"]
    # "a" and the first part of "b" do not depend on each other: started together, they share the
    # cores while each imports TensorFlow (single-threaded, most of such a tiny run).
    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(_train_process, [*args, "--run-name", "a"])
        b = pool.submit(_train_process, [*args, "--run-name", "b"], signal_at="SIGTERM:1:1")
        procs = {"a": a.result(), "b-sigterm": b.result()}
    after_sigterm = sorted(p.name for p in (root / "results").iterdir())
    procs["b-sigkill"] = _train_process([*args, "--run-name", "b", "--resume"], signal_at="SIGKILL:2:0")
    procs["b-resumed"] = _train_process([*args, "--run-name", "b", "--resume"])
    return {"results": str(root / "results"), "b-after-sigterm": after_sigterm,
            "procs": {k: {"args": p.args, "returncode": p.returncode, "stdout": p.stdout, "stderr": p.stderr}
                      for k, p in procs.items()}}


@pytest.fixture(scope="module")
def interrupted_runs(tmp_path_factory):
    """The same tiny run three ways: uninterrupted ("a"), and "b": SIGTERM in epoch 2, resumed,
    SIGKILL in epoch 3, resumed again. Returns the folders and the processes.

    Made once per session: under pytest-xdist the tests using it can land on both workers, and the
    second reads what the first recorded (folder shared by the workers, under a lock).
    """
    saved = made_once(tmp_path_factory, "interrupted-runs", _make_interrupted_runs)
    procs = {k: subprocess.CompletedProcess(p["args"], p["returncode"], p["stdout"], p["stderr"])
             for k, p in saved["procs"].items()}
    return {"results": Path(saved["results"]), "b-after-sigterm": set(saved["b-after-sigterm"]), **procs}


def test_sigterm_is_handled_like_ctrl_c_and_keeps_the_run(interrupted_runs):
    proc = interrupted_runs["b-sigterm"]
    assert proc.returncode == 130, proc.stderr[-2000:]
    kept = interrupted_runs["results"] / ".b.incomplete"
    assert proc.stderr.strip().splitlines()[-1] == (
        f"interrupted: after 1 completed epoch(s); the run is kept in {kept}; continue it with the same "
        "command and --resume")
    assert "b" not in interrupted_runs["b-after-sigterm"] and ".b.incomplete" in interrupted_runs["b-after-sigterm"]


@pytest.mark.slow
def test_resume_after_sigkill_ends_with_the_uninterrupted_weights(interrupted_runs):
    assert interrupted_runs["a"].returncode == 0, interrupted_runs["a"].stderr[-2000:]
    assert interrupted_runs["b-sigkill"].returncode == -signal.SIGKILL
    resumed = interrupted_runs["b-resumed"]
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming after epoch 2" in resumed.stdout
    results = interrupted_runs["results"]
    assert sorted(p.name for p in results.iterdir()) == ["a", "b"]  # nothing incomplete left over
    a = keras.models.load_model(results / "a" / "model.keras", compile=False)
    b = keras.models.load_model(results / "b" / "model.keras", compile=False)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)  # bit for bit on CPU
    with open(results / "a" / "history.csv", newline="") as fa, open(results / "b" / "history.csv", newline="") as fb:
        rows_a, rows_b = list(csv.DictReader(fa)), list(csv.DictReader(fb))
    assert [r["epoch"] for r in rows_b] == ["1", "2", "3", "4"]  # one row per epoch, none twice
    assert rows_a == rows_b
    assert not (results / "b" / "checkpoints").exists()
    metrics = json.loads((results / "b" / "metrics.json").read_text())
    assert metrics["resumed_after_epoch"] == 2 and metrics["epochs_run"] == 4


@pytest.mark.slow
def test_run_files_are_readable_by_others_and_tensorboard_logs_exist(interrupted_runs):
    run_dir = interrupted_runs["results"] / "a"
    assert run_dir.stat().st_mode & 0o777 == 0o755
    for name in ("config.yaml", "history.csv", "metrics.json", "split.json", "loss_curves.png", "model.keras"):
        assert (run_dir / name).stat().st_mode & 0o777 == 0o644, name
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in (run_dir / "predictions").iterdir())
    events = list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert {p.parent.name for p in events} == {"train", "validation"}


def _volumes(n=3, shape=(4, 16, 16)):
    rng = np.random.default_rng(1)
    volumes = []
    for i in range(n):
        label = np.zeros(shape, np.int32)
        label[:, 3:9, 4:10] = 1 + i % 3
        volumes.append({"image": rng.normal(size=shape).astype(np.float32), "label": label, "case_id": f"c{i}"})
    return volumes


def test_a_resumed_stream_sees_the_batches_an_uninterrupted_run_sees():
    cfg = CourseworkConfig(batch_size=4, train_crop=(8, 12))
    volumes = _volumes()
    full, _, steps = train.make_datasets(cfg, volumes, volumes[:1])
    assert steps == 3  # 12 slices in batches of 4
    resumed, _, _ = train.make_datasets(cfg, volumes, volumes[:1], start_epoch=2)
    reference = [b for _, b in zip(range(3 * steps), full)][2 * steps:]
    for (x, y), (xr, yr) in zip(reference, resumed):
        assert x.shape == (4, 8, 12, 1) and y.shape == (4, 8, 12)
        np.testing.assert_array_equal(x.numpy(), xr.numpy())
        np.testing.assert_array_equal(y.numpy(), yr.numpy())


def test_the_training_stream_runs_without_tf_data_autotuning():
    """Its iterator is destroyed at the end of ``fit``; with autotuning that waited up to a minute."""
    cfg = CourseworkConfig(batch_size=4, train_crop=(8, 12))
    volumes = _volumes()
    train_ds, val_ds, _ = train.make_datasets(cfg, volumes, volumes[:1])
    assert train_ds.options().autotune.enabled is False
    assert val_ds.options().autotune.enabled is False


def test_random_crop_cuts_one_window_from_image_and_label():
    import tensorflow as tf

    image = np.arange(2 * 10 * 12, dtype=np.float32).reshape(2, 10, 12, 1)
    batch = {"image": tf.constant(image), "label": tf.constant(image[..., 0].astype(np.int32)), "case_id": tf.constant([b"a", b"b"])}
    out = train.random_crop(batch, (4, 20), tf.constant([3, 4]))
    assert out["image"].shape == (2, 4, 12, 1) and out["label"].shape == (2, 4, 12)  # W smaller than 20: whole
    np.testing.assert_array_equal(out["image"].numpy()[..., 0], out["label"].numpy())  # the same window
    top = int(out["label"].numpy()[0, 0, 0]) // 12
    np.testing.assert_array_equal(out["image"].numpy(), image[:, top : top + 4])
    again = train.random_crop(batch, (4, 20), tf.constant([3, 4]))
    np.testing.assert_array_equal(again["image"].numpy(), out["image"].numpy())  # stateless: same seed, same crop
    tops = {int(train.random_crop(batch, (4, 4), tf.constant([s, 0]))["label"].numpy()[0, 0, 0]) for s in range(20)}
    assert len(tops) > 3


def test_keep_largest_components_drops_detached_islands():
    from coursework.solution import keep_largest_components

    labels = np.zeros((3, 12, 12), np.int32)
    labels[:, 1:6, 1:6] = 2  # the organ
    labels[1, 9:11, 9:11] = 2  # a false-positive island
    labels[:, 7:9, 1:4] = 1
    out = keep_largest_components(labels)
    assert out[1, 9, 9] == 0 and (out[:, 1:6, 1:6] == 2).all() and (out == 1).sum() == (labels == 1).sum()
    assert out.dtype == np.int32


def test_progress_metrics_are_mean_and_per_structure_dice():
    names = [m.name for m in train.dice_metrics()]
    assert names == ["dice", "dice_bladder", "dice_prostate", "dice_rectum"]


def test_model_is_compiled_with_the_optimiser_built():
    """Adam's variables exist before ``fit``: created inside the first step, they would make TensorFlow
    trace that step twice (the quick run's first epoch took 23 s instead of 12 s on 2 AVX2 cores)."""
    cfg = CourseworkConfig(depth=1, base_filters=4)
    model = train.build_and_compile(cfg, spatial_rank=2, steps_per_epoch=4)
    assert model.optimizer.built
    assert len(model.optimizer.variables) > 2 * len(model.trainable_variables)  # m and v per weight
