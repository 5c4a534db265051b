"""Every bad input gets a ValueError or TypeError naming the argument, the value and what is allowed."""

from __future__ import annotations

import numpy as np
import pytest

from lowrank_blocks import BlockGrid, DiagonalBlocks, Global, approximate, configurations_at_budget

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
