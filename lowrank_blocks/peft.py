"""Allocations and structured SVD adapters in PEFT's formats.

What :mod:`lowrank_blocks.model_budget` chooses, handed to PEFT (Hugging Face ``peft``):

* :func:`lora_config`: a ``LoraConfig``-compatible dictionary (``r``, ``lora_alpha``,
  ``rank_pattern``, ``alpha_pattern``, ``target_modules``) reproducing the allocated ranks;
  ``alpha = r`` for every module, so PEFT's scaling ``lora_alpha / r`` is 1;
* :func:`gralora_choice`: the GraLoRA configuration (one ``r`` and one ``gralora_k`` for every
  module: the toolkit's ``BlockGrid(k, r / k)`` at ``r (m + n)`` parameters) with the lowest
  total error at the budget, over the ``k`` that divide every matrix;
* :func:`extract_adapter`: the update ``ΔW = W_ft − W_base`` of a fine-tuned model approximated
  optimally (truncated SVD, block by block for GraLoRA) at the allocated ranks and written as a
  PEFT adapter directory that ``PeftModel.from_pretrained`` loads;
* :func:`pissa_adapter`: the same from the weights themselves, PiSSA-style: the adapter holds
  the optimal structured approximation of every weight, the residual ``W − Ŵ`` is written into
  the base weights beside it (``OUT/base``), so the adapted model computes what the original
  one did.

PEFT holds a global factorization per module (LoRA, with a rank per module) or a ``k × k`` grid
of equal blocks with one rank for every block and one ``(r, k)`` for every module (GraLoRA).
Anything else (ragged blocks where a side does not divide by ``k``, per-block ranks, diagonal
blocks only, different structures in different modules) raises
:class:`UnsupportedStructureError`, whose message names the nearest structure PEFT can hold.

Modules are named by their weights: the tensor ``encoder.layer.0.attention.self.query.weight``
is the module ``encoder.layer.0.attention.self.query``.  Weights whose last name part holds
``embed`` (``word_embeddings``, ``embed_tokens``) or is ``wte`` / ``wpe`` are written as LoRA
embedding adapters (``lora_embedding_A`` / ``lora_embedding_B``); every other matrix as a
``Linear`` layer stored ``(out, in)`` (PyTorch's layout), or, for the ``Conv1D`` layers of GPT-2
and its relatives, stored ``(in, out)``: those are factored transposed and the configuration
says ``fan_in_fan_out: true``.  Which layers are ``Conv1D`` is read from the model (an
``nn.Module``) or from the ``model_type`` of the checkpoint's ``config.json``; a state_dict
with GPT-2's module names (``c_attn``, ``c_fc``, ``c_proj``) and no ``config.json`` must say
``fan_in_fan_out=`` (GPT-BigCode, say, uses ``Linear`` layers under the same names).
NumPy and ``safetensors`` write the files; PyTorch is needed only by :func:`pissa_adapter` to copy
the base checkpoint in its own precision.
"""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._validate import as_int
from .approximate import approximate
from .model_budget import (
    MatrixSpectra,
    ModelAllocation,
    _weight,
    allocate_model,
    model_spectra,
    parse_structure,
    structure_of,
    uniform_choice,
)
from .structures import BlockGrid, DiagonalBlocks, Global, Structure

__all__ = [
    "Adapter",
    "GraloraChoice",
    "UnsupportedStructureError",
    "conv1d_weights",
    "extract_adapter",
    "gralora_choice",
    "lora_config",
    "peft_layout",
    "pissa_adapter",
]

_ADAPTER_CONFIG = "adapter_config.json"
_ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."


class UnsupportedStructureError(ValueError):
    """A structure PEFT cannot hold; ``nearest`` names the nearest one it can."""

    def __init__(self, message: str, nearest: str) -> None:
        super().__init__(f"{message}; the nearest structure PEFT can hold: {nearest}")
        self.nearest = nearest


# -- names -----------------------------------------------------------------------------------------


def module_of(name: str) -> str:
    """The module path of a weight: its name without ``.weight``.

    Examples
    --------
    >>> module_of("encoder.layer.0.attention.self.query.weight")
    'encoder.layer.0.attention.self.query'
    """
    if not name.endswith(".weight"):
        raise ValueError(
            f"matrix {name!r} is not the weight of a module (its name does not end in "
            "'.weight'); PEFT adapts modules: select module weights with pattern='*.weight'"
        )
    return name[: -len(".weight")]


