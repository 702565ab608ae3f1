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
