"""Partitions, block low-rank structures, exact parameter counts and budget matching.

Three structure families, named as in the toolkit and (in brackets) as in the paper:

* :class:`Global` (LoRA): one rank-``r`` factor pair ``B A`` on the whole ``m × n`` matrix.
* :class:`DiagonalBlocks` (MELoRA): rows and columns split into ``N`` parts each; a factor pair on
  each of the ``N`` diagonal blocks, zero elsewhere.
* :class:`BlockGrid` (Localized LoRA): rows split into ``p`` parts and columns into ``q``; a factor
  pair on every one of the ``p × q`` blocks.

A rank-``r`` factor pair on an ``m_b × n_b`` block stores ``r (m_b + n_b)`` numbers, so the
parameter count of a structure is ``Σ_b r_b (m_b + n_b)`` over its blocks.  Sizes that do not
divide are split like :func:`numpy.array_split`: the first ``size % parts`` parts are one larger.
Nothing is ever cropped or padded; the partition is available as :class:`Partition`.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal, NamedTuple

__all__ = [
    "BlockGrid",
    "DiagonalBlocks",
    "Global",
    "PaperConfigurations",
    "Partition",
    "Structure",
    "configurations_at_budget",
    "expand_grids",
    "paper_rule",
    "split_sizes",
]

Rank = int | tuple[int, ...]
FAMILIES: tuple[str, ...] = ("global", "diagonal", "grid")


def _as_int(value: object, name: str, *, minimum: int | None = None) -> int:
    """Return ``value`` as a Python int, or raise a message naming ``name`` and the value."""
    if isinstance(value, bool):
        raise TypeError(f"{name}={value!r} must be an integer, not a bool")
    try:
        result = operator.index(value)  # accepts int and NumPy integers, refuses floats
    except TypeError:
        raise TypeError(
            f"{name}={value!r} must be an integer, got {type(value).__name__}"
        ) from None
    if minimum is not None and result < minimum:
        raise ValueError(f"{name}={result} is not allowed; it must be >= {minimum}")
    return result


def _check_shape(shape: object) -> tuple[int, int]:
    try:
        dims = tuple(shape)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"shape={shape!r} must be a pair (rows, columns)") from None
    if len(dims) != 2:
        raise ValueError(f"shape={shape!r} must have 2 dimensions (rows, columns)")
    m = _as_int(dims[0], "shape[0]", minimum=1)
    n = _as_int(dims[1], "shape[1]", minimum=1)
    return m, n


def split_sizes(size: int, parts: int) -> tuple[int, ...]:
    """Sizes of ``parts`` contiguous parts of ``size`` items that differ by at most one.

    The larger parts come first, exactly as in :func:`numpy.array_split`.

    Parameters
    ----------
    size : int
        Number of items (rows or columns), at least 1.
    parts : int
        Number of parts, between 1 and ``size``.

    Returns
    -------
    tuple of int
        The part sizes; they sum to ``size``.

    Examples
    --------
    >>> split_sizes(28, 4)
    (7, 7, 7, 7)
    >>> split_sizes(10, 4)
    (3, 3, 2, 2)
    """
    size = _as_int(size, "size", minimum=1)
    parts = _as_int(parts, "parts", minimum=1)
    if parts > size:
        raise ValueError(f"parts={parts} exceeds size={size}; at most {size} parts allowed")
    base, extra = divmod(size, parts)
    return (base + 1,) * extra + (base,) * (parts - extra)


@dataclass(frozen=True)
class Partition:
    """A split of an ``m × n`` matrix into ``p`` row parts and ``q`` column parts.

    Parameters
    ----------
    shape : tuple of int
        ``(m, n)``.
    grid : tuple of int
        ``(p, q)``; ``1 <= p <= m`` and ``1 <= q <= n``.

    Attributes
    ----------
    row_sizes, col_sizes : tuple of int
        Sizes of the row and column parts (see :func:`split_sizes`).
    row_offsets, col_offsets : tuple of int
        Start of every part plus the end, so part ``i`` is ``row_offsets[i]:row_offsets[i+1]``.

    Examples
    --------
    >>> part = Partition((10, 6), (4, 2))
    >>> part.row_offsets, part.col_offsets
    ((0, 3, 6, 8, 10), (0, 3, 6))
    >>> part.block_shape(3, 1)
    (2, 3)
    """

    shape: tuple[int, int]
    grid: tuple[int, int]
    row_sizes: tuple[int, ...] = field(init=False, repr=False)
    col_sizes: tuple[int, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        m, n = _check_shape(self.shape)
        p, q = _check_shape(self.grid)
        if p > m:
            raise ValueError(
                f"{p} row blocks do not fit a matrix with {m} rows; at most {m} row blocks allowed"
            )
        if q > n:
            raise ValueError(
                f"{q} column blocks do not fit a matrix with {n} columns; "
                f"at most {n} column blocks allowed"
            )
        object.__setattr__(self, "shape", (m, n))
        object.__setattr__(self, "grid", (p, q))
        object.__setattr__(self, "row_sizes", split_sizes(m, p))
        object.__setattr__(self, "col_sizes", split_sizes(n, q))

    @property
    def row_offsets(self) -> tuple[int, ...]:
        return _offsets(self.row_sizes)

    @property
    def col_offsets(self) -> tuple[int, ...]:
        return _offsets(self.col_sizes)

    def block_shape(self, i: int, j: int) -> tuple[int, int]:
        """Shape ``(m_i, n_j)`` of block ``(i, j)``."""
        return self.row_sizes[i], self.col_sizes[j]

    def block_slices(self, i: int, j: int) -> tuple[slice, slice]:
        """Row and column slices of block ``(i, j)``."""
        r, c = self.row_offsets, self.col_offsets
        return slice(r[i], r[i + 1]), slice(c[j], c[j + 1])

    @property
    def is_ragged(self) -> bool:
        """Whether the parts have unequal sizes."""
        return len(set(self.row_sizes)) > 1 or len(set(self.col_sizes)) > 1


def _offsets(sizes: Sequence[int]) -> tuple[int, ...]:
    out = [0]
    for s in sizes:
        out.append(out[-1] + s)
    return tuple(out)


@dataclass(frozen=True)
class Structure:
    """Base class of the block low-rank structures (not instantiated directly).

    A structure is a grid ``(p, q)``, a set of *active* blocks carrying a factor pair (all
    blocks, or the diagonal ones), and a rank: one integer for every active block, or one
    integer per active block in row-major order.  Structures are immutable and hashable.
    """

    family: ClassVar[str] = ""
    paper_name: ClassVar[str] = ""
    rank: Rank

    # -- the grid and the active blocks (defined by the subclasses) ---------------------------
    @property
    def grid(self) -> tuple[int, int]:
        raise NotImplementedError

    @property
    def blocks(self) -> tuple[tuple[int, int], ...]:
        """Indices ``(i, j)`` of the blocks that carry a factor pair, row-major."""
        p, q = self.grid
        return tuple((i, j) for i in range(p) for j in range(q))

    @property
    def n_active(self) -> int:
        """Number of blocks carrying a factor pair."""
        return len(self.blocks)

    @property
    def is_uniform(self) -> bool:
        """Whether every block has the same rank."""
        return isinstance(self.rank, int)

    def _normalise_rank(self) -> None:
        rank = self.rank
        if isinstance(rank, (str, bytes)) or not isinstance(rank, Iterable):
            object.__setattr__(self, "rank", _as_int(rank, "rank", minimum=1))
            return
        ranks = tuple(_as_int(r, f"rank[{k}]", minimum=0) for k, r in enumerate(rank))
        if len(ranks) != self.n_active:
            raise ValueError(
                f"rank has {len(ranks)} entries but {self._name()} has {self.n_active} "
                f"blocks; give one rank per block (row-major) or a single integer"
            )
        if not any(ranks):
            raise ValueError(f"rank={list(ranks)} is all zeros; at least one block needs rank >= 1")
        if len(set(ranks)) == 1:
            object.__setattr__(self, "rank", ranks[0])
        else:
            object.__setattr__(self, "rank", ranks)

    def _name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        rank = self.rank if isinstance(self.rank, int) else list(self.rank)
        if self.family == "global":
            return f"Global(rank={rank!r})"
        return f"{self._name()}(n_blocks={self.n_blocks!r}, rank={rank!r})"

    # -- shape-dependent views ------------------------------------------------------------------
    def partition(self, shape: tuple[int, int]) -> Partition:
        """The partition of an ``m × n`` matrix used by this structure.

        Raises
        ------
        ValueError
            If the grid does not fit the shape (more blocks than rows or columns).
        """
        m, n = _check_shape(shape)
        p, q = self.grid
        if p > m or q > n:
            raise ValueError(
                f"{self!r} needs a {p} × {q} grid, which does not fit a {m} × {n} matrix; "
                f"at most {m} row blocks and {n} column blocks are allowed"
            )
        return Partition((m, n), (p, q))

    def block_ranks(self, shape: tuple[int, int]) -> tuple[int, ...]:
        """Rank of every active block for a matrix of ``shape``, checked against block sizes.

        Raises
        ------
        ValueError
            If a rank exceeds the smaller side of the block it applies to.

        Examples
        --------
        >>> BlockGrid(2, rank=2).block_ranks((28, 28))
        (2, 2, 2, 2)
        """
        part = self.partition(shape)
        blocks = self.blocks
        if isinstance(self.rank, int):
            ranks = (self.rank,) * len(blocks)
            smallest = min(min(part.block_shape(i, j)) for i, j in blocks)
            if self.rank > smallest:
                i, j = min(blocks, key=lambda b: min(part.block_shape(*b)))
                mb, nb = part.block_shape(i, j)
                raise ValueError(
                    f"rank={self.rank} exceeds the smallest block ({mb} × {nb}) of {self!r} on a "
                    f"{part.shape[0]} × {part.shape[1]} matrix; ranks from 1 to {smallest} "
                    f"are allowed"
                )
            return ranks
        for k, ((i, j), r) in enumerate(zip(blocks, self.rank)):
            mb, nb = part.block_shape(i, j)
            if r > min(mb, nb):
                raise ValueError(
                    f"rank[{k}]={r} for block ({i}, {j}) exceeds its size {mb} × {nb} in "
                    f"{self._name()} on a {part.shape[0]} × {part.shape[1]} matrix; "
                    f"at most {min(mb, nb)} allowed"
                )
        return tuple(self.rank)

    def n_params(self, shape: tuple[int, int]) -> int:
        """Exact number of stored parameters, ``Σ_b r_b (m_b + n_b)``, for a matrix of ``shape``.

        Equals the total size of the factors returned by
        :func:`lowrank_blocks.approximate`.  Per-block ranks themselves (a few integers) are not
        counted here.

        Examples
        --------
        >>> Global(4).n_params((28, 28)), DiagonalBlocks(4, 4).n_params((28, 28))
        (224, 224)
        >>> BlockGrid(2, 2).n_params((28, 28))
        224
        """
        part = self.partition(shape)
        ranks = self.block_ranks(shape)
        return sum(
            r * (part.row_sizes[i] + part.col_sizes[j]) for (i, j), r in zip(self.blocks, ranks)
        )

    def with_rank(self, rank: Rank) -> Structure:
        """The same grid with another rank (or per-block ranks)."""
        raise NotImplementedError

    @property
    def label(self) -> str:
        """Short human-readable description, e.g. ``'grid 2×2, r=2'``."""
        p, q = self.grid
        rank = self.rank if isinstance(self.rank, int) else "per-block"
        if self.family == "global":
            return f"global, r={rank}"
        if self.family == "diagonal":
            return f"diagonal N={p}, r={rank}"
        return f"grid {p}×{q}, r={rank}"


@dataclass(frozen=True, repr=False)
class Global(Structure):
    """One low-rank factor pair on the whole matrix (the paper's LoRA).

    Parameters
    ----------
    rank : int
        Rank ``r`` of the factorization, ``1 <= r <= min(m, n)``.

    Examples
    --------
    >>> Global(4)
    Global(rank=4)
    >>> Global(4).n_params((28, 28))  # 2 d r
    224
    """

    family: ClassVar[str] = "global"
    paper_name: ClassVar[str] = "LoRA"

    def __post_init__(self) -> None:
        self._normalise_rank()

    @property
    def grid(self) -> tuple[int, int]:
        return (1, 1)

    def with_rank(self, rank: Rank) -> Global:
        return Global(rank)


@dataclass(frozen=True, repr=False)
class DiagonalBlocks(Structure):
    """Low-rank factor pairs on the ``N`` diagonal blocks only (the paper's MELoRA).

    Rows and columns are each split into ``N`` parts; block ``(i, i)`` gets a factor pair and
    the off-diagonal blocks are zero.

    Parameters
    ----------
    n_blocks : int
        Number of diagonal blocks ``N``, at most ``min(m, n)``.
    rank : int or sequence of int
        One rank for every block, or ``N`` ranks (zero allowed for single blocks).

    Examples
    --------
    >>> DiagonalBlocks(4, rank=4)
    DiagonalBlocks(n_blocks=4, rank=4)
    >>> DiagonalBlocks(4, rank=4).n_params((28, 28))  # 2 d r_diag
    224
    """

    family: ClassVar[str] = "diagonal"
    paper_name: ClassVar[str] = "MELoRA"
    n_blocks: int = field(default=1)
    rank: Rank = field(default=1)

    def __init__(self, n_blocks: int, rank: Rank) -> None:
        object.__setattr__(self, "n_blocks", _as_int(n_blocks, "n_blocks", minimum=1))
        object.__setattr__(self, "rank", rank)
        self._normalise_rank()

    @property
    def grid(self) -> tuple[int, int]:
        return (self.n_blocks, self.n_blocks)

    @property
    def blocks(self) -> tuple[tuple[int, int], ...]:
        return tuple((i, i) for i in range(self.n_blocks))

    def with_rank(self, rank: Rank) -> DiagonalBlocks:
        return DiagonalBlocks(self.n_blocks, rank)


@dataclass(frozen=True, repr=False)
class BlockGrid(Structure):
    """Low-rank factor pairs on every block of a ``p × q`` grid (the paper's Localized LoRA).

    Parameters
    ----------
    n_blocks : int or (int, int)
        ``K`` for a ``K × K`` grid, or ``(p, q)`` for ``p`` row parts and ``q`` column parts.
    rank : int or sequence of int
        One rank for every block, or ``p q`` ranks in row-major order (zero allowed for single
        blocks).

    Examples
    --------
    >>> BlockGrid(2, rank=2)
    BlockGrid(n_blocks=2, rank=2)
    >>> BlockGrid(2, rank=2).n_params((28, 28))  # 2 d r_block K
    224
    >>> BlockGrid((2, 4), rank=1).n_params((28, 28))  # r (q m + p n)
    168
    """

    family: ClassVar[str] = "grid"
    paper_name: ClassVar[str] = "Localized LoRA"
    n_blocks: int | tuple[int, int] = field(default=1)
    rank: Rank = field(default=1)

    def __init__(self, n_blocks: int | tuple[int, int], rank: Rank) -> None:
        if isinstance(n_blocks, Iterable) and not isinstance(n_blocks, (str, bytes)):
            pair = tuple(n_blocks)
            if len(pair) != 2:
                raise ValueError(
                    f"n_blocks={n_blocks!r} must be an integer K or a pair (p, q)"
                )
            p = _as_int(pair[0], "n_blocks[0]", minimum=1)
            q = _as_int(pair[1], "n_blocks[1]", minimum=1)
            value: int | tuple[int, int] = p if p == q else (p, q)
        else:
            value = _as_int(n_blocks, "n_blocks", minimum=1)
        object.__setattr__(self, "n_blocks", value)
        object.__setattr__(self, "rank", rank)
        self._normalise_rank()

    @property
    def grid(self) -> tuple[int, int]:
        if isinstance(self.n_blocks, int):
            return (self.n_blocks, self.n_blocks)
        return self.n_blocks

    def with_rank(self, rank: Rank) -> BlockGrid:
        return BlockGrid(self.n_blocks, rank)


# --- budget matching ---------------------------------------------------------------------------

GridSpec = Literal["square", "all", "pow2"] | Iterable[int | tuple[int, int]]


def expand_grids(grids: GridSpec, shape: tuple[int, int], what: str = "grids") -> list[tuple[int, int]]:
    """The ``(p, q)`` grids that a grid specification names for a matrix of ``shape``.

    Parameters
    ----------
    grids : 'square', 'all', 'pow2' or iterable of K or (p, q)
        ``K × K`` for every ``K <= min(m, n)``; every ``p × q``; ``p`` and ``q`` powers of two;
        or the given grids (duplicates dropped, order kept).
    shape : (int, int)
        Matrix shape ``(m, n)``.
    what : str
        Argument name used in error messages.

    Examples
    --------
    >>> expand_grids("pow2", (4, 2))
    [(1, 1), (1, 2), (2, 1), (2, 2), (4, 1), (4, 2)]
    >>> expand_grids([2, (1, 3), 2], (6, 6))
    [(2, 2), (1, 3)]
    """
    m, n = _check_shape(shape)
    if isinstance(grids, str):
        if grids == "all":
            return [(p, q) for p in range(1, m + 1) for q in range(1, n + 1)]
        if grids == "square":
            return [(k, k) for k in range(1, min(m, n) + 1)]
        if grids == "pow2":
            def powers(limit: int) -> list[int]:
                return [2**e for e in range(limit.bit_length())]

            return [(p, q) for p in powers(m) for q in powers(n)]
        raise ValueError(
            f"{what}={grids!r} is not allowed; use 'all', 'square', 'pow2' or a list of grids"
        )
    out = []
    for g in grids:
        p, q = BlockGrid(g, 1).grid
        if p > m or q > n:
            raise ValueError(
                f"{what} contains {g!r}, which does not fit a {m} × {n} matrix; "
                f"grids up to {m} × {n} are allowed"
            )
        out.append((p, q))
    if not out:
        raise ValueError(f"{what} is empty; give at least one grid")
    return list(dict.fromkeys(out))


def _grid_candidates(
    family: str, shape: tuple[int, int], grids: GridSpec
) -> list[tuple[int, int]]:
    m, n = shape
    if family == "global":
        return [(1, 1)]
    if family == "diagonal":
        return [(k, k) for k in range(1, min(m, n) + 1)]
    return expand_grids(grids, shape)


def _rank_unit_cost(family: str, shape: tuple[int, int], grid: tuple[int, int]) -> int:
    """Parameters per unit of uniform rank: ``m + n`` (global, diagonal), ``q m + p n`` (grid)."""
    m, n = shape
    p, q = grid
    return m + n if family in ("global", "diagonal") else q * m + p * n


def _make(family: str, grid: tuple[int, int], rank: int) -> Structure:
    if family == "global":
        return Global(rank)
    if family == "diagonal":
        return DiagonalBlocks(grid[0], rank)
    return BlockGrid(grid, rank)


def configurations_at_budget(
    shape: tuple[int, int],
    budget: int,
    *,
    at_most: bool = False,
    families: Iterable[str] = FAMILIES,
    grids: GridSpec = "square",
) -> list[Structure]:
    """Every uniform-rank configuration whose parameter count equals (or is at most) ``budget``.

    Parameters
    ----------
    shape : (int, int)
        Matrix shape ``(m, n)``.
    budget : int
        Parameter budget, a positive integer.
    at_most : bool, default False
        ``False``: parameter count exactly ``budget``; ``True``: at most ``budget``.
    families : iterable of {'global', 'diagonal', 'grid'}
        Structure families to list.
    grids : 'square', 'all', 'pow2' or iterable of K or (p, q), default 'square'
        Block grids searched for the ``'grid'`` family (see :func:`expand_grids`).  Diagonal
        structures use every ``N <= min(m, n)``.

    Returns
    -------
    list of Structure
        Ordered by family, grid and rank.

    Raises
    ------
    ValueError
        If no configuration meets the budget; the message gives the nearest budgets that do.

    Examples
    --------
    >>> configurations_at_budget((28, 28), 224, families=["global", "grid"])
    [Global(rank=4), BlockGrid(n_blocks=1, rank=4), BlockGrid(n_blocks=2, rank=2), \
BlockGrid(n_blocks=4, rank=1)]
    """
    m, n = _check_shape(shape)
    budget = _as_int(budget, "budget", minimum=1)
    families = tuple(families)
    for fam in families:
        if fam not in FAMILIES:
            raise ValueError(f"families contains {fam!r}; allowed: {', '.join(FAMILIES)}")
    found: list[Structure] = []
    nearest: set[int] = set()
    for fam in families:
        for grid in _grid_candidates(fam, (m, n), grids):
            p, q = grid
            max_rank = min(m // p, n // q)  # smallest block side: the floor of the split
            cost = _rank_unit_cost(fam, (m, n), grid)
            if at_most:
                ranks = range(1, min(max_rank, budget // cost) + 1)
            else:
                ranks = range(budget // cost, budget // cost + 1) if budget % cost == 0 else []
                below, above = (budget // cost) * cost, (budget // cost + 1) * cost
                if 1 <= budget // cost <= max_rank:
                    nearest.add(below)
                if budget // cost + 1 <= max_rank:
                    nearest.add(above)
                if budget // cost > max_rank >= 1:  # above this grid's largest configuration
                    nearest.add(max_rank * cost)
            for r in ranks:
                if 1 <= r <= max_rank:
                    found.append(_make(fam, grid, r))
    if not found:
        cheapest = min(
            _rank_unit_cost(f, (m, n), g)
            for f in families
            for g in _grid_candidates(f, (m, n), grids)
        )
        if budget < cheapest or not nearest:
            raise ValueError(
                f"budget={budget} is below the cheapest configuration of {', '.join(families)} "
                f"for a {m} × {n} matrix ({cheapest} parameters); budgets >= {cheapest} allowed"
            )
        lower = max((b for b in nearest if b < budget), default=None)
        upper = min((b for b in nearest if b > budget), default=None)
        options = " or ".join(str(b) for b in (lower, upper) if b is not None)
        raise ValueError(
            f"no configuration of {', '.join(families)} has exactly budget={budget} parameters "
            f"for a {m} × {n} matrix; nearest exact budgets: {options} "
            f"(or pass at_most=True)"
        )
    return found


class PaperConfigurations(NamedTuple):
    """The three configurations of the paper's matching rule."""

    lora: Global
    melora: DiagonalBlocks
    localized: BlockGrid


def paper_rule(rank: int, n_blocks: int) -> PaperConfigurations:
    """Apply the paper's matching rule ``r_diag = r / N``, ``K = √N``, ``r_block = r / (N √N)``.

    Under this rule MELoRA and Localized LoRA both cost ``2 d r / N`` parameters on a ``d × d``
    matrix, while LoRA costs ``2 d r``: the rule matches the two local structures to each other,
    not to LoRA.  (The paper's Table I instead puts all three at 224 parameters; use
    :func:`configurations_at_budget` for that kind of matching.)

    Parameters
    ----------
    rank : int
        Global LoRA rank ``r``.
    n_blocks : int
        Number of diagonal blocks ``N``; must be a perfect square.

    Returns
    -------
    PaperConfigurations
        ``(Global(r), DiagonalBlocks(N, r/N), BlockGrid(√N, r/(N√N)))``.

    Raises
    ------
    ValueError
        If the rule gives no integer ranks or grid.

    Examples
    --------
    >>> paper_rule(16, 4)
    PaperConfigurations(lora=Global(rank=16), melora=DiagonalBlocks(n_blocks=4, rank=4), \
localized=BlockGrid(n_blocks=2, rank=2))
    """
    r = _as_int(rank, "rank", minimum=1)
    big_n = _as_int(n_blocks, "n_blocks", minimum=1)
    k = math.isqrt(big_n)
    if k * k != big_n:
        raise ValueError(
            f"n_blocks={big_n} is not a perfect square, so K = √N is not an integer; "
            f"use N in 1, 4, 9, 16, ..."
        )
    if r % big_n:
        raise ValueError(
            f"rank={r} is not divisible by n_blocks={big_n}, so r_diag = r/N is not an integer; "
            f"use a rank that is a multiple of {big_n}"
        )
    if r % (big_n * k):
        raise ValueError(
            f"rank={r} is not divisible by N√N={big_n * k} (n_blocks={big_n}), so "
            f"r_block = r/(N√N) is not an integer; use a rank that is a multiple of {big_n * k}"
        )
    return PaperConfigurations(
        Global(r), DiagonalBlocks(big_n, r // big_n), BlockGrid(k, r // (big_n * k))
    )
