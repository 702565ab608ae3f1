"""Autoencoders: shapes in 2D/3D, separable encoder/decoder, the VAE's sampling and KL layers, errors, learning."""

import keras
import numpy as np
import pytest

import models
from models.autoencoder import (
    KLDivergenceLoss,
    Sampling,
    conv_autoencoder,
    get_decoder,
    get_encoder,
    vae,
)
from training.trainer_base import build_optimizers


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("shape", [(16, 16, 1), (8, 8, 8, 2)], ids=["2d", "3d"])
def test_conv_autoencoder_shapes_and_separable_parts(shape, rng):
    model = conv_autoencoder(shape, filters=(4, 8), latent_channels=3)
    x = rng.uniform(size=(2, *shape)).astype("float32")
    code = _np(get_encoder(model)(x))
    assert code.shape == (2, *[s // 4 for s in shape[:-1]], 3)
    recon = _np(model(x))
    assert recon.shape == x.shape and np.all((recon >= 0) & (recon <= 1))
    np.testing.assert_allclose(_np(get_decoder(model)(code)), recon, atol=1e-5)


@pytest.mark.parametrize("shape", [(16, 16, 1), (8, 8, 8, 1)], ids=["2d", "3d"])
def test_vae_encoder_decoder_shapes(shape, rng):
    model = vae(shape, latent_dim=5, filters=(4, 8), dense_units=16)
    x = rng.uniform(size=(3, *shape)).astype("float32")
    mean, log_var = get_encoder(model)(x)
    assert _np(mean).shape == (3, 5) and _np(log_var).shape == (3, 5)
    generated = _np(get_decoder(model)(rng.normal(size=(4, 5)).astype("float32")))
    assert generated.shape == (4, *shape)
    # Inference decodes the mean, so predict is deterministic; training samples, so it is not.
    np.testing.assert_allclose(_np(model(x)), _np(get_decoder(model)(mean)), atol=1e-5)
    assert not np.allclose(_np(model(x, training=True)), _np(model(x, training=True)))


def test_kl_layer_adds_the_closed_form_kl_divergence():
    mean = np.array([[0.0, 1.0], [2.0, 0.0]], "float32")
    log_var = np.array([[0.0, 0.0], [0.0, np.log(4.0)]], "float32")
    layer = KLDivergenceLoss(weight=0.5)
    out_mean, out_log_var = layer([mean, log_var])
    np.testing.assert_array_equal(_np(out_mean), mean)
    # KL(N(m, s^2) || N(0, 1)) = 0.5 * (s^2 + m^2 - 1 - log s^2), summed over dims, mean over batch.
    kl = 0.5 * (np.exp(log_var) + mean**2 - 1 - log_var).sum(-1).mean()
    np.testing.assert_allclose(float(_np(layer.losses[0])), 0.5 * kl, rtol=1e-5)


def test_kl_is_zero_for_the_prior():
    layer = KLDivergenceLoss()
    layer([np.zeros((4, 3), "float32"), np.zeros((4, 3), "float32")])
    assert abs(float(_np(layer.losses[0]))) < 1e-7


def test_sampling_has_the_requested_mean_and_spread():
    mean = np.full((20000, 2), [1.0, -2.0], "float32")
    log_var = np.full((20000, 2), [0.0, np.log(0.25)], "float32")
    z = _np(Sampling(seed=3)([mean, log_var], training=True))
    np.testing.assert_allclose(z.mean(0), [1.0, -2.0], atol=0.03)
    np.testing.assert_allclose(z.std(0), [1.0, 0.5], atol=0.03)
    same = _np(Sampling(seed=3)([mean, log_var], training=True))
    np.testing.assert_array_equal(z, same)  # same seed, same draw
    np.testing.assert_array_equal(_np(Sampling(seed=3)([mean, log_var])), mean)  # inference: the mean


def test_default_kl_weight_matches_a_mean_reduced_reconstruction_loss():
    model = vae((8, 8, 2), latent_dim=2, filters=(4,), dense_units=8)
    assert model.get_layer("kl_divergence").weight == pytest.approx(1 / 128)


def test_round_trips(assert_round_trip, rng):
    assert_round_trip(conv_autoencoder((8, 8, 8, 1), filters=(4,)), rng.uniform(size=(2, 8, 8, 8, 1)).astype("float32"))
    loaded = assert_round_trip(vae((16, 16, 1), 3, filters=(4, 8), dense_units=8, seed=1),
                               rng.uniform(size=(2, 16, 16, 1)).astype("float32"))
    assert get_decoder(loaded).input_shape == (None, 3)


def test_registry():
    assert {"conv_autoencoder", "vae"} <= set(models.list_models(family="Autoencoder"))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: conv_autoencoder((20, 20, 1), filters=(4, 8, 16)), "divisible by 8"),
        (lambda: vae((16, 16, 1), latent_dim=0), "latent_dim"),
        (lambda: vae((16,), 2), "channels-last"),
        (lambda: get_encoder(keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])), "no encoder"),
    ],
)
def test_bad_arguments_give_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def _blobs(n, size, seed):
    """Images in [0, 1] with one Gaussian blob of random position and width."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(4, size - 4, (2, n, 1, 1))
    width = rng.uniform(2, 4, (n, 1, 1))
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * width**2))[..., None].astype("float32")


@pytest.mark.slow
def test_vae_learns_to_reconstruct_blobs():
    x, x_test = _blobs(512, 16, seed=0), _blobs(128, 16, seed=1)
    # A light KL term (beta = 0.1): with the full per-pixel weight these low-contrast images are
    # still reconstructed, but more slowly.
    model = vae((16, 16, 1), latent_dim=4, filters=(16, 32), dense_units=64, kl_weight=0.1 / 256, seed=0)
    model.compile(keras.optimizers.Adam(5e-3), "mse")
    build_optimizers(model)  # Adam's variables before fit: the first step is traced once, not twice
    history = model.fit(x, x, batch_size=16, epochs=5, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    recon = model.predict(x_test, verbose=0)
    mse = np.mean((recon - x_test) ** 2)
    baseline = np.mean((x_test - x.mean(0)) ** 2)  # the best image that ignores its input
    # Measured about 0.15-0.25 of the baseline after 5 epochs.
    assert mse < 0.5 * baseline, f"reconstruction MSE {mse:.4f} vs mean-image baseline {baseline:.4f}"
    mean, _ = get_encoder(model)(x_test)
    assert np.std(_np(mean), axis=0).max() > 0.1, "latent means do not vary: posterior collapse"
