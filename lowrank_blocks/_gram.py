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
   with or without FMA; ``γ_l = l u / (1 − l u)``), so ``‖E‖_F ≤ γ_l ‖B‖_F² + k l η``;
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

import math
import os
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

_CHUNK_ELEMENTS = 1 << 19
# Gram matrices larger than this are decomposed in place (SciPy) rather than copied (NumPy).
_IN_PLACE_BYTES = 1 << 28


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
    NumPy: batched ``matmul`` and ``numpy.linalg.eigvalsh`` (values only) in chunks, spread over
    one thread per core with BLAS limited to one thread each.  Other
    backends (PyTorch, CuPy, any Array API library): one batched ``matmul`` and one batched
    ``linalg.eigvalsh`` on the array's device.  float32 stays float32.
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

    NumPy's ``matmul`` and ``linalg.eigvalsh`` (LAPACK ``syevd``, values only), which release
    the GIL, so blocks run in parallel threads (SciPy's wrappers of ``syrk``/``syevr`` hold it
    and would serialise them).  float32 Gram matrices go to SciPy's ``ssyevr`` (NumPy's
    ``eigvalsh`` would compute them in float64), and so do Gram matrices over 256 MiB, in place
    (NumPy's ``eigvalsh`` copies its input: for a 20000 × 20000 block that copy is the size of
    the matrix).  The batch is split into chunks along its first axis, each of
    bounded size, over one thread per core with BLAS limited to one thread each (or serially
    inside :func:`lowrank_blocks.linalg.run_concurrently`).  float32 stays float32.
    """
    from .linalg import _numpy_workers_for

    lead = stack.shape[:-2]
    m, n = stack.shape[-2:]
    if not lead:
        values, trace = _gram_chunk(stack[None])
        return values[0], trace[0]
    k = min(m, n)
    lam = np.empty(lead + (k,))
    trace = np.empty(lead)
    n_mat = int(np.prod(lead, dtype=np.int64))
    workers = _numpy_workers_for(n_mat, m, n)
    if m * n + 2 * k * k > _CHUNK_ELEMENTS:  # large blocks: one at a time (the Gram matrix
        starts: list = list(np.ndindex(*lead))  # and eigvalsh's copy of it, per block)

        def one(idx: tuple[int, ...]) -> None:
            values, tr = _gram_chunk(stack[idx][None])
            lam[idx], trace[idx] = values[0], tr[0]
    else:  # chunks along the first batch axis
        per_row = n_mat // int(lead[0]) * (m * n + 2 * k * k)
        rows = max(1, _CHUNK_ELEMENTS // max(1, per_row))
        rows = min(rows, max(1, -(-int(lead[0]) // workers)))
        starts = list(range(0, int(lead[0]), rows))

        def one(s: int) -> None:  # type: ignore[misc]
            lam[s : s + rows], trace[s : s + rows] = _gram_chunk(stack[s : s + rows])

    if workers == 1 or len(starts) == 1:
        for s in starts:
            one(s)
    else:
        from concurrent.futures import ThreadPoolExecutor

        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, starts))
    return lam, trace


def _gram_chunk(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gram matrices (smaller side) of a chunk of blocks, their eigenvalues and traces."""
    m, n = stack.shape[-2:]
    Bt = np.swapaxes(stack, -1, -2)
    G = Bt @ stack if n <= m else stack @ Bt
    trace = np.trace(G, axis1=-2, axis2=-1, dtype=np.float64)
    k = G.shape[-1]
    if G.dtype == np.float32 or k * k * G.itemsize > _IN_PLACE_BYTES:
        # float32 (NumPy's eigvalsh would compute in float64), or a Gram matrix so large that
        # NumPy's copy of it matters: SciPy's syevr on the matrix itself (Gᵀ is Fortran-ordered;
        # the bound holds for every entry, so either triangle will do).  It holds the GIL.
        from scipy.linalg import lapack

        syevr = lapack.ssyevr if G.dtype == np.float32 else lapack.dsyevr
        values = np.empty(G.shape[:-1])
        for idx in np.ndindex(*G.shape[:-2]):
            w, _, _, _, info = syevr(G[idx].T, compute_v=0, lower=1, overwrite_a=1)
            if info != 0:  # pragma: no cover - LAPACK convergence failure
                raise np.linalg.LinAlgError(f"syevr failed (info={info})")
            values[idx] = w
        return values[..., ::-1], trace
    values = np.linalg.eigvalsh(G)[..., ::-1].astype(np.float64)
    return values, trace


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
