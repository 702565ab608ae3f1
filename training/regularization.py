"""Regularisation toolkit: weight penalties, weight noise, early stopping, ensembles, Monte-Carlo dropout.

- :func:`add_weight_penalty` puts L1/L2 penalties on the kernels of an already built model (no need
  to rebuild it with ``kernel_regularizer=`` on every layer); the penalty is saved with the model.
- :class:`WeightNoise` is a callback that evaluates every training step at Gaussian-perturbed weights
  and applies the update to the clean weights (Graves 2011).
- Dropout itself is a layer (``keras.layers.Dropout`` / ``SpatialDropout2D``); the model builders
  take a ``dropout`` rate.
- Early stopping on a validation metric is Keras' ``EarlyStopping`` callback; :func:`early_stopping`
  configures it for a metric such as ``val_dice`` (``mode="max"``) and restores the best weights.
- :func:`ensemble_predict` / :func:`average_model` / :func:`majority_vote` combine several models.
- :func:`mc_dropout_predict` keeps dropout on at test time and turns the spread of many stochastic
  predictions into uncertainty maps.
- :func:`tying_penalty` and :class:`SoftParameterSharing` constrain two networks' parameters towards
  each other (soft parameter sharing), between independent networks and one shared network.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

_EPS = 1e-12
_KERNEL_ATTRIBUTES = ("kernel", "depthwise_kernel", "pointwise_kernel")


def _all_layers(model) -> list:
    """Every layer of a model, descending into nested models, each once."""
    seen, ordered = set(), []

    def visit(layer):
        for child in getattr(layer, "layers", []):
            if id(child) not in seen:
                seen.add(id(child))
                ordered.append(child)
                visit(child)

    visit(model)
    return ordered


# ----------------------------------------------------------------------------------------------
# Weight penalties and weight noise
# ----------------------------------------------------------------------------------------------


def add_weight_penalty(model: keras.Model, *, l1: float = 0.0, l2: float = 0.0) -> int:
    """Add an L1/L2 penalty on every kernel (convolution and dense weights, not biases) of a built model.

    The penalty ``l1 * sum|w| + l2 * sum(w^2)`` per kernel joins ``model.losses``, which ``fit()`` adds
    to the loss. It is stored in each layer's ``kernel_regularizer`` too, so it survives
    ``model.save`` / ``keras.models.load_model``. Call it before ``compile``; on an already compiled
    model the cached training function is dropped so the next ``fit`` includes the penalty.

    Args:
        model: a built Keras model.
        l1, l2: penalty weights (>= 0).

    Returns:
        The number of kernels penalised.

    Raises:
        ValueError: for negative weights or a model that is not built.
    """
    if l1 < 0 or l2 < 0:
        raise ValueError(f"l1 and l2 must be >= 0; got l1={l1}, l2={l2}")
    if not model.built:
        raise ValueError("add_weight_penalty needs a built model (call it on data or build it first)")
    count = 0
    for layer in _all_layers(model):
        for attribute in _KERNEL_ATTRIBUTES:
            variable = getattr(layer, attribute, None)
            if variable is None or not isinstance(variable, keras.Variable):
                continue
            regularizer = keras.regularizers.L1L2(l1=l1, l2=l2) if (l1 or l2) else None
            variable.regularizer = regularizer
            setattr(layer, f"{attribute}_regularizer", regularizer)
            count += 1
    if getattr(model, "compiled", False):
        model.train_function = model.test_function = None
    return count


def weight_penalty(model: keras.Model) -> float:
    """The current total weight penalty of a model (sum of its regularisation losses).

    Args:
        model: a Keras model.

    Returns:
        float (0 if the model has no penalties).
    """
    return float(sum(float(ops.convert_to_numpy(loss)) for loss in model.losses))


class WeightNoise(keras.callbacks.Callback):
    """Weight noise: each training step sees kernels plus Gaussian noise; the update goes to the clean kernels.

    Before a batch, noise ``N(0, stddev^2)`` is added to every kernel; after the optimiser step the
    same noise is subtracted, so the weights move by an update computed at perturbed weights. This
    favours flat minima, like dropout does for activations. Evaluation and prediction use clean
    weights. (With ``steps_per_execution > 1`` the noise changes once per execution, not per step.)

    Args:
        stddev: noise standard deviation (in weight units; 0.01-0.05 is typical for normalised nets).
        seed: int seed for the noise (reproducible runs).
    """

    def __init__(self, stddev: float = 0.01, seed: int | None = None):
        super().__init__()
        if stddev < 0:
            raise ValueError(f"stddev must be >= 0; got {stddev}")
        self.stddev = float(stddev)
        self.seed = seed
        self._generator = None
        self._noise = []

    def _kernels(self):
        return [w for w in self.model.trainable_weights if w.name in _KERNEL_ATTRIBUTES]

    def on_train_begin(self, logs=None):
        self._generator = keras.random.SeedGenerator(self.seed)

    def on_train_batch_begin(self, batch, logs=None):
        if not self.stddev:
            return
        self._noise = []
        for kernel in self._kernels():
            noise = keras.random.normal(kernel.shape, stddev=self.stddev, dtype=kernel.dtype, seed=self._generator)
            kernel.assign_add(noise)
            self._noise.append((kernel, noise))

    def on_train_batch_end(self, batch, logs=None):
        for kernel, noise in self._noise:
            kernel.assign_sub(noise)
        self._noise = []


def early_stopping(
    monitor: str = "val_dice",
    *,
    mode: str = "max",
    patience: int = 10,
    min_delta: float = 0.0,
    restore_best_weights: bool = True,
    start_from_epoch: int = 0,
) -> keras.callbacks.EarlyStopping:
    """Keras' ``EarlyStopping`` configured for a validation metric.

    Training stops when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs, and the
    weights of the best epoch are put back. The metric must be logged: ``val_<name>`` exists when
    ``fit`` gets ``validation_data`` and the model was compiled with a metric of that name (e.g.
    ``training.metrics.DiceMetric(name="dice")`` gives ``val_dice``).

    Args:
        monitor: logged quantity (``"val_loss"`` with ``mode="min"``, ``"val_dice"`` with ``"max"``).
        mode: ``"max"`` or ``"min"``: the direction that counts as improvement.
        patience: epochs without improvement before stopping.
        min_delta: smallest change that counts as improvement.
        restore_best_weights: put back the best epoch's weights when stopping (and at the end).
        start_from_epoch: epochs of warm-up before improvement is checked.

    Returns:
        A configured ``keras.callbacks.EarlyStopping``; pass it in ``fit(callbacks=[...])``.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min'; got {mode!r}")
    return keras.callbacks.EarlyStopping(
        monitor=monitor, mode=mode, patience=patience, min_delta=min_delta,
        restore_best_weights=restore_best_weights, start_from_epoch=start_from_epoch,
    )


