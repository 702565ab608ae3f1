"""From a folder of NIfTI image/label pairs to ``tf.data`` pipelines of 2D slices, 3D patches or volumes.

The path a dataset takes through this module::

    cases = find_cases("data/pelvic")                       # [Case(case_id, image_path, label_path)]
    split = split_cases(cases, val_fraction=0.15, test_fraction=0.15, seed=0)
    train = load_cases(split["train"])                      # [dict(image, label, spacing, affine, case_id)]
    ds = slice_dataset(train, batch_size=16, shuffle=True, seed=0)
    model.fit(ds.map(to_xy), ...)

- Splits are **by case, never by slice**: slices of one patient are strongly correlated, and a
  test slice whose neighbour was trained on measures memory, not generalisation.
- Loaded volumes use the kit's ``(D, H, W) = (z, y, x)`` layout (RAS+ reoriented, then
  transposed; see ``data_utils.io.to_dhw``), z-scored images and int32 labels.
- Dataset elements are dicts: ``{"image": (B, H, W, 1) float32, "label": (B, H, W) int32,
  "case_id": (B,) string}`` for slices (``(B, D, H, W, 1)`` / ``(B, D, H, W)`` for patches and
  volumes). :func:`to_xy` makes the ``(x, y)`` tuple ``fit()`` wants, at the very end.
- Randomness is seeded: the shuffle order, patch positions and augmentation seeds are the same
  on every run with the same ``seed``, and different from batch to batch and epoch to epoch.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from data_utils import augment as augment_lib
from data_utils import io, preprocess
from data_utils.io import DataError

AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class Case:
    """One patient: an image file and, for labelled data, its label file.

    Attributes:
        case_id: the file name without the image suffix and extension, e.g. ``"case000"``.
        image_path: the image NIfTI file.
        label_path: the label NIfTI file, or ``None`` for unlabelled data.
    """

    case_id: str
    image_path: Path
    label_path: Path | None = None


def _strip_nifti(name: str) -> tuple[str, str] | None:
    for ext in io.NIFTI_SUFFIXES:
        if name.endswith(ext):
            return name[: -len(ext)], ext
    return None


def find_cases(
    folder,
    image_suffix: str = "_img",
    label_suffix: str = "_mask",
    require_labels: bool = True,
) -> list[Case]:
    """List the image/label pairs in a folder, e.g. ``case000_img.nii.gz`` + ``case000_mask.nii.gz``.

    Args:
        folder: folder holding the NIfTI files (not searched recursively).
        image_suffix: what ends an image file's name before ``.nii``/``.nii.gz``.
        label_suffix: what ends a label file's name.
        require_labels: raise if a case has no label file (otherwise its ``label_path`` is None).

    Returns:
        Cases sorted by ``case_id``.

    Raises:
        DataError: the folder is missing or holds no image files, or a label file is missing.
    """
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"{folder}: data folder not found.")
    if not folder.is_dir():
        raise DataError(f"{folder}: expected a folder of NIfTI files, found a file.")
    cases = []
    for path in sorted(folder.iterdir()):
        parsed = _strip_nifti(path.name)
        if parsed is None or not parsed[0].endswith(image_suffix) or path.name.startswith("."):
            continue
        case_id = parsed[0][: len(parsed[0]) - len(image_suffix)]
        candidates = [folder / f"{case_id}{label_suffix}{ext}" for ext in (parsed[1],) + io.NIFTI_SUFFIXES]
        label_path = next((c for c in candidates if c.is_file()), None)
        if label_path is None and require_labels:
            raise DataError(
                f"{candidates[0]}: label file missing for image {path.name} "
                f"(expected '<case>{label_suffix}{parsed[1]}')."
            )
        cases.append(Case(case_id=case_id, image_path=path, label_path=label_path))
    if not cases:
        raise DataError(f"{folder}: no image files named '*{image_suffix}.nii.gz' or '*{image_suffix}.nii' found.")
    return cases


def _rank_key(case_id: str, seed: int) -> str:
    """A per-case pseudo-random sort key that does not depend on the other cases."""
    return hashlib.sha256(f"{seed}:{case_id}".encode()).hexdigest()


def _ranked(cases: Sequence[Case], seed: int) -> list[Case]:
    ids = [c.case_id for c in cases]
    if len(set(ids)) != len(ids):
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        raise DataError(f"duplicate case ids {duplicates[:5]}: every case needs a unique id.")
    return sorted(cases, key=lambda c: _rank_key(c.case_id, seed))


def split_cases(
    cases: Sequence[Case],
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> dict[str, list[Case]]:
    """Split cases (never slices) into train/val/test, deterministically from ``seed``.

    Cases are ordered by a hash of ``(seed, case_id)``; the first ``round(n * test_fraction)`` are
    test, the next ``round(n * val_fraction)`` validation, the rest training. The order of a case
    depends only on its own id, so adding cases moves at most a few cases between sets (a plain
    shuffle would reshuffle everything). A non-zero fraction always gets at least one case.

    Args:
        cases: cases from :func:`find_cases`.
        val_fraction, test_fraction: fractions in ``[0, 1)`` with a sum below 1.
        seed: split seed.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each sorted by ``case_id``.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"`{name}` must be in [0, 1), got {value}.")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be < 1 to leave training cases, got {val_fraction + test_fraction}.")
    ranked = _ranked(cases, seed)
    n = len(ranked)

    def count(fraction):
        return 0 if fraction == 0 else max(1, int(round(n * fraction)))

    n_test, n_val = count(test_fraction), count(val_fraction)
    if n - n_test - n_val < 1:
        raise ValueError(f"{n} cases are too few for val_fraction={val_fraction} and test_fraction={test_fraction}.")
    by_id = lambda group: sorted(group, key=lambda c: c.case_id)  # noqa: E731
    return {
        "train": by_id(ranked[n_test + n_val :]),
        "val": by_id(ranked[n_test : n_test + n_val]),
        "test": by_id(ranked[:n_test]),
    }


