"""Tests for coursework.evaluate: per-structure 3D scores, summaries, overlays, re-evaluation."""

import json

import numpy as np
import pytest

from coursework.evaluate import evaluate_case, format_table, save_overlay, summarise
from data_utils import io

from .conftest import run_main_noting_tensorflow, run_module

SPACING = (3.0, 1.5, 1.5)


def _labels(shape=(8, 24, 24)):
    """A label map with bladder (1), prostate (2) and rectum (3) boxes."""
    label = np.zeros(shape, np.int32)
    label[2:6, 2:10, 4:12] = 1
    label[2:6, 12:18, 8:14] = 2
    label[2:6, 19:23, 8:14] = 3
    return label


def test_perfect_prediction_scores_dice_1_and_hd95_0():
    truth = _labels()
    report = evaluate_case(truth, truth, SPACING)
    assert report["dice"] == {"bladder": 1.0, "prostate": 1.0, "rectum": 1.0}
    assert report["mean_hd95_mm"] == 0.0


def test_missed_structure_follows_the_empty_mask_rule():
    truth = _labels()
    pred = truth.copy()
    pred[pred == 2] = 0  # prostate missed entirely
    report = evaluate_case(pred, truth, SPACING)
    assert report["dice"]["prostate"] == 0.0
    diagonal = float(np.sqrt(np.sum((np.array(truth.shape) * np.array(SPACING)) ** 2)))
    assert report["hd95_mm"]["prostate"] == pytest.approx(diagonal)
    assert report["dice"]["bladder"] == 1.0


def test_summarise_means_over_cases_and_structures():
    truth = _labels()
    shifted = np.roll(truth, 1, axis=2)  # a one-voxel (1.5 mm) shift of everything
    per_case = {"a": evaluate_case(truth, truth, SPACING), "b": evaluate_case(shifted, truth, SPACING)}
    summary = summarise(per_case)
    assert summary["num_cases"] == 2
    expected = np.mean([per_case["a"]["mean_dice"], per_case["b"]["mean_dice"]])
    assert summary["mean_dice"] == pytest.approx(expected)
    assert 0.5 < summary["mean_dice"] < 1.0
    assert summary["hd95_mm"]["bladder"] == pytest.approx(0.75)  # mean of 0 and 1.5 mm
    table = format_table(summary)
    assert "| prostate |" in table and f"**{summary['mean_dice']:.3f}**" in table
    json.dumps(summary)  # metrics.json must be writable


def test_overlay_png_is_written(tmp_path):
    truth = _labels()
    affine = io.dhw_affine(truth.shape, SPACING)
    image = io.Volume(truth.astype(np.float32) + 0.1, affine, SPACING)
    label = io.Volume(truth, affine, SPACING)
    out = save_overlay(image, label, label, tmp_path / "overlay_x.png", evaluate_case(truth, truth, SPACING))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["overlay_x.png"]


def test_evaluate_cli_user_error_is_one_line_before_tensorflow(tmp_path):
    proc, tensorflow = run_main_noting_tensorflow("coursework.evaluate", str(tmp_path / "no-run"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'no-run'}: run folder not found"]
    assert not tensorflow, "the run folder is checked before TensorFlow's start-up"


@pytest.mark.slow
def test_evaluate_cli_reproduces_saved_metrics(quick_run, tmp_path):
    run_dir = quick_run["run_dir"]
    out = tmp_path / "eval.json"
    proc = run_module("coursework.evaluate", str(run_dir), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    again = json.loads(out.read_text())
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert again["num_cases"] == saved["num_cases"]
    assert again["mean_dice"] == pytest.approx(saved["mean_dice"], abs=1e-6)
    assert again["mean_hd95_mm"] == pytest.approx(saved["mean_hd95_mm"], abs=1e-4)
    assert "| **mean** |" in proc.stdout


@pytest.mark.parametrize("content, message", [
    ("{not json", r"split\.json: not valid JSON"),
    ('{"train": []}', r"split\.json: expected .*missing 'test'"),
])
def test_a_damaged_split_file_is_one_clear_error(tmp_path, content, message):
    from coursework._cli import UserError
    from coursework.evaluate import run_test_cases

    (tmp_path / "split.json").write_text(content)
    with pytest.raises(UserError, match=message):
        run_test_cases(tmp_path)


def test_evaluation_refuses_masks_with_labels_outside_the_classes(tmp_path):
    from coursework import solution
    from coursework.config import CourseworkConfig
    from coursework.evaluate import evaluate_cases
    from data_utils.io import DataError

    truth = _labels((4, 8, 8))
    truth[0, 0, 0] = 7
    affine = io.dhw_affine(truth.shape, SPACING)
    image = io.save_nifti(truth.astype(np.float32), affine, tmp_path / "x_img.nii.gz")
    mask = io.save_nifti(truth, affine, tmp_path / "x_mask.nii.gz")
    cfg = CourseworkConfig(depth=1, base_filters=2)
    model = solution.build_model(cfg, (None, None, 1), 4)
    with pytest.raises(DataError, match=r"x_mask\.nii\.gz: label values \[7\] are outside 0\.\.3"):
        evaluate_cases(model, cfg, [("x", image, mask)], tmp_path / "pred", progress=False)
