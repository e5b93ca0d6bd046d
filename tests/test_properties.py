"""Hypothesis property tests: random shapes (N from 0, C from 1 to 300k with N <= 2), dtypes,
label kinds, options and special values (ties, -inf columns, NaN rows, +inf, huge magnitudes,
+1e6 offsets), each checked against the float64 reference.

Array contents come from a NumPy generator seeded by Hypothesis (drawing 300k floats one by one
would be far too slow); Hypothesis chooses the shape, dtype, options and which special values
are planted where. The profile (max_examples=60, deadline=None, derandomised) is in conftest.
"""

from __future__ import annotations

import numpy as np
from checks import (
    BF16,
    FLOAT_DTYPES,
    SPARSE_LABEL_DTYPES,
    cast,
    check_sigmoid,
    check_softmax,
    dyadic_weights,
    one_hot,
)
from hypothesis import event, given
from hypothesis import strategies as st
from tolerances import assert_loss_close

import fastxent as fx

F16 = np.dtype(np.float16)


@st.composite
def sizes(draw, max_small_c=40):
    kind = draw(st.sampled_from(["small", "small", "small", "medium", "large"]))
    if kind == "small":
        return draw(st.integers(0, 24)), draw(st.integers(1, max_small_c))
    if kind == "medium":
        return draw(st.integers(0, 4)), draw(st.integers(max_small_c + 1, 2000))
    return draw(st.integers(0, 2)), draw(st.integers(2001, 300_000))


def _values(rng, N, C, dtype, mode):
    big = 6e4 if np.dtype(dtype) == F16 else 1e30
    offset = 3e4 if np.dtype(dtype) == F16 else 1e6
    if mode == "normal":
        z = rng.standard_normal((N, C)) * 3
    elif mode == "huge":
        z = np.clip(rng.standard_normal((N, C)), -1, 1) * big
    elif mode == "offset":
        z = offset + rng.standard_normal((N, C)) * 2
    elif mode == "ties":
        z = rng.integers(-2, 3, size=(N, C)).astype(np.float64)
    else:  # peaked
        z = rng.standard_normal((N, C))
        z[np.arange(N), rng.integers(0, C, N)] += 40
    return z


def _plant(rng, z, specials, protect=None):
    """Plant special values; ``protect`` (per-row column) keeps the target logit finite."""
    N, C = z.shape
    if N == 0:
        return z
    for s in specials:
        i = int(rng.integers(0, N))
        if s == "nan_row":
            z[i, int(rng.integers(0, C))] = np.nan
        elif s == "neg_inf_col":
            c = int(rng.integers(0, C))
            z[:, c] = -np.inf
            if protect is not None and C > 1:
                rows = protect == c
                z[rows, c] = 0.0
        elif s == "neg_inf_target" and protect is not None:
            z[i, int(protect[i])] = -np.inf
        elif s == "pos_inf":
            z[i, int(rng.integers(0, C))] = np.inf
        elif s == "signed_zeros" and C > 1:  # the row max is a -0.0 and a +0.0, a tie
            j, k = rng.choice(C, 2, replace=False)
            z[i] = -np.abs(z[i]) - 1.0
            z[i, int(j)], z[i, int(k)] = -0.0, 0.0
        elif s == "tie_max":
            j, k = rng.integers(0, C, 2)
            z[i, int(j)] = z[i, int(k)] = np.nanmax(np.where(np.isinf(z[i]), np.nan, z[i]),
                                                    initial=0.0)
    # a row of nothing but -inf has no defined argmax: give it one finite logit
    dead = np.all(z == -np.inf, axis=1)
    if dead.any():
        cols = protect[dead] if protect is not None else 0
        z[np.flatnonzero(dead), cols] = 0.0
    return z


SOFTMAX_SPECIALS = st.lists(
    st.sampled_from(["nan_row", "neg_inf_col", "neg_inf_target", "pos_inf", "tie_max",
                     "signed_zeros"]),
    max_size=3)


