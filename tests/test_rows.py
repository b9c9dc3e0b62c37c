"""Result rows are written whole or not at all, and bad files are reported, never dropped silently."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from harness.rows import CorruptRowWarning, read_rows, row_path, write_row


def row(run_id, status="done", **extra):
    return {"run_id": run_id, "status": status, "detector": "atss", "loss": "rs", "seed": 0, "metrics": {"bbox_AP": 0.5}, **extra}


def test_write_and_read(tmp_path):
    write_row(tmp_path, row("a"))
    write_row(tmp_path, row("b", "failed", reason="NaN loss at iteration 3"))
    rows, corrupt = read_rows(tmp_path)
    assert [r["run_id"] for r in rows] == ["a", "b"] and not corrupt
    assert not list((tmp_path / "runs").glob(".*tmp"))


def test_a_row_needs_a_valid_status(tmp_path):
    with pytest.raises(ValueError, match="status must be one of"):
        write_row(tmp_path, row("a", "running"))
    assert not (tmp_path / "runs" / "a.json").exists()


def test_corrupt_rows_are_reported_with_a_warning(tmp_path):
    write_row(tmp_path, row("good"))
    (tmp_path / "runs" / "half.json").write_text('{"run_id": "half", "sta')
    (tmp_path / "runs" / "other.json").write_text(json.dumps(row("not-other")))
    with pytest.warns(CorruptRowWarning) as caught:
        rows, corrupt = read_rows(tmp_path)
    assert [r["run_id"] for r in rows] == ["good"]
    assert {c.path.name for c in corrupt} == {"half.json", "other.json"}
    assert len(caught) == 2 and "invalid JSON" in str(caught[0].message) + str(caught[1].message)


def test_a_killed_writer_leaves_no_half_row(tmp_path):
    """SIGKILL in the middle of writing: the row is either absent or the previous whole version."""
    write_row(tmp_path, row("r", metrics={"v": 1}))
    script = textwrap.dedent(f"""
        import os
        from harness import files, rows
        def killed_writing(fd):  # the writer dies with half the row in its temporary file
            os.ftruncate(fd, 30)
            os.kill(os.getpid(), 9)
        files.os.fsync = killed_writing
        rows.write_row({str(tmp_path)!r}, {{"run_id": "r", "status": "done", "metrics": {{"v": 2}}}})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    rows, corrupt = read_rows(tmp_path)
    assert not corrupt and rows[0]["metrics"] == {"v": 1}
    leftovers = [p for p in (tmp_path / "runs").iterdir() if p.name != "r.json"]
    assert all(p.name.startswith(".") and p.suffix == ".tmp" for p in leftovers)  # ignored by readers
