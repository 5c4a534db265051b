"""Optimality and accounting of ``approximate`` on every tested backend.

The reference is an independent float64 computation written here: a Python loop over blocks
with ``numpy.linalg.svd``, the reconstruction formed explicitly and the error measured on it.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import block_svd_reference

from lowrank_blocks import BlockGrid, DiagonalBlocks, Global, Partition, approximate

STRUCTURES = [
    Global(3),
    DiagonalBlocks(3, 2),
    BlockGrid(3, 2),
    BlockGrid((2, 4), 1),
    BlockGrid((3, 2), [1, 0, 2, 3, 1, 2]),
    DiagonalBlocks(4, [1, 3, 0, 2]),
]


def reference(W: np.ndarray, structure) -> tuple[np.ndarray, float]:
    """Block-by-block truncated SVD in float64 and the error of the formed reconstruction."""
    W = np.asarray(W, dtype=np.float64)
    return block_svd_reference(W, structure.grid, structure.blocks, structure.block_ranks(W.shape))


@pytest.fixture
def W():
    return np.random.default_rng(1).standard_normal((13, 17))


@pytest.mark.parametrize("structure", STRUCTURES, ids=repr)
def test_matches_float64_reference_on_every_backend(backend, W, structure):
    approx = approximate(backend.asarray(W), structure)
    ref_matrix, ref_error = reference(W, structure)
    recon = approx.reconstruct()
    assert backend.is_native(recon)
    assert recon.shape == W.shape
    np.testing.assert_allclose(backend.to_numpy(recon), ref_matrix, atol=1e-12)
    assert isinstance(approx.error, float)
    assert approx.error == pytest.approx(ref_error, rel=1e-12, abs=1e-14)
    for (B, A), r in zip(approx.factors, approx.ranks):
        assert backend.is_native(B) and backend.is_native(A)
        assert B.shape[1] == r and A.shape[0] == r


@pytest.mark.parametrize("structure", STRUCTURES, ids=repr)
def test_n_params_equals_factor_sizes(W, structure):
    approx = approximate(W, structure)
    assert approx.n_params == structure.n_params(W.shape)
    assert approx.n_params == sum(B.size + A.size for B, A in approx.factors)


@pytest.mark.parametrize("structure", STRUCTURES, ids=repr)
def test_eckart_young_random_factorizations_never_win(W, structure):
    rng = np.random.default_rng(7)
    best = approximate(W, structure)
    part = best.partition
    for trial in range(200):
        candidate = np.zeros_like(W)
        for (i, j), (B, A) in zip(best.blocks, best.factors):
            rs, cs = part.block_slices(i, j)
            if trial % 2:  # a perturbation of the optimum
                B = B + 0.05 * rng.standard_normal(B.shape)
                A = A + 0.05 * rng.standard_normal(A.shape)
            else:  # a random factorization fitted by least squares on A given a random B
                B = rng.standard_normal(B.shape)
                A = np.linalg.lstsq(B, W[rs, cs], rcond=None)[0] if B.shape[1] else A
            candidate[rs, cs] = B @ A
        err = np.linalg.norm(W - candidate) / np.linalg.norm(W)
        assert err >= best.error - 1e-12


def test_k1_and_n1_equal_global(W):
    g = approximate(W, Global(4))
    for s in (BlockGrid(1, 4), DiagonalBlocks(1, 4)):
        a = approximate(W, s)
        assert a.error == pytest.approx(g.error, rel=1e-14)
        assert a.n_params == g.n_params
        np.testing.assert_allclose(a.reconstruct(), g.reconstruct(), atol=1e-12)


@pytest.mark.parametrize("structure", [Global(13), BlockGrid(3, [5, 5, 5, 4, 4, 4, 4, 4, 4]), BlockGrid((13, 1), 1)], ids=repr)
def test_full_rank_reconstructs_exactly(backend, W, structure):
    approx = approximate(backend.asarray(W), structure)
    assert approx.error == 0.0
    np.testing.assert_allclose(backend.to_numpy(approx.reconstruct()), W, atol=1e-12)


def test_error_decreases_with_rank(W):
    for family in (Global, lambda r: BlockGrid(2, r), lambda r: DiagonalBlocks(2, r)):
        errors = [approximate(W, family(r)).error for r in range(1, 7)]
        assert all(a > b for a, b in zip(errors, errors[1:]))


def test_error_is_sum_of_tail_singular_values(W):
    # Closed form for the global case: err^2 = sum_{i > r} sigma_i^2 / ||W||^2.
    s = np.linalg.svd(W, compute_uv=False)
    for r in range(1, 13):
        expected = np.sqrt(np.sum(s[r:] ** 2) / np.sum(s**2))
        assert approximate(W, Global(r)).error == pytest.approx(expected, rel=1e-12)


def test_diagonal_error_includes_off_diagonal_energy():
    # A block-diagonal matrix is represented exactly; a matrix with only off-diagonal blocks
    # is not represented at all.
    rng = np.random.default_rng(3)
    W = np.zeros((8, 8))
    W[:4, :4], W[4:, 4:] = rng.standard_normal((4, 4)), rng.standard_normal((4, 4))
    assert approximate(W, DiagonalBlocks(2, 4)).error == 0.0
    V = np.zeros((8, 8))
    V[:4, 4:] = rng.standard_normal((4, 4))
    assert approximate(V, DiagonalBlocks(2, 4)).error == 1.0


def test_known_block_ranks_are_recovered_exactly():
    # Each block of a 3 x 3 grid has rank 2 while the whole matrix has rank 18.
    rng = np.random.default_rng(5)
    W = np.block(
        [[rng.standard_normal((10, 2)) @ rng.standard_normal((2, 10)) for _ in range(3)]
         for _ in range(3)]
    )
    assert np.linalg.matrix_rank(W) == 18
    assert approximate(W, BlockGrid(3, 2)).error < 1e-14
    assert approximate(W, Global(6)).error > 0.1  # same budget: 6 * 60 = 2 * 3 * 60


def test_float32_stays_float32(backend, W):
    W32 = W.astype(np.float32)
    approx = approximate(backend.asarray(W32), BlockGrid(2, 3))
    recon = approx.reconstruct()
    assert backend.to_numpy(recon).dtype == np.float32
    assert all(backend.to_numpy(B).dtype == np.float32 for B, _ in approx.factors)
    _, ref_error = reference(W, BlockGrid(2, 3))
    assert approx.error == pytest.approx(ref_error, rel=1e-5)
    np.testing.assert_allclose(backend.to_numpy(recon), reference(W, BlockGrid(2, 3))[0], atol=1e-5)


def test_integers_are_promoted_to_float64(backend):
    W = np.arange(30, dtype=np.int32).reshape(5, 6) % 7
    approx = approximate(backend.asarray(W), Global(2))
    assert backend.to_numpy(approx.reconstruct()).dtype == np.float64
    assert approx.error == pytest.approx(reference(W, Global(2))[1], rel=1e-12)


def test_float16_is_computed_in_float32():
    W = np.random.default_rng(0).standard_normal((6, 6)).astype(np.float16)
    assert approximate(W, Global(2)).reconstruct().dtype == np.float32


@pytest.mark.parametrize("scale", [1e-300, 1e-150, 1e150, 1e300])
def test_extreme_magnitudes_give_the_same_relative_error(W, scale):
    base = approximate(W, BlockGrid(2, 2)).error
    scaled = approximate(W * scale, BlockGrid(2, 2))
    assert scaled.error == pytest.approx(base, rel=1e-12)
    assert np.all(np.isfinite(scaled.reconstruct()))
    np.testing.assert_allclose(scaled.reconstruct() / scale, approximate(W, BlockGrid(2, 2)).reconstruct(), atol=1e-10)


def test_zero_matrix_has_zero_error():
    approx = approximate(np.zeros((4, 6)), BlockGrid(2, 1))
    assert approx.error == 0.0
    assert not np.any(approx.reconstruct())


def test_accepts_lists():
    assert approximate([[1.0, 2.0], [3.0, 4.0]], Global(2)).error == 0.0


def test_repr_is_readable(W):
    assert repr(approximate(W, Global(3))).startswith("Approximation(Global(rank=3), shape=(13, 17)")


@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 12), n=st.integers(1, 12), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_property_matches_reference_and_counts(m, n, seed, data):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((m, n))
    kind = data.draw(st.sampled_from(["global", "diagonal", "grid"]))
    if kind == "global":
        structure = Global(data.draw(st.integers(1, min(m, n))))
    elif kind == "diagonal":
        k = data.draw(st.integers(1, min(m, n)))
        structure = DiagonalBlocks(k, data.draw(st.integers(1, min(m // k, n // k))))
    else:
        p, q = data.draw(st.integers(1, m)), data.draw(st.integers(1, n))
        part = Partition((m, n), (p, q))
        ranks = [data.draw(st.integers(0, min(part.block_shape(i, j)))) for i in range(p) for j in range(q)]
        if not any(ranks):
            ranks[0] = 1
        structure = BlockGrid((p, q), ranks)
    approx = approximate(W, structure)
    ref_matrix, ref_error = reference(W, structure)
    assert 0.0 <= approx.error <= 1.0
    assert approx.error == pytest.approx(ref_error, rel=1e-9, abs=1e-12)
    np.testing.assert_allclose(approx.reconstruct(), ref_matrix, atol=1e-10)
    assert approx.n_params == sum(B.size + A.size for B, A in approx.factors)


# -- v2: no copies, float32 in float32 -------------------------------------------------------


def test_prepare_does_not_copy_the_matrix():
    from lowrank_blocks import prepare

    W = np.random.default_rng(0).standard_normal((50, 40))
    assert prepare(W).data is W  # results are divided by the power of two instead
    tiny = W * 2.0**-60  # extreme magnitude: divided once, into a copy
    p = prepare(tiny)
    assert p.data is not tiny and np.abs(p.data).max() >= 1.0


def test_float32_large_blocks_stay_float32_with_float32_accuracy():
    from lowrank_blocks import error_surface

    rng = np.random.default_rng(1)
    W = (rng.standard_normal((256, 40)) @ rng.standard_normal((40, 256))).astype(np.float32)
    W += 0.05 * rng.standard_normal(W.shape).astype(np.float32)
    single = error_surface(W, grids=[2], diagonal=[2]).to_frame()  # 128 x 128 blocks: sgesdd
    double = error_surface(W.astype(np.float64), grids=[2], diagonal=[2]).to_frame()
    diff = np.abs(single["error"].to_numpy() - double["error"].to_numpy())
    assert diff.max() <= 1e-5  # float32's own precision on the relative error
    a = approximate(W, BlockGrid(2, 5))
    assert all(B.dtype == np.float32 and A.dtype == np.float32 for B, A in a.factors)
    realized = np.linalg.norm(W.astype(np.float64) - a.reconstruct()) / np.linalg.norm(W)
    assert a.error == pytest.approx(realized, rel=1e-4)


@pytest.mark.parametrize("dtype,big", [(np.float32, 3e37), (np.float64, 1e300), (np.float64, 1e-300)])
def test_extreme_magnitudes_through_the_large_block_path(dtype, big):
    rng = np.random.default_rng(2)
    base = rng.standard_normal((130, 70))
    W = (base / np.abs(base).max() * big).astype(dtype)
    a = approximate(W, BlockGrid((2, 1), 3))
    ref = approximate(base, BlockGrid((2, 1), 3))  # same matrix up to a positive factor
    assert np.isfinite(a.error) and a.error == pytest.approx(ref.error, rel=1e-4)


def test_auto_gives_the_exact_svd_factors(W):
    # Factors need singular vectors: 'auto' decomposes by SVD, as 'exact'.
    W = np.random.default_rng(5).standard_normal((140, 130))
    a, e = approximate(W, BlockGrid(2, 7), method="auto"), approximate(W, BlockGrid(2, 7))
    assert a.error == e.error and a.n_params == e.n_params
    for (Ba, Aa), (Be, Ae) in zip(a.factors, e.factors):
        np.testing.assert_array_equal(Ba @ Aa, Be @ Ae)


def test_randomized_block_krylov_factors_float32_and_their_error():
    rng = np.random.default_rng(6)
    W = rng.standard_normal((640, 576)).astype(np.float32)  # sides ≥ 512: block Krylov
    a = approximate(W, Global(20), method="randomized", random_state=0)
    assert all(B.dtype == np.float32 and A.dtype == np.float32 for B, A in a.factors)
    realized = np.linalg.norm(W.astype(np.float64) - a.reconstruct()) / np.linalg.norm(W)
    assert a.error == pytest.approx(realized, rel=1e-5)
    exact = approximate(W.astype(np.float64), Global(20)).error
    assert exact <= a.error < exact + 1e-3  # never optimistic; block Krylov is close
