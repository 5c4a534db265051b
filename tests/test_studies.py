"""Data-set studies: per-matrix results equal single-matrix ones; statistics from first principles."""

from __future__ import annotations

import numpy as np
import pytest
from reference import block_svd_reference

from lowrank_blocks import BlockGrid, DiagonalBlocks, Global, compare_many, error_vs_budget
from lowrank_blocks.studies import stack_errors

STRUCTURES = [Global(2), DiagonalBlocks(2, 2), BlockGrid(2, 1), BlockGrid((3, 2), 1)]


def test_stack_errors_equal_reference_per_matrix(backend):
    X = np.random.default_rng(0).standard_normal((20, 9, 11)) * np.logspace(-100, 100, 20)[:, None, None]
    for s in STRUCTURES:
        got = stack_errors(backend.asarray(X), s)
        ref = [block_svd_reference(x, s.grid, s.blocks, s.block_ranks(x.shape))[1] for x in X]
        np.testing.assert_allclose(got, ref, rtol=1e-10)


def test_fixed_structures_stack_and_iterable_agree():
    X = np.random.default_rng(1).standard_normal((30, 10, 10))
    a = compare_many(X, structures=STRUCTURES, progress=False)
    b = compare_many(list(X), structures=STRUCTURES, progress=False)
    np.testing.assert_allclose(a.errors().to_numpy(), b.errors().to_numpy(), rtol=1e-12)


def test_summary_and_paired_statistics():
    rng = np.random.default_rng(2)
    # Block-diagonal matrices: the diagonal structure is exact, the global one is not.
    X = np.zeros((40, 8, 8))
    X[:, :4, :4] = rng.standard_normal((40, 4, 4))
    X[:, 4:, 4:] = rng.standard_normal((40, 4, 4))
    study = compare_many(X, structures=[Global(4), DiagonalBlocks(2, 4)], progress=False)
    errors = study.errors()
    g, d = errors.columns
    assert (errors[d] == 0).all() and (errors[g] > 0).all()
    assert study.summary.loc[d, "wins"] == 40 and study.summary.loc[g, "wins"] == 0
    assert study.summary.loc[g, "mean"] == pytest.approx(errors[g].mean())
    assert study.summary.loc[g, "median"] == pytest.approx(np.median(errors[g]))
    pair = study.paired.iloc[0]
    diff = (errors[g] - errors[d]).to_numpy()
    assert pair["mean_diff"] == pytest.approx(diff.mean())
    assert pair["ci_low"] <= diff.mean() <= pair["ci_high"]
    assert pair["ci_low"] > 0  # global is worse on every matrix
    assert pair["a_better"] == 0.0
    # The CI shrinks roughly like 1/sqrt(n): compare with the normal-theory half-width.
    half = 1.96 * diff.std(ddof=1) / np.sqrt(len(diff))
    assert (pair["ci_high"] - pair["ci_low"]) / 2 == pytest.approx(half, rel=0.35)


def test_ties_are_counted_separately():
    X = np.stack([np.eye(4)] * 5)
    study = compare_many(X, structures=[Global(4), BlockGrid(2, 2)], progress=False)
    assert (study.summary["wins"] == 0).all() and (study.summary["ties"] == 5).all()


def test_budget_mode_uses_best_per_family_and_mixed_shapes():
    rng = np.random.default_rng(3)
    mats = [rng.standard_normal((12, 12)), rng.standard_normal((16, 8))]
    study = compare_many(mats, 96, progress=False)
    for k, W in enumerate(mats):
        curve = error_vs_budget(W, [96], allocation="uniform").to_frame()
        got = study.per_matrix[study.per_matrix.matrix == k].set_index("family")["error"]
        for row in curve.itertuples():
            assert got[row.family] == pytest.approx(row.error)
    assert (study.per_matrix["n_params"] <= 96).all()


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({}, ValueError, "give budget"),
        ({"structures": []}, ValueError, "structures is empty"),
        ({"structures": ["lora"]}, TypeError, "structures contains 'lora'"),
        ({"structures": [Global(8)], "budget": 100}, ValueError, r"needs 128 parameters .* more than budget=100"),
        ({"budget": 64, "confidence": 1.5}, ValueError, r"confidence=1.5 is not allowed"),
        ({"budget": 64, "n_boot": 0}, ValueError, r"n_boot=0 is not allowed"),
    ],
)
def test_bad_input(kwargs, exc, match):
    X = np.random.default_rng(0).standard_normal((3, 8, 8))
    with pytest.raises(exc, match=match):
        compare_many(X, progress=False, **kwargs)


