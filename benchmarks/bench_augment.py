"""Augmentation throughput: the kit's tf.data chain against MONAI's dictionary transforms.

Measures, in one run and on the same cores (2 by default):
- volumes/s of a typical 3D chain on 96^3 volumes with labels (flip, random affine with rotation
  +-15 degrees, scale +-10 % and translation, bias field, gamma, Gaussian noise), with and without
  elastic deformation, for the kit (``data_utils.augment`` on ``tf.data``, fused resampling under
  XLA) and for MONAI (``monai.transforms`` dictionary transforms; skipped if monai/torch are absent);
- 2D throughput (256x256 slices) for both;
- sliding-window inference time and peak memory for a 256x256x128 volume.

Run from the repository root:  python benchmarks/bench_augment.py [--quick] [--cores 2]
Writes the Markdown table to results/benchmarks/augment.md and prints it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import threading
import time

SIZE_3D = 96  # side of the 3D volumes
SIZE_2D = 256  # side of the 2D slices
N_DISTINCT = 4  # distinct volumes in memory (the pipeline cycles over them)
BATCH_3D, BATCH_2D = 2, 32
VOLUMES_3D = 24  # volumes timed per 3D measurement (quick: 8)
IMAGES_2D = 512  # slices timed per 2D measurement (quick: 128)
ROTATION = 15 * 3.14159265 / 180  # +-15 degrees
SCALE, TRANSLATION = 0.10, 8.0  # +-10 %, +-8 voxels
ELASTIC_SIGMA, ELASTIC_MAGNITUDE = (5.0, 7.0), (50.0, 150.0)  # MONAI Rand3DElastic ranges
SW_VOLUME, SW_WINDOW = (256, 256, 128), (96, 96, 96)
OUT_PATH = os.path.join("results", "benchmarks", "augment.md")


def pin_cores(cores: int) -> None:
    """Restrict this process (and the thread pools started later) to `cores` CPU cores."""
    os.environ["OMP_NUM_THREADS"] = str(cores)
    if hasattr(os, "sched_setaffinity"):
        available = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, available[:cores])


def make_data(rank: int, size: int, n: int, seed: int = 0):
    """`n` images (n, *spatial, 1) float32 with labelled boxes (n, *spatial) int32."""
    import numpy as np

    rng = np.random.default_rng(seed)
    shape = (n,) + (size,) * rank
    label = np.zeros(shape, "int32")
    for i in range(n):
        for cls in (1, 2, 3):
            lo = rng.integers(size // 8, size // 2, rank)
            hi = lo + rng.integers(size // 8, size // 3, rank)
            label[(i, *[slice(a, b) for a, b in zip(lo, hi, strict=True)])] = cls
    image = (label * 0.3 + rng.normal(0.0, 0.05, shape)).astype("float32")[..., None]
    return image, label


# ------------------------------------------------------------------------------------------- kit


def kit_chain(rank: int, elastic: bool, jit: bool = True):
    from data_utils import augment

    steps = [
        augment.Flip(prob=0.5),
        augment.Affine(rotation=ROTATION, scale=SCALE, translation=TRANSLATION),
    ]
    if elastic:
        steps.append(augment.Elastic(sigma=ELASTIC_SIGMA, magnitude=ELASTIC_MAGNITUDE))
    steps += [augment.BiasField(), augment.Gamma(gamma_range=(0.7, 1.5)), augment.GaussianNoise(std=0.1)]
    return augment.Compose(steps, jit_compile=jit)


def bench_kit(rank: int, elastic: bool, size: int, batch: int, count: int, jit: bool = True) -> float:
    """Samples/s of the kit's chain mapped over a batched tf.data pipeline."""
    import tensorflow as tf

    from data_utils import augment

    image, label = make_data(rank, size, N_DISTINCT)
    ds = tf.data.Dataset.from_tensor_slices({"image": image, "label": label}).repeat().batch(batch)
    ds = augment.apply_to_dataset(ds, kit_chain(rank, elastic, jit), seed=0).prefetch(2)
    it = iter(ds)
    for _ in range(2):  # warm up: tracing and XLA compilation
        next(it)["image"].numpy()
    n_batches = max(1, count // batch)
    start = time.perf_counter()
    for _ in range(n_batches):
        el = next(it)
        el["image"].numpy(), el["label"].numpy()
    return n_batches * batch / (time.perf_counter() - start)


# ----------------------------------------------------------------------------------------- MONAI


def monai_chain(rank: int, elastic: bool, lazy: bool):
    from monai import transforms as T

    keys = ["image", "label"]
    steps = [T.RandFlipd(keys, prob=0.5, spatial_axis=a) for a in range(rank)]
    rotate = (ROTATION,) * (1 if rank == 2 else 3)
    geometry = dict(rotate_range=rotate, scale_range=(SCALE,) * rank, translate_range=(TRANSLATION,) * rank,
                    mode=("bilinear", "nearest"), padding_mode="reflection", prob=1.0)
    if elastic and rank == 3:
        # MONAI's best case: its elastic transform applies the affine in the same resampling.
        steps.append(T.Rand3DElasticd(keys, sigma_range=ELASTIC_SIGMA, magnitude_range=ELASTIC_MAGNITUDE,
                                      **geometry))
    elif elastic:
        steps.append(T.Rand2DElasticd(keys, spacing=(32, 32), magnitude_range=(1.0, 2.0), **geometry))
    else:
        steps.append(T.RandAffined(keys, **geometry))
    steps += [
        T.RandBiasFieldd("image", prob=1.0),
        T.RandAdjustContrastd("image", gamma=(0.7, 1.5), prob=1.0),
        T.RandGaussianNoised("image", prob=1.0, std=0.1),
    ]
    chain = T.Compose(steps, lazy=lazy)
    chain.set_random_state(seed=0)
    return chain


def bench_monai(rank: int, elastic: bool, size: int, count: int, lazy: bool) -> float:
    """Samples/s of MONAI's equivalent dictionary chain, channel-first, one sample at a time."""
    import numpy as np
    import torch
    from monai.data import MetaTensor

    image, label = make_data(rank, size, N_DISTINCT)
    # Lazy mode needs MetaTensors with a voxel affine (as LoadImaged gives); the eager chain gets
    # plain tensors, which skips MONAI's metadata tracking and is its fastest form.
    affine = torch.eye(rank + 1, dtype=torch.float64)

    def wrap(array):
        tensor = torch.from_numpy(array.copy())
        return MetaTensor(tensor, affine=affine) if lazy else tensor

    samples = [{"image": wrap(np.moveaxis(image[i], -1, 0)), "label": wrap(label[i][None])}
               for i in range(N_DISTINCT)]
    chain = monai_chain(rank, elastic, lazy)
    chain(dict(samples[0]))  # warm up
    start = time.perf_counter()
    for i in range(count):
        out = chain(dict(samples[i % N_DISTINCT]))
        out["image"].numpy() if hasattr(out["image"], "numpy") else out["image"]
    return count / (time.perf_counter() - start)


# --------------------------------------------------------------------------- sliding window


def _sliding_window_worker(cores: int, queue) -> None:
    """Run in a fresh process so its peak memory (max RSS) is the inference's own."""
    import resource

    pin_cores(cores)
    import keras
    import numpy as np

    from data_utils.inference import sliding_window_inference

    inputs = keras.Input((*SW_WINDOW, 1))
    x = keras.layers.Conv3D(8, 3, padding="same", activation="relu")(inputs)
    outputs = keras.layers.Conv3D(4, 1, activation="softmax", dtype="float32")(x)
    net = keras.Model(inputs, outputs)
    import tensorflow as tf

    # Plain graph mode: XLA on CPU runs Conv3D about 10x slower than oneDNN here.
    predict = tf.function(lambda x: net(x, training=False))
    volume = np.random.default_rng(0).random((1, *SW_VOLUME, 1)).astype("float32")
    predict(volume[:, :96, :96, :96])  # build and compile outside the timing
    predict(volume[:, :96, :96, :96].repeat(2, axis=0))

    # Poll the resident memory while inference runs: the peak above the starting point is what
    # sliding-window inference itself needs (ru_maxrss would include model compilation).
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    base, peak, running = rss(), [0], [True]

    def poll():
        while running[0]:
            peak[0] = max(peak[0], rss())
            time.sleep(0.01)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    start = time.perf_counter()
    out = sliding_window_inference(volume, predict, SW_WINDOW, overlap=0.25, batch_size=2)
    seconds = time.perf_counter() - start
    running[0] = False
    watcher.join()
    queue.put({"seconds": seconds, "peak_mib": peak[0] / 2**20, "increase_mib": (peak[0] - base) / 2**20,
               "out_mib": out.nbytes / 2**20, "input_mib": volume.nbytes / 2**20,
               "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def bench_sliding_window(cores: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_sliding_window_worker, args=(cores, queue))
    proc.start()
    result = queue.get(timeout=900)
    proc.join()
    return result


# ------------------------------------------------------------------------------------------ main


def write_atomic(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run, noisier)")
    parser.add_argument("--cores", type=int, default=2, help="CPU cores to use (default 2)")
    parser.add_argument("--no-monai", action="store_true", help="skip the MONAI column")
    args = parser.parse_args()
    pin_cores(args.cores)
    load_start = os.getloadavg()[0]
    sys.path.insert(0, os.getcwd())
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.cores)
    tf.config.threading.set_inter_op_parallelism_threads(args.cores)
    count3, count2 = (8, 128) if args.quick else (VOLUMES_3D, IMAGES_2D)

    have_monai = False
    if not args.no_monai:
        try:
            import monai  # noqa: F401
            import torch

            torch.set_num_threads(args.cores)
            have_monai = True
        except ImportError:
            print("monai/torch not installed: the MONAI column is skipped (pip install monai torch).")

    rows = []
    cases = [("3D 96^3 + label", 3, SIZE_3D, BATCH_3D, count3, False),
             ("3D 96^3 + label, with elastic", 3, SIZE_3D, BATCH_3D, count3, True),
             ("2D 256^2 + label", 2, SIZE_2D, BATCH_2D, count2, False)]
    for name, rank, size, batch, count, elastic in cases:
        kit = bench_kit(rank, elastic, size, batch, count)
        kit_graph = bench_kit(rank, elastic, size, batch, max(batch, count // 2), jit=False)
        row = {"case": name, "kit": kit, "kit_graph": kit_graph}
        if have_monai:
            m_count = max(4, min(count // 3, 24 if rank == 2 else count))
            row["monai"] = bench_monai(rank, elastic, size, m_count, lazy=False)
            row["monai_lazy"] = None if elastic else bench_monai(rank, elastic, size, m_count, lazy=True)
        rows.append(row)
        print(json.dumps(row), flush=True)
    sw = bench_sliding_window(args.cores)
    print(json.dumps(sw), flush=True)

    unit = lambda r: "images/s" if r["case"].startswith("2D") else "volumes/s"  # noqa: E731
    lines = [
        f"Augmentation throughput on {args.cores} CPU cores ({platform.processor() or platform.machine()}, "
        f"TensorFlow {tf.__version__}"
        + (f", MONAI {__import__('monai').__version__}, torch {__import__('torch').__version__}" if have_monai else "")
        + "). Chain: flip, affine (rotation +-15 deg, scale +-10 %, translation +-8 vox), bias field, "
          "gamma, Gaussian noise; all with probability 1 except flips (0.5 per axis); label nearest.",
        "",
        "| chain | kit tf.data + XLA | kit tf.data, no XLA | MONAI | MONAI lazy (MetaTensor) | kit / best MONAI |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        monai_vals = [v for v in (r.get("monai"), r.get("monai_lazy")) if v]
        best = max(monai_vals) if monai_vals else None
        fmt = lambda v, r=r: "skipped" if v is None else f"{v:.1f} {unit(r)}"  # noqa: E731
        lines.append(
            f"| {r['case']} | {fmt(r['kit'])} | {fmt(r['kit_graph'])} | "
            f"{fmt(r.get('monai')) if have_monai else 'skipped'} | "
            f"{(fmt(r.get('monai_lazy')) if r.get('monai_lazy') else 'n/a') if have_monai else 'skipped'} | "
            f"{(r['kit'] / best) if best else float('nan'):.1f}x |"
        )
    lines += [
        "",
        f"Sliding-window inference, {SW_VOLUME[0]}x{SW_VOLUME[1]}x{SW_VOLUME[2]} volume, {SW_WINDOW[0]}^3 windows, "
        f"overlap 0.25, Gaussian blending, 2 windows per batch, a 2-layer Conv3D net (4 classes): "
        f"{sw['seconds']:.1f} s; resident memory rose by {sw['increase_mib']:.0f} MiB during inference "
        f"(the input volume is {sw['input_mib']:.0f} MiB, the 4-class output {sw['out_mib']:.0f} MiB; "
        f"whole-process peak including TensorFlow start-up and tracing {sw['max_rss_mib']:.0f} MiB).",
        "",
        f"Load average (1 min) at start and end of the run: {load_start:.1f}, {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} logical CPUs (other work on the machine slows both columns alike).",
        "",
        "Command: `python benchmarks/bench_augment.py" + (" --quick" if args.quick else "") + "`",
    ]
    text = "\n".join(lines) + "\n"
    write_atomic(OUT_PATH, text)
    print("\n" + text)
    print(f"Written to {OUT_PATH}")


if __name__ == "__main__":
    main()
