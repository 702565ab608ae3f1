"""U-Net builders: shapes in 2D/3D, the 2015 preset's parameter count, options, errors, learning."""

import keras
import numpy as np
import pytest

import models
from models.unet import attention_unet, unet, unet_2015, valid_output_size
from training.trainer_base import build_optimizers


@pytest.mark.parametrize(
    "input_shape",
    [(32, 32, 1), (16, 16, 16, 2)],
    ids=["2d", "3d"],
)
@pytest.mark.parametrize("upsampling", ["transpose", "resize"])
def test_output_shape_matches_input_and_is_a_distribution(input_shape, upsampling, rng, numpy_head):
    model = unet(input_shape, num_classes=3, depth=2, base_filters=4, upsampling=upsampling)
    x = rng.normal(size=(2, *input_shape)).astype("float32")
    y = keras.ops.convert_to_numpy(model(x))
    assert y.shape == (2, *input_shape[:-1], 3)
    assert y.dtype == np.float32
    # Value: per voxel, the softmax of the 1x1 head convolution of the decoder's features, in NumPy.
    np.testing.assert_allclose(y, numpy_head(model, x, "head_conv", "head_conv"), atol=1e-5)


def test_softmax_stays_float32_under_mixed_precision(rng):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = unet((16, 16, 1), 2, depth=2, base_filters=4)
        y = model(rng.normal(size=(1, 16, 16, 1)).astype("float32"))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert keras.backend.standardize_dtype(y.dtype) == "float32"


def test_unet_2015_preset_has_paper_parameter_count():
    model = models.get("unet_2015")
    # Ronneberger et al. 2015, Fig. 1: 31,030,658 parameters ("31.0M"), 572x572 tile -> 388x388 map.
    assert model.count_params() == 31_030_658
    assert model.output_shape == (None, 388, 388, 2)
    keras.backend.clear_session(free_memory=False)  # gc.collect costs ~0.8 s
    padded = unet_2015(input_shape=(64, 64, 1), padding="same")
    assert padded.count_params() == 31_030_658
    assert padded.output_shape == (None, 64, 64, 2)


def test_valid_output_size_follows_paper():
    assert valid_output_size(572, depth=4) == 388
    with pytest.raises(ValueError, match="odd"):
        valid_output_size(570, depth=4)


def test_attention_unet_gates_every_skip_and_maps_are_in_unit_interval(rng):
    model = attention_unet((16, 16, 1), num_classes=2, depth=2, base_filters=4)
    names = [layer.name for layer in model.layers if layer.name.endswith("_coefficients")]
    assert sorted(names) == ["dec0_attention_coefficients", "dec1_attention_coefficients"]
    probe = keras.Model(model.input, model.get_layer("dec0_attention_coefficients").output)
    a = keras.ops.convert_to_numpy(probe(rng.normal(size=(2, 16, 16, 1)).astype("float32")))
    assert a.shape == (2, 16, 16, 1)
    assert a.min() >= 0.0 and a.max() <= 1.0
    plain = unet((16, 16, 1), 2, depth=2, base_filters=4)
    assert model.count_params() > plain.count_params()


def test_residual_option_adds_shortcuts_3d():
    model = unet((8, 8, 8, 1), 2, depth=1, base_filters=4, residual=True, norm="instance")
    assert any(layer.name == "enc0_add" for layer in model.layers)
    assert model.output_shape == (None, 8, 8, 8, 2)


def test_max_filters_caps_deep_levels():
    capped = unet((16, 16, 1), 2, depth=3, base_filters=8, max_filters=16)
    assert capped.get_layer("bottleneck_1_conv").filters == 16


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(input_shape=(30, 32, 1)), "divisible by 2\\*\\*depth"),
        (dict(input_shape=(32,)), "channels-last"),
        (dict(upsampling="bilinear"), "upsampling"),
        (dict(norm="weird"), "normalization"),
        (dict(depth=0), "depth"),
        (dict(num_classes=0), "num_classes"),
        (dict(dropout=1.5), "dropout"),
        (dict(padding="valid", input_shape=(32, 32, 1)), "valid"),
    ],
)
def test_bad_arguments_give_clear_errors(kwargs, match):
    args = dict(input_shape=(32, 32, 1), num_classes=2, depth=2, base_filters=4) | kwargs
    with pytest.raises(ValueError, match=match):
        unet(**args)


def test_unknown_spatial_size_is_allowed():
    model = unet((None, None, 1), 2, depth=2, base_filters=4)
    assert model(np.zeros((1, 24, 40, 1), "float32")).shape == (1, 24, 40, 2)


def test_save_load_round_trip_with_attention(assert_round_trip, rng):
    model = unet(
        (16, 16, 1), 3, depth=2, base_filters=4, attention=True, residual=True, dropout=0.3
    )
    assert_round_trip(model, rng.normal(size=(2, 16, 16, 1)).astype("float32"))


def test_registry_builds_every_unet_variant():
    assert {"unet", "unet_2015", "attention_unet"} <= set(models.list_models(family="U-Net"))
    model = models.get(
        "attention_unet", input_shape=(16, 16, 1), num_classes=2, depth=2, base_filters=4
    )
    assert model.name == "attention_unet"


def _shapes_dataset(n, size, seed):
    """Noisy images with a bright disk (class 1) and a dark square (class 2) at random places."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = np.zeros((n, size, size, 1), "float32")
    labels = np.zeros((n, size, size), "int32")
    for i in range(n):
        cy, cx, r = rng.uniform(7, size - 7), rng.uniform(7, size - 7), rng.uniform(3, 6)
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
        sy, sx, h = rng.integers(2, size - 8), rng.integers(2, size - 8), rng.integers(4, 7)
        square = np.zeros_like(disk)
        square[sy : sy + h, sx : sx + h] = True
        square &= ~disk
        labels[i][disk], labels[i][square] = 1, 2
        images[i, ..., 0] = 0.5 + 0.4 * disk - 0.4 * square + rng.normal(0, 0.15, (size, size))
    return images, labels


def _dice(pred, truth, label):
    p, t = pred == label, truth == label
    return 2 * np.logical_and(p, t).sum() / max(p.sum() + t.sum(), 1)


@pytest.mark.slow
def test_unet_learns_to_segment_shapes():
    x, y = _shapes_dataset(64, 32, seed=0)
    x_test, y_test = _shapes_dataset(16, 32, seed=1)
    # Instance norm: batch-norm moving statistics need far more than 40 steps to settle.
    model = unet((32, 32, 1), 3, depth=2, base_filters=8, norm="instance")
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    build_optimizers(model)  # Adam's variables before fit: the first step is traced once, not twice
    history = model.fit(x, y, batch_size=8, epochs=6, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]
    pred = keras.ops.convert_to_numpy(model.predict(x_test, verbose=0)).argmax(-1)
    mean_dice = np.mean([_dice(pred, y_test, c) for c in (1, 2)])
    assert mean_dice > 0.75, f"mean foreground Dice {mean_dice:.3f}"
