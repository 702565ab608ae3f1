"""Tests for training.losses.registration: image similarity and displacement regularisers."""

import keras
import numpy as np
import pytest

from training import losses as L
from tests.training.losses.helpers import to_numpy


def test_ssd_hand_computed():
    a = np.zeros((2, 2, 2, 1), dtype="float32")
    b = a.copy()
    b[0, 0, 0, 0] = 2.0
    np.testing.assert_allclose(to_numpy(L.ssd_loss(a, b)), [1.0, 0.0])


def test_l1_hand_computed_in_2d_and_3d():
    a = np.zeros((2, 2, 2, 1), dtype="float32")
    b = a.copy()
    b[0, 0, 0, 0] = -2.0
    b[1] = 0.5
    np.testing.assert_allclose(to_numpy(L.l1_loss(a, b)), [0.5, 0.5])
    np.testing.assert_allclose(to_numpy(L.l1_loss(b, b)), [0.0, 0.0])
    volume = np.arange(2 * 3 * 3 * 3 * 2, dtype="float32").reshape(2, 3, 3, 3, 2)
    np.testing.assert_allclose(to_numpy(L.l1_loss(volume, volume + 3.0)), [3.0, 3.0], rtol=1e-6)


@pytest.mark.parametrize("shape,window", [((2, 16, 16, 1), 5), ((1, 10, 12, 11, 1), (3, 5, 3))])
def test_local_ncc_invariances(rng, shape, window):
    x = rng.random(shape).astype("float32")
    noise = rng.random(shape).astype("float32")
    same = to_numpy(L.local_ncc_loss(x, x, window=window, eps=1e-8))
    affine = to_numpy(L.local_ncc_loss(x, 3.0 * x + 1.0, window=window, eps=1e-8))
    unrelated = to_numpy(L.local_ncc_loss(x, noise, window=window, eps=1e-8))
    np.testing.assert_allclose(same, 0.0, atol=1e-3)
    np.testing.assert_allclose(affine, 0.0, atol=1e-3)  # NCC ignores local brightness and contrast
    assert np.all(unrelated > 0.7)
    assert L.local_ncc(x, x, window=window).shape[1:-1] == tuple(
        s - w + 1 for s, w in zip(shape[1:-1], (window,) * 3 if isinstance(window, int) else window)
    )
    with pytest.raises(ValueError, match="larger than the image"):
        L.local_ncc_loss(x, x, window=40)


def test_mutual_information_properties(rng):
    x = rng.random((2, 16, 16, 1)).astype("float32")
    noise = rng.random((2, 16, 16, 1)).astype("float32")
    mi_self = to_numpy(L.mutual_information(x, x))
    mi_inverted = to_numpy(L.mutual_information(x, 1.0 - x))
    mi_noise = to_numpy(L.mutual_information(x, noise))
    assert np.all(mi_self > 5 * mi_noise)
    np.testing.assert_allclose(mi_inverted, mi_self, rtol=1e-3)  # MI ignores invertible intensity maps
    np.testing.assert_allclose(to_numpy(L.mutual_information(noise, x)), mi_noise, rtol=1e-4)  # symmetric
    np.testing.assert_allclose(to_numpy(L.global_mutual_information_loss(x, x)), -mi_self, rtol=1e-6)
    with pytest.raises(ValueError, match="num_bins"):
        L.mutual_information(x, x, num_bins=1)


def _grid(shape):
    return np.stack(np.meshgrid(*[np.arange(s, dtype="float32") for s in shape], indexing="ij"), axis=-1)


@pytest.mark.parametrize("shape", [(9, 8), (7, 8, 6)])
def test_bending_energy_and_gradient_norm_golden(shape):
    rank = len(shape)
    coords = _grid(shape)
    rng = np.random.default_rng(1)
    matrix = rng.normal(size=(rank, rank)).astype("float32")
    affine = (coords @ matrix.T + 2.0)[None]
    np.testing.assert_allclose(to_numpy(L.bending_energy(affine)), [0.0], atol=1e-4)
    # Gradient norm of an affine field: every derivative is an entry of the matrix.
    np.testing.assert_allclose(to_numpy(L.gradient_norm(affine)), [np.sum(matrix**2) / rank], rtol=1e-5)
    np.testing.assert_allclose(to_numpy(L.gradient_norm(affine, norm="l1")), [np.sum(np.abs(matrix)) / rank], rtol=1e-5)
    # u_0 = x_0^2: the only second derivative is d2u_0/dx_0^2 = 2 -> energy 4 in component 0, mean 4 / rank.
    quadratic = np.zeros((*shape, rank), dtype="float32")
    quadratic[..., 0] = coords[..., 0] ** 2
    np.testing.assert_allclose(to_numpy(L.bending_energy(quadratic[None])), [4.0 / rank], rtol=1e-5)
    # u_0 = x_0 * x_1: mixed derivative 1, counted twice -> energy 2 in component 0.
    mixed = np.zeros((*shape, rank), dtype="float32")
    mixed[..., 0] = coords[..., 0] * coords[..., 1]
    np.testing.assert_allclose(to_numpy(L.bending_energy(mixed[None])), [2.0 / rank], rtol=1e-5)


def test_displacement_regularisers_reject_bad_fields():
    with pytest.raises(ValueError, match="displacement field"):
        L.bending_energy(np.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match="at least 5"):
        L.bending_energy(np.zeros((1, 4, 8, 2)))
    with pytest.raises(ValueError, match="norm"):
        L.gradient_norm(np.zeros((1, 8, 8, 2)), norm="l3")


def test_registration_loss_classes(rng):
    x = rng.random((2, 12, 12, 1)).astype("float32")
    ddf = rng.normal(size=(2, 8, 8, 2)).astype("float32")
    np.testing.assert_allclose(to_numpy(L.LocalNCCLoss(window=5)(x, x)), np.mean(to_numpy(L.local_ncc_loss(x, x, window=5))))
    np.testing.assert_allclose(to_numpy(L.GlobalMutualInformationLoss()(x, x)), np.mean(to_numpy(L.global_mutual_information_loss(x, x))))
    np.testing.assert_allclose(to_numpy(L.SSDLoss()(x, 0 * x)), np.mean(x**2), rtol=1e-6)
    np.testing.assert_allclose(to_numpy(L.L1Loss()(x, 0 * x)), np.mean(np.abs(x)), rtol=1e-6)
    assert isinstance(keras.losses.deserialize(keras.losses.serialize(L.get("l1"))), L.L1Loss)
    np.testing.assert_allclose(to_numpy(L.BendingEnergyLoss()(ddf, ddf)), np.mean(to_numpy(L.bending_energy(ddf))), rtol=1e-6)
    np.testing.assert_allclose(to_numpy(L.GradientNormLoss(norm="l1")(ddf, ddf)), np.mean(to_numpy(L.gradient_norm(ddf, norm="l1"))), rtol=1e-6)
    restored = keras.losses.deserialize(keras.losses.serialize(L.LocalNCCLoss(window=(3, 5))))
    assert restored.get_config()["window"] == [3, 5]
