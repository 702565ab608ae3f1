"""Tests for training/mil.py: attention-MIL pooling, the bag model and its trainer."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.training.mirrored_trainers import assert_same_as_one_device
from training import losses
from training.mil import AttentionMILPooling, MILTrainer, attention_mil_model


@pytest.mark.parametrize("gated", [True, False])
def test_attention_pooling_is_a_masked_weighted_mean(gated, rng):
    layer = AttentionMILPooling(attention_dim=5, gated=gated)
    h = rng.normal(size=(2, 4, 3)).astype("float32")
    mask = np.array([[1, 1, 0, 1], [1, 0, 0, 0]], "float32")
    pooled, attention = (np.asarray(t) for t in layer(h, instance_mask=mask))
    np.testing.assert_allclose(attention.sum(1), 1.0, rtol=1e-6)
    assert np.all(attention[mask == 0] < 1e-6)
    np.testing.assert_allclose(attention[1, 0], 1.0, rtol=1e-6)  # a single real instance takes it all
    np.testing.assert_allclose(pooled, np.einsum("bn,bnf->bf", attention, h), rtol=1e-5, atol=1e-6)


def test_attention_pooling_is_permutation_invariant(rng):
    layer = AttentionMILPooling(attention_dim=4)
    h = rng.normal(size=(1, 5, 3)).astype("float32")
    order = np.array([3, 0, 4, 1, 2])
    pooled, attention = layer(h)
    pooled_p, attention_p = layer(h[:, order])
    np.testing.assert_allclose(pooled_p, pooled, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(attention_p), np.asarray(attention)[:, order], rtol=1e-5)
    with pytest.raises(ValueError, match="attention_dim"):
        AttentionMILPooling(attention_dim=0)


def test_mil_model_round_trips_and_takes_bags_of_any_size(tmp_path, rng):
    model = attention_mil_model((4, 4, 1), embedding_dim=6, attention_dim=5)
    bags = {"bag": rng.normal(size=(2, 3, 4, 4, 1)).astype("float32"), "mask": np.ones((2, 3), "float32")}
    out = model(bags)
    assert tuple(out["probability"].shape) == (2, 1) and tuple(out["attention"].shape) == (2, 3)
    model.save(tmp_path / "mil.keras")
    loaded = keras.models.load_model(tmp_path / "mil.keras")
    np.testing.assert_allclose(loaded(bags)["probability"], out["probability"], rtol=1e-5)
    bigger = {"bag": rng.normal(size=(1, 7, 4, 4, 1)).astype("float32"), "mask": np.ones((1, 7), "float32")}
    assert tuple(model(bigger)["attention"].shape) == (1, 7)


def test_trainer_loss_is_the_bag_cross_entropy(rng):
    model = attention_mil_model((4,), embedding_dim=6, attention_dim=5)
    trainer = MILTrainer(model)
    trainer.compile(keras.optimizers.SGD(0.0))
    bags = rng.normal(size=(4, 3, 4)).astype("float32")
    labels = np.array([0, 1, 1, 0], "int32")
    logs = trainer.train_step({"bag": bags, "label": labels})  # no mask: every instance is real
    prob = np.asarray(model({"bag": bags, "mask": np.ones((4, 3), "float32")})["probability"])
    expected = np.mean(losses.cross_entropy(labels.reshape(-1, 1).astype("float32"), prob))
    assert float(logs["loss"]) == pytest.approx(float(expected), rel=1e-5)
    assert float(logs["accuracy"]) == pytest.approx(np.mean((prob[:, 0] > 0.5) == labels))
    assert tuple(trainer.attention({"bag": bags}).shape) == (4, 3)
    with pytest.raises(KeyError, match="bag"):
        trainer.train_step({"image": bags, "label": labels})


@pytest.mark.slow
def test_mil_finds_the_key_instance():
    rng = np.random.default_rng(0)
    n, size = 128, 6
    bags = rng.normal(size=(n, size, 4)).astype("float32")
    labels = rng.integers(0, 2, n).astype("int32")
    key = rng.integers(0, size, n)
    bags[labels == 1, key[labels == 1]] += np.array([3.0, -3.0, 0.0, 0.0], "float32")
    trainer = MILTrainer(attention_mil_model((4,), embedding_dim=16, attention_dim=8, max_instances=size))
    trainer.compile(keras.optimizers.Adam(1e-2))
    history = trainer.fit(tf.data.Dataset.from_tensor_slices({"bag": bags, "label": labels}).batch(16),
                          epochs=10, verbose=0).history
    assert history["accuracy"][-1] > 0.9  # measured 0.97-0.98
    attention = np.asarray(trainer.attention({"bag": bags}))
    hits = np.mean(attention[labels == 1].argmax(1) == key[labels == 1])
    assert hits > 0.9  # the positive instance gets the most attention without instance labels


@pytest.mark.slow
def test_mirrored_strategy_gives_the_one_device_losses():
    assert_same_as_one_device("mil")
