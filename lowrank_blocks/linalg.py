"""Backend-agnostic linear algebra on the blocks of a partition.

Everything here takes arrays of any Array API backend (NumPy, CuPy, PyTorch, ``array-api-strict``)
through :mod:`array_api_compat` and returns arrays of the same backend and device.

Blocks of equal shape are stacked into one ``(g, m_b, n_b)`` array and decomposed with a single
batched call (``xp.linalg.svd`` / ``xp.linalg.svdvals`` accept stacks), never a Python loop of
decompositions.  A partition whose sizes do not divide has at most four block shapes, so a ragged
grid costs at most four batched calls.

Singular values come from ``svdvals`` (:func:`svdvals_stack`), from the eigenvalues of Gram
matrices with a certified error bound (``lowrank_blocks._gram``, the default ``method='auto'``
of the spectra), or, for the leading ones only, from randomized block Krylov
(:func:`block_krylov_stack`); :func:`randomized_svd_stack` is plain subspace iteration.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from typing import Any

import array_api_compat
import numpy as np

from .partition import Partition

__all__ = [
    "as_matrix",
    "block_groups",
    "block_krylov_stack",
    "block_view",
    "held_energies",
    "run_concurrently",
    "block_energies",
    "stack_blocks",
    "svd_stack",
    "svdvals_stack",
]

Array = Any


def as_matrix(W: object, name: str = "W", *, stack: bool = False) -> tuple[Array, Any]:
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
    if not array_api_compat.is_array_api_obj(W) and _is_layer(W):
        W = W.weight.detach()  # an nn.Linear (or any layer with a 2-D weight): its weight
    W = _unwrap_special(W, name)
    if not array_api_compat.is_array_api_obj(W):
        if hasattr(W, "state_dict") or (isinstance(W, dict) and W):
            raise TypeError(
                f"{name} is a {type(W).__name__} holding several tensors; pass one matrix, or "
                f"analyse them all with lowrank_blocks.analyze_layers / compare_many"
            )
        try:
            W = np.asarray(W)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{name} could not be read as an array: {exc}") from None
    xp = array_api_compat.array_namespace(W)
    shape = tuple(W.shape)
    if stack and len(shape) != 3:
        raise ValueError(
            f"{name} must be a stack of matrices of shape (N, m, n); got shape {shape}"
        )
    if not stack and len(shape) != 2:
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
        if kind == "f" and dtype.itemsize > 8:  # float128/longdouble: float64, checked first
            W = _from_longdouble(W, name)
        elif dtype not in (xp.float32, xp.float64):  # float16, bfloat16: LAPACK has no such type
            W = xp.astype(W, xp.float32)
    else:
        raise TypeError(f"{name} has dtype {dtype}; a real numeric dtype is required")
    if any(d == 0 for d in shape):
        raise ValueError(
            f"{name} is empty (shape {shape}); a matrix needs at least one row and one column"
        )
    bad = _count_not_finite(W, xp)
    if bad:
        raise ValueError(
            f"{name} has {bad} NaN or infinite entr{'y' if bad == 1 else 'ies'}; "
            f"only finite values are allowed"
        )
    return W, xp


def _unwrap_special(W: object, name: str) -> object:
    """Masked arrays (refused while an entry is masked) and ``scipy.sparse`` (densified)."""
    if isinstance(W, np.ma.MaskedArray):
        masked = int(np.ma.count_masked(W))
        if masked:
            raise ValueError(
                f"{name} is a masked array with {masked} masked entr"
                f"{'y' if masked == 1 else 'ies'}; a masked entry has no value to approximate: "
                f"fill them explicitly ({name}.filled(value)) or pass {name}.data"
            )
        return np.asarray(W.data)
    if type(W).__module__.startswith("scipy.sparse"):
        import scipy.sparse

        if scipy.sparse.issparse(W):
            from ._limits import check_bytes

            shape = tuple(int(d) for d in W.shape)
            itemsize = max(np.dtype(W.dtype).itemsize, 8) if W.dtype.kind in "iuf" else 8
            if len(shape) == 2:
                check_bytes(shape[0] * shape[1] * itemsize,
                            f"densifying the {shape[0]} × {shape[1]} scipy.sparse matrix {name}")
            return W.toarray()
    return W


def _from_longdouble(W: np.ndarray, name: str) -> np.ndarray:
    """float128/longdouble as float64, refused where a finite value exceeds float64's range."""
    finite = np.isfinite(W)
    big = np.abs(np.where(finite, W, 0)) > np.finfo(np.float64).max
    if big.any():
        raise ValueError(
            f"{name} has dtype {W.dtype} with {int(big.sum())} finite entries beyond the float64 "
            f"range (largest magnitude {float(np.max(np.abs(W[big]))):.3g} > 1.8e308); "
            f"rescale it first"
        )
    return W.astype(np.float64)


_CHUNK_ELEMENTS = 1 << 19  # temporaries of row chunks: at most ~4 MB of float64


