"""A base checkpoint and a "fine-tuned" one, offline, for the README's adapter example.

A tiny BERT (hidden 64, 2 layers, 4 heads, random weights from a fixed seed; nothing is
downloaded) is saved as ``OUT/base``. ``OUT/finetuned`` is the same model with a known update
added to every dense layer of the encoder: a random matrix of rank ``1 + (i mod 6)`` (``i``
counts the layers) scaled to 10 % of the layer's norm, plus small full-rank noise (1e-3 of it),
so the updates are low-rank to different degrees, as real fine-tuning updates are.

Run ``python -m analysis.adapter_example --out results/adapter_example``, then::

    lowrank-blocks allocate results/adapter_example/finetuned --base results/adapter_example/base \\
        --lora-rank 4 --pattern 'encoder.*' --peft-config lora.json
    lowrank-blocks extract --base results/adapter_example/base \\
        --finetuned results/adapter_example/finetuned --lora-rank 4 --pattern 'encoder.*' \\
        --out adapter
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def build(out: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write ``out/base`` and ``out/finetuned``; return the two directories."""
    import torch
    import transformers

    torch.manual_seed(seed)
    config = transformers.BertConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        vocab_size=100, max_position_embeddings=32,
    )
    model = transformers.BertModel(config).eval()
    base, finetuned = out / "base", out / "finetuned"
    model.save_pretrained(base)
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        layers = [(name, module) for name, module in model.named_modules()
                  if isinstance(module, torch.nn.Linear) and name.startswith("encoder.")]
        for i, (_, module) in enumerate(layers):
            m, n = module.weight.shape
            r = 1 + i % 6
            update = rng.standard_normal((m, r)) @ rng.standard_normal((r, n))
            update += 1e-3 * np.linalg.norm(update) / np.sqrt(m * n) * rng.standard_normal((m, n))
            update *= 0.1 * float(module.weight.norm()) / np.linalg.norm(update)
            module.weight += torch.as_tensor(update, dtype=module.weight.dtype)
    model.save_pretrained(finetuned)
    return base, finetuned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/adapter_example"))
    args = parser.parse_args()
    base, finetuned = build(args.out)
    print(f"wrote {base} and {finetuned}")


if __name__ == "__main__":
    main()
