"""The ``lowrank-blocks`` command.

Examples
--------
::

    lowrank-blocks reproduce table1          # the paper's Table I from MNIST
    lowrank-blocks reproduce table1 --csv    # the same as CSV
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


class UsageError(Exception):
    """Bad input detected by the command itself; printed as one line."""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lowrank-blocks",
        description=(
            "Is a matrix globally low-rank, or low-rank block by block? Compare one global "
            "factorization (LoRA), diagonal blocks (MELoRA) and a block grid (Localized LoRA) "
            "at matched parameter budgets."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    rep = sub.add_parser(
        "reproduce",
        help="reproduce a result of the Localized LoRA paper",
        description="Reproduce a result of the Localized LoRA paper from the bundled MNIST data.",
    )
    rep.add_argument("what", choices=["table1"], help="which result: table1 (Table I)")
    fmt = rep.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    fmt.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    rep.set_defaults(handler=_reproduce)
    return parser


def _reproduce(args: argparse.Namespace) -> int:
    from .paper import format_table1, table1

    frame = table1()
    if args.csv:
        sys.stdout.write(frame.to_csv(index=False))
    elif args.json:
        sys.stdout.write(frame.to_json(orient="records", indent=2) + "\n")
    else:
        print("Table I: MNIST test image 1 (a '2'), 224 parameters per method")
        print(format_table1(frame))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except (UsageError, ValueError, TypeError, KeyError, FileNotFoundError, RuntimeError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"lowrank-blocks: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
