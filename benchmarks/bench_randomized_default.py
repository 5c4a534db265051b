"""The randomized surface with the defaults ÷ the exact one at d = 2048: medians of 5 pairs.

Run ``python benchmarks/bench_randomized_default.py``.  A float64 Gaussian 2048 × 2048 matrix,
K ∈ {1, 2, 4, 8, 16}, budgets up to 10 % of dense; CPU work (one thread) and wall clock, each
randomized run after a warm-up randomized run, and the largest error difference.
"""

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402,F401  (its BLAS loaded now, so thread limits reach it)
from _timing import cpu_work  # noqa: E402

from lowrank_blocks import error_surface  # noqa: E402

d = 2048
W = np.random.default_rng(0).standard_normal((d, d))
kw = dict(grids=[1,2,4,8,16], families=["grid"], max_params=d*d//10)
e = error_surface(W, method="exact", **kw).to_frame()
cpu, wall = [], []


def wt(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


error_surface(W, method="randomized", random_state=0, **kw)
for _rep in range(5):
    ce = cpu_work(lambda: error_surface(W, method="exact", **kw))
    error_surface(W, method="randomized", random_state=0, **kw)
    cpu.append(cpu_work(lambda: error_surface(W, method="randomized", random_state=0, **kw)) / ce)
    we = wt(lambda: error_surface(W, method="exact", **kw))
    wall.append(wt(lambda: error_surface(W, method="randomized", random_state=0, **kw)) / we)
r = error_surface(W, method="randomized", random_state=0, **kw).to_frame()
m = e.merge(r, on=["p","q","rank"], suffixes=("_e","_r"))
print(f"cpu {statistics.median(cpu):.3f} {sorted(round(x,3) for x in cpu)} wall {statistics.median(wall):.3f} {sorted(round(x,3) for x in wall)} maxdiff={(m.error_r-m.error_e).max():.2e}", flush=True)
