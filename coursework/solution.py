"""YOUR SOLUTION: the places where a group plugs in its own model, loss, augmentation and inference.

The untouched template is the baseline every group must reproduce and then beat: a 2D U-Net on
axial slices, Dice + cross-entropy loss, random flips and affine transforms, slice-by-slice
inference. ``coursework.train``, ``coursework.evaluate`` and ``coursework.predict`` call only the
functions below, so changing one of them changes the whole pipeline consistently (training,
test evaluation and the marked predictions).

Look for the ``>>> PLUG-IN POINT`` markers. Rules of the game:

- keep the function names and signatures (the entry points and the marking call them);
- everything you need must come from the config (``coursework/config.py``), so a run can be
  reproduced from its saved ``config.yaml``; add a field there for every new setting;
- never look at the test cases while developing: model selection uses the validation cases only.
"""

from __future__ import annotations

import numpy as np

import models
from coursework.config import NUM_CLASSES, CourseworkConfig


# >>> PLUG-IN POINT 1: the model ------------------------------------------------------------
def build_model(cfg: CourseworkConfig, input_shape: tuple[int, ...], num_classes: int = NUM_CLASSES):
    """The segmentation network.

    Args:
        cfg: the run's settings (``cfg.model``, ``cfg.depth``, ``cfg.base_filters``, ``cfg.norm``).
        input_shape: ``(H, W, 1)`` in 2D mode, ``(D, H, W, 1)`` in 3D mode; spatial sizes may be
            ``None`` so that whole slices/volumes of any size can be predicted.
        num_classes: output channels (background + structures).

    Returns:
        A ``keras.Model`` mapping ``(B, *spatial, 1)`` images to ``(B, *spatial, num_classes)``
        softmax probabilities (float32).
    """
    return models.get(
        cfg.model,
        input_shape=input_shape,
        num_classes=num_classes,
        depth=cfg.depth,
        base_filters=cfg.base_filters,
        norm=cfg.norm,
    )


# >>> PLUG-IN POINT 2: the loss -------------------------------------------------------------
def build_loss(cfg: CourseworkConfig):
    """The training loss: ``y_true`` integer labels ``(B, *spatial)``, ``y_pred`` probabilities.

    Returns:
        A ``keras.losses.Loss`` (from ``training.losses``; write a new one there, with a test,
        if your research question needs it).
    """
    from training import losses

    return losses.get(cfg.loss)


# >>> PLUG-IN POINT 3: augmentation ---------------------------------------------------------
def augmentation(cfg: CourseworkConfig):
    """The augmentation chain applied to training batches (``None`` for none).

    Returns:
        A function ``(batch, seed) -> batch`` on dicts ``{"image": (B, *spatial, 1) float32,
        "label": (B, *spatial) int32}`` made of ``data_utils.augment`` graph ops, or ``None``.
    """
    from data_utils import augment

    steps = {
        # Left-right mirroring only: anterior-posterior and superior-inferior flips would put the
        # bladder behind the rectum, which no patient shows.
        "flip": lambda: augment.Flip(axes=(-1,), prob=0.5),
        # Small rotations, scalings and shifts: patient position and size vary between scans.
        "affine": lambda: augment.Affine(prob=0.8, rotation=0.15, scale=0.1, translation=4.0),
    }
    if not cfg.augment:
        return None
    # Any other registered augmentation (``--augment elastic``) with its library defaults.
    from data_utils.registry import REGISTRY

    return augment.Compose([steps[name]() if name in steps else REGISTRY.build("augmentation", name)
                            for name in cfg.augment])


# >>> PLUG-IN POINT 4: pre-processing and inference ------------------------------------------
def preprocess(image: np.ndarray) -> np.ndarray:
    """Intensity normalisation of one volume (z-score over the volume), as used in training.

    Args:
        image: ``(D, H, W)`` float volume.

    Returns:
        ``(D, H, W)`` float32.
    """
    from data_utils.preprocess import zscore

    return zscore(image)


def predict_volume(model, image: np.ndarray, cfg: CourseworkConfig, batch_size: int = 16) -> np.ndarray:
    """Label map of one volume in the kit's ``(D, H, W)`` layout (axial slices along ``D``).

    Args:
        model: the trained network from :func:`build_model`.
        image: ``(D, H, W)`` raw intensities (this function normalises them with :func:`preprocess`).
        cfg: the run's settings.
        batch_size: slices per forward pass.

    Returns:
        ``(D, H, W)`` integer labels in ``0 .. NUM_CLASSES - 1``.
    """
    x = preprocess(image)
    if cfg.mode == "2d":
        probs = _predict_slices(model, x, 2**cfg.depth, batch_size)
    else:
        from data_utils.inference import sliding_window_inference

        probs = sliding_window_inference(x[None, ..., None], model, window_shape=tuple(cfg.patch_size), overlap=0.5,
                                         batch_size=batch_size)[0]
    labels = np.argmax(probs, axis=-1).astype(np.int32)
    return keep_largest_components(labels) if cfg.largest_component else labels


def keep_largest_components(labels: np.ndarray) -> np.ndarray:
    """Keep, for every structure, only its largest 3D connected component (the rest becomes background).

    Each pelvic structure is one organ, so a detached island of "prostate" is a false positive; it
    costs little Dice but can dominate HD95 (it sits far from the organ).

    Args:
        labels: ``(D, H, W)`` integer label map.

    Returns:
        ``(D, H, W)`` int32 label map with at most one component per label value.
    """
    from scipy import ndimage

    out = np.zeros_like(labels, dtype=np.int32)
    for value in np.unique(labels):
        if value == 0:
            continue
        components, count = ndimage.label(labels == value)
        if count:
            sizes = np.bincount(components.ravel())[1:]
            out[components == 1 + int(np.argmax(sizes))] = value
    return out


def _predict_slices(model, volume: np.ndarray, factor: int, batch_size: int) -> np.ndarray:
    """Per-slice probabilities ``(D, H, W, C)``; H and W are padded to a multiple of ``factor``
    (a U-Net of depth ``n`` halves the size ``n`` times) and the padding is cut off again."""
    d, h, w = volume.shape
    ph, pw = (-h) % factor, (-w) % factor
    padded = np.pad(volume, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)), mode="edge")
    x = padded[..., None]
    # predict_on_batch per chunk, not model.predict: predict builds a tf.data pipeline on every call,
    # which took longer than the network itself for one volume (measured: 0.15-0.18 s against
    # 0.23-0.36 s for 40 slices of 80x80 on 2 CPU cores; same output).
    probs = np.concatenate([model.predict_on_batch(x[i : i + batch_size]) for i in range(0, d, batch_size)])
    return probs[:, ph // 2 : ph // 2 + h, pw // 2 : pw // 2 + w]
