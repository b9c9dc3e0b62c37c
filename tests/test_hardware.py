"""What computed a run (harness/run/hardware.py): the processor's model and vector level, a CUDA run's GPU;
the row, `harness compare-runs` and `harness benchmark` name it."""

from __future__ import annotations

import pytest

from harness.bench import benchmark_timing
from harness.cli import main
from harness.results.compare_runs import compare
from harness.run import hardware
from test_tables import box, make_row, write_experiment

AMX = "fpu sse4_1 avx2 fma avx512f avx512bw avx512vl avx512dq avx512_vnni avx512_bf16 amx_tile amx_bf16"


@pytest.mark.parametrize("flags, level", [
    (AMX, "AVX-512 + AMX"),
    (AMX.replace(" amx_tile amx_bf16", ""), "AVX-512 + BF16"),
    ("sse4_1 avx2 fma avx512f avx512bw avx512vl avx512dq avx512_vnni", "AVX-512 + VNNI"),
    ("sse4_1 avx2 fma avx512f avx512bw avx512vl avx512dq", "AVX-512"),
    ("sse4_1 avx2 fma avx512f", "AVX2"),  # AVX-512 foundation alone is not oneDNN's AVX-512 level
    ("sse4_1 avx2 fma", "AVX2"),
    ("sse4_1 avx2", "SSE4.1"),  # AVX2 without FMA: not the AVX2 level
    ("sse4_1", "SSE4.1"),
    ("", None),
])
def test_the_vector_level_is_the_highest_whose_flags_are_all_there(flags, level):
    assert hardware.vector_level(set(flags.split())) == level


@pytest.fixture
def fake_cpu(monkeypatch):
    def use(fields):
        monkeypatch.setattr(hardware, "_cpuinfo", lambda: fields)
        hardware.cpu.cache_clear()
    yield use
    hardware.cpu.cache_clear()


def test_the_cpu_is_named_by_model_cores_and_level(fake_cpu, monkeypatch):
    monkeypatch.setattr(hardware.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    fake_cpu({"model name": "Intel(R)  Xeon(R)   Processor", "flags": AMX})
    assert hardware.cpu() == "Intel(R) Xeon(R) Processor, 2 cores, AVX-512 + AMX"
    assert hardware.describe("cpu") == "CPU Intel(R) Xeon(R) Processor, 2 cores, AVX-512 + AMX"


def test_without_cpuinfo_flags_the_level_is_torchs_dispatch(fake_cpu):
    import torch

    fake_cpu({})
    assert hardware.cpu().endswith(f", torch {torch.backends.cpu.get_cpu_capability()}")


def test_a_cuda_run_names_its_gpu_then_its_cpu(fake_cpu, monkeypatch):
    fake_cpu({"model name": "AMD EPYC 9654", "flags": "sse4_1 avx2 fma"})
    monkeypatch.setattr(hardware, "gpu", lambda: "NVIDIA H100 80GB HBM3 (sm 9.0)")
    cores = hardware.cpu().split(", ")[1]
    assert hardware.describe("cuda") == f"NVIDIA H100 80GB HBM3 (sm 9.0); CPU AMD EPYC 9654, {cores}, AVX2"
    assert hardware.describe("cuda:1").startswith("NVIDIA H100")
    assert hardware.describe(None).startswith("NVIDIA H100")  # a run that failed before naming its device
    assert hardware.describe("cpu") == f"CPU AMD EPYC 9654, {cores}, AVX2"  # a CPU run on a GPU node
    monkeypatch.setattr(hardware, "gpu", lambda: None)
    assert hardware.describe("cuda") == f"CPU AMD EPYC 9654, {cores}, AVX2"


def test_gpu_is_none_without_cuda():
    import torch

    if torch.cuda.is_available():
        assert hardware.gpu().startswith(torch.cuda.get_device_name())
    else:
        assert hardware.gpu() is None


def _rows(hw):
    rows = [make_row("atss", "rs", s, metrics=box(0.30 + 0.01 * s)) for s in range(3)]
    for r in rows:
        if hw is not None:
            r["provenance"]["hardware"] = hw
    return rows


def test_compare_runs_names_each_sides_hardware_and_says_when_they_differ(tmp_path, capsys):
    same_a = write_experiment(tmp_path / "a", _rows("CPU X, 2 cores, AVX2"))
    same_b = write_experiment(tmp_path / "b", _rows("CPU X, 2 cores, AVX2"))
    other = write_experiment(tmp_path / "c", _rows("CPU Y, 2 cores, AVX-512 + AMX"))
    old = write_experiment(tmp_path / "d", _rows(None))
    assert compare(same_a, old).attrs["hardware"] == ({"CPU X, 2 cores, AVX2": 3}, {"not recorded": 3})

    assert main(["compare-runs", str(same_a), str(same_b)]) == 0
    out = capsys.readouterr().out
    assert "Hardware: before CPU X, 2 cores, AVX2 (3 runs); after CPU X, 2 cores, AVX2 (3 runs)." in out
    assert "different hardware" not in out and "| equal |" in out

    assert main(["compare-runs", str(same_a), str(other)]) == 0
    out = capsys.readouterr().out
    assert "after CPU Y, 2 cores, AVX-512 + AMX (3 runs). The two sides were computed on different hardware" in out

    assert main(["compare-runs", str(old), str(same_a)]) == 0
    out = capsys.readouterr().out
    assert "Hardware: before not recorded (3 runs); after CPU X" in out and "different hardware" in out


def test_the_benchmark_record_names_the_machine(tmp_path, fake_cpu):
    fake_cpu({"model name": "Test CPU", "flags": "sse4_1 avx2 fma"})
    benchmark_timing.record(120.0, trained=105, total=105, generated_data=True, out_dir=tmp_path)
    benchmark_timing.record(5.0, trained=0, total=105, generated_data=False, out_dir=tmp_path)
    text = (tmp_path / "benchmark.md").read_text()
    cpu = hardware.describe("cpu")
    assert cpu.startswith("CPU Test CPU, ") and cpu.endswith(", AVX2")
    assert f"Measured on: the full run on {cpu}; the cached run on {cpu}" in text


def test_the_tables_say_what_computed_the_finished_runs():
    from harness.results.frame import rows_frame
    from harness.results.tables import build_tables

    rows = _rows("CPU X, 2 cores, AVX2")
    summary = build_tables(rows_frame(rows), paper=False).summary
    assert summary.endswith("Computed on: CPU X, 2 cores, AVX2 (3 runs).")
    rows[2]["provenance"]["hardware"] = "NVIDIA H100 (sm 9.0); CPU Y, 16 cores, AVX-512"
    rows.append(make_row("atss", "focal", 0, status="failed"))  # a failed run is not counted
    rows[-1]["provenance"]["hardware"] = "CPU Z"
    summary = build_tables(rows_frame(rows), paper=False).summary
    assert ("Computed on: CPU X, 2 cores, AVX2 (2 runs); NVIDIA H100 (sm 9.0); CPU Y, 16 cores, AVX-512 (1 run). "
            "The same code can give other last bits") in summary and "CPU Z" not in summary
    del rows[0]["provenance"]["hardware"]
    assert "Computed on: CPU X, 2 cores, AVX2 (1 run); NVIDIA H100" in build_tables(rows_frame(rows), paper=False).summary
    assert "not recorded (1 run)" in build_tables(rows_frame(rows), paper=False).summary
    for r in rows:
        r["provenance"].pop("hardware", None)
    assert "Computed on" not in build_tables(rows_frame(rows), paper=False).summary  # older rows: nothing said
