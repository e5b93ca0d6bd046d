"""Which engine an input goes to, decided without importing torch, CuPy or JAX.

The check looks at ``type(x).__module__`` and at ``sys.modules`` (array-api-compat's idiom):
a torch tensor can only exist if torch is already imported, so nothing heavy is imported here.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from . import config
from .backends import get_backend

__all__ = ["library", "is_device", "engine_for", "to_numpy", "from_numpy_like", "dtype_name",
           "shape_of"]

# DLPack device types: https://dmlc.github.io/dlpack/latest/c_api.html (kDLCUDA=2,
# kDLCUDAHost=3, kDLCUDAManaged=13, kDLROCM=10)
_DL_CPU = (1, 3)
_DL_GPU = (2, 13)


def library(x: Any) -> str:
    """'numpy', 'torch', 'cupy', 'jax', or 'other' (lists, scalars, foreign arrays)."""
    if isinstance(x, np.ndarray):
        return "numpy"
    mod = type(x).__module__.split(".", 1)[0]
    if mod == "torch" and "torch" in sys.modules:
        return "torch"
    if mod == "cupy" and "cupy" in sys.modules:
        return "cupy"
    if mod in ("jax", "jaxlib") and "jax" in sys.modules:
        return "jax"
    return "other"


def is_device(x: Any) -> bool:
    """True for arrays living on a CUDA device (CuPy, torch CUDA, JAX GPU, CAI, DLPack)."""
    lib = library(x)
    if lib == "numpy":
        return False
    if lib == "cupy":
        return True
    if lib == "torch":
        return x.device.type == "cuda"
    if lib == "jax":
        try:
            return any(d.platform in ("gpu", "cuda", "rocm") for d in x.devices())
        except AttributeError:  # pragma: no cover - very old JAX
            return False
    if hasattr(x, "__cuda_array_interface__"):
        return True
    dl = getattr(x, "__dlpack_device__", None)
    if dl is not None:
        try:
            return dl()[0] in _DL_GPU
        except Exception:  # pragma: no cover - foreign objects
            return False
    return False


def _describe(x: Any) -> str:
    t = type(x)
    dev = ""
    if library(x) == "torch":
        dev = f" on {x.device}"
    elif is_device(x):
        dev = " on a CUDA device"
    return f"{t.__module__}.{t.__qualname__}{dev}"


def engine_for(*arrays: Any, names: tuple[str, ...] = ()):
    """The engine module for these inputs (``None`` entries are ignored).

    Raises ``TypeError`` when host and device inputs are mixed, naming both.
    """
    if all(a is None or isinstance(a, np.ndarray) for a in arrays):  # the common host call
        return get_backend("numba")
    labels = names or [f"arg{i}" for i in range(len(arrays))]
    named = [(n, a) for n, a in zip(labels, arrays, strict=True)
             if a is not None]
    dev = [(n, a) for n, a in named if is_device(a)]
    host = [(n, a) for n, a in named if not is_device(a)]
    # plain Python scalars/lists among device inputs are harmless only for weights; arrays are not
    if dev and host:
        (dn, da), (hn, ha) = dev[0], host[0]
        raise TypeError(
            f"{dn} is {_describe(da)} but {hn} is {_describe(ha)}: all arrays of one call must "
            f"live on the same device; move {hn} there first (e.g. cupy.asarray / .cuda())"
        )
    if dev:
        devices = {d for d in (_device_id(a) for _, a in dev) if d is not None}
        if len(devices) > 1:
            raise TypeError(
                "inputs live on different GPUs ("
                + ", ".join(f"{n}: {_describe(a)}" for n, a in dev) + "); "
                "move them to one device first"
            )
    want = config.BACKEND
    if dev:
        if want == "numba":
            raise TypeError("FASTXENT_BACKEND=numba but the inputs live on a GPU")
        return get_backend("cuda")
    return get_backend("numba")


_DL_CUDA = 2  # DLPack's kDLCUDA


def _device_id(x: Any):
    """("cuda", ordinal) of a device array, in one form whatever its library (so that torch,
    CuPy and DLPack producers on one GPU compare equal), or None when unknown (an object with
    only ``__cuda_array_interface__``): unknown devices are not compared."""
    lib = library(x)
    if lib == "torch":
        return ("cuda", x.device.index)
    if lib == "cupy":
        return ("cuda", x.device.id)
    dl = getattr(x, "__dlpack_device__", None)
    if dl is not None:
        try:
            kind, index = dl()
            return ("cuda", int(index)) if int(kind) == _DL_CUDA else (int(kind), int(index))
        except Exception:  # pragma: no cover - foreign objects
            pass
    return None


_NP_NAMES: dict = {}  # np.dtype -> name (np.dtype.name is computed in Python, ~5 us a call)


def dtype_name(x: Any) -> str:
    """numpy-style dtype name of any supported array ('float32', 'bfloat16', 'int64', ...)."""
    if isinstance(x, np.ndarray):
        dt = x.dtype
        name = _NP_NAMES.get(dt)
        if name is None:
            name = _NP_NAMES[dt] = dt.name
        return name
    lib = library(x)
    if lib == "torch":
        return str(x.dtype).replace("torch.", "").replace("bool", "bool")
    dt = getattr(x, "dtype", None)
    if dt is None:
        return np.asarray(x).dtype.name
    try:
        return np.dtype(dt).name
    except TypeError:
        return str(dt)


def shape_of(x: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in x.shape)


def to_numpy(x: Any) -> np.ndarray:
    """A host array as NumPy without copying (torch CPU tensors, JAX CPU arrays, lists...)."""
    lib = library(x)
    if lib == "numpy":
        return x
    if lib == "torch":
        import torch

        t = x.detach()
        if t.dtype == torch.bfloat16:
            import ml_dtypes

            return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return t.numpy()
    return np.asarray(x)


def from_numpy_like(arr: Any, like: Any) -> Any:
    """Wrap a NumPy result in the library of ``like`` (host side)."""
    if arr is None:
        return None
    lib = library(like)
    if lib == "torch":
        import torch

        arr = np.asarray(arr)
        return torch.from_numpy(arr if arr.flags.c_contiguous else arr.copy())
    if lib == "jax":
        import jax
        import jax.numpy as jnp

        a = np.asarray(arr)
        if jax.dtypes.canonicalize_dtype(a.dtype) != a.dtype:
            # JAX without jax_enable_x64 holds no float64 / int64: jnp.asarray would round a
            # reduced value to float32 and wrap a count past 2**31; the exact NumPy value is
            # returned instead (README, "Results")
            return a
        return jnp.asarray(a)
    return arr
