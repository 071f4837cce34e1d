"""Block-sparse attention benchmark: ours vs dense masked XLA, jax.nn causal, PyTorch SDPA and FlexAttention.

Run from the repository root (about an hour on the 2-core CPU; results under
benchmarks/results/<name>.{json,md,png} and a section of benchmarks/RESULTS.md)::

    python -m benchmarks.attention                          # f32 and bf16, 1k..16k, every layout
    python -m benchmarks.attention --lengths 8192 16384 --layouts window_global --no-memory --name attention_wg
    python -m benchmarks.attention --quick --out /tmp/att   # 1k and 2k, few repeats, no memory

Shapes: batch 1, 4 heads, head_dim 64, block 128. Layouts: ``causal`` (dense causal
blocks), ``window_global`` = causal & (q - k < 384 | k < 128) via ``from_mask_fn``,
causal ``bigbird`` (window 3, 1 global, 2 random blocks) and causal ``strided``
(stride ~ sqrt(blocks)). Implementations, timed side by side per length: ours
``xla`` (and ``pallas`` on GPU/TPU), dense masked XLA (``jax.nn.dot_product_attention``
with the materialised mask; its cost does not depend on the mask, so it is measured
once per length),
``jax.nn.dot_product_attention(is_causal=True)``; then, in a separate process on
the same shapes, PyTorch SDPA (causal, fwd and fwd+bwd) and FlexAttention (same
block mask, forward only). Ours and the PyTorch peers alternate for ``--rounds``
rounds per length (the machine is shared and its load drifts); each figure is the
median over rounds of the per-round median after warm-up (``block_until_ready``).
Compile time separately; peak memory with every configuration in its own process.

Peers at their best: everything runs in each of ``--dtypes`` (float32 and bfloat16 by
default; a CPU's bf16 speed depends on its matrix units), and the report compares our
best dtype against each peer's best, with the same-dtype ratios beside. The JSON records
the CPU model and its matrix features, and the matmul peak in each dtype measured in this
run by JAX and by PyTorch. The ``gemm`` rows are the ceiling of each layout: the same
kept-block FLOPs as one large square product (``jnp.dot``, bf16 with f32 accumulation as
in the kernel), timed in the same rounds, so ours / ceiling measures the kernel's own
overhead whatever the peer's speed on this CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.attention_report import BLOCK, HEAD_DIM, HEADLINE_LAYOUT, HEADS, kept_gflop, machine_info, write_reports
from benchmarks.common import RESULTS_DIR
from memgpt_jax.attention import block_sparse_attention, layout as L

LAYOUTS = ("causal", "window_global", "bigbird", "strided")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def strided_stride(length: int) -> int:
    return max(2, round(math.sqrt(length // BLOCK)))


def build_layout(name: str, length: int) -> L.BlockLayout:
    if name == "causal":
        return L.causal(length, block=BLOCK)
    if name == "window_global":
        return L.from_mask_fn(lambda q, k: (k <= q) & ((q - k < 384) | (k < 128)), length, block=BLOCK)
    if name == "bigbird":
        return L.bigbird(length, block=BLOCK, window=3, n_global=1, n_random=2, seed=0, causal=True)
    if name == "strided":
        return L.strided(length, block=BLOCK, stride=strided_stride(length), causal=True)
    raise ValueError(name)


def kept_block_map(layout: L.BlockLayout) -> np.ndarray:
    """The kept-tile map, checked to reproduce the layout when and-ed with causal (for FlexAttention)."""
    kept = layout.codes[0] != L.EMPTY
    rebuilt = L.from_block_map(kept, block=BLOCK) & L.causal(layout.q_len, block=BLOCK)
    assert rebuilt == layout, "layout has partial tiles off the diagonal"
    return kept


def make_fn(impl: str, layout: L.BlockLayout | None):
    """``fn(q, k, v, *extra)``; ``extra`` is the dense mask for ``dense``."""
    if impl in ("xla", "pallas"):
        return lambda q, k, v: block_sparse_attention(q, k, v, layout, impl=impl)
    if impl == "dense":  # dense masked XLA: the full score matrix, then the mask
        return lambda q, k, v, mask: jax.nn.dot_product_attention(q, k, v, mask=mask[None, None])
    if impl == "jax_causal":
        return lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True)
    raise ValueError(impl)


def gemm_size(flops: float) -> int:
    """The side ``n`` (a multiple of 64) of the square product closest to ``flops`` (``2 n^3``)."""
    return max(64, 64 * round((flops / 2) ** (1 / 3) / 64))


def make_step(impl: str, mode: str, layout, length: int, dtype):
    """Returns ``(jitted step, args)`` for one configuration (``gemm``: the layout's one-product ceiling)."""
    if impl == "gemm":
        n = gemm_size(kept_gflop(dict(mode=mode, kept_blocks=layout.n_kept_blocks)) * 1e9)
        a = jnp.ones((n, n), dtype)
        return jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32)), (a, a)
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    q, k, v, cot = (jax.random.normal(kk, (1, length, HEADS, HEAD_DIM), jnp.float32).astype(dtype) for kk in keys)
    fn = make_fn(impl, layout)
    extra = (jnp.asarray(layout.to_dense_mask()),) if impl == "dense" else ()
    if mode == "fwd":
        return jax.jit(fn), (q, k, v, *extra)

    def fwd_bwd(q, k, v, cot, *extra):
        out, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, *extra), q, k, v)
        return vjp(cot)

    return jax.jit(fwd_bwd), (q, k, v, cot, *extra)


