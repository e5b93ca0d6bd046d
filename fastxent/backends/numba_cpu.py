"""CPU engine: Numba row kernels (top) and their launchers (bottom).

Per-row semantics (the CUDA engine matches them; ``tests/reference.py`` is the oracle)
-----------------------------------------------------------------------------------
Softmax, row ``i`` with logits ``z`` (C classes), ``d_c = z_c - m``, ``m = max_c z_c``,
``L = log sum_c exp(d_c)``, log-probabilities ``g_c = d_c - L`` (``from_logits=False``:
``g_c = log clip(p_c [/ sum p], eps, 1 - eps)``). Target weights ``a_c = (1-ls) t_c + ls/C``
(sparse: ``t = onehot(y)``), times ``cw_c`` in the PyTorch convention (``cw_inside``).
Row loss ``-sum_c a_c g_c`` where classes with ``a_c == 0`` contribute exactly 0. A row with a
NaN is NaN; with an infinite max it is NaN (max-shift formula). Correct iff the label is the
first maximal index; rank = #{z_c > z_y} + #{c < y : z_c == z_y} (Keras: first term only).

Sigmoid, element ``(i, c)``: ``sp(x) = max(x, 0) + log1p(exp(-|x|))``; loss
``pw_c t' sp(-z) + (1 - t') sp(z)`` (probabilities: ``-(pw_c t' log p + (1-t') log(1-p))``
with ``p`` clipped to ``[eps, 1-eps]`` and each log floored at ``log_floor``), times
``col_weight_c``; zero-coefficient terms contribute 0; row loss = mean over C.

Kernel structure: the launcher runs one GIL-free kernel call per thread (the caller's thread
and a small pool); the calls claim blocks of rows from a shared atomic counter until none is
left, so a late or slow thread costs at most one block. Every call owns its counts and its
exponent bins; the sums are exact integers, so the result depends neither on the thread count
nor on which thread took which block.

Fast path per row: 1. max + finiteness check in one integer pass (int32
order-preserving keys and magnitude bits, 8 lanes per AVX2 op), 2. one vectorised pass for
exp/sums/counts (and the label's rank for top-k), 3. per-row scalars. Rows with a NaN or inf
take a scalar IEEE float64 slow path. C <= SMALL_C uses tile kernels instead (sparse labels:
top-k and the smoothing of logits included; dense labels: neither), which lay 64 rows across
the SIMD lanes and add a clean tile's losses in one exact step. The plain cases (sparse
softmax and sigmoid of logits without weights, smoothing or per-row outputs) run lean
kernels that keep only the vectorised passes in the row loop and finish 64-row groups at once.

What the vectoriser needs (measured on this project's AVX2 machines): integer reductions in
32 bits (Numba widens int32 arithmetic to int64, so keys, maxima and index minima are LLVM IR
intrinsics in ``_numba_math``), selects instead of branches, runtime trip counts in the tile
loops, and nothing but the sums a row's loss needs in its exp pass.

Exact sums: each row's float64 contribution ``v = m * 2**(e-1075)`` (53-bit integer m) is
added as two integers (its low 26 and high 27 bits) into bins indexed by exponent; int64 bins
cannot overflow before ~2**36 rows. At its end each kernel call carries its bins into the
canonical 32-bit limbs of :mod:`fastxent._state` and clears them.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import threading
import time

import numba as nb
import numpy as np
from numba.core import types
from numba.extending import overload

from .. import _state as S
from .. import config
from . import Partial, SigmoidOptions, SoftmaxOptions
from ._jit import jit_inline, jit_rows
from ._numba_math import (
    FUSED_LANES,
    PREFETCH_MAX_BYTES,
    PREFETCH_MIN_BYTES,
    address_of,
    bin_acc,
    bin_all,
    bin_init,
    cast_like,
    claim_block,
    f32_abs_bits,
    f32_as_i32,
    f64_as_i64,
    fexp_nonpos,
    finite_acc,
    finite_init,
    finite_ok,
    flog,
    flog1p,
    flog1p_unit,
    flogsum,
    imax32,
    imin_where32,
    load_at,
    load_claims,
    load_done,
    load_posted,
    mark_done,
    max_acc,
    max_init,
    max_value,
    nonfinite,
    pointer_like,
    prefetch_span,
    rowmax,
    rowmax_finite,
    store_at,
    sub_strict,
    tb_acc,
    tb_init,
    tb_le_one,
    tb_max,
    tb_maybe_bad,
    tile_rows_fused,
    transpose_rows,
    wide_vectors,
    widen,
    xt_acc,
    xt_init,
    xt_maybe_bad,
)

NAME = "numba"
xp = np

NBINS = S.NLIMBS * S.LIMB_BITS  # 2176 exponent bins: bin e weighs 2**(e - 1075)
# bin 0 holds no value (a subnormal's mantissa goes to bin 1): its bit k flags bins
# 64k .. 64k + 63 of the quantity as added to since they were last drained, so that
# _drain_bins reads only those (NBINS / 64 = 34 bits)
_TOUCHED = 0
_MANT_LO_BITS = 26
_LO_MASK = (1 << _MANT_LO_BITS) - 1
_MANT_MASK = (1 << 52) - 1
_F32_EXACT_COUNT = 1 << 24  # float32 counts of a row's classes are exact below this C
_I32_MAX = (1 << 31) - 1
_ABS_INF32 = 0x7F800000  # |x| bits of a float32 at or above this: NaN or inf
_MIN_NORMAL32 = 0x00800000  # |x| bits of the smallest normal float32
# float32 exponent banks (_bin_add32): a finite float32's 8-bit exponent e weighs
# 2**(e - 150), the float64-scaled bin e + 925; 256 bins, 2 KB, instead of NBINS' 17 KB
_F32_BINS = 256
_F32_BIN0 = 925

ROWS, SEEN, CAT, ELEM, EXACT = S.ROWS, S.SEEN, S.CAT, S.ELEM, S.EXACT
ONEHOT, SUM1, BINARY, NANLOSS, POSINF, NEGINF, TOPK = (
    S.ONEHOT, S.SUM1, S.BINARY, S.NANLOSS, S.POSINF, S.NEGINF, S.TOPK)
X_LOSS, X_W, X_SW, X_CAT, X_ELEM, X_EXACT, X_TOPK = (
    S.X_LOSS, S.X_W, S.X_SW, S.X_CAT, S.X_ELEM, S.X_EXACT, S.X_TOPK)

# ============================================================================ exact sums


@jit_inline
def _bin_add(bins, q, v):
    """bins[q] += v exactly (v finite float64)."""
    if v == 0.0:
        return
    bits = f64_as_i64(v)
    e = (bits >> 52) & 0x7FF
    mant = bits & _MANT_MASK
    if e == 0:
        e = 1
    else:
        mant |= 1 << 52
    lo = mant & _LO_MASK
    hi = mant >> _MANT_LO_BITS
    if bits < 0:
        lo = -lo
        hi = -hi
    bins[q, e] += lo
    bins[q, e + _MANT_LO_BITS] += hi
    bins[q, _TOUCHED] |= np.int64(3) << (e >> 6)  # e + 26 is in the same 64 bins or the next


@jit_inline
def _bin_add32(b, v):
    """b += v exactly for a finite float32 value v (given as float64), ``b`` a bank of
    ``_F32_BINS`` bins indexed by the float32 exponent: its 24-bit mantissa lands in bin e,
    which weighs 2**(e - 150), i.e. bin e + _F32_BIN0 of the float64-scaled bins
    (``_flush_banks32``). One read-modify-write instead of two."""
    bits = f32_as_i32(np.float32(v))
    e = (bits >> 23) & 0xFF
    mant = np.int64(bits & 0x7FFFFF)
    if e == 0:
        e = 1
    else:
        mant |= 0x800000
    b[e] += -mant if bits < 0 else mant


@jit_inline
def _flush_banks32(bn, q, banks):
    """bins[q] += the float32-exponent banks ``banks`` (k, _F32_BINS)."""
    touched = np.int64(0)
    for e in range(_F32_BINS):
        acc = 0
        for k in range(banks.shape[0]):
            acc += banks[k, e]
        bn[q, e + _F32_BIN0] += acc
        touched |= np.int64(0 if acc == 0 else 1) << ((e + _F32_BIN0) >> 6)
    bn[q, _TOUCHED] |= touched


@jit_inline
def _add_loss(counts, bins, wl):
    """Accumulate one row's weighted loss: finite values exactly, others in counters."""
    if wl != wl:
        counts[NANLOSS] += 1
    elif wl == math.inf:
        counts[POSINF] += 1
    elif wl == -math.inf:
        counts[NEGINF] += 1
    else:
        _bin_add(bins, X_LOSS, wl)


@nb.njit(cache=True)
def _reduce_into(counts_t, limbs_t, first_bad_t, dirty, acc_counts, acc_exact, validate):
    """Add the threads' state slices into a stream's counts and raw limbs (unless
    ``validate`` and a row had a bad label); the first bad row or -1. Leaves the slices
    clear for the next call (``_scratch``)."""
    fb = -1
    for t in range(first_bad_t.shape[0]):
        f = first_bad_t[t]
        if f >= 0 and (fb < 0 or f < fb):
            fb = f
    if not (validate and fb >= 0):
        for t in range(counts_t.shape[0]):
            acc_counts += counts_t[t]
            acc_exact += limbs_t[t]
    counts_t[:] = 0
    limbs_t[:] = 0
    first_bad_t[:] = -1
    dirty[0] = 0
    return fb


@nb.njit(cache=True)
def _reduce_slots(counts_t, limbs_t, first_bad_t, dirty):
    """The threads' state slices as one: (counts, canonical limbs, first bad row or -1);
    the slices are left clear."""
    counts = np.zeros(counts_t.shape[1], dtype=np.int64)
    limbs = np.zeros((limbs_t.shape[1], limbs_t.shape[2]), dtype=np.int64)
    fb = _reduce_into(counts_t, limbs_t, first_bad_t, dirty, counts, limbs, False)
    for q in range(limbs.shape[0]):
        _carry_limbs(limbs[q])
    return counts, limbs, fb


@jit_inline
def _carry_limbs(o):
    """Raw limbs (NLIMBS,) to canonical form in place: limbs 0..NLIMBS-2 in [0, 2**32)."""
    for j in range(S.NLIMBS - 1):
        c = o[j] >> S.LIMB_BITS
        o[j] -= c << S.LIMB_BITS
        o[j + 1] += c


