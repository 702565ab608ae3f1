"""Optimisers by name and learning-rate schedules (cosine, step, exponential) with linear warm-up.

Typical use::

    from training import optim
    opt = optim.get("adam", 2e-3, total_steps=epochs * steps_per_epoch)   # cosine decay over the run
    # or, piece by piece:
    lr = optim.make_schedule("cosine", 1e-3, decay_steps=epochs * steps_per_epoch, warmup_steps=200)
    opt = optim.get_optimizer("adamw", lr, weight_decay=1e-4, global_clipnorm=1.0, use_ema=True)
    model.compile(optimizer=opt, ...)

Everything returned is a plain Keras 3 object, so it is saved with the model and ``fit()`` drives it.
Keras counts schedule steps in optimiser updates (batches), not epochs.

Exponential moving average (``use_ema=True``): Keras keeps an average of the weights during training
and, at the end of ``fit()``, writes it into the model (``optimizer.finalize_variable_values``), so
the saved model holds the averaged weights. Averaged weights usually generalise a little better and
are what the mean-teacher and diffusion trainers use.
"""

from __future__ import annotations

import functools

import keras
from keras import ops

from data_utils.registry import REGISTRY, canonical_name

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step", "exponential")


def get_optimizer(
    name: str = "adam",
    learning_rate=1e-3,
    *,
    momentum: float | None = None,
    weight_decay: float | None = None,
    clipnorm: float | None = None,
    global_clipnorm: float | None = None,
    clipvalue: float | None = None,
    use_ema: bool = False,
    ema_momentum: float = 0.99,
    **kwargs,
) -> keras.optimizers.Optimizer:
    """A Keras optimiser by name.

    Args:
        name: one of ``OPTIMIZERS``: ``"sgd"`` (plain), ``"momentum"`` (heavy ball), ``"nesterov"``,
            ``"adagrad"``, ``"rmsprop"``, ``"adam"``, ``"adamw"`` (Adam with decoupled weight decay).
        learning_rate: a float or a schedule from :func:`make_schedule`.
        momentum: for ``"momentum"`` and ``"nesterov"`` (default 0.9) and ``"rmsprop"`` (default 0).
        weight_decay: decoupled weight decay (AdamW's 0.004 when ``None`` for ``"adamw"``, else off).
        clipnorm: clip each gradient tensor to this L2 norm. global_clipnorm: clip all gradients
            together to this norm (use one of the two). clipvalue: clip every element to ``[-v, v]``.
        use_ema, ema_momentum: keep an exponential moving average of the weights (see module docstring).
        **kwargs: passed to the Keras optimiser (e.g. ``beta_1``, ``epsilon``).

    Returns:
        A ``keras.optimizers.Optimizer``.

    Raises:
        ValueError: for an unknown name.
    """
    name = canonical_name(name)
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")
    common = dict(learning_rate=learning_rate, clipnorm=clipnorm, global_clipnorm=global_clipnorm,
                  clipvalue=clipvalue, use_ema=use_ema, ema_momentum=ema_momentum, **kwargs)
    if weight_decay is not None:
        common["weight_decay"] = weight_decay
    if name == "sgd":
        return keras.optimizers.SGD(**common)
    if name in ("momentum", "nesterov"):
        return keras.optimizers.SGD(momentum=0.9 if momentum is None else momentum, nesterov=name == "nesterov", **common)
    if name == "adagrad":
        return keras.optimizers.Adagrad(**common)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(momentum=momentum or 0.0, **common)
    if name == "adam":
        return Adam(**common)
    return AdamW(**common)


_FUSED_ADAM_DTYPES = ("float16", "bfloat16", "float32", "float64")  # what ResourceApplyAdam accepts


