"""Random data augmentation for batched 2D and 3D medical images, as seeded TensorFlow graph ops.

Every augmentation is a plain function on a batched tensor (``(B, H, W, C)`` or ``(B, D, H, W, C)``;
the spatial rank comes from the input shape) with

- per-sample random parameters (each image in the batch gets its own draw),
- ``prob``: the probability that a sample is augmented at all (MONAI's ``prob``),
- ``seed``: an explicit stateless seed, a shape-``[2]`` integer tensor (or a Python int).

The same seed always gives the same output, in eager mode, inside ``tf.data`` and under
``tf.function(jit_compile=True)``. Never call ``np.random`` here: inside ``Dataset.map`` it would run
once at trace time and every batch would get the same "random" transform.

Each function also exists as a Keras layer (``RandomBiasField``, ``RandomRicianNoise``, ...) that
draws its seeds from a ``keras.random.SeedGenerator``, so augmentation can run inside a model on a GPU
(TensorFlow backend; the resampling itself, ``data_utils.spatial``, runs on any Keras backend).

``Compose([...])`` applies a chain to dict elements ``{"image", "label", ...}`` and fuses consecutive
geometric steps into one resampling; ``apply_to_dataset(ds, chain, seed)`` maps it over a batched
``tf.data.Dataset`` with fresh, reproducible randomness for every batch.

Semantics follow MONAI's transforms (``RandBiasField``, ``RandRicianNoise``, ``RandAdjustContrast``,
``RandAffine``, ``Rand3DElastic``, ``RandGibbsNoise``, ``RandKSpaceSpikeNoise``); differences are
stated in each docstring.
"""

from __future__ import annotations

from data_utils.augment.seeding import (
    as_seed,
    batch_seed,
    replica_id,
    spatial_rank,
    split_seed,
    stateless_seed,
)
from data_utils.augment.intensity import (
    bias_field,
    brightness,
    contrast,
    ct_window,
    cutout,
    gamma,
    gaussian_blur,
    gaussian_noise,
    histogram_shift,
    low_resolution,
    rician_noise,
    smooth,
    speckle_noise,
)
from data_utils.augment.kspace import (
    gibbs_ringing,
    kspace_spikes,
)
from data_utils.augment.mixing import (
    cutmix,
    mixup,
)
from data_utils.augment.spatial import (
    draw_affine,
    draw_elastic,
    draw_flip,
    draw_projective,
    draw_rot90,
    elastic,
    flip,
    random_affine,
    random_projective,
    realize_transform,
    rot90,
)
from data_utils.augment.compose import (
    Affine,
    apply_to_dataset,
    Augmentation,
    BatchAugmentation,
    BiasField,
    Brightness,
    Compose,
    Contrast,
    CTWindow,
    CutMix,
    Cutout,
    Elastic,
    Flip,
    Gamma,
    GaussianBlur,
    GaussianNoise,
    GibbsRinging,
    HistogramShift,
    KSpaceSpikes,
    LowResolution,
    MixUp,
    Projective,
    RicianNoise,
    Rot90,
    SpatialAugmentation,
    SpeckleNoise,
)
from data_utils.augment.layers import (
    RandomAffine,
    RandomAugmentation,
    RandomBiasField,
    RandomBrightness,
    RandomContrast,
    RandomCTWindow,
    RandomCutMix,
    RandomCutout,
    RandomElastic,
    RandomFlip,
    RandomGamma,
    RandomGaussianBlur,
    RandomGaussianNoise,
    RandomGibbsRinging,
    RandomHistogramShift,
    RandomKSpaceSpikes,
    RandomLowResolution,
    RandomMixUp,
    RandomProjective,
    RandomRicianNoise,
    RandomRot90,
    RandomSpeckleNoise,
)
