"""Tests for data_utils.formats: MedMNIST npz, h5 frames, PNG/JPEG slices and DICOM series."""

import h5py
import numpy as np
import pytest

from data_utils import formats, io
from data_utils.io import DataError


def _medmnist(path, rng, shape=(28, 28), channels=None, labels_shape=(1,)):
    arrays = {}
    for split, n in (("train", 10), ("val", 4), ("test", 6)):
        image_shape = (n,) + shape + ((channels,) if channels else ())
        arrays[f"{split}_images"] = rng.integers(0, 256, image_shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 5, (n,) + labels_shape).astype(np.uint8)
    np.savez(path, **arrays)
    return arrays


# --- npz ------------------------------------------------------------------------------------


def test_load_npz_medmnist_2d_grey(tmp_path, rng):
    arrays = _medmnist(tmp_path / "pneumoniamnist.npz", rng)
    data = formats.load_npz(tmp_path / "pneumoniamnist.npz")
    assert sorted(data) == ["test", "train", "val"]
    train = data["train"]
    assert train["image"].shape == (10, 28, 28, 1) and train["image"].dtype == np.float32
    assert train["label"].shape == (10,) and train["label"].dtype == np.int32
    np.testing.assert_allclose(train["image"][..., 0], arrays["train_images"] / 255.0, atol=1e-6)
    np.testing.assert_array_equal(train["label"], arrays["train_labels"][:, 0])


def test_load_npz_rgb_3d_and_multilabel(tmp_path, rng):
    _medmnist(tmp_path / "rgb.npz", rng, channels=3)
    assert formats.load_npz(tmp_path / "rgb.npz")["val"]["image"].shape == (4, 28, 28, 3)
    _medmnist(tmp_path / "organ3d.npz", rng, shape=(8, 8, 8))
    assert formats.load_npz(tmp_path / "organ3d.npz")["test"]["image"].shape == (6, 8, 8, 8, 1)
    _medmnist(tmp_path / "chest.npz", rng, labels_shape=(14,))
    assert formats.load_npz(tmp_path / "chest.npz", splits=("train",))["train"]["label"].shape == (10, 14)


def test_save_npz_round_trip_is_atomic(tmp_path, rng):
    images = rng.random((5, 16, 16, 1)).astype(np.float32)
    labels = np.arange(5, dtype=np.int32)
    path = formats.save_npz(tmp_path / "out" / "synthetic.npz", {"train": {"image": images, "label": labels}})
    assert path.name == "synthetic.npz" and [p.name for p in path.parent.iterdir()] == ["synthetic.npz"]
    data = formats.load_npz(path, splits=("train",))
    np.testing.assert_array_equal(data["train"]["image"], images)
    np.testing.assert_array_equal(data["train"]["label"], labels)


def test_load_npz_errors_name_the_file_and_keys(tmp_path, rng):
    np.savez(tmp_path / "bad.npz", train_images=np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(DataError, match=r"bad\.npz.*train_labels"):
        formats.load_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "count.npz", train_images=np.zeros((3, 8, 8), np.uint8), train_labels=np.zeros((2, 1)))
    with pytest.raises(DataError, match="3 train_images but 2 train_labels"):
        formats.load_npz(tmp_path / "count.npz", splits=("train",))
    np.savez(tmp_path / "float.npz", train_images=np.zeros((2, 8, 8), np.uint8), train_labels=np.array([0.5, 1.0]))
    with pytest.raises(DataError, match="non-integer"):
        formats.load_npz(tmp_path / "float.npz", splits=("train",))
    with pytest.raises(DataError, match="not found"):
        formats.load_npz(tmp_path / "missing.npz")
    (tmp_path / "text.npz").write_text("not an archive")
    with pytest.raises(DataError, match="text.npz"):
        formats.load_npz(tmp_path / "text.npz")


def test_npz_dataset_batches_dicts(tmp_path, rng):
    _medmnist(tmp_path / "m.npz", rng)
    ds = formats.npz_dataset(tmp_path / "m.npz", "train", batch_size=4, shuffle=True, seed=1)
    batches = list(ds)
    assert [b["image"].shape[0] for b in batches] == [4, 4, 2]
    assert batches[0]["image"].shape == (4, 28, 28, 1) and batches[0]["label"].dtype.name == "int32"
    again = list(formats.npz_dataset(tmp_path / "m.npz", "train", batch_size=4, shuffle=True, seed=1))
    np.testing.assert_array_equal(batches[0]["label"].numpy(), again[0]["label"].numpy())
    labels = np.concatenate([b["label"].numpy() for b in batches])
    np.testing.assert_array_equal(np.sort(labels), np.sort(formats.load_npz(tmp_path / "m.npz")["train"]["label"]))


def test_arrays_dataset_checks_lengths():
    with pytest.raises(ValueError, match="same number of rows"):
        formats.arrays_dataset({"image": np.zeros((3, 2)), "label": np.zeros(2)}, 2)
    with pytest.raises(ValueError, match="empty"):
        formats.arrays_dataset({}, 2)


