"""Layer by layer: global, diagonal or block-grid structure for every matrix of a model.

:func:`analyze_layers` reads the matrices of a model one at a time (a checkpoint, a PEFT adapter's
updates ``ΔW``, the difference of two checkpoints, a ``state_dict`` or an ``nn.Module``: see
:func:`lowrank_blocks.models.open_model`) and answers, for each, at a budget given per matrix:
how well does each structure family approximate it with uniform ranks and with exactly optimal
per-block ranks (rank integers charged), which structure wins, and how many parameters each
family needs to reach given target errors.  One row per matrix, as WeightWatcher's
``analyze()`` gives one row per layer; a summary weights the matrices by their size.

Each matrix is validated once and its blocks' spectra are computed once and shared by every
family, the uniform and optimal allocations and the target budgets.  The numerical and stable
ranks come from the same spectra: the certified Gram eigenvalues of the whole matrix where
their error bound decides them, an SVD only where a value lies too close to the threshold
(a rank-deficient matrix), so a full-rank float64 matrix is never decomposed twice.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ._validate import as_int
from .budgets import check_budget
from .search import default_grids, error_surface, error_vs_budget
from .spectra import DEFAULT_TOL, PATH_GRAM, BlockSpectra, PreparedMatrix, prepare, spectra_of
from .structures import STRUCTURE_TYPES, Structure, structure_types

__all__ = ["LayerAnalysis", "analyze_layers"]

DEFAULT_TARGETS: tuple[float, ...] = (0.5, 0.2)


@dataclass(frozen=True)
class Budget:
    """How the budget of every matrix is set: one of a fraction, a LoRA rank or a count."""

    fraction: float | None = None
    lora_rank: int | None = None
    absolute: int | None = None

    def for_shape(self, shape: tuple[int, int]) -> int:
        m, n = shape
        if self.fraction is not None:
            return max(1, round(self.fraction * m * n))
        if self.lora_rank is not None:
            return self.lora_rank * (m + n)
        return int(self.absolute)  # type: ignore[arg-type]

    def describe(self) -> str:
        if self.fraction is not None:
            return f"{self.fraction:g} of each matrix's entries"
        if self.lora_rank is not None:
            return f"LoRA rank {self.lora_rank} per matrix (r (m + n) parameters)"
        return f"{self.absolute} parameters per matrix"


def _check_budget_spec(fraction: Any, lora_rank: Any, budget: Any) -> Budget:
    given = [x is not None for x in (fraction, lora_rank, budget)]
    if sum(given) != 1:
        raise ValueError(
            "give exactly one of budget_fraction=F (of each matrix's entries), lora_rank=r "
            "(r (m + n) parameters per matrix, what PEFT users set) or budget=N (parameters "
            "per matrix)"
        )
    if fraction is not None:
        if isinstance(fraction, (bool, np.bool_)) or not isinstance(
            fraction, (int, float, np.integer, np.floating)
        ):
            raise TypeError(f"budget_fraction={fraction!r} must be a number in (0, 1]")
        if not 0.0 < float(fraction) <= 1.0:
            raise ValueError(f"budget_fraction={fraction!r} is not allowed; it must be in (0, 1]")
        return Budget(fraction=float(fraction))
    if lora_rank is not None:
        return Budget(lora_rank=as_int(lora_rank, "lora_rank", minimum=1))
    return Budget(absolute=check_budget(budget))


def _check_targets(targets: Any) -> tuple[float, ...]:
    if isinstance(targets, np.ndarray) and targets.ndim == 0:
        targets = targets.item()
    values = [targets] if isinstance(targets, (int, float, np.floating)) else list(targets)
    out = []
    for k, t in enumerate(values):
        if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, float, np.integer, np.floating)):
            raise TypeError(f"targets[{k}]={t!r} must be a relative error in (0, 1)")
        if not 0.0 < float(t) < 1.0:
            raise ValueError(f"targets[{k}]={t!r} is not allowed; relative errors in (0, 1)")
        out.append(float(t))
    labels = [f"{t:g}" for t in out]
    if len(set(labels)) != len(labels):
        raise ValueError(
            f"targets={out} name the same column twice ({labels}); give distinct targets"
        )
    return tuple(out)


@dataclass(frozen=True, repr=False)
class LayerResult:
    """The analysis of one matrix (one row of :meth:`LayerAnalysis.to_frame`)."""

    name: str
    shape: tuple[int, int]
    budget: int
    numerical_rank: int
    stable_rank: float
    uniform: dict[str, tuple[Structure, int, float] | None]
    optimal: dict[str, tuple[Structure, int, int, float] | None]
    needed: dict[str, dict[float, int | None]]
    best: tuple[Structure, int, int, float] | None = None
    """The best configuration within the budget over families, grids, ranks and allocations,
    ``(structure, n_params, rank_overhead, error)``; ``None`` if nothing fits.  Errors equal up
    to rounding (1e-12) are a tie, won by the fewest stored numbers, then the simplest family
    (global before diagonal before grid)."""


def _best(options: list[tuple[Structure, int, int, float]]) -> tuple[Structure, int, int, float] | None:
    if not options:
        return None
    low = min(o[3] for o in options)
    tied = [o for o in options if o[3] <= low + 1e-12 * max(1.0, low)]
    order = {c: k for k, c in enumerate(STRUCTURE_TYPES)}
    return min(tied, key=lambda o: (o[1] + o[2], order.get(type(o[0]), 9), o[3]))


@dataclass(frozen=True, repr=False)
class LayerAnalysis:
    """One row per matrix of a model (see :func:`analyze_layers`).

    Attributes
    ----------
    layers : list of LayerResult
        In the order of the source.
    skipped : list
        Tensors not analysed, each with a reason (biases, buffers, tiny matrices...).
    budget : Budget
        How each matrix's budget was set.
    families : tuple of Structure classes
        Families compared.
    targets : tuple of float
        Target relative errors of the ``params_<family>_to_<t>`` columns.
    source : str
        The kind of source read: ``'checkpoint'``, ``'lora adapter'``, ``'difference'``...
    """

    layers: list[LayerResult]
    skipped: list[Any]
    budget: Budget
    families: tuple[type[Structure], ...]
    targets: tuple[float, ...]
    source: str = ""
    _frame: dict[str, Any] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.layers)

    def __repr__(self) -> str:
        return (f"LayerAnalysis({len(self.layers)} matrices, {len(self.skipped)} skipped, "
                f"budget: {self.budget.describe()})\n" + self.summary().to_string())

    def to_frame(self) -> pd.DataFrame:
        """One row per matrix.

        Columns: ``name, rows, cols, n_params, budget, numerical_rank, stable_rank`` (the
        number of ``σ_i > max(m, n) eps σ_1``, ``eps`` of the storage precision, and
        ``‖W‖_F² / σ_1²``: the SVD's answers, taken from certified Gram eigenvalues where
        their bound decides them, the stable rank then to a relative ``1e-6``); per
        family ``error_<family>`` (best grid, uniform ranks) and ``structure_<family>``,
        ``error_<family>_optimal`` (exactly optimal per-block ranks, rank integers charged);
        ``best`` (the winning family over both allocations), ``best_structure``,
        ``best_error``, ``best_n_params``, ``best_rank_overhead``; and per family and target
        ``params_<family>_to_<t>`` (the fewest parameters reaching error ``t`` with uniform
        ranks; missing if no configuration does).
        """
        if "frame" in self._frame:
            return self._frame["frame"].copy()
        rows = []
        for layer in self.layers:
            m, n = layer.shape
            row: dict[str, Any] = {
                "name": layer.name, "rows": m, "cols": n, "n_params": m * n,
                "budget": layer.budget, "numerical_rank": layer.numerical_rank,
                "stable_rank": layer.stable_rank,
            }
            for cls in self.families:
                u = layer.uniform.get(cls.family)
                row[f"error_{cls.family}"] = u[2] if u else math.nan
                row[f"structure_{cls.family}"] = u[0] if u else None
            for cls in self.families:
                o = layer.optimal.get(cls.family)
                row[f"error_{cls.family}_optimal"] = o[3] if o else math.nan
            best = layer.best
            if best is None:  # the budget is below every configuration of this matrix
                row.update({"best": "", "best_structure": None, "best_error": math.nan,
                            "best_n_params": pd.NA, "best_rank_overhead": pd.NA})
            else:
                s, n_params, overhead, err = best
                row.update({"best": s.family, "best_structure": s, "best_error": err,
                            "best_n_params": n_params, "best_rank_overhead": overhead})
            for cls in self.families:
                for t in self.targets:
                    row[f"params_{cls.family}_to_{t:g}"] = layer.needed[cls.family].get(t)
            rows.append(row)
        frame = pd.DataFrame(rows)
        for col in frame.columns:
            if col.startswith("params_"):
                frame[col] = frame[col].astype("Int64")
        self._frame["frame"] = frame
        return frame.copy()

    def summary(self) -> pd.DataFrame:
        """One row per family: wins, mean error (uniform and optimal), and the mean weighted by
        the matrices' sizes (a large matrix counts more), over the matrices analysed."""
        frame = self.to_frame()
        if frame.empty:
            return pd.DataFrame()
        weights = frame["n_params"].to_numpy(dtype=np.float64)
        rows = []
        for cls in self.families:
            u = frame[f"error_{cls.family}"].to_numpy(dtype=np.float64)
            o = frame[f"error_{cls.family}_optimal"].to_numpy(dtype=np.float64)
            ok_u, ok_o = ~np.isnan(u), ~np.isnan(o)
            rows.append({
                "family": cls.family, "paper_name": cls.paper_name,
                "wins": int((frame["best"] == cls.family).sum()),
                "mean_error": float(np.mean(u[ok_u])) if ok_u.any() else math.nan,
                "weighted_error": (float(np.average(u[ok_u], weights=weights[ok_u]))
                                   if ok_u.any() else math.nan),
                "mean_error_optimal": float(np.mean(o[ok_o])) if ok_o.any() else math.nan,
                "weighted_error_optimal": (float(np.average(o[ok_o], weights=weights[ok_o]))
                                           if ok_o.any() else math.nan),
            })
        return pd.DataFrame(rows).set_index("family")

    def skipped_frame(self) -> pd.DataFrame:
        """The tensors not analysed: ``name, shape, reason``."""
        return pd.DataFrame(
            [{"name": s.name, "shape": tuple(s.shape), "reason": s.reason} for s in self.skipped],
            columns=["name", "shape", "reason"],
        )


