"""Fuzzing: arbitrary arguments and corrupt, truncated or oversized files of every format.

Every input either gives the right answer or a ``ValueError``/``TypeError`` with a short,
non-empty message: never another exception (``OverflowError``, ``RecursionError``,
``LinAlgError``, ``struct.error``, a raw library error), never a hang on a count, and never more
memory than the limit (files are read with a 32 MiB limit and the peak of traced allocations is
checked). Command-line cases end with exit status 0, or 2 and one line on stderr.

Sized to run in well under a minute (a few dozen examples per property).
"""

from __future__ import annotations

import io
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lowrank_blocks import (
    BlockGrid,
    DiagonalBlocks,
    Global,
    approximate,
    best_approximation,
    block_spectra,
    compare_many,
    configurations_at_budget,
    error_surface,
    error_vs_budget,
    split_sizes,
)
from lowrank_blocks.cli import main
from lowrank_blocks.io import read_matrices

FUZZ = settings(max_examples=40, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
LIMIT = 32 * 1024**2  # max_bytes of every file read here
W = np.random.default_rng(0).standard_normal((8, 8))

# -- strategies ---------------------------------------------------------------------------------

huge_ints = st.sampled_from([0, -1, 1, 2, 7, 8, 9, 2**31, 2**62, 2**63, 2**64, 10**12, 10**30])
scalars = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    huge_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=6),
    st.sampled_from(["0.9", "x", "square", "all", "pow2", "global", "grid", "diagonal", ""]),
    st.just(np.int64(4)),
    st.sampled_from([np.array(3), np.array(3.5), np.array([2, 2]), np.float64(2.0), np.bool_(True)]),
)
values = st.one_of(scalars, st.lists(scalars, max_size=4), st.tuples(scalars, scalars))


def named_error_or_result(call):
    """Run ``call``: a result, or a ValueError/TypeError whose message is one short line."""
    try:
        return call()
    except (ValueError, TypeError) as exc:
        message = str(exc)
        assert message.strip(), f"empty message from {type(exc).__name__}"
        assert len(message) < 1500, message[:200]
        return exc


# -- arguments ----------------------------------------------------------------------------------


@FUZZ
@given(rank=values, grid=values)
def test_structure_arguments(rank, grid):
    for make in (lambda: Global(rank), lambda: BlockGrid(grid, rank),
                 lambda: DiagonalBlocks(grid, rank)):
        result = named_error_or_result(make)
        if not isinstance(result, Exception):
            assert result.n_active >= 1 and result == result.with_rank(result.rank)


@FUZZ
@given(size=values, parts=values)
def test_split_sizes_arguments(size, parts):
    result = named_error_or_result(lambda: split_sizes(size, parts))
    if not isinstance(result, Exception):
        assert sum(result) == size and max(result) - min(result) <= 1


@FUZZ
@given(shape=st.one_of(values, st.tuples(huge_ints, huge_ints)), budget=values, at_most=values,
       grids=values, families=values)
def test_configurations_at_budget_arguments(shape, budget, at_most, grids, families):
    result = named_error_or_result(lambda: configurations_at_budget(
        shape, budget, at_most=at_most, grids=grids, families=families))
    if not isinstance(result, Exception):
        for s in result:
            cost = s.n_params(shape)
            assert cost <= budget if at_most else cost == budget


@FUZZ
@given(budgets=values, grids=values, families=values, random_state=values,
       n_iter=st.one_of(huge_ints, values), method=st.sampled_from(["exact", "randomized", "x"]))
def test_search_arguments(budgets, grids, families, random_state, n_iter, method):
    named_error_or_result(lambda: error_vs_budget(
        W, budgets, grids=grids, families=families, random_state=random_state, n_iter=n_iter,
        method=method))
    named_error_or_result(lambda: best_approximation(
        W, budgets, grids=grids, families=families, random_state=random_state))
    named_error_or_result(lambda: error_surface(
        W, grids=grids, families=families, random_state=random_state, max_params=budgets))


