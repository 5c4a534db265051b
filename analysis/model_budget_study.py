"""One budget for a whole model: the optimal allocation against the uniform rank and PEFT's
energy threshold, at the same total number of parameters.

Two real sources, both offline:

* the pretrained all-MiniLM-L6-v2 weights (``lowrank_blocks.datasets.minilm_checkpoint()``,
  40 matrices), at the totals of a LoRA of rank 4, 8 and 16 on every matrix;
* the full fine-tuning update of the Fig. 2 MLP (``analysis/fig2``): ``ΔW1`` (64 × 784) and
  ``ΔW2`` (5 × 64), at the totals of ranks 1, 2 and 4.

Three choices of per-matrix ranks, compared by the total error (the sum of the matrices'
squared relative errors ``‖W − Ŵ‖² / ‖W‖²``):

* **optimal**: :func:`lowrank_blocks.model_budget.allocate_model` (exact);
* **uniform**: the largest rank on every matrix within the total;
* **energy threshold**: PEFT's ``convert_to_lora(rank=t)`` rule (per matrix the smallest rank
  whose leading ``σ²`` reach the fraction ``t`` of its energy; ``tests/test_peft.py`` checks the
  rule against PEFT itself), with ``t`` tuned by bisection to the largest value within the
  total; the optimal allocation is then also evaluated at the threshold's own total.

Run ``python -m analysis.model_budget_study [--out results]``; writes
``model_budget_study.md`` and ``model_budget_study.csv``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.model_study import fig2_updates
from lowrank_blocks.datasets import minilm_checkpoint
from lowrank_blocks.model_budget import MatrixSpectra, allocate_model, model_spectra


def threshold_ranks(spectra: list[MatrixSpectra], t: float) -> list[int]:
    """PEFT's ``_find_cutoff_index``: the smallest ``k`` with ``Σ_{i<k} σ_i² >= t Σ σ²``."""
    out = []
    for ms in spectra:
        cs = np.cumsum(ms.sq)
        k = int(np.searchsorted(cs, t * cs[-1])) + 1
        out.append(min(k, len(ms.sq)))
    return out


def total_error(spectra: list[MatrixSpectra], ranks: list[int]) -> float:
    return float(sum(ms.sq[r:].sum() / ms.energy for ms, r in zip(spectra, ranks) if ms.energy))


def tuned_threshold(spectra: list[MatrixSpectra], budget: int) -> tuple[float, list[int]]:
    """The largest threshold whose ranks fit the budget (bisection, 60 steps)."""
    lo, hi = 0.0, 1.0

    def cost(t: float) -> int:
        return sum(r * ms.cost for ms, r in zip(spectra, threshold_ranks(spectra, t)))

    if cost(lo) > budget:
        return 0.0, [0] * len(spectra)
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cost(mid) <= budget else (lo, mid)
    return lo, threshold_ranks(spectra, lo)


def compare(spectra: list[MatrixSpectra], source: str, lora_ranks: list[int]) -> list[dict]:
    rows = []
    unit = sum(ms.cost for ms in spectra)
    for r in lora_ranks:
        budget = r * unit
        alloc = allocate_model(spectra, budget, progress=False)
        t, t_ranks = tuned_threshold(spectra, budget)
        t_used = sum(k * ms.cost for ms, k in zip(spectra, t_ranks))
        at_t = allocate_model(spectra, t_used, progress=False)
        rows.append({
            "source": source, "matrices": len(spectra), "lora_rank_total": r, "budget": budget,
            "optimal_params": alloc.n_params, "optimal_error": alloc.total_error,
            "uniform_rank": alloc.uniform_rank, "uniform_params": alloc.uniform_params,
            "uniform_error": alloc.uniform_error, "threshold": t, "threshold_params": t_used,
            "threshold_error": total_error(spectra, t_ranks),
            "optimal_at_threshold_params": at_t.total_error,
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = compare(model_spectra(minilm_checkpoint(), progress=False), "all-MiniLM-L6-v2 weights",
                   [4, 8, 16])
    rows += compare(model_spectra(fig2_updates(), progress=False), "Fig. 2 MLP update ΔW",
                    [1, 2, 4])
    frame = pd.DataFrame(rows)
    frame.to_csv(args.out / "model_budget_study.csv", index=False)
    lines = ["# One budget for a whole model: total error at the same total", "",
             "Total error: the sum of the matrices' squared relative errors.", "",
             "| source | total (LoRA rank r on every matrix) | optimal | uniform (rank) | energy "
             "threshold t (params) | optimal at the threshold's params |",
             "|---|---|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(
            f"| {row['source']} ({row['matrices']} matrices) | r = {row['lora_rank_total']}: "
            f"{row['budget']:,} | {row['optimal_error']:.4f} | {row['uniform_error']:.4f} "
            f"({row['uniform_rank']}) | {row['threshold_error']:.4f} (t = {row['threshold']:.4f},"
            f" {row['threshold_params']:,}) | {row['optimal_at_threshold_params']:.4f} |")
    lines += ["", f"({time.perf_counter() - t0:.1f} s)"]
    (args.out / "model_budget_study.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
