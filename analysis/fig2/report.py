"""Fig. 2, its table, the bridge table and the summary of the paper's claims, written to disk."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from lowrank_blocks import BlockGrid, DiagonalBlocks, Global, Structure
from lowrank_blocks.structures import structure_type

from .mlp import FULL_FINETUNE_PARAMS
from .sweep import (
    METHODS,
    PAPER_FULL_FINETUNE_ACCURACY,
    Results,
    bridge_correlation,
    bridge_orderings,
    settings_dict,
)

__all__ = ["plot_bridge", "plot_fig2", "summary_markdown", "write_results"]

# Colours and markers are the structure classes' own (``cls.color``, ``cls.marker``), as in every
# figure of lowrank_blocks.plotting; a method name is turned into its class with structure_type.
# Where the configuration labels sit next to the points (points), so that they do not overlap.
LABEL_OFFSET: dict[type[Structure], tuple[int, int]] = {
    Global: (7, 5), DiagonalBlocks: (7, 5), BlockGrid: (7, -13),
}

FILES = ("fig2.png", "fig2_table.csv", "fig2_bridge.csv", "fig2_summary.md")


def write_results(results: Results, out: str | Path) -> list[Path]:
    """Write ``fig2.png``, ``fig2_table.csv``, ``fig2_bridge.csv``, ``fig2_summary.md`` and extras.

    Extras: ``fig2_runs.csv`` (every training run), ``fig2_configs.csv`` (every configuration
    at its selected learning rate) and ``fig2_bridge.png``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / name for name in FILES]
    plot_fig2(results, paths[0])
    results.table.to_csv(paths[1], index=False)
    results.bridge.to_csv(paths[2], index=False)
    if len(results.curve):
        results.curve.to_csv(out / "fig2_curve.csv", index=False)
    paths[3].write_text(summary_markdown(results))
    results.runs.to_csv(out / "fig2_runs.csv", index=False)
    results.configs.to_csv(out / "fig2_configs.csv", index=False)
    plot_bridge(results, out / "fig2_bridge.png")
    return [*paths, out / "fig2_runs.csv", out / "fig2_configs.csv", out / "fig2_bridge.png"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_fig2(results: Results, path: str | Path) -> None:
    """Accuracy drop (%) from full fine-tuning against the share of trainable parameters."""
    plt = _pyplot()
    table, full = results.table, results.full
    fig, ax = plt.subplots(figsize=(8.0, 5.2), dpi=150)
    for method in METHODS:
        rows = table[table["method"] == method].sort_values("n_params")
        if rows.empty:
            continue
        cls = structure_type(method)
        ax.errorbar(
            rows["share_percent"],
            rows["drop_mean"],
            yerr=rows["drop_std"],
            color=cls.color,
            marker=cls.marker,
            markersize=6,
            linewidth=1.8,
            capsize=3,
            label=method,
        )
        for r in rows.itertuples():
            ax.annotate(
                r.config,
                (r.share_percent, r.drop_mean),
                textcoords="offset points",
                xytext=LABEL_OFFSET.get(cls, (7, 5)),
                fontsize=7,
                color=cls.color,
            )
    ax.axhline(0.0, color="0.4", linewidth=0.8, linestyle="--")
    ax.set_xscale("log")
    ax.margins(x=0.08)
    ax.set_xlabel("Trainable parameters (% of full fine-tuning's 50,565), log scale")
    ax.set_ylabel("Accuracy drop from full fine-tuning (percentage points)")
    n_seeds = int(table["n_seeds"].max()) if len(table) else 0
    ax.set_title(
        "Adapting a frozen MLP from MNIST digits 0–4 to 5–9\n"
        f"full fine-tuning: {full['test_accuracy_mean']:.2f} ± {full['test_accuracy_std']:.2f}% "
        f"test accuracy (paper: {PAPER_FULL_FINETUNE_ACCURACY}%); "
        f"mean ± std over {n_seeds} seed{'s' if n_seeds != 1 else ''}",
        fontsize=10,
    )
    _share_ticks(ax, table["share_percent"])
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(title="best configuration per budget", fontsize=9, title_fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _share_ticks(ax, shares: pd.Series) -> None:
    """Ticks of a log x axis at the budgets' shares (percent)."""
    ticks = sorted(set(shares.round(3)))
    if ticks:
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:.2g}" for t in ticks])
        ax.minorticks_off()


def plot_bridge(results: Results, path: str | Path) -> None:
    """ΔW of full fine-tuning: best approximation error per budget, and error vs accuracy."""
    plt = _pyplot()
    bridge = results.bridge
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.0, 4.4), dpi=130)
    for method in METHODS:
        rows = bridge[bridge["method"] == method]
        if rows.empty:
            continue
        cls = structure_type(method)
        best = rows.groupby("n_params")["dw_error"].min()
        left.plot(
            100.0 * best.index / FULL_FINETUNE_PARAMS,
            best.values,
            marker=cls.marker,
            color=cls.color,
            label=method,
        )
        right.scatter(
            rows["dw_error"],
            rows["test_accuracy"],
            marker=cls.marker,
            color=cls.color,
            label=method,
        )
    left.set_xscale("log")
    _share_ticks(left, bridge["share_percent"])
    left.set_xlabel("Parameters (% of 50,565), log scale")
    left.set_ylabel("Relative Frobenius error of ΔW (best per budget)")
    left.set_title("Optimal approximation of full fine-tuning's ΔW (64 × 784)", fontsize=10)
    left.grid(True, alpha=0.3)
    left.legend(fontsize=8)
    right.set_xlabel("Relative Frobenius error of ΔW under the configuration")
    right.set_ylabel("Test accuracy of the adapter trained with it (%)")
    rho = bridge_correlation(bridge)
    right.set_title(f"Every configuration of the sweep (Spearman ρ = {rho:.2f})", fontsize=10)
    right.grid(True, alpha=0.3)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --- the summary --------------------------------------------------------------------------------


