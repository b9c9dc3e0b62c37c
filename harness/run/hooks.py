"""mmengine pieces a run adds to its cell's config: NaN guard, loss curve, validation curve, RNG state,
the partial gradient accumulation a checkpoint keeps, evaluation metric, and the distributed wrapper that
also trains on CPU. Registered in mmdet's / mmengine's registries on
import (:mod:`harness.run.train` imports this module; nothing here imports the train module)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from mmengine.dist import is_main_process
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS  # the Runner looks wrappers up in mmengine's own registry
from mmdet.registry import HOOKS, METRICS

from harness.files import write_json_atomic

CURVE_FILE = "curve.json"  # the training-loss curve in a run's work folder
VAL_CURVE_FILE = "val_curve.json"  # the validation metrics every ``schedule.val_every`` epochs


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN or Inf loss; the message says where."""


def read_curve(folder: str | Path, name: str = CURVE_FILE) -> list:
    path = Path(folder) / name
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return []


@HOOKS.register_module(force=True)
class NonFiniteLossHook(Hook):
    """Stop the run at the first NaN or Inf loss, naming the iteration and the loss terms at fault."""

    priority = "VERY_HIGH"

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if not outputs:
            return
        values = {k: float(v.detach()) for k, v in outputs.items() if hasattr(v, "detach")}
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if bad:
            terms = ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
            raise NonFiniteLoss(f"non-finite loss at iteration {runner.iter + 1} (epoch {runner.epoch + 1}): {terms}")


def rng_state() -> dict:
    """Every random number generator's state of this process: python's, numpy's, torch's on the CPU and,
    when CUDA is available, on every CUDA device (``torch.cuda.get_rng_state_all``), with cudnn's
    ``deterministic`` and ``benchmark`` flags (they decide which kernels, hence which results, a step has)."""
    import random

    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
             "cudnn": {"deterministic": torch.backends.cudnn.deterministic,
                       "benchmark": torch.backends.cudnn.benchmark}}
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: dict, log=None) -> None:
    """Set the generators and cudnn flags :func:`rng_state` saved. CUDA states are restored device by
    device when CUDA is available; ``log`` (a function of one line) is told when the saved states and
    this process's devices differ in number (the states of the devices both have are restored)."""
    import random

    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cudnn" in state:
        torch.backends.cudnn.deterministic = state["cudnn"]["deterministic"]
        torch.backends.cudnn.benchmark = state["cudnn"]["benchmark"]
    saved = state.get("cuda")
    if saved is not None and torch.cuda.is_available():
        count = torch.cuda.device_count()
        if len(saved) != count and log:
            log(f"the checkpoint holds the RNG states of {len(saved)} CUDA device(s), this process sees {count}: "
                f"restoring the first {min(count, len(saved))}")
        for index, device_state in enumerate(saved[:count]):
            torch.cuda.set_rng_state(device_state, index)
    elif saved is not None and log:
        log(f"the checkpoint holds the RNG states of {len(saved)} CUDA device(s) and CUDA is not available here")


class Interrupted(BaseException):
    """Raised by :class:`InterruptAfterEpochHook`: the run stops as a preempted job would (no row), its
    checkpoint saved, so that the next start resumes from it. A BaseException: not the run's failure."""


class TrainingStartHook(Hook):
    """Tell ``listeners`` (callables of ``epoch, iteration``) where training begins, once the checkpoint
    it resumes from (if any) is loaded: 0, 0 from scratch. Added by :func:`harness.run.train.train_and_evaluate`
    as an object (not through the config: a run's config does not depend on who listens)."""

    priority = "VERY_HIGH"

    def __init__(self, listeners):
        self.listeners = list(listeners)

    def before_train(self, runner) -> None:
        for listener in self.listeners:
            listener(runner.epoch, runner.iter)


@HOOKS.register_module(force=True)
class InterruptAfterEpochHook(Hook):
    """Stop every process after ``epoch`` epochs, once the epoch's checkpoint is saved (the rehearsal's
    preemption: ``HARNESS_INTERRUPT_AFTER_EPOCH``, see :mod:`harness.launch.rehearse`)."""

    priority = "LOWEST"  # after the CheckpointHook

    def __init__(self, epoch: int = 1):
        self.epoch = epoch

    def after_train_epoch(self, runner) -> None:
        if runner.epoch + 1 >= self.epoch:  # runner.epoch counts finished epochs - 1 here
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.barrier()  # rank 0 has written the checkpoint every rank resumes from
            raise Interrupted(f"interrupted after epoch {self.epoch}")


