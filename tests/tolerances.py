"""The one tolerance table of the test suite: prediction dtype -> (rtol, atol) on the loss.

The reference (``tests/reference.py``) is computed in float64 from the *exactly widened* input,
i.e. from the values the implementation actually sees after float16/bfloat16 rounding. Since
fastxent computes float16/bfloat16/float32 inputs in float32 arithmetic, the error budget of
the low-precision dtypes is the float32 one: a few float32 ulps relative to the loss (plus the
float32 rounding of a sum of up to ~65k exponentials), with an absolute floor for losses that
are themselves ~0 (peaked rows, where ``log(1 + tiny)`` is below float32 resolution).

Accuracy, exact match, top-k accuracy and count are *not* in this table: they are ratios of
exact counts and are compared with ``==``.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

__all__ = ["TOLERANCES", "tol", "assert_loss_close"]

TOLERANCES: dict[np.dtype, tuple[float, float]] = {
    np.dtype(np.float64): (1e-12, 1e-12),
    np.dtype(np.float32): (2e-6, 1e-6),
    np.dtype(np.float16): (2e-6, 1e-6),
    np.dtype(ml_dtypes.bfloat16): (2e-6, 1e-6),
}


def tol(dtype) -> tuple[float, float]:
    """(rtol, atol) for predictions of ``dtype``."""
    return TOLERANCES[np.dtype(dtype)]


def assert_loss_close(actual, expected, dtype, err_msg: str = "") -> None:
    """Compare losses (scalars or arrays) with the table's tolerance; NaN == NaN, inf == inf."""
    rtol, atol = tol(dtype)
    np.testing.assert_allclose(
        np.asarray(actual, dtype=np.float64),
        np.asarray(expected, dtype=np.float64),
        rtol=rtol,
        atol=atol,
        equal_nan=True,
        err_msg=err_msg,
    )
