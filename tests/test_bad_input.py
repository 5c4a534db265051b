"""Every bad input gets a ValueError or TypeError naming the argument, the value and what is allowed."""

from __future__ import annotations

import os

import numpy as np
import pytest

from lowrank_blocks import (
    BlockGrid,
    DiagonalBlocks,
    Global,
    Structure,
    allocate_ranks,
    approximate,
    best_approximation,
    block_spectra,
    compare_many,
    configurations_at_budget,
    error_surface,
    error_vs_budget,
    split_sizes,
)
from lowrank_blocks.datasets import block_low_rank_matrix, global_low_rank_matrix

W = np.random.default_rng(0).standard_normal((28, 28))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_entries(value):
    X = W.copy()
    X[3, 4] = value
    with pytest.raises(ValueError, match=r"W has 1 NaN or infinite entry; only finite values"):
        approximate(X, Global(2))


@pytest.mark.parametrize(
    "X", [np.float64(1.0), np.ones(5), np.ones((2, 3, 4))], ids=["0-d", "1-d", "3-d"]
)
def test_wrong_dimensions(X):
    with pytest.raises(ValueError, match=rf"W must be a 2-D matrix; got {X.ndim} dimensions"):
        approximate(X, Global(1))


@pytest.mark.parametrize("shape", [(0, 0), (0, 5), (5, 0)])
def test_empty_matrix(shape):
    with pytest.raises(ValueError, match=r"W is empty \(shape \(\d, \d\)\)"):
        approximate(np.ones(shape), Global(1))


@pytest.mark.parametrize("rank", [0, -2])
def test_rank_zero_or_negative(rank):
    for make in (Global, lambda r: DiagonalBlocks(2, r), lambda r: BlockGrid(2, r)):
        with pytest.raises(ValueError, match=rf"rank={rank} is not allowed; it must be >= 1"):
            make(rank)


def test_negative_entry_in_per_block_ranks():
    with pytest.raises(ValueError, match=r"rank\[2\]=-1 is not allowed; it must be >= 0"):
        BlockGrid(2, [1, 1, -1, 1])


def test_all_zero_per_block_ranks():
    with pytest.raises(ValueError, match=r"rank=\[0, 0, 0, 0\] is all zeros"):
        BlockGrid(2, [0, 0, 0, 0])


def test_rank_above_smallest_block():
    with pytest.raises(
        ValueError,
        match=r"rank=8 exceeds the smallest block \(7 × 7\) of BlockGrid\(grid=4, rank=8\) "
        r"on a 28 × 28 matrix; ranks from 1 to 7 are allowed",
    ):
        approximate(W, BlockGrid(4, 8))
    with pytest.raises(ValueError, match=r"rank=29 exceeds the smallest block \(28 × 28\)"):
        approximate(W, Global(29))
    # Ragged: 10 rows in 4 parts are 3, 3, 2, 2 so rank 3 fits some blocks but not all.
    with pytest.raises(ValueError, match=r"smallest block \(2 × 5\).*ranks from 1 to 2"):
        approximate(np.ones((10, 10)), BlockGrid((4, 2), 3))


def test_per_block_rank_above_its_block():
    with pytest.raises(ValueError, match=r"rank\[3\]=8 for block \(1, 1\) exceeds its size 7 × 7"):
        approximate(np.ones((14, 14)), BlockGrid(2, [1, 1, 1, 8]))


def test_more_blocks_than_rows_or_columns():
    with pytest.raises(ValueError, match=r"needs a 29 × 29 grid.*at most 28 row blocks"):
        approximate(W, BlockGrid(29, 1))
    with pytest.raises(ValueError, match=r"needs a 6 × 6 grid.*at most 5 row blocks"):
        approximate(np.ones((5, 40)), DiagonalBlocks(6, 1))
    with pytest.raises(ValueError, match=r"needs a 1 × 41 grid, which does not fit a 5 × 40 matrix; .* 40 column blocks"):
        approximate(np.ones((5, 40)), BlockGrid((1, 41), 1))


