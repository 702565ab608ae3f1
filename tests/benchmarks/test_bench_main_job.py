"""Tests for benchmarks/bench_main_job.py: worktrees, one timed job from a clean start, the report."""

import subprocess

import pytest

from benchmarks import bench_main_job

FAKE_TRAIN = """\
import json, os, time
# A stand-in for the main job: it must start without the data and results of an earlier run.
fresh = not os.path.exists("data") and not os.path.exists("results")
sum(i * i for i in range(200_000))  # some CPU time to measure
os.makedirs("results/baseline")
with open("results/baseline/metrics.json", "w") as f:
    json.dump({"mean_dice": 0.91 if fresh else 0.0, "mean_hd95_mm": 3.5, "train_seconds": 1.0}, f)
"""


def _git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    """A one-commit git repository holding a fake ``coursework.train``."""
    root = tmp_path / "repo"
    (root / "coursework").mkdir(parents=True)
    (root / "coursework" / "__init__.py").write_text("")
    (root / "coursework" / "train.py").write_text(FAKE_TRAIN)
    _git(root.parent, "init", "--quiet", str(root))
    _git(root, "add", ".")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", "fake job")
    return root


def test_resolve_commit_gives_the_full_id_and_names_a_bad_ref(repo):
    assert bench_main_job.resolve_commit("HEAD", repo) == _git(repo, "rev-parse", "HEAD")
    with pytest.raises(ValueError, match="'no-such-ref'"):
        bench_main_job.resolve_commit("no-such-ref", repo)


def test_time_job_runs_from_a_clean_worktree_and_reads_its_metrics(repo, tmp_path):
    tree = bench_main_job.add_worktree(bench_main_job.resolve_commit("HEAD", repo), tmp_path / "tree", repo)
    (tree / "data").mkdir()  # left over from an earlier run: must be removed first
    (tree / "results" / "old").mkdir(parents=True)
    run = bench_main_job.time_job(tree, [], timeout=60, log_path=tmp_path / "job.log")
    assert run["exit_code"] == 0 and run["mean_dice"] == 0.91 and run["mean_hd95_mm"] == 3.5
    assert run["wall_s"] > 0 and run["cpu_s"] > 0
    bench_main_job.remove_worktree(tree, repo)
    assert not tree.exists() and str(tree) not in _git(repo, "worktree", "list")


def _run(wall, cpu, dice):
    return {"wall_s": wall, "cpu_s": cpu, "exit_code": 0, "mean_dice": dice, "mean_hd95_mm": 3.0, "train_s": 1.0}


def test_report_quotes_per_round_ratios_and_the_goal():
    raw = {"commits": {"candidate": "a" * 40, "baseline": "b" * 40}, "args": [],
           "rounds": [{"candidate": _run(40, 50, 0.92), "baseline": _run(100, 120, 0.93)},
                      {"candidate": _run(46, 55, 0.91), "baseline": _run(100, 110, 0.93)}]}
    info = {"cpu": "Test CPU", "isa": "AVX2", "usable_cpus": 2, "logical_cpus": 2, "load_average": [0.5, 0.5, 0.5]}
    cfg = bench_main_job.MainJobBenchConfig()
    markdown, summary = bench_main_job.report(cfg, raw, info, [0.6, 0.5, 0.5])
    assert "| candidate | `aaaaaaa` | 43.0 (40.0-46.0) | 52.5 (50.0-55.0) | 0.920, 0.910 | 3.00, 3.00 |" in markdown
    assert "wall **0.43x** (0.40-0.46 per round)" in markdown and ": met." in markdown
    assert summary["ratio"]["wall_s"]["median"] == pytest.approx(0.43) and summary["goal_met"] is True
    # One round over half the baseline's time, or one Dice under 0.90, and the goal is not met.
    raw["rounds"][1]["candidate"] = _run(55, 60, 0.95)
    assert bench_main_job.report(cfg, raw, info, [0.6, 0.5, 0.5])[1]["goal_met"] is False
    raw["rounds"][1]["candidate"] = _run(45, 60, 0.89)
    assert "not met" in bench_main_job.report(cfg, raw, info, [0.6, 0.5, 0.5])[0]
