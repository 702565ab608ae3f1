"""Tests for data_utils.synthetic.pelvic: the synthetic pelvic MR segmentation dataset."""

import json

import nibabel as nib
import numpy as np
import pytest

from data_utils.synthetic import pelvic

# A coarse grid with the default field of view: fast, and the anatomy is all there.
SMALL_SHAPE = (12, 40, 40)
SMALL_SPACING = (8.0, 3.0, 3.0)


@pytest.fixture(scope="module")
def small_cases():
    return [pelvic.make_pelvic_case(seed, SMALL_SHAPE, SMALL_SPACING) for seed in range(12)]


def test_case_shapes_dtypes_and_labels(small_cases):
    case = small_cases[0]
    assert case["image"].shape == SMALL_SHAPE and case["image"].dtype == np.float32
    assert case["label"].shape == SMALL_SHAPE and np.issubdtype(case["label"].dtype, np.integer)
    assert np.all(np.isfinite(case["image"])) and case["image"].min() >= 0
    for c in small_cases:
        assert set(np.unique(c["label"])) == set(pelvic.PELVIC_LABELS)  # every structure present
    assert pelvic.PELVIC_LABELS == {0: "background", 1: "bladder", 2: "prostate", 3: "rectum"}


def test_same_seed_same_case_and_different_seeds_differ(small_cases):
    again = pelvic.make_pelvic_case(0, SMALL_SHAPE, SMALL_SPACING)
    np.testing.assert_array_equal(again["image"], small_cases[0]["image"])
    np.testing.assert_array_equal(again["label"], small_cases[0]["label"])
    assert not np.array_equal(small_cases[0]["label"], small_cases[1]["label"])
    volumes = [np.count_nonzero(c["label"] == 1) for c in small_cases]
    assert np.std(volumes) / np.mean(volumes) > 0.1  # bladder size varies between cases


def test_anatomical_positions(small_cases):
    # Axes are (z: inferior->superior, y: posterior->anterior, x).
    for c in small_cases:
        centroid = {k: np.argwhere(c["label"] == k).mean(axis=0) * SMALL_SPACING for k in (1, 2, 3)}
        assert centroid[1][0] > centroid[2][0] + 5  # bladder superior to prostate (mm)
        assert centroid[1][1] > centroid[3][1] + 10  # bladder anterior to rectum
        assert centroid[2][1] > centroid[3][1] + 10  # prostate anterior to rectum


def test_spacing_and_affine():
    case = pelvic.make_pelvic_case(3, (8, 32, 32), (2.5, 1.25, 1.5))
    assert case["spacing"] == (2.5, 1.25, 1.5)
    affine = case["affine"]
    np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), [2.5, 1.25, 1.5])
    # Axis d runs along world z (superior), h along y (anterior), w along x.
    assert affine[2, 0] > 0 and affine[1, 1] > 0 and affine[0, 2] > 0
    assert nib.aff2axcodes(affine) == ("S", "A", "R")


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="shape"):
        pelvic.make_pelvic_case(0, (8, 32))
    with pytest.raises(ValueError, match="spacing"):
        pelvic.make_pelvic_case(0, (8, 32, 32), (0.0, 1.0, 1.0))


def test_generate_writes_nifti_pairs_and_reuses_them(tmp_path):
    kwargs = dict(num_cases=3, seed=5, shape=(8, 24, 24), spacing=(12.0, 5.0, 5.0))
    paths = pelvic.generate_pelvic_dataset(tmp_path, **kwargs)
    assert [p.name for p in paths] == ["case000_img.nii.gz", "case001_img.nii.gz", "case002_img.nii.gz"]
    image = nib.load(paths[1])
    mask = nib.load(tmp_path / "case001_mask.nii.gz")
    np.testing.assert_allclose(image.header.get_zooms(), (12.0, 5.0, 5.0))
    np.testing.assert_allclose(image.affine, mask.affine)
    for index in range(3):  # written by two threads, each case exactly as made alone from its seed
        expected = pelvic.make_pelvic_case(pelvic.case_seed(5, index), (8, 24, 24), (12.0, 5.0, 5.0))
        np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / f"case00{index}_mask.nii.gz").dataobj),
                                      expected["label"])
        np.testing.assert_array_equal(np.asarray(nib.load(paths[index]).dataobj), expected["image"])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["args"]["num_cases"] == 3 and manifest["args"]["seed"] == 5

    # Same arguments: nothing is rewritten.
    stamp = paths[0].stat().st_mtime_ns
    assert pelvic.generate_pelvic_dataset(tmp_path, **kwargs) == paths
    assert paths[0].stat().st_mtime_ns == stamp
    # Different arguments: regenerated, and cases left over from the bigger dataset removed.
    new = pelvic.generate_pelvic_dataset(tmp_path, **{**kwargs, "num_cases": 2, "seed": 6})
    assert len(new) == 2 and not (tmp_path / "case002_img.nii.gz").exists()
    assert json.loads((tmp_path / "manifest.json").read_text())["args"]["seed"] == 6
    # A damaged file (size changed) is noticed and the dataset rebuilt.
    new[0].write_bytes(b"broken")
    pelvic.generate_pelvic_dataset(tmp_path, **{**kwargs, "num_cases": 2, "seed": 6})
    assert nib.load(new[0]).shape == (8, 24, 24)


def test_threshold_baseline_is_exact_on_separable_data(rng):
    # Classes with disjoint intensity ranges: an intensity classifier must be perfect here.
    label = rng.integers(0, 4, size=(6, 16, 16))
    cases = [{"image": label * 10.0 + rng.uniform(0, 1, label.shape), "label": label} for _ in range(3)]
    for method in ("interval", "histogram"):
        result = pelvic.threshold_baseline(cases[:2], cases[2:], method=method)
        assert result["mean_dice"] > 0.99


def test_threshold_baseline_cannot_solve_the_phantom(small_cases):
    # Learning is needed: the best per-voxel intensity classifier stays far from the U-Net's >= 0.85.
    scores = []
    for train, test in ((small_cases[:8], small_cases[8:]), (small_cases[4:], small_cases[:4])):
        for method in ("interval", "histogram"):
            result = pelvic.threshold_baseline(train, test, method=method)
            assert result["dice"].shape == (len(test), 3)
            scores.append(result["mean_dice"])
    assert max(scores) <= 0.5, scores  # measured 0.19-0.26 here, 0.2-0.33 at full resolution


def test_command_line(tmp_path, capsys):
    pelvic.main([str(tmp_path / "out"), "--num-cases", "2", "--shape", "6", "16", "16", "--spacing", "16", "7.5", "7.5"])
    assert "2 cases" in capsys.readouterr().out
    assert nib.load(tmp_path / "out" / "case001_mask.nii.gz").shape == (6, 16, 16)
