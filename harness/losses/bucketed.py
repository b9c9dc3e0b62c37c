r"""Bucketed Rank & Sort Loss and Bucketed AP Loss (Yavuz et al., ECCV 2024), as comparators.

Written from ``../shared/reference/bucketed-losses.md`` (the official code's behaviour), vectorised.
Logits ``s`` and targets ``t`` are flattened over the whole batch as for the exact losses: 0 negative,
−1 ignored, ``> 0`` positive (its quality ``y`` for BRS, 1 for BAP); ``H`` and δ as in
:mod:`harness.losses.rank_sort`.

Bucketing. The cutoff is ``τ = min_{i∈P} s_i − δ``; negatives below it are dropped (zero update). In the
batch sorted by logit, descending, every maximal run of consecutive negatives between two positives
(above the top positive, between neighbours, from the lowest positive down to τ) is one bucket ``b``,
represented by its size ``n_b`` and the *mean* ``m_b`` of its logits; the bucket boundaries are the
positives' own logits. So negative ``j`` falls in the bucket numbered ``#{i ∈ P: s_i > s_j}``: one
``searchsorted`` among the sorted positives, no sort of the batch. Ties: a negative tied with a positive
is put *above* it (the official code's unstable sort puts it either way); then every bucket lies wholly
at or above, or wholly below, every positive, and at δ = 0 both losses equal their exact versions,
ties included. (The mean is clamped into its bucket's logit range so rounding cannot move it across a
positive.) For every positive ``i``:

.. math::

    FP_i = \sum_b n_b H(m_b − s_i),\quad R^+_i = \sum_{j∈P} H(s_j − s_i)\ (\text{self } H(0) \text{ included}),
    \quad ℓ_R(i) = FP_i / (R^+_i + FP_i)

* **BRS** returns ``ranking = mean_i ℓ_R(i)`` and ``sorting = mean_i (ℓ_S(i) − ℓ*_S(i))``, the sorting
  error, its update and ``R⁺`` being *exactly* RS's (no negative is involved;
  :func:`harness.losses.rank_sort.sorting_terms`).
* **BAP** returns ``mean_i ℓ_R(i)`` with binary targets: the bucketed *uninterpolated* AP error (rank
  counts the self term ½), not a bucketed :func:`~harness.losses.ap.ap_loss` (which uses
  ``1 + Σ_{j≠i} H`` and interpolated precision). Its exact counterpart is RS's ranking component with
  binary targets; at δ = 0 they are equal.

Update (identity, divided by |P|): positive ``i`` gets ``−ℓ_R(i)`` (plus, for BRS, RS's sorting update);
*every member* of bucket ``b`` gets ``Σ_i ℓ_R(i) H(m_b − s_i) / FP_i``: the bucket's total split
equally among its members, not in proportion to each member's own H. So ``Σ_N g = ranking`` and
``Σ_P g = −ranking``. ``FP_i`` and the sorting denominators are tested against RS's ``1e-10`` (the
official code tests them for exact zero; the update this leaves out is below 1e-10 per positive, and the
test is robust to the rounding of the prefix sums). Each output carries its own update (like
:func:`~harness.losses.rank_sort.rank_sort_loss`; the official code scales everything by the ranking
output's incoming gradient). No positives: zeros with a zero gradient.

Exact vs approximate. The sorting part is always exact. At δ = 0 (or whenever every bucket lies on one
linear piece of H relative to every positive) the values and the positives' updates are exact; the
negatives' updates are then the bucket averages of the exact ones. Otherwise a bucket straddling
``s_i ± δ`` gives a Jensen gap (buckets above a positive overstate ``FP_i``, buckets below understate it),
growing with the logit spread of the buckets (few positives, large δ).

Cost: one ``searchsorted`` of the relevant negatives among the P sorted positives (O(N log P)), two
``bincount``s and a gather; the bucket-versus-positive sums ``FP_i`` and the bucket updates are the
exact O(P log P) step sums of :func:`harness.losses._ranking.step_sums` (the official code uses a full
O(N log N) sort, a Python loop over buckets and dense B × P and P × P matrices).
"""

from __future__ import annotations

import torch
from torch import Tensor

from harness.losses._ranking import (
    COMPUTE_DTYPE,
    PositivePairs,
    Split,
    check_delta,
    identity_outputs,
    split,
    step_sums,
    validate,
    zero_outputs,
)
from harness.losses.rank_sort import EPS, RankSortOutput, sorting_terms
from harness.losses.registry import ClassificationOutput, LossSpec, register_loss


def negative_buckets(sp: Split) -> tuple[Tensor, Tensor, Tensor]:
    """``(bucket, size, mean)``: each relevant negative's bucket (``#{i ∈ P: s_i > s_j}``, in
    ``[0, P]``), and every bucket's size and mean logit (float64, ``[P + 1]``; empty buckets size 0)."""
    pos_sorted = torch.sort(sp.pos_logits).values
    p = pos_sorted.numel()
    bucket = p - torch.searchsorted(pos_sorted, sp.neg_logits, right=True)
    size = torch.bincount(bucket, minlength=p + 1).to(COMPUTE_DTYPE)
    total = torch.bincount(bucket, weights=sp.neg_logits, minlength=p + 1).to(COMPUTE_DTYPE)
    mean = total / size.clamp(min=1.0)
    # bucket b holds logits in [b-th largest positive, (b−1)-th largest positive): clamp away rounding.
    desc = pos_sorted.flip(0)
    inf = desc.new_full((1,), float("inf"))
    lower = torch.cat([desc, -inf])
    upper = torch.cat([inf, torch.nextafter(desc, -inf.expand(p))])
    return bucket, size, torch.minimum(torch.maximum(mean, lower), upper)


