"""The official recipes, key by key: every value of the RS Loss releases' configs that a paper cell runs,
as the mmdet 3.x config path it lands on, with the release and config file that sets it.

Standard library only (no torch, no mmdet), like :mod:`harness.detectors.grid`.

Each :class:`RecipeValue` is one official value, resolved through its config's ``_base_`` chain (the facts
are those of ``../shared/reference/official-recipes.md``, which names the file of every value). The
builder (:mod:`harness.detectors.builder`) reads this table twice:

* at the ``paper`` profile every value marked ``apply`` that mmdet's shipped config does not already have
  becomes a documented ``Change`` whose *why* names its source (RPN coder stds, Cascade's stage stds and
  proposals, PAA's GMM GIoU weight, YOLACT's augmentation order and unclipped gradients, SOLOv2's test
  threshold ...);
* values not marked ``apply`` are realised by the head family (samplers, loss weights of the rank heads)
  or already equal mmdet's: they are listed so that ``harness cells --recipe DET LOSS`` shows the whole
  recipe with its sources, and the tests check that the built config holds every one of them.

Scopes: ``rank`` values hold for every rank-family cell of the detector (RS's published recipe, which the
AP and aLRP cells without a published recipe of their own take as theirs: only the loss differs); ``rs``
values only for the RS cell (the published test thresholds, tuned for RS's scores); ``imagenet`` values
(the backbone's checkpoint and freezing) whenever the cell starts from the recipe's ImageNet weights
(``backbone_init: imagenet``); ``cell`` values: the loss settings of a cell's own published recipe
(:data:`PUBLISHED_RECIPES`: AP Loss on ATSS and PAA, whose every other value is the RS recipe's, set there
by the Bucketed release's config).

A path of the form ``a.b`` names a key of the mmdet 3.x config; ``ABSENT`` means the key must not be
there (e.g. no RPN sampler: mmdet then uses every anchor, the 2.x ``PseudoSampler``). ``default`` is the
value an mmdet 3.x constructor takes when the key is absent (SOLOv2-light's ``norm_eval``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


ABSENT = _Absent()
_NO_DEFAULT = object()

RELEASES = {
    "RS": "kemaloksuz/RankSortLoss @ b41f64d (mmdet 2.8)",
    "RS-SOLOv2": "kemaloksuz/RankSortLoss-Solov2 @ cd13eaf (SOLO, mmdet 1.0)",
    "Bucketed": "blisgard/BucketedRankingBasedLosses @ 9ba3b0e (mmdet 2.25.3)",
    "mmdet": "mmdetection 3.3.0 (configs shipped in the mmdet wheel, .mim/configs)",
}

# Config files of the RS release (paths in that repository).
RS_CFG = "configs/ranksort_loss/ranksort_{}.py"
M_FRCNN = "configs/_base_/models/faster_rcnn_r50_fpn.py"
M_MRCNN = "configs/_base_/models/mask_rcnn_r50_fpn.py"
D_DET = "configs/_base_/datasets/coco_detection.py"
D_INS = "configs/_base_/datasets/coco_instance.py"
S_1X = "configs/_base_/schedules/schedule_1x.py"
H_SROI = "mmdet/models/roi_heads/rankbased_standard_roi_head.py"
H_MASK = "mmdet/models/roi_heads/mask_heads/rankbased_fcn_mask_head.py"
DET_YOLACT = "mmdet/models/detectors/ranksort_yolact.py"
LIB = "mmdet 3.x constructor default (the 2.x library default the config relies on)"

# The grid runs every paper cell on this many GPUs (processes), with each recipe's total batch.
GRID_GPUS = 4


@dataclass(frozen=True)
class RecipeValue:
    path: str
    value: Any
    release: str  # a key of RELEASES
    file: str  # the file that sets the value in that release
    note: str = ""  # the 2.x key or what the value means
    scope: str = "rank"  # rank | rs | imagenet
    apply: bool = True  # the recipe step sets it (else: the head family or mmdet's config already does)
    default: Any = _NO_DEFAULT  # mmdet 3.x's value when the key is absent

    @property
    def source(self) -> str:
        return f"{RELEASES[self.release]} {self.file}"

    def holds(self, actual: Any) -> bool:
        """Whether a built config's value at :attr:`path` (``ABSENT`` when missing) is this value."""
        if actual is ABSENT and self.default is not _NO_DEFAULT:
            actual = self.default
        if self.value is ABSENT:
            return actual is ABSENT
        return _norm(actual) == _norm(self.value)


