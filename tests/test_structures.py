"""Partitions, structures, parameter counts and budget matching.

Expected values come from the paper's closed forms (2dr, 2dr_diag, 2dr_block K), from
numpy.array_split (the reference for ragged splits) and from brute-force enumeration.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lowrank_blocks import (
    BlockGrid,
    DiagonalBlocks,
    Global,
    Partition,
    configurations_at_budget,
    paper_rule,
    split_sizes,
)

# -- partitions --------------------------------------------------------------------------------


@given(size=st.integers(1, 200), data=st.data())
def test_split_sizes_match_numpy_array_split(size, data):
    parts = data.draw(st.integers(1, size))
    expected = tuple(len(chunk) for chunk in np.array_split(np.arange(size), parts))
    assert split_sizes(size, parts) == expected


@given(m=st.integers(1, 40), n=st.integers(1, 40), data=st.data())
def test_partition_covers_every_entry_exactly_once(m, n, data):
    p = data.draw(st.integers(1, m))
    q = data.draw(st.integers(1, n))
    part = Partition((m, n), (p, q))
    count = np.zeros((m, n), dtype=int)
    for i in range(p):
        for j in range(q):
            rs, cs = part.block_slices(i, j)
            count[rs, cs] += 1
            assert count[rs, cs].shape == part.block_shape(i, j)
    assert (count == 1).all()
    assert part.row_offsets[-1] == m and part.col_offsets[-1] == n
    assert max(part.row_sizes) - min(part.row_sizes) <= 1
    assert max(part.col_sizes) - min(part.col_sizes) <= 1


def test_partition_reports_ragged_offsets():
    part = Partition((10, 7), (4, 3))
    assert part.row_offsets == (0, 3, 6, 8, 10)
    assert part.col_offsets == (0, 3, 5, 7)
    assert part.is_ragged
    assert not Partition((28, 28), (4, 4)).is_ragged


# -- structures --------------------------------------------------------------------------------


def test_reprs_are_readable():
    assert repr(Global(4)) == "Global(rank=4)"
    assert repr(DiagonalBlocks(4, 4)) == "DiagonalBlocks(n_blocks=4, rank=4)"
    assert repr(BlockGrid(2, 2)) == "BlockGrid(grid=2, rank=2)"
    assert repr(BlockGrid((2, 3), 1)) == "BlockGrid(grid=(2, 3), rank=1)"
    assert repr(BlockGrid(2, [1, 2, 0, 1])) == "BlockGrid(grid=2, rank=[1, 2, 0, 1])"


def test_structures_are_immutable_and_hashable():
    s = BlockGrid(2, [1, 2, 3, 4])
    with pytest.raises(AttributeError):
        s.rank = 3  # type: ignore[misc]
    assert {BlockGrid(2, 2), BlockGrid((2, 2), [2, 2, 2, 2])} == {BlockGrid(2, 2)}
    assert BlockGrid(2, 2) != DiagonalBlocks(2, 2)
    assert Global(3).with_rank(5) == Global(5)


def test_blocks_and_grid():
    assert Global(1).blocks == ((0, 0),)
    assert DiagonalBlocks(3, 1).blocks == ((0, 0), (1, 1), (2, 2))
    assert BlockGrid((2, 3), 1).blocks == tuple(itertools.product(range(2), range(3)))
    assert BlockGrid((2, 3), 1).grid == (2, 3)


@given(d=st.integers(1, 64), data=st.data())
def test_paper_closed_forms_in_the_square_case(d, data):
    k = data.draw(st.integers(1, d))
    r_max = d // k
    r = data.draw(st.integers(1, r_max))
    assert Global(r).n_params((d, d)) == 2 * d * r
    assert DiagonalBlocks(k, r).n_params((d, d)) == 2 * d * r  # 2 d r_diag
    assert BlockGrid(k, r).n_params((d, d)) == 2 * d * r * k  # 2 d r_block K


@given(m=st.integers(1, 30), n=st.integers(1, 30), data=st.data())
def test_n_params_rectangular_closed_form_and_block_sum(m, n, data):
    p = data.draw(st.integers(1, m))
    q = data.draw(st.integers(1, n))
    r = data.draw(st.integers(1, min(m // p, n // q)))
    assert BlockGrid((p, q), r).n_params((m, n)) == r * (q * m + p * n)
    ranks = data.draw(st.lists(st.integers(0, min(m // p, n // q)), min_size=p * q, max_size=p * q))
    if any(ranks):
        part = Partition((m, n), (p, q))
        expected = sum(
            ranks[i * q + j] * (part.row_sizes[i] + part.col_sizes[j])
            for i in range(p)
            for j in range(q)
        )
        assert BlockGrid((p, q), ranks).n_params((m, n)) == expected


def test_paper_example_parameter_counts():
    # Section II.E: d = 256, r = 16, N = 4 -> 8192, 2048, 2048.
    lora, melora, localized = paper_rule(16, 4)
    assert (lora, melora, localized) == (Global(16), DiagonalBlocks(4, 4), BlockGrid(2, 2))
    assert lora.n_params((256, 256)) == 8192
    assert melora.n_params((256, 256)) == 2048
    assert localized.n_params((256, 256)) == 2048


@pytest.mark.parametrize(
    ("rank", "n_blocks", "match"),
    [(16, 3, "perfect square"), (6, 4, "divisible by n_blocks=4"), (4, 4, "N√N=8")],
)
def test_paper_rule_refuses_non_integer_ranks(rank, n_blocks, match):
    with pytest.raises(ValueError, match=match):
        paper_rule(rank, n_blocks)


# -- budget matching ---------------------------------------------------------------------------


def _brute_force(shape, budget, at_most):
    m, n = shape
    found = set()
    for r in range(1, min(m, n) + 1):
        found.add(Global(r))
    for k in range(1, min(m, n) + 1):
        for r in range(1, min(m // k, n // k) + 1):
            found.add(DiagonalBlocks(k, r))
            found.add(BlockGrid(k, r))
    keep = set()
    for s in found:
        c = s.n_params(shape)
        if c == budget or (at_most and c <= budget):
            keep.add(s)
    return keep


@pytest.mark.parametrize("shape", [(28, 28), (12, 20), (7, 5)])
@pytest.mark.parametrize("at_most", [False, True])
def test_configurations_at_budget_equals_brute_force(shape, at_most):
    m, n = shape
    for budget in range(m + n, 6 * (m + n), 7):
        try:
            got = configurations_at_budget(shape, budget, at_most=at_most)
        except ValueError:
            got = []
        assert set(got) == _brute_force(shape, budget, at_most)
        assert len(got) == len(set(got))
        assert all(s.n_params(shape) <= budget for s in got)


def test_table1_configurations_are_found_at_224():
    got = configurations_at_budget((28, 28), 224)
    for s in (Global(4), DiagonalBlocks(4, 4), BlockGrid(2, 2)):
        assert s in got


def test_rectangular_grids_on_request():
    # r (q m + p n) = 52 on 12 x 20 has the single solution p = 2, q = 1, r = 1.
    got = configurations_at_budget((12, 20), 52, families=["grid"], grids="all")
    assert got == [BlockGrid((2, 1), 1)]
    assert configurations_at_budget((12, 20), 52, families=["grid"], grids=[(2, 1), 3]) == got
    with pytest.raises(ValueError, match="no configuration"):
        configurations_at_budget((12, 20), 52, families=["grid"])  # square grids only
