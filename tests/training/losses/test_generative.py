"""Tests for training.losses.generative: VAE, GAN and gradient-penalty losses."""

import numpy as np
import pytest
from keras import ops

from training import losses as L
from tests.training.losses.helpers import to_numpy


def test_kl_divergence_golden():
    z_mean = np.array([[0.0, 0.0], [1.0, 0.0]], dtype="float32")
    z_log_var = np.array([[0.0, 0.0], [0.0, np.log(2.0)]], dtype="float32")
    # sample 2: 0.5 * 1^2 + 0.5 * (2 - 1 - log 2)
    np.testing.assert_allclose(to_numpy(L.kl_divergence(z_mean, z_log_var)), [0.0, 0.5 + 0.5 * (1 - np.log(2))], rtol=1e-6)


def test_minimax_generator_loss_saturates_where_non_saturating_does_not():
    """d loss / d logit: minimax -D(G(z)), non-saturating -(1 - D(G(z))); at D = 0.01 the ratio is 99."""
    import tensorflow as tf

    logit = tf.constant([np.log(0.01 / 0.99)], tf.float32)  # the discriminator gives the fake D = 0.01
    grads = {}
    for kind in ("minimax", "non_saturating"):
        with tf.GradientTape() as tape:
            tape.watch(logit)
            loss = L.gan_generator_loss(logit, kind=kind)
        grads[kind] = float(tape.gradient(loss, logit)[0])
    np.testing.assert_allclose(grads["minimax"], -0.01, rtol=1e-4)
    np.testing.assert_allclose(grads["non_saturating"], -0.99, rtol=1e-4)


def test_gan_losses_golden():
    real = np.array([2.0, 0.0], dtype="float32")
    fake = np.array([-1.0, 1.0], dtype="float32")
    softplus = lambda x: np.log1p(np.exp(x))  # noqa: E731
    np.testing.assert_allclose(
        to_numpy(L.gan_discriminator_loss(real, fake)), softplus(-real).mean() + softplus(fake).mean(), rtol=1e-6
    )
    np.testing.assert_allclose(to_numpy(L.gan_generator_loss(fake)), softplus(-fake).mean(), rtol=1e-6)
    probs_real, probs_fake = 1 / (1 + np.exp(-real)), 1 / (1 + np.exp(-fake))
    np.testing.assert_allclose(
        to_numpy(L.gan_discriminator_loss(probs_real, probs_fake, from_logits=False)),
        to_numpy(L.gan_discriminator_loss(real, fake)),
        rtol=1e-5,
    )
    np.testing.assert_allclose(to_numpy(L.gan_discriminator_loss(real, fake, kind="least_squares")), 0.5 * 1.0 + 0.5 * 1.0)
    np.testing.assert_allclose(to_numpy(L.gan_generator_loss(fake, kind="least_squares")), 0.5 * (4 + 0) / 2)
    np.testing.assert_allclose(to_numpy(L.gan_discriminator_loss(real, fake, kind="wasserstein")), 0.0 - 1.0)
    np.testing.assert_allclose(to_numpy(L.gan_generator_loss(fake, kind="wasserstein")), 0.0)
    np.testing.assert_allclose(to_numpy(L.gan_generator_loss(fake, kind="minimax")), -softplus(fake).mean(), rtol=1e-6)
    np.testing.assert_allclose(to_numpy(L.gan_generator_loss(probs_fake, kind="minimax", from_logits=False)),
                               np.log(1 - probs_fake).mean(), rtol=1e-5)
    np.testing.assert_allclose(to_numpy(L.gan_discriminator_loss(real, fake, kind="minimax")),
                               to_numpy(L.gan_discriminator_loss(real, fake)), rtol=1e-6)
    with pytest.raises(ValueError, match="kind"):
        L.gan_generator_loss(fake, kind="hinge")


def test_gradient_penalty_of_a_linear_critic():
    weights = np.array([3.0, 4.0], dtype="float32")  # gradient norm 5 everywhere

    def critic(x, training=False):
        return ops.sum(x * weights, axis=-1)

    real = np.ones((4, 2), dtype="float32")
    fake = np.zeros((4, 2), dtype="float32")
    np.testing.assert_allclose(to_numpy(L.gradient_penalty(critic, real, fake, seed=0)), (5.0 - 1.0) ** 2, rtol=1e-5)
    np.testing.assert_allclose(
        to_numpy(L.gradient_penalty(critic, real, fake, alpha=np.full((4, 1), 0.3), target_norm=5.0)), 0.0, atol=1e-6
    )
