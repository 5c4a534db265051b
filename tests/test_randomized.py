"""The randomized method's two fast paths, against float64 SVD references.

* Large float64 blocks build their block Krylov basis in float32 and take the Rayleigh–Ritz step
  in float64 (``linalg._block_krylov_serial``); blocks whose tails float32 cannot resolve are
  computed again in float64.
* Where block Krylov does not pay, the leading values come from float32 Gram matrices with an
  allowance (``PreparedMatrix._leading_gram_group``); tails too small for it take the certified
  float64 Gram path.

In both, every error must stay at or above the exact one and close to it.
"""

from __future__ import annotations

import numpy as np
import pytest

import lowrank_blocks.linalg as linalg
from lowrank_blocks import Global, approximate, error_surface
from lowrank_blocks.linalg import block_krylov_stack
from lowrank_blocks.spectra import PATH_FALLBACK, PATH_GRAM, PATH_RANDOMIZED, prepare

RNG = np.random.default_rng(7)


def with_spectrum(m: int, n: int, sigma: np.ndarray) -> np.ndarray:
    U = np.linalg.qr(RNG.standard_normal((m, len(sigma))))[0]
    V = np.linalg.qr(RNG.standard_normal((n, len(sigma))))[0]
    return (U * sigma) @ V.T


def tails(A: np.ndarray, rank: int) -> np.ndarray:
    """Exact ``Σ_{i>k} σ_i²`` for k = 1..rank (float64 SVD)."""
    s2 = np.linalg.svd(A, compute_uv=False) ** 2
    return np.array([s2[k:].sum() for k in range(1, rank + 1)])


def krylov_tails(S: np.ndarray, res: float, rank: int) -> np.ndarray:
    s2 = np.asarray(S, dtype=np.float64) ** 2
    return np.array([res + s2[k:].sum() for k in range(1, rank + 1)])


