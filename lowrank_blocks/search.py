"""Error surfaces, error-vs-budget curves and the search for the best structure at a budget.

Everything here reads block spectra (:mod:`lowrank_blocks.spectra`): one batched ``svdvals`` per
grid gives the error of every uniform rank and, through the exact knapsack of
:mod:`lowrank_blocks.allocation`, of the optimal per-block ranks at any list of budgets, without
forming a reconstruction.  Families share spectra: the diagonal blocks of an ``N × N`` grid and
the ``1 × 1`` grid of the global structure are computed once.

Results are objects holding their :class:`~lowrank_blocks.Structure`\\ s, with ``.to_frame()``:
:class:`Surface`, :class:`Curve` and :class:`Search`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from ._validate import check_random_state
from ._validate import check_randomized_options as _check_randomized_options
from .approximate import Approximation, approximate_prepared
from .budgets import check_budget, check_budgets
from .linalg import run_concurrently
from .spectra import BlockSpectra, PreparedMatrix, check_method, prepare, spectra_of
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
    "Curve",
    "CurvePoint",
    "Search",
    "Surface",
    "best_approximation",
    "default_grids",
    "error_surface",
    "error_vs_budget",
]

Method = Literal["auto", "exact", "randomized"]
Allocation = Literal["uniform", "optimal"]
ALLOCATIONS = ("uniform", "optimal")
DEFAULT_GRIDS: tuple[int, ...] = (2, 4, 8, 16)  # K = 1 and N = 1 are the global structure
FRAME_COLUMNS = ["family", "paper_name", "structure", "grid", "p", "q"]


def default_grids(shape: tuple[int, int]) -> list[int]:
    """``K ∈ {2, 4, 8, 16}`` that fit (``[1]`` for a vector)."""
    return [k for k in DEFAULT_GRIDS if k <= min(shape)] or [1]


# -- which spectra a table needs --------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    cls: type[Structure]
    grid: tuple[int, int]

    @property
    def unit(self) -> Structure:
        return self.cls.on_grid(self.grid, 1)


def _jobs(
    shape: tuple[int, int], types: Sequence[type[Structure]], grids: Any, diagonal: Any
) -> list[_Job]:
    """Every (family, grid) to compute, in the order of ``types`` and then of the grids."""
    jobs = []
    for cls in types:
        spec = diagonal if cls is DiagonalBlocks else grids
        jobs.extend(_Job(cls, g) for g in cls.candidate_grids(shape, spec))
    return jobs


def _computation_order(jobs: list[_Job]) -> list[_Job]:
    """Whole grids first, so the diagonal blocks of a grid already decomposed are reused."""
    order = {BlockGrid: 0, Global: 1, DiagonalBlocks: 2}
    return sorted(jobs, key=lambda j: order.get(j.cls, 3))


def _compute_spectra(
    prep: PreparedMatrix,
    jobs: list[_Job],
    method: str,
    rank_for: Callable[[_Job], int],
    oversampling: int,
    n_iter: int,
    rng: np.random.Generator,
    progress: bool,
) -> dict[_Job, BlockSpectra]:
    """Spectra of every job that can meet the budgets (``rank_for(job) >= 1``)."""
    from ._progress import progress_bar

    wanted = [j for j in _computation_order(jobs) if rank_for(j) >= 1]
    computed: dict[_Job, BlockSpectra] = {}
    if method in ("exact", "auto") and isinstance(prep.data, np.ndarray):
        # Whole grids (and the 1 × 1 grid) concurrently, largest first; then the diagonal
        # blocks, read from those grids or decomposed on their own.  'auto' certifies the
        # errors of every rank any job on the grid can take.
        whole = list(dict.fromkeys(
            j.grid for j in wanted if j.cls is not DiagonalBlocks))
        top = {g: max(rank_for(j) for j in wanted if j.grid == g) for g in whole}
        m, n = prep.shape
        costs = [m * n * min(m / p, n / q) for p, q in whole]
        with progress_bar(total=len(wanted), enabled=progress, desc="block spectra",
                          unit="grid") as bar:
            def task(grid: tuple[int, int]) -> Callable[[], BlockSpectra]:
                def run() -> BlockSpectra:
                    out = spectra_of(prep, grid, method=method, max_rank=top[grid])
                    bar.update(sum(1 for j in wanted if j.grid == grid
                                   and j.cls is not DiagonalBlocks))
                    return out
                return run

            run_concurrently([task(g) for g in whole], costs)
            for job in wanted:
                computed[job] = spectra_of(prep, job.grid, job.unit.blocks, method=method,
                                           max_rank=rank_for(job))
                if job.cls is DiagonalBlocks:
                    bar.update(1)
        return {job: computed[job] for job in jobs if job in computed}
    if method == "randomized" and isinstance(prep.data, np.ndarray) and len(wanted) > 1:
        # Every job concurrently, largest first, one BLAS thread each; the seeds are drawn
        # in job order first, so the result does not depend on the schedule.
        seeds = [int(rng.integers(0, 2**63 - 1)) for _ in wanted]
        m, n = prep.shape
        with progress_bar(total=len(wanted), enabled=progress, desc="block spectra",
                          unit="grid") as bar:
            def draw(job: _Job, seed: int) -> Callable[[], BlockSpectra]:
                def run() -> BlockSpectra:
                    out = prep.spectra(job.grid, job.unit.blocks, method="randomized",
                                       max_rank=rank_for(job), oversampling=oversampling,
                                       n_iter=n_iter, random_state=seed)
                    bar.update(1)
                    return out
                return run

            results = run_concurrently([draw(j, s) for j, s in zip(wanted, seeds)],
                                       [m * n * min(rank_for(j), m, n) for j in wanted])
        computed = dict(zip(wanted, results))
        return {job: computed[job] for job in jobs if job in computed}
    bar = progress_bar(wanted, enabled=progress, desc="block spectra", unit="grid")
    for job in bar:
        unit = job.unit
        if method in ("exact", "auto"):
            computed[job] = spectra_of(prep, job.grid, unit.blocks, method=method,
                                       max_rank=rank_for(job))
        else:  # one seed per job, drawn in job order (as the concurrent branch above)
            computed[job] = prep.spectra(
                job.grid, unit.blocks, method="randomized", max_rank=rank_for(job),
                oversampling=oversampling, n_iter=n_iter,
                random_state=int(rng.integers(0, 2**63 - 1)),
            )
    return {job: computed[job] for job in jobs if job in computed}  # in the order asked


def _method_used(method: str, spectra: dict[_Job, BlockSpectra]) -> str:
    """``'randomized'`` where any spectra are (blocks of a matrix larger than memory);
    ``'exact'`` for ``'auto'`` where every block was decomposed by SVD."""
    used = {s.method for s in spectra.values()}
    if "randomized" in used:
        return "randomized"
    return "exact" if method == "auto" and "auto" not in used else method


def _base_row(job: _Job) -> dict[str, Any]:
    p, q = job.grid
    return {"family": job.cls.family, "paper_name": job.cls.paper_name,
            "grid": f"{p}×{q}", "p": p, "q": q}


# -- surfaces -----------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Surface:
    """Relative error of every structure, grid and uniform rank (see :func:`error_surface`).

    Attributes
    ----------
    shape : (int, int)
        Shape of the matrix.
    method : str
        How the singular values were computed.
    entries : list of (Structure, int, float)
        ``(structure, n_params, error)`` for every structure, grid and rank, grouped by grid.
    """

    shape: tuple[int, int]
    method: str
    entries: list[tuple[Structure, int, float]]

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        grids = len({(type(s), s.grid) for s, _, _ in self.entries})
        return (f"Surface({self.shape[0]} × {self.shape[1]}, {grids} grids, "
                f"{len(self.entries)} configurations, method={self.method!r})")

    def to_frame(self) -> pd.DataFrame:
        """One row per configuration: ``family, paper_name, structure, grid, p, q, rank,
        n_params, error``."""
        rows = [
            {"family": s.family, "paper_name": s.paper_name, "structure": s,
             "grid": s.grid_label, "p": s.grid[0], "q": s.grid[1], "rank": s.rank,
             "n_params": n, "error": e}
            for s, n, e in self.entries
        ]
        return pd.DataFrame(rows, columns=FRAME_COLUMNS + ["rank", "n_params", "error"])

    def best(self, budget: int) -> pd.DataFrame:
        """Per family, the configuration with the smallest error within ``budget``."""
        budget = check_budget(budget)
        frame = self.to_frame()
        within = frame[frame["n_params"] <= budget]
        idx = within.groupby("family", sort=False)["error"].idxmin()
        return within.loc[idx.to_numpy()].reset_index(drop=True)


def error_surface(
    W: Any,
    grids: Iterable[int | tuple[int, int]] | str | None = None,
    *,
    diagonal: Iterable[int] | str | None = None,
    families: Sequence[str | type[Structure]] = STRUCTURE_TYPES,
    method: Method = "auto",
    max_params: int | None = None,
    oversampling: int = 10,
    n_iter: int = 4,
    random_state: int | np.random.Generator | None = None,
    progress: bool = False,
) -> Surface:
    """Relative error and parameter count for every structure, grid and uniform rank.

    Computed from the blocks' singular values only (no reconstruction is formed); ragged
    partitions included.  The diagonal structures and the global one reuse the spectra of the
    block grids (the diagonal blocks of an ``N × N`` grid are blocks of that grid).

    Parameters
    ----------
    W : array_like or PreparedMatrix, shape (m, n)
        The matrix (NumPy, CuPy, PyTorch or other Array API array).
    grids : iterable of K or (p, q), or 'all' / 'square' / 'pow2', optional
        Block grids of :class:`~lowrank_blocks.BlockGrid`.  Default ``K ∈ {2, 4, 8, 16}`` that
        fit (``K = 1`` is the global structure).
    diagonal : iterable of N, or 'square' / 'pow2', optional
        Diagonal block counts.  Default: the same ``K`` values.
    families : sequence of {'global', 'diagonal', 'grid'} or structure classes
        Families to include.
    method : {'auto', 'exact', 'randomized'}
        ``'auto'`` (default): every error certified to within 1e-6 of the exact one, by the
        blocks' Gram eigenvalues where the error bound of ``lowrank_blocks._gram`` allows it and
        by ``svdvals`` elsewhere; ``'exact'``: ``svdvals`` of every block; ``'randomized'``:
        the randomized block Krylov method for the leading values
        (:meth:`~lowrank_blocks.spectra.PreparedMatrix.spectra`); randomized errors are those
        of realizable approximations, so never below the exact ones.
    max_params : int, optional
        Keep only ranks with at most this many parameters.  With ``method='randomized'`` it
        bounds the singular values computed; default there ``m n // 10`` (10 % of dense).
    oversampling, n_iter, random_state
        Options of the randomized method.
    progress : bool, default False
        Show a progress bar over the grids.

    Returns
    -------
    Surface
        ``.to_frame()``: one row per (structure, grid, rank).

    Examples
    --------
    >>> import numpy as np
    >>> W = np.random.default_rng(0).standard_normal((16, 16))
    >>> surf = error_surface(W, grids=[1, 2, 4]).to_frame()
    >>> sorted(surf["family"].unique())
    ['diagonal', 'global', 'grid']
    >>> float(surf.query("family == 'grid' and p == 2 and rank == 8")["error"].iloc[0])
    0.0
    """
    method = check_method(method)
    oversampling, n_iter = _check_randomized_options(oversampling, n_iter)
    rng = check_random_state(random_state)
    types = structure_types(families)
    prep = prepare(W)
    shape = prep.shape
    if max_params is not None:
        max_params = check_budget(max_params, "max_params")
    elif method == "randomized":
        max_params = max(1, shape[0] * shape[1] // 10)
    grids = default_grids(shape) if grids is None else grids
    diagonal = default_grids(shape) if diagonal is None else diagonal
    jobs = _jobs(shape, types, grids, diagonal)

    def rank_for(job: _Job) -> int:
        unit = job.unit
        limit = unit.max_uniform_rank(shape)
        if max_params is None:
            return limit
        return min(limit, max_params // unit.unit_cost(shape))

    spectra = _compute_spectra(prep, jobs, method, rank_for, oversampling, n_iter, rng, progress)
    entries: list[tuple[Structure, int, float]] = []
    for job, spec in spectra.items():
        errors = spec.uniform_errors()
        unit_cost = spec.uniform_unit_cost
        unit = job.unit
        for r in range(1, len(errors) + 1):
            n_params = r * unit_cost
            if max_params is not None and n_params > max_params:
                break
            entries.append((unit.with_rank(r), n_params, float(errors[r - 1])))
    if not entries:
        raise ValueError(
            f"max_params={max_params} is below the cheapest configuration searched for a "
            f"{shape[0]} × {shape[1]} matrix; allow at least {shape[0] + shape[1]} parameters"
        )
    return Surface(shape, _method_used(method, spectra), entries)


# -- curves -----------------------------------------------------------------------------------


def _check_allocations(allocations: Any) -> tuple[str, ...]:
    if isinstance(allocations, str):
        allocs: tuple[Any, ...] = (allocations,)
    else:
        try:
            allocs = tuple(allocations)
        except TypeError:
            raise TypeError(
                f"allocation={allocations!r} must be 'uniform', 'optimal' or a list of them"
            ) from None
    for a in allocs:
        if a not in ALLOCATIONS:
            raise ValueError(
                f"allocation={a!r} is not allowed; use one of {', '.join(ALLOCATIONS)}"
            )
    if not allocs:
        raise ValueError("allocation is empty; use 'uniform', 'optimal' or both")
    return tuple(dict.fromkeys(allocs))


def _check_bool(value: object, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}={value!r} must be True or False")
    return bool(value)


@dataclass(frozen=True)
class CurvePoint:
    """One configuration at one budget."""

    structure: Structure
    allocation: str
    budget: int
    n_params: int
    rank_overhead: int
    error: float


@dataclass(frozen=True, repr=False)
class Curve:
    """Best error of every structure family at every budget (see :func:`error_vs_budget`).

    Attributes
    ----------
    shape : (int, int)
        Shape of the matrix.
    method : str
        How the singular values were computed.
    count_rank_overhead : bool
        Whether per-block rank integers were charged to the budget.
    points : list of CurvePoint
        One per (structure, allocation, budget) kept.
    """

    shape: tuple[int, int]
    method: str
    count_rank_overhead: bool
    points: list[CurvePoint]

    def __len__(self) -> int:
        return len(self.points)

    def __repr__(self) -> str:
        budgets = sorted({p.budget for p in self.points})
        return (f"Curve({self.shape[0]} × {self.shape[1]}, {len(budgets)} budgets, "
                f"{len(self.points)} points, method={self.method!r})")

    def to_frame(self) -> pd.DataFrame:
        """Columns ``family, paper_name, structure, grid, p, q, allocation, budget, rank,
        n_params, rank_overhead, error`` (``rank`` missing for per-block allocations)."""
        rows = [
            {"family": pt.structure.family, "paper_name": pt.structure.paper_name,
             "structure": pt.structure, "grid": pt.structure.grid_label,
             "p": pt.structure.grid[0], "q": pt.structure.grid[1],
             "allocation": pt.allocation, "budget": pt.budget,
             "rank": pt.structure.rank if pt.allocation == "uniform" else pd.NA,
             "n_params": pt.n_params, "rank_overhead": pt.rank_overhead, "error": pt.error}
            for pt in self.points
        ]
        frame = pd.DataFrame(rows, columns=FRAME_COLUMNS + [
            "allocation", "budget", "rank", "n_params", "rank_overhead", "error"])
        frame["rank"] = frame["rank"].astype("Int64")
        return frame

    def best(self) -> Curve:
        """One point per (family, allocation, budget): the grid with the smallest error."""
        best: dict[tuple[Any, ...], CurvePoint] = {}
        for pt in self.points:
            key = (type(pt.structure), pt.allocation, pt.budget)
            if key not in best or pt.error < best[key].error:
                best[key] = pt
        keep = {id(p) for p in best.values()}
        return Curve(self.shape, self.method, self.count_rank_overhead,
                     [p for p in self.points if id(p) in keep])


def _curve_points(
    spectra: dict[_Job, BlockSpectra],
    budgets: np.ndarray,
    allocs: Sequence[str],
    count_rank_overhead: bool,
) -> list[CurvePoint]:
    points: list[CurvePoint] = []
    for job, spec in spectra.items():
        unit = job.unit
        if "uniform" in allocs:
            errors = spec.uniform_errors()
            unit_cost = spec.uniform_unit_cost
            for b in budgets.tolist():
                r = min(b // unit_cost, len(errors))
                if r >= 1:
                    points.append(CurvePoint(unit.with_rank(r), "uniform", b, r * unit_cost, 0,
                                             float(errors[r - 1])))
        if "optimal" in allocs:
            points.extend(_optimal_points(job, spec, budgets, count_rank_overhead))
    return points


def _optimal_points(
    job: _Job, spec: BlockSpectra, budgets: np.ndarray, count_rank_overhead: bool
) -> list[CurvePoint]:
    """The exactly optimal per-block ranks of one grid at every budget.

    With the rank integers charged, per-block ranks have ``budget − n_blocks`` parameters
    while uniform ranks (one integer for all) have the whole budget: the optimum of the
    charged problem is the better of the two, so it never loses to the uniform allocation.
    """
    unit = job.unit
    shape = spec.partition.shape
    overhead = unit.n_active if unit.n_active > 1 else 0
    usable = budgets - overhead if count_rank_overhead else budgets.copy()
    uniform = spec.uniform_errors()
    unit_cost = spec.uniform_unit_cost
    points = []
    ok = usable >= int(spec.costs.min())
    per_block = {}
    if ok.any():
        ranks, used, errors = spec.allocate(usable[ok])
        per_block = dict(zip(budgets[ok].tolist(), zip(ranks, used.tolist(), errors.tolist())))
    for b in budgets.tolist():
        r = min(b // unit_cost, len(uniform))
        candidate = None
        if b in per_block:
            rk, n_used, e = per_block[b]
            structure = _with_block_ranks(unit, rk, spec)
            # Charged, the integers were reserved; uncharged, report what the ranks need
            # (none when they came out equal).
            reported = overhead if count_rank_overhead else structure.rank_overhead
            n_params = n_used if rk.any() else structure.n_params(shape)
            candidate = CurvePoint(structure, "optimal", b, n_params, reported, float(e))
        if count_rank_overhead and r >= 1 and (
            candidate is None or float(uniform[r - 1]) <= candidate.error
        ):  # uniform ranks store no per-block integers
            candidate = CurvePoint(unit.with_rank(r), "optimal", b, r * unit_cost, 0,
                                   float(uniform[r - 1]))
        if candidate is not None:
            points.append(candidate)
    return points


def _with_block_ranks(unit: Structure, ranks: np.ndarray, spec: BlockSpectra) -> Structure:
    """The structure with per-block ranks; rank 1 on the cheapest block if all are zero.

    All-zero ranks happen only when every block held has zero energy: then rank 1 on one
    block has the same (zero or left-out) error.
    """
    ranks = np.asarray(ranks, dtype=np.int64)
    if not ranks.any():
        ranks = ranks.copy()
        ranks[int(np.argmin(spec.costs))] = 1
    return unit.with_rank(ranks if len(ranks) > 1 else int(ranks[0]))


def _resolve_grids(shape: tuple[int, int], grids: Any, diagonal: Any) -> tuple[Any, Any]:
    return (default_grids(shape) if grids is None else grids,
            default_grids(shape) if diagonal is None else diagonal)


def _rank_needed(
    shape: tuple[int, int], top: int, allocs: Sequence[str], count_rank_overhead: bool
) -> Callable[[_Job], int]:
    """Largest rank a block of a job can get within the largest budget (0: skip the job)."""

    def rank_for(job: _Job) -> int:
        unit = job.unit
        best = 0
        if "uniform" in allocs:
            best = min(unit.max_uniform_rank(shape), top // unit.unit_cost(shape))
        if "optimal" in allocs:
            overhead = unit.n_active if unit.n_active > 1 else 0
            usable = top - overhead if count_rank_overhead else top
            cheapest = unit.min_block_cost(shape)
            if usable >= cheapest:
                best = max(best, min(unit.max_block_rank(shape), usable // cheapest))
        return best

    return rank_for


def error_vs_budget(
    W: Any,
    budgets: int | Iterable[int],
    *,
    families: Sequence[str | type[Structure]] = STRUCTURE_TYPES,
    grids: GridSpec | None = None,
    diagonal: GridSpec | None = None,
    allocation: Allocation | Sequence[Allocation] = ("uniform", "optimal"),
    method: Method = "auto",
    best_only: bool = True,
    count_rank_overhead: bool = True,
    oversampling: int = 10,
    n_iter: int = 4,
    random_state: int | np.random.Generator | None = None,
    progress: bool = False,
) -> Curve:
    """Best error of every structure family at every budget.

    Parameters
    ----------
    W : array_like or PreparedMatrix, shape (m, n)
        The matrix.
    budgets : int or iterable of int
        Parameter budgets (positive integers).
    families : sequence of {'global', 'diagonal', 'grid'} or structure classes
        Families compared.
    grids, diagonal
        Grids of :class:`~lowrank_blocks.BlockGrid` and block counts of
        :class:`~lowrank_blocks.DiagonalBlocks` (as in :func:`error_surface`; default
        ``K ∈ {2, 4, 8, 16}``).
    allocation : 'uniform', 'optimal' or both
        ``'uniform'``: one rank for every block, the largest that fits (the paper's setting).
        ``'optimal'``: per-block ranks that minimise the error within the budget, exactly
        (:func:`lowrank_blocks.allocation.solve_allocation`), for every budget in one pass.
    method : {'auto', 'exact', 'randomized'}
        How the singular values are computed (as in :func:`error_surface`).
    best_only : bool, default True
        One point per (family, allocation, budget): the grid with the smallest error.
        ``False`` keeps every grid.
    count_rank_overhead : bool, default True
        Charge per-block allocations for storing their ranks (one integer per block), so that
        ``n_params + rank_overhead <= budget``; grids whose rank integers alone exceed the
        budget are never computed.  ``False`` only reports the overhead.
    oversampling, n_iter, random_state, progress
        As in :func:`error_surface`.

    Returns
    -------
    Curve
        ``.to_frame()``: ``family, paper_name, structure, grid, p, q, allocation, budget,
        rank, n_params, rank_overhead, error``.

    Raises
    ------
    ValueError
        For an empty budget list, a budget below the cheapest configuration, an unknown
        allocation or method, or grids that do not fit.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.random.default_rng(0).standard_normal((28, 28))
    >>> curve = error_vs_budget(W, [224, 448]).to_frame()
    >>> bool((curve["n_params"] + curve["rank_overhead"] <= curve["budget"]).all())
    True
    """
    curve, _, _ = _curve(W, budgets, families, grids, diagonal, allocation, method, best_only,
                         count_rank_overhead, oversampling, n_iter, random_state, progress)
    return curve


def _curve(
    W: Any, budgets: Any, families: Any, grids: Any, diagonal: Any, allocation: Any,
    method: Any, best_only: Any, count_rank_overhead: Any, oversampling: Any, n_iter: Any,
    random_state: Any, progress: Any,
) -> tuple[Curve, dict[_Job, BlockSpectra], PreparedMatrix]:
    method = check_method(method)
    oversampling, n_iter = _check_randomized_options(oversampling, n_iter)
    rng = check_random_state(random_state)
    allocs = _check_allocations(allocation)
    budget_arr = check_budgets(budgets)
    best_only = _check_bool(best_only, "best_only")
    count_rank_overhead = _check_bool(count_rank_overhead, "count_rank_overhead")
    types = structure_types(families)
    prep = prepare(W)
    shape = prep.shape
    grids, diagonal = _resolve_grids(shape, grids, diagonal)
    jobs = _jobs(shape, types, grids, diagonal)
    rank_for = _rank_needed(shape, int(budget_arr.max()), allocs, count_rank_overhead)
    spectra = _compute_spectra(prep, jobs, method, rank_for, oversampling, n_iter, rng, progress)
    points = _curve_points(spectra, budget_arr, allocs, count_rank_overhead)
    missing = sorted(set(budget_arr.tolist()) - {p.budget for p in points})
    if missing:
        costs = []
        for job in jobs:
            unit = job.unit
            if "uniform" in allocs:
                costs.append(unit.unit_cost(shape))
            if "optimal" in allocs:
                overhead = unit.n_active if unit.n_active > 1 and count_rank_overhead else 0
                costs.append(unit.min_block_cost(shape) + overhead)
        cheapest = min(costs) if costs else shape[0] + shape[1]
        raise ValueError(
            f"budget={missing[0]} is below the cheapest configuration searched for a "
            f"{shape[0]} × {shape[1]} matrix; budgets of at least {cheapest} parameters "
            f"are allowed"
        )
    curve = Curve(shape, _method_used(method, spectra), count_rank_overhead, points)
    return (curve.best() if best_only else curve), spectra, prep


# -- search -------------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Search:
    """The best structure found within a budget (see :func:`best_approximation`).

    Attributes
    ----------
    approximation : Approximation
        The winning configuration, decomposed: its factors have exactly ``error``.
    budget : int
        The budget searched.
    table : Curve
        Every configuration searched (one point per grid and allocation); the winner is its
        row with the smallest error, and its factors reproduce that error (to rounding).
    grids_searched : int
        Number of grids whose spectra were computed.
    """

    approximation: Approximation
    budget: int
    table: Curve
    grids_searched: int = 0

    @property
    def structure(self) -> Structure:
        """The winning structure, with its ranks."""
        return self.approximation.structure

    @property
    def error(self) -> float:
        """Relative Frobenius error of the winner (the smallest of the table)."""
        return self.approximation.error

    @property
    def n_params(self) -> int:
        """Factor entries of the winner."""
        return self.approximation.n_params

    @property
    def rank_overhead(self) -> int:
        """Per-block rank integers the winner stores (0 for uniform ranks)."""
        return self.approximation.rank_overhead

    def to_frame(self) -> pd.DataFrame:
        """The search table (:meth:`Curve.to_frame`)."""
        return self.table.to_frame()

    def __repr__(self) -> str:
        return (f"Search(budget={self.budget}, best={self.structure!r}, "
                f"n_params={self.n_params}, rank_overhead={self.rank_overhead}, "
                f"error={self.error:.4g}, configurations={len(self.table)})")


def best_approximation(
    W: Any,
    budget: int,
    *,
    families: Sequence[str | type[Structure]] = STRUCTURE_TYPES,
    grids: GridSpec | None = None,
    diagonal: GridSpec | None = None,
    allocation: Allocation | Sequence[Allocation] = ("uniform", "optimal"),
    method: Method = "auto",
    count_rank_overhead: bool = True,
    oversampling: int = 10,
    n_iter: int = 4,
    random_state: int | np.random.Generator | None = None,
    progress: bool = False,
) -> Search:
    """Search grids and rank allocations for the smallest error within a parameter budget.

    The winner is then decomposed (its blocks only) so that the factors returned really have
    the reported parameter count and error; with ``method='randomized'`` the same random range
    is drawn again, so they have the error the search table reports (or, for blocks whose
    leading values came from float32 Gram matrices, a smaller one: their exact truncated SVD,
    below the reported error by at most its stated allowance, about ``1e-5``).

    Parameters
    ----------
    W : array_like or PreparedMatrix, shape (m, n)
        The matrix.
    budget : int
        Largest parameter count allowed, including the per-block rank integers unless
        ``count_rank_overhead=False``.
    families, grids, diagonal, allocation, method, count_rank_overhead, oversampling, n_iter,
    random_state, progress
        As in :func:`error_vs_budget`.  ``grids`` defaults to every ``p × q`` grid (and
        ``diagonal`` to every ``N``) for matrices of at most 64 × 64 entries, and to square
        power-of-two grids ``K × K`` otherwise (pass ``grids='pow2'`` to add every
        power-of-two ``p × q``, at about twice the cost).

    Returns
    -------
    Search
        ``.approximation`` (factors), ``.table`` (everything searched), ``.error`` and the
        rest.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.random.default_rng(0).standard_normal((12, 12))
    >>> best = best_approximation(W, 96)
    >>> best.n_params + best.rank_overhead <= 96
    True
    >>> bool(best.error == best.to_frame()["error"].min())
    True
    """
    budget = check_budget(budget)
    prep = prepare(W)
    shape = prep.shape
    if grids is None:
        small = shape[0] * shape[1] <= 64 * 64
        grids = "all" if small else [2**e for e in range(min(shape).bit_length())]
    if diagonal is None:
        diagonal = "square" if shape[0] * shape[1] <= 64 * 64 else "pow2"
    curve, spectra, prep = _curve(
        prep, [budget], families, grids, diagonal, allocation, method, False,
        count_rank_overhead, oversampling, n_iter, random_state, progress,
    )
    winner = min(range(len(curve.points)), key=lambda k: curve.points[k].error)
    point = curve.points[winner]
    spec = spectra[_Job(type(point.structure), point.structure.grid)]
    approx = approximate_prepared(prep, point.structure, spec.sampling)
    # The factors reproduce the table's error up to rounding (the same singular values, from
    # svd instead of svdvals, or the same random range drawn again), or, for randomized spectra
    # from float32 Gram matrices, do better by at most the allowance those carry; the result
    # reports the table's value, so that it is exactly the best row of its own table.
    approx = dataclasses.replace(approx, error=point.error)
    table = curve
    return Search(approx, budget, table, grids_searched=len(spectra))
