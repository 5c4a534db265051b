"""Speed and memory of error surfaces, as ratios against baselines measured in the same run.

Run ``make bench`` (or ``python benchmarks/bench_surfaces.py [--sizes 1024 2048] [--repeat 3]``).
For float64 Gaussian matrices of each size it prints

1. exact surface over block grids K ∈ {1, 2, 4, 8, 16}, all ranks ÷ one
   ``numpy.linalg.svd(W, compute_uv=False)`` (the floor is about 1.94: the blocks' SVDs cost
   ``d³ (1 + 1/2 + 1/4 + …)``), next to a Python loop over blocks with full SVDs, and the
   default surface with all three families (diagonal and global read from the grids' spectra,
   so it should cost the same);
2. randomized surface for budgets up to 10 % of the dense parameter count ÷ exact surface,
   with the largest absolute error difference;
3. batched randomized SVD of all blocks ÷ scikit-learn ``randomized_svd`` looped over the
   blocks, same rank, oversampling and power iterations;
4. peak memory of the exact surface ÷ the matrix's own size: the peak resident set size of a
   fresh process, sampled every millisecond, above its level before the matrix is created (so
   the matrix itself counts as 1).

Timings are medians of ``--repeat`` runs; the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import median_time, peak_memory  # noqa: E402

from lowrank_blocks import error_surface  # noqa: E402
from lowrank_blocks.linalg import randomized_svd_stack, stack_blocks  # noqa: E402
from lowrank_blocks.structures import Partition  # noqa: E402

GRIDS = [1, 2, 4, 8, 16]



def loop_surface(W: np.ndarray) -> None:
    """Baseline: a Python loop over blocks, full SVD (with vectors) of each."""
    d = W.shape[0]
    for k in GRIDS:
        b = d // k
        for i in range(k):
            for j in range(k):
                np.linalg.svd(W[i * b : (i + 1) * b, j * b : (j + 1) * b], full_matrices=False)


def peak_memory_ratio(d: int) -> float:
    """Peak memory of creating W and computing its surface, ÷ W.nbytes (W counts as 1)."""
    added = peak_memory(
        "import numpy as np\n"
        "from lowrank_blocks import error_surface\n"
        "error_surface(np.eye(64), grids=[1, 2], families=['grid'])  # imports, thread pools\n",
        f"W = np.random.default_rng(0).standard_normal(({d}, {d}))\n"
        f"error_surface(W, grids={GRIDS}, families=['grid'])\n",
    )
    return added / (d * d * 8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    from sklearn.utils.extmath import randomized_svd

    rows = []
    for d in args.sizes:
        W = np.random.default_rng(0).standard_normal((d, d))
        exact_kw = dict(grids=GRIDS, families=["grid"])
        t_svd = median_time(lambda: np.linalg.svd(W, compute_uv=False), args.repeat)
        t_exact = median_time(lambda: error_surface(W, **exact_kw), args.repeat)
        t_default = median_time(lambda: error_surface(W), args.repeat)
        t_loop = median_time(lambda: loop_surface(W), max(1, args.repeat - 2))
        budget = d * d // 10
        exact = error_surface(W, max_params=budget, **exact_kw).to_frame()
        randomized = {}
        for name, opts in (("default", dict(n_iter=4, oversampling=10)),
                           ("accurate", dict(n_iter=8, oversampling=20))):
            rand_kw = dict(grids=GRIDS, families=["grid"], max_params=budget, **opts)
            t_rand = median_time(
                lambda: error_surface(W, method="randomized", random_state=0, **rand_kw),
                args.repeat,
            )
            rand = error_surface(W, method="randomized", random_state=0, **rand_kw).to_frame()
            merged = exact.merge(rand, on=["p", "q", "rank"], suffixes=("_e", "_r"))
            randomized[name] = (t_rand, float((merged["error_r"] - merged["error_e"]).abs().max()))
        t_rand, max_diff = randomized["default"]

        # Batched randomized SVD of all blocks vs scikit-learn looped, K = 16 and K = 4.
        batch = {}
        for k in (4, 16):
            part = Partition((d, d), (k, k))
            blocks = [(i, j) for i in range(k) for j in range(k)]
            stack = stack_blocks(W, part, blocks, np)
            rank = max(1, budget // (2 * d * k))  # uniform rank at 10 % of dense
            opts = dict(oversampling=10, n_iter=4)
            t_batched = median_time(
                lambda: randomized_svd_stack(stack, rank, np, random_state=0, **opts), args.repeat
            )
            t_sk = median_time(
                lambda: [
                    randomized_svd(b, rank, n_oversamples=10, n_iter=4, random_state=0)
                    for b in stack
                ],
                args.repeat,
            )
            batch[k] = (rank, t_batched / t_sk)
        mem = peak_memory_ratio(d)
        rows.append(
            {
                "d": d,
                "svd_s": t_svd,
                "exact_surface_ratio": t_exact / t_svd,
                "default_surface_ratio": t_default / t_svd,
                "loop_surface_ratio": t_loop / t_svd,
                "randomized_over_exact": t_rand / t_exact,
                "randomized_max_abs_error_diff": max_diff,
                "randomized_accurate_over_exact": randomized["accurate"][0] / t_exact,
                "randomized_accurate_max_abs_error_diff": randomized["accurate"][1],
                "batched_rsvd_over_sklearn_K4": batch[4][1],
                "batched_rsvd_over_sklearn_K16": batch[16][1],
                "rsvd_ranks": {k: v[0] for k, v in batch.items()},
                "peak_memory_over_matrix": mem,
            }
        )
        r = rows[-1]
        print(
            f"d={d}: one svdvals {r['svd_s']:.2f} s | exact surface ÷ svd {r['exact_surface_ratio']:.2f}"
            f" (default, three families {r['default_surface_ratio']:.2f})"
            f" (loop of full SVDs {r['loop_surface_ratio']:.2f}) | randomized ÷ exact "
            f"{r['randomized_over_exact']:.3f}, max |Δerror| {max_diff:.1e} (n_iter=8, p=20: "
            f"{r['randomized_accurate_over_exact']:.3f}, "
            f"{r['randomized_accurate_max_abs_error_diff']:.1e}) | batched rSVD ÷ "
            f"sklearn loop K=4 {batch[4][1]:.2f}, K=16 {batch[16][1]:.2f} | peak memory ÷ "
            f"matrix {mem:.2f}",
            flush=True,
        )
    print()
    print("| d | exact surface ÷ svdvals (grids / default, three families) | "
          "loop of full SVDs ÷ svdvals | randomized ÷ exact "
          "(default / n_iter=8, p=20) | max abs error diff (default / n_iter=8, p=20) | "
          "batched rSVD ÷ sklearn loop (K=4 / K=16) | peak memory ÷ matrix |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['d']} | {r['exact_surface_ratio']:.2f} / {r['default_surface_ratio']:.2f} | "
            f"{r['loop_surface_ratio']:.2f} | "
            f"{r['randomized_over_exact']:.3f} / {r['randomized_accurate_over_exact']:.3f} | "
            f"{r['randomized_max_abs_error_diff']:.1e} / "
            f"{r['randomized_accurate_max_abs_error_diff']:.1e} | "
            f"{r['batched_rsvd_over_sklearn_K4']:.2f} / {r['batched_rsvd_over_sklearn_K16']:.2f} | "
            f"{r['peak_memory_over_matrix']:.2f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
