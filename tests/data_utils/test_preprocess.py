"""Tests for data_utils.preprocess: NumPy volume preprocessing and the matching TF graph ops."""

import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from data_utils import io, preprocess


def test_to_canonical_reorients_to_ras():
    volume = io.Volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.diag([1.0, -1.0, 2.0, 1.0]), (1.0, 1.0, 2.0))
    ras = io.to_canonical(volume)
    np.testing.assert_array_equal(ras.array, volume.array[:, ::-1])
    assert ras.affine[1, 1] > 0


def test_resample_to_spacing_image_and_label():
    image = np.random.default_rng(0).normal(size=(10, 12, 14)).astype(np.float32)
    out, spacing = preprocess.resample_to_spacing(image, (3.0, 1.0, 1.0), (1.5, 2.0, 1.0))
    assert out.shape == (20, 6, 14) and spacing == pytest.approx((1.5, 2.0, 1.0))
    expected = ndimage.zoom(image, (2.0, 0.5, 1.0), order=1, mode="nearest", grid_mode=True)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    label = np.random.default_rng(1).integers(0, 3, size=(10, 12, 14)).astype(np.int32)
    lab, _ = preprocess.resample_to_spacing(label, (3.0, 1.0, 1.0), (1.5, 2.0, 1.0), is_label=True)
    assert lab.dtype == np.int32 and set(np.unique(lab)) <= {0, 1, 2}
    # Nearest neighbour on an exact 2x up-sampling repeats each slice.
    up, _ = preprocess.resample_to_spacing(label, (3.0, 1.0, 1.0), (1.5, 1.0, 1.0), is_label=True)
    np.testing.assert_array_equal(up, np.repeat(label, 2, axis=0))
    # Physical extent is kept when the spacing does not divide evenly.
    odd, actual = preprocess.resample_to_spacing(image, (3.0, 1.0, 1.0), (2.0, 1.0, 1.0))
    assert odd.shape[0] == 15 and actual[0] * 15 == pytest.approx(30.0)
    with pytest.raises(ValueError, match="spacing"):
        preprocess.resample_to_spacing(image, (1.0, 1.0), (1.0, 1.0))


def test_zscore_and_nonzero():
    x = np.array([[0.0, 2.0], [4.0, 6.0]], np.float32)
    z = preprocess.zscore(x)
    np.testing.assert_allclose(z, (x - 3.0) / np.sqrt(5.0), atol=1e-6)
    nz = preprocess.zscore(x, nonzero=True)
    values = np.array([2.0, 4.0, 6.0])
    np.testing.assert_allclose(nz, [[0.0, (2 - 4) / values.std()], [0.0, (6 - 4) / values.std()]], atol=1e-6)
    np.testing.assert_array_equal(preprocess.zscore(np.full((3, 3), 5.0)), 0.0)  # constant: no NaN
    np.testing.assert_array_equal(preprocess.zscore(np.zeros((3, 3)), nonzero=True), 0.0)


def test_percentile_scale_and_ct_window():
    x = np.arange(101, dtype=np.float32)
    np.testing.assert_allclose(preprocess.percentile_scale(x, 10, 90), np.clip((x - 10) / 80, 0, 1), atol=1e-6)
    unclipped = preprocess.percentile_scale(x, 10, 90, out_range=(-1, 1), clip=False)
    assert unclipped[0] == pytest.approx(-1 - 2 * 10 / 80)
    hu = np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0])
    np.testing.assert_allclose(preprocess.window_ct(hu, 40, 400), [0.0, 0.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(preprocess.window_ct(hu, window="lung"), np.clip((hu + 1350) / 1500, 0, 1), atol=1e-6)
    with pytest.raises(ValueError, match="unknown CT window"):
        preprocess.window_ct(hu, window="nope")
    with pytest.raises(ValueError, match="lower < upper"):
        preprocess.percentile_scale(x, 90, 10)


def test_crop_to_foreground_and_bbox():
    label = np.zeros((10, 12, 14), np.int32)
    label[3:5, 4:8, 6:7] = 1
    image = np.random.default_rng(0).normal(size=label.shape).astype(np.float32)
    img, lab, box = preprocess.crop_to_foreground(image, label, margin=2)
    assert box == (slice(1, 7), slice(2, 10), slice(4, 9)) and img.shape == (6, 8, 5)
    np.testing.assert_array_equal(lab, label[box])
    assert lab.sum() == label.sum()
    clipped = preprocess.foreground_bbox(label, margin=10)
    assert clipped == tuple(slice(0, n) for n in label.shape)
    padded = np.zeros((8, 8), np.float32)
    padded[2:5, 3:6] = 1.0
    _, none, box2 = preprocess.crop_to_foreground(padded)
    assert none is None and box2 == (slice(2, 5), slice(3, 6))


def test_pad_or_crop_centres():
    x = np.arange(5 * 6, dtype=np.float32).reshape(5, 6)
    out = preprocess.pad_or_crop(x, (7, 4), value=-1)
    assert out.shape == (7, 4)
    np.testing.assert_array_equal(out[1:6], x[:, 1:5])
    assert np.all(out[0] == -1) and np.all(out[6] == -1)
    with_channels = preprocess.pad_or_crop(np.zeros((3, 3, 2)), (5, 5))
    assert with_channels.shape == (5, 5, 2)


@pytest.mark.parametrize("shape", [(2, 6, 7, 1), (2, 4, 6, 5, 2)])
def test_tf_ops_match_numpy(shape):
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=shape).astype(np.float32)
    x[0, 0] = 0.0
    z = preprocess.zscore_tf(x).numpy()
    nz = preprocess.zscore_tf(x, nonzero=True).numpy()
    pct = preprocess.percentile_scale_tf(x, 2, 98).numpy()
    for b in range(shape[0]):
        for c in range(shape[-1]):
            np.testing.assert_allclose(z[b, ..., c], preprocess.zscore(x[b, ..., c]), atol=1e-4)
            np.testing.assert_allclose(nz[b, ..., c], preprocess.zscore(x[b, ..., c], nonzero=True), atol=1e-4)
            np.testing.assert_allclose(pct[b, ..., c], preprocess.percentile_scale(x[b, ..., c], 2, 98), atol=1e-5)
    np.testing.assert_allclose(preprocess.window_ct_tf(x * 100, window="bone").numpy(), preprocess.window_ct(x * 100, window="bone"), atol=1e-6)
    target = tuple(n + (2 if i % 2 else -1) for i, n in enumerate(shape[1:-1]))
    padded = preprocess.pad_or_crop_tf(x, target).numpy()
    for b in range(shape[0]):
        np.testing.assert_array_equal(padded[b], preprocess.pad_or_crop(x[b], target))


def test_pad_or_crop_tf_in_a_dataset_map():
    ds = tf.data.Dataset.from_tensor_slices(np.zeros((4, 5, 7, 1), np.float32)).batch(2)
    out = ds.map(lambda x: preprocess.pad_or_crop_tf(x, (8, 4)))
    assert out.element_spec.shape.as_list() == [None, 8, 4, 1]
    assert next(iter(out)).shape == (2, 8, 4, 1)
