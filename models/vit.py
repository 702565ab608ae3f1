"""Vision Transformer (ViT) for 2D images and 3D volumes.

The image is cut into non-overlapping patches (16x16 pixels in ViT-B/16, or p x p x p voxels in 3D),
each patch is linearly projected to a token, a learned class token is prepended, a learned position
embedding is added, and a stack of transformer encoder blocks (:mod:`models.attention`) mixes the
tokens. The classifier reads the class token.

Presets:

* ``vit_b16``: ViT-Base/16 of Dosovitskiy et al. (ICLR 2021): 16x16 patches, width 768, 12 blocks,
  12 heads, MLP 3072. At 224x224x3 with 1000 classes it has 86,567,656 parameters, the count of the
  fine-tuning model in the reference implementations (google-research/vision_transformer, timm
  ``vit_base_patch16_224``): biases in every projection, LayerNorm epsilon 1e-6, a final LayerNorm,
  and a single linear head on the class token with no pre-logits layer (the pre-logits layer only
  exists during ImageNet-21k pre-training).
* ``vit``: a small configuration (patch 4, width 64, 4 blocks) that trains on a CPU in minutes.

Reference:
    Dosovitskiy et al., "An image is worth 16x16 words: transformers for image recognition at
    scale", ICLR 2021.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from models import blocks
from models.attention import AddPositionEmbedding, ClassToken, encoder_stack
from models.registry import register


def _patch_tuple(patch_size, rank: int) -> tuple[int, ...]:
    patch = (patch_size,) * rank if isinstance(patch_size, int) else tuple(patch_size)
    if len(patch) != rank or any(p < 1 for p in patch):
        raise ValueError(f"patch_size must be a positive int or {rank} positive ints; got {patch_size}")
    return patch


def patch_embedding(x, patch_size, hidden_dim: int, *, name: str = "patch_embedding"):
    """Cut an image into non-overlapping patches and project each to a ``hidden_dim`` token.

    A convolution with kernel = stride = patch size is exactly "flatten each patch, then one shared
    Dense layer", written in a way that works for 2D and 3D alike.

    Args:
        x: ``(B, H, W, C)`` or ``(B, D, H, W, C)`` with sizes divisible by the patch size.
        patch_size: int (same on every axis) or one int per spatial axis.
        hidden_dim: token width ``D_model``.

    Returns:
        ``(B, num_patches, hidden_dim)`` tokens in row-major patch order.
    """
    rank = len(x.shape) - 2
    patch = _patch_tuple(patch_size, rank)
    spatial = tuple(x.shape[1:-1])
    if any(s is None or s % p for s, p in zip(spatial, patch, strict=True)):
        raise ValueError(f"image size {spatial} must be fixed and divisible by the patch size {patch}")
    num_patches = 1
    for s, p in zip(spatial, patch, strict=True):
        num_patches *= s // p
    x = blocks.conv(rank, hidden_dim, patch, strides=patch, padding="valid", name=f"{name}_projection")(x)
    return layers.Reshape((num_patches, hidden_dim), name=f"{name}_tokens")(x)


def vit(
    input_shape: Sequence[int] = (32, 32, 1),
    num_classes: int = 2,
    *,
    patch_size: int | Sequence[int] = 4,
    hidden_dim: int = 64,
    depth: int = 4,
    num_heads: int = 4,
    mlp_dim: int = 128,
    dropout: float = 0.0,
    attention_dropout: float = 0.0,
    pool: str = "token",
    name: str = "vit",
) -> keras.Model:
    """Vision Transformer classifier for ``(H, W, C)`` images or ``(D, H, W, C)`` volumes.

    Args:
        input_shape: image shape; every spatial size must be divisible by the patch size.
        num_classes: output classes (1 gives a sigmoid).
        patch_size: patch edge (int) or one per spatial axis, e.g. ``(4, 16, 16)`` for thick slices.
        hidden_dim: token width.
        depth: number of encoder blocks.
        num_heads: attention heads per block (must divide ``hidden_dim``).
        mlp_dim: MLP hidden width in each block.
        dropout: dropout after the embedding and inside the blocks.
        attention_dropout: dropout on attention weights.
        pool: ``"token"`` classifies the class token (ViT); ``"mean"`` averages the patch tokens.

    Returns:
        Model ``(B, *input_shape) -> (B, num_classes)`` probabilities (float32). Use
        :func:`models.attention.attention_scores_model` to get the attention maps
        ``(B, heads, 1 + num_patches, 1 + num_patches)`` of each block.
    """
    rank = blocks.spatial_rank(input_shape)
    if hidden_dim % num_heads:
        raise ValueError(f"hidden_dim ({hidden_dim}) must be divisible by num_heads ({num_heads})")
    if pool not in ("token", "mean"):
        raise ValueError(f"pool must be 'token' or 'mean'; got {pool!r}")
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = patch_embedding(inputs, _patch_tuple(patch_size, rank), hidden_dim)
    x = ClassToken(name="class_token")(x)
    x = AddPositionEmbedding(name="position_embedding")(x)
    x = layers.Dropout(dropout, name="embedding_dropout")(x)
    x = encoder_stack(x, depth, num_heads, mlp_dim, dropout=dropout, attention_dropout=attention_dropout)
    if pool == "token":
        x = TakeClassToken(name="class_token_out")(x)
    else:
        x = layers.GlobalAveragePooling1D(name="mean_token")(DropClassToken(name="patch_tokens")(x))
    activation = "sigmoid" if num_classes == 1 else "softmax"
    x = layers.Dense(num_classes, name="head")(x)
    outputs = layers.Activation(activation, dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)


@keras.saving.register_keras_serializable(package="medkit")
class TakeClassToken(layers.Layer):
    """Takes the class token: ``(B, N + 1, D) -> (B, D)``."""

    def call(self, tokens):
        return tokens[:, 0]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


@keras.saving.register_keras_serializable(package="medkit")
class DropClassToken(layers.Layer):
    """Drops the class token: ``(B, N + 1, D) -> (B, N, D)``."""

    def call(self, tokens):
        return tokens[:, 1:]

    def compute_output_shape(self, input_shape):
        n = None if input_shape[1] is None else input_shape[1] - 1
        return (input_shape[0], n, input_shape[2])


def vit_b16(input_shape: Sequence[int] = (224, 224, 3), num_classes: int = 1000, **kwargs) -> keras.Model:
    """ViT-Base/16 (Dosovitskiy et al. 2021): patch 16, width 768, depth 12, 12 heads, MLP 3072.

    86,567,656 parameters at 224x224x3 with 1000 classes (linear head on the class token, no
    pre-logits layer; see the module docstring). Other keyword arguments go to :func:`vit`.
    """
    config = {"patch_size": 16, "hidden_dim": 768, "depth": 12, "num_heads": 12, "mlp_dim": 3072,
              "name": "vit_b16"}
    config.update(kwargs)
    return vit(input_shape, num_classes, **config)


register("vit", family="ViT", topic="Attention and transformers", ranks=(2, 3),
         defaults={"input_shape": (32, 32, 1), "num_classes": 2},
         example={"input_shape": (16, 16, 1), "hidden_dim": 16, "depth": 1, "num_heads": 2, "mlp_dim": 16})(vit)
register("vit_b16", family="ViT", topic="Attention and transformers", ranks=(2, 3),
         defaults={"input_shape": (224, 224, 3), "num_classes": 1000},
         example={"input_shape": (32, 32, 3), "num_classes": 2, "depth": 1})(vit_b16)
