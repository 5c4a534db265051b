"""Shared by the benchmarks: the median wall time of repeated runs, CPU work, peak memory."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def median_time(fn: Callable[[], Any], repeat: int = 7) -> float:
    """Median wall-clock seconds of ``repeat`` calls of ``fn`` (the machine is noisy)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cpu_work(fn: Callable[[], Any]) -> float:
    """CPU seconds of ``fn`` on one thread (BLAS limited to one thread, no thread pools): a
    measure of work that the load of a shared machine does not distort."""
    from threadpoolctl import threadpool_limits

    import lowrank_blocks.linalg as linalg

    linalg._SERIAL.on = True
    try:
        with threadpool_limits(limits=1):
            t0 = time.process_time()
            fn()
            return time.process_time() - t0
    finally:
        linalg._SERIAL.on = False


def peak_memory(setup: str, run: str) -> float:
    """Peak resident memory (bytes) that ``run`` adds, in a fresh Python process.

    ``setup`` runs first (imports, warm-up: not counted); then a thread samples the resident
    set size (``/proc/self/statm``) every millisecond while ``run`` executes, so allocations
    outside NumPy's tracking (LAPACK workspaces) count too.  Both are Python source; the
    repository root is on ``sys.path``.
    """
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    code = f"""
import os, sys, threading, time
sys.path.insert(0, {root!r})
{textwrap.dedent(setup)}
page = os.sysconf('SC_PAGE_SIZE')
def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * page
peak = [rss()]
base = peak[0]
done = threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.001)
thread = threading.Thread(target=sample); thread.start()
{textwrap.dedent(run)}
done.set(); thread.join()
print(peak[0] - base)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())
