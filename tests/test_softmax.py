"""fx.softmax_cross_entropy against the float64 reference: shapes, dtypes, label kinds, every
option and reduction, layouts, and the adversarial cases of STYLE.md section 12."""

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
    SPARSE_LABEL_DTYPES,
    assert_exact,
    cast,
    check_softmax,
    dyadic_weights,
    make_logits,
    make_probs,
    make_soft,
    make_sparse,
    one_hot,
    skip_unsupported,
)
from tolerances import assert_loss_close

import fastxent as fx

SHAPES = [
    (0, 5),
    (1, 1),
    (1, 7),
    (5, 2),
    (8, 1),
    (3, 423),
    (37, 31),
    (4, 1000),
    (2, 65537),
    (2, 3, 5),
    (2, 0, 7),
    (3, 4, 31),
]


def _all_reductions(lib, logits, labels, **opts):
    for reduction in REDUCTIONS:
        check_softmax(lib, logits, labels, reduction=reduction, **opts)


# -- shapes x dtypes ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=FLOAT_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_shapes_and_dtypes_sparse(lib, rng, shape, dtype):
    skip_unsupported(lib, dtype)
    z = make_logits(rng, shape, dtype)
    y = make_sparse(rng, shape[:-1], shape[-1])
    _all_reductions(lib, z, y, top_k=(1, min(3, shape[-1])))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=FLOAT_IDS)
@pytest.mark.parametrize("shape", [(0, 5), (1, 1), (5, 2), (3, 423), (37, 31), (2, 65537),
                                   (3, 4, 31)], ids=lambda s: "x".join(map(str, s)))
def test_shapes_and_dtypes_dense(lib, rng, shape, dtype):
    skip_unsupported(lib, dtype)
    z = make_logits(rng, shape, dtype)
    _all_reductions(lib, z, make_soft(rng, shape, np.float32))
    _all_reductions(lib, z, one_hot(make_sparse(rng, shape[:-1], shape[-1]), shape[-1]))


@pytest.mark.parametrize("label_dtype", SPARSE_LABEL_DTYPES, ids=lambda d: np.dtype(d).name)
def test_sparse_label_dtypes(lib, rng, label_dtype):
    z = make_logits(rng, (37, 31), np.float32)
    y = make_sparse(rng, (37,), 31, label_dtype)
    _all_reductions(lib, z, y, top_k=5)


def test_int32_and_int64_labels_agree(lib, rng):
    z = make_logits(rng, (41, 17), np.float32)
    y = make_sparse(rng, (41,), 17, np.int64)
    a = fx.softmax_cross_entropy(lib.to_lib(z), lib.to_lib(y), reduction="none")
    b = fx.softmax_cross_entropy(lib.to_lib(z), lib.to_lib(y.astype(np.int32)), reduction="none")
    np.testing.assert_array_equal(lib.to_numpy(a.loss), lib.to_numpy(b.loss))
    np.testing.assert_array_equal(lib.to_numpy(a.correct), lib.to_numpy(b.correct))
    check_softmax(lib, z, y.astype(np.int32), ignore_index=-100)


@pytest.mark.parametrize("label_dtype", [np.float16, BF16, np.float32, np.float64, np.bool_,
                                         np.int8, np.int32, np.int64, np.uint8],
                         ids=lambda d: np.dtype(d).name)
def test_dense_label_dtypes(lib, rng, label_dtype):
    skip_unsupported(lib, label_dtype)
    z = make_logits(rng, (29, 13), np.float32)
    t = one_hot(make_sparse(rng, (29,), 13), 13, np.float64)
    if np.dtype(label_dtype).kind == "f" or label_dtype == BF16:
        # multi-hot and soft rows as well as one-hot
        t[::3] = 0.0
        t[::3, ::2] = 1.0 / 7.0  # 7 classes of 13: a soft row summing to 1
    t = cast(t, label_dtype) if label_dtype == BF16 else t.astype(label_dtype)
    _all_reductions(lib, z, t, top_k=(2,))


# -- options -----------------------------------------------------------------------------------

OPTION_GRID = list(itertools.product(
    [True, False],            # from_logits
    [0.0, 0.1],               # label_smoothing
    [False, True],            # class_weight
    [False, True],            # sample_weight
    [None, -100, 3],          # ignore_index (3 is a valid class id)
    [None, 1, (1, 2, 5)],     # top_k
))


def _option_id(p):
    fl, ls, cw, sw, ig, k = p
    return (f"{'logits' if fl else 'probs'}-ls{ls}-{'cw' if cw else 'nocw'}-"
            f"{'sw' if sw else 'nosw'}-ig{ig}-k{k}")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=FLOAT_IDS)
@pytest.mark.parametrize("opts", OPTION_GRID, ids=[_option_id(p) for p in OPTION_GRID])
def test_options_sparse(lib, rng, opts, dtype):
    skip_unsupported(lib, dtype)
    from_logits, ls, use_cw, use_sw, ignore, top_k = opts
    N, C = 37, 11
    z = make_logits(rng, (N, C), dtype) if from_logits else make_probs(rng, (N, C), dtype)
    y = make_sparse(rng, (N,), C)
    if ignore is not None:
        y[rng.random(N) < 0.3] = ignore
    kw = dict(from_logits=from_logits, label_smoothing=ls, ignore_index=ignore, top_k=top_k,
              class_weight=rng.random(C) * 2 + 0.1 if use_cw else None,
              sample_weight=dyadic_weights(rng, (N,)) if use_sw else None)
    _all_reductions(lib, z, y, **kw)


