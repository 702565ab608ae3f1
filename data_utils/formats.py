"""File formats beyond NIfTI: MedMNIST ``.npz``, h5 frames, PNG/JPEG slices and DICOM series.

- **MedMNIST-style npz** (:func:`load_npz`, :func:`save_npz`, :func:`npz_dataset`): one file with
  ``train_images``, ``train_labels``, ``val_images``, ... arrays. Images come back float32
  channels-last (``(N, H, W, C)`` or ``(N, D, H, W, C)``) scaled to ``[0, 1]`` when stored as uint8;
  labels int32, ``(N,)`` for one label per image and ``(N, T)`` for multi-label tasks.
- **h5 files** (:func:`load_h5_arrays`, :func:`load_h5_frames`, :func:`save_h5_frames`): named arrays, or the layout
  of the course's ultrasound data: one dataset per frame, ``frame_<case>_<frame>``, and one per
  label and observer, ``label_<case>_<frame>_<observer>`` (e.g. ``frame_0003_012``,
  ``label_0003_012_01``).
- **PNG/JPEG** (:func:`read_image`, :func:`read_label_image`, :func:`read_slices`,
  :func:`write_image`): through Pillow; images float32 in ``[0, 1]``, label images int32.
- **DICOM series** (:func:`read_dicom_series`): optional, through ``pydicom`` (``pip install
  pydicom``), imported only when called. Returns an :class:`data_utils.io.Volume` with a RAS+
  affine, so :func:`data_utils.io.to_canonical` and :func:`data_utils.io.to_dhw` work as for NIfTI.
- :func:`arrays_dataset`: any dict of equal-length arrays -> a batched, shuffled, seeded
  ``tf.data.Dataset`` of dict elements (what the npz and h5 loaders feed).

Every problem raises :class:`data_utils.io.DataError` naming the file and what was expected.
Writes are atomic (a temporary name in the same folder, then a rename).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from data_utils.io import DataError, Volume, atomic_write, spacing_from_affine

MEDMNIST_SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _require_file(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found.")
    return path


def _scale_intensities(array: np.ndarray) -> np.ndarray:
    """Integer images -> float32 in ``[0, 1]`` by their type's range; float images unchanged."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if array.dtype == bool:
        return array.astype(np.float32)
    return array.astype(np.float32)


# --------------------------------------------------------------------------------------------
# MedMNIST-style npz
# --------------------------------------------------------------------------------------------


def _medmnist_images(images: np.ndarray, path: Path, key: str, rank: int | None) -> np.ndarray:
    """Add the channel axis MedMNIST leaves out for grey images: (N, H, W) -> (N, H, W, 1)."""
    if rank is None:
        # MedMNIST 2D: (N, H, W) grey or (N, H, W, 3) RGB; 3D: (N, D, H, W) grey.
        rank = 2 if images.ndim == 3 or (images.ndim == 4 and images.shape[-1] in (1, 3, 4)) else 3
    if images.ndim == rank + 1:
        images = images[..., None]
    if images.ndim != rank + 2:
        raise DataError(
            f"{path}: '{key}' has shape {images.shape}; expected (N, H, W[, C]) for 2D or (N, D, H, W[, C]) for 3D images."
        )
    return images


