"""Every file and folder the harness writes honours the user's umask (a teammate reads a shared results
folder), through the real writers: a result row, a table, a plot, a run's lock, a local run's log and a
generated dataset."""

from __future__ import annotations

import os
import stat

import pytest

from harness.data import SyntheticParams, ensure_synthetic
from harness.files import make_temporary_folder, prefixed, write_text_atomic
from harness.rows import row_path, write_row
from harness.run.job import RunLock


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(params=[0o022, 0o027, 0o002], ids=["umask022", "umask027", "umask002"])
def umask(request):
    saved = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(saved)


def test_rows_tables_plots_and_locks_get_the_umasks_modes(tmp_path, umask):
    from matplotlib.figure import Figure

    from harness.results.plots import save_png_atomic

    files, folders = 0o666 & ~umask, 0o777 & ~umask
    experiment = tmp_path / "results" / "exp"
    write_row(experiment, {"run_id": "r1", "status": "done", "metrics": {"bbox_AP": 0.5}})
    assert mode(row_path(experiment, "r1")) == files
    assert mode(experiment) == folders and mode(experiment / "runs") == folders
    assert mode(write_text_atomic(experiment / "tables" / "tables.md", "# t\n")) == files
    fig = Figure()
    fig.add_subplot().plot([0, 1])
    assert mode(save_png_atomic(fig, experiment / "plots" / "p.png")) == files
    lock = RunLock(experiment / "work" / "r1")
    assert lock.acquire()
    try:
        assert mode(lock.path) == files
    finally:
        lock.release()


def test_a_local_runs_log_gets_the_umasks_mode(tmp_path, umask, monkeypatch):
    from harness.launch import local

    class Stop(Exception):
        pass

    class NoJob:
        def __init__(self, *args):
            raise Stop  # the log is open by now: the job itself is not what is tested

    monkeypatch.setattr(local, "RunJob", NoJob)
    log = tmp_path / "log.txt"
    saved = os.dup(1), os.dup(2)
    try:
        with pytest.raises(Stop):
            local._run_in_worker({}, str(tmp_path), False, "attempt", 1, str(log))
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
    assert mode(log) == 0o666 & ~umask


def test_a_generated_dataset_is_readable_by_the_group(tmp_path, umask):
    paths = ensure_synthetic(params=SyntheticParams.default("coco", train_images=2, val_images=2), cache_dir=tmp_path)
    assert mode(paths.root) == 0o777 & ~umask
    assert mode(paths.train_ann) == 0o666 & ~umask


def test_temporary_folders_are_new_each_time(tmp_path):
    a, b = make_temporary_folder(tmp_path, ".x."), make_temporary_folder(tmp_path, ".x.")
    assert a != b and a.is_dir() and b.is_dir() and a.name.startswith(".x.")


def test_an_output_prefix_with_a_dot_keeps_it_the_suffix_is_appended(tmp_path):
    """`--out results/bench/gpu.2026-12-04` is the file gpu.2026-12-04.md, not gpu.md (Path.with_suffix)."""
    assert prefixed(tmp_path / "gpu.2026-12-04", ".md") == tmp_path / "gpu.2026-12-04.md"
    assert prefixed("results/bench/steps", ".csv").as_posix() == "results/bench/steps.csv"
    assert prefixed("run.v1.2", ".csv").as_posix() == "run.v1.2.csv"
