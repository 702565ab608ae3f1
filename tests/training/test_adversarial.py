"""Tests for training/adversarial.py: GAN and pix2pix trainers."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from tests.training.mirrored_trainers import assert_same_as_one_device
from training import losses
from training.adversarial import GANTrainer, Pix2PixTrainer

PATTERN = np.where(np.arange(4)[None, :, None] < 2, 0.6, -0.6) * np.ones((4, 4, 1))


def _gan_nets():
    g = keras.Sequential([keras.Input((4,)), layers.Dense(16, activation="tanh"), layers.Reshape((4, 4, 1))])
    d = keras.Sequential([keras.Input((4, 4, 1)), layers.Flatten(), layers.Dense(16), layers.LeakyReLU(0.2), layers.Dense(1)])
    return g, d


def _conv(channels_in, activation=None):
    inp = keras.Input((8, 8, channels_in))
    h = layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    return keras.Model(inp, layers.Conv2D(1, 3, padding="same", activation=activation)(h))


def test_compile_builds_both_optimisers_on_their_own_networks():
    g, d = _gan_nets()
    gan = GANTrainer(g, d, latent_dim=4)
    gan.compile(keras.optimizers.Adam(1e-3), keras.optimizers.SGD(1e-3))
    assert gan.generator_optimizer.built and gan.discriminator_optimizer.built
    assert gan.optimizer is gan.generator_optimizer
    # Adam keeps two slots per generator variable, SGD without momentum none.
    assert len(gan.generator_optimizer.variables) == 2 + 2 * len(g.trainable_variables)
    assert len(gan.discriminator_optimizer.variables) == 2


def test_one_optimiser_for_both_networks_is_refused():
    g, d = _gan_nets()
    opt = keras.optimizers.Adam()
    with pytest.raises(ValueError, match="two different optimiser instances"):
        GANTrainer(g, d, latent_dim=4).compile(opt, opt)


def test_bad_arguments_are_named():
    g, d = _gan_nets()
    with pytest.raises(ValueError, match="gan_loss must be one of"):
        GANTrainer(g, d, latent_dim=4, gan_loss="hinge")
    with pytest.raises(ValueError, match="latent_dim"):
        GANTrainer(g, d, latent_dim=0)
    with pytest.raises(ValueError, match="discriminator_steps"):
        GANTrainer(g, d, latent_dim=4, discriminator_steps=0)


def test_gan_step_losses_match_the_loss_functions_before_the_update(rng):
    g, d = _gan_nets()
    gan = GANTrainer(g, d, latent_dim=4)
    gan.compile(keras.optimizers.SGD(0.0), keras.optimizers.SGD(0.0))  # lr 0: weights stay
    real = rng.normal(size=(6, 4, 4, 1)).astype("float32")
    latent = rng.normal(size=(6, 4)).astype("float32")
    logs = gan.train_step({"image": real, "latent": latent})
    fake_logits = d(g(latent))
    expected_d = losses.gan_discriminator_loss(d(real), fake_logits)
    expected_g = losses.gan_generator_loss(fake_logits)
    assert float(logs["d_loss"]) == pytest.approx(float(expected_d), rel=1e-5)
    assert float(logs["g_loss"]) == pytest.approx(float(expected_g), rel=1e-5)
    assert float(logs["d_real"]) == pytest.approx(float(np.mean(d(real))), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("gan_loss", ["least_squares", "wasserstein"])
def test_other_gan_losses_update_both_networks(gan_loss, rng):
    g, d = _gan_nets()
    gan = GANTrainer(g, d, latent_dim=4, gan_loss=gan_loss, discriminator_steps=2, seed=0)
    gan.compile(keras.optimizers.Adam(1e-2), keras.optimizers.Adam(1e-2))
    g_before, d_before = g.get_weights()[0].copy(), d.get_weights()[0].copy()
    logs = gan.train_step(rng.normal(size=(4, 4, 4, 1)).astype("float32"))
    assert all(np.isfinite(float(v)) for v in logs.values())
    assert not np.allclose(g.get_weights()[0], g_before)
    assert not np.allclose(d.get_weights()[0], d_before)
    assert gan.discriminator_optimizer.iterations.numpy() == 2


def test_mixed_float16_wraps_both_optimisers_in_loss_scaling(rng):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        g, d = _gan_nets()
        gan = GANTrainer(g, d, latent_dim=4)
        gan.compile("adam", "adam")
        logs = gan.train_step(rng.normal(size=(4, 4, 4, 1)).astype("float32"))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert isinstance(gan.generator_optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(gan.discriminator_optimizer, keras.optimizers.LossScaleOptimizer)
    assert all(np.isfinite(float(v)) for v in logs.values())


def test_generate_is_reproducible():
    g, d = _gan_nets()
    gan = GANTrainer(g, d, latent_dim=4)
    a, b = gan.generate(3, seed=5), gan.generate(3, seed=5)
    assert a.shape == (3, 4, 4, 1)
    np.testing.assert_array_equal(a, b)


def test_pix2pix_generator_objective_is_adversarial_plus_weighted_l1(rng):
    g, d = _conv(1, "tanh"), _conv(2)
    trainer = Pix2PixTrainer(g, d, l1_weight=7.0)
    trainer.compile(keras.optimizers.SGD(0.0), keras.optimizers.SGD(0.0))
    source = rng.normal(size=(3, 8, 8, 1)).astype("float32")
    target = np.tanh(-source)
    logs = trainer.evaluate({"image": source, "target": target}, verbose=0, return_dict=True, batch_size=3)
    fake = g(source)
    assert logs["l1"] == pytest.approx(float(np.mean(np.abs(fake - target))), rel=1e-5)
    assert logs["g_loss"] == pytest.approx(logs["g_adv"] + 7.0 * logs["l1"], rel=1e-5)
    with pytest.raises(KeyError, match="target"):
        trainer.train_step({"image": source})


@pytest.mark.slow
def test_gan_learns_the_image_distribution():
    rng = np.random.default_rng(0)
    real = (PATTERN[None] + 0.05 * rng.normal(size=(256, 4, 4, 1))).astype("float32")
    g, d = _gan_nets()
    gan = GANTrainer(g, d, latent_dim=4, seed=0)
    gan.compile(keras.optimizers.Adam(5e-3, beta_1=0.5), keras.optimizers.Adam(5e-3, beta_1=0.5))
    before = np.abs(gan.generate(256).mean(0) - PATTERN).mean()
    gan.fit(tf.data.Dataset.from_tensor_slices(real).batch(32), epochs=15, verbose=0)
    after = np.abs(gan.generate(256).mean(0) - PATTERN).mean()
    assert before > 0.5 and after < 0.25  # measured ~0.03-0.11 over seeds 0-2


@pytest.mark.slow
def test_pix2pix_learns_the_translation():
    rng = np.random.default_rng(0)
    source = rng.normal(size=(64, 8, 8, 1)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices({"image": source, "target": np.tanh(-2 * source)}).batch(16)
    trainer = Pix2PixTrainer(_conv(1, "tanh"), _conv(2), l1_weight=10.0)
    trainer.compile(keras.optimizers.Adam(5e-3, beta_1=0.5), keras.optimizers.Adam(5e-3, beta_1=0.5))
    l1 = trainer.fit(data, epochs=15, verbose=0).history["l1"]
    assert l1[-1] < 0.3 * l1[0]  # measured 0.66 -> 0.10


@pytest.mark.slow
@pytest.mark.parametrize("case", ["gan", "pix2pix"])
def test_mirrored_strategy_gives_the_one_device_losses(case):
    assert_same_as_one_device(case)
