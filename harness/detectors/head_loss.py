"""The bridge between the loss registry and mmdet heads: :class:`HarnessLoss` (an mmdet ``MODELS`` module).

A head of this project builds ``loss_cls=dict(type='HarnessLoss', loss=NAME, ...)`` and from then on
reads only the :class:`~harness.losses.LossSpec`'s attributes through this module:

* ``spec.targets``: :meth:`HarnessLoss.targets` puts 1 (``'binary'``) or the positive's quality
  (``'quality'``, floored by :func:`~harness.losses.quality_targets`) at its class; ignored anchors get −1
  for every class;
* ``spec.ranking``: nothing to do: every head already makes **one** call over all images × anchors ×
  classes of the batch, which is right for ranking losses and equal to the per-level sum for pointwise
  ones (those normalise by the batch's positives);
* ``spec.uses_loc_errors``: the call receives each positive's localisation error (the per-positive
  localisation loss, detached, divided by ``loc_error_scale`` = 2(1 − τ)), and the primary localisation
  term becomes the rank-weighted component ``Σ_{j: s_j ≥ s_i} E_loc(j) / rank(i)`` averaged over positives
  (:func:`~harness.losses.alrp_localisation_loss`, with the ranks the classification returned);
* ``spec.balancing``: how each localisation term (box, mask) is weighed against classification:

  - ``'value'``: each positive's term weighted by its highest class score (detached), normalised by the
    sum of those weights; then λ = classification value / term value (both detached), every iteration;
  - ``'self_balance'``: plain mean (or the rank-weighted component) × a :class:`~harness.losses.SelfBalance`
    weight per term, held here, updated every training iteration and once per epoch by
    :class:`~harness.detectors.hooks.SelfBalanceHook` (saved in checkpoints as the module's extra state);
  - ``'fixed'``: plain mean over positives × the recipe's weight (``loc_weights``); with ``score_weighted``
    (a published recipe that says so: the Bucketed release's AP Loss ATSS / PAA) the mean is weighted by each
    positive's highest class score (detached) and normalised by the weights' sum, as ``'value'`` does.

``options`` reach the loss's classification call (e.g. AP Loss's ``delta``, a per-cell recipe value).

``loss_weight`` multiplies every term of the head (the RS RPN's 0.2). Used from a standard mmdet head
(``forward(cls_score, labels, weight, avg_factor)``), the module converts class-index labels to binary
targets; losses that need localisation errors must be used from a harness head.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Mapping, NamedTuple

import torch
from mmdet.registry import MODELS
from torch import Tensor, nn

from harness.losses import SelfBalance, alrp_localisation_loss, get_loss, quality_targets

_EPS = 1e-12


class LocTerm(NamedTuple):
    """Per-positive localisation losses of one term: ``values[k]`` (carrying the gradient) belongs to the
    positive in row ``rows[k]`` of the head's ``[R, C]`` logits."""

    values: Tensor
    rows: Tensor


@dataclass
class HeadLosses:
    """What :meth:`HarnessLoss.head_losses` returns: the weighted terms and detached values to log."""

    terms: dict[str, Tensor]  # 'cls', 'bbox', 'mask' ... (already weighted)
    logs: dict[str, Tensor] = field(default_factory=dict)

    def as_dict(self, loss_prefix: str = "loss_", log_prefix: str = "") -> dict[str, Tensor]:
        out = {f"{loss_prefix}{k}": v for k, v in self.terms.items()}
        out.update({f"{log_prefix}{k}": v for k, v in self.logs.items()})
        return out


def _per_item(values: Tensor) -> Tensor:
    """Per-positive values from an mmdet loss with ``reduction='none'`` ([P] or [P, k, ...])."""
    return values.reshape(values.shape[0], -1).sum(1) if values.dim() > 1 else values


