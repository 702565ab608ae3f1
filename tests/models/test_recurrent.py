"""Recurrent builders: classifier/tagger shapes, bidirectional widths, masking, CNN-LSTM, errors, learning."""

import keras
import numpy as np
import pytest

import models
from models.recurrent import cnn_lstm, frame_encoder, rnn_classifier, rnn_tagger


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_classifier_and_tagger_shapes_and_probabilities(cell, rng):
    x = rng.normal(size=(3, 7, 4)).astype("float32")
    clf = rnn_classifier((None, 4), 5, cell=cell, units=(6, 5))
    tag = rnn_tagger((None, 4), 5, cell=cell, units=6)
    p_clf = keras.ops.convert_to_numpy(clf(x))
    p_tag = keras.ops.convert_to_numpy(tag(x))
    assert p_clf.shape == (3, 5) and p_tag.shape == (3, 7, 5)
    np.testing.assert_allclose(p_clf.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(p_tag.sum(-1), 1.0, atol=1e-5)


def test_parameter_counts_follow_the_gate_formulas():
    # SimpleRNN: h*(f+h+1); LSTM: 4x; GRU (reset_after=True, the Keras default): 3*h*(f+h+2).
    f, h = 3, 8
    head = h * 2 + 2
    assert rnn_classifier((10, f), 2, cell="rnn", units=h).count_params() == h * (f + h + 1) + head
    assert rnn_classifier((10, f), 2, cell="lstm", units=h).count_params() == 4 * h * (f + h + 1) + head
    assert rnn_classifier((10, f), 2, cell="gru", units=h).count_params() == 3 * h * (f + h + 2) + head
    # Bidirectional: two independent directions and a head on their concatenation.
    bi = rnn_classifier((10, f), 2, cell="lstm", units=h, bidirectional=True)
    assert bi.count_params() == 2 * 4 * h * (f + h + 1) + 2 * h * 2 + 2


def test_masking_ignores_padded_steps(rng):
    model = rnn_classifier((None, 2), 3, cell="gru", units=4, mask_value=0.0)
    x = rng.normal(size=(1, 5, 2)).astype("float32")
    padded = np.concatenate([x, np.zeros((1, 3, 2), "float32")], axis=1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)),
                               keras.ops.convert_to_numpy(model(padded)), atol=1e-6)


def test_single_class_gives_sigmoid(rng):
    model = rnn_classifier((6, 1), 1, units=3)
    y = keras.ops.convert_to_numpy(model(rng.normal(size=(4, 6, 1)).astype("float32")))
    assert y.shape == (4, 1) and np.all((y > 0) & (y < 1))


@pytest.mark.parametrize("frames", [(4, 16, 16, 1), (3, 8, 8, 8, 2)], ids=["2d", "3d"])
@pytest.mark.parametrize("per_frame", [False, True])
def test_cnn_lstm_shapes(frames, per_frame, rng):
    model = cnn_lstm(frames, 3, filters=(4, 8), lstm_units=5, per_frame=per_frame)
    y = keras.ops.convert_to_numpy(model(rng.normal(size=(2, *frames)).astype("float32")))
    assert y.shape == ((2, frames[0], 3) if per_frame else (2, 3))


def test_cnn_lstm_shares_one_encoder_across_frames(rng):
    model = cnn_lstm((5, 16, 16, 1), 2, filters=(4, 8), lstm_units=4)
    encoder = frame_encoder((16, 16, 1), filters=(4, 8))
    # The frame encoder's weights are counted once, however many frames there are.
    lstm_and_head = 4 * 4 * (8 + 4 + 1) + (4 * 2 + 2)
    assert model.count_params() == encoder.count_params() + lstm_and_head
    # Value: the features of frame t are the one encoder applied to frame t alone.
    frames = rng.normal(size=(2, 5, 16, 16, 1)).astype("float32")
    shared = model.get_layer("encode_frames")
    features = keras.ops.convert_to_numpy(keras.Model(model.input, shared.output)(frames))
    for t in (0, 4):
        np.testing.assert_allclose(features[:, t], keras.ops.convert_to_numpy(shared.layer(frames[:, t])), atol=1e-5)


def test_round_trip_cnn_lstm_and_bidirectional_tagger(assert_round_trip, rng):
    assert_round_trip(cnn_lstm((3, 16, 16, 1), 2, filters=(4,), lstm_units=3, bidirectional=True),
                      rng.normal(size=(2, 3, 16, 16, 1)).astype("float32"))
    assert_round_trip(rnn_tagger((None, 2), 3, cell="gru", units=(4, 3)), rng.normal(size=(2, 6, 2)).astype("float32"))


def test_registry_names_build_the_right_cell():
    assert {"rnn_classifier", "lstm_tagger", "gru_classifier", "cnn_lstm"} <= set(models.list_models("Recurrent"))
    model = models.get("gru_classifier", input_shape=(10, 2), units=(3,))
    assert any(isinstance(layer, keras.layers.GRU) for layer in model.layers)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: rnn_classifier((10,), 2), "time_steps, features"),
        (lambda: rnn_classifier((10, 2), 2, cell="transformer"), "cell must be one of"),
        (lambda: rnn_tagger((10, 2), 2, units=()), "units"),
        (lambda: cnn_lstm((10, 2), 2), "cnn_lstm input_shape"),
        (lambda: cnn_lstm((4, None, 16, 1), 2), "fixed frame size"),
    ],
)
def test_bad_arguments_give_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def _memory_task(n, steps, seed):
    """The label is the sign of the FIRST value; every later step is noise, so the net must remember."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, steps, 1)).astype("float32")
    y = (x[:, 0, 0] > 0).astype("int32")
    return x, y


@pytest.mark.slow
def test_lstm_classifier_remembers_the_first_step():
    x, y = _memory_task(256, 10, seed=0)
    x_test, y_test = _memory_task(256, 10, seed=1)
    model = rnn_classifier((10, 1), 2, cell="lstm", units=16)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=8, verbose=0)
    accuracy = (model.predict(x_test, verbose=0).argmax(-1) == y_test).mean()
    # Measured 0.87-0.90 over seeds; chance is 0.5.
    assert accuracy > 0.78, f"LSTM test accuracy {accuracy:.2f} (chance 0.5)"


@pytest.mark.slow
def test_gru_tagger_learns_running_sign():
    """Tag each step with whether the running sum so far is positive (needs state over time)."""
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (320, 10, 1)).astype("float32")
    y = (np.cumsum(x[..., 0], axis=1) > 0).astype("int32")
    model = rnn_tagger((10, 1), 2, cell="gru", units=16, bidirectional=False)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(x[:256], y[:256], batch_size=32, epochs=5, verbose=0)
    accuracy = (model.predict(x[256:], verbose=0).argmax(-1) == y[256:]).mean()
    # Measured about 0.94 over seeds; always guessing the majority tag gives about 0.5.
    assert accuracy > 0.85, f"per-step accuracy {accuracy:.2f}"
