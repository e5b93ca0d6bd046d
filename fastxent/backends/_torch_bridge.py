"""torch CUDA tensors <-> CuPy, zero-copy, on torch's current device and stream.

Everything torch-specific of the CUDA engine lives here, so that ``cupy_cuda`` never imports
torch: the helpers are only called with objects whose type comes from the ``torch`` module,
which means torch is already imported by the caller.

* to CuPy: ``cupy.from_dlpack(t.detach())`` (no copy; bfloat16 needs CuPy >= 14 with
  ``ml_dtypes``, see :func:`fastxent.backends.cupy_cuda.asarray`).
* back: ``torch.from_dlpack(cupy_array)`` (no copy, same device).
* context: ``cupy.cuda.Device(t.device.index)`` and an ``ExternalStream`` wrapping
  ``torch.cuda.current_stream(device)``, so our kernels queue behind the caller's work and
  the caller's later work queues behind ours, with no synchronisation (flash-attn documents
  the cuda:0 pitfall that the explicit device avoids).
"""

from __future__ import annotations

import contextlib
import sys

__all__ = ["is_torch", "is_torch_cuda", "to_cupy", "from_cupy", "context"]


def is_torch(x) -> bool:
    mod = sys.modules.get("torch")
    return mod is not None and isinstance(x, mod.Tensor)


def is_torch_cuda(x) -> bool:
    return is_torch(x) and x.device.type == "cuda"


def to_cupy(t):
    import cupy

    return cupy.from_dlpack(t.detach())


def from_cupy(arr, like):
    import torch

    return torch.from_dlpack(arr)


def context(t):
    """Context manager: the tensor's device and torch's current stream on it."""
    import cupy
    import torch

    stack = contextlib.ExitStack()
    stack.enter_context(cupy.cuda.Device(t.device.index))
    ptr = torch.cuda.current_stream(t.device).cuda_stream
    stack.enter_context(cupy.cuda.ExternalStream(ptr, t.device.index))
    return stack
