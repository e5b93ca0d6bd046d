"""Scalar building blocks of the CPU kernels: bit casts, loads and a vectorisable exp/log.

PyPI's llvmlite has no SVML, so ``math.exp`` on float32 is a scalar libm call (0.55 G/s on
this project's 2-core machines, BENCHMARKS.md). The float32 ``exp32`` below is XNNPACK's
range-reduced degree-5 polynomial with 2**n built from integer bits, ``log32`` the Cephes
single-precision one: branch-free (selects only), so LLVM vectorises loops that call them.
Max relative error is a few float32 ulps (tests/tolerances.py). float64 inputs use libm
(``math.exp``/``math.log``).

All helpers keep NaN/inf out of their fast paths on purpose (clamps use compare-and-select);
the kernels detect non-finite rows first and send them down an IEEE slow path.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from ._jit import jit_inline

# --------------------------------------------------------------------------- bit casts


def _bitcast(src, dst):
    """Reinterpret the bits of ``src`` as ``dst``; an integer source of another width is
    truncated/extended to ``src``'s width first (Numba widens int32 arithmetic to int64)."""

    @intrinsic
    def cast(typingctx, x):
        if isinstance(src, types.Integer):
            if not isinstance(x, types.Integer):
                return None
        elif x != src:
            return None

        def codegen(context, builder, signature, args):
            v = args[0]
            width = src.bitwidth
            if isinstance(x, types.Integer) and x.bitwidth > width:
                v = builder.trunc(v, ir.IntType(width))
            elif isinstance(x, types.Integer) and x.bitwidth < width:
                v = (builder.sext if x.signed else builder.zext)(v, ir.IntType(width))
            return builder.bitcast(v, context.get_value_type(dst))

        return dst(x), codegen

    return cast


_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_F32 = ir.FloatType()
_F64 = ir.DoubleType()
f32_as_i32 = _bitcast(types.float32, types.int32)
i32_as_f32 = _bitcast(types.int32, types.float32)
f64_as_i64 = _bitcast(types.float64, types.int64)
i64_as_f64 = _bitcast(types.int64, types.float64)

# --------------------------------------------------------------------------- constants
F0 = np.float32(0.0)
F1 = np.float32(1.0)
FHALF = np.float32(0.5)
_LOG2E = np.float32(1.44269504088896341)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
_EXP_LO = np.float32(-87.33654)  # exp(-87.3365) = FLT_MIN: 2**n stays a normal number
_EXP_HI = np.float32(88.37626)
_SQRTH = np.float32(0.707106781186547524)
_L = [np.float32(c) for c in (
    7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
    -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1)]
_L0, _L1, _L2, _L3, _L4, _L5, _L6, _L7, _L8 = _L
_FLT_MIN = np.float32(1.17549435e-38)
_TWO23 = np.float32(8388608.0)
_NINF32 = np.float32(-np.inf)
_LOG1P_SMALL = np.float32(0.1)
_THIRD = np.float32(1.0 / 3.0)
_QUARTER = np.float32(0.25)
_FIFTH = np.float32(0.2)
_SIXTH = np.float32(1.0 / 6.0)
_SEVENTH = np.float32(1.0 / 7.0)
_EIGHTH = np.float32(0.125)
_NINTH = np.float32(1.0 / 9.0)
_TWO112 = np.float32(2.0**112)


# exp: XNNPACK's "rr2-p5" scheme (src/math/f32-expminus-*-rr2-p5.c): n = round(x / ln2) by
# the magic-bias trick, t = x - n ln2 with a two-part ln2 whose high part ends in zero bits
# (n * hi is exact with or without FMA), exp(t) = 1 + t p(t), p of degree 4 (minimax on
# [-ln2/2, ln2/2]). Against the Cephes polynomial with floor() it had before: 12 vector
# instructions instead of 17, ~1.2x faster in a loop, and 1.97 ulp at most instead of 4.49
# (mean 0.59 ulp instead of 1.07; 30M points over [-87.3, 0], float64 np.exp as reference)
_EXP_MAGIC = np.float32(float.fromhex("0x1.8000FEp23"))  # ulp 1, and 127 mod 2**22
_EXP_LN2_HI = np.float32(float.fromhex("0x1.62E400p-1"))
_EXP_LN2_LO = np.float32(float.fromhex("0x1.7F7D1Cp-20"))
_C1 = np.float32(float.fromhex("0x1.FFFFF6p-1"))
_C2 = np.float32(float.fromhex("0x1.FFFDC6p-2"))
_C3 = np.float32(float.fromhex("0x1.555A80p-3"))
_C4 = np.float32(float.fromhex("0x1.573A1Ap-5"))
_C5 = np.float32(float.fromhex("0x1.0F9F9Cp-7"))


def _shaped(like, elem):
    """``elem`` (an IR scalar type), or a vector of it as long as ``like``'s type."""
    t = like.type
    return ir.VectorType(elem, t.count) if isinstance(t, ir.VectorType) else elem


def _const(ty, value):
    """A constant of the scalar or vector type ``ty`` (vectors: every lane ``value``)."""
    if isinstance(ty, ir.VectorType):
        return ir.Constant(ty, [ir.Constant(ty.element, value)] * ty.count)
    return ir.Constant(ty, value)


def _ir_magic_n(builder, v):
    """n as float32, for v = y + _EXP_MAGIC and n = round(y), |y| < 2**22: v's ulp is 1, so
    n is the difference of v's and the magic's bits. In integer arithmetic on purpose: under
    fastmath the float subtraction v - _EXP_MAGIC is folded back into y, unrounded."""
    it, ft = _shaped(v, _I32), _shaped(v, _F32)
    magic = _const(it, int(np.float32(_EXP_MAGIC).view(np.int32)))
    return builder.sitofp(builder.sub(builder.bitcast(v, it), magic), ft)


def _ir_magic_pow2(builder, v):
    """2**n as float32 for the v of ``_magic_n`` and n in [-126, 127]: the magic is 127 mod
    2**22, so v's low bits hold n + 127, the biased exponent of 2**n (32-bit shift)."""
    it, ft = _shaped(v, _I32), _shaped(v, _F32)
    return builder.bitcast(builder.shl(builder.bitcast(v, it), _const(it, 23)), ft)


def _ir_minus_n_ln2(builder, x, n):
    """x - n ln2 as (x - n hi) - n lo, emitted without fastmath's reassociation (only
    contraction into FMAs): with it, LLVM folds the two products into n (hi + lo), which
    undoes the two-part ln2 (4.7 ulp at most instead of 2.0, mean 1.23 instead of 0.66).
    The explicit ``contract`` flag is what keeps them out: Numba's fastmath pass adds its
    flags only to float instructions that have none."""
    fl = ("contract",)
    ft = _shaped(x, _F32)
    t = builder.fsub(x, builder.fmul(n, _const(ft, float(_EXP_LN2_HI)), flags=fl), flags=fl)
    return builder.fsub(t, builder.fmul(n, _const(ft, float(_EXP_LN2_LO)), flags=fl),
                        flags=fl)


