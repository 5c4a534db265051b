"""Row and column splits of a matrix into contiguous parts (the ``numpy.array_split`` rule).

Sizes that do not divide are split like :func:`numpy.array_split`: the first ``size % parts``
parts are one larger.  Nothing is ever cropped or padded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ._validate import as_int, check_shape

__all__ = ["Partition", "split_sizes"]

# Counts above this are refused before anything is enumerated (a grid of 10**12 blocks would
# only exhaust memory); a 2**20 × 2**20 grid of 1 × 1 blocks is far beyond any real use.
MAX_PARTS = 1 << 20


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
    size = as_int(size, "size", minimum=1)
    parts = as_int(parts, "parts", minimum=1)
    if parts > MAX_PARTS:
        raise ValueError(f"parts={parts} is too many; at most {MAX_PARTS} parts are allowed")
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
    row_offsets: tuple[int, ...] = field(init=False, repr=False, compare=False)
    col_offsets: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        m, n = check_shape(self.shape)
        p, q = check_shape(self.grid, "grid")
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
        object.__setattr__(self, "row_offsets", _offsets(self.row_sizes))
        object.__setattr__(self, "col_offsets", _offsets(self.col_sizes))

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
