"""Up-sampling layers: index-returning max pooling, max un-pooling and linear up-sampling in 2D and 3D."""

import keras
import numpy as np
import pytest

from models.upsampling import LinearUpSampling, MaxPoolingWithIndices, MaxUnpooling, linear_interpolation_matrix


def _np(x):
    return keras.ops.convert_to_numpy(x)


# A 4x4 image worked by hand: the 2x2 windows are [[1,5],[3,4]] (max 5 at top-right, index 1),
# [[2,0],[9,9]] (max 9, first of the tie: bottom-left, index 2), [[0,0],[2,0]] (max 2, index 2)
# and [[7,1],[8,6]] (max 8, index 2).
HAND_IMAGE = np.array([[1, 5, 2, 0], [3, 4, 9, 9], [0, 0, 7, 1], [2, 0, 8, 6]], np.float32)
HAND_POOLED = np.array([[5, 9], [2, 8]], np.float32)
HAND_INDICES = np.array([[1, 2], [2, 2]], np.int32)
HAND_UNPOOLED = np.array([[0, 5, 0, 0], [0, 0, 9, 0], [0, 0, 0, 0], [2, 0, 8, 0]], np.float32)


def test_pooling_and_unpooling_match_the_hand_computed_example():
    pooled, indices = MaxPoolingWithIndices(2)(HAND_IMAGE[None, ..., None])
    np.testing.assert_array_equal(_np(pooled)[0, ..., 0], HAND_POOLED)
    np.testing.assert_array_equal(_np(indices)[0, ..., 0], HAND_INDICES)
    assert _np(indices).dtype == np.int32
    unpooled = MaxUnpooling(2)([pooled, indices])
    np.testing.assert_array_equal(_np(unpooled)[0, ..., 0], HAND_UNPOOLED)


@pytest.mark.parametrize("shape,pool", [((2, 8, 6, 3), 2), ((2, 4, 6, 8, 2), (2, 3, 2))], ids=["2d", "3d"])
def test_pooling_equals_keras_max_pooling_and_unpooling_puts_maxima_back(shape, pool, rng):
    x = rng.normal(size=shape).astype("float32")  # continuous values: no ties
    rank = len(shape) - 2
    pooled, indices = MaxPoolingWithIndices(pool)(x)
    reference = (keras.layers.MaxPooling2D if rank == 2 else keras.layers.MaxPooling3D)(pool)(x)
    np.testing.assert_allclose(_np(pooled), _np(reference))
    unpooled = _np(MaxUnpooling(pool)([pooled, indices]))
    assert unpooled.shape == x.shape
    kept = unpooled != 0
    # Exactly one survivor per window, at the window's maximum, with its original value.
    np.testing.assert_array_equal(unpooled[kept], x[kept])
    window = int(np.prod(pool if isinstance(pool, tuple) else (pool,) * rank))
    assert kept.sum() == x.size // window
    re_pooled = (keras.layers.MaxPooling2D if rank == 2 else keras.layers.MaxPooling3D)(pool)(np.where(kept, x, -1e9))
    np.testing.assert_allclose(_np(re_pooled), _np(pooled))


def test_linear_interpolation_matrix_hand_example_and_rows_sum_to_one():
    np.testing.assert_allclose(linear_interpolation_matrix(2, 2) @ np.array([0.0, 4.0]), [0, 1, 3, 4])
    matrix = linear_interpolation_matrix(5, 3)
    assert matrix.shape == (15, 5)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-6)


def test_linear_upsampling_2d_equals_keras_bilinear(rng):
    x = rng.normal(size=(2, 5, 7, 3)).astype("float32")
    ours = _np(LinearUpSampling(2)(x))
    keras_bilinear = _np(keras.layers.UpSampling2D(2, interpolation="bilinear")(x))
    np.testing.assert_allclose(ours, keras_bilinear, atol=1e-5)


def test_linear_upsampling_3d_is_separable_trilinear(rng):
    x = rng.normal(size=(1, 3, 4, 5, 2)).astype("float32")
    out = _np(LinearUpSampling((2, 2, 3))(x))
    assert out.shape == (1, 6, 8, 15, 2)
    expected = np.einsum("ad,be,cf,ndefk->nabck", linear_interpolation_matrix(3, 2),
                         linear_interpolation_matrix(4, 2), linear_interpolation_matrix(5, 3), x)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    constant = _np(LinearUpSampling(2)(np.full((1, 3, 3, 3, 1), 2.5, np.float32)))
    np.testing.assert_allclose(constant, 2.5, atol=1e-6)  # linear interpolation keeps constants


@pytest.mark.parametrize("shape", [(8, 8, 2), (4, 8, 8, 2)], ids=["2d", "3d"])
def test_segnet_style_model_round_trips_through_keras_file(shape, rng, assert_round_trip):
    rank = len(shape) - 1
    inp = keras.Input(shape)
    x = keras.layers.Conv2D(4, 3, padding="same")(inp) if rank == 2 else keras.layers.Conv3D(4, 3, padding="same")(inp)
    pooled, indices = MaxPoolingWithIndices((2,) * rank)(x)
    up = MaxUnpooling(2)([pooled, indices])
    out = keras.layers.Concatenate()([up, LinearUpSampling(2)(pooled)])
    model = keras.Model(inp, [out, indices])
    loaded = assert_round_trip(model, rng.normal(size=(2, *shape)).astype("float32"))
    layer = next(la for la in loaded.layers if isinstance(la, MaxPoolingWithIndices))
    assert layer.get_config()["pool_size"] == [2] * rank
    assert isinstance(MaxUnpooling.from_config(MaxUnpooling(3).get_config()), MaxUnpooling)
    assert LinearUpSampling.from_config(LinearUpSampling((1, 2)).get_config()).size == (1, 2)


def test_errors_name_the_layer_and_what_was_expected():
    with pytest.raises(ValueError, match="divisible by pool_size"):
        MaxPoolingWithIndices(2)(np.zeros((1, 5, 4, 1), np.float32))
    with pytest.raises(ValueError, match=r"\(B, H, W, C\) or \(B, D, H, W, C\)"):
        LinearUpSampling(2)(np.zeros((1, 4, 1), np.float32))
    with pytest.raises(ValueError, match="pool_size must be a positive int or 2"):
        MaxPoolingWithIndices((2, 2, 2))(np.zeros((1, 4, 4, 1), np.float32))
    with pytest.raises(ValueError, match="indices must have the features' shape"):
        MaxUnpooling(2)([np.zeros((1, 2, 2, 1), np.float32), np.zeros((1, 2, 2, 3), np.int32)])
