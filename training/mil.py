"""Multiple-instance learning (MIL) with attention pooling (Ilse, Tomczak & Welling, ICML 2018).

A *bag* (a whole-slide image cut into patches, a CT volume cut into slices) has one label; its
*instances* do not. A bag is positive if at least one instance is. An instance encoder embeds every
instance, attention pooling learns which instances matter and averages the embeddings with those
weights, and a classifier labels the bag. The attention weights show which instances drove the
decision, without instance labels::

    model = attention_mil_model(instance_shape=(32, 32, 1), encoder=my_cnn)
    trainer = MILTrainer(model)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    trainer.fit(bags)     # batches {"bag": (B, N, 32, 32, 1), "label": (B,)[, "mask": (B, N)]}
    weights = trainer.attention(bag_batch)      # (B, N), sums to 1 over the bag's real instances

Bags of different sizes are padded to ``N`` instances, with ``mask`` marking the real ones.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers, ops

from training import trainer_base as base
from training import losses


@keras.saving.register_keras_serializable(package="medkit")
class AttentionMILPooling(layers.Layer):
    """Attention-based MIL pooling: ``z = sum_n a_n h_n`` with learned weights ``a`` (Ilse et al. 2018).

    ``a_n = softmax_n(w^T (tanh(V h_n) * sigmoid(U h_n)))`` for the gated variant, or
    ``softmax_n(w^T tanh(V h_n))`` without gating. Padded instances (``mask == 0``) get weight 0.

    Args:
        attention_dim: size of the hidden attention layer (``L`` in the paper; 128 there).
        gated: use the gated attention mechanism.

    Call args:
        inputs: instance embeddings ``(B, N, F)``.
        instance_mask: optional ``(B, N)``, 1 for real instances and 0 for padding (not named
            ``mask``, which Keras reserves for masks it propagates between layers itself).

    Returns:
        ``(pooled (B, F), attention (B, N))``.
    """

    def __init__(self, attention_dim: int = 128, gated: bool = True, **kwargs):
        super().__init__(**kwargs)
        if int(attention_dim) < 1:
            raise ValueError(f"AttentionMILPooling: attention_dim must be >= 1; got {attention_dim}")
        self.attention_dim = int(attention_dim)
        self.gated = bool(gated)
        self.V = layers.Dense(self.attention_dim, activation="tanh", name="attention_v")
        self.U = layers.Dense(self.attention_dim, activation="sigmoid", name="attention_u") if self.gated else None
        self.w = layers.Dense(1, name="attention_w")

    def build(self, input_shape):
        self.V.build(input_shape)
        if self.U is not None:
            self.U.build(input_shape)
        self.w.build((*input_shape[:-1], self.attention_dim))

    def call(self, inputs, instance_mask=None):
        hidden = self.V(inputs)
        if self.U is not None:
            hidden = hidden * self.U(inputs)
        scores = ops.squeeze(self.w(hidden), axis=-1)  # (B, N)
        if instance_mask is not None:
            # A large negative score (not -inf) keeps the softmax finite for an all-padding bag.
            scores = ops.where(ops.cast(instance_mask, "bool"), scores, ops.full_like(scores, -1e9))
        attention = ops.softmax(ops.cast(scores, "float32"), axis=-1)
        pooled = ops.einsum("bn,bnf->bf", ops.cast(attention, inputs.dtype), inputs)
        return pooled, attention

    def compute_output_shape(self, inputs_shape, instance_mask_shape=None):
        return (inputs_shape[0], inputs_shape[-1]), (inputs_shape[0], inputs_shape[1])

    def get_config(self):
        return {**super().get_config(), "attention_dim": self.attention_dim, "gated": self.gated}


def attention_mil_model(
    instance_shape,
    encoder: keras.Model | None = None,
    embedding_dim: int = 64,
    attention_dim: int = 64,
    gated: bool = True,
    max_instances: int | None = None,
    name: str = "attention_mil",
) -> keras.Model:
    """Bag classifier: instance encoder -> attention pooling -> sigmoid bag probability.

    Args:
        instance_shape: shape of one instance, e.g. ``(32, 32, 1)`` for patches or ``(F,)`` for
            feature vectors.
        encoder: ``keras.Model`` mapping an instance batch ``(M, *instance_shape)`` to ``(M, E)``;
            default: a small dense embedding of the flattened instance (``embedding_dim`` units).
        embedding_dim: units of the default encoder.
        attention_dim, gated: see :class:`AttentionMILPooling`.
        max_instances: ``N`` if fixed, else ``None`` (bags of any size per batch).
        name: model name.

    Returns:
        A functional model with inputs ``{"bag": (B, N, *instance_shape), "mask": (B, N)}`` and
        outputs ``{"probability": (B, 1) float32, "attention": (B, N) float32}``.
    """
    instance_shape = tuple(int(s) for s in instance_shape)
    bag = keras.Input((max_instances, *instance_shape), name="bag")
    mask = keras.Input((max_instances,), name="mask")
    if encoder is None:
        encoder = keras.Sequential(
            [keras.Input(instance_shape), layers.Flatten(), layers.Dense(embedding_dim, activation="relu")],
            name="instance_encoder",
        )
    embeddings = layers.TimeDistributed(encoder, name="encode_instances")(bag)
    pooled, attention = AttentionMILPooling(attention_dim, gated, name="attention_pooling")(embeddings, instance_mask=mask)
    probability = layers.Dense(1, activation="sigmoid", dtype="float32", name="probability")(pooled)
    attention = layers.Activation("linear", dtype="float32", name="attention")(attention)
    return keras.Model({"bag": bag, "mask": mask}, {"probability": probability, "attention": attention}, name=name)


class MILTrainer(base.Trainer):
    """Bag-level trainer for an attention-MIL model (binary bag labels).

    Args:
        model: a model like :func:`attention_mil_model`'s: inputs ``{"bag", "mask"}``, outputs
            ``{"probability": (B, 1), "attention": (B, N)}`` (a single ``(B, 1)`` output also works).
        loss: per-sample bag loss ``f(y_true, y_pred) -> (B,)`` (default binary cross-entropy,
            :func:`training.losses.cross_entropy` with one sigmoid channel).

    Batches: ``{"bag": (B, N, ...), "label": (B,)}`` with optional ``"mask": (B, N)`` (default: every
    instance is real), or a tuple ``(bag, label)``.

    Logs: ``loss`` and ``accuracy`` (bag probability > 0.5 against the label).
    """

    def __init__(self, model: keras.Model, loss=None, name: str = "mil_trainer"):
        super().__init__(tracker_names=("loss", "accuracy"), name=name)
        self.network = model
        self.bag_loss = base.per_sample_loss(losses.cross_entropy if loss is None else loss, "loss")

    def compile(self, optimizer="adam", **kwargs):
        """Set the optimiser (built inside the strategy's scope) and compile."""
        self._compile_with(base.maybe_loss_scale(optimizer, self.dtype_policy.name), **kwargs)

    @staticmethod
    def _inputs(batch):
        bag = tf.cast(batch["bag"], tf.float32)
        mask = batch.get("mask")
        if mask is None:
            mask = tf.ones(tf.shape(bag)[:2], tf.float32)
        return {"bag": bag, "mask": tf.cast(mask, tf.float32)}

    def _outputs(self, inputs, training):
        out = self.network(inputs, training=training)
        if isinstance(out, dict):
            return base.to_float(out["probability"]), out.get("attention")
        return base.to_float(out), None

    def call(self, inputs, training=False):
        """Bag probabilities ``(B, 1)`` for ``inputs = {"bag"[, "mask"]}``."""
        return self._outputs(self._inputs(inputs), training)[0]

    def attention(self, inputs):
        """Attention weights ``(B, N)`` of each instance for ``inputs = {"bag"[, "mask"]}``."""
        attention = self._outputs(self._inputs(inputs), training=False)[1]
        if attention is None:
            raise ValueError("MILTrainer.attention: the model has no 'attention' output")
        return attention

    def _objective(self, data, training):
        batch = base.unpack(data, ("bag", "label"), "MILTrainer")
        inputs = self._inputs(batch)
        labels = tf.reshape(tf.cast(batch["label"], tf.float32), [-1, 1])
        global_batch = base.global_batch_size(labels)
        probability, _ = self._outputs(inputs, training)
        loss = base.global_mean_share(self.bag_loss(labels, probability), global_batch)
        hits = tf.cast(tf.equal(tf.cast(probability > 0.5, tf.float32), labels), tf.float32)
        return loss, base.global_mean_share(hits, global_batch)

    def train_step(self, data):
        with tf.GradientTape() as tape:
            loss, accuracy = self._objective(data, training=True)
            scaled = base.scaled_objective(self.optimizer, loss, self.network)
        base.apply_gradients(self.optimizer, tape, scaled, self.network.trainable_variables)
        return self.log(shares={"loss": loss, "accuracy": accuracy})

    def test_step(self, data):
        loss, accuracy = self._objective(data, training=False)
        return self.log(shares={"loss": loss, "accuracy": accuracy})
