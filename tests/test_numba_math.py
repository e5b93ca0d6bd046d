"""The CPU kernels' float32 exp and log polynomials (and the float64 exp and log1p), compiled
with the kernels' own flags (fastmath with reassociation), against float64 NumPy: every
float32 loss and sigmoid term goes through them, so their error bounds are the engine's
float32 floor."""

from __future__ import annotations

import numpy as np
import pytest

from fastxent.backends._jit import jit_rows
from fastxent.backends._numba_math import (
    exp32,
    exp32_nonpos,
    exp64_nonpos,
    log1p32,
    log1p64,
    log1p64_unit,
    log32,
    log64,
    transpose_rows,
    wide_vectors,
)

FLT_MIN = np.float32(1.17549435e-38)


@jit_rows
def _eval_exp(x, out, out_nonpos):  # pragma: no cover - compiled
    wide_vectors()  # as the kernels
    for k in range(x.size):  # a loop LLVM vectorises, as in the kernels
        out[k] = exp32(x[k])
    for k in range(x.size):
        v = x[k] if x[k] < np.float32(0.0) else np.float32(0.0)
        out_nonpos[k] = exp32_nonpos(v)


@jit_rows
def _eval_log(x, out):  # pragma: no cover - compiled
    wide_vectors()
    for k in range(x.size):
        out[k] = log32(x[k])


def _ulps(got, ref):
    """|got - ref| in units of the float32 spacing at ref (ref float64)."""
    return np.abs(got.astype(np.float64) - ref) / np.spacing(np.abs(ref).astype(np.float32))


@pytest.fixture(scope="module")
def exp_points():
    rng = np.random.default_rng(11)
    return np.concatenate([
        rng.uniform(-87.3, 88.3, 2_000_000),       # the whole normal range
        -rng.random(500_000),                       # softmax terms near the max
        rng.uniform(-1e-3, 1e-3, 200_000),
        np.linspace(-87.3, 0.0, 300_001),           # every reduction interval n
    ]).astype(np.float32)


def test_exp32_is_within_two_ulps(exp_points):
    """XNNPACK's rr2-p5 scheme: 1.97 ulp at most when measured (2026-12-05). The two-part
    ln2 must survive fastmath: with the products folded into one, this was 4.7 ulp."""
    x = exp_points
    out, out_nonpos = np.empty_like(x), np.empty_like(x)
    _eval_exp(x, out, out_nonpos)
    ref = np.exp(x.astype(np.float64))
    u = _ulps(out, ref)
    assert u.max() <= 2.0, (u.max(), x[np.argmax(u)])
    assert u.mean() <= 0.7, u.mean()
    neg = x < 0
    un = _ulps(out_nonpos[neg], ref[neg])
    assert un.max() <= 2.0, (un.max(), x[neg][np.argmax(un)])


def test_exp32_edges():
    x = np.array([0.0, -0.0, -87.33654, -88.0, -1e30, 88.37626, 89.0, 1e30], np.float32)
    out, out_nonpos = np.empty_like(x), np.empty_like(x)
    _eval_exp(x, out, out_nonpos)
    assert out[0] == out[1] == 1.0 and out_nonpos[0] == 1.0
    # below the normal range: clamped to ~FLT_MIN, never 0, NaN or a subnormal
    assert np.all(out[2:5] >= FLT_MIN) and np.all(out[2:5] < 1.0001 * FLT_MIN)
    assert np.all(out_nonpos[2:5] >= FLT_MIN) and np.all(out_nonpos[2:5] < 1.0001 * FLT_MIN)
    # above: clamped to exp(88.37626), finite
    assert np.all(np.isfinite(out[5:])) and np.all(out[5:] == out[5])
    assert out[5] == pytest.approx(np.exp(np.float64(x[5])), rel=3e-7)


@jit_rows
def _eval_f64(x, u, out_exp, out_log1p):  # pragma: no cover - compiled
    wide_vectors()
    for k in range(x.size):
        out_exp[k] = exp64_nonpos(x[k])
    for k in range(u.size):
        out_log1p[k] = log1p64_unit(u[k])


@jit_rows
def _eval_log64(p, out_log, out_log1m):  # pragma: no cover - compiled
    wide_vectors()
    for k in range(p.size):
        out_log[k] = log64(p[k])
    for k in range(p.size):
        out_log1m[k] = log1p64(-p[k])


