"""Fixtures shared by the loss tests."""

import numpy as np
import pytest

from tests.training.losses.helpers import softmax


@pytest.fixture
def seg_batch(rng):
    """Labels (2, 8, 8) with 3 classes and a softmax prediction that is right more often than not."""
    labels = rng.integers(0, 3, size=(2, 8, 8))
    logits = rng.normal(size=(2, 8, 8, 3)) + 2.0 * np.eye(3)[labels]
    return labels, logits.astype("float32"), softmax(logits)
