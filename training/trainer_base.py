"""Shared machinery of the kit's custom trainers: global-batch loss scaling, optimisers, loss trackers.

Every trainer in ``training/`` (adversarial, semi-supervised, multi-task, registration, diffusion,
domain adaptation, multiple-instance learning) is a ``keras.Model`` subclass that overrides
``train_step``/``test_step``, so ``fit()``, callbacks, progress bars and checkpoints keep working.
They share three rules, implemented once here:

1. **Losses are scaled by the global batch size.** Each replica computes the sum of its per-sample
   losses divided by the number of samples on *all* replicas (:func:`global_mean_share`). The
   optimiser sums gradients over replicas, so the update equals the one-device update on the same
   global batch, whatever the number of replicas.
2. **Logged values are global.** The replica shares are summed over replicas before they reach the
   loss trackers, so every replica logs the same number: ``strategy.reduce("MEAN", ...)`` of the
   dict a ``train_step`` returns, or just the first replica's value, is the global loss.
3. **Every optimiser is built inside the strategy's scope before training.** With two optimisers under
   ``MirroredStrategy``, an optimiser built lazily inside ``fit()``'s traced step fails with
   "You must feed a value for placeholder tensor". ``compile()`` of every trainer calls
   :meth:`Trainer.build_optimizers`, which builds each optimiser on its own variables under
   ``self.distribute_strategy.scope()``.

``train_step(data)`` works both inside ``fit()`` and inside an explicit ``strategy.run`` loop
(``training.loop``): it only needs a replica context, returns a dict of scalar tensors, and reads
the training step from an optimiser's ``iterations`` counter.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

# The kit's one seeding path (replica fold-in included) lives with the augmentations, which use it too.
from data_utils.augment.seeding import replica_id, stateless_seed  # noqa: F401
from training.distribute import compute_average_loss, scale_for_replicas

# --------------------------------------------------------------------------------------------
# Distribution helpers (work in a replica context, and outside any strategy)
# --------------------------------------------------------------------------------------------


def replica_sum(value):
    """Sum ``value`` over all replicas; the identity on one replica or outside ``strategy.run``."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return value
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, value)


def local_batch_size(x) -> tf.Tensor:
    """Number of samples in this replica's batch (float32), read from the first tensor of ``x``."""
    first = tf.nest.flatten(x)[0]
    return tf.cast(tf.shape(first)[0], tf.float32)


def global_batch_size(x) -> tf.Tensor:
    """Number of samples in the global batch: this replica's batch size summed over replicas."""
    return replica_sum(local_batch_size(x))


def global_mean_share(values, global_batch, local_batch=None) -> tf.Tensor:
    """This replica's share of the mean loss over the global batch.

    Summed over replicas, the shares give the mean over every sample of the global batch; on one
    device the share *is* that mean.

    Args:
        values: per-sample losses ``(B,)`` or ``(B, ...)`` (extra axes are averaged per sample), or
            a scalar that is already the mean over this replica's batch (then ``local_batch`` is
            needed to weight it).
        global_batch: float32 scalar, see :func:`global_batch_size`.
        local_batch: float32 scalar, this replica's batch size (only used for scalar ``values``).

    Returns:
        A float32 scalar (0 when the global batch is empty, rather than NaN).
    """
    values = tf.cast(values, tf.float32)
    if values.shape.rank == 0:
        if local_batch is None:
            raise ValueError(
                "global_mean_share: a scalar loss is a mean over the replica's batch; pass "
                "local_batch (or give per-sample losses of shape (B,))"
            )
        return tf.math.divide_no_nan(values * local_batch, global_batch)
    # The same rule as the explicit loop's: sum over this replica, divide by the global batch.
    return compute_average_loss(values, tf.cast(global_batch, tf.int32))


