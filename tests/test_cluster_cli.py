"""`harness cluster list` / `init`: what they refuse and how they fail, one line each."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from harness.cli import main
from harness.launch import cluster


def errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.mark.parametrize("extra, named", [(["mysite"], "NAME"), (["--account", "lab"], "--account"),
                                          (["--force"], "--force")])
def test_list_refuses_what_only_init_takes(capsys, extra, named):
    assert main(["cluster", "list", *extra]) == 2
    line, = errors(capsys)
    assert f"cluster list takes no {named}" in line


def test_list_names_a_profile_that_does_not_load_and_lists_the_others(tmp_path, monkeypatch, capsys):
    for name in ("example-a100", "local"):
        shutil.copy(cluster.PROFILES_DIR / f"{name}.yaml", tmp_path)
    (tmp_path / "mysite.yaml").write_text("name: mysite\npartitions: {default: gpu\naccount: x\n")
    monkeypatch.setattr(cluster, "PROFILES_DIR", tmp_path)
    assert main(["cluster", "list"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == ["example-a100", "local", "mysite"]
    assert "does not load" in out[2] and "not valid YAML at line 3" in out[2]


def test_init_where_sinfo_hangs_says_what_to_do(tmp_path, monkeypatch, capsys):
    def hang(*args, **kwargs):
        raise subprocess.TimeoutExpired(args[0], kwargs.get("timeout"))

    monkeypatch.setattr(cluster.subprocess, "run", hang)
    assert main(["cluster", "init", "x", "--out", str(tmp_path / "x.yaml")]) == 2
    line, = errors(capsys)
    assert "did not answer within 30 s" in line and "--sinfo sinfo.txt" in line and "sinfo -h -o" in line
    assert not (tmp_path / "x.yaml").exists()
