"""Sliding-window inference over whole 2D/3D volumes with overlap and Gaussian blending.

A network trained on patches (say 96^3) cannot see a whole 256x256x128 scan at once. We slide a
window over the volume with some overlap, run the model on batches of windows and blend the
overlapping predictions with weights that fall off towards the window edges (MONAI's
``sliding_window_inference`` with ``mode="gaussian"``), so seams between windows disappear.

Memory is bounded by one batch of windows plus the output volume, not by the input size: windows
are cut, predicted and accumulated batch by batch.
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def gaussian_importance_map(window_shape, sigma_scale: float = 0.125, min_weight: float = 1e-3) -> np.ndarray:
    """Blending weights for one window: a Gaussian centred on it, peak 1 (MONAI's importance map).

    Args:
        window_shape: ``(H, W)`` or ``(D, H, W)``.
        sigma_scale: Gaussian sigma as a fraction of each window side (MONAI's default 0.125).
        min_weight: floor of the weights, so every voxel of the window counts a little and voxels
            seen only by window edges still get a prediction.

    Returns:
        float32 array of shape ``window_shape``, values in ``[min_weight, 1]``.
    """
    weights = np.ones([1] * len(window_shape), dtype="float64")
    for axis, n in enumerate(window_shape):
        centre = (n - 1) / 2.0
        sigma = max(sigma_scale * n, 1e-6)
        profile = np.exp(-0.5 * ((np.arange(n) - centre) / sigma) ** 2)
        shape = [1] * len(window_shape)
        shape[axis] = n
        weights = weights * profile.reshape(shape)
    weights = weights / weights.max()
    return np.maximum(weights, min_weight).astype("float32")


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Start indices of windows covering ``[0, size)``: step ``window * (1 - overlap)``, last one flush.

    Args:
        size: length of the (padded) axis, ``>= window``.
        window: window length.
        overlap: fraction of overlap between neighbouring windows, in ``[0, 1)``.
    """
    if size <= window:
        return [0]
    step = max(1, int(round(window * (1.0 - overlap))))
    starts = list(range(0, size - window + 1, step))
    if starts[-1] != size - window:
        starts.append(size - window)  # the last window ends at the border
    return starts


def _predict(model, windows):
    """Call a Keras model (inference mode) or any callable; return a NumPy float32 array."""
    try:
        import keras

        if isinstance(model, (keras.Model, keras.layers.Layer)):
            return np.asarray(model(windows, training=False), dtype="float32")
    except ImportError:  # pragma: no cover - keras is a kit dependency
        pass
    return np.asarray(model(windows), dtype="float32")


def sliding_window_inference(
    volume, model, window_shape, overlap: float = 0.25, batch_size: int = 4, blend: str = "gaussian",
    sigma_scale: float = 0.125, pad_value: float = 0.0, progress: bool = False,
) -> np.ndarray:
    """Predict a whole 2D/3D volume with a model that takes fixed-size windows.

    Args:
        volume: ``(B, *spatial, C)`` array or tensor (2 or 3 spatial axes).
        model: Keras model or callable mapping ``(N, *window_shape, C)`` to ``(N, *window_shape, K)``.
        window_shape: the model's input size, ``(H, W)`` or ``(D, H, W)``.
        overlap: fraction of overlap between neighbouring windows, in ``[0, 1)``.
        batch_size: windows per model call; bounds the memory used besides the output.
        blend: ``"gaussian"`` (weights fall off towards window edges) or ``"constant"`` (plain mean).
        sigma_scale: Gaussian sigma as a fraction of the window side.
        pad_value: value used to pad volumes smaller than the window (cropped off afterwards).
        progress: show a Keras progress bar over the window batches.

    Returns:
        float32 NumPy array ``(B, *spatial, K)``: the blended predictions (for softmax outputs still
        probabilities, since blending is a convex combination).
    """
    volume = np.asarray(volume, dtype="float32")
    rank = volume.ndim - 2
    window_shape = tuple(int(w) for w in window_shape)
    if rank not in (2, 3) or len(window_shape) != rank:
        raise ValueError(
            f"sliding_window_inference expects volume (B, *spatial, C) with 2 or 3 spatial axes and a "
            f"window of the same rank; got volume {volume.shape} and window_shape {window_shape}."
        )
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"`overlap` must be in [0, 1), got {overlap}.")
    if blend not in ("gaussian", "constant"):
        raise ValueError(f"`blend` must be 'gaussian' or 'constant', got {blend!r}.")
    if int(batch_size) < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")

    spatial = volume.shape[1:-1]
    # Pad axes shorter than the window (evenly on both sides), crop the prediction back later.
    pad_before = [max(w - n, 0) // 2 for n, w in zip(spatial, window_shape, strict=True)]
    pad_after = [max(w - n, 0) - b for n, w, b in zip(spatial, window_shape, pad_before, strict=True)]
    if any(pad_before) or any(pad_after):
        pads = [(0, 0)] + list(zip(pad_before, pad_after, strict=True)) + [(0, 0)]
        volume = np.pad(volume, pads, mode="constant", constant_values=pad_value)
    padded = volume.shape[1:-1]

    weights = (gaussian_importance_map(window_shape, sigma_scale) if blend == "gaussian"
               else np.ones(window_shape, "float32"))
    starts = list(itertools.product(*[window_starts(n, w, overlap) for n, w in zip(padded, window_shape, strict=True)]))
    n_batches = math.ceil(len(starts) / int(batch_size))

    outputs = []
    bar = None
    if progress:
        import keras

        bar = keras.utils.Progbar(n_batches * volume.shape[0], unit_name="window batch")
    for b in range(volume.shape[0]):
        accum = None
        norm = np.zeros(padded, "float32")
        for i in range(n_batches):
            chunk = starts[i * batch_size:(i + 1) * batch_size]
            slices = [tuple(slice(s, s + w) for s, w in zip(start, window_shape, strict=True)) for start in chunk]
            windows = np.stack([volume[b][sl] for sl in slices])
            pred = _predict(model, windows)
            if pred.shape[:-1] != windows.shape[:-1]:
                raise ValueError(
                    f"The model must map (N, *window, C) to (N, *window, K); it turned {windows.shape} "
                    f"into {pred.shape}."
                )
            if accum is None:
                accum = np.zeros((*padded, pred.shape[-1]), "float32")
            for sl, p in zip(slices, pred, strict=True):
                accum[sl] += p * weights[..., None]
                norm[sl] += weights
            if bar is not None:
                bar.add(1)
        out = accum / norm[..., None]
        crop = tuple(slice(pb, pb + n) for pb, n in zip(pad_before, spatial, strict=True))
        outputs.append(out[crop])
    return np.stack(outputs)
