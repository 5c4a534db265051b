"""Squared singular values as eigenvalues of Gram matrices, with a rigorous error bound.

Every error of :mod:`lowrank_blocks.spectra` needs only ``σ²`` of the blocks, and those are the
eigenvalues of ``BᵀB`` (or ``BBᵀ``, the smaller side): one matrix product and a symmetric
eigenvalue solve without vectors (LAPACK ``syevd``: Householder tridiagonalization and
root-free QR), about a third of the time of ``svdvals``.  The price is
accuracy in the smallest values: the Gram matrix is formed in floating point, so each computed
``σ²`` carries an *absolute* error of order ``u ‖B‖_F²``.  This module computes the values and a
bound on the error of every tail sum; :mod:`lowrank_blocks.spectra` uses the bound to certify
each requested error and falls back to the SVD where it cannot.

The bound (``docs/performance.md`` derives it in full).  For a block ``B`` of ``l × k`` (``k`` the
smaller side; ``G = BᵀB`` is ``k × k``, each entry a sum of ``l`` products), unit roundoff ``u``
of the products (``2⁻⁵³`` in float64, ``2⁻²⁴`` in float32, ``2⁻¹¹`` for TF32 matrix products) and
``η`` the dtype's smallest normal number:

1. forming ``G``: ``Ĝ = BᵀB + E`` with ``|E| ≤ γ_l |B|ᵀ|B| + l η`` entrywise (any summation order,
   with or without FMA; ``γ_l = l u / (1 − l u)``), so ``‖E‖_F ≤ γ_l ‖B‖_F² + k l η``; the
   eigensolver reads one triangle (the only one ``syrk`` forms on NumPy), every entry of it
   such an inner product of length ``l``, so ``Ĝ`` and ``E`` are symmetric;
2. the eigensolver is backward stable: its values are the exact eigenvalues of ``Ĝ + F`` with
   ``‖F‖₂ ≤ p(k) u ‖Ĝ‖₂``; LAPACK leaves ``p(k)`` as "a modestly growing function" and its own
   error estimates take ``p = 1``; we take ``p(k) = k`` (the one modelling assumption);
3. Lidskii's theorem: for any ``s`` eigenvalues, ``|Σ (λ̂_i − σ_i²)|`` is at most the sum of the
   ``s`` largest singular values of ``E + F``, which is ``≤ √s ‖E‖_F + s ‖F‖₂``.

So the tail of block ``b`` beyond rank ``r`` (``s = k − r`` values), taken as the direct sum
``Σ_{i>r} λ̂_i`` of the computed eigenvalues clipped at 0, is within::

    Δ_b(r) = √s · a_b + s · c_b + γ_k t̂_b(r),
    a_b = γ_l ‖B‖_F² + k l η,          c_b = k u λ̂_max / (1 − k u)

of the exact ``Σ_{i>r} σ_i²`` (the last term: the float64 sum itself).  ``‖B‖_F²`` is bounded
from the trace of ``Ĝ``.  The direct tail is used rather than ``‖B‖_F² − Σ_{i≤r} λ̂_i``: its
bound grows with the number ``s`` of values summed, so it is smallest at high ranks, where the
tails (and the errors) are small and certification is hardest; the difference form would carry
``√r`` and the cancellation of two numbers near ``‖B‖_F²`` exactly there.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np

__all__ = [
    "GRAM_MIN_SIDE",
    "GramValues",
    "a_priori_feasible",
    "certify",
    "gram_eigvalsh",
    "relative_error_bound",
    "rounding",
    "tail_bounds",
]

Array = Any

#: Blocks whose smaller side is below this are decomposed by SVD in every method: there the
#: decompositions cost little (the Gram path saves about 30 % of it), and the SVD's values are
#: exact to rounding.
GRAM_MIN_SIDE = 64

#: A certified tail is also *resolved*: its bound is at most this fraction of its value, so a
#: tail that is rounding noise (an exactly low-rank block, a spectrum decaying below
#: ``√u ‖B‖``) goes to the SVD, which gives it to full relative accuracy, rather than being
#: reported as ``1e-8`` where it is ``1e-16`` (within ``tol``, but not the same answer).
RESOLUTION = 0.5

@dataclass(frozen=True)
class GramValues:
    """Eigenvalues of the Gram matrices of a stack of blocks, and their error coefficients.

    Attributes
    ----------
    values : numpy.ndarray, shape (..., k)
        Computed ``σ²``, descending, clipped at 0 (float64), in the units of the data.
    a, c : numpy.ndarray, shape (...)
        Coefficients of the tail bound ``Δ(r) = √s a + s c + γ_k t̂(r)``, ``s = k − r``.
    inner : int
        ``l``, the larger side of the blocks (length of every Gram entry's sum).
    """

    values: np.ndarray
    a: np.ndarray
    c: np.ndarray
    inner: int


def rounding(x: Array) -> tuple[float, float, float]:
    """``(u_products, u_eigensolver, η)`` for an array's dtype and backend.

    ``u_products`` is the unit roundoff of the Gram matrix product: the dtype's, or TF32's
    ``2⁻¹¹`` where PyTorch (``torch.backends.cuda.matmul.allow_tf32`` or a float32 matmul
    precision other than ``'highest'``) or CuPy (``CUPY_TF32``) may round float32 products to
    TF32 on a GPU.  ``η`` is the smallest normal number (covers gradual underflow and
    flush-to-zero alike).
    """
    dtype = np.float32 if "float32" in str(x.dtype) else np.float64
    info = np.finfo(dtype)
    u = float(info.eps) / 2
    u_mm = u
    if dtype == np.float32:
        if array_api_compat.is_torch_array(x) and x.device.type == "cuda":
            import torch

            if torch.backends.cuda.matmul.allow_tf32 or torch.get_float32_matmul_precision() != "highest":
                u_mm = 2.0**-8 if torch.get_float32_matmul_precision() == "medium" else 2.0**-11
        elif array_api_compat.is_cupy_array(x) and os.environ.get("CUPY_TF32", "0") not in ("", "0"):
            u_mm = 2.0**-11
    return u_mm, u, float(info.tiny)


def _gamma(n: int, u: float) -> float:
    nu = n * u
    return nu / (1.0 - nu) if nu < 1 else math.inf


def gram_eigvalsh(stack: Array, xp: Any) -> GramValues:
    """Eigenvalues of the Gram matrix (smaller side) of every block of a stack, with bounds.

    ``stack`` has shape ``(..., m, n)`` (batch axes in front; a strided NumPy view is fine).
    NumPy: block by block, ``syrk`` (the lower triangle of ``Ĝ``) and ``syevd`` (values only) in
    place on one Gram matrix per worker, no copy of it (:func:`_gram_numpy`), spread over one
    thread per core with BLAS limited to one thread each.  Other backends (PyTorch, CuPy, any
    Array API library): one batched ``matmul`` and one batched ``linalg.eigvalsh`` on the
    array's device.  float32 stays float32.
    """
    m, n = (int(d) for d in stack.shape[-2:])
    k, inner = min(m, n), max(m, n)
    u_mm, u, tiny = rounding(stack)
    if isinstance(stack, np.ndarray):
        lam, trace = _gram_numpy(stack)
    else:
        Bt = xp.matrix_transpose(stack)
        G = Bt @ stack if n <= m else stack @ Bt
        lam_x = xp.linalg.eigvalsh(G)  # ascending
        trace_x = xp.sum(xp.linalg.diagonal(G), axis=-1)
        del G
        from .linalg import to_numpy

        lam = to_numpy(lam_x).astype(np.float64)[..., ::-1]
        trace = to_numpy(trace_x).astype(np.float64)
    # ‖B‖_F² from the trace of Ĝ: ĝ_ii ≥ (1 − γ_l)(BᵀB)_ii − l η; the trace summed in float64.
    g_l = _gamma(inner, u_mm)
    under = k * inner * tiny
    frob = (np.maximum(trace, 0.0) * (1 + _gamma(k, 2.0**-53)) + under) / (1.0 - g_l)
    a = g_l * frob + under
    p_u = k * u
    lam_max = np.max(np.abs(lam), axis=-1) if k else np.zeros(lam.shape[:-1])
    c = p_u * lam_max / (1.0 - p_u) if p_u < 1 else np.full(lam_max.shape, math.inf)
    return GramValues(np.maximum(lam, 0.0), a, c, inner)


def _gram_numpy(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(eigenvalues descending, trace of Ĝ) of every block of a NumPy stack, float64.

    Block by block, each worker reusing one Gram matrix of its own: BLAS ``syrk`` forms the
    lower triangle of ``Ĝ`` (half the flops of a product) straight from the block (a strided
    view is read in place through its leading dimension), and LAPACK ``syevd`` (values only)
    decomposes it in place, so no copy of the Gram matrix or of the block is made: the memory
    used besides the stack is one ``k × k`` matrix and ``O(k)`` workspace per worker.  SciPy's
    BLAS and LAPACK are called through ``ctypes``, which releases the GIL, so blocks run in
    parallel threads, one per core with BLAS limited to one thread each (or serially inside
    :func:`lowrank_blocks.linalg.run_concurrently`).  float32 stays float32 (``ssyrk``,
    ``ssyevd``).
    """
    from .linalg import _numpy_workers_for

    lead = stack.shape[:-2]
    m, n = (int(d) for d in stack.shape[-2:])
    k = min(m, n)
    lam = np.empty(lead + (k,))
    trace = np.zeros(lead)
    index = list(np.ndindex(*lead))
    if k == 0 or not index:
        return lam, trace
    dtype = np.dtype(np.float32 if stack.dtype == np.float32 else np.float64)
    if stack.dtype != dtype:  # other dtypes in float64, whose rounding rounding() charges
        stack = stack.astype(dtype)
    workers = min(_numpy_workers_for(len(index), m, n), len(index))
    routines = _routines(dtype)  # SciPy's BLAS loaded before its threads are limited
    if workers == 1 and not _sharing_cores():
        solver = _GramSolver(k, dtype, routines)
        for idx in index:
            trace[idx] = solver(stack[idx], lam[idx])
        return lam, trace
    from concurrent.futures import ThreadPoolExecutor

    tickets = itertools.count()

    def work() -> None:  # one Gram matrix per worker, blocks taken in turn
        solver = _GramSolver(k, dtype, routines)
        while (i := next(tickets)) < len(index):
            trace[index[i]] = solver(stack[index[i]], lam[index[i]])

    with _one_blas_thread():
        if workers == 1:
            work()
        else:
            with ThreadPoolExecutor(workers) as pool:
                for future in [pool.submit(work) for _ in range(workers)]:
                    future.result()
    return lam, trace


def _sharing_cores() -> bool:
    """Whether this thread already shares the cores with others
    (:func:`lowrank_blocks.linalg.run_concurrently`, a Dask task)."""
    from . import linalg

    return bool(getattr(linalg._SERIAL, "on", False))


_LIMIT_LOCK = threading.Lock()
_LIMIT: list[Any] = []  # [threadpoolctl limiter, number of callers inside]


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """BLAS limited to one thread while any caller is inside.

    Reference-counted, so concurrent callers (the grids of a surface, run at once) do not
    restore each other's limit midway.  It also reaches SciPy's BLAS when that was first
    loaded after the caller's own limits were set (the first Gram matrix of a process, inside
    :func:`lowrank_blocks.linalg.run_concurrently`): left multithreaded there, two grids'
    LAPACK calls oversubscribe the cores, which costs ten times the time.
    """
    from .linalg import one_blas_thread

    with _LIMIT_LOCK:
        if not _LIMIT:
            _LIMIT[:] = [one_blas_thread(), 0]
        _LIMIT[1] += 1
    try:
        yield
    finally:
        with _LIMIT_LOCK:
            _LIMIT[1] -= 1
            if _LIMIT[1] == 0:
                _LIMIT.pop(0).restore_original_limits()
                _LIMIT.clear()


_ROUTINES: dict[np.dtype, tuple[Any, Any]] = {}


def _routines(dtype: np.dtype) -> tuple[Any, Any]:
    """SciPy's ``?syrk`` and ``?syevd`` (``scipy.linalg.cython_blas`` / ``cython_lapack``) as
    ``ctypes`` functions, which release the GIL during the call (SciPy's Python wrappers hold
    it, and copy arguments that are not Fortran-contiguous)."""
    dtype = np.dtype(dtype)
    if dtype not in _ROUTINES:
        import ctypes

        from scipy.linalg import cython_blas, cython_lapack

        get_name = ctypes.PYFUNCTYPE(ctypes.c_char_p, ctypes.py_object)(
            ("PyCapsule_GetName", ctypes.pythonapi))
        get_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
            ("PyCapsule_GetPointer", ctypes.pythonapi))

        def function(module: Any, name: str, *argtypes: Any) -> Any:
            capsule = module.__pyx_capi__[name]
            return ctypes.CFUNCTYPE(None, *argtypes)(get_pointer(capsule, get_name(capsule)))

        c, i, p = ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_void_p
        s = "s" if dtype == np.float32 else "d"
        # ?syrk(uplo, trans, n, k, alpha, a, lda, beta, c, ldc)
        syrk = function(cython_blas, s + "syrk", c, c, i, i, p, p, i, p, p, i)
        # ?syevd(jobz, uplo, n, a, lda, w, work, lwork, iwork, liwork, info)
        syevd = function(cython_lapack, s + "syevd", c, c, i, p, i, p, p, i, p, i, i)
        _ROUTINES[dtype] = (syrk, syevd)
    return _ROUTINES[dtype]


