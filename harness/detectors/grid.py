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

# Published recipes other than RS's (RS's is on each detector), keyed by (detector, loss). None at 1x:
# the aLRP release's Faster R-CNN (40.7 box AP) trained 100 epochs at 512 pixels with SSD-style
# augmentation and batch 32 (configs/alrp_loss/alrp_loss_faster_rcnn_r50_fpn_100e_coco500.py), a recipe
# a 1x grid does not run; its cell takes the detector's RS recipe and its number is shown apart
# (experiments/paper_results.csv).
PUBLISHED: dict[tuple[str, str], Recipe] = {}


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


# Localisation loss of a rank-family cell. AP Loss's own recipe regresses encoded deltas with Smooth L1;
# every other ranking loss (RS, aLRP and any new one) uses GIoU on decoded boxes. Keyed by loss name: recipe
# data read by the cell builder, never by a head.
LOCALISATION = {"ap": "smooth_l1"}
DEFAULT_LOCALISATION = "giou"


def localisation_recipe(spec) -> str:
    """``'giou'`` (decoded boxes) or ``'smooth_l1'`` (encoded deltas, β = 0.11) for a rank-family cell."""
    return LOCALISATION.get(spec.name, DEFAULT_LOCALISATION)


def fixed_weights(det: Detector) -> dict[str, float]:
    """Localisation weights of a ``fixed``-balancing loss: 1 for boxes and masks, SOLOv2's shipped Dice 3."""
    return {t: (3.0 if (det.name == "solov2" and t == "mask") else 1.0) for t in det.loc_terms}


def _balancing_text(spec, det: Detector) -> str:
    terms = ", ".join(det.loc_terms)
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
    weights = ", ".join(f"{t} {w:g}" for t, w in fixed_weights(det).items())
    return f"fixed: {weights}; plain mean over positives"


def _loc_text(spec, det: Detector) -> str:
    if det.name == "solov2":
        return "Dice loss of each positive's mask"
    if localisation_recipe(spec) == "smooth_l1":
        return "Smooth L1 (β = 0.11) on encoded deltas (AP Loss's recipe)"
    return "GIoU on decoded boxes"


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
    """The official RS recipe of every detector, key by key with its source (docs/grid.md)."""
    from harness.detectors.recipes import RELEASES, RS_RECIPES

    out = []
    for name in DETECTOR_NAMES:
        det = DETECTORS[name]
        r = det.rs_recipe
        out.append(f"#### {det.title}: {r.source}\n")
        out.append(f"lr {r.lr:g} at total batch {r.total_batch} ({r.gpus} GPUs x {r.batch_per_gpu}), {r.schedule}, "
                   f"warm-up {r.warmup_iters} iterations from {r.warmup_ratio:g}.\n")
        out.append("| mmdet 3.x key | value | scope | set by | note |")
        out.append("|---|---|---|---|---|")
        for v in RS_RECIPES[name]:
            value = _fmt(v.value).replace("|", "\\|")
            if len(value) > 80:
                value = value[:77] + "..."
            mark = "" if v.apply else " (as mmdet / the head family has it)"
            out.append(f"| `{v.path}` | `{value}` | {v.scope} | {RELEASES[v.release].split(' (')[0]} "
                       f"`{v.file}` | {v.note}{mark} |")
        out.append("")
    return "\n".join(out)
