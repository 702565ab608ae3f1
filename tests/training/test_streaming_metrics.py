"""Tests for training.streaming_metrics: the Keras DiceMetric (also reached as training.metrics.DiceMetric)."""

import keras
import numpy as np
import pytest

from tests.training.test_metrics import _blobs, _perturb
from training import metrics as M


def test_dice_metric_accumulates_over_batches(rng):
    labels = _blobs(rng, (4, 12, 12), num_labels=2, sigma=1.0)
    pred_labels = _perturb(labels, rng)
    probs = np.eye(3, dtype="float32")[pred_labels] * 0.8 + 0.1
    metric = M.DiceMetric(num_classes=3)
    for i in range(0, 4, 2):  # two batches of two
        metric.update_state(labels[i : i + 2], probs[i : i + 2])
    expected = [M.dice_score(pred_labels == c, labels == c) for c in range(3)]
    np.testing.assert_allclose(np.asarray(metric.per_class()), expected, rtol=1e-6)
    assert float(metric.result()) == pytest.approx(np.mean(expected[1:]), rel=1e-6)
    with_bg = M.DiceMetric(num_classes=3, include_background=True)
    with_bg.update_state(labels[..., None], probs)
    assert float(with_bg.result()) == pytest.approx(np.mean(expected), rel=1e-6)
    metric.reset_state()
    assert float(metric.result()) == 1.0  # nothing seen yet: empty-mask rule
    single = M.DiceMetric(num_classes=3, class_ids=[2], name="dice_lesion")
    single.update_state(np.eye(3)[labels], probs)
    assert float(single.result()) == pytest.approx(expected[2], rel=1e-6)
    with pytest.raises(ValueError, match="class_ids"):
        M.DiceMetric(num_classes=3, class_ids=[3])


def test_dice_metric_in_fit_and_serialisation(tmp_path, rng):
    images = rng.random((8, 8, 8, 1)).astype("float32")
    labels = (images[..., 0] > 0.5).astype("int32")
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 1, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=[M.DiceMetric(num_classes=2)])
    logs = model.evaluate(images, labels, batch_size=4, verbose=0, return_dict=True)
    pred = np.argmax(model.predict(images, verbose=0), axis=-1)
    assert logs["dice"] == pytest.approx(M.dice_score(pred == 1, labels == 1), abs=1e-5)
    restored = keras.metrics.deserialize(keras.metrics.serialize(M.DiceMetric(num_classes=4, class_ids=[1, 3])))
    assert isinstance(restored, M.DiceMetric) and restored.class_ids == [1, 3] and restored.num_classes == 4


def test_dice_metric_reads_labels_as_the_losses_do():
    """One-hot conversion is training.losses.to_one_hot; one sigmoid channel is thresholded at 0.5."""
    from training import losses

    soft = np.array([[[0.2], [0.7]]], "float32")  # (1, 2, 1): a soft foreground mask
    metric = M.DiceMetric(num_classes=1, include_background=True)
    metric.update_state(soft, np.array([[[0.9], [0.8]]], "float32"))
    assert float(metric.result()) == pytest.approx(2 * 1 / (1 + 2))
    with pytest.raises(ValueError, match="channels"):
        M.DiceMetric(num_classes=3).update_state(np.zeros((1, 2, 2, 2)), np.zeros((1, 2, 2, 3), "float32"))
    np.testing.assert_array_equal(np.asarray(losses.to_one_hot(np.array([[1, 0]]), 2, 3)), [[[0, 1], [1, 0]]])
