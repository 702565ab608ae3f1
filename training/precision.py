"""Mixed precision as a switch: compute in 16 bits, keep weights (and the loss) in 32 bits.

::

    from training import precision
    precision.set_policy("auto")          # mixed_float16 on a GPU, float32 elsewhere
    model = build_model()                  # layers built now pick up the policy
    optimizer = precision.wrap_optimizer(keras.optimizers.Adam(1e-3))   # loss scaling for float16
    ...
    precision.set_policy("float32")       # back to full precision

- ``mixed_float16``: GPUs with tensor cores (Volta and later). float16 has a small range, so small
  gradients underflow to zero; a ``keras.optimizers.LossScaleOptimizer`` multiplies the loss before
  ``tape.gradient`` (``optimizer.scale_loss``) and divides the gradients back, skipping steps whose
  gradients overflowed. ``model.compile`` wraps the optimiser itself; a custom ``train_step`` or the
  explicit loop must use ``wrap_optimizer`` and ``optimizer.scale_loss(loss)``.
- ``mixed_bfloat16``: same range as float32, so no loss scaling. Fast on TPUs, recent GPUs and CPUs
  with AVX512-BF16/AMX (see :func:`cpu_supports_bf16`); on CPUs without them it emulates bfloat16
  and is slower. Measure before choosing it (:func:`measure_training_throughput`). Measured on a
  2-core AVX512-BF16 cloud CPU (TF 2.21, oneDNN on), training :func:`small_conv_net` with batch 16,
  in samples per CPU-second (wall-clock was too noisy on a shared machine): 64x64 float32 280,
  mixed_bfloat16 460 (1.6x); 128x128 float32 72, mixed_bfloat16 136 (1.9x). XLA
  (``jit_compile=True``) was 0.55x float32 on that CPU: XLA's CPU convolutions do not use oneDNN.
  ``set_policy("auto", cpu_bf16=True)`` picks bfloat16 on such CPUs; plain ``"auto"`` keeps
  float32 there, because bfloat16's 8-bit mantissa changes results (about 3 significant digits).

Build models AFTER setting the policy: a layer reads the global policy when it is created. Keep the
model's last activation in float32 (the kit's models do: ``Activation(..., dtype="float32")``).
"""

from __future__ import annotations

import contextlib
import time

import keras

POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")


def gpu_available() -> bool:
    """True if TensorFlow sees at least one GPU."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def cpu_supports_bf16() -> bool:
    """True if this CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX-BF16 flags, Linux only)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_policy(name: str, cpu_bf16: bool = False) -> str:
    """Turn ``"auto"`` into a concrete policy name and check the others.

    ``"auto"`` is ``mixed_float16`` when a GPU is visible; otherwise ``mixed_bfloat16`` if
    ``cpu_bf16`` is true and the CPU has bfloat16 instructions, else ``float32`` (bfloat16 on a CPU
    is opt-in: it changes results and helps only on some CPUs).

    Raises:
        ValueError: for a name that is not ``"auto"`` or one of :data:`POLICIES`.
    """
    if name == "auto":
        if gpu_available():
            return "mixed_float16"
        return "mixed_bfloat16" if cpu_bf16 and cpu_supports_bf16() else "float32"
    if name not in POLICIES:
        raise ValueError(f"precision policy must be 'auto' or one of {POLICIES}; got {name!r}")
    return name


def set_policy(name: str = "auto", cpu_bf16: bool = False) -> str:
    """Set Keras' global dtype policy (affects layers created afterwards).

    Args:
        name: ``"auto"``, ``"float32"``, ``"mixed_float16"`` or ``"mixed_bfloat16"``.
        cpu_bf16: let ``"auto"`` choose ``mixed_bfloat16`` on CPUs with bfloat16 instructions.

    Returns:
        The policy name now in force.
    """
    name = resolve_policy(name, cpu_bf16=cpu_bf16)
    keras.mixed_precision.set_global_policy(name)
    return name


def disable() -> None:
    """Back to full precision (``float32``) for layers created from now on."""
    keras.mixed_precision.set_global_policy("float32")


def current_policy() -> str:
    """The global policy's name, e.g. ``"float32"``."""
    return keras.mixed_precision.global_policy().name


@contextlib.contextmanager
def policy(name: str):
    """Context manager: layers created inside use ``name``; the previous policy returns afterwards."""
    previous = current_policy()
    try:
        yield set_policy(name)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def needs_loss_scaling(name: str | None = None) -> bool:
    """True for ``mixed_float16`` (the only policy whose gradients can underflow)."""
    return (name or current_policy()) == "mixed_float16"


def wrap_optimizer(optimizer, policy_name: str | None = None):
    """Wrap ``optimizer`` in a ``LossScaleOptimizer`` when the policy is ``mixed_float16``.

    Args:
        optimizer: a ``keras.optimizers.Optimizer`` (or its name).
        policy_name: default the global policy.

    Returns:
        The optimiser to use in a custom step: call ``optimizer.scale_loss(loss)`` inside the tape
        and ``optimizer.apply_gradients`` as usual (it unscales, and skips non-finite steps).
    """
    optimizer = keras.optimizers.get(optimizer)
    if needs_loss_scaling(policy_name) and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def small_conv_net(input_shape=(64, 64, 1), num_classes: int = 2, width: int = 32) -> keras.Model:
    """A 4-conv classifier for precision/throughput comparisons (created under the current policy)."""
    inputs = keras.Input(input_shape)
    x = inputs
    for i in range(4):
        x = keras.layers.Conv2D(width * 2 ** min(i, 2), 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes)(x)
    outputs = keras.layers.Activation("softmax", dtype="float32")(outputs)
    return keras.Model(inputs, outputs, name="small_conv_net")


def measure_training_throughput(
    policy_name: str,
    input_shape=(64, 64, 1),
    batch_size: int = 16,
    steps: int = 20,
    warmup: int = 3,
    jit_compile: bool = False,
    seed: int = 0,
    clock: str = "wall",
) -> float:
    """Training samples per second of :func:`small_conv_net` under ``policy_name`` on random data.

    Args:
        policy_name: as for :func:`set_policy`.
        input_shape: one sample's shape ``(H, W, C)``.
        batch_size: samples per step.
        steps: timed steps (after ``warmup`` untimed ones, which include tracing).
        jit_compile: compile the step with XLA.
        seed: seed of the random data and weights.
        clock: ``"wall"`` (what you wait for) or ``"cpu"`` (this process's CPU seconds: steadier on
            a machine shared with other jobs, but blind to idle waiting).

    Returns:
        Samples per second (float).
    """
    import numpy as np

    clocks = {"wall": time.perf_counter, "cpu": time.process_time}
    if clock not in clocks:
        raise ValueError(f"clock must be one of {sorted(clocks)}; got {clock!r}")
    timer = clocks[clock]

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch_size, *input_shape)).astype("float32")
    y = rng.integers(0, 2, size=(batch_size,)).astype("int32")
    with policy(policy_name):
        keras.utils.set_random_seed(seed)
        model = small_conv_net(input_shape)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=jit_compile)
    for _ in range(warmup):
        model.train_on_batch(x, y)
    start = timer()
    for _ in range(steps):
        model.train_on_batch(x, y)
    elapsed = timer() - start
    return steps * batch_size / elapsed
