"""Loss functions for segmentation, registration, generative models and regularisation.

Every loss comes in two forms:

- a **function** (``soft_dice_loss(y_true, y_pred, ...)``) returning one value per sample, shape ``(B,)``
  (or a scalar where the loss is pooled over the batch, which is said in its docstring), and
- a **Keras ``Loss`` class** (``SoftDiceLoss(...)``) for ``model.compile(loss=...)``, registered for
  serialisation so a saved ``.keras`` model that was compiled with it loads again. The class is
  made from the function (``core.loss_class``): its options and defaults are the function's
  keyword parameters, written once; ``SoftDiceLoss.options()`` lists them.

Conventions for the segmentation losses:

- ``y_pred`` holds probabilities ``(B, *spatial, K)`` from a softmax (or, for ``K == 1``, the foreground
  probability from a sigmoid). Pass ``from_logits=True`` when the model outputs raw scores instead.
- ``y_true`` is an integer label map ``(B, *spatial)`` or ``(B, *spatial, 1)``, or a one-hot /
  soft-label tensor ``(B, *spatial, K)``. For ``K == 1`` it is the 0/1 foreground mask.
- ``*spatial`` is ``(H, W)`` or ``(D, H, W)``: everything works in 2D and 3D.
- All arithmetic is done in float32, so the losses are safe under ``mixed_float16``/``mixed_bfloat16``.
- Only ``keras.ops`` is used (except ``gradient_penalty``, which needs a gradient tape), so the losses
  run inside ``tf.function`` graphs and under ``tf.distribute`` strategies.

Smoothing terms in Dice-like losses (``smooth_nr`` added to the numerator, ``smooth_dr`` to the
denominator, both ``1e-5`` by default as in MONAI) keep the ratio defined when a structure is absent:
if truth and prediction are both empty the Dice score is ``smooth_nr / smooth_dr = 1`` (loss 0); if the
truth is empty but something is predicted, the score falls towards 0 (loss towards 1).
"""

from __future__ import annotations

import keras

from data_utils.registry import REGISTRY
from training.losses.core import (
    smooth_labels,
    to_one_hot,
)
from training.losses.segmentation import (
    cross_entropy,
    CrossEntropyLoss,
    dice_ce_loss,
    DiceCELoss,
    focal_loss,
    FocalLoss,
    generalized_dice_loss,
    GeneralizedDiceLoss,
    soft_dice_loss,
    soft_dice_score,
    SoftDiceLoss,
    tversky_loss,
    TverskyLoss,
)
from training.losses.registration import (
    bending_energy,
    BendingEnergyLoss,
    global_mutual_information_loss,
    GlobalMutualInformationLoss,
    gradient_norm,
    GradientNormLoss,
    l1_loss,
    L1Loss,
    local_ncc,
    local_ncc_loss,
    LocalNCCLoss,
    mutual_information,
    ssd_loss,
    SSDLoss,
)
from training.losses.generative import (
    gan_discriminator_loss,
    gan_generator_loss,
    GAN_KINDS,
    gradient_penalty,
    kl_divergence,
)


# The loss classes by name in the kit's registry (category "loss"): REGISTRY.names("loss") lists
# them and command-line choices come from there.
for _name, _cls in {
    "dice": SoftDiceLoss,
    "generalized_dice": GeneralizedDiceLoss,
    "dice_ce": DiceCELoss,
    "cross_entropy": CrossEntropyLoss,
    "focal": FocalLoss,
    "tversky": TverskyLoss,
    "ssd": SSDLoss,
    "l1": L1Loss,
    "lncc": LocalNCCLoss,
    "gmi": GlobalMutualInformationLoss,
    "bending_energy": BendingEnergyLoss,
    "gradient_norm": GradientNormLoss,
}.items():
    REGISTRY.register("loss", _name, _cls)


def get(name: str, **kwargs) -> keras.losses.Loss:
    """Build a loss by its registered name, e.g. ``get("dice_ce", batch=True)``.

    Args:
        name: one of ``REGISTRY.names("loss")``.
        **kwargs: arguments of the loss class.

    Returns:
        A ``keras.losses.Loss`` instance.

    Raises:
        KeyError: for an unknown name (the message lists the registered ones).
    """
    return REGISTRY.build("loss", name, **kwargs)
