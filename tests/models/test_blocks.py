"""Shared building blocks: rank-generic layers, normalisations, residual/dense/attention/SE blocks, heads."""

import keras
import numpy as np
import pytest
from keras import layers

from models import blocks


def _model(shape, fn):
    x = keras.Input(shape)
    return keras.Model(x, fn(x))


@pytest.mark.parametrize("shape, rank", [((8, 3), 1), ((8, 8, 3), 2), ((4, 8, 8, 3), 3)])
def test_spatial_rank_and_rank_generic_layers(shape, rank):
    assert blocks.spatial_rank(shape) == rank
    x = keras.Input(shape)
    assert blocks.conv(rank, 5)(x).shape == (None, *shape[:-1], 5)
    assert blocks.max_pool(rank)(x).shape == (None, *[s // 2 for s in shape[:-1]], 3)
    assert blocks.global_avg_pool(rank)(x).shape == (None, 3)


def test_spatial_rank_rejects_flat_or_4d_shapes():
    with pytest.raises(ValueError, match="channels-last"):
        blocks.spatial_rank((8,))
    with pytest.raises(ValueError, match="channels-last"):
        blocks.spatial_rank((2, 4, 4, 4, 1))


@pytest.mark.parametrize("kind", ["batch", "instance", "group", "layer", "none"])
def test_normalization_kinds(kind, rng):
    layer = blocks.normalization(kind, groups=2)
    x = rng.normal(3.0, 2.0, (2, 4, 4, 4)).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    if kind == "none":
        np.testing.assert_array_equal(y, x)
    else:
        assert abs(y.mean()) < 0.1


def test_normalization_rejects_unknown_names():
    with pytest.raises(ValueError, match="normalization must be one of"):
        blocks.normalization("batchnorm")


def test_conv_norm_act_drops_bias_only_when_a_norm_follows():
    m = _model((8, 8, 2), lambda x: blocks.conv_norm_act(x, 4, name="u"))
    assert not m.get_layer("u_conv").use_bias
    m = _model((8, 8, 2), lambda x: blocks.conv_norm_act(x, 4, norm="none", name="v"))
    assert m.get_layer("v_conv").use_bias


@pytest.mark.parametrize("shape", [(8, 8, 4), (4, 8, 8, 4)], ids=["2d", "3d"])
def test_residual_blocks_shapes_and_shortcuts(shape):
    spatial = shape[:-1]
    m = _model(shape, lambda x: blocks.residual_block(x, 4, name="id"))
    assert m.output_shape == (None, *spatial, 4)
    assert "id_proj_conv" not in [layer.name for layer in m.layers]  # identity shortcut
    m = _model(shape, lambda x: blocks.residual_block(x, 2, strides=2, bottleneck=True, name="bn"))
    assert m.output_shape == (None, *[s // 2 for s in spatial], 8)
    assert m.get_layer("bn_proj_conv").strides == (2,) * len(spatial)


def test_residual_block_with_zero_residual_branch_is_relu_of_input(rng):
    m = _model((4, 4, 3), lambda x: blocks.residual_block(x, 3, norm="none", name="r"))
    for name in ("r_1_conv", "r_2_conv"):
        layer = m.get_layer(name)
        layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    x = rng.normal(size=(2, 4, 4, 3)).astype("float32")
    np.testing.assert_allclose(m(x), np.maximum(x, 0), atol=1e-6)


def test_dense_block_and_transition_channels():
    m = _model(
        (8, 8, 6), lambda x: blocks.transition(blocks.dense_block(x, 3, 4, name="d"), 0.5, name="t")
    )
    assert m.get_layer("d_layer3_concat").output.shape == (None, 8, 8, 6 + 3 * 4)
    assert m.output_shape == (None, 4, 4, 9)
    with pytest.raises(ValueError, match="compression"):
        _model((8, 8, 6), lambda x: blocks.transition(x, 1.5))


@pytest.mark.parametrize("spatial", [(8, 8), (4, 8, 8)], ids=["2d", "3d"])
def test_attention_gate_keeps_shape_and_coefficients_in_unit_interval(spatial, rng):
    x = keras.Input((*spatial, 6))
    g = keras.Input((*[s // 2 for s in spatial], 10))
    y = blocks.attention_gate(x, g, 4, name="ag")
    model = keras.Model([x, g], [y, keras.Model([x, g], y).get_layer("ag_coefficients").output])
    xs = rng.normal(size=(2, *spatial, 6)).astype("float32")
    gs = rng.normal(size=(2, *[s // 2 for s in spatial], 10)).astype("float32")
    out, coeff = (keras.ops.convert_to_numpy(t) for t in model([xs, gs]))
    assert out.shape == xs.shape
    assert coeff.shape == (2, *spatial, 1)
    assert coeff.min() >= 0 and coeff.max() <= 1


def test_attention_gate_rejects_mismatched_grids():
    with pytest.raises(ValueError, match="twice the gating shape"):
        blocks.attention_gate(keras.Input((8, 8, 4)), keras.Input((8, 8, 4)))


@pytest.mark.parametrize("shape", [(16, 8), (8, 8, 8), (4, 4, 4, 8)], ids=["1d", "2d", "3d"])
def test_squeeze_excitation_rescales_each_channel_by_a_weight_in_0_1(shape, rng):
    m = _model(shape, lambda x: blocks.squeeze_excitation(x, ratio=4, name="se"))
    x = np.abs(rng.normal(size=(2, *shape))).astype("float32") + 0.1
    y = keras.ops.convert_to_numpy(m(x))
    ratio = y / x
    # One weight per (sample, channel): constant over space, inside (0, 1).
    spatial_axes = tuple(range(1, len(shape)))
    np.testing.assert_allclose(
        ratio, np.broadcast_to(ratio.mean(axis=spatial_axes, keepdims=True), ratio.shape), rtol=1e-4
    )
    assert ratio.min() > 0 and ratio.max() < 1
    assert m.get_layer("se_reduce").units == 2
    with pytest.raises(ValueError, match="ratio"):
        _model(shape, lambda x: blocks.squeeze_excitation(x, ratio=0))


def test_classifier_head_is_float32_and_checks_arguments(rng):
    m = _model((4, 4, 3), lambda x: blocks.classifier_head(x, 5, pooling="max", dropout=0.1))
    y = keras.ops.convert_to_numpy(m(rng.normal(size=(2, 4, 4, 3)).astype("float32")))
    assert y.shape == (2, 5) and y.dtype == np.float32
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="pooling"):
        _model((4, 4, 3), lambda x: blocks.classifier_head(x, 5, pooling="sum"))
    with pytest.raises(ValueError, match="num_classes"):
        _model((4, 4, 3), lambda x: blocks.classifier_head(x, 0))


def test_rank_pickers_name_the_missing_rank():
    with pytest.raises(ValueError, match="conv_transpose is available"):
        blocks.conv_transpose(4, 3)
    assert isinstance(blocks.upsample(3), layers.UpSampling3D)
    assert isinstance(blocks.zero_pad(2), layers.ZeroPadding2D)
    assert isinstance(blocks.spatial_dropout(1, 0.1), layers.SpatialDropout1D)
    assert isinstance(blocks.avg_pool(2), layers.AveragePooling2D)
    assert isinstance(blocks.global_max_pool(3), layers.GlobalMaxPooling3D)


# Builders with batch norm, with the smallest registered configuration (cnn_lstm nests its frame
# encoder inside TimeDistributed; mlp has batch norm only when asked).
_BN_BUILDERS = [("cnn_lstm", {}), ("resnet18", {}), ("pointnet", {}), ("dcgan_generator", {}),
                ("mlp", {"batch_norm": True}), ("vgg", {"norm": "batch"})]


@pytest.mark.parametrize("name, extra", _BN_BUILDERS, ids=[n for n, _ in _BN_BUILDERS])
def test_builders_pass_bn_momentum_to_every_batch_norm_layer(name, extra):
    import models

    spec = models.get_spec(name)
    tuned = spec.builder(**spec.small_kwargs(), **extra, bn_momentum=0.9)
    norms = [l for l in blocks._walk_layers(tuned) if isinstance(l, layers.BatchNormalization)]
    assert norms, f"{name} has no batch norm layer to test"
    assert {l.momentum for l in norms} == {0.9}


def test_bn_momentum_defaults_to_keras_value():
    import models

    model = models.get("mlp", input_shape=(4,), num_classes=2, batch_norm=True)
    assert [l.momentum for l in model.layers if isinstance(l, layers.BatchNormalization)] == [0.99, 0.99]
    assert blocks.BN_MOMENTUM == layers.BatchNormalization().momentum == 0.99


def test_set_bn_momentum_rejects_out_of_range_values():
    model = _model((4,), lambda x: layers.BatchNormalization()(x))
    with pytest.raises(ValueError, match="bn_momentum must be in"):
        blocks.set_bn_momentum(model, 1.0)
