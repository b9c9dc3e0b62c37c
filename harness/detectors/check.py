"""``check_cell``: build a cell at the tiny profile on CPU, run one training step and one inference step.

The batch is made in memory (:func:`synthetic_batch`: random images with a few filled ellipses, their
boxes and masks), so the check depends on no dataset. The training step checks that every loss term is
finite, that the gradient reaches each classification layer (non-zero, finite) and that no gradient is
NaN; the inference step checks that the model returns boxes (and masks for the mask detectors). For the
inference step only, score and mask-filter thresholds are set to 0: an untrained model's scores sit
near the classifier's prior (0.01), below every shipped threshold, and the point is the output's form.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from harness.detectors.grid import get_detector

CHECK_CLASSES = tuple(f"class{i}" for i in range(6))
CHECK_IMAGES = 2
_THRESHOLD_KEYS = ("score_thr", "filter_thr")


class CellCheckFailed(AssertionError):
    """A cell's check found problems; ``report`` holds what was measured."""

    def __init__(self, report: "CellReport"):
        super().__init__(f"{report.detector} x {report.loss}: " + "; ".join(report.problems))
        self.report = report


@dataclass
class CellReport:
    detector: str
    loss: str
    profile: str
    losses: dict[str, float] = field(default_factory=dict)  # every logged value of the training step
    cls_grad_norms: dict[str, float] = field(default_factory=dict)
    detections: list[int] = field(default_factory=list)  # boxes (or masks) per image at inference
    masks: list[int] | None = None
    train_s: float = 0.0
    infer_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        total = self.losses.get("loss", float("nan"))
        terms = ", ".join(f"{k} {v:.4g}" for k, v in self.losses.items() if k != "loss")
        grads = ", ".join(f"{k} {v:.2e}" for k, v in self.cls_grad_norms.items())
        masks = f", masks {self.masks}" if self.masks is not None else ""
        return (f"loss {total:.4g} ({terms}) | cls grad {grads} | detections {self.detections}{masks} | "
                f"train {self.train_s:.2f}s, infer {self.infer_s:.2f}s")


def synthetic_batch(num_images: int = CHECK_IMAGES, size: int | tuple[int, int] = 128,
                    num_classes: int = len(CHECK_CLASSES), objects: int = 3, seed: int = 0) -> dict:
    """An mmdet batch (``inputs``: uint8 CHW images; ``data_samples``: ``DetDataSample`` s with boxes,
    labels and bitmap masks) of random images each holding ``objects`` filled ellipses. ``size``: the
    side of square images, or ``(height, width)``."""
    import torch
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData

    height, width = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    inputs, samples = [], []
    yy, xx = np.mgrid[0:height, 0:width]
    for i in range(num_images):
        img = rng.integers(0, 80, size=(height, width, 3), dtype=np.uint8)
        boxes, masks, labels = [], [], []
        for _ in range(objects):
            w, h = rng.integers((width // 6, height // 6), (width // 2, height // 2))
            x0, y0 = rng.integers(0, width - w), rng.integers(0, height - h)
            cx, cy = x0 + w / 2, y0 + h / 2
            mask = (((xx + 0.5 - cx) / (w / 2)) ** 2 + ((yy + 0.5 - cy) / (h / 2)) ** 2) <= 1.0
            label = int(rng.integers(0, num_classes))
            img[mask] = np.array([(60 + 30 * label) % 256, (255 - 25 * label) % 256, 120], dtype=np.uint8)
            ys, xs = np.nonzero(mask)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            masks.append(mask.astype(np.uint8))
            labels.append(label)
        sample = DetDataSample(metainfo=dict(img_id=i, img_path=f"synthetic_{i}.png", ori_shape=(height, width),
                                             img_shape=(height, width), pad_shape=(height, width),
                                             scale_factor=(1.0, 1.0), flip=False, flip_direction=None))
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor(boxes, dtype=torch.float32),
            labels=torch.tensor(labels, dtype=torch.long),
            masks=BitmapMasks(np.stack(masks), height, width),
        )
        sample.ignored_instances = InstanceData(bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))
        inputs.append(torch.from_numpy(img).permute(2, 0, 1).contiguous())
        samples.append(sample)
    return {"inputs": inputs, "data_samples": samples}


def _zero_thresholds(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k in _THRESHOLD_KEYS and isinstance(v, (int, float)):
                node[k] = 0.0
            else:
                _zero_thresholds(v)
    elif isinstance(node, list):
        for v in node:
            _zero_thresholds(v)


def build_model(cfg):
    """The cell's model with its weights initialised (mmdet's default scope set)."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    init_default_scope("mmdet")
    model = MODELS.build(copy.deepcopy(cfg.model))
    with quiet_mmengine():
        model.init_weights()
    return model


def sgd_wrapper(model, lr: float):
    """Plain SGD (momentum 0.9) at ``lr`` in mmengine's optimizer wrapper, for :func:`train_step`."""
    import torch
    from mmengine.optim import OptimWrapper

    return OptimWrapper(torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9))


