"""The small-C tile kernels (rows laid across SIMD lanes) against the generic per-row kernels
of the CPU engine: every count and every exact sum but the loss identical, the loss within
the float32 tolerance (the two sum a row's terms in different orders), per-row results equal.

The reference comparisons of test_softmax.py already run through the tile kernels whenever
C <= SMALL_C; this module pins the two engines' paths to each other on the cases where they
could drift apart: tile boundaries, NaN/inf logits, ties, bad label rows, sample weights, and
the label statistics that task detection reads.
"""

from fractions import Fraction

import numba as nb
import numpy as np
import pytest
from checks import FLOAT_DTYPES
from hypothesis import given
from hypothesis import strategies as st
from tolerances import assert_loss_close

from fastxent import _state as S
from fastxent import config
from fastxent.backends import SigmoidOptions, SoftmaxOptions
from fastxent.backends import numba_cpu as K


def _both(monkeypatch, z, labels, opts):
    out = []
    for small_c in (K.SMALL_C, 0):  # 0: no tile kernel serves any C
        monkeypatch.setattr(K, "SMALL_C", small_c)
        out.append(K.softmax_xent(z, labels, opts))
    return out


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
def test_the_two_runs_compared_here_take_different_kernels(monkeypatch, kernels_used, kind):
    """Every comparison in this module relies on SMALL_C = 0 reaching the launch: the engine
    keeps launch plans between calls, and a plan kept from the first run would make the
    second run the same kernel again (and each comparison vacuous)."""
    rng = np.random.default_rng(9)
    z = rng.standard_normal((300, 10)).astype(np.float32)
    for small_c in (K.SMALL_C, 0):
        monkeypatch.setattr(K, "SMALL_C", small_c)
        if kind == "softmax":
            K.softmax_xent(z, rng.integers(0, 10, 300), SoftmaxOptions())
        else:
            K.sigmoid_xent(z, (rng.random((300, 10)) < 0.3).astype(np.float32),
                           SigmoidOptions())
    want = ([K._softmax_sparse_small, K._softmax_sparse_plain] if kind == "softmax"
            else [K._sigmoid_small, K._sigmoid_plain])
    assert kernels_used == want


def _dense_labels(rng, kind, n, C):
    if kind == "onehot":
        return np.eye(C, dtype=np.float32)[rng.integers(0, C, n)]
    if kind == "soft":
        t = rng.random((n, C)) ** 2
        return (t / t.sum(axis=1, keepdims=True)).astype(np.float32)
    if kind == "multihot":
        return rng.random((n, C)) < 0.4
    return (rng.random((n, C)) / C).astype(np.float64)  # neither one-hot nor summing to 1


def _predictions(rng, pred, n, C, dtype=np.float32):
    """Logits, or softmax probabilities ("probs", "renorm": the kernel renormalises)."""
    z = rng.standard_normal((n, C)) * 3
    if pred != "logits":
        z = np.exp(z - z.max(axis=1, keepdims=True))
        z /= z.sum(axis=1, keepdims=True)
        if pred == "renorm":
            z *= rng.uniform(0.5, 2.0, (n, 1))  # rows not summing to one
    return z.astype(dtype)


def _pred_opts(pred):
    return {"from_logits": pred == "logits", "renormalize": pred == "renorm"}


PREDS = ["logits", "probs", "renorm"]


