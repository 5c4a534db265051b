"""``lowrank-blocks scan``: every matrix of a model, adapter or update, one row each."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

from . import _common as c

CSV_COLUMNS_FIRST = ["name", "rows", "cols", "budget", "error_global", "error_diagonal",
                     "error_grid", "best"]


def register(sub: Any) -> None:
    parser = c.add_command(
        sub, "scan",
        help="every matrix of a model, a PEFT adapter or a fine-tuning update, one row each",
        description=(
            "For every 2-D weight of SOURCE (a .safetensors checkpoint, a sharded checkpoint or "
            "its directory, a model directory, a .npz file, or a PEFT adapter directory, whose "
            "updates ΔW = scaling · B A are analysed), read one at a time: at one budget per "
            "matrix, the error of each structure with one rank for every block (best grid) and "
            "with exactly optimal per-block ranks (rank integers charged), the winner, and the "
            "parameters each structure needs to reach the target errors. With --base, the "
            "update SOURCE − BASE is analysed instead. Biases, buffers and tensors too small "
            "for a block structure are listed as skipped."
        ),
        epilog=(
            "examples:\n"
            "  lowrank-blocks scan model.safetensors --lora-rank 8\n"
            "  lowrank-blocks scan adapter_dir/                       # a PEFT adapter's ΔW\n"
            "  lowrank-blocks scan finetuned/ --base base/ --budget-fraction 0.05\n"
            "  lowrank-blocks scan model.safetensors --pattern '*attention*' --csv > scan.csv\n"
            "  lowrank-blocks scan model.safetensors --out results/scan   # CSV, JSON, figures\n"
            "  lowrank-blocks scan model.safetensors --workers 4     # 4 local Dask processes\n"
            "  lowrank-blocks scan model.safetensors --scheduler tcp://10.0.0.5:8786\n"
            "\n"
            "--csv prints the per-matrix table (columns name, rows, cols, budget,\n"
            "error_global, error_diagonal, error_grid, best, ... at full precision);\n"
            '--json prints {"matrices": [...], "summary": [...], "skipped": [...]}.'
        ),
    )
    parser.add_argument(
        "file", metavar="SOURCE",
        help="checkpoint file or directory, PEFT adapter directory, .npz, or any matrix file",
    )
    parser.add_argument(
        "--base", metavar="BASE", default=None,
        help="base checkpoint: analyse the update SOURCE − BASE, tensor by tensor",
    )
    parser.add_argument(
        "--pattern", metavar="GLOB", default=None,
        help="only matrices whose name matches GLOB, case-sensitive (default: all)",
    )
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument(
        "--budget-fraction", metavar="F", type=c.fraction("budget-fraction"), default=None,
        help="budget of each matrix as a fraction of its m*n entries (default: 0.05)",
    )
    budget.add_argument(
        "--lora-rank", metavar="R", type=c.positive_int("lora-rank"), default=None,
        help="budget of each matrix: the parameters of a LoRA of rank R on it, R (m + n)",
    )
    budget.add_argument(
        "--budget", metavar="N", type=c.positive_int("budget"), default=None,
        help="budget of each matrix in parameters",
    )
    parser.add_argument(
        "--targets", metavar="LIST", default="0.5,0.2",
        help="target relative errors whose required parameters are reported (default: 0.5,0.2)",
    )
    parser.add_argument(
        "--reshape-conv", action="store_true",
        help="analyse 4-D convolution kernels as out × (in·kh·kw) matrices (default: skip them)",
    )
    c.add_families(parser)
    c.add_cluster(parser)
    c.add_out(parser, "scan.csv, scan.json, scan_summary.csv, scan_skipped.csv and figures",
              default=None)
    c.add_progress(parser)
    c.add_format(parser)
    parser.set_defaults(handler=run)


def _targets(text: str) -> list[float]:
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise c.UsageError(
            f"--targets must be numbers in (0, 1) separated by commas, got {text!r}"
        ) from None
    if not values or any(not 0.0 < v < 1.0 for v in values):
        raise c.UsageError(f"--targets must be numbers in (0, 1) separated by commas, got {text!r}")
    return values


def _source(args: argparse.Namespace) -> Any:
    """What analyze_layers reads: a model source, or the matrices of any other file format."""
    path = Path(args.file)
    model_like = path.is_dir() or path.suffix.lower() in (".safetensors", ".npz", ".json")
    if model_like or args.base is not None:
        from ..models import open_model

        return open_model(args.file, base=args.base, pattern=args.pattern,
                          reshape_conv=args.reshape_conv)
    from ..io import read_matrices

    return read_matrices(args.file, pattern=args.pattern or "*")


def run(args: argparse.Namespace) -> int:
    from ..layers import analyze_layers

    targets = _targets(args.targets)
    source = _source(args)
    if len(source) == 0:
        skipped = getattr(source, "skipped", [])
        reasons = "; ".join(f"{s.name}: {s.reason}" for s in skipped[:3])
        more = f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
        raise c.UsageError(
            f"{args.file!r} has no 2-D matrix to analyse"
            + (f" matching --pattern {args.pattern!r}" if args.pattern else "")
            + (f"; skipped: {reasons}{more}" if skipped else "")
        )
    budget = {"budget_fraction": args.budget_fraction, "lora_rank": args.lora_rank,
              "budget": args.budget}
    if all(v is None for v in budget.values()):
        budget["budget_fraction"] = 0.05
    analysis = analyze_layers(
        source, families=args.families, targets=targets, progress=c.show_progress(args),
        client=c.cluster(args), **budget,
    )
    frame = analysis.to_frame()
    first = [col for col in CSV_COLUMNS_FIRST if col in frame.columns]
    frame = frame[first + [col for col in frame.columns if col not in first]]
    summary = analysis.summary().reset_index()
    skipped = analysis.skipped_frame()
    written: list[Path] = []
    if args.out is not None:
        out = c.out_dir(args)
        written = [out / "scan.csv", out / "scan_summary.csv", out / "scan_skipped.csv",
                   out / "scan.json"]
        c.write_csv(frame, written[0])
        c.write_csv(summary, written[1])
        c.write_csv(skipped, written[2])
        written[3].write_text(c.json_text({"matrices": c.records(frame),
                                           "summary": c.records(summary),
                                           "skipped": c.records(skipped)}))
        if len(frame):
            plt, plotting = c.pyplot()
            ax = plotting.plot_layer_heatmap(analysis)
            written.append(c.save(plt, ax.figure, out / "scan_heatmap.png"))
            ax = plotting.plot_layer_bars(analysis)
            written.append(c.save(plt, ax.figure, out / "scan_bars.png"))
    if args.csv:
        c.write_csv(frame)
    elif args.json:
        c.print_json({"matrices": c.records(frame), "summary": c.records(summary),
                      "skipped": c.records(skipped)})
    else:
        _print_text(args, analysis, frame, summary, skipped)
    c.wrote(args, written)
    return 0


def _print_text(args: argparse.Namespace, analysis: Any, frame: pd.DataFrame,
                summary: pd.DataFrame, skipped: pd.DataFrame) -> None:
    families = [cls.family for cls in analysis.families]
    shown = pd.DataFrame({
        "name": frame["name"],
        "shape": [f"{r} × {k}" for r, k in zip(frame["rows"], frame["cols"])],
        "budget": frame["budget"],
        **{f"{fam} (uniform)": frame[f"error_{fam}"] for fam in families},
        **{f"{fam} (optimal)": frame[f"error_{fam}_optimal"] for fam in families},
        "best": frame["best"],
    })
    kind = analysis.source
    print(f"{args.file}{' − ' + args.base if args.base else ''}: {len(frame)} matrices "
          f"({kind}); {len(skipped)} tensors skipped")
    print(f"budget per matrix: {analysis.budget.describe()}; relative errors of the best grid "
          f"with one rank for every block (uniform) and with exactly optimal per-block ranks, "
          f"rank integers charged (optimal)")
    print()
    print(c.format_table(shown))
    if len(skipped):
        reasons = skipped.groupby("reason")["name"].count()
        print()
        print("skipped: " + "; ".join(f"{n} {reason}" for reason, n in reasons.items()))
    print()
    print("summary (weighted: by the matrices' sizes):")
    cols = ["family", "paper_name", "wins", "mean_error", "weighted_error",
            "mean_error_optimal", "weighted_error_optimal"]
    print(c.format_table(summary[[col for col in cols if col in summary.columns]]))
    if len(frame) and frame["best_error"].astype(float).isna().any():
        print("(— : the budget is below every configuration of that matrix)")
