"""Inference: one label NIfTI per input volume, on the input's grid (the contract marking relies on).

Usage::

    python -m coursework.predict IN_DIR OUT_DIR [--run-dir results/baseline]

For every ``<case>_img.nii(.gz)`` (or any other ``<name>.nii(.gz)``) in ``IN_DIR`` it writes
``OUT_DIR/<case>_pred.nii.gz`` (``<name>_pred.nii.gz``): an integer label map (0 background,
1 bladder, 2 prostate, 3 rectum) with exactly the input's shape and affine, whatever the input's
orientation. The model and settings come from the run folder (default: the run named in
``coursework/config.py``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from coursework._cli import UserError, run_cli
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
    import keras

    import training.losses  # noqa: F401  (registers the kit's losses for deserialisation)

    try:
        model = keras.models.load_model(run_dir / "model.keras", compile=False)
    except Exception as err:  # noqa: BLE001 - any load failure is reported as one line naming the file
        raise UserError(f"{run_dir / 'model.keras'}: cannot be loaded ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    return model, cfg


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coursework.predict", description=__doc__.splitlines()[0])
    parser.add_argument("in_dir", help="folder of input volumes (<case>_img.nii.gz)")
    parser.add_argument("out_dir", help="folder for the label maps (<case>_pred.nii.gz)")
    parser.add_argument("--run-dir", default=None, help="trained run folder (default: results/<run_name of coursework/config.py>)")
    args = parser.parse_args(argv)

    def work() -> int:
        import keras

        inputs = find_inputs(args.in_dir)
        default = CourseworkConfig()
        run_dir = Path(args.run_dir) if args.run_dir else Path(default.results_dir) / default.run_name
        model, cfg = load_run(run_dir)
        out_dir = Path(args.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        bar = keras.utils.Progbar(len(inputs), unit_name="volume", verbose=1 if sys.stdout.isatty() else 2)
        for i, path in enumerate(inputs):
            predict_file(model, cfg, path, prediction_path(out_dir, path))
            bar.update(i + 1)
        print(f"wrote {len(inputs)} label maps to {out_dir}")
        return 0

    return run_cli(work)


if __name__ == "__main__":
    sys.exit(main())
