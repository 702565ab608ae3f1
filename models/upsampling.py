"""Up-sampling layers: max pooling that remembers where the maxima were, max un-pooling, and linear
(bilinear in 2D, trilinear in 3D) up-sampling.

A decoder can bring a feature map back to a finer grid in three ways (the lecture's "is transposed
convolution necessary?"):

- **max un-pooling** (SegNet): the encoder's :class:`MaxPoolingWithIndices` returns, beside the pooled
  map, the position of each maximum inside its pooling window; :class:`MaxUnpooling` puts every value
  back at that position and zeros elsewhere. No weights; sparse output that a convolution then fills in.
- **transposed convolution** (``keras.layers.Conv2DTranspose`` / ``Conv3DTranspose``): learned weights.
- **linear interpolation** (:class:`LinearUpSampling`): fixed weights, 2D and 3D (Keras'
  ``UpSampling3D`` only repeats voxels). It equals a transposed convolution with a fixed "tent"
  kernel, so a learned transposed convolution can represent it.

Only ``keras.ops`` is used, so the layers run under every Keras backend; all three are registered for
serialisation and round-trip through ``.keras`` files.

Example (a SegNet-style level)::

    pooled, indices = MaxPoolingWithIndices(2)(x)          # (B, H/2, W/2, C), (B, H/2, W/2, C) int32
    ...                                                    # deeper layers, same shape as pooled
    up = MaxUnpooling(2)([features, indices])              # (B, H, W, C)
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import layers, ops


def _as_config(value) -> int | tuple[int, ...]:
    """An int stays an int, a sequence becomes a tuple of ints (what ``get_config`` stores)."""
    return int(value) if isinstance(value, (int, np.integer)) else tuple(int(v) for v in value)


def _sizes(value, rank: int, what: str) -> tuple[int, ...]:
    """An int or ``rank`` ints -> a tuple of ``rank`` positive ints."""
    sizes = (int(value),) * rank if isinstance(value, (int, np.integer)) else tuple(int(v) for v in value)
    if len(sizes) != rank or any(s < 1 for s in sizes):
        raise ValueError(f"{what} must be a positive int or {rank} positive ints; got {value!r}")
    return sizes


def _spatial(shape, layer: str) -> tuple[int, ...]:
    """Static spatial sizes of a channels-last ``(B, *spatial, C)`` shape, for 2D or 3D."""
    rank = len(shape) - 2
    if rank not in (2, 3):
        raise ValueError(f"{layer}: input must be (B, H, W, C) or (B, D, H, W, C); got shape {tuple(shape)}")
    spatial = tuple(shape[1:-1])
    if any(s is None for s in spatial) or shape[-1] is None:
        raise ValueError(f"{layer}: spatial sizes and channels must be known when the layer is built; got {tuple(shape)}")
    return spatial


def _windows_last(x, spatial, channels, pool):
    """``(B, *spatial, C)`` -> ``(B, *spatial / pool, C, prod(pool))``: each pooling window flattened last."""
    rank = len(spatial)
    coarse = [n // p for n, p in zip(spatial, pool)]
    split = [-1]
    for n, p in zip(coarse, pool):
        split += [n, p]
    x = ops.reshape(x, split + [channels])  # (B, n0, p0, n1, p1, [n2, p2,] C)
    order = [0] + [1 + 2 * i for i in range(rank)] + [1 + 2 * rank] + [2 + 2 * i for i in range(rank)]
    x = ops.transpose(x, order)  # (B, n0, n1, [n2,] C, p0, p1, [p2])
    return ops.reshape(x, [-1, *coarse, channels, int(np.prod(pool))])


@keras.saving.register_keras_serializable(package="medkit")
class MaxPoolingWithIndices(layers.Layer):
    """Non-overlapping max pooling that also returns where each maximum was (2D or 3D).

    The index is the maximum's position *inside its own pooling window*, in row-major order of the
    window (for a 2x2 window: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right). TensorFlow's
    ``tf.nn.max_pool_with_argmax`` returns flat indices into the whole input instead; window-local
    indices need no batch or channel offsets and work under every backend. On ties the first
    position wins.

    Args:
        pool_size: int or one int per spatial axis; the stride equals the pool size. Every spatial size
            must be divisible by it (the un-pooling must land on the original grid).

    Call:
        ``x`` ``(B, *spatial, C)`` -> ``[pooled, indices]``: ``pooled`` ``(B, *spatial / pool_size, C)``
        (same dtype as ``x``) and ``indices`` int32 of the same shape, values in ``[0, prod(pool_size))``.
    """

    def __init__(self, pool_size: int | Sequence[int] = 2, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = _as_config(pool_size)

    def build(self, input_shape):
        spatial = _spatial(input_shape, type(self).__name__)
        self._pool = _sizes(self.pool_size, len(spatial), "pool_size")
        bad = [(n, p) for n, p in zip(spatial, self._pool) if n % p]
        if bad:
            raise ValueError(
                f"MaxPoolingWithIndices: spatial sizes {spatial} must be divisible by pool_size {self._pool}"
            )
        self._spatial, self._channels = spatial, int(input_shape[-1])
        self.built = True

    def call(self, x):
        windows = _windows_last(x, self._spatial, self._channels, self._pool)
        return [ops.max(windows, axis=-1), ops.cast(ops.argmax(windows, axis=-1), "int32")]

    def compute_output_shape(self, input_shape):
        spatial = _spatial(input_shape, type(self).__name__)
        pool = _sizes(self.pool_size, len(spatial), "pool_size")
        shape = (input_shape[0], *[n // p for n, p in zip(spatial, pool)], input_shape[-1])
        return [shape, shape]

    def compute_output_spec(self, x):
        shape = self.compute_output_shape(x.shape)[0]
        return [keras.KerasTensor(shape, dtype=x.dtype), keras.KerasTensor(shape, dtype="int32")]

    def get_config(self):
        pool = self.pool_size if isinstance(self.pool_size, int) else list(self.pool_size)
        return {**super().get_config(), "pool_size": pool}


@keras.saving.register_keras_serializable(package="medkit")
class MaxUnpooling(layers.Layer):
    """Max un-pooling (SegNet): every value goes back to where its pooling window's maximum was.

    Args:
        pool_size: the pool size of the :class:`MaxPoolingWithIndices` that made the indices.

    Call:
        ``[x, indices]``: ``x`` ``(B, *coarse, C)`` features and ``indices`` int ``(B, *coarse, C)``
        from :class:`MaxPoolingWithIndices` -> ``(B, *coarse * pool_size, C)``: in each window the
        value at its index, zeros elsewhere.
    """

    def __init__(self, pool_size: int | Sequence[int] = 2, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = _as_config(pool_size)

    def build(self, input_shape):
        shape, index_shape = input_shape
        coarse = _spatial(shape, type(self).__name__)
        if tuple(index_shape[1:]) != tuple(shape[1:]):
            raise ValueError(
                f"MaxUnpooling: indices must have the features' shape {tuple(shape[1:])}; got {tuple(index_shape[1:])}"
            )
        self._pool = _sizes(self.pool_size, len(coarse), "pool_size")
        self._coarse, self._channels = coarse, int(shape[-1])
        self.built = True

    def call(self, inputs):
        x, indices = inputs
        rank, pool = len(self._coarse), self._pool
        window = int(np.prod(pool))
        spread = ops.one_hot(ops.cast(indices, "int32"), window, dtype=x.dtype) * ops.expand_dims(x, -1)
        spread = ops.reshape(spread, [-1, *self._coarse, self._channels, *pool])  # (B, n.., C, p..)
        order = [0]
        for i in range(rank):
            order += [1 + i, 2 + rank + i]  # interleave each coarse axis with its window axis
        spread = ops.transpose(spread, order + [1 + rank])  # (B, n0, p0, n1, p1, [n2, p2,] C)
        return ops.reshape(spread, [-1, *[n * p for n, p in zip(self._coarse, pool)], self._channels])

    def compute_output_shape(self, input_shape):
        shape = input_shape[0]
        coarse = _spatial(shape, type(self).__name__)
        pool = _sizes(self.pool_size, len(coarse), "pool_size")
        return (shape[0], *[n * p for n, p in zip(coarse, pool)], shape[-1])

    def get_config(self):
        pool = self.pool_size if isinstance(self.pool_size, int) else list(self.pool_size)
        return {**super().get_config(), "pool_size": pool}


def linear_interpolation_matrix(n_in: int, factor: int) -> np.ndarray:
    """The ``(n_in * factor, n_in)`` matrix of 1D linear up-sampling with half-pixel centres.

    Output sample ``o`` sits at input coordinate ``(o + 0.5) / factor - 0.5``, clamped to the ends
    (the convention of ``tf.image.resize``, PyTorch ``align_corners=False`` and Keras
    ``UpSampling2D(interpolation="bilinear")``). Example: ``[0, 4]`` up-sampled by 2 is ``[0, 1, 3, 4]``.
    """
    coords = np.clip((np.arange(n_in * factor) + 0.5) / factor - 0.5, 0.0, n_in - 1)
    low = np.floor(coords).astype(int)
    high = np.minimum(low + 1, n_in - 1)
    frac = coords - low
    matrix = np.zeros((n_in * factor, n_in), np.float32)
    np.add.at(matrix, (np.arange(n_in * factor), low), 1.0 - frac)
    np.add.at(matrix, (np.arange(n_in * factor), high), frac)
    return matrix


@keras.saving.register_keras_serializable(package="medkit")
class LinearUpSampling(layers.Layer):
    """Bilinear (2D) or trilinear (3D) up-sampling by integer factors, half-pixel centres.

    Separable: one fixed interpolation matrix (:func:`linear_interpolation_matrix`) per spatial axis,
    applied as a matrix product along that axis. In 2D it equals
    ``keras.layers.UpSampling2D(interpolation="bilinear")``; ``UpSampling3D`` has no linear mode.

    Args:
        size: up-sampling factor, an int or one int per spatial axis.

    Call:
        ``x`` ``(B, *spatial, C)`` -> ``(B, *spatial * size, C)``, same dtype.
    """

    def __init__(self, size: int | Sequence[int] = 2, **kwargs):
        super().__init__(**kwargs)
        self.size = _as_config(size)

    def build(self, input_shape):
        spatial = _spatial(input_shape, type(self).__name__)
        self._size = _sizes(self.size, len(spatial), "size")
        self._matrices = [linear_interpolation_matrix(n, f) for n, f in zip(spatial, self._size)]
        self.built = True

    def call(self, x):
        for axis, matrix in enumerate(self._matrices, start=1):
            if matrix.shape[0] == matrix.shape[1]:
                continue  # factor 1: nothing to do on this axis
            moved = ops.moveaxis(x, axis, -1)
            moved = ops.matmul(moved, ops.cast(ops.transpose(matrix), x.dtype))
            x = ops.moveaxis(moved, -1, axis)
        return x

    def compute_output_shape(self, input_shape):
        spatial = _spatial(input_shape, type(self).__name__)
        size = _sizes(self.size, len(spatial), "size")
        return (input_shape[0], *[n * f for n, f in zip(spatial, size)], input_shape[-1])

    def get_config(self):
        size = self.size if isinstance(self.size, int) else list(self.size)
        return {**super().get_config(), "size": size}
