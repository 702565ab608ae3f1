"""Keras layers: the same augmentations inside a model (on GPU), seeded by a SeedGenerator."""

from __future__ import annotations

import keras

from data_utils.augment.seeding import stateless_seed
from data_utils.augment.compose import (
    Affine,
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
    SpeckleNoise,
)


class RandomAugmentation(keras.layers.Layer):
    """Base of the augmentation layers: applies its step when ``training`` is true, else passes through.

    Input: an image ``(B, *spatial, C)`` or a dict ``{"image", "label", ...}`` (geometric steps then
    move the label too; mixup/cutmix need the dict). Seeds come from a ``keras.random.SeedGenerator``.

    Args:
        seed: int seed of the layer's SeedGenerator (None: random).
        **kwargs: the step's arguments (see the function of the same name), plus Layer arguments.
    """

    augmentation_class = None

    def __init__(self, seed=None, name=None, **kwargs):
        layer_kwargs = {k: kwargs.pop(k) for k in ("trainable", "dtype") if k in kwargs}
        super().__init__(name=name, **layer_kwargs)
        self.augmentation = self.augmentation_class(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=True):
        if not training:
            return inputs
        # A new seed per call, and per replica under a tf.distribute strategy.
        seed = stateless_seed(self.seed_generator)
        if isinstance(inputs, dict):
            return Compose([self.augmentation])(inputs, seed)
        if self.augmentation.kind == "batch":
            raise ValueError(f"{type(self).__name__} needs a dict input with 'image' and 'label'.")
        return self.augmentation(inputs, seed)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(self.augmentation.get_config())
        config["seed"] = self.seed
        return config


def _layer(name, spec):
    cls = type(name, (RandomAugmentation,), {
        "augmentation_class": spec,
        "__doc__": f"Keras layer applying :class:`{spec.__name__}` (see :func:`{spec.function.__name__}`).",
        "__module__": __name__,
    })
    return keras.saving.register_keras_serializable(package="medkit")(cls)


RandomFlip = _layer("RandomFlip", Flip)
RandomRot90 = _layer("RandomRot90", Rot90)
RandomAffine = _layer("RandomAffine", Affine)
RandomElastic = _layer("RandomElastic", Elastic)
RandomBiasField = _layer("RandomBiasField", BiasField)
RandomRicianNoise = _layer("RandomRicianNoise", RicianNoise)
RandomGaussianNoise = _layer("RandomGaussianNoise", GaussianNoise)
RandomSpeckleNoise = _layer("RandomSpeckleNoise", SpeckleNoise)
RandomGamma = _layer("RandomGamma", Gamma)
RandomBrightness = _layer("RandomBrightness", Brightness)
RandomContrast = _layer("RandomContrast", Contrast)
RandomHistogramShift = _layer("RandomHistogramShift", HistogramShift)
RandomGibbsRinging = _layer("RandomGibbsRinging", GibbsRinging)
RandomKSpaceSpikes = _layer("RandomKSpaceSpikes", KSpaceSpikes)
RandomGaussianBlur = _layer("RandomGaussianBlur", GaussianBlur)
RandomLowResolution = _layer("RandomLowResolution", LowResolution)
RandomCutout = _layer("RandomCutout", Cutout)
RandomMixUp = _layer("RandomMixUp", MixUp)
RandomCutMix = _layer("RandomCutMix", CutMix)
RandomProjective = _layer("RandomProjective", Projective)


@keras.saving.register_keras_serializable(package="medkit")
class RandomCTWindow(_layer("_RandomCTWindowBase", CTWindow)):
    """Keras layer applying :class:`CTWindow` (see :func:`ct_window`).

    Unlike the other augmentation layers it is not the identity at inference: windowing maps HU to
    the network's input range, so inference applies the nominal window (no jitter).
    """

    def call(self, inputs, training=True):
        if training:
            return super().call(inputs, training=True)
        nominal = CTWindow(**{**self.augmentation.kwargs, "prob": 0.0})
        if isinstance(inputs, dict):
            return Compose([nominal])(inputs, 0)
        return nominal(inputs, as_seed(0))