def test_per_block_rank_list_of_wrong_length():
    with pytest.raises(ValueError, match=r"rank has 3 entries but BlockGrid on a 2 × 2 grid has 4 blocks"):
        BlockGrid(2, [1, 2, 3])
    with pytest.raises(ValueError, match=r"rank has 2 entries but DiagonalBlocks on a 3 × 3 grid has 3 blocks"):
        DiagonalBlocks(3, [1, 2])


@pytest.mark.parametrize(
    ("X", "match"),
    [
        (W.astype(complex), r"W has complex dtype complex128; only real matrices"),
        (W > 0, r"W has boolean dtype bool"),
        (W.astype(object), r"W has dtype object, which is not numeric"),
        (np.full((3, 3), "a"), r"W has dtype <U1, which is not numeric"),
        (np.array([[1, 2], [3]], dtype=object), r"W must be a 2-D matrix|not numeric"),
    ],
    ids=["complex", "bool", "object", "string", "ragged"],
)
def test_non_real_dtypes(X, match):
    with pytest.raises((TypeError, ValueError), match=match):
        approximate(X, Global(1))


def test_complex_and_bool_are_type_errors_on_torch():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="complex dtype"):
        approximate(torch.ones((3, 3), dtype=torch.complex64), Global(1))
    with pytest.raises(TypeError, match="boolean dtype"):
        approximate(torch.ones((3, 3), dtype=torch.bool), Global(1))


def test_ragged_list_input():
    with pytest.raises(TypeError, match="W could not be read as an array"):
        approximate([[1.0, 2.0], [3.0]], Global(1))


def test_structure_of_wrong_type():
    with pytest.raises(TypeError, match=r"structure=4 must be a Global, DiagonalBlocks or BlockGrid"):
        approximate(W, 4)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"grid": 2.5, "rank": 1}, TypeError, r"grid=2.5 must be an integer, got float"),
        ({"grid": 0, "rank": 1}, ValueError, r"grid=0 is not allowed; it must be >= 1"),
        ({"grid": True, "rank": 1}, TypeError, r"grid=True must be an integer, not a bool"),
        ({"grid": (1, 2, 3), "rank": 1}, ValueError, r"grid=\(1, 2, 3\) must be an integer K or a pair"),
        ({"grid": 2, "rank": 1.5}, TypeError, r"rank=1.5 must be an integer"),
        ({"grid": 2, "rank": "2"}, TypeError, r"rank='2' must be an integer"),
        ({"grid": 10**7, "rank": 1}, ValueError, r"grid=10000000 is too large"),
    ],
)
def test_bad_structure_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        BlockGrid(**kwargs)


def test_budget_that_no_configuration_meets():
    with pytest.raises(ValueError, match=r"no configuration .* has exactly budget=225 .* nearest exact budgets: 224 or 280"):
        configurations_at_budget((28, 28), 225)
    with pytest.raises(ValueError, match=r"budget=10 is below the cheapest configuration .* \(56 parameters\)"):
        configurations_at_budget((28, 28), 10)
    with pytest.raises(ValueError, match=r"budget=-5 is not allowed; it must be >= 1"):
        configurations_at_budget((28, 28), -5)
    with pytest.raises(TypeError, match=r"budget=224.5 must be an integer"):
        configurations_at_budget((28, 28), 224.5)
    with pytest.raises(ValueError, match=r"families contains 'tucker'; allowed: 'global', 'diagonal', 'grid'"):
        configurations_at_budget((28, 28), 224, families=["tucker"])
    with pytest.raises(ValueError, match=r"grids='squares' is not allowed"):
        configurations_at_budget((28, 28), 224, grids="squares")


def test_budget_above_every_configuration_names_the_largest():
    with pytest.raises(ValueError, match=r"exactly budget=1000 .* nearest exact budgets: 32 \(or"):
        configurations_at_budget((4, 4), 1000)


# -- issue 12: every bad argument gets a named error ------------------------------------------

RNG_MESSAGE = r"random_state='x' must be None, an integer seed or a numpy.random.Generator"


