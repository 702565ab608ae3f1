"""Random data augmentation for batched 2D and 3D medical images, as seeded TensorFlow graph ops.

Every augmentation is a plain function on a batched tensor (``(B, H, W, C)`` or ``(B, D, H, W, C)``;
the spatial rank comes from the input shape) with

- per-sample random parameters (each image in the batch gets its own draw),
- ``prob``: the probability that a sample is augmented at all (MONAI's ``prob``),
- ``seed``: an explicit stateless seed, a shape-``[2]`` integer tensor (or a Python int).

The same seed always gives the same output, in eager mode, inside ``tf.data`` and under
``tf.function(jit_compile=True)``. Never call ``np.random`` here: inside ``Dataset.map`` it would run
once at trace time and every batch would get the same "random" transform.

Each function also exists as a Keras layer (``RandomBiasField``, ``RandomRicianNoise``, ...) that
draws its seeds from a ``keras.random.SeedGenerator``, so augmentation can run inside a model on a GPU.

Semantics follow MONAI's transforms (``RandBiasField``, ``RandRicianNoise``, ``RandAdjustContrast``,
``RandAffine``, ``Rand3DElastic``, ``RandGibbsNoise``, ``RandKSpaceSpikeNoise``); differences are
stated in each docstring.
"""

from __future__ import annotations

import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

# --------------------------------------------------------------------------------------------
# Helpers shared by every augmentation
# --------------------------------------------------------------------------------------------


def as_seed(seed) -> tf.Tensor:
    """Turn a Python int or a shape-[2] tensor into a shape-[2] int32 stateless seed."""
    if isinstance(seed, (int, np.integer)):
        return tf.constant([int(seed) % (2**31), 0], dtype=tf.int32)
    seed = tf.convert_to_tensor(seed)
    if seed.shape.rank != 1 or (seed.shape[0] is not None and seed.shape[0] != 2):
        raise ValueError(f"`seed` must be an int or a shape-[2] integer tensor, got shape {seed.shape}.")
    if seed.dtype in (tf.uint32, tf.uint64):
        # SeedGenerator states are unsigned on some backends; keep the bits, drop the sign.
        seed = tf.bitcast(tf.cast(seed, tf.uint32), tf.int32)
    return tf.cast(seed, tf.int32)


def split_seed(seed, num: int) -> tf.Tensor:
    """Derive ``num`` independent seeds from one: returns a ``(num, 2)`` int32 tensor."""
    return tf.random.experimental.stateless_split(as_seed(seed), num=num)


def spatial_rank(x: tf.Tensor, name: str = "image") -> int:
    """Return the number of spatial axes of a batched channels-last tensor (2 or 3)."""
    rank = x.shape.rank
    if rank not in (4, 5):
        raise ValueError(
            f"`{name}` must be batched and channels-last, (B, H, W, C) or (B, D, H, W, C); "
            f"got shape {x.shape}."
        )
    return rank - 2


def _check_prob(prob: float) -> None:
    if not 0.0 <= float(prob) <= 1.0:
        raise ValueError(f"`prob` must be in [0, 1], got {prob}.")


def _batch_size(x: tf.Tensor) -> tf.Tensor:
    return tf.shape(x)[0]


def _uniform(seed, shape, low, high, dtype=tf.float32) -> tf.Tensor:
    return tf.random.stateless_uniform(shape, seed=seed, minval=low, maxval=high, dtype=dtype)


def _per_sample(values: tf.Tensor, ndim: int) -> tf.Tensor:
    """Reshape a ``(B,)`` vector so it broadcasts against a tensor with ``ndim`` axes."""
    return tf.reshape(values, [-1] + [1] * (ndim - 1))


def _apply_mask(seed, batch, prob) -> tf.Tensor:
    """Per-sample Bernoulli(prob) decisions, shape ``(B,)`` bool."""
    return tf.random.stateless_uniform([batch], seed=seed) < prob


def _select(mask: tf.Tensor, new: tf.Tensor, old: tf.Tensor) -> tf.Tensor:
    """Keep ``new`` where the per-sample ``mask`` is set, ``old`` elsewhere."""
    return tf.where(_per_sample(mask, old.shape.rank), new, tf.cast(old, new.dtype))


def _pair(value, name: str) -> tuple[float, float]:
    """Accept ``v`` (meaning ``(-v, v)``) or ``(low, high)``."""
    if isinstance(value, (int, float)):
        return (-float(value), float(value))
    value = tuple(float(v) for v in value)
    if len(value) != 2 or value[0] > value[1]:
        raise ValueError(f"`{name}` must be a number or a (low, high) pair with low <= high, got {value}.")
    return value


def _range(value, name: str) -> tuple[float, float]:
    """Accept ``(low, high)`` or a single number ``v`` meaning ``(v, v)``."""
    if isinstance(value, (int, float)):
        return (float(value), float(value))
    value = tuple(float(v) for v in value)
    if len(value) != 2 or value[0] > value[1]:
        raise ValueError(f"`{name}` must be a (low, high) pair with low <= high, got {value}.")
    return value


# --------------------------------------------------------------------------------------------
# Intensity augmentations (image only)
# --------------------------------------------------------------------------------------------


