"""Scoring the marker owns: copy what student code wrote, validate it, compute the metrics itself.

Everything here runs in marker processes on files that untrusted code wrote, so nothing is taken
on trust: files are opened relative to a folder the marker owns, one path component at a time,
without following links (:func:`copy_untrusted`), must be regular files with a single link, owned
by the sandbox user where one is used, and below a size limit; a prediction must be a NIfTI file
whose header has the input's shape before its voxels are read (:func:`load_prediction`). Metrics
are computed with the lecturer's ``training.metrics.evaluate_segmentation``.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = ("_img.nii.gz", "_img.nii")
MASK_SUFFIXES = ("_mask.nii.gz", "_mask.nii")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
NUM_CLASSES = 4  # 0 background, 1 bladder, 2 prostate, 3 rectum
STRUCTURES = {"bladder": 1, "prostate": 2, "rectum": 3}
MAX_FILE_BYTES = 256 << 20
AFFINE_TOLERANCE = 1e-4
# Held-out mean Dice a trained model must reach for the training and reproducibility items: above
# a hand-made intensity threshold on these images (0.32, data_utils.synthetic.pelvic.threshold_baseline)
# and below the quick smoke-test model (about 0.6).
LEARNED_DICE_FLOOR = 0.40


class PredictionError(ValueError):
    """A prediction file that breaks the contract (the message names the file and the rule)."""


def case_name(path: Path, suffixes=IMAGE_SUFFIXES) -> str:
    """Case id of ``<case>_img.nii.gz`` (or any ``<name>.nii(.gz)``: the name itself)."""
    name = Path(path).name
    for suffix in tuple(suffixes) + NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def prediction_name(input_path: Path) -> str:
    """The file the predict contract writes for ``input_path``: ``<case>_pred.nii.gz``."""
    return f"{case_name(input_path)}_pred.nii.gz"


def heldout_cases(root: Path) -> list[tuple[str, Path, Path]]:
    """``(case, image, mask)`` for every ``<case>_img.nii(.gz)`` with its mask in ``root``.

    Raises:
        FileNotFoundError: no images, or an image without its mask (the message names it).
    """
    root = Path(root)
    images = sorted(p for p in root.iterdir() if p.name.endswith(IMAGE_SUFFIXES))
    if not images:
        raise FileNotFoundError(f"no held-out images (*_img.nii.gz) in {root}")
    cases = []
    for image in images:
        case = case_name(image)
        masks = [root / f"{case}{s}" for s in MASK_SUFFIXES if (root / f"{case}{s}").is_file()]
        if not masks:
            raise FileNotFoundError(f"held-out image {image} has no mask {case}_mask.nii.gz")
        cases.append((case, image, masks[0]))
    return cases


# ----------------------------------------------------------------------------- copying out
def copy_untrusted(base: Path, rel: str, dst: Path, *, owner_uid: int | None = None,
                   max_bytes: int = MAX_FILE_BYTES) -> str | None:
    """Copy ``base/rel`` to ``dst`` if it is a plain file student code could have written.

    ``base`` is a folder the marker created; every component of ``rel`` is opened with
    ``O_NOFOLLOW`` relative to it, so a link anywhere on the way is refused rather than followed.

    Returns:
        ``None`` when copied, else the reason it was refused (missing, a link, not a regular
        file, hard-linked, owned by someone else, too large).
    """
    parts = [p for p in Path(rel).parts if p not in ("", ".")]
    if not parts or ".." in parts:
        return f"{rel}: not a plain relative path"
    flags = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fds = []
    try:
        fd = os.open(base, flags | os.O_DIRECTORY)
        fds.append(fd)
        for part in parts[:-1]:
            fd = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)
            fds.append(fd)
        try:
            info = os.lstat(parts[-1], dir_fd=fd)
        except FileNotFoundError:
            return f"{rel}: not found"
        if stat.S_ISLNK(info.st_mode):
            return f"{rel}: is a symbolic link (a file is required)"
        if not stat.S_ISREG(info.st_mode):
            return f"{rel}: not a regular file"
        fd = os.open(parts[-1], flags | getattr(os, "O_NONBLOCK", 0), dir_fd=fd)
        fds.append(fd)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return f"{rel}: not a regular file"
        if info.st_nlink != 1:
            return f"{rel}: has {info.st_nlink} hard links (a file of its own is required)"
        if owner_uid is not None and info.st_uid != owner_uid:
            return f"{rel}: owned by uid {info.st_uid}, not written by the sandboxed code"
        if info.st_size > max_bytes:
            return f"{rel}: {info.st_size} bytes, more than the limit of {max_bytes}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(dst, "wb") as out:
            left = max_bytes + 1
            while left > 0:
                block = os.read(fd, min(1 << 20, left))
                if not block:
                    break
                out.write(block)
                left -= len(block)
        if dst.stat().st_size > max_bytes:
            dst.unlink()
            return f"{rel}: grew past the limit of {max_bytes} bytes"
        return None
    except FileNotFoundError:
        return f"{rel}: not found"
    except NotADirectoryError:
        return f"{rel}: a folder on the way is not a folder"
    except OSError as err:  # ELOOP: a link on the way
        return f"{rel}: cannot be read safely ({err.strerror})"
    finally:
        for fd in reversed(fds):
            os.close(fd)


def list_untrusted_dir(base: Path, rel: str) -> list[str] | None:
    """Names in ``base/rel`` (a folder reached without following links), or None if there is none."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY
    fds = []
    try:
        fd = os.open(base, flags)
        fds.append(fd)
        for part in [p for p in Path(rel).parts if p not in ("", ".")]:
            fd = os.open(part, flags, dir_fd=fd)
            fds.append(fd)
        return sorted(os.listdir(fd))
    except OSError:
        return None
    finally:
        for fd in reversed(fds):
            os.close(fd)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- validation
