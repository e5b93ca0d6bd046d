"""What bounds the small-C softmax tile kernel (A_4Mx10's): its passes timed apart, on one core.

On 2**20 x 10 float32 logits with sparse labels, one thread, the tile loop of
``_softmax_sparse_small`` (64-row tiles, class-major) with parts of it:

* **max pass**: transpose a tile and read its labels, then the row max, first argmax and
  finiteness (``_tile_max_argmax``): what any kernel that shifts by the row max pays first;
* **bare exp**: fastxent's float32 ``exp`` once per element and a sum, nothing else;
* **kernel passes**: the max pass, then the exp pass and the row loss (``_tile_logits_sparse``),
  as the kernel runs them (without its exact sums and counters);
* **one pass (label shift)**: a prototype that shifts each row by its label's own logit
  instead of its max: loss = log1p(sum over c != y of exp(z_c - z_y)), the label's rank (so
  accuracy and top-k) in the same pass, no max pass; the class count a constant.

Printed: ns per row, fastest of ``--repeat`` calls, three rounds alternating. "max pass" +
"bare exp" is a floor for any kernel of the max-shift design with this exp; A's 4M rows on
two cores cost at least 2M times that.

Run:  PYTHONPATH=. python scripts/small_c_bound.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import time

import numba as nb
import numpy as np

from fastxent.backends import numba_cpu as K
from fastxent.backends._jit import jit_inline, jit_rows
from fastxent.backends._numba_math import exp32, fexp_nonpos, log_sum32, nonfinite

TILE = K.TILE
_NEG_TINY = np.float32(-1.4e-45)  # d > this  <=>  d >= 0, for float32 d


@jit_inline
def _label_shift_pass(buf, yf, zy, lv, rk, chk, CC):  # pragma: no cover - compiled
    one, zero = np.float32(1.0), np.float32(0.0)
    for r in range(buf.shape[1]):
        yr, zr = yf[r], zy[r]
        s, sd, rank = zero, zero, zero
        for c in range(CC):
            cf = np.float32(c)
            d = buf[c, r] - zr
            e = exp32(d)  # outside the select: in its arm it became a branch, no SIMD
            s += zero if yr == cf else e
            sd += d
            rank += one if d > (_NEG_TINY if cf < yr else zero) else zero
        lv[r] = log_sum32(one, s)
        rk[r] = rank
        chk[r] = nonfinite(sd) + (one if s > np.float32(1e37) else zero)


def _tile_loop(variant):
    @jit_rows
    def run(z, y, n, C):  # pragma: no cover - compiled
        one = np.float32(1.0)
        buf = np.empty((C, TILE), np.float32)
        mx, ix, chk, tot, yf, sm, neq, dy, sd, lv, zy, rk = [
            np.zeros(TILE, np.float32) for _ in range(12)]
        s = 0.0
        for i0 in range(0, n, TILE):
            K._load_tile(buf, z, i0, TILE, C, one)
            for r in range(TILE):
                yf[r] = np.float32(y[i0 + r])
            if variant == 2:
                for r in range(TILE):
                    zy[r] = buf[np.int64(y[i0 + r]), r]
                _label_shift_pass(buf, yf, zy, lv, rk, chk, 10)
                for r in range(TILE):
                    s += lv[r] + rk[r] + chk[r]
                continue
            K._tile_max_argmax(buf, mx, ix, chk, tot, False)
            if variant == 1:
                K._tile_logits_sparse(buf, yf, mx, sm, neq, dy, sd, lv, one, np.float32(0.0))
            for r in range(TILE):
                s += mx[r] + ix[r] + chk[r] + lv[r]
        return s
    return run


@jit_rows
def _bare_exp(z):  # pragma: no cover - compiled
    s = np.float32(0.0)
    for i in range(z.size):
        x = z[i]
        s += fexp_nonpos(-(x if x > np.float32(0.0) else -x))
    return s


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args(argv)
    nb.set_num_threads(1)
    n, C = 1 << 20, 10
    rng = np.random.default_rng(0)
    z = rng.standard_normal((n, C), dtype=np.float32).reshape(-1)
    y = rng.integers(0, C, n)
    passes = {"max pass": _tile_loop(0), "bare exp": None, "kernel passes": _tile_loop(1),
              "one pass (label shift)": _tile_loop(2)}
    calls = {k: (lambda f=f: f(z, y, n, C)) if f is not None else (lambda: _bare_exp(z))
             for k, f in passes.items()}
    for f in calls.values():
        f()  # compile
    best = {k: [] for k in calls}
    for _ in range(3):
        for k, f in calls.items():
            ts = []
            for _ in range(a.repeat):
                t0 = time.perf_counter()
                f()
                ts.append(time.perf_counter() - t0)
            best[k].append(min(ts) / n * 1e9)
    print(f"{n:,} x {C} float32, sparse labels, one thread; ns per row (three rounds)")
    for k, v in best.items():
        print(f"  {k:24s} " + "  ".join(f"{t:5.1f}" for t in v))
    floor = min(best["max pass"]) + min(best["bare exp"])
    print(f"  max pass + bare exp      {floor:5.1f}  (A_4Mx10 on two cores: >= "
          f"{floor * 4_194_304 / 2 / 1e6:.0f} ms)")


if __name__ == "__main__":
    main()
