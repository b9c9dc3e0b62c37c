"""The cell builder: (detector, loss, dataset classes, profile) → an mmengine ``Config``.

A cell's config is the config mmdet ships for the detector plus a visible list of :class:`Change` s, each
a dotted path, its new value (or :data:`DELETE`) and why. The list is recorded in the config
(``cfg.cell['changes']``), printed by ``harness cells --changes DETECTOR LOSS`` and checked by the tests:
the built config differs from mmdet's exactly at the documented paths.

Profiles (see docs/grid.md):

* ``paper``: mmdet's R-50 FPN configs at COCO scale with the cell's published (or defined) learning rate,
  total batch and schedule (:func:`harness.detectors.grid.cell_recipe`). Built, not trained here.
* ``tiny``: the same heads and losses on a CPU: ResNet-18 at a quarter of the width, 32-channel FPN and
  heads, 128-pixel images, few proposals, small RoI heads and SOLOv2 grids, total batch 4 with the
  recipe's learning rate scaled linearly.

``build_cell_config`` needs mmengine and mmdet's shipped configs; it does not import torch models.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from harness.detectors.grid import (
    DETECTORS,
    PROFILES,
    Detector,
    Recipe,
    SMOOTH_L1_BETA,
    cell_loss,
    cell_recipe,
    fixed_weights,
    get_detector,
    head_family,
)
from harness.detectors.recipes import (
    ABSENT,
    GRID_GPUS,
    LVIS_SOURCES,
    LVIS_TRAIN_SCALES,
    recipe_values,
)

COCO_CLASSES = 80
TINY_BATCH = 4
TINY_SIZE = 128
TINY_WARMUP_ITERS = 50
TINY_MAX_SCORE_THR = 0.05
# Detections per image of Mask R-CNN and YOLACT at the tiny profile (mmdet: 100). Each one is a mask to
# predict, paste, encode and evaluate: with 100, a Mask R-CNN run's testing took 0.3 to 2.8 s longer and a
# YOLACT run's 0.9 s (2026-12-06). A synthetic image holds at most 5 objects, so the detections ranked 51 to
# 100 add little: over the whole grid, the same trained weights gave box / mask AP seed means 0.00 to 0.04
# points lower with the top 50 (results/bench/before_after.md, the "training: same" cells), a consistent
# -0.02 to -0.03 on YOLACT's RS and aLRP, within seed noise elsewhere.
TINY_MASK_DETECTIONS = 50
_TINY_MASK_DETECTIONS_WHY = (f"{TINY_MASK_DETECTIONS} detections per image (mmdet 100), each a mask to predict, "
                             "paste and evaluate; the synthetic images hold at most 5 objects: the same weights "
                             "score 0.00 to 0.04 AP points lower on their top 50 (results/bench/before_after.md)")
TINY_SOLOV2_SCALE_RANGES = ((1, 96), (48, 192), (96, 384), (192, 768), (384, 2048))
SB_INITIAL = 50.0  # aLRP's published initial self-balance weight
RPN_TAU = 0.7  # positive IoU thresholds when an assigner names none: aLRP's E_loc is divided by 2(1 - τ)
ROI_TAU = 0.5  # (R-CNN stages read theirs: Cascade's 0.5, 0.6, 0.7)
RPN_HEAD_WEIGHT = 0.2  # RS R-CNN recipe: all three RPN terms x 0.2
MASK_POSITIVES = 200  # RS Mask R-CNN recipe: at most 200 positives for the mask head
# RS Mask R-CNN recipe (RankBasedFCNMaskHead): Dice with squared terms in the denominator (mmdet's DiceLoss with
# naive_dice False: 1 - 2 sum(p t) / (sum(p^2) + eps + sum(t^2) + eps)) and eps 1e-5 (mmdet's default: 1e-3)
MASK_DICE = {"type": "DiceLoss", "use_sigmoid": True, "activate": True, "naive_dice": False, "eps": 1e-5,
             "loss_weight": 1.0}
PLUGIN = "harness.detectors.plugin"
DATASETS = ("coco", "lvis")  # the annotation format a cell is evaluated on (synthetic data is one of them)
LVIS_MAX_PER_IMAGE = 300  # LVIS evaluation's detections per image (mmdet's LVIS configs)
LVIS_SCORE_THR = 1e-4  # mmdet's LVIS configs
# Test settings of published LVIS recipes (RS Mask R-CNN's LVIS config: score_thr 0.60, "for speed").
PUBLISHED_LVIS_TEST = {("mask_rcnn", "rs"): {"score_thr": 0.60}}
# Backbone initialisation (``backbone_init``): the recipe's ImageNet checkpoint and freezing, from scratch,
# or a checkpoint file (any other value: its path). Each profile's default: ImageNet at COCO scale, scratch
# on the CPU profile (its quarter-width ResNet-18 has no ImageNet checkpoint).
BACKBONE_INITS = ("imagenet", "scratch")
DEFAULT_BACKBONE_INIT = {"paper": "imagenet", "tiny": "scratch"}


class _Delete:
    def __repr__(self) -> str:
        return "<deleted>"


DELETE = _Delete()


@dataclass(frozen=True)
class Change:
    """One edit of mmdet's config: set ``path`` (dotted; list items by index) to ``value`` or delete it."""

    path: str
    value: Any
    why: str

    def describe(self) -> str:
        value = "deleted" if self.value is DELETE else _short(self.value)
        return f"{self.path} = {value}  # {self.why}"


def _short(value: Any, limit: int = 110) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def mmdet_config_root() -> Path:
    import mmdet

    return Path(mmdet.__file__).resolve().parent / ".mim" / "configs"


@functools.lru_cache(maxsize=None)
def _load_base_cached(relpath: str) -> dict:
    from mmengine.config import Config

    path = mmdet_config_root() / relpath
    if not path.is_file():
        raise FileNotFoundError(f"mmdet's config {relpath} is missing under {mmdet_config_root()}")
    return Config.fromfile(str(path)).to_dict()


