"""Tests for data_utils.augment: seeded, batched 2D/3D augmentations and their composition."""

import numpy as np
import pytest
import tensorflow as tf

from data_utils import augment


def _volume(rng, shape=(2, 16, 16, 16, 1)):
    return rng.uniform(0.5, 1.5, size=shape).astype("float32")


def test_bias_field_is_smooth_positive_and_seeded(rng):
    x = np.ones((2, 16, 16, 16, 1), "float32")
    a = augment.bias_field(x, seed=3).numpy()
    assert a.shape == x.shape
    np.testing.assert_array_equal(a, augment.bias_field(x, seed=3).numpy())
    assert np.abs(a - augment.bias_field(x, seed=4).numpy()).max() > 1e-3
    assert (a > 0).all()
    # Smooth: on average neighbouring voxels differ far less than the field varies overall.
    assert np.abs(np.diff(a, axis=1)).mean() < 0.15 * (a.max() - a.min())
    # The two samples of the batch get different fields.
    assert np.abs(a[0] - a[1]).max() > 1e-3


def test_bias_field_identity_cases(rng):
    x = _volume(rng, (2, 32, 32, 1))
    np.testing.assert_array_equal(augment.bias_field(x, 1, prob=0.0).numpy(), x)
    np.testing.assert_array_equal(augment.bias_field(x, 1, coeff_range=(0.0, 0.0)).numpy(), x)
    with pytest.raises(ValueError, match="prob"):
        augment.bias_field(x, 1, prob=1.5)
    with pytest.raises(ValueError, match="batched"):
        augment.bias_field(x[0], 1)


def test_rician_noise_statistics_and_identity(rng):
    x = np.full((2, 32, 32, 1), 5.0, "float32")
    out = augment.rician_noise(x, [1, 2], std=0.5, sample_std=False).numpy()
    assert (out >= 0).all()
    # For a large signal A, Rician ~ N(sqrt(A^2 + s^2), s): std close to s.
    assert abs(out.std() - 0.5) < 0.1
    np.testing.assert_array_equal(out, augment.rician_noise(x, [1, 2], std=0.5, sample_std=False).numpy())
    assert not np.array_equal(out, augment.rician_noise(x, [1, 3], std=0.5, sample_std=False).numpy())
    np.testing.assert_array_equal(augment.rician_noise(x, 1, prob=0.0).numpy(), x)
    np.testing.assert_allclose(augment.rician_noise(x, 1, std=0.0).numpy(), x, rtol=1e-6)


# ---- every intensity augmentation: seeds, probability, identity, 2D and 3D --------------------

INTENSITY = {
    # name: (function, zero-strength kwargs)
    "bias_field": (augment.bias_field, {"coeff_range": (0.0, 0.0)}),
    "rician_noise": (augment.rician_noise, {"std": 0.0}),
    "gaussian_noise": (augment.gaussian_noise, {"std": 0.0}),
    "speckle_noise": (augment.speckle_noise, {"std": 0.0}),
    "gamma": (augment.gamma, {"gamma_range": (1.0, 1.0)}),
    "brightness": (augment.brightness, {"offset": 0.0}),
    "contrast": (augment.contrast, {"factor": (1.0, 1.0)}),
    "histogram_shift": (augment.histogram_shift, None),
    "gibbs_ringing": (augment.gibbs_ringing, {"alpha": (0.0, 0.0)}),
    "kspace_spikes": (augment.kspace_spikes, {"num_spikes": 0}),
    "gaussian_blur": (augment.gaussian_blur, {"sigma": (0.0, 0.0)}),
    "low_resolution": (augment.low_resolution, {"zoom_range": (1.0, 1.0)}),
    "cutout": (augment.cutout, {"size": (0.0, 0.0)}),
}


@pytest.mark.parametrize("name", sorted(INTENSITY))
@pytest.mark.parametrize("shape", [(2, 16, 16, 1), (2, 12, 12, 12, 2)])
def test_intensity_seeded_probability_and_identity(rng, name, shape):
    fn, zero = INTENSITY[name]
    x = _volume(rng, shape)
    a = fn(x, [7, 1]).numpy()
    assert a.shape == x.shape and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, fn(x, [7, 1]).numpy())
    assert np.abs(a - fn(x, [7, 2]).numpy()).max() > 1e-4, "different seeds must differ"
    np.testing.assert_array_equal(fn(x, [7, 1], prob=0.0).numpy(), x)
    if zero is not None:
        np.testing.assert_allclose(fn(x, [7, 1], **zero).numpy(), x, atol=1e-5)


def test_probability_selects_samples_per_sample(rng):
    x = _volume(rng, (64, 4, 4, 1))
    out = augment.brightness(x, 5, prob=0.5, offset=(1.0, 2.0)).numpy()
    changed = np.abs(out - x).reshape(64, -1).max(axis=1) > 0.5
    assert 15 < changed.sum() < 49


