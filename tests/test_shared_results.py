"""A teammate's results folder that this user may not write: `harness run` stops with one line (whose
folder, its mode, what a team does), exit 2, not a PermissionError traceback. Run as another user
(`nobody`) through setpriv, so it needs root (as CI has); elsewhere it is skipped."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv to act as another user")
def test_a_results_folder_this_user_cannot_write_is_one_line_exit_2():
    folder = Path(tempfile.mkdtemp(prefix="shared-results-"))  # not under pytest's 0700 tmp: nobody reads it
    try:
        os.chmod(folder, 0o755)
        spec = folder / "team.yaml"
        spec.write_text(yaml.safe_dump({"name": "team", "dataset": {"kind": "synthetic", "train_images": 8, "val_images": 4},
                                        "profile": "tiny", "detectors": ["atss"], "losses": ["rs"],
                                        "schedule": {"epochs": 1, "max_iters_per_epoch": 1, "batch_per_gpu": 2}}))
        os.chmod(spec, 0o644)
        (folder / "results").mkdir(mode=0o755)  # a teammate's (root's), umask 022
        proc = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-m",
                               "harness", "run", str(spec), "--executor", "debug", "--results", str(folder / "results")],
                              capture_output=True, text=True, cwd=folder, timeout=300,
                              env={**os.environ, "HOME": str(folder), "PYTHONPATH": str(REPO)})
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert "permission denied" in lines[0] and "belongs to root:" in lines[0] and "mode 755" in lines[0]
        assert "umask 002" in lines[0] and not (folder / "results" / "team").exists()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
