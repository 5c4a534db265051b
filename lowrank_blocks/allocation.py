"""Exactly optimal rank allocation: a multiple-choice knapsack with concave gains.

The problem
-----------
*Units* (the blocks of one matrix, or the matrices of a model) each get a rank ``r_u >= 0``.
Every unit of rank in unit ``u`` costs ``costs[u]`` parameters (``m_b + n_b`` for a block) and
its ``k``-th rank removes ``gains[u][k-1]`` of squared error (the ``k``-th squared singular
value: non-negative and non-increasing, so each unit's gain is concave in its rank).  Maximise
the total gain within a parameter budget::

    maximise  Σ_u Σ_{k ≤ r_u} gains[u][k-1]   subject to   Σ_u r_u costs[u] <= budget.

When every unit costs the same, taking the largest gains over all units is optimal.  With
unequal costs, the greedy scan by ``gain / cost`` is *not* optimal: it can strand budget that a
different mix would use (``W = [[-3, -2], [-1, 2], [-3, 2]]`` on a ragged 2 × 2 grid at 3
parameters is the smallest example).

How it is solved, exactly
-------------------------
Units of equal cost form a *class*.  Within a class every item costs the same, so the best way
to spend ``k`` items on the class is its ``k`` largest gains; with each unit's gains descending,
those are a prefix of every unit.  The class's best gain ``F_c(k)`` (prefix sums of its merged,
sorted gains) is concave in ``k``, and the problem becomes: choose counts ``k_c`` per class with
``Σ_c k_c cost_c <= budget`` maximising ``Σ_c F_c(k_c)``.  Three exact algorithms solve it:

* **Enumeration over the item count** (at most three classes): an optimal solution is maximal
  (every gain kept is positive), so its item count ``T`` lies in
  ``[budget // cost_max, budget // cost_min]``: a handful of values when the costs are close,
  as on every ``numpy.array_split`` partition, whose blocks cost ``a+c``, ``a+c+1`` or
  ``a+c+2``.  For fixed ``T`` and a fixed count of the third class, the split between the two
  others is a concave function of one integer, maximised by clamping its unconstrained
  maximiser (the merge order of their gains) to the budget.
* **Dynamic programming over the budget** (any number of classes, the whole-model case): the
  best gain for every budget ``0 .. B`` in units of ``g = gcd(costs)``, one class at a time.
  Adding a class is a max-plus convolution with the concave ``F_c`` along every residue chain
  modulo its cost, whose maximisers are monotone, so divide and conquer solves each chain in
  ``O(L log L)`` (Axiotis & Tzamos, 2019).  The DP answers every budget of a list at once.
* **The Lagrangian core** (many units and costs, a large budget: the matrices of a model).  Take
  a multiplier ``λ >= 0`` and ``φ_u(r) = G_u(r) − λ c_u r``, with ``G_u(r)`` the sum of unit
  ``u``'s first ``r`` gains (concave, so ``φ_u`` is too, maximal at ``r̄_u``, the count of gains
  above ``λ c_u``).  For every feasible ``r`` (``Σ_u c_u r_u <= B``)::

      Σ_u G_u(r_u) = Σ_u φ_u(r_u) + λ Σ_u c_u r_u <= λ B + Σ_u φ_u(r_u) = U − Σ_u D_u(r_u),

  with the Lagrangian bound ``U = λ B + Σ_u φ_u(r̄_u)`` and the deficits
  ``D_u(r) = φ_u(r̄_u) − φ_u(r) >= 0``.  A feasible solution of value ``L`` (the greedy one:
  the gains above ``λ c_u``, then the best gain per parameter that still fits) gives
  ``OPT >= L``, so every optimal ``r`` has ``Σ_u D_u(r_u) <= U − L`` and hence, unit by unit,
  ``D_u(r_u) <= U − L``: an interval of ranks around ``r̄_u`` (``D_u`` is convex).  The problem
  restricted to those intervals has the same optimal solutions; it is solved exactly by the DP
  (one unit per class when small, the classes above otherwise).  ``λ`` is the LP relaxation's
  multiplier (found by bisection), where ``U − L`` is at most ``λ`` times the budget the gains
  above ``λ c_u`` leave over, about one item's gain: on a model's
  matrices at a realistic budget the intervals hold zero to two ranks per matrix, and the DP
  runs on a few hundred budget units instead of the whole budget.  The gap ``U − L`` and the
  deficits are computed from the gains near the boundary only (no difference of large sums)
  and widened by a relative margin (``CORE_MARGIN``) far above their rounding, which can only
  widen the intervals.  When ``U − L`` is 0 (the greedy solution meets the bound) the
  intervals close to the ranks within that margin of ``r̄_u``.

The cheapest (by an operation count) is used; ``solve_allocation(..., method=...)`` forces one.
All run as numba kernels, with a NumPy (or plain Python) fallback when numba is missing
(``LOWRANK_BLOCKS_DISABLE_NUMBA=1`` forces it).  Items with zero gain are never taken; where
several rank vectors are optimal, which one is returned depends on the algorithm.

References
----------
K. Axiotis, C. Tzamos, "Capacitated Dynamic Programming: Faster Knapsack and Graph
Algorithms", ICALP 2019.

D. Pisinger, "A minimal algorithm for the multiple-choice knapsack problem", European Journal of
Operational Research 83(2), 1995 (core problems and the reduction of classes by bounds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from . import _kernels
from ._validate import as_int as _as_int
from .budgets import check_budgets

__all__ = ["AllocationSolution", "solve_allocation"]

# The DP keeps one int32 choice per class and budget unit; refuse tables beyond this size.
MAX_DP_ENTRIES = 200_000_000
#: Algorithms of :func:`solve_allocation`.
METHODS = ("auto", "core", "dp", "enumeration")
#: Relative rounding margin added to the Lagrangian gap before it pins the ranks (a wider core,
#: never a wrong one; the rounding it covers is below 1e-12 relative).
CORE_MARGIN = 1e-9
# Fixed operation count of solving one budget's core (Python calls), against the DP's counts.
CORE_OVERHEAD = 100_000
# A core with at most this many units × budget units is solved unit by unit, without classes.
UNIT_DP_MAX = 20_000


@dataclass(frozen=True)
class AllocationSolution:
    """Optimal ranks for every budget of a list (the result of :func:`solve_allocation`).

    Attributes
    ----------
    budgets : numpy.ndarray, shape (n_budgets,)
        The budgets, as given.
    ranks : numpy.ndarray, shape (n_budgets, n_units)
        Optimal rank of every unit at every budget (int64).
    used : numpy.ndarray, shape (n_budgets,)
        Parameters used, ``ranks @ costs`` (never above the budget).
    gain : numpy.ndarray, shape (n_budgets,)
        Total gain taken.
    left : numpy.ndarray, shape (n_budgets,)
        Total gain not taken, summed from the tails (no subtraction, so it stays accurate when
        it is tiny).
    algorithm : str
        ``'single class'``, ``'enumeration'``, ``'dp'`` or ``'core'``: how it was solved.
    """

    budgets: np.ndarray
    ranks: np.ndarray
    used: np.ndarray
    gain: np.ndarray
    left: np.ndarray
    algorithm: str


# -- validation -----------------------------------------------------------------------------------


def _check_costs(costs: object) -> np.ndarray:
    if isinstance(costs, (str, bytes)):
        raise TypeError(f"costs={costs!r} must be a sequence of positive integers")
    try:
        values = list(costs)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(f"costs={costs!r} must be a sequence of positive integers") from None
    if all(type(c) is int for c in values) or (
        isinstance(costs, np.ndarray) and costs.dtype.kind == "i" and costs.ndim == 1
    ):  # plain integers: one vectorised check (falls through to name a bad one)
        arr = np.array(values, dtype=np.int64) if values else np.zeros(0, dtype=np.int64)
        if not arr.size or int(arr.min()) >= 1:
            return arr
    return np.array(
        [_as_int(c, f"costs[{k}]", minimum=1) for k, c in enumerate(values)], dtype=np.int64
    )


def _check_gains(gains: object, n_units: int) -> list[np.ndarray]:
    try:
        values = list(gains)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(f"gains must be a sequence of 1-D arrays, got {type(gains).__name__}") from None
    if len(values) != n_units:
        raise ValueError(
            f"gains has {len(values)} entries but costs has {n_units}; give one gain array per unit"
        )
    out = []
    for k, g in enumerate(values):
        arr = np.asarray(g, dtype=np.float64) if not isinstance(g, np.ndarray) else g
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"gains[{k}] has dtype {arr.dtype}; real numbers are required")
        arr = np.ascontiguousarray(arr, dtype=np.float64)
        if arr.ndim != 1:
            raise ValueError(f"gains[{k}] must be 1-D; got shape {arr.shape}")
        out.append(arr)
    # The value checks on all units at once (one pass instead of a few per unit); where one
    # fails, the units are checked one by one to name the first culprit.
    flat = np.concatenate(out) if out else np.empty(0)
    if flat.size:
        ok = bool(np.isfinite(flat).all()) and float(flat.min()) >= 0.0
        if ok and flat.size > 1:
            rises = flat[1:] > flat[:-1]
            starts = np.cumsum([len(a) for a in out])[:-1]  # where a new unit begins
            starts = starts[(starts > 0) & (starts < flat.size)]
            rises[starts - 1] = False
            ok = not bool(rises.any())
        if not ok:
            for k, arr in enumerate(out):
                _check_values(k, arr)
    return out


def _check_values(k: int, arr: np.ndarray) -> None:
    """Raise the message for the first problem of ``gains[k]``: not finite, negative, rising."""
    if arr.size and not np.all(np.isfinite(arr)):
        raise ValueError(f"gains[{k}] contains NaN or infinite values; finite gains required")
    if arr.size and arr.min() < 0:
        raise ValueError(f"gains[{k}] has a negative value {arr.min()!r}; gains must be >= 0")
    if arr.size > 1 and np.any(arr[1:] > arr[:-1]):
        k_bad = int(np.argmax(arr[1:] > arr[:-1]))
        raise ValueError(
            f"gains[{k}] increases at position {k_bad + 1} ({arr[k_bad]!r} -> "
            f"{arr[k_bad + 1]!r}); the gains of a unit must be non-increasing"
        )


# -- classes of equal cost ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Class:
    cost: int
    unit: np.ndarray  # unit of every item, in the class's merged order (gain descending)
    prefix: np.ndarray  # F(k) = sum of the k largest gains, k = 0 .. n
    tail: np.ndarray  # sum of the gains from item k on, k = 0 .. n (tail[n] = 0)

    @property
    def n(self) -> int:
        return len(self.unit)


def _classes(costs: np.ndarray, gains: list[np.ndarray]) -> list[_Class]:
    """Group units by cost; merge each class's positive gains, largest first."""
    out = []
    for cost in np.unique(costs).tolist():
        members = np.flatnonzero(costs == cost)
        parts = [gains[u][gains[u] > 0.0] for u in members]
        values = np.concatenate(parts) if parts else np.empty(0)
        units = np.repeat(members, [len(p) for p in parts])
        # Descending gain; ties by unit then position (the stable sort keeps the concatenation's
        # order), so every unit's items stay in order.
        order = np.argsort(-values, kind="stable")
        values, units = values[order], units[order]
        prefix = np.concatenate(([0.0], np.cumsum(values)))
        tail = np.concatenate((np.cumsum(values[::-1])[::-1], [0.0]))
        out.append(_Class(int(cost), units.astype(np.int64), prefix, tail))
    return out


