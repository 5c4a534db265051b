"""Matrices larger than memory (lowrank_blocks.outofcore): block by block, the in-memory numbers.

The memory limit is set through ``LOWRANK_BLOCKS_MAX_BYTES`` below the size of the matrix, so
that a memory-mapped ``.npy`` can only be analysed block by block: the block grids whose blocks
fit give exactly the in-memory surface, the global structure (the whole matrix, which does not
fit) falls back to ``dask.array.linalg.svd_compressed`` and says so, and the memory traced while
the surface is computed stays under the limit.
"""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest

from lowrank_blocks import error_surface, error_vs_budget, prepare
from lowrank_blocks._limits import ENV_VAR, MemoryLimitError
from lowrank_blocks.outofcore import LargeMatrix, is_large, open_large

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 4 * 2**20  # bytes: below the 6 MiB matrix, above a few of its 4 × 4 grid's blocks


def _matrix(m: int = 1024, n: int = 768, rank: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((m, rank)) @ rng.standard_normal((rank, n)) \
        + 0.1 * rng.standard_normal((m, n))


@pytest.fixture(scope="module")
def npy(tmp_path_factory) -> tuple[Path, np.ndarray]:
    W = _matrix()
    path = tmp_path_factory.mktemp("large") / "W.npy"
    np.save(path, W)
    return path, W


def _by_family(surface, family):
    frame = surface.to_frame()
    return frame[frame["family"] == family].reset_index(drop=True)


def test_memmap_surface_under_a_memory_limit_equals_the_in_memory_one(npy, monkeypatch):
    pytest.importorskip("dask")
    path, W = npy
    assert W.nbytes > LIMIT
    options = {"grids": [4, 8], "diagonal": [4, 8], "method": "exact"}
    reference = error_surface(W, **options)
    monkeypatch.setenv(ENV_VAR, str(LIMIT))
    with warnings.catch_warnings():  # a first, small run imports what the randomized path needs
        warnings.simplefilter("ignore")
        small = open_large(np.load(path, mmap_mode="r")[:64, :48], max_bytes=90_000)
        assert error_surface(small, grids=[2], diagonal=[2]).method == "randomized"
    tracemalloc.start()
    try:
        with pytest.warns(UserWarning, match=r"global .*svd_compressed"):
            surface = error_surface(np.load(path, mmap_mode="r"), **options)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < LIMIT, f"{peak / 2**20:.1f} MiB traced, limit {LIMIT / 2**20:.0f} MiB"
    # The structures whose blocks fit: the in-memory numbers.
    for family in ("grid", "diagonal"):
        got, ref = _by_family(surface, family), _by_family(reference, family)
        assert got[["grid", "rank", "n_params"]].equals(ref[["grid", "rank", "n_params"]])
        np.testing.assert_allclose(got["error"], ref["error"], rtol=1e-12, atol=1e-15)
    # The global structure did not fit: randomized, and the result says so.
    assert surface.method == "randomized"
    got, ref = _by_family(surface, "global"), _by_family(reference, "global")
    k = len(got)
    assert 8 <= k < min(W.shape)
    assert got["rank"].tolist() == list(range(1, k + 1))
    assert np.all(got["error"].to_numpy() >= ref["error"].to_numpy()[:k] - 1e-12)
    np.testing.assert_allclose(got["error"], ref["error"][:k], atol=5e-3)


def test_memmap_curve_equals_the_in_memory_one(npy, monkeypatch):
    path, W = npy
    monkeypatch.setenv(ENV_VAR, str(LIMIT))
    options = {"families": ["grid", "diagonal"], "grids": [4, 8], "diagonal": [4, 8],
               "method": "exact"}
    budgets = [4000, 20000, 60000]
    got = error_vs_budget(np.load(path, mmap_mode="r"), budgets, **options)
    monkeypatch.delenv(ENV_VAR)
    ref = error_vs_budget(W, budgets, **options)
    assert got.method == "exact"
    a, b = got.to_frame(), ref.to_frame()
    assert a[["family", "allocation", "budget", "n_params"]].equals(
        b[["family", "allocation", "budget", "n_params"]])
    np.testing.assert_allclose(a["error"], b["error"], rtol=1e-12, atol=1e-15)


def test_zarr_and_dask_inputs_equal_the_in_memory_surface(tmp_path):
    zarr = pytest.importorskip("zarr")
    da = pytest.importorskip("dask.array")
    W = _matrix(200, 150, seed=1).astype(np.float32)
    z = zarr.create_array(store=str(tmp_path / "W.zarr"), shape=W.shape, chunks=(64, 64),
                          dtype="float32")
    z[:] = W
    options = {"grids": [2, 4], "diagonal": [2, 4], "method": "exact"}
    ref = error_surface(W, **options).to_frame()
    for X in (zarr.open_array(str(tmp_path / "W.zarr"), mode="r"),
              da.from_array(W, chunks=(70, 50)),  # chunks not on the grid: rechunked to it
              da.from_zarr(str(tmp_path / "W.zarr"))):
        assert is_large(X)
        surface = error_surface(X, **options)
        assert surface.method == "exact"
        got = surface.to_frame()
        assert got[["family", "grid", "rank"]].equals(ref[["family", "grid", "rank"]])
        np.testing.assert_allclose(got["error"], ref["error"], rtol=1e-6, atol=1e-7)
    assert repr(prepare(da.from_array(W))).startswith("LargeMatrix(200 × 150, float32, dask")


def test_randomized_method_on_blocks_larger_than_memory(npy):
    pytest.importorskip("dask")
    path, W = npy
    L = open_large(np.load(path, mmap_mode="r"), max_bytes=LIMIT)
    curve = error_vs_budget(L, [20000], families=["global", "grid"], grids=[2],
                            method="randomized", random_state=0)
    exact = error_vs_budget(W, [20000], families=["global", "grid"], grids=[2],
                            method="exact")
    assert curve.method == "randomized"
    got, ref = curve.to_frame(), exact.to_frame()
    assert np.all(got["error"].to_numpy() >= ref["error"].to_numpy() - 1e-12)
    np.testing.assert_allclose(got["error"], ref["error"], atol=5e-3)
    assert L.randomized == {}  # asked for: no fallback to report


def test_refusals(tmp_path):
    bad = _matrix(40, 30)
    bad[3, 4], bad[5, 6] = np.nan, np.inf
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(ValueError, match="W has 2 NaN or infinite entries"):
        error_surface(np.load(tmp_path / "bad.npy", mmap_mode="r"))
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="2-D matrix"):
        prepare(np.load(tmp_path / "cube.npy", mmap_mode="r"))
    np.save(tmp_path / "flags.npy", np.ones((3, 3), dtype=bool))
    with pytest.raises(TypeError, match="boolean"):
        prepare(np.load(tmp_path / "flags.npy", mmap_mode="r"))
    with pytest.raises(TypeError, match="numpy.memmap"):
        open_large(np.eye(3))
    # Not even the randomized method's vectors fit: refused, naming the sizes and the limit.
    np.save(tmp_path / "W.npy", _matrix(200, 150))
    L = open_large(np.load(tmp_path / "W.npy", mmap_mode="r"), max_bytes=64 * 1024)
    assert isinstance(L, LargeMatrix) and L.shape == (200, 150)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(MemoryLimitError, match=r"200 × 150.*max_rank"):
            error_surface(L, grids=[2], families=["global"])
    assert not is_large(np.eye(3)) and is_large(L)