# ----------------------------------------------------------------------------------------------
# Ensembles
# ----------------------------------------------------------------------------------------------


def _predict(model, x, batch_size):
    """Predictions in chunks of ``batch_size``, called eagerly (no tracing cost for small inputs)."""
    x = np.asarray(x)
    chunks = [model(x[i : i + batch_size], training=False) for i in range(0, len(x), batch_size)]
    return np.concatenate([np.asarray(ops.convert_to_numpy(c), dtype=np.float32) for c in chunks])


def majority_vote(label_maps: Sequence[np.ndarray], num_classes: int | None = None) -> np.ndarray:
    """Voxel-wise majority vote of several integer label maps; ties go to the smallest label.

    Args:
        label_maps: sequence of integer arrays of the same shape.
        num_classes: number of classes (default: largest label + 1).

    Returns:
        int array of the same shape.
    """
    stack = np.stack([np.asarray(m) for m in label_maps])
    if not np.issubdtype(stack.dtype, np.integer):
        raise ValueError(f"majority_vote needs integer label maps; got dtype {stack.dtype}")
    num_classes = int(stack.max()) + 1 if num_classes is None else num_classes
    votes = np.stack([(stack == c).sum(axis=0) for c in range(num_classes)], axis=-1)
    return np.argmax(votes, axis=-1)


def ensemble_predict(models: Sequence[keras.Model], x, *, mode: str = "mean", batch_size: int = 32) -> np.ndarray:
    """Combine the predictions of several models of the same task.

    Args:
        models: models that take ``x`` and return probabilities ``(B, ..., K)``.
        x: input batch ``(B, ...)``.
        mode: ``"mean"``: average the probabilities (soft voting); ``"vote"``: arg-max of each model,
            then majority vote per voxel/sample (hard voting; ties go to the smallest label).
        batch_size: samples per forward pass.

    Returns:
        ``"mean"``: float32 ``(B, ..., K)``; ``"vote"``: int labels ``(B, ...)``.
    """
    if not models:
        raise ValueError("ensemble_predict needs at least one model")
    if mode not in ("mean", "vote"):
        raise ValueError(f"mode must be 'mean' or 'vote'; got {mode!r}")
    predictions = [_predict(m, x, batch_size) for m in models]
    if mode == "mean":
        return np.mean(predictions, axis=0)
    return majority_vote([np.argmax(p, axis=-1) for p in predictions], num_classes=predictions[0].shape[-1])