@pytest.mark.parametrize("C", [1, 2, 10, 31, 32])
@pytest.mark.parametrize("n", [0, 1, 63, 64, 130])  # tile edges: partial, full, full + tail
@pytest.mark.parametrize("kind", ["onehot", "soft", "multihot", "other"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pred", PREDS)
def test_dense_tile_equals_generic(monkeypatch, C, n, kind, weighted, dtype, pred):
    rng = np.random.default_rng([C, n, len(kind), weighted, np.dtype(dtype).itemsize, len(pred)])
    z = _predictions(rng, pred, n, C, dtype)
    t = _dense_labels(rng, kind, n, C)
    if n >= 64:
        t = t.astype(np.float32) if t.dtype == bool else t.copy()
        z[1, 0] = np.nan
        z[2, C - 1] = np.inf
        z[3, :] = -np.inf
        z[4, :] = z[4].max()  # every class tied
        z[60, 0] = -np.inf
        z[61, :] = 0.0  # probabilities summing to 0: renormalising gives NaN
        t[62, 0] = -0.5  # bad label rows: NaN loss, first_bad
        t[63, C - 1] = np.nan
    sw = rng.integers(0, 5, n) / 4.0 if weighted else None
    opts = SoftmaxOptions(dense=True, sample_weight=sw, thr=0.0 if pred == "logits" else 0.5,
                          want_rows=True, **_pred_opts(pred))
    a, b = _both(monkeypatch, z, t, opts)
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.exact[1:], b.exact[1:])
    assert a.first_bad == b.first_bad == (62 if n >= 64 else -1)
    np.testing.assert_array_equal(a.row_correct, b.row_correct)
    assert_loss_close(a.row_loss, b.row_loss, np.float32)


# label values that a shortcut could misread: values near 0 and 1 that a float sum rounds
# away (a row [1 - 2**-24, 0, 1] once counted as 0/1), -0.0 (a valid 0 with the sign bit),
# values above 1, and bad ones (negative, NaN, inf)
_TRICKY_LABELS = [1e-30, 1e-45, -0.0, 1.0 + 2.0**-23, 1.0 - 2.0**-24, 0.5, 2.0, -1e-30,
                  np.nan, np.inf]


def _tricky_label_rows(rng, C, dtype):
    """One-hot rows over several tiles; each tricky value in two of them, once before the
    row's 1 and once after it."""
    n = 64 * 5 + 7
    t = np.eye(C, dtype=dtype)[rng.integers(0, C, n)]
    for k, v in enumerate(_TRICKY_LABELS):
        for j, (one_at, v_at) in enumerate(((C - 1, 0), (0, C - 1))):
            r = 3 + 31 * k + j
            t[r] = 0
            t[r, one_at] = 1
            t[r, v_at] = v
    return t


def _label_stats_numpy(t64, sigmoid):
    """Per row of float64 targets: 0/1, one-hot, sums to 1 (masks), and the indices of the
    bad rows (softmax: a negative or non-finite label; sigmoid: a target outside [0, 1])."""
    binary = np.all((t64 == 0) | (t64 == 1), axis=1)
    onehot = binary & ((t64 == 1).sum(axis=1) == 1)
    with np.errstate(invalid="ignore"):  # inf + -inf in a bad row
        sum1 = np.abs(t64.sum(axis=1) - 1.0) <= config.SUM_TO_ONE_TOL
    ok = (t64 >= 0) & (t64 <= 1) if sigmoid else np.isfinite(t64) & (t64 >= 0)
    return binary, onehot, sum1, np.flatnonzero(~np.all(ok, axis=1))


# (sigmoid, bad rows): softmax, -1e-30, NaN, inf each twice; sigmoid also 1 + 2**-23 and 2
@pytest.mark.parametrize("sigmoid, n_bad", [(False, 6), (True, 10)], ids=["softmax", "sigmoid"])
@pytest.mark.parametrize("small_c", [True, False])  # the tile kernels, the row kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C", [3, 10, 33, 100])
def test_label_statistics_against_numpy(monkeypatch, sigmoid, n_bad, small_c, dtype, C):
    """BINARY / ONEHOT / SUM1 counts and the first bad row equal a NumPy count, with the
    tricky values in one-hot rows spread over several tiles."""
    rng = np.random.default_rng([C, np.dtype(dtype).itemsize, int(sigmoid)])
    t = _tricky_label_rows(rng, C, dtype)
    z = rng.standard_normal(t.shape).astype(dtype)
    monkeypatch.setattr(K, "SMALL_C", K.SMALL_C if small_c else 0)
    got = (K.sigmoid_xent(z, t, SigmoidOptions()) if sigmoid
           else K.softmax_xent(z, t, SoftmaxOptions(dense=True)))
    binary, onehot, sum1, bad = _label_stats_numpy(t.astype(np.float64), sigmoid)
    assert got.counts[S.BINARY] == binary.sum()
    assert got.counts[S.ONEHOT] == onehot.sum()
    assert got.counts[S.SUM1] == sum1.sum()
    assert got.first_bad == bad[0]
    assert len(bad) == n_bad


_STRAY = [0.0, -0.0, 1.0, 1e-30, 1e-45, 2.0**-24, 1.0 - 2.0**-24, 1.0 - 2.0**-11, 0.5,
          1.0 + 2.0**-23, 2.0, -1e-30, np.nan, np.inf, -np.inf]


@given(n=st.integers(0, 140), C=st.integers(1, 300), base=st.sampled_from(["onehot", "multihot"]),
       dtype=st.sampled_from(FLOAT_DTYPES), sigmoid=st.booleans(), small_c=st.booleans(),
       seed=st.integers(0, 2**32 - 1),
       strays=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6),
                                 st.sampled_from(_STRAY)), max_size=12))