def _markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def _table_md(table: pd.DataFrame) -> str:
    shown = pd.DataFrame(
        {
            "method": table["method"],
            "configuration": table["config"],
            "params": table["n_params"],
            "share (%)": table["share_percent"].map("{:.2f}".format),
            "lr": table["lr"].map("{:g}".format),
            "val loss": table["val_loss"].map("{:.4f}".format),
            "test acc (%)": [
                f"{m:.2f} ± {s:.2f}"
                for m, s in zip(table["test_accuracy_mean"], table["test_accuracy_std"])
            ],
            "drop (pp)": [
                f"{m:.2f} ± {s:.2f}" for m, s in zip(table["drop_mean"], table["drop_std"])
            ],
        }
    )
    return _markdown(shown)


def _bridge_md(bridge: pd.DataFrame) -> str:
    """Per budget and method: the selected adapter's accuracy and the best ΔW error."""
    rows = []
    for (n_params, method), g in bridge.groupby(["n_params", "method"]):
        sel = g.loc[g["val_loss"].idxmin()]
        best = g.loc[g["dw_error"].idxmin()]
        rows.append(
            {
                "params": n_params,
                "method": method,
                "lowest ΔW error (config)": f"{best['dw_error']:.4f} ({best['config']})",
                "selected adapter (config)": sel["config"],
                "its ΔW error": f"{sel['dw_error']:.4f}",
                "its test acc (%)": f"{sel['test_accuracy']:.2f}",
            }
        )
    frame = pd.DataFrame(rows)
    frame["order"] = frame["method"].map({m: k for k, m in enumerate(METHODS)})
    frame = frame.sort_values(["params", "order"]).drop(columns="order")
    return _markdown(frame)


