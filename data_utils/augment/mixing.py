"""Batch-mixing augmentations (image and label): mixup and cutmix."""

from __future__ import annotations

import tensorflow as tf

from data_utils.augment.seeding import (
    no_autograph,
    _batch_and_seeds,
    _apply_mask,
    _check_prob,
    _per_sample,
    _uniform,
    split_seed,
)


def _beta(seed, batch, alpha):
    seeds = split_seed(seed, 2)
    g1 = tf.random.stateless_gamma([batch], seed=seeds[0], alpha=alpha)
    g2 = tf.random.stateless_gamma([batch], seed=seeds[1], alpha=alpha)
    return g1 / (g1 + g2 + 1e-12)


def _partner(seed, batch):
    """A random permutation of the batch: each sample's mixing partner."""
    return tf.argsort(tf.random.stateless_uniform([batch], seed=seed))


def _one_hot_label(label, num_classes, rank):
    """Integer labels ``(B,)``/``(B, *spatial)`` (or already one-hot float) -> float one-hot."""
    label = tf.convert_to_tensor(label)
    if label.dtype.is_floating and label.shape[-1] == num_classes and label.shape.rank in (2, rank + 2):
        return tf.cast(label, tf.float32)
    if label.shape.rank == rank + 2 and label.shape[-1] == 1:
        label = label[..., 0]
    return tf.one_hot(tf.cast(label, tf.int32), num_classes, dtype=tf.float32)


@no_autograph
def mixup(image, label, seed, num_classes: int, prob: float = 1.0, alpha: float = 0.4):
    """Mixup: blend each sample with a random partner, labels blended as one-hot (Zhang et al. 2018).

    ``x = lam * x_i + (1 - lam) * x_j``, ``y = lam * y_i + (1 - lam) * y_j``, ``lam ~ Beta(alpha, alpha)``.

    Args:
        image: ``(B, *spatial, C)``.
        label: class labels ``(B,)`` or segmentation ``(B, *spatial)`` integers, or one-hot floats.
        seed: stateless seed. num_classes: number of classes K. prob: per-sample probability.

    Returns:
        ``(image, label)`` with the label one-hot float32 ``(B, K)`` or ``(B, *spatial, K)``.
    """
    _check_prob(prob)
    image, rank, batch, seeds = _batch_and_seeds(image, seed, 3)
    y = _one_hot_label(label, num_classes, rank)
    lam = _beta(seeds[0], batch, alpha)
    lam = tf.where(_apply_mask(seeds[2], batch, prob), lam, tf.ones_like(lam))
    j = _partner(seeds[1], batch)
    lam_x = _per_sample(lam, rank + 2)
    out_x = lam_x * image + (1.0 - lam_x) * tf.gather(image, j)
    lam_y = _per_sample(lam, y.shape.rank)
    out_y = lam_y * y + (1.0 - lam_y) * tf.gather(y, j)
    return out_x, out_y


@no_autograph
def cutmix(image, label, seed, num_classes: int | None = None, prob: float = 1.0, alpha: float = 1.0):
    """CutMix: paste a random box from a partner sample (Yun et al. 2019).

    The box covers a fraction ``1 - lam`` of the volume, ``lam ~ Beta(alpha, alpha)``. A segmentation
    label map is pasted with the same box, so it stays integer with the same classes; a class label
    is mixed as one-hot by the pasted fraction (``num_classes`` needed).

    Args:
        image: ``(B, *spatial, C)``.
        label: ``(B, *spatial)`` / ``(B, *spatial, 1)`` label map, or class labels ``(B,)`` / one-hot ``(B, K)``.
        seed: stateless seed. prob: per-sample probability.

    Returns:
        ``(image, label)``.
    """
    _check_prob(prob)
    image, rank, batch, seeds = _batch_and_seeds(image, seed, 5)
    shape = [int(n) for n in image.shape[1:-1]]
    lam = _beta(seeds[0], batch, alpha)
    side = tf.pow(1.0 - lam, 1.0 / rank)
    centres = _uniform(seeds[1], [batch, rank], 0.0, 1.0)
    mask = None
    for axis, n in enumerate(shape):
        pos = (tf.range(n, dtype=tf.float32) + 0.5) / n
        inside = tf.abs(pos[None] - centres[:, axis : axis + 1]) <= side[:, None] / 2
        inside = tf.reshape(tf.cast(inside, tf.float32), [-1] + [n if a == axis else 1 for a in range(rank)])
        mask = inside if mask is None else mask * inside
    mask = mask * _per_sample(tf.cast(_apply_mask(seeds[3], batch, prob), tf.float32), rank + 1)
    j = _partner(seeds[2], batch)
    out_x = image * (1.0 - mask[..., None]) + tf.gather(image, j) * mask[..., None]
    label = tf.convert_to_tensor(label)
    if label.shape.rank >= rank + 1:  # a label map: paste the same box
        m = mask if label.shape.rank == rank + 1 else mask[..., None]
        out_y = tf.where(m > 0, tf.gather(label, j), label)
        return out_x, out_y
    if num_classes is None:
        raise ValueError("cutmix of class labels needs `num_classes` to mix them as one-hot.")
    y = _one_hot_label(label, num_classes, rank)
    pasted = tf.reduce_mean(tf.reshape(mask, [batch, -1]), axis=1)[:, None]
    return out_x, (1.0 - pasted) * y + pasted * tf.gather(y, j)

