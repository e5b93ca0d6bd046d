"""The one-shot fast path of ``softmax_cross_entropy`` (``api._one_shot``): a NumPy call with
default options, like an earlier one, skips the validation the earlier one did and runs the
Evaluator's launch. Its results must be the full path's bit for bit, every bad input must
still get the full path's error, and nothing the full path would reject may slip through.
"""

import threading

import numpy as np
import pytest
from conftest import spy_plan_kernels

import fastxent as fx
from fastxent import _core, api


def _bits(m):
    return (float(m.loss).hex(), float(m.accuracy).hex(), int(m.count),
            {k: float(v).hex() for k, v in m.top_k_accuracy.items()})


@pytest.fixture(autouse=True)
def _no_kept_launches():
    """Each test starts with no launch kept on this thread (an earlier test's would make a
    first call fast)."""
    api._ONE_SHOTS.paths.clear()


def _counted(monkeypatch, name):
    """A list that grows by one for each call of ``_core.<name>`` (a full-path call)."""
    calls = []
    real = getattr(_core, name)

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(_core, name, counting)
    return calls


@pytest.fixture
def full_path_calls(monkeypatch):
    return _counted(monkeypatch, "softmax_run")


@pytest.fixture
def full_sigmoid_calls(monkeypatch):
    return _counted(monkeypatch, "sigmoid_run")


def _full_call(monkeypatch, fn, *args, **kw):
    """``fn(*args, **kw)`` with the fast path off."""
    monkeypatch.setattr(api, "ONE_SHOT_FAST", False)
    try:
        return fn(*args, **kw)
    finally:
        monkeypatch.setattr(api, "ONE_SHOT_FAST", True)


def _full(monkeypatch, *args, **kw):
    return _full_call(monkeypatch, fx.softmax_cross_entropy, *args, **kw)


@pytest.mark.parametrize("C", [1, 2, 10, 33, 300, 5000])
@pytest.mark.parametrize("dtype, ydtype", [(np.float32, np.int64), (np.float64, np.int32)])
@pytest.mark.parametrize("top_k", [None, 1, 2])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_fast_path_equals_full_path(monkeypatch, full_path_calls, C, dtype, ydtype, top_k,
                                    reduction):
    top_k = None if top_k is None else min(top_k, C)  # top_k > C is an error (tested below)
    rng = np.random.default_rng([C, np.dtype(dtype).itemsize, top_k or 0])
    n = 3000 if C < 1000 else 300
    z = (rng.standard_normal((n, C)) * 3).astype(dtype)
    y = rng.integers(0, C, n).astype(ydtype)
    z[3] = np.inf if C > 1 else z[3]
    kw = dict(top_k=top_k, reduction=reduction)
    first = fx.softmax_cross_entropy(z, y, **kw)  # the full path; keeps its launch
    assert len(full_path_calls) == 1
    batches = ((z, y), (z[:7], y[:7]), (z[1:], y[1:]),
               (z[::2], y[::2]), (np.asfortranarray(z), y))  # strided: the engine's call
    for zz, yy in batches:
        got = fx.softmax_cross_entropy(zz, yy, **kw)
        assert _bits(got) == _bits(_full(monkeypatch, zz, yy, **kw))
    assert len(full_path_calls) == 1 + len(batches)  # the fast calls, and the full ones
    assert _bits(first) == _bits(fx.softmax_cross_entropy(z, y, **kw))


def test_fast_path_takes_split_batches(monkeypatch, two_threads):
    """A batch large enough for both threads runs as a stream job of the pool."""
    rng = np.random.default_rng(3)
    z = (rng.standard_normal((200_000, 10)) * 3).astype(np.float32)
    y = rng.integers(0, 10, 200_000)
    fx.softmax_cross_entropy(z[:100], y[:100])
    assert _bits(fx.softmax_cross_entropy(z, y)) == _bits(_full(monkeypatch, z, y))


def test_after_priming_bad_inputs_get_the_full_paths_errors(full_path_calls):
    rng = np.random.default_rng(4)
    z = rng.standard_normal((50, 40)).astype(np.float32)
    y = rng.integers(0, 40, 50)
    fx.softmax_cross_entropy(z, y)
    bad = y.copy()
    bad[17] = 40
    with pytest.raises(IndexError, match="row 17"):
        fx.softmax_cross_entropy(z, bad)
    with pytest.raises(ValueError, match="labels shape"):
        fx.softmax_cross_entropy(z, y[:-1])
    with pytest.raises(ValueError, match="top_k"):
        fx.softmax_cross_entropy(z, y, top_k=41)
    with pytest.raises(ValueError, match="top_k"):
        fx.softmax_cross_entropy(z, y, top_k=True)
    with pytest.raises(ValueError, match="reduction"):
        fx.softmax_cross_entropy(z, y, reduction="MEAN")
    with pytest.raises(ValueError, match="label_smoothing"):
        fx.softmax_cross_entropy(z, y, label_smoothing=2.0)
    with pytest.raises(TypeError, match="byte order"):
        fx.softmax_cross_entropy(z.astype(">f4"), y)
    with pytest.raises(TypeError, match="byte order"):
        fx.softmax_cross_entropy(z, y.astype(">i8"))


