"""U-Net for 2D and 3D segmentation, with attention-gated and residual variants.

References:
    Ronneberger, Fischer, Brox, "U-Net: Convolutional Networks for Biomedical Image Segmentation",
    MICCAI 2015 (the original architecture). Cicek et al., "3D U-Net", MICCAI 2016 (the 3D form).
    Oktay et al., "Attention U-Net: Learning Where to Look for the Pancreas", MIDL 2018 (attention gates).
    Residual U-Net levels follow Zhang, Liu, Wang, "Road Extraction by Deep Residual U-Net", 2018.

Example::

    import models
    model = models.get("unet", input_shape=(96, 96, 1), num_classes=4)        # 2D
    model = models.get("unet", input_shape=(32, 64, 64, 1), num_classes=4)    # 3D
    model = models.get("attention_unet", input_shape=(64, 64, 1), num_classes=2)
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from models.blocks import (
    BN_MOMENTUM,
    attention_gate,
    conv,
    conv_norm_act,
    conv_transpose,
    max_pool,
    normalization,
    spatial_dropout,
    spatial_rank,
    upsample,
    set_bn_momentum,
)
from models.registry import preset, register

UPSAMPLING = ("transpose", "resize")
PADDING = ("same", "valid")

_TOPIC = "Segmentation: U-Net"


def _check_args(input_shape, num_classes, depth, base_filters, upsampling, padding, dropout) -> int:
    rank = spatial_rank(input_shape)
    if rank not in (2, 3):
        raise ValueError(
            f"unet: input_shape must be (H, W, C) or (D, H, W, C); got {tuple(input_shape)}"
        )
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"unet: num_classes must be a positive integer; got {num_classes!r}")
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(
            f"unet: depth (number of down-samplings) must be an integer >= 1; got {depth!r}"
        )
    if base_filters < 1:
        raise ValueError(f"unet: base_filters must be >= 1; got {base_filters}")
    if upsampling not in UPSAMPLING:
        raise ValueError(f"unet: upsampling must be one of {UPSAMPLING}; got {upsampling!r}")
    if padding not in PADDING:
        raise ValueError(f"unet: padding must be one of {PADDING}; got {padding!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"unet: dropout must be in [0, 1); got {dropout}")
    spatial = tuple(input_shape[:-1])
    if padding == "same":
        factor = 2**depth
        bad = [s for s in spatial if s is not None and s % factor]
        if bad:
            raise ValueError(
                f"unet: every spatial size must be divisible by 2**depth = {factor} (depth={depth}); "
                f"got spatial shape {spatial}. Crop or pad the input, or lower depth."
            )
    else:
        for s in spatial:
            if s is not None:
                valid_output_size(s, depth)  # raises with the sizes that would work
    return rank


def valid_output_size(size: int, depth: int, convs_per_level: int = 2, kernel_size: int = 3) -> int:
    """Output size of an unpadded ("valid") U-Net along one axis, as in the 2015 paper.

    Every ``kernel_size`` convolution trims ``kernel_size - 1`` voxels, and every pooling needs an
    even size. For the paper's configuration, 572 -> 388.

    Args:
        size: input size along the axis.
        depth: number of down-samplings.
        convs_per_level, kernel_size: convolutions per level and their kernel.

    Returns:
        The output size along that axis.

    Raises:
        ValueError: if some pooling would see an odd size or a size drops below 1.
    """
    trim = convs_per_level * (kernel_size - 1)
    s = size
    for level in range(depth):
        s -= trim
        if s < 2 or s % 2:
            raise ValueError(
                f"unet (padding='valid'): input size {size} gives odd or too small size {s} before pooling "
                f"at level {level}; choose a size such as {_valid_sizes_hint(depth, trim)}"
            )
        s //= 2
    s -= trim
    for _ in range(depth):
        s = 2 * s - trim
    if s < 1:
        raise ValueError(
            f"unet (padding='valid'): input size {size} is too small for depth {depth}"
        )
    return s


def _valid_sizes_hint(depth: int, trim: int) -> str:
    # Work back from a bottleneck output of 4..6 voxels to the input sizes that pool evenly.
    sizes = []
    for bottom in (4, 5, 6):
        s = bottom + trim
        for _ in range(depth):
            s = 2 * s + trim
        sizes.append(str(s))
    return ", ".join(sizes)


def _conv_block(x, filters, *, rank, norm, activation, residual, padding, convs, kernel_size, name):
    """``convs`` x (conv -> norm -> act); with ``residual`` a 1x1 projected shortcut is added."""
    shortcut = x
    for i in range(convs):
        last = i == convs - 1
        x = conv_norm_act(
            x,
            filters,
            kernel_size,
            norm=norm,
            activation=None if (residual and last) else activation,
            padding=padding,
            name=f"{name}_{i + 1}",
        )
    if residual:
        if padding == "valid":
            raise ValueError(
                "unet: residual=True needs padding='same' (the shortcut must keep its size)"
            )
        if shortcut.shape[-1] != filters:
            shortcut = conv(rank, filters, 1, use_bias=norm == "none", name=f"{name}_proj_conv")(
                shortcut
            )
            shortcut = normalization(norm, name=f"{name}_proj_norm")(shortcut)
        x = layers.Add(name=f"{name}_add")([shortcut, x])
        x = layers.Activation(activation, name=f"{name}_out")(x)
    return x


def _center_crop(skip, target, rank, name):
    """Crop ``skip`` symmetrically to ``target``'s spatial shape (the 2015 paper's valid-padding skips)."""
    cropping = []
    for s, t in zip(skip.shape[1:-1], target.shape[1:-1], strict=True):
        total = s - t
        cropping.append((total // 2, total - total // 2))
    if not any(a or b for a, b in cropping):
        return skip
    crop_layer = {2: layers.Cropping2D, 3: layers.Cropping3D}[rank]
    return crop_layer(tuple(cropping), name=name)(skip)


@register(
    "unet",
    family="U-Net",
    topic=_TOPIC,
    ranks=(2, 3),
    defaults=dict(input_shape=(128, 128, 1), num_classes=4, depth=4, base_filters=16),
    example=dict(input_shape=(16, 16, 1), num_classes=3, depth=2, base_filters=4),
)
def unet(
    input_shape: Sequence[int | None],
    num_classes: int,
    depth: int = 4,
    base_filters: int = 16,
    norm: str = "batch",
    upsampling: str = "transpose",
    attention: bool = False,
    residual: bool = False,
    dropout: float = 0.0,
    final_activation: str | None = "softmax",
    *,
    padding: str = "same",
    convs_per_level: int = 2,
    kernel_size: int = 3,
    activation: str = "relu",
    max_filters: int | None = None,
    bn_momentum: float = BN_MOMENTUM,
    name: str = "unet",
) -> keras.Model:
    """A U-Net for 2D or 3D segmentation; the spatial rank comes from ``input_shape``.

    Encoder level ``i`` (``i = 0 .. depth``) has ``base_filters * 2**i`` channels (capped at
    ``max_filters``) and ``convs_per_level`` conv -> norm -> act units; levels are joined by ``2x``
    max pooling. The decoder up-samples (transposed convolution, or nearest-neighbour resize followed by
    a convolution), concatenates the skip connection of the same level (optionally through an
    attention gate) and applies the same conv block. A ``1x1`` convolution maps to ``num_classes``
    and the final activation runs in float32, so the model works under mixed precision.

    Args:
        input_shape: ``(H, W, C)`` or ``(D, H, W, C)``; spatial sizes may be ``None`` (checked at run
            time) and, with ``padding="same"``, must be divisible by ``2**depth``.
        num_classes: output channels (classes including background).
        depth: number of down-samplings (4 in the original U-Net).
        base_filters: channels of the first level (64 in the original U-Net).
        norm: ``"batch"``, ``"instance"``, ``"group"``, ``"layer"`` or ``"none"`` (see ``models.blocks``).
        upsampling: ``"transpose"`` (learned ``2x2`` transposed convolution, as in the paper) or
            ``"resize"`` (nearest-neighbour up-sampling then a ``3x3`` convolution; avoids checkerboard
            artefacts).
        attention: gate every skip connection with an attention gate (Oktay et al. 2018).
        residual: make every level a residual block (``1x1`` projected shortcut added to the convs).
        dropout: spatial dropout rate at the end of the contracting path (the paper uses 0.5 there).
        final_activation: ``"softmax"`` (probabilities), ``"sigmoid"`` or ``None`` for logits.
        padding: ``"same"`` (output size = input size; the kit's default) or ``"valid"`` (the 2015
            paper: unpadded convolutions, skips centre-cropped, output smaller than the input; see
            :func:`valid_output_size`).
        convs_per_level: convolutions per level (2 in the paper).
        kernel_size: kernel of those convolutions (3 in the paper).
        activation: activation after each normalisation.
        max_filters: optional cap on the channels of the deep levels (handy for 3D on a laptop).
        bn_momentum: momentum of batch norm's running statistics (Keras' 0.99); short runs need a
            lower momentum (e.g. 0.9) so running statistics keep up.
        name: model name.

    Returns:
        A functional ``keras.Model`` mapping ``(B, *spatial, C)`` to ``(B, *spatial_out, num_classes)``
        float32, where ``spatial_out == spatial`` for ``padding="same"``.

    Raises:
        ValueError: for an unknown option, or spatial sizes that do not survive ``depth`` poolings.
    """
    rank = _check_args(input_shape, num_classes, depth, base_filters, upsampling, padding, dropout)
    block = dict(
        rank=rank,
        norm=norm,
        activation=activation,
        residual=residual,
        padding=padding,
        convs=convs_per_level,
        kernel_size=kernel_size,
    )

    def width(level: int) -> int:
        w = base_filters * 2**level
        return min(w, max_filters) if max_filters else w

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    skips = []
    for level in range(depth):
        x = _conv_block(x, width(level), name=f"enc{level}", **block)
        skips.append(x)
        x = max_pool(rank, 2, name=f"enc{level}_pool")(x)
    x = _conv_block(x, width(depth), name="bottleneck", **block)
    if dropout:
        x = spatial_dropout(rank, dropout, name="bottleneck_dropout")(x)

    for level in reversed(range(depth)):
        gating = x
        filters = width(level)
        if upsampling == "transpose":
            x = conv_transpose(rank, filters, 2, strides=2, name=f"dec{level}_upconv")(x)
        else:
            x = upsample(rank, 2, name=f"dec{level}_resize")(x)
            x = conv(rank, filters, 3, name=f"dec{level}_upconv")(x)
        skip = skips[level]
        if padding == "valid":
            skip = _center_crop(skip, x, rank, name=f"dec{level}_crop")
        if attention:
            if padding == "valid":
                raise ValueError("unet: attention=True needs padding='same'")
            skip = attention_gate(
                skip, gating, max(1, filters // 2), norm=norm, name=f"dec{level}_attention"
            )
        x = layers.Concatenate(name=f"dec{level}_concat")([skip, x])
        x = _conv_block(x, filters, name=f"dec{level}", **block)

    x = conv(rank, num_classes, 1, name="head_conv")(x)
    # float32 so that softmax/sigmoid stay accurate under a mixed-precision policy.
    outputs = layers.Activation(
        final_activation or "linear", dtype="float32", name="probabilities"
    )(x)
    return set_bn_momentum(keras.Model(inputs, outputs, name=name), bn_momentum)


@register(
    "unet_2015",
    family="U-Net",
    topic=_TOPIC,
    ranks=(2,),
    defaults=dict(input_shape=(572, 572, 1), num_classes=2),
    example=dict(input_shape=(188, 188, 1), base_filters=4),
)
def unet_2015(
    input_shape: Sequence[int | None] = (572, 572, 1),
    num_classes: int = 2,
    padding: str = "valid",
    **kwargs,
) -> keras.Model:
    """The original U-Net (Ronneberger et al., MICCAI 2015), as in Figure 1 of the paper.

    Configuration: depth 4, 64-128-256-512-1024 channels, two unpadded ``3x3`` convolutions + ReLU
    per level, no normalisation (batch norm came later), ``2x2`` max pooling, ``2x2`` transposed
    "up-convolutions" halving the channels, centre-cropped skip connections, dropout 0.5 at the end of
    the contracting path, ``1x1`` output convolution to 2 classes with softmax. 31,030,658 parameters
    ("31.0M"; convolutions have biases). The 31,031,685 often quoted comes from a popular Keras
    re-implementation whose head adds a ``3x3`` convolution to 2 channels and a ``1x1`` sigmoid.

    This preset follows the paper's **valid** padding: a ``572 x 572`` tile gives a ``388 x 388`` map.
    Pass ``padding="same"`` for the padded variant most re-implementations use (same parameter count,
    output the size of the input, input divisible by 16).

    Args:
        input_shape: ``(H, W, C)``; with valid padding a size from :func:`valid_output_size`'s hint
            (e.g. 572, 188, 92).
        num_classes: output classes (2 in the paper).
        padding: ``"valid"`` (paper) or ``"same"``.
        **kwargs: any other :func:`unet` argument, overriding the paper's values.

    Returns:
        The ``keras.Model``.
    """
    config = dict(
        depth=4,
        base_filters=64,
        norm="none",
        upsampling="transpose",
        attention=False,
        residual=False,
        dropout=0.5,
        final_activation="softmax",
        name="unet_2015",
    )
    config.update(kwargs)
    return unet(input_shape, num_classes, padding=padding, **config)


attention_unet = preset(
    "attention_unet",
    unet,
    """Attention U-Net (Oktay et al., MIDL 2018): a U-Net whose skip connections pass attention gates.

    Each gate uses the coarser decoder features as gating signal and produces an attention map in
    ``[0, 1]`` per voxel (layers named ``dec{level}_attention_coefficients``; build a
    ``keras.Model(model.input, model.get_layer(...).output)`` to plot them). The paper used a 3D U-Net
    with one such gate on every skip; this builder takes every :func:`unet` argument.

    Args:
        input_shape: ``(H, W, C)`` or ``(D, H, W, C)``.
        num_classes: output classes.
        **kwargs: any other :func:`unet` argument.

    Returns:
        The ``keras.Model``.
    """,
    fixed=dict(attention=True),
    family="U-Net",
    topic=_TOPIC,
    ranks=(2, 3),
    defaults=dict(input_shape=(128, 128, 1), num_classes=4, depth=4, base_filters=16),
    example=dict(input_shape=(16, 16, 1), num_classes=3, depth=2, base_filters=4),
)