DENSE_GRID = list(itertools.product([True, False], [0.0, 0.2], [False, True], [False, True],
                                    [None, (1, 3)]))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=FLOAT_IDS)
@pytest.mark.parametrize("opts", DENSE_GRID,
                         ids=[f"fl{a}-ls{b}-cw{c}-sw{d}-k{e}" for a, b, c, d, e in DENSE_GRID])
def test_options_dense(lib, rng, opts, dtype):
    skip_unsupported(lib, dtype)
    from_logits, ls, use_cw, use_sw, top_k = opts
    N, C = 33, 9
    z = make_logits(rng, (N, C), dtype) if from_logits else make_probs(rng, (N, C), dtype)
    t = make_soft(rng, (N, C), np.float32)
    t[::4] = one_hot(make_sparse(rng, (len(t[::4]),), C), C)
    kw = dict(from_logits=from_logits, label_smoothing=ls, top_k=top_k,
              class_weight=rng.random(C) * 2 + 0.1 if use_cw else None,
              sample_weight=dyadic_weights(rng, (N,)) if use_sw else None)
    _all_reductions(lib, z, t, **kw)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_three_d_inputs(lib, rng, dtype):
    B, T, C = 3, 5, 19
    z = make_logits(rng, (B, T, C), dtype)
    y = make_sparse(rng, (B, T), C)
    y[0, 1] = -100
    sw = dyadic_weights(rng, (B, T), lo=1)
    _all_reductions(lib, z, y, ignore_index=-100, sample_weight=sw, top_k=(1, 4),
                    class_weight=rng.random(C) + 0.5)
    _all_reductions(lib, z, one_hot(make_sparse(rng, (B, T), C), C), sample_weight=sw)
    # flattening the leading axes does not change anything
    a = fx.softmax_cross_entropy(lib.to_lib(z), lib.to_lib(y), ignore_index=-100,
                                 reduction="none")
    b = fx.softmax_cross_entropy(lib.to_lib(z.reshape(B * T, C)), lib.to_lib(y.reshape(-1)),
                                 ignore_index=-100, reduction="none")
    np.testing.assert_array_equal(lib.to_numpy(a.loss).reshape(-1), lib.to_numpy(b.loss))


def test_probabilities_clip_extremes(lib, rng):
    p = make_probs(rng, (6, 4), np.float32)
    p[0] = [0.0, 1.0, 0.0, 0.0]   # p_y = 0 -> -log(eps)
    p[1] = [1.0, 0.0, 0.0, 0.0]   # p_y = 1 -> -log(1 - eps)
    p[2] = [0.5, 0.0, 0.0, 0.0]  # not normalised: no renormalisation
    y = np.array([0, 0, 0, 1, 2, 3])
    for dtype in (np.float32, np.float64, np.float16):
        _all_reductions(lib, p.astype(dtype), y)
        _all_reductions(lib, p.astype(dtype), y, label_smoothing=0.1)


def test_zero_sample_weights(lib, rng):
    z = make_logits(rng, (7, 5), np.float32)
    y = make_sparse(rng, (7,), 5)
    sw = np.zeros(7)
    m, ref = check_softmax(lib, z, y, sample_weight=sw)
    assert math.isnan(ref["loss"]) and math.isnan(ref["accuracy"])
    check_softmax(lib, z, y, sample_weight=sw, reduction="sum")
    sw[2] = 0.5
    check_softmax(lib, z, y, sample_weight=sw, top_k=2)


# -- layouts -----------------------------------------------------------------------------------


def _views(z):
    """Non-contiguous / foreign-order views of a (N, C) array, with the rows each keeps."""
    N, C = z.shape
    yield "rows[::2]", z[::2], slice(None, None, 2)
    yield "rows[1:]", z[1:], slice(1, None)
    yield "fortran", np.asfortranarray(z), slice(None)
    buf = np.zeros((N, 2 * C), z.dtype)
    buf[:, ::2] = z
    yield "class stride 2", buf[:, ::2], slice(None)
    yield "rows[::3] of fortran", np.asfortranarray(z)[::3], slice(None, None, 3)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=FLOAT_IDS)
def test_strided_and_fortran_views(lib, rng, dtype):
    skip_unsupported(lib, dtype)
    N, C = 45, 23
    base = make_logits(rng, (N, C), dtype)
    y = make_sparse(rng, (N,), C)
    for name, view, rows in _views(base):
        yy = y[rows]
        m, _ = check_softmax(lib, view, yy, reduction="none", top_k=(1, 3))
        contiguous = fx.softmax_cross_entropy(lib.to_lib(np.ascontiguousarray(view)),
                                              lib.to_lib(np.ascontiguousarray(yy)),
                                              reduction="none", top_k=(1, 3))
        np.testing.assert_array_equal(lib.to_numpy(m.loss), lib.to_numpy(contiguous.loss),
                                      err_msg=name)
    # column slices: a prefix of the classes (row stride > C)
    k = 11
    yk = make_sparse(rng, (N,), k)
    check_softmax(lib, base[:, :k], yk, reduction="none")
    check_softmax(lib, base[:, :k], yk)
    check_softmax(lib, base[::2, 3:3 + k], yk[::2], reduction="none")
    # strided labels, strided dense labels
    check_softmax(lib, base[::2], y[::2])
    t = one_hot(y, C)
    check_softmax(lib, base[:, :C], np.asfortranarray(t), reduction="none")
    check_softmax(lib, base[::2], t[::2], reduction="none")


