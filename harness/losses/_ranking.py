"""Shared, exact machinery of the ranking-based losses (RS, aLRP, AP).

Everything here is pure torch and device-agnostic. The losses are defined per positive ``i`` over the
smoothed step ``H(x) = clamp(x / (2δ) + 0.5, 0, 1)`` of ``x_ij = s_j − s_i`` (``H(x) = [x ≥ 0]`` when
``δ = 0``); see ``../shared/reference/ranking-losses.md`` or the docstrings of the loss modules.

Two sums over the negatives carry the cost, and both are exact without an N × P tensor because H is
piecewise linear in ``s_i``:

* ``N_FP(i) = Σ_{j∈N} H(s_j − s_i)`` for every positive (:meth:`NegativeIndex.false_positives`), and
* ``g_j = Σ_{i∈P} w_i · H(s_j − s_i)`` for every negative (:meth:`NegativeIndex.scatter`), the update
  handed back to the negatives.

The 2P breakpoints ``s_i ± δ`` cut the logit axis into 2P + 1 intervals. Every entry of the batch gets
the number of its interval in place (:func:`bucket_codes`: on a CPU a lookup grid with one comparison,
O(N); on a GPU ``bucketize``, O(N log P)); the negatives are never gathered into a copy. Per-interval
counts and sums of the negatives followed by prefix sums give ``N_FP``; per-breakpoint coefficient jumps
followed by prefix sums give, for every interval b, an affine function ``A_b + B_b · s`` that is the
negatives' update there, applied to every entry in the backward pass (O(N), in float32 for float32
logits: the coefficients are exact, the affine step rounds like any float32 gradient).

Positive-versus-positive terms are no P × P matrix either (:class:`PositivePairs`): the same piecewise
linearity, over the positives sorted once, turns ``Σ_{j∈P} w_j H(s_j − s_i)`` into differences of prefix
sums at two cut positions per positive, O(P log P). RS's target sorting error restricts ``j`` to
``y_j ≥ y_i``, a two-dimensional dominance sum (logit order × quality order) that a wavelet matrix
(:class:`_WaveletMatrix`) answers exactly with ⌈log2 (P+1)⌉ levels of prefix sums and gathers:
O(P log P) with no search. For few positives (RS's sums up to ``CPU_DENSE_MAX_POSITIVES`` on a CPU, any
up to ``DENSE_MAX_POSITIVES`` on a GPU) the same sums are P × P products, which take fewer operations.
All accumulation happens in float64 (``COMPUTE_DTYPE``), whatever the dtype of the logits.

Host synchronisation: validating the inputs (one, to raise on NaN / Inf logits or bad targets), and
counting the positives (and ignored entries, when there are any) with ``nonzero``; none in the backward
pass. No device is named: everything follows the logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
import torch
from torch import Tensor

COMPUTE_DTYPE = torch.float64
IGNORE = -1.0


def validate_inputs(logits: Tensor, targets: Tensor, name: str = "loss") -> None:
    """Check a classification loss's inputs the way every built-in loss does, for loss authors.

    ``logits``: a floating-point tensor of any shape; ``targets``: the same shape, each entry ``0``
    (negative), ``-1`` (ignored) or in ``(0, 1]`` (positive: 1, or its localisation quality). Raises
    ``TypeError`` for non-tensors or integer logits and ``ValueError`` for differing shapes, NaN or Inf
    logits (naming how many and the first flattened index) and targets outside ``{-1, 0} ∪ (0, 1]``
    (the same). ``name`` starts each message (e.g. the loss's name). Costs two min/max reductions and
    one host synchronisation on valid inputs.
    """
    check_inputs(logits, targets, name)


def check_inputs(logits: Tensor, targets: Tensor, name: str) -> bool:
    """:func:`validate_inputs`, returning whether any target is ``-1`` (ignored)."""
    if not isinstance(logits, Tensor) or not isinstance(targets, Tensor):
        raise TypeError(f"{name}: logits and targets must be tensors")
    if logits.shape != targets.shape:
        raise ValueError(
            f"{name}: logits and targets must have the same shape, got {tuple(logits.shape)} and "
            f"{tuple(targets.shape)}"
        )
    if not logits.is_floating_point():
        raise TypeError(f"{name}: logits must be floating point, got {logits.dtype}")
    if not logits.numel():
        return False
    s, t = logits.detach(), targets.detach()
    # One pass over each and one synchronisation: the extremes are finite iff every logit is.
    s_lo, s_hi, t_lo, t_hi = torch.stack([*s.aminmax(), *t.aminmax()]).to(COMPUTE_DTYPE).tolist()
    if not (math.isfinite(s_lo) and math.isfinite(s_hi)):
        bad = ~torch.isfinite(s)
        first = int(bad.reshape(-1).nonzero()[0])
        raise ValueError(
            f"{name}: {int(bad.sum())} non-finite logit(s) (NaN or Inf); the first at flattened index {first}"
        )
    if t_lo >= 0 and t_hi <= 1:
        return False
    if t_lo >= IGNORE and t_hi <= 1 and not bool(((t < 0) & (t > IGNORE)).any()):
        return True
    invalid = ~((t == 0) | (t == IGNORE) | ((t > 0) & (t <= 1)))
    first = int(invalid.reshape(-1).nonzero()[0])
    raise ValueError(
        f"{name}: {int(invalid.sum())} invalid target(s); targets must be 0 (negative), -1 (ignored) or in "
        f"(0, 1] (positive); the first at flattened index {first} is {float(t.reshape(-1)[first])}"
    )


def validate(logits: Tensor, targets: Tensor, name: str) -> None:
    """Alias of :func:`validate_inputs` kept for the modules of this package."""
    check_inputs(logits, targets, name)


def check_delta(delta: float, name: str) -> float:
    delta = float(delta)
    if not delta >= 0 or delta == float("inf"):
        raise ValueError(f"{name}: delta must be a finite number >= 0, got {delta}")
    return delta


@dataclass
class Split:
    """The flattened batch split into positives and relevant negatives (ignored entries dropped); the
    bucketed losses work on this copy of the relevant negatives."""

    pos_index: Tensor  # flat indices of positives, ascending
    neg_index: Tensor  # flat indices of the relevant negatives, ascending
    pos_logits: Tensor  # float64
    neg_logits: Tensor  # float64
    pos_targets: Tensor  # float64 target values (> 0) of the positives


def split(logits: Tensor, targets: Tensor, delta: float) -> Split:
    """Positives, and the *relevant* negatives: those with ``s_j ≥ min_i s_i − δ``.

    Every other negative has ``H(s_j − s_i) = 0`` for all positives, hence no value and no update;
    dropping them changes nothing (bit for bit) and saves their share of the work.
    """
    s = logits.detach().reshape(-1)
    t = targets.detach().reshape(-1)
    pos_index = (t > 0).nonzero().squeeze(1)
    pos_logits = s.index_select(0, pos_index).to(COMPUTE_DTYPE)
    if pos_index.numel():
        floor = pos_logits.min() - delta  # float64
        floor_native = floor.to(s.dtype)
        # rounded up when cast: step one ulp down so no relevant one is lost (no host synchronisation)
        lower = torch.nextafter(floor_native, floor_native.new_tensor(float("-inf")))
        floor_native = torch.where(floor_native > floor, lower, floor_native)
        neg_index = ((t == 0) & (s >= floor_native)).nonzero().squeeze(1)
    else:
        neg_index = pos_index
    neg = s.index_select(0, neg_index)
    return Split(
        pos_index=pos_index,
        neg_index=neg_index,
        pos_logits=pos_logits,
        neg_logits=neg.to(COMPUTE_DTYPE),
        pos_targets=t.index_select(0, pos_index).to(COMPUTE_DTYPE),
    )


def step(x: Tensor, delta: float) -> Tensor:
    """The smoothed step H(x); the hard step [x >= 0] when delta == 0."""
    if delta == 0:
        return (x >= 0).to(x.dtype)
    return (x / (2 * delta) + 0.5).clamp_(0.0, 1.0)


def step_sums(points: Tensor, weights: Tensor, centres: Tensor, delta: float, upper: bool = True) -> Tensor:
    """``Σ_j w_j H(x_j − c)`` (``upper``) or ``Σ_j w_j H(c − x_j)`` for every centre ``c``, exactly.

    ``points`` ``x`` (``[M]``) with ``weights`` (``[M]``), ``centres`` (``[Q]``), all float64; returns
    ``[Q]``. The points are sorted once; each centre needs two cut positions (one at δ = 0, where ties
    count as ``x_j ≥ c`` resp. ``x_j ≤ c``) and differences of prefix sums of ``w`` and ``w · x``:
    O((M + Q) log M), no M × Q tensor.
    """
    xs, order = torch.sort(points)
    w = weights.index_select(0, order)
    cols = w[:, None] if delta == 0 else torch.stack([w, w * xs], 1)
    cum = torch.zeros((xs.numel() + 1, cols.shape[1]), dtype=COMPUTE_DTYPE, device=xs.device)
    torch.cumsum(cols, 0, out=cum[1:])
    if delta == 0:
        if upper:  # Σ [x_j ≥ c]
            return cum[-1, 0] - cum[torch.searchsorted(xs, centres), 0]
        return cum[torch.searchsorted(xs, centres, right=True), 0]  # Σ [x_j ≤ c]
    low = cum[torch.searchsorted(xs, centres - delta)]  # x_j < c − δ
    high = cum[torch.searchsorted(xs, centres + delta)]  # x_j < c + δ
    inside = high - low
    lin = (inside[:, 1] - inside[:, 0] * centres) / (2 * delta) + 0.5 * inside[:, 0]
    if upper:
        return (cum[-1, 0] - high[:, 0]) + lin
    return low[:, 0] + inside[:, 0] - lin


class _WaveletMatrix:
    """Exact two-dimensional dominance sums over M points by a wavelet matrix.

    Point ``j`` has integer coordinates ``u_j`` (a permutation of ``0 … M−1``: its position in logit
    order) and ``v_j ∈ [0, M)`` (its position in a second order, e.g. by quality). For weight rows
    ``w_j`` (any number of columns), :meth:`query` returns ``Σ_{j: u_j < c, v_j < lim} w_j`` for many
    pairs ``(c, lim)`` at once.

    The sequence of ``v`` laid out by ``u`` is stably partitioned by one bit of ``v`` per level, most
    significant first (``⌈log2 (M+1)⌉`` levels). A query walks the levels keeping the range of its
    ``c`` first points that still agree with ``lim`` on the bits seen; where ``lim`` has a 1, the points
    with a 0 there are all below ``lim`` and their weights are one difference of prefix sums. Building is
    O(M log M) (cumulative sums and one scatter per level, no sort), a query O(log M) gathers: no
    search and no host synchronisation.
    """

    def __init__(self, order: Tensor, v: Tensor, m: int):
        # order[k]: the point with u = k; the sequence of v in u-order is partitioned level by level.
        seq = v.index_select(0, order)
        point = order
        self.levels: list[tuple[int, Tensor, Tensor, Tensor]] = []
        ar = torch.arange(m, device=v.device)
        for bit_no in reversed(range(max(1, m.bit_length()))):
            bit = (seq >> bit_no) & 1
            rank0 = torch.zeros(m + 1, dtype=torch.long, device=v.device)
            torch.cumsum(1 - bit, 0, out=rank0[1:])  # rank0[k]: points with a 0 among the first k
            zeros = rank0[m]
            pos = torch.where(bit.bool(), zeros + ar - rank0[:-1], rank0[:-1])  # stable partition
            nxt, nxt_point = torch.empty_like(seq), torch.empty_like(point)
            nxt[pos] = seq
            nxt_point[pos] = point
            self.levels.append((bit_no, rank0, zeros, nxt_point))  # which point sits where after it
            seq, point = nxt, nxt_point

    def prefix_sums(self, weights: Tensor) -> list[Tensor]:
        """Per level, the prefix sums of ``weights`` (``[M, K]``, by point) in that level's output order."""
        out = []
        for _, _, _, point in self.levels:
            cum = torch.zeros((weights.shape[0] + 1, weights.shape[1]), dtype=weights.dtype, device=weights.device)
            torch.cumsum(weights.index_select(0, point), 0, out=cum[1:])
            out.append(cum)
        return out

    def query(self, sums: list[Tensor], cuts: list[Tensor], lim: Tensor) -> list[Tensor]:
        """``Σ_{j: u_j < c, v_j < lim} w_j`` for each ``c`` of each tensor in ``cuts`` (``[Q]`` each) and
        the ``lim`` of its row (``[Q]``); ``sums`` from :meth:`prefix_sums`. Returns ``[Q, K]`` per cut."""
        q = lim.numel()
        # Each range [0, c) is walked by its two ends; the lower end (0) depends on lim only.
        ends = torch.cat([torch.zeros_like(lim), *cuts])
        acc = torch.zeros((len(cuts), q, sums[0].shape[1]), dtype=sums[0].dtype, device=lim.device)
        bits = [((lim >> bit_no) & 1) for bit_no, _, _, _ in self.levels]
        for (_, rank0, zeros, _), cum, bit in zip(self.levels, sums, bits):
            r = rank0.index_select(0, ends)  # points with a 0 at this bit before each end
            w = cum.index_select(0, r).view(len(cuts) + 1, q, -1)
            # where lim has a 1, the points with a 0 here are all below lim: add their weights
            acc.addcmul_(w[1:] - w[:1], bit.to(w.dtype)[None, :, None])
            ends = torch.where(bit.bool().repeat(len(cuts) + 1), ends - r + zeros, r)  # follow lim's bit
        return list(acc.unbind(0))


# On a GPU, up to this many positives are paired densely (P × P float64: 128 MiB at 4096): a handful
# of kernels instead of the wavelet's few hundred small ones, which is what costs time there.
DENSE_MAX_POSITIVES = 4096
# On a CPU the wavelet's few hundred small operations also cost more than the P × P products for few
# positives (RS's three sums, one thread: 2.6 -> 0.19 ms at 100 positives, 3.7 -> 1.6 ms at 400, 4.7
# against 8.0 ms at 800), so RS's sums (with qualities) are dense up to this many positives. The
# one-dimensional sums alone (AP, aLRP: no quality, no wavelet) are a sort and prefix sums, a handful of
# operations: dense they would save about 0.1 ms a call (0.18 -> 0.05 ms at 100 positives), so they stay
# as they are and AP's and aLRP's rows do not move.
CPU_DENSE_MAX_POSITIVES = 512


class PositivePairs:
    """The positive-versus-positive sums of the ranking losses, exact in O(P log P) (no P × P term).

    For the positives' logits ``s`` (and, for RS, qualities ``y``) and any weights ``w``:

    * :meth:`above`: ``Σ_{j∈P} w_j H(s_j − s_i)`` for every positive ``i``;
    * :meth:`above_at_least`: ``Σ_{j∈P: y_j ≥ y_i} w_j H(s_j − s_i)`` (RS's target sorting error);
    * :meth:`below_better`: ``Σ_{j∈P: y_j > y_i} w_j H(s_i − s_j)`` (RS's sorting update, scattered).

    H is piecewise linear in ``s_j``: with the positives sorted once by logit, the ``j`` with
    ``s_j < s_i − δ``, in ``[s_i − δ, s_i + δ)`` and ``≥ s_i + δ`` are three ranges of that order, so the
    sums are differences of prefix sums of ``w`` and ``w · s`` at two cut positions per positive (one at
    δ = 0, where ties are counted exactly as ``s_j ≥ s_i``). The restriction to better-localised
    positives makes the prefix two-dimensional (logit order × quality order), answered exactly by
    :class:`_WaveletMatrix`. On a GPU, up to ``DENSE_MAX_POSITIVES`` positives are paired densely
    instead (the same sums as matrix products: fewer kernels, no search), and on a CPU RS's sums (with
    qualities) up to ``CPU_DENSE_MAX_POSITIVES`` (fewer small operations). Everything is float64.
    """

    def __init__(self, pos_logits: Tensor, delta: float, quality: Tensor | None = None):
        self.delta = delta
        self.s = pos_logits
        m = pos_logits.numel()
        self.m = m
        if pos_logits.is_cuda:
            self.dense = m <= DENSE_MAX_POSITIVES
        else:
            self.dense = quality is not None and m <= CPU_DENSE_MAX_POSITIVES
        if self.dense:  # a few large operations instead of the wavelet's many small ones
            self.h = step(pos_logits[None, :] - pos_logits[:, None], delta)  # h[i, j] = H(s_j − s_i)
            if quality is not None:
                self.y = quality
            return
        s_sorted, order = torch.sort(pos_logits, stable=True)
        self.order = order
        self.s_sorted = s_sorted
        # cut positions, searched for the sorted logits (which is faster) and put back in place
        u = torch.empty_like(order)
        u[order] = torch.arange(m, device=order.device)
        if delta == 0:
            self.cut_lt = torch.searchsorted(s_sorted, s_sorted).index_select(0, u)  # #{s_j < s_i}
            self.cut_le = torch.searchsorted(s_sorted, s_sorted, right=True).index_select(0, u)  # #{s_j <= s_i}
        else:
            self.cut_lo = torch.searchsorted(s_sorted, s_sorted - delta).index_select(0, u)  # #{s_j < s_i − δ}
            self.cut_hi = torch.searchsorted(s_sorted, s_sorted + delta).index_select(0, u)  # #{s_j < s_i + δ}
        self.wavelet = None
        if quality is not None:
            y_sorted, y_order = torch.sort(quality, stable=True)
            v = torch.empty_like(y_order)
            v[y_order] = m - 1 - torch.arange(m, device=order.device)  # position by quality, descending
            self.by_quality = y_order.flip(0)  # the positives by quality, descending (v = 0, 1, …)
            w = torch.empty_like(y_order)
            w[y_order] = torch.arange(m, device=order.device)
            self.lim_ge = (m - torch.searchsorted(y_sorted, y_sorted)).index_select(0, w)  # #{y_j >= y_i}
            self.lim_gt = (m - torch.searchsorted(y_sorted, y_sorted, right=True)).index_select(0, w)  # #{y_j > y_i}
            self.wavelet = _WaveletMatrix(order, v, m)

    def _columns(self, weights: Tensor) -> Tensor:
        """``[w, w · s]`` as columns (``[P, 2K]``); only ``w`` at δ = 0."""
        w = weights.reshape(self.m, -1).to(COMPUTE_DTYPE)
        return w if self.delta == 0 else torch.cat([w, w * self.s[:, None]], 1)

    def _window(self, prefix, total: Tensor, upper: bool) -> Tensor:
        """Assemble ``Σ w H(±(s_j − s_i))`` from ``prefix(cut)`` = sums over ``j`` before ``cut``."""
        if self.delta == 0:
            if upper:  # Σ [s_j >= s_i]
                return total - prefix(self.cut_lt)
            return prefix(self.cut_le)  # Σ [s_j <= s_i]
        k = total.shape[1] // 2
        low, high = prefix(self.cut_lo), prefix(self.cut_hi)
        inside = high - low
        # Σ over the window of w_j (s_j − s_i) / (2δ) + w_j / 2
        lin = (inside[:, k:] - inside[:, :k] * self.s[:, None]) / (2 * self.delta) + 0.5 * inside[:, :k]
        if upper:
            return (total[:, :k] - high[:, :k]) + lin
        return low[:, :k] + inside[:, :k] - lin  # H(−x) = 1 − H(x) inside the window

    def _sums_1d(self, weights: Tensor, upper: bool) -> Tensor:
        cols = self._columns(weights)
        cum = torch.zeros((self.m + 1, cols.shape[1]), dtype=COMPUTE_DTYPE, device=cols.device)
        torch.cumsum(cols.index_select(0, self.order), 0, out=cum[1:])
        total = cum[self.m].expand(self.m, -1)
        return self._window(lambda cut: cum.index_select(0, cut), total, upper)

    def _sums_2d(self, weights: Tensor, lim: Tensor, upper: bool) -> Tensor:
        cols = self._columns(weights)
        # the total over v_j < lim is a prefix in quality order
        by_quality = torch.zeros((self.m + 1, cols.shape[1]), dtype=COMPUTE_DTYPE, device=cols.device)
        torch.cumsum(cols.index_select(0, self.by_quality), 0, out=by_quality[1:])
        total = by_quality.index_select(0, lim)
        sums = self.wavelet.prefix_sums(cols)
        cuts = [self.cut_lt if upper else self.cut_le] if self.delta == 0 else [self.cut_lo, self.cut_hi]
        table = dict(zip([id(c) for c in cuts], self.wavelet.query(sums, cuts, lim)))
        return self._window(lambda cut: table[id(cut)], total, upper)

    def above(self, weights: Tensor) -> Tensor:
        """``Σ_{j∈P} w_j H(s_j − s_i)`` for every positive (``[P, K]`` for ``[P, K]`` weights)."""
        if self.dense:
            return self.h @ weights.reshape(self.m, -1).to(COMPUTE_DTYPE)
        return self._sums_1d(weights, upper=True)

    def above_at_least(self, weights: Tensor) -> Tensor:
        """``Σ_{j∈P: y_j ≥ y_i} w_j H(s_j − s_i)`` for every positive."""
        if self.dense:
            return (self.h * (self.y[None, :] >= self.y[:, None])) @ weights.reshape(self.m, -1).to(COMPUTE_DTYPE)
        return self._sums_2d(weights, self.lim_ge, upper=True)

    def below_better(self, weights: Tensor) -> Tensor:
        """``Σ_{j∈P: y_j > y_i} w_j H(s_i − s_j)`` for every positive."""
        if self.dense:  # H(s_i − s_j) = h[j, i]
            return (self.h.T * (self.y[None, :] > self.y[:, None])) @ weights.reshape(self.m, -1).to(COMPUTE_DTYPE)
        return self._sums_2d(weights, self.lim_gt, upper=False)

    @property
    def self_step(self) -> float:
        """``H(0)``: what each positive adds to its own sums."""
        return 1.0 if self.delta == 0 else 0.5


# Cells of the lookup grid per breakpoint in bucket_codes (more cells: fewer values need a search).
GRID_CELLS_PER_POINT = 16


def _count_le(points: Tensor, bounds: Tensor) -> Tensor:
    """``#{k: points[k] ≤ bounds[j]}`` for sorted ``bounds`` (many) and ``points`` (few)."""
    first = torch.searchsorted(bounds, points)  # point k is ≤ bounds[j] exactly for j ≥ first[k]
    return torch.bincount(first, minlength=bounds.numel() + 1).cumsum(0)[: bounds.numel()]


def bucket_codes(values: Tensor, points: Tensor) -> Tensor:
    """``#{k: points[k] ≤ v}`` for every float64 value (int32), exactly, for sorted float64 ``points``.

    Equal to ``torch.bucketize(values, points, right=True)``. On a CPU a binary search per value is the
    cost of the ranking losses at large N, so a uniform grid of ``≥ GRID_CELLS_PER_POINT × #points``
    cells over ``[points[0] − 2w, points[-1] + w]`` answers first: a value's cell is one subtract,
    multiply and floor (everything below or above the grid is clamped into an end cell), and a table
    gives, for every cell, the code at its lower end and the one point its extent holds, if any (the
    extent widened by a margin of 2⁻⁴⁰ of the grid's magnitude; float64 rounding of the cell index is
    below 2⁻⁵⁰ of it): the code is ``low + [v ≥ point]``. Only values in cells holding several points
    (closer together than a cell) are searched, so the result is exact. On a GPU the search
    itself is cheap and needs no host synchronisation: ``bucketize`` answers.
    """
    m = points.numel()
    if values.is_cuda or m < 2 or values.numel() < 16 * m:
        return torch.bucketize(values, points, right=True).int()
    lo, hi = points[0].item(), points[-1].item()
    span = hi - lo
    cells = max(GRID_CELLS_PER_POINT * m, min(1 << 16, values.numel() // 8))
    width = span / cells
    margin = 2.0**-40 * (max(abs(lo), abs(hi)) + span)
    if not width > 4 * margin:  # points too close together for the grid to separate them
        return torch.bucketize(values, points, right=True).int()
    # cell j is [E_j, E_{j+1}) with E_j = lo + (j − 2) w; cell 0 also holds everything below E_1 and
    # the last cell everything from hi + w on.
    edges = lo + width * (torch.arange(cells + 4, dtype=COMPUTE_DTYPE, device=points.device) - 2)
    inf = edges.new_full((1,), float("inf"))
    # The code of each cell's lowest and highest possible value, #{points ≤ x}, from one search of the
    # points among the (sorted) bounds: O(#points log #cells + #cells).
    low = _count_le(points, torch.cat([-inf, edges[1:] - margin]))
    high = _count_le(points, torch.cat([edges[1:] + margin, inf]))
    # A cell holding one point p answers low + [v ≥ p]; one holding none, low (p = +inf). A cell
    # holding several (rare: they are closer than a cell) is marked and its values searched.
    several = high - low > 1
    pivot = torch.where(high > low, points[low.clamp(max=m - 1)], inf)
    base = torch.where(several, -(m + 1), low).int()
    cell = torch.sub(values, edges[0].item()).mul_(1.0 / width).floor_().clamp_(0, cells + 3).int()
    code = base.index_select(0, cell).add_(values >= pivot.index_select(0, cell))
    if bool(several.any()):
        unsure = (code < 0).nonzero().squeeze(1)
        code.index_copy_(0, unsure, torch.bucketize(values.index_select(0, unsure), points, right=True).int())
    return code


@dataclass
class Batch:
    """The flattened batch as the exact ranking losses see it (no copy of the negatives is made)."""

    logits: Tensor  # flat, detached, the logits' dtype
    pos_index: Tensor  # flat indices of positives, ascending
    pos_logits: Tensor  # float64
    pos_targets: Tensor  # float64 target values (> 0) of the positives
    ignored_index: Tensor | None  # flat indices of ignored entries (-1), None when there are none


def flatten(logits: Tensor, targets: Tensor, name: str) -> Batch:
    """Validate and flatten; the positives are gathered, the negatives stay where they are."""
    has_ignored = check_inputs(logits, targets, name)
    s = logits.detach().reshape(-1)
    t = targets.detach().reshape(-1)
    pos_index = (t > 0).nonzero().squeeze(1)
    return Batch(
        logits=s,
        pos_index=pos_index,
        pos_logits=s.index_select(0, pos_index).to(COMPUTE_DTYPE),
        pos_targets=t.index_select(0, pos_index).to(COMPUTE_DTYPE),
        ignored_index=(t < 0).nonzero().squeeze(1) if has_ignored else None,
    )


def _bincount(codes: Tensor, weights: Tensor | None, size: int) -> Tensor:
    """Per-code counts (or sums of float64 ``weights``), float64; no host synchronisation on a GPU."""
    if codes.is_cuda:
        src = torch.ones_like(codes, dtype=COMPUTE_DTYPE) if weights is None else weights
        return torch.zeros(size, dtype=COMPUTE_DTYPE, device=codes.device).index_add_(0, codes, src)
    return torch.bincount(codes, weights=weights, minlength=size).to(COMPUTE_DTYPE)


class NegativeIndex:
    """The negatives bucketed once against the positives' breakpoints ``s_i − δ`` and ``s_i + δ``.

    Every entry of the flattened batch gets its code ``#{breakpoints ≤ s_j}`` (:func:`bucket_codes`,
    in place: the negatives are never gathered); the positives' and ignored entries' contributions
    are then taken out of the per-code counts and sums. Code 0 is below every breakpoint: exactly the
    negatives with ``s_j < min_i s_i − δ``, which count nowhere and get exactly zero.

    ``false_positives()`` returns ``N_FP(i) = Σ_{j∈N} H(s_j − s_i)`` for every positive and
    ``scatter(w)`` the coefficients ``(A_b, B_b)`` with ``Σ_i w_i H(s_j − s_i) = A_b + B_b s_j`` for a
    negative of code ``b``; :meth:`gradient` applies them to every entry. All exact (float64 sums),
    O(N log P) at worst and O(N) passes on a CPU.
    """

    def __init__(self, batch: Batch, delta: float):
        self.delta = delta
        self.batch = batch
        pos = batch.pos_logits
        p = pos.numel()
        points = pos if delta == 0 else torch.cat([pos - delta, pos + delta])
        self.points, order = torch.sort(points)
        # rank[k] = position of breakpoint k (in the unsorted layout) in the sorted array.
        self.rank = torch.empty_like(order)
        self.rank[order] = torch.arange(order.numel(), device=order.device)
        self.num_points = self.points.numel()
        self._p = p
        s64 = batch.logits.to(COMPUTE_DTYPE)
        self.code = bucket_codes(s64, self.points)
        size = self.num_points + 1
        counts = _bincount(self.code, None, size)
        sums = _bincount(self.code, s64, size)
        excluded = batch.pos_index if batch.ignored_index is None else torch.cat([batch.pos_index, batch.ignored_index])
        ex_code = self.code.index_select(0, excluded)
        counts -= _bincount(ex_code, None, size)
        sums -= _bincount(ex_code, s64.index_select(0, excluded), size)
        counts[0] = 0.0  # irrelevant negatives: below every breakpoint
        sums[0] = 0.0
        self.count_le = counts.cumsum(0)  # count_le[k]: relevant negatives with code <= k, i.e. s_j < points[k]
        self.sum_le = sums.cumsum(0)

    def false_positives(self) -> Tensor:
        """``N_FP(i) = Σ_{j∈N} H(s_j − s_i)`` for every positive ``i`` (float64, shape [P])."""
        n = self.count_le[-1]
        if self.delta == 0:
            return n - self.count_le[self.rank]  # negatives with s_j >= s_i
        p = self._p
        lo, hi = self.rank[:p], self.rank[p:]
        n_lo, n_hi = self.count_le[lo], self.count_le[hi]  # counts with s_j < s_i − δ and s_j < s_i + δ
        inside = n_hi - n_lo
        inside_sum = self.sum_le[hi] - self.sum_le[lo]
        linear = (inside_sum - inside * self.batch.pos_logits) / (2 * self.delta) + 0.5 * inside
        return (n - n_hi) + linear

    def scatter(self, weights: Tensor) -> Tensor:
        """``[A_b, B_b]`` per code (``[#points + 1, 2]``, float64): ``Σ_i w_i H(s_j − s_i) = A_b + B_b s_j``."""
        w = weights.to(COMPUTE_DTYPE)
        n_pts = self.num_points
        jump = torch.zeros((n_pts, 2), dtype=COMPUTE_DTYPE, device=w.device)
        if self.delta == 0:
            # A negative with code b has s_j >= exactly the b smallest breakpoints.
            jump[self.rank, 0] = w
        else:
            p = self._p
            two_d = 2 * self.delta
            # Crossing s_i − δ switches positive i's term on as w_i (s − s_i)/(2δ) + w_i/2; crossing
            # s_i + δ replaces it by the constant w_i.
            a_on = w * (0.5 - self.batch.pos_logits / two_d)
            b_on = w / two_d
            jump[self.rank[:p], 0] = a_on
            jump[self.rank[:p], 1] = b_on
            jump[self.rank[p:], 0] = w - a_on
            jump[self.rank[p:], 1] = -b_on
        return torch.cat([jump.new_zeros(1, 2), jump.cumsum(0)])

    def gradient(self, coef: Tensor, dtype: torch.dtype) -> Tensor:
        """``A_b + B_b s_j`` for every entry (``[N]`` in ``dtype``), zero where ignored. The positives'
        entries hold nothing meaningful: the caller overwrites them."""
        s = self.batch.logits.to(dtype)
        table = coef.to(dtype)
        g = table[:, 0].index_select(0, self.code)
        if self.delta != 0:
            g = torch.addcmul(g, table[:, 1].index_select(0, self.code), s)
        if self.batch.ignored_index is not None:
            g.index_fill_(0, self.batch.ignored_index, 0.0)
        return g


class _Update:
    """What :class:`IdentityUpdate` hands back: per output, the positives' update and the negatives'.

    A negatives' part is ``("coef", NegativeIndex, [A_b, B_b])`` (applied to every entry in the
    backward pass, never stored per negative) or ``("compact", neg_index, values)``.
    """

    def __init__(self, shape, dtype, pos_index: Tensor, parts: list):
        self.shape, self.dtype, self.pos_index, self.parts = shape, dtype, pos_index, parts

    def __call__(self, grad_outputs) -> Tensor:
        pos_total, coef_total, compact_total = None, None, None
        index = compact_index = None
        for go, (pos_part, neg_part) in zip(grad_outputs, self.parts):
            if go is None:
                continue
            go = go.to(COMPUTE_DTYPE)
            pos_total = pos_part * go if pos_total is None else pos_total + pos_part * go
            if neg_part is None:
                continue
            kind, where, values = neg_part
            if kind == "coef":
                index = where
                coef_total = values * go if coef_total is None else coef_total + values * go
            else:
                compact_index = where
                compact_total = values * go if compact_total is None else compact_total + values * go
        # float32 for float32 (and half) logits, float64 for float64 ones
        dtype = torch.promote_types(self.dtype, torch.float32)
        device = self.pos_index.device
        n = math.prod(self.shape)
        if coef_total is not None:
            grad = index.gradient(coef_total, dtype)
        else:
            grad = torch.zeros(n, dtype=dtype, device=device)
        if compact_total is not None:
            grad.index_copy_(0, compact_index, compact_total.to(dtype))
        if pos_total is not None:
            grad.index_copy_(0, self.pos_index, pos_total.to(dtype))
        return grad.to(self.dtype).reshape(self.shape)


class IdentityUpdate(torch.autograd.Function):
    """Returns precomputed loss values; hands back precomputed updates as the logits' gradient.

    ``forward(logits, values, update)``: ``values`` holds K loss values and ``update`` (an
    :class:`_Update`) K pairs (positives' update, negatives' update). Output k's incoming gradient
    scales update k, so a weighted sum of the outputs backpropagates the same weighted sum of the
    updates. Entries that are neither (ignored, irrelevant negatives) get exactly zero.
    """

    @staticmethod
    def forward(ctx, logits, values, update):
        ctx.update = update
        ctx.save_for_backward(logits)  # the backward pass reads the logits: autograd guards them
        return tuple(v.clone() for v in values.unbind(0))

    @staticmethod
    def backward(ctx, *grad_outputs):
        ctx.saved_tensors  # raises if the logits were modified in place since the forward pass
        return ctx.update(grad_outputs), None, None


def identity_outputs(
    logits: Tensor,
    pos_index: Tensor,
    values: list[Tensor],
    updates: list[tuple[Tensor, tuple | None]],
) -> tuple[Tensor, ...]:
    """Loss values (in float32 or better) whose backward hands ``updates`` to ``logits``.

    ``updates[k] = (pos_update, neg_part)`` for ``values[k]``: the float64 update of the positives at
    ``pos_index`` and ``None``, ``("coef", NegativeIndex, coefficients)`` or ``("compact", neg_index,
    values)`` for the negatives (see :class:`_Update`).
    """
    out_dtype = torch.promote_types(logits.dtype, torch.float32)
    vals = torch.stack([v.to(COMPUTE_DTYPE) for v in values]).to(out_dtype)
    if not logits.requires_grad:
        return tuple(vals.unbind(0))
    return IdentityUpdate.apply(logits, vals, _Update(logits.shape, logits.dtype, pos_index, updates))


def zero_outputs(logits: Tensor, k: int) -> tuple[Tensor, ...]:
    """K zero losses attached to ``logits`` with an exactly zero gradient (no positives)."""
    out_dtype = torch.promote_types(logits.dtype, torch.float32)
    vals = [torch.zeros((), dtype=out_dtype, device=logits.device) for _ in range(k)]
    empty = torch.zeros(0, dtype=torch.long, device=logits.device)
    nothing = torch.zeros(0, dtype=COMPUTE_DTYPE, device=logits.device)
    return identity_outputs(logits, empty, vals, [(nothing, None)] * k)