def test_label_statistics_property(n, C, base, dtype, sigmoid, small_c, seed, strays):
    """The dense kernels' label statistics equal NumPy's on one-hot or multi-hot rows with
    stray values (near 0 and 1, -0.0, above 1, bad) at random places, for every kernel a
    call can take and every label dtype."""
    rng = np.random.default_rng(seed)
    if base == "onehot":
        t64 = np.eye(C)[rng.integers(0, C, n)]
    else:
        t64 = (rng.random((n, C)) < 0.3).astype(np.float64)
    for i, c, v in strays:
        if n:
            t64[i % n, c % C] = v
    t = t64.astype(dtype)
    z = rng.standard_normal((n, C)).astype(np.float32)
    monkeypatch = pytest.MonkeyPatch()
    try:
        monkeypatch.setattr(K, "SMALL_C", K.SMALL_C if small_c else 0)
        got = (K.sigmoid_xent(z, t, SigmoidOptions(want_cat=True)) if sigmoid
               else K.softmax_xent(z, t, SoftmaxOptions(dense=True)))
    finally:
        monkeypatch.undo()
    t64 = t.astype(np.float64)
    binary, onehot, sum1, bad = _label_stats_numpy(t64, sigmoid)
    first_bad = int(bad[0]) if len(bad) else -1
    assert (got.counts[S.BINARY], got.counts[S.ONEHOT], got.counts[S.SUM1],
            got.first_bad) == (binary.sum(), onehot.sum(), sum1.sum(), first_bad)
    if first_bad < 0 and n:  # no bad row: the element-wise and categorical counts too
        hit = (z > 0) == (t64 > 0.5)
        assert got.counts[S.ELEM] == hit.sum()
        assert got.counts[S.EXACT] == hit.all(axis=1).sum()
        same = np.argmax(z, axis=1) == np.argmax(t64, axis=1)  # first argmaxes
        if sigmoid:  # CAT over exactly one-hot rows only
            same &= onehot
        assert got.counts[S.CAT] == same.sum()


@pytest.mark.parametrize("C", [1, 3, 10, 32])
@pytest.mark.parametrize("n", [1, 64, 200])
@pytest.mark.parametrize("pred", PREDS)
def test_sparse_tile_equals_generic(monkeypatch, C, n, pred):
    rng = np.random.default_rng([C, n, len(pred)])
    z = _predictions(rng, pred, n, C)
    y = rng.integers(0, C, n)
    if n >= 64:
        z[5, 0] = np.nan
        z[6, :] = 1.0
        z[7, 0] = np.inf
        y[8] = -100
        y[9] = C  # out of range: NaN row, first_bad
        z[10, :] = 0.0  # probabilities summing to 0
    opts = SoftmaxOptions(ignore_index=-100, want_rows=True, **_pred_opts(pred))
    a, b = _both(monkeypatch, z, y, opts)
    np.testing.assert_array_equal(a.counts, b.counts)
    assert a.first_bad == b.first_bad
    np.testing.assert_array_equal(a.row_correct, b.row_correct)
    assert_loss_close(a.row_loss, b.row_loss, np.float32)  # terms summed in another order


