"""Speed and memory of error surfaces, as ratios against baselines measured in the same run.

Run ``make bench`` (or ``python benchmarks/bench_surfaces.py [--sizes 1024 2048] [--repeat 3]``).
For float64 Gaussian matrices of each size it prints, the new default (``method='auto'``) beside
the old one (``method='exact'``):

1. the surface over block grids K ∈ {1, 2, 4, 8, 16}, all ranks, and the default surface with
   all three families (diagonal and global read from the grids' spectra), ÷ one
   ``numpy.linalg.svd(W, compute_uv=False)``: exact (``svdvals`` of every block; the floor for
   that is about 1.94, the blocks' SVDs cost ``d³ (1 + 1/2 + 1/4 + …)``) and auto (certified
   Gram eigenvalues), with the largest difference between the two surfaces' errors, the
   largest error bound auto states, and how many blocks fell back to the SVD;
2. a Python loop over blocks with full SVDs ÷ ``svdvals`` (the naive baseline);
3. randomized surface (block Krylov) for budgets up to 10 % of the dense parameter count ÷ the
   exact surface and ÷ the auto one, with the largest error difference, with the defaults and
   with ``n_iter=8``;
4. batched randomized SVD (subspace iteration) of all blocks ÷ scikit-learn
   ``randomized_svd`` looped over the blocks, same rank, oversampling and power iterations;
5. peak memory of the exact and auto surfaces ÷ the matrix's own size: the peak resident set
   size of a fresh process, sampled every millisecond, above its level before the matrix is
   created (so the matrix itself counts as 1).

Wall-clock ratios are medians over ``--repeat`` *pairs* (the baseline and the candidate timed
back to back, so both see the same load on a shared machine).  Because a loaded machine can
slow multithreaded LAPACK calls (the ``svdvals`` baseline) far more than single-threaded ones,
the same ratios are also printed as **CPU work**: every computation on one thread, timed by
``time.process_time`` (medians of three runs); those are what the code does, whatever else the
machine runs.
``--json`` writes all the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import scipy.linalg  # noqa: E402,F401  (its BLAS loaded now, so thread limits reach it)
from _timing import cpu_work, median_time, peak_memory  # noqa: E402

from lowrank_blocks import error_surface  # noqa: E402
from lowrank_blocks.linalg import randomized_svd_stack, stack_blocks  # noqa: E402
from lowrank_blocks.spectra import PATH_FALLBACK, prepare  # noqa: E402
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


def peak_memory_ratio(d: int, method: str) -> float:
    """Peak memory of creating W and computing its surface, ÷ W.nbytes (W counts as 1)."""
    added = peak_memory(
        "import numpy as np\n"
        "from lowrank_blocks import error_surface\n"
        "error_surface(np.eye(128), grids=[1, 2], families=['grid'])  # imports, thread pools\n",
        f"W = np.random.default_rng(0).standard_normal(({d}, {d}))\n"
        f"error_surface(W, grids={GRIDS}, families=['grid'], method={method!r})\n",
    )
    return added / (d * d * 8)


def median_cpu_work(fn, repeat: int) -> float:
    """Median CPU work of ``repeat`` runs (one run can carry a page-fault storm after another
    computation freed its memory)."""
    import statistics

    return statistics.median(cpu_work(fn) for _ in range(repeat))


def paired_ratio(fn, base, repeat: int) -> tuple[float, float]:
    """Median over ``repeat`` back-to-back pairs of ``time(fn) / time(base)``, and the median
    time of ``fn``."""
    import statistics
    import time

    ratios, times = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        base()
        t1 = time.perf_counter()
        fn()
        t2 = time.perf_counter()
        ratios.append((t2 - t1) / (t1 - t0))
        times.append(t2 - t1)
    return statistics.median(ratios), statistics.median(times)


def auto_diagnostics(W: np.ndarray) -> tuple[float, int, int]:
    """Largest stated error bound of the auto surface, blocks that fell back, blocks."""
    prep = prepare(W)
    worst, fallback, blocks = 0.0, 0, 0
    for k in GRIDS:
        spec = prep.spectra((k, k), method="auto")
        worst = max(worst, float(np.max(spec.uniform_error_bounds())))
        fallback += int(np.sum(spec.paths == PATH_FALLBACK))
        blocks += len(spec.blocks)
    return worst, fallback, blocks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    from sklearn.utils.extmath import randomized_svd

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; numpy {np.__version__}; "
          f"load average {os.getloadavg()[0]:.1f}")
    rows = []
    for d in args.sizes:
        W = np.random.default_rng(0).standard_normal((d, d))
        grid_kw = dict(grids=GRIDS, families=["grid"])
        budget = d * d // 10
        rand_kw = dict(grids=GRIDS, families=["grid"], max_params=budget, random_state=0)

        def svd() -> None:
            np.linalg.svd(W, compute_uv=False)

        runs = {
            "exact": lambda: error_surface(W, method="exact", **grid_kw),
            "auto": lambda: error_surface(W, method="auto", **grid_kw),
            "exact_default": lambda: error_surface(W, method="exact"),
            "auto_default": lambda: error_surface(W, method="auto"),
            "randomized": lambda: error_surface(W, method="randomized", **rand_kw),
            "randomized_n_iter8": lambda: error_surface(W, method="randomized", n_iter=8,
                                                        **rand_kw),
        }
        svd()
        wall = {name: paired_ratio(fn, svd, args.repeat) for name, fn in runs.items()}
        t_svd = median_time(svd, args.repeat)
        cpu_svd = median_cpu_work(svd, 3)
        cpu = {name: median_cpu_work(fn, 3) / cpu_svd for name, fn in runs.items()}
        t_loop = median_time(lambda: loop_surface(W), max(1, args.repeat - 2))

        exact_all = error_surface(W, method="exact").to_frame()
        auto_all = error_surface(W, method="auto").to_frame()
        auto_diff = float((auto_all["error"] - exact_all["error"]).abs().max())
        auto_bound, n_fallback, n_blocks = auto_diagnostics(W)
        exact = error_surface(W, max_params=budget, method="exact", **grid_kw).to_frame()
        rand_diff = {}
        for name, n_iter in (("randomized", 4), ("randomized_n_iter8", 8)):
            rand = error_surface(W, method="randomized", n_iter=n_iter, **rand_kw).to_frame()
            merged = exact.merge(rand, on=["p", "q", "rank"], suffixes=("_e", "_r"))
            assert len(merged) == len(exact)
            diff = merged["error_r"] - merged["error_e"]
            assert (diff >= -1e-12).all(), "a randomized error below the exact one"
            rand_diff[name] = float(diff.max())

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
        mem = {m: peak_memory_ratio(d, m) for m in ("exact", "auto")}
        r = {
            "d": d,
            "svd_s": t_svd,
            "wall_over_svd": {name: v[0] for name, v in wall.items()},
            "cpu_over_svd": cpu,
            "auto_max_abs_error_diff": auto_diff,
            "auto_max_stated_bound": auto_bound,
            "auto_fallback_blocks": n_fallback,
            "auto_blocks": n_blocks,
            "loop_surface_ratio": t_loop / t_svd,
            "randomized_max_abs_error_diff": rand_diff["randomized"],
            "randomized_n_iter8_max_abs_error_diff": rand_diff["randomized_n_iter8"],
            "batched_rsvd_over_sklearn_K4": batch[4][1],
            "batched_rsvd_over_sklearn_K16": batch[16][1],
            "rsvd_ranks": {k: v[0] for k, v in batch.items()},
            "peak_memory_over_matrix_exact": mem["exact"],
            "peak_memory_over_matrix_auto": mem["auto"],
        }
        rows.append(r)
        w, c = r["wall_over_svd"], r["cpu_over_svd"]
        print(
            f"d={d}: one svdvals {t_svd:.2f} s | surface ÷ svdvals, exact → auto (wall; CPU "
            f"work): grids {w['exact']:.2f} → {w['auto']:.2f} ({c['exact']:.2f} → "
            f"{c['auto']:.2f}), default three families {w['exact_default']:.2f} → "
            f"{w['auto_default']:.2f} ({c['exact_default']:.2f} → {c['auto_default']:.2f}) | "
            f"auto vs exact: max |Δerror| {auto_diff:.1e}, largest stated bound "
            f"{auto_bound:.1e}, {n_fallback} of {n_blocks} blocks fell back | loop of full SVDs "
            f"{r['loop_surface_ratio']:.2f} | randomized ÷ exact {w['randomized'] / w['exact']:.3f}"
            f" (CPU {c['randomized'] / c['exact']:.3f}), ÷ auto "
            f"{w['randomized'] / w['auto']:.3f} (CPU {c['randomized'] / c['auto']:.3f}), max "
            f"|Δerror| {rand_diff['randomized']:.1e} (n_iter=8: "
            f"{w['randomized_n_iter8'] / w['exact']:.3f}, "
            f"{rand_diff['randomized_n_iter8']:.1e}) | batched rSVD ÷ sklearn loop K=4 "
            f"{batch[4][1]:.2f}, K=16 {batch[16][1]:.2f} | peak memory ÷ matrix, exact "
            f"{mem['exact']:.2f}, auto {mem['auto']:.2f}",
            flush=True,
        )
    print()
    print("| d | surface ÷ svdvals, grids K ≤ 16: exact → auto (wall / CPU work) | default "
          "three families: exact → auto (wall / CPU work) | auto: max abs error diff / largest "
          "stated bound / fallbacks | loop of full SVDs ÷ svdvals | randomized ÷ exact, ÷ auto "
          "(wall / CPU work) | randomized max abs error diff (n_iter 4 / 8) | batched rSVD ÷ "
          "sklearn loop (K=4 / K=16) | peak memory ÷ matrix (exact / auto) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        w, c = r["wall_over_svd"], r["cpu_over_svd"]
        print(
            f"| {r['d']} | {w['exact']:.2f} → {w['auto']:.2f} / {c['exact']:.2f} → "
            f"{c['auto']:.2f} | {w['exact_default']:.2f} → {w['auto_default']:.2f} / "
            f"{c['exact_default']:.2f} → {c['auto_default']:.2f} | "
            f"{r['auto_max_abs_error_diff']:.1e} / {r['auto_max_stated_bound']:.1e} / "
            f"{r['auto_fallback_blocks']} of {r['auto_blocks']} | "
            f"{r['loop_surface_ratio']:.2f} | "
            f"{w['randomized'] / w['exact']:.3f}, {w['randomized'] / w['auto']:.3f} / "
            f"{c['randomized'] / c['exact']:.3f}, {c['randomized'] / c['auto']:.3f} | "
            f"{r['randomized_max_abs_error_diff']:.1e} / "
            f"{r['randomized_n_iter8_max_abs_error_diff']:.1e} | "
            f"{r['batched_rsvd_over_sklearn_K4']:.2f} / {r['batched_rsvd_over_sklearn_K16']:.2f} | "
            f"{r['peak_memory_over_matrix_exact']:.2f} / {r['peak_memory_over_matrix_auto']:.2f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