def ema_update(targets, sources, decay) -> None:
    """Exponential moving average ``t <- decay * t + (1 - decay) * s`` for paired variables.

    Works inside a replica context under ``MirroredStrategy`` (the update goes through the
    strategy, once per device, like an optimiser's update) and outside any strategy.

    Args:
        targets: list of ``keras.Variable`` (the EMA copies, e.g. a mean teacher's weights).
        sources: list of ``keras.Variable`` of the same shapes (the trained weights).
        decay: float or scalar tensor in [0, 1].
    """
    targets = [t.value if isinstance(t, keras.Variable) else t for t in targets]
    sources = [s.value if isinstance(s, keras.Variable) else s for s in sources]
    if len(targets) != len(sources):
        raise ValueError(f"ema_update: {len(targets)} targets but {len(sources)} sources")
    # Only floating-point weights are averaged (integer states such as seeds are left alone).
    pairs = [(t, s) for t, s in zip(targets, sources) if t.dtype.is_floating]
    targets, sources = [p[0] for p in pairs], [p[1] for p in pairs]

    def update(target, source):
        d = tf.cast(decay, target.dtype)
        return target.assign(d * target + (1.0 - d) * tf.cast(source, target.dtype))

    def cross_replica(strategy, targets, sources):
        for target, source in zip(targets, sources):
            strategy.extended.update(target, update, args=(source,), group=False)

    ctx = tf.distribute.get_replica_context()
    if ctx is None or not tf.distribute.has_strategy():
        for target, source in zip(targets, sources):
            update(target, source)
        return
    ctx.merge_call(cross_replica, args=(targets, sources))


def build_optimizers(model: keras.Model) -> None:
    """Create every optimiser variable of ``model`` now (needed before loading or training under a strategy).

    Uses the trainer's own ``build_optimizers()`` when it has one (the kit's trainers do), otherwise
    builds ``model.optimizer`` on ``model.trainable_variables``.
    """
    if hasattr(model, "build_optimizers") and callable(model.build_optimizers):
        model.build_optimizers()
        return
    optimizer = getattr(model, "optimizer", None)
    if isinstance(optimizer, keras.optimizers.Optimizer) and not optimizer.built:
        with model.distribute_strategy.scope():
            optimizer.build(model.trainable_variables)


def sigmoid_rampup(step, rampup_steps) -> tf.Tensor:
    """``exp(-5 (1 - t)^2)`` with ``t = min(step / rampup_steps, 1)`` (Laine & Aila 2017); 1 if no ramp.

    Args:
        step: the training step (int tensor, e.g. ``optimizer.iterations``).
        rampup_steps: number of steps to reach 1.

    Returns:
        float32 scalar in (0, 1].
    """
    if not rampup_steps:
        return tf.constant(1.0, tf.float32)
    t = tf.clip_by_value(tf.cast(step, tf.float32) / float(rampup_steps), 0.0, 1.0)
    return tf.exp(-5.0 * tf.square(1.0 - t))


def dann_lambda(step, total_steps, gamma: float = 10.0) -> tf.Tensor:
    """DANN's adaptation factor ``2 / (1 + exp(-gamma p)) - 1`` with progress ``p = step / total_steps``.

    Ganin et al. (2016) grow the gradient-reversal weight from 0 to 1 so early, noisy domain
    gradients do not swamp the feature extractor.
    """
    if not total_steps:
        return tf.constant(1.0, tf.float32)
    p = tf.clip_by_value(tf.cast(step, tf.float32) / float(total_steps), 0.0, 1.0)
    return 2.0 / (1.0 + tf.exp(-gamma * p)) - 1.0


# --------------------------------------------------------------------------------------------
# Data helpers
# --------------------------------------------------------------------------------------------


def unpack(data, keys: tuple[str, ...], what: str) -> dict:
    """Turn a batch into a dict with ``keys``; accepts a dict or a tuple in the order of ``keys``.

    ``fit()`` hands ``train_step`` whatever the dataset yields; the kit's datasets yield dicts, while
    ``(x, y)`` tuples are made at the edge for ``fit()``. Both are accepted here.

    Args:
        data: a dict (extra keys are kept) or a tuple/list of tensors.
        keys: the names, in tuple order; every key must be present.
        what: the trainer's name, for the error message.
    """
    if isinstance(data, dict):
        missing = [k for k in keys if k not in data]
        if missing:
            raise KeyError(
                f"{what}: the batch dict must have keys {list(keys)}; missing {missing}, got {sorted(data)}"
            )
        return dict(data)
    if isinstance(data, (tuple, list)):
        items = [d for d in data if d is not None]
        if len(items) < len(keys):
            raise ValueError(
                f"{what}: expected a dict with keys {list(keys)} or a tuple of {len(keys)} tensors; "
                f"got a tuple of {len(items)}"
            )
        return dict(zip(keys, items))
    if len(keys) == 1:
        return {keys[0]: data}
    raise TypeError(f"{what}: expected a dict with keys {list(keys)} or a tuple; got {type(data).__name__}")