def kfold_cases(cases: Sequence[Case], k: int, fold: int, seed: int = 0) -> dict[str, list[Case]]:
    """Case-level k-fold cross-validation: fold ``fold`` of ``k`` is validation, the rest training.

    Hold the test set out first (:func:`split_cases`) and cross-validate on the rest. Every case is
    in exactly one validation fold over ``fold = 0 .. k-1``; fold sizes differ by at most one.

    Returns:
        ``{"train": [...], "val": [...]}`` sorted by ``case_id``.
    """
    if int(k) < 2:
        raise ValueError(f"`k` must be >= 2, got {k}.")
    if not 0 <= int(fold) < int(k):
        raise ValueError(f"`fold` must be in [0, {k}), got {fold}.")
    if len(cases) < k:
        raise ValueError(f"{len(cases)} cases are too few for {k}-fold cross-validation.")
    ranked = _ranked(cases, seed)
    val = [c for i, c in enumerate(ranked) if i % k == fold]
    train = [c for i, c in enumerate(ranked) if i % k != fold]
    return {"train": sorted(train, key=lambda c: c.case_id), "val": sorted(val, key=lambda c: c.case_id)}


def load_cases(
    cases: Sequence[Case],
    *,
    normalize: str | None = "zscore",
    canonical: bool = True,
    verbose: bool = False,
    num_classes: int | None = None,
) -> list[dict]:
    """Load cases into memory as dicts in the kit's ``(D, H, W)`` layout.

    Args:
        cases: cases from :func:`find_cases` / :func:`split_cases`.
        normalize: ``"zscore"`` (whole volume), ``"zscore_nonzero"`` (statistics over non-zero
            voxels, for skull-stripped or masked images) or ``None`` (raw intensities).
        canonical: reorient to RAS+ before transposing to ``(D, H, W) = (z, y, x)``.
        verbose: print one line per case.
        num_classes: if given, every label map must hold only ``0 .. num_classes - 1`` (a mask
            with label 7 or -1 stops here, naming the file and the values found).

    Returns:
        List of dicts: ``image`` float32 ``(D, H, W)``, ``label`` int32 ``(D, H, W)`` (absent for
        unlabelled cases), ``spacing`` float tuple ``(sz, sy, sx)`` mm, ``affine`` ``(4, 4)`` for the
        ``(D, H, W)`` array (save predictions with it), ``case_id`` str.

    Raises:
        DataError: from ``data_utils.io`` (missing/corrupt file, mismatched pair, bad labels).
    """
    _check_normalize(normalize)
    volumes = []
    for index, case in enumerate(cases):
        image, label = _load_case(case, num_classes)
        # Checked before reorienting, so the message shows the shape as stored in the file.
        if image.array.ndim != 3:
            raise DataError(f"{case.image_path}: expected a 3D volume, got shape {image.array.shape}.")
        volumes.append(_case_volume(case, image, label, normalize=normalize, canonical=canonical))
        if verbose:
            print(f"loaded {case.case_id} ({index + 1}/{len(cases)}) shape {volumes[-1]['image'].shape}", flush=True)
    return volumes


