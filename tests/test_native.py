"""Building and loading the harness's C kernels (harness/detectors/native.py): a cache keyed by source,
compiler and machine, atomic builds, and a clear reason (and torchvision's kernels) when there is no
compiler. Their values: tests/test_kernels.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from harness.detectors import native

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """An empty cache and no library loaded yet in this process's bookkeeping."""
    monkeypatch.setenv(native.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setattr(native, "_why", {})
    return tmp_path / "cache"


def test_build_caches_one_library_per_source(fresh, tmp_path, monkeypatch):
    path = native.build("roi_align")
    assert path.parent == fresh and path.is_file() and path.name.startswith("roi_align-")
    stamp = path.stat().st_mtime_ns
    assert native.build("roi_align") == path and path.stat().st_mtime_ns == stamp  # not rebuilt
    assert [p.name for p in fresh.iterdir()] == [path.name]  # no temporary file left
    edited = tmp_path / "roi_align.c"
    edited.write_text(native.SOURCES["roi_align"].read_text() + "\n/* edited */\n")
    monkeypatch.setitem(native.SOURCES, "roi_align", edited)
    other = native.build("roi_align")
    assert other != path and other.is_file()  # an edited source never loads the old library
    lib = native.load("roi_align")
    assert lib is not None and native.unavailable("roi_align") is None
    assert native.load("roi_align") is lib  # once per process


def test_no_compiler_means_no_library_and_says_why(fresh, monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    with pytest.raises(RuntimeError, match="no C compiler"):
        native.build("roi_align")
    assert native.load("roi_align") is None
    assert "no C compiler" in native.unavailable("roi_align")
    assert not fresh.exists() or not any(fresh.iterdir())


def test_a_failed_build_reports_the_compilers_error_and_leaves_nothing(fresh, tmp_path, monkeypatch):
    broken = tmp_path / "roi_align.c"
    broken.write_text("int roi_align_forward_f32( {\n")
    monkeypatch.setitem(native.SOURCES, "roi_align", broken)
    with pytest.raises(RuntimeError, match="could not build roi_align.c: .*error"):
        native.build("roi_align")
    assert not any(fresh.iterdir())  # neither a library nor a temporary file


def test_switched_off(fresh, monkeypatch):
    monkeypatch.setenv(native.ENV_DISABLE, "off")
    assert native.load("roi_align") is None
    assert native.unavailable("roi_align") == "HARNESS_NATIVE=off"


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


def test_without_the_library_the_cells_keep_torchvisions_kernels(tmp_path):
    """A fresh process with the C kernels off: nothing registered, torchvision's kernels compute RoIAlign,
    and the reason is what a run records."""
    done = _run("import harness.detectors.plugin\n"
                "from harness.detectors import kernels\n"
                "print(len(kernels._TORCHVISION_CPU), kernels.cpu_roi_align())",
                HARNESS_NATIVE="off", HARNESS_NATIVE_CACHE=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0 torchvision's kernels (HARNESS_NATIVE=off)"


def test_module_entry_point_builds(tmp_path):
    done = subprocess.run([sys.executable, "-m", "harness.detectors.native"], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "HARNESS_NATIVE_CACHE": str(tmp_path)}, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("roi_align: " + str(tmp_path)) and f"\nsgd: {tmp_path}" in done.stdout
    failed = subprocess.run([sys.executable, "-m", "harness.detectors.native"], cwd=REPO, capture_output=True,
                            text=True, env={**os.environ, "HARNESS_NATIVE_CACHE": str(tmp_path / "b"),
                                            "CC": "/nonexistent/cc"}, timeout=300)
    assert failed.returncode == 1 and "no C compiler" in failed.stderr
