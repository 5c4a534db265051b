"""One matrix larger than memory: a memory-mapped ``.npy``, a Zarr array or a ``dask.array``.

:func:`~lowrank_blocks.error_surface`, :func:`~lowrank_blocks.error_vs_budget` and everything
else built on :class:`~lowrank_blocks.BlockSpectra` accept such a matrix as they accept a NumPy
array: ``np.load("W.npy", mmap_mode="r")``, ``zarr.open_array("W.zarr")`` or any
``dask.array.Array``.  :func:`~lowrank_blocks.prepare` hands it to :func:`open_large`, which
reads it once, in stripes, to validate it (real, finite) and find its power-of-two scale, and
returns a :class:`LargeMatrix`: a :class:`~lowrank_blocks.PreparedMatrix` whose spectra are
computed **block by block**:

* the blocks of a grid are the chunks of the computation (a ``dask.array`` is rechunked to the
  grid's row and column parts): each task reads exactly one block, decomposes it and keeps its
  singular values and energy, so at most a few blocks are in memory at a time, however large
  the matrix;
* as many blocks are decomposed at once as there are cores and room for them under the memory
  limit (``lowrank_blocks._limits.memory_limit``: ``max_bytes=``, the environment variable
  ``LOWRANK_BLOCKS_MAX_BYTES``, or the memory available);
* ``method='auto'`` (the default of the searches) takes the certified Gram path of
  :mod:`lowrank_blocks.spectra` for the blocks it decomposes in memory: the same
  ``lowrank_blocks._gram`` eigenvalues and bound, each block certified with its share of the
  whole matrix's energy (the grid's energies are summed in stripes first), the same ``tol`` and
  ``max_rank``, the same SVD fallback per block; so the spectra, their ``paths``,
  ``bound_a``/``bound_c`` and ``tol``, and the errors and :meth:`BlockSpectra.error_bounds` are
  those of the matrix in memory.  Under the memory limit it counts the block, the ``k × k`` Gram
  matrix, LAPACK's copy and workspace before any is allocated; a block whose Gram path does not
  fit but whose SVD does is decomposed by SVD;
* ``method='exact'`` decomposes blocks by SVD, which needs about twice a block's bytes (the
  block and LAPACK's copy) and up to 8 MiB of temporaries;
* a structure whose blocks do not fit (the global one, the ``1 × 1`` grid of a matrix larger
  than memory, first of all) gets **randomized** spectra instead: its
  ``max_rank`` leading singular values by ``dask.array.linalg.svd_compressed`` on chunks
  aligned to the block (power iterations, the input re-read at every pass rather than held),
  and the energy they miss, ``‖A − U_k S_k V_kᵀ‖²``, summed chunk by chunk.  The result says
  so: its ``method`` is ``'randomized'`` (errors of a realizable approximation, never below the
  exact ones), a :class:`UserWarning` names the structure and the sizes, and
  the matrix's ``randomized`` attribute (:class:`LargeMatrix`) keeps the reasons.

The energies a structure leaves out (the off-diagonal blocks of a diagonal one) are summed in
stripes, never as differences.  Results equal those of the same matrix in memory with the same
method (``'exact'`` or ``'auto'``): the same LAPACK routines on the same blocks, scaled by the
same power of two.

Exact spectra of blocks that fit need nothing beyond NumPy (a memory-mapped ``.npy`` works
without Dask); Zarr and ``dask.array`` inputs, and randomized spectra of blocks that do not fit,
need ``pip install 'lowrank_blocks[distributed]'``.  Factors (:func:`~lowrank_blocks.approximate`,
:func:`~lowrank_blocks.best_approximation`) of a matrix larger than memory are not offered:
they would not fit either.

Examples
--------
>>> import os, tempfile
>>> import numpy as np
>>> from lowrank_blocks import error_surface
>>> path = os.path.join(tempfile.mkdtemp(), "W.npy")
>>> np.save(path, np.random.default_rng(0).standard_normal((64, 48)))
>>> W = np.load(path, mmap_mode="r")              # nothing read yet
>>> surf = error_surface(W, grids=[2, 4], method="exact")        # block by block
>>> in_memory = error_surface(np.load(path), grids=[2, 4], method="exact")
>>> bool(np.allclose(surf.to_frame()["error"], in_memory.to_frame()["error"], rtol=1e-12))
True
>>> surf.method
'exact'
>>> np.save(path, np.random.default_rng(0).standard_normal((256, 192)))
>>> auto = error_surface(np.load(path, mmap_mode="r"), grids=[2])   # certified Gram values
>>> in_memory = error_surface(np.load(path), grids=[2])
>>> auto.method, in_memory.method
('auto', 'auto')
>>> float(np.abs(auto.to_frame()["error"] - in_memory.to_frame()["error"]).max()) < 1e-15
True
"""

from __future__ import annotations

import math
import os
import threading
import uuid
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _gram
from ._limits import check_bytes, format_bytes, memory_limit
from ._validate import as_int, check_random_state
from .linalg import block_groups, one_blas_thread
from .partition import Partition
from .spectra import (
    _EXTREME_HIGH,
    _EXTREME_LOW,
    DEFAULT_TOL,
    PATH_GRAM,
    PATH_RANDOMIZED,
    PATH_SVD,
    BlockSpectra,
    PreparedMatrix,
    Sampling,
    certification_inputs,
    check_method,
    check_tol,
    prepare,
    split_energies,
)

__all__ = ["DEFAULT_MAX_RANK", "LargeMatrix", "is_large", "open_large"]

