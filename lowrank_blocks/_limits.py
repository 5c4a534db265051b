"""Memory limits: every large allocation is checked against one documented limit before it is made.

The limit is, in order of precedence: the ``max_bytes`` argument of the call, the environment
variable ``LOWRANK_BLOCKS_MAX_BYTES`` (bytes, or a number with a ``K``/``M``/``G``/``T`` suffix,
powers of 1024), or, by default, the memory the operating system reports as available
(``MemAvailable`` in ``/proc/meminfo``; the physical memory where that file is missing).
"""

from __future__ import annotations

import os
import re

__all__ = ["ENV_VAR", "MemoryLimitError", "check_bytes", "format_bytes", "memory_limit"]

ENV_VAR = "LOWRANK_BLOCKS_MAX_BYTES"

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


class MemoryLimitError(ValueError, MemoryError):
    """A size that would exceed the memory limit, refused before any memory is spent.

    It is a ``ValueError`` (the input asks for too much) and a ``MemoryError`` (what it guards
    against), so either ``except`` clause catches it.
    """


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``.

    Examples
    --------
    >>> format_bytes(1536)
    '1.5 KiB'
    >>> format_bytes(12 * 1024**3)
    '12.0 GiB'
    """
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _parse(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, flags=re.IGNORECASE)
    if match is None:
        raise ValueError(
            f"{ENV_VAR}={text!r} is not a size; use bytes or a number with K, M, G or T "
            f"(for example 8G)"
        )
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def _available() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - exotic platforms
        return 2**63 - 1


def memory_limit(max_bytes: int | None = None) -> int:
    """The limit in bytes: ``max_bytes`` if given, else ``$LOWRANK_BLOCKS_MAX_BYTES``, else the
    memory available now.

    Examples
    --------
    >>> memory_limit(2**30)
    1073741824
    """
    if max_bytes is not None:
        from ._validate import as_int

        return as_int(max_bytes, "max_bytes", minimum=1)
    text = os.environ.get(ENV_VAR)
    if text:
        return _parse(text)
    return _available()


def check_bytes(
    nbytes: int,
    what: str,
    *,
    max_bytes: int | None = None,
    hint: str = "",
    argument: str | None = None,
) -> None:
    """Refuse, before allocating, an operation that would need ``nbytes`` beyond the limit.

    Parameters
    ----------
    nbytes : int
        The bytes the operation would need.
    what : str
        What needs them, as the message should say it (``"reading 'W' from model.npz"``).
    max_bytes : int, optional
        An explicit limit, overriding the environment variable and the available memory.
    hint : str
        A sentence appended to the message (another route, such as the randomized method).
    argument : str, optional
        The caller's own argument that raises the limit (``"max_bytes"``), named in the message
        beside the environment variable; ``None`` when the caller has none.

    Raises
    ------
    MemoryLimitError
        Naming ``what``, the size needed, the limit and how to raise it.

    Examples
    --------
    >>> check_bytes(10, "a test", max_bytes=100)
    >>> check_bytes(2**40, "reading 'W' from x.npz", max_bytes=2**30, argument="max_bytes")
    Traceback (most recent call last):
    ...
    lowrank_blocks._limits.MemoryLimitError: reading 'W' from x.npz would need 1.0 TiB, more than the limit of 1.0 GiB (max_bytes); raise it with max_bytes= or the environment variable LOWRANK_BLOCKS_MAX_BYTES (e.g. LOWRANK_BLOCKS_MAX_BYTES=1T)
    """
    limit = memory_limit(max_bytes)
    if nbytes <= limit:
        return
    if max_bytes is not None:
        source = "max_bytes"
    elif os.environ.get(ENV_VAR):
        source = ENV_VAR
    else:
        source = "the memory available now"
    suggestion = format_bytes(2 ** max(0, (int(nbytes) - 1).bit_length())).split()
    example = f"{suggestion[0].split('.')[0]}{suggestion[1][0] if suggestion[1] != 'B' else ''}"
    how = f"{argument}= or the environment variable" if argument else "the environment variable"
    message = (
        f"{what} would need {format_bytes(nbytes)}, more than the limit of "
        f"{format_bytes(limit)} ({source}); raise it with {how} {ENV_VAR} "
        f"(e.g. {ENV_VAR}={example})"
    )
    if hint:
        message += f". {hint}"
    raise MemoryLimitError(message)