def test_gamma_keeps_the_intensity_range(rng):
    x = _volume(rng, (2, 16, 16, 1))
    out = augment.gamma(x, 1, gamma_range=(2.0, 3.0)).numpy()
    np.testing.assert_allclose(out.min(axis=(1, 2, 3)), x.min(axis=(1, 2, 3)), atol=1e-5)
    np.testing.assert_allclose(out.max(axis=(1, 2, 3)), x.max(axis=(1, 2, 3)), atol=1e-5)
    assert out.mean() < x.mean()  # gamma > 1 darkens the mid-tones


def test_histogram_shift_is_monotone(rng):
    x = _volume(rng, (1, 32, 32, 1))
    out = augment.histogram_shift(x, 3, num_control_points=6).numpy().ravel()
    order = np.argsort(x.ravel())
    assert (np.diff(out[order]) >= -1e-5).all()


# ---- agreement with MONAI's definitions ----------------------------------------------------------


@pytest.mark.slow
def test_bias_field_matches_monai_for_fixed_coefficients(rng):
    transforms = pytest.importorskip("monai.transforms")
    x = _volume(rng, (1, 10, 12, 14, 1))
    ours = augment.bias_field(x, 1, degree=3, coeff_range=(0.05, 0.05)).numpy()[0, ..., 0]
    monai = transforms.RandBiasField(degree=3, coeff_range=(0.05, 0.05), prob=1.0)
    theirs = np.asarray(monai(x[0, ..., 0][None]))[0]
    np.testing.assert_allclose(ours, theirs, rtol=1e-4)


@pytest.mark.slow
def test_gamma_and_gibbs_match_monai(rng):
    transforms = pytest.importorskip("monai.transforms")
    x = _volume(rng, (1, 16, 20, 1))
    ours = augment.gamma(x, 1, gamma_range=(2.0, 2.0)).numpy()[0, ..., 0]
    theirs = np.asarray(transforms.AdjustContrast(gamma=2.0)(x[0, ..., 0][None]))[0]
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    ours = augment.gibbs_ringing(x, 1, alpha=(0.4, 0.4)).numpy()[0, ..., 0]
    theirs = np.asarray(transforms.GibbsNoise(alpha=0.4)(x[0, ..., 0][None]))[0]
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


# ---- spatial augmentations ---------------------------------------------------------------------


