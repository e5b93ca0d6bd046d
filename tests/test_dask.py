"""fastxent.dask.evaluate: a real distributed LocalCluster (worker processes) vs in memory."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import cupy_or_skip

import fastxent as fx

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
fxd = pytest.importorskip("fastxent.dask")


def bits(v) -> bytes:
    return np.asarray(v, dtype=np.float64).tobytes()


def assert_same(got, want):
    assert got.task == want.task
    assert int(got.count) == int(want.count)
    for a, b in ((got.loss, want.loss), (got.accuracy, want.accuracy)):
        assert bits(a) == bits(b), (float(a), float(b))
    assert (got.exact_match is None) == (want.exact_match is None)
    if want.exact_match is not None:
        assert bits(got.exact_match) == bits(want.exact_match)
    assert {k: bits(v) for k, v in got.top_k_accuracy.items()} == \
        {k: bits(v) for k, v in want.top_k_accuracy.items()}


@pytest.fixture(scope="module")
def client():
    """Two worker processes on 127.0.0.1, one thread each. The scheduler's HTTP server binds
    a free port (":0"): with dashboard_address=None it still tries 8787 and warns when that
    is taken (a second cluster: another pytest-xdist worker running this module), and the
    warning, an error under this suite's filterwarnings, failed the cluster's start."""
    cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                       host="127.0.0.1", dashboard_address=":0")
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


@pytest.fixture(scope="module")
def sparse_data():
    rng = np.random.default_rng(42)
    n, C = 12_345, 17
    z = (rng.standard_normal((n, C)) * 3).astype(np.float32)
    y = rng.integers(0, C, n)
    y[rng.random(n) < 0.03] = -1
    sw = rng.random(n)
    return z, y, sw


UNEVEN = (4000, 0, 1, 3344, 5000, 0)  # uneven, with empty chunks (sums to 12345)


def test_cluster_equals_in_memory(client, sparse_data):
    z, y, sw = sparse_data
    opts = dict(top_k=(1, 5), ignore_index=-1, class_weight=np.linspace(0.5, 1.5, 17))
    want = fx.evaluate(z, y, sample_weight=sw, **opts)
    dz = da.from_array(z, chunks=(UNEVEN, -1))
    dy = da.from_array(y, chunks=3000)       # other chunks: realigned to the logits' rows
    dsw = da.from_array(sw, chunks=UNEVEN)
    got = fxd.evaluate(dz, dy, sample_weight=dsw, **opts)
    assert_same(got, want)
    assert isinstance(got.loss, np.ndarray)
    # the work really ran on the worker processes
    assert len(client.scheduler_info()["workers"]) == 2


def test_cluster_dense_and_multilabel(client):
    rng = np.random.default_rng(1)
    n, C = 6000, 8
    z = rng.standard_normal((n, C)).astype(np.float32)
    soft = rng.random((n, C)).astype(np.float32)
    soft /= soft.sum(axis=1, keepdims=True)
    chunks = ((1500, 0, 2500, 2000), (C,))
    for labels in (soft, (rng.random((n, C)) < 0.3).astype(np.float32)):
        want = fx.evaluate(z, labels)
        got = fxd.evaluate(da.from_array(z, chunks=chunks), da.from_array(labels, chunks=chunks))
        assert_same(got, want)
    # mixed: one block's rows all sum to 1, another's do not -> multilabel, as in memory
    mixed = np.eye(C, dtype=np.float32)[rng.integers(0, C, n)]
    mixed[5000:5003, :3] = 1
    want = fx.evaluate(z, mixed)
    assert want.task == "multilabel"
    got = fxd.evaluate(da.from_array(z, chunks=chunks), da.from_array(mixed, chunks=chunks))
    assert_same(got, want)


def test_cluster_binary_and_leading_axes(client):
    rng = np.random.default_rng(2)
    zb = rng.standard_normal(5000).astype(np.float32)
    tb = (rng.random(5000) < 0.5).astype(np.float32)
    assert_same(fxd.evaluate(da.from_array(zb, chunks=1234), da.from_array(tb, chunks=1234)),
                fx.evaluate(zb, tb))
    z3 = rng.standard_normal((30, 40, 6)).astype(np.float32)
    y3 = rng.integers(0, 6, (30, 40))
    got = fxd.evaluate(da.from_array(z3, chunks=(7, 15, -1)), da.from_array(y3, chunks=(7, 15)),
                       top_k=2)
    assert_same(got, fx.evaluate(z3, y3, top_k=2))


def test_mismatch_warning_reaches_the_client(client):
    rng = np.random.default_rng(3)
    z = rng.standard_normal((2000, 5)).astype(np.float32)
    onehot = np.eye(5, dtype=np.float32)[rng.integers(0, 5, 2000)]
    with pytest.warns(fx.TaskMismatchWarning) as want_w:
        want = fx.evaluate(z, onehot, task="binary")
    with pytest.warns(fx.TaskMismatchWarning) as got_w:
        got = fxd.evaluate(da.from_array(z, chunks=(600, -1)),
                           da.from_array(onehot, chunks=(600, -1)), task="binary")
    assert_same(got, want)
    assert str(got_w[0].message) == str(want_w[0].message)


def test_bad_label_names_the_block(client, sparse_data):
    z, y, _ = sparse_data
    y = y.copy()
    y[4005] = 99
    with pytest.raises(IndexError, match=r"label 99 .*Dask block \(3,\)"):
        fxd.evaluate(da.from_array(z, chunks=(UNEVEN, -1)), da.from_array(y, chunks=UNEVEN),
                     ignore_index=-1)


def test_split_class_axis_is_an_error(sparse_data):
    z, y, _ = sparse_data
    with pytest.raises(ValueError, match=r"class axis .* split.*rechunk\(\{-1: -1\}\)"):
        fxd.evaluate(da.from_array(z, chunks=(5000, 8)), da.from_array(y, chunks=5000))


def test_local_schedulers_and_plain_arrays(sparse_data):
    z, y, sw = sparse_data
    want = fx.evaluate(z, y, ignore_index=-1, reduction="sum")
    for sched in ("sync", "threads"):
        got = fxd.evaluate(da.from_array(z, chunks=(UNEVEN, -1)), da.from_array(y, chunks=999),
                           ignore_index=-1, reduction="sum", split_every=3,
                           compute_kwargs={"scheduler": sched})
        assert_same(got, want)
    got = fxd.evaluate(z, y, ignore_index=-1, reduction="sum",
                       compute_kwargs={"scheduler": "sync"})  # NumPy in: wrapped
    assert_same(got, want)


def test_empty_arrays_and_options():
    z0 = np.zeros((0, 4), np.float32)
    for labels in (np.zeros(0, np.int64), np.zeros((0, 4), np.float32)):
        got = fxd.evaluate(da.from_array(z0, chunks=(1, -1)), da.from_array(labels),
                           compute_kwargs={"scheduler": "sync"})
        assert_same(got, fx.evaluate(z0, labels))
    z = np.zeros((10, 4), np.float32)
    y = np.zeros(10, np.int64)
    with pytest.raises(ValueError, match="reduction='none'"):
        fxd.evaluate(da.from_array(z), da.from_array(y), reduction="none")
    with pytest.raises(ValueError, match="labels shape"):
        fxd.evaluate(da.from_array(z), da.from_array(np.zeros(9, np.int64)))
    with pytest.raises(ValueError, match="sample_weight"):
        fxd.evaluate(da.from_array(z), da.from_array(y), sample_weight=da.ones(9))


@pytest.mark.gpu
def test_cupy_blocks():
    cupy = cupy_or_skip()
    rng = np.random.default_rng(5)
    z = cupy.asarray(rng.standard_normal((20_000, 40)).astype(np.float32))
    y = cupy.asarray(rng.integers(0, 40, 20_000))
    want = fx.evaluate(z, y, top_k=5)
    got = fxd.evaluate(da.from_array(z, chunks=((5000, 0, 7000, 8000), -1), asarray=False),
                       da.from_array(y, chunks=4000, asarray=False), top_k=5,
                       compute_kwargs={"scheduler": "threads"})
    assert isinstance(got.loss, cupy.ndarray)
    assert_same(got, want)
