"""fx.evaluate: task detection, the numbers of each task, and fx.TaskMismatchWarning in both
directions (the "binary_crossentropy reports 90% on a 50% model" trap and its reverse)."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from checks import (
    cast,
    compare,
    make_logits,
    make_soft,
    make_sparse,
    one_hot,
)
from reference import ref_sigmoid, ref_softmax

import fastxent as fx


def _evaluate(lib, z, y, **opts):
    """fx.evaluate that must not warn."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fx.evaluate(lib.to_lib(z), lib.to_lib(y), **opts)


def _check(lib, m, ref, z, reduction="mean"):
    kind = "softmax" if ref["exact_match"] is None else "sigmoid"
    shape = np.asarray(z).shape
    row_shape = shape if (kind == "sigmoid" and len(shape) == 1) else shape[:-1]
    compare(lib, m, ref, pred_dtype=np.asarray(z).dtype, reduction=reduction, kind=kind,
            row_shape=row_shape)


def trap_data(N=1000, C=10, seed=0):
    """Logits that are categorically right on exactly half the rows and, read element-wise as
    sigmoid outputs, right on 90% of the elements (positive only at each row's argmax)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, N)
    pred = y.copy()
    wrong = rng.permutation(N)[: N // 2]
    pred[wrong] = (y[wrong] + rng.integers(1, C, wrong.size)) % C
    z = -3.0 + 0.5 * rng.standard_normal((N, C))
    z[np.arange(N), pred] = 3.0 + 0.5 * rng.random(N)
    return z.astype(np.float32), one_hot(y, C), y


# -- detection ---------------------------------------------------------------------------------


@pytest.mark.parametrize("label_dtype", [np.int64, np.int32, np.uint8])
def test_integer_labels_are_multiclass(lib, rng, label_dtype):
    z = make_logits(rng, (30, 7), np.float32)
    y = make_sparse(rng, (30,), 7, label_dtype)
    m = _evaluate(lib, z, y, top_k=2)
    assert m.task == "multiclass"
    _check(lib, m, ref_softmax(z, y, top_k=2), z)


def test_integer_labels_three_d(lib, rng):
    z = make_logits(rng, (2, 5, 4), np.float32)
    y = make_sparse(rng, (2, 5), 4)
    y[0, 0] = -100
    m = _evaluate(lib, z, y, ignore_index=-100, reduction="none")
    assert m.task == "multiclass"
    _check(lib, m, ref_softmax(z, y, ignore_index=-100, reduction="none"), z, "none")


@pytest.mark.parametrize("shape", [(40,), (40, 1)], ids=["N", "Nx1"])
@pytest.mark.parametrize("target_dtype", [np.float32, np.float64, np.bool_])
def test_one_column_is_binary(lib, rng, shape, target_dtype):
    z = make_logits(rng, shape, np.float32)
    t = (rng.random(shape) < 0.5).astype(target_dtype)
    m = _evaluate(lib, z, t)
    assert m.task == "binary"
    _check(lib, m, ref_sigmoid(z, t), z)
    m = _evaluate(lib, z, t, reduction="none", threshold=0.3)
    _check(lib, m, ref_sigmoid(z, t, reduction="none", threshold=0.3), z, "none")


def test_soft_binary_targets_are_binary(lib, rng):
    z = make_logits(rng, (25,), np.float64)
    t = rng.random(25)
    m = _evaluate(lib, z, t)
    assert m.task == "binary"
    _check(lib, m, ref_sigmoid(z, t), z)


@pytest.mark.parametrize("label_dtype", [np.float32, np.float64, np.bool_, np.int64, np.float16])
def test_one_hot_is_multiclass(lib, rng, label_dtype):
    z = make_logits(rng, (50, 10), np.float32)
    y = make_sparse(rng, (50,), 10)
    t = one_hot(y, 10, label_dtype)
    m = _evaluate(lib, z, t, top_k=(1, 3))
    assert m.task == "multiclass"
    _check(lib, m, ref_softmax(z, t, top_k=(1, 3)), z)
    # and the numbers are those of the sparse labels
    _check(lib, m, ref_softmax(z, y, top_k=(1, 3)), z)


@pytest.mark.parametrize("label_dtype", [np.float32, np.float16])
def test_rows_summing_to_one_are_multiclass(lib, rng, label_dtype):
    z = make_logits(rng, (30, 6), np.float32)
    t = make_soft(rng, (30, 6), label_dtype)  # sums to 1 up to the dtype's rounding
    assert np.all(np.abs(t.astype(np.float64).sum(1) - 1) < 1e-3)
    m = _evaluate(lib, z, t)
    assert m.task == "multiclass"
    _check(lib, m, ref_softmax(z, t), z)


@pytest.mark.parametrize("label_dtype", [np.float32, np.bool_, np.int8])
def test_multi_hot_is_multilabel(lib, rng, label_dtype):
    N, C = 40, 8
    z = make_logits(rng, (N, C), np.float32)
    t = (rng.random((N, C)) < 0.35)
    t[0] = [1, 1, 0, 0, 0, 0, 0, 0]  # at least one row with two positives
    t = t.astype(label_dtype)
    m = _evaluate(lib, z, t)
    assert m.task == "multilabel"
    _check(lib, m, ref_sigmoid(z, t), z)
    m = _evaluate(lib, z, t, reduction="none", threshold=0.7)
    _check(lib, m, ref_sigmoid(z, t, reduction="none", threshold=0.7), z, "none")


def test_one_hot_rows_plus_one_multi_hot_row_is_multilabel(lib, rng):
    z = make_logits(rng, (20, 5), np.float32)
    t = one_hot(make_sparse(rng, (20,), 5), 5)
    t[7] = [1, 0, 1, 0, 0]
    m = _evaluate(lib, z, t)
    assert m.task == "multilabel"
    _check(lib, m, ref_sigmoid(z, t), z)


def test_soft_rows_not_summing_to_one_are_multilabel(lib, rng):
    z = make_logits(rng, (20, 5), np.float32)
    t = cast(rng.random((20, 5)) * 0.9, np.float32)
    m = _evaluate(lib, z, t)
    assert m.task == "multilabel"
    _check(lib, m, ref_sigmoid(z, t), z)


def test_explicit_task_that_agrees_does_not_warn(lib, rng):
    z = make_logits(rng, (20, 5), np.float32)
    y = make_sparse(rng, (20,), 5)
    _check(lib, _evaluate(lib, z, y, task="multiclass"), ref_softmax(z, y), z)
    _check(lib, _evaluate(lib, z, one_hot(y, 5), task="multiclass"), ref_softmax(z, y), z)
    t = (rng.random((20, 5)) < 0.5).astype(np.float32)
    t[0] = [1, 1, 1, 0, 0]
    _check(lib, _evaluate(lib, z, t, task="multilabel"), ref_sigmoid(z, t), z)
    zb = z[:, 0]
    _check(lib, _evaluate(lib, zb, t[:, 0], task="binary"), ref_sigmoid(zb, t[:, 0]), zb)


def test_from_probabilities(lib, rng):
    z = make_logits(rng, (20, 5), np.float64)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = make_sparse(rng, (20,), 5)
    _check(lib, _evaluate(lib, p, y, from_logits=False),
           ref_softmax(p, y, from_logits=False), p)
    s = 1 / (1 + np.exp(-z))
    t = (rng.random((20, 5)) < 0.5).astype(np.float64)
    t[0] = [1, 1, 0, 0, 0]
    _check(lib, _evaluate(lib, s, t, from_logits=False),
           ref_sigmoid(s, t, from_logits=False), s)


# -- the trap ----------------------------------------------------------------------------------


def test_trap_numbers_against_reference():
    z, onehot, y = trap_data()
    cat = ref_softmax(z, y)["accuracy"]
    elem = ref_sigmoid(z, onehot)["accuracy"]
    assert cat == 0.5
    assert elem == 0.9


@pytest.mark.parametrize("task", ["binary", "multilabel"])
def test_trap_binary_on_one_hot_warns(lib, task):
    z, onehot, y = trap_data()
    with pytest.warns(fx.TaskMismatchWarning) as record:
        m = fx.evaluate(lib.to_lib(z), lib.to_lib(onehot), task=task)
    msgs = [str(w.message) for w in record if issubclass(w.category, fx.TaskMismatchWarning)]
    assert len(msgs) == 1, msgs
    msg = msgs[0]
    assert re.search(r"categorical.*accuracy.*\d", msg, re.I | re.S), msg
    assert re.search(r"binary|element", msg, re.I), msg
    # both numbers are in the message: 50% categorical, 90% element-wise
    assert re.search(r"0\.50*(?!\d)|50(\.0+)?\s?%", msg), msg
    assert re.search(r"0\.90*(?!\d)|90(\.0+)?\s?%", msg), msg
    # the result is the asked task's: element-wise accuracy of the sigmoid reading
    ref = ref_sigmoid(z, onehot)
    assert float(lib.to_numpy(m.accuracy)) == ref["accuracy"] == 0.9
    assert float(lib.to_numpy(m.exact_match)) == ref["exact_match"] == 0.5
    np.testing.assert_allclose(float(lib.to_numpy(m.loss)), ref["loss"], rtol=2e-6, atol=1e-6)
    assert m.task in ("binary", "multilabel")


@pytest.mark.parametrize("label_dtype", [np.float32, np.bool_])
def test_multiclass_on_multi_hot_warns(lib, rng, label_dtype):
    N, C = 60, 6
    z = make_logits(rng, (N, C), np.float32)
    t = (rng.random((N, C)) < 0.4)
    t[:, 0] |= t.sum(1) < 2  # every row has >= 2 positives
    t[:, 1] |= t.sum(1) < 2
    t = t.astype(label_dtype)
    with pytest.warns(fx.TaskMismatchWarning) as record:
        m = fx.evaluate(lib.to_lib(z), lib.to_lib(t), task="multiclass")
    msgs = [str(w.message) for w in record if issubclass(w.category, fx.TaskMismatchWarning)]
    assert len(msgs) == 1, msgs
    msg = msgs[0]
    assert re.search(r"categorical.*accuracy.*\d", msg, re.I | re.S), msg
    assert re.search(r"binary|element", msg, re.I), msg
    assert m.task == "multiclass"
    ref = ref_softmax(z, t)
    assert float(lib.to_numpy(m.accuracy)) == ref["accuracy"]
    assert int(lib.to_numpy(m.count)) == N


# (C, j): the 1 and the stray value in columns 0 and j, j a multiple of 16 and 64, so that
# they meet in one vector lane of the row kernels; C <= 32 runs the tile kernels
@pytest.mark.parametrize("C, j", [(10, 9), (33, 32), (1000, 512)])
@pytest.mark.parametrize("before", [True, False])  # the stray value before / after the 1
def test_a_near_zero_target_makes_a_row_not_one_hot(lib, C, j, before):
    """One-hot rows but one, which also has a 1e-30: not every row is exactly one-hot, so
    task='binary' does not warn. (A fast-math float test read such a row as one-hot when the
    1 came after the 1e-30 in the same vector lane.)"""
    rng = np.random.default_rng(C)
    N = 100
    z = make_logits(rng, (N, C), np.float32)
    y = rng.integers(0, C, N)
    t = np.eye(C, dtype=np.float32)[y]
    t[7] = 0
    t[7, j if before else 0] = 1
    t[7, 0 if before else j] = 1e-30
    with warnings.catch_warnings():
        warnings.simplefilter("error", fx.TaskMismatchWarning)
        fx.evaluate(lib.to_lib(z), lib.to_lib(t), task="binary")
    t[7, 0 if before else j] = 0  # now exactly one-hot: the trap warning
    with pytest.warns(fx.TaskMismatchWarning):
        fx.evaluate(lib.to_lib(z), lib.to_lib(t), task="binary")


def test_no_warning_for_one_hot_auto_and_multiclass(lib):
    z, onehot, y = trap_data(N=200)
    m = _evaluate(lib, z, onehot)
    assert m.task == "multiclass" and float(lib.to_numpy(m.accuracy)) == ref_softmax(
        z, y)["accuracy"]
    _evaluate(lib, z, onehot, task="multiclass")
    _evaluate(lib, z, y, task="multiclass")


def test_multiclass_warning_counts_rows_without_one_positive(rng):
    """0/1 labels with an all-zero row (no multi-hot row at all): the warning says how many
    rows lack exactly one positive and does not call them multi-hot rows; evaluate and the
    Evaluator give the same text."""
    z = rng.standard_normal((4, 3)).astype(np.float32)
    t = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 1]], np.float32)
    with pytest.warns(fx.TaskMismatchWarning, match=r"1 of the 4 label rows .* without "
                                                    r"exactly one positive") as want:
        fx.evaluate(z, t, task="multiclass")
    ev = fx.Evaluator(task="multiclass")
    ev.update(z, t)
    with pytest.warns(fx.TaskMismatchWarning) as got:
        ev.result()
    assert str(got[0].message) == str(want[0].message)
