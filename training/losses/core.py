"""Helpers shared by the losses: one-hot targets, probabilities, label smoothing, the Loss base."""

from __future__ import annotations

import inspect

import keras
from keras import ops

_EPS = 1e-7


# ----------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------


def _spatial_axes(rank: int) -> tuple[int, ...]:
    """Axes between batch and channel of a tensor of the given rank."""
    return tuple(range(1, rank - 1))


def to_one_hot(y_true, num_classes: int, pred_rank: int):
    """Turn a label map (or an already one-hot tensor) into float32 one-hot targets.

    Args:
        y_true: integer labels ``(B, *spatial)`` or ``(B, *spatial, 1)``, or one-hot ``(B, *spatial, K)``.
        num_classes: ``K``, the number of channels of the prediction.
        pred_rank: rank of the prediction tensor, ``len((B, *spatial, K))``.

    Returns:
        float32 tensor ``(B, *spatial, K)``; for ``K == 1`` the foreground mask ``(B, *spatial, 1)``.

    Raises:
        ValueError: if the shapes cannot be matched.
    """
    y_true = ops.convert_to_tensor(y_true)
    rank = len(y_true.shape)
    if rank == pred_rank - 1:
        if num_classes == 1:
            return ops.expand_dims(ops.cast(y_true, "float32"), -1)
        labels = y_true
    elif rank == pred_rank:
        last = y_true.shape[-1]
        if num_classes == 1 or (last == num_classes and num_classes > 1):
            return ops.cast(y_true, "float32")
        if last != 1:
            raise ValueError(
                f"y_true has {last} channels but y_pred has {num_classes}: pass labels (B, *spatial) or "
                f"(B, *spatial, 1), or one-hot (B, *spatial, {num_classes})"
            )
        labels = ops.squeeze(y_true, axis=-1)
    else:
        raise ValueError(
            f"y_true of rank {rank} does not fit y_pred of rank {pred_rank}: expected labels "
            f"(B, *spatial) / (B, *spatial, 1) or one-hot (B, *spatial, K)"
        )
    return ops.one_hot(ops.cast(labels, "int32"), num_classes, dtype="float32")


def _probabilities(y_pred, from_logits: bool):
    """float32 probabilities from a prediction; softmax (or sigmoid for one channel) of logits."""
    y_pred = ops.cast(y_pred, "float32")
    if y_pred.shape[-1] is None:
        raise ValueError("y_pred must have a known number of channels (classes) in its last axis")
    if from_logits:
        return ops.sigmoid(y_pred) if y_pred.shape[-1] == 1 else ops.softmax(y_pred, axis=-1)
    return y_pred


def _prepare(y_true, y_pred, from_logits: bool):
    """One-hot float32 targets and float32 probabilities, both ``(B, *spatial, K)``."""
    y_pred = _probabilities(y_pred, from_logits)
    y_true = to_one_hot(y_true, y_pred.shape[-1], len(y_pred.shape))
    return y_true, y_pred


def _log_probabilities(y_true, y_pred, from_logits: bool):
    """One-hot targets and log-probabilities; a single sigmoid channel becomes two (background, foreground)."""
    y_pred = ops.cast(y_pred, "float32")
    num_classes = y_pred.shape[-1]
    y_true = to_one_hot(y_true, num_classes, len(y_pred.shape))
    if num_classes == 1:
        y_true = ops.concatenate([1.0 - y_true, y_true], axis=-1)
        if from_logits:
            # log(sigmoid(z)) = -softplus(-z), log(1 - sigmoid(z)) = -softplus(z): stable for large |z|.
            log_p = ops.concatenate([-ops.softplus(y_pred), -ops.softplus(-y_pred)], axis=-1)
        else:
            p = ops.clip(y_pred, _EPS, 1.0 - _EPS)
            log_p = ops.log(ops.concatenate([1.0 - p, p], axis=-1))
    elif from_logits:
        log_p = ops.log_softmax(y_pred, axis=-1)
    else:
        log_p = ops.log(ops.clip(y_pred, _EPS, 1.0))
    return y_true, log_p


