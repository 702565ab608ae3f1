"""Building blocks shared by every model in the zoo.

The spatial rank (2 for images ``(B, H, W, C)``, 3 for volumes ``(B, D, H, W, C)``) is read from
the input shape, and these helpers return the matching Keras layer, so one builder serves 2D and 3D.
Only ``keras.layers`` and ``keras.ops`` are used here, so the models build under every Keras backend.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

_CONV = {1: layers.Conv1D, 2: layers.Conv2D, 3: layers.Conv3D}
_CONV_T = {1: layers.Conv1DTranspose, 2: layers.Conv2DTranspose, 3: layers.Conv3DTranspose}
_MAX_POOL = {1: layers.MaxPooling1D, 2: layers.MaxPooling2D, 3: layers.MaxPooling3D}
_AVG_POOL = {1: layers.AveragePooling1D, 2: layers.AveragePooling2D, 3: layers.AveragePooling3D}
_GLOBAL_AVG = {1: layers.GlobalAveragePooling1D, 2: layers.GlobalAveragePooling2D, 3: layers.GlobalAveragePooling3D}
_GLOBAL_MAX = {1: layers.GlobalMaxPooling1D, 2: layers.GlobalMaxPooling2D, 3: layers.GlobalMaxPooling3D}
_UPSAMPLE = {1: layers.UpSampling1D, 2: layers.UpSampling2D, 3: layers.UpSampling3D}
_ZERO_PAD = {1: layers.ZeroPadding1D, 2: layers.ZeroPadding2D, 3: layers.ZeroPadding3D}
_SPATIAL_DROPOUT = {1: layers.SpatialDropout1D, 2: layers.SpatialDropout2D, 3: layers.SpatialDropout3D}

NORMALIZATIONS = ("batch", "instance", "group", "layer", "none")


def spatial_rank(input_shape: Sequence[int | None]) -> int:
    """Number of spatial axes of a channels-last shape without the batch axis.

    Args:
        input_shape: e.g. ``(H, W, C)`` -> 2 or ``(D, H, W, C)`` -> 3.

    Returns:
        ``len(input_shape) - 1``.

    Raises:
        ValueError: if the shape is not 2D or 3D image-like (rank 1 or 2 spatial is allowed only for 1D).
    """
    rank = len(input_shape) - 1
    if rank not in _CONV:
        raise ValueError(
            f"input_shape must be channels-last (H, W, C) or (D, H, W, C) (or (L, C) for 1D); got {tuple(input_shape)}"
        )
    return rank


def _pick(table: dict, rank: int, what: str):
    if rank not in table:
        raise ValueError(f"{what} is available for spatial rank {sorted(table)}; got rank {rank}")
    return table[rank]


def conv(rank: int, filters: int, kernel_size=3, **kwargs) -> layers.Layer:
    """``ConvND`` for ``rank`` spatial axes (``padding='same'`` unless given)."""
    kwargs.setdefault("padding", "same")
    return _pick(_CONV, rank, "conv")(filters, kernel_size, **kwargs)


def conv_transpose(rank: int, filters: int, kernel_size=2, strides=2, **kwargs) -> layers.Layer:
    """``ConvNDTranspose`` for ``rank`` spatial axes (``padding='same'`` unless given)."""
    kwargs.setdefault("padding", "same")
    return _pick(_CONV_T, rank, "conv_transpose")(filters, kernel_size, strides=strides, **kwargs)


def max_pool(rank: int, pool_size=2, **kwargs) -> layers.Layer:
    """``MaxPoolingND`` for ``rank`` spatial axes."""
    return _pick(_MAX_POOL, rank, "max_pool")(pool_size, **kwargs)


def avg_pool(rank: int, pool_size=2, **kwargs) -> layers.Layer:
    """``AveragePoolingND`` for ``rank`` spatial axes."""
    return _pick(_AVG_POOL, rank, "avg_pool")(pool_size, **kwargs)


def global_avg_pool(rank: int, **kwargs) -> layers.Layer:
    """``GlobalAveragePoolingND``: ``(B, *spatial, C) -> (B, C)``."""
    return _pick(_GLOBAL_AVG, rank, "global_avg_pool")(**kwargs)


def global_max_pool(rank: int, **kwargs) -> layers.Layer:
    """``GlobalMaxPoolingND``: ``(B, *spatial, C) -> (B, C)``."""
    return _pick(_GLOBAL_MAX, rank, "global_max_pool")(**kwargs)


def upsample(rank: int, size=2, **kwargs) -> layers.Layer:
    """``UpSamplingND`` (nearest by default; 2D accepts ``interpolation='bilinear'``)."""
    return _pick(_UPSAMPLE, rank, "upsample")(size, **kwargs)


def zero_pad(rank: int, padding=1, **kwargs) -> layers.Layer:
    """``ZeroPaddingND`` for ``rank`` spatial axes."""
    return _pick(_ZERO_PAD, rank, "zero_pad")(padding, **kwargs)


def spatial_dropout(rank: int, rate: float, **kwargs) -> layers.Layer:
    """``SpatialDropoutND``: drops whole feature maps, the usual dropout for conv nets."""
    return _pick(_SPATIAL_DROPOUT, rank, "spatial_dropout")(rate, **kwargs)


def normalization(kind: str, groups: int = 8, **kwargs) -> layers.Layer:
    """A normalisation layer by name.

    Args:
        kind: ``"batch"``, ``"instance"`` (GroupNormalization with one group per channel, the Keras 3
            replacement of ``tfa.layers.InstanceNormalization``), ``"group"``, ``"layer"`` or ``"none"``.
        groups: number of groups for ``"group"``.

    Returns:
        The layer (``"none"`` gives an ``Identity`` layer).
    """
    if kind == "batch":
        return layers.BatchNormalization(**kwargs)
    if kind == "instance":
        return layers.GroupNormalization(groups=-1, **kwargs)
    if kind == "group":
        return layers.GroupNormalization(groups=groups, **kwargs)
    if kind == "layer":
        return layers.LayerNormalization(**kwargs)
    if kind == "none":
        return layers.Identity(**kwargs)
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}; got {kind!r}")


BN_MOMENTUM = 0.99
"""Keras' default momentum of ``BatchNormalization``'s running mean and variance (the builders' default)."""


def _walk_layers(layer: layers.Layer):
    """``layer`` and every layer inside it: sub-models and wrapped layers (``TimeDistributed``) too."""
    yield layer
    for sub in getattr(layer, "layers", None) or ():
        yield from _walk_layers(sub)
    inner = getattr(layer, "layer", None)
    if isinstance(inner, layers.Layer):
        yield from _walk_layers(inner)


def set_bn_momentum(model: keras.Model, momentum: float = BN_MOMENTUM) -> keras.Model:
    """Give every ``BatchNormalization`` layer of ``model`` the running-statistics ``momentum``.

    Every builder with batch norm takes ``bn_momentum`` and calls this on the model it returns,
    so the value lives in each layer's config and survives ``model.save`` / ``load_model``. Short
    runs need a lower momentum (e.g. 0.9) so the running statistics keep up with the weights;
    with 0.99 they still remember the initial weights after a few hundred steps and inference
    (``training=False``) is far worse than training.

    Args:
        model: a built model (nested models and wrapped layers are included).
        momentum: in ``[0, 1)``; the new statistics are ``momentum * old + (1 - momentum) * batch``.

    Returns:
        ``model`` itself, changed in place.
    """
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"bn_momentum must be in [0, 1); got {momentum}")
    for layer in _walk_layers(model):
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = float(momentum)
    return model


