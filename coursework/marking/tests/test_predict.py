"""Marking: the inference contract ``python -m coursework.predict IN_DIR OUT_DIR`` on unseen volumes."""

from coursework import scoring


def test_predict_contract(predictions, refused_predictions, heldout_inputs):
    """One regular NIfTI file per input, with the input's shape and affine, integer labels in 0..3, nothing else."""
    problems = scoring.check_predictions(predictions, heldout_inputs, refused_predictions)
    assert not problems, "the predict contract does not hold:\n" + "\n".join(problems[:12])
