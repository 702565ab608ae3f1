"""Marking: the marker's own training run of the submission completes, writes every output and learns."""

import json

import numpy as np

from coursework import scoring
from coursework.marking.fixtures import require_step, run_manifest

REQUIRED_FILES = ("config.yaml", "history.csv", "metrics.json", "model.keras", "loss_curves.png")


def test_training_run_completes(steps, artifacts, heldout_scores):
    """The ``train`` step finished in its limit, wrote every output, and its model beats a non-learned rule.

    The outputs alone prove nothing (any script can write them), so the model this run saved must
    also be the one whose held-out predictions (made by the ``predict`` step) reach
    ``scoring.LEARNED_DICE_FLOOR``, above what a hand-made intensity threshold reaches.
    """
    require_step(steps, "train")
    manifest = run_manifest(artifacts)
    missing = [f"{name} ({manifest['files'][name]['reason']})" for name in REQUIRED_FILES
               if not manifest["files"][name]["present"]]
    assert not missing, f"the training run lacks {', '.join(missing)}"
    assert manifest["test_predictions"] > 0, "the training run wrote no test predictions (predictions/*.nii.gz)"
    metrics = json.loads((artifacts / "run" / "metrics.json").read_text())
    assert isinstance(metrics, dict) and "mean_dice" in metrics, "metrics.json has no mean_dice"
    assert not manifest["model_in_submission"], "model.keras is a copy of a file in the submission, not trained by this run"
    value = float(np.mean([r["mean_dice"] for r in heldout_scores]))
    assert value >= scoring.LEARNED_DICE_FLOOR, (
        f"the trained model reaches held-out mean Dice {value:.3f}, below {scoring.LEARNED_DICE_FLOOR} "
        "(what a rule without learning gets)")
