"""The randomized surface's trade-off: time against its largest error, by kind of spectrum.

Run ``python benchmarks/bench_randomized.py [--size 2048] [--repeat 3]``.  For ``d × d`` float64
matrices ``U diag(σ) Vᵀ`` with random orthogonal ``U``, ``V`` and three spectra — flat (a
Gaussian matrix), slow decay ``σ_i = i^-0.5`` and fast decay ``σ_i = 0.99^i`` — it computes the
surface over K ∈ {1, 2, 4, 8, 16} up to 10 % of the dense parameter count exactly
(``method='exact'``, ``svdvals`` of every block), with the certified Gram path
(``method='auto'``) and with the randomized block Krylov method at several block sizes
(``oversampling``) and depths (``n_iter``), and prints for each setting the time ÷ the exact
surface and ÷ the auto one — wall clock (medians of back-to-back pairs) and CPU work (one
thread, ``time.process_time``, medians of ``--repeat`` runs: robust to a loaded machine) — and
the largest difference of the relative errors.  Randomized errors are never below the exact ones (checked on every row).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import scipy.linalg  # noqa: E402,F401  (its BLAS loaded now, so thread limits reach it)
from _timing import cpu_work  # noqa: E402

from lowrank_blocks import error_surface  # noqa: E402

GRIDS = [1, 2, 4, 8, 16]
SETTINGS = [(10, 2), (10, 3), (10, 4), (10, 5), (6, 4), (2, 4), (2, 5)]


def matrix(kind: str, d: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "flat (Gaussian)":
        return rng.standard_normal((d, d))
    U, _ = np.linalg.qr(rng.standard_normal((d, d)))
    V, _ = np.linalg.qr(rng.standard_normal((d, d)))
    i = np.arange(1, d + 1)
    sigma = i**-0.5 if kind.startswith("slow") else 0.99**i
    return (U * sigma) @ V.T


def paired(fn, base, repeat: int) -> float:
    """Median over back-to-back pairs of ``time(fn) / time(base)``."""
    ratios = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        base()
        t1 = time.perf_counter()
        fn()
        ratios.append((time.perf_counter() - t1) / (t1 - t0))
    return statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--kinds", nargs="+", default=["flat", "slow", "fast"])
    parser.add_argument("--no-wall", action="store_true", help="CPU work only (faster)")
    args = parser.parse_args()
    d = args.size
    budget = d * d // 10
    kw = dict(grids=GRIDS, families=["grid"], max_params=budget)
    print(f"d = {d}, surface over K ∈ {GRIDS} up to {budget:,} parameters (10 % of dense); "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print("| spectrum | setting | ÷ exact (wall / CPU work) | ÷ auto (wall / CPU work) | "
          "largest error difference |")
    print("|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    kinds = {"flat": "flat (Gaussian)", "slow": "slow decay i^-0.5", "fast": "fast decay 0.99^i"}
    for key in args.kinds:
        kind = kinds[key]
        W = matrix(kind, d, rng)  # a plain array: every call computes its spectra afresh

        def exact_run() -> None:
            error_surface(W, method="exact", **kw)

        exact = error_surface(W, method="exact", **kw).to_frame()

        def cpu(fn) -> float:
            return statistics.median(cpu_work(fn) for _ in range(args.repeat))

        cpu_exact = cpu(exact_run)
        cpu_auto = cpu(lambda: error_surface(W, method="auto", **kw))
        wall_auto = 1.0 if args.no_wall else paired(
            lambda: error_surface(W, method="auto", **kw), exact_run, args.repeat)
        auto = error_surface(W, method="auto", **kw).to_frame()
        diff_auto = float((auto["error"] - exact["error"]).abs().max())
        print(f"| {kind} | auto (certified Gram) | {wall_auto:.3f} / {cpu_auto / cpu_exact:.3f} | "
              f"1 / 1 | {diff_auto:.1e} |", flush=True)
        for oversampling, n_iter in SETTINGS:
            opts = dict(oversampling=oversampling, n_iter=n_iter, random_state=0)

            def run(opts=opts) -> None:
                error_surface(W, method="randomized", **opts, **kw)

            cpu_run = cpu(run)
            if args.no_wall:
                wall_exact = wall_over_auto = float("nan")
            else:
                wall_exact = paired(run, exact_run, args.repeat)
                wall_over_auto = wall_exact / wall_auto
            rand = error_surface(W, method="randomized", **opts, **kw).to_frame()
            merged = exact.merge(rand, on=["p", "q", "rank"], suffixes=("_e", "_r"))
            assert len(merged) == len(exact)
            diff = merged["error_r"] - merged["error_e"]
            assert (diff >= -1e-12).all(), "a randomized error below the exact one"
            print(f"| {kind} | oversampling={oversampling}, n_iter={n_iter} | "
                  f"{wall_exact:.3f} / {cpu_run / cpu_exact:.3f} | {wall_over_auto:.3f} / "
                  f"{cpu_run / cpu_auto:.3f} | {diff.max():.1e} |", flush=True)


if __name__ == "__main__":
    main()