def test_memmaps_need_no_dask_until_a_block_does_not_fit(tmp_path):
    np.save(tmp_path / "W.npy", _matrix(96, 64))
    code = (
        "import sys\n"
        "for name in ('dask', 'distributed', 'zarr'):\n"
        "    sys.modules[name] = None\n"
        "import numpy as np\n"
        "from lowrank_blocks import error_surface\n"
        f"W = np.load({str(tmp_path / 'W.npy')!r}, mmap_mode='r')\n"
        "ref = error_surface(np.array(W), method='exact').to_frame()['error']\n"
        "got = error_surface(W, method='exact').to_frame()['error']\n"
        "assert np.allclose(got, ref, rtol=1e-12, atol=1e-15)\n"
        "from lowrank_blocks.outofcore import open_large\n"
        "try:\n"
        "    error_surface(open_large(W, max_bytes=40_000), families=['global'])\n"
        "except ImportError as exc:\n"
        "    assert 'lowrank_blocks[distributed]' in str(exc), exc\n"
        "else:\n"
        "    raise AssertionError('no ImportError')\n"
    )
    result = subprocess.run([sys.executable, "-W", "ignore::UserWarning", "-c", code],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# -- method='auto': the certified Gram path, block by block ------------------------------------


def _mixed(scale: float = 1.0) -> np.ndarray:
    """512 × 384: Gaussian, with one exactly rank-3 region (the (0, 0) block of the 4 × 4 grid,
    whose Gram values are rounding noise beyond rank 3: it falls back to the SVD)."""
    rng = np.random.default_rng(7)
    W = rng.standard_normal((512, 384))
    W[:128, :96] = rng.standard_normal((128, 3)) @ rng.standard_normal((3, 96))
    return W * scale


def _reference_tails(W, grid, blocks):
    """``Σ_{i>r} σ_i²`` of every block by NumPy's float64 SVD (blocks split as array_split)."""
    rows = np.array_split(np.arange(W.shape[0]), grid[0])
    cols = np.array_split(np.arange(W.shape[1]), grid[1])
    out = []
    for i, j in blocks:
        s = np.linalg.svd(W[np.ix_(rows[i], cols[j])], compute_uv=False)
        out.append(np.concatenate([np.cumsum((s**2)[::-1])[::-1], [0.0]]))
    return out


@pytest.mark.parametrize("scale", [1.0, 1e-150])
@pytest.mark.parametrize("limit", [None, 2**20])
def test_memmap_auto_equals_the_in_memory_auto(tmp_path, monkeypatch, scale, limit):
    W = _mixed(scale)
    np.save(tmp_path / "W.npy", W)
    options = {"families": ["grid", "diagonal"], "grids": [4, 8], "diagonal": [4, 8]}
    reference = error_surface(W, **options)
    routes = {"stripe": 0, "block": 0}
    for name, route in (("_auto_stripe", "stripe"), ("_auto_task", "block")):
        original = getattr(LargeMatrix, name)

        def counted(self, *args, _original=original, _route=route):
            routes[_route] += 1
            return _original(self, *args)

        monkeypatch.setattr(LargeMatrix, name, counted)
    L = open_large(np.load(tmp_path / "W.npy", mmap_mode="r"), max_bytes=limit)
    tracemalloc.start()
    try:
        surface = error_surface(L, **options)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    if limit is None:
        assert routes["stripe"] > 0  # whole stripes, their blocks certified together
    else:
        assert routes["block"] > 0 and peak < limit  # one block per task, under the limit
    assert surface.method == reference.method == "auto"
    got, ref = surface.to_frame(), reference.to_frame()
    assert got[["family", "grid", "rank", "n_params"]].equals(
        ref[["family", "grid", "rank", "n_params"]])
    np.testing.assert_allclose(got["error"], ref["error"], rtol=0, atol=1e-15)
    # The spectra themselves: the same paths, bounds and tolerance as in memory.
    prep = prepare(W)
    for grid in ((4, 4), (8, 8)):
        a, b = L.spectra(grid, method="auto"), prep.spectra(grid, method="auto")
        assert a.method == b.method and a.tol == b.tol
        assert a.paths.tolist() == b.paths.tolist()
        np.testing.assert_allclose(a.sq, b.sq, rtol=1e-15, atol=1e-15 * b.sq.max())
        if b.bound_a is None:
            assert a.bound_a is None and a.bound_c is None
        else:
            np.testing.assert_allclose(a.bound_a, b.bound_a, rtol=1e-12)
            np.testing.assert_allclose(a.bound_c, b.bound_c, rtol=1e-12)
    spec = L.spectra((4, 4), method="auto")
    assert spec.paths.tolist() == [2] + [1] * 15  # the rank-3 block fell back to the SVD
    assert L.spectra((8, 8), method="auto").paths.tolist() == [0] * 64  # 64 × 48: SVD
    # error_bounds works, and bounds the distance to an independent reference.
    tails = _reference_tails(W / scale, (4, 4), spec.blocks)
    total = sum(t[0] for t in tails)
    for r in (1, 3, 20, 60, 95):
        ranks = [min(r, 96)] * 16
        bound = spec.error_bounds(ranks)
        exact = np.sqrt(sum(t[min(r, 96)] for t in tails) / total)
        assert 0 < bound <= spec.tol
        assert abs(spec.errors(ranks) - exact) <= bound + 1e-15


@pytest.mark.parametrize("limit", [None, 2**20])
def test_memmap_auto_certifies_with_the_whole_matrix_weights(tmp_path, limit):
    """At a tolerance where blocks pass or fail by their share of the energy held, the same
    blocks pass as in memory: for the whole grid, the diagonal blocks and a ``max_rank``."""
    W = _mixed()
    W[:, 96:192] *= np.linspace(0.1, 1, 96)
    W[384:, :] *= 3.0
    np.save(tmp_path / "W.npy", W)
    diagonal = tuple((i, i) for i in range(4))
    for blocks, max_rank in ((None, None), (diagonal, None), (None, 40)):
        a = open_large(np.load(tmp_path / "W.npy", mmap_mode="r"), max_bytes=limit).spectra(
            (4, 4), blocks, method="auto", tol=1.5e-11, max_rank=max_rank)
        b = prepare(W).spectra((4, 4), blocks, method="auto", tol=1.5e-11, max_rank=max_rank)
        assert a.paths.tolist() == b.paths.tolist()
        assert 1 in b.paths.tolist() and 2 in b.paths.tolist()
        np.testing.assert_allclose(a.sq, b.sq, rtol=1e-15, atol=1e-15 * b.sq.max())
        assert a.tol == b.tol == 1.5e-11
        r = [min(20, int(k)) for k in a.rank_limits]
        assert a.errors(r) == pytest.approx(b.errors(r), rel=1e-14)
        assert a.error_bounds(r) == pytest.approx(b.error_bounds(r), rel=1e-10)


def test_memmap_auto_takes_the_svd_where_the_gram_path_does_not_fit(tmp_path, monkeypatch):
    """Blocks whose Gram matrix (counted with the block, LAPACK's copy and workspace) does not
    fit under the limit, but whose SVD does, are decomposed by SVD: no error, exact values."""
    W = _mixed()
    np.save(tmp_path / "W.npy", W)
    L = open_large(np.load(tmp_path / "W.npy", mmap_mode="r"), max_bytes=2**20)
    monkeypatch.setattr(LargeMatrix, "_auto_bytes", lambda self, mb, nb: 2**21)
    monkeypatch.setattr(LargeMatrix, "_auto_stripe_bytes", lambda self, part: 2**21)
    spec = L.spectra((4, 4), method="auto")
    assert spec.method == "exact" and spec.paths.tolist() == [0] * 16
    assert spec.bound_a is None and spec.tol is None
    tails = _reference_tails(W, (4, 4), spec.blocks)
    for k, t in enumerate(tails):
        np.testing.assert_allclose(spec.tails()[k, : len(t)] * L.scale**2, t, rtol=1e-10,
                                   atol=1e-12 * t[0])


def test_the_gram_path_is_counted_against_the_limit(tmp_path):
    """What ``method='auto'`` reserves for a block read on its own covers the block, the
    LAPACK copy and the Gram matrix (``k × k``) together, and a stripe the stripe too."""
    np.save(tmp_path / "W.npy", np.ones((300, 200)))
    L = open_large(np.load(tmp_path / "W.npy", mmap_mode="r"))
    for mb, nb in ((300, 200), (75, 50), (64, 1000)):
        k = min(mb, nb)
        assert L._auto_bytes(mb, nb) >= 8 * (2 * mb * nb + k * k)
    from lowrank_blocks.partition import Partition

    part = Partition((300, 200), (4, 2))
    assert L._auto_stripe_bytes(part) >= 8 * (75 * 200 + 75 * 100 + 75 * 75)


def test_dask_auto_equals_the_in_memory_auto():
    da = pytest.importorskip("dask.array")
    W = _mixed()
    options = {"families": ["grid", "diagonal"], "grids": [2, 4], "diagonal": [2, 4]}
    ref = error_surface(W, **options)
    got = error_surface(da.from_array(W, chunks=(100, 90)), **options)
    assert got.method == ref.method == "auto"
    np.testing.assert_allclose(got.to_frame()["error"], ref.to_frame()["error"], rtol=0,
                               atol=1e-15)