def train_step(model, batch: dict, optim_wrapper, inspect: Callable[[], None] | None = None) -> dict:
    """One training step of ``model`` on a copy of ``batch``: data preprocessing, forward, loss, backward,
    then ``inspect()`` (the gradients are in place), the optimizer wrapper's step (its gradient clipping
    included) and ``zero_grad``. The one training step of check-cell, bench-steps and gpu-check. Returns
    mmengine's logged values as tensors (reading them waits for the device; timed steps do not)."""
    data = model.data_preprocessor(copy.deepcopy(batch), True)
    total, log_vars = model.parse_losses(model(**data, mode="loss"))
    optim_wrapper.backward(total)
    if inspect is not None:
        inspect()
    optim_wrapper.step()
    optim_wrapper.zero_grad()
    return log_vars


@contextlib.contextmanager
def quiet_mmengine(level: int = logging.WARNING):
    """mmengine logs every parameter's initialisation at INFO: raise its logger's level meanwhile."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    saved = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(saved)


def _param_groups(model, prefixes):
    named = dict(model.named_parameters())
    out = {}
    for prefix in prefixes:
        params = [p for n, p in named.items() if n.startswith(prefix + ".")]
        out[prefix] = params
    return out


def check_cell(detector: str, loss: str, *, profile: str = "tiny", classes: tuple = CHECK_CLASSES,
               seed: int = 0, raise_on_failure: bool = True, threads: int | None = 1) -> CellReport:
    """Build ``detector`` × ``loss`` at ``profile`` (``tiny``), train one step on :func:`synthetic_batch`
    and predict once. Returns a :class:`CellReport`; raises :class:`CellCheckFailed` on a problem unless
    ``raise_on_failure`` is false. ``threads``: torch threads meanwhile (1 by default: on a shared CPU,
    several OpenMP threads per process spin against each other and a step can take 10x longer)."""
    import torch

    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _check_cell(detector, loss, profile, classes, seed, raise_on_failure)
    finally:
        torch.set_num_threads(saved)


def _check_cell(detector, loss, profile, classes, seed, raise_on_failure) -> CellReport:
    import torch

    from harness.detectors.builder import build_cell_config

    det = get_detector(detector)
    report = CellReport(detector, loss, profile)
    cfg = build_cell_config(detector, loss, classes=classes, profile=profile)
    test_cfg = cfg.model.get("test_cfg")
    if test_cfg is not None:
        plain = test_cfg.to_dict() if hasattr(test_cfg, "to_dict") else dict(test_cfg)
        _zero_thresholds(plain)
        cfg.model.test_cfg = plain
    torch.manual_seed(seed)
    model = build_model(cfg)
    model.train()
    batch = synthetic_batch(num_classes=len(classes), seed=seed)
    optim_wrapper = sgd_wrapper(model, cfg.optim_wrapper.optimizer.lr)

    def inspect_gradients():
        report.train_s = time.perf_counter() - start
        for prefix, params in _param_groups(model, det.cls_layers).items():
            if not params:
                report.problems.append(f"no classification layer {prefix!r} in the model")
                continue
            grads = [p.grad for p in params if p.grad is not None]
            norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads))) if grads else 0.0
            report.cls_grad_norms[prefix] = norm
            if not math.isfinite(norm) or norm == 0.0:
                report.problems.append(f"no gradient reaches {prefix} (norm {norm})")
        bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        if bad:
            report.problems.append(f"non-finite gradients in {len(bad)} tensors (first {bad[0]})")

    start = time.perf_counter()
    log_vars = train_step(model, batch, optim_wrapper, inspect=inspect_gradients)
    report.losses = {k: float(v.detach()) if hasattr(v, "detach") else float(v) for k, v in log_vars.items()}
    loss_problems = [f"{name} is {value}" for name, value in report.losses.items() if not math.isfinite(value)]
    report.problems[:0] = loss_problems  # the loss terms first, as they are the cause

    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        preds = model.test_step(copy.deepcopy(batch))
    report.infer_s = time.perf_counter() - start
    wants_boxes, wants_masks = "bbox" in det.outputs, "segm" in det.outputs
    report.masks = [] if wants_masks else None
    for i, sample in enumerate(preds):
        inst = sample.pred_instances
        n = len(inst)
        report.detections.append(n)
        if n == 0:
            report.problems.append(f"image {i}: inference returned no instances")
        if wants_boxes:
            boxes = getattr(inst, "bboxes", None)
            if boxes is None or tuple(boxes.shape) != (n, 4) or not torch.isfinite(boxes).all():
                report.problems.append(f"image {i}: no finite (N, 4) boxes in the prediction")
        if wants_masks:
            masks = getattr(inst, "masks", None)
            if masks is None or masks.shape[0] != n or masks.dim() != 3:
                report.problems.append(f"image {i}: no (N, H, W) masks in the prediction")
                report.masks.append(0)
            else:
                report.masks.append(int(masks.shape[0]))
    if report.problems and raise_on_failure:
        raise CellCheckFailed(report)
    return report
