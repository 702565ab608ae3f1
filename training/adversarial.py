"""Adversarial trainers: an unconditional GAN (DCGAN) and a conditional image-to-image GAN (pix2pix).

Both are ``keras.Model`` subclasses with their own ``train_step``, so ``fit()``, callbacks and
``tf.distribute`` strategies work as usual. Each has two optimisers (generator, discriminator),
both built inside the strategy's scope by ``compile()``::

    gan = GANTrainer(generator, discriminator, latent_dim=64)
    gan.compile(
        generator_optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5),
        discriminator_optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5),
    )
    gan.fit(image_dataset, epochs=10)          # batches: images (B, H, W, C) or {"image": ...}

    p2p = Pix2PixTrainer(unet, patch_discriminator, l1_weight=100.0)
    p2p.compile(generator_optimizer="adam", discriminator_optimizer="adam")
    p2p.fit(pairs)                             # batches: {"image": source, "target": target}

The discriminator outputs logits (no sigmoid). The adversarial losses come from
:mod:`training.losses` (non-saturating, least-squares, Wasserstein with gradient penalty).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from training import trainer_base as base
from training import losses

GAN_LOSSES = losses.GAN_KINDS


def _check_gan_loss(loss: str, what: str) -> str:
    if loss not in losses.GAN_KINDS:
        raise ValueError(f"{what}: gan_loss must be one of {losses.GAN_KINDS}; got {loss!r}")
    return loss


def _logits(x) -> tf.Tensor:
    """Discriminator outputs as float32 (a patch discriminator gives a map ``(B, h, w, 1)``)."""
    return base.to_float(x)


def discriminator_share(kind: str, real_logits, fake_logits, local_batch, global_batch) -> tf.Tensor:
    """This replica's share of the discriminator loss over the global batch (see ``global_mean_share``)."""
    loss = losses.gan_discriminator_loss(_logits(real_logits), _logits(fake_logits), kind=kind)
    return base.global_mean_share(loss, global_batch, local_batch)


def generator_share(kind: str, fake_logits, local_batch, global_batch) -> tf.Tensor:
    """This replica's share of the generator's adversarial loss over the global batch."""
    loss = losses.gan_generator_loss(_logits(fake_logits), kind=kind)
    return base.global_mean_share(loss, global_batch, local_batch)


def mean_logit_share(logits, local_batch, global_batch) -> tf.Tensor:
    """This replica's share of the mean discriminator output (logged as ``d_real``/``d_fake``)."""
    return base.global_mean_share(tf.reduce_mean(_logits(logits)), global_batch, local_batch)


class _AdversarialTrainer(base.Trainer):
    """Two networks, two optimisers; the generator's optimiser is the trainer's main ``optimizer``."""

    def __init__(self, generator, discriminator, gan_loss, gp_weight, seed, tracker_names, name):
        super().__init__(tracker_names=tracker_names, name=name)
        self.generator = generator
        self.discriminator = discriminator
        self.gan_loss = _check_gan_loss(gan_loss, type(self).__name__)
        base.check_positive(gp_weight, "gp_weight", type(self).__name__, allow_zero=True)
        self.gp_weight = float(gp_weight)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.generator_optimizer = None
        self.discriminator_optimizer = None

    def compile(self, generator_optimizer="adam", discriminator_optimizer="adam", **kwargs):
        """Set both optimisers and build them inside the strategy's scope.

        Args:
            generator_optimizer: optimiser (or name) for the generator's weights.
            discriminator_optimizer: optimiser (or name) for the discriminator's weights.
                Pass two *different* instances: one optimiser cannot serve both networks.
            **kwargs: passed to ``keras.Model.compile`` (e.g. ``jit_compile``, ``steps_per_execution``).
        """
        policy = self.dtype_policy.name
        self.generator_optimizer = base.maybe_loss_scale(generator_optimizer, policy)
        self.discriminator_optimizer = base.maybe_loss_scale(discriminator_optimizer, policy)
        if self.generator_optimizer is self.discriminator_optimizer:
            raise ValueError(
                f"{type(self).__name__}.compile: generator_optimizer and discriminator_optimizer must "
                "be two different optimiser instances"
            )
        self._compile_with(self.generator_optimizer, **kwargs)

    def optimizer_groups(self):
        return [
            (self.generator_optimizer, self.generator.trainable_variables),
            (self.discriminator_optimizer, self.discriminator.trainable_variables),
        ]

    def _discriminator_update(self, real, fake, local_batch, global_batch, condition=None):
        """One discriminator step on ``real`` vs (already generated) ``fake``.

        Returns:
            ``(loss share, real logits, fake logits)``.
        """
        def critic(x, training=True):
            x = x if condition is None else tf.concat([tf.cast(condition, x.dtype), x], axis=-1)
            return self.discriminator(x, training=training)

        fake = tf.stop_gradient(tf.cast(fake, real.dtype))
        with tf.GradientTape() as tape:
            real_logits, fake_logits = critic(real), critic(fake)
            share = discriminator_share(self.gan_loss, real_logits, fake_logits, local_batch, global_batch)
            if self.gan_loss == "wasserstein" and self.gp_weight > 0:
                shape = tf.concat([tf.shape(real)[:1], tf.ones([tf.rank(real) - 1], tf.int32)], axis=0)
                alpha = tf.random.stateless_uniform(shape, seed=base.stateless_seed(self.seed_generator))
                penalty = losses.gradient_penalty(critic, real, fake, alpha=alpha)
                share += self.gp_weight * base.global_mean_share(penalty, global_batch, local_batch)
            scaled = base.scaled_objective(self.discriminator_optimizer, share, self.discriminator)
        base.apply_gradients(
            self.discriminator_optimizer, tape, scaled, self.discriminator.trainable_variables
        )
        return share, real_logits, fake_logits