def _norm(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items()}
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _v(path, value, file, note="", *, release="RS", scope="rank", apply=True, default=_NO_DEFAULT):
    return RecipeValue(path, value, release, file, note, scope, apply, default)


STDS = [0.1, 0.1, 0.2, 0.2]
R50_TORCHVISION = "torchvision://resnet50"


def _backbone(file: str, *, release="RS", frozen=1, norm_eval=True, depth=50, checkpoint=R50_TORCHVISION,
              extra=()) -> list[RecipeValue]:
    b = "model.backbone"
    out = [
        _v(f"{b}.depth", depth, file, release=release, scope="rank", apply=False),
        _v(f"{b}.init_cfg", {"type": "Pretrained", "checkpoint": checkpoint}, file, "2.x: pretrained=",
           release=release, scope="imagenet", apply=False),
        _v(f"{b}.frozen_stages", frozen, file, release=release, scope="imagenet", apply=False),
        _v(f"{b}.norm_cfg", {"type": "BN", "requires_grad": True}, file, release=release, scope="rank", apply=False,
           default={"type": "BN", "requires_grad": True}),
        _v(f"{b}.norm_eval", norm_eval, file, release=release, scope="imagenet", apply=False, default=True),
        _v(f"{b}.style", "pytorch", file, release=release, scope="rank", apply=False),
    ]
    return out + list(extra)


def _sgd(file: str, lr: float, *, release="RS", wd=1e-4, clip=None, sched_file=S_1X) -> list[RecipeValue]:
    o = "optim_wrapper"
    return [
        _v(f"{o}.optimizer.lr", lr, file, release=release, apply=False),  # the Recipe sets it
        _v(f"{o}.optimizer.momentum", 0.9, sched_file, release=release),
        _v(f"{o}.optimizer.weight_decay", wd, sched_file if wd == 1e-4 else file, release=release),
        _v(f"{o}.clip_grad", clip if clip else ABSENT, sched_file if not clip else file,
           "grad_clip" + ("" if clip else " None: no clipping"), release=release),
    ]


