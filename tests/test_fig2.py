"""Tests for analysis.fig2: the NumPy MLP, the block adapters, the sweep and its outputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.fig2.mlp import (
    FULL_FINETUNE_PARAMS,
    HIDDEN_SHAPE,
    MLP,
    Adam,
    AdapterModel,
    BlockAdapter,
    FullModel,
    log_softmax,
)
from analysis.fig2.sweep import (
    METHODS,
    Settings,
    _config_label,
    _select_lr,
    _select_per_budget,
    bridge_table,
    check_claims,
    min_block_side,
    paper_configurations,
)
from lowrank_blocks import BlockGrid, DiagonalBlocks, Global

# A small network whose 10 × 20 hidden weight splits raggedly into 3 or 4 parts.
SIZES = (20, 10, 5)
SMALL_STRUCTURES = [
    Global(3),
    DiagonalBlocks(3, 2),  # rows 4,3,3 / cols 7,7,6: ragged
    DiagonalBlocks(3, (1, 0, 2)),  # per-block ranks with an empty block
    BlockGrid(2, 2),  # equal 5 × 10 blocks
    BlockGrid((3, 4), 1),  # ragged 3 × 4 grid
    BlockGrid((2, 3), (1, 2, 0, 3, 1, 2)),  # per-block ranks
]


def _small_problem(structure, seed=0):
    rng = np.random.default_rng(seed)
    mlp = MLP(rng.standard_normal(MLP.initialise(rng, SIZES).n_params) * 0.5, SIZES)
    adapter = BlockAdapter(structure, shape=(SIZES[1], SIZES[0]), rng=rng)
    adapter.theta[:] = rng.standard_normal(adapter.theta.size) * 0.5  # B != 0 as well
    x = rng.standard_normal((7, SIZES[0]))
    y = rng.integers(0, SIZES[2], 7)
    return mlp, adapter, x, y


def _fd_check(model, inputs, y, eps=1e-6):
    _, grad = model.loss_and_grad(inputs, y)
    theta = model.theta
    fd = np.empty_like(theta)
    for k in range(theta.size):
        old = theta[k]
        theta[k] = old + eps
        up, _ = model.loss_and_grad(inputs, y)
        theta[k] = old - eps
        down, _ = model.loss_and_grad(inputs, y)
        theta[k] = old
        fd[k] = (up - down) / (2 * eps)
    rel = np.linalg.norm(fd - grad) / max(np.linalg.norm(fd) + np.linalg.norm(grad), 1e-300)
    assert np.linalg.norm(grad) > 1e-3  # a check against a zero gradient would be empty
    assert rel < 1e-6, rel


# --- gradients ------------------------------------------------------------------------------------


@pytest.mark.parametrize("structure", SMALL_STRUCTURES, ids=repr)
def test_adapter_gradient_matches_finite_differences(structure):
    mlp, adapter, x, y = _small_problem(structure)
    model = AdapterModel(mlp, adapter)
    _fd_check(model, model.prepare(x), y)


def test_full_finetuning_gradient_matches_finite_differences():
    mlp, _, x, y = _small_problem(Global(1))
    model = FullModel(mlp)
    _fd_check(model, model.prepare(x), y)


def test_log_softmax_is_normalised_and_stable():
    z = np.array([[1000.0, 0.0, -1000.0], [1.0, 2.0, 3.0]])
    logp = log_softmax(z)
    np.testing.assert_allclose(np.exp(logp).sum(axis=1), 1.0)
    np.testing.assert_allclose(logp[1], np.log(np.exp([1, 2, 3]) / np.exp([1, 2, 3]).sum()))


def test_adam_first_step_is_lr_times_sign():
    # With bias correction, m̂ / √v̂ = g / |g| after one step (independent closed form).
    theta = np.array([1.0, -2.0, 3.0])
    grad = np.array([0.5, -4.0, 1e-3])
    Adam(3, lr=0.1).step(theta, grad)
    np.testing.assert_allclose(theta, [0.9, -1.9, 2.9], atol=1e-6)


# --- adapters -------------------------------------------------------------------------------------


def test_paper_configurations_left_out_and_counts():
    kept, left_out = paper_configurations()
    # Worked out by hand: 64 rows and 784 columns split into N (or K) equal parts give blocks of
    # 32×392, 16×196, 8×98 and 4×49; a rank reaching the smaller side is left out.
    expected = (
        [Global(r) for r in (2, 4, 8, 16, 32)]
        + [DiagonalBlocks(2, r) for r in (2, 4, 8, 16)]
        + [DiagonalBlocks(4, r) for r in (2, 4, 8)]
        + [DiagonalBlocks(8, r) for r in (2, 4)]
        + [DiagonalBlocks(16, 2)]
        + [BlockGrid(2, r) for r in (2, 4, 8, 16)]
        + [BlockGrid(4, r) for r in (2, 4, 8)]
        + [BlockGrid(8, r) for r in (2, 4)]
        + [BlockGrid(16, 2)]
    )
    assert kept == expected
    assert DiagonalBlocks(2, 32) in [s for s, _ in left_out]
    assert BlockGrid(16, 4) in [s for s, _ in left_out]
    # 5 + 20 + 16 = 41 candidates: all 5 LoRA, 10 of 20 MELoRA and 10 of 16 Localized kept
    assert len(left_out) == 16
    for s, _ in left_out:
        assert (s.rank if isinstance(s.rank, int) else max(s.rank)) >= min_block_side(s)
    for s in kept:
        assert s.rank < min_block_side(s)


def test_adapter_sizes_match_library_counts():
    kept, _ = paper_configurations()
    rng = np.random.default_rng(0)
    for s in kept:
        adapter = BlockAdapter(s, rng=rng, dtype=np.float32)
        assert adapter.n_params == adapter.theta.size == s.n_params(HIDDEN_SHAPE)
        # closed forms on 64 × 784: 848 r for LoRA and MELoRA, 848 r K for Localized LoRA
        k = s.grid[0] if isinstance(s, BlockGrid) else 1
        assert adapter.n_params == 848 * s.rank * k
    for s in SMALL_STRUCTURES:
        adapter = BlockAdapter(s, shape=(10, 20))
        assert adapter.theta.size == s.n_params((10, 20))
        assert sum(B.size + A.size for B, A in adapter.factors()) == adapter.theta.size
    assert MLP.initialise(rng).n_params == FULL_FINETUNE_PARAMS == 50_565


@pytest.mark.parametrize("structure", [Global(8), DiagonalBlocks(4, 4), BlockGrid(8, 2)], ids=repr)
def test_zero_initialised_adapter_leaves_network_unchanged(structure):
    rng = np.random.default_rng(1)
    mlp = MLP.initialise(rng)
    adapter = BlockAdapter(structure, rng=rng)
    assert np.all(adapter.delta_w() == 0) and np.any(adapter.theta != 0)  # A random, B zero
    x = rng.random((16, 784))
    np.testing.assert_array_equal(mlp.log_probs(x, adapter), mlp.log_probs(x))


@pytest.mark.parametrize("structure", SMALL_STRUCTURES, ids=repr)
def test_dense_delta_w_gives_the_factored_forward_pass(structure):
    _, adapter, x, _ = _small_problem(structure, seed=3)
    factored, _ = adapter.forward(x)
    dense = adapter.delta_w()
    np.testing.assert_allclose(factored, x @ dense.T, rtol=1e-12, atol=1e-12)
    # ΔW assembled independently: every active block is B A, everything else zero
    ref = np.zeros((10, 20))
    part = structure.partition((10, 20))
    for (i, j), (B, A) in zip(structure.blocks, adapter.factors()):
        rs, cs = part.block_slices(i, j)
        ref[rs, cs] += B @ A
    np.testing.assert_array_equal(dense, ref)
    p, q = structure.grid
    for i in range(p):  # blocks without a factor pair (off-diagonal ones of MELoRA) stay zero
        for j in range(q):
            if (i, j) not in structure.blocks:
                assert np.all(dense[part.block_slices(i, j)] == 0)


# --- selection, claims, bridge --------------------------------------------------------------------


def test_selection_uses_validation_loss_never_test_accuracy():
    sweep = pd.DataFrame(
        {
            "method": ["LoRA"] * 4 + ["MELoRA"] * 2,
            "structure": ["G2", "G2", "G4", "G4", "D2", "D2b"],
            "config": ["r=2", "r=2", "r=4", "r=4", "N=2", "N=4"],
            "n_params": [1696, 1696, 3392, 3392, 1696, 1696],
            "lr": [1e-4, 5e-4, 1e-4, 5e-4, 5e-4, 5e-4],
            "val_loss": [0.30, 0.20, 0.10, 0.15, 0.40, 0.35],
            "test_accuracy": [0.99, 0.80, 0.80, 0.99, 0.99, 0.50],
        }
    )
    configs = _select_lr(sweep)
    assert dict(zip(configs["structure"], configs["lr"])) == {
        "G2": 5e-4,
        "G4": 1e-4,
        "D2": 5e-4,
        "D2b": 5e-4,
    }
    best = _select_per_budget(configs)
    assert list(best["structure"]) == ["G2", "G4", "D2b"]


def test_records_label_configurations_with_the_structure_labels():
    assert METHODS == ("LoRA", "MELoRA", "Localized LoRA")
    assert _config_label(None) == "all parameters"
    assert [_config_label(s) for s in (Global(4), DiagonalBlocks(2, 4), BlockGrid((2, 4), 1))] == [
        "global, r=4", "diagonal N=2, r=4", "grid 2×4, r=1"]


def _figure_of(monkeypatch, draw):
    """Run a report function that saves and closes its figure; return the figure instead."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.setattr(plt, "close", lambda fig=None: None)
    monkeypatch.setattr("matplotlib.figure.Figure.savefig", lambda self, *a, **k: None)
    draw()
    fig = plt.gcf()
    monkeypatch.undo()
    return fig


