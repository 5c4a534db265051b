"""Per-layer analysis (lowrank_blocks.layers) against independent references."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from reference import block_svd_reference

from lowrank_blocks import BlockGrid, DiagonalBlocks, Global, configurations_at_budget
from lowrank_blocks.layers import analyze_layers

RNG = np.random.default_rng(31)


def _mats():
    return {
        "dense": RNG.standard_normal((24, 24)),
        "wide": RNG.standard_normal((16, 40)) * np.linspace(0.2, 2, 40),
        "blocky": np.kron(RNG.standard_normal((4, 4)), np.ones((6, 6)))
        + 0.01 * RNG.standard_normal((24, 24)),
    }


def _best_uniform(W, budget, cls, ks):
    """Brute force: every uniform configuration within the budget, errors by explicit SVDs."""
    best = math.inf
    for s in configurations_at_budget(W.shape, budget, at_most=True, families=[cls],
                                      grids=ks, diagonal=ks) if budget >= 1 else []:
        if isinstance(s, Global) or s.grid[0] in ks:
            best = min(best, block_svd_reference(W, s.grid, s.blocks, s.block_ranks(W.shape))[1])
    return best


@pytest.mark.parametrize("how", [{"lora_rank": 2}, {"budget_fraction": 0.25}, {"budget": 300}])
def test_rows_match_brute_force_references(how):
    mats = _mats()
    res = analyze_layers(mats, progress=False, grids=[2, 4], diagonal=[2, 4], **how)
    frame = res.to_frame()
    assert frame["name"].tolist() == list(mats)
    for row, (name, W) in zip(frame.itertuples(), mats.items()):
        m, n = W.shape
        budget = {"lora_rank": 2 * (m + n), "budget_fraction": round(0.25 * m * n),
                  "budget": 300}[next(iter(how))]
        assert row.budget == budget
        s = np.linalg.svd(W, compute_uv=False)
        assert row.numerical_rank == np.linalg.matrix_rank(W)
        assert row.stable_rank == pytest.approx(np.sum(s**2) / s[0] ** 2, rel=1e-10)
        for cls, col in ((Global, "error_global"), (DiagonalBlocks, "error_diagonal"),
                         (BlockGrid, "error_grid")):
            try:
                ref = _best_uniform(W, budget, cls, [2, 4])
            except ValueError:
                ref = math.inf
            got = getattr(row, col)
            if math.isinf(ref):
                assert math.isnan(got)
            else:
                assert got == pytest.approx(ref, rel=1e-9, abs=1e-12), (name, col)
        # the optimal allocation (rank integers charged) is never worse than uniform
        for fam in ("global", "diagonal", "grid"):
            u, o = getattr(row, f"error_{fam}"), getattr(row, f"error_{fam}_optimal")
            if not math.isnan(u):
                assert o <= u + 1e-12
        assert row.best_error == pytest.approx(
            np.nanmin([getattr(row, f"error_{f}{a}") for f in ("global", "diagonal", "grid")
                       for a in ("", "_optimal")]), abs=1e-12)
        assert row.best_n_params + row.best_rank_overhead <= budget


def test_budget_needed_for_targets_by_brute_force():
    W = _mats()["wide"]
    res = analyze_layers({"w": W}, lora_rank=1, grids=[2, 4], diagonal=[2, 4], targets=[0.5, 0.2],
                         progress=False)
    row = res.to_frame().iloc[0]
    m, n = W.shape
    for cls, fam in ((Global, "global"), (BlockGrid, "grid"), (DiagonalBlocks, "diagonal")):
        for t in (0.5, 0.2):
            best = None
            for budget in range(1, m * n * 4):
                try:
                    listed = configurations_at_budget(W.shape, budget, families=[cls],
                                                      grids=[2, 4], diagonal=[2, 4])
                except ValueError:
                    continue
                errs = [block_svd_reference(W, s.grid, s.blocks, s.block_ranks(W.shape))[1]
                        for s in listed if isinstance(s, Global) or s.grid[0] in (2, 4)]
                if errs and min(errs) <= t:
                    best = budget
                    break
            got = row[f"params_{fam}_to_{t:g}"]
            assert (pd.isna(got) and best is None) or got == best, (fam, t, got, best)


def test_summary_weights_by_size_and_counts_wins():
    mats = _mats()
    res = analyze_layers(mats, lora_rank=2, progress=False)
    frame = res.to_frame()
    summary = res.summary()
    w = frame["n_params"].to_numpy(float)
    for fam in ("global", "diagonal", "grid"):
        e = frame[f"error_{fam}"].to_numpy(float)
        ok = ~np.isnan(e)
        assert summary.loc[fam, "weighted_error"] == pytest.approx(np.average(e[ok], weights=w[ok]))
        assert summary.loc[fam, "mean_error"] == pytest.approx(e[ok].mean())
    assert summary["wins"].sum() == len(frame)


def test_an_exactly_block_low_rank_matrix_is_won_by_the_grid_and_ties_go_to_the_simplest():
    blocky = np.kron(RNG.standard_normal((4, 4)), np.ones((8, 8)))  # rank 4, block rank 1
    res = analyze_layers({"b": blocky, "g": RNG.standard_normal((32, 4)) @ RNG.standard_normal((4, 32))},
                         budget=256, progress=False)
    frame = res.to_frame().set_index("name")
    # rank 4 globally: Global(4) costs 256 and is exact, as is the 4 x 4 grid of rank 1 (256):
    # equal errors and sizes, so the simpler structure wins
    assert frame.loc["b", "best_error"] < 1e-10 and frame.loc["b", "best"] == "global"
    assert frame.loc["g", "best"] == "global"


def test_bad_arguments_are_named():
    mats = _mats()
    with pytest.raises(ValueError, match="exactly one of budget_fraction"):
        analyze_layers(mats, progress=False)
    with pytest.raises(ValueError, match="exactly one of budget_fraction"):
        analyze_layers(mats, lora_rank=2, budget=10, progress=False)
    with pytest.raises(ValueError, match="budget_fraction=1.5 is not allowed"):
        analyze_layers(mats, budget_fraction=1.5, progress=False)
    with pytest.raises(ValueError, match="lora_rank=0 is not allowed"):
        analyze_layers(mats, lora_rank=0, progress=False)
    with pytest.raises(ValueError, match=r"targets\[0\]=2 is not allowed"):
        analyze_layers(mats, lora_rank=1, targets=[2], progress=False)
    with pytest.raises(TypeError, match="source item 0"):
        analyze_layers([np.eye(3)], lora_rank=1, progress=False)


def test_plots_of_a_layer_analysis(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from lowrank_blocks.plotting import plot_layer_bars, plot_layer_heatmap

    res = analyze_layers(_mats(), lora_rank=2, progress=False)
    for fn in (plot_layer_heatmap, plot_layer_bars):
        ax = fn(res)
        assert len(ax.get_yticklabels()) == 3
        ax.figure.savefig(tmp_path / f"{fn.__name__}.png")
        assert (tmp_path / f"{fn.__name__}.png").stat().st_size > 1000


# -- models as inputs: layers, state_dicts, adapters through the command line -------------------


def test_approximate_takes_a_linear_layer_and_compare_many_a_state_dict():
    torch = pytest.importorskip("torch")
    from lowrank_blocks import approximate, compare_many

    torch.manual_seed(0)
    layer = torch.nn.Linear(20, 12)
    a = approximate(layer, Global(3))
    ref = approximate(layer.weight.detach().numpy(), Global(3))
    assert a.error == pytest.approx(ref.error, rel=1e-6)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16))
    study = compare_many(model.state_dict(), structures=[Global(2), BlockGrid(2, 1)],
                         progress=False)
    assert study.summary["n_matrices"].tolist() == [2, 2]  # the two weights; biases skipped
    with pytest.raises(TypeError, match="holding several tensors"):
        approximate(model.state_dict(), Global(1))


def test_scan_command_on_a_peft_adapter_and_an_update(tmp_path):
    pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    import io as _io

    import peft
    import torch

    from lowrank_blocks.cli import main

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32)
    base = transformers.BertModel(config)
    base.save_pretrained(tmp_path / "base")
    lora = peft.get_peft_model(base, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["query"],
                                                     init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")

    def run(*argv):
        import contextlib

        buf = _io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert main([str(a) for a in argv]) == 0
        return pd.read_csv(_io.StringIO(buf.getvalue()))

    rows = run("scan", tmp_path / "adapter", "--lora-rank", 2, "--csv", "--no-progress")
    assert len(rows) == 1 and rows["name"].iloc[0].endswith("query")
    assert rows["numerical_rank"].iloc[0] <= 2  # ΔW = scaling · B A has rank <= r
    assert rows["error_global"].iloc[0] < 1e-6  # and global rank 2 represents it exactly

    tuned = transformers.BertModel.from_pretrained(tmp_path / "base")  # PEFT wrapped `base`
    with torch.no_grad():
        q = tuned.encoder.layer[0].attention.self.query.weight
        q += torch.block_diag(*[torch.ones(8, 8)] * 2) * 0.1
    tuned.save_pretrained(tmp_path / "tuned")
    rows = run("scan", tmp_path / "tuned", "--base", tmp_path / "base", "--budget", 64, "--csv",
               "--no-progress", "--pattern", "*query.weight")
    assert len(rows) == 1
    # the update is block-diagonal with constant blocks: two rank-1 diagonal blocks, 64 params
    assert rows["error_diagonal"].iloc[0] < 1e-6


def test_an_update_lists_unchanged_tensors_as_skipped(tmp_path):
    from safetensors.numpy import save_file

    from lowrank_blocks.models import open_model

    rng = np.random.default_rng(3)
    base = {"a.weight": rng.standard_normal((16, 16)).astype(np.float32),
            "b.weight": rng.standard_normal((16, 8)).astype(np.float32)}
    tuned = dict(base, **{"a.weight": base["a.weight"] + np.float32(0.5)})
    save_file(base, str(tmp_path / "base.safetensors"))
    save_file(tuned, str(tmp_path / "tuned.safetensors"))
    res = analyze_layers(tmp_path / "tuned.safetensors", base=tmp_path / "base.safetensors",
                         budget=32, progress=False)
    assert res.to_frame()["name"].tolist() == ["a.weight"]
    assert res.to_frame()["numerical_rank"].tolist() == [1]  # a constant update: rank 1
    skipped = res.skipped_frame()
    assert skipped.loc[skipped["name"] == "b.weight", "reason"].str.contains("unchanged").all()
    with pytest.raises(ValueError, match="apply when a model is opened"):
        analyze_layers(open_model(tmp_path / "tuned.safetensors"), base=tmp_path / "base.safetensors",
                       budget=32, progress=False)


def test_ties_go_to_the_cheapest_configuration_within_the_budget():
    rng = np.random.default_rng(0)
    L = rng.standard_normal((16, 2)) @ rng.standard_normal((2, 16))  # exactly rank 2
    for b in (64, 256):
        row = analyze_layers({"rank2": L, "zero": np.zeros((8, 8))}, budget=b,
                             progress=False).to_frame().set_index("name")
        assert row.loc["rank2", "best_structure"] == Global(2)  # 64 parameters suffice
        assert row.loc["rank2", "best_n_params"] == 64
        assert row.loc["zero", "best_n_params"] + row.loc["zero", "best_rank_overhead"] <= 16


def test_targets_that_name_the_same_column_are_refused():
    with pytest.raises(ValueError, match="same column twice"):
        analyze_layers({"a": np.eye(8)}, lora_rank=1, targets=[0.5, 0.5000001], progress=False)
    res = analyze_layers({"a": np.eye(8)}, lora_rank=1, targets=np.array(0.5), progress=False)
    assert "params_global_to_0.5" in res.to_frame().columns


# -- numerical and stable rank from certified Gram eigenvalues ----------------------------------


def _reference_ranks(W, eps=None):
    """Numerical rank (σ > max(m, n) eps σ_1) and stable rank ‖W‖²/σ_1², from NumPy's float64
    SVD of the matrix as given (float32 data: eps of float32)."""
    A = np.asarray(W)
    eps = np.finfo(A.dtype).eps if eps is None else eps
    s = np.linalg.svd(A, compute_uv=False).astype(np.float64)
    rel = s / s[0]
    return int(np.sum(rel > max(A.shape) * eps)), float(np.sum(rel**2))


def _with_spectrum(m, n, s, seed=0):
    rng = np.random.default_rng(seed)
    U = np.linalg.qr(rng.standard_normal((m, len(s))))[0]
    V = np.linalg.qr(rng.standard_normal((n, len(s))))[0]
    return (U * s) @ V.T


def _threshold_matrix(m=128, n=96):
    """Singular values 1 … 1e-3 and two more at 1.5 and 0.5 times the numerical-rank threshold
    ``max(m, n) eps σ_1``: far below what Gram eigenvalues resolve (``√u σ_1``), far above the
    SVD's own rounding (``≈ u σ_1``)."""
    threshold = max(m, n) * np.finfo(np.float64).eps
    s = np.concatenate([np.logspace(0, -3, n - 2), [1.5 * threshold, 0.5 * threshold]])
    return _with_spectrum(m, n, s, seed=5)


