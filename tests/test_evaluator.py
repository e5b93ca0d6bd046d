"""fx.Evaluator: streaming equals one-shot, bitwise; merges, checkpoints, task rules."""

from __future__ import annotations

import json
import pickle
import random
import warnings

import numpy as np
import pytest
from conftest import cupy_or_skip

import fastxent as fx
from fastxent import evaluator as E

CHUNKS = (1, 7, 1000, 65536, None)  # None: the whole array in one update
N_BIG = 70_003   # > 65536, so that every chunk size cuts somewhere
N_SMALL = 400    # chunk sizes 1 and 7 run on a prefix (each update costs ~0.3 ms)


def bits(v) -> bytes:
    return np.asarray(v, dtype=np.float64).tobytes()


def assert_same(got: fx.Metrics, want: fx.Metrics) -> None:
    """Every reported value identical, bit for bit (NaN included)."""
    assert got.task == want.task
    assert int(got.count) == int(want.count)
    assert bits(got.loss) == bits(want.loss), (float(got.loss), float(want.loss))
    assert bits(got.accuracy) == bits(want.accuracy), (float(got.accuracy),
                                                       float(want.accuracy))
    assert (got.exact_match is None) == (want.exact_match is None)
    if want.exact_match is not None:
        assert bits(got.exact_match) == bits(want.exact_match)
    assert list(got.top_k_accuracy) == list(want.top_k_accuracy)
    for k in want.top_k_accuracy:
        assert bits(got.top_k_accuracy[k]) == bits(want.top_k_accuracy[k])


def stream(ev: fx.Evaluator, z, y, chunk, sw=None) -> fx.Evaluator:
    n = z.shape[0]
    step = n if chunk is None else chunk
    for i in range(0, max(n, 1), max(step, 1)):
        sl = slice(i, i + step)
        ev.update(z[sl], y[sl], None if sw is None else sw[sl])
    return ev


# ----------------------------------------------------------------------------- data sets


def _softmax_sparse(rng, n):
    C = 13
    z = (rng.standard_normal((n, C)) * 4).astype(np.float32)
    y = rng.integers(0, C, n)
    y[rng.random(n) < 0.05] = -100
    z[rng.random(n) < 0.001, 3] = -np.inf  # a few -inf logits (finite losses, or +inf)
    z[:, 5] += 1e4 * (rng.random(n) < 0.001)  # and a few huge ones
    sw = rng.random(n) * 2
    cw = rng.random(C) + 0.5
    opts = dict(top_k=(1, 3), ignore_index=-100, class_weight=cw, label_smoothing=0.1)
    return z, y, sw, opts


def _softmax_dense(rng, n):
    C = 6
    z = rng.standard_normal((n, C)).astype(np.float64)
    t = rng.random((n, C))
    t /= t.sum(axis=1, keepdims=True)
    return z, t, None, dict(top_k=2)


def _multilabel(rng, n):
    C = 9
    z = (rng.standard_normal((n, C)) * 3).astype(np.float32)
    t = (rng.random((n, C)) < 0.3).astype(np.float32)
    return z, t, rng.random(n), dict(pos_weight=np.linspace(0.5, 2, C), threshold=0.3)


def _binary(rng, n):
    z = rng.standard_normal(n).astype(np.float16)
    t = rng.random(n) < 0.4
    return z, t, None, dict(from_logits=True)


DATASETS = {"softmax_sparse": _softmax_sparse, "softmax_dense": _softmax_dense,
            "multilabel": _multilabel, "binary": _binary}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(20260501)
    return {k: f(rng, N_BIG) for k, f in DATASETS.items()}


# ----------------------------------------------------------------------------- chunkings


@pytest.mark.parametrize("name", list(DATASETS))
@pytest.mark.parametrize("chunk", CHUNKS, ids=lambda c: f"chunk{c or 'whole'}")
def test_any_chunking_equals_one_shot(data, name, chunk):
    z, y, sw, opts = data[name]
    if chunk is not None and chunk < 100:
        z, y = z[:N_SMALL], y[:N_SMALL]
        sw = None if sw is None else sw[:N_SMALL]
    want = fx.evaluate(z, y, sample_weight=sw, **opts)
    ev = stream(fx.Evaluator(**opts), z, y, chunk, sw)
    assert_same(ev.result(), want)
    assert len(ev) == z.shape[0]
    assert ev.count == int(want.count)
    assert ev.task == want.task


