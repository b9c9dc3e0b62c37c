"""The memory allocator of the harness's run processes (harness.run.allocator): tcmalloc where installed,
preloaded only into the processes the harness starts for runs, recorded in each row, never changing a value."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cli import harness
from harness.run import allocator

TCMALLOC = allocator.library() if os.environ.get(allocator.ENV, "") in ("", "tcmalloc") else None
needs_tcmalloc = pytest.mark.skipif(TCMALLOC is None, reason="no tcmalloc installed here (make setup installs it)")
CHILD = [sys.executable, "-c", "from harness.run.allocator import in_use; print(in_use())"]


def _child_allocator() -> str:
    return subprocess.run(CHILD, capture_output=True, text=True, check=True).stdout.strip()


@needs_tcmalloc
def test_processes_started_meanwhile_use_tcmalloc_and_the_environment_is_restored(monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "")
    monkeypatch.delenv("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", raising=False)
    assert _child_allocator() == "system"
    with allocator.preloaded() as lib:
        assert lib == TCMALLOC and os.environ["LD_PRELOAD"].split(":")[0] == TCMALLOC
        assert _child_allocator().startswith("libtcmalloc")
    assert os.environ["LD_PRELOAD"] == "" and "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD" not in os.environ
    assert _child_allocator() == "system"


@needs_tcmalloc
def test_an_earlier_preload_is_kept_behind_tcmalloc_and_tcmalloc_is_not_added_twice(monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "libm.so.6")  # a site's own preload
    with allocator.preloaded():
        assert os.environ["LD_PRELOAD"] == f"{TCMALLOC}:libm.so.6"
        assert _child_allocator().startswith("libtcmalloc")
    assert os.environ["LD_PRELOAD"] == "libm.so.6"
    monkeypatch.setenv("LD_PRELOAD", TCMALLOC)
    with allocator.preloaded():
        assert os.environ["LD_PRELOAD"] == TCMALLOC


def test_system_keeps_the_c_librarys_malloc_and_a_bad_choice_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv(allocator.ENV, "system")
    monkeypatch.setenv("LD_PRELOAD", "")
    with allocator.preloaded() as lib:
        assert lib is None and os.environ["LD_PRELOAD"] == ""
        assert _child_allocator() == "system"
    monkeypatch.setenv(allocator.ENV, "jemalloc")
    with pytest.raises(ValueError, match="HARNESS_ALLOCATOR='jemalloc': use 'system'"):
        allocator.library()
    proc = harness("run", "experiments/synthetic.yaml", "--dry-run", "--results", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "harness run: error: HARNESS_ALLOCATOR='jemalloc': use 'system' (the C library's malloc) or 'tcmalloc' "
        "(the default, when installed)"]
    assert not any(tmp_path.iterdir())  # nothing written
