"""The paper's configurations and published numbers, and their reproduction.

The paper is "Localized LoRA: A Structured Low-Rank Approximation for Efficient Fine-Tuning".
Its Table I approximates the MNIST test image at index 1 (the first "2", matrix rank 15) at 224
parameters with three structures.  The published numbers live here as constants so that the
reproduction can be checked against them, never against the code's own output.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .approximate import approximate
from .structures import BlockGrid, DiagonalBlocks, Global, Structure

__all__ = ["TABLE1_CONFIGURATIONS", "TABLE1_MATRIX_RANK", "TABLE1_PUBLISHED", "format_table1", "table1"]

#: Table I's three configurations, each 224 parameters on the 28 × 28 digit.
TABLE1_CONFIGURATIONS: tuple[Structure, ...] = (Global(4), DiagonalBlocks(4, 4), BlockGrid(2, 2))

#: Table I as printed in the paper: method -> (rank label, parameters, error to 4 digits).
TABLE1_PUBLISHED: dict[str, tuple[str, int, float]] = {
    "LoRA": ("4 (global)", 224, 0.2313),
    "MELoRA": ("4 (diag)", 224, 0.9071),
    "Localized LoRA": ("2 (block)", 224, 0.2119),
}

#: Matrix rank of the Table I digit as stated in the paper.
TABLE1_MATRIX_RANK = 15


def _rank_label(structure: Structure) -> str:
    """The rank in the paper's wording: the rank, then the kind the paper prints for its method.

    >>> _rank_label(BlockGrid(2, 2))
    '2 (block)'
    """
    published = TABLE1_PUBLISHED[structure.paper_name][0]  # e.g. "2 (block)"
    kind = published[published.index("("):]
    return f"{structure.rank} {kind}"


def table1(image: np.ndarray | None = None) -> pd.DataFrame:
    """Reproduce the paper's Table I.

    Parameters
    ----------
    image : array_like, shape (28, 28), optional
        The matrix to approximate; by default the MNIST test image at index 1, loaded with
        :func:`lowrank_blocks.datasets.table1_digit`.

    Returns
    -------
    pandas.DataFrame
        One row per method with columns ``paper_name``, ``structure``, ``rank``, ``n_params``,
        ``error`` (full precision) and ``paper_error`` (the published value).  The matrix rank
        of the image is in ``frame.attrs["matrix_rank"]``.

    Examples
    --------
    >>> import numpy as np
    >>> frame = table1(np.eye(28))
    >>> frame["n_params"].tolist()
    [224, 224, 224]
    """
    if image is None:
        from .datasets import table1_digit

        image = table1_digit()
    rows = []
    for structure in TABLE1_CONFIGURATIONS:
        approx = approximate(image, structure)
        rows.append(
            {
                "paper_name": structure.paper_name,
                "structure": repr(structure),
                "rank": _rank_label(structure),
                "n_params": approx.n_params,
                "error": approx.error,
                "paper_error": TABLE1_PUBLISHED[structure.paper_name][2],
            }
        )
    frame = pd.DataFrame(rows)
    frame.attrs["matrix_rank"] = int(np.linalg.matrix_rank(np.asarray(image, dtype=np.float64)))
    return frame


def format_table1(frame: pd.DataFrame) -> str:
    """Table I as the paper prints it (errors to four decimals), plus the published errors.

    Examples
    --------
    >>> import numpy as np
    >>> print(format_table1(table1(np.eye(28))).splitlines()[0])
    Method          Rank        #Params  Error   Paper
    """
    lines = [f"{'Method':<15} {'Rank':<11} {'#Params':>7}  {'Error':<6}  Paper"]
    for row in frame.itertuples():
        lines.append(
            f"{row.paper_name:<15} {row.rank:<11} {row.n_params:>7}  {row.error:.4f}  "
            f"{row.paper_error:.4f}"
        )
    if "matrix_rank" in frame.attrs:
        lines.append(f"matrix rank of the image: {frame.attrs['matrix_rank']}")
    return "\n".join(lines)
