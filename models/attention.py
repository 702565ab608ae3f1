"""Attention: a transformer encoder block whose attention maps you can plot, and its helpers.

What is here:

* :class:`TransformerEncoderBlock`: pre-norm multi-head self-attention + MLP, each with a residual
  connection (the block of ViT). Call it with ``return_attention_scores=True`` to also get the
  attention weights ``(B, heads, N, N)``.
* :func:`attention_scores_model`: from a model built with such blocks, a model that outputs every
  block's attention weights, for plotting attention maps.
* :class:`ClassToken` and :class:`AddPositionEmbedding`: the learned tokens a transformer needs
  (shared with :mod:`models.vit`).
* :func:`spatial_self_attention`: self-attention over the pixels/voxels of a feature map (used at low
  resolution in the diffusion U-Net).
* :func:`transformer_classifier`: a sequence classifier made of encoder blocks.
* The squeeze-and-excitation and attention-gate blocks live with the other shared blocks in
  :mod:`models.blocks` and are re-exported here, because they belong to this lecture too.

References:
    Vaswani et al., "Attention is all you need", NeurIPS 2017.
    Dosovitskiy et al., "An image is worth 16x16 words", ICLR 2021 (pre-norm encoder block).
    Hu et al., "Squeeze-and-excitation networks", CVPR 2018.
    Oktay et al., "Attention U-Net: learning where to look for the pancreas", MIDL 2018.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers, ops

# Squeeze-and-excitation and attention gates are shared blocks; re-exported because they belong to
# this lecture. squeeze_excitation(x, ratio=16) rescales channels; attention_gate(x, gating) gates a
# U-Net skip connection with per-voxel coefficients in [0, 1].
from models.blocks import attention_gate, squeeze_excitation  # noqa: F401
from models.registry import register


@keras.saving.register_keras_serializable(package="medkit")
class TransformerEncoderBlock(layers.Layer):
    """Pre-norm transformer encoder block: ``x + MHSA(LN(x))`` then ``x + MLP(LN(x))``.

    Args:
        num_heads: attention heads.
        mlp_dim: hidden width of the two-layer MLP (4 x the token width in ViT).
        key_dim: width of each head (default: token width // ``num_heads``).
        dropout: dropout after the attention and in the MLP.
        attention_dropout: dropout on the attention weights.
        activation: MLP activation (``"gelu"`` as in ViT/BERT).
        norm_epsilon: LayerNormalization epsilon (1e-6 as in ViT).

    Call:
        ``block(tokens, training=None, return_attention_scores=False)`` with tokens ``(B, N, D)``.
        Returns ``(B, N, D)``, or ``((B, N, D), (B, heads, N, N))`` when asked for the scores; the
        scores are softmax weights: each row sums to 1 over the keys.
    """

    def __init__(self, num_heads: int, mlp_dim: int, key_dim: int | None = None, dropout: float = 0.0,
                 attention_dropout: float = 0.0, activation: str = "gelu", norm_epsilon: float = 1e-6,
                 **kwargs):
        super().__init__(**kwargs)
        if num_heads < 1 or mlp_dim < 1:
            raise ValueError(f"num_heads and mlp_dim must be positive; got {num_heads} and {mlp_dim}")
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.key_dim = key_dim
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.activation = activation
        self.norm_epsilon = norm_epsilon

    def build(self, input_shape):
        dim = input_shape[-1]
        key_dim = self.key_dim or dim // self.num_heads
        if key_dim < 1:
            raise ValueError(f"token width {dim} is smaller than num_heads={self.num_heads}")
        self.norm_attention = layers.LayerNormalization(epsilon=self.norm_epsilon, name="norm_attention")
        self.attention = layers.MultiHeadAttention(self.num_heads, key_dim, dropout=self.attention_dropout,
                                                   name="attention")
        self.norm_mlp = layers.LayerNormalization(epsilon=self.norm_epsilon, name="norm_mlp")
        self.mlp_hidden = layers.Dense(self.mlp_dim, activation=self.activation, name="mlp_hidden")
        self.mlp_out = layers.Dense(dim, name="mlp_out")
        self.drop = layers.Dropout(self.dropout)
        # Build the sublayers now so their weights exist before a saved model's weights are loaded.
        self.norm_attention.build(input_shape)
        self.attention.build(input_shape, input_shape)
        self.norm_mlp.build(input_shape)
        self.mlp_hidden.build(input_shape)
        self.mlp_out.build((*input_shape[:-1], self.mlp_dim))

    def call(self, tokens, training=None, return_attention_scores=False):
        h = self.norm_attention(tokens)
        h, scores = self.attention(h, h, return_attention_scores=True, training=training)
        x = tokens + self.drop(h, training=training)
        h = self.mlp_hidden(self.norm_mlp(x))
        h = self.drop(h, training=training)
        x = x + self.drop(self.mlp_out(h), training=training)
        return (x, scores) if return_attention_scores else x

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "mlp_dim": self.mlp_dim,
                "key_dim": self.key_dim, "dropout": self.dropout,
                "attention_dropout": self.attention_dropout, "activation": self.activation,
                "norm_epsilon": self.norm_epsilon}


@keras.saving.register_keras_serializable(package="medkit")
class ClassToken(layers.Layer):
    """Prepends one learned "class" token to a token sequence: ``(B, N, D) -> (B, N + 1, D)``.

    The transformer mixes information into this token; the classifier reads only it (ViT, BERT).
    """

    def build(self, input_shape):
        self.token = self.add_weight(shape=(1, 1, input_shape[-1]), initializer="zeros", name="token")

    def call(self, tokens):
        batch = ops.shape(tokens)[0]
        cls = ops.broadcast_to(ops.cast(self.token, tokens.dtype), (batch, 1, ops.shape(tokens)[-1]))
        return ops.concatenate([cls, tokens], axis=1)

    def compute_output_shape(self, input_shape):
        n = None if input_shape[1] is None else input_shape[1] + 1
        return (input_shape[0], n, input_shape[2])


@keras.saving.register_keras_serializable(package="medkit")
class AddPositionEmbedding(layers.Layer):
    """Adds a learned position embedding, one vector per token position: ``(B, N, D) -> (B, N, D)``.

    Args:
        stddev: standard deviation of the initial embedding (0.02 as in ViT/BERT).
    """

    def __init__(self, stddev: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.stddev = stddev

    def build(self, input_shape):
        if input_shape[1] is None:
            raise ValueError("AddPositionEmbedding needs a fixed number of tokens; got input shape "
                             f"{tuple(input_shape)}")
        self.embedding = self.add_weight(shape=(1, input_shape[1], input_shape[2]), name="embedding",
                                         initializer=keras.initializers.RandomNormal(stddev=self.stddev))

    def call(self, tokens):
        return tokens + ops.cast(self.embedding, tokens.dtype)

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev}


def attention_scores_model(model: keras.Model) -> keras.Model:
    """A model with the same input that outputs the attention weights of every encoder block.

    Works for models whose :class:`TransformerEncoderBlock` layers were called with
    ``return_attention_scores=True`` (all builders in the zoo do this, and ignore the scores in
    the main output).

    Args:
        model: e.g. from :func:`transformer_classifier` or :func:`models.vit.vit`.

    Returns:
        Model ``inputs -> [(B, heads, N, N), ...]``, one array per block, in depth order.

    Raises:
        ValueError: if the model has no encoder block that exposes its scores.
    """
    scores = []
    for layer in model.layers:
        if isinstance(layer, TransformerEncoderBlock):
            out = layer.output
            if isinstance(out, (list, tuple)) and len(out) == 2:
                scores.append(out[1])
    if not scores:
        raise ValueError(
            f"model {model.name!r} has no TransformerEncoderBlock called with return_attention_scores=True"
        )
    return keras.Model(model.input, scores, name=f"{model.name}_attention")


def encoder_stack(tokens, depth: int, num_heads: int, mlp_dim: int, *, dropout: float = 0.0,
                  attention_dropout: float = 0.0, name: str = "encoder"):
    """``depth`` encoder blocks then a final LayerNorm; the scores stay in the graph for plotting.

    Args:
        tokens: ``(B, N, D)``.

    Returns:
        ``(B, N, D)`` normalised tokens.
    """
    x = tokens
    for i in range(depth):
        block = TransformerEncoderBlock(num_heads, mlp_dim, dropout=dropout,
                                        attention_dropout=attention_dropout, name=f"{name}_block{i + 1}")
        x, _ = block(x, return_attention_scores=True)
    return layers.LayerNormalization(epsilon=1e-6, name=f"{name}_norm")(x)


def spatial_self_attention(x, num_heads: int = 1, *, groups: int = 8, name: str = "spatial_attention"):
    """Self-attention across all positions of a feature map, with a residual connection.

    Every pixel (voxel) attends to every other, which costs ``(H*W)^2`` memory: use it only at low
    resolution (e.g. 8x8 or 16x16), as DDPM does.

    Args:
        x: ``(B, *spatial, C)`` with a fixed spatial size.
        num_heads: attention heads (``C`` is split between them).
        groups: GroupNormalization groups applied before attention (must divide ``C``).

    Returns:
        ``(B, *spatial, C)``.
    """
    spatial = tuple(x.shape[1:-1])
    channels = x.shape[-1]
    if any(s is None for s in spatial):
        raise ValueError(f"spatial_self_attention needs a fixed spatial size; got {tuple(x.shape)}")
    n = 1
    for s in spatial:
        n *= s
    h = layers.GroupNormalization(groups=min(groups, channels), name=f"{name}_norm")(x)
    h = layers.Reshape((n, channels), name=f"{name}_to_tokens")(h)
    h = layers.MultiHeadAttention(num_heads, channels // num_heads, name=f"{name}_mha")(h, h)
    h = layers.Reshape((*spatial, channels), name=f"{name}_to_map")(h)
    return layers.Add(name=f"{name}_residual")([x, h])


@register("transformer_classifier", family="Attention", topic="Attention and transformers", ranks=(1,),
          defaults={"input_shape": (64, 8), "num_classes": 2},
          example={"input_shape": (16, 4), "hidden_dim": 16, "depth": 1, "num_heads": 2, "mlp_dim": 16})
def transformer_classifier(
    input_shape: Sequence[int] = (64, 8),
    num_classes: int = 2,
    *,
    hidden_dim: int = 64,
    depth: int = 2,
    num_heads: int = 4,
    mlp_dim: int = 128,
    dropout: float = 0.0,
    name: str = "transformer_classifier",
) -> keras.Model:
    """Sequence classifier from transformer encoder blocks (Vaswani et al. 2017, pre-norm variant).

    Features are projected to ``hidden_dim``, a learned position embedding is added, ``depth``
    encoder blocks mix the sequence, and the mean token is classified.

    Args:
        input_shape: ``(T, F)`` with a fixed ``T`` (the position embedding has one vector per step).
        num_classes: output classes (1 gives a sigmoid).
        hidden_dim, depth, num_heads, mlp_dim, dropout: transformer size.

    Returns:
        Model ``(B, T, F) -> (B, num_classes)``; pass it to :func:`attention_scores_model` for maps.
    """
    if len(input_shape) != 2 or input_shape[0] is None:
        raise ValueError(f"input_shape must be (T, F) with a fixed T; got {tuple(input_shape)}")
    inputs = keras.Input(shape=tuple(input_shape), name="sequence")
    x = layers.Dense(hidden_dim, name="embed")(inputs)
    x = AddPositionEmbedding(name="position_embedding")(x)
    x = encoder_stack(x, depth, num_heads, mlp_dim, dropout=dropout)
    x = layers.GlobalAveragePooling1D(name="mean_token")(x)
    activation = "sigmoid" if num_classes == 1 else "softmax"
    x = layers.Dense(num_classes, name="logits")(x)
    outputs = layers.Activation(activation, dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)
