"""Backend-agnostic linear algebra on the blocks of a partition.

Everything here takes arrays of any Array API backend (NumPy, CuPy, PyTorch, ``array-api-strict``)
through :mod:`array_api_compat` and returns arrays of the same backend and device.

Blocks of equal shape are stacked into one ``(g, m_b, n_b)`` array and decomposed with a single
batched call (``xp.linalg.svd`` / ``xp.linalg.svdvals`` accept stacks), never a Python loop of
decompositions.  A partition whose sizes do not divide has at most four block shapes, so a ragged
grid costs at most four batched calls.
"""

from __future__ import annotations

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
        if dtype not in (xp.float32, xp.float64):  # float16, bfloat16: LAPACK has no such type
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

        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(lambda c: np.linalg.svd(c, compute_uv=False), chunks))
    return np.concatenate(parts, axis=0)


_SERIAL = threading.local()  # set in threads that already share the cores with others


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
    if workers < 2:
        return [task() for task in tasks]
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    def serial(task: Any) -> Any:
        _SERIAL.on = True
        try:
            return task()
        finally:
            _SERIAL.on = False

    order = sorted(range(len(tasks)), key=lambda k: -costs[k])
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
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

        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
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


def _check_randomized_options(oversampling: object, n_iter: object) -> tuple[int, int]:
    from ._validate import as_int as _as_int

    return (
        _as_int(oversampling, "oversampling", minimum=0),
        _as_int(n_iter, "n_iter", minimum=0),
    )


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
    g, m, n = (int(d) for d in stack.shape)
    from ._validate import as_int as _as_int

    rank = _as_int(rank, "rank", minimum=1)
    if rank > min(m, n):
        raise ValueError(f"rank={rank} exceeds the block size {m} × {n}; at most {min(m, n)}")
    rng = np.random.default_rng(random_state)
    workers = _numpy_workers(stack)
    if workers > 1:
        # Small blocks: one chunk of the stack per core, single-threaded BLAS in each (the
        # batched products and QRs of small matrices gain nothing from threaded BLAS).
        from concurrent.futures import ThreadPoolExecutor

        from threadpoolctl import threadpool_limits

        seeds = rng.spawn(workers)
        chunks = np.array_split(stack, workers)
        opts = dict(oversampling=oversampling, n_iter=n_iter, compute_uv=compute_uv)
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
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
