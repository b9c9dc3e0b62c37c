"""The cell builder: mmdet's shipped configs plus documented changes; the paper and tiny profiles; the grid
table in docs/grid.md."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from harness.detectors import DETECTOR_NAMES, LOSS_NAMES, build_cell_config, cells, describe_cell, grid_markdown
from harness.detectors.builder import (
    DELETE,
    Change,
    TINY_BATCH,
    apply_change,
    cell_changes,
    config_diff,
    covered,
    flatten,
    get_path,
    load_base,
)
from harness.detectors.grid import DETECTORS
from harness.detectors.hooks import batch_warning

ROOT = Path(__file__).resolve().parents[1]
BASELINES = {d: DETECTORS[d].baseline_loss for d in DETECTOR_NAMES}
# What a baseline cell at the paper profile may change in mmdet's config, and nothing else: the recipe's
# total batch on the grid's 4 GPUs, and the harness's metadata, hooks and plug-in import (the backbone
# starts from mmdet's own ImageNet checkpoint with mmdet's freezing).
BASELINE_CHANGES = {"train_dataloader.batch_size", "recipe", "custom_hooks", "custom_imports", "cell",
                    # torchvision's RoIAlign instead of mmcv's compiled one (same values, any torch build)
                    "model.roi_head.bbox_roi_extractor.roi_layer.use_torchvision",
                    "model.roi_head.mask_roi_extractor.roi_layer.use_torchvision",
                    # SOLOv2-light's config names its loop twice (type and by_epoch); mmengine refuses that
                    "train_cfg.by_epoch"}

# Published numbers (docs: ../shared/reference/detectors.md, mmdet's configs): lr, total batch, epochs.
PAPER = {
    ("faster_rcnn", "ce"): (0.02, 16, 12), ("faster_rcnn", "rs"): (0.012, 16, 12),
    ("cascade_rcnn", "ce"): (0.02, 16, 12), ("cascade_rcnn", "rs"): (0.012, 16, 12),
    ("atss", "focal"): (0.01, 16, 12), ("atss", "rs"): (0.008, 16, 12), ("atss", "ap"): (0.008, 16, 12),
    ("paa", "focal"): (0.01, 16, 12), ("paa", "rs"): (0.008, 16, 12), ("paa", "ap"): (0.008, 16, 12),
    ("mask_rcnn", "ce"): (0.02, 16, 12), ("mask_rcnn", "rs"): (0.012, 16, 12),
    ("yolact", "ce"): (0.008, 64, 55), ("yolact", "rs"): (0.006, 32, 55),
    ("solov2", "focal"): (0.01, 16, 36), ("solov2", "rs"): (0.012, 32, 36),
}


def _undo(cfg: dict, base: dict, paths) -> dict:
    """``cfg`` with the documented paths put back as mmdet has them."""
    cfg = copy.deepcopy(cfg)
    for path in paths:
        apply_change(cfg, Change(path, get_path(base, path, DELETE), "undo"))
    return cfg


@pytest.mark.parametrize("detector", DETECTOR_NAMES)
def test_baseline_cell_equals_mmdets_config_except_documented_changes(detector):
    loss = BASELINES[detector]
    base = load_base(detector)
    cfg = build_cell_config(detector, loss, profile="paper").to_dict()
    documented = [c.path for c in cell_changes(detector, loss, profile="paper")]
    assert set(documented) <= BASELINE_CHANGES, set(documented) - BASELINE_CHANGES
    diff = config_diff(base, cfg)
    assert diff and all(covered(p, documented) for p in diff), sorted(p for p in diff if not covered(p, documented))
    # putting the documented paths back gives mmdet's config exactly
    assert _undo(cfg, base, documented) == base
    assert cfg["cell"]["changes"] and all("#" in line for line in cfg["cell"]["changes"])


@pytest.mark.parametrize("profile", ["paper", "tiny"])
@pytest.mark.parametrize("detector,loss", cells())
def test_every_cell_differs_from_mmdet_only_where_documented(detector, loss, profile):
    base = load_base(detector)
    cfg = build_cell_config(detector, loss, profile=profile, classes=("a", "b", "c")).to_dict()
    changes = cell_changes(detector, loss, profile=profile, classes=("a", "b", "c"))
    documented = [c.path for c in changes]
    uncovered = sorted(p for p in config_diff(base, cfg) if not covered(p, documented))
    assert not uncovered
    assert all(c.why for c in changes)
    assert all(n == 3 for p, n in flatten(cfg["model"]).items() if p.endswith("num_classes"))


@pytest.mark.parametrize("detector,loss", cells())
def test_paper_profile_recipe(detector, loss):
    cfg = build_cell_config(detector, loss, profile="paper")
    recipe = cfg.recipe
    gpus_batch = cfg.train_dataloader.batch_size * recipe["gpus"]
    assert gpus_batch == recipe["total_batch"] and recipe["coco_total_batch"] == recipe["total_batch"]
    assert cfg.optim_wrapper.optimizer.lr == recipe["lr"] and cfg.train_cfg.max_epochs == recipe["epochs"]
    if (detector, loss) in PAPER:
        assert (recipe["lr"], recipe["total_batch"], recipe["epochs"]) == PAPER[(detector, loss)]
        assert not recipe["source"].startswith("defined here")
    else:
        assert recipe["source"].startswith("defined here")
    if loss != BASELINES[detector] and recipe["total_batch"] == 16 and recipe["gpus"] == 4:
        assert cfg.train_dataloader.batch_size == 4  # 4 GPUs x 4 images, as published
    # R-50 FPN (SOLOv2-light: R-34) from ImageNet, COCO's 80 classes, the published schedule
    checkpoint = "torchvision://resnet34" if detector == "solov2" else "torchvision://resnet50"
    assert cfg.model.backbone.depth == (34 if detector == "solov2" else 50)
    assert cfg.model.backbone.init_cfg == {"type": "Pretrained", "checkpoint": checkpoint}
    steps = [s for s in cfg.param_scheduler if s["type"] == "MultiStepLR"]
    warm = [s for s in cfg.param_scheduler if s["type"] == "LinearLR"]
    assert warm and warm[0]["by_epoch"] is False
    if detector == "yolact" and loss not in ("ce", "focal"):
        assert [s["type"] for s in cfg.param_scheduler] == ["LinearLR", "CosineAnnealingLR"]
    elif detector == "yolact":
        assert steps[0]["milestones"] == [20, 42, 49, 52]
    elif detector == "solov2":
        assert steps[0]["milestones"] == [27, 33] and steps[0]["end"] == 36
        assert warm[0]["start_factor"] == (0.01 if loss not in ("ce", "focal") else 1 / 3)
    else:
        assert steps[0]["milestones"] == [8, 11] and warm[0]["end"] == 500 and warm[0]["start_factor"] == 0.001
    assert [h for h in cfg.custom_hooks if h["type"] == "RecipeCheckHook"][0]["total_batch"] == recipe["total_batch"]


@pytest.mark.parametrize("detector,loss", cells())
def test_tiny_profile_is_small_with_the_same_heads_and_losses(detector, loss):
    tiny = build_cell_config(detector, loss, profile="tiny", classes=("a", "b"))
    paper = build_cell_config(detector, loss, profile="paper", classes=("a", "b"))
    assert tiny.model.backbone.depth == 18 and tiny.model.backbone.base_channels == 16
    assert tiny.model.neck.out_channels == 32
    assert tiny.train_dataloader.batch_size == TINY_BATCH == tiny.recipe["total_batch"]
    assert tiny.optim_wrapper.optimizer.lr == pytest.approx(paper.recipe["lr"] * TINY_BATCH / paper.recipe["total_batch"])
    resize = [t for t in tiny.train_pipeline if t["type"] == "Resize"]
    assert resize and all(t["scale"] == (128, 128) for t in resize)
    assert tiny.train_dataloader.dataset.pipeline == tiny.train_pipeline
    assert tiny.test_dataloader.dataset.pipeline == tiny.test_pipeline
    # every detector trains on resize + flip (no zoom-out, crop or colour jitter at 128 pixels)
    assert {t["type"] for t in tiny.train_pipeline} <= {"LoadImageFromFile", "LoadAnnotations", "FilterAnnotations",
                                                        "Resize", "RandomFlip", "PackDetInputs"}

    from harness.detectors.grid import head_family
    from harness.detectors.recipes import recipe_values
    from harness.losses import get_loss

    # values of the official recipe set at the paper profile only (e.g. PAA's GMM GIoU weight 1.0)
    paper_only = [v.path.removeprefix("model.") for v in recipe_values(detector, loss, head_family(get_loss(loss)),
                                                                        "imagenet") if v.apply]

    def heads(cfg):  # head types and their losses, which the two profiles share
        flat = flatten(cfg.model.to_dict())
        return {k: v for k, v in flat.items() if (k.endswith(".type") and "backbone" not in k and "neck" not in k
                and "sampler" not in k or ".loss_" in k) and not covered(k, paper_only)}

    # the tiny profile's anchor generators are mmdet's with their results kept (harness/detectors/anchors.py)
    tiny_heads, paper_heads = heads(tiny), heads(paper)
    generators = {k for k, v in paper_heads.items() if v == "AnchorGenerator"}
    assert (detector == "solov2") == (not generators)
    assert {k: v for k, v in tiny_heads.items() if k in generators} == dict.fromkeys(generators, "CachedAnchorGenerator")
    assert {**tiny_heads, **dict.fromkeys(generators, "AnchorGenerator")} == paper_heads


@pytest.mark.parametrize("detector,loss", [("atss", "rs"), ("paa", "alrp"), ("faster_rcnn", "ap"),
                                           ("cascade_rcnn", "rs"), ("mask_rcnn", "rs"), ("yolact", "alrp"),
                                           ("solov2", "rs")])
def test_paper_configs_build_into_mmdet_models(detector, loss):
    from harness.detectors.check import build_model

    cfg = build_cell_config(detector, loss, profile="paper", backbone_init="scratch")  # nothing to download here
    model = build_model(cfg)
    # ResNet-50 (SOLOv2-light: ResNet-34)
    assert sum(p.numel() for p in model.backbone.parameters()) > (20e6 if detector != "solov2" else 2e7)


def test_rank_cells_apply_the_published_changes():
    atss = build_cell_config("atss", "rs", profile="paper").model.bbox_head
    assert atss.type == "RankATSSHead" and "loss_centerness" not in atss
    assert atss.anchor_generator.octave_base_scale == 4 and atss.anchor_generator.scales_per_octave == 3
    assert atss.loss_bbox.type == "GIoULoss" and atss.reg_decoded_bbox
    paa = build_cell_config("paa", "rs", profile="paper").model.bbox_head
    assert paa.gmm_loss_cls.type == "FocalLoss" and paa.score_voting
    frcnn = build_cell_config("faster_rcnn", "rs", profile="paper")
    assert frcnn.model.rpn_head.loss_cls.loss_weight == 0.2 and "sampler" not in frcnn.model.train_cfg.rpn
    assert frcnn.model.train_cfg.rcnn.sampler.type == "AllProposalsSampler"
    assert frcnn.model.test_cfg.rcnn.score_thr == 0.40
    assert build_cell_config("faster_rcnn", "alrp", profile="paper").model.rpn_head.loss_cls.loc_error_scale == \
        pytest.approx(0.6)
    assert build_cell_config("cascade_rcnn", "rs", profile="paper").model.roi_head.stage_loss_weights == [1, 1, 1]
    cascade = build_cell_config("cascade_rcnn", "alrp", profile="paper").model.roi_head.bbox_head
    assert [h.loss_cls.loc_error_scale for h in cascade] == pytest.approx([1.0, 0.8, 0.6])  # 2(1 - τ) per stage
    mask = build_cell_config("mask_rcnn", "rs", profile="paper").model.roi_head
    assert mask.type == "RankRoIHead" and mask.mask_head.max_positives == 200 and mask.mask_head.loss_mask.type == "DiceLoss"
    yolact = build_cell_config("yolact", "rs", profile="paper").model
    assert yolact.bbox_head.use_ohem is False and yolact.mask_head.with_seg_branch is False
    assert build_cell_config("yolact", "ce", profile="paper").model.bbox_head.use_ohem is True  # CE keeps OHEM
    ap = build_cell_config("atss", "ap", profile="paper").model.bbox_head  # the Bucketed release's recipe
    assert ap.loss_bbox.type == "GIoULoss" and ap.reg_decoded_bbox is True and ap.loss_cls.loc_weights == {"bbox": 2.0}
    ap = build_cell_config("faster_rcnn", "ap", profile="paper").model.roi_head.bbox_head  # no published recipe
    assert ap.loss_bbox.type == "SmoothL1Loss" and ap.reg_decoded_bbox is False and ap.loss_cls.loc_weights == {"bbox": 1.0}
    focal_rcnn = build_cell_config("faster_rcnn", "focal", profile="paper").model
    assert focal_rcnn.roi_head.bbox_head.loss_cls == {"type": "SigmoidClassesLoss", "loss": focal_rcnn.rpn_head.loss_cls}
    assert build_cell_config("atss", "ce", profile="paper").model.bbox_head.loss_cls.type == "CrossEntropyLoss"


def test_bad_builder_arguments():
    with pytest.raises(KeyError, match="valid: faster_rcnn"):
        build_cell_config("yolo", "rs")
    with pytest.raises(KeyError, match="valid:"):
        build_cell_config("atss", "nope")
    with pytest.raises(KeyError, match="valid: tiny, paper"):
        build_cell_config("atss", "rs", profile="huge")
    with pytest.raises(ValueError, match="2 class names"):
        build_cell_config("atss", "rs", classes=("a", "b"), num_classes=3)


def test_a_checkpoint_path_keeps_the_recipes_freezing():
    cfg = build_cell_config("atss", "focal", profile="paper", backbone_init="/ckpt/r50.pth")
    assert cfg.model.backbone.init_cfg == {"type": "Pretrained", "checkpoint": "/ckpt/r50.pth"}
    assert cfg.model.backbone.frozen_stages == 1 and cfg.model.backbone.norm_eval is True
    assert cfg.recipe["backbone_init"] == "/ckpt/r50.pth"


@pytest.mark.parametrize("detector,loss,checkpoint,frozen,norm_eval", [
    ("faster_rcnn", "rs", "torchvision://resnet50", 1, True), ("atss", "focal", "torchvision://resnet50", 1, True),
    ("yolact", "rs", "torchvision://resnet50", -1, False), ("yolact", "ce", "torchvision://resnet50", -1, False),
    ("solov2", "rs", "torchvision://resnet34", 1, True)])
def test_paper_cells_start_from_the_recipes_imagenet_backbone(detector, loss, checkpoint, frozen, norm_eval):
    bb = build_cell_config(detector, loss, profile="paper").model.backbone
    assert bb.init_cfg == {"type": "Pretrained", "checkpoint": checkpoint}
    assert bb.frozen_stages == frozen and bb.get("norm_eval", True) is norm_eval
    scratch = build_cell_config(detector, loss, profile="paper", backbone_init="scratch").model.backbone
    assert scratch.init_cfg is None and scratch.frozen_stages == -1 and scratch.norm_eval is False


def test_the_tiny_profile_trains_from_scratch_and_refuses_imagenet():
    bb = build_cell_config("atss", "rs").model.backbone
    assert bb.init_cfg is None and bb.frozen_stages == -1 and bb.norm_eval is False
    with pytest.raises(ValueError, match="tiny profile's quarter-width ResNet-18 has no ImageNet checkpoint"):
        build_cell_config("atss", "rs", backbone_init="imagenet")


def test_total_batch_warning():
    assert batch_warning(16, 4, 4) is None
    message = batch_warning(16, 4, 8)
    assert "total batch 32 (8 process(es) x 4 images x 1 accumulated) differs from the recipe's 16" in message
    assert batch_warning(16, 4, 2, accumulate=2) is None  # 2 processes accumulating 2 iterations: the recipe's 16
    assert "total batch 8 (1 process(es) x 4 images x 2 accumulated)" in batch_warning(16, 4, 1, accumulate=2)


def test_grid_table_in_docs_is_current():
    table = grid_markdown()
    assert table.count("\n") == 2 + 35
    doc = (ROOT / "docs" / "grid.md").read_text()
    assert table in doc, "docs/grid.md is stale: paste harness.detectors.grid_markdown() into it"


def test_cells_without_a_published_recipe_are_marked():
    defined = {(c.detector, c.loss) for c in map(lambda dl: describe_cell(*dl), cells()) if c.defined_here}
    assert ("solov2", "alrp") in defined and ("atss", "rs") not in defined and ("atss", "focal") not in defined
    assert len(defined) == 35 - len(PAPER) and ("faster_rcnn", "alrp") in defined  # aLRP's is a 100-epoch recipe
    assert "Dice" in describe_cell("solov2", "alrp").replaces


def test_recipe_check_hook_warns_when_the_runs_total_batch_differs():
    from types import SimpleNamespace

    from mmengine.config import Config

    from harness.detectors.hooks import RecipeCheckHook

    logged = []
    runner = SimpleNamespace(
        train_dataloader=SimpleNamespace(batch_size=None, batch_sampler=SimpleNamespace(batch_size=2)),  # mmdet's loaders
        cfg=Config({"optim_wrapper": {"optimizer": {"lr": 0.004}}}),
        logger=SimpleNamespace(warning=logged.append, info=logged.append),
    )
    with pytest.warns(UserWarning, match="total batch 2 .* differs from the recipe's 16"):
        RecipeCheckHook(total_batch=16, lr=0.008).before_train(runner)
    assert any("learning rate 0.004 (the recipe's: 0.008)" in m for m in logged)
    logged.clear()
    runner.train_dataloader.batch_sampler.batch_size = 16
    RecipeCheckHook(total_batch=16, lr=0.004).before_train(runner)
    assert not logged
    runner.train_dataloader.batch_sampler.batch_size = 4  # 4 images accumulated over 4 iterations: 16
    runner.optim_wrapper = SimpleNamespace(_accumulative_counts=4)
    RecipeCheckHook(total_batch=16, lr=0.004).before_train(runner)
    assert not logged


@pytest.mark.parametrize("detector,loss", [("yolact", "rs"), ("cascade_rcnn", "alrp"), ("faster_rcnn", "focal")])
def test_a_dumped_cell_config_reloads_with_its_plugin(detector, loss, tmp_path):
    from mmengine.config import Config

    cfg = build_cell_config(detector, loss, classes=("a", "b"))
    cfg.dump(str(tmp_path / "cell.py"))
    again = Config.fromfile(str(tmp_path / "cell.py"))  # imports custom_imports: the harness plug-in
    assert again.to_dict()["model"] == cfg.to_dict()["model"] and again.recipe == cfg.recipe


@pytest.mark.parametrize("profile", ["paper", "tiny"])
def test_every_train_loop_is_named_once_as_mmengines_runner_requires(profile):
    for detector in DETECTOR_NAMES:
        loop = build_cell_config(detector, BASELINES[detector], profile=profile).train_cfg
        assert not ("type" in loop and "by_epoch" in loop), (detector, dict(loop))
