"""benchmarks.common: machine description, result files and fresh worker processes (no timings)."""

import json
import os

import pytest

from benchmarks import common


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["fma", "avx2", "avx512f", "avx512_bf16"], "AVX-512 with BF16"),
        (["avx512f", "avx2"], "AVX-512"),
        (["sse4_2", "avx", "avx2", "fma"], "AVX2"),
        (["sse4_2"], "SSE4.2"),
    ],
)
def test_cpu_isa_names_the_widest_vector_extension(flags, expected):
    assert common.cpu_isa(flags) == expected


def test_machine_info_reads_model_and_isa_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse4_2 avx avx2\n\n"
                       "processor\t: 1\nmodel name\t: Other\nflags\t\t: avx512f\n")
    info = common.machine_info(str(cpuinfo))
    assert (info["cpu"], info["isa"]) == ("Test CPU 9000", "AVX2")
    assert len(info["load_average"]) == 3 and info["usable_cpus"] >= 1
    line = common.describe_machine(info, load_end=[1.0, 2.0, 3.0])
    assert "Test CPU 9000 (AVX2)" in line and "1.0, 2.0, 3.0 at the end" in line


def test_write_results_writes_markdown_and_json_beside_it(tmp_path):
    md, js = common.write_results("demo", "| a |\n| --- |", {"x": [1, 2]}, tmp_path / "out")
    assert md.read_text() == "| a |\n| --- |\n"
    assert json.loads(js.read_text()) == {"x": [1, 2]}
    assert sorted(p.name for p in md.parent.iterdir()) == ["demo.json", "demo.md"]  # no temporary left


def test_write_results_leaves_nothing_for_unserialisable_data(tmp_path):
    with pytest.raises(TypeError):
        common.write_results("demo", "table", {"x": object()}, tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # two spawned interpreters: a few seconds on a loaded machine
def test_run_in_fresh_process_passes_env_only_to_the_worker_and_reports_its_error():
    assert common.run_in_fresh_process(os.getenv, "BENCH_COMMON_TEST", env={"BENCH_COMMON_TEST": "on"}) == "on"
    assert "BENCH_COMMON_TEST" not in os.environ
    with pytest.raises(RuntimeError, match="ValueError"):
        common.run_in_fresh_process(int, "not a number")


def test_summarise_quotes_the_median():
    assert common.summarise([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}


def test_matmul_gflops_rejects_unknown_framework():
    with pytest.raises(ValueError, match="framework"):
        common.matmul_gflops("numpy")


def test_run_benchmark_writes_the_report_and_every_measurement(tmp_path):
    import dataclasses

    @dataclasses.dataclass
    class Cfg:
        repeats: int = 2
        out_dir: str = str(tmp_path)

    data = common.run_benchmark(
        "demo", Cfg(), measure=lambda cfg: {"rounds": [1.0] * cfg.repeats},
        report=lambda cfg, raw, info, load_end: (f"| {len(raw['rounds'])} rounds on {info['isa']} |", {"n": 2}))
    written = json.loads((tmp_path / "demo.json").read_text())
    assert written == data
    assert written["config"] == {"repeats": 2, "out_dir": str(tmp_path)}
    assert written["raw"] == {"rounds": [1.0, 1.0]} and written["summary"] == {"n": 2}
    assert (tmp_path / "demo.md").read_text().startswith("| 2 rounds on ")


def test_format_range_gives_median_and_spread_or_the_median_alone():
    assert common.format_range(common.summarise([1.0, 4.0, 2.0])) == "2.00 (1.00-4.00)"
    assert common.format_range(common.summarise([81.24]), "{:.1f}") == "81.2"
