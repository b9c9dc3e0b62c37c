"""Shared, exact machinery of the ranking-based losses (RS, aLRP, AP).

Everything here is pure torch and device-agnostic. The losses are defined per positive ``i`` over the
smoothed step ``H(x) = clamp(x / (2δ) + 0.5, 0, 1)`` of ``x_ij = s_j − s_i`` (``H(x) = [x ≥ 0]`` when
``δ = 0``); see ``../shared/reference/ranking-losses.md`` or the docstrings of the loss modules.

Two sums over the negatives carry the cost, and both are exact without an N × P tensor because H is
piecewise linear in ``s_i``:

* ``N_FP(i) = Σ_{j∈N} H(s_j − s_i)`` for every positive (:meth:`NegativeIndex.false_positives`), and
* ``g_j = Σ_{i∈P} w_i · H(s_j − s_i)`` for every negative (:meth:`NegativeIndex.scatter`), the update
  handed back to the negatives.

The 2P breakpoints ``s_i ± δ`` cut the logit axis into 2P + 1 intervals. One ``bucketize`` puts each
negative into its interval (O(N log P)); per-interval counts and sums followed by prefix sums give
``N_FP``; per-breakpoint coefficient jumps followed by prefix sums give, for every interval b, an affine
function ``A_b + B_b · s`` that is the negatives' update there, gathered in O(N).

Positive-versus-positive terms are P × P; :func:`pairwise_blocks` yields them in row blocks so memory
stays bounded for large P. All accumulation happens in float64 (``COMPUTE_DTYPE``), whatever the dtype
of the logits.
"""

from __future__ import annotations

from dataclasses import dataclass
import torch
from torch import Tensor

COMPUTE_DTYPE = torch.float64
IGNORE = -1.0


def validate(logits: Tensor, targets: Tensor, name: str) -> None:
    """Reject inputs the losses cannot rank: shape mismatches, non-finite logits, bad targets."""
    if not isinstance(logits, Tensor) or not isinstance(targets, Tensor):
        raise TypeError(f"{name}: logits and targets must be tensors")
    if logits.shape != targets.shape:
        raise ValueError(
            f"{name}: logits and targets must have the same shape, got {tuple(logits.shape)} and "
            f"{tuple(targets.shape)}"
        )
    if not logits.is_floating_point():
        raise TypeError(f"{name}: logits must be floating point, got {logits.dtype}")
    bad = ~torch.isfinite(logits.detach())
    n_bad = int(bad.sum())
    if n_bad:
        first = int(bad.reshape(-1).nonzero()[0])
        raise ValueError(
            f"{name}: {n_bad} non-finite logit(s) (NaN or Inf); the first at flattened index {first}"
        )
    t = targets.detach()
    if t.numel():
        low, high = t.aminmax()  # fast path: in [-1, 1] and nothing strictly between -1 and 0
        if bool(low >= IGNORE) and bool(high <= 1) and not bool(((t < 0) & (t > IGNORE)).any()):
            return
    invalid = ~((t == 0) | (t == IGNORE) | ((t > 0) & (t <= 1)))
    n_invalid = int(invalid.sum())
    if n_invalid:
        first = int(invalid.reshape(-1).nonzero()[0])
        raise ValueError(
            f"{name}: {n_invalid} invalid target(s); targets must be 0 (negative), -1 (ignored) or in "
            f"(0, 1] (positive); the first at flattened index {first} is {float(t.reshape(-1)[first])}"
        )


def check_delta(delta: float, name: str) -> float:
    delta = float(delta)
    if not delta >= 0 or delta == float("inf"):
        raise ValueError(f"{name}: delta must be a finite number >= 0, got {delta}")
    return delta


