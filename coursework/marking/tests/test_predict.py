"""Marking: the inference contract ``python -m coursework.predict IN_DIR OUT_DIR`` on unseen volumes."""

import nibabel as nib
import numpy as np

from coursework.marking.fixtures import prediction_name

NUM_CLASSES = 4  # 0 background, 1 bladder, 2 prostate, 3 rectum


def test_predict_contract(predictions, heldout_inputs):
    """One integer label map per input, with the input's shape and affine and labels in 0..3."""
    out = predictions
    inputs = sorted(p for p in heldout_inputs.iterdir() if p.name.endswith((".nii", ".nii.gz")))
    for image_path in inputs:
        pred_path = out / prediction_name(image_path)
        assert pred_path.is_file(), f"no prediction {pred_path.name} for input {image_path.name}"
        image = nib.load(str(image_path))
        pred = nib.load(str(pred_path))
        assert pred.shape == image.shape, f"{pred_path.name}: shape {pred.shape}, input has {image.shape}"
        assert np.allclose(pred.affine, image.affine, atol=1e-4), f"{pred_path.name}: affine differs from the input's"
        data = np.asanyarray(pred.dataobj)
        assert np.issubdtype(data.dtype, np.integer), f"{pred_path.name}: labels stored as {data.dtype}, expected integers"
        labels = set(np.unique(data).tolist())
        assert labels <= set(range(NUM_CLASSES)), f"{pred_path.name}: labels {sorted(labels)} outside 0..{NUM_CLASSES - 1}"
    extra = sorted(p.name for p in out.iterdir() if p.name.endswith(".nii.gz")
                   and p.name not in {prediction_name(i) for i in inputs})
    assert not extra, f"unexpected outputs {extra}"