def unpack_with_extra_images(data, extra_key: str, what: str, parts: tuple[str, str]) -> tuple:
    """Labelled images plus a second set of images without labels (semi-supervised, domain adaptation).

    Two forms are accepted: a dict ``{"image", "label", extra_key}`` (the extra entry may itself be
    ``{"image": ...}``), or a pair ``(first, second)`` where ``first`` is ``{"image", "label"}`` or
    ``(x, y)`` and ``second`` is ``{"image": ...}``, ``(x, ...)`` or ``x``.

    Args:
        data: the batch ``fit()`` hands to ``train_step``.
        extra_key: key of the extra images in the dict form, e.g. ``"unlabelled"``.
        what: the trainer's name, for error messages.
        parts: names of the two halves of the pair form, e.g. ``("labelled", "unlabelled")``.

    Returns:
        ``(images (B, ...), labels, extra_images (B_extra, ...))``.
    """
    first, second = parts
    if isinstance(data, dict):
        batch = unpack(data, ("image", "label", extra_key), what)
        extra = batch[extra_key]
        if isinstance(extra, dict):
            extra = unpack(extra, ("image",), f"{what} ({extra_key})")["image"]
        return batch["image"], batch["label"], extra
    if isinstance(data, (tuple, list)) and len(data) == 2:
        labelled = unpack(data[0], ("image", "label"), f"{what} ({first} part)")
        extra = data[1]
        if isinstance(extra, dict):
            extra = unpack(extra, ("image",), f"{what} ({second} part)")["image"]
        elif isinstance(extra, (tuple, list)):
            extra = extra[0]
        return labelled["image"], labelled["label"], extra
    raise ValueError(
        f"{what}: a training batch is {{'image', 'label', '{extra_key}'}} or a pair ({first}, {second}); "
        f"got {type(data).__name__}"
    )


def per_sample_loss(loss, what: str):
    """A callable ``loss(y_true, y_pred) -> (B, ...)`` per-sample losses, from a name, function or Loss.

    A ``keras.losses.Loss`` with its default reduction returns a scalar that Keras 3 has already
    divided by the number of replicas; the trainers need per-sample values to divide by the global
    batch themselves, so such objects are rebuilt with ``reduction=None``.

    Args:
        loss: a ``keras.losses.Loss`` instance, a Keras loss name (``"mse"``) or a function
            ``f(y_true, y_pred)`` returning per-sample values ``(B,)``/``(B, ...)``.
        what: the argument's name, for the error message.
    """
    if isinstance(loss, str):
        try:
            loss = keras.losses.get(loss)
        except ValueError:
            raise ValueError(f"{what}: unknown Keras loss name {loss!r}") from None
    if isinstance(loss, keras.losses.Loss):
        config = loss.get_config()
        config["reduction"] = None
        return loss.__class__.from_config(config)
    if not callable(loss):
        raise TypeError(f"{what}: expected a loss function, Loss object or name; got {loss!r}")
    return loss


def to_float(x) -> tf.Tensor:
    """Cast a model output or label to float32 (mixed-precision outputs may be float16)."""
    return tf.cast(x, tf.float32)


def maybe_loss_scale(optimizer, dtype_policy_name: str):
    """Wrap ``optimizer`` in a ``LossScaleOptimizer`` under ``mixed_float16`` (like ``Model.compile``)."""
    if optimizer is None:
        return None
    optimizer = keras.optimizers.get(optimizer)
    if dtype_policy_name == "mixed_float16" and not isinstance(
        optimizer, keras.optimizers.LossScaleOptimizer
    ):
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def penalty_share(*networks: keras.Layer) -> tf.Tensor:
    """This replica's share of the weight penalties and ``add_loss`` terms of ``networks``.

    ``network.losses`` holds the L1/L2 kernel penalties (e.g. from
    ``training.regularization.add_weight_penalty`` or a ``kernel_regularizer``) and activity terms of
    the latest call. They are a mean-free total, so like ``sum(model.losses)`` in ``fit()`` they are
    divided by the number of replicas. Read it inside the ``GradientTape``, after the forward pass.

    Returns:
        A float32 scalar (0 when the networks have no penalties).
    """
    terms = [tf.cast(term, tf.float32) for network in networks for term in network.losses]
    if not terms:
        return tf.constant(0.0, tf.float32)
    return scale_for_replicas(tf.add_n(terms))