def test_reduction_sum_and_ragged_chunks(data):
    z, y, sw, opts = data["softmax_sparse"]
    want = fx.evaluate(z, y, sample_weight=sw, reduction="sum", **opts)
    ev = fx.Evaluator(reduction="sum", **opts)
    rng = np.random.default_rng(3)
    cuts = np.sort(rng.choice(np.arange(1, N_BIG), size=40, replace=False))
    cuts = np.sort(np.concatenate([[0, 0], cuts, cuts[:3], [N_BIG, N_BIG]]))  # empty pieces
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        ev.update(z[a:b], y[a:b], sample_weight=sw[a:b])
    assert_same(ev.result(), want)


def test_leading_axes_and_dtypes():
    rng = np.random.default_rng(5)
    z = rng.standard_normal((40, 25, 11)).astype(np.float32)
    y = rng.integers(0, 11, (40, 25))
    want = fx.evaluate(z, y, top_k=4)
    ev = fx.Evaluator(top_k=4)
    for i in range(0, 40, 3):
        ev.update(z[i:i + 3], y[i:i + 3])
    assert_same(ev.result(), want)
    assert len(ev) == 1000
    import ml_dtypes

    for dt in (np.float16, ml_dtypes.bfloat16, np.float64):
        zz = z.reshape(-1, 11).astype(dt)
        yy = y.reshape(-1)
        assert_same(stream(fx.Evaluator(), zz, yy, 77).result(), fx.evaluate(zz, yy))


def test_non_finite_rows():
    rng = np.random.default_rng(8)
    z = rng.standard_normal((3000, 5)).astype(np.float32)
    y = rng.integers(0, 5, 3000)
    z[17, 2] = np.nan
    z[1000, 0] = np.inf
    z[2000, y[2000]] = -np.inf
    for rows in (slice(0, 3000), slice(1500, 3000), slice(1999, 2001)):
        want = fx.evaluate(z[rows], y[rows])
        assert_same(stream(fx.Evaluator(), z[rows], y[rows], 7).result(), want)


def test_carry_after_many_raw_additions(data, monkeypatch):
    z, y, sw, opts = data["softmax_sparse"]
    monkeypatch.setattr(E, "_RAW_LIMIT", 3)  # carry every third addition
    ev = stream(fx.Evaluator(**opts), z, y, 5000, sw)
    assert_same(ev.result(), fx.evaluate(z, y, sample_weight=sw, **opts))


def test_carry_of_host_limbs_is_canonical_and_keeps_the_value():
    """The host carry (whole-array passes) gives the limbs of the limb-by-limb carry (the
    one device arrays keep): the same integer, every limb but the top one in [0, 2**32).
    Raw limbs of either sign up to 2**52, and a long ripple through limbs of 2**32 - 1."""
    from fastxent import _state as S

    rng = np.random.default_rng(5)
    raw = rng.integers(-(1 << 52), 1 << 52, size=(6, S.NLIMBS), dtype=np.int64)
    raw[2] = (1 << 32) - 1  # a carry into limb 0 ripples through every limb
    raw[2, 0] = 1 << 40
    raw[3] = 0
    for row in raw:
        want = row.copy()
        for j in range(S.NLIMBS - 1):  # the limb-by-limb carry
            c = want[j] >> S.LIMB_BITS
            want[j] -= c << S.LIMB_BITS
            want[j + 1] += c
        got = row[None].copy()
        E._carry(got)
        assert np.array_equal(got[0], want)
        assert ((got[0, :-1] >= 0) & (got[0, :-1] < 1 << 32)).all()
        value = sum(int(v) << (S.LIMB_BITS * j) for j, v in enumerate(row))
        assert sum(int(v) << (S.LIMB_BITS * j) for j, v in enumerate(got[0])) == value


def test_torch_batches_give_torch_results():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    z = rng.standard_normal((3000, 7)).astype(np.float32)
    y = rng.integers(0, 7, 3000)
    want = fx.evaluate(z, y)
    ev = fx.Evaluator()
    for i in range(0, 3000, 1000):
        ev.update(torch.from_numpy(z[i:i + 1000]), torch.from_numpy(y[i:i + 1000]))
    got = ev.result()
    assert isinstance(got.loss, torch.Tensor)
    assert float(got.loss) == float(want.loss) and float(got.accuracy) == float(want.accuracy)


