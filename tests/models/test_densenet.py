"""DenseNet: 2D/3D shapes, DenseNet-121 vs keras.applications, save/load, errors, learning."""

import keras
import numpy as np
import pytest

import models
from models.densenet import densenet, densenet121

SMALL = dict(blocks=(2, 2), growth_rate=4, init_filters=8, stem="small")


@pytest.mark.parametrize("input_shape", [(16, 16, 1), (8, 8, 8, 2)], ids=["2d", "3d"])
def test_output_is_a_class_distribution_in_2d_and_3d(input_shape, rng):
    model = densenet(input_shape, 3, **SMALL)
    y = keras.ops.convert_to_numpy(model(rng.normal(size=(2, *input_shape)).astype("float32")))
    assert y.shape == (2, 3)
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-5)


def test_channels_grow_by_growth_rate_and_transitions_compress(rng):
    model = densenet((16, 16, 1), 2, **SMALL)
    # stem 8 + 2 layers x 4 = 16 channels; the transition keeps half (8) and halves the grid.
    assert model.get_layer("block1_layer2_concat").output.shape == (None, 16, 16, 16)
    assert model.get_layer("transition1_pool").output.shape == (None, 8, 8, 8)
    assert model.get_layer("block2_layer2_concat").output.shape == (None, 8, 8, 16)
    # Dense connectivity: the block's output carries the stem's features unchanged in its first
    # 8 channels, and each layer's 4 new ones after them.
    probe = keras.Model(model.input, [model.get_layer(n).output for n in
                                      ("stem_act", "block1_layer1_concat", "block1_layer2_concat")])
    stem, first, second = (keras.ops.convert_to_numpy(t) for t in probe(rng.normal(size=(2, 16, 16, 1))))
    np.testing.assert_array_equal(second[..., :8], stem)
    np.testing.assert_array_equal(second[..., :12], first)
    assert not np.allclose(second[..., 12:], 0)


@pytest.mark.slow
def test_densenet121_equals_keras_applications():
    ours = models.get("densenet121").count_params()
    keras.backend.clear_session(free_memory=False)
    reference = keras.applications.DenseNet121(weights=None).count_params()
    assert ours == reference == 8_062_504


@pytest.mark.slow
def test_3d_densenet121_uses_3d_convolutions():
    model = densenet121((32, 32, 32, 1), 2)
    assert isinstance(model.get_layer("stem_conv"), keras.layers.Conv3D)
    assert model.output_shape == (None, 2)


def test_save_load_round_trip(assert_round_trip, rng):
    model = densenet((16, 16, 1), 4, dropout=0.2, **SMALL)
    assert_round_trip(model, rng.normal(size=(2, 16, 16, 1)).astype("float32"))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(stem="x"), "stem"),
        (dict(blocks=()), "blocks"),
        (dict(compression=0.0), "compression"),
        (dict(input_shape=(4,)), "channels-last"),
    ],
)
def test_bad_arguments_give_clear_errors(kwargs, match):
    args = dict(input_shape=(16, 16, 1), num_classes=2, **SMALL) | kwargs
    with pytest.raises(ValueError, match=match):
        densenet(**args)


@pytest.mark.slow
def test_small_densenet_learns_to_classify_bars(bars, learn):
    x, y = bars(192)
    x_test, y_test = bars(96, seed=1)
    model = densenet(
        (16, 16, 1), 3, blocks=(1, 1), growth_rate=8, init_filters=16, stem="small", norm="instance"
    )
    first, last, accuracy = learn(model, (x, y), (x_test, y_test), learning_rate=1e-2, epochs=4)
    assert last < 0.7 * first and accuracy > 0.8
