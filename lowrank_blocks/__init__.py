"""lowrank_blocks: is a matrix globally low-rank, or low-rank block by block?

Optimal (truncated-SVD) approximations of any real matrix under three structures at matched
parameter budgets: one global factorization (the paper's LoRA), factor pairs on the diagonal
blocks (MELoRA) and factor pairs on every block of a grid (Localized LoRA), with exactly
optimal per-block rank allocation.

Data flows one way: a matrix is validated once (:func:`prepare`), its blocks' singular values
are computed (:class:`BlockSpectra`), ranks are allocated (:mod:`lowrank_blocks.allocation`),
and results come back as objects with ``.to_frame()``.

Examples
--------
>>> import numpy as np
>>> from lowrank_blocks import BlockGrid, approximate
>>> W = np.random.default_rng(0).standard_normal((28, 28))
>>> approximate(W, BlockGrid(2, rank=2)).n_params
224
"""

from .allocation import AllocationSolution, solve_allocation
from .approximate import Approximation, approximate
from .budgets import PaperConfigurations, configurations_at_budget, paper_rule
from .layers import LayerAnalysis, analyze_layers
from .model_budget import ModelAllocation, allocate_model
from .partition import Partition, split_sizes
from .search import Curve, Search, Surface, best_approximation, error_surface, error_vs_budget
from .spectra import (
    BlockSpectra,
    PreparedMatrix,
    allocate_ranks,
    block_spectra,
    prepare,
    prepare_stack,
)
from .structures import BlockGrid, DiagonalBlocks, Global, Structure
from .studies import Study, compare_many

__all__ = [
    "AllocationSolution",
    "Approximation",
    "BlockGrid",
    "BlockSpectra",
    "Curve",
    "DiagonalBlocks",
    "Global",
    "LayerAnalysis",
    "ModelAllocation",
    "PaperConfigurations",
    "Partition",
    "PreparedMatrix",
    "Search",
    "Structure",
    "Study",
    "Surface",
    "allocate_model",
    "allocate_ranks",
    "analyze_layers",
    "approximate",
    "best_approximation",
    "block_spectra",
    "compare_many",
    "configurations_at_budget",
    "error_surface",
    "error_vs_budget",
    "paper_rule",
    "prepare",
    "prepare_stack",
    "solve_allocation",
    "split_sizes",
]

__version__ = "0.2.0"
