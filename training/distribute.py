"""Choosing a ``tf.distribute`` strategy and scaling losses so results do not depend on replicas.

Three situations, one function::

    strategy = get_strategy()              # 1 device -> default strategy (no-op scope)
                                           # >= 2 GPUs -> MirroredStrategy over all of them
                                           # TF_CONFIG with >= 2 workers -> MultiWorkerMirroredStrategy
    strategy = get_strategy(num_cpu_replicas=2)   # teaching/tests: 2 logical CPU devices, mirrored

Build the model and optimizer inside ``with strategy.scope():``.

Loss scaling, the one rule to remember: each replica sees ``global_batch / num_replicas`` samples and
the gradients of all replicas are SUMMED. So every replica must divide its summed per-sample loss by
the GLOBAL batch size (``compute_average_loss``), not by its local batch size. Then the summed
gradient equals the gradient of the mean loss over the global batch, exactly as on one device.

Keras 3 already does this for you in one place: a ``keras.losses.*`` object with the default
reduction (``"sum_over_batch_size"``) called inside a replica returns ``local_mean / num_replicas``.
So in a custom ``train_step``:

- loss from a ``keras.losses`` object (``keras.losses.BinaryCrossentropy()(y, p)``): already scaled;
  take gradients of it directly, and report ``loss * num_replicas()`` as the metric;
- loss you reduced yourself (``keras.ops.mean(...)``): scale it with ``scale_for_replicas(loss)``
  before taking gradients (or build it with ``compute_average_loss`` from per-sample values);
- ``sum(model.losses)`` (weight penalties): ``scale_for_replicas`` too (``tf.nn.scale_regularization_loss``).

On one replica all of these helpers return their input unchanged.
"""

from __future__ import annotations

import json
import os
import socket

import tensorflow as tf


# --------------------------------------------------------------------------------------------
# Devices and cluster description
# --------------------------------------------------------------------------------------------
def configure_cpu_devices(num_devices: int) -> list:
    """Split the physical CPU into ``num_devices`` logical devices (for teaching and tests).

    Must run before TensorFlow initialises its devices, i.e. before any op, tensor, model or
    strategy is created in this process. Calling it again with the same number is harmless.

    Args:
        num_devices: number of logical CPU devices wanted (>= 1).

    Returns:
        The list of logical CPU devices, e.g. ``[LogicalDevice('/device:CPU:0'), ...]``.

    Raises:
        ValueError: if ``num_devices < 1``.
        RuntimeError: if TensorFlow is already initialised with a different number of CPU devices.
    """
    if int(num_devices) < 1:
        raise ValueError(f"num_devices must be >= 1; got {num_devices}")
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(int(num_devices))]
        )
    except RuntimeError as err:
        # Already initialised: fine if it already has the wanted split.
        existing = tf.config.list_logical_devices("CPU")
        if len(existing) != int(num_devices):
            raise RuntimeError(
                f"configure_cpu_devices({num_devices}) must be called before TensorFlow creates any "
                f"tensor, model or strategy; this process already has {len(existing)} logical CPU "
                "device(s). Call it first thing in your script (or run the check in a subprocess)."
            ) from err
    return tf.config.list_logical_devices("CPU")


def tf_config_workers(tf_config: str | None = None) -> list[str]:
    """Worker addresses named by the ``TF_CONFIG`` environment variable (or the given JSON).

    Args:
        tf_config: JSON text; defaults to ``os.environ["TF_CONFIG"]`` (absent -> no workers).

    Returns:
        e.g. ``["127.0.0.1:12345", "127.0.0.1:12346"]``; ``[]`` when there is no cluster.

    Raises:
        ValueError: if the text is not JSON with a ``cluster`` dictionary.
    """
    text = os.environ.get("TF_CONFIG", "") if tf_config is None else tf_config
    if not text.strip():
        return []
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON: {text[:200]!r}") from err
    if not isinstance(config, dict) or not isinstance(config.get("cluster", {}), dict):
        raise ValueError(f"TF_CONFIG must be a JSON object with a 'cluster' dictionary; got {text[:200]!r}")
    cluster = config.get("cluster", {})
    return list(cluster.get("worker", [])) + list(cluster.get("chief", []))


def make_tf_config(worker_addresses: list[str], index: int) -> str:
    """The ``TF_CONFIG`` JSON for worker ``index`` of a cluster of ``worker_addresses``.

    Args:
        worker_addresses: ``"host:port"`` of every worker, the same list on every worker.
        index: this worker's position in that list (worker 0 is the chief: it writes files).

    Returns:
        JSON text to put in ``os.environ["TF_CONFIG"]`` before calling ``get_strategy()``.
    """
    if not 0 <= index < len(worker_addresses):
        raise ValueError(f"index must be in [0, {len(worker_addresses)}); got {index}")
    return json.dumps(
        {"cluster": {"worker": list(worker_addresses)}, "task": {"type": "worker", "index": int(index)}}
    )


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports that are free on ``host`` right now (for local multi-worker runs)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


