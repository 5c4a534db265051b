"""Matplotlib figures for structured low-rank approximations.

Five figures, each drawn from the toolkit's own results so that every number shown is the
number in the tables (errors to four decimals):

* :func:`plot_reconstructions`: the original matrix beside its approximations (the paper's
  Fig. 1), titled with parameter counts and errors.
* :func:`plot_error_vs_budget`: error against parameter budget, one line per structure family
  and rank allocation (the table of :func:`lowrank_blocks.error_vs_budget`).
* :func:`plot_error_surface`: error over grid × rank (the table of
  :func:`lowrank_blocks.error_surface`), with matched-budget lines.
* :func:`plot_block_map`: where a matrix's energy lies over a partition, and how many singular
  values every block needs.
* :func:`plot_study`: paired error differences and win rates of a
  :class:`lowrank_blocks.studies.Study`.

Every plotting function takes the toolkit's result objects (:class:`~lowrank_blocks.Surface`,
:class:`~lowrank_blocks.Curve`, :class:`~lowrank_blocks.Search`, :class:`~lowrank_blocks.Study`)
or their ``.to_frame()`` tables.  A structure family's name, colour and marker come from its
class (``Global.paper_name``, ``Global.color``, ``Global.marker`` ...), so every figure of the
toolkit draws a family the same way; family strings in a table are turned into classes with
:func:`~lowrank_blocks.structures.structure_type`.

Matplotlib is imported inside the functions only, so ``import lowrank_blocks`` (and importing
this module) never imports it.  No function calls ``plt.show()``: each returns its Figure or
Axes for the caller to show or save.  The families' colours are from the Okabe–Ito
colour-blind-safe set and are always doubled by markers, line styles or hatches, so the figures
survive grayscale printing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .approximate import Approximation
from .linalg import to_numpy
from .search import Curve, Search, Surface
from .structures import STRUCTURE_TYPES, Structure, structure_type
from .studies import Study

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "plot_block_map",
    "plot_error_surface",
    "plot_error_vs_budget",
    "plot_layer_bars",
    "plot_layer_heatmap",
    "plot_reconstructions",
    "plot_study",
]

_LINESTYLES = ("-", "--", ":", "-.")
_HATCHES = ("///", "\\\\\\", "...", "xxx", "++", "ooo")
_ALLOCATION_STYLE = {"uniform": "-", "optimal": "--"}
_ALLOCATION_LABEL = {"uniform": "uniform rank", "optimal": "optimal per-block ranks"}
_BOUNDARY_COLOR = "#0072B2"
_MISSING_HATCH_COLOR = "#9a9a9a"
_NO_FAMILY_COLOR = "#7f7f7f"  # a study configuration without a structure family
_NUMERICAL_ZERO = 1e-10  # relative errors below this are zero up to rounding


# -- helpers -------------------------------------------------------------------------------------


def _pyplot():
    """Import pyplot lazily (the core never imports matplotlib)."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "lowrank_blocks.plotting needs matplotlib; install it with "
            "`pip install 'lowrank_blocks[plot]'`"
        ) from exc
    return plt


def _as_matrix_np(W: Any, name: str = "W") -> np.ndarray:
    """A float64 NumPy copy of a 2-D real matrix of any backend."""
    try:
        arr = np.array(to_numpy(W), dtype=np.float64, copy=True)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a real 2-D array; got {type(W).__name__}") from exc
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix; got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values; only finite matrices allowed")
    return arr


def _as_frame(table: Any, required: Sequence[str], name: str) -> pd.DataFrame:
    """The table of a result object (``.to_frame()``) or a DataFrame, with ``required`` columns."""
    if isinstance(table, (Surface, Curve, Search, Study)):
        table = table.to_frame()
    if not isinstance(table, pd.DataFrame):
        raise TypeError(
            f"{name} must be a Surface, Curve or Search (or its .to_frame() DataFrame); "
            f"got {type(table).__name__}"
        )
    missing = [c for c in required if c not in table.columns]
    if missing:
        hint = ""
        if "family" in missing and "method" in table.columns:
            hint = (" (a table of lowrank_blocks 0.1: the family is now in column 'family' and "
                    "the paper's name in 'paper_name')")
        raise ValueError(
            f"{name} lacks the column(s) {', '.join(missing)}; it needs "
            f"{', '.join(required)}{hint}"
        )
    if table.empty:
        raise ValueError(f"{name} is empty; nothing to plot")
    return table


def _family_classes(families: pd.Series) -> pd.Series:
    """The structure class of every row of a ``family`` column (names or classes)."""
    classes = {f: structure_type(f) for f in families.unique()}
    return families.map(classes)


def _family_order(cls: type[Structure]) -> tuple[int, str]:
    """Global, DiagonalBlocks, BlockGrid (the paper's order), then any other family."""
    known = list(STRUCTURE_TYPES)
    return (known.index(cls) if cls in known else len(known), cls.family)


def _axes_list(axes: Any, n: int, name: str) -> list[Axes]:
    flat = list(np.ravel(np.asarray(axes, dtype=object)))
    if len(flat) != n:
        raise ValueError(f"{name} has {len(flat)} Axes; {n} are needed")
    return flat


