"""The explicit training loop: what ``fit()`` does, written out with ``tf.distribute``.

Two ways to use it::

    # 1. Teaching: a plain model, a per-sample loss and an optimiser; the step is written out below
    #    (GradientTape, global-batch loss scaling, apply_gradients) in supervised_step().
    history = train(model, ds, epochs=5, loss_fn=keras.losses.BinaryCrossentropy(reduction=None),
                    optimizer=keras.optimizers.Adam(1e-3), strategy=strategy)

    # 2. Any keras.Model with its own train_step (a compiled model, or one of the kit's trainers):
    #    the loop runs model.train_step inside strategy.run. One mechanism for every strategy.
    history = train(gan, ds, epochs=5, strategy=strategy)

Why run ``train_step`` here rather than always calling ``fit()``? With TensorFlow 2.21 / Keras 3.15,
``fit()`` under ``MultiWorkerMirroredStrategy`` fails ("Attempt to convert a value (PerReplica...)
to a Tensor"), while this loop trains with identical losses on every worker. Under the default
strategy and ``MirroredStrategy`` both work and give the same numbers.

The dataset yields GLOBAL batches (``batch(global_batch_size, drop_remainder=True)``); the strategy
splits each one over the replicas. Build the model and optimisers inside ``strategy.scope()``.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from training.distribute import compute_average_loss, is_chief, scale_for_replicas, shard_by_data
from training.trainer_base import build_optimizers


def _split_batch(batch):
    """``(x, y)`` from a dict batch (``image``/``label``) or an ``(x, y[, w])`` tuple."""
    if isinstance(batch, dict):
        if "image" not in batch or "label" not in batch:
            raise KeyError(f"loop: a dict batch needs 'image' and 'label' keys; got {sorted(batch)}")
        return batch["image"], batch["label"]
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise TypeError(f"loop: expected a dict with 'image'/'label' or an (x, y) tuple; got {type(batch).__name__}")


def supervised_step(model, loss_fn, optimizer, loss_tracker, global_batch_size=None):
    """The teaching train step: one replica's forward pass, scaled loss, gradients and update.

    Args:
        model: a ``keras.Model`` mapping ``x`` to predictions.
        loss_fn: per-sample loss ``loss_fn(y_true, y_pred) -> (B,)`` or ``(B, ...)``, e.g. a
            ``keras.losses`` object built with ``reduction=None``.
        optimizer: a ``keras.optimizers.Optimizer`` (a ``LossScaleOptimizer`` under mixed_float16).
        loss_tracker: ``keras.metrics.Mean`` collecting this epoch's per-sample losses.
        global_batch_size: samples per step over all replicas; default local batch x replicas.

    Returns:
        ``step(batch) -> {"loss": running mean}``, to run inside ``strategy.run``.
    """

    def step(batch):
        x, y = _split_batch(batch)
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            per_sample = tf.cast(loss_fn(y, y_pred), tf.float32)
            # Sum over this replica / GLOBAL batch: summing gradients over replicas then gives the mean.
            loss = compute_average_loss(per_sample, global_batch_size)
            if model.losses:  # weight penalties are counted once per step, so split them over replicas
                loss += scale_for_replicas(tf.add_n([tf.cast(v, tf.float32) for v in model.losses]))
            # Under mixed_float16 the LossScaleOptimizer multiplies the loss so fp16 gradients don't underflow.
            scaled_loss = optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        if per_sample.shape.rank > 1:
            per_sample = tf.reduce_mean(per_sample, axis=list(range(1, per_sample.shape.rank)))
        loss_tracker.update_state(per_sample)
        return {"loss": loss_tracker.result()}

    return step


def supervised_eval_step(model, loss_fn, loss_tracker):
    """The teaching evaluation step: forward pass and per-sample loss, no update."""

    def step(batch):
        x, y = _split_batch(batch)
        y_pred = model(x, training=False)
        per_sample = tf.cast(loss_fn(y, y_pred), tf.float32)
        if per_sample.shape.rank > 1:
            per_sample = tf.reduce_mean(per_sample, axis=list(range(1, per_sample.shape.rank)))
        loss_tracker.update_state(per_sample)
        return {"loss": loss_tracker.result()}

    return step


def _uses_keras_train_step(model) -> bool:
    """True when ``model.train_step`` is Keras' own (a compiled model), not a trainer's override."""
    return type(model).train_step is _KERAS_TRAIN_STEP


_KERAS_TRAIN_STEP = keras.Model.train_step


def _as_xy(dataset):
    """Map the kit's dict batches ``{"image", "label", ...}`` to ``(image, label)`` for Keras' own steps."""
    spec = dataset.element_spec
    if isinstance(spec, dict) and "image" in spec and "label" in spec:
        return dataset.map(lambda batch: (batch["image"], batch["label"]))
    return dataset


def _check_scope(model, strategy) -> None:
    """Raise a clear error if the model's variables were not created under ``strategy.scope()``."""
    if strategy.num_replicas_in_sync == 1 or not model.weights:
        return
    variable = model.weights[0]
    variable = getattr(variable, "value", variable)
    if not strategy.extended.variable_created_in_scope(variable):
        raise ValueError(
            f"loop.train: model {model.name!r} was built outside strategy.scope(); build and compile "
            "it inside `with strategy.scope():` so its variables are mirrored over the replicas"
        )


