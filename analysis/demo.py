"""``make demo``: the paper's Table I and Fig. 1, and what the paper does not show, in one run.

Writes into ``results/`` (or ``--out``):

* ``table1.csv``, ``table1.md`` — Table I reproduced from the MNIST test digit;
* ``fig1.png`` — reconstructions side by side (the paper's Fig. 1 plus the best structure found);
* ``curve.csv``, ``curve.png`` — error against budget for every family, uniform and optimal
  per-block ranks;
* ``surface.csv``, ``surface_grid.png``, ``surface_diagonal.png`` — error surfaces with the
  224-parameter line;
* ``block_map.png`` — where the digit is locally low-rank (2 × 2 and 4 × 4 grids);
* ``best_structure.csv``, ``best_structure.md`` — the best structure at 224 parameters.

It prints Table I, the best-structure table, and one line with the best structure at 224
parameters with the per-block rank integers charged to the budget (``n_params + rank integers
<= 224``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import best_structure  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import table1  # noqa: E402

from lowrank_blocks import (  # noqa: E402
    Approximation,
    BlockGrid,
    DiagonalBlocks,
    Search,
    approximate,
    best_approximation,
    error_surface,
    error_vs_budget,
)
from lowrank_blocks.datasets import table1_digit  # noqa: E402
from lowrank_blocks.paper import TABLE1_CONFIGURATIONS  # noqa: E402
from lowrank_blocks.plotting import (  # noqa: E402
    plot_block_map,
    plot_error_surface,
    plot_error_vs_budget,
    plot_reconstructions,
)

BUDGET = 224


def _save(fig, path: Path, dpi: int) -> Path:
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def best_at_budget(W=None) -> Search:
    """The best structure for the Table I digit within ``BUDGET``, rank integers charged.

    Per-block ranks cost one stored integer per block: ``n_params + rank_overhead <= BUDGET``.
    """
    W = table1_digit() if W is None else W
    return best_approximation(W, BUDGET, count_rank_overhead=True)


def draw_figures(
    out: Path, *, dpi: int = 150, tables: bool = True, best: Search | None = None
) -> list[Path]:
    """Fig. 1, the error-vs-budget curve, the surfaces and the block map of the Table I digit.

    ``best``: the search drawn as Fig. 1's last panel (default :func:`best_at_budget`).  Also
    used by ``docs/_scripts/make_images.py`` (with ``tables=False``) for the docs.
    """
    W = table1_digit()
    approximations: list[Approximation | Search] = [
        approximate(W, s) for s in TABLE1_CONFIGURATIONS
    ]
    approximations.append(best_at_budget(W) if best is None else best)
    written = [_save(plot_reconstructions(W, approximations), out / "fig1.png", dpi)]

    dense = W.shape[0] * W.shape[1]
    curve = error_vs_budget(W, range(56, dense + 1, 28), grids=[2, 4, 7, 14], diagonal=[2, 4, 7, 14])
    ax = plot_error_vs_budget(curve, dense_params=dense)
    written.append(_save(ax.figure, out / "curve.png", dpi))

    surface = error_surface(W, grids=[1, 2, 4, 7, 14], diagonal=[1, 2, 4, 7, 14])
    for cls in (BlockGrid, DiagonalBlocks):
        ax = plot_error_surface(surface, family=cls, budgets=[BUDGET, 2 * BUDGET])
        written.append(_save(ax.figure, out / f"surface_{cls.family}.png", dpi))

    written.append(_save(plot_block_map(W, BlockGrid(4, 1)), out / "block_map.png", dpi))
    if tables:
        curve.to_frame().to_csv(out / "curve.csv", index=False)
        surface.to_frame().to_csv(out / "surface.csv", index=False)
        written += [out / "curve.csv", out / "surface.csv"]
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    written = table1.run(out)
    print()
    written += best_structure.run(out)
    best = best_at_budget()
    print(f"Best structure at {BUDGET} parameters, rank overhead charged "
          f"(n_params + rank integers <= {BUDGET}): {best_structure.describe(best)}")
    written += draw_figures(out, best=best)
    print(f"\nmake demo wrote {len(written)} files in {out}/ in {time.perf_counter() - t0:.1f} s:")
    for path in written:
        print(f"  {path}")


if __name__ == "__main__":
    main()