# --- h5 -------------------------------------------------------------------------------------


def _ultrasound_h5(path, rng, cases=2, frames=3, observers=3):
    with h5py.File(path, "w") as f:
        for case in range(cases):
            for frame in range(frames):
                f.create_dataset(f"frame_{case:04d}_{frame:03d}", data=rng.integers(0, 256, (12, 10), dtype=np.uint8))
                for observer in range(observers):
                    label = np.zeros((12, 10), np.uint8)
                    label[case + frame : case + frame + 3, observer : observer + 4] = 1
                    f.create_dataset(f"label_{case:04d}_{frame:03d}_{observer:02d}", data=label)


def test_load_h5_frames_course_layout(tmp_path, rng):
    _ultrasound_h5(tmp_path / "us.h5", rng)
    data = formats.load_h5_frames(tmp_path / "us.h5")
    assert data["image"].shape == (6, 12, 10, 1) and data["image"].dtype == np.float32
    assert 0.0 <= data["image"].min() and data["image"].max() <= 1.0
    assert data["label"].shape == (6, 3, 12, 10) and data["label"].dtype == np.int32
    np.testing.assert_array_equal(data["case"], [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(data["frame"], [0, 1, 2, 0, 1, 2])
    # Frame (case 1, frame 2), observer 2: rows 3..5, columns 2..5.
    expected = np.zeros((12, 10), np.int32)
    expected[3:6, 2:6] = 1
    np.testing.assert_array_equal(data["label"][5, 2], expected)
    with h5py.File(tmp_path / "us.h5", "r") as f:
        np.testing.assert_allclose(data["image"][4, ..., 0], f["frame_0001_001"][()] / 255.0, atol=1e-6)


def test_load_h5_frames_errors(tmp_path, rng):
    _ultrasound_h5(tmp_path / "partial.h5", rng)
    with h5py.File(tmp_path / "partial.h5", "a") as f:
        del f["label_0001_002_01"]
    with pytest.raises(DataError, match=r"partial\.h5.*observers"):
        formats.load_h5_frames(tmp_path / "partial.h5")
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f.create_dataset("images", data=np.zeros((2, 4, 4)))
    with pytest.raises(DataError, match=r"empty\.h5.*frame_<case>_<frame>.*images"):
        formats.load_h5_frames(tmp_path / "empty.h5")


def test_load_h5_arrays(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.create_dataset("frames", data=np.arange(24).reshape(2, 3, 4))
        f.create_dataset("labels", data=np.array([0, 1]))
    data = formats.load_h5_arrays(tmp_path / "a.h5", ["frames", "labels"])
    np.testing.assert_array_equal(data["frames"], np.arange(24).reshape(2, 3, 4))
    with pytest.raises(DataError, match=r"a\.h5.*missing datasets \['masks'\].*frames"):
        formats.load_h5_arrays(tmp_path / "a.h5", ["frames", "masks"])
    (tmp_path / "junk.h5").write_bytes(b"junk")
    with pytest.raises(DataError, match="HDF5"):
        formats.load_h5_arrays(tmp_path / "junk.h5", ["frames"])


# --- PNG / JPEG -----------------------------------------------------------------------------


def test_png_round_trip_and_slices(tmp_path, rng):
    volume = rng.integers(0, 256, (3, 9, 7), dtype=np.uint8)
    labels = rng.integers(0, 4, (3, 9, 7))
    for k in (0, 1, 2):
        # Names that sort wrongly as text (slice10 < slice2): natural order is used.
        formats.write_image(tmp_path / "img" / f"slice{[2, 10, 30][k]}.png", volume[k])
        formats.write_image(tmp_path / "lab" / f"slice{[2, 10, 30][k]}.png", labels[k], label=True)
    stacked = formats.read_slices(tmp_path / "img")
    assert stacked.shape == (3, 9, 7, 1) and stacked.dtype == np.float32
    np.testing.assert_allclose(stacked[..., 0], volume / 255.0, atol=1e-6)
    label_volume = formats.read_slices(tmp_path / "lab", label=True)
    assert label_volume.dtype == np.int32
    np.testing.assert_array_equal(label_volume, labels)
    assert formats.read_image(tmp_path / "img" / "slice2.png", grayscale=False).shape == (9, 7, 3)


def test_jpeg_is_lossy_and_refused_for_labels(tmp_path):
    image = np.tile(np.linspace(0, 1, 32, dtype=np.float32), (32, 1))
    formats.write_image(tmp_path / "a.jpg", image)
    np.testing.assert_allclose(formats.read_image(tmp_path / "a.jpg")[..., 0], image, atol=0.05)
    with pytest.raises(DataError, match="JPEG"):
        formats.read_label_image(tmp_path / "a.jpg")
    with pytest.raises(DataError, match=r"\.png"):
        formats.write_image(tmp_path / "b.jpg", np.zeros((4, 4), int), label=True)


def test_image_errors(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="broken.png"):
        formats.read_image(tmp_path / "broken.png")
    formats.write_image(tmp_path / "rgb.png", np.zeros((4, 4, 3)))
    with pytest.raises(DataError, match="RGB"):
        formats.read_label_image(tmp_path / "rgb.png")
    formats.write_image(tmp_path / "mixed" / "a.png", np.zeros((4, 4)))
    formats.write_image(tmp_path / "mixed" / "b.png", np.zeros((5, 4)))
    with pytest.raises(DataError, match="differ in shape"):
        formats.read_slices(tmp_path / "mixed")
    with pytest.raises(DataError, match="no files matching"):
        formats.read_slices(tmp_path / "mixed", pattern="*.jpg")
    with pytest.raises(DataError, match="label values"):
        formats.write_image(tmp_path / "l.png", np.full((2, 2), 300), label=True)


# --- DICOM ----------------------------------------------------------------------------------


def _write_dicom_series(folder, volume, spacing=(0.8, 0.6), thickness=2.5, origin=(-100.0, -90.0, 40.0)):
    """Write ``volume`` (slices, rows, columns) as an axial CT series, files named in shuffled order."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    for k in range(volume.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID, ds.Modality = series_uid, "CT"
        ds.Rows, ds.Columns = volume.shape[1:]
        ds.PixelSpacing = list(spacing)
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * thickness]
        ds.SliceThickness = thickness
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = (volume[k] + 1024).astype(np.uint16).tobytes()
        ds.save_as(folder / f"IM{(7 * k) % volume.shape[0]:03d}.dcm", enforce_file_format=True)
    return pydicom


def test_read_dicom_series_geometry_and_hounsfield_units(tmp_path, rng):
    volume = rng.integers(-1000, 1500, (5, 6, 7)).astype(np.int16)  # (slices, rows, columns)
    _write_dicom_series(tmp_path / "ct", volume)
    (tmp_path / "ct" / "README.txt").write_text("not a DICOM file")
    result = formats.read_dicom_series(tmp_path / "ct")
    assert result.array.shape == (7, 6, 5)  # (column, row, slice)
    np.testing.assert_array_equal(result.array, np.transpose(volume, (2, 1, 0)).astype(np.float32))
    np.testing.assert_allclose(result.spacing, (0.6, 0.8, 2.5))
    # LPS (-100, -90, 40) is RAS (100, 90, 40); columns run towards patient left = -R.
    np.testing.assert_allclose(result.affine[:3, 3], (100.0, 90.0, 40.0))
    np.testing.assert_allclose(np.diag(result.affine)[:3], (-0.6, -0.8, 2.5))
    dhw = io.to_dhw(io.to_canonical(result))
    assert dhw.array.shape == (5, 6, 7)


def test_read_dicom_series_errors(tmp_path, rng):
    _write_dicom_series(tmp_path / "a", rng.integers(0, 100, (2, 4, 4)))
    _write_dicom_series(tmp_path / "b", rng.integers(0, 100, (2, 4, 4)))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name, src in (("a0.dcm", "a/IM000.dcm"), ("b0.dcm", "b/IM000.dcm")):
        (mixed / name).write_bytes((tmp_path / src).read_bytes())
    with pytest.raises(DataError, match="2 DICOM series"):
        formats.read_dicom_series(mixed)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.txt").write_text("hello")
    with pytest.raises(DataError, match="no DICOM files"):
        formats.read_dicom_series(tmp_path / "empty")


def test_dicom_without_pydicom_says_how_to_install(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pydicom", None)  # as if it were not installed
    with pytest.raises(ImportError, match="pip install pydicom"):
        formats.read_dicom_series(tmp_path)


def test_save_h5_frames_round_trip(tmp_path, rng):
    images = rng.random((4, 8, 6, 1)).astype(np.float32)
    labels = rng.integers(0, 2, (4, 2, 8, 6))
    path = formats.save_h5_frames(tmp_path / "out.h5", images, labels, case=[0, 0, 3, 3], frame=[0, 1, 0, 1])
    assert [p.name for p in tmp_path.iterdir()] == ["out.h5"]
    data = formats.load_h5_frames(path)
    np.testing.assert_allclose(data["image"], np.rint(images * 255) / 255, atol=1e-6)
    np.testing.assert_array_equal(data["label"], labels)
    np.testing.assert_array_equal(data["case"], [0, 0, 3, 3])
    with pytest.raises(DataError, match="every \\(case, frame\\) pair once"):
        formats.save_h5_frames(tmp_path / "dup.h5", images, case=[0, 0, 0, 0], frame=[0, 0, 1, 2])
    with pytest.raises(DataError, match="do not match frames"):
        formats.save_h5_frames(tmp_path / "bad.h5", images, labels[:, :, :4])
    assert not (tmp_path / "dup.h5").exists() and not (tmp_path / "bad.h5").exists()
