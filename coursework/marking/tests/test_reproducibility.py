"""Marking: training again from the run's saved config reproduces the run (measured on held-out predictions)."""

import numpy as np

from coursework import scoring
from coursework.marking.fixtures import require_step

MIN_AGREEMENT = 0.98  # mean Dice between the two runs' held-out label maps


def test_training_reproduces_from_saved_config(steps, predictions, repro_predictions, repro_scores, heldout_inputs):
    """The ``retrain`` step (same config, same seed) gives a model whose held-out segmentations match the first.

    Both runs were made by the marker in the sandbox and both sets of predictions are compared
    voxel by voxel by the marker, so nothing the submission reports is taken on trust. The
    re-run must also have learned (``scoring.LEARNED_DICE_FLOOR``): two identical non-learned
    outputs are not a reproduced training run.
    """
    require_step(steps, "retrain")
    learned = float(np.mean([r["mean_dice"] for r in repro_scores]))
    assert learned >= scoring.LEARNED_DICE_FLOOR, f"the re-run reaches held-out mean Dice {learned:.3f} only"
    try:
        value = scoring.agreement(predictions, repro_predictions, heldout_inputs)
    except scoring.PredictionError as err:
        raise AssertionError(f"the two runs' predictions cannot be compared: {err}") from None
    assert value >= MIN_AGREEMENT, (
        f"the two runs' held-out segmentations agree with mean Dice {value:.4f}, below {MIN_AGREEMENT} "
        "(seed or settings missing from the saved config?)")
