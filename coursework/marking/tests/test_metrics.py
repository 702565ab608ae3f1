"""Marking: Dice and HD95 of the group's predictions on held-out volumes (scored by the scheme's bands)."""

import numpy as np


def _mean(heldout_scores, key):
    """Mean of one metric of ``training.metrics.evaluate_segmentation`` over the held-out cases."""
    values = [r[key] for r in heldout_scores]
    assert all(np.isfinite(values)), f"{key} is not finite: {values}"
    return float(np.mean(values)), values


def test_mean_dice(heldout_scores, record_value):
    """Mean Dice over structures and held-out cases; the band turns it into marks."""
    value, per_case = _mean(heldout_scores, "mean_dice")
    record_value(value, per_case=per_case)
    print(f"mean Dice over {len(per_case)} held-out cases: {value:.4f}")


def test_mean_hd95(heldout_scores, record_value):
    """Mean 95th-percentile Hausdorff distance in mm (lower is better)."""
    value, per_case = _mean(heldout_scores, "mean_hd95_mm")
    record_value(value, per_case=per_case)
    print(f"mean HD95 over {len(per_case)} held-out cases: {value:.2f} mm")
