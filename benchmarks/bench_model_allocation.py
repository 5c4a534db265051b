"""Cost of the model-wide allocation next to the spectra it works from.

Run ``python benchmarks/bench_model_allocation.py [--hidden 256] [--repeat 5]``.  200 float32
matrices with decaying spectra, as medians of ``--repeat`` runs:

* ``transformer``: 25 layers of 8 matrices (four ``d × d`` attention matrices, ``4d × d`` up and
  gate, ``d × 4d`` down, one more ``d × d``), three distinct costs ``m + n``;
* ``random shapes``: 200 matrices of random sides in ``[d/2, 2d]``, multiples of 64 (many
  distinct costs).

For each: the spectra of every matrix (:func:`~lowrank_blocks.model_budget.model_spectra`, one
``svdvals`` per matrix), then the exact allocation (:func:`allocate_model`, global structure)
at a budget of 10 % of the matrices' parameters, the algorithm that solved it (``core``: the
Lagrangian core of :mod:`lowrank_blocks.allocation`), and its ratio to the spectra (target
< 0.01).
The structure choice over ``global, grid:2, grid:4`` (spectra of three partitions; exact DP or
Lagrangian bound) is timed the same way, without a target.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import median_time  # noqa: E402

from lowrank_blocks.allocation import solve_allocation  # noqa: E402
from lowrank_blocks.model_budget import allocate_model, model_spectra  # noqa: E402


def matrices(kind: str, d: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    if kind == "transformer":
        shapes = [(d, d)] * 4 + [(4 * d, d), (4 * d, d), (d, 4 * d), (d, d)]
        shapes = shapes * 25
    else:
        sides = np.arange(d // 2, 2 * d + 1, 64)  # multiples of 64, as in real models
        shapes = [(int(rng.choice(sides)), int(rng.choice(sides))) for _ in range(200)]
    out = {}
    for k, (m, n) in enumerate(shapes):
        r = min(m, n)
        decay = rng.uniform(0.90, 0.995)
        U = rng.standard_normal((m, r)).astype(np.float32)
        V = rng.standard_normal((r, n)).astype(np.float32)
        out[f"m{k}.weight"] = (U * (decay ** np.arange(r)).astype(np.float32)) @ V
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"200 matrices, budget 10 % of their parameters, medians of {args.repeat} runs")
    for kind in ("transformer", "random shapes"):
        mats = matrices(kind, args.hidden, rng)
        budget = sum(W.size for W in mats.values()) // 10
        t0 = time.perf_counter()
        spectra = model_spectra(mats, progress=False)
        t_spec = time.perf_counter() - t0
        t_spec = min(t_spec, median_time(lambda: model_spectra(mats, progress=False), 1))
        t_alloc = median_time(lambda: allocate_model(spectra, budget, progress=False),
                              args.repeat)
        alloc = allocate_model(spectra, budget, progress=False)
        costs = len({ms.cost for ms in spectra})
        algorithm = solve_allocation([ms.cost for ms in spectra],
                                     [ms.sq / ms.energy for ms in spectra], budget).algorithm
        print(f"{kind}: {costs} distinct costs; spectra {t_spec:.3f} s, allocation "
              f"{t_alloc * 1e3:.2f} ms ({algorithm}): {t_alloc / t_spec:.4f}× the spectra "
              f"(target < 0.01); "
              f"total relative error {alloc.total_error:.3f} vs uniform rank "
              f"{alloc.uniform_rank} {alloc.uniform_error:.3f}")
        labels = "global,grid:2,grid:4"
        t0 = time.perf_counter()
        spectra3 = model_spectra(mats, labels, progress=False)
        t_spec3 = time.perf_counter() - t0
        t_choice = median_time(lambda: allocate_model(spectra3, budget, structures=labels,
                                                      progress=False), max(1, args.repeat // 2))
        choice = allocate_model(spectra3, budget, structures=labels, progress=False)
        print(f"  structures {labels}: spectra {t_spec3:.3f} s, choice {t_choice * 1e3:.1f} ms "
              f"({t_choice / t_spec3:.4f}×, {choice.method}, gap {choice.gap:.3g}); total error "
              f"{choice.total_error:.3f}")


if __name__ == "__main__":
    main()
