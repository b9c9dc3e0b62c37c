"""Where a grid run's time goes (``make bench-phases``): each part of a training iteration and of a test image.

A cell of the embedded default (``experiments/synthetic.yaml``: its dataset, schedule and overrides, its first seed)
is trained and tested by the same code as any run (:func:`harness.run.train.train_and_evaluate`), with a
timer around each part of the model that its detector has:

* a training iteration: the data preprocessor; the backbone and neck; the dense head's forward and its
  targets + loss (ATSS, PAA, YOLACT, SOLOv2); the RPN's targets + loss and its proposals; for each RoI stage
  the assignment and sampling, the RoI features (RoIAlign), the box head and its targets + loss; the mask
  branch's RoI features, head, and targets + loss; the backward pass; the optimizer step; and what the
  training loop spends outside the model step (data loading, hooks, checkpoints);
* a test image: the backbone and neck, the heads' predictions (for masks: decoding and pasting into the
  image), the conversion of the results for COCO (masks to RLE), and the COCO / oLRP evaluation.

Each time is inclusive (a part's line contains the parts indented under it) and is given per iteration
(or per test image) and as a share of the whole iteration (or test image); the timers' own cost is a few
microseconds a call. The numbers are one run's, on this machine's load at the time: compare within a file.
"""

from __future__ import annotations

import platform
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

TRAIN, TEST = "training iteration", "test image"
TRAIN_LOOP, TEST_LOOP = "training loop", "test loop"  # wall time of runner.train() / runner.test()
CONVERT, EVALUATE = "results converted for COCO (masks to RLE)", "COCO / oLRP evaluation"


@dataclass
class Phases:
    """Inclusive seconds per phase path (``("training iteration", "RPN", ...)``)."""

    seconds: dict = field(default_factory=lambda: defaultdict(float))
    counts: dict = field(default_factory=lambda: defaultdict(int))  # iterations, test images
    order: dict = field(default_factory=dict)  # path -> when it was first entered (the report's order)
    _stack: list = field(default_factory=list)
    _patched: list = field(default_factory=list)  # (object, attribute, original) to put back

    def wrap(self, obj, name: str, label: str, root: bool = False) -> None:
        """Time every call of ``obj.<name>`` as ``label`` under the phase it is called in (``root``: a
        top-level phase, recorded only outside any other). Missing attributes are skipped."""
        original = getattr(obj, name, None)
        if original is None or getattr(original, "_phase_label", None):
            return

        def timed(*args, **kwargs):
            if root and self._stack:
                return original(*args, **kwargs)
            self._stack.append(label)
            path = tuple(self._stack)
            self.order.setdefault(path, len(self.order))
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[path] += time.perf_counter() - start
                self._stack.pop()

        timed._phase_label = label
        self._patched.append((obj, name, obj.__dict__.get(name) if hasattr(obj, "__dict__") else original))
        setattr(obj, name, timed)

    def restore(self) -> None:
        """Take every timer off (a module-level function stays timed otherwise)."""
        for obj, name, original in reversed(self._patched):
            if original is None:
                delattr(obj, name)  # the instance's own attribute: the class's method shows again
            else:
                setattr(obj, name, original)
        self._patched.clear()

    def count(self, unit: str, n: int) -> None:
        self.counts[unit] += n

    def time_whole(self, obj, name: str, label: str) -> None:
        """Add the wall time of every call of ``obj.<name>`` to ``label`` (a loop around the timed phases)."""
        from harness.run.train import _timed

        _timed(obj, name, self.seconds, (label,))

    def wrap_all(self, obj, labels: dict) -> None:
        """:meth:`wrap` each ``{method: label}`` of ``obj``."""
        for name, label in labels.items():
            self.wrap(obj, name, label)

    def table(self, root: str, unit: int, extra: list) -> list:
        """``(depth, label, ms per unit, share of the root)`` rows of ``root`` and the phases under it,
        depth first, then the ``extra`` ``(label, seconds)`` parts of the same whole."""
        total = self.seconds.get((root,), 0.0) + sum(s for _, s in extra)
        paths = sorted((p for p in self.seconds if p[0] == root and len(p) > 1),
                       key=lambda p: tuple(self.order.get(p[:i], 0) for i in range(1, len(p) + 1)))
        parts = [(len(p) - 1, p[-1], self.seconds[p]) for p in paths] + [(1, label, s) for label, s in extra]
        return [(0, root, 1000 * total / unit, 1.0)] + [
            (depth, label, 1000 * s / unit, s / total if total else 0.0) for depth, label, s in parts]


def _stages(roi_head, name: str) -> list:
    """``roi_head.<name>`` as a list of (stage label, module): one entry for a standard head, one per stage
    for a cascade."""
    from torch import nn

    value = getattr(roi_head, name, None)
    if value is None:
        return []
    if isinstance(value, (list, tuple, nn.ModuleList)):
        return [(f"stage {i + 1}: ", v) for i, v in enumerate(value)]
    return [("", value)]


