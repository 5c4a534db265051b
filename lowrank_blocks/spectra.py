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

:class:`PreparedMatrix` is a matrix validated once, at the edge, and divided by a power of two
(exact in floating point; relative errors do not change, and squares cannot overflow or
underflow).  It computes spectra on request and keeps the exact ones, so families share them:
the diagonal blocks of an ``N × N`` grid are blocks of that grid, and the global structure is
the ``1 × 1`` grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ._validate import as_int, check_random_state
from .allocation import solve_checked
from .budgets import check_budgets
from .linalg import (
    _check_randomized_options,
    as_matrix,
    block_energies,
    block_groups,
    block_view,
    held_energies,
    power_of_two_scale,
    power_of_two_scales,
    randomized_svd_stack,
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

Method = Literal["exact", "randomized"]
METHODS = ("exact", "randomized")


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


def check_method(method: object) -> str:
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method={method!r} is not allowed; use one of {', '.join(METHODS)}")
    return method


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
        ``'exact'`` or ``'randomized'``.
    sampling : Sampling or None
        Seed and sizes of the randomized range finder (``None`` for exact spectra).
    scale : float or numpy.ndarray
        The power of two the matrix was divided by (one per matrix of a stack).
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
    _tails: np.ndarray | None = field(default=None, repr=False)

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
        tails = self.tails()  # (..., nb, L+1)
        nb = len(self.blocks)
        r2 = np.atleast_2d(r)  # (k, nb)
        idx = np.broadcast_to(r2.T, (nb, r2.shape[0]))  # (nb, k)
        lead = tails.shape[:-2]
        gathered = np.take_along_axis(
            tails, np.broadcast_to(idx, lead + idx.shape), axis=-1
        )  # (..., nb, k)
        kept = gathered + self.residual[..., :, None]
        left = np.broadcast_to(self.held_energies[..., :, None], kept.shape)
        per_block = np.where(idx == 0, left, kept)
        err_sq = per_block.sum(axis=-2) + np.asarray(self.outside)[..., None]
        return err_sq[..., 0] if r.ndim == 1 else err_sq

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
        full = self._energies[grid]
        arr = np.array(blocks, dtype=np.int64).reshape(-1, 2)
        mask = np.ones((p, q), dtype=bool)
        mask[arr[:, 0], arr[:, 1]] = False
        held = full[..., arr[:, 0], arr[:, 1]]
        outside = np.sum(full, axis=(-2, -1), where=mask)
        return held, outside

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
    ) -> BlockSpectra:
        """Spectra of ``blocks`` (default: all) of the partition into ``grid``.

        Exact spectra of a whole grid are kept: a later request for some of its blocks (the
        diagonal ones) is answered from them without a new decomposition.

        Parameters
        ----------
        grid : (int, int)
            ``(p, q)``.
        blocks : tuple of (int, int), optional
            Blocks wanted, row-major; default every block of the grid.
        method : {'exact', 'randomized'}
            ``'exact'``: all singular values of every block (batched ``svdvals``).
            ``'randomized'``: the leading ``max_rank + oversampling`` values per block by the
            batched randomized range finder, with the energy it misses; groups of blocks where
            that is no cheaper than the exact decomposition are decomposed exactly.
        max_rank : int
            With ``'randomized'``: the largest rank any block will be given.  Required there.
        oversampling, n_iter, random_state
            Options of the randomized range finder.
        """
        method = check_method(method)
        oversampling, n_iter = _check_randomized_options(oversampling, n_iter)
        rng = check_random_state(random_state)
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
        if method == "exact":
            cached = self._exact.get(part.grid)
            if cached is not None:
                return cached if whole else cached.restrict(blocks)
            spec = self._compute(part, blocks, None)
            if whole:
                self._exact[part.grid] = spec
            return spec
        if max_rank is None:
            raise ValueError("method='randomized' needs max_rank (the largest rank wanted)")
        max_rank = as_int(max_rank, "max_rank", minimum=1)
        seed = int(rng.integers(0, 2**63 - 1))
        return self._compute(part, blocks, Sampling(seed, max_rank, oversampling, n_iter))

    def _compute(
        self, part: Partition, blocks: tuple[tuple[int, int], ...], sampling: Sampling | None
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
            if randomized:
                size = min(sampling.sample_rank + sampling.oversampling, size)  # type: ignore[union-attr]
            width = max(width, size)
        sq = np.zeros(lead + (len(blocks), width))
        residual = np.zeros(lead + (len(blocks),))
        known = max_ranks.copy()
        for (mb, nb), positions in groups.items():
            group = [blocks[k] for k in positions]
            if plans[(mb, nb)]:
                stack = stack_blocks(self.data, part, group, xp)
                flat = xp.reshape(stack, (-1, mb, nb))
                S, res = randomized_svd_stack(
                    flat, min(sampling.sample_rank, mb, nb), xp,  # type: ignore[union-attr]
                    oversampling=sampling.oversampling, n_iter=sampling.n_iter,  # type: ignore[union-attr]
                    random_state=rng, compute_uv=False, return_residual=True,
                )
                S = to_numpy(S).astype(np.float64).reshape(lead + (len(positions), -1))
                res = to_numpy(res).astype(np.float64).reshape(lead + (len(positions),))
                rest = self.remaining_scale
                rest2 = rest**2 if rest.ndim == 0 else (rest**2).reshape(rest.shape + (1,))
                residual[..., positions] = res / rest2
            else:
                view = block_view(self.data, part, group, xp)
                S = to_numpy(svdvals_stack(view, xp)).astype(np.float64)
                S = S.reshape(lead + (len(positions), S.shape[-1]))
            S = self._unscale(S)
            sq[..., positions, : S.shape[-1]] = S * S
            known[positions] = S.shape[-1]
        randomized = sampling is not None and any(plans.values())
        held, outside = self.energies(part.grid, blocks)
        return BlockSpectra(
            partition=part,
            blocks=blocks,
            sq=sq,
            known=known,
            residual=residual,
            held_energies=held,
            outside=outside,
            method="randomized" if randomized else "exact",
            sampling=sampling if randomized else None,
            scale=self.scale,
        )

    def errors_of(self, structure: Structure) -> Any:
        """Optimal relative error of ``structure`` (exact spectra of its active blocks): a
        float for one matrix, an array with one error per matrix for a stack."""
        ranks = np.array(structure.block_ranks(self.shape), dtype=np.int64)
        return self.spectra(structure.grid, structure.blocks).errors(ranks)


def _randomized_pays(mb: int, nb: int, sampling: Sampling) -> bool:
    """Whether the range finder is cheaper than a full ``svdvals`` for ``mb × nb`` blocks.

    It does ``2 n_iter + 3`` products with ``k + oversampling`` vectors; measured on 2 cores
    (``benchmarks/bench_surfaces.py``) it beats a full ``svdvals`` until that sample count
    reaches about 2.5 ``min(m_b, n_b)``.
    """
    k = min(sampling.sample_rank, mb, nb)
    sample = (2 * sampling.n_iter + 2) * (k + sampling.oversampling)
    return sample < 2.5 * min(mb, nb) and k + sampling.oversampling < min(mb, nb)


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
    method: Method = "exact",
    max_rank: int | None = None,
    oversampling: int = 10,
    n_iter: int = 4,
    random_state: int | np.random.Generator | None = None,
) -> BlockSpectra:
    """Spectra of the active blocks of one structure family on one grid.

    A convenience for ``prepare(W).spectra(grid, blocks)`` with the blocks of ``family``.

    Parameters
    ----------
    W : array_like or PreparedMatrix, shape (m, n)
        The matrix (any backend).
    family : {'global', 'diagonal', 'grid'} or structure class
        Which blocks are active.
    grid : int or (int, int)
        ``K``/``N`` or ``(p, q)``; must be 1 for ``'global'`` and square for ``'diagonal'``.
    method, max_rank, oversampling, n_iter, random_state
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
    return prepare(W).spectra(
        unit.grid, unit.blocks, method=method, max_rank=max_rank, oversampling=oversampling,
        n_iter=n_iter, random_state=random_state,
    )


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