def _check_normalize(normalize) -> None:
    if normalize not in ("zscore", "zscore_nonzero", None):
        raise ValueError(f"`normalize` must be 'zscore', 'zscore_nonzero' or None, got {normalize!r}.")


def _load_case(case: Case, num_classes: int | None) -> tuple[io.Volume, io.Volume | None]:
    """A case's image and label (``None`` when unlabelled), as stored; the pair checked as in ``io``."""
    if case.label_path is None:
        return io.load_nifti(case.image_path), None
    return io.load_image_label_pair(case.image_path, case.label_path, canonical=False, num_classes=num_classes)


def _case_volume(case: Case, image: io.Volume, label: io.Volume | None, *, normalize, canonical: bool) -> dict:
    """The in-memory dict of a case from its 3D ``image`` and ``label``: reoriented, ``(D, H, W)``, normalised.

    The one place where loaders (``load_cases``, ``layouts.load_decathlon``) turn volumes into the
    kit's dataset element, so every loader gives the same keys, dtypes and orientation.
    """
    if canonical:
        image = io.to_canonical(image)
        label = io.to_canonical(label) if label is not None else None
    image = io.to_dhw(image)
    array = image.array
    if normalize is not None:
        array = preprocess.zscore(array, nonzero=normalize == "zscore_nonzero")
    volume = {
        "image": array.astype(np.float32),
        "spacing": tuple(image.spacing),
        "affine": image.affine,
        "case_id": case.case_id,
    }
    if label is not None:
        volume["label"] = io.to_dhw(label).array.astype(np.int32)
    return volume


# --------------------------------------------------------------------------------------------
# tf.data pipelines
# --------------------------------------------------------------------------------------------


def _check_volumes(volumes: Sequence[dict], need_label: bool = True) -> None:
    if len(volumes) == 0:
        raise ValueError("`volumes` is empty: nothing to build a dataset from.")
    for v in volumes:
        if "image" not in v or (need_label and "label" not in v):
            raise ValueError(f"volume {v.get('case_id', '?')} needs 'image' and 'label' arrays (see load_cases).")
        if np.ndim(v["image"]) != 3:
            raise ValueError(f"volume {v.get('case_id', '?')}: image must be (D, H, W), got shape {np.shape(v['image'])}.")
        if need_label and np.shape(v["label"]) != np.shape(v["image"]):
            raise ValueError(
                f"volume {v.get('case_id', '?')}: label shape {np.shape(v['label'])} "
                f"!= image shape {np.shape(v['image'])}."
            )


def _apply_augment(ds: tf.data.Dataset, chain, seed: int) -> tf.data.Dataset:
    """Apply an augmentation chain to each batch with a fresh stateless seed per batch and epoch.

    ``chain`` is a ``data_utils.augment.Compose``, a list of augmentations, or any callable
    ``chain(element, seed) -> element``; the seeds come from ``augment.apply_to_dataset`` (the
    kit's one seeding path), so no two batches share a draw and nothing is frozen at trace time.
    """
    if chain is None:
        return ds
    if not (callable(chain) or isinstance(chain, (list, tuple))):
        raise TypeError(f"`augment` must be an augment.Compose, a list of augmentations or a callable, got {chain!r}.")
    return augment_lib.apply_to_dataset(ds, chain, int(seed), num_parallel_calls=AUTOTUNE)


def _finish(ds, batch_size, *, shuffle, seed, shuffle_buffer, augment, drop_remainder, repeat):
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=int(seed), reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    return _augment_and_prefetch(ds.batch(int(batch_size), drop_remainder=drop_remainder), augment, seed)