class _GramSolver:
    """One worker's ``k × k`` Gram matrix (Fortran order) and ``syevd`` workspace, reused for
    block after block: ``solver(B, values)`` writes the eigenvalues of ``Ĝ``, descending, into
    ``values`` and returns the trace of ``Ĝ`` (float64), ``Ĝ`` the Gram matrix of the smaller
    side of the 2-D block ``B``."""

    def __init__(self, k: int, dtype: np.dtype, routines: tuple[Any, Any]) -> None:
        import ctypes

        self.byref = ctypes.byref
        self.syrk, self.syevd = routines
        dtype = np.dtype(dtype)
        scalar = ctypes.c_float if dtype == np.float32 else ctypes.c_double
        self.one, self.zero = scalar(1.0), scalar(0.0)
        self.G = _lower_triangle_matrix(k, dtype)
        self.diagonal = self.G.reshape(-1, order="F")[:: k + 1]  # a view
        self.w = np.empty(k, dtype=dtype)
        self.k, self.inner, self.lda = ctypes.c_int(k), ctypes.c_int(0), ctypes.c_int(0)
        self.info = ctypes.c_int(0)
        self.lwork, self.liwork = ctypes.c_int(-1), ctypes.c_int(-1)
        query, iquery = np.zeros(1, dtype=dtype), np.zeros(1, dtype=np.intc)
        self.pointers = (self.G.ctypes.data, self.w.ctypes.data, query.ctypes.data,
                         iquery.ctypes.data)
        self._syevd()  # workspace query
        self.lwork.value = max(1, int(query[0]))
        self.liwork.value = max(1, int(iquery[0]))
        self.work = np.empty(self.lwork.value, dtype=dtype)
        self.iwork = np.empty(self.liwork.value, dtype=np.intc)
        self.pointers = (self.G.ctypes.data, self.w.ctypes.data, self.work.ctypes.data,
                         self.iwork.ctypes.data)  # fixed from here on

    def _syevd(self) -> None:
        ref = self.byref
        G, w, work, iwork = self.pointers
        self.syevd(b"N", b"L", ref(self.k), G, ref(self.k), w, work, ref(self.lwork), iwork,
                   ref(self.liwork), ref(self.info))
        if self.info.value != 0:  # pragma: no cover - LAPACK convergence failure
            raise np.linalg.LinAlgError(f"syevd failed (info={self.info.value})")

    def __call__(self, B: np.ndarray, values: np.ndarray) -> float:
        A, lda, trans = _blas_operand(B)
        self.inner.value, self.lda.value = max(B.shape), lda
        ref = self.byref
        # Lower triangle of Ĝ = op(A) op(A)ᵀ: every entry an inner product of length l.
        self.syrk(b"L", trans, ref(self.k), ref(self.inner), ref(self.one), A.ctypes.data,
                  ref(self.lda), ref(self.zero), self.pointers[0], ref(self.k))
        trace = self.diagonal.sum(dtype=np.float64)  # as numpy.trace
        self._syevd()  # Ĝ destroyed
        values[...] = self.w[::-1]
        return float(trace)


