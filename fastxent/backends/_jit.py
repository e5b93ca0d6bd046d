"""The one Numba decorator factory of fastxent (flags come from :mod:`fastxent.config`)."""

from __future__ import annotations

from functools import partial

import numba as nb

from .. import config

__all__ = ["jit_rows", "jit_inline"]

# Row kernels: serial and GIL-free; the launcher runs one per thread on its own block of rows
# and its own slice of the state. (parallel=True doubled compile time, 10 s vs 5 s per
# variant, for the same run time.) error_model="numpy" lifts the division checks that block
# vectorisation of loops with log/log1p (BENCHMARKS.md: 0.42 vs 3.9 G/s).
jit_rows = partial(
    nb.njit, cache=config.NUMBA_CACHE, fastmath=config.FASTMATH_FLAGS,
    error_model="numpy", nogil=True,
)

# Small helpers inlined into the kernels.
jit_inline = partial(
    nb.njit, cache=config.NUMBA_CACHE, fastmath=config.FASTMATH_FLAGS,
    error_model="numpy",
)