class GANTrainer(_AdversarialTrainer):
    """Unconditional GAN (DCGAN) trainer: generator ``z -> image``, discriminator ``image -> logits``.

    Each step: the discriminator takes ``discriminator_steps`` updates on real vs generated images,
    then the generator one update on fresh noise.

    Args:
        generator: ``keras.Model`` mapping ``(B, latent_dim)`` noise to ``(B, *spatial, C)`` images.
        discriminator: ``keras.Model`` mapping images to logits ``(B, 1)`` (or a patch map).
        latent_dim: size of the noise vector.
        gan_loss: ``"non_saturating"`` (DCGAN), ``"least_squares"`` (LSGAN) or ``"wasserstein"``
            (WGAN-GP, with ``gp_weight``).
        gp_weight: gradient-penalty weight (only used with ``"wasserstein"``).
        discriminator_steps: discriminator updates per generator update (5 is usual for WGAN-GP).
        seed: seed of the trainer's noise generator.

    Batches: images ``(B, *spatial, C)``, a dict with ``"image"`` (and optionally ``"latent"``,
    ``(B, latent_dim)`` noise to use instead of drawing it, e.g. for reproducible comparisons), or
    an ``(x, y)`` tuple whose ``y`` is ignored.

    Logs: ``d_loss``, ``g_loss``, ``d_real`` and ``d_fake`` (mean discriminator logits on real and
    generated images; their gap shows who is winning).
    """

    def __init__(
        self,
        generator: keras.Model,
        discriminator: keras.Model,
        latent_dim: int,
        gan_loss: str = "non_saturating",
        gp_weight: float = 10.0,
        discriminator_steps: int = 1,
        seed: int | None = None,
        name: str = "gan_trainer",
    ):
        super().__init__(
            generator, discriminator, gan_loss, gp_weight, seed,
            tracker_names=("d_loss", "g_loss", "d_real", "d_fake"), name=name,
        )
        if int(latent_dim) < 1:
            raise ValueError(f"GANTrainer: latent_dim must be >= 1; got {latent_dim}")
        if int(discriminator_steps) < 1:
            raise ValueError(f"GANTrainer: discriminator_steps must be >= 1; got {discriminator_steps}")
        self.latent_dim = int(latent_dim)
        self.discriminator_steps = int(discriminator_steps)

    def call(self, latent, training=False):
        """Generate images from noise ``(B, latent_dim)``."""
        return self.generator(latent, training=training)

    def sample_latent(self, batch_size) -> tf.Tensor:
        """Standard-normal noise ``(batch_size, latent_dim)`` from the trainer's seed generator."""
        return tf.random.stateless_normal(
            tf.stack([batch_size, self.latent_dim]), seed=base.stateless_seed(self.seed_generator)
        )

    def generate(self, num_images: int, seed: int = 0):
        """``num_images`` generated images as a NumPy array (reproducible for a given ``seed``)."""
        latent = tf.random.stateless_normal([num_images, self.latent_dim], seed=[seed, 0])
        return keras.ops.convert_to_numpy(self.generator(latent, training=False))

    def _batch(self, data):
        if isinstance(data, (tuple, list)):
            data = data[0]
        batch = base.unpack(data, ("image",), "GANTrainer")
        return batch["image"], batch.get("latent")

    def train_step(self, data):
        real, latent = self._batch(data)
        local_batch, global_batch = base.local_batch_size(real), base.global_batch_size(real)

        def noise():
            return latent if latent is not None else self.sample_latent(tf.shape(real)[0])

        for _ in range(self.discriminator_steps):
            fake = self.generator(noise(), training=True)
            d_share, real_logits, fake_logits = self._discriminator_update(
                real, fake, local_batch, global_batch
            )

        with tf.GradientTape() as tape:
            fake_logits_g = self.discriminator(self.generator(noise(), training=True), training=True)
            g_share = generator_share(self.gan_loss, fake_logits_g, local_batch, global_batch)
            scaled = base.scaled_objective(self.generator_optimizer, g_share, self.generator)
        base.apply_gradients(self.generator_optimizer, tape, scaled, self.generator.trainable_variables)

        return self.log(shares={
            "d_loss": d_share,
            "g_loss": g_share,
            "d_real": mean_logit_share(real_logits, local_batch, global_batch),
            "d_fake": mean_logit_share(fake_logits, local_batch, global_batch),
        })

    def test_step(self, data):
        real, latent = self._batch(data)
        local_batch, global_batch = base.local_batch_size(real), base.global_batch_size(real)
        if latent is None:
            latent = self.sample_latent(tf.shape(real)[0])
        fake = self.generator(latent, training=False)
        real_logits = self.discriminator(real, training=False)
        fake_logits = self.discriminator(tf.cast(fake, real.dtype), training=False)
        return self.log(shares={
            "d_loss": discriminator_share(self.gan_loss, real_logits, fake_logits, local_batch, global_batch),
            "g_loss": generator_share(self.gan_loss, fake_logits, local_batch, global_batch),
            "d_real": mean_logit_share(real_logits, local_batch, global_batch),
            "d_fake": mean_logit_share(fake_logits, local_batch, global_batch),
        })