def _lower_triangle_matrix(k: int, dtype: np.dtype) -> np.ndarray:
    """An uninitialised ``k × k`` Fortran-ordered array for a Gram matrix of which only the
    lower triangle is ever written or read (``syrk`` and ``syevd`` with ``uplo = 'L'``).

    Where a column spans at least two pages it gets an anonymous memory mapping of its own:
    pages that lie wholly in the upper triangle are then never touched and never become
    resident, so the matrix takes a little over half its size (about 0.63 of it at
    ``k = 2048`` in float64).  (NumPy asks for transparent huge pages on large arrays, and the
    diagonal crosses every 2 MiB page of a Gram matrix over 1024 columns in float64.)
    """
    import mmap

    if k * dtype.itemsize < 2 * mmap.PAGESIZE:
        return np.empty((k, k), dtype=dtype, order="F")
    buffer = mmap.mmap(-1, k * k * dtype.itemsize)  # unmapped when the array is released
    return np.frombuffer(buffer, dtype=dtype).reshape((k, k), order="F")


def _blas_operand(B: np.ndarray) -> tuple[np.ndarray, int, bytes]:
    """``(A, lda, trans)`` such that the Gram matrix of the smaller side of ``B`` is
    ``op(A) op(A)ᵀ`` in ``syrk``'s terms (``trans = b'N'``: ``A Aᵀ``; ``b'T'``: ``Aᵀ A``), with
    ``A`` column-major of leading dimension ``lda``: ``B`` itself where it has a unit stride
    (a block of a C- or Fortran-ordered matrix), else a contiguous copy of it."""
    layout = _blas_layout(B.shape, B.strides, B.itemsize)
    if layout is None:
        B = np.ascontiguousarray(B)
        layout = _blas_layout(B.shape, B.strides, B.itemsize)
        assert layout is not None
    return (B, *layout)


