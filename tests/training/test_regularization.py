"""Tests for training.regularization: penalties, weight noise, early stopping, ensembles, MC dropout."""

import keras
import numpy as np
import pytest

from training import regularization as R


def _conv_net(dropout=0.0, batch_norm=False, seed=0):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", kernel_initializer=keras.initializers.GlorotUniform(seed))(inputs)
    if batch_norm:
        x = keras.layers.BatchNormalization()(x)
    if dropout:
        x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Conv2D(3, 1, activation="softmax", kernel_initializer=keras.initializers.GlorotUniform(seed + 1))(x)
    return keras.Model(inputs, outputs)


@pytest.fixture
def data(rng):
    x = rng.random((16, 8, 8, 1)).astype("float32")
    y = np.digitize(x[..., 0], [0.33, 0.66]).astype("int32")
    return x, y


def test_weight_penalty_value_and_save_round_trip(tmp_path):
    model = _conv_net()
    assert R.weight_penalty(model) == 0.0
    assert R.add_weight_penalty(model, l1=1e-3, l2=1e-2) == 2  # two kernels, no biases
    kernels = [model.layers[1].kernel.numpy(), model.layers[2].kernel.numpy()]
    expected = sum(1e-3 * np.abs(k).sum() + 1e-2 * (k**2).sum() for k in kernels)
    assert R.weight_penalty(model) == pytest.approx(expected, rel=1e-5)
    model.save(tmp_path / "m.keras")
    assert R.weight_penalty(keras.models.load_model(tmp_path / "m.keras")) == pytest.approx(expected, rel=1e-5)
    R.add_weight_penalty(model)  # zero weights remove the penalty
    assert R.weight_penalty(model) == 0.0
    with pytest.raises(ValueError, match=">= 0"):
        R.add_weight_penalty(model, l2=-1.0)


def test_weight_penalty_enters_training_and_shrinks_weights(data):
    x, y = data
    norms = {}
    for l2 in (0.0, 1.0):
        model = _conv_net()
        R.add_weight_penalty(model, l2=l2)
        model.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
        model.fit(x, y, epochs=2, batch_size=8, verbose=0)
        norms[l2] = sum(float(np.sum(w.numpy() ** 2)) for w in model.trainable_weights if w.name == "kernel")
    assert norms[1.0] < 0.8 * norms[0.0]


def test_penalty_added_after_compile_is_used(data):
    x, y = data
    model = _conv_net()
    model.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
    plain = model.fit(x, y, epochs=1, batch_size=16, verbose=0).history["loss"][0]
    R.add_weight_penalty(model, l2=1.0)
    penalised = model.fit(x, y, epochs=1, batch_size=16, verbose=0).history["loss"][0]
    assert penalised == pytest.approx(plain + R.weight_penalty(model), rel=1e-4)


def test_weight_noise_perturbs_steps_but_leaves_clean_weights(data):
    x, y = data
    model = _conv_net()
    model.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")  # no updates: only noise acts
    before = [w.numpy().copy() for w in model.trainable_weights]
    clean_loss = model.evaluate(x, y, verbose=0)
    noisy = model.fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=[R.WeightNoise(0.5, seed=1)])
    for w, b in zip(model.trainable_weights, before):
        np.testing.assert_allclose(w.numpy(), b, atol=1e-5)
    assert abs(noisy.history["loss"][-1] - clean_loss) > 0.01  # the steps really saw perturbed weights
    with pytest.raises(ValueError, match="stddev"):
        R.WeightNoise(-1.0)


def test_early_stopping_stops_and_is_configured(data):
    x, y = data
    callback = R.early_stopping("val_loss", mode="min", patience=2)
    assert callback.monitor == "val_loss" and callback.patience == 2 and callback.restore_best_weights
    model = _conv_net()
    model.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")  # val_loss never improves
    history = model.fit(x, y, validation_data=(x, y), epochs=20, verbose=0, callbacks=[callback])
    assert len(history.history["loss"]) == 3  # best at epoch 1, then `patience` epochs without improvement
    with pytest.raises(ValueError, match="mode"):
        R.early_stopping(mode="up")


def test_majority_vote_and_ensembles(tmp_path, rng):
    maps = [np.array([0, 1, 2, 2]), np.array([0, 1, 1, 0]), np.array([1, 2, 1, 1])]
    np.testing.assert_array_equal(R.majority_vote(maps), [0, 1, 1, 0])  # last voxel: one vote each -> 0
    np.testing.assert_array_equal(R.majority_vote([np.array([0, 2]), np.array([2, 0])]), [0, 0])  # ties: smallest
    with pytest.raises(ValueError, match="integer"):
        R.majority_vote([np.zeros(2), np.ones(2)])
    models = [_conv_net(seed=s) for s in (0, 10, 20)]
    x = rng.random((2, 8, 8, 1)).astype("float32")
    singles = [np.asarray(m(x)) for m in models]
    mean = R.ensemble_predict(models, x)
    np.testing.assert_allclose(mean, np.mean(singles, axis=0), rtol=1e-6)
    votes = R.ensemble_predict(models, x, mode="vote")
    np.testing.assert_array_equal(votes, R.majority_vote([np.argmax(p, -1) for p in singles], num_classes=3))
    combined = R.average_model(models)
    np.testing.assert_allclose(np.asarray(combined(x)), mean, rtol=1e-5, atol=1e-6)
    combined.save(tmp_path / "ensemble.keras")
    np.testing.assert_allclose(np.asarray(keras.models.load_model(tmp_path / "ensemble.keras")(x)), mean, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="mode"):
        R.ensemble_predict(models, x, mode="median")
    with pytest.raises(ValueError, match="at least two"):
        R.average_model(models[:1])


