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