def test_negative_strides(rng):
    from conftest import NumpyLib

    lib = NumpyLib()  # torch.from_numpy cannot hold negative strides
    z = make_logits(rng, (17, 9), np.float32)
    y = make_sparse(rng, (17,), 9)
    check_softmax(lib, z[::-1], y[::-1], reduction="none")
    check_softmax(lib, z[:, ::-1], y, reduction="none")


def test_fortran_three_d(lib, rng):
    z = np.asfortranarray(make_logits(rng, (4, 6, 13), np.float32))
    y = make_sparse(rng, (4, 6), 13)
    check_softmax(lib, z, y, reduction="none")
    check_softmax(lib, z, np.asfortranarray(y))


# -- adversarial values ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=FLOAT_IDS)
def test_ties_first_index_wins(lib, dtype):
    skip_unsupported(lib, dtype)
    C = 6
    z = np.zeros((C, C), dtype)  # all-equal rows: argmax is class 0
    y = np.arange(C)
    m, ref = check_softmax(lib, z, y, reduction="none", top_k=(1, 2, 3))
    assert ref["correct"].tolist() == [True] + [False] * (C - 1)
    assert ref["top_k_accuracy"] == {1: 1 / 6, 2: 2 / 6, 3: 3 / 6}
    # ties of the maximum in the middle of the row
    z = cast(np.array([[1, 3, 3, 0], [1, 3, 3, 0], [5, 5, 5, 5], [0, 2, 1, 2]]), dtype)
    y = np.array([1, 2, 3, 3])
    m, ref = check_softmax(lib, z, y, reduction="none", top_k=(1, 2, 3))
    assert ref["correct"].tolist() == [True, False, False, False]
    assert ref["top_k_accuracy"] == {1: 0.25, 2: 0.75, 3: 0.75}  # ranks 0, 1, 3, 1
    check_softmax(lib, z, one_hot(y, 4), top_k=(1, 2, 3))


def test_ties_in_dense_labels_first_index_wins(lib):
    z = np.array([[0.0, 2.0, 1.0], [3.0, 0.0, 3.0]], np.float32)
    t = np.array([[0.0, 0.5, 0.5], [0.5, 0.0, 0.5]], np.float32)
    m, ref = check_softmax(lib, z, t, reduction="none")
    assert ref["correct"].tolist() == [True, True]
    t2 = np.array([[0.0, 0.4, 0.6], [0.4, 0.0, 0.6]], np.float32)
    m, ref = check_softmax(lib, z, t2, reduction="none")
    assert ref["correct"].tolist() == [False, False]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=FLOAT_IDS)
def test_minus_inf_columns(lib, rng, dtype):
    skip_unsupported(lib, dtype)
    N, C = 12, 8
    z = make_logits(rng, (N, C), dtype)
    z[:, [2, 5]] = -np.inf
    y = make_sparse(rng, (N,), C)
    y[:3] = 2  # target on a -inf column: +inf loss
    y[3:] = np.where(np.isin(y[3:], [2, 5]), 0, y[3:])
    m, ref = check_softmax(lib, z, y, reduction="none", top_k=(1, 7, 8))
    assert np.isposinf(ref["loss"][:3]).all() and np.isfinite(ref["loss"][3:]).all()
    check_softmax(lib, z, y, top_k=(1, 7))  # mean is +inf
    check_softmax(lib, z[3:], y[3:])  # finite without the -inf targets
    check_softmax(lib, z[3:], y[3:], label_smoothing=0.1)  # smoothing touches -inf: +inf
    t = one_hot(y[3:], C)
    m, ref = check_softmax(lib, z[3:], t, reduction="none")  # 0 * -inf contributes 0
    assert np.isfinite(ref["loss"]).all()
    check_softmax(lib, z[3:], t, label_smoothing=0.1, reduction="none")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=FLOAT_IDS)
@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probs"])
def test_nan_rows(lib, rng, dtype, from_logits):
    skip_unsupported(lib, dtype)
    N, C = 10, 7
    z = make_logits(rng, (N, C), dtype) if from_logits else make_probs(rng, (N, C), dtype)
    y = make_sparse(rng, (N,), C)
    z[1, 3] = np.nan
    z[4, y[4]] = np.nan  # NaN on the target
    z[6, :] = np.nan
    z[7, int(np.argmax(z[7].astype(np.float64)))] = np.nan  # NaN where the max was
    m, ref = check_softmax(lib, z, y, reduction="none", top_k=(1, C), from_logits=from_logits)
    assert np.isnan(ref["loss"][[1, 4, 6, 7]]).all()
    assert not ref["correct"][[1, 4, 6, 7]].any()
    assert ref["top_k_accuracy"][C] == (N - 4) / N  # NaN rows are in no top-k, even k = C
    check_softmax(lib, z, y, top_k=C, from_logits=from_logits)  # reduced loss shows the NaN
    check_softmax(lib, z, y, reduction="sum", from_logits=from_logits)
    check_softmax(lib, z, one_hot(y, C), reduction="none", from_logits=from_logits)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=FLOAT_IDS)