def _ranks(spec_sq: np.ndarray, scale: float) -> tuple[int, float]:
    """Numerical rank (σ > max(m, n) eps σ_1, LAPACK's convention) and stable rank ‖W‖²/σ_1²."""
    sq = spec_sq[spec_sq > 0]
    if not len(sq):
        return 0, 0.0
    top = sq.max()
    return int(np.sum(sq > top * scale**2)), float(sq.sum() / top)


#: The stable rank is taken from Gram eigenvalues when its bound is within this relative error
#: (the tolerance every error of ``method='auto'`` is certified to); else from the SVD.
STABLE_RANK_RTOL = DEFAULT_TOL

# Relative rounding allowed for every float64 operation of _certified_ranks (a few per bound).
_SLACK = 2.0**-49


def _certified_ranks(
    values: np.ndarray, delta: float, energy: float, scale: float, shape: tuple[int, int],
    u: float,
) -> tuple[int, float] | None:
    """:func:`_ranks` from Gram eigenvalues, where their error bound decides it; else ``None``.

    Each computed ``λ̂_i`` (descending, clipped at 0) is within ``δ = a + c`` of ``σ_i²``
    (``lowrank_blocks._gram``: ``‖E‖₂ ≤ ‖E‖_F ≤ a`` for forming the Gram matrix and
    ``‖F‖₂ ≤ c`` for the eigensolver, so by Weyl's inequality every eigenvalue moves by at most
    ``a + c``; clipping at 0 only moves it toward ``σ_i² ≥ 0``).  The count of :func:`_ranks`
    is the one the SVD gives, whose own values carry ``|σ̂_i − σ_i| ≤ ε = k u σ_1`` (backward
    stable, the same ``p(k) = k`` as ``_gram``'s bound); so every ``σ_i²`` *and* every
    ``σ̂_i²`` lies in ``[lo_i, hi_i]`` with ``lo_i = (√(λ̂_i − δ) − ε)²``,
    ``hi_i = (√(λ̂_i + δ) + ε)²``, and the threshold ``σ_1² scale²`` (true or computed) in
    ``[lo_1 scale², hi_1 scale²]``.  The count is certified when no interval straddles the
    threshold's: every value is either above its highest or at most its lowest.  The stable
    rank ``‖W‖_F² / σ_1²`` (``energy`` the direct sum of squares, within ``γ_{mn}`` of
    ``‖W‖_F²``, which is within ``Σ ε (2σ_i + ε) ≤ 3 k^{3/2} u ‖W‖_F²`` of the SVD's
    ``Σ σ̂_i²``) is certified when ``σ_1²``'s interval gives it within
    :data:`STABLE_RANK_RTOL`.

    Parameters
    ----------
    values : numpy.ndarray, shape (k,)
        Gram eigenvalues ``λ̂``, descending, clipped at 0 (``BlockSpectra.sq`` of the block).
    delta : float
        Bound on ``|λ̂_i − σ_i²|``, ``a + c`` of the block (``BlockSpectra.bound_a``,
        ``bound_c``), in the units of ``values``.
    energy : float
        ``‖W‖_F²`` in the same units (summed directly).
    scale : float
        ``max(m, n) eps``: the threshold of :func:`_ranks` is ``σ_1² scale²``.
    shape : (int, int)
        ``(m, n)`` of the matrix.
    u : float
        Unit roundoff of the SVD the result must agree with (of the data's dtype).

    Returns
    -------
    (int, float) or None
        ``(numerical rank, stable rank)``, or ``None`` where the bound leaves either open.

    Examples
    --------
    >>> _certified_ranks(np.array([4.0, 1.0, 0.25]), 1e-9, 5.25, 0.1, (3, 3), 2.0**-53)
    (3, 1.3125)
    >>> _certified_ranks(np.array([4.0, 1.0, 0.01]), 1e-9, 5.01, 0.1, (3, 3), 2.0**-53)
    (2, 1.2525)
    >>> _certified_ranks(np.array([4.0, 1.0, 0.04]), 1e-9, 5.04, 0.1, (3, 3), 2.0**-53) is None
    True
    """
    values = np.asarray(values, dtype=np.float64)
    m, n = shape
    k = min(m, n)
    if values.size == 0 or not (delta >= 0 and math.isfinite(delta)):
        return None
    down, up = 1.0 - _SLACK, 1.0 + _SLACK
    top_hi = math.sqrt(float(values[0]) + delta) * up
    eps_svd = k * u * top_hi * up  # ε ≥ k u σ_1, σ_1 ≤ √(λ̂_1 + δ)
    root_lo = np.sqrt(np.maximum(values - delta, 0.0)) * down - eps_svd
    lo = np.where(root_lo > 0, root_lo, 0.0) ** 2 * down
    hi = ((np.sqrt(values + delta) * up + eps_svd) ** 2) * up
    if lo[0] <= 0:  # σ_1 itself is not resolved (a zero or underflowing matrix)
        return None
    s2 = scale * scale
    threshold_lo = lo[0] * s2 * down * down
    threshold_hi = hi[0] * s2 * up * up
    above = lo > threshold_hi
    below = hi <= threshold_lo
    if not np.all(above | below):
        return None
    energy_rounding = _gamma(m * n, 2.0**-53) + 3 * k**1.5 * u
    if (hi[0] - lo[0]) / lo[0] + energy_rounding > STABLE_RANK_RTOL:
        return None
    return int(np.count_nonzero(above)), float(energy / values[0])


