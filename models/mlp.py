"""Multilayer perceptron (fully connected network) for feature vectors.

Reference: Rumelhart, Hinton, Williams, "Learning representations by back-propagating errors",
Nature 1986 (the MLP trained by back-propagation). Batch norm: Ioffe and Szegedy, ICML 2015;
dropout: Srivastava et al., JMLR 2014.

Example::

    import models
    clf = models.get("mlp", input_shape=(30,), num_classes=2)                        # classification
    reg = models.get("mlp", input_shape=(8,), num_classes=1, task="regression")     # regression
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from models.blocks import BN_MOMENTUM, classifier_head, set_bn_momentum
from models.registry import register

TASKS = {"classification": "softmax", "binary": "sigmoid", "regression": None}


@register(
    "mlp",
    family="MLP",
    topic="MLP and back-propagation",
    ranks=(0,),
    defaults=dict(input_shape=(784,), num_classes=10, widths=(256, 128)),
    example=dict(input_shape=(12,), num_classes=3, widths=(8,)),
)
def mlp(
    input_shape: Sequence[int | None] | int,
    num_classes: int,
    widths: Sequence[int] | None = None,
    *,
    width: int = 64,
    depth: int = 2,
    activation: str = "relu",
    dropout: float = 0.0,
    batch_norm: bool = False,
    task: str = "classification",
    bn_momentum: float = BN_MOMENTUM,
    name: str = "mlp",
) -> keras.Model:
    """A multilayer perceptron: ``[dense -> (batch norm) -> act -> (dropout)] x depth -> head``.

    Args:
        input_shape: ``(F,)`` features per sample (an int is accepted). Images must be flattened
            first (or use a CNN).
        num_classes: classes (``task="classification"``), 1 for ``"binary"``, or the number of
            regression targets (the name every model builder of the zoo uses for its outputs).
        widths: hidden layer widths, e.g. ``(256, 128)``; when ``None``, ``depth`` layers of ``width``.
        width, depth: used when ``widths`` is ``None`` (``depth=0`` gives logistic/linear regression).
        activation: hidden activation (``"relu"``, ``"tanh"``, ``"gelu"``, ...).
        dropout: dropout rate after each hidden layer.
        batch_norm: batch normalisation between each dense layer and its activation (the dense
            layer then has no bias).
        task: ``"classification"`` (softmax), ``"binary"`` (sigmoid) or ``"regression"`` (linear).
        bn_momentum: momentum of batch norm's running statistics (Keras' 0.99); short runs need a
            lower momentum (e.g. 0.9) so running statistics keep up.
        name: model name.

    Returns:
        ``keras.Model`` mapping ``(B, F)`` to ``(B, num_classes)`` float32.
    """
    if isinstance(input_shape, int):
        input_shape = (input_shape,)
    if len(input_shape) != 1:
        raise ValueError(
            f"mlp: input_shape must be (num_features,); got {tuple(input_shape)}. Flatten images first."
        )
    if task not in TASKS:
        raise ValueError(f"mlp: task must be one of {tuple(TASKS)}; got {task!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"mlp: dropout must be in [0, 1); got {dropout}")
    if widths is None:
        widths = (width,) * depth
    if any(int(w) < 1 for w in widths):
        raise ValueError(f"mlp: widths must be positive; got {tuple(widths)}")
    inputs = keras.Input(shape=tuple(input_shape), name="features")
    x = inputs
    for i, w in enumerate(widths):
        x = layers.Dense(int(w), use_bias=not batch_norm, name=f"dense{i + 1}")(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"dense{i + 1}_norm")(x)
        x = layers.Activation(activation, name=f"dense{i + 1}_act")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"dense{i + 1}_dropout")(x)
    outputs = classifier_head(x, num_classes, activation=TASKS[task], pooling=None)
    return set_bn_momentum(keras.Model(inputs, outputs, name=name), bn_momentum)
