"""Shared fixtures: fixed seeds, the Hypothesis profile, ``two_threads`` and the ``lib`` fixture.

``lib`` runs a test once per array library: NumPy, torch (CPU tensors) and CuPy (marked
``gpu``; skipped cleanly where CuPy or a GPU is missing). Each value provides ``to_lib`` (NumPy
array -> that library, same dtype, same strides where the library allows) and ``to_numpy``
(a result value -> NumPy), so the same assertions run against every engine.
Markers (``gpu``, ``slow``) are defined in pyproject.toml, not here.
"""

from __future__ import annotations

import os
import sys
import zlib

import numpy as np
import pytest

# the helper modules (reference.py, tolerances.py, checks.py) sit next to this file; make them
# importable whatever pytest's import mode is
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ml_dtypes  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

BF16 = np.dtype(ml_dtypes.bfloat16)

settings.register_profile(
    "fastxent",
    max_examples=60,
    deadline=None,
    derandomize=True,  # fixed seeds: CI runs the same examples every time
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("fastxent-long", parent=settings.get_profile("fastxent"),
                          max_examples=600, derandomize=False)
settings.load_profile(os.environ.get("FASTXENT_HYPOTHESIS_PROFILE", "fastxent"))


@pytest.fixture(autouse=True)
def _fixed_numpy_seed():
    """Legacy global NumPy seed, in case any code path draws from it."""
    np.random.seed(12345)
    yield


@pytest.fixture
def two_threads(monkeypatch):
    """Two Numba threads for the test, restored after, and the engine's worker threads in use
    for every call it splits (not only for large calls or calls in a row)."""
    import numba

    from fastxent.backends import numba_cpu

    monkeypatch.setattr(numba_cpu, "_WAKE", 0)
    before = numba.get_num_threads()
    numba.set_num_threads(2)
    yield
    numba.set_num_threads(before)


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded from the test's node id: stable across runs and test orders."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


class Lib:
    """One array library: conversion both ways and the type its results must have."""

    name = "numpy"

    def to_lib(self, a):
        return a

    def to_numpy(self, v):
        return np.asarray(v)

    def is_native(self, v) -> bool:
        return isinstance(v, np.ndarray)

    def supports(self, dtype) -> bool:
        return True


class NumpyLib(Lib):
    name = "numpy"


class TorchLib(Lib):
    name = "torch"

    def __init__(self):
        import torch

        self.torch = torch

    def to_lib(self, a):
        if a is None:
            return None
        a = np.asarray(a)
        if a.dtype == BF16:
            # torch.from_numpy cannot take ml_dtypes' bfloat16: share the bits as uint16
            return self.torch.from_numpy(a.view(np.uint16)).view(self.torch.bfloat16)
        return self.torch.from_numpy(a)

    def to_numpy(self, v):
        if isinstance(v, self.torch.Tensor):
            return v.detach().cpu().numpy()
        return np.asarray(v)

    def is_native(self, v) -> bool:
        return isinstance(v, self.torch.Tensor) and v.device.type == "cpu"

    def supports(self, dtype) -> bool:
        # torch.from_numpy needs positive strides; dtypes are all fine
        return True


class CupyLib(Lib):
    name = "cupy"

    def __init__(self):
        import cupy

        self.cupy = cupy

    def to_lib(self, a):
        if a is None:
            return None
        return self.cupy.asarray(a)

    def to_numpy(self, v):
        if isinstance(v, self.cupy.ndarray):
            return self.cupy.asnumpy(v)
        return np.asarray(v)

    def is_native(self, v) -> bool:
        return isinstance(v, self.cupy.ndarray)

    def supports(self, dtype) -> bool:
        return np.dtype(dtype) != BF16  # CuPy has no bfloat16 dtype


def _make_lib(name: str) -> Lib:
    if name == "numpy":
        return NumpyLib()
    if name == "torch":
        pytest.importorskip("torch", reason="torch is not installed")
        return TorchLib()
    if name == "cupy":
        cupy_or_skip()
        return CupyLib()
    raise AssertionError(name)


def cupy_or_skip():
    """The ``cupy`` module, or skip the test: CuPy not installed, or no usable CUDA device."""
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except Exception as exc:  # noqa: BLE001 - any CUDA runtime failure means "no GPU"
        pytest.skip(f"no usable CUDA device ({type(exc).__name__})")
    return cupy


@pytest.fixture(
    scope="session",
    params=["numpy", "torch", pytest.param("cupy", marks=pytest.mark.gpu)],
)
def lib(request) -> Lib:
    return _make_lib(request.param)


@pytest.fixture(scope="session")
def np_lib() -> Lib:
    return NumpyLib()


def spy_plan_kernels(monkeypatch, method="call"):
    """A list of the CPU kernel of each launch plan ``method`` run from here on, in order
    ("call": the full path's launches; "add_into": an Evaluator's or a fast one-shot's)."""
    from fastxent.backends import numba_cpu

    used = []
    real = getattr(numba_cpu._Plan, method)

    def spy(self, *args):
        used.append(self.kernel)
        return real(self, *args)

    monkeypatch.setattr(numba_cpu._Plan, method, spy)
    return used


@pytest.fixture
def kernels_used(monkeypatch):
    """The CPU kernel of each full-path launch from here on, in order."""
    return spy_plan_kernels(monkeypatch)
