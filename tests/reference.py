"""Independent float64 references written for the tests (no library numerics used)."""

from __future__ import annotations

import itertools

import numpy as np


def split(size: int, parts: int) -> list[tuple[int, int]]:
    """(start, stop) of parts that differ by at most one, larger first (numpy.array_split)."""
    bounds = np.cumsum([0] + [len(c) for c in np.array_split(np.arange(size), parts)])
    return list(zip(bounds[:-1], bounds[1:]))


def block_svd_reference(W, grid, blocks, ranks) -> tuple[np.ndarray, float]:
    """Truncated SVD of every listed block, the reconstruction formed, its relative error."""
    W = np.asarray(W, dtype=np.float64)
    rows, cols = split(W.shape[0], grid[0]), split(W.shape[1], grid[1])
    out = np.zeros_like(W)
    for (i, j), r in zip(blocks, ranks):
        (r0, r1), (c0, c1) = rows[i], cols[j]
        U, s, Vt = np.linalg.svd(W[r0:r1, c0:c1])
        out[r0:r1, c0:c1] = (U[:, :r] * s[:r]) @ Vt[:r]
    norm = np.linalg.norm(W)
    return out, float(np.linalg.norm(W - out) / norm) if norm else 0.0


def exhaustive_allocation(W, grid, blocks, budget) -> tuple[float, tuple[int, ...]]:
    """Best per-block ranks within ``budget`` by trying every combination (small cases only)."""
    W = np.asarray(W, dtype=np.float64)
    rows, cols = split(W.shape[0], grid[0]), split(W.shape[1], grid[1])
    sq, costs = [], []
    covered = np.zeros(W.shape, dtype=bool)
    for i, j in blocks:
        (r0, r1), (c0, c1) = rows[i], cols[j]
        s = np.linalg.svd(W[r0:r1, c0:c1], compute_uv=False)
        sq.append(s**2)
        costs.append((r1 - r0) + (c1 - c0))
        covered[r0:r1, c0:c1] = True
    total = float(np.sum(W**2))
    outside = float(np.sum(W[~covered] ** 2))  # energy of blocks left out, summed directly
    best = (np.inf, ())
    for ranks in itertools.product(*[range(len(s) + 1) for s in sq]):
        if sum(r * c for r, c in zip(ranks, costs)) > budget:
            continue
        err = sum(float(np.sum(s[r:])) for s, r in zip(sq, ranks))
        e = np.sqrt((err + outside) / total)
        if e < best[0] - 1e-15:
            best = (e, ranks)
    return best