def _ir_intrinsic(ty, emit):
    """An intrinsic of one or two arguments of Numba type ``ty``, returning ``ty``, whose IR
    is ``emit(builder, *args)``, named and documented as ``emit`` without its ``_ir``: the
    same emitters serve scalars in jitted code and vectors in ``tile_rows_fused``. (Numba
    types an intrinsic by its parameters: ``*args`` would be one star-argument tuple.)"""

    def typed(args):
        if any(a != ty for a in args):
            return None

        def codegen(context, builder, signature, llargs):
            return emit(builder, *llargs)

        return ty(*args), codegen

    if emit.__code__.co_argcount == 2:
        def defn(typingctx, x):
            return typed((x,))
    else:
        def defn(typingctx, x, y):
            return typed((x, y))
    defn.__name__ = defn.__qualname__ = emit.__name__.replace("_ir_", "_", 1)
    defn.__doc__ = emit.__doc__
    return intrinsic(defn)


_magic_n = _ir_intrinsic(types.float32, _ir_magic_n)
_magic_pow2 = _ir_intrinsic(types.float32, _ir_magic_pow2)
_minus_n_ln2 = _ir_intrinsic(types.float32, _ir_minus_n_ln2)


def _ir_exp32_nonpos(builder, x):
    """``exp32_nonpos(x)`` as IR on a float32 scalar or vector, the same operations in the
    same order (so the same bits once Numba's fastmath pass has flagged them as it flags the
    jitted version)."""
    ft = _shaped(x, _F32)
    lo = _const(ft, float(_EXP_LO))
    x = builder.select(builder.fcmp_ordered(">", x, lo), x, lo)
    v = builder.fadd(builder.fmul(x, _const(ft, float(_LOG2E))), _const(ft, float(_EXP_MAGIC)))
    n = _ir_magic_n(builder, v)
    s = _ir_magic_pow2(builder, v)
    t = _ir_minus_n_ln2(builder, x, n)
    p = builder.fadd(builder.fmul(_const(ft, float(_C5)), t), _const(ft, float(_C4)))
    for c in (_C3, _C2, _C1):
        p = builder.fadd(builder.fmul(p, t), _const(ft, float(c)))
    t = builder.fmul(t, s)
    return builder.fadd(builder.fmul(t, p), s)


# float64 exp for x <= 0, vectorisable (Numba's math.exp is a libm call per element, which
# left float64 rows ~10x slower than their read time and no faster than torch eager): the
# same scheme as the float32 one, in float64. n = round(x log2(e)) by a magic bias that also
# holds n's exponent bias 1023 (2**n from the sum's bits), r = x - n ln2 with fdlibm's
# two-part ln2 (n * hi exact), exp(r) = 1 + r q(r) with q the Taylor series of (e**r - 1)/r
# to degree 12 (truncation under 0.02 ulp for |r| <= ln2/2). Every operation carries only
# the ``contract`` flag, so that fastmath's reassociation cannot fold the magic bias or the
# two-part ln2, nor reorder the polynomial: the same bits wherever it is emitted.
_EXP64_LO = -708.3964185322641  # exp(_EXP64_LO) = DBL_MIN: 2**n stays a normal number
_EXP64_MAGIC = 1.5 * 2.0**52 + 1023.0  # ulp 1, and the exponent bias in its low bits
_EXP64_LOG2E = 1.4426950408889634
_EXP64_LN2_HI = float.fromhex("0x1.62E42FEE00000p-1")  # 32 trailing zero bits
_EXP64_LN2_LO = float.fromhex("0x1.A39EF35793C76p-33")
_EXP64_Q = tuple(1.0 / math.factorial(k) for k in range(13, 0, -1))  # 1/13! ... 1/1!


def _ir_exp64_nonpos(builder, x):
    """exp(x) for float64 x <= 0 (a scalar or a vector): see the constants above. Results
    below DBL_MIN come out as ~DBL_MIN; NaN as ~DBL_MIN (callers test finiteness)."""
    fl = ("contract",)
    ft, it = _shaped(x, _F64), _shaped(x, _I64)
    lo = _const(ft, _EXP64_LO)
    x = builder.select(builder.fcmp_ordered(">", x, lo), x, lo)
    magic = _const(ft, _EXP64_MAGIC)
    v = builder.fadd(builder.fmul(x, _const(ft, _EXP64_LOG2E), flags=fl), magic, flags=fl)
    n = builder.fsub(v, magic, flags=fl)
    s = builder.bitcast(builder.shl(builder.bitcast(v, it), _const(it, 52)), ft)
    r = builder.fsub(x, builder.fmul(n, _const(ft, _EXP64_LN2_HI), flags=fl), flags=fl)
    r = builder.fsub(r, builder.fmul(n, _const(ft, _EXP64_LN2_LO), flags=fl), flags=fl)
    q = _const(ft, _EXP64_Q[0])
    for c in _EXP64_Q[1:]:
        q = builder.fadd(builder.fmul(q, r, flags=fl), _const(ft, c), flags=fl)
    sr = builder.fmul(s, r, flags=fl)
    return builder.fadd(builder.fmul(sr, q, flags=fl), s, flags=fl)


exp64_nonpos = _ir_intrinsic(types.float64, _ir_exp64_nonpos)


def _ir_sub_strict(builder, a, b):
    """a - b as rounded, outside fastmath's reassociation (only the ``contract`` flag, which
    Numba's fastmath pass leaves alone): an error term such as (1 + u) - 1 - u is not
    folded to 0."""
    return builder.fsub(a, b, flags=("contract",))


_sub_strict = _ir_intrinsic(types.float64, _ir_sub_strict)
sub_strict = _sub_strict  # for the kernels: a difference that must not be reassociated


_SQRT2 = math.sqrt(2.0)
_DBL_MIN = 2.2250738585072014e-308
_TWO54 = 2.0**54
(_A21, _A19, _A17, _A15, _A13, _A11, _A9, _A7, _A5, _A3) = (
    1.0 / 21, 1.0 / 19, 1.0 / 17, 1.0 / 15, 1.0 / 13, 1.0 / 11, 1.0 / 9, 1.0 / 7, 1.0 / 5, 1.0 / 3)