def test_plus_inf(lib, rng, dtype):
    skip_unsupported(lib, dtype)
    N, C = 6, 5
    z = make_logits(rng, (N, C), dtype)
    y = np.array([0, 1, 2, 3, 4, 0])
    z[0, 0] = np.inf  # +inf on the target: NaN loss (max-shift), argmax right
    z[1, 3] = np.inf  # +inf elsewhere: NaN loss, argmax wrong
    z[2, [1, 2]] = np.inf  # two +inf: first one is the argmax
    m, ref = check_softmax(lib, z, y, reduction="none", top_k=(1, 2))
    assert np.isnan(ref["loss"][:3]).all()
    assert ref["correct"][:3].tolist() == [True, False, False]
    check_softmax(lib, z, y, top_k=2)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=FLOAT_IDS)
def test_huge_magnitudes(lib, rng, dtype):
    skip_unsupported(lib, dtype)
    big = {np.dtype(np.float16): 6e4}.get(np.dtype(dtype), 1e30)
    N, C = 9, 6
    z = cast(np.clip(rng.standard_normal((N, C)), -1, 1) * big, dtype)
    y = make_sparse(rng, (N,), C)
    _all_reductions(lib, z, y, top_k=2)
    _all_reductions(lib, z, one_hot(y, C))
    _all_reductions(lib, z, y, label_smoothing=0.05)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, BF16], ids=["f32", "f64", "bf16"])
@pytest.mark.parametrize("C", [7, 1000])
def test_large_offsets(lib, rng, dtype, C):
    skip_unsupported(lib, dtype)
    N = 16
    z = cast(1e6 + rng.standard_normal((N, C)) * 2, dtype)
    y = make_sparse(rng, (N,), C)
    _all_reductions(lib, z, y, top_k=3)
    _all_reductions(lib, z, make_soft(rng, (N, C)))
    _all_reductions(lib, z, y, label_smoothing=0.1)
    _all_reductions(lib, cast(-1e6 + rng.standard_normal((N, C)), dtype), y)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=FLOAT_IDS)
@pytest.mark.parametrize("C,gap", [(31, 10.0), (1000, 10.0), (1000, 15.0), (1000, 30.0),
                                   (1000, 100.0), (65537, 20.0)])
def test_peaked_rows(lib, rng, dtype, C, gap):
    """p(target) -> 1: the loss is tiny (log1p of a small sum) and must keep its precision:
    neither cancellation in lse - z_y nor the small terms lost when summed onto exp(0) = 1."""
    skip_unsupported(lib, dtype)
    N = 8 if C <= 1000 else 2
    z = np.zeros((N, C))
    y = make_sparse(rng, (N,), C)
    z[np.arange(N), y] = gap
    z[1] += 50.0  # same, shifted
    z = cast(z, dtype)
    m, ref = check_softmax(lib, z, y, reduction="none")
    assert (ref["loss"] >= 0).all() and (ref["loss"] < 1).all()
    check_softmax(lib, z, y)
    check_softmax(lib, z, one_hot(y, C), reduction="none")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=FLOAT_IDS)
def test_long_rows(lib, rng, dtype):
    """Rows far wider than a SIMD loop's unrolled step, without top-k (the kernels' common
    exp-sum pass): the maximum near the end, ties thousands of classes apart, whole stretches
    far below the max or at -inf, one non-finite value late in the row, peaked rows. The
    sparse kernel reads such rows in 4 KB blocks with a running max: the max rising from
    block to block and a tie superseded by a later max are here too."""
    skip_unsupported(lib, dtype)
    C = 5000
    z = rng.standard_normal((12, C))
    y = make_sparse(rng, (12,), C)
    z[1, 4500] = 10.0
    y[1] = 4500  # the max near the end
    z[2, [100, 4500]] = 10.0
    y[2] = 4500  # a tie 4400 classes apart: the first index (100) wins
    z[3, [100, 4500]] = 10.0
    y[3] = 100
    z[4, 2048:] -= 50.0  # most of the row far below its start
    y[4] = 3000
    z[5, :2048] -= 8.0  # stretches rising towards the end
    z[5, 4096:] += 8.0
    y[5] = 2500
    z[6, 4999] = np.nan
    z[7, 3000] = np.inf
    z[8, :2048] = -np.inf  # a long -inf stretch, label after it: finite loss
    y[8] = 2049
    z[9] = 0.0
    z[9, 4700] = 30.0  # peaked: loss ~ (C - 1) exp(-30)
    y[9] = 4700
    z[10] = 1.5  # all equal: class 0 is the argmax
    y[10] = 0
    z[11, [10, 20]] = 5.0  # a tie for the max of the first blocks, then a larger max later
    z[11, 3000] = 7.0
    y[11] = 20
    z = cast(z, dtype)
    m, ref = check_softmax(lib, z, y, reduction="none")
    assert ref["correct"][[1, 3, 9, 10]].all() and not ref["correct"][[2, 6, 7]].any()
    assert np.isnan(ref["loss"][[6, 7]]).all() and np.isfinite(ref["loss"][8])
    check_softmax(lib, z, y)
    check_softmax(lib, z[:6], y[:6], reduction="sum")
    check_softmax(lib, z, y, label_smoothing=0.1, reduction="none")  # the pass with sums
    check_softmax(lib, z, y, top_k=(1, 2, 5), reduction="none")  # ranks counted by block


