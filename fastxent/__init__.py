"""fastxent: fused softmax / sigmoid cross-entropy and accuracy in one pass.

Numba on the CPU, CuPy/CUDA C++ on NVIDIA GPUs, for NumPy, CuPy, torch and JAX arrays.
``import fastxent`` imports neither CuPy nor torch nor Numba: engines load on first use.
"""

from __future__ import annotations

from ._result import Metrics, TaskMismatchWarning

__version__ = "0.1.0"

__all__ = [
    "softmax_cross_entropy",
    "sigmoid_cross_entropy",
    "evaluate",
    "Evaluator",
    "Metrics",
    "TaskMismatchWarning",
    "__version__",
]

_LAZY = {
    "softmax_cross_entropy": ("fastxent.api", "softmax_cross_entropy"),
    "sigmoid_cross_entropy": ("fastxent.api", "sigmoid_cross_entropy"),
    "evaluate": ("fastxent.api", "evaluate"),
    "Evaluator": ("fastxent.evaluator", "Evaluator"),
}


def __getattr__(name):  # PEP 562: keep `import fastxent` light
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module(mod), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fastxent' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
