"""``lowrank-blocks allocate``: one budget for a whole model, the rank (and structure) of every
matrix, and a PEFT configuration."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd

from . import _common as c


def register(sub: Any) -> None:
    parser = c.add_command(
        sub, "allocate",
        help="one parameter budget for a whole model: optimal ranks per matrix, PEFT config",
        description=(
            "Choose the rank of every matrix of SOURCE (a checkpoint, a model directory, a PEFT "
            "adapter's updates, or with --base the update SOURCE − BASE) so that the total error "
            "is smallest within one total budget: exactly (a concave multiple-choice knapsack, a "
            "rank-one term of an m × n matrix costing m + n). With several --structures each "
            "matrix also chooses its structure (exact DP where small enough, else a Lagrangian "
            "bound with the optimality gap printed). Prints the per-matrix table and the total "
            "error against one uniform rank on every matrix at the same total."
        ),
        epilog=(
            "examples:\n"
            "  lowrank-blocks allocate model.safetensors --lora-rank 8 --peft-config lora.json\n"
            "  lowrank-blocks allocate finetuned/ --base base/ --budget 200000\n"
            "  lowrank-blocks allocate model/ --budget 1000000 --structures global,grid:2,grid:4\n"
            "\n"
            "The total error is the sum over matrices of the squared relative error\n"
            "||W - W_approx||² / ||W||² (--objective relative, every matrix counts the same)\n"
            "or of the squared error (--objective absolute)."
        ),
    )
    parser.add_argument("file", metavar="SOURCE", help="checkpoint file or directory, PEFT "
                        "adapter directory, or .npz")
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--budget", metavar="N", type=c.positive_int("budget"),
                        help="total parameters for all the matrices together")
    budget.add_argument("--lora-rank", metavar="R", type=c.positive_int("lora-rank"),
                        help="the total of a LoRA of rank R on every matrix, R Σ (m + n)")
    parser.add_argument("--base", metavar="BASE", default=None,
                        help="base checkpoint: allocate for the update SOURCE − BASE")
    parser.add_argument("--structures", metavar="LIST", default="global",
                        help="structure options per matrix: global, grid:K, diagonal:N, "
                             "comma-separated (default: global)")
    parser.add_argument("--objective", choices=("relative", "absolute"), default="relative",
                        help="sum of squared relative errors (default) or of squared errors")
    parser.add_argument("--pattern", metavar="GLOB", default=None,
                        help="only matrices whose name matches GLOB (default: all)")
    parser.add_argument("--peft-config", metavar="OUT.json", default=None,
                        help="write the LoraConfig keyword arguments (r, lora_alpha, "
                             "rank_pattern, alpha_pattern, target_modules) of the global "
                             "allocation; with grid:K structures also OUT.gralora.json, the "
                             "GraLoRA configuration with the best k at the budget")
    c.add_cluster(parser)
    c.add_progress(parser)
    c.add_format(parser)
    parser.set_defaults(handler=run)


def print_allocation(alloc: Any, header: str) -> None:
    """The per-matrix table and the totals against the uniform rank (shared with extract)."""
    frame = alloc.to_frame()
    shown = pd.DataFrame({
        "name": frame["name"],
        "shape": [f"{r} × {k}" for r, k in zip(frame["rows"], frame["cols"])],
        "structure": frame["structure"],
        "rank": frame["rank"],
        "params": frame["n_params"],
        "error": frame["error"],
        "uniform rank": frame["uniform_rank"],
        "uniform error": frame["uniform_error"],
    })
    print(header)
    print()
    print(c.format_table(shown))
    print()
    print(alloc.describe())


def run(args: argparse.Namespace) -> int:
    from ..model_budget import _check_structures, allocate_model, model_spectra
    from ..peft import gralora_choice, lora_config

    labels = _check_structures(args.structures)
    spectra = model_spectra(args.file, ("global",) + labels, base=args.base,
                            pattern=args.pattern, client=c.cluster(args),
                            progress=c.show_progress(args))
    alloc = allocate_model(spectra, args.budget, lora_rank=args.lora_rank, structures=labels,
                           objective=args.objective, progress=False)
    frame = alloc.to_frame()
    summary = alloc.summary()
    written: list[Path] = []
    gralora = None
    ks = sorted({int(lab.split(":")[1]) for lab in labels if lab.startswith("grid:")})
    if ks:
        try:
            gralora = gralora_choice(spectra, alloc.budget, ks=[1, *ks], objective=args.objective,
                                     progress=False)
        except ValueError as exc:
            gralora = str(exc)
    if args.peft_config is not None:
        out = Path(args.peft_config)
        out.parent.mkdir(parents=True, exist_ok=True)
        global_alloc = alloc if labels == ("global",) else allocate_model(
            spectra, alloc.budget, objective=args.objective, progress=False)
        out.write_text(json.dumps(lora_config(global_alloc), indent=2) + "\n")
        written.append(out)
        if ks and not isinstance(gralora, str) and gralora is not None:
            g_out = out.with_suffix(".gralora.json")
            g_out.write_text(json.dumps(gralora.config(), indent=2) + "\n")
            written.append(g_out)
    if args.csv:
        c.write_csv(frame)
    elif args.json:
        c.print_json({"matrices": c.records(frame), "summary": c.records(summary),
                      "method": alloc.method, "gap": alloc.gap})
    else:
        source = args.file + (f" − {args.base}" if args.base else "")
        print_allocation(alloc, f"{source}: {len(frame)} matrices, one budget of "
                                f"{alloc.budget:,} parameters, objective {args.objective}")
        if ks:
            print()
            if isinstance(gralora, str):
                print(f"GraLoRA: {gralora}")
            else:
                print(f"GraLoRA (one r and k for every module): best k = {gralora.k}, r = "
                      f"{gralora.r}")
                print(c.format_table(gralora.table))
    c.wrote(args, written)
    return 0
