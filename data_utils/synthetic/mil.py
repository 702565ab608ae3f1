"""Synthetic bags of image patches for multiple-instance learning (MIL).

A **bag** is a set of ``K`` patches from one patient (think tiles of a scan or a slide); only the
bag is labelled: positive if at least one patch shows a lesion, negative otherwise. The patch
(instance) labels are kept for evaluation (does the model's attention find the lesion?), never for
training.

Patches are textured tissue with the things that make MIL hard:

- **few witnesses**: a positive bag has between 1 and ``max_witness_fraction * K`` lesion patches;
- **look-alikes**: bright elongated vessels appear in patches of every bag, with the same
  brightness as lesions; lesions are round-ish blobs with an irregular margin, so shape, not
  brightness, tells them apart;
- **patient effects**: brightness, contrast and texture scale vary per bag, so a patch cannot be
  judged on its own absolute intensity.

Example::

    from data_utils.synthetic import make_mil_dataset
    data = make_mil_dataset(64, bag_size=16, patch_size=32, seed=0)
    data["bags"].shape, data["bag_labels"].shape, data["instance_labels"].shape
    # (64, 16, 32, 32, 1), (64,), (64, 16);  bag_labels == instance_labels.max(axis=1)
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _smooth_noise(rng, shape, sigma):
    """Gaussian-smoothed noise with unit standard deviation per patch; ``shape = (M, p, p)``."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), (0, sigma, sigma), mode="wrap")
    return field / (field.std(axis=(1, 2), keepdims=True) + 1e-6)


def _ellipse_distance(y, x, cy, cx, ry, rx, angle):
    """Distance-like value (pixels) to rotated ellipses; parameters ``(M, 1, 1)``, grid ``(p, p)``."""
    c, s = np.cos(angle), np.sin(angle)
    u = (c * (y - cy) - s * (x - cx)) / ry
    v = (s * (y - cy) + c * (x - cx)) / rx
    return (np.sqrt(u * u + v * v) - 1.0) * np.minimum(ry, rx)


def make_mil_dataset(
    num_bags: int,
    bag_size: int = 16,
    patch_size: int = 32,
    seed: int = 0,
    positive_fraction: float = 0.5,
    max_witness_fraction: float = 0.25,
    lesion_contrast: tuple[float, float] = (0.8, 1.5),
) -> dict:
    """Draw bags of patches with bag labels (any lesion) and hidden instance labels.

    Args:
        num_bags: number of bags ``N``.
        bag_size: patches per bag ``K``.
        patch_size: patch height and width ``p`` in pixels (at least 16).
        seed: integer seed; the same arguments always give the same bags.
        positive_fraction: fraction of positive bags (rounded; order is random).
        max_witness_fraction: a positive bag has between 1 and ``max(1, round(this * K))`` lesion patches.
        lesion_contrast: ``(low, high)`` range of the lesion's peak brightness above the tissue, in
            units of 3 texture standard deviations (look-alike vessels get the same range).

    Returns:
        dict with ``bags`` float32 ``(N, K, p, p, 1)`` (z-scored per bag), ``bag_labels`` int32
        ``(N,)``, ``instance_labels`` int32 ``(N, K)`` (1 = lesion patch) and ``lesion_masks``
        uint8 ``(N, K, p, p)``. Always ``bag_labels == instance_labels.max(axis=1)``.
    """
    n, k, p = int(num_bags), int(bag_size), int(patch_size)
    if n < 1 or k < 1 or p < 16:
        raise ValueError(f"need num_bags >= 1, bag_size >= 1 and patch_size >= 16, got {num_bags}, {bag_size}, {patch_size}.")
    if not 0.0 <= positive_fraction <= 1.0 or not 0.0 < max_witness_fraction <= 1.0:
        raise ValueError(
            f"`positive_fraction` must be in [0, 1] and `max_witness_fraction` in (0, 1], got "
            f"{positive_fraction} and {max_witness_fraction}."
        )
    low, high = (float(v) for v in lesion_contrast)
    if not 0.0 <= low <= high:
        raise ValueError(f"`lesion_contrast` must be (low, high) with 0 <= low <= high, got {lesion_contrast}.")
    rng = np.random.default_rng(seed)

    num_positive = int(round(n * positive_fraction))
    bag_labels = rng.permutation(np.arange(n) < num_positive).astype(np.int32)
    instance_labels = np.zeros((n, k), np.int32)
    max_witnesses = max(1, int(round(max_witness_fraction * k)))
    for i in np.flatnonzero(bag_labels):
        witnesses = rng.integers(1, max_witnesses + 1)
        instance_labels[i, rng.choice(k, size=witnesses, replace=False)] = 1

    m = n * k
    flat_labels = instance_labels.reshape(m, 1, 1)
    coords = np.arange(p, dtype=np.float32)
    y, x = np.meshgrid(coords, coords, indexing="ij")

    def per_patch(lo, hi):
        return rng.uniform(lo, hi, size=(m, 1, 1)).astype(np.float32)

    def per_bag(lo, hi):
        return np.repeat(rng.uniform(lo, hi, size=(n, 1, 1)).astype(np.float32), k, axis=0)

    # Tissue: two scales of texture, with a per-patient texture scale.
    coarse_sigma = per_bag(0.0, 1.0)
    tissue = (1 - coarse_sigma) * _smooth_noise(rng, (m, p, p), 1.0) + coarse_sigma * _smooth_noise(rng, (m, p, p), 2.5)
    tissue /= tissue.std(axis=(1, 2), keepdims=True) + 1e-6
    # Look-alike vessels: long, thin and bright, in about 40 % of all patches.
    has_vessel = rng.random((m, 1, 1)) < 0.4
    vessel = _ellipse_distance(y, x, per_patch(0.2 * p, 0.8 * p), per_patch(0.2 * p, 0.8 * p), per_patch(0.05 * p, 0.08 * p),
                               per_patch(0.5 * p, 0.9 * p), per_patch(0, np.pi))
    vessel_mask = (0.5 * (1 - np.tanh(vessel / 0.8))) * has_vessel
    # Lesions: round-ish blobs with an irregular margin, well inside the patch.
    radius = per_patch(0.1 * p, 0.2 * p)
    lesion = _ellipse_distance(y, x, per_patch(0.3 * p, 0.7 * p), per_patch(0.3 * p, 0.7 * p), radius,
                               radius * per_patch(0.75, 1.0), per_patch(0, np.pi))
    lesion = lesion + 0.25 * radius * _smooth_noise(rng, (m, p, p), 0.06 * p)
    lesion_mask = (0.5 * (1 - np.tanh(lesion / 0.8))) * (flat_labels == 1)
    # A lesion is bright with a heterogeneous inside; a vessel is uniformly bright.
    lesion_texture = 1.0 + 0.3 * _smooth_noise(rng, (m, p, p), 1.0)
    patches = tissue + per_patch(low, high) * 3.0 * vessel_mask + per_patch(low, high) * 3.0 * lesion_mask * lesion_texture
    patches = patches * per_bag(0.7, 1.3) + per_bag(-1.0, 1.0)  # patient contrast and brightness
    patches = patches.reshape(n, k, p, p)
    mean = patches.mean(axis=(1, 2, 3), keepdims=True)
    std = patches.std(axis=(1, 2, 3), keepdims=True) + 1e-6
    return {
        "bags": ((patches - mean) / std)[..., None].astype(np.float32),
        "bag_labels": bag_labels,
        "instance_labels": instance_labels,
        "lesion_masks": (lesion_mask > 0.5).reshape(n, k, p, p).astype(np.uint8),
    }
