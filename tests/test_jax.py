"""JAX CPU arrays: read in place by the CPU engine, results back in JAX where JAX can hold
them exactly (README "Results": without ``jax_enable_x64`` the reduced float64 values and
int64 counts come back as NumPy 0-d arrays; a JAX float32 loss would round the value and an
int32 count would wrap past 2**31)."""

from __future__ import annotations

import numpy as np
import pytest

import fastxent as fx

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")


def _x64() -> bool:
    return jax.dtypes.canonicalize_dtype(np.float64) == np.float64


def test_jax_in_same_numbers_as_numpy(rng):
    z = rng.standard_normal((300, 7), dtype=np.float32)
    y = rng.integers(0, 7, 300)
    want = fx.softmax_cross_entropy(z, y, top_k=2)
    got = fx.softmax_cross_entropy(jnp.asarray(z), jnp.asarray(y), top_k=2)
    for name in ("loss", "accuracy", "count"):
        a, b = np.asarray(getattr(got, name)), np.asarray(getattr(want, name))
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), name
    assert float(got.top_k_accuracy[2]) == float(want.top_k_accuracy[2])
    rows = fx.softmax_cross_entropy(jnp.asarray(z), jnp.asarray(y), reduction="none")
    assert isinstance(rows.loss, jax.Array) and isinstance(rows.correct, jax.Array)
    np.testing.assert_array_equal(np.asarray(rows.correct),
                                  fx.softmax_cross_entropy(z, y, reduction="none").correct)
    if not _x64():  # reduced values that JAX cannot hold stay NumPy, exact
        assert isinstance(got.loss, np.ndarray) and got.count.dtype == np.int64


def test_jax_count_past_two_to_the_31(rng):
    """A count of 3e9 rows (a resumed long evaluation) is exact, not wrapped to int32."""
    z = rng.standard_normal((10, 3), dtype=np.float32)
    y = rng.integers(0, 3, 10)
    ev = fx.Evaluator()
    ev.update(jnp.asarray(z), jnp.asarray(y))
    d = ev.state_dict()
    big = 3_000_000_000
    d["rows_seen"] = d["state"]["counts"][0] = d["state"]["counts"][1] = big
    e = fx.Evaluator.from_state_dict(d)
    e.update(jnp.asarray(z[:0]), jnp.asarray(y[:0]))
    assert int(e.result().count) == big