def _rcnn(det: str) -> list[RecipeValue]:
    """RS Faster / Cascade / Mask R-CNN."""
    cfg = RS_CFG.format({"faster_rcnn": "faster_rcnn_r50_fpn_1x_coco", "cascade_rcnn": "cascade_rcnn_r50_fpn_1x_coco",
                         "mask_rcnn": "mask_rcnn_r50_fpn_1x_coco"}[det])
    model = cfg if det == "cascade_rcnn" else (M_MRCNN if det == "mask_rcnn" else M_FRCNN)
    data = D_INS if det == "mask_rcnn" else D_DET
    m = "model"
    out = _backbone(model)
    out += [
        _v(f"{m}.neck.in_channels", [256, 512, 1024, 2048], model, apply=False),
        _v(f"{m}.neck.out_channels", 256, model, apply=False),
        _v(f"{m}.neck.num_outs", 5, model, "start level 0, no extra convs: the 5th level is a max-pool", apply=False),
        _v(f"{m}.rpn_head.anchor_generator.scales", [8], model, apply=False),
        _v(f"{m}.rpn_head.anchor_generator.ratios", [0.5, 1.0, 2.0], model, apply=False),
        _v(f"{m}.rpn_head.anchor_generator.strides", [4, 8, 16, 32, 64], model, apply=False),
        _v(f"{m}.rpn_head.bbox_coder.target_stds", STDS, cfg, "RPN coder (mmdet 3.3: [1, 1, 1, 1])"),
        _v(f"{m}.rpn_head.loss_cls.loss_weight", 0.2, cfg, "head_weight: rank, sort and box terms x 0.2",
           apply=False),
        _v(f"{m}.train_cfg.rpn.assigner.pos_iou_thr", 0.7, model, apply=False),
        _v(f"{m}.train_cfg.rpn.assigner.neg_iou_thr", 0.3, model, apply=False),
        _v(f"{m}.train_cfg.rpn.assigner.min_pos_iou", 0.3, model, apply=False),
        _v(f"{m}.train_cfg.rpn.assigner.match_low_quality", True, model, apply=False),
        _v(f"{m}.train_cfg.rpn.sampler", ABSENT, cfg, "PseudoSampler: every anchor", apply=False),
        _v(f"{m}.train_cfg.rpn.allowed_border", 0 if det == "cascade_rcnn" else -1, model),
        _v(f"{m}.train_cfg.rpn_proposal.nms_pre", 2000, model, "2.x: nms_pre", apply=False),
        _v(f"{m}.train_cfg.rpn_proposal.max_per_img", 1000, model,
           "2.x: nms_post / max_num" + (" (mmdet 3.3's Cascade: 2000)" if det == "cascade_rcnn" else "")),
        _v(f"{m}.train_cfg.rpn_proposal.nms.iou_threshold", 0.7, model, apply=False),
        _v(f"{m}.train_cfg.rpn_proposal.min_bbox_size", 0, model, apply=False),
        _v(f"{m}.test_cfg.rpn.nms_pre", 1000, model, apply=False),
        _v(f"{m}.test_cfg.rpn.max_per_img", 1000, model, apply=False),
        _v(f"{m}.test_cfg.rpn.nms.iou_threshold", 0.7, model, apply=False),
        # RoIAlign's values, key by key (the kernel that computes it, mmcv's or torchvision's, is not recipe)
        *[_v(f"{m}.roi_head.bbox_roi_extractor.roi_layer.{k}", v, model, apply=False)
          for k, v in (("type", "RoIAlign"), ("output_size", 7), ("sampling_ratio", 0))],
        _v(f"{m}.test_cfg.rcnn.score_thr", 0.40, cfg, "published test threshold of RS's scores", scope="rs"),
        _v(f"{m}.test_cfg.rcnn.nms.iou_threshold", 0.5, model, apply=False),
        _v(f"{m}.test_cfg.rcnn.max_per_img", 100, model, apply=False),
    ]
    heads = [f"{m}.roi_head.bbox_head.{i}" for i in range(3)] if det == "cascade_rcnn" else [f"{m}.roi_head.bbox_head"]
    trains = [f"{m}.train_cfg.rcnn.{i}" for i in range(3)] if det == "cascade_rcnn" else [f"{m}.train_cfg.rcnn"]
    thrs = (0.5, 0.6, 0.7) if det == "cascade_rcnn" else (0.5,)
    for head, train, thr in zip(heads, trains, thrs):
        out += [
            _v(f"{head}.fc_out_channels", 1024, model, apply=False),
            _v(f"{head}.reg_class_agnostic", det == "cascade_rcnn", model, apply=False),
            _v(f"{head}.bbox_coder.target_stds", STDS, cfg,
               "every stage (mmdet 3.3's Cascade: 0.1 / 0.05 / 0.033 per stage)" if det == "cascade_rcnn" else ""),
            _v(f"{train}.assigner.pos_iou_thr", thr, model, apply=False),
            _v(f"{train}.assigner.neg_iou_thr", thr, model, apply=False),
            _v(f"{train}.assigner.min_pos_iou", thr, model, apply=False),
            _v(f"{train}.assigner.match_low_quality", det == "mask_rcnn", model, apply=False),
            _v(f"{train}.sampler.add_gt_as_proposals", True, cfg, "RandomSampler num 1e10: every proposal + the GTs",
               apply=False),
        ]
    if det == "cascade_rcnn":
        out.append(_v(f"{m}.roi_head.stage_loss_weights", [1, 1, 1], cfg, apply=False))
    if det == "mask_rcnn":
        out += [
            *[_v(f"{m}.roi_head.mask_roi_extractor.roi_layer.{k}", v, model, apply=False)
              for k, v in (("type", "RoIAlign"), ("output_size", 14), ("sampling_ratio", 0))],
            _v(f"{m}.roi_head.mask_head.num_convs", 4, model, apply=False),
            _v(f"{m}.roi_head.mask_head.conv_out_channels", 256, model, apply=False),
            _v(f"{m}.train_cfg.rcnn.mask_size", 28, model, apply=False),
            _v(f"{m}.roi_head.mask_head.max_positives", 200, H_SROI, "at most 200 positives for the mask head",
               apply=False),
            _v(f"{m}.roi_head.mask_head.loss_mask.type", "DiceLoss", H_MASK, "1 - Dice of the sigmoid masks (the "
               "base config's CrossEntropy mask loss is not used)", apply=False),
            _v(f"{m}.roi_head.mask_head.loss_mask.naive_dice", False, H_MASK, "squared terms in the denominator",
               apply=False),
            _v(f"{m}.roi_head.mask_head.loss_mask.eps", 1e-5, H_MASK, "mmdet's DiceLoss default: 1e-3",
               apply=False),
            _v(f"{m}.test_cfg.rcnn.mask_thr_binary", 0.5, model, apply=False),
        ]
    out += _coco_1333(data, masks=det == "mask_rcnn")
    out += _sgd(cfg, 0.012)
    out.append(_v("train_dataloader.batch_size", 4, cfg, "samples_per_gpu 4 (x 4 GPUs = 16)", apply=False))
    out.append(_v("train_dataloader.num_workers", 4, cfg, "workers_per_gpu"))
    return out


