"""Build every registered model in a small configuration and run one forward pass.

Run as a script under a chosen Keras backend (``KERAS_BACKEND=jax python tests/models/_backend_forward.py``);
prints one JSON object ``{model name: "ok" | error message}`` on the last line of stdout.
Used by ``test_backends.py``; not collected by pytest (no ``test_`` prefix).
"""

import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.getcwd())

import keras  # noqa: E402
import numpy as np  # noqa: E402

import models  # noqa: E402
from models.registry import get_spec  # noqa: E402

# Small configurations for models registered without an ``example`` (merged over their defaults).
FALLBACK = {
    "vit_b16": dict(input_shape=(32, 32, 1), num_classes=2),
    "cnn_lstm": dict(input_shape=(4, 16, 16, 1)),
    "voxelmorph": dict(input_shape=(16, 16, 16, 1)),
    "affine_registration": dict(input_shape=(16, 16, 16, 1)),
}


def _inputs(model, rng):
    arrays = []
    for tensor in model.inputs:
        shape = [2] + [16 if s is None else s for s in tensor.shape[1:]]
        dtype = keras.backend.standardize_dtype(tensor.dtype)
        if "int" in dtype:
            arrays.append(np.zeros(shape, dtype))
        else:
            arrays.append(rng.normal(size=shape).astype(dtype))
    return arrays[0] if len(arrays) == 1 else arrays


def check(name):
    spec = get_spec(name)
    kwargs = spec.small_kwargs() if spec.example else {**spec.defaults, **FALLBACK.get(name, {})}
    model = models.get(name, **kwargs)
    outputs = model(_inputs(model, np.random.default_rng(0)), training=False)
    for y in keras.tree.flatten(outputs):
        y = keras.ops.convert_to_numpy(y)
        if not np.all(np.isfinite(y)):
            return "non-finite output"
    keras.backend.clear_session()
    return "ok"


def main(names):
    results = {}
    for name in names or models.list_models():
        start = time.time()
        try:
            results[name] = check(name)
        except Exception as error:  # report every failure, not just the first
            results[name] = f"{type(error).__name__}: {error}"[:300]
            traceback.print_exc(file=sys.stderr)
        print(
            f"{name}: {results[name][:60]} ({time.time() - start:.1f} s)",
            file=sys.stderr,
            flush=True,
        )
    print(json.dumps({"backend": keras.backend.backend(), "results": results}))


if __name__ == "__main__":
    main(sys.argv[1:])
