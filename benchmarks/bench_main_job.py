"""The main job against an earlier commit's: wall and CPU time to a tested model, run one after the other.

``python -m coursework.train`` with its default settings runs in two checkouts of this repository,
each a temporary ``git worktree``: ``--candidate`` (default ``HEAD``) and ``--baseline`` (default
``ed2f0b0``, the default of 10 epochs on whole 80x80 slices in batches of 16, before training crops
and the 5-epoch schedule). The two alternate for ``--repeats`` rounds, so both see the same load.
Every run starts as a student's first run does: without ``data/`` or ``results/``, so the synthetic
dataset is generated on first use and counted. Wall time is measured around the whole command
(Python start-up and TensorFlow import included), CPU time is the child's user + system time from
``getrusage``, quality is the run's own ``metrics.json`` (mean test Dice and HD95 over the held-out
cases).

Run from the repository root (uncommitted changes are not measured: each side is a commit)::

    python benchmarks/bench_main_job.py                 # 2 rounds, about 10 minutes on 2 cores
    python benchmarks/bench_main_job.py --quick         # both sides with --quick: a smoke run

The goal it checks: mean test Dice >= 0.90 in at most half the baseline's wall time. Writes
``results/benchmarks/main_job.md`` and ``main_job.json``.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the repository root

from benchmarks import common  # noqa: E402
from training.config import field, parse_args  # noqa: E402

DICE_GOAL = 0.90  # mean test Dice the faster job must still reach
TIME_GOAL = 0.5  # candidate wall time over the baseline's


@dataclasses.dataclass
class MainJobBenchConfig:
    """Settings of the main-job benchmark (every field is a command-line option)."""

    candidate: str = field("HEAD", "commit (or branch) whose default main job is measured")
    baseline: str = field("ed2f0b0", "commit to compare against")
    repeats: int = field(2, "interleaved rounds (candidate, baseline, candidate, ...)", minimum=1)
    quick: bool = field(False, "pass --quick to both jobs (a smoke run; the goal does not apply)")
    timeout: int = field(1800, "seconds one job may run before it is stopped", minimum=1)
    out_dir: str = field("results/benchmarks", "folder for main_job.md and main_job.json")


def resolve_commit(ref: str, repo: Path = common.REPO_ROOT) -> str:
    """The full commit id of ``ref`` in ``repo``.

    Raises:
        ValueError: ``ref`` names no commit there.
    """
    done = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise ValueError(f"--candidate/--baseline {ref!r}: not a commit of {repo}")
    return done.stdout.strip()


def add_worktree(commit: str, path: Path, repo: Path = common.REPO_ROOT) -> Path:
    """Check ``commit`` out into a new detached worktree at ``path`` (which must not exist)."""
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", "--quiet", str(path), commit],
                   check=True, capture_output=True, text=True)
    return path


def remove_worktree(path: Path, repo: Path = common.REPO_ROOT) -> None:
    """Remove a worktree made by :func:`add_worktree` (its files and git's record of it)."""
    subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(path)], capture_output=True)
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run(["git", "-C", str(repo), "worktree", "prune"], capture_output=True)


