"""Deterministic results: 1 vs 2 Numba threads give bitwise-identical numbers, and repeated
calls give the same bits."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from checks import FLOAT_DTYPES, FLOAT_IDS, cast, dyadic_weights, one_hot, skip_unsupported

import fastxent as fx


@pytest.fixture
def restore_threads(monkeypatch):
    from fastxent.backends import numba_cpu

    monkeypatch.setattr(numba_cpu, "_WAKE", 0)  # the workers take part in every split call
    before = numba.get_num_threads()
    yield
    numba.set_num_threads(before)


def _bits(m) -> dict:
    out = {}
    for name in ("loss", "accuracy", "count", "exact_match", "correct"):
        v = getattr(m, name)
        if v is not None:
            a = np.asarray(v)
            out[name] = (a.dtype.str, a.shape, a.tobytes())
    for k, v in m.top_k_accuracy.items():
        out[f"top{k}"] = np.asarray(v).tobytes()
    return out


def _calls(dtype, rng):
    N, C = 2000, 257  # enough rows for the engine to split them across threads
    z = cast(rng.standard_normal((N, C)) * 4, dtype)
    z[17, 3] = np.nan
    y = rng.integers(0, C, N)
    y[::13] = -100
    sw = dyadic_weights(rng, (N,), lo=1) + rng.random(N)  # non-dyadic too
    cw = rng.random(C) + 0.5
    t = (rng.random((N, 64)) < 0.2).astype(np.float32)
    soft = rng.random((N, C)).astype(np.float32)
    soft /= soft.sum(1, keepdims=True)
    zl = z[:, :64]
    return [
        lambda r: fx.softmax_cross_entropy(z, y, ignore_index=-100, top_k=(1, 5), reduction=r),
        lambda r: fx.softmax_cross_entropy(z, y, ignore_index=-100, sample_weight=sw,
                                           class_weight=cw, label_smoothing=0.1, reduction=r),
        lambda r: fx.softmax_cross_entropy(z, soft, sample_weight=sw, reduction=r),
        lambda r: fx.softmax_cross_entropy(z, one_hot(np.where(y < 0, 0, y), C), reduction=r),
        lambda r: fx.softmax_cross_entropy(np.asfortranarray(z), np.where(y < 0, 1, y),
                                           reduction=r),
        lambda r: fx.sigmoid_cross_entropy(zl, t, sample_weight=sw, reduction=r),
        lambda r: fx.sigmoid_cross_entropy(zl, t, pos_weight=cw[:64], label_smoothing=0.05,
                                           reduction=r),
        lambda r: fx.sigmoid_cross_entropy(z[:, 0], t[:, 0], reduction=r),
    ]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=FLOAT_IDS)
def test_one_vs_two_threads_bitwise(np_lib, rng, restore_threads, dtype):
    skip_unsupported(np_lib, dtype)
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba was started with a single thread")
    calls = _calls(dtype, rng)
    results = {}
    for threads in (1, 2):
        numba.set_num_threads(threads)
        results[threads] = [_bits(c(r)) for c in calls for r in ("mean", "sum", "none")]
    for i, (a, b) in enumerate(zip(results[1], results[2], strict=True)):
        assert a == b, f"call {i}: results differ between 1 and 2 threads"


def test_repeated_calls_bitwise(np_lib, rng):
    calls = _calls(np.float32, rng)
    first = [_bits(c("mean")) for c in calls]
    second = [_bits(c("mean")) for c in calls]
    assert first == second
