"""Tests for training/registration_training.py: unsupervised / weakly supervised registration."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from tests.training.mirrored_trainers import assert_same_as_one_device
from training import losses
from training.registration_training import RegistrationTrainer

YY, XX = np.mgrid[:16, :16]


def _blob(cy, cx):
    return np.exp(-((YY - cy) ** 2 + (XX - cx) ** 2) / 8.0)[..., None].astype("float32")


def _network(two_inputs=True, zero=True, dilated=False):
    moving, fixed = keras.Input((16, 16, 1)), keras.Input((16, 16, 1))
    joined = layers.Concatenate()([moving, fixed]) if two_inputs else keras.Input((16, 16, 2))
    h = layers.Conv2D(16, 3, padding="same", activation="relu")(joined)
    if dilated:  # a receptive field wide enough to see a 2-voxel shift of a blob
        h = layers.Conv2D(16, 3, padding="same", activation="relu", dilation_rate=2)(h)
        h = layers.Conv2D(16, 3, padding="same", activation="relu", dilation_rate=4)(h)
    ddf = layers.Conv2D(2, 3, padding="same", kernel_initializer="zeros" if zero else "glorot_uniform")(h)
    return keras.Model([moving, fixed] if two_inputs else joined, ddf)


@pytest.mark.parametrize("two_inputs", [True, False])
def test_zero_displacement_gives_the_unwarped_similarity(two_inputs):
    moving, fixed = _blob(7, 7)[None], _blob(9, 8)[None]
    trainer = RegistrationTrainer(_network(two_inputs), similarity="ssd", regulariser="bending_energy",
                                  label_weight=1.0)
    trainer.compile("adam")
    logs = trainer.test_step({"moving": moving, "fixed": fixed,
                              "moving_label": (moving[..., 0] > 0.5), "fixed_label": (fixed[..., 0] > 0.5)})
    assert float(logs["similarity"]) == pytest.approx(float(losses.ssd_loss(fixed, moving)[0]), rel=1e-5)
    assert float(logs["regularisation"]) == pytest.approx(0.0, abs=1e-12)
    expected_label = float(losses.soft_dice_loss((fixed > 0.5).astype("float32"), (moving > 0.5).astype("float32"))[0])
    assert float(logs["label"]) == pytest.approx(expected_label, rel=1e-5)
    assert float(logs["loss"]) == pytest.approx(float(logs["similarity"]) + float(logs["label"]), rel=1e-5)


def test_call_warps_the_moving_image():
    trainer = RegistrationTrainer(_network())
    moving = _blob(7, 7)[None]
    warped, ddf = trainer((moving, moving))
    assert tuple(ddf.shape) == (1, 16, 16, 2)
    np.testing.assert_allclose(warped, moving, atol=1e-6)  # zero field: the identity


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="similarity must be one of"):
        RegistrationTrainer(_network(), similarity="ncc2")
    with pytest.raises(TypeError, match="regulariser must be a name or a function"):
        RegistrationTrainer(_network(), regulariser=3)
    with pytest.raises(ValueError, match="label_weight"):
        RegistrationTrainer(_network(), label_weight=-1.0)
    inp = keras.Input((16, 16, 2))
    bad = RegistrationTrainer(keras.Model(inp, layers.Conv2D(3, 1)(inp)))
    with pytest.raises(ValueError, match="2 channels"):
        bad.predict_ddf(_blob(7, 7)[None], _blob(7, 7)[None])
    trainer = RegistrationTrainer(_network(), label_weight=1.0)
    with pytest.raises(KeyError, match="moving_label"):
        trainer.test_step({"moving": _blob(7, 7)[None], "fixed": _blob(7, 7)[None]})


@pytest.mark.slow
def test_registration_learns_to_align_shifted_blobs():
    rng = np.random.default_rng(0)
    centres, shifts = rng.uniform(6, 10, (32, 2)), rng.uniform(-2, 2, (32, 2))
    fixed = np.stack([_blob(*c) for c in centres])
    moving = np.stack([_blob(*(c + s)) for c, s in zip(centres, shifts)])
    trainer = RegistrationTrainer(_network(dilated=True), similarity="ssd", regulariser="gradient_norm",
                                  regularisation_weight=0.01)
    trainer.compile(keras.optimizers.Adam(3e-3))
    data = tf.data.Dataset.from_tensor_slices({"moving": moving, "fixed": fixed}).batch(8)
    history = trainer.fit(data, epochs=40, verbose=0).history
    assert history["similarity"][-1] < 0.2 * history["similarity"][0]  # measured 0.0176 -> 0.0005


@pytest.mark.slow
def test_mirrored_strategy_gives_the_one_device_losses():
    assert_same_as_one_device("registration")


def test_the_zoo_voxelmorph_plugs_in():
    # models.get("voxelmorph") returns {"warped", "displacement"}; the trainer reads the displacement.
    import models

    net = models.get("voxelmorph", input_shape=(16, 16, 1), encoder_filters=(8, 8), decoder_filters=(8, 8, 8))
    trainer = RegistrationTrainer(net, similarity="ssd")
    moving = _blob(7, 7)[None]
    warped, ddf = trainer((moving, _blob(8, 8)[None]))
    assert tuple(ddf.shape) == (1, 16, 16, 2)
    np.testing.assert_allclose(warped, moving, atol=1e-3)  # near-zero initial field: about the identity
    inp = keras.Input((16, 16, 2))
    bad = RegistrationTrainer(keras.Model(inp, {"flow": layers.Conv2D(2, 1)(inp)}))
    with pytest.raises(KeyError, match="'ddf' or 'displacement'"):
        bad.predict_ddf(moving, moving)
