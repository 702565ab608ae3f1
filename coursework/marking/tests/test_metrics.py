"""Marking: Dice and HD95 of the group's predictions on held-out volumes (scored by the scheme's bands)."""

import nibabel as nib
import numpy as np

from coursework.marking.fixtures import prediction_name
from training.metrics import evaluate_segmentation

STRUCTURES = {"bladder": 1, "prostate": 2, "rectum": 3}


def _evaluate(predictions, heldout_cases):
    """Per-case metrics from ``training.metrics.evaluate_segmentation`` (in mm, from the affine)."""
    results = []
    for case, image_path, mask_path in heldout_cases:
        pred_path = predictions / prediction_name(image_path)
        assert pred_path.is_file(), f"no prediction {pred_path.name} for held-out case {case}"
        truth = nib.load(str(mask_path))
        pred = np.asarray(nib.load(str(pred_path)).dataobj)
        assert pred.shape == truth.shape, f"{pred_path.name}: shape {pred.shape}, expected {truth.shape}"
        spacing = tuple(float(s) for s in truth.header.get_zooms()[:3])
        truth_arr = np.rint(np.asarray(truth.dataobj)).astype(np.int32)
        results.append(evaluate_segmentation(np.rint(pred).astype(np.int32), truth_arr, spacing, STRUCTURES))
    return results


def _mean(results, key):
    values = [r[key] for r in results]
    assert all(np.isfinite(values)), f"{key} is not finite: {values}"
    return float(np.mean(values))


def test_mean_dice(predictions, heldout_cases, record_value):
    """Mean Dice over structures and held-out cases; the band turns it into marks."""
    results = _evaluate(predictions, heldout_cases)
    value = _mean(results, "mean_dice")
    record_value(value, per_case=[r["mean_dice"] for r in results])
    print(f"mean Dice over {len(results)} held-out cases: {value:.4f}")


def test_mean_hd95(predictions, heldout_cases, record_value):
    """Mean 95th-percentile Hausdorff distance in mm (lower is better)."""
    results = _evaluate(predictions, heldout_cases)
    value = _mean(results, "mean_hd95_mm")
    record_value(value, per_case=[r["mean_hd95_mm"] for r in results])
    print(f"mean HD95 over {len(results)} held-out cases: {value:.2f} mm")
