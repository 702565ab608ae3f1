"""Tests for benchmarks/bench_augment.py: the kit chain it times, its report and its breakdown."""

import pytest

from benchmarks import bench_augment, common
from data_utils import augment


def test_kit_chain_is_the_documented_chain_compiled():
    names = [type(t).__name__ for t in bench_augment.kit_chain(elastic=True).transforms]
    assert names == ["Flip", "Affine", "Elastic", "BiasField", "Gamma", "GaussianNoise"]
    plain = bench_augment.kit_chain(elastic=False)
    assert isinstance(plain, augment.Compose) and plain.jit_compile and len(plain.transforms) == 5


def _side(rate, cpu_ms):
    return {"samples_per_s": rate, "samples": 8, "cpu_ms_per_sample": cpu_ms, "version": "v"}


def test_report_quotes_median_ratios_and_the_breakdown():
    cfg = bench_augment.AugmentBenchConfig(cases=("3d",), repeats=2)
    rounds = [{"3d": {"kit": _side(10.0, 150.0), "monai": _side(2.0, 900.0), "load_average": [1.0, 1.0, 1.0]}},
              {"3d": {"kit": _side(12.0, 100.0), "monai": _side(2.0, 800.0), "load_average": [1.0, 1.0, 1.0]}}]
    raw = {"rounds": rounds, "sliding_window": None, "breakdown": {"resampling, flip + affine": 50.4, "Gamma": 7.0}}
    info = {"cpu": "Test CPU", "isa": "AVX2", "usable_cpus": 2, "logical_cpus": 2, "load_average": [0.5, 0.5, 0.5]}
    markdown, summary = bench_augment.report(cfg, raw, info, [0.7, 0.6, 0.5])
    assert "| 3D 96^3 + label | 11.0 volumes/s (10.0-12.0) | 2.0 volumes/s (2.0-2.0) | **5.5x** (5.0-6.0) |" in markdown
    assert "resampling, flip + affine 50; Gamma 7." in markdown and "Test CPU (AVX2)" in markdown
    assert summary["3d"]["ratio"]["median"] == pytest.approx(5.5)
    assert "kit 125 ms, MONAI 850 ms, MONAI / kit **7.0x** (6.0-8.0)" in markdown
    assert summary["breakdown_ms_per_batch"]["Gamma"] == 7.0


@pytest.mark.slow
def test_breakdown_times_every_piece_of_the_chain():
    # In a fresh process, as the benchmark runs it: it pins cores and sets TensorFlow's thread pools.
    parts = common.run_in_fresh_process(bench_augment.breakdown_worker, 2, 1, 12, env={"TF_CPP_MIN_LOG_LEVEL": "2"})
    assert list(parts)[:4] == ["flip + affine draws", "elastic field (draw, smooth, upsample)",
                               "resampling, flip + affine", "resampling, flip + affine + elastic"]
    assert {"BiasField", "Gamma", "GaussianNoise", "whole chain", "whole chain with elastic"} <= set(parts)
    assert all(ms > 0 for ms in parts.values())
