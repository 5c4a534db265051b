"""The optimal per-unit rank allocation (``lowrank_blocks.allocation.solve_allocation``).

References (``tests/reference_knapsack.py``, no library code): trying every rank vector, and
the textbook multiple-choice knapsack DP over every budget.  The tests whose names contain
``reference`` check the two references against each other and need no solver.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_knapsack import cost_of, dp, exhaustive, greedy, taken, untaken

REL = 1e-12


def solve(costs, gains, budgets):
    """The solver, imported at call time so the reference tests run without it."""
    from lowrank_blocks.allocation import solve_allocation

    return solve_allocation(costs, gains, budgets)


def close(a: float, b: float, rel: float = REL) -> bool:
    """``a`` and ``b`` agree to ``rel`` relative (both 0 counts as agreeing; no absolute slack)."""
    return abs(a - b) <= rel * max(abs(a), abs(b))


def full_cost(costs, gains) -> int:
    return sum(int(c) * len(g) for c, g in zip(costs, gains))


def check(costs, gains, budgets, sol, best) -> None:
    """Every promise of the interface, and optimality against ``best[b]`` (reference optimum)."""
    n_b, n_u = len(budgets), len(costs)
    ranks, used = np.asarray(sol.ranks), np.asarray(sol.used)
    gain, left = np.asarray(sol.gain), np.asarray(sol.left)
    assert ranks.dtype == np.int64 and ranks.shape == (n_b, n_u)
    assert used.dtype == np.int64 and used.shape == (n_b,)
    assert gain.dtype == np.float64 and gain.shape == (n_b,)
    assert left.dtype == np.float64 and left.shape == (n_b,)

    lengths = np.array([len(g) for g in gains], dtype=np.int64)
    assert np.all(ranks >= 0) and np.all(ranks <= lengths)
    assert np.array_equal(used, ranks @ np.asarray(costs, dtype=np.int64))
    assert np.all(used <= np.asarray(budgets))

    total = math.fsum(float(x) for g in gains for x in g)
    full = full_cost(costs, gains)
    for k, b in enumerate(budgets):
        r = ranks[k]
        head, tail = taken(gains, r), untaken(gains, r)
        assert close(head, best[b]), (b, r.tolist(), head, best[b])  # optimal
        assert close(float(gain[k]), head), (b, gain[k], head)  # reported gain is what it takes
        assert close(float(left[k]), tail), (b, left[k], tail)  # left is the tails, summed
        assert close(float(left[k] + gain[k]), total), (b, left[k], gain[k], total)
        if b >= full:  # all fits; a rank may stay out only if its gain is lost to rounding
            assert left[k] <= REL * total, (b, left[k], total)


def rows(budgets, *arrays):
    """Per-budget rows, sorted by budget (to check monotonicity)."""
    order = np.argsort(budgets, kind="stable")
    return [np.asarray(a)[order] for a in arrays]


# -- random instances ---------------------------------------------------------------------------


def random_gains(rng, length: int) -> np.ndarray:
    """Non-negative, non-increasing, with exact zeros, ties and several magnitudes."""
    kind = rng.integers(6)
    if kind == 0:  # generic
        x = rng.standard_normal(length) ** 2
    elif kind == 1:  # small integers squared: ties within and across units, zeros
        x = rng.integers(0, 4, length).astype(np.float64) ** 2
    elif kind == 2:  # rank-deficient: a tail of exact zeros
        x = rng.standard_normal(length) ** 2
        x[rng.integers(0, length + 1) :] = 0.0
    elif kind == 3:  # all equal (a flat spectrum)
        x = np.full(length, float(rng.integers(0, 3)))
    elif kind == 4:  # another magnitude
        x = rng.standard_normal(length) ** 2 * 10.0 ** rng.integers(-8, 8)
    else:  # ties made by rounding to one decimal
        x = np.round(rng.random(length) * 3, 1)
    return np.sort(x)[::-1].copy()


def random_instance(rng, cost_kind: str):
    n = int(rng.integers(1, 13))
    if cost_kind == "ragged":  # a ragged partition: m_b + n_b takes 2-3 neighbouring values
        a = int(rng.integers(2, 40))
        spread = int(rng.integers(1, 3))
        costs = [a + int(d) for d in rng.integers(0, spread + 1, n)]
    else:  # blocks of a whole model: arbitrary distinct costs
        costs = [int(c) for c in rng.choice(np.arange(1, 120), n, replace=False)]
    gains = [random_gains(rng, int(L)) for L in rng.integers(0, 7, n)]
    return costs, gains


def random_budgets(rng, costs, gains) -> list[int]:
    full = full_cost(costs, gains)
    if full <= 250:
        return list(range(full + 3))  # every budget, and a few above the total cost
    picks = rng.integers(0, full + 1, 40).tolist()
    return sorted({0, 1, min(costs), full - 1, full, full + 1, 2 * full + 7, *picks})


@pytest.mark.parametrize("cost_kind", ["ragged", "distinct"])
@pytest.mark.parametrize("seed", range(150))
def test_random_instances_match_dp(seed, cost_kind):
    rng = np.random.default_rng([seed, cost_kind == "ragged"])
    costs, gains = random_instance(rng, cost_kind)
    budgets = random_budgets(rng, costs, gains)
    table = dp(costs, gains, max(budgets))
    sol = solve(costs, gains, budgets)
    check(costs, gains, budgets, sol, table.best)
    # the optimal gain never falls as the budget grows, and the untaken gain never rises
    g, lo = rows(budgets, sol.gain, sol.left)
    assert np.all(np.diff(g) >= -REL * np.abs(g[1:]))
    assert np.all(np.diff(lo) <= REL * np.abs(lo[:-1]))


@pytest.mark.parametrize("seed", range(20))
def test_many_budgets_in_one_call_equal_one_call_per_budget(seed):
    rng = np.random.default_rng([seed, 7])
    costs, _ = random_instance(rng, "ragged" if seed % 2 else "distinct")
    lengths = rng.integers(1, 6, len(costs))
    gains = [np.sort(rng.standard_normal(int(L)) ** 2)[::-1].copy() for L in lengths]
    full = full_cost(costs, gains)
    # unsorted, repeated, and beyond the total cost
    budgets = [int(b) for b in rng.integers(0, full + 5, 12)] + [0, full, full]
    rng.shuffle(budgets)
    together = solve(costs, gains, budgets)
    for k, b in enumerate(budgets):
        one = solve(costs, gains, [b])
        # generic gains: the optimum is unique, so the ranks themselves must agree
        assert np.array_equal(np.asarray(together.ranks)[k], np.asarray(one.ranks)[0]), b
        assert together.used[k] == one.used[0]
        assert close(float(together.gain[k]), float(one.gain[0]))
        assert close(float(together.left[k]), float(one.left[0]))


def test_scalar_budget_equals_a_one_element_list():
    rng = np.random.default_rng(3)
    costs, gains = random_instance(rng, "distinct")
    b = full_cost(costs, gains) // 2
    a, s = solve(costs, gains, b), solve(costs, gains, [b])
    n = len(costs)
    # the shape for a scalar budget is not pinned down here: (1, n) or (n,)
    assert np.array_equal(np.reshape(a.ranks, (-1, n))[0], np.asarray(s.ranks)[0])
    assert np.reshape(a.gain, -1)[0] == pytest.approx(float(s.gain[0]), rel=REL)
    assert np.reshape(a.left, -1)[0] == pytest.approx(float(s.left[0]), rel=REL)
    assert int(np.reshape(a.used, -1)[0]) == int(s.used[0])


def test_numpy_integer_budgets_and_costs_are_accepted():
    costs = np.array([3, 3, 2, 2], dtype=np.int64)
    gains = [np.array([10.0]), np.array([8.0]), np.array([9.0]), np.array([4.0])]
    sol = solve(costs, gains, np.array([3, 5], dtype=np.int64))
    assert np.asarray(sol.ranks).tolist() == [[1, 0, 0, 0], [1, 0, 1, 0]]
    sol = solve(list(costs), gains, [np.int64(3)])
    assert np.asarray(sol.ranks).tolist() == [[1, 0, 0, 0]]


def test_inputs_are_not_modified():
    rng = np.random.default_rng(5)
    costs, gains = random_instance(rng, "ragged")
    before = [g.copy() for g in gains], list(costs)
    budgets = [0, full_cost(costs, gains) // 3, full_cost(costs, gains)]
    solve(costs, gains, budgets)
    assert all(np.array_equal(a, b) for a, b in zip(before[0], gains)) and before[1] == costs


def test_units_without_ranks_and_all_zero_gains():
    costs = [4, 5, 6, 7]
    gains = [np.array([]), np.zeros(3), np.array([2.0, 0.0]), np.array([])]
    budgets = list(range(30))
    sol = solve(costs, gains, budgets)
    check(costs, gains, budgets, sol, dp(costs, gains, 29).best)
    assert np.all(np.asarray(sol.ranks)[:, [0, 3]] == 0)


@pytest.mark.parametrize(
    "costs",
    [[5, 5, 5, 5], [5, 7, 5, 7], [5, 7, 11, 11], [5, 7, 11, 13]],
    ids=["1-cost", "2-costs", "3-costs", "4-costs"],
)
def test_budget_far_above_the_total_cost(costs):
    # everything fits, so the answer is trivial however large the budget (no budget-sized table)
    gains = [np.array([3.0, 1.0]), np.array([2.0]), np.array([4.0, 4.0, 0.5]), np.array([1.0])]
    full = full_cost(costs, gains)
    budgets = [full // 2, full, 10**12]
    sol = solve(costs, gains, budgets)
    table = dp(costs, gains, full)
    check(costs, gains, budgets, sol, {b: table.best[min(b, full)] for b in budgets})
    assert np.asarray(sol.ranks)[1:].tolist() == [[2, 1, 3, 1]] * 2
    assert sol.used[2] == full and sol.left[2] == 0.0 and sol.gain[2] == 15.5


# -- the smallest case where greedy fails ---------------------------------------------------------


def block_spectra(W, p: int, q: int):
    """Costs ``m_b + n_b`` and squared singular values of the blocks of a numpy.array_split grid."""
    costs, gains = [], []
    for rows_ in np.array_split(np.arange(W.shape[0]), p):
        for cols in np.array_split(np.arange(W.shape[1]), q):
            block = W[np.ix_(rows_, cols)]
            costs.append(block.shape[0] + block.shape[1])
            gains.append(np.linalg.svd(block, compute_uv=False) ** 2)
    return costs, gains


def test_smallest_case_where_greedy_fails():
    W = np.array([[-3.0, -2], [-1, 2], [-3, 2]])
    costs, gains = block_spectra(W, 2, 2)  # blocks (0,0) 2x1, (0,1) 2x1, (1,0) 1x1, (1,1) 1x1
    assert costs == [3, 3, 2, 2]
    np.testing.assert_allclose(np.concatenate(gains), [10.0, 8.0, 9.0, 4.0], rtol=1e-14)
    total = float(np.sum(W**2))
    assert total == 31.0

    def err(ranks):
        return math.sqrt(untaken(gains, ranks) / total)

    assert greedy(costs, gains, 3) == (0, 0, 1, 0) and round(err((0, 0, 1, 0)), 4) == 0.8424
    assert exhaustive(costs, gains, 3) == (pytest.approx(10.0), (1, 0, 0, 0))

    sol = solve(costs, gains, [3])
    assert np.asarray(sol.ranks).tolist() == [[1, 0, 0, 0]]
    assert sol.used[0] == 3
    assert round(math.sqrt(float(sol.left[0]) / total), 4) == 0.8231
    assert sol.left[0] == pytest.approx(21.0, rel=REL)
    assert sol.gain[0] == pytest.approx(10.0, rel=REL)

    budgets = list(range(12))
    check(costs, gains, budgets, solve(costs, gains, budgets), dp(costs, gains, 11).best)


# -- realistic: ragged block grids of small random matrices ---------------------------------------


def random_matrix(rng) -> np.ndarray:
    m, n = (int(x) for x in rng.integers(1, 10, 2))
    kind = rng.integers(4)
    if kind == 0:
        return rng.standard_normal((m, n))
    if kind == 1:  # low rank: many (numerically) zero singular values
        k = int(rng.integers(1, 3))
        return rng.standard_normal((m, k)) @ rng.standard_normal((k, n))
    if kind == 2:  # small integers: repeated singular values, zero blocks
        return rng.integers(-2, 3, (m, n)).astype(np.float64)
    W = rng.standard_normal((m, n))  # a zero band and a scaled band
    W[: max(1, m // 3)] = 0.0
    W[:, -1] *= 1e3
    return W


@pytest.mark.parametrize("seed", range(60))
def test_ragged_block_grids_of_random_matrices(seed):
    rng = np.random.default_rng([seed, 99])
    W = random_matrix(rng)
    p = int(rng.integers(1, min(W.shape[0], 4) + 1))
    q = int(rng.integers(1, min(W.shape[1], 4) + 1))
    costs, gains = block_spectra(W, p, q)
    full = full_cost(costs, gains)
    budgets = list(range(full + 2))
    sol = solve(costs, gains, budgets)
    check(costs, gains, budgets, sol, dp(costs, gains, full + 1).best)
    # the energy accounts for the whole matrix
    assert float(sol.left[0]) == pytest.approx(float(np.sum(W**2)), rel=1e-10, abs=1e-300)


# -- Hypothesis: small instances against trying every rank vector --------------------------------

_gain_value = st.one_of(
    st.integers(0, 4).map(float),  # exact zeros and ties
    st.floats(0.0, 100.0, allow_nan=False, allow_infinity=False, allow_subnormal=False),
)


@st.composite
def small_instance(draw):
    n = draw(st.integers(1, 4))
    costs = draw(st.lists(st.integers(1, 6), min_size=n, max_size=n))
    gains = [
        np.array(sorted(draw(st.lists(_gain_value, max_size=3)), reverse=True), dtype=np.float64)
        for _ in range(n)
    ]
    full = full_cost(costs, gains)
    budgets = draw(st.lists(st.integers(0, full + 2), min_size=1, max_size=4))
    return costs, gains, budgets


@settings(max_examples=200, deadline=None)
@given(small_instance())
def test_hypothesis_small_instances_match_exhaustive(instance):
    costs, gains, budgets = instance
    best = {b: exhaustive(costs, gains, b)[0] for b in set(budgets)}
    check(costs, gains, budgets, solve(costs, gains, budgets), best)


# -- the references against each other (no solver needed) ---------------------------------------


@settings(max_examples=200, deadline=None)
@given(small_instance())
def test_reference_dp_matches_exhaustive_hypothesis(instance):
    costs, gains, budgets = instance
    table = dp(costs, gains, max(budgets))
    for b in budgets:
        best, ranks = exhaustive(costs, gains, b)
        assert cost_of(costs, ranks) <= b and close(taken(gains, ranks), best)
        assert close(float(table.best[b]), best), (b, table.best[b], best)
        r = table.ranks(b)
        assert cost_of(costs, r) <= b and close(taken(gains, r), best)


@pytest.mark.parametrize("seed", range(40))
def test_reference_dp_matches_exhaustive_every_budget(seed):
    rng = np.random.default_rng([seed, 5])
    n = int(rng.integers(1, 6))
    if seed % 2:
        a = int(rng.integers(2, 9))
        costs = [a + int(d) for d in rng.integers(0, 3, n)]
    else:
        costs = [int(c) for c in rng.choice(np.arange(1, 15), n, replace=False)]
    gains = [random_gains(rng, int(L)) for L in rng.integers(0, 4, n)]
    full = full_cost(costs, gains)
    table = dp(costs, gains, full + 2)
    for b in range(full + 3):
        best, ranks = exhaustive(costs, gains, b)
        assert cost_of(costs, ranks) <= b
        assert close(float(table.best[b]), best), (b, table.best[b], best)
        r = table.ranks(b)
        assert cost_of(costs, r) <= b and close(taken(gains, r), best)
        assert all(0 <= x <= len(g) for x, g in zip(r, gains))
    assert np.all(np.diff(table.best) >= 0)
    assert table.best[full] == pytest.approx(math.fsum(x for g in gains for x in g), rel=REL)


def test_reference_greedy_is_not_optimal_but_dp_is():
    W = np.array([[-3.0, -2], [-1, 2], [-3, 2]])
    costs, gains = block_spectra(W, 2, 2)
    g = greedy(costs, gains, 3)
    assert taken(gains, g) == pytest.approx(9.0) and dp(costs, gains, 3).ranks(3) == (1, 0, 0, 0)


# -- the Lagrangian core: restricted to a few ranks per unit, still exact ------------------------


def every_vector(costs, gains):
    """(parameters, gain, ranks) of every rank vector: the exhaustive search, once for all
    budgets."""
    out = []
    for ranks in itertools.product(*(range(len(g) + 1) for g in gains)):
        out.append((cost_of(costs, ranks), taken(gains, ranks), ranks))
    return out


def best_of(vectors, budget: int) -> float:
    return max(gain for cost, gain, _ in vectors if cost <= budget)


def core_instance(rng):
    """A small instance with the shapes that stress the core: one unit, equal costs, repeated
    costs, zero gains, ties within and across units, flat spectra, several magnitudes."""
    n = int(rng.integers(1, 6))
    kind = rng.integers(4)
    if kind == 0:  # one cost for all (one class)
        costs = [int(rng.integers(1, 6))] * n
    elif kind == 1:  # a few costs, repeated (classes of several units)
        costs = [int(c) for c in rng.choice([2, 3, 4, 6], n)]
    elif kind == 2:  # distinct costs
        costs = [int(c) for c in rng.choice(np.arange(1, 12), n, replace=False)]
    else:  # proportional gains and costs: every ratio ties
        costs = [int(c) for c in rng.integers(1, 5, n)]
    lengths = rng.integers(0, 5, n) if n <= 3 else rng.integers(0, 4, n)
    gains = [random_gains(rng, int(L)) for L in lengths]
    if kind == 3:
        base = float(rng.integers(1, 4))
        gains = [np.full(len(g), base * c) for g, c in zip(gains, costs)]
    return costs, gains


def solve_with(costs, gains, budgets, method):
    from lowrank_blocks.allocation import solve_allocation

    return solve_allocation(costs, gains, budgets, method=method)


def core_intervals(costs, gains, budgets):
    """``lo, hi, fill, lam, gap`` of the kernel, for the tests of the proof's claims."""
    from lowrank_blocks import _kernels, allocation

    units = allocation._units(np.asarray(costs, dtype=np.int64),
                              [np.asarray(g, dtype=np.float64) for g in gains])
    full = int(units.costs @ units.lengths)
    capped = np.minimum(np.asarray(budgets, dtype=np.int64), full)
    return _kernels.lagrangian_core(units.costs, units.flat, units.offsets, units.lengths,
                                    capped, allocation.CORE_MARGIN)


