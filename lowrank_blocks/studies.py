"""Comparisons across whole data sets: many matrices, one budget, honest statistics.

A single example proves little; :func:`compare_many` runs the same comparison over a stack or
an iterable of matrices (all 10,000 MNIST test digits, every weight matrix of a model) and
summarises it: mean and median error per configuration, win counts, and paired differences
with bootstrap confidence intervals (:func:`scipy.stats.bootstrap`).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np
import pandas as pd

from ._validate import as_int, check_random_state
from .budgets import check_budget
from .spectra import PreparedMatrix, prepare_stack
from .structures import STRUCTURE_TYPES, Structure, structure_types

__all__ = ["Study", "compare_many", "stack_errors"]


@dataclass(frozen=True)
class Study:
    """Result of :func:`compare_many`.

    Attributes
    ----------
    per_matrix : pandas.DataFrame
        One row per (matrix, configuration): ``matrix``, ``config``, ``structure``,
        ``n_params``, ``error``.
    summary : pandas.DataFrame
        One row per configuration: ``n_matrices``, ``mean``, ``median``, ``std``, ``wins``
        (matrices where it has the strictly smallest error), ``win_rate``, ``ties``.
    paired : pandas.DataFrame
        One row per pair ``(a, b)``: mean and median of ``error_a − error_b``, its bootstrap
        confidence interval (``ci_low``, ``ci_high``), ``a_better`` (share of matrices where
        ``a`` has the smaller error) and ``n_matrices`` (matrices that have both).
    """

    per_matrix: pd.DataFrame
    summary: pd.DataFrame
    paired: pd.DataFrame
    budget: int | None = None
    confidence: float = 0.95

    def errors(self) -> pd.DataFrame:
        """Errors as a wide table: one row per matrix, one column per configuration."""
        return self.per_matrix.pivot(index="matrix", columns="config", values="error")

    def difference(self, a: str, b: str) -> pd.Series:
        """Paired difference ``error_a − error_b`` over the matrices that have both.

        In the direction asked, whichever order the pair is stored in ``paired``: a float
        Series named ``'a − b'`` with ``mean_diff``, ``median_diff``, the bootstrap interval
        ``ci_low``/``ci_high``, ``a_better`` (share of matrices where ``a`` has the smaller
        error) and ``n_matrices``.

        Examples
        --------
        >>> import numpy as np
        >>> from lowrank_blocks import BlockGrid, Global, compare_many
        >>> X = np.random.default_rng(0).standard_normal((20, 8, 8))
        >>> s = compare_many(X, structures=[Global(2), BlockGrid(2, 1)], progress=False)
        >>> a, b = s.summary.index
        >>> bool(s.difference(a, b)["mean_diff"] == -s.difference(b, a)["mean_diff"])
        True
        """
        configs = list(self.summary.index)
        for name in (a, b):
            if name not in configs:
                raise ValueError(f"{name!r} is not a configuration of this study; "
                                 f"allowed: {', '.join(map(repr, configs))}")
        if a == b:
            raise ValueError(f"a and b are both {a!r}; give two different configurations")
        match = self.paired[(self.paired["a"] == a) & (self.paired["b"] == b)]
        numbers = ["mean_diff", "median_diff", "ci_low", "ci_high", "a_better", "n_matrices"]
        name = f"{a} − {b}"
        if len(match):
            return match.iloc[0][numbers].astype(float).rename(name)
        match = self.paired[(self.paired["a"] == b) & (self.paired["b"] == a)]
        if not len(match):
            raise ValueError(f"{a!r} and {b!r} have no matrix in common")
        row = match.iloc[0]
        wide = self.errors()
        diff = (wide[a] - wide[b]).dropna().to_numpy()
        return pd.Series({"mean_diff": -row["mean_diff"], "median_diff": -row["median_diff"],
                          "ci_low": -row["ci_high"], "ci_high": -row["ci_low"],
                          "a_better": float(np.mean(diff < 0)),
                          "n_matrices": float(row["n_matrices"])}, name=name)

    def to_frame(self) -> pd.DataFrame:
        """One row per (matrix, configuration): :attr:`per_matrix`."""
        return self.per_matrix

    def __repr__(self) -> str:
        return f"Study(budget={self.budget}, n_matrices={self.per_matrix['matrix'].nunique()})\n" + (
            self.summary.to_string()
        )


def stack_errors(matrices: Any, structure: Structure) -> np.ndarray:
    """Optimal relative error of ``structure`` for every matrix of a stack ``(N, m, n)``.

    All blocks of all matrices are decomposed together: one batched ``svdvals`` call per block
    shape.  Each matrix is scaled by its own power of two, so magnitudes may differ wildly.
    ``matrices`` may be a prepared stack (:func:`~lowrank_blocks.spectra.prepare_stack`), whose
    spectra are then shared between structures on the same grid.

    Examples
    --------
    >>> import numpy as np
    >>> from lowrank_blocks import BlockGrid
    >>> X = np.stack([np.eye(4), np.ones((4, 4))])
    >>> stack_errors(X, BlockGrid(2, 1)).round(4).tolist()
    [0.7071, 0.0]
    """
    return np.asarray(prepare_stack(matrices).errors_of(structure))


def _label(structure: Structure) -> str:
    if not structure.is_uniform:  # the label says only "per-block": keep the ranks apart
        return f"{structure.paper_name}: {structure!r}"
    return f"{structure.paper_name}: {structure.label}"


def compare_many(
    matrices: Any,
    budget: int | None = None,
    *,
    structures: Sequence[Structure] | None = None,
    families: Sequence[Any] = STRUCTURE_TYPES,
    grids: Any = None,
    diagonal: Any = None,
    allocation: str = "uniform",
    method: str = "auto",
    count_rank_overhead: bool = True,
    n_boot: int = 2000,
    confidence: float = 0.95,
    random_state: int | np.random.Generator | None = 0,
    progress: bool = True,
) -> Study:
    """The same structured-approximation comparison over many matrices, with statistics.

    Two modes:

    * ``structures=[...]``: fixed configurations (e.g. the paper's Table I three) on every
      matrix; with a stack ``(N, m, n)`` all matrices are decomposed in batched calls.
    * ``budget=B`` alone: for every matrix and family, the best configuration within ``B``
      parameters (:func:`~lowrank_blocks.error_vs_budget` with ``best_only=True``).

    Parameters
    ----------
    matrices : array of shape (N, m, n) or iterable of 2-D arrays
        The data set; an iterable may mix shapes (the weight matrices of a model).
    budget : int, optional
        Parameter budget.  With ``structures`` it is checked against their counts.
    structures : sequence of Structure, optional
        Fixed configurations to compare.
    families, grids, diagonal, allocation, method, count_rank_overhead
        Passed to :func:`~lowrank_blocks.error_vs_budget` in the budget mode (per-block rank
        integers are charged to the budget by default).
    n_boot : int, default 2000
        Bootstrap resamples for the confidence intervals of paired differences.
    confidence : float, default 0.95
        Confidence level, in (0, 1).
    random_state : int or numpy.random.Generator, default 0
        Seed of the bootstrap.
    progress : bool, default True
        Progress bar over matrices (only shown on a terminal).

    Returns
    -------
    Study

    Examples
    --------
    >>> import numpy as np
    >>> from lowrank_blocks import BlockGrid, Global
    >>> X = np.random.default_rng(0).standard_normal((50, 8, 8))
    >>> study = compare_many(X, structures=[Global(2), BlockGrid(2, 1)], progress=False)
    >>> study.summary["n_matrices"].tolist()
    [50, 50]
    """
    from ._progress import progress_bar

    n_boot = as_int(n_boot, "n_boot", minimum=1)
    if n_boot > 1_000_000:
        raise ValueError(f"n_boot={n_boot} is too many; at most 1,000,000 resamples are allowed")
    confidence = _check_confidence(confidence)
    check_random_state(random_state)
    types = structure_types(families)
    if budget is not None:
        budget = check_budget(budget)
    if structures is None and budget is None:
        raise ValueError("give budget=... (search per family) or structures=[...] (fixed)")
    rows: list[dict[str, Any]] = []
    if isinstance(matrices, Mapping) or hasattr(matrices, "state_dict") or isinstance(
        matrices, (str, os.PathLike)
    ):  # a state_dict, an nn.Module or a checkpoint: its 2-D weights, read one at a time
        from .models import open_model

        mm = open_model(matrices)
        if not len(mm):
            raise ValueError(f"matrices ({mm.kind}) holds no 2-D weight to compare")
        matrices = (nm.load() for nm in mm.matrices)
    is_stack = isinstance(matrices, PreparedMatrix) or (
        array_api_compat.is_array_api_obj(matrices) and len(matrices.shape) == 3
    )
    if structures is not None:
        if isinstance(structures, Structure):
            raise TypeError("structures must be a list of structures, not a single one")
        structures = list(structures)
        if not structures:
            raise ValueError("structures is empty; give at least one structure")
        for s in structures:
            if not isinstance(s, Structure):
                raise TypeError(f"structures contains {s!r}, which is not a Structure")
        if len(set(structures)) != len(structures):
            raise ValueError("structures contains the same structure twice; give each once")
    if is_stack:
        prep = prepare_stack(matrices)
        if structures is None and allocation == "uniform" and method in ("exact", "auto"):
            rows = _best_uniform_rows(prep, budget, types, grids, diagonal)  # type: ignore[arg-type]
            return _summarise(pd.DataFrame(rows), budget, n_boot, confidence, random_state)
        if structures is not None:
            for s in structures:
                _check_budget(s, prep.shape, budget)
                errs = stack_errors(prep, s)
                rows.extend(
                    {"matrix": k, "config": _label(s), "family": s.family,
                     "n_params": s.n_params(prep.shape), "error": float(e)}
                    for k, e in enumerate(errs)
                )
            return _summarise(pd.DataFrame(rows), budget, n_boot, confidence, random_state)
        data = prep.data
        iterable: Any = (data[k] for k in range(int(data.shape[0])))
        total: int | None = int(data.shape[0])
    else:
        iterable, total = matrices, _len_or_none(matrices)
    from .approximate import approximate
    from .search import error_vs_budget

    bar = progress_bar(iterable, enabled=bool(progress), total=total, desc="matrices")
    for k, W in enumerate(bar):
        if structures is not None:
            for s in structures:
                shape = (int(W.shape[0]), int(W.shape[1]))
                _check_budget(s, shape, budget)
                rows.append({"matrix": k, "config": _label(s), "family": s.family,
                             "n_params": s.n_params(shape), "error": approximate(W, s).error})
        else:
            curve = error_vs_budget(W, [budget], families=types, grids=grids,
                                    diagonal=diagonal, allocation=allocation, method=method,
                                    count_rank_overhead=count_rank_overhead)
            for pt in curve.points:
                rows.append({"matrix": k,
                             "config": f"{pt.structure.paper_name}: best {pt.allocation}",
                             "family": pt.structure.family, "n_params": pt.n_params,
                             "rank_overhead": pt.rank_overhead, "error": pt.error,
                             "grid": pt.structure.grid_label})
    if not rows:
        raise ValueError("matrices is empty; give at least one matrix")
    per_matrix = pd.DataFrame(rows)
    return _summarise(per_matrix, budget, n_boot, confidence, random_state)


def _check_confidence(confidence: object) -> float:
    if isinstance(confidence, (bool, np.bool_)) or not isinstance(
        confidence, (int, float, np.integer, np.floating)
    ):
        raise TypeError(f"confidence={confidence!r} must be a number in (0, 1), e.g. 0.95")
    value = float(confidence)
    if not 0.0 < value < 1.0:
        raise ValueError(f"confidence={confidence!r} is not allowed; it must be in (0, 1)")
    return value


def _best_uniform_rows(
    prep: PreparedMatrix, budget: int, types: Sequence[type[Structure]], grids: Any,
    diagonal: Any,
) -> list[dict[str, Any]]:
    """Budget mode on a stack, batched: every candidate's errors for all matrices at once.

    For each family and grid the largest uniform rank within the budget is the only candidate
    worth computing (errors fall with rank); the best over grids is taken per matrix.  The
    spectra of a grid are computed once and shared by the families.
    """
    from .search import _jobs, default_grids

    shape = prep.shape
    grids = default_grids(shape) if grids is None else grids
    diagonal = default_grids(shape) if diagonal is None else diagonal
    rows: list[dict[str, Any]] = []
    by_family: dict[type[Structure], list[Structure]] = {}
    for job in _jobs(shape, types, grids, diagonal):
        unit = job.unit
        r = min(unit.max_uniform_rank(shape), budget // unit.unit_cost(shape))
        if r >= 1:
            by_family.setdefault(job.cls, []).append(unit.with_rank(r))
    for cls in types:
        candidates = by_family.get(cls, [])
        if not candidates:
            continue
        errs = np.stack([stack_errors(prep, c) for c in candidates])  # (n_candidates, N)
        pick = np.argmin(errs, axis=0)
        for k in range(errs.shape[1]):
            c = candidates[pick[k]]
            rows.append({"matrix": k, "config": f"{c.paper_name}: best uniform",
                         "family": cls.family, "n_params": c.n_params(shape),
                         "error": float(errs[pick[k], k]), "grid": c.grid_label})
    if not rows:
        names = ", ".join(c.family for c in types)
        raise ValueError(
            f"budget={budget} is below the cheapest configuration of {names} for "
            f"{shape[0]} × {shape[1]} matrices"
        )
    return rows


def _len_or_none(x: Any) -> int | None:
    try:
        return len(x)
    except TypeError:
        return None


def _check_budget(structure: Structure, shape: tuple[int, int], budget: int | None) -> None:
    if budget is not None and structure.n_params(shape) > budget:
        raise ValueError(
            f"{structure!r} needs {structure.n_params(shape)} parameters on a "
            f"{shape[0]} × {shape[1]} matrix, more than budget={budget}"
        )


def _summarise(
    per_matrix: pd.DataFrame,
    budget: int | None,
    n_boot: int,
    confidence: float,
    random_state: Any,
) -> Study:
    from scipy.stats import bootstrap

    wide = per_matrix.pivot(index="matrix", columns="config", values="error")
    configs = list(dict.fromkeys(per_matrix["config"]))
    wide = wide[configs]
    values = wide.to_numpy()
    # A configuration may not fit every matrix (mixed shapes in budget mode): it is missing
    # (NaN) there, and wins, means and pairs only count the matrices it has.
    best = np.nanmin(values, axis=1, keepdims=True)
    is_best = values <= best  # False where missing
    unique_best = is_best.sum(axis=1) == 1
    summary = pd.DataFrame(
        {
            "n_matrices": wide.notna().sum().to_numpy(),
            "mean": wide.mean().to_numpy(),
            "median": wide.median().to_numpy(),
            "std": wide.std(ddof=1).to_numpy() if len(wide) > 1 else np.zeros(len(configs)),
            "wins": (is_best & unique_best[:, None]).sum(axis=0),
            "ties": (is_best & ~unique_best[:, None]).sum(axis=0),
        },
        index=pd.Index(configs, name="config"),
    )
    summary["win_rate"] = summary["wins"] / summary["n_matrices"]
    rng = np.random.default_rng(random_state)
    pairs = []
    for a, b in itertools.combinations(configs, 2):
        diff = (wide[a] - wide[b]).dropna().to_numpy()  # matrices that have both
        if len(diff) == 0:
            continue
        if len(diff) > 1 and np.ptp(diff) > 0:
            res = bootstrap((diff,), np.mean, n_resamples=n_boot, confidence_level=confidence,
                            method="percentile", random_state=rng, vectorized=True)
            low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        else:  # a constant difference (or one matrix): the interval is the value itself
            low = high = float(diff.mean())
        pairs.append({"a": a, "b": b, "mean_diff": float(diff.mean()),
                      "median_diff": float(np.median(diff)), "ci_low": low, "ci_high": high,
                      "a_better": float(np.mean(diff < 0)), "n_matrices": len(diff)})
    paired = pd.DataFrame(pairs, columns=["a", "b", "mean_diff", "median_diff", "ci_low",
                                          "ci_high", "a_better", "n_matrices"])
    return Study(per_matrix, summary, paired, budget, confidence)
