"""Branching and joining: a multi-stream network with one encoder per input, joined into one trunk.

Medical images often come as several inputs that look different but describe the same patient: two MR
contrasts of one slice, a CT and a PET, an image and a few clinical numbers (age, PSA, a one-hot task
indicator). A multi-stream network gives each image its own convolutional *stream* (its own weights,
so each can learn what matters in its contrast), then *joins* the streams by concatenating their
feature maps, and a shared trunk and head work on the joined features. Vector inputs get a small
dense stream whose output is broadcast over every voxel at the join, so it can condition every
position (this is how a one-hot task indicator "Z_i" steers one network between tasks).

With one image shape it is the single-stream network of the same design, the baseline to compare with.

Example::

    import models
    net = models.get("multistream", input_shapes=((64, 64, 1), (64, 64, 1)), num_classes=7,
                     task="segmentation")                 # two MR contrasts -> a tissue map
    net = models.get("multistream", input_shapes=((64, 64, 1), (3,)), num_classes=2)  # image + clinical
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from models import blocks
from models.blocks import BN_MOMENTUM, set_bn_momentum
from models.registry import register

TASKS = ("classification", "segmentation")


def _check(input_shapes, num_classes, task, stream_names):
    shapes = [tuple(s) for s in input_shapes]
    if not shapes:
        raise ValueError("multistream: input_shapes must name at least one input")
    images = [s for s in shapes if len(s) >= 3]
    bad = [s for s in shapes if len(s) not in (1, 3, 4)]
    if bad:
        raise ValueError(f"multistream: each input shape must be (H, W, C), (D, H, W, C) or (features,); got {bad}")
    if not images:
        raise ValueError(f"multistream: needs at least one image input (H, W, C) or (D, H, W, C); got {shapes}")
    if len({s[:-1] for s in images}) != 1:
        raise ValueError(f"multistream: image streams must share their spatial size to be joined; got {images}")
    if any(n is None for n in images[0][:-1]):
        raise ValueError(f"multistream: spatial sizes must be known (vector streams are broadcast to them); got {images[0]}")
    if task not in TASKS:
        raise ValueError(f"multistream: task must be one of {TASKS}; got {task!r}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"multistream: num_classes must be a positive integer; got {num_classes!r}")
    names = list(stream_names) if stream_names is not None else [f"stream{i}" for i in range(len(shapes))]
    if len(names) != len(shapes) or len(set(names)) != len(names):
        raise ValueError(f"multistream: stream_names needs {len(shapes)} distinct names; got {stream_names!r}")
    return shapes, names


@register(
    "multistream",
    family="Multi-stream",
    topic="Branching and joining: multi-stream networks",
    ranks=(2, 3),
    defaults=dict(input_shapes=((64, 64, 1), (64, 64, 1)), num_classes=2),
    example=dict(input_shapes=((16, 16, 1), (16, 16, 1), (3,)), stream_filters=(4, 8), joint_filters=(8,)),
)
def multistream(
    input_shapes: Sequence[Sequence[int]],
    num_classes: int,
    *,
    task: str = "classification",
    stream_filters: Sequence[int] = (16, 32),
    joint_filters: Sequence[int] = (32,),
    vector_units: int = 16,
    norm: str = "batch",
    dropout: float = 0.0,
    final_activation: str | None = "softmax",
    stream_names: Sequence[str] | None = None,
    bn_momentum: float = BN_MOMENTUM,
    name: str = "multistream",
) -> keras.Model:
    """A network with one stream per input, joined by concatenation into a shared trunk (2D or 3D).

    Image streams: ``len(stream_filters)`` blocks of 3x3(x3) convolution, normalisation and ReLU, each
    followed by 2x max pooling for ``task="classification"``; at full resolution for
    ``"segmentation"`` (a dense per-voxel output). Vector streams: one dense layer of ``vector_units``
    ReLU units, broadcast over the joined feature map. Trunk: ``joint_filters`` conv blocks, then a
    global-average-pooling classifier or a 1x1(x1) convolution per voxel.

    Args:
        input_shapes: one shape per stream: images ``(H, W, C)`` / ``(D, H, W, C)`` (all with the same
            spatial size) and vectors ``(features,)``; at least one image.
        num_classes: output classes (1 with ``final_activation="sigmoid"`` for a binary task).
        task: ``"classification"`` -> ``(B, num_classes)``; ``"segmentation"`` -> ``(B, *spatial, num_classes)``.
        stream_filters: channels of each image stream's blocks.
        joint_filters: channels of the trunk's blocks after the join (may be empty).
        vector_units: width of each vector stream.
        norm: normalisation, see :func:`models.blocks.normalization`.
        dropout: dropout before a classification head.
        final_activation: ``"softmax"``, ``"sigmoid"`` or ``None`` (logits).
        stream_names: names of the inputs (default ``stream0``, ``stream1``, ...): the model accepts a
            list in this order or a dict keyed by these names.
        bn_momentum: momentum of batch norm's running statistics (Keras' 0.99); short runs need a
            lower momentum (e.g. 0.9) so running statistics keep up.
        name: model name.

    Returns:
        A functional ``keras.Model`` with ``len(input_shapes)`` inputs and one float32 output.

    Raises:
        ValueError: no image input, image streams of different spatial sizes, spatial sizes not
            divisible by ``2 ** len(stream_filters)`` for classification, or an unknown ``task``.
    """
    shapes, names = _check(input_shapes, num_classes, task, stream_names)
    spatial = next(s for s in shapes if len(s) >= 3)[:-1]
    rank = len(spatial)
    levels = len(stream_filters) if task == "classification" else 0
    if any(n % 2 ** levels for n in spatial):
        raise ValueError(
            f"multistream: spatial size {spatial} must be divisible by 2**{levels} (one pooling per stream block)"
        )
    inputs, joined = [], []
    for shape, stream in zip(shapes, names):
        x = keras.Input(shape, name=stream)
        inputs.append(x)
        if len(shape) == 1:
            continue
        for level, filters in enumerate(stream_filters):
            x = blocks.conv_norm_act(x, filters, norm=norm, name=f"{stream}_block{level}")
            if task == "classification":
                x = blocks.max_pool(rank, 2, name=f"{stream}_pool{level}")(x)
        joined.append(x)
    grid = tuple(int(n) // 2 ** levels for n in spatial)
    for x, shape, stream in zip(inputs, shapes, names):
        if len(shape) != 1:
            continue
        v = layers.Dense(vector_units, activation="relu", name=f"{stream}_dense")(x)
        v = layers.Reshape((1,) * rank + (vector_units,), name=f"{stream}_reshape")(v)
        # Repeat the vector at every position of the joined map (UpSampling by the grid size).
        joined.append(blocks.upsample(rank, grid, name=f"{stream}_broadcast")(v))
    x = joined[0] if len(joined) == 1 else layers.Concatenate(name="join")(joined)
    for level, filters in enumerate(joint_filters):
        x = blocks.conv_norm_act(x, filters, norm=norm, name=f"joint_block{level}")
    if task == "classification":
        out = blocks.classifier_head(x, num_classes, activation=final_activation, dropout=dropout)
    else:
        x = blocks.conv(rank, num_classes, 1, name="head_conv")(x)
        out = layers.Activation(final_activation or "linear", dtype="float32", name="head_output")(x)
    return set_bn_momentum(keras.Model(inputs, out, name=name), bn_momentum)

