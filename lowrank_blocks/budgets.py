"""Configurations at a parameter budget, and the paper's matching rule.

Two ways to put structures at "the same budget": the same parameter count (Table I of the paper
puts all three structures at 224 parameters: :func:`configurations_at_budget`), or the paper's
rule ``r_diag = r / N``, ``K = √N``, ``r_block = r / (N √N)`` (:func:`paper_rule`), which matches
the two local structures to each other, not to LoRA.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from ._validate import as_int, check_bool, check_shape
from .structures import (
    STRUCTURE_TYPES,
    BlockGrid,
    DiagonalBlocks,
    Global,
    GridSpec,
    Structure,
    structure_types,
)

__all__ = [
    "PaperConfigurations",
    "check_budget",
    "check_budgets",
    "configurations_at_budget",
    "paper_rule",
]

# Parameter counts are exact Python integers; budgets beyond this are refused (a dense
# 2**31 × 2**31 matrix has fewer parameters).
MAX_BUDGET = 1 << 62
#: Lists of configurations longer than this are refused before any is built.
MAX_CONFIGURATIONS = 1 << 22


def check_budget(budget: object, name: str = "budget", minimum: int = 1) -> int:
    """A budget: an integer ``>= minimum`` and at most :data:`MAX_BUDGET`."""
    value = as_int(budget, name, minimum=minimum)
    if value > MAX_BUDGET:
        raise ValueError(f"{name}={value} is too large; budgets up to 2**62 are allowed")
    return value


def check_budgets(budgets: object, minimum: int = 1) -> np.ndarray:
    """One budget or a non-empty sequence of them, each checked by :func:`check_budget`, as an
    int64 array.

    Examples
    --------
    >>> check_budgets(5).tolist(), check_budgets([0, 3], minimum=0).tolist()
    ([5], [0, 3])
    """
    kind = "a positive integer" if minimum >= 1 else "a non-negative integer"
    if isinstance(budgets, (bool, np.bool_, str, bytes)):
        raise TypeError(f"budgets={budgets!r} must be {kind} or a list of them")
    if isinstance(budgets, (int, np.integer)) or (
        isinstance(budgets, np.ndarray) and budgets.ndim == 0
    ):
        return np.array([check_budget(budgets, "budgets", minimum)], dtype=np.int64)
    try:
        values = list(budgets)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(f"budgets={budgets!r} must be {kind} or a list of them") from None
    if not values:
        raise ValueError(f"budgets is empty; give at least one budget ({kind})")
    return np.array([check_budget(b, f"budgets[{k}]", minimum) for k, b in enumerate(values)],
                    dtype=np.int64)


def configurations_at_budget(
    shape: tuple[int, int],
    budget: int,
    *,
    at_most: bool = False,
    families: Iterable[str | type[Structure]] = STRUCTURE_TYPES,
    grids: GridSpec = "square",
    diagonal: GridSpec | None = None,
) -> list[Structure]:
    """Every uniform-rank configuration whose parameter count equals (or is at most) ``budget``.

    Parameters
    ----------
    shape : (int, int)
        Matrix shape ``(m, n)``.
    budget : int
        Parameter budget, a positive integer.
    at_most : bool, default False
        ``False``: parameter count exactly ``budget``; ``True``: at most ``budget``.
    families : iterable of {'global', 'diagonal', 'grid'} or structure classes
        Structure families to list.
    grids : 'square', 'all', 'pow2' or iterable of K or (p, q), default 'square'
        Block grids searched for :class:`~lowrank_blocks.BlockGrid` (see
        :func:`~lowrank_blocks.structures.expand_grids`).
    diagonal : 'square', 'pow2' or iterable of N, optional
        Block counts for :class:`~lowrank_blocks.DiagonalBlocks`; default every
        ``N <= min(m, n)``.

    Returns
    -------
    list of Structure
        Ordered by family, grid and rank.

    Raises
    ------
    ValueError
        If no configuration meets the budget; the message gives the nearest budgets that do.

    Examples
    --------
    >>> configurations_at_budget((28, 28), 224, families=["global", "grid"])
    [Global(rank=4), BlockGrid(grid=1, rank=4), BlockGrid(grid=2, rank=2), \
BlockGrid(grid=4, rank=1)]
    """
    m, n = check_shape(shape)
    budget = check_budget(budget)
    at_most = check_bool(at_most, "at_most")
    types = structure_types(families)
    chosen: list[tuple[Structure, range]] = []
    count = 0
    nearest: set[int] = set()
    cheapest = math.inf
    for cls in types:
        for grid in cls.candidate_grids((m, n), diagonal if cls is DiagonalBlocks else grids):
            unit = cls.on_grid(grid, 1)
            max_rank = unit.max_uniform_rank((m, n))
            cost = unit.unit_cost((m, n))
            cheapest = min(cheapest, cost)
            if at_most:
                ranks = range(1, min(max_rank, budget // cost) + 1)
            else:
                ranks = range(budget // cost, budget // cost + 1) if budget % cost == 0 else range(0)
                below, above = (budget // cost) * cost, (budget // cost + 1) * cost
                if 1 <= budget // cost <= max_rank:
                    nearest.add(below)
                if budget // cost + 1 <= max_rank:
                    nearest.add(above)
                if budget // cost > max_rank >= 1:  # above this grid's largest configuration
                    nearest.add(max_rank * cost)
            ranks = range(max(1, ranks.start), min(max_rank, ranks.stop - 1) + 1)
            count += len(ranks)
            if count > MAX_CONFIGURATIONS:
                raise ValueError(
                    f"budget={budget} with at_most={at_most} names more than "
                    f"{MAX_CONFIGURATIONS:,} configurations for a {m} × {n} matrix; pass "
                    f"fewer grids (grids=, diagonal=) or families, or an exact budget"
                )
            chosen.append((unit, ranks))
    found: list[Structure] = [unit.with_rank(r) for unit, ranks in chosen for r in ranks]
    if not found:
        names = ", ".join(c.family for c in types)
        if budget < cheapest or not nearest:
            raise ValueError(
                f"budget={budget} is below the cheapest configuration of {names} for a "
                f"{m} × {n} matrix ({cheapest} parameters); budgets >= {cheapest} allowed"
            )
        lower = max((b for b in nearest if b < budget), default=None)
        upper = min((b for b in nearest if b > budget), default=None)
        options = " or ".join(str(b) for b in (lower, upper) if b is not None)
        raise ValueError(
            f"no configuration of {names} has exactly budget={budget} parameters for a "
            f"{m} × {n} matrix; nearest exact budgets: {options} (or pass at_most=True)"
        )
    return found


class PaperConfigurations(NamedTuple):
    """The three configurations of the paper's matching rule."""

    lora: Global
    melora: DiagonalBlocks
    localized: BlockGrid