def _loss_parts(phases: Phases, head, prefix: str) -> None:
    """A head's targets and its classification loss (the harness's ranking losses balance the other
    terms there), where it has them."""
    phases.wrap(head, "get_targets", f"{prefix}targets")
    loss_cls = getattr(head, "loss_cls", None)
    if loss_cls is not None and hasattr(loss_cls, "head_losses"):
        phases.wrap(loss_cls, "head_losses", f"{prefix}classification loss + balancing of the terms")


def instrument_model(phases: Phases, model) -> None:
    """Timers on the parts of ``model`` (an mmdet detector) that it has, for training and testing."""
    p = phases
    p.wrap(model, "train_step", TRAIN, root=True)
    p.wrap(model, "test_step", TEST, root=True)
    p.wrap(model.data_preprocessor, "forward", "data preprocessor (batching, normalisation)")
    p.wrap(model, "extract_feat", "backbone + neck forward")
    rpn = getattr(model, "rpn_head", None)
    if rpn is not None:
        p.wrap_all(rpn, {"loss_and_predict": "RPN", "predict": "RPN", "forward": "RPN head forward",
                         "loss_by_feat": "RPN targets + loss", "predict_by_feat": "RPN proposals (decode + NMS)"})
        _loss_parts(p, rpn, "RPN ")
    roi = getattr(model, "roi_head", None)
    if roi is not None:
        p.wrap_all(roi, {"loss": "RoI heads", "predict": "RoI heads", "predict_bbox": "box predictions (decode + NMS)",
                         "predict_mask": "mask predictions",
                         "_mask_term": "mask branch (RoI features, head, targets, Dice)"})
        for stage, assigner in _stages(roi, "bbox_assigner"):
            p.wrap(assigner, "assign", f"{stage}RoI assignment")
        for stage, sampler in _stages(roi, "bbox_sampler"):
            p.wrap(sampler, "sample", f"{stage}RoI sampling")
        for stage, extractor in _stages(roi, "bbox_roi_extractor"):
            p.wrap(extractor, "forward", f"{stage}box RoI features (RoIAlign)")
        for stage, head in _stages(roi, "bbox_head"):
            p.wrap_all(head, {"forward": f"{stage}box head forward", "loss_and_target": f"{stage}box targets + loss",
                              "loss_terms": f"{stage}box loss terms"})
            _loss_parts(p, head, f"{stage}box ")
        roi_module = sys.modules.get(type(roi).__module__)
        if roi_module is not None:
            p.wrap(roi_module, "mask_target", "mask targets")
        for stage, extractor in _stages(roi, "mask_roi_extractor"):
            p.wrap(extractor, "forward", f"{stage}mask RoI features (RoIAlign)")
        for stage, head in _stages(roi, "mask_head"):
            p.wrap_all(head, {"forward": f"{stage}mask head forward", "loss_and_target": f"{stage}mask targets + loss",
                              "get_targets": f"{stage}mask targets", "dice_values": f"{stage}mask Dice loss",
                              "predict_by_feat": f"{stage}mask decoding + pasting into the image"})
    for attr, title in (("bbox_head", "dense head"), ("mask_head", "mask head")):
        head = getattr(model, attr, None)
        if head is None:
            continue
        p.wrap_all(head, {"loss": title, "predict": title, "forward": f"{title} forward",
                          "loss_by_feat": f"{title} targets + loss", "prepare_losses": f"{title} targets + box term",
                          "mask_term": f"{title}: prototypes, crops, Dice",
                          "predict_by_feat": f"{title} decoding (+ NMS, masks pasted)"})
        _loss_parts(p, head, f"{title} ")


def instrument_optimizer(phases: Phases, optim_wrapper) -> None:
    phases.wrap_all(optim_wrapper, {"backward": "backward", "step": "optimizer step"})


def instrument_evaluator(phases: Phases, evaluator) -> None:
    phases.wrap(evaluator, "process", CONVERT, root=True)
    phases.wrap(evaluator, "evaluate", EVALUATE, root=True)


@contextmanager
def instrumented_runs(phases: Phases):
    """While active, every mmengine Runner built gets timers on its model, optimizer and evaluator."""
    from mmengine.runner import Runner

    original = Runner.__dict__["from_cfg"]

    def from_cfg(cls, cfg):
        if cfg.get("visualizer"):  # mmdet names it "visualizer": a second run would reuse the first's
            cfg.visualizer = {**cfg.visualizer, "name": f"phases-{id(cfg)}-{time.time()}"}
        runner = original.__func__(cls, cfg)
        instrument_model(phases, runner.model)
        train_step = runner.model.train_step

        def train_step_once_instrumented(data, optim_wrapper):
            instrument_optimizer(phases, optim_wrapper)
            phases.count(TRAIN, 1)
            return train_step(data, optim_wrapper)

        train_step_once_instrumented._phase_label = TRAIN
        runner.model.train_step = train_step_once_instrumented
        test_step = runner.model.test_step

        def test_step_counted(data):
            phases.count(TEST, len(data["inputs"]))
            return test_step(data)

        test_step_counted._phase_label = TEST
        runner.model.test_step = test_step_counted
        build_test_loop = runner.build_test_loop

        def build_and_instrument(loop):
            built = build_test_loop(loop)
            instrument_evaluator(phases, built.evaluator)
            return built

        runner.build_test_loop = build_and_instrument
        phases.time_whole(runner, "train", TRAIN_LOOP)
        phases.time_whole(runner, "test", TEST_LOOP)
        return runner

    Runner.from_cfg = classmethod(from_cfg)
    try:
        yield phases
    finally:
        Runner.from_cfg = original
        phases.restore()


