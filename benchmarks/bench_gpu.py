"""GPU check: mixed precision and XLA against float32, MirroredStrategy, and augmentation on the GPU.

One table, for the 2D U-Net (128x128, batch 16) and the 3D U-Net (64^3, batch 2) of
``bench_training.py``: training samples/s in float32, ``mixed_float16``, float32 with XLA
(``jit_compile=True``) and both, each as a speed-up over float32; the same 2D network under
``tf.distribute.MirroredStrategy`` on every visible GPU (global batch 16 per GPU); and the 3D
augmentation chain of ``bench_augment.py`` (96^3 with labels, with and without elastic) placed on
the GPU. Without a GPU it says so in one line and marks the GPU rows skipped, so it runs anywhere.
Started by ``benchmarks/gpu_check.sh`` (under 5 minutes on one GPU); writes
``results/benchmarks/gpu.md`` and ``gpu.json``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the repository root

from benchmarks import common  # noqa: E402
from benchmarks.bench_augment import CASES as AUG_CASES  # noqa: E402
from benchmarks.bench_augment import kit_chain, make_data  # noqa: E402
from benchmarks.bench_training import CASES, _kit_batch, _kit_model  # noqa: E402
from training.config import field, parse_args  # noqa: E402

VARIANTS = (("float32", False), ("mixed_float16", False), ("float32", True), ("mixed_float16", True))


@dataclasses.dataclass
class GpuCheckConfig:
    """Settings of the GPU check (every field is a command-line option)."""

    steps: int = field(10, "timed training steps per measurement")
    warmup: int = field(3, "untimed steps first (tracing, XLA compilation, autotuning)")
    volumes: int = field(32, "augmented 3D volumes timed per chain")
    out_dir: str = field("results/benchmarks", "folder for gpu.md and gpu.json")


def train_rate(case: str, policy: str, jit: bool, steps: int, warmup: int, strategy=None) -> float:
    """Training samples/s of the kit's U-Net under a precision policy, XLA flag and strategy."""
    import keras
    import numpy as np

    from training import precision

    keras.backend.clear_session()
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    with precision.policy(policy):
        scope = strategy.scope() if strategy is not None else _null()
        with scope:
            model = _kit_model(case)
            # Keras wraps the optimiser in a LossScaleOptimizer itself under mixed_float16.
            model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", jit_compile=jit)
    x, y = _kit_batch(case)
    x, y = np.concatenate([x] * replicas), np.concatenate([y] * replicas)
    for _ in range(warmup):
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        loss = model.train_on_batch(x, y)
    float(np.asarray(loss).ravel()[0])  # wait for the device
    return steps * len(x) / (time.perf_counter() - start)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def augment_rate(case: str, volumes: int) -> float:
    """Volumes/s of the kit's augmentation chain run on the GPU (data already on the device)."""
    import tensorflow as tf

    spec = AUG_CASES[case]
    image, label = make_data(spec["rank"], spec["size"], spec["batch"])
    chain = kit_chain(spec["elastic"])
    with tf.device("/GPU:0"):
        image, label = tf.constant(image), tf.constant(label)
        run = tf.function(lambda s: chain.augment(image, label, s), autograph=False)
        for i in range(2):
            run(tf.constant([i, 0]))[0].numpy()
        batches = max(1, volumes // spec["batch"])
        start = time.perf_counter()
        for i in range(batches):
            out = run(tf.constant([i, 1]))
        out[0].numpy()
    return batches * spec["batch"] / (time.perf_counter() - start)


def main(argv=None) -> None:
    cfg = parse_args(GpuCheckConfig, argv, description=__doc__.splitlines()[0])
    info = common.machine_info()
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
    rows, data = [], {"gpus": names, "training": {}, "mirrored": None, "augment": {}}
    if not gpus:
        print("No GPU visible to TensorFlow: the GPU measurements are skipped (the table says so).", flush=True)
    for case in CASES:
        spec = CASES[case]
        label = f"{len(spec['shape'])}D U-Net {'x'.join(map(str, spec['shape']))}, batch {spec['batch']}"
        base = None
        for policy, jit in VARIANTS:
            name = f"{policy}{' + XLA' if jit else ''}"
            if not gpus:
                rows.append(f"| {label} | {name} | skipped: no GPU | |")
                continue
            rate = train_rate(case, policy, jit, cfg.steps, cfg.warmup)
            base = rate if base is None else base
            data["training"][f"{case} {name}"] = rate
            rows.append(f"| {label} | {name} | {rate:.1f} samples/s | {rate / base:.2f}x |")
            print(rows[-1], flush=True)
    if gpus:
        strategy = tf.distribute.MirroredStrategy()
        single = data["training"]["2d float32"]
        rate = train_rate("2d", "float32", False, cfg.steps, cfg.warmup, strategy=strategy)
        data["mirrored"] = {"replicas": strategy.num_replicas_in_sync, "samples_per_s": rate}
        rows.append(f"| 2D U-Net, MirroredStrategy on {strategy.num_replicas_in_sync} GPU(s), batch 16 per GPU | float32 | "
                    f"{rate:.1f} samples/s | {rate / single:.2f}x of one GPU |")
    else:
        rows.append("| 2D U-Net, MirroredStrategy on the visible GPUs | float32 | skipped: no GPU | |")
    for case in ("3d", "3d-elastic"):
        title = f"augmentation chain on the GPU, {AUG_CASES[case]['title']}"
        if not gpus:
            rows.append(f"| {title} | float32, XLA resampling | skipped: no GPU | |")
            continue
        rate = augment_rate(case, cfg.volumes)
        data["augment"][case] = rate
        rows.append(f"| {title} | float32, XLA resampling | {rate:.1f} volumes/s | |")
    load_end = common.load_average()
    markdown = "\n".join([
        "| what | precision / compilation | throughput | vs float32 |",
        "| --- | --- | ---: | ---: |",
        *rows,
        "",
        f"GPUs: {', '.join(names) if names else 'none visible'}. Host: {common.describe_machine(info, load_end)} "
        f"TensorFlow {tf.__version__}; {cfg.steps} timed steps after {cfg.warmup} untimed.",
    ])
    md, js = common.write_results("gpu", markdown, {"benchmark": "gpu", "config": dataclasses.asdict(cfg), "machine": info,
                                                    "load_average_end": load_end, **data}, cfg.out_dir)
    print("\n" + markdown + f"\n\nWritten to {md} and {js}")


if __name__ == "__main__":
    main()