def conv_norm_act(
    x: keras.KerasTensor,
    filters: int,
    kernel_size=3,
    *,
    strides=1,
    norm: str = "batch",
    activation: str | None = "relu",
    name: str | None = None,
    **conv_kwargs,
) -> keras.KerasTensor:
    """Convolution -> normalisation -> activation, the basic unit of most conv nets.

    The convolution has no bias when a normalisation follows (the norm's offset replaces it).

    Args:
        x: ``(B, *spatial, C_in)`` tensor; its rank picks Conv2D or Conv3D.
        filters: output channels ``C_out``.
        kernel_size, strides: passed to the convolution.
        norm: see :func:`normalization`.
        activation: any Keras activation name, or ``None``.
        name: prefix for the layer names.

    Returns:
        ``(B, *spatial / strides, C_out)`` tensor.
    """
    rank = len(x.shape) - 2
    prefix = f"{name}_" if name else ""
    conv_kwargs.setdefault("use_bias", norm == "none")
    x = conv(rank, filters, kernel_size, strides=strides, name=f"{prefix}conv" if name else None, **conv_kwargs)(x)
    if norm != "none":
        x = normalization(norm, name=f"{prefix}norm" if name else None)(x)
    if activation:
        x = layers.Activation(activation, name=f"{prefix}act" if name else None)(x)
    return x


