"""`harness benchmark` and `harness bench-phases` without a spec run the harness checkout's
experiments/synthetic.yaml wherever they run from (they read it from the current folder, so that they
worked only from the repository's root), and name it as a user there would write it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from harness.cli import main
from harness.experiments import DEFAULT_SPEC, default_spec, is_default_spec

REPO = Path(__file__).resolve().parents[1]


def test_the_default_spec_is_the_checkouts_named_as_seen_from_here(tmp_path, monkeypatch):
    assert DEFAULT_SPEC == REPO / "experiments" / "synthetic.yaml" and DEFAULT_SPEC.is_file()
    monkeypatch.chdir(REPO)
    assert default_spec() == "experiments/synthetic.yaml"
    assert is_default_spec("experiments/synthetic.yaml") and not is_default_spec("experiments/coco_1x.yaml")
    monkeypatch.chdir(REPO / "experiments")
    assert default_spec() == "synthetic.yaml" and is_default_spec("synthetic.yaml")
    monkeypatch.chdir(tmp_path)
    assert default_spec() == str(DEFAULT_SPEC) and is_default_spec(default_spec())
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "synthetic.yaml").write_text("name: other\n")
    assert not is_default_spec("experiments/synthetic.yaml")  # another folder's file of the same name


def _errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_benchmark_reads_the_default_spec_from_another_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # --tables-only before anything ran: the spec is read, then the missing results are named
    assert main(["benchmark", "--tables-only", "--results", "res"]) == 2
    line, = _errors(capsys)
    assert line.startswith(f"harness benchmark: error: {Path('res') / 'synthetic'} holds no results of synthetic "
                           f"yet: run it first (harness run {DEFAULT_SPEC} --results res)"), line


def test_bench_phases_times_the_default_spec_from_another_folder(tmp_path, monkeypatch, capsys):
    from harness.bench import phases

    timed, reported = [], []

    def profile_run(run, folder):  # the cell's run as bench-phases would time it, not trained here
        timed.append(run)
        return SimpleNamespace(iterations=1, test_images=1, train=[("", "", 1.0)], test=[("", "", 2.0)])

    monkeypatch.setattr(phases, "profile_run", profile_run)
    monkeypatch.setattr(phases, "write_report", lambda prefix, cells, spec_path: reported.append(spec_path))
    for cwd, shown in ((tmp_path, str(DEFAULT_SPEC)), (REPO, "experiments/synthetic.yaml")):
        monkeypatch.chdir(cwd)
        assert main(["bench-phases", "--only", "atss:rs", "--out", str(tmp_path / "phases")]) == 0, capsys.readouterr()
        run = timed.pop()
        assert (run.experiment, run.detector, run.loss, run.seed) == ("synthetic", "atss", "rs", 0)
        assert reported.pop() == shown  # the report names the spec as a user here would write it
