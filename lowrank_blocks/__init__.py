"""lowrank_blocks: is a matrix globally low-rank, or low-rank block by block?

Optimal (truncated-SVD) approximations of any real matrix under three structures at matched
parameter budgets: one global factorization (the paper's LoRA), factor pairs on the diagonal
blocks (MELoRA) and factor pairs on every block of a grid (Localized LoRA).

Examples
--------
>>> import numpy as np
>>> from lowrank_blocks import BlockGrid, approximate
>>> W = np.random.default_rng(0).standard_normal((28, 28))
>>> approximate(W, BlockGrid(2, rank=2)).n_params
224
"""

from .approximate import Approximation, approximate
from .structures import (
    BlockGrid,
    DiagonalBlocks,
    Global,
    PaperConfigurations,
    Partition,
    Structure,
    configurations_at_budget,
    paper_rule,
    split_sizes,
)
from .studies import Study, compare_many
from .surfaces import (
    BlockSpectra,
    SearchResult,
    allocate_ranks,
    best_approximation,
    block_spectra,
    error_surface,
    error_vs_budget,
)

__all__ = [
    "Approximation",
    "BlockSpectra",
    "SearchResult",
    "Study",
    "compare_many",
    "allocate_ranks",
    "best_approximation",
    "block_spectra",
    "error_surface",
    "error_vs_budget",
    "BlockGrid",
    "DiagonalBlocks",
    "Global",
    "PaperConfigurations",
    "Partition",
    "Structure",
    "approximate",
    "configurations_at_budget",
    "paper_rule",
    "split_sizes",
]

__version__ = "0.1.0"
