"""fastxent.keras against real Keras 3 (torch backend): same inputs, same numbers.

Losses: float32 within rtol 2e-5 (float64 within 1e-12); accuracies exactly. Plus the values
quoted in Keras's own docstrings.
"""

from __future__ import annotations

import os
import zlib

os.environ.setdefault("KERAS_BACKEND", "torch")  # Keras's NumPy backend imports JAX

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch", reason="torch is not installed (pip install fastxent[test])")
keras = pytest.importorskip("keras", reason="keras 3 is not installed (pip install fastxent[test])")
if keras.backend.backend() != "torch":  # pragma: no cover - KERAS_BACKEND set elsewhere
    pytest.skip(f"these tests compare with Keras on its torch backend; KERAS_BACKEND="
                f"{keras.backend.backend()!r}", allow_module_level=True)
if not hasattr(keras.losses, "categorical_crossentropy"):  # pragma: no cover
    pytest.skip("keras is not Keras 3", allow_module_level=True)

import fastxent.keras as fk  # noqa: E402


def _seed(params):
    return zlib.crc32(repr(params).encode())


RTOL = {np.float32: 2e-5, np.float64: 1e-12}


def _np(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _close(ours, theirs, dtype, ref64=None):
    """Agreement within rtol. ``ref64`` (the library's own float64 result on the same inputs):
    where float32 results differ by more than rtol, fastxent must be at least as close to the
    library's float64 value as the library's float32 value is (the core computes confident
    rows' log-sum-exp with log1p, so it can be the more accurate of the two), and within rtol
    of it."""
    ours, theirs = np.asarray(ours), _np(theirs)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    assert ours.dtype == theirs.dtype, (ours.dtype, theirs.dtype)
    rtol = RTOL[dtype]
    if ref64 is None:
        np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=0)
        return
    o, t, r = (np.asarray(a, np.float64) for a in (ours, theirs, _np(ref64)))
    with np.errstate(invalid="ignore"):
        off = ~((np.abs(o - t) <= rtol * np.abs(t)) | (np.isnan(o) & np.isnan(t)))
    if off.any():
        np.testing.assert_array_less(np.abs(o - r)[off], np.abs(t - r)[off] * (1 + 1e-9) + 1e-300)
        np.testing.assert_allclose(o[off], r[off], rtol=rtol, atol=0)


def _same(ours, theirs):
    ours, theirs = np.asarray(ours), _np(theirs)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    assert ours.dtype == theirs.dtype == np.float32
    np.testing.assert_array_equal(ours, theirs)


def _probs(rng, shape, dtype, axis=-1):
    """Unnormalised probabilities (rows do not sum to 1), some exactly 0 and some ~1."""
    p = rng.uniform(0.02, 1.0, size=shape) * rng.uniform(0.3, 3.0, size=shape[:-1] + (1,))
    p[rng.random(shape) < 0.05] = 0.0
    return p.astype(dtype)


def _dense_labels(rng, shape, dtype, kind):
    C = shape[-1]
    if kind == "onehot":
        return np.eye(C, dtype=dtype)[rng.integers(0, C, size=shape[:-1])]
    # soft labels that need not sum to 1
    return rng.uniform(0, 1, size=shape).astype(dtype)


SHAPES = [(16, 5), (7,), (4, 3, 6), (9, 1000), (0, 4)]


