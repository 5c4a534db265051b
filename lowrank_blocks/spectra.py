"""The squared singular values of the blocks of a matrix: the one object every error comes from.

By Eckart–Young, applied block by block (the squared Frobenius error is a sum over blocks), the
optimal approximation with per-block ranks ``r_b`` is the truncated SVD of every block, and its
squared error needs singular values only::

    err² = Σ_{b active} Σ_{i > r_b} σ_{b,i}²  +  Σ_{b left out} ‖W_b‖_F²

:class:`BlockSpectra` holds the ``σ²`` of the blocks of one partition, of one matrix or of a
stack of matrices, and answers every question asked of them: the error of given ranks
(:meth:`BlockSpectra.errors`), of every uniform rank (:meth:`BlockSpectra.uniform_errors`) and of
the exactly optimal per-block ranks at any list of budgets (:meth:`BlockSpectra.allocate`).
The tail sums ``Σ_{i > r} σ²`` are taken directly, never as ``‖W_b‖² − Σ_{i ≤ r} σ²``, so tiny
errors stay accurate; full rank gives exactly 0.

Three ways to the ``σ²`` (``method=``): ``'exact'``, ``svdvals`` of every block; ``'auto'``, the
eigenvalues of every block's Gram matrix (about a third of the cost) wherever a rigorous bound
certifies every error they enter to within ``tol`` (default ``1e-6``), the SVD for the other
blocks (:meth:`BlockSpectra.error_bounds` states the bound of any error; the docs' performance
page derives it); ``'randomized'``, the leading values by block Krylov, errors never below the
exact ones.

:class:`PreparedMatrix` is a matrix validated once, at the edge, and divided by a power of two
(exact in floating point; relative errors do not change, and squares cannot overflow or
underflow).  It computes spectra on request and keeps the exact ones, so families share them:
the diagonal blocks of an ``N × N`` grid are blocks of that grid, and the global structure is
the ``1 × 1`` grid.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from . import _gram
from ._validate import as_int, check_random_state
from .allocation import solve_checked
from .budgets import check_budgets
from .linalg import (
    _check_randomized_options,
    as_matrix,
    block_energies,
    block_groups,
    block_krylov_stack,
    block_view,
    held_energies,
    power_of_two_scale,
    power_of_two_scales,
    stack_blocks,
    svdvals_stack,
    to_numpy,
)
from .partition import Partition
from .structures import Structure

__all__ = [
    "BlockSpectra",
    "PreparedMatrix",
    "allocate_ranks",
    "block_spectra",
    "prepare",
    "prepare_stack",
    "relative_error",
]

Method = Literal["auto", "exact", "randomized"]
METHODS = ("auto", "exact", "randomized")

#: Default tolerance of ``method='auto'`` on every relative error it reports: a Gram-path
#: value is used only where its error bound is certified below it (else the block's SVD).
DEFAULT_TOL = 1e-6

# Paths of the blocks of a BlockSpectra (BlockSpectra.paths).
PATH_SVD, PATH_GRAM, PATH_FALLBACK, PATH_RANDOMIZED = 0, 1, 2, 3


def split_energies(
    full: np.ndarray, blocks: tuple[tuple[int, int], ...]
) -> tuple[np.ndarray, Any]:
    """``(held, outside)`` from the energies of a whole grid, ``full`` of shape ``(..., p, q)``:
    the energies of ``blocks`` and the sum of every other block's.

    Examples
    --------
    >>> held, outside = split_energies(np.arange(4.0).reshape(2, 2), ((0, 0), (1, 1)))
    >>> held.tolist(), float(outside)
    ([0.0, 3.0], 3.0)
    """
    arr = np.array(blocks, dtype=np.int64).reshape(-1, 2)
    mask = np.ones(full.shape[-2:], dtype=bool)
    mask[arr[:, 0], arr[:, 1]] = False
    return full[..., arr[:, 0], arr[:, 1]], np.sum(full, axis=(-2, -1), where=mask)


def relative_error(err_sq: Any, total: Any) -> Any:
    """``sqrt(err² / ‖W‖²)`` clipped to ``[0, 1]``; 0 where the matrix is zero.

    The one place where a squared error becomes a relative error (scalars or arrays).

    Examples
    --------
    >>> relative_error(1.0, 4.0), relative_error(0.0, 0.0)
    (0.5, 0.0)
    """
    err_sq = np.asarray(err_sq, dtype=np.float64)
    total = np.asarray(total, dtype=np.float64)
    safe = np.where(total > 0, total, 1.0)
    out = np.where(total > 0, np.sqrt(np.clip(err_sq / safe, 0.0, 1.0)), 0.0)
    return float(out) if out.ndim == 0 else out


def _sum_rounding(n: int) -> float:
    """``γ_{n+1}`` in float64: the relative rounding of a sum of ``n + 1`` non-negative terms."""
    return (n + 1) * 2.0**-53 / (1 - (n + 1) * 2.0**-53)


def check_method(method: object) -> str:
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method={method!r} is not allowed; use one of {', '.join(METHODS)}")
    return method


def check_tol(tol: object) -> float:
    """The tolerance of ``method='auto'``: a number in ``(0, 1)``.

    Examples
    --------
    >>> check_tol(1e-6)
    1e-06
    """
    if isinstance(tol, (bool, np.bool_)) or not isinstance(tol, (int, float, np.floating)):
        raise TypeError(f"tol={tol!r} must be a number in (0, 1), e.g. 1e-6")
    tol = float(tol)
    if not 0 < tol < 1:
        raise ValueError(f"tol={tol} is not allowed; use a number in (0, 1), e.g. 1e-6")
    return tol


@dataclass(frozen=True)
class Sampling:
    """How randomized spectra were drawn, so the same range can be drawn again for factors."""

    seed: int
    sample_rank: int
    oversampling: int
    n_iter: int


@dataclass(frozen=True, eq=False)
class BlockSpectra:
    """Squared singular values of some blocks of one partition, of a matrix or a stack.

    Values refer to the matrix divided by a power of two (exact), so only ratios matter.  With
    a stack ``(N, m, n)`` every array carries a leading axis of length ``N``.

    Attributes
    ----------
    partition : Partition
        Row and column parts of the matrix.
    blocks : tuple of (int, int)
        The blocks held, row-major.  Blocks of the partition that are not held count as left
        out (their whole energy is error), as the off-diagonal blocks of a diagonal structure.
    sq : numpy.ndarray, shape (..., n_blocks, L)
        Squared singular values of every block held, descending, zero-padded on the right.
    known : numpy.ndarray, shape (n_blocks,)
        How many leading values of every block are held (all of them for exact spectra).
    residual : numpy.ndarray, shape (..., n_blocks)
        Energy of every block outside the values held: 0 for exact spectra; for randomized
        ones ``‖A − Q Qᵀ A‖²`` of the sampled range ``Q``, computed from the residual itself.
    held_energies : numpy.ndarray, shape (..., n_blocks)
        Squared Frobenius norm of every block held.
    outside : float or numpy.ndarray
        Energy of the blocks of the partition that are not held (summed directly).
    method : str
        ``'exact'`` (every block by SVD), ``'auto'`` (some blocks by the certified Gram
        path) or ``'randomized'``.
    sampling : Sampling or None
        Seed and sizes of the randomized range finder (``None`` for exact spectra).
    scale : float or numpy.ndarray
        The power of two the matrix was divided by (one per matrix of a stack).
    bound_a, bound_c : numpy.ndarray or None, shape (..., n_blocks)
        Coefficients of the error bound of the Gram-path values (``lowrank_blocks._gram``):
        the tail beyond rank ``r`` is within ``√s a + s c + γ t̂`` (``s`` values summed) of the
        exact one; 0 for blocks decomposed by SVD, ``None`` when no block took the Gram path.
    paths : numpy.ndarray or None, shape (..., n_blocks)
        How every block's values were computed: 0 SVD, 1 Gram (certified), 2 Gram not
        certified and recomputed by SVD (a fallback), 3 randomized.
    tol : float or None
        The tolerance the Gram-path values were certified to (``method='auto'``).
    """

    partition: Partition
    blocks: tuple[tuple[int, int], ...]
    sq: np.ndarray
    known: np.ndarray
    residual: np.ndarray
    held_energies: np.ndarray
    outside: Any
    method: str = "exact"
    sampling: Sampling | None = None
    scale: Any = 1.0
    bound_a: np.ndarray | None = None
    bound_c: np.ndarray | None = None
    paths: np.ndarray | None = None
    tol: float | None = None
    _tails: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def assembled(cls, *, paths: np.ndarray, randomized: bool, sampling: Sampling | None,
                  bound_a: np.ndarray | None, bound_c: np.ndarray | None, tol: float | None,
                  **fields: Any) -> BlockSpectra:
        """Spectra a computation put together block by block, its ``method`` read from how the
        blocks were computed: ``'randomized'`` where any was (keeping ``sampling``), else
        ``'auto'`` where any holds certified Gram values (keeping their bounds and ``tol``),
        else ``'exact'``."""
        gram = bool(np.any(paths == PATH_GRAM))
        return cls(**fields, paths=paths,
                   method="randomized" if randomized else ("auto" if gram else "exact"),
                   sampling=sampling if randomized else None,
                   bound_a=bound_a if gram else None, bound_c=bound_c if gram else None,
                   tol=tol if gram else None)

    def __repr__(self) -> str:
        p, q = self.partition.grid
        m, n = self.partition.shape
        stack = f"{self.sq.shape[0]} matrices, " if self.is_stack else ""
        return (f"BlockSpectra({stack}{m} × {n}, grid {p}×{q}, {len(self.blocks)} blocks held, "
                f"up to {self.sq.shape[-1]} values each, method={self.method!r})")

    def singular_values(self, block: int) -> np.ndarray:
        """Singular values held for the ``block``-th block held, of the matrix as given.

        (``sq`` refers to the matrix divided by a power of two; this undoes the scaling when
        the spectra came from a :class:`PreparedMatrix`, whose ``scale`` they record.)
        """
        values = np.sqrt(self.sq[..., block, : int(self.known[block])])
        return values * np.asarray(self.scale)[..., None] if self.is_stack else values * self.scale

    # -- derived quantities -------------------------------------------------------------------
    @property
    def is_stack(self) -> bool:
        return self.sq.ndim == 3

    def _index(self) -> tuple[np.ndarray, np.ndarray]:
        """Row and column part of every block held (computed once)."""
        cached = self.__dict__.get("_index_cache")
        if cached is None:
            arr = np.array(self.blocks, dtype=np.int64).reshape(-1, 2)
            cached = (arr[:, 0], arr[:, 1])
            object.__setattr__(self, "_index_cache", cached)
        return cached

    @property
    def costs(self) -> np.ndarray:
        """``m_b + n_b`` of every block held: parameters per unit of rank."""
        rows, cols = self._index()
        part = self.partition
        return np.asarray(part.row_sizes)[rows] + np.asarray(part.col_sizes)[cols]

    @property
    def max_ranks(self) -> np.ndarray:
        """``min(m_b, n_b)`` of every block held."""
        rows, cols = self._index()
        part = self.partition
        return np.minimum(np.asarray(part.row_sizes)[rows], np.asarray(part.col_sizes)[cols])

    @property
    def rank_limits(self) -> np.ndarray:
        """Largest rank of every block whose error is known: ``min(known, max_ranks)``."""
        return np.minimum(self.known, self.max_ranks)

    @property
    def total(self) -> Any:
        """``‖W‖_F²`` (of the scaled matrix; an array for a stack)."""
        return self.held_energies.sum(axis=-1) + self.outside

    @property
    def uniform_max_rank(self) -> int:
        """Largest rank every block held can take with a known error."""
        return int(self.rank_limits.min())

    @property
    def uniform_unit_cost(self) -> int:
        """Parameters per unit of uniform rank: ``Σ_b (m_b + n_b)`` over the blocks held."""
        return int(self.costs.sum())

    def tails(self) -> np.ndarray:
        """``Σ_{i ≥ r} σ_{b,i}²`` for ``r = 0 .. L``, shape ``(..., n_blocks, L + 1)``."""
        if self._tails is None:
            rev = np.cumsum(self.sq[..., ::-1], axis=-1)[..., ::-1]
            pad = np.zeros(self.sq.shape[:-1] + (1,))
            object.__setattr__(self, "_tails", np.concatenate((rev, pad), axis=-1))
        return self._tails  # type: ignore[return-value]

    # -- restriction ----------------------------------------------------------------------------
    def restrict(self, blocks: tuple[tuple[int, int], ...]) -> BlockSpectra:
        """The same spectra holding only ``blocks`` (the others count as left out).

        Examples
        --------
        >>> import numpy as np
        >>> spec = prepare(np.eye(4)).spectra((2, 2))
        >>> spec.restrict(((0, 0), (1, 1))).errors([2, 2])
        0.0
        """
        index = {b: k for k, b in enumerate(self.blocks)}
        missing = [b for b in blocks if b not in index]
        if missing:
            raise ValueError(f"blocks {missing} are not held by these spectra")
        pos = [index[b] for b in blocks]
        dropped = np.ones(len(self.blocks), dtype=bool)
        dropped[pos] = False
        return BlockSpectra(
            partition=self.partition,
            blocks=tuple(blocks),
            sq=self.sq[..., pos, :],
            known=self.known[pos],
            residual=self.residual[..., pos],
            held_energies=self.held_energies[..., pos],
            outside=self.outside + self.held_energies[..., dropped].sum(axis=-1),
            method=self.method,
            sampling=self.sampling,
            scale=self.scale,
            bound_a=None if self.bound_a is None else self.bound_a[..., pos],
            bound_c=None if self.bound_c is None else self.bound_c[..., pos],
            paths=None if self.paths is None else self.paths[..., pos],
            tol=self.tol,
        )

    # -- errors ---------------------------------------------------------------------------------
    def _check_ranks(self, ranks: Any) -> np.ndarray:
        arr = np.asarray(ranks)
        if arr.dtype.kind not in "iu" or arr.shape[-1:] != (len(self.blocks),) or arr.ndim > 2:
            raise ValueError(
                f"ranks must be integers of shape ({len(self.blocks)},) or (k, "
                f"{len(self.blocks)}), one per block held; got shape {arr.shape}"
            )
        limits = self.rank_limits
        if np.any(arr < 0) or np.any(arr > limits):
            bad = np.argwhere((arr < 0) | (arr > limits))[0]
            b = int(bad[-1])
            raise ValueError(
                f"rank {int(arr[tuple(bad)])} for block {self.blocks[b]} is not allowed; ranks "
                f"from 0 to {int(limits[b])} have a known error there"
            )
        return arr.astype(np.int64)

    def squared_errors(self, ranks: Any) -> Any:
        """Squared error (of the scaled matrix) for per-block ranks; rank 0 leaves a block out.

        ``ranks`` has one entry per block held, or shape ``(k, n_blocks)`` for ``k``
        allocations at once (then the result has a trailing axis of length ``k``).
        """
        r = self._check_ranks(ranks)
        gathered, idx = self._gather(self.tails(), r)  # (..., nb, k)
        kept = gathered + self.residual[..., :, None]
        left = np.broadcast_to(self.held_energies[..., :, None], kept.shape)
        per_block = np.where(idx == 0, left, kept)
        err_sq = per_block.sum(axis=-2) + np.asarray(self.outside)[..., None]
        return err_sq[..., 0] if r.ndim == 1 else err_sq

    def _gather(self, table: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``table[..., b, r_b]`` for checked ranks ``r`` (``(nb,)`` or ``(k, nb)``)."""
        nb = len(self.blocks)
        r2 = np.atleast_2d(r)  # (k, nb)
        idx = np.broadcast_to(r2.T, (nb, r2.shape[0]))  # (nb, k)
        lead = table.shape[:-2]
        gathered = np.take_along_axis(table, np.broadcast_to(idx, lead + idx.shape), axis=-1)
        return gathered, idx

    def tail_bounds(self) -> np.ndarray:
        """Bound on the error of every tail of :meth:`tails`, shape ``(..., n_blocks, L + 1)``.

        ``√s a_b + s c_b + γ t̂`` with ``s`` the values beyond the rank, for blocks from the
        Gram path (``lowrank_blocks._gram``); 0 for blocks decomposed by SVD, the
        reference (whose own error, ``≲ k u ‖B‖₂`` per singular value, is not counted).
        """
        tails = self.tails()
        if self.bound_a is None or self.bound_c is None:
            return np.zeros_like(tails)
        width = tails.shape[-1] - 1
        s = np.maximum(self.known[:, None] - np.arange(width + 1)[None, :], 0).astype(float)
        gamma = (width + 1) * 2.0**-53 / (1 - (width + 1) * 2.0**-53)
        a = self.bound_a[..., None]
        c = self.bound_c[..., None]
        gram = (a > 0) | (c > 0)
        return np.where(gram, np.sqrt(s) * a + s * c + gamma * tails, 0.0)

    def error_bounds(self, ranks: Any) -> Any:
        """Bound on ``|ê − e|``, the error of every relative error :meth:`errors` reports.

        0 where every block held came from an SVD (the reference).  With ``method='auto'``
        it is at most ``tol`` for every rank up to the rank certified.

        Examples
        --------
        >>> import numpy as np
        >>> W = np.random.default_rng(0).standard_normal((128, 128))
        >>> spec = block_spectra(W, "grid", 2)   # 64 × 64 blocks: the Gram path
        >>> spec.method, bool(spec.error_bounds([8, 8, 8, 8]) <= 1e-6)
        ('auto', True)
        """
        r = self._check_ranks(ranks)
        err_sq = self.squared_errors(ranks)
        gathered, idx = self._gather(self.tail_bounds(), r)
        delta = np.where(idx == 0, 0.0, gathered).sum(axis=-2)
        delta = delta[..., 0] if r.ndim == 1 else delta
        delta = delta + _sum_rounding(len(self.blocks)) * np.asarray(err_sq)
        total = self.total
        if np.ndim(err_sq) > np.ndim(total):
            total = np.asarray(total)[..., None]
        return _gram.relative_error_bound(err_sq, delta, total)

    def errors(self, ranks: Any) -> Any:
        """Relative error ``‖W − W_r‖_F / ‖W‖_F`` for per-block ranks (rank 0: left out).

        Examples
        --------
        >>> import numpy as np
        >>> spec = prepare(np.diag([3.0, 4.0, 0.0, 0.0])).spectra((2, 2))
        >>> spec.errors([1, 0, 0, 0])  # keeps 4² of 3² + 4²
        0.6
        """
        err_sq = self.squared_errors(ranks)
        total = self.total
        if np.ndim(err_sq) > np.ndim(total):
            total = np.asarray(total)[..., None]
        return relative_error(err_sq, total)

    def uniform_errors(self) -> np.ndarray:
        """Relative error of uniform rank ``r = 1 .. uniform_max_rank`` (index ``r − 1``).

        A reverse cumulative sum of the column sums of ``σ²``: no cancellation.

        Examples
        --------
        >>> import numpy as np
        >>> prepare(np.eye(6)).spectra((2, 2)).uniform_errors().round(4).tolist()
        [0.8165, 0.5774, 0.0]
        """
        rmax = self.uniform_max_rank
        col_tails = self.tails().sum(axis=-2)  # (..., L+1)
        err_sq = col_tails[..., 1 : rmax + 1] + (
            self.residual.sum(axis=-1) + np.asarray(self.outside)
        )[..., None]
        return relative_error(err_sq, np.asarray(self.total)[..., None])

    def uniform_error_bounds(self) -> np.ndarray:
        """:meth:`error_bounds` of every uniform rank ``r = 1 .. uniform_max_rank``."""
        rmax = self.uniform_max_rank
        col_tails = self.tails().sum(axis=-2)
        err_sq = col_tails[..., 1 : rmax + 1] + (
            self.residual.sum(axis=-1) + np.asarray(self.outside)
        )[..., None]
        delta = self.tail_bounds().sum(axis=-2)[..., 1 : rmax + 1]
        delta = delta + _sum_rounding(len(self.blocks)) * err_sq
        return _gram.relative_error_bound(err_sq, delta, np.asarray(self.total)[..., None])

    def allocate(self, budgets: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exactly optimal per-block ranks for every budget.

        The multiple-choice knapsack of :func:`lowrank_blocks.allocation.solve_allocation`, with
        the blocks held as units.

        Returns
        -------
        ranks : numpy.ndarray, shape (n_budgets, n_blocks)
        n_params : numpy.ndarray, shape (n_budgets,)
        errors : numpy.ndarray, shape (n_budgets,)
            From :meth:`errors` of the ranks (the same formula as every other error).

        Examples
        --------
        >>> import numpy as np
        >>> W = np.array([[-3.0, -2], [-1, 2], [-3, 2]])  # ragged: blocks cost 3, 3, 2, 2
        >>> ranks, used, errors = prepare(W).spectra((2, 2)).allocate([3])
        >>> ranks.tolist(), used.tolist(), errors.round(4).tolist()
        ([[1, 0, 0, 0]], [3], [0.8231])
        """
        if self.is_stack:
            raise ValueError("allocate() works on the spectra of one matrix, not a stack")
        limits = self.rank_limits
        gains = [self.sq[b, : limits[b]] for b in range(len(self.blocks))]
        sol = solve_checked(self.costs.astype(np.int64), gains, check_budgets(budgets, minimum=0))
        errors = np.atleast_1d(self.errors(sol.ranks))
        return sol.ranks, sol.used, errors


# -- the prepared matrix ----------------------------------------------------------------------


class PreparedMatrix:
    """A matrix (or stack) validated once, with its power-of-two scale and its spectra.

    Built by :func:`prepare`; every public function accepts one in place of an array, so a
    matrix used many times is validated once, and exact block spectra computed for one
    structure are reused by the others.

    No copy is made: singular values and energies are divided by the power of two ``scale``
    afterwards (exact: ``σ(W / s) = σ(W) / s``), and squares are taken of scaled chunks, so
    they cannot overflow.  Only a matrix of extreme magnitude (``max |W|`` outside
    ``[2**-40, 2**40]``, where LAPACK's own results could overflow or lose precision) is
    divided by its scale once, into a copy.

    Attributes
    ----------
    data : array
        The validated matrix on its own backend and device (float32 or float64), divided by
        ``divisor``.
    xp : namespace
        Its array namespace.
    scale : float or numpy.ndarray
        The power of two that puts ``max |W|`` in ``[1, 2)`` (one per matrix for a stack);
        every spectrum refers to ``W / scale``.
    divisor : float or numpy.ndarray
        What ``data`` was already divided by: 1, or ``scale`` for extreme magnitudes.
    shape : (int, int)
        ``(m, n)`` of the matrix (of every matrix of a stack).
    n_matrices : int or None
        Length of a stack; ``None`` for one matrix.
    """

    def __init__(
        self, data: Any, xp: Any, scale: Any, n_matrices: int | None, divisor: Any = 1.0
    ) -> None:
        self.data = data
        self.xp = xp
        self.scale = scale
        self.divisor = divisor
        self.n_matrices = n_matrices
        self.shape = (int(data.shape[-2]), int(data.shape[-1]))
        self._energies: dict[tuple[int, int], np.ndarray] = {}
        self._exact: dict[tuple[int, int], BlockSpectra] = {}

    @property
    def remaining_scale(self) -> Any:
        """What results computed from ``data`` are still to be divided by."""
        return np.asarray(self.scale, dtype=np.float64) / np.asarray(self.divisor,
                                                                     dtype=np.float64)

    def _unscale(self, values: np.ndarray) -> np.ndarray:
        """Divide values computed from ``data`` (leading axes: stack, then blocks) to W/scale."""
        rest = self.remaining_scale
        if rest.ndim == 0:
            return values / float(rest)
        return values / rest.reshape(rest.shape + (1,) * (values.ndim - 1))

    def __repr__(self) -> str:
        m, n = self.shape
        what = f"{m} × {n}" if self.n_matrices is None else f"{self.n_matrices} × {m} × {n}"
        return f"PreparedMatrix({what}, dtype={self.data.dtype})"

    @property
    def dtype(self) -> Any:
        return self.data.dtype

    def partition(self, grid: tuple[int, int]) -> Partition:
        return Partition(self.shape, grid)

    def energies(
        self, grid: tuple[int, int], blocks: tuple[tuple[int, int], ...]
    ) -> tuple[np.ndarray, Any]:
        """Energy of ``blocks`` of ``grid`` and of the rest (of ``W / scale``).

        Whole grids of at most 65,536 blocks are cached; the rest is computed per request
        without a ``p × q`` array.
        """
        grid = tuple(grid)  # type: ignore[assignment]
        part = self.partition(grid)
        p, q = part.grid
        if p * q > 1 << 16:
            return held_energies(self.data, part, blocks, self.xp, self.remaining_scale)
        if grid not in self._energies:
            self._energies[grid] = block_energies(self.data, part, self.xp, self.remaining_scale)
        return split_energies(self._energies[grid], blocks)

    def spectra(
        self,
        grid: tuple[int, int],
        blocks: tuple[tuple[int, int], ...] | None = None,
        *,
        method: Method = "exact",
        max_rank: int | None = None,
        oversampling: int = 10,
        n_iter: int = 4,
        random_state: int | np.random.Generator | None = None,
        tol: float = DEFAULT_TOL,
        max_bytes: int | None = None,
    ) -> BlockSpectra:
        """Spectra of ``blocks`` (default: all) of the partition into ``grid``.

        Exact and certified spectra of a whole grid are kept: a later request for some of its
        blocks (the diagonal ones) is answered from them without a new decomposition.

        Parameters
        ----------
        grid : (int, int)
            ``(p, q)``.
        blocks : tuple of (int, int), optional
            Blocks wanted, row-major; default every block of the grid.
        method : {'exact', 'auto', 'randomized'}
            ``'exact'``: all singular values of every block (batched ``svdvals``).
            ``'auto'``: ``σ²`` as the eigenvalues of every block's Gram matrix (one product and
            one ``eigvalsh``, about a third of an SVD), each block's values kept only where the
            error bound of ``lowrank_blocks._gram`` (derived on the docs' performance page)
            certifies every error it enters (ranks up to ``max_rank``) to within ``tol``;
            other blocks, blocks smaller than 32, and blocks where the bound cannot hold at
            all (float32 at the default ``tol``) by SVD.
            :meth:`BlockSpectra.error_bounds` gives the bound of any error.
            ``'randomized'``: the leading ``max_rank + oversampling`` values per block by the
            batched randomized block Krylov method, with the energy it misses; groups of blocks
            where that is no cheaper than the exact decomposition are decomposed exactly.
        max_rank : int, optional
            With ``'randomized'``: the largest rank any block will be given (required).  With
            ``'auto'``: the largest rank whose errors are certified (default: all ranks).
        oversampling, n_iter, random_state
            Options of the randomized method.
        tol : float, default 1e-6
            With ``'auto'``: the largest error allowed on a relative error, ``|ê − e| ≤ tol``.
        max_bytes : int, optional
            Memory limit for the decompositions (default: ``LOWRANK_BLOCKS_MAX_BYTES`` or the
            memory available, ``lowrank_blocks._limits``); an exact decomposition that would
            need more is refused before it starts.
        """
        method = check_method(method)
        oversampling, n_iter = _check_randomized_options(oversampling, n_iter)
        rng = check_random_state(random_state)
        tol = check_tol(tol)
        if max_bytes is not None:
            max_bytes = as_int(max_bytes, "max_bytes", minimum=1)
        part = self.partition(tuple(grid))  # type: ignore[arg-type]
        p, q = part.grid
        if blocks is None:
            blocks = tuple((i, j) for i in range(p) for j in range(q))
        else:
            blocks = tuple(blocks)
            bad = [b for b in blocks if not (0 <= b[0] < p and 0 <= b[1] < q)]
            if bad or len(set(blocks)) != len(blocks):
                raise ValueError(
                    f"blocks must be distinct (i, j) pairs of the {p} × {q} grid; got "
                    f"{bad[0] if bad else 'a repeated pair'}"
                )
        whole = len(blocks) == p * q and blocks == tuple(sorted(blocks))
        if method in ("exact", "auto"):
            cached = self._exact.get(part.grid)
            if cached is not None:
                return cached if whole else cached.restrict(blocks)
        if method == "exact":
            spec = self._compute(part, blocks, None, max_bytes=max_bytes)
            if whole:
                self._exact[part.grid] = spec
            return spec
        if method == "auto":
            top = None if max_rank is None else as_int(max_rank, "max_rank", minimum=1)
            certified = self.__dict__.setdefault("_certified", {})
            hit = certified.get(part.grid)
            if hit is not None and hit[0] <= tol and (
                hit[1] is None or (top is not None and hit[1] >= top)
            ):
                return hit[2] if whole else hit[2].restrict(blocks)
            spec = self._compute(part, blocks, None, auto=(tol, top), max_bytes=max_bytes)
            if whole:
                if spec.method == "exact":  # every block by SVD: exact spectra
                    self._exact[part.grid] = spec
                else:
                    certified[part.grid] = (tol, top, spec)
            return spec
        if max_rank is None:
            raise ValueError("method='randomized' needs max_rank (the largest rank wanted)")
        max_rank = as_int(max_rank, "max_rank", minimum=1)
        seed = int(rng.integers(0, 2**63 - 1))
        return self._compute(part, blocks, Sampling(seed, max_rank, oversampling, n_iter),
                             max_bytes=max_bytes)

    def _compute(
        self,
        part: Partition,
        blocks: tuple[tuple[int, int], ...],
        sampling: Sampling | None,
        *,
        auto: tuple[float, int | None] | None = None,
        max_bytes: int | None = None,
    ) -> BlockSpectra:
        xp = self.xp
        lead = () if self.n_matrices is None else (self.n_matrices,)
        max_ranks = np.array([min(part.block_shape(i, j)) for i, j in blocks], dtype=np.int64)
        rng = None if sampling is None else np.random.default_rng(sampling.seed)
        groups = block_groups(part, blocks)
        plans = {}
        for mb, nb in groups:
            plans[(mb, nb)] = sampling is not None and _randomized_pays(mb, nb, sampling)
        width = 0
        for (mb, nb), randomized in plans.items():
            size = min(mb, nb)
            if randomized:  # the D Ritz values of block Krylov
                k = min(sampling.sample_rank, size)  # type: ignore[union-attr]
                size = min((k + sampling.oversampling) * (sampling.n_iter + 1), size)  # type: ignore[union-attr]
            width = max(width, size)
        sq = np.zeros(lead + (len(blocks), width))
        residual = np.zeros(lead + (len(blocks),))
        known = max_ranks.copy()
        paths = np.full(lead + (len(blocks),), PATH_SVD, dtype=np.int8)
        held, outside = self.energies(part.grid, blocks)
        if sampling is not None and auto is None and not all(plans.values()):
            auto = (DEFAULT_TOL, sampling.sample_rank)
        bound_a = bound_c = None
        if auto is not None:
            weights, total = certification_inputs(held, outside)
            bound_a, bound_c = np.zeros_like(held), np.zeros_like(held)
        for (mb, nb), positions in groups.items():
            group = [blocks[k] for k in positions]
            if plans[(mb, nb)]:
                stack = stack_blocks(self.data, part, group, xp)
                flat = xp.reshape(stack, (-1, mb, nb))
                S, res = block_krylov_stack(
                    flat, min(sampling.sample_rank, mb, nb), xp,  # type: ignore[union-attr]
                    oversampling=sampling.oversampling, n_iter=sampling.n_iter,  # type: ignore[union-attr]
                    random_state=rng, compute_uv=False,
                )
                del stack, flat
                S = to_numpy(S).astype(np.float64).reshape(lead + (len(positions), -1))
                res = to_numpy(res).astype(np.float64).reshape(lead + (len(positions),))
                residual[..., positions] = self._unscale(self._unscale(res))
                paths[..., positions] = PATH_RANDOMIZED
            elif sampling is not None and min(mb, nb) >= _gram.GRAM_MIN_SIDE and (
                leading := self._leading_gram_group(part, group, held[..., positions],
                                                    sampling.sample_rank, max_bytes)
            ) is not None:
                # A randomized request where block Krylov does not pay: the leading values
                # from float32 Gram matrices, with an allowance (never below the exact error).
                values, res = leading
                sq[..., positions, : values.shape[-1]] = values
                known[positions] = values.shape[-1]
                residual[..., positions] = res
                paths[..., positions] = PATH_RANDOMIZED
                continue
            elif auto is not None and min(mb, nb) >= _gram.GRAM_MIN_SIDE:
                # 'auto', and the groups of a randomized request where the randomized method
                # does not pay: certified Gram eigenvalues.
                values, a, c, path = self._certified_group(
                    part, group, held[..., positions], weights[..., positions], total,
                    auto, max_bytes, len(blocks),
                )
                sq[..., positions, : values.shape[-1]] = values
                bound_a[..., positions] = a  # type: ignore[index]
                bound_c[..., positions] = c  # type: ignore[index]
                paths[..., positions] = path
                continue
            else:
                self._check_memory(mb, nb, len(positions), False, max_bytes)
                view = block_view(self.data, part, group, xp)
                S = to_numpy(svdvals_stack(view, xp)).astype(np.float64)
                S = S.reshape(lead + (len(positions), S.shape[-1]))
            S = self._unscale(S)
            sq[..., positions, : S.shape[-1]] = S * S
            known[positions] = S.shape[-1]
        return BlockSpectra.assembled(
            partition=part, blocks=blocks, sq=sq, known=known, residual=residual,
            held_energies=held, outside=outside, scale=self.scale, paths=paths,
            randomized=sampling is not None and bool(np.any(paths == PATH_RANDOMIZED)),
            sampling=sampling, bound_a=bound_a, bound_c=bound_c,
            tol=None if auto is None else auto[0],
        )

    def _leading_gram_group(
        self, part: Partition, group: list[tuple[int, int]], held: np.ndarray, rank: int,
        max_bytes: int | None,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The ``rank`` largest ``σ²`` of every block of a group from float32 Gram matrices, and
        the residual (the energy outside them plus an allowance), for ``method='randomized'``.

        The allowance bounds every rounding between the float64 block ``B`` and its computed
        values (``_gram``'s bound, docs' performance page): rounding ``B`` to float32 moves
        ``BᵀB`` by at most ``(2u + u²) ‖B‖_F²`` in Frobenius norm (``u = 2⁻²⁴``), forming and
        decomposing the Gram matrix by ``a`` and ``c``, so by Lidskii's theorem the sum of the
        ``k ≤ rank`` largest values is within ``√rank (a + (2u + u²)‖B‖_F²) + rank c``; plus
        the float64 sum ``‖B‖_F²`` (``held``, the group's energies already computed, in the
        units of ``W / scale``) and the subtraction from it.  Added to the residual, it keeps
        every error at or above the exact one.  ``None`` where it would exceed
        ``_FLOAT32_GRAM_SHARE`` of a tail (small tails, which float32 cannot resolve; an error
        then off by at most ``5e-5`` of itself): the caller then takes the certified float64
        path.  On 2048 × 2048 at 10 % of dense, the 8 × 8 and 16 × 16 grids: 137 ms and 127 ms
        against 201 ms and 174 ms in float64 (one core).
        """
        xp = self.xp
        lead = () if self.n_matrices is None else (self.n_matrices,)
        mb, nb = part.block_shape(*group[0])
        r = min(rank, mb, nb)
        view = block_view(self.data, part, group, xp)
        # float32 copies of at most 64 MiB at a time, along the first axis of the view, and
        # the float32 Gram path on each (one k × k matrix and workspace per core)
        per = 4 * math.prod(int(d) for d in view.shape[1:])
        step = max(1, (64 << 20) // per)
        from ._limits import check_bytes

        k = min(mb, nb)
        check_bytes(min(step, int(view.shape[0])) * per + (os.cpu_count() or 1) * 4 * (
                        k * k + 40 * (mb + nb)),
                    f"the float32 Gram values of {len(group)} blocks of {mb} × {nb}",
                    max_bytes=max_bytes, hint="raise the limit, or use method='auto'")
        parts = [_gram.gram_eigvalsh(xp.astype(view[i: i + step], xp.float32), xp)
                 for i in range(0, int(view.shape[0]), step)]
        # ‖B‖_F² in the units of the data: the energies held, times the powers of two they
        # were divided by (exactly)
        rest = self.remaining_scale
        energy = np.asarray(held, dtype=np.float64) * (
            rest**2 if rest.ndim == 0 else (rest**2).reshape(rest.shape + (1,)))
        values = np.concatenate([gv.values for gv in parts]).reshape(
            lead + (len(group), -1))[..., :r]
        a = np.concatenate([np.asarray(gv.a) for gv in parts]).reshape(energy.shape)
        c = np.concatenate([np.asarray(gv.c) for gv in parts]).reshape(energy.shape)
        # Rounding B to float32: |E| ≤ u|B| + η entrywise, so ‖E‖_F ≤ e1 below, and
        # ‖(B + E)ᵀ(B + E) − BᵀB‖_F ≤ 2 ‖B‖_F e1 + e1².
        u, tiny = 2.0**-24, float(np.finfo(np.float32).tiny)
        e1 = u * np.sqrt(energy) + math.sqrt(mb * nb) * tiny
        conversion = 2 * np.sqrt(energy) * e1 + e1 * e1
        allowance = (np.sqrt(r) * (a + conversion) + r * c
                     + (_gram._gamma(mb * nb, 2.0**-53) + (r + 2) * 2.0**-53) * energy)
        tail = energy - values.sum(axis=-1)
        if np.any(allowance > _FLOAT32_GRAM_SHARE * tail):
            return None
        return self._unscale(self._unscale(values)), self._unscale(self._unscale(tail + allowance))

    def _certified_group(
        self,
        part: Partition,
        group: list[tuple[int, int]],
        energies: np.ndarray,
        weights: np.ndarray,
        total: np.ndarray,
        auto: tuple[float, int | None],
        max_bytes: int | None,
        n_blocks: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``σ²`` of blocks of one shape by the Gram path, certified, else by SVD.

        Returns ``(values, a, c, paths)`` with shapes ``(..., g, k)`` and ``(..., g)`` (in the
        units of ``W / scale``; ``a = c = 0`` for blocks decomposed by SVD).
        """
        xp = self.xp
        tol, top = auto
        mb, nb = part.block_shape(*group[0])
        k, inner = min(mb, nb), max(mb, nb)
        lead = energies.shape[:-1]
        g = len(group)
        u_mm = _gram.rounding(self.data)[0]
        feasible = _gram.a_priori_feasible(energies, weights, total, tol, k, inner, u_mm, top)
        values = np.zeros(lead + (g, k))
        a = np.zeros(lead + (g,))
        c = np.zeros(lead + (g,))
        ok = np.zeros(lead + (g,), dtype=bool)
        if feasible.any():
            from .linalg import _subgrid

            stacked = isinstance(self.data, np.ndarray) and _subgrid(group) is None
            self._check_memory(mb, nb, g * int(np.prod(lead, dtype=np.int64)), True, max_bytes,
                               stacked=stacked)
            view = block_view(self.data, part, group, xp)
            gv = _gram.gram_eigvalsh(view, xp)
            del view
            values = self._unscale(self._unscale(gv.values.reshape(lead + (g, k))))
            a = self._unscale(self._unscale(gv.a.reshape(lead + (g,))))
            c = self._unscale(self._unscale(gv.c.reshape(lead + (g,))))
            ok = feasible & _gram.certify(values, a, c, weights, total, tol, top,
                                          n_blocks=n_blocks)
        paths = np.where(ok, PATH_GRAM, PATH_FALLBACK).astype(np.int8)
        if not ok.all():
            a = np.where(ok, a, 0.0)
            c = np.where(ok, c, 0.0)
            values[~ok] = self._svd_of_items(part, group, ~ok, max_bytes)
        return values, a, c, paths

    def _svd_of_items(
        self, part: Partition, group: list[tuple[int, int]], mask: np.ndarray,
        max_bytes: int | None,
    ) -> np.ndarray:
        """``σ²`` (of ``W / scale``) by SVD of the blocks where ``mask`` (shape ``(..., g)``)
        is set, in the order of ``numpy.argwhere(mask)``."""
        xp = self.xp
        mb, nb = part.block_shape(*group[0])
        rest = self.remaining_scale
        if mask.all():
            self._check_memory(mb, nb, mask.size, False, max_bytes)
            view = block_view(self.data, part, group, xp)
            S = to_numpy(svdvals_stack(view, xp)).astype(np.float64)
            S = self._unscale(S.reshape(mask.shape + (S.shape[-1],)))
            return (S * S).reshape(-1, S.shape[-1])
        items = np.argwhere(mask)
        per = max(1, (1 << 22) // (mb * nb))  # stacked copies of at most ~32 MB
        out = []
        for start in range(0, len(items), per):
            chunk = items[start : start + per]
            self._check_memory(mb, nb, len(chunk), False, max_bytes)
            stack = xp.stack([
                self.data[(*(int(i) for i in it[:-1]), *part.block_slices(*group[int(it[-1])]))]
                for it in chunk
            ])
            S = to_numpy(svdvals_stack(stack, xp)).astype(np.float64)
            del stack
            div = rest if rest.ndim == 0 else rest[chunk[:, 0]][:, None]
            out.append((S / div) ** 2)
        return np.concatenate(out, axis=0)

    def _check_memory(self, mb: int, nb: int, g: int, gram: bool, max_bytes: int | None,
                      stacked: bool = False) -> None:
        """Refuse, before it starts, a decomposition that would not fit in memory.

        What the decompositions of ``g`` blocks of ``mb × nb`` allocate besides the matrix,
        for the blocks decomposed at once (one per core for NumPy, all of them in one batched
        call for other backends): SVD path, the copy LAPACK works on and workspace; Gram path
        on NumPy, the Gram matrix (decomposed in place) and workspace, plus a copy of the
        block where BLAS cannot read it in place (no unit stride); Gram path elsewhere, the
        stacked blocks, the Gram matrices and the copy ``eigvalsh`` works on.  ``stacked``:
        the ``g`` blocks are first copied into one stack (blocks that are not a sub-grid, the
        diagonal ones).  A 20000 × 20000 float32 matrix needs about one more matrix on either
        path: it works within twice its size, or is refused here.
        """
        from ._limits import check_bytes

        itemsize = 8 if "float64" in str(self.data.dtype) else 4
        k = min(mb, nb)
        numpy = isinstance(self.data, np.ndarray)
        if numpy:
            import os

            at_once = min(g, os.cpu_count() or 1)
        else:
            at_once = g
        per_block = mb * nb + 40 * (mb + nb)
        if gram and not numpy:
            per_block += 2 * k * k
        elif gram:
            in_place = stacked or _gram._blas_layout(  # blocks of a matrix BLAS can read
                self.data.shape[-2:], self.data.strides[-2:], self.data.itemsize) is not None
            per_block += k * k - (mb * nb if in_place else 0)
        need = at_once * per_block * itemsize + (g * mb * nb * itemsize if stacked else 0)
        dtype = "float64" if itemsize == 8 else "float32"
        how = "Gram eigenvalues" if gram else "singular values"
        check_bytes(
            need,
            f"the exact {how} of {g} block{'s' if g > 1 else ''} of {mb} × {nb} ({dtype})",
            max_bytes=max_bytes,
            hint="use method='randomized' or the out-of-core route (a memory-mapped .npy / "
                 "dask.array input)",
        )

    def errors_of(self, structure: Structure) -> Any:
        """Optimal relative error of ``structure`` (exact spectra of its active blocks): a
        float for one matrix, an array with one error per matrix for a stack."""
        ranks = np.array(structure.block_ranks(self.shape), dtype=np.int64)
        return self.spectra(structure.grid, structure.blocks).errors(ranks)


def certification_inputs(held: np.ndarray, outside: Any) -> tuple[np.ndarray, np.ndarray]:
    """What certifying the Gram values of ``blocks`` needs from their energies: every block's
    share of the energy held (0 where none is held), and ``‖W‖²`` (held plus outside), with a
    trailing axis to broadcast against the blocks."""
    energy_held = held.sum(axis=-1, keepdims=True)
    total = energy_held + np.asarray(outside)[..., None]
    weights = np.divide(held, energy_held, out=np.zeros_like(held), where=energy_held > 0)
    return weights, total


#: Largest share of a tail the float32 Gram values' allowance may take (randomized method).
_FLOAT32_GRAM_SHARE = 1e-4


def _randomized_pays(mb: int, nb: int, sampling: Sampling) -> bool:
    """Whether block Krylov is the cheaper way to the leading values (and vectors) of
    ``mb × nb`` blocks.

    It does ``2 n_iter + 2`` products with blocks of ``b = k + oversampling`` vectors and
    orthogonalises ``D = (n_iter + 1) b`` directions; measured on one core against the exact
    spectra it is the cheaper one while ``D`` stays below about 40 % of ``min(m_b, n_b)``.
    Blocks under ``_KRYLOV_MIN_SIDE`` on a side take the float32 Gram values instead (and
    their factors, for an approximation, the exact SVD's, which realize errors at or below
    those values), which beat block Krylov on them whatever the rank: at 2048 × 2048 with the defaults (CPU work, one
    BLAS thread, medians of 3), up to 2 / 5 / 10 % of dense, the 8 × 8 grid (256 × 256 blocks)
    0.148 / 0.150 / 0.147 s by Gram values against 0.148 / 0.203 / 0.257 s by block Krylov, the
    16 × 16 grid 0.14 s against 0.27–0.34 s; while the 4 × 4 grid (512 × 512) takes 0.12–0.20 s
    by block Krylov against 0.20–0.47 s.
    """
    k = min(sampling.sample_rank, mb, nb)
    width = (sampling.n_iter + 1) * (k + sampling.oversampling)
    if min(mb, nb) < _KRYLOV_MIN_SIDE:
        return False
    return width * 5 <= min(mb, nb) * 2 and k + sampling.oversampling < min(mb, nb)


#: Blocks with a side below this take the float32 Gram values (factors: the exact SVD), not
#: block Krylov, in a randomized request (:func:`_randomized_pays`).
_KRYLOV_MIN_SIDE = 512


def prepare(W: Any, name: str = "W") -> PreparedMatrix:
    """Validate a real matrix once and divide it by a power of two.

    Integer input is promoted to float64, float16/bfloat16 to float32; float32 and float64
    stay.  A :class:`PreparedMatrix` is returned unchanged.

    Raises
    ------
    TypeError
        For complex, boolean or non-numeric dtypes.
    ValueError
        For anything other than 2 dimensions, an empty matrix, or NaN/infinite entries.

    Examples
    --------
    >>> import numpy as np
    >>> prepare(np.arange(6).reshape(2, 3))
    PreparedMatrix(2 × 3, dtype=float64)
    """
    if isinstance(W, PreparedMatrix):
        if W.n_matrices is not None:
            raise ValueError(f"{name} is a prepared stack; a single matrix is needed here")
        return W
    from .outofcore import is_large, open_large  # memmap, Zarr, dask.array: block by block

    if is_large(W):
        return open_large(W, name=name)
    W, xp = as_matrix(W, name)
    scale = power_of_two_scale(W, xp)
    if _EXTREME_LOW <= scale <= _EXTREME_HIGH:
        return PreparedMatrix(W, xp, scale, None)
    return PreparedMatrix(W / scale, xp, scale, None, divisor=scale)


# Magnitudes outside this window are divided by their scale into a copy before decompositions.
_EXTREME_LOW, _EXTREME_HIGH = 2.0**-40, 2.0**40


def prepare_stack(X: Any, name: str = "matrices") -> PreparedMatrix:
    """:func:`prepare` for a stack ``(N, m, n)``: each matrix scaled by its own power of two.

    Examples
    --------
    >>> import numpy as np
    >>> prepare_stack(np.ones((5, 3, 4)))
    PreparedMatrix(5 × 3 × 4, dtype=float64)
    """
    if isinstance(X, PreparedMatrix):
        if X.n_matrices is None:
            raise ValueError(f"{name} is a prepared single matrix; a stack is needed here")
        return X
    X, xp = as_matrix(X, name, stack=True)
    scales = power_of_two_scales(X, xp)
    if np.all((scales >= _EXTREME_LOW) & (scales <= _EXTREME_HIGH)):
        return PreparedMatrix(X, xp, scales, int(X.shape[0]))
    import array_api_compat

    divisor = xp.asarray(scales[:, None, None], dtype=X.dtype, device=array_api_compat.device(X))
    return PreparedMatrix(X / divisor, xp, scales, int(X.shape[0]), divisor=scales)


def block_spectra(
    W: Any,
    family: str | type[Structure],
    grid: int | tuple[int, int] = 1,
    *,
    method: Method = "auto",
    max_rank: int | None = None,
    oversampling: int = 10,
    n_iter: int = 4,
    random_state: int | np.random.Generator | None = None,
    tol: float = DEFAULT_TOL,
    max_bytes: int | None = None,
) -> BlockSpectra:
    """Spectra of the active blocks of one structure family on one grid.

    A convenience for ``prepare(W).spectra(grid, blocks)`` with the blocks of ``family``.
    The default ``method='auto'`` certifies every error to ``tol`` (the Gram path where its
    bound allows, the SVD elsewhere); ``method='exact'`` gives every block's singular values
    to full accuracy (:meth:`BlockSpectra.singular_values`).

    Parameters
    ----------
    W : array_like or PreparedMatrix, shape (m, n)
        The matrix (any backend).
    family : {'global', 'diagonal', 'grid'} or structure class
        Which blocks are active.
    grid : int or (int, int)
        ``K``/``N`` or ``(p, q)``; must be 1 for ``'global'`` and square for ``'diagonal'``.
    method, max_rank, oversampling, n_iter, random_state, tol, max_bytes
        As in :meth:`PreparedMatrix.spectra`.

    Examples
    --------
    >>> import numpy as np
    >>> block_spectra(np.eye(6), "grid", 2).uniform_errors().round(4).tolist()
    [0.8165, 0.5774, 0.0]
    """
    from .structures import _check_grid, structure_type

    cls = structure_type(family)
    unit = cls.on_grid(_check_grid(grid, "grid"), 1)
    prep = prepare(W)
    return spectra_of(
        prep, unit.grid, unit.blocks, method=method, max_rank=max_rank,
        oversampling=oversampling, n_iter=n_iter, random_state=random_state, tol=tol,
        max_bytes=max_bytes,
    )


def spectra_of(prep: PreparedMatrix, grid: Any, blocks: Any = None, *, method: str = "exact",
               tol: float = DEFAULT_TOL, max_bytes: int | None = None, **options: Any
               ) -> BlockSpectra:
    """``prep.spectra(...)``, for subclasses too that take no ``'auto'`` (out of core).

    A subclass that overrides :meth:`PreparedMatrix.spectra` and lists ``'auto'`` in a class
    attribute ``spectra_methods`` gets ``method='auto'``, ``tol`` and ``max_bytes``; one that
    does not gets ``'exact'`` in place of ``'auto'`` (its values are then exact).
    """
    if type(prep).spectra is PreparedMatrix.spectra or "auto" in getattr(
        type(prep), "spectra_methods", ()
    ):
        return prep.spectra(grid, blocks, method=method, tol=tol,  # type: ignore[call-arg]
                            max_bytes=max_bytes, **options)
    if method == "auto":
        method = "exact"
        options.pop("max_rank", None)
    return prep.spectra(grid, blocks, method=method, **options)  # type: ignore[arg-type]


def allocate_ranks(spectra: BlockSpectra, budget: int) -> tuple[int, ...]:
    """Per-block ranks with at most ``budget`` parameters that minimise the error, exactly.

    A multiple-choice knapsack with concave gains (:meth:`BlockSpectra.allocate`); exact on
    ragged partitions too, where the greedy scan by ``σ² / (m_b + n_b)`` is not.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.diag([4.0, 3.0, 2.0, 1.0])
    >>> allocate_ranks(block_spectra(W, "grid", 2), 8)   # blocks cost 4; keep 4² and 3²
    (2, 0, 0, 0)
    >>> allocate_ranks(block_spectra([[-3, -2], [-1, 2], [-3, 2]], "grid", 2), 3)
    (1, 0, 0, 0)
    """
    if not isinstance(spectra, BlockSpectra):
        raise TypeError(
            f"spectra={spectra!r} must be a BlockSpectra (from block_spectra or "
            f"PreparedMatrix.spectra)"
        )
    budget = as_int(budget, "budget", minimum=0)
    ranks, _, _ = spectra.allocate([budget])
    return tuple(int(r) for r in ranks[0])