def _coco_1333(file: str, masks: bool = False) -> list[RecipeValue]:
    return [
        _v("train_pipeline.2.scale", (1333, 800), file, "img_scale, keep_ratio", apply=False),
        _v("train_pipeline.3.prob", 0.5, file, "flip_ratio", apply=False),
        _v("model.data_preprocessor.pad_size_divisor", 32, file, "Pad size_divisor", apply=False),
        _v("test_pipeline.1.scale", (1333, 800), file, apply=False),
    ]


def _dense(det: str) -> list[RecipeValue]:
    """RS ATSS / PAA."""
    cfg = RS_CFG.format(f"{det}_r50_fpn_1x_coco")
    m, h = "model", "model.bbox_head"
    out = _backbone(cfg)
    out += [
        _v(f"{m}.neck.start_level", 1, cfg, apply=False),
        _v(f"{m}.neck.add_extra_convs", "on_output", cfg, apply=False),
        _v(f"{m}.neck.num_outs", 5, cfg, apply=False),
        _v(f"{h}.stacked_convs", 4, cfg, apply=False),
        _v(f"{h}.feat_channels", 256, cfg, apply=False),
        _v(f"{h}.anchor_generator.octave_base_scale", 4, cfg, apply=False),
        _v(f"{h}.anchor_generator.scales_per_octave", 3, cfg, apply=False),
        _v(f"{h}.anchor_generator.ratios", [1.0], cfg, apply=False),
        _v(f"{h}.anchor_generator.strides", [8, 16, 32, 64, 128], cfg, apply=False),
        _v(f"{h}.bbox_coder.target_stds", STDS, cfg, apply=False),
        _v(f"{m}.train_cfg.allowed_border", -1, cfg, apply=False),
        _v(f"{m}.train_cfg.pos_weight", -1, cfg, apply=False),
        _v(f"{m}.test_cfg.nms_pre", 1000, cfg, apply=False),
        _v(f"{m}.test_cfg.min_bbox_size", 0, cfg, apply=False),
        _v(f"{m}.test_cfg.score_thr", 0.05, cfg, apply=False),
        _v(f"{m}.test_cfg.nms.iou_threshold", 0.6, cfg, apply=False),
        _v(f"{m}.test_cfg.max_per_img", 100, cfg, apply=False),
    ]
    if det == "atss":
        out.append(_v(f"{m}.train_cfg.assigner", {"type": "ATSSAssigner", "topk": 9}, cfg, apply=False))
    else:
        out += [
            _v(f"{m}.train_cfg.assigner",
               {"type": "MaxIoUAssigner", "pos_iou_thr": 0.1, "neg_iou_thr": 0.1, "min_pos_iou": 0,
                "ignore_iof_thr": -1}, cfg, apply=False),
            _v(f"{h}.topk", 9, cfg, apply=False),
            _v(f"{h}.score_voting", True, cfg, apply=False),
            _v(f"{h}.covariance_type", "diag", "mmdet/models/dense_heads/rank_based_paa_head.py", "GMM covariance",
               apply=False, default="diag"),
            _v(f"{h}.gmm_loss_cls", {"type": "FocalLoss", "use_sigmoid": True, "gamma": 2.0, "alpha": 0.25,
                                      "loss_weight": 1.0}, cfg, "Focal inside the GMM anchor scoring only",
               apply=False),
            _v(f"{h}.gmm_loss_bbox.loss_weight", 1.0, cfg,
               "GIoU weight inside the GMM anchor scoring (mmdet 3.3's PAA: 1.3)"),
        ]
    out += _coco_1333(D_DET)
    out += _sgd(cfg, 0.008)
    out.append(_v("train_dataloader.batch_size", 4, cfg, "samples_per_gpu 4 (x 4 GPUs = 16)", apply=False))
    out.append(_v("train_dataloader.num_workers", 4, cfg, "workers_per_gpu"))
    return out