def load_npz(path, splits: Sequence[str] = MEDMNIST_SPLITS, *, rank: int | None = None, scale: bool = True) -> dict[str, dict[str, np.ndarray]]:
    """Load a MedMNIST-style ``.npz`` with ``<split>_images`` and ``<split>_labels`` arrays.

    Args:
        path: the ``.npz`` file.
        splits: which splits to load (all must be present).
        rank: spatial rank of the images (2 or 3); ``None`` guesses it (a 4D array whose last axis is
            1, 3 or 4 is taken as 2D channels-last, any other 4D array as 3D grey volumes).
        scale: divide uint8 images by 255 (uint16 by 65535) to get ``[0, 1]``.

    Returns:
        ``{split: {"image": float32 (N, *spatial, C), "label": int32 (N,) or (N, T)}}``.

    Raises:
        DataError: missing file or keys (the message lists the keys found), different numbers of
            images and labels, or non-integer labels.
    """
    path = _require_file(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: cannot read as an .npz archive ({error}).") from None
    with archive:
        found = sorted(archive.files)
        out = {}
        for split in splits:
            image_key, label_key = f"{split}_images", f"{split}_labels"
            missing = [k for k in (image_key, label_key) if k not in found]
            if missing:
                raise DataError(f"{path}: missing {missing}; expected '<split>_images' and '<split>_labels' for splits {list(splits)}, found {found}.")
            images, labels = archive[image_key], archive[label_key]
            if len(images) != len(labels):
                raise DataError(f"{path}: {len(images)} {image_key} but {len(labels)} {label_key}; expected one label row per image.")
            images = _medmnist_images(images, path, image_key, rank)
            images = _scale_intensities(images) if scale else images.astype(np.float32)
            if not np.issubdtype(labels.dtype, np.integer):
                if not np.array_equal(labels, np.round(labels)):
                    raise DataError(f"{path}: '{label_key}' holds non-integer values; expected class indices.")
            labels = labels.astype(np.int32)
            if labels.ndim == 2 and labels.shape[1] == 1:
                labels = labels[:, 0]  # MedMNIST stores single labels as (N, 1)
            out[split] = {"image": images, "label": labels}
    return out


def save_npz(path, splits: dict[str, dict[str, np.ndarray]], *, compressed: bool = True) -> Path:
    """Write ``{split: {"image": ..., "label": ...}}`` as a MedMNIST-style ``.npz``, atomically.

    Args:
        path: destination ``.npz`` file (parent folders are created).
        splits: arrays per split, e.g. from a synthetic generator; written as ``<split>_images`` and
            ``<split>_labels``.
        compressed: use ``np.savez_compressed``.

    Returns:
        The path written.
    """
    path = Path(path)
    arrays = {}
    for split, data in splits.items():
        if "image" not in data or "label" not in data:
            raise DataError(f"{path}: split '{split}' needs 'image' and 'label' arrays, got {sorted(data)}.")
        arrays[f"{split}_images"] = np.asarray(data["image"])
        arrays[f"{split}_labels"] = np.asarray(data["label"])
    save = np.savez_compressed if compressed else np.savez

    def write(tmp):
        with open(tmp, "wb") as stream:  # a file object: numpy would otherwise append ".npz"
            save(stream, **arrays)

    return atomic_write(path, write, ".npz")


def npz_dataset(path, split: str, batch_size: int, **kwargs):
    """A ``tf.data`` pipeline of one split of a MedMNIST-style ``.npz`` (see :func:`arrays_dataset`).

    Returns:
        Dataset of ``{"image": (B, *spatial, C) float32, "label": (B,) or (B, T) int32}``.
    """
    rank = kwargs.pop("rank", None)
    data = load_npz(path, splits=(split,), rank=rank)[split]
    return arrays_dataset(data, batch_size, **kwargs)


def arrays_dataset(
    arrays: dict[str, np.ndarray],
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    augment: Callable | None = None,
    drop_remainder: bool = False,
    repeat: bool = False,
):
    """A batched ``tf.data`` pipeline of dict elements from equal-length arrays.

    Args:
        arrays: e.g. ``{"image": (N, H, W, C), "label": (N,)}``; every array has ``N`` rows.
        batch_size: elements per batch.
        shuffle: reshuffle every epoch (seeded, over the whole set).
        seed: shuffle and augmentation seed.
        augment: optional per-batch augmentation, as in :func:`data_utils.datasets.slice_dataset`.
        drop_remainder: drop a last, smaller batch.
        repeat: repeat forever (then pass ``steps_per_epoch`` to ``fit``).

    Returns:
        Dataset of dicts with the same keys, each batched ``(B, ...)``.
    """
    import tensorflow as tf

    from data_utils import datasets  # the kit's shuffle/batch/augment/prefetch tail, shared

    if not arrays:
        raise ValueError("`arrays` is empty: nothing to build a dataset from.")
    lengths = {key: len(value) for key, value in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"arrays must have the same number of rows, got {lengths}.")
    n = next(iter(lengths.values()))
    if n == 0:
        raise ValueError("arrays have no rows: nothing to build a dataset from.")
    ds = tf.data.Dataset.from_tensor_slices({k: np.asarray(v) for k, v in arrays.items()})
    return datasets._finish(
        ds, batch_size, shuffle=shuffle, seed=seed, shuffle_buffer=n,
        augment=augment, drop_remainder=drop_remainder, repeat=repeat,
    )


# --------------------------------------------------------------------------------------------
# h5
# --------------------------------------------------------------------------------------------


def _open_h5(path):
    import h5py

    path = _require_file(path)
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise DataError(f"{path}: cannot read as an HDF5 file ({error}).") from None


def load_h5_arrays(path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Read named datasets (whole arrays) from an h5 file.

    Args:
        path: the ``.h5`` file.
        keys: dataset names, e.g. ``("frames", "labels")`` (groups as ``"group/name"``).

    Returns:
        ``{key: array}`` with the stored dtypes.

    Raises:
        DataError: missing file or key (the message lists the top-level keys found).
    """
    with _open_h5(path) as f:
        missing = [k for k in keys if k not in f]
        if missing:
            raise DataError(f"{path}: missing datasets {missing}; found {sorted(f.keys())[:20]}.")
        return {k: np.asarray(f[k][()]) for k in keys}


_FRAME_NAME = re.compile(r"^frame_(\d+)_(\d+)$")
_LABEL_NAME = re.compile(r"^label_(\d+)_(\d+)_(\d+)$")


def load_h5_frames(path, *, scale: bool = True) -> dict[str, np.ndarray]:
    """Read an h5 file of per-frame datasets ``frame_<case>_<frame>`` and ``label_<case>_<frame>_<observer>``.

    This is the layout of the course's ultrasound data: every frame of every case is one 2D dataset,
    with one label map per observer. Frames and labels are returned in (case, frame) order.

    Args:
        path: the ``.h5`` file.
        scale: divide uint8 frames by 255.

    Returns:
        dict with ``image`` float32 ``(N, H, W, 1)``, ``label`` int32 ``(N, R, H, W)`` (``R`` observers;
        absent when the file has no labels), ``case`` int32 ``(N,)`` and ``frame`` int32 ``(N,)``.

    Raises:
        DataError: no frame datasets, frames of different shapes, a frame without labels (or with a
            different number of observers than the others), or a label whose shape differs from its frame.
    """
    with _open_h5(path) as f:
        frames, labels = {}, {}
        for name in f.keys():
            if (match := _FRAME_NAME.match(name)) is not None:
                frames[(int(match[1]), int(match[2]))] = name
            elif (match := _LABEL_NAME.match(name)) is not None:
                labels.setdefault((int(match[1]), int(match[2])), {})[int(match[3])] = name
        if not frames:
            raise DataError(f"{path}: no datasets named 'frame_<case>_<frame>' (e.g. frame_0000_000); found {sorted(f.keys())[:10]}.")
        keys = sorted(frames)
        images = [np.asarray(f[frames[k]][()]) for k in keys]
        shapes = {im.shape for im in images}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise DataError(f"{path}: frames must all be 2D arrays of one shape, found shapes {sorted(shapes)[:5]}.")
        out = {
            "image": (_scale_intensities(np.stack(images)) if scale else np.stack(images).astype(np.float32))[..., None],
            "case": np.array([k[0] for k in keys], np.int32),
            "frame": np.array([k[1] for k in keys], np.int32),
        }
        if labels:
            observers = {tuple(sorted(labels.get(k, {}))) for k in keys}
            if len(observers) != 1 or () in observers:
                missing = [frames[k] for k in keys if k not in labels][:3]
                raise DataError(
                    f"{path}: every frame needs the same observers' labels 'label_<case>_<frame>_<observer>'; "
                    f"found observer sets {sorted(observers)[:3]}" + (f", frames without labels e.g. {missing}" if missing else "") + "."
                )
            stack = []
            for k in keys:
                maps = [np.asarray(f[labels[k][o]][()]) for o in sorted(labels[k])]
                if any(m.shape != images[0].shape for m in maps):
                    raise DataError(f"{path}: labels of {frames[k]} have shapes {[m.shape for m in maps]}, expected {images[0].shape}.")
                stack.append(np.stack(maps))
            out["label"] = np.stack(stack).astype(np.int32)
    return out


def save_h5_frames(path, image, label=None, case=None, frame=None) -> Path:
    """Write frames (and per-observer labels) in the course's h5 layout, atomically.

    The inverse of :func:`load_h5_frames`: dataset ``frame_<case>_<frame>`` per frame and
    ``label_<case>_<frame>_<observer>`` per label map. Handy to export synthetic data (e.g. from
    :func:`data_utils.synthetic.make_ultrasound_dataset`) in the layout the real data uses.

    Args:
        path: destination ``.h5`` file.
        image: ``(N, H, W)`` or ``(N, H, W, 1)``; uint8 is kept, floats in ``[0, 1]`` become uint8.
        label: optional ``(N, R, H, W)`` (or ``(N, H, W)`` for one observer) integer label maps.
        case, frame: ``(N,)`` case and frame indices (default: one case, frames ``0..N-1``).

    Returns:
        The path written.
    """
    import h5py

    path = Path(path)
    image = np.asarray(image)
    if image.ndim == 4 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim != 3:
        raise DataError(f"{path}: expected frames (N, H, W[, 1]), got shape {image.shape}.")
    n = len(image)
    if image.dtype != np.uint8:
        image = np.clip(np.rint(image.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    case = np.zeros(n, int) if case is None else np.asarray(case)
    frame = np.arange(n) if frame is None else np.asarray(frame)
    if label is not None:
        label = np.asarray(label)
        label = label[:, None] if label.ndim == 3 else label
        if label.shape[0] != n or label.shape[2:] != image.shape[1:]:
            raise DataError(f"{path}: labels {label.shape} do not match frames {image.shape}; expected (N, R, H, W).")
    if len(case) != n or len(frame) != n or len(set(zip(case.tolist(), frame.tolist(), strict=True))) != n:
        raise DataError(f"{path}: `case` and `frame` need {n} entries each and every (case, frame) pair once.")

    def write(tmp):
        with h5py.File(tmp, "w") as f:
            for i in range(n):
                f.create_dataset(f"frame_{case[i]:04d}_{frame[i]:03d}", data=image[i])
                if label is not None:
                    for observer in range(label.shape[1]):
                        f.create_dataset(f"label_{case[i]:04d}_{frame[i]:03d}_{observer:02d}", data=label[i, observer].astype(np.uint8))

    return atomic_write(path, write, ".h5")


# --------------------------------------------------------------------------------------------
# PNG / JPEG
# --------------------------------------------------------------------------------------------


def _open_image(path):
    from PIL import Image, UnidentifiedImageError

    path = _require_file(path)
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(f"{path}: cannot read as an image ({error}).") from None
    return image


def read_image(path, grayscale: bool = True) -> np.ndarray:
    """Read a PNG/JPEG/TIFF image as float32 channels-last.

    Args:
        path: image file.
        grayscale: convert colour to one grey channel; False keeps RGB (grey images get 3 equal channels).

    Returns:
        float32 ``(H, W, 1)`` (or ``(H, W, 3)``), in ``[0, 1]`` for 8- and 16-bit files.
    """
    image = _open_image(path)
    if grayscale:
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            array = np.asarray(image)
            return (array.astype(np.float32) / (65535.0 if array.max() > 255 or image.mode.startswith("I;16") else 255.0))[..., None]
        return np.asarray(image.convert("L"), np.float32)[..., None] / 255.0
    return np.asarray(image.convert("RGB"), np.float32) / 255.0


def read_label_image(path) -> np.ndarray:
    """Read a label map stored as an image (grey or palette PNG): int32 ``(H, W)`` class values.

    Raises:
        DataError: the image is RGB (colours are not class indices: save labels as grey or palette
            PNG), or it is a lossy JPEG.
    """
    path = Path(path)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        raise DataError(f"{path}: JPEG compression changes label values; store label maps as PNG.")
    image = _open_image(path)
    if image.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L", "1"):
        raise DataError(f"{path}: label image has mode {image.mode}; expected a grey or palette PNG of class indices.")
    return np.asarray(image).astype(np.int32)


def _natural_key(path: Path):
    """Sort ``slice2`` before ``slice10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def read_slices(source, pattern: str = "*.png", grayscale: bool = True, label: bool = False) -> np.ndarray:
    """Stack 2D image files (a folder of slices, in natural name order) into a volume.

    Args:
        source: folder (files matching ``pattern``) or a list of files (kept in the given order).
        pattern: glob for a folder.
        grayscale: see :func:`read_image`.
        label: read as label maps (int32) instead of images.

    Returns:
        ``(D, H, W)`` int32 for labels, float32 ``(D, H, W, C)`` for images.
    """
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        if not folder.is_dir():
            raise DataError(f"{folder}: slice folder not found.")
        paths = sorted(folder.glob(pattern), key=_natural_key)
        if not paths:
            raise DataError(f"{folder}: no files matching '{pattern}'.")
    else:
        paths = [Path(p) for p in source]
        if not paths:
            raise DataError("read_slices: empty list of slice files.")
    slices = [read_label_image(p) if label else read_image(p, grayscale) for p in paths]
    shapes = {s.shape for s in slices}
    if len(shapes) != 1:
        raise DataError(f"{paths[0].parent}: slices differ in shape {sorted(shapes)[:4]}; expected one shape.")
    return np.stack(slices)


def write_image(path, array, *, label: bool = False) -> Path:
    """Write a 2D image (float in ``[0, 1]`` -> 8-bit) or label map (integers 0-255) as PNG/JPEG, atomically.

    Args:
        path: destination (``.png``, ``.jpg``, ...).
        array: ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)``.
        label: write integer class values unchanged (PNG only) instead of scaling intensities.

    Returns:
        The path written.
    """
    from PIL import Image

    path = Path(path)
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3):
        raise DataError(f"{path}: expected an (H, W[, C]) array, got shape {array.shape}.")
    if label:
        if path.suffix.lower() != ".png":
            raise DataError(f"{path}: label maps must be written as .png (lossless).")
        if array.min() < 0 or array.max() > 255:
            raise DataError(f"{path}: label values must be in [0, 255] for an 8-bit PNG, got [{array.min()}, {array.max()}].")
        pixels = array.astype(np.uint8)
    elif array.dtype == np.uint8:
        pixels = array
    else:
        pixels = np.clip(np.rint(np.asarray(array, np.float64) * 255.0), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    image_format = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), path.suffix.lstrip(".").upper() or "PNG")
    return atomic_write(path, lambda tmp: image.save(tmp, format=image_format), path.suffix)


