"""Diffusion: schedules, q_sample, the time embedding, the noise-predicting U-Net, DDPM/DDIM samplers, learning."""

import keras
import numpy as np
import pytest

import models
from models.diffusion import (
    NoiseSchedule,
    SinusoidalTimeEmbedding,
    cosine_schedule,
    ddim_sample,
    ddpm_sample,
    diffusion_unet,
    linear_schedule,
    make_schedule,
    q_sample,
)
from training.trainer_base import build_optimizers


def _np(x):
    return keras.ops.convert_to_numpy(x)


def test_linear_schedule_matches_ddpm():
    s = linear_schedule(1000)
    assert s.timesteps == 1000
    assert s.betas[0] == pytest.approx(1e-4) and s.betas[-1] == pytest.approx(0.02)
    assert np.all(np.diff(s.alphas_cumprod) < 0)
    assert s.alphas_cumprod[-1] < 1e-4  # pure noise at the end
    short = linear_schedule(50)  # rescaled so a short process also ends in noise
    assert short.alphas_cumprod[-1] < 1e-3


def test_cosine_schedule_follows_its_formula():
    s = cosine_schedule(100, s=0.008)
    t = np.arange(1, 101) / 100
    f = np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2 / np.cos(0.008 / 1.008 * np.pi / 2) ** 2
    np.testing.assert_allclose(s.alphas_cumprod[:-1], f[:-1], rtol=1e-6)
    # Signal decays more slowly than with the linear schedule in the first half.
    assert s.alphas_cumprod[50] > linear_schedule(100).alphas_cumprod[50]


def test_schedule_bookkeeping():
    s = make_schedule("cosine", 20)
    np.testing.assert_allclose(s.alphas_cumprod_prev[1:], s.alphas_cumprod[:-1])
    assert s.alphas_cumprod_prev[0] == 1.0
    assert np.all(s.posterior_variance <= s.betas + 1e-12)
    with pytest.raises(ValueError, match="'linear' or 'cosine'"):
        make_schedule("sigmoid", 10)
    with pytest.raises(ValueError, match="values in"):
        NoiseSchedule(np.array([0.1, 1.5]))
    with pytest.raises(ValueError, match="positive"):
        linear_schedule(0)


def test_q_sample_has_the_closed_form_mean_and_variance(rng):
    s = linear_schedule(100)
    x0 = np.full((4, 64, 64, 1), 0.5, "float32")
    t = np.array([0, 10, 50, 99])
    noise = rng.normal(size=x0.shape).astype("float32")
    xt = _np(q_sample(s, x0, t, noise))
    abar = s.alphas_cumprod[t]
    np.testing.assert_allclose(xt.mean(axis=(1, 2, 3)), np.sqrt(abar) * 0.5 + np.sqrt(1 - abar) * noise.mean(axis=(1, 2, 3)),
                               atol=1e-5)
    np.testing.assert_allclose(xt.std(axis=(1, 2, 3)), np.sqrt(1 - abar) * noise.std(axis=(1, 2, 3)), rtol=1e-4)


def test_time_embedding_is_sinusoidal():
    emb = _np(SinusoidalTimeEmbedding(8)(np.array([0.0, 1.0, 500.0])))
    assert emb.shape == (3, 8)
    np.testing.assert_allclose(emb[0], [0, 0, 0, 0, 1, 1, 1, 1], atol=1e-7)
    np.testing.assert_allclose(emb[1, 0], np.sin(1.0), atol=1e-6)  # highest frequency is 1
    np.testing.assert_allclose(np.sum(emb[:, :4] ** 2 + emb[:, 4:] ** 2, axis=-1), 4.0, atol=1e-5)
    with pytest.raises(ValueError, match="even"):
        SinusoidalTimeEmbedding(7)


