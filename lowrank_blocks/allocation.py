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
``Σ_c k_c cost_c <= budget`` maximising ``Σ_c F_c(k_c)``.  Two exact algorithms solve it:

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

The cheaper of the two (by an operation count) is used.  Both run as numba kernels, with a NumPy
fallback when numba is missing (``LOWRANK_BLOCKS_DISABLE_NUMBA=1`` forces it).  Ties are broken
towards fewer parameters; items with zero gain are never taken.

References
----------
K. Axiotis, C. Tzamos, "Capacitated Dynamic Programming: Faster Knapsack and Graph
Algorithms", ICALP 2019.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _kernels
from ._validate import as_int as _as_int
from .budgets import check_budgets

__all__ = ["AllocationSolution", "solve_allocation"]

# The DP keeps one int32 choice per class and budget unit; refuse tables beyond this size.
MAX_DP_ENTRIES = 200_000_000


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
        ``'single class'``, ``'enumeration'`` or ``'dp'``: how it was solved.
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
        out.append(arr)
    return out


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
        pos = np.concatenate([np.arange(len(p)) for p in parts]) if parts else np.empty(0, int)
        # Descending gain; ties by unit then position, so every unit's items stay in order.
        order = np.lexsort((pos, units, -values))
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


def solve_allocation(costs: Sequence[int], gains: Sequence[Any], budgets: Any) -> AllocationSolution:
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

    Returns
    -------
    AllocationSolution
        Ranks, parameters used, gain taken and gain left for every budget.

    Raises
    ------
    ValueError
        For negative budgets or gains, gains that increase, lengths that disagree, or a DP
        table too large for memory.
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
    """
    costs_arr = _check_costs(costs)
    gain_list = _check_gains(gains, len(costs_arr))
    budget_arr = check_budgets(budgets, minimum=0)
    return solve_checked(costs_arr, gain_list, budget_arr)


def solve_checked(
    costs_arr: np.ndarray, gain_list: list[np.ndarray], budget_arr: np.ndarray
) -> AllocationSolution:
    """:func:`solve_allocation` on inputs already checked (block spectra are, by construction:
    int64 costs, float64 gains sorted descending and non-negative, int64 budgets >= 0)."""
    n_units = len(costs_arr)
    n_b = len(budget_arr)
    classes = _classes(costs_arr, gain_list) if n_units else []
    classes = [c for c in classes if c.n > 0]

    # Spending more than every positive gain costs buys nothing: cap the budgets there, so a
    # huge budget never sizes a table.
    full = sum(c.cost * c.n for c in classes)
    capped = np.minimum(budget_arr, full)
    counts = np.zeros((n_b, len(classes)), dtype=np.int64)
    if not classes:
        algorithm = "single class"
    elif len(classes) == 1:
        algorithm = "single class"
        counts[:, 0] = np.minimum(classes[0].n, capped // classes[0].cost)
    else:
        enum_work = _enumeration_work(classes, capped)
        dp_work, g = _dp_work(classes, capped)
        if enum_work <= dp_work:
            algorithm = "enumeration"
            counts = _solve_enumeration(classes, capped)
        else:
            algorithm = "dp"
            counts = _solve_dp(classes, capped, g)

    ranks = np.zeros((n_b, n_units), dtype=np.int64)
    left = np.zeros(n_b)
    gain = np.zeros(n_b)
    for c, cls in enumerate(classes):
        for k in range(n_b):
            taken = int(counts[k, c])
            if taken:
                ranks[k] += np.bincount(cls.unit[:taken], minlength=n_units)
            gain[k] += cls.prefix[taken]
            left[k] += cls.tail[taken]
    # Zero gains are never taken, but they are still part of no tail: nothing to add.
    used = ranks @ costs_arr if n_units else np.zeros(n_b, dtype=np.int64)
    return AllocationSolution(budget_arr, ranks, used, gain, left, algorithm)


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
