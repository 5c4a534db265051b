"""Numba kernels for the work that is not a LAPACK call, each with a NumPy fallback.

Only one kernel earned its place (``benchmarks/bench_kernels.py`` measures each candidate against
its NumPy version in the same run):

* :func:`greedy_fill` — rank allocation over many blocks and many budgets.  The greedy scan
  takes items in order of gain per parameter and skips those that no longer fit; the skip makes
  it a sequential loop that NumPy cannot vectorise, so the fallback is a Python loop.

Surface assembly from singular values (column sums and a reverse cumulative sum over the
zero-padded spectra) was measured too: a numba candidate is about 4× faster than the NumPy code,
but the step takes 10–40 µs per grid next to seconds of SVD, and compiling it costs more than it
could ever save in a session, so it stays NumPy (see the benchmark for the numbers).

The fallback is used when numba is not installed or cannot compile for the input; set the
environment variable ``LOWRANK_BLOCKS_DISABLE_NUMBA=1`` to force it.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["NUMBA_AVAILABLE", "greedy_fill", "greedy_fill_numpy"]


def greedy_fill_numpy(
    costs: np.ndarray, gains: np.ndarray, budgets: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy knapsack fill for several budgets (reference implementation, pure Python loop).

    Parameters
    ----------
    costs, gains : numpy.ndarray, shape (n_items,)
        Items already sorted by ``gain / cost``, best first; ``costs`` int64, ``gains`` float64.
    budgets : numpy.ndarray, shape (n_budgets,)
        int64 budgets.

    Returns
    -------
    used, taken, left : numpy.ndarray
        For every budget: parameters used (int64), sum of gains taken and sum of gains left
        (both float64; ``left`` is accumulated directly, not as ``total − taken``).
    """
    n_b = budgets.shape[0]
    used = np.zeros(n_b, dtype=np.int64)
    taken = np.zeros(n_b, dtype=np.float64)
    left = np.zeros(n_b, dtype=np.float64)
    cost_list = costs.tolist()
    gain_list = gains.tolist()
    for k in range(n_b):
        remaining = int(budgets[k])
        t = 0.0
        lo = 0.0
        for c, g in zip(cost_list, gain_list):
            if c <= remaining:
                remaining -= c
                t += g
            else:
                lo += g
        used[k] = int(budgets[k]) - remaining
        taken[k] = t
        left[k] = lo
    return used, taken, left


NUMBA_AVAILABLE = False
_greedy_fill_numba = None
if os.environ.get("LOWRANK_BLOCKS_DISABLE_NUMBA", "") not in ("1", "true", "yes"):
    try:
        import numba

        @numba.njit(cache=True, nogil=True)
        def _greedy_fill_numba(costs, gains, budgets):  # pragma: no cover - compiled
            n_b = budgets.shape[0]
            used = np.zeros(n_b, dtype=np.int64)
            taken = np.zeros(n_b, dtype=np.float64)
            left = np.zeros(n_b, dtype=np.float64)
            for k in range(n_b):
                remaining = budgets[k]
                t = 0.0
                lo = 0.0
                for i in range(costs.shape[0]):
                    c = costs[i]
                    if c <= remaining:
                        remaining -= c
                        t += gains[i]
                    else:
                        lo += gains[i]
                used[k] = budgets[k] - remaining
                taken[k] = t
                left[k] = lo
            return used, taken, left

        NUMBA_AVAILABLE = True
    except ImportError:  # numba is optional: the NumPy fallback below is used
        pass


def greedy_fill(
    costs: np.ndarray, gains: np.ndarray, budgets: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy knapsack fill; the numba kernel when it compiles, else :func:`greedy_fill_numpy`.

    Examples
    --------
    >>> import numpy as np
    >>> used, taken, left = greedy_fill(
    ...     np.array([3, 2, 2]), np.array([6.0, 3.0, 1.0]), np.array([4, 7]))
    >>> used.tolist(), taken.tolist(), left.tolist()
    ([3, 7], [6.0, 10.0], [4.0, 0.0])
    """
    costs = np.ascontiguousarray(costs, dtype=np.int64)
    gains = np.ascontiguousarray(gains, dtype=np.float64)
    budgets = np.ascontiguousarray(budgets, dtype=np.int64)
    if _greedy_fill_numba is not None:
        try:
            return _greedy_fill_numba(costs, gains, budgets)
        except Exception:  # noqa: BLE001 - any compile/typing failure: use the fallback
            pass
    return greedy_fill_numpy(costs, gains, budgets)
