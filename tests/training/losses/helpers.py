"""Helpers shared by the loss tests."""

import numpy as np
from keras import ops


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype("float32")



def to_numpy(x):
    return np.asarray(ops.convert_to_numpy(x))
