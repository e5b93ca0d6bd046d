"""Bad input: each case of SPEC's table with its exception type and a message regex, and a valid
call right after every error still gives the reference numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from checks import check_sigmoid, check_softmax, make_logits, make_sparse, one_hot

import fastxent as fx

N, C = 6, 10
RNG = np.random.default_rng(2024)
Z = make_logits(RNG, (N, C), np.float32)
Y = make_sparse(RNG, (N,), C)
T = (RNG.random((N, C)) < 0.3).astype(np.float32)  # sigmoid targets
OH = one_hot(Y, C)


def sm(lib, z=None, y=None, **kw):
    z = Z if z is None else z
    y = Y if y is None else y
    kw = {k: lib.to_lib(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    return fx.softmax_cross_entropy(lib.to_lib(z), lib.to_lib(y), **kw)


def sg(lib, z=None, t=None, **kw):
    z = Z if z is None else z
    t = T if t is None else t
    kw = {k: lib.to_lib(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    return fx.sigmoid_cross_entropy(lib.to_lib(z), lib.to_lib(t), **kw)


def ev(lib, z=None, y=None, **kw):
    z = Z if z is None else z
    y = Y if y is None else y
    return fx.evaluate(lib.to_lib(z), lib.to_lib(y), **kw)


def _y_with(**bad):
    y = Y.copy()
    for row, value in bad.items():
        y[int(row[1:])] = value
    return y


def _oh_with(row, col, value):
    t = OH.copy()
    t[row, col] = value
    return t


def _t_with(row, col, value):
    t = T.copy()
    t[row, col] = value
    return t


# (id, call(lib), exception, regex, numpy_only)
CASES = [
    # -- dtypes --------------------------------------------------------------------------------
    ("int-logits", lambda lib: sm(lib, z=np.zeros((N, C), np.int32)), TypeError, "floating",
     False),
    ("int64-logits-sigmoid", lambda lib: sg(lib, z=np.zeros((N, C), np.int64)), TypeError,
     "floating", False),
    ("bool-logits", lambda lib: sm(lib, z=np.zeros((N, C), bool)), TypeError, "floating",
     False),
    ("complex-logits", lambda lib: sm(lib, z=Z.astype(np.complex64)), TypeError, "dtype",
     False),
    ("object-logits", lambda lib: sm(lib, z=Z.astype(object)), TypeError, "dtype", True),
    ("byteswapped-logits", lambda lib: sm(lib, z=Z.astype(Z.dtype.newbyteorder(">"))),
     TypeError, "byte order", True),
    ("byteswapped-labels", lambda lib: sm(lib, y=Y.astype(Y.dtype.newbyteorder(">"))),
     TypeError, "byte order", True),
    ("byteswapped-sigmoid", lambda lib: sg(lib, z=Z.astype(">f8")), TypeError, "byte order",
     True),
    ("float-ids", lambda lib: sm(lib, y=Y.astype(np.float32)), TypeError, "integer", False),
    ("float64-ids", lambda lib: sm(lib, y=Y.astype(np.float64)), TypeError, "integer", False),
    # -- label range ---------------------------------------------------------------------------
    ("label-too-big", lambda lib: sm(lib, y=_y_with(r3=12)), IndexError,
     r"label 12 at row 3 is out of range \[0, 10\)", False),
    ("label-equal-C", lambda lib: sm(lib, y=_y_with(r2=10, r4=11)), IndexError,
     r"(?s)(?=.*\brow 2\b)(?=.*\b10\b)", False),
    ("label-negative", lambda lib: sm(lib, y=_y_with(r1=-1, r5=50)), IndexError,
     r"(?s)(?=.*\brow 1\b)(?=.*-1\b)(?=.*\b10\b)", False),
    ("label-negative-not-the-ignore-index",
     lambda lib: sm(lib, y=_y_with(r0=-100, r4=-3), ignore_index=-100), IndexError,
     r"(?s)(?=.*\brow 4\b)(?=.*-3\b)(?=.*\b10\b)", False),
    ("label-bad-int8", lambda lib: sm(lib, y=_y_with(r5=99).astype(np.int8)), IndexError,
     r"(?s)(?=.*\brow 5\b)(?=.*\b99\b)(?=.*\b10\b)", False),
    ("label-bad-uint64", lambda lib: sm(lib, y=_y_with(r0=2**40).astype(np.uint64)),
     IndexError, r"(?s)(?=.*\brow 0\b)(?=.*\b1099511627776\b)", True),
    ("evaluate-label-bad", lambda lib: ev(lib, y=_y_with(r3=12)), IndexError,
     r"(?s)(?=.*\brow 3\b)(?=.*\b12\b)(?=.*\b10\b)", False),
    # -- shapes --------------------------------------------------------------------------------
    ("rows-mismatch", lambda lib: sm(lib, y=Y[:-1]), ValueError, "shape", False),
    ("labels-2d-wrong", lambda lib: sm(lib, y=Y.reshape(2, 3)), ValueError, "shape", False),
    ("dense-shape-mismatch", lambda lib: sm(lib, y=OH[:, :-1]), ValueError, "shape", False),
    ("logits-0d", lambda lib: sm(lib, z=np.float32(1.0).reshape(()), y=np.int64(0).reshape(())),
     ValueError, "shape", False),
    ("C-zero", lambda lib: sm(lib, z=np.zeros((N, 0), np.float32)), ValueError, "shape",
     False),
    ("sigmoid-shape-mismatch", lambda lib: sg(lib, t=T[:, :-1]), ValueError, "shape", False),
    ("sigmoid-rows-mismatch", lambda lib: sg(lib, t=T[:-1]), ValueError, "shape", False),
    ("sigmoid-C-zero", lambda lib: sg(lib, z=np.zeros((N, 0), np.float32),
                                      t=np.zeros((N, 0), np.float32)), ValueError, "shape",
     False),
    ("sigmoid-0d", lambda lib: sg(lib, z=np.zeros((), np.float32), t=np.zeros((), np.float32)),
     ValueError, "shape", False),
    # -- values --------------------------------------------------------------------------------
    ("target-above-1", lambda lib: sg(lib, t=_t_with(2, 3, 1.5)), ValueError, r"\[0, 1\]",
     False),
    ("target-negative", lambda lib: sg(lib, t=_t_with(0, 0, -0.25)), ValueError, r"\[0, 1\]",
     False),
    ("target-nan", lambda lib: sg(lib, t=_t_with(4, 1, np.nan)), ValueError, r"\[0, 1\]",
     False),
    ("target-int-2", lambda lib: sg(lib, t=_t_with(1, 1, 2).astype(np.int64)), ValueError,
     r"\[0, 1\]", False),
    ("binary-target-above-1", lambda lib: sg(lib, z=Z[:, 0], t=_t_with(2, 0, 3.0)[:, 0]),
     ValueError, r"\[0, 1\]", False),
    ("dense-negative", lambda lib: sm(lib, y=_oh_with(1, 2, -0.5)), ValueError,
     "finite|non-negative", False),
    ("dense-nan", lambda lib: sm(lib, y=_oh_with(3, 2, np.nan)), ValueError,
     "finite|non-negative", False),
    ("dense-inf", lambda lib: sm(lib, y=_oh_with(5, 0, np.inf)), ValueError,
     "finite|non-negative", False),
    ("dense-negative-int", lambda lib: sm(lib, y=_oh_with(1, 2, -1).astype(np.int32)),
     ValueError, "finite|non-negative", False),
    # -- options -------------------------------------------------------------------------------
    ("reduction", lambda lib: sm(lib, reduction="avg"), ValueError, "reduction", False),
    ("reduction-sigmoid", lambda lib: sg(lib, reduction="batchmean"), ValueError, "reduction",
     False),
    ("ls-negative", lambda lib: sm(lib, label_smoothing=-0.1), ValueError, "label_smoothing",
     False),
    ("ls-above-1", lambda lib: sm(lib, label_smoothing=1.5), ValueError, "label_smoothing",
     False),
    ("ls-nan", lambda lib: sm(lib, label_smoothing=float("nan")), ValueError, "label_smoothing",
     False),
    ("ls-sigmoid", lambda lib: sg(lib, label_smoothing=2.0), ValueError, "label_smoothing",
     False),
    ("class_weight-length", lambda lib: sm(lib, class_weight=np.ones(C - 1)), ValueError,
     "class_weight", False),
    ("class_weight-negative", lambda lib: sm(lib, class_weight=-np.ones(C)), ValueError,
     "class_weight", False),
    ("class_weight-nan", lambda lib: sm(lib, class_weight=np.r_[np.ones(C - 1), np.nan]),
     ValueError, "class_weight", False),
    ("class_weight-inf", lambda lib: sm(lib, class_weight=np.r_[np.inf, np.ones(C - 1)]),
     ValueError, "class_weight", False),
    ("sample_weight-length", lambda lib: sm(lib, sample_weight=np.ones(N + 1)), ValueError,
     "sample_weight", False),
    ("sample_weight-negative", lambda lib: sm(lib, sample_weight=np.r_[-1.0, np.ones(N - 1)]),
     ValueError, "sample_weight", False),
    ("sample_weight-nan", lambda lib: sm(lib, sample_weight=np.r_[np.ones(N - 1), np.nan]),
     ValueError, "sample_weight", False),
    ("sample_weight-sigmoid-length", lambda lib: sg(lib, sample_weight=np.ones(N - 1)),
     ValueError, "sample_weight", False),
    ("sample_weight-sigmoid-inf", lambda lib: sg(lib, sample_weight=np.r_[np.inf,
                                                                          np.ones(N - 1)]),
     ValueError, "sample_weight", False),
    ("pos_weight-length", lambda lib: sg(lib, pos_weight=np.ones(C + 1)), ValueError,
     "pos_weight", False),
    ("pos_weight-negative", lambda lib: sg(lib, pos_weight=np.r_[-2.0, np.ones(C - 1)]),
     ValueError, "pos_weight", False),
    ("pos_weight-nan", lambda lib: sg(lib, pos_weight=np.full(C, np.nan)), ValueError,
     "pos_weight", False),
    ("top_k-zero", lambda lib: sm(lib, top_k=0), ValueError, "top_k", False),
    ("top_k-above-C", lambda lib: sm(lib, top_k=C + 1), ValueError, "top_k", False),
    ("top_k-list-bad", lambda lib: sm(lib, top_k=(1, 5, C + 1)), ValueError, "top_k", False),
    ("top_k-negative", lambda lib: sm(lib, top_k=-1), ValueError, "top_k", False),
    ("top_k-float", lambda lib: sm(lib, top_k=2.0), ValueError, "top_k must be an int", False),
    ("threshold-above-1", lambda lib: sg(lib, threshold=1.5), ValueError, "threshold", False),
    ("threshold-negative", lambda lib: sg(lib, threshold=-0.1), ValueError, "threshold", False),
    ("threshold-nan", lambda lib: sg(lib, threshold=float("nan")), ValueError, "threshold",
     False),
    ("ignore_index-dense", lambda lib: sm(lib, y=OH, ignore_index=-100), ValueError,
     "ignore_index", False),
    ("task-unknown", lambda lib: ev(lib, task="regression"), ValueError, "task", False),
    ("task-typo", lambda lib: ev(lib, task="multi-class"), ValueError, "task", False),
]


def _valid_calls_still_work(lib):
    check_softmax(lib, Z, Y, top_k=(1, 3))
    check_softmax(lib, Z, OH, reduction="none")
    check_sigmoid(lib, Z, T, reduction="none")


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(lib, case):
    _, call, exc, pattern, numpy_only = case
    if numpy_only and lib.name != "numpy":
        pytest.skip(f"{lib.name} cannot hold this input")
    with pytest.raises(exc, match=pattern):
        call(lib)
    _valid_calls_still_work(lib)


def test_index_error_names_first_bad_row_on_large_input(lib, rng):
    z = make_logits(rng, (5000, 7), np.float32)
    y = make_sparse(rng, (5000,), 7)
    y[[4321, 4500, 4999]] = [7, -2, 100]
    with pytest.raises(IndexError, match=r"(?s)(?=.*\brow 4321\b)(?=.*\b7\b)"):
        fx.softmax_cross_entropy(lib.to_lib(z), lib.to_lib(y))
    with pytest.raises(IndexError, match=r"row 4321\b"):
        fx.softmax_cross_entropy(lib.to_lib(z), lib.to_lib(y), reduction="none", top_k=2)
    check_softmax(lib, z, np.clip(y, 0, 6))


@pytest.mark.parametrize("bad", [12, -5, 10])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_validate_false_bad_label_gives_nan_row(lib, rng, bad, reduction):
    y = Y.copy()
    y[3] = bad
    m = fx.softmax_cross_entropy(lib.to_lib(Z), lib.to_lib(y), validate=False,
                                 reduction=reduction, top_k=(1, 2))
    if reduction == "none":
        loss = lib.to_numpy(m.loss)
        correct = lib.to_numpy(m.correct)
        assert math.isnan(loss[3]) and not correct[3]
        good = np.arange(N) != 3
        ok, ref = check_softmax(lib, Z[good], Y[good], reduction="none")
        np.testing.assert_allclose(loss[good], ref["loss"], rtol=2e-6, atol=1e-6)
        np.testing.assert_array_equal(correct[good], ref["correct"])
    else:
        assert math.isnan(float(lib.to_numpy(m.loss)))
    # never counted as right, nor in a top-k
    good = np.arange(N) != 3
    from reference import ref_softmax

    ref = ref_softmax(Z[good], Y[good], top_k=(1, 2), reduction="sum")
    n_correct = round(ref["accuracy"] * ref["count"])
    acc = float(lib.to_numpy(m.accuracy))
    count = int(lib.to_numpy(m.count))
    assert count in (N - 1, N)  # the bad row may or may not be counted, but never right
    assert acc == n_correct / count
    assert float(lib.to_numpy(m.top_k_accuracy[2])) == round(
        ref["top_k_accuracy"][2] * ref["count"]) / count
    _valid_calls_still_work(lib)


def test_validate_false_valid_input_same_numbers(lib, rng):
    z = make_logits(rng, (50, 9), np.float32)
    y = make_sparse(rng, (50,), 9)
    a = fx.softmax_cross_entropy(lib.to_lib(z), lib.to_lib(y), reduction="none")
    b = fx.softmax_cross_entropy(lib.to_lib(z), lib.to_lib(y), reduction="none", validate=False)
    np.testing.assert_array_equal(lib.to_numpy(a.loss), lib.to_numpy(b.loss))
    t = (rng.random((50, 9)) < 0.5).astype(np.float32)
    a = fx.sigmoid_cross_entropy(lib.to_lib(z), lib.to_lib(t), reduction="none")
    b = fx.sigmoid_cross_entropy(lib.to_lib(z), lib.to_lib(t), reduction="none",
                                 validate=False)
    np.testing.assert_array_equal(lib.to_numpy(a.loss), lib.to_numpy(b.loss))


def test_nan_and_inf_logits_do_not_raise(lib):
    z = Z.copy()
    z[0, 0] = np.nan
    z[1, 1] = np.inf
    z[2, 2] = -np.inf
    check_softmax(lib, z, Y, reduction="none")
    check_sigmoid(lib, z[:1], T[:1], reduction="none")


def test_error_messages_say_how_to_fix():
    with pytest.raises(TypeError, match=r"float32|astype"):
        fx.softmax_cross_entropy(np.zeros((N, C), np.int32), Y)
    with pytest.raises(TypeError, match=r"(?i)integer"):
        fx.softmax_cross_entropy(Z, Y.astype(np.float32))