@pytest.fixture
def svd_calls(monkeypatch):
    """Shapes of every matrix the spectra decompose by SVD."""
    import lowrank_blocks.spectra as spectra

    calls = []
    original = spectra.svdvals_stack

    def counting(stack, xp):
        calls.append(tuple(int(d) for d in stack.shape))
        return original(stack, xp)

    monkeypatch.setattr(spectra, "svdvals_stack", counting)
    return calls


def _whole(calls, shape):
    return [c for c in calls if c[-2:] == shape]


RANK_CASES = {
    "full rank": lambda rng: rng.standard_normal((256, 192)),
    "rank 8 update": lambda rng: rng.standard_normal((200, 8)) @ rng.standard_normal((8, 160)),
    "tiny": lambda rng: rng.standard_normal((160, 128)) * 1e-150,
    "huge": lambda rng: rng.standard_normal((128, 160)) * 1e150,
    "float32": lambda rng: rng.standard_normal((192, 128)).astype(np.float32),
    "at the threshold": lambda rng: _threshold_matrix(),
}


@pytest.mark.parametrize("case", list(RANK_CASES))
@pytest.mark.parametrize("families", [("global", "diagonal", "grid"), ("grid",)])
def test_numerical_and_stable_rank_equal_the_svd_ones(case, families, svd_calls):
    W = RANK_CASES[case](np.random.default_rng(11))
    rank, stable = _reference_ranks(W)
    row = analyze_layers({"w": W}, lora_rank=4, families=families, progress=False
                         ).to_frame().iloc[0]
    assert row["numerical_rank"] == rank
    if case not in ("rank 8 update", "at the threshold"):
        assert rank == min(W.shape) == np.linalg.matrix_rank(W)
    elif case == "rank 8 update":
        assert rank == 8 == np.linalg.matrix_rank(W)
    else:
        assert rank == min(W.shape) - 1 == np.linalg.matrix_rank(W)
    rtol = 1e-5 if W.dtype == np.float32 else 1e-6  # float32's SVD; the certified bound
    assert row["stable_rank"] == pytest.approx(stable, rel=rtol)
    whole = _whole(svd_calls, W.shape)
    if case in ("full rank", "tiny", "huge"):
        assert whole == []  # certified Gram eigenvalues: no SVD of the matrix
    else:  # rank-deficient, at the threshold, float32 (not certifiable at tol = 1e-6): the SVD
        assert len(whole) == 1  # once: the surface's, or the fallback of the ranks


