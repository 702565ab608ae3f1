"""Tests for data_utils.inference: sliding-window prediction with Gaussian blending."""

import numpy as np
import pytest

from data_utils import inference


def _identity(x):
    return x


def test_importance_map_peaks_in_the_centre():
    w = inference.gaussian_importance_map((9, 11))
    assert w.shape == (9, 11) and w.dtype == np.float32
    assert w[4, 5] == pytest.approx(1.0)
    assert w.min() >= 1e-3 and w[0, 0] < 0.01
    np.testing.assert_allclose(w, w[::-1, ::-1])  # symmetric


def test_window_starts_cover_the_axis_and_end_flush():
    assert inference.window_starts(10, 4, 0.5) == [0, 2, 4, 6]
    assert inference.window_starts(11, 4, 0.5) == [0, 2, 4, 6, 7]
    assert inference.window_starts(3, 4, 0.5) == [0]
    starts = inference.window_starts(100, 32, 0.25)
    covered = np.zeros(100, bool)
    for s in starts:
        covered[s:s + 32] = True
    assert covered.all() and starts[-1] == 68


@pytest.mark.parametrize("shape,window", [((1, 40, 37, 2), (16, 16)), ((2, 20, 18, 23, 1), (8, 8, 8))])
@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_identity_model_reproduces_the_volume(rng, shape, window, blend):
    volume = rng.random(shape).astype("float32")
    out = inference.sliding_window_inference(volume, _identity, window, overlap=0.5, batch_size=3, blend=blend)
    assert out.shape == volume.shape
    np.testing.assert_allclose(out, volume, atol=1e-5)


def test_window_larger_than_the_volume_is_padded_and_cropped(rng):
    volume = rng.random((1, 5, 20, 6, 1)).astype("float32")
    seen = []

    def model(x):
        seen.append(x.shape)
        return x * 2.0

    out = inference.sliding_window_inference(volume, model, (8, 8, 8), overlap=0.25)
    assert all(s[1:4] == (8, 8, 8) for s in seen)
    np.testing.assert_allclose(out, 2.0 * volume, atol=1e-5)


def test_gaussian_blending_weights_overlaps_towards_window_centres():
    # A "model" that predicts which window it saw (constant per window): blended values are the
    # importance-weighted average, so at a voxel near one window's centre that window dominates.
    volume = np.zeros((1, 24, 8, 1), "float32")
    volume[0, :, :, 0] = np.arange(24)[:, None]  # encodes the row, so a window knows where it is

    def model(x):
        start = x[:, :1, :1, :]  # first row index of each window
        return np.broadcast_to(start, x.shape).astype("float32")

    gauss = inference.sliding_window_inference(volume, model, (16, 8), overlap=0.5, blend="gaussian")
    const = inference.sliding_window_inference(volume, model, (16, 8), overlap=0.5, blend="constant")
    # Windows start at rows 0 and 8; row 7 is the centre of the first window, row 15 of the second.
    assert gauss[0, 7, 3, 0] < 1.0 and gauss[0, 15, 3, 0] > 7.0
    assert const[0, 10, 0, 0] == pytest.approx(4.0)  # plain mean of 0 and 8
    assert 0 < gauss[0, 11, 3, 0] < 8


def test_keras_model_and_probabilities(rng):
    import keras

    inputs = keras.Input((8, 8, 1))
    probs = keras.layers.Conv2D(3, 3, padding="same", activation="softmax")(inputs)
    model = keras.Model(inputs, probs)
    out = inference.sliding_window_inference(rng.random((1, 20, 13, 1)), model, (8, 8), batch_size=2)
    assert out.shape == (1, 20, 13, 3)
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)


def test_errors_are_clear(rng):
    volume = rng.random((1, 8, 8, 1)).astype("float32")
    with pytest.raises(ValueError, match="window"):
        inference.sliding_window_inference(volume, _identity, (4, 4, 4))
    with pytest.raises(ValueError, match="overlap"):
        inference.sliding_window_inference(volume, _identity, (4, 4), overlap=1.0)
    with pytest.raises(ValueError, match="K"):
        inference.sliding_window_inference(volume, lambda x: x[:, :2], (4, 4))
