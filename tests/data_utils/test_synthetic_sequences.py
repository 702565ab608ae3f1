"""Tests for data_utils.synthetic.sequences: cine MR frame sequences and ECG-like signals."""

import time

import numpy as np
import pytest
from scipy import ndimage

from data_utils.synthetic import sequences
from data_utils.synthetic.sequences import make_cine_dataset, make_ecg_dataset


@pytest.fixture(scope="module")
def cine():
    return make_cine_dataset(60, num_frames=12, image_size=32, seed=0)


@pytest.fixture(scope="module")
def ecg():
    return make_ecg_dataset(60, length=1000, seed=0)


def _separation(feature, labels, high, low):
    a, b = feature[labels == high], feature[labels == low]
    return (a.mean() - b.mean()) / (np.sqrt(a.var() / len(a) + b.var() / len(b)) + 1e-9)


def test_cine_shapes_and_targets(cine):
    assert cine["frames"].shape == (60, 12, 32, 32, 1) and cine["frames"].dtype == np.float32
    assert cine["label"].shape == (60,) and cine["label"].dtype == np.int32
    np.testing.assert_array_equal(np.bincount(cine["label"]), [30, 30])
    assert cine["mask"].shape == (60, 12, 32, 32) and cine["area"].shape == (60, 12)
    np.testing.assert_array_equal(cine["area"], cine["mask"].sum(axis=(2, 3)))
    assert cine["class_names"] == sequences.CINE_CLASS_NAMES == ("normal", "abnormal")
    # The blood pool is bright: inside the mask the frames are brighter than outside.
    frames = cine["frames"][..., 0]
    assert frames[cine["mask"] == 1].mean() > frames[cine["mask"] == 0].mean() + 0.3


def test_cine_hearts_beat_and_abnormal_ones_move_less_evenly(cine):
    area = cine["area"]
    change = (area.max(axis=1) - area.min(axis=1)) / area.max(axis=1)
    assert np.all(change > 0.15)  # every heart contracts
    assert _separation(change, cine["label"], 0, 1) > 3  # a defect reduces the ejection
    # The class is in the motion, not in one frame: end-diastolic size does not tell it.
    assert abs(_separation(area.max(axis=1), cine["label"], 0, 1)) < 3
    # Abnormal: the cavity's centre moves during the beat because one side stays still.
    ys, xs = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    mask = cine["mask"].astype(np.float64)
    cy = (mask * ys).sum(axis=(2, 3)) / mask.sum(axis=(2, 3))
    cx = (mask * xs).sum(axis=(2, 3)) / mask.sum(axis=(2, 3))
    wobble = np.hypot(cy.max(1) - cy.min(1), cx.max(1) - cx.min(1))
    assert _separation(wobble, cine["label"], 1, 0) > 3


def test_cine_determinism():
    a = make_cine_dataset(4, num_frames=4, image_size=16, seed=1)
    b = make_cine_dataset(4, num_frames=4, image_size=16, seed=1)
    c = make_cine_dataset(4, num_frames=4, image_size=16, seed=2)
    np.testing.assert_array_equal(a["frames"], b["frames"])
    np.testing.assert_array_equal(a["label"], b["label"])
    assert not np.allclose(a["frames"], c["frames"])


def test_ecg_shapes_and_wave_labels(ecg):
    assert ecg["signal"].shape == (60, 1000, 1) and ecg["signal"].dtype == np.float32
    assert ecg["waves"].shape == (60, 1000) and ecg["waves"].dtype == np.int32
    assert ecg["time"].shape == (1000,) and ecg["time"][1] == pytest.approx(1 / 250)
    np.testing.assert_array_equal(np.bincount(ecg["label"]), [20, 20, 20])
    assert set(np.unique(ecg["waves"])) == set(sequences.ECG_WAVE_NAMES)
    # R peaks lie inside QRS labels: the largest samples of every signal are labelled QRS.
    peaks = np.argmax(ecg["signal"][..., 0], axis=1)
    assert np.mean(ecg["waves"][np.arange(60), peaks] == 2) > 0.9


