"""The optimal approximation of a matrix under a block low-rank structure.

By Eckart–Young, applied block by block (the squared Frobenius error is a sum over blocks), the
best approximation with given per-block ranks is the truncated SVD of every block, and zero on
the blocks a structure leaves out.  The error therefore needs singular values only::

    err² = Σ_b Σ_{i > r_b} σ_{b,i}²  +  Σ_{blocks left out} ‖W_b‖_F²

and the relative error reported is ``err / ‖W‖_F``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np

from ._validate import check_random_state
from .linalg import (
    _CHUNK_ELEMENTS,
    _check_randomized_options,
    block_groups,
    block_krylov_stack,
    stack_blocks,
    svd_stack,
    to_numpy,
)
from .partition import Partition
from .spectra import (
    BlockSpectra,
    PreparedMatrix,
    Sampling,
    _randomized_pays,
    check_method,
    prepare,
)
from .structures import Structure

__all__ = ["Approximation", "approximate", "approximate_prepared"]

Array = Any


@dataclass(frozen=True, repr=False)
class Approximation:
    """The result of :func:`approximate`: factors, error and parameter count.

    Attributes
    ----------
    structure : Structure
        The structure approximated.
    partition : Partition
        Row and column parts of the matrix (offsets in ``partition.row_offsets`` etc.).
    blocks : tuple of (int, int)
        Indices of the blocks that carry a factor pair, row-major; aligned with ``factors``.
    ranks : tuple of int
        Rank of every block in ``blocks``.
    factors : tuple of (B, A)
        One pair per block, ``B`` of shape ``(m_b, r_b)`` and ``A`` of shape ``(r_b, n_b)``, on
        the input's backend and device, so block ``b`` is approximated by ``B @ A``.  The
        singular values are split evenly: ``B = U_r √Σ_r``, ``A = √Σ_r V_rᵀ``.
    singular_values : tuple of numpy.ndarray
        Singular values (float64, descending) of every block in ``blocks``.
    error : float
        Relative Frobenius error ``‖W − W_approx‖_F / ‖W‖_F`` (0.0 for a zero matrix, which
        every structure represents exactly).
    n_params : int
        Number of stored parameters, the total size of ``factors``.
    """

    structure: Structure
    partition: Partition
    blocks: tuple[tuple[int, int], ...]
    ranks: tuple[int, ...]
    factors: tuple[tuple[Array, Array], ...]
    singular_values: tuple[np.ndarray, ...]
    error: float
    n_params: int

    @property
    def rank_overhead(self) -> int:
        """Integers needed to store per-block ranks: one per block if they differ, else 0.

        Not included in ``n_params``, which counts factor entries only.
        """
        return self.structure.rank_overhead

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the approximated matrix."""
        return self.partition.shape

    def __repr__(self) -> str:
        m, n = self.shape
        structure = repr(self.structure)
        return (
            f"{type(self).__name__}({structure}, shape=({m}, {n}), n_params={self.n_params}, "
            f"error={self.error:.4g})"
        )

    def reconstruct(self) -> Array:
        """The approximating matrix, assembled from the factors on their backend and device.

        Examples
        --------
        >>> import numpy as np
        >>> from lowrank_blocks import BlockGrid, approximate
        >>> W = np.arange(16.0).reshape(4, 4)
        >>> approx = approximate(W, BlockGrid(2, rank=2))
        >>> bool(np.allclose(approx.reconstruct(), W))
        True
        """
        B0 = self.factors[0][0]
        xp = array_api_compat.array_namespace(B0)
        device = array_api_compat.device(B0)
        part = self.partition
        filled = {blk: B @ A for blk, (B, A) in zip(self.blocks, self.factors)}
        rows = []
        for i in range(part.grid[0]):
            row = []
            for j in range(part.grid[1]):
                block = filled.get((i, j))
                if block is None:
                    block = xp.zeros(part.block_shape(i, j), dtype=B0.dtype, device=device)
                row.append(block)
            rows.append(xp.concat(row, axis=1) if len(row) > 1 else row[0])
        return xp.concat(rows, axis=0) if len(rows) > 1 else rows[0]


