"""Helpers shared by the test modules: input generators and "fastxent vs reference" checks.

Every check converts the NumPy inputs to the array library under test (``lib.to_lib``), calls
the public API, asserts the result types (library, dtype, shape), then compares with
``tests/reference.py``: the loss within ``tests/tolerances.py``, accuracy / top-k / exact match
and count exactly.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
from reference import ref_sigmoid, ref_softmax
from tolerances import assert_loss_close

import fastxent as fx

BF16 = np.dtype(ml_dtypes.bfloat16)
FLOAT_DTYPES = [np.dtype(np.float16), BF16, np.dtype(np.float32), np.dtype(np.float64)]
FLOAT_IDS = ["f16", "bf16", "f32", "f64"]
SPARSE_LABEL_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
                       np.uint64]
REDUCTIONS = ("mean", "sum", "none")


# -- inputs ------------------------------------------------------------------------------------


def cast(a: np.ndarray, dtype) -> np.ndarray:
    """``a`` (float64) rounded to ``dtype``, as a fresh C-contiguous writable array."""
    return np.ascontiguousarray(np.asarray(a, dtype=np.float64).astype(dtype))


def make_logits(rng, shape, dtype, scale=3.0) -> np.ndarray:
    return cast(rng.standard_normal(shape) * scale, dtype)


def make_probs(rng, shape, dtype) -> np.ndarray:
    """Rows of softmax probabilities (not exactly normalised after rounding, as in real use)."""
    z = rng.standard_normal(shape) * 2.0
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    return cast(p, dtype)


def make_sparse(rng, rows_shape, C, dtype=np.int64) -> np.ndarray:
    return np.ascontiguousarray(rng.integers(0, C, size=rows_shape).astype(dtype))


def make_soft(rng, shape, dtype=np.float32) -> np.ndarray:
    """Dense probability rows (a real distribution per row)."""
    q = rng.random(shape) ** 3
    q /= q.sum(axis=-1, keepdims=True)
    return cast(q, dtype)


def one_hot(y: np.ndarray, C: int, dtype=np.float32) -> np.ndarray:
    out = np.zeros(y.shape + (C,), dtype=dtype)
    np.put_along_axis(out, np.asarray(y, dtype=np.int64)[..., None], np.ones((), dtype=dtype),
                      axis=-1)
    return out


def dyadic_weights(rng, shape, lo=0, hi=8) -> np.ndarray:
    """Weights k/4 (exact in every float format): accuracy sums stay exact in any engine."""
    return rng.integers(lo, hi + 1, size=shape).astype(np.float64) / 4.0


# -- comparisons -------------------------------------------------------------------------------


def assert_exact(actual, expected, what: str) -> None:
    a = float(actual)
    e = float(expected)
    if math.isnan(e):
        assert math.isnan(a), f"{what}: expected NaN, got {a!r}"
    else:
        assert a == e, f"{what}: expected {e!r} exactly, got {a!r} (diff {a - e:.3g})"


def _assert_reduced(lib, v, dtype, what):
    assert lib.is_native(v), f"{what}: expected a {lib.name} array, got {type(v).__name__}"
    a = lib.to_numpy(v)
    assert a.shape == (), f"{what}: expected a 0-d array, got shape {a.shape}"
    assert a.dtype == dtype, f"{what}: expected {np.dtype(dtype)}, got {a.dtype}"
    return a


def compare(lib, m, ref, *, pred_dtype, reduction, kind, row_shape, weighted_elem=False) -> None:
    """Assert that Metrics ``m`` (from ``lib``) matches the reference dict ``ref``."""
    assert isinstance(m, fx.Metrics), type(m)
    assert m.task == ref["task"], (m.task, ref["task"])

    count = _assert_reduced(lib, m.count, np.int64, "count")
    assert int(count) == ref["count"], ("count", int(count), ref["count"])

    acc = _assert_reduced(lib, m.accuracy, np.float64, "accuracy")
    if kind == "sigmoid" and weighted_elem:
        # sample-weighted element accuracy: the engine sums sw_i * right_i / C per row (each a
        # rounded float64 quotient when C is not a power of two) -> allow a few float64 ulps
        np.testing.assert_allclose(float(acc), ref["accuracy"], rtol=4 * 2.0**-52, atol=0,
                                   equal_nan=True, err_msg="accuracy")
    else:
        assert_exact(acc, ref["accuracy"], "accuracy")

    assert set(m.top_k_accuracy) == set(ref["top_k_accuracy"]), (
        sorted(m.top_k_accuracy), sorted(ref["top_k_accuracy"]))
    for k, v in ref["top_k_accuracy"].items():
        got = _assert_reduced(lib, m.top_k_accuracy[k], np.float64, f"top_k_accuracy[{k}]")
        assert_exact(got, v, f"top_k_accuracy[{k}]")

    if kind == "softmax":
        assert m.exact_match is None
    else:
        em = _assert_reduced(lib, m.exact_match, np.float64, "exact_match")
        assert_exact(em, ref["exact_match"], "exact_match")

    if reduction == "none":
        row_dtype = np.float64 if np.dtype(pred_dtype) == np.float64 else np.float32
        assert lib.is_native(m.loss), type(m.loss)
        loss = lib.to_numpy(m.loss)
        assert loss.shape == tuple(row_shape), (loss.shape, row_shape)
        assert loss.dtype == row_dtype, (loss.dtype, row_dtype)
        assert_loss_close(loss, ref["loss"], pred_dtype, err_msg="per-row loss")
        assert m.correct is not None and lib.is_native(m.correct), type(m.correct)
        correct = lib.to_numpy(m.correct)
        assert correct.dtype == np.bool_, correct.dtype
        assert correct.shape == tuple(row_shape), (correct.shape, row_shape)
        np.testing.assert_array_equal(correct, ref["correct"], err_msg="per-row correct")
    else:
        loss = _assert_reduced(lib, m.loss, np.float64, f"loss ({reduction})")
        assert_loss_close(loss, ref["loss"], pred_dtype, err_msg=f"loss ({reduction})")
        assert m.correct is None


def _opts_to_lib(lib, opts: dict) -> dict:
    out = dict(opts)
    for name in ("class_weight", "sample_weight", "pos_weight"):
        if out.get(name) is not None and isinstance(out[name], np.ndarray):
            out[name] = lib.to_lib(out[name])
    return out


def check_softmax(lib, logits, labels, **opts):
    """fx.softmax_cross_entropy on ``lib`` arrays vs ref_softmax; returns (Metrics, ref)."""
    ref = ref_softmax(logits, labels, **opts)
    m = fx.softmax_cross_entropy(lib.to_lib(logits), lib.to_lib(labels), **_opts_to_lib(lib, opts))
    compare(lib, m, ref, pred_dtype=np.asarray(logits).dtype,
            reduction=opts.get("reduction", "mean"), kind="softmax",
            row_shape=np.asarray(logits).shape[:-1])
    return m, ref


def sigmoid_row_shape(logits) -> tuple:
    shape = np.asarray(logits).shape
    return shape if len(shape) == 1 else shape[:-1]


def check_sigmoid(lib, logits, targets, **opts):
    """fx.sigmoid_cross_entropy on ``lib`` arrays vs ref_sigmoid; returns (Metrics, ref)."""
    ref = ref_sigmoid(logits, targets, **opts)
    m = fx.sigmoid_cross_entropy(lib.to_lib(logits), lib.to_lib(targets),
                                 **_opts_to_lib(lib, opts))
    shape = np.asarray(logits).shape
    C = 1 if len(shape) == 1 else shape[-1]
    weighted_elem = opts.get("sample_weight") is not None and (C & (C - 1)) != 0
    compare(lib, m, ref, pred_dtype=np.asarray(logits).dtype,
            reduction=opts.get("reduction", "mean"), kind="sigmoid",
            row_shape=sigmoid_row_shape(logits), weighted_elem=weighted_elem)
    return m, ref


def skip_unsupported(lib, *dtypes) -> None:
    import pytest

    for d in dtypes:
        if not lib.supports(d):
            pytest.skip(f"{lib.name} has no {np.dtype(d)} arrays")