@pytest.mark.parametrize(
    "call",
    [
        lambda: approximate(W, Global(1), random_state="x"),  # exact method: unused, still checked
        lambda: error_vs_budget(W, [64], random_state="x"),
        lambda: best_approximation(W, 64, random_state="x"),
        lambda: error_surface(W, [2], random_state="x"),
        lambda: block_spectra(W, "grid", 2, random_state="x"),
        lambda: compare_many([W, W], structures=[Global(1)], random_state="x", progress=False),
        lambda: block_low_rank_matrix((8, 8), 2, 1, random_state="x"),
        lambda: global_low_rank_matrix((8, 8), 2, random_state="x"),
    ],
    ids=["approximate", "error_vs_budget", "best_approximation", "error_surface",
         "block_spectra", "compare_many", "block_low_rank_matrix", "global_low_rank_matrix"],
)
def test_random_state_checked_even_when_unused(call):
    with pytest.raises(TypeError, match=RNG_MESSAGE):
        call()


def test_scalar_and_0d_budgets_are_one_budget():
    # A scalar or 0-d budget is read as one budget (the same curve as [64]); a 0-d float is a
    # named error.
    expected = error_vs_budget(W, [64]).to_frame()
    for budget in (64, np.int64(64), np.array(64)):
        pd_equal(error_vs_budget(W, budget).to_frame(), expected)
    assert best_approximation(W, np.array(64)).structure == best_approximation(W, 64).structure
    with pytest.raises(TypeError, match=r"budgets=array\(64.5\) must be|budgets.* must be an integer"):
        error_vs_budget(W, np.array(64.5))
    with pytest.raises(TypeError, match=r"budget=64.0 must be an integer"):
        configurations_at_budget((28, 28), 64.0)


def pd_equal(a, b):
    import pandas.testing

    pandas.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: error_vs_budget(W, [64], grids=5), TypeError, r"grids=5 must be 'all', 'square'"),
        (lambda: error_surface(W, grids=5), TypeError, r"grids=5 must be 'all', 'square'"),
        (lambda: configurations_at_budget((28, 28), 224, grids=5), TypeError, r"grids=5 must be"),
        (lambda: error_vs_budget(W, [64], grids=[0]), ValueError, r"grids entry=0 is not allowed"),
        (lambda: error_surface(W, grids=[0]), ValueError, r"grids entry=0 is not allowed"),
        (lambda: best_approximation(W, 64, grids=[0]), ValueError, r"grids entry=0 is not allowed"),
        (lambda: error_surface(W, diagonal=[0]), ValueError, r"diagonal entry=0 is not allowed"),
    ],
)
def test_grids_named_by_their_own_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize(
    "call",
    [
        lambda: error_vs_budget(W, [64], families=[]),
        lambda: error_surface(W, families=[]),
        lambda: best_approximation(W, 64, families=[]),
        lambda: configurations_at_budget((28, 28), 224, families=[]),
        lambda: compare_many([W, W], 64, families=[], progress=False),
    ],
)
def test_empty_families_one_message(call):
    with pytest.raises(ValueError, match=r"^families is empty; give at least one of 'global', "
                                         r"'diagonal', 'grid'$"):
        call()


@pytest.mark.parametrize(
    ("confidence", "exc", "match"),
    [
        ("x", TypeError, r"confidence='x' must be a number in \(0, 1\)"),
        ("0.9", TypeError, r"confidence='0.9' must be a number in \(0, 1\)"),
        (True, TypeError, r"confidence=True must be a number"),
        (1.0, ValueError, r"confidence=1.0 is not allowed; it must be in \(0, 1\)"),
    ],
)
def test_confidence_named(confidence, exc, match):
    with pytest.raises(exc, match=match):
        compare_many([W, W], structures=[Global(1)], confidence=confidence, progress=False)


@pytest.mark.parametrize("value", ["no", "False", 1, None])
def test_at_most_must_be_a_bool(value):
    with pytest.raises(TypeError, match=rf"at_most={value!r} must be True or False"):
        configurations_at_budget((28, 28), 224, at_most=value)
    # NumPy booleans are booleans
    assert configurations_at_budget((28, 28), 224, at_most=np.True_)


def test_allocate_ranks_needs_block_spectra():
    with pytest.raises(TypeError, match=r"spectra='x' must be a BlockSpectra"):
        allocate_ranks("x", 5)


