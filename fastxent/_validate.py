"""Argument checks with fix-it messages. No ``assert``: ``python -O`` would strip them.

These checks read only shapes, dtypes and option values (and, when ``validate=True``, the
small weight vectors). Label *values* are checked inside the kernels, which record the first
bad row; :func:`raise_bad_row` turns that record into the exception.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

__all__ = [
    "FLOAT_DTYPES", "check_logits_dtype", "check_reduction", "check_unit", "check_top_k",
    "check_weight", "byte_order_ok",
]

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
_INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
DENSE_DTYPES = FLOAT_DTYPES + ("bool",) + _INT_DTYPES


def is_integer_dtype(name: str) -> bool:
    return name in _INT_DTYPES


def byte_order_ok(x: Any) -> bool:
    dt = getattr(x, "dtype", None)
    if isinstance(dt, np.dtype):
        return dt.isnative or dt.byteorder == "|"
    return True


def _check_byte_order(what: str, x: Any) -> None:
    if not byte_order_ok(x):
        raise TypeError(
            f"{what} has non-native byte order ({x.dtype.str}); convert it with "
            f"{what}.astype({what}.dtype.newbyteorder('='))"
        )


def check_logits_dtype(what: str, x: Any, name: str) -> None:
    _check_byte_order(what, x)
    if name in FLOAT_DTYPES:
        return
    if name == "bool" or is_integer_dtype(name):
        raise TypeError(
            f"{what} must be floating point (float16, bfloat16, float32 or float64), got "
            f"{name}; convert with {what}.astype(np.float32)"
        )
    raise TypeError(
        f"{what} has unsupported dtype {name}; accepted: float16, bfloat16, float32, float64 "
        f"(convert with {what}.astype(np.float32))"
    )


def check_label_dtype(what: str, x: Any, name: str, sparse: bool) -> None:
    _check_byte_order(what, x)
    if sparse:
        if not is_integer_dtype(name):
            raise TypeError(
                f"{what} with the rows' shape must be integer class ids, got {name}; convert "
                f"with {what}.astype(np.int64), or pass dense labels with the logits' shape"
            )
    elif name not in DENSE_DTYPES:
        raise TypeError(
            f"dense {what} has unsupported dtype {name}; accepted: float16, bfloat16, float32, "
            f"float64, bool or integers (convert with {what}.astype(np.float32))"
        )


def check_reduction(reduction: Any) -> str:
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return reduction


def check_unit(name: str, v: Any) -> float:
    """A float in [0, 1] (label_smoothing, threshold)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1], got {v!r}") from None
    if not (0.0 <= f <= 1.0):
        raise ValueError(f"{name} must be in [0, 1], got {v!r}")
    return f


def check_top_k(top_k: Any, C: int) -> tuple[int, ...]:
    if top_k is None:
        return ()
    if isinstance(top_k, numbers.Integral):
        ks = [top_k]
    else:
        try:
            ks = list(top_k)
        except TypeError:  # a float, say: not iterable
            raise ValueError(f"top_k must be an int or a sequence of ints, got {top_k!r}; "
                             f"e.g. top_k=5 or top_k=(1, 5)") from None
    out = []
    for k in ks:
        if not isinstance(k, numbers.Integral) or isinstance(k, bool):
            raise ValueError(f"top_k must be an int or a sequence of ints, got {top_k!r}")
        if not (1 <= int(k) <= C):
            raise ValueError(f"top_k={int(k)} is outside [1, C] with C={C} classes")
        if int(k) not in out:
            out.append(int(k))
    return tuple(out)


def check_flag(name: str, v: Any) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {v!r}")
    return bool(v)


def check_ignore_index(v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise ValueError(f"ignore_index must be an integer or None, got {v!r}")
    return int(v)


def check_weight(name: str, w: Any, length: int, xp, validate: bool, rows_shape=None):
    """Return ``w`` as a 1-D float64 array of the engine's library (``xp``), checked.

    ``rows_shape`` (sample weights) also accepts the rows' shape, flattened here.
    """
    if w is None:
        return None
    arr = w if xp is not np else np.asarray(w)
    shape = tuple(arr.shape)
    ok = shape == (length,) or (rows_shape is not None and shape == tuple(rows_shape))
    if name == "pos_weight" and shape in ((), (1,)):
        arr = xp.broadcast_to(xp.reshape(arr, (1,)), (length,))
        ok = True
    if not ok:
        want = f"({length},)" + (f" or {tuple(rows_shape)}" if rows_shape is not None else "")
        raise ValueError(f"{name} has shape {shape}, expected {want}")
    kind = getattr(arr.dtype, "kind", "f")
    if kind not in "fiub":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    arr = xp.ascontiguousarray(xp.reshape(arr, (-1,)).astype(xp.float64))
    if validate and arr.size:
        bad = ~(xp.isfinite(arr) & (arr >= 0))
        if bool(bad.any()):
            i = int(xp.argmax(bad))
            raise ValueError(
                f"{name} must be finite and non-negative; {name}[{i}] = {float(arr[i])!r}"
            )
    return arr


def logit_threshold(thr: float) -> float:
    """log(thr / (1 - thr)) in float64, with the exact limits at 0 and 1."""
    if thr <= 0.0:
        return -math.inf
    if thr >= 1.0:
        return math.inf
    return math.log(thr) - math.log1p(-thr)


def round_down(x: float, float64: bool) -> float:
    """Largest value of the compute dtype <= x, so that ``v > round_down(x)`` in the compute
    dtype equals ``v > x`` in float64 for every value v of the compute dtype."""
    if float64 or not math.isfinite(x):
        return float(x)
    f = np.float32(x)
    if float(f) > x:
        f = np.nextafter(f, np.float32(-np.inf))
    return float(f)
