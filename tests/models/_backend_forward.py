"""Build registered models in a small configuration, run one forward pass, and compare backends.

Run as a script under a chosen Keras backend; prints one JSON object on the last line of stdout:
``{"backend": ..., "results": {model name: "ok" | error message}}``.

- ``KERAS_BACKEND=tensorflow python tests/models/_backend_forward.py --save DIR [names]``: the
  reference. For each model, its initial weights (``DIR/<name>.weights.h5``), the inputs and the
  outputs (``DIR/<name>.npz``) are written.
- ``KERAS_BACKEND=jax python tests/models/_backend_forward.py --reference DIR [names]``: builds the
  same models, loads the reference weights, runs the reference inputs and compares the outputs
  with TensorFlow's numerically (float32 round-off allowed, nothing more).

Used by ``test_backends.py``; not collected by pytest (no ``test_`` prefix).
"""

import argparse
import json
import os
import sys
import time
import traceback

if __name__ == "__main__":  # run as a script from the repository root
    sys.path.insert(0, os.getcwd())

import models  # noqa: E402, I001  (first: the kit's TensorFlow settings, as in every kit program)
from models.registry import get_spec  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

# Outputs agree when |ours - tensorflow| <= TOLERANCE * (1 + max |tensorflow|): float32 kernels of
# different backends sum in other orders, which moves the last few bits through deep networks.
TOLERANCE = 1e-3


def _inputs(model, rng):
    arrays = []
    for tensor in model.inputs:
        shape = [2] + [16 if s is None else s for s in tensor.shape[1:]]
        dtype = keras.backend.standardize_dtype(tensor.dtype)
        if "int" in dtype:
            arrays.append(np.zeros(shape, dtype))
        else:
            arrays.append(rng.normal(size=shape).astype(dtype))
    return arrays


def _forward(model, arrays):
    inputs = arrays[0] if len(arrays) == 1 else arrays
    if keras.backend.backend() == "jax":
        # Eager JAX compiles every operation for every new shape (seconds of CPU per model); one
        # compiled inference step per model is 2x faster. TensorFlow and PyTorch are faster eagerly.
        outputs = model.predict_on_batch(inputs)
    else:
        outputs = model(inputs, training=False)
    return [np.asarray(keras.ops.convert_to_numpy(y)) for y in keras.tree.flatten(outputs)]


def check(name, save=None, reference=None):
    model = models.get(name, **get_spec(name).small_kwargs())
    if reference is not None:
        model.load_weights(os.path.join(reference, f"{name}.weights.h5"))
        stored = np.load(os.path.join(reference, f"{name}.npz"))
        arrays = [stored[f"in_{i}"] for i in range(int(stored["num_inputs"]))]
    else:
        arrays = _inputs(model, np.random.default_rng(0))
    outputs = _forward(model, arrays)
    if not all(np.all(np.isfinite(y)) for y in outputs):
        return "non-finite output"
    if save is not None:
        # A model that samples at inference (e.g. a VAE's latent) cannot be compared value for value.
        deterministic = all(np.array_equal(a, b) for a, b in zip(outputs, _forward(model, arrays)))
        model.save_weights(os.path.join(save, f"{name}.weights.h5"))
        np.savez(os.path.join(save, f"{name}.npz"), num_inputs=len(arrays), deterministic=deterministic,
                 **{f"in_{i}": a for i, a in enumerate(arrays)}, **{f"out_{i}": y for i, y in enumerate(outputs)})
    if reference is not None and bool(stored["deterministic"]):
        for i, y in enumerate(outputs):
            ref = stored[f"out_{i}"]
            if y.shape != ref.shape:
                return f"output {i} has shape {y.shape}, TensorFlow's {ref.shape}"
            error = float(np.max(np.abs(y - ref))) if y.size else 0.0
            if error > TOLERANCE * (1.0 + float(np.max(np.abs(ref)))):
                return f"output {i} differs from TensorFlow's by {error:.3g} (max |value| {np.max(np.abs(ref)):.3g})"
    keras.backend.clear_session()
    return "ok"


def _skip_random_initialisation():
    """Make every Keras initialiser return zeros from NumPy.

    Used when the reference weights are loaded over the initial ones anyway: under JAX each random
    initialiser compiles a program per variable shape (seconds per model on 2 CPU cores), which is
    most of the time of a JAX check and tests nothing.
    """
    def zeros(self, shape, dtype=None):
        return np.zeros(shape, keras.backend.standardize_dtype(dtype or "float32"))

    classes = [keras.initializers.Initializer]
    while classes:
        cls = classes.pop()
        if "__call__" in vars(cls):
            cls.__call__ = zeros
        classes.extend(cls.__subclasses__())


def check_all(names, save=None, reference=None) -> dict:
    """``{name: "ok" | error}`` for each model (every registered one if ``names`` is empty)."""
    results = {}
    for name in names or models.list_models():
        start = time.time()
        try:
            results[name] = check(name, save, reference)
        except Exception as error:  # report every failure, not just the first
            results[name] = f"{type(error).__name__}: {error}"[:300]
            traceback.print_exc(file=sys.stderr)
        print(f"{name}: {results[name][:60]} ({time.time() - start:.1f} s)", file=sys.stderr, flush=True)
    return results


def main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--save", help="write the reference weights, inputs and outputs here")
    parser.add_argument("--reference", help="compare with the reference written here")
    parser.add_argument("names", nargs="*")
    args = parser.parse_args(argv)
    if args.reference:
        _skip_random_initialisation()
    results = check_all(args.names, args.save, args.reference)
    print(json.dumps({"backend": keras.backend.backend(), "results": results}))


if __name__ == "__main__":
    main(sys.argv[1:])
