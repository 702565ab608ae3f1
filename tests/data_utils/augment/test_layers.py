"""Tests for data_utils.augment.layers: the augmentations as Keras layers."""

import numpy as np
import pytest

from data_utils import augment
from tests.data_utils.augment.helpers import volume


def test_layers_augment_in_training_only_and_round_trip(tmp_path, rng):
    import keras

    inputs = keras.Input((16, 16, 1))
    x = augment.RandomBiasField(seed=1, coeff_range=(0.1, 0.3))(inputs)
    x = augment.RandomAffine(seed=2, rotation=0.3)(x)
    model = keras.Model(inputs, x)
    data = volume(rng, (2, 16, 16, 1))
    np.testing.assert_allclose(model(data, training=False).numpy(), data)
    trained = model(data, training=True).numpy()
    assert np.abs(trained - data).max() > 1e-3
    path = tmp_path / "aug.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.layers[2].get_config()["rotation"] == 0.3
    assert isinstance(loaded.layers[1], augment.RandomBiasField)
    layer = augment.RandomFlip(seed=4, prob=1.0)
    out = layer({"image": data, "label": np.zeros((2, 16, 16), "int32")})
    np.testing.assert_array_equal(out["image"].numpy(), data[:, ::-1, ::-1])
    with pytest.raises(ValueError, match="dict"):
        augment.RandomMixUp(num_classes=2)(data)


def test_stateless_seed_is_fresh_per_call_and_folds_in_the_replica():
    import keras

    gen = keras.random.SeedGenerator(7)
    a, b = augment.stateless_seed(gen).numpy(), augment.stateless_seed(gen).numpy()
    assert a.shape == (2,) and a.dtype == np.int32 and not np.array_equal(a, b)
    assert int(augment.replica_id()) == 0  # outside a strategy
    # Under MirroredStrategy each replica folds in its index: see tests/training/test_distribute.py.


def test_ct_window_and_projective_layers_round_trip(tmp_path, rng):
    import keras

    inputs = keras.Input((16, 16, 1))
    x = augment.RandomCTWindow(seed=1, window="brain", center_shift=10.0)(inputs)
    x = augment.RandomProjective(seed=2, distortion=0.2)(x)
    model = keras.Model(inputs, x)
    hu = rng.uniform(-100, 150, (2, 16, 16, 1)).astype("float32")
    windowed = augment.ct_window(hu, 0, window="brain").numpy()
    # Inference: the projective step passes through, the window is the nominal one (no jitter).
    np.testing.assert_allclose(model(hu, training=False).numpy(), windowed, atol=1e-6)
    assert np.abs(model(hu, training=True).numpy() - windowed).max() > 1e-3
    model.save(tmp_path / "ct.keras")
    loaded = keras.models.load_model(tmp_path / "ct.keras")
    assert loaded.layers[1].get_config()["window"] == "brain"
    assert loaded.layers[2].get_config()["distortion"] == 0.2
