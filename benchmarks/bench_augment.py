"""Augmentation throughput: the kit's tf.data chain against MONAI configured for speed, same chain.

The chain, with labels, every step with probability 1 except the flips (0.5 per axis): random flip
per axis, random affine (rotation +-15 degrees per axis, scale +-10 %, translation +-8 voxels,
reflection padding, image linear and label nearest), optionally elastic deformation (MONAI
``Rand3DElastic`` ranges: sigma 5-7 voxels, magnitude 50-150), bias field (degree 3, coefficients
0-0.1), gamma 0.7-1.5, Gaussian noise (std up to 0.1).

- *kit*: ``data_utils.augment.Compose(..., jit_compile=True)`` mapped over a batched ``tf.data``
  pipeline (batch 2 in 3D) with ``apply_to_dataset``; flip, affine and elastic fused into one
  resampling of image and label.
- *MONAI*: the dictionary transforms as a MONAI user would set them up for speed:
  ``set_track_meta(False)`` (plain tensors, no metadata), ``RandAffined(cache_grid=True,
  spatial_size=...)``, or with elastic ``Rand3DElasticd(spatial_size=...)`` carrying the same
  affine ranges so that MONAI also resamples once; ``RandFlipd`` per axis, ``RandBiasFieldd``,
  ``RandAdjustContrastd``, ``RandGaussianNoised``; one sample at a time (MONAI's design), float
  labels (as ``LoadImaged`` gives), torch on the same cores.

Each measurement runs in a fresh process, kit and MONAI alternating in each of ``--repeats``
rounds; the table quotes medians and the median of the per-round ratios. The 2D 256^2 slices with the
same chain are measured in every round too; once at the end: sliding-window inference of a 256x256x128
volume, and the time of each piece of the kit's 3D chain alone (where the time goes).

Run from the repository root::

    python benchmarks/bench_augment.py           # 3 rounds, about 5 minutes on 2 idle cores
    python benchmarks/bench_augment.py --quick   # 1 round, fewer volumes: a smoke run

MONAI and PyTorch are optional (``pip install -r benchmarks/requirements.txt``). Writes
``results/benchmarks/augment.md`` and ``augment.json``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the repository root

from benchmarks import common  # noqa: E402
from training.config import field, parse_args  # noqa: E402

ROTATION = math.radians(15)  # +-15 degrees per axis
SCALE, TRANSLATION = 0.10, 8.0  # +-10 %, +-8 voxels
ELASTIC_SIGMA, ELASTIC_MAGNITUDE = (5.0, 7.0), (50.0, 150.0)  # MONAI Rand3DElastic ranges
GAMMA, NOISE_STD = (0.7, 1.5), 0.1
N_DISTINCT = 4  # distinct volumes in memory (the pipelines cycle over them)
CASES = {
    "3d": {"rank": 3, "size": 96, "batch": 2, "elastic": False, "title": "3D 96^3 + label"},
    "3d-elastic": {"rank": 3, "size": 96, "batch": 2, "elastic": True, "title": "3D 96^3 + label, with elastic"},
    "2d": {"rank": 2, "size": 256, "batch": 32, "elastic": False, "title": "2D 256^2 + label"},
}
SW_VOLUME, SW_WINDOW = (256, 256, 128), (96, 96, 96)


@dataclasses.dataclass
class AugmentBenchConfig:
    """Settings of the augmentation benchmark (every field is a command-line option)."""

    quick: bool = field(False, "smoke run: 1 round, fewer samples (noisy)")
    repeats: int = field(3, "interleaved rounds (kit, MONAI, kit, ...); medians are quoted")
    volumes: int = field(16, "3D volumes timed per measurement (2D: 16x as many slices); MONAI gets 1/2 (2D: 1/8)")
    cases: tuple[str, ...] = field(("3d", "3d-elastic", "2d"), "chains to measure", choices=tuple(CASES))
    cores: int = field(2, "CPU cores each side may use (torch threads, TensorFlow pools, affinity)")
    monai: bool = field(True, "measure MONAI too (needs monai and torch)")
    sliding_window: bool = field(True, "also time sliding-window inference of a 256x256x128 volume")
    breakdown: bool = field(True, "also time each piece of the kit's 3D chain alone (where the time goes)")
    out_dir: str = field("results/benchmarks", "folder for augment.md and augment.json")


def pin_cores(cores: int) -> None:
    """Restrict this process (and the thread pools it starts later) to ``cores`` CPU cores."""
    os.environ["OMP_NUM_THREADS"] = str(cores)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cores])


def make_data(rank: int, size: int, n: int, seed: int = 0):
    """``n`` images ``(n, *spatial, 1)`` float32 with labelled boxes ``(n, *spatial)`` int32."""
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
def kit_chain(elastic: bool):
    """The benchmark chain as a kit ``Compose`` (XLA-compiled resampling)."""
    from data_utils import augment

    steps = [augment.Flip(prob=0.5), augment.Affine(rotation=ROTATION, scale=SCALE, translation=TRANSLATION)]
    if elastic:
        steps.append(augment.Elastic(sigma=ELASTIC_SIGMA, magnitude=ELASTIC_MAGNITUDE))
    steps += [augment.BiasField(), augment.Gamma(gamma_range=GAMMA), augment.GaussianNoise(std=NOISE_STD)]
    return augment.Compose(steps, jit_compile=True)


def kit_worker(case: str, count: int, cores: int) -> dict:
    """Samples/s of the kit's chain mapped over a batched tf.data pipeline."""
    pin_cores(cores)
    import tensorflow as tf

    from data_utils import augment

    tf.config.threading.set_intra_op_parallelism_threads(cores)
    tf.config.threading.set_inter_op_parallelism_threads(cores)
    spec = CASES[case]
    image, label = make_data(spec["rank"], spec["size"], N_DISTINCT)
    ds = tf.data.Dataset.from_tensor_slices({"image": image, "label": label}).repeat().batch(spec["batch"])
    ds = augment.apply_to_dataset(ds, kit_chain(spec["elastic"]), seed=0).prefetch(2)
    it = iter(ds)
    for _ in range(2):  # tracing and XLA compilation
        next(it)["image"].numpy()
    # While the first batch compiled, the parallel map and the prefetch buffer computed batches
    # ahead; drain them untimed, so that only steady-state work is timed (else the rate is inflated).
    for _ in range(4 + 2 * cores):
        next(it)["image"].numpy()
    batches = max(1, count // spec["batch"])
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        el = next(it)
        el["image"].numpy(), el["label"].numpy()
    samples = batches * spec["batch"]
    return {"samples_per_s": samples / (time.perf_counter() - start), "samples": samples,
            "cpu_ms_per_sample": 1000 * (time.process_time() - cpu) / samples, "version": f"TensorFlow {tf.__version__}"}


def breakdown_worker(cores: int, batches: int = 6, size: int | None = None) -> dict:
    """Milliseconds per batch of each piece of the kit's 3D chain, each timed alone (median of ``batches``).

    The pieces are what ``Compose(..., jit_compile=True)`` runs for one batch of two 96^3 volumes
    with labels: the random draws of flip and affine, the elastic field (drawn and smoothed at
    coarse resolution, then upsampled in its own XLA program), the XLA resampling of image and
    label without and with the elastic field, each intensity step, and the whole chain. ``size``
    replaces the 96 voxels per axis (tests use a small one).
    """
    pin_cores(cores)
    import statistics

    import tensorflow as tf

    from data_utils import augment
    from data_utils.augment import spatial as aug_spatial

    tf.config.threading.set_intra_op_parallelism_threads(cores)
    tf.config.threading.set_inter_op_parallelism_threads(cores)
    spec = CASES["3d-elastic"]
    size = size or spec["size"]
    shape = [size] * spec["rank"]
    image, label = (tf.constant(a) for a in make_data(spec["rank"], size, spec["batch"]))
    batch = spec["batch"]
    flip_step = augment.Flip(prob=0.5)
    affine_step = augment.Affine(rotation=ROTATION, scale=SCALE, translation=TRANSLATION)
    elastic_step = augment.Elastic(sigma=ELASTIC_SIGMA, magnitude=ELASTIC_MAGNITUDE)
    graph = lambda f: tf.function(f, autograph=False)  # noqa: E731 - graph mode, as in tf.data
    draw_matrices = graph(lambda s: [flip_step.draw_transform(s, batch, shape)[1],
                                     affine_step.draw_transform(s, batch, shape)[1]])
    field = graph(lambda s: aug_spatial.realize_for_xla(elastic_step.draw_transform(s, batch, shape), shape)[1])
    seed = tf.constant([1, 2])
    matrices = [("affine", m) for m in draw_matrices(seed)]
    displacement = ("displacement", field(seed))
    pieces = {
        "flip + affine draws": lambda: draw_matrices(seed),
        "elastic field (draw, smooth, upsample)": lambda: field(seed),
        "resampling, flip + affine": lambda: aug_spatial._resample_xla(image, label, matrices, "reflection", "linear"),
        "resampling, flip + affine + elastic": lambda: aug_spatial._resample_xla(
            image, label, matrices + [displacement], "reflection", "linear"),
    }
    for step in kit_chain(False).transforms[2:]:
        run = graph(lambda x, s, step=step: step(x, s))
        pieces[type(step).__name__] = lambda run=run: run(image, seed)
    for elastic in (False, True):
        chain = kit_chain(elastic)
        run = graph(lambda x, y, s, chain=chain: chain.augment(x, y, s))
        pieces["whole chain" + (" with elastic" if elastic else "")] = lambda run=run: run(image, label, seed)
    times = {name: [] for name in pieces}
    for fn in pieces.values():  # trace and compile
        tf.nest.map_structure(lambda t: t.numpy(), fn())
    for _ in range(batches):  # interleaved, so that every piece sees the same load
        for name, fn in pieces.items():
            start = time.perf_counter()
            tf.nest.map_structure(lambda t: t.numpy(), fn())
            times[name].append(1000 * (time.perf_counter() - start))
    return {name: statistics.median(v) for name, v in times.items()}


# ----------------------------------------------------------------------------------------- MONAI
def monai_chain(rank: int, size: int, elastic: bool):
    """The benchmark chain as MONAI dictionary transforms, set up for speed (see the module doc)."""
    from monai import transforms as T

    keys = ["image", "label"]
    geometry = dict(rotate_range=(ROTATION,) * (1 if rank == 2 else 3), scale_range=(SCALE,) * rank,
                    translate_range=(TRANSLATION,) * rank, mode=("bilinear", "nearest"),
                    padding_mode="reflection", prob=1.0, spatial_size=(size,) * rank)
    steps = [T.RandFlipd(keys, prob=0.5, spatial_axis=a) for a in range(rank)]
    if elastic:
        # MONAI's fastest form: its elastic transform applies the affine in the same resampling.
        steps.append(T.Rand3DElasticd(keys, sigma_range=ELASTIC_SIGMA, magnitude_range=ELASTIC_MAGNITUDE, **geometry))
    else:
        steps.append(T.RandAffined(keys, cache_grid=True, **geometry))
    steps += [
        T.RandBiasFieldd("image", prob=1.0, degree=3, coeff_range=(0.0, 0.1)),
        T.RandAdjustContrastd("image", gamma=GAMMA, prob=1.0),
        T.RandGaussianNoised("image", prob=1.0, std=NOISE_STD),
    ]
    chain = T.Compose(steps)
    chain.set_random_state(seed=0)
    return chain


def monai_worker(case: str, count: int, cores: int) -> dict | None:
    """Samples/s of MONAI's chain, one channel-first sample at a time (None if not installed)."""
    pin_cores(cores)
    try:
        import monai
        import numpy as np
        import torch
        from monai.data import set_track_meta
    except ImportError:
        return None
    torch.set_num_threads(cores)
    set_track_meta(False)
    spec = CASES[case]
    image, label = make_data(spec["rank"], spec["size"], N_DISTINCT)
    samples = [{"image": torch.from_numpy(np.moveaxis(image[i], -1, 0).copy()),
                "label": torch.from_numpy(label[i][None].astype("float32"))} for i in range(N_DISTINCT)]
    chain = monai_chain(spec["rank"], spec["size"], spec["elastic"])
    chain(dict(samples[0]))  # warm up (and fill RandAffined's grid cache)
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        out = chain(dict(samples[i % N_DISTINCT]))
        out["image"].numpy(), out["label"].numpy()
    return {"samples_per_s": count / (time.perf_counter() - start), "samples": count,
            "cpu_ms_per_sample": 1000 * (time.process_time() - cpu) / count,
            "version": f"MONAI {monai.__version__}, PyTorch {torch.__version__}"}


# --------------------------------------------------------------------------------- sliding window
def sliding_window_worker(cores: int) -> dict:
    """Wall time and resident-memory growth of sliding-window inference (fresh process)."""
    import resource

    pin_cores(cores)
    import keras
    import numpy as np
    import tensorflow as tf

    from data_utils.inference import sliding_window_inference

    inputs = keras.Input((*SW_WINDOW, 1))
    x = keras.layers.Conv3D(8, 3, padding="same", activation="relu")(inputs)
    net = keras.Model(inputs, keras.layers.Conv3D(4, 1, activation="softmax", dtype="float32")(x))
    # Plain graph mode: XLA on CPU runs Conv3D far slower than oneDNN.
    predict = tf.function(lambda x: net(x, training=False))
    volume = np.random.default_rng(0).random((1, *SW_VOLUME, 1)).astype("float32")
    predict(volume[:, :96, :96, :96])
    predict(volume[:, :96, :96, :96].repeat(2, axis=0))
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    # Poll the resident memory while inference runs: its rise is what inference itself needs.
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
    return {"seconds": seconds, "increase_mib": (peak[0] - base) / 2**20, "out_mib": out.nbytes / 2**20,
            "input_mib": volume.nbytes / 2**20, "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# ------------------------------------------------------------------------------------------ main
def measure(cfg: AugmentBenchConfig) -> dict:
    """Interleaved rounds of every case (kit, then MONAI), then the sliding-window run."""
    env = {"TF_CPP_MIN_LOG_LEVEL": "2"}
    rounds = []
    for r in range(cfg.repeats):
        entry = {}
        for case in cfg.cases:
            count = cfg.volumes * (16 if CASES[case]["rank"] == 2 else 1)
            kit = common.run_in_fresh_process(kit_worker, case, count, cfg.cores, env=env)
            # MONAI runs 10-70x slower: fewer samples give it the same timing precision in far less time.
            monai_count = max(4, count // (8 if CASES[case]["rank"] == 2 else 2))
            monai = (common.run_in_fresh_process(monai_worker, case, monai_count, cfg.cores, env=env)
                     if cfg.monai else None)
            entry[case] = {"kit": kit, "monai": monai, "load_average": common.load_average()}
            unit = "images/s" if CASES[case]["rank"] == 2 else "volumes/s"
            print(f"round {r + 1}/{cfg.repeats}, {CASES[case]['title']}: kit {kit['samples_per_s']:.2f} {unit}"
                  + (f", MONAI {monai['samples_per_s']:.2f} {unit}, "
                     f"kit/MONAI {kit['samples_per_s'] / monai['samples_per_s']:.1f}x" if monai else "")
                  + f" (load {entry[case]['load_average'][0]:.1f})", flush=True)
        rounds.append(entry)
    sw = common.run_in_fresh_process(sliding_window_worker, cfg.cores, env=env) if cfg.sliding_window else None
    parts = common.run_in_fresh_process(breakdown_worker, cfg.cores, env=env) if cfg.breakdown else None
    return {"rounds": rounds, "sliding_window": sw, "breakdown": parts}


def report(cfg: AugmentBenchConfig, raw: dict, info: dict, load_end: list[float]) -> tuple[str, dict]:
    """The Markdown table (and notes) and the summary written beside it."""
    lines = ["| chain | kit tf.data + XLA | MONAI (no metadata, cached grid) | kit / MONAI |", "| --- | ---: | ---: | ---: |"]
    summary, versions = {}, set()
    for case in cfg.cases:
        unit = "images/s" if CASES[case]["rank"] == 2 else "volumes/s"
        row = {}
        for side in ("kit", "monai"):
            values = [rnd[case][side]["samples_per_s"] for rnd in raw["rounds"] if rnd[case][side]]
            versions.update(rnd[case][side]["version"] for rnd in raw["rounds"] if rnd[case][side])
            row[side] = common.summarise(values) if values else None
        if row["monai"]:
            row["ratio"] = common.summarise([rnd[case]["kit"]["samples_per_s"] / rnd[case]["monai"]["samples_per_s"]
                                             for rnd in raw["rounds"]])
        summary[case] = row

        def cell(s, unit=unit):
            if s is None:
                return "not installed"
            spread = f" ({s['min']:.1f}-{s['max']:.1f})" if s["n"] > 1 else ""
            return f"{s['median']:.1f} {unit}{spread}"

        cpu = {side: [rnd[case][side]["cpu_ms_per_sample"] for rnd in raw["rounds"]
                      if rnd[case][side] and "cpu_ms_per_sample" in rnd[case][side]] for side in ("kit", "monai")}
        if cpu["kit"] and len(cpu["kit"]) == len(cpu["monai"]):
            row["cpu_ms_per_sample"] = {side: common.summarise(v) for side, v in cpu.items()}
            row["cpu_ratio"] = common.summarise([m / k for k, m in zip(cpu["kit"], cpu["monai"], strict=True)])
        ratio = row.get("ratio")
        ratio_text = f"**{ratio['median']:.1f}x** ({ratio['min']:.1f}-{ratio['max']:.1f})" if ratio else ""
        lines.append(f"| {CASES[case]['title']} | {cell(row['kit'])} | {cell(row['monai'])} | {ratio_text} |")
    notes = [
        "",
        f"Machine: {common.describe_machine(info, load_end)} {cfg.cores} cores per side.",
        f"Software: {'; '.join(sorted(versions))}. {cfg.repeats} interleaved rounds, one fresh process per "
        "measurement; medians with (min-max), the ratio is the median of per-round ratios.",
    ]
    cpu_rows = [(case, summary[case]) for case in cfg.cases if "cpu_ratio" in summary[case]]
    if cpu_rows:
        # Wall-clock rates depend on the share of a busy machine each process gets; CPU time does much less.
        notes.append("CPU time per sample (all threads, what a loaded machine changes least): " + "; ".join(
            f"{CASES[case]['title']}: kit {row['cpu_ms_per_sample']['kit']['median']:.0f} ms, MONAI "
            f"{row['cpu_ms_per_sample']['monai']['median']:.0f} ms, MONAI / kit **{row['cpu_ratio']['median']:.1f}x** "
            f"({row['cpu_ratio']['min']:.1f}-{row['cpu_ratio']['max']:.1f})" for case, row in cpu_rows) + ".")
    sw = raw.get("sliding_window")
    if sw:
        notes.append(
            f"Sliding-window inference, {'x'.join(map(str, SW_VOLUME))} volume, {SW_WINDOW[0]}^3 windows, overlap 0.25, "
            f"Gaussian blending, 2 windows per batch, a 2-layer Conv3D net (4 classes): {sw['seconds']:.1f} s; resident "
            f"memory rose by {sw['increase_mib']:.0f} MiB during inference (input {sw['input_mib']:.0f} MiB, 4-class output "
            f"{sw['out_mib']:.0f} MiB; whole-process peak {sw['max_rss_mib']:.0f} MiB).")
        summary["sliding_window"] = sw
    parts = raw.get("breakdown")
    if parts:
        notes.append("Where the kit's 3D time goes (one batch of two 96^3 volumes with labels, each piece timed alone, "
                     "medians in ms per batch): " + "; ".join(f"{name} {ms:.0f}" for name, ms in parts.items()) + ".")
        summary["breakdown_ms_per_batch"] = parts
    return "\n".join(lines + notes), summary


def main(argv=None) -> None:
    cfg = parse_args(AugmentBenchConfig, argv, description=__doc__.splitlines()[0])
    if cfg.quick:
        cfg = dataclasses.replace(cfg, repeats=1, volumes=8)
    common.run_benchmark("augment", cfg, measure, report)


if __name__ == "__main__":
    main()
