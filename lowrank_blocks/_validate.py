"""Argument checks shared by every module: one message style (argument, value, what is allowed)."""

from __future__ import annotations

import operator

import numpy as np

__all__ = [
    "MAX_N_ITER",
    "MAX_OVERSAMPLING",
    "as_int",
    "check_bool",
    "check_random_state",
    "check_randomized_options",
    "check_shape",
    "some_names",
]

#: Power iterations of the randomized method beyond this are refused (4 is the default; more
#: than a few dozen never changes the result, and 10**12 would only hang).
MAX_N_ITER = 1000
#: Extra columns of the randomized range finder beyond this are refused.
MAX_OVERSAMPLING = 1 << 20


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


def check_bool(value: object, name: str) -> bool:
    """``True`` or ``False`` (NumPy booleans included); anything else is a ``TypeError``.

    Examples
    --------
    >>> check_bool(np.True_, "at_most")
    True
    >>> check_bool("no", "at_most")
    Traceback (most recent call last):
    ...
    TypeError: at_most='no' must be True or False, got str
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name}={value!r} must be True or False, got {type(value).__name__}")


def check_randomized_options(oversampling: object, n_iter: object) -> tuple[int, int]:
    """``oversampling`` in ``[0, MAX_OVERSAMPLING]`` and ``n_iter`` in ``[0, MAX_N_ITER]``.

    Examples
    --------
    >>> check_randomized_options(10, 4)
    (10, 4)
    >>> check_randomized_options(10, 10**12)
    Traceback (most recent call last):
    ...
    ValueError: n_iter=1000000000000 is too many; at most 1000 power iterations are allowed
    """
    oversampling = as_int(oversampling, "oversampling", minimum=0)
    n_iter = as_int(n_iter, "n_iter", minimum=0)
    if oversampling > MAX_OVERSAMPLING:
        raise ValueError(
            f"oversampling={oversampling} is too large; at most {MAX_OVERSAMPLING} extra "
            f"columns are allowed"
        )
    if n_iter > MAX_N_ITER:
        raise ValueError(
            f"n_iter={n_iter} is too many; at most {MAX_N_ITER} power iterations are allowed"
        )
    return oversampling, n_iter


def some_names(names: object, limit: int = 5) -> str:
    """The first ``limit`` names quoted, and a count of the rest (keeps messages one short line).

    Examples
    --------
    >>> some_names(["a", "b"])
    "'a', 'b'"
    >>> some_names([f"w{k}" for k in range(100_000)], limit=3)
    "'w0', 'w1', 'w2' and 99,997 more"
    """
    items = list(names)  # type: ignore[call-overload]
    shown = ", ".join(repr(str(n))[:80] for n in items[:limit])
    rest = len(items) - limit
    return f"{shown} and {rest:,} more" if rest > 0 else shown
