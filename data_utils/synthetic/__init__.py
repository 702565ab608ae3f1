"""Deterministic synthetic datasets with known ground truth, for every task the course teaches.

- ``phantom``: NumPy primitives shared by all generators (2D and 3D): coordinate grids, smooth
  random blobs and deformations, soft partial-volume masks, tissue texture, MR bias field and
  Rician noise.
- ``pelvic``: 3D male-pelvis T2 MR volumes labelled bladder / prostate / rectum, written as
  NIfTI pairs (``generate_pelvic_dataset``).

Every generator takes a seed: the same seed gives the same data.
"""
