"""Denoising diffusion (DDPM): noise schedules, the forward process, a noise-predicting U-Net, samplers.

The forward process adds Gaussian noise in ``T`` small steps; with ``abar_t = prod_{s<=t}(1 - beta_s)``
a noisy image can be drawn in one go (:func:`q_sample`)::

    x_t = sqrt(abar_t) * x_0 + sqrt(1 - abar_t) * noise

A network ``eps_theta([x_t, t])`` (:func:`diffusion_unet`) learns to predict ``noise`` (train with the
MSE between the two; the trainer with EMA weights lives in ``training/``). New images come from pure
noise by running the reverse process: :func:`ddpm_sample` (ancestral sampling, ``T`` network calls)
or :func:`ddim_sample` (deterministic with ``eta=0``, e.g. 50 calls instead of 1000).

Conventions shared with the trainer:

* images are scaled to [-1, 1] (the samplers clip predictions of ``x_0`` to that range by default);
* timesteps are integers ``0 .. T-1`` (index ``t`` of the schedule arrays), one per example, shape ``(B,)``;
* the model is called as ``model([x_t, t], training=False)`` and returns the predicted noise, shaped like ``x_t``;
* samplers are pure functions of ``(model, schedule, shape, seed)``: the same seed gives the same images.

References:
    Ho, Jain & Abbeel, "Denoising diffusion probabilistic models", NeurIPS 2020 (DDPM, linear
    schedule, U-Net with sinusoidal time embedding, GroupNorm and 16x16 self-attention).
    Nichol & Dhariwal, "Improved denoising diffusion probabilistic models", ICML 2021 (cosine schedule).
    Song, Meng & Ermon, "Denoising diffusion implicit models", ICLR 2021 (DDIM).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import keras
import numpy as np
from keras import layers, ops

from models import blocks
from models.attention import spatial_self_attention
from models.registry import register

# ---------------------------------------------------------------------------------------------
# Noise schedules and the forward process
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """The per-step constants of a diffusion process, as float64 NumPy arrays of length ``T``.

    Attributes:
        betas: noise variance added at step ``t``.
        alphas: ``1 - betas``.
        alphas_cumprod: ``abar_t``, the fraction of signal variance left after step ``t``.
        alphas_cumprod_prev: ``abar_{t-1}`` with ``abar_{-1} = 1``.
        posterior_variance: variance of ``q(x_{t-1} | x_t, x_0)`` (DDPM's "fixed small" sigma^2).
    """

    betas: np.ndarray

    def __post_init__(self):
        betas = np.asarray(self.betas, dtype=np.float64)
        if betas.ndim != 1 or len(betas) < 1 or np.any(betas <= 0) or np.any(betas >= 1):
            raise ValueError("betas must be a 1D array of values in (0, 1)")
        object.__setattr__(self, "betas", betas)

    @property
    def timesteps(self) -> int:
        return len(self.betas)

    @property
    def alphas(self) -> np.ndarray:
        return 1.0 - self.betas

    @property
    def alphas_cumprod(self) -> np.ndarray:
        return np.cumprod(self.alphas)

    @property
    def alphas_cumprod_prev(self) -> np.ndarray:
        return np.concatenate([[1.0], self.alphas_cumprod[:-1]])

    @property
    def posterior_variance(self) -> np.ndarray:
        return self.betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)


def linear_schedule(timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
    """DDPM's linear schedule (Ho et al. 2020): betas from ``beta_start`` to ``beta_end``.

    The defaults are for ``T = 1000``; for a shorter process the betas are scaled by ``1000 / T`` so
    the image is still pure noise at the end (as in Nichol & Dhariwal's code).
    """
    if timesteps < 1:
        raise ValueError(f"timesteps must be positive; got {timesteps}")
    scale = 1000.0 / timesteps
    return NoiseSchedule(np.linspace(beta_start * scale, min(beta_end * scale, 0.999), timesteps))


def cosine_schedule(timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
    """Cosine schedule (Nichol & Dhariwal 2021): ``abar_t = cos^2(((t/T + s) / (1 + s)) * pi / 2)``.

    It destroys information more slowly than the linear schedule, which helps small images.
    """
    if timesteps < 1:
        raise ValueError(f"timesteps must be positive; got {timesteps}")
    steps = np.arange(timesteps + 1, dtype=np.float64) / timesteps
    abar = np.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = np.clip(1.0 - abar[1:] / abar[:-1], 1e-8, max_beta)
    return NoiseSchedule(betas)


def make_schedule(kind: str = "linear", timesteps: int = 1000, **kwargs) -> NoiseSchedule:
    """A schedule by name: ``"linear"`` or ``"cosine"``."""
    if kind == "linear":
        return linear_schedule(timesteps, **kwargs)
    if kind == "cosine":
        return cosine_schedule(timesteps, **kwargs)
    raise ValueError(f"schedule kind must be 'linear' or 'cosine'; got {kind!r}")


def _per_example(values: np.ndarray, t, ndim: int):
    """Gather ``values[t]`` for a batch of timesteps and shape it to broadcast over an image."""
    v = ops.take(ops.convert_to_tensor(values.astype("float32")), ops.cast(t, "int32"), axis=0)
    return ops.reshape(v, (-1,) + (1,) * (ndim - 1))


def q_sample(schedule: NoiseSchedule, x0, t, noise):
    """Sample ``x_t ~ q(x_t | x_0)`` in closed form: ``sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise``.

    Args:
        schedule: the noise schedule.
        x0: clean images ``(B, *spatial, C)`` in [-1, 1].
        t: integer timesteps ``(B,)`` in ``[0, T)``.
        noise: standard normal noise shaped like ``x0``.

    Returns:
        ``x_t``, shaped like ``x0`` (a backend tensor).
    """
    x0 = ops.convert_to_tensor(x0, "float32")
    ndim = len(x0.shape)
    signal = _per_example(np.sqrt(schedule.alphas_cumprod), t, ndim)
    sigma = _per_example(np.sqrt(1.0 - schedule.alphas_cumprod), t, ndim)
    return signal * x0 + sigma * ops.convert_to_tensor(noise, "float32")


# ---------------------------------------------------------------------------------------------
# Samplers
# ---------------------------------------------------------------------------------------------


def _predict_noise(model, x: np.ndarray, t: int) -> np.ndarray:
    # predict_on_batch runs the compiled predict function: ~50x faster than an eager model call,
    # which matters when sampling calls the network hundreds of times.
    eps = model.predict_on_batch([np.asarray(x, dtype="float32"), np.full((x.shape[0],), t, dtype="int32")])
    return np.asarray(ops.convert_to_numpy(eps), dtype="float32")


def _normal(shape, rng: keras.random.SeedGenerator) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(keras.random.normal(shape, seed=rng)), dtype="float32")


def _x0_from_noise(schedule: NoiseSchedule, x, eps, t: int, clip: bool) -> np.ndarray:
    abar = float(schedule.alphas_cumprod[t])
    x0 = (x - math.sqrt(1.0 - abar) * eps) / math.sqrt(abar)
    return np.clip(x0, -1.0, 1.0) if clip else x0


def _check_sample_args(schedule: NoiseSchedule, shape: Sequence[int]) -> tuple[int, ...]:
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a NoiseSchedule (see make_schedule); got {type(schedule).__name__}")
    shape = tuple(int(s) for s in shape)
    if len(shape) < 3:
        raise ValueError(f"shape must be (B, *spatial, C), e.g. (16, 32, 32, 1); got {shape}")
    return shape


def ddpm_sample(model: keras.Model, schedule: NoiseSchedule, shape: Sequence[int], seed: int = 0, *,
                clip: bool = True, progress: bool = False) -> np.ndarray:
    """Ancestral sampling (Ho et al. 2020, Algorithm 2): ``T`` reverse steps from pure noise.

    Each step predicts ``x_0`` from the network's noise estimate (clipped to [-1, 1]), then draws
    ``x_{t-1}`` from the Gaussian posterior ``q(x_{t-1} | x_t, x_0)`` (variance "fixed small").

    Args:
        model: noise predictor ``model([x_t, t]) -> eps`` (e.g. :func:`diffusion_unet`, or EMA weights).
        schedule: the schedule the model was trained with.
        shape: ``(B, *spatial, C)`` of the batch to generate.
        seed: random seed; the same seed gives the same samples.
        clip: clip predicted ``x_0`` to [-1, 1] (stabilises sampling).
        progress: show a progress bar.

    Returns:
        float32 array of ``shape`` with samples in about [-1, 1].
    """
    shape = _check_sample_args(schedule, shape)
    rng = keras.random.SeedGenerator(seed)
    x = _normal(shape, rng)
    abar, abar_prev = schedule.alphas_cumprod, schedule.alphas_cumprod_prev
    bar = keras.utils.Progbar(schedule.timesteps) if progress else None
    for t in reversed(range(schedule.timesteps)):
        x0 = _x0_from_noise(schedule, x, _predict_noise(model, x, t), t, clip)
        # Posterior mean: a weighted average of the predicted clean image and the current noisy one.
        # Python floats, not NumPy float64 scalars: those would turn x into float64 (NumPy 2 promotion)
        # and make the network's compiled predict function trace again for the new input dtype.
        coef_x0 = float(math.sqrt(abar_prev[t]) * schedule.betas[t] / (1.0 - abar[t]))
        coef_xt = float(math.sqrt(schedule.alphas[t]) * (1.0 - abar_prev[t]) / (1.0 - abar[t]))
        x = coef_x0 * x0 + coef_xt * x
        if t > 0:  # no noise is added on the last step
            x = x + math.sqrt(schedule.posterior_variance[t]) * _normal(shape, rng)
        if bar is not None:
            bar.add(1)
    return x.astype("float32")


def ddim_sample(model: keras.Model, schedule: NoiseSchedule, shape: Sequence[int], seed: int = 0, *,
                num_steps: int = 50, eta: float = 0.0, clip: bool = True, progress: bool = False) -> np.ndarray:
    """DDIM sampling (Song et al. 2021): a model trained as a DDPM, sampled in ``num_steps`` steps.

    With ``eta=0`` the reverse process is deterministic given the starting noise; ``eta=1`` recovers
    DDPM-like stochastic steps.

    Args:
        model: noise predictor ``model([x_t, t]) -> eps``.
        schedule: the schedule the model was trained with.
        shape: ``(B, *spatial, C)`` of the batch to generate.
        seed: random seed.
        num_steps: number of network calls, ``1 <= num_steps <= T`` (evenly spaced timesteps).
        eta: stochasticity, 0 (deterministic) to 1.
        clip: clip predicted ``x_0`` to [-1, 1].
        progress: show a progress bar.

    Returns:
        float32 array of ``shape``.
    """
    shape = _check_sample_args(schedule, shape)
    if not 1 <= num_steps <= schedule.timesteps:
        raise ValueError(f"num_steps must be in [1, {schedule.timesteps}]; got {num_steps}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1]; got {eta}")
    rng = keras.random.SeedGenerator(seed)
    x = _normal(shape, rng)
    steps = np.unique(np.linspace(0, schedule.timesteps - 1, num_steps).round().astype(int))[::-1]
    abar = schedule.alphas_cumprod
    bar = keras.utils.Progbar(len(steps)) if progress else None
    for i, t in enumerate(steps):
        t = int(t)
        abar_prev = abar[steps[i + 1]] if i + 1 < len(steps) else 1.0
        eps = _predict_noise(model, x, t)
        x0 = _x0_from_noise(schedule, x, eps, t, clip)
        if clip:  # keep eps consistent with the clipped x0
            eps = (x - math.sqrt(abar[t]) * x0) / math.sqrt(1.0 - abar[t])
        sigma = eta * math.sqrt((1.0 - abar_prev) / (1.0 - abar[t]) * (1.0 - abar[t] / abar_prev))
        x = math.sqrt(abar_prev) * x0 + math.sqrt(max(1.0 - abar_prev - sigma**2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * _normal(shape, rng)
        if bar is not None:
            bar.add(1)
    return x.astype("float32")


# ---------------------------------------------------------------------------------------------
# The noise-predicting U-Net
# ---------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="medkit")
class SinusoidalTimeEmbedding(layers.Layer):
    """Transformer-style sinusoidal embedding of a (diffusion) timestep: ``(B,) -> (B, dim)``.

    ``[sin(t * f_0), ..., sin(t * f_{k-1}), cos(t * f_0), ...]`` with frequencies
    ``f_i = max_period ** (-i / k)``, ``k = dim / 2`` (Vaswani et al. 2017; Ho et al. 2020).

    Args:
        dim: embedding size (even).
        max_period: longest period of the sinusoids.
    """

    def __init__(self, dim: int, max_period: float = 10000.0, **kwargs):
        super().__init__(**kwargs)
        if dim < 2 or dim % 2:
            raise ValueError(f"SinusoidalTimeEmbedding dim must be a positive even number; got {dim}")
        self.dim = dim
        self.max_period = max_period

    def call(self, t):
        half = self.dim // 2
        freqs = ops.exp(-math.log(self.max_period) * ops.arange(half, dtype="float32") / half)
        t = ops.reshape(ops.cast(t, "float32"), (-1, 1))
        args = t * ops.expand_dims(freqs, 0)
        return ops.concatenate([ops.sin(args), ops.cos(args)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.dim)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "max_period": self.max_period}


def _group_norm(channels: int, groups: int, name: str) -> layers.Layer:
    # GroupNorm needs groups to divide the channels; the gcd always does.
    return layers.GroupNormalization(groups=math.gcd(groups, channels), epsilon=1e-5, name=name)


def time_residual_block(x, time_embedding, filters: int, *, groups: int = 8, dropout: float = 0.0,
                        name: str = "res"):
    """DDPM residual block: GN-swish-conv, add projected time embedding, GN-swish-dropout-conv, skip.

    Args:
        x: ``(B, *spatial, C_in)``.
        time_embedding: ``(B, E)``.
        filters: output channels.

    Returns:
        ``(B, *spatial, filters)``.
    """
    rank = len(x.shape) - 2
    h = _group_norm(x.shape[-1], groups, f"{name}_norm1")(x)
    h = layers.Activation("swish", name=f"{name}_act1")(h)
    h = blocks.conv(rank, filters, 3, name=f"{name}_conv1")(h)
    # Every pixel gets the same time shift: (B, E) -> (B, 1, ..., 1, filters), broadcast in the add.
    temb = layers.Activation("swish", name=f"{name}_time_act")(time_embedding)
    temb = layers.Dense(filters, name=f"{name}_time_proj")(temb)
    temb = layers.Reshape((1,) * rank + (filters,), name=f"{name}_time_reshape")(temb)
    h = layers.Add(name=f"{name}_add_time")([h, temb])
    h = _group_norm(filters, groups, f"{name}_norm2")(h)
    h = layers.Activation("swish", name=f"{name}_act2")(h)
    h = layers.Dropout(dropout, name=f"{name}_dropout")(h)
    h = blocks.conv(rank, filters, 3, name=f"{name}_conv2")(h)
    skip = x if x.shape[-1] == filters else blocks.conv(rank, filters, 1, name=f"{name}_skip")(x)
    return layers.Add(name=f"{name}_out")([skip, h])


@register("diffusion_unet", family="Diffusion", topic="Diffusion models",
          defaults={"input_shape": (32, 32, 1)},
          example={"input_shape": (16, 16, 1), "base_filters": 8, "channel_mults": (1, 2)})
def diffusion_unet(
    input_shape: Sequence[int] = (32, 32, 1),
    *,
    base_filters: int = 32,
    channel_mults: Sequence[int] = (1, 2, 2),
    num_res_blocks: int = 1,
    attention_levels: Sequence[int] | None = None,
    num_heads: int = 1,
    groups: int = 8,
    dropout: float = 0.0,
    name: str = "diffusion_unet",
) -> keras.Model:
    """Time-conditioned U-Net that predicts the noise in ``x_t`` (the DDPM architecture, scaled down).

    Levels ``i = 0 .. L-1`` run at resolution ``size / 2**i`` with ``base_filters * channel_mults[i]``
    channels and ``num_res_blocks`` time-conditioned residual blocks each, followed by
    self-attention at the levels in ``attention_levels``; the middle has res-attention-res; the decoder
    mirrors the encoder with skip connections. DDPM's CIFAR-10 model is ``base_filters=128,
    channel_mults=(1, 2, 2, 2), num_res_blocks=2, attention_levels=(1,)`` (attention at 16x16).

    Args:
        input_shape: ``(H, W, C)`` or ``(D, H, W, C)``, divisible by ``2 ** (L - 1)``.
        base_filters: channels at full resolution.
        channel_mults: channel multiplier of each level.
        num_res_blocks: residual blocks per level.
        attention_levels: levels with self-attention (default: the lowest resolution only).
        num_heads: attention heads.
        groups: GroupNormalization groups.
        dropout: dropout inside residual blocks.

    Returns:
        Model ``[x_t (B, *input_shape), t (B,)] -> eps (B, *input_shape)`` (float32).
    """
    rank = blocks.spatial_rank(input_shape)
    levels = len(channel_mults)
    if levels < 1:
        raise ValueError("channel_mults needs at least one level")
    factor = 2 ** (levels - 1)
    if any(s is None or s % factor for s in input_shape[:-1]):
        raise ValueError(f"diffusion_unet: spatial size {tuple(input_shape[:-1])} must be fixed and divisible by {factor}")
    attention_levels = (levels - 1,) if attention_levels is None else tuple(attention_levels)
    if any(not 0 <= a < levels for a in attention_levels):
        raise ValueError(f"attention_levels must be in [0, {levels}); got {attention_levels}")

    image = keras.Input(shape=tuple(input_shape), name="noisy_image")
    timestep = keras.Input(shape=(), name="timestep")
    temb_dim = 4 * base_filters
    temb = SinusoidalTimeEmbedding(base_filters, name="time_embedding")(timestep)
    temb = layers.Dense(temb_dim, activation="swish", name="time_mlp1")(temb)
    temb = layers.Dense(temb_dim, name="time_mlp2")(temb)

    def res_and_attention(x, filters, level, tag):
        for j in range(num_res_blocks):
            x = time_residual_block(x, temb, filters, groups=groups, dropout=dropout, name=f"{tag}_res{j + 1}")
            if level in attention_levels:
                x = spatial_self_attention(x, num_heads, groups=math.gcd(groups, filters), name=f"{tag}_attn{j + 1}")
        return x

    x = blocks.conv(rank, base_filters, 3, name="stem")(image)
    skips = []
    for level, mult in enumerate(channel_mults):
        x = res_and_attention(x, base_filters * mult, level, f"down{level}")
        skips.append(x)
        if level < levels - 1:
            x = blocks.conv(rank, x.shape[-1], 3, strides=2, name=f"down{level}_downsample")(x)

    filters = x.shape[-1]
    x = time_residual_block(x, temb, filters, groups=groups, dropout=dropout, name="mid_res1")
    x = spatial_self_attention(x, num_heads, groups=math.gcd(groups, filters), name="mid_attn")
    x = time_residual_block(x, temb, filters, groups=groups, dropout=dropout, name="mid_res2")

    for level in reversed(range(levels)):
        if level < levels - 1:
            x = blocks.upsample(rank, 2, name=f"up{level}_upsample")(x)
            x = blocks.conv(rank, x.shape[-1], 3, name=f"up{level}_upconv")(x)
        x = layers.Concatenate(name=f"up{level}_skip")([x, skips[level]])
        x = res_and_attention(x, base_filters * channel_mults[level], level, f"up{level}")

    x = _group_norm(x.shape[-1], groups, "out_norm")(x)
    x = layers.Activation("swish", name="out_act")(x)
    # Zero-initialised output: the untrained model predicts "no noise", a stable start (as in DDPM).
    x = blocks.conv(rank, input_shape[-1], 3, kernel_initializer="zeros", name="out_conv")(x)
    eps = layers.Activation("linear", dtype="float32", name="predicted_noise")(x)
    return keras.Model([image, timestep], eps, name=name)
