"""Error surfaces, error-vs-budget curves, rank allocation and structure search.

Everything here works from the singular values of the blocks (DESIGN.md): for per-block ranks
``r_b`` the optimal squared error is ``Σ_b Σ_{i > r_b} σ_{b,i}²`` plus the energy of blocks a
structure leaves out, so one batched SVD per grid gives the error of every rank and every
allocation without forming a single reconstruction.

Rank allocation: every rank-one term of block ``b`` costs ``m_b + n_b`` parameters and removes
``σ_{b,i}²`` of squared error; within a block the gains decrease.  When all blocks cost the same
(equal-sized blocks), keeping the largest ``σ²`` over all blocks is exactly optimal.  With unequal
costs (ragged partitions) the problem is a multiple-choice knapsack with concave gains, solved
exactly by :mod:`lowrank_blocks.allocation` (the greedy scan by ``σ² / cost`` is not optimal
there), checked against exhaustive search in the tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from .allocation import solve_allocation
from .approximate import Approximation, approximate
from .linalg import (
    _check_randomized_options,
    as_matrix,
    block_energies,
    block_groups,
    power_of_two_scale,
    randomized_svd_stack,
    stack_blocks,
    svdvals_stack,
    to_numpy,
)
from .structures import (
    FAMILIES,
    BlockGrid,
    Partition,
    _as_int,
    _make,
    _rank_unit_cost,
    expand_grids,
)

__all__ = [
    "BlockSpectra",
    "SearchResult",
    "allocate_ranks",
    "best_approximation",
    "block_spectra",
    "error_surface",
    "error_vs_budget",
]

Method = Literal["exact", "randomized"]
Allocation = Literal["uniform", "optimal"]
METHODS = ("exact", "randomized")
ALLOCATIONS = ("uniform", "optimal")
DEFAULT_GRIDS: tuple[int, ...] = (2, 4, 8, 16)  # K = 1 and N = 1 are the global structure


# -- singular values of the blocks of one structure --------------------------------------------


@dataclass(frozen=True)
class BlockSpectra:
    """Squared singular values of the active blocks of one structure family on one grid.

    Values refer to the matrix divided by a power of two (exact), so only ratios matter.

    Attributes
    ----------
    family : str
        ``'global'``, ``'diagonal'`` or ``'grid'``.
    partition : Partition
        The partition of the matrix.
    blocks : tuple of (int, int)
        Active blocks, row-major.
    costs : numpy.ndarray
        ``m_b + n_b`` for every active block (parameters per unit of rank).
    max_ranks : numpy.ndarray
        ``min(m_b, n_b)`` for every active block.
    sq : numpy.ndarray, shape (n_blocks, L)
        Squared singular values, descending, zero-padded on the right.
    known : numpy.ndarray
        How many leading values of every block are known (all of them for ``complete``).
    energies : numpy.ndarray
        Squared Frobenius norm of every active block.
    outside : float
        Energy of the blocks the structure leaves out (off-diagonal blocks of a diagonal one).
    complete : bool
        Whether all singular values are known (exact method) or only the leading ones.
    """

    family: str
    partition: Partition
    blocks: tuple[tuple[int, int], ...]
    costs: np.ndarray
    max_ranks: np.ndarray
    sq: np.ndarray
    known: np.ndarray
    energies: np.ndarray
    outside: float
    complete: bool

    @property
    def total(self) -> float:
        return float(self.energies.sum()) + self.outside

    @property
    def uniform_max_rank(self) -> int:
        """Largest rank every block can take (limited by ``known`` for partial spectra)."""
        return int(min(self.max_ranks.min(), self.known.min()))

    @property
    def uniform_unit_cost(self) -> int:
        """Parameters per unit of uniform rank: ``Σ_b (m_b + n_b)``."""
        return int(self.costs.sum())

    def uniform_errors(self) -> np.ndarray:
        """Relative error for uniform rank ``r = 1 .. uniform_max_rank`` (index ``r − 1``)."""
        total = self.total
        rmax = self.uniform_max_rank
        col = self.sq.sum(axis=0)
        if self.complete:
            # err²(r) = Σ_{i ≥ r} colsum_i: a reverse cumulative sum, no cancellation.
            tails = np.cumsum(col[::-1])[::-1]
            tails = np.append(tails, 0.0)
            err_sq = tails[1 : rmax + 1] + self.outside
        else:
            err_sq = self.energies.sum() - np.cumsum(col)[:rmax] + self.outside
        return _relative(err_sq, total)


def _relative(err_sq: np.ndarray, total: float) -> np.ndarray:
    if total == 0.0:
        return np.zeros_like(np.asarray(err_sq, dtype=np.float64))
    return np.sqrt(np.clip(np.asarray(err_sq, dtype=np.float64) / total, 0.0, 1.0))


def _check_method(method: object) -> str:
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not allowed; use one of {', '.join(METHODS)}")
    return str(method)


def block_spectra(
    W: Any,
    family: str,
    grid: int | tuple[int, int],
    *,
    method: Method = "exact",
    max_rank: int | None = None,
    oversampling: int = 10,
    n_iter: int = 4,
    random_state: int | np.random.Generator | None = None,
    _prepared: tuple[Any, Any] | None = None,
) -> BlockSpectra:
    """Singular values of the blocks of one structure family on one grid.

    Parameters
    ----------
    W : array_like, shape (m, n)
        The matrix (any backend).
    family : {'global', 'diagonal', 'grid'}
        Which blocks are active.
    grid : int or (int, int)
        ``K``/``N`` or ``(p, q)``; ignored for ``'global'``.
    method : {'exact', 'randomized'}
        ``'exact'``: all singular values of every block (batched ``svdvals``).
        ``'randomized'``: the leading ``max_rank`` values per block by the batched randomized
        range finder (:func:`lowrank_blocks.linalg.randomized_svd_stack`); groups where that
        is no cheaper than the full decomposition use the exact one.
    max_rank : int, optional
        With ``'randomized'``: how many leading values are needed per block.  Required there.
    oversampling, n_iter, random_state
        Options of the randomized range finder.

    Examples
    --------
    >>> import numpy as np
    >>> spec = block_spectra(np.eye(6), "grid", 2)
    >>> spec.uniform_errors().round(4).tolist()
    [0.8165, 0.5774, 0.0]
    """
    method = _check_method(method)
    oversampling, n_iter = _check_randomized_options(oversampling, n_iter)
    if family not in FAMILIES:
        raise ValueError(f"family={family!r} is not allowed; use one of {', '.join(FAMILIES)}")
    if _prepared is None:
        W, xp = as_matrix(W)
        Ws = W / power_of_two_scale(W, xp)
    else:
        Ws, xp = _prepared
    shape = (int(Ws.shape[0]), int(Ws.shape[1]))
    g = (1, 1) if family == "global" else BlockGrid(grid, 1).grid
    structure = _make(family, g, 1)
    part = structure.partition(shape)
    blocks = structure.blocks
    sizes = np.array([part.block_shape(i, j) for i, j in blocks], dtype=np.int64)
    max_ranks = sizes.min(axis=1)
    L = int(max_ranks.max())
    sq = np.zeros((len(blocks), L))
    known = max_ranks.copy()
    rng = np.random.default_rng(random_state)
    if method == "randomized":
        if max_rank is None:
            raise ValueError("method='randomized' needs max_rank (leading values per block)")
        max_rank = _as_int(max_rank, "max_rank", minimum=1)
    for (mb, nb), positions in block_groups(part, blocks).items():
        stack = stack_blocks(Ws, part, [blocks[k] for k in positions], xp)
        k_needed = min(mb, nb) if method == "exact" else min(max_rank, min(mb, nb))  # type: ignore[type-var]
        # The range finder does (2 n_iter + 2) products with k + oversampling vectors; measured
        # on 2 cores (benchmarks/bench_surfaces.py) it beats a full svdvals until that sample
        # count reaches about 2.5 min(m_b, n_b): beyond, the exact decomposition is used.
        sample = (2 * n_iter + 2) * (k_needed + oversampling)
        if method == "randomized" and sample < 2.5 * min(mb, nb) and k_needed + oversampling < min(mb, nb):
            S = randomized_svd_stack(
                stack, k_needed, xp, oversampling=oversampling, n_iter=n_iter,
                random_state=rng, compute_uv=False,
            )
        else:
            S = svdvals_stack(stack, xp)
        S = to_numpy(S).astype(np.float64)
        sq[positions, : S.shape[1]] = S * S
        known[positions] = S.shape[1]
    energies_grid = block_energies(Ws, part, xp)
    active = np.zeros(part.grid, dtype=bool)
    for i, j in blocks:
        active[i, j] = True
    energies = np.array([energies_grid[i, j] for i, j in blocks])
    return BlockSpectra(
        family=family,
        partition=part,
        blocks=blocks,
        costs=sizes.sum(axis=1),
        max_ranks=max_ranks,
        sq=sq,
        known=known,
        energies=energies,
        outside=float(energies_grid[~active].sum()),
        complete=bool(np.all(known >= max_ranks)),
    )


# -- rank allocation ----------------------------------------------------------------------------


def _allocation(spec: BlockSpectra, budgets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exactly optimal per-block ranks for every budget: ``(ranks, n_params, relative error)``."""
    lengths = np.minimum(spec.known, spec.max_ranks)
    gains = [spec.sq[b, : lengths[b]] for b in range(len(spec.blocks))]
    sol = solve_allocation(spec.costs, gains, budgets)
    if spec.complete:
        err_sq = sol.left + spec.outside  # untaken gains summed directly
    else:
        err_sq = spec.energies.sum() - sol.gain + spec.outside
    return sol.ranks, sol.used, _relative(err_sq, spec.total)