def _drop_background(*tensors):
    """Remove channel 0 (the background class) when there is more than one channel."""
    if tensors[0].shape[-1] == 1:
        return tensors  # one sigmoid channel *is* the foreground
    return tuple(t[..., 1:] for t in tensors)


def smooth_labels(one_hot, epsilon: float):
    """Label smoothing: move ``epsilon`` of the probability mass evenly onto all classes.

    Args:
        one_hot: one-hot targets ``(..., K)``.
        epsilon: amount of smoothing in ``[0, 1)``; 0 returns the targets unchanged.

    Returns:
        ``(1 - epsilon) * one_hot + epsilon / K``, same shape.
    """
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1); got {epsilon}")
    one_hot = ops.cast(one_hot, "float32")
    num_classes = one_hot.shape[-1]
    return one_hot * (1.0 - epsilon) + epsilon / num_classes



class _FunctionLoss(keras.losses.Loss):
    """A ``keras.losses.Loss`` calling its loss function with fixed options.

    The options and their defaults are read from the function's signature (its keyword
    parameters), so they are written down once, in the function; the class checks the names,
    fills in the defaults and serialises them (``get_config``).
    """

    _function = None
    _options_of = None  # the function whose keyword parameters are the options (default: _function)
    _arguments = ("y_true", "y_pred")

    @classmethod
    def options(cls) -> dict:
        """The loss's options and their defaults, from the function's signature."""
        fn = cls._options_of or cls._function
        return {k: p.default for k, p in inspect.signature(fn).parameters.items()
                if p.default is not inspect.Parameter.empty and k not in cls._arguments}

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype=None, **kwargs):
        super().__init__(name=name or self._default_name, reduction=reduction, dtype=dtype)
        defaults = self.options()
        unknown = set(kwargs) - set(defaults)
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown options {sorted(unknown)}; options: {sorted(defaults)}")
        # Sequences become lists so the config is plain JSON.
        self._kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in {**defaults, **kwargs}.items()}

    def call(self, y_true, y_pred):
        return type(self)._function(y_true, y_pred, **self._kwargs)

    def get_config(self):
        return {**super().get_config(), **self._kwargs}


class _RegulariserLoss(_FunctionLoss):
    """A displacement regulariser as a loss: ``y_pred`` is the field; ``y_true`` is ignored (pass zeros)."""

    _arguments = ("ddf",)

    def call(self, y_true, y_pred):
        return type(self)._function(y_pred, **self._kwargs)


def loss_class(class_name: str, function, name: str | None = None, doc: str | None = None, *,
               base=_FunctionLoss, options_of=None):
    """The Keras ``Loss`` class of a loss function, registered for serialisation.

    Args:
        class_name: e.g. ``"SoftDiceLoss"``. function: the loss function it calls.
        name: the loss's default name in logs (default: the function's name, ending in ``_loss``).
        doc: the class docstring (default: the function's first line, pointing to the function).
        base: ``_FunctionLoss`` (``function(y_true, y_pred, **options)``) or ``_RegulariserLoss``
            (``function(y_pred, **options)``). options_of: function whose keywords are the options.
    """
    fn = function.__name__
    name = name or (fn if fn.endswith("_loss") else f"{fn}_loss")
    if doc is None:
        summary = (function.__doc__ or fn).strip().splitlines()[0].split("; ")[0].rstrip(".")
        doc = f"{summary}, for ``compile``; options as in :func:`{(options_of or function).__name__}`."
    attrs = {"_function": staticmethod(function), "_default_name": name, "__doc__": doc,
             "__module__": function.__module__}
    if options_of is not None:
        attrs["_options_of"] = staticmethod(options_of)
    return keras.saving.register_keras_serializable(package="medkit")(type(class_name, (base,), attrs))