@jit_inline
def _log_m64(m):
    """log(m) for float64 m in [sqrt(1/2), sqrt(2)]: 2 atanh(s), s = (m - 1)/(m + 1) with
    |s| <= 0.172, by the series to s**21 (truncation under 1e-18 relative)."""
    f = _sub_strict(m, 1.0)  # exact (Sterbenz)
    s = f / (m + 1.0)
    z = s * s
    q = _A21
    q = q * z + _A19
    q = q * z + _A17
    q = q * z + _A15
    q = q * z + _A13
    q = q * z + _A11
    q = q * z + _A9
    q = q * z + _A7
    q = q * z + _A5
    q = q * z + _A3
    return 2.0 * s + 2.0 * s * (z * q)


@jit_inline
def log1p64_unit(u):
    """log1p(u) for float64 u in [0, 1] (the sigmoid's log1p(exp(-|x|))), vectorisable:
    y = 1 + u in [1, 2] as 2**e m with m in [sqrt(1/2), sqrt(2)) (e is 0 or 1: no bit
    manipulation), ``_log_m64``, plus the rounding of 1 + u, (u - (y - 1))/y, which keeps
    small u's digits (y = 1 exactly below 2**-53: the result is u). ``log1p64`` gives the
    same for any u but takes the exponent from the bits: through it, float64 E_bce ran
    0.87x and 1000-class multi-hot rows 0.90x (``scripts/ab_cpu.py``)."""
    y = 1.0 + u
    big = y >= _SQRT2
    m = 0.5 * y if big else y
    e = 1.0 if big else 0.0
    c = _sub_strict(u, _sub_strict(y, 1.0)) / y
    return e * _EXP64_LN2_HI + (_log_m64(m) + (e * _EXP64_LN2_LO + c))


@jit_inline
def log64(x):
    """log(x) for float64 x >= 0 (0 -> -inf, subnormals exact), vectorisable; NaN/inf not
    handled (the kernels clip probabilities first). x = 2**e m, m in [sqrt(1/2), sqrt(2))
    from the bits, ``_log_m64``, + e ln2 (two-part)."""
    small = x < _DBL_MIN
    xs = x * _TWO54 if small else x
    bits = f64_as_i64(xs)
    e = ((bits >> np.int64(52)) & np.int64(0x7FF)) - np.int64(1023)
    m = i64_as_f64((bits & np.int64(0x000FFFFFFFFFFFFF)) | np.int64(0x3FF0000000000000))
    big = m >= _SQRT2
    m = 0.5 * m if big else m
    fe = np.float64(e + (np.int64(1) if big else np.int64(0))) - (54.0 if small else 0.0)
    r = fe * _EXP64_LN2_HI + (_log_m64(m) + fe * _EXP64_LN2_LO)
    return -math.inf if x == 0.0 else r


@jit_inline
def log1p64(u):
    """log1p(u) for float64 u in [-1, 1] (log(1 - p) of a probability), vectorisable: log64
    of y = 1 + u, plus the rounding of 1 + u, (u - (y - 1))/y (0 where 1 + u is exact)."""
    y = 1.0 + u
    c = _sub_strict(u, _sub_strict(y, 1.0)) / y
    return log64(y) + (c if y > 0.0 else 0.0)


@jit_inline
def _exp_clamped(x):
    """exp(x) for float32 x in [_EXP_LO, _EXP_HI]: see the constants above."""
    v = x * _LOG2E + _EXP_MAGIC
    n = _magic_n(v)
    s = _magic_pow2(v)
    t = _minus_n_ln2(x, n)
    p = _C5 * t + _C4
    p = p * t + _C3
    p = p * t + _C2
    p = p * t + _C1
    t = t * s
    return t * p + s


@jit_inline
def exp32(x):
    """exp(x) for finite float32 x; results below FLT_MIN are returned as ~FLT_MIN."""
    x = x if x > _EXP_LO else _EXP_LO
    x = x if x < _EXP_HI else _EXP_HI
    return _exp_clamped(x)


@jit_inline
def exp32_nonpos(x):
    """exp(x) for finite float32 x <= 0 (a softmax term exp(z - max)): exp32 without the
    upper clamp."""
    x = x if x > _EXP_LO else _EXP_LO
    return _exp_clamped(x)


@jit_inline
def log32(x):
    """log(x) for float32 x >= 0 (0 -> -inf, subnormals exact); NaN/inf not handled.

    x = 2**e * m with m in [sqrt(1/2), sqrt(2)); log(m) = log1p(m - 1) by the Cephes
    degree-9 polynomial; log(x) = log(m) + e ln2 (two-part ln2).
    """
    small = x < _FLT_MIN
    xs = x * _TWO23 if small else x
    bits = f32_as_i32(xs)
    e = ((bits >> np.int32(23)) & np.int32(0xFF)) - np.int32(126)
    m = i32_as_f32((bits & np.int32(0x007FFFFF)) | np.int32(0x3F000000))
    lo = m < _SQRTH
    e = e - np.int32(1) if lo else e
    m = (m + m - F1) if lo else (m - F1)
    fe = np.float32(e) - (np.float32(23.0) if small else F0)
    z = m * m
    y = _L0
    y = y * m + _L1
    y = y * m + _L2
    y = y * m + _L3
    y = y * m + _L4
    y = y * m + _L5
    y = y * m + _L6
    y = y * m + _L7
    y = y * m + _L8
    y = y * m * z
    y = y + fe * _LN2_LO
    y = y - FHALF * z
    r = m + y + fe * _LN2_HI
    return _NINF32 if x == F0 else r


@jit_inline
def log1p32(u):
    """log(1 + u) for float32 u > -1: a degree-9 series for |u| < 0.1 (truncation error
    < 1e-11; forming 1 + u there would cost up to 6e-7 relative), log(1 + u) elsewhere."""
    big = log32(F1 + u)
    small = u * (F1 - u * (FHALF - u * (_THIRD - u * (_QUARTER - u * (_FIFTH - u * (
        _SIXTH - u * (_SEVENTH - u * (_EIGHTH - u * _NINTH))))))))
    au = u if u > F0 else -u
    return small if au < _LOG1P_SMALL else big


_Q = [np.float32(c) for c in (
    0.9999999403953552, -0.4999925494194031, 0.3331601023674011, -0.24825648963451385,
    0.19055955111980438, -0.13583941757678986, 0.07754038274288177, -0.029210267588496208,
    0.005186003632843494)]
_Q0, _Q1, _Q2, _Q3, _Q4, _Q5, _Q6, _Q7, _Q8 = _Q


@jit_inline
def log1p_unit32(u):
    """log(1 + u) for float32 u in [0, 1] as u * q(u), q a degree-8 least-squares fit of
    log1p(u)/u on [0, 1] (scripts/fit_log1p.py): 1.9e-7 max relative error, small u included,
    and no log: about half the cost of log32(1 + u) plus a series (the sigmoid's inner term
    log1p(exp(-|z|)) has u in (0, 1])."""
    q = _Q8
    q = q * u + _Q7
    q = q * u + _Q6
    q = q * u + _Q5
    q = q * u + _Q4
    q = q * u + _Q3
    q = q * u + _Q2
    q = q * u + _Q1
    q = q * u + _Q0
    return u * q


