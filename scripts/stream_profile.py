"""Where a streamed update's time goes: an ``fx.Evaluator`` fed 64k-row batches, timed around
the engine's pieces.

Each batch runs as a stream job of the CPU engine's pool (``numba_cpu._Pool.try_job``): the
workers wait in compiled code, the caller posts the batch, runs its share, waits for them and
adds the state in one compiled call. The pool's ``try_job`` is wrapped with timestamps (in
this process only). Per update it derives:

* **before the job**: from ``update()`` to ``try_job`` (the fast path's checks and the
  reuse of the last batch's launch);
* **job**: ``try_job`` (its Python, the compiled call's dispatch, the kernels on all
  threads, the wait for the workers, the reduction into the evaluator's state);
* **after the job**: from the end of ``try_job`` to the end of ``update()``;
* **whole update**, and the one-shot call's time per batch for comparison.

Then (``--layers``) the same rows as one engine call and as a stream of batches, each layer
of the stream's path added in turn: the jobs posted from compiled code (no Python between
batches), the jobs posted through ``try_job``, the engine's ``add_into`` (its Python), and
``Evaluator.update``; what each layer adds per update.

The wrapper adds ~1 us of Python; the medians are what to read, the maxima show the rare long
stalls (a worker descheduled while it holds a block).

Run:  PYTHONPATH=. python scripts/stream_profile.py [--rows 4000000] [--classes 10]
      [--chunk 65536] [--streams 10] [--layers 15]
"""

from __future__ import annotations

import argparse
import time

import numba as nb
import numpy as np

import fastxent as fx
from fastxent.backends import numba_cpu as eng


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=4_000_000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--chunk", type=int, default=65536)
    ap.add_argument("--streams", type=int, default=10)
    ap.add_argument("--layers", type=int, default=15, metavar="REPEAT",
                    help="then time the stream's layers REPEAT times (0: skip)")
    a = ap.parse_args(argv)
    n, C, chunk = a.rows, a.classes, a.chunk
    rng = np.random.default_rng(0)
    z = rng.standard_normal((n, C), dtype=np.float32)
    y = rng.integers(0, C, n)
    fx.evaluate(z[:chunk], y[:chunk])
    clock = time.perf_counter_ns
    log = []
    try_job = eng._Pool.try_job

    def timed_try_job(self, *args):
        t0 = clock()
        out = try_job(self, *args)
        log.append((t0, clock()))
        return out

    eng._Pool.try_job = timed_try_job
    parts = {k: [] for k in ("before the job", "job", "after the job", "whole update")}
    try:
        for _ in range(a.streams):
            ev = fx.Evaluator()
            for i in range(0, n, chunk):
                log.clear()
                t0 = clock()
                ev.update(z[i:i + chunk], y[i:i + chunk])
                t1 = clock()
                if not log:
                    continue  # the first batch (full path), or one run on one thread
                j0, j1 = log[0]
                parts["before the job"].append(j0 - t0)
                parts["job"].append(j1 - j0)
                parts["after the job"].append(t1 - j1)
                parts["whole update"].append(t1 - t0)
    finally:
        eng._Pool.try_job = try_job
    t_one = min(_timed(lambda: fx.evaluate(z, y)) for _ in range(5))
    print(f"{n:,} x {C} float32, {chunk:,}-row updates, {a.streams} streams; us per update")
    print(f"  {'':20s} {'median':>8} {'mean':>8} {'p99':>8} {'max':>10}")
    for name, v in parts.items():
        v = np.asarray(v, dtype=np.float64) / 1e3
        if v.size:
            print(f"  {name:20s} {np.median(v):8.1f} {v.mean():8.1f} "
                  f"{np.percentile(v, 99):8.1f} {v.max():10.1f}")
    print(f"  one-shot fx.evaluate per {chunk:,} rows: {t_one / n * chunk * 1e6:.1f} "
          f"(best of 5: {t_one * 1e3:.1f} ms)")
    if a.layers:
        layers(n, C, chunk, a.layers)


def _compiled_posts(fn):
    """A compiled loop posting one stream job per batch with the caller's side of ``fn``
    (the pool's workers must be in that job's loop already)."""

    @nb.njit(nogil=True)
    def posts(z, y, chunk, C, token, head, tail, bounds, mbox, sig, red):
        for i in range(0, y.shape[0] - chunk + 1, chunk):
            fn((1, token, 0, chunk, 1, 1 << 22), head, tail,
               (z[i * C:(i + chunk) * C], y[i:i + chunk], bounds), mbox, sig, red)

    return posts


def layers(n, C, chunk, repeat):
    """The same rows as one call and as a stream, each layer of the stream's path added in
    turn (calls alternating, 20th percentile of ``repeat``): what each layer costs per
    update."""
    rng = np.random.default_rng(1)
    z = rng.standard_normal((n, C), dtype=np.float32)
    y = rng.integers(0, C, n)
    ev = fx.Evaluator()
    for i in range(0, 6 * chunk, chunk):  # the first batches set up the stream's job
        ev.update(z[i:i + chunk], y[i:i + chunk])
    plan = ev._fast.plan
    launch = plan.last
    if launch is None:
        raise SystemExit("the stream runs no jobs (one thread?)")
    ja, pool = launch.ja, eng._POOL
    cnt, ex = ev._counts.copy(), ev._exact.copy()
    red = (launch.red[0], cnt, ex, False)
    zf = z.reshape(-1)
    starts = range(0, n - chunk + 1, chunk)  # whole batches only
    n_used = len(starts) * chunk
    batches = [(zf[i * C:(i + chunk) * C], y[i:i + chunk]) for i in starts]
    posts = _compiled_posts(ja.fn)

    def one_call():
        plan.add_into(z[:n_used], y[:n_used], cnt, ex, False)

    def compiled():
        ev.update(z[:chunk], y[:chunk])  # the workers in this job's loop
        posts(zf[:n_used * C], y[:n_used], chunk, C, ja.token, ja.head, ja.tail,
              launch.bounds, pool.mbox, pool.sig, red)

    def jobs():
        for zb, yb in batches:
            pool.try_job(ja, zb, yb, chunk, launch.bounds, launch.T, red)

    def add_into():
        for i in starts:
            plan.add_into(z[i:i + chunk], y[i:i + chunk], cnt, ex, False)

    def evaluator():
        e = fx.Evaluator()
        for i in starts:
            e.update(z[i:i + chunk], y[i:i + chunk])

    cases = {"one call": one_call, "jobs, compiled posts": compiled,
             "jobs through try_job": jobs, "+ add_into": add_into,
             "+ Evaluator.update": evaluator}
    times = {k: [] for k in cases}
    for f in cases.values():
        f()
    for _ in range(repeat):
        for k, f in cases.items():
            times[k].append(_timed(f))
    base = np.percentile(times["one call"], 20)
    k_calls = len(starts)
    print(f"\nlayers: {n_used:,} x {C} as one call and as {k_calls} calls of {chunk:,} rows "
          f"(20th percentile of {repeat}, calls alternating)")
    prev = base
    for k, v in times.items():
        t = np.percentile(v, 20)
        print(f"  {k:22s} {t * 1e3:7.1f} ms  {t / base:5.3f}x  "
              f"{(t - prev) / k_calls * 1e6:+6.1f} us per update")
        prev = t


def _timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
