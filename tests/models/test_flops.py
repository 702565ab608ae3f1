"""FLOP counting: hand-computed values for single layers, and the training-step multiplier."""

import keras
import pytest
from keras import layers

from models.flops import conv_flops, count_flops


def _single_layer_model(input_shape, layer):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, layer(inputs))


def test_conv2d_flops_match_hand_count():
    # 8x8 output positions x 4 filters x (3*3 kernel x 2 input channels) multiply-adds, 2 FLOPs each.
    model = _single_layer_model((8, 8, 2), layers.Conv2D(4, 3, padding="same"))
    assert count_flops(model) == 2 * 8 * 8 * 4 * 3 * 3 * 2


def test_strided_conv3d_counts_output_positions():
    model = _single_layer_model((8, 8, 8, 1), layers.Conv3D(2, 3, strides=2, padding="same"))
    assert count_flops(model) == 2 * 4 * 4 * 4 * 2 * 27 * 1


def test_transposed_conv_counts_input_positions():
    model = _single_layer_model((4, 4, 3), layers.Conv2DTranspose(5, 2, strides=2))
    assert count_flops(model) == 2 * 4 * 4 * 3 * 4 * 5


def test_dense_and_training_multiplier():
    model = _single_layer_model((10,), layers.Dense(7))
    assert count_flops(model) == 2 * 10 * 7
    assert count_flops(model, training=True) == 3 * 2 * 10 * 7


def test_nested_models_are_counted():
    inner = _single_layer_model((10,), layers.Dense(7))
    inputs = keras.Input((10,))
    outer = keras.Model(inputs, layers.Dense(3)(inner(inputs)))
    assert count_flops(outer) == 2 * 10 * 7 + 2 * 7 * 3


def test_undefined_spatial_shape_is_rejected():
    model = _single_layer_model((None, None, 1), layers.Conv2D(2, 3))
    with pytest.raises(ValueError, match="fully defined"):
        count_flops(model)


@pytest.mark.parametrize(
    "args, expected",
    [
        ((64, 2, 4, 9), 2 * 64 * 4 * 9 * 2),  # 8x8 outputs, 3x3 kernel, 2 -> 4 channels
        ((64, 8, 8, 9, 4), 2 * 64 * 8 * 9 * 8 // 4),  # grouped: each filter sees 8 / 4 channels
        ((1, 10, 7, 1), 2 * 10 * 7),  # a dense layer
    ],
)
def test_conv_flops_formula(args, expected):
    assert conv_flops(*args) == expected