@given(
    size=sizes(),
    dtype=st.sampled_from(FLOAT_DTYPES),
    seed=st.integers(0, 2**32 - 1),
    mode=st.sampled_from(["normal", "normal", "huge", "offset", "ties", "peaked"]),
    label_kind=st.sampled_from(["sparse", "sparse", "onehot", "soft"]),
    label_dtype=st.sampled_from(SPARSE_LABEL_DTYPES),
    from_logits=st.booleans(),
    ls=st.sampled_from([0.0, 0.0, 0.1, 1.0]),
    use_cw=st.booleans(),
    use_sw=st.booleans(),
    ignore=st.sampled_from([None, None, -100, 0]),
    top_k=st.one_of(st.none(), st.integers(1, 5), st.lists(st.integers(1, 6), min_size=1,
                                                             max_size=3)),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    specials=SOFTMAX_SPECIALS,
)
def test_softmax_matches_reference(lib, size, dtype, seed, mode, label_kind, label_dtype,
                                   from_logits, ls, use_cw, use_sw, ignore, top_k, reduction,
                                   specials):
    if not lib.supports(dtype):
        return
    N, C = size
    event(f"C {'> 2000' if C > 2000 else '<= 2000'}, N {'= 0' if N == 0 else '> 0'}")
    rng = np.random.default_rng(seed)
    # sparse labels must fit the label dtype
    info = np.iinfo(label_dtype)
    C_eff = min(C, int(info.max)) if label_kind == "sparse" else C
    y = rng.integers(0, C_eff, N)
    if from_logits:
        z = _values(rng, N, C, dtype, mode)
    else:
        e = np.exp(rng.standard_normal((N, C)))
        z = e / e.sum(1, keepdims=True)
        if N:
            z[0, 0] = rng.choice([0.0, 1.0])
    z = _plant(rng, z, specials if from_logits else [s for s in specials if s == "nan_row"],
               protect=y)
    z = cast(z, dtype)
    kw = dict(from_logits=from_logits, label_smoothing=ls, reduction=reduction)
    if top_k is not None:
        top_k = (min(top_k, C) if isinstance(top_k, int)
                 else sorted({min(k, C) for k in top_k}))
        kw["top_k"] = top_k
    if use_cw:
        kw["class_weight"] = rng.random(C) * 2 + 0.05
    if use_sw:
        kw["sample_weight"] = dyadic_weights(rng, (N,))
    if label_kind == "sparse":
        labels = y.astype(label_dtype)
        if ignore is not None and (ignore >= 0 or info.min < 0):
            labels[rng.random(N) < 0.25] = ignore
            kw["ignore_index"] = ignore
    elif label_kind == "onehot":
        labels = one_hot(y, C, np.float32)
    else:
        q = rng.random((N, C)) ** 4
        q[np.arange(N), y] += 1.0
        labels = (q / q.sum(1, keepdims=True)).astype(np.float32)
    check_softmax(lib, z, labels, **kw)


@given(
    size=sizes(),
    dtype=st.sampled_from(FLOAT_DTYPES),
    seed=st.integers(0, 2**32 - 1),
    specials=SOFTMAX_SPECIALS,
    mode=st.sampled_from(["normal", "huge", "offset", "ties", "peaked"]),
    ls=st.sampled_from([0.0, 0.2]),
)
def test_softmax_dense_one_hot_equals_sparse_bitwise(lib, size, dtype, seed, specials, mode,
                                                      ls):
    if not lib.supports(dtype):
        return
    N, C = size
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, N)
    z = cast(_plant(rng, _values(rng, N, C, dtype, mode), specials, protect=y), dtype)
    a = fx.softmax_cross_entropy(lib.to_lib(z), lib.to_lib(y), reduction="none",
                                 label_smoothing=ls)
    b = fx.softmax_cross_entropy(lib.to_lib(z), lib.to_lib(one_hot(y, C)), reduction="none",
                                 label_smoothing=ls)
    # README: one-hot == sparse up to float rounding (the kernels group the sums differently);
    # a class whose target is exactly 0 contributes 0, so NaN/inf appear in both or neither
    assert_loss_close(lib.to_numpy(a.loss), lib.to_numpy(b.loss), dtype)
    np.testing.assert_array_equal(lib.to_numpy(a.correct), lib.to_numpy(b.correct))


@given(
    size=sizes(),
    dtype=st.sampled_from(FLOAT_DTYPES),
    seed=st.integers(0, 2**32 - 1),
    use_sw=st.booleans(),
)
def test_softmax_row_order_does_not_change_bits(lib, size, dtype, seed, use_sw):
    """Exact sums: permuting the rows gives bitwise the same reduced numbers."""
    if not lib.supports(dtype):
        return
    N, C = size
    rng = np.random.default_rng(seed)
    z = cast(rng.standard_normal((N, C)) * 4, dtype)
    y = rng.integers(0, C, N)
    sw = dyadic_weights(rng, (N,), lo=1) if use_sw else None
    perm = rng.permutation(N)
    kw = dict(top_k=1)
    a = fx.softmax_cross_entropy(lib.to_lib(z), lib.to_lib(y), **kw,
                                 sample_weight=None if sw is None else lib.to_lib(sw))
    b = fx.softmax_cross_entropy(lib.to_lib(np.ascontiguousarray(z[perm])),
                                 lib.to_lib(np.ascontiguousarray(y[perm])), **kw,
                                 sample_weight=None if sw is None else lib.to_lib(sw[perm]))
    for name in ("loss", "accuracy", "count"):
        va, vb = lib.to_numpy(getattr(a, name)), lib.to_numpy(getattr(b, name))
        assert va.tobytes() == vb.tobytes(), (name, va, vb)


