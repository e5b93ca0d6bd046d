"""fx.sigmoid_cross_entropy (binary and multilabel) against the float64 reference: shapes,
dtypes, target kinds, every option and reduction, layouts, thresholds and special values."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from checks import (
    BF16,
    FLOAT_DTYPES,
    FLOAT_IDS,
    REDUCTIONS,
    cast,
    check_sigmoid,
    dyadic_weights,
    make_logits,
    skip_unsupported,
)
from tolerances import assert_loss_close

import fastxent as fx

SHAPES = [
    (0,),
    (1,),
    (7,),
    (0, 3),
    (7, 1),
    (5, 2),
    (37, 31),
    (3, 423),
    (4, 1000),
    (2, 65537),
    (2, 3, 5),
]


def make_targets(rng, shape, kind="binary", dtype=np.float32):
    if kind == "binary":
        t = (rng.random(shape) < 0.4).astype(np.float64)
    else:  # soft targets in [0, 1], with exact 0, 0.5 and 1 among them
        t = rng.random(shape)
        flat = t.reshape(-1)
        flat[::7] = 0.0
        flat[3::7] = 1.0
        flat[5::11] = 0.5
    return cast(t, dtype) if dtype == BF16 else np.ascontiguousarray(t.astype(dtype))


def make_sig_probs(rng, shape, dtype):
    p = rng.random(shape)
    flat = p.reshape(-1)
    flat[::9] = 0.0
    flat[4::9] = 1.0
    return cast(p, dtype)


def _all_reductions(lib, z, t, **opts):
    for reduction in REDUCTIONS:
        check_sigmoid(lib, z, t, reduction=reduction, **opts)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=FLOAT_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_shapes_and_dtypes(lib, rng, shape, dtype):
    skip_unsupported(lib, dtype)
    z = make_logits(rng, shape, dtype)
    _all_reductions(lib, z, make_targets(rng, shape, "binary"))
    _all_reductions(lib, z, make_targets(rng, shape, "soft"))


@pytest.mark.parametrize("target_dtype", [np.float16, BF16, np.float32, np.float64, np.bool_,
                                          np.int8, np.int32, np.int64, np.uint8],
                         ids=lambda d: np.dtype(d).name)
def test_target_dtypes(lib, rng, target_dtype):
    skip_unsupported(lib, target_dtype)
    z = make_logits(rng, (23, 9), np.float32)
    t = make_targets(rng, (23, 9), "binary", np.float64)
    t = cast(t, target_dtype) if target_dtype == BF16 else t.astype(target_dtype)
    _all_reductions(lib, z, t)
    check_sigmoid(lib, z[:, 0], t[:, 0])  # binary


OPTION_GRID = list(itertools.product(
    [True, False],        # from_logits
    [0.5, 0.3, 0.85],     # threshold
    [False, True],        # pos_weight
    [0.0, 0.1],           # label_smoothing
    [False, True],        # sample_weight
))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=FLOAT_IDS)
@pytest.mark.parametrize("opts", OPTION_GRID,
                         ids=[f"fl{a}-thr{b}-pw{c}-ls{d}-sw{e}" for a, b, c, d, e in OPTION_GRID])
def test_options_multilabel(lib, rng, opts, dtype):
    skip_unsupported(lib, dtype)
    from_logits, thr, use_pw, ls, use_sw = opts
    N, C = 29, 7
    z = make_logits(rng, (N, C), dtype) if from_logits else make_sig_probs(rng, (N, C), dtype)
    kw = dict(from_logits=from_logits, threshold=thr, label_smoothing=ls,
              pos_weight=rng.random(C) * 3 if use_pw else None,
              sample_weight=dyadic_weights(rng, (N,)) if use_sw else None)
    _all_reductions(lib, z, make_targets(rng, (N, C), "binary"), **kw)
    _all_reductions(lib, z, make_targets(rng, (N, C), "soft"), **kw)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=FLOAT_IDS)
@pytest.mark.parametrize("opts", OPTION_GRID,
                         ids=[f"fl{a}-thr{b}-pw{c}-ls{d}-sw{e}" for a, b, c, d, e in OPTION_GRID])
def test_options_binary(lib, rng, opts, dtype):
    skip_unsupported(lib, dtype)
    from_logits, thr, use_pw, ls, use_sw = opts
    N = 31
    for shape in ((N,), (N, 1)):
        z = make_logits(rng, shape, dtype) if from_logits else make_sig_probs(rng, shape, dtype)
        kw = dict(from_logits=from_logits, threshold=thr, label_smoothing=ls,
                  pos_weight=np.array([2.5]) if use_pw else None,
                  sample_weight=dyadic_weights(rng, (N,)) if use_sw else None)
        _all_reductions(lib, z, make_targets(rng, shape, "binary"), **kw)


def test_binary_n_and_n1_agree(lib, rng):
    z = make_logits(rng, (25,), np.float32)
    t = make_targets(rng, (25,), "soft")
    a = fx.sigmoid_cross_entropy(lib.to_lib(z), lib.to_lib(t), reduction="none")
    b = fx.sigmoid_cross_entropy(lib.to_lib(z[:, None]), lib.to_lib(t[:, None]),
                                 reduction="none")
    assert lib.to_numpy(a.loss).shape == lib.to_numpy(b.loss).shape == (25,)
    np.testing.assert_array_equal(lib.to_numpy(a.loss), lib.to_numpy(b.loss))
    np.testing.assert_array_equal(lib.to_numpy(a.correct), lib.to_numpy(b.correct))
    assert a.task == b.task == "binary"


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_three_d(lib, rng, dtype):
    B, T, C = 3, 4, 6
    z = make_logits(rng, (B, T, C), dtype)
    sw = dyadic_weights(rng, (B, T))
    _all_reductions(lib, z, make_targets(rng, (B, T, C)), sample_weight=sw,
                    pos_weight=rng.random(C) + 0.5)


# -- thresholds --------------------------------------------------------------------------------


@pytest.mark.parametrize("thr", [0.7, 0.3, 0.1, 0.999, 1e-6])
def test_threshold_compared_in_float64_from_logits(lib, thr):
    cut = math.log(thr / (1 - thr))
    c32 = np.float32(cut)
    vals = np.array([np.nextafter(c32, np.float32(-100)), c32,
                     np.nextafter(c32, np.float32(100))], np.float32)
    z = np.concatenate([vals, vals])
    t = np.array([1.0] * 3 + [0.0] * 3, np.float32)
    m, ref = check_sigmoid(lib, z, t, threshold=thr, reduction="none")
    pred = z.astype(np.float64) > cut
    np.testing.assert_array_equal(ref["correct"], pred == (t > 0.5))
    check_sigmoid(lib, z.astype(np.float64), t, threshold=thr, reduction="none")
    check_sigmoid(lib, z.astype(np.float16), t, threshold=thr, reduction="none")


@pytest.mark.parametrize("thr", [0.3, 0.7, 0.1, 0.5])
def test_threshold_compared_in_float64_from_probabilities(lib, thr):
    p32 = np.float32(thr)
    vals = np.array([np.nextafter(p32, np.float32(0)), p32, np.nextafter(p32, np.float32(1))],
                    np.float32)
    p = np.concatenate([vals, vals])
    t = np.array([1.0] * 3 + [0.0] * 3, np.float32)
    m, ref = check_sigmoid(lib, p, t, threshold=thr, from_logits=False, reduction="none")
    np.testing.assert_array_equal(ref["correct"], (p.astype(np.float64) > thr) == (t > 0.5))
    if lib.supports(BF16):
        check_sigmoid(lib, p.astype(BF16), t, threshold=thr, from_logits=False,
                      reduction="none")


def test_threshold_zero_and_one(lib, rng):
    z = make_logits(rng, (13, 4), np.float32)
    t = make_targets(rng, (13, 4))
    for thr in (0.0, 1.0):
        check_sigmoid(lib, z, t, threshold=thr)
        check_sigmoid(lib, make_sig_probs(rng, (13, 4), np.float32), t, threshold=thr,
                      from_logits=False)


def test_zero_logit_and_half_target(lib):
    # z = 0 is not > 0 (threshold 0.5): predicted negative; t = 0.5 is not > 0.5: negative
    z = np.array([[0.0, 0.0, 1.0, -1.0]], np.float32)
    t = np.array([[0.5, 0.0, 0.5, 0.5]], np.float32)
    m, ref = check_sigmoid(lib, z, t, reduction="none")
    assert ref["accuracy"] == 0.75


# -- special values ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=FLOAT_IDS)
@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probs"])
def test_nan_elements(lib, rng, dtype, from_logits):
    skip_unsupported(lib, dtype)
    N, C = 9, 5
    z = make_logits(rng, (N, C), dtype) if from_logits else make_sig_probs(rng, (N, C), dtype)
    t = make_targets(rng, (N, C))
    z[2, 1] = np.nan
    z[5, :] = np.nan
    m, ref = check_sigmoid(lib, z, t, reduction="none", from_logits=from_logits)
    assert np.isnan(ref["loss"][[2, 5]]).all() and not ref["correct"][[2, 5]].any()
    check_sigmoid(lib, z, t, from_logits=from_logits)  # mean is NaN, accuracy is not
    check_sigmoid(lib, z[:, 1], t[:, 1], reduction="none", from_logits=from_logits)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=FLOAT_IDS)
def test_huge_magnitudes(lib, rng, dtype):
    skip_unsupported(lib, dtype)
    big = {np.dtype(np.float16): 6e4}.get(np.dtype(dtype), 1e30)
    z = cast(np.clip(rng.standard_normal((11, 6)), -1, 1) * big, dtype)
    _all_reductions(lib, z, make_targets(rng, (11, 6), "binary"))
    _all_reductions(lib, z, make_targets(rng, (11, 6), "soft"))
    _all_reductions(lib, z, make_targets(rng, (11, 6), "binary"), pos_weight=np.full(6, 2.0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, BF16], ids=["f32", "f64", "bf16"])
def test_large_offsets(lib, rng, dtype):
    skip_unsupported(lib, dtype)
    z = cast(1e6 + rng.standard_normal((10, 8)), dtype)
    t = make_targets(rng, (10, 8))
    _all_reductions(lib, z, t)
    _all_reductions(lib, cast(-1e6 + rng.standard_normal((10, 8)), dtype), t)


def test_confident_rows(lib):
    """Loss -> 0 when the prediction is confidently right: no cancellation."""
    for dtype in (np.float32, np.float64):
        z = np.array([[30.0, -30.0, 17.0], [100.0, -100.0, 50.0]], dtype)
        t = np.array([[1.0, 0.0, 1.0], [1.0, 0.0, 1.0]], np.float32)
        m, ref = check_sigmoid(lib, z, t, reduction="none")
        assert (ref["loss"] < 1e-7).all()
        check_sigmoid(lib, z, t)


def test_probability_clip(lib):
    p = np.array([[0.0, 1.0, 0.0, 1.0]], np.float32)
    t = np.array([[0.0, 1.0, 1.0, 0.0]], np.float32)
    for dtype in (np.float32, np.float64, np.float16):
        check_sigmoid(lib, p.astype(dtype), t, from_logits=False, reduction="none")
        check_sigmoid(lib, p.astype(dtype), t, from_logits=False, pos_weight=np.full(4, 3.0))


def test_n_zero(lib):
    for shape in ((0,), (0, 4)):
        z = np.zeros(shape, np.float32)
        m, ref = check_sigmoid(lib, z, np.zeros(shape, np.float32))
        assert ref["count"] == 0 and math.isnan(ref["accuracy"]) and math.isnan(ref["loss"])
        check_sigmoid(lib, z, np.zeros(shape, np.float32), reduction="sum")
        check_sigmoid(lib, z, np.zeros(shape, np.float32), reduction="none")


def test_zero_sample_weights(lib, rng):
    z = make_logits(rng, (6, 3), np.float32)
    t = make_targets(rng, (6, 3))
    m, ref = check_sigmoid(lib, z, t, sample_weight=np.zeros(6))
    assert math.isnan(ref["loss"]) and math.isnan(ref["accuracy"])
    check_sigmoid(lib, z, t, sample_weight=np.zeros(6), reduction="sum")


# -- layouts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=FLOAT_IDS)
def test_strided_and_fortran(lib, rng, dtype):
    skip_unsupported(lib, dtype)
    N, C = 40, 12
    z = make_logits(rng, (N, C), dtype)
    t = make_targets(rng, (N, C), "soft")
    cases = [
        (z[::2], t[::2]),
        (z[1:], t[1:]),
        (np.asfortranarray(z), t),
        (z, np.asfortranarray(t)),
        (z[:, :5], t[:, 3:8]),
        (np.asfortranarray(z)[::3, 2:], t[::3, 2:]),
        (z[:, 4], t[:, 4]),  # binary from a column: stride C
        (z[::3, 1], t[::3, 1]),
    ]
    for zz, tt in cases:
        m, _ = check_sigmoid(lib, zz, tt, reduction="none")
        cont = fx.sigmoid_cross_entropy(lib.to_lib(np.ascontiguousarray(zz)),
                                        lib.to_lib(np.ascontiguousarray(tt)), reduction="none")
        np.testing.assert_array_equal(lib.to_numpy(m.loss), lib.to_numpy(cont.loss))
        check_sigmoid(lib, zz, tt, pos_weight=np.full(zz.shape[-1] if zz.ndim == 2 else 1, 2.0))


# -- result types --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=FLOAT_IDS)
def test_result_types(lib, rng, dtype):
    skip_unsupported(lib, dtype)
    z = make_logits(rng, (6, 4), dtype)
    t = make_targets(rng, (6, 4))
    m = fx.sigmoid_cross_entropy(lib.to_lib(z), lib.to_lib(t))
    assert isinstance(m, fx.Metrics) and m.task == "multilabel"
    for v in (m.loss, m.accuracy, m.exact_match, m.count):
        assert lib.is_native(v) and lib.to_numpy(v).shape == ()
    assert lib.to_numpy(m.loss).dtype == np.float64
    assert lib.to_numpy(m.exact_match).dtype == np.float64
    assert lib.to_numpy(m.count).dtype == np.int64 and int(m.count) == 6
    assert m.top_k_accuracy == {} and m.correct is None
    m = fx.sigmoid_cross_entropy(lib.to_lib(z), lib.to_lib(t), reduction="none")
    row = np.float64 if np.dtype(dtype) == np.float64 else np.float32
    assert lib.to_numpy(m.loss).dtype == row and lib.to_numpy(m.loss).shape == (6,)
    assert lib.to_numpy(m.correct).dtype == np.bool_
    m = fx.sigmoid_cross_entropy(lib.to_lib(z[:, 0]), lib.to_lib(t[:, 0]), reduction="none")
    assert m.task == "binary" and lib.to_numpy(m.loss).shape == (6,)


def _ref_label_counts(t):
    """(binary, onehot, sum1) row counts of targets t, float32 arithmetic as the kernel sees
    them: binary = every value 0 or 1, onehot = binary with one 1, sum1 = |sum - 1| <= tol."""
    from fastxent import config

    t32 = t.astype(np.float32).astype(np.float64)
    binary = np.all((t32 == 0.0) | (t32 == 1.0), axis=1)
    onehot = binary & ((t32 == 1.0).sum(1) == 1)
    sum1 = np.abs(t32.sum(1) - 1.0) <= config.SUM_TO_ONE_TOL
    return int(binary.sum()), int(onehot.sum()), int(sum1.sum())


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("C", [33, 100, 1000])
def test_sigmoid_label_statistics_near_zero_and_one(dtype, C):
    """The large-C sigmoid kernel counts 0/1, one-hot and sum-to-one target rows from cheap
    accumulators (one integer max, sum(t - t*t)); targets one float32 ulp away from 0 or 1,
    -0.0, and predictions past 2**127 or infinite must still be counted exactly, and the loss
    and element accuracy must not change."""
    from fastxent import _state as S
    from fastxent.backends import SigmoidOptions
    from fastxent.backends import numba_cpu as E

    rng = np.random.default_rng(C)
    n = 48
    z = rng.standard_normal((n, C)).astype(dtype) * 3
    t = np.zeros((n, C))
    hot = rng.integers(0, C, n)
    t[np.arange(n), hot] = 1.0                        # one-hot rows ...
    t[1::4] = (rng.random((len(t[1::4]), C)) < 0.3)   # ... multi-hot 0/1 rows ...
    t[2] = 0.0                                        # ... an all-zero row
    one_minus = float(np.nextafter(np.float32(1), np.float32(0)))
    t[3, hot[3]] = one_minus                          # soft: 1 - 2**-24
    t[6, (hot[6] + 1) % C] = 2.0 ** -149              # soft: the smallest float32 above 0
    t[7, (hot[7] + 1) % C] = 1.0
    t[7, (hot[7] + 2) % C] = one_minus                # 0/1 except one value
    t[10] = np.where(t[10] == 0.0, -0.0, t[10])       # -0.0 is 0: still one-hot
    t[11, hot[11]] = 0.5
    t[11, (hot[11] + 1) % C] = 0.5                    # soft, sums to 1
    z[14, 0] = dtype(3e38) if dtype == np.float32 else 1e300   # finite, past 2**127
    z[15, 1] = np.inf                                 # not finite: the slow path
    z[18, 2] = -np.inf
    tt = t.astype(dtype)
    p = E.sigmoid_xent(z, tt, SigmoidOptions(want_rows=True))
    c = p.counts
    assert (int(c[S.BINARY]), int(c[S.ONEHOT]), int(c[S.SUM1])) == _ref_label_counts(tt)
    assert p.first_bad < 0
    want = ref_rows_sigmoid(z, tt)
    np.testing.assert_allclose(p.row_loss.astype(np.float64), want, rtol=2e-6, atol=0)
    hits = ((z.astype(np.float64) > 0) == (tt > 0.5)).sum(1)
    np.testing.assert_array_equal(np.rint(p.row_elem.astype(np.float64) * C), hits)
    assert int(c[S.ELEM]) == int(hits.sum())
    assert int(c[S.EXACT]) == int((hits == C).sum())


def ref_rows_sigmoid(z, t):
    """Per-row mean of max(x, 0) - t x + log1p(exp(-|x|)) in float64 (inf logits: the limit)."""
    x = z.astype(np.float64)
    t = t.astype(np.float64)
    with np.errstate(invalid="ignore"):
        ax = np.abs(x)
        el = np.maximum(x, 0) - t * x + np.log1p(np.exp(-ax))
        # x = +-inf: sp(x) terms are inf * coefficient or 0 (zero-coefficient rule)
        el = np.where(np.isposinf(x), np.where(t == 1.0, 0.0, np.inf), el)
        el = np.where(np.isneginf(x), np.where(t == 0.0, 0.0, np.inf), el)
    return el.mean(1)


def test_rows_of_2_24_classes_and_more_count_exactly():
    """A float32 count of a row's hits stops at 2**24; rows that wide are computed in float64
    so that element, exact-match and label counts stay exact (the lean clean-tile path and
    the per-row path, which rows with a NaN prediction take)."""
    from fastxent import _state as S
    from fastxent.backends import SigmoidOptions
    from fastxent.backends import numba_cpu as E

    C = (1 << 24) + 5
    z = np.full((2, C), -1.0, dtype=np.float32)
    t = np.zeros((2, C), dtype=np.bool_)
    z[:, 7] = 2.0
    t[:, 7] = True                           # every element right: C hits per row
    z[1, 9] = np.nan                         # row 1: the per-row (IEEE) path, C - 1 hits
    p = E.sigmoid_xent(z, t, SigmoidOptions())
    c = p.counts
    assert int(c[S.ELEM]) == 2 * C - 1
    assert int(c[S.EXACT]) == 1
    assert (int(c[S.BINARY]), int(c[S.ONEHOT])) == (2, 2)
    want = (np.log1p(np.exp(-1.0)) * (C - 1) + np.log1p(np.exp(-2.0))) / C
    assert float(fx.sigmoid_cross_entropy(z[:1], t[:1]).loss) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_lean_kernel_agrees_with_the_general_one(dtype):
    """Without weights or per-row outputs, C > 32 logits take a lean kernel that adds the
    counts and loss of clean 64-row tiles at once; tiles with a NaN/inf prediction, a soft
    or bad target, or a partial tile must give the general kernel's counts exactly and its
    loss to rounding, and the first bad row must be the same."""
    from fastxent import _state as S
    from fastxent.backends import SigmoidOptions
    from fastxent.backends import numba_cpu as E

    rng = np.random.default_rng(5)
    n, C = 64 * 5 + 17, 77
    z = (rng.standard_normal((n, C)) * 4).astype(dtype)
    t = (rng.random((n, C)) < 0.3).astype(dtype)
    t[3::64, 0] = 1.0
    t[3::64, 1:] = 0.0                   # one-hot rows in every tile
    z[70, 5] = np.nan                    # tile 1: a NaN prediction
    z[140, 6] = np.inf                   # tile 2: an infinite one
    t[200, 7] = 0.25                     # tile 3: a soft target
    t[300, 8] = 1.5                      # tile 4: a bad target (the first bad row)
    t[310, 8] = -1.0
    ones = np.ones(n)
    for want_cat in (False, True):
        lean = E.sigmoid_xent(z, t, SigmoidOptions(want_cat=want_cat))
        gen = E.sigmoid_xent(z, t, SigmoidOptions(sample_weight=ones, want_cat=want_cat))
        for k in (S.ROWS, S.SEEN, S.CAT, S.ELEM, S.EXACT, S.ONEHOT, S.SUM1, S.BINARY):
            assert int(lean.counts[k]) == int(gen.counts[k]), k
        assert lean.first_bad == gen.first_bad == 300
    ok = np.ones(n, bool)
    ok[[70, 300, 310]] = False           # the NaN row and the bad rows out: compare losses
    lean = float(fx.sigmoid_cross_entropy(z[ok], t[ok]).loss)
    gen = float(fx.sigmoid_cross_entropy(z[ok], t[ok], sample_weight=ones[ok]).loss)
    want = float(np.mean(ref_rows_sigmoid(z[ok], t[ok])))
    assert math.isfinite(want)
    assert lean == pytest.approx(gen, rel=1e-6)
    assert lean == pytest.approx(want, rel=1e-6 if dtype == np.float32 else 1e-13)


@pytest.mark.parametrize("weighted", [False, True])  # the lean kernel, the per-row kernel
def test_long_rows_of_repeated_element_losses(weighted):
    """A row's loss is summed in float32 within blocks of numba_cpu.SUM_BLOCK elements and in
    float64 across them: rows of 300k elements whose losses take five values (integer
    logits) were 7.6e-5 off when the whole row was one float32 sum (each vector lane
    rounding the same way thousands of times); now within the float32 tolerance."""
    rng = np.random.default_rng(17)
    C = 300_000
    z = rng.integers(-2, 3, (3, C)).astype(np.float32)
    t = (rng.random((3, C)) < 0.5).astype(np.float32)
    x, tt = z.astype(np.float64), t.astype(np.float64)
    el = np.maximum(x, 0) - x * tt + np.log1p(np.exp(-np.abs(x)))
    want = np.array([math.fsum(r) / C for r in el])
    sw = np.ones(3) if weighted else None
    rows = fx.sigmoid_cross_entropy(z, t, sample_weight=sw, reduction="none").loss
    assert_loss_close(rows, want, np.float32)
    mean = fx.sigmoid_cross_entropy(z, t, sample_weight=sw).loss
    assert_loss_close(mean, want.mean(), np.float32)
