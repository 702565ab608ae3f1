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

from .conftest import run_main_noting_tensorflow, run_module


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


def test_predict_cli_user_error_is_one_line_before_tensorflow(tmp_path):
    """A mistyped path is reported in a second, not after TensorFlow's start-up (about 10 s)."""
    proc, tensorflow = run_main_noting_tensorflow("coursework.predict", str(tmp_path / "nowhere"), str(tmp_path / "out"))
    assert proc.returncode == 2 and not tensorflow, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'nowhere'}: input folder not found"]
    assert not (tmp_path / "out").exists()
    # A model is needed only after every path was checked: a missing run folder is reported the same way.
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "p01_img.nii.gz").write_bytes(b"")
    proc, tensorflow = run_main_noting_tensorflow("coursework.predict", str(tmp_path / "in"), str(tmp_path / "out"),
                                                  "--run-dir", str(tmp_path / "no-run"))
    assert proc.returncode == 2 and not tensorflow, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'no-run' / 'model.keras'}: not found (is {tmp_path / 'no-run'} a finished run of coursework.train?)"]


def _tiny_model():
    from coursework import solution
    from coursework.config import CourseworkConfig

    cfg = CourseworkConfig(depth=1, base_filters=2)
    return solution.build_model(cfg, (None, None, 1), 4), cfg


def test_predict_writes_every_good_volume_and_lists_the_bad_ones(tmp_path, rng):
    from coursework.predict import predict_folder

    (tmp_path / "in").mkdir()
    good, _, affine = _oblique_volume(tmp_path / "in", rng)
    bad = tmp_path / "in" / "p02_img.nii.gz"
    bad.write_bytes(good.read_bytes()[:40])  # a truncated copy
    out = tmp_path / "out"
    out.mkdir()
    (out / "p02_pred.nii.gz").write_bytes(b"stale prediction of an earlier call")
    model, cfg = _tiny_model()
    failed = predict_folder(model, cfg, find_inputs(tmp_path / "in"), out, progress=False)
    assert list(failed) == [bad] and "corrupt or truncated" in failed[bad] and str(bad) in failed[bad]
    assert sorted(p.name for p in out.iterdir()) == ["p01_pred.nii.gz"]  # the stale file is gone
    np.testing.assert_allclose(nib.load(str(out / "p01_pred.nii.gz")).affine, affine, atol=1e-5)


def test_predict_cli_refuses_an_out_dir_that_is_a_file(tmp_path, rng, capsys):
    from coursework import predict

    (tmp_path / "in").mkdir()
    _oblique_volume(tmp_path / "in", rng)
    (tmp_path / "out").write_text("not a folder")
    assert predict.main([str(tmp_path / "in"), str(tmp_path / "out"), "--run-dir", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {tmp_path / 'out'}: is a file; OUT_DIR must be a folder (it is created if missing)"
    ]
    assert (tmp_path / "out").read_text() == "not a folder"


def test_load_run_says_corrupt_not_missing_for_a_damaged_model(tmp_path):
    from coursework.config import CourseworkConfig
    from training.config import save_config

    save_config(CourseworkConfig(), tmp_path / "config.yaml")
    model, _ = _tiny_model()
    model.save(tmp_path / "model.keras")
    data = (tmp_path / "model.keras").read_bytes()
    (tmp_path / "model.keras").write_bytes(data[: len(data) // 2])  # an interrupted copy
    with pytest.raises(UserError, match=r"model\.keras: corrupt or truncated") as info:
        load_run(tmp_path)
    assert "not found" not in str(info.value).lower()


def test_predict_volume_pads_batches_and_crops_back(rng):
    """Slice-by-slice inference equals the network on each padded slice, cropped back: a volume whose
    slice count is not a multiple of the batch and whose plane is not a multiple of 2^depth."""
    from coursework import solution
    from coursework.config import CourseworkConfig

    cfg = CourseworkConfig(depth=2, base_filters=4, largest_component=False)
    model = solution.build_model(cfg, (None, None, 1), 4)
    image = rng.normal(size=(7, 13, 10)).astype(np.float32)  # pads to 16 x 12
    labels = solution.predict_volume(model, image, cfg, batch_size=3)
    padded = np.pad(solution.preprocess(image), ((0, 0), (1, 2), (1, 1)), mode="edge")[..., None]
    expected = np.argmax(np.asarray(model(padded, training=False)), axis=-1)[:, 1:14, 1:11]
    assert labels.shape == image.shape and labels.dtype == np.int32
    np.testing.assert_array_equal(labels, expected)
    assert len(np.unique(labels)) > 1  # an untrained net still varies over the volume
