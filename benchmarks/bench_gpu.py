"""The same code on a GPU: error surfaces and a model scan on CUDA arrays, ÷ the CPU.

Run ``python benchmarks/bench_gpu.py`` on a machine with an NVIDIA GPU and PyTorch built for
CUDA (or CuPy: ``--backend cupy``).  For d = 4096 and 8192 (``--sizes``) and a float64 Gaussian
``d × d`` matrix it times, on the device and on the CPU (NumPy, the library's CPU path), with
the same call:

1. the exact surface (``method='exact'``: batched ``svdvals`` of every block, K ∈ {1, …, 16});
2. the certified surface (``method='auto'``, the default: batched Gram products and
   ``eigvalsh`` on the device, SVD fallback where the bound does not certify);
3. the randomized surface up to 10 % of dense (batched block Krylov: products and QR on the
   device);
4. a model scan: for every matrix of a synthetic float32 transformer-like model (tensors on the
   device), :func:`~lowrank_blocks.error_vs_budget` at a LoRA-rank-8 budget over the three
   families, uniform and optimal allocations (what ``lowrank-blocks scan`` computes per
   matrix);

and prints device time, CPU time, the speed-up CPU ÷ device (target ≥ 10 on a GPU) and the
largest difference between the two runs' errors.  Every decomposition runs where the array
lives: PyTorch through ``array_api_compat`` (``torch.linalg.eigvalsh`` / ``svdvals`` / ``qr``,
batched), CuPy likewise.

Without a GPU (CI) it runs on PyTorch **CPU** tensors against NumPy, so the device path keeps
working: ``--quick`` does that on small sizes in a few seconds (``tests/test_gram.py`` runs
it).  Numbers from a CPU-only run say nothing about GPUs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lowrank_blocks import error_surface, error_vs_budget  # noqa: E402

GRIDS = [1, 2, 4, 8, 16]


def backend(name: str) -> tuple[object, object, str]:
    """``(to_device, synchronize, description)`` for ``torch`` (CUDA if available) or ``cupy``."""
    if name == "cupy":
        import cupy

        def sync_cupy() -> None:
            cupy.cuda.Device().synchronize()

        props = cupy.cuda.runtime.getDeviceProperties(0)
        return cupy.asarray, sync_cupy, f"CuPy {cupy.__version__}, {props['name'].decode()}"
    import torch

    if torch.cuda.is_available():
        device = torch.device("cuda")

        def sync_torch() -> None:
            torch.cuda.synchronize()

        desc = f"PyTorch {torch.__version__}, {torch.cuda.get_device_name(0)}"
    else:
        device = torch.device("cpu")

        def sync_torch() -> None:
            pass

        desc = f"PyTorch {torch.__version__} on the CPU (no CUDA device: not a GPU measurement)"
    return (lambda x: torch.asarray(np.ascontiguousarray(x), device=device)), sync_torch, desc


def timed(fn, sync, repeat: int) -> tuple[float, object]:
    """Median seconds of ``repeat`` calls (after one warm-up call) and the last result."""
    out = fn()
    sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def model(d: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A transformer-like set of float32 weights at width ``d // 4`` (attention and MLP)."""
    h = max(8, d // 4)
    shapes = {"q": (h, h), "k": (h, h), "v": (h, h), "o": (h, h), "up": (4 * h, h),
              "down": (h, 4 * h)}
    return {f"layer.{i}.{name}.weight": (rng.standard_normal(s) / np.sqrt(s[1])).astype(np.float32)
            for i in range(2) for name, s in shapes.items()}


def scan(weights: dict, lora_rank: int = 8) -> list[float]:
    errors = []
    for W in weights.values():
        m, n = (int(s) for s in W.shape)
        curve = error_vs_budget(W, [lora_rank * (m + n)], allocation=("uniform", "optimal"))
        errors.extend(float(p.error) for p in curve.points)
    return errors


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backend", choices=["torch", "cupy"], default="torch")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, one repeat: checks the device path (CI)")
    parser.add_argument("--skip-cpu", action="store_true",
                        help="device times only (the CPU runs of 8192² take minutes)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.repeat = [512], 1
    to_device, sync, desc = backend(args.backend)
    print(f"device: {desc}; host: {platform.machine()}, {os.cpu_count()} cores")
    print("| d | computation | device s | CPU s | CPU ÷ device | max abs error diff |")
    print("|---|---|---|---|---|---|")
    rows = []
    for d in args.sizes:
        rng = np.random.default_rng(0)
        W = rng.standard_normal((d, d))
        Wd = to_device(W)
        budget = d * d // 10
        runs = {
            "exact surface": dict(method="exact"),
            "auto surface": dict(method="auto"),
            "randomized surface (10 % of dense)": dict(method="randomized", max_params=budget,
                                                       random_state=0),
        }
        if args.quick:  # a shallow Krylov space, so that block Krylov runs at d = 512 too
            runs["randomized surface (10 % of dense)"]["n_iter"] = 1
        for label, opts in runs.items():
            def on(X, opts=opts):
                return error_surface(X, grids=GRIDS, families=["grid"], **opts)

            t_dev, surf_dev = timed(lambda: on(Wd), sync, args.repeat)
            if args.skip_cpu:
                t_cpu, diff = float("nan"), float("nan")
            else:
                t_cpu, surf_cpu = timed(lambda: on(W), lambda: None, args.repeat)
                diff = float(np.max(np.abs(surf_dev.to_frame()["error"].to_numpy()
                                           - surf_cpu.to_frame()["error"].to_numpy())))
            rows.append(dict(d=d, what=label, device=t_dev, cpu=t_cpu, diff=diff))
        weights = model(d, rng)
        weights_dev = {k: to_device(v) for k, v in weights.items()}
        t_dev, err_dev = timed(lambda: scan(weights_dev), sync, args.repeat)
        if args.skip_cpu:
            t_cpu, diff = float("nan"), float("nan")
        else:
            t_cpu, err_cpu = timed(lambda: scan(weights), lambda: None, args.repeat)
            diff = float(np.max(np.abs(np.array(err_dev) - np.array(err_cpu))))
        h = max(8, d // 4)
        rows.append(dict(d=d, what=f"model scan (12 float32 matrices of width {h}, LoRA rank 8)",
                         device=t_dev, cpu=t_cpu, diff=diff))
        for r in rows[-4:]:
            print(f"| {r['d']} | {r['what']} | {r['device']:.3f} | {r['cpu']:.3f} | "
                  f"{r['cpu'] / r['device']:.2f} | {r['diff']:.1e} |", flush=True)
    return rows


if __name__ == "__main__":
    main()
