"""The ``lowrank-blocks`` command.

Compare one global low-rank factorization (the paper's LoRA), low-rank blocks on the diagonal
(MELoRA) and low-rank blocks on a full grid (Localized LoRA) at matched parameter budgets, for
a matrix stored in a file (``.npy``, ``.npz``, ``.safetensors``, ``.mat``, ``.csv``/``.txt`` or
an image).  One module per command: :mod:`~lowrank_blocks.cli.compare`,
:mod:`~lowrank_blocks.cli.curve`, :mod:`~lowrank_blocks.cli.surface`,
:mod:`~lowrank_blocks.cli.scan`, :mod:`~lowrank_blocks.cli.reproduce`; what they share is in
:mod:`~lowrank_blocks.cli._common`.

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
import sys
from collections.abc import Sequence

from . import allocate, compare, curve, extract, reproduce, scan, surface
from ._common import PROG, TRACEBACK_ENV, Formatter, Parser, run_handler

__all__ = ["main"]

COMMANDS = (compare, curve, surface, scan, allocate, extract, reproduce)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser, with one subcommand per module of :data:`COMMANDS`."""
    from .. import __version__

    parser = Parser(
        prog=PROG,
        formatter_class=Formatter,
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
            "  lowrank-blocks allocate model.safetensors --lora-rank 8 --peft-config lora.json\n"
            "  lowrank-blocks extract --base base/ --finetuned ft/ --lora-rank 8 --out adapter/\n"
            "  lowrank-blocks reproduce table1\n"
            "\n"
            "Run 'lowrank-blocks COMMAND --help' for the options of a command. Tables are\n"
            "printed aligned for reading; --csv and --json print them at full precision.\n"
            "Bad input ends with exit status 2 and one line 'lowrank-blocks: error: ...'\n"
            f"(set {TRACEBACK_ENV}=1 to see the full traceback instead)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0, or 2 for bad input).

    Examples
    --------
    >>> main(["reproduce", "table9"])  # one line on stderr, exit status 2
    2
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, and argument errors
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    return run_handler(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