def _yolact_pipeline() -> list[dict]:
    mean = [123.68, 116.78, 103.94]
    return [
        {"type": "LoadImageFromFile", "backend_args": None},
        {"type": "LoadAnnotations", "with_bbox": True, "with_mask": True},
        {"type": "FilterAnnotations", "min_gt_bbox_wh": (4.0, 4.0)},
        {"type": "PhotoMetricDistortion", "brightness_delta": 32, "contrast_range": (0.5, 1.5),
         "saturation_range": (0.5, 1.5), "hue_delta": 18},
        {"type": "Expand", "mean": mean, "to_rgb": True, "ratio_range": (1, 4)},
        {"type": "MinIoURandomCrop", "min_ious": (0.1, 0.3, 0.5, 0.7, 0.9), "min_crop_size": 0.3},
        {"type": "Resize", "scale": (550, 550), "keep_ratio": False},
        {"type": "RandomFlip", "prob": 0.5},
        {"type": "PackDetInputs"},
    ]


def _yolact() -> list[RecipeValue]:
    cfg = RS_CFG.format("yolact_r50_55e_coco")
    m, h = "model", "model.bbox_head"
    out = _backbone(cfg, frozen=-1, norm_eval=False, extra=[
        _v(f"{m}.backbone.zero_init_residual", False, cfg, apply=False)])
    out += [
        _v(f"{m}.neck.start_level", 1, cfg, apply=False),
        _v(f"{m}.neck.add_extra_convs", "on_input", cfg, apply=False),
        _v(f"{m}.neck.upsample_cfg", {"mode": "bilinear"}, cfg, apply=False),
        _v(f"{h}.num_head_convs", 1, cfg, apply=False),
        _v(f"{h}.feat_channels", 256, cfg, apply=False),
        _v(f"{h}.num_protos", 32, cfg, apply=False),
        _v(f"{h}.anchor_generator.octave_base_scale", 3, cfg, apply=False),
        _v(f"{h}.anchor_generator.scales_per_octave", 1, cfg, apply=False),
        _v(f"{h}.anchor_generator.base_sizes", [8, 16, 32, 64, 128], cfg, apply=False),
        _v(f"{h}.anchor_generator.ratios", [0.5, 1.0, 2.0], cfg, apply=False),
        _v(f"{h}.bbox_coder.target_stds", STDS, cfg, apply=False),
        _v(f"{h}.use_ohem", False, "mmdet/models/dense_heads/ranksort_yolact_head.py",
           "use_ohem True in the config, unused by RS", apply=False),
        _v(f"{m}.train_cfg.assigner.pos_iou_thr", 0.5, cfg, apply=False),
        _v(f"{m}.train_cfg.assigner.neg_iou_thr", 0.4, cfg, apply=False),
        _v(f"{m}.train_cfg.assigner.min_pos_iou", 0.0, cfg, apply=False),
        _v(f"{m}.train_cfg.assigner.gt_max_assign_all", False, cfg, apply=False),
        _v(f"{m}.mask_head.with_seg_branch", False, cfg, "no semantic-segmentation head", apply=False),
        _v(f"{m}.mask_head.max_masks_to_train", None, DET_YOLACT, "every positive trains the mask: "
           "max_masks_to_train 100 is in the config but never applied", apply=False),
        _v(f"{m}.data_preprocessor.mean", [123.68, 116.78, 103.94], cfg, apply=False),
        _v(f"{m}.data_preprocessor.std", [58.40, 57.12, 57.38], cfg, apply=False),
        _v("train_pipeline", _yolact_pipeline(), cfg,
           "photometric distortion first, then expand, min-IoU crop, 550 x 550 resize, flip (mmdet 3.3 distorts "
           "last)"),
        _v("train_dataloader.dataset.pipeline", _yolact_pipeline(), cfg, "the same pipeline in the loader"),
        _v("test_pipeline.1.scale", (550, 550), cfg, "550 x 550, keep_ratio False", apply=False),
        _v(f"{m}.test_cfg.nms_pre", 1000, cfg, apply=False),
        _v(f"{m}.test_cfg.score_thr", 0.05, cfg, apply=False),
        _v(f"{m}.test_cfg.iou_thr", 0.5, cfg, "fast NMS", apply=False),
        _v(f"{m}.test_cfg.top_k", 200, cfg, apply=False),
        _v(f"{m}.test_cfg.max_per_img", 100, cfg, apply=False),
        _v(f"{m}.test_cfg.mask_thr_binary", 0.5, "mmdet/models/dense_heads/ranksort_yolact_head.py", apply=False),
        _v("env_cfg.cudnn_benchmark", True, cfg, apply=False),
    ]
    out += _sgd(cfg, 6e-3, wd=5e-4, sched_file=cfg)
    out.append(_v("train_dataloader.batch_size", 8, cfg, "samples_per_gpu 8 (x 4 GPUs = 32)", apply=False))
    out.append(_v("train_dataloader.num_workers", 4, cfg, "workers_per_gpu", apply=False))
    return out