# ----------------------------------------------------------------------------- merging


def _parts(n, k, rng):
    cuts = np.sort(rng.integers(0, n + 1, size=k - 1))
    return [(a, b) for a, b in zip(np.r_[0, cuts], np.r_[cuts, n], strict=True)]


def _merge_balanced(evs):
    while len(evs) > 1:
        evs = [evs[i].merge(evs[i + 1]) if i + 1 < len(evs) else evs[i]
               for i in range(0, len(evs), 2)]
    return evs[0]


@pytest.mark.parametrize("name", list(DATASETS))
def test_merge_trees(data, name):
    z, y, sw, opts = data[name]
    want = fx.evaluate(z, y, sample_weight=sw, **opts)
    rng = np.random.default_rng(7)
    pieces = _parts(N_BIG, 9, rng) + [(0, 0)]  # an empty piece too

    def fresh():
        out = []
        for a, b in pieces:
            ev = fx.Evaluator(**opts)
            ev.update(z[a:b], y[a:b], None if sw is None else sw[a:b])
            out.append(ev)
        return out

    left = fresh()
    acc = left[0]
    for ev in left[1:]:
        acc.merge(ev)
    assert_same(acc.result(), want)

    right = fresh()
    acc = right[-1]
    for ev in reversed(right[:-1]):
        acc.merge(ev)
    assert_same(acc.result(), want)

    assert_same(_merge_balanced(fresh()).result(), want)

    shuffled = fresh()
    random.Random(1).shuffle(shuffled)
    root = fx.Evaluator(**opts)  # never updated: adopts the first state it is given
    for ev in shuffled:
        root.merge(ev)
    assert_same(root.result(), want)
    assert len(root) == N_BIG


def test_merge_rejects_different_configurations():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((50, 4)).astype(np.float32)
    y = rng.integers(0, 4, 50)
    a, b = fx.Evaluator(top_k=2), fx.Evaluator(top_k=3)
    a.update(z, y)
    b.update(z, y)
    with pytest.raises(ValueError, match="different options.*top_k"):
        a.merge(b)
    with pytest.raises(ValueError, match="different tasks"):
        fx.Evaluator().merge(fx.Evaluator(task="multiclass"))
    c = fx.Evaluator(top_k=2)
    c.update(rng.standard_normal((50, 5)).astype(np.float32), rng.integers(0, 5, 50))
    with pytest.raises(ValueError, match="n_classes"):
        fx.Evaluator(top_k=2).merge(c).merge(a)
    with pytest.raises(TypeError):
        a.merge(object())


def test_merge_with_itself_doubles():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((100, 4)).astype(np.float32)
    y = rng.integers(0, 4, 100)
    ev = fx.Evaluator(reduction="sum")
    ev.update(z, y)
    ev.merge(ev)
    want = fx.evaluate(np.concatenate([z, z]), np.concatenate([y, y]), reduction="sum")
    assert_same(ev.result(), want)


# ----------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("name", list(DATASETS))
def test_state_dict_round_trip(data, name):
    z, y, sw, opts = data[name]
    ev = stream(fx.Evaluator(**opts), z, y, 20000, sw)
    text = json.dumps(ev.state_dict())  # plain JSON
    d = json.loads(text)
    assert d["format"] == "fastxent.Evaluator" and d["version"] == E.EVALUATOR_STATE_VERSION
    back = fx.Evaluator.from_state_dict(d)
    assert_same(back.result(), ev.result())
    assert len(back) == len(ev)
    same = fx.Evaluator(**opts)
    same.load_state_dict(d)
    assert_same(same.result(), ev.result())
    assert json.dumps(same.state_dict()) == text


def test_resume_after_crash(tmp_path, data):
    """Checkpoint every 4 chunks; die mid-stream; a new evaluator resumes from the file."""
    z, y, sw, opts = data["softmax_sparse"]
    ckpt = tmp_path / "eval.json"
    chunk = 3000

    class Crash(Exception):
        pass

    def run(crash_at=None):
        ev = fx.Evaluator(**opts)
        if ckpt.exists():
            ev.load_state_dict(json.loads(ckpt.read_text()))
        k = 0
        for i in range(len(ev), N_BIG, chunk):  # resume at the first row not checkpointed
            if crash_at is not None and i >= crash_at:
                raise Crash
            ev.update(z[i:i + chunk], y[i:i + chunk], sample_weight=sw[i:i + chunk])
            k += 1
            if k % 4 == 0:
                tmp = ckpt.with_suffix(".tmp")
                tmp.write_text(json.dumps(ev.state_dict()))
                tmp.replace(ckpt)  # atomic: a crash never leaves half a checkpoint
        return ev

    with pytest.raises(Crash):
        run(crash_at=40_000)  # rows after the last checkpoint (36000) are lost ...
    assert json.loads(ckpt.read_text())["rows_seen"] == 36_000
    ev = run()              # ... and evaluated again after the restart, exactly once
    assert len(ev) == N_BIG
    assert_same(ev.result(), fx.evaluate(z, y, sample_weight=sw, **opts))