def _row_chunks(n_rows: int, width: int) -> range:
    step = max(1, _CHUNK_ELEMENTS // max(1, width))
    return range(0, n_rows, step)


def _count_not_finite(W: Array, xp: Any) -> int:
    """NaN and infinite entries, counted in row chunks (no temporary the size of ``W``)."""
    flat = xp.reshape(W, (-1, int(W.shape[-1])))
    rows, width = int(flat.shape[0]), int(flat.shape[1])
    step = max(1, _CHUNK_ELEMENTS // max(1, width))
    bad = 0
    for r0 in _row_chunks(rows, width):
        finite = xp.isfinite(flat[r0 : min(r0 + step, rows), :])
        if not bool(xp.all(finite)):
            bad += int(xp.sum(xp.astype(~finite, xp.int64)))
    return bad


def _is_layer(obj: object) -> bool:
    """A layer object (``torch.nn.Linear`` and the like) whose ``weight`` is a 2-D tensor."""
    weight = getattr(obj, "weight", None)
    return (
        weight is not None
        and hasattr(weight, "detach")
        and len(getattr(weight, "shape", ())) == 2
        and hasattr(obj, "state_dict")
    )


def power_of_two_scale(W: Array, xp: Any) -> float:
    """A power of two near ``max |W|`` (1.0 for a zero matrix).

    Dividing by it is exact in floating point and keeps squared sums away from overflow and
    underflow, so matrices with entries near 1e±200 give the same relative errors as any other.
    ``max |W|`` is taken as ``max(max W, −min W)``: no temporary the size of ``W``.
    """
    amax = max(float(xp.max(W)), -float(xp.min(W)))
    return float(_scale_for(np.array([amax]))[0])


def power_of_two_scales(X: Array, xp: Any) -> np.ndarray:
    """:func:`power_of_two_scale` of every matrix of a stack ``(N, m, n)``, as a NumPy array."""
    n_mat = int(X.shape[0])
    flat = xp.reshape(X, (n_mat, -1))
    high = to_numpy(xp.max(flat, axis=1)).astype(np.float64)
    low = to_numpy(xp.min(flat, axis=1)).astype(np.float64)
    return _scale_for(np.maximum(high, -low))


def _scale_for(amax: np.ndarray) -> np.ndarray:
    """The power of two putting each ``amax`` in ``[1, 2)`` (1 where it is 0).

    ``frexp`` gives ``amax < 2**e``; dividing by ``2**(e - 1)`` never forms ``2**1024`` (or
    ``2**128`` in float32), which would overflow.
    """
    exps = np.frexp(np.where(amax > 0, amax, 1.0))[1] - 1
    return np.where(amax > 0, np.ldexp(1.0, exps), 1.0)


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
    """Stack blocks of equal shape into one ``(..., len(blocks), m_b, n_b)`` array.

    ``W`` may carry leading batch dimensions (a stack of matrices ``(..., m, n)``); they are
    kept in front.  When the blocks form a full sub-grid (every row part of a size class with
    every column part of a size class, the usual case for a block grid), the stack is one
    reshape and transpose of a contiguous sub-matrix: a single copy.  Otherwise the blocks are
    sliced and stacked.
    """
    grid = _subgrid(blocks)
    if grid is not None:
        view = _subgrid_view(W, partition, grid, xp)
        lead = tuple(view.shape[:-4])
        p, q, mb, nb = view.shape[-4:]
        return xp.reshape(view, lead + (p * q, mb, nb))
    return xp.stack([W[(..., *partition.block_slices(i, j))] for i, j in blocks], axis=-3)


def svd_stack(stack: Array, xp: Any) -> tuple[Array, Array, Array]:
    """Thin SVD ``U, S, Vt`` of every matrix in a stack, in one batched call.

    float32 NumPy blocks of at least 64 × 64 stay float32 (SciPy's ``sgesdd``, block by
    block), as in :func:`svdvals_stack`.
    """
    if (
        isinstance(stack, np.ndarray)
        and stack.dtype == np.float32
        and min(stack.shape[-2:]) >= _SINGLE_PRECISION_MIN_SIDE
    ):
        from scipy.linalg import svd

        parts = [svd(b, full_matrices=False, check_finite=False, lapack_driver="gesdd")
                 for b in stack]
        return tuple(np.stack([p[k] for p in parts]) for k in range(3))  # type: ignore[return-value]
    U, S, Vt = xp.linalg.svd(stack, full_matrices=False)
    return U, S, Vt


_THREADING_MIN_WORK = 1 << 22  # ~ m n min(m, n) summed over the stack; below: one call


def _numpy_workers(stack: Array) -> int:
    """Threads worth using for a NumPy stack: one per core, at most one per matrix.

    Small stacks (the 7 × 7 blocks of an MNIST digit) stay in one call: starting threads and
    limiting BLAS would cost more than the decompositions.
    """
    if not isinstance(stack, np.ndarray) or stack.ndim < 3:
        return 1
    m_b, n_b = stack.shape[-2:]
    return _numpy_workers_for(int(np.prod(stack.shape[:-2])), m_b, n_b)


# float32 NumPy blocks at least this large are decomposed in single precision by SciPy's LAPACK
# (NumPy's linalg computes float32 input in float64: twice the memory and about twice the time).
_SINGLE_PRECISION_MIN_SIDE = 64


def svdvals_stack(stack: Array, xp: Any) -> Array:
    """Singular values (descending) of every matrix of an array with batch dimensions.

    ``stack`` may be a strided view (:func:`block_view`).  NumPy: the batch is split into
    chunks of about half a million entries (NumPy's linalg computes in float64 and
    copies its input, so temporaries stay small) spread over one thread per core with BLAS
    limited to one thread each (LAPACK's gesdd releases the GIL).  float32 NumPy blocks of at
    least 64 × 64 stay float32: SciPy's ``sgesdd``, one block at a time (singular values
    accurate to about ``1e-7 σ_max``, float32's own precision, at half the memory and time).
    Other backends: one batched call.
    """
    if not isinstance(stack, np.ndarray):
        return xp.linalg.svdvals(stack)
    lead = stack.shape[:-2]
    m, n = stack.shape[-2:]
    if stack.dtype == np.float32 and min(m, n) >= _SINGLE_PRECISION_MIN_SIDE:
        return _svdvals_single(stack)
    n_mat = int(np.prod(lead)) if lead else 1
    if not lead:
        return np.linalg.svd(stack, compute_uv=False)
    # Chunks along the first batch axis (views), each of bounded size.
    per_row = n_mat // int(lead[0]) * m * n
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // max(1, per_row))
    workers = _numpy_workers_for(n_mat, m, n)
    rows_per_chunk = min(rows_per_chunk, max(1, -(-int(lead[0]) // workers)))
    starts = list(range(0, int(lead[0]), rows_per_chunk))
    chunks = [stack[s : s + rows_per_chunk] for s in starts]
    if workers == 1 or len(chunks) == 1:
        parts = [np.linalg.svd(c, compute_uv=False) for c in chunks]
    else:
        from concurrent.futures import ThreadPoolExecutor

        with one_blas_thread(), ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(lambda c: np.linalg.svd(c, compute_uv=False), chunks))
    return np.concatenate(parts, axis=0)


_SERIAL = threading.local()  # set in threads that already share the cores with others
_CONTROLLER: list[Any] = []  # [number of modules when made, threadpoolctl controller]


def one_blas_thread() -> Any:
    """A context manager that limits every BLAS library to one thread (threadpoolctl), from a
    controller made once: ``threadpool_limits`` scans the loaded libraries on every call
    (about 2 ms, paid tens of times by one surface).  The controller is made again after new
    modules were imported, so a BLAS loaded since (SciPy's, on first use) is limited too."""
    import sys

    from threadpoolctl import ThreadpoolController

    if not _CONTROLLER or _CONTROLLER[0] != len(sys.modules):
        controller = ThreadpoolController()
        _CONTROLLER[:] = [len(sys.modules), controller]
    return _CONTROLLER[1].limit(limits=1, user_api="blas")


def _numpy_workers_for(n_mat: int, m: int, n: int) -> int:
    if getattr(_SERIAL, "on", False):
        return 1
    if n_mat < 2 or n_mat * m * n * min(m, n) < _THREADING_MIN_WORK:
        return 1
    return max(1, min(os.cpu_count() or 1, n_mat))


def run_concurrently(tasks: Sequence[Any], costs: Sequence[float]) -> list[Any]:
    """Run NumPy decompositions concurrently, one BLAS thread each, largest first.

    Independent decompositions (the grids of a surface) keep both cores busy better than
    one multithreaded LAPACK call after another: bidiagonalization is memory-bound and gains
    little from threaded BLAS.  Inside the tasks the batched calls run serially.  Returns the
    results in the order of ``tasks``.
    """
    workers = min(os.cpu_count() or 1, len(tasks))
    if workers < 2 or getattr(_SERIAL, "on", False):  # one core already (a Dask task, a pool)
        return [task() for task in tasks]
    from concurrent.futures import ThreadPoolExecutor

    def serial(task: Any) -> Any:
        _SERIAL.on = True
        try:
            return task()
        finally:
            _SERIAL.on = False

    order = sorted(range(len(tasks)), key=lambda k: -costs[k])
    with one_blas_thread(), ThreadPoolExecutor(workers) as pool:
        futures = {k: pool.submit(serial, tasks[k]) for k in order}
        return [futures[k].result() for k in range(len(tasks))]


def _svdvals_single(stack: np.ndarray) -> np.ndarray:
    """float32 singular values by SciPy's ``sgesdd``, block by block (threads over blocks)."""
    from scipy.linalg import svd

    lead = stack.shape[:-2]
    m, n = stack.shape[-2:]
    out = np.empty(lead + (min(m, n),), dtype=np.float32)
    index = list(np.ndindex(*lead)) if lead else [()]

    def one(k: tuple[int, ...]) -> None:
        out[k] = svd(stack[k], compute_uv=False, check_finite=False, lapack_driver="gesdd")

    workers = _numpy_workers_for(len(index), m, n)
    if workers == 1:
        for k in index:
            one(k)
    else:
        from concurrent.futures import ThreadPoolExecutor

        with one_blas_thread(), ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, index))
    return out


def to_numpy(x: Array) -> np.ndarray:
    """Copy a (small) array of any backend to a NumPy array on the host."""
    if isinstance(x, np.ndarray):
        return x
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy()
    if array_api_compat.is_cupy_array(x):
        return x.get()
    return np.asarray(x)


def block_energies(W: Array, partition: Partition, xp: Any, scale: Any = 1.0) -> np.ndarray:
    """Squared Frobenius norm of every block of ``W / scale``, as a ``(..., p, q)`` float64 array.

    ``W`` may carry leading batch dimensions (then ``scale`` may hold one power of two per
    matrix).  Rows are divided by ``scale`` (exact for a power of two) and squared in chunks of
    at most half a million entries, so squares cannot overflow and no temporary is the size
    of the matrix.  Sums of squares of positive numbers: no cancellation, so the energy a
    structure leaves out (the off-diagonal blocks of a diagonal one) is accurate when tiny.
    """
    lead = tuple(int(d) for d in W.shape[:-2])
    n = int(W.shape[-1])
    col_starts = np.asarray(partition.col_offsets[:-1])
    out = np.empty(lead + partition.grid, dtype=np.float64)
    for i in range(partition.grid[0]):
        col_sums = _row_part_column_energies(W, partition, i, xp, scale, lead, n)
        out[..., i, :] = np.add.reduceat(col_sums, col_starts, axis=-1)
    return out


def held_energies(
    W: Array, partition: Partition, blocks: Sequence[tuple[int, int]], xp: Any, scale: Any = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Energy of every listed block and of everything outside them, of ``W / scale``.

    Returns ``(held, outside)`` with shapes ``(..., len(blocks))`` and ``(...)``: both sums of
    squares taken directly (the outside energy is never a difference), and no ``p × q``
    array is formed, so a diagonal of 1024 blocks costs 1024 numbers.
    """
    by_row: dict[int, list[tuple[int, int]]] = {}
    for k, (i, j) in enumerate(blocks):
        by_row.setdefault(i, []).append((k, j))
    lead = tuple(int(d) for d in W.shape[:-2])
    n = int(W.shape[-1])
    held = np.zeros(lead + (len(blocks),))
    outside = np.zeros(lead)
    col_starts = np.asarray(partition.col_offsets[:-1])
    for i in range(partition.grid[0]):
        row_e = np.add.reduceat(_row_part_column_energies(W, partition, i, xp, scale, lead, n),
                                col_starts, axis=-1)  # (..., q)
        mask = np.ones(partition.grid[1], dtype=bool)
        for k, j in by_row.get(i, []):
            held[..., k] = row_e[..., j]
            mask[j] = False
        outside += row_e[..., mask].sum(axis=-1)
    return held, outside


def _row_part_column_energies(
    W: Array, partition: Partition, i: int, xp: Any, scale: Any, lead: tuple[int, ...], n: int
) -> np.ndarray:
    """Column sums of squares of row part ``i`` of ``W / scale``, in chunks (float64)."""
    row_off = partition.row_offsets
    width = n * max(1, int(np.prod(lead)))
    step = max(1, _CHUNK_ELEMENTS // width)
    scale_arr = np.asarray(scale, dtype=np.float64)
    divisor: Any = None
    if scale_arr.ndim == 0:
        divisor = float(scale_arr) if float(scale_arr) != 1.0 else None
    else:
        import array_api_compat

        divisor = xp.asarray(scale_arr.reshape(lead + (1, 1)), dtype=W.dtype,
                             device=array_api_compat.device(W))
    col_sums = np.zeros(lead + (n,))
    for r0 in range(row_off[i], row_off[i + 1], step):
        rows = W[..., r0 : min(r0 + step, row_off[i + 1]), :]
        if divisor is not None:
            rows = rows / divisor
        col_sums += to_numpy(xp.sum(rows * rows, axis=-2)).astype(np.float64)
    return col_sums


def block_view(
    W: Array, partition: Partition, blocks: Sequence[tuple[int, int]], xp: Any
) -> Array:
    """Blocks of equal shape as one array with batch dimensions, without copying if possible.

    For NumPy, blocks that form a full sub-grid in row-major order come back as a strided
    *view* of shape ``(..., p', q', m_b, n_b)`` (two batch axes; LAPACK copies one block at a
    time), so no stacked copy of the matrix is made.  Otherwise (other backends, or blocks
    such as the diagonal ones) this is :func:`stack_blocks`: ``(..., g, m_b, n_b)`` (one batch
    axis).
    """
    if isinstance(W, np.ndarray):
        grid = _subgrid(blocks)
        if grid is not None:
            return _subgrid_view(W, partition, grid, xp)
    return stack_blocks(W, partition, blocks, xp)


def _subgrid_view(
    W: Array, partition: Partition, grid: tuple[list[int], list[int]], xp: Any
) -> Array:
    """The blocks of a contiguous sub-grid as a ``(..., p, q, m_b, n_b)`` array (a view where
    the backend allows: a reshape and a transpose of a sub-matrix)."""
    rows, cols = grid
    mb, nb = partition.block_shape(rows[0], cols[0])
    r0, c0 = partition.row_offsets[rows[0]], partition.col_offsets[cols[0]]
    p, q = len(rows), len(cols)
    lead = tuple(W.shape[:-2])
    k = len(lead)
    sub = xp.reshape(W[..., r0 : r0 + p * mb, c0 : c0 + q * nb], lead + (p, mb, q, nb))
    return xp.permute_dims(sub, tuple(range(k)) + (k, k + 2, k + 1, k + 3))


def _subgrid(blocks: Sequence[tuple[int, int]]) -> tuple[list[int], list[int]] | None:
    """Row and column parts if ``blocks`` is a full contiguous sub-grid in row-major order."""
    rows = sorted({i for i, _ in blocks})
    cols = sorted({j for _, j in blocks})
    contiguous = rows == list(range(rows[0], rows[-1] + 1)) and cols == list(
        range(cols[0], cols[-1] + 1)
    )
    # Checked without listing the product, which for the diagonal of a large grid would hold
    # millions of pairs.
    is_product = len(blocks) == len(rows) * len(cols) and all(
        b == (rows[k // len(cols)], cols[k % len(cols)]) for k, b in enumerate(blocks)
    )
    return (rows, cols) if is_product and contiguous else None


def _check_stack_rank(stack: Array, rank: object) -> int:
    """``rank`` as an int in ``[1, min(m, n)]`` for a stack of ``m × n`` blocks."""
    from ._validate import as_int

    m, n = (int(d) for d in stack.shape[-2:])
    rank = as_int(rank, "rank", minimum=1)
    if rank > min(m, n):
        raise ValueError(f"rank={rank} exceeds the block size {m} × {n}; at most {min(m, n)}")
    return rank


def _check_randomized_options(oversampling: object, n_iter: object) -> tuple[int, int]:
    from ._validate import check_randomized_options

    return check_randomized_options(oversampling, n_iter)


def randomized_svd_stack(
    stack: Array,
    rank: int,
    xp: Any,
    *,
    oversampling: int = 10,
    n_iter: int = 4,
    random_state: int | np.random.Generator | None = None,
    compute_uv: bool = True,
    return_residual: bool = False,
) -> tuple[Any, ...] | Array:
    """Randomized truncated SVD of every matrix in a stack, all blocks at once.

    The randomized range finder of Halko, Martinsson & Tropp (2011), Algorithms 4.3/4.4 and 5.1:
    a Gaussian test matrix ``Ω`` with ``rank + oversampling`` columns, ``Y = A Ω``, ``n_iter``
    power iterations ``Y ← A (Aᵀ Y)`` with QR re-orthonormalisation after every product
    (Algorithm 4.4, which keeps small singular values from drowning in rounding), then the
    exact SVD of the small ``Qᵀ A``.  Every step is one batched call over the stack.

    Accuracy: the singular values returned are Ritz values, never larger than the true ones;
    for a spectrum with decay the error falls like ``(σ_{k+p+1}/σ_k)^{2 n_iter + 1}``.  On flat
    or slowly decaying spectra it is much worse: ``benchmarks/bench_surfaces.py`` measures it
    (about 5e-3 on the relative error of Gaussian matrices with the defaults).

    Parameters
    ----------
    stack : array, shape (g, m, n)
        Matrices of equal shape.
    rank : int
        Number of singular triplets wanted, ``1 <= rank <= min(m, n)``.
    xp : namespace
        The array namespace of ``stack``.
    oversampling : int, default 10
        Extra random vectors, ``>= 0``; the sample size is ``min(rank + oversampling, m, n)``.
    n_iter : int, default 4
        Power iterations, ``>= 0``.
    random_state : int, numpy.random.Generator or None
        Seed of the Gaussian test matrix (drawn on the host, then moved to the device).
    compute_uv : bool, default True
        ``False`` returns the singular values only.
    return_residual : bool, default False
        ``True`` returns all ``size = min(rank + oversampling, m, n)`` Ritz values (and
        vectors) instead of the leading ``rank``, followed by the energy
        ``‖A − Q Qᵀ A‖_F²`` outside the sampled range, computed from the residual matrix (no
        cancellation).  Then ``residual + Σ_{i > r} S_i²`` is the exact squared error of the
        rank-``r`` approximation ``U_r S_r Vt_r``: an upper bound on the optimal error that
        stays accurate when it is tiny.

    Returns
    -------
    U, S, Vt or S (and residual)
        ``U`` of shape ``(g, m, rank)``, ``S`` of shape ``(g, rank)`` descending, ``Vt`` of
        shape ``(g, rank, n)``, on the backend and device of ``stack``; with
        ``return_residual``, ``size`` columns instead of ``rank`` and the residual energies
        of shape ``(g,)``.

    References
    ----------
    N. Halko, P. G. Martinsson, J. A. Tropp, "Finding structure with randomness: probabilistic
    algorithms for constructing approximate matrix decompositions", SIAM Review 53(2), 2011.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> A = (rng.standard_normal((3, 50, 5)) @ rng.standard_normal((3, 5, 40)))
    >>> S = randomized_svd_stack(A, 5, np, random_state=0, compute_uv=False)
    >>> bool(np.allclose(S, np.linalg.svd(A, compute_uv=False)[:, :5]))
    True
    """
    oversampling, n_iter = _check_randomized_options(oversampling, n_iter)
    rank = _check_stack_rank(stack, rank)
    rng = np.random.default_rng(random_state)
    workers = _numpy_workers(stack)
    if workers > 1:
        # Small blocks: one chunk of the stack per core, single-threaded BLAS in each (the
        # batched products and QRs of small matrices gain nothing from threaded BLAS).
        from concurrent.futures import ThreadPoolExecutor

        seeds = rng.spawn(workers)
        chunks = np.array_split(stack, workers)
        opts = dict(oversampling=oversampling, n_iter=n_iter, compute_uv=compute_uv)
        with one_blas_thread(), ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(
                lambda cs: _randomized_svd_serial(cs[0], rank, np, random_state=cs[1], **opts),
                zip(chunks, seeds),
            ))
        out = tuple(np.concatenate([p[k] for p in parts]) for k in range(len(parts[0])))
    else:
        out = _randomized_svd_serial(
            stack, rank, xp, oversampling=oversampling, n_iter=n_iter, random_state=rng,
            compute_uv=compute_uv,
        )
    if return_residual:
        return out
    if not compute_uv:
        return out[0][:, :rank]
    U, S, Vt, _ = out
    return U[:, :, :rank], S[:, :rank], Vt[:, :rank, :]


def _randomized_svd_serial(
    stack: Array,
    rank: int,
    xp: Any,
    *,
    oversampling: int,
    n_iter: int,
    random_state: np.random.Generator,
    compute_uv: bool,
) -> tuple[Any, ...]:
    """The range finder on one stack, in the calling thread (see :func:`randomized_svd_stack`).

    Returns ``(U, S, Vt, residual)`` (or ``(S, residual)`` without vectors) with all
    ``size = min(rank + oversampling, m, n)`` Ritz triplets and the energy
    ``‖A − Q Qᵀ A‖_F²`` that the sampled range misses, computed from the residual itself.
    """
    g, m, n = (int(d) for d in stack.shape)
    size = min(rank + oversampling, m, n)
    rng = random_state
    transpose = m < n  # sample the larger side so Q has the smaller dimension
    A = xp.permute_dims(stack, (0, 2, 1)) if transpose else stack
    rows, cols = (n, m) if transpose else (m, n)
    omega = rng.standard_normal((g, cols, size))
    omega = xp.asarray(omega, dtype=stack.dtype, device=array_api_compat.device(stack))
    At = xp.permute_dims(A, (0, 2, 1))
    Q, _ = xp.linalg.qr(A @ omega)
    for _ in range(n_iter):
        Z, _ = xp.linalg.qr(At @ Q)
        Q, _ = xp.linalg.qr(A @ Z)
    small = xp.permute_dims(Q, (0, 2, 1)) @ A  # (g, size, cols)
    R = A - Q @ small
    residual = xp.sum(xp.reshape(R * R, (g, rows * cols)), axis=1)
    del R
    if not compute_uv:
        return xp.linalg.svdvals(small), residual
    Ub, S, Vt = xp.linalg.svd(small, full_matrices=False)
    U = Q @ Ub
    if transpose:
        return xp.permute_dims(Vt, (0, 2, 1)), S, xp.permute_dims(U, (0, 2, 1)), residual
    return U, S, Vt, residual


def block_krylov_stack(
    stack: Array,
    rank: int,
    xp: Any,
    *,
    oversampling: int = 10,
    n_iter: int = 4,
    random_state: int | np.random.Generator | None = None,
    compute_uv: bool = False,
) -> tuple[Any, ...]:
    """Randomized block Krylov SVD of every matrix in a stack: Ritz values and the residual.

    Randomized block Lanczos (Musco & Musco 2015; Halko, Martinsson & Tropp 2011, Algorithm
    4.4 with every iterate kept): a Gaussian block ``Ω`` of ``b = rank + oversampling``
    columns, the Krylov space ``span{AΩ, (AAᵀ)AΩ, …, (AAᵀ)^q AΩ}`` with ``q = n_iter``
    (``D = (q + 1) b`` directions, at most ``min(m, n)``), orthonormalised block by block
    (two passes of block Gram–Schmidt, then Householder QR; one pass and CholeskyQR2 for the
    float32 basis of the mixed path below), and the singular values of
    ``QᵀA``, whose rows ``(AᵀQ_j)ᵀ`` the iteration has already computed.  For the same number
    of products with ``A`` it is far more accurate than subspace iteration on flat spectra
    (a Gaussian matrix): ``benchmarks/bench_randomized.py`` and the docs' performance page
    give the trade-off.  Every step is one batched call over the stack, in the stack's dtype
    (float32 stays float32).  Large float64 blocks with a flat spectrum build the basis in
    float32, ``⌈b/2⌉`` directions at a time and twice as deep (the same ``D`` and the same
    products, several times more accurate), and take the Rayleigh–Ritz step in float64 (see
    ``_MIXED_EPS`` and ``_MIXED_STEP_CLUSTER``).

    The ``D`` Ritz values never exceed the true singular values, and
    ``residual + Σ_{i>r} S_i² = ‖A − Q U_r U_rᵀ QᵀA‖²`` is the squared error of a realizable
    rank-``r`` approximation: never below the optimal one.  The residual ``‖A − QQᵀA‖²`` is
    ``‖A‖² − ‖QᵀA‖²`` plus an allowance for its rounding where that difference holds at least
    a millionth of ``‖A‖²`` (float64), and is formed from ``A − Q(QᵀA)`` itself where it is
    smaller, and in float32 (no cancellation).  Where the Krylov space is exhausted (a matrix of rank below ``D``),
    rounding-level random directions keep the basis orthonormal.

    Parameters
    ----------
    stack : array, shape (g, m, n)
    rank : int
        The largest rank whose error is wanted, ``1 <= rank <= min(m, n)``.
    xp : namespace
    oversampling, n_iter : int
        Block size ``rank + oversampling``; Krylov depth ``n_iter``.
    random_state : int, numpy.random.Generator or None
        Seed of ``Ω`` (drawn on the host, moved to the device).
    compute_uv : bool, default False

    Returns
    -------
    (U, S, Vt, residual) or (S, residual)
        ``S`` of shape ``(g, D)`` descending (``D = b`` where every block took the mixed path;
        zero values pad blocks of a stack that took fewer), ``U`` ``(g, m, D)``, ``Vt``
        ``(g, D, n)``, ``residual`` ``(g,)``, on the backend and device of ``stack``; float32 stays float32.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> A = rng.standard_normal((2, 60, 8)) @ rng.standard_normal((2, 8, 50))   # rank 8
    >>> S, res = block_krylov_stack(A, 8, np, oversampling=2, n_iter=1, random_state=0)
    >>> bool(np.allclose(S[:, :8], np.linalg.svd(A, compute_uv=False)[:, :8]))
    True
    """
    oversampling, n_iter = _check_randomized_options(oversampling, n_iter)
    rank = _check_stack_rank(stack, rank)
    rng = np.random.default_rng(random_state)
    workers = _numpy_workers_krylov(stack, rank, oversampling, n_iter)
    opts = dict(oversampling=oversampling, n_iter=n_iter, compute_uv=compute_uv)
    if workers > 1:
        from concurrent.futures import ThreadPoolExecutor

        seeds = rng.spawn(workers)
        chunks = np.array_split(stack, workers)
        with one_blas_thread(), ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(
                lambda cs: _block_krylov_serial(cs[0], rank, np, rng=cs[1], **opts),
                zip(chunks, seeds),
            ))
        return _concat_parts(parts, compute_uv)
    return _block_krylov_serial(stack, rank, xp, rng=rng, **opts)


def _concat_parts(parts: list[tuple[Any, ...]], compute_uv: bool) -> tuple[Any, ...]:
    """The results of the threads' chunks as one: a chunk that kept the mixed path returns
    ``b`` values, one computed again in float64 ``D``; the narrower are padded with zero values
    (and zero vectors), which change no tail."""
    width = max(p[1 if compute_uv else 0].shape[-1] for p in parts)

    def pad(x: np.ndarray, axis: int) -> np.ndarray:
        extra = width - x.shape[axis]
        if extra == 0:
            return x
        widths = [(0, 0)] * x.ndim
        widths[axis] = (0, extra)
        return np.pad(x, widths)

    if compute_uv:
        parts = [(pad(U, 2), pad(S, 1), pad(Vt, 1), r) for U, S, Vt, r in parts]
    else:
        parts = [(pad(S, 1), r) for S, r in parts]
    return tuple(np.concatenate([p[k] for p in parts]) for k in range(len(parts[0])))


def _numpy_workers_krylov(stack: Array, rank: int, oversampling: int, n_iter: int) -> int:
    """Threads for a NumPy stack: one per core when the blocks are many and small enough that
    threaded BLAS gains little on each (as :func:`_numpy_workers`)."""
    if not isinstance(stack, np.ndarray) or stack.shape[0] < 2 or getattr(_SERIAL, "on", False):
        return 1
    g, m, n = stack.shape
    width = min(m, n, (rank + oversampling) * (n_iter + 1))
    if g * m * n * width < _THREADING_MIN_WORK:
        return 1
    return max(1, min(os.cpu_count() or 1, g))


def _sum_squares(X: Array, xp: Any) -> Array:
    """``‖X_i‖_F²`` of every matrix of a stack, without a temporary the size of ``X`` (NumPy)."""
    if isinstance(X, np.ndarray):
        return np.einsum("gij,gij->g", X, X)
    return xp.linalg.matrix_norm(X, ord="fro") ** 2


def _ritz_values(Z: Array, residual: Array, rank: int, xp: Any) -> tuple[Array, Array]:
    """Singular values of ``Zᵀ = QᵀA`` (descending) and the residual, for the values only.

    By the Gram path (``ZᵀZ``, ``D × D``: a product and a small ``eigvalsh``) where its error
    bound (``lowrank_blocks._gram``), added to the residual so the errors stay never below the
    optimal ones, is below a millionth of the smallest tail asked for; else by ``svdvals``
    (tiny tails of fast-decaying spectra).
    """
    from . import _gram

    gv = _gram.gram_eigvalsh(Z, xp)
    D = gv.values.shape[-1]
    allowance = math.sqrt(D) * gv.a + D * gv.c
    res_host = to_numpy(residual).astype(np.float64)
    tail = res_host + gv.values[:, min(rank, D):].sum(axis=-1)
    if np.all(allowance <= 1e-6 * tail):
        device = array_api_compat.device(Z)
        S = xp.asarray(np.sqrt(gv.values), dtype=Z.dtype, device=device)
        return S, residual + xp.asarray(allowance, dtype=residual.dtype, device=device)
    return xp.linalg.svdvals(Z), residual


def _orthonormal_basis(Y: Array, xp: Any, *, fast: bool = False) -> Array:
    """``Q`` of the reduced QR of every matrix of a stack.

    NumPy: SciPy's LAPACK Householder ``geqrf``/``orgqr`` matrix by matrix, 2–3× faster than
    ``numpy.linalg.qr`` on tall float32 blocks (2048 × 112: 7 ms against 20 ms); with
    ``fast``, batched CholeskyQR2 (:func:`_cholesky_qr2`) where the stack is well enough
    conditioned for it, Householder otherwise.
    """
    if not isinstance(Y, np.ndarray):
        return xp.linalg.qr(Y)[0]
    if fast and (Q := _cholesky_qr2(Y)) is not None:
        return Q
    import scipy.linalg

    out = np.empty_like(Y)
    with _lapack_one_thread():  # see _leading_eigenvectors
        for i in range(Y.shape[0]):
            out[i] = scipy.linalg.qr(Y[i], mode="economic", check_finite=False)[0]
    return out


def _lapack_one_thread() -> Any:
    """One BLAS thread around a LAPACK call, entered and left in the same thread (threadpoolctl
    lets one thread own OpenBLAS's limits); nothing in pool threads and tasks, which already
    run under a limit (``_SERIAL``, or not the main thread)."""
    import contextlib

    if getattr(_SERIAL, "on", False) or threading.current_thread() is not threading.main_thread():
        return contextlib.nullcontext()
    return one_blas_thread()


def _cholesky_qr2(Y: np.ndarray) -> np.ndarray | None:
    """An orthonormal basis of every matrix of a stack ``(g, m, b)``, ``m ≥ b``, by CholeskyQR2
    (Fukaya, Nakatsukasa, Yanagisawa & Yamamoto 2014): ``Q₁ = Y R₁⁻¹`` with ``R₁ᵀR₁ = YᵀY``,
    then the same on ``Q₁``.  Batched matrix products and ``b × b`` factorizations only: 2–4×
    faster than Householder QR matrix by matrix (2048 × 112 float32: about 2.5 ms against 7).

    The first pass loses orthogonality as ``κ(Y)² u``; the second restores it to working
    precision where ``Q₁`` is well conditioned, which is measured, not assumed: ``None`` (the
    caller then takes Householder QR) where a Cholesky factorization fails or
    ``max |Q₁ᵀQ₁ − I| > 0.1``.
    """
    b = Y.shape[-1]
    eye = np.eye(b, dtype=Y.dtype)
    Q = Y
    for step in range(2):
        G = np.matmul(np.swapaxes(Q, -1, -2), Q)
        if step and float(np.max(np.abs(G - eye))) > 0.1:
            return None
        try:
            R = np.swapaxes(np.linalg.cholesky(G), -1, -2)  # upper (NumPy < 2 too)
            Q = Q @ np.linalg.inv(R)
        except np.linalg.LinAlgError:
            return None
        if not np.all(np.isfinite(Q)):
            return None
    return Q


def _leading_eigenvectors(G: Array, k: int, xp: Any) -> Array:
    """Eigenvectors of the ``k`` largest eigenvalues of every symmetric matrix of a stack
    (columns in ascending order of the eigenvalues).  NumPy: LAPACK ``syevr`` for those ``k``
    only (560 × 560 float32, k = 112: 22 ms against 49 ms for every vector)."""
    d = int(G.shape[-1])
    if not isinstance(G, np.ndarray):
        return xp.linalg.eigh(G)[1][:, :, d - k:]
    import scipy.linalg

    out = np.empty(G.shape[:-1] + (k,), dtype=G.dtype)
    # One BLAS thread: LAPACK gains nothing from more on these sizes, and where NumPy's BLAS
    # threads still spin after a product, SciPy's own threads beside them oversubscribe two
    # cores (2048 × 2048, the 1 × 1 grid, wall clock: 89 ms against 22 for this call; the
    # Householder QR above 114 ms against 10).
    with _lapack_one_thread():
        for i in range(G.shape[0]):
            out[i] = scipy.linalg.eigh(G[i], subset_by_index=[d - k, d - 1], driver="evr",
                                       check_finite=False)[1]
    return out


# Mixed precision.  float64 blocks with both sides at least this long, and a flat enough
# spectrum, build their Krylov basis in float32 (the products, Gram–Schmidt and QR at float32
# speed) and take the Rayleigh–Ritz step in float64 on the leading ``b`` directions of that
# basis: an orthonormal float64 basis ``U`` of them and ``AᵀU`` from the float64 matrix, so the
# errors are those of a realizable approximation, never below the exact ones, whatever the
# float32 rounding did.  What float32 can cost is accuracy: choosing the ``b`` directions from
# float32 ``QᵀA`` misplaces energy of the order of ``2 b ε σ₁²``, with ``ε`` the relative error
# of that Gram matrix (at most 1.4e-4 in our tests on adversarial spectra; taken as
# ``_MIXED_EPS = 1e-3``).  So the float32 basis is kept only where every tail asked for is at
# least ``2 b σ₁²`` (that error then below a thousandth of it): checked ahead with ``σ̃₁`` from
# three power steps (``‖A‖_F² ≥ (rank + 2 b) σ̃₁²``; a flat spectrum: a Gaussian matrix has
# ``‖A‖_F² / σ₁² = n / 4``), and at the end from the float64 values (the block is then
# computed again in float64); otherwise the block is computed in float64 throughout.
_MIXED_MIN_SIDE = 512
_MIXED_EPS = 1e-3
# Half-width blocks.  The mixed path builds its D = (n_iter + 1) b directions ``⌈b/2⌉`` at a
# time, twice as deep: the same products with A, and on flat spectra several times more
# accurate (Meyer, Musco & Musco 2024: for a given number of products, smaller blocks and more
# steps win, unless a singular value is repeated more often than the block is wide).  On
# 2048 × 2048 Gaussian blocks at 10 % of dense, n_iter = 4: largest error difference 1.7e-4
# against 8.2e-4 with full blocks, at about the same time (docs' performance page).  A block
# of width ``s`` resolves at most ``s`` copies of a repeated value, so where ``s`` of the
# leading float64 Ritz values (in σ²) lie within this relative distance of one another (a
# Gaussian block's closest run of ``s`` is 8–10 % wide), the block is computed again with
# full-width blocks in float64.
_MIXED_STEP_CLUSTER = 2e-2
# Half-width blocks only where they are at least this wide: narrower runs of Gaussian Ritz
# values can lie within 2 % (and a run of one always does).
_MIXED_MIN_STEP = 8


def _block_krylov_serial(
    stack: Array, rank: int, xp: Any, *, rng: np.random.Generator, oversampling: int,
    n_iter: int, compute_uv: bool, mixed: bool | None = None,
) -> tuple[Any, ...]:
    g, m, n = (int(d) for d in stack.shape)
    transpose = m < n  # the basis lives in the larger space; D is capped by the smaller side
    A = xp.permute_dims(stack, (0, 2, 1)) if transpose else stack
    rows, cols = (n, m) if transpose else (m, n)
    At = xp.permute_dims(A, (0, 2, 1))
    device = array_api_compat.device(stack)
    dtype = stack.dtype
    single = "float32" in str(dtype)
    eps = float(np.finfo(np.float32 if single else np.float64).eps)
    b = min(rank + oversampling, cols)
    total = min(b * (n_iter + 1), cols)
    if mixed is None:
        mixed = not single and min(m, n) >= _MIXED_MIN_SIDE and total > b
    # The working precision of the iteration: float32 where mixed (and flat enough).
    Aw = xp.astype(A, xp.float32) if mixed else A
    energy = _sum_squares(A, xp)
    if mixed and not _flat_enough(energy, Aw, rank, b, xp, rng):
        mixed, Aw = False, A
    Awt = xp.permute_dims(Aw, (0, 2, 1))
    work = Aw.dtype
    eps_work = float(np.finfo(np.float32).eps) if mixed else eps
    loss = 1e-3 if mixed else 64 * eps_work  # of orthogonality to the basis, tolerated
    # The D directions are built ``step`` at a time: ``b``, or, in the mixed path, half as
    # many, twice as deep (the same D and the same products; see _MIXED_STEP_CLUSTER).
    step = -(-b // 2) if mixed and b >= 2 * _MIXED_MIN_STEP else b

    def gaussian(shape: tuple[int, ...]) -> Array:
        return xp.asarray(rng.standard_normal(shape, dtype=np.float32), dtype=work,
                          device=device)

    # The basis Q and the rows Z = (QᵀA)ᵀ, filled block by block: the basis so far is a view
    # of the first ``done`` columns (no copy of the growing basis at every block).
    Qall = xp.empty((g, rows, total), dtype=work, device=device)
    Zall = xp.empty((g, cols, total), dtype=work, device=device)
    noise = None
    Y = Aw @ gaussian((g, cols, step))
    done = 0
    while True:
        if done:
            # Rounding-level random directions: where the Krylov space is exhausted (the
            # spectrum has decayed below rounding) the projection leaves only rounding, and
            # QR must still return directions orthogonal to the basis.  Two passes of block
            # Gram–Schmidt ("twice is enough" for a block that is not rounding); then, where
            # the QR of what was left is not orthogonal to the basis (it was rounding), up to
            # two more passes on the normalized block.  The float32 basis of the mixed path
            # only chooses the directions of its float64 Rayleigh–Ritz step, so one pass will
            # do there, and a loss of orthogonality up to 1e-3 (one pass leaves 1e-6 to 1e-5
            # on 2048 × 2048 Gaussian blocks; an exhausted space leaves order one).
            # (uniform, not Gaussian: generic is all they need to be, and cheaper to draw;
            # drawn once and shifted by a row at every block, still generic)
            if noise is None:
                noise = xp.asarray(rng.random((g, rows, step), dtype=np.float32) - np.float32(0.5),
                                   dtype=work, device=device)
            else:
                noise = xp.roll(noise, 1, axis=1)
            scale = xp.sqrt(_sum_squares(Y, xp)) * (eps_work / math.sqrt(rows * step))
            Y = Y + noise * scale[:, None, None]
            P = Qall[:, :, :done]
            Pt = xp.permute_dims(P, (0, 2, 1))
            for _ in range(1 if mixed else 2):
                Y = Y - P @ (Pt @ Y)
        width = min(step, total - done)
        # The float32 basis of the mixed path only chooses directions (its Rayleigh–Ritz step
        # is redone in float64), so it may take the faster CholeskyQR2.
        Q = _orthonormal_basis(Y, xp, fast=mixed)
        for _ in range(2 if done else 0):
            M = Pt @ Q
            if not bool(xp.any(xp.abs(M) > loss)):
                break
            Q = _orthonormal_basis(Q - P @ M, xp)
        Q = Q[:, :, :width]
        Qall[:, :, done: done + width] = Q
        Z = Awt @ Q  # the rows (AᵀQ_j)ᵀ of QᵀA
        Zall[:, :, done: done + width] = Z
        done += width
        if done >= total:
            break
        Y = Aw @ Z
    Q, Z = Qall, Zall  # (g, rows, D) and (g, cols, D) = (QᵀA)ᵀ
    del Qall, Zall, Y, noise
    if mixed:
        # Rayleigh–Ritz in float64 on the leading b Ritz directions of the float32 basis: an
        # orthonormal float64 basis U of them and AᵀU from the float64 matrix, so everything
        # below is exactly the float64 computation, on a b-dimensional subspace.
        del Aw, Awt
        V = _leading_eigenvectors(xp.permute_dims(Z, (0, 2, 1)) @ Z, b, xp)
        Q = _orthonormal_basis(xp.astype(Q @ V, dtype), xp)
        Z = At @ Q
        total = b
    residual = energy - _sum_squares(Z, xp)
    # float32: the difference would carry float32's rounding of ‖A‖² (~1e-7 of it, too coarse
    # for a bound); formed directly, as where the residual is small.
    if eps > 1e-10 or bool(xp.any(residual < energy * 1e-6)):
        R = A - Q @ xp.permute_dims(Z, (0, 2, 1))
        residual = _sum_squares(R, xp)
        del R
    else:  # the difference, plus a bound on the rounding of both sums and of Q's orthogonality
        residual = residual + energy * (4 * (rows + total) * eps)
    if not compute_uv:
        out = _ritz_values(Z, residual, rank, xp)
        S = out[0]
    else:
        Uz, S, Vzt = xp.linalg.svd(Z, full_matrices=False)  # Z = Uz S Vzt: QᵀA = Vztᵀ S Uzᵀ
        U = Q @ xp.permute_dims(Vzt, (0, 2, 1))
        Vt = xp.permute_dims(Uz, (0, 2, 1))
        out = ((xp.permute_dims(Vt, (0, 2, 1)), S, xp.permute_dims(U, (0, 2, 1)), residual)
               if transpose else (U, S, Vt, residual))
    if mixed:
        tail = out[-1] + _sum_squares(S[:, min(rank, total):, None], xp)
        top = S[:, 0] ** 2
        if bool(xp.any(tail < top * _mixed_tail_floor(b))) or _clustered(S, step, xp):
            return _block_krylov_serial(stack, rank, xp, rng=rng, oversampling=oversampling,
                                        n_iter=n_iter, compute_uv=compute_uv, mixed=False)
    return out


def _clustered(S: Array, step: int, xp: Any) -> bool:
    """Whether ``step`` consecutive values of some row of ``S`` (descending) lie within
    ``_MIXED_STEP_CLUSTER`` of the largest of them, relative, in ``σ²``."""
    S2 = S * S
    k = int(S2.shape[-1])
    if step > k:
        return False
    first, last = S2[:, : k - step + 1], S2[:, step - 1:]
    return bool(xp.any(first - last <= _MIXED_STEP_CLUSTER * first))


def _mixed_tail_floor(b: int) -> float:
    """The smallest tail, in units of ``σ₁²``, for which a float32 basis of ``b``-vector blocks
    is kept: ``2 b ε`` (what float32 may misplace, ``_MIXED_EPS``) times 1000."""
    return 2 * b * _MIXED_EPS * 1e3


def _flat_enough(energy: Array, Aw: Array, rank: int, b: int, xp: Any,
                 rng: np.random.Generator) -> bool:
    """Whether every block's spectrum is flat enough for a float32 Krylov basis (see
    ``_MIXED_EPS``): ``‖A‖_F² ≥ (rank + floor) σ̃₁²`` (``energy``, and the floor of
    :func:`_mixed_tail_floor`), with ``σ̃₁`` from three steps of the power
    method on the float32 copy (one vector: about ``1/b`` of one Krylov step; an estimate
    from below, which the check at the end backs up)."""
    g, rows, cols = (int(d) for d in Aw.shape)
    x = xp.asarray(rng.standard_normal((g, cols, 1)), dtype=Aw.dtype,
                   device=array_api_compat.device(Aw))
    Awt = xp.permute_dims(Aw, (0, 2, 1))
    for _ in range(3):
        x = x / xp.sqrt(_sum_squares(x, xp))[:, None, None]
        x = Awt @ (Aw @ x)
    top = xp.sqrt(_sum_squares(x, xp))  # ≈ σ₁² (‖AᵀA x‖ for a unit x)
    scale = rank + _mixed_tail_floor(b)
    return not bool(xp.any(energy < xp.astype(top, energy.dtype) * scale))
