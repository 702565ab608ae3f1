"""Tests for training/semi_supervised.py: the mean-teacher trainer."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from tests.training.mirrored_trainers import assert_same_as_one_device
from training import losses
from training.semi_supervised import MeanTeacher, random_affine_matrices


def _classifier():
    return keras.Sequential([
        keras.Input((8, 8, 1)), layers.Conv2D(8, 3, activation="relu"), layers.GlobalMaxPooling2D(),
        layers.Dense(2, activation="softmax"),
    ])


def _blobs(n, rng):
    """Two classes: a bright 2x2 blob on the left (0) or the right (1) of a noisy 8x8 image."""
    y = rng.integers(0, 2, n)
    x = 0.3 * rng.normal(size=(n, 8, 8, 1))
    for i in range(n):
        c = 1 + 5 * y[i] + rng.integers(0, 2)
        x[i, 3:5, c:c + 2, 0] += 1.0
    return x.astype("float32"), y.astype("int32")


def test_teacher_starts_as_a_frozen_copy_of_the_student():
    student = _classifier()
    trainer = MeanTeacher(student)
    assert trainer.teacher is not student and not trainer.teacher.trainable
    for s, t in zip(student.get_weights(), trainer.teacher.get_weights()):
        np.testing.assert_array_equal(s, t)


def test_teacher_follows_the_student_by_ema(rng):
    trainer = MeanTeacher(_classifier(), ema_decay=0.99, noise_std=0.0)
    trainer.compile(keras.optimizers.SGD(0.5))
    before = trainer.teacher.get_weights()
    x, y = _blobs(4, rng)
    trainer.train_step({"image": x, "label": y, "unlabelled": x})
    # First step: decay min(0.99, 1 - 1/2) = 0.5, so the teacher sits halfway to the new student.
    for old, new_student, teacher in zip(before, trainer.student.get_weights(), trainer.teacher.get_weights()):
        np.testing.assert_allclose(teacher, 0.5 * old + 0.5 * new_student, rtol=1e-5, atol=1e-6)
    assert not np.allclose(trainer.student.get_weights()[0], before[0])


def test_consistency_weight_ramps_up(rng):
    trainer = MeanTeacher(_classifier(), consistency_weight=4.0, rampup_steps=10)
    trainer.compile(keras.optimizers.SGD(0.01))
    x, y = _blobs(4, rng)
    logs = trainer.train_step(((x, y), x))
    assert float(logs["consistency_weight"]) == pytest.approx(4.0 * np.exp(-5.0))
    assert set(logs) == {"loss", "supervised", "consistency", "consistency_weight"}
    assert float(logs["loss"]) == pytest.approx(
        float(logs["supervised"]) + float(logs["consistency_weight"]) * float(logs["consistency"]), rel=1e-5
    )


def test_random_affine_matrices_are_identity_for_zero_ranges_and_vary_per_sample():
    seed = tf.constant([1, 2], tf.int32)
    eye = random_affine_matrices(seed, 3, (8, 8), rotation=0.0, translation=0.0, scale=0.0)
    np.testing.assert_allclose(eye, np.broadcast_to(np.eye(3), (3, 3, 3)), atol=1e-6)
    m = np.asarray(random_affine_matrices(seed, 3, (6, 8, 8), rotation=0.2, translation=2.0, scale=0.1))
    assert m.shape == (3, 4, 4) and not np.allclose(m[0], m[1])


def test_random_affine_matrices_flip_the_chosen_axis_of_about_half_the_samples():
    seed = tf.constant([3, 4], tf.int32)
    m = np.asarray(random_affine_matrices(seed, 64, (8, 6), rotation=0.0, translation=0.0, scale=0.0,
                                          flip_axes=(1,)))
    flipped = m[:, 1, 1] < 0
    np.testing.assert_allclose(m[~flipped], np.broadcast_to(np.eye(3), (int((~flipped).sum()), 3, 3)), atol=1e-6)
    # A left-right flip as a sampling matrix: column x reads column (W - 1) - x; rows stay.
    np.testing.assert_allclose(m[flipped], np.broadcast_to([[1, 0, 0], [0, -1, 5], [0, 0, 1]],
                                                           (int(flipped.sum()), 3, 3)), atol=1e-6)
    assert 16 <= flipped.sum() <= 48  # probability 1/2 per sample


def test_supervised_loss_sees_the_students_perturbed_copy_and_weight_zero_ignores_unlabelled(rng):
    x, y = _blobs(4, rng)
    unperturbed = MeanTeacher(_classifier(), rotation=0.0, translation=0.0, scale=0.0, noise_std=0.0, seed=0)
    unperturbed.compile(keras.optimizers.SGD(0.0))
    expected = float(np.mean(losses.cross_entropy(y, unperturbed.student(x))))
    logs = unperturbed.train_step({"image": x, "label": y, "unlabelled": x})
    assert float(logs["supervised"]) == pytest.approx(expected, rel=1e-5)
    noisy = MeanTeacher(_classifier(), noise_std=1.0, seed=0)
    noisy.compile(keras.optimizers.SGD(0.0))
    assert float(noisy.train_step({"image": x, "label": y, "unlabelled": x})["supervised"]) != pytest.approx(expected, rel=1e-3)

    def student_after_one_step(unlabelled):
        keras.utils.set_random_seed(0)
        trainer = MeanTeacher(_classifier(), consistency_weight=0.0, flip_axes=(1,), seed=0)
        trainer.compile(keras.optimizers.SGD(0.5))
        trainer.train_step({"image": x, "label": y, "unlabelled": unlabelled})
        return trainer.student.get_weights()

    for a, b in zip(student_after_one_step(x), student_after_one_step(10.0 + 0 * x[:2])):
        np.testing.assert_array_equal(a, b)


def test_segmentation_consistency_is_zero_for_an_equivariant_student():
    # A 1x1 softmax "segmenter" commutes with spatial transforms: the teacher's moved prediction
    # equals the student's prediction on the moved image (up to interpolating before or after the
    # softmax), so with identical weights and no intensity noise the consistency is ~0 even under
    # random affines.
    inp = keras.Input((8, 8, 1))
    student = keras.Model(inp, layers.Conv2D(2, 1, activation="softmax")(inp))
    trainer = MeanTeacher(student, supervised_loss=losses.dice_ce_loss, rotation=0.3, translation=2.0,
                          noise_std=0.0, seed=1)
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 1)).astype("float32")
    aligned = float(tf.reduce_max(trainer._consistency(tf.constant(x))[0]))
    assert aligned < 5e-4  # measured 6e-5
    trainer.noise_std = 0.5
    assert float(tf.reduce_min(trainer._consistency(tf.constant(x))[0])) > 10 * aligned


def test_evaluate_reports_student_and_teacher(rng):
    trainer = MeanTeacher(_classifier())
    trainer.compile("adam")
    x, y = _blobs(8, rng)
    logs = trainer.evaluate({"image": x, "label": y}, verbose=0, return_dict=True, batch_size=4)
    assert set(logs) == {"loss", "teacher_loss"}
    assert logs["loss"] == pytest.approx(logs["teacher_loss"], rel=1e-5)  # same weights before training


def test_bad_arguments_are_named(rng):
    with pytest.raises(ValueError, match="ema_decay"):
        MeanTeacher(_classifier(), ema_decay=1.5)
    with pytest.raises(ValueError, match="rotation"):
        MeanTeacher(_classifier(), rotation=-1.0)
    trainer = MeanTeacher(_classifier())
    trainer.compile("adam")
    x, y = _blobs(2, rng)
    with pytest.raises(KeyError, match="unlabelled"):
        trainer.train_step({"image": x, "label": y})


@pytest.mark.slow
def test_mean_teacher_learns_from_eight_labels():
    rng = np.random.default_rng(0)
    (xl, yl), (xu, _), (xt, yt) = _blobs(8, rng), _blobs(128, rng), _blobs(200, rng)
    labelled = tf.data.Dataset.from_tensor_slices({"image": xl, "label": yl}).repeat().batch(8)
    unlabelled = tf.data.Dataset.from_tensor_slices(xu).shuffle(128, seed=0).repeat().batch(32)
    # The supervised loss sees the perturbed copies too: shifts of up to 1 pixel keep the two blob
    # positions (5 pixels apart) apart, while the default 2 could move either to the centre.
    trainer = MeanTeacher(_classifier(), consistency_weight=1.0, rampup_steps=50, ema_decay=0.95, rotation=0.0,
                          translation=1.0, scale=0.0, seed=0)
    trainer.compile(keras.optimizers.Adam(1e-2))
    history = trainer.fit(tf.data.Dataset.zip((labelled, unlabelled)), steps_per_epoch=25, epochs=6, verbose=0)
    assert history.history["supervised"][-1] < 0.5 * history.history["supervised"][0]
    accuracy = np.mean(trainer.teacher.predict(xt, verbose=0).argmax(1) == yt)
    assert accuracy > 0.75  # measured 0.90-0.94 over seeds 0-2 (data and initialisation)


@pytest.mark.slow
def test_mirrored_strategy_gives_the_one_device_losses():
    assert_same_as_one_device("mean_teacher")


def test_weights_checkpoint_restores_teacher_and_step(tmp_path, rng):
    trainer = MeanTeacher(_classifier())
    trainer.compile("adam")
    x, y = _blobs(4, rng)
    trainer.train_step({"image": x, "label": y, "unlabelled": x})
    trainer.save_weights(tmp_path / "mean_teacher.weights.h5")
    restored = MeanTeacher(_classifier())
    restored.compile("adam")
    restored.load_weights(tmp_path / "mean_teacher.weights.h5")
    assert int(restored.step) == 1  # the ramp-up continues where it stopped
    for a, b in zip(trainer.teacher.get_weights(), restored.teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
