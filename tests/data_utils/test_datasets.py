"""Tests for data_utils.datasets: finding cases, case-level splits, loading and tf.data pipelines."""

from pathlib import Path

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


def test_slice_dataset_with_an_augment_compose_keeps_labels_aligned():
    from data_utils import augment

    volumes = _volumes(2, (4, 8, 8))
    chain = augment.Compose([augment.Flip(prob=1.0, axes=(-1,))])
    plain = next(iter(datasets.slice_dataset(volumes, 8, shuffle=False)))
    flipped = next(iter(datasets.slice_dataset(volumes, 8, shuffle=False, augment=chain)))
    np.testing.assert_array_equal(flipped["image"].numpy(), plain["image"].numpy()[:, :, ::-1])
    np.testing.assert_array_equal(flipped["label"].numpy(), plain["label"].numpy()[:, :, ::-1])


def test_slice_dataset_min_foreground_and_slice_shape():
    volumes = _volumes(2, (4, 8, 8))
    volumes[0]["label"][:] = 0
    volumes[0]["label"][1, 2, 2] = 1
    ds = datasets.slice_dataset(volumes, 100, shuffle=False, min_foreground=1)
    batch = next(iter(ds))
    assert batch["image"].shape[0] == 1 + 4  # one labelled slice of volume 0, all of volume 1
    odd = volumes + [{"image": np.zeros((2, 6, 10), np.float32), "label": np.zeros((2, 6, 10), np.int32)}]
    with pytest.raises(ValueError, match="slice_shape"):
        datasets.slice_dataset(odd, 4)
    padded = next(iter(datasets.slice_dataset(odd, 100, shuffle=False, slice_shape=(8, 8))))
    assert padded["image"].shape == (10, 8, 8, 1)


def test_patch_dataset_shapes_foreground_ratio_and_padding():
    rng = np.random.default_rng(0)
    label = np.zeros((10, 40, 40), np.int32)
    label[4:6, 30:34, 30:34] = 2  # a small structure: uniform sampling would rarely hit it
    volumes = [
        {"image": rng.normal(size=label.shape).astype(np.float32), "label": label, "case_id": "big"},
        {"image": np.ones((3, 5, 6), np.float32), "label": np.ones((3, 5, 6), np.int32), "case_id": "tiny"},
    ]
    ds = datasets.patch_dataset(volumes, (4, 8, 8), batch_size=10, seed=3, foreground_ratio=1.0, patches_per_volume=20)
    batches = list(ds)
    assert len(batches) == 4
    b = batches[0]
    assert b["image"].shape == (10, 4, 8, 8, 1) and b["label"].shape == (10, 4, 8, 8)
    assert b["image"].dtype == tf.float32 and b["label"].dtype == tf.int32
    labels = np.concatenate([x["label"].numpy() for x in batches])
    ids = np.concatenate([x["case_id"].numpy() for x in batches])
    assert np.all(labels[ids == b"big"].reshape(int(np.sum(ids == b"big")), -1).max(axis=1) == 2)
    # The tiny volume is padded with background label 0 and its minimum intensity.
    tiny = [x for x, i in zip(np.concatenate([x["image"].numpy() for x in batches]), ids) if i == b"tiny"]
    assert tiny and set(np.unique(labels[ids == b"tiny"])) == {0, 1}
    assert all(np.all(t == 1.0) for t in tiny)
    # Seeded: same seed same patches; each epoch new patches.
    again = datasets.patch_dataset(volumes, (4, 8, 8), batch_size=10, seed=3, foreground_ratio=1.0, patches_per_volume=20)
    np.testing.assert_array_equal(next(iter(again))["image"].numpy(), b["image"].numpy())
    assert not np.array_equal(next(iter(ds))["image"].numpy(), b["image"].numpy())
    # Uniform sampling rarely hits the small structure.
    uniform = datasets.patch_dataset(volumes[:1], (4, 8, 8), batch_size=50, seed=3, foreground_ratio=0.0, patches_per_volume=50)
    hits = (next(iter(uniform))["label"].numpy().reshape(50, -1).max(axis=1) > 0).mean()
    assert hits < 0.5
    with pytest.raises(ValueError, match="foreground_ratio"):
        datasets.patch_dataset(volumes, (4, 8, 8), 2, foreground_ratio=1.5)


