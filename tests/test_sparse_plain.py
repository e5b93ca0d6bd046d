"""The lean sparse softmax kernel (``_softmax_sparse_plain``: logits, no smoothing, weights
or per-row outputs) against the general one (``_softmax_sparse``) that serves every
other option: the same counts, the same first bad row and the same exact loss sum, bit for
bit. The plain kernel computes each row's loss as the general one does (the float32
``log-sum - (z_y - max)``); it only defers the log-sums to a vectorised loop at the end of
each group of ``TILE`` rows and adds a group's losses in up to three exact steps.

The reference comparisons of test_softmax.py and test_properties.py already run through the
plain kernel for every default call with C > SMALL_C; this module pins it to the general
kernel where the two could drift apart: group edges, NaN/inf logits, ties at the max, bad
and ignored labels, infinite losses, long rows read in blocks, every logits dtype, strided
rows and the stream jobs.
"""

import numpy as np
import pytest
from conftest import BF16

import fastxent as fx
from fastxent.backends import SoftmaxOptions
from fastxent.backends import numba_cpu as K


def _both(monkeypatch, z, y, opts):
    """The plain kernel's result, then the general kernel's."""
    out = []
    for plain in (True, False):
        monkeypatch.setattr(K, "SPARSE_PLAIN", plain)
        out.append(K.softmax_xent(z, y, opts))
    return out


def _assert_same(a, b):
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.exact, b.exact)  # the exact loss sum: same bits
    assert a.first_bad == b.first_bad


def test_the_two_runs_compared_here_take_different_kernels(monkeypatch, kernels_used):
    """Every comparison below relies on SPARSE_PLAIN reaching the launch (the engine keeps
    launch plans between calls: a kept plan would make both runs the same kernel)."""
    rng = np.random.default_rng(1)
    _both(monkeypatch, rng.standard_normal((50, 40)).astype(np.float32),
          rng.integers(0, 40, 50), SoftmaxOptions())
    assert kernels_used == [K._softmax_sparse_plain, K._softmax_sparse]


@pytest.mark.parametrize("opts", [
    dict(label_smoothing=0.1), dict(from_logits=False),
    dict(class_weight=np.linspace(0.5, 2, 40)), dict(sample_weight=np.ones(50)),
    dict(reduction="none"),
], ids=["smoothing", "probs", "class_weight", "sample_weight", "rows"])
def test_any_other_option_takes_the_general_kernel(kernels_used, opts):
    rng = np.random.default_rng(2)
    z = rng.random((50, 40)).astype(np.float32) + 0.01
    fx.softmax_cross_entropy(z, rng.integers(0, 40, 50), **opts)
    assert kernels_used == [K._softmax_sparse]


def _special_rows(z, y, C):
    """Rows the vectorised passes cannot finish, placed around the first group's edge."""
    big = np.finfo(z.dtype).max if z.dtype != BF16 else np.float32(3.0e38)
    z[1, 0] = np.nan
    z[2, C - 1] = np.inf
    z[3, :] = -np.inf
    z[4, :] = z[4].max()  # every class tied: correct only for class 0
    y[4] = 0
    z[5, :] = z[5].max()
    y[5] = C - 1  # tied at the max, but not the first index
    y[6] = -100  # ignored
    y[7] = C  # out of range: a NaN row, the first bad row
    y[8] = -1  # out of range too, after it
    z[62, 0] = np.inf
    z[63, :] = 0.0
    z[64, y[64]] = z[64].max()  # the label is the unique max
    if C > 1:  # z_y - max overflows to -inf: an infinite loss in a group of finite ones
        z[65, :] = -big
        z[65, (y[65] + 1) % C] = big
        z[66, (y[66] + 1) % C] = -np.inf


_TOPK = [((), False), ((1, 5), False), ((2, 3), True)]  # (ks, Keras' any-tie rank)


