"""Tests for data_utils.io: NIfTI reading/writing, reorientation and the errors users see."""

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from data_utils import io
from data_utils.io import DataError


def _affine(spacing=(1.5, 2.0, 3.0), origin=(-10.0, 5.0, 7.0)):
    affine = np.diag(list(spacing) + [1.0])
    affine[:3, 3] = origin
    return affine


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("nifti2", [False, True])
def test_save_load_round_trip(tmp_path, rng, suffix, nifti2):
    array = rng.normal(size=(5, 6, 7)).astype(np.float32)
    path = io.save_nifti(array, _affine(), tmp_path / f"sub/vol{suffix}", nifti2=nifti2)
    assert isinstance(nib.load(path), nib.Nifti2Image if nifti2 else nib.Nifti1Image)
    volume = io.load_nifti(path)
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(volume.affine, _affine())
    assert volume.spacing == pytest.approx((1.5, 2.0, 3.0)) and volume.path == path
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind


def test_labels_load_as_int32_and_reject_non_integers(tmp_path, rng):
    label = rng.integers(0, 4, size=(4, 4, 4))
    path = io.save_nifti(label.astype(np.float32), np.eye(4), tmp_path / "lab.nii.gz")
    loaded = io.load_nifti(path, is_label=True)
    assert loaded.array.dtype == np.int32
    np.testing.assert_array_equal(loaded.array, label)
    bad = io.save_nifti(label + 0.5, np.eye(4), tmp_path / "bad_mask.nii.gz", dtype=np.float32)
    with pytest.raises(DataError, match=r"bad_mask\.nii\.gz.*non-integer"):
        io.load_nifti(bad, is_label=True)


def test_nan_in_image_is_an_error(tmp_path):
    array = np.zeros((3, 3, 3), np.float32)
    array[1, 1, 1] = np.nan
    path = io.save_nifti(array, np.eye(4), tmp_path / "nan_img.nii")
    with pytest.raises(DataError, match=r"nan_img\.nii.*NaN"):
        io.load_nifti(path)


def test_missing_and_wrong_suffix(tmp_path):
    with pytest.raises(DataError, match=r"nothere\.nii\.gz: file not found"):
        io.load_nifti(tmp_path / "nothere.nii.gz")
    (tmp_path / "x.png").write_bytes(b"png")
    with pytest.raises(DataError, match="x.png"):
        io.load_nifti(tmp_path / "x.png")
    assert issubclass(DataError, ValueError)


def test_truncated_and_corrupt_gzip_are_reported(tmp_path, rng):
    path = io.save_nifti(rng.normal(size=(20, 20, 20)).astype(np.float32), np.eye(4), tmp_path / "t_img.nii.gz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header readable, data cut off
    with pytest.raises(DataError, match=r"t_img\.nii\.gz.*corrupt or truncated"):
        io.load_nifti(path)
    junk = tmp_path / "junk_img.nii.gz"
    junk.write_bytes(b"not a gzip file at all")
    with pytest.raises(DataError, match=r"junk_img\.nii\.gz.*corrupt or truncated"):
        io.load_nifti(junk)
    flipped = io.save_nifti(np.ones((20, 20, 20), np.float32), np.eye(4), tmp_path / "f_img.nii.gz")
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one corrupted byte: only the gzip checksum notices
    flipped.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"f_img\.nii\.gz.*corrupt or truncated"):
        io.load_nifti(flipped)
    plain = io.save_nifti(np.ones((20, 20, 20), np.float32), np.eye(4), tmp_path / "p_img.nii")
    plain.write_bytes(plain.read_bytes()[:1000])
    with pytest.raises(DataError, match=r"p_img\.nii.*corrupt or truncated"):
        io.load_nifti(plain)
    empty = tmp_path / "empty.nii.gz"
    empty.write_bytes(gzip.compress(b""))
    with pytest.raises(DataError, match="empty.nii.gz"):
        io.load_nifti(empty)


def test_to_canonical_flips_to_ras(rng):
    array = rng.normal(size=(4, 5, 6)).astype(np.float32)
    affine = np.diag([-2.0, 1.0, 3.0, 1.0])  # x axis runs right-to-left
    canonical = io.to_canonical(io.Volume(array, affine, (2.0, 1.0, 3.0)))
    assert nib.aff2axcodes(canonical.affine) == ("R", "A", "S")
    np.testing.assert_array_equal(canonical.array, array[::-1])
    # The same voxel lands on the same world point.
    world_before = affine @ np.array([0, 2, 3, 1])
    world_after = canonical.affine @ np.array([3, 2, 3, 1])
    np.testing.assert_allclose(world_before, world_after)


def test_to_dhw_and_dhw_affine(rng):
    array = rng.normal(size=(4, 5, 6)).astype(np.float32)  # (x, y, z)
    volume = io.Volume(array, _affine((1.0, 2.0, 3.0)), (1.0, 2.0, 3.0))
    dhw = io.to_dhw(volume)
    assert dhw.array.shape == (6, 5, 4) and dhw.spacing == (3.0, 2.0, 1.0)
    np.testing.assert_allclose(dhw.affine @ [5, 1, 2, 1], volume.affine @ [2, 1, 5, 1])
    # A (D, H, W) affine reoriented to canonical and back gives the same array.
    affine = io.dhw_affine((6, 5, 4), (3.0, 2.0, 1.0))
    round_trip = io.to_dhw(io.to_canonical(io.Volume(dhw.array, affine, (3.0, 2.0, 1.0))))
    np.testing.assert_array_equal(round_trip.array, dhw.array)
    np.testing.assert_allclose(round_trip.affine, affine)
    np.testing.assert_allclose(affine @ [2.5, 2, 1.5, 1], [0, 0, 0, 1])  # centred on the origin