def _prefix(name: str | None, suffix: str) -> str | None:
    """``"{name}_{suffix}"`` or ``None`` (so Keras picks unique names) when no name is given."""
    return f"{name}_{suffix}" if name else None


def residual_block(
    x: keras.KerasTensor,
    filters: int,
    *,
    strides=1,
    bottleneck: bool = False,
    expansion: int = 4,
    norm: str = "batch",
    activation: str = "relu",
    use_bias: bool = False,
    kernel_size=3,
    name: str | None = None,
) -> keras.KerasTensor:
    """A residual block (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016).

    Basic block: ``3x3 conv -> norm -> act -> 3x3 conv -> norm``, added to the shortcut, then ``act``.
    Bottleneck block: ``1x1 (filters) -> 3x3 (filters) -> 1x1 (expansion * filters)``. The stride sits
    on the first convolution, as in the paper and ``keras.applications.ResNet50`` (v1); the shortcut is
    a ``1x1`` projection + norm whenever the shape changes (option B of the paper), else the identity.

    Args:
        x: ``(B, *spatial, C_in)`` tensor (2D or 3D).
        filters: width of the block; the output has ``filters`` channels (basic) or
            ``expansion * filters`` (bottleneck).
        strides: stride of the first convolution (2 halves every spatial axis).
        bottleneck: use the three-convolution bottleneck design (ResNet-50 and deeper).
        expansion: channel expansion of the bottleneck's last ``1x1`` convolution.
        norm: see :func:`normalization`.
        activation: activation after each norm and after the addition.
        use_bias: bias in the convolutions (``keras.applications`` ResNets have one; torchvision's not).
        kernel_size: kernel of the spatial (3x3) convolutions.
        name: prefix for layer names.

    Returns:
        ``(B, *spatial / strides, C_out)`` tensor.
    """
    rank = len(x.shape) - 2
    out_channels = filters * expansion if bottleneck else filters
    shortcut = x
    if strides != 1 or x.shape[-1] != out_channels:
        shortcut = conv(rank, out_channels, 1, strides=strides, use_bias=use_bias, name=_prefix(name, "proj_conv"))(x)
        shortcut = normalization(norm, name=_prefix(name, "proj_norm"))(shortcut)
    kw = dict(norm=norm, use_bias=use_bias)
    if bottleneck:
        y = conv_norm_act(x, filters, 1, strides=strides, activation=activation, name=_prefix(name, "1"), **kw)
        y = conv_norm_act(y, filters, kernel_size, activation=activation, name=_prefix(name, "2"), **kw)
        y = conv_norm_act(y, out_channels, 1, activation=None, name=_prefix(name, "3"), **kw)
    else:
        y = conv_norm_act(x, filters, kernel_size, strides=strides, activation=activation, name=_prefix(name, "1"), **kw)
        y = conv_norm_act(y, filters, kernel_size, activation=None, name=_prefix(name, "2"), **kw)
    y = layers.Add(name=_prefix(name, "add"))([shortcut, y])
    return layers.Activation(activation, name=_prefix(name, "out"))(y)