def test_empty_and_non_finite_stacks():
    with pytest.raises(ValueError, match="empty"):
        compare_many(np.zeros((0, 4, 4)), structures=[Global(1)], progress=False)
    X = np.ones((2, 4, 4))
    X[1, 2, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        compare_many(X, structures=[Global(1)], progress=False)


def test_budget_mode_batched_stack_equals_per_matrix_search():
    X = np.random.default_rng(4).standard_normal((25, 14, 14))
    batched = compare_many(X, 112, progress=False)
    looped = compare_many(list(X), 112, progress=False)
    a = batched.per_matrix.sort_values(["matrix", "family"]).reset_index(drop=True)
    b = looped.per_matrix.sort_values(["matrix", "family"]).reset_index(drop=True)
    np.testing.assert_allclose(a["error"], b["error"], rtol=1e-10)
    assert (a["n_params"] == b["n_params"]).all()
    assert (a["grid"] == b["grid"]).all()


def test_configurations_missing_for_some_matrices_do_not_distort_the_summary():
    rng = np.random.default_rng(5)
    mats = [rng.standard_normal((8, 8)) for _ in range(5)] + [rng.standard_normal((2, 60)) for _ in range(5)]
    study = compare_many(mats, 90, progress=False)
    errors = study.errors()
    present = errors.notna()
    for config in errors.columns:
        col = errors[config]
        assert study.summary.loc[config, "n_matrices"] == present[config].sum()
        assert study.summary.loc[config, "mean"] == pytest.approx(col.mean())
        # wins: strict minimum among the configurations present for that matrix
        best = errors.min(axis=1)
        unique = (errors.le(best, axis=0)).sum(axis=1) == 1
        wins = int((col.le(best) & unique).sum())
        assert study.summary.loc[config, "wins"] == wins
    assert not study.paired[["mean_diff", "ci_low", "ci_high"]].isna().any().any()


def test_stack_and_list_agree_with_explicit_grids_and_diagonals():
    rng = np.random.default_rng(6)
    X = np.zeros((6, 8, 8))
    for k in range(4):
        X[:, 2 * k : 2 * k + 2, 2 * k : 2 * k + 2] = rng.standard_normal((6, 2, 1)) @ rng.standard_normal((6, 1, 2))
    for kwargs in ({"grids": [2]}, {"grids": [(1, 2)], "diagonal": [4]}):
        a = compare_many(X, 16, progress=False, **kwargs).summary["mean"]
        b = compare_many(list(X), 16, progress=False, **kwargs).summary["mean"]
        np.testing.assert_allclose(a.to_numpy(), b.loc[a.index].to_numpy(), atol=1e-12)


def test_per_block_structures_get_distinct_labels_and_duplicates_are_refused():
    X = np.random.default_rng(7).standard_normal((4, 8, 8))
    study = compare_many(X, structures=[BlockGrid(2, [1, 0, 0, 1]), BlockGrid(2, [0, 1, 1, 0])],
                         progress=False)
    assert len(study.summary) == 2
    with pytest.raises(ValueError, match="same structure twice"):
        compare_many(X, structures=[Global(1), Global(1)], progress=False)


def test_difference_is_in_the_direction_asked():
    rng = np.random.default_rng(8)
    X = rng.standard_normal((30, 8, 8))
    a, b = Global(2), BlockGrid(2, 1)
    study = compare_many(X, structures=[a, b], progress=False)
    names = list(study.summary.index)
    wide = study.errors()
    for first, second in (names, names[::-1]):
        d = study.difference(first, second)
        diff = (wide[first] - wide[second]).to_numpy()  # independent: from the per-matrix table
        assert d["mean_diff"] == pytest.approx(diff.mean(), rel=1e-12)
        assert d["median_diff"] == pytest.approx(np.median(diff), rel=1e-12)
        assert d["a_better"] == pytest.approx(np.mean(diff < 0))
        assert d["ci_low"] <= d["mean_diff"] <= d["ci_high"]
    with pytest.raises(ValueError, match="'nope' is not a configuration"):
        study.difference("nope", names[0])
