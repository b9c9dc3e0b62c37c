"""The vectorised ranking losses equal the plain per-positive implementations (float64, 1e-9)."""

from __future__ import annotations

import pytest
import torch

import reference_losses as ref
from harness.losses import (
    _ranking,
    alrp_classification_loss,
    alrp_localisation_loss,
    ap_loss,
    rank_sort_loss,
)
from loss_cases import CASES, DELTAS, LARGE_CASES, LARGE_DELTAS, make_case

TOL = 1e-9


def _grad(logits, loss):
    (g,) = torch.autograd.grad(loss, logits)
    return g


ALL_CASES = [(c, d) for c in CASES for d in DELTAS] + [(c, d) for c in LARGE_CASES for d in LARGE_DELTAS]


# RS's positive-versus-positive sums on a CPU: the wavelet matrix, or dense P × P products up to
# CPU_DENSE_MAX_POSITIVES positives; both paths are checked against the reference.
PAIR_PATHS = {"wavelet": 0, "dense": 1 << 30}


@pytest.mark.parametrize("pairs", sorted(PAIR_PATHS))
@pytest.mark.parametrize("case,delta", ALL_CASES)
def test_rank_sort_matches_reference(monkeypatch, case, delta, pairs):
    monkeypatch.setattr(_ranking, "CPU_DENSE_MAX_POSITIVES", PAIR_PATHS[pairs])
    s, t = make_case(case)
    s.requires_grad_(True)
    out = rank_sort_loss(s, t, delta=delta)
    r_rank, r_sort, r_g = ref.rank_sort(s, t, delta)
    assert out.ranking.item() == pytest.approx(r_rank, abs=TOL)
    assert out.sorting.item() == pytest.approx(r_sort, abs=TOL)
    torch.testing.assert_close(_grad(s, out.total), r_g, atol=TOL, rtol=0)