def load_base(detector: str) -> dict:
    """mmdet's shipped config of ``detector`` as a plain dict (a fresh copy)."""
    return copy.deepcopy(_load_base_cached(get_detector(detector).base_config))


# ----------------------------------------------------------------------------------------------- paths

def _split(path: str) -> list:
    return [int(p) if p.isdigit() else p for p in path.split(".")]


def get_path(cfg: Any, path: str, default: Any = None) -> Any:
    node = cfg
    for key in _split(path):
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return default
    return node


def apply_change(cfg: dict, change: Change) -> None:
    keys = _split(change.path)
    node = cfg
    for key in keys[:-1]:
        if isinstance(node, dict) and key not in node:
            node[key] = {}
        node = node[key]
    last = keys[-1]
    if change.value is DELETE:
        if isinstance(node, dict):
            node.pop(last, None)
        return
    node[last] = copy.deepcopy(change.value)


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Leaf values by dotted path (lists by index), for diffing configs."""
    out: dict[str, Any] = {}
    if isinstance(cfg, dict):
        if not cfg and prefix:
            out[prefix] = {}
        for k, v in cfg.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(cfg, (list, tuple)):
        if not cfg and prefix:
            out[prefix] = type(cfg)()
        for i, v in enumerate(cfg):
            out.update(flatten(v, f"{prefix}.{i}" if prefix else str(i)))
    else:
        out[prefix] = cfg
    return out


def config_diff(base: dict, other: dict) -> set[str]:
    """Dotted leaf paths whose values differ (added, removed or changed)."""
    a, b = flatten(base), flatten(other)
    return {k for k in set(a) | set(b) if a.get(k, DELETE) != b.get(k, DELETE)}


def covered(path: str, documented: Iterable[str]) -> bool:
    return any(path == d or path.startswith(d + ".") for d in documented)


# ------------------------------------------------------------------------------------------ changes

class _Changes(list):
    def set(self, path: str, value: Any, why: str) -> None:
        self.append(Change(path, value, why))

    def delete(self, path: str, why: str) -> None:
        self.append(Change(path, DELETE, why))


def walk_keys(node: Any, key: str, prefix: str = "") -> list[str]:
    """Dotted paths of every ``key`` in a nested config (dicts and lists), under ``prefix``."""
    found = []
    if isinstance(node, dict):
        for k, v in node.items():
            path = f"{prefix}.{k}" if prefix else str(k)
            if k == key:
                found.append(path)
            found.extend(walk_keys(v, key, path))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            found.extend(walk_keys(v, key, f"{prefix}.{i}"))
    return found


def _bbox_head_paths(base: dict) -> list[str]:
    heads = get_path(base, "model.roi_head.bbox_head")
    if isinstance(heads, list):
        return [f"model.roi_head.bbox_head.{i}" for i in range(len(heads))]
    return ["model.roi_head.bbox_head"]


def _rcnn_train_paths(base: dict) -> list[str]:
    rcnn = get_path(base, "model.train_cfg.rcnn")
    if isinstance(rcnn, list):
        return [f"model.train_cfg.rcnn.{i}" for i in range(len(rcnn))]
    return ["model.train_cfg.rcnn"]


def resolve_backbone_init(backbone_init: str | None, profile: str) -> str:
    """``backbone_init`` checked against ``profile`` (``None``: the profile's default). ValueError (one
    line) for ImageNet weights at the tiny profile or an empty value."""
    value = DEFAULT_BACKBONE_INIT[profile] if backbone_init is None else backbone_init
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"backbone_init must be imagenet, scratch or a checkpoint path, got {backbone_init!r}")
    if value == "imagenet" and profile == "tiny":
        raise ValueError("backbone_init imagenet: the tiny profile's quarter-width ResNet-18 has no ImageNet "
                         "checkpoint; use scratch or a checkpoint PATH")
    return value


def _backbone_changes(ch: _Changes, base: dict, det: Detector, backbone_init: str) -> None:
    bb = get_path(base, "model.backbone")
    if backbone_init == "imagenet":
        want = {"type": "Pretrained", "checkpoint": det.checkpoint}
        if bb.get("init_cfg") != want:
            ch.set("model.backbone.init_cfg", want, f"the recipe's ImageNet backbone ({det.checkpoint})")
        return  # freezing: mmdet's config, or the RS recipe's (recipes.py, scope imagenet)
    if backbone_init != "scratch":
        ch.set("model.backbone.init_cfg", {"type": "Pretrained", "checkpoint": backbone_init},
               "backbone_init: the checkpoint file the spec names (the recipe's freezing kept)")
        return
    ch.set("model.backbone.init_cfg", None, "backbone_init scratch: no pretrained weights")
    if bb.get("frozen_stages", -1) != -1:
        ch.set("model.backbone.frozen_stages", -1, "from scratch: no stage is pretrained, so none is frozen")
    if bb.get("norm_eval", True):  # mmdet's ResNet defaults norm_eval to True
        ch.set("model.backbone.norm_eval", False, "from scratch: BatchNorm statistics must be learnt")


def _kernel_changes(ch: _Changes, base: dict) -> None:
    """RoI extractors use mmcv's own switch to torchvision's RoIAlign, which ships CPU and CUDA kernels in
    every torch build: a GPU node then needs no CUDA build of mmcv. (NMS and the mask-target crop have no
    such switch; :mod:`harness.detectors.kernels` routes them.)"""
    for extractor in ("bbox_roi_extractor", "mask_roi_extractor"):
        path = f"model.roi_head.{extractor}.roi_layer"
        layer = get_path(base, path)
        if isinstance(layer, dict) and layer.get("type") == "RoIAlign" and not layer.get("use_torchvision"):
            ch.set(f"{path}.use_torchvision", True, "torchvision's RoIAlign (CPU and CUDA in every torch build), "
                   "not mmcv's compiled kernel; same values (tests/test_kernels.py)")


def _class_changes(ch: _Changes, base: dict, num_classes: int, classes: tuple | None) -> None:
    if num_classes != COCO_CLASSES:
        for path in walk_keys(base["model"], "num_classes", "model"):
            ch.set(path, num_classes, f"the dataset has {num_classes} classes")
    if classes:
        for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
            if get_path(base, f"{loader}.dataset") is not None:
                ch.set(f"{loader}.dataset.metainfo", {"classes": tuple(classes)}, "the dataset's class names")


def _standard_changes(ch: _Changes, base: dict, det: Detector, spec) -> None:
    """Swap the classification loss in mmdet's own heads (nothing for the detector's published loss)."""
    if spec.name == det.baseline_loss:
        return
    loss = dict(spec.mmdet)
    why = f"classification loss -> {spec.name} (mmdet's own head, loss swapped)"
    if get_path(base, "model.rpn_head") is not None:
        ch.set("model.rpn_head.loss_cls", loss, why + "; RPN")
    if get_path(base, "model.roi_head") is not None:
        for head in _bbox_head_paths(base):
            ch.set(f"{head}.loss_cls", {"type": "SigmoidClassesLoss", "loss": loss},
                   why + "; sigmoid classes without a background logit (trained and tested as sigmoid)")
    for head in ("model.bbox_head", "model.mask_head"):
        if get_path(base, f"{head}.loss_cls") is not None:
            ch.set(f"{head}.loss_cls", loss, why)
    if get_path(base, "model.bbox_head.use_ohem"):
        ch.set("model.bbox_head.use_ohem", False, "OHEM ranks anchors by their softmax CE; the swapped loss "
               "covers every anchor itself (as Focal was designed to)")
        init = copy.deepcopy(get_path(base, "model.bbox_head.init_cfg") or _YOLACT_INIT)
        init["override"] = {"type": init.get("type", "Xavier"), "name": "conv_cls",
                            "distribution": init.get("distribution", "uniform"), "bias_prob": 0.01}
        ch.set("model.bbox_head.init_cfg", init, "sigmoid classes start from the 0.01 prior (Focal Loss's "
               "initialisation); YOLACT's softmax head started every logit at 0")


_YOLACT_INIT = {"type": "Xavier", "distribution": "uniform", "bias": 0, "layer": "Conv2d"}


def harness_loss_cfg(spec, det: Detector, *, primary: str, extras: tuple[str, ...] = (), head_weight: float = 1.0,
                     tau: float = ROI_TAU) -> dict:
    """The ``HarnessLoss`` config of a rank-family head: the loss by name, and only the options its spec's
    balancing and loc-error use need, and those the cell's published recipe sets
    (:func:`~harness.detectors.grid.cell_loss`: the loss's options, score weighting, fixed weights)."""
    cfg: dict = {"type": "HarnessLoss", "loss": spec.name, "loss_weight": head_weight}
    recipe = cell_loss(det.name, spec)
    weights = {**fixed_weights(det), **recipe.loc_weights}
    if spec.balancing == "fixed":
        cfg["loc_weights"] = {t: weights.get(t, 1.0) for t in (primary, *extras)}
    if recipe.score_weighted and spec.balancing != "value":  # value balancing weights by scores already
        cfg["score_weighted"] = True
    if recipe.options:
        cfg["options"] = dict(recipe.options)
    if spec.balancing == "self_balance":
        cfg["sb_initial"] = {primary: SB_INITIAL, **{t: weights.get(t, 1.0) for t in extras}}
    if spec.uses_loc_errors:
        cfg["loc_error_scale"] = 1.0 if primary == "mask" else round(2 * (1 - tau), 6)
    return cfg


def _box_loss(spec, det: Detector) -> tuple[dict, bool]:
    """The box loss of a rank-family cell and whether it reads decoded boxes (grid.cell_loss: GIoU on decoded
    boxes, or Smooth L1 with β = grid.SMOOTH_L1_BETA on encoded deltas, the AP cells without a published
    recipe of their own, as the aLRP release's anchor-based AP Loss config)."""
    if cell_loss(det.name, spec).localisation == "smooth_l1":
        return {"type": "SmoothL1Loss", "beta": SMOOTH_L1_BETA, "loss_weight": 1.0}, False
    return {"type": "GIoULoss", "loss_weight": 1.0}, True


# Why a rank-family ATSS / PAA head has no centerness / IoU-prediction branch, by the loss's target kind. The
# releases' ranking-loss heads have none whatever the loss: RS's RankBasedATSSHead / RankBasedPAAHead for every
# rank_loss_type (the Bucketed release's AP Loss ATSS / PAA configs use them), the aLRP release's RetinaNet heads.
# With quality targets (RS) the loss's sorting by IoU does the branch's work; with binary ones (AP, aLRP)
# nothing ranks by IoU, and the release's head is the whole reason.
_NO_CENTERNESS_WHY = {
    "quality": "no centerness / IoU-prediction branch: the ranking loss sorts by IoU",
    "binary": "no centerness / IoU-prediction branch: the ranking-loss releases' heads have none for any loss "
              "(RS's RankBasedATSSHead / RankBasedPAAHead for every rank_loss_type, which the Bucketed release's AP "
              "Loss ATSS / PAA recipes use; aLRP's RetinaNet heads)",
}


def _tau(base: dict, train_path: str, default: float) -> float:
    """The positive IoU threshold τ of an assigner (aLRP divides localisation errors by 2(1 - τ))."""
    tau = get_path(base, f"{train_path}.assigner.pos_iou_thr")
    return float(tau) if isinstance(tau, (int, float)) and 0 < tau < 1 else default


def _rank_rpn(ch: _Changes, base: dict, spec, det: Detector) -> None:
    box, decoded = _box_loss(spec, det)
    tau = _tau(base, "model.train_cfg.rpn", RPN_TAU)
    ch.set("model.rpn_head.type", "RankRPNHead", "RPN head taking its loss from the harness registry")
    ch.set("model.rpn_head.loss_cls",
           {**harness_loss_cfg(spec, det, primary="bbox", head_weight=RPN_HEAD_WEIGHT, tau=tau),
            "log_prefix": "rpn_"},
           f"{spec.name} over all anchors of the batch; all RPN terms x {RPN_HEAD_WEIGHT}")
    ch.set("model.rpn_head.loss_bbox", box, "localisation loss of the cell's recipe")
    ch.set("model.rpn_head.reg_decoded_bbox", decoded, "GIoU needs decoded boxes; Smooth L1 reads deltas")
    ch.delete("model.train_cfg.rpn.sampler", "no sampling: every anchor is used (PseudoSampler)")


def _rank_roi(ch: _Changes, base: dict, spec, det: Detector, extras: tuple[str, ...]) -> None:
    box, decoded = _box_loss(spec, det)
    for head, train in zip(_bbox_head_paths(base), _rcnn_train_paths(base)):
        ch.set(f"{head}.type", "RankBBoxHead", "shared-2-fc box head with sigmoid classes, loss from the registry")
        ch.set(f"{head}.loss_cls", harness_loss_cfg(spec, det, primary="bbox", extras=extras,
                                                    tau=_tau(base, train, ROI_TAU)),
               f"{spec.name} over all proposals of the batch (no background logit)")
        ch.set(f"{head}.loss_bbox", box, "localisation loss of the cell's recipe")
        ch.set(f"{head}.reg_decoded_bbox", decoded, "GIoU needs decoded boxes; Smooth L1 reads deltas")
    for train in _rcnn_train_paths(base):
        ch.set(f"{train}.sampler", {"type": "AllProposalsSampler", "add_gt_as_proposals": True},
               "no sampling: every proposal (and, as in mmdet, the GT boxes) is used")
    if isinstance(get_path(base, "model.roi_head.stage_loss_weights"), list):
        n = len(get_path(base, "model.roi_head.stage_loss_weights"))
        ch.set("model.roi_head.stage_loss_weights", [1.0] * n, "RS Cascade R-CNN: every stage weighs 1")


def _rank_changes(ch: _Changes, base: dict, det: Detector, spec) -> None:
    box, decoded = _box_loss(spec, det)
    name = det.name
    if name in ("faster_rcnn", "cascade_rcnn", "mask_rcnn"):
        _rank_rpn(ch, base, spec, det)
        extras = ("mask",) if name == "mask_rcnn" else ()
        _rank_roi(ch, base, spec, det, extras)
        if name == "mask_rcnn":
            ch.set("model.roi_head.type", "RankRoIHead", "balances the mask term against the box classification")
            ch.set("model.roi_head.mask_head.type", "DiceMaskHead", "FCN mask head with a Dice loss")
            ch.set("model.roi_head.mask_head.loss_mask", dict(MASK_DICE),
                   "mask BCE -> Dice (RS Mask R-CNN's: squared denominator, eps 1e-5), weighted by the cell's "
                   "balancing")
            ch.set("model.roi_head.mask_head.max_positives", MASK_POSITIVES,
                   f"at most {MASK_POSITIVES} positives sampled for the mask head (RS Mask R-CNN)")
    elif name in ("atss", "paa"):
        head = "model.bbox_head"
        ch.set(f"{head}.type", "RankATSSHead" if name == "atss" else "RankPAAHead",
               "the head without its centerness / IoU branch, loss from the registry")
        ch.delete(f"{head}.loss_centerness", _NO_CENTERNESS_WHY[spec.targets])
        if name == "paa":
            ch.set(f"{head}.gmm_loss_cls", copy.deepcopy(get_path(base, f"{head}.loss_cls")),
                   "Focal stays inside PAA's GMM anchor scoring only")
            ch.set(f"{head}.gmm_loss_bbox", copy.deepcopy(get_path(base, f"{head}.loss_bbox")),
                   "GIoU (x1.3) stays inside PAA's GMM anchor scoring only")
        ch.set(f"{head}.loss_cls", harness_loss_cfg(spec, det, primary="bbox"),
               f"{spec.name} over all anchors of the batch")
        ch.set(f"{head}.loss_bbox", box, "localisation loss of the cell's recipe")
        ch.set(f"{head}.reg_decoded_bbox", decoded, "GIoU needs decoded boxes; Smooth L1 reads deltas")
        ch.set(f"{head}.anchor_generator.octave_base_scale", 4, "3 anchors per location (RS recipe)")
        ch.set(f"{head}.anchor_generator.scales_per_octave", 3, "3 anchors per location (RS recipe)")
    elif name == "yolact":
        ch.set("model.type", "RankYOLACT", "YOLACT whose mask term is balanced against the classification")
        ch.set("model.bbox_head.type", "RankYOLACTHead", "YOLACT head with sigmoid classes, loss from the registry")
        ch.set("model.bbox_head.use_ohem", False, "no OHEM: the ranking loss covers every anchor")
        ch.set("model.bbox_head.loss_cls", harness_loss_cfg(spec, det, primary="bbox", extras=("mask",)),
               f"softmax CE with OHEM -> {spec.name} over all anchors of the batch")
        ch.set("model.bbox_head.loss_bbox", box, "localisation loss of the cell's recipe")
        ch.set("model.bbox_head.reg_decoded_bbox", decoded, "GIoU needs decoded boxes; Smooth L1 reads deltas")
        ch.delete("model.train_cfg.neg_pos_ratio", "OHEM's negative:positive ratio: OHEM is off")
        ch.set("model.mask_head.type", "RankYOLACTProtonet", "protonet with Dice masks")
        ch.set("model.mask_head.with_seg_branch", False, "no semantic-segmentation auxiliary head")
        ch.delete("model.mask_head.loss_segm", "no semantic-segmentation auxiliary head")
        ch.delete("model.mask_head.loss_mask_weight", "BCE weight unused: Dice masks weighted by the balancing")
        ch.set("model.mask_head.max_masks_to_train", None,
               "every positive trains the mask (RS release: max_masks_to_train 100 is in its config but never "
               "applied); mmdet's YOLACT caps it at 100 an image")
        ch.set("model.mask_head.loss_mask",
               {"type": "DiceLoss", "use_sigmoid": True, "activate": False, "loss_weight": 1.0},
               "mask BCE -> Dice on the cropped masks (already sigmoid)")
    elif name == "solov2":
        ch.set("model.mask_head.type", "RankSOLOv2Head", "SOLOv2 head whose category targets are Dice coefficients")
        ch.set("model.mask_head.loss_cls", harness_loss_cfg(spec, det, primary="mask"),
               f"{det.baseline_loss} -> {spec.name} over all grid cells of the batch")
        ch.set("model.mask_head.loss_mask.loss_weight", 1.0, "the Dice weight moves into the balancing")
    else:  # pragma: no cover - every detector has a branch
        raise KeyError(name)


def _scheduler(recipe: Recipe, warmup_iters: int | None = None) -> list[dict]:
    warm = {"type": "LinearLR", "start_factor": recipe.warmup_ratio, "by_epoch": False, "begin": 0,
            "end": warmup_iters or recipe.warmup_iters}
    if recipe.milestones:
        main = {"type": "MultiStepLR", "begin": 0, "end": recipe.epochs, "by_epoch": True,
                "milestones": list(recipe.milestones), "gamma": 0.1}
    else:
        # T_max unset: mmengine takes end - begin, so a run that changes ``end`` keeps a full cosine
        main = {"type": "CosineAnnealingLR", "begin": 0, "end": recipe.epochs, "by_epoch": True, "eta_min": 0.0}
    return [warm, main]


def _recipe_changes(ch: _Changes, base: dict, recipe: Recipe, det: Detector) -> None:
    if get_path(base, "optim_wrapper.optimizer.lr") != recipe.lr:
        ch.set("optim_wrapper.optimizer.lr", recipe.lr, f"learning rate of the recipe ({recipe.source})")
    per_gpu = paper_batch_per_gpu(recipe)
    if get_path(base, "train_dataloader.batch_size") != per_gpu:
        layout = "" if recipe.gpus == GRID_GPUS else f" (published as {recipe.gpus} GPUs x {recipe.batch_per_gpu})"
        ch.set("train_dataloader.batch_size", per_gpu,
               f"the recipe's total batch {recipe.total_batch} on the grid's {GRID_GPUS} GPUs{layout}")
    if get_path(base, "train_cfg.max_epochs") != recipe.epochs:
        ch.set("train_cfg.max_epochs", recipe.epochs, "epochs of the recipe")
    if get_path(base, "param_scheduler") != _scheduler(recipe) and _schedule_differs(base, recipe):
        ch.set("param_scheduler", _scheduler(recipe), f"schedule of the recipe: {recipe.schedule}")
    if get_path(base, "auto_scale_lr.base_batch_size") != recipe.total_batch:
        ch.set("auto_scale_lr.base_batch_size", recipe.total_batch, "the batch the recipe's lr is set for")


def profile_recipe(detector: str, loss: str, profile: str) -> dict:
    """The batch layout and learning rate a cell's recipe trains with at ``profile``: ``gpus`` processes of
    ``batch_per_gpu`` images, ``total_batch`` in all, at ``lr``. Paper: the COCO recipe's total batch on the
    grid's :data:`GRID_GPUS` GPUs at its lr; tiny: :data:`TINY_BATCH` images on one process, the recipe's lr
    scaled linearly to that batch. (A run's own layout and lr: :mod:`harness.experiments.batch`.)"""
    recipe = cell_recipe(detector, loss)
    if profile == "tiny":
        return {"lr": round(recipe.lr * TINY_BATCH / recipe.total_batch, 8), "total_batch": TINY_BATCH, "gpus": 1,
                "batch_per_gpu": TINY_BATCH}
    return {"lr": recipe.lr, "total_batch": recipe.total_batch, "gpus": GRID_GPUS,
            "batch_per_gpu": paper_batch_per_gpu(recipe)}


def paper_batch_per_gpu(recipe: Recipe) -> int:
    """Images per GPU of a paper cell: the recipe's total batch on the grid's :data:`GRID_GPUS` GPUs."""
    if recipe.total_batch % GRID_GPUS:
        raise ValueError(f"total batch {recipe.total_batch} does not split over {GRID_GPUS} GPUs")
    return recipe.total_batch // GRID_GPUS


def _current(base: dict, ch: list) -> dict:
    cfg = copy.deepcopy(base)
    for change in ch:
        apply_change(cfg, change)
    return cfg


def _official_changes(ch: _Changes, base: dict, det: Detector, spec, family: str, backbone_init: str) -> None:
    """The official recipe's values (:mod:`harness.detectors.recipes`) that mmdet's config and the head
    family's changes do not already hold, each with the release and config file that sets it."""
    cfg = _current(base, ch)
    for v in recipe_values(det.name, spec.name, family, backbone_init):
        if not v.apply:
            continue
        actual = get_path(cfg, v.path, ABSENT)
        if v.holds(actual):
            continue
        why = f"official recipe, {v.source}" + (f": {v.note}" if v.note else "")
        if v.value is ABSENT:
            ch.delete(v.path, why)
        else:
            ch.set(v.path, v.value, why)


def _schedule_differs(base: dict, recipe: Recipe) -> bool:
    sched = get_path(base, "param_scheduler") or []
    steps = [s for s in sched if s.get("type") == "MultiStepLR"]
    warm = [s for s in sched if s.get("type") == "LinearLR"]
    if recipe.milestones is None:
        return True
    return (not steps or list(steps[0].get("milestones", [])) != list(recipe.milestones)
            or steps[0].get("end") != recipe.epochs or not warm or warm[0].get("end") != recipe.warmup_iters
            or abs(warm[0].get("start_factor", 0) - recipe.warmup_ratio) > 1e-12)


def _lvis_changes(ch: _Changes, base: dict, det: Detector, spec, profile: str) -> None:
    """LVIS evaluation keeps up to 300 detections per image at mmdet's LVIS score threshold (1e-4), or a
    published recipe's own, instead of the COCO configs' 100 at 0.05: with 1 203 classes the rare ones
    live in the low scores. The RPN's ``max_per_img`` (its number of proposals) is left alone."""
    published = PUBLISHED_LVIS_TEST.get((det.name, spec.name), {})
    values = {"max_per_img": LVIS_MAX_PER_IMAGE, "score_thr": published.get("score_thr", LVIS_SCORE_THR)}
    test_cfg = get_path(base, "model.test_cfg") or {}
    for key, value in values.items():
        for path in walk_keys(test_cfg, key, "model.test_cfg"):
            if path.split(".")[2] == "rpn":
                continue
            source = "published LVIS test setting of this recipe" if key in published else "mmdet's LVIS configs"
            ch.set(path, value, f"LVIS evaluation: {key} {value:g} ({source})")
    if profile == "paper":
        _lvis_scales(ch, base, spec)


def _lvis_scales(ch: _Changes, base: dict, spec) -> None:
    """LVIS trains multi-scale: the shorter side drawn from 640-800 (step 32, mode ``value``), longer side at
    most 1333, as the RS release's LVIS Mask R-CNN and mmdet's own LVIS configs do (a single-scale
    (1333, 800) resize is replaced; other detectors' pipelines are left as they are)."""
    release, file = LVIS_SOURCES["rs" if spec.name == "rs" else "other"]
    why = f"LVIS recipe, {release} {file}: multi-scale training, (1333, 640-800), mode value"
    scaled = {"type": "RandomChoiceResize", "scales": list(LVIS_TRAIN_SCALES), "keep_ratio": True}
    for key in ("train_pipeline", "train_dataloader.dataset.pipeline"):
        pipe = get_path(base, key)
        if not pipe:
            continue
        single = [i for i, t in enumerate(pipe) if t.get("type") == "Resize" and tuple(t.get("scale", ())) == (1333, 800)]
        if single:
            new = copy.deepcopy(pipe)
            new[single[0]] = scaled
            ch.set(key, new, why)


# ------------------------------------------------------------------------------------------- tiny

# Augmentations the tiny profile leaves out (YOLACT's recipe has them): a zoom-out of up to 4x followed by
# a random crop shrinks 128-pixel images' objects below the smallest anchors, and hue/saturation jitter
# changes the colour that, with the shape, names a synthetic class. Every detector then trains on the
# same resize + flip pipeline.
TINY_DROPPED_TRANSFORMS = ("Expand", "MinIoURandomCrop", "PhotoMetricDistortion")


def _tiny_pipeline(pipeline: list, keep_ratio: bool) -> list:
    out = []
    for t in pipeline:
        if t.get("type") in TINY_DROPPED_TRANSFORMS:
            continue
        t = copy.deepcopy(t)
        if t.get("type") in ("Resize", "RandomResize", "RandomChoiceResize"):
            t = {"type": "Resize", "scale": (TINY_SIZE, TINY_SIZE), "keep_ratio": keep_ratio}
        out.append(t)
    return out


def _tiny_changes(ch: _Changes, base: dict, det: Detector, spec, recipe: Recipe) -> None:
    why = "tiny profile (CPU)"
    m = "model"
    ch.set(f"{m}.backbone.depth", 18, f"{why}: ResNet-18")
    if get_path(base, f"{m}.backbone.type") == "ResNet":
        ch.set(f"{m}.backbone.type", "StemPoolResNet", f"{why}: mmdet's ResNet with its stem's max pooling computed "
               "through the channels-last CPU kernel: the same values and gradients bit for bit, the pooling "
               "2.5 -> 1 ms a training step (harness/detectors/backbones.py)")
    ch.set(f"{m}.backbone.base_channels", 16, f"{why}: a quarter of ResNet-18's width (16-32-64-128)")
    ch.set(f"{m}.neck.in_channels", [16, 32, 64, 128], f"{why}: the narrow backbone's outputs")
    ch.set(f"{m}.neck.out_channels", 32, f"{why}: 32-channel FPN")
    name = det.name
    if get_path(base, f"{m}.rpn_head") is not None:
        ch.set(f"{m}.rpn_head.in_channels", 32, why)
        ch.set(f"{m}.rpn_head.feat_channels", 32, why)
        ch.set(f"{m}.train_cfg.rpn_proposal.nms_pre", 200, f"{why}: few proposals")
        ch.set(f"{m}.train_cfg.rpn_proposal.max_per_img", 100, f"{why}: few proposals")
        ch.set(f"{m}.test_cfg.rpn.nms_pre", 200, f"{why}: few proposals")
        ch.set(f"{m}.test_cfg.rpn.max_per_img", 100, f"{why}: few proposals")
        ch.set(f"{m}.roi_head.bbox_roi_extractor.out_channels", 32, why)
        for head in _bbox_head_paths(base):
            ch.set(f"{head}.in_channels", 32, why)
            ch.set(f"{head}.fc_out_channels", 64, f"{why}: narrow fc layers")
        if get_path(base, f"{m}.roi_head.mask_head") is not None:
            ch.set(f"{m}.roi_head.mask_roi_extractor.out_channels", 32, why)
            ch.set(f"{m}.roi_head.mask_head.in_channels", 32, why)
            ch.set(f"{m}.roi_head.mask_head.conv_out_channels", 32, why)
            ch.set(f"{m}.roi_head.mask_head.num_convs", 2, f"{why}: 2 mask convs")
            ch.set(f"{m}.test_cfg.rcnn.max_per_img", TINY_MASK_DETECTIONS, f"{why}: {_TINY_MASK_DETECTIONS_WHY}")
        for train in _rcnn_train_paths(base):
            if get_path(base, f"{train}.sampler.num") and head_family(spec) == "standard":
                ch.set(f"{train}.sampler.num", 128, f"{why}: 128 sampled RoIs")
        if get_path(base, f"{m}.train_cfg.rpn.sampler.num") and head_family(spec) == "standard":
            ch.set(f"{m}.train_cfg.rpn.sampler.num", 128, f"{why}: 128 sampled anchors")
    if name in ("atss", "paa"):
        for key, value in (("in_channels", 32), ("feat_channels", 32), ("stacked_convs", 2)):
            ch.set(f"{m}.bbox_head.{key}", value, why)
    if name == "yolact":
        strides = [TINY_SIZE / s for s in (16, 8, 4, 2, 1)]
        ch.set(f"{m}.bbox_head.in_channels", 32, why)
        ch.set(f"{m}.bbox_head.feat_channels", 32, why)
        ch.set(f"{m}.bbox_head.num_protos", 16, f"{why}: 16 prototypes")
        ch.set(f"{m}.bbox_head.anchor_generator.strides", strides, f"{why}: {TINY_SIZE}-pixel input")
        ch.set(f"{m}.bbox_head.anchor_generator.centers", [(s / 2, s / 2) for s in strides],
               f"{why}: {TINY_SIZE}-pixel input")
        ch.set(f"{m}.mask_head.in_channels", 32, why)
        ch.set(f"{m}.mask_head.num_protos", 16, f"{why}: 16 prototypes")
        ch.set(f"{m}.mask_head.proto_channels", (32, 32, 32, None, 32, 16), f"{why}: narrow protonet")
        ch.set(f"{m}.test_cfg.max_per_img", TINY_MASK_DETECTIONS, f"{why}: {_TINY_MASK_DETECTIONS_WHY}")
    if name == "solov2":
        ch.set(f"{m}.mask_head.scale_ranges", TINY_SOLOV2_SCALE_RANGES,
               f"{why}: the object-size ranges the tiny grid was tuned with (full SOLOv2's, not light's)")
        ch.set(f"{m}.mask_head.in_channels", 32, why)
        ch.set(f"{m}.mask_head.feat_channels", 32, why)
        ch.set(f"{m}.mask_head.stacked_convs", 2, why)
        ch.set(f"{m}.mask_head.num_grids", [12, 10, 8, 6, 4], f"{why}: small grids")
        ch.set(f"{m}.mask_head.mask_feature_head.in_channels", 32, why)
        ch.set(f"{m}.mask_head.mask_feature_head.feat_channels", 32, why)
        ch.set(f"{m}.mask_head.mask_feature_head.out_channels", 32, why)
    for path in walk_keys(base["model"], "anchor_generator", m):
        if get_path(base, f"{path}.type") == "AnchorGenerator":
            ch.set(f"{path}.type", "CachedAnchorGenerator", f"{why}: the same anchors and valid flags, computed "
                   "once per feature-map size and image shape instead of at every iteration and test image "
                   "(harness/detectors/anchors.py)")
    for path in walk_keys(base["model"].get("test_cfg", {}), "score_thr", f"{m}.test_cfg"):
        if (get_path(base, path) or 0) > TINY_MAX_SCORE_THR:
            ch.set(path, TINY_MAX_SCORE_THR, f"{why}: short trainings give low scores")
    keep_ratio = name != "yolact"
    for key in ("train_pipeline", "test_pipeline"):
        if key in base:
            ch.set(key, _tiny_pipeline(base[key], keep_ratio), f"{why}: {TINY_SIZE}-pixel images, resize and flip only")
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        pipe = get_path(base, f"{loader}.dataset.pipeline")
        if pipe is not None:
            ch.set(f"{loader}.dataset.pipeline", _tiny_pipeline(pipe, keep_ratio),
                   f"{why}: {TINY_SIZE}-pixel images, resize and flip only")
        ch.set(f"{loader}.num_workers", 0, f"{why}: load in the training process")
        ch.set(f"{loader}.persistent_workers", False, f"{why}: no worker processes")
    ch.set("train_dataloader.batch_size", TINY_BATCH, f"{why}: total batch {TINY_BATCH} on one process")
    lr = profile_recipe(det.name, spec.name, "tiny")["lr"]
    ch.set("optim_wrapper.optimizer.lr", lr,
           f"{why}: the recipe's lr {recipe.lr:g} scaled linearly from batch {recipe.total_batch} to {TINY_BATCH}")
    ch.set("param_scheduler", _scheduler(recipe, TINY_WARMUP_ITERS),
           f"{why}: the recipe's schedule with a {TINY_WARMUP_ITERS}-iteration warm-up")
    ch.set("train_cfg.max_epochs", recipe.epochs, "epochs of the recipe (a run's spec usually sets fewer)")
    if not get_path(base, "optim_wrapper.clip_grad"):
        ch.set("optim_wrapper.clip_grad", {"max_norm": 35, "norm_type": 2},
               f"{why}: from-scratch, small-batch training: clip gradient spikes")
    ch.set("auto_scale_lr.base_batch_size", TINY_BATCH, f"{why}: the batch the lr is set for")
    ch.set("env_cfg.cudnn_benchmark", False, f"{why}: CPU")


# ------------------------------------------------------------------------------------------- build

def _normalise(detector: str, loss: str, profile: str):
    from harness.losses import get_loss

    det = get_detector(detector)
    if profile not in PROFILES:
        raise KeyError(f"unknown profile {profile!r}; valid: {', '.join(PROFILES)}")
    return det, get_loss(loss)


def cell_changes(
    detector: str,
    loss: str,
    *,
    profile: str = "tiny",
    classes: Iterable[str] | None = None,
    num_classes: int | None = None,
    backbone_init: str | None = None,
    dataset: str = "coco",
) -> list[Change]:
    """The documented changes that turn mmdet's config of ``detector`` into the cell's config
    (``dataset``: ``'coco'`` or ``'lvis'``, the annotation format it trains and is evaluated on;
    ``backbone_init``: see :func:`build_cell_config`)."""
    det, spec = _normalise(detector, loss, profile)
    backbone_init = resolve_backbone_init(backbone_init, profile)
    if dataset not in DATASETS:
        raise KeyError(f"unknown dataset format {dataset!r}; valid: {', '.join(DATASETS)}")
    classes = tuple(classes) if classes else None
    num_classes = int(num_classes or (len(classes) if classes else COCO_CLASSES))
    if classes and len(classes) != num_classes:
        raise ValueError(f"{len(classes)} class names but num_classes={num_classes}")
    base = load_base(detector)
    recipe = cell_recipe(detector, loss)
    ch = _Changes()
    _backbone_changes(ch, base, det, backbone_init)
    _class_changes(ch, base, num_classes, classes)
    _kernel_changes(ch, base)
    train_cfg = base.get("train_cfg") or {}
    if train_cfg.get("type") and "by_epoch" in train_cfg:
        ch.delete("train_cfg.by_epoch", "mmdet's SOLOv2-light 3x config sets by_epoch beside its base's loop type, "
                  "which mmengine's Runner refuses ('Only one of `type` or `by_epoch`'); the type already says it")
    family = head_family(spec)
    if family == "standard":
        _standard_changes(ch, base, det, spec)
    else:
        _rank_changes(ch, base, det, spec)
    if profile == "paper":
        _recipe_changes(ch, base, recipe, det)
        _official_changes(ch, base, det, spec, family, backbone_init)
    else:
        _tiny_changes(ch, base, det, spec, recipe)
    if dataset == "lvis":
        _lvis_changes(ch, base, det, spec, profile)
    layout = profile_recipe(detector, loss, profile)
    total, lr = layout["total_batch"], layout["lr"]
    ch.set("recipe", {
        "profile": profile, **layout,
        "epochs": recipe.epochs, "schedule": recipe.schedule, "source": recipe.source,
        "coco_lr": recipe.lr, "coco_total_batch": recipe.total_batch,
        "published_layout": f"{recipe.gpus}x{recipe.batch_per_gpu}", "backbone_init": backbone_init,
    }, "the cell's recipe: its total batch and lr (a run warns when its total batch differs)")
    hooks = list(base.get("custom_hooks", []))
    hooks.append({"type": "RecipeCheckHook", "total_batch": total, "lr": lr})
    if family == "rank":
        hooks.append({"type": "SelfBalanceHook"})
    ch.set("custom_hooks", hooks, "warn when the total batch differs from the recipe"
           + ("; update self-balance weights once per epoch" if family == "rank" else ""))
    ch.set("custom_imports", {"imports": [PLUGIN], "allow_failed_imports": False},
           "the harness's mmdet modules (heads, losses, hooks) as a plug-in")
    ch.set("cell", {"detector": detector, "loss": loss, "profile": profile, "family": family,
                    "base_config": det.base_config}, "what this config is")
    return list(ch)


def build_cell_config(
    detector: str,
    loss: str,
    classes: Iterable[str] | None = None,
    num_classes: int | None = None,
    profile: str = "tiny",
    backbone_init: str | None = None,
    dataset: str = "coco",
):
    """The mmengine ``Config`` of a cell: mmdet's shipped config plus :func:`cell_changes`.

    ``classes``: the dataset's class names (``None``: COCO's 80); ``num_classes`` defaults to their
    number. ``profile``: ``'tiny'`` (CPU) or ``'paper'`` (COCO scale). ``backbone_init``: ``'imagenet'``
    (the recipe's ImageNet checkpoint through mmengine's ``init_cfg``, e.g. ``torchvision://resnet50``,
    with the recipe's frozen stages and BatchNorm mode), ``'scratch'`` (random weights, nothing frozen,
    BatchNorm statistics learnt) or a checkpoint path (the recipe's freezing kept); ``None``: the
    profile's default (paper: imagenet, tiny: scratch). ``dataset``: ``'coco'`` or ``'lvis'`` (LVIS test
    settings; at the paper profile, LVIS's multi-scale training). The config also carries ``cell`` (identity and the list of
    changes), ``recipe`` (lr, total batch, schedule and their source) and imports the harness's mmdet
    modules (``custom_imports``). Its datasets are mmdet's COCO defaults: the run code replaces them.
    """
    from mmengine.config import Config

    changes = cell_changes(detector, loss, profile=profile, classes=classes, num_classes=num_classes,
                           backbone_init=backbone_init, dataset=dataset)
    cfg = load_base(detector)
    for change in changes:
        apply_change(cfg, change)
    cfg["cell"]["changes"] = [c.describe() for c in changes]
    _import_plugin()
    return Config(cfg)


def _import_plugin() -> None:
    import importlib

    importlib.import_module(PLUGIN)



__all__ = ["BACKBONE_INITS", "Change", "DELETE", "DETECTORS", "apply_change", "build_cell_config", "cell_changes",
           "config_diff", "covered", "flatten", "get_path", "load_base", "resolve_backbone_init", "walk_keys"]