def time_job(checkout: Path, args: list[str], timeout: float, log_path: Path) -> dict:
    """Run ``python -m coursework.train ARGS`` in ``checkout`` from a clean start; time it.

    ``data/`` and ``results/`` of the checkout are removed first, so the dataset is generated on first
    use, as in a fresh fork.

    Returns:
        ``{"wall_s", "cpu_s", "exit_code", "mean_dice", "mean_hd95_mm", "train_s"}``; the quality
        entries are ``None`` when the job wrote no ``metrics.json``.
    """
    for name in ("data", "results"):
        shutil.rmtree(checkout / name, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        try:
            code = subprocess.run([sys.executable, "-m", "coursework.train", *args], cwd=checkout, stdout=log,
                                  stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    found = sorted((checkout / "results").glob("*/metrics.json"))
    metrics = json.loads(found[-1].read_text()) if found else {}
    return {"wall_s": wall, "cpu_s": cpu, "exit_code": code, "mean_dice": metrics.get("mean_dice"),
            "mean_hd95_mm": metrics.get("mean_hd95_mm"), "train_s": metrics.get("train_seconds")}


def measure(cfg: MainJobBenchConfig) -> dict:
    """Alternate the two jobs for ``cfg.repeats`` rounds, each in its own temporary worktree."""
    commits = {"candidate": resolve_commit(cfg.candidate), "baseline": resolve_commit(cfg.baseline)}
    args = ["--quick"] if cfg.quick else []
    rounds = []
    with tempfile.TemporaryDirectory(prefix="bench-main-job-") as tmp:
        trees = {}
        try:
            for side, commit in commits.items():
                trees[side] = add_worktree(commit, Path(tmp) / side)
            for r in range(cfg.repeats):
                row = {}
                for side in commits:
                    row[side] = time_job(trees[side], args, cfg.timeout, Path(tmp) / f"{side}-{r}.log")
                    if row[side]["exit_code"] != 0:
                        log = (Path(tmp) / f"{side}-{r}.log").read_text(errors="replace")[-3000:]
                        raise RuntimeError(f"the {side} job ({commits[side][:10]}) failed "
                                           f"({row[side]['exit_code']}):\n{log}")
                    print(f"round {r + 1}/{cfg.repeats} {side}: {row[side]['wall_s']:.1f} s wall, "
                          f"{row[side]['cpu_s']:.1f} s CPU, mean test Dice {row[side]['mean_dice']:.3f}", flush=True)
                rounds.append(row)
        finally:
            for tree in trees.values():
                remove_worktree(tree)
    return {"commits": commits, "args": args, "rounds": rounds}


def report(cfg: MainJobBenchConfig, raw: dict, info: dict, load_end: list[float]) -> tuple[str, dict]:
    """The Markdown table (medians with min-max over rounds, per-round ratios) and a summary dict."""
    rounds, commits = raw["rounds"], raw["commits"]
    summary = {}
    lines = ["| run | commit | wall s | CPU s | mean test Dice | mean HD95 (mm) |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for side in ("candidate", "baseline"):
        runs = [r[side] for r in rounds]
        summary[side] = {key: common.summarise([run[key] for run in runs]) for key in ("wall_s", "cpu_s", "mean_dice")}
        dice = ", ".join(f"{run['mean_dice']:.3f}" for run in runs)
        hd95 = ", ".join(f"{run['mean_hd95_mm']:.2f}" for run in runs)
        lines.append(f"| {side} | `{commits[side][:7]}` | {common.format_range(summary[side]['wall_s'], '{:.1f}')} | "
                     f"{common.format_range(summary[side]['cpu_s'], '{:.1f}')} | {dice} | {hd95} |")
    ratios = {key: [r["candidate"][key] / r["baseline"][key] for r in rounds] for key in ("wall_s", "cpu_s")}
    summary["ratio"] = {key: common.summarise(values) for key, values in ratios.items()}
    wall, cpu = summary["ratio"]["wall_s"], summary["ratio"]["cpu_s"]
    worst_dice = summary["candidate"]["mean_dice"]["min"]
    summary["goal_met"] = None if cfg.quick else bool(wall["max"] <= TIME_GOAL and worst_dice >= DICE_GOAL)
    verdict = ("(quick runs: the goal applies to the default job)" if cfg.quick else
               f"goal (mean test Dice >= {DICE_GOAL:.2f} in at most {TIME_GOAL:.1f}x the baseline's wall time, "
               f"every round): {'met' if summary['goal_met'] else 'not met'}")
    notes = [
        "",
        f"Candidate / baseline: wall **{wall['median']:.2f}x** ({wall['min']:.2f}-{wall['max']:.2f} per round), "
        f"CPU {cpu['median']:.2f}x ({cpu['min']:.2f}-{cpu['max']:.2f}); {verdict}.",
        f"Machine: {common.describe_machine(info, load_end)}",
        f"{len(rounds)} interleaved round(s) of `python -m coursework.train{''.join(' ' + a for a in raw['args'])}`, each from a clean checkout (dataset generated on first use, TensorFlow import included); medians with (min-max).",
    ]
    return "\n".join(lines + notes), summary


def main(argv=None) -> None:
    cfg = parse_args(MainJobBenchConfig, argv, description=__doc__.splitlines()[0])
    common.run_benchmark("main_job", cfg, measure, report)


if __name__ == "__main__":
    main()
