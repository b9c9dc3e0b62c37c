"""The published per-positive RS Loss loop, kept only as the timing baseline of ``make bench-losses``.

It follows the reference implementation's algorithm: for each positive, select the relevant negatives
(``s_j ≥ s_i − δ``) with a mask over the whole batch, compute its errors and add its update, in the
logits' dtype. O(P · (N + P)) work and P rounds of small kernels. ``tests/test_bench.py`` checks that it
computes the same update as :func:`harness.losses.rank_sort_loss`, so the speed comparison is fair.
"""

from __future__ import annotations

import torch
from torch import Tensor


def plain_rank_sort(logits: Tensor, targets: Tensor, delta: float = 0.5) -> tuple[Tensor, Tensor, Tensor]:
    """Returns ``(ranking, sorting, grad)`` with ``grad`` the update for the logits (already / |P|)."""
    s = logits.detach().reshape(-1)
    t = targets.reshape(-1)
    grad = torch.zeros_like(s)
    fg_mask = t > 0
    fg_logits = s[fg_mask]
    fg_targets = t[fg_mask]
    fg_num = fg_logits.numel()
    if fg_num == 0:
        zero = s.new_zeros(())
        return zero, zero, grad
    fg_grad = torch.zeros_like(fg_logits)
    ranking_error = torch.zeros_like(fg_logits)
    sorting_error = torch.zeros_like(fg_logits)
    threshold = fg_logits.min() - delta
    relevant = (t == 0) & (s >= threshold)
    bg_logits_all = s[relevant]
    bg_grad = torch.zeros_like(bg_logits_all)
    for ii in range(fg_num):
        fg_rel = torch.clamp((fg_logits - fg_logits[ii]) / (2 * delta) + 0.5, 0, 1)
        bg_mask = bg_logits_all >= fg_logits[ii] - delta
        bg_rel = torch.clamp((bg_logits_all[bg_mask] - fg_logits[ii]) / (2 * delta) + 0.5, 0, 1)
        rank_pos = fg_rel.sum()
        fp_num = bg_rel.sum()
        rank = rank_pos + fp_num
        ranking_error[ii] = fp_num / rank
        current = (fg_rel * (1 - fg_targets)).sum() / rank_pos
        at_least = fg_targets >= fg_targets[ii]
        target_order = at_least * fg_rel
        target = (target_order * (1 - fg_targets)).sum() / target_order.sum()
        sorting_error[ii] = current - target
        if fp_num > 1e-10:
            fg_grad[ii] -= ranking_error[ii]
            bg_grad[bg_mask] += bg_rel * (ranking_error[ii] / fp_num)
        missorted = (~at_least) * fg_rel
        denom = missorted.sum()
        if denom > 1e-10:
            fg_grad[ii] -= sorting_error[ii]
            fg_grad += missorted * (sorting_error[ii] / denom)
    grad[fg_mask] = fg_grad / fg_num
    grad[relevant] = bg_grad / fg_num
    return ranking_error.mean(), sorting_error.mean(), grad
