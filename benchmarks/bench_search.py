"""The structure search at a budget: time and memory next to one SVD of the same matrix.

Run ``python benchmarks/bench_search.py [--sizes 2000] [--fraction 0.01] [--repeat 3]``.  For a
float32 Gaussian ``d × d`` matrix and a budget of ``fraction`` of its ``d²`` entries it runs
:func:`lowrank_blocks.best_approximation` (what ``lowrank-blocks compare W --budget N`` runs:
every family, square power-of-two grids, uniform and exactly optimal per-block ranks, the rank
integers charged) and prints

* its time ÷ one ``numpy.linalg.svd(W, compute_uv=False)`` of the same matrix (target ≤ 4);
* its peak memory above the interpreter ÷ the matrix's size, sampled every millisecond in a
  fresh process (target ≤ 4); the matrix itself counts as 1.

Timings are medians of ``--repeat`` runs (the search itself: 1 run for d > 4000).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _timing import median_time, peak_memory  # noqa: E402

from lowrank_blocks import best_approximation  # noqa: E402


def peak_memory_ratio(d: int, budget: int) -> float:
    """Peak memory of creating the matrix and searching it, ÷ the matrix (which counts as 1)."""
    added = peak_memory(
        "import numpy as np\n"
        "from lowrank_blocks import best_approximation\n"
        "best_approximation(np.eye(64, dtype=np.float32), 300)  # imports, numba, threads\n",
        f"W = np.random.default_rng(0).standard_normal(({d}, {d}), dtype=np.float32)\n"
        f"best_approximation(W, {budget})\n",
    )
    return added / (d * d * 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000])
    parser.add_argument("--fraction", type=float, default=0.01)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print("| d | budget | one svdvals | search | search ÷ svdvals | grids searched | best found "
          "| peak memory ÷ matrix |")
    print("|---|---|---|---|---|---|---|---|")
    for d in args.sizes:
        W = np.random.default_rng(0).standard_normal((d, d), dtype=np.float32)
        budget = int(args.fraction * d * d)
        best_approximation(W[:64, :64], 300)  # warm-up (numba, thread pools)
        repeat = args.repeat if d <= 4000 else 1
        t_svd = median_time(lambda: np.linalg.svd(W, compute_uv=False), repeat)
        found = []
        t_search = median_time(lambda: found.append(best_approximation(W, budget)), repeat)
        best = found[-1]
        mem = peak_memory_ratio(d, budget)
        print(f"| {d} | {budget:,} | {t_svd:.2f} s | {t_search:.2f} s | {t_search / t_svd:.2f} | "
              f"{best.grids_searched} | {best.structure.label}, {best.n_params:,} + "
              f"{best.rank_overhead:,} rank integers, error {best.error:.4f} | {mem:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
