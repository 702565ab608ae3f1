"""Tests for data_utils.layouts: folder pairs, Decathlon layout and CSV files -> cases -> datasets."""

import json

import numpy as np
import pytest

from data_utils import datasets, formats, io, layouts
from data_utils.io import DataError

SHAPE = (8, 6, 4)  # (x, y, z) as stored


def _save_pair(image_path, label_path, rng, channels=None, shift=0):
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    image = rng.normal(100.0 + shift, 10.0, SHAPE + ((channels,) if channels else ())).astype(np.float32)
    label = np.zeros(SHAPE, np.uint8)
    label[2:5, 1:4, 1:3] = 1
    label[5:7, 3:5, 2:4] = 2
    io.save_nifti(image, affine, image_path)
    if label_path is not None:
        io.save_nifti(label, affine, label_path)
    return image, label


@pytest.fixture
def decathlon(tmp_path, rng):
    root = tmp_path / "Task05_Prostate"
    training, test = [], []
    for i in (0, 1, 2, 4, 6, 7):
        _save_pair(root / "imagesTr" / f"prostate_{i:02d}.nii.gz", root / "labelsTr" / f"prostate_{i:02d}.nii.gz", rng, channels=2)
        training.append({"image": f"./imagesTr/prostate_{i:02d}.nii.gz", "label": f"./labelsTr/prostate_{i:02d}.nii.gz"})
    for i in (3, 5):
        _save_pair(root / "imagesTs" / f"prostate_{i:02d}.nii.gz", None, rng, channels=2)
        test.append(f"./imagesTs/prostate_{i:02d}.nii.gz")
    # macOS resource-fork files ship inside the real Decathlon archives: they must be ignored.
    (root / "imagesTr" / "._prostate_00.nii.gz").write_bytes(b"\x00\x05\x16\x07")
    meta = {
        "name": "PROSTATE", "modality": {"0": "T2", "1": "ADC"},
        "labels": {"0": "background", "1": "PZ", "2": "TZ"},
        "numTraining": len(training), "numTest": len(test), "training": training, "test": test,
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_read_decathlon(decathlon):
    task = layouts.read_decathlon(decathlon)
    assert task.name == "PROSTATE"
    assert task.modalities == {0: "T2", 1: "ADC"} and task.labels == {0: "background", 1: "PZ", 2: "TZ"}
    assert [c.case_id for c in task.training] == ["prostate_00", "prostate_01", "prostate_02", "prostate_04", "prostate_06", "prostate_07"]
    assert all(c.label_path is not None and c.label_path.is_file() for c in task.training)
    assert [c.case_id for c in task.test] == ["prostate_03", "prostate_05"]
    assert all(c.label_path is None for c in task.test)


def test_load_decathlon_cases_picks_the_modality(decathlon):
    task = layouts.read_decathlon(decathlon)
    t2 = layouts.load_decathlon_cases(task.training[:2], modality="T2", modalities=task.modalities, normalize=None)
    adc = layouts.load_decathlon_cases(task.training[:2], modality=1, normalize=None)
    raw = io.load_nifti(task.training[0].image_path).array
    assert t2[0]["image"].shape == (4, 6, 8) and t2[0]["label"].shape == (4, 6, 8)  # (D, H, W)
    np.testing.assert_allclose(t2[0]["image"], np.transpose(raw[..., 0], (2, 1, 0)))
    np.testing.assert_allclose(adc[0]["image"], np.transpose(raw[..., 1], (2, 1, 0)))
    assert set(np.unique(t2[0]["label"])) == {0, 1, 2} and t2[0]["case_id"] == "prostate_00"
    unlabelled = layouts.load_decathlon_cases(task.test, modality=0)
    assert "label" not in unlabelled[0] and abs(unlabelled[0]["image"].mean()) < 1e-4  # z-scored
    ds = datasets.slice_dataset(t2, batch_size=4, shuffle=False)
    batch = next(iter(ds))
    assert batch["image"].shape == (4, 6, 8, 1) and batch["label"].shape == (4, 6, 8)
    with pytest.raises(ValueError, match="unknown modality 'DWI'"):
        layouts.load_decathlon_cases(task.training[:1], modality="DWI", modalities=task.modalities)
    with pytest.raises(DataError, match="modality 5 does not exist"):
        layouts.load_decathlon_cases(task.training[:1], modality=5)


def test_decathlon_splits_are_case_level_and_deterministic(decathlon):
    task = layouts.read_decathlon(decathlon)
    split = datasets.split_cases(task.training, val_fraction=0.2, test_fraction=0.2, seed=3)
    again = datasets.split_cases(layouts.read_decathlon(decathlon).training, val_fraction=0.2, test_fraction=0.2, seed=3)
    assert split == again
    ids = [c.case_id for part in split.values() for c in part]
    assert sorted(ids) == sorted(c.case_id for c in task.training)  # each case in exactly one set
    folds = [datasets.kfold_cases(task.training, k=3, fold=f, seed=0)["val"] for f in range(3)]
    assert sorted(c.case_id for fold in folds for c in fold) == sorted(c.case_id for c in task.training)


def test_decathlon_errors(decathlon, tmp_path):
    with pytest.raises(DataError, match="dataset.json.*not found"):
        layouts.read_decathlon(tmp_path)
    (decathlon / "labelsTr" / "prostate_04.nii.gz").unlink()
    with pytest.raises(DataError, match=r"labelsTr/prostate_04.nii.gz.*does not exist"):
        layouts.read_decathlon(decathlon)
    assert len(layouts.read_decathlon(decathlon, check_files=False).training) == 6
    (decathlon / "dataset.json").write_text('{"name": "x"}')
    with pytest.raises(DataError, match=r"missing keys \['labels', 'training'\]"):
        layouts.read_decathlon(decathlon)
    (decathlon / "dataset.json").write_text("{not json")
    with pytest.raises(DataError, match="invalid JSON"):
        layouts.read_decathlon(decathlon)


def test_folder_layouts(tmp_path, rng):
    for i in range(3):
        _save_pair(tmp_path / "flat" / f"case{i}_img.nii.gz", tmp_path / "flat" / f"case{i}_mask.nii.gz", rng)
        _save_pair(tmp_path / "images" / f"p{i}.nii.gz", tmp_path / "labels" / f"p{i}.nii.gz", rng)
    flat = datasets.find_cases(tmp_path / "flat")
    assert [c.case_id for c in flat] == ["case0", "case1", "case2"]
    paired = layouts.paired_folder_cases(tmp_path / "images", tmp_path / "labels")
    assert [c.case_id for c in paired] == ["p0", "p1", "p2"]
    assert paired[1].label_path == tmp_path / "labels" / "p1.nii.gz"
    volumes = datasets.load_cases(paired)
    assert volumes[0]["image"].shape == (4, 6, 8)
    (tmp_path / "labels" / "p2.nii.gz").unlink()
    with pytest.raises(DataError, match="p2.nii.gz: label file missing"):
        layouts.paired_folder_cases(tmp_path / "images", tmp_path / "labels")
    assert layouts.paired_folder_cases(tmp_path / "images", tmp_path / "labels", require_labels=False)[2].label_path is None
    with pytest.raises(DataError, match="no image files"):
        layouts.paired_folder_cases(tmp_path / "labels", pattern="*.png")


def test_csv_segmentation_cases(tmp_path, rng):
    for i in range(4):
        _save_pair(tmp_path / "data" / f"img{i}.nii.gz", tmp_path / "data" / f"seg{i}.nii.gz", rng)
    rows = "\n".join(f"patient{i},data/img{i}.nii.gz,data/seg{i}.nii.gz" for i in range(4))
    (tmp_path / "cases.csv").write_text("patient,image,mask\n" + rows + "\n")
    cases = layouts.csv_segmentation_cases(tmp_path / "cases.csv", label_column="mask", id_column="patient")
    assert [c.case_id for c in cases] == ["patient0", "patient1", "patient2", "patient3"]
    assert cases[2].image_path == tmp_path / "data" / "img2.nii.gz"
    assert len(datasets.load_cases(cases[:1])) == 1
    with pytest.raises(DataError, match=r"missing columns \['label'\].*patient"):
        layouts.csv_segmentation_cases(tmp_path / "cases.csv")
    (tmp_path / "bad.csv").write_text("image,label\ndata/img0.nii.gz,data/nothing.nii.gz\n")
    with pytest.raises(DataError, match=r"bad.csv, line 2: label file .*nothing.nii.gz not found"):
        layouts.csv_segmentation_cases(tmp_path / "bad.csv")


def _classification_folder(tmp_path, rng, n=12):
    names = ("benign", "malignant", "normal")
    lines = ["file,diagnosis,patient"]
    for i in range(n):
        image = rng.random((10, 9)).astype(np.float32) * 0.2 + 0.3 * (i % 3)
        formats.write_image(tmp_path / "png" / f"us{i:02d}.png", image)
        lines.append(f"png/us{i:02d}.png,{names[i % 3]},P{i:03d}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    return names


def test_csv_classification_cases_and_dataset(tmp_path, rng):
    names = _classification_folder(tmp_path, rng)
    cases, class_names = layouts.csv_classification_cases(tmp_path / "labels.csv", image_column="file", label_column="diagnosis", id_column="patient")
    assert class_names == names  # sorted class names
    assert [c.label for c in cases[:4]] == [0, 1, 2, 0] and cases[0].case_id == "P000"
    split = datasets.split_cases(cases, val_fraction=0.25, test_fraction=0.25, seed=0)
    assert sum(len(v) for v in split.values()) == 12
    assert split == datasets.split_cases(cases, val_fraction=0.25, test_fraction=0.25, seed=0)
    arrays = layouts.load_classification_cases(split["train"])
    assert arrays["image"].shape == (6, 10, 9, 1) and arrays["label"].dtype == np.int32
    ds = layouts.classification_dataset(split["train"], batch_size=4, shuffle=False)
    batch = next(iter(ds))
    assert batch["image"].shape == (4, 10, 9, 1) and batch["case_id"].shape == (4,)
    # Image i has brightness 0.1 + 0.3 * (i % 3) and class i % 3: labels travel with their images.
    means = batch["image"].numpy().mean(axis=(1, 2, 3))
    np.testing.assert_array_equal(np.rint((means - 0.1) / 0.3).astype(int), batch["label"].numpy())


def test_csv_classification_integer_and_given_classes(tmp_path, rng):
    formats.write_image(tmp_path / "a.png", np.zeros((4, 4)))
    formats.write_image(tmp_path / "b.png", np.ones((4, 4)))
    (tmp_path / "int.csv").write_text("image,label\na.png,0\nb.png,2\n")
    cases, names = layouts.csv_classification_cases(tmp_path / "int.csv")
    assert names == ("0", "1", "2") and [c.label for c in cases] == [0, 2]
    (tmp_path / "named.csv").write_text("image,label\na.png,cyst\nb.png,solid\n")
    cases, names = layouts.csv_classification_cases(tmp_path / "named.csv", class_names=("normal", "cyst", "solid"))
    assert [c.label for c in cases] == [1, 2]
    with pytest.raises(DataError, match=r"line 3: class 'solid' is not one of \['normal', 'cyst'\]"):
        layouts.csv_classification_cases(tmp_path / "named.csv", class_names=("normal", "cyst"))
    (tmp_path / "dup.csv").write_text("image,label\na.png,0\na.png,1\n")
    with pytest.raises(DataError, match=r"case ids \['a'\] appear more than once"):
        layouts.csv_classification_cases(tmp_path / "dup.csv")
    with pytest.raises(DataError, match="CSV file not found"):
        layouts.csv_classification_cases(tmp_path / "none.csv")