def average_model(models: Sequence[keras.Model], name: str = "ensemble") -> keras.Model:
    """One Keras model whose output is the average of several models' outputs (saveable as ``.keras``).

    Args:
        models: models with the same input and output shapes.
        name: name of the combined model.

    Returns:
        A functional ``keras.Model``.
    """
    if len(models) < 2:
        raise ValueError(f"average_model needs at least two models; got {len(models)}")
    input_shape = models[0].input_shape[1:]
    for model in models[1:]:
        if model.input_shape[1:] != input_shape:
            raise ValueError(f"models take different inputs: {input_shape} vs {model.input_shape[1:]}")
    inputs = keras.Input(shape=input_shape)
    outputs = keras.layers.Average(dtype="float32")([m(inputs) for m in models])
    return keras.Model(inputs, outputs, name=name)


# ----------------------------------------------------------------------------------------------
# Monte-Carlo dropout
# ----------------------------------------------------------------------------------------------


def mc_dropout_predict(model: keras.Model, x, *, num_samples: int = 20, probabilities: bool = True) -> dict:
    """Monte-Carlo dropout: many predictions with dropout on, summarised as uncertainty maps.

    Dropout (and any other layer that is random in training, such as ``GaussianNoise``) is active;
    batch normalisation stays in inference mode (its layers are frozen for the duration), so the
    model's statistics are neither used from the batch nor updated. Dropout layers draw from their own
    seed generators, created when the model is built: call ``training.reproducibility.set_seed``
    before building the model for repeatable maps.

    Args:
        model: a model containing dropout layers.
        x: input batch ``(B, ...)``.
        num_samples: number of stochastic forward passes.
        probabilities: the outputs are class probabilities ``(..., K)``; adds the entropy maps.

    Returns:
        dict of float32 NumPy arrays:

        - ``"mean"`` ``(B, ..., K)``: the averaged prediction (use its arg-max as the segmentation);
        - ``"variance"`` ``(B, ..., K)``: variance of each output over the samples;
        - with ``probabilities``: ``"entropy"`` ``(B, ...)``, entropy of the mean prediction (total
          uncertainty, nats) and ``"mutual_information"`` ``(B, ...)``, entropy of the mean minus the
          mean entropy (the model, or epistemic, part; BALD).
    """
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2 to measure spread; got {num_samples}")
    frozen = [layer for layer in _all_layers(model)
              if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
    for layer in frozen:
        layer.trainable = False  # BN in Keras 3 uses moving statistics when not trainable
    try:
        total = total_sq = mean_entropy = 0.0
        for _ in range(num_samples):
            p = np.asarray(ops.convert_to_numpy(model(x, training=True)), dtype=np.float64)
            total = total + p
            total_sq = total_sq + p * p
            if probabilities:
                mean_entropy = mean_entropy - np.sum(p * np.log(p + _EPS), axis=-1)
    finally:
        for layer in frozen:
            layer.trainable = True
    mean = total / num_samples
    out = {"mean": mean.astype(np.float32), "variance": np.maximum(total_sq / num_samples - mean**2, 0.0).astype(np.float32)}
    if probabilities:
        entropy = -np.sum(mean * np.log(mean + _EPS), axis=-1)
        out["entropy"] = entropy.astype(np.float32)
        out["mutual_information"] = np.maximum(entropy - mean_entropy / num_samples, 0.0).astype(np.float32)
    return out


# ----------------------------------------------------------------------------------------------
# Parameter sharing
# ----------------------------------------------------------------------------------------------


def _paired_weights(model_a, model_b, which: str) -> list[tuple]:
    """Matching trainable weights of two networks of the same architecture, in creation order."""
    if which not in ("all", "kernels"):
        raise ValueError(f"which must be 'all' or 'kernels'; got {which!r}")

    def chosen(model):
        weights = model.trainable_weights
        return [w for w in weights if which == "all" or w.name in _KERNEL_ATTRIBUTES]

    weights_a, weights_b = chosen(model_a), chosen(model_b)
    if len(weights_a) != len(weights_b):
        raise ValueError(f"networks to tie have {len(weights_a)} and {len(weights_b)} {which} weights; "
                         "they need the same architecture")
    for wa, wb in zip(weights_a, weights_b):
        if tuple(wa.shape) != tuple(wb.shape):
            raise ValueError(f"weights {wa.path} {tuple(wa.shape)} and {wb.path} {tuple(wb.shape)} cannot be tied: "
                             "shapes differ (the networks need the same architecture)")
    return list(zip(weights_a, weights_b))


def tying_penalty(model_a: keras.Model, model_b: keras.Model, *, which: str = "all"):
    """Squared distance between the parameters of two networks of the same architecture.

    ``sum_l ||theta_A,l - theta_B,l||^2`` over matching trainable weights: the soft parameter-sharing
    penalty. It is zero for identical networks and grows as the two drift apart.

    Args:
        model_a, model_b: built models (or layers) with the same trainable weight shapes.
        which: ``"all"`` trainable weights, or ``"kernels"`` (convolution and dense kernels, no biases).

    Returns:
        float32 scalar tensor (differentiable with respect to both networks' weights).

    Raises:
        ValueError: if the networks' weights do not pair up by count and shape.
    """
    pairs = _paired_weights(model_a, model_b, which)
    total = ops.zeros((), dtype="float32")
    for wa, wb in pairs:
        total = total + ops.sum(ops.square(ops.cast(wa, "float32") - ops.cast(wb, "float32")))
    return total


@keras.saving.register_keras_serializable(package="medkit")
class SoftParameterSharing(keras.Model):
    """Two networks of one architecture, one per task (or site), trained together with a tying penalty.

    Soft parameter sharing (Duong et al. 2015; Ruder 2017): each task keeps its own network, and the
    training objective adds ``strength * tying_penalty(network_a, network_b)``. ``strength = 0`` trains
    two independent networks; a very large ``strength`` forces them to be equal, which is hard parameter
    sharing (one network for both). In between, a task with little data borrows from the other.

    Call it on ``[x_a, x_b]`` (two batches of the same size): it returns ``[network_a(x_a),
    network_b(x_b)]`` and, in training, adds the penalty to ``model.losses``, so ``compile`` with one loss
    per output and ``fit([x_a, x_b], [y_a, y_b])`` train both networks and the tie. Use ``network_a``
    and ``network_b`` on their own for prediction. Round-trips through ``.keras``.

    Args:
        network_a, network_b: models with the same architecture (their inputs may differ in content,
            not in shape). Build ``network_b`` with the same initial weights as ``network_a`` if the
            tie should start at zero; it does not have to.
        strength: penalty weight (>= 0).
        which: ``"all"`` trainable weights or ``"kernels"`` only (see :func:`tying_penalty`).

    Raises:
        ValueError: for a negative ``strength`` or networks whose weights do not pair up.
    """

    def __init__(self, network_a: keras.Model, network_b: keras.Model, strength: float = 1e-2,
                 which: str = "all", **kwargs):
        super().__init__(**kwargs)
        if strength < 0:
            raise ValueError(f"strength must be >= 0; got {strength}")
        _paired_weights(network_a, network_b, which)  # fail early, naming the mismatched weights
        self.network_a, self.network_b = network_a, network_b
        self.strength, self.which = float(strength), which

    def call(self, inputs, training=None):
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            raise ValueError("SoftParameterSharing takes two inputs [x_a, x_b] (one batch per network)")
        x_a, x_b = inputs
        outputs = [self.network_a(x_a, training=training), self.network_b(x_b, training=training)]
        if self.strength:
            self.add_loss(self.strength * tying_penalty(self.network_a, self.network_b, which=self.which))
        return outputs

    def penalty(self) -> float:
        """The current tying penalty ``strength * tying_penalty(...)`` (float)."""
        return self.strength * float(ops.convert_to_numpy(tying_penalty(self.network_a, self.network_b, which=self.which)))

    def get_config(self):
        return {
            **super().get_config(),
            "network_a": keras.saving.serialize_keras_object(self.network_a),
            "network_b": keras.saving.serialize_keras_object(self.network_b),
            "strength": self.strength,
            "which": self.which,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("network_a", "network_b"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
