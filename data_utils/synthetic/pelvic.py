"""A synthetic male-pelvis T2-weighted MR segmentation dataset: bladder, prostate and rectum.

Each case is a 3D volume drawn from a seed, with the anatomy a prostate MR shows:

- **labelled**: bladder (bright urine inside a dark wall), prostate (dark capsule, brighter
  peripheral zone, heterogeneous central gland with nodules) and rectum (dark wall around gas,
  fluid or stool), in plausible positions: the bladder sits anterior-superior on the prostate,
  the rectum runs behind the prostate and bends backwards as it rises;
- **unlabelled look-alikes**: peri-prostatic fat (bright like urine on T2), seminal vesicles
  (bright fluid), obturator internus, levator ani and gluteal muscles (intermediate, like the
  prostate), pubic and femoral bone, vessels, fascial septa and air outside the body (dark, like
  rectal gas). A per-voxel intensity threshold therefore cannot solve the task
  (:func:`threshold_baseline` measures this: its mean foreground Dice is about 0.2-0.35);
- **acquisition**: soft-tissue texture, partial-volume edges, a thick-slice point-spread
  function, a smooth multiplicative bias field, Rician noise, per-case intensity scaling and
  anisotropic voxels (3 mm slices, 1.5 mm in plane).

Arrays use the kit's ``(D, H, W) = (z, y, x)`` layout: ``d`` goes inferior -> superior, ``h``
posterior -> anterior and ``w`` left -> right, so axial slices are ``image[d]``. The affine maps
``(d, h, w)`` to RAS+ world millimetres, and files are written in the same layout as the public
pelvic MR dataset the coursework uses: ``<case>_img.nii.gz`` and ``<case>_mask.nii.gz``.

Default size ``(32, 80, 80)`` at ``(3.0, 1.5, 1.5)`` mm (a 96 x 120 x 120 mm field of view) is
small enough to train a 2D U-Net on axial slices on a laptop CPU in minutes.

Example::

    from data_utils.synthetic import pelvic
    case = pelvic.make_pelvic_case(seed=0)
    case["image"].shape, case["label"].max()          # (32, 80, 80), 3
    paths = pelvic.generate_pelvic_dataset("data/pelvic", num_cases=32)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from data_utils.io import atomic_write, dhw_affine, save_nifti
from data_utils.synthetic import phantom

PELVIC_LABELS = {0: "background", 1: "bladder", 2: "prostate", 3: "rectum"}
DEFAULT_SHAPE = (32, 80, 80)
DEFAULT_SPACING = (3.0, 1.5, 1.5)
DEFAULT_NUM_CASES = 32
IMAGE_SUFFIX = "_img"
LABEL_SUFFIX = "_mask"
MANIFEST_NAME = "manifest.json"
# Bump when the anatomy or appearance changes, so datasets generated earlier are remade.
GENERATOR_VERSION = 2

# Mean T2 intensities (relative to fat ~0.8) before per-case jitter: the overlaps are on purpose.
TISSUE = {
    "air": 0.02,
    "fat": 0.78,
    "fascia": 0.45,
    "muscle": 0.33,
    "levator": 0.37,
    "cortex": 0.08,
    "marrow": 0.55,
    "vessel_void": 0.10,
    "vessel_bright": 0.70,
    "seminal": 0.86,
    "urine": 1.02,
    "bladder_wall": 0.28,
    "capsule": 0.24,
    "peripheral": 0.62,
    "central": 0.42,
    "rectal_wall": 0.30,
    "gas": 0.03,
}


def _ellipse_tube_distance(coords, center_y, center_x, radius_y, radius_x) -> np.ndarray:
    """Signed in-plane distance (mm) to a tube whose elliptical cross-section varies along z."""
    qy = (coords[..., 1] - center_y) / radius_y
    qx = (coords[..., 2] - center_x) / radius_x
    norm_q = np.sqrt(qy * qy + qx * qx) + 1e-6
    grad = np.sqrt((qy / radius_y) ** 2 + (qx / radius_x) ** 2) + 1e-9
    return ((norm_q - 1.0) * norm_q / grad).astype(np.float32)


def _anatomy_frame(rng, shape, spacing) -> np.ndarray:
    """Voxel positions in the patient's own frame: deformed, shifted, scaled and tilted per case."""
    coords = phantom.coordinate_grid(shape, spacing)
    cell = (max(2.0, 24.0 / spacing[0]), 24.0 / spacing[1], 24.0 / spacing[2])  # ~24 mm features
    coords = coords + phantom.random_displacement(shape, rng, max_mm=4.0, cell=cell)
    shift = rng.uniform([-6.0, -6.0, -5.0], [6.0, 6.0, 5.0]).astype(np.float32)
    scale = np.float32(rng.uniform(0.9, 1.1))
    rotation = phantom.random_rotation(rng, 3, max_angle_deg=6.0).astype(np.float32)
    return ((coords - shift) @ rotation) / scale


