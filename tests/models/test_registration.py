"""Registration: the warping layers (through data_utils.spatial), VoxelMorph and affine networks, errors, learning."""

import keras
import numpy as np
import pytest

import models
from models.registration import (
    AffineMatrix,
    AffineToDisplacement,
    IntegrateVelocity,
    SpatialTransformer,
    affine_registration,
    voxelmorph,
)


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("shape", [(9, 10, 2), (6, 7, 8, 1)], ids=["2d", "3d"])
def test_zero_field_is_the_identity(shape, rng):
    image = rng.normal(size=(2, *shape)).astype("float32")
    field = np.zeros((2, *shape[:-1], len(shape) - 1), "float32")
    np.testing.assert_allclose(_np(SpatialTransformer()([image, field])), image, atol=1e-6)


def test_integer_shift_reads_the_neighbouring_voxel(rng):
    image = rng.normal(size=(1, 8, 9, 1)).astype("float32")
    field = np.zeros((1, 8, 9, 2), "float32")
    field[..., 0], field[..., 1] = 2.0, -1.0  # output (y, x) reads input (y + 2, x - 1)
    warped = _np(SpatialTransformer()([image, field]))
    np.testing.assert_allclose(warped[0, :-2, 1:, 0], image[0, 2:, :-1, 0], atol=1e-6)


def test_nearest_warping_keeps_label_values(rng):
    labels = rng.integers(0, 4, size=(1, 8, 8, 8, 1)).astype("float32")
    field = rng.normal(0, 1.5, size=(1, 8, 8, 8, 3)).astype("float32")
    warped = _np(SpatialTransformer(interpolation="nearest")([labels, field]))
    assert set(np.unique(warped)) <= {0.0, 1.0, 2.0, 3.0}
    linear = _np(SpatialTransformer()([labels, field]))
    assert not set(np.unique(linear)) <= {0.0, 1.0, 2.0, 3.0}  # linear blends classes, hence "nearest"


def test_velocity_integration():
    zero = np.zeros((1, 8, 8, 2), "float32")
    np.testing.assert_allclose(_np(IntegrateVelocity(4)(zero)), 0.0, atol=1e-7)
    # A constant velocity is a translation; integrating it for unit time gives the same translation.
    v = np.broadcast_to(np.array([1.5, -0.5], "float32"), (1, 8, 8, 2))
    np.testing.assert_allclose(_np(IntegrateVelocity(5)(v)), v, atol=1e-5)


def test_affine_matrix_and_its_displacement():
    shape = (8, 12)
    zero = np.zeros((1, 6), "float32")
    np.testing.assert_allclose(_np(AffineMatrix(shape)(zero))[0], np.eye(3), atol=1e-7)
    params = np.array([[0, 0, 0, 0, 0.5, -0.25]], "float32")  # translation in half image sizes
    field = _np(AffineToDisplacement(shape)(AffineMatrix(shape)(params)))
    assert field.shape == (1, 8, 12, 2)
    np.testing.assert_allclose(field[0, ..., 0], 0.5 * 4, atol=1e-5)
    np.testing.assert_allclose(field[0, ..., 1], -0.25 * 6, atol=1e-5)
    # A pure scaling about the centre leaves the centre where it is.
    scale = np.array([[0.2, 0, 0, 0, 0, 0, 0, 0, 0.2, 0, 0, 0]], "float32")
    field3 = _np(AffineToDisplacement((5, 5, 5))(AffineMatrix((5, 5, 5))(scale)))
    np.testing.assert_allclose(field3[0, 2, 2, 2], 0.0, atol=1e-6)
    np.testing.assert_allclose(field3[0, 4, 2, 2], [0.4, 0.0, 0.0], atol=1e-6)


@pytest.mark.parametrize("shape", [(32, 32, 1), (16, 16, 16, 2)], ids=["2d", "3d"])
def test_voxelmorph_outputs_and_near_identity_start(shape, rng):
    model = voxelmorph(shape, encoder_filters=(4, 8), decoder_filters=(8, 8, 4))
    moving, fixed = rng.uniform(size=(2, 2, *shape)).astype("float32")
    out = model([moving, fixed])
    rank = len(shape) - 1
    assert set(out) == {"warped", "displacement"}
    assert _np(out["displacement"]).shape == (2, *shape[:-1], rank)
    assert np.abs(_np(out["displacement"])).max() < 1e-2  # flow conv starts at N(0, 1e-5)
    np.testing.assert_allclose(_np(out["warped"]), moving, atol=1e-2)


def test_voxelmorph_defaults_are_vm2():
    # Balakrishnan et al. 2019, "vm2": encoder 16-32-32-32, decoder 32-32-32-32-32-16-16 in 3D.
    # Counted by hand, layer by layer (conv weights + biases): 301,411, whatever the image size.
    assert models.get("voxelmorph").count_params() == 301_411
    assert voxelmorph((32, 32, 32, 1)).count_params() == 301_411


def test_diffeomorphic_option_integrates_the_field():
    model = voxelmorph((16, 16, 1), encoder_filters=(4,), decoder_filters=(4,), integration_steps=3)
    assert isinstance(model.get_layer("integrate"), IntegrateVelocity)


