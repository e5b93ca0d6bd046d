"""Pin the reference implementations themselves: hand-computed tiny cases, and agreement with
PyTorch's float64 ``cross_entropy`` / ``binary_cross_entropy_with_logits`` where torch exists.

Nothing here imports fastxent: these tests must pass before the package exists.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from reference import ref_sigmoid, ref_softmax, topk_rank, widen

LOG2 = math.log(2.0)
EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)


def _torch():
    return pytest.importorskip("torch", reason="torch is not installed: no second oracle")


# -- softmax: hand-computed --------------------------------------------------------------------


def test_softmax_uniform_row_and_first_index_tie():
    z = np.zeros((1, 2), np.float32)
    r0 = ref_softmax(z, np.array([0]))
    r1 = ref_softmax(z, np.array([1]))
    assert r0["loss"] == pytest.approx(LOG2, rel=1e-15)
    assert r1["loss"] == pytest.approx(LOG2, rel=1e-15)
    assert r0["accuracy"] == 1.0  # tie: first index wins
    assert r1["accuracy"] == 0.0
    assert r0["count"] == 1 and r0["exact_match"] is None and r0["task"] == "multiclass"


def test_softmax_three_classes():
    z = np.array([[1.0, 2.0, 3.0]])
    r = ref_softmax(z, np.array([2]), reduction="none")
    assert r["loss"][0] == pytest.approx(math.log(1 + math.exp(-1) + math.exp(-2)), rel=1e-15)
    assert r["loss"][0] == pytest.approx(0.40760596444437554, rel=1e-15)
    assert r["correct"].tolist() == [True]
    r = ref_softmax(z, np.array([0]), reduction="sum")
    assert r["loss"] == pytest.approx(math.log(math.exp(1) + math.exp(2) + math.exp(3)) - 1)
    assert r["accuracy"] == 0.0


def test_softmax_big_offset_is_exact_in_float64():
    z = np.array([[1e6, 1e6 + 1.0]])
    r = ref_softmax(z, np.array([1]))
    assert r["loss"] == pytest.approx(math.log1p(math.exp(-1.0)), rel=1e-15)


def test_softmax_label_smoothing():
    z = np.array([[0.0, math.log(3.0)]])  # p = [1/4, 3/4]
    r = ref_softmax(z, np.array([1]), label_smoothing=0.5)  # t' = [1/4, 3/4]
    assert r["loss"] == pytest.approx(0.25 * math.log(4) + 0.75 * math.log(4 / 3), rel=1e-14)
    r = ref_softmax(np.zeros((1, 2)), np.array([0]), label_smoothing=0.2)
    assert r["loss"] == pytest.approx(LOG2, rel=1e-15)


def test_softmax_weights():
    z = np.array([[0.0, 0.0], [0.0, math.log(3.0)]])
    y = np.array([0, 1])
    l0, l1 = LOG2, math.log(4 / 3)
    cw = np.array([2.0, 0.5])
    sw = np.array([1.0, 3.0])
    r = ref_softmax(z, y, class_weight=cw, sample_weight=sw)
    w0, w1 = 1.0 * 2.0, 3.0 * 0.5
    assert r["loss"] == pytest.approx((w0 * l0 + w1 * l1) / (w0 + w1), rel=1e-14)
    # accuracy weighted by sample_weight only: row0 (tie -> class 0) right, row1 right
    assert r["accuracy"] == 1.0
    r = ref_softmax(z, y, class_weight=cw, sample_weight=sw, reduction="none")
    np.testing.assert_allclose(r["loss"], [w0 * l0, w1 * l1], rtol=1e-14)
    r = ref_softmax(z, np.array([1, 0]), sample_weight=sw)  # both rows wrong... row0 tie->0
    assert r["accuracy"] == 0.0
    r = ref_softmax(z, np.array([0, 0]), sample_weight=sw)  # row0 right (w 1), row1 wrong (w 3)
    assert r["accuracy"] == 0.25
    # dense weight = sw * sum_c t_c cw_c
    t = np.array([[0.5, 0.5], [0.0, 1.0]])
    r = ref_softmax(z, t, class_weight=cw, sample_weight=sw, reduction="none")
    l0d = 0.5 * LOG2 + 0.5 * LOG2
    np.testing.assert_allclose(r["loss"], [1.0 * 1.25 * l0d, 3.0 * 0.5 * l1], rtol=1e-14)


def test_softmax_ignore_index_and_empty():
    z = np.array([[0.0, 1.0], [2.0, 0.0]])
    r = ref_softmax(z, np.array([-100, 0]), ignore_index=-100, reduction="none")
    assert r["count"] == 1
    assert r["loss"][0] == 0.0 and not r["correct"][0] and r["correct"][1]
    r = ref_softmax(z, np.array([-100, -100]), ignore_index=-100)
    assert math.isnan(r["loss"]) and math.isnan(r["accuracy"]) and r["count"] == 0
    r = ref_softmax(z, np.array([-100, -100]), ignore_index=-100, reduction="sum", top_k=1)
    assert r["loss"] == 0.0 and math.isnan(r["top_k_accuracy"][1])
    r = ref_softmax(np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    assert math.isnan(r["loss"]) and math.isnan(r["accuracy"]) and r["count"] == 0
    r = ref_softmax(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), reduction="none")
    assert r["loss"].shape == (0,) and r["correct"].shape == (0,)


def test_softmax_non_finite():
    z = np.array([
        [0.0, np.nan, 1.0],  # NaN row
        [0.0, np.inf, 1.0],  # +inf: NaN loss (max-shift), argmax still 1
        [-np.inf, 0.0, 1.0],  # target logit -inf with finite max: +inf
        [-np.inf, 0.0, 1.0],  # -inf elsewhere is harmless
    ])
    r = ref_softmax(z, np.array([2, 1, 0, 2]), reduction="none", top_k=3)
    assert math.isnan(r["loss"][0]) and math.isnan(r["loss"][1])
    assert r["loss"][2] == math.inf
    assert r["loss"][3] == pytest.approx(math.log1p(math.exp(-1.0)), rel=1e-15)
    assert r["correct"].tolist() == [False, True, False, True]
    assert r["top_k_accuracy"][3] == 0.75  # the NaN row is in no top-k, even k = C


def test_softmax_dense_zero_target_with_minus_inf():
    z = np.array([[-np.inf, 0.0, 0.0]])
    r = ref_softmax(z, np.array([[0.0, 1.0, 0.0]]))
    assert r["loss"] == pytest.approx(LOG2, rel=1e-15)  # 0 * -inf contributes 0
    r = ref_softmax(z, np.array([1]))
    assert r["loss"] == pytest.approx(LOG2, rel=1e-15)
    r = ref_softmax(z, np.array([1]), label_smoothing=0.1)
    assert r["loss"] == math.inf


def test_softmax_dense_accuracy_uses_first_argmax_of_labels():
    z = np.array([[3.0, 1.0, 2.0]])
    assert ref_softmax(z, np.array([[0.4, 0.2, 0.4]]))["accuracy"] == 1.0
    assert ref_softmax(z, np.array([[0.2, 0.4, 0.4]]))["accuracy"] == 0.0


def test_softmax_probabilities_clip():
    p = np.array([[0.0, 1.0]], np.float32)
    assert ref_softmax(p, np.array([0]), from_logits=False)["loss"] == pytest.approx(
        -math.log(EPS32), rel=1e-15)
    assert ref_softmax(p, np.array([1]), from_logits=False)["loss"] == pytest.approx(
        -math.log1p(-EPS32), rel=1e-15)
    p64 = p.astype(np.float64)
    assert ref_softmax(p64, np.array([0]), from_logits=False)["loss"] == pytest.approx(
        -math.log(EPS64), rel=1e-15)
    p16 = p.astype(np.float16)  # float16 input is computed in float32: float32's eps
    assert ref_softmax(p16, np.array([0]), from_logits=False)["loss"] == pytest.approx(
        -math.log(EPS32), rel=1e-15)
    p = np.array([[0.25, 0.75]])
    assert ref_softmax(p, np.array([1]), from_logits=False)["loss"] == pytest.approx(
        math.log(4 / 3), rel=1e-15)


def test_topk_rank():
    row = np.array([1.0, 3.0, 3.0, 0.0])
    assert topk_rank(row, 1) == 0
    assert topk_rank(row, 2) == 1  # tie with an earlier index
    assert topk_rank(row, 0) == 2
    assert topk_rank(row, 3) == 3
    r = ref_softmax(row[None], np.array([2]), top_k=(1, 2))
    assert r["top_k_accuracy"] == {1: 0.0, 2: 1.0}
    assert r["accuracy"] == 0.0


def test_widen_is_exact_for_bfloat16_and_float16():
    x = np.array([1.0 + 2**-7, -3.140625, 65504.0])
    assert widen(x.astype(ml_dtypes.bfloat16)).tolist() == [1.0 + 2**-7, -3.140625, 65536.0]
    assert widen(x.astype(np.float16)).tolist() == [1.0078125, -3.140625, 65504.0]


# -- sigmoid: hand-computed --------------------------------------------------------------------


def test_sigmoid_basic():
    r = ref_sigmoid(np.array([0.0]), np.array([1.0]))
    assert r["loss"] == pytest.approx(LOG2, rel=1e-15)
    assert r["task"] == "binary" and r["count"] == 1
    r = ref_sigmoid(np.zeros((1, 2)), np.array([[1.0, 0.0]]))
    assert r["loss"] == pytest.approx(LOG2, rel=1e-15)
    assert r["accuracy"] == 0.5  # z > 0 is False for both; targets [1, 0]
    assert r["exact_match"] == 0.0 and r["task"] == "multilabel"
    z = np.array([[2.0, -1.0, 3.0]])
    t = np.array([[1.0, 0.0, 0.0]])
    r = ref_sigmoid(z, t, reduction="none")
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0))
                + 3.0 + math.log1p(math.exp(-3.0))) / 3
    assert r["loss"][0] == pytest.approx(expected, rel=1e-15)
    assert r["correct"].tolist() == [False]
    r = ref_sigmoid(z, t)
    assert r["accuracy"] == 2 / 3 and r["exact_match"] == 0.0


def test_sigmoid_pos_weight_and_smoothing():
    r = ref_sigmoid(np.array([0.0]), np.array([1.0]), pos_weight=np.array([3.0]))
    assert r["loss"] == pytest.approx(3 * LOG2, rel=1e-15)
    r = ref_sigmoid(np.array([0.0]), np.array([0.0]), pos_weight=np.array([3.0]))
    assert r["loss"] == pytest.approx(LOG2, rel=1e-15)
    # t' = (1 - 0.2) * 1 + 0.1 = 0.9
    r = ref_sigmoid(np.array([2.0]), np.array([1.0]), label_smoothing=0.2)
    assert r["loss"] == pytest.approx(2.0 - 1.8 + math.log1p(math.exp(-2.0)), rel=1e-14)
    assert r["accuracy"] == 1.0  # smoothing changes the loss only
    # pos_weight = 1 gives the same numbers as no pos_weight
    z = np.array([[-3.0, 0.5, 7.0]])
    t = np.array([[0.3, 1.0, 0.0]])
    a = ref_sigmoid(z, t)["loss"]
    b = ref_sigmoid(z, t, pos_weight=np.ones(3))["loss"]
    assert a == pytest.approx(b, rel=1e-14)


def test_sigmoid_threshold_in_float64():
    thr = 0.7
    cut = math.log(0.7 / 0.3)
    below = np.nextafter(np.float32(cut), np.float32(0))
    above = np.nextafter(np.float32(cut), np.float32(10))
    assert float(below) < cut < float(above)
    z = np.array([below, above], np.float32)
    t = np.array([1.0, 1.0], np.float32)
    r = ref_sigmoid(z, t, threshold=thr, reduction="none")
    assert r["correct"].tolist() == [False, True]
    # probabilities: float32(0.3) > 0.3 in float64
    p = np.array([0.3, 0.29], np.float32)
    r = ref_sigmoid(p, np.array([1.0, 0.0], np.float32), from_logits=False, threshold=0.3,
                    reduction="none")
    assert r["correct"].tolist() == [True, True]
    # threshold 0 / 1 from logits: everything / nothing is positive
    z = np.array([-50.0, 50.0])
    assert ref_sigmoid(z, np.ones(2), threshold=0.0)["accuracy"] == 1.0
    assert ref_sigmoid(z, np.zeros(2), threshold=1.0)["accuracy"] == 1.0


def test_sigmoid_probabilities_and_nan():
    r = ref_sigmoid(np.array([1.0], np.float32), np.array([0.0]), from_logits=False)
    assert r["loss"] == pytest.approx(-math.log(EPS32), rel=1e-15)
    r = ref_sigmoid(np.array([0.25]), np.array([1.0]), from_logits=False)
    assert r["loss"] == pytest.approx(math.log(4.0), rel=1e-15)
    z = np.array([[np.nan, 1.0], [0.0, 1.0]])
    t = np.array([[0.0, 1.0], [0.0, 1.0]])
    r = ref_sigmoid(z, t, reduction="none")
    assert math.isnan(r["loss"][0]) and not math.isnan(r["loss"][1])
    assert r["correct"].tolist() == [False, True]
    r = ref_sigmoid(z, t)
    assert r["accuracy"] == 0.75 and r["exact_match"] == 0.5 and math.isnan(r["loss"])


def test_sigmoid_sample_weight_and_empty():
    z = np.array([[0.0, 5.0], [1.0, -1.0]])
    t = np.array([[1.0, 1.0], [1.0, 0.0]])
    sw = np.array([1.0, 3.0])
    per = ref_sigmoid(z, t, reduction="none")["loss"]
    r = ref_sigmoid(z, t, sample_weight=sw)
    assert r["loss"] == pytest.approx((per[0] + 3 * per[1]) / 4, rel=1e-15)
    # right elements: row0 [F, T], row1 [T, T] -> (1*1 + 3*2) / (2 * 4)
    assert r["accuracy"] == 7 / 8 and r["exact_match"] == 3 / 4
    r = ref_sigmoid(np.zeros((0, 3)), np.zeros((0, 3)))
    assert math.isnan(r["loss"]) and math.isnan(r["accuracy"]) and r["count"] == 0
    assert ref_sigmoid(np.zeros((0, 3)), np.zeros((0, 3)), reduction="sum")["loss"] == 0.0


# -- second oracle: PyTorch in float64 -------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ls", [0.0, 0.1])
def test_softmax_agrees_with_torch(reduction, ls):
    torch = _torch()
    F = torch.nn.functional
    rng = np.random.default_rng(1)
    z = rng.standard_normal((23, 7)) * 4
    y = rng.integers(0, 7, 23)
    y[[3, 9]] = -100
    cw = rng.random(7) + 0.5
    r = ref_softmax(z, y, ignore_index=-100, label_smoothing=ls, reduction=reduction,
                    class_weight=None if ls else cw)
    t = F.cross_entropy(torch.from_numpy(z), torch.from_numpy(y), ignore_index=-100,
                        label_smoothing=ls, reduction=reduction,
                        weight=None if ls else torch.from_numpy(cw))
    np.testing.assert_allclose(r["loss"], t.numpy(), rtol=1e-13, atol=1e-14)
    # dense probability targets (no weights: torch divides by N there)
    q = rng.random((23, 7))
    q /= q.sum(1, keepdims=True)
    r = ref_softmax(z, q, label_smoothing=ls, reduction=reduction)
    t = F.cross_entropy(torch.from_numpy(z), torch.from_numpy(q), label_smoothing=ls,
                        reduction=reduction)
    np.testing.assert_allclose(r["loss"], t.numpy(), rtol=1e-13, atol=1e-14)
    # accuracy: torch argmax is first-index too
    acc = (torch.from_numpy(z).argmax(1) == torch.from_numpy(np.argmax(q, 1))).double().mean()
    assert r["accuracy"] == float(acc)


def test_softmax_agrees_with_torch_on_non_finite():
    torch = _torch()
    z = np.array([[0.0, np.inf, 1.0], [-np.inf, 0.0, 1.0], [0.0, np.nan, 1.0]])
    y = np.array([1, 0, 2])
    r = ref_softmax(z, y, reduction="none")
    t = torch.nn.functional.cross_entropy(torch.from_numpy(z), torch.from_numpy(y),
                                          reduction="none").numpy()
    np.testing.assert_array_equal(np.isnan(r["loss"]), np.isnan(t))
    assert r["loss"][1] == t[1] == math.inf


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("use_pw", [False, True])
def test_sigmoid_agrees_with_torch(reduction, use_pw):
    torch = _torch()
    F = torch.nn.functional
    rng = np.random.default_rng(2)
    z = rng.standard_normal((19, 5)) * 5
    t = rng.random((19, 5))
    t[rng.random((19, 5)) < 0.5] = 1.0
    pw = rng.random(5) * 3 if use_pw else None
    el = F.binary_cross_entropy_with_logits(
        torch.from_numpy(z), torch.from_numpy(t), reduction="none",
        pos_weight=None if pw is None else torch.from_numpy(pw)).numpy()
    per_row = el.mean(axis=1)
    expected = {"none": per_row, "sum": per_row.sum(), "mean": per_row.mean()}[reduction]
    r = ref_sigmoid(z, t, pos_weight=pw, reduction=reduction)
    np.testing.assert_allclose(r["loss"], expected, rtol=1e-13, atol=1e-14)
    # unweighted torch mean over elements equals our mean over rows of row means
    if reduction == "mean":
        tm = F.binary_cross_entropy_with_logits(
            torch.from_numpy(z), torch.from_numpy(t),
            pos_weight=None if pw is None else torch.from_numpy(pw))
        assert r["loss"] == pytest.approx(float(tm), rel=1e-13)
    # from probabilities (away from the clip): torch's binary_cross_entropy
    p = 1 / (1 + np.exp(-z))
    p = np.clip(p, 1e-6, 1 - 1e-6)
    bce = F.binary_cross_entropy(torch.from_numpy(p), torch.from_numpy(t), reduction="none")
    r = ref_sigmoid(p, t, from_logits=False, reduction="none")
    np.testing.assert_allclose(r["loss"], bce.numpy().mean(axis=1), rtol=1e-12)


def test_sigmoid_accuracy_agrees_with_keras_rule():
    # Keras binary_accuracy: mean(equal(y_true, y_pred > threshold)) with 0/1 y_true
    rng = np.random.default_rng(3)
    z = rng.standard_normal((50, 4))
    t = (rng.random((50, 4)) < 0.4).astype(np.float64)
    p = 1 / (1 + np.exp(-z))
    expected = np.mean((p > 0.5) == (t > 0.5))
    assert ref_sigmoid(z, t)["accuracy"] == expected
    assert ref_sigmoid(p, t, from_logits=False)["accuracy"] == expected
