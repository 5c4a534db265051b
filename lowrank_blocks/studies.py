"""Comparisons across whole data sets: many matrices, one budget, honest statistics.

A single example proves little; :func:`compare_many` runs the same comparison over a stack or
an iterable of matrices (all 10,000 MNIST test digits, every weight matrix of a model) and
summarises it: mean and median error per configuration, win counts, and paired differences
with bootstrap confidence intervals (:func:`scipy.stats.bootstrap`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np
import pandas as pd

from .linalg import as_matrix, block_groups, stack_blocks, svdvals_stack, to_numpy
from .structures import FAMILIES, Structure, _as_int

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

    def __repr__(self) -> str:
        return f"Study(budget={self.budget}, n_matrices={self.per_matrix['matrix'].nunique()})\n" + (
            self.summary.to_string()
        )


def stack_errors(matrices: Any, structure: Structure) -> np.ndarray:
    """Optimal relative error of ``structure`` for every matrix of a stack ``(N, m, n)``.

    All blocks of all matrices are decomposed together: one batched ``svdvals`` call per block
    shape.  Each matrix is scaled by its own power of two, so magnitudes may differ wildly.

    Examples
    --------
    >>> import numpy as np
    >>> from lowrank_blocks import BlockGrid
    >>> X = np.stack([np.eye(4), np.ones((4, 4))])
    >>> stack_errors(X, BlockGrid(2, 1)).round(4).tolist()
    [0.7071, 0.0]
    """
    if not array_api_compat.is_array_api_obj(matrices):
        matrices = np.asarray(matrices)
    if len(matrices.shape) != 3:
        raise ValueError(
            f"matrices must be a stack of shape (N, m, n); got shape {tuple(matrices.shape)}"
        )
    n_mat, m, n = (int(d) for d in matrices.shape)
    if n_mat == 0:
        raise ValueError("matrices is empty; give at least one matrix")
    # Validate dtype and finiteness once on the flattened stack (a 2-D view).
    X, xp = as_matrix(xp_reshape(matrices, (n_mat * m, n)), name="matrices")
    X = xp.reshape(X, (n_mat, m, n))
    amax = to_numpy(xp.max(xp.abs(xp.reshape(X, (n_mat, m * n))), axis=1)).astype(np.float64)
    # As linalg.power_of_two_scale, per matrix: maximum in [1, 2), no overflow.
    scale = np.where(amax > 0, np.ldexp(1.0, np.frexp(np.where(amax > 0, amax, 1.0))[1] - 1), 1.0)
    X = X / xp.asarray(scale[:, None, None], dtype=X.dtype, device=array_api_compat.device(X))
    part = structure.partition((m, n))
    ranks = np.array(structure.block_ranks((m, n)))
    blocks = structure.blocks
    err_sq = np.zeros(n_mat)
    for positions in block_groups(part, blocks).values():
        S = to_numpy(svdvals_stack(stack_blocks(X, part, [blocks[k] for k in positions], xp), xp))
        sq = S.astype(np.float64) ** 2  # (N, g, k)
        for g, k in enumerate(positions):
            err_sq += sq[:, g, ranks[k]:].sum(axis=1)
    sq_all = X * X
    total = np.zeros(n_mat)
    active = set(blocks)
    for i in range(part.grid[0]):
        for j in range(part.grid[1]):
            rs, cs = part.block_slices(i, j)
            e = to_numpy(xp.sum(xp.reshape(sq_all[:, rs, cs], (n_mat, -1)), axis=1))
            e = e.astype(np.float64)
            total += e
            if (i, j) not in active:
                err_sq += e
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(total > 0, np.sqrt(np.clip(err_sq / np.where(total > 0, total, 1), 0, 1)), 0.0)
    return rel


def xp_reshape(x: Any, shape: tuple[int, ...]) -> Any:
    xp = array_api_compat.array_namespace(x)
    return xp.reshape(x, shape)


def _label(structure: Structure) -> str:
    if not structure.is_uniform:  # the label says only "per-block": keep the ranks apart
        return f"{structure.paper_name}: {structure!r}"
    return f"{structure.paper_name}: {structure.label}"


def compare_many(
    matrices: Any,
    budget: int | None = None,
    *,
    structures: Sequence[Structure] | None = None,
    families: Sequence[str] = FAMILIES,
    grids: Any = None,
    diagonal: Any = None,
    allocation: str = "uniform",
    method: str = "exact",
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
    families, grids, diagonal, allocation, method
        Passed to :func:`~lowrank_blocks.error_vs_budget` in the budget mode.
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
    from tqdm.auto import tqdm

    n_boot = _as_int(n_boot, "n_boot", minimum=1)
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence={confidence!r} is not allowed; it must be in (0, 1)")
    if budget is not None:
        budget = _as_int(budget, "budget", minimum=1)
    if structures is None and budget is None:
        raise ValueError("give budget=... (search per family) or structures=[...] (fixed)")
    rows: list[dict[str, Any]] = []
    is_stack = array_api_compat.is_array_api_obj(matrices) and len(matrices.shape) == 3
    if structures is not None:
        structures = list(structures)
        if not structures:
            raise ValueError("structures is empty; give at least one structure")
        for s in structures:
            if not isinstance(s, Structure):
                raise TypeError(f"structures contains {s!r}, which is not a Structure")
        if len(set(structures)) != len(structures):
            raise ValueError("structures contains the same structure twice; give each once")
    if structures is None and is_stack and allocation == "uniform" and method == "exact":
        rows = _best_uniform_rows(matrices, budget, families, grids, diagonal)  # type: ignore[arg-type]
    elif structures is not None and is_stack:
        m, n = int(matrices.shape[1]), int(matrices.shape[2])
        for s in structures:
            _check_budget(s, (m, n), budget)
            errs = stack_errors(matrices, s)
            rows.extend(
                {"matrix": k, "config": _label(s), "structure": s.family,
                 "n_params": s.n_params((m, n)), "error": float(e)}
                for k, e in enumerate(errs)
            )
    else:
        from .approximate import approximate
        from .surfaces import error_vs_budget

        iterable = matrices if not is_stack else (matrices[k] for k in range(matrices.shape[0]))
        total = int(matrices.shape[0]) if is_stack else _len_or_none(matrices)
        bar = tqdm(iterable, total=total, disable=None if progress else True, desc="matrices")
        for k, W in enumerate(bar):
            if structures is not None:
                for s in structures:
                    shape = (int(W.shape[0]), int(W.shape[1]))
                    _check_budget(s, shape, budget)
                    rows.append({"matrix": k, "config": _label(s), "structure": s.family,
                                 "n_params": s.n_params(shape),
                                 "error": approximate(W, s).error})
            else:
                curve = error_vs_budget(W, [budget], families=families, grids=grids,
                                        diagonal=diagonal,
                                        allocation=allocation, method=method)
                for r in curve.itertuples():
                    rows.append({"matrix": k, "config": f"{r.method}: best {r.allocation}",
                                 "structure": r.structure, "n_params": int(r.n_params),
                                 "error": float(r.error), "grid": r.grid})
    if not rows:
        raise ValueError("matrices is empty; give at least one matrix")
    per_matrix = pd.DataFrame(rows)
    return _summarise(per_matrix, budget, n_boot, confidence, random_state)


def _best_uniform_rows(
    matrices: Any, budget: int, families: Sequence[str], grids: Any, diagonal: Any
) -> list[dict[str, Any]]:
    """Budget mode on a stack, batched: every candidate's errors for all matrices at once.

    For each family and grid the largest uniform rank within the budget is the only candidate
    worth computing (errors fall with rank); the best over grids is taken per matrix.
    """
    from .structures import configurations_at_budget, expand_grids
    from .surfaces import _default_grids

    m, n = int(matrices.shape[1]), int(matrices.shape[2])
    default = _default_grids((m, n))
    grid_list = expand_grids(default if grids is None else grids, (m, n))
    diag_list = expand_grids(default if diagonal is None else diagonal, (m, n), "diagonal")
    rows: list[dict[str, Any]] = []
    for family in families:
        try:
            listed = configurations_at_budget(
                (m, n), budget, at_most=True, families=[family], grids=grid_list
            )
        except ValueError:  # the budget is below every configuration of this family
            continue
        if family == "diagonal":  # same diagonal block counts as error_vs_budget
            listed = [c for c in listed if c.grid in diag_list]
        top: dict[tuple[int, int], Structure] = {}
        for c in listed:  # ranks ascend within a grid: keep the last (largest)
            top[c.grid] = c
        candidates = list(top.values())
        if not candidates:
            continue
        errs = np.stack([stack_errors(matrices, c) for c in candidates])  # (n_candidates, N)
        pick = np.argmin(errs, axis=0)
        for k in range(errs.shape[1]):
            c = candidates[pick[k]]
            rows.append({"matrix": k, "config": f"{c.paper_name}: best uniform",
                         "structure": family, "n_params": c.n_params((m, n)),
                         "error": float(errs[pick[k], k]), "grid": f"{c.grid[0]}×{c.grid[1]}"})
    if not rows:
        raise ValueError(
            f"budget={budget} is below the cheapest configuration of {', '.join(families)} "
            f"for {m} × {n} matrices"
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