@pytest.mark.parametrize("C", [1, 3, 10, 32])
@pytest.mark.parametrize("n", [5, 64, 200])
@pytest.mark.parametrize("pred,ls", [("logits", 0.0), ("probs", 0.0), ("logits", 0.1),
                                     ("logits", 1.0)])
@pytest.mark.parametrize("any_tie", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_sparse_tile_topk_equals_generic(monkeypatch, C, n, pred, ls, any_tie, weighted):
    """Top-k and label smoothing in the tile kernel: the label's rank, ties in both
    conventions, NaN/inf rows, ignored and bad labels, sample and class weights (weighted
    top-k bins), per-row hits and losses."""
    rng = np.random.default_rng([C, n, len(pred), int(ls * 10), any_tie, weighted])
    z = _predictions(rng, pred, n, C)
    z = np.round(z * 4) / 4  # many exact ties
    y = rng.integers(0, C, n)
    if n >= 64:
        z[5, 0] = np.nan
        z[6, :] = 1.0  # every class tied
        z[7, 0] = np.inf
        z[11, 0] = -np.inf
        y[8] = -100
        y[9] = C  # out of range: NaN row, no hit, first_bad
    if n >= 200:  # ignored rows in otherwise clean tiles (one with a NaN logit)
        y[[70, 100, 150, 151]] = -100
        z[100, 0] = np.nan
    ks = tuple(sorted({1, min(2, C), min(3, C), C}))
    sw = rng.integers(0, 5, n) / 4.0 if weighted else None
    cw = rng.uniform(0.5, 2.0, C) if weighted else None
    opts = SoftmaxOptions(ignore_index=-100, ks=ks, topk_any_tie=any_tie, sample_weight=sw,
                          class_weight=cw, label_smoothing=ls, want_rows=True,
                          **_pred_opts(pred))
    a, b = _both(monkeypatch, z, y, opts)
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.exact[1:], b.exact[1:])  # weights, weighted cat / top-k
    assert a.first_bad == b.first_bad
    np.testing.assert_array_equal(a.row_correct, b.row_correct)
    np.testing.assert_array_equal(a.row_hits, b.row_hits)
    assert_loss_close(a.row_loss, b.row_loss, np.float32)
    assert a.counts[S.TOPK + len(ks) - 1] == a.counts[S.ROWS] - (n >= 64) * 2  # k = C: all
    # but the NaN row and the bad-label row hit


def _tile_pattern(pattern, rng, n, C):
    """Logits and labels whose row losses stress the clean-tile exact sum: losses spanning
    more than 23 binades, exact zeros, huge values, +inf, ignored rows."""
    z = (rng.standard_normal((n, C)) * 3).astype(np.float32)
    y = rng.integers(0, C, n)
    rows = np.arange(0, n, 7)
    if pattern == "peaked":  # loss ~ 1e-10 beside losses ~ 1: the tile sum would round
        z[rows] = 0.0
        z[rows, y[rows]] = 25.0
    elif pattern in ("trained", "beyond"):  # confident rows (loss ~4e-17, 2**-54, or
        # ~1e-34, 2**-113) beside random ones (up to ~10): a tile spanning 58 binades (the
        # tile sum's three windows) or 116 (more than they cover: one exact add per row)
        z[rows] = 0.0
        z[rows, y[rows]] = 40.0 if pattern == "trained" else 80.0
    elif pattern == "zero":  # exp(-200) underflows: loss exactly 0
        z[rows] = 0.0
        z[rows, y[rows]] = 200.0
    elif pattern == "wide":
        z *= 300.0
    elif pattern == "overflow":  # z_y - max overflows to -inf: loss +inf
        z[rows, 0] = 3e38
        z[rows, 1] = -3e38
        y[rows] = 1
    elif pattern == "ignored":
        y[rows] = -100
    elif pattern == "probs":  # -log p: p_y = 1 gives -log(1 - eps) ~ 1e-7 beside ~1
        z = np.exp(z - z.max(axis=1, keepdims=True))
        z /= z.sum(axis=1, keepdims=True)
        z[rows] = 0.0
        z[rows, y[rows]] = 1.0
    return z, y


