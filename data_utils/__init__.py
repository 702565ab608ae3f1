"""The data layer: reading medical images, synthetic phantoms, preprocessing and tf.data pipelines.

Modules (import the one you need; this package imports nothing heavy on its own):

- ``data_utils.io``: NIfTI read/write with affine and spacing, reorientation, clear ``DataError``\\ s.
- ``data_utils.datasets``: folders of image/label pairs -> case-level splits -> ``tf.data``
  pipelines of 2D slices, 3D patches or whole volumes (dict elements).
- ``data_utils.preprocess``: reorientation, resampling, intensity normalisation, CT windowing,
  cropping and padding; NumPy for whole volumes and TensorFlow graph ops for batches.
- ``data_utils.augment``: seeded, batched 2D/3D augmentation graph ops and Keras layers.
- ``data_utils.synthetic``: deterministic phantoms with known ground truth (e.g. ``synthetic.pelvic``).
"""

import os

# oneDNN kernels roughly double conv-net throughput on AVX2 CPUs (see README, "Speed"); TensorFlow
# reads this variable once, at import, so it is set before anything imports TensorFlow.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