def allocate_ranks(spec: BlockSpectra, budget: int) -> tuple[int, ...]:
    """Per-block ranks with at most ``budget`` parameters that minimise the error, exactly.

    A multiple-choice knapsack with concave gains, solved exactly by
    :func:`lowrank_blocks.allocation.solve_allocation` (also on ragged partitions, where the
    greedy scan by ``σ² / (m_b + n_b)`` is not optimal).

    Examples
    --------
    >>> import numpy as np
    >>> W = np.diag([4.0, 3.0, 2.0, 1.0])
    >>> allocate_ranks(block_spectra(W, "grid", 2), 8)   # blocks cost 4; keep 4² and 3²
    (2, 0, 0, 0)
    """
    budget = _as_int(budget, "budget", minimum=0)
    ranks, _, _ = _allocation(spec, np.array([budget], dtype=np.int64))
    return tuple(int(r) for r in ranks[0])


# -- tables -------------------------------------------------------------------------------------


def _grid_label(family: str, grid: tuple[int, int]) -> str:
    if family == "global":
        return "1×1"
    return f"{grid[0]}×{grid[1]}"


def _specs(
    W: Any,
    families: Sequence[str],
    grids: Any,
    diagonal: Any,
    method: str,
    rank_for: Any,
    oversampling: int,
    n_iter: int,
    random_state: Any,
    progress: bool,
) -> list[BlockSpectra]:
    from tqdm.auto import tqdm

    W, xp = as_matrix(W)
    shape = (int(W.shape[0]), int(W.shape[1]))
    Ws = W / power_of_two_scale(W, xp)
    jobs: list[tuple[str, tuple[int, int]]] = []
    for fam in families:
        if fam not in FAMILIES:
            raise ValueError(f"families contains {fam!r}; allowed: {', '.join(FAMILIES)}")
        if fam == "global":
            jobs.append((fam, (1, 1)))
        elif fam == "diagonal":
            for g in expand_grids(diagonal, shape, "diagonal"):
                if g[0] != g[1]:
                    raise ValueError(f"diagonal contains {g!r}; diagonal structures need N × N")
                jobs.append((fam, g))
        else:
            jobs.extend((fam, g) for g in expand_grids(grids, shape, "grids"))
    rng = np.random.default_rng(random_state)
    out = []
    for fam, g in tqdm(jobs, disable=None if progress else True, desc="block spectra", leave=False):
        max_rank = rank_for(fam, g, shape) if method == "randomized" else None
        if max_rank is not None and max_rank < 1:
            continue
        out.append(
            block_spectra(
                None, fam, g, method=method, max_rank=max_rank,  # type: ignore[arg-type]
                oversampling=oversampling, n_iter=n_iter, random_state=rng,
                _prepared=(Ws, xp),
            )
        )
    return out