def scaled_objective(optimizer, share, *networks: keras.Layer):
    """The value to differentiate: ``share`` plus the networks' penalties, loss-scaled for float16.

    Args:
        optimizer: the optimiser that will apply the gradients (``LossScaleOptimizer`` under
            ``mixed_float16``; other optimisers return the loss unchanged).
        share: this replica's share of the global-batch loss (see :func:`global_mean_share`).
        *networks: the networks being updated; their weight penalties join the objective.
    """
    return optimizer.scale_loss(share + penalty_share(*networks))


def apply_gradients(optimizer, tape: tf.GradientTape, scaled_loss, variables) -> None:
    """Gradients of ``scaled_loss`` (from ``optimizer.scale_loss`` inside the tape) applied to ``variables``."""
    grads = tape.gradient(scaled_loss, variables)
    optimizer.apply_gradients(zip(grads, variables))


# --------------------------------------------------------------------------------------------
# The base class
# --------------------------------------------------------------------------------------------


class Trainer(keras.Model):
    """Base of the kit's trainers: loss trackers, optimiser building and global-batch bookkeeping.

    Subclasses list their logged values in ``tracker_names``, implement ``optimizer_groups()`` and
    ``train_step``/``test_step``, and call :meth:`log` with *replica shares* (see
    :func:`global_mean_share`) or with values that are already equal on every replica.

    Args:
        tracker_names: names of the scalars shown in the progress bar and ``History``.
        **kwargs: passed to ``keras.Model`` (e.g. ``name``).
    """

    def __init__(self, tracker_names: tuple[str, ...], **kwargs):
        super().__init__(**kwargs)
        self._tracker_names = tuple(tracker_names)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in self._tracker_names}
        # The networks a trainer wraps are built models; marking the trainer built stops fit() from
        # tracing call() on a training batch (whose structure is the trainer's, not the network's).
        self.built = True

    @property
    def metrics(self):
        # Listing the trackers here makes fit()/evaluate() reset them at the start of every epoch.
        return list(self.trackers.values())

    # ----- optimisers -------------------------------------------------------------------

    def optimizer_groups(self) -> list[tuple[keras.optimizers.Optimizer, list]]:
        """``[(optimizer, variables), ...]``: which optimiser updates which variables."""
        return [(self.optimizer, self.trainable_variables)]

    def build_optimizers(self) -> None:
        """Build every optimiser on its variables inside the strategy's scope (call before ``fit``).

        ``compile()`` calls this. Call it again only if you replace an optimiser afterwards.
        """
        with self.distribute_strategy.scope():
            for optimizer, variables in self.optimizer_groups():
                if optimizer is not None and not optimizer.built:
                    optimizer.build(variables)

    def _compile_with(self, main_optimizer, **kwargs) -> None:
        """``keras.Model.compile`` with the trainer's main optimiser, then build all optimisers."""
        super().compile(optimizer=main_optimizer, **kwargs)
        self.build_optimizers()

    @property
    def step(self) -> tf.Tensor:
        """The number of training steps taken (the main optimiser's ``iterations``)."""
        if self.optimizer is None:
            return tf.constant(0, tf.int64)
        return self.optimizer.iterations

    # ----- logging ----------------------------------------------------------------------

    def log(self, shares: dict | None = None, values: dict | None = None) -> dict:
        """Update the trackers and return ``{name: running mean}`` for every tracker.

        Args:
            shares: ``{name: this replica's share}``; summed over replicas before logging.
            values: ``{name: value}`` that are already the same on every replica (e.g. a weight).

        Returns:
            Dict of float32 scalar tensors, identical on every replica.
        """
        for name, share in (shares or {}).items():
            self.trackers[name].update_state(replica_sum(tf.stop_gradient(to_float(share))))
        for name, value in (values or {}).items():
            self.trackers[name].update_state(tf.stop_gradient(to_float(value)))
        return {name: tracker.result() for name, tracker in self.trackers.items()}


def check_positive(value, name: str, what: str, allow_zero: bool = False) -> None:
    """Raise a clear ``ValueError`` unless ``value`` is a finite positive (or non-negative) number."""
    ok = value is not None and math.isfinite(float(value)) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{what}: {name} must be a finite number {bound}; got {value!r}")
