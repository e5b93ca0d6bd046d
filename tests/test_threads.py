"""The CPU engine's worker threads: several Python threads calling at once, errors in a worker
or in the caller's own share, and the exponent-bin scratch that must stay clear between calls.
Results are compared with the same call made alone (exact integer states: same bits)."""

from __future__ import annotations

import threading

import numba
import numpy as np
import pytest

import fastxent as fx
from fastxent.backends import SoftmaxOptions
from fastxent.backends import numba_cpu as eng
from fastxent.backends._numba_math import claim_block

pytestmark = pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2,
                                reason="one Numba thread: the CPU engine starts no workers")

N, C = 40_000, 10  # 400k elements: the engine splits the rows across threads


def _arrays(seed):
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal((N, C)) * 3).astype(np.float32)
    y = rng.integers(0, C, N)
    return z, y


def _state(m):
    return m.count, float(m.loss).hex(), float(m.accuracy).hex()


def test_python_threads_calling_at_once_get_their_own_results(two_threads):
    data = [_arrays(s) for s in range(6)]
    alone = [_state(fx.evaluate(z, y)) for z, y in data]
    out = [None] * len(data)
    errors = []
    barrier = threading.Barrier(len(data))

    def work(i):
        try:
            numba.set_num_threads(2)  # Numba's thread count is per Python thread
            barrier.wait()
            for _ in range(5):  # while other threads' jobs hold the pool, or not
                r = _state(fx.evaluate(*data[i]))
                assert out[i] is None or out[i] == r
                out[i] = r
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(data))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a call never returned"
    assert not errors, errors
    assert out == alone


@numba.njit
def _claim_one(sig):
    return claim_block(sig)


def _fake_kernel(fail_slot):
    """A kernel with the launcher's calling convention that claims one block and raises in
    ``fail_slot``."""

    def kernel(slot, sig, bounds):
        _claim_one(sig)
        if slot == fail_slot:
            raise ZeroDivisionError(f"failed in slot {slot}")
        eng._mark_done(sig)

    return kernel


@pytest.mark.parametrize("fail_slot", [0, 1], ids=["worker", "caller"])
def test_an_error_in_any_slot_reaches_the_caller_and_the_pool_stays_usable(two_threads,
                                                                           fail_slot):
    z, y = _arrays(7)
    before = _state(fx.evaluate(z, y))
    with pytest.raises(ZeroDivisionError, match=f"failed in slot {fail_slot}"):
        eng._parallel(_fake_kernel(fail_slot), (), 2, N, C)
    assert _state(fx.evaluate(z, y)) == before
    eng._parallel(_fake_kernel(-1), (), 2, N, C)  # a clean job after the failed one


def test_scratch_bins_are_clear_after_every_call(two_threads):
    """The kernels drain the exponent bins they used, so the next call needs no clearing: a
    call's result does not depend on what ran before it, in this thread's scratch."""
    z, y = _arrays(8)
    opts = SoftmaxOptions(ks=(1, 3))
    first = eng.softmax_xent(z, y, opts)
    big = eng.softmax_xent(z * 1e30, y, opts)  # other exponents, other bins
    again = eng.softmax_xent(z, y, opts)
    assert np.array_equal(first.exact, again.exact)
    assert np.array_equal(first.counts, again.counts)
    assert not np.array_equal(first.exact, big.exact)
    for bufs in eng._SCRATCH.bufs.values():
        assert not bufs[1].any()


_SKIPPING_WORKER = """
import time, weakref
import numba
import numpy as np
import fastxent as fx
from fastxent.backends import numba_cpu
numba_cpu._WAKE = 0  # the workers take part in every split call
numba.set_num_threads(3)
rng = np.random.default_rng(0)
z = rng.standard_normal((100_000, 10)).astype(np.float32)
y = rng.integers(0, 10, 100_000)
fx.softmax_cross_entropy(z, y)  # grows the pool to two workers
numba.set_num_threads(2)  # later calls use one worker; the other skips their jobs
held = 0
for _ in range(5):
    zi = z.copy()
    w = weakref.ref(zi)
    fx.softmax_cross_entropy(zi, y)
    del zi
    time.sleep(0.01)
    held += w() is not None
print(held)
"""


def test_a_worker_that_skips_a_job_does_not_keep_its_arrays():
    """A pool grown for three threads, then calls on two: the idle worker reads each job and
    skips it. It held the job's arguments (the caller's arrays) until the next job: 5 of 5
    inputs stayed alive after their calls before the fix, 0 after."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_NUM_THREADS="3")
    out = subprocess.run([sys.executable, "-c", _SKIPPING_WORKER], env=env, check=True,
                         capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "0", out.stdout + out.stderr


def _posted():
    return int(eng._POOL.sig[2]) if eng._POOL is not None else 0


def _workers_asleep(T):
    """Start the pool's workers if needed and wait until they are asleep (they spin a few ms
    after their last job)."""
    import time

    if eng._POOL is None:
        eng._parallel(_fake_kernel(-1), (), T, N, C)  # creates the pool
    with eng._POOL.lock:
        eng._POOL._grow(T - 1)
    deadline = time.monotonic() + 30
    while not all(eng._POOL.asleep[:T - 1]):
        assert time.monotonic() < deadline, "the workers never went to sleep"
        time.sleep(0.005)


def test_a_lone_mid_size_call_leaves_sleeping_workers_asleep(two_threads, monkeypatch):
    """Below _WAKE elements, a call that comes alone while the workers sleep runs on the
    caller's thread (waking one costs more than it gains); same bits as on two threads."""
    monkeypatch.setattr(eng, "_WAKE", N * C + 1)
    monkeypatch.setattr(eng, "_SMALL", 0)
    z, y = _arrays(10)
    both = eng.softmax_xent(z, y, SoftmaxOptions(ks=(1, 3)))
    _workers_asleep(2)
    eng._POOL.last = 0.0  # no call in the last _LOOP_GAP seconds
    before = _posted()
    alone = eng.softmax_xent(z, y, SoftmaxOptions(ks=(1, 3)))
    assert _posted() == before, "a job was posted: the sleeping worker was woken"
    assert np.array_equal(alone.counts, both.counts)
    assert np.array_equal(alone.exact, both.exact)


def test_calls_in_a_row_and_large_calls_use_the_workers(two_threads, monkeypatch):
    """A call within _LOOP_GAP of the last one, or of _WAKE elements or more, posts its job
    to the workers even when they sleep."""
    monkeypatch.setattr(eng, "_SMALL", 0)
    z, y = _arrays(11)
    opts = SoftmaxOptions()
    # in a row: the last call ended "just now" (a gap of 1000 s counts as in a row)
    monkeypatch.setattr(eng, "_WAKE", N * C + 1)
    monkeypatch.setattr(eng, "_LOOP_GAP", 1000.0)
    _workers_asleep(2)
    before = _posted()
    eng.softmax_xent(z, y, opts)
    assert _posted() == before + 1
    # large: alone, workers asleep, but at least _WAKE elements
    monkeypatch.setattr(eng, "_WAKE", N * C)
    monkeypatch.setattr(eng, "_LOOP_GAP", 0.0)
    _workers_asleep(2)
    before = _posted()
    eng.softmax_xent(z, y, opts)
    assert _posted() == before + 1