def test_affine_network_starts_at_the_identity(rng):
    model = affine_registration((16, 16, 16, 1), filters=(4, 8))
    moving, fixed = rng.uniform(size=(2, 2, 16, 16, 16, 1)).astype("float32")
    out = model({"moving": moving, "fixed": fixed})
    assert set(out) == {"warped", "displacement", "affine"}
    np.testing.assert_allclose(_np(out["affine"]), np.broadcast_to(np.eye(4), (2, 4, 4)), atol=1e-6)
    np.testing.assert_allclose(_np(out["warped"]), moving, atol=1e-5)


def test_round_trips(assert_round_trip, rng):
    pair = [rng.uniform(size=(2, 16, 16, 1)).astype("float32") for _ in range(2)]
    model = voxelmorph((16, 16, 1), encoder_filters=(4, 8), decoder_filters=(8, 4), integration_steps=2)
    flow = model.get_layer("flow")
    flow.kernel.assign(rng.normal(0, 0.1, size=flow.kernel.shape).astype("float32"))  # a visible deformation
    assert_round_trip(model, pair)
    affine = affine_registration((16, 16, 1), filters=(4,))
    head = affine.get_layer("affine_params")
    head.kernel.assign(rng.normal(0, 0.1, size=head.kernel.shape).astype("float32"))
    assert_round_trip(affine, pair)


def test_registry():
    assert {"voxelmorph", "affine_registration"} <= set(models.list_models(family="Registration"))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: voxelmorph((20, 20, 1)), "divisible by 16"),
        (lambda: voxelmorph((32, 32, 1), decoder_filters=(8,)), "decoder_filters"),
        (lambda: affine_registration((64,), filters=(4,)), "channels-last"),
        (lambda: SpatialTransformer(interpolation="cubic"), "interpolation"),
        (lambda: SpatialTransformer()([np.zeros((1, 8, 8, 1), "float32"), np.zeros((1, 8, 8, 3), "float32")]),
         "displacement"),
        (lambda: IntegrateVelocity(0), "steps"),
    ],
)
def test_bad_arguments_give_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def _blob_pair(size, shift):
    """A smooth two-blob image and the same image moved so that fixed(x) = moving(x + shift)."""
    yy, xx = np.mgrid[:size, :size].astype("float32")

    def image(dy, dx):
        a = np.exp(-((yy + dy - 12) ** 2 + (xx + dx - 13) ** 2) / 18.0)
        b = 0.7 * np.exp(-((yy + dy - 20) ** 2 + (xx + dx - 19) ** 2) / 10.0)
        return (a + b)[None, ..., None]

    return image(0.0, 0.0), image(*shift)


def _smoothness(_, field):
    """Mean squared forward difference of a 2D displacement field (a diffusion regulariser)."""
    dy = field[:, 1:] - field[:, :-1]
    dx = field[:, :, 1:] - field[:, :, :-1]
    return keras.ops.mean(dy**2) + keras.ops.mean(dx**2)


@pytest.mark.slow
def test_voxelmorph_recovers_a_known_translation():
    shift = (2.0, -1.5)
    moving, fixed = _blob_pair(32, shift)
    model = voxelmorph((32, 32, 1), encoder_filters=(8, 16), decoder_filters=(16, 16, 8))
    model.compile(keras.optimizers.Adam(3e-3), loss={"warped": "mse", "displacement": _smoothness},
                  loss_weights={"warped": 1.0, "displacement": 0.01})
    x = [np.repeat(moving, 8, 0), np.repeat(fixed, 8, 0)]
    y = {"warped": x[1], "displacement": np.zeros((8, 32, 32, 2), "float32")}
    model.fit(x, y, batch_size=8, epochs=60, verbose=0)
    out = model.predict([moving, fixed], verbose=0)
    before = np.mean((moving - fixed) ** 2)
    after = np.mean((out["warped"] - fixed) ** 2)
    assert after < 0.2 * before, f"MSE {before:.5f} -> {after:.5f}"
    # Where the image has structure, the field is the true shift (fixed(x) = moving(x + shift)).
    mask = fixed[0, ..., 0] > 0.3
    np.testing.assert_allclose(out["displacement"][0][mask].mean(0), shift, atol=0.6)


@pytest.mark.slow
def test_affine_network_reduces_dissimilarity():
    moving, fixed = _blob_pair(32, (3.0, 2.0))
    model = affine_registration((32, 32, 1), filters=(8, 16), dense_units=16)
    model.compile(keras.optimizers.Adam(3e-3), loss={"warped": "mse"})
    x = [np.repeat(moving, 8, 0), np.repeat(fixed, 8, 0)]
    model.fit(x, {"warped": x[1]}, batch_size=8, epochs=60, verbose=0)
    out = model.predict([moving, fixed], verbose=0)
    before = np.mean((moving - fixed) ** 2)
    after = np.mean((out["warped"] - fixed) ** 2)
    assert after < 0.3 * before, f"MSE {before:.5f} -> {after:.5f}"
