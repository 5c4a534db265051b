"""Exact references for the per-unit rank allocation, written from scratch for the tests.

The problem: unit ``u`` gets a rank ``r_u`` in ``0 .. len(gains[u])``; rank ``r_u`` costs
``r_u * costs[u]`` parameters and gains ``sum(gains[u][:r_u])``.  Maximise the total gain subject
to ``sum_u r_u * costs[u] <= budget``.  (A multiple-choice knapsack: each unit is one group,
its rank is the choice.)

Nothing here imports ``lowrank_blocks``; only plain Python and NumPy.

* :func:`exhaustive` tries every rank vector (small cases only).
* :func:`dp` is the textbook multiple-choice knapsack DP over the budgets ``0 .. B``.
* :func:`greedy` is the gain-per-parameter greedy fill, kept to show that it is *not* optimal.
* :func:`taken` / :func:`untaken` sum the heads / tails that a rank vector takes / leaves, with
  :func:`math.fsum` (exactly rounded).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np


def _heads(g) -> list[float]:
    """``heads[r] = sum(g[:r])`` for ``r = 0 .. len(g)``, each sum exactly rounded."""
    g = [float(x) for x in np.asarray(g, dtype=np.float64).ravel()]
    return [math.fsum(g[:r]) for r in range(len(g) + 1)]


def taken(gains, ranks) -> float:
    """Total gain of a rank vector: ``sum_u sum(gains[u][:ranks[u]])`` (exactly rounded)."""
    return math.fsum(float(x) for g, r in zip(gains, ranks) for x in np.asarray(g)[: int(r)])


def untaken(gains, ranks) -> float:
    """Total gain a rank vector leaves: ``sum_u sum(gains[u][ranks[u]:])`` (exactly rounded)."""
    return math.fsum(float(x) for g, r in zip(gains, ranks) for x in np.asarray(g)[int(r) :])


def cost_of(costs, ranks) -> int:
    """Parameters used by a rank vector: ``sum_u ranks[u] * costs[u]`` (exact integers)."""
    return sum(int(r) * int(c) for r, c in zip(ranks, costs))


def exhaustive(costs, gains, budget: int) -> tuple[float, tuple[int, ...]]:
    """Best total gain within ``budget`` by trying every rank vector.

    Returns ``(best_gain, ranks)``.  Among equal gains the first vector found in
    ``itertools.product`` order is kept.  The all-zero vector always fits (``budget >= 0``), so a
    solution always exists.

    >>> exhaustive([3, 3, 2, 2], [[10.0], [8.0], [9.0], [4.0]], 3)
    (10.0, (1, 0, 0, 0))
    """
    assert len(costs) == len(gains) and budget >= 0
    best_gain, best_ranks = -math.inf, None
    for ranks in itertools.product(*(range(len(g) + 1) for g in gains)):
        if cost_of(costs, ranks) > budget:
            continue
        gain = taken(gains, ranks)
        if gain > best_gain:
            best_gain, best_ranks = gain, ranks
    return best_gain, tuple(int(r) for r in best_ranks)


@dataclass
class DPTable:
    """The DP over budgets ``0 .. B``.

    ``best[b]`` is the optimal total gain with at most ``b`` parameters used.
    ``choice[u][b]`` is the rank of unit ``u`` in an optimum of units ``0 .. u`` at budget ``b``.
    """

    costs: list[int]
    best: np.ndarray
    choice: list[np.ndarray]

    def ranks(self, budget: int) -> tuple[int, ...]:
        """An optimal rank vector at ``budget`` (``0 <= budget <= B``), walked back unit by unit."""
        b = int(budget)
        out = [0] * len(self.costs)
        for u in reversed(range(len(self.costs))):
            r = int(self.choice[u][b])
            out[u] = r
            b -= r * self.costs[u]
            assert b >= 0
        return tuple(out)


def dp(costs, gains, budget: int) -> DPTable:
    """Multiple-choice knapsack DP for every budget ``0 .. budget``.

    ``f_0[b] = 0`` for every ``b`` (no units: nothing to gain, nothing used), and

        f_u[b] = max over r = 0 .. len(gains[u]) with r * costs[u] <= b of
                 f_{u-1}[b - r * costs[u]] + sum(gains[u][:r])

    Because ``f_0`` is 0 at every budget, ``f_u[b]`` is the optimum with *at most* ``b`` used.
    The inner max is vectorised over ``b`` only; ties go to the smallest rank (``argmax``).

    >>> t = dp([3, 3, 2, 2], [[10.0], [8.0], [9.0], [4.0]], 5)
    >>> t.best.tolist(), t.ranks(3), t.ranks(5)
    ([0.0, 0.0, 9.0, 10.0, 13.0, 19.0], (1, 0, 0, 0), (1, 0, 1, 0))
    """
    costs = [int(c) for c in costs]
    assert len(costs) == len(gains) and all(c > 0 for c in costs) and budget >= 0
    B = int(budget)
    best = np.zeros(B + 1, dtype=np.float64)
    choice = []
    for c, g in zip(costs, gains):
        heads = _heads(g)
        cand = np.full((len(heads), B + 1), -np.inf)  # cand[r, b]: unit at rank r, budget b
        for r, h in enumerate(heads):
            if r * c > B:
                break
            cand[r, r * c :] = best[: B + 1 - r * c] + h
        pick = np.argmax(cand, axis=0)  # rank 0 is always finite, so pick is always feasible
        best = cand[pick, np.arange(B + 1)]
        choice.append(pick)
    return DPTable(costs=costs, best=best, choice=choice)


def greedy(costs, gains, budget: int) -> tuple[int, ...]:
    """Gain-per-parameter greedy: take ranks best ratio first, skip what no longer fits.

    Within a unit the cost per rank is constant and the gains do not increase, so the stable
    sort keeps every unit's ranks in order.  NOT optimal when costs differ:

    >>> greedy([3, 3, 2, 2], [[10.0], [8.0], [9.0], [4.0]], 3)
    (0, 0, 1, 0)
    """
    items = [(-float(x) / c, u) for u, (c, g) in enumerate(zip(costs, gains)) for x in g]
    items.sort(key=lambda t: t[0])  # stable: equal ratios keep unit order and rank order
    ranks = [0] * len(costs)
    left = int(budget)
    for _, u in items:
        if costs[u] <= left and ranks[u] < len(gains[u]):
            ranks[u] += 1
            left -= costs[u]
    return tuple(ranks)