def test_float64_log_of_probabilities_is_within_a_few_ulps():
    """log(p) and log1p(-p) of the float64 probability paths, p in [0, 1]: subnormals and 0
    (-inf) included."""
    rng = np.random.default_rng(13)
    p = np.concatenate([rng.random(1_000_000), np.exp(-rng.random(300_000) * 745),
                        1.0 - rng.random(200_000) * 1e-9, rng.random(1000) * 1e-310,
                        [0.0, 1.0, 0.5, 5e-324, 2.2250738585072014e-308]])
    ol, om = np.empty_like(p), np.empty_like(p)
    _eval_log64(p, ol, om)
    with np.errstate(divide="ignore"):
        rl, rm = np.log(p), np.log1p(-p)
    for got, ref in ((ol, rl), (om, rm)):
        fin = np.isfinite(ref) & (ref != 0)
        u = np.abs(got[fin] - ref[fin]) / np.spacing(np.abs(ref[fin]))
        assert u.max() <= 3.0, (u.max(), p[fin][np.argmax(u)])
        assert np.array_equal(got[~fin], ref[~fin])  # log(0) = log1p(-1) = -inf, log(1) = 0


def test_float64_exp_and_log1p_are_within_a_few_ulps():
    """The vectorisable float64 exp (x <= 0) and log1p (u in [0, 1]) of the float64 kernels
    (Numba's math.exp / math.log1p are libm calls, which do not vectorise): 1.0 and 3.0 ulp
    of float64 at most when measured (2026-12-05; log1p 0.32 ulp on average on these
    points), against NumPy's libm."""
    rng = np.random.default_rng(12)
    x = np.concatenate([-rng.random(1_000_000) * 708.39, -rng.random(300_000),
                        -rng.random(100_000) * 1e-12, np.linspace(-708.39, 0.0, 300_001),
                        [0.0, -0.0, -708.3964185322641]])
    u = np.concatenate([rng.random(1_000_000), np.exp(-rng.random(500_000) * 700),
                        rng.random(100_000) * 1e-15, [0.0, 1.0, np.sqrt(2.0) - 1.0, 5e-324]])
    oe, ol = np.empty_like(x), np.empty_like(u)
    _eval_f64(x, u, oe, ol)
    re, rl = np.exp(x), np.log1p(u)
    ue = np.abs(oe - re) / np.spacing(re)
    assert ue.max() <= 1.0, (ue.max(), x[np.argmax(ue)])
    assert oe[-3] == oe[-2] == 1.0
    pos = rl > 0
    ul = np.abs(ol[pos] - rl[pos]) / np.spacing(rl[pos])
    assert ul.max() <= 3.0, (ul.max(), u[pos][np.argmax(ul)])
    assert ul.mean() <= 0.35, ul.mean()
    assert ol[-4] == 0.0 and ol[-1] == 5e-324  # log1p(u) = u below 2**-53, subnormals too
    # below the normal range: clamped to ~DBL_MIN, never 0, NaN or a subnormal
    tiny = np.array([-708.5, -745.0, -1e300, -np.inf])
    ot = np.empty_like(tiny)
    _eval_f64(tiny, u[:0], ot, ol[:0])
    assert np.all(ot >= 2.2250738585072014e-308) and np.all(ot < 1.0001 * 2.2250738585072014e-308)


def test_log32_is_within_two_ulps():
    rng = np.random.default_rng(12)
    x = np.concatenate([np.exp(rng.uniform(-87.0, 88.0, 2_000_000)),
                        rng.uniform(0.5, 2.0, 500_000)]).astype(np.float32)
    out = np.empty_like(x)
    _eval_log(x, out)
    ref = np.log(x.astype(np.float64))
    keep = np.abs(ref) > 1e-6  # near x = 1 the float32 input's own rounding dominates
    u = _ulps(out[keep], ref[keep])
    assert u.max() <= 2.0, (u.max(), x[keep][np.argmax(u)])
    zero = np.zeros(1, np.float32)
    _eval_log(zero, out[:1])
    assert out[0] == -np.inf


@jit_rows
def _eval_log1p(x, out):  # pragma: no cover - compiled
    for k in range(x.size):
        out[k] = log1p32(x[k])


