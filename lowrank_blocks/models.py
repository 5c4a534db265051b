"""Every weight matrix of a model, named and read lazily: checkpoints, PEFT adapters, updates.

:func:`open_model` lists the two-dimensional weights of a model from its headers and metadata
alone, without reading a single tensor; each :class:`NamedMatrix` reads its own matrix when
:meth:`NamedMatrix.load` is called, so an analysis holds one tensor in memory at a time, however
large the checkpoint. Sources:

* a ``.safetensors`` file; a sharded checkpoint (its ``model.safetensors.index.json``, or the
  directory holding it, every shard checked to exist); a model directory with
  ``model.safetensors`` (what ``save_pretrained`` writes);
* a ``.npz`` archive, read lazily with ``allow_pickle=False``;
* a PyTorch ``state_dict`` (a mapping of names to tensors or NumPy arrays) or a
  ``torch.nn.Module`` (its ``state_dict()``), passed in Python;
* a PEFT adapter directory (``adapter_config.json`` + ``adapter_model.safetensors``): one matrix
  per adapted module, its update ``ΔW`` (see below);
* the update between two checkpoints: ``open_model(fine_tuned, base=base)`` gives
  ``fine_tuned − base`` tensor by tensor, names and shapes checked.

Biases and other 1-D tensors, integer and boolean buffers (``position_ids``), tensors of more
than two dimensions (4-D convolution kernels unless ``reshape_conv=True``) and matrices too small
for any block structure are never analysed by mistake: they are listed in
``ModelMatrices.skipped``, each with its reason.

PEFT adapters
-------------
LoRA (``peft_type`` ``"LORA"``): the keys ``<module>.lora_A.weight`` (``r × in``) and
``<module>.lora_B.weight`` (``out × r``) give ``ΔW = scaling · B A`` with PEFT's own rule:
``scaling = lora_alpha / r``, or ``lora_alpha / √r`` with ``use_rslora``, where ``r`` and
``lora_alpha`` come from ``rank_pattern`` / ``alpha_pattern`` when a pattern matches the module
(matched as PEFT matches them: the pattern is a regular expression for the end of the module
path, after a dot); ``fan_in_fan_out`` transposes ``ΔW``. Embedding adapters
(``lora_embedding_A`` / ``lora_embedding_B``) give the ``num_embeddings × dim`` update, and
convolution adapters the kernel update ``out × in × kh × kw`` (an ``out × (in·kh·kw)`` matrix with
``reshape_conv=True``; ``groups = 1`` is assumed).

GraLoRA (``peft_type`` ``"GRALORA"``, ``GraloraConfig(r, gralora_k)``): the keys
``<module>.gralora_A`` (``k × in/k × r``) and ``<module>.gralora_B`` (``k × r × out/k``) hold a
``k × k`` grid of sub-adapters of rank ``s = r / k``; block ``(j, n)`` of ``ΔW`` (output block
``j``, input block ``n``) is ``B[j][n s : (n+1) s]ᵀ · A[n][:, j s : (j+1) s]ᵀ``, the layout of
PEFT's ``GraloraLayer.get_delta_weight``; a hybrid part (``hybrid_r > 0``,
``gralora_A_general`` / ``gralora_B_general``) is added as a plain LoRA product, and the whole is
scaled by ``alpha / (r + hybrid_r)``.

The rows are named by module path: the key without ``.lora_A.weight`` (for example
``base_model.model.encoder.layer.0.attention.self.query``), the name of the module in the PEFT
model. Everything else stored in an adapter (``modules_to_save`` copies, ``lora_B`` biases) is
listed as skipped. DoRA adapters are refused: their update depends on the base weights.

Safety
------
Nothing executes file content: ``.safetensors`` headers are validated before use (by the parser
of :mod:`lowrank_blocks.io`), ``.npz`` members are read with ``allow_pickle=False``, JSON files
with ``json``; pickled checkpoints (``pytorch_model.bin``, ``adapter_model.bin``) are refused
with a message that says how to convert them. Only NumPy and the standard library are imported
here; PyTorch is touched only for tensors that are passed in.

Every :class:`NamedMatrix` can be pickled (it holds a path, a key and offsets, or the tensor
itself for sources passed in memory), so the matrices can be loaded in other processes.

Examples
--------
>>> import pathlib, tempfile
>>> import numpy as np
>>> from lowrank_blocks.models import open_model
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> rng = np.random.default_rng(0)
>>> np.savez(tmp / "net.npz", **{"fc1.weight": rng.standard_normal((8, 4)),
...          "fc1.bias": np.zeros(8), "fc2.weight": rng.standard_normal((2, 8))})
>>> mm = open_model(tmp / "net.npz")
>>> mm.kind, [(m.name, m.shape) for m in mm]
('npz', [('fc1.weight', (8, 4)), ('fc2.weight', (2, 8))])
>>> [(s.name, s.reason) for s in mm.skipped]
[('fc1.bias', '1-D tensor (a bias, a normalisation scale or a buffer), not a matrix')]
>>> mm["fc2.weight"].load().shape
(2, 8)
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import re
import struct
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._limits import check_bytes
from ._validate import some_names
from .io import (
    _check_path,
    _open_npz,
    _parse_safetensors_header,
    npz_member_header,
    npz_members,
)

__all__ = ["ModelMatrices", "NamedMatrix", "Skipped", "open_model"]

KINDS = (
    "checkpoint",
    "state_dict",
    "module",
    "npz",
    "lora adapter",
    "gralora adapter",
    "difference",
)

_ADAPTER_CONFIG = "adapter_config.json"
_ADAPTER_WEIGHTS = "adapter_model.safetensors"
_SINGLE_CHECKPOINT = "model.safetensors"
_SHARDED_INDEX = "model.safetensors.index.json"
_PICKLED = ("pytorch_model.bin", "adapter_model.bin", "model.pt", "model.pth", "model.ckpt")
_PEFT_PREFIX = "base_model.model."
_WHAT_A_SOURCE_IS = (
    "a .safetensors file, a sharded checkpoint's *.safetensors.index.json, a model directory "
    "(model.safetensors or model.safetensors.index.json), a .npz file, a PEFT adapter "
    "directory (adapter_config.json + adapter_model.safetensors), a state_dict (a mapping of "
    "names to tensors or NumPy arrays) or a torch.nn.Module"
)

# safetensors dtype -> the name used here (NumPy's, plus 'bfloat16' and the float8 names).
_ST_DTYPE_NAMES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
    "C64": "complex64",
}
# safetensors dtypes read here, with the NumPy dtype their raw bytes are read as.
_ST_READ_AS = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2"}
_FLOAT_NAMES = ("float16", "bfloat16", "float32", "float64")
_DTYPE_WIDTH = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


# ---------------------------------------------------------------------------
# public classes
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Skipped:
    """A tensor of the source that is not analysed, and why.

    Attributes
    ----------
    name : str
        The tensor's key (for adapters: the stored key).
    shape : tuple of int
        Its shape as stored.
    reason : str
        Why it is not a matrix to analyse (1-D, integer buffer, too small, ...).
    """

    name: str
    shape: tuple[int, ...]
    reason: str


@dataclass(frozen=True)
class NamedMatrix:
    """One weight matrix of a model, read from its source only when :meth:`load` is called.

    Attributes
    ----------
    name : str
        The tensor's key; for adapters the module path (the key without ``.lora_A.weight``,
        ``.gralora_A``, ...).
    shape : tuple of (int, int)
        Shape of the matrix :meth:`load` returns (a reshaped convolution kernel:
        ``(out, in·kh·kw)``).
    dtype : str
        The stored precision: ``'float32'``, ``'bfloat16'``, ``'float16'`` or ``'float64'``
        (for adapters the precision of the factors; for a difference the wider of the two).
    reader : object
        How to read it: a small picklable description (file, key, byte offsets; the tensor
        itself for sources passed in memory). Not part of comparisons or the repr.
    """

    name: str
    shape: tuple[int, int]
    dtype: str
    reader: Any = field(repr=False, compare=False)

    @property
    def size(self) -> int:
        """Number of entries, ``rows × cols``."""
        return self.shape[0] * self.shape[1]

    def load(self) -> np.ndarray:
        """Read the matrix now.

        Returns
        -------
        numpy.ndarray
            A new, writeable 2-D array of shape ``shape``: ``float32`` for weights stored in
            ``float32``, ``float16`` or ``bfloat16`` (both converted exactly), ``float64`` for
            ``float64`` weights, adapter updates and differences.

        Raises
        ------
        ValueError
            If the file was truncated or changed since it was listed (the message names the
            file and the key).
        MemoryError
            If the matrix would need more memory than the limit (``LOWRANK_BLOCKS_MAX_BYTES``,
            else the memory available): a ``MemoryLimitError``, also a ``ValueError``, raised
            before reading.
        """
        itemsize = 4 if self.dtype in ("float32", "float16", "bfloat16") else 8
        check_bytes(2 * self.size * itemsize,
                    f"reading {self.name!r} from {self.reader.where()}")
        array = self.reader.load()
        if array.shape != self.shape:
            if array.ndim > 2 and (array.shape[0], math.prod(array.shape[1:])) == self.shape:
                array = array.reshape(self.shape)
            else:
                raise ValueError(
                    f"{self.name!r} from {self.reader.where()} has shape {array.shape}, but "
                    f"shape {self.shape} was listed: the source changed since it was opened"
                )
        return array


@dataclass(eq=False)
class ModelMatrices:
    """The matrices of a model (what :func:`open_model` returns); nothing is loaded yet.

    Iterating over it, ``len`` and indexing (by position or by name) refer to ``matrices``.

    Attributes
    ----------
    matrices : list of NamedMatrix
        The matrices to analyse, in the order of the source (file order for checkpoints).
    skipped : list of Skipped
        Every tensor that is not analysed, with its reason.
    kind : str
        ``'checkpoint'``, ``'state_dict'``, ``'module'``, ``'npz'``, ``'lora adapter'``,
        ``'gralora adapter'`` or ``'difference'``.
    source : str
        The path read (for in-memory sources a description such as ``'state_dict'``); for a
        difference ``'<source> − <base>'``.
    info : dict
        Plain-JSON facts about the source: for adapters their configuration (``peft_type``,
        ``r``, ``lora_alpha`` or ``alpha``, ``use_rslora``, ``gralora_k``, ``hybrid_r``,
        ``target_modules``, ``base_model_name_or_path``, ...); for a difference the ``source``
        and ``base`` kinds; empty otherwise.
    """

    matrices: list[NamedMatrix]
    skipped: list[Skipped]
    kind: str
    source: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.matrices)

    def __iter__(self) -> Iterator[NamedMatrix]:
        return iter(self.matrices)

    def __getitem__(self, item: int | str) -> NamedMatrix:
        if isinstance(item, str):
            for matrix in self.matrices:
                if matrix.name == item:
                    return matrix
            skipped = next((s for s in self.skipped if s.name == item), None)
            if skipped is not None:
                raise KeyError(f"{item!r} was skipped: {skipped.reason}")
            raise KeyError(f"no matrix named {item!r} in {self.source}")
        return self.matrices[item]

    @property
    def names(self) -> list[str]:
        """The names of ``matrices``, in order."""
        return [m.name for m in self.matrices]

    def __repr__(self) -> str:
        return (
            f"ModelMatrices(kind={self.kind!r}, source={self.source!r}, "
            f"{len(self.matrices)} matrices, {len(self.skipped)} skipped)"
        )


# ---------------------------------------------------------------------------
# open_model
# ---------------------------------------------------------------------------


def open_model(
    source: Any,
    *,
    base: Any = None,
    pattern: str | None = None,
    reshape_conv: bool = False,
    min_side: int = 2,
) -> ModelMatrices:
    """List the weight matrices of a model, a PEFT adapter or an update, without loading them.

    Parameters
    ----------
    source : path, mapping or torch.nn.Module
        A ``.safetensors`` file; a sharded checkpoint's ``*.safetensors.index.json`` or the
        directory holding ``model.safetensors.index.json``; a model directory with
        ``model.safetensors``; a ``.npz`` file; a PEFT adapter directory (detected by its
        ``adapter_config.json``; its ``adapter_model.safetensors`` may be given instead); a
        ``state_dict`` (a mapping of names to ``torch.Tensor`` or :class:`numpy.ndarray`); a
        ``torch.nn.Module`` (its ``state_dict()``).
    base : same kinds as `source`, optional
        When given, every matrix is ``source − base``, tensor by tensor (read in float64): the
        two must hold the same tensor names with the same shapes.
    pattern : str, optional
        :func:`fnmatch.fnmatchcase` glob on the names (case-sensitive), e.g.
        ``"*attention*.weight"``; tensors that do not match are left out altogether (neither
        matrices nor skipped). For adapters it applies to module paths.
    reshape_conv : bool, default False
        Analyse 4-D convolution kernels ``(out, in, kh, kw)`` as ``out × (in·kh·kw)`` matrices;
        by default they are skipped.
    min_side : int, default 2
        Matrices whose smaller side is below this are skipped as too small for a block
        structure.

    Returns
    -------
    ModelMatrices
        ``matrices`` (lazy :class:`NamedMatrix` objects), ``skipped`` (with reasons) and
        ``kind``.

    Raises
    ------
    FileNotFoundError
        If a path does not exist.
    ValueError
        Naming the file or key and what was expected: a directory that is neither a model nor
        an adapter, a corrupt or truncated ``.safetensors`` header, a missing shard, an adapter
        whose ``lora_A`` / ``lora_B`` shapes disagree with each other or with its configuration,
        an unsupported adapter type, a pickled checkpoint, `source` and `base` with different
        tensor names or shapes.
    TypeError
        If `source` is of none of the kinds above, or a ``state_dict`` holds a value that is
        not a tensor or an array (the message names the key).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> import numpy as np
    >>> from lowrank_blocks.models import open_model
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> W = np.arange(12.0).reshape(3, 4)
    >>> np.savez(tmp / "base.npz", w=W, step=np.array([3]))
    >>> np.savez(tmp / "tuned.npz", w=W + 1, step=np.array([4]))
    >>> update = open_model(tmp / "tuned.npz", base=tmp / "base.npz")
    >>> update.kind, len(update), update.skipped[0].name
    ('difference', 1, 'step')
    >>> update["w"].load()
    array([[1., 1., 1., 1.],
           [1., 1., 1., 1.],
           [1., 1., 1., 1.]])
    """
    if pattern is not None and not isinstance(pattern, str):
        raise TypeError(f"pattern must be a string (an fnmatch glob) or None, not {pattern!r}")
    if not isinstance(reshape_conv, (bool, np.bool_)):
        raise TypeError(f"reshape_conv must be True or False, not {reshape_conv!r}")
    if isinstance(min_side, (bool, np.bool_)) or not isinstance(min_side, (int, np.integer)):
        raise TypeError(f"min_side must be an integer >= 1, not {min_side!r}")
    if min_side < 1:
        raise ValueError(f"min_side must be an integer >= 1, not {min_side!r}")

    listing = _listing(source)
    listing.filter(pattern)
    if base is not None:
        base_listing = _listing(base)
        base_listing.filter(pattern)
        listing = _difference(listing, base_listing)
    matrices, skipped = _classify(listing.entries, bool(reshape_conv), int(min_side))
    return ModelMatrices(
        matrices=matrices,
        skipped=listing.skipped + skipped,
        kind=listing.kind,
        source=listing.description,
        info=listing.info,
    )


# ---------------------------------------------------------------------------
# listings: raw tensors (any shape, any dtype) before classification
# ---------------------------------------------------------------------------


@dataclass
class _Raw:
    """One tensor (or adapter update) of a source, before it is classified."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    loader: Any
    #: why its dtype cannot be analysed, or None
    problem: str | None = None


