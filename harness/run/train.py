"""Train and evaluate one run with mmengine's Runner (called inside a :class:`~harness.run.job.RunJob`).

The cell's config comes from :func:`harness.detectors.build_cell_config` (detector × loss × profile ×
dataset format), which makes every change to mmdet's config, each with its why. This module binds it to
the run's data, schedule, seed and work folder (nothing else), then:

* imports the spec's external loss modules in this process first (a run whose loss module cannot be
  imported here fails before training, the reason in its row);

* trains, saving a checkpoint every ``schedule.checkpoint_every`` epochs (and at the end) and resuming
  from the latest checkpoint in the work folder when one exists (a requeued job continues there), and
  tells whoever listens (:func:`on_training_start`: the job, which records each start's fingerprint)
  where training begins;
* stops the run as ``failed`` with the reason on a NaN or Inf loss (:class:`NonFiniteLossHook`);
* keeps the training-loss curve (``curve.json`` in the work folder, kept across resumes);
* with ``schedule.val_every`` k, validates on the validation split every k epochs (and after the last)
  with mmengine's validation loop, keeping each result (``val_curve.json``, the row's ``val_curve``);
* evaluates the final model on the validation split with :mod:`harness.evaluation` (COCO or LVIS AP and
  oLRP, box and mask as the detector predicts them).

A run of several processes (``RunSpec.world_size``) is one job of that many tasks (SLURM or local):
each task exports torch.distributed's variables from submitit's environment and mmengine's ``pytorch``
launcher trains with distributed data parallelism: NCCL, one GPU per task, or gloo on CPU (the process
group is set up here, since mmengine's set-up assumes a GPU, and the model wrapper takes no device ids).
Every task trains and evaluates; the caller writes the row from rank 0 only.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.experiments.spec import RunSpec, import_loss_modules

PREDICTIONS_FILE = "predictions.json"
PER_CLASS_FILE = "per_class.json"  # each class's AP, written by the metric, kept in the row


@dataclass
class TrainResult:
    metrics: dict
    curve: list
    info: dict = field(default_factory=dict)
    val_curve: list | None = None  # with schedule.val_every: the validation metrics every k epochs
    per_class: dict = field(default_factory=dict)  # each IoU type's AP per category (the metric's file)


class RunFailed(RuntimeError):
    """The run cannot finish (e.g. a NaN loss); ``info`` and ``curve`` still go into its row."""

    def __init__(self, reason: str, info: dict | None = None, curve: list | None = None):
        super().__init__(reason)
        self.info = info or {}
        self.curve = curve or []


def synthetic_params(dataset: dict):
    """The :class:`~harness.data.synthetic.SyntheticParams` of a spec's synthetic dataset (None if real)."""
    kind = dataset["kind"]
    if not kind.startswith("synthetic"):
        return None
    import dataclasses

    from harness.data.synthetic import SyntheticParams

    params = SyntheticParams.default("lvis" if kind == "synthetic_lvis" else "coco")
    sizes = {k: dataset[k] for k in ("train_images", "val_images") if dataset.get(k)}
    return dataclasses.replace(params, **sizes) if sizes else params


def run_data(run: RunSpec):
    """The run's :class:`~harness.data.paths.DatasetPaths` (the synthetic data is generated once, cached)."""
    kind = run.dataset["kind"]
    params = synthetic_params(run.dataset)
    if params is not None:
        from harness.data.synthetic import ensure_synthetic

        return ensure_synthetic(params=params)
    if kind == "coco_format":  # checked again here: a job may start where the files differ
        from harness.data.coco_format import DataProblems, coco_format_paths

        try:
            return coco_format_paths(run.dataset)
        except DataProblems as exc:
            raise RunFailed(f"the data does not pass its checks (before training): {'; '.join(exc.problems)}") from None
    from harness.data.real import real_paths

    return real_paths(kind, run.dataset.get("root"))


