r"""Rank & Sort Loss (Oksuz et al., ICCV 2021), exact and vectorised.

All logits of a batch (images × anchors × classes, one sigmoid logit per class) are flattened into one
vector ``s`` with targets ``t``: 0 negative, −1 ignored, ``y ∈ (0, 1]`` for a positive, its localisation
quality (the IoU of the detached decoded box with its ground truth). With
``H(x) = clamp(x / (2δ) + 0.5, 0, 1)`` (``[x ≥ 0]`` at δ = 0) and ``x_ij = s_j − s_i``, for every
positive ``i`` (sums over positives include ``j = i``):

.. math::

    \mathrm{rank}^+(i) = \sum_{j∈P} H(x_{ij}),\quad N_{FP}(i) = \sum_{j∈N} H(x_{ij}),\quad
    \mathrm{rank}(i) = \mathrm{rank}^+(i) + N_{FP}(i)

    ℓ_R(i) = N_{FP}(i) / \mathrm{rank}(i)

    ℓ_S(i) = \frac{\sum_{j∈P} H(x_{ij})(1 − y_j)}{\mathrm{rank}^+(i)},\quad
    ℓ^*_S(i) = \frac{\sum_{j∈P} H(x_{ij})[y_j ≥ y_i](1 − y_j)}{\sum_{j∈P} H(x_{ij})[y_j ≥ y_i]}

Returned: ``ranking = mean_i ℓ_R(i)`` and ``sorting = mean_i (ℓ_S(i) − ℓ*_S(i))``.

The gradient handed back is the error-driven ("identity") update, not the autograd derivative:

* ranking, where ``N_FP(i) > 1e-10``: ``g_i −= ℓ_R(i)``; every negative ``j``:
  ``g_j += ℓ_R(i) H(x_ij) / N_FP(i)``;
* sorting, with ``M_i(k) = H(x_ik)[y_k < y_i]``, where ``Σ_k M_i(k) > 1e-10``:
  ``g_i −= ℓ_S(i) − ℓ*_S(i)``; every positive ``k``: ``g_k += (ℓ_S(i) − ℓ*_S(i)) M_i(k) / Σ_m M_i(m)``;
* finally ``g /= |P|``, and the incoming gradient scales it.

API choice (the reference's trap removed): the ranking update is attached to ``ranking`` and the sorting
update to ``sorting``. Backpropagating ``ranking + sorting`` (``.total``) gives exactly the update above;
``sorting.backward()`` alone gives the sorting update (in the reference it gives nothing), and any other
weighting weighs the two updates accordingly.

Quality 0: a positive whose quality is exactly 0 would read as a negative (``t > 0`` selects positives).
Heads build targets with :func:`quality_targets`, which clamps qualities to ``[QUALITY_FLOOR, 1]``: such a
positive stays a positive that ranks above every better-localised positive only at a sorting cost of
``1 − 1e-6`` instead of 1. No positives: both values 0 with a zero gradient.

Cost: O(N) passes for the negatives and O(P log P) for the positive-versus-positive terms, the
restriction ``y_j ≥ y_i`` included (see :mod:`harness.losses._ranking`); no N × P or P × P tensor.
Sums in float64 whatever the logits' dtype.
"""

from __future__ import annotations

from typing import NamedTuple

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

EPS = 1e-10
QUALITY_FLOOR = 1e-6


class RankSortOutput(NamedTuple):
    """``(ranking, sorting)``; ``.total`` is the sum whose backward is RS Loss's full update."""

    ranking: Tensor
    sorting: Tensor

    @property
    def total(self) -> Tensor:
        return self.ranking + self.sorting


def quality_targets(quality: Tensor, floor: float = QUALITY_FLOOR) -> Tensor:
    """Positive targets from localisation qualities: detached and clamped to ``[floor, 1]``."""
    return quality.detach().clamp(min=floor, max=1.0)


