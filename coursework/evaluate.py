"""Evaluation: per-structure Dice and HD95 (mm) of a trained run on held-out test volumes, in 3D.

Usage::

    python -m coursework.evaluate RUN_DIR                 # the run's own held-out test cases
    python -m coursework.evaluate RUN_DIR --data DIR      # every image/mask pair in DIR
    python -m coursework.evaluate RUN_DIR --out eval.json

Predictions are made with the same code as ``coursework.predict`` (one label map per volume on
the input's grid) and scored against the masks with ``training.metrics.evaluate_segmentation``
on whole volumes, with the voxel spacing from the file's affine, so HD95 is in millimetres.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from coursework._cli import ArgumentParser, UserError, run_cli
from coursework.config import NUM_CLASSES, STRUCTURES, CourseworkConfig

SPLIT_FILE = "split.json"


def evaluate_case(pred: np.ndarray, truth: np.ndarray, spacing) -> dict:
    """Dice, IoU, HD95 and average surface distance (mm) of each structure for one volume.

    Args:
        pred, truth: integer label maps on the same grid, e.g. ``(X, Y, Z)`` as stored in the file.
        spacing: voxel size in mm along the array axes.

    Returns:
        The report of ``training.metrics.evaluate_segmentation`` (``dice``, ``hd95_mm``, ... per
        structure and their means; its empty-mask rule means no NaN).
    """
    from training.metrics import evaluate_segmentation

    return evaluate_segmentation(pred, truth, spacing=tuple(spacing), labels={n: v for v, n in STRUCTURES.items()})


def summarise(per_case: dict[str, dict]) -> dict:
    """Means over cases per structure and over structures: the numbers a report quotes.

    Args:
        per_case: case id -> :func:`evaluate_case` report.

    Returns:
        ``training.metrics.aggregate_cases`` of the reports (``mean_dice``, ``mean_hd95_mm``,
        ``dice``/``hd95_mm`` per structure, ``std_dice``/``std_hd95_mm``, ``num_cases``) plus
        ``per_case``.
    """
    from training.metrics import aggregate_cases

    if not per_case:
        raise UserError("no test cases to evaluate")
    return {**aggregate_cases(list(per_case.values())), "per_case": per_case}


def format_table(summary: dict) -> str:
    """A Markdown table of the summary (structure, Dice mean +- sd, HD95 mean +- sd)."""
    lines = [f"Test cases: {summary['num_cases']}", "", "| structure | Dice | HD95 (mm) |", "| --- | ---: | ---: |"]
    for name in summary["dice"]:
        lines.append(
            f"| {name} | {summary['dice'][name]:.3f} +- {summary['std_dice'][name]:.3f} "
            f"| {summary['hd95_mm'][name]:.2f} +- {summary['std_hd95_mm'][name]:.2f} |"
        )
    lines.append(f"| **mean** | **{summary['mean_dice']:.3f}** | **{summary['mean_hd95_mm']:.2f}** |")
    return "\n".join(lines)


def evaluate_cases(model, cfg: CourseworkConfig, cases, pred_dir: Path, overlay_dir: Path | None = None,
                   num_overlays: int = 0, progress: bool = True) -> dict:
    """Predict each case into ``pred_dir`` (input grid and affine) and score it against its mask.

    Args:
        model: trained network.
        cfg: the run's settings.
        cases: sequence of ``(case_id, image_path, mask_path)``.
        pred_dir: where ``<case>_pred.nii.gz`` files are written.
        overlay_dir: where overlay PNGs go (with ``num_overlays`` > 0).
        num_overlays: how many cases to draw.
        progress: show a progress bar.

    Returns:
        :func:`summarise` of the per-case results.
    """
    import keras

    from coursework.predict import predict_file, prediction_path
    from data_utils import io

    pred_dir = Path(pred_dir)
    per_case = {}
    bar = keras.utils.Progbar(len(cases), unit_name="volume", verbose=1 if sys.stdout.isatty() else 2) if progress else None
    for i, (case, image_path, mask_path) in enumerate(cases):
        out = predict_file(model, cfg, image_path, prediction_path(pred_dir, image_path))
        truth = io.load_nifti(mask_path, is_label=True, num_classes=NUM_CLASSES)
        pred = io.load_nifti(out, is_label=True)
        per_case[case] = evaluate_case(pred.array, truth.array, truth.spacing)
        if overlay_dir is not None and i < num_overlays:
            image = io.load_nifti(image_path)
            save_overlay(image, truth, pred, Path(overlay_dir) / f"overlay_{case}.png", per_case[case])
        if bar is not None:
            bar.update(i + 1)
    return summarise(per_case)


def save_overlay(image, truth, pred, path: Path, scores: dict | None = None) -> Path:
    """Three axial slices through the structures: image, ground truth and prediction outlines.

    Args:
        image, truth, pred: ``data_utils.io.Volume`` of one case (any orientation; shown in the
            kit's canonical ``(D, H, W)`` layout).
        path: PNG to write (atomically).
        scores: optional :func:`evaluate_case` result shown in the title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    from data_utils import io

    img = io.to_dhw(io.to_canonical(image)).array
    gt = io.to_dhw(io.to_canonical(truth)).array
    pr = io.to_dhw(io.to_canonical(pred)).array
    area = (gt > 0).reshape(gt.shape[0], -1).sum(axis=1)
    occupied = np.flatnonzero(area)
    if occupied.size == 0:
        occupied = np.array([gt.shape[0] // 2])
    slices = sorted({int(occupied[int(q * (occupied.size - 1))]) for q in (0.25, 0.5, 0.75)})
    colours = ListedColormap([(0, 0, 0, 0), (1.0, 0.85, 0.1, 0.55), (0.1, 0.8, 0.3, 0.55), (0.9, 0.2, 0.9, 0.55)])
    fig, axes = plt.subplots(len(slices), 3, figsize=(9, 3 * len(slices)), squeeze=False)
    for row, d in zip(axes, slices, strict=True):
        for ax, overlay, title in zip(row, (None, gt, pr), ("image", "ground truth", "prediction"), strict=True):
            ax.imshow(img[d], cmap="gray", origin="lower")
            if overlay is not None:
                ax.imshow(overlay[d], cmap=colours, vmin=0, vmax=3, interpolation="nearest", origin="lower")
            ax.set_title(f"{title} (slice {d})", fontsize=9)
            ax.axis("off")
    heading = path.stem.removeprefix("overlay_")
    if scores:
        heading += "  Dice " + ", ".join(f"{k} {v:.2f}" for k, v in scores["dice"].items())
    fig.suptitle(heading + "\nyellow bladder, green prostate, magenta rectum", fontsize=9)
    fig.tight_layout()
    try:
        io.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=80, format="png"), ".png")
    finally:
        plt.close(fig)
    return Path(path)


def cases_in_folder(data_dir) -> list[tuple[str, Path, Path]]:
    """``(case, image, mask)`` for every ``<case>_img`` / ``<case>_mask`` pair in a folder."""
    from data_utils.datasets import find_cases

    return [(c.case_id, Path(c.image_path), Path(c.label_path)) for c in find_cases(data_dir)]


def run_test_cases(run_dir: Path) -> list[tuple[str, Path, Path]]:
    """The held-out test cases recorded by ``coursework.train`` in ``RUN_DIR/split.json``."""
    path = Path(run_dir) / SPLIT_FILE
    if not path.is_file():
        raise UserError(f"{path}: not found (is {run_dir} a finished run of coursework.train?)")
    try:
        split = json.loads(path.read_text(encoding="utf-8"))
        cases = [(c["case_id"], Path(c["image"]), Path(c["label"])) for c in split["test"]]
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err}); the run folder is damaged, re-run coursework.train") from None
    except (KeyError, TypeError) as err:
        raise UserError(f"{path}: expected {{\"test\": [{{\"case_id\", \"image\", \"label\"}}, ...]}}, "
                        f"missing {err}; the run folder is damaged, re-run coursework.train") from None
    for _, image, mask in cases:
        for p in (image, mask):
            if not p.is_file():
                raise UserError(f"{p}: test file recorded in {path} not found (run from the repository root, or pass --data)")
    return cases


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m coursework.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a finished run folder, e.g. results/baseline")
    parser.add_argument("--data", default=None, metavar="DIR", help="evaluate every image/mask pair in DIR instead of the run's test cases")
    parser.add_argument("--out", default=None, metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)

    def work() -> int:
        from coursework.predict import load_run

        run_dir = Path(args.run_dir)
        if not run_dir.is_dir():
            raise UserError(f"{run_dir}: run folder not found")
        cases = cases_in_folder(args.data) if args.data else run_test_cases(run_dir)
        model, cfg = load_run(run_dir)
        with tempfile.TemporaryDirectory(prefix="evaluate-") as tmp:
            summary = evaluate_cases(model, cfg, cases, Path(tmp))
        print(format_table(summary))
        saved = run_dir / "metrics.json"
        if not args.data and saved.is_file():
            try:
                before = json.loads(saved.read_text(encoding="utf-8")).get("mean_dice")
            except (ValueError, AttributeError):  # a damaged metrics.json: nothing to compare with
                before = None
                print(f"note: {saved} is not a readable metrics file; not compared", file=sys.stderr)
            if isinstance(before, (int, float)):
                print(f"mean Dice in {saved}: {before:.4f}; re-evaluated: {summary['mean_dice']:.4f}")
        if args.out:
            from training.callbacks import atomic_write_text

            atomic_write_text(args.out, json.dumps(summary, indent=2) + "\n")
        return 0

    return run_cli(work)


if __name__ == "__main__":
    sys.exit(main())