_PATTERNS = ["normal", "peaked", "trained", "beyond", "zero", "wide", "overflow", "probs"]


_F64_PATTERNS = [p for p in _PATTERNS if p != "overflow"]  # 3e38 does not overflow float64


@pytest.mark.parametrize("pattern,dense,dtype",
                         [(p, False, np.float32) for p in _PATTERNS + ["ignored"]]
                         + [(p, True, np.float32) for p in _PATTERNS]  # no dense ignore_index
                         + [(p, d, np.float64) for p in _F64_PATTERNS for d in (False, True)])
def test_tile_loss_sum_exact_and_independent_of_tiling(monkeypatch, pattern, dense, dtype):
    """A clean tile adds its rows' float32 losses in one float64 step (float64 losses: one
    exact add per row); either must be exact (the exact loss sum equals the exact sum of
    the per-row losses) and a row's loss must not depend on which tile holds it (row ranges
    move with the thread count)."""
    n, C = 1000, 10
    rng = np.random.default_rng([len(pattern), dense])
    z, y = _tile_pattern(pattern, rng, n, C)
    z = z.astype(dtype)
    labels = np.eye(C, dtype=np.float32)[y] if dense else y
    opts = SoftmaxOptions(dense=dense, ignore_index=None if dense else -100, want_rows=True,
                          from_logits=pattern != "probs")
    runs = []
    for threads in (1, 3, 4):  # row ranges start at different offsets: tiles move
        monkeypatch.setattr(K, "_threads", lambda n, C, threads=threads: threads)
        runs.append(K.softmax_xent(z, labels, opts))
    first = runs[0]
    for other in runs[1:]:
        np.testing.assert_array_equal(other.counts, first.counts)
        np.testing.assert_array_equal(other.exact, first.exact)
        np.testing.assert_array_equal(other.row_loss, first.row_loss)
        np.testing.assert_array_equal(other.row_correct, first.row_correct)
    rl = first.row_loss.astype(np.float64)
    want = sum((Fraction(float(v)) for v in rl[np.isfinite(rl)]), Fraction(0))
    assert Fraction(S.limbs_to_int(first.exact[S.X_LOSS]), 2**S.SCALE_BITS) == want
    assert first.counts[S.POSINF] == (len(range(0, n, 7)) if pattern == "overflow" else 0)
    monkeypatch.setattr(K, "SMALL_C", 0)  # the generic kernel: same counts, close losses
    generic = K.softmax_xent(z, labels, opts)
    np.testing.assert_array_equal(generic.counts, first.counts)
    np.testing.assert_array_equal(generic.row_correct, first.row_correct)
    assert_loss_close(first.row_loss, generic.row_loss, dtype)


def _sig_both(monkeypatch, z, t, opts):
    out = []
    for small_c in (K.SMALL_C, 0):
        monkeypatch.setattr(K, "SMALL_C", small_c)
        out.append(K.sigmoid_xent(z, t, opts))
    return out


SIG_FORMS = {
    "plain": {},
    "smooth": {"label_smoothing": 0.2},
    "weighted": {"pos_weight": "pw", "col_weight": "cw"},
    "probs": {"from_logits": False, "eps": 1e-7},
    "probs-floor": {"from_logits": False, "eps": 0.0, "log_floor": -100.0},
}