def dense_block(
    x: keras.KerasTensor,
    num_layers: int,
    growth_rate: int = 32,
    *,
    bottleneck_width: int = 4,
    norm: str = "batch",
    activation: str = "relu",
    dropout: float = 0.0,
    name: str | None = None,
) -> keras.KerasTensor:
    """A dense block (Huang et al., "Densely Connected Convolutional Networks", CVPR 2017).

    Each layer is ``norm -> act -> 1x1 conv (bottleneck_width * growth_rate) -> norm -> act -> 3x3 conv
    (growth_rate)`` (the "DenseNet-B" pre-activation layer) and its output is concatenated to everything
    before it, so the block adds ``num_layers * growth_rate`` channels.

    Args:
        x: ``(B, *spatial, C)`` tensor (2D or 3D).
        num_layers: layers in the block (6, 12, 24, 16 in DenseNet-121).
        growth_rate: channels each layer adds (``k`` in the paper).
        bottleneck_width: multiplier of the ``1x1`` bottleneck (4 in the paper); 0 drops the bottleneck.
        norm, activation: see :func:`normalization`.
        dropout: dropout rate after each convolution (0 in DenseNet-121 on ImageNet).
        name: prefix for layer names.

    Returns:
        ``(B, *spatial, C + num_layers * growth_rate)`` tensor.
    """
    rank = len(x.shape) - 2
    for i in range(num_layers):
        lname = _prefix(name, f"layer{i + 1}")
        y = x
        if bottleneck_width:
            y = normalization(norm, name=_prefix(lname, "norm1"))(y)
            y = layers.Activation(activation, name=_prefix(lname, "act1"))(y)
            y = conv(rank, bottleneck_width * growth_rate, 1, use_bias=False, name=_prefix(lname, "conv1"))(y)
            if dropout:
                y = layers.Dropout(dropout, name=_prefix(lname, "drop1"))(y)
        y = normalization(norm, name=_prefix(lname, "norm2"))(y)
        y = layers.Activation(activation, name=_prefix(lname, "act2"))(y)
        y = conv(rank, growth_rate, 3, use_bias=False, name=_prefix(lname, "conv2"))(y)
        if dropout:
            y = layers.Dropout(dropout, name=_prefix(lname, "drop2"))(y)
        x = layers.Concatenate(name=_prefix(lname, "concat"))([x, y])
    return x


def transition(
    x: keras.KerasTensor,
    compression: float = 0.5,
    *,
    norm: str = "batch",
    activation: str = "relu",
    name: str | None = None,
) -> keras.KerasTensor:
    """A DenseNet transition layer: ``norm -> act -> 1x1 conv -> 2x2 average pool``.

    Args:
        x: ``(B, *spatial, C)`` tensor.
        compression: the ``1x1`` convolution keeps ``int(C * compression)`` channels (0.5 in DenseNet-BC).
        norm, activation: see :func:`normalization`.
        name: prefix for layer names.

    Returns:
        ``(B, *spatial / 2, int(C * compression))`` tensor.
    """
    if not 0.0 < compression <= 1.0:
        raise ValueError(f"transition: compression must be in (0, 1]; got {compression}")
    rank = len(x.shape) - 2
    x = normalization(norm, name=_prefix(name, "norm"))(x)
    x = layers.Activation(activation, name=_prefix(name, "act"))(x)
    x = conv(rank, int(x.shape[-1] * compression), 1, use_bias=False, name=_prefix(name, "conv"))(x)
    return avg_pool(rank, 2, strides=2, name=_prefix(name, "pool"))(x)


