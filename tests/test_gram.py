"""The Gram-eigenvalue path (``method='auto'``): its error bound, its certification and fallback,
float32, other backends, the memory check before exact decompositions, and block Krylov.

References are float64 SVDs (``method='exact'``), allowed their own error: singular values
within ``δ = k u σ_max`` of the exact ones, so a tail of ``s`` values within ``2δ√(s t) + s δ²``.
"""

from __future__ import annotations

import numpy as np
import pytest

from lowrank_blocks import _gram, error_surface
from lowrank_blocks import spectra as spectra_module
from lowrank_blocks._limits import MemoryLimitError
from lowrank_blocks.linalg import block_krylov_stack
from lowrank_blocks.spectra import (
    PATH_FALLBACK,
    PATH_GRAM,
    PATH_SVD,
    block_spectra,
    prepare,
)

RNG = np.random.default_rng(20261123)
U64 = 2.0**-53


def with_spectrum(m: int, n: int, sigma: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``U diag(σ) Vᵀ`` with random orthonormal ``U`` (m × k) and ``V`` (n × k)."""
    k = len(sigma)
    U, _ = np.linalg.qr(rng.standard_normal((m, k)))
    V, _ = np.linalg.qr(rng.standard_normal((n, k)))
    return (U * sigma) @ V.T


def svd_allowance(exact, ranks: np.ndarray) -> np.ndarray:
    """Bound on the error of the SVD reference's relative errors (its own rounding)."""
    tails = exact.tails()
    delta_sq = np.zeros(ranks.shape[0])
    for b in range(len(exact.blocks)):
        k = int(exact.known[b])
        sigma_max = np.sqrt(exact.sq[b, 0])
        delta = 4 * k * U64 * sigma_max
        r = ranks[:, b]
        s = np.maximum(k - r, 0)
        t = tails[b, r]
        delta_sq += np.where(r == 0, 0.0, 2 * delta * np.sqrt(s * t) + s * delta**2)
    err_sq = exact.squared_errors(ranks)
    return _gram.relative_error_bound(err_sq, delta_sq, exact.total)


def check_within_bounds(W, grid, tol=1e-6, n_random=40, rng=RNG, expect_gram=True):
    """Auto spectra against the exact ones: every error of uniform and random ranks within
    the stated bound (plus the reference's own), and the bound within ``tol``."""
    prep = prepare(W)
    auto = prep.spectra(grid, method="auto", tol=tol)
    exact = prepare(np.array(W)).spectra(grid, method="exact")
    if expect_gram:
        assert np.any(auto.paths == PATH_GRAM), "the Gram path was expected here"
    limits = auto.rank_limits
    ranks = np.stack(
        [rng.integers(0, limits + 1) for _ in range(n_random)]
        + [np.minimum(limits, r) for r in range(int(limits.max()) + 1)]
    )
    got, ref = auto.errors(ranks), exact.errors(ranks)
    bound = auto.error_bounds(ranks)
    allowed = bound + svd_allowance(exact, ranks)
    assert np.all(np.abs(got - ref) <= allowed), (
        f"worst excess {np.max(np.abs(got - ref) - allowed):.3e}")
    assert np.all(bound <= tol), f"a certified bound {bound.max():.3e} above tol={tol}"
    ub = auto.uniform_error_bounds()
    assert np.all(ub <= tol)
    assert np.all(np.abs(auto.uniform_errors() - exact.uniform_errors()) <= ub + 1e-13)
    return auto, exact, got, ref


# -- the bound ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(300, 200), (200, 300), (256, 256)])
def test_gaussian_blocks_take_the_gram_path_and_stay_within_their_bound(shape):
    W = RNG.standard_normal(shape)
    auto, exact, got, ref = check_within_bounds(W, (2, 2))
    assert np.all(auto.paths == PATH_GRAM)
    assert auto.method == "auto" and auto.tol == 1e-6
    assert np.max(np.abs(got - ref)) < 1e-12


def test_ragged_grids_within_their_bound():
    W = RNG.standard_normal((389, 263))
    for grid in [(3, 2), (2, 3), (1, 1)]:
        auto, *_ = check_within_bounds(W, grid)
        assert set(auto.partition.row_sizes) != {auto.partition.row_sizes[0]} or grid[0] == 1


def test_geometric_decay_to_1e_minus_12_within_bound_and_falls_back_where_uncertified():
    sigma = 10.0 ** (-12 * np.arange(192) / 191)  # σ from 1 to 1e-12: σ² from 1 to 1e-24
    W = with_spectrum(384, 384, sigma, RNG)
    # One block: its high-rank tails are far below the Gram path's rounding: fallback.
    spec = prepare(W).spectra((1, 1), method="auto")
    assert spec.paths.tolist() == [PATH_FALLBACK]
    assert np.allclose(spec.uniform_errors(), prepare(W).spectra((1, 1)).uniform_errors(),
                       rtol=1e-9, atol=1e-15)
    # Certified only up to rank 20 (a tail of σ² ≥ 1e-3 σ₁²... still far above rounding).
    spec = prepare(W).spectra((1, 1), method="auto", max_rank=20)
    assert spec.paths.tolist() == [PATH_GRAM]
    ranks = np.arange(0, 21)[:, None]
    exact = prepare(W).spectra((1, 1))
    bound = spec.error_bounds(ranks)
    assert np.all(bound <= 1e-6)
    assert np.all(np.abs(spec.errors(ranks) - exact.errors(ranks))
                  <= bound + svd_allowance(exact, ranks))
    # Beyond the rank certified the bound says so.
    assert spec.error_bounds([150]) > 1e-6


def test_exactly_low_rank_blocks_fall_back_and_give_the_svd_answer():
    W = RNG.standard_normal((256, 7)) @ RNG.standard_normal((7, 256))  # rank 7
    auto = prepare(W).spectra((2, 2), method="auto")
    exact = prepare(W).spectra((2, 2), method="exact")
    assert np.all(auto.paths == PATH_FALLBACK)
    np.testing.assert_allclose(auto.uniform_errors(), exact.uniform_errors(), rtol=0, atol=0)
    assert auto.uniform_errors()[7] < 1e-14  # rank 8 ≥ 7: nothing left but rounding
    assert auto.method == "exact"  # every block ended on the SVD


@pytest.mark.parametrize("scale", [1e300, 1e-300, 2.0**1000, 3e-290])
def test_extreme_magnitudes_are_certified_like_any_other(scale):
    W0 = RNG.standard_normal((200, 200))
    auto, exact, got, ref = check_within_bounds(W0 * scale, (2, 2))
    base = prepare(W0).spectra((2, 2), method="auto")
    # W0 * scale is W0 rounded (scale is not a power of two): the same errors to rounding.
    np.testing.assert_allclose(auto.uniform_errors(), base.uniform_errors(), rtol=1e-9)


def test_zero_blocks_are_certified_exactly():
    W = RNG.standard_normal((256, 256))
    W[:128, 128:] = 0.0
    auto, *_ = check_within_bounds(W, (2, 2))
    assert auto.paths.tolist() == [PATH_GRAM] * 4
    assert auto.sq[1].max() == 0.0 and auto.bound_a[1] < 1e-300  # only the underflow term


def test_the_bound_holds_per_tail_on_stress_blocks():
    # Direct check of _gram on one stack: |t̂(r) − t(r)| ≤ Δ(r) for every r, where t is the
    # tail of a float64 SVD of the same blocks (allowed its own error).
    blocks = np.stack([
        RNG.standard_normal((180, 120)),
        with_spectrum(180, 120, 10.0 ** (-6 * np.arange(120) / 119), RNG),
        with_spectrum(180, 120, np.r_[np.ones(10), np.zeros(110)], RNG),
        with_spectrum(180, 120, 1.0 / np.arange(1, 121), RNG) * 2.0**-500,
    ])
    g = _gram.gram_eigvalsh(blocks, np)
    bounds = _gram.tail_bounds(g.values, g.a, g.c)
    s = np.linalg.svd(blocks, compute_uv=False)
    k = s.shape[-1]
    ref = np.concatenate((np.cumsum((s**2)[:, ::-1], axis=-1)[:, ::-1], np.zeros((4, 1))), -1)
    got = np.concatenate((np.cumsum(g.values[:, ::-1], axis=-1)[:, ::-1], np.zeros((4, 1))), -1)
    delta = 4 * k * U64 * s[:, :1]
    count = np.arange(k, -1, -1)
    svd_err = 2 * delta * np.sqrt(count * ref) + count * delta**2
    assert np.all(np.abs(got - ref) <= bounds + svd_err)
    # The bound is rigorous, not tight: it is far above what happens on these blocks.
    assert np.max(np.abs(got - ref)[:, :-1] / bounds[:, :-1]) < 0.1


def test_float32_goes_to_the_single_precision_svd_at_the_default_tol(monkeypatch):
    W = RNG.standard_normal((256, 256)).astype(np.float32)
    calls = []
    original = _gram.gram_eigvalsh
    monkeypatch.setattr(_gram, "gram_eigvalsh", lambda s, xp: calls.append(s) or original(s, xp))
    spec = prepare(W).spectra((2, 2), method="auto")
    assert calls == []  # not certifiable a priori: no Gram matrix formed at all
    assert np.all(spec.paths == PATH_FALLBACK)


def test_float32_gram_path_stays_float32_and_within_its_bound(monkeypatch):
    W = RNG.standard_normal((256, 256)).astype(np.float32)
    seen = []
    original = _gram._gram_numpy
    monkeypatch.setattr(_gram, "_gram_numpy",
                        lambda s: seen.append(str(s.dtype)) or original(s))
    # What float32's rounding can certify: 1e-3 up to rank 60 of these 128 × 128 blocks (the
    # smallest values, near float32's rounding of ‖B‖², are not resolved).
    auto = prepare(W).spectra((2, 2), method="auto", tol=1e-3, max_rank=60)
    assert seen == ["float32"] and np.all(auto.paths == PATH_GRAM)
    assert np.all(prepare(W).spectra((2, 2), method="auto", tol=1e-3).paths == PATH_FALLBACK)
    exact = prepare(W.astype(np.float64)).spectra((2, 2), method="exact")  # exact to ~1e-16
    ranks = np.stack([np.full(4, r) for r in range(0, 61, 3)])
    got, ref = auto.errors(ranks), exact.errors(ranks)
    bound = auto.error_bounds(ranks)
    assert np.all(np.abs(got - ref) <= bound) and np.all(bound <= 1e-3)
    # float32 accuracy in practice: about 1e-7 on these errors, far inside the bound.
    assert np.max(np.abs(got - ref)) < 1e-5


def test_fallback_is_per_block_and_counted(monkeypatch):
    # Two blocks exactly low rank (fallback), two Gaussian (Gram): one svdvals call, for the two.
    W = RNG.standard_normal((256, 256))
    W[:128, :128] = RNG.standard_normal((128, 3)) @ RNG.standard_normal((3, 128))
    W[128:, 128:] = RNG.standard_normal((128, 2)) @ RNG.standard_normal((2, 128))
    shapes = []
    original = spectra_module.svdvals_stack
    monkeypatch.setattr(spectra_module, "svdvals_stack",
                        lambda s, xp: shapes.append(s.shape) or original(s, xp))
    auto = prepare(W).spectra((2, 2), method="auto")
    assert auto.paths.tolist() == [PATH_FALLBACK, PATH_GRAM, PATH_GRAM, PATH_FALLBACK]
    assert shapes == [(2, 128, 128)]
    exact = prepare(W).spectra((2, 2), method="exact")
    np.testing.assert_array_equal(auto.sq[[0, 3]], exact.sq[[0, 3]])
    assert auto.bound_a[0] == 0 and auto.bound_a[1] > 0


def test_an_impossible_tolerance_falls_back_everywhere():
    W = RNG.standard_normal((256, 256))
    auto = prepare(W).spectra((2, 2), method="auto", tol=1e-15)
    assert np.all(auto.paths == PATH_FALLBACK) and auto.method == "exact"


def test_certified_spectra_are_cached_and_shared_with_the_diagonal(monkeypatch):
    W = RNG.standard_normal((256, 256))
    calls = []
    original = _gram.gram_eigvalsh
    monkeypatch.setattr(_gram, "gram_eigvalsh", lambda s, xp: calls.append(s.shape) or original(s, xp))
    prep = prepare(W)
    whole = prep.spectra((2, 2), method="auto")
    diag = prep.spectra((2, 2), ((0, 0), (1, 1)), method="auto", max_rank=50)
    assert len(calls) == 1
    np.testing.assert_array_equal(diag.sq, whole.sq[[0, 3]])
    # A stricter tolerance is a new certification.
    prep.spectra((2, 2), method="auto", tol=1e-9)
    assert len(calls) == 2


def test_surfaces_default_to_auto_and_match_exact():
    W = RNG.standard_normal((256, 256))
    auto = error_surface(W, grids=[1, 2, 4])
    exact = error_surface(W, grids=[1, 2, 4], method="exact")
    assert auto.method == "auto" and exact.method == "exact"
    a, e = auto.to_frame(), exact.to_frame()
    assert np.max(np.abs(a["error"] - e["error"])) < 1e-6
    small = error_surface(RNG.standard_normal((40, 40)))  # blocks below 64: all by SVD
    assert small.method == "exact"


def test_block_spectra_default_and_tol_validation():
    W = RNG.standard_normal((128, 128))
    assert block_spectra(W, "grid", 1).method == "auto"
    assert block_spectra(W, "grid", 1, method="exact").method == "exact"
    with pytest.raises(ValueError, match=r"tol=0.0 is not allowed"):
        block_spectra(W, "grid", 1, tol=0.0)
    with pytest.raises(TypeError, match="tol='x' must be a number"):
        block_spectra(W, "grid", 1, tol="x")


def test_stacks_are_certified_per_matrix():
    X = RNG.standard_normal((3, 128, 128))
    X[1] = RNG.standard_normal((128, 4)) @ RNG.standard_normal((4, 128))  # low rank: fallback
    X[2] *= 1e200
    from lowrank_blocks.spectra import prepare_stack

    auto = prepare_stack(X).spectra((1, 1), method="auto")
    exact = prepare_stack(X).spectra((1, 1))
    assert auto.paths[:, 0].tolist() == [PATH_GRAM, PATH_FALLBACK, PATH_GRAM]
    err = np.abs(auto.uniform_errors() - exact.uniform_errors())
    assert np.all(err <= auto.uniform_error_bounds() + 1e-13)
    assert np.all(auto.uniform_error_bounds() <= 1e-6)


# -- other backends -------------------------------------------------------------------------


def test_torch_runs_the_batched_gram_path_on_its_own_tensors(monkeypatch):
    torch = pytest.importorskip("torch")
    W = RNG.standard_normal((256, 256))
    seen = []
    original = _gram.gram_eigvalsh
    monkeypatch.setattr(_gram, "gram_eigvalsh",
                        lambda s, xp: seen.append((type(s), s.dtype, tuple(s.shape))) or original(s, xp))
    auto = prepare(torch.asarray(W)).spectra((2, 2), method="auto")
    assert seen == [(torch.Tensor, torch.float64, (4, 128, 128))]
    exact = prepare(W).spectra((2, 2), method="exact")
    assert np.all(np.abs(auto.uniform_errors() - exact.uniform_errors())
                  <= auto.uniform_error_bounds() + 1e-13)
    seen.clear()
    prepare(torch.asarray(W, dtype=torch.float32)).spectra((2, 2), method="auto", tol=1e-3,
                                                          max_rank=60)
    assert seen[0][1] == torch.float32


def test_array_api_strict_gram_path():
    xp = pytest.importorskip("array_api_strict")
    W = RNG.standard_normal((128, 200))
    auto = prepare(xp.asarray(W)).spectra((1, 1), method="auto")
    exact = prepare(W).spectra((1, 1), method="exact")
    assert auto.paths.tolist() == [PATH_GRAM]
    assert np.all(np.abs(auto.uniform_errors() - exact.uniform_errors())
                  <= auto.uniform_error_bounds() + 1e-13)


def test_tf32_products_are_charged_float32_rounding_of_a_tf32_unit():
    torch = pytest.importorskip("torch")
    u_mm, u, tiny = _gram.rounding(torch.zeros(2, dtype=torch.float32))
    assert u_mm == u == 2.0**-24 and tiny == np.finfo(np.float32).tiny  # on the CPU: no TF32
    assert _gram.rounding(np.zeros(2))[:2] == (U64, U64)


# -- memory ---------------------------------------------------------------------------------


def test_exact_decompositions_are_refused_up_front_under_a_small_limit():
    W = RNG.standard_normal((512, 512)).astype(np.float32)
    with pytest.raises(MemoryLimitError, match=r"singular values of 1 block of 512 × 512 "
                                                r"\(float32\) would need .*method='randomized'"):
        prepare(W).spectra((1, 1), method="exact", max_bytes=500_000)
    with pytest.raises(MemoryLimitError, match="out-of-core route"):
        block_spectra(W.astype(np.float64), "grid", 1, max_bytes=500_000)  # the Gram path
    assert prepare(W).spectra((1, 1), method="exact", max_bytes=4_000_000).known[0] == 512


def test_the_memory_estimate_of_a_20000_square_float32_matrix(monkeypatch):
    # Without allocating it: the estimate for the exact spectra of a 20000 × 20000 float32
    # matrix is one more matrix (the copy LAPACK works on) plus workspace: within 3× in all.
    import lowrank_blocks._limits as limits

    asked = []
    monkeypatch.setattr(limits, "check_bytes", lambda n, what, **kw: asked.append((n, what)))
    prep = prepare(np.zeros((8, 8), dtype=np.float32))
    prep._check_memory(20000, 20000, 1, False, None)
    prep._check_memory(20000, 20000, 1, True, None)
    prep._check_memory(20000, 20000, 1, True, None, stacked=True)
    matrix = 20000 * 20000 * 4
    assert matrix < asked[0][0] < 1.01 * matrix   # SVD: one copy
    # Gram path: the Gram matrix, decomposed in place, the block read in place by BLAS
    assert matrix < asked[1][0] < 1.01 * matrix
    assert 2 * matrix < asked[2][0] < 2.01 * matrix  # and the blocks first stacked into a copy
    assert "20000 × 20000 (float32)" in asked[0][1]
    # A matrix BLAS cannot read in place (no unit stride) is copied block by block first.
    strided = prepare(np.zeros((16, 16), dtype=np.float32)[::2, ::2])
    if strided.data.strides[-1] != 4:
        strided._check_memory(20000, 20000, 1, True, None)
        assert 2 * matrix < asked[3][0] < 2.01 * matrix


# -- block Krylov -------------------------------------------------------------------------------


def test_block_krylov_never_optimistic_and_accurate_on_a_flat_spectrum():
    W = RNG.standard_normal((512, 512))
    exact = error_surface(W, grids=[1, 2], families=["grid"], method="exact",
                          max_params=512 * 512 // 10).to_frame()
    rand = error_surface(W, grids=[1, 2], families=["grid"], method="randomized",
                         random_state=0).to_frame()
    merged = exact.merge(rand, on=["p", "q", "rank"], suffixes=("_e", "_r"))
    diff = merged["error_r"] - merged["error_e"]
    assert len(merged) == len(exact)
    assert (diff >= -1e-12).all() and diff.max() < 1e-3


def test_block_krylov_float32_and_torch():
    torch = pytest.importorskip("torch")
    import array_api_compat

    X = RNG.standard_normal((3, 200, 150))
    S64, r64 = block_krylov_stack(X, 5, np, random_state=0)
    S32, r32 = block_krylov_stack(X.astype(np.float32), 5, np, random_state=0)
    assert S32.dtype == np.float32 and r32.dtype == np.float32
    np.testing.assert_allclose(S32[:, :5], S64[:, :5], rtol=1e-4)
    T = torch.asarray(X)
    St, rt = block_krylov_stack(T, 5, array_api_compat.array_namespace(T), random_state=0)
    assert isinstance(St, torch.Tensor)
    exact = np.linalg.svd(X, compute_uv=False)
    assert np.all(St.numpy() <= exact[:, : St.shape[1]] * (1 + 1e-12))


def test_block_krylov_on_exhausted_spaces_keeps_an_orthonormal_basis():
    # Rank 3 blocks and 5 × 4 directions asked: the space is exhausted after one block.
    X = RNG.standard_normal((2, 120, 3)) @ RNG.standard_normal((2, 3, 90))
    U, S, Vt, res = block_krylov_stack(X, 3, np, oversampling=2, n_iter=3, random_state=0,
                                       compute_uv=True)
    exact = np.linalg.svd(X, compute_uv=False)
    np.testing.assert_allclose(S[:, :3], exact[:, :3], rtol=1e-10)
    assert np.all(S <= exact[:, :1] * (1 + 1e-12))
    gram = np.swapaxes(U, 1, 2) @ U
    assert np.max(np.abs(gram - np.eye(U.shape[-1]))) < 1e-8
    assert np.all(res >= 0) and np.all(res < 1e-20 * np.sum(X**2, axis=(1, 2)))


def test_randomized_approximation_reproduces_its_spectra_error():
    from lowrank_blocks import BlockGrid, approximate, best_approximation

    W = RNG.standard_normal((512, 512))
    approx = approximate(W, BlockGrid(2, 10), method="randomized", random_state=3)
    realized = np.linalg.norm(W - approx.reconstruct()) / np.linalg.norm(W)
    assert approx.error == pytest.approx(realized, rel=1e-9)
    best = best_approximation(W, 512 * 512 // 20, method="randomized", random_state=1,
                              grids=[1, 2])
    realized = (np.linalg.norm(W - best.approximation.reconstruct()) / np.linalg.norm(W))
    if best.structure.grid == (1, 1):  # block Krylov: the same range drawn again
        assert best.error == pytest.approx(realized, rel=1e-9)
    else:  # Gram values (never below the exact errors); the factors are the exact SVD's
        exact = best_approximation(W, 512 * 512 // 20, method="exact", grids=[1, 2])
        assert best.structure == exact.structure
        assert realized == pytest.approx(exact.error, rel=1e-12)
        assert -1e-15 <= best.error - realized <= 1e-4  # below 0: the rounding of `realized`


def test_a_priori_feasibility_matches_certification_on_float64():
    W = RNG.standard_normal((256, 256))
    prep = prepare(W)
    held, outside = prep.energies((1, 1), ((0, 0),))
    ok = _gram.a_priori_feasible(held, np.ones(1), held.sum() + outside, 1e-6, 256, 256,
                                 U64)
    assert ok.tolist() == [True]
    assert prep.spectra((1, 1), method="auto").paths.tolist() == [PATH_GRAM]
    assert PATH_SVD == 0


# -- the GPU benchmark, on the CPU ----------------------------------------------------------------


def test_bench_gpu_quick_runs_the_device_path_on_torch_cpu_tensors(monkeypatch, capsys):
    pytest.importorskip("torch")
    import importlib.util
    import sys
    from pathlib import Path

    import lowrank_blocks.linalg as linalg

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"
    spec = importlib.util.spec_from_file_location("bench_gpu", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_gpu", bench)
    spec.loader.exec_module(bench)
    kinds = set()
    original_gram, original_krylov = _gram.gram_eigvalsh, linalg._block_krylov_serial
    monkeypatch.setattr(_gram, "gram_eigvalsh",
                        lambda s, xp: kinds.add(("gram", type(s).__module__)) or original_gram(s, xp))

    def krylov(stack, *a, **k):
        kinds.add(("krylov", type(stack).__module__))
        return original_krylov(stack, *a, **k)

    monkeypatch.setattr(linalg, "_block_krylov_serial", krylov)
    rows = bench.main(["--quick"])
    assert [r["what"].split(" (")[0] for r in rows] == [
        "exact surface", "auto surface", "randomized surface", "model scan"]
    assert all(r["diff"] < 1e-5 for r in rows)
    assert ("gram", "torch") in kinds and ("krylov", "torch") in kinds
    assert "not a GPU measurement" in capsys.readouterr().out


def peak_added_bytes(setup: str, run: str) -> int:
    """Peak resident memory that ``run`` adds in a fresh process, after ``setup`` (Linux: the
    high-water mark ``VmHWM``, reset by ``/proc/self/clear_refs``, so no peak is missed)."""
    import os
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux's /proc/self/clear_refs")
    code = "\n".join([
        "import numpy as np",
        "from lowrank_blocks import _gram",
        "from lowrank_blocks.spectra import prepare",
        textwrap.dedent(setup),
        "def status(key):",
        "    for line in open('/proc/self/status'):",
        "        if line.startswith(key + ':'):",
        "            return int(line.split()[1]) * 1024",
        "open('/proc/self/clear_refs', 'w').write('5')",
        "base = status('VmRSS')",
        textwrap.dedent(run),
        "print(status('VmHWM') - base)",
    ])
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}  # fast on a busy machine
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, cwd=root, env=env)
    except subprocess.CalledProcessError as exc:
        if "clear_refs" in exc.stderr:  # not writable here (a sandbox)
            pytest.skip("/proc/self/clear_refs is not writable")
        raise
    return int(out.stdout.strip().splitlines()[-1])


def test_the_gram_matrix_is_not_copied():
    # NumPy's eigvalsh copies its input, so the Gram matrix of a block used to exist twice
    # (and several times over with the grids decomposed at once): the Gram path's peak memory
    # was 3.9 times the matrix at d = 2048, against 2.6 for the SVD.  Now syrk writes one
    # Gram matrix, which syevd decomposes in place: the second call on a 1024 × 1024 block
    # adds at most 1.25 Gram matrices (the first touches BLAS's own buffers).
    k = 1024
    added = peak_added_bytes(
        f"B = np.random.default_rng(0).standard_normal(({k}, {k}))\n"
        "_gram.gram_eigvalsh(B, np)\n",
        "_gram.gram_eigvalsh(B, np)\n",
    )
    assert added <= 1.25 * k * k * 8, f"{added / (k * k * 8):.2f} Gram matrices"


@pytest.mark.parametrize("shape, grid", [((1024, 1024), (1, 1)), ((1024, 768), (2, 2)),
                                         ((768, 1024), (2, 4))])
def test_the_memory_estimate_bounds_the_gram_path(shape, grid):
    # What _check_memory estimates for a group's Gram eigenvalues is at least what computing
    # them adds to the resident memory (a second time: BLAS's buffers are the first call's).
    W = np.random.default_rng(1).standard_normal(shape)
    prep = prepare(W)
    part = prep.partition(grid)
    group = [(i, j) for i in range(grid[0]) for j in range(grid[1])]
    mb, nb = part.block_shape(0, 0)
    import lowrank_blocks._limits as limits

    asked = []
    original = limits.check_bytes
    limits.check_bytes = lambda n, what, **kw: asked.append(n)
    try:
        prep._check_memory(mb, nb, len(group), True, None)
    finally:
        limits.check_bytes = original
    setup = (f"W = np.random.default_rng(1).standard_normal({shape})\n"
             f"prep = prepare(W)\n"
             f"part = prep.partition({grid})\n"
             f"from lowrank_blocks.linalg import block_view\n"
             f"view = block_view(prep.data, part, {group}, np)\n"
             "_gram.gram_eigvalsh(view, np)\n")
    added = peak_added_bytes(setup, "_gram.gram_eigvalsh(view, np)\n")
    assert added <= asked[0], f"{added} > estimate {asked[0]}"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gram_values_of_every_layout(dtype):
    # syrk reads blocks in place through their leading dimension (views of C- and
    # Fortran-ordered matrices, tall and wide blocks) and copies the rest; the values are
    # the eigenvalues of the Gram matrix formed by a product, to rounding, in the dtype.
    rng = np.random.default_rng(5)
    W = rng.standard_normal((300, 420)).astype(dtype)
    eps = float(np.finfo(dtype).eps)
    views = {
        "C": W,
        "F": np.asfortranarray(W),
        "C block": W[10:110, 20:300],
        "F block": np.asfortranarray(W)[10:270, 20:100],
        "strided": W[::2, ::3],
        "reversed": W[::-1, 5:80],
        "stack": np.stack([W[:100, :80], W[100:200, 80:160]]),
        "grid view": W[:300, :420].reshape(3, 100, 4, 105).transpose(0, 2, 1, 3),
    }
    for name, B in views.items():
        g = _gram.gram_eigvalsh(B, np)
        m, n = B.shape[-2:]
        B64 = B.astype(np.float64)
        Bt = np.swapaxes(B64, -1, -2)
        G = Bt @ B64 if n <= m else B64 @ Bt
        ref = np.linalg.eigvalsh(G)[..., ::-1]
        assert g.values.dtype == np.float64 and g.values.shape == ref.shape, name
        scale = np.max(ref, axis=-1, keepdims=True)
        assert np.all(np.abs(g.values - np.maximum(ref, 0)) <= 8 * max(m, n) * eps * scale), name
        assert np.all(g.a > 0) and np.all(g.c > 0), name


def test_gram_values_are_float32_computations(monkeypatch):
    # float32 stays float32: ssyrk and ssyevd, not a float64 computation in disguise.
    calls = []
    original = _gram._routines
    monkeypatch.setattr(_gram, "_routines", lambda dtype: calls.append(np.dtype(dtype))
                        or original(dtype))
    B = np.random.default_rng(2).standard_normal((200, 150)).astype(np.float32)
    _gram.gram_eigvalsh(B, np)
    assert calls == [np.dtype(np.float32)]


def test_one_blas_thread_is_reference_counted():
    # Two grids' Gram matrices at once: the first to finish must not lift the limit under
    # the other (SciPy's BLAS, loaded inside the grids' threads, would then oversubscribe
    # the cores, ten times slower); the last one restores what was there.
    from threadpoolctl import threadpool_info

    _gram._routines(np.float64)  # SciPy's BLAS loaded

    def threads() -> list[int]:
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    before = threads()
    first, second = _gram._one_blas_thread(), _gram._one_blas_thread()
    first.__enter__()
    second.__enter__()
    assert set(threads()) == {1}
    first.__exit__(None, None, None)
    assert set(threads()) == {1}
    second.__exit__(None, None, None)
    assert threads() == before


def test_grids_decomposed_at_once_get_the_same_values():
    # run_concurrently (one grid per thread, BLAS on one thread) against one grid at a time.
    from lowrank_blocks.linalg import run_concurrently

    W = RNG.standard_normal((256, 256))
    at_once, alone = prepare(W), prepare(W)
    grids = [(1, 1), (2, 2), (4, 4), (2, 1)]
    specs = run_concurrently([lambda g=g: at_once.spectra(g, method="auto") for g in grids],
                             [4, 3, 2, 1])
    for grid, spec in zip(grids, specs):
        ref = alone.spectra(grid, method="auto")
        assert np.all(spec.paths == PATH_GRAM) and np.all(ref.paths == PATH_GRAM)
        # (BLAS on one thread or two: rounding apart, far inside the bound)
        np.testing.assert_allclose(spec.sq, ref.sq, rtol=0, atol=1e-12 * ref.sq.max())
        np.testing.assert_allclose(spec.bound_a, ref.bound_a, rtol=1e-12)