def test_figures_use_the_structure_classes_style(monkeypatch):
    # Fig. 2 draws each method in its structure class's colour and marker, as the figures of
    # lowrank_blocks.plotting do: one plot style for the whole project.
    from types import SimpleNamespace

    from matplotlib.colors import to_rgba

    from analysis.fig2.report import plot_bridge, plot_fig2

    table = _table([
        ("LoRA", "global, r=2", 1696, 9.0),
        ("LoRA", "global, r=4", 3392, 6.0),
        ("MELoRA", "diagonal N=2, r=2", 1696, 8.0),
        ("Localized LoRA", "grid 2×2, r=2", 3392, 2.5),
    ]).assign(n_seeds=1)
    results = SimpleNamespace(table=table, full={"test_accuracy_mean": 97.0,
                                                 "test_accuracy_std": 0.1})
    fig = _figure_of(monkeypatch, lambda: plot_fig2(results, "unused.png"))
    ax = fig.axes[0]
    lines = {c.get_label(): c.lines[0] for c in ax.containers}  # errorbar: the data line
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(METHODS)
    for cls in (Global, DiagonalBlocks, BlockGrid):
        line = lines[cls.paper_name]
        assert to_rgba(line.get_color()) == to_rgba(cls.color)
        assert line.get_marker() == cls.marker
    annotations = {t.get_text(): to_rgba(t.get_color()) for t in ax.texts}
    assert annotations["grid 2×2, r=2"] == to_rgba(BlockGrid.color)

    bridge = table.assign(dw_error=[0.5, 0.4, 0.6, 0.3], test_accuracy=[90.0, 92, 89, 95])
    fig = _figure_of(monkeypatch, lambda: plot_bridge(SimpleNamespace(bridge=bridge), "x.png"))
    left, right = fig.axes
    for cls in (Global, DiagonalBlocks, BlockGrid):
        line = next(li for li in left.lines if li.get_label() == cls.paper_name)
        assert to_rgba(line.get_color()) == to_rgba(cls.color)
        points = next(c for c in right.collections if c.get_label() == cls.paper_name)
        assert tuple(points.get_facecolor()[0]) == to_rgba(cls.color)
    import matplotlib.pyplot as plt

    plt.close("all")