def _augment_and_prefetch(ds: tf.data.Dataset, augment, seed: int) -> tf.data.Dataset:
    """The end of every kit pipeline: the augmentation, a prefetch, and no autotuning."""
    return fixed_parallelism(_apply_augment(ds, augment, seed).prefetch(AUTOTUNE))


def fixed_parallelism(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` with ``tf.data``'s autotuning off; the kit's pipelines all end with it.

    Autotuning gives every iterator a background thread that re-plans the pipeline at intervals
    growing to a minute. On 2 cores that thread takes time from training, and destroying the
    iterator waits for the thread's current interval to end: the end of ``fit`` (or the garbage
    collection that frees its iterator) stalled the coursework job for 0 to 40 s at random.
    Measured on 2 AMD EPYC cores: deleting an iterator after 1 s of use took 0.26 s with
    autotuning and 0.001 s without. Without it, ``AUTOTUNE`` parallelism is one call per core and
    ``prefetch(AUTOTUNE)`` buffers still grow while the consumer waits. The options reach every
    transformation applied afterwards (``map``, ``prefetch``, ...).
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def stack_slices(
    volumes: Sequence[dict],
    slice_shape: Sequence[int] | None = None,
    min_foreground: int = 0,
) -> dict[str, np.ndarray]:
    """Cut volumes into axial slices: ``image (N, H, W, 1)``, ``label (N, H, W)``, ``case_id (N,)``.

    Args:
        volumes: dicts from :func:`load_cases`.
        slice_shape: ``(H, W)`` to centre-pad/crop every slice to (needed when volumes differ in
            plane size); ``None`` requires equal sizes.
        min_foreground: keep only slices with at least this many labelled voxels (0 keeps all).
    """
    _check_volumes(volumes)
    sizes = {tuple(np.shape(v["image"])[1:]) for v in volumes}
    if slice_shape is None and len(sizes) > 1:
        raise ValueError(f"volumes differ in plane size {sorted(sizes)}; pass slice_shape=(H, W) to pad/crop them to one size.")
    images, labels, ids = [], [], []
    for v in volumes:
        image, label = np.asarray(v["image"], np.float32), np.asarray(v["label"], np.int32)
        if slice_shape is not None:
            target = (image.shape[0],) + tuple(int(s) for s in slice_shape)
            image = preprocess.pad_or_crop(image, target)
            label = preprocess.pad_or_crop(label, target)
        keep = (label > 0).reshape(label.shape[0], -1).sum(axis=1) >= min_foreground
        images.append(image[keep])
        labels.append(label[keep])
        ids += [str(v.get("case_id", ""))] * int(keep.sum())
    return {
        "image": np.concatenate(images)[..., None],
        "label": np.concatenate(labels),
        "case_id": np.asarray(ids, dtype=object).astype(bytes),
    }


def slice_dataset(
    volumes: Sequence[dict],
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    augment: Callable | None = None,
    cache: bool = True,
    slice_shape: Sequence[int] | None = None,
    min_foreground: int = 0,
    drop_remainder: bool = False,
    repeat: bool = False,
) -> tf.data.Dataset:
    """A ``tf.data`` pipeline of batched axial 2D slices from 3D volumes.

    Args:
        volumes: dicts with ``image``/``label`` ``(D, H, W)`` (from :func:`load_cases`).
        batch_size: slices per batch.
        shuffle: shuffle slices (from all volumes together), reshuffled every epoch, seeded.
        seed: seed for the shuffle order and the augmentation seeds.
        augment: optional augmentation of each batch: a ``data_utils.augment.Compose`` (or a list
            of augmentations), or a callable ``augment(element, seed) -> element`` with ``seed`` a
            shape-``[2]`` int32 tensor that differs between batches and epochs.
        cache: cache the un-augmented slices after the first pass.
        slice_shape: ``(H, W)`` to centre-pad/crop slices to (for volumes of different sizes).
        min_foreground: keep only slices with at least this many labelled voxels.
        drop_remainder: drop a last, smaller batch.
        repeat: repeat forever (then pass ``steps_per_epoch`` to ``fit``).

    Returns:
        Dataset of ``{"image": (B, H, W, 1) float32, "label": (B, H, W) int32, "case_id": (B,) string}``.
    """
    slices = stack_slices(volumes, slice_shape, min_foreground)
    if len(slices["label"]) == 0:
        raise ValueError(f"no slice has at least {min_foreground} labelled voxels; lower `min_foreground`.")
    ds = tf.data.Dataset.from_tensor_slices(slices)
    if cache:
        ds = ds.cache()
    return _finish(
        ds, batch_size, shuffle=shuffle, seed=seed, shuffle_buffer=len(slices["label"]),
        augment=augment, drop_remainder=drop_remainder, repeat=repeat,
    )


# --- 3D patches ------------------------------------------------------------------------------


def _pad_to_at_least(array: np.ndarray, shape: Sequence[int], value) -> np.ndarray:
    pads = [(max(0, t - n) // 2, max(0, t - n) - max(0, t - n) // 2) for n, t in zip(array.shape, shape)]
    return np.pad(array, pads, constant_values=value) if any(sum(p) for p in pads) else array


def _patch_corner(shape, patch_size, center) -> tuple[int, ...]:
    """Top-left corner of a patch around ``center``, kept inside the volume."""
    return tuple(int(np.clip(c - p // 2, 0, n - p)) for c, n, p in zip(center, shape, patch_size))


def sample_patches(
    volumes: Sequence[dict],
    patch_size: Sequence[int],
    num_patches: int,
    rng: np.random.Generator,
    foreground_ratio: float = 0.5,
):
    """Draw foreground-balanced 3D patches from volumes (NumPy; used by :func:`patch_dataset`).

    Each patch comes from a uniformly chosen volume. With probability ``foreground_ratio`` it is
    centred on a random labelled voxel (label > 0), otherwise on a uniformly random voxel.
    Volumes smaller than the patch are padded (image with its minimum, label with 0).

    Yields:
        dicts ``image (d, h, w, 1)`` float32, ``label (d, h, w)`` int32, ``case_id`` str.
    """
    prepared = []
    for v in volumes:
        image = _pad_to_at_least(np.asarray(v["image"], np.float32), patch_size, float(np.min(v["image"])))
        label = _pad_to_at_least(np.asarray(v["label"], np.int32), patch_size, 0)
        prepared.append((image, label, np.argwhere(label > 0), str(v.get("case_id", ""))))
    for _ in range(int(num_patches)):
        image, label, foreground, case_id = prepared[int(rng.integers(len(prepared)))]
        if len(foreground) and rng.random() < foreground_ratio:
            center = foreground[int(rng.integers(len(foreground)))]
        else:
            center = [int(rng.integers(n)) for n in image.shape]
        corner = _patch_corner(image.shape, patch_size, center)
        window = tuple(slice(c, c + p) for c, p in zip(corner, patch_size))
        yield {"image": image[window][..., None], "label": label[window], "case_id": case_id}


def patch_dataset(
    volumes: Sequence[dict],
    patch_size: Sequence[int],
    batch_size: int,
    *,
    seed: int = 0,
    foreground_ratio: float = 0.5,
    patches_per_volume: int = 8,
    augment: Callable | None = None,
    repeat: bool = False,
    new_patches_each_epoch: bool = True,
) -> tf.data.Dataset:
    """A ``tf.data`` pipeline of foreground-balanced random 3D patches.

    One epoch (one pass over the dataset) is ``len(volumes) * patches_per_volume`` patches, drawn
    from a seed that ``tf.data.Dataset.random(seed)`` gives each pass: the same ``seed`` gives the
    same patches, and with ``new_patches_each_epoch`` each epoch gets new ones. A validation set
    needs ``new_patches_each_epoch=False``: every epoch is then scored on the same patches, so
    ``ModelCheckpoint(monitor="val_loss")`` compares epochs on equal terms.

    Args:
        volumes: dicts with ``image``/``label`` ``(D, H, W)``.
        patch_size: ``(d, h, w)``.
        batch_size: patches per batch.
        seed: sampling and augmentation seed.
        foreground_ratio: probability that a patch is centred on a labelled voxel (MONAI's
            ``pos / (pos + neg)``); 0 gives uniform sampling.
        patches_per_volume: patches per volume per epoch.
        augment: optional ``augment(element, seed) -> element`` per batch (see :func:`slice_dataset`).
        repeat: repeat forever (each repetition is a new epoch).
        new_patches_each_epoch: draw new patches on every pass (training); ``False`` repeats the
            same patches on every pass (validation).

    Returns:
        Dataset of ``{"image": (B, d, h, w, 1) float32, "label": (B, d, h, w) int32, "case_id": (B,) string}``.
    """
    _check_volumes(volumes)
    patch_size = tuple(int(p) for p in patch_size)
    if len(patch_size) != 3 or min(patch_size) < 1:
        raise ValueError(f"`patch_size` must be three positive sizes (d, h, w), got {patch_size}.")
    if not 0.0 <= foreground_ratio <= 1.0:
        raise ValueError(f"`foreground_ratio` must be in [0, 1], got {foreground_ratio}.")
    num_patches = len(volumes) * int(patches_per_volume)

    def generate(epoch_seed):
        rng = np.random.default_rng([int(seed), int(epoch_seed) % 2**63])
        yield from sample_patches(volumes, patch_size, num_patches, rng, foreground_ratio)

    signature = {
        "image": tf.TensorSpec(patch_size + (1,), tf.float32),
        "label": tf.TensorSpec(patch_size, tf.int32),
        "case_id": tf.TensorSpec((), tf.string),
    }
    # The pass's seed comes from tf.data's stateless RNG, not from Python state: a new value on
    # every iteration (epoch) only when asked for, the same one otherwise.
    epoch_seed = tf.data.Dataset.random(seed=int(seed), rerandomize_each_iteration=new_patches_each_epoch)
    ds = epoch_seed.take(1).flat_map(
        lambda s: tf.data.Dataset.from_generator(generate, args=(s,), output_signature=signature)
    )
    if repeat:
        ds = ds.repeat()
    return _augment_and_prefetch(ds.batch(int(batch_size)), augment, seed)


def volume_dataset(
    volumes: Sequence[dict],
    batch_size: int = 1,
    *,
    shuffle: bool = False,
    seed: int = 0,
    augment: Callable | None = None,
) -> tf.data.Dataset:
    """A ``tf.data`` pipeline of whole volumes (for 3D training on small volumes and evaluation).

    Args:
        volumes: dicts from :func:`load_cases` (``label`` optional, but all or none).
        batch_size: volumes per batch; > 1 needs volumes of one shape.
        shuffle, seed, augment: as in :func:`slice_dataset`.

    Returns:
        Dataset of ``{"image": (B, D, H, W, 1) float32, "label": (B, D, H, W) int32,
        "spacing": (B, 3) float32, "case_id": (B,) string}``.
    """
    with_label = "label" in volumes[0] if len(volumes) else True
    _check_volumes(volumes, need_label=with_label)
    if batch_size > 1 and len({np.shape(v["image"]) for v in volumes}) > 1:
        raise ValueError("volumes differ in shape: use batch_size=1 or pad them to one shape with preprocess.pad_or_crop.")

    def generate():
        for v in volumes:
            element = {
                "image": np.asarray(v["image"], np.float32)[..., None],
                "spacing": np.asarray(v.get("spacing", (1.0, 1.0, 1.0)), np.float32),
                "case_id": str(v.get("case_id", "")),
            }
            if with_label:
                element["label"] = np.asarray(v["label"], np.int32)
            yield element

    signature = {
        "image": tf.TensorSpec((None, None, None, 1), tf.float32),
        "spacing": tf.TensorSpec((3,), tf.float32),
        "case_id": tf.TensorSpec((), tf.string),
    }
    if with_label:
        signature["label"] = tf.TensorSpec((None, None, None), tf.int32)
    ds = tf.data.Dataset.from_generator(generate, output_signature=signature)
    if shuffle:
        ds = ds.shuffle(len(volumes), seed=int(seed), reshuffle_each_iteration=True)
    return _augment_and_prefetch(ds.batch(int(batch_size)), augment, seed)


def to_xy(element: dict) -> tuple[tf.Tensor, tf.Tensor]:
    """``(image, label)`` from a dict element, for ``model.fit(ds.map(to_xy))``."""
    return element["image"], element["label"]