@given(
    size=sizes(max_small_c=40),
    binary=st.booleans(),
    dtype=st.sampled_from(FLOAT_DTYPES),
    seed=st.integers(0, 2**32 - 1),
    mode=st.sampled_from(["normal", "normal", "huge", "offset", "ties"]),
    target_kind=st.sampled_from(["binary", "soft", "bool"]),
    from_logits=st.booleans(),
    threshold=st.sampled_from([0.5, 0.5, 0.2, 0.9, 0.0, 1.0]),
    use_pw=st.booleans(),
    ls=st.sampled_from([0.0, 0.0, 0.1]),
    use_sw=st.booleans(),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    nan_elems=st.integers(0, 2),
)
def test_sigmoid_matches_reference(lib, size, binary, dtype, seed, mode, target_kind,
                                   from_logits, threshold, use_pw, ls, use_sw, reduction,
                                   nan_elems):
    if not lib.supports(dtype):
        return
    N, C = size
    if binary:
        C = 1
    rng = np.random.default_rng(seed)
    if from_logits:
        z = _values(rng, N, C, dtype, mode if mode != "ties" else "normal")
        if mode == "ties":
            z = np.round(z)
    else:
        z = rng.random((N, C))
        if N:
            z[0, 0] = rng.choice([0.0, 1.0, threshold])
    for _ in range(nan_elems if N else 0):
        z[int(rng.integers(0, N)), int(rng.integers(0, C))] = np.nan
    if target_kind == "soft":
        # float32 targets: the engine computes in float32, so rounding float64 targets would
        # be an input error, not an arithmetic one
        t = rng.random((N, C)).astype(np.float32)
    else:
        t = rng.random((N, C)) < 0.4
        t = t if target_kind == "bool" else t.astype(np.float32)
    if binary and rng.random() < 0.5:
        z, t = z[:, 0], t[:, 0]
    z = cast(z, dtype)
    t = np.ascontiguousarray(t)
    kw = dict(from_logits=from_logits, threshold=threshold, label_smoothing=ls,
              reduction=reduction)
    if use_pw:
        kw["pos_weight"] = rng.random(C) * 3
    if use_sw:
        kw["sample_weight"] = dyadic_weights(rng, (N,))
    check_sigmoid(lib, z, t, **kw)


@given(
    size=sizes(),
    seed=st.integers(0, 2**32 - 1),
    layout=st.sampled_from(["rows2", "cols", "fortran", "fortran_rows"]),
    dtype=st.sampled_from([np.dtype(np.float32), np.dtype(np.float64), BF16]),
)
def test_layouts_match_contiguous_bitwise(lib, size, seed, layout, dtype):
    if not lib.supports(dtype):
        return
    N, C = size
    rng = np.random.default_rng(seed)
    base = cast(rng.standard_normal((2 * N + 1, C + 3)) * 3, dtype)
    if layout == "rows2":
        v = base[::2, :C]
    elif layout == "cols":
        v = base[:N, 1:C + 1]
    elif layout == "fortran":
        v = np.asfortranarray(base[:N, :C])
    else:
        v = np.asfortranarray(base)[1::2, 2:C + 2]
    y = rng.integers(0, C, v.shape[0])
    a = fx.softmax_cross_entropy(lib.to_lib(v), lib.to_lib(y), reduction="none")
    b = fx.softmax_cross_entropy(lib.to_lib(np.ascontiguousarray(v)), lib.to_lib(y),
                                 reduction="none")
    np.testing.assert_array_equal(lib.to_numpy(a.loss), lib.to_numpy(b.loss))
    t = (rng.random(v.shape) < 0.3).astype(np.float32)
    a = fx.sigmoid_cross_entropy(lib.to_lib(v), lib.to_lib(t), reduction="none")
    b = fx.sigmoid_cross_entropy(lib.to_lib(np.ascontiguousarray(v)), lib.to_lib(t),
                                 reduction="none")
    np.testing.assert_array_equal(lib.to_numpy(a.loss), lib.to_numpy(b.loss))
