"""Inference: one label NIfTI per input volume, on the input's grid (the contract marking relies on).

Usage::

    python -m coursework.predict IN_DIR OUT_DIR [--run-dir results/baseline]

For every ``<case>_img.nii(.gz)`` (or any other ``<name>.nii(.gz)``) in ``IN_DIR`` it writes
``OUT_DIR/<case>_pred.nii.gz`` (``<name>_pred.nii.gz``): an integer label map (0 background,
1 bladder, 2 prostate, 3 rectum) with exactly the input's shape and affine, whatever the input's
orientation. The model and settings come from the run folder (default: the run named in
``coursework/config.py``).

A volume that cannot be read (corrupt, truncated, not 3D) does not stop the others: every good
volume gets its label map, each bad one is listed on stderr as ``error: <file>: <reason>`` (and a
stale prediction of it from an earlier call is removed), and the exit status is 2. Each label map
is written atomically, so OUT_DIR never holds half a file.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import numpy as np

from coursework._cli import USER_ERROR_STATUS, ArgumentParser, UserError, import_tensorflow_quietly, one_line, run_cli
from coursework.config import CourseworkConfig

IMAGE_SUFFIXES = ("_img.nii.gz", "_img.nii")
NIFTI_SUFFIXES = (".nii.gz", ".nii")


def case_name(path: Path) -> str:
    """``case001`` for ``case001_img.nii.gz``; the bare name for any other NIfTI file."""
    name = Path(path).name
    for suffix in IMAGE_SUFFIXES + NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def prediction_path(out_dir: Path, image_path: Path) -> Path:
    """Where the prediction for ``image_path`` goes: ``OUT_DIR/<case>_pred.nii.gz``."""
    return Path(out_dir) / f"{case_name(image_path)}_pred.nii.gz"


def load_run(run_dir) -> tuple[object, CourseworkConfig]:
    """The trained model and the settings of a run folder.

    Raises:
        UserError: the folder, its ``model.keras`` or its ``config.yaml`` is missing or unreadable.
    """
    from training.config import ConfigError, load_config

    run_dir = Path(run_dir)
    for name in ("model.keras", "config.yaml"):
        if not (run_dir / name).is_file():
            raise UserError(f"{run_dir / name}: not found (is {run_dir} a finished run of coursework.train?)")
    try:
        cfg = load_config(CourseworkConfig, run_dir / "config.yaml")
    except ConfigError as err:
        raise UserError(str(err)) from None
    import_tensorflow_quietly()  # only now: every check above answers without TensorFlow
    import keras

    import training.losses  # noqa: F401  (registers the kit's losses for deserialisation)

    path = run_dir / "model.keras"
    _check_model_file(path)
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as err:  # noqa: BLE001 - any load failure is reported as one line naming the file
        raise UserError(f"{path}: cannot be loaded ({type(err).__name__}: {one_line(err)})") from None
    return model, cfg


def _check_model_file(path: Path) -> None:
    """Say what is wrong with a ``.keras`` file Keras would call "not found" (it is a zip archive)."""
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        raise UserError(f"{path}: permission denied (the file exists but cannot be read by this user)") from None
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError):
        damaged = "the archive"
    if damaged is not None:
        raise UserError(f"{path}: corrupt or truncated ({damaged} does not read back); copy it again or retrain")


def to_model_layout(path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...], np.ndarray, tuple[int, ...]]:
    """Load a volume and bring it to the kit's canonical ``(D, H, W)`` layout.

    Returns:
        ``(image_dhw, index_dhw, spacing_dhw, file_affine, file_shape)``: ``index_dhw[d, h, w]``
        is the flat index of that voxel in the file's own array, so results can be put back.
    """
    from data_utils import io

    volume = io.load_nifti(path)
    if volume.array.ndim != 3:
        raise UserError(f"{path}: expected a 3D volume, got shape {volume.array.shape}")
    shape = volume.array.shape
    # Reorient an array of voxel indices alongside the image: only flips and transposes are
    # involved, so this records exactly where each reoriented voxel came from.
    index = io.Volume(np.arange(volume.array.size, dtype=np.int32).reshape(shape), volume.affine, volume.spacing, volume.path)
    image = io.to_dhw(io.to_canonical(volume))
    index_dhw = io.to_dhw(io.to_canonical(index)).array
    return image.array, index_dhw, tuple(image.spacing), volume.affine, shape


def from_model_layout(labels_dhw: np.ndarray, index_dhw: np.ndarray, file_shape) -> np.ndarray:
    """Put a ``(D, H, W)`` label map back in the file's voxel order and shape."""
    out = np.zeros(int(np.prod(file_shape)), dtype=np.uint8)
    out[index_dhw.ravel()] = labels_dhw.ravel()
    return out.reshape(file_shape)


