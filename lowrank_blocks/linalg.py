"""Backend-agnostic linear algebra on the blocks of a partition.

Everything here takes arrays of any Array API backend (NumPy, CuPy, PyTorch, ``array-api-strict``)
through :mod:`array_api_compat` and returns arrays of the same backend and device.

Blocks of equal shape are stacked into one ``(g, m_b, n_b)`` array and decomposed with a single
batched call (``xp.linalg.svd`` / ``xp.linalg.svdvals`` accept stacks), never a Python loop of
decompositions.  A partition whose sizes do not divide has at most four block shapes, so a ragged
grid costs at most four batched calls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import array_api_compat
import numpy as np

from .structures import Partition

__all__ = [
    "as_matrix",
    "block_groups",
    "block_energies",
    "stack_blocks",
    "svd_stack",
    "svdvals_stack",
]

Array = Any


def as_matrix(W: object, name: str = "W") -> tuple[Array, Any]:
    """Validate a real matrix and return it in a floating dtype with its namespace.

    Integer input is promoted to float64; float16/bfloat16 to float32; float32 and float64 stay.
    Objects that are not arrays (lists, pandas frames) go through :func:`numpy.asarray`.

    Raises
    ------
    TypeError
        For complex, boolean, object, string or other non-numeric dtypes.
    ValueError
        For anything other than 2 dimensions, an empty matrix, or NaN/infinite entries.

    Examples
    --------
    >>> W, xp = as_matrix([[1, 2], [3, 4]])
    >>> W.dtype
    dtype('float64')
    """
    if not array_api_compat.is_array_api_obj(W):
        try:
            W = np.asarray(W)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{name} could not be read as an array: {exc}") from None
    xp = array_api_compat.array_namespace(W)
    shape = tuple(W.shape)
    if len(shape) != 2:
        raise ValueError(
            f"{name} must be a 2-D matrix; got {len(shape)} dimensions with shape {shape}"
        )
    dtype = W.dtype
    kind = getattr(dtype, "kind", None)  # NumPy-style dtypes: refuse object/str/bytes/time early
    if kind is not None and kind not in "biufc":
        raise TypeError(
            f"{name} has dtype {dtype}, which is not numeric; a real (integer or floating) "
            f"dtype is required"
        )
    if xp.isdtype(dtype, "bool"):
        raise TypeError(f"{name} has boolean dtype {dtype}; a real numeric dtype is required")
    if xp.isdtype(dtype, "complex floating"):
        raise TypeError(
            f"{name} has complex dtype {dtype}; only real matrices are supported "
            f"(approximate the real and imaginary parts separately)"
        )
    if xp.isdtype(dtype, "integral"):
        W = xp.astype(W, xp.float64)
    elif xp.isdtype(dtype, "real floating"):
        if dtype not in (xp.float32, xp.float64):  # float16, bfloat16: LAPACK has no such type
            W = xp.astype(W, xp.float32)
    else:
        raise TypeError(f"{name} has dtype {dtype}; a real numeric dtype is required")
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(
            f"{name} is empty (shape {shape}); a matrix needs at least one row and one column"
        )
    finite = xp.isfinite(W)
    if not bool(xp.all(finite)):
        bad = int(xp.sum(xp.astype(~finite, xp.int64)))
        raise ValueError(
            f"{name} has {bad} NaN or infinite entr{'y' if bad == 1 else 'ies'}; "
            f"only finite values are allowed"
        )
    return W, xp


def power_of_two_scale(W: Array, xp: Any) -> float:
    """A power of two near ``max |W|`` (1.0 for a zero matrix).

    Dividing by it is exact in floating point and keeps squared sums away from overflow and
    underflow, so matrices with entries near 1e±200 give the same relative errors as any other.
    """
    amax = float(xp.max(xp.abs(W)))
    if amax == 0.0:
        return 1.0
    return math.ldexp(1.0, math.frexp(amax)[1])


def block_groups(
    partition: Partition, blocks: Sequence[tuple[int, int]]
) -> dict[tuple[int, int], list[int]]:
    """Positions in ``blocks`` grouped by block shape, in order of first appearance.

    Examples
    --------
    >>> part = Partition((5, 4), (2, 2))
    >>> block_groups(part, [(0, 0), (0, 1), (1, 0), (1, 1)])
    {(3, 2): [0, 1], (2, 2): [2, 3]}
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for k, (i, j) in enumerate(blocks):
        groups.setdefault(partition.block_shape(i, j), []).append(k)
    return groups


def stack_blocks(
    W: Array, partition: Partition, blocks: Sequence[tuple[int, int]], xp: Any
) -> Array:
    """Stack blocks of equal shape into one ``(len(blocks), m_b, n_b)`` array.

    When the blocks form a full sub-grid (every row part of a size class with every column part
    of a size class, the usual case for a block grid), the stack is one reshape and transpose of
    a contiguous sub-matrix: a single copy.  Otherwise the blocks are sliced and stacked.
    """
    rows = sorted({i for i, _ in blocks})
    cols = sorted({j for _, j in blocks})
    product = [(i, j) for i in rows for j in cols]
    contiguous = rows == list(range(rows[0], rows[-1] + 1)) and cols == list(
        range(cols[0], cols[-1] + 1)
    )
    if list(blocks) == product and contiguous:
        mb, nb = partition.block_shape(rows[0], cols[0])
        r0, c0 = partition.row_offsets[rows[0]], partition.col_offsets[cols[0]]
        p, q = len(rows), len(cols)
        sub = W[r0 : r0 + p * mb, c0 : c0 + q * nb]
        sub = xp.reshape(sub, (p, mb, q, nb))
        return xp.reshape(xp.permute_dims(sub, (0, 2, 1, 3)), (p * q, mb, nb))
    return xp.stack([W[partition.block_slices(i, j)] for i, j in blocks])


def svd_stack(stack: Array, xp: Any) -> tuple[Array, Array, Array]:
    """Thin SVD ``U, S, Vt`` of every matrix in a stack, in one batched call."""
    U, S, Vt = xp.linalg.svd(stack, full_matrices=False)
    return U, S, Vt


def svdvals_stack(stack: Array, xp: Any) -> Array:
    """Singular values (descending) of every matrix in a stack, in one batched call."""
    return xp.linalg.svdvals(stack)


def to_numpy(x: Array) -> np.ndarray:
    """Copy a (small) array of any backend to a NumPy array on the host."""
    if isinstance(x, np.ndarray):
        return x
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy()
    if array_api_compat.is_cupy_array(x):
        return x.get()
    return np.asarray(x)


def block_energies(W: Array, partition: Partition, xp: Any) -> np.ndarray:
    """Squared Frobenius norm of every block, as a ``(p, q)`` float64 NumPy array.

    Sums of squares of positive numbers: no cancellation, so the energy a structure leaves out
    (the off-diagonal blocks of a diagonal structure) is accurate even when it is tiny.
    """
    row_off = partition.row_offsets
    col_starts = np.asarray(partition.col_offsets[:-1])
    sq = W * W
    out = np.empty(partition.grid, dtype=np.float64)
    for i in range(partition.grid[0]):
        col_sums = to_numpy(xp.sum(sq[row_off[i] : row_off[i + 1], :], axis=0))
        out[i] = np.add.reduceat(col_sums.astype(np.float64), col_starts)
    return out