def _set_threads(run: RunSpec) -> None:
    """Torch threads of this process: the run's CPUs shared by its processes."""
    import torch

    threads = int(os.environ.get("HARNESS_NUM_THREADS") or run.launch.get("cpus_per_run") or 1)
    torch.set_num_threads(max(1, threads // run.world_size))


def _num_tasks() -> int:
    import submitit

    try:
        return submitit.JobEnvironment().num_tasks
    except RuntimeError:  # not inside a submitit job
        return int(os.environ.get("SLURM_NTASKS", "1"))


def _distributed() -> bool:
    """Export torch.distributed's variables (submitit's job environment) when the job has several tasks."""
    if _num_tasks() <= 1:
        return False
    import submitit

    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    if submitit.JobEnvironment().cluster == "local":  # one machine: loopback, whatever its host name resolves to
        os.environ["MASTER_ADDR"] = "127.0.0.1"
    return True


def _init_cpu_process_group() -> None:
    """gloo on CPU; mmengine's own set-up calls ``torch.cuda.set_device`` first, which needs a GPU."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")  # env://: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE


def fit_schedule(schedulers, epochs: int, total_iters: int | None = None, accumulate: int = 1) -> list:
    """The recipe's learning-rate schedule fitted to a run of ``epochs`` epochs of ``total_iters``
    iterations in all (when known: the Runner knows its epoch length once its dataloader is built), of
    which every ``accumulate`` make one optimizer step.

    Step decays move in proportion: the recipe's milestones scaled from its epochs to the run's (1x: 8
    and 11 of 12). A cosine ends with the run. With a known length the steps fall at those fractions in
    iterations and a cosine anneals per iteration, so a short run decays where the recipe would rather
    than at whole epochs (a 2-epoch run would otherwise decay after its first epoch), and the warm-up
    takes at most a fifth of the run.

    The recipe counts its warm-up and decays in optimizer steps (one per iteration: it does not
    accumulate). mmengine's schedulers step once per iteration, so with accumulation every length is
    fitted in optimizer steps and written in iterations, steps × ``accumulate``, starting at iteration
    ``accumulate - 1`` (``begin``), the iteration of the first optimizer step: the k-th optimizer step then
    trains at the lr the recipe's k-th step has (a warm-up that rises over 499 steps: over 499 × accumulate
    iterations; milestones and the cosine's length likewise). Without accumulation this is the schedule as
    before.
    """
    k = max(1, int(accumulate))
    steps = -(-total_iters // k) if total_iters else None  # optimizer steps (a last partial one steps too)
    offset = min(k - 1, total_iters - 1) if total_iters else k - 1
    out = []
    for s in schedulers if isinstance(schedulers, list) else [schedulers]:
        s = copy.deepcopy(dict(s))
        kind, by_epoch = s.get("type"), s.get("by_epoch", True)
        if kind == "LinearLR" and not by_epoch:  # the warm-up, in optimizer steps
            warm = max(1, min(s["end"] - s.get("begin", 0), steps // 5)) if steps else s["end"] - s.get("begin", 0)
            # mmengine's LinearLR reaches its end factor after end - begin - 1 scheduler steps
            s.update(begin=offset, end=offset + (warm - 1) * k + 1)
        elif kind == "MultiStepLR" and by_epoch:
            recipe_epochs = s.get("end") or max(s["milestones"]) + 1
            fractions = [m / recipe_epochs for m in s["milestones"]]
            if steps:
                s.update(by_epoch=False, begin=offset, end=offset + steps * k,
                         milestones=sorted({max(1, round(f * steps)) * k for f in fractions}))
            else:
                s.update(end=epochs, milestones=sorted({max(1, round(f * epochs)) for f in fractions}))
        elif by_epoch and "end" in s:  # cosine and the like end with the run
            if steps:
                s.update(by_epoch=False, begin=offset, end=offset + steps * k)
            else:
                s["end"] = epochs
        out.append(s)
    return out


def build_config(run: RunSpec, folder: Path, paths, runtime: bool = True) -> Any:
    """The mmengine Config of this run: the cell's config bound to data, schedule, seed and folder.
    ``runtime=False``: without what this process's set-up decides (launcher, distributed wrapper,
    resume), e.g. to fingerprint the run (:mod:`harness.run.fingerprint`) outside its job."""
    from harness.detectors import build_cell_config

    cfg = build_cell_config(run.detector, run.loss, classes=paths.classes, num_classes=paths.num_classes,
                            profile=run.profile, dataset=paths.kind, backbone_init=run.backbone_init)
    sched = run.schedule
    batch = run.batch  # processes x images a process x accumulation, and the lr (harness.experiments.batch)
    cfg.work_dir = str(folder)
    rfs = run.dataset.get("repeat_factor")
    extra = {}
    if sched.get("max_iters_per_epoch"):  # quick runs: the first images only (mmengine's `indices`)
        extra["indices"] = sched["max_iters_per_epoch"] * batch.run.per_process * run.world_size
    train_ds = paths.mmdet_dataset("train", cfg.train_pipeline, class_balanced=bool(rfs), oversample_thr=rfs, **extra)
    val_ds = paths.mmdet_dataset("val", cfg.test_pipeline)
    cfg.train_dataloader.dataset = train_ds
    cfg.test_dataloader.dataset = val_ds
    if run.profile == "tiny":
        # Some tiny heads normalise 1x1 maps with GroupNorm, which needs more than one image per batch:
        # a test batch size that never leaves a last batch of one image. Other profiles keep the cell's
        # (mmdet's configs: 1 image a process, as the releases test: a batch would pad each image to the
        # batch's largest, changing what the network sees near the borders)
        n_val = len(json.loads(Path(paths.val_ann).read_text())["images"])
        cfg.test_dataloader.batch_size = next(b for b in (4, 5, 3, 6, 7, 2) if n_val % b != 1 or n_val <= 1)
    from harness.detectors.grid import get_detector

    cfg.test_evaluator = {"type": "HarnessMetric", "ann_file": str(paths.val_ann), "kind": paths.kind,
                          "outfile": str(folder / PREDICTIONS_FILE), "classes": paths.classes,
                          "iou_types": list(get_detector(run.detector).metric_families),
                          "per_class_file": str(folder / PER_CLASS_FILE)}
    if paths.category_ids is not None:  # the labels' ids as the train file orders its categories
        cfg.test_evaluator["cat_ids"] = list(paths.category_ids)
    cfg.train_dataloader.batch_size = batch.run.per_process
    cfg.optim_wrapper.optimizer.lr = batch.run.lr
    if batch.run.accumulate > 1:  # one optimizer step every `accumulate` iterations (mmengine's OptimWrapper)
        cfg.optim_wrapper.accumulative_counts = batch.run.accumulate
    cfg.batch = batch.provenance()
    if sched.get("val_every"):  # mmengine's validation loop on the same split, every k epochs and at the last
        cfg.val_dataloader = copy.deepcopy(cfg.test_dataloader)
        cfg.val_evaluator = {k: v for k, v in cfg.test_evaluator.items() if k not in EVALUATOR_FILE_KEYS}
        cfg.val_cfg = {"type": "ValLoop"}
        cfg.train_cfg.val_interval = sched["val_every"]
    else:
        cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    if sched.get("epochs"):
        cfg.train_cfg.max_epochs = sched["epochs"]  # the schedule is fitted to the run's length in train_and_evaluate
    cfg.default_hooks.checkpoint = {"type": "CheckpointHook", "interval": sched.get("checkpoint_every") or 1,
                                    "by_epoch": True, "max_keep_ckpts": 2, "save_last": True}
    cfg.default_hooks.logger = {"type": "LoggerHook", "interval": 10}
    cfg.custom_hooks = list(cfg.get("custom_hooks", [])) + [{"type": "NonFiniteLossHook"}, {"type": "LossCurveHook"},
                                                        {"type": "RNGStateHook"}, {"type": "AccumulationHook"}]
    if sched.get("val_every"):
        cfg.custom_hooks.append({"type": "ValCurveHook"})
    if os.environ.get("HARNESS_INTERRUPT_AFTER_EPOCH"):  # the rehearsal's preemption (harness.launch.rehearse)
        cfg.custom_hooks.append({"type": "InterruptAfterEpochHook",
                                 "epoch": int(os.environ["HARNESS_INTERRUPT_AFTER_EPOCH"])})
    cfg.randomness = {"seed": run.seed, "deterministic": False}
    cfg.load_from = None
    # mmengine pretty-prints the config with yapf every time it logs or saves it (the log, the work
    # folder's copy, each checkpoint): about a second of every run at this scale. Unformatted it is the
    # same Python (Config.fromfile reads it back).
    object.__setattr__(cfg, "_format_python_code", False)
    if not runtime:
        return cfg
    cfg.launcher = "pytorch" if _distributed() else "none"
    if cfg.launcher == "pytorch":
        import torch

        cfg.model_wrapper_cfg = {"type": "HarnessDistributedDataParallel", "broadcast_buffers": False,
                                 "find_unused_parameters": False}
        if not torch.cuda.is_available():
            cfg.env_cfg.dist_cfg = {"backend": "gloo"}
    cfg.resume = (folder / "last_checkpoint").exists()
    return cfg


_START_LISTENERS: list[Callable[[int, int, str], None]] = []  # see on_training_start


@contextlib.contextmanager
def on_training_start(listener: Callable[[int, int, str], None]):
    """While in this context, :func:`train_and_evaluate` calls ``listener(epoch, iteration, config_digest)``
    in this process when training begins, after the checkpoint it resumes from (if any) is loaded (0, 0:
    from scratch) and before the first iteration: the job records each start of a run
    (:mod:`harness.run.job`). A listener that raises fails the run, as an error in training would."""
    _START_LISTENERS.append(listener)
    try:
        yield
    finally:
        _START_LISTENERS.remove(listener)


# Config keys that are local to one run or to its process set-up and never change its result.
RUN_LOCAL_KEYS = ("work_dir", "launcher", "resume", "load_from", "model_wrapper_cfg")
# The evaluator's keys that name files the run writes in its work folder (not evaluation settings).
EVALUATOR_FILE_KEYS = ("outfile", "per_class_file")


def config_digest(cfg, data_root: str | Path | None) -> str:
    """Hash (16 hex digits) of a run's mmengine config without what is local to the run and does not
    change its result (:data:`RUN_LOCAL_KEYS`, the distributed backend, the predictions file, the seed,
    which is in the run's id, the files the evaluator writes, the rehearsal's preemption hook, and the
    data's location, written ``<data>``): the ``config`` of the run's fingerprint
    (:mod:`harness.run.fingerprint`)."""
    d = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    for key in RUN_LOCAL_KEYS:
        d.pop(key, None)
    if isinstance(d.get("env_cfg"), dict):
        d["env_cfg"].pop("dist_cfg", None)
    if isinstance(d.get("test_evaluator"), dict):
        for key in EVALUATOR_FILE_KEYS:
            d["test_evaluator"].pop(key, None)
    if isinstance(d.get("randomness"), dict):
        d["randomness"].pop("seed", None)
    if isinstance(d.get("custom_hooks"), list):  # a rehearsed preemption stops the run, it does not change it
        d["custom_hooks"] = [h for h in d["custom_hooks"]
                             if not (isinstance(h, dict) and h.get("type") == "InterruptAfterEpochHook")]
    text = json.dumps(d, sort_keys=True, default=repr)
    if data_root:
        text = text.replace(json.dumps(str(data_root))[1:-1], "<data>")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _timed(obj, name: str, timing: dict, key: str) -> None:
    """Add the wall time of every call of ``obj.<name>`` to ``timing[key]``."""
    original = getattr(obj, name)

    def timed(*args, **kwargs):
        start = time.time()
        try:
            return original(*args, **kwargs)
        finally:
            timing[key] += time.time() - start

    setattr(obj, name, timed)


# The signals a scheduler preempts or times out a job with (submitit's USR2 handler checkpoints and requeues
# the run; SIGTERM comes first on preemption).
PREEMPTION_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)


def _whole(obj, name: str) -> None:
    """Make every call of ``obj.<name>`` finish before a preemption signal is handled: while it runs, the
    Python handlers of :data:`PREEMPTION_SIGNALS` only note a signal, and once it returns the noted signals
    are raised again for the handlers the job set. A checkpoint save is wrapped so: submitit's handler,
    run in the middle of one (inside torch.save, or mmengine's formatting of the config), requeues and exits
    with the checkpoint half-written, and once (the loopback cluster's preemption test) ended the job
    without a requeue at all; after the save it runs between training steps. (A signal mask would not do:
    a process's signal goes to any thread that does not block it, and torch's threads do not.)"""
    original = getattr(obj, name)

    def whole(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():  # only the main thread sets handlers
            return original(*args, **kwargs)
        handlers = {s: signal.getsignal(s) for s in PREEMPTION_SIGNALS if callable(signal.getsignal(s))}
        noted: list[int] = []
        for s in handlers:
            signal.signal(s, lambda signum, frame: noted.append(signum))
        try:
            return original(*args, **kwargs)
        finally:
            for s, handler in handlers.items():
                signal.signal(s, handler)
            for signum in noted:  # handled now, by the job's own handlers, in the order they came
                signal.raise_signal(signum)

    setattr(obj, name, whole)


def _data_time(runner) -> float:
    """Seconds the training loop waited for its data (mmengine's per-iteration ``data_time``)."""
    try:
        return float(runner.message_hub.get_scalar("train/data_time").data[0].sum())
    except (KeyError, AttributeError, IndexError):
        return 0.0


def stop_loader_workers(runner) -> None:
    """Stop the worker processes of ``runner``'s built data loaders now (one with ``persistent_workers``
    keeps them until its iterator is freed). mmengine's Runner sits in reference cycles, so without this
    they are stopped by some later garbage collection, in the same process when it goes on to another run
    (a rehearsal job, the debug executor); torch's stop message, put from inside a collection, does not reach
    the workers, and it waits 5 s for each (``MP_STATUS_CHECK_INTERVAL``) before killing it: 5-11 s a run,
    measured. Loops not built yet (still config dicts) and loaders without workers are left alone."""
    for loop in (runner._train_loop, runner._val_loop, runner._test_loop):
        loader = getattr(loop, "dataloader", None)
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
            loader._iterator = None


def train_and_evaluate(run: RunSpec, folder: Path) -> TrainResult:
    """Train and evaluate ``run`` in ``folder``. Its ``info["timing"]`` has the seconds of each phase
    (``imports``, ``build``, ``train`` with its ``data`` loading and ``checkpoint`` saves, ``test`` with its
    ``evaluate``; :mod:`harness.bench.benchmark_timing` reports them)."""
    timing = dict.fromkeys(("imports_s", "build_s", "train_s", "data_s", "checkpoint_s", "test_s", "evaluate_s"), 0.0)
    started = time.time()
    try:  # first: the cell cannot even be built without its loss
        import_loss_modules(run.loss_modules, run.origin)
    except ImportError as exc:
        raise RunFailed(f"{exc} (before training)") from None
    import torch
    from mmengine.runner import Runner

    import harness.detectors.plugin  # noqa: F401  (the cells' mmdet modules: imported here, timed as imports)
    from harness.run.hooks import VAL_CURVE_FILE, NonFiniteLoss, read_curve

    timing["imports_s"] = time.time() - started
    started = time.time()

    # mmengine checkpoints hold more than tensors; torch >= 2.6 loads weights only unless told otherwise.
    # They are this run's own files, so full loading is safe.
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    from harness.detectors.weights import missing_for_run

    missing = missing_for_run(run)  # a compute node that cannot download fails here, saying how to pre-fetch
    if missing:
        raise RunFailed(missing)
    _set_threads(run)
    random.seed(run.seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = run_data(run)
    cfg = build_config(run, folder, paths)
    digest = config_digest(cfg, paths.root)  # before the Runner: the config as built, nothing it adds
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != run.world_size:
        raise RunFailed(f"the run trains in {run.world_size} process(es) but this job has {world} (before training)")
    info = {
        **cfg.batch,  # processes x images a process x accumulation = total batch, lr, and the recipe's
        "epochs": cfg.train_cfg.max_epochs,
        "world_size": world,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "num_train_images": None,
        "config_digest": digest,  # the job moves it into the row's fingerprint
    }
    if cfg.batch["batch_differs"]:
        info["warning"] = f"{run.batch.line()}: another total batch or images a process than the recipe's"
    if cfg.launcher == "pytorch" and not torch.cuda.is_available():
        _init_cpu_process_group()
    if cfg.get("visualizer"):  # mmengine keeps one visualizer per name in a process: a second run (debug
        # executor, a rehearsal job) would log into the first run's folder under mmdet's "visualizer"
        cfg.visualizer = {**cfg.visualizer, "name": f"visualizer-{run.run_id}-{os.getpid()}-{time.time_ns()}"}
    runner = Runner.from_cfg(cfg)
    epochs = cfg.train_cfg.max_epochs
    runner.param_schedulers = fit_schedule(cfg.param_scheduler, epochs, epochs * len(runner.train_dataloader),
                                           run.batch.run.accumulate)
    runner.cfg.param_scheduler = runner.param_schedulers  # the config saved with the run is what ran
    _whole(runner, "save_checkpoint")  # a preemption is handled once the checkpoint is written
    _timed(runner, "save_checkpoint", timing, "checkpoint_s")
    if _START_LISTENERS:
        from harness.run.hooks import TrainingStartHook

        runner.register_hook(TrainingStartHook([lambda epoch, iteration, f=f: f(epoch, iteration, digest)
                                                for f in _START_LISTENERS]))
    info["timing"] = timing
    timing["build_s"] = time.time() - started

    started = time.time()
    try:
        runner.train()
    except NonFiniteLoss as exc:
        raise RunFailed(str(exc), info, read_curve(folder)) from None
    finally:
        timing["train_s"], timing["data_s"] = time.time() - started, _data_time(runner)
        stop_loader_workers(runner)
    info["num_train_images"] = len(runner.train_dataloader.dataset)
    started = time.time()
    runner._test_loop = runner.build_test_loop(runner._test_loop)  # built now, to time its evaluation apart
    _timed(runner._test_loop.evaluator, "evaluate", timing, "evaluate_s")
    try:
        metrics = runner.test()
    finally:
        stop_loader_workers(runner)
    timing["test_s"] = time.time() - started
    metrics = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
    info["timing"] = {k: round(v, 3) for k, v in timing.items()}
    val_curve = read_curve(folder, VAL_CURVE_FILE) if run.schedule.get("val_every") else None
    try:
        per_class = json.loads((folder / PER_CLASS_FILE).read_text())
    except (OSError, ValueError):
        per_class = {}
    return TrainResult(metrics=metrics, curve=read_curve(folder), info=info, val_curve=val_curve, per_class=per_class)