def predict_file(model, cfg: CourseworkConfig, image_path, out_path) -> Path:
    """Predict one volume file and write its label map with the input's affine and shape."""
    from coursework import solution
    from data_utils import io

    image, index, _, affine, shape = to_model_layout(image_path)
    labels = solution.predict_volume(model, image, cfg)
    if labels.shape != image.shape:
        raise UserError(f"{image_path}: predict_volume returned shape {labels.shape}, expected {image.shape}")
    io.save_nifti(from_model_layout(labels, index, shape), affine, out_path, dtype=np.uint8)
    return Path(out_path)


def find_inputs(in_dir) -> list[Path]:
    """NIfTI volumes in ``in_dir`` (sorted); label files ``*_mask.nii(.gz)`` are skipped."""
    in_dir = Path(in_dir)
    if not in_dir.is_dir():
        raise UserError(f"{in_dir}: input folder not found")
    paths = sorted(p for p in in_dir.iterdir() if p.name.endswith(NIFTI_SUFFIXES) and "_mask.nii" not in p.name)
    if not paths:
        raise UserError(f"{in_dir}: no .nii or .nii.gz volumes found")
    return paths


def predict_folder(model, cfg: CourseworkConfig, inputs, out_dir: Path, progress: bool = True) -> dict[Path, str]:
    """Predict every input into ``out_dir``; a bad volume is skipped and reported, not fatal.

    Args:
        model, cfg: from :func:`load_run`.
        inputs: image files (:func:`find_inputs`).
        out_dir: where ``<case>_pred.nii.gz`` files go.
        progress: show a progress bar.

    Returns:
        ``{image_path: reason}`` for the volumes that could not be predicted (empty when all were);
        their stale predictions, if any, are removed.
    """
    import keras

    from data_utils.io import DataError

    failed: dict[Path, str] = {}
    bar = keras.utils.Progbar(len(inputs), unit_name="volume", verbose=1 if sys.stdout.isatty() else 2) if progress else None
    for i, path in enumerate(inputs):
        out = prediction_path(out_dir, path)
        try:
            predict_file(model, cfg, path, out)
        except (DataError, UserError) as err:
            failed[path] = one_line(err)
            out.unlink(missing_ok=True)  # an old prediction of this volume would be mistaken for a new one
        if bar is not None:
            bar.update(i + 1)
    return failed


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m coursework.predict", description=__doc__.splitlines()[0])
    parser.add_argument("in_dir", help="folder of input volumes (<case>_img.nii.gz)")
    parser.add_argument("out_dir", help="folder for the label maps (<case>_pred.nii.gz)")
    parser.add_argument("--run-dir", default=None, help="trained run folder (default: results/<run_name of coursework/config.py>)")
    args = parser.parse_args(argv)

    def work() -> int:
        inputs = find_inputs(args.in_dir)
        out_dir = Path(args.out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise UserError(f"{out_dir}: is a file; OUT_DIR must be a folder (it is created if missing)")
        default = CourseworkConfig()
        run_dir = Path(args.run_dir) if args.run_dir else Path(default.results_dir) / default.run_name
        model, cfg = load_run(run_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        failed = predict_folder(model, cfg, inputs, out_dir)
        print(f"wrote {len(inputs) - len(failed)} label maps to {out_dir}")
        for path, reason in failed.items():
            print(f"error: {reason if str(path) in reason else f'{path}: {reason}'}", file=sys.stderr)
        if failed:
            print(f"error: {len(failed)} of {len(inputs)} volumes could not be predicted (listed above)", file=sys.stderr)
            return USER_ERROR_STATUS
        return 0

    return run_cli(work)


if __name__ == "__main__":
    sys.exit(main())
