"""Reproduce the paper's Table I and write it to ``results/`` as CSV and Markdown.

Run ``python analysis/table1.py [--out results]``; ``make demo`` runs it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lowrank_blocks.paper import format_table1, table1


def run(out: Path) -> list[Path]:
    """Print Table I and write it as CSV and Markdown into ``out``; return the paths."""
    frame = table1()
    print("Table I: MNIST test image 1 (a '2'), 224 parameters per method")
    print(format_table1(frame))
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "table1.csv", index=False)
    shown = frame.assign(error=frame["error"].round(4))[
        ["paper_name", "rank", "n_params", "error", "paper_error"]
    ]
    (out / "table1.md").write_text(shown.to_markdown(index=False) + "\n")
    return [out / "table1.csv", out / "table1.md"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    args = parser.parse_args()
    paths = run(args.out)
    print("wrote " + " and ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
