"""Tests for training.loop: the teaching step's numbers, errors, and the loop running fit-style features
(callbacks, validation, progress bar, steps_per_epoch) for plain models and custom train_step models."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from training import callbacks as cb
from training import loop


def _linear(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, use_bias=False)])


def test_supervised_step_matches_the_hand_computed_update(rng):
    model = _linear()
    w0 = keras.ops.convert_to_numpy(model.layers[0].kernel).copy()
    x = rng.normal(size=(4, 3)).astype("float32")
    y = rng.normal(size=(4, 1)).astype("float32")
    optimizer = keras.optimizers.SGD(0.1)
    tracker = keras.metrics.Mean()
    step = loop.supervised_step(model, keras.losses.MeanSquaredError(reduction=None), optimizer, tracker)
    logs = step({"image": x, "label": y})
    residual = x @ w0 - y
    np.testing.assert_allclose(float(logs["loss"]), np.mean(residual**2), rtol=1e-5)
    grad = 2.0 * x.T @ residual / len(x)  # d/dw of the mean squared error over the batch
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.layers[0].kernel), w0 - 0.1 * grad, rtol=1e-5)


def test_supervised_step_divides_by_the_global_batch(rng):
    model = _linear()
    w0 = keras.ops.convert_to_numpy(model.layers[0].kernel).copy()
    x = rng.normal(size=(4, 3)).astype("float32")
    y = np.zeros((4, 1), "float32")
    step = loop.supervised_step(model, keras.losses.MeanSquaredError(reduction=None), keras.optimizers.SGD(0.1),
                                keras.metrics.Mean(), global_batch_size=8)
    step((x, y))
    grad = 2.0 * x.T @ (x @ w0) / 8  # this replica's share of a batch of 8
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.layers[0].kernel), w0 - 0.1 * grad, rtol=1e-5)


def test_supervised_step_adds_the_weight_penalty(rng):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, use_bias=False,
                                                                     kernel_regularizer=keras.regularizers.L2(0.5))])
    w0 = keras.ops.convert_to_numpy(model.layers[0].kernel).copy()
    x = np.zeros((4, 3), "float32")  # zero inputs and targets: the data term has no gradient
    step = loop.supervised_step(model, keras.losses.MeanSquaredError(reduction=None), keras.optimizers.SGD(0.1),
                                keras.metrics.Mean())
    step((x, np.zeros((4, 1), "float32")))
    # d/dw of 0.5 * sum(w^2) is w, so one SGD step multiplies the kernel by 1 - 0.1.
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.layers[0].kernel), 0.9 * w0, rtol=1e-5)


def test_batches_without_image_and_label_are_rejected():
    step = loop.supervised_step(_linear(), keras.losses.MeanSquaredError(reduction=None), keras.optimizers.SGD(),
                                keras.metrics.Mean())
    with pytest.raises(KeyError, match="'image' and 'label'"):
        step({"x": np.zeros((1, 3), "float32")})
    with pytest.raises(TypeError, match="tuple"):
        step(np.zeros((1, 3), "float32"))


def test_train_argument_errors():
    ds = tf.data.Dataset.from_tensor_slices((np.zeros((4, 3), "float32"), np.zeros((4, 1), "float32"))).batch(2)
    with pytest.raises(ValueError, match="both loss_fn and optimizer"):
        loop.train(_linear(), ds, 1, loss_fn=keras.losses.MeanSquaredError(reduction=None))
    with pytest.raises(ValueError, match="compile it"):
        loop.train(_linear(), ds, 1)
    model = _linear()
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="steps_per_epoch"):
        loop.train(model, ds.repeat(), 1)
    with pytest.raises(ValueError, match="epochs"):
        loop.train(model, ds, -1)


def _regression(rng, n=32):
    x = rng.normal(size=(n, 3)).astype("float32")
    return x, (x @ np.array([[1.0], [-2.0], [0.5]], "float32")).astype("float32")


@pytest.mark.slow
def test_teaching_loop_learns_with_validation_progress_bar_and_callbacks(rng, tmp_path, capsys):
    x, y = _regression(rng)
    train_ds = tf.data.Dataset.from_tensor_slices({"image": x, "label": y}).batch(8)
    val_ds = tf.data.Dataset.from_tensor_slices({"image": x[:16], "label": y[:16]}).batch(8)
    model = _linear()
    csv_path = tmp_path / "history.csv"
    history = loop.train(model, train_ds, 6, loss_fn=keras.losses.MeanSquaredError(reduction=None),
                         optimizer=keras.optimizers.SGD(0.1), validation_data=val_ds,
                         callbacks=[cb.AtomicCSVLogger(str(csv_path))], verbose=1)
    loss, val_loss = history.history["loss"], history.history["val_loss"]
    assert len(loss) == len(val_loss) == 6
    assert loss[-1] < 0.2 * loss[0]
    prediction = keras.ops.convert_to_numpy(model(x[:16]))
    np.testing.assert_allclose(val_loss[-1], np.mean((prediction - y[:16]) ** 2), rtol=1e-4)
    assert cb.read_history_csv(str(csv_path))["epoch"] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    out = capsys.readouterr().out
    assert "Epoch 6/6" in out and "loss" in out


@pytest.mark.slow
def test_loop_runs_a_custom_train_step_and_keeps_the_stream_across_epochs(rng):
    class CountingTrainer(keras.Model):
        """A tiny custom trainer: its own train_step, its own tracker, dict batches."""

        def __init__(self):
            super().__init__()
            self.net = keras.layers.Dense(1)
            self.tracker = keras.metrics.Mean(name="mae")
            self.seen = keras.Variable(0.0, trainable=False, name="seen")

        def call(self, x):
            return self.net(x)

        @property
        def metrics(self):
            return [self.tracker]

        def train_step(self, data):
            with tf.GradientTape() as tape:
                error = tf.abs(self(data["image"]) - data["label"])
                loss = tf.reduce_mean(error)
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
            self.tracker.update_state(error)
            self.seen.assign_add(tf.reduce_sum(data["image"][:, 0]))  # which samples went through
            return {"mae": self.tracker.result()}

    x, y = _regression(rng, n=24)
    x[:, 0] = np.arange(24)  # sample ids
    ds = tf.data.Dataset.from_tensor_slices({"image": x, "label": y}).batch(4).repeat()
    keras.utils.set_random_seed(0)
    trainer = CountingTrainer()
    trainer(x[:1])
    trainer.compile(optimizer=keras.optimizers.SGD(0.001))
    history = loop.train(trainer, ds, 3, steps_per_epoch=2, verbose=0)
    assert list(history.history) == ["mae"] and len(history.history["mae"]) == 3
    # 3 epochs x 2 batches of 4 = the first 24 samples, each once: the stream was not restarted.
    assert float(trainer.seen) == float(np.sum(np.arange(24)))


@pytest.mark.slow
def test_compiled_model_accepts_dict_batches_and_matches_fit(rng):
    x, y = _regression(rng)
    dict_ds = tf.data.Dataset.from_tensor_slices({"image": x, "label": y}).batch(8)
    tuple_ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    runs = []
    for use_loop in (True, False):
        model = _linear()
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse", metrics=["mae"])
        if use_loop:
            history = loop.train(model, dict_ds, 3, validation_data=dict_ds, verbose=0)
        else:
            history = model.fit(tuple_ds, epochs=3, validation_data=tuple_ds, verbose=0, shuffle=False)
        runs.append((history.history, model.get_weights()))
    (h_loop, w_loop), (h_fit, w_fit) = runs
    assert sorted(h_loop) == sorted(h_fit) == ["loss", "mae", "val_loss", "val_mae"]
    for key in h_fit:
        np.testing.assert_allclose(h_loop[key], h_fit[key], rtol=1e-5, err_msg=key)
    np.testing.assert_allclose(w_loop[0], w_fit[0], rtol=1e-5)
