"""Error surfaces, error-vs-budget curves, allocation and structure search.

References: the per-block SVD reconstruction loop and exhaustive allocation search in
``tests/reference.py``, brute-force enumeration of configurations, and scikit-learn.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import block_svd_reference, exhaustive_allocation

from lowrank_blocks import (
    BlockGrid,
    DiagonalBlocks,
    Global,
    _kernels,
    allocate_ranks,
    approximate,
    best_approximation,
    block_spectra,
    configurations_at_budget,
    error_surface,
    error_vs_budget,
)
from lowrank_blocks.linalg import randomized_svd_stack
from lowrank_blocks.structures import structure_type

RNG = np.random.default_rng(11)
W_RAGGED = RNG.standard_normal((13, 17))


def test_surface_matches_reference_for_every_row_including_ragged():
    surf = error_surface(W_RAGGED, grids=[1, 2, 3, (2, 5), (4, 3)], diagonal=[2, 3]).to_frame()
    assert set(surf.columns) >= {"family", "paper_name", "structure", "grid", "p", "q", "rank", "n_params", "error"}
    assert set(surf["grid"]) >= {"2×5", "4×3"}
    for row in surf.itertuples():
        s = row.structure
        _, ref = block_svd_reference(W_RAGGED, s.grid, s.blocks, s.block_ranks(W_RAGGED.shape))
        assert row.error == pytest.approx(ref, rel=1e-10, abs=1e-13)
        assert row.n_params == s.n_params(W_RAGGED.shape)
    # every rank up to the smallest block side is present
    grid35 = surf[(surf.family == "grid") & (surf.grid == "4×3")]
    assert grid35["rank"].tolist() == list(range(1, min(13 // 4, 17 // 3) + 1))


def test_surface_respects_max_params():
    surf = error_surface(W_RAGGED, grids=[2], max_params=200).to_frame()
    assert surf["n_params"].max() <= 200


@pytest.mark.parametrize("shape", [(16, 16), (13, 17)])
def test_uniform_curve_equals_brute_force_over_configurations(shape):
    W = RNG.standard_normal(shape)
    grids = [2, 4]
    budgets = list(range(40, 500, 37))
    curve = error_vs_budget(W, budgets, grids=grids, diagonal=grids, allocation="uniform").to_frame()
    for fam in ("global", "diagonal", "grid"):
        for b in budgets:
            try:
                listed = configurations_at_budget(shape, b, at_most=True, families=[fam], grids=grids)
            except ValueError:  # below the cheapest configuration of this family
                listed = []
            candidates = [s for s in listed if isinstance(s, Global) or s.grid[0] in grids]
            got = curve[(curve.family == fam) & (curve.budget == b)]
            if not candidates:
                assert got.empty
                continue
            best = min(
                block_svd_reference(W, s.grid, s.blocks, s.block_ranks(shape))[1] for s in candidates
            )
            assert len(got) == 1
            assert got["error"].iloc[0] == pytest.approx(best, rel=1e-10)
            assert got["n_params"].iloc[0] <= b


def test_optimal_allocation_is_exact_for_equal_block_costs():
    W = RNG.standard_normal((8, 8)) * np.array([1, 1, 1, 1, 5, 5, 5, 5])  # unequal block energies
    spec = block_spectra(W, "grid", 2)
    assert len(set(spec.costs.tolist())) == 1
    budgets = list(range(8, 65, 4))
    curve = error_vs_budget(W, budgets, families=["grid"], grids=[2], allocation="optimal",
                            count_rank_overhead=False).to_frame()
    for b in budgets:
        exact, _ = exhaustive_allocation(W, (2, 2), spec.blocks, b)
        got = curve[curve.budget == b]["error"].iloc[0]
        assert got == pytest.approx(exact, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("family,grid", [("grid", (2, 2)), ("grid", (3, 2)), ("diagonal", (3, 3))])
def test_optimal_allocation_equals_exhaustive_search_for_unequal_costs(family, grid):
    W = RNG.standard_normal((9, 7)) * np.linspace(0.5, 3, 7)
    spec = block_spectra(W, family, grid)
    assert len(set(spec.costs.tolist())) > 1  # ragged: unequal costs
    total_budget = int((spec.costs * spec.max_ranks).sum())
    budgets = list(range(int(spec.costs.min()), total_budget + 1, 3))
    curve = error_vs_budget(W, budgets, families=[family], grids=[grid], diagonal=[grid[0]],
                            allocation="optimal", count_rank_overhead=False).to_frame()
    for b in budgets:
        exact, _ = exhaustive_allocation(W, grid, spec.blocks, b)
        got = curve[curve.budget == b]["error"].iloc[0]
        assert got == pytest.approx(exact, rel=1e-10, abs=1e-12)


def test_issue_example_where_greedy_fails():
    # Greedy by σ²/cost takes block (1, 0) (error 0.8424); the optimum with the same 3
    # parameters is rank 1 on block (0, 0): 0.8231 (checked against the explicit SVDs).
    W = np.array([[-3.0, -2], [-1, 2], [-3, 2]])
    ranks = allocate_ranks(block_spectra(W, "grid", 2), 3)
    assert ranks == (1, 0, 0, 0)
    assert block_svd_reference(W, (2, 2), [(0, 0)], [1])[1] == pytest.approx(0.8231, abs=5e-5)
    assert approximate(W, BlockGrid(2, list(ranks))).error == pytest.approx(0.8231, abs=5e-5)


def test_allocated_ranks_reproduce_curve_error_and_budget():
    W = RNG.standard_normal((13, 17))
    for family, grid in [("grid", (3, 4)), ("diagonal", (3, 3)), ("grid", (2, 2))]:
        spec = block_spectra(W, family, grid)
        for budget in (60, 150, 300):
            ranks = allocate_ranks(spec, budget)
            s = structure_type(family).on_grid(grid, ranks)
            approx = approximate(W, s)
            curve = error_vs_budget(W, [budget], families=[family], grids=[grid], diagonal=[grid[0]],
                                    allocation="optimal", count_rank_overhead=False).to_frame()
            assert approx.n_params <= budget
            assert approx.n_params == curve["n_params"].iloc[0]
            assert approx.error == pytest.approx(curve["error"].iloc[0], rel=1e-10)


def test_curve_columns_and_rank_overhead():
    W = RNG.standard_normal((16, 16))
    curve = error_vs_budget(W, [64, 128], grids=[2, 4], best_only=False,
                            count_rank_overhead=False).to_frame()
    for col in ("family", "structure", "grid", "allocation", "budget", "n_params", "error", "rank_overhead"):
        assert col in curve.columns
    assert (curve["n_params"] <= curve["budget"]).all()
    opt = curve[(curve.allocation == "optimal") & (curve.family == "grid")]
    # Uncharged, the overhead reported is what the ranks need: none when they came out equal.
    assert set(opt["rank_overhead"]) <= {0, 4, 16} and 16 in set(opt["rank_overhead"])
    assert (opt["rank_overhead"] == [s.rank_overhead for s in opt["structure"]]).all()
    assert (curve[curve.allocation == "uniform"]["rank_overhead"] == 0).all()
    counted = error_vs_budget(W, [128], grids=[4], families=["grid"], allocation="optimal",
                              count_rank_overhead=True).to_frame()
    assert counted["n_params"].iloc[0] + counted["rank_overhead"].iloc[0] <= 128


def test_optimal_is_never_worse_than_uniform():
    W = RNG.standard_normal((24, 24))
    curve = error_vs_budget(W, list(range(48, 600, 48)), best_only=False,
                            count_rank_overhead=False).to_frame()
    wide = curve.pivot_table(index=["family", "grid", "budget"], columns="allocation", values="error")
    wide = wide.dropna()
    assert (wide["optimal"] <= wide["uniform"] + 1e-12).all()


def test_best_approximation_factors_have_reported_count_and_error():
    W = RNG.standard_normal((12, 10))
    best = best_approximation(W, 80)
    assert best.n_params <= 80
    assert best.n_params == sum(B.size + A.size for B, A in best.approximation.factors)
    s = best.structure
    _, ref = block_svd_reference(W, s.grid, s.blocks, s.block_ranks(W.shape))
    assert best.error == pytest.approx(ref, rel=1e-10)
    assert best.error == pytest.approx(best.to_frame()["error"].min(), rel=1e-10)
    assert len(best.to_frame()) > 50  # all p × q grids
    assert best.budget == 80


@pytest.mark.mnist
def test_best_approximation_on_table1_digit_beats_the_paper():
    from lowrank_blocks.datasets import table1_digit

    W = table1_digit()
    for charged, limit in ((False, 0.09), (True, 0.2119)):  # the paper's best at 224: 0.2119
        best = best_approximation(W, 224, count_rank_overhead=charged)
        s = best.structure
        _, ref = block_svd_reference(W, s.grid, s.blocks, s.block_ranks(W.shape))
        assert best.n_params + (best.rank_overhead if charged else 0) <= 224
        assert ref < limit
        assert best.error == pytest.approx(ref, rel=1e-10)


# -- randomized ---------------------------------------------------------------------------------


def test_randomized_svd_stack_matches_exact_and_scikit_learn():
    sklearn_extmath = pytest.importorskip("sklearn.utils.extmath")
    rng = np.random.default_rng(0)
    decay = 0.7 ** np.arange(60)
    U, _ = np.linalg.qr(rng.standard_normal((80, 60)))
    V, _ = np.linalg.qr(rng.standard_normal((60, 60)))
    A = (U * decay) @ V.T
    U_r, S_r, Vt_r = randomized_svd_stack(A[None], 8, np, oversampling=10, n_iter=4, random_state=0)
    exact = np.linalg.svd(A, compute_uv=False)[:8]
    _, S_sk, _ = sklearn_extmath.randomized_svd(A, 8, n_oversamples=10, n_iter=4, random_state=0)
    np.testing.assert_allclose(S_r[0], exact, rtol=1e-10)
    np.testing.assert_allclose(S_r[0], S_sk, rtol=1e-10)
    approx = (U_r[0] * S_r[0]) @ Vt_r[0]
    best = (U[:, :8] * decay[:8]) @ V[:, :8].T
    np.testing.assert_allclose(approx, best, atol=1e-8)


def test_randomized_singular_values_never_exceed_exact_ones():
    X = np.random.default_rng(1).standard_normal((5, 40, 30))
    S = randomized_svd_stack(X, 6, np, oversampling=2, n_iter=1, random_state=1, compute_uv=False)
    exact = np.linalg.svd(X, compute_uv=False)[:, :6]
    assert np.all(S <= exact * (1 + 1e-12))


@pytest.mark.parametrize("kind", ["decaying", "gaussian"])
def test_randomized_surface_and_curve_close_to_exact(kind):
    rng = np.random.default_rng(2)
    W = rng.standard_normal((96, 96))
    if kind == "decaying":
        U, _ = np.linalg.qr(W)
        W = (U * 0.9 ** np.arange(96)) @ U.T + 0.01 * rng.standard_normal((96, 96))
    kw = dict(grids=[1, 2, 4, 8], diagonal=[2, 4], max_params=96 * 96 // 10)
    exact = error_surface(W, **kw).to_frame()
    rand = error_surface(W, method="randomized", random_state=0, n_iter=4, **kw).to_frame()
    merged = exact.merge(rand, on=["family", "p", "q", "rank"], suffixes=("_e", "_r"))
    assert len(merged) == len(exact)
    diff = merged["error_r"] - merged["error_e"]
    assert diff.abs().max() <= 1e-3
    assert (diff >= -1e-12).all()  # Ritz values underestimate: errors are never optimistic
    budgets = [200, 500, 900]
    ce = error_vs_budget(W, budgets, grids=[2, 4, 8]).to_frame()
    cr = error_vs_budget(W, budgets, grids=[2, 4, 8], method="randomized", random_state=0).to_frame()
    assert np.abs(ce["error"].to_numpy() - cr["error"].to_numpy()).max() <= 1e-3


def test_randomized_approximation_on_torch_backend():
    torch = pytest.importorskip("torch")
    W = np.random.default_rng(3).standard_normal((40, 40))
    a = error_surface(torch.asarray(W), grids=[2], method="randomized", random_state=0, n_iter=6).to_frame()
    b = error_surface(W, grids=[2]).to_frame()
    m = a.merge(b, on=["family", "p", "q", "rank"])
    assert (m["error_x"] - m["error_y"]).abs().max() <= 1e-3


# -- numba kernel -------------------------------------------------------------------------------


@pytest.mark.skipif(not _kernels.NUMBA_AVAILABLE, reason="numba is not installed")
@settings(max_examples=60, deadline=None)
@given(
    n_units=st.integers(1, 12),
    base=st.integers(1, 30),
    spread=st.integers(0, 40),
    budgets=st.lists(st.integers(0, 600), min_size=1, max_size=5),
    seed=st.integers(0, 1000),
)
def test_numba_allocation_kernels_equal_numpy_fallbacks(n_units, base, spread, budgets, seed):
    from lowrank_blocks import allocation

    rng = np.random.default_rng(seed)
    costs = base + rng.integers(0, spread + 1, n_units)
    gains = [np.sort(rng.random(rng.integers(0, 6)))[::-1] for _ in range(n_units)]
    classes = [c for c in allocation._classes(costs, gains) if c.n > 0]
    if len(classes) < 2:
        return
    steps = np.array([c.cost for c in classes])
    prefixes = [c.prefix for c in classes]
    size = max(budgets) + 1
    a = _kernels.concave_knapsack_dp_numba(steps, prefixes, size)
    b = _kernels.concave_knapsack_dp_numpy(steps, prefixes, size)
    # The choices may differ on exact ties; the optimal values may not.
    def value(choice, budget):
        rest, total = budget, 0.0
        for c in range(len(classes) - 1, -1, -1):
            k = int(choice[c, rest])
            total += prefixes[c][k]
            rest -= k * int(steps[c])
        assert rest >= 0
        return total

    for budget in budgets:
        assert value(a, budget) == pytest.approx(value(b, budget), rel=1e-12)
    if len(classes) <= 3:
        budget_arr = np.array(budgets)
        counts_nb = allocation._solve_enumeration(classes, budget_arr)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_kernels, "enumerate_counts_numba", None)
            counts_np = allocation._solve_enumeration(classes, budget_arr)
        np.testing.assert_array_equal(counts_nb, counts_np)


def test_fallback_selected_when_numba_is_disabled():
    import subprocess
    import sys

    code = (
        "from lowrank_blocks import _kernels as k; from lowrank_blocks.allocation import "
        "solve_allocation as s; assert not k.NUMBA_AVAILABLE; "
        "assert k.enumerate_counts_numba is None and k.concave_knapsack_dp_numba is None; "
        "print(s([3, 2], [[5.0], [4.0]], 3).ranks.tolist())"
    )
    env = {**__import__("os").environ, "LOWRANK_BLOCKS_DISABLE_NUMBA": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[[1, 0]]"


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda W: error_vs_budget(W, [1]).to_frame(), ValueError, r"budget=1 is below the cheapest configuration"),
        (lambda W: error_vs_budget(W, [100.5]).to_frame(), TypeError, r"budgets\[0\]=100.5 must be an integer"),
        (lambda W: error_vs_budget(W, [-3]).to_frame(), ValueError, r"budgets\[0\]=-3 is not allowed; it must be >= 1"),
        (lambda W: error_vs_budget(W, []).to_frame(), ValueError, r"budgets is empty"),
        (lambda W: error_vs_budget(W, [100], grids=[40]).to_frame(), ValueError, r"grids contains 40, which does not fit a 16 × 16"),
        (lambda W: error_surface(W, grids=[(2, 17)]).to_frame(), ValueError, r"grids contains \(2, 17\), which does not fit"),
        (lambda W: error_surface(W, method="svd").to_frame(), ValueError, r"method='svd' is not allowed; use one of auto, exact, randomized"),
        (lambda W: error_surface(W, method="randomized", oversampling=-1).to_frame(), ValueError, r"oversampling=-1 is not allowed; it must be >= 0"),
        (lambda W: error_surface(W, method="randomized", n_iter=-2).to_frame(), ValueError, r"n_iter=-2 is not allowed; it must be >= 0"),
        (lambda W: error_vs_budget(W, [100], allocation="best").to_frame(), ValueError, r"allocation='best' is not allowed"),
        (lambda W: best_approximation(W, 0), ValueError, r"budget=0 is not allowed; it must be >= 1"),
        (lambda W: best_approximation(W, 12.0), TypeError, r"budget=12.0 must be an integer"),
        (lambda W: best_approximation(W, 1), ValueError, r"below the cheapest configuration"),
        (lambda W: error_surface(W, max_params=5).to_frame(), ValueError, r"max_params=5 is below the cheapest"),
        (lambda W: error_surface(W, grids="every").to_frame(), ValueError, r"grids='every' is not allowed"),
    ],
)
def test_bad_input(call, exc, match):
    W = np.random.default_rng(0).standard_normal((16, 16))
    with pytest.raises(exc, match=match):
        call(W)


def test_randomized_approximate_close_to_exact_and_factors_consistent(backend):
    rng = np.random.default_rng(8)
    U, _ = np.linalg.qr(rng.standard_normal((60, 60)))
    W = (U * 0.8 ** np.arange(60)) @ U.T + 1e-3 * rng.standard_normal((60, 60))
    for s in (Global(5), BlockGrid(3, 3), DiagonalBlocks(2, [4, 2])):
        exact = approximate(W, s)
        rand = approximate(backend.asarray(W), s, method="randomized", random_state=0)
        assert rand.n_params == exact.n_params
        assert exact.error - 1e-12 <= rand.error <= exact.error + 1e-3
        recon = backend.to_numpy(rand.reconstruct())
        formed = float(np.linalg.norm(W - recon) / np.linalg.norm(W))
        assert formed == pytest.approx(rand.error, abs=1e-6)


def test_approximate_rejects_bad_method_and_options():
    W = np.ones((6, 6))
    with pytest.raises(ValueError, match="method='fast' is not allowed"):
        approximate(W, Global(1), method="fast")
    with pytest.raises(ValueError, match="n_iter=-1 is not allowed"):
        approximate(W, Global(1), method="randomized", n_iter=-1)


def test_optimal_allocation_never_loses_to_uniform_on_ragged_grids():
    # Found by review: greedy (2, 0, 1, 0) at 17 params gave 0.4503 where uniform rank 1 at
    # exactly 20 params gives 0.3970.
    rng = np.random.default_rng(6)
    W = rng.standard_normal((5, 5)) * rng.random((5, 5)) ** 3
    curve = error_vs_budget(W, [20], families=["grid"], grids=[2], best_only=False,
                            count_rank_overhead=False).to_frame()
    by = curve.set_index("allocation")["error"]
    assert by["optimal"] <= by["uniform"] + 1e-15
    spec = block_spectra(W, "grid", 2)
    s = BlockGrid(2, allocate_ranks(spec, 20))
    assert approximate(W, s).error == pytest.approx(by["optimal"], rel=1e-12)
    for seed in range(40):
        W = np.random.default_rng(seed).standard_normal((9, 7)) ** 3
        c = error_vs_budget(W, list(range(16, 64, 3)), families=["grid"], grids=[(2, 2), (3, 2)],
                            best_only=False, count_rank_overhead=False).to_frame()
        w = c.pivot_table(index=["grid", "budget"], columns="allocation", values="error").dropna()
        assert (w["optimal"] <= w["uniform"] + 1e-12).all()


@pytest.mark.parametrize("dtype,big", [(np.float64, 1.5e308), (np.float32, 3e38)])
def test_largest_finite_magnitudes_do_not_overflow(dtype, big):
    W = np.array([[big, 1.0], [2.0, big]], dtype=dtype)
    a = approximate(W, Global(1))
    assert a.error == pytest.approx(np.sqrt(0.5), rel=1e-6)
    assert np.isfinite(a.reconstruct()).all()
    from lowrank_blocks.studies import stack_errors

    assert stack_errors(W[None], Global(1))[0] == pytest.approx(np.sqrt(0.5), rel=1e-6)


def test_row_and_column_vectors_get_surfaces_and_curves():
    v = np.arange(1.0, 6.0)[None, :]
    assert error_vs_budget(v, [6]).to_frame()["error"].max() == pytest.approx(0.0, abs=1e-12)
    assert len(error_surface(v.T).to_frame()) > 0


def test_zero_matrix_optimal_allocation():
    curve = error_vs_budget(np.zeros((4, 4)), [100], allocation="optimal").to_frame()
    assert (curve["error"] == 0).all()
    assert best_approximation(np.zeros((4, 4)), 100, allocation="optimal").error == 0.0


# -- v2: the search answers the question asked ------------------------------------------------


def test_rank_overhead_is_charged_by_default_and_the_uncharged_figure_stays_available():
    W = RNG.standard_normal((32, 32))
    charged = error_vs_budget(W, [300], grids=[4], families=["grid"], allocation="optimal")
    free = error_vs_budget(W, [300], grids=[4], families=["grid"], allocation="optimal",
                           count_rank_overhead=False)
    c, f = charged.points[0], free.points[0]
    assert c.rank_overhead == f.rank_overhead == 16
    assert c.n_params + c.rank_overhead <= 300 < f.n_params + f.rank_overhead
    assert c.error >= f.error


def test_grids_whose_rank_integers_exceed_the_budget_are_never_computed(monkeypatch):
    from lowrank_blocks.spectra import PreparedMatrix

    asked = []
    original = PreparedMatrix.spectra

    def spy(self, grid, blocks=None, **kw):
        asked.append(tuple(grid))
        return original(self, grid, blocks, **kw)

    monkeypatch.setattr(PreparedMatrix, "spectra", spy)
    W = RNG.standard_normal((64, 64))
    best_approximation(W, 300, grids=[(64, 64), (32, 32), (16, 16), 2], diagonal=[2])
    assert (64, 64) not in asked  # 4096 rank integers > 300: never decomposed
    assert (32, 32) not in asked  # 1024 rank integers; uniform rank 1 needs 4096 parameters
    assert (16, 16) in asked  # 256 integers + one rank on a 4 x 4 block (8) fit in 300
    assert (2, 2) in asked


def test_search_result_is_the_best_row_of_its_table_and_its_factors_reproduce_it():
    rng = np.random.default_rng(5)
    # block-low-rank 512 x 512 on a 4 x 4 grid (the issue's randomized case, smaller)
    W = np.zeros((256, 256))
    for i in range(4):
        for j in range(4):
            W[64 * i : 64 * (i + 1), 64 * j : 64 * (j + 1)] = (
                rng.standard_normal((64, 3)) @ rng.standard_normal((3, 64)))
    W += 1e-3 * rng.standard_normal(W.shape)
    for method in ("exact", "randomized"):
        best = best_approximation(W, 6200, method=method, random_state=0)
        table = best.to_frame()
        assert best.error == table["error"].min()
        recon = best.approximation.reconstruct()
        realized = np.linalg.norm(W - recon) / np.linalg.norm(W)
        assert realized == pytest.approx(best.error, rel=1e-6)
        assert best.structure == BlockGrid(4, 3) and best.error < 0.01


def test_randomized_errors_are_tail_sums_accurate_when_tiny():
    # A matrix whose exact rank-5 error is about 1e-9: a subtraction ||W||² - Σσ̃² gives 0.0.
    rng = np.random.default_rng(7)
    U, _ = np.linalg.qr(rng.standard_normal((300, 300)))
    V, _ = np.linalg.qr(rng.standard_normal((300, 300)))
    s = np.concatenate([np.ones(5), np.full(295, 1e-10)])
    W = (U * s) @ V.T
    exact = error_surface(W, grids=[1], families=["global"], max_params=6000).to_frame()
    rand = error_surface(W, grids=[1], families=["global"], method="randomized",
                         max_params=6000, random_state=0).to_frame()
    e5 = exact.query("rank == 5")["error"].iloc[0]
    r5 = rand.query("rank == 5")["error"].iloc[0]
    assert e5 == pytest.approx(np.sqrt(295) * 1e-10 / np.sqrt(5), rel=1e-3)
    assert r5 >= e5 * (1 - 1e-6)  # never optimistic
    assert r5 == pytest.approx(e5, rel=1e-2)  # and resolved, not rounded to 0
    approx = approximate(W, Global(5), method="randomized", random_state=0)
    realized = np.linalg.norm(W - approx.reconstruct()) / np.linalg.norm(W)
    assert approx.error == pytest.approx(realized, rel=1e-3)


def test_families_share_the_grid_spectra(monkeypatch):
    from lowrank_blocks import spectra as spectra_module

    calls = []
    original = spectra_module.svdvals_stack

    def spy(stack, xp):
        calls.append(stack.shape)
        return original(stack, xp)

    monkeypatch.setattr(spectra_module, "svdvals_stack", spy)
    W = RNG.standard_normal((64, 64))
    error_surface(W, grids=[2, 4], diagonal=[2, 4], method="exact")
    # one svdvals per grid (1x1, 2x2, 4x4): the diagonal blocks are read from the grids
    assert sorted(int(np.prod(c[:-2])) for c in calls) == [1, 4, 16]


def test_charged_optimal_is_the_better_of_uniform_and_per_block_and_never_loses_to_uniform():
    # Independent check: per-block optimum at budget - n_blocks (exhaustive search) against
    # the best uniform rank at the full budget (explicit SVDs); the curve must give the min.
    rng = np.random.default_rng(21)
    for _ in range(6):
        W = rng.standard_normal((9, 7)) * rng.random((9, 7)) ** 2
        for grid in [(2, 2), (3, 2)]:
            unit = BlockGrid(grid, 1)
            budgets = list(range(20, 80, 7))
            curve = error_vs_budget(W, budgets, families=["grid"], grids=[grid],
                                    best_only=False).to_frame()
            for b in budgets:
                got = curve[(curve.budget == b) & (curve.allocation == "optimal")]
                uni = curve[(curve.budget == b) & (curve.allocation == "uniform")]
                per_block = (exhaustive_allocation(W, grid, unit.blocks, b - unit.n_active)[0]
                             if b - unit.n_active >= 4 else np.inf)
                r = min(b // unit.unit_cost(W.shape), unit.max_uniform_rank(W.shape))
                uniform = (block_svd_reference(W, grid, unit.blocks, [r] * unit.n_active)[1]
                           if r >= 1 else np.inf)
                expected = min(per_block, uniform)
                if not np.isfinite(expected):
                    assert got.empty
                    continue
                assert got["error"].iloc[0] == pytest.approx(expected, rel=1e-10, abs=1e-13)
                row = got.iloc[0]
                assert row.n_params + row.rank_overhead <= b
                if len(uni):
                    assert row.error <= uni["error"].iloc[0] + 1e-15


def test_families_by_paper_name_or_class_any_case():
    W = RNG.standard_normal((8, 8))
    a = error_surface(W, families=["LoRA", "melora", "BlockGrid"], grids=[2], diagonal=[2])
    assert {s.family for s, _, _ in a.entries} == {"global", "diagonal", "grid"}
    with pytest.raises(ValueError, match="families contains 'tucker'"):
        error_surface(W, families=["tucker"])
