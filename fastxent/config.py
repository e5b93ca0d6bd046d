"""Every knob of fastxent in one place, read once from the environment.

Environment variables
---------------------
FASTXENT_NUMBA_CACHE
    ``1`` (default) caches compiled Numba kernels on disk next to the package (or in
    ``NUMBA_CACHE_DIR``); ``0`` disables the cache.
FASTXENT_FASTMATH
    ``default`` (the default) uses :data:`FASTMATH_FLAGS`, flags that keep NaN and inf
    semantics intact; ``off`` compiles without fast-math.
FASTXENT_BACKEND
    ``auto`` (default), ``numba`` or ``cuda``: forces the engine (tests and benchmarks).

A non-default value triggers a one-time :class:`UserWarning`, so that a benchmark run with an
unusual configuration says so.
"""

from __future__ import annotations

import os
import warnings

__all__ = [
    "NUMBA_CACHE",
    "FASTMATH_FLAGS",
    "BACKEND",
    "CPU_BLOCK_ROWS",
    "CPU_BLOCK_BYTES",
    "CUDA_NVRTC_OPTIONS",
    "CUDA_THREADS_PER_BLOCK",
    "SUM_TO_ONE_TOL",
]


def _env(name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = os.environ.get(name, default).strip().lower()
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {allowed}; unset it or pick one of those")
    if value != default:
        warnings.warn(f"fastxent: {name}={value} (non-default)", UserWarning, stacklevel=3)
    return value


NUMBA_CACHE: bool = _env("FASTXENT_NUMBA_CACHE", "1", ("0", "1")) == "1"

# reassoc/contract/arcp let LLVM vectorise reductions and fuse multiply-adds. We never pass
# 'nnan' or 'ninf': kernels detect non-finite rows with `x - x` and comparisons, which those
# flags would let LLVM fold away (see BENCHMARKS.md, "Mind NaN").
_FASTMATH = _env("FASTXENT_FASTMATH", "default", ("default", "off"))
FASTMATH_FLAGS: set[str] | bool = (
    {"reassoc", "contract", "arcp", "nsz"} if _FASTMATH == "default" else False
)

BACKEND: str = _env("FASTXENT_BACKEND", "auto", ("auto", "numba", "cuda"))

# When the CPU engine must copy a strided (e.g. Fortran-ordered) input into a contiguous
# buffer, it does so one block of rows at a time: at most CPU_BLOCK_ROWS rows and at most
# CPU_BLOCK_BYTES bytes per array, so the temporary stays small whatever N and C are.
CPU_BLOCK_ROWS: int = 16384
CPU_BLOCK_BYTES: int = 16 << 20

# Dense label rows whose sum is within this of 1 count as "sums to one" for task detection.
SUM_TO_ONE_TOL: float = 1e-3

# CUDA engine: NVRTC options and the default block size (the launchers may pick others).
CUDA_NVRTC_OPTIONS: tuple[str, ...] = ("-std=c++17",)
CUDA_THREADS_PER_BLOCK: int = 256
