"""Does each numba kernel beat its NumPy version on the sizes users have?

Run ``python benchmarks/bench_kernels.py``.  Prints, for block grids of a 1024 × 1024 and a
2048 × 2048 matrix (K = 16 and K = 32, ragged where it does not divide) and 32 budgets:

* ``greedy_fill`` (rank allocation over all blocks and budgets): numba ÷ the Python fallback;
* surface assembly (errors of every uniform rank from the blocks' singular values): a numba
  candidate ÷ the NumPy code used in ``BlockSpectra.uniform_errors``.  The NumPy version stays
  unless the candidate wins by a clear margin.

Timings are medians of repeated runs (the first numba call, which compiles, is excluded).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_surfaces import median_time  # noqa: E402

from lowrank_blocks import _kernels, block_spectra  # noqa: E402


def numpy_assembly(sq: np.ndarray, rmax: int) -> np.ndarray:
    col = sq.sum(axis=0)
    tails = np.append(np.cumsum(col[::-1])[::-1], 0.0)
    return tails[1 : rmax + 1]


def main() -> None:
    import numba

    @numba.njit(cache=True)
    def numba_assembly(sq, rmax):
        n_b, L = sq.shape
        col = np.zeros(L)
        for b in range(n_b):
            for i in range(L):
                col[i] += sq[b, i]
        out = np.zeros(rmax)
        acc = 0.0
        for i in range(L - 1, -1, -1):
            if i < rmax + 1 and i >= 1:
                out[i - 1] = acc + col[i]
            acc += col[i]
        return out

    print("| matrix | grid | items | greedy: numba ÷ Python | assembly: numba ÷ NumPy |")
    print("|---|---|---|---|---|")
    for d, k in ((1024, 16), (1000, 16), (2048, 32)):
        W = np.random.default_rng(0).standard_normal((d, d))
        spec = block_spectra(W, "grid", k)
        _, costs, gains = spec.items()
        budgets = np.linspace(costs.min(), d * d // 4, 32).astype(np.int64)
        assert _kernels.NUMBA_AVAILABLE
        _kernels.greedy_fill(costs, gains, budgets)  # compile
        t_nb = median_time(lambda: _kernels.greedy_fill(costs, gains, budgets))
        t_py = median_time(lambda: _kernels.greedy_fill_numpy(costs, gains, budgets), 3)
        rmax = spec.uniform_max_rank
        np.testing.assert_allclose(numba_assembly(spec.sq, rmax), numpy_assembly(spec.sq, rmax))
        t_an = median_time(lambda: numba_assembly(spec.sq, rmax), 51)
        t_ap = median_time(lambda: numpy_assembly(spec.sq, rmax), 51)
        print(f"| {d} × {d} | {k} × {k} | {len(costs)} | {t_nb / t_py:.4f} "
              f"({t_nb * 1e3:.2f} ms vs {t_py * 1e3:.0f} ms) | {t_an / t_ap:.2f} "
              f"({t_an * 1e6:.0f} µs vs {t_ap * 1e6:.0f} µs) |")


if __name__ == "__main__":
    main()