@pytest.mark.parametrize("seed", range(200))
def test_core_and_dp_match_exhaustive_on_small_instances(seed):
    rng = np.random.default_rng([seed, 2024])
    costs, gains = core_instance(rng)
    vectors = every_vector(costs, gains)
    full = full_cost(costs, gains)
    budgets = list(range(full + 3))  # budget 0, every budget that exactly fits, and beyond
    best = {b: best_of(vectors, b) for b in budgets}
    for method in ("core", "dp", "auto"):
        sol = solve_with(costs, gains, budgets, method)
        check(costs, gains, budgets, sol, best)
    if len({c for c, g in zip(costs, gains) if np.any(np.asarray(g) > 0)}) >= 2:
        assert solve_with(costs, gains, budgets, "core").algorithm == "core"


@pytest.mark.parametrize("seed", range(120))
def test_core_intervals_hold_every_optimal_solution(seed):
    """The claim the core rests on: every optimal rank vector lies within ``lo .. hi``; the
    greedy solution is feasible, inside, and the gap bounds its distance to the optimum."""
    rng = np.random.default_rng([seed, 77])
    costs, gains = core_instance(rng)
    vectors = every_vector(costs, gains)
    full = full_cost(costs, gains)
    budgets = list(range(full + 2))
    lo, hi, fill, lam, gap = core_intervals(costs, gains, budgets)
    positive = [int(np.sum(np.asarray(g) > 0)) for g in gains]  # zero gains are never taken
    for k, b in enumerate(budgets):
        best = best_of(vectors, b)
        optimal = [r for cost, gain, r in vectors if cost <= b and close(gain, best)
                   and all(x <= p for x, p in zip(r, positive))]
        assert optimal
        for r in optimal:
            assert np.all(lo[k] <= r) and np.all(np.asarray(r) <= hi[k]), (b, r, lo[k], hi[k])
        assert cost_of(costs, fill[k]) <= b and np.all(lo[k] <= fill[k]) and np.all(fill[k] <= hi[k])
        assert lam[k] >= 0 and gap[k] >= 0
        # the Lagrangian bound (greedy value + gap) is an upper bound on the optimum
        scale = max(best, 1e-300)
        assert taken(gains, fill[k]) + gap[k] >= best - REL * scale, (b, fill[k], gap[k], best)


