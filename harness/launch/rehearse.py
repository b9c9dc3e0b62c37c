"""``harness run SPEC --rehearse``: every run of a spec as it would run on the cluster, on this CPU, small.

Each run keeps its cell (recipe, pipelines, image scale, sampler, evaluator, loss modules, backbone
initialisation) and its world size; what changes is only what makes it small and CPU-bound:

* **data**: synthetic images of the real size (:data:`IMAGE_SIZE` pixels, resized by the recipe's own
  pipeline) written in the real dataset's layout under ``<results>/<name>-rehearsal/data/<kind>/``
  (COCO 2017: ``annotations/instances_*2017.json`` + ``train2017/``, with mmdet's 80 COCO classes; LVIS v1:
  ``annotations/lvis_v1_*.json`` with the 1,203 LVIS classes, images named by ``coco_url``), so the runs
  read them through the real dataset classes and evaluators (repeat-factor sampling included);
* **weights**: the recipe's ImageNet checkpoint (``torchvision://resnet50``, ``resnet34``) is written in
  torchvision's architecture and key names, random, into a ``TORCH_HOME`` of the rehearsal's own, so
  mmengine's ``Pretrained`` loading path (and the recipe's frozen stages) runs; a ``backbone_init`` path
  that does not exist here is replaced by such a file;
* **schedule**: 2 epochs of 1 iteration at 1 image a process, a checkpoint every epoch; the first start
  stops after epoch 1 as a preempted job would (``HARNESS_INTERRUPT_AFTER_EPOCH``: no row, the checkpoint
  saved), the second resumes from that checkpoint, trains iteration 2 and evaluates :data:`VAL_IMAGES`
  images;
* **processes**: the run's world size as gloo processes on CPU (submitit's LocalExecutor, one task per
  process, as a SLURM job has one per GPU).

Rows go to ``<results>/<name>-rehearsal/`` (never the real experiment's folder). It prints one line per
run: ok or the failure's one line, the time and the peak memory of its largest process.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import shutil
import time
from pathlib import Path
from typing import Callable

from harness.experiments.spec import RunSpec, Spec

IMAGE_SIZE = 640  # COCO's images are about 640 x 480; the recipes resize them (1333 x 800, ...)
VAL_IMAGES = 2
ITERATIONS = 2  # two epochs of one iteration: a checkpoint after the first, resumed for the second
REAL_KIND = {"synthetic": "coco", "synthetic_lvis": "lvis", "coco": "coco", "lvis": "lvis"}


@dataclasses.dataclass
class Outcome:
    run: RunSpec
    ok: bool
    message: str
    seconds: float
    peak_mb: float | None


def rehearsal_name(spec: Spec) -> str:
    return f"{spec.name}-rehearsal"


# ------------------------------------------------------------------------------------------------
# data in the real layout


def _real_classes(kind: str) -> tuple[str, ...]:
    from mmdet.datasets import CocoDataset, LVISV1Dataset

    return tuple((CocoDataset if kind == "coco" else LVISV1Dataset).METAINFO["classes"])


def _write_split(src_ann: Path, src_images: Path, root: Path, kind: str, split: str) -> None:
    from harness.files import write_json_atomic

    data = json.loads(src_ann.read_text())
    names = _real_classes(kind)
    if kind == "coco":
        data["categories"] = [{"id": i, "name": n, "supercategory": "thing"} for i, n in enumerate(names, start=1)]
        ann_path, image_dir = root / f"annotations/instances_{split}2017.json", root / f"{split}2017"
    else:
        old = {c["id"]: c for c in data["categories"]}
        data["categories"] = [{**old.get(i, {"frequency": "r", "image_count": 0, "instance_count": 0}), "id": i,
                               "name": n, "synset": f"{n}.n.01", "synonyms": [n], "def": n}
                              for i, n in enumerate(names, start=1)]
        ann_path, image_dir = root / f"annotations/lvis_v1_{split}.json", root / f"{split}2017"
    image_dir.mkdir(parents=True, exist_ok=True)
    for image in data["images"]:
        name = image.get("file_name") or image["coco_url"].rsplit("/", 1)[-1]
        source = src_images / name  # COCO layout: the split's folder; LVIS: the root, images named by coco_url
        if "coco_url" in image and not source.exists():
            source = src_images / image["coco_url"].split("images.cocodataset.org/", 1)[-1]
        target = image_dir / Path(name).name
        if not target.exists():
            shutil.copyfile(source, target)
        if kind == "coco":
            image["file_name"] = target.name
        else:
            image["coco_url"] = f"http://images.cocodataset.org/{split}2017/{target.name}"
    write_json_atomic(ann_path, data)


def write_data(kind: str, images: int, folder: Path) -> Path:
    """Synthetic data of ``kind`` (``coco`` or ``lvis``) in that dataset's real layout; returns its root."""
    from harness.data.synthetic import SyntheticParams, ensure_synthetic

    root = folder / "data" / kind
    params = SyntheticParams.default(kind, image_size=IMAGE_SIZE, train_images=images, val_images=VAL_IMAGES,
                                     min_size=32, max_size=IMAGE_SIZE // 2)
    paths = ensure_synthetic(params=params, cache_dir=folder / "data" / "generated")
    for split in ("train", "val"):
        _write_split(paths.ann_files[split], paths.img_dir(split), root, kind, split)
    if kind == "lvis":  # LVIS v1 names images in both COCO folders; both must exist
        for d in ("train2017", "val2017"):
            (root / d).mkdir(exist_ok=True)
    return root


# ------------------------------------------------------------------------------------------------
# weights


def write_weights(runs: list[RunSpec], folder: Path) -> dict[str, str]:
    """Random checkpoints in torchvision's architecture for the runs' ImageNet backbones, in a torch hub
    cache under ``folder``; returns the environment that points torch at it, and the path of a file for
    ``backbone_init`` paths that do not exist here (key ``path``)."""
    import torch
    import torchvision

    from harness.detectors.weights import TORCHVISION, checkpoint_for, torchvision_url

    torch_home = folder / "torch"
    hub = torch_home / "hub" / "checkpoints"
    hub.mkdir(parents=True, exist_ok=True)
    out = {"TORCH_HOME": str(torch_home)}
    for run in runs:
        ckpt = checkpoint_for(run.detector, run.profile, run.backbone_init)
        if ckpt is None:
            continue
        if ckpt.startswith(TORCHVISION):
            name = ckpt[len(TORCHVISION):]
            target = hub / torchvision_url(ckpt).rsplit("/", 1)[-1]
        elif not Path(ckpt).exists():
            name, target = "resnet50", folder / "weights" / "backbone.pth"
            out["path"] = str(target)
        else:
            continue
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            torch.save(getattr(torchvision.models, name)(weights=None).state_dict(), target)
    return out


# ------------------------------------------------------------------------------------------------
# the runs


def rehearsal_run(run: RunSpec, name: str, roots: dict[str, Path], backbone_path: str | None) -> RunSpec:
    world = run.world_size
    dataset = {**run.dataset, "kind": REAL_KIND[run.dataset["kind"]], "root": str(roots[REAL_KIND[run.dataset["kind"]]])}
    for key in ("train_images", "val_images"):
        dataset.pop(key, None)
    init = run.backbone_init
    if backbone_path and init not in ("imagenet", "scratch") and not Path(init).exists():
        init = backbone_path
    return dataclasses.replace(
        run, experiment=name, dataset=dataset, backbone_init=init,
        schedule={**run.schedule, "epochs": ITERATIONS, "max_iters_per_epoch": 1, "batch_per_gpu": 1,
                  "checkpoint_every": 1, "val_every": None},
        launch={**run.launch, "gpus_per_run": 0, "tasks_per_run": world, "cpus_per_run": world,
                "time_min": max(run.launch["time_min"], 30)})


class RehearsalJob:
    """One rehearsal run in one task of a LocalExecutor job: a start stopped after epoch 1 (the
    checkpoint saved), then a second start that resumes, finishes and evaluates."""

    def __init__(self, run: RunSpec, results_dir: Path):
        self.run, self.results_dir = run.to_dict(), str(results_dir)

    def __call__(self) -> dict:
        from harness.run.hooks import Interrupted
        from harness.run.job import RunJob, work_dir

        spec = RunSpec.from_dict(self.run)
        os.environ["HARNESS_INTERRUPT_AFTER_EPOCH"] = "1"
        try:
            first = RunJob(spec, self.results_dir)()
        except Interrupted:
            first = None
        finally:
            os.environ.pop("HARNESS_INTERRUPT_AFTER_EPOCH", None)
        resumed_from = work_dir(self.results_dir, spec.run_id) / "last_checkpoint"
        if first is not None:  # it ended before the interruption: a failure, or skipped
            row = first
        elif not resumed_from.exists():
            row = {"status": "failed", "reason": "no checkpoint after epoch 1 to resume from"}
        else:
            row = RunJob(spec, self.results_dir)()
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {"status": row.get("status"), "reason": row.get("reason"), "peak_mb": peak_mb}


def rehearse(spec: Spec, results_root: Path, out: Callable[[str], None] = print,
             log: Callable[[str], None] = print) -> list[Outcome]:
    """Rehearse every run of ``spec`` (see the module docstring); one line per run on ``out``."""
    import submitit

    name = rehearsal_name(spec)
    folder = Path(results_root) / name
    runs = spec.runs()
    started, load_before = time.time(), os.getloadavg()[0]
    kinds = sorted({REAL_KIND[r.dataset["kind"]] for r in runs})
    images = max(r.world_size for r in runs) * ITERATIONS
    log(f"rehearsal of {spec.name}: {len(runs)} run(s) on CPU into {folder}; writing data ({', '.join(kinds)}, "
        f"{IMAGE_SIZE}-pixel images) and backbone weights ...")
    roots = {kind: write_data(kind, images, folder) for kind in kinds}
    env = write_weights(runs, folder)
    backbone_path = env.pop("path", None)
    os.environ.update(env)
    log(f"ready in {time.time() - started:.0f} s")
    executor = submitit.LocalExecutor(folder=folder / "local" / "%j")
    outcomes = []
    for i, run in enumerate(runs, start=1):
        small = rehearsal_run(run, name, roots, backbone_path)
        shutil.rmtree(folder / "work" / small.run_id, ignore_errors=True)  # every rehearsal starts afresh
        (folder / "runs" / f"{small.run_id}.json").unlink(missing_ok=True)
        executor.update_parameters(timeout_min=small.launch["time_min"], tasks_per_node=small.world_size)
        begun = time.time()
        job = executor.submit(RehearsalJob(small, folder))
        try:
            results = job.results()
            head = results[0]
            ok = head["status"] == "done"
            message = "ok" if ok else f"failed: {head.get('reason')}"
            peak = max(r["peak_mb"] for r in results)
        except Exception as exc:  # a task died (killed, out of memory)
            ok, peak = False, None
            text = str(exc).strip().splitlines()
            message = f"failed: {type(exc).__name__}: {text[-1] if text else ''}"
        outcome = Outcome(run, ok, message, time.time() - begun, peak)
        outcomes.append(outcome)
        memory = f"{peak:,.0f} MB" if peak is not None else "? MB"
        out(f"{i:>3}/{len(runs)} {run.detector:<13} {run.loss:<12} {run.world_size} process(es)  "
            f"{outcome.seconds:6.1f} s  {memory:>9}  {message}")
    failed = sum(not o.ok for o in outcomes)
    seconds = time.time() - started
    report = write_report(folder / "rehearse.md", spec, outcomes, seconds, load_before)
    out(f"rehearsal of {spec.name}: {len(outcomes) - failed} ok, {failed} failed, {seconds:.0f} s in all; "
        f"rows under {folder / 'runs'}; report {report}")
    return outcomes


def write_report(path: Path, spec: Spec, outcomes: list[Outcome], seconds: float, load_before: float) -> Path:
    """``rehearse.md``: every run's outcome, time and peak memory, the total, and the machine it ran on
    (cores and load: a shared machine's times are not this code's alone)."""
    from harness.files import write_text_atomic

    cores = os.cpu_count()
    load_after = os.getloadavg()[0]
    lines = [f"# Rehearsal of {spec.name}", "",
             f"{len(outcomes)} run(s), {sum(o.ok for o in outcomes)} ok, in {seconds / 60:.1f} min on {cores} core(s) "
             f"(1-minute load average {load_before:.1f} at the start, {load_after:.1f} at the end); "
             f"{ITERATIONS} iterations at 1 image a process, {IMAGE_SIZE}-pixel synthetic images, {VAL_IMAGES} "
             f"evaluated. Written by `harness run {spec.path or spec.name} --rehearse`.", "",
             "| detector | loss | processes | outcome | s | peak MB (largest process) |", "|---|---|---:|---|---:|---:|"]
    for o in outcomes:
        peak = f"{o.peak_mb:,.0f}" if o.peak_mb is not None else "?"
        lines.append(f"| {o.run.detector} | {o.run.loss} | {o.run.world_size} | {o.message} | {o.seconds:.1f} | {peak} |")
    return write_text_atomic(path, "\n".join(lines) + "\n")