@dataclass
class Split:
    """The flattened batch split into positives and relevant negatives (ignored entries dropped)."""

    pos_index: Tensor  # flat indices of positives, ascending
    neg_index: Tensor  # flat indices of the relevant negatives, ascending
    pos_logits: Tensor  # float64
    neg_logits: Tensor  # float64
    pos_targets: Tensor  # float64 target values (> 0) of the positives
    neg_logits32: Tensor  # the relevant negatives' logits in float32 (for fast bucketing)


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
        if floor_native > floor:  # rounded up when cast: step one ulp down so no relevant one is lost
            floor_native = torch.nextafter(floor_native, floor_native.new_tensor(float("-inf")))
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
        neg_logits32=neg.float(),
    )


def step(x: Tensor, delta: float) -> Tensor:
    """The smoothed step H(x); the hard step [x >= 0] when delta == 0."""
    if delta == 0:
        return (x >= 0).to(x.dtype)
    return (x / (2 * delta) + 0.5).clamp_(0.0, 1.0)


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

    def __init__(self, u: Tensor, v: Tensor, m: int):
        seq = torch.empty_like(v)
        seq[u] = v
        self.u = u
        self.levels: list[tuple[int, Tensor, Tensor, Tensor]] = []
        ar = torch.arange(m, device=v.device)
        for bit_no in reversed(range(max(1, m.bit_length()))):
            bit = (seq >> bit_no) & 1
            rank0 = torch.zeros(m + 1, dtype=torch.long, device=v.device)
            rank0[1:] = torch.cumsum(1 - bit, 0)  # rank0[k]: points with a 0 among the first k
            zeros = rank0[m]
            pos = torch.where(bit.bool(), zeros + ar - rank0[:-1], rank0[:-1])  # stable partition
            nxt = torch.empty_like(seq)
            nxt[pos] = seq
            self.levels.append((bit_no, rank0, zeros, pos))
            seq = nxt

    def prefix_sums(self, weights: Tensor) -> list[Tensor]:
        """Per level, the prefix sums of ``weights`` (``[M, K]``, by point) in that level's output order."""
        w = torch.empty_like(weights)
        w[self.u] = weights
        out = []
        for _, _, _, pos in self.levels:
            nw = torch.empty_like(w)
            nw[pos] = w
            cum = torch.zeros((w.shape[0] + 1, w.shape[1]), dtype=w.dtype, device=w.device)
            torch.cumsum(nw, 0, out=cum[1:])
            out.append(cum)
            w = nw
        return out

    def query(self, sums: list[Tensor], c: Tensor, lim: Tensor) -> Tensor:
        """``Σ_{j: u_j < c, v_j < lim} w_j`` for each pair, ``sums`` from :meth:`prefix_sums`."""
        lo = torch.zeros_like(c)
        hi = c
        acc = None
        for (bit_no, rank0, zeros, _), cum in zip(self.levels, sums):
            r_lo, r_hi = rank0[lo], rank0[hi]
            one = ((lim >> bit_no) & 1).bool()
            part = torch.where(one[:, None], cum[r_hi] - cum[r_lo], 0.0)
            acc = part if acc is None else acc + part
            lo = torch.where(one, zeros + lo - r_lo, r_lo)
            hi = torch.where(one, zeros + hi - r_hi, r_hi)
        return acc


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
    :class:`_WaveletMatrix`. Everything is float64.
    """

    def __init__(self, pos_logits: Tensor, delta: float, quality: Tensor | None = None):
        self.delta = delta
        self.s = pos_logits
        m = pos_logits.numel()
        self.m = m
        s_sorted, order = torch.sort(pos_logits, stable=True)
        self.order = order
        self.s_sorted = s_sorted
        if delta == 0:
            self.cut_lt = torch.searchsorted(s_sorted, pos_logits)  # #{s_j < s_i}
            self.cut_le = torch.searchsorted(s_sorted, pos_logits, right=True)  # #{s_j <= s_i}
        else:
            self.cut_lo = torch.searchsorted(s_sorted, pos_logits - delta)  # #{s_j < s_i − δ}
            self.cut_hi = torch.searchsorted(s_sorted, pos_logits + delta)  # #{s_j < s_i + δ}
        self.wavelet = None
        if quality is not None:
            u = torch.empty_like(order)
            u[order] = torch.arange(m, device=order.device)
            y_sorted, y_order = torch.sort(quality, stable=True)
            v = torch.empty_like(y_order)
            v[y_order] = m - 1 - torch.arange(m, device=order.device)  # position by quality, descending
            self.lim_ge = m - torch.searchsorted(y_sorted, quality)  # #{y_j >= y_i}
            self.lim_gt = m - torch.searchsorted(y_sorted, quality, right=True)  # #{y_j > y_i}
            self.wavelet = _WaveletMatrix(u, v, m)

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
        sums = self.wavelet.prefix_sums(cols)
        total = self.wavelet.query(sums, torch.full_like(lim, self.m), lim)
        return self._window(lambda cut: self.wavelet.query(sums, cut, lim), total, upper)

    def above(self, weights: Tensor) -> Tensor:
        """``Σ_{j∈P} w_j H(s_j − s_i)`` for every positive (``[P, K]`` for ``[P, K]`` weights)."""
        return self._sums_1d(weights, upper=True)

    def above_at_least(self, weights: Tensor) -> Tensor:
        """``Σ_{j∈P: y_j ≥ y_i} w_j H(s_j − s_i)`` for every positive."""
        return self._sums_2d(weights, self.lim_ge, upper=True)

    def below_better(self, weights: Tensor) -> Tensor:
        """``Σ_{j∈P: y_j > y_i} w_j H(s_i − s_j)`` for every positive."""
        return self._sums_2d(weights, self.lim_gt, upper=False)

    @property
    def self_step(self) -> float:
        """``H(0)``: what each positive adds to its own sums."""
        return 1.0 if self.delta == 0 else 0.5


# Cells of the lookup grid per breakpoint in bucket_right (more cells: fewer values need a search).
GRID_CELLS_PER_POINT = 32


def bucket_right(values: Tensor, values32: Tensor, points: Tensor) -> Tensor:
    """``torch.bucketize(values, points, right=True)`` (the number of points ≤ each value), exactly,
    for sorted float64 ``points``; ``values32`` is ``values`` in float32.

    A binary search per value is the cost of the ranking losses at large N, so a uniform grid of at
    least ``GRID_CELLS_PER_POINT × #points`` cells over ``[points[0], points[-1]]`` answers first: a value's cell
    comes from one float32 multiply, and a table gives the bucket of every cell that holds no point
    within a safety margin (which covers float32 rounding of the cell index many times over). Only
    values in the remaining cells are searched exactly, so the result is identical to bucketize.
    """
    m = points.numel()
    if m < 2 or values.numel() < 16 * m:
        return torch.bucketize(values, points, right=True)
    lo, hi = float(points[0]), float(points[-1])
    span = hi - lo
    cells = max(GRID_CELLS_PER_POINT * m, min(1 << 16, values.numel() // 8))
    width = span / cells
    margin = 2.0**-20 * (max(abs(lo), abs(hi)) + span)
    if not width > 4 * margin:  # points too close together for the grid to separate them
        return torch.bucketize(values, points, right=True)
    edges = lo + width * torch.arange(cells + 2, dtype=points.dtype, device=points.device)
    # cell k is [edges[k], edges[k + 1]); cell cells + 1 (and anything clamped into it) lies above hi.
    sure = torch.bucketize(edges - margin, points, right=True)  # bucket of anything ≥ edges[k] − margin
    upper = torch.bucketize(edges + margin, points, right=True)[1:]
    upper = torch.cat([upper, upper.new_full((1,), m)])  # bucket of anything < edges[k + 1] + margin
    cell = ((values32 - lo) / width).floor_().clamp_(0, cells + 1).long()
    out = sure.index_select(0, cell)
    unsure = (upper.index_select(0, cell) != out).nonzero().squeeze(1)
    if unsure.numel():
        out.index_copy_(0, unsure, torch.bucketize(values.index_select(0, unsure), points, right=True))
    return out


class NegativeIndex:
    """The negatives bucketed once against the positives' breakpoints ``s_i − δ`` and ``s_i + δ``.

    ``false_positives()`` returns ``N_FP(i) = Σ_j H(s_j − s_i)`` for every positive and ``scatter(w)``
    returns ``Σ_i w_i H(s_j − s_i)`` for every negative; both exact (float64), O(N log P + P log P).
    """

    def __init__(self, pos_logits: Tensor, neg_logits: Tensor, delta: float, neg_logits32: Tensor | None = None):
        self.delta = delta
        self.pos = pos_logits
        self.neg = neg_logits
        p = pos_logits.numel()
        if delta == 0:
            # One breakpoint per positive: H(s_j − s_i) = [s_j >= s_i].
            points = pos_logits
        else:
            points = torch.cat([pos_logits - delta, pos_logits + delta])
        self.points, order = torch.sort(points)
        # rank[k] = position of breakpoint k (in the unsorted layout) in the sorted array.
        self.rank = torch.empty_like(order)
        self.rank[order] = torch.arange(order.numel(), device=order.device)
        # bucket_j = number of breakpoints <= s_j, in [0, #points].
        if neg_logits32 is None:
            neg_logits32 = neg_logits.float()
        self.bucket = bucket_right(neg_logits, neg_logits32, self.points)
        self.num_points = self.points.numel()
        self._p = p

    def _prefix(self, values: Tensor | None) -> Tensor:
        """Prefix over buckets: out[k] = Σ of values (or counts) of negatives with bucket <= k."""
        n_buckets = self.num_points + 1
        per_bucket = torch.bincount(self.bucket, weights=values, minlength=n_buckets)
        return per_bucket.to(COMPUTE_DTYPE).cumsum(0)

    def false_positives(self) -> Tensor:
        """``N_FP(i) = Σ_{j∈N} H(s_j − s_i)`` for every positive ``i`` (float64, shape [P])."""
        n = self.neg.numel()
        count_le = self._prefix(None)  # count_le[k]: negatives with bucket <= k, i.e. s_j < points[k]
        if self.delta == 0:
            below = count_le[self.rank]  # negatives with s_j < s_i
            return n - below
        sum_le = self._prefix(self.neg)
        p = self._p
        lo, hi = self.rank[:p], self.rank[p:]
        n_lo, n_hi = count_le[lo], count_le[hi]  # counts with s_j < s_i − δ and s_j < s_i + δ
        inside = n_hi - n_lo
        inside_sum = sum_le[hi] - sum_le[lo]
        linear = (inside_sum - inside * self.pos) / (2 * self.delta) + 0.5 * inside
        return (n - n_hi) + linear

    def scatter(self, weights: Tensor) -> Tensor:
        """``g_j = Σ_{i∈P} w_i · H(s_j − s_i)`` for every negative ``j`` (float64, shape [N])."""
        w = weights.to(COMPUTE_DTYPE)
        n_pts = self.num_points
        if self.delta == 0:
            # A negative with bucket b has s_j >= exactly the b smallest breakpoints.
            jump = torch.zeros(n_pts, dtype=COMPUTE_DTYPE, device=w.device)
            jump[self.rank] = w
            const = torch.cat([jump.new_zeros(1), jump.cumsum(0)])
            return const.index_select(0, self.bucket)
        p = self._p
        two_d = 2 * self.delta
        # Crossing s_i − δ switches positive i's term on as w_i (s − s_i)/(2δ) + w_i/2; crossing s_i + δ
        # replaces it by the constant w_i.
        a_on = w * (0.5 - self.pos / two_d)
        b_on = w / two_d
        jump_a = torch.zeros(n_pts, dtype=COMPUTE_DTYPE, device=w.device)
        jump_b = torch.zeros(n_pts, dtype=COMPUTE_DTYPE, device=w.device)
        jump_a[self.rank[:p]] = a_on
        jump_b[self.rank[:p]] = b_on
        jump_a[self.rank[p:]] = w - a_on
        jump_b[self.rank[p:]] = -b_on
        jumps = torch.stack([jump_a, jump_b], 1)
        coef = torch.cat([jumps.new_zeros(1, 2), jumps.cumsum(0)]).index_select(0, self.bucket)  # A_b, B_b
        g = torch.addcmul(coef[:, 0], coef[:, 1], self.neg)
        # The affine form is exact in real arithmetic; clamp away round-off outside [0, Σ w].
        return g.clamp_(min=0.0) if bool((w >= 0).all()) else g


class IdentityUpdate(torch.autograd.Function):
    """Returns precomputed loss values; hands back precomputed updates as the logits' gradient.

    ``forward(logits, values, pos_index, neg_index, *parts)``: ``values`` holds K loss values and
    ``parts`` K pairs ``(pos_update, neg_update)`` (float64, over the positives and the relevant
    negatives; ``neg_update`` may be ``None``). Output k's incoming gradient scales update k, so a
    weighted sum of the outputs backpropagates the same weighted sum of the updates. Entries that are
    neither (ignored, irrelevant negatives) get exactly zero.
    """

    @staticmethod
    def forward(ctx, logits, values, pos_index, neg_index, *parts):
        ctx.shape, ctx.dtype = logits.shape, logits.dtype
        ctx.has_neg = [p is not None for p in parts[1::2]]
        ctx.save_for_backward(pos_index, neg_index, *[p for p in parts if p is not None])
        return tuple(v.clone() for v in values.unbind(0))

    @staticmethod
    def backward(ctx, *grad_outputs):
        pos_index, neg_index, *saved = ctx.saved_tensors
        pos_total = neg_total = None
        it = iter(saved)
        for go, has_neg in zip(grad_outputs, ctx.has_neg):
            pos_part = next(it)
            neg_part = next(it) if has_neg else None
            if go is None:
                continue
            go = go.to(COMPUTE_DTYPE)
            pos_total = pos_part * go if pos_total is None else pos_total + pos_part * go
            if neg_part is not None:
                neg_total = neg_part * go if neg_total is None else neg_total + neg_part * go
        grad = torch.zeros(ctx.shape.numel(), dtype=ctx.dtype, device=pos_index.device)
        if pos_total is not None:
            grad.index_copy_(0, pos_index, pos_total.to(ctx.dtype))
        if neg_total is not None:
            grad.index_copy_(0, neg_index, neg_total.to(ctx.dtype))
        n_parts = 2 * len(ctx.has_neg)
        return (grad.reshape(ctx.shape), None, None, None, *([None] * n_parts))


def identity_outputs(
    logits: Tensor, sp: Split, values: list[Tensor], updates: list[tuple[Tensor, Tensor | None]]
) -> tuple[Tensor, ...]:
    """Loss values (in float32 or better) whose backward hands ``updates`` to ``logits``.

    ``updates[k] = (pos_update, neg_update)`` for ``values[k]``, over ``sp``'s positives and relevant
    negatives (``neg_update`` ``None`` when the negatives get nothing).
    """
    out_dtype = torch.promote_types(logits.dtype, torch.float32)
    vals = torch.stack([v.to(COMPUTE_DTYPE) for v in values]).to(out_dtype)
    if not logits.requires_grad:
        return tuple(vals.unbind(0))
    parts = [x for pair in updates for x in pair]
    return IdentityUpdate.apply(logits, vals, sp.pos_index, sp.neg_index, *parts)


def zero_outputs(logits: Tensor, k: int) -> tuple[Tensor, ...]:
    """K zero losses attached to ``logits`` with an exactly zero gradient (no positives)."""
    out_dtype = torch.promote_types(logits.dtype, torch.float32)
    vals = [torch.zeros((), dtype=out_dtype, device=logits.device) for _ in range(k)]
    empty = torch.zeros(0, dtype=torch.long, device=logits.device)
    nothing = torch.zeros(0, dtype=COMPUTE_DTYPE, device=logits.device)
    sp = Split(empty, empty, nothing, nothing, nothing, nothing.float())
    return identity_outputs(logits, sp, vals, [(nothing, None)] * k)
