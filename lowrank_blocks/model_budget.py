"""One parameter budget for a whole model: the ranks (and structures) that minimise its error.

Given the weight matrices of a model (a checkpoint, a PEFT adapter's updates, or the update
``W_ft − W_base`` between two checkpoints: any source of :func:`lowrank_blocks.models.open_model`)
and one total budget ``B``, :func:`allocate_model` chooses per matrix the rank ``r_i`` of a
global factorization (LoRA) minimising the total error::

    minimise  Σ_i w_i Σ_{k > r_i} σ_{i,k}²   subject to   Σ_i r_i (m_i + n_i) <= B,

where ``w_i = 1 / ‖W_i‖_F²`` (``objective='relative'``, the default: every layer counts the
same, the total is the sum of squared relative errors) or ``w_i = 1`` (``'absolute'``: large
layers weigh more).  A rank-one term of an ``m × n`` matrix costs ``m + n`` parameters and
removes ``w σ²``: the concave multiple-choice knapsack of :mod:`lowrank_blocks.allocation`, with
one unit per matrix, solved exactly by :func:`~lowrank_blocks.allocation.solve_allocation` (on a
model, by its Lagrangian core: the bound pins every matrix to one or two candidate ranks, and a
DP over those alone finds the optimum, in milliseconds for hundreds of matrices).

Structures per matrix
---------------------
With ``structures=["global", "grid:2", "grid:4", "diagonal:4"]`` each matrix also chooses its
structure: one uniform rank ``s`` on every active block of the chosen option (what PEFT can hold:
LoRA is ``global``, GraLoRA is ``grid:k`` with rank ``r/k`` per block), costing ``s`` times the
option's unit cost (``m + n`` for global and diagonal, ``k (m + n)`` for a ``k × k`` grid).  The
union of several options' error curves is no longer convex, so the problem is a general
multiple-choice knapsack.  It is solved

* exactly by a dynamic programme over the budget (in units of the greatest common divisor of
  the costs) over each matrix's Pareto frontier of (cost, error), where that table is small
  enough (``max_exact_work``);
* otherwise by its Lagrangian (linear-programming) relaxation: each matrix's frontier is
  replaced by its lower convex hull, the hull segments are taken in order of error removed per
  parameter, and the value of the relaxation, with the one segment that does not fit taken
  fractionally, is a lower bound on the optimum (the Lagrangian dual bound; Sinha & Zoltners,
  1979).  The integer solution reported (the relaxation's segments that fit, improved by the
  best upgrades that still fit, and never worse than the exact global-only allocation) is
  feasible, so ``gap = reported − bound`` bounds how far it can be from the optimum.

Each matrix's spectra come from one module-level, picklable function of a
:class:`~lowrank_blocks.models.NamedMatrix`, :func:`matrix_spectra`, so they can be mapped over
the workers of a cluster (``map_fn=`` or ``client=``); the allocation afterwards needs the
spectra only.

References
----------
P. Sinha, A. A. Zoltners, "The multiple-choice knapsack problem", Operations Research 27(3),
1979.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ._validate import as_int
from .allocation import solve_allocation
from .spectra import block_spectra, prepare
from .structures import BlockGrid, DiagonalBlocks, Global, Structure

__all__ = [
    "MatrixSpectra",
    "ModelAllocation",
    "allocate_model",
    "matrix_spectra",
    "model_spectra",
    "parse_structure",
]

OBJECTIVES = ("relative", "absolute")
#: Exact structure choice when budget units × frontier items stay below this.
MAX_EXACT_WORK = 50_000_000

_OPTION = re.compile(r"^(global|grid|diagonal|diag)(?::(\d+))?$")


def parse_structure(text: str) -> str:
    """The canonical label of a structure option: ``'global'``, ``'grid:K'`` or ``'diagonal:N'``.

    Examples
    --------
    >>> parse_structure("grid:4"), parse_structure("diag:2"), parse_structure(" global ")
    ('grid:4', 'diagonal:2', 'global')
    >>> parse_structure("grid")
    Traceback (most recent call last):
    ...
    ValueError: structure 'grid' is not allowed; use 'global', 'grid:K' or 'diagonal:N' with K, N >= 1 (e.g. 'grid:2')
    """
    if not isinstance(text, str):
        raise TypeError(f"structure={text!r} must be a string such as 'global' or 'grid:2'")
    match = _OPTION.match(text.strip().lower())
    allowed = "use 'global', 'grid:K' or 'diagonal:N' with K, N >= 1 (e.g. 'grid:2')"
    if match is None:
        raise ValueError(f"structure {text!r} is not allowed; {allowed}")
    family, k = match.groups()
    if family == "global":
        if k not in (None, "1"):
            raise ValueError(f"structure {text!r} is not allowed; 'global' takes no size")
        return "global"
    if k is None or int(k) < 1:
        raise ValueError(f"structure {text!r} is not allowed; {allowed}")
    if int(k) == 1:
        return "global"
    return f"{'grid' if family == 'grid' else 'diagonal'}:{int(k)}"


def structure_of(label: str, rank: int) -> Structure:
    """The toolkit structure of an option label with uniform rank ``rank`` (>= 1).

    Examples
    --------
    >>> structure_of("grid:2", 3), structure_of("global", 4)
    (BlockGrid(grid=2, rank=3), Global(rank=4))
    """
    label = parse_structure(label)
    if label == "global":
        return Global(rank)
    family, k = label.split(":")
    return BlockGrid(int(k), rank=rank) if family == "grid" else DiagonalBlocks(int(k), rank=rank)


def _check_structures(structures: Any) -> tuple[str, ...]:
    if isinstance(structures, str):
        structures = [s for s in structures.split(",") if s.strip()]
    labels = []
    for s in structures:
        label = parse_structure(s)
        if label not in labels:
            labels.append(label)
    if not labels:
        raise ValueError("structures is empty; give at least one of 'global', 'grid:K', 'diagonal:N'")
    return tuple(labels)


# -- spectra of one matrix ----------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class MatrixSpectra:
    """What the model-wide allocation needs of one matrix (from :func:`matrix_spectra`).

    Attributes
    ----------
    name : str
        The matrix's name in its source.
    shape : (int, int)
        ``(m, n)``.
    energy : float
        ``‖W‖_F²``.
    sq : numpy.ndarray
        Squared singular values of the whole matrix, descending (``min(m, n)`` of them).
    curves : dict
        For every structure option that fits the matrix (``'global'``, ``'grid:K'``,
        ``'diagonal:N'``): ``(unit_cost, err_sq)`` with ``unit_cost`` the parameters of uniform
        rank 1 and ``err_sq[s]`` the squared error of uniform rank ``s = 0 .. s_max``
        (``err_sq[0] = energy``).
    """

    name: str
    shape: tuple[int, int]
    energy: float
    sq: np.ndarray = field(repr=False)
    curves: dict[str, tuple[int, np.ndarray]] = field(repr=False)

    @property
    def cost(self) -> int:
        """``m + n``: parameters of one rank of a global factorization."""
        return self.shape[0] + self.shape[1]


def _load(matrix: Any) -> tuple[str, np.ndarray]:
    if hasattr(matrix, "load") and hasattr(matrix, "name"):
        return str(matrix.name), matrix.load()
    name, array = matrix
    return str(name), array


def matrix_spectra(matrix: Any, structures: Sequence[str] = ("global",)) -> MatrixSpectra:
    """The spectra of one matrix under every structure option (picklable, for any worker).

    Parameters
    ----------
    matrix : NamedMatrix or (str, array)
        A matrix of :func:`~lowrank_blocks.models.open_model` (loaded here), or a name and a
        2-D array.
    structures : sequence of str
        Option labels (``'global'``, ``'grid:K'``, ``'diagonal:N'``); options whose blocks do
        not fit the matrix (``K > min(m, n)``) are left out of ``curves``.

    Returns
    -------
    MatrixSpectra

    Examples
    --------
    >>> import numpy as np
    >>> ms = matrix_spectra(("w", np.diag([3.0, 2.0, 1.0, 0.0])), ["global", "grid:2"])
    >>> ms.energy, ms.sq.tolist()
    (14.0, [9.0, 4.0, 1.0, 0.0])
    >>> ms.curves["global"][0], ms.curves["global"][1].tolist()
    (8, [14.0, 5.0, 1.0, 0.0, 0.0])
    >>> ms.curves["grid:2"][0], ms.curves["grid:2"][1].tolist()   # blocks diag(3,2), diag(1,0)
    (16, [14.0, 4.0, 0.0])
    """
    name, W = _load(matrix)
    labels = _check_structures(structures)
    P = prepare(W, name=name)
    m, n = P.shape
    curves: dict[str, tuple[int, np.ndarray]] = {}
    sq = None
    energy = None
    for label in ("global",) + tuple(lab for lab in labels if lab != "global"):
        family, _, k = label.partition(":")
        grid = int(k) if k else 1
        if grid > min(m, n):
            continue
        spec = block_spectra(P, family, grid)
        scale2 = float(spec.scale) ** 2
        col_tails = spec.tails().sum(axis=0)  # (L + 1,)
        s_max = spec.uniform_max_rank
        err = (col_tails[: s_max + 1] + spec.residual.sum() + float(spec.outside)) * scale2
        err[0] = float(spec.total) * scale2
        if label == "global":
            sq = spec.sq[0, : min(m, n)] * scale2
            energy = float(spec.total) * scale2
        if label in labels:
            curves[label] = (int(spec.uniform_unit_cost), err)
    return MatrixSpectra(name, (m, n), float(energy), np.asarray(sq), curves)


def _map(fn: Callable[[Any], Any], items: list[Any], map_fn: Any, client: Any,
         progress: bool, retries: int) -> list[Any]:
    if map_fn is not None and client is None:
        return list(map_fn(fn, items))
    from .distributed import map_matrices

    return map_matrices(fn, items, client=client, retries=retries, progress=progress,
                        desc="spectra")


def model_spectra(
    source: Any,
    structures: Sequence[str] | str = ("global",),
    *,
    base: Any = None,
    pattern: str | None = None,
    map_fn: Callable[[Callable[[Any], Any], list[Any]], Iterable[Any]] | None = None,
    client: Any = None,
    retries: int = 2,
    progress: bool = True,
) -> list[MatrixSpectra]:
    """:func:`matrix_spectra` of every matrix of a model.

    Parameters
    ----------
    source : model source, ModelMatrices, mapping of arrays or list of MatrixSpectra
        Anything :func:`~lowrank_blocks.models.open_model` reads (with ``base=`` for an update),
        or spectra computed before (returned as they are).
    structures : sequence of str or str
        Option labels, or one comma-separated string.
    base, pattern
        As in :func:`~lowrank_blocks.models.open_model`.
    map_fn : callable, optional
        ``map_fn(function, items)`` computing the spectra (a process pool's ``map``).
    client : dask.distributed.Client, cluster, address, int or None
        Computes the spectra on a Dask cluster, one task per matrix, each reading its own
        tensor on its worker (:func:`~lowrank_blocks.distributed.map_matrices`).
    retries : int
        Re-runs of a failed task on the cluster.
    progress : bool
        Progress bar for the serial loop.

    Examples
    --------
    >>> import numpy as np
    >>> spectra = model_spectra({"a": np.eye(3), "b": np.ones((2, 4))}, progress=False)
    >>> [(s.name, s.energy) for s in spectra]
    [('a', 3.0), ('b', 8.0)]
    """
    labels = _check_structures(structures)
    if isinstance(source, (list, tuple)) and source and all(
        isinstance(s, MatrixSpectra) for s in source
    ):
        return list(source)
    from .models import ModelMatrices, open_model

    mm = source if isinstance(source, ModelMatrices) else open_model(source, base=base,
                                                                      pattern=pattern)
    if len(mm) == 0:
        raise ValueError(f"{mm.source!r} holds no matrix to allocate a budget to")
    fn = functools.partial(matrix_spectra, structures=labels)
    return _map(fn, list(mm), map_fn, client, progress, retries)


# -- the result ----------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class ModelAllocation:
    """The structure and rank of every matrix of a model at one budget (:func:`allocate_model`).

    Attributes
    ----------
    spectra : list of MatrixSpectra
        One per matrix, in the source's order.
    choices : list of (str, int)
        The option label and its uniform rank per block of every matrix (rank 0: no adapter).
    budget : int
        The total parameter budget.
    objective : str
        ``'relative'`` or ``'absolute'``.
    total_error : float
        ``Σ_i w_i err_i²`` of the choice (the objective; relative: sum of squared relative
        errors).
    uniform_rank : int
        The largest rank ``r`` whose global factorization on every matrix (``min(r, rank)``
        where a matrix is smaller) fits the budget.
    uniform_error : float
        Its total error.
    method : str
        ``'exact knapsack'`` (global only), ``'exact dp'`` or ``'lagrangian'``.
    lower_bound : float
        A lower bound on the optimal total error (equal to ``total_error`` where exact).
    """

    spectra: list[MatrixSpectra]
    choices: list[tuple[str, int]]
    budget: int
    objective: str
    total_error: float
    uniform_rank: int
    uniform_error: float
    method: str
    lower_bound: float

    @property
    def gap(self) -> float:
        """``total_error − lower_bound`` (0 where the solution is exact)."""
        return max(0.0, self.total_error - self.lower_bound)

    @property
    def is_exact(self) -> bool:
        return self.method != "lagrangian" or self.gap == 0.0

    @property
    def n_params(self) -> int:
        """Parameters of the allocation."""
        return sum(s * ms.curves[label][0] if s else 0
                   for ms, (label, s) in zip(self.spectra, self.choices))

    @property
    def uniform_params(self) -> int:
        """Parameters of the uniform rank."""
        return sum(min(self.uniform_rank, len(ms.sq)) * ms.cost for ms in self.spectra)

    @property
    def ranks(self) -> dict[str, int]:
        """PEFT rank of every matrix: the global rank, or ``k · s`` for ``grid:k`` (GraLoRA's
        ``r``), ``N · s`` for ``diagonal:N``."""
        out = {}
        for ms, (label, s) in zip(self.spectra, self.choices):
            k = int(label.partition(":")[2] or 1)
            out[ms.name] = k * s
        return out

    def weight(self, ms: MatrixSpectra) -> float:
        return _weight(ms, self.objective)

    def structure(self, k: int) -> Structure | None:
        """The toolkit structure of matrix ``k`` (``None`` at rank 0)."""
        label, s = self.choices[k]
        return structure_of(label, s) if s else None

    def to_frame(self) -> pd.DataFrame:
        """One row per matrix: shape, structure, rank, parameters, relative error, and the same
        for the uniform rank."""
        rows = []
        for ms, (label, s) in zip(self.spectra, self.choices):
            err_sq = float(ms.curves[label][1][s])
            u = min(self.uniform_rank, len(ms.sq))
            u_err = float(ms.sq[u:].sum())
            rows.append({
                "name": ms.name,
                "rows": ms.shape[0],
                "cols": ms.shape[1],
                "structure": label,
                "rank": s,
                "n_params": s * ms.curves[label][0],
                "error": _rel(err_sq, ms.energy),
                "uniform_rank": u,
                "uniform_params": u * ms.cost,
                "uniform_error": _rel(u_err, ms.energy),
            })
        return pd.DataFrame(rows)

    def summary(self) -> pd.DataFrame:
        """The allocation against the uniform rank at the same total: parameters and total
        error (the objective), one row each.

        Examples
        --------
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> mats = {"a": np.diag([8.0, 1.0, 1.0]), "b": rng.standard_normal((3, 3))}
        >>> alloc = allocate_model(mats, budget=12, progress=False)
        >>> alloc.summary()["n_params"].tolist()
        [12, 12]
        """
        return pd.DataFrame(
            [
                {"choice": f"allocated ({self.method})", "n_params": self.n_params,
                 "total_error": self.total_error, "lower_bound": self.lower_bound,
                 "gap": self.gap},
                {"choice": f"uniform rank {self.uniform_rank}", "n_params": self.uniform_params,
                 "total_error": self.uniform_error, "lower_bound": np.nan, "gap": np.nan},
            ]
        )

    def describe(self) -> str:
        """One line: the totals against the uniform rank, and the gap when there is one."""
        ratio = (f" ({self.total_error / self.uniform_error:.3g}×)"
                 if self.uniform_error > 0 else "")
        text = (
            f"{_TOTAL_NAMES[self.objective]} {self.total_error:.6g} with {self.n_params:,} "
            f"parameters (budget {self.budget:,}; {self.method}) vs uniform rank "
            f"{self.uniform_rank}: {self.uniform_error:.6g} with {self.uniform_params:,} "
            f"parameters{ratio}"
        )
        if self.method == "lagrangian":
            text += (f"; Lagrangian lower bound {self.lower_bound:.6g}, optimality gap "
                     f"{self.gap:.3g} ({self.gap / max(self.total_error, 1e-300):.2%})")
        return text

    def __repr__(self) -> str:
        return (f"ModelAllocation({len(self.spectra)} matrices, budget={self.budget}, "
                f"objective={self.objective!r}, total_error={self.total_error:.6g}, "
                f"method={self.method!r})")


_TOTAL_NAMES = {"relative": "sum of squared relative errors", "absolute": "sum of squared errors"}


def _rel(err_sq: float, energy: float) -> float:
    return float(math.sqrt(min(1.0, max(0.0, err_sq / energy)))) if energy > 0 else 0.0


def _weight(ms: MatrixSpectra, objective: str) -> float:
    if objective == "absolute":
        return 1.0
    return 1.0 / ms.energy if ms.energy > 0 else 0.0


def uniform_choice(
    spectra: Sequence[MatrixSpectra], weights: Sequence[float], budget: int
) -> tuple[int, float]:
    """The uniform rank within ``budget`` (:func:`uniform_rank_at`) and its weighted total error."""
    u = uniform_rank_at(spectra, budget)
    lengths = np.fromiter((len(ms.sq) for ms in spectra), dtype=np.int64, count=len(spectra))
    flat = np.concatenate([ms.sq for ms in spectra]).astype(np.float64, copy=False)
    owner = np.repeat(np.arange(len(spectra)), lengths)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    left = np.arange(len(flat)) - starts[owner] >= u  # the squared values past rank u
    tails = np.bincount(owner, weights=np.where(left, flat, 0.0), minlength=len(spectra))
    return u, math.fsum((np.asarray(weights, dtype=np.float64) * tails).tolist())


# -- the allocation ------------------------------------------------------------------------------


def uniform_rank_at(spectra: Sequence[MatrixSpectra], budget: int) -> int:
    """The largest rank ``r`` with ``Σ_i min(r, rank_i) (m_i + n_i) <= budget``.

    Examples
    --------
    >>> import numpy as np
    >>> uniform_rank_at(model_spectra({"a": np.ones((4, 4))}, progress=False), 17)
    2
    """
    lengths = np.array([len(ms.sq) for ms in spectra], dtype=np.int64)
    costs = np.array([ms.cost for ms in spectra], dtype=np.int64)
    r = np.arange(int(lengths.max()) + 1)
    # Σ_i min(r, len_i) cost_i for every r, by the counts of matrices still growing at r
    growing = np.zeros(len(r), dtype=np.int64)
    np.add.at(growing, np.minimum(lengths, len(r) - 1), costs)
    slope = costs.sum() - np.cumsum(growing)  # cost of the (r+1)-th rank over all matrices
    cost = np.concatenate(([0], np.cumsum(slope[:-1])))
    return int(np.searchsorted(cost, budget, side="right") - 1)


def allocate_model(
    source: Any,
    budget: int | None = None,
    *,
    lora_rank: int | None = None,
    base: Any = None,
    structures: Sequence[str] | str = ("global",),
    objective: str = "relative",
    pattern: str | None = None,
    exact: bool | None = None,
    max_exact_work: int = MAX_EXACT_WORK,
    map_fn: Callable[[Callable[[Any], Any], list[Any]], Iterable[Any]] | None = None,
    client: Any = None,
    retries: int = 2,
    progress: bool = True,
) -> ModelAllocation:
    """Ranks (and structures) of every matrix of a model minimising the total error at a budget.

    Parameters
    ----------
    source : model source, ModelMatrices, mapping of arrays or list of MatrixSpectra
        See :func:`model_spectra`.
    budget : int, optional
        Total parameters for all the matrices together.
    lora_rank : int, optional
        Instead of `budget`: the total of a LoRA of rank ``r`` on every matrix,
        ``r Σ_i (m_i + n_i)``.
    base : model source, optional
        Allocate for the update ``source − base``.
    structures : sequence of str or str
        Options per matrix: ``'global'`` (default, the only one: exact knapsack),
        ``'grid:K'``, ``'diagonal:N'``.
    objective : {'relative', 'absolute'}
        ``'relative'``: minimise the sum of the matrices' squared relative errors;
        ``'absolute'``: the sum of their squared errors.
    pattern : str, optional
        Glob on the matrix names (as in ``open_model``).
    exact : bool, optional
        With several structure options: force the exact DP (``True``), or the Lagrangian
        relaxation (``False``); default: exact when ``budget units × frontier items <=
        max_exact_work``.
    max_exact_work : int
        See `exact`.
    map_fn, client, retries, progress
        How the spectra are computed (see :func:`model_spectra`).

    Returns
    -------
    ModelAllocation

    Raises
    ------
    ValueError
        Unknown objective or structure, both or neither of `budget` and `lora_rank`, a model
        without matrices.

    Examples
    --------
    >>> import numpy as np
    >>> mats = {"big": np.diag([10.0, 9.0, 1.0, 1.0]), "small": np.diag([1.0, 1.0, 1.0, 1.0])}
    >>> alloc = allocate_model(mats, budget=16, objective="absolute", progress=False)
    >>> alloc.ranks, alloc.total_error   # 16 parameters: two ranks of cost 8, both on 'big'
    ({'big': 2, 'small': 0}, 6.0)
    >>> alloc.uniform_rank, alloc.uniform_error   # rank 1 each: 81 + 1 + 1 left, and 3
    (1, 86.0)
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r} is not allowed; use 'relative' or 'absolute'")
    labels = _check_structures(structures)
    spectra = model_spectra(source, labels, base=base, pattern=pattern, map_fn=map_fn,
                            client=client, retries=retries, progress=progress)
    if (budget is None) == (lora_rank is None):
        raise ValueError("give exactly one of budget=N (total parameters) or lora_rank=r "
                         "(r (m + n) parameters on every matrix)")
    if budget is None:
        r = as_int(lora_rank, "lora_rank", minimum=1)
        budget = r * sum(ms.cost for ms in spectra)
    budget = as_int(budget, "budget", minimum=0)
    weights = [_weight(ms, objective) for ms in spectra]

    u, u_err = uniform_choice(spectra, weights, budget)
    # The global-only optimum: the exact concave knapsack.
    try:
        glob = solve_allocation([ms.cost for ms in spectra],
                                [ms.sq * w for ms, w in zip(spectra, weights)], budget)
    except ValueError as exc:  # too many distinct costs for the exact table: bound and gap
        if "needs a table" not in str(exc):
            raise
        frontiers = [_frontier(ms, w, ("global",)) for ms, w in zip(spectra, weights)]
        picks, total, bound = _lagrangian_choice(frontiers, budget)
        choices = [fr.labels[p] for fr, p in zip(frontiers, picks)]
        return ModelAllocation(spectra, choices, budget, objective, float(total), u, u_err,
                               "lagrangian", float(bound))
    g_ranks = [int(r) for r in glob.ranks[0]]
    g_err = float(glob.left[0])
    if labels == ("global",):
        return ModelAllocation(spectra, [("global", r) for r in g_ranks], budget, objective,
                               g_err, u, u_err, "exact knapsack", g_err)

    frontiers = [_frontier(ms, w, labels) for ms, w in zip(spectra, weights)]
    g = 0
    for fr in frontiers:
        for c in fr.costs:
            g = math.gcd(g, int(c))
    g = max(g, 1)
    work = (budget // g + 1) * sum(len(fr.costs) for fr in frontiers)
    use_exact = work <= max_exact_work if exact is None else bool(exact)
    if use_exact:
        picks, total = _exact_choice(frontiers, budget, g)
        method, bound = "exact dp", total
    else:
        picks, total, bound = _lagrangian_choice(frontiers, budget)
        method = "lagrangian"
        if g_err < total:  # the exact global-only allocation is feasible too
            picks = [fr.index_of("global", r) for fr, r in zip(frontiers, g_ranks)]
            total = g_err
        bound = min(bound, total)
    choices = [fr.labels[p] for fr, p in zip(frontiers, picks)]
    return ModelAllocation(spectra, choices, budget, objective, float(total), u, u_err, method,
                           float(bound))


@dataclass(frozen=True)
class _Frontier:
    """A matrix's Pareto-optimal (cost, weighted error) items, cost ascending."""

    costs: np.ndarray
    errors: np.ndarray
    labels: list[tuple[str, int]]
    all_labels: dict[tuple[str, int], tuple[int, float]]

    def index_of(self, label: str, s: int) -> int:
        for k, lab in enumerate(self.labels):
            if lab == (label, s):
                return k
        raise KeyError((label, s))  # pragma: no cover - the global items are on the frontier


def _frontier(ms: MatrixSpectra, w: float, labels: Sequence[str]) -> _Frontier:
    items = []
    for label in labels:
        if label not in ms.curves:
            continue
        unit, err = ms.curves[label]
        for s in range(len(err)):
            items.append((s * unit, w * float(err[s]), 0 if label == "global" else 1, label, s))
    # cost ascending, then error, then global first (a tie in both goes to the simplest)
    items.sort(key=lambda t: (t[0], t[1], t[2]))
    costs, errors, names = [], [], []
    best = math.inf
    for c, e, _, label, s in items:
        if e < best:
            costs.append(c)
            errors.append(e)
            names.append((label, s))
            best = e
    # the global items are kept on the frontier where they tie (for the global-only fallback)
    keep = {(label, s): (c, e) for c, e, _, label, s in items}
    for s in range(len(ms.curves["global"][1])):
        if ("global", s) not in names:
            c, e = keep[("global", s)]
            pos = int(np.searchsorted(np.array(costs), c, side="right"))
            costs.insert(pos, c)
            errors.insert(pos, e)
            names.insert(pos, ("global", s))
    return _Frontier(np.array(costs, dtype=np.int64), np.array(errors), names, keep)


def _exact_choice(frontiers: list[_Frontier], budget: int, g: int) -> tuple[list[int], float]:
    """Exact multiple-choice knapsack: DP over the budget ``0 .. B`` in units of ``g``."""
    from ._limits import check_bytes

    size = budget // g + 1
    check_bytes(4 * size * len(frontiers), "the exact structure-choice table",
                hint="use exact=False (the Lagrangian bound) or a smaller budget")
    best = np.zeros(size)
    choice = []
    for fr in frontiers:
        new = np.full(size, np.inf)
        arg = np.zeros(size, dtype=np.int32)
        for k, (c, e) in enumerate(zip((fr.costs // g).tolist(), fr.errors.tolist())):
            if c >= size:
                break
            cand = best[: size - c] + e
            tail = new[c:]
            better = cand < tail
            tail[better] = cand[better]
            arg[c:][better] = k
        best = new
        choice.append(arg)
    picks = [0] * len(frontiers)
    b = size - 1
    for i in range(len(frontiers) - 1, -1, -1):
        k = int(choice[i][b])
        picks[i] = k
        b -= int(frontiers[i].costs[k]) // g
    total = math.fsum(float(fr.errors[k]) for fr, k in zip(frontiers, picks))
    return picks, total


def _hull(costs: np.ndarray, errors: np.ndarray) -> list[int]:
    """Indices of the lower convex hull of a frontier (cost ascending, error descending)."""
    hull: list[int] = []
    for k in range(len(costs)):
        if hull and errors[k] >= errors[hull[-1]]:
            continue  # dominated: costs more, removes nothing more
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # b is above the segment a -> k (or on it): drop it
            cross = (costs[b] - costs[a]) * (errors[k] - errors[a]) - (errors[b] - errors[a]) * (
                costs[k] - costs[a]
            )
            if cross <= 0:
                hull.pop()
            else:
                break
        hull.append(k)
    return hull


def _lagrangian_choice(frontiers: list[_Frontier], budget: int) -> tuple[list[int], float, float]:
    """The LP relaxation's bound and a feasible integer solution built from it."""
    segments = []  # (efficiency, matrix, step, from index, to index)
    for i, fr in enumerate(frontiers):
        hull = _hull(fr.costs, fr.errors)
        for step, (a, b) in enumerate(zip(hull, hull[1:])):
            dc = int(fr.costs[b] - fr.costs[a])
            de = float(fr.errors[a] - fr.errors[b])
            segments.append((de / dc, i, step, a, b))
    segments.sort(key=lambda t: (-t[0], t[1], t[2]))
    picks = [0] * len(frontiers)
    left = budget
    bound = None
    blocked = set()
    for eff, i, _, a, b in segments:
        if i in blocked:
            continue
        dc = int(frontiers[i].costs[b] - frontiers[i].costs[a])
        if dc <= left:
            picks[i] = b
            left -= dc
        else:
            if bound is None:  # the LP takes this segment fractionally
                current = math.fsum(float(fr.errors[k]) for fr, k in zip(frontiers, picks))
                bound = current - left * eff
            blocked.add(i)
    # improve: the best upgrade that still fits, any frontier item, until none helps
    while True:
        best_gain, best = 0.0, None
        for i, fr in enumerate(frontiers):
            here_c, here_e = int(fr.costs[picks[i]]), float(fr.errors[picks[i]])
            fits = np.flatnonzero(fr.costs <= here_c + left)
            if len(fits) == 0:
                continue
            k = int(fits[np.argmin(fr.errors[fits])])
            gain = here_e - float(fr.errors[k])
            if gain > best_gain:
                best_gain, best = gain, (i, k)
        if best is None:
            break
        i, k = best
        left -= int(frontiers[i].costs[k] - frontiers[i].costs[picks[i]])
        picks[i] = k
    total = math.fsum(float(fr.errors[k]) for fr, k in zip(frontiers, picks))
    if bound is None:  # every hull segment fitted: the LP optimum is integral
        bound = math.fsum(float(fr.errors[_hull(fr.costs, fr.errors)[-1]]) for fr in frontiers)
    return picks, total, min(bound, total)