def test_structure_base_class_and_0d_ranks():
    with pytest.raises(TypeError, match=r"Structure is the base class; use Global\(rank\)"):
        Structure()
    assert Global(np.array(3)) == Global(3)
    with pytest.raises(TypeError, match=r"rank=3.0 must be an integer, got float"):
        Global(np.array(3.0))
    with pytest.raises(TypeError, match=r"rank=2.5 must be an integer"):
        BlockGrid(2, np.array(2.5))


def test_diagonal_grid_must_be_square_in_block_spectra():
    with pytest.raises(ValueError, match=r"grid=\(2, 4\) is not allowed for DiagonalBlocks; it needs N × N"):
        block_spectra(W, "diagonal", (2, 4))


@pytest.mark.parametrize("budget", [2**63, 10**30])
def test_huge_budgets_named_not_overflow(budget):
    match = rf"(budget|max_params).*={budget} is too large; budgets up to 2\*\*62 are allowed"
    for call in (
        lambda: configurations_at_budget((28, 28), budget),
        lambda: error_vs_budget(W, [budget]),
        lambda: best_approximation(W, budget),
        lambda: error_surface(W, max_params=budget),
        lambda: compare_many([W, W], budget, progress=False),
    ):
        with pytest.raises(ValueError, match=match):
            call()


