"""Run the Fig. 2 experiment: ``python -m analysis.fig2 [--quick] [--out results]``.

Writes ``fig2.png``, ``fig2_table.csv``, ``fig2_bridge.csv`` and ``fig2_summary.md`` (plus
``fig2_runs.csv``, ``fig2_configs.csv`` and ``fig2_bridge.png``) to the output folder.
"""

from __future__ import annotations

import os

# The matrices of this experiment are tiny (batches of 64 against a 64 × 784 weight), and
# multi-threaded BLAS makes them about ten times slower on a 2-core machine; set before NumPy loads.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
from pathlib import Path  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.fig2",
        description="Reproduce the paper's Fig. 2: LoRA, MELoRA and Localized LoRA adapters on a "
        "frozen MNIST MLP (digits 0-4 -> 5-9).",
    )
    parser.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="reduced run (one learning rate, three configurations, one epoch, a few thousand "
        "images), seconds instead of minutes",
    )
    parser.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    from dataclasses import replace

    from .report import write_results
    from .sweep import Settings, run_sweep

    settings = Settings.quick() if args.quick else Settings()
    if args.epochs is not None:
        settings = replace(settings, epochs=args.epochs)
    results = run_sweep(settings, progress=not args.no_progress)
    paths = write_results(results, args.out)
    full = results.full
    print(
        f"full fine-tuning: {full['test_accuracy_mean']:.2f} ± {full['test_accuracy_std']:.2f}% "
        f"({full['n_seeds']} seeds); {len(results.runs)} runs in {results.wall_seconds:.0f} s"
    )
    print(results.table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    for claim in results.claims:
        print(f"- {claim['claim']}: {claim['verdict']}")
    print("wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