@FUZZ
@given(budget=values, n_boot=st.one_of(huge_ints, values), confidence=values, random_state=values,
       family=values, grid=values)
def test_study_and_spectra_arguments(budget, n_boot, confidence, random_state, family, grid):
    named_error_or_result(lambda: compare_many(
        [W, W, W], budget, n_boot=n_boot, confidence=confidence, random_state=random_state,
        progress=False))
    named_error_or_result(lambda: block_spectra(W, family, grid, random_state=random_state))


matrices = st.one_of(
    st.just(np.ma.masked_array(W, mask=W > 1)),
    st.just(W.astype(np.longdouble) * np.longdouble(1e250)),
    st.just(np.array(3.0)),
    st.just(W.astype(np.float16)),
    st.just(W.astype(complex)),
    st.just(W > 0),
    st.lists(st.lists(st.floats(allow_nan=True), min_size=0, max_size=3), max_size=3),
    st.sampled_from([np.full((3, 3), np.inf), np.zeros((0, 3)), np.ones((2, 2, 2)), "W", None]),
)


@FUZZ
@given(X=matrices)
def test_odd_matrices(X):
    result = named_error_or_result(lambda: approximate(X, Global(1)))
    if not isinstance(result, Exception):
        assert np.isfinite(result.error) and 0 <= result.error <= 1 + 1e-12


# -- files --------------------------------------------------------------------------------------


def _npy(a: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, a)
    return buffer.getvalue()


def _npz(a: np.ndarray, compressed: bool) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, W=a, b=a[0])
    return buffer.getvalue()


def _safetensors(a: np.ndarray) -> bytes:
    raw = a.astype("<f4").tobytes()
    header = json_bytes({"W": {"dtype": "F32", "shape": list(a.shape),
                               "data_offsets": [0, len(raw)]}})
    return struct.pack("<Q", len(header)) + header + raw


def json_bytes(obj: object) -> bytes:
    import json

    return json.dumps(obj).encode()


def _mat(a: np.ndarray) -> bytes:
    scipy_io = pytest.importorskip("scipy.io")
    buffer = io.BytesIO()
    scipy_io.savemat(buffer, {"W": a}, do_compression=True)
    return buffer.getvalue()


def _text(a: np.ndarray, delimiter: str) -> bytes:
    buffer = io.StringIO()
    np.savetxt(buffer, a, delimiter=delimiter)
    return buffer.getvalue().encode()


