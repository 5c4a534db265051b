"""Numba kernels for the work that is not a LAPACK call, each with a NumPy fallback.

Kernels here earn their place by a measurement (``benchmarks/bench_allocation.py``):

* :func:`enumerate_counts` — the exact allocation when a partition's blocks have at most three
  costs (every ``numpy.array_split`` partition): loops over the item count and the third
  class's count with a data-dependent clamp, which NumPy can only vectorise one level deep.
* :func:`concave_knapsack_dp` — the exact allocation for any number of costs (the matrices of a
  whole model): a divide-and-conquer max-plus convolution per residue chain, sequential by
  nature; the NumPy fallback is the plain ``O(n · budget)`` convolution.
* :func:`lagrangian_core` — the Lagrange multiplier, a greedy solution and the core intervals
  that restrict the exact allocation of a whole model to a few ranks per matrix: bisection and
  walks over sorted gains, scalar loops throughout (the fallback runs the same loops in Python).

Surface assembly from singular values (column sums and a reverse cumulative sum) was measured
too: a numba version is about 4× faster on a 10–40 µs step next to seconds of SVD, not worth a
compiled kernel, so it stays NumPy.

The fallbacks are used when numba is not installed; set the environment variable
``LOWRANK_BLOCKS_DISABLE_NUMBA=1`` to force them.
"""

from __future__ import annotations

import math
import os

import numpy as np

__all__ = ["NUMBA_AVAILABLE", "concave_knapsack_dp", "enumerate_counts", "lagrangian_core",
           "unit_sums"]

_USE_NUMBA = os.environ.get("LOWRANK_BLOCKS_DISABLE_NUMBA", "") not in ("1", "true", "yes")
NUMBA_AVAILABLE = False
if _USE_NUMBA:
    try:
        import numba  # noqa: F401

        NUMBA_AVAILABLE = True
    except ImportError:  # numba is optional: the NumPy fallbacks are used
        pass


# -- exact allocation (see lowrank_blocks.allocation) -------------------------------------------


