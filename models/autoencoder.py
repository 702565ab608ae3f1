"""Autoencoders: a convolutional autoencoder and a variational autoencoder (VAE), 2D and 3D.

Both are built from two sub-models you can take out and use on their own::

    ae = models.get("conv_autoencoder", input_shape=(64, 64, 1))
    encoder, decoder = get_encoder(ae), get_decoder(ae)

* :func:`conv_autoencoder` compresses an image to a small feature map and reconstructs it. Train it
  with ``ae.fit(x, x)`` and a pixel loss (MSE). Used for denoising, anomaly detection and
  pre-training.
* :func:`vae` encodes an image to the mean and log-variance of a Gaussian over a latent vector,
  samples with the reparameterisation trick (:class:`Sampling`) and decodes. The KL term is added
  by :class:`KLDivergenceLoss` through ``add_loss``, so a plain ``vae.compile(loss="mse");
  vae.fit(x, x)`` optimises the (scaled) evidence lower bound. New images come from
  ``get_decoder(vae)(z)`` with ``z ~ N(0, I)``.

References:
    Hinton & Salakhutdinov, "Reducing the dimensionality of data with neural networks", Science 2006.
    Kingma & Welling, "Auto-encoding variational Bayes", ICLR 2014.
    Higgins et al., "beta-VAE: learning basic visual concepts...", ICLR 2017 (the KL weight).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
from keras import layers, ops

from models import blocks
from models.blocks import BN_MOMENTUM, set_bn_momentum
from models.registry import register


@keras.saving.register_keras_serializable(package="medkit")
class Sampling(layers.Layer):
    """Reparameterisation trick: ``z = mean + exp(log_var / 2) * eps`` with ``eps ~ N(0, I)``.

    Writing the sample this way keeps it differentiable in ``mean`` and ``log_var``. The sample is
    drawn only in training; at inference the layer returns ``mean``, so ``predict`` is deterministic
    (the usual way to reconstruct with a VAE).

    Args:
        seed: seed of the layer's :class:`keras.random.SeedGenerator`.

    Call:
        ``[mean, log_var]``, each ``(B, latent_dim)`` -> ``z`` ``(B, latent_dim)``.
    """

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        mean, log_var = inputs
        if not training:
            return mean
        eps = keras.random.normal(ops.shape(mean), dtype=mean.dtype, seed=self.seed_generator)
        return mean + ops.exp(0.5 * log_var) * eps

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="medkit")
class KLDivergenceLoss(layers.Layer):
    """Adds ``weight * KL(N(mean, exp(log_var)) || N(0, I))`` to the model's losses; passes inputs on.

    The KL divergence is summed over latent dimensions and averaged over the batch.

    Args:
        weight: multiplier of the KL term (``beta`` of a beta-VAE, times any loss normalisation).

    Call:
        ``[mean, log_var]`` -> ``[mean, log_var]`` unchanged.
    """

    def __init__(self, weight: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.weight = float(weight)

    def call(self, inputs):
        mean, log_var = inputs
        kl = -0.5 * ops.sum(1.0 + log_var - ops.square(mean) - ops.exp(log_var), axis=-1)
        self.add_loss(self.weight * ops.mean(kl))
        return [mean, log_var]

    def compute_output_shape(self, input_shape):
        return list(input_shape)

    def get_config(self):
        return {**super().get_config(), "weight": self.weight}


def get_encoder(model: keras.Model) -> keras.Model:
    """The encoder sub-model of a :func:`conv_autoencoder` or :func:`vae`."""
    return _submodel(model, "encoder")


def get_decoder(model: keras.Model) -> keras.Model:
    """The decoder sub-model of a :func:`conv_autoencoder` or :func:`vae`."""
    return _submodel(model, "decoder")


def _submodel(model: keras.Model, part: str) -> keras.Model:
    for layer in model.layers:
        if isinstance(layer, keras.Model) and layer.name.endswith(part):
            return layer
    raise ValueError(f"model {model.name!r} has no {part} sub-model; build it with conv_autoencoder() or vae()")


def _check_divisible(input_shape, levels: int, who: str) -> int:
    rank = blocks.spatial_rank(input_shape)
    factor = 2**levels
    if any(s is None or s % factor for s in input_shape[:-1]):
        raise ValueError(
            f"{who}: spatial size {tuple(input_shape[:-1])} must be fixed and divisible by {factor} "
            f"(2 ** len(filters))"
        )
    return rank


def _down_stack(x, filters: Sequence[int], norm: str):
    for i, f in enumerate(filters):
        x = blocks.conv_norm_act(x, f, 3, strides=2, norm=norm, name=f"down{i + 1}_a")
        x = blocks.conv_norm_act(x, f, 3, norm=norm, name=f"down{i + 1}_b")
    return x


def _up_stack(x, filters: Sequence[int], norm: str, rank: int):
    for i, f in enumerate(reversed(filters)):
        x = blocks.conv_transpose(rank, f, 3, strides=2, use_bias=norm == "none", name=f"up{i + 1}_upconv")(x)
        x = blocks.normalization(norm, name=f"up{i + 1}_norm")(x)
        x = layers.Activation("relu", name=f"up{i + 1}_act")(x)
        x = blocks.conv_norm_act(x, f, 3, norm=norm, name=f"up{i + 1}_b")
    return x


def _output(x, channels: int, rank: int, activation: str | None):
    x = blocks.conv(rank, channels, 3, name="reconstruction_conv")(x)
    return layers.Activation(activation or "linear", dtype="float32", name="reconstruction")(x)


@register("conv_autoencoder", family="Autoencoder", topic="Autoencoders and generative models",
          defaults={"input_shape": (64, 64, 1)}, example={"input_shape": (16, 16, 1), "filters": (4, 8)})
def conv_autoencoder(
    input_shape: Sequence[int] = (64, 64, 1),
    *,
    filters: Sequence[int] = (16, 32, 64),
    latent_channels: int = 8,
    norm: str = "batch",
    output_activation: str | None = "sigmoid",
    bn_momentum: float = BN_MOMENTUM,
    name: str = "conv_autoencoder",
) -> keras.Model:
    """Convolutional autoencoder: strided-conv encoder, transposed-conv decoder, no skip connections.

    Args:
        input_shape: ``(H, W, C)`` or ``(D, H, W, C)``, divisible by ``2 ** len(filters)``.
        filters: channels of each encoder stage (the decoder mirrors them).
        latent_channels: channels of the bottleneck map (a 1x1 conv, no activation).
        norm: normalisation, see :func:`models.blocks.normalization`.
        output_activation: ``"sigmoid"`` for images in [0, 1]; ``None`` for unbounded intensities.
        bn_momentum: momentum of batch norm's running statistics (Keras' 0.99); short runs need a
            lower momentum (e.g. 0.9) so running statistics keep up.

    Returns:
        Model ``(B, *input_shape) -> (B, *input_shape)``, made of the sub-models ``"encoder"``
        ``(B, *input_shape) -> (B, *spatial / 2**L, latent_channels)`` and ``"decoder"``.
    """
    rank = _check_divisible(input_shape, len(filters), "conv_autoencoder")
    image = keras.Input(shape=tuple(input_shape), name="image")
    x = _down_stack(image, filters, norm)
    code = blocks.conv(rank, latent_channels, 1, name="code")(x)
    encoder = keras.Model(image, code, name="encoder")

    code_in = keras.Input(shape=tuple(code.shape[1:]), name="code")
    x = _up_stack(code_in, filters, norm, rank)
    decoder = keras.Model(code_in, _output(x, input_shape[-1], rank, output_activation), name="decoder")

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    return set_bn_momentum(keras.Model(inputs, decoder(encoder(inputs)), name=name), bn_momentum)


@register("vae", family="Autoencoder", topic="Autoencoders and generative models",
          defaults={"input_shape": (32, 32, 1), "latent_dim": 16},
          example={"input_shape": (16, 16, 1), "latent_dim": 2, "filters": (4, 8), "dense_units": 16})
def vae(
    input_shape: Sequence[int] = (32, 32, 1),
    latent_dim: int = 16,
    *,
    filters: Sequence[int] = (32, 64),
    dense_units: int = 128,
    kl_weight: float | None = None,
    output_activation: str | None = "sigmoid",
    seed: int | None = None,
    name: str = "vae",
) -> keras.Model:
    """Variational autoencoder (Kingma & Welling 2014) with a convolutional encoder and decoder.

    Args:
        input_shape: ``(H, W, C)`` or ``(D, H, W, C)``, divisible by ``2 ** len(filters)``.
        latent_dim: size of the latent vector ``z``.
        filters: channels of each strided-conv encoder stage (mirrored by the decoder).
        dense_units: width of the dense layer before the latent heads.
        kl_weight: weight of the KL term. The default ``1 / (number of input elements)`` matches
            a reconstruction loss that is a *mean* over pixels (Keras ``"mse"`` or
            ``"binary_crossentropy"``): the total is then the per-pixel ELBO. Larger values give a
            beta-VAE with a smoother latent space and blurrier reconstructions; smaller values
            (e.g. ``0.1 / N``) help when the images have little contrast and the latent code is
            otherwise ignored ("posterior collapse").
        output_activation: ``"sigmoid"`` for images in [0, 1]; ``None`` for unbounded intensities.
        seed: seed of the sampling layer.

    Returns:
        Model ``(B, *input_shape) -> (B, *input_shape)`` reconstructions, with sub-models
        ``"vae_encoder"`` ``(B, *input_shape) -> [mean (B, latent_dim), log_var (B, latent_dim)]`` and
        ``"vae_decoder"`` ``(B, latent_dim) -> (B, *input_shape)``.
    """
    rank = _check_divisible(input_shape, len(filters), "vae")
    if latent_dim < 1:
        raise ValueError(f"latent_dim must be positive; got {latent_dim}")
    if kl_weight is None:
        kl_weight = 1.0 / math.prod(input_shape)

    image = keras.Input(shape=tuple(input_shape), name="image")
    x = _down_stack(image, filters, norm="none")
    feature_shape = tuple(x.shape[1:])
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    mean = layers.Dense(latent_dim, name="z_mean")(x)
    log_var = layers.Dense(latent_dim, name="z_log_var", kernel_initializer="zeros")(x)
    encoder = keras.Model(image, [mean, log_var], name="vae_encoder")

    z_in = keras.Input(shape=(latent_dim,), name="z")
    x = layers.Dense(dense_units, activation="relu", name="dense")(z_in)
    x = layers.Dense(math.prod(feature_shape), activation="relu", name="expand")(x)
    x = layers.Reshape(feature_shape, name="to_map")(x)
    x = _up_stack(x, filters, "none", rank)
    decoder = keras.Model(z_in, _output(x, input_shape[-1], rank, output_activation), name="vae_decoder")

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    mean, log_var = encoder(inputs)
    mean, log_var = KLDivergenceLoss(kl_weight, name="kl_divergence")([mean, log_var])
    z = Sampling(seed, name="sampling")([mean, log_var])
    return keras.Model(inputs, decoder(z), name=name)