def _qrs_runs(waves):
    labelled, count = ndimage.label(waves == 2)
    return [np.flatnonzero(labelled == k) for k in range(1, count + 1)]


def test_ecg_rhythms_have_their_defining_features(ecg):
    labels, waves = ecg["label"], ecg["waves"]
    has_p = np.array([(w == 1).any() for w in waves])
    assert has_p[labels == 0].all() and not has_p[labels == 1].any()  # no P waves in AF
    irregularity = []
    widest = []
    for w in waves:
        runs = _qrs_runs(w)
        centres = np.array([r.mean() for r in runs])
        rr = np.diff(centres)
        irregularity.append(rr.std() / rr.mean())
        widest.append(max(len(r) for r in runs))
    irregularity, widest = np.array(irregularity), np.array(widest)
    assert _separation(irregularity, labels, 1, 0) > 4  # AF is irregularly irregular
    assert _separation(widest, labels, 2, 0) > 4  # PVCs have wide QRS complexes


def test_ecg_determinism_and_errors():
    a = make_ecg_dataset(3, length=200, seed=5)
    b = make_ecg_dataset(3, length=200, seed=5)
    c = make_ecg_dataset(3, length=200, seed=6)
    np.testing.assert_array_equal(a["signal"], b["signal"])
    np.testing.assert_array_equal(a["waves"], b["waves"])
    assert not np.allclose(a["signal"], c["signal"])
    with pytest.raises(ValueError, match="length"):
        make_ecg_dataset(3, length=4)
    with pytest.raises(ValueError, match="sampling_rate"):
        make_ecg_dataset(3, sampling_rate=0)
    with pytest.raises(ValueError, match="num_frames"):
        make_cine_dataset(3, num_frames=1)


def test_tutorial_sized_datasets_are_fast():
    start = time.perf_counter()
    make_cine_dataset(128, num_frames=16, image_size=32, seed=0)
    make_ecg_dataset(300, length=1000, seed=0)
    assert time.perf_counter() - start < 6.0  # about 1.5 s on 2 cores


def test_recall_label_is_the_marked_value_and_the_rest_looks_alike():
    from data_utils.synthetic import make_recall_dataset

    data = make_recall_dataset(400, length=30, cue_window=5, seed=3)
    x, label, cue = data["sequence"], data["label"], data["cue"]
    assert x.shape == (400, 30, 2) and x.dtype == np.float32 and label.dtype == np.int32
    np.testing.assert_array_equal(x[..., 1].sum(axis=1), 1.0)  # exactly one marker per sequence
    np.testing.assert_array_equal(x[..., 1].argmax(axis=1), cue)
    assert cue.min() >= 0 and cue.max() <= 4 and len(np.unique(cue)) == 5
    np.testing.assert_array_equal(label, (x[np.arange(400), cue, 0] > 0).astype(np.int32))
    np.testing.assert_array_equal(data["delay"], 29 - cue)
    assert set(np.unique(x[..., 0])) == {-1.0, 1.0}
    assert 0.4 < label.mean() < 0.6  # balanced on average: chance is 0.5
    # The last value says nothing about the label: only memory can solve the task.
    assert abs(np.mean((x[:, -1, 0] > 0) == label) - 0.5) < 0.1
    again = make_recall_dataset(400, length=30, cue_window=5, seed=3)
    np.testing.assert_array_equal(again["sequence"], x)
    assert not np.array_equal(make_recall_dataset(400, length=30, cue_window=5, seed=4)["sequence"], x)


@pytest.mark.parametrize("kwargs, match", [
    ({"num_sequences": 0}, "num_sequences"),
    ({"num_sequences": 4, "length": 1}, "length"),
    ({"num_sequences": 4, "cue_window": 0}, "cue_window"),
    ({"num_sequences": 4, "length": 10, "cue_window": 11}, "cue_window"),
])
def test_recall_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sequences.make_recall_dataset(**kwargs)