# -- the solver -----------------------------------------------------------------------------------


def _enumeration_work(classes: list[_Class], budgets: np.ndarray) -> float:
    if len(classes) > 3:
        return math.inf
    c_min, c_max = classes[0].cost, classes[-1].cost
    n_third = classes[2].n + 1 if len(classes) == 3 else 1
    b = float(budgets.max())
    n_t = b / c_min - b / c_max + 2
    return float(len(budgets)) * n_t * n_third


def _dp_work(classes: list[_Class], budgets: np.ndarray) -> tuple[float, int]:
    g = 0
    for c in classes:
        g = math.gcd(g, c.cost)
    size = int(budgets.max()) // g + 1
    chain = max(1.0, size / classes[0].cost * g)
    return len(classes) * size * max(1.0, math.log2(chain)), g


def _core_work(units: _Units, n_budgets: int) -> float:
    """Operation count of the Lagrangian core (:func:`_solve_core`) for ``n_budgets`` budgets:
    the bisection, the sums over every gain and a fixed cost for solving each budget's core."""
    n = len(units.flat)
    longest = int(units.lengths.max()) if len(units.lengths) else 0
    kernel = 64 * len(units.costs) * math.log2(longest + 2)
    if _kernels.lagrangian_core_numba is None:  # the same loops, interpreted
        kernel *= 300
    return n_budgets * (CORE_OVERHEAD + kernel + n)