def test_load_state_dict_checks():
    ev = fx.Evaluator(top_k=2)
    ev.update(np.zeros((3, 4), np.float32), np.array([0, 1, 2]))
    d = ev.state_dict()
    with pytest.raises(ValueError, match="different options"):
        fx.Evaluator(top_k=3).load_state_dict(d)
    with pytest.raises(ValueError, match="version"):
        fx.Evaluator(top_k=2).load_state_dict({**d, "version": 999})
    with pytest.raises(ValueError, match="not a fastxent Evaluator"):
        fx.Evaluator().load_state_dict({"counts": []})
    # an evaluator loaded from a checkpoint keeps accepting batches
    more = fx.Evaluator.from_state_dict(d)
    more.update(np.ones((2, 4), np.float32), np.array([3, 0]))
    z = np.concatenate([np.zeros((3, 4), np.float32), np.ones((2, 4), np.float32)])
    assert_same(more.result(), fx.evaluate(z, np.array([0, 1, 2, 3, 0]), top_k=2))


def test_pickle_round_trip(data):
    z, y, sw, opts = data["multilabel"]
    ev = stream(fx.Evaluator(**opts), z, y, 30000, sw)
    back = pickle.loads(pickle.dumps(ev))
    assert_same(back.result(), ev.result())
    back.merge(pickle.loads(pickle.dumps(ev)))
    assert int(back.result().count) == 2 * N_BIG


# ----------------------------------------------------------------------------- task rules


def test_auto_task_resolution(data):
    rng = np.random.default_rng(2)
    z = rng.standard_normal((600, 5)).astype(np.float32)
    y = rng.integers(0, 5, 600)
    onehot = np.eye(5, dtype=np.float32)[y]
    multihot = (rng.random((600, 5)) < 0.4).astype(np.float32)
    for labels, task in ((y, "multiclass"), (onehot, "multiclass"), (multihot, "multilabel")):
        ev = stream(fx.Evaluator(), z, labels, 100)
        assert ev.task == task
        assert_same(ev.result(), fx.evaluate(z, labels))
    zb = rng.standard_normal((600, 1)).astype(np.float32)
    ev = stream(fx.Evaluator(), zb, y[:, None] % 2, 64)
    assert ev.task == "binary"
    assert_same(ev.result(), fx.evaluate(zb, y[:, None] % 2))


def test_auto_contradiction_is_an_error():
    rng = np.random.default_rng(4)
    z = rng.standard_normal((20, 5)).astype(np.float32)
    onehot = np.eye(5, dtype=np.float32)[rng.integers(0, 5, 20)]
    multihot = onehot.copy()
    multihot[13, :2] = 1
    ev = fx.Evaluator()
    ev.update(z[:10], onehot[:10])
    assert ev.task == "multiclass"
    with pytest.raises(ValueError, match="task='multilabel'"):
        ev.update(z[10:], multihot[10:])
    # a multi-hot first batch decides multilabel; one-hot rows later are consistent with it
    ev = fx.Evaluator()
    ev.update(z[:10], multihot[:10])
    ev.update(z[10:], onehot[10:])
    assert_same(ev.result(), fx.evaluate(z, np.concatenate([multihot[:10], onehot[10:]])))
    # the label form must not change
    ev = fx.Evaluator(task="multiclass")
    ev.update(z[:10], onehot[:10].argmax(1))
    with pytest.raises(ValueError, match="label form|class ids"):
        ev.update(z[10:], onehot[10:])
    # neither may the number of classes
    ev = fx.Evaluator()
    ev.update(z[:10], onehot[:10].argmax(1))
    with pytest.raises(ValueError, match="n_classes"):
        ev.update(z[10:, :4], onehot[10:, :4].argmax(1))


