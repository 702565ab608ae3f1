"""Training throughput, like for like: the kit's U-Net against MONAI's BasicUNet, the same network.

Both sides are the same architecture: 4 down-samplings, 16-32-64-128-256 channels, two 3x3(x3)
convolutions with batch norm and ReLU per level, max pooling, 2x2(x2) transposed convolutions up,
skip concatenation, a 1x1 head to 4 classes. The kit's ``models.get("unet", depth=4, base_filters=16)``
in Keras/TensorFlow against ``monai.networks.nets.BasicUNet(features=(16, 32, 64, 128, 256, 16),
norm="batch", act="relu", upsample="deconv")`` in PyTorch. Parameter counts are printed for both
(they differ by the conv biases and MONAI's last up-convolution keeping 32 channels: under 0.3 %).
FLOPs come from one counter for both, ``models.flops.conv_flops`` applied to each network's
convolutions (Keras layers, or PyTorch modules seen through forward hooks), times 3 for a training
step (forward, gradient w.r.t. inputs, gradient w.r.t. weights).

Cases: 2D 128x128, batch 16, and 3D 64^3, batch 2; Adam (the kit's, ``training.optim``),
cross-entropy, random data. Every measurement runs in a fresh process, kit and MONAI alternating within each of ``--repeats`` rounds,
so both sides of a ratio see the same load; the table quotes medians, and the kit/MONAI ratio is
the median of the per-round ratios. Each process also times a 2048^2 float32 matmul in its own
framework right after training: achieved GFLOP/s over that rate is the "fraction of matmul" column.
One extra kit step per case is profiled with the TensorFlow profiler, and the op time is split into
convolutions, batch norm, element-wise ops, the optimiser and the rest (where the time that is not
convolution goes).

Run from the repository root::

    python benchmarks/bench_training.py             # 3 rounds, about 10 minutes on 2 cores
    python benchmarks/bench_training.py --quick     # 1 round, 2 steps: a smoke run

MONAI and PyTorch are optional (``pip install -r benchmarks/requirements.txt``); without them the
MONAI rows say "not installed". Writes ``results/benchmarks/training.md`` and ``training.json``.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the repository root

from benchmarks import common  # noqa: E402
from training.config import field, parse_args  # noqa: E402

CHANNELS = (16, 32, 64, 128, 256)  # feature channels per level, kit and MONAI alike
NUM_CLASSES = 4
CASES = {
    "2d": {"shape": (128, 128), "batch": 16},
    "3d": {"shape": (64, 64, 64), "batch": 2},
}
# Profile categories, by the layer name in an op's scope (the kit names its layers "enc0_1_conv",
# "enc0_1_norm", "enc0_1_act", ...; Keras' batch norm is a handful of element-wise ops, so only the
# scope tells it apart), else by the op type after the last ":" of the event name.
_SCOPE_CATEGORIES = (
    ("adam", "optimiser (Adam)"),
    ("_norm", "batch norm"),
    ("_act", "ReLU"),
    ("compile_loss", "loss and softmax"),
    ("probabilities", "loss and softmax"),
    ("_pool", "pooling and concatenation"),
    ("_concat", "pooling and concatenation"),
)


@dataclasses.dataclass
class TrainingBenchConfig:
    """Settings of the training benchmark (every field is a command-line option)."""

    quick: bool = field(False, "smoke run: 1 round, 2 timed steps (noisy)")
    repeats: int = field(3, "interleaved rounds (kit, MONAI, kit, MONAI, ...); medians are quoted")
    steps: int = field(5, "timed training steps per measurement")
    warmup: int = field(2, "untimed steps first (tracing, oneDNN primitive caches)")
    cases: tuple[str, ...] = field(("2d", "3d"), "which inputs to measure", choices=tuple(CASES))
    monai: bool = field(True, "measure MONAI's BasicUNet too (needs monai and torch)")
    profile: bool = field(True, "profile one kit training step per case with the TensorFlow profiler")
    out_dir: str = field("results/benchmarks", "folder for training.md and training.json")


# ------------------------------------------------------------------------------------------ kit
def _kit_model(case: str):
    import models

    spec = CASES[case]
    return models.get("unet", input_shape=(*spec["shape"], 1), num_classes=NUM_CLASSES,
                      depth=len(CHANNELS) - 1, base_filters=CHANNELS[0], norm="batch",
                      upsampling="transpose", activation="relu")


def _kit_batch(case: str):
    import numpy as np

    spec = CASES[case]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(spec["batch"], *spec["shape"], 1)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, size=(spec["batch"], *spec["shape"])).astype("int32")
    return x, y


def kit_worker(case: str, steps: int, warmup: int) -> dict:
    """Samples/s, FLOPs and parameters of the kit's U-Net trained on one fixed random batch."""
    from models.flops import count_flops
    from training import optim

    model = _kit_model(case)
    model.compile(optimizer=optim.get_optimizer("adam", 1e-3), loss="sparse_categorical_crossentropy")
    x, y = _kit_batch(case)
    for _ in range(warmup):
        model.train_on_batch(x, y)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return {"step_seconds": times, "flops_per_sample": count_flops(model, training=True),
            "params": model.count_params(), "matmul_gflops": common.matmul_gflops("tensorflow"),
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "jit_compile": bool(model.jit_compile)}


