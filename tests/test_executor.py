"""`--executor auto` picks SLURM only where a controller answers."""

from __future__ import annotations

import subprocess

from harness.launch import slurm


def test_auto_is_local_without_slurm_commands(monkeypatch):
    monkeypatch.setattr(slurm.shutil, "which", lambda name: None)
    assert slurm.resolve_executor("auto") == "local"


def test_auto_is_local_when_slurm_is_installed_but_unconfigured(monkeypatch):
    monkeypatch.setattr(slurm.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(slurm.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 1, b"", b"fatal"))
    assert slurm.resolve_executor("auto") == "local"


def test_auto_is_slurm_when_sinfo_answers(monkeypatch):
    monkeypatch.setattr(slurm.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(slurm.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, b"debug*\n", b""))
    assert slurm.resolve_executor("auto") == "slurm"
    assert slurm.resolve_executor("debug") == "debug"