def test_core_budget_zero_one_unit_and_zero_gains():
    # budget 0: nothing; one unit: its largest gains; zero gains: never taken
    assert solve_with([3, 5], [[2.0, 1.0], [4.0]], [0], "core").ranks.tolist() == [[0, 0]]
    sol = solve_with([4], [[5.0, 3.0, 0.0]], [0, 3, 4, 8, 12, 100], "core")
    assert sol.ranks[:, 0].tolist() == [0, 0, 1, 2, 2, 2]
    sol = solve_with([2, 3], [np.zeros(3), [1.0, 0.0]], list(range(12)), "core")
    assert np.all(sol.ranks[:, 0] == 0) and sol.ranks[:, 1].max() == 1
    # an exact fit of the greedy solution (gap 0) and the budget one below it
    costs, gains = [2, 3], [[6.0, 2.0], [6.0, 1.5]]  # gain per parameter 3, 1 | 2, 0.5
    lo, hi, fill, lam, gap = core_intervals(costs, gains, [5, 4])
    assert fill[0].tolist() == [1, 1] and gap[0] <= REL * 12  # 2 + 3 fits exactly
    assert lo[0].tolist() == [1, 1]  # (lam ends at 1, the ratio of the next item: it may stay)
    assert fill[1].tolist() == [2, 0] and gap[1] > 0
    for b, want in ((5, 12.0), (4, 8.0)):
        assert solve_with(costs, gains, [b], "core").gain[0] == pytest.approx(want, rel=REL)


