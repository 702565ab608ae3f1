"""Synthetic 2D B-mode ultrasound images for classification: normal tissue, cyst, solid mass, calcification.

Each image is simulated along the scan lines of a probe, the way a scanner forms it:

1. **echogenicity** (how strongly tissue reflects) is drawn in millimetres: a bright skin line, a
   darker subcutaneous layer, a bright fascia, textured parenchyma, sometimes an anechoic vessel,
   and the class's lesion;
2. **attenuation** accumulates with depth along every scan line: behind a strongly attenuating
   reflector (a calcification) the beam is gone, so a dark **acoustic shadow** falls below it;
   behind fluid (a cyst) the beam is stronger than elsewhere (**posterior enhancement**);
   time-gain compensation only partly undoes the overall depth attenuation;
3. **speckle**: the echo is multiplied by random scatterer noise (:func:`data_utils.augment.speckle_noise`)
   and blurred by the probe's point-spread function (longer laterally than axially), which turns the
   noise into the grainy speckle pattern of real B-mode images;
4. **log compression** to a 40 dB display range, then scan conversion to a fan (``sector=True``,
   a curvilinear/phased probe) or a rectangle (``sector=False``, a linear probe).

Classes (``CLASS_NAMES``; ``num_classes=k`` keeps the first ``k``):

- ``normal``: layers and parenchyma only (vessels may appear in every class);
- ``cyst``: round/oval anechoic lesion, smooth margin, bright back wall, posterior enhancement;
- ``solid_mass``: hypoechoic, heterogeneous lesion with an irregular margin and mild shadowing;
- ``calcification``: small, very bright curved reflector with a dark acoustic shadow below.

Lesion position, size, layer depths, gain and speckle strength vary per image, so a single pixel
or the mean brightness does not give the class away.

Example::

    from data_utils.synthetic import make_ultrasound_dataset
    images, labels, names = make_ultrasound_dataset(256, image_size=64, seed=0)
    images.shape, labels[:4], names     # (256, 64, 64, 1), e.g. [2 0 3 1], ('normal', ...)
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from data_utils.synthetic import phantom

CLASS_NAMES = ("normal", "cyst", "solid_mass", "calcification")
DEPTH_MM = 40.0  # imaged depth
WIDTH_MM = 40.0  # lateral field of view of the output image
APEX_MM = 8.0  # virtual apex of the sector above the skin
HALF_ANGLE_DEG = 30.0  # half opening angle of the fan
DYNAMIC_RANGE_DB = 40.0
TISSUE_ATTENUATION = 0.05  # per mm (effective, round trip): exp(-2) at the bottom before gain compensation


def _beam_geometry(size: int, sector: bool):
    """Positions ``(y, x)`` in mm of every (depth sample, scan line) of the beam grid, and the step in mm."""
    rows = (np.arange(size, dtype=np.float32) + 0.5) / size
    if not sector:
        y = rows * DEPTH_MM
        x = (rows - 0.5) * WIDTH_MM
        yy, xx = np.meshgrid(y, x, indexing="ij")
        return yy.astype(np.float32), xx.astype(np.float32), DEPTH_MM / size
    r_max = np.hypot(DEPTH_MM + APEX_MM, WIDTH_MM / 2)
    r = APEX_MM + rows * (r_max - APEX_MM)
    theta = np.deg2rad((rows - 0.5) * 2 * HALF_ANGLE_DEG)
    rr, tt = np.meshgrid(r, theta, indexing="ij")
    y, x = rr * np.cos(tt) - APEX_MM, rr * np.sin(tt)
    return y.astype(np.float32), x.astype(np.float32), float(r_max - APEX_MM) / size


def _scan_convert_coords(size: int):
    """For every output pixel, its fractional (depth sample, scan line) index, and the fan mask."""
    centres = (np.arange(size, dtype=np.float32) + 0.5) / size
    y, x = np.meshgrid(centres * DEPTH_MM, (centres - 0.5) * WIDTH_MM, indexing="ij")
    r = np.hypot(y + APEX_MM, x)
    theta = np.rad2deg(np.arctan2(x, y + APEX_MM))
    r_max = np.hypot(DEPTH_MM + APEX_MM, WIDTH_MM / 2)
    row = (r - APEX_MM) / (r_max - APEX_MM) * size - 0.5
    col = (theta / (2 * HALF_ANGLE_DEG) + 0.5) * size - 0.5
    mask = (np.abs(theta) <= HALF_ANGLE_DEG) & (r >= APEX_MM)
    return np.stack([row, col]), mask.astype(np.float32)


def _smooth_noise(rng, n, size, sigma):
    """``(n, size, size)`` Gaussian-smoothed noise with unit standard deviation per image."""
    field = ndimage.gaussian_filter(rng.standard_normal((n, size, size)).astype(np.float32), (0, sigma, sigma), mode="wrap")
    return field / (field.std(axis=(1, 2), keepdims=True) + 1e-6)


def _ellipse(y, x, cy, cx, ry, rx, angle):
    """Signed distance (mm) to rotated ellipses, batched: params ``(n, 1, 1)``, grid ``(H, W)``."""
    c, s = np.cos(angle), np.sin(angle)
    dy, dx = y - cy, x - cx
    u, v = (c * dy - s * dx) / ry, (s * dy + c * dx) / rx
    norm = np.sqrt(u * u + v * v) + 1e-6
    grad = np.sqrt((u / ry) ** 2 + (v / rx) ** 2) + 1e-9
    return (norm - 1.0) * norm / grad


def _param(rng, n, low, high):
    return rng.uniform(low, high, size=(n, 1, 1)).astype(np.float32)


def _echogenicity_and_attenuation(rng, labels, y, x, size):
    """Reflectivity and attenuation (per mm) maps ``(n, H, W)`` on the beam grid."""
    n = len(labels)
    px = DEPTH_MM / size
    texture = _smooth_noise(rng, n, size, sigma=3.0 / px)
    refl = 1.0 + 0.22 * texture
    att = np.full((n,) + y.shape, TISSUE_ATTENUATION, np.float32) * _param(rng, n, 0.8, 1.2)

    # Layers under the probe: skin (bright), subcutaneous fat (dark), fascia (bright), then parenchyma.
    fascia = _param(rng, n, 6.0, 12.0) + _param(rng, n, 0.5, 1.5) * np.sin(x / _param(rng, n, 5.0, 12.0) + _param(rng, n, 0, 6.3))
    skin = phantom.soft_mask(np.abs(y - 1.0) - 0.6, 0.3)
    fat = phantom.soft_mask(np.maximum(y - fascia, 1.5 - y), 0.4)
    band = phantom.soft_mask(np.abs(y - fascia) - 0.5, 0.3)
    refl = phantom.paint(refl, fat, 0.45 + 0.1 * texture)
    refl = phantom.paint(refl, band, 2.2)
    refl = phantom.paint(refl, skin, 2.5)

    # An anechoic vessel in some images of every class: fluid, like a cyst, but long and thin.
    has_vessel = rng.random((n, 1, 1)) < 0.4
    d_vessel = _ellipse(y, x, _param(rng, n, 14, 34), _param(rng, n, -10, 10), _param(rng, n, 1.2, 2.2),
                        _param(rng, n, 9, 16), _param(rng, n, -0.3, 0.3))
    vessel = phantom.soft_mask(d_vessel, 0.3) * has_vessel
    refl = phantom.paint(refl, vessel, 0.04)
    att = phantom.paint(att, vessel, 0.005)

    cy, cx = _param(rng, n, 16, 28), _param(rng, n, -9, 9)
    angle = _param(rng, n, -0.6, 0.6)
    lab = labels.reshape(n, 1, 1)
    # Cyst: smooth, round or oval, anechoic; fluid barely attenuates -> posterior enhancement.
    r_cyst = _param(rng, n, 3.5, 7.5)
    d = _ellipse(y, x, cy, cx, r_cyst * _param(rng, n, 0.7, 1.0), r_cyst, angle)
    cyst = phantom.soft_mask(d, 0.3) * (lab == 1)
    back_wall = phantom.soft_mask(np.abs(d - 0.4) - 0.4, 0.3) * (y > cy) * (lab == 1)
    refl = phantom.paint(refl, back_wall, 1.9)
    refl = phantom.paint(refl, cyst, 0.03)
    att = phantom.paint(att, cyst, 0.003)
    # Solid mass: hypoechoic, heterogeneous, irregular (spiculated) margin, attenuating -> mild shadow.
    r_mass = _param(rng, n, 3.5, 7.5)
    d = _ellipse(y, x, cy, cx, r_mass * _param(rng, n, 0.8, 1.3), r_mass, angle)
    d = d + 1.3 * _smooth_noise(rng, n, size, sigma=1.2 / px)
    mass = phantom.soft_mask(d, 0.4) * (lab == 2)
    refl = phantom.paint(refl, mass, 0.32 + 0.12 * _smooth_noise(rng, n, size, sigma=1.0 / px))
    att = phantom.paint(att, mass, 3.0 * TISSUE_ATTENUATION)
    # Calcification: small, very bright, curved reflector that stops the beam -> acoustic shadow.
    r_calc = _param(rng, n, 1.5, 3.5)
    d = _ellipse(y, x, cy, cx, r_calc * _param(rng, n, 0.35, 0.6), r_calc, angle * 0.5)
    calc = phantom.soft_mask(d, 0.3) * (lab == 3)
    refl = phantom.paint(refl, calc, 8.0)
    att = phantom.paint(att, calc, 1.0)
    return refl, att


def make_ultrasound_dataset(
    num_images: int,
    image_size: int = 64,
    num_classes: int = 4,
    seed: int = 0,
    sector: bool = True,
    speckle: float = 0.8,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Draw a balanced set of B-mode ultrasound-like images with class labels.

    Args:
        num_images: number of images ``N``; classes are balanced (``N // num_classes`` each, the
            remainder going to the first classes) and in random order.
        image_size: output height and width in pixels (the field of view is 40 x 40 mm).
        num_classes: 2 to 4; keeps the first ``num_classes`` of :data:`CLASS_NAMES`.
        seed: integer seed; the same arguments always give the same images.
        sector: fan-shaped image of a curvilinear probe (zeros outside the fan); False gives the
            rectangular image of a linear probe.
        speckle: standard deviation of the multiplicative scatterer noise (0 gives no speckle).

    Returns:
        ``(images, labels, class_names)``: images float32 ``(N, image_size, image_size, 1)`` in
        ``[0, 1]`` (log-compressed); labels int32 ``(N,)`` in ``[0, num_classes)``; class names, a
        tuple of ``num_classes`` strings.
    """
    if not 2 <= int(num_classes) <= len(CLASS_NAMES):
        raise ValueError(f"`num_classes` must be between 2 and {len(CLASS_NAMES)}, got {num_classes}.")
    if int(num_images) < 1 or int(image_size) < 16:
        raise ValueError(f"need num_images >= 1 and image_size >= 16, got {num_images} and {image_size}.")
    if speckle < 0:
        raise ValueError(f"`speckle` must be >= 0, got {speckle}.")
    from data_utils import augment  # TensorFlow only when images are made

    n, size = int(num_images), int(image_size)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % int(num_classes)).astype(np.int32)
    y, x, step_mm = _beam_geometry(size, sector)
    refl, att = _echogenicity_and_attenuation(rng, labels, y, x, size)

    # Attenuation accumulates along each scan line (axis 1 = depth); gain compensation is partial.
    # Half of a sample's own attenuation: a reflector's front surface still sees the full beam.
    transmission = np.exp(-(np.cumsum(att, axis=1) - 0.5 * att) * step_mm)
    tgc = _param(rng, n, 0.55, 0.85)
    echo = refl * transmission * np.exp(tgc * TISSUE_ATTENUATION * np.maximum(y, 0)) * _param(rng, n, 0.7, 1.4)
    if speckle > 0:
        echo = augment.speckle_noise(echo[..., None], seed=phantom._tf_seed(rng), std=(speckle, speckle)).numpy()[..., 0]
        echo = np.abs(echo)
    # The point-spread function is wider across scan lines than along them.
    psf = (0, 0.45 * size / 64, 0.9 * size / 64)
    echo = ndimage.gaussian_filter(echo, psf) + 1e-3
    reference = np.percentile(echo, 99, axis=(1, 2), keepdims=True)
    bmode = np.clip(1.0 + 20.0 * np.log10(echo / reference) / DYNAMIC_RANGE_DB, 0.0, 1.0)

    if sector:
        coords, mask = _scan_convert_coords(size)
        bmode = np.stack([ndimage.map_coordinates(b, coords, order=1, mode="nearest") * mask for b in bmode])
    return bmode[..., None].astype(np.float32), labels, CLASS_NAMES[: int(num_classes)]
