"""Tests for coursework.predict: the inference contract (input grid, affine and shape kept)."""

import nibabel as nib
import numpy as np
import pytest

from coursework._cli import UserError
from coursework.predict import (
    case_name,
    find_inputs,
    from_model_layout,
    load_run,
    prediction_path,
    to_model_layout,
)

from .conftest import run_module


def _oblique_volume(tmp_path, rng):
    """A (X, Y, Z) = (6, 5, 4) volume stored with flipped and permuted axes (LPS-like, slices first)."""
    data = rng.normal(size=(6, 5, 4)).astype(np.float32)
    affine = np.array([[0.0, 0.0, -1.5, 10.0], [-1.0, 0.0, 0.0, 5.0], [0.0, 3.0, 0.0, -2.0], [0, 0, 0, 1.0]])
    path = tmp_path / "p01_img.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path, data, affine


def test_case_names_and_prediction_paths(tmp_path):
    assert case_name(tmp_path / "case007_img.nii.gz") == "case007"
    assert case_name(tmp_path / "case007_img.nii") == "case007"
    assert case_name(tmp_path / "scan.nii.gz") == "scan"
    assert prediction_path(tmp_path, tmp_path / "case007_img.nii.gz") == tmp_path / "case007_pred.nii.gz"


def test_layout_round_trip_restores_file_order(tmp_path, rng):
    path, data, _ = _oblique_volume(tmp_path, rng)
    image, index, spacing, affine, shape = to_model_layout(path)
    assert shape == data.shape
    assert image.ndim == 3 and image.size == data.size
    # The reoriented image holds the same voxels, and the index map sends each one home.
    np.testing.assert_array_equal(data.ravel()[index.ravel()], image.ravel())
    labels = (np.arange(image.size) % 4).reshape(image.shape)
    back = from_model_layout(labels, index, shape)
    assert back.shape == data.shape and back.dtype == np.uint8
    np.testing.assert_array_equal(back.ravel()[index.ravel()], labels.ravel())
    # Canonical layout: first axis is the 3 mm slice axis (D = z), in-plane 1.0 / 1.5 mm.
    assert spacing == pytest.approx((3.0, 1.0, 1.5))


def test_find_inputs_skips_masks_and_reports_problems(tmp_path):
    with pytest.raises(UserError, match="input folder not found"):
        find_inputs(tmp_path / "missing")
    with pytest.raises(UserError, match="no .nii or .nii.gz volumes"):
        find_inputs(tmp_path)
    for name in ("a_img.nii.gz", "a_mask.nii.gz", "b.nii", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in find_inputs(tmp_path)] == ["a_img.nii.gz", "b.nii"]


def test_load_run_names_missing_files(tmp_path):
    with pytest.raises(UserError, match=r"model\.keras: not found"):
        load_run(tmp_path)


@pytest.mark.slow
def test_predict_cli_keeps_input_grid(quick_run, tmp_path, rng):
    """The marking contract on an oddly oriented input: same shape and affine, labels in 0..3."""
    (tmp_path / "in").mkdir()
    path, data, affine = _oblique_volume(tmp_path / "in", rng)
    out = tmp_path / "out"
    proc = run_module("coursework.predict", str(path.parent), str(out), "--run-dir", str(quick_run["run_dir"]))
    assert proc.returncode == 0, proc.stderr
    pred = nib.load(str(out / "p01_pred.nii.gz"))
    assert pred.shape == data.shape
    np.testing.assert_allclose(pred.affine, affine, atol=1e-5)
    values = np.asarray(pred.dataobj)
    assert np.issubdtype(values.dtype, np.integer)
    assert set(np.unique(values)) <= {0, 1, 2, 3}


@pytest.mark.slow
def test_predict_cli_user_error_is_one_line(tmp_path):
    proc = run_module("coursework.predict", str(tmp_path / "nowhere"), str(tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'nowhere'}: input folder not found"]
    assert not (tmp_path / "out").exists()