def _bucketed_ranking(sp: Split, delta: float, rank_pos: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(ℓ_R(i), positives' update, negatives' update)``, the updates before / |P|."""
    bucket, size, mean = negative_buckets(sp)
    n_fp = step_sums(mean, size, sp.pos_logits, delta, upper=True)  # Σ_b n_b H(m_b − s_i)
    rank_err = n_fp / (rank_pos + n_fp)
    has_fp = n_fp > EPS
    weights = torch.where(has_fp, rank_err / torch.where(has_fp, n_fp, 1.0), 0.0)
    per_bucket = step_sums(sp.pos_logits, weights, mean, delta, upper=False)  # Σ_i w_i H(m_b − s_i)
    return rank_err, -torch.where(has_fp, rank_err, 0.0), per_bucket.index_select(0, bucket)


def bucketed_rank_sort_loss(logits: Tensor, targets: Tensor, delta: float = 0.5) -> RankSortOutput:
    """Bucketed RS Loss (BRS) over the flattened batch; see the module docstring.

    Same arguments and outputs as :func:`~harness.losses.rank_sort.rank_sort_loss`: ``(ranking,
    sorting)`` with ``.total``; positives carry their quality in (0, 1].
    """
    validate(logits, targets, "bucketed_rank_sort_loss")
    delta = check_delta(delta, "bucketed_rank_sort_loss")
    sp = split(logits, targets, delta)
    p = sp.pos_index.numel()
    if p == 0:
        return RankSortOutput(*zero_outputs(logits, 2))
    pairs = PositivePairs(sp.pos_logits, delta, quality=sp.pos_targets)
    rank_pos, sort_err, sort_grad = sorting_terms(pairs, sp.pos_targets)
    rank_err, pos_grad, neg_grad = _bucketed_ranking(sp, delta, rank_pos)
    ranking, sorting = identity_outputs(
        logits,
        sp.pos_index,
        [rank_err.mean(), sort_err.mean()],
        [(pos_grad / p, ("compact", sp.neg_index, neg_grad / p)), (sort_grad / p, None)],
    )
    return RankSortOutput(ranking, sorting)


def bucketed_ap_loss(logits: Tensor, targets: Tensor, delta: float = 1.0) -> Tensor:
    """Bucketed AP Loss (BAP) over the flattened batch: ``mean_i FP_i / (R⁺_i + FP_i)``; a 0-d tensor.

    Targets: 0 negative, −1 ignored, > 0 positive (its value is not used).
    """
    validate(logits, targets, "bucketed_ap_loss")
    delta = check_delta(delta, "bucketed_ap_loss")
    sp = split(logits, targets, delta)
    p = sp.pos_index.numel()
    if p == 0:
        return zero_outputs(logits, 1)[0]
    pairs = PositivePairs(sp.pos_logits, delta)
    rank_pos = pairs.above(torch.ones_like(sp.pos_logits))[:, 0]
    rank_err, pos_grad, neg_grad = _bucketed_ranking(sp, delta, rank_pos)
    (loss,) = identity_outputs(
        logits, sp.pos_index, [rank_err.mean()], [(pos_grad / p, ("compact", sp.neg_index, neg_grad / p))]
    )
    return loss


def _classify_brs(logits, targets, loc_errors=None, delta=0.5):
    out = bucketed_rank_sort_loss(logits, targets, delta=delta)
    return ClassificationOutput(
        loss=out.total, components={"rank": out.ranking.detach(), "sort": out.sorting.detach()}
    )


def _classify_bap(logits, targets, loc_errors=None, delta=1.0):
    loss = bucketed_ap_loss(logits, targets, delta=delta)
    return ClassificationOutput(loss=loss, components={"bap": loss.detach()})


register_loss(
    LossSpec(
        name="bucketed_rs",
        summary="Bucketed RS Loss (Yavuz et al., ECCV 2024), a comparator of exact RS",
        fn=bucketed_rank_sort_loss,
        classify=_classify_brs,
        targets="quality",
        ranking=True,
        balancing="value",
        defaults={"delta": 0.5},
        usage=(
            "as rs: one call over all images x anchors x classes; positives carry quality_targets(IoU of "
            "the detached decoded box); localisation terms weighted by value"
        ),
        module=__name__,
    )
)
register_loss(
    LossSpec(
        name="bucketed_ap",
        summary="Bucketed AP Loss (Yavuz et al., ECCV 2024; uninterpolated), a comparator of AP Loss",
        fn=bucketed_ap_loss,
        classify=_classify_bap,
        targets="binary",
        ranking=True,
        balancing="fixed",
        defaults={"delta": 1.0},
        usage="as ap: one call over all images x anchors x classes; positives 1; localisation loss of the recipe",
        module=__name__,
    )
)