def attention_gate(
    x: keras.KerasTensor,
    gating: keras.KerasTensor,
    inter_filters: int | None = None,
    *,
    norm: str = "batch",
    name: str | None = None,
) -> keras.KerasTensor:
    """Additive attention gate (Oktay et al., "Attention U-Net: Learning Where to Look for the
    Pancreas", MIDL 2018), used on U-Net skip connections.

    The skip features ``x`` are brought to the coarser grid of the gating signal ``g`` with a strided
    ``2x2`` convolution; ``sigmoid(psi(relu(W_x x + W_g g)))`` gives one attention coefficient per
    voxel in ``[0, 1]``, which is up-sampled back to ``x``'s grid and multiplies ``x``; a ``1x1``
    convolution + norm then mixes the gated channels (the paper's output transform ``W``).

    Args:
        x: skip features ``(B, *spatial, C_x)``; every spatial size must be ``2 *`` that of ``gating``.
        gating: coarser decoder features ``(B, *spatial / 2, C_g)``.
        inter_filters: channels of the intermediate space (default ``C_x // 2``, at least 1).
        norm: normalisation after the output transform (see :func:`normalization`).
        name: prefix for layer names; the attention map is the output of layer ``{name}_coefficients``
            (so it can be retrieved for plotting with ``model.get_layer(...)``).

    Returns:
        Gated features, same shape as ``x``.
    """
    rank = len(x.shape) - 2
    if len(gating.shape) != len(x.shape):
        raise ValueError(f"attention_gate: x {tuple(x.shape)} and gating {tuple(gating.shape)} must have the same rank")
    for sx, sg in zip(x.shape[1:-1], gating.shape[1:-1], strict=True):
        if sx is not None and sg is not None and sx != 2 * sg:
            raise ValueError(
                f"attention_gate: x spatial shape {tuple(x.shape[1:-1])} must be twice the gating shape "
                f"{tuple(gating.shape[1:-1])}"
            )
    channels = x.shape[-1]
    inter = inter_filters or max(1, channels // 2)
    theta_x = conv(rank, inter, 2, strides=2, use_bias=False, name=_prefix(name, "theta_x"))(x)
    phi_g = conv(rank, inter, 1, use_bias=True, name=_prefix(name, "phi_g"))(gating)
    f = layers.Add(name=_prefix(name, "add"))([theta_x, phi_g])
    f = layers.Activation("relu", name=_prefix(name, "relu"))(f)
    psi = conv(rank, 1, 1, use_bias=True, name=_prefix(name, "psi"))(f)
    psi = layers.Activation("sigmoid", name=_prefix(name, "sigmoid"))(psi)
    psi = upsample(rank, 2, name=_prefix(name, "coefficients"))(psi)
    y = layers.Multiply(name=_prefix(name, "gated"))([x, psi])
    y = conv(rank, channels, 1, use_bias=norm == "none", name=_prefix(name, "out_conv"))(y)
    return normalization(norm, name=_prefix(name, "out_norm"))(y)


def squeeze_excitation(
    x: keras.KerasTensor,
    ratio: int = 16,
    *,
    name: str | None = None,
) -> keras.KerasTensor:
    """Squeeze-and-excitation block (Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018).

    Global average pooling "squeezes" each channel to one number; two dense layers
    (``C -> C / ratio -> C``, ReLU then sigmoid) "excite" a weight in ``[0, 1]`` per channel, which
    rescales the feature maps.

    Args:
        x: ``(B, *spatial, C)`` tensor (1D, 2D or 3D).
        ratio: reduction ratio ``r`` (16 in the paper); the hidden width is ``max(1, C // ratio)``.
        name: prefix for layer names; the channel weights are the output of ``{name}_weights``.

    Returns:
        Rescaled features, same shape as ``x``.
    """
    if ratio < 1:
        raise ValueError(f"squeeze_excitation: ratio must be >= 1; got {ratio}")
    rank = len(x.shape) - 2
    channels = x.shape[-1]
    s = global_avg_pool(rank, keepdims=True, name=_prefix(name, "squeeze"))(x)
    s = layers.Dense(max(1, channels // ratio), activation="relu", name=_prefix(name, "reduce"))(s)
    s = layers.Dense(channels, activation="sigmoid", name=_prefix(name, "weights"))(s)
    return layers.Multiply(name=_prefix(name, "scale"))([x, s])


def classifier_head(
    x: keras.KerasTensor,
    num_classes: int,
    *,
    activation: str | None = "softmax",
    pooling: str | None = "avg",
    dropout: float = 0.0,
    name: str = "head",
) -> keras.KerasTensor:
    """Global pooling -> dropout -> dense layer -> activation in float32 (mixed-precision safe).

    Args:
        x: ``(B, *spatial, C)`` features, or ``(B, C)`` when ``pooling`` is ``None``.
        num_classes: outputs of the dense layer (1 with ``activation="sigmoid"`` for binary tasks,
            or the number of regression targets with ``activation=None``).
        activation: ``"softmax"``, ``"sigmoid"`` or ``None`` (logits / regression).
        pooling: ``"avg"``, ``"max"`` or ``None`` (input already flat).
        dropout: dropout rate before the dense layer.
        name: prefix for layer names; the output layer is ``{name}_output``.

    Returns:
        ``(B, num_classes)`` float32 tensor.
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"{name}: num_classes must be a positive integer; got {num_classes!r}")
    rank = len(x.shape) - 2
    if pooling == "avg":
        x = global_avg_pool(rank, name=f"{name}_pool")(x)
    elif pooling == "max":
        x = global_max_pool(rank, name=f"{name}_pool")(x)
    elif pooling is not None:
        raise ValueError(f"{name}: pooling must be 'avg', 'max' or None; got {pooling!r}")
    if dropout:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    x = layers.Dense(num_classes, name=f"{name}_dense")(x)
    return layers.Activation(activation or "linear", dtype="float32", name=f"{name}_output")(x)
