"""A bad `--out` prefix of the measuring commands (bench-steps, bench-phases, gpu-check, bench losses) is a
usage error of one line, exit 2, found before any measurement and with nothing written."""

from __future__ import annotations

import pytest

from harness.cli import main

COMMANDS = [["bench-steps", "--only", "atss:rs"], ["bench-phases", "--only", "atss:rs"],
            ["gpu-check", "--quick", "--device", "cpu", "--only", "atss:rs"], ["bench", "losses", "--quick"]]


@pytest.fixture
def no_measuring(monkeypatch):
    """Every command's measurement fails the test if it starts: the check must come first."""
    import harness.bench.losses
    import harness.bench.phases
    import harness.detectors.bench_steps
    import harness.gpu_check

    def measured(*args, **kwargs):
        raise AssertionError("measured before checking --out")

    monkeypatch.setattr(harness.detectors.bench_steps, "run_step_benchmark", measured)
    monkeypatch.setattr(harness.bench.phases, "profile_run", measured)
    monkeypatch.setattr(harness.gpu_check, "run_gpu_check", measured)
    monkeypatch.setattr(harness.bench.losses, "main", measured)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0] if c[0] != "bench" else "bench-losses")
def test_an_out_prefix_under_a_file_is_exit_2_before_any_measurement(command, tmp_path, capsys, no_measuring):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder\n")
    for out, says in ((blocker / "report", f"--out {blocker / 'report'} lies under {blocker}, which is a file"),
                      (blocker / "deeper" / "report", f"lies under {blocker}, which is a file")):
        assert main([*command, "--out", str(out)]) == 2
        captured = capsys.readouterr()
        assert captured.err.count("\n") == 1 and says in captured.err, captured.err
    (tmp_path / "taken.md").mkdir()
    assert main([*command, "--out", str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'taken.md'} is a folder" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "taken.md"]
    assert blocker.read_text() == "not a folder\n" and not list((tmp_path / "taken.md").iterdir())
