"""Tests for data_utils.synthetic.ultrasound: B-mode ultrasound-like classification images."""

import time

import numpy as np
import pytest
from scipy import ndimage

from data_utils.synthetic import ultrasound
from data_utils.synthetic.ultrasound import make_ultrasound_dataset


@pytest.fixture(scope="module")
def dataset():
    return make_ultrasound_dataset(160, image_size=48, seed=3)


def test_shapes_dtypes_range_and_balanced_labels(dataset):
    images, labels, names = dataset
    assert images.shape == (160, 48, 48, 1) and images.dtype == np.float32
    assert labels.shape == (160,) and labels.dtype == np.int32
    assert names == ultrasound.CLASS_NAMES == ("normal", "cyst", "solid_mass", "calcification")
    assert images.min() >= 0.0 and images.max() <= 1.0 and np.all(np.isfinite(images))
    np.testing.assert_array_equal(np.bincount(labels), [40, 40, 40, 40])
    assert not np.array_equal(labels[:40], np.sort(labels[:40]))  # shuffled, not in class blocks


def test_fan_mask_and_linear_probe(dataset):
    images = dataset[0]
    assert np.all(images[:, :14, 0] == 0) and np.all(images[:, :14, -1] == 0)  # the fan's top corners are empty
    assert np.all(images[:, 24, 24] >= 0) and images[:, 20:, 20:28].mean() > 0.2
    linear, labels, names = make_ultrasound_dataset(8, image_size=32, num_classes=2, seed=0, sector=False)
    assert linear.shape == (8, 32, 32, 1) and set(labels) == {0, 1} and names == ("normal", "cyst")
    assert np.all(linear[:, 5:, 0].mean(axis=1) > 0.05)  # a linear probe fills the rectangle


def test_same_seed_same_images_different_seed_differs():
    a = make_ultrasound_dataset(8, image_size=32, seed=5)
    b = make_ultrasound_dataset(8, image_size=32, seed=5)
    c = make_ultrasound_dataset(8, image_size=32, seed=6)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.allclose(a[0], c[0])


def test_speckle_zero_is_smoother():
    smooth, _, _ = make_ultrasound_dataset(8, image_size=48, seed=1, speckle=0.0, sector=False)
    grainy, _, _ = make_ultrasound_dataset(8, image_size=48, seed=1, speckle=0.8, sector=False)
    roughness = lambda x: np.abs(np.diff(x[:, 20:, :, 0], axis=2)).mean()  # noqa: E731
    assert roughness(grainy) > 2 * roughness(smooth)


def test_classes_differ_in_the_expected_way(dataset):
    images, labels, _ = dataset
    deep = ndimage.gaussian_filter(images[..., 0], (0, 1.5, 1.5))[:, 18:, 8:-8]  # below the fascia
    anechoic = (deep < 0.15).mean(axis=(1, 2))
    intermediate = ((deep > 0.15) & (deep < 0.45)).mean(axis=(1, 2))
    brightest = ndimage.gaussian_filter(images[..., 0], (0, 1, 1))[:, 18:].max(axis=(1, 2))

    def separated(feature, high, low):
        a, b = feature[labels == high], feature[labels == low]
        standard_error = np.sqrt(a.var() / len(a) + b.var() / len(b)) + 1e-9
        return (a.mean() - b.mean()) / standard_error

    assert separated(anechoic, 1, 0) > 4  # cysts are black inside
    assert separated(intermediate, 2, 0) > 4 and separated(intermediate, 2, 1) > 4  # masses: hypoechoic
    assert separated(brightest, 3, 0) > 3  # calcifications: the brightest echo
    assert separated(anechoic, 3, 0) > 3  # ... with a dark shadow below


def test_argument_errors():
    with pytest.raises(ValueError, match="num_classes"):
        make_ultrasound_dataset(4, num_classes=5)
    with pytest.raises(ValueError, match="image_size"):
        make_ultrasound_dataset(4, image_size=8)
    with pytest.raises(ValueError, match="speckle"):
        make_ultrasound_dataset(4, speckle=-1)


def test_tutorial_sized_dataset_is_fast():
    make_ultrasound_dataset(4, image_size=32, seed=0)  # TensorFlow warm-up
    start = time.perf_counter()
    make_ultrasound_dataset(256, image_size=64, seed=0)
    assert time.perf_counter() - start < 6.0  # about 0.7 s on 2 cores


def _features(images):
    """Six hand-made features: fractions of dark pixels at four levels, the brightest echo, spread."""
    deep = ndimage.gaussian_filter(images[..., 0], (0, 1.5, 1.5))[:, 18:, 8:-8]
    columns = [(deep < level).mean(axis=(1, 2)) for level in (0.1, 0.2, 0.3, 0.45)]
    columns.append(ndimage.gaussian_filter(images[..., 0], (0, 1, 1))[:, 18:].max(axis=(1, 2)))
    columns.append(deep.std(axis=(1, 2)))
    return np.stack(columns, axis=1)


def test_a_small_model_separates_the_classes(dataset):
    from sklearn.linear_model import LogisticRegression

    train_x, train_y, _ = make_ultrasound_dataset(240, image_size=48, seed=0)
    model = LogisticRegression(C=100, max_iter=5000).fit(_features(train_x), train_y)
    accuracy = model.score(_features(dataset[0]), dataset[1])  # held out: a different seed
    assert accuracy > 0.6, accuracy  # chance is 0.25; about 0.77 over several seeds
