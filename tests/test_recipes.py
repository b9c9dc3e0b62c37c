"""Every paper cell holds its official recipe key by key (harness/detectors/recipes.py), each applied
value documented with its source; LVIS trains multi-scale; the recipe tables in docs/grid.md are current."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main
from harness.detectors import build_cell_config, cells
from harness.detectors.builder import cell_changes, get_path
from harness.detectors.grid import head_family, recipes_markdown
from harness.detectors.recipes import ABSENT, LVIS_TRAIN_SCALES, RS_RECIPES, recipe_values
from harness.losses import get_loss

ROOT = Path(__file__).resolve().parents[1]
RANK_CELLS = [(d, x) for d, x in cells() if head_family(get_loss(x)) == "rank"]


# The RS recipes as the official releases publish them, copied by hand from
# ../shared/reference/official-recipes.md (sections 1-5, 7, 8), independent of harness/detectors/recipes.py:
# (lr, weight decay, grad-clip max norm, total batch, epochs, LR steps (None: cosine), warm-up iterations,
# warm-up ratio, test score threshold (R-CNNs: the RCNN stage's)).
OFFICIAL_RS = {
    "atss": (0.008, 1e-4, None, 16, 12, (8, 11), 500, 0.001, 0.05),
    "paa": (0.008, 1e-4, None, 16, 12, (8, 11), 500, 0.001, 0.05),
    "faster_rcnn": (0.012, 1e-4, None, 16, 12, (8, 11), 500, 0.001, 0.40),
    "cascade_rcnn": (0.012, 1e-4, None, 16, 12, (8, 11), 500, 0.001, 0.40),
    "mask_rcnn": (0.012, 1e-4, None, 16, 12, (8, 11), 500, 0.001, 0.40),
    "yolact": (0.006, 5e-4, None, 32, 55, None, 500, 0.1, 0.05),
    "solov2": (0.012, 1e-4, 35, 32, 36, (27, 33), 500, 0.01, 0.2),
}


@pytest.mark.parametrize("detector", sorted(OFFICIAL_RS))
def test_rs_cells_train_with_the_published_recipe(detector):
    cfg = build_cell_config(detector, "rs", profile="paper")
    optimizer, clip = cfg.optim_wrapper.optimizer, cfg.optim_wrapper.get("clip_grad")
    warmup, decay = cfg.param_scheduler
    test_cfg = cfg.model.test_cfg
    steps = tuple(decay["milestones"]) if "milestones" in decay else None
    built = (optimizer.lr, optimizer.weight_decay, clip and clip["max_norm"], cfg.recipe["total_batch"],
             cfg.train_cfg.max_epochs, steps, warmup["end"], warmup["start_factor"], test_cfg.get("rcnn", test_cfg)["score_thr"])
    assert built == OFFICIAL_RS[detector]
    assert decay["type"] == ("CosineAnnealingLR" if OFFICIAL_RS[detector][5] is None else "MultiStepLR")


@pytest.mark.parametrize("detector,loss", RANK_CELLS)
def test_rank_cells_hold_every_official_value(detector, loss):
    cfg = build_cell_config(detector, loss, profile="paper").to_dict()
    values = recipe_values(detector, loss, "rank", "imagenet")
    wrong = [(v.path, v.value, get_path(cfg, v.path, ABSENT)) for v in values if not v.holds(get_path(cfg, v.path, ABSENT))]
    assert not wrong
    # every value the recipe step applies is a documented change naming its release and file
    changes = {c.path: c.why for c in cell_changes(detector, loss, profile="paper")}
    for v in values:
        if v.apply and v.path in changes and changes[v.path].startswith("official recipe"):
            assert v.file in changes[v.path]


def test_the_issues_findings_are_fixed():
    frcnn = build_cell_config("faster_rcnn", "rs", profile="paper").model
    assert frcnn.rpn_head.bbox_coder.target_stds == [0.1, 0.1, 0.2, 0.2]
    cascade = build_cell_config("cascade_rcnn", "rs", profile="paper").model
    assert [h.bbox_coder.target_stds for h in cascade.roi_head.bbox_head] == [[0.1, 0.1, 0.2, 0.2]] * 3
    assert cascade.rpn_head.bbox_coder.target_stds == [0.1, 0.1, 0.2, 0.2]
    assert cascade.train_cfg.rpn_proposal.max_per_img == 1000
    assert build_cell_config("paa", "rs", profile="paper").model.bbox_head.gmm_loss_bbox.loss_weight == 1.0
    solo = build_cell_config("solov2", "rs", profile="paper")
    assert solo.model.backbone.depth == 34 and solo.model.mask_head.stacked_convs == 2
    assert solo.model.mask_head.feat_channels == 256 and solo.model.test_cfg.score_thr == 0.2
    assert (solo.optim_wrapper.optimizer.lr, solo.recipe["total_batch"], solo.train_dataloader.batch_size) == (0.012, 32, 8)
    assert solo.param_scheduler[0]["start_factor"] == 0.01
    yolact = build_cell_config("yolact", "rs", profile="paper")
    assert "clip_grad" not in yolact.optim_wrapper and yolact.train_pipeline[3]["type"] == "PhotoMetricDistortion"
    assert yolact.train_dataloader.dataset.pipeline == yolact.train_pipeline
    # the baselines stay mmdet's configs (mmdet's stds, proposals, GMM weight)
    assert build_cell_config("cascade_rcnn", "ce", profile="paper").model.train_cfg.rpn_proposal.max_per_img == 2000
    assert build_cell_config("paa", "focal", profile="paper").model.bbox_head.loss_bbox.loss_weight == 1.3


def test_the_tiny_profile_is_untouched_by_the_paper_recipes():
    assert build_cell_config("cascade_rcnn", "rs").model.rpn_head.bbox_coder.target_stds == [1.0, 1.0, 1.0, 1.0]
    assert build_cell_config("paa", "rs").model.bbox_head.gmm_loss_bbox.loss_weight == 1.3
    solo = build_cell_config("solov2", "rs").model
    assert solo.backbone.depth == 18 and solo.mask_head.scale_ranges == ((1, 96), (48, 192), (96, 384), (192, 768),
                                                                        (384, 2048))


@pytest.mark.parametrize("loss,source", [("rs", "ranksort_mask_rcnn_r50_fpn_1x_lvis_v1.py"), ("ce", "lvis_v0.5_instance")])
def test_lvis_trains_multi_scale_at_the_paper_profile(loss, source):
    cfg = build_cell_config("mask_rcnn", loss, profile="paper", dataset="lvis")
    resize = [t for t in cfg.train_pipeline if "Resize" in t["type"]]
    assert resize == [{"type": "RandomChoiceResize", "scales": LVIS_TRAIN_SCALES, "keep_ratio": True}]
    assert cfg.train_dataloader.dataset.pipeline == cfg.train_pipeline
    assert [t["scale"] for t in cfg.test_pipeline if t["type"] == "Resize"] == [(1333, 800)]
    changes = [c for c in cell_changes("mask_rcnn", loss, profile="paper", dataset="lvis") if c.path == "train_pipeline"]
    assert changes and source in changes[0].why
    tiny = build_cell_config("mask_rcnn", loss, dataset="lvis")
    assert [t["type"] for t in tiny.train_pipeline if "Resize" in t["type"]] == ["Resize"]


def test_recipe_tables_in_docs_are_current_and_the_command_shows_sources(capsys):
    assert recipes_markdown() in (ROOT / "docs" / "grid.md").read_text(), "paste grid.recipes_markdown() into docs/grid.md"
    assert set(RS_RECIPES) == {d for d, _ in cells()}
    assert main(["cells", "--recipe", "cascade_rcnn", "rs"]) == 0
    out = capsys.readouterr().out
    assert "model.train_cfg.rpn_proposal.max_per_img = 1000  [kemaloksuz/RankSortLoss @ b41f64d (mmdet 2.8) " \
           "configs/ranksort_loss/ranksort_cascade_rcnn_r50_fpn_1x_coco.py]" in out
    assert main(["cells", "--recipe", "atss", "focal"]) == 0
    assert "mmdet 3.3 configs/atss/atss_r50_fpn_1x_coco.py" in capsys.readouterr().out


def test_the_embedded_default_trains_from_scratch():
    from harness.experiments.spec import load_spec

    runs = load_spec(ROOT / "experiments" / "synthetic.yaml").runs()
    assert runs and {r.backbone_init for r in runs} == {"scratch"}
    assert {r.backbone_init for r in load_spec(ROOT / "experiments" / "coco_1x.yaml").runs()} == {"imagenet"}


# The Bucketed Ranking Losses release's AP Loss recipes, copied by hand from official-recipes.md sections 10
# and 11: (AP δ, box loss on decoded boxes, fixed box weight, config file).
OFFICIAL_AP = {
    "atss": (1.0, "GIoULoss", 2.0, "configs/bucketed_ranking_losses/ap_loss_atss_r50_fpn_1x_coco.py"),
    "paa": (0.5, "GIoULoss", 1.0, "configs/bucketed_ranking_losses/ap_loss_paa_r50_fpn_1x_coco.py"),
}


@pytest.mark.parametrize("profile", ["paper", "tiny"])
@pytest.mark.parametrize("detector", sorted(OFFICIAL_AP))
def test_ap_on_atss_and_paa_runs_the_bucketed_releases_recipe(detector, profile):
    delta, box, weight, file = OFFICIAL_AP[detector]
    cfg = build_cell_config(detector, "ap", profile=profile)
    head = cfg.model.bbox_head
    assert head.loss_cls.loss == "ap" and head.loss_cls.options == {"delta": delta}
    assert head.loss_bbox.type == box and head.reg_decoded_bbox is True
    assert head.loss_cls.score_weighted is True and head.loss_cls.loc_weights == {"bbox": weight}
    assert "sb_initial" not in head.loss_cls  # no self-balancing
    assert file in cfg.recipe["source"]
    if profile == "paper":  # the rest as the RS recipe of the detector (§10: same model, data, optimizer)
        assert (cfg.optim_wrapper.optimizer.lr, cfg.recipe["total_batch"], cfg.train_cfg.max_epochs) == (0.008, 16, 12)
        t = cfg.model.test_cfg
        assert (t.nms_pre, t.score_thr, t.nms.iou_threshold, t.max_per_img) == (1000, 0.05, 0.6, 100)
    # the other AP cells keep the loss's defaults: no options, plain means
    other = build_cell_config("faster_rcnn", "ap", profile=profile).model.roi_head.bbox_head.loss_cls
    assert "options" not in other and "score_weighted" not in other


def test_the_published_ap_recipes_are_named_with_their_sources(capsys):
    assert main(["cells", "--recipe", "atss", "ap"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ATSS x ap (paper profile, backbone_init imagenet): Bucketed Ranking Losses release "
                          "(BucketedRankingBasedLosses @ 9ba3b0e) configs/bucketed_ranking_losses/ap_loss_atss_r50_fpn_1x_coco.py")
    assert ("model.bbox_head.loss_cls.options = {'delta': 1.0}  [blisgard/BucketedRankingBasedLosses @ 9ba3b0e "
            "(mmdet 2.25.3) rank_based_atss_head.py]") in out
    assert "train_dataloader.num_workers = 4  [blisgard/BucketedRankingBasedLosses" in out
    assert main(["cells", "--json"]) == 0
    import json

    rows = {(r["detector"], r["loss"]): r for r in json.loads(capsys.readouterr().out)}
    assert not rows[("atss", "ap")]["defined_here"] and not rows[("paa", "ap")]["defined_here"]
    assert rows[("faster_rcnn", "ap")]["defined_here"]


def test_published_numbers_stand_beside_the_cells_that_run_their_recipes():
    """A published AP / oLRP number stands beside a cell (paper_results.csv's ``beside``) exactly when the cell
    runs a published recipe; the AP Loss re-runs on ATSS and PAA (38.3, 37.3) are now such cells."""
    from harness.detectors.grid import PUBLISHED, describe_cell
    from harness.results.paper import load_paper, paper_for_tables

    paper = load_paper()
    for r in paper[(paper["unit"] == "percent") & (paper["beside"] == 1)].itertuples():
        assert not describe_cell(r.detector, r.loss).defined_here, (r.detector, r.loss, r.metric)
    beside = paper_for_tables().set_index(["dataset", "detector", "loss", "metric"])["paper"]
    assert {k: beside[("coco", *k, "bbox_AP")] for k in PUBLISHED} == {("atss", "ap"): 38.3, ("paa", "ap"): 37.3}


AP_LOCALISATION = {"faster_rcnn": ["model.rpn_head", "model.roi_head.bbox_head"],
                   "cascade_rcnn": ["model.rpn_head"] + [f"model.roi_head.bbox_head.{i}" for i in range(3)],
                   "mask_rcnn": ["model.rpn_head", "model.roi_head.bbox_head"], "yolact": ["model.bbox_head"]}


@pytest.mark.parametrize("detector", sorted(AP_LOCALISATION))
def test_ap_cells_without_a_recipe_regress_deltas_as_the_anchor_based_ap_config(detector):
    """aLRPLoss configs/alrp_loss/ap_loss_retinanet_r50_fpn_100e_coco500.py: Smooth L1 β 1.0 on DeltaXYWH
    deltas with stds [0.1, 0.1, 0.2, 0.2], the stds of these heads at the paper profile (β 0.11 is the
    FoveaBox AP config's)."""
    from harness.detectors.grid import SMOOTH_L1_SOURCE

    cfg = build_cell_config(detector, "ap", profile="paper").to_dict()
    for head in AP_LOCALISATION[detector]:
        assert get_path(cfg, f"{head}.loss_bbox") == {"type": "SmoothL1Loss", "beta": 1.0, "loss_weight": 1.0}
        assert get_path(cfg, f"{head}.reg_decoded_bbox") is False
        assert get_path(cfg, f"{head}.bbox_coder.target_stds") == [0.1, 0.1, 0.2, 0.2]
    assert "ap_loss_retinanet_r50_fpn_100e_coco500.py" in SMOOTH_L1_SOURCE
    from harness.detectors.grid import describe_cell

    assert "Smooth L1 (β = 1) on encoded deltas" in describe_cell(detector, "ap").replaces


@pytest.mark.parametrize("profile", ["paper", "tiny"])
def test_rank_yolact_trains_every_positives_mask_and_the_baseline_keeps_mmdets_cap(profile):
    for loss in ("ap", "alrp", "rs"):
        assert build_cell_config("yolact", loss, profile=profile).model.mask_head.max_masks_to_train is None
    assert build_cell_config("yolact", "ce", profile=profile).model.mask_head.max_masks_to_train == 100


@pytest.mark.parametrize("profile", ["paper", "tiny"])
def test_mask_rcnn_rank_cells_use_the_rs_releases_dice(profile):
    """Squared terms in the denominator and eps 1e-5 (RankBasedFCNMaskHead), not mmdet's eps 1e-3."""
    import torch
    from mmdet.registry import MODELS

    import harness.detectors.plugin  # noqa: F401

    for loss in ("ap", "alrp", "rs"):
        cfg = build_cell_config("mask_rcnn", loss, profile=profile).model.roi_head.mask_head.loss_mask
        assert (cfg.type, cfg.naive_dice, cfg.eps) == ("DiceLoss", False, 1e-5)
    dice = MODELS.build(cfg.to_dict())
    logits = torch.tensor([[[-4.0, -4.0], [-4.0, 2.0]]])
    target = torch.tensor([[[0.0, 0.0], [0.0, 1.0]]])
    p = logits.sigmoid()
    expected = 1 - 2 * (p * target).sum() / ((p * p).sum() + 1e-5 + (target * target).sum() + 1e-5)
    assert float(dice(logits, target, reduction_override="none")[0]) == pytest.approx(float(expected), rel=1e-6)


def test_centerness_is_dropped_for_the_releases_reason():
    """RS ranks by IoU; AP and aLRP have binary targets: their cells drop the branch because the releases'
    ranking-loss heads have none, not because anything sorts by IoU."""
    for detector in ("atss", "paa"):
        for loss in ("ap", "alrp", "rs"):
            why = {c.path: c.why for c in cell_changes(detector, loss, profile="paper")}["model.bbox_head.loss_centerness"]
            assert ("sorts by IoU" in why) == (loss == "rs")
            assert loss == "rs" or "the ranking-loss releases' heads have none for any loss" in why
