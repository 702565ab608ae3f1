"""Tests for data_utils.synthetic.mil: bags of patches for multiple-instance learning."""

import time

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from data_utils.synthetic.mil import make_mil_dataset


@pytest.fixture(scope="module")
def data():
    return make_mil_dataset(60, bag_size=12, patch_size=32, seed=0)


def test_shapes_dtypes(data):
    assert data["bags"].shape == (60, 12, 32, 32, 1) and data["bags"].dtype == np.float32
    assert data["bag_labels"].shape == (60,) and data["bag_labels"].dtype == np.int32
    assert data["instance_labels"].shape == (60, 12) and data["instance_labels"].dtype == np.int32
    assert data["lesion_masks"].shape == (60, 12, 32, 32)
    assert np.all(np.isfinite(data["bags"]))
    np.testing.assert_allclose(data["bags"].mean(axis=(1, 2, 3, 4)), 0.0, atol=1e-4)  # z-scored per bag


def test_bag_label_is_any_instance_label(data):
    np.testing.assert_array_equal(data["bag_labels"], data["instance_labels"].max(axis=1))
    assert data["bag_labels"].sum() == 30  # positive_fraction=0.5
    witnesses = data["instance_labels"].sum(axis=1)[data["bag_labels"] == 1]
    assert witnesses.min() >= 1 and witnesses.max() <= 3  # round(0.25 * 12)
    assert len(set(witnesses)) > 1  # the number of witnesses varies
    # A lesion mask exactly where the instance label says so.
    has_mask = data["lesion_masks"].reshape(60, 12, -1).max(axis=2)
    np.testing.assert_array_equal(has_mask, data["instance_labels"])


def test_lesions_are_detectable_but_not_trivially(data):
    patches = data["bags"][..., 0].reshape(-1, 32, 32)
    instance = data["instance_labels"].ravel()
    # A blob detector (Laplacian of Gaussian at the lesion scale) finds lesion patches ...
    blob = np.array([(-ndimage.gaussian_laplace(x, 3.0))[6:-6, 6:-6].max() for x in patches])
    assert roc_auc_score(instance, blob) > 0.75
    # ... and max-pooling it over a bag scores bags, the MIL assumption.
    assert roc_auc_score(data["bag_labels"], blob.reshape(60, 12).max(axis=1)) > 0.65
    # Negative bags contain bright look-alikes too: the brightest patch is not the answer.
    brightest = patches.reshape(len(patches), -1).max(axis=1)
    assert roc_auc_score(instance, brightest) < 0.97


def test_same_seed_same_bags_different_seed_differs():
    a = make_mil_dataset(4, bag_size=4, patch_size=16, seed=1)
    b = make_mil_dataset(4, bag_size=4, patch_size=16, seed=1)
    c = make_mil_dataset(4, bag_size=4, patch_size=16, seed=2)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.allclose(a["bags"], c["bags"])


def test_edge_fractions_and_errors():
    negative = make_mil_dataset(6, bag_size=4, patch_size=16, seed=0, positive_fraction=0.0)
    assert negative["instance_labels"].sum() == 0 and negative["bag_labels"].sum() == 0
    positive = make_mil_dataset(6, bag_size=4, patch_size=16, seed=0, positive_fraction=1.0, max_witness_fraction=1.0)
    assert positive["bag_labels"].all()
    with pytest.raises(ValueError, match="patch_size"):
        make_mil_dataset(2, patch_size=8)
    with pytest.raises(ValueError, match="positive_fraction"):
        make_mil_dataset(2, positive_fraction=1.5)
    with pytest.raises(ValueError, match="lesion_contrast"):
        make_mil_dataset(2, lesion_contrast=(1.0, 0.5))


def test_tutorial_sized_dataset_is_fast():
    start = time.perf_counter()
    make_mil_dataset(128, bag_size=16, patch_size=32, seed=0)
    assert time.perf_counter() - start < 6.0  # about 1 s on 2 cores