SOLOV2_LIGHT = "configs/ranksort_loss/ranksort_solov2_light_448_r34_fpn_3x.py"


def _solov2() -> list[RecipeValue]:
    cfg, r = SOLOV2_LIGHT, "RS-SOLOv2"
    m, h = "model", "model.mask_head"
    out = _backbone(cfg, release=r, depth=34, checkpoint="torchvision://resnet34")
    out += [
        _v(f"{m}.neck.in_channels", [64, 128, 256, 512], cfg, release=r, apply=False),
        _v(f"{m}.neck.out_channels", 256, cfg, release=r, apply=False),
        _v(f"{m}.neck.start_level", 0, cfg, release=r, apply=False),
        _v(f"{m}.neck.num_outs", 5, cfg, release=r, apply=False),
        _v(f"{h}.stacked_convs", 2, cfg, release=r, apply=False),
        _v(f"{h}.feat_channels", 256, cfg, "seg_feat_channels", release=r, apply=False),
        _v(f"{h}.strides", [8, 8, 16, 32, 32], cfg, release=r, apply=False),
        _v(f"{h}.scale_ranges", [[1, 56], [28, 112], [56, 224], [112, 448], [224, 896]], cfg, release=r,
           apply=False),
        _v(f"{h}.pos_scale", 0.2, cfg, "sigma", release=r, apply=False),
        _v(f"{h}.num_grids", [40, 36, 24, 16, 12], cfg, release=r, apply=False),
        _v(f"{h}.mask_feature_head.feat_channels", 128, cfg, "MaskFeatHead out_channels", release=r, apply=False),
        _v(f"{h}.mask_feature_head.out_channels", 128, cfg, "MaskFeatHead num_classes (kernel dim); "
           "ins_out_channels 128", release=r, apply=False),
        _v(f"{h}.mask_feature_head.start_level", 0, cfg, release=r, apply=False),
        _v(f"{h}.mask_feature_head.end_level", 3, cfg, release=r, apply=False),
        _v(f"{m}.test_cfg.nms_pre", 500, cfg, release=r, apply=False),
        _v(f"{m}.test_cfg.score_thr", 0.2, cfg, "mmdet 3.3: 0.1", release=r, scope="rs"),
        _v(f"{m}.test_cfg.mask_thr", 0.5, cfg, release=r, apply=False),
        _v(f"{m}.test_cfg.filter_thr", 0.05, cfg, "update_thr", release=r, apply=False),
        _v(f"{m}.test_cfg.kernel", "gaussian", cfg, release=r, apply=False),
        _v(f"{m}.test_cfg.sigma", 2.0, cfg, release=r, apply=False),
        _v(f"{m}.test_cfg.max_per_img", 100, cfg, release=r, apply=False),
        _v("train_pipeline.2.scales", [(768, 512), (768, 480), (768, 448), (768, 416), (768, 384), (768, 352)], cfg,
           "img_scale, multiscale_mode value, keep_ratio", release=r, apply=False),
        _v("test_pipeline.1.scale", (448, 768), cfg, "(768, 448), keep_ratio", release=r, apply=False),
        _v("train_dataloader.batch_size", 8, cfg, "imgs_per_gpu 8 (x 4 GPUs = 32)", release=r, apply=False),
        _v("train_dataloader.num_workers", 4, cfg, "workers_per_gpu", release=r),
    ]
    out += _sgd(cfg, 0.012, release=r, clip={"max_norm": 35, "norm_type": 2}, sched_file=cfg)
    return out