def _blas_layout(shape: Any, strides: Any, itemsize: int) -> tuple[int, bytes] | None:
    """``(lda, trans)`` with which BLAS reads a 2-D block of these strides in place (see
    :func:`_blas_operand`), or ``None`` where the Gram path copies the block first."""
    m, n = (int(d) for d in shape)
    rows, cols = (int(s) for s in strides)
    if cols == itemsize and rows % itemsize == 0 and rows // itemsize >= max(1, n):
        # Row-major: A = Bᵀ is column-major (n × m); BᵀB = A Aᵀ, BBᵀ = AᵀA.
        return rows // itemsize, b"N" if n <= m else b"T"
    if rows == itemsize and cols % itemsize == 0 and cols // itemsize >= max(1, m):
        # Column-major: A = B (m × n); BᵀB = AᵀA, BBᵀ = A Aᵀ.
        return cols // itemsize, b"T" if n <= m else b"N"
    return None


def tail_bounds(values: np.ndarray, a: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``Δ(r)`` for ``r = 0 .. k``, shape ``(..., k + 1)``: the bound on ``|t̂(r) − t(r)|``.

    ``values`` are the clipped eigenvalues (descending), ``a`` and ``c`` the coefficients of
    :class:`GramValues` (broadcast against the leading axes).
    """
    k = values.shape[-1]
    s = np.arange(k, -1, -1, dtype=np.float64)  # values in the tail beyond rank r
    tails = np.concatenate(
        (np.cumsum(values[..., ::-1], axis=-1)[..., ::-1], np.zeros(values.shape[:-1] + (1,))),
        axis=-1,
    )
    a = np.asarray(a)[..., None]
    c = np.asarray(c)[..., None]
    return np.sqrt(s) * a + s * c + _gamma(k + 1, 2.0**-53) * tails


def certify(
    values: np.ndarray,
    a: np.ndarray,
    c: np.ndarray,
    weights: np.ndarray,
    total: np.ndarray,
    tol: float,
    max_rank: int | None = None,
    n_blocks: int = 1,
) -> np.ndarray:
    """Which blocks are certified: ``Δ_b(r) ≤ tol' w_b max(√(t̂_b(r) ‖W‖²), tol ‖W‖²)``.

    For every rank ``1 ≤ r ≤ max_rank`` (default: all) with ``r < k``, and with every tail
    resolved, ``Δ_b(r) ≤ RESOLUTION · t̂_b(r)``.  A bound below the floor
    ``2⁻¹² tol² ‖W‖² / n_blocks`` passes both (a block of zeros, or of entries whose squares
    underflow): summed over all blocks such bounds stay within the ``2⁻¹⁰`` margin.  ``weights`` are the
    blocks' shares ``w_b ≥ 0`` of the energy held (summing to at most 1 per matrix), ``total``
    the matrix's ``‖W‖²`` (broadcast against the leading axes), ``tol' = (1 − 2⁻¹⁰) tol``
    leaves room for the float64 sums across blocks.  Then any ranks ``r_b`` give a relative
    error within ``tol`` (:func:`relative_error_bound`): summed over blocks the right-hand
    sides are at most ``tol ‖W‖² max(ê, tol)``.  Returns a boolean array of the leading shape.
    """
    k = values.shape[-1]
    bounds = tail_bounds(values, a, c)  # (..., k+1)
    tails = np.concatenate(
        (np.cumsum(values[..., ::-1], axis=-1)[..., ::-1], np.zeros(values.shape[:-1] + (1,))),
        axis=-1,
    )
    top = k - 1 if max_rank is None else min(int(max_rank), k - 1)
    if top < 1:
        return np.ones(values.shape[:-1], dtype=bool)
    sel = slice(1, top + 1)
    total = np.asarray(total, dtype=np.float64)[..., None]
    w = np.asarray(weights, dtype=np.float64)[..., None]
    allowed = (1 - 2.0**-10) * tol * w * np.maximum(np.sqrt(tails[..., sel] * total),
                                                     tol * total)
    floor = 2.0**-12 * tol * tol * total / max(1, n_blocks)
    negligible = bounds[..., sel] <= floor
    resolved = bounds[..., sel] <= RESOLUTION * tails[..., sel]
    return np.all(((bounds[..., sel] <= allowed) & resolved) | negligible, axis=-1)


def a_priori_feasible(
    energies: np.ndarray,
    weights: np.ndarray,
    total: np.ndarray,
    tol: float,
    k: int,
    inner: int,
    u_mm: float,
    max_rank: int | None = None,
) -> np.ndarray:
    """Blocks for which certification is possible at all, before any Gram matrix is formed.

    A necessary condition of :func:`certify` at the largest rank requested, ``R``: there
    ``s = k − R`` values are left, their sum is at most ``(s / k) ‖B‖_F²``, and the bound is at
    least ``√s γ_l ‖B‖_F²``.  float32 blocks at the default tolerance fail it (the bound is
    ``~2⁹`` times float32's rounding of ``‖B‖_F²`` for ``l = 2048``), so they go to the SVD
    without a wasted Gram matrix.
    """
    R = k - 1 if max_rank is None else min(int(max_rank), k - 1)
    if R < 1:
        return np.ones(np.shape(energies), dtype=bool)
    s = k - R
    lower = math.sqrt(s) * _gamma(inner, u_mm) * np.asarray(energies, dtype=np.float64)
    total = np.asarray(total, dtype=np.float64)
    allowed = tol * np.asarray(weights) * np.maximum(np.sqrt(s / k * energies * total),
                                                     tol * total)
    return (lower <= allowed) | (np.asarray(energies) == 0)


def relative_error_bound(err_sq: Any, delta: Any, total: Any) -> Any:
    """Bound on ``|ê − e|`` for ``ê = √(T̂/‖W‖²)`` when ``|T̂ − T| ≤ Δ``.

    ``|√x − √y| ≤ min(√|x − y|, |x − y| / √x)``, so the bound is
    ``min(√(Δ/‖W‖²), Δ / (‖W‖² ê))`` (0 where ``Δ = 0``).

    Examples
    --------
    >>> relative_error_bound(0.25, 1e-12, 1.0)   # ê = 0.5: Δ / ê
    2e-12
    >>> relative_error_bound(0.0, 1e-12, 1.0)    # ê = 0: √Δ
    1e-06
    """
    err_sq = np.asarray(err_sq, dtype=np.float64)
    delta = np.asarray(delta, dtype=np.float64)
    total = np.asarray(total, dtype=np.float64)
    safe_total = np.where(total > 0, total, 1.0)
    e = np.sqrt(np.clip(err_sq / safe_total, 0.0, 1.0))
    root = np.sqrt(delta / safe_total)
    with np.errstate(divide="ignore", invalid="ignore"):
        lin = np.where(e > 0, delta / (safe_total * np.where(e > 0, e, 1.0)), np.inf)
    out = np.where(delta > 0, np.minimum(root, lin), 0.0)
    out = np.where(total > 0, out, 0.0)
    return float(out) if out.ndim == 0 else out
