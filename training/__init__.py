"""Training: losses, metrics and the pieces that turn a model and a dataset into a trained run.

Modules (import the one you need; nothing is imported eagerly, so ``import training`` stays cheap):

- ``training.losses``: segmentation losses (soft Dice, generalised Dice, Dice + cross-entropy, focal,
  Tversky, weighted cross-entropy with label smoothing), registration losses (SSD, local normalised
  cross-correlation, mutual information) and displacement regularisers (bending energy, gradient
  norm), the VAE's KL term and GAN losses.
- ``training.metrics``: evaluation on NumPy label volumes in millimetres (Dice, IoU, HD95, average
  surface distance, sensitivity, ...), synthesis and registration metrics, and streaming Keras metrics
  for ``fit()``.
- ``training.optim``: optimisers by name, learning-rate schedules with warm-up, clipping and EMA.
- ``training.regularization``: L1/L2 weight penalties, weight noise, ensembles, Monte-Carlo dropout.
- ``training.reproducibility``: ``set_seed`` and a record of package versions for run configs.

Trainers (custom ``train_step`` models), the explicit distributed loop, callbacks and run configuration
live in their own modules of this package.
"""

import data_utils  # noqa: F401  (the kit's TensorFlow settings, before TensorFlow is imported)
