"""How close the randomized surface is to the exact one, by kind of spectrum.

Run ``python benchmarks/bench_randomized.py [--size 2048] [--repeat 3]``.  For ``d × d`` float64
matrices ``U diag(σ) Vᵀ`` with random orthogonal ``U``, ``V`` and three spectra — flat (a
Gaussian matrix), slow decay ``σ_i = i^-0.5`` and fast decay ``σ_i = 0.99^i`` — it prints, for
the surface over K ∈ {1, 2, 4, 8, 16} up to 10 % of the dense parameter count, the time of the
randomized surface ÷ the exact one (medians of ``--repeat``) and the largest difference of the
relative errors, with the defaults (4 power iterations, oversampling 10) and with 8 and 20.
Randomized errors are never below the exact ones (checked here on every row).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import median_time  # noqa: E402

from lowrank_blocks import error_surface  # noqa: E402

GRIDS = [1, 2, 4, 8, 16]


def matrix(kind: str, d: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "flat (Gaussian)":
        return rng.standard_normal((d, d))
    U, _ = np.linalg.qr(rng.standard_normal((d, d)))
    V, _ = np.linalg.qr(rng.standard_normal((d, d)))
    i = np.arange(1, d + 1)
    sigma = i**-0.5 if kind.startswith("slow") else 0.99**i
    return (U * sigma) @ V.T



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    d = args.size
    budget = d * d // 10
    kw = dict(grids=GRIDS, families=["grid"], max_params=budget)
    print(f"d = {d}, surface over K ∈ {GRIDS} up to {budget:,} parameters (10 % of dense), "
          f"medians of {args.repeat}")
    print("| spectrum | randomized ÷ exact (default / n_iter=8, p=20) | largest error difference "
          "(default / n_iter=8, p=20) |")
    print("|---|---|---|")
    rng = np.random.default_rng(0)
    for kind in ("flat (Gaussian)", "slow decay i^-0.5", "fast decay 0.99^i"):
        W = matrix(kind, d, rng)  # a plain array: every call computes its spectra afresh
        t_exact = median_time(lambda: error_surface(W, **kw), args.repeat)
        exact = error_surface(W, **kw).to_frame()
        cells_t, cells_e = [], []
        for opts in (dict(n_iter=4, oversampling=10), dict(n_iter=8, oversampling=20)):
            t = median_time(lambda: error_surface(W, method="randomized", random_state=0,
                                                  **opts, **kw), args.repeat)
            rand = error_surface(W, method="randomized", random_state=0, **opts, **kw).to_frame()
            merged = exact.merge(rand, on=["p", "q", "rank"], suffixes=("_e", "_r"))
            diff = merged["error_r"] - merged["error_e"]
            assert (diff >= -1e-12).all(), "a randomized error below the exact one"
            cells_t.append(f"{t / t_exact:.3f}")
            cells_e.append(f"{diff.max():.1e}")
        print(f"| {kind} | {' / '.join(cells_t)} | {' / '.join(cells_e)} |", flush=True)


if __name__ == "__main__":
    main()