def approximate(
    W: object,
    structure: Structure,
    *,
    method: str = "exact",
    oversampling: int = 10,
    n_iter: int = 4,
    random_state: int | np.random.Generator | None = None,
) -> Approximation:
    """The optimal approximation of ``W`` with the given structure and ranks.

    Every block is replaced by its truncated SVD (Eckart–Young block by block); blocks of equal
    shape are decomposed in one batched call.

    Parameters
    ----------
    W : array_like or PreparedMatrix, shape (m, n)
        A real matrix: NumPy, CuPy or PyTorch array, any Array API array, or anything
        :func:`numpy.asarray` accepts.  Integers are promoted to float64; float32 stays float32.
        Complex matrices are refused.
    structure : Structure
        :class:`~lowrank_blocks.Global`, :class:`~lowrank_blocks.DiagonalBlocks` or
        :class:`~lowrank_blocks.BlockGrid`, with one rank or one rank per block.
    method : {'exact', 'auto', 'randomized'}, default 'exact'
        ``'exact'``: thin SVD of every block (``'auto'`` is the same here: factors need the
        singular vectors, which the Gram path of the spectra does not give).
        ``'randomized'``: the batched randomized block Krylov method
        (:func:`lowrank_blocks.linalg.block_krylov_stack`) for the leading singular
        triplets; the error is then the true error of the factors returned, computed from the
        residual outside the Krylov space plus the Ritz values left out (the residual formed
        directly where it is small: no cancellation), so it is never below the optimal error.
        ``singular_values`` then holds the ``(n_iter + 1)(max rank + oversampling)`` Ritz
        values computed (at most the block's smaller side).
    oversampling, n_iter, random_state
        Options of the randomized method (``random_state`` is checked either way).

    Returns
    -------
    Approximation
        Factors on the input's backend and device, the relative error and the parameter count.

    Raises
    ------
    TypeError
        For a non-real dtype or a ``structure`` that is not a :class:`Structure`.
    ValueError
        For a matrix that is not 2-D, empty or not finite, a grid that does not fit, or a rank
        larger than the block it applies to.

    Examples
    --------
    >>> import numpy as np
    >>> from lowrank_blocks import BlockGrid, Global, approximate
    >>> rng = np.random.default_rng(0)
    >>> W = rng.standard_normal((28, 28))
    >>> approximate(W, Global(4)).n_params, approximate(W, BlockGrid(2, rank=2)).n_params
    (224, 224)
    >>> approximate(W, Global(28)).error
    0.0
    """
    if not isinstance(structure, Structure):
        raise TypeError(
            f"structure={structure!r} must be a Global, DiagonalBlocks or BlockGrid instance"
        )
    method = check_method(method)
    oversampling, n_iter = _check_randomized_options(oversampling, n_iter)
    rng = check_random_state(random_state)
    prep = prepare(W)
    sampling = None
    if method == "randomized":
        ranks = structure.block_ranks(prep.shape)
        sampling = Sampling(int(rng.integers(0, 2**63 - 1)), max(ranks), oversampling, n_iter)
    return approximate_prepared(prep, structure, sampling)


def approximate_prepared(
    prep: PreparedMatrix, structure: Structure, sampling: Sampling | None = None
) -> Approximation:
    """:func:`approximate` on a prepared matrix; ``sampling`` draws the randomized range.

    With the :class:`~lowrank_blocks.spectra.Sampling` of randomized spectra, the same range is
    drawn again, so the factors have the error those spectra reported.
    """
    xp = prep.xp
    shape = prep.shape
    part = structure.partition(shape)
    ranks = structure.block_ranks(shape)
    blocks = structure.blocks
    half_divisor = math.sqrt(float(prep.divisor))  # factors of W, not of data = W / divisor
    rest = float(prep.remaining_scale)
    rng = None if sampling is None else np.random.default_rng(sampling.seed)

    factors: list[tuple[Array, Array] | None] = [None] * len(blocks)
    values: list[np.ndarray] = [np.empty(0)] * len(blocks)  # of the scaled matrix
    residual = np.zeros(len(blocks))
    randomized = False
    def keep(chunk: list[int], U: Array, S: Array, Vt: Array) -> None:
        """Factors of the ranks asked for; the rest of U and Vt is dropped at once."""
        S_host = to_numpy(S).astype(np.float64) / rest  # singular values of W / scale
        root = xp.sqrt(S) * half_divisor
        for g, k in enumerate(chunk):
            r = ranks[k]
            values[k] = S_host[g]
            factors[k] = (U[g, :, :r] * root[g, None, :r], root[g, :r, None] * Vt[g, :r, :])

    for (mb, nb), positions in block_groups(part, blocks).items():
        if sampling is not None and _randomized_pays(mb, nb, sampling):
            stack = stack_blocks(prep.data, part, [blocks[k] for k in positions], xp)
            U, S, Vt, res = block_krylov_stack(
                stack, min(sampling.sample_rank, mb, nb), xp, oversampling=sampling.oversampling,
                n_iter=sampling.n_iter, random_state=rng, compute_uv=True,
            )
            del stack
            residual[positions] = to_numpy(res).astype(np.float64) / rest**2
            randomized = True
            keep(positions, U, S, Vt)
            continue
        # NumPy: blocks in chunks of bounded size, so the full U and Vt (and NumPy's float64
        # copies) of many blocks never exist at once; other backends: one batched call.
        per = max(1, _CHUNK_ELEMENTS // (mb * nb)) if isinstance(prep.data, np.ndarray) else len(positions)
        for start in range(0, len(positions), per):
            chunk = positions[start : start + per]
            stack = stack_blocks(prep.data, part, [blocks[k] for k in chunk], xp)
            U, S, Vt = svd_stack(stack, xp)
            del stack
            keep(chunk, U, S, Vt)
            del U, S, Vt

    width = max(len(v) for v in values)
    sq = np.zeros((len(blocks), width))
    for k, v in enumerate(values):
        sq[k, : len(v)] = v * v
    held, outside = prep.energies(part.grid, blocks)
    spectra = BlockSpectra(
        partition=part,
        blocks=blocks,
        sq=sq,
        known=np.array([len(v) for v in values], dtype=np.int64),
        residual=residual,
        held_energies=held,
        outside=outside,
        method="randomized" if randomized else "exact",
        sampling=sampling if randomized else None,
    )
    error = spectra.errors(np.array(ranks, dtype=np.int64))
    return Approximation(
        structure=structure,
        partition=part,
        blocks=blocks,
        ranks=ranks,
        factors=tuple(factors),  # type: ignore[arg-type]
        singular_values=tuple(v * prep.scale for v in values),
        error=float(error),
        n_params=structure.n_params(shape),
    )
