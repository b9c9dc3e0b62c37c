"""Property tests of the ranking losses (hypothesis): balance, equivariance, pruning, precision."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.losses import alrp_classification_loss, ap_loss, rank_sort_loss

LOSSES = ["rs", "alrp", "ap"]


@st.composite
def batches(draw, min_pos=1):
    n = draw(st.integers(min_value=0, max_value=60))
    p = draw(st.integers(min_value=min_pos, max_value=12))
    grid = draw(st.sampled_from([None, 0.25, 1.0]))  # quantised logits create ties
    seed = draw(st.integers(min_value=0, max_value=2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n + p, generator=g, dtype=torch.float64) * draw(st.sampled_from([0.3, 1.0, 4.0]))
    if grid:
        s = torch.round(s / grid) * grid
    t = torch.zeros(n + p, dtype=torch.float64)
    perm = torch.randperm(n + p, generator=g)
    t[perm[:p]] = torch.round(torch.rand(p, generator=g, dtype=torch.float64) * 10).clamp(min=1) / 10
    n_ignored = draw(st.integers(min_value=0, max_value=n))
    t[perm[p : p + n_ignored]] = -1
    delta = draw(st.sampled_from([0.0, 0.2, 0.5, 1.0, 3.0]))
    return s, t, delta


def loc_errors_of(s, t):
    """aLRP localisation errors tied to each element (a fixed function of its logit and target), so
    that permuting the batch permutes them too."""
    e = (torch.sin(7 * s) + 1) * (0.4 + 0.5 * t.clamp(min=0))
    return e[t > 0]


def run(name, s, t, delta, grad=True):
    """(value, gradient of the total) of a loss; aLRP with fixed localisation errors."""
    x = s.clone().requires_grad_(grad)
    if name == "rs":
        out = rank_sort_loss(x, t, delta=delta)
        loss = out.total
    elif name == "alrp":
        loss, _ = alrp_classification_loss(x, t, loc_errors_of(s, t), delta=delta)
    else:
        loss = ap_loss(x, t, delta=delta)
    if not grad:
        return loss.item(), None
    (g,) = torch.autograd.grad(loss, x)
    return loss.item(), g


@settings(max_examples=60, deadline=None)
@given(batches(), st.sampled_from(LOSSES))
def test_updates_balance(batch, name):
    """What the positives lose, the negatives (and, for sorting, other positives) gain: Σ g = 0."""
    s, t, delta = batch
    _, g = run(name, s, t, delta)
    assert abs(float(g.sum())) < 1e-12
    assert float(g[t == -1].abs().sum()) == 0.0


@settings(max_examples=60, deadline=None)
@given(batches())
def test_rs_ranking_and_sorting_updates_each_balance(batch):
    s, t, delta = batch
    x = s.clone().requires_grad_(True)
    out = rank_sort_loss(x, t, delta=delta)
    (g_rank,) = torch.autograd.grad(out.ranking, x, retain_graph=True)
    (g_sort,) = torch.autograd.grad(out.sorting, x, retain_graph=True)
    (g_total,) = torch.autograd.grad(out.total, x)
    assert abs(float(g_rank.sum())) < 1e-12
    assert abs(float(g_sort.sum())) < 1e-12
    assert float(g_sort[t == 0].abs().sum()) == 0.0  # the sorting update stays among positives
    assert float(g_rank[t > 0].clamp(min=0).sum()) == 0.0  # ranking only pushes positives up
    torch.testing.assert_close(g_rank + g_sort, g_total, atol=1e-15, rtol=0)


@settings(max_examples=60, deadline=None)
@given(batches(), st.sampled_from(LOSSES), st.integers(min_value=0, max_value=2**31 - 1))
def test_permutation_equivariance(batch, name, seed):
    s, t, delta = batch
    perm = torch.randperm(s.numel(), generator=torch.Generator().manual_seed(seed))
    v1, g1 = run(name, s, t, delta)
    v2, g2 = run(name, s[perm], t[perm], delta)
    assert abs(v1 - v2) < 1e-12
    torch.testing.assert_close(g2, g1[perm], atol=1e-12, rtol=0)


@settings(max_examples=60, deadline=None)
@given(batches(), st.sampled_from(LOSSES), st.integers(min_value=1, max_value=200))
def test_negatives_far_below_change_nothing(batch, name, extra):
    """Negatives below min positive logit − δ have H = 0 for every positive: no value, no update."""
    s, t, delta = batch
    floor = float(s[t > 0].min()) - delta - 1e-3
    far = floor - torch.rand(extra, dtype=torch.float64) * 50
    v1, g1 = run(name, s, t, delta)
    v2, g2 = run(name, torch.cat([s, far]), torch.cat([t, torch.zeros(extra, dtype=torch.float64)]), delta)
    assert v1 == v2
    assert torch.equal(g2[: s.numel()], g1)
    assert float(g2[s.numel() :].abs().sum()) == 0.0


@settings(max_examples=60, deadline=None)
@given(batches(), st.sampled_from(LOSSES))
def test_float32_agrees_with_float64(batch, name):
    s, t, delta = batch
    s32 = s.float().double()  # the same values, representable in float32
    v64, g64 = run(name, s32, t, delta)
    x = s32.float().requires_grad_(True)
    t32 = t.float()
    if name == "rs":
        loss = rank_sort_loss(x, t32, delta=delta).total
    elif name == "alrp":
        loss, _ = alrp_classification_loss(x, t32, loc_errors_of(s32, t).float(), delta=delta)
    else:
        loss = ap_loss(x, t32, delta=delta)
    (g32,) = torch.autograd.grad(loss, x)
    assert loss.dtype == torch.float32 and g32.dtype == torch.float32
    assert abs(loss.item() - v64) < 1e-5
    torch.testing.assert_close(g32.double(), g64, atol=1e-6, rtol=0)
