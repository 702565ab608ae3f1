"""Unsupervised (and weakly supervised) deformable registration training.

A network predicts a dense displacement field (DDF) from a moving and a fixed image; the moving
image is warped by it (:func:`data_utils.spatial.warp`) and the trainer minimises

    similarity(fixed, warped moving) + regularisation_weight * regulariser(ddf)
        [+ label_weight * (1 - Dice(fixed label, warped moving label))]

the VoxelMorph / DeepReg recipe. No ground-truth deformation is needed; segmentations, when
available, add weak supervision. The losses come from :mod:`training.losses`::

    trainer = RegistrationTrainer(network, similarity="lncc", regulariser="bending_energy",
                                  regularisation_weight=0.5)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    trainer.fit(pairs)   # batches {"moving": m, "fixed": f[, "moving_label": ml, "fixed_label": fl]}
"""

from __future__ import annotations

import keras
import tensorflow as tf

from data_utils import spatial
from training import trainer_base as base
from training import losses

SIMILARITIES = {
    "lncc": losses.local_ncc_loss,
    "ssd": losses.ssd_loss,
    "gmi": losses.global_mutual_information_loss,
}
REGULARISERS = {
    "bending_energy": losses.bending_energy,
    "gradient_norm": losses.gradient_norm,
}


def _resolve(value, table: dict, arg: str):
    if isinstance(value, str):
        if value not in table:
            raise ValueError(f"RegistrationTrainer: {arg} must be one of {sorted(table)} or a function; got {value!r}")
        return table[value]
    if not callable(value):
        raise TypeError(f"RegistrationTrainer: {arg} must be a name or a function; got {value!r}")
    return value


class RegistrationTrainer(base.Trainer):
    """Image similarity + displacement regulariser (+ optional label Dice) for a DDF-predicting network.

    Args:
        network: ``keras.Model`` taking ``[moving, fixed]`` (two inputs, each ``(B, *spatial, C)``)
            or their channel concatenation (one input), and returning the displacement field
            ``(B, *spatial, rank)`` in voxels (or a dict with key ``"ddf"`` or ``"displacement"``, as
            ``models.get("voxelmorph")`` returns, or a list whose first element is the DDF).
        similarity: ``"lncc"`` (local NCC), ``"ssd"`` or ``"gmi"`` (global mutual information), or a
            function ``f(fixed, warped) -> (B,)``.
        regulariser: ``"bending_energy"`` or ``"gradient_norm"``, or a function ``f(ddf) -> (B,)``.
        regularisation_weight: weight of the regulariser.
        label_weight: weight of the label loss (``1 - Dice`` between the fixed label and the warped
            moving label, :func:`training.losses.soft_dice_loss`); 0 turns weak supervision off.

    Batches: ``{"moving", "fixed"}`` images ``(B, *spatial, C)`` and, when ``label_weight > 0``,
    ``"moving_label"``/``"fixed_label"`` (binary masks ``(B, *spatial[, 1])`` or one-hot
    ``(B, *spatial, K)``), or a tuple in that order.

    Logs: ``loss``, ``similarity``, ``regularisation`` and, with labels, ``label`` (1 - Dice).
    """

    def __init__(
        self,
        network: keras.Model,
        similarity="lncc",
        regulariser="bending_energy",
        regularisation_weight: float = 1.0,
        label_weight: float = 0.0,
        name: str = "registration_trainer",
    ):
        base.check_positive(regularisation_weight, "regularisation_weight", "RegistrationTrainer", allow_zero=True)
        base.check_positive(label_weight, "label_weight", "RegistrationTrainer", allow_zero=True)
        names = ("loss", "similarity", "regularisation") + (("label",) if label_weight > 0 else ())
        super().__init__(tracker_names=names, name=name)
        self.network = network
        self.similarity = _resolve(similarity, SIMILARITIES, "similarity")
        self.regulariser = _resolve(regulariser, REGULARISERS, "regulariser")
        self.regularisation_weight = float(regularisation_weight)
        self.label_weight = float(label_weight)

    def compile(self, optimizer="adam", **kwargs):
        """Set the network's optimiser (built inside the strategy's scope) and compile."""
        self._compile_with(base.maybe_loss_scale(optimizer, self.dtype_policy.name), **kwargs)

    def call(self, inputs, training=False):
        """``inputs = (moving, fixed)`` -> ``(warped moving, ddf)``."""
        moving, fixed = inputs
        ddf = self.predict_ddf(moving, fixed, training=training)
        return spatial.warp(tf.cast(moving, tf.float32), ddf), ddf

    def predict_ddf(self, moving, fixed, training=False) -> tf.Tensor:
        """The network's displacement field ``(B, *spatial, rank)`` as float32."""
        moving, fixed = tf.cast(moving, tf.float32), tf.cast(fixed, tf.float32)
        if len(self.network.inputs) == 2:
            out = self.network([moving, fixed], training=training)
        else:
            out = self.network(tf.concat([moving, fixed], axis=-1), training=training)
        if isinstance(out, dict):
            # "displacement" is what the kit's registration models (models/registration.py) return.
            key = "ddf" if "ddf" in out else "displacement"
            if key not in out:
                raise KeyError(
                    "RegistrationTrainer: the network returned a dict without 'ddf' or "
                    f"'displacement'; keys {sorted(out)}"
                )
            out = out[key]
        elif isinstance(out, (list, tuple)):
            out = out[0]
        ddf = base.to_float(out)
        rank = len(moving.shape) - 2
        if ddf.shape[-1] != rank:
            raise ValueError(
                f"RegistrationTrainer: the network must return a displacement field with {rank} channels "
                f"(one per spatial axis); got shape {tuple(ddf.shape)}"
            )
        return ddf

    def _objective(self, data, training):
        keys = ("moving", "fixed") + (("moving_label", "fixed_label") if self.label_weight > 0 else ())
        batch = base.unpack(data, keys, "RegistrationTrainer")
        moving, fixed = tf.cast(batch["moving"], tf.float32), tf.cast(batch["fixed"], tf.float32)
        global_batch = base.global_batch_size(moving)
        ddf = self.predict_ddf(moving, fixed, training=training)
        warped = spatial.warp(moving, ddf)
        shares = {
            "similarity": base.global_mean_share(self.similarity(fixed, warped), global_batch),
            "regularisation": base.global_mean_share(self.regulariser(ddf), global_batch),
        }
        total = shares["similarity"] + self.regularisation_weight * shares["regularisation"]
        if self.label_weight > 0:
            moving_label = _with_channel(batch["moving_label"], moving)
            fixed_label = _with_channel(batch["fixed_label"], moving)
            # Labels are warped with linear interpolation: soft masks keep the Dice differentiable.
            warped_label = spatial.warp(moving_label, ddf)
            shares["label"] = base.global_mean_share(losses.soft_dice_loss(fixed_label, warped_label), global_batch)
            total += self.label_weight * shares["label"]
        return total, shares

    def train_step(self, data):
        with tf.GradientTape() as tape:
            total, shares = self._objective(data, training=True)
            scaled = base.scaled_objective(self.optimizer, total, self.network)
        base.apply_gradients(self.optimizer, tape, scaled, self.network.trainable_variables)
        return self.log(shares={"loss": total, **shares})

    def test_step(self, data):
        total, shares = self._objective(data, training=False)
        return self.log(shares={"loss": total, **shares})


def _with_channel(label, image) -> tf.Tensor:
    """A mask ``(B, *spatial)`` gets a channel axis; masks/one-hot labels become float32."""
    label = tf.cast(label, tf.float32)
    if len(label.shape) == len(image.shape) - 1:
        label = label[..., None]
    return label
