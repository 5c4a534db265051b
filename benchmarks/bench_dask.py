"""Scanning a checkpoint on Dask: two worker processes against one, and memory per worker.

Run ``python benchmarks/bench_dask.py [--matrices 48] [--size 1024] [--shapes 1024x8192,...]``.
It prints

1. the throughput (matrices per second) of
   :func:`lowrank_blocks.layers.analyze_layers` at LoRA rank 8 per matrix on a synthetic
   checkpoint of 48 float32 matrices of 1024 × 1024 (a ``.safetensors`` file the workers read
   themselves), on a fresh ``LocalCluster`` of one worker process and on one of two (one thread
   each), in the same run, and their ratio (target ≥ 1.7 where two cores are free: each task
   decomposes its matrix on one core); the two tables are checked equal;
2. the peak resident memory of every worker process over its run (``ru_maxrss``: the
   interpreter, NumPy and Dask, and one matrix's analysis at a time);
3. with ``--shapes``: the wall and CPU time, and the worker's peak memory, of one matrix of
   each shape analysed on one core (a fresh cluster of one single-threaded worker), the
   figures ``docs/scaling.md`` plans a 70B scan with.
"""

from __future__ import annotations

import argparse
import json
import resource
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lowrank_blocks.layers import analyze_layers  # noqa: E402


def write_checkpoint(path: Path, shapes: list[tuple[int, int]], seed: int = 0) -> Path:
    """A float32 ``.safetensors`` checkpoint (written by hand: no extra package needed)."""
    rng = np.random.default_rng(seed)
    header, offset = {}, 0
    with open(path, "wb") as f:
        names = [f"layers.{k}.weight" for k in range(len(shapes))]
        for name, (m, n) in zip(names, shapes):
            header[name] = {"dtype": "F32", "shape": [m, n],
                            "data_offsets": [offset, offset + 4 * m * n]}
            offset += 4 * m * n
        text = json.dumps(header).encode()
        text += b" " * (-len(text) % 8)
        f.write(struct.pack("<Q", len(text)) + text)
        for m, n in shapes:  # a decaying spectrum, as trained weights have
            scale = (1.0 + np.arange(n)) ** -0.5
            f.write((rng.standard_normal((m, n)).astype(np.float32) * scale.astype(
                np.float32)).tobytes())
    return path


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def scan_on(path: Path, n_workers: int) -> tuple[float, float, list[int], object]:
    """Wall seconds of one scan on a fresh cluster of ``n_workers`` one-thread processes (after
    a warm-up on small matrices), the CPU seconds its workers spent, the peak RSS of every
    worker, and the table."""
    from distributed import Client, LocalCluster

    from lowrank_blocks.models import open_model

    mm = open_model(path)
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        small = {f"w{k}": np.eye(64, dtype=np.float32) for k in range(4 * n_workers)}
        analyze_layers(small, lora_rank=8, client=client, progress=False)  # imports, warm-up
        cpu0 = sum(client.run(time.process_time).values())
        t0 = time.perf_counter()
        table = analyze_layers(mm, lora_rank=8, client=client, progress=False).to_frame()
        seconds = time.perf_counter() - t0
        cpu = sum(client.run(time.process_time).values()) - cpu0
        peaks = sorted(client.run(_peak_rss).values())
    return seconds, cpu, peaks, table


def _timed_scan(path: str) -> tuple[float, float, int]:
    """On a worker: one matrix's analysis on one core (wall and CPU seconds, peak RSS)."""
    from lowrank_blocks.distributed import _one_core

    analyze_layers({"w": np.eye(64, dtype=np.float32)}, lora_rank=8, progress=False)  # warm-up
    with _one_core(True):
        t0, c0 = time.perf_counter(), time.process_time()
        analyze_layers(path, lora_rank=8, progress=False)
        return time.perf_counter() - t0, time.process_time() - c0, _peak_rss()


def time_one(path: Path) -> tuple[float, float, int]:
    """:func:`_timed_scan` in a fresh one-worker, one-thread cluster (BLAS on one thread)."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        return client.submit(_timed_scan, str(path), pure=False).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrices", type=int, default=48)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--shapes", default="",
                        help="comma-separated MxN shapes timed one matrix at a time on one core")
    args = parser.parse_args()
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        path = write_checkpoint(Path(tmp) / "synthetic.safetensors",
                                [(args.size, args.size)] * args.matrices)
        t1, cpu1, peaks1, table1 = scan_on(path, 1)
        t2, cpu2, peaks2, table2 = scan_on(path, 2)
        pd.testing.assert_frame_equal(table1, table2, check_exact=True)
        mib = 2**20
        print(f"scan of {args.matrices} float32 matrices of {args.size} × {args.size} "
              f"(LoRA rank 8 each), one task per matrix:")
        print(f"  1 worker : {t1:6.1f} s, {args.matrices / t1:5.2f} matrices/s, "
              f"{cpu1 / args.matrices:.2f} CPU s per matrix ({cpu1 / t1:.2f} cores busy), "
              f"peak memory {peaks1[0] / mib:.0f} MiB")
        print(f"  2 workers: {t2:6.1f} s, {args.matrices / t2:5.2f} matrices/s, "
              f"{cpu2 / args.matrices:.2f} CPU s per matrix ({cpu2 / t2:.2f} cores busy), "
              f"peak memory per worker {', '.join(f'{p / mib:.0f}' for p in peaks2)} MiB")
        print(f"  throughput ratio 2 workers / 1 worker: {t1 / t2:.2f} (target ≥ 1.7); "
              f"tables equal")
        for text in filter(None, args.shapes.split(",")):
            m, n = (int(v) for v in text.lower().split("x"))
            one = write_checkpoint(Path(tmp) / f"{m}x{n}.safetensors", [(m, n)])
            wall, cpu, peak = time_one(one)
            print(f"  one {m} × {n} matrix on one core: {wall:7.1f} s wall, {cpu:7.1f} s CPU, "
                  f"worker peak memory {peak / mib:.0f} MiB")
            one.unlink()


if __name__ == "__main__":
    main()
