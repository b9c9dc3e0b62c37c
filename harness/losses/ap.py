r"""AP Loss (Chen et al., CVPR 2019) with interpolated precision, exact and vectorised.

Flattened logits ``s`` and targets ``t`` (0 negative, −1 ignored, > 0 positive) over the whole batch;
``H`` and ``x_ij = s_j − s_i`` as in :mod:`harness.losses.rank_sort` (default δ = 1.0);
``rank⁺(i) = 1 + Σ_{j∈P, j≠i} H(x_ij)``, ``N_FP(i) = Σ_{j∈N} H(x_ij)``, ``rank(i) = rank⁺(i) + N_FP(i)``.

Visit the positives in ascending logit order keeping ``best``, the running maximum of the precision
seen so far (initially 0), i.e. the interpolated precision over lower-ranked positives:

* ``current = rank⁺(i) / rank(i)``;
* if ``best ≤ current``: ``best = current``; every negative ``j``: ``g_j += H(x_ij) / rank(i)``;
* else every negative ``j``: ``g_j += H(x_ij) / rank(i) · (1 − best) / (1 − current)``;
* ``g_i = −(1 − best)``, ``prec(i) = best``.

Value ``1 − mean_i prec(i)``; finally ``g /= |P|`` (identity update, not autograd's derivative).
The running maximum is a ``cummax`` over the positives sorted by logit; tied positives share
``current``, so their order does not matter. No positives: value 0, zero gradient.

Cost: O(N) passes for the negatives and O(P log P) for the positives (see :mod:`harness.losses._ranking`);
no N × P or P × P tensor.
"""

from __future__ import annotations

import torch
from torch import Tensor

from harness.losses._ranking import (
    NegativeIndex,
    PositivePairs,
    check_delta,
    flatten,
    identity_outputs,
    zero_outputs,
)
from harness.losses.registry import ClassificationOutput, LossSpec, register_loss


def ap_loss(logits: Tensor, targets: Tensor, delta: float = 1.0) -> Tensor:
    """AP Loss over the flattened batch; see the module docstring. Returns a 0-d tensor."""
    delta = check_delta(delta, "ap_loss")
    batch = flatten(logits, targets, "ap_loss")
    p = batch.pos_index.numel()
    if p == 0:
        return zero_outputs(logits, 1)[0]

    negatives = NegativeIndex(batch, delta)
    n_fp = negatives.false_positives()
    pairs = PositivePairs(batch.pos_logits, delta)
    others = pairs.above(torch.ones_like(n_fp))[:, 0] - pairs.self_step  # Σ_{j∈P, j≠i} H(x_ij)
    rank = 1.0 + others + n_fp
    current = (1.0 + others) / rank

    order = torch.sort(batch.pos_logits, stable=True).indices
    best = torch.empty_like(current)
    best[order] = torch.cummax(current[order], 0).values
    improved = best == current  # the running best before i was <= current(i)
    scale = torch.where(improved, 1.0, (1.0 - best) / torch.where(improved, 1.0, 1.0 - current))
    neg_coef = negatives.scatter(scale / rank / p)
    pos_grad = -(1.0 - best)
    (loss,) = identity_outputs(logits, batch.pos_index, [1.0 - best.mean()], [(pos_grad / p, ("coef", negatives, neg_coef))])
    return loss


def _classify(logits, targets, loc_errors=None, delta=1.0):
    loss = ap_loss(logits, targets, delta=delta)
    return ClassificationOutput(loss=loss, components={"ap": loss.detach()})


register_loss(
    LossSpec(
        name="ap",
        summary="AP Loss (Chen et al., CVPR 2019), interpolated precision",
        fn=ap_loss,
        classify=_classify,
        targets="binary",
        ranking=True,
        balancing="fixed",
        defaults={"delta": 1.0},
        usage="one call over all images x anchors x classes; positives 1; localisation loss of the recipe",
        module=__name__,
    )
)
