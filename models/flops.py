"""Count the floating-point operations of a model's convolution and dense layers.

Used by the throughput benchmarks to turn samples/s into achieved GFLOP/s, and handy in the
architecture lecture to compare models by compute as well as by parameters.

Convention: one multiply-add counts as 2 FLOPs. Only plain and transposed convolutions and dense
layers are counted: they are more than 95% of the work of a conv net. Depthwise and separable
convolutions, the ``EinsumDense`` projections and score products inside ``MultiHeadAttention``
(so most of a transformer's work), normalisation, activations, pooling and resizing are not counted.
A training step costs about 3x the forward pass (forward, gradient w.r.t. inputs, gradient w.r.t. weights).
"""

from __future__ import annotations

import math

import keras
from keras import layers

_CONV_TYPES = (layers.Conv1D, layers.Conv2D, layers.Conv3D)
_CONV_T_TYPES = (layers.Conv1DTranspose, layers.Conv2DTranspose, layers.Conv3DTranspose)


def conv_flops(
    out_positions: int,
    in_channels: int,
    out_channels: int,
    kernel_volume: int,
    groups: int = 1,
) -> int:
    """FLOPs of one convolution (plain or transposed) or dense layer for one sample.

    The one formula behind :func:`count_flops`, kept public so a benchmark can apply exactly the
    same count to another framework's layers (e.g. PyTorch modules seen through forward hooks).

    Args:
        out_positions: positions at which a kernel is applied: the output voxels of a plain
            convolution, the *input* voxels of a transposed one (each scatters a kernel-sized
            patch), the rows of a dense layer.
        in_channels: input channels (features of a dense layer).
        out_channels: filters (units of a dense layer).
        kernel_volume: product of the kernel size (1 for a dense layer).
        groups: channel groups of a grouped convolution.

    Returns:
        FLOPs (1 multiply-add = 2 FLOPs).
    """
    return 2 * out_positions * out_channels * kernel_volume * in_channels // groups


def _layer_forward_flops(layer: keras.layers.Layer) -> int:
    """FLOPs of one call of ``layer`` (batch size 1), from its built input/output shapes."""
    if isinstance(layer, _CONV_T_TYPES):
        in_shape = layer.input.shape
        return conv_flops(math.prod(in_shape[1:-1]), in_shape[-1], layer.filters, math.prod(layer.kernel_size))
    if isinstance(layer, _CONV_TYPES):
        return conv_flops(
            math.prod(layer.output.shape[1:-1]),
            layer.input.shape[-1],
            layer.filters,
            math.prod(layer.kernel_size),
            layer.groups,
        )
    if isinstance(layer, layers.Dense):
        in_shape = layer.input.shape
        positions = math.prod(in_shape[1:-1]) if len(in_shape) > 2 else 1
        return conv_flops(positions, in_shape[-1], layer.units, 1)
    return 0


def count_flops(model: keras.Model, training: bool = False) -> int:
    """FLOPs of one sample through ``model`` (conv and dense layers, nested models included).

    Args:
        model: a built functional ``keras.Model`` with fully defined input shape (no ``None``
            spatial dimensions).
        training: if True, return the cost of a training step (about 3x the forward pass).

    Returns:
        FLOPs per sample (1 multiply-add = 2 FLOPs).

    Raises:
        ValueError: if the model's spatial input shape is not fully defined.
    """
    for tensor in model.inputs:
        if any(d is None for d in tensor.shape[1:]):
            raise ValueError(f"count_flops needs fully defined input shapes; got {tensor.shape} for input {tensor.name!r}")
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += count_flops(layer)
        else:
            total += _layer_forward_flops(layer)
    return 3 * total if training else total
