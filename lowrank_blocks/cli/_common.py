"""What every command shares: argument types, reading the matrix, tables, output and errors.

Family names given on the command line are turned into structure classes here, once
(:func:`families`); everything after that reads names and styles from the classes and results
from the library's result objects.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pandas as pd

from ..spectra import PreparedMatrix, prepare
from ..structures import STRUCTURE_TYPES, Structure, structure_types

PROG = "lowrank-blocks"
TRACEBACK_ENV = "LOWRANK_BLOCKS_TRACEBACK"
#: Columns of a table of single results (compare, reproduce fig1): one row per structure.
RESULT_COLUMNS = ["paper_name", "family", "structure", "n_params", "rank_overhead", "error"]


class UsageError(Exception):
    """Bad input detected by the command itself; printed as one line."""


# -- argument parsing ---------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``lowrank-blocks: error: ...``."""

    def error(self, message: str) -> NoReturn:
        message = shorten_words(" ".join(message.split()))
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


def shorten_words(text: str, longest: int = 60) -> str:
    """Cut every word longer than ``longest`` characters (a 5000-digit argument) to its start.

    Examples
    --------
    >>> shorten_words("unrecognized arguments: " + "9" * 100, longest=15)
    'unrecognized arguments: 999999999999999… (100 characters)'
    """
    return re.sub(rf"\S{{{longest + 1},}}",
                  lambda m: f"{m.group()[:longest]}… ({len(m.group())} characters)", text)


class Formatter(argparse.HelpFormatter):
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


def add_command(sub: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand parser with the shared formatter."""
    return sub.add_parser(name, formatter_class=Formatter, **kwargs)


#: The largest integer an option takes unless it says otherwise (the library's budget limit).
MAX_INT = 1 << 62


def positive_int(what: str, maximum: int = MAX_INT) -> Callable[[str], int]:
    """An argparse type: an integer from 1 to ``maximum`` (a named one-line error otherwise)."""
    def parse(text: str) -> int:
        try:
            value = int(text.strip().replace("_", ""))
        except ValueError:  # also a number of more than 4300 digits
            raise argparse.ArgumentTypeError(
                f"{what} must be a positive integer, got {text[:40]!r}"
            ) from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{what} must be a positive integer, got {text!r}")
        if value > maximum:
            limit = "2**62" if maximum == MAX_INT else f"{maximum:,}"
            raise argparse.ArgumentTypeError(
                f"{what}={value} is too large; at most {limit} is allowed"
            )
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


def fraction(what: str) -> Callable[[str], float]:
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


def int_list(what: str) -> Callable[[str], list[int]]:
    one = positive_int(what)

    def parse(text: str) -> list[int]:
        items = [t for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"{what} must be a comma-separated list, got {text!r}")
        return [one(t) for t in items]

    parse.__name__ = what
    return parse


def grid_list(text: str) -> list[int | tuple[int, int]]:
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


def families(text: str) -> tuple[type[Structure], ...]:
    """``"grid,global"`` -> ``(Global, BlockGrid)``: family names become classes here, once.

    The classes come back in the toolkit's order (LoRA, MELoRA, Localized LoRA), the order of
    every table.
    """
    try:
        chosen = structure_types([t.strip() for t in text.split(",") if t.strip()], "families")
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return tuple(cls for cls in STRUCTURE_TYPES if cls in chosen)


families.__name__ = "families"

FILE_HELP = (
    "matrix file: .npy, .npz, .safetensors, .mat, .csv/.txt, or an image "
    "(.png, .jpg, .bmp, .gif, .tif; grayscale values as stored, colour as 8-bit luminance)"
)
_FAMILY_NAMES = ", ".join(cls.family for cls in STRUCTURE_TYPES)


def add_matrix(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help=FILE_HELP)
    parser.add_argument(
        "--key", metavar="NAME",
        help="name of the array inside FILE (needed when it holds several 2-D arrays)",
    )


def add_families(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--families", metavar="LIST", type=families, default=STRUCTURE_TYPES,
        help=f"structure families, comma-separated: {_FAMILY_NAMES} (or the paper names "
             f"LoRA, MELoRA, 'Localized LoRA'; default: all three)",
    )


def add_rank_overhead(parser: argparse.ArgumentParser, charged: str) -> None:
    """``--no-rank-overhead`` (and the default it turns off, ``--count-rank-overhead``)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--no-rank-overhead", dest="count_rank_overhead", action="store_false", default=None,
        help=f"do not charge {charged} for the integers that store per-block ranks (they are "
             f"charged by default: n_params + rank_overhead <= budget)",
    )
    group.add_argument(
        "--count-rank-overhead", dest="count_rank_overhead", action="store_true", default=None,
        help="charge the per-block rank integers to the budget (the default)",
    )