# -- issue 12: huge counts refused before anything is enumerated -------------------------------


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: DiagonalBlocks(10**12, [1, 2]), r"n_blocks=1000000000000 is too many"),
        (lambda: BlockGrid(10**6, [1, 2]), r"rank has 2 entries but BlockGrid on a 1000000 × "
                                            r"1000000 grid has 1000000000000 blocks"),
        (lambda: BlockGrid(10**7, 1), r"grid=10000000 is too large"),
        (lambda: split_sizes(10**12, 10**12), r"parts=1000000000000 is too many"),
        (lambda: configurations_at_budget((10**12, 10**12), 4 * 10**12),
         r"names 1,000,000,000,000 grids .* at most 4,194,304"),
        (lambda: configurations_at_budget((10**12, 10**12), 4 * 10**12, families=["grid"],
                                          grids="all"), r"grids='all' names"),
        (lambda: configurations_at_budget((10**6, 10**6), 10**12, at_most=True,
                                          families=["grid"]),
         r"names more than 4,194,304 configurations"),
        (lambda: compare_many([W, W], structures=[Global(1)], n_boot=10**12, progress=False),
         r"n_boot=1000000000000 is too many"),
        (lambda: error_vs_budget(W, [64], method="randomized", n_iter=10**12),
         r"n_iter=1000000000000 is too many; at most 1000"),
        (lambda: error_surface(W, method="randomized", n_iter=10**12), r"n_iter=.* is too many"),
        (lambda: best_approximation(W, 64, method="randomized", oversampling=10**12),
         r"oversampling=1000000000000 is too large"),
    ],
    ids=["DiagonalBlocks", "BlockGrid-ranks", "BlockGrid-grid", "split_sizes",
         "configurations-square", "configurations-all", "configurations-at-most", "n_boot",
         "n_iter-curve", "n_iter-surface", "oversampling"],
)
def test_huge_counts_refused_up_front(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_closed_form_block_sizes_match_the_partition():
    # The closed forms that let huge shapes be checked without building a partition.
    for shape in [(10, 10), (7, 13), (28, 28), (5, 40)]:
        for grid in [(1, 1), (2, 3), (4, 2), (5, 5)]:
            if grid[0] > shape[0] or grid[1] > shape[1]:
                continue
            s = BlockGrid(grid, 1)
            part = s.partition(shape)
            assert s.max_uniform_rank(shape) == min(min(part.row_sizes), min(part.col_sizes))
            assert s.max_block_rank(shape) == min(max(part.row_sizes), max(part.col_sizes))
            assert s.min_block_cost(shape) == min(part.row_sizes) + min(part.col_sizes)
            assert s.unit_cost(shape) == sum(s.block_costs(shape))


# -- issue 12: odd arrays are read right or refused with a reason ------------------------------


def test_masked_array_refused_while_entries_are_masked():
    X = np.ma.masked_array(W, mask=W > 1)
    n = int((W > 1).sum())
    with pytest.raises(ValueError, match=rf"W is a masked array with {n} masked entries; .*"
                                         r"W.filled\(value\)"):
        approximate(X, Global(2))
    # NaN under the mask: the same named error, never a LinAlgError
    Y = np.ma.masked_invalid(np.where(W > 1, np.nan, W))
    with pytest.raises(ValueError, match=r"masked array with \d+ masked entries"):
        error_vs_budget(Y, [64])
    # filled explicitly: exactly the filled matrix's result
    filled = approximate(X.filled(0.0), Global(2))
    assert approximate(np.ma.masked_array(X.filled(0.0)), Global(2)).error == filled.error


def test_longdouble_is_float64_not_float32():
    if np.finfo(np.longdouble).max <= np.finfo(np.float64).max:
        pytest.skip("longdouble is float64 on this platform")
    # 1e150 is finite in float64 (its square too) but infinite in float32
    X = np.diag(np.array([1e150, 3e149, 1e-150], dtype=np.longdouble))
    result = approximate(X, Global(1))
    # reference: the rank-1 truncation keeps 1e150; error = ||(3e149, 1e-150)|| / ||X||
    expected = 3e149 / np.hypot(1e150, 3e149)
    assert result.error == pytest.approx(expected, rel=1e-12)
    assert result.reconstruct().dtype == np.float64
    Y = X.copy()
    Y[0, 0] = np.longdouble(1e300) * np.longdouble(1e10)  # finite in longdouble only
    with pytest.raises(ValueError, match=r"beyond the float64 range .*rescale"):
        approximate(Y, Global(1))
    Y[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"1 NaN or infinite entry"):
        approximate(Y, Global(1))


def test_scipy_sparse_is_densified_after_a_size_check(monkeypatch):
    scipy_sparse = pytest.importorskip("scipy.sparse")
    S = scipy_sparse.random(12, 9, density=0.4, random_state=0, format="csr")
    dense = S.toarray()
    assert approximate(S, Global(2)).error == approximate(dense, Global(2)).error
    with pytest.raises(ValueError, match=r"densifying the 100000 × 100000 scipy.sparse matrix W "
                                         r"would need 74.5 GiB"):
        approximate(scipy_sparse.eye(100_000, format="csr"), Global(1))


# -- issue 12: no crash from the environment ---------------------------------------------------


def test_numba_cache_falls_back_when_nothing_is_writable(tmp_path):
    # The package in a folder whose __pycache__ cannot be created, $HOME and the cache folder
    # under a regular file: numba finds no writable cache location at all (as with a read-only
    # installation and an unwritable $HOME, also for root), and cache=True would raise at import.
    pytest.importorskip("numba")
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    shutil.copytree(root / "lowrank_blocks", tmp_path / "pkg" / "lowrank_blocks",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for folder in [tmp_path / "pkg" / "lowrank_blocks", *(tmp_path / "pkg" / "lowrank_blocks").iterdir()]:
        if folder.is_dir():
            (folder / "__pycache__").write_text("not a folder")
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env.update(HOME=str(blocker / "home"), XDG_CACHE_HOME=str(blocker / "cache"),
               PYTHONPATH=str(tmp_path / "pkg"), PYTHONDONTWRITEBYTECODE="1")
    env.pop("LOWRANK_BLOCKS_DISABLE_NUMBA", None)
    code = (
        "import numpy as np\n"
        "from lowrank_blocks import _kernels as k\n"
        "assert k.enumerate_counts_numba is not None\n"
        "got = k.concave_knapsack_dp([2, 3], [np.array([0., 3, 5]), np.array([0., 4])], 8)\n"
        "ref = k.concave_knapsack_dp_numpy([2, 3], [np.array([0., 3, 5]), np.array([0., 4])], 8)\n"
        "assert (np.asarray(got) == np.asarray(ref)).all()\n"
        "from lowrank_blocks.cli import main\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert not any((tmp_path / "pkg").rglob("*.nbi"))  # nothing was cached
