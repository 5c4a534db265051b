"""Argument checks shared by every module: one message style (argument, value, what is allowed)."""

from __future__ import annotations

import operator

import numpy as np

__all__ = ["as_int", "check_shape", "check_random_state"]


def as_int(value: object, name: str, *, minimum: int | None = None) -> int:
    """Return ``value`` as a Python int, or raise a message naming ``name`` and the value.

    Examples
    --------
    >>> as_int(3, "rank", minimum=1)
    3
    >>> as_int(2.5, "rank")
    Traceback (most recent call last):
    ...
    TypeError: rank=2.5 must be an integer, got float
    """
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}={value!r} must be an integer, not a bool")
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iu":
        value = value.item()
    try:
        result = operator.index(value)  # accepts int and NumPy integers, refuses floats
    except TypeError:
        raise TypeError(
            f"{name}={value!r} must be an integer, got {type(value).__name__}"
        ) from None
    if minimum is not None and result < minimum:
        raise ValueError(f"{name}={result} is not allowed; it must be >= {minimum}")
    return result


def check_shape(shape: object, name: str = "shape") -> tuple[int, int]:
    """A pair of positive integers ``(rows, columns)``."""
    if isinstance(shape, (str, bytes)):
        raise TypeError(f"{name}={shape!r} must be a pair (rows, columns)")
    try:
        dims = tuple(shape)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name}={shape!r} must be a pair (rows, columns)") from None
    if len(dims) != 2:
        raise ValueError(f"{name}={shape!r} must have 2 dimensions (rows, columns)")
    return as_int(dims[0], f"{name}[0]", minimum=1), as_int(dims[1], f"{name}[1]", minimum=1)


def check_random_state(random_state: object) -> np.random.Generator:
    """A NumPy generator from ``None``, an integer seed or a generator (checked even if unused)."""
    if random_state is None or isinstance(random_state, np.random.Generator):
        return np.random.default_rng(random_state)
    if isinstance(random_state, (bool, np.bool_)) or not isinstance(
        random_state, (int, np.integer)
    ):
        raise TypeError(
            f"random_state={random_state!r} must be None, an integer seed or a "
            f"numpy.random.Generator"
        )
    if random_state < 0:
        raise ValueError(f"random_state={random_state} is not allowed; seeds must be >= 0")
    return np.random.default_rng(int(random_state))
