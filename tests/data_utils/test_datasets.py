"""Tests for data_utils.datasets: finding cases, case-level splits, loading and tf.data pipelines."""

import numpy as np
import pytest
import tensorflow as tf

from data_utils import datasets, io
from data_utils.datasets import Case
from data_utils.io import DataError
from data_utils.synthetic import pelvic


def _fake_cases(n):
    return [Case(f"case{i:03d}", f"case{i:03d}_img.nii.gz", f"case{i:03d}_mask.nii.gz") for i in range(n)]


@pytest.fixture(scope="module")
def pelvic_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pelvic")
    pelvic.generate_pelvic_dataset(folder, num_cases=4, seed=1, shape=(6, 32, 32), spacing=(16.0, 3.75, 3.75))
    return folder


def test_find_cases(pelvic_dir):
    cases = datasets.find_cases(pelvic_dir)
    assert [c.case_id for c in cases] == ["case000", "case001", "case002", "case003"]
    assert cases[2].image_path == pelvic_dir / "case002_img.nii.gz"
    assert cases[2].label_path == pelvic_dir / "case002_mask.nii.gz"


def test_find_cases_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        datasets.find_cases(tmp_path / "missing")
    with pytest.raises(DataError, match="no image files"):
        datasets.find_cases(tmp_path)
    io.save_nifti(np.zeros((2, 2, 2), np.float32), np.eye(4), tmp_path / "p1_img.nii.gz")
    with pytest.raises(DataError, match=r"p1_mask\.nii\.gz: label file missing"):
        datasets.find_cases(tmp_path)
    assert datasets.find_cases(tmp_path, require_labels=False)[0].label_path is None


def test_split_is_by_case_deterministic_and_stable():
    cases = _fake_cases(40)
    split = datasets.split_cases(cases, val_fraction=0.2, test_fraction=0.1, seed=3)
    ids = {k: {c.case_id for c in v} for k, v in split.items()}
    assert len(ids["test"]) == 4 and len(ids["val"]) == 8 and len(ids["train"]) == 28
    assert ids["train"] | ids["val"] | ids["test"] == {c.case_id for c in cases}
    assert not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"]) and not (ids["train"] & ids["val"])
    assert datasets.split_cases(list(reversed(cases)), 0.2, 0.1, seed=3) == split  # order does not matter
    assert datasets.split_cases(cases, 0.2, 0.1, seed=4) != split
    # Adding cases moves few old cases between sets.
    bigger = datasets.split_cases(_fake_cases(44), 0.2, 0.1, seed=3)
    moved = sum(c.case_id not in {b.case_id for b in bigger[k]} for k in split for c in split[k])
    assert moved <= 4
    with pytest.raises(ValueError, match="val_fraction"):
        datasets.split_cases(cases, 0.6, 0.5)


def test_kfold_covers_every_case_once():
    cases = _fake_cases(11)
    folds = [datasets.kfold_cases(cases, k=3, fold=f, seed=0) for f in range(3)]
    val_ids = [c.case_id for f in folds for c in f["val"]]
    assert sorted(val_ids) == [c.case_id for c in cases]
    assert all(len(f["train"]) + len(f["val"]) == 11 for f in folds)
    assert {len(f["val"]) for f in folds} <= {3, 4}
    with pytest.raises(ValueError, match="fold"):
        datasets.kfold_cases(cases, k=3, fold=3)


def test_load_cases_matches_generator(pelvic_dir):
    cases = datasets.find_cases(pelvic_dir)
    volumes = datasets.load_cases(cases[:2])
    expected = pelvic.make_pelvic_case(pelvic.case_seed(1, 1), (6, 32, 32), (16.0, 3.75, 3.75))
    v = volumes[1]
    assert v["case_id"] == "case001" and v["image"].shape == (6, 32, 32) and v["image"].dtype == np.float32
    assert v["label"].dtype == np.int32
    np.testing.assert_array_equal(v["label"], expected["label"])
    assert abs(float(v["image"].mean())) < 1e-4 and abs(float(v["image"].std()) - 1) < 1e-3  # z-scored
    np.testing.assert_allclose(v["affine"], expected["affine"])
    assert v["spacing"] == pytest.approx((16.0, 3.75, 3.75))


def _volumes(n=3, shape=(4, 8, 8)):
    out = []
    for i in range(n):
        image = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + 1000 * i
        out.append({"image": image, "label": (image.astype(np.int64) % 3).astype(np.int32), "case_id": f"c{i}"})
    return out


def test_slice_dataset_elements_and_seeded_shuffle():
    volumes = _volumes()
    ds = datasets.slice_dataset(volumes, batch_size=5, shuffle=True, seed=7)
    batches = list(ds)
    assert [b["image"].shape[0] for b in batches] == [5, 5, 2]
    first = batches[0]
    assert first["image"].shape == (5, 8, 8, 1) and first["image"].dtype == tf.float32
    assert first["label"].shape == (5, 8, 8) and first["label"].dtype == tf.int32
    assert first["case_id"].dtype == tf.string
    # Each slice is an axial slice of the right volume, with its own label.
    for image, label, case_id in zip(first["image"].numpy(), first["label"].numpy(), first["case_id"].numpy()):
        v = volumes[int(case_id.decode()[1:])]
        d = int(np.argmin(np.abs(v["image"][:, 0, 0] - image[0, 0, 0])))
        np.testing.assert_array_equal(image[..., 0], v["image"][d])
        np.testing.assert_array_equal(label, v["label"][d])
    order = lambda d: np.concatenate([b["image"].numpy()[:, 0, 0, 0] for b in d])  # noqa: E731
    epoch1, epoch2 = order(ds), order(ds)
    assert not np.array_equal(epoch1, epoch2)  # reshuffled each epoch
    fresh = lambda: order(datasets.slice_dataset(volumes, 5, shuffle=True, seed=7))  # noqa: E731
    np.testing.assert_array_equal(fresh(), fresh())  # same seed, same order
    assert sorted(epoch1) == sorted(order(datasets.slice_dataset(volumes, 5, shuffle=False)))
    x, y = datasets.to_xy(first)
    assert x.shape == (5, 8, 8, 1) and y.shape == (5, 8, 8)


def test_slice_dataset_augment_gets_a_new_seed_per_batch():
    def augment(element, seed):
        noise = tf.random.stateless_uniform(tf.shape(element["image"]), seed=seed)
        return {**element, "image": element["image"] + noise}

    volumes = [{"image": np.zeros((8, 4, 4), np.float32), "label": np.zeros((8, 4, 4), np.int32)}]
    ds = datasets.slice_dataset(volumes, batch_size=4, shuffle=False, seed=0, augment=augment)
    b1, b2 = [b["image"].numpy() for b in ds]
    assert not np.allclose(b1, b2)
    again = [b["image"].numpy() for b in ds]
    assert not np.allclose(b1, again[0])  # a new draw every epoch too