def time_step(step, args, repeats: int, budget_s: float = 60.0) -> dict:
    t0 = time.perf_counter()
    compiled = step.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(*args))  # warm-up
    times, deadline = [], time.perf_counter() + budget_s
    for i in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
        if i >= 2 and time.perf_counter() > deadline:
            break
    return {"median_s": statistics.median(times), "min_s": min(times), "runs": len(times), "compile_s": compile_s}


def dense_bytes(length: int, mode: str) -> float:
    """Rough peak of attention that materialises the scores (dense masked XLA, jax.nn on CPU):
    ~3 (fwd) / ~6.5 (fwd+bwd) float32 ``[heads, T, T]`` arrays."""
    return (3.0 if mode == "fwd" else 6.5) * HEADS * length * length * 4


def available_bytes() -> float:
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: float(line.split()[1]) * 1024 for line in f}
    return info.get("MemAvailable", info["MemTotal"])


def proc_status_mb(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` (peak RSS of this process image) from ``/proc/self/status``, in MB.

    (``ru_maxrss`` would not do: after fork + exec it starts from the parent's peak.)
    """
    with open("/proc/self/status") as f:
        return next(float(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def child_memory(impl, mode, layout_name, length, dtype) -> dict:
    """Run in a fresh process: compile + run one configuration once, report peak RSS."""
    base = proc_status_mb("VmRSS")
    layout = build_layout(layout_name, length)
    step, args = make_step(impl, mode, layout, length, dtype)
    jax.block_until_ready(step(*args))
    return {"peak_rss_mb": proc_status_mb("VmHWM"), "baseline_rss_mb": base}


def run_child(cmd: list[str], timeout: float = 900) -> dict | None:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return None
    if res.returncode != 0:
        print(f"  child failed: {' '.join(cmd[-6:])}\n{res.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def wants_memory(rec: dict) -> bool:
    """Peak memory for every baseline and every window_global run; fwd+bwd (flex: fwd) elsewhere."""
    if "skipped" in rec or rec["impl"] == "gemm":
        return False
    if rec["impl"] in ("dense", "jax_causal", "sdpa") or rec["layout"] == "window_global":
        return True
    return rec["impl"] == "flex" or rec["mode"] == "fwdbwd"


def jax_impls() -> list[str]:
    return ["xla"] + (["pallas"] if jax.default_backend() in ("gpu", "tpu") else [])


def main(argv=None) -> None:
    from memgpt_jax.hostmem import tune_host_allocator

    tune_host_allocator()  # the memgpt-jax entry point's setting, before the first computation starts threads
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    p.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=LAYOUTS)
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"],
                   help="every configuration, ours and the peers', in each (default: both)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--rounds", type=int, default=3, help="alternate ours and the PyTorch peers this many times")
    p.add_argument("--name", default="attention", help="results/<name>.{json,md,png} (default: %(default)s)")
    p.add_argument("--out", default=str(RESULTS_DIR))
    p.add_argument("--quick", action="store_true", help="1k and 2k, 3 repeats, no memory runs")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--resume", action="store_true", help="keep the lengths (and memory runs) of an interrupted run")
    p.add_argument("--child-memory", nargs=5, metavar=("IMPL", "MODE", "LAYOUT", "LENGTH", "DTYPE"),
                   help=argparse.SUPPRESS)
    p.add_argument("--report", metavar="JSON", help="only rewrite the reports of a finished run")
    args = p.parse_args(argv)
    if any(n < BLOCK or n % BLOCK for n in args.lengths):
        p.error(f"--lengths must be positive multiples of the block size {BLOCK}")
    if args.report:
        payload = json.loads(Path(args.report).read_text())
        write_reports(payload, Path(args.report).parent, tag=Path(args.report).stem)
        return
    if args.child_memory:
        impl, mode, lay, length, dt = args.child_memory
        print(json.dumps(child_memory(impl, mode, lay, int(length), jnp.dtype(dt))))
        return
    if args.quick:
        args.lengths, args.repeats, args.rounds, args.no_memory = [1024, 2048], 3, 1, True
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    records, torch_info = [], {}
    maps_path = out_dir / f"_{args.name}_block_maps.npz"
    partial = out_dir / f"{args.name}.partial.json"
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if args.resume and partial.exists():
        saved = json.loads(partial.read_text())
        records, torch_info, info = saved["records"], saved["torch"], saved["machine"]
    done = {r["length"] for r in records if r["impl"] == ("xla" if args.no_torch else "sdpa")}
    from memgpt_jax.flops import measured_peak_flops  # the limit the kernels are measured against

    def jax_peaks(cached: bool = True) -> dict:
        """The best square-product GFLOP/s per dtype (1024^3 and 2048^3: the better)."""
        return {dt: round(max(measured_peak_flops(dt, n=n, cached=cached) for n in (1024, 2048)) / 1e9, 1)
                for dt in args.dtypes}

    info["matmul_peak_gflops"] = jax_peaks()

    def save_partial() -> None:
        partial.write_text(json.dumps({"machine": info, "torch": torch_info, "records": records}, default=str))

    def merge(store: dict, rec: dict) -> None:
        """Adds one round's measurement; the reported median is the median over rounds."""
        key = (rec["impl"], rec["mode"], rec["layout"], rec["dtype"])
        if key not in store:
            store[key] = dict(rec, round_medians=[])
        if "median_s" in rec:
            kept = store[key]
            kept["round_medians"].append(rec["median_s"])
            kept["median_s"] = statistics.median(kept["round_medians"])
            kept["min_s"] = min(kept.get("min_s", rec.get("min_s", rec["median_s"])), rec.get("min_s", rec["median_s"]))

    for length in args.lengths:
        if length in done:
            continue
        layouts = {name: build_layout(name, length) for name in args.layouts}
        maps = {f"{n}_{length}": kept_block_map(lay) for n, lay in layouts.items() if n in ("bigbird", "strided")}
        np.savez(maps_path, **maps)
        ours = [(impl, mode, name, dt) for dt in args.dtypes for name in layouts
                for impl in (*jax_impls(), "gemm") for mode in ("fwd", "fwdbwd")]
        baselines = [(impl, mode, HEADLINE_LAYOUT, dt) for dt in args.dtypes for impl in ("dense", "jax_causal")
                     for mode in ("fwd", "fwdbwd")]
        store: dict = {}
        for rnd in range(args.rounds):  # ours and the PyTorch peers alternate, round after round
            for impl, mode, name, dt in ours + (baselines if rnd == 0 else []):
                lay = layouts.get(name) or build_layout(name, length)
                rec = dict(length=length, dtype=dt, impl=impl, mode=mode, layout=name, density=lay.density(),
                           kept_blocks=lay.n_kept_blocks, ideal_speedup=lay.ideal_speedup())
                if impl in ("dense", "jax_causal") and dense_bytes(length, mode) > 0.5 * available_bytes():
                    rec["skipped"] = f"needs ~{dense_bytes(length, mode) / 2**30:.0f} GB"
                else:
                    rec.update(time_step(*make_step(impl, mode, lay, length, jnp.dtype(dt)), args.repeats))
                if impl == "gemm":
                    rec["gemm_n"] = gemm_size(kept_gflop(rec) * 1e9)
                merge(store, rec)
                log(f"jax   {impl:10s} {mode:6s} {name:14s} {dt:8s} T={length:6d} "
                    f"{rec.get('median_s', float('nan')):.4f}s {rec.get('skipped', '')}")
            if not args.no_torch:  # the PyTorch peers, right after ours on the same length
                cmd = [sys.executable, str(HERE / "torch_attention.py"), "--lengths", str(length), "--dtypes",
                       *args.dtypes, "--maps", str(maps_path), "--repeats", str(args.repeats), "--layouts",
                       *args.layouts]
                res = run_child(cmd, timeout=3600)
                if res:
                    peaks = torch_info.get("matmul_peak_gflops", {})
                    torch_info = {"torch": res["torch"], "threads": res["threads"],
                                  "matmul_peak_gflops": {dt: max(v, peaks.get(dt, 0.0))
                                                         for dt, v in res["matmul_peak_gflops"].items()}}
                for rec in res["results"] if res else []:
                    lay = layouts.get(rec["layout"]) or build_layout(rec["layout"], length)
                    merge(store, dict(rec, density=lay.density(), kept_blocks=lay.n_kept_blocks,
                                      ideal_speedup=lay.ideal_speedup()))
                    log(f"torch {rec['impl']:10s} {rec['mode']:6s} {rec['layout']:14s} {rec['dtype']:8s} "
                        f"T={length:6d} {rec['median_s']:.4f}s")
        records.extend(store.values())
        save_partial()

    if not args.no_memory:
        for rec in filter(wants_memory, records):
            if "peak_rss_mb" in rec or rec["length"] not in args.lengths:
                continue
            child = [rec["impl"], rec["mode"], rec["layout"], str(rec["length"])]
            if rec["impl"] in ("sdpa", "flex"):
                cmd = [sys.executable, str(HERE / "torch_attention.py"), "--dtypes", rec["dtype"],
                       "--maps", str(maps_path), "--child-memory", *child]
                np.savez(maps_path, **{f"{n}_{rec['length']}": kept_block_map(build_layout(n, rec["length"]))
                                       for n in ("bigbird", "strided") if n in args.layouts})
            else:
                cmd = [sys.executable, "-m", "benchmarks.attention", "--child-memory", *child, rec["dtype"]]
            mem = run_child(cmd)
            if mem:
                rec.update(mem)
                log(f"mem   {' '.join([*child, rec['dtype']]):48s} peak {mem['peak_rss_mb']:.0f} MB")
                save_partial()
    maps_path.unlink(missing_ok=True)
    info["load_after"] = os.getloadavg()
    # measured again at the end, the better figure kept (the machine is shared)
    info["matmul_peak_gflops"] = jax_peaks(cached=False)
    payload = {"machine": info, "torch": torch_info, "config": vars(args), "records": records}
    write_reports(payload, out_dir, tag=args.name)
    partial.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
