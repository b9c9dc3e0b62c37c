"""Bad input to `harness table` / `harness plot` beyond the folder and the metric (test_tables.py has
those): one line on stderr saying what is wrong and how to fix it, exit 2, nothing written."""

from __future__ import annotations

import pytest

from harness.cli import main
from test_tables import box, make_row, write_experiment


@pytest.fixture
def exp(tmp_path):
    rows = [make_row(det, loss, s, metrics=box(0.3 + 0.01 * s)) for det, loss in (("atss", "focal"), ("atss", "rs"))
            for s in range(2)]
    return write_experiment(tmp_path / "exp", rows)


def _one_line(capsys, command: str) -> str:
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1 and out.err.startswith(f"harness {command}: error: ")
    assert "Traceback" not in out.err
    return out.err


@pytest.mark.parametrize("command", ["table", "plot"])
def test_out_that_is_a_file_is_one_line_exit_2_and_nothing_written(exp, tmp_path, capsys, command):
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for out in (afile, afile / "sub"):
        assert main([command, str(exp), "--out", str(out)]) == 2
        err = _one_line(capsys, command)
        assert f"--out {out}" in err and "not a folder" in err and "give --out a folder" in err
    assert afile.read_text() == "mine\n"
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_default_tables_folder_that_is_a_file_is_one_line_exit_2(exp, capsys):
    (exp / "tables").write_text("not a folder\n")
    assert main(["table", str(exp), "--format", "md"]) == 2
    assert "move that file away or give --out DIR" in _one_line(capsys, "table")
    assert (exp / "tables").read_text() == "not a folder\n"


def _spec(folder, name: str):
    import yaml

    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "dataset": {"kind": "coco"}, "detectors": ["atss"],
                                    "losses": ["focal", "rs"], "seeds": [0, 1]}))
    return path


@pytest.mark.parametrize("command", ["table", "plot"])
def test_spec_of_another_experiment_is_one_line_exit_2_naming_both(exp, tmp_path, capsys, command):
    """The rows say experiment 'exp'; a spec named 'other' would show its runs as unfinished and drop the
    real rows as superseded (rc 0)."""
    other = _spec(tmp_path, "other")
    assert main([command, str(exp), "--spec", str(other), "--out", str(tmp_path / "out")]) == 2
    err = _one_line(capsys, command)
    assert f"--spec {other} is experiment 'other'" in err and f"{exp} holds the results of experiment 'exp'" in err
    assert not (tmp_path / "out").exists()


def test_spec_of_the_folders_experiment_still_shows_its_unfinished_runs(exp, tmp_path, capsys):
    from harness.experiments.spec import load_spec

    spec = _spec(tmp_path, "exp")
    ids = {(r.loss, r.seed): r.run_id for r in load_spec(spec).runs()}
    for (loss, seed), run_id in ids.items():  # the rows are the spec's runs, but for one seed of RS
        if (loss, seed) != ("rs", 1):
            (exp / "runs" / f"atss-{loss}-s{seed}-coco000000.json").rename(exp / "runs" / f"{run_id}.json")
            text = (exp / "runs" / f"{run_id}.json").read_text()
            (exp / "runs" / f"{run_id}.json").write_text(text.replace(f"atss-{loss}-s{seed}-coco000000", run_id))
    (exp / "runs" / "atss-rs-s1-coco000000.json").unlink()
    assert main(["table", str(exp), "--spec", str(spec), "--format", "md", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "1 unfinished" in out and "older row" not in out


def test_a_folder_without_rows_knows_its_experiment_from_the_manifest(tmp_path, capsys):
    folder = tmp_path / "exp"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"experiment": "exp", "runs": {}, "submissions": []}')
    assert main(["table", str(folder), "--spec", str(_spec(tmp_path, "other"))]) == 2
    assert "holds the results of experiment 'exp'" in _one_line(capsys, "table")
    assert main(["table", str(folder), "--spec", str(_spec(tmp_path, "exp")), "--format", "md"]) == 0
    assert "unfinished" in capsys.readouterr().out
