"""The README's Python examples run as written, and what their comments claim holds.

Each test takes its block from README.md by a marker line, so an edited example is what runs.
Where a block's arrays are large, the test scales a size literal down (named in the test);
everything else runs verbatim, in one namespace per section as a reader would paste it.
"""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import fastxent as fx

ROOT = pathlib.Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def block(marker: str) -> str:
    hits = [b for b in BLOCKS if marker in b]
    assert len(hits) == 1, f"README: {len(hits)} python blocks contain {marker!r}"
    return hits[0]


def scaled(src: str, old: str, new: str, times: int = 1) -> str:
    assert src.count(old) == times, f"README example: {old!r} not found {times} time(s)"
    return src.replace(old, new)


def run(src: str, ns: dict) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(src, "<README example>", "exec"), ns)  # noqa: S102 - our own README
    return out.getvalue()


def bits(m):
    """Every number of a Metrics as exact bits, for bitwise comparisons."""
    def b(v):
        return None if v is None else np.float64(v).tobytes()
    return (b(m.loss), b(m.accuracy), b(m.exact_match), int(m.count), m.task,
            {k: b(v) for k, v in m.top_k_accuracy.items()})


def test_quick_tour_and_trap_and_keras_blocks():
    pytest.importorskip("torch")
    ns: dict = {}
    run(block("m = fx.softmax_cross_entropy(logits, labels, top_k=(1, 5))"), ns)
    logits, labels = ns["logits"], ns["labels"]
    z = logits.astype(np.float64)
    lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    ref_loss = lse - z[np.arange(1000), labels]
    rank = (z > z[np.arange(1000), labels][:, None]).sum(1)
    m, m2 = ns["m"], ns["m2"]
    assert int(m.count) == 1000
    assert float(m.accuracy) == np.mean(rank == 0)
    assert float(m.top_k_accuracy[5]) == np.mean(rank < 5)
    assert float(m.loss) == pytest.approx(ref_loss.mean(), rel=1e-6)
    # "dense labels: same kernel, same numbers"
    assert float(m2.accuracy) == float(m.accuracy)
    assert float(m2.loss) == pytest.approx(float(m.loss), rel=1e-6)
    assert ns["m4"].task == "multiclass"  # "task="auto" -> multiclass"
    pr = ns["per_row"]
    assert pr.loss.shape == (1000,) and pr.loss.dtype == np.float32
    assert pr.correct.dtype == np.bool_
    np.testing.assert_allclose(pr.loss, ref_loss, rtol=1e-5)
    np.testing.assert_array_equal(pr.correct, rank == 0)
    import torch

    assert isinstance(ns["mt"].loss, torch.Tensor) and ns["mt"].loss.shape == torch.Size([])
    assert float(ns["mt"].loss) == float(m.loss)

    # the one-hot trap: element-wise accuracy high, the warning names the categorical one
    run(block('fx.evaluate(z, np.eye(10, dtype=np.float32)[y], task="binary")'), ns)
    zt, yt, w = ns["z"], ns["y"], ns["w"]
    cat = float(np.mean(zt.argmax(1) == yt))
    assert 0.45 < cat < 0.55                              # "right half the time"
    assert float(ns["m"].accuracy) > 0.85                 # "element-wise: high"
    assert len(w) == 1 and issubclass(w[0].category, fx.TaskMismatchWarning)
    assert f"{cat:.4f}" in str(w[0].message)              # "names the categorical accuracy"

    # Keras names, on the tour's arrays
    run(block("import fastxent.keras as fk"), ns)
    per_sample, hits = np.asarray(ns["per_sample"]), np.asarray(ns["hits"])
    np.testing.assert_allclose(per_sample, ref_loss, rtol=1e-5)
    np.testing.assert_array_equal(hits.astype(bool), rank < 5)


def _batches(seed, sizes):
    rng = np.random.default_rng(seed)
    for n_batches, rows, C in sizes:
        yield [(rng.standard_normal((rows, C), dtype=np.float32), rng.integers(0, C, rows))
               for _ in range(n_batches)]


def test_evaluator_block_equals_one_shot_and_merge():
    # scaled: 20 batches of 10,000 rows (README: 100,000), so the check fits in memory
    src = scaled(block("ev = fx.Evaluator(top_k=5)            # task"),
                 "rows=100_000", "rows=10_000")
    ns: dict = {}
    run(src, ns)
    first, shards = _batches(0, [(20, 10_000, 100), (4, 10_000, 100)])
    z, y = np.concatenate([b[0] for b in first]), np.concatenate([b[1] for b in first])
    assert len(ns["ev"]) == 200_000
    # "== fx.evaluate on all the rows, bit for bit"
    assert bits(ns["ev"].result()) == bits(fx.evaluate(z, y, top_k=5))
    z, y = np.concatenate([b[0] for b in shards]), np.concatenate([b[1] for b in shards])
    assert bits(ns["a"].result()) == bits(fx.evaluate(z, y, top_k=5))  # a absorbed b


def test_checkpoint_block_resumes_to_the_same_numbers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # scaled: 300,000 x 20 (README: 1,000,000 x 100): five 65,536-row chunks, so the block
    # writes its checkpoint after the fourth
    src = scaled(block('CKPT, STEP = "eval_state.json", 65_536'),
                 "N, C = 1_000_000, 100", "N, C = 300_000, 20")
    ns = {"np": np, "fx": fx, "os": os, "json": __import__("json"),
          "rng": np.random.default_rng(0)}
    run(src, ns)
    full = bits(ns["ev"].result())
    want = fx.evaluate(np.load("logits.npy"), np.load("labels.npy"), top_k=5)
    assert full == bits(want)  # "== fx.evaluate(logits, labels, top_k=5)"
    with open("eval_state.json") as f:
        assert __import__("json").load(f)["rows_seen"] == 4 * 65_536  # saved mid-way
    # a run that died after its checkpoint: the same block without the data generation
    resume = src[src.index("CKPT, STEP"):]
    ns2 = {"np": np, "fx": fx, "os": os, "json": __import__("json"), "N": ns["N"]}
    run(resume, ns2)
    assert len(ns2["ev"]) == 300_000
    assert bits(ns2["ev"].result()) == full


def test_dask_block_matches_in_memory(tmp_path):
    pytest.importorskip("dask.distributed")
    # scaled: 200,000 rows (README: 2,000,000); run as a script, as the README shows it
    src = scaled(block("fxd.evaluate(z, y, top_k=5)"), "2_000_000", "200_000", times=2)
    script = tmp_path / "dask_example.py"
    script.write_text(src)
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert len(lines) == 2, r.stdout
    assert lines[0] == lines[1]  # "same numbers" (as printed: Metrics' repr)
    assert "count=200000)" in lines[0]
