"""Semi-supervised learning with a mean teacher (Tarvainen & Valpola, NeurIPS 2017).

A *student* network learns from the labelled images (supervised loss) and from every image,
labelled or not (consistency loss): its prediction under random affine + intensity noise must agree
with the prediction of a *teacher*, whose weights are an exponential moving average (EMA) of the
student's. The consistency weight ramps up from 0 so early, random teacher predictions do not
dominate::

    trainer = MeanTeacher(student, supervised_loss=losses.cross_entropy, rampup_steps=500)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    both = tf.data.Dataset.zip((labelled.repeat(), unlabelled)).map(lambda l, u: {**l, "unlabelled": u["image"]})
    trainer.fit(both, epochs=10)
    trainer.teacher.save("teacher.keras")      # the teacher usually generalises better

For segmentation (outputs with the input's spatial shape) the teacher sees the image without the
random affine and its prediction is moved by the student's affine, so the two predictions are
compared voxel by voxel in the same frame (transformation consistency, Perone et al. 2019); the
supervised loss sees the labelled images unmoved (their labels are not moved). For classification
both see independently transformed copies, and, as in the paper, the student's prediction on its
perturbed copy of a labelled image serves both losses.

With ``consistency_weight=0`` the unlabelled images are left out and the trainer is supervised
learning with the same perturbations, batches and steps (and an EMA copy): the fair baseline to
compare a mean teacher with.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from data_utils import augment, spatial
from training import trainer_base as base
from training import losses


def random_affine_matrices(
    seed, batch_size, spatial_shape, rotation: float, translation: float, scale: float, flip_axes=()
):
    """Per-sample random affine sampling matrices ``(B, r+1, r+1)`` (flip, rotation, translation, zoom).

    A thin wrapper of :func:`data_utils.augment.draw_affine` and :func:`data_utils.augment.draw_flip`:
    the trainer needs the matrices themselves, to move the teacher's segmentation by the same
    transform as the student's input.

    Args:
        seed: shape-[2] stateless seed.
        batch_size: int tensor ``B``.
        spatial_shape: ``(H, W)`` or ``(D, H, W)`` (Python ints).
        rotation: maximum absolute angle in radians (about every axis in 3D).
        translation: maximum absolute shift in voxels.
        scale: maximum relative zoom (``1 +- scale``).
        flip_axes: spatial axes (0-based, e.g. ``(1,)`` for left-right in 2D), each mirrored with
            probability 1/2 per sample; ``()`` for none.

    Returns:
        float32 ``(B, r+1, r+1)`` for :func:`data_utils.spatial.affine_transform`.
    """
    seeds = tf.random.experimental.stateless_split(seed, 2)
    _, matrices = augment.draw_affine(
        seeds[0], batch_size, spatial_shape, rotation=rotation, scale=scale, translation=translation
    )
    if flip_axes:
        # Sampling matrices compose right to left: the output reads the flipped, then moved, input.
        _, flips = augment.draw_flip(seeds[1], batch_size, spatial_shape, prob=0.5, axes=tuple(flip_axes))
        matrices = tf.matmul(matrices, flips)
    return matrices


class MeanTeacher(base.Trainer):
    """Mean-teacher trainer: supervised loss on labelled images + ramped consistency with an EMA teacher.

    Args:
        student: ``keras.Model`` mapping images ``(B, *spatial, C)`` to probabilities (softmax
            outputs ``(B, K)`` for classification or ``(B, *spatial, K)`` for segmentation).
        supervised_loss: per-sample loss ``f(y_true, y_pred) -> (B,)`` for the labelled images, a
            ``keras.losses.Loss`` or a name (default :func:`training.losses.cross_entropy`;
            :func:`training.losses.dice_ce_loss` suits segmentation).
        consistency_weight: final weight of the consistency loss (mean squared difference of the
            student's and teacher's probabilities, :func:`training.losses.ssd_loss`); 0 trains on
            the labelled images alone (the supervised baseline; ``consistency`` is then logged on
            the labelled images only).
        rampup_steps: steps over which the weight rises as ``exp(-5 (1 - t)^2)``; 0 for no ramp.
        ema_decay: teacher EMA decay (0.99 early in training, 0.999 later is the paper's choice); during
            the first steps the decay is ``min(ema_decay, 1 - 1 / (step + 1))`` so the teacher
            forgets its random initialisation quickly.
        rotation: maximum random rotation in radians (0 turns it off).
        translation: maximum random shift in voxels.
        scale: maximum random zoom, ``1 +- scale``.
        flip_axes: spatial axes mirrored at random (probability 1/2 each), e.g. ``(1,)`` for
            left-right in 2D; ``()`` for none.
        noise_std: standard deviation of additive Gaussian intensity noise.
        teacher: optional teacher model with the student's architecture (default: a clone of the
            student with the same initial weights).
        seed: seed of the noise generator.

    Batches for ``fit``: ``{"image", "label", "unlabelled"}`` (``"unlabelled"`` is an image batch
    ``(B_u, *spatial, C)``), or a pair ``(labelled, unlabelled)`` where ``labelled`` is
    ``{"image", "label"}`` or ``(x, y)`` and ``unlabelled`` is ``{"image"}`` or ``x``.
    Batches for ``evaluate``: ``{"image", "label"}`` or ``(x, y)``.

    Logs: ``loss`` (the student's objective), ``supervised``, ``consistency``, ``consistency_weight``
    when training; ``loss`` (student) and ``teacher_loss`` (supervised losses) when evaluating.
    """

    def __init__(
        self,
        student: keras.Model,
        supervised_loss=None,
        consistency_weight: float = 1.0,
        rampup_steps: int = 0,
        ema_decay: float = 0.99,
        rotation: float = 0.1,
        translation: float = 2.0,
        scale: float = 0.05,
        flip_axes=(),
        noise_std: float = 0.05,
        teacher: keras.Model | None = None,
        seed: int | None = None,
        name: str = "mean_teacher",
    ):
        super().__init__(
            tracker_names=("loss", "supervised", "consistency", "consistency_weight", "teacher_loss"),
            name=name,
        )
        what = "MeanTeacher"
        base.check_positive(consistency_weight, "consistency_weight", what, allow_zero=True)
        if not 0.0 <= float(ema_decay) <= 1.0:
            raise ValueError(f"{what}: ema_decay must be in [0, 1]; got {ema_decay}")
        for value, arg in ((rotation, "rotation"), (translation, "translation"), (scale, "scale"),
                           (noise_std, "noise_std"), (rampup_steps, "rampup_steps")):
            base.check_positive(value, arg, what, allow_zero=True)
        self.student = student
        self.teacher = teacher if teacher is not None else _clone(student)
        if len(self.teacher.weights) != len(self.student.weights):
            raise ValueError(f"{what}: teacher and student must have the same architecture (same weights)")
        self.teacher.trainable = False
        self.supervised_loss = base.per_sample_loss(
            losses.cross_entropy if supervised_loss is None else supervised_loss, "supervised_loss"
        )
        self.consistency_weight = float(consistency_weight)
        self.rampup_steps = int(rampup_steps)
        self.ema_decay = float(ema_decay)
        self.rotation, self.translation, self.scale = float(rotation), float(translation), float(scale)
        self.flip_axes = tuple(int(a) for a in flip_axes)
        self.noise_std = float(noise_std)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=False):
        """The student's prediction."""
        return self.student(images, training=training)

    def compile(self, optimizer="adam", **kwargs):
        """Set the student's optimiser (built inside the strategy's scope) and compile.

        Args:
            optimizer: optimiser or name for the student's weights (the teacher is not trained).
            **kwargs: passed to ``keras.Model.compile``.
        """
        self._compile_with(base.maybe_loss_scale(optimizer, self.dtype_policy.name), **kwargs)

    def optimizer_groups(self):
        return [(self.optimizer, self.student.trainable_variables)]

    # ----- data -------------------------------------------------------------------------

    @staticmethod
    def _split(data):
        return base.unpack_with_extra_images(data, "unlabelled", "MeanTeacher", ("labelled", "unlabelled"))

    # ----- noise --------------------------------------------------------------------------

    def _perturb(self, images, seed, matrices=None):
        """Random affine (given ``matrices``) and Gaussian intensity noise."""
        images = tf.cast(images, tf.float32)
        if matrices is not None:
            images = spatial.affine_transform(images, matrices, padding="border")
        if self.noise_std > 0:
            images = augment.gaussian_noise(images, seed, std=self.noise_std, sample_std=False)
        return images

    def _matrices(self, seed, images):
        if self.rotation == 0 and self.translation == 0 and self.scale == 0 and not self.flip_axes:
            return None
        spatial_shape = tuple(int(s) for s in images.shape[1:-1])
        return random_affine_matrices(
            seed, tf.shape(images)[0], spatial_shape, self.rotation, self.translation, self.scale,
            flip_axes=self.flip_axes,
        )

    def _segmentation(self) -> bool:
        """Whether the student predicts per voxel (its output has the rank of its input)."""
        return len(self.student.outputs[0].shape) == len(self.student.inputs[0].shape)

    def _consistency(self, images):
        """Per-sample consistency ``(B,)`` under independent perturbations, and the student's probabilities.

        Returns:
            ``(consistency (B,), student_probs)``: the student's probabilities on its perturbed copy
            of ``images``, ``(B, K)`` or ``(B, *spatial, K)``.
        """
        seeds = tf.random.experimental.stateless_split(base.stateless_seed(self.seed_generator), 4)
        student_matrices = self._matrices(seeds[0], images)
        student_probs = self.student(self._perturb(images, seeds[1], student_matrices), training=True)
        student_probs = base.to_float(student_probs)
        if self._segmentation():
            # Same frame for both: the teacher sees the image unmoved and its output is moved instead.
            teacher_probs = self.teacher(self._perturb(images, seeds[2]), training=False)
            if student_matrices is not None:
                teacher_probs = spatial.affine_transform(
                    base.to_float(teacher_probs), student_matrices, padding="border"
                )
        else:
            teacher_images = self._perturb(images, seeds[2], self._matrices(seeds[3], images))
            teacher_probs = self.teacher(teacher_images, training=False)
        teacher_probs = tf.stop_gradient(base.to_float(teacher_probs))
        return losses.ssd_loss(teacher_probs, student_probs), student_probs

    # ----- steps --------------------------------------------------------------------------

    def current_consistency_weight(self) -> tf.Tensor:
        """The ramped consistency weight at the current step."""
        return self.consistency_weight * base.sigmoid_rampup(self.step, self.rampup_steps)

    def train_step(self, data):
        images, labels, unlabelled = self._split(data)
        images = tf.cast(images, tf.float32)
        # With no consistency term the unlabelled images cannot change the student: leave them out,
        # which makes this the supervised baseline with the same perturbations and steps.
        all_images = images if self.consistency_weight == 0 else tf.concat(
            [images, tf.cast(unlabelled, tf.float32)], axis=0)
        labelled_global = base.global_batch_size(images)
        all_global = base.global_batch_size(all_images)
        weight = self.current_consistency_weight()

        with tf.GradientTape() as tape:
            consistency, student_probs = self._consistency(all_images)
            if self._segmentation():
                # The labels are not moved with the image, so the supervised loss sees it unmoved.
                predictions = self.student(images, training=True)
            else:
                # As in the paper, the labelled images' perturbed copies serve both losses.
                predictions = student_probs[: tf.shape(images)[0]]
            supervised = base.global_mean_share(self.supervised_loss(labels, predictions), labelled_global)
            consistency = base.global_mean_share(consistency, all_global)
            loss = supervised + weight * consistency
            scaled = base.scaled_objective(self.optimizer, loss, self.student)
        base.apply_gradients(self.optimizer, tape, scaled, self.student.trainable_variables)

        # The teacher follows the student after every update (step already incremented).
        step = tf.cast(self.step, tf.float32)
        decay = tf.minimum(self.ema_decay, 1.0 - 1.0 / (step + 1.0))
        base.ema_update(self.teacher.weights, self.student.weights, decay)
        logs = self.log(
            shares={"loss": loss, "supervised": supervised, "consistency": consistency},
            values={"consistency_weight": weight},
        )
        logs.pop("teacher_loss")
        return logs

    def test_step(self, data):
        batch = base.unpack(data, ("image", "label"), "MeanTeacher.evaluate")
        images, labels = batch["image"], batch["label"]
        global_batch = base.global_batch_size(images)
        student = self.supervised_loss(labels, self.student(images, training=False))
        teacher = self.supervised_loss(labels, self.teacher(images, training=False))
        logs = self.log(shares={
            "loss": base.global_mean_share(student, global_batch),
            "teacher_loss": base.global_mean_share(teacher, global_batch),
        })
        return {k: logs[k] for k in ("loss", "teacher_loss")}


def _clone(model: keras.Model) -> keras.Model:
    """A copy of ``model`` with its own variables holding the same values."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone
