"""Classic CNNs: LeNet-5, AlexNet, VGG-11/16 parameter counts, VGG in 3D, save/load, errors, learning."""

import keras
import numpy as np
import pytest

import models
from models.classic import alexnet, lenet5, vgg, vgg11, vgg_block

SMALL_VGG = dict(convs_per_stage=(1, 2), filters=(4, 8), fc_units=(16,))


def test_lenet5_has_the_textbook_parameter_count(rng):
    model = lenet5()
    # C1 156 + C3 2,416 + F5 48,120 + F6 10,164 + output 850 = 61,706.
    assert model.count_params() == 61_706
    y = keras.ops.convert_to_numpy(model(rng.normal(size=(2, 32, 32, 1)).astype("float32")))
    assert y.shape == (2, 10)
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_alexnet_has_about_61m_parameters():
    assert alexnet().count_params() == 61_100_840  # torchvision's single-stream AlexNet
    keras.backend.clear_session()
    assert (
        alexnet(filters=(96, 256, 384, 384, 256)).count_params() == 62_378_344
    )  # paper widths, no groups


@pytest.mark.slow
def test_vgg16_equals_keras_applications_and_vgg11_matches_paper():
    ours = models.get("vgg16").count_params()
    keras.backend.clear_session()
    reference = keras.applications.VGG16(weights=None).count_params()
    assert ours == reference == 138_357_544
    keras.backend.clear_session()
    assert (
        vgg11((224, 224, 3), 1000).count_params() == 132_863_336
    )  # configuration A (torchvision vgg11)


def test_vgg_block_halves_the_grid_in_2d_and_3d(rng):
    for shape in [(8, 8, 3), (8, 8, 8, 3)]:
        x = keras.Input(shape)
        y = vgg_block(x, 5, 2)
        assert y.shape == (None, *[4] * (len(shape) - 1), 5)
        # Value: with identity kernels (centre tap 1, channel to itself) and zero biases the block is
        # relu then 2x max pooling, so its output is known exactly.
        block = keras.Model(x, vgg_block(x, 3, 2))
        for layer in block.layers:
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv3D)):
                kernel = np.zeros(layer.kernel.shape, "float32")
                kernel[(1,) * (len(shape) - 1)] = np.eye(3)
                layer.set_weights([kernel] + [np.zeros(w.shape, "float32") for w in layer.get_weights()[1:]])
        data = rng.normal(size=(2, *shape)).astype("float32")
        pooled = np.maximum(data, 0).reshape(2, *[n for _ in shape[:-1] for n in (4, 2)], 3)
        expected = pooled.max(axis=tuple(range(2, 2 * (len(shape) - 1) + 1, 2)))
        np.testing.assert_allclose(keras.ops.convert_to_numpy(block(data)), expected, atol=1e-6)


@pytest.mark.parametrize("head", ["flatten", "gap"])
def test_vgg_3d_output_shape(head, rng):
    model = vgg((16, 16, 16, 1), 2, head=head, **SMALL_VGG)
    y = keras.ops.convert_to_numpy(model(rng.normal(size=(2, 16, 16, 16, 1)).astype("float32")))
    assert y.shape == (2, 2)
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-5)  # class probabilities
    assert np.all(y > 0) and not np.allclose(y[0], y[1])  # each sample its own prediction
    assert isinstance(model.get_layer("block1_conv1_conv"), keras.layers.Conv3D)


def test_alexnet_small_input_shape(rng):
    model = alexnet((64, 64, 1), 4, filters=(4, 8, 8, 8, 8), fc_units=(16, 16))
    x = rng.normal(size=(1, 64, 64, 1)).astype("float32")
    y = keras.ops.convert_to_numpy(model(x))
    assert y.shape == (1, 4)
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-5)
    # Inference is deterministic (dropout off): the same input gives the same probabilities.
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x, training=False)), y)


def test_save_load_round_trip(assert_round_trip, rng):
    model = vgg((16, 16, 1), 3, norm="batch", **SMALL_VGG)
    assert_round_trip(model, rng.normal(size=(2, 16, 16, 1)).astype("float32"))
    keras.backend.clear_session(free_memory=False)  # gc.collect costs ~0.8 s
    assert_round_trip(lenet5(), rng.normal(size=(2, 32, 32, 1)).astype("float32"))


@pytest.mark.parametrize(
    "builder, kwargs, match",
    [
        (
            vgg,
            dict(input_shape=(16, 16, 1), num_classes=2, convs_per_stage=(1,), filters=(4, 8)),
            "same length",
        ),
        (vgg, dict(input_shape=(16, 16, 1), num_classes=2, head="pool", **SMALL_VGG), "head"),
        (vgg, dict(input_shape=(None, None, 1), num_classes=2, **SMALL_VGG), "known spatial"),
        (lenet5, dict(input_shape=(8, 8, 1)), "at least 16"),
        (alexnet, dict(filters=(4, 8)), "5 conv widths"),
    ],
)
def test_bad_arguments_give_clear_errors(builder, kwargs, match):
    with pytest.raises(ValueError, match=match):
        builder(**kwargs)


@pytest.mark.slow
def test_lenet5_learns_to_classify_bars(bars, learn):
    x, y = bars(192)
    x_test, y_test = bars(96, seed=1)
    model = lenet5((16, 16, 1), 3, activation="relu")
    first, last, accuracy = learn(model, (x, y), (x_test, y_test), learning_rate=1e-2, epochs=4)
    assert last < 0.5 * first and accuracy > 0.85