def make_pelvic_case(
    seed: int,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
) -> dict:
    """Draw one synthetic pelvic T2 MR case.

    Args:
        seed: integer seed; the same seed, shape and spacing always give the same case.
        shape: ``(D, H, W)`` voxels.
        spacing: ``(sz, sy, sx)`` voxel size in mm (slice thickness first).

    Returns:
        dict with ``image`` float32 ``(D, H, W)`` (non-negative MR magnitude, arbitrary units),
        ``label`` uint8 ``(D, H, W)`` with values in :data:`PELVIC_LABELS`, ``spacing`` (tuple of 3
        floats) and ``affine`` ``(4, 4)`` mapping ``(d, h, w)`` to RAS+ mm.
    """
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing)
    if len(shape) != 3 or min(shape) < 4:
        raise ValueError(f"`shape` must be (D, H, W) with every size >= 4, got {shape}.")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"`spacing` must be three positive voxel sizes in mm, got {spacing}.")
    rng = np.random.default_rng(seed)
    p = _anatomy_frame(rng, shape, spacing)
    z = p[..., 0]
    edge = 0.35 * min(spacing)  # soft-edge width in mm: partial volume at every boundary
    irregular_cell = (max(2.0, 12.0 / spacing[0]), 12.0 / spacing[1], 12.0 / spacing[2])
    tissue = {k: v * rng.uniform(0.92, 1.08) for k, v in TISSUE.items()}
    tex_fine = phantom.texture(shape, rng, sigma_vox=(0.4, 1.0, 1.0))
    tex_coarse = phantom.texture(shape, rng, sigma_vox=(0.8, 2.5, 2.5))

    def soft(distance):
        return phantom.soft_mask(distance, edge)

    def blob(center, radii, irregularity=1.0, angle=10.0):
        return phantom.blob_distance(p, rng, center, radii, irregularity, angle, irregular_cell)

    def textured(name, amount, field=tex_fine):
        return tissue[name] * (1.0 + amount * field)

    # --- Key landmarks: everything is placed relative to the prostate.
    pz_ = rng.uniform(-24.0, -12.0)
    py_ = rng.uniform(-6.0, 2.0)
    px_ = rng.uniform(-3.0, 3.0)
    prad = np.array([rng.uniform(13, 19), rng.uniform(12, 17), rng.uniform(17, 24)])

    # --- Body: fat everywhere inside the skin, air outside; fascial septa streak the fat.
    image = np.full(shape, tissue["air"], np.float32)
    body = soft(blob((0.0, py_ - 15.0, 0.0), (400.0, rng.uniform(70, 95), rng.uniform(140, 170)), 2.0, 0.0))
    phantom.paint(image, body, textured("fat", 0.10))
    septa = np.abs(phantom.smooth_field(shape, rng, cell=irregular_cell))
    phantom.paint(image, body * phantom.soft_mask(septa - 0.08, 0.03), textured("fascia", 0.15))

    # --- Muscles: obturator internus (side walls), gluteal mass (behind), levator ani sling.
    for side in (-1.0, 1.0):
        d = blob((pz_ + 12, py_ + rng.uniform(-6, 6), side * rng.uniform(48, 56)), (55, 30, rng.uniform(8, 12)), 1.5)
        phantom.paint(image, soft(d), textured("muscle", 0.12, tex_coarse))
        d = blob((pz_ + 20, py_ - rng.uniform(62, 72), side * rng.uniform(30, 40)), (70, 25, 32), 2.5)
        phantom.paint(image, soft(d), textured("muscle", 0.12, tex_coarse))
    widen = 1.0 + 0.012 * (z - pz_)  # the levator funnel opens upwards
    ring = _ellipse_tube_distance(p, py_ - prad[1] - 8.0, px_, 40.0 * widen, 34.0 * widen)
    levator = np.maximum(np.abs(ring) - rng.uniform(2.0, 3.5), z - (pz_ + rng.uniform(4, 12)))
    phantom.paint(image, soft(levator), textured("levator", 0.12, tex_coarse))

    # --- Bone: pubic bones in front of the prostate, femoral heads at the sides.
    bones = []
    pubis_y = py_ + prad[1] + rng.uniform(14, 22)
    for side in (-1.0, 1.0):
        bones.append(blob((pz_ + rng.uniform(-4, 6), pubis_y, side * rng.uniform(10, 16)), (18, 9, 14), 1.0, 20.0))
        bones.append(blob((pz_ + 28, py_ + rng.uniform(0, 10), side * rng.uniform(62, 70)), (22, 22, 22), 0.8, 0.0))
    for d in bones:
        phantom.paint(image, soft(d), tissue["cortex"])
        phantom.paint(image, soft(d + 2.0), textured("marrow", 0.15, tex_coarse))

    # --- Vessels: external iliac vessels beside the bladder (flow voids or slow bright flow).
    for side in (-1.0, 1.0):
        for offset in (0.0, 9.0):
            radius = rng.uniform(2.5, 4.5)
            center_y = py_ + rng.uniform(12, 24) - offset
            center_x = side * (rng.uniform(36, 44) + offset)
            tube = _ellipse_tube_distance(p, center_y, center_x, radius, radius)
            tube = np.maximum(tube, pz_ + 8.0 - z)
            value = tissue["vessel_void"] if rng.random() < 0.6 else tissue["vessel_bright"]
            phantom.paint(image, soft(tube), value)

    # --- Seminal vesicles: bright lobulated fluid between bladder base and rectum (unlabelled).
    for side in (-1.0, 1.0):
        center = (pz_ + prad[0] * 0.9 + rng.uniform(2, 6), py_ - prad[1] * 0.45, px_ + side * rng.uniform(12, 20))
        d = blob(center, (rng.uniform(6, 9), rng.uniform(4.5, 7), rng.uniform(12, 18)), 1.5, 20.0)
        phantom.paint(image, soft(d), textured("seminal", 0.08))

    # --- Rectum: a tube behind the prostate, narrow at the anal canal, bending backwards upwards.
    rry, rrx = rng.uniform(9, 14), rng.uniform(13, 20)
    narrowing = 0.55 + 0.45 / (1.0 + np.exp(-(z - (pz_ - prad[0])) / 5.0))
    rect_y = (py_ - prad[1] - rng.uniform(3, 6) - rry) - rng.uniform(0.15, 0.4) * np.maximum(z - pz_, 0.0)
    rect_x = px_ + rng.uniform(-4, 4) + 3.0 * np.sin(z / 20.0 + rng.uniform(0, 2 * np.pi))
    rect_d = _ellipse_tube_distance(p, rect_y, rect_x, rry * narrowing, rrx * narrowing)
    rect_d = rect_d + 1.2 * phantom.smooth_field(shape, rng, irregular_cell)
    rectum = soft(rect_d)
    phantom.paint(image, rectum, textured("rectal_wall", 0.12))
    lumen = soft(rect_d + rng.uniform(2.5, 4.0))
    stool = rng.uniform(0.25, 0.7) * tissue["fat"] * (1.0 + 0.3 * tex_coarse)
    phantom.paint(image, lumen, stool)
    gas_fraction = rng.uniform(0.0, 0.7)
    gas_field = phantom.smooth_field(shape, rng, irregular_cell)
    gas = lumen * phantom.soft_mask(gas_field - np.quantile(gas_field, gas_fraction), 0.2)
    phantom.paint(image, gas, tissue["gas"])

    # --- Bladder: bright urine in a dark wall, sitting on the prostate base.
    brad = np.array([rng.uniform(16, 28), rng.uniform(18, 28), rng.uniform(22, 34)])
    bcenter = (pz_ + prad[0] + 0.7 * brad[0], py_ + rng.uniform(4, 10), px_ + rng.uniform(-4, 4))
    blad_d = blob(bcenter, brad, 2.0, 10.0)
    bladder = soft(blad_d)
    phantom.paint(image, bladder, textured("bladder_wall", 0.12))
    phantom.paint(image, soft(blad_d + rng.uniform(2.0, 3.5)), textured("urine", 0.04))

    # --- Prostate: dark capsule, bright peripheral zone, darker nodular central gland.
    pros_d = blob((pz_, py_, px_), prad, 1.0, 10.0)
    prostate = soft(pros_d)
    phantom.paint(image, prostate, tissue["capsule"])
    phantom.paint(image, soft(pros_d + 1.5), textured("peripheral", 0.12))
    cg_center = (pz_ + 0.2 * prad[0], py_ + 0.25 * prad[1], px_)
    cg = soft(phantom.blob_distance(p, rng, cg_center, prad * rng.uniform(0.5, 0.7), 1.0, 10.0, irregular_cell))
    phantom.paint(image, cg, textured("central", 0.15, tex_coarse))
    for _ in range(int(rng.integers(0, 4))):
        offset = rng.uniform(-0.35, 0.35, 3) * prad
        nodule = soft(blob(np.array(cg_center) + offset, rng.uniform(3, 7, 3), 0.5, 30.0)) * cg
        phantom.paint(image, nodule, rng.uniform(0.3, 0.65) * (1.0 + 0.1 * tex_fine))

    label = np.zeros(shape, np.uint8)
    label[rectum > 0.5] = 3
    label[bladder > 0.5] = 1
    label[prostate > 0.5] = 2

    # --- Acquisition: slice profile, bias field, Rician noise, scanner gain.
    image = phantom.slice_profile_blur(image, spacing, fwhm_vox=1.0)
    image = phantom.bias_field(image, rng, degree=3, coeff_range=(-0.12, 0.12))
    image = phantom.rician_noise(image, rng, sigma=rng.uniform(0.02, 0.045))
    image = image * np.float32(rng.uniform(400.0, 1200.0))
    return {
        "image": image.astype(np.float32),
        "label": label,
        "spacing": spacing,
        "affine": dhw_affine(shape, spacing),
    }