@pytest.mark.parametrize("shape", [(16, 16, 1), (8, 8, 8, 2)], ids=["2d", "3d"])
def test_unet_predicts_noise_of_the_input_shape_and_uses_time(shape, rng):
    model = diffusion_unet(shape, base_filters=4, channel_mults=(1, 2), groups=2)
    x = rng.normal(size=(2, *shape)).astype("float32")
    t = np.array([3, 3])
    # Zero-initialised output conv: the untrained model predicts "no noise".
    np.testing.assert_array_equal(_np(model([x, t])), 0.0)
    out = model.get_layer("out_conv")
    out.kernel.assign(rng.normal(0, 0.1, size=out.kernel.shape).astype("float32"))
    y = _np(model([x, t]))
    assert y.shape == (2, *shape) and y.dtype == np.float32
    assert np.abs(y - _np(model([x, np.array([90, 90])]))).max() > 1e-4


def test_unet_has_attention_at_the_lowest_resolution_only():
    model = diffusion_unet((16, 16, 1), base_filters=8, channel_mults=(1, 2, 2))
    names = [layer.name for layer in model.layers if layer.name.endswith("_mha")]
    assert names and all(n.startswith(("down2", "up2", "mid")) for n in names)
    assert model.get_layer("down2_attn1_to_tokens").output.shape == (None, 16, 16)  # 4x4 positions


def test_round_trip(assert_round_trip, rng):
    model = diffusion_unet((8, 8, 1), base_filters=4, channel_mults=(1, 2), groups=2)
    out = model.get_layer("out_conv")
    out.kernel.assign(rng.normal(0, 0.1, size=out.kernel.shape).astype("float32"))
    assert_round_trip(model, [rng.normal(size=(2, 8, 8, 1)).astype("float32"), np.array([1, 7])])


def test_registered():
    assert "diffusion_unet" in models.list_models(family="Diffusion")


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: diffusion_unet((12, 12, 1), channel_mults=(1, 2, 2, 2)), "divisible by 8"),
        (lambda: diffusion_unet((16, 16, 1), channel_mults=(1, 2), attention_levels=(2,)), "attention_levels"),
        (lambda: diffusion_unet((16, 16, 1), channel_mults=()), "at least one level"),
    ],
)
def test_bad_unet_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


class _GaussianOracle(keras.layers.Layer):
    """The exact noise predictor when every pixel of the data is N(0, s^2): E[eps | x_t]."""

    def __init__(self, schedule, s):
        super().__init__()
        self.abar = schedule.alphas_cumprod.astype("float32")
        self.s = s

    def call(self, inputs):
        x, t = inputs
        abar = keras.ops.take(keras.ops.convert_to_tensor(self.abar), keras.ops.cast(t, "int32"))
        abar = keras.ops.reshape(abar, (-1, 1, 1, 1))
        return keras.ops.sqrt(1 - abar) * x / (abar * self.s**2 + 1 - abar)


def _oracle_model(schedule, s):
    x, t = keras.Input((8, 8, 1)), keras.Input(())
    return keras.Model([x, t], _GaussianOracle(schedule, s)([x, t]))


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "ddim-stochastic"])
def test_samplers_recover_the_data_distribution_with_an_exact_noise_predictor(sampler):
    """With the ideal denoiser for N(0, 0.5^2) data, samples must have standard deviation 0.5."""
    schedule = linear_schedule(100)
    model = _oracle_model(schedule, 0.5)
    shape = (64, 8, 8, 1)
    if sampler == "ddpm":
        x = ddpm_sample(model, schedule, shape, seed=0, clip=False)
    else:
        # Every timestep: with fewer steps DDIM is a coarser ODE solver (25 steps give std ~0.45 here).
        x = ddim_sample(model, schedule, shape, seed=0, num_steps=100, clip=False,
                        eta=1.0 if sampler == "ddim-stochastic" else 0.0)
    assert x.shape == shape and x.dtype == np.float32
    assert abs(x.mean()) < 0.05
    assert x.std() == pytest.approx(0.5, rel=0.08)