def _category(scope: str, op_type: str) -> str:
    """The profile category of one op event (see ``_SCOPE_CATEGORIES``)."""
    if "Conv" in op_type:
        return "convolution"
    for key, category in _SCOPE_CATEGORIES:
        if key in scope.lower():
            return category
    return "other"


def kit_profile_worker(case: str, warmup: int) -> dict:
    """Op time of one kit training step by category, from a TensorFlow profiler trace.

    Returns ``{"step_seconds", "op_seconds": {category: s}, "conv_gflops"}``: op seconds add up
    over the inter-op threads (ops run concurrently), so they are read as shares, not wall time.
    """
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    from models.flops import count_flops
    from training import optim

    model = _kit_model(case)
    model.compile(optimizer=optim.get_optimizer("adam", 1e-3), loss="sparse_categorical_crossentropy")
    x, y = _kit_batch(case)
    for _ in range(max(1, warmup)):
        model.train_on_batch(x, y)
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        model.train_on_batch(x, y)
        step = time.perf_counter() - start
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        space.ParseFromString(Path(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)[0]).read_bytes())
    seconds: dict[str, float] = collections.defaultdict(float)
    other: dict[str, float] = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue  # op events live on the executor's compute threads
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" not in name.replace("::", ""):
                    continue  # executor bookkeeping (ExecutorState::Process), not an op
                scope, op_type = name.rsplit(":", 1)
                category = _category(scope, op_type)
                seconds[category] += event.duration_ps / 1e12
                if category == "other":
                    other[op_type] += event.duration_ps / 1e12
    # Op seconds overlap across the compute threads, so the convolutions' wall time is estimated as
    # their share of op time times the step's wall time.
    conv_seconds = step * seconds.get("convolution", 0.0) / max(sum(seconds.values()), 1e-12)
    conv_flops = count_flops(model, training=True) * CASES[case]["batch"]
    return {"step_seconds": step, "op_seconds": dict(seconds), "other_ops": dict(other.most_common(8)),
            "conv_gflops": conv_flops / conv_seconds / 1e9 if conv_seconds else None,
            "matmul_gflops": common.matmul_gflops("tensorflow")}


