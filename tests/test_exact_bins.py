"""The CPU engine's exact sums: values added into exponent bins, drained into 32-bit limbs.

The bins of a quantity are read back only where their flags say they were added to, so each
case checks the drained limbs against Python's exact integer sum, and that the drain left
every bin (the flags included) zero for the next call."""

from __future__ import annotations

from fractions import Fraction

import numba as nb
import numpy as np
import pytest

from fastxent import _state as S
from fastxent.backends import SoftmaxOptions
from fastxent.backends import numba_cpu as eng


@nb.njit(cache=False)
def _add_all(bins, q_of, values, values32):
    for i in range(values.shape[0]):
        eng._bin_add(bins, q_of[i], values[i])
    banks = np.zeros((2, eng._F32_BINS), dtype=np.int64)
    for i in range(values32.shape[0]):
        eng._bin_add32(banks[i & 1], np.float64(values32[i]))
    eng._flush_banks32(bins, 0, banks)


def _exact_units(values) -> int:
    """sum(values) in units of 2**-SCALE_BITS, exactly."""
    total = sum((Fraction(float(v)) for v in values), Fraction(0))
    scaled = total * (1 << S.SCALE_BITS)
    assert scaled.denominator == 1
    return int(scaled)


def _cases():
    rng = np.random.default_rng(5)
    tiny = np.float64(5e-324)  # the smallest subnormal: bin 1
    big = np.finfo(np.float64).max  # the highest bins
    yield "losses", rng.exponential(2.0, 1000), rng.exponential(2.0, 300).astype(np.float32)
    yield "subnormal and max", np.array([tiny, big, 3 * tiny, 1.0]), np.zeros(0, np.float32)
    yield "cancelling", np.array([1.5, -1.5, 2.0**-900, -(2.0**-900)]), np.zeros(0, np.float32)
    yield "float32 banks only", np.zeros(0), np.array([1e-30, 3.0, -3.0, 1e30], np.float32)
    wide = rng.standard_normal(2000) * np.exp2(rng.integers(-1000, 1000, 2000))
    yield "all exponents, both signs", wide, (rng.standard_normal(500) * 1e20).astype(np.float32)


@pytest.mark.parametrize("name, values, values32", list(_cases()), ids=[c[0] for c in _cases()])
def test_drained_limbs_hold_the_exact_sum_and_the_bins_are_left_clear(name, values, values32):
    nq = 3
    q_of = np.arange(values.size, dtype=np.int64) % 2  # quantities 0 and 1; 2 stays unused
    bins = np.zeros((nq, eng.NBINS), dtype=np.int64)
    limbs = np.full((nq, S.NLIMBS), 7, dtype=np.int64)  # stale limbs must be overwritten
    _add_all(bins, q_of, values.astype(np.float64), values32)
    eng._drain_bins(bins, limbs)
    want = [_exact_units(list(values[q_of == 0]) + list(values32.astype(np.float64))),
            _exact_units(values[q_of == 1]), 0]
    assert [S.limbs_to_int(limbs[q]) for q in range(nq)] == want
    assert not bins.any()
    # a second call on the clear bins starts from nothing
    _add_all(bins, np.zeros(1, np.int64), np.array([0.25]), np.zeros(0, np.float32))
    eng._drain_bins(bins, limbs)
    assert [S.limbs_to_int(limbs[q]) for q in range(nq)] == [_exact_units([0.25]), 0, 0]
    assert not bins.any()


@pytest.mark.parametrize("reader", ["_reduce_slots", "_reduce_into"])
def test_a_call_cut_short_before_its_reader_leaves_nothing_for_the_next(monkeypatch, reader):
    """The state slices are cleared by the reader that consumes them; a call interrupted
    after its kernels and before that reader must not leak its counts into the next call."""
    rng = np.random.default_rng(6)
    z = rng.standard_normal((3000, 10)).astype(np.float32)
    y = rng.integers(0, 10, 3000)
    opts = SoftmaxOptions()
    plan = eng.stream_plan("softmax", opts, 10, z.dtype)

    def run():
        if reader == "_reduce_slots":
            part = eng.softmax_xent(z, y, opts)
            return part.counts, part.exact
        counts, exact = np.zeros_like(want[0]), np.zeros_like(want[1])
        assert plan.add_into(z, y, counts, exact, True) == -1
        return counts, exact

    want = (eng.softmax_xent(z, y, opts).counts, eng.softmax_xent(z, y, opts).exact)
    real = getattr(eng, reader)

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(eng, reader, interrupted)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(eng, reader, real)
    got = run()
    assert np.array_equal(got[0], want[0])
    assert np.array_equal(S.limbs_to_int(got[1][0]), S.limbs_to_int(want[1][0]))


def _tile_of(exponents, rng):
    """64 float32 values (mixed signs, some zeros) whose magnitudes take the given binades."""
    e = rng.choice(np.asarray(exponents), 64)
    v = np.ldexp(rng.uniform(1.0, 2.0, 64), e) * rng.choice([-1.0, 1.0], 64)
    v[rng.random(64) < 0.1] = 0.0
    return v.astype(np.float32)


@pytest.mark.parametrize("span,parts", [(0, 1), (23, 1), (24, 2), (47, 2), (48, 3), (71, 3),
                                        (72, 0), (100, 0)])
def test_tile_sum_splits_wide_tiles_into_exact_windows(span, parts):
    """A clean tile's loss sum is added as up to three float64 sums, each exact on its own
    window of 24 binades below the largest magnitude; a tile spanning more than 71 binades is
    refused (the per-row path). ``parts``: how many sums carry values (0: refused)."""
    rng = np.random.default_rng(span)
    top = 3
    lv = _tile_of([top - span, top, top - span // 2], rng)
    lv[0], lv[1] = np.float32(2.0**top), np.float32(2.0**(top - span))  # both ends present
    s0, s1, s2, exact = eng._exact_tile_sum(lv, 64)
    if parts == 0:
        assert not exact
        return
    assert exact
    want = sum((Fraction(float(v)) for v in lv), Fraction(0))
    assert Fraction(s0) + Fraction(s1) + Fraction(s2) == want
    assert sum(1 for s in (s0, s1, s2) if s != 0.0) == parts
    # each part is exactly its window's values: nothing was rounded within a part
    bits = np.abs(lv).view(np.int32) >> 23
    hi = int(bits.max())
    for k, s in enumerate((s0, s1, s2)):
        top_e, low_e = hi - 24 * k, hi - 24 * k - 23
        mine = lv[(bits <= top_e) & (bits >= low_e) & (lv != 0)]
        assert Fraction(s) == sum((Fraction(float(v)) for v in mine), Fraction(0))


@pytest.mark.parametrize("values", [[np.nan], [np.inf], [1e-40], [0.1]])
def test_tile_sum_refuses_what_it_cannot_add_exactly(values):
    """NaN, inf and subnormal losses, and float64 values that are not float32 values."""
    lv = np.full(64, 1.5, dtype=np.float64 if values == [0.1] else np.float32)
    lv[7] = values[0]
    assert not eng._exact_tile_sum(lv, 64)[3]