def test_validation_patches_are_the_same_every_epoch_and_training_patches_are_not():
    volumes = _volumes(2, (6, 12, 12))

    def epochs(ds, n=2):
        return [np.concatenate([b["image"].numpy() for b in ds]) for _ in range(n)]

    kwargs = dict(batch_size=4, seed=5, patches_per_volume=4)
    val = datasets.patch_dataset(volumes, (4, 8, 8), new_patches_each_epoch=False, **kwargs)
    first, second = epochs(val)
    np.testing.assert_array_equal(first, second)
    train_first, train_second = epochs(datasets.patch_dataset(volumes, (4, 8, 8), **kwargs))
    again = epochs(datasets.patch_dataset(volumes, (4, 8, 8), **kwargs), 1)[0]
    np.testing.assert_array_equal(train_first, again)  # seeded: a new pipeline repeats the run
    assert not np.array_equal(train_first, train_second)
    # repeat=True: every repetition is a new epoch (training) or the same one (validation).
    steps = 2  # batches per epoch
    repeated = [b["image"].numpy() for b in datasets.patch_dataset(volumes, (4, 8, 8), repeat=True, **kwargs).take(2 * steps)]
    assert not np.array_equal(np.concatenate(repeated[:steps]), np.concatenate(repeated[steps:]))
    fixed = [b["image"].numpy() for b in datasets.patch_dataset(
        volumes, (4, 8, 8), repeat=True, new_patches_each_epoch=False, **kwargs).take(2 * steps)]
    np.testing.assert_array_equal(np.concatenate(fixed[:steps]), np.concatenate(fixed[steps:]))


def test_volume_dataset():
    volumes = _volumes(3, (4, 8, 8))
    for v in volumes:
        v["spacing"] = (3.0, 1.5, 1.5)
    batches = list(datasets.volume_dataset(volumes, batch_size=2))
    assert batches[0]["image"].shape == (2, 4, 8, 8, 1) and batches[1]["label"].shape == (1, 4, 8, 8)
    np.testing.assert_allclose(batches[0]["spacing"].numpy(), [[3.0, 1.5, 1.5]] * 2)
    np.testing.assert_array_equal(batches[0]["image"].numpy()[1, ..., 0], volumes[1]["image"])
    assert [c.decode() for c in batches[0]["case_id"].numpy()] == ["c0", "c1"]
    unlabelled = [{"image": v["image"], "case_id": v["case_id"]} for v in volumes]
    assert "label" not in next(iter(datasets.volume_dataset(unlabelled)))
    mixed = volumes + [{"image": np.zeros((2, 3, 3), np.float32), "label": np.zeros((2, 3, 3), np.int32)}]
    with pytest.raises(ValueError, match="batch_size=1"):
        datasets.volume_dataset(mixed, batch_size=2)
    assert len(list(datasets.volume_dataset(mixed, batch_size=1))) == 4


def test_kit_pipelines_run_without_autotuning_and_keep_their_elements():
    """Every kit pipeline ends with ``fixed_parallelism``: no autotuning thread, same elements."""
    volumes = _volumes(3, (4, 8, 8))
    pipelines = {
        "slices": datasets.slice_dataset(volumes, 4, seed=1),
        "patches": datasets.patch_dataset(volumes, (2, 4, 4), 2, seed=1, patches_per_volume=2),
        "volumes": datasets.volume_dataset(volumes),
        "mapped afterwards": datasets.slice_dataset(volumes, 4, seed=1).map(datasets.to_xy),
    }
    for name, ds in pipelines.items():
        assert ds.options().autotune.enabled is False, name
    autotuned = datasets.slice_dataset(volumes, 4, seed=1).with_options(_autotune_on())
    assert autotuned.options().autotune.enabled is True
    for a, b in zip(pipelines["slices"], autotuned):
        np.testing.assert_array_equal(a["image"].numpy(), b["image"].numpy())
        np.testing.assert_array_equal(a["label"].numpy(), b["label"].numpy())