DEFAULT_MAX_RANK = 256
"""Singular values kept per block whose exact spectra do not fit in memory (fewer when the
randomized method's own vectors would not fit)."""

# The exact spectra of an m × n block need this many times its bytes (the block read and
# LAPACK's copy of it), plus float64 temporaries for its energy, computed in bounded chunks.
_EXACT_COPIES = 2
_ENERGY_TEMPORARIES = 8 * 1024**2
# _svd_of_items (PreparedMatrix) stacks the blocks of a group that fall back from the Gram path
# in copies of at most this many entries (or one block).
_FALLBACK_STACK_ENTRIES = 1 << 22
# The randomized method holds about this many (m + n) × (k + oversampling) arrays at a time
# (the test matrix, the sampled range, its QR factors, U and V).
_RANDOMIZED_VECTORS = 4
# Stripes read to validate a matrix and sum its energies: at most this many bytes each.
_STRIPE_BYTES = 64 * 1024**2

_INSTALL_HINT = "pip install 'lowrank_blocks[distributed]'"


def _kind(W: Any) -> str | None:
    if isinstance(W, np.memmap):
        return "memmap"
    module = type(W).__module__ or ""
    if module.startswith("dask.array"):
        return "dask"
    if module.split(".")[0] == "zarr" and hasattr(W, "shape") and hasattr(W, "dtype"):
        return "zarr"
    return None


def is_large(W: Any) -> bool:
    """Whether ``W`` is read block by block: a :class:`numpy.memmap` (``np.load(...,
    mmap_mode="r")``), a Zarr array or a ``dask.array.Array``.

    Examples
    --------
    >>> import numpy as np
    >>> is_large(np.eye(3))
    False
    """
    return _kind(W) is not None or isinstance(W, LargeMatrix)


