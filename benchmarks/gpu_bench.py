"""GPU benchmark: fastxent beside its peers on the workloads of shared/BENCHMARKS.md.

Run on the lent GPU machine:  ``PYTHONPATH=. python benchmarks/gpu_bench.py [--quick]
[--only A_4Mx10,S_256x1000] [--reps 50]``. Prints one table: median time per call (CUDA
events around each call, after warm-up so NVRTC / torch.compile time is excluded), GB/s over
the bytes every method must read once (predictions + labels), that as % of a read ceiling
measured in the same run (a CuPy sum over the same bytes), the ratio of the best peer to
fastxent, and peak extra GPU memory (CuPy pool bytes for CuPy methods, torch's peak
allocator stats for torch methods). Loss + accuracy together, as a user runs them.

Peers: torch eager (``F.cross_entropy`` + ``(argmax == y).float().mean()``), torch.compile of
the same function, Liger-Kernel when importable, naive CuPy (max, exp, sum, log,
take_along_axis, argmax). Peers that do not apply to a workload (e.g. top-5) are left blank.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from dataclasses import dataclass

try:
    import cupy
except ImportError:  # pragma: no cover
    sys.exit("gpu_bench: CuPy is not installed (pip install fastxent[cuda12])")

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover
    torch = None


@dataclass
class Workload:
    name: str
    n: int
    C: int
    dtype: str           # "float32" | "bfloat16"
    kind: str            # "sparse" | "onehot" | "bce"
    topk: tuple = ()
    validate: bool = True


WORKLOADS = [
    Workload("A_4Mx10", 4_194_304, 10, "float32", "sparse"),
    Workload("B_256kx1000", 262_144, 1000, "float32", "sparse"),
    Workload("B_256kx1000", 262_144, 1000, "bfloat16", "sparse"),
    Workload("B_256kx1000_top5", 262_144, 1000, "float32", "sparse", topk=(1, 5)),
    Workload("C_16kx128k", 16_384, 131_072, "bfloat16", "sparse"),
    Workload("C_16kx128k", 16_384, 131_072, "float32", "sparse"),
    Workload("D_dense", 262_144, 1000, "float32", "onehot"),
    Workload("E_bce", 1_048_576, 100, "float32", "bce"),
    Workload("S_256x1000", 256, 1000, "float32", "sparse", validate=False),
]


def time_ms(fn, reps: int, warmup: int = 3) -> float:
    """Median of `reps` CUDA-event-timed calls on the current stream."""
    for _ in range(warmup):
        fn()
    cupy.cuda.get_current_stream().synchronize()
    if torch is not None and torch.cuda.is_available():
        torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, end))
    return statistics.median(times)


def make_inputs(w: Workload, seed: int = 0):
    rng = cupy.random.default_rng(seed)
    z32 = rng.standard_normal((w.n, w.C), dtype=cupy.float32) * 3
    if w.kind == "bce":
        t = (rng.random((w.n, w.C), dtype=cupy.float32) < 0.3).astype(cupy.float32)
        return z32, t
    y = rng.integers(0, w.C, w.n, dtype=cupy.int64)
    if w.dtype == "bfloat16":
        if torch is None:
            raise RuntimeError("bf16 inputs are built with torch")
        z = torch.from_dlpack(z32).to(torch.bfloat16)
        del z32
    else:
        z = z32
    if w.kind == "onehot":
        t = cupy.zeros((w.n, w.C), dtype=cupy.float32)
        t[cupy.arange(w.n), y] = 1
        return z, t
    return z, y


def nbytes(*arrays) -> int:
    return sum(int(a.nbytes) if hasattr(a, "nbytes") else a.numel() * a.element_size()
               for a in arrays)


def read_ceiling_ms(total_bytes: int, reps: int) -> float:
    x = cupy.ones(total_bytes // 4, dtype=cupy.float32)
    return time_ms(x.sum, reps)


def peak_extra_cupy(fn) -> int:
    pool = cupy.get_default_memory_pool()
    cupy.cuda.get_current_stream().synchronize()
    pool.free_all_blocks()
    before = pool.total_bytes()
    fn()
    cupy.cuda.get_current_stream().synchronize()
    return pool.total_bytes() - before


def peak_extra_torch(fn) -> int:
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


# ----------------------------------------------------------------------------------- methods


def fastxent_fn(w: Workload, z, lab):
    import fastxent as fx

    if w.kind == "bce":
        return lambda: fx.sigmoid_cross_entropy(z, lab, validate=w.validate)
    top = w.topk or None
    return lambda: fx.softmax_cross_entropy(z, lab, top_k=top, validate=w.validate)


def torch_fn(w: Workload, z, lab):
    zt = z if torch.is_tensor(z) else torch.from_dlpack(z)
    lt = torch.from_dlpack(lab)
    if w.kind == "bce":
        def f(a, t):
            loss = F.binary_cross_entropy_with_logits(a, t)
            acc = ((a > 0) == (t > 0.5)).float().mean()
            return loss, acc
    elif w.kind == "onehot":
        def f(a, t):
            return F.cross_entropy(a, t), (a.argmax(1) == t.argmax(1)).float().mean()
    elif w.topk:
        def f(a, y):
            top = a.topk(max(w.topk), dim=1).indices
            hits = [(top[:, :k] == y[:, None]).any(1).float().mean() for k in w.topk]
            return F.cross_entropy(a, y), hits
    else:
        def f(a, y):
            return F.cross_entropy(a, y), (a.argmax(1) == y).float().mean()
    return f, zt, lt


def liger_fn(w: Workload, z, lab):
    if w.kind != "sparse" or w.topk:
        return None
    try:
        from liger_kernel.transformers.functional import liger_cross_entropy
    except ImportError:
        return None
    zt = z if torch.is_tensor(z) else torch.from_dlpack(z)
    lt = torch.from_dlpack(lab)

    def f():
        try:
            return liger_cross_entropy(zt, lt, return_token_accuracy=True)
        except TypeError:   # older Liger: loss only
            return liger_cross_entropy(zt, lt)
    return f


def naive_cupy_fn(w: Workload, z, lab):
    if torch.is_tensor(z) if torch is not None else False:
        return None          # CuPy bf16 arithmetic is not a fair peer
    if w.kind == "bce":
        def f():
            loss = (cupy.maximum(z, 0) - z * lab + cupy.log1p(cupy.exp(-cupy.abs(z)))).mean()
            return loss, ((z > 0) == (lab > 0.5)).mean()
        return f
    if w.topk:
        return None

    def f():
        m = z.max(1, keepdims=True)
        lse = cupy.log(cupy.exp(z - m).sum(1)) + m[:, 0]
        if w.kind == "onehot":
            loss = (lse - (z * lab).sum(1)).mean()
            acc = (z.argmax(1) == lab.argmax(1)).mean()
        else:
            loss = (lse - cupy.take_along_axis(z, lab[:, None], 1)[:, 0]).mean()
            acc = (z.argmax(1) == lab).mean()
        return loss, acc
    return f


# ----------------------------------------------------------------------------------- main


def run(w: Workload, reps: int) -> dict:
    z, lab = make_inputs(w)
    total = nbytes(z, lab)
    row = {"workload": f"{w.name} {w.dtype}", "bytes": total}
    ceiling = read_ceiling_ms(total, reps)
    row["ceiling_ms"] = ceiling
    methods = {}
    fx_fn = fastxent_fn(w, z, lab)
    methods["fastxent"] = (fx_fn, peak_extra_cupy)
    if torch is not None and torch.cuda.is_available():
        f, zt, lt = torch_fn(w, z, lab)
        methods["torch eager"] = (lambda: f(zt, lt), peak_extra_torch)
        try:
            fc = torch.compile(f)
            fc(zt, lt)
            methods["torch.compile"] = (lambda: fc(zt, lt), peak_extra_torch)
        except Exception as exc:  # noqa: BLE001
            print(f"  torch.compile unavailable for {w.name}: {exc}", file=sys.stderr)
        lf = liger_fn(w, z, lab)
        if lf is not None:
            methods["Liger"] = (lf, peak_extra_torch)
    nf = naive_cupy_fn(w, z, lab)
    if nf is not None:
        methods["naive CuPy"] = (nf, peak_extra_cupy)
    for name, (fn, peak) in methods.items():
        try:
            ms = time_ms(fn, reps)
            row[name] = ms
            row[name + " mem"] = peak(fn)
        except Exception as exc:  # noqa: BLE001
            print(f"  {name} failed on {w.name}: {exc}", file=sys.stderr)
    del z, lab
    cupy.get_default_memory_pool().free_all_blocks()
    if torch is not None:
        torch.cuda.empty_cache()
    return row


def fmt_table(rows: list[dict]) -> str:
    peers = ["torch eager", "torch.compile", "Liger", "naive CuPy"]
    head = (f"{'workload':28s} {'fastxent':>10s} {'GB/s':>7s} {'%ceil':>6s} "
            + " ".join(f"{p:>13s}" for p in peers) + f" {'best/fx':>8s} {'fx mem':>10s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        fx = r.get("fastxent", math.nan)
        gbs = r["bytes"] / (fx * 1e-3) / 1e9 if fx == fx else math.nan
        ceil_gbs = r["bytes"] / (r["ceiling_ms"] * 1e-3) / 1e9
        best = min((r[p] for p in peers if p in r), default=math.nan)
        cells = " ".join(f"{r[p]:13.4f}" if p in r else f"{'-':>13s}" for p in peers)
        mem = r.get("fastxent mem", 0)
        lines.append(f"{r['workload']:28s} {fx:10.4f} {gbs:7.0f} {100 * gbs / ceil_gbs:5.0f}% "
                     f"{cells} {best / fx:8.2f} {mem / 2**20:8.2f}MB")
    lines.append("times: median ms per call (CUDA events); "
                 "%ceil: of a CuPy sum over the same bytes")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--only", default="", help="comma-separated workload names")
    ap.add_argument("--quick", action="store_true", help="skip the C_16kx128k workloads")
    args = ap.parse_args(argv)
    dev = cupy.cuda.Device()
    print(f"device: {cupy.cuda.runtime.getDeviceProperties(dev.id)['name'].decode()}  "
          f"cupy {cupy.__version__}" + (f"  torch {torch.__version__}" if torch else ""))
    only = {s for s in args.only.split(",") if s}
    rows = []
    for w in WORKLOADS:
        if only and w.name not in only:
            continue
        if args.quick and w.name.startswith("C_"):
            continue
        print(f"running {w.name} {w.dtype} ...", file=sys.stderr)
        rows.append(run(w, args.reps))
    print(fmt_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