def _table(rows):
    return pd.DataFrame(
        [
            {
                "method": m,
                "config": c,
                "n_params": n,
                "share_percent": 100 * n / 50565,
                "drop_mean": d,
                "drop_std": 0.1,
            }
            for m, c, n, d in rows
        ]
    )


def test_check_claims_on_hand_made_tables():
    good = _table(
        [
            ("LoRA", "r=2", 1696, 9.0),
            ("LoRA", "r=4", 3392, 6.0),
            ("LoRA", "r=8", 6784, 4.0),
            ("MELoRA", "N=2, r=2", 1696, 8.0),
            ("MELoRA", "N=2, r=4", 3392, 5.0),
            ("MELoRA", "N=2, r=8", 6784, 3.0),
            ("Localized LoRA", "K=2, r=2", 3392, 2.5),
            ("Localized LoRA", "K=2, r=4", 6784, 1.0),
        ]
    )
    claims = check_claims(good)
    assert [c["holds"] for c in claims] == [True, True, True]
    bad = good.copy()
    bad.loc[bad["config"] == "K=2, r=2", "drop_mean"] = 7.0  # worse than both at 3392
    claims = check_claims(bad)
    assert claims[0]["holds"] is False and claims[0]["verdict"].startswith("partly")
    assert claims[1]["holds"] is False  # 7.0 at 3392 vs MELoRA 3.0 at 6784


