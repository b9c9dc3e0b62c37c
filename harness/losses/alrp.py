r"""aLRP Loss (Oksuz et al., NeurIPS 2020), exact and vectorised: classification and localisation
components and the self-balance (SB) weight.

Flattened logits ``s`` and targets ``t`` (0 negative, −1 ignored, > 0 positive) over the whole batch;
``H`` and ``x_ij = s_j − s_i`` as in :mod:`harness.losses.rank_sort` (default δ = 1.0). For every
positive ``i``, with ``E_loc(j)`` the localisation error of positive ``j`` (detached here):

.. math::

    \mathrm{rank}^+(i) = 1 + \sum_{j∈P, j≠i} H(x_{ij}),\quad N_{FP}(i) = \sum_{j∈N} H(x_{ij}),\quad
    \mathrm{rank}(i) = \mathrm{rank}^+(i) + N_{FP}(i),\quad \mathrm{prec}(i) = \mathrm{rank}^+(i)/\mathrm{rank}(i)

    L_{cls} = 1 − \mathrm{mean}_i\, \mathrm{prec}(i)

Update (identity), only where ``N_FP(i) > 1e-5``:
``g_i = −(Σ_{j∈P, j≠i} H(x_ij) E_loc(j) + N_FP(i)) / rank(i)``; every negative ``j``:
``g_j += H(x_ij) (−g_i) / N_FP(i)``; finally ``g /= |P|``.

Localisation component: ``L_loc = mean_i Σ_{j∈P: s_j ≥ s_i} E_loc(j) / rank(i)`` with ``rank(i)``
detached; the gradient flows through ``E_loc`` only. Ties in logits are included on both sides
(``s_j ≥ s_i``), which keeps the value independent of the order of tied positives; the reference's
cumulative sum over a sorted order agrees whenever the logits are distinct.

``E_loc`` is the positive's GIoU loss (in [0, 2]) divided by ``2(1 − τ)``: τ = 0.5 (divide by 1) for
one-stage heads, τ = 0.7 for the RPN. Total: ``L_cls + SB · L_loc`` with :class:`SelfBalance`.
No positives: values 0 with zero gradients.

Cost: O(N) passes for the negatives and O(P log P) for the positives (see :mod:`harness.losses._ranking`);
no N × P or P × P tensor.
"""

from __future__ import annotations

import torch
from torch import Tensor

from harness.losses._ranking import (
    COMPUTE_DTYPE,
    NegativeIndex,
    PositivePairs,
    check_delta,
    flatten,
    identity_outputs,
    validate,
    zero_outputs,
)
from harness.losses.registry import ClassificationOutput, LossSpec, register_loss

EPS = 1e-5


def _check_loc_errors(loc_errors: Tensor, num_pos: int, name: str) -> None:
    if not isinstance(loc_errors, Tensor) or loc_errors.dim() != 1 or loc_errors.numel() != num_pos:
        shape = tuple(loc_errors.shape) if isinstance(loc_errors, Tensor) else type(loc_errors).__name__
        raise ValueError(f"{name}: loc_errors must be a 1-D tensor with one entry per positive ({num_pos}), got {shape}")
    if not bool(torch.isfinite(loc_errors.detach()).all()):
        raise ValueError(f"{name}: loc_errors contain NaN or Inf")


def alrp_classification_loss(
    logits: Tensor, targets: Tensor, loc_errors: Tensor, delta: float = 1.0
) -> tuple[Tensor, Tensor]:
    """aLRP classification component and the positives' smooth ranks.

    Args:
        logits: classification logits of any shape.
        targets: same shape; 0 negative, −1 ignored, > 0 positive.
        loc_errors: ``[P]`` localisation error of each positive, in flattened order (used detached; any
            device: it is moved to the logits').
        delta: δ of the smoothed step (1.0 in the paper).
    Returns:
        ``(cls_loss, ranks)``: the 0-d loss whose backward is the aLRP update, and the detached
        ``rank(i)`` of each positive in flattened order.
    """
    delta = check_delta(delta, "alrp_classification_loss")
    batch = flatten(logits, targets, "alrp_classification_loss")
    p = batch.pos_index.numel()
    _check_loc_errors(loc_errors, p, "alrp_classification_loss")
    out_dtype = torch.promote_types(logits.dtype, torch.float32)
    if p == 0:
        (loss,) = zero_outputs(logits, 1)
        return loss, torch.zeros(0, dtype=out_dtype, device=logits.device)

    e_loc = loc_errors.detach().to(device=logits.device, dtype=COMPUTE_DTYPE)
    negatives = NegativeIndex(batch, delta)
    n_fp = negatives.false_positives()
    pairs = PositivePairs(batch.pos_logits, delta)
    sums = pairs.above(torch.stack([torch.ones_like(e_loc), e_loc], 1))
    others = sums[:, 0] - pairs.self_step  # Σ_{j≠i} H(x_ij)
    loc_sum = sums[:, 1] - pairs.self_step * e_loc  # Σ_{j≠i} H(x_ij) E_loc(j)
    rank_pos = 1.0 + others
    rank = rank_pos + n_fp
    value = 1.0 - (rank_pos / rank).mean()

    has_fp = n_fp > EPS
    pos_grad = torch.where(has_fp, -(loc_sum + n_fp) / rank, 0.0)
    weights = torch.where(has_fp, -pos_grad / torch.where(has_fp, n_fp, 1.0), 0.0)
    neg_coef = negatives.scatter(weights / p)
    (loss,) = identity_outputs(logits, batch.pos_index, [value], [(pos_grad / p, ("coef", negatives, neg_coef))])
    return loss, rank.to(out_dtype)