def sorting_terms(pairs: PositivePairs, y: Tensor, eps: float = EPS) -> tuple[Tensor, Tensor, Tensor]:
    """``(rank⁺(i), ℓ_S(i) − ℓ*_S(i), sorting update before / |P|)`` for every positive (float64).

    ``pairs`` is built over the positives' logits with their qualities ``y``; no negative is involved,
    so Bucketed RS shares this part exactly.
    """
    ones_and_1my = torch.stack([torch.ones_like(y), 1.0 - y], 1)  # [P, 2]
    all_pos = pairs.above(ones_and_1my)  # [rank⁺(i), Σ_j H(x_ij)(1 − y_j)]
    at_least = pairs.above_at_least(ones_and_1my)  # the same over y_j ≥ y_i
    rank_pos = all_pos[:, 0]
    sort_err = all_pos[:, 1] / rank_pos - at_least[:, 1] / at_least[:, 0]
    # Σ_k M_i(k) = Σ_k H(x_ik)[y_k < y_i]: what the restriction to y_j ≥ y_i leaves out
    m_sum = (rank_pos - at_least[:, 0]).clamp_(min=0.0)
    active = m_sum > eps
    coef = torch.where(active, sort_err / torch.where(active, m_sum, 1.0), 0.0)
    # positive k receives Σ_{i: y_i > y_k} coef_i H(s_k − s_i)
    sort_grad = pairs.below_better(coef)[:, 0] - torch.where(active, sort_err, 0.0)
    return rank_pos, sort_err, sort_grad


def rank_sort_loss(logits: Tensor, targets: Tensor, delta: float = 0.5) -> RankSortOutput:
    """Rank & Sort Loss over the flattened batch; see the module docstring for the definition.

    Args:
        logits: classification logits of any shape (float16/bfloat16/float32/float64).
        targets: same shape; 0 negative, −1 ignored, ``(0, 1]`` positive with its quality.
        delta: half-width δ ≥ 0 of the smoothed step (0.5 in the paper).
    Returns:
        :class:`RankSortOutput` ``(ranking, sorting)``, 0-d tensors in float32 or better.
    """
    delta = check_delta(delta, "rank_sort_loss")
    batch = flatten(logits, targets, "rank_sort_loss")
    p = batch.pos_index.numel()
    if p == 0:
        return RankSortOutput(*zero_outputs(logits, 2))

    negatives = NegativeIndex(batch, delta)
    n_fp = negatives.false_positives()
    pairs = PositivePairs(batch.pos_logits, delta, quality=batch.pos_targets)
    rank_pos, sort_err, sort_grad = sorting_terms(pairs, batch.pos_targets)
    rank = rank_pos + n_fp
    rank_err = n_fp / rank
    has_fp = n_fp > EPS
    rank_grad_pos = -torch.where(has_fp, rank_err, 0.0)
    rank_coef = negatives.scatter(torch.where(has_fp, rank_err / torch.where(has_fp, n_fp, 1.0), 0.0) / p)

    ranking, sorting = identity_outputs(
        logits,
        batch.pos_index,
        [rank_err.mean(), sort_err.mean()],
        [(rank_grad_pos / p, ("coef", negatives, rank_coef)), (sort_grad / p, None)],
    )
    return RankSortOutput(ranking, sorting)


def _classify(logits, targets, loc_errors=None, delta=0.5):
    out = rank_sort_loss(logits, targets, delta=delta)
    return ClassificationOutput(
        loss=out.total, components={"rank": out.ranking.detach(), "sort": out.sorting.detach()}
    )


register_loss(
    LossSpec(
        name="rs",
        summary="Rank & Sort Loss (Oksuz et al., ICCV 2021)",
        fn=rank_sort_loss,
        classify=_classify,
        targets="quality",
        ranking=True,
        balancing="value",
        defaults={"delta": 0.5},
        usage=(
            "one call over all images x anchors x classes; positives carry quality_targets(IoU of the "
            "detached decoded box); localisation terms weighted by value (λ = RS value / loc value)"
        ),
        module=__name__,
    )
)
