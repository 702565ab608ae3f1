"""Read and write NIfTI volumes with their affine and voxel spacing, with errors that name the file.

- :func:`load_nifti` / :func:`save_nifti`: ``.nii`` and ``.nii.gz``, NIfTI-1 and NIfTI-2. Writes are
  atomic (a temporary name in the same folder, then a rename), so a crash never leaves half a file.
- :func:`to_canonical`: reorient to the closest canonical RAS+ orientation (array axes
  ``(x, y, z)`` pointing Right, Anterior, Superior), via nibabel's ``as_closest_canonical``.
- :func:`to_dhw`: the kit's in-memory layout for volumes, ``(D, H, W) = (z, y, x)``: axial slices
  along the first axis, as the models expect. Apply it after :func:`to_canonical`.
- :func:`load_image_label_pair`: load an image and its label map and check that they belong
  together (shape, affine, integer labels, finite intensities).
- :func:`check_label_values`: labels within ``0 .. num_classes - 1``.
- :func:`atomic_write`: the kit's one way to write a file so that nothing half-written is left.

Every problem raises :class:`DataError` (a ``ValueError``) with one line naming the file.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

NIFTI_SUFFIXES = (".nii.gz", ".nii")

# What nibabel, gzip and zlib raise on a corrupt or truncated file, at load or at data access.
_READ_ERRORS = (ImageFileError, OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile, MemoryError)


class DataError(ValueError):
    """A data file is missing, unreadable, or does not match what was expected."""


def atomic_write(path, write: Callable[[str], object], suffix: str = "") -> Path:
    """Write a file through a temporary name in the same folder, then rename it to ``path``.

    Readers see the old file or the new one, never half of one: a crash or an error inside
    ``write`` leaves ``path`` as it was and removes the temporary file. The file gets the mode a
    plain ``open(path, "w")`` would give it (``0666`` less the umask: ``0644`` with the usual umask
    ``022``), so teammates and markers can read what a run wrote.

    Args:
        path: destination file (``str`` or ``Path``); its folder is created if missing.
        write: called once with the temporary file name; must write the whole file there.
        suffix: ending of the temporary name, for writers that pick the format from it
            (``".nii.gz"``, ``".png"``, ``".weights.h5"``).

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(handle)
    try:
        write(tmp)
        # mkstemp creates the file 0600 (private); a writer that reopens it keeps that mode.
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` so readers see the old file or the new one, never half of it.

    Args:
        path: destination file; its folder is created if missing.
        text: the whole new content.
    """

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    return atomic_write(path, write)


def atomic_save_weights(model, path) -> Path:
    """``model.save_weights(path)`` through a temporary file and ``os.replace``.

    Keras 3 weight files hold every variable the model tracks, optimiser state included.

    Args:
        model: a built ``keras.Model``.
        path: destination ending in ``.weights.h5``.
    """
    if not str(path).endswith(".weights.h5"):
        raise ValueError(f"weights path must end with '.weights.h5' (Keras 3 rule); got {str(path)!r}")
    return atomic_write(path, model.save_weights, ".weights.h5")


def current_umask() -> int:
    """The process's file-creation mask (e.g. ``0o022``), read without changing it where possible."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    # Elsewhere the only way to read it is to set it; put it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@dataclasses.dataclass
class Volume:
    """A volume and where it sits in the world.

    Attributes:
        array: voxel values, float32 for images, int32 for label maps; shape ``(X, Y, Z)`` as stored
            in the file (or ``(D, H, W)`` after :func:`to_dhw`).
        affine: ``(4, 4)`` voxel-index -> world (mm) matrix for this array.
        spacing: voxel size in mm along each array axis (norms of the affine's columns).
        path: the file it came from, if any.
    """

    array: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, ...]
    path: Path | None = None


def spacing_from_affine(affine: np.ndarray, ndim: int = 3) -> tuple[float, ...]:
    """Voxel size in mm along each of the first ``ndim`` array axes of an affine."""
    affine = np.asarray(affine, dtype=np.float64)
    return tuple(float(v) for v in np.linalg.norm(affine[:3, :ndim], axis=0))


def _check_suffix(path: Path) -> None:
    if not path.name.endswith(NIFTI_SUFFIXES):
        raise DataError(f"{path}: not a NIfTI file name (expected a .nii or .nii.gz suffix).")


def _verify_gzip(path: Path) -> None:
    """Decompress the whole file once so gzip checks its length and CRC.

    nibabel reads only the bytes it needs and never reaches the checksum at the end, so a
    corrupted byte in the middle of a ``.nii.gz`` would otherwise load as silently wrong voxels.
    """
    with gzip.open(path, "rb") as stream:
        while stream.read(1 << 22):
            pass


def load_nifti(path, *, is_label: bool = False, squeeze: bool = True, num_classes: int | None = None) -> Volume:
    """Load a NIfTI file (``.nii``/``.nii.gz``, NIfTI-1 or NIfTI-2) with its affine and spacing.

    Args:
        path: file path.
        is_label: return an int32 label map (and check that every value is an integer) instead of
            a float32 image (checked for NaN and infinity).
        squeeze: drop trailing singleton axes beyond the third (e.g. ``(X, Y, Z, 1)``).
        num_classes: with ``is_label``, the labels must lie in ``0 .. num_classes - 1``
            (see :func:`check_label_values`).

    Returns:
        :class:`Volume` with the array in the file's voxel order.

    Raises:
        DataError: the file is missing, unreadable (permissions), corrupt or truncated, or holds
            non-integer or out-of-range labels or non-finite intensities.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; expected a NIfTI file.")
    if not path.is_file():
        raise DataError(f"{path}: file not found.")
    _check_suffix(path)
    try:
        if path.name.endswith(".gz"):
            _verify_gzip(path)
        image = nib.load(str(path))
        # Reading the data is where a truncated .nii.gz fails, so it sits inside the try.
        data = np.asanyarray(image.dataobj)
        affine = np.asarray(image.affine, dtype=np.float64)
    except PermissionError:
        raise DataError(f"{path}: permission denied (the file exists but cannot be read by this user).") from None
    except _READ_ERRORS as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"{path}: cannot read NIfTI data, the file is corrupt or truncated ({reason}).") from None
    while squeeze and data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if is_label:
        array = _as_label_array(data, path)
        if num_classes is not None:
            check_label_values(array, num_classes, path)
    else:
        array = np.asarray(data, dtype=np.float32)
        if not np.all(np.isfinite(array)):
            bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
            raise DataError(f"{path}: image contains {bad} NaN or infinite values; expected finite intensities.")
    return Volume(array=array, affine=affine, spacing=spacing_from_affine(affine, min(array.ndim, 3)), path=path)


def _as_label_array(data: np.ndarray, path: Path | None) -> np.ndarray:
    """Convert label data to int32, refusing non-integer or non-finite values."""
    name = path if path is not None else "label map"
    if np.issubdtype(data.dtype, np.integer) or data.dtype == bool:
        return np.asarray(data, dtype=np.int32)
    data = np.asarray(data, dtype=np.float64)
    if not np.all(np.isfinite(data)):
        raise DataError(f"{name}: label map contains NaN or infinite values; expected integer class labels.")
    rounded = np.rint(data)
    if not np.array_equal(rounded, data):
        examples = np.unique(data[rounded != data])[:3]
        raise DataError(
            f"{name}: label map has non-integer values (e.g. {examples.tolist()}); expected integer "
            "class labels. Was an image saved as the label, or the label resampled with interpolation?"
        )
    return rounded.astype(np.int32)


def check_label_values(labels: np.ndarray, num_classes: int, path=None) -> None:
    """Refuse a label map with values outside ``0 .. num_classes - 1``.

    A mask with label 7 (another data set's convention) or -1 (an "ignore" value) would otherwise
    train silently: one-hot encoding turns such voxels into all-zero rows.

    Args:
        labels: integer label map, any shape.
        num_classes: number of classes including background 0.
        path: the file, named in the message.

    Raises:
        DataError: naming the file, the values found and the range expected.
    """
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        found = np.unique(labels)
        bad = found[(found < 0) | (found >= num_classes)]
        raise DataError(
            f"{path if path is not None else 'label map'}: label values {bad.tolist()[:8]} are outside "
            f"0..{num_classes - 1} ({num_classes} classes); values found: {found.tolist()[:12]}."
        )


def save_nifti(array, affine, path, *, nifti2: bool = False, dtype=None) -> Path:
    """Write an array and its affine to a NIfTI file atomically.

    The compression follows the suffix (``.nii.gz`` compressed, ``.nii`` not). The file appears
    only when complete: it is written under a temporary name in the same folder and renamed.

    Args:
        array: voxel values, e.g. ``(X, Y, Z)`` or ``(D, H, W)`` (with a matching affine).
        affine: ``(4, 4)`` voxel -> world matrix in mm.
        path: destination, ending in ``.nii`` or ``.nii.gz``; parent folders are created.
        nifti2: write NIfTI-2 instead of NIfTI-1.
        dtype: on-disk dtype (default: the array's; bool is written as uint8).

    Returns:
        The path written.
    """
    path = Path(path)
    _check_suffix(path)
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise DataError(f"{path}: affine must be a 4x4 matrix, got shape {affine.shape}.")
    array = np.asarray(array)
    if dtype is not None:
        array = array.astype(dtype)
    elif array.dtype == bool:
        array = array.astype(np.uint8)
    elif array.dtype == np.int64:
        array = array.astype(np.int32)
    cls = nib.Nifti2Image if nifti2 else nib.Nifti1Image
    image = cls(array, affine)
    image.header.set_xyzt_units("mm")
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    return atomic_write(path, lambda tmp: nib.save(image, tmp), suffix)


def to_canonical(volume: Volume) -> Volume:
    """Reorient a volume to the closest canonical RAS+ orientation (array axes x=R, y=A, z=S).

    Only flips and axis permutations are applied (no resampling), so values are unchanged.

    Args:
        volume: a 3D :class:`Volume`.

    Returns:
        A new :class:`Volume` whose affine's rotation part is diagonal-positive (up to obliquity).
    """
    if volume.array.ndim < 3:
        raise DataError(f"{volume.path or 'volume'}: to_canonical needs a 3D array, got shape {volume.array.shape}.")
    image = nib.Nifti1Image(volume.array, volume.affine)
    canonical = nib.as_closest_canonical(image)
    array = np.asanyarray(canonical.dataobj).astype(volume.array.dtype, copy=False)
    affine = np.asarray(canonical.affine, dtype=np.float64)
    return Volume(array=array, affine=affine, spacing=spacing_from_affine(affine), path=volume.path)


def to_dhw(volume: Volume) -> Volume:
    """Transpose a ``(x, y, z)`` volume to the kit's ``(D, H, W) = (z, y, x)`` layout.

    The affine's columns are permuted to match, so the result still maps each voxel to the same
    world position and can be saved as a valid NIfTI file as it is.
    """
    array = np.transpose(volume.array, (2, 1, 0) + tuple(range(3, volume.array.ndim)))
    affine = volume.affine[:, [2, 1, 0, 3]]
    return Volume(array=np.ascontiguousarray(array), affine=affine, spacing=spacing_from_affine(affine), path=volume.path)


def dhw_affine(shape, spacing) -> np.ndarray:
    """Affine for a ``(D, H, W) = (z, y, x)`` array with the volume's centre at world (0, 0, 0).

    Args:
        shape: ``(D, H, W)``.
        spacing: ``(sz, sy, sx)`` in mm.

    Returns:
        ``(4, 4)`` float64 matrix: index ``(d, h, w)`` -> RAS+ world ``(x, y, z)`` in mm.
    """
    sz, sy, sx = (float(s) for s in spacing)
    d, h, w = (int(n) for n in shape)
    affine = np.zeros((4, 4))
    affine[0, 2], affine[1, 1], affine[2, 0], affine[3, 3] = sx, sy, sz, 1.0
    affine[:3, 3] = -0.5 * np.array([(w - 1) * sx, (h - 1) * sy, (d - 1) * sz])
    return affine


def load_image_label_pair(
    image_path,
    label_path,
    *,
    canonical: bool = True,
    affine_tol: float = 1e-3,
    num_classes: int | None = None,
) -> tuple[Volume, Volume]:
    """Load an image and its label map and check that they describe the same voxels.

    Args:
        image_path: image NIfTI file.
        label_path: label NIfTI file (integer class per voxel).
        canonical: reorient both to RAS+ (:func:`to_canonical`).
        affine_tol: largest allowed absolute difference (mm) between the two affines.
        num_classes: if given, labels must lie in ``0 .. num_classes - 1``.

    Returns:
        ``(image, label)`` volumes: float32 image, int32 label.

    Raises:
        DataError: either file missing or corrupt, shapes differ, affines differ, labels are not
            integers (or outside ``0 .. num_classes - 1``), or the image holds NaN/infinity.
    """
    image = load_nifti(image_path)
    label = load_nifti(label_path, is_label=True, num_classes=num_classes)
    if image.array.shape[:3] != label.array.shape[:3]:
        raise DataError(
            f"{label.path}: label shape {label.array.shape} does not match image {image.path} shape {image.array.shape}."
        )
    if not np.allclose(image.affine, label.affine, atol=affine_tol, rtol=0):
        diff = float(np.max(np.abs(image.affine - label.affine)))
        raise DataError(
            f"{label.path}: label affine differs from image {image.path} affine by up to {diff:.4g} mm "
            f"(tolerance {affine_tol} mm); they are not aligned."
        )
    if canonical:
        image, label = to_canonical(image), to_canonical(label)
    return image, label
