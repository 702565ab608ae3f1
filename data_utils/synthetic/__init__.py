"""Deterministic synthetic datasets with known ground truth, for every task the course teaches.

- ``phantom``: NumPy primitives shared by all generators (2D and 3D): coordinate grids, smooth
  random blobs and deformations, soft partial-volume masks, tissue texture, MR bias field and
  Rician noise.
- ``pelvic``: 3D male-pelvis T2 MR volumes labelled bladder / prostate / rectum, written as
  NIfTI pairs (``generate_pelvic_dataset``).
- ``ultrasound``: 2D B-mode ultrasound-like classification images (``make_ultrasound_dataset``).
- ``registration``: 2D/3D image pairs with a known smooth deformation, label maps and landmarks
  (``make_registration_pairs``).
- ``sequences``: cine MR frame sequences of a beating heart (normal / wall-motion defect) and
  ECG-like signals with rhythm classes and per-sample wave labels, and a long-delay recall task
  (``make_cine_dataset``, ``make_ecg_dataset``, ``make_recall_dataset``).
- ``pointclouds``: organ-surface point clouds with shape classes and per-point part labels
  (``make_pointcloud_dataset``).
- ``modalities``: registered 2D head slices in T1, T2, FLAIR and CT contrasts, for synthesis
  (``make_modality_pairs``).
- ``mil``: bags of patches for multiple-instance learning, with hidden instance labels
  (``make_mil_dataset``).

Every generator takes a seed: the same seed gives the same data.

The ``make_*`` generators can be imported from here (``from data_utils.synthetic import
make_ultrasound_dataset``); each module is imported only when its generator is first used.
"""

import importlib

# Public generator -> the module that defines it (imported on first use: some need TensorFlow).
_EXPORTS = {
    "make_ultrasound_dataset": "ultrasound",
    "make_registration_pairs": "registration",
    "make_cine_dataset": "sequences",
    "make_ecg_dataset": "sequences",
    "make_recall_dataset": "sequences",
    "make_pointcloud_dataset": "pointclouds",
    "make_modality_pairs": "modalities",
    "make_mil_dataset": "mil",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
