"""What every benchmark shares: the machine it ran on, fresh worker processes, and its result files.

A benchmark figure means little without the CPU (its vector ISA decides what oneDNN and XLA can do)
and the load at the time (a shared machine slows everything, PyTorch more than TensorFlow), so each
benchmark records both with :func:`machine_info` and writes its Markdown table and a JSON file of
every raw measurement with :func:`write_results`. Frameworks that read their settings at import time
(TensorFlow's ``TF_ENABLE_ONEDNN_OPTS``, thread pools) are measured in a fresh process each, with
:func:`run_in_fresh_process`, interleaved round by round so that both sides of a ratio see the same load.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import statistics
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from data_utils.io import atomic_write

REPO_ROOT = Path(__file__).resolve().parents[1]
MATMUL_SIZE = 2048  # the dense float32 matmul whose rate stands for the machine's practical peak


def cpu_isa(flags: Sequence[str]) -> str:
    """The widest x86 vector ISA among the ``/proc/cpuinfo`` ``flags`` ("AVX-512", "AVX2", ...)."""
    flags = set(flags)
    if "avx512f" in flags:
        return "AVX-512" + (" with BF16" if "avx512_bf16" in flags else "")
    for flag, name in (("avx2", "AVX2"), ("avx", "AVX"), ("sse4_2", "SSE4.2")):
        if flag in flags:
            return name
    return platform.machine() or "unknown"


def _cpuinfo(path: str = "/proc/cpuinfo") -> tuple[str, list[str]]:
    """(model name, flags) of the first CPU in ``path``; the platform's names where it is missing."""
    model, flags = None, []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model is None:
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = value.split()
    except OSError:
        pass
    return model or platform.processor() or platform.machine() or "unknown CPU", flags


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (what ``uptime`` prints), rounded to 0.01."""
    return [round(v, 2) for v in os.getloadavg()]


def machine_info(cpuinfo: str = "/proc/cpuinfo") -> dict[str, Any]:
    """The CPU model, its ISA, the cores this process may use and the load now.

    Args:
        cpuinfo: the file to read the CPU model and flags from.

    Returns:
        A JSON-ready dict with ``cpu``, ``isa``, ``logical_cpus``, ``usable_cpus``, ``load_average``
        (1/5/15 min), ``platform`` and ``python``.
    """
    model, flags = _cpuinfo(cpuinfo)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": model,
        "isa": cpu_isa(flags),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "load_average": load_average(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def describe_machine(info: dict[str, Any], load_end: Sequence[float] | None = None) -> str:
    """One Markdown line naming the CPU, ISA, cores and the load at start (and end) of a run."""
    load = f"load average (1/5/15 min) {', '.join(f'{v:.1f}' for v in info['load_average'])} at the start"
    if load_end is not None:
        load += f", {', '.join(f'{v:.1f}' for v in load_end)} at the end"
    return f"{info['cpu']} ({info['isa']}), {info['usable_cpus']} of {info['logical_cpus']} logical CPUs used; {load}."


def write_results(name: str, markdown: str, data: dict[str, Any], out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``<out_dir>/<name>.md`` and ``<out_dir>/<name>.json`` atomically.

    Args:
        name: file stem (``"training"``).
        markdown: the table and its notes, as printed.
        data: every raw measurement, the configuration and the machine (JSON-serialisable).
        out_dir: results folder (created if missing).

    Returns:
        The Markdown and JSON paths.
    """
    out = Path(out_dir)
    text = json.dumps(data, indent=2) + "\n"  # serialise first: a bad value must not leave a half-written pair
    md = atomic_write(out / f"{name}.md", lambda tmp: Path(tmp).write_text(markdown.rstrip() + "\n", encoding="utf-8"))
    js = atomic_write(out / f"{name}.json", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return md, js


def _worker(queue, fn, args) -> None:
    try:
        queue.put(("ok", fn(*args)))
    except BaseException:  # noqa: BLE001 - the parent re-raises it with the worker's traceback
        queue.put(("error", traceback.format_exc()))


def run_in_fresh_process(fn: Callable[..., Any], *args: Any, env: dict[str, str] | None = None,
                         timeout: float = 1800.0) -> Any:
    """Call ``fn(*args)`` in a new Python process (spawned, so nothing is inherited but ``env``).

    Args:
        fn: a module-level function returning something picklable.
        *args: its arguments (picklable).
        env: environment variables set for the worker only (e.g. ``TF_ENABLE_ONEDNN_OPTS``).
        timeout: seconds to wait for the result.

    Returns:
        What ``fn`` returned.

    Raises:
        RuntimeError: the worker raised (its traceback is in the message) or died.
    """
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    saved = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})  # a spawned child copies the environment when it starts
    try:
        proc = ctx.Process(target=_worker, args=(queue, fn, args))
        proc.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        status, value = queue.get(timeout=timeout)
    except Exception as err:  # queue.Empty, or the worker died before answering
        proc.kill()
        raise RuntimeError(f"benchmark worker {getattr(fn, '__name__', fn)} gave no result (exit code {proc.exitcode})") from err
    proc.join()
    if status == "error":
        raise RuntimeError(f"benchmark worker {getattr(fn, '__name__', fn)}{args} failed:\n{value}")
    return value