def _default_grids(shape: tuple[int, int]) -> list[int]:
    return [k for k in DEFAULT_GRIDS if k <= min(shape)] or [1]  # a 1 × n matrix: K = 1 only


def error_surface(
    W: Any,
    grids: Iterable[int | tuple[int, int]] | str | None = None,
    *,
    diagonal: Iterable[int] | str | None = None,
    families: Sequence[str] = FAMILIES,
    method: Method = "exact",
    max_params: int | None = None,
    oversampling: int = 10,
    n_iter: int = 4,
    random_state: int | np.random.Generator | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Relative error and parameter count for every structure, grid and uniform rank.

    Computed from the blocks' singular values only (no reconstruction is formed); ragged
    partitions included.

    Parameters
    ----------
    W : array_like, shape (m, n)
        The matrix (NumPy, CuPy, PyTorch or other Array API array).
    grids : iterable of K or (p, q), or 'all' / 'square' / 'pow2', optional
        Block grids (family ``'grid'``).  Default ``K ∈ {2, 4, 8, 16}`` that fit (``K = 1`` is
        the global structure).
    diagonal : iterable of N or 'square', optional
        Diagonal block counts.  Default: the same ``K`` values.
    families : sequence of {'global', 'diagonal', 'grid'}
        Families to include.
    method : {'exact', 'randomized'}
        Exact ``svdvals`` of every block, or the randomized range finder for the leading values
        (see :func:`block_spectra`).
    max_params : int, optional
        Keep only ranks with at most this many parameters.  With ``method='randomized'`` it
        bounds the singular values computed; default there ``m n // 10`` (10 % of dense).
    oversampling, n_iter, random_state
        Options of the randomized method.
    progress : bool, default False
        Show a progress bar over the grids.

    Returns
    -------
    pandas.DataFrame
        One row per (structure, grid, rank): ``structure`` (family), ``method`` (paper name),
        ``grid`` (label ``'p×q'``), ``p``, ``q``, ``rank``, ``n_params``, ``error``.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.random.default_rng(0).standard_normal((16, 16))
    >>> surf = error_surface(W, grids=[1, 2, 4])
    >>> sorted(surf["structure"].unique())
    ['diagonal', 'global', 'grid']
    >>> int(surf.query("structure == 'grid' and p == 2 and rank == 8")["error"].iloc[0])
    0
    """
    method = _check_method(method)
    oversampling, n_iter = _check_randomized_options(oversampling, n_iter)
    W, xp = as_matrix(W)
    shape = (int(W.shape[0]), int(W.shape[1]))
    if max_params is not None:
        max_params = _as_int(max_params, "max_params", minimum=1)
    elif method == "randomized":
        max_params = max(1, shape[0] * shape[1] // 10)
    grids = _default_grids(shape) if grids is None else grids
    diagonal = _default_grids(shape) if diagonal is None else diagonal

    def rank_for(fam: str, g: tuple[int, int], shp: tuple[int, int]) -> int:
        return int(max_params // _rank_unit_cost(fam, shp, g))  # type: ignore[operator]

    specs = _specs(W, families, grids, diagonal, method, rank_for, oversampling, n_iter,
                   random_state, progress)
    frames = []
    for spec in specs:
        errors = spec.uniform_errors()
        ranks = np.arange(1, len(errors) + 1)
        n_params = ranks * spec.uniform_unit_cost
        keep = n_params <= max_params if max_params is not None else slice(None)
        p, q = spec.partition.grid
        frames.append(
            pd.DataFrame(
                {
                    "structure": spec.family,
                    "method": _make(spec.family, (p, q), 1).paper_name,
                    "grid": _grid_label(spec.family, (p, q)),
                    "p": p,
                    "q": q,
                    "rank": ranks[keep],
                    "n_params": n_params[keep],
                    "error": errors[keep],
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if frame.empty:
        raise ValueError(
            f"max_params={max_params} is below the cheapest configuration searched for a "
            f"{shape[0]} × {shape[1]} matrix; allow at least {shape[0] + shape[1]} parameters"
        )
    return frame


def _check_budgets(budgets: Any) -> np.ndarray:
    if isinstance(budgets, (int, np.integer)) and not isinstance(budgets, bool):
        budgets = [budgets]
    values = list(budgets)
    if not values:
        raise ValueError("budgets is empty; give at least one positive integer budget")
    return np.array([_as_int(b, f"budgets[{k}]", minimum=1) for k, b in enumerate(values)],
                    dtype=np.int64)


def _check_allocations(allocations: Any) -> tuple[str, ...]:
    allocs = (allocations,) if isinstance(allocations, str) else tuple(allocations)
    for a in allocs:
        if a not in ALLOCATIONS:
            raise ValueError(
                f"allocation={a!r} is not allowed; use one of {', '.join(ALLOCATIONS)}"
            )
    if not allocs:
        raise ValueError("allocation is empty; use 'uniform', 'optimal' or both")
    return allocs


def _curve_rows(
    specs: list[BlockSpectra],
    budgets: np.ndarray,
    allocs: Sequence[str],
    count_rank_overhead: bool = False,
) -> pd.DataFrame:
    rows = []
    for spec in specs:
        p, q = spec.partition.grid
        base = {
            "structure": spec.family,
            "method": _make(spec.family, (p, q), 1).paper_name,
            "grid": _grid_label(spec.family, (p, q)),
            "p": p,
            "q": q,
        }
        if "uniform" in allocs:
            errors = spec.uniform_errors()
            unit = spec.uniform_unit_cost
            r = np.minimum(budgets // unit, len(errors))
            ok = r >= 1
            rows.append(pd.DataFrame({
                **base, "allocation": "uniform", "budget": budgets[ok],
                "rank": r[ok], "n_params": r[ok] * unit, "error": errors[r[ok] - 1],
                "rank_overhead": 0,
            }))
        if "optimal" in allocs:
            overhead = len(spec.blocks) if len(spec.blocks) > 1 else 0
            usable = budgets - overhead if count_rank_overhead else budgets
            _, used, errors = _allocation(spec, np.maximum(usable, 0))
            ok = usable >= int(spec.costs.min())
            rows.append(pd.DataFrame({
                **base, "allocation": "optimal", "budget": budgets[ok],
                "rank": pd.NA, "n_params": used[ok], "error": errors[ok],
                "rank_overhead": overhead,
            }))
    frame = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    if not frame.empty:
        frame["rank"] = frame["rank"].astype("Int64")
    return frame


def error_vs_budget(
    W: Any,
    budgets: int | Iterable[int],
    *,
    families: Sequence[str] = FAMILIES,
    grids: Iterable[int | tuple[int, int]] | str | None = None,
    diagonal: Iterable[int] | str | None = None,
    allocation: Allocation | Sequence[Allocation] = ("uniform", "optimal"),
    method: Method = "exact",
    best_only: bool = True,
    count_rank_overhead: bool = False,
    oversampling: int = 10,
    n_iter: int = 4,
    random_state: int | np.random.Generator | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Best error of every structure family at every budget.

    Parameters
    ----------
    W : array_like, shape (m, n)
        The matrix.
    budgets : int or iterable of int
        Parameter budgets (positive integers).
    families : sequence of {'global', 'diagonal', 'grid'}
        Families compared.
    grids, diagonal
        Grids searched for ``'grid'`` and block counts for ``'diagonal'`` (as in
        :func:`error_surface`; default ``K ∈ {2, 4, 8, 16}``).
    allocation : 'uniform', 'optimal' or both
        ``'uniform'``: one rank for every block, the largest that fits (the paper's setting).
        ``'optimal'``: per-block ranks that minimise the error within the budget, exactly
        (:func:`lowrank_blocks.allocation.solve_allocation`).
    method : {'exact', 'randomized'}
        How the singular values are computed (see :func:`block_spectra`).
    best_only : bool, default True
        One row per (family, allocation, budget): the grid with the smallest error.  ``False``
        returns every grid.
    count_rank_overhead : bool, default False
        Charge per-block allocations for storing their ranks (one integer per block), so that
        ``n_params + rank_overhead <= budget``.  By default the overhead is only reported.
    oversampling, n_iter, random_state, progress
        As in :func:`error_surface`.

    Returns
    -------
    pandas.DataFrame
        Columns ``structure``, ``method`` (paper name), ``grid``, ``p``, ``q``, ``allocation``,
        ``budget``, ``rank`` (uniform rank; missing for per-block allocations), ``n_params``
        (``<= budget``), ``error`` and ``rank_overhead`` (integers needed to store per-block
        ranks; not included in ``n_params``).

    Raises
    ------
    ValueError
        For an empty budget list, a budget below the cheapest configuration, an unknown
        allocation or method, or grids that do not fit.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.random.default_rng(0).standard_normal((28, 28))
    >>> curve = error_vs_budget(W, [224, 448])
    >>> curve.groupby("allocation")["n_params"].max().le(448).all()
    np.True_
    """
    method = _check_method(method)
    oversampling, n_iter = _check_randomized_options(oversampling, n_iter)
    allocs = _check_allocations(allocation)
    budget_arr = _check_budgets(budgets)
    W, xp = as_matrix(W)
    shape = (int(W.shape[0]), int(W.shape[1]))
    grids = _default_grids(shape) if grids is None else grids
    diagonal = _default_grids(shape) if diagonal is None else diagonal
    top = int(budget_arr.max())

    def rank_for(fam: str, g: tuple[int, int], shp: tuple[int, int]) -> int:
        m, n = shp
        block_cost = m // g[0] + n // g[1]  # the cheapest block
        cap = top // block_cost if "optimal" in allocs else top // _rank_unit_cost(fam, shp, g)
        return int(cap)

    specs = _specs(W, families, grids, diagonal, method, rank_for, oversampling, n_iter,
                   random_state, progress)
    frame = _curve_rows(specs, budget_arr, allocs, count_rank_overhead)
    missing = sorted(set(budget_arr.tolist()) - set(frame["budget"].tolist() if not frame.empty else []))
    if missing:
        costs = [s.uniform_unit_cost for s in specs]
        if "optimal" in allocs:
            costs += [int(s.costs.min()) for s in specs]
        cheapest = min(costs) if costs else shape[0] + shape[1]
        raise ValueError(
            f"budget={missing[0]} is below the cheapest configuration searched for a "
            f"{shape[0]} × {shape[1]} matrix; budgets of at least {cheapest} parameters "
            f"are allowed"
        )
    if best_only:
        idx = frame.groupby(["structure", "allocation", "budget"], sort=False)["error"].idxmin()
        frame = frame.loc[np.sort(idx.to_numpy())].reset_index(drop=True)
    return frame


@dataclass(frozen=True, repr=False)
class SearchResult(Approximation):
    """An :class:`~lowrank_blocks.Approximation` found by :func:`best_approximation`.

    Attributes
    ----------
    budget : int
        The budget searched.
    search : pandas.DataFrame
        Every configuration searched (as :func:`error_vs_budget` with ``best_only=False``).
    """

    budget: int = 0
    search: pd.DataFrame | None = None


def best_approximation(
    W: Any,
    budget: int,
    *,
    families: Sequence[str] = FAMILIES,
    grids: Iterable[int | tuple[int, int]] | str | None = None,
    diagonal: Iterable[int] | str | None = None,
    allocation: Allocation | Sequence[Allocation] = ("uniform", "optimal"),
    method: Method = "exact",
    count_rank_overhead: bool = False,
    oversampling: int = 10,
    n_iter: int = 4,
    random_state: int | np.random.Generator | None = None,
    progress: bool = False,
) -> SearchResult:
    """Search grids and rank allocations for the smallest error within a parameter budget.

    The chosen configuration is then computed with :func:`~lowrank_blocks.approximate`, so the
    factors returned really have the reported parameter count and error.

    Parameters
    ----------
    W : array_like, shape (m, n)
        The matrix.
    budget : int
        Largest parameter count allowed (per-block rank storage not included: see
        ``rank_overhead``).
    families, grids, diagonal, allocation, method, count_rank_overhead, oversampling, n_iter,
    random_state, progress
        As in :func:`error_vs_budget`; ``grids`` defaults to every ``p × q`` grid for matrices
        of at most 64 × 64 entries and to power-of-two grids otherwise.

    Returns
    -------
    SearchResult
        An :class:`~lowrank_blocks.Approximation` with ``search`` (the table of everything
        searched) and ``budget``.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.random.default_rng(0).standard_normal((12, 12))
    >>> best = best_approximation(W, 96)
    >>> best.n_params <= 96 and bool(best.error <= best.search["error"].min() + 1e-12)
    True
    """
    budget = _as_int(budget, "budget", minimum=1)
    Wm, _ = as_matrix(W)
    shape = (int(Wm.shape[0]), int(Wm.shape[1]))
    if grids is None:
        grids = "all" if shape[0] * shape[1] <= 64 * 64 else "pow2"
    if diagonal is None:
        small = min(shape) <= 64
        diagonal = "square" if small else [2**e for e in range(min(shape).bit_length())]
    allocs = _check_allocations(allocation)
    frame = error_vs_budget(
        Wm, [budget], families=families, grids=grids, diagonal=diagonal, allocation=allocs,
        method=method, best_only=False, count_rank_overhead=count_rank_overhead,
        oversampling=oversampling, n_iter=n_iter,
        random_state=random_state, progress=progress,
    )
    best = frame.loc[frame["error"].idxmin()]
    family, p, q = best["structure"], int(best["p"]), int(best["q"])
    if best["allocation"] == "uniform":
        structure = _make(family, (p, q), 1).with_rank(int(best["rank"]))
    else:
        spec = block_spectra(
            Wm, family, (p, q), method=method, max_rank=max(1, budget // int(min(shape))),
            oversampling=oversampling, n_iter=n_iter, random_state=random_state,
        )
        usable = budget - int(best["rank_overhead"]) if count_rank_overhead else budget
        ranks = list(allocate_ranks(spec, usable))
        if not any(ranks):  # nothing to gain (zero blocks): rank 1 on the cheapest, same error
            ranks[int(np.argmin(spec.costs))] = 1
        structure = _make(family, (p, q), 1).with_rank(ranks)
    approx = approximate(Wm, structure, method=method, oversampling=oversampling,
                         n_iter=n_iter, random_state=random_state)
    fields = {f: getattr(approx, f) for f in Approximation.__dataclass_fields__}
    return SearchResult(**fields, budget=budget, search=frame)