def _text_color(rgba: Sequence[float]) -> str:
    """Black or white, whichever reads better on a cell of colour ``rgba``."""
    r, g, b = rgba[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def _grid_order(label: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in str(label).split("×"))
    except ValueError:
        return (10**9,)


def _percent_formatter(mticker: Any) -> Any:
    return mticker.FuncFormatter(lambda v, _pos: f"{v:g} %")


def _log_ticks(axis: Any, mticker: Any) -> None:
    """Readable plain-number ticks (1, 2, 5 × 10^k) on a log axis."""
    axis.set_major_locator(mticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(mticker.FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_locator(mticker.LogLocator(base=10, subs=np.arange(1, 10)))
    axis.set_minor_formatter(mticker.NullFormatter())


def _approx_title(approx: Approximation, found: bool, heading: str | None = None) -> str:
    """Panel title of one approximation; numbers formatted exactly as in the tables.

    ``found``: the approximation is the winner of a search (:class:`Search`).
    """
    structure = approx.structure
    lines = []
    if found:
        lines.append(heading if heading is not None else "Best found")
        lines.append(structure.paper_name)
    else:
        lines.append(heading if heading is not None else structure.paper_name)
    lines.append(structure.label)
    if approx.rank_overhead > 0:
        lines.append(f"{approx.n_params} params + {approx.rank_overhead} rank ints")
        lines.append(f"error {approx.error:.4f}")
    else:
        lines.append(f"{approx.n_params} params, error {approx.error:.4f}")
    return "\n".join(lines)


def _draw_block_boundaries(ax: Axes, approx: Approximation) -> None:
    part = approx.partition
    style = {"color": _BOUNDARY_COLOR, "linewidth": 0.8, "alpha": 0.85}
    for r in part.row_offsets[1:-1]:
        ax.axhline(r - 0.5, **style)
    for c in part.col_offsets[1:-1]:
        ax.axvline(c - 0.5, **style)


# -- 1. reconstructions --------------------------------------------------------------------------


def plot_reconstructions(
    W: Any,
    approximations: Sequence[Approximation | Search],
    *,
    titles: Sequence[str] | None = None,
    axes: Sequence[Axes] | None = None,
    cmap: str = "gray_r",
    show_blocks: bool = True,
) -> Figure:
    """The original matrix beside its approximations (the paper's Fig. 1).

    Every panel uses the colour limits of the original, so a reconstruction that over- or
    undershoots is clipped rather than rescaled and the panels compare pixel for pixel.

    Parameters
    ----------
    W : array_like, shape (m, n)
        The original matrix (any backend; copied to NumPy for drawing).
    approximations : sequence of Approximation or Search
        Results of :func:`lowrank_blocks.approximate` or
        :func:`lowrank_blocks.best_approximation` (its ``.approximation`` is drawn, titled
        "Best found"), all of ``W``'s shape.
    titles : sequence of str, optional
        One heading per approximation, replacing the first title line (the paper's name, or
        "Best found" for a search).  The structure, parameter count and error lines are
        always added, so the numbers cannot drift from the tables.
    axes : sequence of matplotlib Axes, optional
        ``len(approximations) + 1`` axes (original first).  By default a new figure with one
        row of panels.
    cmap : str, default 'gray_r'
        Colour map (dark = large values, as the paper's digits).
    show_blocks : bool, default True
        Draw the block boundaries of each approximation's partition as thin lines.

    Returns
    -------
    matplotlib.figure.Figure
        The figure holding the panels.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from lowrank_blocks import BlockGrid, Global, approximate
    >>> from lowrank_blocks.plotting import plot_reconstructions
    >>> W = np.random.default_rng(0).standard_normal((28, 28))
    >>> approxs = [approximate(W, Global(4)), approximate(W, BlockGrid(2, rank=2))]
    >>> fig = plot_reconstructions(W, approxs)
    >>> fig.axes[2].get_title().splitlines()[0]
    'Localized LoRA'
    >>> import matplotlib.pyplot as plt; plt.close(fig)
    """
    plt = _pyplot()
    Wn = _as_matrix_np(W)
    if isinstance(approximations, (Approximation, Search)):
        approximations = [approximations]
    given = list(approximations)
    if not given:
        raise ValueError("approximations is empty; give at least one Approximation or Search")
    approximations, found = [], []
    for k, item in enumerate(given):
        if isinstance(item, Search):
            approx = item.approximation
        elif isinstance(item, Approximation):
            approx = item
        else:
            raise TypeError(
                f"approximations[{k}] is a {type(item).__name__}, not an Approximation or a "
                f"Search (use lowrank_blocks.approximate or best_approximation)"
            )
        if tuple(approx.shape) != Wn.shape:
            raise ValueError(
                f"approximations[{k}] has shape {approx.shape}, but W has shape {Wn.shape}"
            )
        approximations.append(approx)
        found.append(isinstance(item, Search))
    if titles is not None:
        titles = list(titles)
        if len(titles) != len(approximations):
            raise ValueError(
                f"titles has {len(titles)} entries; give one per approximation "
                f"({len(approximations)})"
            )
    n_panels = len(approximations) + 1
    panel_titles = [
        _approx_title(a, found[k], titles[k] if titles is not None else None)
        for k, a in enumerate(approximations)
    ]
    if axes is None:
        m0, n0 = Wn.shape
        panel_w = 2.8
        n_lines = max(t.count("\n") + 1 for t in panel_titles)
        height = panel_w * min(m0 / n0, 2.5) + 0.2 * n_lines + 0.45
        fig, created = plt.subplots(
            1, n_panels, figsize=(panel_w * n_panels, height), layout="constrained",
            squeeze=False,
        )
        ax_list = list(created[0])
    else:
        ax_list = _axes_list(axes, n_panels, "axes")
        fig = ax_list[0].figure

    vmin, vmax = float(Wn.min()), float(Wn.max())
    if vmin == vmax:  # constant matrix: any non-degenerate window
        vmin, vmax = vmin - 0.5, vmax + 0.5
    show = {"cmap": cmap, "vmin": vmin, "vmax": vmax, "interpolation": "nearest"}
    m, n = Wn.shape

    ax_list[0].imshow(Wn, **show)
    ax_list[0].set_title(f"Original\n{m} × {n}, {m * n} entries", fontsize=10)
    for k, approx in enumerate(approximations):
        ax = ax_list[k + 1]
        recon = np.asarray(to_numpy(approx.reconstruct()), dtype=np.float64)
        ax.imshow(recon, **show)
        if show_blocks:
            _draw_block_boundaries(ax, approx)
        ax.set_title(panel_titles[k], fontsize=10)
    for ax in ax_list:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


# -- 2. error versus budget ----------------------------------------------------------------------


def plot_error_vs_budget(
    curve: Curve | Search | pd.DataFrame,
    *,
    ax: Axes | None = None,
    dense_params: int | None = None,
    logx: bool = True,
    logy: bool = False,
) -> Axes:
    """Relative error against parameter budget, one line per family and rank allocation.

    Colours and markers identify the family (``cls.color``, ``cls.marker`` of LoRA, MELoRA,
    Localized LoRA, labelled with ``cls.paper_name``); solid lines with
    filled markers are uniform ranks, dashed lines with open markers optimal per-block ranks.
    When both allocations of a family give the same curve (a single block, as in LoRA), one
    line is drawn and labelled "uniform = optimal".

    Parameters
    ----------
    curve : Curve, Search or pandas.DataFrame
        The result of :func:`lowrank_blocks.error_vs_budget` (or the table of a
        :func:`~lowrank_blocks.best_approximation` search), or its ``.to_frame()`` (columns
        ``family``, ``allocation``, ``budget``, ``error`` at least).  With ``best_only=False``
        the best grid at each budget is drawn.
    ax : matplotlib Axes, optional
        Where to draw; a new figure by default.
    dense_params : int, optional
        Parameter count of the dense matrix (``m n``); adds a top axis with the budget as a
        percentage of it.
    logx, logy : bool
        Logarithmic budget axis (default) and error axis.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from lowrank_blocks import error_vs_budget
    >>> from lowrank_blocks.plotting import plot_error_vs_budget
    >>> W = np.random.default_rng(0).standard_normal((28, 28))
    >>> ax = plot_error_vs_budget(error_vs_budget(W, range(56, 785, 56)), dense_params=784)
    >>> ax.get_ylabel()
    'relative Frobenius error'
    >>> import matplotlib.pyplot as plt; plt.close(ax.figure)
    """
    plt = _pyplot()
    import matplotlib.ticker as mticker

    frame = _as_frame(curve, ["family", "allocation", "budget", "error"], "curve")
    if dense_params is not None:
        if isinstance(dense_params, bool) or not isinstance(dense_params, (int, np.integer)):
            raise TypeError(f"dense_params={dense_params!r} must be an integer (m · n)")
        if dense_params < 1:
            raise ValueError(f"dense_params={dense_params} must be a positive integer (m · n)")
    if ax is None:
        _, ax = plt.subplots(figsize=(9.6, 4.6), layout="constrained")

    # One value per (family, allocation, budget): the best grid where several are listed.
    best = (
        frame.assign(family=_family_classes(frame["family"]),
                     budget=frame["budget"].astype(np.int64), error=frame["error"].astype(float))
        .groupby(["family", "allocation", "budget"], sort=False)["error"]
        .min()
        .reset_index()
    )
    floor = None
    if logy:
        # Errors at rounding level (or exactly 0: full rank) have no place on a log axis; they
        # are drawn at a floor below the smallest meaningful error and said so in the legend.
        meaningful = best["error"][best["error"] > _NUMERICAL_ZERO]
        low = float(meaningful.min()) if len(meaningful) else 1.0
        floor = 10.0 ** (math.floor(math.log10(low)) - 1)
        if not (best["error"] < floor).any():
            floor = None
        else:
            best["error"] = best["error"].clip(lower=floor)
    alloc_order = ["uniform", "optimal"]
    for cls in sorted(best["family"].unique(), key=_family_order):
        color, marker, name = cls.color, cls.marker, cls.paper_name
        sub = best[best["family"] == cls]
        allocs = sorted(
            sub["allocation"].unique(),
            key=lambda a: (alloc_order.index(a) if a in alloc_order else 99, a),
        )
        series = {
            a: sub[sub["allocation"] == a].sort_values("budget")[["budget", "error"]]
            for a in allocs
        }
        if (
            len(series) == 2
            and set(series) == {"uniform", "optimal"}
            and np.array_equal(series["uniform"]["budget"], series["optimal"]["budget"])
            and np.allclose(series["uniform"]["error"], series["optimal"]["error"],
                            rtol=0, atol=1e-12)
        ):
            s = series["uniform"]
            # steps-post: the best error within a budget holds until the next budget listed
            ax.plot(s["budget"], s["error"], color=color, marker=marker, linestyle="-",
                    drawstyle="steps-post", markersize=5.5, linewidth=1.8,
                    label=f"{name}, uniform = optimal")
            continue
        for k, a in enumerate(allocs):
            s = series[a]
            ls = _ALLOCATION_STYLE.get(a, _LINESTYLES[(k + 2) % len(_LINESTYLES)])
            filled = a == "uniform"
            ax.plot(
                s["budget"], s["error"], color=color, marker=marker, linestyle=ls,
                drawstyle="steps-post", markersize=5.5, linewidth=1.8,
                markerfacecolor=color if filled else "white", markeredgewidth=1.2,
                label=f"{name}, {_ALLOCATION_LABEL.get(a, a)}",
            )
    if logx:
        ax.set_xscale("log")
        _log_ticks(ax.xaxis, mticker)
    if logy:
        ax.set_yscale("log")
        if floor is not None:
            ax.set_ylim(bottom=floor / 1.5)
            ax.axhline(floor, color="0.4", linewidth=0.9, linestyle=(0, (1, 2)), zorder=0,
                       label=f"error < {floor:.0e} (zero up to rounding) drawn here")
    else:
        ax.set_ylim(bottom=0)
    ax.set_xlabel("parameters", fontsize=11)
    ax.set_ylabel("relative Frobenius error", fontsize=11)
    ax.tick_params(labelsize=10)
    ax.grid(True, which="major", alpha=0.35)
    if dense_params is not None:
        dense = float(dense_params)
        sec = ax.secondary_xaxis(
            "top", functions=(lambda x: 100.0 * x / dense, lambda p: p * dense / 100.0)
        )
        if logx:
            sec.xaxis.set_major_locator(mticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            sec.xaxis.set_minor_locator(mticker.LogLocator(base=10, subs=np.arange(1, 10)))
            sec.xaxis.set_minor_formatter(mticker.NullFormatter())
        sec.xaxis.set_major_formatter(_percent_formatter(mticker))
        sec.set_xlabel(f"share of the dense matrix's {dense_params:,} parameters", fontsize=10)
        sec.tick_params(labelsize=10)
    # Outside the axes, so it never hides a curve.
    ax.legend(fontsize=9, framealpha=0.95, loc="upper left", bbox_to_anchor=(1.02, 1.0),
              borderaxespad=0.0)
    return ax


# -- 3. error surface ----------------------------------------------------------------------------


def plot_error_surface(
    surface: Surface | pd.DataFrame,
    *,
    family: str | type[Structure] = "grid",
    ax: Axes | None = None,
    budgets: Sequence[int] | None = None,
    dense_params: int | None = None,
    annotate: bool = True,
) -> Axes:
    """Heatmap of the relative error over grid (rows) and uniform rank (columns).

    Cells that do not exist (a rank larger than the grid's smallest block) are hatched grey.
    For every budget ``B`` a line joins, on each grid row, the largest rank whose parameter
    count fits ``B`` (the matched-budget frontier); the best cell on it is starred and named in
    the legend.

    Parameters
    ----------
    surface : Surface or pandas.DataFrame
        The result of :func:`lowrank_blocks.error_surface`, or its ``.to_frame()`` (columns
        ``family``, ``grid``, ``rank``, ``n_params``, ``error``; ``p`` and ``q`` order the
        grids when present).
    family : {'grid', 'diagonal', 'global'} or structure class, default 'grid'
        Which family's rows to draw (a family name, paper name or class, as
        :func:`~lowrank_blocks.structures.structure_type` takes).
    ax : matplotlib Axes, optional
        Where to draw; a new figure by default.
    budgets : sequence of int, optional
        Parameter budgets whose matched-budget lines to draw (labelled ``"B = 224"`` ...).
    dense_params : int, optional
        Parameter count of the dense matrix; the budgets' legend entries then give their share.
    annotate : bool, default True
        Write the error (4 decimals) in every cell when the map has at most 12 rows and 16
        columns.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from lowrank_blocks import error_surface
    >>> from lowrank_blocks.plotting import plot_error_surface
    >>> W = np.random.default_rng(0).standard_normal((16, 16))
    >>> ax = plot_error_surface(error_surface(W, grids=[1, 2, 4]), budgets=[128])
    >>> ax.get_legend().get_texts()[1].get_text().startswith("B = 128")
    True
    >>> import matplotlib.pyplot as plt; plt.close(ax.figure)
    """
    plt = _pyplot()
    import matplotlib.patheffects as pe
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle
    from matplotlib.transforms import offset_copy

    frame = _as_frame(surface, ["family", "grid", "rank", "n_params", "error"], "surface")
    cls = structure_type(family)
    classes = _family_classes(frame["family"])
    if not (classes == cls).any():
        available = ", ".join(repr(c.family) for c in sorted(set(classes), key=_family_order))
        raise ValueError(
            f"family={family!r} has no rows in surface; available: {available}"
        )
    if budgets is None:
        budget_list: list[int] = []
    elif isinstance(budgets, (int, np.integer)) and not isinstance(budgets, bool):
        budget_list = [int(budgets)]
    else:
        budget_list = list(budgets)
    for k, budget in enumerate(budget_list):
        if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
            raise TypeError(f"budgets[{k}]={budget!r} must be an integer")
        if budget < 1:
            raise ValueError(f"budgets[{k}]={budget} must be a positive integer")
    sub = frame[classes == cls].copy()
    sub["rank"] = sub["rank"].astype(np.int64)
    if "p" in sub.columns and "q" in sub.columns:
        order = sub.drop_duplicates("grid").sort_values(["p", "q"])["grid"].tolist()
    else:
        order = sorted(sub["grid"].unique(), key=_grid_order)
    ranks = np.arange(int(sub["rank"].min()), int(sub["rank"].max()) + 1)
    row_of = {g: i for i, g in enumerate(order)}
    n_rows, n_cols = len(order), len(ranks)
    err = np.full((n_rows, n_cols), np.nan)
    params = np.full((n_rows, n_cols), -1, dtype=np.int64)
    rows = sub.groupby(["grid", "rank"], sort=False).agg(error=("error", "min"),
                                                          n_params=("n_params", "min"))
    for (g, r), rec in rows.iterrows():
        err[row_of[g], int(r) - ranks[0]] = float(rec["error"])
        params[row_of[g], int(r) - ranks[0]] = int(rec["n_params"])

    if ax is None:
        small = bool(annotate) and n_rows <= 12 and n_cols <= 16
        per_col, per_row = (0.62, 0.42) if small else (0.36, 0.3)
        n_legend = 1 + len(budget_list)
        width = min(13.0, max(6.0, per_col * n_cols + 2.8))
        height = min(11.0, max(3.6, per_row * n_rows + 1.9 + 0.22 * n_legend))
        _, ax = plt.subplots(figsize=(width, height), layout="constrained")
    fig = ax.figure

    # Missing cells transparent: the hatched background shows through.
    cmap = plt.get_cmap("viridis").with_extremes(bad=(0, 0, 0, 0))
    extent = (ranks[0] - 0.5, ranks[-1] + 0.5, n_rows - 0.5, -0.5)
    ax.add_patch(
        Rectangle((extent[0], -0.5), n_cols, n_rows, facecolor="white",
                  edgecolor=_MISSING_HATCH_COLOR, hatch="///", linewidth=0, zorder=0)
    )
    vmax = float(np.nanmax(err)) if np.isfinite(err).any() else 1.0
    im = ax.imshow(
        np.ma.masked_invalid(err), cmap=cmap, vmin=0.0, vmax=max(vmax, 1e-12),
        extent=extent, aspect="auto", interpolation="nearest", origin="upper", zorder=1,
    )
    cbar = fig.colorbar(im, ax=ax, pad=0.02, fraction=0.05)
    cbar.set_label("relative error", fontsize=11)
    cbar.ax.tick_params(labelsize=9)

    # Ticks: every rank and grid where they fit, otherwise a readable subset.
    col_step = max(1, math.ceil(n_cols / 28))
    ax.set_xticks(ranks[::col_step])
    row_step = max(1, math.ceil(n_rows / 30))
    ax.set_yticks(np.arange(n_rows)[::row_step])
    ax.set_yticklabels(order[::row_step])
    tick_size = 9 if max(n_rows, n_cols) <= 20 else 8 if max(n_rows, n_cols) <= 32 else 7
    ax.tick_params(labelsize=tick_size)
    ax.set_xlabel("rank per block", fontsize=11)
    ax.set_ylabel(cls.grid_axis, fontsize=11)
    ax.set_title(f"{cls.paper_name} ({cls.description}): relative error", fontsize=12)

    annotated = bool(annotate) and n_rows <= 12 and n_cols <= 16
    handles = [Patch(facecolor="white", edgecolor=_MISSING_HATCH_COLOR, hatch="///",
                     label="rank exceeds the smallest block")]
    line_colors = ("white", "#E69F00", "#CC79A7", "#56B4E9", "#F0E442")
    markers = ("o", "s", "D", "v", "P")
    for k, budget in enumerate(budget_list):
        xs, ys, es = [], [], []
        for i in range(n_rows):
            fits = np.flatnonzero((params[i] >= 0) & (params[i] <= budget))
            if fits.size:
                j = int(fits[-1])
                xs.append(int(ranks[j]))
                ys.append(i)
                es.append(err[i, j])
        color = line_colors[k % len(line_colors)]
        ls = _LINESTYLES[k % len(_LINESTYLES)]
        share = f" ({100.0 * budget / dense_params:.3g} % of dense)" if dense_params else ""
        if not xs:
            handles.append(Patch(facecolor="none", edgecolor="none",
                                 label=f"B = {budget}{share}: no grid fits"))
            continue
        b = int(np.argmin(es))
        label = f"B = {budget}{share}: best {order[ys[b]]}, r={xs[b]}, error {es[b]:.4f} (★)"
        stroke = [pe.Stroke(linewidth=4.0, foreground="black"), pe.Normal()]
        if annotated:
            # Numbers stay readable: outline the frontier cells instead of covering them.
            inset = 0.05 + 0.08 * (k % 4)
            for x, y in zip(xs, ys):
                ax.add_patch(Rectangle((x - 0.5 + inset, y - 0.5 + inset), 1 - 2 * inset,
                                       1 - 2 * inset, facecolor="none", edgecolor=color,
                                       linewidth=2.0, linestyle=ls, zorder=3,
                                       path_effects=stroke))
            ax.plot(xs[b] + 0.5 - inset, ys[b] - 0.5 + inset, marker="*", markersize=13,
                    color=color, markeredgecolor="black", markeredgewidth=0.9,
                    linestyle="none", zorder=6, clip_on=False)
            handles.append(Line2D([], [], color=color, linestyle=ls, linewidth=2.0,
                                  path_effects=stroke, label=label))
        else:
            (line,) = ax.plot(xs, ys, color=color, linestyle=ls, linewidth=2.0,
                              marker=markers[k % len(markers)], markersize=5,
                              markeredgecolor="black", zorder=3, path_effects=stroke,
                              label=label)
            ax.plot(xs[b], ys[b], marker="*", markersize=15, color=color,
                    markeredgecolor="black", markeredgewidth=1.0, linestyle="none", zorder=4)
            handles.append(line)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    # The legend hangs a fixed distance below the axes (clear of tick and axis labels).
    below = offset_copy(ax.transAxes, fig=fig, y=-(tick_size + 11 + 19), units="points")
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0),
              bbox_transform=below, ncol=1, fontsize=9, framealpha=0.95)

    if annotated:
        cell_w, cell_h = _cell_points(ax, n_cols, n_rows)
        size = float(np.clip(min(cell_w / 4.0, cell_h / 2.0), 0.0, 10.0))
        if size >= 5.0:
            norm = im.norm
            for i in range(n_rows):
                for j in range(n_cols):
                    if np.isfinite(err[i, j]):
                        rgba = cmap(norm(err[i, j]))
                        ax.text(ranks[j], i, f"{err[i, j]:.4f}", ha="center", va="center",
                                fontsize=size, color=_text_color(rgba), zorder=5)
    return ax


def _cell_points(ax: Axes, n_cols: float, n_rows: float) -> tuple[float, float]:
    """Width and height in points of one cell of an ``n_rows × n_cols`` map, after layout."""
    fig = ax.figure
    fig.draw_without_rendering()
    bbox = ax.get_window_extent()
    to_pt = 72.0 / fig.dpi
    return bbox.width * to_pt / max(n_cols, 1), bbox.height * to_pt / max(n_rows, 1)


# -- 4. block map --------------------------------------------------------------------------------


def _effective_rank(block: np.ndarray, energy: float) -> int:
    """Smallest number of singular values holding ``energy`` of the block's energy (0 if zero)."""
    s = np.linalg.svd(block, compute_uv=False)
    sq = s * s
    total = float(sq.sum())
    if total == 0.0:
        return 0
    cum = np.cumsum(sq)
    # A relative tolerance so that energy=1.0 ignores rounding-level tails.
    target = energy * total * (1.0 - 1e-12)
    return int(min(np.searchsorted(cum, target, side="left") + 1, len(s)))


def plot_block_map(
    W: Any,
    structure: Structure,
    *,
    axes: Sequence[Axes] | None = None,
    energy: float = 0.99,
) -> Figure:
    """Per-block energy share and effective rank over a structure's partition.

    Left: ``‖W_b‖_F² / ‖W‖_F²`` for every block (in %).  Right: the effective rank of every
    block, the number of singular values needed to keep ``energy`` of that block's energy (0
    for a zero block).  Blocks are drawn at their true sizes, so ragged partitions keep their
    unequal parts; blocks that carry no factor pair (off-diagonal blocks of a diagonal
    structure) are outlined differently.  Values are written in the cells for grids up to
    16 × 16.

    Parameters
    ----------
    W : array_like, shape (m, n)
        The matrix (any backend; singular values are computed in float64 NumPy).
    structure : Structure
        Gives the partition (``structure.partition(W.shape)``) and the active blocks.
    axes : pair of matplotlib Axes, optional
        Where to draw; a new figure by default.
    energy : float, default 0.99
        Share of a block's energy its effective rank must keep, in (0, 1].

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from lowrank_blocks import BlockGrid
    >>> from lowrank_blocks.plotting import plot_block_map
    >>> W = np.kron(np.eye(2), np.ones((4, 4)))   # two rank-1 diagonal blocks
    >>> fig = plot_block_map(W, BlockGrid(2, rank=1))
    >>> fig.axes[1].collections[0].get_array().reshape(2, 2).tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    >>> import matplotlib.pyplot as plt; plt.close(fig)
    """
    plt = _pyplot()
    import matplotlib.patheffects as pe
    from matplotlib.colors import BoundaryNorm
    from matplotlib.patches import Rectangle

    if not isinstance(structure, Structure):
        raise TypeError(
            f"structure={structure!r} must be a Global, DiagonalBlocks or BlockGrid instance"
        )
    if isinstance(energy, bool) or not isinstance(energy, (int, float, np.floating)):
        raise TypeError(f"energy={energy!r} must be a number in (0, 1]")
    if not 0.0 < float(energy) <= 1.0:
        raise ValueError(f"energy={energy!r} is not allowed; it must be in (0, 1]")
    Wn = np.asarray(_as_matrix_np(W), dtype=np.float64)
    part = structure.partition(Wn.shape)
    p, q = part.grid
    m, n = part.shape
    total = float(np.sum(Wn * Wn))
    share = np.zeros((p, q))
    eff = np.zeros((p, q), dtype=np.int64)
    for i in range(p):
        for j in range(q):
            block = Wn[part.block_slices(i, j)]
            e = float(np.sum(block * block))
            share[i, j] = e / total if total > 0 else 0.0
            eff[i, j] = _effective_rank(block, float(energy))

    if axes is None:
        aspect = m / n
        panel_w = 4.6
        fig, created = plt.subplots(
            1, 2, figsize=(2 * panel_w + 1.4, min(9.0, max(3.6, panel_w * aspect + 0.9))),
            layout="constrained",
        )
        ax_list = list(created)
        fig.suptitle(
            f"{structure.paper_name}: {structure.label} on a {m} × {n} matrix", fontsize=12
        )
    else:
        ax_list = _axes_list(axes, 2, "axes")
        fig = ax_list[0].figure

    x_edges = np.asarray(part.col_offsets, dtype=float)
    y_edges = np.asarray(part.row_offsets, dtype=float)
    x_mid = (x_edges[:-1] + x_edges[1:]) / 2
    y_mid = (y_edges[:-1] + y_edges[1:]) / 2
    active = set(structure.blocks)
    write = p <= 16 and q <= 16
    max_rank = int(eff.max())
    rank_cmap = plt.get_cmap("cividis", max_rank + 1)
    panels = [
        (100.0 * share, plt.get_cmap("viridis"), None, "energy share of each block (%)",
         _format_share),
        (eff.astype(float), rank_cmap,
         BoundaryNorm(np.arange(-0.5, max_rank + 1.5), rank_cmap.N),
         f"effective rank ({100 * float(energy):g} % of block energy)",
         lambda v: f"{int(v)}"),
    ]
    cells = []
    for ax, (values, cmap, norm, title, fmt) in zip(ax_list, panels):
        kwargs = {"norm": norm} if norm is not None else {"vmin": 0.0}
        mesh = ax.pcolormesh(x_edges, y_edges, values, cmap=cmap, edgecolors="white",
                             linewidth=0.6 if max(p, q) <= 32 else 0.0, **kwargs)
        ax.set_xlim(0, n)
        ax.set_ylim(m, 0)  # matrix orientation: row 0 at the top
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("column", fontsize=10)
        ax.set_ylabel("row", fontsize=10)
        if max(p, q) <= 8:  # ticks at the part boundaries (ragged ones included)
            ax.set_xticks(part.col_offsets)
            ax.set_yticks(part.row_offsets)
        ax.tick_params(labelsize=8)
        cbar = fig.colorbar(mesh, ax=ax, fraction=0.046, pad=0.03)
        cbar.ax.tick_params(labelsize=9)
        if norm is not None:
            step = max(1, math.ceil((max_rank + 1) / 12))
            cbar.set_ticks(np.arange(0, max_rank + 1, step))
        cells.append((ax, values, cmap, mesh.norm, fmt))
        if len(active) < p * q:  # outline the blocks that carry a factor pair
            for i, j in active:
                rect = Rectangle((x_edges[j], y_edges[i]), x_edges[j + 1] - x_edges[j],
                                 y_edges[i + 1] - y_edges[i], facecolor="none",
                                 edgecolor="#E69F00", linewidth=2.2, clip_on=False,
                                 path_effects=[pe.Stroke(linewidth=4.0, foreground="black"),
                                               pe.Normal()])
                ax.add_patch(rect)
    if len(active) < p * q:
        ax_list[0].annotate(
            "outlined: blocks with a factor pair", xy=(0.0, -0.02), xycoords="axes fraction",
            va="top", fontsize=9, annotation_clip=False,
            xytext=(0, -28), textcoords="offset points",
        )
    if write:
        # Font from the real cell size after layout; cells too narrow for the text stay blank.
        ax0 = ax_list[0]
        cell_w, cell_h = _cell_points(ax0, n, m)  # points per matrix column / row
        widths = np.diff(x_edges) * cell_w
        heights = np.diff(y_edges) * cell_h
        size = float(min(10.0, (np.median(widths) - 2.0) / 2.2, np.median(heights) / 1.8))
        if size >= 4.5:
            for ax, values, cmap, norm, fmt in cells:
                for i in range(p):
                    for j in range(q):
                        text = fmt(values[i, j])
                        if len(text) * 0.7 * size + 2.0 > widths[j] or size * 1.2 > heights[i]:
                            continue
                        ax.text(x_mid[j], y_mid[i], text, ha="center", va="center",
                                fontsize=size, color=_text_color(cmap(norm(values[i, j]))))
    return fig


def _format_share(percent: float) -> str:
    """A block's energy share in % for a cell: exact zeros as '0', others to one decimal.

    A block with some energy that rounds away reads '0.0', so it is never confused with an
    empty block ('0').
    """
    return "0" if percent == 0.0 else f"{percent:.1f}"


# -- 5. studies ----------------------------------------------------------------------------------


def plot_study(
    study: Study,
    *,
    axes: Sequence[Axes] | None = None,
    reference: str | None = None,
) -> Figure:
    """Paired error differences and win rates of a study over many matrices.

    Left: for every pair ``(a, b)`` of ``study.paired``, a histogram (density, its own bins) of
    ``error_a − error_b`` over the matrices, with a line at 0 (left of it, ``a`` is better), a
    dotted line at the mean, and the mean with its bootstrap confidence interval in the legend
    (the numbers of ``study.paired``).  Right: per configuration, the share of matrices where it
    has the strictly smallest error (solid) and where it ties for the smallest (hatched).

    Parameters
    ----------
    study : lowrank_blocks.studies.Study
        The result of :func:`lowrank_blocks.compare_many`.
    axes : pair of matplotlib Axes, optional
        Where to draw; a new figure by default.
    reference : str, optional
        A configuration name (an index entry of ``study.summary``); only pairs involving it
        are shown.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from lowrank_blocks import BlockGrid, Global, compare_many
    >>> from lowrank_blocks.plotting import plot_study
    >>> X = np.random.default_rng(0).standard_normal((40, 8, 8))
    >>> study = compare_many(X, structures=[Global(2), BlockGrid(2, 1)], n_boot=200,
    ...                      progress=False)
    >>> fig = plot_study(study)
    >>> len(fig.axes)
    2
    >>> import matplotlib.pyplot as plt; plt.close(fig)
    """
    plt = _pyplot()
    if not isinstance(study, Study):
        raise TypeError(
            f"study must be a lowrank_blocks.studies.Study (from compare_many); "
            f"got {type(study).__name__}"
        )
    summary = study.summary
    configs = list(summary.index)
    paired = study.paired
    if reference is not None:
        if reference not in configs:
            raise ValueError(
                f"reference={reference!r} is not a configuration of the study; "
                f"available: {', '.join(map(repr, configs))}"
            )
        paired = paired[(paired["a"] == reference) | (paired["b"] == reference)]
    pair_colors = ("#CC79A7", "#56B4E9", "#E69F00", "#0072B2", "#D55E00", "#009E73", "#000000")
    wide = study.errors()

    if axes is None:
        fig, created = plt.subplots(
            1, 2, figsize=(13.5, 5.6), layout="constrained",
            gridspec_kw={"width_ratios": [1.25, 1.0]},
        )
        ax_hist, ax_bar = created
        n_mat = int(wide.shape[0])
        fig.suptitle(
            f"{n_mat} matrices" + (f", budget {study.budget}" if study.budget else ""),
            fontsize=12,
        )
    else:
        ax_hist, ax_bar = _axes_list(axes, 2, "axes")
        fig = ax_hist.figure

    # -- left: paired differences --
    conf = f"{100 * study.confidence:g} % CI"
    if paired.empty:
        ax_hist.text(0.5, 0.5, "no pairs to compare\n(one configuration)", ha="center",
                     va="center", transform=ax_hist.transAxes, fontsize=11)
    # Styles follow a pair's row in study.paired, so they stay put when reference filters.
    positions = [study.paired.index.get_loc(i) for i in paired.index]
    for k, row in zip(positions, paired.itertuples(index=False)):
        diff = (wide[row.a] - wide[row.b]).dropna().to_numpy(dtype=float)
        color = pair_colors[k % len(pair_colors)]
        ls = _LINESTYLES[k % len(_LINESTYLES)]
        hatch = _HATCHES[k % len(_HATCHES)]
        label = (f"{row.a}  −  {row.b}\nmean {row.mean_diff:+.4f}, {conf} "
                 f"[{row.ci_low:+.4f}, {row.ci_high:+.4f}]")
        spread = float(np.ptp(diff)) if diff.size else 0.0
        if spread == 0.0:  # every matrix gives the same difference: a spike, not a histogram
            value = float(diff[0]) if diff.size else 0.0
            ax_hist.axvline(value, color=color, linestyle=ls, linewidth=2.5,
                            label=label + " (all equal)")
            continue
        bins = np.histogram_bin_edges(diff, bins="auto")
        if len(bins) > 61:
            bins = np.histogram_bin_edges(diff, bins=60)
        ax_hist.hist(diff, bins=bins, density=True, histtype="stepfilled",
                     facecolor=(*_rgb(color), 0.25), edgecolor=color, hatch=hatch,
                     linewidth=1.6, linestyle=ls, label=label)
        ax_hist.axvline(row.mean_diff, color=color, linestyle=":", linewidth=1.4)
    ax_hist.axvline(0.0, color="black", linewidth=1.2, zorder=0)
    ax_hist.set_xlabel("error difference  error(a) − error(b)   (< 0: a better)", fontsize=10.5)
    ax_hist.set_ylabel("density", fontsize=10.5)
    ax_hist.set_title("paired differences (dotted: mean)" if reference is None else
                      f"paired differences with {reference} (dotted: mean)", fontsize=11)
    ax_hist.tick_params(labelsize=9)
    if not paired.empty:
        ax_hist.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8.5,
                       ncol=1, framealpha=0.95, handlelength=2.6)

    # -- right: win rates --
    per_config = study.per_matrix.drop_duplicates("config").set_index("config")
    family = per_config["family"] if "family" in per_config.columns else pd.Series(dtype=object)
    n_rows = len(configs)
    ypos = np.arange(n_rows)
    n_mat = summary["n_matrices"].astype(float).clip(lower=1).to_numpy()
    win = summary["win_rate"].to_numpy(dtype=float)
    tie = summary["ties"].to_numpy(dtype=float) / n_mat
    for k, config in enumerate(configs):
        name = family.get(config)
        color = structure_type(name).color if isinstance(name, (str, type)) else _NO_FAMILY_COLOR
        ax_bar.barh(ypos[k], win[k], color=color, edgecolor="black", linewidth=0.8,
                    height=0.6)
        if tie[k] > 0:
            ax_bar.barh(ypos[k], tie[k], left=win[k], color=(*_rgb(color), 0.3),
                        edgecolor="black", hatch="///", linewidth=0.8, height=0.6)
        text = f"{win[k]:.1%}" + (f" + {tie[k]:.1%} ties" if tie[k] > 0 else "")
        ax_bar.text(win[k] + tie[k] + 0.015, ypos[k], text, va="center", fontsize=9.5)
    ax_bar.set_yticks(ypos)
    ax_bar.set_yticklabels(configs, fontsize=9.5)
    ax_bar.invert_yaxis()
    ax_bar.set_xlim(0, 1.3)
    ax_bar.set_xticks(np.linspace(0, 1, 6))
    ax_bar.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _p: f"{100 * v:.0f} %"))
    ax_bar.tick_params(axis="x", labelsize=9)
    ax_bar.set_xlabel("share of matrices", fontsize=10.5)
    ax_bar.set_title("who has the smallest error", fontsize=11)
    ax_bar.grid(True, axis="x", alpha=0.3)
    ax_bar.set_axisbelow(True)
    from matplotlib.patches import Patch

    handles = [Patch(facecolor="0.45", edgecolor="black", label="wins")]
    if (tie > 0).any():
        handles.append(Patch(facecolor="0.85", edgecolor="black", hatch="///",
                             label="ties for the smallest error"))
    else:
        handles.append(Patch(facecolor="none", edgecolor="none", label="(no ties)"))
    ax_bar.legend(handles=handles, loc="lower right", fontsize=9, framealpha=0.95)
    return fig