def test_merging_opposite_auto_decisions_is_an_error():
    rng = np.random.default_rng(4)
    z = rng.standard_normal((20, 5)).astype(np.float32)
    onehot = np.eye(5, dtype=np.float32)[rng.integers(0, 5, 20)]
    multihot = np.maximum(onehot, np.eye(5, dtype=np.float32)[rng.integers(0, 5, 20)])
    multihot[0, :2] = 1
    a, b = fx.Evaluator(), fx.Evaluator()
    a.update(z[:10], onehot[:10])
    b.update(z[10:], multihot[10:])
    with pytest.raises(ValueError, match="different tasks"):
        a.merge(b)


def test_dense_auto_with_options_of_one_task():
    """Options that fit only one task do not break the first-row guess (multilabel data
    whose first row has a single positive, with pos_weight)."""
    z = np.zeros((3, 3), np.float32)
    t = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1]], np.float32)
    ev = fx.Evaluator(pos_weight=np.full(3, 2.0))
    ev.update(z, t)
    assert ev.task == "multilabel"
    want = fx.sigmoid_cross_entropy(z, t, pos_weight=np.full(3, 2.0))
    got = ev.result()
    assert bits(got.loss) == bits(want.loss) and bits(got.accuracy) == bits(want.accuracy)
    ev = fx.Evaluator(pos_weight=np.full(3, 2.0))  # labels that are multiclass: an error
    with pytest.raises(ValueError, match="pos_weight"):
        ev.update(z, np.eye(3, dtype=np.float32))