def _distributed_function(strategy, step_fn, jit_compile=False):
    """``tf.function`` running ``step_fn`` on every replica and averaging its dict of scalars."""

    def run(batch):
        per_replica = strategy.run(step_fn, args=(batch,))
        # Trainers return running means per replica; equal local batches make the mean over
        # replicas the global value (and a no-op where the trainer already summed over replicas).
        return tf.nest.map_structure(
            lambda v: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None), per_replica
        )

    return tf.function(run, jit_compile=jit_compile, reduce_retracing=True)


def _cardinality(dataset) -> int | None:
    n = int(dataset.cardinality())
    return n if n >= 0 else None


def train(
    model: keras.Model,
    dataset: tf.data.Dataset,
    epochs: int,
    *,
    strategy: tf.distribute.Strategy | None = None,
    loss_fn=None,
    optimizer: keras.optimizers.Optimizer | None = None,
    steps_per_epoch: int | None = None,
    validation_data: tf.data.Dataset | None = None,
    callbacks: list | None = None,
    initial_epoch: int = 0,
    global_batch_size: int | None = None,
    jit_compile: bool = False,
    verbose: int = 1,
) -> keras.callbacks.History:
    """Train ``model`` for ``epochs`` with an explicit distributed loop; returns a ``History`` like ``fit``.

    Args:
        model: built inside ``strategy.scope()``. Without ``loss_fn`` it must be compiled (or be a
            trainer with its own ``train_step``); with ``loss_fn`` and ``optimizer`` the teaching step
            :func:`supervised_step` is used.
        dataset: ``tf.data.Dataset`` of GLOBAL batches: dicts ``{"image", "label", ...}`` or tuples.
        epochs: index of the last epoch + 1 (as in ``fit``).
        strategy: default ``tf.distribute.get_strategy()``.
        loss_fn: per-sample loss ``(y_true, y_pred) -> (B,)`` for the teaching step.
        optimizer: the teaching step's optimiser (built here on ``model.trainable_variables``).
        steps_per_epoch: batches per epoch; required for infinite (repeated) datasets.
        validation_data: optional dataset evaluated after each epoch (``val_`` logs).
        callbacks: ``keras.callbacks.Callback`` list (e.g. ``training.callbacks.ResumableCheckpoint``).
        initial_epoch: epoch to start at (a ``ResumableCheckpoint`` may move it forward).
        global_batch_size: for the teaching step's loss scaling; default local batch x replicas.
        jit_compile: compile the step with XLA.
        verbose: 1 shows a ``keras.utils.Progbar`` per epoch (on the chief only), 0 is silent.

    Returns:
        ``keras.callbacks.History`` with ``history.history[name]`` = list of per-epoch values.
    """
    strategy = strategy or tf.distribute.get_strategy()
    if epochs < 0:
        raise ValueError(f"loop.train: epochs must be >= 0; got {epochs}")
    if (loss_fn is None) != (optimizer is None):
        raise ValueError("loop.train: give both loss_fn and optimizer (teaching step) or neither (model.train_step)")
    _check_scope(model, strategy)

    with strategy.scope():
        if loss_fn is not None:
            tracker, val_tracker = keras.metrics.Mean(name="loss"), keras.metrics.Mean(name="val_loss")
            if not optimizer.built:
                optimizer.build(model.trainable_variables)
            train_fn = supervised_step(model, loss_fn, optimizer, tracker, global_batch_size)
            eval_fn = supervised_eval_step(model, loss_fn, val_tracker)
            trackers = [tracker, val_tracker]
        else:
            if getattr(model, "optimizer", None) is None and not hasattr(model, "build_optimizers"):
                raise ValueError(
                    f"loop.train: model {model.name!r} has no optimizer; compile it (inside strategy.scope()) "
                    "or pass loss_fn= and optimizer= for the teaching step"
                )
            # Build every optimiser now, inside the scope: its slots are then mirrored variables, and a
            # checkpoint can restore them before the first step (lazy building happens inside it).
            build_optimizers(model)
            train_fn, eval_fn, trackers = model.train_step, model.test_step, []
            if _uses_keras_train_step(model):
                dataset = _as_xy(dataset)
                validation_data = _as_xy(validation_data) if validation_data is not None else None
        distributed_train = _distributed_function(strategy, train_fn, jit_compile)
        distributed_eval = _distributed_function(strategy, eval_fn, jit_compile)

    if strategy.num_replicas_in_sync > 1 and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        dataset = shard_by_data(dataset)
        validation_data = shard_by_data(validation_data) if validation_data is not None else None
    dist_train = strategy.experimental_distribute_dataset(dataset)
    dist_val = strategy.experimental_distribute_dataset(validation_data) if validation_data is not None else None
    steps = steps_per_epoch or _cardinality(dataset)
    if steps is None:
        raise ValueError("loop.train: the dataset's length is unknown or infinite; pass steps_per_epoch")
    train_iterator = iter(dist_train) if steps_per_epoch else None  # one stream across epochs

    show = verbose and is_chief(strategy)
    callback_list = keras.callbacks.CallbackList(
        callbacks, add_history=True, add_progbar=False, model=model, epochs=epochs, steps=steps, verbose=verbose
    )
    model.stop_training = False
    callback_list.on_train_begin()
    start = max(initial_epoch, getattr(model, "_initial_epoch", None) or 0)
    for epoch in range(start, epochs):
        for metric in list(getattr(model, "metrics", [])) + trackers:
            metric.reset_state()
        callback_list.on_epoch_begin(epoch)
        if show:
            print(f"Epoch {epoch + 1}/{epochs}")
        progbar = keras.utils.Progbar(steps, verbose=1 if show else 0)
        logs = {}
        batches = train_iterator if train_iterator is not None else iter(dist_train)
        for step in range(steps):
            try:
                batch = next(batches)
            except StopIteration:
                break
            callback_list.on_train_batch_begin(step)
            logs = {k: float(v) for k, v in distributed_train(batch).items()}
            callback_list.on_train_batch_end(step, logs)
            progbar.stateful_metrics.update(logs)  # values are running means already: show, don't re-average
            progbar.update(step + 1, list(logs.items()))
            if model.stop_training:
                break
        epoch_logs = dict(logs)
        if dist_val is not None and not model.stop_training:
            for metric in list(getattr(model, "metrics", [])):
                metric.reset_state()
            val_logs = {}
            for batch in dist_val:
                val_logs = {k: float(v) for k, v in distributed_eval(batch).items()}
            epoch_logs.update({k if k.startswith("val_") else f"val_{k}": v for k, v in val_logs.items()})
        callback_list.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    callback_list.on_train_end()
    return next(c for c in callback_list.callbacks if isinstance(c, keras.callbacks.History))