def test_samplers_are_pure_functions_of_the_seed():
    schedule = cosine_schedule(20)
    model = _oracle_model(schedule, 0.3)
    a, b = ddpm_sample(model, schedule, (2, 8, 8, 1), seed=5), ddpm_sample(model, schedule, (2, 8, 8, 1), seed=5)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, ddpm_sample(model, schedule, (2, 8, 8, 1), seed=6))
    c = ddim_sample(model, schedule, (2, 8, 8, 1), seed=5, num_steps=5)
    np.testing.assert_array_equal(c, ddim_sample(model, schedule, (2, 8, 8, 1), seed=5, num_steps=5))
    assert np.all(np.abs(a) <= 1.0 + 1e-6)  # x0 is clipped, and the last step returns it


class _DtypeRecorder:
    """Stands in for a network: records the dtype of every image batch a sampler hands it."""

    def __init__(self):
        self.dtypes = set()

    def predict_on_batch(self, inputs):
        self.dtypes.add(np.asarray(inputs[0]).dtype)
        return np.zeros_like(inputs[0])


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_samplers_feed_the_network_float32_at_every_step(sampler):
    """A float64 batch half-way (NumPy 2 promotes float32 x float64 scalar) retraces the network's predict."""
    schedule = linear_schedule(10)
    recorder = _DtypeRecorder()
    if sampler == "ddpm":
        ddpm_sample(recorder, schedule, (2, 4, 4, 1), seed=0)
    else:
        ddim_sample(recorder, schedule, (2, 4, 4, 1), seed=0, num_steps=5, eta=1.0)
    assert recorder.dtypes == {np.dtype("float32")}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_steps=0), "num_steps"),
        (dict(num_steps=21), "num_steps"),
        (dict(eta=2.0), "eta"),
        (dict(shape=(8, 8)), "shape must be"),
        (dict(schedule=np.ones(20)), "NoiseSchedule"),
    ],
)
def test_bad_sampler_arguments(kwargs, match):
    schedule = cosine_schedule(20)
    args = dict(model=_oracle_model(schedule, 0.3), schedule=schedule, shape=(1, 8, 8, 1), seed=0, num_steps=5)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        ddim_sample(**args)


def _squares(n, size, seed):
    """Images in [-1, 1]: a bright square of random position and size on a dark background."""
    rng = np.random.default_rng(seed)
    x = -np.ones((n, size, size, 1), "float32")
    for i in range(n):
        w = rng.integers(3, 7)
        r, c = rng.integers(0, size - w, 2)
        x[i, r:r + w, c:c + w] = 1.0
    return x


def _noisy_batch(schedule, x0, seed):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, schedule.timesteps, len(x0))
    noise = rng.normal(size=x0.shape).astype("float32")
    return [_np(q_sample(schedule, x0, t, noise)), t], noise


@pytest.mark.slow
def test_ddpm_denoising_loss_falls():
    schedule = linear_schedule(100)
    model = diffusion_unet((16, 16, 1), base_filters=8, channel_mults=(1, 2))
    model.compile(keras.optimizers.Adam(3e-3), "mse")
    build_optimizers(model)  # Adam's variables now, so the first training step is traced once, not twice
    held_in, held_noise = _noisy_batch(schedule, _squares(128, 16, seed=1), seed=2)
    before = model.evaluate(held_in, held_noise, batch_size=128, verbose=0)
    # A fresh noise draw every epoch is the DDPM objective: E_{t, eps} ||eps - eps_theta(x_t, t)||^2.
    x0 = _squares(256, 16, seed=0)
    for epoch in range(2):
        inputs, noise = _noisy_batch(schedule, x0, seed=10 + epoch)
        model.fit(inputs, noise, batch_size=16, epochs=1, verbose=0)
    after = model.evaluate(held_in, held_noise, batch_size=128, verbose=0)
    assert before == pytest.approx(1.0, abs=0.1)  # zero output: the loss is the noise variance
    # Measured about 0.25-0.3 after these 32 steps.
    assert after < 0.5 * before, f"held-out denoising loss {before:.3f} -> {after:.3f}"