@jit_inline
def log_sum32(neq, rest):
    """log(neq + rest) where neq >= 1 counts the row's maximal terms (each exp(0) = 1) and
    rest is the sum of the others: log1p(rest) when the max is unique keeps a confident row's
    loss accurate (log(1 + 1e-4) in float32 loses the 1e-4's low digits)."""
    # one log1p for both cases (a unique max: log1p(rest); ties: log1p(neq - 1 + rest), whose
    # argument is >= 1 so nothing is lost); a single call keeps the loop around it small enough
    # for LLVM to inline and vectorise
    return log1p32(rest + (neq - F1))


# --------------------------------------------------------------------------- type-generic


def fexp(x):  # pragma: no cover - replaced by the overload inside jitted code
    raise NotImplementedError


def flog(x):  # pragma: no cover
    raise NotImplementedError


def flog1p(x):  # pragma: no cover
    raise NotImplementedError


def cast_like(v, like):  # pragma: no cover
    raise NotImplementedError


def flogsum(neq, rest):  # pragma: no cover
    raise NotImplementedError


def flog1p_unit(u):  # pragma: no cover
    raise NotImplementedError


def widen(a, i):  # pragma: no cover
    raise NotImplementedError


def rowmax(a):  # pragma: no cover
    raise NotImplementedError


def nonfinite(x):  # pragma: no cover
    raise NotImplementedError


def rowmax_finite(a):  # pragma: no cover
    raise NotImplementedError


def fexp_nonpos(x):  # pragma: no cover
    raise NotImplementedError


def finite_init(one):  # pragma: no cover
    raise NotImplementedError


def max_init(one):  # pragma: no cover
    raise NotImplementedError


def max_acc(acc, x):  # pragma: no cover
    raise NotImplementedError


def max_value(acc):  # pragma: no cover
    raise NotImplementedError


def finite_acc(acc, x):  # pragma: no cover
    raise NotImplementedError


def finite_ok(acc):  # pragma: no cover
    raise NotImplementedError


@overload(fexp)
def _ov_fexp(x):
    if x == types.float32:
        return lambda x: exp32(x)
    if x == types.float64:
        return lambda x: math.exp(x)


@overload(fexp_nonpos)
def _ov_fexp_nonpos(x):
    if x == types.float32:
        return lambda x: exp32_nonpos(x)
    if x == types.float64:
        return lambda x: exp64_nonpos(x)


@overload(flog)
def _ov_flog(x):
    if x == types.float32:
        return lambda x: log32(x)
    if x == types.float64:
        return lambda x: log64(x)


@overload(flog1p)
def _ov_flog1p(x):
    if x == types.float32:
        return lambda x: log1p32(x)
    if x == types.float64:
        return lambda x: log1p64(x)


@overload(flog1p_unit)
def _ov_flog1p_unit(u):
    if u == types.float32:
        return lambda u: log1p_unit32(u)
    if u == types.float64:
        return lambda u: log1p64_unit(u)


@overload(flogsum)
def _ov_flogsum(neq, rest):
    if rest == types.float32:
        return lambda neq, rest: log_sum32(neq, rest)
    if rest == types.float64:
        return lambda neq, rest: math.log1p(rest + (neq - 1.0))


@overload(cast_like)
def _ov_cast_like(v, like):
    if like == types.float32:
        return lambda v, like: np.float32(v)
    if like == types.float64:
        return lambda v, like: np.float64(v)


@jit_inline
def half_bits_to_f32(h16):
    """IEEE half (raw bits, int16) -> float32, exact for normals, subnormals, inf and NaN."""
    h = np.int32(h16) & np.int32(0xFFFF)
    em = (h & np.int32(0x7FFF)) << np.int32(13)
    f = i32_as_f32(em) * _TWO112
    special = (h & np.int32(0x7C00)) == np.int32(0x7C00)
    fb = (em | np.int32(0x7F800000)) if special else f32_as_i32(f)
    return i32_as_f32(fb | ((h & np.int32(0x8000)) << np.int32(16)))


@overload(widen)
def _ov_widen(a, i):
    """Element ``a[i]`` in its compute dtype: int16 arrays hold float16 bits, uint16 arrays
    bfloat16 bits, uint8 arrays booleans (read as 0/1)."""
    dt = a.dtype
    if dt in (types.float32, types.float64):
        return lambda a, i: a[i]
    if dt == types.int16:
        return lambda a, i: half_bits_to_f32(a[i])
    if dt == types.uint16:
        return lambda a, i: i32_as_f32(np.int32(a[i]) << np.int32(16))
    if dt == types.uint8:
        return lambda a, i: np.float32(a[i])


# 32-bit integer helpers written in LLVM IR: Numba promotes int32 arithmetic to int64, which
# halves the vector width of an integer reduction (4 int64 lanes per AVX2 register, compared
# and blended, instead of 8 int32 lanes reduced by one vpmaxsd).


def _i32_ashr_mask(builder, b):
    """b ^ ((b >> 31) & 0x7FFFFFFF): float bits <-> signed keys (an involution)."""
    s = builder.ashr(b, ir.Constant(_I32, 31))
    return builder.xor(b, builder.and_(s, ir.Constant(_I32, 0x7FFFFFFF)))


@intrinsic
def f32_key(typingctx, x):
    """float32 -> int32 whose signed order is IEEE order (-NaN < -inf < ... < +inf < +NaN)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return _i32_ashr_mask(builder, builder.bitcast(args[0], _I32))

    return types.int32(x), codegen


@intrinsic
def key_f32(typingctx, k):
    """Inverse of :func:`f32_key`."""
    if k != types.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(_i32_ashr_mask(builder, args[0]), ir.FloatType())

    return types.float32(k), codegen


@intrinsic
def f32_abs_bits(typingctx, x):
    """The bits of |x| as int32: >= 0x7F800000 exactly when x is NaN or +-inf."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        b = builder.bitcast(args[0], _I32)
        return builder.and_(b, ir.Constant(_I32, 0x7FFFFFFF))

    return types.int32(x), codegen


@intrinsic
def imax32(typingctx, a, b):
    """max of two int32 in 32 bits (vectorises to vpmaxsd)."""
    if a != types.int32 or b != types.int32:
        return None

    def codegen(context, builder, signature, args):
        gt = builder.icmp_signed(">", args[0], args[1])
        return builder.select(gt, args[0], args[1])

    return types.int32(a, b), codegen


FUSED_LANES = 16  # rows per tile_rows_fused step