def count_rank_overhead(args: argparse.Namespace) -> bool:
    """Whether per-block rank integers are charged (the default) or only reported."""
    return args.count_rank_overhead is not False


def add_format(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--csv", action="store_true", help="print CSV (full precision) instead of a table"
    )
    group.add_argument(
        "--json", action="store_true", help="print JSON records (full precision) instead of a table"
    )


def add_out(parser: argparse.ArgumentParser, what: str, default: str | None = "results") -> None:
    where = f"default: {default}" if default else "default: write nothing"
    parser.add_argument(
        "--out", metavar="DIR", default=default,
        help=f"folder for {what} (created if missing; {where})",
    )


def add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-progress", action="store_true",
        help="no progress bar (it is also off when stderr is not a terminal)",
    )


def show_progress(args: argparse.Namespace) -> bool:
    return not args.no_progress and sys.stderr.isatty()


# -- the matrix ---------------------------------------------------------------------------------


def load(args: argparse.Namespace) -> tuple[PreparedMatrix, str]:
    """Read and validate the matrix of ``args.file`` (and ``args.key``), once; with a label."""
    from ..io import read_matrix

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
    return prepare(W, name=label), label


def describe(label: str, shape: tuple[int, int]) -> str:
    m, n = shape
    return f"{label}: {m} × {n} matrix ({m * n} dense parameters)"


# -- tables -------------------------------------------------------------------------------------


def result_row(name: str, result: Any) -> dict[str, Any]:
    """One row of :data:`RESULT_COLUMNS` from anything with ``structure``, ``n_params``,
    ``rank_overhead`` and ``error`` (an Approximation, a Search, a curve point)."""
    structure = result.structure
    return {"paper_name": name, "family": structure.family, "structure": structure,
            "n_params": int(result.n_params), "rank_overhead": int(result.rank_overhead),
            "error": float(result.error)}


def result_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=RESULT_COLUMNS)
    for column in ("n_params", "rank_overhead"):
        frame[column] = frame[column].astype("Int64")
    return frame


def winner(errors: dict[str, float], tol: float = 1e-12) -> str | None:
    """Name with the smallest error; ``'tie'`` when several share it; None when none."""
    valid = {k: v for k, v in errors.items() if v is not None and not math.isnan(v)}
    if not valid:
        return None
    low = min(valid.values())
    best = [k for k, v in valid.items() if v <= low + tol * max(1.0, abs(low))]
    return best[0] if len(best) == 1 else "tie"


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def format_table(frame: pd.DataFrame, formats: dict[str, str] | None = None) -> str:
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
            if _missing(value):
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


