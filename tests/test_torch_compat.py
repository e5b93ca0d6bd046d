"""fastxent.functional against real torch.nn.functional (CPU): same inputs, same numbers.

float32 within rtol 2e-5, float64 within 1e-12; errors where PyTorch raises; plus values that
PyTorch documents.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install fastxent[test])")
import torch.nn.functional as TF  # noqa: E402

import fastxent.functional as F  # noqa: E402

RTOL = {torch.float32: 2e-5, torch.float64: 1e-12}
DT = {np.float32: torch.float32, np.float64: torch.float64}


def _seed(params):
    return zlib.crc32(repr(params).encode())


def _close(ours, theirs, ref64=None):
    """Agreement within rtol. ``ref64`` (torch's own float64 result on the same inputs): where
    float32 results differ by more than rtol, fastxent must be at least as close to torch's
    float64 value as torch's float32 value is (the core computes confident rows'
    log-sum-exp with log1p, so it can be the more accurate of the two), and within rtol of it."""
    assert isinstance(ours, torch.Tensor), type(ours)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    assert ours.dtype == theirs.dtype, (ours.dtype, theirs.dtype)
    rtol = RTOL[theirs.dtype]
    if ref64 is None:
        torch.testing.assert_close(ours, theirs, rtol=rtol, atol=0, equal_nan=True)
        return
    o, t, r = (np.asarray(a.detach().numpy(), np.float64).reshape(-1)
               for a in (ours, theirs, ref64))
    with np.errstate(invalid="ignore"):
        off = ~((np.abs(o - t) <= rtol * np.abs(t)) | (np.isnan(o) & np.isnan(t)))
    if off.any():
        np.testing.assert_array_less(np.abs(o - r)[off], np.abs(t - r)[off] * (1 + 1e-9) + 1e-300)
        np.testing.assert_allclose(o[off], r[off], rtol=rtol, atol=0)


# ----------------------------------------------------------------------------- cross_entropy

CE_SHAPES = [(16, 5), (5,), (4, 3, 6), (2, 7, 3, 2), (9, 1000), (0, 4)]


@pytest.mark.parametrize("shape", CE_SHAPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ls", [0.0, 0.15])
@pytest.mark.parametrize("ignore", [None, -100, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_class_indices(shape, reduction, weighted, ls, ignore, dtype):
    rng = np.random.default_rng(_seed((shape, reduction, weighted, ls, ignore)))
    x = torch.tensor(rng.normal(0, 2, size=shape).astype(dtype))
    C = shape[1] if len(shape) >= 2 else shape[0]
    tshape = shape[:1] + shape[2:] if len(shape) >= 2 else ()
    t = torch.tensor(rng.integers(0, C, size=tshape))
    kw = {}
    if ignore is not None:
        kw["ignore_index"] = ignore
        if t.numel():
            t[torch.tensor(rng.random(tshape) < 0.3)] = ignore
    w = torch.tensor(rng.uniform(0.1, 3.0, size=C).astype(dtype)) if weighted else None
    ours = F.cross_entropy(x, t, weight=w, reduction=reduction, label_smoothing=ls, **kw)
    theirs = TF.cross_entropy(x, t, weight=w, reduction=reduction, label_smoothing=ls, **kw)
    ref64 = TF.cross_entropy(x.double(), t, weight=None if w is None else w.double(),
                             reduction=reduction, label_smoothing=ls, **kw)
    _close(ours, theirs, ref64)


@pytest.mark.parametrize("shape", CE_SHAPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ls", [0.0, 0.15])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_class_probabilities(shape, reduction, weighted, ls, dtype):
    rng = np.random.default_rng(_seed((shape, reduction, weighted, ls, "p")))
    x = torch.tensor(rng.normal(0, 2, size=shape).astype(dtype))
    # probabilities that do not sum to 1, some exact zeros
    p = rng.uniform(0, 1, size=shape)
    p[rng.random(shape) < 0.2] = 0.0
    t = torch.tensor(p.astype(dtype))
    C = shape[1] if len(shape) >= 2 else shape[0]
    w = torch.tensor(rng.uniform(0.1, 3.0, size=C).astype(dtype)) if weighted else None
    ours = F.cross_entropy(x, t, weight=w, reduction=reduction, label_smoothing=ls)
    theirs = TF.cross_entropy(x, t, weight=w, reduction=reduction, label_smoothing=ls)
    ref64 = TF.cross_entropy(x.double(), t.double(), weight=None if w is None else w.double(),
                             reduction=reduction, label_smoothing=ls)
    _close(ours, theirs, ref64)


def test_cross_entropy_nan_and_ignore_edges():
    x = torch.randn(3, 4)
    t = torch.full((3,), -100)
    for kw in ({}, {"weight": torch.ones(4)}, {"label_smoothing": 0.2}):
        for red in ("mean", "sum", "none"):
            _close(F.cross_entropy(x, t, reduction=red, **kw),
                   TF.cross_entropy(x, t, reduction=red, **kw))
    assert math.isnan(float(F.cross_entropy(x, t)))
    # zero total weight over the counted rows: 0/0
    w = torch.tensor([0.0, 1.0, 1.0, 1.0])
    t0 = torch.zeros(3, dtype=torch.long)
    _close(F.cross_entropy(x, t0, weight=w), TF.cross_entropy(x, t0, weight=w))
    # +inf / NaN logits
    xi = torch.tensor([[0.0, float("inf"), 1.0], [float("nan"), 0.0, 1.0], [1.0, 2.0, 3.0]])
    _close(F.cross_entropy(xi, torch.tensor([0, 1, 2]), reduction="none"),
           TF.cross_entropy(xi, torch.tensor([0, 1, 2]), reduction="none"))


def test_cross_entropy_errors_where_torch_raises():
    x = torch.randn(3, 4)
    p = torch.rand(3, 4)
    for ii in (0, 2):
        with pytest.raises(RuntimeError, match="ignore_index"):
            TF.cross_entropy(x, p, ignore_index=ii)
        with pytest.raises(ValueError, match="ignore_index"):
            F.cross_entropy(x, p, ignore_index=ii)
    # negative ignore_index with probabilities: accepted (no effect), as in torch
    _close(F.cross_entropy(x, p, ignore_index=-1), TF.cross_entropy(x, p, ignore_index=-1))
    with pytest.raises(RuntimeError):
        TF.cross_entropy(x, p.long())
    with pytest.raises(TypeError, match="floating point"):
        F.cross_entropy(x, p.long())
    for bad in (4, -1):
        with pytest.raises(IndexError):
            TF.cross_entropy(x, torch.tensor([0, bad, 1]))
        with pytest.raises(IndexError):
            F.cross_entropy(x, torch.tensor([0, bad, 1]))
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(x, torch.tensor([0, 1, 2]), reduction="avg")
    with pytest.raises(ValueError):
        F.cross_entropy(x, torch.tensor([0, 1]))
    with pytest.raises(ValueError):
        F.cross_entropy(x, torch.tensor([0, 1, 2]), label_smoothing=1.5)


# ----------------------------------------------------------------------------- binary losses

BCE_CASES = [  # (shape, weight shape or None, pos_weight shape or None)
    ((16, 5), None, None),
    ((16, 5), (5,), None),
    ((16, 5), (1, 5), (5,)),
    ((16, 5), (16, 1), None),
    ((16, 5), (16, 5), (5,)),
    ((16, 5), (), ()),
    ((16, 5), None, (1,)),
    ((7,), None, None),
    ((7,), (7,), (1,)),
    ((3, 4, 6), (4, 1), (6,)),
    ((3, 4, 6), (6,), None),
    ((3, 4, 6), (3, 4, 1), (1, 6)),
    ((), None, None),
    ((9, 1000), (1000,), (1000,)),
    ((0, 3), None, None),
]


def _bce_data(rng, shape, wshape, pshape, dtype, soft, logits):
    if logits:
        # |x| <= 4: torch's (1 - t) x - log_sigmoid(x) cancels to ~ulp(|x|) absolute, beyond
        # 2e-5 relative of softplus(x) for x < -4.5 (torch's float32 error, not fastxent's)
        x = np.clip(rng.normal(0, 2, size=shape), -4, 4)
    else:
        x = rng.uniform(0.0, 1.0, size=shape)
        x[rng.random(shape) < 0.05] = 0.0
        x[rng.random(shape) < 0.05] = 1.0
    t = rng.uniform(0, 1, size=shape) if soft else rng.integers(0, 2, size=shape)
    mk = lambda a: torch.tensor(np.asarray(a).astype(dtype))  # noqa: E731
    w = None if wshape is None else mk(rng.uniform(0.1, 2.0, size=wshape))
    pw = None if pshape is None else mk(rng.uniform(0.2, 4.0, size=pshape))
    return mk(x), mk(t), w, pw


@pytest.mark.parametrize("case", BCE_CASES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_binary_cross_entropy_with_logits(case, reduction, soft, dtype):
    shape, wshape, pshape = case
    rng = np.random.default_rng(_seed((case, reduction, soft, "l")))
    x, t, w, pw = _bce_data(rng, shape, wshape, pshape, dtype, soft, logits=True)
    ours = F.binary_cross_entropy_with_logits(x, t, weight=w, reduction=reduction, pos_weight=pw)
    theirs = TF.binary_cross_entropy_with_logits(x, t, weight=w, reduction=reduction,
                                                 pos_weight=pw)
    _close(ours, theirs)


@pytest.mark.parametrize("case", [c for c in BCE_CASES if c[0] != (9, 1000)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_binary_cross_entropy(case, reduction, soft, dtype):
    shape, wshape, _ = case
    rng = np.random.default_rng(_seed((case, reduction, soft, "p")))
    x, t, w, _ = _bce_data(rng, shape, wshape, None, dtype, soft, logits=False)
    if dtype == np.float32:
        # see test_binary_cross_entropy_small_probabilities: keep p away from (0, 3e-3)
        x = torch.where((x > 0) & (x < 3e-3), torch.zeros_like(x), x)
    ours = F.binary_cross_entropy(x, t, weight=w, reduction=reduction)
    theirs = TF.binary_cross_entropy(x, t, weight=w, reduction=reduction)
    _close(ours, theirs)


def test_binary_cross_entropy_small_probabilities():
    x = torch.tensor([1e-4, 3e-4, 1e-3, 2e-3])
    t = torch.zeros(4)
    _close(F.binary_cross_entropy(x, t, reduction="none"),
           TF.binary_cross_entropy(x, t, reduction="none"))


def test_binary_errors_where_torch_raises():
    x, t = torch.rand(4, 3), torch.rand(4, 3)
    for bad in (torch.tensor([[1.5]]), torch.tensor([[-0.1]]), torch.tensor([[float("nan")]])):
        xb = x.clone()
        xb[0, 0] = bad[0, 0]
        with pytest.raises(RuntimeError, match="between 0 and 1"):
            TF.binary_cross_entropy(xb, t)
        with pytest.raises(ValueError, match="between 0 and 1"):
            F.binary_cross_entropy(xb, t)
    tb = t.clone()
    tb[1, 2] = 2.0
    with pytest.raises(RuntimeError):
        TF.binary_cross_entropy(x, tb)
    with pytest.raises(ValueError):
        F.binary_cross_entropy(x, tb)
    with pytest.raises(ValueError, match="size"):
        TF.binary_cross_entropy_with_logits(x, t[:, :2])
    with pytest.raises(ValueError, match="size"):
        F.binary_cross_entropy_with_logits(x, t[:, :2])
    with pytest.raises(ValueError, match="pos_weight"):
        F.binary_cross_entropy_with_logits(x, t, pos_weight=torch.ones(4, 1))


# ----------------------------------------------------------------------------- libraries, dtypes


def test_numpy_in_numpy_out_and_dtypes():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(6, 4)).astype(np.float32)
    y = rng.integers(0, 4, size=6)
    out = F.cross_entropy(x, y)
    assert isinstance(out, np.ndarray) and out.shape == () and out.dtype == np.float32
    np.testing.assert_allclose(out, TF.cross_entropy(torch.tensor(x), torch.tensor(y)).numpy(),
                               rtol=2e-5)
    none = F.binary_cross_entropy_with_logits(x, (x > 0).astype(np.float32), reduction="none")
    assert isinstance(none, np.ndarray) and none.shape == (6, 4) and none.dtype == np.float32
    for dt in (torch.float16, torch.bfloat16):
        xt = torch.tensor(x).to(dt)
        o = F.cross_entropy(xt, torch.tensor(y), reduction="none")
        assert o.dtype == dt and o.shape == (6,)
        ref = TF.cross_entropy(xt.float(), torch.tensor(y), reduction="none")
        torch.testing.assert_close(o.float(), ref, rtol=1e-2, atol=0)  # half-precision output
    xg = torch.tensor(x, requires_grad=True)
    assert F.cross_entropy(xg, torch.tensor(y)).requires_grad is False


# ----------------------------------------------------------------------------- documented values


def test_pytorch_documented_values():
    # BCELoss docs: "clamps its log function outputs to be greater than or equal to -100"
    x = torch.tensor([0.0, 1.0, 0.0, 1.0])
    t = torch.tensor([1.0, 0.0, 0.0, 1.0])
    out = F.binary_cross_entropy(x, t, reduction="none")
    torch.testing.assert_close(out, torch.tensor([100.0, 100.0, 0.0, 0.0]), rtol=0, atol=0)
    torch.testing.assert_close(out, TF.binary_cross_entropy(x, t, reduction="none"))
    # BCEWithLogitsLoss docs example: pos_weight 3/1 for 64 classes; logits 1.5, target 1
    target = torch.ones([10, 64], dtype=torch.float32)
    output = torch.full([10, 64], 1.5)
    pos_weight = torch.ones([64])
    ours = F.binary_cross_entropy_with_logits(output, target, pos_weight=pos_weight)
    torch.testing.assert_close(ours, torch.tensor(0.20141), rtol=0, atol=1e-5)  # docs: 0.2014
    # uniform logits: cross-entropy is log(C); label smoothing leaves it there
    for C in (2, 10, 1000):
        u = torch.zeros(3, C)
        for ls in (0.0, 0.3):
            v = F.cross_entropy(u, torch.tensor([0, 1, C - 1]), label_smoothing=ls)
            torch.testing.assert_close(v, torch.tensor(math.log(C)), rtol=2e-7, atol=0)
