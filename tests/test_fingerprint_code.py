"""The code part of a run's fingerprint is the content of ``harness/``, the same on every machine: a
teammate's checkout (owned by another user, which git refuses as "dubious ownership") or a machine where
git does not answer records the same tree as a working git for the same files, and a difference says
"git unavailable" instead of inventing a commit ``?``.

The checkouts are clones of this repository's HEAD in a temporary folder: nothing under the working
tree's ``harness/`` is touched."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.experiments.spec import parse_spec
from harness.run import fingerprint as fpm

REPO = Path(__file__).resolve().parents[1]


def git(*args, cwd) -> str:
    return subprocess.run(["git", "-c", f"safe.directory={cwd}", *args], cwd=cwd, capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture
def clone(tmp_path) -> Path:
    """A clean checkout of this repository's HEAD."""
    path = tmp_path / "checkout"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(path)], check=True)
    return path


@pytest.fixture
def a_run():
    raw = {"name": "fp", "dataset": {"kind": "synthetic", "train_images": 8, "val_images": 4}, "detectors": ["atss"],
           "losses": ["focal"], "schedule": {"epochs": 1, "max_iters_per_epoch": 1, "batch_per_gpu": 2}}
    return parse_spec(raw, name="fp", detectors=["atss"], losses_loader=lambda mods, origin="": ["focal"]).runs()[0]


def state_of(checkout: Path, monkeypatch, git_works: bool = True) -> dict:
    """The code state a job loaded from ``checkout`` records; ``git_works=False``: git is not on the PATH."""
    with monkeypatch.context() as m:
        m.setattr(fpm, "ROOT", checkout)
        if not git_works:
            m.setenv("PATH", str(checkout / "no-git-here"))
        return fpm._code_state()


def fingerprint(run, code: dict) -> dict:
    return fpm._assemble(run, code, {}, "c" * 16)


def test_the_code_tree_is_gits_tree_of_the_files_as_they_are(clone, monkeypatch):
    state = state_of(clone, monkeypatch)
    assert state["harness_tree"] == git("rev-parse", "HEAD:harness", cwd=clone)  # a clean checkout: HEAD's tree
    assert state["git_commit"] == git("rev-parse", "HEAD", cwd=clone) and state["git_dirty"] is False
    (clone / "harness" / "__pycache__").mkdir(exist_ok=True)
    (clone / "harness" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    assert state_of(clone, monkeypatch)["harness_tree"] == state["harness_tree"]  # compiled files are not code
    (clone / "harness" / "scratch.py").write_text("X = 1\n")  # untracked: part of what runs
    untracked = state_of(clone, monkeypatch)["harness_tree"]
    assert untracked != state["harness_tree"]
    git("add", "harness/scratch.py", cwd=clone)
    assert git("write-tree", "--prefix=harness/", cwd=clone) == untracked  # the tree its commit would have


def test_without_git_the_same_files_give_the_same_fingerprint_and_a_difference_says_git_unavailable(
        clone, a_run, monkeypatch):
    with_git, without = state_of(clone, monkeypatch), state_of(clone, monkeypatch, git_works=False)
    assert with_git["git_commit"] and without["git_commit"] is None and without["git_dirty"] is None
    a, b = fingerprint(a_run, with_git), fingerprint(a_run, without)
    assert fpm.stale_reasons(a, b) == [] and fpm.stale_reasons(b, a) == [] and a["digest"] == b["digest"]

    rank_sort = clone / "harness" / "losses" / "rank_sort.py"
    rank_sort.write_text(rank_sort.read_text() + "\n# edited\n")
    edited = fingerprint(a_run, state_of(clone, monkeypatch, git_works=False))
    unavailable = "harness code changed (the files under harness/ differ; git unavailable {}, no commit to name)"
    assert fpm.stale_reasons(a, edited) == [unavailable.format("here")]
    assert fpm.stale_reasons(edited, a) == [unavailable.format("where the row was made")]
    assert fpm.stale_reasons(b, edited) == [unavailable.format("on either side")]
    assert fpm.stale_reasons(a, fingerprint(a_run, state_of(clone, monkeypatch))) == [
        "harness code changed (uncommitted changes under harness/)"]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("chown") is None,
                    reason="needs root to give a checkout to another user")
def test_a_checkout_owned_by_another_user_is_read_with_git(clone, a_run, monkeypatch):
    """git refuses a repository another user owns ("detected dubious ownership"); the fingerprint tells
    git this checkout is safe, so a teammate's checkout of the same commit records the same state."""
    mine = state_of(clone, monkeypatch)
    subprocess.run(["chown", "-R", "nobody", str(clone)], check=True)
    refused = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True)
    assert refused.returncode != 0 and "dubious ownership" in refused.stderr  # the situation this is about
    index = (clone / ".git" / "index").stat().st_mtime_ns
    theirs = state_of(clone, monkeypatch)
    assert theirs["git_commit"] == mine["git_commit"] and theirs["git_dirty"] is False
    assert fpm.stale_reasons(fingerprint(a_run, mine), fingerprint(a_run, theirs)) == []
    assert (clone / ".git" / "index").stat().st_mtime_ns == index  # read only: git status wrote no index
