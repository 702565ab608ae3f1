"""Densely connected networks (DenseNet-121) for 2D images and 3D volumes.

Reference: Huang, Liu, van der Maaten, Weinberger, "Densely Connected Convolutional Networks",
CVPR 2017, Table 1 (DenseNet-BC: bottleneck layers and compression 0.5). The 3D form is the same
network with 3D convolutions (as in MONAI's ``DenseNet121(spatial_dims=3)``).

Example::

    import models
    model = models.get("densenet121", input_shape=(64, 64, 64, 1), num_classes=2)   # 3D
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from models.blocks import (
    BN_MOMENTUM,
    classifier_head,
    conv_norm_act,
    dense_block,
    max_pool,
    normalization,
    spatial_rank,
    transition,
    set_bn_momentum,
)
from models.registry import preset, register

_TOPIC = "CNN architectures: DenseNet"


@register(
    "densenet",
    family="DenseNet",
    topic=_TOPIC,
    ranks=(2, 3),
    defaults=dict(input_shape=(224, 224, 3), num_classes=1000),
    example=dict(
        input_shape=(16, 16, 1),
        num_classes=3,
        blocks=(2, 2),
        growth_rate=4,
        init_filters=8,
        stem="small",
    ),
)
def densenet(
    input_shape: Sequence[int | None],
    num_classes: int,
    blocks: Sequence[int] = (6, 12, 24, 16),
    growth_rate: int = 32,
    init_filters: int = 64,
    compression: float = 0.5,
    bottleneck_width: int = 4,
    norm: str = "batch",
    dropout: float = 0.0,
    stem: str = "imagenet",
    final_activation: str | None = "softmax",
    *,
    bn_momentum: float = BN_MOMENTUM,
    name: str = "densenet",
) -> keras.Model:
    """A DenseNet-BC classifier; the spatial rank (2D or 3D) comes from ``input_shape``.

    Stem, then dense blocks separated by transition layers (``1x1`` convolution keeping
    ``compression`` of the channels, then ``2x2`` average pooling), then norm -> ReLU -> global average
    pooling -> dense.

    Args:
        input_shape: ``(H, W, C)`` or ``(D, H, W, C)``.
        num_classes: output classes.
        blocks: layers per dense block (``(6, 12, 24, 16)`` is DenseNet-121).
        growth_rate: channels each layer adds (``k = 32``).
        init_filters: channels of the stem convolution (``2k = 64``).
        compression: fraction of channels a transition keeps (0.5).
        bottleneck_width: ``1x1`` bottleneck of ``bottleneck_width * growth_rate`` channels (4).
        norm: normalisation (see ``models.blocks.normalization``).
        dropout: dropout inside dense layers (0 on ImageNet; the paper uses 0.2 without augmentation).
        stem: ``"imagenet"`` (``7x7`` stride 2 + ``3x3`` max pool stride 2) or ``"small"``
            (one ``3x3`` convolution, for inputs of 32-64 pixels).
        final_activation: ``"softmax"``, ``"sigmoid"`` or ``None`` for logits.
        bn_momentum: momentum of batch norm's running statistics (Keras' 0.99); short runs need a
            lower momentum (e.g. 0.9) so running statistics keep up.
        name: model name.

    Returns:
        ``keras.Model`` mapping ``(B, *spatial, C)`` to ``(B, num_classes)`` float32.
    """
    rank = spatial_rank(input_shape)
    if stem not in ("imagenet", "small"):
        raise ValueError(f"densenet: stem must be 'imagenet' or 'small'; got {stem!r}")
    if not blocks or any(int(b) < 1 for b in blocks):
        raise ValueError(
            f"densenet: blocks must be a non-empty list of positive integers; got {blocks!r}"
        )
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    if stem == "imagenet":
        x = conv_norm_act(inputs, init_filters, 7, strides=2, norm=norm, name="stem")
        x = max_pool(rank, 3, strides=2, padding="same", name="stem_pool")(x)
    else:
        x = conv_norm_act(inputs, init_filters, 3, norm=norm, name="stem")
    for i, num_layers in enumerate(blocks):
        x = dense_block(
            x,
            int(num_layers),
            growth_rate,
            bottleneck_width=bottleneck_width,
            norm=norm,
            dropout=dropout,
            name=f"block{i + 1}",
        )
        if i < len(blocks) - 1:
            x = transition(x, compression, norm=norm, name=f"transition{i + 1}")
    x = normalization(norm, name="final_norm")(x)
    x = layers.Activation("relu", name="final_act")(x)
    outputs = classifier_head(x, num_classes, activation=final_activation)
    return set_bn_momentum(keras.Model(inputs, outputs, name=name), bn_momentum)


densenet121 = preset(
    "densenet121",
    densenet,
    """DenseNet-121 (Huang et al. 2017, Table 1): blocks ``(6, 12, 24, 16)``, ``k = 32``, BC variant.

    Paper, torchvision and ``keras.applications.DenseNet121`` agree (no convolution biases):
    8,062,504 parameters for ImageNet (224 x 224 x 3, 1000 classes).

    Args:
        input_shape, num_classes, **kwargs: see :func:`densenet`.

    Returns:
        The ``keras.Model``.
    """,
    fixed=dict(blocks=(6, 12, 24, 16)),
    settable=dict(growth_rate=32),
    family="DenseNet",
    topic=_TOPIC,
    ranks=(2, 3),
    defaults=dict(input_shape=(224, 224, 3), num_classes=1000),
    example=dict(input_shape=(32, 32, 1), num_classes=3, growth_rate=4, init_filters=8),
)
