"""Tests for data_utils.synthetic.modalities: registered head slices in several contrasts."""

import time

import numpy as np
import pytest
from scipy import ndimage

from data_utils.synthetic import modalities
from data_utils.synthetic.modalities import make_modality_pairs

ALL = ("t1", "t2", "flair", "ct")


@pytest.fixture(scope="module")
def data():
    return make_modality_pairs(12, image_size=64, contrasts=ALL, seed=0, lesion_probability=0.5)


def _tissue_medians(data, contrast):
    """Median intensity of each tissue, away from its edges (eroded masks), over all slices."""
    medians = {}
    for tissue in range(7):
        inner = ndimage.binary_erosion(data["label"] == tissue, structure=np.ones((1, 3, 3)))
        if inner.any():
            medians[modalities.TISSUE_LABELS[tissue]] = float(np.median(data[contrast][..., 0][inner]))
    return medians


def test_shapes_dtypes_and_labels(data):
    for c in ALL:
        assert data[c].shape == (12, 64, 64, 1) and data[c].dtype == np.float32
        assert np.all(np.isfinite(data[c]))
    assert data["label"].shape == (12, 64, 64) and data["label"].dtype == np.int32
    assert data["contrasts"] == ALL
    assert set(np.unique(data["label"])) == set(modalities.TISSUE_LABELS)
    has_lesion = (data["label"] == 6).any(axis=(1, 2))
    assert 0 < has_lesion.sum() < 12


def test_each_contrast_has_its_tissue_order(data):
    t1, t2, flair, ct = (_tissue_medians(data, c) for c in ALL)
    assert t1["white_matter"] > t1["grey_matter"] > t1["csf"]  # T1: CSF dark, white matter bright
    assert t2["csf"] > t2["grey_matter"] > t2["white_matter"]  # T2: inverted
    assert flair["lesion"] > flair["white_matter"] + 0.3 and flair["csf"] < flair["white_matter"]
    assert abs(t1["lesion"] - t1["white_matter"]) < abs(flair["lesion"] - flair["white_matter"])
    assert ct["skull"] > 700 and ct["air"] < -900 and abs(ct["grey_matter"] - 40) < 15
    for name in ("t1", "t2", "flair"):
        medians = _tissue_medians(data, name)
        assert medians["skull"] < 0.4 * max(medians["white_matter"], medians["grey_matter"])  # bone is dark on MR


def test_contrasts_share_one_anatomy():
    # Every contrast is a rendering of the one tissue map: away from edges, the tissue label
    # explains almost all of each image's variance (and the same map serves all four contrasts).
    clean = make_modality_pairs(6, image_size=64, contrasts=ALL, seed=2, artefacts=False)
    inner = np.zeros_like(clean["label"], bool)
    for tissue in range(7):
        inner |= ndimage.binary_erosion(clean["label"] == tissue, structure=np.ones((1, 3, 3)))
    for c in ALL:
        values, tissues = clean[c][..., 0][inner], clean["label"][inner]
        means = np.array([values[tissues == t].mean() if np.any(tissues == t) else 0 for t in range(7)])
        explained = 1 - np.var(values - means[tissues]) / np.var(values)
        assert explained > 0.95, (c, explained)
    # A different anatomy does not fit this map inside the head.
    brain = inner & (clean["label"] >= 3)
    other = make_modality_pairs(6, image_size=64, contrasts=("t2",), seed=3, artefacts=False)["t2"][..., 0][brain]
    tissues = clean["label"][brain]
    means = np.array([other[tissues == t].mean() if np.any(tissues == t) else 0 for t in range(7)])
    assert 1 - np.var(other - means[tissues]) / np.var(other) < 0.6


def test_same_seed_same_images_whatever_contrasts_are_asked(data):
    again = make_modality_pairs(12, image_size=64, contrasts=("flair", "t1"), seed=0)
    np.testing.assert_array_equal(again["label"], data["label"])
    np.testing.assert_array_equal(again["t1"], data["t1"])
    np.testing.assert_array_equal(again["flair"], data["flair"])
    different = make_modality_pairs(2, image_size=64, contrasts=("t1",), seed=7)
    assert not np.allclose(different["t1"], data["t1"][:2])


def test_artefacts_off_gives_clean_piecewise_images():
    clean = make_modality_pairs(2, image_size=32, contrasts=("t1", "ct"), seed=0, artefacts=False)
    noisy = make_modality_pairs(2, image_size=32, contrasts=("t1", "ct"), seed=0, artefacts=True)
    air = ndimage.binary_erosion(clean["label"] == 0, structure=np.ones((1, 5, 5)))  # away from soft edges
    assert np.all(clean["ct"][..., 0][air] < -900) and np.abs(clean["t1"][..., 0][air]).max() < 0.02
    assert noisy["t1"][..., 0][air].std() > 0.005  # Rician noise fills the background


def test_argument_errors():
    with pytest.raises(ValueError, match="contrasts"):
        make_modality_pairs(2, contrasts=("pet",))
    with pytest.raises(ValueError, match="image_size"):
        make_modality_pairs(2, image_size=8)
    with pytest.raises(ValueError, match="lesion_probability"):
        make_modality_pairs(2, lesion_probability=2.0)


def test_tutorial_sized_dataset_is_fast():
    make_modality_pairs(2, image_size=32, seed=0)  # TensorFlow warm-up
    start = time.perf_counter()
    make_modality_pairs(256, image_size=64, contrasts=("t1", "t2"), seed=0)
    assert time.perf_counter() - start < 6.0  # about 1 s on 2 cores
