"""The Makefile's entry points hand ``ARGS`` to the harness commands the docs say they reach."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")


def planned(*words: str) -> list[str]:
    """The commands ``make`` would run (``make -n``), one a line."""
    done = subprocess.run(["make", "-n", *words], cwd=ROOT, capture_output=True, text=True, check=True)
    return done.stdout.splitlines()


def test_benchmark_passes_args_to_harness_benchmark():
    lines = planned("benchmark", "EXPERIMENT=experiments/coco_1x.yaml", "ARGS=--cluster mysite --account proj")
    assert any(line.endswith("-m harness benchmark experiments/coco_1x.yaml --cluster mysite --account proj")
               for line in lines), lines


def test_doctor_passes_args_with_the_spec():
    lines = planned("doctor", "EXPERIMENT=experiments/coco_1x.yaml", "ARGS=--cluster mysite")
    assert any(line.endswith("-m harness doctor experiments/coco_1x.yaml --cluster mysite") for line in lines), lines


def test_without_args_the_commands_are_unchanged():
    lines = planned("benchmark")
    assert any(line.endswith("-m harness benchmark experiments/synthetic.yaml ") or
               line.endswith("-m harness benchmark experiments/synthetic.yaml") for line in lines), lines