@dataclass
class _Listing:
    kind: str
    description: str
    entries: list[_Raw]
    #: tensors set aside before classification (adapter leftovers), with reasons
    skipped: list[Skipped] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def filter(self, pattern: str | None) -> None:
        if pattern is None:
            return
        self.entries = [e for e in self.entries if fnmatch.fnmatchcase(e.name, pattern)]
        self.skipped = [s for s in self.skipped if fnmatch.fnmatchcase(s.name, pattern)]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {e.name: e.shape for e in self.entries}
        for s in self.skipped:
            shapes.setdefault(s.name, s.shape)
        return shapes


def _listing(source: Any) -> _Listing:
    if isinstance(source, (str, os.PathLike)):
        return _path_listing(Path(os.fspath(source)))
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(source, torch.nn.Module):
        entries = _mapping_entries(source.state_dict(), type(source).__name__)
        return _Listing("module", f"{type(source).__name__} (torch.nn.Module)", entries)
    if isinstance(source, Mapping):
        return _Listing("state_dict", "state_dict", _mapping_entries(source, "state_dict"))
    raise TypeError(
        f"cannot read a model from a {type(source).__module__}.{type(source).__qualname__}; "
        f"expected {_WHAT_A_SOURCE_IS}"
    )


def _path_listing(path: Path) -> _Listing:
    if not path.exists():
        hint = ""
        if len(path.parts) == 2 and not path.suffix:  # looks like a hub id: "org/model"
            hint = "; models are read from local files only, never downloaded from a hub"
        raise FileNotFoundError(f"no such file or directory: {str(path)!r}{hint}")
    if not path.is_dir():
        _check_path(path, "source")  # a regular file: no device, FIFO or socket
    if path.is_dir():
        if (path / _ADAPTER_CONFIG).is_file():
            return _adapter_listing(path)
        if (path / _SINGLE_CHECKPOINT).is_file():
            return _safetensors_listing(path / _SINGLE_CHECKPOINT)
        if (path / _SHARDED_INDEX).is_file():
            return _sharded_listing(path / _SHARDED_INDEX)
        raise ValueError(_not_a_model_dir(path))
    name = path.name
    if name == _ADAPTER_CONFIG or (
        name == _ADAPTER_WEIGHTS and (path.parent / _ADAPTER_CONFIG).is_file()
    ):
        return _adapter_listing(path.parent)
    if name.endswith(".index.json"):
        return _sharded_listing(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _safetensors_listing(path)
    if suffix == ".npz":
        return _npz_listing(path)
    if suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"):
        raise ValueError(_pickle_refused(path))
    raise ValueError(f"cannot read a model from {str(path)!r}: expected {_WHAT_A_SOURCE_IS}")


def _not_a_model_dir(path: Path) -> str:
    found = sorted(p.name for p in path.iterdir())
    pickled = [n for n in found if n in _PICKLED or n.endswith((".bin", ".pt", ".pth"))]
    others = [n for n in found if n.endswith((".safetensors", ".index.json"))]
    hint = ""
    if pickled:
        hint = (
            f"; it holds {some_names(pickled)}, a pickle, which is never read "
            "(unpickling can execute code): re-save it with save_pretrained(..., "
            "safe_serialization=True) or safetensors.torch.save_file"
        )
    elif others:
        hint = f"; pass one of its files instead: {', '.join(map(repr, others[:5]))}"
    shown = some_names(found, limit=10)
    return (
        f"{str(path)!r} is neither a model directory ({_SINGLE_CHECKPOINT} or "
        f"{_SHARDED_INDEX}) nor a PEFT adapter directory ({_ADAPTER_CONFIG} + "
        f"{_ADAPTER_WEIGHTS}); it contains {shown or 'nothing'}{hint}"
    )


def _pickle_refused(path: Path) -> str:
    return (
        f"{str(path)!r} is a pickled PyTorch file, which is never read (unpickling can execute "
        "code); convert it to .safetensors (save_pretrained(..., safe_serialization=True), or "
        "safetensors.torch.save_file(torch.load(path, weights_only=True), 'model.safetensors')) "
        "or pass the state_dict itself"
    )


# --- safetensors -----------------------------------------------------------


def _safetensors_tensors(file: Path) -> list[_Raw]:
    """Every tensor of one .safetensors file, from its validated header (data order)."""
    data_start, tensors = _parse_safetensors_header(file)
    header_len = data_start - 8
    entries = []
    for t in tensors:
        st_dtype = t["dtype"]
        dtype = _ST_DTYPE_NAMES.get(st_dtype, st_dtype)
        problem = _dtype_problem(dtype)
        if problem is None and st_dtype not in _ST_READ_AS:  # pragma: no cover - defensive
            problem = f"safetensors dtype {st_dtype} is not supported"
        loader = _SafetensorsTensor(
            file=str(file),
            key=t["name"],
            header_len=header_len,
            offset=data_start + t["begin"],
            nbytes=t["end"] - t["begin"],
            st_dtype=st_dtype,
            shape=t["shape"],
        )
        entries.append(_Raw(t["name"], t["shape"], dtype, loader, problem))
    return entries


def _safetensors_listing(file: Path) -> _Listing:
    return _Listing("checkpoint", str(file), _safetensors_tensors(file))


def _sharded_listing(index: Path) -> _Listing:
    weight_map = _read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise ValueError(
            f"{str(index)!r} is not a sharded-checkpoint index: expected a JSON object with "
            '"weight_map": {tensor name: shard file name}'
        )
    shards: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        shards.setdefault(shard, []).append(name)
    for shard, names in shards.items():
        if Path(shard).name != shard or shard in ("", ".", ".."):
            raise ValueError(
                f"{str(index)!r}: shard {shard!r} (of tensor {names[0]!r}) is not a plain file "
                "name; shards must lie in the directory of the index"
            )
        if not (index.parent / shard).is_file():
            raise ValueError(
                f"{str(index)!r}: shard {shard!r} is missing from {str(index.parent)!r} (it "
                f"holds {len(names)} tensor(s), e.g. {names[0]!r}); every shard named in the "
                "weight_map must be present"
            )
    entries = []
    for shard, names in shards.items():
        in_shard = {e.name: e for e in _safetensors_tensors(index.parent / shard)}
        for name in names:
            if name not in in_shard:
                raise ValueError(
                    f"{str(index)!r} maps tensor {name!r} to shard {shard!r}, but that shard "
                    "has no such tensor"
                )
        wanted = set(names)
        entries.extend(e for e in in_shard.values() if e.name in wanted)
    return _Listing("checkpoint", str(index), entries)


@dataclass(frozen=True)
class _SafetensorsTensor:
    """One tensor of a .safetensors file: reads its bytes only (header checked unchanged)."""

    file: str
    key: str
    header_len: int
    offset: int
    nbytes: int
    st_dtype: str
    shape: tuple[int, ...]

    def where(self) -> str:
        return repr(self.file)

    def load(self) -> np.ndarray:
        read_as = np.dtype(_ST_READ_AS[self.st_dtype])
        buffer = np.empty(math.prod(self.shape), dtype=read_as)
        with open(self.file, "rb", buffering=0) as fp:
            size = os.fstat(fp.fileno()).st_size
            prefix = fp.read(8)
            end = self.offset + self.nbytes
            if size < end:
                raise ValueError(
                    f"cannot read tensor {self.key!r} from {self.file!r}: it needs bytes "
                    f"[{self.offset}, {end}) but the file has only {size} bytes; it was "
                    "truncated since it was opened"
                )
            if len(prefix) != 8 or struct.unpack("<Q", prefix)[0] != self.header_len:
                raise ValueError(
                    f"cannot read tensor {self.key!r} from {self.file!r}: its header is not "
                    "the one the tensor was listed from; the file was changed since it was "
                    "opened"
                )
            fp.seek(self.offset)
            view = memoryview(buffer).cast("B")
            done = 0
            while done < self.nbytes:
                got = fp.readinto(view[done:])
                if not got:
                    raise ValueError(
                        f"cannot read tensor {self.key!r} from {self.file!r}: the file ended "
                        f"after {done} of its {self.nbytes} bytes (truncated while reading)"
                    )
                done += got
        if self.st_dtype == "BF16":
            # bfloat16 is the upper half of an IEEE float32: exact.
            wide = buffer.astype("<u4")
            wide <<= 16
            array = wide.view("<f4")
        elif self.st_dtype == "F16":
            array = buffer.astype(np.float32)
        else:
            array = buffer
        if not array.dtype.isnative:  # pragma: no cover - big-endian machines only
            array = array.astype(array.dtype.newbyteorder("="))
        return array.reshape(self.shape)


# --- npz -------------------------------------------------------------------


def _npz_listing(file: Path) -> _Listing:
    entries = []
    with _open_npz(file) as zf:
        for name, info in npz_members(file, zf).items():
            shape, dtype = npz_member_header(file, zf, info)
            dtype_name = _numpy_dtype_name(dtype)
            entries.append(
                _Raw(name, tuple(shape), dtype_name, _NpzMember(str(file), name),
                     _dtype_problem(dtype_name))
            )
    return _Listing("npz", str(file), entries)


@dataclass(frozen=True)
class _NpzMember:
    file: str
    key: str

    def where(self) -> str:
        return repr(self.file)

    def load(self) -> np.ndarray:
        file = Path(self.file)
        with _open_npz(file) as zf:
            info = npz_members(file, zf).get(self.key)
            if info is None:
                raise ValueError(
                    f"cannot read array {self.key!r} from {self.file!r}: it is no longer in the "
                    "archive (the file changed since it was opened)"
                )
            shape, dtype = npz_member_header(file, zf, info)  # declared size checked again
            check_bytes(math.prod(shape) * dtype.itemsize,
                        f"reading {self.key!r} from {self.file!r}")
            try:
                with zf.open(info) as fp:
                    array = np.lib.format.read_array(fp, allow_pickle=False)
            except Exception as exc:
                raise ValueError(
                    f"cannot read array {self.key!r} from {self.file!r}: {type(exc).__name__}: "
                    f"{exc}"
                ) from exc
        return _float_array(array)


# --- in-memory state_dicts and modules -------------------------------------


def _mapping_entries(state: Mapping[Any, Any], what: str) -> list[_Raw]:
    torch = sys.modules.get("torch")
    entries = []
    for key, value in state.items():
        if not isinstance(key, str):
            raise TypeError(f"{what} key {key!r} is a {type(key).__name__}; keys must be strings")
        if isinstance(value, np.ndarray):
            dtype = _numpy_dtype_name(value.dtype)
            problem = _dtype_problem(dtype)
        elif torch is not None and isinstance(value, torch.Tensor):
            dtype = str(value.dtype).removeprefix("torch.")
            problem = _dtype_problem(dtype)
            if problem is None and (value.is_meta or value.layout != torch.strided):
                problem = (
                    "a meta tensor (no data)" if value.is_meta else f"a {value.layout} tensor"
                ) + ", not a dense weight"
        else:
            raise TypeError(
                f"{what} value for key {key!r} is a {type(value).__module__}."
                f"{type(value).__qualname__}; expected a torch.Tensor or a numpy.ndarray"
            )
        entries.append(_Raw(key, tuple(int(n) for n in value.shape), dtype,
                            _InMemory(value, key), problem))
    return entries


@dataclass(frozen=True)
class _InMemory:
    """A tensor or array passed in Python; pickling it pickles the data."""

    value: Any
    key: str

    def where(self) -> str:
        return "the state_dict"

    def load(self) -> np.ndarray:
        value = self.value
        if isinstance(value, np.ndarray):
            return _float_array(np.array(value, copy=True))
        torch = sys.modules["torch"]
        tensor = value.detach()
        if tensor.device.type != "cpu":
            tensor = tensor.cpu()
        if tensor.dtype in (torch.float16, torch.bfloat16):
            return tensor.float().numpy()
        return tensor.numpy().copy()


# --- PEFT adapters ---------------------------------------------------------


#: JSON files (adapter configs, shard indexes) larger than this are refused unread.
_MAX_JSON_BYTES = 64 * 1024**2


def _read_json(file: Path) -> dict[str, Any]:
    file = _check_path(file)
    size = file.stat().st_size
    if size > _MAX_JSON_BYTES:
        raise ValueError(
            f"{str(file)!r} is {size:,} bytes, more than the {_MAX_JSON_BYTES:,} allowed for a "
            "JSON configuration or index"
        )
    try:
        data = json.loads(file.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{str(file)!r} is not valid JSON: {exc}") from exc
    except RecursionError:
        raise ValueError(f"{str(file)!r} is not valid JSON: it is nested too deeply") from None
    if not isinstance(data, dict):
        raise ValueError(f"{str(file)!r} does not hold a JSON object")
    return data


def _adapter_listing(directory: Path) -> _Listing:
    config_file = directory / _ADAPTER_CONFIG
    config = _read_json(config_file)
    weights = directory / _ADAPTER_WEIGHTS
    if not weights.is_file():
        pickled = directory / "adapter_model.bin"
        if pickled.is_file():
            raise ValueError(_pickle_refused(pickled))
        raise ValueError(
            f"{str(directory)!r} has {_ADAPTER_CONFIG} but no {_ADAPTER_WEIGHTS}; a PEFT "
            "adapter directory holds both (as written by save_pretrained)"
        )
    peft_type = str(config.get("peft_type", "")).upper()
    tensors = {e.name: e for e in _safetensors_tensors(weights)}
    if peft_type == "LORA":
        return _lora_listing(weights, config, tensors)
    if peft_type == "GRALORA":
        return _gralora_listing(weights, config, tensors)
    raise ValueError(
        f"{str(config_file)!r}: adapter type peft_type={config.get('peft_type')!r} is not "
        "supported; supported: 'LORA' and 'GRALORA'"
    )


def _config_number(config: dict[str, Any], key: str, file: Path, default: Any = None) -> Any:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{str(file)!r}: {key}={value!r} in {_ADAPTER_CONFIG}; expected a number")
    return value


def _pattern_key(patterns: Mapping[str, Any], module: str) -> str:
    """PEFT's ``get_pattern_key``: the first pattern that matches the end of `module`."""
    for key in patterns:
        if re.match(rf"(.*\.)?({key})$", module):
            return key
    return module


def _module_key(name: str) -> str:
    """The module path PEFT matched its patterns against (without the PEFT model prefix)."""
    return name[len(_PEFT_PREFIX):] if name.startswith(_PEFT_PREFIX) else name


_LORA_SUFFIXES = {
    ".lora_A.weight": ("A", "linear"),
    ".lora_B.weight": ("B", "linear"),
    ".lora_embedding_A": ("A", "embedding"),
    ".lora_embedding_B": ("B", "embedding"),
}


def _adapter_info(config: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    info = {k: config[k] for k in keys if k in config}
    return json.loads(json.dumps(info, default=str))


def _lora_listing(file: Path, config: dict[str, Any], tensors: dict[str, _Raw]) -> _Listing:
    where = str(file)
    if config.get("use_dora"):
        raise ValueError(
            f"{str(file.parent / _ADAPTER_CONFIG)!r} is a DoRA adapter (use_dora=true): its "
            "update depends on the base weights and is not a LoRA product; only plain LoRA "
            "updates are supported"
        )
    for flag in ("use_qalora", "use_bdlora"):
        if config.get(flag):
            raise ValueError(
                f"{str(file.parent / _ADAPTER_CONFIG)!r} sets {flag}: this LoRA variant's "
                "update is not scaling · B @ A; it is not supported"
            )
    r_default = _config_number(config, "r", file, 8)
    alpha_default = _config_number(config, "lora_alpha", file, 8)
    rank_pattern = config.get("rank_pattern") or {}
    alpha_pattern = config.get("alpha_pattern") or {}
    use_rslora = bool(config.get("use_rslora", False))
    fan_in_fan_out = bool(config.get("fan_in_fan_out", False))

    modules: dict[str, dict[str, tuple[str, _Raw]]] = {}
    skipped = []
    for key, entry in tensors.items():
        for suffix, (part, layer) in _LORA_SUFFIXES.items():
            if key.endswith(suffix):
                module = key[: -len(suffix)]
                modules.setdefault(module, {})[part] = (layer, entry)
                break
        else:
            reason = (
                "bias of lora_B (lora_bias=true): a vector, not a matrix"
                if key.endswith(".lora_B.bias")
                else "not a LoRA factor (a full weight saved with the adapter, e.g. "
                "modules_to_save): not an update"
            )
            skipped.append(Skipped(key, entry.shape, reason))

    entries = []
    for module, parts in modules.items():
        if "A" not in parts or "B" not in parts:
            have, missing = ("A", "B") if "A" in parts else ("B", "A")
            layer, entry = parts[have]
            raise ValueError(
                f"{where}: {entry.name!r} has no matching lora_{missing} "
                f"({module}{_suffix(missing, layer)!s} expected)"
            )
        (layer_a, a), (layer_b, b) = parts["A"], parts["B"]
        key_b = b.name
        if layer_a != layer_b:
            raise ValueError(f"{where}: {a.name!r} and {key_b!r} are of different layer types")
        current = _module_key(module)
        r_key = _pattern_key(rank_pattern, current)
        alpha_key = _pattern_key(alpha_pattern, current)
        r = rank_pattern.get(r_key, r_default)
        alpha = alpha_pattern.get(alpha_key, alpha_default)
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ValueError(f"{where}: rank r={r!r} for module {module!r} is not a positive integer")
        from_where = (
            f"rank_pattern[{r_key!r}] in {_ADAPTER_CONFIG}"
            if r_key in rank_pattern
            else f"r in {_ADAPTER_CONFIG}"
        )
        for entry in (a, b):
            if entry.problem is not None:
                raise ValueError(f"{where}: {entry.name!r} has dtype {entry.dtype}: {entry.problem}")
        if layer_a == "linear":
            ok = (
                len(a.shape) >= 2
                and len(b.shape) == len(a.shape)
                and a.shape[0] == r
                and b.shape[1] == r
                and all(n == 1 for n in b.shape[2:])
            )
            expected = (
                f"lora_A of shape (r, in{', kh, kw' if len(a.shape) == 4 else ''}) and lora_B of "
                f"shape (out, r{', 1, 1' if len(a.shape) == 4 else ''})"
            )
            out_shape = (b.shape[0], *a.shape[1:])
        else:
            ok = len(a.shape) == 2 and len(b.shape) == 2 and a.shape[0] == r and b.shape[1] == r
            expected = "lora_embedding_A of shape (r, num_embeddings) and lora_embedding_B of shape (dim, r)"
            out_shape = (a.shape[1], b.shape[0]) if len(a.shape) == 2 and len(b.shape) == 2 else ()
        if not ok:
            raise ValueError(
                f"{where}: {a.name!r} has shape {a.shape} and {key_b!r} has shape {b.shape}; "
                f"expected {expected} with r = {r} ({from_where})"
            )
        if use_rslora:
            scaling = alpha / math.sqrt(r)
        else:
            scaling = alpha / r
        transpose = layer_a == "embedding" or (fan_in_fan_out and len(out_shape) == 2)
        if fan_in_fan_out and layer_a == "linear" and len(out_shape) == 2:
            out_shape = out_shape[::-1]
        loader = _LoraUpdate(a=a.loader, b=b.loader, scaling=float(scaling), transpose=transpose,
                             embedding=layer_a == "embedding")
        entries.append(_Raw(module, tuple(int(n) for n in out_shape), _widest(a.dtype, b.dtype),
                            loader))
    info = _adapter_info(config, ("peft_type", "r", "lora_alpha", "use_rslora", "rank_pattern",
                                  "alpha_pattern", "fan_in_fan_out", "target_modules",
                                  "base_model_name_or_path", "task_type", "peft_version"))
    return _Listing("lora adapter", str(file.parent), entries, skipped, info)


def _suffix(part: str, layer: str) -> str:
    return f".lora_{part}.weight" if layer == "linear" else f".lora_embedding_{part}"


@dataclass(frozen=True)
class _LoraUpdate:
    """``scaling · B @ A`` (transposed for embeddings and fan_in_fan_out), in float64."""

    a: Any
    b: Any
    scaling: float
    transpose: bool
    embedding: bool

    def where(self) -> str:
        return self.a.where()

    def load(self) -> np.ndarray:
        A = self.a.load().astype(np.float64, copy=False)
        B = self.b.load().astype(np.float64, copy=False)
        r = A.shape[0]
        delta = B.reshape(B.shape[0], r) @ A.reshape(r, -1)
        delta *= self.scaling
        if A.ndim > 2:  # convolution: (out, in, kh, kw)
            return delta.reshape(B.shape[0], *A.shape[1:])
        return np.ascontiguousarray(delta.T) if self.transpose else delta


def _gralora_listing(file: Path, config: dict[str, Any], tensors: dict[str, _Raw]) -> _Listing:
    where = str(file)
    config_file = str(file.parent / _ADAPTER_CONFIG)
    r = _config_number(config, "r", file, 32)
    k = _config_number(config, "gralora_k", file, 2)
    hybrid_r = _config_number(config, "hybrid_r", file, 0)
    alpha = _config_number(config, "alpha", file, 64)
    fan_in_fan_out = bool(config.get("fan_in_fan_out", False))
    for key, value in (("r", r), ("gralora_k", k)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{config_file!r}: {key}={value!r}; expected a positive integer")
    if not isinstance(hybrid_r, int) or hybrid_r < 0:
        raise ValueError(f"{config_file!r}: hybrid_r={hybrid_r!r}; expected an integer >= 0")
    if r % k:
        raise ValueError(f"{config_file!r}: r={r} is not divisible by gralora_k={k}")
    suffixes = {
        ".gralora_A": "A",
        ".gralora_B": "B",
        ".gralora_A_general.weight": "A_general",
        ".gralora_B_general.weight": "B_general",
    }
    modules: dict[str, dict[str, _Raw]] = {}
    skipped = []
    for key, entry in tensors.items():
        for suffix, part in suffixes.items():
            if key.endswith(suffix):
                modules.setdefault(key[: -len(suffix)], {})[part] = entry
                break
        else:
            skipped.append(Skipped(key, entry.shape, "not a GraLoRA factor (a full weight saved "
                                                      "with the adapter, e.g. modules_to_save): "
                                                      "not an update"))
    entries = []
    for module, parts in modules.items():
        for part in ("A", "B"):
            if part not in parts:
                other = next(iter(parts.values())).name
                raise ValueError(
                    f"{where}: {other!r} has no matching gralora_{part} "
                    f"({module}.gralora_{part} expected)"
                )
        a, b = parts["A"], parts["B"]
        for entry in parts.values():
            if entry.problem is not None:
                raise ValueError(f"{where}: {entry.name!r} has dtype {entry.dtype}: {entry.problem}")
        if not (
            len(a.shape) == 3 and len(b.shape) == 3
            and a.shape[0] == k and b.shape[0] == k and a.shape[2] == r and b.shape[1] == r
        ):
            raise ValueError(
                f"{where}: {a.name!r} has shape {a.shape} and {b.name!r} has shape {b.shape}; "
                f"expected gralora_A of shape (k, in/k, r) and gralora_B of shape (k, r, out/k) "
                f"with k = {k} (gralora_k) and r = {r} (r in {_ADAPTER_CONFIG})"
            )
        out, inp = k * b.shape[2], k * a.shape[1]
        general = (parts.get("A_general"), parts.get("B_general"))
        if hybrid_r > 0:
            ag, bg = general
            if ag is None or bg is None:
                raise ValueError(
                    f"{where}: module {module!r} lacks {module}.gralora_"
                    f"{'A' if ag is None else 'B'}_general.weight, expected with hybrid_r = "
                    f"{hybrid_r} in {_ADAPTER_CONFIG}"
                )
            if ag.shape != (hybrid_r, inp) or bg.shape != (out, hybrid_r):
                raise ValueError(
                    f"{where}: {ag.name!r} has shape {ag.shape} and {bg.name!r} has shape "
                    f"{bg.shape}; expected ({hybrid_r}, {inp}) and ({out}, {hybrid_r}) "
                    f"(hybrid_r = {hybrid_r} in {_ADAPTER_CONFIG})"
                )
        elif any(g is not None for g in general):
            g = next(g for g in general if g is not None)
            raise ValueError(
                f"{where}: {g.name!r} is present but hybrid_r = 0 in {_ADAPTER_CONFIG}"
            )
        loader = _GraloraUpdate(
            a=a.loader, b=b.loader,
            a_general=general[0].loader if hybrid_r else None,
            b_general=general[1].loader if hybrid_r else None,
            k=k, scaling=float(alpha / (r + hybrid_r)), transpose=fan_in_fan_out,
        )
        shape = (inp, out) if fan_in_fan_out else (out, inp)
        entries.append(_Raw(module, shape, _widest(a.dtype, b.dtype), loader))
    info = _adapter_info(config, ("peft_type", "r", "alpha", "gralora_k", "hybrid_r",
                                  "fan_in_fan_out", "target_modules", "base_model_name_or_path",
                                  "task_type", "peft_version"))
    return _Listing("gralora adapter", str(file.parent), entries, skipped, info)


@dataclass(frozen=True)
class _GraloraUpdate:
    """GraLoRA's ``k × k`` grid of rank-``r/k`` blocks (+ a hybrid LoRA part), in float64."""

    a: Any
    b: Any
    a_general: Any
    b_general: Any
    k: int
    scaling: float
    transpose: bool

    def where(self) -> str:
        return self.a.where()

    def load(self) -> np.ndarray:
        A = self.a.load().astype(np.float64, copy=False)  # (k, in/k, r)
        B = self.b.load().astype(np.float64, copy=False)  # (k, r, out/k)
        k, mi, r = A.shape
        mo = B.shape[2]
        s = r // k
        delta = np.empty((k * mo, k * mi))
        for j in range(k):  # output block
            for n in range(k):  # input block
                delta[j * mo:(j + 1) * mo, n * mi:(n + 1) * mi] = (
                    B[j, n * s:(n + 1) * s, :].T @ A[n, :, j * s:(j + 1) * s].T
                )
        if self.a_general is not None:
            delta += self.b_general.load().astype(np.float64) @ self.a_general.load().astype(
                np.float64
            )
        delta *= self.scaling
        return np.ascontiguousarray(delta.T) if self.transpose else delta


# --- differences -----------------------------------------------------------


@dataclass(frozen=True)
class _Difference:
    """``source − base`` in float64."""

    a: Any
    b: Any

    def where(self) -> str:
        return f"{self.a.where()} minus {self.b.where()}"

    def load(self) -> np.ndarray:
        result = self.a.load().astype(np.float64)
        result -= self.b.load()
        return result


def _difference(source: _Listing, base: _Listing) -> _Listing:
    shapes, base_shapes = source.shapes(), base.shapes()
    only_source = [n for n in shapes if n not in base_shapes]
    only_base = [n for n in base_shapes if n not in shapes]
    if only_source or only_base:
        some = some_names

        parts = []
        if only_source:
            parts.append(f"only in the source ({source.description}): {some(only_source)}")
        if only_base:
            parts.append(f"only in the base ({base.description}): {some(only_base)}")
        raise ValueError(
            "the source and the base must hold the same tensors, but they differ: "
            + "; ".join(parts)
        )
    for name, shape in shapes.items():
        if base_shapes[name] != shape:
            raise ValueError(
                f"tensor {name!r} has shape {shape} in the source ({source.description}) but "
                f"{base_shapes[name]} in the base ({base.description}); the difference needs "
                "equal shapes"
            )
    base_entries = {e.name: e for e in base.entries}
    entries = []
    skipped = list(source.skipped)
    for entry in source.entries:
        other = base_entries.get(entry.name)
        if other is None:  # set aside in the base (an adapter leftover)
            skipped.append(Skipped(entry.name, entry.shape, "not an update in the base"))
            continue
        problem = entry.problem or (None if other.problem is None else f"in the base: {other.problem}")
        entries.append(
            _Raw(entry.name, entry.shape, _widest(entry.dtype, other.dtype),
                 _Difference(entry.loader, other.loader), problem)
        )
    info = {"source": source.kind, "base": base.kind}
    return _Listing("difference", f"{source.description} − {base.description}", entries,
                    skipped, info)


# ---------------------------------------------------------------------------
# classification
# ---------------------------------------------------------------------------


def _classify(
    entries: list[_Raw], reshape_conv: bool, min_side: int
) -> tuple[list[NamedMatrix], list[Skipped]]:
    matrices, skipped = [], []
    for e in entries:
        shape = e.shape
        if e.problem is not None:
            skipped.append(Skipped(e.name, shape, e.problem))
            continue
        if len(shape) == 0:
            skipped.append(Skipped(e.name, shape, "a scalar, not a matrix"))
            continue
        if len(shape) == 1:
            skipped.append(Skipped(
                e.name, shape, "1-D tensor (a bias, a normalisation scale or a buffer), not a matrix"
            ))
            continue
        if len(shape) == 4:
            if not reshape_conv:
                skipped.append(Skipped(
                    e.name, shape,
                    "4-D convolution kernel (out, in, kh, kw); pass reshape_conv=True to "
                    "analyse it as an out × (in·kh·kw) matrix",
                ))
                continue
            matrix_shape = (shape[0], shape[1] * shape[2] * shape[3])
        elif len(shape) == 2:
            matrix_shape = (shape[0], shape[1])
        else:
            skipped.append(Skipped(
                e.name, shape,
                f"{len(shape)}-D tensor; only matrices (and, with reshape_conv=True, 4-D "
                "convolution kernels) are analysed",
            ))
            continue
        if min(matrix_shape) < min_side:
            skipped.append(Skipped(
                e.name, shape,
                f"too small for a block structure: {matrix_shape[0]} × {matrix_shape[1]}, "
                f"smaller side below min_side={min_side}",
            ))
            continue
        matrices.append(NamedMatrix(e.name, matrix_shape, e.dtype, e.loader))
    return matrices, skipped


# ---------------------------------------------------------------------------
# dtypes
# ---------------------------------------------------------------------------


def _numpy_dtype_name(dtype: np.dtype) -> str:
    if dtype.hasobject:
        return "object"
    if dtype.fields is not None:
        return "structured"
    return dtype.name


def _dtype_problem(dtype: str) -> str | None:
    """Why a tensor of this dtype is not analysed, or None."""
    if dtype in _FLOAT_NAMES:
        return None
    if dtype.startswith(("int", "uint")):
        return f"integer tensor ({dtype}; an index buffer such as position_ids), not a weight"
    if dtype == "bool":
        return "boolean tensor (a mask buffer), not a weight"
    if dtype.startswith("float8"):
        return f"8-bit float tensor ({dtype}): not supported"
    if dtype.startswith("complex"):
        return f"complex tensor ({dtype}): not supported"
    if dtype == "object":
        return "object array (pickled data is never loaded)"
    return f"dtype {dtype} is not a real floating-point type"


def _float_array(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.float16:
        return array.astype(np.float32)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array


def _widest(a: str, b: str) -> str:
    return a if _DTYPE_WIDTH.get(a, 0) >= _DTYPE_WIDTH.get(b, 0) else b
