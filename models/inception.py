"""Inception block and GoogLeNet (Inception v1), 2D and 3D.

Reference: Szegedy et al., "Going Deeper with Convolutions", CVPR 2015, Table 1 and Figure 3.

Example::

    import models
    model = models.get("googlenet")                               # 224 x 224 x 3, 1000 classes
    small = models.get("googlenet", input_shape=(32, 32, 1), num_classes=10, stem="small",
                       width_multiplier=0.25)
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from models.blocks import (
    avg_pool,
    BN_MOMENTUM,
    classifier_head,
    conv_norm_act,
    max_pool,
    set_bn_momentum,
    spatial_rank,
)
from models.registry import register

_TOPIC = "CNN architectures: Inception"

# Table 1 of the paper: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
GOOGLENET_BLOCKS = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


def inception_block(
    x: keras.KerasTensor,
    filters: Sequence[int],
    *,
    norm: str = "none",
    name: str | None = None,
) -> keras.KerasTensor:
    """The Inception module with dimension reductions (Szegedy et al. 2015, Figure 3b).

    Four parallel branches, concatenated on the channel axis: ``1x1``; ``1x1 -> 3x3``;
    ``1x1 -> 5x5``; ``3x3`` max pool (stride 1) ``-> 1x1``. Every convolution is followed by ReLU.

    Args:
        x: ``(B, *spatial, C)`` tensor (2D or 3D).
        filters: ``(n1x1, n3x3_reduce, n3x3, n5x5_reduce, n5x5, pool_proj)`` as in Table 1.
        norm: ``"none"`` (paper, convolutions with bias) or e.g. ``"batch"`` (as in later versions).
        name: prefix for layer names.

    Returns:
        ``(B, *spatial, n1x1 + n3x3 + n5x5 + pool_proj)`` tensor.
    """
    if len(filters) != 6:
        raise ValueError(
            f"inception_block: filters must have 6 entries (Table 1 columns); got {tuple(filters)}"
        )
    n1, r3, n3, r5, n5, pp = (max(1, int(f)) for f in filters)
    rank = len(x.shape) - 2
    p = (lambda s: f"{name}_{s}") if name else (lambda s: None)
    b1 = conv_norm_act(x, n1, 1, norm=norm, name=p("1x1"))
    b3 = conv_norm_act(x, r3, 1, norm=norm, name=p("3x3_reduce"))
    b3 = conv_norm_act(b3, n3, 3, norm=norm, name=p("3x3"))
    b5 = conv_norm_act(x, r5, 1, norm=norm, name=p("5x5_reduce"))
    b5 = conv_norm_act(b5, n5, 5, norm=norm, name=p("5x5"))
    bp = max_pool(rank, 3, strides=1, padding="same", name=p("pool"))(x)
    bp = conv_norm_act(bp, pp, 1, norm=norm, name=p("pool_proj"))
    return layers.Concatenate(name=p("concat"))([b1, b3, b5, bp])


def _aux_head(x, num_classes, rank, norm, final_activation, name, conv_filters=128, fc_units=1024):
    """Auxiliary classifier (paper, Section 5): 5x5/3 avg pool, 1x1 conv 128, dense 1024, dropout 0.7."""
    if all(s is None or s >= 5 for s in x.shape[1:-1]):
        x = avg_pool(rank, 5, strides=3, name=f"{name}_pool")(x)
    x = conv_norm_act(x, conv_filters, 1, norm=norm, name=f"{name}_conv")
    x = layers.Flatten(name=f"{name}_flatten")(x)
    x = layers.Dense(fc_units, activation="relu", name=f"{name}_fc")(x)
    x = layers.Dropout(0.7, name=f"{name}_dropout")(x)
    return classifier_head(x, num_classes, activation=final_activation, pooling=None, name=name)


@register(
    "googlenet",
    family="Inception",
    topic=_TOPIC,
    ranks=(2, 3),
    defaults=dict(input_shape=(224, 224, 3), num_classes=1000),
    example=dict(input_shape=(32, 32, 1), num_classes=3, width_multiplier=0.0625),
)
def googlenet(
    input_shape: Sequence[int | None] = (224, 224, 3),
    num_classes: int = 1000,
    aux_heads: bool = False,
    norm: str = "none",
    width_multiplier: float = 1.0,
    stem: str = "imagenet",
    dropout: float = 0.4,
    final_activation: str | None = "softmax",
    *,
    bn_momentum: float = BN_MOMENTUM,
    name: str = "googlenet",
) -> keras.Model:
    """GoogLeNet / Inception v1 (Szegedy et al. 2015, Table 1); the rank comes from ``input_shape``.

    Follows the paper: biases in every convolution, no batch norm, ``5x5`` convolutions in the
    ``5x5`` branch (torchvision uses ``3x3`` there and batch norm, 6,624,904 parameters), dropout 0.4
    before the classifier. The local response normalisation layers of the stem are left out (they
    have no parameters and later work found them unhelpful). Without auxiliary heads the ImageNet
    model has 6,998,552 parameters (the paper's Table 1 sums to "6.8M", rounding each row).

    Args:
        input_shape: ``(H, W, C)`` or ``(D, H, W, C)`` (224 x 224 x 3 in the paper).
        num_classes: output classes.
        aux_heads: add the two auxiliary classifiers on 4a and 4d (for training; the paper weights
            their losses by 0.3). The model then has three outputs ``[main, aux1, aux2]``, all
            ``(B, num_classes)``; build the model again with ``aux_heads=False`` and copy weights by
            name for inference, or simply use the first output.
        norm: ``"none"`` (paper) or ``"batch"`` (Inception v2 style).
        width_multiplier: scales every channel count (e.g. 0.25 for a CPU-sized model).
        stem: ``"imagenet"`` (``7x7``/2 conv, pool, ``1x1`` + ``3x3`` convs, pool: input / 8) or
            ``"small"`` (one ``3x3`` conv, no down-sampling, for 32-64 pixel inputs).
        dropout: dropout before the classifier (0.4).
        final_activation: ``"softmax"``, ``"sigmoid"`` or ``None`` for logits.
        bn_momentum: momentum of batch norm's running statistics (Keras' 0.99); short runs need a
            lower momentum (e.g. 0.9) so running statistics keep up.
        name: model name.

    Returns:
        ``keras.Model`` mapping ``(B, *spatial, C)`` to ``(B, num_classes)`` (or a list of three such
        outputs with ``aux_heads``), float32.
    """
    rank = spatial_rank(input_shape)
    if stem not in ("imagenet", "small"):
        raise ValueError(f"googlenet: stem must be 'imagenet' or 'small'; got {stem!r}")
    if width_multiplier <= 0:
        raise ValueError(f"googlenet: width_multiplier must be > 0; got {width_multiplier}")

    def w(n: int) -> int:
        return max(1, int(round(n * width_multiplier)))

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    if stem == "imagenet":
        x = conv_norm_act(inputs, w(64), 7, strides=2, norm=norm, name="conv1")
        x = max_pool(rank, 3, strides=2, padding="same", name="pool1")(x)
        x = conv_norm_act(x, w(64), 1, norm=norm, name="conv2_reduce")
        x = conv_norm_act(x, w(192), 3, norm=norm, name="conv2")
        x = max_pool(rank, 3, strides=2, padding="same", name="pool2")(x)
    else:
        x = conv_norm_act(inputs, w(192), 3, norm=norm, name="conv1")
    aux_outputs = []
    for block, filters in GOOGLENET_BLOCKS.items():
        if block in ("4a", "5a"):
            x = max_pool(rank, 3, strides=2, padding="same", name=f"pool_before_{block}")(x)
        x = inception_block(x, [w(f) for f in filters], norm=norm, name=f"inception{block}")
        if aux_heads and block in ("4a", "4d"):
            aux_name = f"aux{len(aux_outputs) + 1}"
            aux_outputs.append(
                _aux_head(x, num_classes, rank, norm, final_activation, aux_name, w(128), w(1024))
            )
    outputs = classifier_head(x, num_classes, activation=final_activation, dropout=dropout)
    return set_bn_momentum(keras.Model(inputs, [outputs, *aux_outputs] if aux_heads else outputs, name=name), bn_momentum)