def _legendre_basis(n: int, degree: int) -> tf.Tensor:
    """Legendre polynomials P_0..P_degree sampled on linspace(-1, 1, n): shape ``(n, degree + 1)``."""
    x = np.linspace(-1.0, 1.0, n)
    basis = np.stack(
        [np.polynomial.legendre.legval(x, np.eye(degree + 1)[i]) for i in range(degree + 1)], axis=-1
    )
    return tf.constant(basis, dtype=tf.float32)


def _bias_log_field(seed, batch, spatial_shape, degree, coeff_range) -> tf.Tensor:
    """Random log bias field ``(B, *spatial)``: a polynomial of total degree <= ``degree``."""
    rank = len(spatial_shape)
    # One coefficient per product P_i(z) P_j(y) P_k(x) with i + j + k <= degree (as in MONAI).
    grids = np.meshgrid(*[np.arange(degree + 1)] * rank, indexing="ij")
    allowed = tf.constant(sum(grids) <= degree, dtype=tf.float32)
    coeffs = _uniform(seed, [batch] + [degree + 1] * rank, *coeff_range) * allowed
    bases = [_legendre_basis(n, degree) for n in spatial_shape]
    if rank == 2:
        return tf.einsum("bij,yi,xj->byx", coeffs, bases[0], bases[1])
    # Contract one axis at a time: cheaper than a single 4-operand einsum on 96^3 volumes.
    t = tf.einsum("bijk,xk->bijx", coeffs, bases[2])
    t = tf.einsum("bijx,yj->biyx", t, bases[1])
    return tf.einsum("biyx,zi->bzyx", t, bases[0])


def bias_field(image, seed, prob: float = 1.0, degree: int = 3, coeff_range=(0.0, 0.1)) -> tf.Tensor:
    """Multiply by a smooth random MR bias field ``exp(polynomial)`` (MONAI ``RandBiasField``).

    The log field is a sum of products of Legendre polynomials over the normalised coordinates
    ``[-1, 1]`` with total degree <= ``degree``; each coefficient is uniform in ``coeff_range``,
    drawn per sample. All channels of a sample share the field (MONAI does the same).

    Args:
        image: float tensor ``(B, *spatial, C)``, 2D or 3D.
        seed: stateless seed, shape-[2] int tensor or int.
        prob: probability that each sample is augmented.
        degree: maximum total polynomial degree (>= 1).
        coeff_range: ``(low, high)`` range of the coefficients; ``(0, 0)`` gives the identity.

    Returns:
        ``image * field``, same shape and dtype float32.
    """
    _check_prob(prob)
    if int(degree) < 1:
        raise ValueError(f"`degree` must be >= 1, got {degree}.")
    coeff_range = _range(coeff_range, "coeff_range")
    image = tf.convert_to_tensor(image, tf.float32)
    rank = spatial_rank(image)
    seeds = split_seed(seed, 2)
    batch = _batch_size(image)
    log_field = _bias_log_field(seeds[0], batch, image.shape[1:-1], int(degree), coeff_range)
    out = image * tf.exp(log_field)[..., None]
    del rank
    return _select(_apply_mask(seeds[1], batch, prob), out, image)


def rician_noise(
    image, seed, prob: float = 1.0, mean: float = 0.0, std: float = 1.0, relative: bool = False,
    sample_std: bool = True, channel_wise: bool = False,
) -> tf.Tensor:
    """Add Rician noise, the noise of MR magnitude images (MONAI ``RandRicianNoise``).

    ``out = sqrt((image + n1)^2 + n2^2)`` with ``n1, n2 ~ N(mean, sigma)`` independent per voxel.
    ``sigma`` is uniform in ``[0, std]`` per sample when ``sample_std`` (else ``std``); with
    ``relative`` it is multiplied by the standard deviation of the sample's intensities.
    With ``channel_wise`` each channel gets its own ``sigma`` (and its own statistics).

    Args:
        image: float tensor ``(B, *spatial, C)``.
        seed: stateless seed, shape-[2] int tensor or int.
        prob: probability that each sample is augmented.
        mean, std: mean of the Gaussian components and (the upper bound of) their std.
        relative: scale ``sigma`` by the image's intensity std.
        sample_std: draw ``sigma`` uniformly from ``[0, std]`` instead of using ``std``.
        channel_wise: draw ``sigma`` per channel rather than per sample.

    Returns:
        Noisy image, same shape, float32, non-negative where noise was added.
    """
    _check_prob(prob)
    image = tf.convert_to_tensor(image, tf.float32)
    rank = spatial_rank(image)
    batch = _batch_size(image)
    seeds = split_seed(seed, 4)
    sigma_shape = [batch] + [1] * rank + [image.shape[-1] if channel_wise else 1]
    sigma = _uniform(seeds[0], sigma_shape, 0.0, std) if sample_std else tf.fill(sigma_shape, float(std))
    if relative:
        axes = list(range(1, rank + 1)) if channel_wise else list(range(1, rank + 2))
        sigma = sigma * tf.math.reduce_std(image, axis=axes, keepdims=True)
    n1 = mean + sigma * tf.random.stateless_normal(tf.shape(image), seed=seeds[1])
    n2 = mean + sigma * tf.random.stateless_normal(tf.shape(image), seed=seeds[2])
    out = tf.sqrt(tf.square(image + n1) + tf.square(n2))
    return _select(_apply_mask(seeds[3], batch, prob), out, image)
