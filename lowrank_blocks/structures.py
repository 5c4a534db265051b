"""Block low-rank structures: each class owns its blocks, parameter count, names and plot style.

Three structure families, named as in the toolkit and (in brackets) as in the paper:

* :class:`Global` (LoRA): one rank-``r`` factor pair ``B A`` on the whole ``m × n`` matrix.
* :class:`DiagonalBlocks` (MELoRA): rows and columns split into ``N`` parts each; a factor pair on
  each of the ``N`` diagonal blocks, zero elsewhere.
* :class:`BlockGrid` (Localized LoRA): rows split into ``p`` parts and columns into ``q``; a factor
  pair on every one of the ``p × q`` blocks.

A rank-``r`` factor pair on an ``m_b × n_b`` block stores ``r (m_b + n_b)`` numbers, so the
parameter count of a structure is ``Σ_b r_b (m_b + n_b)`` over its blocks.  Sizes that do not
divide are split like :func:`numpy.array_split` (see :class:`~lowrank_blocks.partition.Partition`).

Everything that differs between the families lives on the classes: which blocks carry a factor
pair (:attr:`Structure.blocks`), the grids a search tries (:meth:`Structure.candidate_grids`),
how to build one on a grid (:meth:`Structure.on_grid`), names and plot style.  Code elsewhere
never dispatches on a family string; strings are turned into classes once, at the edge
(:func:`structure_type`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, Literal

import numpy as np

from ._validate import as_int, check_shape
from .partition import MAX_PARTS, Partition, split_sizes

__all__ = [
    "BlockGrid",
    "DiagonalBlocks",
    "Global",
    "Partition",
    "STRUCTURE_TYPES",
    "Structure",
    "expand_grids",
    "split_sizes",
    "structure_type",
    "structure_types",
]

Rank = int | tuple[int, ...]
GridSpec = Literal["square", "all", "pow2"] | Iterable[int | tuple[int, int]]


class Structure:
    """Base class of the block low-rank structures (use a subclass).

    A structure is a grid ``(p, q)``, a set of *active* blocks carrying a factor pair (all
    blocks, or the diagonal ones), and a rank: one integer for every active block, or one
    integer per active block in row-major order (zeros allowed, not all zero).  Structures are
    immutable and hashable.

    Class attributes
    ----------------
    family : str
        Short name used in tables and on the command line: ``'global'``, ``'diagonal'``,
        ``'grid'``.
    paper_name : str
        The paper's name: ``'LoRA'``, ``'MELoRA'``, ``'Localized LoRA'``.
    description : str
        A longer name for figure legends.
    grid_axis : str
        How the grid is named on a figure axis: ``'grid (p × q)'``, ``'diagonal blocks (N × N)'``.
    color, marker : str
        Plot style shared by every figure of the toolkit.
    """

    __slots__ = ("rank",)
    family: ClassVar[str] = ""
    paper_name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    grid_axis: ClassVar[str] = "grid (p × q)"
    color: ClassVar[str] = "#000000"
    marker: ClassVar[str] = "o"
    rank: Rank

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise TypeError(
            "Structure is the base class; use Global(rank), DiagonalBlocks(n_blocks, rank) or "
            "BlockGrid(grid, rank)"
        )

    # -- identity -----------------------------------------------------------------------------
    def _key(self) -> tuple[Any, ...]:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._key() == other._key()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._key()))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; use with_rank()")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self).on_grid, (self.grid, self.rank))

    # -- the grid and the active blocks -------------------------------------------------------
    @property
    def grid(self) -> tuple[int, int]:
        """``(p, q)``: row and column parts of the partition."""
        raise NotImplementedError

    @property
    def blocks(self) -> tuple[tuple[int, int], ...]:
        """Indices ``(i, j)`` of the blocks that carry a factor pair, row-major."""
        p, q = self.grid
        return tuple((i, j) for i in range(p) for j in range(q))

    @property
    def n_active(self) -> int:
        """Number of blocks carrying a factor pair."""
        p, q = self.grid
        return p * q

    @property
    def is_uniform(self) -> bool:
        """Whether every block has the same rank."""
        return isinstance(self.rank, int)

    @property
    def rank_overhead(self) -> int:
        """Integers needed to store per-block ranks: one per block if they differ, else 0."""
        return 0 if self.is_uniform or self.n_active == 1 else self.n_active

    def _set_rank(self, rank: object) -> None:
        if isinstance(rank, np.ndarray) and rank.ndim == 0:
            rank = rank.item()  # 0-d: its scalar (a float one is then refused by name)
        if isinstance(rank, (str, bytes)) or not isinstance(rank, Iterable):
            object.__setattr__(self, "rank", as_int(rank, "rank", minimum=1))
            return
        if isinstance(rank, np.ndarray) and rank.ndim == 1 and rank.dtype.kind in "iu" and (
            rank.size == 0 or rank.min() >= 0
        ):
            ranks = tuple(rank.tolist())  # fast path: already non-negative integers
        else:
            ranks = tuple(as_int(r, f"rank[{k}]", minimum=0) for k, r in enumerate(rank))
        if len(ranks) != self.n_active:
            raise ValueError(
                f"rank has {len(ranks)} entries but {type(self).__name__} on a "
                f"{self.grid[0]} × {self.grid[1]} grid has {self.n_active} blocks; give one rank "
                f"per block (row-major) or a single integer"
            )
        if not any(ranks):
            raise ValueError(f"rank={list(ranks)} is all zeros; at least one block needs rank >= 1")
        object.__setattr__(self, "rank", ranks[0] if len(set(ranks)) == 1 else ranks)

    def _rank_repr(self, full: bool = False) -> str:
        if isinstance(self.rank, int):
            return repr(self.rank)
        if len(self.rank) > 8 and not full:
            nonzero = sum(r > 0 for r in self.rank)
            return f"<{len(self.rank)} per-block ranks, {nonzero} nonzero>"
        return repr(list(self.rank))

    # -- construction from a grid (used by searches) ------------------------------------------
    @classmethod
    def on_grid(cls, grid: tuple[int, int], rank: Rank) -> Structure:
        """The structure of this family on ``grid`` with ``rank``."""
        raise NotImplementedError

    @classmethod
    def candidate_grids(cls, shape: tuple[int, int], grids: GridSpec | None = None) -> list[tuple[int, int]]:
        """The grids of this family that a search tries on a matrix of ``shape``."""
        raise NotImplementedError

    def with_rank(self, rank: Rank) -> Structure:
        """The same grid with another rank (or per-block ranks)."""
        return type(self).on_grid(self.grid, rank)

    # -- shape-dependent views ----------------------------------------------------------------
    def partition(self, shape: tuple[int, int]) -> Partition:
        """The partition of an ``m × n`` matrix used by this structure.

        Raises
        ------
        ValueError
            If the grid does not fit the shape (more blocks than rows or columns).
        """
        m, n = check_shape(shape)
        p, q = self.grid
        if p > m or q > n:
            raise ValueError(
                f"{self!r} needs a {p} × {q} grid, which does not fit a {m} × {n} matrix; "
                f"at most {m} row blocks and {n} column blocks are allowed"
            )
        return Partition((m, n), (p, q))

    def _fit(self, shape: tuple[int, int]) -> tuple[int, int]:
        """``(m, n)`` after checking that the grid fits, without building the partition."""
        m, n = check_shape(shape)
        p, q = self.grid
        if p > m or q > n:
            self.partition((m, n))  # raises the error that names the grid and the shape
        return m, n

    def block_costs(self, shape: tuple[int, int]) -> tuple[int, ...]:
        """``m_b + n_b`` of every active block: parameters per unit of rank."""
        part = self.partition(shape)
        return tuple(part.row_sizes[i] + part.col_sizes[j] for i, j in self.blocks)

    # Closed forms on the array_split partition (larger parts first): block (0, 0) is the
    # largest active block and the last active block the smallest, for every family.  They
    # keep a search from enumerating the blocks of grids it will not compute.
    def unit_cost(self, shape: tuple[int, int]) -> int:
        """Parameters per unit of uniform rank, ``Σ_b (m_b + n_b)``.

        ``m + n`` for :class:`Global` and :class:`DiagonalBlocks`, ``q m + p n`` for a
        :class:`BlockGrid`.

        Examples
        --------
        >>> Global(1).unit_cost((28, 28)), BlockGrid((2, 4), 1).unit_cost((28, 28))
        (56, 168)
        """
        m, n = self._fit(shape)
        p, q = self.grid
        return q * m + p * n

    def min_block_cost(self, shape: tuple[int, int]) -> int:
        """``m_b + n_b`` of the cheapest active block (the last one)."""
        m, n = self._fit(shape)
        p, q = self.grid
        return m // p + n // q

    def max_uniform_rank(self, shape: tuple[int, int]) -> int:
        """Largest uniform rank: the smaller side of the smallest active block (the last).

        Examples
        --------
        >>> BlockGrid((4, 2), 1).max_uniform_rank((10, 10))  # rows 3, 3, 2, 2
        2
        """
        m, n = self._fit(shape)
        p, q = self.grid
        return min(m // p, n // q)

    def max_block_rank(self, shape: tuple[int, int]) -> int:
        """Largest rank any active block can take: the smaller side of block ``(0, 0)``."""
        m, n = self._fit(shape)
        p, q = self.grid
        return min(-(-m // p), -(-n // q))

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
            smallest = self.max_uniform_rank(shape)
            if self.rank > smallest:
                i, j = min(blocks, key=lambda b: min(part.block_shape(*b)))
                mb, nb = part.block_shape(i, j)
                raise ValueError(
                    f"rank={self.rank} exceeds the smallest block ({mb} × {nb}) of {self!r} on a "
                    f"{part.shape[0]} × {part.shape[1]} matrix; ranks from 1 to {smallest} "
                    f"are allowed"
                )
            return (self.rank,) * len(blocks)
        for k, ((i, j), r) in enumerate(zip(blocks, self.rank)):
            mb, nb = part.block_shape(i, j)
            if r > min(mb, nb):
                raise ValueError(
                    f"rank[{k}]={r} for block ({i}, {j}) exceeds its size {mb} × {nb} in "
                    f"{type(self).__name__} on a {part.shape[0]} × {part.shape[1]} matrix; "
                    f"at most {min(mb, nb)} allowed"
                )
        return tuple(self.rank)

    def n_params(self, shape: tuple[int, int]) -> int:
        """Exact number of stored parameters, ``Σ_b r_b (m_b + n_b)``, for a matrix of ``shape``.

        Equals the total size of the factors returned by :func:`lowrank_blocks.approximate`.
        Per-block ranks themselves are counted separately (:attr:`rank_overhead`).

        Examples
        --------
        >>> Global(4).n_params((28, 28)), DiagonalBlocks(4, 4).n_params((28, 28))
        (224, 224)
        >>> BlockGrid(2, 2).n_params((28, 28))
        224
        """
        ranks = self.block_ranks(shape)
        return sum(r * c for r, c in zip(ranks, self.block_costs(shape)))

    @property
    def spec(self) -> str:
        """The full constructor expression, every per-block rank included (``repr`` shortens
        rank lists longer than 8); ``eval``-able with the classes imported.

        Examples
        --------
        >>> s = BlockGrid((3, 3), [1, 0, 2, 0, 0, 1, 0, 0, 3])
        >>> s
        BlockGrid(grid=3, rank=<9 per-block ranks, 4 nonzero>)
        >>> s.spec
        'BlockGrid(grid=3, rank=[1, 0, 2, 0, 0, 1, 0, 0, 3])'
        """
        return self._repr(full=True)

    def __repr__(self) -> str:
        return self._repr(full=False)

    def _repr(self, full: bool) -> str:
        raise NotImplementedError

    @property
    def grid_label(self) -> str:
        """``'p×q'``."""
        return f"{self.grid[0]}×{self.grid[1]}"

    @property
    def label(self) -> str:
        """Short human-readable description, e.g. ``'grid 2×2, r=2'``."""
        rank = self.rank if isinstance(self.rank, int) else "per-block"
        return f"{self._label_prefix()}, r={rank}"

    def _label_prefix(self) -> str:
        raise NotImplementedError


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

    __slots__ = ()
    family: ClassVar[str] = "global"
    paper_name: ClassVar[str] = "LoRA"
    description: ClassVar[str] = "global"
    grid_axis: ClassVar[str] = "grid (1 × 1)"
    color: ClassVar[str] = "#0072B2"
    marker: ClassVar[str] = "o"

    def __init__(self, rank: int) -> None:
        self._set_rank(rank)

    def _key(self) -> tuple[Any, ...]:
        return (self.rank,)

    @property
    def grid(self) -> tuple[int, int]:
        return (1, 1)

    @classmethod
    def on_grid(cls, grid: tuple[int, int], rank: Rank) -> Global:
        if tuple(grid) != (1, 1):
            raise ValueError(f"grid={grid!r} is not allowed for Global; it is the 1 × 1 grid")
        return cls(rank)  # type: ignore[arg-type]

    @classmethod
    def candidate_grids(cls, shape: tuple[int, int], grids: GridSpec | None = None) -> list[tuple[int, int]]:
        return [(1, 1)]

    def _repr(self, full: bool) -> str:
        return f"Global(rank={self._rank_repr(full)})"

    def _label_prefix(self) -> str:
        return "global"


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

    __slots__ = ("n_blocks",)
    family: ClassVar[str] = "diagonal"
    paper_name: ClassVar[str] = "MELoRA"
    description: ClassVar[str] = "diagonal blocks"
    grid_axis: ClassVar[str] = "diagonal blocks (N × N)"
    color: ClassVar[str] = "#D55E00"
    marker: ClassVar[str] = "s"
    n_blocks: int

    def __init__(self, n_blocks: int, rank: Rank) -> None:
        n = as_int(n_blocks, "n_blocks", minimum=1)
        if n > MAX_PARTS:
            raise ValueError(f"n_blocks={n} is too many; at most {MAX_PARTS} blocks are allowed")
        object.__setattr__(self, "n_blocks", n)
        self._set_rank(rank)

    def _key(self) -> tuple[Any, ...]:
        return (self.n_blocks, self.rank)

    @property
    def grid(self) -> tuple[int, int]:
        return (self.n_blocks, self.n_blocks)

    @property
    def blocks(self) -> tuple[tuple[int, int], ...]:
        return tuple((i, i) for i in range(self.n_blocks))

    @property
    def n_active(self) -> int:
        return self.n_blocks

    def unit_cost(self, shape: tuple[int, int]) -> int:
        m, n = self._fit(shape)
        return m + n

    @classmethod
    def on_grid(cls, grid: tuple[int, int], rank: Rank) -> DiagonalBlocks:
        p, q = grid
        if p != q:
            raise ValueError(f"grid={grid!r} is not allowed for DiagonalBlocks; it needs N × N")
        return cls(p, rank)

    @classmethod
    def candidate_grids(cls, shape: tuple[int, int], grids: GridSpec | None = None) -> list[tuple[int, int]]:
        """Every ``N <= min(m, n)`` (``None``, ``'square'`` or ``'all'``), or the listed ``N``."""
        m, n = check_shape(shape)
        if grids is None or (isinstance(grids, str) and grids in ("square", "all")):
            _check_grid_count(min(m, n), "diagonal", grids or "square", m, n)
            return [(k, k) for k in range(1, min(m, n) + 1)]
        if isinstance(grids, str) and grids == "pow2":
            return [(2**e, 2**e) for e in range(min(m, n).bit_length())]
        out = []
        for g in expand_grids(grids, shape, "diagonal"):
            if g[0] != g[1]:
                raise ValueError(f"diagonal contains {g!r}; diagonal structures need N × N grids")
            out.append(g)
        return out

    def _repr(self, full: bool) -> str:
        return f"DiagonalBlocks(n_blocks={self.n_blocks}, rank={self._rank_repr(full)})"

    def _label_prefix(self) -> str:
        return f"diagonal N={self.n_blocks}"


class BlockGrid(Structure):
    """Low-rank factor pairs on every block of a ``p × q`` grid (the paper's Localized LoRA).

    Parameters
    ----------
    grid : int or (int, int)
        ``K`` for a ``K × K`` grid (``K²`` blocks), or ``(p, q)`` for ``p`` row parts and ``q``
        column parts.
    rank : int or sequence of int
        One rank for every block, or ``p q`` ranks in row-major order (zero allowed for single
        blocks).

    Examples
    --------
    >>> BlockGrid(2, rank=2)
    BlockGrid(grid=2, rank=2)
    >>> BlockGrid(2, rank=2).n_params((28, 28))  # 2 d r_block K
    224
    >>> BlockGrid((2, 4), rank=1).n_params((28, 28))  # r (q m + p n)
    168
    """

    __slots__ = ("_grid",)
    family: ClassVar[str] = "grid"
    paper_name: ClassVar[str] = "Localized LoRA"
    description: ClassVar[str] = "block grid"
    color: ClassVar[str] = "#009E73"
    marker: ClassVar[str] = "^"
    _grid: tuple[int, int]

    def __init__(self, grid: int | tuple[int, int], rank: Rank) -> None:
        object.__setattr__(self, "_grid", _check_grid(grid, "grid"))
        self._set_rank(rank)

    def _key(self) -> tuple[Any, ...]:
        return (self._grid, self.rank)

    @property
    def grid(self) -> tuple[int, int]:
        return self._grid

    @classmethod
    def on_grid(cls, grid: tuple[int, int], rank: Rank) -> BlockGrid:
        return cls(grid, rank)

    @classmethod
    def candidate_grids(cls, shape: tuple[int, int], grids: GridSpec | None = None) -> list[tuple[int, int]]:
        """The grids named by ``grids`` (default ``'square'``; see :func:`expand_grids`)."""
        return expand_grids("square" if grids is None else grids, shape, "grids")

    def _repr(self, full: bool) -> str:
        p, q = self._grid
        grid = p if p == q else (p, q)
        return f"BlockGrid(grid={grid!r}, rank={self._rank_repr(full)})"

    def _label_prefix(self) -> str:
        return f"grid {self._grid[0]}×{self._grid[1]}"


STRUCTURE_TYPES: tuple[type[Structure], ...] = (Global, DiagonalBlocks, BlockGrid)


def structure_type(family: str | type[Structure]) -> type[Structure]:
    """The structure class for a family name (``'global'``, ``'diagonal'``, ``'grid'``) or class.

    Examples
    --------
    >>> structure_type("grid")
    <class 'lowrank_blocks.structures.BlockGrid'>
    """
    if isinstance(family, type) and issubclass(family, Structure) and family is not Structure:
        return family
    if isinstance(family, str):
        key = family.strip().lower()
        for cls in STRUCTURE_TYPES:
            if key in (cls.family, cls.paper_name.lower(), cls.__name__.lower()):
                return cls
    allowed = ", ".join(repr(c.family) for c in STRUCTURE_TYPES)
    raise ValueError(
        f"family={family!r} is not allowed; use one of {allowed}, a paper name (LoRA, MELoRA, "
        f"Localized LoRA) or a structure class"
    )


def structure_types(families: object, name: str = "families") -> tuple[type[Structure], ...]:
    """Structure classes from a sequence of family names or classes (duplicates dropped)."""
    if isinstance(families, (str, type)):
        families = [families]
    try:
        values = list(families)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(
            f"{name}={families!r} must be a sequence of family names or structure classes"
        ) from None
    if not values:
        allowed = ", ".join(repr(c.family) for c in STRUCTURE_TYPES)
        raise ValueError(f"{name} is empty; give at least one of {allowed}")
    out = []
    for f in values:
        try:
            out.append(structure_type(f))
        except ValueError:
            allowed = ", ".join(repr(c.family) for c in STRUCTURE_TYPES)
            raise ValueError(
                f"{name} contains {f!r}; allowed: {allowed} (or a paper name or class)"
            ) from None
    return tuple(dict.fromkeys(out))


def _check_grid(grid: object, what: str) -> tuple[int, int]:
    if isinstance(grid, np.ndarray) and grid.ndim == 0:
        grid = grid.item()
    if isinstance(grid, Iterable) and not isinstance(grid, (str, bytes)):
        pair = tuple(grid)
        if len(pair) != 2:
            raise ValueError(f"{what}={grid!r} must be an integer K or a pair (p, q)")
        p = as_int(pair[0], f"{what}[0]", minimum=1)
        q = as_int(pair[1], f"{what}[1]", minimum=1)
    else:
        p = q = as_int(grid, what, minimum=1)
    if max(p, q) > MAX_PARTS:
        raise ValueError(
            f"{what}={grid!r} is too large; at most {MAX_PARTS} parts per side are allowed"
        )
    return p, q


#: Grid lists that name more grids than this ('all' or 'square' on a huge shape) are refused
#: before anything is enumerated.
MAX_GRIDS = 1 << 22


def _check_grid_count(count: int, what: str, spec: str, m: int, n: int) -> None:
    if count > MAX_GRIDS:
        raise ValueError(
            f"{what}={spec!r} names {count:,} grids for a {m} × {n} matrix; at most "
            f"{MAX_GRIDS:,} are allowed (use 'pow2' or a list)"
        )


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
    m, n = check_shape(shape)
    if isinstance(grids, str):
        if grids == "all":
            _check_grid_count(m * n, what, grids, m, n)
            return [(p, q) for p in range(1, m + 1) for q in range(1, n + 1)]
        if grids == "square":
            _check_grid_count(min(m, n), what, grids, m, n)
            return [(k, k) for k in range(1, min(m, n) + 1)]
        if grids == "pow2":
            return [(2**a, 2**b) for a in range(m.bit_length()) for b in range(n.bit_length())]
        raise ValueError(
            f"{what}={grids!r} is not allowed; use 'all', 'square', 'pow2' or a list of grids"
        )
    if isinstance(grids, (bytes, int, np.integer)) or not isinstance(grids, Iterable):
        raise TypeError(
            f"{what}={grids!r} must be 'all', 'square', 'pow2' or a list of K or (p, q)"
        )
    out = []
    for g in grids:
        p, q = _check_grid(g, f"{what} entry")
        if p > m or q > n:
            raise ValueError(
                f"{what} contains {g!r}, which does not fit a {m} × {n} matrix; "
                f"grids up to {m} × {n} are allowed"
            )
        out.append((p, q))
    if not out:
        raise ValueError(f"{what} is empty; give at least one grid")
    return list(dict.fromkeys(out))
