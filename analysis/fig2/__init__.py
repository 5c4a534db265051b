"""The paper's second experiment (section III.B, Table II, Fig. 2) on the library's structures.

A frozen MLP pre-trained on MNIST digits 0–4 is adapted to digits 5–9 with LoRA, MELoRA and
Localized LoRA adapters built from :class:`~lowrank_blocks.Global`,
:class:`~lowrank_blocks.DiagonalBlocks` and :class:`~lowrank_blocks.BlockGrid` on the ``64 × 784``
hidden weight, against full fine-tuning.  ``mlp`` holds the NumPy network, adapters and Adam,
``sweep`` the protocol, selection and the bridge to ΔW, ``report`` the figure and the summary.
Run ``python -m analysis.fig2 [--quick] [--out results]``.

This package module imports nothing heavy, so ``python -m analysis.fig2`` can limit BLAS threads
before NumPy loads.
"""
