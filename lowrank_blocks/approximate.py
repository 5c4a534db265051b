"""The optimal approximation of a matrix under a block low-rank structure.

By Eckart–Young, applied block by block (the squared Frobenius error is a sum over blocks), the
best approximation with given per-block ranks is the truncated SVD of every block, and zero on
the blocks a structure leaves out.  The error therefore needs singular values only::

    err² = Σ_b Σ_{i > r_b} σ_{b,i}²  +  Σ_{blocks left out} ‖W_b‖_F²

and the relative error reported is ``err / ‖W‖_F``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np

from .linalg import (
    _check_randomized_options,
    as_matrix,
    block_energies,
    block_groups,
    power_of_two_scale,
    randomized_svd_stack,
    stack_blocks,
    svd_stack,
    to_numpy,
)
from .structures import Partition, Structure

__all__ = ["Approximation", "approximate"]

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
        return 0 if self.structure.is_uniform else len(self.blocks)

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the approximated matrix."""
        return self.partition.shape

    def __repr__(self) -> str:
        m, n = self.shape
        structure = repr(self.structure)
        if not self.structure.is_uniform and len(self.ranks) > 8:  # keep long rank lists short
            nonzero = sum(r > 0 for r in self.ranks)
            structure = structure.split(", rank=")[0] + (
                f", rank=<{len(self.ranks)} per-block ranks, {nonzero} nonzero>)"
            )
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


def relative_error(
    singular_values: Sequence[np.ndarray],
    ranks: Sequence[int],
    energies: np.ndarray,
    blocks: Sequence[tuple[int, int]],
) -> float:
    """Relative Frobenius error from the complete singular values of the active blocks.

    ``energies`` is the ``(p, q)`` array of squared block norms; blocks not in ``blocks`` are
    left out entirely.  The tail sums ``Σ_{i > r} σ_i²`` are taken directly (no subtraction from
    the block energy), so the error stays accurate when it is tiny; full rank gives exactly 0.
    """
    total = float(energies.sum())
    if total == 0.0:
        return 0.0
    active = np.zeros(energies.shape, dtype=bool)
    err_sq = 0.0
    for (i, j), sig, r in zip(blocks, singular_values, ranks):
        active[i, j] = True
        tail = sig[r:]
        err_sq += float(np.dot(tail, tail))
    err_sq += float(energies[~active].sum())
    return math.sqrt(min(err_sq / total, 1.0))


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
    W : array_like, shape (m, n)
        A real matrix: NumPy, CuPy or PyTorch array, any Array API array, or anything
        :func:`numpy.asarray` accepts.  Integers are promoted to float64; float32 stays float32.
        Complex matrices are refused.
    structure : Structure
        :class:`~lowrank_blocks.Global`, :class:`~lowrank_blocks.DiagonalBlocks` or
        :class:`~lowrank_blocks.BlockGrid`, with one rank or one rank per block.
    method : {'exact', 'randomized'}, default 'exact'
        ``'exact'``: thin SVD of every block.  ``'randomized'``: the batched randomized range
        finder (:func:`lowrank_blocks.linalg.randomized_svd_stack`) for the leading singular
        triplets; the error is then ``‖W_b‖² − Σ_{i ≤ r_b} σ̃_i²`` with Ritz values
        ``σ̃ ≤ σ``, so it is never optimistic.  ``singular_values`` then holds the leading
        values only.
    oversampling, n_iter, random_state
        Options of the randomized method (ignored by ``'exact'``).

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
    W, xp = as_matrix(W)
    shape = (int(W.shape[0]), int(W.shape[1]))
    part = structure.partition(shape)
    ranks = structure.block_ranks(shape)
    blocks = structure.blocks

    if method not in ("exact", "randomized"):
        raise ValueError(f"method={method!r} is not allowed; use one of exact, randomized")
    _check_randomized_options(oversampling, n_iter)
    rng = np.random.default_rng(random_state)
    scale = power_of_two_scale(W, xp)
    Ws = W / scale  # exact: a power of two
    half_scale = math.sqrt(scale)

    factors: list[tuple[Array, Array] | None] = [None] * len(blocks)
    sigmas: list[np.ndarray] = [np.empty(0)] * len(blocks)  # of the scaled matrix
    complete = True
    for (mb, nb), positions in block_groups(part, blocks).items():
        group = [blocks[k] for k in positions]
        stack = stack_blocks(Ws, part, group, xp)
        k_max = max(max(ranks[k] for k in positions), 1)
        if method == "randomized" and k_max + oversampling < min(mb, nb):
            U, S, Vt = randomized_svd_stack(
                stack, k_max, xp, oversampling=oversampling, n_iter=n_iter, random_state=rng
            )
            complete = False
        else:
            U, S, Vt = svd_stack(stack, xp)
        S_host = to_numpy(S).astype(np.float64)
        root = xp.sqrt(S) * half_scale
        for g, k in enumerate(positions):
            r = ranks[k]
            sigmas[k] = S_host[g]
            factors[k] = (U[g, :, :r] * root[g, None, :r], root[g, :r, None] * Vt[g, :r, :])

    energies = block_energies(Ws, part, xp)
    if complete:
        error = relative_error(sigmas, ranks, energies, blocks)
    else:  # leading values only: err² = ‖W‖² − Σ_b Σ_{i ≤ r_b} σ̃²
        total = float(energies.sum())
        kept = sum(float(np.dot(s[:r], s[:r])) for s, r in zip(sigmas, ranks))
        error = math.sqrt(min(max(total - kept, 0.0) / total, 1.0)) if total else 0.0
    return Approximation(
        structure=structure,
        partition=part,
        blocks=blocks,
        ranks=ranks,
        factors=tuple(factors),  # type: ignore[arg-type]
        singular_values=tuple(s * scale for s in sigmas),
        error=error,
        n_params=structure.n_params(shape),
    )
