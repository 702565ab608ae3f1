"""Recurrent networks: SimpleRNN, LSTM and GRU sequence classifiers and taggers, and a CNN-LSTM.

Sequences are channels-last and batched, ``(B, T, F)``: ``T`` time steps of ``F`` features each
(an ECG lead, a breathing trace, per-frame features). Two kinds of output:

* a **classifier** (many-to-one) reads the whole sequence and predicts one label ``(B, num_classes)``;
* a **tagger** (many-to-many) predicts a label for every time step ``(B, T, num_classes)``.

The **CNN-LSTM** reads a sequence of image frames ``(B, T, H, W, C)`` (or volumes
``(B, T, D, H, W, C)``): the same small CNN encodes every frame (``TimeDistributed``), and an LSTM
reads the frame codes, e.g. to classify a cine-MR loop or label every frame of a surgical video.

References:
    Elman, "Finding structure in time", Cognitive Science 1990 (simple RNN).
    Hochreiter & Schmidhuber, "Long short-term memory", Neural Computation 1997 (LSTM).
    Cho et al., "Learning phrase representations using RNN encoder-decoder", EMNLP 2014 (GRU).
    Schuster & Paliwal, "Bidirectional recurrent neural networks", IEEE TSP 1997.
    Donahue et al., "Long-term recurrent convolutional networks", CVPR 2015 (CNN + LSTM).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from models import blocks
from models.blocks import BN_MOMENTUM, set_bn_momentum
from models.registry import register

CELLS = {"rnn": layers.SimpleRNN, "lstm": layers.LSTM, "gru": layers.GRU}


def _recurrent_layer(cell: str, units: int, *, return_sequences: bool, bidirectional: bool,
                     dropout: float, name: str) -> layers.Layer:
    """One (optionally bidirectional) recurrent layer of kind ``cell``."""
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {sorted(CELLS)}; got {cell!r}")
    rnn = CELLS[cell](units, return_sequences=return_sequences, dropout=dropout, name=name)
    if bidirectional:
        # Concatenating both directions doubles the feature size: (B, [T,] 2 * units).
        return layers.Bidirectional(rnn, merge_mode="concat", name=f"bi_{name}")
    return rnn


def _check_sequence_shape(input_shape: Sequence[int | None]) -> None:
    if len(input_shape) != 2:
        raise ValueError(
            f"input_shape must be (time_steps, features), e.g. (100, 1) or (None, 12); got {tuple(input_shape)}"
        )


def _check_units(units: Sequence[int]) -> tuple[int, ...]:
    units = (units,) if isinstance(units, int) else tuple(units)
    if not units or any(u < 1 for u in units):
        raise ValueError(f"units must be one or more positive layer widths; got {units}")
    return units


def _recurrent_stack(x, cell: str, units: tuple[int, ...], *, last_returns_sequences: bool,
                     bidirectional: bool, dropout: float):
    for i, width in enumerate(units):
        last = i == len(units) - 1
        x = _recurrent_layer(cell, width, return_sequences=(not last) or last_returns_sequences,
                             bidirectional=bidirectional, dropout=dropout, name=f"{cell}_{i + 1}")(x)
    return x


def _head(x, num_classes: int, name: str):
    """Softmax for several classes, sigmoid for one (binary); float32 for mixed precision."""
    activation = "sigmoid" if num_classes == 1 else "softmax"
    x = layers.Dense(num_classes, name=f"{name}_logits")(x)
    return layers.Activation(activation, dtype="float32", name=name)(x)


def rnn_classifier(
    input_shape: Sequence[int | None] = (None, 1),
    num_classes: int = 2,
    *,
    cell: str = "lstm",
    units: Sequence[int] | int = (64,),
    bidirectional: bool = False,
    dropout: float = 0.0,
    mask_value: float | None = None,
    name: str | None = None,
) -> keras.Model:
    """Many-to-one recurrent classifier: a whole sequence in, one label out.

    Args:
        input_shape: ``(T, F)``; ``T`` may be ``None`` for variable-length sequences.
        num_classes: output classes (1 gives a sigmoid for binary problems).
        cell: ``"rnn"`` (SimpleRNN), ``"lstm"`` or ``"gru"``.
        units: width of each stacked recurrent layer; only the last returns its final state.
        bidirectional: read each sequence forwards and backwards and concatenate.
        dropout: input dropout of every recurrent layer.
        mask_value: if given, time steps whose features all equal it are padding and skipped
            (``layers.Masking``), so zero-padded batches of unequal lengths classify correctly.
        name: model name (default ``"{cell}_classifier"``).

    Returns:
        Model ``(B, T, F) -> (B, num_classes)`` probabilities.
    """
    _check_sequence_shape(input_shape)
    units = _check_units(units)
    inputs = keras.Input(shape=tuple(input_shape), name="sequence")
    x = layers.Masking(mask_value, name="masking")(inputs) if mask_value is not None else inputs
    x = _recurrent_stack(x, cell, units, last_returns_sequences=False,
                         bidirectional=bidirectional, dropout=dropout)
    outputs = _head(x, num_classes, "probabilities")
    return keras.Model(inputs, outputs, name=name or f"{cell}_classifier")


def rnn_tagger(
    input_shape: Sequence[int | None] = (None, 1),
    num_classes: int = 2,
    *,
    cell: str = "lstm",
    units: Sequence[int] | int = (64,),
    bidirectional: bool = True,
    dropout: float = 0.0,
    name: str | None = None,
) -> keras.Model:
    """Many-to-many recurrent tagger: one label per time step (e.g. per-beat or per-frame phase).

    Args:
        input_shape: ``(T, F)``; ``T`` may be ``None``.
        num_classes: classes per time step (1 gives a sigmoid).
        cell: ``"rnn"``, ``"lstm"`` or ``"gru"``.
        units: width of each stacked recurrent layer (all return sequences).
        bidirectional: on by default, because a tag may depend on what comes after it.
        dropout: input dropout of every recurrent layer.
        name: model name (default ``"{cell}_tagger"``).

    Returns:
        Model ``(B, T, F) -> (B, T, num_classes)`` probabilities.
    """
    _check_sequence_shape(input_shape)
    units = _check_units(units)
    inputs = keras.Input(shape=tuple(input_shape), name="sequence")
    x = _recurrent_stack(inputs, cell, units, last_returns_sequences=True,
                         bidirectional=bidirectional, dropout=dropout)
    # Dense acts on the last axis, so it is applied to every time step with shared weights.
    outputs = _head(x, num_classes, "probabilities")
    return keras.Model(inputs, outputs, name=name or f"{cell}_tagger")


def frame_encoder(
    frame_shape: Sequence[int],
    *,
    filters: Sequence[int] = (16, 32, 64),
    norm: str = "batch",
    bn_momentum: float = BN_MOMENTUM,
    name: str = "frame_encoder",
) -> keras.Model:
    """Small CNN that turns one frame into a feature vector (used inside :func:`cnn_lstm`).

    Args:
        frame_shape: ``(H, W, C)`` or ``(D, H, W, C)``.
        filters: channels of each stage (conv -> norm -> ReLU, then 2x max pooling).
        norm: normalisation, see :func:`models.blocks.normalization`.
        bn_momentum: momentum of batch norm's running statistics (Keras' 0.99); short runs need a
            lower momentum (e.g. 0.9) so running statistics keep up.

    Returns:
        Model ``(B, *frame_shape) -> (B, filters[-1])``.
    """
    rank = blocks.spatial_rank(frame_shape)
    inputs = keras.Input(shape=tuple(frame_shape), name="frame")
    x = inputs
    for i, f in enumerate(filters):
        x = blocks.conv_norm_act(x, f, 3, norm=norm, name=f"stage{i + 1}")
        x = blocks.max_pool(rank, 2, name=f"stage{i + 1}_pool")(x)
    outputs = blocks.global_avg_pool(rank, name="gap")(x)
    return set_bn_momentum(keras.Model(inputs, outputs, name=name), bn_momentum)


def cnn_lstm(
    input_shape: Sequence[int | None] = (8, 64, 64, 1),
    num_classes: int = 2,
    *,
    filters: Sequence[int] = (16, 32, 64),
    lstm_units: int = 64,
    bidirectional: bool = False,
    per_frame: bool = False,
    norm: str = "batch",
    dropout: float = 0.0,
    bn_momentum: float = BN_MOMENTUM,
    name: str = "cnn_lstm",
) -> keras.Model:
    """CNN-LSTM for sequences of frames: a shared CNN encodes each frame, an LSTM reads the codes.

    Follows the LRCN idea of Donahue et al. (CVPR 2015) at coursework scale.

    Args:
        input_shape: ``(T, H, W, C)`` for 2D frames or ``(T, D, H, W, C)`` for volumes; ``T`` may be ``None``.
        num_classes: output classes (1 gives a sigmoid).
        filters: channels of the frame encoder's stages (see :func:`frame_encoder`).
        lstm_units: LSTM width.
        bidirectional: bidirectional LSTM.
        per_frame: ``True`` labels every frame ``(B, T, num_classes)`` (e.g. surgical phase per video
            frame); ``False`` labels the whole clip ``(B, num_classes)``.
        norm: normalisation inside the frame encoder.
        dropout: dropout on the LSTM input.
        bn_momentum: momentum of batch norm's running statistics (Keras' 0.99); short runs need a
            lower momentum (e.g. 0.9) so running statistics keep up.

    Returns:
        Model ``(B, T, *frame) -> (B, num_classes)`` or ``(B, T, num_classes)``.
    """
    if len(input_shape) not in (4, 5):
        raise ValueError(
            f"cnn_lstm input_shape must be (T, H, W, C) or (T, D, H, W, C); got {tuple(input_shape)}"
        )
    if any(s is None for s in input_shape[1:]):
        raise ValueError(f"cnn_lstm needs a fixed frame size (only T may be None); got {tuple(input_shape)}")
    inputs = keras.Input(shape=tuple(input_shape), name="frames")
    encoder = frame_encoder(input_shape[1:], filters=filters, norm=norm)
    # TimeDistributed applies the same encoder (same weights) to every frame: (B, T, filters[-1]).
    x = layers.TimeDistributed(encoder, name="encode_frames")(inputs)
    x = _recurrent_layer("lstm", lstm_units, return_sequences=per_frame,
                         bidirectional=bidirectional, dropout=dropout, name="lstm")(x)
    outputs = _head(x, num_classes, "probabilities")
    return set_bn_momentum(keras.Model(inputs, outputs, name=name), bn_momentum)


# Registry: one name per cell type, so a config file can say "gru_classifier".
def _register_cell(cell: str, label: str) -> None:
    def classifier(**kwargs) -> keras.Model:
        return rnn_classifier(cell=cell, **kwargs)

    def tagger(**kwargs) -> keras.Model:
        return rnn_tagger(cell=cell, **kwargs)

    classifier.__doc__ = f"{label} many-to-one classifier; see :func:`rnn_classifier`."
    tagger.__doc__ = f"{label} many-to-many tagger; see :func:`rnn_tagger`."
    defaults = {"input_shape": (100, 1), "num_classes": 2, "units": (64,)}
    example = {"input_shape": (20, 1), "units": (8,)}
    register(f"{cell}_classifier", family="Recurrent", topic="RNN/LSTM", ranks=(1,), defaults=defaults,
             example=example)(classifier)
    register(f"{cell}_tagger", family="Recurrent", topic="RNN/LSTM", ranks=(1,), defaults=defaults,
             example=example)(tagger)


for _cell, _label in (("rnn", "SimpleRNN"), ("lstm", "LSTM"), ("gru", "GRU")):
    _register_cell(_cell, _label)

register("cnn_lstm", family="Recurrent", topic="RNN/LSTM", ranks=(2, 3),
         defaults={"input_shape": (8, 64, 64, 1), "num_classes": 2},
         example={"input_shape": (4, 16, 16, 1), "filters": (4, 8), "lstm_units": 8})(cnn_lstm)
