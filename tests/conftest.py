"""Shared fixtures: the array backends every core test runs on."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

BACKENDS = ["numpy", "array_api_strict", "torch"]


class Backend:
    """Convert to and from one array backend."""

    def __init__(self, name: str):
        self.name = name
        if name == "numpy":
            self.xp = np
        elif name == "array_api_strict":
            import array_api_strict

            self.xp = array_api_strict
        else:
            import torch

            self.xp = torch

    def asarray(self, x: np.ndarray):
        if self.name == "torch":
            return self.xp.asarray(np.ascontiguousarray(x))
        return self.xp.asarray(x)

    def to_numpy(self, x) -> np.ndarray:
        if self.name == "torch":
            return x.detach().cpu().numpy()
        return np.asarray(x)

    def is_native(self, x) -> bool:
        if self.name == "numpy":
            return isinstance(x, np.ndarray)
        if self.name == "torch":
            return isinstance(x, self.xp.Tensor)
        return type(x).__module__.startswith("array_api_strict")


@pytest.fixture(params=BACKENDS)
def backend(request) -> Backend:
    name = request.param
    if name != "numpy" and importlib.util.find_spec(name) is None:
        pytest.skip(f"{name} is not installed")
    return Backend(name)