# The RS Loss releases' recipes, per detector (read by every rank-family cell; see the module docstring).
RS_RECIPES: dict[str, list[RecipeValue]] = {
    "faster_rcnn": _rcnn("faster_rcnn"),
    "cascade_rcnn": _rcnn("cascade_rcnn"),
    "mask_rcnn": _rcnn("mask_rcnn"),
    "atss": _dense("atss"),
    "paa": _dense("paa"),
    "yolact": _yolact(),
    "solov2": _solov2(),
}

# Published recipes of cells other than RS's, keyed by (detector, loss): the Bucketed Ranking Losses release's
# AP Loss re-runs of ATSS and PAA (official-recipes.md sections 10 and 11). Their configs are the RS ATSS / PAA
# configs with rank_loss_type APLoss (same model, data, optimizer, schedule and test settings), so every RS
# value is kept, attributed to the Bucketed release's file that sets it there; then the loss settings of its
# heads (scope "cell"), which the builder takes from grid.CELL_LOSSES at both profiles.
BUCKETED_CFG = "configs/bucketed_ranking_losses/ap_loss_{}_r50_fpn_1x_coco.py"


def _bucketed_ap(det: str) -> list[RecipeValue]:
    from dataclasses import replace

    cfg = BUCKETED_CFG.format(det)
    head = f"rank_based_{det}_head.py"
    files = {RS_CFG.format(f"{det}_r50_fpn_1x_coco"): cfg, "mmdet/models/dense_heads/rank_based_paa_head.py": head}
    out = [replace(v, release="Bucketed", file=files.get(v.file, v.file)) for v in _dense(det)]
    h = "model.bbox_head"
    delta = ("δ 1.0 written in the AP Loss call" if det == "atss"
             else "the config sets no δ: the head's default 0.5 (ATSS: 1.0)")
    out += [
        _v(f"{h}.loss_cls.loss", "ap", cfg, "rank_loss_type APLoss", release="Bucketed", scope="cell", apply=False),
        _v(f"{h}.loss_cls.options", {"delta": 1.0 if det == "atss" else 0.5}, head, delta, release="Bucketed",
           scope="cell", apply=False),
        _v(f"{h}.loss_bbox.type", "GIoULoss", head, "GIoU on decoded boxes", release="Bucketed", scope="cell",
           apply=False),
        _v(f"{h}.reg_decoded_bbox", True, cfg if det == "paa" else head,
           "reg_decoded_bbox True" if det == "paa" else "the head decodes the boxes itself", release="Bucketed",
           scope="cell", apply=False),
        _v(f"{h}.loss_cls.score_weighted", True, head, "each positive's GIoU weighted by its max sigmoid score "
           "(detached), normalised by the weights' sum", release="Bucketed", scope="cell", apply=False),
        _v(f"{h}.loss_cls.loc_weights", {"bbox": 2.0 if det == "atss" else 1.0}, head,
           ("a fixed loc_weight 2.0" if det == "atss" else "weight 1.0, no loc_weight") + "; no self-balancing",
           release="Bucketed", scope="cell", apply=False),
    ]
    return out


