"""Configured augmentation steps, their composition (with fusion of spatial steps), and tf.data."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from data_utils.registry import REGISTRY
from data_utils.augment.seeding import _batch_size, as_seed, batch_seed, no_autograph, spatial_rank, split_seed
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
    speckle_noise,
)
from data_utils.augment.kspace import gibbs_ringing, kspace_spikes
from data_utils.augment.mixing import cutmix, mixup
from data_utils.augment.spatial import (
    _resample,
    _resample_xla,
    draw_affine,
    draw_elastic,
    draw_flip,
    draw_projective,
    draw_rot90,
    elastic,
    flip,
    random_affine,
    random_projective,
    realize_for_xla,
    rot90,
)


class Augmentation:
    """One configured augmentation step: a function above plus its keyword arguments.

    Intensity steps change the image only; spatial steps (``kind = "spatial"``) move image and label
    together and can be fused by :class:`Compose`; batch steps (mixup, cutmix) mix samples.
    """

    kind = "intensity"
    function = None

    def __init__(self, **kwargs):
        import inspect

        allowed = set(inspect.signature(type(self).function).parameters) - {"image", "label", "seed"}
        unknown = set(kwargs) - allowed
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unknown arguments {sorted(unknown)}; allowed: {sorted(allowed)}."
            )
        self.kwargs = dict(kwargs)

    @no_autograph
    def __call__(self, image, seed, label=None):
        """Apply to a batch: returns the image (and the label unchanged if one is given)."""
        out = type(self).function(image, seed, **self.kwargs)
        return out if label is None else (out, label)

    def get_config(self) -> dict:
        return dict(self.kwargs)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{type(self).__name__}({args})"


class SpatialAugmentation(Augmentation):
    """A geometric step: draws a transform that Compose can fuse with its neighbours."""

    kind = "spatial"
    draw = None
    exact = False  # True for flips/rot90: integer matrices, nearest sampling is lossless
    default_padding = "reflection"

    @no_autograph
    def __call__(self, image, seed, label=None):
        return type(self).function(image, seed, label=label, **self.kwargs)

    @property
    def padding(self) -> str:
        return self.kwargs.get("padding", self.default_padding)

    def draw_transform(self, seed, batch, spatial_shape):
        kwargs = {k: v for k, v in self.kwargs.items() if k != "padding"}
        return type(self).draw(seed, batch, spatial_shape, **kwargs)


class BatchAugmentation(Augmentation):
    """A step that mixes samples of the batch and their labels (needs a label)."""

    kind = "batch"

    @no_autograph
    def __call__(self, image, seed, label=None):
        if label is None:
            raise ValueError(f"{type(self).__name__} mixes labels too: give a label (a dict with 'label').")
        return type(self).function(image, label, seed, **self.kwargs)


def _spec(name, base, function, **attrs):
    attrs.update(function=staticmethod(function), __doc__=f"Configured :func:`{function.__name__}` step.")
    return type(name, (base,), attrs)


Flip = _spec("Flip", SpatialAugmentation, flip, draw=staticmethod(draw_flip), exact=True)
Rot90 = _spec("Rot90", SpatialAugmentation, rot90, draw=staticmethod(draw_rot90), exact=True)
Affine = _spec("Affine", SpatialAugmentation, random_affine, draw=staticmethod(draw_affine))
Elastic = _spec("Elastic", SpatialAugmentation, elastic, draw=staticmethod(draw_elastic))
BiasField = _spec("BiasField", Augmentation, bias_field)
RicianNoise = _spec("RicianNoise", Augmentation, rician_noise)
GaussianNoise = _spec("GaussianNoise", Augmentation, gaussian_noise)
SpeckleNoise = _spec("SpeckleNoise", Augmentation, speckle_noise)
Gamma = _spec("Gamma", Augmentation, gamma)
Brightness = _spec("Brightness", Augmentation, brightness)
Contrast = _spec("Contrast", Augmentation, contrast)
HistogramShift = _spec("HistogramShift", Augmentation, histogram_shift)
GibbsRinging = _spec("GibbsRinging", Augmentation, gibbs_ringing)
KSpaceSpikes = _spec("KSpaceSpikes", Augmentation, kspace_spikes)
GaussianBlur = _spec("GaussianBlur", Augmentation, gaussian_blur)
LowResolution = _spec("LowResolution", Augmentation, low_resolution)
Cutout = _spec("Cutout", Augmentation, cutout)
MixUp = _spec("MixUp", BatchAugmentation, mixup)
CutMix = _spec("CutMix", BatchAugmentation, cutmix)
Projective = _spec("Projective", SpatialAugmentation, random_projective, draw=staticmethod(draw_projective),
                   default_padding="border")
CTWindow = _spec("CTWindow", Augmentation, ct_window)

# Every configured step by name in the kit's registry (category "augmentation"): "flip", "affine",
# "bias_field", ... (the class name in snake_case), so configs and command lines can name them.
for _cls in (Flip, Rot90, Affine, Elastic, BiasField, RicianNoise, GaussianNoise, SpeckleNoise, Gamma,
             Brightness, Contrast, HistogramShift, GibbsRinging, KSpaceSpikes, GaussianBlur,
             LowResolution, Cutout, MixUp, CutMix, Projective, CTWindow):
    REGISTRY.register("augmentation", _cls.function.__name__.replace("random_", ""), _cls)


class Compose:
    """Apply a chain of augmentations to a batched dict element ``{"image", "label", ...}``.

    Geometric steps move image and label together (image linear, label nearest: it stays integer
    with the same classes); consecutive geometric steps are FUSED into one resampling (flips,
    rotations, affines and elastic fields are composed into one sampling grid first) as long as
    their ``padding`` agrees: a step with another padding starts a new resampling, so every step
    fills what it moves in with its own padding, exactly as when applied one by one. (Flips and
    90-degree rotations move nothing in, so they join any run.) Intensity steps change the image
    only. Other keys pass through unchanged.

    Args:
        transforms: list of :class:`Augmentation` objects, applied in order.
        image_key, label_key: dict keys of the image ``(B, *spatial, C)`` and the optional label.
        jit_compile: run the fused resampling under XLA (``tf.function(jit_compile=True)``),
            2-5x faster on CPU in 3D. Random numbers are always drawn outside XLA (XLA's
            stateless RNG gives other numbers), so the output does not depend on this flag.

    Call: ``chain(element, seed)`` with a stateless seed (shape-[2] int tensor or int).
    """

    def __init__(self, transforms, image_key: str = "image", label_key: str = "label",
                 jit_compile: bool = False):
        transforms = list(transforms)
        for t in transforms:
            if not isinstance(t, Augmentation):
                raise TypeError(f"Compose takes Augmentation objects (e.g. augment.Flip()), got {t!r}.")
        self.transforms = transforms
        self.image_key, self.label_key = image_key, label_key
        self.jit_compile = jit_compile

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"

    @no_autograph
    def __call__(self, element, seed):
        """Augment a dict element (or a bare image tensor) with a stateless seed."""
        if not isinstance(element, dict):
            image, _ = self._run(element, None, seed)
            return image
        if self.image_key not in element:
            raise KeyError(f"Compose expects the image under key {self.image_key!r}; got keys {sorted(element)}.")
        out = dict(element)
        image, label = self._run(element[self.image_key], element.get(self.label_key), seed)
        out[self.image_key] = image
        if label is not None:
            out[self.label_key] = label
        return out

    def _run(self, image, label, seed):
        return self.augment(image, label, as_seed(seed))

    def augment(self, image, label, seed):
        """The chain on tensors: returns ``(image, label)`` (label None if none was given)."""
        image = tf.convert_to_tensor(image, tf.float32)
        spatial_rank(image)
        label = None if label is None else tf.convert_to_tensor(label)
        shape = [int(n) for n in image.shape[1:-1]]
        batch = _batch_size(image)
        seeds = split_seed(seed, max(len(self.transforms), 1))
        pending = []

        def flush(image, label):
            if not pending:
                return image, label
            if len(pending) == 1 and not (self.jit_compile and not pending[0][0].exact):
                t, s = pending[0]
                out = t(image, s, label=label)
                return (out, None) if label is None else out
            # Elastic fields are smoothed at their coarse resolution outside XLA (batched matrix
            # products run faster on oneDNN than under XLA on CPU) and, compiled, upsampled by XLA.
            transforms = [t.draw_transform(s, batch, shape) for t, s in pending]
            if self.jit_compile:
                transforms = [realize_for_xla(t, shape) for t in transforms]
            padding = run_padding()
            resample = _resample_xla if self.jit_compile else _resample
            return resample(image, label, transforms, padding or "border",
                            "nearest" if padding is None else "linear")

        def run_padding():
            return next((t.padding for t, _ in pending if not t.exact), None)

        for i, t in enumerate(self.transforms):
            if t.kind == "spatial":
                if not t.exact and run_padding() not in (None, t.padding):
                    image, label = flush(image, label)  # one grid cannot pad two ways
                    pending = []
                pending.append((t, seeds[i]))
                continue
            image, label = flush(image, label)
            pending = []
            if t.kind == "batch":
                image, label = t(image, seeds[i], label=label)
            else:
                image = t(image, seeds[i])
        image, label = flush(image, label)
        return image, label



def apply_to_dataset(dataset, chain, seed, num_parallel_calls=tf.data.AUTOTUNE, deterministic: bool = True,
                     new_randomness_each_epoch: bool = True):
    """Map an augmentation chain over a *batched* ``tf.data.Dataset`` of dict elements.

    Every batch gets its own stateless seed derived from ``seed``, so runs are reproducible and no
    randomness is frozen at trace time. With ``new_randomness_each_epoch`` (needs an int ``seed``)
    the per-batch seeds come from ``tf.data.Dataset.random(seed, rerandomize_each_iteration=True)``,
    so each pass over the data (epoch) is augmented differently yet reproducibly; otherwise the seed
    is ``fold_in(seed, batch_index)`` and every epoch repeats the same augmentations.

    Args:
        dataset: batched dataset of dicts with ``"image"`` ``(B, *spatial, C)`` (and ``"label"``).
        chain: a :class:`Compose`, a list of augmentations, or any callable
            ``chain(element, seed) -> element`` (it gets the same per-batch seeds).
        seed: int (or shape-[2] tensor when ``new_randomness_each_epoch=False``).

    Returns:
        The augmented dataset, with ``tf.data``'s autotuning off as in every kit pipeline
        (:func:`data_utils.datasets.fixed_parallelism`: ``AUTOTUNE`` is one call per core).
    """
    from data_utils.datasets import fixed_parallelism  # here: datasets imports this module

    if isinstance(chain, (list, tuple)):
        chain = Compose(chain)
    if not callable(chain):
        raise TypeError(f"`chain` must be an augment.Compose, a list of augmentations or a callable, got {chain!r}.")
    base = as_seed(seed)
    if new_randomness_each_epoch:
        if not isinstance(seed, (int, np.integer)):
            raise ValueError("apply_to_dataset(new_randomness_each_epoch=True) needs an int `seed`.")
        randoms = tf.data.Dataset.random(seed=int(seed), rerandomize_each_iteration=True)
        dataset = tf.data.Dataset.zip((randoms, dataset))
    else:
        dataset = dataset.enumerate()

    @no_autograph  # the chain has no tensor-dependent control flow to convert (see seeding.no_autograph)
    def augment_batch(counter, element):
        return chain(element, batch_seed(base, counter))

    return fixed_parallelism(dataset.map(augment_batch, num_parallel_calls=num_parallel_calls,
                                         deterministic=deterministic))