def test_log1p32_bound():
    """The series below |u| = 0.1, log(1 + u) above it, where the rounding of 1 + u costs up
    to 7.8 ulp (near u = 0.1; a correction for it made the C = 10 tile kernels 0.6-0.8x as
    fast). u = -1 gives -inf (sigmoid probabilities of exactly 1 with eps = 0)."""
    rng = np.random.default_rng(13)
    x = np.concatenate([rng.uniform(-0.999, 0.0, 1_000_000), rng.uniform(0.0, 1.0, 1_000_000),
                        np.exp(rng.uniform(-20.0, 20.0, 1_000_000)),
                        rng.uniform(0.09, 0.11, 200_000)]).astype(np.float32)
    out = np.empty_like(x)
    _eval_log1p(x, out)
    ref = np.log1p(x.astype(np.float64))
    keep = ref != 0.0
    u = _ulps(out[keep], ref[keep])
    assert u.max() <= 8.0, (u.max(), x[keep][np.argmax(u)])
    small = np.abs(x) < 0.1  # the series: float32-exact to 2 ulp
    us = _ulps(out[keep & small], ref[keep & small])
    assert us.max() <= 2.0, (us.max(), x[keep & small][np.argmax(us)])
    edge = np.array([-1.0, 0.0, -0.0], np.float32)
    got = np.empty_like(edge)
    _eval_log1p(edge, got)
    assert got[0] == -np.inf and got[1] == 0.0 and got[2] == 0.0


def _exp_loop(x, out):  # pragma: no cover - compiled
    for k in range(x.size):
        out[k] = exp32_nonpos(-abs(x[k]))


def _exp_loop_wide(x, out):  # pragma: no cover - compiled
    wide_vectors()  # the loop must be in this function: helpers are vectorised on their own
    for k in range(x.size):
        out[k] = exp32_nonpos(-abs(x[k]))


def test_wide_vectors_reach_the_machine_code():
    """``wide_vectors()`` makes LLVM vectorise the calling function with 512-bit registers
    on a CPU with AVX-512 (elsewhere it changes nothing): a freshly compiled loop (cached
    code cannot be inspected) uses zmm registers with it, and gives the same values as
    without it."""
    import numba as nb
    from llvmlite import binding as llvm

    from fastxent import config

    flags = dict(fastmath=config.FASTMATH_FLAGS, error_model="numpy")
    plain = nb.njit(**flags)(_exp_loop)
    wide = nb.njit(**flags)(_exp_loop_wide)
    x = np.linspace(-80, 80, 4099, dtype=np.float32)
    a, b = np.empty_like(x), np.empty_like(x)
    plain(x, a)
    wide(x, b)
    np.testing.assert_array_equal(a, b)
    asm = wide.inspect_asm(wide.signatures[0])
    if nb.config.CPU_NAME or nb.config.CPU_FEATURES:
        pytest.skip("NUMBA_CPU_NAME / NUMBA_CPU_FEATURES set: the target is not the host")
    if llvm.get_host_cpu_features().get("avx512f", False):
        assert "zmm" in asm
    else:
        assert "zmm" not in asm


@jit_rows
def _transpose_tile(buf, a, base, one):  # pragma: no cover - compiled
    C = buf.shape[0]  # literal class counts, as in the kernels' _load_tile
    if C == 4:
        transpose_rows(buf, a, base, 4, one)
    elif C == 5:
        transpose_rows(buf, a, base, 5, one)
    elif C == 8:
        transpose_rows(buf, a, base, 8, one)
    elif C == 10:
        transpose_rows(buf, a, base, 10, one)
    elif C == 16:
        transpose_rows(buf, a, base, 16, one)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C", [4, 5, 8, 10, 16])
def test_transpose_rows_is_an_exact_transpose(C, dtype):
    """The small-C tile kernels' full-tile transpose: ``buf[c, r] = a[base + r*C + c]``, bit
    for bit (float32: one wide load and shuffles per 16 rows; float64: the element loop),
    from any offset, taking nothing from past the tile."""
    rng = np.random.default_rng(C)
    rows = 64
    for base in (0, 3, C * 7 + 1):
        a = rng.standard_normal(base + rows * C + 5).astype(dtype)
        a[base + 17] = np.nan  # any bits pass through
        a[base + rows * C:] = np.inf  # past the tile: must not be read into buf
        buf = np.full((C, rows), -7.0, dtype=dtype)
        _transpose_tile(buf, a, np.int64(base), dtype(1.0))
        want = a[base:base + rows * C].reshape(rows, C).T
        np.testing.assert_array_equal(buf.view(np.uint32 if dtype == np.float32 else np.uint64),
                                      want.view(np.uint32 if dtype == np.float32 else np.uint64))
    # a strided source (Numba layout "A") takes the element loop, not the wide load
    a = rng.standard_normal(2 * (rows * C + 3)).astype(dtype)[::2]
    buf = np.empty((C, rows), dtype=dtype)
    _transpose_tile(buf, a, np.int64(3), dtype(1.0))
    np.testing.assert_array_equal(buf, a[3:3 + rows * C].reshape(rows, C).T)