class _SigmoidClasses:
    """What mmdet's RoI box heads ask of a custom classification loss with ``num_classes`` sigmoid logits
    (no background logit): channels, test-time scores and accuracy."""

    custom_cls_channels = True
    custom_activation = True
    custom_accuracy = True

    def get_cls_channels(self, num_classes: int) -> int:
        return num_classes

    def get_activation(self, cls_score: Tensor) -> Tensor:
        """Sigmoid scores plus a zero background column (mmdet's NMS expects ``num_classes + 1``)."""
        scores = cls_score.sigmoid()
        return torch.cat([scores, scores.new_zeros(scores.shape[0], 1)], dim=1)

    def get_accuracy(self, cls_score: Tensor, labels: Tensor) -> dict:
        from mmdet.models.losses import accuracy

        padded = torch.cat([cls_score, cls_score.new_zeros(cls_score.shape[0], 1)], dim=1)
        return {"acc": accuracy(padded, labels)}


@MODELS.register_module()
class HarnessLoss(_SigmoidClasses, nn.Module):
    """A registered loss of :mod:`harness.losses` as an mmdet classification loss (see the module doc).

    Args:
        loss: registered loss name (``harness losses`` lists them).
        use_sigmoid: must be true (one sigmoid logit per class); accepted because mmdet heads read it.
        loss_weight: multiplies every term the head returns.
        loc_weights: fixed weight per localisation term (``'fixed'`` balancing), default 1.
        sb_initial: initial self-balance weight per term (``'self_balance'``), default 50 for the first.
        loc_error_scale: divides per-positive losses into localisation errors (``uses_loc_errors``).
        log_prefix: prefix of the logged (non-loss) values, e.g. ``'rpn_'``.
        options: overrides of the loss's defaults (e.g. ``{'delta': 0.5}``).
        score_weighted: weight each positive's localisation loss by its highest class score (detached),
            normalised by the weights' sum, whatever the balancing (``'value'`` always does).
    """

    def __init__(
        self,
        loss: str,
        use_sigmoid: bool = True,
        loss_weight: float = 1.0,
        loc_weights: Mapping[str, float] | None = None,
        sb_initial: Mapping[str, float] | None = None,
        loc_error_scale: float = 1.0,
        log_prefix: str = "",
        options: Mapping | None = None,
        score_weighted: bool = False,
    ) -> None:
        super().__init__()
        if not use_sigmoid:
            raise ValueError("HarnessLoss scores classes with sigmoids: use_sigmoid must be True")
        self.spec = get_loss(loss)
        self.loss_name = loss
        self.use_sigmoid = True
        self.loss_weight = float(loss_weight)
        self.loc_weights = dict(loc_weights or {})
        self.sb_initial = dict(sb_initial or {})
        self.loc_error_scale = float(loc_error_scale)
        self.log_prefix = log_prefix
        self.options = dict(options or {})
        self.score_weighted = bool(score_weighted)
        self.self_balance: dict[str, SelfBalance] = {}

    def extra_repr(self) -> str:
        s = self.spec
        return (f"loss={s.name!r}, targets={s.targets}, ranking={s.ranking}, balancing={s.balancing}, "
                f"uses_loc_errors={s.uses_loc_errors}, loss_weight={self.loss_weight}"
                + (", score_weighted=True" if self.score_weighted else "")
                + (f", options={self.options}" if self.options else ""))

    # -- targets ----------------------------------------------------------------------------------------
    def targets(self, labels: Tensor, label_weights: Tensor | None, num_classes: int,
                quality: Tensor | None = None, binary: bool = False) -> Tensor:
        """Dense ``[R, num_classes]`` targets from mmdet's per-row labels (``num_classes`` = background).

        Rows with zero label weight that are not positive are ignored (−1 for every class). Positives get
        1 or, for ``spec.targets == 'quality'``, their ``quality`` (one value per positive row, in row order);
        ``binary=True`` puts 1 whatever the spec says (no qualities known).
        """
        rows = labels.shape[0]
        out = torch.zeros(rows, num_classes, device=labels.device, dtype=torch.float32)
        pos = (labels >= 0) & (labels < num_classes)
        if label_weights is not None:
            out[(label_weights <= 0) & ~pos] = -1.0
        pos_idx = pos.nonzero(as_tuple=True)[0]
        if pos_idx.numel():
            if self.spec.targets == "quality" and not binary:
                if quality is None or quality.numel() != pos_idx.numel():
                    raise ValueError(f"loss {self.spec.name!r} needs one quality per positive "
                                     f"({pos_idx.numel()}), got {None if quality is None else quality.numel()}")
                value = quality_targets(quality.reshape(-1).float())
            else:
                value = torch.ones(pos_idx.numel(), device=labels.device)
            out[pos_idx, labels[pos_idx]] = value
        return out

    # -- the head's losses --------------------------------------------------------------------------------
    def head_losses(self, logits: Tensor, targets: Tensor, primary: LocTerm | None = None,
                    extras: Mapping[str, LocTerm] | None = None, primary_name: str = "bbox") -> HeadLosses:
        """Classification over every logit of the batch, then each localisation term weighted as the
        loss's ``balancing`` says. ``logits``/``targets``: ``[R, C]``; ``primary``: the term whose
        per-positive values cover every positive row (they become the localisation errors of losses
        that use them); ``extras``: further terms on subsets of positives (masks)."""
        spec = self.spec
        logits2d = logits.reshape(targets.shape[0], -1)
        pos_rows = (targets > 0).any(1).nonzero(as_tuple=True)[0]
        loc_errors = values = None
        if primary is not None:
            order = torch.argsort(primary.rows)
            values = _per_item(primary.values)[order]
            if primary.rows.numel() != pos_rows.numel() or not torch.equal(primary.rows[order], pos_rows):
                raise ValueError(f"{primary_name}: per-positive values must cover the {pos_rows.numel()} positive "
                                 f"rows exactly once, got {primary.rows.numel()} values")
            if spec.uses_loc_errors:
                loc_errors = values.detach() / self.loc_error_scale
        elif spec.uses_loc_errors:
            raise ValueError(f"loss {spec.name!r} needs per-positive localisation errors")
        out = spec.classification(logits2d, targets, loc_errors=loc_errors, **self.options)
        cls_value = out.loss.detach()
        scores = None
        if spec.balancing == "value" or self.score_weighted:
            scores = logits2d.detach().sigmoid().max(1).values
        terms = {"cls": out.loss}
        logs = {k: v.detach() for k, v in out.components.items()}
        measured: dict[str, Tensor] = {}
        if primary is not None:
            if spec.uses_loc_errors and out.ranks is not None:
                term = alrp_localisation_loss(logits2d, targets, values / self.loc_error_scale, out.ranks)
            else:
                term = self._mean(values, None if scores is None else scores[pos_rows])
            measured[primary_name] = term
        for name, extra in (extras or {}).items():
            measured[name] = self._mean(_per_item(extra.values),
                                        None if scores is None else scores[extra.rows])
        for name, term in measured.items():
            weight = self._weight(name, cls_value, term, first=(name == primary_name))
            terms[name] = term * weight
            logs[f"w_{name}"] = torch.as_tensor(float(weight), device=logits.device)
        if self.loss_weight != 1.0:
            terms = {k: v * self.loss_weight for k, v in terms.items()}
        logs = {f"{self.log_prefix}{k}": v for k, v in logs.items()}
        return HeadLosses(terms, logs)

    def _mean(self, values: Tensor, scores: Tensor | None) -> Tensor:
        if values.numel() == 0:
            return values.sum() * 0.0
        if scores is None:
            return values.mean()
        w = scores.to(values.dtype)
        return (values * w).sum() / w.sum().clamp(min=_EPS)

    def _weight(self, name: str, cls_value: Tensor, term: Tensor, first: bool) -> float | Tensor:
        balancing = self.spec.balancing
        value = term.detach()
        if balancing == "value":
            return cls_value / value if float(value) > _EPS else value * 0.0
        if balancing == "self_balance":
            sb = self.self_balance.get(name)
            if sb is None:
                initial = self.sb_initial.get(name, 50.0 if first else self.loc_weights.get(name, 1.0))
                sb = self.self_balance[name] = SelfBalance(initial)
            if self.training:
                sb.update(float(cls_value), float(value))
            return sb.weight
        return self.loc_weights.get(name, 1.0)

    def epoch_end(self) -> dict[str, float]:
        """Close the epoch of every self-balance weight; returns the new weights."""
        return {name: sb.epoch_end() for name, sb in self.self_balance.items()}

    def get_extra_state(self) -> Tensor:
        """The self-balance weights, kept in checkpoints so a resumed run goes on with them. Stored as the
        bytes of their JSON in a uint8 tensor: mmengine broadcasts every state-dict entry from rank 0 at
        the start of distributed training, which takes tensors only (JSON floats round-trip exactly)."""
        state = {"self_balance": {k: sb.state_dict() for k, sb in self.self_balance.items()}}
        return torch.tensor(list(json.dumps(state, sort_keys=True).encode()), dtype=torch.uint8)

    def set_extra_state(self, state) -> None:
        if isinstance(state, Tensor):
            state = json.loads(bytes(state.cpu().tolist()).decode())
        for name, sb_state in (state or {}).get("self_balance", {}).items():  # (older checkpoints: a dict)
            sb = self.self_balance.setdefault(name, SelfBalance())
            sb.load_state_dict(sb_state)

    # -- use from a standard mmdet head ---------------------------------------------------------------
    def forward(self, cls_score: Tensor, label: Tensor, weight: Tensor | None = None, avg_factor=None,
                reduction_override=None, **kwargs) -> Tensor:
        """mmdet's loss signature: class-index ``label`` (``num_classes`` = background), per-row ``weight``
        (0 = ignored). The registry loss normalises itself; ``avg_factor`` is not used."""
        if self.spec.uses_loc_errors:
            raise TypeError(f"loss {self.spec.name!r} needs localisation errors: use it from a harness head")
        logits = cls_score.reshape(-1, cls_score.shape[-1])
        labels = label.reshape(-1)
        w = None if weight is None else weight.reshape(labels.shape[0], -1)[:, 0]
        targets = self.targets(labels, w, logits.shape[1], binary=True)
        out = self.spec.classification(logits, targets, **self.options)
        return self.loss_weight * out.loss