def export(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as written to CSV/JSON: Structure objects (in any column) become their full
    spec, with every per-block rank."""
    from ..structures import Structure

    out = frame
    for col in frame.columns:
        if frame[col].dtype == object and any(isinstance(v, Structure) for v in frame[col]):
            out = out.assign(**{col: [v.spec if isinstance(v, Structure) else v
                                      for v in frame[col]]})
    return out


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready records at full precision (NaN and NA become null)."""
    out = []
    for row in export(frame).to_dict(orient="records"):
        clean = {}
        for key, value in row.items():
            if _missing(value):
                clean[str(key)] = None
            elif isinstance(value, (np.integer, np.bool_)):
                clean[str(key)] = value.item()
            elif isinstance(value, np.floating):
                clean[str(key)] = float(value)
            else:
                clean[str(key)] = value
        out.append(clean)
    return out


def write_csv(frame: pd.DataFrame, path: Path | None = None) -> None:
    """``frame`` as CSV to ``path``, or to stdout."""
    if path is None:
        sys.stdout.write(export(frame).to_csv(index=False))
    else:
        export(frame).to_csv(path, index=False)


def json_text(document: Any) -> str:
    """The JSON text of a document of records (NaN must already be null)."""
    return json.dumps(document, indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def print_json(document: Any) -> None:
    sys.stdout.write(json_text(document))


def emit(args: argparse.Namespace, frame: pd.DataFrame, text: Callable[[], str]) -> None:
    """Print ``frame`` as CSV or JSON, or ``text()`` for the terminal."""
    if args.csv:
        write_csv(frame)
    elif args.json:
        print_json(records(frame))
    else:
        print(text())


# -- files --------------------------------------------------------------------------------------


def wrote(args: argparse.Namespace, paths: Sequence[Path]) -> None:
    """Say where files went: on stdout for the terminal, on stderr with --csv/--json."""
    stream = sys.stderr if (args.csv or args.json) else sys.stdout
    for path in paths:
        print(f"wrote {path}", file=stream)


def out_dir(args: argparse.Namespace, default: str = "results") -> Path:
    out = Path(args.out if args.out is not None else default)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, and the toolkit's plotting module."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "drawing figures needs matplotlib; install it with pip install 'lowrank_blocks[plot]'"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .. import plotting

    return plt, plotting


def save(plt: Any, figure: Any, path: Path) -> Path:
    try:
        figure.savefig(path, dpi=150)
    finally:
        plt.close(figure)
    return path


# -- errors -------------------------------------------------------------------------------------


def message(exc: BaseException) -> str:
    """One line describing ``exc``."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    elif type(exc) is KeyError and exc.args:  # a plain KeyError shows the repr of its key
        key = exc.args[0]
        text = key if isinstance(key, str) and " " in key else f"no such key: {key!r}"
    else:
        text = str(exc)
    text = shorten_words(" ".join(text.split()), 120)
    return text or type(exc).__name__


def run_handler(args: argparse.Namespace) -> int:
    """Run the command's handler; bad input becomes exit status 2 and one line on stderr."""
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
            RuntimeError, MemoryError, OverflowError) as exc:
        if os.environ.get(TRACEBACK_ENV):
            raise
        print(f"{PROG}: error: {message(exc)}", file=sys.stderr)
        return 2


def add_cluster(parser: argparse.ArgumentParser) -> None:
    """``--workers N`` / ``--scheduler ADDRESS``: one Dask task per matrix (any command that
    maps over the matrices of a model can add these and pass :func:`cluster` as ``client=``)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--workers", metavar="N", type=positive_int("workers", maximum=4096), default=None,
        help="run on a Dask LocalCluster of N worker processes started on this machine, one "
             "task per matrix (needs: pip install 'lowrank_blocks[distributed]')",
    )
    group.add_argument(
        "--scheduler", metavar="ADDRESS", default=None,
        help="run on an existing Dask cluster, e.g. tcp://10.0.0.5:8786; every worker must "
             "see SOURCE (and BASE) under the same path",
    )


def cluster(args: argparse.Namespace) -> int | str | None:
    """What ``client=`` gets from ``--workers`` / ``--scheduler`` (``None``: this process)."""
    if getattr(args, "scheduler", None) is not None:
        address = args.scheduler.strip()
        if not address:
            raise UsageError("--scheduler needs an address such as tcp://10.0.0.5:8786")
        return address
    return getattr(args, "workers", None)