@intrinsic
def tile_rows_fused(typingctx, f, T, r0, yf, mx, ix, chk, sm, neq, dy, cc):
    """Rows ``r0 .. r0 + 15`` of a flat class-major tile ``f`` (``f[c * T + r]``, c < CC, a
    literal int), as 16-lane vectors: per row the max, first argmax (CC if none), number of
    non-finite values, sum of exp(d_c) over the d_c = z_c - max below 0, number of d_c equal
    to 0, and d at the row's class ``yf[r]``, stored into ``mx``, ``ix``, ``chk``, ``sm``,
    ``neq``, ``dy`` at ``r0 ..``. The caller keeps ``r0 + 16 <= T`` and every array
    C-contiguous, of f's dtype and in bounds.

    The same operations in the same order per row as the tile kernels' two passes over the
    tile (``numba_cpu._tile_max_argmax``, ``_tile_logits_sparse``; the float32 exp is
    ``exp32_nonpos``'s, ``_ir_exp32_nonpos``; float64 takes ``llvm.exp``, as ``math.exp``):
    the same bits, provided the caller is compiled with the kernels' fastmath flags (Numba's
    fastmath pass flags these operations as the caller's own). Emitted as vector IR, with
    the classes unrolled, because LLVM would not vectorise the class loops around the
    exponentials itself; with no loop left to vectorise it also compiles faster than the
    same row emitted as scalar IR in a loop it vectorised (a function of its own, C = 10:
    0.50-0.56 against 0.67-0.71 s)."""
    arrays = (f, yf, mx, ix, chk, sm, neq, dy)
    if not (isinstance(cc, types.IntegerLiteral)
            and all(isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"
                    and a.dtype == f.dtype for a in arrays)
            and f.dtype in (types.float32, types.float64)
            and isinstance(T, types.Integer) and isinstance(r0, types.Integer)):
        return None
    CC = cc.literal_value
    f32 = f.dtype == types.float32
    L = FUSED_LANES

    def codegen(context, builder, signature, args):
        et = _F32 if f32 else ir.DoubleType()
        vt = ir.VectorType(et, L)
        ivt = ir.VectorType(_I32 if f32 else _I64, L)
        T_ = context.cast(builder, args[1], signature.args[1], types.int64)
        r_ = context.cast(builder, args[2], signature.args[2], types.int64)
        align = 4 if f32 else 8

        def lanes(k, idx):  # a pointer to the 16 values of argument k (an array) at idx
            aty = signature.args[k]
            ary = context.make_array(aty)(context, builder, args[k])
            p = cgutils.get_item_pointer(context, builder, aty, ary, [idx], wraparound=False,
                                         boundscheck=False)
            return builder.bitcast(p, vt.as_pointer())

        exp = _ir_exp32_nonpos if f32 else _ir_exp64_nonpos
        inf_bits = _const(ivt, 0x7F800000 if f32 else 0x7FF0000000000000)
        abs_mask = _const(ivt, 0x7FFFFFFF if f32 else 0x7FFFFFFFFFFFFFFF)
        zero, one = _const(vt, 0.0), _const(vt, 1.0)
        vals = []
        m, x, k = _const(vt, float("-inf")), _const(vt, float(CC)), zero
        for c in range(CC):  # as _tile_max_argmax
            idx = builder.add(builder.mul(ir.Constant(_I64, c), T_), r_)
            v = builder.load(lanes(0, idx), align=align)
            vals.append(v)
            g = builder.fcmp_ordered(">", v, m)
            x = builder.select(g, _const(vt, float(c)), x)
            m = builder.select(g, v, m)
            bad = builder.icmp_signed(">=", builder.and_(builder.bitcast(v, ivt), abs_mask),
                                      inf_bits)
            k = builder.fadd(k, builder.select(bad, one, zero))
        yr = builder.load(lanes(3, r_), align=align)
        s, q, y = zero, zero, zero
        for c, v in enumerate(vals):  # as _tile_logits_sparse
            d = builder.fsub(v, m)
            e = exp(builder, d)
            s = builder.fadd(s, builder.select(builder.fcmp_ordered("<", d, zero), e, zero))
            q = builder.fadd(q, builder.select(builder.fcmp_ordered("==", d, zero), one, zero))
            hit = builder.fcmp_ordered("==", yr, _const(vt, float(c)))
            y = builder.fadd(y, builder.select(hit, d, zero))
        for k_arg, val in enumerate((m, x, k, s, q, y), start=4):
            builder.store(val, lanes(k_arg, r_), align=align)
        return context.get_dummy_value()

    return types.none(f, T, r0, yf, mx, ix, chk, sm, neq, dy, cc), codegen


@intrinsic
def imin_where32(typingctx, match, c, idx):
    """``min(idx, c) if match else idx`` in 32 bits (c: a loop index below 2**31): the
    first-index search as a vectorisable int32 min-reduction."""
    if not isinstance(c, types.Integer) or idx != types.int32:
        return None

    def codegen(context, builder, signature, args):
        m, cv, iv = args
        c32 = builder.trunc(cv, _I32) if c.bitwidth > 32 else cv
        # a pure smin of idx and (c or INT32_MAX): the shape LLVM vectorises as a reduction
        cand = builder.select(context.cast(builder, m, signature.args[0], types.boolean), c32,
                              ir.Constant(_I32, 0x7FFFFFFF))
        lt = builder.icmp_signed("<", cand, iv)
        return builder.select(lt, cand, iv)

    return types.int32(match, c, idx), codegen


@intrinsic
def _prefetch(typingctx, arr, idx):
    """Hint the CPU to fetch ``arr[idx]``'s cache line into L2 (``llvm.prefetch``, read,
    locality 2). A hint, not a load: it never faults and returns nothing; callers keep
    ``idx`` in bounds all the same."""
    if not isinstance(arr, types.Array) or not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        i = context.cast(builder, args[1], signature.args[1], types.intp)
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [i], wraparound=False,
                                       boundscheck=False)
        i8p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i8p, _I32, _I32, _I32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(_I32, 0),
                          ir.Constant(_I32, 2), ir.Constant(_I32, 1)])
        return context.get_dummy_value()

    return types.none(arr, idx), codegen


