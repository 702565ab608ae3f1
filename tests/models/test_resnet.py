"""ResNet: 2D/3D shapes, published parameter counts, blocks, save/load, errors, learning."""

import keras
import numpy as np
import pytest

import models
from models.resnet import resnet, resnet18, resnet34, resnet50

SMALL = dict(blocks=(1, 1), base_filters=4, stem="small")


@pytest.mark.parametrize("input_shape", [(16, 16, 1), (8, 16, 16, 2)], ids=["2d", "3d"])
@pytest.mark.parametrize("bottleneck", [False, True], ids=["basic", "bottleneck"])
def test_output_is_a_class_distribution_in_2d_and_3d(input_shape, bottleneck, rng, numpy_head):
    model = resnet(input_shape, 3, bottleneck=bottleneck, **SMALL)
    x = rng.normal(size=(2, *input_shape)).astype("float32")
    y = keras.ops.convert_to_numpy(model(x))
    assert y.shape == (2, 3)
    # Value: global average pooling, dense and softmax of the last stage's features, in NumPy.
    np.testing.assert_allclose(y, numpy_head(model, x, "head_pool", "head_dense"), atol=1e-5)


def test_stages_halve_resolution_and_double_width():
    model = resnet((32, 32, 1), 2, blocks=(1, 1, 1), base_filters=4, stem="small")
    assert model.get_layer("stage1_block1_out").output.shape == (None, 32, 32, 4)
    assert model.get_layer("stage3_block1_out").output.shape == (None, 8, 8, 16)
    stem = resnet((64, 64, 1), 2, blocks=(1,), base_filters=4)
    assert stem.get_layer("stem_pool").output.shape == (None, 16, 16, 4)


def test_resnet18_matches_torchvision_count(trainable_params):
    # torchvision.models.resnet18 (no conv biases); Keras additionally counts BN moving statistics.
    assert trainable_params(resnet18((224, 224, 3), 1000)) == 11_689_512


@pytest.mark.slow
def test_resnet34_matches_torchvision_count(trainable_params):
    assert trainable_params(resnet34((224, 224, 3), 1000)) == 21_797_672


@pytest.mark.slow
def test_resnet50_equals_keras_applications(trainable_params):
    ours = models.get("resnet50").count_params()
    keras.backend.clear_session(free_memory=False)
    reference = keras.applications.ResNet50(weights=None).count_params()
    assert ours == reference == 25_636_712
    keras.backend.clear_session(free_memory=False)
    # Without conv biases: the paper / torchvision figure.
    assert trainable_params(resnet50((224, 224, 3), 1000, use_bias=False)) == 25_557_032


def test_3d_resnet18_builds_with_3d_convolutions():
    model = resnet18((16, 32, 32, 1), 2, base_filters=8)
    assert isinstance(model.get_layer("stem_conv"), keras.layers.Conv3D)
    assert model.output_shape == (None, 2)


def test_save_load_round_trip(assert_round_trip, rng):
    model = resnet((16, 16, 1), 4, bottleneck=True, dropout=0.2, **SMALL)
    assert_round_trip(model, rng.normal(size=(2, 16, 16, 1)).astype("float32"))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(stem="tiny"), "stem"),
        (dict(blocks=()), "blocks"),
        (dict(input_shape=(16,)), "channels-last"),
        (dict(num_classes=0), "num_classes"),
    ],
)
def test_bad_arguments_give_clear_errors(kwargs, match):
    args = dict(input_shape=(16, 16, 1), num_classes=2, **SMALL) | kwargs
    with pytest.raises(ValueError, match=match):
        resnet(**args)


@pytest.mark.slow
def test_small_resnet_learns_to_classify_bars(bars, learn):
    x, y = bars(192)
    x_test, y_test = bars(96, seed=1)
    model = resnet((16, 16, 1), 3, blocks=(1, 1), base_filters=8, stem="small", norm="instance")
    first, last, accuracy = learn(model, (x, y), (x_test, y_test), learning_rate=1e-2, epochs=3)
    assert last < 0.5 * first and accuracy > 0.85
