"""Generative adversarial networks: DCGAN, and pix2pix (U-Net generator + PatchGAN discriminator).

* :func:`dcgan_generator` maps a noise vector ``z`` to an image; :func:`dcgan_discriminator` maps an
  image to one real/fake logit. Train them against each other (the adversarial ``train_step`` lives
  in ``training/``).
* :func:`pix2pix_generator` translates an image into another image (MR -> CT, T1 -> T2, low dose ->
  full dose): a U-Net with skip connections and dropout as noise. :func:`patchgan_discriminator`
  looks at a (source, target) pair and outputs a *map* of logits, one per overlapping patch (70x70
  pixels at 256x256), which judges local texture while an L1 loss handles the low frequencies.

Discriminators output **logits** (no sigmoid): use ``keras.losses.BinaryCrossentropy(from_logits=True)``.
Generators end in ``tanh``: scale images to [-1, 1]. Weights start from N(0, 0.02) as in both papers.
Everything works for 2D images and 3D volumes (rank from the shape); the published configurations are 2D.

References:
    Goodfellow et al., "Generative adversarial nets", NeurIPS 2014.
    Radford, Metz & Chintala, "Unsupervised representation learning with deep convolutional
    generative adversarial networks", ICLR 2016 (DCGAN).
    Isola et al., "Image-to-image translation with conditional adversarial networks", CVPR 2017
    (pix2pix: U-Net generator, PatchGAN discriminator).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
from keras import layers

from models import blocks
from models.blocks import BN_MOMENTUM, set_bn_momentum
from models.registry import register


def _init():
    return keras.initializers.RandomNormal(0.0, 0.02)


def _check_divisible(shape: Sequence[int], levels: int, who: str) -> int:
    rank = blocks.spatial_rank(shape)
    factor = 2**levels
    if any(s is None or s % factor for s in shape[:-1]):
        raise ValueError(f"{who}: spatial size {tuple(shape[:-1])} must be fixed and divisible by {factor}")
    return rank


@register("dcgan_generator", family="GAN", topic="Generative adversarial networks",
          defaults={"latent_dim": 100, "output_shape": (64, 64, 3)},
          example={"latent_dim": 8, "output_shape": (16, 16, 1), "filters": (16, 8)})
def dcgan_generator(
    latent_dim: int = 100,
    output_shape: Sequence[int] = (64, 64, 3),
    *,
    filters: Sequence[int] = (1024, 512, 256, 128),
    kernel_size: int = 4,
    bn_momentum: float = BN_MOMENTUM,
    name: str = "dcgan_generator",
) -> keras.Model:
    """DCGAN generator (Radford et al. 2016): project ``z``, then upsample with transposed convs.

    ``z`` is projected to a ``(size / 2**L, ..., filters[0])`` map (``L = len(filters)``); each further
    stage doubles the size with a stride-2 transposed convolution, BatchNorm and ReLU; the last one
    outputs the image channels with ``tanh``. The defaults are the paper's 64x64 configuration.

    Args:
        latent_dim: length of the noise vector ``z``.
        output_shape: ``(H, W, C)`` or ``(D, H, W, C)``, divisible by ``2 ** len(filters)``.
        filters: channels of the projected map and of each upsampling stage.
        kernel_size: transposed-conv kernel (4 avoids checkerboard artefacts with stride 2).
        bn_momentum: momentum of batch norm's running statistics (Keras' 0.99); short runs need a
            lower momentum (e.g. 0.9) so running statistics keep up.

    Returns:
        Model ``(B, latent_dim) -> (B, *output_shape)`` with values in [-1, 1].
    """
    rank = _check_divisible(output_shape, len(filters), "dcgan_generator")
    start = tuple(s // 2 ** len(filters) for s in output_shape[:-1])
    z = keras.Input(shape=(latent_dim,), name="z")
    x = layers.Dense(math.prod(start) * filters[0], use_bias=False, kernel_initializer=_init(), name="project")(z)
    x = layers.Reshape((*start, filters[0]), name="to_map")(x)
    x = layers.BatchNormalization(name="project_norm")(x)
    x = layers.ReLU(name="project_act")(x)
    for i, f in enumerate(filters[1:]):
        x = blocks.conv_transpose(rank, f, kernel_size, strides=2, use_bias=False,
                                  kernel_initializer=_init(), name=f"up{i + 1}_conv")(x)
        x = layers.BatchNormalization(name=f"up{i + 1}_norm")(x)
        x = layers.ReLU(name=f"up{i + 1}_act")(x)
    x = blocks.conv_transpose(rank, output_shape[-1], kernel_size, strides=2,
                              kernel_initializer=_init(), name="to_image")(x)
    image = layers.Activation("tanh", dtype="float32", name="image")(x)
    return set_bn_momentum(keras.Model(z, image, name=name), bn_momentum)


@register("dcgan_discriminator", family="GAN", topic="Generative adversarial networks",
          defaults={"input_shape": (64, 64, 3)}, example={"input_shape": (16, 16, 1), "filters": (8, 16)})
def dcgan_discriminator(
    input_shape: Sequence[int] = (64, 64, 3),
    *,
    filters: Sequence[int] = (64, 128, 256, 512),
    kernel_size: int = 4,
    dropout: float = 0.0,
    bn_momentum: float = BN_MOMENTUM,
    name: str = "dcgan_discriminator",
) -> keras.Model:
    """DCGAN discriminator: stride-2 convs with LeakyReLU(0.2), BatchNorm after all but the first.

    Args:
        input_shape: ``(H, W, C)`` or ``(D, H, W, C)``.
        filters: channels of each stride-2 stage (paper: 64-128-256-512 at 64x64).
        kernel_size: conv kernel.
        dropout: dropout before the final dense layer (0 in the paper).
        bn_momentum: momentum of batch norm's running statistics (Keras' 0.99); short runs need a
            lower momentum (e.g. 0.9) so running statistics keep up.

    Returns:
        Model ``(B, *input_shape) -> (B, 1)`` real/fake **logits**.
    """
    rank = _check_divisible(input_shape, len(filters), "dcgan_discriminator")
    image = keras.Input(shape=tuple(input_shape), name="image")
    x = image
    for i, f in enumerate(filters):
        x = blocks.conv(rank, f, kernel_size, strides=2, use_bias=i == 0, kernel_initializer=_init(),
                        name=f"down{i + 1}_conv")(x)
        if i > 0:  # no BatchNorm on the input layer (Radford et al.)
            x = layers.BatchNormalization(name=f"down{i + 1}_norm")(x)
        x = layers.LeakyReLU(0.2, name=f"down{i + 1}_act")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Dense(1, kernel_initializer=_init(), name="logit_dense")(x)
    logit = layers.Activation("linear", dtype="float32", name="logit")(x)
    return set_bn_momentum(keras.Model(image, logit, name=name), bn_momentum)


def _down(x, filters: int, rank: int, *, norm: bool, name: str):
    """pix2pix encoder unit ``Ck``: 4x4 stride-2 conv, BatchNorm (optional), LeakyReLU(0.2)."""
    x = blocks.conv(rank, filters, 4, strides=2, use_bias=False, kernel_initializer=_init(), name=f"{name}_conv")(x)
    if norm:
        x = layers.BatchNormalization(name=f"{name}_norm")(x)
    return layers.LeakyReLU(0.2, name=f"{name}_act")(x)


def _up(x, filters: int, rank: int, *, dropout: float, name: str):
    """pix2pix decoder unit ``CDk``: 4x4 stride-2 transposed conv, BatchNorm, dropout, ReLU."""
    x = blocks.conv_transpose(rank, filters, 4, strides=2, use_bias=False, kernel_initializer=_init(),
                              name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_norm")(x)
    if dropout:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return layers.ReLU(name=f"{name}_act")(x)


@register("pix2pix_generator", family="GAN", topic="Generative adversarial networks",
          defaults={"input_shape": (256, 256, 3), "output_channels": 3},
          example={"input_shape": (32, 32, 1), "output_channels": 1, "filters": (8, 16, 32)})
def pix2pix_generator(
    input_shape: Sequence[int] = (256, 256, 3),
    output_channels: int = 3,
    *,
    filters: Sequence[int] = (64, 128, 256, 512, 512, 512, 512, 512),
    dropout: float = 0.5,
    dropout_levels: int = 3,
    bn_momentum: float = BN_MOMENTUM,
    name: str = "pix2pix_generator",
) -> keras.Model:
    """pix2pix U-Net generator (Isola et al. 2017): image in, translated image out.

    Encoder ``C64-C128-C256-C512-C512-C512-C512-C512`` (no BatchNorm on the first), decoder mirrors it
    with skip connections by concatenation, dropout 0.5 in the three innermost decoder units (the
    "noise" of a conditional GAN), and a final transposed conv with ``tanh``. The defaults are the
    paper's 256x256 configuration: 54,425,859 parameters with 3 input and 3 output channels, the same
    as the TensorFlow pix2pix tutorial (convolutions without bias where BatchNorm follows).

    Args:
        input_shape: ``(H, W, C)`` or ``(D, H, W, C)``, divisible by ``2 ** len(filters)``.
        output_channels: channels of the generated image.
        filters: channels of each encoder unit; fewer/smaller for small images, e.g. ``(32, 64, 128)``.
        dropout: decoder dropout rate (also active in training only).
        dropout_levels: how many innermost decoder units get dropout.
        bn_momentum: momentum of batch norm's running statistics (Keras' 0.99); short runs need a
            lower momentum (e.g. 0.9) so running statistics keep up.

    Returns:
        Model ``(B, *input_shape) -> (B, *spatial, output_channels)`` in [-1, 1].
    """
    rank = _check_divisible(input_shape, len(filters), "pix2pix_generator")
    source = keras.Input(shape=tuple(input_shape), name="source")
    x = source
    skips = []
    for i, f in enumerate(filters):
        x = _down(x, f, rank, norm=i > 0, name=f"down{i + 1}")
        skips.append(x)
    # Decoder: the innermost feature map is the start, every other encoder output is a skip.
    for i, (f, skip) in enumerate(zip(reversed(filters[:-1]), reversed(skips[:-1]), strict=True)):
        x = _up(x, f, rank, dropout=dropout if i < dropout_levels else 0.0, name=f"up{i + 1}")
        x = layers.Concatenate(name=f"up{i + 1}_skip")([x, skip])
    x = blocks.conv_transpose(rank, output_channels, 4, strides=2, kernel_initializer=_init(), name="to_image")(x)
    target = layers.Activation("tanh", dtype="float32", name="target")(x)
    return set_bn_momentum(keras.Model(source, target, name=name), bn_momentum)


@register("patchgan_discriminator", family="GAN", topic="Generative adversarial networks",
          defaults={"input_shape": (256, 256, 3), "target_channels": 3},
          example={"input_shape": (32, 32, 1), "target_channels": 1, "filters": (8, 16, 32)})
def patchgan_discriminator(
    input_shape: Sequence[int] = (256, 256, 3),
    target_channels: int | None = None,
    *,
    filters: Sequence[int] = (64, 128, 256, 512),
    bn_momentum: float = BN_MOMENTUM,
    name: str = "patchgan_discriminator",
) -> keras.Model:
    """PatchGAN discriminator (Isola et al. 2017): one real/fake logit per image patch.

    It takes the source and target images as one tensor, concatenated along channels (source first),
    which is what :class:`training.adversarial.Pix2PixTrainer` feeds its discriminator;
    ``len(filters) - 1`` stride-2 ``Ck`` units and one stride-1 unit follow, then a stride-1 conv to
    one channel. With the defaults each output logit
    sees a 70x70 patch of a 256x256 input and the output map is 30x30.

    Args:
        input_shape: shape of the source image ``(H, W, C)`` or ``(D, H, W, C)``.
        target_channels: channels of the target image (default: same as the source).
        filters: channels of each unit.
        bn_momentum: momentum of batch norm's running statistics (Keras' 0.99); short runs need a
            lower momentum (e.g. 0.9) so running statistics keep up.

    Returns:
        Model ``(B, *spatial, C + target_channels) -> (B, *patch_grid, 1)`` logits, where ``C`` is
        ``input_shape[-1]``: ``concat([source, target], axis=-1)`` in.
    """
    rank = _check_divisible(input_shape, len(filters) - 1, "patchgan_discriminator")
    target_channels = target_channels or input_shape[-1]
    pair = keras.Input(shape=(*input_shape[:-1], input_shape[-1] + target_channels), name="pair")
    x = pair
    for i, f in enumerate(filters[:-1]):
        x = _down(x, f, rank, norm=i > 0, name=f"down{i + 1}")
    x = blocks.zero_pad(rank, 1, name="pad1")(x)
    x = blocks.conv(rank, filters[-1], 4, padding="valid", use_bias=False, kernel_initializer=_init(),
                    name="patch_conv")(x)
    x = layers.BatchNormalization(name="patch_norm")(x)
    x = layers.LeakyReLU(0.2, name="patch_act")(x)
    x = blocks.zero_pad(rank, 1, name="pad2")(x)
    x = blocks.conv(rank, 1, 4, padding="valid", kernel_initializer=_init(), name="logit_conv")(x)
    logits = layers.Activation("linear", dtype="float32", name="logits")(x)
    return set_bn_momentum(keras.Model(pair, logits, name=name), bn_momentum)
