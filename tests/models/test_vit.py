"""Vision Transformer: patch embedding in 2D/3D, class token, ViT-B/16 parameter count, errors, learning."""

import keras
import numpy as np
import pytest

import models
from models.attention import attention_scores_model
from models.vit import patch_embedding, vit, vit_b16
from training.trainer_base import build_optimizers


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize(
    "shape, patch, tokens",
    [((32, 32, 3), 8, 16), ((16, 32, 1), (4, 8), 16), ((8, 16, 16, 1), (4, 8, 8), 8)],
    ids=["2d", "2d-rect", "3d-aniso"],
)
def test_patch_embedding_makes_one_token_per_patch(shape, patch, tokens, rng):
    inputs = keras.Input(shape)
    model = keras.Model(inputs, patch_embedding(inputs, patch, 12))
    assert _np(model(rng.normal(size=(2, *shape)).astype("float32"))).shape == (2, tokens, 12)


def test_patch_embedding_token_depends_only_on_its_patch(rng):
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, patch_embedding(inputs, 4, 5))
    x = rng.normal(size=(1, 8, 8, 1)).astype("float32")
    changed = x.copy()
    changed[0, 5, 6, 0] += 1.0  # lies in the bottom-right patch, token index 3 (row-major)
    diff = np.abs(_np(model(changed)) - _np(model(x))).sum(-1)[0]
    assert diff[3] > 0 and np.all(diff[:3] == 0)


@pytest.mark.parametrize("shape, patch", [((16, 16, 1), 4), ((8, 8, 8, 2), 4)], ids=["2d", "3d"])
@pytest.mark.parametrize("pool", ["token", "mean"])
def test_vit_outputs_probabilities_and_attention_over_class_plus_patch_tokens(shape, patch, pool, rng):
    model = vit(shape, 3, patch_size=patch, hidden_dim=16, depth=2, num_heads=2, mlp_dim=16, pool=pool)
    x = rng.normal(size=(2, *shape)).astype("float32")
    y = _np(model(x))
    assert y.shape == (2, 3) and y.dtype == np.float32
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-5)
    n = int(np.prod([s // patch for s in shape[:-1]])) + 1
    maps = attention_scores_model(model)(x)
    assert len(maps) == 2 and _np(maps[0]).shape == (2, 2, n, n)


def test_vit_b16_has_published_parameter_count():
    # Dosovitskiy et al. 2021, ViT-Base/16 at 224x224, 1000 classes: 86,567,656 (~86.6M), the count of
    # timm's vit_base_patch16_224 (linear head on the class token, no pre-logits layer).
    model = models.get("vit_b16")
    assert model.count_params() == 86_567_656
    assert model.output_shape == (None, 1000)
    assert model.get_layer("position_embedding").embedding.shape == (1, 197, 768)


def test_vit_b16_forwards_keyword_overrides():
    model = vit_b16((32, 32, 3), 10, depth=1)
    assert model.get_layer("position_embedding").embedding.shape == (1, 5, 768)
    assert model.output_shape == (None, 10)


def test_round_trip(assert_round_trip, rng):
    model = vit((8, 8, 8, 1), 2, patch_size=(2, 4, 4), hidden_dim=8, depth=1, num_heads=2, mlp_dim=8)
    assert_round_trip(model, rng.normal(size=(2, 8, 8, 8, 1)).astype("float32"))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(input_shape=(30, 30, 1), patch_size=4), "divisible by the patch size"),
        (dict(input_shape=(32, 32, 1), hidden_dim=10, num_heads=4), "divisible by num_heads"),
        (dict(input_shape=(32, 32, 1), pool="max"), "pool must be"),
        (dict(input_shape=(32, 32, 1), patch_size=(4, 4, 4)), "patch_size must be"),
        (dict(input_shape=(32,)), "channels-last"),
    ],
)
def test_bad_arguments_give_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        vit(**kwargs)


def _bars(n, size, seed):
    """Noisy images with one bright line across the image: class 0 horizontal, class 1 vertical."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.3, (n, size, size, 1)).astype("float32")
    y = rng.integers(0, 2, n).astype("int32")
    for i in range(n):
        pos = rng.integers(1, size - 1)
        if y[i] == 0:
            x[i, pos, :, 0] += 1.0
        else:
            x[i, :, pos, 0] += 1.0
    return x, y


@pytest.mark.slow
def test_small_vit_learns_line_orientation():
    x, y = _bars(512, 16, seed=0)
    x_test, y_test = _bars(128, 16, seed=1)
    model = vit((16, 16, 1), 2, patch_size=4, hidden_dim=32, depth=1, num_heads=2, mlp_dim=64, pool="mean")
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    build_optimizers(model)  # Adam's variables before fit: the first step is traced once, not twice
    model.fit(x, y, batch_size=32, epochs=4, verbose=0)
    accuracy = (model.predict(x_test, verbose=0).argmax(-1) == y_test).mean()
    # Measured 0.98-0.99 over seeds; chance is 0.5.
    assert accuracy > 0.85, f"test accuracy {accuracy:.2f} (chance 0.5)"
