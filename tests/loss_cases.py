"""Random inputs for the loss tests: a named case is (logits, targets) in float64."""

from __future__ import annotations

import torch


def make_case(name: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    n, p, scale = 400, 30, 2.0
    if name == "thousands":
        n, p = 3000, 2000
    if name == "imbalance":
        n, p = 5000, 3
    if name == "large_logits":
        scale = 1e3
    s = randn(n + p) * scale
    t = torch.zeros(n + p, dtype=torch.float64)
    perm = torch.randperm(n + p, generator=g)
    pos = perm[:p]
    t[pos] = rand(p) * 0.99 + 0.01
    if name == "ties":
        s = torch.round(s * 2) / 2  # many exactly tied logits, among positives and across
        t[pos] = torch.round(t[pos] * 4).clamp(min=1) / 4  # several positives share a quality
    if name == "thousands":  # P in the thousands: few distinct qualities and some tied logits
        t[pos] = torch.randint(1, 6, (p,), generator=g).double() / 5
        s[pos[: p // 4]] = torch.round(s[pos[: p // 4]])
    if name == "equal_quality":
        t[pos] = 0.7
    if name == "ignored":
        t[perm[p : p + 100]] = -1.0
    if name == "positives_above":
        s[pos] = s[pos].abs() + 10  # every positive far above every negative: no false positives
    if name == "single_positive":
        t.zero_()
        t[pos[0]] = 0.5
    if name == "no_negatives":
        s, t = s[pos], t[pos]
    return s, t


CASES = [
    "random",
    "ties",
    "equal_quality",
    "ignored",
    "imbalance",
    "large_logits",
    "positives_above",
    "single_positive",
    "no_negatives",
]
DELTAS = [0.0, 0.1, 0.5, 1.0, 5.0]
# Large cases: P in the thousands (slower references, fewer δ).
LARGE_CASES = ["thousands"]
LARGE_DELTAS = [0.0, 0.5, 1.0]