@intrinsic
def wide_vectors(typingctx):
    """Let LLVM vectorise the calling function's loops with 512-bit vectors where the CPU
    has AVX-512 (the function attribute ``"prefer-vector-width"="512"``; no effect on a CPU
    without it). LLVM's x86 default prefers 256-bit vectors even on AVX-512 CPUs, for the
    clock drop of early AVX-512 parts; NumPy's own float32 exp/log run 512-bit there too.
    Attributes belong to the function being compiled, and Numba vectorises each helper on
    its own before LLVM inlines it: call it in every function whose loops should widen (the
    row kernels and their helpers with hot loops). Skipped (256-bit) if llvmlite stops
    accepting the attribute."""

    def codegen(context, builder, signature, args):
        try:
            set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        except TypeError:  # pragma: no cover - a future llvmlite's attribute set
            pass
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def _transpose16(typingctx, a, base, buf, r0, cc):
    """``buf[c, r0 + r] = a[base + r * CC + c]`` for r < 16 and c < CC (a literal int): 16
    rows of CC contiguous float32 values transposed class-major with one wide load and CC
    shuffles (LLVM lowers them to permutes; on AVX-512, C = 10: 1.4 against 4.4 ns per row
    for LLVM's own vectorisation of the element loop, which left it scalar; the same on
    AVX2). The caller keeps ``a[base : base + 16 * CC]`` and ``buf[:CC, r0 : r0 + 16]`` in
    bounds; ``a`` and ``buf`` are C-contiguous float32."""
    if not (isinstance(cc, types.IntegerLiteral) and isinstance(a, types.Array)
            and a.dtype == types.float32 and a.layout == "C" and isinstance(buf, types.Array)
            and buf.dtype == types.float32 and buf.ndim == 2 and buf.layout == "C"
            and isinstance(base, types.Integer) and isinstance(r0, types.Integer)):
        return None
    CC = cc.literal_value

    def codegen(context, builder, signature, args):
        aty, bty = signature.args[0], signature.args[2]
        src_ary = context.make_array(aty)(context, builder, args[0])
        dst_ary = context.make_array(bty)(context, builder, args[2])
        base_ = context.cast(builder, args[1], signature.args[1], types.int64)
        r0_ = context.cast(builder, args[3], signature.args[3], types.int64)
        src = cgutils.get_item_pointer(context, builder, aty, src_ary, [base_],
                                       wraparound=False, boundscheck=False)
        wide = ir.VectorType(_F32, 16 * CC)
        v = builder.load(builder.bitcast(src, wide.as_pointer()), align=4)
        out = ir.VectorType(_F32, 16)
        for c in range(CC):
            mask = ir.Constant(ir.VectorType(_I32, 16), [r * CC + c for r in range(16)])
            col = builder.shuffle_vector(v, ir.Constant(wide, ir.Undefined), mask)
            dst = cgutils.get_item_pointer(context, builder, bty, dst_ary,
                                           [ir.Constant(_I64, c), r0_], wraparound=False,
                                           boundscheck=False)
            builder.store(col, builder.bitcast(dst, out.as_pointer()), align=4)
        return context.get_dummy_value()

    return types.none(a, base, buf, r0, cc), codegen


def transpose_rows(buf, a, base, cc, one):  # pragma: no cover
    raise NotImplementedError


@overload(transpose_rows, prefer_literal=True)
def _ov_transpose_rows(buf, a, base, cc, one):
    """``buf[c, r] = a[base + r * CC + c]`` for every column r of ``buf`` (a multiple of 16)
    and c < CC (a literal int), widened to the dtype of ``one``: the full-tile transpose of
    the small-C tile kernels. float32 in and out: ``_transpose16``; other dtypes: the loop."""
    if (isinstance(cc, types.IntegerLiteral) and a.dtype == types.float32 and a.layout == "C"
            and buf.dtype == types.float32 and buf.ndim == 2 and buf.layout == "C"
            and one == types.float32):
        def impl_shuffle(buf, a, base, cc, one):
            for r0 in range(0, buf.shape[1], 16):
                _transpose16(a, base + np.int64(r0 * cc), buf, np.int64(r0), cc)
        return impl_shuffle

    def impl(buf, a, base, cc, one):
        wide_vectors()
        for r in range(buf.shape[1]):
            for c in range(cc):
                buf[c, r] = cast_like(widen(a, base + np.int64(r * cc + c)), one)
    return impl


# rows of PREFETCH_MIN_BYTES to PREFETCH_MAX_BYTES are fetched one row ahead
# (``prefetch_span``): hardware prefetchers stop at 4 KB pages, so each such row starts with
# cold misses. Longer rows stream well on their own (8k x 32k float32: 0.95-1.10x with any
# lead of 4 to 128 KB, noise; after the max pass, spread over the exp pass 4 KB at a time:
# 0.97-1.07x); shorter ones share their pages with the next rows. The kernels issue the
# hints after the passes that read the row from memory, before the pass that reads it
# again from L1: a hint that misses holds a line-fill buffer until its line arrives, and
# the max pass's own misses (to L2, where the previous hints put the row) wait for one;
# during the exp pass nothing else needs them (Xeon, B_256kx1000: 1.15-1.18x against the
# hints at the row's start; D_dense 1.10-1.13x)
PREFETCH_MIN_BYTES = 1024
PREFETCH_MAX_BYTES = 16384
_PREFETCH_MAX_LINES = 256  # a bound on the hints of one call (16 KB)