def test_pair_checks(tmp_path, rng):
    image = rng.normal(size=(6, 6, 4)).astype(np.float32)
    label = (image > 0).astype(np.uint8)
    img_path = io.save_nifti(image, _affine(), tmp_path / "a_img.nii.gz")
    lab_path = io.save_nifti(label, _affine(), tmp_path / "a_mask.nii.gz")
    img, lab = io.load_image_label_pair(img_path, lab_path)
    assert img.array.shape == lab.array.shape and lab.array.dtype == np.int32

    other = io.save_nifti(label[:, :, :3], _affine(), tmp_path / "b_mask.nii.gz")
    with pytest.raises(DataError, match=r"b_mask\.nii\.gz.*shape"):
        io.load_image_label_pair(img_path, other)
    shifted = io.save_nifti(label, _affine(origin=(-10.0, 5.0, 7.5)), tmp_path / "c_mask.nii.gz")
    with pytest.raises(DataError, match=r"c_mask\.nii\.gz.*affine"):
        io.load_image_label_pair(img_path, shifted)
    near = io.save_nifti(label, _affine(origin=(-10.0, 5.0, 7.0001)), tmp_path / "d_mask.nii.gz")
    io.load_image_label_pair(img_path, near)  # within tolerance


def test_atomic_write_replaces_the_file_or_leaves_it_untouched(tmp_path):
    path = tmp_path / "sub" / "note.txt"
    assert io.atomic_write(path, lambda tmp: Path(tmp).write_text("first")) == path
    io.atomic_write(str(path), lambda tmp: Path(tmp).write_text("second"), ".txt")
    assert path.read_text() == "second"

    def half_written(tmp):
        Path(tmp).write_text("hal")
        raise KeyboardInterrupt  # as if killed mid-write

    with pytest.raises(KeyboardInterrupt):
        io.atomic_write(path, half_written)
    assert path.read_text() == "second"
    assert os.listdir(path.parent) == ["note.txt"]  # no temporary left behind


# ---- atomic writers ----------------------------------------------------------------------------


def _weights_model():
    import keras

    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])


def test_atomic_write_text_replaces_the_whole_file(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    io.atomic_write_text(str(path), "first")
    io.atomic_write_text(str(path), "second")
    assert path.read_text() == "second"
    assert os.listdir(path.parent) == ["a.txt"]  # no temporary left behind


def test_atomic_write_text_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "a.txt"
    io.atomic_write_text(str(path), "good")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(io.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        io.atomic_write_text(str(path), "half")
    assert path.read_text() == "good"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_atomic_save_weights_keeps_the_old_file_when_saving_fails(tmp_path, monkeypatch):
    model = _weights_model()
    path = str(tmp_path / "m.weights.h5")
    io.atomic_save_weights(model, path)
    before = Path(path).read_bytes()

    def half_written(filepath, *args, **kwargs):
        Path(filepath).write_bytes(b"\x89HDF partial")
        raise KeyboardInterrupt  # as if killed mid-write

    monkeypatch.setattr(model, "save_weights", half_written)
    with pytest.raises(KeyboardInterrupt):
        io.atomic_save_weights(model, path)
    assert Path(path).read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.weights.h5"]
    with pytest.raises(ValueError, match=".weights.h5"):
        io.atomic_save_weights(model, str(tmp_path / "m.h5"))


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_write_gives_the_mode_of_the_users_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        assert io.current_umask() == umask
        path = io.atomic_write(tmp_path / f"f{umask:o}.txt", lambda tmp: Path(tmp).write_text("x"))
        volume = io.save_nifti(np.zeros((2, 2, 2), np.float32), np.eye(4), tmp_path / f"v{umask:o}.nii.gz")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode
    assert volume.stat().st_mode & 0o777 == mode


def test_permission_denied_is_not_called_corrupt(tmp_path, rng, monkeypatch):
    path = io.save_nifti(rng.normal(size=(3, 3, 3)).astype(np.float32), _affine(), tmp_path / "locked_img.nii")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    # Root reads any file whatever its mode, so the refusal is simulated where nibabel opens it.
    monkeypatch.setattr(io.nib, "load", refuse)
    with pytest.raises(DataError, match=r"locked_img\.nii: permission denied") as info:
        io.load_nifti(path)
    assert "corrupt" not in str(info.value)
    with pytest.raises(DataError, match=r"is a folder"):
        io.load_nifti(tmp_path)


@pytest.mark.parametrize("bad", [7, -1])
def test_labels_outside_the_classes_name_the_file_and_values(tmp_path, bad):
    label = np.zeros((4, 4, 4), np.int32)
    label[1, 1, 1], label[2, 2, 2] = 2, bad
    img = io.save_nifti(np.ones((4, 4, 4), np.float32), _affine(), tmp_path / "c_img.nii.gz")
    mask = io.save_nifti(label, _affine(), tmp_path / "c_mask.nii.gz")
    with pytest.raises(DataError, match=rf"c_mask\.nii\.gz: label values \[{bad}\] are outside 0\.\.3.*found: "):
        io.load_image_label_pair(img, mask, num_classes=4)
    _, loaded = io.load_image_label_pair(img, mask)  # without num_classes no range is imposed
    assert loaded.array.min() == min(0, bad)
    io.check_label_values(np.array([0, 1, 2, 3]), 4)  # in range: no error
