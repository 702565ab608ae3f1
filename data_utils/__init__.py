"""The data layer: reading medical images, synthetic phantoms, preprocessing and tf.data pipelines.

Modules (import the one you need; this package imports nothing heavy on its own):

- ``data_utils.io``: NIfTI read/write with affine and spacing, reorientation, errors (``DataError``) that name the file.
- ``data_utils.datasets``: folders of image/label pairs -> case-level splits -> ``tf.data``
  pipelines of 2D slices, 3D patches or whole volumes (dict elements).
- ``data_utils.preprocess``: reorientation, resampling, intensity normalisation, CT windowing,
  cropping and padding; NumPy for whole volumes and TensorFlow graph ops for batches.
- ``data_utils.augment``: seeded, batched 2D/3D augmentation graph ops and Keras layers.
- ``data_utils.spatial``: resampling of batched images and labels (warps, affine grids).
- ``data_utils.registry``: the one registry of names -> builders (models, losses, augmentations, optimisers).
- ``data_utils.inference``: sliding-window inference over whole volumes.
- ``data_utils.formats`` / ``data_utils.layouts`` / ``data_utils.download``: other file formats
  (npz, h5, PNG, DICOM), dataset layouts (Decathlon, CSV) and verified downloads of real datasets.
- ``data_utils.synthetic``: deterministic phantoms with known ground truth (e.g. ``synthetic.pelvic``).
"""

# The kit's TensorFlow settings (oneDNN, log level), before anything imports TensorFlow, and a
# quicker interpreter exit once it is loaded.
from data_utils.environment import configure_tensorflow, quick_exit_after_tensorflow

configure_tensorflow()
quick_exit_after_tensorflow()