def _rgb(color: str) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    return to_rgb(color)


# -- layer by layer -------------------------------------------------------------------------------


def _layer_frame(analysis: Any) -> tuple[pd.DataFrame, list[Any]]:
    """The per-matrix frame of a LayerAnalysis (or the frame itself) and its family classes."""
    frame = analysis.to_frame() if hasattr(analysis, "to_frame") else analysis
    frame = _as_frame(frame, ["name"], "analysis")
    families = [cls for cls in STRUCTURE_TYPES if f"error_{cls.family}" in frame.columns]
    if not families:
        raise ValueError("analysis has no error_<family> column; pass analyze_layers' result")
    return frame, families


def plot_layer_heatmap(
    analysis: Any, *, optimal: bool = False, ax: Axes | None = None, annotate: bool | None = None
) -> Axes:
    """Relative error of every family (columns) for every matrix (rows) at its budget.

    Readable for a few hundred matrices: one thin row each, names shown on a subset of rows
    when they would collide, the winner of each row marked.

    Parameters
    ----------
    analysis : LayerAnalysis or DataFrame
        The result of :func:`lowrank_blocks.layers.analyze_layers` (or its ``to_frame()``).
    optimal : bool, default False
        Errors with exactly optimal per-block ranks (rank integers charged) instead of uniform.
    ax : matplotlib Axes, optional
    annotate : bool, optional
        Write the errors in the cells (default: when there are at most 40 rows).
    """
    plt = _pyplot()
    frame, families = _layer_frame(analysis)
    suffix = "_optimal" if optimal else ""
    values = np.column_stack([frame[f"error_{c.family}{suffix}"].to_numpy(dtype=float)
                              for c in families])
    n_rows = len(frame)
    if ax is None:
        per_row = 0.18 if n_rows <= 60 else 0.08
        height = min(40.0, 1.5 + per_row * max(n_rows, 4))
        _, ax = plt.subplots(figsize=(3.2 + 1.3 * len(families), height))
    im = ax.imshow(np.ma.masked_invalid(values), cmap="viridis_r", vmin=0.0,
                   vmax=max(1e-12, float(np.nanmax(values))) if np.isfinite(values).any() else 1,
                   aspect="auto", interpolation="nearest")
    ax.figure.colorbar(im, ax=ax, pad=0.02, fraction=0.08).set_label("relative error")
    ax.set_xticks(range(len(families)))
    ax.set_xticklabels([f"{c.paper_name}\n({c.description})" for c in families], fontsize=9)
    step = max(1, math.ceil(n_rows / 60))
    ax.set_yticks(range(0, n_rows, step))
    ax.set_yticklabels([str(x) for x in frame["name"].iloc[::step]],
                       fontsize=8 if n_rows <= 60 else 6)
    best = np.nanargmin(np.where(np.isnan(values), np.inf, values), axis=1)
    has = np.isfinite(values).any(axis=1)
    annotated = annotate if annotate is not None else n_rows <= 40
    if annotated:  # the numbers, the smallest of each row in bold
        for i in range(n_rows):
            for j in range(len(families)):
                if np.isfinite(values[i, j]):
                    ax.text(j, i, f"{values[i, j]:.3f}", ha="center", va="center", fontsize=7,
                            fontweight="bold" if has[i] and j == best[i] else "normal",
                            color=_text_color(im.cmap(im.norm(values[i, j]))))
    else:
        ax.scatter(best[has], np.arange(n_rows)[has], marker="*",
                   s=60 if n_rows <= 60 else 14, color="white", edgecolor="black",
                   linewidths=0.6, zorder=3, label="smallest error in the row")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.06 if n_rows > 20 else -0.15),
                  fontsize=8, frameon=False)
    kind = "optimal per-block ranks, rank integers charged" if optimal else "uniform ranks"
    bold = " (bold: smallest in the row)" if annotated else ""
    ax.set_title(f"{n_rows} matrices: error at each matrix's budget ({kind}){bold}", fontsize=10)
    return ax


