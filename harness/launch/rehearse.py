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
  process, as a SLURM job has one per GPU). The runs of one world size go one after the other through
  one job, whose processes start, import torch and mmdet and join their gloo group once for all of them
  (about 20 s of a Faster R-CNN run's 95 s on 2 cores when each run started its own); each run still
  builds its model, loads its weights and resumes from its own checkpoint. A run that raises fails alone; one that kills its job's
  processes (out of memory, a crash) fails, and a new job goes on with the runs after it.

Rows go to ``<results>/<name>-rehearsal/`` (never the real experiment's folder). It prints one line per
run as it ends: ok or the failure's one line, its time (the first run of a job includes the processes'
start) and the peak memory of its largest process (that run's own peak, on Linux).
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


OUTCOMES = "outcomes"  # <folder>/outcomes/<run_id>.<rank>.json: one per run and process, as each run ends


def _reset_peak_memory() -> None:
    """Start this process's peak resident memory afresh (Linux: ``clear_refs`` 5), so that each run of a
    job reports its own peak; elsewhere the peak stays the process's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_memory_mb() -> float:
    """Peak resident memory of this process since :func:`_reset_peak_memory` (``VmHWM``), in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def outcome_path(folder: Path, run_id: str, rank: int) -> Path:
    return Path(folder) / OUTCOMES / f"{run_id}.{rank}.json"


def pid_path(folder: Path, job_id: str, rank: int) -> Path:
    """Where a job's process ``rank`` writes its process id: the driver tells a dead process by it."""
    return Path(folder) / OUTCOMES / f"job-{job_id}.{rank}.pid"


def _dead_process(folder: Path, job_id: str, run: RunSpec) -> int | None:
    """The rank of a process of job ``job_id`` that has ended without writing its outcome of ``run``."""
    for rank in range(run.world_size):
        if outcome_path(folder, run.run_id, rank).exists():
            continue
        try:
            pid = int(pid_path(folder, job_id, rank).read_text())
        except (OSError, ValueError):
            continue  # not started yet
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return rank
        except PermissionError:
            pass
    return None


class RehearsalJob:
    """Rehearsal runs of one world size, one after the other, in the tasks of one LocalExecutor job (its
    processes and their imports, and the gloo group, serve every run). Each run: a start stopped after
    epoch 1 (the checkpoint saved), then a second start that resumes, finishes and evaluates; each process
    then writes the run's outcome (:func:`outcome_path`). A run that already has this process's outcome is
    skipped, so a job resubmitted after a crash goes on with the runs after the one that crashed."""

    def __init__(self, runs: list[RunSpec], results_dir: Path):
        self.runs, self.results_dir = [run.to_dict() for run in runs], str(results_dir)

    def __call__(self) -> None:
        from harness.files import write_json_atomic
        from harness.run.job import _job_id, _rank, freeze_imported

        rank = _rank()
        pid = pid_path(Path(self.results_dir), _job_id(), rank)
        pid.parent.mkdir(parents=True, exist_ok=True)
        pid.write_text(str(os.getpid()))
        freeze_imported("mmengine.runner", "harness.detectors.plugin")  # imported once for all the runs
        for data in self.runs:
            spec = RunSpec.from_dict(data)
            path = outcome_path(Path(self.results_dir), spec.run_id, rank)
            if path.exists():
                continue
            _reset_peak_memory()
            begun = time.time()
            row = self._rehearse(spec)
            write_json_atomic(path, {"status": row.get("status"), "reason": row.get("reason"),
                                     "peak_mb": _peak_memory_mb(), "seconds": time.time() - begun})

    def _rehearse(self, spec: RunSpec) -> dict:
        from harness.run.hooks import Interrupted
        from harness.run.job import RunJob, work_dir

        os.environ["HARNESS_INTERRUPT_AFTER_EPOCH"] = "1"
        try:
            first = RunJob(spec, self.results_dir)()
        except Interrupted:
            first = None
        except Exception as exc:  # noqa: BLE001 - the run's failure, reported as its outcome; the next run goes on
            first = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
        finally:
            os.environ.pop("HARNESS_INTERRUPT_AFTER_EPOCH", None)
        resumed_from = work_dir(self.results_dir, spec.run_id) / "last_checkpoint"
        if first is not None:  # it ended before the interruption: a failure, or skipped
            return first
        if not resumed_from.exists():
            return {"status": "failed", "reason": "no checkpoint after epoch 1 to resume from"}
        try:
            return RunJob(spec, self.results_dir)()
        except Exception as exc:  # noqa: BLE001
            return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}


def _outcomes(folder: Path, run: RunSpec) -> list[dict] | None:
    """Every process's outcome of ``run`` once all have written theirs, else None."""
    found = []
    for rank in range(run.world_size):
        try:
            found.append(json.loads(outcome_path(folder, run.run_id, rank).read_text()))
        except (OSError, ValueError):
            return None
    return found


def _job_failure(job) -> str:
    try:
        job.result()
    except Exception as exc:  # noqa: BLE001 - how the job's processes ended, in one line
        text = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {text[-1] if text else ''}"
    return "its processes ended before it did"


def _submit(executor, folder: Path, runs: list[RunSpec], world: int):
    """One job rehearsing ``runs`` (of world size ``world``) one after the other, each from scratch (after
    a death, the job's other processes may have begun the next run)."""
    for run in runs:
        shutil.rmtree(folder / "work" / run.run_id, ignore_errors=True)
        (folder / "runs" / f"{run.run_id}.json").unlink(missing_ok=True)
        for rank in range(world):
            outcome_path(folder, run.run_id, rank).unlink(missing_ok=True)
    longest = max(run.launch["time_min"] for run in runs)
    executor.update_parameters(timeout_min=longest * len(runs), tasks_per_node=world)
    return executor.submit(RehearsalJob(runs, folder))


def _follow(job, folder: Path, pending: list[RunSpec], small: dict[str, RunSpec],
            report: Callable[[RunSpec, Outcome], None], poll_s: float) -> None:
    """Report ``pending``'s runs (removing them) as ``job`` writes their outcomes; returns when all are
    reported, or after failing the run a process died in (the job stopped). A run's time runs from the
    previous run's end (the first's: from the job's start, its processes' start included)."""
    world = small[pending[0].run_id].world_size
    mark = time.time()
    while pending:
        head = small[pending[0].run_id]
        found = _outcomes(folder, head)
        dead = None if found is not None else _dead_process(folder, job.job_id, head)
        if found is None and (dead is not None or job.done()):
            found = _outcomes(folder, head)  # written just before the end
            if found is None:
                if not job.done():  # the others wait for the dead one in gloo: stop them
                    job.cancel()
                    while not job.done():
                        time.sleep(poll_s)
                if dead is not None:
                    why = (f"process {dead} of {world} died without a Python error (killed, out of memory or a "
                           f"crash); its log: {job.task(dead).paths.stderr}")
                else:
                    why = f"the job's processes ended ({_job_failure(job)})"
                run = pending.pop(0)
                report(run, Outcome(run, False, f"failed: {why}", time.time() - mark, None))
                return
        if found is None:
            time.sleep(poll_s)
            continue
        run = pending.pop(0)
        ok = found[0]["status"] == "done"
        message = "ok" if ok else f"failed: {found[0].get('reason')}"
        now = time.time()
        report(run, Outcome(run, ok, message, now - mark, max(o["peak_mb"] for o in found)))
        mark = now
    try:
        job.result()
    except Exception:  # noqa: BLE001 - every run has its outcome already
        pass


def rehearse(spec: Spec, results_root: Path, out: Callable[[str], None] = print,
             log: Callable[[str], None] = print, poll_s: float = 0.5) -> list[Outcome]:
    """Rehearse every run of ``spec`` (see the module docstring); one line per run on ``out``, as it ends.
    Runs of one world size share one job (its processes start once); a job whose processes die (killed,
    out of memory) fails the run it was in, and a new job goes on with the runs after it."""
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
    small = {run.run_id: rehearsal_run(run, name, roots, backbone_path) for run in runs}
    executor = submitit.LocalExecutor(folder=folder / "local" / "%j")
    by_world: dict[int, list[RunSpec]] = {}
    for run in runs:
        by_world.setdefault(run.world_size, []).append(run)
    outcomes: dict[str, Outcome] = {}

    def report(run: RunSpec, outcome: Outcome) -> None:
        outcomes[run.run_id] = outcome
        memory = f"{outcome.peak_mb:,.0f} MB" if outcome.peak_mb is not None else "? MB"
        out(f"{len(outcomes):>3}/{len(runs)} {run.detector:<13} {run.loss:<12} {run.world_size} process(es)  "
            f"{outcome.seconds:6.1f} s  {memory:>9}  {outcome.message}")

    # No tcmalloc here (harness.run.allocator): at the paper scale it made a rehearsed Faster R-CNN 10-15 % slower
    for world, group in by_world.items():
        pending = list(group)
        while pending:  # one job for the runs left; after a death, a new one for those after it
            _follow(_submit(executor, folder, [small[r.run_id] for r in pending], world), folder, pending,
                    small, report, poll_s)
    ordered = [outcomes[r.run_id] for r in runs]
    failed = sum(not o.ok for o in ordered)
    seconds = time.time() - started
    report_path = write_report(folder / "rehearse.md", spec, ordered, seconds, load_before)
    out(f"rehearsal of {spec.name}: {len(ordered) - failed} ok, {failed} failed, {seconds:.0f} s in all; "
        f"rows under {folder / 'runs'}; report {report_path}")
    return ordered


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
