"""Plain per-positive implementations of the ranking losses, written from the reference page.

``../shared/reference/ranking-losses.md`` spelled out loop by loop in float64, with no vectorisation
and no shared code with ``harness.losses``: each function returns the loss value(s) and the full update
``g`` handed back for the logits. The tests hold the vectorised library to these.
"""

from __future__ import annotations

import torch


def H(x: torch.Tensor, delta: float) -> torch.Tensor:
    if delta == 0:
        return (x >= 0).double()
    return torch.clamp(x / (2 * delta) + 0.5, 0, 1)


def _split(logits, targets, positive=None):
    s = logits.detach().reshape(-1).double()
    t = targets.detach().reshape(-1).double()
    pos = (t > 0) if positive is None else positive.reshape(-1)
    neg = (t == 0) & ~pos
    return s, t, pos.nonzero().flatten().tolist(), neg.nonzero().flatten()


def rank_sort(logits, targets, delta=0.5, positive=None):
    """Returns (ranking, sorting, g). ``positive`` may mark positives explicitly (quality 0 allowed)."""
    s, t, P, N = _split(logits, targets, positive)
    g = torch.zeros_like(s)
    if not P:
        return 0.0, 0.0, g
    eps = 1e-10
    pos_s = s[P]
    y = t[P]
    rank_errs, sort_errs = [], []
    for a, i in enumerate(P):
        h_pos = H(pos_s - s[i], delta)
        h_neg = H(s[N] - s[i], delta)
        rank_plus = h_pos.sum()
        n_fp = h_neg.sum()
        rank = rank_plus + n_fp
        l_r = n_fp / rank
        l_s = (h_pos * (1 - y)).sum() / rank_plus
        at_least = (y >= y[a]).double()
        l_star = (h_pos * at_least * (1 - y)).sum() / (h_pos * at_least).sum()
        e = l_s - l_star
        rank_errs.append(float(l_r))
        sort_errs.append(float(e))
        if n_fp > eps:
            g[i] -= l_r
            g[N] += l_r * h_neg / n_fp
        m = h_pos * (y < y[a]).double()
        if m.sum() > eps:
            g[i] -= e
            g[torch.tensor(P)] += e * m / m.sum()
    g /= len(P)
    return sum(rank_errs) / len(P), sum(sort_errs) / len(P), g


def alrp_cls(logits, targets, loc_errors, delta=1.0):
    """Returns (value, ranks, g)."""
    s, t, P, N = _split(logits, targets)
    g = torch.zeros_like(s)
    if not P:
        return 0.0, [], g
    eps = 1e-5
    e_loc = loc_errors.detach().double()
    precs, ranks = [], []
    for a, i in enumerate(P):
        h_pos = H(s[P] - s[i], delta)
        h_pos[a] = 0.0
        h_neg = H(s[N] - s[i], delta)
        rank_plus = 1 + h_pos.sum()
        n_fp = h_neg.sum()
        rank = rank_plus + n_fp
        precs.append(float(rank_plus / rank))
        ranks.append(float(rank))
        if n_fp > eps:
            g[i] = -((h_pos * e_loc).sum() + n_fp) / rank
            g[N] += h_neg * (-g[i]) / n_fp
    g /= len(P)
    return 1 - sum(precs) / len(P), ranks, g


def alrp_loc(logits, targets, loc_errors, ranks):
    """Value of mean_i Σ_{j: s_j >= s_i} E_loc(j) / rank(i), as a differentiable function of loc_errors."""
    s, t, P, N = _split(logits, targets)
    if not P:
        return loc_errors.sum() * 0
    total = 0
    for a, i in enumerate(P):
        acc = 0
        for b, j in enumerate(P):
            if s[j] >= s[i]:
                acc = acc + loc_errors[b]
        total = total + acc / ranks[a]
    return total / len(P)


