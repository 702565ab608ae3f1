"""Synthetic sequences for recurrent models: cardiac cine MR frames and ECG-like signals.

Two generators, each with a sequence-level class (many-to-one) and a per-time-step target
(many-to-many):

- :func:`make_cine_dataset`: short-axis cine MR-like frame sequences of a beating left ventricle
  (bright blood pool inside a dark myocardial ring, on textured background). ``normal`` hearts
  contract everywhere; ``abnormal`` hearts have a **regional wall-motion abnormality**: one segment
  of the wall barely moves. Size, position, wall thickness and contraction strength vary per case,
  so a single frame does not tell the class: the motion does. Per frame: the blood-pool area
  (a volume curve, for many-to-many regression) and the blood-pool mask.
- :func:`make_ecg_dataset`: single-lead ECG-like signals built beat by beat from Gaussian P, Q, R,
  S and T waves (the idea of McSharry et al.'s dynamical ECG model), with baseline wander and
  noise. Rhythm classes: ``normal`` sinus rhythm, ``atrial_fibrillation`` (irregular beats, no P
  waves, fibrillatory baseline) and ``pvc`` (premature wide ventricular beats without a P wave,
  then a pause). Per sample: the wave (0 none, 1 P, 2 QRS, 3 T), for many-to-many segmentation.
- :func:`make_recall_dataset`: a long-delay memory task with a known answer: remember the one
  value marked early in a stream of look-alike values and report it at the end (Hochreiter &
  Schmidhuber 1997), the task on which an LSTM's gated memory beats a simple RNN.

Example::

    from data_utils.synthetic import make_cine_dataset, make_ecg_dataset
    cine = make_cine_dataset(64, num_frames=16, image_size=32, seed=0)
    cine["frames"].shape, cine["label"].shape          # (64, 16, 32, 32, 1), (64,)
    ecg = make_ecg_dataset(256, length=1000, seed=0)
    ecg["signal"].shape, ecg["waves"].shape            # (256, 1000, 1), (256, 1000)
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from data_utils.synthetic import phantom

CINE_CLASS_NAMES = ("normal", "abnormal")
ECG_CLASS_NAMES = ("normal", "atrial_fibrillation", "pvc")
ECG_WAVE_NAMES = {0: "none", 1: "P", 2: "QRS", 3: "T"}


def _balanced_labels(rng, n: int, num_classes: int) -> np.ndarray:
    return rng.permutation(np.arange(n) % num_classes).astype(np.int32)


def _check_count(name: str, value: int, minimum: int) -> int:
    if int(value) < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")
    return int(value)


# --------------------------------------------------------------------------------------------
# Cine MR
# --------------------------------------------------------------------------------------------


def make_cine_dataset(num_sequences: int, num_frames: int = 16, image_size: int = 32, seed: int = 0) -> dict:
    """Draw short-axis cine sequences of a beating left ventricle, normal or with a wall-motion defect.

    Args:
        num_sequences: number of sequences ``N`` (classes balanced, in random order).
        num_frames: frames per sequence ``T`` (one heartbeat, starting at a random phase).
        image_size: frame height and width in pixels (about 1.5 mm each at 32 pixels).
        seed: integer seed; the same arguments always give the same sequences.

    Returns:
        dict with ``frames`` float32 ``(N, T, H, W, 1)`` (about ``[0, 1]``), ``label`` int32 ``(N,)``
        (0 normal, 1 abnormal; see :data:`CINE_CLASS_NAMES`), ``area`` float32 ``(N, T)`` blood-pool
        area in pixels per frame, ``mask`` uint8 ``(N, T, H, W)`` blood pool, and ``class_names``.
    """
    n = _check_count("num_sequences", num_sequences, 1)
    t_count = _check_count("num_frames", num_frames, 2)
    size = _check_count("image_size", image_size, 16)
    rng = np.random.default_rng(seed)
    labels = _balanced_labels(rng, n, 2)
    scale = size / 32.0  # geometry below is in pixels of a 32-pixel frame

    def per_case(low, high):
        return rng.uniform(low, high, size=(n, 1, 1, 1)).astype(np.float32)

    cy, cx = size / 2 + per_case(-3, 3) * scale, size / 2 + per_case(-3, 3) * scale
    r_blood = per_case(5.0, 7.5) * scale  # end-diastolic cavity radius
    wall = per_case(2.0, 3.2) * scale
    contraction = per_case(0.25, 0.42)  # fractional radius shortening at end-systole
    phase = per_case(0, 2 * np.pi)
    # The defect: a segment 70-120 degrees wide, centred anywhere, that keeps only 0-15 % of the motion.
    defect_center = per_case(-np.pi, np.pi)
    defect_width = per_case(np.deg2rad(70), np.deg2rad(120))
    defect_motion = per_case(0.0, 0.15)

    t = (np.arange(t_count, dtype=np.float32) / t_count).reshape(1, t_count, 1, 1)
    squeeze = 0.5 * (1 - np.cos(2 * np.pi * t + phase))  # 0 at end-diastole, 1 at end-systole
    y, x = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32), indexing="ij")
    dy, dx = y - cy, x - cx
    radius = np.sqrt(dy * dy + dx * dx)
    angle = np.arctan2(dy, dx)
    gap = np.abs(np.angle(np.exp(1j * (angle - defect_center))))  # angular distance to the defect centre
    in_defect = 1.0 / (1.0 + np.exp((gap - defect_width / 2) / 0.15))  # smooth segment edges
    motion = np.where(labels.reshape(n, 1, 1, 1) == 1, 1.0 - in_defect * (1.0 - defect_motion), 1.0)
    r_endo = r_blood * (1.0 - contraction * motion * squeeze)
    # The myocardium keeps its area (incompressible), so it thickens as the cavity shrinks.
    r_epi = np.sqrt(r_endo**2 + (r_blood + wall) ** 2 - r_blood**2)

    blood = phantom.soft_mask(radius - r_endo, 0.4)
    myocardium = phantom.soft_mask(radius - r_epi, 0.4) - blood
    background = 0.35 + 0.1 * np.stack([phantom.texture((size, size), rng, 1.5 * scale) for _ in range(n)])[:, None]
    frames = background * (1 - blood - myocardium) + 0.95 * blood + 0.12 * myocardium
    frames = ndimage.gaussian_filter(frames, (0, 0, 0.5 * scale, 0.5 * scale))
    frames = frames + rng.normal(0.0, 0.03, size=frames.shape).astype(np.float32)
    mask = (radius < r_endo).astype(np.uint8)
    return {
        "frames": frames[..., None].astype(np.float32),
        "label": labels,
        "area": mask.sum(axis=(2, 3)).astype(np.float32),
        "mask": mask,
        "class_names": CINE_CLASS_NAMES,
    }


# --------------------------------------------------------------------------------------------
# ECG
# --------------------------------------------------------------------------------------------

# Wave: (amplitude mV, width s, offset from the R peak s, label). QRS waves share one label.
_NORMAL_WAVES = (
    (0.15, 0.025, -0.20, 1),
    (-0.12, 0.010, -0.035, 2),
    (1.00, 0.012, 0.0, 2),
    (-0.25, 0.012, 0.035, 2),
    (0.30, 0.045, 0.30, 3),
)
# A premature ventricular beat: no P wave, a wide and tall QRS, a T wave of opposite sign.
_PVC_WAVES = (
    (1.40, 0.035, 0.0, 2),
    (-0.40, 0.030, 0.07, 2),
    (-0.45, 0.060, 0.36, 3),
)


def _beat_times(rng, rhythm: int, duration: float, mean_rr: float) -> list[tuple[float, bool]]:
    """R-peak times (s) and whether each beat is a premature ventricular one."""
    beats, time, pvc_pause = [], rng.uniform(0.1, mean_rr), False
    while time < duration + 1.0:
        is_pvc = rhythm == 2 and not pvc_pause and len(beats) > 0 and rng.random() < 0.3
        if is_pvc:  # premature: it comes early, replacing part of the interval
            time = beats[-1][0] + mean_rr * rng.uniform(0.55, 0.7)
        beats.append((time, is_pvc))
        if rhythm == 1:  # atrial fibrillation: irregularly irregular intervals
            rr = mean_rr * rng.uniform(0.55, 1.45)
        else:
            rr = mean_rr * rng.normal(1.0, 0.03)
        if is_pvc:
            rr = 2 * mean_rr - (time - beats[-2][0])  # the compensatory pause
        pvc_pause = is_pvc
        time += rr
    return beats


def make_ecg_dataset(num_signals: int, length: int = 1000, sampling_rate: float = 250.0, seed: int = 0) -> dict:
    """Draw single-lead ECG-like signals with a rhythm class and a per-sample wave label.

    Args:
        num_signals: number of signals ``N`` (classes balanced, in random order).
        length: samples per signal ``L`` (default 4 s at 250 Hz).
        sampling_rate: samples per second.
        seed: integer seed; the same arguments always give the same signals.

    Returns:
        dict with ``signal`` float32 ``(N, L, 1)`` in mV, ``label`` int32 ``(N,)`` (rhythm, see
        :data:`ECG_CLASS_NAMES`), ``waves`` int32 ``(N, L)`` (0 none, 1 P, 2 QRS, 3 T; see
        :data:`ECG_WAVE_NAMES`), ``time`` float32 ``(L,)`` in seconds, and ``class_names``.
    """
    n = _check_count("num_signals", num_signals, 1)
    length = _check_count("length", length, 16)
    if sampling_rate <= 0:
        raise ValueError(f"`sampling_rate` must be positive, got {sampling_rate}.")
    rng = np.random.default_rng(seed)
    labels = _balanced_labels(rng, n, len(ECG_CLASS_NAMES))
    time = np.arange(length, dtype=np.float64) / sampling_rate
    duration = length / sampling_rate
    signals = np.zeros((n, length), np.float64)
    waves = np.zeros((n, length), np.int32)
    for i, rhythm in enumerate(labels):
        mean_rr = 60.0 / rng.uniform(55, 100) if rhythm != 1 else 60.0 / rng.uniform(80, 130)
        gain = rng.uniform(0.7, 1.3)
        for r_time, is_pvc in _beat_times(rng, int(rhythm), duration, mean_rr):
            shape = _PVC_WAVES if is_pvc else _NORMAL_WAVES
            for amplitude, width, offset, wave in shape:
                if wave == 1 and rhythm == 1:
                    continue  # no organised atrial activity in atrial fibrillation
                # The T wave comes later when the heart beats slower (QT grows with RR).
                center = r_time + (offset * np.sqrt(mean_rr / 0.8) if wave == 3 else offset)
                near = np.abs(time - center) < 4 * width
                if not near.any():
                    continue
                signals[i, near] += gain * amplitude * rng.uniform(0.85, 1.15) * np.exp(-0.5 * ((time[near] - center) / width) ** 2)
                waves[i, np.abs(time - center) < 2 * width] = wave
        if rhythm == 1:  # fibrillatory waves, 4-8 Hz
            f = rng.uniform(4, 8)
            signals[i] += rng.uniform(0.03, 0.08) * np.sin(2 * np.pi * f * time + rng.uniform(0, 2 * np.pi)) * (
                1 + 0.5 * np.sin(2 * np.pi * 0.7 * time))
        # Baseline wander from breathing and noise from muscle and electrodes.
        signals[i] += rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * rng.uniform(0.15, 0.4) * time + rng.uniform(0, 2 * np.pi))
        signals[i] += rng.normal(0, rng.uniform(0.01, 0.04), length)
    return {
        "signal": signals[..., None].astype(np.float32),
        "label": labels,
        "waves": waves,
        "time": time.astype(np.float32),
        "class_names": ECG_CLASS_NAMES,
    }


# --------------------------------------------------------------------------------------------
# Long-delay recall (a memory task)
# --------------------------------------------------------------------------------------------


def make_recall_dataset(num_sequences: int, length: int = 50, cue_window: int = 5, seed: int = 0) -> dict:
    """Draw sequences of random +-1 values with one marked value that must be recalled at the end.

    Channel 0 is a stream of random +-1 values; channel 1 is a marker that is 1 at a single step
    within the first ``cue_window`` steps and 0 elsewhere. The label is 1 if the marked value is +1.
    To answer, a network must store one value and keep it unchanged through at least
    ``length - cue_window`` look-alike values that follow (chance accuracy is 0.5).

    Args:
        num_sequences: number of sequences ``N``.
        length: time steps per sequence ``T``.
        cue_window: the marker falls on one of the first ``cue_window`` steps (``1 <= cue_window <= T``).
        seed: integer seed; the same arguments always give the same sequences.

    Returns:
        dict with ``sequence`` float32 ``(N, T, 2)`` (value, marker), ``label`` int32 ``(N,)``,
        ``cue`` int32 ``(N,)`` (the marked step) and ``delay`` int32 ``(N,)`` (steps from the
        marked value to the end, ``T - 1 - cue``).
    """
    n = _check_count("num_sequences", num_sequences, 1)
    length = _check_count("length", length, 2)
    cue_window = _check_count("cue_window", cue_window, 1)
    if cue_window > length:
        raise ValueError(f"`cue_window` must be <= `length` ({length}), got {cue_window}.")
    rng = np.random.default_rng(seed)
    sequence = np.zeros((n, length, 2), np.float32)
    sequence[..., 0] = rng.choice(np.array([-1.0, 1.0], np.float32), size=(n, length))
    cue = rng.integers(0, cue_window, size=n).astype(np.int32)
    rows = np.arange(n)
    sequence[rows, cue, 1] = 1.0
    return {
        "sequence": sequence,
        "label": (sequence[rows, cue, 0] > 0).astype(np.int32),
        "cue": cue,
        "delay": (length - 1 - cue).astype(np.int32),
    }