class _FusedAdamUpdate:
    """Adam's update of one variable as TensorFlow's fused kernel (``ResourceApplyAdam``).

    Keras writes the update as about twenty separate operations per variable (casts, powers, the
    two moment updates, the square root, the division), each a pass over the variable's memory and
    each a node to trace: for the coursework U-Net's 64 variables that is about 1,300 nodes. The
    fused kernel reads and writes each variable and its two moments once, with the same formula
    (``lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)``, epsilon added to ``sqrt(v)``), so results agree
    with Keras' Adam to float32 round-off. Measured on 2 AMD EPYC cores (AVX-512), the coursework
    U-Net at batch 8 of 64x64: the first training step (tracing) 1.95 -> 1.31 s, later steps about
    5 % shorter. Other backends, AMSGrad, sparse gradients and non-float variables keep Keras' own
    update.
    """

    def update_step(self, gradient, variable, learning_rate):
        if keras.backend.backend() != "tensorflow":
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf

        dtype = keras.backend.standardize_dtype(variable.dtype)
        # Keras updates only the rows an embedding's sparse gradient names; keep its own code for that.
        if self.amsgrad or dtype not in _FUSED_ADAM_DTYPES or isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        step = ops.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = ops.cast(self.beta_1, dtype), ops.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=m.value.handle, v=v.value.handle,
            beta1_power=ops.power(beta_1, step), beta2_power=ops.power(beta_2, step),
            lr=ops.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2, epsilon=ops.cast(self.epsilon, dtype),
            grad=ops.cast(gradient, dtype),
        )


@keras.saving.register_keras_serializable(package="medkit")
class Adam(_FusedAdamUpdate, keras.optimizers.Adam):
    """``keras.optimizers.Adam`` with the fused TensorFlow update (see ``_FusedAdamUpdate``); same arguments."""


@keras.saving.register_keras_serializable(package="medkit")
class AdamW(_FusedAdamUpdate, keras.optimizers.AdamW):
    """``keras.optimizers.AdamW`` with the fused update; Keras applies the decoupled weight decay before it."""


# Each optimiser by name in the kit's registry (category "optimizer"): a builder
# ``(learning_rate=..., **options) -> keras.optimizers.Optimizer``.
for _name in OPTIMIZERS:
    REGISTRY.register("optimizer", _name, functools.partial(get_optimizer, _name))


@keras.saving.register_keras_serializable(package="medkit")
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to a learning rate (or schedule), then that schedule, started after warm-up.

    During the first ``warmup_steps`` updates the rate grows linearly, ``target * (step + 1) /
    warmup_steps``; afterwards it is ``schedule(step - warmup_steps)``. Warm-up keeps the first,
    badly-scaled updates of Adam-like optimisers and large batches from wrecking the initial weights.

    Args:
        schedule: a float or a ``LearningRateSchedule`` to follow after warm-up.
        warmup_steps: number of warm-up updates (>= 1).
    """

    def __init__(self, schedule, warmup_steps: int):
        if warmup_steps < 1:
            raise ValueError(f"warmup_steps must be >= 1; got {warmup_steps}")
        self.schedule = schedule
        self.warmup_steps = int(warmup_steps)

    def _after(self, step):
        if isinstance(self.schedule, keras.optimizers.schedules.LearningRateSchedule):
            return ops.cast(self.schedule(step), "float32")
        return ops.cast(self.schedule, "float32")

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = float(self.warmup_steps)
        factor = ops.minimum((step + 1.0) / warmup, 1.0)
        return factor * self._after(ops.maximum(step - warmup, 0.0))

    def get_config(self):
        schedule = self.schedule
        if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            schedule = keras.optimizers.schedules.serialize(schedule)
        return {"schedule": schedule, "warmup_steps": self.warmup_steps}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config["schedule"], dict):
            config["schedule"] = keras.optimizers.schedules.deserialize(config["schedule"])
        return cls(**config)


def make_schedule(
    name: str = "constant",
    learning_rate: float = 1e-3,
    *,
    decay_steps: int | None = None,
    warmup_steps: int = 0,
    alpha: float = 0.0,
    gamma: float = 0.1,
):
    """A learning-rate schedule by name, optionally after a linear warm-up.

    Args:
        name: one of ``SCHEDULES``:

            - ``"constant"``: ``learning_rate`` throughout;
            - ``"cosine"``: half a cosine from ``learning_rate`` down to ``alpha * learning_rate`` over
              ``decay_steps`` updates, then flat;
            - ``"step"``: multiplied by ``gamma`` every ``decay_steps`` updates (staircase);
            - ``"exponential"``: multiplied by ``gamma`` per ``decay_steps`` updates, smoothly.
        learning_rate: peak learning rate.
        decay_steps: length of the decay (cosine) or of one step (step, exponential); required for all
            but ``"constant"``. Counted after warm-up.
        warmup_steps: linear warm-up updates before the schedule starts (0: none).
        alpha: final fraction of the rate for ``"cosine"``.
        gamma: decay factor for ``"step"`` and ``"exponential"``.

    Returns:
        A float (``"constant"`` without warm-up) or a ``LearningRateSchedule``.

    Raises:
        ValueError: for an unknown name or a missing/invalid ``decay_steps``.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {SCHEDULES}")
    schedules = keras.optimizers.schedules
    if name == "constant":
        schedule = float(learning_rate)
    else:
        if decay_steps is None or decay_steps < 1:
            raise ValueError(f"schedule {name!r} needs decay_steps >= 1 (optimizer updates); got {decay_steps}")
        if name == "cosine":
            schedule = schedules.CosineDecay(learning_rate, decay_steps, alpha=alpha)
        else:
            schedule = schedules.ExponentialDecay(learning_rate, decay_steps, decay_rate=gamma, staircase=name == "step")
    if warmup_steps:
        return LinearWarmup(schedule, warmup_steps)
    return schedule


