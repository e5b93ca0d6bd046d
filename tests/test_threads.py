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

    _run_threads([(work, (i,)) for i in range(len(data))], "a call never returned")
    assert not errors, errors
    assert out == alone


def _run_threads(targets, hung):
    """Start a thread per (function, args), wait for them all; fail with ``hung`` if one
    has not returned within two minutes."""
    threads = [threading.Thread(target=f, args=a, daemon=True) for f, a in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), hung


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


# ----------------------------------------------------------------------------- stream jobs


def _stream_cases():
    """(name, logits, targets, options) for each kernel an Evaluator's fast path launches."""
    rng = np.random.default_rng(40)
    n = 6000
    z10 = (rng.standard_normal((n, 10)) * 3).astype(np.float32)
    y10 = rng.integers(0, 10, n)
    y10[rng.random(n) < 0.05] = -100
    z10[17, 3] = np.nan
    z300 = (rng.standard_normal((n // 4, 300)) * 3).astype(np.float32)
    y300 = rng.integers(0, 300, n // 4)
    y300p = y300.copy()
    y300p[rng.random(n // 4) < 0.05] = -100
    z300p = z300.copy()
    z300p[9, 4] = np.inf
    z2k = (rng.standard_normal((n // 20, 2000)) * 3).astype(np.float32)  # 8 KB rows: blocks
    y2k = rng.integers(0, 2000, n // 20)
    z9 = (rng.standard_normal((n, 9)) * 3).astype(np.float32)
    t9 = (rng.random((n, 9)) < 0.3).astype(np.float32)
    z200 = (rng.standard_normal((n // 4, 200)) * 3).astype(np.float32)
    t200 = (rng.random((n // 4, 200)) < 0.1).astype(np.float32)
    zb = rng.standard_normal(n).astype(np.float16)
    return [
        ("softmax small C", z10, y10, dict(top_k=(1, 3), ignore_index=-100)),
        ("softmax rows", z300, y300, dict(top_k=5, label_smoothing=0.05)),
        ("softmax plain top-k", z300, y300, dict(top_k=5)),
        ("softmax plain", z300p, y300p, dict(ignore_index=-100)),
        ("softmax plain long rows", z2k, y2k, dict()),
        ("sigmoid small C", z9, t9, dict(task="multilabel", pos_weight=np.linspace(0.5, 2, 9))),
        ("sigmoid plain", z200, t200, dict(task="multilabel")),
        ("sigmoid rows", z200, t200, dict(task="multilabel", pos_weight=np.full(200, 2.0))),
        ("binary", zb, rng.random(n) < 0.4, dict(task="binary")),
    ]


_CASES = _stream_cases()


def _case(name):
    return next(c for c in _CASES if c[0] == name)


def _chunks(n):
    """Uneven batches: a large one, a one-row one, a ragged tail."""
    step = max(1, n // 5)
    cuts = [0, step, step + 1, 2 * step, 3 * step + 7, n]
    return list(zip(cuts[:-1], cuts[1:], strict=True))


def _stream(z, t, opts, chunks=None):
    ev = fx.Evaluator(**opts)
    for a, b in chunks or _chunks(z.shape[0]):
        ev.update(z[a:b], t[a:b])
    return ev.result()


def _metrics_state(m):
    return (m.count, float(m.loss).hex(), float(m.accuracy).hex(),
            {k: float(v).hex() for k, v in m.top_k_accuracy.items()})


@pytest.fixture
def count_jobs(monkeypatch):
    """Every split batch runs as a stream job (``_SMALL`` 0); counts the jobs run."""
    monkeypatch.setattr(eng, "_SMALL", 0)
    jobs = []
    real = eng._Pool.try_job

    def counting(self, *a):
        fb = real(self, *a)
        jobs.append(fb is not None)
        return fb

    monkeypatch.setattr(eng._Pool, "try_job", counting)
    return jobs


@pytest.mark.parametrize("name, z, t, opts", _CASES, ids=[c[0] for c in _CASES])
def test_stream_jobs_equal_the_one_shot_call(two_threads, count_jobs, name, z, t, opts):
    got = _stream(z, t, opts)
    assert sum(count_jobs) >= 3, "the batches did not run as stream jobs"
    assert _metrics_state(got) == _metrics_state(fx.evaluate(z, t, **opts))


def test_stream_jobs_take_readonly_memmap_batches(two_threads, count_jobs, tmp_path):
    """The CLI's batches: read-only memmap slices (another array type for the job)."""
    _, z, y, opts = _CASES[0]
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "y.npy", y)
    zm = np.load(tmp_path / "z.npy", mmap_mode="r")
    ym = np.load(tmp_path / "y.npy", mmap_mode="r")
    got = _stream(zm, ym, opts)
    assert sum(count_jobs) >= 3
    assert _metrics_state(got) == _metrics_state(fx.evaluate(z, y, **opts))


def test_stream_jobs_between_other_jobs_and_streams(two_threads, count_jobs):
    """Batches of two streams (two sets of fixed arguments) and one-shot calls (Python jobs)
    alternate: a worker running one stream's jobs in compiled code leaves for each other
    job and comes back; every result is the one-shot call's."""
    (_, za, ya, oa), (_, zb, yb, ob) = _CASES[0], _case("sigmoid small C")
    want_a, want_b = fx.evaluate(za, ya, **oa), fx.evaluate(zb, yb, **ob)
    ea, eb = fx.Evaluator(**oa), fx.Evaluator(**ob)
    for (a0, a1), (b0, b1) in zip(_chunks(za.shape[0]), _chunks(zb.shape[0]), strict=True):
        ea.update(za[a0:a1], ya[a0:a1])
        assert _metrics_state(fx.evaluate(zb, yb, **ob)) == _metrics_state(want_b)
        eb.update(zb[b0:b1], yb[b0:b1])
    assert sum(count_jobs) >= 6
    assert _metrics_state(ea.result()) == _metrics_state(want_a)
    assert _metrics_state(eb.result()) == _metrics_state(want_b)


def test_a_stream_job_wakes_sleeping_workers(two_threads, count_jobs):
    """A stream job is posted in compiled code, after the caller looked for sleepers: a
    worker that fell asleep just then must still wake (this hung before the workers slept
    on the pool's job number instead of the posted one)."""
    _, z, y, opts = _CASES[0]
    chunks = _chunks(z.shape[0])
    out = []

    def run():
        ev = fx.Evaluator(**opts)
        for a, b in chunks:
            _workers_asleep(2)
            ev.update(z[a:b], y[a:b])
        out.append(ev.result())

    _run_threads([(run, ())], "an update never returned")
    assert sum(count_jobs) >= 3
    assert _metrics_state(out[0]) == _metrics_state(fx.evaluate(z, y, **opts))


def test_python_threads_streaming_at_once_get_their_own_results(two_threads, count_jobs):
    out, errors = {}, []
    barrier = threading.Barrier(len(_CASES))

    def work(name, z, t, opts):
        try:
            numba.set_num_threads(2)
            barrier.wait()
            out[name] = _metrics_state(_stream(z, t, opts))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    _run_threads([(work, c) for c in _CASES], "a stream never returned")
    assert not errors, errors
    for name, z, t, opts in _CASES:
        assert out[name] == _metrics_state(fx.evaluate(z, t, **opts)), name


@pytest.mark.parametrize("reused", [False, True], ids=["new-job", "next-batch"])
@pytest.mark.parametrize("side", [0, 1], ids=["worker", "caller"])
def test_an_error_in_a_stream_job_reaches_the_caller_and_adds_nothing(two_threads, count_jobs,
                                                                      side, reused):
    """A worker's side fails (after the job was posted), or the caller's call fails before
    posting it (its dispatch), in a stream's first job or in a batch that reuses the last
    one's launch (``_Launch``): the error is raised, the evaluator's state is unchanged,
    and later batches run as jobs again."""
    _, z, y, opts = _CASES[0]
    cuts = [0, 1000, 2000, 3000, 4500, z.shape[0]]
    chunks = list(zip(cuts[:-1], cuts[1:], strict=True))
    ev = fx.Evaluator(**opts)
    done = 3 if reused else 1  # batches before the failing one
    for a, b in chunks[:done]:
        ev.update(z[a:b], y[a:b])
    plan = ev._fast.plan
    if reused:
        assert plan.last is not None, "the last batch left no launch to reuse"
    ja = plan.last.ja if reused else None
    real = plan.job

    def failing(ctl, *args):
        if ctl[0] == side:  # ctl[0]: 1 on the caller's side, 0 on a worker's
            raise ZeroDivisionError("failed in a stream job")
        return real(ctl, *args)

    if reused:
        ja.fn = failing
        _workers_asleep(2)  # a worker takes ja.fn when it enters the job's loop
    else:
        plan.job, plan.ja = failing, None
    before = ev.state_dict()
    a, b = chunks[done]
    with pytest.raises(ZeroDivisionError, match="stream job"):
        ev.update(z[a:b], y[a:b])
    assert ev.state_dict() == before
    assert plan.last is None
    if reused:
        ja.fn = real
    else:
        plan.job, plan.ja = real, None
    n_jobs = sum(count_jobs)
    for a, b in chunks[done:]:
        ev.update(z[a:b], y[a:b])
    assert sum(count_jobs) == n_jobs + len(chunks) - done
    assert _metrics_state(ev.result()) == _metrics_state(fx.evaluate(z, y, **opts))


def test_a_stream_does_not_keep_its_batches_alive(two_threads, count_jobs):
    """The job's fixed arguments hold zero-length arrays of the batches' types, not views of
    a batch: once the caller drops its arrays, their memory is freed, though the evaluator
    (and its workers' loop) lives on."""
    import gc
    import weakref

    _, z, y, opts = _CASES[0]
    zc, yc = z.copy(), y.copy()
    refs = [weakref.ref(zc), weakref.ref(yc)]
    ev = fx.Evaluator(**opts)
    for a, b in _chunks(zc.shape[0]):
        ev.update(zc[a:b], yc[a:b])
    assert sum(count_jobs) >= 3
    del zc, yc, a, b
    gc.collect()
    assert [r() for r in refs] == [None, None], "the evaluator keeps a batch's memory alive"
    assert _metrics_state(ev.result()) == _metrics_state(fx.evaluate(z, y, **opts))


def test_a_stream_follows_the_thread_count_set_between_batches(two_threads, count_jobs):
    """numba.set_num_threads(1) between two batches of a stream: the next batch runs on the
    caller's thread only (no job), the one after the count is back on two threads as a job
    again; the result is the one-shot call's."""
    _, z, y, opts = _CASES[0]
    cuts = [0, 1000, 2000, 3000, 4000, z.shape[0]]
    chunks = list(zip(cuts[:-1], cuts[1:], strict=True))
    ev = fx.Evaluator(**opts)
    for a, b in chunks[:3]:
        ev.update(z[a:b], y[a:b])
    assert ev._fast.plan.last is not None
    n_jobs = len(count_jobs)
    numba.set_num_threads(1)
    a, b = chunks[3]
    ev.update(z[a:b], y[a:b])
    assert len(count_jobs) == n_jobs, "a batch ran as a job on one thread"
    numba.set_num_threads(2)
    a, b = chunks[4]
    ev.update(z[a:b], y[a:b])
    assert len(count_jobs) == n_jobs + 1
    assert _metrics_state(ev.result()) == _metrics_state(fx.evaluate(z, y, **opts))


_STREAM_ON_FEWER_THREADS = """
import numba
import numpy as np
import fastxent as fx
from fastxent.backends import numba_cpu
numba_cpu._WAKE = 0
numba_cpu._SMALL = 0
rng = np.random.default_rng(1)
z = (rng.standard_normal((20_000, 10)) * 3).astype(np.float32)
y = rng.integers(0, 10, 20_000)
want = fx.evaluate(z, y, top_k=3)
out = []
for threads in (3, 2, 3):  # the pool has two workers; on two threads one skips each job
    numba.set_num_threads(threads)
    ev = fx.Evaluator(top_k=3)
    for i in range(0, 20_000, 3000):
        ev.update(z[i:i + 3000], y[i:i + 3000])
    m = ev.result()
    out.append(m.count == want.count and float(m.loss) == float(want.loss)
               and m.top_k_accuracy == want.top_k_accuracy)
print(out)
"""


def test_stream_jobs_on_fewer_threads_than_the_pool_has():
    import os
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_NUM_THREADS="3")
    out = subprocess.run([sys.executable, "-c", _STREAM_ON_FEWER_THREADS], env=env, check=True,
                         capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "[True, True, True]", out.stdout + out.stderr