def test_other_layouts_and_options_take_the_full_path(monkeypatch, full_path_calls):
    rng = np.random.default_rng(5)
    z = (rng.standard_normal((60, 80)) * 3).astype(np.float32)
    y = rng.integers(0, 80, 60)
    fx.softmax_cross_entropy(z, y)
    calls = len(full_path_calls)
    cases = [
        (z[:, ::2], y % 40, {}),  # strided: the launch copies blocks
        (z, y.astype(np.int16), {}),  # another labels dtype
        (z, y, dict(label_smoothing=0.1)),
        (z, y, dict(reduction="none")),
        (z, y, dict(ignore_index=3)),
        (z, y, dict(top_k=(1, 2))),
        (z.view(np.memmap), y, {}),  # an ndarray subclass
    ]
    for zz, yy, kw in cases:
        got = fx.softmax_cross_entropy(zz, yy, **kw)
        want = _full(monkeypatch, zz, yy, **kw)
        if kw.get("reduction") == "none":
            np.testing.assert_array_equal(got.loss, want.loss)
            np.testing.assert_array_equal(got.correct, want.correct)
        else:
            assert _bits(got) == _bits(want)
    # every case ran the full path, twice (the strided one has C = 40, a key not kept yet)
    assert len(full_path_calls) - calls == 2 * len(cases)


def test_empty_batch_after_priming(monkeypatch):
    z = np.ones((5, 4), np.float32)
    y = np.zeros(5, np.int64)
    fx.softmax_cross_entropy(z, y)
    got = fx.softmax_cross_entropy(z[:0], y[:0])
    assert int(got.count) == 0
    assert _bits(got) == _bits(_full(monkeypatch, z[:0], y[:0]))


def test_python_threads_keep_their_own_launches(monkeypatch):
    """Six threads, three shapes: each call's result is that of its own arrays."""
    rng = np.random.default_rng(6)
    data = [((rng.standard_normal((n, C)) * 3).astype(np.float32), rng.integers(0, C, n))
            for n, C in ((5000, 10), (800, 300), (300, 2000))]
    want = [_bits(_full(monkeypatch, z, y)) for z, y in data]
    errors = []

    def work(k):
        try:
            for i in range(30):
                j = (i + k) % 3
                if _bits(fx.softmax_cross_entropy(*data[j])) != want[j]:
                    errors.append((k, i, j))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def _full_evaluate(monkeypatch, *args, **kw):
    return _full_call(monkeypatch, fx.evaluate, *args, **kw)


@pytest.mark.parametrize("kw", [{}, dict(top_k=3), dict(reduction="sum"),
                                dict(task="multiclass", top_k=2)], ids=str)
def test_evaluate_on_class_ids_takes_the_fast_path(monkeypatch, full_path_calls, kw):
    rng = np.random.default_rng(7)
    z = (rng.standard_normal((2000, 50)) * 3).astype(np.float32)
    y = rng.integers(0, 50, 2000)
    first = fx.evaluate(z, y, **kw)
    assert first.task == "multiclass"
    got = fx.evaluate(z[5:], y[5:], **kw)
    assert len(full_path_calls) == 1  # the second call ran fast
    assert got.task == "multiclass"
    assert _bits(got) == _bits(_full_evaluate(monkeypatch, z[5:], y[5:], **kw))
    # the launch kept by evaluate serves softmax_cross_entropy too, and the other way round
    sk = {k: v for k, v in kw.items() if k != "task"}
    assert _bits(fx.softmax_cross_entropy(z[5:], y[5:], **sk)) == _bits(got)
    assert len(full_path_calls) == 2  # only the comparison's full call


def test_evaluate_keeps_its_other_tasks_and_options(monkeypatch, full_path_calls):
    rng = np.random.default_rng(8)
    z = (rng.standard_normal((300, 20)) * 3).astype(np.float32)
    y = rng.integers(0, 20, 300)
    fx.evaluate(z, y)  # keeps the (float32, 20, int64) launch
    calls = len(full_path_calls)
    for kw in (dict(label_smoothing=0.1), dict(ignore_index=0), dict(reduction="none"),
               dict(sample_weight=np.ones(300))):
        got = fx.evaluate(z, y, **kw)
        want = _full_evaluate(monkeypatch, z, y, **kw)
        if kw.get("reduction") == "none":
            np.testing.assert_array_equal(got.loss, want.loss)
        else:
            assert _bits(got) == _bits(want)
    assert len(full_path_calls) - calls == 8
    # one output column: binary, not the softmax path
    z1 = z[:, :1].copy()
    b = fx.evaluate(z1, (y % 2).astype(np.int64))
    assert b.task == "binary"
    with pytest.raises(ValueError, match="task must be one of"):
        fx.evaluate(z, y, task="multi-class")
    with pytest.raises(ValueError, match="needs targets with the logits' shape"):
        fx.evaluate(z, y, task="multilabel")


