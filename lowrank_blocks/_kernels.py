"""Numba kernels for the work that is not a LAPACK call, each with a NumPy fallback.

Kernels here earn their place by a measurement (``benchmarks/bench_allocation.py``):

* :func:`enumerate_counts` — the exact allocation when a partition's blocks have at most three
  costs (every ``numpy.array_split`` partition): loops over the item count and the third
  class's count with a data-dependent clamp, which NumPy can only vectorise one level deep.
* :func:`concave_knapsack_dp` — the exact allocation for any number of costs (the matrices of a
  whole model): a divide-and-conquer max-plus convolution per residue chain, sequential by
  nature; the NumPy fallback is the plain ``O(n · budget)`` convolution.

Surface assembly from singular values (column sums and a reverse cumulative sum) was measured
too: a numba version is about 4× faster on a 10–40 µs step next to seconds of SVD, not worth a
compiled kernel, so it stays NumPy.

The fallbacks are used when numba is not installed; set the environment variable
``LOWRANK_BLOCKS_DISABLE_NUMBA=1`` to force them.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["NUMBA_AVAILABLE", "concave_knapsack_dp", "enumerate_counts"]

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