# --------------------------------------------------------------------------------------------
# DICOM (optional)
# --------------------------------------------------------------------------------------------


def _import_pydicom():
    try:
        import pydicom
    except ImportError:
        raise ImportError("reading DICOM needs the optional package pydicom: pip install pydicom") from None
    return pydicom


def read_dicom_series(folder, pattern: str = "*") -> Volume:
    """Read one DICOM series (a folder of single-slice files) into a volume with a RAS+ affine.

    Slices are ordered by their position along the slice normal (``ImagePositionPatient`` projected
    on the cross product of the ``ImageOrientationPatient`` cosines), not by file name; intensities
    are rescaled with ``RescaleSlope``/``RescaleIntercept`` (Hounsfield units for CT). DICOM's LPS
    patient coordinates are converted to the RAS+ world of NIfTI.

    Args:
        folder: folder holding the series' files (other files that are not DICOM are skipped).
        pattern: glob for the files to consider.

    Returns:
        :class:`data_utils.io.Volume`: ``array`` float32 ``(X, Y, Z)`` = (column, row, slice),
        ``affine`` voxel -> RAS mm, ``spacing``, ``path`` the folder. Use ``io.to_canonical`` and
        ``io.to_dhw`` for the kit's ``(D, H, W)`` layout.

    Raises:
        ImportError: pydicom is not installed.
        DataError: no readable DICOM slices, several series mixed in the folder, slices of different
            sizes or orientations, or two slices at the same position.
    """
    pydicom = _import_pydicom()
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: DICOM folder not found.")
    slices = []
    for path in sorted(p for p in folder.glob(pattern) if p.is_file()):
        try:
            ds = pydicom.dcmread(path)
        except Exception:  # noqa: BLE001 - pydicom raises many types for files that are not DICOM
            continue
        if "PixelData" in ds:
            slices.append((path, ds))
    if not slices:
        raise DataError(f"{folder}: no DICOM files with pixel data found.")
    series = {str(getattr(ds, "SeriesInstanceUID", "")) for _, ds in slices}
    if len(series) > 1:
        raise DataError(f"{folder}: holds {len(series)} DICOM series; expected one (put each series in its own folder).")
    try:
        orientation = np.array([float(v) for v in slices[0][1].ImageOrientationPatient])
        row_spacing, column_spacing = (float(v) for v in slices[0][1].PixelSpacing)
    except AttributeError as error:
        raise DataError(f"{slices[0][0]}: missing geometry ({error}); expected ImageOrientationPatient and PixelSpacing.") from None
    row_cosine, column_cosine = orientation[:3], orientation[3:]
    normal = np.cross(row_cosine, column_cosine)
    for path, ds in slices:
        if not np.allclose([float(v) for v in ds.ImageOrientationPatient], orientation, atol=1e-4):
            raise DataError(f"{path}: slice orientation differs from the rest of the series.")
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for _, ds in slices])
    order = np.argsort(positions @ normal)
    slices = [slices[i] for i in order]
    positions = positions[order]
    if len(slices) > 1 and np.min(np.diff(positions @ normal)) < 1e-4:
        raise DataError(f"{folder}: two slices share one position; expected one slice per position (duplicate files?).")
    arrays = []
    for path, ds in slices:
        pixels = ds.pixel_array.astype(np.float32)
        if pixels.ndim != 2:
            raise DataError(f"{path}: expected a single 2D slice, got pixel data of shape {pixels.shape}.")
        slope, intercept = float(getattr(ds, "RescaleSlope", 1.0)), float(getattr(ds, "RescaleIntercept", 0.0))
        arrays.append(pixels * slope + intercept)
    if len({a.shape for a in arrays}) != 1:
        raise DataError(f"{folder}: slices differ in size {sorted({a.shape for a in arrays})}.")
    # pixel_array is (rows, columns); the volume is (column i, row j, slice k).
    volume = np.stack([a.T for a in arrays], axis=-1)
    step = (positions[-1] - positions[0]) / (len(slices) - 1) if len(slices) > 1 else normal * float(
        getattr(slices[0][1], "SliceThickness", 1.0) or 1.0)
    affine = np.eye(4)
    affine[:3, 0] = row_cosine * column_spacing
    affine[:3, 1] = column_cosine * row_spacing
    affine[:3, 2] = step
    affine[:3, 3] = positions[0]
    affine[:2] *= -1  # LPS (DICOM) -> RAS (NIfTI)
    return Volume(array=volume, affine=affine, spacing=spacing_from_affine(affine), path=folder)
