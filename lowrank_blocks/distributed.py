"""Whole checkpoints on a Dask cluster: one task per matrix, each opening its own tensor.

A 70-billion-parameter checkpoint holds about 560 matrices of up to 8192 × 28672; their exact
spectra take days on one machine.  The analyses of :mod:`lowrank_blocks.layers` (and any other
per-matrix work) run unchanged on a `Dask <https://distributed.dask.org>`_ cluster:

* :func:`map_matrices` submits **one task per matrix**.  A task receives the matrix's
  :class:`~lowrank_blocks.models.NamedMatrix` (a file name, a key and byte offsets: a few hundred
  bytes) and reads the tensor itself, on the worker, so tensors never travel through the
  scheduler.  Every worker must therefore see the checkpoint under the same path (a shared file
  system, or a copy on every node).
* Results come back **in the order of the matrices**, the order of a serial run, whatever order
  the workers finish in; they are the numbers the serial code computes, because each task runs
  that very code.
* **Failures.** A worker that dies (killed, out of memory, its node lost) takes its running
  tasks with it; the scheduler runs them again on another worker, and a result is kept once per
  matrix, so no row is lost or duplicated.  On a cluster started here (``client=N``) a task may
  outlive ``retries + 1`` worker deaths, at least Dask's default of 3; on an existing cluster
  its scheduler's ``distributed.scheduler.allowed-failures`` decides.  A task that *raises* is
  re-run up to ``retries`` times (Dask's ``retries=``: a file system that blinked, a worker's
  ``MemoryError``); if it still fails, the error is raised here, with the name of the tensor
  (and its file) in its message and the type of the original error.
* **Progress**: Dask's own bar, ``distributed.progress``: a text bar on the terminal (on
  standard error, so standard output stays a clean table), a widget in Jupyter.
* **One core per task.**  Dask sizes a worker by its threads (one per core) and starts its
  workers with one BLAS thread each; every task here decomposes its matrix on one core, so a
  worker of ``t`` threads keeps ``t`` cores busy with ``t`` matrices.  The largest matrices
  (by ``m n min(m, n)``, their flops) are started first, so the run does not end waiting on
  one long task.

``client=`` accepts a ``distributed.Client`` (used as it is and left open), a cluster object
(a ``LocalCluster``, or ``dask_jobqueue.SLURMCluster``, ``dask_kubernetes``' ``KubeCluster``...: a
client is connected to it and closed afterwards), a scheduler address such as
``"tcp://10.0.0.5:8786"`` (likewise), or an integer ``N``: a ``LocalCluster`` of ``N`` worker
processes on this machine, sharing its cores, started for the call and closed afterwards.

Nothing here is imported by the core: Dask is needed only when a client is given
(``pip install 'lowrank_blocks[distributed]'``).

Examples
--------
Without a client, :func:`map_matrices` is a plain loop in this process (what the serial code
paths use), with the same ordering and error messages:

>>> import numpy as np
>>> from lowrank_blocks.distributed import map_matrices
>>> from lowrank_blocks.models import open_model
>>> mats = open_model({"a": np.eye(3), "b": np.ones((2, 4))})
>>> map_matrices(lambda m: (m.name, float(m.load().sum())), mats, progress=False)
[('a', 3.0), ('b', 8.0)]

On a cluster (``client=2`` starts two worker processes here; a scheduler address joins an
existing cluster)::

    from lowrank_blocks import analyze_layers
    table = analyze_layers("model.safetensors", lora_rank=8, client=2).to_frame()
    table = analyze_layers("model.safetensors", lora_rank=8,
                           client="tcp://scheduler:8786").to_frame()
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

__all__ = ["DEFAULT_RETRIES", "MatrixTask", "connect", "map_matrices"]

DEFAULT_RETRIES = 2
"""Re-runs of a task that raised, and the least number of worker deaths a task outlives on a
cluster started here (Dask's own default for the latter is 3)."""

_INSTALL_HINT = "pip install 'lowrank_blocks[distributed]' (dask and distributed)"


def _distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(
            f"a Dask client needs the distributed package: {_INSTALL_HINT}"
        ) from exc
    return distributed


def _check_retries(retries: Any) -> int:
    from ._validate import as_int

    return as_int(retries, "retries", minimum=0)


def _workers_threads(n_workers: int) -> int:
    """Threads per worker of a local cluster: this machine's cores shared among the workers."""
    return max(1, (os.cpu_count() or 1) // n_workers)


@contextlib.contextmanager
def connect(client: Any, *, retries: int = DEFAULT_RETRIES) -> Iterator[Any]:
    """A ``distributed.Client`` for the duration of a ``with`` block.

    Parameters
    ----------
    client : Client, cluster, str or int
        A ``distributed.Client``: used as it is, left open.  A cluster object (``LocalCluster``,
        ``dask_jobqueue.SLURMCluster``...): a client connected to it, closed afterwards (the
        cluster stays).  A scheduler address (``"tcp://host:8786"``): likewise.  An integer
        ``N >= 1``: a ``LocalCluster`` of ``N`` worker processes on this machine (its cores
        shared among them, one BLAS thread per task; the dashboard, if Bokeh is installed, on
        a free port: ``client.dashboard_link``), started here and closed with its client
        afterwards.
    retries : int, default 2
        For a cluster started here: a task outlives ``max(3, retries + 1)`` deaths of the
        workers running it before it is reported lost.

    Raises
    ------
    TypeError
        For any other kind of ``client``.
    ImportError
        When ``distributed`` is not installed.
    OSError
        When no scheduler answers at the address (Dask's ``TimeoutError``).

    Examples
    --------
    >>> from lowrank_blocks.distributed import connect
    >>> with connect(1) as client:  # doctest: +SKIP
    ...     print(len(client.scheduler_info()["workers"]))
    1
    """
    retries = _check_retries(retries)
    if isinstance(client, (bool, np.bool_)) or client is None:
        raise TypeError(
            f"client={client!r} must be a distributed.Client, a cluster, a scheduler address "
            f"(str) or a number of local worker processes (int)"
        )
    if isinstance(client, (int, np.integer)):
        from ._validate import as_int

        n_workers = as_int(client, "client (a number of worker processes)", minimum=1)
        distributed = _distributed()
        import dask

        allowed = max(3, retries + 1)
        with dask.config.set({"distributed.scheduler.allowed-failures": allowed}):
            cluster = distributed.LocalCluster(
                n_workers=n_workers, threads_per_worker=_workers_threads(n_workers),
                processes=True, dashboard_address=":0",  # any free port: none is taken
            )
        try:
            with distributed.Client(cluster) as made:
                yield made
        finally:
            cluster.close()
        return
    distributed = _distributed()
    if isinstance(client, distributed.Client):
        yield client
        return
    if isinstance(client, str) or hasattr(client, "scheduler_address"):
        where = client if isinstance(client, str) else client.scheduler_address
        try:
            made = distributed.Client(client)
        except OSError as exc:  # TimeoutError included: nobody answers there
            raise OSError(f"no Dask scheduler answered at {where!r}: {exc}") from exc
        with made:
            yield made
        return
    raise TypeError(
        f"client={client!r} must be a distributed.Client, a cluster, a scheduler address (str) "
        f"or a number of local worker processes (int)"
    )


# -- the task -----------------------------------------------------------------------------------


class MatrixTask:
    """``func(matrix)`` as a task: run on one core, errors named after the matrix.

    Picklable when ``func`` is (a module-level function, a ``functools.partial`` of one, or an
    instance of a module-level class).  :func:`map_matrices` wraps its function in it; it is
    public so that other mappers (``client.map``, a process pool) can use it too.

    Examples
    --------
    >>> import numpy as np
    >>> from lowrank_blocks.models import open_model
    >>> from lowrank_blocks import prepare
    >>> m = open_model({"w": np.full((2, 2), np.nan)})["w"]
    >>> MatrixTask(lambda m: prepare(m.load()))(m)
    Traceback (most recent call last):
    ...
    ValueError: matrix 'w' of the state_dict: W has 4 NaN or infinite entries; only finite values are allowed
    """

    def __init__(self, func: Callable[[Any], Any], *, one_core: bool = True) -> None:
        self.func = func
        self.one_core = one_core

    def __call__(self, matrix: Any) -> Any:
        with _one_core(self.one_core):
            try:
                return self.func(matrix)
            except Exception as exc:
                named = _named(exc, matrix)
                if named is exc:
                    raise
                raise named.with_traceback(exc.__traceback__) from None

    def __repr__(self) -> str:
        return f"MatrixTask({self.func!r})"


@contextlib.contextmanager
def _one_core(enabled: bool) -> Iterator[None]:
    """Decompositions of this thread on one core: the toolkit's own thread pools off.

    (Dask starts its workers with one BLAS thread; :mod:`lowrank_blocks.linalg` would still
    spread the blocks of a matrix over a thread per core of the machine, competing with the
    worker's other threads.)
    """
    from . import linalg

    flag = getattr(linalg, "_SERIAL", None)
    if not enabled or flag is None:
        yield
        return
    before = getattr(flag, "on", False)
    flag.on = True
    try:
        yield
    finally:
        flag.on = before


def _where(matrix: Any) -> str:
    reader = getattr(matrix, "reader", None)
    try:
        return str(reader.where()) if reader is not None and hasattr(reader, "where") else ""
    except Exception:  # pragma: no cover - a reader that cannot describe itself
        return ""


def _named(exc: BaseException, matrix: Any) -> BaseException:
    """The same error with the matrix's name (and file) at the front of its message."""
    name = getattr(matrix, "name", None)
    if name is None:
        return exc
    text = str(exc.args[0]) if len(exc.args) == 1 and isinstance(exc.args[0], str) else str(exc)
    if repr(str(name)) in text:
        return exc  # the message already says which tensor
    where = _where(matrix)
    prefix = f"matrix {name!r}" + (f" of {where}" if where and where not in text else "")
    if isinstance(exc, FileNotFoundError):
        text += " (on a cluster, every worker must see the checkpoint under the same path)"
    try:
        named = type(exc)(f"{prefix}: {text}")
    except Exception:
        named = RuntimeError(f"{prefix}: {type(exc).__name__}: {text}")
    return named


# -- the map ------------------------------------------------------------------------------------


def map_matrices(
    func: Callable[[Any], Any],
    matrices: Iterable[Any],
    *,
    client: Any = None,
    retries: int = DEFAULT_RETRIES,
    progress: bool = True,
    desc: str = "matrices",
) -> list[Any]:
    """``[func(m) for m in matrices]``, one task per matrix on a Dask cluster, in order.

    The generic entry point of the toolkit's distributed work (:func:`~lowrank_blocks.layers.analyze_layers`
    uses it; any per-matrix computation can).

    Parameters
    ----------
    func : callable
        ``func(matrix) -> result``, called on a worker with one item of ``matrices``; it reads
        the tensor there (``matrix.load()``).  Must be picklable: a module-level function, a
        ``functools.partial`` of one, or an instance of a module-level class.  Its result is
        sent back, so it should be small (spectra, a table row), not the tensor.
    matrices : iterable
        Usually :class:`~lowrank_blocks.models.NamedMatrix` objects (an
        :func:`~lowrank_blocks.models.open_model` listing): each is a few hundred bytes (file,
        key, offsets).  Any picklable objects are allowed; objects that hold their tensor (a
        ``state_dict`` passed in memory) send it with the task.
    client : Client, cluster, str, int or None
        Where to run (see :func:`connect`): ``None`` runs the loop here, in this process.
    retries : int, default 2
        Re-runs of a task that raises (Dask's ``retries=``); see :func:`connect` for worker
        deaths.
    progress : bool, default True
        Dask's progress bar (on standard error in a terminal, a widget in Jupyter; none when
        standard error is not a terminal); without a client, the toolkit's own bar.
    desc : str
        Label of the tasks (the prefix of their keys on the dashboard) and of the serial bar.

    Returns
    -------
    list
        ``func(m)`` for every ``m``, in the order of ``matrices``.

    Raises
    ------
    Exception
        The first failure gathered (after its retries), of the type ``func`` raised, its
        message starting with ``matrix '<name>' of <file>:``; the tasks still queued are
        cancelled.

    Examples
    --------
    >>> import numpy as np
    >>> from lowrank_blocks.models import open_model
    >>> mats = open_model({"a": np.eye(3), "b": np.ones((2, 4))})
    >>> map_matrices(lambda m: m.shape, mats, progress=False)
    [(3, 3), (2, 4)]
    """
    retries = _check_retries(retries)
    if not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"progress={progress!r} must be True or False")
    if not callable(func):
        raise TypeError(f"func={func!r} must be callable: func(matrix) -> result")
    items = list(matrices)
    if client is None:
        from ._progress import progress_bar

        task = MatrixTask(func, one_core=False)
        return [task(m) for m in progress_bar(items, enabled=bool(progress), desc=desc,
                                              unit="matrix")]
    with connect(client, retries=retries) as dask_client:
        return _run(dask_client, MatrixTask(func), items, retries, bool(progress), desc)


def _cost(matrix: Any) -> float:
    """Flops of a matrix's spectra, up to a constant: ``m n min(m, n)`` (0 if unknown)."""
    shape = getattr(matrix, "shape", None)
    try:
        m, n = (int(d) for d in shape)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return 0.0
    return float(m) * n * min(m, n)


def _key_label(desc: str) -> str:
    label = "".join(ch if ch.isalnum() or ch in "_" else "_" for ch in desc).strip("_")
    return label or "matrices"


def _run(client: Any, task: MatrixTask, items: list[Any], retries: int, progress: bool,
         desc: str) -> list[Any]:
    if not items:
        return []
    token = uuid.uuid4().hex
    label = _key_label(desc)
    # The largest matrices first (higher priority runs first): the last tasks to start are
    # the short ones, so the run does not wait on one long task at its end.
    order = sorted(range(len(items)), key=lambda k: (_cost(items[k]), -k))  # ties: in order
    priority = {k: rank for rank, k in enumerate(order)}
    futures = [client.submit(task, item, key=f"{label}-{token}-{k}", retries=retries,
                             pure=False, priority=priority[k])
               for k, item in enumerate(items)]
    done = False
    try:
        _show_progress(futures, progress)
        results = client.gather(futures)
        done = True
        return list(results)
    finally:
        if not done:
            client.cancel(futures)


def _terminal() -> bool:
    return sys.stderr.isatty()


def _show_progress(futures: list[Any], enabled: bool) -> None:
    """Dask's progress bar: a widget in Jupyter, a text bar on a terminal's standard error."""
    if not enabled:
        return
    from ._progress import _in_notebook

    notebook = _in_notebook()
    if not notebook and not _terminal():
        return
    from distributed import progress

    if notebook and importlib.util.find_spec("ipywidgets") is not None:
        from IPython.display import display

        display(progress(futures, notebook=True, multi=False))
        return
    # Dask's text bar writes to standard output; keep that for the table. It blocks until
    # every task has finished, or one has failed.
    with contextlib.redirect_stdout(sys.stderr):
        progress(futures, notebook=False)