def _gamma(n: int, u: float) -> float:
    return n * u / (1 - n * u) if n * u < 1 else math.inf


def _global_ranks(prep: PreparedMatrix, scale: float) -> tuple[int, float]:
    """Numerical and stable rank of a prepared matrix (:func:`_ranks`'s definitions).

    From the ``1 × 1`` spectra of ``method='auto'``: where they are Gram eigenvalues
    (``BlockSpectra.paths``), the ranks are taken from them where their bound certifies them
    (:func:`_certified_ranks`), so no SVD of the matrix is computed; else, and wherever a value
    lies too close to the threshold, from the SVD.  The ``1 × 1`` spectra are usually already
    computed by the surface (the global structure) and are reused; ``max_rank=1`` accepts any
    certified ones and certifies the least when none are held (the ranks need only the
    per-value bound, not the tails' certification).
    """
    glob = spectra_of(prep, (1, 1), method="auto", max_rank=1)
    if _is_gram(glob):
        shape = prep.shape
        dtype = np.dtype(str(prep.dtype).split(".")[-1])
        u = float(np.finfo(dtype).eps) / 2
        delta = float(glob.bound_a[0]) + float(glob.bound_c[0])  # type: ignore[index]
        known = int(glob.known[0])
        certified = _certified_ranks(glob.sq[0, :known], delta, float(glob.held_energies[0]),
                                     scale, shape, u)
        if certified is not None:
            return certified
        glob = prep.spectra((1, 1))  # the SVD: a value too close to the threshold
    return _ranks(glob.sq[0], scale)