def learning_rate_at(optimizer_or_schedule, step: int) -> float:
    """The learning rate a schedule (or an optimiser's schedule) gives at an update ``step``.

    Args:
        optimizer_or_schedule: a ``keras.optimizers.Optimizer``, a schedule or a float.
        step: the update count.

    Returns:
        float.
    """
    lr = optimizer_or_schedule
    if isinstance(lr, keras.optimizers.Optimizer):
        lr = lr._learning_rate  # the schedule itself, not its value at the optimiser's current step
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        return float(ops.convert_to_numpy(lr(step)))
    return float(ops.convert_to_numpy(lr))


def get(
    name: str = "adam",
    learning_rate: float = 1e-3,
    *,
    total_steps: int | None = None,
    schedule: str = "cosine",
    warmup_steps: int = 0,
    alpha: float = 0.0,
    **optimizer_kwargs,
) -> keras.optimizers.Optimizer:
    """One-call optimiser for a run: ``get_optimizer`` with a schedule spanning the whole training.

    Args:
        name: optimiser name (``OPTIMIZERS``).
        learning_rate: peak learning rate.
        total_steps: optimiser updates in the run (epochs x steps per epoch). ``None``: constant rate.
        schedule: ``SCHEDULES`` name used when ``total_steps`` is given (``"cosine"`` decays to
            ``alpha * learning_rate`` at the last step); see :func:`make_schedule`, whose
            ``decay_steps`` becomes the number of steps after warm-up.
        warmup_steps: linear warm-up updates at the start.
        alpha: final fraction of the rate for the cosine schedule.
        **optimizer_kwargs: passed to :func:`get_optimizer` (``weight_decay``, ``clipnorm``, ``use_ema``...).

    Returns:
        A ``keras.optimizers.Optimizer``.
    """
    if total_steps is None:
        lr = make_schedule("constant", learning_rate, warmup_steps=warmup_steps)
    else:
        if total_steps <= warmup_steps:
            raise ValueError(f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps})")
        lr = make_schedule(schedule, learning_rate, decay_steps=total_steps - warmup_steps,
                           warmup_steps=warmup_steps, alpha=alpha)
    return get_optimizer(name, lr, **optimizer_kwargs)