@jit_inline
def prefetch_span(buf, lo, count):
    """Prefetch ``buf[lo : lo + count]`` (1-D, clipped to the buffer), one hint per 64-byte
    line and at most ``_PREFETCH_MAX_LINES`` of them: a row-loop kernel calls it for the next
    row once its max pass has read the current row, so that the next row's memory arrives
    while the current row's exponentials are computed (B_256kx1000, 4 KB rows: 1.23-1.53x
    with the hints at the row's start, 1.15-1.18x more after the max pass)."""
    step = max(1, 64 // buf.itemsize)
    hi = min(buf.size, lo + min(count, _PREFETCH_MAX_LINES * step))
    for q in range(max(lo, 0), hi, step):
        _prefetch(buf, q)


_KEY_LOWEST = np.int32(-2147483648)
_ABS_INF = np.int32(0x7F800000)


@overload(rowmax)
def _ov_rowmax(a):
    """Max of a row in its compute dtype. LLVM does not vectorise a float compare-and-select
    reduction, but does vectorise a signed-integer max: float32 rows are reduced on their
    order-preserving int32 keys, 8 lanes per AVX2 register (``max_acc``)."""
    one = 1.0 if a.dtype == types.float64 else F1  # selects the accumulators' dtype

    def impl(a):
        wide_vectors()
        acc = max_init(one)
        for c in range(a.shape[0]):
            acc = max_acc(acc, widen(a, c))
        return max_value(acc)
    return impl


@overload(rowmax_finite)
def _ov_rowmax_finite(a):
    """(max of the row, True if every element is finite) in one pass; float32: two int32
    reductions, the max of the keys and the max of the magnitude bits (NaN and inf have the
    largest)."""
    one = 1.0 if a.dtype == types.float64 else F1

    def impl(a):
        wide_vectors()
        acc = max_init(one)
        fin = finite_init(one)
        for c in range(a.shape[0]):
            v = widen(a, c)
            acc = max_acc(acc, v)
            fin = finite_acc(fin, v)
        return max_value(acc), finite_ok(fin)
    return impl


@overload(nonfinite)
def _ov_nonfinite(x):
    """1 (in x's dtype) if x is NaN or +-inf, else 0: an integer test on the exponent bits,
    which no fast-math flag can fold away (``x - x`` can be)."""
    if x == types.float32:
        def impl32(x):
            e = f32_as_i32(x) & np.int32(0x7F800000)
            return np.float32(1.0) if e == np.int32(0x7F800000) else np.float32(0.0)
        return impl32
    if x == types.float64:
        def impl64(x):
            e = f64_as_i64(x) & np.int64(0x7FF0000000000000)
            return 1.0 if e == np.int64(0x7FF0000000000000) else 0.0
        return impl64


# A finiteness accumulator for a loop that does other work: ``acc = finite_init(one)``, then
# ``acc = finite_acc(acc, x)`` per element, ``finite_ok(acc)`` after. float32: an int32 max of
# the magnitude bits (2 vector ops per element instead of 4 for ``chk += nonfinite(x)``).


@overload(finite_init)
def _ov_finite_init(one):
    if one == types.float32:
        return lambda one: np.int32(0)
    if one == types.float64:
        return lambda one: 0.0


@overload(finite_acc)
def _ov_finite_acc(acc, x):
    if x == types.float32:
        return lambda acc, x: imax32(f32_abs_bits(x), acc)
    if x == types.float64:
        return lambda acc, x: acc + nonfinite(x)


@overload(finite_ok)
def _ov_finite_ok(acc):
    if acc == types.int32:
        return lambda acc: acc < _ABS_INF
    if acc == types.float64:
        return lambda acc: acc == 0.0


# A combined check for the sigmoid row loop: predictions finite and targets in [0, 1] in one
# accumulator, ``acc = xt_init(one)``, ``acc = xt_acc(acc, x, t)``, ``xt_maybe_bad(acc)``.
# float32: one unsigned int32 max over ``|x|``'s bits halved and ``t``'s bits, which stays at
# or below the bits of 1.0 exactly when every t is in [+0, 1] and every |x| <= 2**127 (3 vector
# ops and one register per element, against 7 ops and two registers for the exact tests). A
# row that fails may still be fine (-0.0 targets, |x| above 2**127): the kernel then runs the
# exact tests. float64: the exact tests.

_ONE_BITS32 = np.int32(0x3F800000)


@intrinsic
def _umax(typingctx, a, b):
    """Unsigned max of two int32 (vectorises to vpmaxud) or two int64 bit patterns."""
    if a != b or a not in (types.int32, types.int64):
        return None

    def codegen(context, builder, signature, args):
        return builder.select(builder.icmp_unsigned(">", args[0], args[1]), args[0], args[1])

    return a(a, b), codegen


@intrinsic
def _f32_abs_bits_half(typingctx, x):
    """The bits of |x| shifted right by one, as int32 (<= the bits of 1.0 iff |x| <= 2**127)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        b = builder.and_(builder.bitcast(args[0], _I32), ir.Constant(_I32, 0x7FFFFFFF))
        return builder.lshr(b, ir.Constant(_I32, 1))

    return types.int32(x), codegen


def xt_init(one):  # pragma: no cover
    pass


def xt_acc(acc, x, t):  # pragma: no cover
    pass


def xt_maybe_bad(acc):  # pragma: no cover
    pass


@overload(xt_init)
def _ov_xt_init(one):
    if one == types.float32:
        return lambda one: np.int32(0)
    if one == types.float64:
        return lambda one: 0.0


@overload(xt_acc)
def _ov_xt_acc(acc, x, t):
    if x == types.float32 and t == types.float32:
        return lambda acc, x, t: _umax(acc, _umax(_f32_abs_bits_half(x), f32_as_i32(t)))
    if isinstance(x, types.Float) and t == types.float64:  # float64 compute (x may be narrower)
        return lambda acc, x, t: acc + nonfinite(x) + (0.0 if (t >= 0.0 and t <= 1.0) else 1.0)


@overload(xt_maybe_bad)
def _ov_xt_maybe_bad(acc):
    if acc == types.int32:
        return lambda acc: acc < np.int32(0) or acc > _ONE_BITS32
    if acc == types.float64:
        return lambda acc: acc != 0.0


# The dense softmax label pass in one accumulator: ``acc = tb_init(one)``, ``acc = tb_acc(acc,
# t)``, then ``tb_maybe_bad(acc)``; if False, every t is finite and >= +0, ``tb_max(acc)`` is
# their max and ``tb_le_one(acc)`` says whether every t <= 1. float32: the unsigned max of the
# bits (non-negative floats order as their bits; a sign bit, NaN or inf lands above the bits
# of inf). float64: always "maybe bad", so the caller runs its exact tests.

_INF_BITS32 = np.int32(0x7F800000)


def tb_init(one):  # pragma: no cover
    pass


def tb_acc(acc, t):  # pragma: no cover
    pass


def tb_maybe_bad(acc):  # pragma: no cover
    pass


def tb_max(acc):  # pragma: no cover
    pass


def tb_le_one(acc):  # pragma: no cover
    pass


def bin_init(one):  # pragma: no cover
    pass


def bin_acc(acc, t):  # pragma: no cover
    pass


def bin_all(acc):  # pragma: no cover
    pass


# Whether every target of a row is 0 or 1, for a loop that does other work: ``acc =
# bin_init(one)``, ``acc = bin_acc(acc, t)``, then ``bin_all(acc)``. An unsigned max over
# ``min(bits, bits ^ bits(1.0), bits ^ bits(-0.0))``, which is 0 exactly for +-0.0 and 1.0
# (as ``t == 0 or t == 1``). Integer operations, which no fast-math flag
# reassociates: the float ``sum(t - t*t)`` used before did get reassociated, LLVM computing
# ``(acc + t) - t*t``, so that a 1.0 after a t = 1 - 2**-24 (or 1e-30) absorbed that t's
# difference and a row like [1 - 2**-24, 0, 1] counted as 0/1 (found by
# tests/test_tile_kernels.py's label statistics against NumPy; the GPU counts exactly).


@intrinsic
def _bin_key(typingctx, x):
    """``min(bits, bits ^ bits(1.0), bits ^ bits(-0.0))`` (unsigned) of a float32 / float64,
    as an int: 0 iff x is +0.0, -0.0 or 1.0."""
    if x == types.float32:
        ity, one_bits, sign, rty = _I32, 0x3F800000, 1 << 31, types.int32
    elif x == types.float64:
        ity, one_bits, sign, rty = _I64, 0x3FF0000000000000, 1 << 63, types.int64
    else:
        return None

    def codegen(context, builder, signature, args):
        def umin(a, b):
            return builder.select(builder.icmp_unsigned("<", a, b), a, b)

        b = builder.bitcast(args[0], ity)
        y = builder.xor(b, ir.Constant(ity, one_bits))
        z = builder.xor(b, ir.Constant(ity, sign))
        return umin(umin(b, y), z)

    return rty(x), codegen


@overload(bin_init)
def _ov_bin_init(one):
    if one == types.float32:
        return lambda one: np.int32(0)
    if one == types.float64:
        return lambda one: np.int64(0)


@overload(bin_acc)
def _ov_bin_acc(acc, t):
    if t in (types.float32, types.float64):
        return lambda acc, t: _umax(acc, _bin_key(t))


@overload(bin_all)
def _ov_bin_all(acc):
    if acc in (types.int32, types.int64):
        return lambda acc: acc == 0


@overload(tb_init)
def _ov_tb_init(one):
    if one == types.float32:
        return lambda one: np.int32(0)
    if one == types.float64:
        return lambda one: 0.0


@overload(tb_acc)
def _ov_tb_acc(acc, t):
    if t == types.float32:
        return lambda acc, t: _umax(acc, f32_as_i32(t))
    if t == types.float64:
        return lambda acc, t: acc


@overload(tb_maybe_bad)
def _ov_tb_maybe_bad(acc):
    if acc == types.int32:
        return lambda acc: acc < np.int32(0) or acc >= _INF_BITS32
    if acc == types.float64:
        return lambda acc: True


@overload(tb_max)
def _ov_tb_max(acc):
    if acc == types.int32:
        return lambda acc: i32_as_f32(acc)
    if acc == types.float64:
        return lambda acc: acc


@overload(tb_le_one)
def _ov_tb_le_one(acc):
    if acc == types.int32:
        return lambda acc: acc <= _ONE_BITS32
    if acc == types.float64:
        return lambda acc: False


# A max accumulator for a loop that does other work (``rowmax`` fused into another pass):
# ``acc = max_init(one)``, ``acc = max_acc(acc, x)``, ``max_value(acc)``. float32: the int32
# order-preserving keys (NaN above +inf, as ``rowmax``); float64: compare-and-select.


@overload(max_init)
def _ov_max_init(one):
    if one == types.float32:
        return lambda one: _KEY_LOWEST
    if one == types.float64:
        return lambda one: -np.inf


@overload(max_acc)
def _ov_max_acc(acc, x):
    if x == types.float32:
        return lambda acc, x: imax32(f32_key(x), acc)
    if x == types.float64:
        return lambda acc, x: x if x > acc else acc


@overload(max_value)
def _ov_max_value(acc):
    if acc == types.int32:
        return lambda acc: key_f32(acc)
    if acc == types.float64:
        return lambda acc: acc


def _counter_intrinsic(name, op, slot, order, doc):
    """An intrinsic on ``ctr[slot]`` of an int64 array ``ctr`` shared by the threads of one
    kernel call: ``op`` "add" (atomic fetch-add of 1, returns the old value) or "load"
    (atomic load), with memory order ``order``."""

    def impl(typingctx, ctr):
        if not (isinstance(ctr, types.Array) and ctr.dtype == types.int64):
            return None

        def codegen(context, builder, signature, args):
            ary = context.make_array(signature.args[0])(context, builder, args[0])
            ptr = builder.gep(ary.data, [ir.Constant(_I64, slot)])
            if op == "load":
                return builder.load_atomic(ptr, order, 8)
            return builder.atomic_rmw("add", ptr, ir.Constant(_I64, 1), order)

        return types.int64(ctr), codegen

    impl.__name__ = impl.__qualname__ = name
    impl.__doc__ = doc
    return intrinsic(impl)


claim_block = _counter_intrinsic(
    "claim_block", "add", 0, "monotonic",
    "``atomic_fetch_add(ctr[0], 1)``: the index of the next unclaimed block of rows.")
mark_done = _counter_intrinsic(
    "mark_done", "add", 1, "release",
    "``atomic_fetch_add(ctr[1], 1)`` with release order: this kernel call has written its "
    "state slice (the launcher's caller waits for all of them on ``ctr[1]``).")
load_done = _counter_intrinsic(
    "load_done", "load", 1, "acquire", "``ctr[1]`` read with acquire order (see ``mark_done``).")
load_claims = _counter_intrinsic(
    "load_claims", "load", 0, "acquire",
    "``ctr[0]`` read with acquire order: how many blocks were claimed (>= 1 once any kernel "
    "call of the job runs).")
load_posted = _counter_intrinsic(
    "load_posted", "load", 2, "acquire",
    "``ctr[2]`` read with acquire order: the sequence number of the job last posted to the "
    "worker threads.")


@intrinsic
def load_at(typingctx, a, i):
    """``a[i]`` of an int64 array read with acquire order (no bounds check)."""
    if not (isinstance(a, types.Array) and a.dtype == types.int64
            and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        idx = context.cast(builder, args[1], signature.args[1], types.int64)
        return builder.load_atomic(builder.gep(ary.data, [idx]), "acquire", 8)

    return types.int64(a, i), codegen


@intrinsic
def store_at(typingctx, a, i, v):
    """``a[i] = v`` on an int64 array with release order (no bounds check)."""
    if not (isinstance(a, types.Array) and a.dtype == types.int64
            and isinstance(i, types.Integer) and isinstance(v, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        idx = context.cast(builder, args[1], signature.args[1], types.int64)
        val = context.cast(builder, args[2], signature.args[2], types.int64)
        builder.store_atomic(val, builder.gep(ary.data, [idx]), "release", 8)
        return context.get_dummy_value()

    return types.void(a, i, v), codegen


@intrinsic
def address_of(typingctx, a):
    """The address of an array's first element, as an int64 (to hand a buffer to a thread
    that runs GIL-free compiled code: see ``pointer_like``)."""
    if not isinstance(a, types.Array):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.ptrtoint(ary.data, _I64)

    return types.int64(a), codegen


@intrinsic
def pointer_like(typingctx, addr, like):
    """``addr`` (from ``address_of``) as a pointer to ``like``'s dtype, for
    ``numba.carray(pointer_like(addr, like), n)``: a 1-D view of a buffer that the thread
    which posted the address keeps alive until this one is done with it."""
    if not (isinstance(addr, types.Integer) and isinstance(like, types.Array)):
        return None
    ptr = types.CPointer(like.dtype)

    def codegen(context, builder, signature, args):
        addr64 = context.cast(builder, args[0], signature.args[0], types.int64)
        return builder.inttoptr(addr64, context.get_value_type(ptr))

    return ptr(addr, like), codegen
