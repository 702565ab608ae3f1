"""Losses of generative models: VAE KL divergence, GAN losses, WGAN-GP gradient penalty."""

from __future__ import annotations

import keras
from keras import ops

from training.losses.core import _EPS


def kl_divergence(z_mean, z_log_var):
    """KL divergence of ``N(z_mean, exp(z_log_var))`` from ``N(0, I)``, summed over latent axes (VAE).

    Args:
        z_mean, z_log_var: ``(B, latent...)``.

    Returns:
        float32 ``(B,)``: ``-0.5 * sum(1 + log_var - mean^2 - exp(log_var))``.
    """
    z_mean = ops.cast(z_mean, "float32")
    z_log_var = ops.cast(z_log_var, "float32")
    kl = -0.5 * (1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))
    return ops.sum(kl, axis=tuple(range(1, len(kl.shape))))


# "minimax" is the generator loss of the original value function (Goodfellow et al. 2014); it
# saturates when the discriminator wins and is there to be compared with "non_saturating".
GAN_KINDS = ("non_saturating", "minimax", "least_squares", "wasserstein")


def _gan_kind(kind: str) -> str:
    if kind not in GAN_KINDS:
        raise ValueError(f"GAN loss kind must be one of {GAN_KINDS}; got {kind!r}")
    return kind


def gan_discriminator_loss(real_output, fake_output, *, kind: str = "non_saturating", from_logits: bool = True):
    """Discriminator (critic) loss on its outputs for real and generated samples.

    - ``"non_saturating"`` and ``"minimax"``: binary cross-entropy, ``-log D(x) - log(1 - D(G(z)))``
      (the negated value function ``V(D, G)``; the two kinds differ only in the generator's loss);
    - ``"least_squares"`` (LSGAN): ``0.5 (D(x) - 1)^2 + 0.5 D(G(z))^2`` on the raw outputs;
    - ``"wasserstein"`` (WGAN critic): ``mean D(G(z)) - mean D(x)``; add :func:`gradient_penalty`.

    Args:
        real_output, fake_output: discriminator outputs ``(B, ...)``.
        kind: one of ``GAN_KINDS``.
        from_logits: for ``"non_saturating"``: outputs are logits (``False``: probabilities).

    Returns:
        float32 scalar, averaged over the batch.
    """
    kind = _gan_kind(kind)
    real = ops.cast(real_output, "float32")
    fake = ops.cast(fake_output, "float32")
    if kind == "wasserstein":
        return ops.mean(fake) - ops.mean(real)
    if kind == "least_squares":
        return 0.5 * ops.mean(ops.square(real - 1.0)) + 0.5 * ops.mean(ops.square(fake))
    if from_logits:
        return ops.mean(ops.softplus(-real)) + ops.mean(ops.softplus(fake))
    real = ops.clip(real, _EPS, 1.0 - _EPS)
    fake = ops.clip(fake, _EPS, 1.0 - _EPS)
    return -ops.mean(ops.log(real)) - ops.mean(ops.log(1.0 - fake))


def gan_generator_loss(fake_output, *, kind: str = "non_saturating", from_logits: bool = True):
    """Generator loss on the discriminator's outputs for generated samples.

    - ``"non_saturating"``: ``-log D(G(z))`` (strong gradients when the discriminator wins);
    - ``"minimax"``: ``log(1 - D(G(z)))``, the value function's own term: its gradient with respect
      to the logit is ``-D(G(z))``, which vanishes exactly when the discriminator rejects the fakes;
    - ``"least_squares"``: ``0.5 (D(G(z)) - 1)^2``;
    - ``"wasserstein"``: ``-mean D(G(z))``.

    Args:
        fake_output: discriminator outputs ``(B, ...)``. kind, from_logits: see
            :func:`gan_discriminator_loss`.

    Returns:
        float32 scalar.
    """
    kind = _gan_kind(kind)
    fake = ops.cast(fake_output, "float32")
    if kind == "wasserstein":
        return -ops.mean(fake)
    if kind == "least_squares":
        return 0.5 * ops.mean(ops.square(fake - 1.0))
    if kind == "minimax":
        if from_logits:
            return -ops.mean(ops.softplus(fake))  # log(1 - sigmoid(a)) = -softplus(a)
        return ops.mean(ops.log(ops.clip(1.0 - fake, _EPS, 1.0)))
    if from_logits:
        return ops.mean(ops.softplus(-fake))
    return -ops.mean(ops.log(ops.clip(fake, _EPS, 1.0)))


def gradient_penalty(critic, real, fake, *, alpha=None, seed=None, target_norm: float = 1.0):
    """WGAN-GP gradient penalty: ``mean((||grad_x D(x_hat)||_2 - target_norm)^2)``.

    ``x_hat`` lies on random straight lines between real and generated samples (Gulrajani et al. 2017).
    Uses a TensorFlow gradient tape, so it runs with the TensorFlow backend (the kit's default).

    Args:
        critic: a callable model ``(B, ...) -> (B, ...)``.
        real, fake: real and generated batches of the same shape ``(B, ...)``.
        alpha: interpolation weights ``(B, 1, ..., 1)``; drawn uniformly from ``seed`` when ``None``.
        seed: an int or ``keras.random.SeedGenerator`` for ``alpha`` (pass a generator in a training loop
            so every step gets fresh weights).
        target_norm: the gradient norm the critic is pushed towards (1 for a 1-Lipschitz critic).

    Returns:
        float32 scalar.
    """
    import tensorflow as tf

    real = ops.cast(real, "float32")
    fake = ops.cast(fake, "float32")
    if alpha is None:
        shape = (ops.shape(real)[0],) + (1,) * (len(real.shape) - 1)
        alpha = keras.random.uniform(shape, seed=seed)
    x_hat = real + ops.cast(alpha, "float32") * (fake - real)
    with tf.GradientTape() as tape:
        tape.watch(x_hat)
        score = ops.cast(critic(x_hat, training=True), "float32")
    grads = tape.gradient(score, x_hat)
    norms = ops.sqrt(ops.sum(ops.square(grads), axis=tuple(range(1, len(grads.shape)))) + 1e-12)
    return ops.mean(ops.square(norms - target_norm))