def _is_gram(spec: BlockSpectra) -> bool:
    """Whether the one block of ``1 × 1`` spectra holds Gram eigenvalues (with bounds)."""
    return (spec.paths is not None and spec.bound_a is not None and spec.bound_c is not None
            and int(np.asarray(spec.paths).reshape(-1)[0]) == PATH_GRAM)


def _analyze_one(
    name: str,
    W: Any,
    budget: int,
    types: tuple[type[Structure], ...],
    grids: Any,
    diagonal: Any,
    targets: tuple[float, ...],
    storage: str | None = None,
) -> LayerResult:
    prep = prepare(W, name=name)
    shape = prep.shape
    grids = default_grids(shape) if grids is None else grids
    diagonal = default_grids(shape) if diagonal is None else diagonal
    uniform: dict[str, Any] = {c.family: None for c in types}
    optimal: dict[str, Any] = {c.family: None for c in types}
    try:
        curve = error_vs_budget(prep, [budget], families=types, grids=grids, diagonal=diagonal)
    except ValueError as exc:
        if "below the cheapest configuration" not in str(exc):
            raise  # a real problem, not an empty row
        curve = None  # the budget is below every configuration: no row fits
    if curve is not None:
        for pt in curve.points:
            fam = pt.structure.family
            if pt.allocation == "uniform":
                uniform[fam] = (pt.structure, pt.n_params, pt.error)
            else:
                optimal[fam] = (pt.structure, pt.n_params, pt.rank_overhead, pt.error)
    # Target budgets from the whole uniform surface (the same spectra, already computed).
    surface = error_surface(prep, grids=grids, diagonal=diagonal, families=types)
    needed: dict[str, dict[float, int | None]] = {c.family: {} for c in types}
    options = [v for v in optimal.values() if v is not None]
    for s, n_params, err in surface.entries:
        if n_params <= budget:  # every uniform rank within the budget: ties go to the cheapest
            options.append((s, n_params, 0, err))
        for t in targets:
            best = needed[s.family].get(t)
            if err <= t and (best is None or n_params < best):
                needed[s.family][t] = n_params
    # The numerical rank uses the precision the matrix was stored in (a float32 checkpoint read
    # as float64 is still float32 data).
    eps = max(np.finfo(np.dtype(str(prep.dtype).split(".")[-1])).eps, _storage_eps(storage))
    numerical, stable = _global_ranks(prep, max(shape) * eps)
    return LayerResult(name, shape, budget, numerical, stable, uniform, optimal, needed,
                       _best(options))