def test_the_ranks_fall_back_to_the_svd_where_a_value_straddles_the_threshold(svd_calls):
    """Spectra certified for rank 1 only (no global structure in the surface), so the Gram
    values are kept; the numerical rank's threshold then lies within their bound: SVD."""
    import lowrank_blocks.layers as layers
    from lowrank_blocks import prepare

    W = _threshold_matrix()
    prep = prepare(W)
    spec = prep.spectra((1, 1), method="auto", max_rank=1)
    assert spec.paths.tolist() == [1] and not _whole(svd_calls, W.shape)  # Gram values
    eps_scale = max(W.shape) * np.finfo(np.float64).eps
    rank, stable = layers._global_ranks(prep, eps_scale)
    assert len(_whole(svd_calls, W.shape)) == 1  # then the SVD
    ref_rank, ref_stable = _reference_ranks(W)
    assert rank == ref_rank == min(W.shape) - 1
    assert stable == pytest.approx(ref_stable, rel=1e-12)


def test_a_certified_count_below_the_full_rank_needs_no_svd(svd_calls):
    """A float16 checkpoint: threshold 256 · 2⁻¹⁰ σ_1 = σ_1 / 4, with singular values well on
    either side; the Gram values decide the count (96 of 192) without an SVD."""
    from lowrank_blocks.layers import _check_budget_spec, _LayerTask
    from lowrank_blocks.structures import structure_types

    s = np.concatenate([np.linspace(1.0, 0.5, 96), np.linspace(1e-2, 1e-3, 96)])
    W = _with_spectrum(256, 192, s, seed=2)
    task = _LayerTask(_check_budget_spec(None, 4, None), structure_types(("global", "grid")),
                      None, None, (0.5,), "matrices")

    class Unit:
        name, dtype = "w", "float16"

        def load(self):
            return W

    row = task(Unit())
    rank, stable = _reference_ranks(W, eps=np.finfo(np.float16).eps)
    assert row.numerical_rank == rank == 96
    assert row.stable_rank == pytest.approx(stable, rel=1e-6)
    assert _whole(svd_calls, W.shape) == []