@pytest.mark.parametrize("C", [1, 2, 10, 32])
@pytest.mark.parametrize("n", [1, 63, 130])
@pytest.mark.parametrize("form", list(SIG_FORMS))
@pytest.mark.parametrize("weighted", [False, True])
def test_sigmoid_tile_equals_generic(monkeypatch, C, n, form, weighted):
    rng = np.random.default_rng([C, n, len(form), weighted])
    z = (rng.standard_normal((n, C)) * 3).astype(np.float32)
    if form.startswith("probs"):
        z = (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
        z[0, 0] = 0.0  # log 0: clipped (eps) or floored (-100)
    t = (rng.random((n, C)) < 0.4).astype(np.float32)
    t[: n // 2][rng.random(n // 2) < 0.5] = 0.0  # some one-hot rows for CAT
    t[np.arange(0, n, 3), rng.integers(0, C, len(range(0, n, 3)))] = 1.0
    if n >= 63:
        z[1, 0] = np.nan
        z[2, C - 1] = np.inf
        z[3, :] = -np.inf
        z[4, :] = z[4].max()  # ties: first argmax
        t[5, 0] = 1.5  # bad target rows: NaN loss, first_bad
        t[6, C - 1] = np.nan
        t[7, 0] = 0.3  # soft target
    kw = dict(SIG_FORMS[form])
    if "pos_weight" in kw:
        kw["pos_weight"] = rng.uniform(0.5, 2.0, C)
        kw["col_weight"] = rng.uniform(0.0, 2.0, C)
    sw = rng.integers(0, 5, n) / 4.0 if weighted else None
    opts = SigmoidOptions(sample_weight=sw, want_rows=True, want_cat=True,
                          thr=0.0 if kw.get("from_logits", True) else 0.5, **kw)
    a, b = _sig_both(monkeypatch, z, t, opts)
    np.testing.assert_array_equal(a.counts, b.counts)
    for q in range(1, a.exact.shape[0]):
        if q == S.X_ELEM:  # sum of sw * err / C: fast-math may round sw * (err / C) either
            continue       # way (one float64 ulp per row), so it is compared below
        np.testing.assert_array_equal(a.exact[q], b.exact[q])
    elem_a, elem_b = (S.limbs_to_int(p.exact[S.X_ELEM]) / 2**S.SCALE_BITS for p in (a, b))
    assert abs(elem_a - elem_b) <= n * 2.0**-52 * max(abs(elem_b), 1.0)
    assert a.first_bad == b.first_bad == (5 if n >= 63 else -1)
    np.testing.assert_array_equal(a.row_correct, b.row_correct)
    np.testing.assert_array_equal(a.row_elem, b.row_elem)
    assert_loss_close(a.row_loss, b.row_loss, np.float32)


@pytest.mark.parametrize("pattern", ["normal", "confident", "probs"])
def test_sigmoid_tile_loss_sum_exact_and_independent_of_tiling(monkeypatch, pattern):
    n, C = 1000, 4
    rng = np.random.default_rng(len(pattern))
    z = (rng.standard_normal((n, C)) * 3).astype(np.float32)
    t = (rng.random((n, C)) < 0.5).astype(np.float32)
    if pattern == "confident":  # row losses ~ 1e-12 beside ~ 1: tiles fall back per row
        z[::7] = np.where(t[::7] > 0, 30.0, -30.0)
    from_logits = pattern != "probs"
    if not from_logits:
        z = (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
    opts = SigmoidOptions(from_logits=from_logits, eps=1e-7, want_rows=True,
                          thr=0.0 if from_logits else 0.5)
    runs = []
    for threads in (1, 3, 4):
        monkeypatch.setattr(K, "_threads", lambda n, C, threads=threads: threads)
        runs.append(K.sigmoid_xent(z, t, opts))
    for other in runs[1:]:
        np.testing.assert_array_equal(other.counts, runs[0].counts)
        np.testing.assert_array_equal(other.exact, runs[0].exact)
        np.testing.assert_array_equal(other.row_loss, runs[0].row_loss)
    rl = runs[0].row_loss.astype(np.float64)
    want = sum((Fraction(float(v)) for v in rl), Fraction(0))
    assert Fraction(S.limbs_to_int(runs[0].exact[S.X_LOSS]), 2**S.SCALE_BITS) == want


# compiled as the kernels are: the fused pass's operations take its caller's fastmath flags
@nb.njit(cache=False, fastmath=config.FASTMATH_FLAGS, error_model="numpy")
def _fused_pass(buf, yf, out, inline):
    mx, ix, chk, sm, neq, dy, lv = out
    f = buf.reshape(-1)
    if inline:  # as the kernel runs C = 10
        K.tile_logits_fused(f, yf, mx, ix, chk, sm, neq, dy, 10)
        done = True
    else:
        done = K._tile_fused(f, buf.shape[0], yf, mx, ix, chk, sm, neq, dy)
    K._tile_row_loss(sm, neq, dy, lv)
    return done


@nb.njit(cache=False, fastmath=config.FASTMATH_FLAGS, error_model="numpy")
def _two_passes(buf, yf, out, tot, sd):
    mx, ix, chk, sm, neq, dy, lv = out
    one = mx[0] - mx[0] + 1
    K._tile_max_argmax(buf, mx, ix, chk, tot, False)
    K._tile_logits_sparse(buf, yf, mx, sm, neq, dy, sd, lv, one, one - one)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("special", ["none", "ties", "-inf", "nan", "inf", "huge", "peaked"])
@pytest.mark.parametrize("C,inline", [(10, True), (2, False), (3, False), (4, False),
                                      (5, False), (8, False), (10, False), (16, False)])
def test_fused_tile_pass_gives_the_two_passes_bits(dtype, special, C, inline):
    """The sparse tile kernel fuses the max pass and the exp pass for C = 2, 3, 4, 5, 8, 10
    and 16 (``tile_logits_fused``: C = 10 inlined, the others through ``_tile_fused``); every
    per-row output, garbage of non-finite rows aside, must be the two passes' bit for bit:
    the result must not depend on which of them ran."""
    rng = np.random.default_rng([len(special), np.dtype(dtype).itemsize, C])
    buf = (rng.standard_normal((C, K.TILE)) * 4).astype(dtype)
    yf = rng.integers(0, C, K.TILE).astype(dtype)
    cols = rng.integers(0, K.TILE, 16)
    if special == "ties":
        buf[:, cols] = np.round(buf[:, cols])
        buf[C // 3, cols] = buf[C - 1, cols] = buf[:, cols].max(axis=0)
    elif special == "-inf":
        buf[rng.integers(0, C, 16), cols] = -np.inf
    elif special in ("nan", "inf"):
        buf[rng.integers(0, C, 16), cols] = np.nan if special == "nan" else np.inf
    elif special == "huge":
        buf[:, cols] *= np.asarray(1e30, dtype)
    elif special == "peaked":
        buf[yf[cols].astype(int), cols] += 40
    outs = []
    for run in range(2):
        out = tuple(np.full(K.TILE, 7.0, dtype) for _ in range(7))
        if run == 0:
            assert _fused_pass(buf, yf, out, inline)
        else:
            _two_passes(buf, yf, out, np.zeros(K.TILE, dtype), np.zeros(K.TILE, dtype))
        outs.append(out)
    (mx, ix, chk, sm, neq, dy, lv), (mx2, ix2, chk2, sm2, neq2, dy2, lv2) = outs
    np.testing.assert_array_equal(chk, chk2)
    np.testing.assert_array_equal(ix, ix2)
    np.testing.assert_array_equal(mx, mx2)
    clean = chk == 0
    assert clean.sum() >= K.TILE - 16
    for a, b in ((sm, sm2), (neq, neq2), (dy, dy2), (lv, lv2)):
        np.testing.assert_array_equal(a[clean].view(np.uint8), b[clean].view(np.uint8))


def test_other_class_counts_take_the_two_passes():
    """``_tile_fused`` refuses the class counts it has no fused pass for (nothing written)."""
    buf = np.ones((12, K.TILE), np.float32)
    out = tuple(np.full(K.TILE, 7.0, np.float32) for _ in range(7))
    assert not _fused_pass(buf, np.zeros(K.TILE, np.float32), out, False)
    assert all((a[:1] == 7.0).all() for a in out[:6])