def _named(loss_name: str, class_name: str):
    def __init__(self, **kwargs):
        kwargs.pop("loss", None)
        HarnessLoss.__init__(self, loss=loss_name, **kwargs)

    cls = type(class_name, (HarnessLoss,), {"__init__": __init__, "__doc__": f"``HarnessLoss(loss={loss_name!r})``."})
    MODELS.register_module(name=class_name, module=cls, force=True)
    return cls


# Named aliases, so that any mmdet config can say type='RankSortLoss' (etc.) like a built-in loss.
RankSortLoss = _named("rs", "RankSortLoss")
APLoss = _named("ap", "APLoss")
aLRPLoss = _named("alrp", "aLRPLoss")  # noqa: N816 (the paper's spelling)


@MODELS.register_module()
class SigmoidClassesLoss(_SigmoidClasses, nn.Module):
    """Wraps an mmdet sigmoid loss (e.g. ``FocalLoss``) for mmdet's RoI box heads: ``num_classes`` logits
    without a background logit, trained with sigmoids and scored with sigmoids at test time (mmdet's
    ``BBoxHead`` would otherwise keep a background logit and take a softmax at test time)."""

    def __init__(self, loss: dict) -> None:
        super().__init__()
        if not loss.get("use_sigmoid", False):
            raise ValueError("SigmoidClassesLoss wraps sigmoid losses (use_sigmoid=True)")
        self.loss = MODELS.build(loss)

    def forward(self, cls_score, label, weight=None, avg_factor=None, reduction_override=None, **kwargs):
        return self.loss(cls_score, label, weight, avg_factor=avg_factor, reduction_override=reduction_override)
