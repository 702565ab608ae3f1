"""Tests for coursework.scoring: safe copies of untrusted files, prediction validation, metrics."""

from __future__ import annotations

import os
import re

import nibabel as nib
import numpy as np
import pytest

from coursework import scoring

AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])


def _nifti(path, data, affine=AFFINE, dtype=np.uint8):
    nib.save(nib.Nifti1Image(np.asarray(data, dtype), affine), str(path))
    return path


@pytest.fixture
def case(tmp_path):
    """One held-out case: image, mask (a block of each structure) and the folder of predictions."""
    mask = np.zeros((12, 16, 6), np.uint8)
    mask[2:6, 3:9, 1:4], mask[6:9, 3:9, 1:4], mask[2:6, 10:14, 2:5] = 1, 2, 3
    held = tmp_path / "held"
    held.mkdir()
    image = _nifti(held / "c1_img.nii.gz", mask * 10.0, dtype=np.float32)
    _nifti(held / "c1_mask.nii.gz", mask)
    preds = tmp_path / "preds"
    preds.mkdir()
    return {"image": image, "mask": mask, "held": held, "preds": preds}


def test_copy_untrusted_copies_a_plain_file(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f.txt").write_text("hello")
    assert scoring.copy_untrusted(tmp_path, "a/f.txt", tmp_path / "out" / "f.txt", owner_uid=os.getuid()) is None
    assert (tmp_path / "out" / "f.txt").read_text() == "hello"


@pytest.mark.parametrize("kind", ["link", "linked_folder", "fifo", "hardlink", "too_big", "other_owner", "missing", "dotdot"])
def test_copy_untrusted_refuses_what_student_code_could_abuse(tmp_path, kind):
    secret = tmp_path / "secret.txt"
    secret.write_text("held-out labels")
    base = tmp_path / "base"
    (base / "d").mkdir(parents=True)
    rel, kwargs = "d/f", {}
    if kind == "link":
        (base / "d" / "f").symlink_to(secret)
    elif kind == "linked_folder":
        (base / "e").symlink_to(tmp_path)
        rel = "e/secret.txt"
    elif kind == "fifo":
        os.mkfifo(base / "d" / "f")
    elif kind == "hardlink":
        os.link(secret, base / "d" / "f")
    elif kind == "too_big":
        (base / "d" / "f").write_bytes(b"x" * 100)
        kwargs = {"max_bytes": 10}
    elif kind == "other_owner":
        (base / "d" / "f").write_text("x")
        kwargs = {"owner_uid": os.getuid() + 1}
    elif kind == "dotdot":
        rel = "d/../../secret.txt"
    reason = scoring.copy_untrusted(base, rel, tmp_path / "out", **kwargs)
    assert reason is not None and reason.startswith(rel)
    assert not (tmp_path / "out").exists()


def test_list_untrusted_dir_does_not_follow_links(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "x").write_text("")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert scoring.list_untrusted_dir(tmp_path, "real") == ["x"]
    assert scoring.list_untrusted_dir(tmp_path, "link") is None


def test_valid_prediction_loads_as_int32(case):
    path = _nifti(case["preds"] / "c1_pred.nii.gz", case["mask"])
    data = scoring.load_prediction(path, case["image"])
    assert data.dtype == np.int32 and np.array_equal(data, case["mask"])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p, m: p.write_bytes(b"not nifti"), "not a readable NIfTI file"),
        (lambda p, m: _nifti(p, m[:6]), "shape (6, 16, 6)"),
        (lambda p, m: _nifti(p, m, affine=np.eye(4)), "affine differs"),
        (lambda p, m: _nifti(p, m, dtype=np.float32), "expected integers"),
        (lambda p, m: _nifti(p, m * 2), "labels [0, 2, 4, 6] outside 0..3"),
    ],
)
def test_invalid_predictions_are_refused_with_the_reason(case, make, message):
    path = case["preds"] / "c1_pred.nii.gz"
    make(path, case["mask"])
    with pytest.raises(scoring.PredictionError, match=re.escape(message)):
        scoring.load_prediction(path, case["image"])


def test_check_predictions_lists_missing_refused_and_extra_files(case):
    _nifti(case["preds"] / "extra_pred.nii.gz", case["mask"])
    problems = scoring.check_predictions(case["preds"], [case["image"]], {"c0_pred.nii.gz": "is a symbolic link"})
    assert problems == ["c0_pred.nii.gz: is a symbolic link", "no prediction c1_pred.nii.gz for input c1_img.nii.gz",
                        "unexpected outputs ['extra_pred.nii.gz']"]
    _nifti(case["preds"] / "c1_pred.nii.gz", case["mask"])
    (case["preds"] / "extra_pred.nii.gz").unlink()
    assert scoring.check_predictions(case["preds"], [case["image"]]) == []


def test_scores_and_agreement_use_the_lecturers_metrics(case, tmp_path):
    _nifti(case["preds"] / "c1_pred.nii.gz", case["mask"])
    cases = scoring.heldout_cases(case["held"])
    assert [c[0] for c in cases] == ["c1"]
    [result] = scoring.score_predictions(case["preds"], cases)
    assert result["mean_dice"] == pytest.approx(1.0) and result["mean_hd95_mm"] == pytest.approx(0.0)
    other = tmp_path / "other"
    other.mkdir()
    shifted = np.roll(case["mask"], 2, axis=1)
    _nifti(other / "c1_pred.nii.gz", shifted)
    assert scoring.agreement(case["preds"], case["preds"], [case["image"]]) == pytest.approx(1.0)
    assert 0.0 < scoring.agreement(case["preds"], other, [case["image"]]) < 0.9
    (other / "c1_pred.nii.gz").unlink()
    with pytest.raises(scoring.PredictionError, match="no prediction c1_pred.nii.gz"):
        scoring.score_predictions(other, cases)
