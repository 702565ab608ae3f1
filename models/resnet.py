"""Residual networks (ResNet-18, -34, -50) for 2D images and 3D volumes.

Reference: He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016, Table 1.
The 3D form (Hara et al., "Can Spatiotemporal 3D CNNs Retrace the History of 2D CNNs and ImageNet?",
CVPR 2018; MedicalNet, Chen et al. 2019) is the same network with 3D convolutions, which is what
``input_shape=(D, H, W, C)`` gives here.

Example::

    import models
    model = models.get("resnet18", input_shape=(64, 64, 1), num_classes=2, stem="small")
    model = models.get("resnet50", input_shape=(32, 96, 96, 1), num_classes=3)   # 3D
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from models.blocks import (
    BN_MOMENTUM,
    classifier_head,
    conv_norm_act,
    max_pool,
    residual_block,
    set_bn_momentum,
    spatial_rank,
)
from models.registry import preset, register

STEMS = ("imagenet", "small")
_TOPIC = "CNN architectures: ResNet"


@register(
    "resnet",
    family="ResNet",
    topic=_TOPIC,
    ranks=(2, 3),
    defaults=dict(input_shape=(224, 224, 3), num_classes=1000, blocks=(2, 2, 2, 2)),
    example=dict(
        input_shape=(16, 16, 1), num_classes=3, blocks=(1, 1), base_filters=4, stem="small"
    ),
)
def resnet(
    input_shape: Sequence[int | None],
    num_classes: int,
    blocks: Sequence[int] = (2, 2, 2, 2),
    bottleneck: bool = False,
    base_filters: int = 64,
    norm: str = "batch",
    use_bias: bool = False,
    stem: str = "imagenet",
    dropout: float = 0.0,
    final_activation: str | None = "softmax",
    *,
    bn_momentum: float = BN_MOMENTUM,
    name: str = "resnet",
) -> keras.Model:
    """A ResNet classifier; the spatial rank (2D or 3D) comes from ``input_shape``.

    Stage ``i`` has ``blocks[i]`` residual blocks of width ``base_filters * 2**i``; every stage but the
    first halves the resolution with a stride-2 first block. Head: global average pooling, dense.

    Args:
        input_shape: ``(H, W, C)`` or ``(D, H, W, C)``.
        num_classes: output classes.
        blocks: residual blocks per stage (``(2, 2, 2, 2)`` ResNet-18, ``(3, 4, 6, 3)`` ResNet-34/-50).
        bottleneck: bottleneck blocks (``1x1 -> 3x3 -> 1x1``, 4x expansion) as in ResNet-50 and deeper.
        base_filters: width of the first stage (64 in the paper).
        norm: normalisation (``"batch"`` in the paper; ``"instance"``/``"group"`` for tiny 3D batches).
        use_bias: biases in the convolutions. The paper and torchvision have none (batch norm's offset
            makes them redundant); ``keras.applications.ResNet50`` has them.
        stem: ``"imagenet"`` (``7x7`` stride-2 convolution + ``3x3`` stride-2 max pool: input / 4) or
            ``"small"`` (one ``3x3`` convolution, no down-sampling; for inputs of 32-64 pixels).
        dropout: dropout before the classifier (0 in the paper).
        final_activation: ``"softmax"``, ``"sigmoid"`` or ``None`` for logits.
        bn_momentum: momentum of batch norm's running statistics (Keras' 0.99); short runs need a
            lower momentum (e.g. 0.9) so running statistics keep up.
        name: model name.

    Returns:
        ``keras.Model`` mapping ``(B, *spatial, C)`` to ``(B, num_classes)`` float32.
    """
    rank = spatial_rank(input_shape)
    if stem not in STEMS:
        raise ValueError(f"resnet: stem must be one of {STEMS}; got {stem!r}")
    if not blocks or any(int(b) < 1 for b in blocks):
        raise ValueError(
            f"resnet: blocks must be a non-empty list of positive integers; got {blocks!r}"
        )
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    if stem == "imagenet":
        x = conv_norm_act(
            inputs, base_filters, 7, strides=2, norm=norm, use_bias=use_bias, name="stem"
        )
        x = max_pool(rank, 3, strides=2, padding="same", name="stem_pool")(x)
    else:
        x = conv_norm_act(inputs, base_filters, 3, norm=norm, use_bias=use_bias, name="stem")
    for stage, num_blocks in enumerate(blocks):
        for b in range(int(num_blocks)):
            x = residual_block(
                x,
                base_filters * 2**stage,
                strides=2 if (b == 0 and stage > 0) else 1,
                bottleneck=bottleneck,
                norm=norm,
                use_bias=use_bias,
                name=f"stage{stage + 1}_block{b + 1}",
            )
    outputs = classifier_head(x, num_classes, activation=final_activation, dropout=dropout)
    return set_bn_momentum(keras.Model(inputs, outputs, name=name), bn_momentum)


# What the registry knows of the ResNet presets (the ImageNet configuration; a small one to test).
_PRESET = dict(
    family="ResNet",
    topic=_TOPIC,
    ranks=(2, 3),
    defaults=dict(input_shape=(224, 224, 3), num_classes=1000),
    example=dict(input_shape=(16, 16, 1), num_classes=3, base_filters=4, stem="small"),
)


resnet18 = preset(
    "resnet18",
    resnet,
    """ResNet-18 (He et al. 2016, Table 1): basic blocks ``(2, 2, 2, 2)``, 11.7M parameters.

    Follows the paper and torchvision: no convolution biases, so the ImageNet configuration
    (224 x 224 x 3, 1000 classes) has torchvision's 11,689,512 trainable parameters
    (``count_params()`` gives 11,699,112: Keras also counts batch norm's moving mean and variance).

    Args:
        input_shape, num_classes, **kwargs: see :func:`resnet`.

    Returns:
        The ``keras.Model``.
    """,
    fixed=dict(blocks=(2, 2, 2, 2), bottleneck=False),
    **_PRESET,
)


resnet34 = preset(
    "resnet34",
    resnet,
    """ResNet-34 (He et al. 2016, Table 1): basic blocks ``(3, 4, 6, 3)``, 21.8M parameters.

    Follows the paper and torchvision (no convolution biases): 21,797,672 trainable parameters,
    as torchvision (21,814,696 with batch norm's moving statistics).

    Args:
        input_shape, num_classes, **kwargs: see :func:`resnet`.

    Returns:
        The ``keras.Model``.
    """,
    fixed=dict(blocks=(3, 4, 6, 3), bottleneck=False),
    **_PRESET,
)


resnet50 = preset(
    "resnet50",
    resnet,
    """ResNet-50 (He et al. 2016, Table 1): bottleneck blocks ``(3, 4, 6, 3)``.

    Follows ``keras.applications.ResNet50`` (v1: stride on the first ``1x1`` convolution, biases in
    every convolution): 25,636,712 parameters for ImageNet, equal to ``keras.applications``. With
    ``use_bias=False`` it has the paper's/torchvision's 25,557,032 trainable parameters (torchvision
    puts the stride on the ``3x3`` convolution, "v1.5"; the count is the same).

    Args:
        input_shape, num_classes, **kwargs: see :func:`resnet`.
        use_bias: convolution biases (see above).

    Returns:
        The ``keras.Model``.
    """,
    fixed=dict(blocks=(3, 4, 6, 3), bottleneck=True),
    settable=dict(use_bias=True),
    **dict(_PRESET, defaults=dict(_PRESET["defaults"], use_bias=True)),
)