def _full_work(sizes: list[_Size], units: _Units, budgets: np.ndarray) -> float:
    """Operation count of the whole-problem algorithms: merging the classes, then the cheaper
    of the enumeration and the DP (as the NumPy fallbacks run them, where numba is missing)."""
    n = len(units.flat)
    merge = 2.0 * n * math.log2(n + 2) + 20_000 * len(sizes)
    enum = _enumeration_work(sizes, budgets)
    dp, g = _dp_work(sizes, budgets)
    if _kernels.enumerate_counts_numba is None and math.isfinite(enum):
        n_third = sizes[2].n + 1 if len(sizes) == 3 else 1
        enum = enum / n_third * (30_000 + 10 * n_third)  # ~15 array calls per item count
    if _kernels.concave_knapsack_dp_numba is None:  # one shifted array per item, no D&C
        size = int(budgets.max()) // g + 1
        dp = sum(min(c.n, size * g // c.cost) * (3.0 * size + 5_000) for c in sizes)
    return merge + min(enum, dp)


def solve_allocation(
    costs: Sequence[int], gains: Sequence[Any], budgets: Any, *, method: str = "auto"
) -> AllocationSolution:
    """Exactly optimal ranks of units with a cost per rank and descending gains.

    Maximises ``Σ_u Σ_{k ≤ r_u} gains[u][k-1]`` subject to ``Σ_u r_u costs[u] <= budget`` for
    every budget given (see the module documentation for the algorithms and why they are
    exact).

    Parameters
    ----------
    costs : sequence of int
        Parameters per unit of rank of every unit, positive.
    gains : sequence of 1-D arrays
        Gain of the 1st, 2nd, ... rank of every unit: non-negative and non-increasing (squared
        singular values).  The length caps the unit's rank.
    budgets : int or sequence of int
        Parameter budgets, non-negative.
    method : {'auto', 'core', 'dp', 'enumeration'}
        ``'auto'`` (default) picks the cheapest by an operation count; the others force one
        algorithm (all are exact): ``'core'`` the Lagrangian core, ``'dp'`` the DP over the
        whole budget, ``'enumeration'`` the enumeration (at most three distinct costs).  With
        one distinct cost every method takes the largest gains.

    Returns
    -------
    AllocationSolution
        Ranks, parameters used, gain taken and gain left for every budget.

    Raises
    ------
    ValueError
        For negative budgets or gains, gains that increase, lengths that disagree, an unknown
        method, ``'enumeration'`` with more than three costs, or a DP table too large for memory.
    TypeError
        For non-integer costs or budgets.

    Examples
    --------
    The smallest case where the greedy scan by gain per parameter fails: it would spend 2 of
    the 3 parameters on the unit with the best ratio (4/2) and strand the third.

    >>> sol = solve_allocation([3, 2], [[5.0], [4.0]], 3)
    >>> sol.ranks.tolist(), sol.gain.tolist(), sol.left.tolist()
    ([[1, 0]], [5.0], [4.0])
    >>> solve_allocation([3, 2], [[5.0], [4.0]], [2, 3, 5]).gain.tolist()
    [4.0, 5.0, 9.0]
    >>> solve_allocation([3, 2], [[5.0], [4.0]], [2, 3, 5], method="core").gain.tolist()
    [4.0, 5.0, 9.0]
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not allowed; use one of {', '.join(METHODS)}")
    costs_arr = _check_costs(costs)
    gain_list = _check_gains(gains, len(costs_arr))
    budget_arr = check_budgets(budgets, minimum=0)
    return solve_checked(costs_arr, gain_list, budget_arr, method=method)


def solve_checked(
    costs_arr: np.ndarray,
    gain_list: list[np.ndarray],
    budget_arr: np.ndarray,
    method: str = "auto",
) -> AllocationSolution:
    """:func:`solve_allocation` on inputs already checked (block spectra are, by construction:
    int64 costs, float64 gains sorted descending and non-negative, int64 budgets >= 0)."""
    units = _units(costs_arr, gain_list)
    # Spending more than every positive gain costs buys nothing: cap the budgets there, so a
    # huge budget never sizes a table.
    full = int(units.costs @ units.lengths) if len(units.costs) else 0
    capped = np.minimum(budget_arr, full)
    sizes = _class_sizes(units)
    if len(sizes) >= 2 and method == "auto":
        core = _core_work(units, len(capped)) < _full_work(sizes, units, capped)
        method = "core" if core else "auto"
    if len(sizes) >= 2 and method == "core":
        ranks = _solve_core(units, capped)
        algorithm = "core"
    else:
        ranks, algorithm = _solve_full(costs_arr, gain_list, capped, method)
    used = ranks @ costs_arr if len(costs_arr) else np.zeros(len(capped), dtype=np.int64)
    gain, left = _unit_sums(units, ranks)
    return AllocationSolution(budget_arr, ranks, used, gain, left, algorithm)


# -- all units in one array -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Units:
    costs: np.ndarray  # cost of every unit (int64)
    flat: np.ndarray  # the gains of every unit, one after the other
    offsets: np.ndarray  # unit u holds flat[offsets[u] : offsets[u + 1]]
    lengths: np.ndarray  # how many of them are positive (a prefix: they descend)


class _Size(NamedTuple):
    cost: int
    n: int


def _units(costs_arr: np.ndarray, gain_list: list[np.ndarray]) -> _Units:
    n_units = len(costs_arr)
    offsets = np.zeros(n_units + 1, dtype=np.int64)
    np.cumsum(np.fromiter((len(g) for g in gain_list), dtype=np.int64, count=n_units),
              out=offsets[1:])
    flat = np.concatenate(gain_list) if n_units else np.empty(0)
    positive = np.zeros(len(flat) + 1, dtype=np.int64)
    np.cumsum(flat > 0.0, out=positive[1:])
    lengths = positive[offsets[1:]] - positive[offsets[:-1]]
    return _Units(np.asarray(costs_arr, dtype=np.int64), flat, offsets, lengths)


def _class_sizes(units: _Units) -> list[_Size]:
    """Distinct costs (ascending) of the units with a positive gain, with their item counts."""
    present = units.lengths > 0
    cls_costs, inverse = np.unique(units.costs[present], return_inverse=True)
    n = np.bincount(inverse, weights=units.lengths[present], minlength=len(cls_costs))
    return [_Size(int(c), int(k)) for c, k in zip(cls_costs.tolist(), n.tolist())]


def _unit_sums(units: _Units, ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gain taken and gain left at every row of ``ranks`` (sums of non-negative terms only, so
    both stay accurate however small)."""
    if not len(units.flat):
        return np.zeros(len(ranks)), np.zeros(len(ranks))
    return _kernels.unit_sums(units.flat, units.offsets, ranks)


# -- the whole problem: classes, then enumeration or DP -------------------------------------------


def _solve_full(
    costs_arr: np.ndarray, gain_list: list[np.ndarray], capped: np.ndarray, method: str
) -> tuple[np.ndarray, str]:
    """Ranks per budget (budgets already capped at the cost of every positive gain) by the
    classes of equal cost, and the algorithm used."""
    n_units = len(costs_arr)
    n_b = len(capped)
    classes = _classes(costs_arr, gain_list) if n_units else []
    classes = [c for c in classes if c.n > 0]
    counts = np.zeros((n_b, len(classes)), dtype=np.int64)
    if len(classes) <= 1:
        algorithm = "single class"
        if classes:
            counts[:, 0] = np.minimum(classes[0].n, capped // classes[0].cost)
    else:
        enum_work = _enumeration_work(classes, capped)
        dp_work, g = _dp_work(classes, capped)
        if method == "enumeration" and len(classes) > 3:
            raise ValueError(f"method='enumeration' needs at most three distinct costs; these "
                             f"units have {len(classes)} (use 'auto', 'core' or 'dp')")
        if method == "enumeration" or (method != "dp" and enum_work <= dp_work):
            algorithm = "enumeration"
            counts = _solve_enumeration(classes, capped)
        else:
            algorithm = "dp"
            counts = _solve_dp(classes, capped, g)
    ranks = np.zeros((n_b, n_units), dtype=np.int64)
    for c, cls in enumerate(classes):
        for k in range(n_b):
            taken = int(counts[k, c])
            if taken:
                ranks[k] += np.bincount(cls.unit[:taken], minlength=n_units)
    return ranks, algorithm


# -- the Lagrangian core ----------------------------------------------------------------------------


def _solve_core(units: _Units, capped: np.ndarray) -> np.ndarray:
    """Ranks per budget: the Lagrangian bound pins every unit to a few ranks (usually one or
    two), and the problem on those is solved exactly by :func:`_solve_full`.

    Why it is exact (the module documentation has the whole argument): with multiplier
    ``lam >= 0`` and ``φ_u(r) = G_u(r) − lam c_u r`` (``G_u`` the unit's prefix sums), every
    feasible ``r`` has ``Σ_u G_u(r_u) <= lam B + Σ_u φ_u(r_u) = U − Σ_u (max φ_u − φ_u(r_u))``.
    The greedy solution is feasible with value ``L``, so an optimal ``r`` has value ``>= L`` and
    therefore ``max φ_u − φ_u(r_u) <= U − L`` for every unit: ``lo[u] <= r_u <= hi[u]``.
    """
    lo, hi, fill, _, _ = _kernels.lagrangian_core(
        units.costs, units.flat, units.offsets, units.lengths, capped, CORE_MARGIN
    )
    ranks = lo.copy()
    starts = units.offsets[:-1]
    for k, budget in enumerate(capped.tolist()):
        free = np.flatnonzero(hi[k] > lo[k])
        rest = budget - int(lo[k] @ units.costs)
        if rest < 0 or np.any(fill[k] < lo[k]) or np.any(fill[k] > hi[k]):  # pragma: no cover
            # The greedy solution always lies in the intervals (its deficit is the gap), so
            # this would be rounding beyond the margin: solve the whole problem instead.
            gains = [units.flat[a : a + n] for a, n in zip(starts.tolist(), units.lengths.tolist())]
            ranks[k] = _solve_full(units.costs, gains, capped[k : k + 1], "auto")[0][0]
            continue
        if not len(free):
            continue
        sub_gains = [units.flat[starts[u] + lo[k, u] : starts[u] + hi[k, u]] for u in free.tolist()]
        sub_costs = units.costs[free]
        g = int(np.gcd.reduce(sub_costs))
        size = min(rest, int(sub_costs @ (hi[k, free] - lo[k, free]))) // g + 1
        if len(free) * size <= UNIT_DP_MAX:  # small: one DP step per unit
            ranks[k, free] += _solve_units_dp(sub_costs // g, sub_gains, size)
        else:  # wide: merge the units into classes of equal cost first
            sub, _ = _solve_full(sub_costs, sub_gains, np.array([rest], dtype=np.int64), "auto")
            ranks[k, free] += sub[0]
    return ranks


def _solve_units_dp(steps: np.ndarray, gains: list[np.ndarray], size: int) -> np.ndarray:
    """Optimal ranks of a few units within ``size − 1`` budget units (costs ``steps``): the DP of
    :func:`_solve_dp` with every unit a class of its own (its gains are concave)."""
    prefixes = [np.concatenate(([0.0], np.cumsum(g))) for g in gains]
    choice = _kernels.concave_knapsack_dp(steps, prefixes, size)
    out = np.zeros(len(gains), dtype=np.int64)
    rest = size - 1
    for u in range(len(gains) - 1, -1, -1):
        out[u] = int(choice[u, rest])
        rest -= int(out[u]) * int(steps[u])
    return out


def _solve_enumeration(classes: list[_Class], budgets: np.ndarray) -> np.ndarray:
    """Counts per class (at most three classes) by enumeration over the item count."""
    c0, c1 = classes[0], classes[1]
    c2 = classes[2] if len(classes) == 3 else _Class(
        cost=c1.cost + 1, unit=np.empty(0, np.int64), prefix=np.zeros(1), tail=np.zeros(1)
    )
    # Merge order of classes 0 and 1 by gain: count of class-1 items among the top t of both.
    g0 = np.diff(c0.prefix)
    g1 = np.diff(c1.prefix)
    merged_is1 = np.concatenate((np.zeros(len(g0), bool), np.ones(len(g1), bool)))
    vals = np.concatenate((g0, g1))
    order = np.lexsort((np.arange(len(vals)), -vals))
    ones_before = np.concatenate(([0], np.cumsum(merged_is1[order]))).astype(np.int64)
    costs = np.array([c0.cost, c1.cost, c2.cost], dtype=np.int64)
    sizes = np.array([c0.n, c1.n, c2.n], dtype=np.int64)
    counts = _kernels.enumerate_counts(
        costs, sizes, c0.prefix, c1.prefix, c2.prefix, ones_before, budgets
    )
    return counts[:, : len(classes)]


def _solve_dp(classes: list[_Class], budgets: np.ndarray, g: int) -> np.ndarray:
    """Counts per class by the DP over the budget (any number of classes)."""
    size = int(budgets.max()) // g + 1
    if size * len(classes) > MAX_DP_ENTRIES:
        raise ValueError(
            f"budget={int(budgets.max())} with {len(classes)} distinct costs (greatest common "
            f"divisor {g}) needs a table of {size * len(classes):,} entries for the exact "
            f"allocation; at most {MAX_DP_ENTRIES:,} are allowed (use a smaller budget)"
        )
    steps = np.array([c.cost // g for c in classes], dtype=np.int64)
    choice = _kernels.concave_knapsack_dp(steps, [c.prefix for c in classes], size)
    counts = np.zeros((len(budgets), len(classes)), dtype=np.int64)
    for k, b in enumerate(budgets.tolist()):
        rest = b // g
        for c in range(len(classes) - 1, -1, -1):
            taken = int(choice[c, rest])
            counts[k, c] = taken
            rest -= taken * int(steps[c])
    return counts
