"""Training throughput of the kit's U-Net on CPU: samples/s and achieved GFLOP/s.

Measures, in one run, for a 2D U-Net (128x128, batch 16) and a 3D U-Net (64^3, batch 2):
  * the kit's Keras U-Net with TensorFlow's oneDNN kernels on and off, with and without XLA
    (``jit_compile``),
  * MONAI's ``UNet`` in PyTorch with the same channels (skipped cleanly if monai/torch are absent),
  * a large float32 matmul in the same process, as the machine's practical peak.

Each configuration runs in its own process (oneDNN is chosen when TensorFlow is imported) and the
configurations are interleaved over ``--repeats`` rounds; the table reports the best round, because
a shared machine only ever makes a run slower. Run from the repository root::

    python benchmarks/bench_training.py            # full table (~5 min on 2 cores)
    python benchmarks/bench_training.py --quick    # fewer steps, for a smoke test

The Markdown table is printed and written to ``results/benchmarks/training.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as a script from the repository root
CHANNELS = (16, 32, 64, 128, 256)  # U-Net feature channels per level, kit and MONAI alike
NUM_CLASSES = 4
CASES = {
    "2d": {"shape": (128, 128), "batch": 16},
    "3d": {"shape": (64, 64, 64), "batch": 2},
}


def _matmul_gflops(framework: str, n: int = 2048, repeats: int = 10) -> float:
    """Achieved GFLOP/s of an n x n float32 matmul (the machine's practical dense peak)."""
    if framework == "torch":
        import torch

        a, b = torch.randn(n, n), torch.randn(n, n)
        (a @ b).sum().item()
        start = time.perf_counter()
        for _ in range(repeats):
            c = a @ b
        c.sum().item()
    else:
        import tensorflow as tf

        a, b = tf.random.normal((n, n)), tf.random.normal((n, n))
        matmul = tf.function(lambda x, y: tf.matmul(x, y))
        matmul(a, b).numpy()
        start = time.perf_counter()
        for _ in range(repeats):
            c = matmul(a, b)
        c.numpy()
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def _keras_worker(case: str, jit: bool, steps: int) -> dict:
    import keras
    import numpy as np

    import models
    from models.flops import count_flops

    spec = CASES[case]
    shape, batch = spec["shape"], spec["batch"]
    model = models.get("unet", input_shape=(*shape, 1), num_classes=NUM_CLASSES, depth=len(CHANNELS) - 1, base_filters=CHANNELS[0])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", jit_compile=jit)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, *shape, 1)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, size=(batch, *shape)).astype("int32")
    for _ in range(3):  # warm-up: tracing, XLA compilation, oneDNN primitive caches
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    seconds = time.perf_counter() - start
    flops_per_sample = count_flops(model, training=True)
    return {"samples_per_s": steps * batch / seconds, "gflops": flops_per_sample * steps * batch / seconds / 1e9,
            "matmul_gflops": _matmul_gflops("tf")}


def _monai_worker(case: str, steps: int) -> dict:
    import torch
    from monai.networks.nets import UNet
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    spec = CASES[case]
    shape, batch = spec["shape"], spec["batch"]
    net = UNet(spatial_dims=len(shape), in_channels=1, out_channels=NUM_CLASSES, channels=CHANNELS,
               strides=(2,) * (len(CHANNELS) - 1), num_res_units=2, norm="batch")
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.randn(batch, 1, *shape)
    y = torch.randint(0, NUM_CLASSES, (batch, *shape))

    def step():
        optimizer.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        optimizer.step()

    with FlopCounterMode(display=False) as counter:  # forward + backward FLOPs of one step
        step()
    flops_per_step = counter.get_total_flops()
    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    return {"samples_per_s": steps * batch / seconds, "gflops": flops_per_step * steps / seconds / 1e9,
            "matmul_gflops": _matmul_gflops("torch")}


def _run_worker(config: dict, steps: int) -> dict | None:
    """Run one configuration in a fresh process and return its measurements (None if skipped)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": config.get("onednn", "1")}
    cmd = [sys.executable, __file__, "--worker", json.dumps(config), "--steps", str(steps)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if proc.returncode == 3:
        return None  # optional framework not installed
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker {config} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _configurations() -> list[dict]:
    configs = []
    for case in CASES:
        configs += [
            {"case": case, "framework": "keras", "onednn": "1", "jit": False, "label": "kit U-Net, oneDNN on"},
            {"case": case, "framework": "keras", "onednn": "0", "jit": False, "label": "kit U-Net, oneDNN off"},
            {"case": case, "framework": "keras", "onednn": "1", "jit": True, "label": "kit U-Net, oneDNN on + XLA"},
            {"case": case, "framework": "monai", "label": "MONAI UNet (PyTorch)"},
        ]
    return configs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps, one round (smoke test)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds; the best is reported")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per configuration")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        config = json.loads(args.worker)
        if config["framework"] == "monai":
            try:
                import monai  # noqa: F401
                import torch

                torch.set_num_threads(os.cpu_count() or 1)
            except ImportError:
                sys.exit(3)
            result = _monai_worker(config["case"], args.steps)
        else:
            result = _keras_worker(config["case"], config["jit"], args.steps)
        print(json.dumps(result))
        return

    steps = args.steps or (3 if args.quick else 10)
    repeats = 1 if args.quick else args.repeats
    best: dict[int, dict | None] = {}
    configs = _configurations()
    for _ in range(repeats):
        for i, config in enumerate(configs):
            result = _run_worker(config, steps)
            if result is None:
                best[i] = None
            elif best.get(i) is None or result["samples_per_s"] > best[i]["samples_per_s"]:
                best[i] = result

    lines = [
        f"Training throughput on {os.cpu_count()} CPU cores ({steps} timed steps, best of {repeats} interleaved rounds).",
        "",
        "| input | configuration | samples/s | achieved GFLOP/s | fraction of matmul peak | vs MONAI (GFLOP/s) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for case in CASES:
        monai_index = next(i for i, c in enumerate(configs) if c["case"] == case and c["framework"] == "monai")
        monai = best.get(monai_index)
        for i, config in enumerate(configs):
            if config["case"] != case:
                continue
            spec = CASES[case]
            label = f"{'x'.join(map(str, spec['shape']))}, batch {spec['batch']}"
            r = best.get(i)
            if r is None:
                lines.append(f"| {label} | {config['label']} | skipped (not installed) | | | |")
                continue
            ratio = f"{r['gflops'] / monai['gflops']:.2f}x" if monai else "n/a"
            lines.append(
                f"| {label} | {config['label']} | {r['samples_per_s']:.1f} | {r['gflops']:.1f} | "
                f"{r['gflops'] / r['matmul_gflops']:.0%} of {r['matmul_gflops']:.0f} | {ratio} |"
            )
    table = "\n".join(lines)
    print(table)
    out = REPO_ROOT / "results" / "benchmarks" / "training.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table + "\n")


if __name__ == "__main__":
    main()