class Pix2PixTrainer(_AdversarialTrainer):
    """Conditional image-to-image GAN (pix2pix, Isola et al. 2017): adversarial loss + ``l1_weight`` x L1.

    Args:
        generator: ``keras.Model`` mapping a source image ``(B, *spatial, C_in)`` to a target image
            ``(B, *spatial, C_out)`` (a U-Net is the usual choice).
        discriminator: ``keras.Model`` taking ``concat([source, target], axis=-1)``
            ``(B, *spatial, C_in + C_out)`` and returning logits, one per patch (PatchGAN) or ``(B, 1)``;
            ``models.get("patchgan_discriminator", ...)`` takes exactly this.
        l1_weight: weight of the L1 reconstruction term (100 in the paper).
        gan_loss, gp_weight, seed: as for :class:`GANTrainer`.

    Batches: ``{"image": source, "target": target}`` or ``(source, target)``.

    Logs: ``d_loss``, ``g_loss`` (adversarial + weighted L1, the generator's objective), ``g_adv``
    and ``l1`` (mean absolute error between generated and true target).
    """

    def __init__(
        self,
        generator: keras.Model,
        discriminator: keras.Model,
        l1_weight: float = 100.0,
        gan_loss: str = "non_saturating",
        gp_weight: float = 10.0,
        seed: int | None = None,
        name: str = "pix2pix_trainer",
    ):
        super().__init__(
            generator, discriminator, gan_loss, gp_weight, seed,
            tracker_names=("d_loss", "g_loss", "g_adv", "l1"), name=name,
        )
        base.check_positive(l1_weight, "l1_weight", "Pix2PixTrainer", allow_zero=True)
        self.l1_weight = float(l1_weight)

    def call(self, source, training=False):
        """Translate source images to target images."""
        return self.generator(source, training=training)

    def _batch(self, data):
        batch = base.unpack(data, ("image", "target"), "Pix2PixTrainer")
        source, target = batch["image"], batch["target"]
        return source, target, base.local_batch_size(source), base.global_batch_size(source)

    def _critic_input(self, source, image):
        return tf.concat([tf.cast(source, image.dtype), image], axis=-1)

    def train_step(self, data):
        source, target, local_batch, global_batch = self._batch(data)
        target = tf.cast(target, source.dtype)

        fake = self.generator(source, training=True)
        d_share, _, _ = self._discriminator_update(target, fake, local_batch, global_batch, condition=source)

        with tf.GradientTape() as tape:
            fake = self.generator(source, training=True)
            fake_logits = self.discriminator(self._critic_input(source, fake), training=True)
            adv_share = generator_share(self.gan_loss, fake_logits, local_batch, global_batch)
            l1_share = base.global_mean_share(losses.l1_loss(target, fake), global_batch)
            g_share = adv_share + self.l1_weight * l1_share
            scaled = base.scaled_objective(self.generator_optimizer, g_share, self.generator)
        base.apply_gradients(self.generator_optimizer, tape, scaled, self.generator.trainable_variables)
        return self.log(shares={"d_loss": d_share, "g_loss": g_share, "g_adv": adv_share, "l1": l1_share})

    def test_step(self, data):
        source, target, local_batch, global_batch = self._batch(data)
        fake = self.generator(source, training=False)
        real_logits = self.discriminator(self._critic_input(source, tf.cast(target, fake.dtype)), training=False)
        fake_logits = self.discriminator(self._critic_input(source, fake), training=False)
        adv_share = generator_share(self.gan_loss, fake_logits, local_batch, global_batch)
        l1_share = base.global_mean_share(losses.l1_loss(target, fake), global_batch)
        return self.log(shares={
            "d_loss": discriminator_share(self.gan_loss, real_logits, fake_logits, local_batch, global_batch),
            "g_loss": adv_share + self.l1_weight * l1_share,
            "g_adv": adv_share,
            "l1": l1_share,
        })