# ---------------------------------------------------------------------------------------- MONAI
def _torch_flops(net, x) -> int:
    """Training-step FLOPs per sample of a PyTorch network, by the kit's own formula (conv_flops)."""
    import torch

    from models.flops import conv_flops

    total = [0]

    def hook(module, inputs, output):
        kernel = math.prod(module.kernel_size) if hasattr(module, "kernel_size") else 1
        if isinstance(module, torch.nn.modules.conv._ConvTransposeNd):
            positions, ch_in, ch_out = math.prod(inputs[0].shape[2:]), module.in_channels, module.out_channels
        elif isinstance(module, torch.nn.modules.conv._ConvNd):
            positions, ch_in, ch_out = math.prod(output.shape[2:]), module.in_channels, module.out_channels
        else:  # Linear
            positions, ch_in, ch_out = math.prod(inputs[0].shape[1:-1]), module.in_features, module.out_features
        total[0] += conv_flops(positions, ch_in, ch_out, kernel, getattr(module, "groups", 1))

    kinds = (torch.nn.modules.conv._ConvNd, torch.nn.Linear)
    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, kinds)]
    with torch.no_grad():
        net(x[:1])
    for h in handles:
        h.remove()
    return 3 * total[0]


def monai_worker(case: str, steps: int, warmup: int) -> dict | None:
    """Samples/s, FLOPs and parameters of MONAI's BasicUNet (None if monai/torch are missing)."""
    try:
        import monai
        import torch
        from monai.networks.nets import BasicUNet
    except ImportError:
        return None
    torch.manual_seed(0)
    spec = CASES[case]
    net = BasicUNet(spatial_dims=len(spec["shape"]), in_channels=1, out_channels=NUM_CLASSES,
                    features=(*CHANNELS, CHANNELS[0]), norm="batch", act="relu", upsample="deconv")
    x = torch.randn(spec["batch"], 1, *spec["shape"])
    y = torch.randint(0, NUM_CLASSES, (spec["batch"], *spec["shape"]))
    flops = _torch_flops(net, x)
    net.train()
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"step_seconds": times, "flops_per_sample": flops, "params": sum(p.numel() for p in net.parameters()),
            "matmul_gflops": common.matmul_gflops("torch"), "torch_threads": torch.get_num_threads(),
            "versions": f"MONAI {monai.__version__}, PyTorch {torch.__version__}"}


# ----------------------------------------------------------------------------------------- main
def _rates(result: dict, batch: int) -> dict:
    """Samples/s, achieved GFLOP/s and the fraction of the matmul rate of one measurement."""
    seconds = sum(result["step_seconds"])
    samples = batch * len(result["step_seconds"]) / seconds
    gflops = result["flops_per_sample"] * samples / 1e9
    return {"samples_per_s": samples, "gflops": gflops, "matmul_fraction": gflops / result["matmul_gflops"]}