# --------------------------------------------------------------------------------------------
# Strategy selection
# --------------------------------------------------------------------------------------------
def get_strategy(num_cpu_replicas: int | None = None, verbose: bool = False) -> tf.distribute.Strategy:
    """The distribution strategy that fits this machine (see the module docstring for the rules).

    Order of choice:
    1. ``TF_CONFIG`` names >= 2 workers -> ``MultiWorkerMirroredStrategy`` (one process per worker;
       all of them must call this, each with its own ``task.index``).
    2. ``num_cpu_replicas >= 2`` -> split the CPU into that many logical devices and mirror over
       them (teaching/tests; must be called before TensorFlow initialises).
    3. >= 2 visible GPUs -> ``MirroredStrategy`` over all of them.
    4. otherwise -> the default strategy (one device, ``scope()`` does nothing).

    Args:
        num_cpu_replicas: ask for a mirrored run over this many logical CPU devices.
        verbose: print which strategy was chosen and its replica count.

    Returns:
        A ``tf.distribute.Strategy``; ``strategy.num_replicas_in_sync`` is the number of replicas.
    """
    workers = tf_config_workers()
    if len(workers) >= 2:
        # RING all-reduce works on CPU and GPU alike; NCCL (AUTO's choice on GPU) needs GPUs on every worker.
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.AUTO
            if tf.config.list_physical_devices("GPU")
            else tf.distribute.experimental.CommunicationImplementation.RING
        )
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    elif num_cpu_replicas is not None and int(num_cpu_replicas) >= 2:
        devices = configure_cpu_devices(int(num_cpu_replicas))
        strategy = tf.distribute.MirroredStrategy(
            devices=[d.name for d in devices[: int(num_cpu_replicas)]],
            # The default NCCL all-reduce needs GPUs; on CPU devices sum through host memory.
            cross_device_ops=tf.distribute.ReductionToOneDevice(),
        )
    elif len(tf.config.list_physical_devices("GPU")) >= 2:
        strategy = tf.distribute.MirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    if verbose:
        print(f"[distribute] {type(strategy).__name__} with {strategy.num_replicas_in_sync} replica(s)")
    return strategy


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """True on the one process that should write files and print progress (worker 0, or single-process)."""
    strategy = strategy or tf.distribute.get_strategy()
    # MultiWorkerMirroredStrategy answers True only on the chief; one-process strategies always do.
    return bool(strategy.extended.should_checkpoint)


# --------------------------------------------------------------------------------------------
# Loss scaling
# --------------------------------------------------------------------------------------------
def num_replicas() -> int:
    """Replicas summing gradients in the current context (1 outside any strategy)."""
    return int(tf.distribute.get_strategy().num_replicas_in_sync)


def compute_average_loss(per_sample_loss, global_batch_size: int | None = None, sample_weight=None):
    """Sum of per-sample losses on this replica divided by the GLOBAL batch size.

    Summing this over replicas (which is what gradient all-reduce does) gives the mean over the
    global batch, so training does not depend on the number of replicas.

    Args:
        per_sample_loss: ``(B_local,)`` or ``(B_local, ...)`` losses; extra axes are averaged first.
        global_batch_size: samples per step over all replicas; default ``B_local * num_replicas``.
        sample_weight: optional ``(B_local,)`` weights multiplied in before summing.

    Returns:
        Scalar float tensor.
    """
    per_sample_loss = tf.convert_to_tensor(per_sample_loss)
    if per_sample_loss.shape.rank is not None and per_sample_loss.shape.rank > 1:
        per_sample_loss = tf.reduce_mean(per_sample_loss, axis=list(range(1, per_sample_loss.shape.rank)))
    return tf.nn.compute_average_loss(
        per_sample_loss, sample_weight=sample_weight, global_batch_size=global_batch_size
    )


def scale_for_replicas(loss):
    """Turn a local mean loss into this replica's share of the global mean (``loss / num_replicas``).

    Use for losses you reduced yourself with a mean over the local batch, and for ``sum(model.losses)``.
    Do NOT use on the output of ``keras.losses`` objects: Keras 3 already scaled those.
    """
    n = num_replicas()
    loss = tf.convert_to_tensor(loss)
    return loss if n == 1 else loss * tf.cast(1.0 / n, loss.dtype)


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Tell multi-worker runs to split in-memory datasets by element (there are no files to split by)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
