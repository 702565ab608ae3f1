"""Inputs shared by the augmentation tests."""

import numpy as np


def volume(rng, shape=(2, 16, 16, 16, 1)):
    return rng.uniform(0.5, 1.5, size=shape).astype("float32")


def blobs(shape):
    """An image/label pair: two labelled boxes, the image bright exactly where the label is."""
    label = np.zeros(shape, "int32")
    inner = tuple(slice(n // 4, n // 2) for n in shape[1:])
    other = tuple(slice(n // 2 + 1, 3 * n // 4 + 1) for n in shape[1:])
    label[(slice(None), *inner)] = 1
    label[(slice(None), *other)] = 2
    image = (label > 0).astype("float32")[..., None] * 10.0 + 1.0
    return image, label