@HOOKS.register_module(force=True)
class RNGStateHook(Hook):
    """Save the random number generators' states (:func:`rng_state`: python, numpy, torch on the CPU and
    on every CUDA device, cudnn's flags) in every checkpoint and restore them on resume, so a run
    preempted and resumed from a checkpoint continues as an uninterrupted run with the same seed would
    (augmentations, samplers, dropout, CUDA's random kernels).

    Checkpoints are written by rank 0 only, so a resumed multi-process run gives every process rank 0's
    states: exact for one process, close (not bit-identical) for several."""

    priority = "LOW"

    def before_save_checkpoint(self, runner, checkpoint):
        checkpoint["harness_rng"] = rng_state()

    def after_load_checkpoint(self, runner, checkpoint):
        state = checkpoint.get("harness_rng")
        if state:
            restore_rng_state(state, log=lambda line: runner.logger.warning(line))


@HOOKS.register_module(force=True)
class AccumulationHook(Hook):
    """A checkpoint taken in the middle of a gradient accumulation keeps it, and a resumed run continues it.

    With ``accumulate`` > 1 (mmengine's ``accumulative_counts``) an optimizer step sums the gradients of
    several iterations; checkpoints fall at epoch ends, which need not be step boundaries. mmengine would
    resume such a checkpoint with the partial accumulation lost (the next step sums fewer iterations' gradients,
    with a warning). Here, at every epoch end that falls inside an accumulation, the accumulated gradients are
    averaged over the processes (what the next synchronised step would average them into) and the checkpoint
    saved then carries them; on resume every process starts from them, so the resumed run takes the same
    optimizer steps as an uninterrupted one (to float precision). Without accumulation it does nothing."""

    priority = "ABOVE_NORMAL"  # before CheckpointHook (VERY_LOW) saves at the epoch's end
    KEY = "harness_accumulation"

    def __init__(self) -> None:
        self._pending: dict | None = None  # gradients to save with this epoch's checkpoint
        self._restore: dict | None = None  # gradients a resumed run starts from

    @staticmethod
    def _counts(runner) -> tuple[int, int]:
        wrapper = runner.optim_wrapper
        return int(getattr(wrapper, "_inner_count", 0)), int(getattr(wrapper, "_accumulative_counts", 1) or 1)

    @staticmethod
    def _parameters(runner):
        from mmengine.model import is_model_wrapper

        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        return model.named_parameters()

    def after_train_epoch(self, runner) -> None:
        import torch
        from mmengine.dist import all_reduce, get_world_size

        count, every = self._counts(runner)
        self._pending = None
        if every <= 1 or count % every == 0:
            return
        grads = {}
        for name, p in self._parameters(runner):
            if p.grad is None:
                continue
            g = p.grad.detach().clone()
            if get_world_size() > 1:
                all_reduce(g, op="mean")
            grads[name] = g.cpu()
        self._pending = {"inner_count": count, "grads": grads}

    def before_save_checkpoint(self, runner, checkpoint) -> None:
        if self._pending is not None:
            checkpoint[self.KEY] = self._pending

    def after_load_checkpoint(self, runner, checkpoint) -> None:
        self._restore = checkpoint.get(self.KEY)

    def before_train(self, runner) -> None:
        state, self._restore = self._restore, None
        if not state:
            return
        count, every = self._counts(runner)
        if count != state["inner_count"]:  # not the iteration it was saved at: nothing to continue
            runner.logger.warning(f"checkpoint's partial accumulation (iteration {state['inner_count']}) does not "
                                  f"match the resumed iteration {count}; it is dropped")
            return
        params = dict(self._parameters(runner))
        for name, g in state["grads"].items():
            p = params[name]
            p.grad = g.to(device=p.device, dtype=p.dtype).clone()
        runner.logger.info(f"resumed inside an accumulation: {count % every} of {every} iterations' gradients "
                           f"restored from the checkpoint")


