"""Classic convolutional networks: LeNet-5, AlexNet, VGG-11 and VGG-16 (VGG-style nets also in 3D).

References:
    LeCun, Bottou, Bengio, Haffner, "Gradient-Based Learning Applied to Document Recognition",
    Proc. IEEE 1998 (LeNet-5). Krizhevsky, Sutskever, Hinton, "ImageNet Classification with Deep
    Convolutional Neural Networks", NeurIPS 2012 (AlexNet). Simonyan, Zisserman, "Very Deep
    Convolutional Networks for Large-Scale Image Recognition", ICLR 2015 (VGG, Table 1 configurations
    A = VGG-11 and D = VGG-16).

Example::

    import models
    lenet = models.get("lenet5")                                        # 32 x 32 x 1, 10 classes
    vgg3d = models.get("vgg", input_shape=(32, 32, 32, 1), num_classes=2,
                       convs_per_stage=(1, 1, 2), filters=(16, 32, 64), head="gap")
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from models.blocks import (
    BN_MOMENTUM,
    avg_pool,
    classifier_head,
    conv,
    conv_norm_act,
    max_pool,
    spatial_rank,
    zero_pad,
    set_bn_momentum,
)
from models.registry import preset, register

_TOPIC = "CNNs: classic architectures"
HEADS = ("flatten", "gap")


def vgg_block(
    x: keras.KerasTensor,
    filters: int,
    convs: int,
    *,
    norm: str = "none",
    activation: str = "relu",
    name: str | None = None,
) -> keras.KerasTensor:
    """A VGG stage: ``convs`` x (``3x3`` conv -> [norm] -> act), then ``2x2`` max pooling.

    Args:
        x: ``(B, *spatial, C)`` tensor (2D or 3D).
        filters: channels of every convolution in the stage.
        convs: number of convolutions.
        norm: ``"none"`` (the paper) or a normalisation name (``"batch"`` gives the ``_bn`` variants).
        activation: activation after each convolution.
        name: prefix for layer names.

    Returns:
        ``(B, *spatial / 2, filters)`` tensor.
    """
    rank = len(x.shape) - 2
    for i in range(convs):
        x = conv_norm_act(
            x,
            filters,
            3,
            norm=norm,
            activation=activation,
            name=f"{name}_conv{i + 1}" if name else None,
        )
    return max_pool(rank, 2, strides=2, name=f"{name}_pool" if name else None)(x)


def _dense_head(x, fc_units, num_classes, dropout, final_activation, activation="relu"):
    """Flatten -> [dense -> act -> dropout] per entry of ``fc_units`` -> classifier."""
    x = layers.Flatten(name="flatten")(x)
    for i, units in enumerate(fc_units):
        x = layers.Dense(units, activation=activation, name=f"fc{i + 1}")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"fc{i + 1}_dropout")(x)
    return classifier_head(x, num_classes, activation=final_activation, pooling=None)


@register(
    "vgg",
    family="VGG",
    topic=_TOPIC,
    ranks=(2, 3),
    defaults=dict(input_shape=(224, 224, 3), num_classes=1000),
    example=dict(
        input_shape=(16, 16, 1),
        num_classes=3,
        convs_per_stage=(1, 1),
        filters=(4, 8),
        fc_units=(16,),
    ),
)
def vgg(
    input_shape: Sequence[int | None],
    num_classes: int,
    convs_per_stage: Sequence[int] = (2, 2, 3, 3, 3),
    filters: Sequence[int] = (64, 128, 256, 512, 512),
    fc_units: Sequence[int] = (4096, 4096),
    norm: str = "none",
    head: str = "flatten",
    dropout: float = 0.5,
    final_activation: str | None = "softmax",
    *,
    bn_momentum: float = BN_MOMENTUM,
    name: str = "vgg",
) -> keras.Model:
    """A VGG-style network for 2D images or 3D volumes (rank from ``input_shape``).

    Args:
        input_shape: ``(H, W, C)`` or ``(D, H, W, C)``; with ``head="flatten"`` the spatial sizes
            must be known.
        num_classes: output classes.
        convs_per_stage: ``3x3`` convolutions per stage (VGG-11 ``(1, 1, 2, 2, 2)``, VGG-16
            ``(2, 2, 3, 3, 3)``); each stage ends with ``2x2`` max pooling.
        filters: channels per stage (same length as ``convs_per_stage``).
        fc_units: hidden dense layers of the head (``(4096, 4096)`` in the paper).
        norm: ``"none"`` (paper) or e.g. ``"batch"``.
        head: ``"flatten"`` (the paper's fully connected head) or ``"gap"`` (global average pooling,
            far fewer parameters; the usual choice for 3D volumes).
        dropout: dropout after each hidden dense layer (0.5 in the paper; no parameters).
        final_activation: ``"softmax"``, ``"sigmoid"`` or ``None`` for logits.
        bn_momentum: momentum of batch norm's running statistics (Keras' 0.99); short runs need a
            lower momentum (e.g. 0.9) so running statistics keep up.
        name: model name.

    Returns:
        ``keras.Model`` mapping ``(B, *spatial, C)`` to ``(B, num_classes)`` float32.
    """
    spatial_rank(input_shape)
    if len(convs_per_stage) != len(filters):
        raise ValueError(
            f"vgg: convs_per_stage {tuple(convs_per_stage)} and filters {tuple(filters)} must have the same length"
        )
    if head not in HEADS:
        raise ValueError(f"vgg: head must be one of {HEADS}; got {head!r}")
    _check_divisible("vgg", input_shape, 2 ** len(filters), head == "flatten")
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    for i, (n, f) in enumerate(zip(convs_per_stage, filters, strict=True)):
        x = vgg_block(x, int(f), int(n), norm=norm, name=f"block{i + 1}")
    if head == "flatten":
        outputs = _dense_head(x, fc_units, num_classes, dropout, final_activation)
    else:
        outputs = classifier_head(x, num_classes, activation=final_activation, dropout=dropout)
    return set_bn_momentum(keras.Model(inputs, outputs, name=name), bn_momentum)


def _check_divisible(who, input_shape, factor, need_known):
    spatial = tuple(input_shape[:-1])
    if need_known and any(s is None for s in spatial):
        raise ValueError(
            f"{who}: a flatten head needs known spatial sizes; got {spatial} (use head='gap')"
        )
    if any(s is not None and s < factor for s in spatial):
        raise ValueError(f"{who}: every spatial size must be at least {factor}; got {spatial}")


# What the registry knows of both VGG presets (the ImageNet configuration; a small one to test).
_VGG_PRESET = dict(
    family="VGG",
    topic=_TOPIC,
    ranks=(2, 3),
    defaults=dict(input_shape=(224, 224, 3), num_classes=1000),
    example=dict(input_shape=(32, 32, 1), num_classes=3, filters=(4, 4, 8, 8, 8), fc_units=(16, 16)),
)


vgg11 = preset(
    "vgg11",
    vgg,
    """VGG-11 (Simonyan and Zisserman 2015, configuration A): 132,863,336 parameters on ImageNet.

    Args:
        input_shape, num_classes, **kwargs: see :func:`vgg`.

    Returns:
        The ``keras.Model``.
    """,
    fixed=dict(convs_per_stage=(1, 1, 2, 2, 2)),
    **_VGG_PRESET,
)


vgg16 = preset(
    "vgg16",
    vgg,
    """VGG-16 (Simonyan and Zisserman 2015, configuration D): 138,357,544 parameters on ImageNet.

    Same layers and count as ``keras.applications.VGG16`` (which leaves out the paper's dropout; it
    has no parameters).

    Args:
        input_shape, num_classes, **kwargs: see :func:`vgg`.

    Returns:
        The ``keras.Model``.
    """,
    fixed=dict(convs_per_stage=(2, 2, 3, 3, 3)),
    **_VGG_PRESET,
)


@register(
    "lenet5",
    family="LeNet",
    topic=_TOPIC,
    ranks=(2, 3),
    defaults=dict(input_shape=(32, 32, 1), num_classes=10),
    example=dict(input_shape=(16, 16, 1), num_classes=3),
)
def lenet5(
    input_shape: Sequence[int | None] = (32, 32, 1),
    num_classes: int = 10,
    activation: str = "tanh",
    final_activation: str | None = "softmax",
    *,
    name: str = "lenet5",
) -> keras.Model:
    """LeNet-5 (LeCun et al. 1998) in its common modern form: 61,706 parameters for 32 x 32 x 1.

    C1: 6 ``5x5`` convolutions -> S2: ``2x2`` average pooling -> C3: 16 ``5x5`` convolutions ->
    S4: ``2x2`` average pooling -> C5/F6: dense 120 and 84 -> 10 outputs, tanh throughout. The paper's
    trainable subsampling coefficients, the sparse C3 connection table and the RBF output layer are
    replaced by plain pooling, full connections and softmax, as in most course material; the
    "about 61.7k" parameter count refers to this form.

    Args:
        input_shape: ``(32, 32, C)`` in the paper (any size >= 16 works; 3D volumes too).
        num_classes: output classes.
        activation: hidden activation (``"tanh"``; ``"relu"`` trains faster).
        final_activation: ``"softmax"`` or ``None`` for logits.
        name: model name.

    Returns:
        ``keras.Model`` mapping ``(B, *spatial, C)`` to ``(B, num_classes)`` float32.
    """
    rank = spatial_rank(input_shape)
    _check_divisible("lenet5", input_shape, 16, True)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = conv(rank, 6, 5, padding="valid", activation=activation, name="c1")(inputs)
    x = avg_pool(rank, 2, name="s2")(x)
    x = conv(rank, 16, 5, padding="valid", activation=activation, name="c3")(x)
    x = avg_pool(rank, 2, name="s4")(x)
    outputs = _dense_head(x, (120, 84), num_classes, 0.0, final_activation, activation=activation)
    return keras.Model(inputs, outputs, name=name)


@register(
    "alexnet",
    family="AlexNet",
    topic=_TOPIC,
    ranks=(2,),
    defaults=dict(input_shape=(224, 224, 3), num_classes=1000),
    example=dict(
        input_shape=(64, 64, 1), num_classes=3, filters=(4, 8, 8, 8, 8), fc_units=(16, 16)
    ),
)
def alexnet(
    input_shape: Sequence[int | None] = (224, 224, 3),
    num_classes: int = 1000,
    filters: Sequence[int] = (64, 192, 384, 256, 256),
    fc_units: Sequence[int] = (4096, 4096),
    dropout: float = 0.5,
    final_activation: str | None = "softmax",
    *,
    name: str = "alexnet",
) -> keras.Model:
    """AlexNet (Krizhevsky et al. 2012) in the single-stream form of torchvision: 61,100,840 parameters.

    ``11x11`` stride-4 conv -> max pool -> ``5x5`` conv -> max pool -> three ``3x3`` convs -> max pool
    -> dense 4096 -> dense 4096 -> classes, ReLU and dropout 0.5 as in the paper. The default widths
    ``(64, 192, 384, 256, 256)`` follow torchvision (the "one weird trick" variant); the paper's
    two-GPU model had ``(96, 256, 384, 384, 256)`` with grouped convolutions and local response
    normalisation (about 61M parameters too); pass ``filters=(96, 256, 384, 384, 256)`` for its
    widths without groups (62,378,344 parameters).

    Args:
        input_shape: ``(224, 224, C)`` (other sizes >= 64 work; the flattened size changes).
        num_classes: output classes.
        filters: channels of the five convolutions.
        fc_units: hidden dense layers.
        dropout: dropout after each hidden dense layer (0.5, as in the paper).
        final_activation: ``"softmax"`` or ``None`` for logits.
        name: model name.

    Returns:
        ``keras.Model`` mapping ``(B, H, W, C)`` to ``(B, num_classes)`` float32.
    """
    rank = spatial_rank(input_shape)
    if len(filters) != 5:
        raise ValueError(f"alexnet: filters must list 5 conv widths; got {tuple(filters)}")
    _check_divisible("alexnet", input_shape, 64, True)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = zero_pad(rank, 2, name="conv1_pad")(inputs)
    x = conv(rank, filters[0], 11, strides=4, padding="valid", activation="relu", name="conv1")(x)
    x = max_pool(rank, 3, strides=2, name="pool1")(x)
    x = conv(rank, filters[1], 5, activation="relu", name="conv2")(x)
    x = max_pool(rank, 3, strides=2, name="pool2")(x)
    for i, f in enumerate(filters[2:]):
        x = conv(rank, f, 3, activation="relu", name=f"conv{i + 3}")(x)
    x = max_pool(rank, 3, strides=2, name="pool5")(x)
    outputs = _dense_head(x, fc_units, num_classes, dropout, final_activation)
    return keras.Model(inputs, outputs, name=name)
