"""Tests for coursework.train: the main job's outputs, its user errors, and that it learns."""

import csv
import json
from pathlib import Path

import keras
import nibabel as nib
import numpy as np
import pytest

from coursework import train
from coursework.config import CourseworkConfig
from data_utils import io
from training.config import load_config

from .conftest import run_module

PNG = b"\x89PNG\r\n\x1a\n"


def _write_pairs(folder: Path, n: int = 3, shape=(4, 16, 16)) -> list[Path]:
    """``n`` tiny valid image/mask pairs; returns the image paths."""
    folder.mkdir(parents=True, exist_ok=True)
    affine = io.dhw_affine(shape, (3.0, 1.5, 1.5))
    rng = np.random.default_rng(0)
    images = []
    for i in range(n):
        label = np.zeros(shape, np.int32)
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


def test_wrong_data_path_is_one_line_error(tmp_path, capsys):
    missing = tmp_path / "no-such-folder"
    status, err = _run_in_process(tmp_path, "--data", str(missing), capsys=capsys)
    assert status == 2
    assert err == [f"error: {missing}: data folder not found (expected <case>_img.nii.gz / <case>_mask.nii.gz pairs)"]
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


@pytest.mark.slow
def test_cli_error_has_no_traceback_and_status_2(tmp_path):
    proc = run_module("coursework.train", "--data", str(tmp_path / "nope"), "--results-dir", str(tmp_path / "results"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nope'}: data folder not found (expected <case>_img.nii.gz / <case>_mask.nii.gz pairs)"
    ]
    _assert_no_results(tmp_path)


@pytest.mark.slow
def test_quick_run_writes_every_output(quick_run):
    run_dir = quick_run["run_dir"]
    # Finished runs only: no temporary folders left next to it.
    assert [p.name for p in run_dir.parent.iterdir()] == ["quick"]
    assert quick_run["seconds"] < 300, "the quick run must stay a smoke test (under a minute on 2 idle cores)"

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
    assert {"loss", "val_loss"} <= set(rows[0])

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
    proc = run_module("coursework.train", "--quick", "--mode", "3d", "--patch-size", "16", "32", "32",
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
