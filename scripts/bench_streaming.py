"""Streaming overhead, Dask on 2 local workers, and CLI peak memory on a big .npy file.

1. ``fx.Evaluator`` fed 64k-row chunks vs one ``fx.evaluate`` call on the same arrays
   (target: within 10 %), for a few shapes; best of ``--repeat`` runs each.
2. ``fastxent.dask.evaluate`` on a ``LocalCluster(n_workers=2, processes=True,
   threads_per_worker=1)`` (data persisted on the workers first) vs the single-process call
   (which uses both cores through its own threads).
3. ``fastxent evaluate BIG.npy LABELS.npy --batch-rows R`` in a subprocess: peak RSS
   (``ru_maxrss`` of the child) for a file several times the chunk budget, next to the same
   command on a tiny file (the interpreter + NumPy + Numba baseline).

Run:  PYTHONPATH=. python scripts/bench_streaming.py [--quick] [--big-mb 2048] [--tmp /tmp]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import fastxent as fx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def best(f, repeat):
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return min(ts)


def bench_streaming(repeat, quick):
    shapes = [(4_000_000, 10), (1_000_000, 100), (250_000, 1000)]
    if quick:
        shapes = [(1_000_000, 10), (250_000, 100)]
    rng = np.random.default_rng(0)
    print("1) Evaluator over 64k-row chunks vs one-shot fx.evaluate (float32 logits, int64 "
          f"labels, best of {repeat})")
    print("   ratio: best stream / best one-shot; paired: the median of stream / one-shot over "
          "the interleaved pairs (less swayed by one lucky sample on a drifting machine)")
    print(f"   {'shape':>18} {'MB':>6} {'one-shot ms':>12} {'stream ms':>10} {'ratio':>6} "
          f"{'paired':>7}")
    for n, C in shapes:
        z = rng.standard_normal((n, C), dtype=np.float32)
        y = rng.integers(0, C, n)
        t1, t2, paired = _stream_vs_one_shot(z, y, repeat)
        print(f"   {f'{n:,} x {C}':>18} {z.nbytes / 1e6:6.0f} {t1 * 1e3:12.1f} "
              f"{t2 * 1e3:10.1f} {t2 / t1:6.2f} {paired:7.2f}")


def _stream_vs_one_shot(z, y, repeat, chunk=65536):
    n = z.shape[0]
    fx.evaluate(z[:70000], y[:70000])

    def stream():
        ev = fx.Evaluator()
        for i in range(0, n, chunk):
            ev.update(z[i:i + chunk], y[i:i + chunk])
        return ev.result()

    assert float(stream().loss) == float(fx.evaluate(z, y).loss)
    t1 = t2 = float("inf")
    pairs = []
    for _ in range(repeat):  # interleaved, so that both see the same machine load
        a = best(lambda: fx.evaluate(z, y), 1)
        b = best(stream, 1)
        t1, t2 = min(t1, a), min(t2, b)
        pairs.append(b / a)
    return t1, t2, float(np.median(pairs))


def bench_dask(repeat, quick):
    import dask.array as da
    from dask.distributed import Client, LocalCluster, wait

    import fastxent.dask as fxd

    n, C = (2_000_000, 100) if not quick else (500_000, 100)
    chunk = 131_072
    print(f"\n2) Dask: {n:,} x {C} float32 ({n * C * 4 / 1e6:.0f} MB), row chunks of {chunk:,}")
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        rng = da.random.default_rng(1)  # generated on the workers, kept there
        dz = rng.standard_normal((n, C), chunks=(chunk, -1), dtype=np.float32).persist()
        dy = rng.integers(0, C, n, chunks=chunk).persist()
        wait([dz, dy])
        z, y = dz.compute(), dy.compute()  # the same data in this process
        fx.evaluate(z[:100], y[:100])
        t_single = best(lambda: fx.evaluate(z, y), repeat)
        want = fx.evaluate(z, y)
        got = fxd.evaluate(dz, dy)  # warm-up (JIT cache load on the workers)
        assert float(got.loss) == float(want.loss) and int(got.count) == n
        t_cluster = float("inf")
        for _ in range(repeat):
            # the scheduler keeps a finished result for a moment after the client lets it
            # go, and the same graph asked again at once is answered from it (11 ms against
            # ~200 ms): let it forget first
            time.sleep(1.0)
            t_cluster = min(t_cluster, best(lambda: fxd.evaluate(dz, dy), 1))
        nworkers = len(client.scheduler_info()["workers"])
    gb = z.nbytes / 1e9
    print(f"   single process fx.evaluate (2 Numba threads): {t_single * 1e3:8.1f} ms "
          f"{gb / t_single:6.2f} GB/s")
    print(f"   dask LocalCluster, {nworkers} worker processes x 1 thread: "
          f"{t_cluster * 1e3:8.1f} ms {gb / t_cluster:6.2f} GB/s  "
          f"({t_single / t_cluster:.2f}x the single process)")


def _child_rss(cmd, env):
    """Peak RSS (MB) of one child process run to completion."""
    code = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
            "stdout=subprocess.DEVNULL); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code, *cmd], env=env, check=True,
                         capture_output=True, text=True)
    return int(out.stdout.strip()) / 1024  # Linux: KiB


def bench_cli_rss(big_mb, tmpdir):
    C = 1000
    rows = int(big_mb * 1e6 / (C * 4))
    batch = 16_384  # 16,384 x 1000 x 4 B = 64 MB chunks
    d = tempfile.mkdtemp(dir=tmpdir, prefix="fastxent-bench-")
    zp, yp = os.path.join(d, "big_logits.npy"), os.path.join(d, "big_labels.npy")
    sp, syp = os.path.join(d, "small_logits.npy"), os.path.join(d, "small_labels.npy")
    rng = np.random.default_rng(2)
    mm = np.lib.format.open_memmap(zp, mode="w+", dtype=np.float32, shape=(rows, C))
    for i in range(0, rows, batch):
        mm[i:i + batch] = rng.standard_normal((min(batch, rows - i), C), dtype=np.float32)
    mm.flush()
    del mm
    np.save(yp, rng.integers(0, C, rows))
    np.save(sp, np.zeros((10, C), np.float32))
    np.save(syp, np.zeros(10, np.int64))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    base = [sys.executable, "-m", "fastxent", "evaluate"]
    _child_rss(base + [sp, syp], env)  # warm the JIT cache
    rss_small = _child_rss(base + [sp, syp, "--batch-rows", str(batch)], env)
    t = time.perf_counter()
    rss_big = _child_rss(base + [zp, yp, "--batch-rows", str(batch)], env)
    secs = time.perf_counter() - t
    chunk_mb = batch * C * 4 / 1e6
    file_mb = (os.path.getsize(zp) + os.path.getsize(yp)) / 1e6
    print(f"\n3) CLI peak RSS: fastxent evaluate on {rows:,} x {C} float32 "
          f"({file_mb:,.0f} MB of files), --batch-rows {batch:,} ({chunk_mb:.0f} MB chunks)")
    print(f"   baseline (10-row file):  peak RSS {rss_small:7.0f} MB")
    print(f"   big file:                peak RSS {rss_big:7.0f} MB  (+{rss_big - rss_small:.0f} MB "
          f"over the baseline = {(rss_big - rss_small) / chunk_mb:.2f} chunks; the file is "
          f"{file_mb / chunk_mb:.0f} chunks); {secs:.1f} s incl. start-up")
    for p in (zp, yp, sp, syp):
        os.remove(p)
    os.rmdir(d)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--big-mb", type=float, default=2048)
    ap.add_argument("--tmp", default=tempfile.gettempdir())
    ap.add_argument("--skip", nargs="*", default=(), choices=("stream", "dask", "rss"))
    args = ap.parse_args(argv)
    import numba

    print(f"fastxent {fx.__version__}, numpy {np.__version__}, numba {numba.__version__}, "
          f"{os.cpu_count()} CPUs, numba threads {numba.get_num_threads()}")
    if "stream" not in args.skip:
        bench_streaming(args.repeat, args.quick)
    if "dask" not in args.skip:
        bench_dask(args.repeat, args.quick)
    if "rss" not in args.skip:
        bench_cli_rss(args.big_mb if not args.quick else 512, args.tmp)


if __name__ == "__main__":
    main()
