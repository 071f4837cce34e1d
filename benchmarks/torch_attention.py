"""PyTorch peers for benchmarks/attention.py: SDPA (causal) and FlexAttention (block mask).

Runs in its own process (never imports JAX), on the shapes of the JAX benchmark:
``q, k, v [1, 4, T, 64]``. Launched by ``benchmarks/attention.py``; by hand::

    .venv/bin/python benchmarks/torch_attention.py --lengths 1024 2048 --layouts causal window_global --dtypes bfloat16

- ``sdpa``: ``scaled_dot_product_attention(is_causal=True)``, forward and forward+backward.
- ``flex``: ``torch.compile(flex_attention)`` with ``create_block_mask`` (block 128) of the
  same token mask as our layout, forward only (FlexAttention has no CPU backward).

Every configuration runs in each of ``--dtypes`` (PyTorch's speed in bf16 differs by CPU:
slow without AVX-512 BF16, fast with AMX), and the output records PyTorch's own matmul
peak in each dtype, so the peers are compared at their best. ``--child-memory`` runs one
configuration once and prints its peak RSS (one process per configuration, so peaks do
not mix).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

HEADS, HEAD_DIM, BLOCK = 4, 64, 128


def rss_mb(field: str = "VmHWM") -> float:
    """Peak (``VmHWM``) or current (``VmRSS``) RSS of this process image in MB, from /proc.

    (``ru_maxrss`` would not do: after fork + exec it starts from the parent's peak.)
    """
    with open("/proc/self/status") as f:
        return next(float(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def mask_mod_for(layout: str, length: int, maps: dict):
    """A FlexAttention ``mask_mod`` equal to the JAX layout's token mask."""
    if layout == "causal":
        return lambda b, h, q, k: k <= q
    if layout == "window_global":  # causal & (q - k < 384 | k < 128)
        return lambda b, h, q, k: (k <= q) & ((q - k < 384) | (k < 128))
    # Block-map layouts whose only partial tiles are the causal diagonal.
    kept = torch.from_numpy(maps[f"{layout}_{length}"])
    return lambda b, h, q, k: kept[q // BLOCK, k // BLOCK] & (k <= q)


def make_runner(impl: str, mode: str, layout: str, length: int, dtype, maps: dict):
    """Returns ``(run, setup_seconds)``: ``run()`` does one timed step."""
    gen = torch.Generator().manual_seed(0)
    shape = (1, HEADS, length, HEAD_DIM)
    q, k, v, cot = (torch.randn(shape, generator=gen).to(dtype) for _ in range(4))
    if impl == "sdpa":
        if mode == "fwd":
            def run():
                with torch.no_grad():
                    return F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return run, 0.0
        q, k, v = (x.requires_grad_() for x in (q, k, v))

        def run():
            for x in (q, k, v):
                x.grad = None
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            out.backward(cot)
            return q.grad
        return run, 0.0
    if impl == "flex":
        if mode != "fwd":
            raise ValueError("FlexAttention has no CPU backward")
        t0 = time.perf_counter()
        block_mask = create_block_mask(mask_mod_for(layout, length, maps), None, None, length, length,
                                       device="cpu", BLOCK_SIZE=BLOCK)
        compiled = torch.compile(flex_attention)

        def run():
            with torch.no_grad():
                return compiled(q, k, v, block_mask=block_mask)
        return run, time.perf_counter() - t0
    raise ValueError(f"unknown impl {impl!r}")


def matmul_peak_gflops(dtype, sizes=(1024, 2048), repeats: int = 5) -> float:
    """The best GFLOP/s of a square ``n x n`` product in ``dtype`` over ``sizes`` (best of ``repeats``)."""
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n).to(dtype)
        torch.mm(a, a)
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(a, a)
            best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def time_config(impl, mode, layout, length, dtype, maps, repeats: int) -> dict:
    run, setup = make_runner(impl, mode, layout, length, dtype, maps)
    t0 = time.perf_counter()
    run()  # compiles (flex) / warms up
    first = time.perf_counter() - t0
    run()
    times = []
    budget = time.perf_counter() + 60.0
    for i in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
        if i >= 2 and time.perf_counter() > budget:
            break
    median = statistics.median(times)
    return {"impl": impl, "mode": mode, "layout": layout, "length": length, "dtype": str(dtype).removeprefix("torch."),
            "median_s": median, "min_s": min(times),
            "runs": len(times), "compile_s": max(first - median, 0.0) + setup}


def main(argv=None) -> None:
    from memgpt_jax.hostmem import tune_host_allocator

    tune_host_allocator()  # the memgpt-jax entry point's setting, before the first computation starts threads
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    p.add_argument("--layouts", nargs="+", default=["causal", "window_global", "bigbird", "strided"])
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    p.add_argument("--maps", default=None, help="npz of kept-block maps for block-map layouts")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--child-memory", nargs=4, metavar=("IMPL", "MODE", "LAYOUT", "LENGTH"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtypes = [getattr(torch, d) for d in args.dtypes]
    maps = dict(np.load(args.maps)) if args.maps else {}
    if args.child_memory:
        impl, mode, layout, length = args.child_memory
        base = rss_mb("VmRSS")
        run, _ = make_runner(impl, mode, layout, int(length), dtypes[0], maps)
        run()
        print(json.dumps({"peak_rss_mb": rss_mb(), "baseline_rss_mb": base}))
        return
    results = []
    for length in args.lengths:
        configs = [("sdpa", "fwd", "causal"), ("sdpa", "fwdbwd", "causal")]
        configs += [("flex", "fwd", lay) for lay in args.layouts]
        for impl, mode, layout in configs:
            for dtype in dtypes:
                rec = time_config(impl, mode, layout, length, dtype, maps, args.repeats)
                print(f"torch {impl:5s} {mode:6s} {layout:14s} {rec['dtype']:8s} T={length:6d} "
                      f"{rec['median_s']:.4f}s", file=sys.stderr, flush=True)
                results.append(rec)
    peaks = {str(d).removeprefix("torch."): round(matmul_peak_gflops(d), 1) for d in dtypes}
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "matmul_peak_gflops": peaks,
                      "results": results}))


if __name__ == "__main__":
    main()