@settings(max_examples=200, deadline=None)
@given(small_instance())
def test_hypothesis_core_matches_exhaustive(instance):
    costs, gains, budgets = instance
    best = {b: exhaustive(costs, gains, b)[0] for b in set(budgets)}
    check(costs, gains, budgets, solve_with(costs, gains, budgets, "core"), best)


def model_like_instance(rng, n_units: int):
    """Units like a model's matrices: ``m + n`` from a few sizes (classes of several units),
    geometric spectra, sometimes a rank-deficient tail of zeros or rounded (tied) values."""
    sides = np.arange(2, 13, 2)
    costs, gains = [], []
    for _ in range(n_units):
        m, n = (int(x) for x in rng.choice(sides, 2))
        r = min(m, n)
        g = rng.uniform(0.3, 3.0) * rng.uniform(0.5, 0.98) ** (2 * np.arange(r))
        if rng.random() < 0.2:
            g[rng.integers(1, r + 1) :] = 0.0
        if rng.random() < 0.2:
            g = np.round(g, 1)
        costs.append(m + n)
        gains.append(np.sort(g)[::-1].copy())
    return costs, gains


@pytest.mark.parametrize("seed", range(25))
def test_core_matches_reference_dp_on_model_like_instances(seed):
    rng = np.random.default_rng([seed, 31])
    costs, gains = model_like_instance(rng, int(rng.integers(10, 60)))
    full = full_cost(costs, gains)
    budgets = sorted({0, 1, full // 10, full // 3, int(rng.integers(0, full + 1)), full - 1, full})
    table = dp(costs, gains, max(budgets))
    for method in ("core", "auto", "dp"):
        check(costs, gains, budgets, solve_with(costs, gains, budgets, method), table.best)


@pytest.mark.parametrize("seed", range(25))
def test_core_without_numba_matches_exhaustive(seed, monkeypatch):
    """The plain-Python kernel and the NumPy fallbacks (what runs without numba)."""
    from lowrank_blocks import _kernels

    for name in ("lagrangian_core_numba", "unit_sums_numba", "concave_knapsack_dp_numba",
                 "enumerate_counts_numba"):
        monkeypatch.setattr(_kernels, name, None)
    rng = np.random.default_rng([seed, 2024])
    costs, gains = core_instance(rng)
    vectors = every_vector(costs, gains)
    budgets = list(range(full_cost(costs, gains) + 2))
    best = {b: best_of(vectors, b) for b in budgets}
    for method in ("core", "auto"):
        check(costs, gains, budgets, solve_with(costs, gains, budgets, method), best)


def test_method_argument():
    costs, gains = [3, 4, 5, 6], [[1.0], [2.0], [3.0], [4.0]]
    with pytest.raises(ValueError, match="method='greedy' is not allowed"):
        solve_with(costs, gains, [5], "greedy")
    with pytest.raises(ValueError, match="at most three distinct costs"):
        solve_with(costs, gains, [5], "enumeration")
    assert [solve_with(costs, gains, [9], m).gain[0] for m in ("auto", "core", "dp")] == [5.0] * 3


# -- bad input ----------------------------------------------------------------------------------

GOOD_COSTS = [3, 2]
GOOD_GAINS = [np.array([2.0, 1.0]), np.array([1.5])]


@pytest.mark.parametrize(
    "budgets",
    [-1, [3, -2], 2.5, [4, 2.5], True, [True], "3", None],
    ids=["negative", "negative-in-list", "float", "float-in-list", "bool", "bool-in-list", "str",
         "None"],
)
def test_bad_budgets(budgets):
    with pytest.raises((ValueError, TypeError), match="budget"):
        solve(GOOD_COSTS, GOOD_GAINS, budgets)


@pytest.mark.parametrize(
    "costs", [[0, 2], [3, -1], [3, 2.5], [3, True]], ids=["zero", "negative", "float", "bool"]
)
def test_bad_costs(costs):
    with pytest.raises((ValueError, TypeError), match="costs"):
        solve(costs, GOOD_GAINS, [3])


@pytest.mark.parametrize(
    ("costs", "gains"),
    [([3], GOOD_GAINS), ([3, 2, 1], GOOD_GAINS), ([], GOOD_GAINS)],
    ids=["fewer-costs", "more-costs", "no-costs"],
)
def test_lengths_differ(costs, gains):
    with pytest.raises((ValueError, TypeError), match="costs|gains"):
        solve(costs, gains, [3])


@pytest.mark.parametrize(
    "bad",
    [
        np.array([1.0, 2.0]),
        np.array([2.0, -1.0]),
        np.array([-0.5]),
        np.array([np.nan]),
        np.array([3.0, np.nan]),
        np.array([np.inf, 1.0]),
        np.ones((2, 2)),
    ],
    ids=["increasing", "negative-tail", "negative", "nan", "nan-tail", "inf", "2-d"],
)
def test_bad_gains(bad):
    with pytest.raises((ValueError, TypeError), match="gains"):
        solve(GOOD_COSTS, [GOOD_GAINS[0], bad], [3])