def test_c1_and_c2(lib, rng):
    z = make_logits(rng, (9, 1), np.float32)
    m, ref = check_softmax(lib, z, np.zeros(9, np.int64), reduction="none", top_k=1)
    assert (ref["loss"] == 0).all() and ref["correct"].all()
    z = make_logits(rng, (9, 2), np.float32)
    _all_reductions(lib, z, make_sparse(rng, (9,), 2), top_k=(1, 2))


# -- dense one-hot == sparse: counts exactly, loss up to float rounding ---------------------------


# (logits, labels) pairs, not the full product: every label dtype with float32 logits, every
# logits dtype with two label dtypes. Each pair compiles the dense kernels anew (~10 s of
# Numba per pair on a cold cache: the product's 20 pairs were ~a fifth of CI's test time);
# test_dense_label_dtypes covers every label dtype and the option tests every logits dtype.
_DENSE_PAIRS = ([(np.dtype(np.float32), np.dtype(t))
                 for t in (np.float32, np.float64, np.bool_, np.int64, np.float16)]
                + [(np.dtype(np.float64), np.dtype(np.float64)),
                   (np.dtype(np.float64), np.dtype(np.bool_)),
                   (np.dtype(np.float16), np.dtype(np.float16)),
                   (np.dtype(np.float16), np.dtype(np.float32)),
                   (BF16, np.dtype(np.float32)), (BF16, np.dtype(np.int64))])


@pytest.mark.parametrize("dtype,label_dtype", _DENSE_PAIRS,
                         ids=[f"{t.name}-{FLOAT_IDS[FLOAT_DTYPES.index(d)]}"
                              for d, t in _DENSE_PAIRS])
def test_dense_one_hot_equals_sparse(lib, rng, dtype, label_dtype):
    """README: a one-hot dense label gives the sparse result; zero targets contribute exactly 0
    (the -inf logit below must not make the row NaN). The two kernels sum in different orders,
    so the loss agrees within the dtype's tolerance and every count agrees exactly."""
    skip_unsupported(lib, dtype)
    N, C = 40, 31
    z = make_logits(rng, (N, C), dtype)
    z[3, 4] = -np.inf
    y = make_sparse(rng, (N,), C)
    y[3] = 5
    cw = rng.random(C) + 0.5
    sw = dyadic_weights(rng, (N,), lo=1)
    t = one_hot(y, C, label_dtype)
    for reduction in REDUCTIONS:
        for kw in ({}, {"class_weight": cw, "sample_weight": sw}, {"top_k": (1, 5)},
                   {"label_smoothing": 0.1}):
            a = fx.softmax_cross_entropy(lib.to_lib(z), lib.to_lib(y), reduction=reduction,
                                         **{k: lib.to_lib(v) if isinstance(v, np.ndarray) else v
                                            for k, v in kw.items()})
            b = fx.softmax_cross_entropy(lib.to_lib(z), lib.to_lib(t), reduction=reduction,
                                         **{k: lib.to_lib(v) if isinstance(v, np.ndarray) else v
                                            for k, v in kw.items()})
            where = f"{reduction} {sorted(kw)}"
            assert_loss_close(lib.to_numpy(a.loss), lib.to_numpy(b.loss), dtype, where)
            if "label_smoothing" not in kw:  # with smoothing the -inf class costs +inf, rightly
                assert np.all(np.isfinite(lib.to_numpy(a.loss))), where
            assert_exact(lib.to_numpy(a.accuracy), lib.to_numpy(b.accuracy), where)
            assert int(lib.to_numpy(a.count)) == int(lib.to_numpy(b.count)) == N
            for k in a.top_k_accuracy:
                assert_exact(lib.to_numpy(a.top_k_accuracy[k]),
                             lib.to_numpy(b.top_k_accuracy[k]), f"{where} top-{k}")
            if reduction == "none":
                np.testing.assert_array_equal(lib.to_numpy(a.correct), lib.to_numpy(b.correct))


# -- ignore_index / empty batches ----------------------------------------------------------------


def test_dense_row_weight_is_float64_on_every_path(rng):
    """With class weights, a one-hot dense row weighs sw * cw[y] exactly as the sparse row
    does (the loss denominator's exact sum is bit for bit the sparse one), on the vectorised
    path and on the slow path of a row with an inf logit alike; the vectorised path once
    summed sum_c t_c cw_c in float32."""
    from fastxent import _core
    from fastxent import _state as S

    N, C = 50, 7
    z = rng.standard_normal((N, C)).astype(np.float32)
    z[3, 2] = np.inf
    y = rng.integers(0, C, N)
    cw = np.array([0.1, 0.3, 0.7, 1.1, 2.3, 0.01, 5.5])  # not float32 values
    sw = rng.random(N)
    for kw in ({}, {"sample_weight": sw}):
        sparse = _core.softmax_run(z, y, class_weight=cw, **kw).state.exact[S.X_W]
        dense = _core.softmax_run(z, one_hot(y, C), class_weight=cw, **kw).state.exact[S.X_W]
        np.testing.assert_array_equal(dense, sparse)