@pytest.mark.parametrize("case,delta", ALL_CASES)
def test_alrp_classification_matches_reference(case, delta):
    s, t = make_case(case, seed=1)
    s.requires_grad_(True)
    p = int((t > 0).sum())
    e_loc = torch.rand(p, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 2
    loss, ranks = alrp_classification_loss(s, t, e_loc, delta=delta)
    r_val, r_ranks, r_g = ref.alrp_cls(s, t, e_loc, delta)
    assert loss.item() == pytest.approx(r_val, abs=TOL)
    torch.testing.assert_close(ranks, torch.tensor(r_ranks, dtype=torch.float64), atol=TOL, rtol=0)
    torch.testing.assert_close(_grad(s, loss), r_g, atol=TOL, rtol=0)


@pytest.mark.parametrize("case", CASES)
def test_alrp_localisation_matches_reference(case):
    s, t = make_case(case, seed=3)
    p = int((t > 0).sum())
    e_loc = (torch.rand(p, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 2).requires_grad_(True)
    _, ranks = alrp_classification_loss(s, t, e_loc, delta=1.0)
    value = alrp_localisation_loss(s, t, e_loc, ranks)
    r_value = ref.alrp_loc(s, t, e_loc, ranks.tolist())
    assert value.item() == pytest.approx(r_value.item(), abs=TOL)
    (g,) = torch.autograd.grad(value, e_loc)
    (r_g,) = torch.autograd.grad(r_value, e_loc)
    torch.testing.assert_close(g, r_g, atol=TOL, rtol=0)


@pytest.mark.parametrize("case,delta", ALL_CASES)
def test_ap_matches_reference(case, delta):
    s, t = make_case(case, seed=5)
    s.requires_grad_(True)
    loss = ap_loss(s, t, delta=delta)
    r_val, r_g = ref.ap(s, t, delta)
    assert loss.item() == pytest.approx(r_val, abs=TOL)
    torch.testing.assert_close(_grad(s, loss), r_g, atol=TOL, rtol=0)


@pytest.mark.parametrize("path", sorted(PAIR_PATHS))
@pytest.mark.parametrize("delta", DELTAS)
@pytest.mark.parametrize("grid", [None, 0.5])
def test_positive_pairs_equal_brute_force(monkeypatch, delta, grid, path):
    """The positive-versus-positive sums (the O(P log P) wavelet path and the dense one) equal the P × P
    definition, ties included."""
    monkeypatch.setattr(_ranking, "CPU_DENSE_MAX_POSITIVES", PAIR_PATHS[path])
    g = torch.Generator().manual_seed(8)
    p = 257
    s = torch.randn(p, generator=g, dtype=torch.float64) * 2
    if grid:
        s = torch.round(s / grid) * grid
    y = torch.randint(1, 6, (p,), generator=g).double() / 5  # five qualities: many equal ones
    w = torch.rand(p, 3, generator=g, dtype=torch.float64)
    pairs = _ranking.PositivePairs(s, delta, quality=y)
    assert pairs.dense == (path == "dense")
    h = ref.H(s[None, :] - s[:, None], delta)  # h[i, j] = H(s_j − s_i)
    ge = (y[None, :] >= y[:, None]).double()
    gt = (y[None, :] > y[:, None]).double()
    torch.testing.assert_close(pairs.above(w), h @ w, atol=1e-12, rtol=0)
    torch.testing.assert_close(pairs.above_at_least(w), (h * ge) @ w, atol=1e-12, rtol=0)
    # below_better: Σ_{j: y_j > y_i} w_j H(s_i − s_j), and H(s_i − s_j) = h[j, i]
    torch.testing.assert_close(pairs.below_better(w), (h.T * gt) @ w, atol=1e-12, rtol=0)


def test_multidimensional_logits_are_flattened():
    s, t = make_case("random", seed=7)
    s2, t2 = s[:420].reshape(4, 105), t[:420].reshape(4, 105)
    x = s2.clone().requires_grad_(True)
    out = rank_sort_loss(x, t2)
    r_rank, r_sort, r_g = ref.rank_sort(s2, t2, 0.5)
    assert out.ranking.item() == pytest.approx(r_rank, abs=TOL)
    assert out.sorting.item() == pytest.approx(r_sort, abs=TOL)
    g = _grad(x, out.total)
    assert g.shape == (4, 105)
    torch.testing.assert_close(g.reshape(-1), r_g, atol=TOL, rtol=0)


@pytest.mark.parametrize("delta", [0.0, 0.5])
def test_dense_positive_pairs_equal_the_wavelet(monkeypatch, delta):
    """The dense P × P path (on a GPU up to DENSE_MAX_POSITIVES, on a CPU up to CPU_DENSE_MAX_POSITIVES
    for RS's sums) gives the same sums as the wavelet matrix."""
    g = torch.Generator().manual_seed(9)
    s = torch.round(torch.randn(300, generator=g, dtype=torch.float64) * 4) / 4
    y = torch.randint(1, 6, (300,), generator=g).double() / 5
    w = torch.rand(300, 2, generator=g, dtype=torch.float64)
    dense = _ranking.PositivePairs(s, delta, quality=y)  # 300 positives: dense on a CPU
    monkeypatch.setattr(_ranking, "CPU_DENSE_MAX_POSITIVES", 299)
    sparse = _ranking.PositivePairs(s, delta, quality=y)
    assert not _ranking.PositivePairs(s, delta).dense  # the one-dimensional sums alone stay sorted
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    gpu = _ranking.PositivePairs(s, delta, quality=y)
    monkeypatch.undo()
    assert dense.dense and gpu.dense and not sparse.dense
    for name in ("above", "above_at_least", "below_better"):
        torch.testing.assert_close(getattr(dense, name)(w), getattr(sparse, name)(w), atol=1e-12, rtol=0)


@pytest.mark.parametrize("loss_name", ["rs", "ap", "alrp"])
def test_gpu_code_paths_equal_the_cpu_ones(monkeypatch, loss_name):
    """Where the code branches for a GPU (bucketize instead of the grid, index_add instead of bincount,
    dense positive pairs), the result is the same; the branches are forced here on the CPU."""
    g = torch.Generator().manual_seed(10)
    s = torch.round(torch.randn(20_000, generator=g, dtype=torch.float64) * 64) / 64  # ties
    t = torch.zeros(20_000, dtype=torch.float64)
    perm = torch.randperm(20_000, generator=g)
    p = 300  # 20,000 logits against 600 breakpoints: the CPU takes the grid
    t[perm[:p]] = torch.randint(1, 6, (p,), generator=g).double() / 5
    t[perm[p : p + 500]] = -1.0
    e_loc = torch.linspace(0, 2, p, dtype=torch.float64)

    def run():
        x = s.clone().requires_grad_(True)
        if loss_name == "rs":
            loss = rank_sort_loss(x, t).total
        elif loss_name == "alrp":
            loss = alrp_classification_loss(x, t, e_loc)[0]
        else:
            loss = ap_loss(x, t)
        return float(loss.detach()), _grad(x, loss)

    monkeypatch.setattr(_ranking, "CPU_DENSE_MAX_POSITIVES", 0)  # RS's sums by the wavelet on the CPU
    cpu = run()
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    gpu_paths = run()
    monkeypatch.undo()
    assert gpu_paths[0] == pytest.approx(cpu[0], abs=1e-12)
    torch.testing.assert_close(gpu_paths[1], cpu[1], atol=1e-12, rtol=0)