def _enumerate_bounds(costs, sizes, budget):
    c_min = costs[0]
    c_max = c_min
    for c in range(3):
        if sizes[c] > 0 and costs[c] > c_max:
            c_max = costs[c]
    n_total = sizes[0] + sizes[1] + sizes[2]
    t_hi = min(n_total, budget // c_min)
    t_lo = min(budget // c_max, n_total)
    return c_min, t_lo, t_hi


def enumerate_counts_numpy(costs, sizes, p0, p1, p2, ones_before, budgets):
    """Counts per class (three classes, sorted by cost) by enumeration over the item count.

    For every item count ``T`` a maximal solution can have and every count ``k2`` of the third
    class, the split of the remaining ``T − k2`` items between the first two classes is a
    concave function of ``k1`` whose unconstrained maximiser is ``ones_before[T − k2]``;
    clamping it to the budget gives the best ``k1``.  Ties go to the cheaper solution.
    """
    counts = np.zeros((budgets.shape[0], 3), dtype=np.int64)
    d1, d2 = int(costs[1] - costs[0]), int(costs[2] - costs[0])
    n0, n1, n2 = (int(s) for s in sizes)
    for k, budget in enumerate(budgets.tolist()):
        c_min, t_lo, t_hi = _enumerate_bounds(costs, sizes, budget)
        best_val, best_cost, best = -1.0, -1, (0, 0, 0)
        for t in range(int(t_lo), int(t_hi) + 1):
            slack = budget - int(c_min) * t
            k2 = np.arange(0, min(n2, t, slack // d2) + 1)
            tp = t - k2
            ok = tp <= n0 + n1
            k2, tp = k2[ok], tp[ok]
            if not len(k2):
                continue
            lo = np.maximum(0, tp - n0)
            hi = np.minimum(np.minimum(n1, tp), (slack - d2 * k2) // d1)
            ok = lo <= hi
            k2, tp, lo, hi = k2[ok], tp[ok], lo[ok], hi[ok]
            if not len(k2):
                continue
            k1 = np.minimum(np.maximum(ones_before[tp], lo), hi)
            val = p0[tp - k1] + p1[k1] + p2[k2]
            cost = int(c_min) * t + d1 * k1 + d2 * k2
            top = val.max()
            cand = np.flatnonzero(val == top)
            i = cand[np.argmin(cost[cand])]
            if top > best_val or (top == best_val and cost[i] < best_cost):
                best_val, best_cost = float(top), int(cost[i])
                best = (int(tp[i] - k1[i]), int(k1[i]), int(k2[i]))
        counts[k] = best
    return counts


def concave_knapsack_dp_numpy(steps, prefixes, size):
    """Best count per class for every budget ``0 .. size − 1`` (in units of the costs' gcd).

    ``dp_c(b) = max_k dp_{c−1}(b − k step_c) + F_c(k)``, the table starting at zero for every
    budget (spending less than the budget is allowed).  Returns ``choice[c, b]``, the count of
    class ``c`` in an optimal solution of the first ``c + 1`` classes at budget ``b``, the
    smallest such count on ties.  This fallback is ``O(n_c · size)`` per class.
    """
    n_classes = len(steps)
    dp = np.zeros(size)
    choice = np.zeros((n_classes, size), dtype=np.int32)
    for c in range(n_classes):
        step, F = int(steps[c]), prefixes[c]
        new = dp.copy()  # k = 0
        ch = choice[c]
        for k in range(1, len(F)):
            shift = k * step
            if shift >= size:
                break
            cand = dp[: size - shift] + F[k]
            better = cand > new[shift:]
            new[shift:][better] = cand[better]
            ch[shift:][better] = k
        dp = new
    return choice


enumerate_counts_numba = None
concave_knapsack_dp_numba = None
if NUMBA_AVAILABLE:
    try:
        import numba

        def _jit(func):
            """``numba.njit`` with the on-disk cache where numba finds a writable folder for it,
            without it otherwise (a read-only package directory and an unwritable ``$HOME``: numba
            then refuses ``cache=True`` at decoration, which would break every import)."""
            try:
                return numba.njit(cache=True, nogil=True)(func)
            except (RuntimeError, OSError):  # "cannot cache function ...: no locator available"
                return numba.njit(cache=False, nogil=True)(func)

        @_jit
        def enumerate_counts_numba(costs, sizes, p0, p1, p2, ones_before, budgets):  # pragma: no cover
            counts = np.zeros((budgets.shape[0], 3), dtype=np.int64)
            d1 = costs[1] - costs[0]
            d2 = costs[2] - costs[0]
            n0, n1, n2 = sizes[0], sizes[1], sizes[2]
            for k in range(budgets.shape[0]):
                budget = budgets[k]
                c_min = costs[0]
                c_max = c_min
                for c in range(3):
                    if sizes[c] > 0 and costs[c] > c_max:
                        c_max = costs[c]
                n_total = n0 + n1 + n2
                t_hi = min(n_total, budget // c_min)
                t_lo = min(budget // c_max, n_total)
                best_val = -1.0
                best_cost = -1
                b0 = 0
                b1 = 0
                b2 = 0
                for t in range(t_lo, t_hi + 1):
                    slack = budget - c_min * t
                    k2_max = min(n2, t, slack // d2)
                    for k2 in range(0, k2_max + 1):
                        tp = t - k2
                        if tp > n0 + n1:
                            continue
                        lo = max(0, tp - n0)
                        hi = min(min(n1, tp), (slack - d2 * k2) // d1)
                        if lo > hi:
                            continue
                        k1 = min(max(ones_before[tp], lo), hi)
                        val = p0[tp - k1] + p1[k1] + p2[k2]
                        cost = c_min * t + d1 * k1 + d2 * k2
                        if val > best_val or (val == best_val and cost < best_cost):
                            best_val = val
                            best_cost = cost
                            b0 = tp - k1
                            b1 = k1
                            b2 = k2
                counts[k, 0] = b0
                counts[k, 1] = b1
                counts[k, 2] = b2
            return counts

        @_jit
        def _dp_numba(steps, flat, offsets, size):  # pragma: no cover - compiled
            n_classes = steps.shape[0]
            dp = np.zeros(size)
            new = np.zeros(size)
            choice = np.zeros((n_classes, size), dtype=np.int32)
            stack = np.empty((256, 4), dtype=np.int64)
            for c in range(n_classes):
                F = flat[offsets[c] : offsets[c + 1]]
                n = F.shape[0] - 1
                step = steps[c]
                for r in range(min(step, size)):
                    length = (size - 1 - r) // step + 1
                    top = 0
                    stack[0, 0] = 0
                    stack[0, 1] = length - 1
                    stack[0, 2] = 0
                    stack[0, 3] = length - 1
                    top = 1
                    while top > 0:
                        top -= 1
                        t_lo = stack[top, 0]
                        t_hi = stack[top, 1]
                        s_lo = stack[top, 2]
                        s_hi = stack[top, 3]
                        if t_lo > t_hi:
                            continue
                        tm = (t_lo + t_hi) // 2
                        a = max(s_lo, tm - n)
                        b = min(s_hi, tm)
                        best = -1.0
                        bs = a
                        for s in range(a, b + 1):
                            v = dp[r + s * step] + F[tm - s]
                            if v >= best:  # the largest s: the fewest items of this class
                                best = v
                                bs = s
                        new[r + tm * step] = best
                        choice[c, r + tm * step] = tm - bs
                        stack[top, 0] = t_lo
                        stack[top, 1] = tm - 1
                        stack[top, 2] = s_lo
                        stack[top, 3] = bs
                        stack[top + 1, 0] = tm + 1
                        stack[top + 1, 1] = t_hi
                        stack[top + 1, 2] = bs
                        stack[top + 1, 3] = s_hi
                        top += 2
                tmp = dp
                dp = new
                new = tmp
            return choice

        def concave_knapsack_dp_numba(steps, prefixes, size):
            offsets = np.zeros(len(prefixes) + 1, dtype=np.int64)
            offsets[1:] = np.cumsum([len(p) for p in prefixes])
            flat = np.concatenate(prefixes).astype(np.float64)
            return _dp_numba(np.asarray(steps, dtype=np.int64), flat, offsets, size)

    except ImportError:  # numba is optional
        pass


def enumerate_counts(costs, sizes, p0, p1, p2, ones_before, budgets):
    """:func:`enumerate_counts_numpy`, compiled by numba when available."""
    args = (
        np.ascontiguousarray(costs, dtype=np.int64),
        np.ascontiguousarray(sizes, dtype=np.int64),
        np.ascontiguousarray(p0, dtype=np.float64),
        np.ascontiguousarray(p1, dtype=np.float64),
        np.ascontiguousarray(p2, dtype=np.float64),
        np.ascontiguousarray(ones_before, dtype=np.int64),
        np.ascontiguousarray(budgets, dtype=np.int64),
    )
    if enumerate_counts_numba is not None:
        return enumerate_counts_numba(*args)
    return enumerate_counts_numpy(*args)


def concave_knapsack_dp(steps, prefixes, size):
    """:func:`concave_knapsack_dp_numpy`, by divide and conquer in numba when available.

    The numba kernel uses that each class's prefix sums are concave: along every residue chain
    modulo the class's step, the best previous budget is monotone in the budget, so each chain
    is solved by divide and conquer in ``O(L log L)`` instead of ``O(L n_c)``.
    """
    if concave_knapsack_dp_numba is not None:
        return concave_knapsack_dp_numba(steps, prefixes, size)
    return concave_knapsack_dp_numpy(steps, prefixes, size)


# -- the Lagrangian core of the allocation (see lowrank_blocks.allocation) -----------------------


def _count_above(flat, off, length, cost, threshold):
    """How many of a unit's descending gains ``flat[off : off + length]`` have
    ``gain / cost > threshold`` (binary search)."""
    a = 0
    b = length
    while a < b:
        m = (a + b) // 2
        if flat[off + m] / cost > threshold:
            a = m + 1
        else:
            b = m
    return a


def lagrangian_core_python(costs, flat, offsets, lengths, budgets, rel_margin):
    """Lagrange multiplier, a greedy solution and the core intervals of every unit, per budget.

    Unit ``u`` holds the descending positive gains ``flat[offsets[u] : offsets[u] + lengths[u]]``
    at ``costs[u]`` each.  For every budget ``B`` (below the cost of all items):

    1. ``lam``: the multiplier of the LP relaxation, by bisection on a log scale, ending on a
       ``lam`` where the items with ``gain / cost > lam`` (``kbar[u]`` per unit) fit ``B`` (the
       ratios, computed one way throughout, so that the largest one is a start that fits);
    2. ``fill``: ``kbar`` completed greedily (largest ``gain / cost`` first, skipping what no
       longer fits), a feasible solution; ``gap = lam · (B − cost(kbar)) − (gains filled)`` is
       the Lagrangian bound ``lam B + Σ_u max_r φ_u(r)`` minus its value, with
       ``φ_u(r) = G_u(r) − lam cost_u r``;
    3. ``lo[u] .. hi[u]``: the ranks whose deficit ``max φ_u − φ_u(r)`` stays within
       ``gap`` plus a rounding margin (``rel_margin`` times the magnitudes summed): every
       optimal solution lies in these intervals (:mod:`lowrank_blocks.allocation`).

    Budgets at or above the cost of all items get ``lo = hi = fill = lengths``.  Returns
    ``lo, hi, fill`` (int64, shape ``(n_budgets, n_units)``), ``lam`` and ``gap`` (float64,
    shape ``(n_budgets,)``).  Plain loops: compiled by numba where available, and run as they are
    (slowly) otherwise.
    """
    n_u = costs.shape[0]
    n_b = budgets.shape[0]
    lo = np.zeros((n_b, n_u), dtype=np.int64)
    hi = np.zeros((n_b, n_u), dtype=np.int64)
    fill = np.zeros((n_b, n_u), dtype=np.int64)
    lam_out = np.zeros(n_b)
    gap_out = np.zeros(n_b)
    full = 0
    widest = 0  # the largest cost of one unit's items
    r_max = 0.0
    r_min = np.inf
    for u in range(n_u):
        n = lengths[u]
        if n > 0:
            full += costs[u] * n
            widest = max(widest, costs[u] * n)
            r_max = max(r_max, flat[offsets[u]] / costs[u])
            r_min = min(r_min, flat[offsets[u] + n - 1] / costs[u])
    lc = np.zeros(n_u)
    kbar = np.zeros(n_u, dtype=np.int64)
    for k in range(n_b):
        budget = budgets[k]
        if budget >= full:
            for u in range(n_u):
                lo[k, u] = lengths[u]
                hi[k, u] = lengths[u]
                fill[k, u] = lengths[u]
            continue
        # Bisection: the items above lam_hi fit the budget, those above lam_lo do not.
        lam_lo = 0.5 * r_min
        lam_hi = r_max
        for _ in range(4096):
            if lam_lo > 0.0:
                mid = math.sqrt(lam_lo) * math.sqrt(lam_hi)
            else:
                mid = 0.5 * lam_hi
            if not (lam_lo < mid < lam_hi):
                break
            spent = 0
            for u in range(n_u):
                spent += costs[u] * _count_above(flat, offsets[u], lengths[u], costs[u], mid)
                if spent > budget:
                    break
            if spent <= budget:
                lam_hi = mid
            else:
                lam_lo = mid
        lam = lam_hi
        rest = budget
        for u in range(n_u):
            lc[u] = lam * costs[u]
            a = _count_above(flat, offsets[u], lengths[u], costs[u], lam)
            kbar[u] = a
            fill[k, u] = a
            rest -= costs[u] * a
        r0 = rest
        # Greedy completion: the best gain per parameter that still fits, until none does.
        filled = 0.0
        while True:
            best = -1
            best_ratio = -1.0
            for u in range(n_u):
                f = fill[k, u]
                if f < lengths[u] and costs[u] <= rest:
                    ratio = flat[offsets[u] + f] / costs[u]
                    if ratio > best_ratio:
                        best_ratio = ratio
                        best = u
            if best < 0:
                break
            filled += flat[offsets[best] + fill[k, best]]
            fill[k, best] += 1
            rest -= costs[best]
        gap = lam * r0 - filled
        if gap < 0.0:
            gap = 0.0
        slack = gap + rel_margin * (lam * (budget + widest) + filled + gap)
        # Core intervals: walk down and up from kbar while the deficit stays within the slack.
        for u in range(n_u):
            off = offsets[u]
            kb = kbar[u]
            d = 0.0
            j = kb
            while j > 0:
                t = flat[off + j - 1] - lc[u]
                if d + t > slack:
                    break
                d += t
                j -= 1
            lo[k, u] = j
            d = 0.0
            j = kb
            while j < lengths[u]:
                t = lc[u] - flat[off + j]
                if d + t > slack:
                    break
                d += t
                j += 1
            hi[k, u] = j
        lam_out[k] = lam
        gap_out[k] = gap
    return lo, hi, fill, lam_out, gap_out


lagrangian_core_numba = None
if NUMBA_AVAILABLE and concave_knapsack_dp_numba is not None:
    # compiled first: the compiled kernel calls it (numba resolves globals when it compiles)
    _count_above = _jit(_count_above)
    lagrangian_core_numba = _jit(lagrangian_core_python)


def lagrangian_core(costs, flat, offsets, lengths, budgets, rel_margin=1e-9):
    """:func:`lagrangian_core_python`, compiled by numba when available."""
    args = (
        np.ascontiguousarray(costs, dtype=np.int64),
        np.ascontiguousarray(flat, dtype=np.float64),
        np.ascontiguousarray(offsets, dtype=np.int64),
        np.ascontiguousarray(lengths, dtype=np.int64),
        np.ascontiguousarray(budgets, dtype=np.int64),
        float(rel_margin),
    )
    if lagrangian_core_numba is not None:
        return lagrangian_core_numba(*args)
    return lagrangian_core_python(*args)


def unit_sums_numpy(flat, offsets, ranks):
    """Gain taken and gain left at every row of ``ranks``: unit ``u`` takes the first
    ``ranks[k, u]`` of ``flat[offsets[u] : offsets[u + 1]]``.  Sums per unit, then over the
    units, of non-negative terms only (no subtraction: accurate however small the result)."""
    n_b, n_units = ranks.shape
    lens = np.diff(offsets)
    unit = np.repeat(np.arange(n_units), lens)
    pos = np.arange(flat.shape[0]) - offsets[unit]
    gain = np.zeros(n_b)
    left = np.zeros(n_b)
    for k in range(n_b):
        taken = pos < ranks[k][unit]
        gain[k] = np.bincount(unit, weights=np.where(taken, flat, 0.0), minlength=n_units).sum()
        left[k] = np.bincount(unit, weights=np.where(taken, 0.0, flat), minlength=n_units).sum()
    return gain, left


unit_sums_numba = None
if NUMBA_AVAILABLE and concave_knapsack_dp_numba is not None:

    @_jit
    def unit_sums_numba(flat, offsets, ranks):  # pragma: no cover - compiled
        n_b, n_units = ranks.shape
        gain = np.zeros(n_b)
        left = np.zeros(n_b)
        for k in range(n_b):
            g_total = 0.0
            l_total = 0.0
            for u in range(n_units):
                cut = offsets[u] + ranks[k, u]
                g = 0.0
                for i in range(offsets[u], cut):
                    g += flat[i]
                rest = 0.0
                for i in range(cut, offsets[u + 1]):
                    rest += flat[i]
                g_total += g
                l_total += rest
            gain[k] = g_total
            left[k] = l_total
        return gain, left


def unit_sums(flat, offsets, ranks):
    """:func:`unit_sums_numpy`, compiled by numba when available."""
    args = (
        np.ascontiguousarray(flat, dtype=np.float64),
        np.ascontiguousarray(offsets, dtype=np.int64),
        np.ascontiguousarray(ranks, dtype=np.int64),
    )
    if unit_sums_numba is not None:
        return unit_sums_numba(*args)
    return unit_sums_numpy(*args)
