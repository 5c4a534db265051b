"""Model-wide allocation: exact against brute force and a textbook DP, the Lagrangian bound valid.

Every reference here is independent of the code under test: singular values from
``numpy.linalg.svd`` of every block (``numpy.array_split`` partitions), the multiple-choice
knapsack DP and exhaustive search of ``tests/reference_knapsack.py``, and brute force over every
(structure, rank) of every matrix.
"""

from __future__ import annotations

import itertools
import math
import pickle

import numpy as np
import pytest

from lowrank_blocks.model_budget import (
    MatrixSpectra,
    allocate_model,
    matrix_spectra,
    model_spectra,
    parse_structure,
    uniform_rank_at,
)
from tests import reference_knapsack as ref


def sv2(W):
    return np.linalg.svd(np.asarray(W, dtype=np.float64), compute_uv=False) ** 2


def blocks_of(W, k, diagonal=False):
    rows = np.array_split(np.arange(W.shape[0]), k)
    cols = np.array_split(np.arange(W.shape[1]), k)
    out = []
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            if diagonal and i != j:
                continue
            out.append(W[np.ix_(r, c)])
    return out


def option_items(W, label):
    """(cost, squared error) of uniform rank s = 0 .. s_max of one option, from first principles."""
    m, n = W.shape
    energy = float((W ** 2).sum())
    if label == "global":
        k, diag = 1, False
    else:
        fam, k = label.split(":")
        k, diag = int(k), fam == "diagonal"
    if k > min(m, n):
        return []
    blocks = blocks_of(W, k, diag)
    s_max = min(min(b.shape) for b in blocks)
    unit = sum(b.shape[0] + b.shape[1] for b in blocks)
    items = []
    for s in range(s_max + 1):
        if s == 0:
            err = energy
        else:
            err = math.fsum(float(sv2(b)[s:].sum()) for b in blocks) + (
                energy - math.fsum(float((b ** 2).sum()) for b in blocks))
        items.append((s * unit, err, (label, s)))
    return items


def random_model(rng, n_matrices, max_side=6, decay=True):
    mats = {}
    for i in range(n_matrices):
        m, n = int(rng.integers(2, max_side + 1)), int(rng.integers(2, max_side + 1))
        W = rng.standard_normal((m, n))
        if decay:
            U, S, Vt = np.linalg.svd(W, full_matrices=False)
            W = (U * (S * rng.uniform(0.05, 3.0) ** np.arange(len(S)) / 2 ** i)) @ Vt
        mats[f"m{i}.weight"] = W
    return mats


@pytest.mark.parametrize("objective", ["relative", "absolute"])
@pytest.mark.parametrize("seed", range(12))
def test_global_allocation_is_the_knapsack_optimum(seed, objective):
    rng = np.random.default_rng(seed)
    mats = random_model(rng, int(rng.integers(2, 6)), max_side=7)
    costs = [W.shape[0] + W.shape[1] for W in mats.values()]
    weights = [1.0 if objective == "absolute" else 1.0 / float((W ** 2).sum()) for W in mats.values()]
    gains = [sv2(W) * w for W, w in zip(mats.values(), weights)]
    total_params = sum(c * len(g) for c, g in zip(costs, gains))
    for budget in sorted({0, 3, int(rng.integers(0, total_params + 1)), total_params // 3,
                          total_params}):
        alloc = allocate_model(mats, budget, objective=objective, progress=False)
        table = ref.dp(costs, gains, budget)
        best_left = math.fsum(float(g.sum()) for g in gains) - table.best[budget]
        assert alloc.method == "exact knapsack"
        assert alloc.n_params <= budget
        ranks = [alloc.ranks[name] for name in mats]
        # the reported error is the error of the reported ranks, recomputed from scratch ...
        assert alloc.total_error == pytest.approx(ref.untaken(gains, ranks), rel=1e-9, abs=1e-12)
        # ... and it is the optimum of the textbook DP
        assert alloc.total_error == pytest.approx(best_left, rel=1e-9, abs=1e-12)
        if len(mats) <= 4 and budget <= 40:
            best, _ = ref.exhaustive(costs, gains, budget)
            assert ref.untaken(gains, ranks) == pytest.approx(
                math.fsum(float(g.sum()) for g in gains) - best, rel=1e-9, abs=1e-12)
        # the uniform rank at the same total, from its definition
        u = max(r for r in range(0, max(map(len, gains)) + 1) if sum(min(r, len(g)) * c for g, c in zip(gains, costs)) <= budget)
        assert alloc.uniform_rank == u
        assert alloc.uniform_error == pytest.approx(ref.untaken(gains, [min(u, len(g)) for g in gains]),
                                                    rel=1e-9, abs=1e-12)
        assert alloc.total_error <= alloc.uniform_error + 1e-12


