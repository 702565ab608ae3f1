"""Attention family: encoder block, retrievable attention maps, token layers, spatial attention,
squeeze-and-excitation and attention-gate blocks, the transformer classifier, errors and learning."""

import keras
import numpy as np
import pytest

import models
from models.attention import (
    AddPositionEmbedding,
    ClassToken,
    TransformerEncoderBlock,
    attention_gate,
    attention_scores_model,
    spatial_self_attention,
    squeeze_excitation,
    transformer_classifier,
)
from training.trainer_base import build_optimizers


def _np(x):
    return keras.ops.convert_to_numpy(x)


def test_encoder_block_returns_tokens_and_row_stochastic_scores(rng):
    block = TransformerEncoderBlock(num_heads=2, mlp_dim=16)
    x = rng.normal(size=(3, 5, 8)).astype("float32")
    y, scores = block(x, return_attention_scores=True)
    assert _np(y).shape == (3, 5, 8)
    assert _np(scores).shape == (3, 2, 5, 5)
    np.testing.assert_allclose(_np(scores).sum(-1), 1.0, atol=1e-5)
    assert np.all(_np(scores) >= 0)
    np.testing.assert_allclose(_np(block(x)), _np(y), atol=1e-6)


def test_encoder_block_parameter_count():
    d, m = 16, 32
    block = TransformerEncoderBlock(num_heads=4, mlp_dim=m)
    block.build((None, 7, d))
    # two LayerNorms, Q/K/V/output projections with bias, and the two MLP layers.
    assert block.count_params() == 2 * 2 * d + 4 * (d * d + d) + (d * m + m) + (m * d + d)


def test_self_attention_without_positions_is_permutation_equivariant(rng):
    block = TransformerEncoderBlock(num_heads=2, mlp_dim=8)
    x = rng.normal(size=(1, 6, 4)).astype("float32")
    perm = rng.permutation(6)
    np.testing.assert_allclose(_np(block(x))[:, perm], _np(block(x[:, perm])), atol=1e-5)


def test_class_token_and_position_embedding(rng):
    x = rng.normal(size=(2, 4, 3)).astype("float32")
    tokens = _np(ClassToken()(x))
    assert tokens.shape == (2, 5, 3)
    np.testing.assert_allclose(tokens[:, 1:], x)
    np.testing.assert_allclose(tokens[0, 0], tokens[1, 0])  # one learned token, shared by the batch
    pos = AddPositionEmbedding()
    y = _np(pos(x))
    np.testing.assert_allclose(y - x, np.broadcast_to(y[:1] - x[:1], y.shape), atol=1e-6)
    with pytest.raises(ValueError, match="fixed number of tokens"):
        AddPositionEmbedding()(keras.Input((None, 3)))


def test_attention_scores_model_exposes_every_block(rng):
    model = transformer_classifier((10, 3), 2, hidden_dim=8, depth=3, num_heads=2, mlp_dim=16)
    maps = attention_scores_model(model)(rng.normal(size=(2, 10, 3)).astype("float32"))
    assert len(maps) == 3
    assert all(_np(m).shape == (2, 2, 10, 10) for m in maps)


def test_attention_scores_model_needs_encoder_blocks():
    inputs = keras.Input((4,))
    with pytest.raises(ValueError, match="no TransformerEncoderBlock"):
        attention_scores_model(keras.Model(inputs, keras.layers.Dense(2)(inputs)))


@pytest.mark.parametrize("shape", [(8, 8, 8), (4, 4, 4, 8)], ids=["2d", "3d"])
def test_spatial_self_attention_keeps_shape(shape, rng):
    inputs = keras.Input(shape)
    model = keras.Model(inputs, spatial_self_attention(inputs, num_heads=2, groups=4))
    assert _np(model(rng.normal(size=(2, *shape)).astype("float32"))).shape == (2, *shape)
    with pytest.raises(ValueError, match="fixed spatial size"):
        spatial_self_attention(keras.Input((None, 8, 8)))


@pytest.mark.parametrize("shape", [(8, 8, 6), (4, 4, 4, 6)], ids=["2d", "3d"])
def test_squeeze_excitation_rescales_each_channel_by_a_weight_in_unit_interval(shape, rng):
    inputs = keras.Input(shape)
    model = keras.Model(inputs, squeeze_excitation(inputs, ratio=2, name="se"))
    x = rng.uniform(0.5, 1.5, size=(2, *shape)).astype("float32")
    ratio = _np(model(x)) / x
    # One factor per (sample, channel): constant over all positions, and in [0, 1] (a sigmoid).
    flat = ratio.reshape(2, -1, shape[-1])
    np.testing.assert_allclose(flat, np.broadcast_to(flat[:, :1], flat.shape), rtol=1e-5)
    assert np.all((flat > 0) & (flat < 1))


def test_attention_gate_keeps_skip_shape_and_coefficients_in_unit_interval(rng):
    x_in, g_in = keras.Input((8, 8, 4)), keras.Input((4, 4, 6))
    gated = attention_gate(x_in, g_in, name="gate")
    model = keras.Model([x_in, g_in], gated)
    coeff = keras.Model([x_in, g_in], model.get_layer("gate_coefficients").output)
    x, g = rng.normal(size=(2, 8, 8, 4)).astype("float32"), rng.normal(size=(2, 4, 4, 6)).astype("float32")
    assert _np(model([x, g])).shape == (2, 8, 8, 4)
    alpha = _np(coeff([x, g]))
    assert alpha.shape == (2, 8, 8, 1) and np.all((alpha > 0) & (alpha < 1))
    with pytest.raises(ValueError, match="twice the gating shape"):
        attention_gate(keras.Input((8, 8, 4)), keras.Input((8, 8, 4)))


def test_transformer_classifier_round_trip_keeps_attention_maps(assert_round_trip, rng):
    model = transformer_classifier((6, 2), 3, hidden_dim=8, depth=2, num_heads=2, mlp_dim=8)
    x = rng.normal(size=(2, 6, 2)).astype("float32")
    loaded = assert_round_trip(model, x)
    for a, b in zip(attention_scores_model(model)(x), attention_scores_model(loaded)(x), strict=True):
        np.testing.assert_allclose(_np(a), _np(b), atol=1e-6)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: transformer_classifier((None, 3)), "fixed T"),
        (lambda: transformer_classifier((8, 8, 3)), r"\(T, F\)"),
        (lambda: TransformerEncoderBlock(num_heads=0, mlp_dim=4), "positive"),
        (lambda: TransformerEncoderBlock(num_heads=8, mlp_dim=4)(np.zeros((1, 2, 4), "float32")), "smaller than"),
    ],
)
def test_bad_arguments_give_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_registered():
    assert "transformer_classifier" in models.list_models(family="Attention")


@pytest.mark.slow
def test_transformer_learns_to_read_the_first_token():
    """Label = sign of token 0's first feature; the other tokens are noise, so position matters."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(640, 12, 2)).astype("float32")
    y = (x[:, 0, 0] > 0).astype("int32")
    model = transformer_classifier((12, 2), 2, hidden_dim=16, depth=1, num_heads=2, mlp_dim=32)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    build_optimizers(model)  # Adam's variables before fit: the first step is traced once, not twice
    model.fit(x[:512], y[:512], batch_size=32, epochs=6, verbose=0)
    accuracy = (model.predict(x[512:], verbose=0).argmax(-1) == y[512:]).mean()
    # Measured 0.91-0.95 over seeds after 4 epochs; chance is 0.5.
    assert accuracy > 0.8, f"test accuracy {accuracy:.2f} (chance 0.5)"
