"""The 7 × 5 grid as data: the detectors, their published recipes, and what each cell changes.

Standard library only (no torch, no mmdet): the command line lists cells and the docs table is generated
from here without importing the training stack.

A cell is ``(detector, loss)``. Which *head family* a cell uses is read off the loss's
:class:`~harness.losses.LossSpec`, never off its name:

* ``standard``: the loss is pointwise and names an mmdet loss config (``spec.mmdet``, ``spec.ranking``
  false: CE, Focal). The cell is mmdet's shipped config with the classification loss swapped where it
  differs from the detector's published loss.
* ``rank``: every other loss. The cell uses this project's mmdet 3.x heads
  (:mod:`harness.detectors.dense_heads`, :mod:`harness.detectors.roi_heads`), which flatten the whole batch into one classification call, build
  targets as ``spec.targets`` says and weigh their localisation terms as ``spec.balancing`` says.

Recipes (learning rate, total batch, schedule) are data keyed by (detector, loss) for the published
ones; a cell without a published recipe takes its detector's RS recipe (rank family) or its detector's
mmdet recipe (standard family), and its ``source`` says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

DETECTOR_NAMES = ("faster_rcnn", "cascade_rcnn", "atss", "paa", "mask_rcnn", "yolact", "solov2")
LOSS_NAMES = ("ce", "focal", "ap", "alrp", "rs")  # the five losses of the comparison
# How tables and plots name losses, in this order (any other registered loss: its own name, after these).
LOSS_TITLES = {"ce": "CE", "focal": "Focal", "ap": "AP", "alrp": "aLRP", "rs": "RS",
               "bucketed_ap": "Bucketed AP", "bucketed_rs": "Bucketed RS"}
PROFILES = ("tiny", "paper")


@dataclass(frozen=True)
class Recipe:
    """A training recipe at COCO scale: learning rate at ``total_batch`` = ``gpus`` × ``batch_per_gpu``."""

    lr: float
    gpus: int
    batch_per_gpu: int
    epochs: int
    milestones: tuple[int, ...] | None  # MultiStepLR steps (epochs); None: cosine annealing
    warmup_iters: int
    warmup_ratio: float
    source: str

    @property
    def total_batch(self) -> int:
        return self.gpus * self.batch_per_gpu

    @property
    def schedule(self) -> str:
        steps = f"steps {', '.join(map(str, self.milestones))}" if self.milestones else "cosine"
        return f"{self.epochs} epochs, {steps}"


@dataclass(frozen=True)
class Detector:
    name: str
    title: str
    base_config: str  # relative to mmdet's .mim/configs
    baseline_loss: str
    outputs: tuple[str, ...]  # what the model predicts: bbox, segm
    mmdet_recipe: Recipe  # what the shipped config trains with
    rs_recipe: Recipe  # the RS Loss paper's recipe
    rank_changes: str  # what a rank-family cell changes (beyond the loss)
    quality: str  # what a positive's quality target is
    loc_terms: tuple[str, ...]  # localisation terms the head balances
    cls_layers: tuple[str, ...] = field(default=())  # parameter-name prefixes of classification layers
    checkpoint: str = "torchvision://resnet50"  # the recipes' ImageNet backbone (mmdet's and RS's alike)

    @property
    def metric_families(self) -> tuple[str, ...]:
        """The metric families a run of this detector reports (``bbox_*``, ``segm_*``): what it predicts,
        plus box metrics for a mask-only detector (SOLOv2), computed from each mask's tight box
        (:mod:`harness.evaluation.convert`)."""
        return ("bbox", "segm") if "segm" in self.outputs else self.outputs


_1X = dict(epochs=12, milestones=(8, 11), warmup_iters=500, warmup_ratio=0.001)
_3X = dict(epochs=36, milestones=(27, 33), warmup_iters=500, warmup_ratio=1 / 3)
_RS_REPO = "RS Loss release (RankSortLoss @ b41f64d)"


def _rs(config: str) -> str:
    return f"{_RS_REPO} configs/ranksort_loss/{config}.py"


def _mmdet(config: str) -> str:
    return f"mmdet 3.3 configs/{config}.py"


DETECTORS: dict[str, Detector] = {
    d.name: d
    for d in (
        Detector(
            "faster_rcnn", "Faster R-CNN", "faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py", "ce", ("bbox",),
            Recipe(0.02, 8, 2, **_1X, source=_mmdet("faster_rcnn/faster-rcnn_r50_fpn_1x_coco")),
            Recipe(0.012, 4, 4, **_1X, source=_rs("ranksort_faster_rcnn_r50_fpn_1x_coco")),
            "RPN: no sampling, all three RPN terms x 0.2, GIoU on decoded anchors; RoI: sigmoid classes (no "
            "background logit), all proposals (+ GT boxes), GIoU on decoded boxes",
            "IoU of the decoded box (RPN: decoded anchor) with its GT",
            ("bbox",),
            ("rpn_head.rpn_cls", "roi_head.bbox_head.fc_cls"),
        ),
        Detector(
            "cascade_rcnn", "Cascade R-CNN", "cascade_rcnn/cascade-rcnn_r50_fpn_1x_coco.py", "ce", ("bbox",),
            Recipe(0.02, 8, 2, **_1X, source=_mmdet("cascade_rcnn/cascade-rcnn_r50_fpn_1x_coco")),
            Recipe(0.012, 4, 4, **_1X, source=_rs("ranksort_cascade_rcnn_r50_fpn_1x_coco")),
            "as Faster R-CNN in the RPN and in each of the 3 stages; stage weights (1, 1, 1)",
            "IoU of the decoded box with its GT (each stage)",
            ("bbox",),
            ("rpn_head.rpn_cls", "roi_head.bbox_head.0.fc_cls", "roi_head.bbox_head.1.fc_cls",
             "roi_head.bbox_head.2.fc_cls"),
        ),
        Detector(
            "atss", "ATSS", "atss/atss_r50_fpn_1x_coco.py", "focal", ("bbox",),
            Recipe(0.01, 8, 2, **_1X, source=_mmdet("atss/atss_r50_fpn_1x_coco")),
            Recipe(0.008, 4, 4, **_1X, source=_rs("ranksort_atss_r50_fpn_1x_coco")),
            "no centerness branch; 3 anchors per location (octave base scale 4, 3 scales per octave)",
            "IoU of the decoded box with its GT",
            ("bbox",),
            ("bbox_head.atss_cls",),
        ),
        Detector(
            "paa", "PAA", "paa/paa_r50_fpn_1x_coco.py", "focal", ("bbox",),
            Recipe(0.01, 8, 2, **_1X, source=_mmdet("paa/paa_r50_fpn_1x_coco")),
            Recipe(0.008, 4, 4, **_1X, source=_rs("ranksort_paa_r50_fpn_1x_coco")),
            "no IoU branch; 3 anchors per location; score voting kept; Focal + GIoU only inside the GMM "
            "anchor scoring",
            "IoU of the decoded box with its GT",
            ("bbox",),
            ("bbox_head.atss_cls",),
        ),
        Detector(
            "mask_rcnn", "Mask R-CNN", "mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py", "ce", ("bbox", "segm"),
            Recipe(0.02, 8, 2, **_1X, source=_mmdet("mask_rcnn/mask-rcnn_r50_fpn_1x_coco")),
            Recipe(0.012, 4, 4, **_1X, source=_rs("ranksort_mask_rcnn_r50_fpn_1x_coco")),
            "box branch as Faster R-CNN; mask BCE -> Dice on at most 200 positives",
            "IoU of the decoded box with its GT",
            ("bbox", "mask"),
            ("rpn_head.rpn_cls", "roi_head.bbox_head.fc_cls"),
        ),
        Detector(
            "yolact", "YOLACT", "yolact/yolact_r50_8xb8-55e_coco.py", "ce", ("bbox", "segm"),
            Recipe(8e-3, 8, 8, epochs=55, milestones=(20, 42, 49, 52), warmup_iters=1000, warmup_ratio=0.1,
                   source=_mmdet("yolact/yolact_r50_8xb8-55e_coco")),
            Recipe(0.006, 4, 8, epochs=55, milestones=None, warmup_iters=500, warmup_ratio=0.1,
                   source=_rs("ranksort_yolact_r50_55e_coco")),
            "sigmoid classes over all anchors (no OHEM), GIoU on decoded boxes, Dice masks, no "
            "semantic-segmentation branch",
            "IoU of the decoded box with its GT",
            ("bbox", "mask"),
            ("bbox_head.conv_cls",),
        ),
        Detector(
            # SOLOv2-light R-34 FPN: the model of the published RS SOLOv2 number (32.6 mask AP)
            "solov2", "SOLOv2", "solov2/solov2-light_r34_fpn_ms-3x_coco.py", "focal", ("segm",),
            Recipe(0.01, 8, 2, **_3X, source=_mmdet("solov2/solov2-light_r34_fpn_ms-3x_coco")),
            Recipe(0.012, 4, 8, epochs=36, milestones=(27, 33), warmup_iters=500, warmup_ratio=0.01,
                   source="RS Loss SOLOv2 release (RankSortLoss-Solov2 @ cd13eaf) "
                          "configs/ranksort_loss/ranksort_solov2_light_448_r34_fpn_3x.py"),
            "one positive per grid cell (a cell claimed by two instances keeps the last, as its label does)",
            "Dice coefficient of the predicted mask with its GT",
            ("mask",),
            ("mask_head.conv_cls",),
            checkpoint="torchvision://resnet34",
        ),
    )
}

_BUCKETED_REPO = "Bucketed Ranking Losses release (BucketedRankingBasedLosses @ 9ba3b0e)"


def _bucketed(config: str) -> str:
    return f"{_BUCKETED_REPO} configs/bucketed_ranking_losses/{config}.py"


# Published recipes other than RS's (RS's is on each detector), keyed by (detector, loss): the Bucketed
# Ranking Losses release's AP Loss re-runs of ATSS and PAA at 1x (38.3 and 37.3 box AP; the RS models with
# rank_loss_type APLoss, the RS recipes' data, optimizer and schedule; total batch 16 inferred from 4 x 4 as
# for RS). Their values key by key: harness/detectors/recipes.py (PUBLISHED_RECIPES); their loss settings:
# CELL_LOSSES below. The aLRP release's Faster R-CNN (40.7 box AP) trained 100 epochs at 512 pixels with
# SSD-style augmentation and batch 32 (configs/alrp_loss/alrp_loss_faster_rcnn_r50_fpn_100e_coco500.py), a
# recipe a 1x grid does not run; its cell takes the detector's RS recipe and its number is shown apart
# (experiments/paper_results.csv).
PUBLISHED: dict[tuple[str, str], Recipe] = {
    ("atss", "ap"): Recipe(0.008, 4, 4, **_1X, source=_bucketed("ap_loss_atss_r50_fpn_1x_coco")),
    ("paa", "ap"): Recipe(0.008, 4, 4, **_1X, source=_bucketed("ap_loss_paa_r50_fpn_1x_coco")),
}


def detector_names() -> tuple[str, ...]:
    return DETECTOR_NAMES


def get_detector(name: str) -> Detector:
    try:
        return DETECTORS[name]
    except KeyError:
        raise KeyError(f"unknown detector {name!r}; valid: {', '.join(DETECTOR_NAMES)}") from None


def head_family(spec) -> str:
    """``'standard'`` for a pointwise loss with an mmdet config (mmdet's own heads), else ``'rank'``."""
    return "standard" if (spec.mmdet is not None and not spec.ranking) else "rank"


def cell_recipe(detector: str, loss: str) -> Recipe:
    """The COCO-scale recipe of a cell (the ``paper`` profile), its ``source`` saying where it is from."""
    from harness.losses import get_loss

    det = get_detector(detector)
    spec = get_loss(loss)
    if loss == det.baseline_loss:
        return det.mmdet_recipe
    if loss == "rs":
        return det.rs_recipe
    if (detector, loss) in PUBLISHED:
        return PUBLISHED[(detector, loss)]
    if head_family(spec) == "standard":
        return replace(det.mmdet_recipe, source=f"defined here: the detector's mmdet recipe ({det.mmdet_recipe.source}) "
                                                f"with the loss swapped")
    return replace(det.rs_recipe, source="defined here: no published recipe; the detector's RS recipe")


@dataclass(frozen=True)
class CellInfo:
    """One line of the grid table."""

    detector: str
    loss: str
    family: str
    replaces: str
    ranks_by: str
    balancing: str
    recipe: Recipe
    defined_here: bool

    def as_dict(self) -> dict:
        r = self.recipe
        return {
            "detector": self.detector, "loss": self.loss, "family": self.family, "replaces": self.replaces,
            "ranks_by": self.ranks_by, "balancing": self.balancing, "lr": r.lr, "total_batch": r.total_batch,
            "gpus": r.gpus, "batch_per_gpu": r.batch_per_gpu, "epochs": r.epochs, "schedule": r.schedule,
            "source": r.source, "defined_here": self.defined_here,
        }


_STANDARD_SWAP = {
    # what swapping the classification loss in mmdet's own heads touches, per detector
    "faster_rcnn": "RPN and RoI classification loss -> {L} (RoI: sigmoid classes, no background logit); "
                   "samplers and L1 box losses as shipped",
    "cascade_rcnn": "RPN and the 3 RoI stages' classification loss -> {L} (sigmoid classes); rest as shipped",
    "mask_rcnn": "RPN and RoI classification loss -> {L} (sigmoid classes); BCE masks as shipped",
    "atss": "classification loss -> {L}; centerness, GIoU, 1 anchor per location as shipped",
    "paa": "classification loss -> {L} (also inside the GMM anchor scoring); IoU branch as shipped",
    "yolact": "softmax CE with OHEM -> {L} over all anchors (OHEM off: it needs per-anchor softmax CE); "
              "masks and semantic branch as shipped",
    "solov2": "category-branch loss -> {L}; Dice masks as shipped",
}


# Localisation loss of a rank-family cell without a published recipe of its own (CELL_LOSSES), keyed by loss
# name: recipe data read by the cell builder, never by a head. RS, aLRP and any new ranking loss use GIoU on
# decoded boxes, as their releases do. AP Loss has a published 1x recipe only on ATSS and PAA (GIoU, CELL_LOSSES);
# elsewhere it regresses encoded deltas with Smooth L1, as the aLRP release's anchor-based AP Loss config does:
# configs/alrp_loss/ap_loss_retinanet_r50_fpn_100e_coco500.py (aLRPLoss @ 2cfaa8e), SmoothL1Loss beta 1.0 on
# DeltaXYWH deltas with target_stds [0.1, 0.1, 0.2, 0.2], the stds of every rank-family RPN, RoI and YOLACT
# head at the paper profile. (The same release's FoveaBox AP config uses beta 0.11, but FoveaBox regresses
# its own log-space targets, not anchor deltas; with stds 0.1 / 0.2 a beta of 1.0 on the normalised deltas
# is a beta of 0.1 / 0.2 on the raw ones, about the 0.11 that anchor heads use with stds 1.)
LOCALISATION = {"ap": "smooth_l1"}
DEFAULT_LOCALISATION = "giou"
SMOOTH_L1_BETA = 1.0
SMOOTH_L1_SOURCE = "aLRP release (aLRPLoss @ 2cfaa8e) configs/alrp_loss/ap_loss_retinanet_r50_fpn_100e_coco500.py"


@dataclass(frozen=True)
class CellLoss:
    """How a rank-family cell's heads use its loss, where a published recipe says more than the loss's
    registered defaults and balancing rule (read by the builder into the heads' ``HarnessLoss`` configs).

    ``localisation``: ``'giou'`` (decoded boxes) or ``'smooth_l1'`` (encoded deltas); ``score_weighted``:
    each positive's localisation loss weighted by its highest class score (detached) and normalised by the
    weights' sum, as the RS heads do (a ``'fixed'`` loss otherwise takes a plain mean); ``loc_weights``: the
    fixed weight per localisation term; ``options``: the loss's options (AP Loss's δ); ``source``: the files
    that set them."""

    localisation: str = DEFAULT_LOCALISATION
    score_weighted: bool = False
    loc_weights: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    source: str = ""


_BUCKETED_AP_ATSS = (f"{_BUCKETED_REPO} rank_based_atss_head.py (δ 1.0 written in the call; GIoU x loc_weight 2.0, "
                     f"no self-balancing)")
_BUCKETED_AP_PAA = (f"{_BUCKETED_REPO} rank_based_paa_head.py (δ: the head's default 0.5, the config sets none; GIoU "
                    f"x 1.0, no self-balancing)")

# Loss settings of published recipes, keyed by (detector, loss).
CELL_LOSSES: dict[tuple[str, str], CellLoss] = {
    ("atss", "ap"): CellLoss("giou", score_weighted=True, loc_weights={"bbox": 2.0}, options={"delta": 1.0},
                             source=_BUCKETED_AP_ATSS),
    ("paa", "ap"): CellLoss("giou", score_weighted=True, loc_weights={"bbox": 1.0}, options={"delta": 0.5},
                            source=_BUCKETED_AP_PAA),
}


def cell_loss(detector: str, spec) -> CellLoss:
    """The loss settings of a rank-family cell: its published recipe's (:data:`CELL_LOSSES`), else the
    loss's localisation (:data:`LOCALISATION`), its registered defaults and its balancing rule."""
    published = CELL_LOSSES.get((detector, spec.name))
    if published is not None:
        return published
    return CellLoss(LOCALISATION.get(spec.name, DEFAULT_LOCALISATION))


def localisation_recipe(spec, detector: str | None = None) -> str:
    """``'giou'`` (decoded boxes) or ``'smooth_l1'`` (encoded deltas, β = :data:`SMOOTH_L1_BETA`) for a
    rank-family cell (``detector`` None: the loss's own, without a cell's published recipe)."""
    if detector is not None:
        return cell_loss(detector, spec).localisation
    return LOCALISATION.get(spec.name, DEFAULT_LOCALISATION)


def fixed_weights(det: Detector) -> dict[str, float]:
    """Localisation weights of a ``fixed``-balancing loss: 1 for boxes and masks, SOLOv2's shipped Dice 3."""
    return {t: (3.0 if (det.name == "solov2" and t == "mask") else 1.0) for t in det.loc_terms}


def _balancing_text(spec, det: Detector) -> str:
    terms = ", ".join(det.loc_terms)
    published = CELL_LOSSES.get((det.name, spec.name))
    if spec.balancing == "value":
        return (f"value-based: λ = cls value / term value every iteration ({terms}); each positive weighted "
                f"by its max class score")
    if spec.balancing == "self_balance":
        primary, rest = det.loc_terms[0], det.loc_terms[1:]
        comp = "rank-weighted localisation component" if spec.uses_loc_errors else f"mean {primary} loss"
        text = f"self-balance: {primary} = {comp} x SB (50, then once per epoch (L_loc + L_cls) / L_loc)"
        if rest:
            text += f"; {', '.join(rest)}: mean Dice x its own SB starting at 1"
        return text
    weights = {**fixed_weights(det), **(published.loc_weights if published else {})}
    text = ", ".join(f"{t} {w:g}" for t, w in weights.items())
    if published and published.score_weighted:
        return (f"fixed: {text}; each positive weighted by its max class score (detached), normalised by the "
                f"weights' sum")
    return f"fixed: {text}; plain mean over positives"


def _loc_text(spec, det: Detector) -> str:
    if det.name == "solov2":
        return "Dice loss of each positive's mask"
    loss = cell_loss(det.name, spec)
    if loss.localisation == "smooth_l1":
        return (f"Smooth L1 (β = {SMOOTH_L1_BETA:g}) on encoded deltas (stds 0.1, 0.1, 0.2, 0.2), as the aLRP "
                f"release's anchor-based AP Loss config (ap_loss_retinanet_r50_fpn_100e_coco500.py)")
    text = "GIoU on decoded boxes"
    if (det.name, spec.name) in CELL_LOSSES:
        text += f" ({loss.source.split(' (')[0]} recipe)"
    if "delta" in loss.options:
        text += f"; δ = {loss.options['delta']:g}"
    return text


def describe_cell(detector: str, loss: str) -> CellInfo:
    from harness.losses import get_loss

    det = get_detector(detector)
    spec = get_loss(loss)
    recipe = cell_recipe(detector, loss)
    family = head_family(spec)
    if family == "standard":
        if loss == det.baseline_loss:
            replaces = "nothing: mmdet's shipped config (the baseline)"
        else:
            replaces = _STANDARD_SWAP[detector].format(L=spec.summary.split(" (")[0])
        ranks_by = "- (pointwise loss, binary targets)"
        balancing = "fixed: mmdet's shipped loss weights"
    else:
        replaces = f"{det.baseline_loss} -> {loss}, one call over the whole batch; {det.rank_changes}"
        replaces += f"; localisation: {_loc_text(spec, det)}"
        if spec.uses_loc_errors:
            replaces += ("; E_loc = Dice loss of the mask (no boxes)" if det.name == "solov2"
                         else "; E_loc = GIoU loss / 2(1-τ), τ the positive IoU threshold (0.5; RPN 0.7; Cascade "
                               "stages 0.5, 0.6, 0.7)")
        ranks_by = det.quality if spec.targets == "quality" else "1 for every positive (binary)"
        balancing = _balancing_text(spec, det)
    defined = recipe.source.startswith("defined here")
    return CellInfo(detector, loss, family, replaces, ranks_by, balancing, recipe, defined)


def grid(losses: tuple[str, ...] | None = None) -> list[CellInfo]:
    """Every cell (detector-major) over ``losses`` (default: the five of the comparison)."""
    return [describe_cell(d, loss) for d in DETECTOR_NAMES for loss in (losses or LOSS_NAMES)]


def grid_markdown(losses: tuple[str, ...] | None = None) -> str:
    """The grid table of docs/grid.md: one line per cell."""
    lines = [
        "| detector | loss | heads | what the loss replaces (and what else changes) | ranks by (positive target) "
        "| balancing | lr @ total batch, schedule (COCO) | recipe source |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in grid(losses):
        r = c.recipe
        src = f"**{r.source}**" if c.defined_here else r.source
        lines.append(
            f"| {DETECTORS[c.detector].title} | {c.loss} | {c.family} | {c.replaces} | {c.ranks_by} | {c.balancing} "
            f"| {r.lr:g} @ {r.total_batch} ({r.gpus}x{r.batch_per_gpu}), {r.schedule} | {src} |"
        )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------- recipes, key by key

def _fmt(value) -> str:
    from harness.detectors.recipes import ABSENT

    return "absent" if value is ABSENT else repr(value)


def recipe_lines(detector: str, loss: str, backbone_init: str = "imagenet") -> list[str]:
    """What ``harness cells --recipe DETECTOR LOSS`` prints: the cell's recipe at the paper profile, each
    value with the release and config file that sets it."""
    from harness.detectors.recipes import GRID_GPUS, RELEASES, recipe_values
    from harness.losses import get_loss

    det = get_detector(detector)
    spec = get_loss(loss)
    r = cell_recipe(detector, loss)
    family = head_family(spec)
    lines = [f"{det.title} x {loss} (paper profile, backbone_init {backbone_init}): {r.source}",
             f"  lr {r.lr:g} at total batch {r.total_batch} (published {r.gpus} GPUs x {r.batch_per_gpu}; run on "
             f"{GRID_GPUS} GPUs x {r.total_batch // GRID_GPUS}), {r.schedule}, linear warm-up {r.warmup_iters} "
             f"iterations from {r.warmup_ratio:g}  [{r.source}]"]
    values = recipe_values(detector, loss, family, backbone_init)
    if not values:
        lines.append(f"  every other value: mmdet's shipped config {det.base_config} as it is "
                     f"(backbone {det.checkpoint}, its frozen stages and BatchNorm mode)")
        return lines
    for v in values:
        how = "" if v.apply else "  (already so)"
        note = f"  ({v.note})" if v.note else ""
        lines.append(f"  {v.path} = {_fmt(v.value)}  [{RELEASES[v.release]} {v.file}]{note}{how}")
    return lines


def recipes_markdown() -> str:
    """The official RS recipe of every detector, key by key with its source, then the other published
    recipes (AP Loss on ATSS and PAA) by what they change in their detector's RS recipe (docs/grid.md)."""
    from harness.detectors.recipes import PUBLISHED_RECIPES, RELEASES, RS_RECIPES

    def table(values) -> list[str]:
        rows = ["| mmdet 3.x key | value | scope | set by | note |", "|---|---|---|---|---|"]
        for v in values:
            value = _fmt(v.value).replace("|", "\\|")
            if len(value) > 80:
                value = value[:77] + "..."
            mark = "" if v.apply else " (as mmdet / the head family has it)"
            rows.append(f"| `{v.path}` | `{value}` | {v.scope} | {RELEASES[v.release].split(' (')[0]} "
                        f"`{v.file}` | {v.note}{mark} |")
        return rows + [""]

    def heading(title: str, r: Recipe) -> list[str]:
        return [f"#### {title}: {r.source}\n",
                f"lr {r.lr:g} at total batch {r.total_batch} ({r.gpus} GPUs x {r.batch_per_gpu}), {r.schedule}, "
                f"warm-up {r.warmup_iters} iterations from {r.warmup_ratio:g}.\n"]

    out = []
    for name in DETECTOR_NAMES:
        det = DETECTORS[name]
        out += heading(det.title, det.rs_recipe) + table(RS_RECIPES[name])
    for (name, loss), values in PUBLISHED_RECIPES.items():
        det = DETECTORS[name]
        rs = {(v.path, repr(v.value)) for v in RS_RECIPES[name]}
        own = [v for v in values if (v.path, repr(v.value)) not in rs]
        first = values[0]
        out += heading(f"{det.title} x {loss}", cell_recipe(name, loss))
        out.append(f"Every value of {det.title}'s RS recipe above, set here by {RELEASES[first.release].split(' (')[0]} "
                   f"`{first.file}` (`harness cells --recipe {name} {loss}` lists them), and:\n")
        out += table(own)
    return "\n".join(out)
