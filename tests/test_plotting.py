"""Figures of lowrank_blocks.plotting: rendered for real, checked for content and numbers.

Each figure is drawn from library results on a small matrix, saved as PNG and read back to
check that something was drawn.  Numbers in titles are checked against the Approximation's own
fields formatted independently here, and on the MNIST digit against the paper's Table I.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot

import matplotlib.image as mimage  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lowrank_blocks import (  # noqa: E402
    BlockGrid,
    Curve,
    DiagonalBlocks,
    Global,
    Search,
    approximate,
    best_approximation,
    compare_many,
    error_surface,
    error_vs_budget,
)
from lowrank_blocks.approximate import Approximation  # noqa: E402
from lowrank_blocks.plotting import (  # noqa: E402
    plot_block_map,
    plot_error_surface,
    plot_error_vs_budget,
    plot_reconstructions,
    plot_study,
)

RNG = np.random.default_rng(5)
W28 = RNG.standard_normal((28, 28))
CONFIGS = (Global(4), DiagonalBlocks(4, 4), BlockGrid(2, 2))  # 224 parameters each on 28 × 28


@pytest.fixture(autouse=True)
def _no_show_and_close(monkeypatch):
    """No function may call plt.show(); every figure is closed after the test."""

    def forbidden(*args, **kwargs):
        raise AssertionError("plotting functions must not call plt.show()")

    monkeypatch.setattr(plt, "show", forbidden)
    yield
    plt.close("all")


def _assert_drawn(fig, tmp_path, name: str) -> None:
    """Save ``fig`` as PNG and check the image is not blank."""
    path = tmp_path / f"{name}.png"
    fig.savefig(path, dpi=50)
    img = mimage.imread(path)[..., :3]
    gray = img.mean(axis=2)
    assert gray.std() > 0.05, f"{name}: image looks blank (pixel std {gray.std():.4f})"
    background = img[0, 0]  # the figure's corner: facecolor
    differs = np.any(np.abs(img - background) > 0.02, axis=2).mean()
    assert differs > 0.01, f"{name}: only {differs:.2%} of pixels differ from the background"


# -- reconstructions -----------------------------------------------------------------------------


def test_reconstructions_titles_carry_the_table_numbers(tmp_path):
    approxs = [approximate(W28, s) for s in CONFIGS]
    fig = plot_reconstructions(W28, approxs)
    _assert_drawn(fig, tmp_path, "reconstructions")
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 4 and titles[0].startswith("Original")
    for approx, title in zip(approxs, titles[1:]):
        assert f"{approx.n_params} params" in title
        assert f"error {round(approx.error, 4):.4f}" in title
        assert approx.structure.paper_name in title
        assert approx.structure.label in title
        assert "rank ints" not in title
    assert titles[3].startswith("Localized LoRA\ngrid 2×2, r=2\n224 params, error ")


def test_reconstructions_share_the_colour_limits_of_the_original():
    approxs = [approximate(W28, s) for s in CONFIGS]
    fig = plot_reconstructions(W28, approxs, show_blocks=False)
    limits = {ax.images[0].get_clim() for ax in fig.axes}
    assert limits == {(W28.min(), W28.max())}
    assert all(not ax.lines for ax in fig.axes)  # no block boundaries


def test_reconstructions_draws_the_block_boundaries():
    fig = plot_reconstructions(W28, [approximate(W28, BlockGrid((3, 2), 1))])
    ax = fig.axes[1]
    # 3 × 2 grid on 28 × 28: rows split 10, 9, 9 and columns 14, 14.
    ys = [line.get_ydata() for line in ax.lines]
    xs = [line.get_xdata() for line in ax.lines]
    hlines = sorted(y[0] for y in ys if y[0] == y[1])
    vlines = sorted(x[0] for x in xs if x[0] == x[1])
    assert hlines == [9.5, 18.5] and vlines == [13.5]


def test_reconstructions_search_title_counts_rank_integers(tmp_path):
    approx = approximate(W28, BlockGrid(2, rank=(3, 1, 0, 2)))
    found = Search(approx, budget=172, table=Curve((28, 28), "exact", True, []))
    fig = plot_reconstructions(W28, [found])
    title = fig.axes[1].get_title()
    # Σ r_b (m_b + n_b) = (3 + 1 + 0 + 2) · 28 = 168; four per-block ranks stored.
    assert title.startswith("Best found\n")
    assert "168 params + 4 rank ints" in title
    assert f"error {approx.error:.4f}" in title


def test_reconstructions_best_approximation_and_custom_titles():
    best = best_approximation(W28[:8, :8], 48)
    assert isinstance(best, Search) and isinstance(best.approximation, Approximation)
    fig = plot_reconstructions(W28[:8, :8], [best], titles=["my search"])
    title = fig.axes[1].get_title()
    assert title.startswith("my search\n") and f"error {best.error:.4f}" in title
    assert best.structure.label in title and f"{best.n_params} params" in title
    assert (f"+ {best.rank_overhead} rank ints" in title) == (best.rank_overhead > 0)
    # A single Search (not in a list) is drawn as well, headed "Best found".
    fig = plot_reconstructions(W28[:8, :8], best)
    assert fig.axes[1].get_title().startswith("Best found\n" + best.structure.paper_name)


def test_reconstructions_uses_given_axes():
    fig, axes = plt.subplots(1, 3)
    out = plot_reconstructions(W28, [approximate(W28, s) for s in CONFIGS[:2]], axes=axes)
    assert out is fig
    assert all(len(ax.images) == 1 for ax in axes)


def test_reconstructions_bad_input():
    approx = approximate(W28, Global(2))
    with pytest.raises(ValueError, match="shape"):
        plot_reconstructions(W28[:20], [approx])
    with pytest.raises(TypeError, match=r"approximations\[0\] is a Global, not an Approximation"):
        plot_reconstructions(W28, [Global(2)])
    with pytest.raises(ValueError, match="titles"):
        plot_reconstructions(W28, [approx], titles=["a", "b"])
    with pytest.raises(ValueError, match="axes"):
        plot_reconstructions(W28, [approx], axes=plt.subplots(1, 3)[1])


# -- error versus budget -------------------------------------------------------------------------


def test_error_vs_budget_lines_labels_and_secondary_axis(tmp_path):
    # Uncharged rank integers: the per-block allocation differs from the uniform one (charged,
    # uniform ranks are optimal at every budget of this Gaussian matrix: one line per family).
    curve = error_vs_budget(W28, range(56, 785, 56), count_rank_overhead=False)
    ax = plot_error_vs_budget(curve, dense_params=28 * 28)
    _assert_drawn(ax.figure, tmp_path, "error_vs_budget")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    # LoRA has one block: its optimal allocation is its uniform one, drawn once.
    assert "LoRA, uniform = optimal" in labels
    for method in ("MELoRA", "Localized LoRA"):
        assert f"{method}, uniform rank" in labels
        assert f"{method}, optimal per-block ranks" in labels
    assert len(ax.lines) == 5
    assert ax.get_xlabel() == "parameters"
    assert ax.get_ylabel() == "relative Frobenius error"
    assert ax.get_xscale() == "log"
    secondary = [c for c in ax.child_axes if type(c).__name__ == "SecondaryAxis"]
    assert len(secondary) == 1
    # The lines carry the table's values exactly.
    line = next(li for li in ax.lines if li.get_label() == "Localized LoRA, uniform rank")
    frame = curve.to_frame()
    rows = frame[(frame["paper_name"] == "Localized LoRA") & (frame["allocation"] == "uniform")]
    rows = rows.sort_values("budget")
    np.testing.assert_array_equal(line.get_xdata(), rows["budget"].to_numpy())
    np.testing.assert_array_equal(line.get_ydata(), rows["error"].to_numpy())


def test_error_vs_budget_takes_the_curve_or_its_frame_and_styles_from_the_classes():
    curve = error_vs_budget(W28, range(56, 785, 112))
    from_curve = plot_error_vs_budget(curve)
    from_frame = plot_error_vs_budget(curve.to_frame())
    for a, b in zip(from_curve.lines, from_frame.lines, strict=True):
        assert a.get_label() == b.get_label()
        np.testing.assert_array_equal(a.get_ydata(), b.get_ydata())
    # Names, colours and markers are the structure classes' own; the order is the paper's.
    first = {}
    for li in from_curve.lines:
        first.setdefault(li.get_label().split(",")[0], li)
    assert list(first) == ["LoRA", "MELoRA", "Localized LoRA"]
    for cls in (Global, DiagonalBlocks, BlockGrid):
        li = first[cls.paper_name]
        assert li.get_color() == cls.color and li.get_marker() == cls.marker
    # The Okabe-Ito colours the figures always had.
    assert (Global.color, DiagonalBlocks.color, BlockGrid.color) == (
        "#0072B2", "#D55E00", "#009E73")


def test_error_vs_budget_family_column_may_hold_classes_and_one_family():
    frame = error_vs_budget(W28, [112, 224], families=["grid"],
                            count_rank_overhead=False).to_frame()
    ax = plot_error_vs_budget(frame.assign(family=[BlockGrid] * len(frame)), logx=False)
    assert {li.get_label() for li in ax.lines} == {
        "Localized LoRA, uniform rank", "Localized LoRA, optimal per-block ranks"}


def test_error_vs_budget_search_table():
    best = best_approximation(W28, 224, grids=[2, 4])
    ax = plot_error_vs_budget(best)  # the table searched, one budget
    assert all(li.get_xdata().tolist() == [224] for li in ax.lines)
    errors = best.to_frame().groupby("paper_name")["error"].min()
    assert min(li.get_ydata()[0] for li in ax.lines) == errors.min() == best.error


def test_error_vs_budget_styles_differ_for_grayscale():
    ax = plot_error_vs_budget(error_vs_budget(W28, range(56, 785, 112)))
    styles = {(li.get_marker(), li.get_linestyle(), li.get_markerfacecolor()) for li in ax.lines}
    assert len(styles) == len(ax.lines)  # distinguishable without colour


def test_error_vs_budget_uses_given_ax_and_log_y_floor():
    fig, ax = plt.subplots()
    rank2 = W28[:, :2] @ W28[:2, :]  # rank 2: Global(2) at 112 parameters is exact
    curve = error_vs_budget(rank2, [56, 112, 224])
    out = plot_error_vs_budget(curve, ax=ax, logx=False, logy=True)
    assert out is ax and ax.get_yscale() == "log"
    assert ax.get_ylim()[0] > 0
    assert any("zero up to rounding" in t.get_text() for t in ax.get_legend().get_texts())


def test_error_vs_budget_bad_input():
    with pytest.raises(ValueError, match="budget"):
        plot_error_vs_budget(error_surface(W28, grids=[2]))
    with pytest.raises(ValueError, match="dense_params"):
        plot_error_vs_budget(error_vs_budget(W28, [224]), dense_params=0)
    with pytest.raises(TypeError, match="Curve"):
        plot_error_vs_budget([1, 2, 3])
    # A table with the old column names says what changed.
    old = error_vs_budget(W28, [224]).to_frame().rename(columns={"family": "structure_",
                                                               "paper_name": "method"})
    with pytest.raises(ValueError, match="lacks the column.*family.*'paper_name'"):
        plot_error_vs_budget(old)
    frame = error_vs_budget(W28, [224]).to_frame()
    with pytest.raises(ValueError, match="family='blocks' is not allowed"):
        plot_error_vs_budget(frame.assign(family="blocks"))
    with pytest.raises(ValueError, match="empty"):
        plot_error_vs_budget(frame.iloc[:0])


# -- error surface -------------------------------------------------------------------------------


def test_error_surface_heatmap_mask_and_budget_line(tmp_path):
    surface = error_surface(W28, grids=[1, 2, 4, 7, 14])
    ax = plot_error_surface(surface, budgets=[224, 448], dense_params=784)
    _assert_drawn(ax.figure, tmp_path, "surface")
    data = ax.images[0].get_array()
    assert data.shape == (5, 28)  # grids × ranks 1..28
    # Grid K × K on 28 × 28 allows ranks up to 28 / K: 28 + 14 + 7 + 4 + 2 cells exist.
    assert int((~np.ma.getmaskarray(data)).sum()) == 28 + 14 + 7 + 4 + 2
    grids = [t.get_text() for t in ax.get_yticklabels()]
    assert grids == ["1×1", "2×2", "4×4", "7×7", "14×14"]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    b224 = next(t for t in labels if t.startswith("B = 224"))
    # At 224 parameters: 1×1 r=4, 2×2 r=2, 4×4 r=1 (closed form r (q m + p n)); best of them.
    errs = {
        s.label: approximate(W28, s).error
        for s in (BlockGrid(1, 4), BlockGrid(2, 2), BlockGrid(4, 1))
    }
    best_label = min(errs, key=errs.get)
    assert f"error {errs[best_label]:.4f}" in b224
    line = next(li for li in ax.lines if li.get_label() == b224)
    assert line.get_xdata().tolist() == [4, 2, 1] and line.get_ydata().tolist() == [0, 1, 2]
    assert any(t.startswith("B = 448") for t in labels)
    assert ax.figure.axes[-1].get_ylabel() == "relative error"  # the colorbar


def test_error_surface_annotates_small_maps_only():
    small = error_surface(W28, grids=[1, 2, 4], max_params=448)  # 3 grids × ranks 1..8
    ax = plot_error_surface(small)
    texts = [t.get_text() for t in ax.texts]
    n_cells = int((~np.ma.getmaskarray(ax.images[0].get_array())).sum())
    assert len(texts) == n_cells
    value = small.to_frame().query("family == 'grid' and p == 2 and rank == 2")["error"].iloc[0]
    assert f"{value:.4f}" in texts
    big = error_surface(W28, grids=[1, 2, 4])  # 28 rank columns: too many to annotate
    assert not plot_error_surface(big).texts
    assert not plot_error_surface(small, annotate=False).texts


def test_error_surface_other_family_given_ax_and_bad_input():
    surface = error_surface(W28, grids=[2, 4], diagonal=[2, 4])
    fig, ax = plt.subplots()
    assert plot_error_surface(surface, family="diagonal", ax=ax, budgets=[112]) is ax
    assert ax.get_title() == "MELoRA (diagonal blocks): relative error"
    with pytest.raises(ValueError, match="family='blocks' is not allowed"):
        plot_error_surface(surface, family="blocks")
    with pytest.raises(ValueError, match="budgets"):
        plot_error_surface(surface, budgets=[0])
    only_grid = error_surface(W28, grids=[2, 4], families=["grid"])
    with pytest.raises(ValueError, match="family='diagonal' has no rows in surface; available: 'grid'"):
        plot_error_surface(only_grid, family="diagonal")


def test_error_surface_family_as_class_paper_name_or_frame():
    surface = error_surface(W28, grids=[1, 2, 4], diagonal=[2, 4], max_params=448)
    by_name = plot_error_surface(surface, family="diagonal")
    data = by_name.images[0].get_array()
    for family in (DiagonalBlocks, "MELoRA"):
        ax = plot_error_surface(surface, family=family)
        assert ax.get_title() == by_name.get_title()
        np.testing.assert_array_equal(ax.images[0].get_array(), data)
    ax = plot_error_surface(surface.to_frame(), family=BlockGrid)
    assert ax.get_title() == "Localized LoRA (block grid): relative error"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["1×1", "2×2", "4×4"]


# -- block map -----------------------------------------------------------------------------------


def test_block_map_values_from_a_constructed_matrix(tmp_path):
    # Block (0, 0): rank 2 with equal singular values (energy 2); block (1, 1): rank 1 (energy
    # 1); off-diagonal blocks zero.  Shares 2/3 and 1/3; effective ranks 2, 0, 0, 1.
    W = np.zeros((8, 8))
    W[0, 0] = W[1, 1] = 1.0
    W[4:, 4:] = 0.25
    fig = plot_block_map(W, BlockGrid(2, rank=1))
    _assert_drawn(fig, tmp_path, "block_map")
    share = fig.axes[0].collections[0].get_array().reshape(2, 2)
    rank = fig.axes[1].collections[0].get_array().reshape(2, 2)
    np.testing.assert_allclose(share, [[200 / 3, 0], [0, 100 / 3]])
    np.testing.assert_array_equal(rank, [[2, 0], [0, 1]])
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {"66.7", "33.3", "0"} <= texts


def test_block_map_ragged_blocks_keep_their_sizes():
    W = RNG.standard_normal((10, 7))
    fig = plot_block_map(W, DiagonalBlocks(3, 1))
    mesh = fig.axes[0].collections[0]
    coords = mesh.get_coordinates()  # (rows + 1, cols + 1, 2) corner coordinates
    assert coords[0, :, 0].tolist() == [0, 3, 5, 7]  # columns 3, 2, 2
    assert coords[:, 0, 1].tolist() == [0, 4, 7, 10]  # rows 4, 3, 3
    assert fig.axes[0].get_ylim() == (10, 0)  # row 0 at the top
    # Random blocks are full rank: keeping 100 % needs min(m_b, n_b) values.
    fig = plot_block_map(W, DiagonalBlocks(3, 1), energy=1.0)
    ranks = fig.axes[1].collections[0].get_array().reshape(3, 3)
    np.testing.assert_array_equal(ranks, [[3, 2, 2], [3, 2, 2], [3, 2, 2]])


def test_block_map_given_axes_and_bad_input():
    fig, axes = plt.subplots(1, 2)
    assert plot_block_map(W28, BlockGrid(4, 1), axes=axes) is fig
    with pytest.raises(ValueError, match="energy"):
        plot_block_map(W28, BlockGrid(2, 1), energy=0)
    with pytest.raises(TypeError, match="structure"):
        plot_block_map(W28, "grid")
    with pytest.raises(ValueError, match="does not fit"):
        plot_block_map(W28[:3, :3], BlockGrid(4, 1))


# -- study ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def study():
    X = np.random.default_rng(3).standard_normal((60, 8, 8))
    return compare_many(X, structures=[Global(2), DiagonalBlocks(2, 2), BlockGrid(2, 1)],
                        n_boot=200, progress=False)


def test_study_panels_and_legend_numbers(study, tmp_path):
    fig = plot_study(study)
    _assert_drawn(fig, tmp_path, "study")
    ax_hist, ax_bar = fig.axes[:2]
    labels = [t.get_text() for t in ax_hist.get_legend().get_texts()]
    assert len(labels) == len(study.paired) == 3
    for row, label in zip(study.paired.itertuples(), labels):
        assert f"mean {row.mean_diff:+.4f}" in label
        assert f"[{row.ci_low:+.4f}, {row.ci_high:+.4f}]" in label
    assert any(line.get_xdata()[0] == 0.0 for line in ax_hist.lines)  # the zero line
    bars = ax_bar.patches
    widths = sorted(p.get_width() for p in bars)
    assert sorted(study.summary["win_rate"].tolist()) == pytest.approx(widths[-3:])
    # Each configuration's bar has its family's colour (the structure class's own).
    from matplotlib.colors import to_rgba

    wins = [p for p in bars if not p.get_hatch()]
    assert [p.get_facecolor() for p in wins] == [
        to_rgba(c) for c in (Global.color, DiagonalBlocks.color, BlockGrid.color)]


def test_study_reference_filters_pairs(study):
    ref = study.summary.index[0]
    fig = plot_study(study, reference=ref)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert len(labels) == 2 and all(ref in label for label in labels)
    with pytest.raises(ValueError, match="reference"):
        plot_study(study, reference="nope")


def test_study_ties_are_hatched_and_axes_are_used():
    X = np.stack([np.eye(4), np.ones((4, 4)), np.diag([3.0, 2.0, 1.0, 0.5])])
    # On these matrices the two configurations give equal errors for some matrices: ties.
    study = compare_many(X, structures=[Global(1), BlockGrid(2, 1)], n_boot=50,
                         progress=False)
    fig, axes = plt.subplots(1, 2)
    assert plot_study(study, axes=axes) is fig
    if (study.summary["ties"] > 0).any():
        assert any(p.get_hatch() for p in axes[1].patches)
    with pytest.raises(TypeError, match="Study"):
        plot_study(study.summary)


# -- the Table I digit ---------------------------------------------------------------------------


@pytest.mark.mnist
def test_table1_digit_reconstructions_match_the_paper(tmp_path):
    from lowrank_blocks.datasets import table1_digit
    from lowrank_blocks.paper import TABLE1_CONFIGURATIONS

    W = table1_digit()
    fig = plot_reconstructions(W, [approximate(W, s) for s in TABLE1_CONFIGURATIONS])
    _assert_drawn(fig, tmp_path, "table1")
    titles = [ax.get_title() for ax in fig.axes[1:]]
    # The paper's Table I, 224 parameters each.
    for title, (name, err) in zip(titles, [("LoRA", "0.2313"), ("MELoRA", "0.9071"),
                                           ("Localized LoRA", "0.2119")]):
        assert title.startswith(name + "\n")
        assert f"224 params, error {err}" in title


# -- no matplotlib in the core -------------------------------------------------------------------


def test_importing_the_package_does_not_import_matplotlib():
    code = (
        "import sys, lowrank_blocks, lowrank_blocks.plotting\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib')\n"
        "assert not bad, bad\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(root), os.environ.get("PYTHONPATH", "")]))}
    env.pop("MPLBACKEND", None)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env=env)