def test_a_kept_launch_follows_the_engines_kernel_choice(monkeypatch):
    """Tests switch kernels through module globals (SPARSE_PLAIN, SMALL_C); a launch kept
    from before the switch must not run the kernel the switch turned off."""
    from fastxent.backends import numba_cpu as K

    ran = spy_plan_kernels(monkeypatch, "add_into")
    rng = np.random.default_rng(9)
    z = rng.standard_normal((100, 60)).astype(np.float32)
    y = rng.integers(0, 60, 100)
    fx.softmax_cross_entropy(z, y)
    fx.softmax_cross_entropy(z, y)
    assert ran == [K._softmax_sparse_plain]
    monkeypatch.setattr(K, "SPARSE_PLAIN", False)
    fx.softmax_cross_entropy(z, y)  # the full path (the kept launch is stale), kept anew
    fx.softmax_cross_entropy(z, y)
    assert ran == [K._softmax_sparse_plain, K._softmax_sparse]


def _sig_bits(m):
    return (float(m.loss).hex(), float(m.accuracy).hex(), float(m.exact_match).hex(),
            int(m.count), m.task)


def _full_sigmoid(monkeypatch, *args, **kw):
    return _full_call(monkeypatch, fx.sigmoid_cross_entropy, *args, **kw)


@pytest.mark.parametrize("shape, tshape", [((500,), (500,)), ((500, 1), (500,)),
                                           ((500, 1), (500, 1)), ((500, 9), (500, 9)),
                                           ((300, 100), (300, 100))], ids=str)
@pytest.mark.parametrize("dtype, tdtype", [(np.float32, np.float32), (np.float64, np.bool_),
                                           (np.float32, np.float64)], ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_sigmoid_fast_path_equals_full_path(monkeypatch, full_sigmoid_calls, shape, tshape,
                                            dtype, tdtype, reduction):
    rng = np.random.default_rng([len(shape), shape[-1], np.dtype(tdtype).itemsize])
    z = (rng.standard_normal(shape) * 3).astype(dtype)
    t = rng.random(tshape) < 0.3
    t = t if tdtype is np.bool_ else t.astype(tdtype)
    z.reshape(-1)[4] = np.nan
    fx.sigmoid_cross_entropy(z, t, reduction=reduction)
    batches = ((z, t), (z[:7], t[:7]), (z[1:], t[1:]), (z[::2], t[::2]))
    for zz, tt in batches:
        got = fx.sigmoid_cross_entropy(zz, tt, reduction=reduction)
        assert _sig_bits(got) == _sig_bits(_full_sigmoid(monkeypatch, zz, tt,
                                                         reduction=reduction))
    assert len(full_sigmoid_calls) == 1 + len(batches)


def test_sigmoid_after_priming_bad_inputs_and_options(monkeypatch, full_sigmoid_calls):
    rng = np.random.default_rng(10)
    z = rng.standard_normal((40, 6)).astype(np.float32)
    t = (rng.random((40, 6)) < 0.5).astype(np.float32)
    fx.sigmoid_cross_entropy(z, t)
    bad = t.copy()
    bad[9, 2] = 1.5
    with pytest.raises(ValueError, match="row 9 has 1.5 at column 2"):
        fx.sigmoid_cross_entropy(z, bad)
    with pytest.raises(ValueError, match="targets shape"):
        fx.sigmoid_cross_entropy(z, t[:, :5])
    with pytest.raises(ValueError, match="threshold"):
        fx.sigmoid_cross_entropy(z, t, threshold=1.5)
    calls = len(full_sigmoid_calls)
    for kw in (dict(threshold=0.3), dict(pos_weight=np.full(6, 2.0)), dict(label_smoothing=0.1),
               dict(from_logits=False), dict(sample_weight=np.ones(40))):
        zz = 1 / (1 + np.exp(-z)) if kw.get("from_logits") is False else z
        assert _sig_bits(fx.sigmoid_cross_entropy(zz, t, **kw)) == _sig_bits(
            _full_sigmoid(monkeypatch, zz, t, **kw))
    assert len(full_sigmoid_calls) - calls == 10
    # integer 0/1 targets are not kept (the full path casts them)
    ti = t.astype(np.int64)
    assert _sig_bits(fx.sigmoid_cross_entropy(z, ti)) == _sig_bits(fx.sigmoid_cross_entropy(z, t))


def test_a_kept_launch_does_not_keep_the_batch_alive():
    import gc
    import weakref

    rng = np.random.default_rng(11)
    z = rng.standard_normal((70_000, 12)).astype(np.float32)
    y = rng.integers(0, 12, 70_000)
    t = (rng.random((70_000, 12)) < 0.2).astype(np.float32)
    for _ in range(2):  # the full path keeps the launch, the second call runs it
        fx.softmax_cross_entropy(z, y)
        fx.sigmoid_cross_entropy(z, t)
    refs = [weakref.ref(a) for a in (z, y, t)]
    del z, y, t
    gc.collect()
    assert [r() for r in refs] == [None, None, None]