@dataclass
class CellPhases:
    detector: str
    loss: str
    iterations: int
    test_images: int
    train: list  # (depth, label, ms per iteration, share of an iteration)
    test: list  # (depth, label, ms per image, share of a test image)
    threads: int  # torch threads the run trained with (its spec's cpus_per_run)


def run_log(run, folder: Path) -> Path:
    """Where :func:`profile_run` writes the output of ``run``."""
    return folder / f"{run.run_id}.log"


def profile_run(run, folder: Path) -> CellPhases:
    """Train and test ``run`` (a :class:`~harness.experiments.spec.RunSpec` of one process) in
    ``folder``/<run id> with timers on its parts; its output goes to :func:`run_log`."""
    from contextlib import redirect_stderr, redirect_stdout

    import torch

    from harness.run.train import train_and_evaluate

    phases = Phases()
    folder.mkdir(parents=True, exist_ok=True)
    with run_log(run, folder).open("w") as log, redirect_stdout(log), redirect_stderr(log), \
            instrumented_runs(phases):
        train_and_evaluate(run, folder / run.run_id)
    return cell_phases(phases, run.detector, run.loss, torch.get_num_threads())


def cell_phases(phases: Phases, detector: str, loss: str, threads: int) -> CellPhases:
    """The two tables of one instrumented run: the loops' time outside the timed parts is its own line."""
    sec = phases.seconds.get
    iters, images = phases.counts[TRAIN], phases.counts[TEST]
    train_outside = max(sec((TRAIN_LOOP,), 0.0) - sec((TRAIN,), 0.0), 0.0)
    test_parts = [(CONVERT, sec((CONVERT,), 0.0)), (EVALUATE, sec((EVALUATE,), 0.0))]
    test_outside = max(sec((TEST_LOOP,), 0.0) - sec((TEST,), 0.0) - sum(s for _, s in test_parts), 0.0)
    train = phases.table(TRAIN, max(iters, 1), [("outside the model step: data loading, hooks, checkpoints",
                                                 train_outside)])
    test = phases.table(TEST, max(images, 1), test_parts + [("outside the model: data loading, hooks",
                                                             test_outside)])
    return CellPhases(detector, loss, iters, images, train, test, threads)


def write_report(prefix: Path, cells: list[CellPhases], spec_path: str | Path) -> None:
    import torch

    from harness.detectors.grid import DETECTORS
    from harness.files import prefixed, write_csv_atomic, write_text_atomic
    from harness.run.allocator import in_use as allocator_in_use

    rows = []
    for c in cells:
        for kind, table, unit in (("train", c.train, "iteration"), ("test", c.test, "image")):
            for depth, label, ms, share in table:
                rows.append([c.detector, c.loss, kind, depth, label, f"{ms:.3f}", f"{share:.4f}", unit])
    write_csv_atomic(prefixed(prefix, ".csv"),
                     ["detector", "loss", "kind", "depth", "phase", "ms", "share", "per"], rows)
    lines = [
        "# Where a grid run's time goes, part by part",
        "",
        f"Each cell trained and tested as its first seed's run in `{spec_path}` (its dataset, schedule and "
        "overrides), by the same code as every run, with a timer around each part of the model "
        "(harness/bench/phases.py). Times are inclusive: a line contains the lines indented under it. "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, memory allocator "
        f"{allocator_in_use()} (a local run's: `make bench-phases` preloads tcmalloc where installed, as the local "
        "executor does; harness/run/allocator.py). Written by "
        "`make bench-phases` (`harness bench-phases`). One run each on this machine's load at the time: "
        "compare within this file.",
        "",
    ]
    for c in cells:
        title = DETECTORS[c.detector].title
        lines += [f"## {title} × {c.loss}", "",
                  f"{c.iterations} training iterations, {c.test_images} test images, {c.threads} torch "
                  f"thread(s).", ""]
        for table, unit in ((c.train, "iteration"), (c.test, "test image")):
            lines += [f"| part | ms per {unit} | share |", "|---|---:|---:|"]
            for depth, label, ms, share in table:
                name = f"**{label}**" if depth == 0 else "&nbsp;&nbsp;" * 2 * (depth - 1) + "· " + label
                lines.append(f"| {name} | {ms:.1f} | {100 * share:.0f} % |")
            lines.append("")
    write_text_atomic(prefixed(prefix, ".md"), "\n".join(lines))
