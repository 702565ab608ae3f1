"""Synthetic image pairs with a known smooth deformation, for teaching and scoring registration (2D and 3D).

Each pair is one phantom anatomy (a textured body with three organs, labelled 1-3) seen twice:

- ``moving``: the anatomy as drawn;
- ``fixed``: the same anatomy deformed by a smooth random displacement field ``u`` (voxels), made with
  the kit's resampler: ``fixed(x) = moving(x + u(x))`` (:func:`data_utils.spatial.warp`, the
  convention of the kit's registration layers: output voxel ``x`` reads input ``x + u(x)``);
- independent noise in each image, so a perfect registration does not give a zero difference image.

So ``u`` is the dense displacement field a registration network should predict when asked to warp
``moving`` onto ``fixed``, and three independent ways of scoring it come with every pair: the true
field itself (endpoint error), label maps (Dice after warping ``moving_label``) and landmarks
(target registration error): ``fixed_landmarks`` are voxels inside the organs of ``fixed``, and
``moving_landmarks = fixed_landmarks + u(fixed_landmarks)`` are the same anatomical points in
``moving``.

Example::

    from data_utils.synthetic import make_registration_pairs
    from data_utils import spatial
    pairs = make_registration_pairs(8, shape=(64, 64), seed=0)
    pairs["moving"].shape, pairs["displacement"].shape   # (8, 64, 64, 1), (8, 64, 64, 2)
    warped = spatial.warp(pairs["moving"], pairs["displacement"])   # ~ pairs["fixed"] (up to noise)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from data_utils.synthetic import phantom

LABEL_NAMES = {0: "background", 1: "organ_a", 2: "organ_b", 3: "organ_c"}
NOISE_STD = 0.03


def _draw_anatomy(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """One phantom in voxel units: image ``shape`` float32 in about ``[0, 1]``, label ``shape`` int32."""
    ndim = len(shape)
    size = np.asarray(shape, np.float32)
    coords = phantom.coordinate_grid(shape, 1.0)
    cell = max(4.0, min(shape) / 4.0)
    body = phantom.blob_distance(coords, rng, np.zeros(ndim), size * 0.42, irregularity_mm=min(shape) * 0.02, cell=cell)
    image = np.zeros(shape, np.float32)
    label = np.zeros(shape, np.int32)
    image = phantom.paint(image, phantom.soft_mask(body, 0.6), 0.35 + 0.05 * phantom.texture(shape, rng, 1.5))
    # Three organs of different brightness and size, placed in different parts of the body.
    centres = np.array([[-0.15, -0.15, -0.12], [0.16, 0.12, 0.10], [0.05, -0.16, 0.18]], np.float32)[:, :ndim]
    radii = np.array([0.16, 0.12, 0.09], np.float32)
    brightness = (0.85, 0.6, 0.15)
    for index in range(3):
        center = (centres[index] + rng.uniform(-0.05, 0.05, ndim)) * size
        organ_radii = radii[index] * size * rng.uniform(0.8, 1.2, ndim)
        distance = phantom.blob_distance(coords, rng, center, organ_radii, irregularity_mm=organ_radii.min() * 0.12,
                                         max_angle_deg=30.0, cell=cell)
        tissue = brightness[index] + 0.04 * phantom.texture(shape, rng, 1.0)
        image = phantom.paint(image, phantom.soft_mask(distance, 0.6), tissue)
        label[distance < 0] = index + 1
    return image, label


def _pick_landmarks(rng, label: np.ndarray, num: int) -> np.ndarray:
    """``num`` voxel positions inside the organs, spread over the labels, ``(num, ndim)`` float32."""
    inside = np.argwhere(label > 0)
    if len(inside) == 0:
        inside = np.argwhere(np.ones_like(label, bool))
    per_label = [np.argwhere(label == k) for k in np.unique(label[label > 0])]
    chosen = [group[rng.integers(len(group))] for group in per_label][:num]
    while len(chosen) < num:
        chosen.append(inside[rng.integers(len(inside))])
    return np.asarray(chosen, np.float32)


def make_registration_pairs(
    num_pairs: int,
    shape: Sequence[int] = (64, 64),
    seed: int = 0,
    max_displacement: float = 4.0,
    num_landmarks: int = 8,
    smoothness: float | None = None,
) -> dict[str, np.ndarray]:
    """Draw moving/fixed image pairs related by a known smooth deformation.

    Args:
        num_pairs: number of pairs ``N``.
        shape: spatial shape, ``(H, W)`` for 2D or ``(D, H, W)`` for 3D (each at least 16).
        seed: integer seed; the same arguments always give the same pairs.
        max_displacement: largest displacement in voxels (per component); 0 gives identical anatomy.
        num_landmarks: landmarks per pair ``L`` (the first ones are one per organ).
        smoothness: control-point spacing of the random field in voxels (bigger is smoother);
            default ``max(4, min(shape) / 4)``. Keep it above about ``2 * max_displacement`` so the
            deformation does not fold.

    Returns:
        dict of NumPy arrays (``S`` = spatial shape, ``r`` = its rank):

        - ``moving``, ``fixed``: float32 ``(N, *S, 1)``;
        - ``moving_label``, ``fixed_label``: int32 ``(N, *S)`` with values in :data:`LABEL_NAMES`;
        - ``displacement``: float32 ``(N, *S, r)`` in voxels, ``fixed(x) = moving(x + u(x))``;
        - ``fixed_landmarks``, ``moving_landmarks``: float32 ``(N, L, r)`` voxel coordinates of the
          same anatomical points in each image.
    """
    from keras import ops  # Keras/TensorFlow only when pairs are made

    from data_utils import spatial

    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 16:
        raise ValueError(f"`shape` must be (H, W) or (D, H, W) with every size >= 16, got {shape}.")
    if max_displacement < 0 or int(num_pairs) < 1 or int(num_landmarks) < 1:
        raise ValueError(
            f"need num_pairs >= 1, num_landmarks >= 1 and max_displacement >= 0, got "
            f"{num_pairs}, {num_landmarks} and {max_displacement}."
        )
    cell = max(4.0, min(shape) / 4.0) if smoothness is None else float(smoothness)
    rng = np.random.default_rng(seed)
    images, labels, fields = [], [], []
    for _ in range(int(num_pairs)):
        image, label = _draw_anatomy(rng, shape)
        images.append(image)
        labels.append(label)
        fields.append(phantom.random_displacement(shape, rng, max_mm=float(max_displacement), cell=cell))
    moving = np.stack(images)[..., None]
    moving_label = np.stack(labels)
    displacement = np.stack(fields).astype(np.float32)
    grid = spatial.displacement_to_grid(ops.convert_to_tensor(displacement))
    fixed, fixed_label = spatial.sample_image_and_label(moving, moving_label, grid, padding="border")
    fixed, fixed_label = np.asarray(fixed), np.asarray(fixed_label)

    fixed_landmarks = np.stack([_pick_landmarks(rng, lab, int(num_landmarks)) for lab in fixed_label])
    index = tuple(fixed_landmarks[..., i].astype(int) for i in range(len(shape)))
    moving_landmarks = fixed_landmarks + displacement[(np.arange(len(displacement))[:, None],) + index]

    noise = rng.standard_normal((2,) + moving.shape).astype(np.float32) * NOISE_STD
    return {
        "moving": (moving + noise[0]).astype(np.float32),
        "fixed": (fixed + noise[1]).astype(np.float32),
        "moving_label": moving_label.astype(np.int32),
        "fixed_label": fixed_label.astype(np.int32),
        "displacement": displacement,
        "fixed_landmarks": fixed_landmarks.astype(np.float32),
        "moving_landmarks": moving_landmarks.astype(np.float32),
    }
