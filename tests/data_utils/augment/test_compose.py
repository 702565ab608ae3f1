"""Tests for data_utils.augment.compose: chains, fusion of spatial steps, tf.data."""

import inspect

import numpy as np
import pytest
import tensorflow as tf

from data_utils import augment
from data_utils.registry import REGISTRY
from tests.data_utils.augment.helpers import blobs


@pytest.mark.parametrize("shape", [(2, 32, 32), (2, 16, 16, 16)])
def test_chain_keeps_labels_integer_and_aligned(shape):
    image, label = blobs(shape)
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
    image, label = blobs((2, 16, 16, 16))
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


def _dataset(n_batches=3):
    image, label = blobs((2, 16, 16))
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
    # Like every kit pipeline, without tf.data's autotuning thread (it made iterator teardown wait).
    assert ds.options().autotune.enabled is False and fixed.options().autotune.enabled is False


@pytest.mark.parametrize("paddings", [("border", "zeros"), ("zeros", "border")])
def test_fusion_keeps_each_steps_padding(paddings):
    ones = np.ones((2, 24, 24, 1), "float32")
    first = augment.Affine(translation=(5.0, 5.0), padding=paddings[0])
    second = augment.Affine(translation=(5.0, 5.0), padding=paddings[1])
    seeds = augment.split_seed([3, 4], 3)
    fused = augment.Compose([first, augment.Flip(), second])({"image": ones}, [3, 4])["image"].numpy()
    # Either order ends with zeros moved in somewhere: the "zeros" step pads with zeros.
    assert fused.min() < 1e-6 and fused.max() == pytest.approx(1.0)
    sequential = second(augment.Flip()(first(ones, seeds[0]), seeds[1]), seeds[2]).numpy()
    np.testing.assert_allclose(fused, sequential, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 32, 32), (2, 16, 16, 16)])
def test_projective_and_ct_window_keep_labels_integer_and_aligned(shape):
    image, label = blobs(shape)
    hu = image * 100.0 - 60.0  # foreground 1040 HU (bone), background 40 HU
    chain = augment.Compose([augment.Projective(distortion=0.2), augment.CTWindow(window="bone", center_shift=50.0)])
    out = chain({"image": hu, "label": label}, 3)
    lab, img = out["label"].numpy(), out["image"].numpy()[..., 0]
    assert out["label"].dtype == tf.int32 and set(np.unique(lab)) == {0, 1, 2}
    assert not np.array_equal(lab, label), "the projective step moved something"
    fg = lab > 0
    assert img[fg].mean() > img[~fg].mean() + 0.3 and 0.0 <= img.min() and img.max() <= 1.0
    assert "projective" in REGISTRY.names("augmentation") and "ct_window" in REGISTRY.names("augmentation")


def test_xla_chain_with_elastic_in_tf_data_matches_graph_mode():
    # Unknown batch size (as after Dataset.batch): the elastic field is upsampled in its own XLA program.
    image, label = blobs((4, 16, 16, 16))
    steps = [augment.Flip(), augment.Affine(rotation=0.2, scale=0.1),
             augment.Elastic(sigma=(4.0, 5.0), magnitude=(20.0, 40.0)), augment.Gamma(gamma_range=(0.8, 1.2))]
    ds = tf.data.Dataset.from_tensor_slices({"image": image, "label": label}).batch(2)
    graph = list(augment.apply_to_dataset(ds, augment.Compose(steps), seed=4))
    xla = list(augment.apply_to_dataset(ds, augment.Compose(steps, jit_compile=True), seed=4))
    for a, b in zip(graph, xla, strict=True):
        np.testing.assert_allclose(b["image"].numpy(), a["image"].numpy(), atol=1e-4)
        assert b["label"].dtype == tf.int32 and np.mean(b["label"].numpy() != a["label"].numpy()) < 1e-3
    assert np.abs(graph[0]["image"].numpy() - image[:2]).max() > 1.0, "the chain moved something"


def test_augmentations_are_not_rewritten_by_autograph_inside_a_users_map():
    """A user's own ``Dataset.map`` function is converted by AutoGraph; the kit's augmentation code is
    marked do-not-convert so AutoGraph does not rewrite it on every trace (seconds per pipeline), and
    the batches are the same as through ``apply_to_dataset``."""
    public = [getattr(augment, n) for n in dir(augment) if not n.startswith("_")]
    functions = [f for f in public if callable(f) and not isinstance(f, type) and f is not augment.apply_to_dataset
                 and "seed" in inspect.signature(f).parameters]  # apply_to_dataset builds the pipeline itself
    assert len(functions) >= 25
    unmarked = [f.__name__ for f in functions if not hasattr(f, "autograph_info__")]
    assert not unmarked, f"augmentation functions AutoGraph would convert: {unmarked}"
    for name in REGISTRY.names("augmentation"):
        step_class = REGISTRY.get("augmentation", name)
        assert hasattr(step_class.__call__, "autograph_info__"), name
    assert hasattr(augment.Compose.__call__, "autograph_info__")

    image, label = blobs((4, 24, 24))
    chain = augment.Compose([augment.Flip(), augment.Affine(rotation=0.2), augment.GaussianNoise(std=0.1)])
    ds = tf.data.Dataset.from_tensor_slices({"image": image, "label": label}).batch(2)
    reference = list(augment.apply_to_dataset(ds, chain, seed=3, new_randomness_each_epoch=False))
    base = augment.as_seed(3)
    users = list(ds.enumerate().map(lambda i, element: chain(element, augment.batch_seed(base, i))))
    for a, b in zip(reference, users, strict=True):
        np.testing.assert_array_equal(a["image"].numpy(), b["image"].numpy())
        np.testing.assert_array_equal(a["label"].numpy(), b["label"].numpy())