def test_mc_dropout_uncertainty_maps(rng):
    x = rng.random((2, 8, 8, 1)).astype("float32")
    model = _conv_net(dropout=0.5, batch_norm=True)
    bn = model.layers[2]
    moving_mean = bn.moving_mean.numpy().copy()
    maps = R.mc_dropout_predict(model, x, num_samples=8)
    assert maps["mean"].shape == (2, 8, 8, 3) and maps["variance"].shape == (2, 8, 8, 3)
    assert maps["entropy"].shape == (2, 8, 8) and maps["mutual_information"].shape == (2, 8, 8)
    np.testing.assert_allclose(maps["mean"].sum(-1), 1.0, rtol=1e-5)
    assert maps["variance"].max() > 0 and np.all(maps["mutual_information"] >= 0)
    assert np.all(maps["mutual_information"] <= maps["entropy"] + 1e-6)
    assert np.all(maps["entropy"] <= np.log(3) + 1e-6)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), moving_mean)  # BN statistics untouched
    assert bn.trainable  # and restored
    # The same seed before building the model gives the same maps.
    keras.utils.set_random_seed(1234)
    again = R.mc_dropout_predict(_conv_net(dropout=0.5, batch_norm=True), x, num_samples=8)
    np.testing.assert_allclose(again["mean"], maps["mean"], rtol=1e-6)
    assert not np.allclose(R.mc_dropout_predict(model, x, num_samples=8)["mean"], maps["mean"])
    # Without dropout every sample is the same: no spread at all.
    deterministic = R.mc_dropout_predict(_conv_net(), x, num_samples=3)
    assert deterministic["variance"].max() < 1e-10 and deterministic["mutual_information"].max() < 1e-5
    with pytest.raises(ValueError, match="num_samples"):
        R.mc_dropout_predict(model, x, num_samples=1)


def _dense_net(seed, units=1, inputs=5):
    x = keras.Input((inputs,))
    y = keras.layers.Dense(units, kernel_initializer=keras.initializers.GlorotUniform(seed), bias_initializer="ones")(x)
    return keras.Model(x, y)


def test_tying_penalty_hand_computed_and_mismatch():
    a, b = _dense_net(0), _dense_net(1)
    kernel_gap = float(np.sum((a.layers[1].kernel.numpy() - b.layers[1].kernel.numpy()) ** 2))
    assert float(R.tying_penalty(a, b, which="kernels")) == pytest.approx(kernel_gap, rel=1e-6)
    b.layers[1].bias.assign([3.0])  # bias gap (3 - 1)^2 = 4 counts only with which="all"
    assert float(R.tying_penalty(a, b)) == pytest.approx(kernel_gap + 4.0, rel=1e-6)
    assert float(R.tying_penalty(a, a)) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        R.tying_penalty(a, _dense_net(0, units=2))
    with pytest.raises(ValueError, match="which"):
        R.tying_penalty(a, b, which="biases")


def test_soft_parameter_sharing_pulls_networks_together_and_round_trips(tmp_path, rng):
    # Two sites: the same linear relation with a small site difference.
    w = rng.normal(size=(5, 1)).astype("float32")
    x_a, x_b = rng.normal(size=(320, 5)).astype("float32"), rng.normal(size=(320, 5)).astype("float32")
    y_a, y_b = x_a @ w, x_b @ (w + 0.5)
    gaps = {}
    for strength in (0.0, 10.0):
        model = R.SoftParameterSharing(_dense_net(0), _dense_net(1), strength=strength)
        model.compile(keras.optimizers.SGD(0.02), loss=["mse", "mse"])
        history = model.fit([x_a, x_b], [y_a, y_b], epochs=4, batch_size=32, verbose=0).history
        gaps[strength] = float(R.tying_penalty(model.network_a, model.network_b))
        assert history["loss"][-1] < history["loss"][0]
    assert gaps[10.0] < 0.2 * gaps[0.0]  # the tie holds the two sites' weights together

    # The logged loss is both tasks' losses plus strength * penalty.
    mse_a = float(np.mean((model.network_a(x_a).numpy() - y_a) ** 2))
    mse_b = float(np.mean((model.network_b(x_b).numpy() - y_b) ** 2))
    assert model.evaluate([x_a, x_b], [y_a, y_b], batch_size=320, verbose=0)[0] == pytest.approx(
        mse_a + mse_b + model.penalty(), rel=1e-4)
    model.save(tmp_path / "tied.keras")
    loaded = keras.models.load_model(tmp_path / "tied.keras")
    assert isinstance(loaded, R.SoftParameterSharing) and loaded.strength == 10.0 and loaded.which == "all"
    assert loaded.penalty() == pytest.approx(model.penalty(), rel=1e-6)
    np.testing.assert_allclose(loaded.network_a(x_a).numpy(), model.network_a(x_a).numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="strength"):
        R.SoftParameterSharing(_dense_net(0), _dense_net(1), strength=-1.0)
    with pytest.raises(ValueError, match="architecture"):
        R.SoftParameterSharing(_dense_net(0), _dense_net(1, inputs=4))