def alrp_localisation_loss(logits: Tensor, targets: Tensor, loc_errors: Tensor, ranks: Tensor) -> Tensor:
    """aLRP localisation component ``mean_i Σ_{j: s_j ≥ s_i} E_loc(j) / rank(i)``.

    ``loc_errors`` (``[P]``, flattened order of positives) carries the gradient, and the result lives on
    its device; ``ranks`` are the ranks returned by :func:`alrp_classification_loss` (detached).
    """
    validate(logits, targets, "alrp_localisation_loss")
    pos_logits = logits.detach().reshape(-1)[targets.detach().reshape(-1) > 0].to(COMPUTE_DTYPE)
    p = pos_logits.numel()
    _check_loc_errors(loc_errors, p, "alrp_localisation_loss")
    if ranks.shape != (p,):
        raise ValueError(f"alrp_localisation_loss: ranks must have shape ({p},), got {tuple(ranks.shape)}")
    if p == 0:
        return loc_errors.sum() * 0.0
    s_sorted, order = torch.sort(pos_logits)
    inv_rank = 1.0 / ranks.detach().to(device=pos_logits.device, dtype=COMPUTE_DTYPE)
    cum = inv_rank[order].cumsum(0)
    # coefficient of E_loc(j): Σ_{i: s_i ≤ s_j} 1 / rank(i), ties included.
    last_le = torch.searchsorted(s_sorted, pos_logits, right=True) - 1
    coef = cum[last_le] / p
    out_dtype = torch.promote_types(loc_errors.dtype, torch.float32)
    return (loc_errors.to(out_dtype) * coef.to(device=loc_errors.device, dtype=out_dtype)).sum()


class SelfBalance:
    """aLRP's self-balance weight SB: starts at 50; once per epoch becomes
    ``(mean L_loc + mean L_cls) / mean L_loc`` over that epoch's iterations.

    Heads hold one instance, call :meth:`update` every iteration with the detached component values and
    :meth:`epoch_end` once per epoch (an mmengine hook does it). ``state_dict``/``load_state_dict`` let a
    resumed run continue with the same weight.
    """

    def __init__(self, initial: float = 50.0):
        self.weight = float(initial)
        self._cls_sum = 0.0
        self._loc_sum = 0.0
        self._count = 0

    def update(self, cls_value: float | Tensor, loc_value: float | Tensor) -> None:
        self._cls_sum += float(cls_value)
        self._loc_sum += float(loc_value)
        self._count += 1

    def epoch_end(self) -> float:
        if self._count and self._loc_sum > 0:
            self.weight = (self._loc_sum + self._cls_sum) / self._loc_sum
        self._cls_sum = self._loc_sum = 0.0
        self._count = 0
        return self.weight

    def state_dict(self) -> dict:
        return {"weight": self.weight, "cls_sum": self._cls_sum, "loc_sum": self._loc_sum, "count": self._count}

    def load_state_dict(self, state: dict) -> None:
        self.weight = float(state["weight"])
        self._cls_sum = float(state["cls_sum"])
        self._loc_sum = float(state["loc_sum"])
        self._count = int(state["count"])


def _classify(logits, targets, loc_errors=None, delta=1.0):
    loss, ranks = alrp_classification_loss(logits, targets, loc_errors, delta=delta)
    return ClassificationOutput(loss=loss, components={"alrp_cls": loss.detach()}, ranks=ranks)


register_loss(
    LossSpec(
        name="alrp",
        summary="aLRP Loss (Oksuz et al., NeurIPS 2020) with self-balance",
        fn=alrp_classification_loss,
        classify=_classify,
        targets="binary",
        ranking=True,
        balancing="self_balance",
        uses_loc_errors=True,
        defaults={"delta": 1.0},
        usage=(
            "one call over all images x anchors x classes with each positive's GIoU loss / 2(1-τ) as "
            "loc_errors; the head adds SB · alrp_localisation_loss(..., ranks) and holds a SelfBalance"
        ),
        module=__name__,
    )
)