def _storage_eps(dtype: str | None) -> float:
    try:
        return float(np.finfo(np.dtype(dtype)).eps) if dtype else 0.0
    except TypeError:  # bfloat16 and other names NumPy does not know
        return 2.0**-7 if dtype and "bfloat16" in dtype else 0.0


@dataclass(frozen=True)
class _Given:
    """A matrix passed in memory, named: read as a :class:`~lowrank_blocks.models.NamedMatrix`
    is (``load()``), with no storage precision known."""

    name: str
    value: Any = field(repr=False)
    dtype: str | None = None

    def load(self) -> Any:
        return self.value


@dataclass(frozen=True)
class _LayerTask:
    """The analysis of one matrix, from its name and loader: a row, or a skipped tensor.

    Picklable (module-level, holding only the options), so :func:`analyze_layers` can send it
    to the workers of a Dask cluster, where each matrix is read by its own task.
    """

    budget: Budget
    types: tuple[type[Structure], ...]
    grids: Any
    diagonal: Any
    targets: tuple[float, ...]
    kind: str

    def __call__(self, unit: Any) -> Any:
        from .models import Skipped

        name = unit.name
        W = unit.load()
        shape = (int(W.shape[0]), int(W.shape[1])) if getattr(W, "ndim", 0) == 2 else None
        if shape is None:
            raise ValueError(f"{name} is not a 2-D matrix (shape {getattr(W, 'shape', None)})")
        if self.kind == "difference" and not bool(np.any(np.asarray(W) != 0)):
            return Skipped(name, shape, "unchanged: the update is zero")
        return _analyze_one(name, W, self.budget.for_shape(shape), self.types, self.grids,
                            self.diagonal, self.targets, unit.dtype)


