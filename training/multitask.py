"""Multi-task learning: one shared encoder, several heads, one weighted loss.

Two trainers:

- :class:`MultiTaskTrainer` for a model with one output per task (e.g. a segmentation head and a
  classification head on a shared encoder). The task losses are combined with fixed weights or
  with learned homoscedastic-uncertainty weights (Kendall, Gal & Cipolla, CVPR 2018)::

      trainer = MultiTaskTrainer(model, {"segmentation": losses.dice_ce_loss,
                                         "classification": losses.cross_entropy},
                                 weighting="uncertainty")
      trainer.compile(optimizer="adam")
      trainer.fit(ds)   # batches {"image": x, "segmentation": y_seg, "classification": y_cls}

- :class:`TaskConditionedTrainer` for one network that does one of several tasks, chosen by a
  one-hot task vector given as a second input (e.g. "segment the liver" vs "segment the kidney").
"""

from __future__ import annotations

import keras
import tensorflow as tf

from training import trainer_base as base

WEIGHTINGS = ("fixed", "uncertainty")


class MultiTaskTrainer(base.Trainer):
    """Shared-encoder, multi-head trainer with fixed or learned (uncertainty) task weights.

    With ``weighting="uncertainty"`` each task ``i`` gets a learned log-variance ``s_i`` and the loss is
    ``sum_i 0.5 * exp(-s_i) * L_i + 0.5 * s_i`` (Kendall et al. 2018, with ``s = log sigma^2`` for
    numerical stability): a noisy task (large ``sigma``) is down-weighted, and the ``s_i`` term stops
    every weight from going to zero. The optimum weight ``exp(-s_i)`` is ``1 / L_i``.

    Args:
        model: ``keras.Model`` with one output per task: a dict keyed by task name, or a list in the
            order of ``task_losses``.
        task_losses: ``{task name: loss}``; each loss is a per-sample function
            ``f(y_true, y_pred) -> (B,)`` (e.g. from :mod:`training.losses`), a ``keras.losses.Loss``
            or a Keras loss name.
        loss_weights: ``{task name: weight}`` for ``weighting="fixed"`` (default 1 for every task).
        weighting: ``"fixed"`` or ``"uncertainty"``.

    Batches: ``{"image": x, <task name>: y, ...}`` or ``(x, {<task name>: y, ...})``.

    Logs: ``loss`` (the weighted total), ``<task>_loss`` for each task, and with uncertainty
    weighting ``<task>_weight`` (the current ``exp(-s_i)``).
    """

    def __init__(
        self,
        model: keras.Model,
        task_losses: dict,
        loss_weights: dict | None = None,
        weighting: str = "fixed",
        name: str = "multitask_trainer",
    ):
        what = "MultiTaskTrainer"
        if not isinstance(task_losses, dict) or not task_losses:
            raise ValueError(f"{what}: task_losses must be a non-empty dict {{task name: loss}}; got {task_losses!r}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"{what}: weighting must be one of {WEIGHTINGS}; got {weighting!r}")
        tasks = tuple(task_losses)
        names = ["loss"] + [f"{t}_loss" for t in tasks]
        if weighting == "uncertainty":
            names += [f"{t}_weight" for t in tasks]
        super().__init__(tracker_names=tuple(names), name=name)
        loss_weights = dict(loss_weights or {})
        unknown = sorted(set(loss_weights) - set(tasks))
        if unknown:
            raise ValueError(f"{what}: loss_weights names tasks {unknown} that are not in task_losses {list(tasks)}")
        if weighting == "uncertainty" and loss_weights:
            raise ValueError(f"{what}: loss_weights are learned with weighting='uncertainty'; do not pass them")
        for task, weight in loss_weights.items():
            base.check_positive(weight, f"loss_weights[{task!r}]", what, allow_zero=True)
        self.network = model
        self.tasks = tasks
        self.task_losses = {t: base.per_sample_loss(loss, f"task_losses[{t!r}]") for t, loss in task_losses.items()}
        self.loss_weights = {t: float(loss_weights.get(t, 1.0)) for t in tasks}
        self.weighting = weighting
        self.log_variances = None
        if weighting == "uncertainty":
            self.log_variances = self.add_weight(
                shape=(len(tasks),), initializer="zeros", trainable=True, name="log_variances"
            )

    def call(self, images, training=False):
        """The model's outputs as a dict ``{task: prediction}``."""
        return self._outputs(self.network(images, training=training))

    def compile(self, optimizer="adam", **kwargs):
        """Set the optimiser (for the model and, if learned, the log-variances) and build it.

        Args:
            optimizer: optimiser or name.
            **kwargs: passed to ``keras.Model.compile``.
        """
        self._compile_with(base.maybe_loss_scale(optimizer, self.dtype_policy.name), **kwargs)

    def _outputs(self, outputs) -> dict:
        if isinstance(outputs, dict):
            missing = [t for t in self.tasks if t not in outputs]
            if missing:
                raise KeyError(f"MultiTaskTrainer: the model has no output for tasks {missing}; outputs are {sorted(outputs)}")
            return outputs
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        if len(outputs) != len(self.tasks):
            raise ValueError(
                f"MultiTaskTrainer: the model has {len(outputs)} outputs but task_losses names "
                f"{len(self.tasks)} tasks {list(self.tasks)}"
            )
        return dict(zip(self.tasks, outputs))

    def _batch(self, data):
        if isinstance(data, (tuple, list)) and len(data) >= 2 and isinstance(data[1], dict):
            return data[0], data[1]
        batch = base.unpack(data, ("image", *self.tasks), "MultiTaskTrainer")
        return batch["image"], {t: batch[t] for t in self.tasks}

    def task_weights(self) -> tf.Tensor:
        """Current weight of each task ``(num_tasks,)``: fixed, or ``exp(-s_i)`` when learned."""
        if self.log_variances is None:
            return tf.constant([self.loss_weights[t] for t in self.tasks], tf.float32)
        return tf.exp(-tf.cast(self.log_variances, tf.float32))

    def _objective(self, data, training):
        images, targets = self._batch(data)
        local_batch, global_batch = base.local_batch_size(images), base.global_batch_size(images)
        outputs = self._outputs(self.network(images, training=training))
        shares = {
            f"{t}_loss": base.global_mean_share(self.task_losses[t](targets[t], outputs[t]), global_batch)
            for t in self.tasks
        }
        weights = self.task_weights()
        if self.log_variances is None:
            total = tf.add_n([weights[i] * shares[f"{t}_loss"] for i, t in enumerate(self.tasks)])
        else:
            log_var = tf.cast(self.log_variances, tf.float32)
            # The 0.5 * s_i term is not a per-sample loss: weight it so it counts once over replicas.
            total = tf.add_n([
                0.5 * weights[i] * shares[f"{t}_loss"]
                + base.global_mean_share(0.5 * log_var[i], global_batch, local_batch)
                for i, t in enumerate(self.tasks)
            ])
        values = {}
        if self.log_variances is not None:
            values = {f"{t}_weight": weights[i] for i, t in enumerate(self.tasks)}
        return total, shares, values

    def train_step(self, data):
        with tf.GradientTape() as tape:
            total, shares, values = self._objective(data, training=True)
            scaled = base.scaled_objective(self.optimizer, total, self.network)
        base.apply_gradients(self.optimizer, tape, scaled, self.trainable_variables)
        return self.log(shares={"loss": total, **shares}, values=values)

    def test_step(self, data):
        total, shares, values = self._objective(data, training=False)
        return self.log(shares={"loss": total, **shares}, values=values)


class TaskConditionedTrainer(base.Trainer):
    """One network, several tasks: the task is a one-hot vector given to the model as a second input.

    Args:
        model: ``keras.Model`` called as ``model([images, task_one_hot])`` with
            ``task_one_hot`` of shape ``(B, num_tasks)``; one output for every task.
        num_tasks: number of tasks.
        loss: per-sample loss ``f(y_true, y_pred) -> (B,)``, ``keras.losses.Loss`` or name, shared
            by all tasks (the tasks differ in their targets, e.g. which organ to segment).
        task_weights: optional weight per task ``(num_tasks,)`` (default all 1).

    Batches: ``{"image": x, "task": int (B,), "label": y}`` or ``(x, task, y)``.

    Logs: ``loss`` and ``task<k>_loss`` for every task ``k`` (mean over that task's samples).
    """

    def __init__(self, model: keras.Model, num_tasks: int, loss, task_weights=None,
                 name: str = "task_conditioned_trainer"):
        num_tasks = int(num_tasks)
        if num_tasks < 1:
            raise ValueError(f"TaskConditionedTrainer: num_tasks must be >= 1; got {num_tasks}")
        super().__init__(tracker_names=("loss", *[f"task{k}_loss" for k in range(num_tasks)]), name=name)
        weights = [1.0] * num_tasks if task_weights is None else [float(w) for w in task_weights]
        if len(weights) != num_tasks:
            raise ValueError(f"TaskConditionedTrainer: task_weights needs {num_tasks} values; got {len(weights)}")
        self.network = model
        self.num_tasks = num_tasks
        self.task_loss = base.per_sample_loss(loss, "loss")
        self.task_weights = weights

    def call(self, inputs, training=False):
        """``inputs = (images, task indices (B,))`` -> the model's prediction for those tasks."""
        images, task = inputs
        return self.network([tf.convert_to_tensor(images), self.one_hot(task)], training=training)

    def one_hot(self, task) -> tf.Tensor:
        """Integer task indices ``(B,)`` -> float32 one-hot ``(B, num_tasks)``."""
        return tf.one_hot(tf.reshape(tf.cast(task, tf.int32), [-1]), self.num_tasks, dtype=tf.float32)

    def compile(self, optimizer="adam", **kwargs):
        """Set the optimiser (built inside the strategy's scope) and compile."""
        self._compile_with(base.maybe_loss_scale(optimizer, self.dtype_policy.name), **kwargs)

    def _objective(self, data, training):
        batch = base.unpack(data, ("image", "task", "label"), "TaskConditionedTrainer")
        images, labels = tf.convert_to_tensor(batch["image"]), batch["label"]
        one_hot = self.one_hot(batch["task"])
        global_batch = base.global_batch_size(images)
        predictions = self.network([images, one_hot], training=training)
        per_sample = base.to_float(self.task_loss(labels, predictions))
        # Losses may keep spatial axes (B, ...); one value per sample is needed for the task masks.
        per_sample = tf.reduce_mean(tf.reshape(per_sample, [tf.shape(one_hot)[0], -1]), axis=1)
        weights = tf.linalg.matvec(one_hot, tf.constant(self.task_weights, tf.float32))
        total = base.global_mean_share(weights * per_sample, global_batch)
        # Per task: global sum of its samples' losses over the global count of its samples.
        sums = base.replica_sum(tf.linalg.matvec(one_hot, per_sample, transpose_a=True))
        counts = base.replica_sum(tf.reduce_sum(one_hot, axis=0))
        return total, sums, counts

    def _log_tasks(self, total, sums, counts):
        means = tf.math.divide_no_nan(sums, counts)
        for k in range(self.num_tasks):
            # Weighted by the task's sample count, so epochs average over samples, not batches.
            self.trackers[f"task{k}_loss"].update_state(tf.stop_gradient(means[k]), sample_weight=counts[k])
        return self.log(shares={"loss": total})

    def train_step(self, data):
        with tf.GradientTape() as tape:
            total, sums, counts = self._objective(data, training=True)
            scaled = base.scaled_objective(self.optimizer, total, self.network)
        base.apply_gradients(self.optimizer, tape, scaled, self.network.trainable_variables)
        return self._log_tasks(total, sums, counts)

    def test_step(self, data):
        return self._log_tasks(*self._objective(data, training=False))