def is_embedding(name: str) -> bool:
    """Whether a weight is written as an embedding adapter (see the module notes).

    Examples
    --------
    >>> is_embedding("embeddings.word_embeddings.weight"), is_embedding("fc1.weight")
    (True, False)
    """
    last = module_of(name).rsplit(".", 1)[-1].lower()
    return "embed" in last or last in ("wte", "wpe")


# Architectures of transformers whose projections are ``Conv1D`` (weights stored ``(in, out)``),
# and the names of those modules.
_CONV1D_MODEL_TYPES = frozenset({"gpt2", "openai-gpt", "imagegpt", "decision_transformer"})
_CONV1D_NAMES = frozenset({"c_attn", "q_attn", "c_fc", "c_proj"})


def _leaf(name: str) -> str:
    return module_of(name).rsplit(".", 1)[-1]


def conv1d_weights(source: Any, names: Sequence[str], fan_in_fan_out: bool | None = None
                   ) -> frozenset[str]:
    """The weights among ``names`` stored ``(in, out)`` (``Conv1D``), to factor transposed.

    ``fan_in_fan_out=True`` / ``False``: every non-embedding weight / none.  ``None`` (default):
    read from the model when ``source`` is an ``nn.Module`` (its ``Conv1D`` layers), else from
    the ``model_type`` in the ``config.json`` beside the checkpoint (GPT-2 and its relatives:
    their ``c_attn``, ``q_attn``, ``c_fc`` and ``c_proj`` layers); names of that kind with
    neither raise, since the same names are ``Linear`` layers in other architectures.

    Examples
    --------
    >>> sorted(conv1d_weights({}, ["h.0.attn.c_attn.weight", "wte.weight"], True))
    ['h.0.attn.c_attn.weight']
    >>> sorted(conv1d_weights({}, ["encoder.fc.weight"]))
    []
    """
    if fan_in_fan_out is not None:
        if not isinstance(fan_in_fan_out, bool):
            raise TypeError(f"fan_in_fan_out must be True, False or None; got {fan_in_fan_out!r}")
        return frozenset(n for n in names if fan_in_fan_out and not is_embedding(n))
    try:
        import torch
    except ImportError:  # pragma: no cover - sources are then paths or arrays
        torch = None
    if torch is not None and isinstance(source, torch.nn.Module):
        conv = {f"{k}.weight" for k, mod in source.named_modules()
                if type(mod).__name__ == "Conv1D" and hasattr(mod, "nf")}
        return frozenset(n for n in names if n in conv)
    model_type = _model_type(source)
    suspects = [n for n in names if _leaf(n) in _CONV1D_NAMES]
    if model_type is None:
        if suspects:
            raise ValueError(
                f"cannot tell whether {suspects[0]!r} is a Conv1D layer (GPT-2's, weights stored "
                "(in, out)) or a Linear one (stored (out, in)): there is no config.json beside "
                "the checkpoint; pass fan_in_fan_out=True (CLI: --fan-in-fan-out true) for "
                "GPT-2-style Conv1D weights or fan_in_fan_out=False for Linear ones"
            )
        return frozenset()
    return frozenset(suspects) if model_type in _CONV1D_MODEL_TYPES else frozenset()


def _model_type(source: Any) -> str | None:
    """``model_type`` of the ``config.json`` in (or beside) a checkpoint path, else None."""
    if not isinstance(source, (str, Path)):
        return None
    path = Path(source)
    folder = path if path.is_dir() else path.parent
    config = folder / "config.json"
    if not config.is_file() or config.stat().st_size > 1 << 20:
        return None
    try:
        value = json.loads(config.read_text()).get("model_type")
    except (ValueError, OSError, AttributeError):
        return None
    return value if isinstance(value, str) else None


# -- what PEFT can hold --------------------------------------------------------------------------


def _largest_divisor(values: Sequence[int], at_most: int) -> int:
    g = 0
    for v in values:
        g = math.gcd(g, int(v))
    return max(d for d in range(1, max(1, at_most) + 1) if g % d == 0)