def _pairs(source: Any, base: Any, pattern: Any, reshape_conv: bool) -> tuple[Any, list[Any], str]:
    """The matrices of the source (objects with ``name``, ``load()`` and the storage
    ``dtype``), the skipped list and a description."""
    if isinstance(source, Mapping) and source and all(
        isinstance(v, np.ndarray) and v.ndim == 2 for v in source.values()
    ) and base is None:
        items = [_Given(str(k), v) for k, v in source.items()]
        return items, [], "dict of matrices"
    if isinstance(source, Iterable) and not isinstance(source, (str, bytes, Mapping)) and not (
        hasattr(source, "matrices") or hasattr(source, "state_dict")
    ) and not hasattr(source, "__fspath__"):
        items = []
        for k, pair in enumerate(source):
            if not (isinstance(pair, tuple) and len(pair) == 2):
                raise TypeError(
                    f"source item {k} is {type(pair).__name__}; an iterable source must hold "
                    f"(name, matrix) pairs"
                )
            nm, mat = pair
            items.append(_Given(str(nm), mat))
        return items, [], "matrices"
    from .models import ModelMatrices, open_model

    if isinstance(source, ModelMatrices):
        if base is not None or pattern is not None or reshape_conv:
            raise ValueError(
                "base, pattern and reshape_conv apply when a model is opened; pass them to "
                "open_model, or pass the path (or state_dict) itself to analyze_layers"
            )
        mm = source
    else:
        mm = open_model(source, base=base, pattern=pattern, reshape_conv=reshape_conv)
    return list(mm.matrices), list(mm.skipped), mm.kind


