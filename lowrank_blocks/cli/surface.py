"""``lowrank-blocks surface``: the error of every grid and uniform rank (CSV and heatmaps)."""

from __future__ import annotations

import argparse
from typing import Any

import pandas as pd

from ..search import error_surface
from ..structures import BlockGrid, DiagonalBlocks, expand_grids
from . import _common as c

#: Families drawn as heatmaps (the global structure is a single row: the 1 × 1 grid).
HEATMAPS = (BlockGrid, DiagonalBlocks)


def register(sub: Any) -> None:
    parser = c.add_command(
        sub, "surface",
        help="error for every grid and rank (CSV and heatmaps)",
        description=(
            "The error of every grid and uniform rank: writes DIR/surface.csv and two heatmaps, "
            "DIR/surface_grid.png (Localized LoRA, grids K x K or P x Q) and "
            "DIR/surface_diagonal.png (MELoRA, N diagonal blocks), with matched-budget lines "
            "for the budgets given. Prints, for each grid, the best rank within each budget "
            "(or a summary of the surface when no budget is given)."
        ),
        epilog=(
            "examples:\n"
            "  lowrank-blocks surface W.npy\n"
            "  lowrank-blocks surface W.npy --grids 2,4,8,2x8 --budget 512 --budget 1024\n"
            "  lowrank-blocks surface digit.png --budget 224 --out figs"
        ),
    )
    c.add_matrix(parser)
    parser.add_argument(
        "--grids", metavar="LIST", type=c.grid_list,
        help="grids K or PxQ for Localized LoRA, e.g. 2,4,8,2x8 (default: 2,4,8,16); "
             "the square ones are also used as MELoRA block counts N",
    )
    parser.add_argument(
        "--diagonal", metavar="LIST", type=c.int_list("diagonal"),
        help="MELoRA block counts N, e.g. 2,4,8 (default: the square --grids, or 2,4,8,16)",
    )
    parser.add_argument(
        "--budget", metavar="B", type=c.int_list("budget"), action="append",
        help="draw a matched-budget line at B parameters; repeat or give a list (256,512)",
    )
    c.add_families(parser)
    c.add_out(parser, "surface.csv and the heatmaps")
    c.add_progress(parser)
    c.add_format(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    prep, label = c.load(args)
    m, n = prep.shape
    budgets = sorted({b for group in (args.budget or []) for b in group})
    grids = args.grids
    diagonal: Any = args.diagonal
    if grids is not None:  # checked first: its errors name --grids, not the N taken from it
        expand_grids(grids, (m, n), "--grids")
    if diagonal is None and grids is not None:
        square = [g if isinstance(g, int) else g[0] for g in grids
                  if isinstance(g, int) or g[0] == g[1]]
        diagonal = square or None
    surface = error_surface(prep, grids=grids, diagonal=diagonal, families=args.families,
                            progress=c.show_progress(args))
    frame = surface.to_frame()
    out = c.out_dir(args)
    csv_path = out / "surface.csv"
    c.write_csv(frame, csv_path)
    plt, plotting = c.pyplot()
    written = [csv_path]
    drawn = {type(s) for s, _, _ in surface.entries}
    for cls in HEATMAPS:
        if cls in drawn:
            ax = plotting.plot_error_surface(surface, family=cls, budgets=budgets or None,
                                             dense_params=m * n)
            written.append(c.save(plt, ax.figure, out / f"surface_{cls.family}.png"))

    def text() -> str:
        lines = [f"{c.describe(label, (m, n))}; relative error of every grid and uniform rank"]
        if budgets:
            for budget in budgets:
                within = frame[frame["n_params"] <= budget]
                top = within.groupby(["family", "grid"], sort=False)["rank"].idxmax()
                best = within.loc[top].sort_values("error", kind="stable")
                table = best[["paper_name", "grid", "rank", "n_params", "error"]]
                lines += ["", f"at most {budget} parameters ({100 * budget / (m * n):.1f} % of "
                              f"dense), best first:"]
                lines.append(c.format_table(table) if not table.empty
                             else "  no configuration within this budget")
        else:
            rows = []
            for _, part in frame.groupby(["family", "grid"], sort=False):
                part = part.sort_values("rank")
                unit = part["structure"].iloc[0]
                rows.append({"paper_name": unit.paper_name, "grid": unit.grid_label,
                             "params per rank": unit.unit_cost((m, n)),
                             "ranks": f"1–{int(part['rank'].max())}",
                             "error at rank 1": float(part["error"].iloc[0]),
                             "error at max rank": float(part["error"].iloc[-1])})
            lines += ["", c.format_table(pd.DataFrame(rows)),
                      "", "(give --budget B to see the best rank of every grid within B "
                          "parameters)"]
        return "\n".join(lines)

    c.emit(args, frame, text)
    c.wrote(args, written)
    return 0
