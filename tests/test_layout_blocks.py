"""Layouts whose class axis is strided are copied in blocks of config.CPU_BLOCK_ROWS rows: the
block-wise result must equal the contiguous one bitwise, and the first bad row must be reported
at its row in the whole array."""

import numpy as np
import pytest

import fastxent as fx
from fastxent import config


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(config, "CPU_BLOCK_ROWS", 7)


def test_fortran_blocks_equal_contiguous(small_blocks):
    rng = np.random.default_rng(3)
    z = np.asfortranarray(rng.standard_normal((101, 37)).astype(np.float32))
    y = rng.integers(0, 37, 101)
    y[3] = -100
    kw = dict(reduction="none", ignore_index=-100, top_k=(1, 5))
    a = fx.softmax_cross_entropy(z, y, **kw)
    b = fx.softmax_cross_entropy(np.ascontiguousarray(z), y, **kw)
    np.testing.assert_array_equal(a.loss, b.loss)
    np.testing.assert_array_equal(a.correct, b.correct)
    assert int(a.count) == 100
    assert float(a.top_k_accuracy[5]) == float(b.top_k_accuracy[5])
    t = (rng.random((101, 37)) < 0.3).astype(np.float32)
    s1 = fx.sigmoid_cross_entropy(z, np.asfortranarray(t), reduction="none")
    s2 = fx.sigmoid_cross_entropy(np.ascontiguousarray(z), t, reduction="none")
    np.testing.assert_array_equal(s1.loss, s2.loss)
    assert float(s1.exact_match) == float(s2.exact_match)


def test_first_bad_row_across_blocks(small_blocks):
    rng = np.random.default_rng(4)
    z = np.asfortranarray(rng.standard_normal((60, 12)).astype(np.float32))
    y = rng.integers(0, 12, 60)
    y[50], y[55] = 99, -1
    with pytest.raises(IndexError, match=r"label 99 at row 50 is out of range \[0, 12\)"):
        fx.softmax_cross_entropy(z, y)
    m = fx.softmax_cross_entropy(z, y, validate=False, reduction="none")
    assert np.isnan(m.loss[50]) and np.isnan(m.loss[55]) and not m.correct[50]