def _compute_dtype(dtype: Any, name: str) -> np.dtype:
    """The dtype blocks are decomposed in (the rule of :func:`~lowrank_blocks.prepare`)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        raise TypeError(f"{name} has boolean dtype {dtype}; a real numeric dtype is required")
    if dtype.kind == "c":
        raise TypeError(
            f"{name} has complex dtype {dtype}; only real matrices are supported "
            f"(approximate the real and imaginary parts separately)"
        )
    if dtype.kind in "iu":
        return np.dtype(np.float64)
    if dtype.kind == "f":
        if dtype in (np.float32, np.float64):
            return dtype
        return np.dtype(np.float64) if dtype.itemsize > 8 else np.dtype(np.float32)
    raise TypeError(
        f"{name} has dtype {dtype}, which is not numeric; a real (integer or floating) dtype "
        f"is required"
    )


def _dask() -> Any:
    try:
        import dask
        import dask.array
    except ImportError as exc:
        raise ImportError(
            f"randomized spectra of blocks larger than memory, and Zarr or dask.array inputs, "
            f"need dask: {_INSTALL_HINT}"
        ) from exc
    return dask


def _pieces(sizes: Sequence[int], longest: int) -> tuple[tuple[int, ...], list[int]]:
    """Chunks that split every part into pieces of at most ``longest``, never across parts.

    Returns the chunk sizes and, per part, the index of its first chunk (plus the end).

    Examples
    --------
    >>> _pieces([5, 3], 2)
    ((2, 2, 1, 2, 1), [0, 3, 5])
    """
    chunks: list[int] = []
    starts = [0]
    for size in sizes:
        count = max(1, -(-size // max(1, longest)))
        base, extra = divmod(size, count)
        chunks.extend(base + (1 if k < extra else 0) for k in range(count))
        starts.append(len(chunks))
    return tuple(chunks), starts


@dataclass(frozen=True)
class _Result:
    """One block's spectra, in the units of ``W / scale`` of the whole matrix.

    ``values``: ``σ²`` held (descending); ``count``: how many; ``residual``: energy outside
    them (randomized); ``energy``: ``‖B‖_F²``; ``how``: the method string of the block
    (``'exact'``, ``'auto'`` or ``'randomized'``); ``a``, ``c``: the Gram-path bound
    coefficients (0 for an SVD); ``path``: ``BlockSpectra.paths``' code; ``tol``: the
    tolerance a Gram-path block was certified to.
    """

    values: np.ndarray
    count: int
    residual: float
    energy: float
    how: str
    a: float = 0.0
    c: float = 0.0
    path: int = PATH_SVD
    tol: float | None = None


# -- opening ----------------------------------------------------------------------------------


def open_large(
    W: Any,
    *,
    name: str = "W",
    max_bytes: int | None = None,
    max_rank: int | None = None,
    oversampling: int = 10,
    n_iter: int = 4,
    random_state: int | np.random.Generator | None = 0,
) -> LargeMatrix:
    """Validate a matrix larger than memory in one pass, without holding it.

    Parameters
    ----------
    W : numpy.memmap, zarr.Array or dask.array.Array, shape (m, n)
        The matrix (``np.load(path, mmap_mode="r")`` for a ``.npy`` file).
    name : str
        Its name in messages.
    max_bytes : int, optional
        Memory limit for the blocks decomposed at once (default: ``$LOWRANK_BLOCKS_MAX_BYTES``,
        else the memory available; see ``lowrank_blocks._limits.memory_limit``).
    max_rank : int, optional
        Singular values kept for a block whose exact spectra do not fit (default
        :data:`DEFAULT_MAX_RANK`, fewer if the randomized method's vectors would not fit).
        Spectra asked for with ``method='randomized'`` keep the rank asked for instead.
    oversampling, n_iter : int
        Options of the randomized method for those blocks.
    random_state : int, Generator or None, default 0
        Seed of the randomized method for those blocks (``0``: the same numbers every run).

    Returns
    -------
    LargeMatrix

    Raises
    ------
    TypeError
        For complex, boolean or non-numeric dtypes, or another kind of input.
    ValueError
        For anything other than 2 dimensions, an empty matrix, or NaN/infinite entries (the
        message counts them).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "W.npy")
    >>> np.save(path, np.arange(12.0).reshape(3, 4))
    >>> open_large(np.load(path, mmap_mode="r"), max_bytes=2**20)
    LargeMatrix(3 × 4, float64, memory-mapped, limit 1.0 MiB)
    """
    if isinstance(W, LargeMatrix):
        return W
    kind = _kind(W)
    if kind is None:
        raise TypeError(
            f"{name} is a {type(W).__name__}; open_large reads a numpy.memmap "
            f"(np.load(path, mmap_mode='r')), a Zarr array or a dask.array"
        )
    if kind in ("dask", "zarr"):
        _dask()
    shape = tuple(int(d) for d in W.shape)
    if len(shape) != 2:
        raise ValueError(
            f"{name} must be a 2-D matrix; got {len(shape)} dimensions with shape {shape}"
        )
    dtype = _compute_dtype(W.dtype, name)
    if any(d == 0 for d in shape):
        raise ValueError(
            f"{name} is empty (shape {shape}); a matrix needs at least one row and one column"
        )
    if max_bytes is not None:
        max_bytes = as_int(max_bytes, "max_bytes", minimum=1)
    if max_rank is not None:
        max_rank = as_int(max_rank, "max_rank", minimum=1)
    oversampling = as_int(oversampling, "oversampling", minimum=0)
    n_iter = as_int(n_iter, "n_iter", minimum=0)
    seed = int(check_random_state(random_state).integers(0, 2**63 - 1))
    large = LargeMatrix(W, kind, name, dtype, 1.0, max_bytes, max_rank, oversampling, n_iter,
                        seed)
    amax, bad = large._scan()
    if bad:
        raise ValueError(
            f"{name} has {bad} NaN or infinite entr{'y' if bad == 1 else 'ies'}; only finite "
            f"values are allowed"
        )
    scale = 1.0 if amax <= 0 else float(np.ldexp(1.0, int(np.frexp(amax)[1]) - 1))
    large.scale = scale
    return large


# -- the matrix ---------------------------------------------------------------------------------


class LargeMatrix(PreparedMatrix):
    """A matrix read block by block (see the module's description); made by :func:`open_large`.

    Attributes
    ----------
    data : numpy.memmap, zarr.Array or dask.array.Array
        The matrix, as given (never read whole).
    kind : str
        ``'memmap'``, ``'zarr'`` or ``'dask'``.
    scale : float
        The power of two putting ``max |W|`` in ``[1, 2)``; spectra refer to ``W / scale``.
    randomized : dict
        For every grid (and blocks) whose exact spectra did not fit: why, and what was
        computed instead.
    max_bytes, max_rank, oversampling, n_iter
        As given to :func:`open_large`.
    """

    #: Methods :meth:`spectra` computes itself (read by ``spectra.spectra_of``, which then
    #: passes ``'auto'``, ``tol`` and ``max_rank`` through).
    spectra_methods = ("auto", "exact", "randomized")

    def __init__(self, source: Any, kind: str, name: str, dtype: np.dtype, scale: float,
                 max_bytes: int | None, max_rank: int | None, oversampling: int, n_iter: int,
                 seed: int) -> None:
        super().__init__(source, np, scale, None)
        self.kind = kind
        self.name = name
        self._dtype = dtype
        self.max_bytes = max_bytes
        self.max_rank = max_rank
        self.oversampling = oversampling
        self.n_iter = n_iter
        self.seed = seed
        self.randomized: dict[str, str] = {}
        self._lock = threading.RLock()
        self._cache: dict[tuple[int, int], BlockSpectra] = {}
        # method='auto' spectra that hold Gram values: grid -> (tol, max_rank, spectra), as
        # PreparedMatrix keeps them.
        self._certified: dict[tuple[int, int], tuple[float, int | None, BlockSpectra]] = {}
        self._grid_energy: dict[tuple[int, int], np.ndarray] = {}
        self._aligned: dict[tuple[tuple[int, ...], tuple[int, ...]], Any] = {}

    # -- description --------------------------------------------------------------------------
    @property
    def dtype(self) -> np.dtype:
        """The dtype blocks are decomposed in (float32 or float64)."""
        return self._dtype

    @property
    def limit(self) -> int:
        """The memory limit in bytes, as it stands now."""
        return memory_limit(self.max_bytes)

    def __repr__(self) -> str:
        m, n = self.shape
        what = {"memmap": "memory-mapped", "zarr": "Zarr", "dask": "dask.array"}[self.kind]
        return (f"LargeMatrix({m} × {n}, {self._dtype}, {what}, limit "
                f"{format_bytes(self.limit)})")

    # -- reading --------------------------------------------------------------------------------
    def _read(self, rows: slice, cols: slice) -> np.ndarray:
        """A region as a new NumPy array in the compute dtype (a dask array: computed here)."""
        region = self.data[rows, cols]
        if self.kind == "dask":
            region = region.compute(scheduler="sync")
        return np.array(region, dtype=self._dtype, copy=True)

    def _stripes(self, rows: tuple[int, int], itemsize: int) -> list[slice]:
        n = self.shape[1]
        budget = max(1, min(_STRIPE_BYTES, self.limit // 8))
        per = max(1, budget // max(1, n * itemsize))
        return [slice(s, min(rows[1], s + per)) for s in range(rows[0], rows[1], per)]

    def _scan(self) -> tuple[float, int]:
        """``max |W|`` and the number of entries that are not finite, in one pass."""
        if self.kind == "dask":
            dask = _dask()
            x = self.data
            high, low, bad = dask.compute(x.max(), x.min(), (~dask.array.isfinite(x)).sum(),
                                          scheduler="threads")
            bad = int(bad)
            return (0.0 if bad else max(float(high), -float(low))), bad
        amax, bad = 0.0, 0
        for rows in self._stripes((0, self.shape[0]), max(8, self._dtype.itemsize)):
            X = self._read(rows, slice(None))
            finite = np.isfinite(X)
            if not finite.all():
                bad += int(X.size - np.count_nonzero(finite))
                continue
            amax = max(amax, float(X.max()), -float(X.min()))
        return amax, bad

    def _aligned_dask(self, row_chunks: tuple[int, ...], col_chunks: tuple[int, ...]) -> Any:
        """The matrix as a dask array whose chunks are the given (grid-aligned) pieces."""
        key = (row_chunks, col_chunks)
        if key not in self._aligned:
            da = _dask().array
            if self.kind == "dask":
                x = self.data.rechunk((row_chunks, col_chunks))
                if x.dtype != self._dtype:
                    x = x.astype(self._dtype)
            else:
                # Named here: Dask would otherwise hash (read) the whole source to name it, and
                # from_array of a memmap copies it into memory.
                x = da.from_array(_Region(self.data, self._dtype),
                                  chunks=(row_chunks, col_chunks), lock=False, asarray=False,
                                  name=f"lowrank-blocks-{uuid.uuid4().hex}",
                                  meta=np.empty((0, 0), dtype=self._dtype))
            self._aligned = {key: x}  # one at a time: graphs of large matrices are not small
        return self._aligned[key]

    # -- energies ------------------------------------------------------------------------------
    def _energies_of_grid(self, part: Partition) -> np.ndarray:
        """``‖W_ij / scale‖²`` of every block, summed in stripes (no block held whole)."""
        grid = part.grid
        if grid in self._grid_energy:
            return self._grid_energy[grid]
        p, q = grid
        out = np.zeros((p, q))
        cols = np.asarray(part.col_offsets[:-1])
        for i in range(p):
            rows = (part.row_offsets[i], part.row_offsets[i + 1])
            for stripe in self._stripes(rows, 16):
                X = self._read(stripe, slice(None)).astype(np.float64, copy=False)
                X /= self.scale
                out[i] += np.add.reduceat(np.einsum("ij,ij->j", X, X), cols)
        if p * q <= 1 << 16:
            self._grid_energy[grid] = out
        return out

    def energies(
        self, grid: tuple[int, int], blocks: tuple[tuple[int, int], ...]
    ) -> tuple[np.ndarray, Any]:
        """Energy of ``blocks`` of ``grid`` and of the rest (of ``W / scale``), in stripes."""
        part = self.partition(tuple(grid))  # type: ignore[arg-type]
        return split_energies(self._energies_of_grid(part), blocks)

    # -- spectra --------------------------------------------------------------------------------
    def spectra(
        self,
        grid: tuple[int, int],
        blocks: tuple[tuple[int, int], ...] | None = None,
        *,
        method: str = "exact",
        max_rank: int | None = None,
        oversampling: int = 10,
        n_iter: int = 4,
        random_state: int | np.random.Generator | None = None,
        tol: float = DEFAULT_TOL,
        max_bytes: int | None = None,
    ) -> BlockSpectra:
        """Spectra of ``blocks`` (default: all) of the partition into ``grid``, block by block.

        As :meth:`lowrank_blocks.PreparedMatrix.spectra`, with the same methods: ``'auto'``
        takes the certified Gram path for the blocks it decomposes in memory, with the same
        ``tol`` and ``max_rank`` semantics, the same certification (each block's share of
        ``‖W‖²`` from the energies of the whole grid, summed in stripes) and the same SVD
        fallback per block, so its values, ``paths``, ``bound_a``/``bound_c`` and ``tol``
        are those of the matrix in memory (:meth:`BlockSpectra.error_bounds` works).
        ``max_bytes`` is not used: the memory limit is the matrix's own (see
        :func:`open_large`).  A block whose Gram path does not fit under it but whose SVD
        does is decomposed by SVD; blocks whose exact spectra do not fit in memory get
        randomized ones (see the module's description), and the result's ``method`` is then
        ``'randomized'``.
        """
        method = check_method(method)
        oversampling = as_int(oversampling, "oversampling", minimum=0)
        n_iter = as_int(n_iter, "n_iter", minimum=0)
        rng = check_random_state(random_state)
        part = self.partition(tuple(grid))  # type: ignore[arg-type]
        p, q = part.grid
        if blocks is None:
            blocks = tuple((i, j) for i in range(p) for j in range(q))
        else:
            blocks = tuple((int(i), int(j)) for i, j in blocks)
            bad = [b for b in blocks if not (0 <= b[0] < p and 0 <= b[1] < q)]
            if bad or len(set(blocks)) != len(blocks):
                raise ValueError(
                    f"blocks must be distinct (i, j) pairs of the {p} × {q} grid; got "
                    f"{bad[0] if bad else 'a repeated pair'}"
                )
        whole = len(blocks) == p * q and blocks == tuple(sorted(blocks))
        with self._lock:
            if method in ("exact", "auto"):
                cached = self._cache.get(part.grid)
                if cached is not None:
                    return cached if whole else cached.restrict(blocks)
            if method == "exact":
                spec = self._compute_blocks(part, blocks, None)
                if whole:  # exact, or randomized where the blocks do not fit (drawn once)
                    self._cache[part.grid] = spec
                return spec
            if method == "auto":
                tol = check_tol(tol)
                top = None if max_rank is None else as_int(max_rank, "max_rank", minimum=1)
                hit = self._certified.get(part.grid)
                if hit is not None and hit[0] <= tol and (
                    hit[1] is None or (top is not None and hit[1] >= top)
                ):
                    return hit[2] if whole else hit[2].restrict(blocks)
                spec = self._compute_blocks(part, blocks, None, auto=(tol, top))
                if whole:
                    if spec.paths is not None and bool(np.any(spec.paths == PATH_GRAM)):
                        self._certified[part.grid] = (tol, top, spec)
                    else:  # every block by SVD (or randomized where none fits): as 'exact'
                        self._cache[part.grid] = spec
                return spec
            if max_rank is None:
                raise ValueError("method='randomized' needs max_rank (the largest rank wanted)")
            max_rank = as_int(max_rank, "max_rank", minimum=1)
            seed = int(rng.integers(0, 2**63 - 1))
            return self._compute_blocks(part, blocks,
                                        Sampling(seed, max_rank, oversampling, n_iter))

    def _exact_bytes(self, mb: int, nb: int) -> int:
        """Memory the exact spectra of an ``mb × nb`` block take: the block read, LAPACK's
        copy, and the float64 temporaries of its energy (chunks of at most 8 MiB)."""
        entries = mb * nb
        return (_EXACT_COPIES * entries * self._dtype.itemsize
                + min(16 * entries, _ENERGY_TEMPORARIES) + 64 * (mb + nb))

    def _fallback_rank(self, mb: int, nb: int, limit: int) -> int:
        """Values kept for an ``mb × nb`` block whose exact spectra do not fit."""
        want = min(self.max_rank or DEFAULT_MAX_RANK, mb, nb)
        room = limit // 2 // (8 * _RANDOMIZED_VECTORS * (mb + nb)) - self.oversampling
        return max(1, min(want, room))

    def _gram_bytes(self, mb: int, nb: int, g: int) -> int:
        """Memory the certified Gram path of ``g`` blocks of ``mb × nb`` held in memory takes
        besides the blocks themselves.

        ``PreparedMatrix._certified_group`` checks, for the blocks it decomposes at once (one
        per core), a LAPACK copy of the block, the ``k × k`` Gram matrix and ``40 (m_b + n_b)``
        entries of workspace each (the Gram matrices are released before any block falls back
        to the SVD, so this bounds both); a fallback of some blocks of a group
        (``_svd_of_items``) first stacks copies of them, at most ``2²²`` entries (or one block)
        at a time, and NumPy's SVD copies chunks of up to ``2¹⁹`` entries per core; plus
        ``64 (m_b + n_b)`` bytes of float64 vectors per block (eigenvalues, the bounds of the
        certification).
        """
        itemsize = self._dtype.itemsize
        entries, k = mb * nb, min(mb, nb)
        at_once = min(g, os.cpu_count() or 1)
        counted = at_once * (entries + k * k + 40 * (mb + nb)) * itemsize
        stacked = 0 if g == 1 else (min(g * entries, max(entries, _FALLBACK_STACK_ENTRIES))
                                    * itemsize + at_once * 8 * (1 << 19))
        return counted + stacked + g * 64 * (mb + nb)

    def _auto_bytes(self, mb: int, nb: int) -> int:
        """Memory ``method='auto'`` takes for one ``mb × nb`` block read on its own: the block
        and :meth:`_gram_bytes` (no energy: the grid's energies are summed beforehand)."""
        return mb * nb * self._dtype.itemsize + self._gram_bytes(mb, nb, 1)

    def _auto_stripe_bytes(self, part: Partition) -> int:
        """Memory of ``method='auto'`` on the largest row stripe of a grid: the stripe and
        :meth:`_gram_bytes` of its blocks (of the largest shape, all ``q`` of them)."""
        mb, nb = max(part.row_sizes), max(part.col_sizes)
        return mb * self.shape[1] * self._dtype.itemsize + self._gram_bytes(mb, nb, part.grid[1])

    def _compute_blocks(self, part: Partition, blocks: tuple[tuple[int, int], ...],
                        sampling: Sampling | None,
                        auto: tuple[float, int | None] | None = None) -> BlockSpectra:
        limit = self.limit
        n_blocks = len(blocks)
        shapes = [part.block_shape(i, j) for i, j in blocks]
        fits = [self._exact_bytes(mb, nb) <= limit for mb, nb in shapes]
        certified = None
        if auto is not None:
            # What the certification of PreparedMatrix._compute uses: every block's share of
            # the energy held and ‖W‖², from the grid's energies (summed in stripes, before
            # any block is decomposed).
            held, outside = self.energies(part.grid, blocks)
            weights, total = certification_inputs(held, outside)
            certified = (held, weights, total, auto)
            gram_fits = [self._auto_bytes(mb, nb) <= limit for mb, nb in shapes]
            fits = [a or b for a, b in zip(fits, gram_fits)]
        results: list[Any] = [None] * n_blocks
        if self.kind == "dask":
            self._grid_aligned(part)  # rechunked once, before any thread reads a block
        p, q = part.grid
        whole = n_blocks == p * q and all(fits)
        if whole and sampling is None and certified is not None and \
                self._auto_stripe_bytes(part) <= limit:
            # A whole grid whose row stripes fit: one stripe at a time, its blocks certified
            # together (the batched, threaded Gram path), read once.
            inner = self._gram_bytes(max(part.row_sizes), max(part.col_sizes), q)
            for i in range(p):
                results[i * q:(i + 1) * q] = self._auto_stripe(part, i, certified, inner)
            return self._assemble(part, blocks, results, None, certified)
        if whole and sampling is None and certified is None and \
                self._stripe_bytes(part) <= limit:
            # A whole grid whose row stripes fit: one stripe at a time, its blocks decomposed
            # together (the toolkit's batched, threaded path), read once.
            for i in range(p):
                results[i * q:(i + 1) * q] = self._stripe(part, i)
            return self._assemble(part, blocks, results, None)
        # Blocks that fit: as many at once as there are cores and room for.  With 'auto',
        # the certified Gram path where it fits, else the SVD.
        inside = [k for k in range(n_blocks) if fits[k]]
        if inside:
            gram = [k for k in inside if certified is not None and gram_fits[k]]
            need = max(self._auto_bytes(*shapes[k]) if k in gram else
                       self._exact_bytes(*shapes[k]) for k in inside)
            workers = max(1, min(os.cpu_count() or 1, len(inside), limit // need))
            exact_task = self._in_memory_task(part, blocks, sampling)
            if gram:
                inner = max(self._gram_bytes(*shapes[k], 1) for k in gram)
                gram_task = self._auto_task(part, blocks, certified, inner)  # type: ignore[arg-type]
                chosen = set(gram)

                def task(k: int) -> _Result:
                    return gram_task(k) if k in chosen else exact_task(k)
            else:
                task = exact_task
            if workers == 1:
                for k in inside:
                    results[k] = task(k)
            else:
                with one_blas_thread(), ThreadPoolExecutor(workers) as pool:
                    for k, out in zip(inside, pool.map(task, inside)):
                        results[k] = out
        # Blocks that do not fit: randomized, out of core, one at a time.
        outside_blocks = [k for k in range(n_blocks) if not fits[k]]
        used = sampling
        if outside_blocks:
            mb, nb = shapes[outside_blocks[0]]
            if sampling is None:
                rank = self._fallback_rank(mb, nb, limit)
                used = Sampling(self.seed, rank, self.oversampling, self.n_iter)
            assert used is not None
            label = _label(part, blocks)
            reason = (
                f"{label}: blocks of {mb} × {nb} need {format_bytes(self._exact_bytes(mb, nb))} "
                f"for exact spectra, more than the memory limit of {format_bytes(limit)}; their "
                f"{min(used.sample_rank, mb, nb)} leading singular values were computed by "
                f"dask.array.linalg.svd_compressed (randomized; errors of a realizable "
                f"approximation, never below the exact ones)"
            )
            if sampling is None:
                self.randomized[label] = reason
                warnings.warn(f"{self.name}: {reason}", UserWarning, stacklevel=2)
            for k in outside_blocks:
                results[k] = self._compressed(part, blocks[k], used, limit)
        return self._assemble(part, blocks, results, used, certified)

    def _stripe_bytes(self, part: Partition) -> int:
        """Memory of the exact spectra of the largest row stripe of a grid: the stripe, and
        the copies and temporaries of one block per core."""
        mb, nb = max(part.row_sizes), max(part.col_sizes)
        return (self._exact_bytes(mb, self.shape[1])
                + (os.cpu_count() or 1) * mb * nb * self._dtype.itemsize)

    def _read_stripe(self, part: Partition, i: int) -> np.ndarray:
        """Row stripe ``i`` of a grid, as a new array in the compute dtype."""
        if self.kind == "dask":
            return np.array(self._grid_aligned(part).blocks[i].compute(scheduler="sync"),
                            dtype=self._dtype, copy=True)
        return self._read(slice(part.row_offsets[i], part.row_offsets[i + 1]), slice(None))

    def _stripe(self, part: Partition, i: int) -> list[_Result]:
        """Exact spectra of the blocks of row stripe ``i`` of a grid."""
        q = part.grid[1]
        rows = slice(part.row_offsets[i], part.row_offsets[i + 1])
        stripe = self._read_stripe(part, i)
        spec = prepare(stripe, name=f"{self.name} rows {rows.start}:{rows.stop}").spectra((1, q))
        del stripe
        return [_from_spectra(spec, j, self.scale) for j in range(q)]

    def _local(self, X: np.ndarray) -> PreparedMatrix:
        """A region read (a new array, ours) as a :class:`PreparedMatrix` in the units of the
        whole matrix, ``W / scale``: what :func:`~lowrank_blocks.prepare` of the whole matrix
        decomposes (the data as read, or divided by the scale in place where its magnitude
        is extreme), so its values are those of the in-memory path."""
        import array_api_compat

        xp = array_api_compat.array_namespace(X)  # prepare's namespace for a NumPy array
        if _EXTREME_LOW <= self.scale <= _EXTREME_HIGH:
            return PreparedMatrix(X, xp, self.scale, None)
        X /= self.scale  # a power of two: exact, as prepare's copy
        return PreparedMatrix(X, xp, self.scale, None, divisor=self.scale)

    def _auto_group(self, local: PreparedMatrix, part: Partition,
                    blocks: tuple[tuple[int, int], ...], positions: Sequence[int],
                    certified: tuple[np.ndarray, np.ndarray, np.ndarray, Any],
                    inner_bytes: int) -> list[_Result]:
        """``method='auto'`` values of ``blocks`` of a region held in memory (``local`` on its
        own partition ``part``), ``positions`` their places in the whole request.

        Blocks of one shape together: ``PreparedMatrix._certified_group`` (Gram values,
        certified with the whole matrix's weights and ``‖W‖²``, else SVD) where the smaller
        side is at least ``_gram.GRAM_MIN_SIDE``, as in memory; else the SVD.
        """
        held, weights, total, auto = certified
        n_blocks = len(held)
        out: list[_Result] = [None] * len(blocks)  # type: ignore[list-item]
        for (mb, nb), members in block_groups(part, blocks).items():
            group = [blocks[k] for k in members]
            where = np.asarray([positions[k] for k in members])
            if min(mb, nb) >= _gram.GRAM_MIN_SIDE:
                values, a, c, paths = local._certified_group(
                    part, group, held[where], weights[where], total, auto, inner_bytes,
                    n_blocks)
            else:
                values = local._svd_of_items(part, group, np.ones(len(group), dtype=bool),
                                             inner_bytes)
                a = c = np.zeros(len(group))
                paths = np.full(len(group), PATH_SVD)
            for r, k in enumerate(members):
                gram = int(paths[r]) == PATH_GRAM
                out[k] = _Result(values[r], int(values.shape[-1]), 0.0,
                                 float(held[positions[k]]), "auto" if gram else "exact",
                                 float(a[r]), float(c[r]), int(paths[r]),
                                 auto[0] if gram else None)
        return out

    def _auto_stripe(self, part: Partition, i: int,
                     certified: tuple[np.ndarray, np.ndarray, np.ndarray, Any],
                     inner_bytes: int) -> list[_Result]:
        """``method='auto'`` values of the blocks of row stripe ``i`` of a whole grid."""
        q = part.grid[1]
        stripe = self._read_stripe(part, i)
        local = self._local(stripe)
        own = Partition(stripe.shape, (1, q))  # the same column parts as the grid's
        out = self._auto_group(local, own, tuple((0, j) for j in range(q)),
                               range(i * q, (i + 1) * q), certified, inner_bytes)
        del stripe, local
        return out

    def _auto_task(self, part: Partition, blocks: tuple[tuple[int, int], ...],
                   certified: tuple[np.ndarray, np.ndarray, np.ndarray, Any],
                   inner_bytes: int) -> Callable[[int], _Result]:
        """``method='auto'`` values of one block, read on its own."""

        def run(k: int) -> _Result:
            i, j = blocks[k]
            block = self._read_block(part, i, j)
            local = self._local(block)
            (out,) = self._auto_group(local, Partition(block.shape, (1, 1)), ((0, 0),), (k,),
                                      certified, inner_bytes)
            del block, local
            return out

        return run

    def _grid_aligned(self, part: Partition) -> Any:
        """A dask input rechunked to the grid: every block is one chunk."""
        key = (tuple(part.row_sizes), tuple(part.col_sizes))
        if key not in self._aligned:
            x = self.data.rechunk(key)
            self._aligned = {key: x.astype(self._dtype) if x.dtype != self._dtype else x}
        return self._aligned[key]

    def _read_block(self, part: Partition, i: int, j: int) -> np.ndarray:
        if self.kind == "dask":
            chunk = self._grid_aligned(part).blocks[i, j].compute(scheduler="sync")
            return np.array(chunk, dtype=self._dtype, copy=True)
        rows, cols = part.block_slices(i, j)
        return self._read(rows, cols)

    def _in_memory_task(self, part: Partition, blocks: tuple[tuple[int, int], ...],
                        sampling: Sampling | None) -> Callable[[int], _Result]:
        """Exact (or, with ``sampling``, randomized) spectra of one block, read on its own."""

        def run(k: int) -> _Result:
            i, j = blocks[k]
            block = self._read_block(part, i, j)
            prep = prepare(block, name=f"{self.name} block ({i}, {j})")
            if sampling is None:
                spec = prep.spectra((1, 1))
            else:
                spec = prep.spectra(
                    (1, 1), method="randomized",
                    max_rank=min(sampling.sample_rank, *block.shape),
                    oversampling=sampling.oversampling, n_iter=sampling.n_iter,
                    random_state=np.random.default_rng([sampling.seed, i, j]),
                )
            del block
            return _from_spectra(spec, 0, self.scale)

        return run

    def _compressed(self, part: Partition, block: tuple[int, int], sampling: Sampling,
                    limit: int) -> _Result:
        """Randomized spectra of one block larger than memory, with Dask, chunk by chunk."""
        dask = _dask()
        da = dask.array
        i, j = block
        mb, nb = part.block_shape(i, j)
        rank = min(sampling.sample_rank, mb, nb)
        vectors = 8 * _RANDOMIZED_VECTORS * (mb + nb) * (rank + sampling.oversampling)
        check_bytes(
            2 * vectors, f"randomized spectra ({rank} values) of the {mb} × {nb} blocks of "
            f"{self.name}", max_bytes=limit,
            hint="Ask for fewer singular values (max_params=, or open_large(max_rank=))",
        )
        threads = max(1, os.cpu_count() or 1)
        per_chunk = (limit - vectors) // (4 * threads)
        side = max(16, math.isqrt(max(1, per_chunk // 8)))
        row_chunks, row_starts = _pieces(part.row_sizes, side)
        col_chunks, col_starts = _pieces(part.col_sizes, side)
        x = self._aligned_dask(row_chunks, col_chunks)
        rows, cols = part.block_slices(i, j)
        A = x[rows, cols] / self.scale
        # Dask's threads each run one single-threaded BLAS call at a time.
        with dask.config.set(scheduler="threads", num_workers=threads), one_blas_thread():
            u, s, v = da.linalg.svd_compressed(
                A, rank, n_power_iter=sampling.n_iter, n_oversamples=sampling.oversampling,
                seed=int(np.random.default_rng([sampling.seed, i, j]).integers(0, 2**31 - 1)),
                compute=True,
            )
            u, s, v = dask.persist(u, s, v)
            A64 = A.astype(np.float64)
            approx = (u.astype(np.float64) * s.astype(np.float64)) @ v.astype(np.float64)
            residual = ((A64 - approx) ** 2).sum()
            energy = (A64**2).sum()
            s, residual, energy = dask.compute(s, residual, energy)
        s = np.asarray(s, dtype=np.float64)
        return _Result(s * s, len(s), float(residual), float(energy), "randomized",
                       path=PATH_RANDOMIZED)

    def _assemble(self, part: Partition, blocks: tuple[tuple[int, int], ...],
                  results: list[_Result], sampling: Sampling | None,
                  certified: tuple[np.ndarray, np.ndarray, np.ndarray, Any] | None = None,
                  ) -> BlockSpectra:
        """One :class:`BlockSpectra` from the blocks' results, filled as
        ``PreparedMatrix._compute`` fills it: ``method`` ``'randomized'`` where any block is,
        else ``'auto'`` where any block holds certified Gram values, else ``'exact'``; the
        bound coefficients and ``tol`` only where some block took the Gram path."""
        width = max(len(r.values) for r in results)
        n_blocks = len(blocks)
        sq = np.zeros((n_blocks, width))
        known = np.zeros(n_blocks, dtype=np.int64)
        residual = np.zeros(n_blocks)
        held = np.zeros(n_blocks)
        bound_a, bound_c = np.zeros(n_blocks), np.zeros(n_blocks)
        paths = np.zeros(n_blocks, dtype=np.int8)
        for k, r in enumerate(results):
            sq[k, : len(r.values)] = r.values
            known[k] = r.count
            residual[k] = r.residual
            held[k] = r.energy
            bound_a[k], bound_c[k], paths[k] = r.a, r.c, r.path
        if certified is not None:
            held = certified[0].copy()  # the grid's energies the certification used
        tols = [r.tol for r in results if r.path == PATH_GRAM and r.tol is not None]
        p, q = part.grid
        if len(blocks) == p * q:
            outside: Any = 0.0
        else:
            _, outside = self.energies(part.grid, blocks)
        return BlockSpectra.assembled(
            partition=part, blocks=blocks, sq=sq, known=known, residual=residual,
            held_energies=held, outside=outside, scale=self.scale, paths=paths,
            randomized=any(r.how == "randomized" for r in results), sampling=sampling,
            bound_a=bound_a, bound_c=bound_c, tol=max(tols) if tols else None,
        )

    def errors_of(self, structure: Any) -> Any:
        """Optimal relative error of ``structure`` (spectra of its active blocks)."""
        ranks = np.array(structure.block_ranks(self.shape), dtype=np.int64)
        return self.spectra(structure.grid, structure.blocks).errors(ranks)


class _Region:
    """What ``dask.array.from_array`` reads: regions copied out of the source, one at a
    time (never the whole of it)."""

    def __init__(self, source: Any, dtype: np.dtype) -> None:
        self.source = source
        self.shape = tuple(int(d) for d in source.shape)
        self.dtype = dtype
        self.ndim = 2

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.array(self.source[key], dtype=self.dtype, copy=True)


def _from_spectra(spec: BlockSpectra, j: int, scale: float) -> _Result:
    """Block ``j`` of spectra of a region prepared on its own (its own power of two), in the
    units of the whole matrix, ``W / scale`` (a power-of-two ratio: exact)."""
    ratio2 = (float(spec.scale) / scale) ** 2
    path = PATH_SVD if spec.paths is None else int(spec.paths[j])
    gram = path == PATH_GRAM and spec.bound_a is not None and spec.bound_c is not None
    return _Result(
        spec.sq[j, : int(spec.known[j])] * ratio2, int(spec.known[j]),
        float(spec.residual[j]) * ratio2, float(spec.held_energies[j]) * ratio2,
        spec.method,
        float(spec.bound_a[j]) * ratio2 if gram else 0.0,  # type: ignore[index]
        float(spec.bound_c[j]) * ratio2 if gram else 0.0,  # type: ignore[index]
        path, spec.tol if gram else None,
    )


def _label(part: Partition, blocks: tuple[tuple[int, int], ...]) -> str:
    p, q = part.grid
    if (p, q) == (1, 1):
        return "global (the 1 × 1 grid)"
    if len(blocks) == p * q:
        return f"the {p} × {q} grid"
    if p == q and all(i == j for i, j in blocks) and len(blocks) == p:
        return f"the {p} diagonal blocks"
    return f"{len(blocks)} blocks of the {p} × {q} grid"