@HOOKS.register_module(force=True)
class LossCurveHook(Hook):
    """Append ``[iteration, loss, {terms}]`` every ``interval`` iterations to ``curve.json`` (kept across
    resumes: the file lives in the work folder and is rewritten atomically at each epoch end)."""

    priority = "LOW"

    def __init__(self, interval: int = 5):
        self.interval = interval
        self.curve: list = []

    def before_train(self, runner):
        self.curve = [p for p in read_curve(runner.work_dir) if p[0] <= runner.iter]

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if outputs and (runner.iter + 1) % self.interval == 0:
            terms = {k: round(float(v.detach()), 6) for k, v in outputs.items() if hasattr(v, "detach")}
            self.curve.append([runner.iter + 1, terms.get("loss"), terms])

    def after_train_epoch(self, runner):
        if not is_main_process():  # several processes: rank 0's curve (the logged one)
            return
        write_json_atomic(Path(runner.work_dir) / CURVE_FILE, self.curve)

    after_train = after_train_epoch


@HOOKS.register_module(force=True)
class ValCurveHook(Hook):
    """Append ``{"epoch", "iteration", "metrics"}`` to ``val_curve.json`` after each validation (every
    ``schedule.val_every`` epochs: mmengine's ``val_interval``); kept across resumes like the loss curve."""

    priority = "LOW"

    def __init__(self):
        self.curve: list = []

    def before_train(self, runner):
        self.curve = [p for p in read_curve(runner.work_dir, VAL_CURVE_FILE) if p["epoch"] <= runner.epoch]

    def after_val_epoch(self, runner, metrics=None):
        if not is_main_process():
            return
        values = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in (metrics or {}).items()}
        self.curve.append({"epoch": runner.epoch, "iteration": runner.iter, "metrics": values})
        write_json_atomic(Path(runner.work_dir) / VAL_CURVE_FILE, self.curve)


@METRICS.register_module(force=True)
class HarnessMetric(BaseMetric):
    """Collects predictions as COCO results, writes them to ``outfile`` and evaluates them with
    :func:`harness.evaluation.evaluate` (COCO or LVIS AP and oLRP) for ``iou_types``, the detector's
    outputs (box; mask too for a mask detector, even when it detected nothing)."""

    default_prefix = ""

    def __init__(self, ann_file: str, kind: str = "coco", outfile: str | None = None, classes=None,
                 iou_types=None, cat_ids=None, per_class_file: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.ann_file = ann_file
        self.kind = kind
        self.outfile = outfile
        self.per_class_file = per_class_file  # each class's AP, ``{iou_type: [{id, name, AP}]}``
        self.classes = tuple(classes) if classes else None
        # What the detector predicts ("bbox", "segm"): evaluated whether or not it detected anything, so a
        # mask detector with no detection scores mask AP 0 / oLRP 1 rather than having no mask metrics.
        # None: box, and mask when every detection has one.
        self.iou_types = tuple(iou_types) if iou_types else None
        self._cat_ids = list(cat_ids) if cat_ids else None  # given: each label's category id

    def process(self, data_batch, data_samples):
        """Convert each image's predictions to COCO results at once (no predicted masks kept in memory).

        One entry per image: mmengine cuts ``self.results`` to the dataset's length when it collects
        them, so a flat list of detections would lose all but the first few."""
        from harness.evaluation import label_to_category_ids, predictions_to_coco

        if self._cat_ids is None:
            self._cat_ids = label_to_category_ids(self.ann_file, self.kind, self.classes)
        for sample in data_samples:
            self.results.append(predictions_to_coco([sample], self._cat_ids))

    def compute_metrics(self, results):
        from harness.evaluation import evaluate

        results = [det for image in results for det in image]
        if self.outfile:
            write_json_atomic(self.outfile, results, compact=True)
        iou_types = self.iou_types
        if iou_types is None:
            iou_types = ("bbox", "segm") if results and all("segmentation" in d for d in results) else ("bbox",)
        per_class: dict = {}
        metrics = evaluate(self.ann_file, results, kind=self.kind, iou_types=iou_types, per_class=per_class)
        if self.per_class_file:
            clean = {t: [{**c, "AP": None if math.isnan(c["AP"]) else c["AP"]} for c in cs] for t, cs in per_class.items()}
            write_json_atomic(self.per_class_file, clean)
        return metrics


@MODEL_WRAPPERS.register_module(force=True)
class HarnessDistributedDataParallel(MMDistributedDataParallel):
    """mmengine's distributed wrapper, also for a model on CPU (gloo): the Runner passes the process's GPU
    index as ``device_ids``, which torch refuses for a CPU module."""

    def __init__(self, module, device_ids=None, **kwargs):
        if next(module.parameters()).device.type == "cpu":
            device_ids = None
        super().__init__(module=module, device_ids=device_ids, **kwargs)
