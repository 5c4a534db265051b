"""Cost of the exact rank allocation next to the singular values it works from.

Run ``python benchmarks/bench_allocation.py [--size 4096] [--grid 15] [--repeat 5]``.  For a
``d × d`` float64 matrix (Gaussian with column scales from 0.2 to 3, so blocks differ) on a
``K × K`` grid (ragged unless ``K`` divides ``d``) it prints, as medians of ``--repeat`` runs:

* the blocks' singular values (``block_spectra``: one batched ``svdvals`` per block shape);
* the exact allocation at a budget of 10 % of the dense parameter count, and its ratio to the
  spectra (target ≤ 0.10);
* the exact allocation at 50 budgets up to that one (the whole optimal curve), and its ratio;
* the DP algorithm forced on the same problem (the whole-model algorithm), and its ratio.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import median_time  # noqa: E402

from lowrank_blocks import allocation, block_spectra  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--grid", type=int, default=15)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    d, k = args.size, args.grid
    rng = np.random.default_rng(0)
    W = rng.standard_normal((d, d)) * np.linspace(0.2, 3.0, d)
    spec = block_spectra(W, "grid", k)  # warm-up
    t_spec = median_time(lambda: block_spectra(W, "grid", k), args.repeat)
    gains = [row[:r] for row, r in zip(spec.sq, spec.max_ranks)]
    budget = d * d // 10
    budgets = np.linspace(budget / 50, budget, 50).astype(np.int64)
    allocation.solve_allocation(spec.costs, gains, budget)  # compile
    one = allocation.solve_allocation(spec.costs, gains, budget)
    t_one = median_time(lambda: allocation.solve_allocation(spec.costs, gains, budget), args.repeat)
    t_curve = median_time(
        lambda: allocation.solve_allocation(spec.costs, gains, budgets), args.repeat
    )
    dp = allocation.solve_allocation(spec.costs, gains, budget, method="dp")
    t_dp = median_time(
        lambda: allocation.solve_allocation(spec.costs, gains, budget, method="dp"), 3)
    assert abs(dp.gain[0] - one.gain[0]) <= 1e-9 * one.gain[0], "the two algorithms disagree"
    costs = sorted(set(spec.costs.tolist()))
    print(f"d = {d}, grid {k} × {k} (block costs {costs}), budget {budget:,} (10 % of dense), "
          f"medians of {args.repeat}")
    print("| step | time | ÷ spectra |")
    print("|---|---|---|")
    print(f"| block spectra (svdvals of {k * k} blocks) | {t_spec:.3f} s | 1 |")
    print(f"| exact allocation, 1 budget ({one.algorithm}) | {t_one * 1e3:.1f} ms | "
          f"{t_one / t_spec:.4f} |")
    print(f"| exact allocation, 50 budgets | {t_curve * 1e3:.1f} ms | {t_curve / t_spec:.4f} |")
    print(f"| exact allocation, 1 budget, DP forced | {t_dp * 1e3:.1f} ms | {t_dp / t_spec:.4f} |")


if __name__ == "__main__":
    main()