def load_prediction(pred_path: Path, image_path: Path) -> np.ndarray:
    """The label map of a prediction, checked against its input volume.

    Args:
        pred_path: the (copied) prediction ``<case>_pred.nii.gz``.
        image_path: the held-out input it was made for.

    Returns:
        ``int32`` array with the input's shape, values in ``0..NUM_CLASSES - 1``.

    Raises:
        PredictionError: not a NIfTI file, wrong shape or affine, non-integer or out-of-range labels.
    """
    import nibabel as nib

    name = Path(pred_path).name
    try:
        pred = nib.load(str(pred_path))
    except Exception as err:  # nibabel raises many types for a file that is not NIfTI
        raise PredictionError(f"{name}: not a readable NIfTI file ({type(err).__name__}: {str(err)[:120]})") from None
    if not isinstance(pred, (nib.Nifti1Image, nib.Nifti2Image)):
        raise PredictionError(f"{name}: a {type(pred).__name__}, expected a NIfTI image")
    image = nib.load(str(image_path))
    # The header's shape is checked before any voxel is read, so a small file cannot expand to
    # more data than the input volume holds.
    if tuple(pred.shape) != tuple(image.shape):
        raise PredictionError(f"{name}: shape {tuple(pred.shape)}, the input has {tuple(image.shape)}")
    if not np.allclose(pred.affine, image.affine, atol=AFFINE_TOLERANCE):
        raise PredictionError(f"{name}: affine differs from the input's")
    if not np.issubdtype(pred.get_data_dtype(), np.integer):
        raise PredictionError(f"{name}: labels stored as {pred.get_data_dtype()}, expected integers")
    try:
        data = np.asanyarray(pred.dataobj)
    except Exception as err:
        raise PredictionError(f"{name}: voxel data cannot be read ({type(err).__name__})") from None
    if not np.issubdtype(data.dtype, np.integer):  # a scale factor in the header makes floats
        raise PredictionError(f"{name}: labels are scaled to {data.dtype}, expected plain integers")
    labels = set(np.unique(data).tolist())
    if not labels <= set(range(NUM_CLASSES)):
        raise PredictionError(f"{name}: labels {sorted(labels)} outside 0..{NUM_CLASSES - 1}")
    return data.astype(np.int32)


def check_predictions(pred_dir: Path, inputs: list[Path], refused: dict | None = None) -> list[str]:
    """Every contract problem of a predictions folder (empty list: the contract holds)."""
    problems = [f"{name}: {why}" for name, why in sorted((refused or {}).items())]
    expected = {prediction_name(p) for p in inputs}
    for image_path in inputs:
        pred_path = Path(pred_dir) / prediction_name(image_path)
        if prediction_name(image_path) in (refused or {}):
            continue
        if not pred_path.is_file():
            problems.append(f"no prediction {pred_path.name} for input {image_path.name}")
            continue
        try:
            load_prediction(pred_path, image_path)
        except PredictionError as err:
            problems.append(str(err))
    extra = sorted(p.name for p in Path(pred_dir).iterdir() if p.name.endswith(NIFTI_SUFFIXES) and p.name not in expected) \
        if Path(pred_dir).is_dir() else []
    if extra:
        problems.append(f"unexpected outputs {extra}")
    return problems


# ----------------------------------------------------------------------------- metrics
def score_predictions(pred_dir: Path, cases: list[tuple[str, Path, Path]], labels=None) -> list[dict]:
    """Per-case metrics of validated predictions against the held-out masks (mm from the masks' affines).

    Raises:
        PredictionError: a prediction is missing or breaks the contract.
    """
    import nibabel as nib

    from training.metrics import evaluate_segmentation

    results = []
    for case, image_path, mask_path in cases:
        pred_path = Path(pred_dir) / prediction_name(image_path)
        if not pred_path.is_file():
            raise PredictionError(f"no prediction {pred_path.name} for held-out case {case}")
        pred = load_prediction(pred_path, image_path)
        truth = nib.load(str(mask_path))
        spacing = tuple(float(s) for s in truth.header.get_zooms()[:3])
        truth_arr = np.rint(np.asarray(truth.dataobj)).astype(np.int32)
        results.append(evaluate_segmentation(pred, truth_arr, spacing, labels or STRUCTURES))
    return results


def agreement(dir_a: Path, dir_b: Path, inputs: list[Path], labels=None) -> float:
    """Mean Dice between two runs' label maps of the same inputs (1.0: identical segmentations).

    Raises:
        PredictionError: a prediction of either run is missing or breaks the contract.
    """
    from training.metrics import evaluate_segmentation

    values = []
    for image_path in inputs:
        maps = []
        for folder in (dir_a, dir_b):
            path = Path(folder) / prediction_name(image_path)
            if not path.is_file():
                raise PredictionError(f"no prediction {path.name} in {Path(folder).name}")
            maps.append(load_prediction(path, image_path))
        values.append(evaluate_segmentation(maps[1], maps[0], None, labels or STRUCTURES)["mean_dice"])
    return float(np.mean(values))