def test_zero_rows():
    z0, y0 = np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32)
    ev = fx.Evaluator()
    ev.update(z0, y0)      # dense, zero rows: decides nothing
    assert ev.task is None
    assert_same(ev.result(), fx.evaluate(z0, y0))
    ev.update(np.eye(4, dtype=np.float32), np.eye(4, dtype=np.float32))
    assert ev.task == "multiclass"
    ev2 = fx.Evaluator(top_k=2)
    ev2.update(np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    assert ev2.task == "multiclass" and len(ev2) == 0
    assert_same(ev2.result(), fx.evaluate(np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
                                          top_k=2))
    with pytest.raises(ValueError, match="before any update"):
        fx.Evaluator().result()
    back = fx.Evaluator.from_state_dict(json.loads(json.dumps(ev2.state_dict())))
    assert_same(back.result(), ev2.result())
    pend = fx.Evaluator()
    pend.update(z0, y0)
    back = fx.Evaluator.from_state_dict(json.loads(json.dumps(pend.state_dict())))
    assert_same(back.result(), fx.evaluate(z0, y0))


@pytest.mark.parametrize("asked", ["binary", "multilabel"])
def test_mismatch_warning_matches_evaluate(asked):
    rng = np.random.default_rng(9)
    z = rng.standard_normal((500, 6)).astype(np.float32)
    onehot = np.eye(6, dtype=np.float32)[rng.integers(0, 6, 500)]
    with pytest.warns(fx.TaskMismatchWarning) as want_w:
        want = fx.evaluate(z, onehot, task=asked)
    ev = stream(fx.Evaluator(task=asked), z, onehot, 128)  # no warning per batch
    with pytest.warns(fx.TaskMismatchWarning) as got_w:
        got = ev.result()
    assert_same(got, want)
    assert [str(w.message) for w in got_w] == [str(w.message) for w in want_w]
    assert got_w[0].filename == __file__  # points at the caller of result()


def test_multiclass_on_multihot_warns_like_evaluate():
    rng = np.random.default_rng(10)
    z = rng.standard_normal((300, 6)).astype(np.float32)
    mh = (rng.random((300, 6)) < 0.4).astype(np.float32)
    with pytest.warns(fx.TaskMismatchWarning) as want_w:
        want = fx.evaluate(z, mh, task="multiclass")
    ev = stream(fx.Evaluator(task="multiclass"), z, mh, 50)
    with pytest.warns(fx.TaskMismatchWarning) as got_w:
        got = ev.result()
    assert_same(got, want)
    assert str(got_w[0].message) == str(want_w[0].message)


def test_options_and_errors():
    with pytest.raises(ValueError, match="reduction='none'"):
        fx.Evaluator(reduction="none")
    with pytest.raises(ValueError, match="reduction"):
        fx.Evaluator(reduction="avg")
    with pytest.raises(ValueError, match="task"):
        fx.Evaluator(task="regression")
    with pytest.raises(TypeError, match="update"):
        fx.Evaluator(sample_weight=np.ones(3))
    with pytest.raises(TypeError, match="unexpected option"):
        fx.Evaluator(topk=3)
    with pytest.raises(ValueError, match="does not apply"):
        fx.Evaluator(task="multiclass", threshold=0.3)
    ev = fx.Evaluator(top_k=2)  # auto: resolved to multilabel, top_k does not apply
    with pytest.raises(ValueError, match="does not apply"):
        ev.update(np.zeros((2, 3), np.float32), np.array([[1, 1, 0], [0, 0, 1]], np.float32))
    ev = fx.Evaluator()
    ev.update(np.zeros((3, 3), np.float32), np.array([0, 1, 2]), sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="sample_weight"):
        ev.update(np.zeros((3, 3), np.float32), np.array([0, 1, 2]))
    ev.update(np.zeros((0, 3), np.float32), np.zeros(0, np.int64))  # empty: fine either way
    ev = fx.Evaluator()
    ev.update(np.zeros((5, 3), np.float32), np.array([0, 1, 2, 0, 1]))
    with pytest.raises(IndexError, match=r"row 1 .*stream row 5"):
        ev.update(np.zeros((2, 3), np.float32), np.array([0, 3]))
    assert len(ev) == 5 and ev.count == 5  # a rejected batch adds nothing
    assert "rows_seen=5" in repr(ev)


def test_reset():
    ev = fx.Evaluator()
    ev.update(np.zeros((3, 3), np.float32), np.array([0, 1, 2]))
    ev.reset()
    assert len(ev) == 0 and ev.task is None
    ev.update(np.ones((2, 2), np.float32), np.array([[1.0, 0], [0, 1]], np.float32))
    assert ev.task == "multiclass" and ev.count == 2


def test_no_warning_leaks_from_streaming(data):
    z, y, sw, opts = data["softmax_sparse"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stream(fx.Evaluator(**opts), z, y, 9000, sw).result()


# ----------------------------------------------------------------------------- fast path


def _count_full_launches(monkeypatch):
    """Count the batches that take the full (validating) launch instead of the fast path."""
    calls = []
    real = E._core.softmax_run

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(E._core, "softmax_run", counting)
    return calls


def test_fast_path_equals_one_shot_and_is_taken(monkeypatch):
    rng = np.random.default_rng(31)
    z = (rng.standard_normal((9000, 13)) * 3).astype(np.float32)
    y = rng.integers(0, 13, 9000)
    y[rng.random(9000) < 0.05] = -100
    z[100, 2] = np.nan
    opts = dict(top_k=(1, 3), ignore_index=-100, class_weight=rng.random(13) + 0.5,
                label_smoothing=0.1)
    calls = _count_full_launches(monkeypatch)
    got = stream(fx.Evaluator(**opts), z, y, 1000).result()
    assert len(calls) == 1  # only the first batch went through the full launch
    assert_same(got, fx.evaluate(z, y, **opts))


def test_fast_path_takes_memmap_chunks(monkeypatch, tmp_path):
    """The CLI streams np.memmap slices: they take the fast path too."""
    rng = np.random.default_rng(34)
    np.save(tmp_path / "z.npy", rng.standard_normal((3000, 5)).astype(np.float32))
    np.save(tmp_path / "y.npy", rng.integers(0, 5, 3000))
    z = np.load(tmp_path / "z.npy", mmap_mode="r")
    y = np.load(tmp_path / "y.npy", mmap_mode="r")
    calls = _count_full_launches(monkeypatch)
    got = stream(fx.Evaluator(), z, y, 500).result()
    assert len(calls) == 1
    assert_same(got, fx.evaluate(np.asarray(z), np.asarray(y)))


def test_fast_path_falls_back_on_batches_unlike_the_first(monkeypatch):
    """Batches of another dtype, layout, library or label dtype take the full launch; the
    result is the same as with no fast path at all."""
    import torch

    rng = np.random.default_rng(32)
    z = rng.standard_normal((600, 7)).astype(np.float32)
    y = rng.integers(0, 7, 600)
    batches = [
        (z[:100], y[:100]),
        (z[100:200], y[100:200].astype(np.int32)),        # another label dtype
        (z[200:300].astype(np.float64), y[200:300]),       # another logits dtype
        (np.asfortranarray(z[300:400]), y[300:400]),       # Fortran order
        (z[400:500:1, :][:, ::-1][:, ::-1], y[400:500]),   # a view (same values)
        (z[100:300:2], y[100:300:2]),                      # every other row: strided
        (torch.from_numpy(z[500:550]), torch.from_numpy(y[500:550])),  # torch CPU
        (z[550:600].reshape(5, 10, 7), y[550:600].reshape(5, 10)),     # leading axes
    ]

    def run():
        ev = fx.Evaluator(top_k=2)
        for a, b in batches:
            ev.update(a, b)
        return ev.result()

    with_fast = run()
    monkeypatch.setattr(E._FastPath, "of", classmethod(lambda cls, *a: None))
    assert_same(with_fast, run())


@pytest.mark.parametrize("name", ["multilabel", "binary"])
def test_fast_path_sigmoid_tasks(monkeypatch, name):
    """Binary and multilabel streams take the fast path after the first batch, equal the
    one-shot call, and fall back for batches of another form."""
    rng = np.random.default_rng(33)
    z, t, _, opts = DATASETS[name](rng, 5000)
    calls = []
    real = E._core.sigmoid_run
    monkeypatch.setattr(E._core, "sigmoid_run", lambda *a, **k: calls.append(1) or real(*a, **k))
    got = stream(fx.Evaluator(**opts), z, t, 700).result()
    assert len(calls) == 1
    assert_same(got, fx.evaluate(z, t, **opts))
    ev = fx.Evaluator(**opts)
    ev.update(z[:10], t[:10])
    ev.update(z[10:20], t[10:20].astype(np.float64))  # another target dtype: full path
    assert len(calls) == 3
    if name == "binary":
        ev.update(z[20:30].reshape(10, 1), t[20:30])  # (N, 1) logits, (N,) targets
        with pytest.raises(ValueError, match="targets shape"):
            ev.update(z[30:31], t[30:31].reshape(()))  # a 0-d target for a (1,) batch
        assert len(calls) == 5
        assert int(ev.result().count) == 30


def test_fast_path_bad_labels(monkeypatch):
    z = np.zeros((4, 3), np.float32)
    ev = fx.Evaluator()
    ev.update(z, np.array([0, 1, 2, 0]))
    with pytest.raises(IndexError, match=r"label 7 at row 2 .*stream row 4"):
        ev.update(z, np.array([0, 1, 7, 0]))
    ev.update(z, np.array([2, 2, 2, 2]))  # the evaluator still works after the error
    assert len(ev) == 8
    ev = fx.Evaluator(validate=False)
    ev.update(z, np.array([0, 1, 2, 0]))
    ev.update(z, np.array([0, 9, 2, 0]))  # not validated: the bad row is NaN, as one-shot
    assert np.isnan(float(ev.result().loss))
    with pytest.raises(TypeError, match="integer class ids"):
        ev.update(z, np.zeros(4, np.float32))  # float labels of the rows' shape


# ----------------------------------------------------------------------------- GPU


@pytest.mark.gpu
def test_gpu_state_stays_on_device():
    cupy = cupy_or_skip()
    rng = np.random.default_rng(12)
    z = cupy.asarray(rng.standard_normal((50_000, 33)).astype(np.float32))
    y = cupy.asarray(rng.integers(0, 33, 50_000))
    want = fx.evaluate(z, y, top_k=5, validate=False)
    ev = fx.Evaluator(top_k=5, validate=False)
    for i in range(0, 50_000, 4096):
        ev.update(z[i:i + 4096], y[i:i + 4096])
    assert isinstance(ev._counts, cupy.ndarray) and isinstance(ev._exact, cupy.ndarray)
    got = ev.result()
    assert isinstance(got.loss, cupy.ndarray)
    assert_same(got, want)
    host = fx.Evaluator.from_state_dict(json.loads(json.dumps(ev.state_dict())))
    assert float(host.result().loss) == float(want.loss)  # device -> JSON -> host
    # resuming on the GPU: the loaded host state moves to the device with the next batch
    resumed = fx.Evaluator.from_state_dict(ev.state_dict())
    resumed.update(z[:100], y[:100])
    assert isinstance(resumed._counts, cupy.ndarray)
    both = fx.evaluate(cupy.concatenate([z, z[:100]]), cupy.concatenate([y, y[:100]]), top_k=5)
    assert_same(resumed.result(), both)