def paper_rule(rank: int, n_blocks: int) -> PaperConfigurations:
    """Apply the paper's matching rule ``r_diag = r / N``, ``K = √N``, ``r_block = r / (N √N)``.

    Under this rule MELoRA and Localized LoRA both cost ``2 d r / N`` parameters on a ``d × d``
    matrix, while LoRA costs ``2 d r``: the rule matches the two local structures to each other,
    not to LoRA.  (The paper's Table I instead puts all three at 224 parameters; use
    :func:`configurations_at_budget` for that kind of matching.)

    Parameters
    ----------
    rank : int
        Global LoRA rank ``r``.
    n_blocks : int
        Number of diagonal blocks ``N``; must be a perfect square.

    Returns
    -------
    PaperConfigurations
        ``(Global(r), DiagonalBlocks(N, r/N), BlockGrid(√N, r/(N√N)))``.

    Raises
    ------
    ValueError
        If the rule gives no integer ranks or grid.

    Examples
    --------
    >>> paper_rule(16, 4)
    PaperConfigurations(lora=Global(rank=16), melora=DiagonalBlocks(n_blocks=4, rank=4), \
localized=BlockGrid(grid=2, rank=2))
    """
    r = as_int(rank, "rank", minimum=1)
    big_n = as_int(n_blocks, "n_blocks", minimum=1)
    k = math.isqrt(big_n)
    if k * k != big_n:
        raise ValueError(
            f"n_blocks={big_n} is not a perfect square, so K = √N is not an integer; "
            f"use N in 1, 4, 9, 16, ..."
        )
    if r % big_n:
        raise ValueError(
            f"rank={r} is not divisible by n_blocks={big_n}, so r_diag = r/N is not an integer; "
            f"use a rank that is a multiple of {big_n}"
        )
    if r % (big_n * k):
        raise ValueError(
            f"rank={r} is not divisible by N√N={big_n * k} (n_blocks={big_n}), so "
            f"r_block = r/(N√N) is not an integer; use a rank that is a multiple of {big_n * k}"
        )
    return PaperConfigurations(
        Global(r), DiagonalBlocks(big_n, r // big_n), BlockGrid(k, r // (big_n * k))
    )