def measure(cfg: TrainingBenchConfig) -> dict:
    """Run the interleaved rounds and the profiles; return every raw measurement."""
    env = {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1")}
    rounds = []
    for r in range(cfg.repeats):
        entry = {}
        for case in cfg.cases:
            kit = common.run_in_fresh_process(kit_worker, case, cfg.steps, cfg.warmup, env=env)
            monai = common.run_in_fresh_process(monai_worker, case, cfg.steps, cfg.warmup, env=env) if cfg.monai else None
            entry[case] = {"kit": kit, "monai": monai, "load_average": common.load_average()}
            print(f"round {r + 1}/{cfg.repeats} {case}: kit {_rates(kit, CASES[case]['batch'])['samples_per_s']:.2f}"
                  + (f", MONAI {_rates(monai, CASES[case]['batch'])['samples_per_s']:.2f}" if monai else "")
                  + " samples/s", flush=True)
        rounds.append(entry)
    profiles = {case: common.run_in_fresh_process(kit_profile_worker, case, cfg.warmup, env=env)
                for case in cfg.cases} if cfg.profile else {}
    return {"rounds": rounds, "profiles": profiles}


def report(cfg: TrainingBenchConfig, raw: dict, info: dict, load_end: list[float]) -> tuple[str, dict]:
    """The Markdown table (and notes) and the summary dict written beside it."""
    lines = [
        "| input | network | parameters | samples/s | GFLOP/step | achieved GFLOP/s | of the 2048^2 matmul rate | kit / MONAI (samples/s) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    summary = {}
    versions = ""
    for case in cfg.cases:
        spec = CASES[case]
        label = f"{len(spec['shape'])}D {'x'.join(map(str, spec['shape']))}, batch {spec['batch']}"
        per_side = {}
        for side in ("kit", "monai"):
            results = [rnd[case][side] for rnd in raw["rounds"] if rnd[case][side] is not None]
            if not results:
                continue
            rates = [_rates(res, spec["batch"]) for res in results]
            per_side[side] = {
                "samples_per_s": common.summarise([x["samples_per_s"] for x in rates]),
                "gflops": common.summarise([x["gflops"] for x in rates]),
                "matmul_fraction": common.summarise([x["matmul_fraction"] for x in rates]),
                "matmul_gflops": common.summarise([res["matmul_gflops"] for res in results]),
                "params": results[0]["params"],
                "gflop_per_step": results[0]["flops_per_sample"] * spec["batch"] / 1e9,
            }
            versions = results[0].get("versions", versions)
        if "monai" in per_side:
            ratios = [_rates(rnd[case]["kit"], spec["batch"])["samples_per_s"]
                      / _rates(rnd[case]["monai"], spec["batch"])["samples_per_s"] for rnd in raw["rounds"]]
            per_side["ratio"] = common.summarise(ratios)
        summary[case] = per_side
        for side, name in (("kit", "kit `unet` (Keras, TensorFlow + oneDNN)"), ("monai", "MONAI `BasicUNet` (PyTorch)")):
            s = per_side.get(side)
            if s is None:
                lines.append(f"| {label} | {name} | | not installed | | | | |")
                continue
            ratio = common.format_range(per_side["ratio"]) + "x" if side == "kit" and "ratio" in per_side else ""
            lines.append(
                f"| {label} | {name} | {s['params']:,} | {common.format_range(s['samples_per_s'])} | {s['gflop_per_step']:.1f} | "
                f"{s['gflops']['median']:.1f} | {s['matmul_fraction']['median']:.0%} of {s['matmul_gflops']['median']:.0f} | {ratio} |"
            )
    notes = [
        "",
        f"Machine: {common.describe_machine(info, load_end)}",
        f"Software: TensorFlow with oneDNN (TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', '1')}), "
        f"no XLA{'; ' + versions if versions else ''}.",
        f"{cfg.repeats} interleaved rounds of {cfg.steps} timed steps (after {cfg.warmup} untimed), one fresh process each; "
        "medians with (min-max); the ratio is the median of per-round ratios. FLOPs: `models.flops.conv_flops` "
        "on both networks' convolutions, x3 for a training step. The matmul rate is measured in each process "
        "right after its training, in its own framework.",
    ]
    for case, prof in raw["profiles"].items():
        total = sum(prof["op_seconds"].values())
        parts = sorted(prof["op_seconds"].items(), key=lambda kv: -kv[1])
        share = ", ".join(f"{k} {v / total:.0%}" for k, v in parts if v / total >= 0.01)
        conv = (f"; the convolutions ran at about {prof['conv_gflops']:.0f} GFLOP/s "
                f"({prof['conv_gflops'] / prof['matmul_gflops']:.0%} of the matmul rate measured next)") if prof.get("conv_gflops") else ""
        notes.append(f"Profile of one kit {case.upper()} step ({prof['step_seconds']:.2f} s wall), share of op time: {share}{conv}.")
        summary.setdefault(case, {})["profile_shares"] = {k: v / total for k, v in parts}
    return "\n".join(lines + notes), summary


def main(argv=None) -> None:
    cfg = parse_args(TrainingBenchConfig, argv, description=__doc__.splitlines()[0])
    if cfg.quick:
        cfg = dataclasses.replace(cfg, repeats=1, steps=2, warmup=1)
    common.run_benchmark("training", cfg, measure, report)


if __name__ == "__main__":
    main()