@pytest.mark.parametrize("label_dtype", [np.int32, np.int64, np.int16])
def test_all_ignored_batch(lib, rng, label_dtype):
    z = make_logits(rng, (11, 6), np.float32)
    y = np.full(11, -100, label_dtype)
    m, ref = check_softmax(lib, z, y, ignore_index=-100, top_k=(1, 2))
    assert ref["count"] == 0 and math.isnan(ref["loss"]) and math.isnan(ref["accuracy"])
    assert math.isnan(ref["top_k_accuracy"][2])
    m, ref = check_softmax(lib, z, y, ignore_index=-100, reduction="sum")
    assert ref["loss"] == 0.0
    m, ref = check_softmax(lib, z, y, ignore_index=-100, reduction="none")
    assert (ref["loss"] == 0).all() and not ref["correct"].any()
    check_softmax(lib, z, y, ignore_index=-100, sample_weight=np.ones(11),
                  class_weight=np.ones(6))


def test_ignore_index_excludes_rows_everywhere(lib, rng):
    N, C = 30, 7
    z = make_logits(rng, (N, C), np.float32)
    y = make_sparse(rng, (N,), C)
    keep = rng.random(N) < 0.6
    y_ign = np.where(keep, y, -100)
    z_bad = z.copy()
    z_bad[~keep] = np.nan  # ignored rows' values do not matter, even NaN
    sw = dyadic_weights(rng, (N,), lo=1)
    for reduction in ("mean", "sum"):
        a = fx.softmax_cross_entropy(z_bad, y_ign, ignore_index=-100, reduction=reduction,
                                     sample_weight=sw, top_k=(1, 2))
        b = fx.softmax_cross_entropy(z[keep], y[keep], reduction=reduction,
                                     sample_weight=sw[keep], top_k=(1, 2))
        assert float(a.loss) == pytest.approx(float(b.loss), rel=1e-12)
        assert float(a.accuracy) == float(b.accuracy)
        assert float(a.top_k_accuracy[2]) == float(b.top_k_accuracy[2])
        assert int(a.count) == int(b.count) == keep.sum()
    check_softmax(lib, z_bad, y_ign, ignore_index=-100, reduction="none")
    check_softmax(lib, z, np.where(keep, y, 0), ignore_index=0, sample_weight=sw)


def test_n_zero(lib):
    for dtype in (np.float32, np.float64):
        z = np.zeros((0, 10), dtype)
        y = np.zeros((0,), np.int64)
        m, ref = check_softmax(lib, z, y, top_k=3)
        assert ref["count"] == 0
        check_softmax(lib, z, y, reduction="sum")
        check_softmax(lib, z, y, reduction="none")
        check_softmax(lib, z, np.zeros((0, 10), np.float32))


# -- result types --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=FLOAT_IDS)
def test_result_types(lib, rng, dtype):
    skip_unsupported(lib, dtype)
    z = make_logits(rng, (4, 3, 5), dtype)
    y = make_sparse(rng, (4, 3), 5)
    m = fx.softmax_cross_entropy(lib.to_lib(z), lib.to_lib(y), top_k=[1, 2])
    assert isinstance(m, fx.Metrics)
    for v in (m.loss, m.accuracy, m.count, m.top_k_accuracy[1], m.top_k_accuracy[2]):
        assert lib.is_native(v) and lib.to_numpy(v).shape == ()
    assert lib.to_numpy(m.loss).dtype == np.float64
    assert lib.to_numpy(m.count).dtype == np.int64 and int(m.count) == 12
    assert m.exact_match is None and m.correct is None and m.task == "multiclass"
    float(m.loss), float(m.accuracy)  # noqa: B018 - must work for every library
    m = fx.softmax_cross_entropy(lib.to_lib(z), lib.to_lib(y), reduction="none")
    row = np.float64 if np.dtype(dtype) == np.float64 else np.float32
    assert lib.to_numpy(m.loss).dtype == row and lib.to_numpy(m.loss).shape == (4, 3)
    assert lib.to_numpy(m.correct).dtype == np.bool_ and lib.to_numpy(m.correct).shape == (4, 3)
    assert m.top_k_accuracy == {}
    with pytest.raises(Exception):  # noqa: B017 - frozen
        m.loss = 0  # type: ignore[misc]


def test_numpy_results_are_ndarrays_not_scalars(rng):
    z = make_logits(rng, (5, 4), np.float32)
    m = fx.softmax_cross_entropy(z, make_sparse(rng, (5,), 4))
    assert type(m.loss) is np.ndarray and type(m.accuracy) is np.ndarray
    assert type(m.count) is np.ndarray