# ----------------------------------------------------------------------------- losses


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("ls", [0.0, 0.2])
@pytest.mark.parametrize("kind", ["onehot", "soft"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_categorical_crossentropy(shape, from_logits, ls, kind, dtype):
    rng = np.random.default_rng(_seed((shape, from_logits, ls, kind)))
    yp = (rng.normal(0, 2, size=shape) if from_logits else _probs(rng, shape, np.float64))
    yp = yp.astype(dtype)
    yt = _dense_labels(rng, shape, dtype, kind)
    ours = fk.categorical_crossentropy(yt, yp, from_logits=from_logits, label_smoothing=ls)
    kw = dict(from_logits=from_logits, label_smoothing=ls)
    theirs = keras.losses.categorical_crossentropy(yt, yp, **kw)
    ref64 = keras.losses.categorical_crossentropy(yt.astype(np.float64), yp.astype(np.float64),
                                                  **kw)
    _close(ours, theirs, dtype, ref64)


@pytest.mark.parametrize("axis", [0, 1, -2])
@pytest.mark.parametrize("ls", [0.0, 0.1])
def test_categorical_crossentropy_axis(axis, ls):
    rng = np.random.default_rng(3)
    shape = (5, 4, 6)
    yp = _probs(rng, shape, np.float32)
    yt = _dense_labels(rng, shape, np.float32, "soft")
    ours = fk.categorical_crossentropy(yt, yp, axis=axis, label_smoothing=ls)
    theirs = keras.losses.categorical_crossentropy(yt, yp, axis=axis, label_smoothing=ls)
    _close(ours, theirs, np.float32)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("ignore_class", [None, -1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sparse_categorical_crossentropy(shape, from_logits, ignore_class, dtype):
    rng = np.random.default_rng(_seed((shape, from_logits, ignore_class)))
    yp = (rng.normal(0, 2, size=shape) if from_logits else _probs(rng, shape, np.float64))
    yp = yp.astype(dtype)
    C = shape[-1]
    yt = rng.integers(0, C, size=shape[:-1])
    if ignore_class is not None and yt.size:
        yt[rng.random(yt.shape) < 0.3] = ignore_class
    ours = fk.sparse_categorical_crossentropy(yt, yp, from_logits=from_logits,
                                              ignore_class=ignore_class)
    kw = dict(from_logits=from_logits, ignore_class=ignore_class)
    theirs = keras.losses.sparse_categorical_crossentropy(yt, yp, **kw)
    ref64 = keras.losses.sparse_categorical_crossentropy(yt, yp.astype(np.float64), **kw)
    _close(ours, theirs, dtype, ref64)


def test_sparse_categorical_crossentropy_variants():
    rng = np.random.default_rng(4)
    yp = _probs(rng, (6, 3, 5), np.float32)
    # class axis 1, labels (6, 5)
    yt = rng.integers(0, 3, size=(6, 5))
    _close(fk.sparse_categorical_crossentropy(yt, yp, axis=1),
           keras.losses.sparse_categorical_crossentropy(yt, yp, axis=1), np.float32)
    # (N, 1) labels are squeezed; float labels are truncated like torch's .long()
    yp2 = rng.normal(size=(8, 4)).astype(np.float32)
    yt2 = rng.integers(0, 4, size=(8, 1)).astype(np.float32)
    _close(fk.sparse_categorical_crossentropy(yt2, yp2, from_logits=True),
           keras.losses.sparse_categorical_crossentropy(yt2, yp2, from_logits=True), np.float32)
    with pytest.raises(IndexError):
        fk.sparse_categorical_crossentropy(np.array([0, 4]), yp2[:2])


@pytest.mark.parametrize("shape", [(16, 5), (7,), (4, 3, 6), (9, 1000), (12, 1), (0, 3)])
@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("ls", [0.0, 0.3])
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_binary_crossentropy(shape, from_logits, ls, soft, dtype):
    rng = np.random.default_rng(_seed((shape, from_logits, ls, soft)))
    if from_logits:
        # |z| <= 4: torch's (1 - t) z - log_sigmoid(z) cancels to ~ulp(|z|) absolute, which is
        # beyond 2e-5 relative of softplus(z) for z < -4.5 (torch's float32 error, not ours)
        yp = np.clip(rng.normal(0, 2, size=shape), -4, 4)
    else:
        yp = rng.uniform(0.0, 1.0, size=shape)
        yp[rng.random(shape) < 0.05] = 0.0
        yp[rng.random(shape) < 0.05] = 1.0
    yp = yp.astype(dtype)
    yt = (rng.uniform(0, 1, size=shape) if soft else rng.integers(0, 2, size=shape)).astype(dtype)
    ours = fk.binary_crossentropy(yt, yp, from_logits=from_logits, label_smoothing=ls)
    theirs = keras.losses.binary_crossentropy(yt, yp, from_logits=from_logits,
                                              label_smoothing=ls)
    # Keras averages float64 in float32 (keras.ops.mean: dtypes.result_type(float64,
    # "float32") is float32): its float64 result is only float32-accurate; fastxent keeps
    # float64, so float64 is held to the float32 tolerance here
    _close(ours, theirs, np.float32 if dtype == np.float64 else dtype)


def test_binary_crossentropy_small_probabilities():
    yp = np.array([[1e-4], [3e-4], [1e-3], [2e-3]], dtype=np.float32)
    yt = np.zeros_like(yp)
    _close(fk.binary_crossentropy(yt, yp), keras.losses.binary_crossentropy(yt, yp),
           np.float32)


@pytest.mark.parametrize("axis", [0, -2])
def test_binary_crossentropy_axis(axis):
    rng = np.random.default_rng(5)
    yp = rng.uniform(0.05, 0.95, size=(4, 5, 3)).astype(np.float32)
    yt = rng.integers(0, 2, size=(4, 5, 3)).astype(np.float32)
    _close(fk.binary_crossentropy(yt, yp, axis=axis),
           keras.losses.binary_crossentropy(yt, yp, axis=axis), np.float32)


def test_torch_in_torch_out():
    rng = np.random.default_rng(6)
    yp = torch.tensor(rng.normal(size=(5, 4)).astype(np.float32))
    yt = torch.tensor(rng.integers(0, 4, size=5))
    ours = fk.sparse_categorical_crossentropy(yt, yp, from_logits=True)
    assert isinstance(ours, torch.Tensor) and ours.dtype == torch.float32
    theirs = keras.losses.sparse_categorical_crossentropy(yt, yp, from_logits=True)
    torch.testing.assert_close(ours, theirs, rtol=2e-5, atol=0)
    acc = fk.sparse_categorical_accuracy(yt, yp)
    assert isinstance(acc, torch.Tensor) and acc.dtype == torch.float32
    assert torch.equal(acc, keras.metrics.sparse_categorical_accuracy(yt, yp))


def test_categorical_one_column_warns_like_keras():
    yt, yp = np.ones((3, 1), np.float32), np.full((3, 1), 0.5, np.float32)
    with pytest.warns(SyntaxWarning, match="num_classes > 1"):
        ours = fk.categorical_crossentropy(yt, yp)
    with pytest.warns(SyntaxWarning, match="num_classes > 1"):
        theirs = keras.losses.categorical_crossentropy(yt, yp)
    _close(ours, theirs, np.float32)  # -log(1 - 1e-7): the clipped renormalised probability


# ----------------------------------------------------------------------------- accuracies


def _scores_with_ties(rng, shape, dtype):
    """Coarse scores: many exact ties, also at the top-k boundary."""
    return rng.integers(0, 4, size=shape).astype(dtype)


@pytest.mark.parametrize("shape", [(32, 5), (4, 3, 7), (1, 1), (0, 3)])  # Keras needs rank >= 2
@pytest.mark.parametrize("ties", [False, True])
def test_categorical_accuracies(shape, ties):
    rng = np.random.default_rng(_seed((shape, ties)))
    yp = (_scores_with_ties(rng, shape, np.float32) if ties
          else rng.normal(size=shape).astype(np.float32))
    C = shape[-1]
    ids = rng.integers(0, C, size=shape[:-1])
    onehot = np.eye(C, dtype=np.float32)[ids]
    soft = _scores_with_ties(rng, shape, np.float32)  # argmax of y_true with ties
    for yt in (onehot, soft):
        _same(fk.categorical_accuracy(yt, yp), keras.metrics.categorical_accuracy(yt, yp))
        for k in sorted({1, min(2, C), min(3, C), C}):
            _same(fk.top_k_categorical_accuracy(yt, yp, k=k),
                  keras.metrics.top_k_categorical_accuracy(yt, yp, k=k))
    _same(fk.sparse_categorical_accuracy(ids, yp),
          keras.metrics.sparse_categorical_accuracy(ids, yp))
    for k in sorted({1, min(2, C), min(3, C), C}):
        _same(fk.sparse_top_k_categorical_accuracy(ids, yp, k=k),
              keras.metrics.sparse_top_k_categorical_accuracy(ids, yp, k=k))


def test_accuracies_label_shapes_and_values():
    rng = np.random.default_rng(7)
    yp = _scores_with_ties(rng, (10, 4), np.float32)
    ids = rng.integers(0, 4, size=(10, 1))
    for yt in (ids, ids.astype(np.float32), ids.astype(np.float64) + 0.5):
        _same(fk.sparse_categorical_accuracy(yt, yp),
              keras.metrics.sparse_categorical_accuracy(yt, yp))
    for yt in (ids, ids.astype(np.float32)):
        _same(fk.sparse_top_k_categorical_accuracy(yt, yp, k=2),
              keras.metrics.sparse_top_k_categorical_accuracy(yt, yp, k=2))
    # out-of-range ids are never right
    bad = np.array([4, 7, 0, 1, 2, 3, 0, 0, 0, 0])
    _same(fk.sparse_categorical_accuracy(bad, yp),
          keras.metrics.sparse_categorical_accuracy(bad, yp))
    # default k=5 with more classes; float64 predictions
    yp64 = rng.normal(size=(20, 9))
    ids9 = rng.integers(0, 9, size=20)
    _same(fk.sparse_top_k_categorical_accuracy(ids9, yp64),
          keras.metrics.sparse_top_k_categorical_accuracy(ids9, yp64))
    # from_sorted_ids
    sorted_ids = np.argsort(-yp64, axis=1)[:, :6]
    _same(fk.sparse_top_k_categorical_accuracy(ids9, sorted_ids, k=3, from_sorted_ids=True),
          keras.metrics.sparse_top_k_categorical_accuracy(ids9, sorted_ids, k=3,
                                                          from_sorted_ids=True))


def test_accuracies_nan_and_inf_scores():
    yp = np.array([[1.0, np.nan, 3.0, 2.0],
                   [np.nan, 0.0, np.nan, 1.0],
                   [np.inf, 1.0, np.inf, 0.0],
                   [-np.inf, -np.inf, -np.inf, -np.inf],
                   [np.nan, np.nan, np.nan, np.nan]], dtype=np.float32)
    for ids in (np.array([1, 0, 2, 0, 3]), np.array([2, 2, 0, 3, 0]), np.array([3, 3, 1, 1, 1])):
        _same(fk.sparse_categorical_accuracy(ids, yp),
              keras.metrics.sparse_categorical_accuracy(ids, yp))
        onehot = np.eye(4, dtype=np.float32)[ids]
        _same(fk.categorical_accuracy(onehot, yp), keras.metrics.categorical_accuracy(onehot, yp))
        for k in (1, 2, 3):
            _same(fk.sparse_top_k_categorical_accuracy(ids, yp, k=k),
                  keras.metrics.sparse_top_k_categorical_accuracy(ids, yp, k=k))
            _same(fk.top_k_categorical_accuracy(onehot, yp, k=k),
                  keras.metrics.top_k_categorical_accuracy(onehot, yp, k=k))


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.0, 1.0])
def test_binary_accuracy(threshold):
    rng = np.random.default_rng(8)
    yp = rng.choice([0.0, 0.3, 0.5, 0.7, 1.0, 0.2, 0.9], size=(12, 3)).astype(np.float32)
    cases = [
        (rng.integers(0, 2, size=(12, 3)).astype(np.float32), yp),       # same shape
        (rng.choice([0.0, 0.7, 1.0], size=(12, 3)).astype(np.float32), yp),  # soft targets
        (rng.integers(0, 2, size=(12, 3)), yp.astype(np.float64)),        # int targets
        (rng.integers(0, 2, size=12).astype(np.float32), yp[:, :1]),      # (N,) vs (N, 1)
        (rng.integers(0, 2, size=(12, 1)).astype(np.float32), yp[:, 0]),  # (N, 1) vs (N,)
        (rng.integers(0, 2, size=(4, 3)).astype(bool), yp[:4]),           # bool targets
    ]
    for yt, p in cases:
        _same(fk.binary_accuracy(yt, p, threshold=threshold),
              keras.metrics.binary_accuracy(yt, p, threshold=threshold))


# ----------------------------------------------------------------------------- Keras's own numbers


def test_keras_docstring_values():
    yt = [[0, 1, 0], [0, 0, 1]]
    yp = [[0.05, 0.95, 0], [0.1, 0.8, 0.1]]
    # keras.losses.categorical_crossentropy docstring: array([0.0513, 2.303])
    cce = fk.categorical_crossentropy(yt, yp)
    np.testing.assert_allclose(cce, [0.0513, 2.303], atol=5e-4)
    assert cce.dtype == np.float32
    # CategoricalCrossentropy / SparseCategoricalCrossentropy docstrings: 1.177
    assert round(float(np.mean(cce)), 3) == 1.177
    assert round(float(np.mean(fk.sparse_categorical_crossentropy([1, 2], yp))), 3) == 1.177
    # CategoricalCrossentropy docstring: sample_weight=[0.3, 0.7] -> 0.814
    assert round(float(np.mean(cce * np.array([0.3, 0.7], np.float32))), 3) == 0.814
    # keras.losses.binary_crossentropy docstring: array([0.916, 0.714])
    np.testing.assert_allclose(fk.binary_crossentropy([[0, 1], [0, 0]], [[0.6, 0.4], [0.4, 0.6]]),
                               [0.916, 0.714], atol=5e-4)
    # BinaryCrossentropy(from_logits=True) docstring: 0.8654, none -> [0.235, 1.496]
    z = np.array([[-18.6, 0.51], [2.94, -12.8]])
    bce = fk.binary_crossentropy(np.array([[0, 1], [0, 0]]), z, from_logits=True)
    np.testing.assert_allclose(bce, [0.235, 1.496], atol=5e-4)
    # (the docstring truncates 0.86546 to 0.8654)
    assert abs(float(np.mean(bce)) - 0.8654) < 1e-4
    assert abs(float(fk.binary_crossentropy(np.array([0, 1, 0, 0]),
                                            np.array([-18.6, 0.51, 2.94, -12.8]),
                                            from_logits=True)) - 0.8654) < 1e-4
    # accuracy docstrings
    np.testing.assert_array_equal(
        fk.binary_accuracy([[1], [1], [0], [0]], [[0.98], [1], [0], [0.6]]), [[1], [1], [1], [0]])
    np.testing.assert_array_equal(
        fk.categorical_accuracy([[0, 0, 1], [0, 1, 0]], [[0.1, 0.9, 0.8], [0.05, 0.95, 0]]),
        [0, 1])
    np.testing.assert_array_equal(
        fk.sparse_categorical_accuracy([[2], [1]], [[0.1, 0.6, 0.3], [0.05, 0.95, 0]]), [0, 1])
    np.testing.assert_array_equal(
        fk.top_k_categorical_accuracy([[0, 0, 1], [0, 1, 0]], [[0.1, 0.9, 0.8],
                                                              [0.05, 0.95, 0]], k=1), [0, 1])
    # keras.ops.in_top_k docstring: [True, False, True] (the tie 0.9/0.9 at k=3 is a hit;
    # id 5 of 5 classes is out of range)
    np.testing.assert_array_equal(
        fk.sparse_top_k_categorical_accuracy(
            [2, 5, 3], [[0.1, 0.4, 0.6, 0.9, 0.5], [0.1, 0.7, 0.9, 0.8, 0.3],
                        [0.1, 0.6, 0.9, 0.9, 0.5]], k=3), [1, 0, 1])


def test_bad_arguments():
    yp = np.full((2, 3), 1 / 3, np.float32)
    with pytest.raises(ValueError, match="same shape"):
        fk.categorical_crossentropy(np.zeros((2, 4), np.float32), yp)
    with pytest.raises(ValueError, match="axis"):
        fk.categorical_crossentropy(yp, yp, axis=True)
    with pytest.raises(ValueError):
        fk.top_k_categorical_accuracy(yp, yp, k=4)
    with pytest.raises(ValueError):
        fk.binary_crossentropy(np.full((2, 3), 2.0, np.float32), yp)