def _image(a: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    pixels = (a * 255).astype(np.uint8) if fmt != "TIFF" else a.astype(np.float32)
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


FORMATS = {
    ".npy": _npy,
    ".npz": lambda a: _npz(a, False),
    ".NPZ": lambda a: _npz(a, True),
    ".safetensors": _safetensors,
    ".mat": _mat,
    ".csv": lambda a: _text(a, ","),
    ".txt": lambda a: _text(a, " "),
    ".png": lambda a: _image(a, "PNG"),
    ".tif": lambda a: _image(a, "TIFF"),
    ".bmp": lambda a: _image(a, "BMP"),
    ".gif": lambda a: _image(a, "GIF"),
    ".jpg": lambda a: _image(a, "JPEG"),
}


@st.composite
def damaged(draw: st.DrawFn) -> tuple[str, bytes, bool]:
    """A file of some format, then truncated, overwritten, extended or given a huge size."""
    suffix = draw(st.sampled_from(sorted(FORMATS)))
    rows, cols = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    a = np.random.default_rng(draw(st.integers(0, 9))).random((rows, cols))
    data = bytearray(FORMATS[suffix](a))
    how = draw(st.sampled_from(["none", "truncate", "flip", "append", "overwrite", "bigshape"]))
    if how == "truncate":
        del data[draw(st.integers(0, max(0, len(data) - 1))):]
    elif how == "flip":
        for _ in range(draw(st.integers(1, 8))):
            k = draw(st.integers(0, len(data) - 1))
            data[k] ^= draw(st.integers(1, 255))
    elif how == "append":
        data += draw(st.binary(min_size=1, max_size=64))
    elif how == "overwrite":
        start = draw(st.integers(0, len(data) - 1))
        patch = draw(st.binary(min_size=1, max_size=16))
        data[start:start + len(patch)] = patch
    elif how == "bigshape":  # the same file claiming a huge shape where the format states one
        data = bytearray(bytes(data).replace(f"({rows}, {cols})".encode(),
                                             b"(1000000, 1000000)", 1)
                         .replace(f"[{rows}, {cols}]".encode(), b"[1000000, 1000000]", 1))
    return suffix, bytes(data), how == "none"


@FUZZ
@given(case=damaged())
def test_damaged_files(tmp_path_factory, case):
    suffix, data, intact = case
    path = tmp_path_factory.mktemp("fuzz") / f"f{suffix}"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        result = named_error_or_result(lambda: read_matrices(path, max_bytes=LIMIT))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * LIMIT
    if intact:
        assert not isinstance(result, Exception), result
        assert all(m.ndim == 2 for m in result.values())


@FUZZ
@given(case=damaged().filter(lambda c: c[0] in (".npz", ".NPZ", ".safetensors")))
def test_damaged_model_files(tmp_path_factory, case):
    from lowrank_blocks.models import open_model

    suffix, data, intact = case
    path = tmp_path_factory.mktemp("fuzz") / f"m{suffix.lower()}"
    path.write_bytes(data)
    listing = named_error_or_result(lambda: open_model(path))
    if isinstance(listing, Exception):
        assert not intact
        return
    for matrix in listing:
        named_error_or_result(matrix.load)


@FUZZ
@given(data=st.binary(max_size=64), gz=st.booleans(), claim=huge_ints)
def test_damaged_idx_files(tmp_path_factory, data, gz, claim):
    import gzip

    from lowrank_blocks.datasets import load_mnist

    assume(claim >= 0 and claim < 2**32)
    folder = tmp_path_factory.mktemp("idx")
    header = struct.pack(">IIII", 0x803, claim, 28, 28)
    images = header + data
    labels = struct.pack(">II", 0x801, claim) + data[:8]
    for name, raw in (("t10k-images-idx3-ubyte", images), ("t10k-labels-idx1-ubyte", labels)):
        (folder / (name + (".gz" if gz else ""))).write_bytes(gzip.compress(raw) if gz else raw)
    named_error_or_result(lambda: load_mnist("test", source="idx", path=folder))


# -- the command line ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def matrix_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "w.npy"
    np.save(path, np.random.default_rng(1).standard_normal((6, 6)))
    return path


option_values = st.one_of(
    st.sampled_from(["0", "-1", "1", "12", "1e3", "2**63", str(2**63), str(10**30), "9" * 5000,
                     "nan", "", "x", "2,4", "2x3", "0x0", ",", "global", "tucker"]),
    st.text(alphabet="0123456789,x-", max_size=8),
)


@settings(FUZZ, max_examples=25)
@given(command=st.sampled_from(["compare", "curve", "surface"]),
       option=st.sampled_from(["--budget", "--budgets", "--points", "--grids", "--families",
                               "--max-fraction", "--rank", "--blocks", "--key"]),
       value=option_values)
def test_command_line_options(capsys, tmp_path_factory, matrix_file, command, option, value):
    out = tmp_path_factory.mktemp("out")
    args = [command, str(matrix_file), option, value]
    if command != "compare":
        args += ["--out", str(out)]
    elif option not in ("--budget", "--rank"):
        args += ["--budget", "24"]
    code = main(args)
    captured = capsys.readouterr()
    assert code in (0, 2), (args, captured.err)
    if code == 2:
        lines = captured.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("lowrank-blocks: error: "), captured.err
        assert len(lines[0]) < 600