def analyze_layers(
    source: Any,
    *,
    budget_fraction: float | None = None,
    lora_rank: int | None = None,
    budget: int | None = None,
    base: Any = None,
    pattern: str | None = None,
    reshape_conv: bool = False,
    families: Sequence[str | type[Structure]] = STRUCTURE_TYPES,
    grids: Any = None,
    diagonal: Any = None,
    targets: Sequence[float] = DEFAULT_TARGETS,
    progress: bool = True,
    client: Any = None,
    retries: int = 2,
) -> LayerAnalysis:
    """Global, diagonal or block-grid structure for every matrix of a model, at one budget each.

    Parameters
    ----------
    source
        A checkpoint file or directory, a PEFT adapter directory, a ``state_dict``, an
        ``nn.Module`` (see :func:`lowrank_blocks.models.open_model`), a
        :class:`~lowrank_blocks.models.ModelMatrices`, a dict of 2-D arrays, or an iterable of
        ``(name, matrix)`` pairs.  Matrices are read one at a time.
    budget_fraction, lora_rank, budget
        Exactly one: each matrix's budget as a fraction of its entries, as the parameters of a
        LoRA of rank ``r`` on it (``r (m + n)``: what PEFT users think in), or a count.
    base
        Another source: analyse ``source − base`` (a fine-tuning update), tensor by tensor;
        tensors the update leaves unchanged are listed as skipped.  (The numerical rank of an
        update uses the storage precision relative to the update itself; rounding of the
        checkpoints, relative to the weights, can add small singular values above it.)
    pattern, reshape_conv
        Passed to :func:`~lowrank_blocks.models.open_model`.
    families, grids, diagonal
        As in :func:`~lowrank_blocks.error_vs_budget` (default ``K, N ∈ {2, 4, 8, 16}``).
    targets : sequence of float, default (0.5, 0.2)
        Relative errors whose required budgets are reported per family.
    progress : bool, default True
        A progress bar over the matrices (terminal and Jupyter; off on non-terminals); with a
        client, Dask's.
    client : distributed.Client, cluster, str or int, optional
        Run on a Dask cluster (:mod:`lowrank_blocks.distributed`): a client, a cluster object,
        a scheduler address (``"tcp://host:8786"``) or ``N`` to start a local cluster of ``N``
        worker processes.  One task per matrix, each reading its own tensor on its worker
        (tensors of a checkpoint never pass through the scheduler; the workers must see its
        files); the same table as the serial run, in the same order.  Default: this process.
    retries : int, default 2
        With a client: re-runs of a task that fails (a dead worker's tasks are re-run by the
        scheduler as well); a matrix that still fails raises, naming the tensor.

    Returns
    -------
    LayerAnalysis
        ``.to_frame()`` (one row per matrix), ``.summary()``, ``.skipped_frame()``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> mats = {"q": rng.standard_normal((32, 32)), "k": rng.standard_normal((32, 64))}
    >>> res = analyze_layers(mats, lora_rank=4, progress=False)
    >>> res.to_frame()[["name", "rows", "cols", "budget"]].values.tolist()
    [['q', 32, 32, 256], ['k', 32, 64, 384]]
    """
    spec = _check_budget_spec(budget_fraction, lora_rank, budget)
    types = structure_types(families)
    target_values = _check_targets(targets)
    if not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"progress={progress!r} must be True or False")
    retries = as_int(retries, "retries", minimum=0)
    items, skipped, kind = _pairs(source, base, pattern, reshape_conv)
    task = _LayerTask(spec, types, grids, diagonal, target_values, kind)
    if client is None:
        from ._progress import progress_bar

        results = [task(unit) for unit in progress_bar(items, enabled=progress,
                                                       desc="matrices", unit="matrix")]
    else:
        from .distributed import map_matrices

        results = map_matrices(task, items, client=client, retries=retries,
                               progress=bool(progress), desc="analyze_layers")
    layers = [r for r in results if isinstance(r, LayerResult)]
    skipped.extend(r for r in results if not isinstance(r, LayerResult))
    return LayerAnalysis(layers, skipped, spec, types, target_values, kind)