def ap(logits, targets, delta=1.0):
    """Returns (value, g), visiting positives in ascending logit order."""
    s, t, P, N = _split(logits, targets)
    g = torch.zeros_like(s)
    if not P:
        return 0.0, g
    order = sorted(range(len(P)), key=lambda a: float(s[P[a]]))
    best = 0.0
    precs = []
    for a in order:
        i = P[a]
        h_pos = H(s[P] - s[i], delta)
        h_pos[a] = 0.0
        h_neg = H(s[N] - s[i], delta)
        rank_plus = 1 + h_pos.sum()
        rank = rank_plus + h_neg.sum()
        current = float(rank_plus / rank)
        if best <= current:
            best = current
            g[N] += h_neg / rank
        else:
            g[N] += h_neg / rank * (1 - best) / (1 - current)
        g[i] = -(1 - best)
        precs.append(best)
    g /= len(P)
    return 1 - sum(precs) / len(P), g


def _sorting(s, P, y, delta, eps=1e-10):
    """RS's sorting error per positive and its update over the positives (before / |P|)."""
    pos_s = s[P]
    errs, g = [], torch.zeros(len(P), dtype=torch.float64)
    for a in range(len(P)):
        h_pos = H(pos_s - pos_s[a], delta)
        at_least = (y >= y[a]).double()
        e = (h_pos * (1 - y)).sum() / h_pos.sum() - (h_pos * at_least * (1 - y)).sum() / (h_pos * at_least).sum()
        errs.append(float(e))
        m = h_pos * (y < y[a]).double()
        if m.sum() > eps:
            g[a] -= e
            g += e * m / m.sum()
    return errs, g


def bucketed(logits, targets, delta, sorting=True, eps=1e-10):
    """Bucketed RS (``sorting=True``: returns (ranking, sorting, g)) or Bucketed AP (returns (value, g)),
    following ``../shared/reference/bucketed-losses.md`` step by step: a full descending sort of the
    positives and the negatives at or above ``min s_P − δ`` (a negative tied with a positive placed
    above it), runs of negatives as buckets of (size, mean), and H per (bucket, positive) pair.
    ``FP_i`` and the sorting denominators are tested against 1e-10, as the library does."""
    s, t, P, N = _split(logits, targets)
    g = torch.zeros_like(s)
    if not P:
        return (0.0, 0.0, g) if sorting else (0.0, g)
    cutoff = min(float(s[i]) for i in P) - delta
    items = [(float(s[i]), 1, i) for i in P] + [(float(s[j]), 0, int(j)) for j in N if float(s[j]) >= cutoff]
    items.sort(key=lambda e: (-e[0], e[1]))  # descending; among ties negatives first
    buckets, run = [], []
    for _, is_pos, idx in items:
        if is_pos:
            if run:
                buckets.append(run)
            run = []
        else:
            run.append(idx)
    if run:
        buckets.append(run)
    size = [len(b) for b in buckets]
    mean = [sum(float(s[j]) for j in b) / len(b) for b in buckets]
    rank_errs, weights = [], []
    for i in P:
        fp = sum(n * float(H(torch.tensor(m - float(s[i]), dtype=torch.float64), delta)) for n, m in zip(size, mean))
        rank_plus = float(H(s[P] - s[i], delta).sum())
        l_r = fp / (rank_plus + fp)
        rank_errs.append(l_r)
        weights.append(l_r / fp if fp > eps else 0.0)
        if fp > eps:
            g[i] -= l_r
    for b, m in zip(buckets, mean):
        share = sum(w * float(H(torch.tensor(m - float(s[i]), dtype=torch.float64), delta)) for w, i in zip(weights, P))
        for j in b:
            g[j] += share  # every member gets the bucket's update: an equal split
    ranking = sum(rank_errs) / len(P)
    if not sorting:
        return ranking, g / len(P)
    errs, g_sort = _sorting(s, P, t[P], delta)
    g[torch.tensor(P)] += g_sort
    return ranking, sum(errs) / len(P), g / len(P)
