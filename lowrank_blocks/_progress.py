"""One progress bar for the whole toolkit: tqdm, in a terminal and in Jupyter.

``tqdm.auto`` picks the notebook widget in Jupyter but warns ("IProgress not found") when
``ipywidgets`` is missing; then the plain text bar is used instead, which Jupyter shows too.
Bars are off when ``enabled`` is false and on streams that are not terminals (``disable=None``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from typing import Any

__all__ = ["progress_bar"]


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython  # type: ignore[import-not-found]
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _tqdm_class(in_notebook: bool) -> Any:
    if in_notebook and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm

        return tqdm
    from tqdm.std import tqdm

    return tqdm


def progress_bar(iterable: Iterable[Any] | None = None, *, enabled: bool = True, **kwargs: Any) -> Any:
    """A tqdm bar over ``iterable`` (or a manual one with ``total=``), shown only on terminals
    and notebooks, never when ``enabled`` is false.

    Examples
    --------
    >>> list(progress_bar(range(3), enabled=False))
    [0, 1, 2]
    """
    notebook = _in_notebook()
    tqdm = _tqdm_class(notebook)
    kwargs.setdefault("leave", False)
    # A notebook's output stream is no terminal, yet shows the text bar: show it there too.
    disable = (False if notebook else None) if enabled else True
    return tqdm(iterable, disable=disable, **kwargs)
