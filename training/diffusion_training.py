"""DDPM training with an exponential moving average (EMA) of the weights, and sampling from it.

Each step draws a timestep ``t`` and Gaussian noise per image, makes ``x_t`` in closed form
(:func:`models.diffusion.q_sample`) and trains the network to predict the noise (mean squared
error, :func:`training.losses.ssd_loss`; Ho et al. 2020, Algorithm 1). A copy of the network with
EMA weights is what one samples from: it gives visibly better images than the raw weights::

    net = models.get("diffusion_unet", input_shape=(32, 32, 1))
    trainer = DiffusionTrainer(net, schedule="cosine", timesteps=1000, ema_decay=0.999)
    trainer.compile(optimizer=keras.optimizers.Adam(2e-4))
    trainer.fit(images)                      # batches: images in [-1, 1], or {"image": ...}
    samples = trainer.sample(16, seed=0)     # DDIM, 50 steps, from the EMA network
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from models import diffusion
from training import trainer_base as base
from training import losses


class DiffusionTrainer(base.Trainer):
    """Noise-prediction (DDPM) trainer with an EMA copy of the network and a sampler.

    Args:
        network: ``keras.Model`` called as ``network([x_t, t])`` with images ``(B, *spatial, C)`` and
            integer timesteps ``(B,)``, returning the predicted noise shaped like ``x_t``
            (e.g. :func:`models.diffusion.diffusion_unet`).
        schedule: a :class:`models.diffusion.NoiseSchedule` or a kind, ``"linear"`` or ``"cosine"``.
        timesteps: ``T``, used when ``schedule`` is a kind.
        ema_decay: decay of the EMA weights (0.999-0.9999 in the literature; smaller for short runs).
        seed: seed of the timestep and noise generator.

    Batches: images ``(B, *spatial, C)`` scaled to [-1, 1], a dict with ``"image"`` (optionally
    ``"noise"`` shaped like the image and ``"timestep"`` ``(B,)`` to fix the randomness, e.g. for
    reproducible comparisons), or an ``(x, y)`` tuple whose ``y`` is ignored.

    Logs: ``loss`` (noise-prediction MSE of the trained network; in ``evaluate`` of the EMA network).
    """

    def __init__(
        self,
        network: keras.Model,
        schedule="linear",
        timesteps: int = 1000,
        ema_decay: float = 0.999,
        seed: int | None = None,
        name: str = "diffusion_trainer",
    ):
        super().__init__(tracker_names=("loss",), name=name)
        if isinstance(schedule, str):
            schedule = diffusion.make_schedule(schedule, int(timesteps))
        if not isinstance(schedule, diffusion.NoiseSchedule):
            raise TypeError(f"DiffusionTrainer: schedule must be a NoiseSchedule or 'linear'/'cosine'; got {schedule!r}")
        if not 0.0 <= float(ema_decay) <= 1.0:
            raise ValueError(f"DiffusionTrainer: ema_decay must be in [0, 1]; got {ema_decay}")
        self.network = network
        self.schedule = schedule
        self.ema_decay = float(ema_decay)
        self.ema_network = keras.models.clone_model(network)
        self.ema_network.set_weights(network.get_weights())
        self.ema_network.trainable = False
        self.seed_generator = keras.random.SeedGenerator(seed)

    def compile(self, optimizer="adam", **kwargs):
        """Set the network's optimiser (built inside the strategy's scope) and compile."""
        self._compile_with(base.maybe_loss_scale(optimizer, self.dtype_policy.name), **kwargs)

    def optimizer_groups(self):
        return [(self.optimizer, self.network.trainable_variables)]

    def call(self, inputs, training=False):
        """``inputs = [x_t, t]`` -> noise predicted by the trained network."""
        return self.network(inputs, training=training)

    def _batch(self, data):
        if isinstance(data, (tuple, list)):
            data = data[0]
        batch = base.unpack(data, ("image",), "DiffusionTrainer")
        images = tf.cast(batch["image"], tf.float32)
        seeds = tf.random.experimental.stateless_split(base.stateless_seed(self.seed_generator), 2)
        noise = batch.get("noise")
        if noise is None:
            noise = tf.random.stateless_normal(tf.shape(images), seed=seeds[0])
        t = batch.get("timestep")
        if t is None:
            t = tf.random.stateless_uniform(
                tf.shape(images)[:1], seed=seeds[1], minval=0, maxval=self.schedule.timesteps, dtype=tf.int32
            )
        return images, tf.cast(noise, tf.float32), tf.cast(t, tf.int32)

    def _loss_share(self, network, data, training):
        images, noise, t = self._batch(data)
        noisy = diffusion.q_sample(self.schedule, images, t, noise)
        predicted = network([noisy, t], training=training)
        return base.global_mean_share(losses.ssd_loss(noise, predicted), base.global_batch_size(images))

    def train_step(self, data):
        with tf.GradientTape() as tape:
            share = self._loss_share(self.network, data, training=True)
            scaled = base.scaled_objective(self.optimizer, share, self.network)
        base.apply_gradients(self.optimizer, tape, scaled, self.network.trainable_variables)
        base.ema_update(self.ema_network.weights, self.network.weights, self.ema_decay)
        return self.log(shares={"loss": share})

    def test_step(self, data):
        return self.log(shares={"loss": self._loss_share(self.ema_network, data, training=False)})

    def sample(self, num_images: int, seed: int = 0, sampler: str = "ddim", num_steps: int = 50,
               use_ema: bool = True, progress: bool = False) -> np.ndarray:
        """Generate images with the EMA (or trained) network.

        Args:
            num_images: how many images.
            seed: the same seed gives the same images.
            sampler: ``"ddim"`` (deterministic, ``num_steps`` network calls) or ``"ddpm"``
                (ancestral, ``T`` network calls).
            num_steps: DDIM steps.
            use_ema: sample from the EMA network (default) or the trained one.
            progress: show a progress bar.

        Returns:
            float32 array ``(num_images, *spatial, C)``, roughly in [-1, 1].
        """
        network = self.ema_network if use_ema else self.network
        shape = (int(num_images), *[int(s) for s in network.inputs[0].shape[1:]])
        if sampler == "ddim":
            return diffusion.ddim_sample(network, self.schedule, shape, seed, num_steps=num_steps, progress=progress)
        if sampler == "ddpm":
            return diffusion.ddpm_sample(network, self.schedule, shape, seed, progress=progress)
        raise ValueError(f"DiffusionTrainer.sample: sampler must be 'ddim' or 'ddpm'; got {sampler!r}")