def test_list_input():
    m = fx.softmax_cross_entropy([[0.0, 0.0], [0.0, math.log(3.0)]], [0, 1])
    assert float(m.loss) == pytest.approx((math.log(2) + math.log(4 / 3)) / 2, rel=1e-6)
    assert float(m.accuracy) == 1.0


def test_dense_unnormalised_rows(lib, rng):
    """Multi-hot / unnormalised dense rows: w_i = sw_i * sum_c t_ic cw_c with class weights;
    without class weights the row weight is sw_i (README, "Weights")."""
    N, C = 21, 6
    z = make_logits(rng, (N, C), np.float32)
    t = (rng.random((N, C)) < 0.4).astype(np.float32)
    t[:, 0] = np.maximum(t[:, 0], t.sum(1) == 0)  # no all-zero row
    t[::5] *= 2.5
    cw = rng.random(C) + 0.5
    sw = dyadic_weights(rng, (N,), lo=1)
    for reduction in REDUCTIONS:
        check_softmax(lib, z, t, class_weight=cw, reduction=reduction)
        check_softmax(lib, z, t, class_weight=cw, sample_weight=sw, reduction=reduction,
                      label_smoothing=0.1)
        check_softmax(lib, z, t, sample_weight=sw, reduction=reduction)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("C", [33, 1000])
def test_dense_label_statistics_and_bad_rows(dtype, C):
    """The dense softmax label pass runs on three accumulators (an unsigned max of the bits,
    the sum, an integer 0/1 test) and exact tests only for rows that may be bad: one-hot, 0/1
    and sum-to-one counts, the label (first argmax of t) and the first bad row must equal the
    exact definitions for targets one ulp from 0 or 1, -0.0, above 1, and rows whose
    t - t*t terms cancel (the float 0/1 test once summed them; see also
    test_tile_kernels.py's label statistics)."""
    from fastxent import _state as S
    from fastxent import config
    from fastxent.backends import SoftmaxOptions
    from fastxent.backends import numba_cpu as E

    rng = np.random.default_rng(C)
    n = 40
    z = rng.standard_normal((n, C)).astype(dtype) * 3
    t = np.zeros((n, C))
    hot = rng.integers(0, C - 9, n)
    t[np.arange(n), hot] = 1.0
    one_minus = float(np.nextafter(np.float32(1), np.float32(0)))
    t[1, hot[1]] = one_minus                                  # soft
    t[2, hot[2] + 1] = 2.0 ** -149                            # soft
    t[3] = np.where(t[3] == 0.0, -0.0, t[3])                  # -0.0: still one-hot
    t[4, hot[4] + 1] = 1.0                                    # two-hot 0/1
    t[5, hot[5]] = 2.0
    t[5, hot[5] + 1:hot[5] + 9] = 0.5                         # 2 - 4 + 8 * 0.25 = 0
    t[6, hot[6] + 2] = 1.5                                    # above 1, later than the 1
    t[7, hot[7]] = 0.5
    t[7, hot[7] + 3] = 0.5                                    # sums to 1, label: first max
    tt = t.astype(dtype)
    p = E.softmax_xent(z, tt, SoftmaxOptions(dense=True, want_rows=True))
    t64 = tt.astype(np.float32).astype(np.float64)
    binary = np.all((t64 == 0.0) | (t64 == 1.0), axis=1)
    onehot = binary & ((t64 == 1.0).sum(1) == 1)
    sum1 = np.abs(t64.sum(1) - 1.0) <= config.SUM_TO_ONE_TOL
    c = p.counts
    assert (int(c[S.BINARY]), int(c[S.ONEHOT]), int(c[S.SUM1])) == \
        (int(binary.sum()), int(onehot.sum()), int(sum1.sum()))
    assert p.first_bad < 0
    # correct = the first argmax of z is the first argmax of t
    zz = z.astype(np.float64)
    np.testing.assert_array_equal(p.row_correct, zz.argmax(1) == t64.argmax(1))
    # a negative, NaN or infinite target makes its row bad (the first one is reported)
    for bad in (-1e-30, np.nan, np.inf, -np.inf):
        tb = tt.copy()
        tb[9, 5] = bad
        tb[13, 7] = bad
        assert E.softmax_xent(z, tb, SoftmaxOptions(dense=True)).first_bad == 9


@pytest.mark.parametrize("dtype", [np.float32, np.float64, BF16], ids=["f32", "f64", "bf16"])
@pytest.mark.parametrize("C", [4, 40, 1000])  # the tile, plain and general kernels
@pytest.mark.parametrize("dense", [False, True], ids=["sparse", "dense"])
def test_huge_tied_logits_beside_minus_inf(dtype, C, dense):
    """A row of logits ~1e30, three tied at the max, and one -inf takes the IEEE slow path;
    its loss is log 3 (the label is among the tied). Under fast-math LLVM summed the row's
    a_c (z_c - m - lse) as sum(a z) - (m + lse) sum(a), which lost lse to m: loss 0."""
    z = np.full((2, C), -1e30)
    z[:, :3] = 1e30
    z[:, 3] = -np.inf
    z[1, 3] = -1e30  # and the same row without the -inf (the vectorised path)
    z = z.astype(dtype)
    y = np.array([1, 2])
    labels = np.eye(C, dtype=np.float32)[y] if dense else y
    m = fx.softmax_cross_entropy(z, labels, reduction="none")
    np.testing.assert_allclose(m.loss, [math.log(3)] * 2, rtol=2e-6)
    for ls in (0.1, 1.0):  # smoothing puts mass on the -inf logit: an infinite loss
        m = fx.softmax_cross_entropy(z[:1], labels[:1], label_smoothing=ls, reduction="none")
        assert m.loss[0] == np.inf


