"""Stateless seeds and the random-draw and argument helpers shared by every augmentation.

The kit's one seeding path. A seed is a shape-``[2]`` int32 tensor (or a Python int);
``split_seed`` derives independent seeds for the steps of one call, ``batch_seed`` the seed of batch
number ``i`` of a dataset, and ``stateless_seed`` a fresh seed from a ``keras.random.SeedGenerator``
with the replica index folded in (augmentation layers and the trainers use it), so the replicas of
a ``MirroredStrategy`` draw different randomness for their parts of the batch.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

# Every public augmentation function is marked do-not-convert: called from a user's own function in
# ``Dataset.map`` (which AutoGraph converts), AutoGraph would otherwise rewrite the whole chain, the
# resampler included, on every trace: measured 6.5 s against 0.4 s to trace a flip + affine + speckle
# + mixup map on 2 AVX2 cores. None of them has tensor-dependent Python control flow to convert.
no_autograph = tf.autograph.experimental.do_not_convert


@no_autograph
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


@no_autograph
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


def _batch_and_seeds(image, seed, num_seeds: int) -> tuple[tf.Tensor, int, tf.Tensor, tf.Tensor]:
    """What every per-sample augmentation starts from.

    Returns:
        ``image`` as float32 ``(B, *spatial, C)``, its spatial rank, the batch size ``B`` (a tensor)
        and ``num_seeds`` independent stateless seeds ``(num_seeds, 2)`` split from ``seed``.
    """
    image = tf.convert_to_tensor(image, tf.float32)
    return image, spatial_rank(image), _batch_size(image), split_seed(seed, num_seeds)


def _uniform(seed, shape, low, high, dtype=tf.float32) -> tf.Tensor:
    return tf.random.stateless_uniform(shape, seed=seed, minval=low, maxval=high, dtype=dtype)


def _normal_pair(seed, shape) -> tuple[tf.Tensor, tf.Tensor]:
    """Two independent standard-normal tensors of ``shape`` by the Box-Muller transform.

    One uniform draw per output value, about 1.5x faster on CPU than two ``stateless_normal`` calls.
    """
    u = tf.random.stateless_uniform(tf.concat([[2], shape], 0), seed=seed, minval=1e-7, maxval=1.0)
    radius = tf.sqrt(-2.0 * tf.math.log(u[0]))
    angle = 2.0 * math.pi * u[1]
    return radius * tf.cos(angle), radius * tf.sin(angle)


def _normal(seed, shape) -> tf.Tensor:
    """A standard-normal tensor of ``shape`` (Box-Muller over half the values)."""
    shape = tf.convert_to_tensor(shape, tf.int32)
    n = tf.reduce_prod(shape)
    a, b = _normal_pair(seed, tf.reshape((n + 1) // 2, [1]))
    return tf.reshape(tf.concat([a, b], 0)[:n], shape)


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



@no_autograph
def batch_seed(seed, index) -> tf.Tensor:
    """The stateless seed of batch number ``index``: ``fold_in(seed, index)``, shape [2]."""
    return tf.random.experimental.stateless_fold_in(as_seed(seed), tf.cast(index, tf.int64))



def replica_id() -> tf.Tensor:
    """Index of this replica in its sync group (0 outside a strategy), as an int32 tensor."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        return tf.constant(0, tf.int32)
    return tf.cast(ctx.replica_id_in_sync_group, tf.int32)


def stateless_seed(seed_generator) -> tf.Tensor:
    """A fresh shape-[2] int32 stateless seed, different on every call and on every replica.

    Args:
        seed_generator: a ``keras.random.SeedGenerator`` (advanced by one step).

    Without folding in the replica index, all replicas of a ``MirroredStrategy`` would draw the same
    "random" noise for their part of the batch.
    """
    seed = tf.cast(as_seed(seed_generator.next()), tf.int64)
    seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(replica_id(), tf.int64))
    return tf.cast(seed, tf.int32)
