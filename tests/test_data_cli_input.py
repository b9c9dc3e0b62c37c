"""Bad input to `harness data`: one line on stderr saying what is wrong and how to fix it, exit 2, nothing
written; and what `harness data inspect` says it checked."""

from __future__ import annotations

import pytest

from cli import harness
from harness.cli import main


@pytest.mark.parametrize("flag, value, message", [
    ("--seed", "-1", "seed must be 0 or more (a non-negative integer), got -1"),
    ("--train-images", "0", "train_images and val_images must be at least 1"),
])
def test_synthetic_bad_value_is_one_line_exit_2_and_nothing_written(tmp_path, monkeypatch, capsys, flag, value, message):
    out = tmp_path / "syn"
    proc = harness("data", "synthetic", "--out", str(out), flag, value)
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr == f"harness data: error: {message}\n"
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "cache"))  # the cache, without --out: refused alike
    assert main(["data", "synthetic", flag, value]) == 2
    assert capsys.readouterr().err == f"harness data: error: {message}\n"
    assert list(tmp_path.iterdir()) == []