def plot_layer_bars(analysis: Any, *, optimal: bool = False, ax: Axes | None = None) -> Axes:
    """Per matrix, the error of each family as grouped horizontal bars (one group a matrix).

    The families keep their colours and hatches everywhere in the toolkit; with many matrices
    the bars become thin lines and only a subset of names is written.
    """
    plt = _pyplot()
    frame, families = _layer_frame(analysis)
    suffix = "_optimal" if optimal else ""
    n_rows = len(frame)
    if ax is None:
        height = min(40.0, 1.5 + 0.22 * max(n_rows, 4))
        _, ax = plt.subplots(figsize=(8, height))
    width = 0.8 / len(families)
    y = np.arange(n_rows)
    for k, cls in enumerate(families):
        err = frame[f"error_{cls.family}{suffix}"].to_numpy(dtype=float)
        ax.barh(y - 0.4 + (k + 0.5) * width, np.nan_to_num(err, nan=0.0), height=width,
                color=cls.color, hatch=_HATCHES[k % len(_HATCHES)] if n_rows <= 60 else None,
                edgecolor="white" if n_rows <= 60 else cls.color, linewidth=0.3,
                label=f"{cls.paper_name} ({cls.description})")
    step = max(1, math.ceil(n_rows / 60))
    ax.set_yticks(y[::step])
    ax.set_yticklabels([str(x) for x in frame["name"].iloc[::step]],
                       fontsize=8 if n_rows <= 60 else 6)
    ax.invert_yaxis()
    ax.set_xlabel("relative Frobenius error at the matrix's budget")
    ax.set_xlim(0, 1.0)
    ax.grid(axis="x", alpha=0.3)
    kind = "optimal per-block ranks" if optimal else "uniform ranks"
    ax.set_title(f"{n_rows} matrices ({kind})", fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25 if n_rows <= 8 else -0.08),
              ncol=len(families), fontsize=8, frameon=False)
    return ax
