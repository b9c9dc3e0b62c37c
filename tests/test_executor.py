"""`--executor auto` picks SLURM only where a controller answers."""

from __future__ import annotations

import subprocess

from harness.launch import dispatch


def test_auto_is_local_without_slurm_commands(monkeypatch):
    monkeypatch.setattr(dispatch.shutil, "which", lambda name: None)
    assert dispatch.resolve_executor("auto") == "local"


def test_auto_is_local_when_slurm_is_installed_but_unconfigured(monkeypatch):
    monkeypatch.setattr(dispatch.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(dispatch.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 1, b"", b"fatal"))
    assert dispatch.resolve_executor("auto") == "local"


def test_auto_is_slurm_when_sinfo_answers(monkeypatch):
    monkeypatch.setattr(dispatch.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(dispatch.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, b"debug*\n", b""))
    assert dispatch.resolve_executor("auto") == "slurm"
    assert dispatch.resolve_executor("debug") == "debug"