def summary_markdown(results: Results) -> str:
    """The summary: settings, Fig. 2's table, the claims checked with numbers, the bridge."""
    s = results.settings
    full = results.full
    lines = [
        "# Fig. 2 reproduction: adapting a frozen MLP from MNIST digits 0–4 to 5–9",
        "",
        "Produced by `python -m analysis.fig2` (`make reproduce-fig2`); protocol in "
        "`analysis/fig2/sweep.py`.",
        "",
        f"- Wall time: {results.wall_seconds / 60:.1f} min ({len(results.runs)} training runs).",
        f"- Data (images): {json.dumps(results.data_sizes)}.",
        f"- Pre-trained network: {100 * results.pretrain['pretrain_test_accuracy_0_4']:.2f}% on "
        f"test digits 0–4; {100 * results.pretrain['zero_shot_test_accuracy_5_9']:.2f}% on test "
        "digits 5–9 before adaptation.",
        f"- Learning rates {list(s.learning_rates)}, {s.epochs} epochs of Adam, batch "
        f"{s.batch_size}; selection by validation loss only (learning rate per configuration, "
        "then configuration per method and budget); test set used only for the numbers below.",
        f"- Seeds {list(s.seeds)}: the sweep ran with seed {s.seeds[0]}; the selected points and "
        "full fine-tuning were re-trained with every seed (mean ± sample std).",
        f"- **Full fine-tuning** ({FULL_FINETUNE_PARAMS:,} parameters, lr {full['lr']:g}): "
        f"{full['test_accuracy_mean']:.2f} ± {full['test_accuracy_std']:.2f}% test accuracy "
        f"(paper: {PAPER_FULL_FINETUNE_ACCURACY}%).",
        "",
        "## Claims at a glance",
        "",
        *(f"- \"{c['claim']}\": **{c['verdict']}**" for c in results.claims),
        "",
        "## Fig. 2 table: best configuration per budget (`fig2_table.csv`, `fig2.png`)",
        "",
        "Drop = full fine-tuning's mean test accuracy − the adapter's, in percentage points.",
        "",
        _table_md(results.table),
        "## The paper's claims",
        "",
    ]
    for c in results.claims:
        lines.append(f"### \"{c['claim']}\": **{c['verdict']}**")
        lines.append("")
        lines.extend(f"- {t}" for t in c["comparisons"])  # type: ignore[union-attr]
        lines.append("")
    rho = bridge_correlation(results.bridge)
    lines += [
        "## Bridge: ΔW of full fine-tuning under each structure (`fig2_bridge.csv`)",
        "",
        "ΔW = W1 after full fine-tuning − W1 pre-trained (64 × 784). `dw_error` is the relative "
        "Frobenius error of its optimal approximation (`lowrank_blocks.approximate`) with the "
        "configuration's structure; next to it the test accuracy of the adapter trained with that "
        "configuration (its selected learning rate, first seed).",
        "",
        f"Spearman correlation between ΔW error and adapter test accuracy over all "
        f"{len(results.bridge)} configurations: {rho:.2f}"
        + (" (negative = lower error goes with higher accuracy)." if not math.isnan(rho) else "."),
        "",
        _bridge_md(results.bridge) if len(results.bridge) else "(no configurations)\n",
    ]
    orders = bridge_orderings(results.bridge, results.table) if len(results.bridge) else None
    if orders is not None and len(orders):
        lines += [
            "Does the matrix analysis of ΔW predict the ranking of the trained adapters at "
            f"each budget? Full order agrees at {int(orders['agree'].sum())} of {len(orders)} "
            f"budgets, the best method at {int(orders['best_agree'].sum())} of {len(orders)}. "
            "(ΔW of full fine-tuning is one solution among many: an adapter need not approximate "
            "it to reach the same accuracy, so this ordering is a prediction to test, not a "
            "bound.)",
            "",
            _markdown(orders),
        ]
    if len(results.curve):
        c = results.curve
        wide = c.pivot_table(index="budget", columns=["paper_name", "allocation"], values="error")
        wide.columns = [f"{m} ({a})" for m, a in wide.columns]
        lines += [
            "### ΔW at the sweep's budgets with the library's `error_vs_budget` "
            "(`fig2_curve.csv`)",
            "",
            "Best grid per family (K, N ∈ {2, 4, 8, 16}), one rank per block (`uniform`) or "
            "per-block ranks chosen optimally (`optimal`, the per-block rank integers charged "
            "to the budget): how well each structure *could* represent the full fine-tuning "
            "update at that budget.",
            "",
            wide.round(4).reset_index().to_markdown(index=False),
            "",
        ]
    if results.left_out:
        lines += [
            "## Configurations left out (block rank reaches the block size)",
            "",
            *(f"- {name}: {why}" for name, why in results.left_out),
            "",
        ]
    lines += [
        "## Settings",
        "",
        "```json",
        json.dumps(settings_dict(s), indent=1, default=str),
        "```",
        "",
    ]
    return "\n".join(lines)