def test_certified_counts_hold_for_every_spectrum_within_the_bound():
    """Whatever the exact σ² within ``δ`` of the Gram values, the count of ``_ranks`` on them
    is the certified one (or the helper declines); values within a few ``δ`` of the threshold
    are placed on purpose."""
    from lowrank_blocks.layers import _certified_ranks, _ranks

    rng = np.random.default_rng(4)
    decided = declined = 0
    for _ in range(400):
        k = int(rng.integers(3, 12))
        scale = 10.0 ** rng.uniform(-2.5, -0.3)
        delta = 10.0 ** rng.uniform(-9, -4)
        values = 10.0 ** rng.uniform(-6, 0, k)
        values[0] = 1.0
        values[1] = max(scale**2 + rng.uniform(-4, 4) * delta, 0.0)  # near the threshold
        values = np.sort(values)[::-1]
        got = _certified_ranks(values, delta, float(values.sum()), scale, (k, k), 2.0**-53)
        for _ in range(30):
            exact = np.maximum(values + rng.choice([-1, 1], k) * delta * rng.uniform(0.9, 1, k),
                               0.0)
            exact[1:] = np.minimum(exact[1:], exact[0])  # σ_1 stays the largest
            if got is not None:
                assert _ranks(exact, scale)[0] == got[0]
        decided += got is not None
        declined += got is None
    assert decided > 100 and declined > 50


def test_a_memory_mapped_layer_gets_the_same_ranks(tmp_path):
    W = np.random.default_rng(8).standard_normal((160, 128))
    np.save(tmp_path / "w.npy", W)
    rank, stable = _reference_ranks(W)
    row = analyze_layers({"w": np.load(tmp_path / "w.npy", mmap_mode="r")}, lora_rank=2,
                         grids=[2], diagonal=[2], progress=False).to_frame().iloc[0]
    assert row["numerical_rank"] == rank == 128
    assert row["stable_rank"] == pytest.approx(stable, rel=1e-6)