def test_bridge_error_zero_for_the_structure_that_made_delta_w():
    rng = np.random.default_rng(2)
    delta_w = np.zeros(HIDDEN_SHAPE)
    for i in range(4):  # exactly MELoRA N=4, rank 2
        rows, cols = slice(16 * i, 16 * (i + 1)), slice(196 * i, 196 * (i + 1))
        delta_w[rows, cols] = rng.standard_normal((16, 2)) @ rng.standard_normal((2, 196))
    structures = {repr(s): s for s in (DiagonalBlocks(4, 2), Global(2), BlockGrid(4, 2))}
    configs = pd.DataFrame(
        {
            "structure": list(structures),
            "method": ["MELoRA", "LoRA", "Localized LoRA"],
            "config": ["N=4, r=2", "r=2", "K=4, r=2"],
            "n_params": [s.n_params(HIDDEN_SHAPE) for s in structures.values()],
            "lr": 5e-4,
            "val_loss": 0.1,
            "test_accuracy": 0.9,
        }
    )
    out = bridge_table(delta_w, configs, structures).set_index("config")
    assert out.loc["N=4, r=2", "dw_error"] < 1e-10
    assert out.loc["K=4, r=2", "dw_error"] < 1e-10  # the grid contains the diagonal
    assert out.loc["r=2", "dw_error"] > 0.3  # rank 8 matrix, rank 2 global


# --- the reduced sweep, end to end --------------------------------------------------------------


@pytest.mark.mnist
def test_quick_sweep_writes_results(tmp_path):
    from analysis.fig2.report import write_results
    from analysis.fig2.sweep import run_sweep

    settings = Settings.quick()
    assert len(settings.learning_rates) == 1 and settings.epochs == 1
    results = run_sweep(settings, progress=False)
    paths = write_results(results, tmp_path)
    for name in ("fig2.png", "fig2_table.csv", "fig2_bridge.csv", "fig2_summary.md"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "fig2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(p.exists() for p in paths)
    table = pd.read_csv(tmp_path / "fig2_table.csv")
    assert set(table["method"]) == {"LoRA", "MELoRA", "Localized LoRA"}
    assert set(table["n_params"]) == {3392}
    np.testing.assert_allclose(
        table["drop_mean"], results.full["test_accuracy_mean"] - table["test_accuracy_mean"]
    )
    assert set(table["config"]) == {"global, r=4", "diagonal N=2, r=4", "grid 2×2, r=2"}
    bridge = pd.read_csv(tmp_path / "fig2_bridge.csv")
    assert len(bridge) == 3 and bridge["dw_error"].between(0, 1).all()
    # ΔW under error_vs_budget: the Curve's frame, rank integers charged to the budget
    curve = results.curve
    assert set(curve["paper_name"]) == set(METHODS) and set(curve["budget"]) == {3392}
    assert (curve["n_params"] + curve["rank_overhead"] <= curve["budget"]).all()
    assert "ΔW at the sweep's budgets" in (tmp_path / "fig2_summary.md").read_text()
    # the data split: 2,500 images of 5-9, 500 of them for validation, test digits 5-9 only
    assert results.data_sizes["train"] == 2000 and results.data_sizes["val"] == 500
    runs = results.runs
    assert len(runs) == 4  # full fine-tuning + three adapters, one learning rate, one seed
    assert (runs.loc[runs["method"] == "Full fine-tuning", "n_params"] == 50_565).all()
    summary = (tmp_path / "fig2_summary.md").read_text()
    assert "Localized LoRA consistently achieves lower accuracy drop" in summary
