"""When a second CPU thread pays off: one engine call (sparse softmax, float32) on one thread
against two, in a loop (the worker threads awake, spinning between calls) and isolated (calls
10 ms apart, so the worker is asleep and must be woken), and what the engine chooses.

The engine runs a call on the caller's thread alone below ``numba_cpu._SMALL`` elements, and
also below ``_WAKE`` when its workers are asleep; this script times each choice forced, so
that both thresholds can be read off the table on the machine at hand.

Printed: median microseconds per call for each (C, elements).

Run:  PYTHONPATH=. python scripts/thread_threshold.py [--classes 10 1000] [--reps 25]
"""

from __future__ import annotations

import argparse
import time

import numba as nb
import numpy as np

from fastxent.backends import SoftmaxOptions
from fastxent.backends import numba_cpu as K

_NEVER, _ALWAYS = 1 << 62, 0
# (name, _SMALL, _WAKE) of each timed choice; None: the engine's own
_CHOICES = (("1t", _NEVER, _NEVER), ("2t", _ALWAYS, _ALWAYS), ("engine", None, None))


def _time(f, choice, gap, calls):
    """Seconds per call of ``calls`` calls ``gap`` s apart, the thresholds set as ``choice``."""
    saved = K._SMALL, K._WAKE
    if choice[1] is not None:
        K._SMALL, K._WAKE = choice[1], choice[2]
    try:
        ts = []
        for _ in range(calls):
            if gap:
                time.sleep(gap)
            t = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t)
        return ts
    finally:
        K._SMALL, K._WAKE = saved


def _medians_us(f, gap, rounds, calls):
    """Median per choice, the choices taking turns (``calls`` calls each per round), so that a
    shared machine's drift hits them alike."""
    out = {c[0]: [] for c in _CHOICES}
    for c in _CHOICES:
        _time(f, c, 0.0, 2)  # compile, warm
    for _ in range(rounds):
        for c in _CHOICES:
            out[c[0]] += _time(f, c, gap, calls)[1:] if calls > 1 else _time(f, c, gap, 1)
    return [float(np.median(out[c[0]])) * 1e6 for c in _CHOICES]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--classes", type=int, nargs="+", default=[10, 100, 1000, 10000])
    ap.add_argument("--log2", type=int, nargs="+", default=[14, 16, 17, 18, 19, 20, 21, 22])
    ap.add_argument("--reps", type=int, default=25)
    a = ap.parse_args(argv)
    if nb.get_num_threads() < 2:
        raise SystemExit("needs two Numba threads")
    rng = np.random.default_rng(0)
    print(f"median us per call; loop: rounds of 9 calls back to back, isolated: calls 10 ms "
          f"apart ({a.reps} each); engine: _SMALL = 2**{K._SMALL.bit_length() - 1}, "
          f"_WAKE = 2**{K._WAKE.bit_length() - 1}")
    print(f"{'C':>6} {'elements':>9} | {'loop 1t':>8} {'loop 2t':>8} {'engine':>8} | "
          f"{'isol 1t':>8} {'isol 2t':>8} {'engine':>8}")
    for C in a.classes:
        for e in a.log2:
            n = max(1, (1 << e) // C)
            z = rng.standard_normal((n, C), dtype=np.float32)
            y = rng.integers(0, C, n)
            opts = SoftmaxOptions()
            f = lambda z=z, y=y, opts=opts: K.softmax_xent(z, y, opts)  # noqa: E731
            # a loop: rounds of 9 calls back to back (the first of each dropped: its
            # workers may be asleep); isolated: single calls 10 ms apart, the choices taking turns
            row = (_medians_us(f, 0.0, a.reps // 3 + 1, 9)
                   + _medians_us(f, 0.01, a.reps, 1))
            print(f"{C:>6} {n * C:>9,} | " + " ".join(f"{v:8.0f}" for v in row[:3]) + " | "
                  + " ".join(f"{v:8.0f}" for v in row[3:]), flush=True)


if __name__ == "__main__":
    main()