def matmul_gflops(framework: str, n: int = MATMUL_SIZE, seconds: float = 1.0) -> float:
    """Achieved GFLOP/s of an ``n x n`` float32 matmul in ``"tensorflow"`` or ``"torch"``.

    Runs for about ``seconds`` after one warm-up product, in the calling process (so with its
    thread settings), and counts ``2 n^3`` FLOPs per product.
    """
    if framework == "torch":
        import torch

        a, b = torch.randn(n, n), torch.randn(n, n)
        product, sync = (lambda: a @ b), (lambda c: float(c[0, 0]))
    elif framework == "tensorflow":
        import tensorflow as tf

        a, b = tf.random.normal((n, n)), tf.random.normal((n, n))
        matmul = tf.function(tf.matmul)
        product, sync = (lambda: matmul(a, b)), (lambda c: float(c[0, 0]))
    else:
        raise ValueError(f"matmul_gflops: framework must be 'tensorflow' or 'torch', got {framework!r}")
    sync(product())
    count, start = 0, time.perf_counter()
    while True:
        sync(product())
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return 2 * n**3 * count / elapsed / 1e9


def run_benchmark(name: str, cfg: Any, measure: Callable[[Any], dict],
                  report: Callable[[Any, dict, dict, list[float]], tuple[str, dict]]) -> dict:
    """Measure, tabulate and write one benchmark: ``<cfg.out_dir>/<name>.md`` and ``.json``.

    Args:
        name: file stem and the JSON's ``benchmark`` entry.
        cfg: the benchmark's config dataclass (with an ``out_dir`` field); saved in the JSON.
        measure: ``measure(cfg) -> raw`` runs the measurements.
        report: ``report(cfg, raw, machine_info, load_at_end) -> (markdown, summary)``.

    Returns:
        The dict written as JSON (config, machine, loads, wall time, summary and raw results).
    """
    import dataclasses

    info = machine_info()
    started = time.time()
    raw = measure(cfg)
    load_end = load_average()
    markdown, summary = report(cfg, raw, info, load_end)
    data = {"benchmark": name, "config": dataclasses.asdict(cfg), "machine": info, "load_average_end": load_end,
            "wall_seconds": time.time() - started, "summary": summary, "raw": raw}
    md, js = write_results(name, markdown, data, cfg.out_dir)
    print("\n" + markdown + f"\n\nWritten to {md} and {js}")
    return data


def summarise(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of repeated measurements (the median is what tables quote)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def format_range(s: dict[str, float], fmt: str = "{:.2f}") -> str:
    """``median (min-max)`` of a :func:`summarise` dict, the form every table quotes; the median alone for one value."""
    return fmt.format(s["median"]) + (f" ({fmt.format(s['min'])}-{fmt.format(s['max'])})" if s["n"] > 1 else "")
