"""The command line as a user runs it: ``python -m harness ARGS`` in a process of its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def harness(*args, cwd: Path = REPO, timeout: float = 900) -> subprocess.CompletedProcess:
    """``harness ARGS`` from ``cwd`` (the repository root by default), its output captured as text."""
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)