def peft_layout(structure: Structure, shape: tuple[int, int]) -> tuple[str, int, int]:
    """How PEFT holds ``structure`` on an ``m × n`` weight: ``('lora', 1, r)`` or
    ``('gralora', k, r)`` with GraLoRA's ``r = k · s``.

    Raises
    ------
    UnsupportedStructureError
        For ragged blocks (a side not divisible by ``k``), per-block ranks, diagonal blocks
        only or non-square grids, naming the nearest structure PEFT can hold.

    Examples
    --------
    >>> peft_layout(Global(4), (32, 64)), peft_layout(BlockGrid(2, rank=3), (32, 64))
    (('lora', 1, 4), ('gralora', 2, 6))
    >>> peft_layout(BlockGrid(3, rank=1), (32, 64))
    Traceback (most recent call last):
    ...
    lowrank_blocks.peft.UnsupportedStructureError: BlockGrid(grid=3, rank=1) on 32 × 64 has ragged blocks (GraLoRA needs both sides divisible by k = 3); the nearest structure PEFT can hold: BlockGrid(grid=2, rank=1) (GraLoRA r=2, gralora_k=2)
    """
    m, n = shape
    if isinstance(structure, Global):
        return "lora", 1, int(structure.rank)
    if isinstance(structure, DiagonalBlocks):
        rank = structure.rank if structure.is_uniform else max(structure.rank)
        raise UnsupportedStructureError(
            f"{structure!r} (diagonal blocks only, MELoRA) has no PEFT LoRA or GraLoRA format",
            f"Global({rank}) at the same {rank * (m + n)} parameters (LoRA r={rank})"
            if structure.is_uniform else f"Global({rank}) (LoRA r={rank})",
        )
    p, q = structure.grid
    if p != q:
        k = min(p, q)
        raise UnsupportedStructureError(
            f"{structure!r} is a {p} × {q} grid; GraLoRA's grids are k × k",
            f"grid:{k} (GraLoRA gralora_k={k})",
        )
    k = p
    if not structure.is_uniform:
        s = max(1, structure.n_params(shape) // (k * (m + n)))
        raise UnsupportedStructureError(
            f"{structure!r} has per-block ranks; GraLoRA gives every block the same rank",
            f"BlockGrid({k}, rank={s}) (GraLoRA r={k * s}, gralora_k={k}) with at most the same "
            "parameters, or a global factorization per module with LoRA's rank_pattern",
        )
    s = int(structure.rank)
    if m % k or n % k:
        k2 = _largest_divisor((m, n), k)
        nearest = (f"BlockGrid(grid={k2}, rank={s}) (GraLoRA r={k2 * s}, gralora_k={k2})"
                   if k2 > 1 else f"Global({k * s}) (LoRA r={k * s})")
        raise UnsupportedStructureError(
            f"{structure!r} on {m} × {n} has ragged blocks (GraLoRA needs both sides divisible "
            f"by k = {k})",
            nearest,
        )
    return "gralora", k, k * s


# -- configurations --------------------------------------------------------------------------------


def lora_config(allocation: ModelAllocation) -> dict[str, Any]:
    """A ``LoraConfig``-compatible dictionary holding the allocated ranks.

    ``r`` is the most frequent rank (ties: the smallest), ``rank_pattern`` lists the modules
    with another rank, ``lora_alpha`` and ``alpha_pattern`` equal the ranks (scaling 1), and
    ``target_modules`` lists every module with a rank above 0 (full module paths).
    ``peft.LoraConfig(**lora_config(allocation))`` builds the model with these ranks.

    Raises
    ------
    UnsupportedStructureError
        If a matrix was given a structure other than ``'global'``.
    ValueError
        If every rank is 0 (nothing to adapt).

    Examples
    --------
    >>> import numpy as np
    >>> mats = {"a.weight": np.diag([5.0, 4, 3, 2]), "b.weight": np.diag([1.0, 1, 1, 1]),
    ...         "c.weight": np.diag([6.0, 1, 1, 1])}
    >>> cfg = lora_config(allocate_model(mats, budget=32, objective="absolute", progress=False))
    >>> cfg["r"], cfg["rank_pattern"], cfg["target_modules"]
    (1, {'a': 3}, ['a', 'c'])
    """
    ranks = {}
    for ms, (label, s) in zip(allocation.spectra, allocation.choices):
        if label != "global" and s > 0:
            structure = DiagonalBlocks if label.startswith("diagonal") else BlockGrid
            raise UnsupportedStructureError(
                f"matrix {ms.name!r} was given {label} (rank {s} per block); a LoRA config holds "
                "global factorizations only",
                "allocate_model(structures=['global']) for LoRA with rank_pattern, or "
                f"gralora_choice() for one {structure.__name__} k on every module (GraLoRA)",
            )
        if s > 0:
            ranks[module_of(ms.name)] = int(s)
    if not ranks:
        raise ValueError("every matrix was allocated rank 0 at this budget; nothing to adapt "
                         "(raise the budget)")
    counts = Counter(ranks.values())
    r = min(counts, key=lambda v: (-counts[v], v))
    pattern = {name: v for name, v in ranks.items() if v != r}
    return {
        "r": r,
        "lora_alpha": r,
        "rank_pattern": pattern,
        "alpha_pattern": dict(pattern),
        "target_modules": sorted(ranks),
    }


@dataclass(frozen=True, repr=False)
class GraloraChoice:
    """The best GraLoRA ``(k, r)`` for a model at a budget (see :func:`gralora_choice`).

    Attributes
    ----------
    k, r : int
        ``gralora_k`` and ``r`` of the best choice (``k = 1``: plain LoRA at uniform rank).
    table : pandas.DataFrame
        Every ``k`` tried: ``k``, ``r``, ``n_params``, ``total_error`` (``NaN`` and a reason
        where ``k`` does not divide every side or no rank fits).
    allocation : ModelAllocation
        The best choice as an allocation (``grid:k`` with rank ``r / k`` on every matrix).
    """

    k: int
    r: int
    table: pd.DataFrame
    allocation: ModelAllocation

    def config(self) -> dict[str, Any]:
        """``GraloraConfig`` keyword arguments: ``r``, ``gralora_k``, ``alpha = r`` (scaling 1),
        ``hybrid_r = 0``, ``target_modules``."""
        return {
            "r": self.r,
            "gralora_k": self.k,
            "alpha": self.r,
            "hybrid_r": 0,
            "target_modules": sorted(module_of(ms.name) for ms in self.allocation.spectra),
        }

    def to_frame(self) -> pd.DataFrame:
        return self.table.copy()

    def __repr__(self) -> str:
        return f"GraloraChoice(k={self.k}, r={self.r}, total_error={self.allocation.total_error:.6g})"


def _fixed_allocation(spectra: list[MatrixSpectra], label: str, s: int, budget: int,
                      objective: str, method: str) -> ModelAllocation:
    weights = [_weight(ms, objective) for ms in spectra]
    choices = [(label, min(s, len(ms.curves[label][1]) - 1)) for ms in spectra]
    total = math.fsum(w * float(ms.curves[lab][1][t])
                      for ms, w, (lab, t) in zip(spectra, weights, choices))
    u, u_err = uniform_choice(spectra, weights, budget)
    return ModelAllocation(spectra, choices, budget, objective, total, u, u_err, method, total)


def gralora_choice(
    source: Any,
    budget: int | None = None,
    *,
    lora_rank: int | None = None,
    ks: Sequence[int] = (1, 2, 4, 8),
    base: Any = None,
    objective: str = "relative",
    pattern: str | None = None,
    progress: bool = True,
) -> GraloraChoice:
    """The GraLoRA ``(k, r)`` with the lowest total error within a budget.

    GraLoRA gives every module the same ``r`` and ``k``: a ``k × k`` grid of rank-``r/k``
    blocks at ``r (m + n)`` parameters.  For every ``k`` of `ks` dividing both sides of every
    matrix, ``r`` is the largest multiple of ``k`` with ``r Σ (m + n) <= budget``; the errors
    come from the blocks' singular values (optimal blocks, Eckart–Young).

    Parameters
    ----------
    source, budget, lora_rank, base, objective, pattern, progress
        As in :func:`~lowrank_blocks.model_budget.allocate_model`.
    ks : sequence of int
        Values of ``gralora_k`` to try (1 is LoRA).

    Returns
    -------
    GraloraChoice

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> W = np.block([[np.outer(rng.standard_normal(2), rng.standard_normal(2)) for j in range(2)]
    ...               for i in range(2)])        # rank 4 globally, rank 1 in every 2 × 2 block
    >>> choice = gralora_choice({"w.weight": W}, budget=16, ks=(1, 2), progress=False)
    >>> choice.k, choice.r, choice.table["total_error"].round(3).tolist()
    (2, 2, [0.0, 0.0])
    """
    ks = [as_int(k, "ks", minimum=1) for k in ks]
    labels = ["global"] + [f"grid:{k}" for k in ks if k > 1]
    spectra = model_spectra(source, labels, base=base, pattern=pattern, progress=progress)
    if (budget is None) == (lora_rank is None):
        raise ValueError("give exactly one of budget=N or lora_rank=r")
    unit = sum(ms.cost for ms in spectra)
    if budget is None:
        budget = as_int(lora_rank, "lora_rank", minimum=1) * unit
    budget = as_int(budget, "budget", minimum=0)
    rows, best = [], None
    for k in ks:
        label = "global" if k == 1 else f"grid:{k}"
        bad = [ms for ms in spectra if ms.shape[0] % k or ms.shape[1] % k]
        s = budget // (k * unit)
        if bad:
            rows.append({"k": k, "r": np.nan, "n_params": np.nan, "total_error": np.nan,
                         "note": f"{bad[0].name} ({bad[0].shape[0]} × {bad[0].shape[1]}) is not "
                                 f"divisible by {k}"})
            continue
        if s == 0:
            rows.append({"k": k, "r": np.nan, "n_params": np.nan, "total_error": np.nan,
                         "note": f"r = {k} needs {k * unit} parameters"})
            continue
        alloc = _fixed_allocation(spectra, label, s, budget, objective,
                                  f"GraLoRA k={k}, r={k * s}")
        rows.append({"k": k, "r": k * s, "n_params": k * s * unit,
                     "total_error": alloc.total_error, "note": ""})
        if best is None or alloc.total_error < best[2].total_error - 1e-15:
            best = (k, k * s, alloc)
    table = pd.DataFrame(rows)
    for col in ("r", "n_params"):
        table[col] = table[col].astype("Int64")
    if best is None:
        raise ValueError(f"no GraLoRA configuration with k in {ks} fits budget={budget} "
                         f"(r = k needs k × {unit} parameters): {'; '.join(table['note'])}")
    return GraloraChoice(best[0], best[1], table, best[2])


# -- adapters ------------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Adapter:
    """An adapter written by :func:`extract_adapter` or :func:`pissa_adapter`.

    Attributes
    ----------
    path : pathlib.Path
        The adapter directory (``adapter_config.json``, ``adapter_model.safetensors``).
    config : dict
        The JSON written to ``adapter_config.json``.
    allocation : ModelAllocation
        Structures, ranks and errors of every matrix.
    base_path : pathlib.Path or None
        For :func:`pissa_adapter`: the residual base model (``path / 'base'``).
    """

    path: Path
    config: dict[str, Any]
    allocation: ModelAllocation
    base_path: Path | None = None

    def to_frame(self) -> pd.DataFrame:
        frame = self.allocation.to_frame()
        frame.insert(1, "module", [module_of(n) for n in frame["name"]])
        return frame

    def __repr__(self) -> str:
        return f"Adapter({str(self.path)!r}, peft_type={self.config['peft_type']!r})"


def _factors(W: np.ndarray, structure: Structure) -> list[tuple[np.ndarray, np.ndarray]]:
    approx = approximate(np.asarray(W, dtype=np.float64), structure)
    return [(np.asarray(B), np.asarray(A)) for B, A in approx.factors]


def _lora_tensors(name: str, W: np.ndarray, r: int, dtype: Any) -> dict[str, np.ndarray]:
    (B, A), = _factors(W, Global(r))  # W ≈ B @ A, B: m × r, A: r × n
    module = _PREFIX + module_of(name)
    if is_embedding(name):  # PEFT: ΔW = (lora_embedding_B @ lora_embedding_A)ᵀ
        return {f"{module}.lora_embedding_A": B.T.astype(dtype),
                f"{module}.lora_embedding_B": A.T.astype(dtype)}
    return {f"{module}.lora_A.weight": A.astype(dtype), f"{module}.lora_B.weight": B.astype(dtype)}


def _gralora_tensors(name: str, W: np.ndarray, k: int, s: int, dtype: Any) -> dict[str, np.ndarray]:
    m, n = W.shape
    mo, mi = m // k, n // k
    t = min(s, mo, mi)
    gA = np.zeros((k, mi, k * s))
    gB = np.zeros((k, k * s, mo))
    if t > 0:
        for b, (B, A) in enumerate(_factors(W, BlockGrid(k, rank=t))):
            i, j = divmod(b, k)  # output block i, input block j
            gB[i, j * s: j * s + t, :] = B.T
            gA[j, :, i * s: i * s + t] = A.T
    module = _PREFIX + module_of(name)
    return {f"{module}.gralora_A": gA.astype(dtype), f"{module}.gralora_B": gB.astype(dtype)}


def _reconstruction(W: np.ndarray, label: str, s: int) -> np.ndarray:
    if s == 0:
        return np.zeros_like(W, dtype=np.float64)
    if label != "global":
        k = int(label.split(":")[1])
        s = min(s, W.shape[0] // k, W.shape[1] // k)
    return np.asarray(approximate(np.asarray(W, dtype=np.float64), structure_of(label, s))
                      .reconstruct())


def _plan(spectra: list[MatrixSpectra], structure: str, budget: int | None,
          lora_rank: int | None, objective: str, fan_in_fan_out: bool
          ) -> tuple[ModelAllocation, dict[str, Any]]:
    """The allocation and the adapter_config.json for one structure (``fan_in_fan_out``: some
    modules are ``Conv1D``, see :func:`conv1d_weights`)."""
    label = parse_structure(structure)
    if label.startswith("diagonal"):
        peft_layout(structure_of(label, 1), spectra[0].shape)  # raises, naming the nearest
    if label == "global":
        alloc = allocate_model(spectra, budget, lora_rank=lora_rank, objective=objective,
                               progress=False)
        cfg = lora_config(alloc)
        config = {"peft_type": "LORA", **cfg, "lora_dropout": 0.0, "bias": "none",
                  "fan_in_fan_out": fan_in_fan_out, "use_rslora": False,
                  "init_lora_weights": True}
    else:
        k = int(label.split(":")[1])
        for ms in spectra:
            if is_embedding(ms.name):
                raise UnsupportedStructureError(
                    f"{ms.name!r} is an embedding; GraLoRA adapts Linear layers only",
                    "structure 'global' (LoRA embedding adapters), or pattern= leaving the "
                    "embeddings out",
                )
            peft_layout(BlockGrid(k, rank=1), ms.shape)  # raises on ragged blocks
        unit = sum(ms.cost for ms in spectra)
        if budget is None:
            budget = as_int(lora_rank, "lora_rank", minimum=1) * unit
        s = budget // (k * unit)
        if s == 0:
            raise ValueError(f"budget={budget} is below GraLoRA's smallest configuration "
                             f"(r = k = {k}: {k * unit} parameters)")
        alloc = _fixed_allocation(spectra, label, s, budget, objective,
                                  f"GraLoRA k={k}, r={k * s}")
        config = {"peft_type": "GRALORA", "r": k * s, "gralora_k": k, "alpha": k * s,
                  "hybrid_r": 0, "target_modules": sorted(module_of(ms.name) for ms in spectra),
                  "gralora_dropout": 0.0, "fan_in_fan_out": fan_in_fan_out, "bias": "none",
                  "init_weights": True}
    config.update({"task_type": None, "inference_mode": True, "base_model_name_or_path": None,
                   "modules_to_save": None})
    return alloc, config


def _write(path: Path, config: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    path.mkdir(parents=True, exist_ok=True)
    (path / _ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
              str(path / _ADAPTER_WEIGHTS), metadata={"format": "pt"})


def _tensors_of(alloc: ModelAllocation, config: dict[str, Any], matrices: dict[str, Any],
                dtype: Any, conv1d: frozenset[str]) -> dict[str, np.ndarray]:
    tensors: dict[str, np.ndarray] = {}
    for ms, (_label, s) in zip(alloc.spectra, alloc.choices):
        W = matrices[ms.name].load()
        if ms.name in conv1d:  # stored (in, out): PEFT's factors are those of Wᵀ
            W = W.T
        if config["peft_type"] == "LORA":
            if s > 0:
                tensors.update(_lora_tensors(ms.name, W, s, dtype))
        else:
            k = int(config["gralora_k"])
            tensors.update(_gralora_tensors(ms.name, W, k, config["r"] // k, dtype))
    return tensors


def _check_out(out: Any, overwrite: bool) -> Path:
    path = Path(out)
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(f"out={str(path)!r} exists and is not empty; pass overwrite=True "
                              "(--force) to write into it")
    return path


def extract_adapter(
    finetuned: Any,
    base: Any,
    out: Any,
    budget: int | None = None,
    *,
    lora_rank: int | None = None,
    structure: str = "global",
    objective: str = "relative",
    pattern: str | None = None,
    dtype: str = "float32",
    overwrite: bool = False,
    progress: bool = True,
    fan_in_fan_out: bool | None = None,
) -> Adapter:
    """Write the update ``finetuned − base``, approximated optimally, as a PEFT adapter.

    With ``structure='global'`` every module gets the rank :func:`allocate_model` gives it at
    the budget (LoRA with ``rank_pattern``); with ``'grid:K'`` every module gets GraLoRA's
    ``BlockGrid(K, r/K)`` with the largest ``r`` within the budget.  Matrices the fine-tuning
    left unchanged (``ΔW = 0``) are not adapted.  Each factor pair is the truncated SVD of its
    block (split ``U √Σ``, ``√Σ Vᵀ``), so the merged weights are ``W_base`` plus the toolkit's
    optimal reconstruction.

    Parameters
    ----------
    finetuned, base : model sources
        Anything :func:`~lowrank_blocks.models.open_model` reads, with the same tensors.
    out : path
        The adapter directory to write.
    budget, lora_rank, objective, pattern
        As in :func:`~lowrank_blocks.model_budget.allocate_model`.
    structure : {'global', 'grid:K'}
        LoRA or GraLoRA.
    dtype : str
        Precision of the factors written (``'float32'``, ``'float64'``, ``'float16'``).
    overwrite : bool
        Write into a non-empty `out`.
    progress : bool
        Progress bar while the spectra are computed.
    fan_in_fan_out : bool, optional
        Whether the weights are stored ``(in, out)`` (GPT-2's ``Conv1D``); default: read from
        the model or its ``config.json`` (:func:`conv1d_weights`).

    Returns
    -------
    Adapter

    Raises
    ------
    UnsupportedStructureError
        For a structure PEFT cannot hold (ragged blocks, diagonal blocks, embeddings under
        GraLoRA), naming the nearest one it can.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> base = {"fc.weight": rng.standard_normal((8, 6))}
    >>> tuned = {"fc.weight": base["fc.weight"] + np.outer(np.arange(8.0), np.ones(6))}
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "adapter"
    >>> adapter = extract_adapter(tuned, base, out, lora_rank=1, progress=False)
    >>> adapter.config["r"], round(float(adapter.allocation.to_frame()["error"][0]), 12)
    (1, 0.0)
    """
    from .models import open_model

    path = _check_out(out, overwrite)
    mm = open_model(finetuned, base=base, pattern=pattern)
    label = parse_structure(structure)
    labels = ["global"] if label == "global" else ["global", label]
    spectra = [ms for ms in model_spectra(mm, labels, progress=progress) if ms.energy > 0]
    if not spectra:
        raise ValueError(f"the fine-tuned model equals the base in every matrix of {mm.source!r}:"
                         " there is no update to extract")
    for ms in spectra:
        module_of(ms.name)
    conv1d = conv1d_weights(finetuned, [ms.name for ms in spectra], fan_in_fan_out)
    alloc, config = _plan(spectra, label, budget, lora_rank, objective, bool(conv1d))
    matrices = {m.name: m for m in mm}
    _write(path, config, _tensors_of(alloc, config, matrices, np.dtype(dtype), conv1d))
    return Adapter(path, config, alloc)


def _read_all(source: Any) -> tuple[dict[str, Any], Path | None]:
    """Every tensor of a checkpoint (torch tensors) and the directory holding it, if any."""
    import torch
    from safetensors.torch import load_file

    if isinstance(source, torch.nn.Module):
        return {k: v.detach().clone() for k, v in source.state_dict().items()}, None
    if isinstance(source, dict):
        return {k: (v.detach().clone() if isinstance(v, torch.Tensor) else torch.as_tensor(v))
                for k, v in source.items()}, None
    path = Path(source)
    folder = path if path.is_dir() else path.parent
    if path.is_dir():
        index = path / "model.safetensors.index.json"
        files = ([path / f for f in sorted(set(json.loads(index.read_text())["weight_map"]
                                                   .values()))]
                 if index.is_file() else [path / "model.safetensors"])
    elif path.name.endswith(".index.json"):
        files = [folder / f for f in sorted(set(json.loads(path.read_text())["weight_map"]
                                                .values()))]
    elif path.suffix == ".safetensors":
        files = [path]
    else:
        raise ValueError(f"source={str(source)!r}: pissa_adapter reads .safetensors checkpoints "
                         "(a file, a model directory or a sharded index), a state_dict or an "
                         "nn.Module")
    tensors: dict[str, Any] = {}
    for f in files:
        tensors.update(load_file(str(f)))
    return tensors, folder


def pissa_adapter(
    source: Any,
    out: Any,
    budget: int | None = None,
    *,
    lora_rank: int | None = None,
    structure: str = "global",
    objective: str = "relative",
    pattern: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    fan_in_fan_out: bool | None = None,
) -> Adapter:
    """PiSSA-style SVD initialisation: the adapter holds the optimal structured approximation of
    every weight, ``OUT/base`` the residual base model, so outputs are unchanged.

    For every matrix with a rank above 0: ``Ŵ`` is the optimal approximation under the
    structure and the allocated rank (global: truncated SVD; ``grid:K``: per block), the adapter
    stores its factors (in the weight's precision) and ``OUT/base/model.safetensors`` stores
    ``W − Ŵ`` in place of ``W``; every other tensor is copied unchanged, with the checkpoint
    directory's other files (``config.json``, ...).  Load with
    ``PeftModel.from_pretrained(AutoModel.from_pretrained(OUT / 'base'), OUT)``.

    Parameters
    ----------
    source : path, state_dict or torch.nn.Module
        A ``.safetensors`` checkpoint (file, model directory or sharded index).
    out : path
        Directory to write (adapter files, and ``base/``).
    budget, lora_rank, structure, objective, pattern, overwrite, progress, fan_in_fan_out
        As in :func:`extract_adapter`.

    Returns
    -------
    Adapter
        With ``base_path`` the residual model's directory.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> import numpy as np
    >>> torch = __import__("pytest").importorskip("torch")
    >>> W = torch.tensor(np.random.default_rng(0).standard_normal((6, 4)), dtype=torch.float32)
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> adapter = pissa_adapter({"fc.weight": W}, out, lora_rank=2, progress=False)
    >>> sorted(p.name for p in out.iterdir())
    ['adapter_config.json', 'adapter_model.safetensors', 'base']
    """
    import torch
    from safetensors.torch import save_file

    from .models import open_model

    path = _check_out(out, overwrite)
    tensors, folder = _read_all(source)
    mm = open_model({k: v for k, v in tensors.items()}, pattern=pattern)
    label = parse_structure(structure)
    labels = ["global"] if label == "global" else ["global", label]
    spectra = [ms for ms in model_spectra(mm, labels, progress=progress) if ms.energy > 0]
    for ms in spectra:
        module_of(ms.name)
    conv1d = conv1d_weights(source if folder is None else folder,
                            [ms.name for ms in spectra], fan_in_fan_out)
    alloc, config = _plan(spectra, label, budget, lora_rank, objective, bool(conv1d))
    matrices = {m.name: m for m in mm}
    adapter_tensors: dict[str, np.ndarray] = {}
    residual = dict(tensors)
    for ms, (lab, s) in zip(alloc.spectra, alloc.choices):
        original = tensors[ms.name]
        dtype = np.float64 if original.dtype == torch.float64 else np.float32
        W = matrices[ms.name].load().astype(np.float64)
        if ms.name in conv1d:  # stored (in, out): factor Wᵀ, PEFT's (out, in)
            W = W.T
        if config["peft_type"] == "LORA":
            if s == 0:
                continue
            part = _lora_tensors(ms.name, W, s, np.float64)
            keys = sorted(part)
            if is_embedding(ms.name):
                a, b = part[keys[0]], part[keys[1]]  # embedding_A (r × vocab), B (dim × r)
                approx = (b @ a).T
            else:
                a, b = part[keys[0]], part[keys[1]]  # lora_A (r × n), lora_B (m × r)
                approx = b @ a
        else:
            k = int(config["gralora_k"])
            part = _gralora_tensors(ms.name, W, k, config["r"] // k, np.float64)
            approx = _reconstruction(W, lab, s)
        adapter_tensors.update({key: v.astype(dtype) for key, v in part.items()})
        rest = W - approx
        if ms.name in conv1d:
            rest = rest.T
        residual[ms.name] = torch.from_numpy(np.ascontiguousarray(rest)).to(original.dtype)
    _write(path, config, adapter_tensors)
    base_path = path / "base"
    base_path.mkdir(exist_ok=True)
    if folder is not None:
        for f in folder.iterdir():
            if f.is_file() and not f.name.endswith((".safetensors", ".index.json")) and \
                    f.name not in (_ADAPTER_CONFIG,):
                shutil.copy2(f, base_path / f.name)
    save_file({k: v.contiguous() for k, v in residual.items()}, str(base_path / "model.safetensors"),
              metadata={"format": "pt"})
    return Adapter(path, config, alloc, base_path)