def krylov_and_exact_tails(A: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Block Krylov's tails of ``A`` (defaults, seed 0) and the exact ones, k = 1..rank."""
    S, res = block_krylov_stack(A[None], rank, np, random_state=0)
    return krylov_tails(S[0], float(res[0]), rank), tails(A, rank)


@pytest.fixture
def spy(monkeypatch):
    """Counts the mixed-precision Rayleigh–Ritz steps and the float64 recomputations."""
    calls = {"refine": 0, "float64_again": 0}
    leading, serial = linalg._leading_eigenvectors, linalg._block_krylov_serial

    def counted_leading(*args, **kwargs):
        calls["refine"] += 1
        return leading(*args, **kwargs)

    def counted_serial(*args, **kwargs):
        if kwargs.get("mixed") is False:
            calls["float64_again"] += 1
        return serial(*args, **kwargs)

    monkeypatch.setattr(linalg, "_leading_eigenvectors", counted_leading)
    monkeypatch.setattr(linalg, "_block_krylov_serial", counted_serial)
    return calls


def test_mixed_precision_basis_keeps_float64_errors_on_a_large_block(spy):
    A = RNG.standard_normal((640, 576))  # flat spectrum: the hard case
    rank = 24
    S, res = block_krylov_stack(A[None], rank, np, random_state=0)
    assert spy["refine"] == 1 and spy["float64_again"] == 0
    assert S.dtype == np.float64
    got, want = krylov_tails(S[0], float(res[0]), rank), tails(A, rank)
    assert np.all(got >= want * (1 - 1e-13))  # never below the exact error
    energy = np.sum(A**2)
    # relative errors within 1e-3 of the exact ones (defaults: oversampling 10, n_iter 4)
    assert np.max(np.sqrt(got / energy) - np.sqrt(want / energy)) < 1e-3
    # float64 throughout (with full-width blocks): no better than the mixed path, whose
    # half-width blocks, twice as deep, are the more accurate on a flat spectrum
    S64, res64 = linalg._block_krylov_serial(
        A[None], rank, np, rng=np.random.default_rng(0), oversampling=10, n_iter=4,
        compute_uv=False, mixed=False)
    ref = krylov_tails(S64[0], float(res64[0]), rank)
    assert np.max(np.sqrt(got / energy) - np.sqrt(ref / energy)) < 2e-5
    assert np.max(np.sqrt(got / energy) - np.sqrt(want / energy)) < 0.5 * np.max(
        np.sqrt(ref / energy) - np.sqrt(want / energy))


def test_mixed_precision_factors_are_orthonormal_and_realize_the_reported_error(spy):
    W = with_spectrum(600, 520, 1.0 / np.arange(1, 521) ** 0.1)  # flat enough for float32
    approx = approximate(W, Global(15), method="randomized", random_state=2)
    assert spy["refine"] >= 1
    realized = np.linalg.norm(W - approx.reconstruct()) / np.linalg.norm(W)
    assert approx.error == pytest.approx(realized, rel=1e-10)
    exact = approximate(W, Global(15), method="exact").error
    assert exact <= approx.error <= exact + 1e-3
    U, S, Vt, res = block_krylov_stack(W[None], 15, np, random_state=0, compute_uv=True)
    assert U.dtype == np.float64
    np.testing.assert_allclose(U[0].T @ U[0], np.eye(U.shape[-1]), atol=1e-12)


def test_decaying_spectra_are_computed_in_float64(spy):
    # σ_i = 10^(-i/6): at rank 40 the relative error is about 1e-7, below what float32
    # directions resolve; the power steps ahead show the spectrum is not flat, so the block is
    # computed in float64 from the start, and the error is resolved to 1 %.
    A = with_spectrum(560, 540, 10.0 ** (-np.arange(540) / 6))
    rank = 40
    got, want = krylov_and_exact_tails(A, rank)
    assert spy["refine"] == 0 and spy["float64_again"] == 0
    assert np.all(got >= want * (1 - 1e-10))
    np.testing.assert_allclose(np.sqrt(got[-1]), np.sqrt(want[-1]), rtol=1e-2)


def test_the_final_check_catches_a_spectrum_the_first_block_misjudged(spy, monkeypatch):
    monkeypatch.setattr(linalg, "_flat_enough", lambda *args: True)
    A = with_spectrum(560, 540, 10.0 ** (-np.arange(540) / 30))
    rank = 40
    got, want = krylov_and_exact_tails(A, rank)
    assert spy["refine"] == 1 and spy["float64_again"] == 1
    assert np.all(got >= want * (1 - 1e-10))
    np.testing.assert_allclose(np.sqrt(got), np.sqrt(want), rtol=1e-3)


def test_a_repeated_value_wider_than_the_half_blocks_is_computed_again(spy):
    # 30 copies of σ = 1 above a flat tail: blocks of 17 (half of 24 + 10) resolve only 17 of
    # them, which would miss 13 × (1 − 0.5) of the energy at rank 24 (an error off by 8e-3).
    # The leading Ritz values show 17 copies: the block is computed again with full blocks.
    sigma = np.concatenate([np.ones(30), np.linspace(0.72, 0.5, 546)])
    A = with_spectrum(640, 576, sigma)
    rank = 24
    got, want = krylov_and_exact_tails(A, rank)
    assert spy["refine"] == 1 and spy["float64_again"] == 1
    energy = np.sum(A**2)
    assert np.all(got >= want * (1 - 1e-12))
    assert np.max(np.sqrt(got / energy) - np.sqrt(want / energy)) < 1e-4


def test_a_stack_split_across_threads_with_one_block_computed_again():
    # One block keeps the mixed path (b values), the other is computed again in float64 (D
    # values): the threads' parts are padded, not refused (this raised ValueError).
    from lowrank_blocks import BlockGrid, approximate

    top = RNG.standard_normal((640, 1152))
    sigma = np.concatenate([np.ones(30), np.linspace(0.72, 0.5, 546)])
    bottom = np.hstack([with_spectrum(640, 576, sigma), with_spectrum(640, 576, sigma)])
    W = np.vstack([top, bottom])
    a = approximate(W, BlockGrid(2, 20), method="randomized", random_state=0)
    realized = np.linalg.norm(W - a.reconstruct()) / np.linalg.norm(W)
    assert a.error == pytest.approx(realized, rel=1e-9)
    assert a.error >= approximate(W, BlockGrid(2, 20), method="exact").error - 1e-12
    stack = np.stack([W[:640, :576], W[640:, :576]])
    S, res = block_krylov_stack(stack, 24, np, random_state=0)
    for k in range(2):
        got, want = krylov_tails(S[k], float(res[k]), 24), tails(stack[k], 24)
        assert np.all(got >= want * (1 - 1e-12))


def test_a_gaussian_block_is_not_taken_for_a_cluster(spy):
    # the closest run of 56 of the 112 leading values of a 2048 × 2048 Gaussian matrix spans
    # about 10 % (in σ²): five times the threshold
    A = RNG.standard_normal((2048, 2048))
    S, res = block_krylov_stack(A[None], 102, np, random_state=0)
    assert spy["refine"] == 1 and spy["float64_again"] == 0


def test_exhausted_krylov_space_keeps_the_basis_orthonormal():
    # The spectrum decays below rounding after about 96 values while 250 directions are built:
    # the later blocks are rounding, and used to come out of QR far from orthogonal to the
    # basis (Ritz values above the singular values, errors wrong by 8 % of the energy).
    A = with_spectrum(560, 540, 10.0 ** (-np.arange(540) / 6))
    U, S, Vt, res = linalg._block_krylov_serial(
        A[None], 40, np, rng=np.random.default_rng(0), oversampling=10, n_iter=4,
        compute_uv=True, mixed=False)
    assert U.shape[-1] == 250
    np.testing.assert_allclose(U[0].T @ U[0], np.eye(250), atol=1e-12)
    exact = np.linalg.svd(A, compute_uv=False)
    assert np.all(S[0] <= exact[: S.shape[-1]] * (1 + 1e-12) + 1e-14)  # below: rounding
    assert res[0] <= 1e-12 * np.sum(A**2)


def test_float32_gram_values_bound_the_exact_errors_from_above():
    W = RNG.standard_normal((1024, 1024))
    spec = prepare(W).spectra((8, 8), method="randomized", max_rank=4, random_state=0)
    assert spec.method == "randomized" and np.all(spec.paths == PATH_RANDOMIZED)
    exact = prepare(W).spectra((8, 8), method="exact")
    for r in range(1, 5):
        ranks = np.full(64, r)
        got, want = spec.errors(ranks), exact.errors(ranks)
        assert want <= got <= want + 1e-4


def test_small_tails_take_the_certified_float64_path():
    # Every 128 × 128 block of rank 3 plus 1e-9 noise: the tails at rank 3 are ~1e-18 of the
    # energy, far below the float32 allowance; the certified float64 path resolves them.
    blocks = [[with_spectrum(128, 128, np.array([3.0, 2.0, 1.0])) for _ in range(4)]
              for _ in range(4)]
    W = np.block(blocks) + 1e-9 * RNG.standard_normal((512, 512))
    spec = prepare(W).spectra((4, 4), method="randomized", max_rank=3, random_state=0)
    assert not np.any(spec.paths == PATH_RANDOMIZED)
    assert np.all(np.isin(spec.paths, (PATH_GRAM, PATH_FALLBACK)))
    exact = prepare(W).spectra((4, 4), method="exact")
    ranks = np.full(16, 3)
    assert spec.errors(ranks) == pytest.approx(exact.errors(ranks), rel=1e-6)


def test_float32_underflow_is_covered_by_the_allowance():
    # One entry of 1 and the rest around 1e-45 of it: in float32 those are subnormal or zero.
    W = 1e-45 * RNG.standard_normal((512, 512))
    W[0, 0] = 1.0
    kw = dict(grids=[4, 8], families=["grid"], max_params=512 * 512 // 10)
    got = error_surface(W, method="randomized", random_state=0, **kw).to_frame()
    want = error_surface(W, method="exact", **kw).to_frame()
    merged = want.merge(got, on=["p", "q", "rank"], suffixes=("_e", "_r"))
    assert len(merged) == len(want)
    assert np.all(merged["error_r"] >= merged["error_e"] * (1 - 1e-12))
    np.testing.assert_allclose(merged["error_r"], merged["error_e"], rtol=1e-6, atol=1e-12)


def test_float32_gram_values_are_refused_over_the_memory_limit():
    from lowrank_blocks._limits import MemoryLimitError

    W = RNG.standard_normal((1024, 1024))
    with pytest.raises(MemoryLimitError, match="float32 Gram values of 64 blocks of 128"):
        prepare(W).spectra((8, 8), method="randomized", max_rank=4, random_state=0,
                           max_bytes=100_000)


def test_float32_gram_values_of_a_stack_with_extreme_scales():
    # Two matrices scaled by different powers of two (one far below float32's range): the
    # energies are taken from the prepared stack's, in each matrix's own units.
    X = RNG.standard_normal((2, 512, 512))
    X[0] *= 1e-150
    from lowrank_blocks.spectra import prepare_stack

    spec = prepare_stack(X).spectra((8, 8), method="randomized", max_rank=3, random_state=0)
    assert np.all(spec.paths == PATH_RANDOMIZED)
    exact = prepare_stack(X).spectra((8, 8), method="exact")
    for r in (1, 3):
        got, want = spec.errors(np.full(64, r)), exact.errors(np.full(64, r))
        assert np.all(want <= got) and np.all(got <= want + 1e-4)
