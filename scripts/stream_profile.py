"""Where a streamed update's time goes: an ``fx.Evaluator`` fed 64k-row batches, timed around
the engine's pieces.

The CPU engine's pieces are wrapped with timestamps (in this process only): the pool's
``try_run`` (posting the job, the caller's kernel, the wait for the worker) and the kernel
calls of the caller and of the worker. Per update it derives:

* **before the pool**: from ``update()`` to the job being posted (the fast path's checks, the
  thread count, the state slices, the kernel's arguments);
* **worker start delay**: the worker's kernel call starts this long after the caller's (the
  worker takes the GIL and dispatches its call once the caller's kernel has claimed a block);
* **end wait**: from the end of the caller's kernel to the end of ``try_run`` (the worker's
  last block, then its return to the pool);
* **after the pool**: from the end of ``try_run`` to the end of ``update()`` (the reduction
  into the evaluator's state);
* **whole update**, and the one-shot call's time per batch for comparison.

Then (``--layers``) the same rows as one engine call and as a stream of batches, each layer
of the stream's path added in turn: the kernels launched through the pool per batch, the
reduction into the state per batch, the engine's ``add_into`` (its Python), and
``Evaluator.update``; what each layer adds per update.

The wrappers add ~1 us of Python each; the medians are what to read, the maxima show the rare
long stalls (a worker descheduled while it holds a block).

Run:  PYTHONPATH=. python scripts/stream_profile.py [--rows 4000000] [--classes 10]
      [--chunk 65536] [--streams 10] [--layers 15]
"""

from __future__ import annotations

import argparse
import time

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
    ev = fx.Evaluator()
    ev.update(z[:chunk], y[:chunk])  # builds the stream's fast path and launch plan
    plan = ev._fast.plan
    if plan is None:
        raise SystemExit("this stream takes no fast path")

    clock = time.perf_counter_ns
    kernel_log, pool_log = [], []
    kernel = plan.kernel

    def timed_kernel(*args):  # args[-3] is the slot: the caller runs the last one
        t0 = clock()
        kernel(*args)
        kernel_log.append((args[-3], t0, clock()))

    try_run = eng._Pool.try_run

    def timed_try_run(self, *args):
        t0 = clock()
        out = try_run(self, *args)
        pool_log.append((t0, clock()))
        return out

    plan.kernel = timed_kernel
    eng._Pool.try_run = timed_try_run
    parts = {k: [] for k in ("before the pool", "worker start delay", "end wait",
                             "after the pool", "whole update")}
    try:
        for _ in range(a.streams):
            kernel_log.clear()
            pool_log.clear()
            updates = []
            for i in range(0, n, chunk):
                t0 = clock()
                ev.update(z[i:i + chunk], y[i:i + chunk])
                updates.append((t0, clock()))
            pools = iter(pool_log)
            pool = next(pools, None)
            for u0, u1 in updates:
                if pool is None or not u0 <= pool[0] <= u1:
                    continue  # a batch small enough to run on the caller's thread alone
                (p0, p1), pool = pool, next(pools, None)
                calls = [k for k in kernel_log if p0 <= k[1] <= p1]
                mine = max(calls, key=lambda k: k[0])  # the caller's slot
                others = [k for k in calls if k is not mine]
                parts["before the pool"].append(p0 - u0)
                if others:
                    parts["worker start delay"].append(min(k[1] for k in others) - mine[1])
                parts["end wait"].append(p1 - mine[2])
                parts["after the pool"].append(u1 - p1)
                parts["whole update"].append(u1 - u0)
    finally:
        plan.kernel = kernel
        eng._Pool.try_run = try_run
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


def layers(n, C, chunk, repeat):
    """The same rows as one call and as a stream, each layer of the stream's path added in
    turn (calls alternating, 20th percentile of ``repeat``): what each layer costs per
    update."""
    rng = np.random.default_rng(1)
    z = rng.standard_normal((n, C), dtype=np.float32)
    y = rng.integers(0, C, n)
    ev = fx.Evaluator()
    ev.update(z[:chunk], y[:chunk])
    plan = ev._fast.plan
    cnt, ex = ev._counts.copy(), ev._exact.copy()
    zf = z.reshape(-1)
    T = eng._threads(chunk, C)
    st = eng._scratch(T, plan.nq, plan.nc)
    starts = range(0, n - chunk + 1, chunk)  # whole batches only
    n_used = len(starts) * chunk
    pre = [plan.args(zf[i * C:(i + chunk) * C], C, y[i:i + chunk], 0, eng._NO_WEIGHTS, chunk,
                     plan.no_rows, st[:4]) for i in starts]

    def one_call():
        plan.add_into(z[:n_used], y[:n_used], cnt, ex, False)

    def pool_jobs(reduce_each=False):
        for args in pre:
            eng._parallel(plan.kernel, args, T, chunk, C)
            if reduce_each:
                eng._reduce_into(st[0], st[2], st[3], st[4], cnt, ex, False)
        eng._reduce_into(st[0], st[2], st[3], st[4], cnt, ex, False)

    def add_into():
        for i in starts:
            plan.add_into(z[i:i + chunk], y[i:i + chunk], cnt, ex, False)

    def evaluator():
        e = fx.Evaluator()
        for i in starts:
            e.update(z[i:i + chunk], y[i:i + chunk])

    cases = {"one call": one_call, "kernel calls (pool)": pool_jobs,
             "+ reduction per call": lambda: pool_jobs(True), "+ add_into": add_into,
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
