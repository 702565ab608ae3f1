"""k-space (MR acquisition) artefacts: Gibbs ringing and spike (herringbone) noise."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from data_utils.augment.seeding import (
    no_autograph,
    _batch_and_seeds,
    _apply_mask,
    _batch_size,
    _check_prob,
    _per_sample,
    _range,
    _select,
    _uniform,
    spatial_rank,
    split_seed,
)


def _fft(image, rank, inverse=False):
    """(Inverse) centred FFT over the spatial axes of a channels-first complex tensor."""
    axes = list(range(-rank, 0))
    if inverse:
        x = tf.signal.ifftshift(image, axes=axes)
        return tf.signal.ifft2d(x) if rank == 2 else tf.signal.ifft3d(x)
    x = tf.signal.fft2d(image) if rank == 2 else tf.signal.fft3d(image)
    return tf.signal.fftshift(x, axes=axes)


def _channels_first(image, rank):
    return tf.transpose(image, [0, rank + 1] + list(range(1, rank + 1)))


def _channels_last(image, rank):
    return tf.transpose(image, [0] + list(range(2, rank + 2)) + [1])


@no_autograph
def gibbs_ringing(image, seed, prob: float = 1.0, alpha=(0.0, 1.0)):
    """Gibbs ringing by truncating k-space to a centred ball (MONAI ``RandGibbsNoise``).

    k-space frequencies farther than ``r = (1 - alpha) * max(shape) * sqrt(rank) / 2`` from the centre
    are zeroed and the real part of the inverse transform is returned; ``alpha`` is uniform in its
    range per sample; ``alpha = 0`` is the identity (up to FFT rounding). MONAI uses ``sqrt(2)`` in 3D
    too, which cuts the k-space corners even at ``alpha = 0``; here the ball reaches the corners.

    Args:
        image: ``(B, *spatial, C)``. seed: stateless seed. prob: per-sample probability.
        alpha: ``(low, high)`` within ``[0, 1]``.
    """
    _check_prob(prob)
    low, high = _range(alpha, "alpha")
    if low < 0 or high > 1:
        raise ValueError(f"`alpha` must lie in [0, 1], got {alpha}.")
    image, rank, batch, seeds = _batch_and_seeds(image, seed, 2)
    shape = [int(n) for n in image.shape[1:-1]]
    a = _uniform(seeds[0], [batch], low, high)
    radius = (1.0 - a) * max(shape) * math.sqrt(rank) / 2.0
    dist = np.sqrt(sum(
        ((np.arange(n) - (n - 1) / 2.0) ** 2).reshape([-1 if i == j else 1 for j in range(rank)])
        for i, n in enumerate(shape)
    ))
    mask = tf.cast(tf.constant(dist, tf.float32)[None] <= _per_sample(radius, rank + 1), tf.complex64)
    k = _fft(tf.cast(_channels_first(image, rank), tf.complex64), rank)
    out = tf.math.real(_fft(k * mask[:, None], rank, inverse=True))
    out = _channels_last(out, rank)
    return _select(_apply_mask(seeds[1], batch, prob), out, image)


@no_autograph
def kspace_spikes(image, seed, prob: float = 1.0, num_spikes: int = 1, intensity_range=(0.95, 1.10)):
    """Herringbone artefact: set random k-space points to a high magnitude (MONAI ``RandKSpaceSpikeNoise``).

    For each sample and channel, ``num_spikes`` uniformly random k-space locations get log-magnitude
    ``v * log(max |k|)`` with ``v`` uniform in ``intensity_range``; phases are kept. MONAI's default
    draws the absolute log intensity from a range around the channel's maximum; here the range is
    relative to it, which is the same default and scale-free.

    Args:
        image: ``(B, *spatial, C)``. seed: stateless seed. prob: per-sample probability.
        num_spikes: spikes per sample and channel (0 gives the identity).
        intensity_range: ``(low, high)`` relative log-magnitude of the spikes.
    """
    _check_prob(prob)
    low, high = _range(intensity_range, "intensity_range")
    image = tf.convert_to_tensor(image, tf.float32)
    rank = spatial_rank(image)
    batch = _batch_size(image)
    if int(num_spikes) == 0:
        return image
    seeds = split_seed(seed, 3)
    spatial = [int(n) for n in image.shape[1:-1]]
    channels = int(image.shape[-1])
    n_vox = int(np.prod(spatial))
    k = _fft(tf.cast(_channels_first(image, rank), tf.complex64), rank)  # (B, C, *spatial)
    flat = tf.reshape(k, [batch, channels, n_vox])
    log_mag = tf.math.log(tf.abs(flat) + 1e-10)
    locations = tf.random.stateless_uniform(
        [batch, channels, int(num_spikes)], seed=seeds[0], maxval=n_vox, dtype=tf.int32
    )
    hit = tf.reduce_max(tf.one_hot(locations, n_vox, dtype=tf.float32), axis=2)  # (B, C, N)
    level = _uniform(seeds[1], [batch, channels, 1], low, high) * tf.reduce_max(log_mag, -1, keepdims=True)
    new_log = log_mag * (1.0 - hit) + level * hit
    phase = tf.math.angle(flat)
    spiked = tf.complex(tf.exp(new_log) * tf.cos(phase), tf.exp(new_log) * tf.sin(phase))
    spiked = tf.where(hit > 0, spiked, flat)  # untouched points keep their exact values
    out = tf.math.real(_fft(tf.reshape(spiked, tf.shape(k)), rank, inverse=True))
    out = _channels_last(out, rank)
    return _select(_apply_mask(seeds[2], batch, prob), out, image)

