"""Paired 2D images of one anatomy in several contrasts (T1, T2, FLAIR MR and CT), for image synthesis.

Each sample is one axial head slice drawn once as tissue memberships (soft masks with partial
volume at every edge) and then *rendered* in each requested contrast with that contrast's tissue
intensities, so the images are perfectly registered and differ only in how tissues look:

======== ===== ===== ===== ============
tissue    T1    T2   FLAIR  CT (HU)
======== ===== ===== ===== ============
air       0     0     0     -1000
scalp     0.95  0.65  0.75  -90 (fat)
skull     0.08  0.05  0.05  1100
CSF       0.12  1.0   0.08  8
grey      0.55  0.62  0.60  40
white     0.78  0.42  0.45  28
lesion    0.35  0.85  1.0   15
======== ===== ===== ===== ============

The mapping from one contrast to another is not a monotonic intensity curve (CSF is dark on T1
and bright on T2; grey matter is darker than white on T1 but brighter on T2; the skull is dark on
MR and the brightest tissue on CT), so synthesis needs the spatial context a network sees.
The lesion (a white-matter hyperintensity in about half of the slices, ``lesion_probability``) is
nearly invisible on T1 but bright on FLAIR: a classic reason to synthesise a missing contrast.

Every MR contrast gets its own smooth bias field and Rician noise (:func:`data_utils.augment.bias_field`,
:func:`data_utils.augment.rician_noise`); CT gets Gaussian noise in HU. Tissue texture is shared
between contrasts (it is the same tissue), scaled per contrast.

Example::

    from data_utils.synthetic import make_modality_pairs
    data = make_modality_pairs(64, image_size=64, contrasts=("t1", "t2"), seed=0)
    data["t1"].shape, data["t2"].shape, data["label"].shape   # (64, 64, 64, 1) x2, (64, 64, 64)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from data_utils.synthetic import phantom

TISSUE_LABELS = {0: "air", 1: "scalp", 2: "skull", 3: "csf", 4: "grey_matter", 5: "white_matter", 6: "lesion"}
# Mean intensity of each tissue (in TISSUE_LABELS order) per contrast; MR in arbitrary units, CT in HU.
CONTRASTS = {
    "t1": (0.0, 0.95, 0.08, 0.12, 0.55, 0.78, 0.35),
    "t2": (0.0, 0.65, 0.05, 1.00, 0.62, 0.42, 0.85),
    "flair": (0.0, 0.75, 0.05, 0.08, 0.60, 0.45, 1.00),
    "ct": (-1000.0, -90.0, 1100.0, 8.0, 40.0, 28.0, 15.0),
}
FIELD_OF_VIEW_MM = 220.0
MR_NOISE = 0.02
CT_NOISE_HU = 6.0


def _memberships(rng: np.random.Generator, size: int, lesion_probability: float) -> list[np.ndarray]:
    """Soft masks of tissues 1..6 for one slice, in painting order (later tissues cover earlier)."""
    spacing = FIELD_OF_VIEW_MM / size
    coords = phantom.coordinate_grid((size, size), spacing)
    cell_coarse, cell_fine = 40.0 / spacing, 10.0 / spacing  # feature sizes 40 mm and 10 mm
    edge = 0.5 * spacing  # about half a pixel of partial volume
    head = phantom.blob_distance(coords, rng, rng.uniform(-4, 4, 2), (rng.uniform(88, 98), rng.uniform(70, 80)),
                                 irregularity_mm=1.5, max_angle_deg=8, cell=cell_coarse)
    scalp, skull = rng.uniform(4, 7), rng.uniform(5, 8)
    subarachnoid = rng.uniform(1.5, 3.0)
    cortex = head + scalp + skull + subarachnoid + 2.0 * np.abs(phantom.smooth_field((size, size), rng, cell_fine))
    white = cortex + rng.uniform(3.0, 5.0) + 3.0 * phantom.smooth_field((size, size), rng, cell_fine)
    masks = [
        phantom.soft_mask(head, edge),
        phantom.soft_mask(head + scalp, edge),
        phantom.soft_mask(head + scalp + skull, edge),
        phantom.soft_mask(cortex, edge),
        phantom.soft_mask(white, edge),
    ]
    # Lateral ventricles: two curved CSF blobs either side of the midline.
    ventricles = np.full((size, size), np.inf, np.float32)
    for side in (-1, 1):
        center = (rng.uniform(-8, 2), side * rng.uniform(6, 10))
        radii = (rng.uniform(14, 22), rng.uniform(4, 8))
        angle = np.deg2rad(side * rng.uniform(5, 20))
        tilt = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        ventricles = np.minimum(ventricles, phantom.ellipsoid_distance(coords, center, radii, tilt))
    csf_inside = phantom.soft_mask(ventricles, edge)
    lesion = np.zeros((size, size), np.float32)
    if rng.random() < lesion_probability:
        center = (rng.uniform(-35, 35), rng.uniform(-30, 30))
        radius = rng.uniform(4, 10)
        distance = phantom.blob_distance(coords, rng, center, (radius, radius * rng.uniform(0.6, 1.0)),
                                         irregularity_mm=1.0, max_angle_deg=90, cell=cell_fine)
        lesion = phantom.soft_mask(distance, edge) * masks[4]  # only inside white matter
    return masks + [csf_inside, lesion]


# The tissue each membership from _memberships paints (the ventricles are CSF).
_PAINT_ORDER = (1, 2, 3, 4, 5, 3, 6)


def _render(memberships, texture, values, texture_scale) -> np.ndarray:
    """Paint tissues in order; each tissue is its mean value plus a shared texture, scaled per contrast."""
    image = np.full(texture.shape, values[0], np.float32)
    for membership, tissue in zip(memberships, _PAINT_ORDER, strict=True):
        phantom.paint(image, membership, values[tissue] + texture_scale[tissue] * texture)
    return image


def make_modality_pairs(
    num_images: int,
    image_size: int = 64,
    contrasts: Sequence[str] = ("t1", "t2"),
    seed: int = 0,
    lesion_probability: float = 0.5,
    artefacts: bool = True,
) -> dict:
    """Draw registered 2D head slices of one anatomy in two or more contrasts.

    Args:
        num_images: number of slices ``N``.
        image_size: height and width in pixels (a 220 mm field of view).
        contrasts: names from :data:`CONTRASTS` (``"t1"``, ``"t2"``, ``"flair"``, ``"ct"``).
        seed: integer seed; the same arguments always give the same images (and the anatomy does
            not depend on which contrasts are asked for).
        lesion_probability: chance that a slice has a white-matter lesion.
        artefacts: add the MR bias field and noise (and CT noise); False gives clean images.

    Returns:
        dict with one float32 ``(N, H, W, 1)`` array per contrast (MR about ``[0, 1.2]``; CT in
        Hounsfield units), ``label`` int32 ``(N, H, W)`` tissue map (:data:`TISSUE_LABELS`) and
        ``contrasts`` (the tuple of names).
    """
    contrasts = tuple(str(c).lower() for c in contrasts)
    unknown = [c for c in contrasts if c not in CONTRASTS]
    if unknown or not contrasts:
        raise ValueError(f"`contrasts` must name some of {sorted(CONTRASTS)}, got {list(contrasts)}.")
    if int(num_images) < 1 or int(image_size) < 16:
        raise ValueError(f"need num_images >= 1 and image_size >= 16, got {num_images} and {image_size}.")
    if not 0.0 <= lesion_probability <= 1.0:
        raise ValueError(f"`lesion_probability` must be in [0, 1], got {lesion_probability}.")
    n, size = int(num_images), int(image_size)
    rng = np.random.default_rng(seed)
    images = {c: np.empty((n, size, size), np.float32) for c in contrasts}
    labels = np.empty((n, size, size), np.int32)
    for i in range(n):
        memberships = _memberships(rng, size, lesion_probability)
        texture = phantom.texture((size, size), rng, sigma_vox=1.0)
        label = np.zeros((size, size), np.int32)
        for membership, tissue in zip(memberships, _PAINT_ORDER, strict=True):
            label[membership > 0.5] = tissue
        labels[i] = label
        for c in contrasts:
            values = np.asarray(CONTRASTS[c], np.float32)
            scale = np.full(7, 8.0, np.float32) if c == "ct" else 0.04 * values
            if c == "ct":
                scale[2] = 120.0  # bone density varies much more than soft tissue
            images[c][i] = _render(memberships, texture, values, scale)

    if artefacts:
        from data_utils import augment  # TensorFlow only for the artefacts

        artefact_rng = np.random.default_rng([int(seed), 1])  # independent of the anatomy stream
        for c in CONTRASTS:  # fixed order: the noise of one contrast does not depend on the others asked for
            seeds = [phantom._tf_seed(artefact_rng) for _ in range(2)]
            if c not in contrasts:
                continue
            if c == "ct":
                images[c] = augment.gaussian_noise(images[c][..., None], seed=seeds[0], std=CT_NOISE_HU, sample_std=False).numpy()[..., 0]
                continue
            x = augment.bias_field(images[c][..., None], seed=seeds[0], coeff_range=(-0.12, 0.12))
            x = augment.rician_noise(x, seed=seeds[1], std=MR_NOISE, sample_std=False)
            images[c] = x.numpy()[..., 0]
    out = {c: images[c][..., None] for c in contrasts}
    out.update(label=labels, contrasts=contrasts)
    return out