@pytest.mark.parametrize("seed", range(6))
def test_global_allocation_of_many_matrices_is_the_knapsack_optimum(seed):
    """Enough matrices and distinct costs that the Lagrangian core solves it (the case of a
    whole model): the optimum of the textbook DP all the same, at budgets from 0 to all."""
    from lowrank_blocks.allocation import solve_allocation

    rng = np.random.default_rng([seed, 11])
    mats = random_model(rng, 40, max_side=9)
    if seed % 2:  # repeated spectra: ties across matrices of the same cost
        names = list(mats)
        for a, b in zip(names[::2], names[1::2]):
            mats[b] = mats[a].copy()
    costs = [W.shape[0] + W.shape[1] for W in mats.values()]
    gains = [sv2(W) / float((W ** 2).sum()) for W in mats.values()]
    total_params = sum(c * len(g) for c, g in zip(costs, gains))
    budgets = sorted({0, min(costs), total_params // 10, total_params // 3,
                      int(rng.integers(0, total_params + 1)), total_params - 1, total_params})
    table = ref.dp(costs, gains, max(budgets))
    total = math.fsum(float(g.sum()) for g in gains)
    spectra = model_spectra(mats, progress=False)
    for budget in budgets:
        alloc = allocate_model(spectra, budget, progress=False)
        ranks = [alloc.ranks[name] for name in mats]
        assert alloc.method == "exact knapsack" and alloc.n_params <= budget
        assert alloc.total_error == pytest.approx(ref.untaken(gains, ranks), rel=1e-9, abs=1e-12)
        assert alloc.total_error == pytest.approx(total - table.best[budget], rel=1e-9,
                                                  abs=1e-12)
    from lowrank_blocks import _kernels

    if _kernels.lagrangian_core_numba is not None:  # interpreted, the core is not the cheapest
        assert solve_allocation(costs, gains, total_params // 10).algorithm == "core"


def test_relative_and_absolute_objectives_differ_as_documented():
    # 'big' has 100× the energy: the absolute objective spends the budget on it, the relative
    # one on the matrix whose error falls most relative to its own energy.
    big = np.diag([10.0, 10.0, 9.0, 0.0])
    small = np.diag([1.0, 0.0, 0.0, 0.0]) * 0.1 + np.diag([0.0, 0.0, 0.0, 0.0])
    mats = {"big.weight": big, "small.weight": small}
    absolute = allocate_model(mats, 8, objective="absolute", progress=False)
    relative = allocate_model(mats, 8, objective="relative", progress=False)
    assert absolute.ranks == {"big.weight": 1, "small.weight": 0}
    assert relative.ranks == {"big.weight": 0, "small.weight": 1}  # removes 100 % of its energy
    assert relative.total_error == pytest.approx(1.0)  # 'big' left out entirely
    with pytest.raises(ValueError, match="objective='l2' is not allowed"):
        allocate_model(mats, 8, objective="l2", progress=False)


def test_lora_rank_budget_and_zero_matrices():
    rng = np.random.default_rng(3)
    mats = {"a.weight": rng.standard_normal((6, 4)), "z.weight": np.zeros((5, 5)),
            "b.weight": rng.standard_normal((3, 7))}
    alloc = allocate_model(mats, lora_rank=2, progress=False)
    assert alloc.budget == 2 * (10 + 10 + 10)
    assert alloc.ranks["z.weight"] == 0  # nothing to gain on a zero matrix
    assert alloc.uniform_rank == 2
    assert alloc.total_error <= alloc.uniform_error
    frame = alloc.to_frame()
    assert list(frame["name"]) == list(mats) and frame.loc[1, "error"] == 0.0
    for bad in ({}, {"budget": 10, "lora_rank": 1}):
        with pytest.raises(ValueError, match="exactly one of"):
            allocate_model(mats, progress=False, **bad)


def brute_force(mats, labels, weights, budget):
    """Best total weighted error over every (option, rank) of every matrix."""
    per = []
    for W, w in zip(mats.values(), weights):
        items = {}
        for label in labels:
            for c, e, name in option_items(W, label):
                items[name] = (c, w * e)
        per.append(list(items.items()))
    best = (math.inf, None)
    for combo in itertools.product(*per):
        cost = sum(c for _, (c, _) in combo)
        if cost > budget:
            continue
        err = math.fsum(e for _, (_, e) in combo)
        if err < best[0]:
            best = (err, [name for name, _ in combo])
    return best, per


STRUCTURES = [("global", "grid:2"), ("global", "grid:2", "diagonal:2"), ("grid:2", "grid:3", "global")]


@pytest.mark.parametrize("structures", STRUCTURES)
@pytest.mark.parametrize("seed", range(8))
def test_structure_choice_exact_and_lagrangian_against_brute_force(seed, structures):
    rng = np.random.default_rng(100 + seed)
    mats = random_model(rng, 3, max_side=6)
    objective = "relative" if seed % 2 else "absolute"
    weights = [1.0 if objective == "absolute" else 1.0 / float((W ** 2).sum()) for W in mats.values()]
    full = sum(max(c for c, _, _ in option_items(W, "global")) for W in mats.values())
    for budget in sorted({int(rng.integers(1, full + 1)), full // 2, full // 4 + 1}):
        (optimum, _), per = brute_force(mats, structures, weights, budget)
        exact = allocate_model(mats, budget, structures=structures, objective=objective,
                               exact=True, progress=False)
        lagr = allocate_model(mats, budget, structures=structures, objective=objective,
                              exact=False, progress=False)
        for alloc in (exact, lagr):
            # the reported choice is feasible and its error is what brute force gives it
            picked = [dict(items)[tuple(ch)] for items, ch in zip(per, alloc.choices)]
            assert sum(c for c, _ in picked) <= budget
            assert alloc.n_params == sum(c for c, _ in picked)
            assert alloc.total_error == pytest.approx(math.fsum(e for _, e in picked),
                                                      rel=1e-9, abs=1e-12)
            assert alloc.total_error >= optimum - 1e-9 * max(1.0, optimum)
        assert exact.method == "exact dp"
        assert exact.total_error == pytest.approx(optimum, rel=1e-9, abs=1e-12)
        assert lagr.method == "lagrangian"
        # the Lagrangian bound is a valid lower bound; the gap bounds the distance to the optimum
        assert lagr.lower_bound <= optimum + 1e-9 * max(1.0, optimum)
        assert lagr.total_error - optimum <= lagr.gap + 1e-9 * max(1.0, optimum)
        # never worse than the exact global-only allocation, which is feasible too
        if "global" in structures:
            glob = allocate_model(mats, budget, objective=objective, progress=False)
            assert lagr.total_error <= glob.total_error + 1e-12
            assert exact.total_error <= glob.total_error + 1e-12


def test_lagrangian_gap_is_reported_and_positive_somewhere():
    """On some instance the relaxation is not integral: a positive gap, still a valid bound."""
    seen = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        mats = random_model(rng, 3, max_side=6)
        full = sum(W.shape[0] + W.shape[1] for W in mats.values()) * 3
        budget = int(rng.integers(5, full))
        alloc = allocate_model(mats, budget, structures="global,grid:2", exact=False,
                               objective="absolute", progress=False)
        (optimum, _), _ = brute_force(mats, ("global", "grid:2"), [1.0] * 3, budget)
        assert alloc.lower_bound <= optimum + 1e-9 and alloc.total_error >= optimum - 1e-9
        if alloc.gap > 1e-9:
            seen += 1
            assert "optimality gap" in alloc.describe()
    assert seen > 0


def test_spectra_from_first_principles_and_picklable():
    rng = np.random.default_rng(7)
    W = rng.standard_normal((7, 5))
    ms = matrix_spectra(("w", W), ["global", "grid:2", "diagonal:3", "grid:9"])
    assert isinstance(pickle.loads(pickle.dumps(ms)), MatrixSpectra)
    assert "grid:9" not in ms.curves  # 9 blocks do not fit 5 columns
    np.testing.assert_allclose(ms.sq, sv2(W), rtol=1e-12)
    assert ms.energy == pytest.approx(float((W ** 2).sum()), rel=1e-13)
    for label in ("global", "grid:2", "diagonal:3"):
        unit, err = ms.curves[label]
        items = option_items(W, label)
        assert unit == items[1][0]
        np.testing.assert_allclose(err, [e for _, e, _ in items], rtol=1e-10, atol=1e-12)


def test_map_fn_hook_gives_the_same_spectra():
    rng = np.random.default_rng(8)
    mats = random_model(rng, 4)
    serial = model_spectra(mats, "global,grid:2", progress=False)
    calls = []

    def mapper(fn, items):
        calls.append(len(items))
        return [pickle.loads(pickle.dumps(fn))(pickle.loads(pickle.dumps(x))) for x in items]

    mapped = model_spectra(mats, "global,grid:2", map_fn=mapper)
    assert calls == [4]
    for a, b in zip(serial, mapped):
        np.testing.assert_array_equal(a.sq, b.sq)
        assert a.curves.keys() == b.curves.keys()
    # precomputed spectra are accepted as the source
    assert allocate_model(serial, 20, progress=False).total_error == pytest.approx(
        allocate_model(mats, 20, progress=False).total_error)


def test_uniform_rank_and_bad_structures():
    spectra = model_spectra({"a": np.ones((4, 4)), "b": np.ones((2, 6))}, progress=False)
    # rank r costs 8 min(r, 4) + 8 min(r, 2)
    assert [uniform_rank_at(spectra, b) for b in (0, 15, 16, 31, 32, 40, 48, 1000)] == \
        [0, 0, 1, 1, 2, 3, 4, 4]
    for bad in ("grid", "grid:0", "blocks:2", "global:3"):
        with pytest.raises(ValueError, match="not allowed"):
            parse_structure(bad)
    with pytest.raises(TypeError):
        parse_structure(3)
    assert parse_structure("grid:1") == "global"
