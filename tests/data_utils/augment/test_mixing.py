"""Tests for data_utils.augment.mixing: mixup and cutmix."""

import numpy as np
import pytest
import tensorflow as tf

from data_utils import augment
from tests.data_utils.augment.helpers import blobs, volume


def test_mixup_mixes_one_hot_labels(rng):
    x = volume(rng, (4, 8, 8, 1))
    classes = np.array([0, 1, 2, 1])
    image, label = augment.mixup(x, classes, 3, num_classes=3)
    assert label.shape == (4, 3)
    np.testing.assert_allclose(label.numpy().sum(axis=1), 1.0, atol=1e-6)
    unmixed_x, unmixed_y = augment.mixup(x, classes, 3, num_classes=3, prob=0.0)
    np.testing.assert_allclose(unmixed_x.numpy(), x)
    np.testing.assert_allclose(unmixed_y.numpy(), np.eye(3)[classes])


def test_cutmix_pastes_label_maps_and_mixes_classes(rng):
    image, label = blobs((4, 16, 16))
    label[1] = 0  # partners differ
    out_x, out_y = augment.cutmix(image, label, 2)
    assert out_y.dtype == tf.int32 and set(np.unique(out_y.numpy())) <= {0, 1, 2}
    # Where the label was pasted, the image was pasted too.
    fg = out_y.numpy() > 0
    assert out_x.numpy()[..., 0][fg].min() > 5
    _, mixed = augment.cutmix(image, np.array([0, 1, 2, 0]), 2, num_classes=3)
    np.testing.assert_allclose(mixed.numpy().sum(axis=1), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="num_classes"):
        augment.cutmix(image, np.array([0, 1, 2, 0]), 2)