@pytest.mark.parametrize("C", [1, 2, 33, 100, 257, 1000, 1025, 5000])
@pytest.mark.parametrize("n", [1, 65, 200])  # one row; a full group and one row; a tail
@pytest.mark.parametrize("ks, any_tie", _TOPK, ids=["no-topk", "top-1-5", "keras-top-2-3"])
def test_plain_equals_general(monkeypatch, C, n, ks, any_tie):
    rng = np.random.default_rng([C, n])
    z = (rng.standard_normal((n, C)) * 3).astype(np.float32)
    if n >= 100:
        z[90:100] = np.round(z[90:100])  # ties around the label's logit
    y = rng.integers(0, C, n)
    if n >= 67:
        _special_rows(z, y, C)
    for ign in (None, -100):
        opts = SoftmaxOptions(ignore_index=ign, ks=ks, topk_any_tie=any_tie)
        a, b = _both(monkeypatch, z, y, opts)
        _assert_same(a, b)
        assert a.first_bad == (-1 if n < 67 else 6 if ign is None else 7)


def test_plain_top_k_counts_against_a_float64_count(monkeypatch):
    """Top-k hits counted by the plain kernel's exp pass, against NumPy (rank by score,
    then index), in rows of one block and in rows of several."""
    rng = np.random.default_rng(8)
    for C in (300, 3000):
        z = np.round(rng.standard_normal((400, C)) * 4).astype(np.float32)  # many ties
        y = rng.integers(0, C, 400)
        zy = z[np.arange(400), y][:, None]
        rank = (z > zy).sum(axis=1) + ((z == zy) & (np.arange(C) < y[:, None])).sum(axis=1)
        m = fx.softmax_cross_entropy(z, y, top_k=(1, 5, 50))
        for k in (1, 5, 50):
            assert float(m.top_k_accuracy[k]) == np.count_nonzero(rank < k) / 400


@pytest.mark.parametrize("dtype", [np.float64, np.float16, BF16], ids=str)
@pytest.mark.parametrize("C", [40, 3000])
def test_plain_equals_general_in_every_logits_dtype(monkeypatch, dtype, C):
    rng = np.random.default_rng([C, np.dtype(dtype).itemsize])
    n = 150
    z = (rng.standard_normal((n, C)) * 3).astype(dtype)
    y = rng.integers(0, C, n)
    _special_rows(z, y, C)
    a, b = _both(monkeypatch, z, y, SoftmaxOptions(ignore_index=-100))
    _assert_same(a, b)


def test_plain_equals_general_on_strided_rows(monkeypatch):
    """A strided class axis is copied block by block (_run_blocks); a row stride larger than
    the row runs in place."""
    rng = np.random.default_rng(5)
    z = (rng.standard_normal((300, 400)) * 3).astype(np.float32)
    y = rng.integers(0, 200, 300)
    for view in (z[:, :200], z[:, ::2], z[::3, 100:300]):
        a, b = _both(monkeypatch, view, y[:view.shape[0]], SoftmaxOptions())
        _assert_same(a, b)


def test_plain_kernel_public_results_match_general(monkeypatch):
    """Through the public call: loss, accuracy and count identical, and the bad-label error
    the same."""
    rng = np.random.default_rng(6)
    z = (rng.standard_normal((500, 120)) * 3).astype(np.float32)
    y = rng.integers(0, 120, 500)
    got = []
    for plain in (True, False):
        monkeypatch.setattr(K, "SPARSE_PLAIN", plain)
        m = fx.softmax_cross_entropy(z, y)
        got.append((float(m.loss).hex(), float(m.accuracy).hex(), int(m.count)))
        bad = y.copy()
        bad[77] = 120
        with pytest.raises(IndexError, match="row 77") as err:
            fx.softmax_cross_entropy(z, bad)
        got.append(str(err.value))
    assert got[:2] == got[2:]


def test_plain_kernel_counts_correct_rows_exactly():
    """Accuracy against a float64 count (first-index ties included), independently of the
    general kernel."""
    rng = np.random.default_rng(7)
    n, C = 1000, 50
    z = np.round(rng.standard_normal((n, C)) * 2).astype(np.float32)  # many ties
    y = rng.integers(0, C, n)
    y[::3] = z[::3].argmax(axis=1)
    m = fx.softmax_cross_entropy(z, y)
    assert int(m.count) == n
    assert float(m.accuracy) == np.count_nonzero(z.argmax(axis=1) == y) / n
