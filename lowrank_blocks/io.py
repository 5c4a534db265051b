"""Reading matrices from files, safe by construction.

This module turns files on disk into two-dimensional NumPy arrays for the
block low-rank analyses of :mod:`lowrank_blocks`. It never executes code
stored in a file:

* NumPy files are read with ``allow_pickle=False``; pickled/object arrays
  are detected from the ``.npy`` header and refused before any data is read.
* ``.safetensors`` files are plain data; their header is validated here
  before any tensor is touched.
* ``.mat`` files are read with :func:`scipy.io.loadmat`, which only decodes
  data (MATLAB objects and function handles are skipped, never run).
* Images are decoded by Pillow restricted to the decoder that matches the
  suffix (a ``.png`` file is only ever parsed as PNG).

Supported suffixes (case-insensitive): ``.npy``, ``.npz``, ``.safetensors``,
``.mat``, ``.csv``, ``.txt``, ``.png``, ``.jpg``, ``.jpeg``, ``.bmp``,
``.gif``, ``.tif``, ``.tiff``.

Errors are uniform across formats:

* a missing path raises :class:`FileNotFoundError` naming the path;
* an unknown suffix, a corrupt or truncated file, a pickled/object array, or
  an array that is not 2-D (where one specific array was asked for) raises
  :class:`ValueError` naming the path (and the array, where there is one);
* a ``key`` that names no array raises an exception that is both a
  :class:`KeyError` and a :class:`ValueError`, listing the available names;
* complex, boolean, string, structured, datetime or object data raises
  :class:`TypeError`.

Only NumPy and the standard library are imported at module level; SciPy,
Pillow and safetensors are imported when a file that needs them is read.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import math
import os
import stat
import struct
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._limits import check_bytes
from ._validate import some_names

__all__ = ["SUPPORTED_SUFFIXES", "read_matrices", "read_matrix"]

_IMAGE_FORMATS: dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".bmp": "BMP",
    ".gif": "GIF",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}

#: Suffixes understood by :func:`read_matrices` (compared case-insensitively).
SUPPORTED_SUFFIXES: tuple[str, ...] = (
    ".npy",
    ".npz",
    ".safetensors",
    ".mat",
    ".csv",
    ".txt",
    *_IMAGE_FORMATS,
)

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # local file header / empty archive
_NPY_MAX_HEADER = 10_000  # numpy's own default limit for header sizes
_SAFETENSORS_MAX_HEADER = 100_000_000  # the limit used by safetensors itself

# safetensors dtype name -> (itemsize in bytes, reason when unsupported).
# BF16 is decoded by hand to float32 (see _read_bf16); F16 stays float16.
_SAFETENSORS_DTYPES: dict[str, tuple[int, str | None]] = {
    "F64": (8, None),
    "F32": (4, None),
    "F16": (2, None),
    "BF16": (2, None),
    "I64": (8, None),
    "I32": (4, None),
    "I16": (2, None),
    "I8": (1, None),
    "U64": (8, None),
    "U32": (4, None),
    "U16": (2, None),
    "U8": (1, None),
    "BOOL": (1, "boolean tensors are not supported"),
    "F8_E4M3": (1, "8-bit float tensors are not supported"),
    "F8_E5M2": (1, "8-bit float tensors are not supported"),
    "F8_E8M0": (1, "8-bit float tensors are not supported"),
    "C64": (8, "complex tensors are not supported"),
}

# MATLAB classes (as reported by scipy.io.whosmat) that are containers or
# text rather than numeric matrices; read_matrices skips them.
_MATLAB_NON_NUMERIC = frozenset(
    {"char", "cell", "struct", "object", "function_handle", "opaque"}
)


class _ReadError(ValueError):
    """A ValueError raised by this module (passes through _library_errors)."""


class _MissingKeyError(KeyError, ValueError):
    """A requested array name is absent; both a KeyError and a ValueError."""

    def __str__(self) -> str:  # KeyError would show the repr of the message
        return str(self.args[0]) if self.args else ""


@dataclass
class _Entry:
    """Metadata of one array in a file, with a way to load its data."""

    name: str
    shape: tuple[int, ...]
    dtype_desc: str
    load: Callable[[], np.ndarray]
    #: reason why the data type is unsupported (-> TypeError), or None
    dtype_problem: str | None = None
    #: the array is a pickled object array (-> ValueError, always)
    pickled: bool = False
    #: not a numeric matrix at all (MATLAB cell/struct/char...): skipped
    #: when scanning a container, an error when asked for by key
    non_numeric: bool = False
    #: bytes the loaded array will take (checked against the memory limit before loading)
    nbytes: int = 0


# ---------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------


def read_matrices(
    path: str | os.PathLike[str],
    *,
    key: str | None = None,
    pattern: str | None = None,
    max_bytes: int | None = None,
) -> dict[str, np.ndarray]:
    """Read every 2-D real matrix stored in a file.

    The format is chosen from the file suffix (case-insensitive):

    ``.npy``
        The single array, named after the file stem. Read with
        ``allow_pickle=False``.
    ``.npz``
        Every array of the archive (or only ``key``), read with
        ``np.load(path, allow_pickle=False)``. Arrays that are not 2-D are
        skipped.
    ``.safetensors``
        Every 2-D tensor (others are skipped). The header is parsed and
        validated here (8-byte little-endian length ``N``, ``N`` bytes of
        JSON ``{name: {dtype, shape, data_offsets}}``, then the data): every
        ``data_offsets`` range must lie inside the file, match
        ``prod(shape) * itemsize`` and the ranges must tile the data
        section exactly. Tensors are read with
        ``safetensors.safe_open(path, framework="numpy")`` (PyTorch is not
        needed), except ``BF16`` tensors, which NumPy cannot represent: their
        raw bytes are read directly and widened to ``float32`` by shifting
        each 16-bit pattern into the high half of a ``uint32``. This is
        exact, since bfloat16 is the upper half of an IEEE float32. ``F16``
        tensors are returned as ``float16``.
    ``.mat``
        Every 2-D numeric variable, read with :func:`scipy.io.loadmat`
        (which decodes data only and never runs code). MATLAB has no 1-D
        arrays, so vectors are ``(1, n)`` or ``(n, 1)`` and scalars ``(1, 1)``.
        Sparse variables are densified (their dense size is checked against
        the memory limit first). Char, cell, struct and object variables and
        the ``__header__``-style entries are skipped, never decoded. MATLAB
        v7.3 (HDF5) files are not supported.
    ``.csv`` / ``.txt``
        :func:`numpy.loadtxt` with a comma delimiter (``.csv``) or
        whitespace (``.txt``), ``#`` comments, and ``ndmin=2``: a single
        row gives a ``(1, n)`` matrix and a single column an ``(n, 1)``
        matrix. Read as UTF-8 (a byte-order mark is skipped; UTF-16 with a
        byte-order mark is read too). Returned as ``float64``; a header row
        is not supported.
    ``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.gif``, ``.tif``, ``.tiff``
        Decoded by Pillow (only with the decoder matching the suffix) and
        returned as ``float64``. Grayscale images keep their stored values:
        8-bit in ``[0, 255]``, 16-bit (PNG, TIFF) in ``[0, 65535]``, 32-bit
        integer and floating-point images (TIFF) as stored, so a float TIFF
        in ``[0, 1]`` stays in ``[0, 1]``. Colour and palette images are
        converted to 8-bit luminance (Pillow mode ``"L"``, alpha dropped),
        values in ``[0, 255]``. Only the first frame of an animated GIF or
        multi-page TIFF is read.

    Only regular files are read (a symbolic link is followed and the file it
    resolves to must be regular): devices such as ``/dev/zero``, FIFOs and
    sockets are refused before they are opened. The memory an array will
    take is checked before it is read or decompressed, from the ``.npy``
    header of every ``.npz`` member (with its declared uncompressed size),
    the ``.safetensors`` header, the variable list of a ``.mat`` file or the
    image size, against one limit: `max_bytes`, else the
    environment variable ``LOWRANK_BLOCKS_MAX_BYTES``, else the memory
    available now.

    Integer arrays are returned with their integer dtype (the caller
    promotes); floating-point arrays keep their precision, except bfloat16
    which becomes float32. Arrays with a non-native byte order are converted
    to native order.

    Parameters
    ----------
    path : str or os.PathLike
        File to read.
    key : str, optional
        Exact name of the one array to read. For single-array formats
        (``.npy``, images, text) the name is the file stem. An array chosen
        by ``key`` must be 2-D and real, otherwise an error is raised rather
        than the array being skipped.
    pattern : str, optional
        :func:`fnmatch.fnmatchcase` glob on array names (case-sensitive),
        e.g. ``"*.weight"``; only matching arrays are read. Mutually
        exclusive with ``key``.
    max_bytes : int, optional
        Memory limit in bytes for the arrays read (default: the environment
        variable ``LOWRANK_BLOCKS_MAX_BYTES``, else the memory available).

    Returns
    -------
    dict of str to numpy.ndarray
        The 2-D matrices by name, in file order (for ``.safetensors``: the
        order of the tensors' data in the file). May be empty when a
        container holds no (matching) 2-D array.

    Raises
    ------
    FileNotFoundError
        If `path` does not exist.
    ValueError
        If the suffix is not supported, `key` and `pattern` are both given,
        the path is not a regular file, the file is corrupt or truncated, an
        array is a pickled object array (refused, never unpickled), or a
        single-array file (or the array named by `key`) is not 2-D.
    MemoryError
        If the arrays would need more memory than the limit: a
        ``MemoryLimitError``, which is also a ``ValueError``, raised before
        anything is read; the message names the file, the size needed and
        how to raise the limit.
    KeyError
        If `key` names no array; the exception is also a ``ValueError`` and
        its message lists the available names.
    TypeError
        If a selected 2-D array is complex, boolean, string, structured,
        datetime or object; select around it with `key` or `pattern`.
    ImportError
        If the optional package needed for the format (``scipy``,
        ``pillow`` or ``safetensors``) is not installed.

    See Also
    --------
    read_matrix : Read exactly one matrix.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from lowrank_blocks.io import read_matrices
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> np.savez(tmp / "layers.npz", w1=np.eye(2), w2=np.ones((2, 3)),
    ...          bias=np.zeros(3))
    >>> mats = read_matrices(tmp / "layers.npz")
    >>> {name: m.shape for name, m in mats.items()}  # 1-D "bias" is skipped
    {'w1': (2, 2), 'w2': (2, 3)}
    >>> list(read_matrices(tmp / "layers.npz", pattern="w2"))
    ['w2']
    """
    for value, what in ((key, "key"), (pattern, "pattern")):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{what}={value!r} must be a string, got {type(value).__name__}")
    if key is not None and pattern is not None:
        raise ValueError(
            f"key={key!r} and pattern={pattern!r} are mutually exclusive: "
            "give at most one of them"
        )
    if max_bytes is not None:
        from ._limits import memory_limit

        memory_limit(max_bytes)  # checks the argument itself
    file = _check_path(path)
    suffix = file.suffix.lower()
    readers: dict[str, Callable[..., dict[str, np.ndarray]]] = {
        ".npy": _read_npy,
        ".npz": _read_npz,
        ".safetensors": _read_safetensors,
        ".mat": _read_mat,
        ".csv": _read_text,
        ".txt": _read_text,
        **dict.fromkeys(_IMAGE_FORMATS, _read_image),
    }
    if suffix in readers:
        return readers[suffix](file, key, pattern, max_bytes)
    raise ValueError(
        f"unsupported file suffix {file.suffix!r} for {str(file)!r}; "
        f"supported suffixes: {', '.join(SUPPORTED_SUFFIXES)}"
    )


def read_matrix(
    path: str | os.PathLike[str], *, key: str | None = None, max_bytes: int | None = None
) -> np.ndarray:
    """Read exactly one 2-D real matrix from a file.

    Same formats, conversions and errors as :func:`read_matrices`.

    Parameters
    ----------
    path : str or os.PathLike
        File to read.
    key : str, optional
        Name of the array to read; needed when the file holds several 2-D
        matrices.
    max_bytes : int, optional
        Memory limit in bytes (see :func:`read_matrices`).

    Returns
    -------
    numpy.ndarray
        The 2-D matrix.

    Raises
    ------
    ValueError
        If the file holds no 2-D matrix, or several and `key` is not given
        (the message lists their names); plus the errors of
        :func:`read_matrices`.

    See Also
    --------
    read_matrices : Read every matrix of a file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from lowrank_blocks.io import read_matrix
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> np.save(tmp / "w.npy", np.arange(6.0).reshape(2, 3))
    >>> read_matrix(tmp / "w.npy")
    array([[0., 1., 2.],
           [3., 4., 5.]])
    >>> np.savez(tmp / "two.npz", a=np.eye(2), b=np.eye(3))
    >>> read_matrix(tmp / "two.npz", key="b").shape
    (3, 3)
    """
    matrices = read_matrices(path, key=key, max_bytes=max_bytes)
    if len(matrices) == 1:
        return next(iter(matrices.values()))
    if not matrices:
        raise ValueError(f"{str(path)!r} contains no 2-D matrix")
    raise ValueError(
        f"{str(path)!r} contains {len(matrices):,} matrices "
        f"({some_names(matrices)}); pass key=... to choose one"
    )


# ---------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------


_FILE_KINDS = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
)


def _check_path(path: str | os.PathLike[str], what: str = "path") -> Path:
    """The path of a regular file, decided on the path a symbolic link resolves to.

    Devices (``/dev/zero`` never ends), FIFOs (block forever) and sockets are refused before
    they are opened: only regular files have a size known in advance.
    """
    try:
        file = Path(os.fspath(path))  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"{what}={path!r} must be a str or os.PathLike, got {type(path).__name__}"
        ) from None
    try:
        info = os.stat(file)  # follows symbolic links
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "No such file", str(file)) from None
    except ValueError as exc:  # an embedded NUL byte
        raise ValueError(f"{what}={str(file)!r} is not a valid path ({exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(errno.EISDIR, "Is a directory, not a file", str(file))
    if not stat.S_ISREG(info.st_mode):
        kind = next((k for test, k in _FILE_KINDS if test(info.st_mode)), "not a regular file")
        resolved = os.path.realpath(file)
        via = f" (it resolves to {resolved!r})" if resolved != os.path.abspath(file) else ""
        raise _ReadError(
            f"{str(file)!r} is {kind}{via}, not a regular file; only regular files are read"
        )
    return file


@contextlib.contextmanager
def _library_errors(file: Path, what: str) -> Iterator[None]:
    """Turn exceptions raised deep inside a reader into a ValueError.

    Missing files, permission problems and memory exhaustion pass through
    unchanged; anything else (``zipfile.BadZipFile``, ``OSError`` from
    Pillow, ``struct.error``, ``json.JSONDecodeError``, ``EOFError``,
    safetensors' errors...) means the file could not be decoded.
    """
    try:
        yield
    except (
        FileNotFoundError,
        PermissionError,
        IsADirectoryError,
        MemoryError,
        _ReadError,
        _MissingKeyError,
    ):
        raise
    except Exception as exc:
        raise ValueError(
            f"cannot read {what} {str(file)!r}: the file is corrupt, truncated "
            f"or not in the expected format ({type(exc).__name__}: {exc})"
        ) from exc


def _dtype_problem(dtype: np.dtype) -> str | None:
    """Why `dtype` is not a supported matrix dtype, or None if it is."""
    if dtype.fields is not None or dtype.kind == "V":
        return "structured/void arrays are not supported"
    kind = dtype.kind
    if kind in "iuf":
        return None
    if kind == "c":
        return "complex arrays are not supported"
    if kind == "b":
        return "boolean arrays are not supported"
    if kind in "US":
        return "string arrays are not supported"
    if kind in "Mm":
        return "datetime/timedelta arrays are not supported"
    if kind == "O":
        return "object arrays are not supported"
    return f"dtype kind {kind!r} is not supported"  # pragma: no cover


def _native(array: np.ndarray) -> np.ndarray:
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array


def _pickle_refused(file: Path, name: str) -> ValueError:
    return _ReadError(
        f"array {name!r} in {str(file)!r} is a pickled object array; "
        "pickled/object arrays are refused because unpickling can execute "
        "arbitrary code (files are read with allow_pickle=False)"
    )


def _select(
    file: Path,
    entries: list[_Entry],
    key: str | None,
    pattern: str | None,
    *,
    single: bool,
) -> list[_Entry]:
    """Choose and validate the entries to load.

    In a container (``single=False``) scanned without `key`, entries that
    are not 2-D or not numeric are skipped; an entry named by `key`, or the
    one array of a single-array file, must be a 2-D matrix.
    """
    if key is not None:
        chosen = [entry for entry in entries if entry.name == key]
        if not chosen:
            available = some_names(entry.name for entry in entries)
            raise _MissingKeyError(
                f"no array named {key!r} in {str(file)!r}; available: "
                f"{available or '(none)'}"
            )
        strict = True
    else:
        chosen = [
            entry
            for entry in entries
            if pattern is None or fnmatch.fnmatchcase(entry.name, pattern)
        ]
        strict = single

    selected = []
    for entry in chosen:
        if entry.pickled:
            raise _pickle_refused(file, entry.name)
        if entry.non_numeric or len(entry.shape) != 2:
            if not strict:
                continue
            if entry.non_numeric:
                raise TypeError(
                    f"array {entry.name!r} in {str(file)!r} is a "
                    f"{entry.dtype_desc}, not a numeric matrix"
                )
            raise ValueError(
                f"array {entry.name!r} in {str(file)!r} has shape "
                f"{entry.shape} ({len(entry.shape)}-D); a 2-D matrix is required"
            )
        if entry.dtype_problem is not None:
            raise TypeError(
                f"array {entry.name!r} in {str(file)!r} has dtype "
                f"{entry.dtype_desc}: {entry.dtype_problem}; only real integer "
                "and floating-point matrices can be read"
            )
        selected.append(entry)
    return selected


def _load_all(
    file: Path, what: str, entries: list[_Entry], max_bytes: int | None = None
) -> dict[str, np.ndarray]:
    _check_entries(file, entries, max_bytes)
    result: dict[str, np.ndarray] = {}
    for entry in entries:
        with _library_errors(file, what):
            array = entry.load()
        result[entry.name] = _native(array)
    return result


def _check_entries(file: Path, entries: list[_Entry], max_bytes: int | None) -> None:
    """The memory of every selected array together, against the limit, before loading any."""
    total = sum(entry.nbytes for entry in entries)
    if entries and total:
        names = (f"array {entries[0].name!r}" if len(entries) == 1
                 else f"{len(entries):,} arrays")
        check_bytes(total, f"reading {names} from {str(file)!r}", max_bytes=max_bytes,
                    argument="max_bytes")


def _numpy_entry(
    name: str, shape: tuple[int, ...], dtype: np.dtype, load: Callable[[], np.ndarray]
) -> _Entry:
    shape = tuple(int(n) for n in shape)
    return _Entry(
        name=name,
        shape=shape,
        dtype_desc=str(dtype),
        load=load,
        dtype_problem=_dtype_problem(dtype),
        pickled=dtype.hasobject,
        nbytes=math.prod(shape) * dtype.itemsize,
    )


def _import_error(what: str, pip_name: str, exc: ImportError) -> ImportError:
    err = ImportError(
        f"reading {what} files requires the {pip_name!r} package; "
        f"install it with `pip install {pip_name}`"
    )
    err.__cause__ = exc
    return err


# ---------------------------------------------------------------------------
# NumPy .npy / .npz
# ---------------------------------------------------------------------------


def _read_npy_header(fp: Any, file: Path, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from an ``.npy`` header, without touching the data."""
    start = fp.read(len(_NPY_MAGIC))
    if start != _NPY_MAGIC:
        if start[:1] == b"\x80":
            raise ValueError(
                f"{name!r} in {str(file)!r} is a pickle, not an .npy array; "
                "pickled data is refused because unpickling can execute "
                "arbitrary code"
            )
        raise ValueError(
            f"{name!r} in {str(file)!r} is not an .npy array (bad magic "
            f"{start!r}); the file is corrupt or in another format"
        )
    with _library_errors(file, ".npy"):
        version = struct.unpack("<BB", _read_exactly(fp, 2))
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(
                fp, max_header_size=_NPY_MAX_HEADER
            )
        elif version in ((2, 0), (3, 0)):
            # 3.0 only differs by allowing UTF-8 in structured field names,
            # which are refused anyway.
            shape, _, dtype = np.lib.format.read_array_header_2_0(
                fp, max_header_size=_NPY_MAX_HEADER
            )
        else:
            raise _ReadError(
                f"{name!r} in {str(file)!r} has an unknown .npy format "
                f"version {version}"
            )
    return tuple(shape), dtype


def _read_exactly(fp: Any, n: int) -> bytes:
    data = fp.read(n)
    if len(data) != n:
        raise EOFError(f"expected {n} bytes, got {len(data)}")
    return data


def _read_npy(
    file: Path, key: str | None, pattern: str | None, max_bytes: int | None = None
) -> dict[str, np.ndarray]:
    name = file.stem
    with open(file, "rb") as fp:
        shape, dtype = _read_npy_header(fp, file, name)
        if not dtype.hasobject:
            available = os.fstat(fp.fileno()).st_size - fp.tell()
            needed = math.prod(shape) * dtype.itemsize
            if available < needed:
                raise ValueError(
                    f"{str(file)!r} is truncated: array {name!r} of shape "
                    f"{shape} and dtype {dtype} needs {needed} bytes of data "
                    f"but only {available} are present"
                )

    def load() -> np.ndarray:
        return np.load(file, allow_pickle=False)

    entry = _numpy_entry(name, shape, dtype, load)
    selected = _select(file, [entry], key, pattern, single=True)
    return _load_all(file, ".npy", selected, max_bytes)


def _npz_name(member: str) -> str:
    return member[:-4] if member.endswith(".npy") else member


def npz_members(file: Path, zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The archive's members by array name (``np.savez`` stores ``name.npy``)."""
    members: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        if not info.is_dir():
            members.setdefault(_npz_name(info.filename), info)
    return members


def npz_member_header(
    file: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo
) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one ``.npz`` member from the first bytes of its stream.

    Only the ``.npy`` header is decompressed; the size it describes must agree with the
    member's declared uncompressed size (which bounds what the decompressor may return), so
    a member cannot claim a small array and then inflate to a large one.
    """
    name = _npz_name(info.filename)
    with _library_errors(file, ".npz"), zf.open(info) as fp:
        shape, dtype = _read_npy_header(fp, file, name)
        header_size = fp.tell()
    if not dtype.hasobject:
        data = math.prod(shape) * dtype.itemsize
        if header_size + data != info.file_size:
            raise _ReadError(
                f"array {name!r} in {str(file)!r} has a header describing {data:,} bytes of "
                f"data (shape {tuple(shape)}, dtype {dtype}) but the archive member declares "
                f"{info.file_size - header_size:,}; the file is corrupt or was tampered with"
            )
    return tuple(int(n) for n in shape), dtype


def _open_npz(file: Path) -> zipfile.ZipFile:
    with open(file, "rb") as fp:
        magic = fp.read(4)
    if magic not in _ZIP_MAGICS:
        raise _ReadError(
            f"{str(file)!r} is not an .npz (zip) archive (starts with "
            f"{magic!r}); the file is corrupt or in another format"
        )
    with _library_errors(file, ".npz"):
        return zipfile.ZipFile(file)


def _read_npz(
    file: Path, key: str | None, pattern: str | None, max_bytes: int | None = None
) -> dict[str, np.ndarray]:
    with _open_npz(file) as zf:
        members = npz_members(file, zf)
        if key is not None:
            wanted = [key] if key in members else []
        else:
            wanted = [n for n in members if pattern is None or fnmatch.fnmatchcase(n, pattern)]
        wanted_set = set(wanted)
        entries = []
        for name, info in members.items():
            if name not in wanted_set:
                # not requested: a placeholder so that a missing key lists every name
                entries.append(_Entry(name, (), "", load=lambda: np.empty(0), non_numeric=True))
                continue
            shape, dtype = npz_member_header(file, zf, info)

            def load(info: zipfile.ZipInfo = info) -> np.ndarray:
                with zf.open(info) as fp:
                    return np.lib.format.read_array(fp, allow_pickle=False)

            entries.append(_numpy_entry(name, shape, dtype, load))
        # Object arrays were refused from their headers; allow_pickle=False in read_array is a
        # second safety net.
        selected = _select(file, entries, key, pattern, single=False)
        return _load_all(file, ".npz", selected, max_bytes)


# ---------------------------------------------------------------------------
# safetensors
# ---------------------------------------------------------------------------


def _corrupt(file: Path, detail: str) -> ValueError:
    return _ReadError(
        f"{str(file)!r} is not a valid .safetensors file ({detail}); "
        "it is corrupt or truncated"
    )


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for k, v in pairs:
        if k in result:
            raise ValueError(f"duplicate key {k!r} in JSON header")
        result[k] = v
    return result


def _parse_safetensors_header(file: Path) -> tuple[int, list[dict[str, Any]]]:
    """Validate the header; return the data start and the tensors in data order."""
    file = _check_path(file)
    size = file.stat().st_size
    with open(file, "rb") as fp:
        prefix = fp.read(8)
        if len(prefix) < 8:
            raise _corrupt(file, f"only {size} bytes, less than the 8-byte header length")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > _SAFETENSORS_MAX_HEADER:
            raise _corrupt(file, f"header length {header_len} is implausibly large")
        if 8 + header_len > size:
            raise _corrupt(
                file,
                f"header length {header_len} exceeds the {size - 8} bytes "
                "after the length field",
            )
        raw = fp.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _corrupt(file, f"header is not valid JSON: {exc}") from exc
    except RecursionError:
        raise _corrupt(file, "header JSON is nested too deeply") from None
    if not isinstance(header, dict):
        raise _corrupt(file, "header is not a JSON object")

    data_start = 8 + header_len
    data_len = size - data_start
    tensors = []
    for order, (name, info) in enumerate(header.items()):
        if name == "__metadata__":
            continue
        if not (
            isinstance(info, dict)
            and isinstance(info.get("dtype"), str)
            and isinstance(info.get("shape"), list)
            and isinstance(info.get("data_offsets"), list)
        ):
            raise _corrupt(file, f"entry {name!r} lacks dtype/shape/data_offsets")
        shape = info["shape"]
        offsets = info["data_offsets"]
        if not all(type(n) is int and n >= 0 for n in shape):
            raise _corrupt(file, f"tensor {name!r} has an invalid shape {shape!r}")
        if not (
            len(offsets) == 2
            and all(type(n) is int and n >= 0 for n in offsets)
            and offsets[0] <= offsets[1]
        ):
            raise _corrupt(
                file, f"tensor {name!r} has invalid data_offsets {offsets!r}"
            )
        begin, end = offsets
        if end > data_len:
            raise _corrupt(
                file,
                f"tensor {name!r} claims bytes [{begin}, {end}) but the data "
                f"section has only {data_len} bytes",
            )
        dtype = info["dtype"]
        if dtype in _SAFETENSORS_DTYPES:
            itemsize = _SAFETENSORS_DTYPES[dtype][0]
            expected = math.prod(shape) * itemsize
            if end - begin != expected:
                raise _corrupt(
                    file,
                    f"tensor {name!r} of shape {shape} and dtype {dtype} needs "
                    f"{expected} bytes but its data_offsets span {end - begin}",
                )
        tensors.append(
            {
                "name": name,
                "dtype": dtype,
                "shape": tuple(shape),
                "begin": begin,
                "end": end,
                "order": order,
            }
        )

    tensors.sort(key=lambda t: (t["begin"], t["end"], t["order"]))
    position = 0
    for tensor in tensors:
        if tensor["begin"] != position:
            raise _corrupt(
                file,
                f"tensor {tensor['name']!r} starts at byte {tensor['begin']} "
                f"of the data section instead of {position} (gap or overlap)",
            )
        position = tensor["end"]
    if position != data_len:
        raise _corrupt(
            file,
            f"tensors cover {position} bytes but the data section has {data_len}",
        )
    return data_start, tensors


def _read_bf16(file: Path, offset: int, nbytes: int, shape: tuple[int, ...]) -> np.ndarray:
    """Read a little-endian bfloat16 tensor as float32.

    bfloat16 is the upper 16 bits of an IEEE float32, so shifting each
    16-bit pattern into the high half of a uint32 gives the exact value.
    """
    with open(file, "rb") as fp:
        fp.seek(offset)
        raw = _read_exactly(fp, nbytes)
    bits = np.frombuffer(raw, dtype="<u2").astype("<u4") << 16
    return bits.view("<f4").astype(np.float32).reshape(shape)


def _read_safetensors(
    file: Path, key: str | None, pattern: str | None, max_bytes: int | None = None
) -> dict[str, np.ndarray]:
    try:
        from safetensors import safe_open
    except ImportError as exc:
        raise _import_error(".safetensors", "safetensors", exc) from exc

    data_start, tensors = _parse_safetensors_header(file)
    with contextlib.ExitStack() as stack:
        handle: list[Any] = []  # the safe_open handle, opened on first use

        def loader(tensor: dict[str, Any]) -> Callable[[], np.ndarray]:
            def load() -> np.ndarray:
                if tensor["dtype"] == "BF16":
                    return _read_bf16(
                        file,
                        data_start + tensor["begin"],
                        tensor["end"] - tensor["begin"],
                        tensor["shape"],
                    )
                if not handle:
                    handle.append(
                        stack.enter_context(safe_open(str(file), framework="numpy"))
                    )
                array = handle[0].get_tensor(tensor["name"])
                if not array.flags.writeable:
                    array = array.copy()
                return array

            return load

        entries = []
        for tensor in tensors:
            dtype = tensor["dtype"]
            _, problem = _SAFETENSORS_DTYPES.get(
                dtype, (0, f"safetensors dtype {dtype!r} is not supported")
            )
            raw = tensor["end"] - tensor["begin"]
            entries.append(
                _Entry(
                    name=tensor["name"],
                    shape=tensor["shape"],
                    dtype_desc=dtype,
                    load=loader(tensor),
                    dtype_problem=problem,
                    nbytes=3 * raw if dtype == "BF16" else raw,  # BF16: raw + float32
                )
            )
        selected = _select(file, entries, key, pattern, single=False)
        return _load_all(file, ".safetensors", selected, max_bytes)


# ---------------------------------------------------------------------------
# MATLAB .mat
# ---------------------------------------------------------------------------


# Bytes per element of a loaded MATLAB variable, by the class whosmat reports (sparse
# variables are densified to float64).
_MATLAB_ITEMSIZE = {
    "double": 8, "single": 4, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "int32": 4,
    "uint32": 4, "int64": 8, "uint64": 8, "logical": 1, "sparse": 8,
}


def _read_mat(
    file: Path, key: str | None, pattern: str | None, max_bytes: int | None = None
) -> dict[str, np.ndarray]:
    try:
        import scipy.io
        import scipy.sparse
    except ImportError as exc:
        raise _import_error(".mat", "scipy", exc) from exc

    with _library_errors(file, ".mat"):
        try:
            variables = scipy.io.whosmat(file)
        except NotImplementedError as exc:  # v7.3 / HDF5 files
            raise _ReadError(
                f"{str(file)!r} is a MATLAB v7.3 (HDF5) file, which is not "
                "supported; re-save it with -v7 or read it with h5py"
            ) from exc

    # Placeholders from the variable list: nothing is decoded before the selection and the
    # memory check (a 1 KB file can hold a 100000 × 100000 sparse matrix).
    entries = []
    for name, shape, cls in variables:
        shape = tuple(int(n) for n in shape)
        non_numeric = cls in _MATLAB_NON_NUMERIC or cls not in _MATLAB_ITEMSIZE
        problem = "boolean (logical) arrays are not supported" if cls == "logical" else None
        entries.append(
            _Entry(
                name=name,
                shape=shape,
                dtype_desc=f"MATLAB {cls}",
                load=lambda: np.empty(0),
                dtype_problem=problem,
                non_numeric=non_numeric,
                nbytes=math.prod(shape) * _MATLAB_ITEMSIZE.get(cls, 8),
            )
        )
    selected = _select(file, entries, key, pattern, single=False)
    _check_entries(file, selected, max_bytes)
    if not selected:
        return {}
    with _library_errors(file, ".mat"):
        loaded = scipy.io.loadmat(file, variable_names=[e.name for e in selected])

    result: dict[str, np.ndarray] = {}
    for entry in selected:
        value = loaded[entry.name]
        if scipy.sparse.issparse(value):
            array = np.asarray(value.toarray())
        else:
            array = np.asarray(value)
        problem = _dtype_problem(array.dtype)
        if problem is not None or array.ndim != 2:  # complex: whosmat reports 'double'
            raise TypeError(
                f"array {entry.name!r} in {str(file)!r} has dtype {entry.dtype_desc} "
                f"({array.dtype}): {problem or 'not a 2-D matrix'}; only real integer and "
                "floating-point matrices can be read"
            )
        result[entry.name] = _native(array)
    return result


# ---------------------------------------------------------------------------
# text and images
# ---------------------------------------------------------------------------


def _text_encoding(file: Path) -> str:
    """UTF-8 (a byte-order mark skipped), or UTF-16 when the file starts with its mark."""
    with open(file, "rb") as fp:
        start = fp.read(2)
    return "utf-16" if start in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"


def _read_text(
    file: Path, key: str | None, pattern: str | None, max_bytes: int | None = None
) -> dict[str, np.ndarray]:
    delimiter = "," if file.suffix.lower() == ".csv" else None
    what = f"{file.suffix.lower()} text"
    with _library_errors(file, what), warnings.catch_warnings():
        # an empty file is reported below as a ValueError, not as a warning
        warnings.filterwarnings("ignore", "loadtxt: input contained no data")
        with open(file, encoding=_text_encoding(file), errors="strict", newline="") as fh:
            array = np.loadtxt(fh, delimiter=delimiter, ndmin=2, dtype=np.float64)
    if array.size == 0:
        raise ValueError(f"{str(file)!r} contains no numbers")
    entry = _numpy_entry(file.stem, array.shape, array.dtype, lambda: array)
    entry.nbytes = 0  # already in memory (a text file's numbers take at most 4× its size)
    return _load_all(file, "text", _select(file, [entry], key, pattern, single=True), max_bytes)


# Pillow modes whose values are read as stored (no 8-bit conversion): 16-bit and 32-bit
# integer and 32-bit floating-point grayscale.
_EXACT_MODES = ("I", "F", "I;16", "I;16L", "I;16B", "I;16N")


def _read_image(
    file: Path, key: str | None, pattern: str | None, max_bytes: int | None = None
) -> dict[str, np.ndarray]:
    try:
        from PIL import Image
    except ImportError as exc:
        raise _import_error("image", "pillow", exc) from exc

    image_format = _IMAGE_FORMATS[file.suffix.lower()]
    with _library_errors(file, f"{image_format} image"), warnings.catch_warnings():
        # the size is checked against the memory limit below, before decoding
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(file, formats=[image_format])
    with image:
        width, height = image.size
        exact = image.mode in _EXACT_MODES

        def load() -> np.ndarray:
            image.seek(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                if exact:  # 16-bit, 32-bit integer or float: the stored values
                    return np.asarray(image, dtype=np.float64)
                return np.asarray(image.convert("L"), dtype=np.float64)

        # float64 result plus the decoded image (at most 4 bands of 4 bytes)
        entry = _Entry(file.stem, (height, width), "float64", load,
                       nbytes=height * width * (8 + 16))
        selected = _select(file, [entry], key, pattern, single=True)
        return _load_all(file, f"{image_format} image", selected, max_bytes)
