"""``lowrank-blocks compare``: the structures at one matched budget, or by the paper's rule."""

from __future__ import annotations

import argparse
import math
from typing import Any

from ..approximate import approximate
from ..budgets import paper_rule
from ..search import best_approximation, default_grids, error_vs_budget
from . import _common as c

BEST = "best found"


def register(sub: Any) -> None:
    parser = c.add_command(
        sub, "compare",
        help="the three structures at one matched budget",
        description=(
            "Compare LoRA (Global), MELoRA (DiagonalBlocks) and Localized LoRA (BlockGrid) on "
            "the matrix in FILE, matched in one of two ways:\n"
            "\n"
            "  --budget B   the best configuration of each structure with one rank for\n"
            "               every block and at most B parameters (N and K in 2, 4, 8, 16),\n"
            "               plus the best found by a search over every grid and per-block\n"
            "               rank allocation ('best found'). Per-block ranks cost one stored\n"
            "               integer per block (rank_overhead), charged to the budget:\n"
            "               n_params + rank_overhead <= B (--no-rank-overhead: not charged).\n"
            "  --rank R --paper-rule --blocks N\n"
            "               the paper's rule: LoRA rank R; MELoRA N diagonal blocks of\n"
            "               rank R/N; Localized LoRA a K x K grid, K = sqrt(N), of rank\n"
            "               R/(N sqrt(N)). It matches MELoRA with Localized LoRA (2dR/N\n"
            "               parameters on a d x d matrix), not with LoRA (2dR).\n"
            "\n"
            "Columns: paper_name, family (toolkit family: global, diagonal, grid), structure,\n"
            "n_params (stored factor entries), rank_overhead (integers storing per-block\n"
            "ranks), error (relative Frobenius error)."
        ),
        epilog=(
            "examples:\n"
            "  lowrank-blocks compare W.npy --budget 2048\n"
            "  lowrank-blocks compare layers.npz --key fc1 --budget 4096 --csv\n"
            "  lowrank-blocks compare W.npy --rank 16 --paper-rule --blocks 4\n"
            "  lowrank-blocks compare digit.png --budget 224 --no-rank-overhead\n"
            "  lowrank-blocks compare W.npy --budget 2048 --families global,grid"
        ),
    )
    c.add_matrix(parser)
    how = parser.add_mutually_exclusive_group()
    how.add_argument(
        "--budget", metavar="B", type=c.positive_int("budget"),
        help="parameter budget: compare the best configurations with at most B parameters",
    )
    how.add_argument(
        "--rank", metavar="R", type=c.positive_int("rank"),
        help="LoRA rank R for --paper-rule",
    )
    parser.add_argument(
        "--paper-rule", action="store_true",
        help="match by the paper's rule (needs --rank R and --blocks N)",
    )
    parser.add_argument(
        "--blocks", metavar="N", type=c.positive_int("blocks"),
        help="number of MELoRA diagonal blocks N for --paper-rule (a perfect square: 1, 4, 9, ...)",
    )
    c.add_families(parser)
    c.add_rank_overhead(parser, "'best found' (with --budget)")
    c.add_progress(parser)
    c.add_format(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.paper_rule or args.rank is not None or args.blocks is not None:
        missing = [flag for flag, value in (("--rank R", args.rank), ("--blocks N", args.blocks),
                                            ("--paper-rule", args.paper_rule or None))
                   if value is None]
        if missing:
            raise c.UsageError(
                f"--rank R --paper-rule --blocks N go together; {' and '.join(missing)} "
                f"missing (or use --budget B)"
            )
        if args.count_rank_overhead is not None:
            flag = "--count-rank-overhead" if args.count_rank_overhead else "--no-rank-overhead"
            raise c.UsageError(f"{flag} applies to --budget B only")
        return _paper_rule(args)
    if args.budget is None:
        raise c.UsageError("compare needs --budget B, or --rank R --paper-rule --blocks N")
    return _budget(args)


def _budget(args: argparse.Namespace) -> int:
    prep, label = c.load(args)
    m, n = prep.shape
    budget = args.budget
    charged = c.count_rank_overhead(args)
    progress = c.show_progress(args)
    uniform = error_vs_budget(prep, [budget], families=args.families, allocation="uniform",
                              progress=progress)
    found = {type(point.structure): point for point in uniform.points}
    best = best_approximation(prep, budget, families=args.families,
                              count_rank_overhead=charged, progress=progress)
    rows = [c.result_row(cls.paper_name, found[cls]) if cls in found
            else {"paper_name": cls.paper_name, "family": cls.family,
                  "structure": "none within budget"}
            for cls in args.families]
    rows.append(c.result_row(BEST, best))
    frame = c.result_frame(rows)

    def text() -> str:
        names = ", ".join(cls.paper_name for cls in args.families)
        ks = ", ".join(str(k) for k in default_grids((m, n)))
        lines = [
            f"{c.describe(label, (m, n))}; budget {budget} parameters "
            f"({100 * budget / (m * n):.1f} % of dense)",
            "",
            c.format_table(frame),
            "",
            f"{names}: the best configuration with one rank for every",
            f"  block (N and K in {ks}; — : none within the budget).",
            f"{BEST}: the best over every grid and per-block rank allocation.",
        ]
        if charged:
            lines.append("rank_overhead: integers storing per-block ranks, charged to the budget "
                         f"(n_params + rank_overhead <= {budget}).")
        else:
            lines.append("rank_overhead: integers storing per-block ranks, not charged "
                         "(--no-rank-overhead).")
            if best.rank_overhead > 0:
                lines.append(
                    f"note: '{BEST}' needs {best.rank_overhead} integers for its per-block "
                    f"ranks on top of its {best.n_params} parameters;\n"
                    f"  without --no-rank-overhead they are charged to the budget."
                )
        return "\n".join(lines)

    c.emit(args, frame, text)
    return 0


def _paper_rule(args: argparse.Namespace) -> int:
    configs = paper_rule(args.rank, args.blocks)  # validates before the file is read
    prep, label = c.load(args)
    rows = [c.result_row(s.paper_name, approximate(prep, s))
            for s in configs if type(s) in args.families]
    frame = c.result_frame(rows).drop(columns="rank_overhead")  # uniform ranks: always 0
    k = math.isqrt(args.blocks)

    def text() -> str:
        lora, melora, localized = (s.paper_name for s in configs)
        return "\n".join([
            f"{c.describe(label, prep.shape)}; the paper's rule with r = {args.rank}, "
            f"N = {args.blocks}",
            "",
            c.format_table(frame),
            "",
            f"{lora} rank r; {melora} N = {args.blocks} diagonal blocks of rank r/N; "
            f"{localized} a {k} × {k} grid (K = √N) of rank r/(N√N).",
            f"The rule matches {melora} with {localized} (2dr/N parameters on a d × d "
            f"matrix), not with {lora} (2dr).",
        ])

    c.emit(args, frame, text)
    return 0