def _blobs(shape):
    """An image/label pair: two labelled boxes, the image bright exactly where the label is."""
    label = np.zeros(shape, "int32")
    inner = tuple(slice(n // 4, n // 2) for n in shape[1:])
    other = tuple(slice(n // 2 + 1, 3 * n // 4 + 1) for n in shape[1:])
    label[(slice(None), *inner)] = 1
    label[(slice(None), *other)] = 2
    image = (label > 0).astype("float32")[..., None] * 10.0 + 1.0
    return image, label


def test_flip_prob_one_reverses_every_axis(rng):
    x = _volume(rng, (2, 6, 7, 8, 1))
    label = rng.integers(0, 3, (2, 6, 7, 8)).astype("int32")
    out, lab = augment.flip(x, 1, label=label, prob=1.0)
    np.testing.assert_array_equal(out.numpy(), x[:, ::-1, ::-1, ::-1])
    np.testing.assert_array_equal(lab.numpy(), label[:, ::-1, ::-1, ::-1])
    np.testing.assert_array_equal(augment.flip(x, 1, prob=0.0).numpy(), x)
    only_last = augment.flip(x, 1, prob=1.0, axes=[-1]).numpy()
    np.testing.assert_array_equal(only_last, x[:, :, :, ::-1])


def test_rot90_is_an_exact_rotation(rng):
    x = _volume(rng, (8, 6, 6, 1))
    out = augment.rot90(x, 4, prob=1.0).numpy()
    for b in range(8):
        assert any(np.array_equal(out[b, ..., 0], np.rot90(x[b, ..., 0], k)) for k in (1, 2, 3))
    with pytest.raises(ValueError, match="equal sizes"):
        augment.rot90(_volume(rng, (1, 6, 8, 1)), 1)


@pytest.mark.parametrize("shape", [(2, 24, 24), (2, 16, 16, 16)])
def test_zero_strength_spatial_is_identity(rng, shape):
    x = _volume(rng, (*shape, 1))
    np.testing.assert_allclose(augment.random_affine(x, 1).numpy(), x, atol=1e-5)
    np.testing.assert_allclose(augment.random_affine(x, 1, prob=0.0, rotation=0.5).numpy(), x, atol=1e-5)
    np.testing.assert_allclose(augment.elastic(x, 1, magnitude=0.0).numpy(), x, atol=1e-5)
    np.testing.assert_allclose(augment.elastic(x, 1, prob=0.0).numpy(), x, atol=1e-5)


def test_random_affine_matches_scipy_with_the_drawn_matrix(rng):
    import scipy.ndimage as ndi

    x = _volume(rng, (2, 12, 14, 16, 1))
    kwargs = dict(rotation=0.3, scale=0.1, shear=0.05, translation=2.0)
    _, matrices = augment.draw_affine(tf.constant([3, 4]), 2, (12, 14, 16), **kwargs)
    out = augment.random_affine(x, [3, 4], padding="zeros", **kwargs).numpy()
    for b in range(2):
        ref = ndi.affine_transform(x[b, ..., 0], matrices.numpy()[b], order=1, mode="grid-constant")
        np.testing.assert_allclose(out[b, ..., 0], ref, atol=1e-4)
    assert not np.allclose(matrices[0], matrices[1]), "samples get their own parameters"


@pytest.mark.parametrize("shape", [(2, 32, 32), (2, 16, 16, 16)])
def test_chain_keeps_labels_integer_and_aligned(shape):
    image, label = _blobs(shape)
    chain = augment.Compose([
        augment.Flip(),
        augment.Affine(rotation=0.3, scale=0.1, translation=2.0),
        augment.Elastic(sigma=(3.0, 4.0), magnitude=(20.0, 40.0)),
        augment.BiasField(),
        augment.Gamma(gamma_range=(0.8, 1.2)),
    ])
    out = chain({"image": image, "label": label, "case_id": tf.constant(["a", "b"])}, 11)
    lab, img = out["label"].numpy(), out["image"].numpy()[..., 0]
    assert out["label"].dtype == tf.int32 and lab.shape == label.shape
    assert set(np.unique(lab)) == {0, 1, 2}
    assert out["case_id"].numpy().tolist() == [b"a", b"b"]
    assert not np.array_equal(lab, label), "the chain moved something"
    # Alignment: the bright voxels are where the foreground labels went.
    fg = lab > 0
    assert img[fg].mean() > 3 * img[~fg].mean()
    assert np.mean((img > img[~fg].mean() * 2.5) == fg) > 0.9


def test_fused_chain_equals_sequential_resampling_on_smooth_images():
    yy, xx = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    x = (np.sin(yy / 6.0) * np.cos(xx / 5.0))[None, ..., None].astype("float32")
    first = augment.Affine(rotation=0.3, padding="border")
    second = augment.Affine(scale=0.2, translation=3.0, padding="border")
    seeds = augment.split_seed([5, 6], 2)
    fused = augment.Compose([first, second])({"image": x}, [5, 6])["image"].numpy()
    sequential = second(first(x, seeds[0]), seeds[1]).numpy()
    np.testing.assert_allclose(fused[:, 6:-6, 6:-6], sequential[:, 6:-6, 6:-6], atol=0.05)


@pytest.mark.slow
def test_compose_seeded_and_xla_agrees(rng):
    image, label = _blobs((2, 16, 16, 16))
    chain = [augment.Affine(rotation=0.2, scale=0.1), augment.GaussianNoise(std=0.1)]
    element = {"image": image, "label": label}
    a = augment.Compose(chain)(element, 1)
    b = augment.Compose(chain)(element, 1)
    c = augment.Compose(chain)(element, 2)
    np.testing.assert_array_equal(a["image"].numpy(), b["image"].numpy())
    assert np.abs(a["image"].numpy() - c["image"].numpy()).max() > 1e-3
    xla = augment.Compose(chain, jit_compile=True)(element, 1)
    np.testing.assert_allclose(xla["image"].numpy(), a["image"].numpy(), atol=1e-4)
    assert np.mean(xla["label"].numpy() != a["label"].numpy()) < 1e-3


def test_compose_rejects_bad_input():
    with pytest.raises(TypeError, match="Augmentation"):
        augment.Compose([augment.flip])
    with pytest.raises(TypeError, match="unknown"):
        augment.Affine(rotaton=0.1)
    with pytest.raises(KeyError, match="image"):
        augment.Compose([augment.Flip()])({"img": np.zeros((1, 4, 4, 1), "float32")}, 1)


# ---- batch mixing ------------------------------------------------------------------------------


def test_mixup_mixes_one_hot_labels(rng):
    x = _volume(rng, (4, 8, 8, 1))
    classes = np.array([0, 1, 2, 1])
    image, label = augment.mixup(x, classes, 3, num_classes=3)
    assert label.shape == (4, 3)
    np.testing.assert_allclose(label.numpy().sum(axis=1), 1.0, atol=1e-6)
    unmixed_x, unmixed_y = augment.mixup(x, classes, 3, num_classes=3, prob=0.0)
    np.testing.assert_allclose(unmixed_x.numpy(), x)
    np.testing.assert_allclose(unmixed_y.numpy(), np.eye(3)[classes])


def test_cutmix_pastes_label_maps_and_mixes_classes(rng):
    image, label = _blobs((4, 16, 16))
    label[1] = 0  # partners differ
    out_x, out_y = augment.cutmix(image, label, 2)
    assert out_y.dtype == tf.int32 and set(np.unique(out_y.numpy())) <= {0, 1, 2}
    # Where the label was pasted, the image was pasted too.
    fg = out_y.numpy() > 0
    assert out_x.numpy()[..., 0][fg].min() > 5
    _, mixed = augment.cutmix(image, np.array([0, 1, 2, 0]), 2, num_classes=3)
    np.testing.assert_allclose(mixed.numpy().sum(axis=1), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="num_classes"):
        augment.cutmix(image, np.array([0, 1, 2, 0]), 2)


# ---- tf.data and Keras layers ------------------------------------------------------------------


def _dataset(n_batches=3):
    image, label = _blobs((2, 16, 16))
    return tf.data.Dataset.from_tensors({"image": image, "label": label}).repeat(n_batches)


def test_pipeline_batches_differ_and_runs_repeat():
    chain = [augment.Affine(rotation=0.3, translation=2.0), augment.GaussianNoise(std=0.1)]
    ds = augment.apply_to_dataset(_dataset(), chain, seed=3)
    first = [el["image"].numpy() for el in ds]
    assert np.abs(first[0] - first[1]).max() > 1e-3, "each batch must get new randomness"
    again = [el["image"].numpy() for el in augment.apply_to_dataset(_dataset(), chain, seed=3)]
    np.testing.assert_array_equal(first[0], again[0])
    second_epoch = [el["image"].numpy() for el in ds]
    assert np.abs(first[0] - second_epoch[0]).max() > 1e-3, "a new epoch gets new randomness"
    fixed = augment.apply_to_dataset(_dataset(), chain, seed=3, new_randomness_each_epoch=False)
    a, b = [[el["image"].numpy() for el in fixed] for _ in range(2)]
    np.testing.assert_array_equal(a[1], b[1])
    assert np.abs(a[0] - a[1]).max() > 1e-3


def test_layers_augment_in_training_only_and_round_trip(tmp_path, rng):
    import keras

    inputs = keras.Input((16, 16, 1))
    x = augment.RandomBiasField(seed=1, coeff_range=(0.1, 0.3))(inputs)
    x = augment.RandomAffine(seed=2, rotation=0.3)(x)
    model = keras.Model(inputs, x)
    data = _volume(rng, (2, 16, 16, 1))
    np.testing.assert_allclose(model(data, training=False).numpy(), data)
    trained = model(data, training=True).numpy()
    assert np.abs(trained - data).max() > 1e-3
    path = tmp_path / "aug.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.layers[2].get_config()["rotation"] == 0.3
    assert isinstance(loaded.layers[1], augment.RandomBiasField)
    layer = augment.RandomFlip(seed=4, prob=1.0)
    out = layer({"image": data, "label": np.zeros((2, 16, 16), "int32")})
    np.testing.assert_array_equal(out["image"].numpy(), data[:, ::-1, ::-1])
    with pytest.raises(ValueError, match="dict"):
        augment.RandomMixUp(num_classes=2)(data)


def test_elastic_fields_are_bounded_smooth_and_gated():
    shape = (24, 24, 24)
    _, control = augment.draw_elastic([1, 2], 2, shape, mode="control", magnitude=(2.0, 3.0),
                                      num_control_points=4)
    field = augment.realize_transform(("field", control), shape)[1].numpy()
    assert field.shape == (2, *shape, 3)
    assert 0.5 < np.abs(field).max() <= 3.0 + 1e-5
    _, gauss = augment.draw_elastic([1, 2], 2, shape, sigma=(4.0, 5.0), magnitude=(100.0, 100.0))
    field = augment.realize_transform(("field", gauss), shape)[1].numpy()
    assert field.shape == (2, *shape, 3) and np.abs(field).max() > 0.5
    # Smooth: neighbouring displacements differ much less than the displacements themselves.
    assert np.abs(np.diff(field, axis=1)).mean() < 0.2 * np.abs(field).mean()
    _, off = augment.draw_elastic([1, 2], 2, shape, prob=0.0)
    np.testing.assert_array_equal(augment.realize_transform(("field", off), shape)[1].numpy(), 0.0)
    with pytest.raises(ValueError, match="mode"):
        augment.draw_elastic([1, 2], 1, shape, mode="bspline")
