"""Dataset layouts on disk -> lists of cases -> ``tf.data`` pipelines, with case-level splits.

Three layouts the course's real data comes in:

- **a folder of image/label pairs** named by a pattern, e.g. ``case000_img.nii.gz`` +
  ``case000_mask.nii.gz`` (:func:`data_utils.datasets.find_cases`),
  or two folders with the same file names, ``images/x.nii.gz`` + ``labels/x.nii.gz`` (:func:`paired_folder_cases`);
- **the Medical Segmentation Decathlon** (:func:`read_decathlon`): ``dataset.json``, ``imagesTr/``,
  ``labelsTr/``, ``imagesTs/``; multi-modal tasks store 4D images (e.g. prostate: T2 and ADC), so
  :func:`load_decathlon_cases` picks the modality;
- **a CSV file** of image paths with a label path per row (:func:`csv_segmentation_cases`) or a
  class per row (:func:`csv_classification_cases`, :func:`classification_dataset`).

Cases are split by patient, never by slice: pass any of these case lists to
:func:`data_utils.datasets.split_cases` (train/val/test) or :func:`data_utils.datasets.kfold_cases`
(cross-validation). Both order cases by a hash of ``(seed, case_id)``, so splits are the same on
every machine. Segmentation cases then go through :func:`data_utils.datasets.load_cases` and
``slice_dataset`` / ``patch_dataset`` / ``volume_dataset``.

Example::

    from data_utils import datasets, layouts
    task = layouts.read_decathlon("data/Task05_Prostate")
    split = datasets.split_cases(task.training, val_fraction=0.2, test_fraction=0.2, seed=0)
    train = layouts.load_decathlon_cases(split["train"], modality="T2")
    ds = datasets.slice_dataset(train, batch_size=16)
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from data_utils import io
from data_utils.datasets import Case, _case_volume, _check_normalize, _load_case, find_cases
from data_utils.io import DataError

DECATHLON_JSON = "dataset.json"


# --------------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------------


def _strip_suffixes(name: str) -> str:
    for ext in io.NIFTI_SUFFIXES + (".png", ".jpg", ".jpeg", ".npy"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem


def paired_folder_cases(image_folder, label_folder=None, pattern: str = "*.nii*", require_labels: bool = True) -> list[Case]:
    """Cases from two folders holding files of the same names (``images/a.nii.gz`` + ``labels/a.nii.gz``).

    Args:
        image_folder: folder of images.
        label_folder: folder of label maps with the same file names; None for unlabelled data.
        pattern: glob selecting the image files.
        require_labels: raise if an image has no label file of the same name.

    Returns:
        Cases sorted by ``case_id`` (the file name without its extension).
    """
    image_folder = Path(image_folder)
    if not image_folder.is_dir():
        raise DataError(f"{image_folder}: image folder not found.")
    paths = sorted(p for p in image_folder.glob(pattern) if p.is_file() and not p.name.startswith("."))
    if not paths:
        raise DataError(f"{image_folder}: no image files matching '{pattern}'.")
    cases = []
    for path in paths:
        label_path = None
        if label_folder is not None:
            candidate = Path(label_folder) / path.name
            if candidate.is_file():
                label_path = candidate
            elif require_labels:
                raise DataError(f"{candidate}: label file missing for image {path} (expected the same file name in {label_folder}).")
        cases.append(Case(case_id=_strip_suffixes(path.name), image_path=path, label_path=label_path))
    return cases


# --------------------------------------------------------------------------------------------
# Medical Segmentation Decathlon
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DecathlonTask:
    """A Medical Segmentation Decathlon task read from its ``dataset.json``.

    Attributes:
        root: the task folder (holding ``dataset.json``, ``imagesTr``, ``labelsTr``, ``imagesTs``).
        name: e.g. ``"PROSTATE"``.
        modalities: channel index -> modality name, e.g. ``{0: "T2", 1: "ADC"}``.
        labels: class value -> name, e.g. ``{0: "background", 1: "PZ", 2: "TZ"}``.
        training: labelled cases (split these into train/val/test).
        test: unlabelled cases of the challenge's test set (``label_path`` is None).
    """

    root: Path
    name: str
    modalities: dict[int, str]
    labels: dict[int, str]
    training: list[Case]
    test: list[Case]


def _resolve(root: Path, entry: str, json_path: Path) -> Path:
    path = (root / entry).resolve() if not Path(entry).is_absolute() else Path(entry)
    if not path.is_file():
        raise DataError(f"{json_path}: lists '{entry}', but {path} does not exist (incomplete download or extraction?).")
    return path


def read_decathlon(root, check_files: bool = True) -> DecathlonTask:
    """Read a Decathlon task folder through its ``dataset.json``.

    Args:
        root: the task folder, e.g. ``data/Task05_Prostate``.
        check_files: raise if a file listed in ``dataset.json`` is missing.

    Returns:
        :class:`DecathlonTask`; case ids are file names without ``.nii.gz`` (``prostate_16``).

    Raises:
        DataError: no ``dataset.json``, invalid JSON, missing keys, or listed files missing.
    """
    root = Path(root)
    json_path = root / DECATHLON_JSON
    if not json_path.is_file():
        raise DataError(f"{json_path}: not found; expected a Decathlon task folder with dataset.json, imagesTr/ and labelsTr/.")
    try:
        meta = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{json_path}: invalid JSON ({error}).") from None
    missing = [k for k in ("labels", "training") if k not in meta]
    if missing:
        raise DataError(f"{json_path}: missing keys {missing}; expected at least 'labels' and 'training'.")

    def case_from(entry, labelled):
        image = entry["image"] if isinstance(entry, dict) else entry
        label = entry.get("label") if isinstance(entry, dict) else None
        if labelled and label is None:
            raise DataError(f"{json_path}: training entry {entry} has no 'label'.")
        image_path = _resolve(root, image, json_path) if check_files else (root / image)
        label_path = None
        if label is not None:
            label_path = _resolve(root, label, json_path) if check_files else (root / label)
        return Case(case_id=_strip_suffixes(Path(image).name), image_path=image_path, label_path=label_path)

    training = sorted((case_from(e, True) for e in meta["training"]), key=lambda c: c.case_id)
    test = sorted((case_from(e, False) for e in meta.get("test", [])), key=lambda c: c.case_id)
    return DecathlonTask(
        root=root,
        name=str(meta.get("name", root.name)),
        modalities={int(k): str(v) for k, v in meta.get("modality", {"0": "image"}).items()},
        labels={int(k): str(v) for k, v in meta["labels"].items()},
        training=training,
        test=test,
    )


def _modality_index(modality, modalities: dict[int, str] | None) -> int:
    if isinstance(modality, str):
        by_name = {v.lower(): k for k, v in (modalities or {}).items()}
        if modality.lower() not in by_name:
            raise ValueError(f"unknown modality {modality!r}; this task has {modalities}.")
        return by_name[modality.lower()]
    return int(modality)


def load_decathlon_cases(
    cases: Sequence[Case],
    modality: int | str = 0,
    *,
    modalities: dict[int, str] | None = None,
    normalize: str | None = "zscore",
    canonical: bool = True,
    num_classes: int | None = None,
) -> list[dict]:
    """Load Decathlon cases like :func:`data_utils.datasets.load_cases`, picking one modality of 4D images.

    Args:
        cases: from :func:`read_decathlon` (``task.training`` or a split of it).
        modality: channel index, or its name when ``modalities`` (``task.modalities``) is given;
            ignored for single-modality (3D) tasks.
        modalities: channel index -> name map, for ``modality`` given by name.
        normalize: ``"zscore"``, ``"zscore_nonzero"`` or None, as in ``load_cases``.
        canonical: reorient to RAS+ first.
        num_classes: if given, labels must lie in ``0 .. num_classes - 1`` (e.g.
            ``len(task.labels)``); others stop with the file and the values found.

    Returns:
        List of dicts: ``image`` float32 ``(D, H, W)``, ``label`` int32 ``(D, H, W)`` (when labelled),
        ``spacing``, ``affine`` (of the ``(D, H, W)`` array) and ``case_id``, ready for
        ``slice_dataset`` / ``patch_dataset`` / ``volume_dataset``.
    """
    _check_normalize(normalize)
    channel = _modality_index(modality, modalities)
    volumes = []
    for case in cases:
        image, label = _load_case(case, num_classes)
        array = image.array
        if array.ndim == 4:
            if not 0 <= channel < array.shape[3]:
                raise DataError(f"{case.image_path}: has {array.shape[3]} modalities; modality {channel} does not exist.")
            array = array[..., channel]
        elif array.ndim != 3:
            raise DataError(f"{case.image_path}: expected a 3D or 4D (multi-modal) image, got shape {array.shape}.")
        image = io.Volume(array=np.ascontiguousarray(array), affine=image.affine, spacing=image.spacing[:3], path=image.path)
        volumes.append(_case_volume(case, image, label, normalize=normalize, canonical=canonical))
    return volumes


# --------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ClassificationCase:
    """One image with a class: what a row of a classification CSV describes.

    Works with :func:`data_utils.datasets.split_cases` / ``kfold_cases`` like :class:`Case`.
    """

    case_id: str
    image_path: Path
    label: int


def _read_rows(csv_path: Path, required: Sequence[str]) -> list[dict]:
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: CSV file not found.")
    with open(csv_path, newline="", encoding="utf-8-sig") as stream:  # utf-8-sig: Excel's byte-order mark
        reader = csv.DictReader(stream)
        columns = reader.fieldnames or []
        missing = [c for c in required if c not in columns]
        if missing:
            raise DataError(f"{csv_path}: missing columns {missing}; found {columns}.")
        rows = list(reader)
    if not rows:
        raise DataError(f"{csv_path}: no rows.")
    return rows


def _row_path(csv_path: Path, root: Path, value: str, line: int, column: str, check: bool) -> Path:
    if not value:
        raise DataError(f"{csv_path}, line {line}: empty '{column}'.")
    path = Path(value) if Path(value).is_absolute() else root / value
    if check and not path.is_file():
        raise DataError(f"{csv_path}, line {line}: {column} file {path} not found (paths are relative to {root}).")
    return path


def _case_id(row, id_column, image_path) -> str:
    return str(row[id_column]) if id_column else _strip_suffixes(image_path.name)


def csv_segmentation_cases(
    csv_path,
    image_column: str = "image",
    label_column: str = "label",
    id_column: str | None = None,
    root=None,
    check_files: bool = True,
) -> list[Case]:
    """Cases from a CSV with an image path and a label-map path per row.

    Args:
        csv_path: the CSV file (first row: column names).
        image_column, label_column: column names of the paths.
        id_column: column of case ids (patient ids); default: the image file name without extension.
            Rows with the same id would be split apart, so ids must be unique.
        root: folder that relative paths start from (default: the CSV's folder).
        check_files: raise if a listed file is missing.

    Returns:
        Cases sorted by ``case_id``.
    """
    csv_path = Path(csv_path)
    rows = _read_rows(csv_path, [image_column, label_column] + ([id_column] if id_column else []))
    root = Path(root) if root is not None else csv_path.parent
    cases = []
    for line, row in enumerate(rows, start=2):
        image = _row_path(csv_path, root, row[image_column], line, image_column, check_files)
        label = _row_path(csv_path, root, row[label_column], line, label_column, check_files)
        cases.append(Case(case_id=_case_id(row, id_column, image), image_path=image, label_path=label))
    _check_unique(csv_path, cases)
    return sorted(cases, key=lambda c: c.case_id)


def _check_unique(csv_path, cases) -> None:
    ids = [c.case_id for c in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise DataError(f"{csv_path}: case ids {duplicates[:5]} appear more than once; every row needs a unique id.")


def csv_classification_cases(
    csv_path,
    image_column: str = "image",
    label_column: str = "label",
    id_column: str | None = None,
    root=None,
    class_names: Sequence[str] | None = None,
    check_files: bool = True,
) -> tuple[list[ClassificationCase], tuple[str, ...]]:
    """Cases from a CSV with an image path and a class per row.

    Args:
        csv_path: the CSV file.
        image_column, label_column: column names; the class is an integer index or a name.
        id_column: column of case ids; default: the image file name without extension.
        root: folder that relative paths start from (default: the CSV's folder).
        class_names: the classes in index order; default: integer classes keep their values, named
            classes are numbered in sorted name order.
        check_files: raise if a listed image is missing.

    Returns:
        ``(cases, class_names)``: cases sorted by ``case_id`` and the class names by index.
    """
    csv_path = Path(csv_path)
    rows = _read_rows(csv_path, [image_column, label_column] + ([id_column] if id_column else []))
    root = Path(root) if root is not None else csv_path.parent
    values = [row[label_column].strip() for row in rows]
    if class_names is None:
        if all(v.lstrip("-").isdigit() for v in values):
            class_names = tuple(str(i) for i in range(max(int(v) for v in values) + 1))
            index = {str(i): i for i in range(len(class_names))}
        else:
            class_names = tuple(sorted(set(values)))
            index = {name: i for i, name in enumerate(class_names)}
    else:
        class_names = tuple(class_names)
        index = {name: i for i, name in enumerate(class_names)}
        index.update({str(i): i for i in range(len(class_names))})
    cases = []
    for line, (row, value) in enumerate(zip(rows, values, strict=True), start=2):
        if value not in index:
            raise DataError(f"{csv_path}, line {line}: class {value!r} is not one of {list(class_names)}.")
        image = _row_path(csv_path, root, row[image_column], line, image_column, check_files)
        cases.append(ClassificationCase(case_id=_case_id(row, id_column, image), image_path=image, label=index[value]))
    _check_unique(csv_path, cases)
    return sorted(cases, key=lambda c: c.case_id), class_names


def _read_any_image(path: Path) -> np.ndarray:
    """A 2D image file (PNG/JPEG/...) as ``(H, W, C)`` or a NIfTI file as its array plus a channel axis."""
    from data_utils import formats

    if path.name.endswith(io.NIFTI_SUFFIXES):
        return io.load_nifti(path).array[..., None]
    if path.suffix == ".npy":
        array = np.load(path, allow_pickle=False).astype(np.float32)
        return array[..., None] if array.ndim in (2, 3) else array
    return formats.read_image(path)


def load_classification_cases(cases: Sequence[ClassificationCase]) -> dict[str, np.ndarray]:
    """Read every image of a classification case list into one array.

    Returns:
        ``{"image": float32 (N, *spatial, C), "label": int32 (N,), "case_id": bytes (N,)}``.

    Raises:
        DataError: an unreadable file, or images of different shapes (resize them first).
    """
    if not cases:
        raise ValueError("`cases` is empty: nothing to load.")
    images = [_read_any_image(Path(c.image_path)) for c in cases]
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        first = {im.shape: c.image_path for im, c in zip(images, cases, strict=True)}
        raise DataError(f"images differ in shape: {[(str(p), s) for s, p in list(first.items())[:3]]}; resize them to one shape first.")
    return {
        "image": np.stack(images).astype(np.float32),
        "label": np.array([c.label for c in cases], np.int32),
        "case_id": np.array([c.case_id for c in cases], dtype=object).astype(bytes),
    }


def classification_dataset(cases: Sequence[ClassificationCase], batch_size: int, **kwargs):
    """A ``tf.data`` pipeline of classification cases (see :func:`data_utils.formats.arrays_dataset` for options).

    Returns:
        Dataset of ``{"image": (B, *spatial, C) float32, "label": (B,) int32, "case_id": (B,) string}``.
    """
    from data_utils import formats

    return formats.arrays_dataset(load_classification_cases(cases), batch_size, **kwargs)
