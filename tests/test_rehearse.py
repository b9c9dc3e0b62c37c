"""``harness run SPEC --rehearse``: the spec's runs as they would run on the cluster, on CPU, small.

A two-process run (gloo) of a cell whose backbone starts from ImageNet is rehearsed end to end: data in
COCO's layout with its 80 classes, a torchvision-architecture checkpoint loaded through mmengine's
Pretrained path, stopped after epoch 1 and resumed from the checkpoint, evaluated, its row in a results
folder of its own. LVIS's layout carries the 1,203 classes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.run.allocator import in_use as allocator_in_use

pytestmark = pytest.mark.slow


def test_a_two_process_imagenet_run_rehearses_with_a_resume(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-weights-here"))  # the rehearsal writes its own
    spec = tmp_path / "grid.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "grid", "dataset": {"kind": "coco"}, "profile": "paper", "backbone_init": "imagenet",
        "detectors": ["atss"], "losses": ["focal"], "schedule": {"epochs": 12, "batch_per_gpu": 4},
        "launch": {"gpus_per_run": 2, "cpus_per_run": 16, "mem_gb": 64, "time_min": 600}}))
    results = tmp_path / "results"
    assert main(["run", str(spec), "--rehearse", "--results", str(results)]) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "  1/1 atss          focal        2 process(es)" in out and out.count(" ok") >= 1
    folder = results / "grid-rehearsal"
    assert not (results / "grid").exists()  # never the real experiment's folder
    row, = [json.loads(p.read_text()) for p in (folder / "runs").glob("*.json")]
    assert row["status"] == "done" and row["provenance"]["world_size"] == 2
    # no tcmalloc added (slower at the paper scale): the allocator of the process that rehearsed
    assert row["provenance"]["allocator"] == allocator_in_use()
    assert row["dataset"]["kind"] == "coco" and row["backbone_init"] == "imagenet"
    work = folder / "work" / row["run_id"]
    logs = "\n".join(p.read_text() for p in work.glob("*/*.log"))
    assert "load model from: torchvision://resnet50" in logs  # the Pretrained path, from the written file
    assert "resumed epoch: 1, iter: 1" in logs  # the second start resumed the first one's checkpoint
    categories = json.loads((folder / "data" / "coco" / "annotations" / "instances_val2017.json").read_text())
    assert len(categories["categories"]) == 80
    assert "| atss | focal | 2 | ok |" in (folder / "rehearse.md").read_text()


def test_lvis_rehearsal_data_has_the_lvis_classes_in_its_layout(tmp_path):
    from harness.data.real import lvis_paths
    from harness.launch.rehearse import write_data

    root = write_data("lvis", 2, tmp_path)
    paths = lvis_paths(root)  # the real layout's checks pass
    data = json.loads(paths.val_ann.read_text())
    assert len(data["categories"]) == 1203 and all("frequency" in c for c in data["categories"])
    image = data["images"][0]
    assert (root / image["coco_url"].split("images.cocodataset.org/")[1]).is_file()


FAILING_LOSSES = '''
"""Two losses that fail on purpose: ``raises`` raises in its first step (every process); ``dies`` ends the
process of rank 1 in its first step (rank 0 goes on and waits for it in gloo)."""
import os

from harness.losses import ClassificationOutput, LossSpec, register_loss


def _raises(logits, targets, loc_errors=None):
    raise RuntimeError("the raises loss raised on purpose")


def _dies(logits, targets, loc_errors=None):
    if os.environ.get("RANK") == "1":
        os._exit(3)
    loss = (logits * 0).sum()
    return ClassificationOutput(loss=loss, components={"dies": loss.detach()})


for name, classify in (("raises", _raises), ("dies", _dies)):
    register_loss(LossSpec(name=name, summary="fails on purpose (tests)", fn=lambda logits, targets: logits.sum(),
                           classify=classify, targets="quality", ranking=False, balancing="fixed", defaults={},
                           usage="tests only", module=__name__))
'''


def test_runs_share_a_job_and_a_failure_or_a_dead_process_fails_only_its_run(tmp_path, capsys):
    """Three two-process runs of one world size go through one job; the first raises (its run fails, the
    job goes on), the second kills one process (its run fails, the job is stopped, a new job goes on), the
    third passes. Each line says what happened to its own run."""
    (tmp_path / "failing.py").write_text(FAILING_LOSSES)
    spec = tmp_path / "three.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "three", "dataset": {"kind": "coco"}, "profile": "paper", "backbone_init": "scratch",
        "loss_modules": ["failing.py"], "detectors": ["atss"], "losses": ["raises", "dies", "focal"],
        "schedule": {"epochs": 12, "batch_per_gpu": 4},
        "launch": {"gpus_per_run": 2, "cpus_per_run": 16, "mem_gb": 64, "time_min": 600}}))
    results = tmp_path / "results"
    assert main(["run", str(spec), "--rehearse", "--results", str(results)]) == 1
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "process(es)" in line]
    assert len(lines) == 3, out
    assert " raises " in lines[0] and "failed:" in lines[0] and "raised on purpose" in lines[0], lines[0]
    assert " dies " in lines[1] and "failed: process 1 of 2 died without a Python error" in lines[1], lines[1]
    assert Path(lines[1].split("its log: ")[1]).is_file()
    assert " focal " in lines[2] and lines[2].endswith(" ok"), lines[2]
    folder = results / "three-rehearsal"
    jobs = {p.name.split(".")[0] for p in (folder / "outcomes").glob("job-*.pid")}
    assert len(jobs) == 2  # the first two runs in one job, the third in the job started after the death
    report = (folder / "rehearse.md").read_text()
    assert "| atss | focal | 2 | ok |" in report and "| atss | dies | 2 | failed: process 1 of 2 died" in report
