"""PointNet for point-cloud classification and per-point segmentation.

Reference: Qi, Su, Mo, Guibas, "PointNet: Deep Learning on Point Sets for 3D Classification and
Segmentation", CVPR 2017 (Figure 2, supplementary Section C). Points are ``(B, N, 3)`` (or more
features per point); a shared per-point MLP (``1x1`` convolutions) and a symmetric max pooling make
the global feature independent of the order of the points.

Example::

    import models
    clf = models.get("pointnet", num_points=1024, num_classes=40)
    seg = models.get("pointnet_seg", num_points=2048, num_classes=4)
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from models.blocks import BN_MOMENTUM, conv_norm_act, global_max_pool, set_bn_momentum
from models.registry import register

_TOPIC = "Point clouds: PointNet"


@keras.saving.register_keras_serializable(package="medkit")
class OrthogonalRegularizer(keras.regularizers.Regularizer):
    """Penalty ``weight * ||I - A A^T||_F^2`` on a predicted ``k x k`` transform (PointNet, Eq. 2).

    Used as the ``activity_regularizer`` of the dense layer that outputs the flattened transform, so
    the loss is added to ``model.losses`` (and to the training loss by ``fit``) automatically.

    Args:
        k: size of the transform.
        weight: regularisation weight (0.001 in the paper).
    """

    def __init__(self, k: int, weight: float = 0.001):
        self.k = int(k)
        self.weight = float(weight)

    def __call__(self, x):
        a = ops.reshape(x, (-1, self.k, self.k))
        aat = ops.matmul(a, ops.transpose(a, (0, 2, 1)))
        eye = ops.eye(self.k, dtype=aat.dtype)
        # Mean over the batch so the penalty does not grow with the batch size.
        return self.weight * ops.mean(ops.sum(ops.square(eye - aat), axis=(1, 2)))

    def get_config(self):
        return {"k": self.k, "weight": self.weight}


def _shared_mlp(x, widths, norm, name):
    """Per-point dense layers, written as ``1x1`` Conv1D (the same MLP applied to every point)."""
    for i, w in enumerate(widths):
        x = conv_norm_act(x, w, 1, norm=norm, name=f"{name}_{i + 1}")
    return x


def transform_net(
    x: keras.KerasTensor,
    k: int,
    *,
    scale: float = 1.0,
    norm: str = "batch",
    reg_weight: float = 0.0,
    name: str = "tnet",
) -> keras.KerasTensor:
    """T-Net: predicts a ``k x k`` transform from the points and applies it to them.

    Shared MLP (64, 128, 1024) -> max pool -> dense 512, 256 -> dense ``k*k`` initialised to the
    identity, then ``x @ A``. With ``reg_weight > 0`` the orthogonality penalty
    :class:`OrthogonalRegularizer` keeps ``A`` close to a rotation (the paper uses it on the 64 x 64
    feature transform).

    Args:
        x: ``(B, N, k)`` points or per-point features.
        k: feature size (3 for the input transform, 64 for the feature transform).
        scale: multiplies every hidden width (1 in the paper).
        norm: normalisation in the MLPs.
        reg_weight: weight of the orthogonality penalty (0 disables it).
        name: prefix for layer names; the transform is the output of ``{name}_matrix``.

    Returns:
        ``(B, N, k)`` transformed points.
    """

    def s(n):
        return max(1, int(n * scale))

    f = _shared_mlp(x, (s(64), s(128), s(1024)), norm, f"{name}_mlp")
    f = global_max_pool(1, name=f"{name}_pool")(f)
    for i, w in enumerate((s(512), s(256))):
        f = layers.Dense(w, use_bias=norm == "none", name=f"{name}_fc{i + 1}")(f)
        if norm != "none":
            f = layers.BatchNormalization(name=f"{name}_fc{i + 1}_norm")(f)
        f = layers.Activation("relu", name=f"{name}_fc{i + 1}_act")(f)
    f = layers.Dense(
        k * k,
        kernel_initializer="zeros",
        bias_initializer=keras.initializers.Constant(np.eye(k).flatten()),
        activity_regularizer=OrthogonalRegularizer(k, reg_weight) if reg_weight else None,
        name=f"{name}_transform",
    )(f)
    matrix = layers.Reshape((k, k), name=f"{name}_matrix")(f)
    return layers.Dot(axes=(2, 1), name=f"{name}_apply")([x, matrix])


def _backbone(
    num_points, num_features, scale, norm, input_transform, feature_transform, reg_weight
):
    """Input -> [T-Net 3] -> MLP(64, 64) -> [T-Net 64] -> MLP(64, 128, 1024) -> (local, global)."""
    if num_points is not None and num_points < 1:
        raise ValueError(f"pointnet: num_points must be >= 1 or None; got {num_points}")
    if num_features < 1:
        raise ValueError(f"pointnet: num_features must be >= 1; got {num_features}")

    def s(n):
        return max(1, int(n * scale))

    inputs = keras.Input(shape=(num_points, num_features), name="points")
    x = inputs
    if input_transform:
        x = transform_net(x, num_features, scale=scale, norm=norm, name="input_tnet")
    x = _shared_mlp(x, (s(64), s(64)), norm, "mlp1")
    if feature_transform:
        x = transform_net(
            x, s(64), scale=scale, norm=norm, reg_weight=reg_weight, name="feature_tnet"
        )
    local = x
    x = _shared_mlp(x, (s(64), s(128), s(1024)), norm, "mlp2")
    return inputs, local, global_max_pool(1, name="global_pool")(x)


@register(
    "pointnet",
    family="PointNet",
    topic=_TOPIC,
    ranks=(1,),
    defaults=dict(num_points=1024, num_classes=40),
    example=dict(num_points=32, num_classes=3, scale=0.0625),
)
def pointnet(
    num_points: int | None = 1024,
    num_classes: int = 40,
    num_features: int = 3,
    *,
    scale: float = 1.0,
    norm: str = "batch",
    input_transform: bool = True,
    feature_transform: bool = True,
    reg_weight: float = 0.001,
    dropout: float = 0.3,
    final_activation: str | None = "softmax",
    bn_momentum: float = BN_MOMENTUM,
    name: str = "pointnet",
) -> keras.Model:
    """PointNet classifier (Qi et al. 2017, Figure 2, ModelNet40 configuration).

    Input T-Net (3 x 3) -> shared MLP (64, 64) -> feature T-Net (64 x 64, orthogonality penalty
    0.001) -> shared MLP (64, 128, 1024) -> max pool -> dense 512, 256 (batch norm, dropout 0.3,
    i.e. keep probability 0.7) -> classes. 3,473,969 trainable parameters for 40 classes, the paper's
    "3.5M" (3,486,129 counting batch norm's moving statistics). Follows the paper's layer widths with
    batch norm in every layer but the last; convolutions followed by batch norm have no bias (the
    authors' TensorFlow code keeps one, a few thousand parameters more).

    Args:
        num_points: points per cloud ``N`` (``None`` accepts any number).
        num_classes: output classes.
        num_features: features per point (3 for xyz; add normals or intensities as extra features).
        scale: multiplies every hidden width (0.25 gives a CPU-sized model).
        norm: ``"batch"`` (paper) or ``"none"``.
        input_transform, feature_transform: use the two T-Nets.
        reg_weight: weight of the feature-transform orthogonality penalty.
        dropout: dropout in the classifier.
        final_activation: ``"softmax"`` or ``None`` for logits.
        bn_momentum: momentum of batch norm's running statistics (Keras' 0.99); short runs need a
            lower momentum (e.g. 0.9) so running statistics keep up.
        name: model name.

    Returns:
        ``keras.Model`` mapping ``(B, N, num_features)`` to ``(B, num_classes)`` float32.
    """
    inputs, _, x = _backbone(
        num_points, num_features, scale, norm, input_transform, feature_transform, reg_weight
    )
    for i, w in enumerate((512, 256)):
        x = layers.Dense(max(1, int(w * scale)), use_bias=norm == "none", name=f"fc{i + 1}")(x)
        if norm != "none":
            x = layers.BatchNormalization(name=f"fc{i + 1}_norm")(x)
        x = layers.Activation("relu", name=f"fc{i + 1}_act")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"fc{i + 1}_dropout")(x)
    x = layers.Dense(num_classes, name="head_dense")(x)
    outputs = layers.Activation(final_activation or "linear", dtype="float32", name="head_output")(
        x
    )
    return set_bn_momentum(keras.Model(inputs, outputs, name=name), bn_momentum)


@register(
    "pointnet_seg",
    family="PointNet",
    topic=_TOPIC,
    ranks=(1,),
    defaults=dict(num_points=2048, num_classes=50),
    example=dict(num_points=32, num_classes=3, scale=0.0625),
)
def pointnet_segmentation(
    num_points: int = 2048,
    num_classes: int = 50,
    num_features: int = 3,
    *,
    scale: float = 1.0,
    norm: str = "batch",
    input_transform: bool = True,
    feature_transform: bool = True,
    reg_weight: float = 0.001,
    final_activation: str | None = "softmax",
    bn_momentum: float = BN_MOMENTUM,
    name: str = "pointnet_seg",
) -> keras.Model:
    """PointNet per-point segmentation network (Qi et al. 2017, Figure 2, bottom branch).

    Each point's local feature (64, after the feature transform) is concatenated with the global
    feature (1024), and a shared MLP (512, 256, 128) -> classes labels every point.

    Args:
        num_points: points per cloud ``N`` (must be known: the global feature is tiled ``N`` times).
        num_classes: per-point classes (50 part labels on ShapeNet-Part).
        num_features, scale, norm, input_transform, feature_transform, reg_weight: see :func:`pointnet`.
        final_activation: ``"softmax"`` or ``None`` for logits.
        bn_momentum: momentum of batch norm's running statistics (Keras' 0.99); short runs need a
            lower momentum (e.g. 0.9) so running statistics keep up.
        name: model name.

    Returns:
        ``keras.Model`` mapping ``(B, N, num_features)`` to ``(B, N, num_classes)`` float32.
    """
    if num_points is None:
        raise ValueError(
            "pointnet_segmentation: num_points must be a number (the global feature is tiled N times)"
        )
    inputs, local, global_feature = _backbone(
        num_points, num_features, scale, norm, input_transform, feature_transform, reg_weight
    )
    tiled = layers.RepeatVector(num_points, name="global_tile")(global_feature)
    x = layers.Concatenate(name="point_features")([local, tiled])
    x = _shared_mlp(x, [max(1, int(w * scale)) for w in (512, 256, 128)], norm, "seg_mlp")
    x = layers.Conv1D(num_classes, 1, name="head_conv")(x)
    outputs = layers.Activation(final_activation or "linear", dtype="float32", name="head_output")(
        x
    )
    return set_bn_momentum(keras.Model(inputs, outputs, name=name), bn_momentum)
