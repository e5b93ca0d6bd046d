"""Relative error of the streamed mean loss at N = 1e8 rows, against an exact reference.

Streams generated batches (default 100 batches of 1e6 rows x C = 10, float32 logits, seeded)
through ``fx.Evaluator`` and, on the same batches, computes the per-row float32 losses with
``fx.softmax_cross_entropy(..., reduction="none")``. From those per-row values:

* ``exact``   the exact mean, as a rational: every float32 value is an integer times a power
              of two, summed exactly in Python integers (per exponent);
* ``fsum``    ``math.fsum`` of all per-row values widened to float64 (one fsum over the whole
              stream), divided by N;
* ``naive float32 / float64``  sequential running sums ``s += v`` in float32 / float64
              (``np.cumsum`` is sequential), divided by N;
* ``float32 pairwise per batch``  ``np.sum`` of each batch in float32 (pairwise), the batch
              sums added in float32: what a framework's float32 mean per batch, summed, does.

Run:  PYTHONPATH=. python scripts/accuracy_at_scale.py [--rows 1e8] [--batch 1e6] [--classes 10]
"""

from __future__ import annotations

import argparse
import math
import time
from fractions import Fraction

import numpy as np

import fastxent as fx


def exact_int_sum(v: np.ndarray) -> tuple[int, int]:
    """Exact sum of float32 values ``v`` as (integer, power): sum = integer * 2**power."""
    m, e = np.frexp(v.astype(np.float64))      # v = m * 2**e, |m| in [0.5, 1)
    mi = (m * (1 << 24)).astype(np.int64)      # float32: 24-bit significands, exact
    e = e - 24
    total, base = 0, -200                      # common scale 2**-200 (float32 min is 2**-149)
    for ee in np.unique(e[mi != 0]):
        s = int(mi[e == ee].sum())             # <= 1e6 * 2**24 < 2**63: exact
        total += s << (int(ee) - base)
    return total, base


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=float, default=1e8)
    ap.add_argument("--batch", type=float, default=1e6)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    N, B, C = int(args.rows), int(args.batch), args.classes
    rng = np.random.default_rng(args.seed)
    ev = fx.Evaluator()
    state = {"s32": np.float32(0), "s64": np.float64(0), "p32": np.float32(0), "exact": 0,
             "rows": 0}
    t0 = time.perf_counter()

    def values():
        done = 0
        while done < N:
            n = min(B, N - done)
            z = rng.standard_normal((n, C), dtype=np.float32) * np.float32(3)
            y = rng.integers(0, C, n)
            ev.update(z, y)
            v = np.asarray(fx.softmax_cross_entropy(z, y, reduction="none").loss)
            state["s32"] = np.cumsum(np.r_[np.float32(state["s32"]), v],
                                     dtype=np.float32)[-1]
            state["s64"] = np.cumsum(np.r_[np.float64(state["s64"]), v.astype(np.float64)],
                                     dtype=np.float64)[-1]
            state["p32"] = np.float32(state["p32"] + np.sum(v, dtype=np.float32))
            tot, base = exact_int_sum(v)
            state["exact"] += tot
            state["base"] = base
            done += n
            state["rows"] = done
            yield from v.astype(np.float64).tolist()

    fsum = math.fsum(values())
    secs = time.perf_counter() - t0
    m = ev.result()
    exact_mean = Fraction(state["exact"], N) * Fraction(2) ** state["base"]

    def rel(x: float) -> float:
        return float(abs(Fraction(x) - exact_mean) / exact_mean)

    rows = [
        ("fx.Evaluator (exact fixed-point state)", float(m.loss)),
        ("math.fsum of float64 per-row values / N", fsum / N),
        ("naive float64 running sum / N", float(state["s64"]) / N),
        ("float32 pairwise per batch, summed in float32", float(state["p32"]) / N),
        ("naive float32 running sum / N", float(state["s32"]) / N),
    ]
    print(f"N = {N:,} rows ({N // B} batches of {B:,} x C = {C}, float32 logits * 3, seed "
          f"{args.seed}); {secs:.0f} s")
    print(f"exact mean loss = {float(exact_mean)!r}  (count {int(m.count):,})")
    print(f"{'method':<48} {'mean loss':>22} {'relative error':>15}")
    for name, val in rows:
        print(f"{name:<48} {val!r:>22} {rel(val):>15.3e}")
    ulp = math.ulp(float(exact_mean)) / float(exact_mean)
    print(f"(one float64 ulp at this value is {ulp:.2e} relative; the Evaluator returns the "
          f"correctly rounded exact mean)")


if __name__ == "__main__":
    main()