@pytest.mark.parametrize("dense", [False, True], ids=["sparse", "dense"])
def test_rows_of_2_24_classes_and_more(dense):
    """Rows of 2**24 classes or more are computed in float64 (a float32 count of a row's
    classes is not exact there): one-hot label counts, accuracy and loss stay exact."""
    from fastxent import _state as S
    from fastxent.backends import SoftmaxOptions
    from fastxent.backends import numba_cpu as E

    C = (1 << 24) + 5
    z = np.zeros((2, C), dtype=np.float32)
    z[0, C - 1] = 3.0                    # row 0: the label C - 1 is the unique max
    z[1, 4] = 3.0                        # row 1: the label 2 is not
    y = np.array([C - 1, 2])
    if dense:
        t = np.zeros((2, C), dtype=np.float32)
        t[[0, 1], y] = 1.0
        p = E.softmax_xent(z, t, SoftmaxOptions(dense=True, want_rows=True))
        c = p.counts
        assert (int(c[S.BINARY]), int(c[S.ONEHOT]), int(c[S.SUM1])) == (2, 2, 2)
    else:
        p = E.softmax_xent(z, y, SoftmaxOptions(want_rows=True))
    np.testing.assert_array_equal(p.row_correct, [True, False])
    lse = np.log(np.exp(3.0) + (C - 1))
    np.testing.assert_allclose(p.row_loss.astype(np.float64), [lse - 3.0, lse], rtol=1e-6)


@pytest.mark.parametrize("C", [4, 5, 8, 10, 16])
@pytest.mark.parametrize("kind", ["sparse", "dense", "sigmoid"])
def test_full_tiles_of_common_class_counts(kind, C):
    """For a few common C the tile kernels transpose full tiles of contiguous rows with the
    class count a constant; a strided view of the same values takes the general transpose.
    Both must give the same row losses, bit for bit, and the same counts."""
    rng = np.random.default_rng(C)
    n = 64 * 3 + 5                                    # three full tiles and a partial one
    z = (rng.standard_normal((n, C)) * 3).astype(np.float32)
    z[7, 1] = z[7, 2] = z[7].max() + 1                # a tie for the first argmax
    y = rng.integers(0, C, n)
    wide = np.zeros((n, C + 3), np.float32)
    wide[:, :C] = z
    zs = wide[:, :C]                                  # same values, row stride C + 3
    if kind == "sigmoid":
        t = (rng.random((n, C)) < 0.4).astype(np.float32)
        a = fx.sigmoid_cross_entropy(z, t, reduction="none")
        b = fx.sigmoid_cross_entropy(zs, t, reduction="none")
    else:
        lab = np.eye(C, dtype=np.float32)[y] if kind == "dense" else y
        a = fx.softmax_cross_entropy(z, lab, reduction="none")
        b = fx.softmax_cross_entropy(zs, lab, reduction="none")
    np.testing.assert_array_equal(a.loss, b.loss)
    np.testing.assert_array_equal(a.correct, b.correct)
    if kind != "sigmoid":
        want = z.astype(np.float64).argmax(1) == y
        np.testing.assert_array_equal(a.correct, want)


@pytest.mark.parametrize("dense", [False, True], ids=["sparse", "dense"])
@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probs"])
def test_long_rows_summed_in_blocks(dense, from_logits):
    """Rows of 300k classes whose terms repeat a few values (integer logits), with label
    smoothing: the sums over a row run in float32 within blocks of numba_cpu.SUM_BLOCK
    classes and in float64 across them. One float32 sum per row was 1.2e-4 off on
    probabilities (2.4e-5 at 65k classes; every vector lane rounding the same way)."""
    rng = np.random.default_rng(23)
    C, ls = 300_000, 1.0
    z = rng.integers(-2, 3, (3, C)).astype(np.float64)
    d = z - z.max(axis=1, keepdims=True)
    y = rng.integers(0, C, 3)
    a = np.full((3, C), ls / C)
    a[np.arange(3), y] += 1 - ls
    if from_logits:
        x = z.astype(np.float32)
        g = d - np.log(np.exp(d).sum(axis=1, keepdims=True))
    else:
        x = (np.exp(d) / np.exp(d).sum(axis=1, keepdims=True)).astype(np.float32)
        eps = float(np.finfo(np.float32).eps)
        g = np.log(np.clip(x.astype(np.float64), eps, 1 - eps))
    want = np.array([math.fsum(-(a[i] * g[i])) for i in range(3)])
    labels = y
    if dense:
        labels = np.zeros((3, C), dtype=np.float32)
        labels[np.arange(3), y] = 1.0
    m = fx.softmax_cross_entropy(x, labels, from_logits=from_logits, label_smoothing=ls,
                                 reduction="none")
    assert_loss_close(m.loss, want, np.float32)
