"""Streaming Keras metrics for ``compile(metrics=[...])``: Dice accumulated over a whole epoch.

Kept apart from :mod:`training.metrics` (NumPy evaluation of finished predictions) because importing
Keras loads TensorFlow, seconds of start-up that the evaluation code, used by the marking in
processes of its own, does not need. ``training.metrics.DiceMetric`` is this class.
"""

from __future__ import annotations

import keras
from keras import ops

from training.losses.core import to_one_hot


@keras.saving.register_keras_serializable(package="medkit")
class DiceMetric(keras.metrics.Metric):
    """Hard Dice over a whole epoch, per class and averaged, for ``compile(metrics=[...])``.

    Predictions are turned into labels (arg-max; > 0.5 for one sigmoid channel) and the intersections
    and volumes of every class are summed over all batches, so the result is the Dice of the epoch's
    voxels pooled together (not a mean of per-batch values, which would depend on the batch size).
    A class absent from both truth and prediction scores 1 (the empty-mask rule).

    Args:
        num_classes: ``K``, channels of the prediction.
        class_ids: classes to average (default: 1..K-1, or 0..K-1 with ``include_background``).
        include_background: include class 0 when ``class_ids`` is not given.
        name: metric name in logs (``val_<name>`` for validation).

    ``update_state(y_true, y_pred, sample_weight=None)``: ``y_true`` labels ``(B, *spatial)`` /
    ``(B, *spatial, 1)`` or one-hot; ``y_pred`` probabilities ``(B, *spatial, K)``; ``sample_weight``
    ``(B,)`` weights whole samples. ``result()`` is the mean Dice; ``per_class()`` the ``(K,)`` vector.
    """

    def __init__(self, num_classes: int, class_ids=None, include_background: bool = False,
                 name: str = "dice", dtype=None, **kwargs):
        super().__init__(name=name, dtype=dtype, **kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1; got {num_classes}")
        self.num_classes = int(num_classes)
        self.include_background = bool(include_background)
        if class_ids is None:
            first = 0 if (include_background or num_classes == 1) else 1
            class_ids = list(range(first, num_classes))
        class_ids = [int(c) for c in class_ids]
        if not class_ids or any(c < 0 or c >= num_classes for c in class_ids):
            raise ValueError(f"class_ids must be non-empty and within 0..{num_classes - 1}; got {class_ids}")
        self.class_ids = class_ids
        self.intersection = self.add_variable(shape=(num_classes,), initializer="zeros", name="intersection")
        self.volume = self.add_variable(shape=(num_classes,), initializer="zeros", name="volume")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.cast(y_pred, "float32")
        rank = len(y_pred.shape)
        if self.num_classes == 1:
            pred = ops.cast(y_pred > 0.5, "float32")
        else:
            pred = ops.one_hot(ops.argmax(y_pred, axis=-1), self.num_classes, dtype="float32")
        truth = to_one_hot(y_true, self.num_classes, rank)
        if self.num_classes == 1:
            truth = ops.cast(truth > 0.5, "float32")  # hard Dice: a soft mask counts where it is > 0.5
        if sample_weight is not None:
            weight = ops.reshape(ops.cast(sample_weight, "float32"), (-1,) + (1,) * (rank - 1))
            pred, truth = pred * weight, truth * weight
        axes = tuple(range(rank - 1))
        self.intersection.assign_add(ops.sum(pred * truth, axis=axes))
        self.volume.assign_add(ops.sum(pred, axis=axes) + ops.sum(truth, axis=axes))

    def per_class(self):
        """Dice of every class so far, ``(K,)``; 1 for classes never seen in truth or prediction."""
        safe = ops.where(self.volume > 0, self.volume, 1.0)
        return ops.where(self.volume > 0, 2.0 * self.intersection / safe, 1.0)

    def result(self):
        return ops.mean(ops.take(self.per_class(), self.class_ids))

    def reset_state(self):
        self.intersection.assign(ops.zeros_like(self.intersection))
        self.volume.assign(ops.zeros_like(self.volume))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "class_ids": self.class_ids,
                "include_background": self.include_background}
