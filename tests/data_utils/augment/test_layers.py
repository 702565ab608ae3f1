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
