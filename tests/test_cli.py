"""The ``fastxent`` command line: files streamed = in memory; --json; --example; no bar piped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

import fastxent as fx
from fastxent import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def subprocess_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(77)
    n, C = 10_007, 12
    z = (rng.standard_normal((n, C)) * 2).astype(np.float32)
    y = rng.integers(0, C, n)
    y[::50] = -100
    np.save(d / "z.npy", z)
    np.save(d / "y.npy", y)
    onehot = np.eye(C, dtype=np.float32)[np.maximum(y, 0)]
    np.save(d / "onehot.npy", onehot)
    np.savez(d / "run.npz", logits=z, labels=y)
    return d, z, y, onehot


def test_npy_files_equal_in_memory(capsys, files):
    d, z, y, _ = files
    want = fx.evaluate(z, y, top_k=(1, 3), ignore_index=-100)
    for batch in ("1000", "4096", "100000"):
        rc, out, _ = run_cli(capsys, "evaluate", str(d / "z.npy"), str(d / "y.npy"),
                             "--top-k", "1", "3", "--ignore-index", "-100",
                             "--batch-rows", batch, "--json")
        assert rc == 0
        got = json.loads(out)
        assert got["task"] == "multiclass" and got["task_source"] == "detected"
        assert got["count"] == int(want.count)
        assert got["loss"] == float(want.loss)  # bitwise: JSON floats round-trip exactly
        assert got["accuracy"] == float(want.accuracy)
        assert got["top_k_accuracy"] == {"1": float(want.top_k_accuracy[1]),
                                         "3": float(want.top_k_accuracy[3])}
        assert got["warnings"] == []
        assert got["chunks"] == -(-z.shape[0] // int(batch))


def test_multilabel_file_whose_first_chunk_is_one_hot(capsys, files, tmp_path):
    """task auto on a file whose first chunk holds only one-hot rows and later chunks
    multi-hot ones: the stream first resolves multiclass, then the file is streamed again as
    multilabel, the task fx.evaluate decides on the whole data (it used to exit 1)."""
    d, z, _, onehot = files
    mh = onehot.copy()
    mh[6000:, :3] = 1.0  # multi-hot from row 6000 on
    np.save(tmp_path / "mh.npy", mh)
    want = fx.evaluate(z, mh)
    assert want.task == "multilabel"
    for batch in ("1000", "100000"):
        rc, out, _ = run_cli(capsys, "evaluate", str(d / "z.npy"), str(tmp_path / "mh.npy"),
                             "--batch-rows", batch, "--json")
        assert rc == 0
        got = json.loads(out)
        assert got["task"] == "multilabel" and got["task_source"] == "detected"
        assert got["loss"] == float(want.loss) and got["accuracy"] == float(want.accuracy)
        assert got["exact_match"] == float(want.exact_match)


def test_npz_members_and_text_output(capsys, files):
    d, z, y, _ = files
    want = fx.evaluate(z, y, ignore_index=-100)
    rc, out, _ = run_cli(capsys, "evaluate", f"{d / 'run.npz'}:logits", f"{d / 'run.npz'}:labels",
                         "--ignore-index", "-100")
    assert rc == 0
    assert "task           multiclass (detected)" in out
    assert f"{float(want.loss):.6f}" in out and f"{float(want.accuracy):.6f}" in out
    rc, out, _ = run_cli(capsys, "evaluate", str(d / "run.npz"), "--ignore-index", "-100",
                         "--json")  # one .npz holding both arrays
    assert rc == 0 and json.loads(out)["loss"] == float(want.loss)


def test_mismatch_warning_in_json_and_text(capsys, files):
    d, z, _, onehot = files
    with pytest.warns(fx.TaskMismatchWarning) as w:
        want = fx.evaluate(z, onehot, task="binary")
    rc, out, _ = run_cli(capsys, "evaluate", str(d / "z.npy"), str(d / "onehot.npy"),
                         "--task", "binary", "--batch-rows", "3000", "--json")
    got = json.loads(out)
    assert rc == 0 and got["task_source"] == "asked"
    assert got["loss"] == float(want.loss) and got["accuracy"] == float(want.accuracy)
    assert got["warnings"] == [str(w[0].message)]
    rc, out, _ = run_cli(capsys, "evaluate", str(d / "z.npy"), str(d / "onehot.npy"),
                         "--task", "binary")
    assert "warning: TaskMismatchWarning: task='binary' but every label row is exactly one-hot" \
        in out


def test_from_probs(capsys, files):
    d, z, _, onehot = files
    p = np.exp(z - z.max(1, keepdims=True))
    p = (p / p.sum(1, keepdims=True)).astype(np.float32)
    np.save(d / "p.npy", p)
    want = fx.evaluate(p, onehot, from_logits=False)
    rc, out, _ = run_cli(capsys, "evaluate", str(d / "p.npy"), str(d / "onehot.npy"),
                         "--from-probs", "--batch-rows", "777", "--json")
    assert rc == 0 and json.loads(out)["loss"] == float(want.loss)


def test_example(capsys):
    rc, out, _ = run_cli(capsys, "evaluate", "--example")
    assert rc == 0
    assert "handwritten digits" in out
    assert "warning: TaskMismatchWarning" in out and "one-hot" in out
    rc, out, _ = run_cli(capsys, "evaluate", "--example", "--json")
    got = json.loads(out)
    cat = got["multiclass"]["accuracy"]
    elem = got["binary_on_onehot"]["accuracy"]
    assert 0.4 < cat < 0.75 < elem  # a mediocre model that binary accuracy flatters
    assert got["multiclass"]["warnings"] == []
    assert "trap" in got["binary_on_onehot"]["warnings"][0]
    with np.load(cli.EXAMPLE_FILE) as f:  # the shipped data: real predictions, small
        assert f["logits"].dtype == np.float32 and f["labels"].dtype == np.int64
        assert f["logits"].shape == (f["labels"].shape[0], 10)
    assert os.path.getsize(cli.EXAMPLE_FILE) < 300_000


def test_errors(capsys, files, tmp_path):
    d, *_ = files
    rc, _, err = run_cli(capsys, "evaluate", str(tmp_path / "missing.npy"), str(d / "y.npy"))
    assert rc == 1 and "does not exist" in err
    rc, _, err = run_cli(capsys, "evaluate", f"{d / 'run.npz'}:nope", str(d / "y.npy"))
    assert rc == 1 and "no array 'nope'" in err
    np.save(tmp_path / "short.npy", np.zeros(5, np.int64))
    rc, _, err = run_cli(capsys, "evaluate", str(d / "z.npy"), str(tmp_path / "short.npy"))
    assert rc == 1 and "does not match" in err
    rc, _, err = run_cli(capsys, "evaluate", str(d / "z.npy"), str(d / "y.npy"))
    assert rc == 1 and "IndexError" in err and "-100" in err  # needs --ignore-index
    rc, _, err = run_cli(capsys, "evaluate", "--example", str(d / "z.npy"))
    assert rc == 1
    with pytest.raises(SystemExit) as exc:
        cli.main(["evaluate", "--task", "regression"])
    assert exc.value.code == 2


def test_bench_dispatch(capsys, monkeypatch):
    seen = []
    fake = types.ModuleType("fastxent.bench")
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "fastxent.bench", fake)
    monkeypatch.setattr(fx, "bench", fake, raising=False)
    assert cli.main(["bench", "--quick", "-h"]) == 0
    assert seen == [["--quick", "-h"]]


def test_piped_has_no_progress_bar(files):
    d, z, y, _ = files
    proc = subprocess.run(
        [sys.executable, "-m", "fastxent", "evaluate", str(d / "z.npy"), str(d / "y.npy"),
         "--ignore-index", "-100", "--batch-rows", "500"],
        capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no bar, no noise
    assert "rows counted   9,806" in proc.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs a pty")
def test_progress_bar_on_a_terminal(files):
    pytest.importorskip("tqdm")
    import pty

    d, *_ = files
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastxent", "evaluate", str(d / "z.npy"), str(d / "y.npy"),
         "--ignore-index", "-100", "--batch-rows", "500"],
        stdout=subprocess.PIPE, stderr=slave, env=subprocess_env())
    os.close(slave)
    chunks = []
    try:
        while True:  # read while it runs: a pty buffer is small
            try:
                b = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not b:
                break
            chunks.append(b)
    finally:
        os.close(master)
        proc.stdout.read()
        proc.wait(timeout=120)
        proc.stdout.close()
    err = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0
    assert "rows/s" in err and "10.0k" in err  # tqdm: rate and total in rows
