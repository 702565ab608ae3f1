"""Inception: the block's branches, GoogLeNet parameter count, auxiliary heads, 3D, save/load, errors, learning."""

import keras
import numpy as np
import pytest

import models
from models.blocks import classifier_head
from models.inception import GOOGLENET_BLOCKS, googlenet, inception_block

SMALL = dict(width_multiplier=0.0625, stem="small")


@pytest.mark.parametrize("shape", [(8, 8, 4), (4, 8, 8, 4)], ids=["2d", "3d"])
def test_block_concatenates_four_branches_at_same_resolution(shape):
    x = keras.Input(shape)
    y = inception_block(x, (2, 3, 4, 1, 5, 6), name="b")
    assert y.shape == (None, *shape[:-1], 2 + 4 + 5 + 6)
    model = keras.Model(x, y)
    assert model.get_layer("b_5x5_conv").kernel_size == (5,) * (len(shape) - 1)
    # Value: with zero kernels every convolution outputs relu(its bias), so the block's output is the
    # last bias of each branch, in the order 1x1, 3x3, 5x5, pool projection.
    convs = [layer for layer in model.layers if "conv" in type(layer).__name__.lower()]
    for i, layer in enumerate(convs):
        kernel, bias = layer.get_weights()
        layer.set_weights([np.zeros_like(kernel), np.full_like(bias, i - 1.5)])
    out = keras.ops.convert_to_numpy(model(np.ones((1, *shape), "float32")))
    last = {n: max(i - 1.5, 0.0) for i, n in enumerate(c.name for c in convs)}
    expected = np.repeat([last["b_1x1_conv"], last["b_3x3_conv"], last["b_5x5_conv"], last["b_pool_proj_conv"]],
                         [2, 4, 5, 6])
    np.testing.assert_array_equal(out.reshape(-1, 17), np.broadcast_to(expected, (out.size // 17, 17)))


def test_googlenet_matches_the_paper_configuration():
    model = models.get("googlenet")
    # Table 1 of Szegedy et al. 2015 with biases, 5x5 branches, no aux heads: 6,998,552 ("6.8M"
    # in the table, which rounds each row; torchvision's BN/3x3 variant has 6.6M).
    assert model.count_params() == 6_998_552
    assert model.get_layer("inception5b_concat").output.shape == (None, 7, 7, 1024)
    assert model.get_layer("inception3a_concat").output.shape[-1] == 256


def test_aux_heads_give_three_outputs(rng):
    model = googlenet((64, 64, 1), 5, aux_heads=True, width_multiplier=0.0625)
    outputs = model(rng.normal(size=(2, 64, 64, 1)).astype("float32"))
    assert len(outputs) == 3
    for y in outputs:
        np.testing.assert_allclose(keras.ops.convert_to_numpy(y).sum(-1), 1.0, atol=1e-5)


def test_3d_googlenet_output(rng):
    model = googlenet((8, 8, 8, 1), 2, **SMALL)
    assert model(rng.normal(size=(1, 8, 8, 8, 1)).astype("float32")).shape == (1, 2)


def test_inception_block_save_load_round_trip(assert_round_trip, rng):
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(
        inputs, classifier_head(inception_block(inputs, (2, 2, 3, 1, 2, 2), norm="batch"), 3)
    )
    assert_round_trip(model, rng.normal(size=(2, 8, 8, 3)).astype("float32"))


@pytest.mark.slow
def test_googlenet_save_load_round_trip(assert_round_trip, rng):
    model = googlenet((16, 16, 1), 3, norm="batch", **SMALL)
    assert_round_trip(model, rng.normal(size=(2, 16, 16, 1)).astype("float32"))


def test_table_has_nine_blocks():
    assert list(GOOGLENET_BLOCKS) == ["3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(stem="big"), "stem"),
        (dict(width_multiplier=0), "width_multiplier"),
        (dict(input_shape=(32,)), "channels-last"),
    ],
)
def test_bad_arguments_give_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        googlenet(**(dict(input_shape=(16, 16, 1), num_classes=2) | kwargs))
    with pytest.raises(ValueError, match="6 entries"):
        inception_block(keras.Input((8, 8, 2)), (1, 2, 3))


@pytest.mark.slow
def test_inception_blocks_learn_to_classify_bars(bars, learn):
    # Two Inception modules and a head: the full GoogLeNet graph takes minutes just to trace on a
    # loaded 2-core CI runner, while what is learned here is the module itself.
    x, y = bars(192)
    x_test, y_test = bars(96, seed=1)
    inputs = keras.Input((16, 16, 1))
    h = inception_block(inputs, (4, 4, 8, 2, 4, 4), name="a")
    h = keras.layers.MaxPooling2D(2)(h)
    h = inception_block(h, (8, 8, 8, 2, 4, 4), name="b")
    outputs = classifier_head(h, 3)
    model = keras.Model(inputs, outputs)
    first, last, accuracy = learn(model, (x, y), (x_test, y_test), learning_rate=1e-2, epochs=4)
    assert last < 0.5 * first and accuracy > 0.85