def case_seed(seed: int, index: int) -> int:
    """The seed of case ``index`` in a dataset generated with ``seed`` (independent streams)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def _manifest(num_cases, seed, shape, spacing) -> dict:
    return {
        "generator": "data_utils.synthetic.pelvic",
        "version": GENERATOR_VERSION,
        "num_cases": int(num_cases),
        "seed": int(seed),
        "shape": [int(s) for s in shape],
        "spacing": [float(s) for s in spacing],
        "labels": {str(k): v for k, v in PELVIC_LABELS.items()},
    }


def _case_paths(out_dir: Path, index: int) -> tuple[Path, Path]:
    name = f"case{index:03d}"
    return out_dir / f"{name}{IMAGE_SUFFIX}.nii.gz", out_dir / f"{name}{LABEL_SUFFIX}.nii.gz"


def _file_digest(paths) -> str:
    """Sizes of the files: a cheap consistency check that catches truncated or replaced files."""
    return hashlib.sha256("".join(f"{p.name}:{p.stat().st_size};" for p in paths).encode()).hexdigest()


def generate_pelvic_dataset(
    out_dir,
    num_cases: int = DEFAULT_NUM_CASES,
    seed: int = 0,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    overwrite: bool = False,
    verbose: bool = False,
) -> list[Path]:
    """Write a synthetic pelvic MR dataset as NIfTI pairs, or reuse it if it is already there.

    Files are ``case000_img.nii.gz`` / ``case000_mask.nii.gz`` ... with affines carrying the
    spacing, plus ``manifest.json`` holding the generator arguments. The manifest is written last,
    so its presence means the dataset is complete; a call with the same arguments then returns at
    once, a call with different arguments regenerates the cases.

    Args:
        out_dir: folder to write (created if needed).
        num_cases: number of cases.
        seed: dataset seed; case ``i`` uses :func:`case_seed` ``(seed, i)``.
        shape, spacing: passed to :func:`make_pelvic_case`.
        overwrite: regenerate even if a matching dataset exists.
        verbose: print one line per case written.

    Returns:
        Sorted list of the image paths; the label of ``X_img.nii.gz`` is ``X_mask.nii.gz``.
    """
    if int(num_cases) < 1:
        raise ValueError(f"`num_cases` must be >= 1, got {num_cases}.")
    out_dir = Path(out_dir)
    manifest = _manifest(num_cases, seed, shape, spacing)
    pairs = [_case_paths(out_dir, i) for i in range(int(num_cases))]
    image_paths = [img for img, _ in pairs]
    all_files = [f for pair in pairs for f in pair]
    manifest_path = out_dir / MANIFEST_NAME
    if not overwrite and manifest_path.is_file() and all(f.is_file() for f in all_files):
        try:
            existing = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError):
            existing = {}
        if existing.get("args") == manifest and existing.get("digest") == _file_digest(all_files):
            return image_paths
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)  # the dataset is incomplete until the manifest is back

    def write_case(index: int) -> None:
        case = make_pelvic_case(case_seed(seed, index), shape, spacing)
        save_nifti(case["image"], case["affine"], pairs[index][0])
        save_nifti(case["label"], case["affine"], pairs[index][1])

    # Cases are independent (each has its own seed), so two threads make the same files; NumPy,
    # TensorFlow and zlib release the GIL for most of the work (32 cases: 4.0 s -> 3.0 s on 2 cores).
    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        for index, _ in enumerate(pool.map(write_case, range(len(pairs)))):  # in case order
            if verbose:
                print(f"wrote {pairs[index][0].name} and {pairs[index][1].name} ({index + 1}/{num_cases})", flush=True)
    for stale in sorted(out_dir.glob(f"case*{IMAGE_SUFFIX}.nii.gz")) + sorted(out_dir.glob(f"case*{LABEL_SUFFIX}.nii.gz")):
        if stale not in all_files:
            stale.unlink()  # cases left over from a bigger dataset generated earlier
    record = {"args": manifest, "digest": _file_digest(all_files)}
    atomic_write(manifest_path, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2)), ".json")
    return image_paths


# --------------------------------------------------------------------------------------------
# The baseline that shows learning is needed
# --------------------------------------------------------------------------------------------


def _zscore(image: np.ndarray) -> np.ndarray:
    return ((image - image.mean()) / (image.std() + 1e-8)).astype(np.float32)


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    total = pred.sum() + truth.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(pred, truth).sum() / total)


def threshold_baseline(
    train_cases,
    test_cases,
    num_classes: int = 4,
    bins: int = 128,
    method: str = "interval",
) -> dict:
    """Fit the best per-voxel intensity classifier on training cases and score it on test cases.

    Images are z-scored per case (as the learning pipeline does). Two classifiers that see only a
    voxel's own intensity:

    - ``"interval"``: for each foreground class, the intensity interval ``[low, high)`` that
      maximises that class's Dice on the pooled training voxels (chosen per class independently,
      which is generous: overlapping intervals are not penalised);
    - ``"histogram"``: each intensity bin gets the class whose normalised training histogram is
      highest there (maximum likelihood, i.e. the Bayes classifier with equal class priors: plain
      majority voting would call every bin background).

    Args:
        train_cases, test_cases: sequences of dicts with ``image`` and ``label`` arrays
            (e.g. from :func:`make_pelvic_case` or ``datasets.load_cases``).
        num_classes: number of classes including background 0.
        bins: intensity histogram bins.
        method: ``"interval"`` or ``"histogram"``.

    Returns:
        dict: ``dice`` (``(num_cases, num_classes - 1)`` per-case foreground Dice on the test cases),
        ``mean_dice_per_class`` (list), ``mean_dice`` (float), and the fitted ``intervals``
        (per class ``(low, high)`` in z-scored units) or ``bin_classes``.
    """
    if method not in ("interval", "histogram"):
        raise ValueError(f"`method` must be 'interval' or 'histogram', got {method!r}.")
    train_x = np.concatenate([_zscore(np.asarray(c["image"], np.float32)).ravel() for c in train_cases])
    train_y = np.concatenate([np.asarray(c["label"]).ravel() for c in train_cases]).astype(np.int64)
    edges = np.quantile(train_x, np.linspace(0.0, 1.0, bins + 1))
    edges[0], edges[-1] = -np.inf, np.inf
    train_bin = np.clip(np.searchsorted(edges, train_x, side="right") - 1, 0, bins - 1)
    counts = np.zeros((num_classes, bins))
    np.add.at(counts, (train_y, train_bin), 1.0)
    result: dict = {"method": method}
    if method == "interval":
        intervals = []
        total_per_bin = np.concatenate([[0.0], np.cumsum(counts.sum(axis=0))])
        for c in range(1, num_classes):
            pos = np.concatenate([[0.0], np.cumsum(counts[c])])
            lo, hi = np.triu_indices(bins)  # interval covers bins lo..hi inclusive
            tp = pos[hi + 1] - pos[lo]
            predicted = total_per_bin[hi + 1] - total_per_bin[lo]
            dice = 2.0 * tp / np.maximum(predicted + pos[-1], 1.0)
            best = int(np.argmax(dice))
            intervals.append((int(lo[best]), int(hi[best])))
        result["intervals"] = [(float(edges[lo]), float(edges[hi + 1])) for lo, hi in intervals]
    else:
        bin_classes = np.argmax(counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0), axis=0)
        result["bin_classes"] = bin_classes.tolist()
    scores = []
    for case in test_cases:
        x = _zscore(np.asarray(case["image"], np.float32))
        y = np.asarray(case["label"])
        b = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, bins - 1)
        row = []
        for c in range(1, num_classes):
            if method == "interval":
                lo, hi = intervals[c - 1]
                pred = (b >= lo) & (b <= hi)
            else:
                pred = bin_classes[b] == c
            row.append(_dice(pred, y == c))
        scores.append(row)
    scores = np.asarray(scores)
    result["dice"] = scores
    result["mean_dice_per_class"] = scores.mean(axis=0).tolist()
    result["mean_dice"] = float(scores.mean())
    return result


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m data_utils.synthetic.pelvic data/pelvic --num-cases 32 --seed 0``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m data_utils.synthetic.pelvic", description=main.__doc__)
    parser.add_argument("out_dir", help="folder to write the NIfTI pairs to")
    parser.add_argument("--num-cases", type=int, default=DEFAULT_NUM_CASES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shape", type=int, nargs=3, default=DEFAULT_SHAPE, metavar=("D", "H", "W"))
    parser.add_argument("--spacing", type=float, nargs=3, default=DEFAULT_SPACING, metavar=("SZ", "SY", "SX"))
    parser.add_argument("--overwrite", action="store_true", help="regenerate even if a matching dataset exists")
    args = parser.parse_args(argv)
    paths = generate_pelvic_dataset(
        args.out_dir, args.num_cases, args.seed, args.shape, args.spacing, args.overwrite, verbose=True
    )
    print(f"{len(paths)} cases in {args.out_dir}")


if __name__ == "__main__":
    main()