def test_fixed_parallelism_still_runs_one_map_call_per_core(tmp_path):
    """``AUTOTUNE`` without autotuning means one parallel call per core, not one call at a time.

    In a fresh process: the probe is a stateful ``py_function``, which ``tf.data`` runs one call at
    a time once another test has turned on op determinism (``training.reproducibility.set_seed``).
    """
    import os
    import subprocess
    import sys

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if cores < 2:
        pytest.skip("needs 2 cores")
    script = tmp_path / "probe.py"
    script.write_text(
        "import data_utils  # the kit's TensorFlow settings first\n"
        "import threading, time\n"
        "import tensorflow as tf\n"
        "from data_utils import datasets\n"
        "running, peak, lock = [0], [0], threading.Lock()\n"
        "def slow(x):\n"
        "    with lock:\n"
        "        running[0] += 1; peak[0] = max(peak[0], running[0])\n"
        "    time.sleep(0.05)\n"
        "    with lock:\n"
        "        running[0] -= 1\n"
        "    return x\n"
        "ds = tf.data.Dataset.range(12).map(lambda x: tf.py_function(slow, [x], tf.int64), num_parallel_calls=tf.data.AUTOTUNE)\n"
        "ds = datasets.fixed_parallelism(ds)\n"
        "print(ds.options().autotune.enabled, sorted(int(v) for v in ds) == list(range(12)), peak[0])\n"
    )
    root = str(Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": root}, check=True)
    enabled, complete, peak = out.stdout.split()
    assert enabled == "False" and complete == "True"
    assert int(peak) >= 2


def _autotune_on() -> tf.data.Options:
    options = tf.data.Options()
    options.autotune.enabled = True
    return options


def test_load_cases_reorients_any_orientation_to_the_same_layout(tmp_path):
    case = pelvic.make_pelvic_case(2, (6, 16, 20), (16.0, 7.5, 6.0))
    # The same data stored flipped left-right (voxel w' = W-1-w), and also as canonical (x, y, z).
    flipped = case["affine"].copy()
    flipped[:, 2] *= -1
    flipped[:3, 3] = (case["affine"] @ np.array([0, 0, 19, 1]))[:3]
    image = io.Volume(case["image"][:, :, ::-1].copy(), flipped, (16.0, 7.5, 6.0))
    label = io.Volume(case["label"][:, :, ::-1].copy(), flipped, (16.0, 7.5, 6.0))
    io.save_nifti(io.to_canonical(image).array, io.to_canonical(image).affine, tmp_path / "a_img.nii")
    io.save_nifti(io.to_canonical(label).array, io.to_canonical(label).affine, tmp_path / "a_mask.nii")
    io.save_nifti(image.array, flipped, tmp_path / "b_img.nii.gz")
    io.save_nifti(label.array, flipped, tmp_path / "b_mask.nii.gz")
    cases = datasets.find_cases(tmp_path)
    assert [c.image_path.name for c in cases] == ["a_img.nii", "b_img.nii.gz"]
    for v in datasets.load_cases(cases, normalize=None):
        np.testing.assert_array_equal(v["label"], case["label"])
        np.testing.assert_allclose(v["image"], case["image"])
        np.testing.assert_allclose(v["affine"], case["affine"], atol=1e-6)


def test_load_cases_unlabelled_and_nonzero_normalisation(tmp_path):
    image = np.zeros((4, 6, 6), np.float32)
    image[1:3, 2:5, 2:5] = np.arange(18, dtype=np.float32).reshape(2, 3, 3) + 10
    io.save_nifti(image, np.eye(4), tmp_path / "u_img.nii.gz")
    cases = datasets.find_cases(tmp_path, require_labels=False)
    v = datasets.load_cases(cases, normalize="zscore_nonzero", canonical=False)[0]
    assert "label" not in v
    inside = v["image"][v["image"] != 0]
    assert inside.size == 18 and abs(inside.mean()) < 1e-5 and abs(inside.std() - 1) < 1e-4
    with pytest.raises(ValueError, match="normalize"):
        datasets.load_cases(cases, normalize="minmax")


def test_load_cases_checks_label_range_and_reports_the_files_shape(tmp_path):
    from data_utils.datasets import Case, load_cases

    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    label = np.zeros((6, 5, 4), np.int32)
    label[2, 2, 2] = 5
    io.save_nifti(np.ones((6, 5, 4), np.float32), affine, tmp_path / "a_img.nii.gz")
    io.save_nifti(label, affine, tmp_path / "a_mask.nii.gz")
    case = Case("a", tmp_path / "a_img.nii.gz", tmp_path / "a_mask.nii.gz")
    with pytest.raises(DataError, match=r"a_mask\.nii\.gz: label values \[5\] are outside 0\.\.3"):
        load_cases([case], num_classes=4)
    assert load_cases([case], num_classes=6)[0]["label"].max() == 5
    # A 4D file: the message gives the shape as stored, not after reorientation.
    swapped = np.array([[0, 1.5, 0, 0], [1.5, 0, 0, 0], [0, 0, 3.0, 0], [0, 0, 0, 1.0]])  # stored (y, x, z)
    io.save_nifti(np.ones((6, 5, 4, 2), np.float32), swapped, tmp_path / "b_img.nii.gz")
    with pytest.raises(DataError, match=r"b_img\.nii\.gz: expected a 3D volume, got shape \(6, 5, 4, 2\)"):
        load_cases([Case("b", tmp_path / "b_img.nii.gz")])
