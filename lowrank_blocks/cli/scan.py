"""``lowrank-blocks scan``: every weight matrix of a checkpoint, one row each."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

import pandas as pd

from ..search import error_vs_budget
from ..spectra import prepare
from ..structures import Structure
from . import _common as c


def register(sub: Any) -> None:
    parser = c.add_command(
        sub, "scan",
        help="all weight matrices of a checkpoint, one row each",
        description=(
            "For every 2-D weight in CHECKPOINT (1-D tensors such as biases are skipped), the "
            "best error of each structure with one rank for every block and at most "
            "round(F * m * n) parameters, and which structure wins; then a summary: wins and "
            "mean error per structure."
        ),
        epilog=(
            "examples:\n"
            "  lowrank-blocks scan model.safetensors\n"
            "  lowrank-blocks scan model.safetensors --pattern '*attn*' --budget-fraction 0.1\n"
            "  lowrank-blocks scan model.safetensors --json > scan.json\n"
            "\n"
            "--csv prints the per-matrix table only; --json prints\n"
            '{"matrices": [...], "summary": [...]}; --out DIR writes both as CSV files.'
        ),
    )
    parser.add_argument(
        "file", metavar="CHECKPOINT",
        help="weights file: .safetensors (or .npz, .mat, or any single-matrix FILE format)",
    )
    parser.add_argument(
        "--pattern", metavar="GLOB", default="*",
        help="only weights whose name matches GLOB, case-sensitive (default: '*')",
    )
    parser.add_argument(
        "--budget-fraction", metavar="F", type=c.fraction("budget-fraction"), default=0.05,
        help="budget of each matrix as a fraction of its m*n entries (default: 0.05)",
    )
    parser.add_argument(
        "--method", choices=["exact", "randomized"], default="exact", metavar="HOW",
        help="singular values: exact (default), or randomized (faster for large matrices)",
    )
    c.add_families(parser)
    c.add_out(parser, "scan.csv and scan_summary.csv", default=None)
    c.add_progress(parser)
    c.add_format(parser)
    parser.set_defaults(handler=run)


def _scan_one(
    name: str, W: Any, budget_fraction: float, families: tuple[type[Structure], ...], method: str
) -> tuple[dict[str, Any], dict[str, float], dict[str, Structure | None], str]:
    """Budget, errors and structures (by paper name) of one matrix, or a note why not."""
    m, n = (int(d) for d in W.shape)
    budget = round(budget_fraction * m * n)
    errors = dict.fromkeys((cls.paper_name for cls in families), math.nan)
    structures: dict[str, Structure | None] = dict.fromkeys(errors)
    note = ""
    try:
        if min(m, n) < 2:
            raise ValueError("too small: block structures need at least 2 rows and 2 columns")
        if budget < 1:
            raise ValueError(f"budget round({budget_fraction} × {m * n}) = 0")
        curve = error_vs_budget(prepare(W, name), [budget], families=families, allocation="uniform",
                                method=method)
        for point in curve.points:
            errors[point.structure.paper_name] = point.error
            structures[point.structure.paper_name] = point.structure
    except (ValueError, TypeError) as exc:
        note = " ".join(str(exc).split())
    return {"rows": m, "cols": n, "budget": budget}, errors, structures, note


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..io import read_matrices

    matrices = read_matrices(args.file, pattern=args.pattern)
    if not matrices:
        raise c.UsageError(
            f"{args.file!r} has no 2-D weight matching --pattern {args.pattern!r} "
            f"(1-D tensors such as biases are skipped)"
        )
    names = [cls.paper_name for cls in args.families]
    rows = []
    bar = tqdm(matrices.items(), total=len(matrices), desc="scan", unit="matrix",
               file=sys.stderr, disable=not c.show_progress(args))
    for name, W in bar:
        sizes, errors, structures, note = _scan_one(name, W, args.budget_fraction, args.families,
                                                    args.method)
        rows.append({"name": name, **sizes, **errors, "winner": c.winner(errors),
                     **{f"{p} structure": None if s is None else repr(s)
                        for p, s in structures.items()},
                     "note": note})
    bar.close()
    frame = pd.DataFrame(rows)
    summary = _summary(frame, names)
    written = []
    if args.out is not None:
        out = c.out_dir(args)
        written = [out / "scan.csv", out / "scan_summary.csv"]
        c.write_csv(frame, written[0])
        c.write_csv(summary, written[1])

    if args.csv:
        c.write_csv(frame)
    elif args.json:
        c.print_json({"matrices": c.records(frame), "summary": c.records(summary)})
    else:
        shown = frame.assign(shape=[f"{r} × {k}" for r, k in zip(frame["rows"], frame["cols"])])
        shown = shown[["name", "shape", "budget", *names, "winner"]]
        print(f"{args.file}: {len(frame)} weight matrices (1-D tensors skipped)")
        print("relative error of the best configuration with one rank for every block and")
        print(f"at most budget = round({args.budget_fraction} × m·n) parameters")
        print()
        print(c.format_table(shown))
        for rec in frame[frame["note"] != ""].itertuples():
            print(f"skipped {rec.name}: {rec.note}")
        print()
        print("summary:")
        print(c.format_table(summary))
    c.wrote(args, written)
    return 0


def _summary(frame: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    rows = []
    for name in names:
        errors = frame[name].dropna()
        rows.append({"paper_name": name, "wins": int((frame["winner"] == name).sum()),
                     "matrices": len(errors),
                     "mean error": float(errors.mean()) if len(errors) else math.nan})
    ties = int((frame["winner"] == "tie").sum())
    if ties:
        rows.append({"paper_name": "tie", "wins": ties, "matrices": ties, "mean error": math.nan})
    return pd.DataFrame(rows)
