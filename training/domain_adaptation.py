"""Unsupervised domain adaptation by gradient reversal (DANN, Ganin et al., JMLR 2016).

A feature extractor feeds two heads: a label classifier trained on the labelled *source* domain
(e.g. scanner A) and a domain classifier that tells source from *target* features (scanner B,
unlabelled). Between the features and the domain classifier sits a gradient-reversal layer: the
identity going forward, ``-lambda`` times the gradient going back. The domain classifier learns to
separate the domains while the feature extractor learns to make them inseparable, so the label
classifier transfers to the target domain::

    trainer = DANNTrainer(features, classifier, domain_classifier, total_steps=2000)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    trainer.fit(tf.data.Dataset.zip((source_ds, target_ds)))   # ({"image", "label"}, {"image"})
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from training import trainer_base as base
from training import losses


def reverse_gradient(x, scale=1.0):
    """Identity in the forward pass, gradient multiplied by ``-scale`` in the backward pass.

    ``x_stop + (-scale) * (x - x_stop)`` is exactly ``x`` going forward (the second term is 0) and has
    derivative ``-scale`` going back, with plain ``keras.ops`` and no custom-gradient machinery.

    Args:
        x: any tensor.
        scale: float or scalar tensor, the reversal strength ``lambda``.

    Returns:
        A tensor equal to ``x``.
    """
    stopped = ops.stop_gradient(x)
    return stopped - ops.cast(scale, x.dtype) * (x - stopped)


@keras.saving.register_keras_serializable(package="medkit")
class GradientReversal(keras.layers.Layer):
    """Gradient-reversal layer: identity forward, ``-scale`` x gradient backward (DANN).

    Args:
        scale: the reversal strength ``lambda`` (a trainer can also pass ``scale=`` per call).
    """

    def __init__(self, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, inputs, scale=None):
        return reverse_gradient(inputs, self.scale if scale is None else scale)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


class DANNTrainer(base.Trainer):
    """Domain-adversarial training: label loss on source + domain loss through gradient reversal.

    Args:
        feature_extractor: ``keras.Model`` images -> features ``(B, F)`` (or any shape the heads take).
        label_classifier: ``keras.Model`` features -> class probabilities ``(B, K)`` (softmax).
        domain_classifier: ``keras.Model`` features -> one domain logit ``(B, 1)`` (1 = target).
        domain_weight: weight of the domain loss in the total.
        total_steps: steps of the ``lambda`` schedule ``2 / (1 + exp(-10 p)) - 1``, ``p = step /
            total_steps`` (Ganin et al.); ``None`` keeps ``lambda = max_lambda`` throughout.
        max_lambda: final gradient-reversal strength.
        label_loss: per-sample loss for the source labels (default
            :func:`training.losses.cross_entropy`).

    Batches: a pair ``(source, target)`` with ``source = {"image", "label"}`` or ``(x, y)`` and
    ``target = {"image"}`` or ``x``; or one dict ``{"image", "label", "target_image"}``.
    ``evaluate`` takes labelled batches ``{"image", "label"}`` (e.g. held-out target data).

    Logs: ``loss``, ``label_loss``, ``domain_loss``, ``domain_accuracy`` (how well the domain
    classifier tells the domains apart; near 0.5 once the features are domain-invariant) and
    ``lambda``; ``evaluate`` logs ``label_loss`` and ``accuracy``.
    """

    def __init__(
        self,
        feature_extractor: keras.Model,
        label_classifier: keras.Model,
        domain_classifier: keras.Model,
        domain_weight: float = 1.0,
        total_steps: int | None = None,
        max_lambda: float = 1.0,
        label_loss=None,
        name: str = "dann_trainer",
    ):
        super().__init__(
            tracker_names=("loss", "label_loss", "domain_loss", "domain_accuracy", "lambda", "accuracy"),
            name=name,
        )
        base.check_positive(domain_weight, "domain_weight", "DANNTrainer", allow_zero=True)
        base.check_positive(max_lambda, "max_lambda", "DANNTrainer", allow_zero=True)
        if total_steps is not None and int(total_steps) < 1:
            raise ValueError(f"DANNTrainer: total_steps must be >= 1 or None; got {total_steps}")
        self.feature_extractor = feature_extractor
        self.label_classifier = label_classifier
        self.domain_classifier = domain_classifier
        self.domain_weight = float(domain_weight)
        self.total_steps = None if total_steps is None else int(total_steps)
        self.max_lambda = float(max_lambda)
        self.label_loss = base.per_sample_loss(
            losses.cross_entropy if label_loss is None else label_loss, "label_loss"
        )

    def compile(self, optimizer="adam", **kwargs):
        """One optimiser for all three networks (gradient reversal does the adversarial part)."""
        self._compile_with(base.maybe_loss_scale(optimizer, self.dtype_policy.name), **kwargs)

    def call(self, images, training=False):
        """Class probabilities for ``images``."""
        return self.label_classifier(self.feature_extractor(images, training=training), training=training)

    def current_lambda(self) -> tf.Tensor:
        """The gradient-reversal strength at the current step."""
        return self.max_lambda * base.dann_lambda(self.step, self.total_steps)

    @staticmethod
    def _split(data):
        return base.unpack_with_extra_images(data, "target_image", "DANNTrainer", ("source", "target"))

    def train_step(self, data):
        source, labels, target = self._split(data)
        images = tf.concat([tf.cast(source, tf.float32), tf.cast(target, tf.float32)], axis=0)
        n_source = tf.shape(source)[0]
        domains = tf.concat([tf.zeros([n_source], tf.int32), tf.ones([tf.shape(target)[0]], tf.int32)], axis=0)
        source_global, all_global = base.global_batch_size(source), base.global_batch_size(images)
        lam = self.current_lambda()

        with tf.GradientTape() as tape:
            features = self.feature_extractor(images, training=True)
            probs = self.label_classifier(features[:n_source], training=True)
            label_share = base.global_mean_share(self.label_loss(labels, probs), source_global)
            domain_logits = self.domain_classifier(reverse_gradient(features, lam), training=True)
            domain_loss = losses.cross_entropy(domains, domain_logits, from_logits=True)
            domain_share = base.global_mean_share(domain_loss, all_global)
            total = label_share + self.domain_weight * domain_share
            scaled = base.scaled_objective(
                self.optimizer, total, self.feature_extractor, self.label_classifier, self.domain_classifier
            )
        base.apply_gradients(self.optimizer, tape, scaled, self.trainable_variables)

        predicted_domain = tf.cast(tf.reshape(base.to_float(domain_logits), [-1]) > 0.0, tf.int32)
        domain_hits = tf.cast(tf.equal(predicted_domain, domains), tf.float32)
        logs = self.log(
            shares={
                "loss": total,
                "label_loss": label_share,
                "domain_loss": domain_share,
                "domain_accuracy": base.global_mean_share(domain_hits, all_global),
            },
            values={"lambda": lam},
        )
        return {k: logs[k] for k in ("loss", "label_loss", "domain_loss", "domain_accuracy", "lambda")}

    def test_step(self, data):
        batch = base.unpack(data, ("image", "label"), "DANNTrainer.evaluate")
        images, labels = batch["image"], batch["label"]
        global_batch = base.global_batch_size(images)
        probs = self(images, training=False)
        hits = tf.cast(
            tf.equal(tf.argmax(base.to_float(probs), axis=-1, output_type=tf.int32),
                     tf.reshape(tf.cast(labels, tf.int32), [-1])),
            tf.float32,
        )
        logs = self.log(shares={
            "label_loss": base.global_mean_share(self.label_loss(labels, probs), global_batch),
            "accuracy": base.global_mean_share(hits, global_batch),
        })
        return {k: logs[k] for k in ("label_loss", "accuracy")}
