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

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from data_utils.augment.seeding import (  # noqa: E402
    as_seed,
    batch_seed,
    spatial_rank,
    split_seed,
)
from data_utils.augment.intensity import (  # noqa: E402
    bias_field,
    brightness,
    contrast,
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
from data_utils.augment.kspace import (  # noqa: E402
    gibbs_ringing,
    kspace_spikes,
)
from data_utils.augment.mixing import (  # noqa: E402
    cutmix,
    mixup,
)
from data_utils.augment.spatial import (  # noqa: E402
    draw_affine,
    draw_elastic,
    draw_flip,
    draw_rot90,
    elastic,
    flip,
    random_affine,
    realize_transform,
    rot90,
)
from data_utils.augment.compose import (  # noqa: E402
    Affine,
    apply_to_dataset,
    Augmentation,
    BatchAugmentation,
    BiasField,
    Brightness,
    Compose,
    Contrast,
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
    RicianNoise,
    Rot90,
    SpatialAugmentation,
    SpeckleNoise,
)
from data_utils.augment.layers import (  # noqa: E402
    RandomAffine,
    RandomAugmentation,
    RandomBiasField,
    RandomBrightness,
    RandomContrast,
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
    RandomRicianNoise,
    RandomRot90,
    RandomSpeckleNoise,
)
