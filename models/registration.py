"""Image registration: networks that predict how to warp a moving image onto a fixed image.

* :func:`voxelmorph`: a U-Net reads the (moving, fixed) pair and predicts a dense displacement field
  ``u`` (one vector per pixel/voxel, in voxels); :class:`SpatialTransformer` warps the moving image
  with it: ``warped(x) = moving(x + u(x))``. Optionally the field is a stationary velocity integrated
  by scaling and squaring (:class:`IntegrateVelocity`), which gives smooth invertible deformations.
* :func:`affine_registration`: a CNN encoder predicts the 12 (3D) or 6 (2D) parameters of an affine
  map about the image centre; the map is turned into the equivalent displacement field and applied
  by the same warping layer.

Both models take ``[moving, fixed]`` (or a dict with those keys) and return a dict::

    {"warped": (B, *spatial, C), "displacement": (B, *spatial, rank)}        # + "affine" (B, r+1, r+1)

so an unsupervised loss is ``similarity(fixed, warped) + lambda * smoothness(displacement)`` (losses in
``training.losses``). To move a label map with a predicted field, use
``SpatialTransformer(interpolation="nearest")([label, displacement])``.

All resampling goes through the kit's single resampler, :mod:`data_utils.spatial` (``keras.ops`` only),
so augmentation and registration agree on what a displacement means: displacements are in voxels,
in array-axis order (``(dy, dx)`` in 2D, ``(dz, dy, dx)`` in 3D), and an output voxel ``x`` reads the
input at ``x + u(x)``.

References:
    Jaderberg et al., "Spatial transformer networks", NeurIPS 2015.
    Balakrishnan et al., "VoxelMorph: a learning framework for deformable medical image
    registration", IEEE TMI 2019 (architecture "vm2").
    Dalca et al., "Unsupervised learning of probabilistic diffeomorphic registration...", MedIA 2019
    (scaling and squaring of a stationary velocity field).
    de Vos et al., "A deep learning framework for unsupervised affine and deformable image
    registration", MedIA 2019 (affine network).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers, ops

from data_utils import spatial
from models import blocks
from models.registry import register

# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="medkit")
class SpatialTransformer(layers.Layer):
    """Warp images with a dense displacement field: ``out(x) = image(x + u(x))``.

    A thin layer around :func:`data_utils.spatial.warp`, so it is differentiable with respect to
    both the image and the field (linear interpolation) and runs on every Keras backend.

    Args:
        interpolation: ``"linear"`` for images, ``"nearest"`` for label maps (no blended classes).
        padding: how values outside the image are read: ``"border"`` (default), ``"zeros"`` or ``"reflection"``.

    Call:
        ``[image (B, *spatial, C), displacement (B, *spatial, rank)]`` -> ``(B, *spatial, C)``.
    """

    def __init__(self, interpolation: str = "linear", padding: str = "border", **kwargs):
        super().__init__(**kwargs)
        if interpolation not in spatial.INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {spatial.INTERPOLATIONS}; got {interpolation!r}")
        if padding not in spatial.PADDING_MODES:
            raise ValueError(f"padding must be one of {spatial.PADDING_MODES}; got {padding!r}")
        self.interpolation = interpolation
        self.padding = padding

    def build(self, input_shape):
        image_shape, field_shape = input_shape
        rank = len(image_shape) - 2
        if rank not in (2, 3) or tuple(field_shape[1:]) != (*image_shape[1:-1], rank):
            raise ValueError(
                f"SpatialTransformer expects image (B, *spatial, C) with 2 or 3 spatial axes and a "
                f"displacement (B, *spatial, {rank}); got {tuple(image_shape)} and {tuple(field_shape)}"
            )

    def call(self, inputs):
        image, displacement = inputs
        return spatial.warp(image, displacement, interpolation=self.interpolation, padding=self.padding)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        return {**super().get_config(), "interpolation": self.interpolation, "padding": self.padding}


@keras.saving.register_keras_serializable(package="medkit")
class IntegrateVelocity(layers.Layer):
    """Scaling and squaring: turn a stationary velocity field into a diffeomorphic displacement.

    ``u = v / 2**steps``, then ``steps`` times ``u <- u + u o (id + u)`` (compose the map with itself).

    Args:
        steps: number of squarings (7 in VoxelMorph-diff).

    Call:
        velocity ``(B, *spatial, rank)`` -> displacement ``(B, *spatial, rank)``.
    """

    def __init__(self, steps: int = 7, **kwargs):
        super().__init__(**kwargs)
        if steps < 1:
            raise ValueError(f"IntegrateVelocity steps must be >= 1; got {steps}")
        self.steps = steps

    def call(self, velocity):
        u = velocity / (2.0**self.steps)
        for _ in range(self.steps):
            u = u + spatial.warp(u, u, interpolation="linear", padding="border")
        return u

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "steps": self.steps}


@keras.saving.register_keras_serializable(package="medkit")
class AffineMatrix(layers.Layer):
    """Affine parameters -> homogeneous sampling matrix about the image centre.

    With parameters ``(A, t)`` the output voxel ``x`` reads the input at
    ``c + (I + A)(x - c) + t * s`` where ``c`` is the image centre and ``s`` half the image size, so
    all-zero parameters give the identity and a unit translation parameter moves half an image.

    Args:
        spatial_shape: ``(H, W)`` or ``(D, H, W)``.

    Call:
        ``(B, rank * (rank + 1))`` parameters (``A`` row by row, then ``t``) -> ``(B, rank + 1, rank + 1)``.
    """

    def __init__(self, spatial_shape: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        self.spatial_shape = tuple(int(s) for s in spatial_shape)

    def call(self, params):
        r = len(self.spatial_shape)
        params = ops.cast(params, "float32")
        linear = ops.eye(r, dtype="float32")[None] + ops.reshape(params[:, : r * r], (-1, r, r))
        half = ops.convert_to_tensor([s / 2.0 for s in self.spatial_shape], dtype="float32")
        centre = ops.convert_to_tensor([(s - 1) / 2.0 for s in self.spatial_shape], dtype="float32")
        translation = params[:, r * r:] * half
        # x_in = L x + (c - L c + t)
        shift = centre[None] - ops.einsum("bij,j->bi", linear, centre) + translation
        top = ops.concatenate([linear, shift[:, :, None]], axis=-1)
        bottom = ops.zeros_like(top[:, :1, :]) + ops.convert_to_tensor([0.0] * r + [1.0], dtype="float32")
        return ops.concatenate([top, bottom], axis=1)

    def compute_output_shape(self, input_shape):
        r = len(self.spatial_shape)
        return (input_shape[0], r + 1, r + 1)

    def get_config(self):
        return {**super().get_config(), "spatial_shape": self.spatial_shape}


@keras.saving.register_keras_serializable(package="medkit")
class AffineToDisplacement(layers.Layer):
    """The dense displacement field of an affine sampling matrix: ``u(x) = M x - x``.

    Args:
        spatial_shape: ``(H, W)`` or ``(D, H, W)`` of the field.

    Call:
        ``(B, rank + 1, rank + 1)`` -> ``(B, *spatial_shape, rank)``.
    """

    def __init__(self, spatial_shape: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        self.spatial_shape = tuple(int(s) for s in spatial_shape)

    def call(self, matrix):
        grid = spatial.affine_grid(matrix, self.spatial_shape)
        return grid - spatial.identity_grid(self.spatial_shape)[None]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.spatial_shape, len(self.spatial_shape))

    def get_config(self):
        return {**super().get_config(), "spatial_shape": self.spatial_shape}


# ---------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------


def _pair_inputs(input_shape: Sequence[int], levels: int, who: str):
    rank = blocks.spatial_rank(input_shape)
    if rank not in (2, 3):
        raise ValueError(f"{who}: input_shape must be (H, W, C) or (D, H, W, C); got {tuple(input_shape)}")
    factor = 2**levels
    if any(s is None or s % factor for s in input_shape[:-1]):
        raise ValueError(f"{who}: spatial size {tuple(input_shape[:-1])} must be fixed and divisible by {factor}")
    moving = keras.Input(shape=tuple(input_shape), name="moving")
    fixed = keras.Input(shape=tuple(input_shape), name="fixed")
    return rank, moving, fixed


def _leaky_conv(x, filters: int, rank: int, *, strides: int = 1, name: str):
    x = blocks.conv(rank, filters, 3, strides=strides, name=f"{name}_conv")(x)
    return layers.LeakyReLU(0.2, name=f"{name}_act")(x)


def _outputs(moving, displacement, **extra):
    warped = SpatialTransformer(name="warp")([moving, displacement])
    # Identity layers give the outputs stable names for compile(loss={...}) and for reading results.
    out = {"warped": layers.Identity(name="warped", dtype="float32")(warped),
           "displacement": layers.Identity(name="displacement", dtype="float32")(displacement)}
    out.update(extra)
    return out


@register("voxelmorph", family="Registration", topic="Image registration",
          defaults={"input_shape": (64, 64, 64, 1)},
          example={"input_shape": (16, 16, 16, 1), "encoder_filters": (4, 8), "decoder_filters": (8, 8, 4)})
def voxelmorph(
    input_shape: Sequence[int] = (64, 64, 64, 1),
    *,
    encoder_filters: Sequence[int] = (16, 32, 32, 32),
    decoder_filters: Sequence[int] = (32, 32, 32, 32, 32, 16, 16),
    integration_steps: int = 0,
    name: str = "voxelmorph",
) -> keras.Model:
    """VoxelMorph-style deformable registration network (Balakrishnan et al. 2019).

    The moving and fixed images are concatenated; a U-Net with stride-2 3x3 convolutions and
    LeakyReLU(0.2) (encoder ``encoder_filters``, decoder ``decoder_filters``: the first
    ``len(encoder_filters)`` decoder convs each precede an upsampling and skip concatenation, the rest
    run at full resolution) ends in a 3x3 conv with ``rank`` channels initialised near zero, so an
    untrained network predicts (almost) the identity. The defaults are the paper's "vm2" channel
    configuration; the parameter count does not depend on the image size.

    Args:
        input_shape: shape of one image, ``(H, W, C)`` or ``(D, H, W, C)``, divisible by
            ``2 ** len(encoder_filters)``.
        encoder_filters: channels of each stride-2 encoder conv.
        decoder_filters: decoder channels; needs at least ``len(encoder_filters)`` entries.
        integration_steps: 0 predicts the displacement directly; ``n > 0`` predicts a velocity field
            and integrates it with ``n`` scaling-and-squaring steps (diffeomorphic variant).

    Returns:
        Model ``[moving, fixed]`` -> ``{"warped": (B, *spatial, C), "displacement": (B, *spatial, rank)}``.
    """
    levels = len(encoder_filters)
    if len(decoder_filters) < levels:
        raise ValueError(
            f"voxelmorph: decoder_filters needs at least {levels} entries (one per encoder level); got {len(decoder_filters)}"
        )
    rank, moving, fixed = _pair_inputs(input_shape, levels, "voxelmorph")
    x = layers.Concatenate(name="pair")([moving, fixed])
    skips = [x]
    for i, f in enumerate(encoder_filters):
        x = _leaky_conv(x, f, rank, strides=2, name=f"enc{i + 1}")
        skips.append(x)
    skips.pop()  # the deepest feature map is where the decoder starts, not a skip
    for i, f in enumerate(decoder_filters[:levels]):
        x = _leaky_conv(x, f, rank, name=f"dec{i + 1}")
        x = blocks.upsample(rank, 2, name=f"dec{i + 1}_upsample")(x)
        x = layers.Concatenate(name=f"dec{i + 1}_skip")([x, skips.pop()])
    for i, f in enumerate(decoder_filters[levels:]):
        x = _leaky_conv(x, f, rank, name=f"full{i + 1}")
    flow = blocks.conv(rank, rank, 3, kernel_initializer=keras.initializers.RandomNormal(0.0, 1e-5),
                       name="flow")(x)
    if integration_steps:
        flow = IntegrateVelocity(integration_steps, name="integrate")(flow)
    return keras.Model([moving, fixed], _outputs(moving, flow), name=name)


@register("affine_registration", family="Registration", topic="Image registration",
          defaults={"input_shape": (64, 64, 64, 1)}, example={"input_shape": (16, 16, 16, 1), "filters": (4, 8)})
def affine_registration(
    input_shape: Sequence[int] = (64, 64, 64, 1),
    *,
    filters: Sequence[int] = (16, 32, 64, 128),
    dense_units: int = 64,
    name: str = "affine_registration",
) -> keras.Model:
    """Affine registration network (in the spirit of de Vos et al. 2019).

    A CNN encoder (two 3x3 convs per stage, stride 2 on the first) reads the concatenated pair;
    global average pooling and a dense layer give ``rank * (rank + 1)`` parameters, initialised to
    zero so the untrained network predicts the identity. :class:`AffineMatrix` makes the matrix
    about the image centre and :class:`AffineToDisplacement` turns it into a field that the shared
    warping layer applies.

    Args:
        input_shape: ``(H, W, C)`` or ``(D, H, W, C)``, divisible by ``2 ** len(filters)``.
        filters: channels of each encoder stage.
        dense_units: width of the hidden dense layer.

    Returns:
        Model ``[moving, fixed]`` -> ``{"warped", "displacement", "affine": (B, rank + 1, rank + 1)}``;
        ``affine`` maps an output voxel index to the moving-image voxel it reads.
    """
    rank, moving, fixed = _pair_inputs(input_shape, len(filters), "affine_registration")
    spatial_shape = tuple(input_shape[:-1])
    x = layers.Concatenate(name="pair")([moving, fixed])
    for i, f in enumerate(filters):
        x = _leaky_conv(x, f, rank, strides=2, name=f"enc{i + 1}a")
        x = _leaky_conv(x, f, rank, name=f"enc{i + 1}b")
    x = blocks.global_avg_pool(rank, name="gap")(x)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    params = layers.Dense(rank * (rank + 1), kernel_initializer="zeros", name="affine_params")(x)
    matrix = AffineMatrix(spatial_shape, name="affine_matrix")(params)
    displacement = AffineToDisplacement(spatial_shape, name="affine_to_displacement")(matrix)
    extra = {"affine": layers.Identity(name="affine", dtype="float32")(matrix)}
    return keras.Model([moving, fixed], _outputs(moving, displacement, **extra), name=name)
