"""``lowrank-blocks curve``: error versus parameter budget (CSV, figure and table)."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import pandas as pd

from ..search import error_vs_budget
from . import _common as c

#: Budgets of a curve's default range at most (each is a full search).
MAX_POINTS = 1000


ALLOCATION_NAMES = {"uniform": "one rank for every block (uniform)",
                    "optimal": "per-block ranks chosen optimally (optimal)"}


def register(sub: Any) -> None:
    parser = c.add_command(
        sub, "curve",
        help="error versus parameter budget (CSV and figure)",
        description=(
            "Best error of each structure at a range of parameter budgets, with one rank for "
            "every block (uniform) and with per-block ranks chosen optimally (optimal; the "
            "integers storing the per-block ranks are charged to the budget unless "
            "--no-rank-overhead). Writes DIR/curve.csv and DIR/curve.png and prints the "
            "table. By default the budgets are N log-spaced points from the cheapest "
            "configuration (m + n parameters) up to 25 % of the dense parameter count m*n."
        ),
        epilog=(
            "examples:\n"
            "  lowrank-blocks curve W.npy\n"
            "  lowrank-blocks curve W.npy --budgets 256,512,1024,2048 --out figs\n"
            "  lowrank-blocks curve W.npy --max-fraction 0.5 --points 20 --csv > curve.csv"
        ),
    )
    c.add_matrix(parser)
    budgets = parser.add_mutually_exclusive_group()
    budgets.add_argument(
        "--budgets", metavar="LIST", type=c.int_list("budgets"),
        help="comma-separated parameter budgets, e.g. 256,512,1024",
    )
    budgets.add_argument(
        "--max-fraction", metavar="F", type=c.fraction("max-fraction"),
        help="largest budget as a fraction of m*n (default: 0.25)",
    )
    parser.add_argument(
        "--points", metavar="N", type=c.positive_int("points", maximum=MAX_POINTS),
        help=f"number of log-spaced budgets (default: 12, at most {MAX_POINTS})",
    )
    parser.add_argument(
        "--allocation", choices=["uniform", "optimal", "both"], default="both", metavar="HOW",
        help="uniform (one rank for every block), optimal (per-block ranks) or both (default)",
    )
    parser.add_argument(
        "--grids", metavar="LIST", type=c.grid_list,
        help="grids searched for Localized LoRA, e.g. 2,4,8 or 2x4 (default: 2,4,8,16)",
    )
    c.add_families(parser)
    c.add_rank_overhead(parser, "optimal per-block ranks")
    c.add_out(parser, "curve.csv and curve.png")
    c.add_progress(parser)
    c.add_format(parser)
    parser.set_defaults(handler=run)


def default_budgets(shape: tuple[int, int], fraction: float, points: int) -> list[int]:
    m, n = shape
    low, high = m + n, int(fraction * m * n)  # m + n: the cheapest configuration, Global(1)
    if high < low:
        raise c.UsageError(
            f"--max-fraction {fraction} gives at most {high} parameters for a {m} × {n} matrix, "
            f"below the cheapest configuration ({low} parameters); use a larger fraction"
        )
    values = np.unique(np.rint(np.geomspace(low, high, points)).astype(np.int64))
    return [int(v) for v in values]


def run(args: argparse.Namespace) -> int:
    if args.budgets is not None and args.points is not None:
        raise c.UsageError("--points sets the number of default budgets; it cannot go with --budgets")
    prep, label = c.load(args)
    m, n = prep.shape
    dense = m * n
    if args.budgets is not None:
        budgets = sorted(set(args.budgets))
    else:
        fraction = 0.25 if args.max_fraction is None else args.max_fraction
        budgets = default_budgets((m, n), fraction, 12 if args.points is None else args.points)
    allocation = ("uniform", "optimal") if args.allocation == "both" else args.allocation
    curve = error_vs_budget(prep, budgets, families=args.families, allocation=allocation,
                            grids=args.grids, count_rank_overhead=c.count_rank_overhead(args),
                            progress=c.show_progress(args))
    frame = curve.to_frame()
    out = c.out_dir(args)
    csv_path = out / "curve.csv"
    c.write_csv(frame, csv_path)
    plt, plotting = c.pyplot()
    ax = plotting.plot_error_vs_budget(curve, dense_params=dense)
    png_path = c.save(plt, ax.figure, out / "curve.png")

    def text() -> str:
        lines = [f"{c.describe(label, (m, n))}; best relative error of each structure at "
                 f"each budget"]
        for alloc, name in ALLOCATION_NAMES.items():
            part = frame[frame["allocation"] == alloc]
            if part.empty:
                continue
            wide = part.pivot(index="budget", columns="family", values="error")
            wide = wide.reindex(index=budgets, columns=[cls.family for cls in args.families])
            table = pd.DataFrame({"budget": wide.index.astype(int),
                                  "% dense": 100.0 * wide.index.to_numpy() / dense})
            for cls in args.families:
                table[cls.paper_name] = wide[cls.family].to_numpy()
            names = [cls.paper_name for cls in args.families]
            table["best"] = [c.winner(dict(zip(names, r))) for r in wide.to_numpy().tolist()]
            lines += ["", f"{name}:", c.format_table(table, {"% dense": ".1f"})]
        lines += ["", "(— : no configuration within the budget; the grid and rank of each entry "
                      f"are in {csv_path})"]
        return "\n".join(lines)

    c.emit(args, frame, text)
    c.wrote(args, [csv_path, png_path])
    return 0
