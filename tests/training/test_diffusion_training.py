"""Tests for training/diffusion_training.py: the DDPM trainer with EMA weights."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from models import diffusion
from tests.training.mirrored_trainers import assert_same_as_one_device
from training.diffusion_training import DiffusionTrainer


def _tiny_net(timesteps=10):
    x_t, t = keras.Input((8, 8, 1)), keras.Input((), dtype="int32")
    t_embedding = layers.Reshape((1, 1, 4))(layers.Embedding(timesteps, 4)(t))
    h = layers.Conv2D(4, 3, padding="same")(x_t) + t_embedding
    return keras.Model([x_t, t], layers.Conv2D(1, 3, padding="same")(keras.activations.tanh(h)))


def test_loss_is_the_noise_prediction_mse(rng):
    net = _tiny_net()
    trainer = DiffusionTrainer(net, schedule="linear", timesteps=10)
    trainer.compile(keras.optimizers.SGD(0.0))
    x0 = np.tanh(rng.normal(size=(4, 8, 8, 1))).astype("float32")
    noise = rng.normal(size=x0.shape).astype("float32")
    t = np.array([0, 3, 6, 9], "int32")
    logs = trainer.train_step({"image": x0, "noise": noise, "timestep": t})
    x_t = diffusion.q_sample(trainer.schedule, x0, t, noise)
    expected = np.mean((np.asarray(net([x_t, tf.constant(t)])) - noise) ** 2)
    assert float(logs["loss"]) == pytest.approx(expected, rel=1e-5)


def test_ema_network_follows_the_trained_network(rng):
    trainer = DiffusionTrainer(_tiny_net(), timesteps=10, ema_decay=0.75, seed=0)
    trainer.compile(keras.optimizers.SGD(0.5))
    before = trainer.ema_network.get_weights()
    trainer.train_step(np.tanh(rng.normal(size=(4, 8, 8, 1))).astype("float32"))
    for old, new, ema in zip(before, trainer.network.get_weights(), trainer.ema_network.get_weights()):
        np.testing.assert_allclose(ema, 0.75 * old + 0.25 * new, rtol=1e-5, atol=1e-6)
    assert not trainer.ema_network.trainable


def test_sample_shapes_and_determinism():
    trainer = DiffusionTrainer(_tiny_net(), timesteps=10)
    a = trainer.sample(2, seed=3, num_steps=4)
    assert a.shape == (2, 8, 8, 1) and np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, trainer.sample(2, seed=3, num_steps=4))
    assert trainer.sample(1, seed=3, sampler="ddpm", use_ema=False).shape == (1, 8, 8, 1)
    with pytest.raises(ValueError, match="sampler must be"):
        trainer.sample(1, sampler="euler")


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="schedule kind"):
        DiffusionTrainer(_tiny_net(), schedule="quadratic")
    with pytest.raises(TypeError, match="NoiseSchedule"):
        DiffusionTrainer(_tiny_net(), schedule=3)
    with pytest.raises(ValueError, match="ema_decay"):
        DiffusionTrainer(_tiny_net(), ema_decay=2.0)


@pytest.mark.slow
def test_diffusion_unet_learns_to_predict_noise():
    rng = np.random.default_rng(0)
    halves = np.where(np.arange(8)[None, :, None, None] < 4, 1.0, -1.0)
    x = np.tanh(halves + 0.1 * rng.normal(size=(64, 8, 8, 1))).astype("float32")
    net = diffusion.diffusion_unet((8, 8, 1), base_filters=8, channel_mults=(1,), groups=4)
    trainer = DiffusionTrainer(net, timesteps=50, ema_decay=0.9, seed=0)
    trainer.compile(keras.optimizers.Adam(3e-3))
    history = trainer.fit(tf.data.Dataset.from_tensor_slices(x).batch(16), epochs=10, verbose=0).history
    assert history["loss"][-1] < 0.4 * history["loss"][0]  # measured 0.97 -> 0.13 in 15 epochs
    ema_loss = trainer.evaluate(tf.data.Dataset.from_tensor_slices(x).batch(16), verbose=0, return_dict=True)
    assert ema_loss["loss"] < 0.6


@pytest.mark.slow
def test_mirrored_strategy_gives_the_one_device_losses():
    assert_same_as_one_device("diffusion")
