"""Tests for training/multitask.py: multi-head and task-conditioned trainers."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from tests.training.mirrored_trainers import assert_same_as_one_device
from training import losses
from training.multitask import MultiTaskTrainer, TaskConditionedTrainer

TASKS = {"segmentation": losses.dice_ce_loss, "classification": losses.cross_entropy}


def _two_head_model(as_list=False):
    inp = keras.Input((8, 8, 1))
    h = layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    seg = layers.Conv2D(2, 1, activation="softmax")(h)
    cls = layers.Dense(2, activation="softmax")(layers.GlobalAveragePooling2D()(h))
    return keras.Model(inp, [seg, cls] if as_list else {"segmentation": seg, "classification": cls})


def _squares(n, rng):
    """Images with a bright square; segmentation = the square, class = its size (2 or 3 pixels)."""
    x = 0.2 * rng.normal(size=(n, 8, 8, 1))
    seg = np.zeros((n, 8, 8), "int32")
    y = rng.integers(0, 2, n)
    for i in range(n):
        a, b = rng.integers(0, 5, 2)
        s = 2 + y[i]
        x[i, a:a + s, b:b + s, 0] += 1.0
        seg[i, a:a + s, b:b + s] = 1
    return x.astype("float32"), seg, y.astype("int32")


def _expected_task_losses(model, x, seg, y):
    out = model(x)
    if isinstance(out, list):
        out = {"segmentation": out[0], "classification": out[1]}
    return (float(np.mean(losses.dice_ce_loss(seg, out["segmentation"]))),
            float(np.mean(losses.cross_entropy(y, out["classification"]))))


@pytest.mark.parametrize("as_list", [False, True])
def test_fixed_weights_total_is_the_weighted_sum(as_list, rng):
    model = _two_head_model(as_list)
    trainer = MultiTaskTrainer(model, TASKS, loss_weights={"segmentation": 2.0, "classification": 0.5})
    trainer.compile("adam")
    x, seg, y = _squares(6, rng)
    logs = trainer.evaluate({"image": x, "segmentation": seg, "classification": y}, verbose=0,
                            return_dict=True, batch_size=6)
    seg_loss, cls_loss = _expected_task_losses(model, x, seg, y)
    assert logs["segmentation_loss"] == pytest.approx(seg_loss, rel=1e-5)
    assert logs["classification_loss"] == pytest.approx(cls_loss, rel=1e-5)
    assert logs["loss"] == pytest.approx(2.0 * seg_loss + 0.5 * cls_loss, rel=1e-5)


def test_uncertainty_weighting_learns_log_variances(rng):
    model = _two_head_model()
    trainer = MultiTaskTrainer(model, TASKS, weighting="uncertainty")
    trainer.compile(keras.optimizers.SGD(0.1))
    x, seg, y = _squares(6, rng)
    batch = (x, {"segmentation": seg, "classification": y})
    seg_loss, cls_loss = _expected_task_losses(model, x, seg, y)
    logs = trainer.train_step(batch)
    # At s = 0 the loss is 0.5 * (L_seg + L_cls), and both weights exp(-s) are 1.
    assert float(logs["loss"]) == pytest.approx(0.5 * (seg_loss + cls_loss), rel=1e-5)
    assert float(logs["segmentation_weight"]) == pytest.approx(1.0)
    # d/ds (0.5 exp(-s) L + 0.5 s) = 0.5 (1 - L) at s = 0: one SGD step moves s by -0.1 * that.
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(trainer.log_variances), [-0.05 * (1 - seg_loss), -0.05 * (1 - cls_loss)], rtol=1e-4
    )
    assert any(v is trainer.log_variances for v in trainer.trainable_variables)


def test_task_and_output_mismatches_are_explained(rng):
    with pytest.raises(ValueError, match="non-empty dict"):
        MultiTaskTrainer(_two_head_model(), {})
    with pytest.raises(ValueError, match="weighting must be one of"):
        MultiTaskTrainer(_two_head_model(), TASKS, weighting="gradnorm")
    with pytest.raises(ValueError, match="not in task_losses"):
        MultiTaskTrainer(_two_head_model(), TASKS, loss_weights={"detection": 1.0})
    with pytest.raises(ValueError, match="are learned"):
        MultiTaskTrainer(_two_head_model(), TASKS, loss_weights={"segmentation": 1.0}, weighting="uncertainty")
    trainer = MultiTaskTrainer(_two_head_model(), {**TASKS, "age": "mse"})
    trainer.compile("adam")
    x, seg, y = _squares(2, rng)
    with pytest.raises(KeyError, match="no output for tasks \\['age'\\]"):
        trainer.train_step({"image": x, "segmentation": seg, "classification": y, "age": y})


def _conditioned_model():
    image, task = keras.Input((8, 8, 1)), keras.Input((2,))
    h = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3, padding="same", activation="relu")(image))
    return keras.Model([image, task], layers.Dense(2, activation="softmax")(layers.Concatenate()([h, task])))


def test_task_conditioned_logs_each_tasks_mean(rng):
    model = _conditioned_model()
    trainer = TaskConditionedTrainer(model, 2, losses.cross_entropy, task_weights=[1.0, 3.0])
    trainer.compile("adam")
    x = rng.normal(size=(5, 8, 8, 1)).astype("float32")
    task = np.array([0, 1, 1, 0, 1], "int32")
    label = np.array([1, 0, 1, 1, 0], "int32")
    logs = trainer.test_step({"image": x, "task": task, "label": label})
    per_sample = np.asarray(losses.cross_entropy(label, model([x, np.eye(2, dtype="float32")[task]])))
    assert float(logs["task0_loss"]) == pytest.approx(per_sample[task == 0].mean(), rel=1e-5)
    assert float(logs["task1_loss"]) == pytest.approx(per_sample[task == 1].mean(), rel=1e-5)
    assert float(logs["loss"]) == pytest.approx(np.mean(per_sample * np.where(task == 1, 3.0, 1.0)), rel=1e-5)
    with pytest.raises(ValueError, match="task_weights needs 2"):
        TaskConditionedTrainer(model, 2, "mse", task_weights=[1.0])


@pytest.mark.slow
@pytest.mark.parametrize("weighting", ["fixed", "uncertainty"])
def test_multitask_learns_both_tasks(weighting):
    rng = np.random.default_rng(0)
    x, seg, y = _squares(64, rng)
    trainer = MultiTaskTrainer(_two_head_model(), TASKS, weighting=weighting)
    trainer.compile(keras.optimizers.Adam(1e-2))
    data = tf.data.Dataset.from_tensor_slices({"image": x, "segmentation": seg, "classification": y}).batch(16)
    history = trainer.fit(data, epochs=30, verbose=0).history
    for task in TASKS:  # measured: segmentation 1.24 -> 0.01, classification 0.71 -> 0.08-0.11
        assert history[f"{task}_loss"][-1] < 0.3 * history[f"{task}_loss"][0]
    if weighting == "uncertainty":  # both losses fell below 1, so both learned weights rose above 1
        assert history["segmentation_weight"][-1] > 1.5 and history["classification_weight"][-1] > 1.5


@pytest.mark.slow
@pytest.mark.parametrize("case", ["multitask_fixed", "multitask_uncertainty", "task_conditioned"])
def test_mirrored_strategy_gives_the_one_device_losses(case):
    assert_same_as_one_device(case)
