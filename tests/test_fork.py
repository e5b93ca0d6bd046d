"""A process forked after fastxent ran on several CPU threads (a PyTorch DataLoader worker, a
multiprocessing pool with the fork start method, a preloading server) must still compute:
the parent's worker threads do not exist in the child."""

from __future__ import annotations

import multiprocessing as mp
import sys
import warnings

import numba
import numpy as np
import pytest

import fastxent as fx

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="no fork on Windows"),
    pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2,
                       reason="one Numba thread: the CPU engine starts no worker threads"),
]

N, C = 20_000, 100  # 2M elements: the engine splits the rows across threads


def _arrays():
    rng = np.random.default_rng(3)
    z = rng.standard_normal((N, C), dtype=np.float32)
    y = rng.integers(0, C, N)
    t = (rng.random((N, C)) < 0.2).astype(np.float32)
    return z, y, t


def _both():
    z, y, t = _arrays()
    a = fx.softmax_cross_entropy(z, y, top_k=5)
    b = fx.sigmoid_cross_entropy(z, t)
    return [float(a.loss), float(a.accuracy), float(a.top_k_accuracy[5]),
            float(b.loss), float(b.accuracy), float(b.exact_match)]


def test_forked_child_computes(two_threads):
    parent = _both()  # starts the engine's worker threads in this process
    ctx = mp.get_context("fork")
    with warnings.catch_warnings():
        # Python >= 3.12 warns that forking a multi-threaded process may deadlock: that is
        # exactly the situation under test
        warnings.simplefilter("ignore", DeprecationWarning)
        # and JAX, once a test in this process has used it, says the same of its own threads
        # (a RuntimeWarning raised in its at-fork hook, where pytest's "error" filter would
        # turn it into an unraisable exception)
        warnings.filterwarnings("ignore", r"os\.fork\(\) was called", RuntimeWarning)
        with ctx.Pool(1) as pool:
            child = pool.apply_async(_both).get(timeout=60)  # hung before the fix
    assert child == parent
    assert _both() == parent  # and the parent's pool still works


_STREAM = None  # (evaluator, logits, labels, batches left) of the parent's stream


def _finish_stream():
    ev, z, y, rest = _STREAM
    for a, b in rest:
        ev.update(z[a:b], y[a:b])
    m = ev.result()
    return [float(m.loss), float(m.accuracy), int(m.count)]


def test_forked_child_continues_a_stream(two_threads, monkeypatch):
    """A child forked in the middle of an Evaluator's stream, its batches running as the
    engine's stream jobs (the parent's worker waiting in compiled code), finishes the
    stream with its own workers: same numbers as the parent, and as one call."""
    global _STREAM
    from fastxent.backends import numba_cpu

    monkeypatch.setattr(numba_cpu, "_SMALL", 0)
    z, y, _ = _arrays()
    cuts = list(range(0, N + 1, 2500))
    chunks = list(zip(cuts[:-1], cuts[1:], strict=True))
    ev = fx.Evaluator(top_k=3)
    for a, b in chunks[:4]:
        ev.update(z[a:b], y[a:b])
    assert ev._fast.plan.last is not None, "the parent's batches did not run as jobs"
    _STREAM = (ev, z, y, chunks[4:])
    ctx = mp.get_context("fork")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", r"os\.fork\(\) was called", RuntimeWarning)
            with ctx.Pool(1) as pool:
                child = pool.apply_async(_finish_stream).get(timeout=60)
        want = fx.evaluate(z, y, top_k=3)
        assert child == [float(want.loss), float(want.accuracy), int(want.count)]
        assert _finish_stream() == child
    finally:
        _STREAM = None