PUBLISHED_RECIPES: dict[tuple[str, str], list[RecipeValue]] = {
    ("atss", "ap"): _bucketed_ap("atss"),
    ("paa", "ap"): _bucketed_ap("paa"),
}

# LVIS v1: the training scales (multi-scale, mode "value") of the RS release's LVIS Mask R-CNN config and
# of mmdet's own LVIS configs (lvis_v1_instance.py builds on lvis_v0.5_instance.py).
LVIS_TRAIN_SCALES = [(1333, 640), (1333, 672), (1333, 704), (1333, 736), (1333, 768), (1333, 800)]
LVIS_SOURCES = {
    "rs": ("RS", RS_CFG.format("mask_rcnn_r50_fpn_1x_lvis_v1")),
    "other": ("mmdet", "configs/_base_/datasets/lvis_v0.5_instance.py (via lvis_v1_instance.py)"),
}


def recipe_values(detector: str, loss: str, family: str, backbone_init: str) -> list[RecipeValue]:
    """The official values a paper cell holds: the cell's own published recipe (:data:`PUBLISHED_RECIPES`),
    else the RS recipe of ``detector`` for a rank-family cell (its ``rs`` scope for the RS cell only); the
    ``imagenet`` scope when the backbone starts from ImageNet; nothing for a standard cell (mmdet's shipped
    config is its recipe)."""
    if family != "rank":
        return []
    published = PUBLISHED_RECIPES.get((detector, loss))
    out = []
    for v in published if published is not None else RS_RECIPES[detector]:
        if v.scope == "rs" and loss != "rs" and published is None:
            continue
        if v.scope == "imagenet" and backbone_init != "imagenet":
            continue
        out.append(v)
    return out


__all__ = ["ABSENT", "GRID_GPUS", "LVIS_SOURCES", "LVIS_TRAIN_SCALES", "PUBLISHED_RECIPES", "RELEASES", "RS_RECIPES",
           "RecipeValue", "recipe_values"]