@nb.njit(nogil=True, cache=config.NUMBA_CACHE)
def _drain_bins(bins, out):
    """Carry one kernel call's exponent bins (nq, NBINS; int64, any sign) into canonical
    32-bit limbs ``out`` (nq, NLIMBS) and zero the bins again, so that the launcher's scratch
    bins need no clearing between calls. Only the quantities flagged in bin ``_TOUCHED`` are
    read, and only the span they used is carried and cleared: a 64k-row batch touches a
    few dozen bins of one quantity, and scanning all six quantities' 104 KB for them took
    3.5 us of every call, 11 us with the caches cold after a 64k x 10 batch."""
    nq = bins.shape[0]
    for q in range(nq):
        b = bins[q]
        o = out[q]
        for j in range(S.NLIMBS):
            o[j] = 0
        blocks = b[_TOUCHED]
        if blocks == 0:
            continue
        b[_TOUCHED] = 0
        # every nonzero bin lies in a flagged block of 64: the span is within the lowest and
        # highest (none if the adds cancelled)
        k = 0
        while (blocks >> k) & 1 == 0:
            k += 1
        lo = k * 64
        k = 63
        while (blocks >> k) & 1 == 0:
            k -= 1
        top = min(NBINS - 1, k * 64 + 63)
        while lo <= top and b[lo] == 0:
            lo += 1
        if lo > top:
            continue
        while b[top] == 0:
            top -= 1
        e = lo
        while e <= top and e < NBINS - _MANT_LO_BITS:  # carries only move up, to e + 26
            c = b[e] >> _MANT_LO_BITS
            if c != 0:
                b[e] -= c << _MANT_LO_BITS
                b[e + _MANT_LO_BITS] += c
                top = max(top, e + _MANT_LO_BITS)
            e += 1
        for j in range(lo // S.LIMB_BITS, top // S.LIMB_BITS + 1):
            acc = 0
            for k in range(S.LIMB_BITS):
                acc += b[j * S.LIMB_BITS + k] << k
            o[j] = acc
        for e in range(lo, top + 1):
            b[e] = 0
        _carry_limbs(o)


# ============================================================================ row helpers


@jit_inline
def _claim_rows(ctr, bounds):
    """The next unclaimed block of rows ``[r0, r1)`` of this call (see ``_parallel``), or an
    empty range once all are taken."""
    k = claim_block(ctr)
    if k + 1 >= bounds.shape[0]:
        return np.int64(0), np.int64(0)
    return bounds[k], bounds[k + 1]


@jit_inline
def _first_index_of(zr, val):
    """Smallest c with zr[c] == val (len if none), compared in val's dtype; a vectorisable
    int32 min-reduction (int64 indices ran 4 lanes wide, 3.5x slower; rows of 2**31 classes
    and more take the int64 loop)."""
    C = zr.shape[0]
    if C >= _I32_MAX:
        idx = C
        for c in range(C):
            idx = c if (cast_like(widen(zr, c), val) == val and c < idx) else idx
        return idx
    idx32 = np.int32(C)
    for c in range(C):
        idx32 = imin_where32(cast_like(widen(zr, c), val) == val, c, idx32)
    return np.int64(idx32)


@jit_inline
def _rank(zr, y, zy, any_tie):
    """#{c: z_c > z_y} (+ #{c < y: z_c == z_y} unless the Keras any-tie rule is asked)."""
    gt = 0
    for c in range(zr.shape[0]):
        gt += 1 if widen(zr, c) > zy else 0
    if any_tie:
        return gt
    eq = 0
    for c in range(y):
        eq += 1 if widen(zr, c) == zy else 0
    return gt + eq


ROW_BLOCK_BYTES = 4096  # the sparse kernel's blocks of a long row (``_row_exp_sum``)
# A sigmoid row's loss, and the softmax sums that smoothing, class weights and probabilities
# need, are summed in float32 over blocks of SUM_BLOCK elements and in float64 across the
# blocks: one float32 sum over a row of 300k repeated terms was 7.6e-5 (sigmoid) and 1.2e-4
# (smoothed probabilities) off (torch: 3e-7 to 8e-7), as each vector lane's partial sum
# rounded the same way thousands of times. A row of at most SUM_BLOCK elements keeps its
# float32 sums' bits.
SUM_BLOCK = 2048


@jit_inline(inline="always")
def _row_exp_sum(z, base, C, nxt, one, zy, ranked):
    """A row of logits ``z[base : base + C]`` longer than ``ROW_BLOCK_BYTES``, in blocks of
    that size: (its max m, whether it is all finite, the sum of exp(z_c - m) over the
    classes below m, the count of classes equal to m, and with ``ranked`` the counts of
    classes above and equal to ``zy``); the sums and counts 0 for a row that is not all
    finite.

    Each block is read from memory once by its max pass, then from L1 by its exp pass, and
    the sum follows the running max (online softmax: when a block raises it, the sum so far
    and the terms that were ties are scaled by exp(old - new)). The next block (the next
    row's first, at ``nxt``, after the last) is prefetched between the two passes, so that
    it arrives while this block's exponentials are computed; see PREFETCH_MIN_BYTES. Before,
    such a row was read from memory by the max pass, then again from L2 by the exp pass,
    with no fetch ahead during it. 4 KB blocks beat 2, 8 and 16 KB (Xeon, two threads,
    C = 2000 to 65536: 1.18-1.38x against two passes over the whole row).

    Inlined by Numba (``inline="always"``): compiled as a cached function of its own, its
    loop's sums came out in other bits in a process that loaded the kernel from the cache
    than in the one that compiled it (``tests/test_cache_determinism.py``)."""
    wide_vectors()
    zero = one - one
    blk = ROW_BLOCK_BYTES // z.itemsize
    m = zero
    s = zero
    neq = zero
    gt = zero
    eq = zero
    for b0 in range(0, C, blk):
        b1 = min(C, b0 + blk)
        zb = z[base + b0:base + b1]
        mb, fin = rowmax_finite(zb)
        if b1 < C:
            prefetch_span(z, base + b1, min(blk, C - b1))
        else:
            prefetch_span(z, nxt, blk)
        if not fin:
            mr, _ = rowmax_finite(z[base:base + C])
            return mr, False, zero, zero, zero, zero
        if b0 == 0:
            m = mb
        elif mb > m:
            s = (s + neq) * fexp_nonpos(m - mb)
            neq = zero
            m = mb
        if ranked:
            sb, qb, gb, eb = _exp_sum_rank(zb, m, zy, one)
            gt += gb
            eq += eb
        else:
            sb, qb = _exp_sum_below(zb, m, one)
        s += sb
        neq += qb
    return m, True, s, neq, gt, eq


@jit_inline(inline="always")
def _exp_sum_below(zr, m, one):
    """(sum of exp(z_c - m) over the classes below m, count of those equal to m)."""
    wide_vectors()
    zero = one - one
    s = zero
    neq = zero
    for c in range(zr.shape[0]):
        d = widen(zr, c) - m
        e = fexp_nonpos(d)  # unconditional: a select, not a branch
        s += e if d < zero else zero
        neq += one if d == zero else zero
    return s, neq


@jit_inline(inline="always")
def _exp_sum_rank(zr, m, zy, one):
    """``_exp_sum_below`` and, in the same pass, the counts of classes above and equal to
    ``zy`` (float32 counts: exact for rows under 2**24 classes)."""
    wide_vectors()
    zero = one - one
    s = zero
    neq = zero
    gt = zero
    eq = zero
    for c in range(zr.shape[0]):
        v = widen(zr, c)
        d = v - m
        e = fexp_nonpos(d)
        s += e if d < zero else zero
        neq += one if d == zero else zero
        gt += one if v > zy else zero
        eq += one if v == zy else zero
    return s, neq, gt, eq


@jit_inline(inline="always")
def _rank_from_counts(zr, y, zy, gt, eq, any_tie, one):
    """The label's rank #{z_c > z_y} + #{c < y: z_c == z_y} from the counts of
    ``_exp_sum_rank``: the scan for the second term only when another class ties with z_y
    (``any_tie``: ties rank by value alone)."""
    rank = np.int64(gt)
    if eq != one and not any_tie:
        for c in range(y):
            rank += 1 if widen(zr, c) == zy else 0
    return rank


@jit_inline
def _has_nan(zr):
    for c in range(zr.shape[0]):
        v = widen(zr, c)
        if v != v:
            return True
    return False


@jit_inline(inline="always")
def _slow_softmax_loss(zr, tr, yi, dense, ls, cw, cw_inside, from_logits, renorm, eps):
    """IEEE float64 row loss for rows with NaN/inf (see module docstring).

    Inlined by Numba (``inline="always"``): compiled as a cached function of its own, a row
    with a -inf logit got other last bits in a process that loaded a kernel from Numba's
    cache than in the one that compiled it (as ``_row_exp_sum`` did;
    ``tests/test_cache_determinism.py``)."""
    C = zr.shape[0]
    if _has_nan(zr):
        return math.nan
    m = -math.inf
    tot = 0.0
    for c in range(C):
        v = np.float64(widen(zr, c))
        m = v if v > m else m
        tot += v
    if from_logits:
        if not math.isfinite(m):
            return math.nan
        s = 0.0
        for c in range(C):
            s += math.exp(np.float64(widen(zr, c)) - m)
        lse = math.log(s)
    inv = 1.0 / tot if renorm else 1.0
    loss = 0.0
    for c in range(C):
        if dense:
            a = (1.0 - ls) * np.float64(widen(tr, c)) + ls / C
        else:
            a = (1.0 - ls) * (1.0 if c == yi else 0.0) + ls / C
        if cw_inside:
            a *= cw[c]
        if a != 0.0:
            v = np.float64(widen(zr, c))
            if from_logits:
                # (v - m) - lse as written, outside fast-math's reassociation: LLVM summed
                # the a_c (v_c - m - lse) as sum(a v) - (m + lse) sum(a), so that a row of
                # logits ~1e30 tied at the max, with a -inf, lost lse (loss 0, not log 3)
                g = sub_strict(sub_strict(v, m), lse)
            else:
                p = v * inv
                p = min(max(p, eps), 1.0 - eps) if p == p else p
                g = math.log(p)
            loss -= a * g
    return loss


@jit_inline
def _count_label_stats(cnt, nbin, npos, st, C, sum1_tol):
    """Task-detection statistics of one dense label row (ONEHOT / BINARY / SUM1)."""
    if nbin == C:
        cnt[BINARY] += 1
        if npos == 1.0:
            cnt[ONEHOT] += 1
    if abs(np.float64(st) - 1.0) <= sum1_tol:
        cnt[SUM1] += 1


# ============================================================================ softmax kernels


@jit_inline
def _accumulate_softmax_row(counts, bins, wl, w, swi, correct, hits_row, ks, weighted, has_sw):
    _add_loss(counts, bins, wl)
    if weighted:
        _bin_add(bins, X_W, w)
    counts[CAT] += 1 if correct else 0
    K = ks.shape[0]
    for j in range(K):
        counts[TOPK + j] += 1 if hits_row[j] else 0
    if has_sw:
        _bin_add(bins, X_SW, swi)
        if correct:
            _bin_add(bins, X_CAT, swi)
        for j in range(K):
            if hits_row[j]:
                _bin_add(bins, X_TOPK + j, swi)


@jit_inline
def _sparse_logit_sums(zr, cw, m, one):
    """The sums pass of ``_softmax_sparse`` from logits with smoothing or class weights:
    (sum of exp(d) below the max, count of d == 0, sum d, sum cw d), d = z - m; float32
    within SUM_BLOCKs, float64 across them. Called for rows longer than SUM_BLOCK only;
    shorter rows keep the kernel's own loop: with the blocked loop in its place (written
    in, or as this call), LLVM compiled the kernel's default pass otherwise and its loss
    bits changed (tests/test_sparse_plain.py pins them to _softmax_sparse_plain's)."""
    wide_vectors()
    zero = one - one
    neq = zero
    s64 = 0.0
    sd64 = 0.0
    scd64 = 0.0
    for b0 in range(0, zr.shape[0], SUM_BLOCK):
        zb = zr[b0:b0 + SUM_BLOCK]
        cwb = cw[b0:b0 + SUM_BLOCK]
        s = zero
        sd = zero
        scd = zero
        for c in range(zb.shape[0]):
            d = widen(zb, c) - m
            e = fexp_nonpos(d)  # unconditional: a select, not a branch
            s += e if d < zero else zero
            neq += one if d == zero else zero
            sd += d
            scd += cwb[c] * d
        s64 += np.float64(s)
        sd64 += np.float64(sd)
        scd64 += np.float64(scd)
    return cast_like(s64, one), neq, cast_like(sd64, one), cast_like(scd64, one)


@jit_inline
def _sparse_prob_sums(zr, cw, m, inv, epsc, hi_clip, one):
    """The pass of ``_softmax_sparse`` over probabilities: (count of p == m, sum log p, sum
    cw log p), p = clip(z inv); float32 within SUM_BLOCKs, float64 across them (see
    ``_sparse_logit_sums``)."""
    wide_vectors()
    zero = one - one
    neq = zero
    slp64 = 0.0
    sclp64 = 0.0
    for b0 in range(0, zr.shape[0], SUM_BLOCK):
        zb = zr[b0:b0 + SUM_BLOCK]
        cwb = cw[b0:b0 + SUM_BLOCK]
        slp = zero
        sclp = zero
        for c in range(zb.shape[0]):
            v = widen(zb, c)
            neq += one if v == m else zero
            p = v * inv
            p = p if p > epsc else epsc
            p = p if p < hi_clip else hi_clip
            lp = flog(p)
            slp += lp
            sclp += cwb[c] * lp
        slp64 += np.float64(slp)
        sclp64 += np.float64(sclp)
    return neq, cast_like(slp64, one), cast_like(sclp64, one)


@jit_rows
def _softmax_sparse(
    # data
    z, y, sw, cw64, cw,
    # shapes / strides
    n, C, rs,
    # constants
    one, ignore, has_ignore, has_sw, has_cw, cw_inside, ls, from_logits, renorm, eps, ks, any_tie,
    # outputs
    want_rows, row_loss, row_correct, row_hits, counts, bins, limbs, first_bad, slot, ctr, bounds,
):
    """Sparse softmax cross-entropy + accuracy + top-k over rows ``z[i*rs : i*rs + C]``.

    z : 1-D logits buffer (float32/float64, or int16 = f16 bits, uint16 = bf16 bits)
    y : (n,) int32/int64 labels; sw : (n,) float64 sample weights (empty if none)
    cw64 : (C,) float64 class weights for row weights; cw : (C,) compute-dtype class weights
        (ones if none) used inside rows (cw_inside)
    rs : row stride in elements; one : 1 in the compute dtype (selects float32/float64 math)
    counts : (T, NCOUNTS+K) int64; bins : (T, NX+K, NBINS) int64; first_bad : (T,) int64
    """
    wide_vectors()  # 512-bit loops where the CPU has AVX-512
    K = ks.shape[0]
    zero = one - one
    pf = PREFETCH_MIN_BYTES <= C * z.itemsize <= PREFETCH_MAX_BYTES  # fetch rows ahead
    blocks = C * z.itemsize > ROW_BLOCK_BYTES  # long rows: _row_exp_sum
    lsc = cast_like(ls, one)
    omls = one - lsc
    lsC = cast_like(ls / C, one)
    epsc = cast_like(eps, one)
    hi_clip = one - epsc
    weighted = has_sw or has_cw
    need_sums = ls != 0.0 or cw_inside
    sumcw = 0.0
    for c in range(C):
        sumcw += cw[c]
    dummy_t = np.zeros(1, dtype=np.float32)
    cnt = counts[slot]
    bn = bins[slot]
    hits = np.zeros(max(K, 1), dtype=np.bool_)
    fb = -1
    while True:  # claim blocks of rows until none is left (see _parallel)
        r0, r1 = _claim_rows(ctr, bounds)
        if r0 >= r1:
            break
        for i in range(r0, r1):
            yi = np.int64(y[i])
            cnt[SEEN] += 1
            if has_ignore and yi == ignore:
                if want_rows:
                    row_loss[i] = zero
                    row_correct[i] = False
                    for j in range(K):
                        row_hits[i, j] = False
                continue
            cnt[ROWS] += 1
            swi = sw[i] if has_sw else 1.0
            base = np.int64(i) * rs
            zr = z[base:base + C]
            for j in range(K):
                hits[j] = False
            correct = False
            if yi < 0 or yi >= C:
                if fb < 0:
                    fb = i
                loss = math.nan
                w = swi
            else:
                # 1. max and finiteness: one integer pass (int32 keys, 8 lanes per AVX2 op)
                chk = zero
                tot = zero
                s = zero
                neq = zero
                rank = np.int64(-1)  # >= 0 once the exp pass has counted the label's rank
                # 2. (from logits, no sums) the exp-sum of the non-maximal terms and the tie
                # count; with top-k, the label's rank counted in the same pass (z_y is
                # known), as #{z_c > z_y} + #{c < y: z_c == z_y}: the second term needs a
                # scan only when another class ties with z_y. (C >= 2**24: _rank counts it.)
                ranked = not need_sums and 0 < K and C < _F32_EXACT_COUNT
                zy = widen(zr, yi)
                gt = zero
                eq = zero
                if from_logits and blocks and not need_sums:
                    m, fin, s, neq, gt, eq = _row_exp_sum(z, base, C, base + rs, one, zy,
                                                          ranked)
                    chk = zero if fin else one
                    if fin and ranked:
                        rank = _rank_from_counts(zr, yi, zy, gt, eq, any_tie, one)
                elif from_logits:
                    m, fin = rowmax_finite(zr)
                    if pf:  # see PREFETCH_MIN_BYTES: after the pass that reads from memory
                        prefetch_span(z, base + rs, C)
                    chk = zero if fin else one
                    if fin and ranked:
                        s, neq, gt, eq = _exp_sum_rank(zr, m, zy, one)
                        rank = _rank_from_counts(zr, yi, zy, gt, eq, any_tie, one)
                    elif fin and not need_sums:
                        s, neq = _exp_sum_below(zr, m, one)
                else:
                    m = rowmax(zr)
                    if pf:
                        prefetch_span(z, base + rs, C)
                    for c in range(C):
                        v = widen(zr, c)
                        chk += nonfinite(v)
                        tot += v
                if renorm and not (tot > zero and nonfinite(tot) == zero):
                    chk = one  # 0/0 or inf/inf: the slow path keeps the NaN (Keras does too)
                nan_row = False
                if chk == zero:
                    # 2. one vectorised pass
                    if from_logits:
                        sd = zero
                        scd = zero
                        if need_sums:
                            s = zero
                            neq = zero
                            if C > SUM_BLOCK:  # long rows: float64 across blocks
                                s, neq, sd, scd = _sparse_logit_sums(zr, cw, m, one)
                            else:
                                for c in range(C):
                                    d = widen(zr, c) - m
                                    e = fexp_nonpos(d)  # unconditional: a select
                                    s += e if d < zero else zero
                                    neq += one if d == zero else zero
                                    sd += d
                                    scd += cw[c] * d
                        lse = flogsum(neq, s)
                        dy = zy - m
                        # 3. loss = -sum_c a_c (d_c - L)
                        if cw_inside:
                            loss = (np.float64(omls) * cw64[yi] * np.float64(lse - dy)
                                    + np.float64(lsC) * (np.float64(lse) * sumcw - np.float64(scd)))
                        else:
                            loss = np.float64(lse - omls * dy - lsC * sd)
                    else:
                        inv = one / tot if renorm else one
                        neq = zero
                        slp = zero
                        sclp = zero
                        if C > SUM_BLOCK:  # long rows: float64 across blocks
                            neq, slp, sclp = _sparse_prob_sums(zr, cw, m, inv, epsc, hi_clip,
                                                               one)
                        else:
                            for c in range(C):
                                v = widen(zr, c)
                                neq += one if v == m else zero
                                p = v * inv
                                p = p if p > epsc else epsc
                                p = p if p < hi_clip else hi_clip
                                lp = flog(p)
                                slp += lp
                                sclp += cw[c] * lp
                        py = zy * inv
                        py = py if py > epsc else epsc
                        py = py if py < hi_clip else hi_clip
                        lpy = flog(py)
                        if cw_inside:
                            loss = -(np.float64(omls) * cw64[yi] * np.float64(lpy)
                                     + np.float64(lsC) * np.float64(sclp))
                        else:
                            loss = -np.float64(omls * lpy + lsC * slp)
                else:
                    nan_row = _has_nan(zr)
                    loss = _slow_softmax_loss(zr, dummy_t, yi, False, ls, cw64,
                                              cw_inside, from_logits, renorm, eps)
                    neq = zero
                    for c in range(C):
                        neq += one if widen(zr, c) == m else zero
                if not nan_row:
                    if zy == m:
                        correct = neq == one or _first_index_of(zr, m) == yi
                    if K > 0:
                        r = rank if rank >= 0 else _rank(zr, yi, zy, any_tie)
                        for j in range(K):
                            hits[j] = r < ks[j]
            # row weight for the loss denominator; cw_inside puts cw into the loss itself
            valid = 0 <= yi < C
            w = swi * cw64[yi] if (has_cw and valid) else swi
            wl = swi * loss if cw_inside else w * loss
            _accumulate_softmax_row(cnt, bn, wl, w, swi, correct, hits, ks, weighted, has_sw)
            if want_rows:
                row_loss[i] = cast_like(wl, one)
                row_correct[i] = correct
                for j in range(K):
                    row_hits[i, j] = hits[j]
    _drain_bins(bn, limbs[slot])
    first_bad[slot] = fb
    mark_done(ctr)


@jit_rows
def _softmax_sparse_plain(
    # data
    z, y, cw64,
    # shapes / strides
    n, C, rs,
    # constants
    one, ignore, has_ignore, eps, ks, any_tie,
    # outputs
    counts, bins, limbs, first_bad, slot, ctr, bounds,
):
    """``_softmax_sparse`` for its common case: logits, no label smoothing, class or sample
    weights or per-row outputs (what ``fx.softmax_cross_entropy(z, y[, top_k=k])`` asks). Only
    the vectorised passes stay in the row loop; each row's log-sum and loss are left to the
    end of its group of ``TILE`` rows, where one vectorised loop computes them for the
    group, and the group's losses go into the bins in (up to) three exact adds
    (``_add_tile_loss``) instead of one per row. A row's loss is the float32
    ``flogsum(neq, s) - (z_y - m)``, the value ``_softmax_sparse`` computes for it.

    Rows with a bad label, NaN/inf logits, and groups whose losses the tile sum cannot take
    (an infinite loss) take ``_softmax_sparse``'s per-row steps. cw64: ones (the slow
    path's class weights). With top-k the exp pass also counts the label's rank, as in
    ``_softmax_sparse``."""
    wide_vectors()  # 512-bit loops where the CPU has AVX-512
    zero = one - one
    K = ks.shape[0]
    ranked = 0 < K and C < _F32_EXACT_COUNT  # the rank counted in the exp pass
    pf = PREFETCH_MIN_BYTES <= C * z.itemsize <= PREFETCH_MAX_BYTES  # fetch rows ahead
    blocks = C * z.itemsize > ROW_BLOCK_BYTES  # long rows: _row_exp_sum
    dummy_t = np.zeros(1, dtype=np.float32)
    # per row of a group: the exp-sum, the count of maximal terms, z_y - m and the loss;
    # rows not deferred keep (0, 1, 0): loss log1p(0) - 0 = 0, nothing added
    gs = np.empty(TILE, dtype=type(one))
    gq = np.empty(TILE, dtype=type(one))
    gd = np.empty(TILE, dtype=type(one))
    lv = np.empty(TILE, dtype=type(one))
    cnt = counts[slot]
    bn = bins[slot]
    fb = -1
    while True:  # claim blocks of rows until none is left (see _parallel)
        r0, r1 = _claim_rows(ctr, bounds)
        if r0 >= r1:
            break
        for g0 in range(r0, r1, TILE):
            nr = min(TILE, r1 - g0)
            for j in range(TILE):
                gs[j] = zero
                gq[j] = one
                gd[j] = zero
            rows = 0
            ncat = 0
            for j in range(nr):
                i = g0 + j
                yi = np.int64(y[i])
                if has_ignore and yi == ignore:
                    continue
                rows += 1
                if yi < 0 or yi >= C:
                    if fb < 0:
                        fb = i
                    _add_loss(cnt, bn, math.nan)
                    continue
                base = np.int64(i) * rs
                zr = z[base:base + C]
                zy = widen(zr, yi)
                gt = zero
                eq = zero
                if blocks:
                    m, fin, s, neq, gt, eq = _row_exp_sum(z, base, C, base + rs, one, zy,
                                                          ranked)
                else:
                    m, fin = rowmax_finite(zr)
                    if pf:  # see PREFETCH_MIN_BYTES: after the pass that reads from memory
                        prefetch_span(z, base + rs, C)
                    s = zero
                    neq = zero
                    if fin and ranked:
                        s, neq, gt, eq = _exp_sum_rank(zr, m, zy, one)
                    elif fin:
                        s, neq = _exp_sum_below(zr, m, one)
                if fin:
                    gs[j] = s
                    gq[j] = neq
                    gd[j] = zy - m
                    if zy == m and (neq == one or _first_index_of(zr, m) == yi):
                        ncat += 1
                    if K > 0:
                        r = (_rank_from_counts(zr, yi, zy, gt, eq, any_tie, one) if ranked
                             else _rank(zr, yi, zy, any_tie))
                        for k in range(K):
                            cnt[TOPK + k] += 1 if r < ks[k] else 0
                    continue
                # NaN/inf logits: _softmax_sparse's slow row
                loss = _slow_softmax_loss(zr, dummy_t, yi, False, 0.0, cw64, False, True,
                                          False, eps)
                _add_loss(cnt, bn, loss)
                if _has_nan(zr):
                    continue
                if zy == m:
                    neq = zero
                    for c in range(C):
                        neq += one if widen(zr, c) == m else zero
                    if neq == one or _first_index_of(zr, m) == yi:
                        ncat += 1
                if K > 0:
                    r = _rank(zr, yi, zy, any_tie)
                    for k in range(K):
                        cnt[TOPK + k] += 1 if r < ks[k] else 0
            cnt[SEEN] += nr
            cnt[ROWS] += rows
            cnt[CAT] += ncat
            for j in range(TILE):  # the group's log-sums, vectorised
                lv[j] = flogsum(gq[j], gs[j]) - gd[j]
            if not _add_tile_loss(bn, lv, nr):  # an infinite loss: row by row
                for j in range(nr):
                    _add_loss(cnt, bn, np.float64(lv[j]))
    _drain_bins(bn, limbs[slot])
    first_bad[slot] = fb
    mark_done(ctr)


TILE = 64  # rows per tile of the small-C kernel: 8 AVX2 vectors per class and step
assert TILE % FUSED_LANES == 0  # tile_logits_fused steps through a tile 16 rows at a time
SMALL_C = 32  # the tile kernel serves C <= SMALL_C
SPARSE_PLAIN = True  # _softmax_sparse_plain serves the plain sparse calls (tests turn it off)


@jit_inline
def _load_tile(buf, a, i0, nr, rs, one):
    """Transpose rows ``i0 .. i0+nr`` of the row buffer ``a`` (row stride ``rs``) into the
    class-major tile ``buf[c, r]``, widened to the compute dtype of ``one``; the tile's
    remaining rows are zeros. Class-outer order: strided reads, contiguous writes (8.0 vs
    12.4 ms for 2M rows x 10 on one core, row-outer). First it hints the next tile's rows
    into cache, so that they arrive while this one is computed. On the Intel Xeon
    (``scripts/ab_cpu.py``, old / new alternating, one and two threads, 1-4 runs): A_4Mx10
    0.95-1.21x, one-hot 1.06-1.08x, multi-hot 1.01-1.14x; the same bits. (The same hints
    4 rows ahead in the lean sigmoid pass gave E_bce 1.06-1.13x in one hour and 0.84-0.97x
    in the next, C = 1000 0.80x: not kept.)"""
    wide_vectors()
    zero = one - one
    base = np.int64(i0) * rs
    prefetch_span(a, base + TILE * rs, TILE * rs)
    C = buf.shape[0]
    if nr == buf.shape[1] and rs == C and C <= 16:
        # a full tile of contiguous rows, the class count a constant: float32 by a wide
        # load and shuffles per 16 rows (transpose_rows; C = 10: 1.4 against 4.4 ns per row
        # on the Intel Xeon), other dtypes row-outer, so that LLVM reads the tile as
        # interleaved vectors (C = 10: 4.1 vs 11.7 ns per row on Zen 1 against the loop
        # below); a few common C, the rest take the loop below
        if C == 4:
            transpose_rows(buf, a, base, 4, one)
            return
        if C == 5:
            transpose_rows(buf, a, base, 5, one)
            return
        if C == 8:
            transpose_rows(buf, a, base, 8, one)
            return
        if C == 10:
            transpose_rows(buf, a, base, 10, one)
            return
        if C == 16:
            transpose_rows(buf, a, base, 16, one)
            return
    for c in range(buf.shape[0]):
        bc = buf[c]
        for r in range(nr):
            bc[r] = cast_like(widen(a, base + np.int64(r) * rs + c), one)
        for r in range(nr, bc.shape[0]):
            bc[r] = zero


@jit_inline
def _exact_tile_sum(lv, nr):
    """(s0, s1, s2, exact): float64 sums of ``lv[:nr]`` (nr <= TILE) that add up to the
    values' sum exactly, and whether they do (else the tile takes the per-row path; the
    result does not change).

    Every value must be a finite float32 (subnormals excepted). A float64 sum of at most 64
    such values is exact when their nonzero magnitudes span at most 23 binades: they are
    then multiples of 2**(Emin - 23), every partial sum is below 2**(Emin + 30), 53 bits, so
    any summation order (the vectoriser's included) gives the same exact float64, and adding
    it to the bins equals adding the rows one by one. Wider tiles are split by magnitude
    into three windows of 24 binades below the largest (``s0`` the top one), each summed
    exactly on its own: a trained model's tile mixes confident rows (loss ~1e-7) with a
    misclassified one (loss ~10), 27 binades, and sent its 64 rows down the per-row path
    (C = 10, 95% of rows at loss ~1e-7: 13.8 against 5.6 ms for random logits). Spans over
    71 binades still take the per-row path.
    """
    wide_vectors()
    hi = np.int32(0)
    lo = np.int32(_I32_MAX)
    off = 0
    s = 0.0
    for r in range(nr):
        v = lv[r]
        v32 = np.float32(v)
        b = f32_abs_bits(v32)
        off += 0 if np.float64(v32) == np.float64(v) else 1  # NaN, or not a float32 value
        hi = imax32(b, hi)
        lo = imin_where32(b != np.int32(0), b, lo)
        s += np.float64(v)
    if off != 0 or hi >= _ABS_INF32:
        return s, 0.0, 0.0, False
    if lo == _I32_MAX:  # all zero
        return s, 0.0, 0.0, True
    span = (hi >> 23) - (lo >> 23)
    if lo < _MIN_NORMAL32 or span > 71:
        return s, 0.0, 0.0, False
    if span <= 23:
        return s, 0.0, 0.0, True
    t1 = ((hi >> 23) - 23) << 23  # |v| bits at or above: the top window
    t2 = t1 - (24 << 23)  # then the middle one; below it the bottom one
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    for r in range(nr):
        v = np.float64(lv[r])
        b = f32_abs_bits(np.float32(lv[r]))
        s0 += v if b >= t1 else 0.0
        s1 += v if (b < t1 and b >= t2) else 0.0
        s2 += v if b < t2 else 0.0
    return s0, s1, s2, True


@jit_inline
def _add_tile_loss(bn, lv, nr):
    """Add a clean tile's losses ``lv[:nr]`` into the loss bins and return True: in (up to)
    three exact float64 steps (``_exact_tile_sum``), or else, when every loss is finite,
    one exact add per row (float64 losses, which are not float32 values; subnormal losses;
    spans over 71 binades). False, nothing added, if a loss is NaN or infinite (the tile
    takes the per-row path). Either way the bins get the rows' exact sum.

    Before the per-row adds, every float64 tile took the per-row path, which recomputes
    each row (sigmoid, 4M x 1 float64: 88 ns per row against 3 for float32)."""
    s0, s1, s2, exact = _exact_tile_sum(lv, nr)
    if exact:
        _bin_add(bn, X_LOSS, s0)
        _bin_add(bn, X_LOSS, s1)
        _bin_add(bn, X_LOSS, s2)
        return True
    for r in range(nr):
        if nonfinite(lv[r]) != 0:
            return False
    for r in range(nr):
        _bin_add(bn, X_LOSS, np.float64(lv[r]))
    return True


@jit_inline
def _tile_max_argmax(buf, mx, ix, chk, tot, want_tot):
    """Per tile row r: max, first argmax (as a compute-dtype value; C if none), number of
    non-finite values and, if ``want_tot``, the sum. Loops run to a runtime bound (the
    buffers' length): a constant trip count (TILE) makes LLVM unroll fully and then fail to
    vectorise the loops that call exp/log."""
    wide_vectors()
    one = cast_like(1.0, mx[0])
    zero = one - one
    for r in range(mx.shape[0]):
        mx[r] = -np.inf
        ix[r] = buf.shape[0]
        chk[r] = zero
        tot[r] = zero
    for c in range(buf.shape[0]):
        bc = buf[c]
        cf = cast_like(c, one)
        for r in range(bc.shape[0]):
            v = bc[r]
            m = mx[r]
            x0 = ix[r]
            # the index as arithmetic (exact: small integers): a ternary whose other arm is
            # the stored value becomes a masked store (vmaskmovps, microcoded on AVX2 AMD).
            # Written out at each site: as a helper (or imin_where32 on the array) LLVM
            # folded it back into a select and the masked stores returned
            ix[r] = x0 + (one if v > m else zero) * (cf - x0)
            mx[r] = v if v > m else m
            chk[r] += nonfinite(v)
    if want_tot:
        for c in range(buf.shape[0]):
            bc = buf[c]
            for r in range(bc.shape[0]):
                tot[r] += bc[r]


@jit_inline
def _tile_logits_sparse(buf, yf, mx, sm, neq, dy, sd, lv, omls, lsC):
    """Logits: exp-sum of the non-maximal terms ``sm``, tie count ``neq``, d_y = z_y - max
    (selected here, not z_y in the max pass: fast-math could turn L - (z_y - m) into a
    cancelling (L - z_y) + m), with label smoothing (``lsC = ls / C != 0``) the sum of the
    d_c ``sd`` (accumulated from the same d as the exp, as in ``_softmax_sparse``), and the
    row loss ``lv = L - (1 - ls) d_y - (ls / C) sd`` with ``L = log(neq + sm)``."""
    wide_vectors()
    one = cast_like(1.0, mx[0])
    zero = one - one
    smooth = lsC != zero
    for r in range(sm.shape[0]):
        sm[r] = zero
        neq[r] = zero
        dy[r] = zero
        sd[r] = zero
    for c in range(buf.shape[0]):
        bc = buf[c]
        cf = cast_like(c, one)
        if smooth:
            for r in range(bc.shape[0]):
                d = bc[r] - mx[r]
                e = fexp_nonpos(d)  # unconditional: a select vectorises, a branch does not
                sm[r] += e if d < zero else zero
                neq[r] += one if d == zero else zero
                dy[r] += d if yf[r] == cf else zero  # one class matches (no masked store)
                sd[r] += d
        else:
            for r in range(bc.shape[0]):
                d = bc[r] - mx[r]
                e = fexp_nonpos(d)
                sm[r] += e if d < zero else zero
                neq[r] += one if d == zero else zero
                dy[r] += d if yf[r] == cf else zero  # one class matches (no masked store)
    if smooth:
        for r in range(sm.shape[0]):
            lv[r] = flogsum(neq[r], sm[r]) - omls * dy[r] - lsC * sd[r]
    else:
        _tile_row_loss(sm, neq, dy, lv)


@jit_inline
def _tile_row_loss(sm, neq, dy, lv):
    """The row loss without label smoothing, ``lv = log(neq + sm) - d_y``. A function of its
    own: inlined into the caller of ``tile_logits_fused``, the loop stayed scalar (+2.3 ns
    per row at C = 10)."""
    wide_vectors()
    for r in range(sm.shape[0]):
        lv[r] = flogsum(neq[r], sm[r]) - dy[r]


def tile_logits_fused(f, yf, mx, ix, chk, sm, neq, dy, cc):  # pragma: no cover
    raise NotImplementedError


@overload(tile_logits_fused, prefer_literal=True, inline="always")
def _ov_tile_logits_fused(f, yf, mx, ix, chk, sm, neq, dy, cc):
    """``_tile_max_argmax`` (without the sum) then ``_tile_logits_sparse`` (without label
    smoothing; the row loss is ``_tile_row_loss``) in one pass over the rows of the flat
    class-major tile ``f`` (cc x TILE), for a literal class count ``cc``: each row's max,
    argmax, finiteness, exp-sum, tie count and d_y stay in registers, 16 rows per step
    (``tile_rows_fused``, vector IR with the classes unrolled), where the two passes load and
    store their per-row accumulators once per class. The same operations in the same order
    per row as the two passes: the same bits (``tests/test_tile_kernels.py``). C = 10 on the
    Intel Xeon, a 64-row tile in L1: 5.1 against 7.1 ns per row, row loss included;
    A_4Mx10 1.16-1.22x.

    Written as loops, LLVM left the 10-class loop with its exponentials rolled (over its
    full-unroll budget) and the row loop scalar (56 ns per row). The kernel inlines it for
    C = 10 (Numba's ``inline="always"``); a first version compiled as a function of its own
    with eight array arguments did not vectorise (1.02x). Other class counts go through
    ``_tile_fused``."""
    if not isinstance(cc, types.IntegerLiteral):
        return None

    def impl(f, yf, mx, ix, chk, sm, neq, dy, cc):
        T = mx.shape[0]
        for r0 in range(0, T, FUSED_LANES):
            tile_rows_fused(f, T, r0, yf, mx, ix, chk, sm, neq, dy, cc)
    return impl


@jit_inline
def _tile_fused(f, C, yf, mx, ix, chk, sm, neq, dy):
    """``tile_logits_fused`` for C = 2, 3, 4, 5, 8, 10 or 16, as a function of its own; False
    (nothing done: the two passes run) for any other C. The call per tile costs: at C = 10,
    which the kernel inlines instead, A_4Mx10 ran 0.94-0.96x through it. But it keeps the
    other class counts out of the kernel's own code, whose compile time grows faster than
    its size: inlining all seven made the first cold call ~5 s longer than inlining C = 10
    alone; this function adds ~2 s (three pairs of fresh processes, alternating), once per
    dtype, with its own entry in Numba's cache. Against the two passes, A's bytes on two
    threads (``scripts/ab_cpu.py``): C = 3 1.36x, C = 5 1.41x, C = 16 1.16x."""
    if C == 2:
        tile_logits_fused(f, yf, mx, ix, chk, sm, neq, dy, 2)
    elif C == 3:
        tile_logits_fused(f, yf, mx, ix, chk, sm, neq, dy, 3)
    elif C == 4:
        tile_logits_fused(f, yf, mx, ix, chk, sm, neq, dy, 4)
    elif C == 5:
        tile_logits_fused(f, yf, mx, ix, chk, sm, neq, dy, 5)
    elif C == 8:
        tile_logits_fused(f, yf, mx, ix, chk, sm, neq, dy, 8)
    elif C == 10:
        tile_logits_fused(f, yf, mx, ix, chk, sm, neq, dy, 10)
    elif C == 16:
        tile_logits_fused(f, yf, mx, ix, chk, sm, neq, dy, 16)
    else:
        return False
    return True


@jit_inline
def _tile_rank(buf, yf, zy, rk, any_tie):
    """Per tile row: the label's rank #{c: z_c > z_y} + #{c < y: z_c == z_y} (Keras
    ``any_tie``: the first term only), counted element-wise across the rows; rows with a bad
    label get some value (they take the per-row path)."""
    wide_vectors()
    one = cast_like(1.0, zy[0])
    zero = one - one
    for r in range(zy.shape[0]):
        zy[r] = zero
        rk[r] = zero
    for c in range(buf.shape[0]):
        bc = buf[c]
        cf = cast_like(c, one)
        for r in range(bc.shape[0]):
            zy[r] += bc[r] if yf[r] == cf else zero  # (no masked store, as dy)
    if any_tie:
        for c in range(buf.shape[0]):
            bc = buf[c]
            for r in range(bc.shape[0]):
                rk[r] += one if bc[r] > zy[r] else zero
    else:
        for c in range(buf.shape[0]):
            bc = buf[c]
            cf = cast_like(c, one)
            for r in range(bc.shape[0]):
                v = bc[r]
                rk[r] += one if (v > zy[r] or (v == zy[r] and cf < yf[r])) else zero


@jit_inline
def _clip_log(p, epsc):
    p = p if p > epsc else epsc
    hi = cast_like(1.0, epsc) - epsc
    p = p if p < hi else hi
    return flog(p)


@jit_inline
def _tile_probs_sparse(buf, yf, py, tot, chk, lv, renorm, epsc):
    """Probabilities: p_y and the row loss ``lv = -log clip(p_y [/ sum p], eps, 1 - eps)``;
    a row whose sum is 0 or not finite is marked for the slow path (renormalising it gives
    NaN)."""
    wide_vectors()
    one = cast_like(1.0, epsc)
    zero = one - one
    for r in range(py.shape[0]):
        py[r] = zero
    for c in range(buf.shape[0]):
        bc = buf[c]
        cf = cast_like(c, one)
        for r in range(bc.shape[0]):
            py[r] += bc[r] if yf[r] == cf else zero  # (no masked store, as dy)
    if renorm:
        for r in range(py.shape[0]):
            chk[r] += zero if (tot[r] > zero and nonfinite(tot[r]) == zero) else one
            lv[r] = -_clip_log(py[r] * (one / tot[r]), epsc)
    else:
        for r in range(py.shape[0]):
            lv[r] = -_clip_log(py[r], epsc)


@jit_rows
def _softmax_sparse_small(
    # data
    z, y, sw, cw64,
    # shapes / strides
    n, C, rs,
    # constants
    one, ignore, has_ignore, has_sw, has_cw, ls, from_logits, renorm, eps, ks, any_tie,
    # outputs
    want_rows, row_loss, row_correct, row_hits, counts, bins, limbs, first_bad, slot, ctr, bounds,
):
    """Sparse softmax for small C (<= SMALL_C): logits or probabilities, top-k, and label
    smoothing ``ls`` with logits (no class weights inside the rows).

    With C = 10 a row does not fill a vector and per-row loop overhead dominates, so rows are
    laid across the SIMD lanes instead: each tile of TILE rows is transposed into a class-major
    buffer ``T[c, r]``; then 1. max, first argmax and finiteness, 2. exp-sum of the
    non-maximal terms, tie count and z_y - max (probabilities: p_y), 3. log and row loss
    all run element-wise across the rows of the tile (no horizontal reductions); with top-k,
    the label's rank #{z_c > z_y} + #{c < y: z_c == z_y} too. Logits without smoothing at
    C = 2, 3, 4, 5, 8, 10 and 16 run 1. and 2. as one pass with the row's values in
    registers (``tile_logits_fused``; C = 10 inlined, the others through ``_tile_fused``).
    4. A clean tile (all labels valid and not ignored, all inputs finite, no
    weights) adds its loss sum exactly in up to three steps (``_exact_tile_sum``) and its
    counts; any other tile takes the
    generic per-row code (NaN/inf rows: the IEEE slow path). Same semantics as
    ``_softmax_sparse``; a row's loss is the same float32 value on both paths, so the result
    does not depend on the tiling.
    """
    wide_vectors()  # 512-bit loops where the CPU has AVX-512
    zero = one - one
    buf = np.empty((C, TILE), dtype=type(one))
    bflat = buf.reshape(-1)
    mx = np.empty(TILE, dtype=type(one))
    ix = np.empty(TILE, dtype=type(one))
    dy = np.empty(TILE, dtype=type(one))
    yf = np.zeros(TILE, dtype=type(one))
    sm = np.empty(TILE, dtype=type(one))
    neq = np.empty(TILE, dtype=type(one))
    chk = np.empty(TILE, dtype=type(one))
    lv = np.empty(TILE, dtype=type(one))
    ok = np.empty(TILE, dtype=type(one))
    tot = np.empty(TILE, dtype=type(one))
    zy = np.zeros(TILE, dtype=type(one))
    rk = np.zeros(TILE, dtype=type(one))
    sd = np.zeros(TILE, dtype=type(one))
    igm = np.zeros(TILE, dtype=type(one))  # 1 where the row's label is ignore_index
    Cf = cast_like(np.int32(C), one)
    omls = one - cast_like(ls, one)
    lsC = cast_like(ls / C, one)
    epsc = cast_like(eps, one)
    dummy_t = np.zeros(1, dtype=np.float32)
    weighted = has_sw or has_cw
    K = ks.shape[0]
    ksf = np.empty(K, dtype=type(one))  # k as compute-dtype values (exact: C <= SMALL_C)
    for j in range(K):
        ksf[j] = cast_like(np.int32(ks[j]), one)
    cnt = counts[slot]
    bn = bins[slot]
    fb = -1
    n_rows = 0
    n_cat = 0
    banks = np.empty((2, _F32_BINS), dtype=np.int64)  # zeroed at first use (banked)
    banked = False
    while True:  # claim blocks of rows until none is left (see _parallel)
        r0, r1 = _claim_rows(ctr, bounds)
        if r0 >= r1:
            break
        cnt[SEEN] += r1 - r0
        for i0 in range(r0, r1, TILE):
            nr = min(TILE, r1 - i0)
            prefetch_span(y, i0 + TILE, TILE)  # the next tile's labels (its rows: _load_tile)
            _load_tile(buf, z, i0, nr, rs, one)  # 0. buf[c, r] = z[i0 + r, c]
            # labels as compute-dtype values (exact: C <= SMALL_C); a bad one sends the tile
            # down the per-row path, ignored rows are masked out of a clean tile
            nbad = 0
            nign = 0
            for r in range(nr):
                yi = np.int64(y[i0 + r])
                ign = has_ignore and yi == ignore
                nign += 1 if ign else 0
                nbad += 1 if (not ign and (yi < 0 or yi >= C)) else 0
                yf[r] = cast_like(np.int32(yi), one)
                igm[r] = one if ign else zero
            # 1. row maxima, first argmax and finiteness; 2. exp-sums (probabilities: p_y);
            # 3. row loss; all element-wise across the tile's rows (1. and 2. fused for some C)
            fused = False
            if from_logits and lsC == zero:
                if C == 10:  # inlined: 5% faster than through _tile_fused
                    tile_logits_fused(bflat, yf, mx, ix, chk, sm, neq, dy, 10)
                    fused = True
                else:
                    fused = _tile_fused(bflat, C, yf, mx, ix, chk, sm, neq, dy)
            if fused:
                _tile_row_loss(sm, neq, dy, lv)
            elif from_logits:
                _tile_max_argmax(buf, mx, ix, chk, tot, renorm)
                _tile_logits_sparse(buf, yf, mx, sm, neq, dy, sd, lv, omls, lsC)
            else:
                _tile_max_argmax(buf, mx, ix, chk, tot, renorm)
                _tile_probs_sparse(buf, yf, dy, tot, chk, lv, renorm, epsc)
            for r in range(ok.shape[0]):
                ok[r] = one if ix[r] == yf[r] else zero
            if K > 0:
                _tile_rank(buf, yf, zy, rk, any_tie)
            # 4. a clean tile: one exact add and the counts
            if nbad == 0 and not weighted:
                nch = zero
                for r in range(nr):
                    nch += zero if igm[r] != zero else chk[r]  # ignored rows are not read
                if nch == zero:
                    if nign > 0:  # ignored rows: loss 0, not correct, no top-k hit
                        for r in range(nr):
                            lv[r] = zero if igm[r] != zero else lv[r]
                            ok[r] = zero if igm[r] != zero else ok[r]
                            rk[r] = Cf if igm[r] != zero else rk[r]
                    ncat = zero
                    for r in range(nr):
                        ncat += ok[r]
                    if _add_tile_loss(bn, lv, nr):
                        n_rows += nr - nign
                        n_cat += np.int64(ncat)
                        for j in range(K):
                            nh = zero
                            for r in range(nr):
                                nh += one if rk[r] < ksf[j] else zero
                            cnt[TOPK + j] += np.int64(nh)
                        if want_rows:
                            for r in range(nr):
                                row_loss[i0 + r] = lv[r]
                                row_correct[i0 + r] = ok[r] != zero
                                for j in range(K):
                                    row_hits[i0 + r, j] = rk[r] < ksf[j]
                        continue
            # per-row path
            for r in range(nr):
                i = i0 + r
                yi = np.int64(y[i])
                if has_ignore and yi == ignore:
                    if want_rows:
                        row_loss[i] = zero
                        row_correct[i] = False
                        for j in range(K):
                            row_hits[i, j] = False
                    continue
                n_rows += 1
                swi = sw[i] if has_sw else 1.0
                correct = False
                rank = C  # no top-k hit (bad label, NaN row)
                if yi < 0 or yi >= C:
                    if fb < 0:
                        fb = i
                    loss = math.nan
                elif chk[r] == zero:
                    loss = np.float64(lv[r])
                    correct = ok[r] != zero
                    rank = np.int64(rk[r]) if K > 0 else C
                else:
                    zr = z[np.int64(i) * rs:np.int64(i) * rs + C]
                    loss = _slow_softmax_loss(zr, dummy_t, yi, False, ls, cw64, False,
                                              from_logits, renorm, eps)
                    if not _has_nan(zr):
                        if buf[yi, r] == mx[r]:
                            correct = _first_index_of(zr, mx[r]) == yi
                        if K > 0:
                            rank = _rank(zr, yi, buf[yi, r], any_tie)
                n_cat += 1 if correct else 0
                for j in range(K):
                    hit = rank < ks[j]
                    cnt[TOPK + j] += 1 if hit else 0
                    if has_sw and hit:
                        _bin_add(bn, X_TOPK + j, swi)
                    if want_rows:
                        row_hits[i, j] = hit
                w = swi * cw64[yi] if (has_cw and 0 <= yi < C) else swi
                wl = w * loss
                if not weighted and nonfinite(wl) == 0.0 and np.float64(np.float32(wl)) == wl:
                    # the common case: a finite float32 loss, one add into alternating banks
                    if not banked:
                        banks[:] = 0
                        banked = True
                    _bin_add32(banks[i & 1], wl)
                else:
                    _add_loss(cnt, bn, wl)
                    if weighted:
                        _bin_add(bn, X_W, w)
                    if has_sw:
                        _bin_add(bn, X_SW, swi)
                        if correct:
                            _bin_add(bn, X_CAT, swi)
                if want_rows:
                    row_loss[i] = cast_like(wl, one)
                    row_correct[i] = correct
    # counters and banks live in registers / L1 during the loop; flush once per call
    cnt[ROWS] += n_rows
    cnt[CAT] += n_cat
    if banked:
        _flush_banks32(bn, X_LOSS, banks)
    _drain_bins(bn, limbs[slot])
    first_bad[slot] = fb
    mark_done(ctr)


@jit_inline
def _dense_label_checks(tr, one):
    """Exact label pass of a dense softmax row: (max, negatives, non-finite values,
    positives, values that are 0 or 1)."""
    zero = one - one
    tacc = max_init(one)
    tneg = zero
    tchk = zero
    npos = zero
    nbin = zero
    for c in range(tr.shape[0]):
        tv = cast_like(widen(tr, c), one)
        tacc = max_acc(tacc, tv)
        tneg += one if tv < zero else zero
        tchk += nonfinite(tv)
        npos += one if tv > zero else zero
        nbin += one if (tv == zero or tv == one) else zero
    return max_value(tacc), tneg, tchk, npos, nbin


@jit_inline
def _dense_row_weight(tr, cw64):
    """sum_c t_c cw_c of a dense label row, in float64."""
    acc = 0.0
    for c in range(tr.shape[0]):
        acc += cw64[c] * np.float64(widen(tr, c))
    return acc


@jit_inline
def _dense_logit_sums(zr, tr, cw, m, thrc, one):
    """``_softmax_dense``'s pass from logits with smoothing or class weights, for a row
    longer than SUM_BLOCK: (sum of exp(d) below the max, count of d == 0, element hits,
    and in float64 sum t d, sum d, sum cw t, sum cw t d, sum cw d), d = z - m; float32
    within blocks, float64 across them (see ``_sparse_logit_sums``)."""
    wide_vectors()
    zero = one - one
    half = cast_like(0.5, one)
    neq = zero
    er = zero
    f_s = f_std = f_sd = f_sct = f_sctd = f_scd = 0.0
    for b0 in range(0, zr.shape[0], SUM_BLOCK):
        zb = zr[b0:b0 + SUM_BLOCK]
        tbk = tr[b0:b0 + SUM_BLOCK]
        cwb = cw[b0:b0 + SUM_BLOCK]
        s = zero
        std = zero
        sd = zero
        sct = zero
        sctd = zero
        scd = zero
        for c in range(zb.shape[0]):
            v = widen(zb, c)
            tv = cast_like(widen(tbk, c), one)
            d = v - m
            e = fexp_nonpos(d)  # unconditional: a select, not a branch
            s += e if d < zero else zero
            neq += one if d == zero else zero
            std += tv * d
            sd += d
            sct += cwb[c] * tv
            sctd += cwb[c] * tv * d
            scd += cwb[c] * d
            er += one if ((v > thrc) == (tv > half)) else zero
        f_s += np.float64(s)
        f_std += np.float64(std)
        f_sd += np.float64(sd)
        f_sct += np.float64(sct)
        f_sctd += np.float64(sctd)
        f_scd += np.float64(scd)
    return cast_like(f_s, one), neq, er, f_std, f_sd, f_sct, f_sctd, f_scd


@jit_inline
def _dense_prob_sums(zr, tr, cw, m, inv, epsc, hi_clip, thrc, one):
    """``_softmax_dense``'s pass over probabilities for a row longer than SUM_BLOCK: (count
    of p == m, element hits, and in float64 sum t log p, sum log p, sum cw t log p, sum cw
    log p), p = clip(z inv); float32 within blocks, float64 across them."""
    wide_vectors()
    zero = one - one
    half = cast_like(0.5, one)
    neq = zero
    er = zero
    f_std = f_sd = f_sctd = f_scd = 0.0
    for b0 in range(0, zr.shape[0], SUM_BLOCK):
        zb = zr[b0:b0 + SUM_BLOCK]
        tbk = tr[b0:b0 + SUM_BLOCK]
        cwb = cw[b0:b0 + SUM_BLOCK]
        std = zero
        sd = zero
        sctd = zero
        scd = zero
        for c in range(zb.shape[0]):
            v = widen(zb, c)
            tv = cast_like(widen(tbk, c), one)
            neq += one if v == m else zero
            p = v * inv
            p = p if p > epsc else epsc
            p = p if p < hi_clip else hi_clip
            lp = flog(p)
            std += tv * lp
            sd += lp
            sctd += cwb[c] * tv * lp
            scd += cwb[c] * lp
            er += one if ((v > thrc) == (tv > half)) else zero
        f_std += np.float64(std)
        f_sd += np.float64(sd)
        f_sctd += np.float64(sctd)
        f_scd += np.float64(scd)
    return neq, er, f_std, f_sd, f_sctd, f_scd


@jit_rows
def _softmax_dense(
    # data
    z, tl, sw, cw64, cw,
    # shapes / strides
    n, C, rs, trs,
    # constants
    one, has_sw, has_cw, cw_inside, ls, from_logits, renorm, eps, ks, any_tie, thr, sum1_tol,
    # outputs
    want_rows, row_loss, row_correct, row_hits, counts, bins, limbs, first_bad, slot, ctr, bounds,
):
    """Dense-label softmax: rows of ``z`` and of ``tl`` (same C, row strides rs / trs).

    Also counts the element-wise side accuracy ``(x > thr) == (t > 0.5)`` (ELEM/EXACT) and
    the label statistics used for task detection (ONEHOT/SUM1/BINARY). A label row with a
    negative or non-finite value is bad: NaN loss, recorded in ``first_bad``.
    """
    wide_vectors()  # 512-bit loops where the CPU has AVX-512
    K = ks.shape[0]
    zero = one - one
    pf = PREFETCH_MIN_BYTES <= C * z.itemsize <= PREFETCH_MAX_BYTES  # fetch rows ahead
    half = cast_like(0.5, one)
    lsc = cast_like(ls, one)
    omls = one - lsc
    lsC = cast_like(ls / C, one)
    epsc = cast_like(eps, one)
    hi_clip = one - epsc
    thrc = cast_like(thr, one)
    Cf = cast_like(np.int32(C), one)
    weighted = has_sw or has_cw
    need_sums = ls != 0.0 or has_cw
    sumcw = 0.0
    for c in range(C):
        sumcw += cw[c]
    cnt = counts[slot]
    bn = bins[slot]
    hits = np.zeros(max(K, 1), dtype=np.bool_)
    fb = -1
    while True:  # claim blocks of rows until none is left (see _parallel)
        r0, r1 = _claim_rows(ctr, bounds)
        if r0 >= r1:
            break
        for i in range(r0, r1):
            cnt[SEEN] += 1
            cnt[ROWS] += 1
            swi = sw[i] if has_sw else 1.0
            base = np.int64(i) * rs
            tbase = np.int64(i) * trs
            zr = z[base:base + C]
            tr = tl[tbase:tbase + C]
            for j in range(K):
                hits[j] = False
            correct = False
            # 1. maxima, finiteness (one integer pass over the logits), label statistics
            chk = zero
            tot = zero
            if from_logits:
                m, fin = rowmax_finite(zr)
                chk = zero if fin else one
            else:
                m = rowmax(zr)
                for c in range(C):
                    v = widen(zr, c)
                    chk += nonfinite(v)
                    tot += v
            # the label pass in three accumulators (float32): an unsigned max of the bits
            # (max, sign and finiteness at once), the sum, and whether every t is 0 or 1
            # (bin_acc, an integer max); the exact tests only for a row that may be bad (a
            # negative, -0.0, NaN or inf target; always for float64)
            tb = tb_init(one)
            st = zero
            nb = bin_init(one)
            for c in range(C):
                tv = cast_like(widen(tr, c), one)
                tb = tb_acc(tb, tv)
                st += tv
                nb = bin_acc(nb, tv)
            if pf:  # see PREFETCH_MIN_BYTES: after the two passes that read from memory
                prefetch_span(z, base + rs, C)
                prefetch_span(tl, tbase + trs, C)
            if tb_maybe_bad(tb):
                tmax, tneg, tchk, npos, nbin = _dense_label_checks(tr, one)
            else:
                tmax = tb_max(tb)
                tneg = zero
                tchk = zero
                npos = st
                nbin = Cf if bin_all(nb) else zero
            _count_label_stats(cnt, nbin, npos, st, C, sum1_tol)
            ty = _first_index_of(tr, tmax) if tmax == tmax else 0
            ty = ty if ty < C else 0
            zy = widen(zr, ty)
            bad = tchk != zero or tneg != zero
            if renorm and not from_logits and not (tot > zero and nonfinite(tot) == zero):
                chk = one  # a probability row summing to 0 or inf renormalises to NaN
            nan_row = False
            er = zero
            if bad:
                if fb < 0:
                    fb = i
                loss = math.nan
                nan_row = True
            elif chk == zero:
                # 2. one vectorised pass: loss sums, tie count, element-wise side accuracy
                neq = zero
                std = zero
                sd = zero
                sct = zero
                sctd = zero
                scd = zero
                if from_logits:
                    s = zero
                    if need_sums and C > SUM_BLOCK:  # long rows: float64 across blocks
                        s, neq, er, f_std, f_sd, f_sct, f_sctd, f_scd = _dense_logit_sums(
                            zr, tr, cw, m, thrc, one)
                    elif need_sums:
                        for c in range(C):
                            v = widen(zr, c)
                            tv = cast_like(widen(tr, c), one)
                            d = v - m
                            e = fexp_nonpos(d)  # unconditional: a select, not a branch
                            s += e if d < zero else zero
                            neq += one if d == zero else zero
                            std += tv * d
                            sd += d
                            sct += cw[c] * tv
                            sctd += cw[c] * tv * d
                            scd += cw[c] * d
                            er += one if ((v > thrc) == (tv > half)) else zero
                        f_std = np.float64(std)
                        f_sd = np.float64(sd)
                        f_sct = np.float64(sct)
                        f_sctd = np.float64(sctd)
                        f_scd = np.float64(scd)
                    else:
                        # no smoothing, no class weights: the four sums the loss needs only
                        for c in range(C):
                            v = widen(zr, c)
                            tv = cast_like(widen(tr, c), one)
                            d = v - m
                            e = fexp_nonpos(d)
                            s += e if d < zero else zero
                            neq += one if d == zero else zero
                            std += tv * d
                            er += one if ((v > thrc) == (tv > half)) else zero
                        # unit class weights (cw_inside without weights: PyTorch)
                        f_std = np.float64(std)
                        f_sd = np.float64(sd)
                        f_sct = np.float64(st)
                        f_sctd = f_std
                        f_scd = np.float64(scd)
                    lse = flogsum(neq, s)
                    # 3. loss = -sum_c a_c (d_c - L) = L sum(a) - sum(a d)
                    L, a1, aC = np.float64(lse), np.float64(omls), np.float64(lsC)
                    if cw_inside:
                        loss = (L * (a1 * f_sct + aC * sumcw) - (a1 * f_sctd + aC * f_scd))
                    else:
                        loss = (L * (a1 * np.float64(st) + np.float64(lsc))
                                - (a1 * f_std + aC * f_sd))
                else:
                    inv = one / tot if renorm else one
                    if C > SUM_BLOCK:  # long rows: float64 across blocks
                        neq, er, f_std, f_sd, f_sctd, f_scd = _dense_prob_sums(
                            zr, tr, cw, m, inv, epsc, hi_clip, thrc, one)
                    else:
                        for c in range(C):
                            v = widen(zr, c)
                            tv = cast_like(widen(tr, c), one)
                            neq += one if v == m else zero
                            p = v * inv
                            p = p if p > epsc else epsc
                            p = p if p < hi_clip else hi_clip
                            lp = flog(p)
                            std += tv * lp
                            sd += lp
                            sctd += cw[c] * tv * lp
                            scd += cw[c] * lp
                            er += one if ((v > thrc) == (tv > half)) else zero
                        f_std = np.float64(std)
                        f_sd = np.float64(sd)
                        f_sctd = np.float64(sctd)
                        f_scd = np.float64(scd)
                    a1, aC = np.float64(omls), np.float64(lsC)
                    if cw_inside:
                        loss = -(a1 * f_sctd + aC * f_scd)
                    else:
                        loss = -(a1 * f_std + aC * f_sd)
                if zy == m:
                    correct = neq == one or _first_index_of(zr, m) == ty
            else:
                nan_row = _has_nan(zr)
                loss = _slow_softmax_loss(zr, tr, 0, True, ls, cw64, cw_inside,
                                          from_logits, renorm, eps)
                for c in range(C):
                    v = widen(zr, c)
                    tv = cast_like(widen(tr, c), one)
                    er += one if (v == v and ((v > thrc) == (tv > half))) else zero
                if not nan_row and zy == m:
                    correct = _first_index_of(zr, m) == ty
            if not nan_row and K > 0:
                r = _rank(zr, ty, zy, any_tie)
                for j in range(K):
                    hits[j] = r < ks[j]
            if cw_inside:
                w = swi
                wl = swi * loss
            else:
                # w_i = sw_i sum_c t_c cw_c in float64 on every path (as the GPU); a bad label
                # row keeps sw_i
                w = swi * _dense_row_weight(tr, cw64) if (has_cw and not bad) else swi
                wl = w * loss
            _accumulate_softmax_row(cnt, bn, wl, w, swi, correct, hits, ks, weighted, has_sw)
            cnt[ELEM] += np.int64(er)
            cnt[EXACT] += 1 if er == C else 0
            if has_sw:
                _bin_add(bn, X_ELEM, swi * (er / C))
                if er == C:
                    _bin_add(bn, X_EXACT, swi)
            if want_rows:
                row_loss[i] = cast_like(wl, one)
                row_correct[i] = correct
                for j in range(K):
                    row_hits[i, j] = hits[j]
    _drain_bins(bn, limbs[slot])
    first_bad[slot] = fb
    mark_done(ctr)


@jit_inline
def _add_clean_tile(cnt, bn, lv, chk, tbad, cat, er, nbin, npos, st, nr, C, sum1_tol):
    """Counts (CAT, ELEM, EXACT, BINARY, ONEHOT, SUM1) and exact loss sum of a dense-label
    tile's ``nr`` rows, added only if the tile is clean (no non-finite prediction, no bad
    label) and its loss sum exact; False leaves ``cnt``/``bn`` untouched for the per-row
    path. ``cat``: 1 where the row counts as correct."""
    one = cast_like(1.0, lv[0])
    zero = one - one
    Cf = cast_like(C, one)
    nch = zero
    ncat = zero
    nerr = 0  # int64: a tile's element hits reach TILE * C
    nex = zero
    nbiny = zero
    nonehot = zero
    nsum1 = 0
    for r in range(nr):
        nch += chk[r] + tbad[r]
        ncat += cat[r]
        nerr += np.int64(er[r])
        nex += one if er[r] == Cf else zero
        isbin = nbin[r] == Cf
        nbiny += one if isbin else zero
        nonehot += one if (isbin and npos[r] == one) else zero
        nsum1 += 1 if abs(np.float64(st[r]) - 1.0) <= sum1_tol else 0
    if nch != zero:
        return False
    if not _add_tile_loss(bn, lv, nr):
        return False
    cnt[CAT] += np.int64(ncat)
    cnt[ELEM] += np.int64(nerr)
    cnt[EXACT] += np.int64(nex)
    cnt[BINARY] += np.int64(nbiny)
    cnt[ONEHOT] += np.int64(nonehot)
    cnt[SUM1] += nsum1
    return True


@jit_rows
def _softmax_dense_small(
    # data
    z, tl, sw, cw64,
    # shapes / strides
    n, C, rs, trs,
    # constants
    one, has_sw, from_logits, renorm, eps, thr, sum1_tol,
    # outputs
    want_rows, row_loss, row_correct, counts, bins, limbs, first_bad, slot, ctr, bounds,
):
    """Dense-label softmax for small C (<= SMALL_C): logits or probabilities, no smoothing, no
    class weights, no top-k. The tile scheme of ``_softmax_sparse_small`` applied to both
    arrays: a tile of TILE prediction rows and label rows is transposed class-major, then
    maxima, finiteness, label statistics, side accuracy, first argmaxes, exp-sums (or clipped
    logs of the probabilities) run element-wise across the tile's rows. Same semantics as
    ``_softmax_dense`` (its docstring); rows with a NaN/inf prediction take its IEEE slow
    path, bad label rows are NaN and recorded in ``first_bad``.
    cw64 : (C,) float64 ones (the slow path's class weights).
    """
    wide_vectors()  # 512-bit loops where the CPU has AVX-512
    zero = one - one
    half = cast_like(0.5, one)
    thrc = cast_like(thr, one)
    Cf = cast_like(C, one)
    bz = np.empty((C, TILE), dtype=type(one))
    bt = np.empty((C, TILE), dtype=type(one))
    mx = np.empty(TILE, dtype=type(one))
    tmx = np.empty(TILE, dtype=type(one))
    # running maxima as order-preserving int32 keys (float32; see max_acc): an integer max
    # vectorises to vpmaxsd, where ``mx[r] = v if v > mx[r] else mx[r]`` in this large loop
    # stayed a conditional store (vmaskmovps, microcoded on AVX2 AMD cores)
    mxk = np.empty(TILE, dtype=type(max_init(one)))
    tmxk = np.empty(TILE, dtype=type(max_init(one)))
    fnk = np.empty(TILE, dtype=type(finite_init(one)))
    tbk = np.empty(TILE, dtype=type(tb_init(one)))
    nbk = np.empty(TILE, dtype=type(bin_init(one)))
    chk = np.empty(TILE, dtype=type(one))
    tbad = np.empty(TILE, dtype=type(one))
    st = np.empty(TILE, dtype=type(one))
    npos = np.empty(TILE, dtype=type(one))
    nbin = np.empty(TILE, dtype=type(one))
    er = np.empty(TILE, dtype=type(one))
    ty = np.empty(TILE, dtype=type(one))
    zf = np.empty(TILE, dtype=type(one))
    sm = np.empty(TILE, dtype=type(one))
    neq = np.empty(TILE, dtype=type(one))
    std = np.empty(TILE, dtype=type(one))
    lv = np.empty(TILE, dtype=type(one))
    ok = np.empty(TILE, dtype=type(one))
    tot = np.empty(TILE, dtype=type(one))
    epsc = cast_like(eps, one)
    hits = np.zeros(1, dtype=np.bool_)
    ks0 = np.zeros(0, dtype=np.int64)
    cnt = counts[slot]
    bn = bins[slot]
    fb = -1
    n_elem = 0
    n_exact = 0
    while True:  # claim blocks of rows until none is left (see _parallel)
        r0, r1 = _claim_rows(ctr, bounds)
        if r0 >= r1:
            break
        cnt[SEEN] += r1 - r0
        cnt[ROWS] += r1 - r0
        for i0 in range(r0, r1, TILE):
            nr = min(TILE, r1 - i0)
            # 0. transpose both tiles (padding rows are zeros)
            _load_tile(bz, z, i0, nr, rs, one)
            _load_tile(bt, tl, i0, nr, trs, one)
            for r in range(mx.shape[0]):
                mxk[r] = max_init(one)
                fnk[r] = finite_init(one)
                tbk[r] = tb_init(one)
                nbk[r] = bin_init(one)
                st[r] = zero
                er[r] = zero
                ty[r] = Cf
                zf[r] = Cf
                sm[r] = zero
                neq[r] = zero
                std[r] = zero
                tot[r] = zero
            # 1. maxima, finiteness, label statistics, element-wise side accuracy; the
            #    labels in _softmax_dense's three accumulators (float32: the unsigned max of
            #    the bits, the sum, bin_acc), with the exact tests only for a tile that has
            #    a row they cannot clear (always for float64)
            for c in range(C):
                bzc = bz[c]
                btc = bt[c]
                for r in range(bzc.shape[0]):
                    v = bzc[r]
                    tv = btc[r]
                    mxk[r] = max_acc(mxk[r], v)
                    fnk[r] = finite_acc(fnk[r], v)
                    tot[r] += v
                    tbk[r] = tb_acc(tbk[r], tv)
                    st[r] += tv
                    nbk[r] = bin_acc(nbk[r], tv)
                    er[r] += one if ((v > thrc) == (tv > half)) else zero
            maybe_bad = False
            for r in range(mx.shape[0]):
                mx[r] = max_value(mxk[r])
                chk[r] = zero if finite_ok(fnk[r]) else one
                tb = tbk[r]
                maybe_bad |= tb_maybe_bad(tb)
                tmx[r] = tb_max(tb)
                tbad[r] = zero
                npos[r] = st[r]  # read only for a row of 0s and 1s, where it is the count
                nbin[r] = Cf if bin_all(nbk[r]) else zero
            if maybe_bad:  # exact: label max, negative or non-finite labels, 0/1 and > 0
                for r in range(mx.shape[0]):
                    tmxk[r] = max_init(one)
                    npos[r] = zero
                    nbin[r] = zero
                for c in range(C):
                    btc = bt[c]
                    for r in range(btc.shape[0]):
                        tv = btc[r]
                        tmxk[r] = max_acc(tmxk[r], tv)
                        tbad[r] += nonfinite(tv) + (one if tv < zero else zero)
                        npos[r] += one if tv > zero else zero
                        nbin[r] += one if (tv == zero or tv == one) else zero
                for r in range(mx.shape[0]):
                    tmx[r] = max_value(tmxk[r])
            # 2. first argmax of labels and predictions; logits: exp-sum of the non-maximal
            #    terms, ties and sum(t d); probabilities: sum(t log clip(p [/ sum p]))
            if from_logits:
                for c in range(C):
                    bzc = bz[c]
                    btc = bt[c]
                    cf = cast_like(c, one)
                    for r in range(bzc.shape[0]):
                        v = bzc[r]
                        tv = btc[r]
                        x0 = ty[r]  # first match, exact; written out (see _tile_max_argmax)
                        ty[r] = x0 - (one if ((tv == tmx[r]) & (cf < x0)) else zero) * (x0 - cf)
                        x0 = zf[r]
                        zf[r] = x0 - (one if ((v == mx[r]) & (cf < x0)) else zero) * (x0 - cf)
                        d = v - mx[r]
                        e = fexp_nonpos(d)  # unconditional: a select vectorises, a branch not
                        sm[r] += e if d < zero else zero
                        neq[r] += one if d == zero else zero
                        std[r] += tv * d
                # 3. log, row loss (-sum_c t_c (d_c - L) = L sum(t) - sum(t d), a sum of
                #    two non-negative terms)
                for r in range(sm.shape[0]):
                    lv[r] = flogsum(neq[r], sm[r]) * st[r] - std[r]
            else:
                for r in range(sm.shape[0]):  # sm: 1 / sum p (renormalising) or 1
                    sm[r] = one / tot[r] if renorm else one
                    if renorm and not (tot[r] > zero and nonfinite(tot[r]) == zero):
                        chk[r] += one  # 0/0 or inf/inf: the slow path keeps the NaN
                for c in range(C):
                    bzc = bz[c]
                    btc = bt[c]
                    cf = cast_like(c, one)
                    for r in range(bzc.shape[0]):
                        v = bzc[r]
                        tv = btc[r]
                        x0 = ty[r]  # first match, exact; written out (see _tile_max_argmax)
                        ty[r] = x0 - (one if ((tv == tmx[r]) & (cf < x0)) else zero) * (x0 - cf)
                        x0 = zf[r]
                        zf[r] = x0 - (one if ((v == mx[r]) & (cf < x0)) else zero) * (x0 - cf)
                        std[r] += tv * _clip_log(v * sm[r], epsc)
                for r in range(sm.shape[0]):
                    lv[r] = -std[r]
            for r in range(ok.shape[0]):
                ok[r] = one if zf[r] == ty[r] else zero
            # 4. a clean tile (finite predictions, valid labels, no weights): one exact add and
            #    the counts, all element-wise
            if not has_sw and _add_clean_tile(cnt, bn, lv, chk, tbad, ok, er, nbin, npos, st,
                                              nr, C, sum1_tol):
                if want_rows:
                    for r in range(nr):
                        row_loss[i0 + r] = lv[r]
                        row_correct[i0 + r] = ok[r] != zero
                continue
            # per-row path
            for r in range(nr):
                i = i0 + r
                _count_label_stats(cnt, nbin[r], npos[r], st[r], C, sum1_tol)
                swi = sw[i] if has_sw else 1.0
                correct = False
                err = er[r]
                if tbad[r] != zero:
                    if fb < 0:
                        fb = i
                    loss = math.nan
                    err = zero
                elif chk[r] == zero:
                    loss = np.float64(lv[r])
                    correct = ok[r] != zero
                else:
                    zr = z[np.int64(i) * rs:np.int64(i) * rs + C]
                    tr = tl[np.int64(i) * trs:np.int64(i) * trs + C]
                    loss = _slow_softmax_loss(zr, tr, 0, True, 0.0, cw64, False, from_logits,
                                              renorm, eps)
                    err = zero
                    for c in range(C):
                        v = bz[c, r]
                        err += one if (v == v and ((v > thrc) == (bt[c, r] > half))) else zero
                    if not _has_nan(zr):
                        correct = zf[r] == ty[r]
                wl = swi * loss
                _accumulate_softmax_row(cnt, bn, wl, swi, swi, correct, hits, ks0, has_sw,
                                        has_sw)
                n_elem += np.int64(err)
                n_exact += 1 if err == Cf else 0
                if has_sw:
                    _bin_add(bn, X_ELEM, swi * (err / C))
                    if err == Cf:
                        _bin_add(bn, X_EXACT, swi)
                if want_rows:
                    row_loss[i] = cast_like(wl, one)
                    row_correct[i] = correct
    cnt[ELEM] += n_elem
    cnt[EXACT] += n_exact
    _drain_bins(bn, limbs[slot])
    first_bad[slot] = fb
    mark_done(ctr)


# ============================================================================ sigmoid kernel


@jit_inline
def _sig_slow_elem(x, tp, pwc, from_logits, eps, log_floor):
    """IEEE float64 element loss with the zero-coefficient rule (see module docstring)."""
    if x != x:
        return math.nan
    a = pwc * tp
    b = 1.0 - tp
    if from_logits:
        l1 = math.log1p(math.exp(-abs(x))) if math.isfinite(x) else 0.0
        spn = max(-x, 0.0) + l1
        spp = max(x, 0.0) + l1
        return (a * spn if a != 0.0 else 0.0) + (b * spp if b != 0.0 else 0.0)
    p = min(max(x, eps), 1.0 - eps) if eps > 0.0 else x
    lp = max(math.log(p) if p > 0.0 else -math.inf, log_floor)
    lq = max(math.log1p(-p) if p < 1.0 else -math.inf, log_floor)
    return -((a * lp if a != 0.0 else 0.0) + (b * lq if b != 0.0 else 0.0))


@jit_inline
def _sig_slow_row(zr, tr, pw, colw, ls, from_logits, eps, log_floor, thr, one):
    """IEEE float64 loss and element-wise hits of a row with a NaN/inf prediction."""
    C = zr.shape[0]
    zero = one - one
    acc = 0.0
    er = zero
    for c in range(C):
        x = np.float64(widen(zr, c))
        tv = np.float64(widen(tr, c))
        tp = (1.0 - ls) * tv + ls / 2.0
        acc += np.float64(colw[c]) * _sig_slow_elem(x, tp, np.float64(pw[c]), from_logits, eps,
                                                    log_floor)
        er += one if (x == x and ((x > thr) == (tv > 0.5))) else zero
    return acc / C, er


@jit_inline
def _sig_row_checks(zr, tr, one):
    """Exact non-finite count of a row's predictions, and its target statistics: values
    outside [0, 1] (or NaN), positives, values that are 0 or 1."""
    zero = one - one
    chk = zero
    tbad = zero
    npos = zero
    nbin = zero
    for c in range(zr.shape[0]):
        x = widen(zr, c)
        tv = cast_like(widen(tr, c), one)
        chk += nonfinite(x)
        tbad += zero if (tv >= zero and tv <= one) else one
        npos += one if tv > zero else zero
        nbin += one if (tv == zero or tv == one) else zero
    return chk, tbad, npos, nbin


@jit_inline
def _accumulate_sigmoid_row(cnt, bn, wl, swi, er, C, cat, has_sw):
    """Add one row's loss, element hits, exact match and CAT (and, with sample weights, their
    weighted sums); returns the exact match."""
    _add_loss(cnt, bn, wl)
    exact = er == C
    cnt[ELEM] += np.int64(er)
    cnt[EXACT] += 1 if exact else 0
    cnt[CAT] += 1 if cat else 0
    if has_sw:
        _bin_add(bn, X_W, swi)
        _bin_add(bn, X_SW, swi)
        _bin_add(bn, X_ELEM, swi * (er / C))
        if exact:
            _bin_add(bn, X_EXACT, swi)
        if cat:
            _bin_add(bn, X_CAT, swi)
    return exact


@jit_rows
def _sigmoid(
    # data
    z, tl, sw, pw, colw,
    # shapes / strides
    n, C, rs, trs,
    # constants
    one, has_sw, plain, ls, from_logits, eps, log_floor, thr, want_cat, sum1_tol,
    # outputs
    want_rows, row_loss, row_correct, row_elem, counts, bins, limbs, first_bad, slot, ctr, bounds,
):
    """Sigmoid (binary / multilabel) cross-entropy + element-wise and exact-match accuracy.

    pw, colw : (C,) compute-dtype pos_weight and per-column weights (ones when absent);
    ``plain``: both absent. Row loss = mean over the row's C elements. CAT (only if
    ``want_cat``, only over one-hot label rows): first argmax of z is the label's 1. Targets
    outside [0, 1] or NaN make the row bad.
    """
    wide_vectors()  # 512-bit loops where the CPU has AVX-512
    zero = one - one
    half = cast_like(0.5, one)
    lsc = cast_like(ls, one)
    omls = one - lsc
    ls2 = cast_like(ls / 2.0, one)
    epsc = cast_like(eps, one)
    hi_clip = one - epsc
    floorc = cast_like(log_floor, one)
    thrc = cast_like(thr, one)
    Cf = cast_like(np.int32(C), one)
    cnt = counts[slot]
    bn = bins[slot]
    fb = -1
    while True:  # claim blocks of rows until none is left (see _parallel)
        r0, r1 = _claim_rows(ctr, bounds)
        if r0 >= r1:
            break
        for i in range(r0, r1):
            cnt[SEEN] += 1
            cnt[ROWS] += 1
            swi = sw[i] if has_sw else 1.0
            base = np.int64(i) * rs
            tb = np.int64(i) * trs
            zr = z[base:base + C]
            tr = tl[tb:tb + C]
            chk = zero
            tbad = zero
            st = zero
            npos = zero
            nbin = zero
            sl64 = 0.0  # the loss sum: float32 within SUM_BLOCK elements, float64 across
            er = zero
            # 1. one vectorised pass over the row
            if from_logits and plain:
                # no pos_weight / column weights (the common case): the element loss
                # t' sp(-x) + (1 - t') sp(x) = max(x, 0) - t' x + log1p(exp(-|x|)). The
                # checks and label statistics are cut to three accumulators (fewer vector ops
                # and registers; the loop was spilling): finite x and t in [0, 1] in one
                # integer max (xt_acc), and whether every t is 0 or 1 (bin_acc, another);
                # a 0/1 row's positives are then st (exact integers).
                xt = xt_init(one)
                nb = bin_init(one)
                for b0 in range(0, C, SUM_BLOCK):  # see SUM_BLOCK
                    zb = zr[b0:b0 + SUM_BLOCK]
                    tbk = tr[b0:b0 + SUM_BLOCK]
                    sl = zero
                    for c in range(zb.shape[0]):
                        x = widen(zb, c)
                        tv = cast_like(widen(tbk, c), one)
                        xt = xt_acc(xt, x, tv)
                        st += tv
                        nb = bin_acc(nb, tv)
                        tp = omls * tv + ls2
                        ax = x if x > zero else -x
                        l1 = flog1p_unit(fexp_nonpos(-ax))
                        sl += (x if x > zero else zero) - tp * x + l1
                        er += one if ((x > thrc) == (tv > half)) else zero
                    sl64 += np.float64(sl)
                if xt_maybe_bad(xt):  # inconclusive (a bad value, -0.0, |x| > 2**127)
                    chk, tbad, npos, nbin = _sig_row_checks(zr, tr, one)
                else:
                    nbin = Cf if bin_all(nb) else zero
                    npos = st
            elif from_logits:
                for b0 in range(0, C, SUM_BLOCK):  # see SUM_BLOCK
                    zb = zr[b0:b0 + SUM_BLOCK]
                    tbk = tr[b0:b0 + SUM_BLOCK]
                    cwb = colw[b0:b0 + SUM_BLOCK]
                    pwb = pw[b0:b0 + SUM_BLOCK]
                    sl = zero
                    for c in range(zb.shape[0]):
                        x = widen(zb, c)
                        tv = cast_like(widen(tbk, c), one)
                        chk += nonfinite(x)
                        tbad += zero if (tv >= zero and tv <= one) else one
                        st += tv
                        npos += one if tv > zero else zero
                        nbin += one if (tv == zero or tv == one) else zero
                        tp = omls * tv + ls2
                        ax = x if x > zero else -x
                        l1 = flog1p_unit(fexp_nonpos(-ax))
                        spn = (-x if x < zero else zero) + l1
                        spp = (x if x > zero else zero) + l1
                        sl += cwb[c] * (pwb[c] * tp * spn + (one - tp) * spp)
                        er += one if ((x > thrc) == (tv > half)) else zero
                    sl64 += np.float64(sl)
            else:
                for b0 in range(0, C, SUM_BLOCK):  # see SUM_BLOCK
                    zb = zr[b0:b0 + SUM_BLOCK]
                    tbk = tr[b0:b0 + SUM_BLOCK]
                    cwb = colw[b0:b0 + SUM_BLOCK]
                    pwb = pw[b0:b0 + SUM_BLOCK]
                    sl = zero
                    for c in range(zb.shape[0]):
                        x = widen(zb, c)
                        tv = cast_like(widen(tbk, c), one)
                        chk += nonfinite(x)
                        tbad += zero if (tv >= zero and tv <= one) else one
                        st += tv
                        npos += one if tv > zero else zero
                        nbin += one if (tv == zero or tv == one) else zero
                        tp = omls * tv + ls2
                        p = x if x > epsc else epsc
                        p = p if p < hi_clip else hi_clip
                        lp = flog(p)
                        lq = flog1p(-p)  # log(1 - p) loses p's digits for small p
                        lp = lp if lp > floorc else floorc
                        lq = lq if lq > floorc else floorc
                        sl -= cwb[c] * (pwb[c] * tp * lp + (one - tp) * lq)
                        er += one if ((x > thrc) == (tv > half)) else zero
                    sl64 += np.float64(sl)
            _count_label_stats(cnt, nbin, npos, st, C, sum1_tol)
            if tbad != zero:
                if fb < 0:
                    fb = i
                loss = math.nan
            elif chk == zero:
                loss = sl64 / C
            else:
                # 2. IEEE slow path for rows with NaN/inf predictions
                loss, er = _sig_slow_row(zr, tr, pw, colw, ls, from_logits, eps, log_floor,
                                         thr, one)
            cat = False
            if want_cat and nbin == C and npos == one:
                # only one-hot rows: CAT feeds the "binary task on one-hot labels" warning,
                # which needs every row one-hot
                mz = rowmax(zr)
                mt = rowmax(tr)
                if not _has_nan(zr):
                    cat = _first_index_of(zr, mz) == _first_index_of(tr, mt)
            wl = swi * loss
            exact = _accumulate_sigmoid_row(cnt, bn, wl, swi, er, C, cat, has_sw)
            if want_rows:
                row_loss[i] = cast_like(wl, one)
                row_correct[i] = exact
                row_elem[i] = cast_like(er / C, one)
    _drain_bins(bn, limbs[slot])
    first_bad[slot] = fb
    mark_done(ctr)


@jit_inline
def _sig_tile_buffers(one):
    """The per-tile-row buffers of the sigmoid tile kernels, read by ``_add_clean_tile`` and
    ``_sig_tile_row``: row loss, non-finite predictions, bad targets, CAT, element hits,
    0/1 targets, positives, target sum."""
    return (np.empty(TILE, dtype=type(one)), np.empty(TILE, dtype=type(one)),
            np.empty(TILE, dtype=type(one)), np.empty(TILE, dtype=type(one)),
            np.empty(TILE, dtype=type(one)), np.empty(TILE, dtype=type(one)),
            np.empty(TILE, dtype=type(one)), np.empty(TILE, dtype=type(one)))


@jit_inline
def _sig_tile_row(z, tl, i, r, rs, trs, C, pw, colw, ls, from_logits, eps, log_floor, thr,
                  want_cat, sum1_tol, lv, chk, tbad, cat, er, nbin, npos, st, cnt, fb, one):
    """Row ``i`` (tile row ``r``) of a sigmoid tile on the per-row path: counts its label
    statistics; returns (loss, element hits, CAT, first bad row). A bad target row is NaN;
    a row with a NaN/inf prediction takes the IEEE slow path (``_sig_slow_row``)."""
    zero = one - one
    _count_label_stats(cnt, nbin[r], npos[r], st[r], C, sum1_tol)
    err = er[r]
    rcat = cat[r] != zero
    if tbad[r] != zero:
        if fb < 0:
            fb = i
        loss = math.nan
    elif chk[r] == zero:
        loss = np.float64(lv[r])
    else:
        zr = z[np.int64(i) * rs:np.int64(i) * rs + C]
        tr = tl[np.int64(i) * trs:np.int64(i) * trs + C]
        loss, err = _sig_slow_row(zr, tr, pw, colw, ls, from_logits, eps, log_floor, thr, one)
        rcat = False
        if want_cat and nbin[r] == C and npos[r] == one and not _has_nan(zr):
            rcat = _first_index_of(zr, rowmax(zr)) == _first_index_of(tr, rowmax(tr))
    return loss, err, rcat, fb


@jit_inline
def _sig_plain_rows(z, tl, i0, nr, rs, trs, C, omls, ls2, thrc, lv, er, st, nbt, xbad, one):
    """The vectorised pass of ``_sigmoid_plain`` over rows ``i0 .. i0+nr``: per tile row the
    loss ``sl / C``, element hits, target sum, ``bin_acc`` and whether the cheap check
    (one unsigned max over the bits) cannot clear the row. Nothing else happens in this row
    loop: with the label checks and CAT in it as well, the vectorised loop spilled more of its
    constants and E_bce-like rows (C = 100) ran 1.1-1.2x slower (same bits)."""
    wide_vectors()
    zero = one - one
    half = cast_like(0.5, one)
    Cf = cast_like(np.int32(C), one)
    for r in range(nr):
        base = np.int64(i0 + r) * rs
        tb = np.int64(i0 + r) * trs
        zr = z[base:base + C]
        tr = tl[tb:tb + C]
        # the plain loop of _sigmoid, written out: as a shared helper returning its five
        # sums it ran 8-13% slower (E_bce, scripts/ab_cpu.py), and _sigmoid calling this
        # function for one row at a time ran 0.83-0.88x (same bits, 262k x 100, weighted)
        xt = xt_init(one)
        s_t = zero
        nb = bin_init(one)
        sl64 = 0.0
        e_r = zero
        for b0 in range(0, C, SUM_BLOCK):  # see SUM_BLOCK
            zb = zr[b0:b0 + SUM_BLOCK]
            tbk = tr[b0:b0 + SUM_BLOCK]
            sl = zero
            for c in range(zb.shape[0]):
                x = widen(zb, c)
                tv = cast_like(widen(tbk, c), one)
                xt = xt_acc(xt, x, tv)
                s_t += tv
                nb = bin_acc(nb, tv)
                tp = omls * tv + ls2
                ax = x if x > zero else -x
                l1 = flog1p_unit(fexp_nonpos(-ax))
                sl += (x if x > zero else zero) - tp * x + l1
                e_r += one if ((x > thrc) == (tv > half)) else zero
            sl64 += np.float64(sl)
        lv[r] = cast_like(sl64, one) / Cf
        er[r] = e_r
        st[r] = s_t
        nbt[r] = nb
        xbad[r] = one if xt_maybe_bad(xt) else zero


@jit_rows
def _sigmoid_plain(
    # data
    z, tl, pw, colw,
    # shapes / strides
    n, C, rs, trs,
    # constants
    one, ls, eps, log_floor, thr, want_cat, sum1_tol,
    # outputs
    counts, bins, limbs, first_bad, slot, ctr, bounds,
):
    """``_sigmoid`` for its common case: logits, no pos_weight, column or sample weights, no
    per-row outputs. Its row loop (``_sig_plain_rows``) keeps only the vectorised pass over
    the row; its results go into TILE-row buffers, and the counts and the exact loss sum of
    a clean tile are added in one step (``_add_clean_tile``, as the small-C tile kernel
    does) instead of row by row.
    Rows that the cheap check cannot clear, and tiles that are not clean, take ``_sigmoid``'s
    per-row path. A row's loss is the float32 ``sl / C`` (as in ``_sigmoid_small``), so a
    clean tile's loss sum is exact in one float64 add. pw, colw: ones (the slow path's)."""
    wide_vectors()  # 512-bit loops where the CPU has AVX-512
    zero = one - one
    omls = one - cast_like(ls, one)
    ls2 = cast_like(ls / 2.0, one)
    thrc = cast_like(thr, one)
    Cf = cast_like(np.int32(C), one)
    lv, chk, tbad, cat, er, nbin, npos, st = _sig_tile_buffers(one)
    nbt = np.empty(TILE, dtype=type(bin_init(one)))  # per tile row: bin_acc (all t 0/1?)
    xbad = np.empty(TILE, dtype=type(one))  # 1 where the cheap check cannot clear the row
    cnt = counts[slot]
    bn = bins[slot]
    fb = -1
    while True:  # claim blocks of rows until none is left (see _parallel)
        r0, r1 = _claim_rows(ctr, bounds)
        if r0 >= r1:
            break
        for i0 in range(r0, r1, TILE):
            nr = min(TILE, r1 - i0)
            _sig_plain_rows(z, tl, i0, nr, rs, trs, C, omls, ls2, thrc, lv, er, st, nbt, xbad,
                            one)
            # the label statistics (exact checks for the rows the cheap one cannot clear) and
            # CAT, in a loop of their own (see _sig_plain_rows). The rows are sliced only in
            # the branches that read them: slicing each row once at the top of this loop made
            # E_bce 0.73-0.80x (scripts/ab_cpu.py, twice; LLVM then treats the kernel otherwise)
            for r in range(nr):
                if xbad[r] != zero:
                    base = np.int64(i0 + r) * rs
                    tb = np.int64(i0 + r) * trs
                    chk[r], tbad[r], npos[r], nbin[r] = _sig_row_checks(
                        z[base:base + C], tl[tb:tb + C], one)
                else:
                    chk[r] = zero
                    tbad[r] = zero
                    npos[r] = st[r]
                    nbin[r] = Cf if bin_all(nbt[r]) else zero
                cat[r] = zero
                if want_cat and nbin[r] == Cf and npos[r] == one and chk[r] == zero:
                    # CAT (one-hot rows only, see _sigmoid)
                    base = np.int64(i0 + r) * rs
                    tb = np.int64(i0 + r) * trs
                    zr = z[base:base + C]
                    tr = tl[tb:tb + C]
                    if _first_index_of(zr, rowmax(zr)) == _first_index_of(tr, rowmax(tr)):
                        cat[r] = one
            if _add_clean_tile(cnt, bn, lv, chk, tbad, cat, er, nbin, npos, st, nr, C,
                               sum1_tol):
                cnt[SEEN] += nr
                cnt[ROWS] += nr
                continue
            # per-row path (as _sigmoid_small's)
            for r in range(nr):
                i = i0 + r
                cnt[SEEN] += 1
                cnt[ROWS] += 1
                loss, err, rcat, fb = _sig_tile_row(
                    z, tl, i, r, rs, trs, C, pw, colw, ls, True, eps, log_floor, thr, want_cat,
                    sum1_tol, lv, chk, tbad, cat, er, nbin, npos, st, cnt, fb, one)
                _accumulate_sigmoid_row(cnt, bn, loss, 1.0, err, C, rcat, False)
    _drain_bins(bn, limbs[slot])
    first_bad[slot] = fb
    mark_done(ctr)


# One class row of a tile: its element losses added into the row sums ``sl`` (the three
# forms of ``_sigmoid``). Separate small functions: inside the large tile kernel LLVM stopped
# inlining exp/log1p and the loops ran scalar (5 vs ~1.4 ns per element).


@jit_inline
def _tile_sig_plain(x_c, t_c, sl, omls, ls2):
    wide_vectors()
    zero = omls - omls
    for r in range(sl.shape[0]):
        x = x_c[r]
        tp = omls * t_c[r] + ls2
        ax = x if x > zero else -x
        sl[r] += (x if x > zero else zero) - tp * x + flog1p_unit(fexp_nonpos(-ax))


@jit_inline
def _tile_sig_logits(x_c, t_c, sl, pwc, cwc, omls, ls2):
    wide_vectors()
    zero = omls - omls
    one = cast_like(1.0, omls)
    for r in range(sl.shape[0]):
        x = x_c[r]
        tp = omls * t_c[r] + ls2
        ax = x if x > zero else -x
        l1 = flog1p_unit(fexp_nonpos(-ax))
        spn = (-x if x < zero else zero) + l1
        spp = (x if x > zero else zero) + l1
        sl[r] += cwc * (pwc * tp * spn + (one - tp) * spp)


@jit_inline
def _tile_sig_probs(x_c, t_c, sl, pwc, cwc, omls, ls2, epsc, floorc):
    wide_vectors()
    one = cast_like(1.0, omls)
    hi_clip = one - epsc
    for r in range(sl.shape[0]):
        x = x_c[r]
        tp = omls * t_c[r] + ls2
        p = x if x > epsc else epsc
        p = p if p < hi_clip else hi_clip
        lp = flog(p)
        lq = flog1p(-p)  # log(1 - p) loses p's digits for small p
        lp = lp if lp > floorc else floorc
        lq = lq if lq > floorc else floorc
        sl[r] -= cwc * (pwc * tp * lp + (one - tp) * lq)


@jit_rows
def _sigmoid_small(
    # data
    z, tl, sw, pw, colw,
    # shapes / strides
    n, C, rs, trs,
    # constants
    one, has_sw, plain, ls, from_logits, eps, log_floor, thr, want_cat, sum1_tol,
    # outputs
    want_rows, row_loss, row_correct, row_elem, counts, bins, limbs, first_bad, slot, ctr, bounds,
):
    """``_sigmoid`` for small C (<= SMALL_C; binary tasks are C = 1): the tile scheme of
    ``_softmax_dense_small``. Both tiles are transposed class-major, then label statistics,
    side accuracy, maxima (for CAT) and the element losses run across the tile's rows; the
    row loss is the float32 ``sum / C``, the same value on the clean-tile and per-row paths.
    Rows with a NaN/inf prediction take ``_sigmoid``'s IEEE slow path; bad target rows are
    NaN and recorded in ``first_bad``.
    """
    wide_vectors()  # 512-bit loops where the CPU has AVX-512
    zero = one - one
    half = cast_like(0.5, one)
    lsc = cast_like(ls, one)
    omls = one - lsc
    ls2 = cast_like(ls / 2.0, one)
    epsc = cast_like(eps, one)
    floorc = cast_like(log_floor, one)
    thrc = cast_like(thr, one)
    Cf = cast_like(C, one)
    bz = np.empty((C, TILE), dtype=type(one))
    bt = np.empty((C, TILE), dtype=type(one))
    mx = np.empty(TILE, dtype=type(one))
    tmx = np.empty(TILE, dtype=type(one))
    # running maxima as int32 order keys (see _softmax_dense_small)
    mxk = np.empty(TILE, dtype=type(max_init(one)))
    tmxk = np.empty(TILE, dtype=type(max_init(one)))
    fnk = np.empty(TILE, dtype=type(finite_init(one)))
    tbk = np.empty(TILE, dtype=type(tb_init(one)))
    nbk = np.empty(TILE, dtype=type(bin_init(one)))
    lv, chk, tbad, cat, er, nbin, npos, st = _sig_tile_buffers(one)
    sl = np.empty(TILE, dtype=type(one))
    zf = np.empty(TILE, dtype=type(one))
    ty = np.empty(TILE, dtype=type(one))
    cnt = counts[slot]
    bn = bins[slot]
    fb = -1
    while True:  # claim blocks of rows until none is left (see _parallel)
        r0, r1 = _claim_rows(ctr, bounds)
        if r0 >= r1:
            break
        for i0 in range(r0, r1, TILE):
            nr = min(TILE, r1 - i0)
            _load_tile(bz, z, i0, nr, rs, one)
            _load_tile(bt, tl, i0, nr, trs, one)
            for r in range(mx.shape[0]):
                mxk[r] = max_init(one)
                fnk[r] = finite_init(one)
                tbk[r] = tb_init(one)
                nbk[r] = bin_init(one)
                st[r] = zero
                er[r] = zero
                sl[r] = zero
                zf[r] = Cf
                ty[r] = Cf
            # 1. statistics, side accuracy, maxima; the targets in _softmax_dense's three
            #    accumulators (see _softmax_dense_small), with the exact tests only for a
            #    tile that has a row they cannot clear (always for float64). Written out as
            #    in _softmax_dense_small: as one helper shared by both tile kernels, the two
            #    ran 0.84-0.92x (scripts/ab_cpu.py, one-hot and multi-hot A_4Mx10)
            for c in range(C):
                bzc = bz[c]
                btc = bt[c]
                for r in range(bzc.shape[0]):
                    x = bzc[r]
                    tv = btc[r]
                    fnk[r] = finite_acc(fnk[r], x)
                    tbk[r] = tb_acc(tbk[r], tv)
                    st[r] += tv
                    nbk[r] = bin_acc(nbk[r], tv)
                    er[r] += one if ((x > thrc) == (tv > half)) else zero
                    mxk[r] = max_acc(mxk[r], x)
            maybe_bad = False
            for r in range(mx.shape[0]):
                mx[r] = max_value(mxk[r])
                chk[r] = zero if finite_ok(fnk[r]) else one
                tb = tbk[r]
                maybe_bad |= tb_maybe_bad(tb) or not tb_le_one(tb)
                tmx[r] = tb_max(tb)
                tbad[r] = zero
                npos[r] = st[r]  # read only for a row of 0s and 1s, where it is the count
                nbin[r] = Cf if bin_all(nbk[r]) else zero
            if maybe_bad:  # exact: target max, targets outside [0, 1], 0/1 and > 0
                for r in range(mx.shape[0]):
                    tmxk[r] = max_init(one)
                    npos[r] = zero
                    nbin[r] = zero
                for c in range(C):
                    btc = bt[c]
                    for r in range(btc.shape[0]):
                        tv = btc[r]
                        tbad[r] += zero if (tv >= zero and tv <= one) else one
                        npos[r] += one if tv > zero else zero
                        nbin[r] += one if (tv == zero or tv == one) else zero
                        tmxk[r] = max_acc(tmxk[r], tv)
                for r in range(mx.shape[0]):
                    tmx[r] = max_value(tmxk[r])
            # 2. element losses (the three forms of ``_sigmoid``)
            for c in range(C):
                bzc = bz[c]
                btc = bt[c]
                pwc = pw[c]
                cwc = colw[c]
                if from_logits and plain:
                    _tile_sig_plain(bzc, btc, sl, omls, ls2)
                elif from_logits:
                    _tile_sig_logits(bzc, btc, sl, pwc, cwc, omls, ls2)
                else:
                    _tile_sig_probs(bzc, btc, sl, pwc, cwc, omls, ls2, epsc, floorc)
            # 3. first argmaxes (CAT, one-hot label rows only), row loss
            if want_cat:
                for c in range(C):
                    bzc = bz[c]
                    btc = bt[c]
                    cf = cast_like(c, one)
                    for r in range(bzc.shape[0]):
                        x0 = zf[r]  # first match, exact; written out (see _tile_max_argmax)
                        zf[r] = x0 - (one if ((bzc[r] == mx[r]) & (cf < x0)) else zero) * (x0 - cf)
                        x0 = ty[r]
                        ty[r] = x0 - (one if ((btc[r] == tmx[r]) & (cf < x0)) else zero) * (x0 - cf)
            for r in range(lv.shape[0]):
                lv[r] = sl[r] / Cf
                cat[r] = one if (want_cat and nbin[r] == Cf and npos[r] == one
                                 and zf[r] == ty[r]) else zero
            # 4. a clean tile (finite predictions, valid targets, no weights)
            if not has_sw and _add_clean_tile(cnt, bn, lv, chk, tbad, cat, er, nbin, npos, st,
                                              nr, C, sum1_tol):
                cnt[SEEN] += nr
                cnt[ROWS] += nr
                if want_rows:
                    for r in range(nr):
                        row_loss[i0 + r] = lv[r]
                        row_correct[i0 + r] = er[r] == Cf
                        row_elem[i0 + r] = cast_like(np.float64(er[r]) / C, one)
                continue
            # per-row path (as ``_sigmoid``)
            for r in range(nr):
                i = i0 + r
                cnt[SEEN] += 1
                cnt[ROWS] += 1
                swi = sw[i] if has_sw else 1.0
                loss, err, rcat, fb = _sig_tile_row(
                    z, tl, i, r, rs, trs, C, pw, colw, ls, from_logits, eps, log_floor, thr,
                    want_cat, sum1_tol, lv, chk, tbad, cat, er, nbin, npos, st, cnt, fb, one)
                wl = swi * loss
                exact_row = _accumulate_sigmoid_row(cnt, bn, wl, swi, err, C, rcat, has_sw)
                if want_rows:
                    row_loss[i] = cast_like(wl, one)
                    row_correct[i] = exact_row
                    row_elem[i] = cast_like(err / C, one)
    _drain_bins(bn, limbs[slot])
    first_bad[slot] = fb
    mark_done(ctr)


# ============================================================================ launchers

_KERNEL_VIEW = {np.dtype(np.float16): np.int16, np.dtype(np.bool_): np.uint8}
_UNSEEN = object()
_ONES_CACHE: dict = {}


def _kernel_view(a: np.ndarray) -> np.ndarray:
    """Reinterpret float16 / bfloat16 / bool as the integer bit types the kernels widen.
    bfloat16 is ml_dtypes' dtype, known here by name: whoever made the array has imported
    ml_dtypes, and importing it here would cost every process ~1.4 s (ml_dtypes 0.7 on
    these machines), most of the first call's time."""
    view = _view_dtype(a.dtype)
    return a.view(view) if view is not None else a


def _view_dtype(dt):
    """The integer dtype ``_kernel_view`` reads ``dt`` as, or None."""
    view = _KERNEL_VIEW.get(dt, _UNSEEN)
    if view is _UNSEEN:  # dtype.name is slow (a Python property): look once per dtype
        view = np.uint16 if dt.name == "bfloat16" else None
        if len(_KERNEL_VIEW) < 64:
            _KERNEL_VIEW[dt] = view
    return view


def _compute_one(dtype: np.dtype, C: int = 0):
    """The kernels' compute type: float64 for float64 logits and for rows of 2**24 classes or
    more (a float32 count of a row's classes stops being exact there)."""
    if dtype == np.float64 or C >= _F32_EXACT_COUNT:
        return np.float64(1.0)
    return np.float32(1.0)


def _row_buffer(a: np.ndarray):
    """(flat 1-D buffer, row stride in elements) reading a 2-D array in place, or None when
    the class axis is not contiguous (the launcher then copies row blocks)."""
    n, C = a.shape
    item = a.itemsize
    s0, s1 = a.strides
    if n == 0 or C == 0:
        return np.zeros(1, dtype=a.dtype), 0
    if a.flags.c_contiguous:
        return a.reshape(-1), C
    if (C > 1 and s1 != item) or s0 < 0 or s0 % item:
        return None
    rs = s0 // item if n > 1 else C
    length = (n - 1) * rs + C
    return np.lib.stride_tricks.as_strided(a, shape=(length,), strides=(item,)), rs


_NO_WEIGHTS = np.zeros(0, dtype=np.float64)  # no sample weights (the kernels never write it)


def _f64_or_empty(a):
    return _NO_WEIGHTS if a is None else np.ascontiguousarray(a, dtype=np.float64)


def _ones_or(a, C, one):
    """``a`` in the dtype of ``one``, or a cached vector of C ones (never written)."""
    if a is None:
        key = (C, type(one))
        ones = _ONES_CACHE.get(key)
        if ones is None:
            if len(_ONES_CACHE) >= 8:
                _ONES_CACHE.clear()
            ones = _ONES_CACHE[key] = np.ones(C, dtype=type(one))
        return ones
    return np.ascontiguousarray(a, dtype=type(one))


# Below _SMALL elements a call runs on the caller's thread only. Below _WAKE it also does when
# it comes alone (no call on several threads in the last _LOOP_GAP seconds) and its workers
# are asleep (idle for a few ms): waking one and handing the GIL back and forth cost 1-3 ms
# on the Zen 1 machines, more than a call this size gains from a second thread. The second of
# two calls in a row wakes them, and in a loop of calls they stay awake; two threads then win
# from ~2**17 elements. ``scripts/thread_threshold.py`` (Zen 1, 2026-12-05, median us, C = 10
# / 1000): 2**18 elements in a loop 1113 / 578 on one thread, 999 / 447 on two; alone
# (calls 10 ms apart) 1784 / 788 on one, 2782 / 3928 on two; 2**22 alone 17389 / 12196 on
# one, 10191 / 7034 on two.
_SMALL = 1 << 17
_WAKE = 1 << 21
_LOOP_GAP = 1e-3


def _threads(n: int, C: int) -> int:
    if n * C < _SMALL:
        return 1
    return max(1, min(_num_threads(), n))


_GET_THREADS = None


def _num_threads() -> int:
    """``nb.get_num_threads()``: once the threading layer is up, through the thread-local
    getter it wraps, without its two locks per call (6.4 against 1.8 us with the caches cold
    after a 64k x 10 batch; a stream calls it once per batch)."""
    global _GET_THREADS
    get = _GET_THREADS
    if get is not None:
        return get()
    n = nb.get_num_threads()  # launches the threading layer
    from numba.np.ufunc import parallel

    get = getattr(parallel, "_get_num_threads", None)
    _GET_THREADS = get if callable(get) and get() == n else nb.get_num_threads
    return n


def _block_bounds(n: int, C: int, T: int) -> np.ndarray:
    """Row bounds of the blocks the threads claim in order (guided schedule): one block on
    one thread; else each block takes ~1/(2T) of the rows still unclaimed, at most ~1M and at
    least ~16k elements, a multiple of TILE rows. Large blocks first keep the prefetchers
    streaming; small ones last let the threads finish together (a thread idles at most one
    small block)."""
    if T == 1 or n <= TILE:
        return np.array([0, n], dtype=np.int64)
    key = (n, C, T)
    b = _BOUNDS.get(key)
    if b is not None:
        return b
    C = max(C, 1)
    hi = max(TILE, ((1 << 20) // C) // TILE * TILE)
    lo = min(hi, max(TILE, -(-(1 << 14) // C) // TILE * TILE))
    out = [0]
    r = 0
    while r < n:
        size = -(-(n - r) // (2 * T))
        size = min(hi, max(lo, -(-size // TILE) * TILE))
        r = min(n, r + size)
        out.append(r)
    b = np.array(out, dtype=np.int64)
    if len(_BOUNDS) >= 64:
        _BOUNDS.clear()
    _BOUNDS[key] = b
    return b


_BOUNDS: dict = {}


@nb.njit(nogil=True, cache=config.NUMBA_CACHE)
def _wait_done(ctr, want, spins):
    """Spin (GIL released) until ``want`` kernel calls have marked ``ctr`` done, or ``spins``
    polls have passed; True if they all did."""
    for _ in range(spins):
        if load_done(ctr) >= want:
            return True
    return load_done(ctr) >= want


@nb.njit(nogil=True, cache=config.NUMBA_CACHE)
def _wait_job(sig, seen, slot, spins):
    """A worker's wait for work: first record (``sig[4 + slot] = seen``) that it is back here,
    GIL released, after job ``seen``; then spin until a newer job is posted on ``sig`` AND
    the caller's own kernel call has claimed a block (so the caller has released the GIL,
    which the worker then takes without waiting), or ``spins`` polls have passed."""
    store_at(sig, 4 + slot, seen)
    for _ in range(spins):
        if load_posted(sig) != seen and load_claims(sig) >= 1:
            return True
    return False


@nb.njit(nogil=True, cache=config.NUMBA_CACHE)
def _wait_back(sig, num, nw, spins):
    """The caller's wait (GIL released) until workers ``0 .. nw-1`` are all back in
    ``_wait_job`` after job ``num`` (so their kernel calls are done and none of them still
    needs the GIL), or ``spins`` polls have passed; True if they are."""
    for _ in range(spins):
        back = True
        for w in range(nw):
            back &= load_at(sig, 4 + w) == num
        if back:
            return True
    return False


@nb.njit(nogil=True, cache=config.NUMBA_CACHE)
def _mark_done(ctr):
    mark_done(ctr)


_SPINS = 1 << 17  # ~0.1-0.3 ms of polling, then the caller sleeps between polls
_IDLE_SPINS = 1 << 20  # a worker polls ~1-3 ms for the next job before it sleeps
# the caller polls ~2-5 ms for its workers to finish before it sleeps between polls: a
# sleeping caller wakes needing the GIL, which a worker may hold (a worker's wait after
# sleep(20 us) took ~1 ms on the Zen 1 machines)
_BACK_SPINS = 1 << 21


class _Pool:
    """Worker threads that run their slots of each job posted by ``_parallel``.

    Between jobs a worker spins for a while with the GIL released (``_wait_job``), then sleeps
    on a condition. Waking a sleeping thread and handing it the GIL costs ~50-100 us on these
    machines: with ``concurrent.futures`` that was paid on every call, ~10 % of a 64k x 10
    batch. A spinning worker sees the next job at once and takes the GIL only once the
    caller's kernel has started, so neither waits for the other. One job at a time: a second
    Python thread calling while a job runs computes on its own thread (``try_run``).

    Whatever happens to the caller (an error, KeyboardInterrupt while it waits), the pool is
    released only when no worker is still running its job: a worker reads a job and records
    that it took it under the GIL, and the caller cancels the job under the GIL, then waits
    for the workers that took it (``_settle``).

    Stream jobs (``try_job``, see ``_run_job``) are posted in compiled code: a worker runs a
    stream's jobs without leaving it, and returns to this loop for any other job or after
    ``_IDLE_SPINS`` polls without one. Their caller waits until every worker of the job is
    back, whatever happens (a worker that did not take a job yet takes it, claims no rows
    once the caller's share is done, and reports back)."""

    def __init__(self):
        # [0] claims, [1] done, [2] posted job number, [3] a worker's stream job failed,
        # [4 + w] last job worker w is back from
        self.sig = np.zeros(4 + max(1, nb.config.NUMBA_NUM_THREADS), dtype=np.int64)
        self.mbox = np.zeros(_MB_SIZE, dtype=np.int64)  # a stream job's batch (_run_job)
        # (number, kernel, args, bounds, workers in it); a stream job: (number, None,
        # _JobArgs, None, workers in it)
        self.job = (0, None, None, None, 0)
        self.error = None
        self.lock = threading.Lock()
        self.cond = threading.Condition()
        self.sleeping = 0
        self.asleep = []  # per worker: waiting on ``cond`` (not spinning, not working)
        self.last = 0.0  # perf_counter() when the last call of _parallel on T > 1 ended
        self.threads = []
        self.taken = []  # per worker: the number of the job it last took ...
        self.finished = []  # ... and of the last one it finished

    def _grow(self, n):
        while len(self.threads) < n:
            slot = len(self.threads)
            self.taken.append(0)
            self.finished.append(0)
            self.asleep.append(False)
            t = threading.Thread(target=self._work, args=(slot,), daemon=True,
                                 name=f"fastxent-{slot}")
            t.start()
            self.threads.append(t)

    def _work(self, slot):
        sig, seen, idle = self.sig, 0, False
        while True:
            if idle or not _wait_job(sig, seen, slot, _IDLE_SPINS):
                with self.cond:
                    self.sleeping += 1
                    self.asleep[slot] = True
                    # the job number the caller set before it looked for sleepers (a stream
                    # job is posted on sig[2] only later, in compiled code)
                    while self.job[0] == seen:
                        self.cond.wait()
                    self.asleep[slot] = False
                    self.sleeping -= 1
                _wait_job(sig, seen, slot, _SPINS)  # let the caller's kernel start first
            # the job as posted (its number may be ahead of sig[2]: take each number once).
            # Its arrays are bound only while this worker runs it: a worker that skips a job
            # (one that wants fewer workers than the pool has) must not keep the caller's
            # arrays alive until the next job
            idle = False
            job = self.job
            num, nw = job[0], job[4]
            if num == seen or slot >= nw:
                seen = num
                del job
                continue
            if job[1] is None:  # a stream job: run it and the stream's next ones compiled
                ja = job[2]
                del job
                seen, idle = self._work_stream(ja, slot, seen)
                del ja
                continue
            seen = num
            self.taken[slot] = num
            kernel, args, bounds = job[1], job[2], job[3]
            del job
            try:
                kernel(*args, slot, sig, bounds)
            except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
                self.error = exc
                _mark_done(sig)
            finally:
                self.finished[slot] = num
                del kernel, args, bounds

    def _work_stream(self, ja, slot, seen):
        """Run stream jobs with ``ja``'s fixed arguments from the one after ``seen`` until
        another job is posted or none comes for a while; (last job seen, whether idle)."""
        sig = self.sig
        try:
            seen, idle = ja.fn((0, ja.token, seen, 0, slot, _IDLE_SPINS), ja.head, ja.tail,
                               ja.bufs, self.mbox, sig, ja.red)
            return seen, bool(idle)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
            self.error = exc
            num = int(sig[2])
            sig[3] = 1  # the caller must not add this job's state
            sig[4 + slot] = num
            return num, False

    def awake(self, nw) -> bool:
        """Whether workers ``0 .. nw-1`` exist and are not asleep (a hint: read unlocked)."""
        return len(self.threads) >= nw and not any(self.asleep[:nw])

    def alone(self, n, C, T) -> bool:
        """Whether a call of n x C elements on T threads runs on the caller's thread only:
        under ``_WAKE`` elements, none on several threads in the last ``_LOOP_GAP`` seconds,
        and the workers asleep (waking them costs more than they gain)."""
        return (n * C < _WAKE and time.perf_counter() - self.last > _LOOP_GAP
                and not self.awake(T - 1))

    def try_run(self, kernel, args, T, bounds) -> bool:
        """Run the job on the caller's thread and T - 1 workers; False (nothing run) if
        another Python thread's job holds the pool."""
        if not self.lock.acquire(blocking=False):
            return False
        num = 0
        complete = False
        try:
            self._grow(T - 1)
            sig = self.sig
            num = int(sig[2]) + 1
            sig[0] = 0
            sig[1] = 0
            self.error = None
            self.job = (num, kernel, args, bounds, T - 1)
            self.mbox[_MB_TOKEN] = 0  # not a stream job: workers in one return to Python
            sig[2] = num
            if self.sleeping:
                with self.cond:
                    self.cond.notify_all()
            kernel(*args, T - 1, sig, bounds)
            self._join(num, T)
            complete = True
            if self.error is not None:
                raise self.error
            return True
        finally:
            self._settle(num, complete)
            self.lock.release()

    def try_job(self, ja, z, y, n, bounds, T, red):
        """Run a stream job (``ja``'s fixed arguments, the batch ``z``, ``y``, ``n`` rows
        in blocks ``bounds``) on the caller's thread and T - 1 workers and add its state
        into the stream's arrays (``red``: ``_reduce_into``'s arguments after the state
        slices); the first bad row or -1, or None (nothing run) if another Python thread's
        job holds the pool."""
        if not self.lock.acquire(blocking=False):
            return None
        sig = self.sig
        num = int(sig[2]) + 1
        complete = False
        try:
            if len(self.threads) < T - 1:
                self._grow(T - 1)
            self.error = None
            self.job = (num, None, ja, None, T - 1)
            if self.sleeping:
                with self.cond:
                    self.cond.notify_all()
            fb = ja.fn((1, ja.token, 0, n, T - 1, _BACK_SPINS), ja.head, ja.tail,
                       (z, y, bounds), self.mbox, sig, red)[0]
            if fb == -2:  # the workers were not back (or one failed): wait here
                self._join(num, T)
                if self.error is not None:
                    raise self.error
                fb = _reduce_into(ja.tail[-4], ja.tail[-2], ja.tail[-1], *red)
            complete = True
            self.last = time.perf_counter()
            return fb
        finally:
            self.job = (num, None, None, None, 0)
            if not complete and int(sig[2]) != num:  # failed before it was posted (dispatch)
                self.mbox[_MB_TOKEN] = 0
                sig[2] = num  # posted empty, so that job numbers stay in step
            elif not complete:  # the workers read the batch's addresses until they are back
                self._join(num, T, settle=True)
            self.lock.release()

    def _join(self, num, T, settle=False):
        """Until workers ``0 .. T-2`` are back from job ``num``; ``settle``: without
        raising, and not for dead workers."""
        sig = self.sig
        while not _wait_back(sig, num, T - 1, _BACK_SPINS):
            alive = [t.is_alive() for t in self.threads[:T - 1]]
            if not all(alive):
                if not settle:
                    raise RuntimeError("a fastxent worker thread died; the call is incomplete")
                if all(int(sig[4 + w]) == num for w in range(T - 1) if alive[w]):
                    return
            time.sleep(20e-6)

    def _settle(self, num, complete):
        """Cancel job ``num`` for the workers that have not taken it (and drop its references
        to the arrays); unless all its kernel calls are done (``complete``), wait for the
        workers that took it."""
        self.job = (num, None, None, None, 0)
        if complete:
            return
        for slot in range(len(self.threads)):
            while self.taken[slot] == num and self.finished[slot] != num:
                time.sleep(20e-6)


_POOL = None


def _forget_pool_after_fork():
    """In a forked child the pool's worker threads do not exist (fork copies only the calling
    thread): a call would wait forever for their share of the blocks. The child starts its own
    pool on its first multi-threaded call."""
    global _POOL
    _POOL = None


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def _parallel(kernel, args, T, n, C):
    """Run ``kernel(*args, slot, ctr, bounds)`` for slot in range(T), the caller's thread
    taking the last slot and the pool's workers the others: every call claims the next block
    ``bounds[k]:bounds[k+1]`` (k from the shared counter ``ctr[0]``) until none is left, adds
    it into its own state slice ``slot`` and marks itself done on ``ctr[1]``. Dynamic, so a
    worker that starts late or runs on a slower core does not hold the call up; the result
    does not depend on which thread took which block (exact integer sums, per-row outputs),
    nor on whether the workers took part at all (another Python thread's job holding the
    pool, or a call under ``_WAKE`` elements finding them asleep: the caller's call claims
    every block itself)."""
    bounds = _block_bounds(n, C, T)
    if T == 1:
        kernel(*args, 0, np.zeros(3, dtype=np.int64), bounds)
        return
    pool = _pool()
    if pool.alone(n, C, T) or not pool.try_run(kernel, args, T, bounds):
        kernel(*args, T - 1, np.zeros(3, dtype=np.int64), bounds)
    pool.last = time.perf_counter()


def _pool() -> _Pool:
    """The engine's pool of worker threads, made on first use."""
    global _POOL
    if _POOL is None:
        _POOL = _Pool()
    return _POOL


# ---------------------------------------------------------------- stream jobs (GIL-free workers)
#
# A stream of batches with one launch plan (``fx.Evaluator``'s fast path) posts each batch as
# a "stream job": the kernel's fixed arguments (``head``, ``tail``: options, weights, the
# state slices) are handed to each worker once, and each batch only as addresses in the
# pool's mailbox. A worker then stays in compiled code between batches (``_run_job``): it
# sees a batch as soon as it is posted and runs its share without the GIL, instead of
# taking the GIL and dispatching the kernel's ~30 arguments after the caller's own call
# has started (~10 us on each side of every 64k x 10 batch). The caller's side posts, runs
# its slot, waits for the workers and adds the state into the stream's arrays in the same
# compiled call.

# the mailbox: the job's token (which fixed arguments), workers in it, then the batch
_MB_TOKEN, _MB_NW, _MB_Z, _MB_NZ, _MB_Y, _MB_NY, _MB_N, _MB_B, _MB_NB = range(9)
_MB_SIZE = 16


@nb.njit(nogil=True, inline="always")  # inlined: a dispatcher argument is not cacheable
def _run_job(kernel, ctl, head, tail, bufs, mbox, sig, red):
    """One side of a stream job of ``kernel``, called as ``kernel(z, y, *head, n, *tail,
    slot, sig, bounds)``; ``ctl`` = (post, token, seen, n, slot, spins), ``bufs`` = (z, y,
    bounds), ``red`` = ``_reduce_into``'s arguments after the state slices.

    post = 1 (the caller; slot = T - 1 = the workers in the job): write the batch into
    ``mbox``, post job ``sig[2] + 1``, run the caller's slot, poll ``spins`` times for the
    workers to be back (``sig[4 + w]``), then add the state into the stream's arrays;
    returns (first bad row or -1, 0), or (-2, 0) if the workers are not back yet (or one
    failed).

    post = 0 (a worker, ``seen`` = the last job it was back from): run every job posted
    with this ``token`` (its slot unless slot >= the job's workers), reporting each back;
    returns (seen, idle): idle = 1 after ``spins`` polls without a job, 0 when a job of
    another token was posted (not taken: the worker's Python reads it from the pool)."""
    post, token, seen, n, slot, spins = ctl
    z, y, bounds = bufs
    if post:
        red[0][0] = 1  # the state slices are dirty until _reduce_into has read them
        num = load_posted(sig) + 1
        mbox[_MB_TOKEN] = token
        mbox[_MB_NW] = slot
        mbox[_MB_Z] = address_of(z)
        mbox[_MB_NZ] = z.shape[0]
        mbox[_MB_Y] = address_of(y)
        mbox[_MB_NY] = y.shape[0]
        mbox[_MB_N] = n
        mbox[_MB_B] = address_of(bounds)
        mbox[_MB_NB] = bounds.shape[0]
        sig[0] = 0
        sig[1] = 0
        sig[3] = 0
        store_at(sig, 2, num)  # release: the mailbox and the counters before the number
        # the same kernel build as the workers': C-contiguous writable views
        kernel(nb.carray(pointer_like(address_of(z), z), z.shape[0]),
               nb.carray(pointer_like(address_of(y), y), y.shape[0]),
               *head, n, *tail, slot, sig, bounds)
        for _ in range(spins):
            back = True
            for w in range(slot):
                back &= load_at(sig, 4 + w) == num
            if back:
                if load_at(sig, 3) != 0:
                    return -2, 0  # a worker failed: its error is raised, nothing added
                counts_t, limbs_t, first_bad_t = tail[-4], tail[-2], tail[-1]
                return _reduce_into(counts_t, limbs_t, first_bad_t, *red), 0
        return -2, 0
    while True:
        polls = 0
        while load_posted(sig) == seen:
            polls += 1
            if polls >= spins:
                return seen, 1
        num = load_posted(sig)
        tok = load_at(mbox, _MB_TOKEN)
        nw = load_at(mbox, _MB_NW)
        zb = nb.carray(pointer_like(load_at(mbox, _MB_Z), z), load_at(mbox, _MB_NZ))
        yb = nb.carray(pointer_like(load_at(mbox, _MB_Y), y), load_at(mbox, _MB_NY))
        bb = nb.carray(pointer_like(load_at(mbox, _MB_B), bounds), load_at(mbox, _MB_NB))
        m = load_at(mbox, _MB_N)
        if load_posted(sig) != num:
            continue  # a newer job was posted while the mailbox was read: read it again
        if tok != token:
            return seen, 0
        seen = num
        if slot < nw:
            kernel(zb, yb, *head, m, *tail, slot, sig, bb)
        store_at(sig, 4 + slot, num)


jit_job = nb.njit(nogil=True, cache=config.NUMBA_CACHE)


@jit_job
def _job_softmax_sparse(ctl, head, tail, bufs, mbox, sig, red):
    return _run_job(_softmax_sparse, ctl, head, tail, bufs, mbox, sig, red)


@jit_job
def _job_softmax_sparse_plain(ctl, head, tail, bufs, mbox, sig, red):
    return _run_job(_softmax_sparse_plain, ctl, head, tail, bufs, mbox, sig, red)


@jit_job
def _job_softmax_sparse_small(ctl, head, tail, bufs, mbox, sig, red):
    return _run_job(_softmax_sparse_small, ctl, head, tail, bufs, mbox, sig, red)


@jit_job
def _job_sigmoid(ctl, head, tail, bufs, mbox, sig, red):
    return _run_job(_sigmoid, ctl, head, tail, bufs, mbox, sig, red)


@jit_job
def _job_sigmoid_plain(ctl, head, tail, bufs, mbox, sig, red):
    return _run_job(_sigmoid_plain, ctl, head, tail, bufs, mbox, sig, red)


@jit_job
def _job_sigmoid_small(ctl, head, tail, bufs, mbox, sig, red):
    return _run_job(_sigmoid_small, ctl, head, tail, bufs, mbox, sig, red)


# each kernel a stream plan launches and the compiled job that runs it (a job must name its
# kernel in its body: a kernel passed in as an argument is not cached on disk)
_JOBS = {_softmax_sparse: _job_softmax_sparse, _softmax_sparse_plain: _job_softmax_sparse_plain,
         _softmax_sparse_small: _job_softmax_sparse_small,
         _sigmoid: _job_sigmoid, _sigmoid_plain: _job_sigmoid_plain,
         _sigmoid_small: _job_sigmoid_small}


def _parallel_job(plan, z, y, n, C, T, st, red):
    """``plan``'s kernel on a contiguous batch as a stream job of the pool (``_run_job``),
    its state added into the stream's arrays (``red``); the first bad row or -1, or None
    (nothing run) where ``_parallel`` would run it on the caller's thread alone."""
    pool = _pool()
    if pool.alone(n, C, T):
        return None
    return pool.try_job(plan.job_args(T, st, z, y, C), z, y, n, _block_bounds(n, C, T), T, red)


def _empty_like(a):
    """A zero-length 1-D array of ``a``'s dtype and writeability (the same array type to
    Numba), which, unlike ``a[:0]``, does not keep ``a``'s memory alive."""
    e = np.empty(0, dtype=a.dtype)
    e.flags.writeable = a.flags.writeable
    return e


class _JobArgs:
    """A stream job's fixed arguments for ``_run_job``: its compiled job ``fn``, a
    ``token`` naming them, the kernel's arguments before and after the row count (``head``,
    ``tail``), and zero-length stand-ins of the batch's arrays and of the reduction's
    arguments with the types of the caller's (``bufs``, ``red``: one build of ``fn``)."""

    __slots__ = ("fn", "token", "head", "tail", "bufs", "red", "st", "key")


class _Launch:
    """What a stream's last batch ran as a stream job with (``_Plan.add_into``): a next
    batch of the same rows, layout and label dtype, on the same thread with the same thread
    count set, and into the same arrays, runs the same job without the launcher's Python
    (each step costs 0.5-3 us with the caches cold after a 64k x 10 batch)."""

    __slots__ = ("n", "C", "zflags", "yflags", "ydt", "zview", "yview", "dense", "thread",
                 "threads", "acc_counts", "acc_exact", "validate", "T", "dirty", "ja", "bounds",
                 "red")

    def __init__(self, plan, logits, labels, T, st, red):
        self.n, self.C = logits.shape
        self.zflags = logits.flags.num & _LAYOUT_FLAGS
        self.yflags = labels.flags.num & _LAYOUT_FLAGS
        self.ydt, self.dense = labels.dtype, plan.dense
        self.zview = _view_dtype(logits.dtype)
        self.yview = _view_dtype(labels.dtype) if plan.dense else None
        self.thread = threading.get_ident()
        self.threads = _num_threads()  # the thread count set then (numba.set_num_threads)
        self.dirty, self.acc_counts, self.acc_exact, self.validate = red
        self.T, self.red = T, red
        self.bounds = _block_bounds(self.n, self.C, T)
        self.ja = plan.ja

    def run(self, logits, labels):
        """The batch as the stream job; the first bad row or -1, or None (nothing run)."""
        pool = _POOL
        if pool is None or pool.alone(self.n, self.C, self.T):
            return None  # (no pool: a forked child, before its first call on threads)
        z = (logits if self.zview is None else logits.view(self.zview)).reshape(-1)
        y = labels
        if self.dense:
            y = (labels if self.yview is None else labels.view(self.yview)).reshape(-1)
        return pool.try_job(self.ja, z, y, self.n, self.bounds, self.T, self.red)


# the array flags a batch's stream job depends on: C-contiguous, aligned, writeable
_LAYOUT_FLAGS = 0x1 | 0x100 | 0x400
_TOKENS = itertools.count(1)
_ROWS_HERE = object()  # where the row count goes in a plan's kernel arguments


_SCRATCH = threading.local()


def _scratch(T: int, nq: int, nc: int):
    """State slices for one call, reused by each Python thread: (T, nc) counts, (T, nq,
    NBINS) exponent bins, (T, nq, NLIMBS) limbs, (T,) first-bad rows and a one-element
    ``dirty`` flag. All of them are clear between calls: every kernel call drains and clears
    the bins it used (``_drain_bins``), and the call's reader (``_reduce_into``,
    ``_reduce_slots``) clears the rest and the flag in the same compiled call. A call that
    never got to its reader (an error, an interrupt) leaves the flag set, and the next call
    clears the slices here. Clearing or freshly allocating the 120 KB of bins per slot cost
    ~60 us per call with cold caches, and filling the others ~3 us: the overhead of
    streaming 64k-row batches."""
    cache = getattr(_SCRATCH, "bufs", None)
    if cache is None:
        cache = _SCRATCH.bufs = {}
    key = (T, nq, nc)
    buf = cache.get(key)
    if buf is None:
        if len(cache) >= 8:
            cache.clear()
        buf = cache[key] = (np.zeros((T, nc), dtype=np.int64),
                            np.zeros((T, nq, NBINS), dtype=np.int64),
                            np.zeros((T, nq, S.NLIMBS), dtype=np.int64),
                            np.full(T, -1, dtype=np.int64),
                            np.zeros(1, dtype=np.int8))
    elif buf[4][0]:
        buf[0].fill(0)
        buf[2].fill(0)
        buf[3].fill(-1)
    buf[4][0] = 1
    return buf


def _drop_scratch(bins):
    """Forget this thread's scratch holding ``bins`` (a call failed part-way: its bins may not
    be clear)."""
    cache = getattr(_SCRATCH, "bufs", None)
    if cache is not None:
        for k in [k for k, v in cache.items() if v[1] is bins]:
            del cache[k]


def _finish(counts_t, limbs_t, first_bad_t, dirty, rows) -> Partial:
    counts, limbs, fb = _reduce_slots(counts_t, limbs_t, first_bad_t, dirty)
    return Partial(counts, limbs, *rows, first_bad=int(fb))


def _run_blocks(n, arrays, launch, counts, bins, limbs, first_bad):
    """Call ``launch(r0, r1, bufs, cnt, bn, lb, fb)`` over row blocks, every 2-D array in
    ``arrays`` turned into a (buffer, row-stride) pair. When all arrays are readable in place
    there is one block and the kernels write the call's state slices directly; otherwise (a
    strided class axis) each block is copied, run into fresh slices, and added in (exact
    integers; the summed limbs are carried by ``_finish``)."""
    views = [_row_buffer(a) for a in arrays]
    try:
        if all(v is not None for v in views):
            launch(0, n, views, counts, bins, limbs, first_bad)
            return
        row_bytes = max(a.shape[1] * a.itemsize for a in arrays)
        step = _block_rows(row_bytes)
        for r0 in range(0, n, step):
            r1 = min(n, r0 + step)
            bufs = [_row_buffer(np.ascontiguousarray(a[r0:r1])) for a in arrays]
            cnt, lb = np.zeros_like(counts), np.zeros_like(limbs)
            fb = np.full_like(first_bad, -1)
            launch(r0, r1, bufs, cnt, bins, lb, fb)
            del bufs  # release this block before the next one is copied
            counts[0] += cnt.sum(axis=0)
            limbs[0] += lb.sum(axis=0)
            bad = fb[fb >= 0]
            if bad.size and first_bad[0] < 0:
                first_bad[0] = r0 + bad.min()
    except BaseException:
        _drop_scratch(bins)
        raise


def _block_rows(row_bytes: int) -> int:
    # config's values are read at call time, so that tests can change them
    return max(1, min(config.CPU_BLOCK_ROWS, config.CPU_BLOCK_BYTES // max(row_bytes, 1)))


class _Plan:
    """What one call launches, built from its options: the kernel, a function that lays out
    its arguments given one block's arrays, and the shapes of its state and per-row outputs.
    ``softmax_xent`` / ``sigmoid_xent`` build one per call (``call``); a stream of batches
    with the same options (``fx.Evaluator``'s fast path) builds one for the stream and feeds
    each contiguous batch straight into its state (``add_into``)."""

    __slots__ = ("kernel", "args", "nq", "nc", "dense", "want_rows", "rdt", "hits", "K",
                 "no_rows", "job", "ja", "last")

    def __init__(self, kernel, args, nq, nc, dense, want_rows, rdt, hits, K):
        self.kernel, self.args, self.nq, self.nc = kernel, args, nq, nc
        self.dense, self.want_rows, self.rdt, self.hits, self.K = (
            dense, want_rows, rdt, hits, K)
        self.no_rows = self._rows(0)  # the kernels' row outputs when none are wanted
        self.job = _JOBS.get(kernel)  # its compiled stream job (add_into), if it has one
        self.ja = None  # the last _JobArgs built
        self.last = None  # the last batch run as a stream job (_Launch)

    def _rows(self, m):
        """Per-row outputs of m rows: loss, correct, then (softmax) top-k hits or (sigmoid)
        the share of correct elements."""
        third = (np.empty((m, self.K), np.bool_) if self.hits else np.empty(m, self.rdt))
        return np.empty(m, self.rdt), np.empty(m, np.bool_), third

    def call(self, logits, labels, sample_weight) -> Partial:
        n, C = logits.shape
        z = _kernel_view(logits)
        T = _threads(n, C)
        counts, bins, limbs, first_bad, dirty = _scratch(T, self.nq, self.nc)
        sw = _f64_or_empty(sample_weight)
        want_rows = self.want_rows
        rows = self._rows(n) if want_rows else self.no_rows
        arrays = [z, _kernel_view(labels)] if self.dense else [z]

        def launch(r0, r1, bufs, cnt, bn, lb, fb):
            sl = slice(r0, r1)
            rw = tuple(r[sl] for r in rows) if want_rows else rows
            swb = sw[sl] if sw.size else sw
            if self.dense:
                (zb, rs), (tb, trs) = bufs
            else:
                ((zb, rs),) = bufs
                tb, trs = np.ascontiguousarray(labels[sl]), 0
                if tb.dtype not in (np.int32, np.int64):
                    tb = tb.astype(np.int64)
            _parallel(self.kernel, self.args(zb, rs, tb, trs, swb, r1 - r0, rw,
                                             (cnt, bn, lb, fb)), T, r1 - r0, C)

        if n and C:
            _run_blocks(n, arrays, launch, counts, bins, limbs, first_bad)
        out = (None, None, None, None)
        if want_rows:
            out = (rows[0], rows[1], None, rows[2]) if self.hits else (*rows, None)
        return _finish(counts, limbs, first_bad, dirty, out)

    def add_into(self, logits, labels, acc_counts, acc_exact, validate):
        """Run a C-contiguous batch (labels: contiguous int32/int64, or the dense targets'
        contiguous rows) and add its state into ``acc_counts`` / ``acc_exact`` (raw limbs),
        unless ``validate`` and it has a bad label; the first bad row or -1. None (nothing
        run) for any other layout. No per-row outputs, no sample weights."""
        n, C = logits.shape
        m = self.last
        if (m is not None and m.n == n and m.C == C and m.acc_counts is acc_counts
                and m.acc_exact is acc_exact and m.validate == validate
                and logits.flags.num & _LAYOUT_FLAGS == m.zflags
                and labels.flags.num & _LAYOUT_FLAGS == m.yflags and labels.dtype == m.ydt
                and m.thread == threading.get_ident() and not m.dirty[0]
                and _num_threads() == m.threads):
            try:
                fb = m.run(logits, labels)
            except BaseException:
                self.last = None
                _drop_scratch(m.ja.st[1])
                raise
            if fb is not None:
                return fb
        if not logits.flags.c_contiguous or not labels.flags.c_contiguous:
            return None
        if self.dense:
            tb, trs = _kernel_view(labels).reshape(-1), C
        elif labels.dtype == np.int64 or labels.dtype == np.int32:
            tb, trs = labels, 0
        else:
            return None
        T = _threads(n, C)
        st = _scratch(T, self.nq, self.nc)
        if n and C:
            z = _kernel_view(logits).reshape(-1)
            try:
                if T > 1 and self.job is not None:
                    red = (st[4], acc_counts, acc_exact, validate)
                    fb = _parallel_job(self, z, tb, n, C, T, st, red)
                    if fb is not None:
                        self.last = _Launch(self, logits, labels, T, st, red)
                        return fb
                _parallel(self.kernel, self.args(z, C, tb, trs, _NO_WEIGHTS, n, self.no_rows,
                                                 st[:4]), T, n, C)
            except BaseException:
                self.last = None
                _drop_scratch(st[1])
                raise
        return _reduce_into(st[0], st[2], st[3], st[4], acc_counts, acc_exact, validate)

    def job_args(self, T, st, z, y, C) -> _JobArgs:
        """The stream job's fixed arguments for T threads, this thread's state slices
        ``st`` and a batch like (``z``, ``y``) of C classes (flat and contiguous, as
        ``add_into`` passes them)."""
        key = (T, C, z.flags.writeable, y.dtype, y.flags.writeable)
        ja = self.ja
        if ja is not None and ja.st is st and ja.key == key:
            return ja
        ja = _JobArgs()
        ja.fn, ja.token, ja.st, ja.key = self.job, next(_TOKENS), st, key
        z0, y0 = _empty_like(z), _empty_like(y)
        args = self.args(z0, C, y0, C if self.dense else 0, _NO_WEIGHTS, _ROWS_HERE,
                         self.no_rows, st[:4])
        at = next(i for i, a in enumerate(args) if a is _ROWS_HERE)
        ja.head, ja.tail = args[2:at], args[at + 1:]
        ja.bufs = (z0, y0, np.zeros(0, dtype=np.int64))
        ja.red = (st[4], np.zeros(self.nc, dtype=np.int64),
                  np.zeros((self.nq, S.NLIMBS), dtype=np.int64), False)
        self.ja = ja
        return ja


def _softmax_plan(opts: SoftmaxOptions, C: int, dtype) -> _Plan:
    one = _compute_one(dtype, C)
    K = len(opts.ks)
    has_cw = opts.class_weight is not None
    cw64 = _f64_or_empty(opts.class_weight) if has_cw else _ones_or(None, C, np.float64(1.0))
    cw = _ones_or(opts.class_weight, C, one)
    ks = np.asarray(opts.ks, dtype=np.int64)
    # tile kernels: dense labels without class weights, top-k or smoothing; sparse labels
    # with smoothing only from logits
    smooth_ok = opts.label_smoothing == 0.0 or (opts.from_logits and not opts.dense)
    small = (C <= SMALL_C and smooth_ok and (not opts.cw_inside or not has_cw)
             and not (opts.dense and (has_cw or K > 0)))
    ls, eps, thr, tol = (float(opts.label_smoothing), float(opts.eps), float(opts.thr),
                         _sum1_tol())
    fl, rn, tie, wr, cwi = (opts.from_logits, opts.renormalize, opts.topk_any_tie,
                            opts.want_rows, opts.cw_inside)
    ign = np.int64(opts.ignore_index if opts.ignore_index is not None else 0)
    has_ign = opts.ignore_index is not None
    if opts.dense and small:
        def args(zb, rs, tb, trs, swb, m, rows, st):
            return (zb, tb, swb, cw64, m, C, rs, trs, one, swb.size > 0, fl, rn, eps, thr, tol,
                    wr, rows[0], rows[1], *st)
        kernel = _softmax_dense_small
    elif opts.dense:
        def args(zb, rs, tb, trs, swb, m, rows, st):
            return (zb, tb, swb, cw64, cw, m, C, rs, trs, one, swb.size > 0, has_cw, cwi, ls,
                    fl, rn, eps, ks, tie, thr, tol, wr, *rows, *st)
        kernel = _softmax_dense
    elif small:
        def args(zb, rs, yb, trs, swb, m, rows, st):
            return (zb, yb, swb, cw64, m, C, rs, one, ign, has_ign, swb.size > 0, has_cw, ls,
                    fl, rn, eps, ks, tie, wr, *rows, *st)
        kernel = _softmax_sparse_small
    elif (SPARSE_PLAIN and fl and ls == 0.0 and not has_cw and not wr
          and opts.sample_weight is None):
        def args(zb, rs, yb, trs, swb, m, rows, st):
            return (zb, yb, cw64, m, C, rs, one, ign, has_ign, eps, ks, tie, *st)
        kernel = _softmax_sparse_plain
    else:
        def args(zb, rs, yb, trs, swb, m, rows, st):
            return (zb, yb, swb, cw64, cw, m, C, rs, one, ign, has_ign, swb.size > 0, has_cw,
                    cwi, ls, fl, rn, eps, ks, tie, wr, *rows, *st)
        kernel = _softmax_sparse
    rdt = np.float64 if dtype == np.float64 else np.float32
    return _Plan(kernel, args, S.NX + K, S.NCOUNTS + K, opts.dense, wr, rdt, True, K)


def _sigmoid_plan(opts: SigmoidOptions, C: int, dtype) -> _Plan:
    one = _compute_one(dtype, C)
    pw = _ones_or(opts.pos_weight, C, one)
    colw = _ones_or(opts.col_weight, C, one)
    ls, eps, floor, thr, tol = (float(opts.label_smoothing), float(opts.eps),
                                float(opts.log_floor), float(opts.thr), _sum1_tol())
    fl, cat, wr = opts.from_logits, opts.want_cat, opts.want_rows
    plain = opts.pos_weight is None and opts.col_weight is None
    lean = C > SMALL_C and fl and plain and opts.sample_weight is None and not wr
    if lean:
        def args(zb, rs, tb, trs, swb, m, rows, st):
            return (zb, tb, pw, colw, m, C, rs, trs, one, ls, eps, floor, thr, cat, tol, *st)
        kernel = _sigmoid_plain
    else:
        def args(zb, rs, tb, trs, swb, m, rows, st):
            return (zb, tb, swb, pw, colw, m, C, rs, trs, one, swb.size > 0, plain, ls, fl, eps,
                    floor, thr, cat, tol, wr, *rows, *st)
        kernel = _sigmoid_small if C <= SMALL_C else _sigmoid
    rdt = np.float64 if dtype == np.float64 else np.float32
    return _Plan(kernel, args, S.NX, S.NCOUNTS, True, wr, rdt, False, 0)


def stream_plan(kind: str, opts, C: int, dtype) -> _Plan:
    """A launch plan for a stream of batches with the same options, C and logits dtype
    (``kind`` "softmax" or "sigmoid"); see ``_Plan.add_into``."""
    return (_softmax_plan if kind == "softmax" else _sigmoid_plan)(opts, C, np.dtype(dtype))


def softmax_xent(logits: np.ndarray, labels: np.ndarray, opts: SoftmaxOptions) -> Partial:
    """Launch the sparse or dense softmax kernel over ``logits`` (N, C); see module docstring."""
    plan = _plan(_softmax_plan, opts, logits.shape[1], logits.dtype)
    return plan.call(logits, labels, opts.sample_weight)


def sigmoid_xent(logits: np.ndarray, targets: np.ndarray, opts: SigmoidOptions) -> Partial:
    """Launch the sigmoid kernel over ``logits`` / ``targets`` (N, C); see module docstring."""
    plan = _plan(_sigmoid_plan, opts, logits.shape[1], logits.dtype)
    return plan.call(logits, targets, opts.sample_weight)


_PLANS: dict = {}


def _plan(build, opts, C: int, dtype) -> _Plan:
    """``build(opts, C, dtype)``, kept for options that hold no weight arrays (hashable: the
    usual call): a plan is read-only once built, and building one took ~9 us of a 256-row
    call's ~90. Keyed on the options, C, dtype and every global the builders read
    (``plan_globals``: tests change SMALL_C and SPARSE_PLAIN to compare kernels)."""
    try:
        key = (build, opts, C, dtype, plan_globals())
        plan = _PLANS.get(key)
    except TypeError:  # an option holds an array: not hashable
        return build(opts, C, dtype)
    if plan is None:
        plan = build(opts, C, dtype)
        if len(_PLANS) >= 64:
            _PLANS.clear()
        _PLANS[key] = plan
    return plan


def _sum1_tol() -> float:
    return float(config.SUM_TO_ONE_TOL)


def plan_globals() -> tuple:
    """What a launch plan depends on besides its options, C and dtype: the config's tolerance
    and the module globals that choose a kernel (tests change them). A plan kept across
    calls (``_plan``, the one-shot fast path of ``api``) is valid while these are equal."""
    return _sum1_tol(), SMALL_C, SPARSE_PLAIN


# ============================================================================ engine protocol


def asarray(x):
    """A host array (NumPy, torch CPU tensor, JAX CPU array, list...) as NumPy, no copy."""
    from .._dispatch import to_numpy

    return to_numpy(x)


def wrap(arr, like):
    """A NumPy result in the library of ``like`` (the caller's logits)."""
    if isinstance(like, np.ndarray):  # the common case, without the import and the lookup
        return arr
    from .._dispatch import from_numpy_like

    return from_numpy_like(arr, like)


def call_context(like):
    return contextlib.nullcontext()


def first_bad(partial: Partial) -> int:
    return int(partial.first_bad)


def finalize(state: S.State, reduction: str) -> dict:
    """Reduced values as 0-d NumPy arrays, computed exactly from the integer state."""
    sc = state.scalars()
    f = lambda v: np.asarray(v, dtype=np.float64)  # noqa: E731
    return {
        "loss": f(sc["loss_sum"] if reduction == "sum" else sc["loss_mean"]),
        "cat": f(sc["cat"]), "elem": f(sc["elem"]), "exact": f(sc["exact"]),
        "topk": [f(v) for v in sc["topk"]],
        "count": np.asarray(sc["count"], dtype=np.int64),
    }
