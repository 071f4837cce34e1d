"""Variants of the two CPU hot spots of the training step, timed side by side.

1. The block kernel's chunk size (``xla_attention(chunk_bytes=...)``): window+global
   attention, forward and forward + backward, one chunk size after another in interleaved
   rounds (the reported time is the median over rounds of each round's best).
2. The weight-gradient GEMM ``dW = x^T g`` (bf16 in, f32 accumulation), contracting over
   the step's tokens, written four ways: the transposed operand XLA sees from autodiff
   (``TN``), a materialised transpose (``layers.materialized_transpose``, what
   ``layers.matmul`` runs on CPU), the transpose of ``g^T x``, and the contraction split
   into chunks whose partial products are summed.

    python -m benchmarks.kernel_variants                  # 8k window+global, bf16; the step's GEMM shapes
    python -m benchmarks.kernel_variants --quick          # tiny shapes (a smoke run)
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any, Callable

from benchmarks.common import machine_line, markdown_table, rebuild_results_md, time_fn, write_results
from memgpt_jax.hostmem import tune_host_allocator

COLUMNS = ["study", "shape", "variant", "pass", "ms", "gflops_per_s"]


def _best(fn: Callable, args: tuple, repeats: int) -> float:
    """The best of ``repeats`` runs after one warm-up call."""
    return time_fn(lambda: fn(*args), repeats=repeats)["min_s"]


def chunk_sweep(length: int, chunk_mib: list[int], dtype: str, rounds: int, repeats: int) -> list[dict[str, Any]]:
    import jax
    import jax.numpy as jnp

    from benchmarks.attention import HEAD_DIM, HEADS, build_layout
    from benchmarks.attention_report import kept_gflop
    from memgpt_jax.attention.xla import xla_attention

    layout = build_layout("window_global", length)
    kept = layout.n_kept_blocks
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    q, k, v, cot = (jax.random.normal(kk, (1, length, HEADS, HEAD_DIM), jnp.float32).astype(dtype) for kk in keys)
    compiled = {}
    for mib in chunk_mib:
        def attn(q, k, v, mib=mib):
            return xla_attention(q, k, v, layout, chunk_bytes=mib << 20)

        def fwd_bwd(q, k, v, cot, attn=attn):
            return jax.vjp(attn, q, k, v)[1](cot)

        compiled[(mib, "fwd")] = (jax.jit(attn).lower(q, k, v).compile(), (q, k, v))
        compiled[(mib, "fwd+bwd")] = (jax.jit(fwd_bwd).lower(q, k, v, cot).compile(), (q, k, v, cot))
    per_round: dict[tuple[int, str], list[float]] = {key: [] for key in compiled}
    for _ in range(rounds):
        for key, (fn, args) in compiled.items():
            per_round[key].append(_best(fn, args, repeats))
    rows = []
    for (mib, mode), times in per_round.items():
        s = statistics.median(times)
        gflop = kept_gflop({"mode": "fwd" if mode == "fwd" else "fwdbwd", "kept_blocks": kept})
        rows.append({"study": "block kernel chunk size", "shape": f"window+global T={length} {dtype}",
                     "variant": f"chunk_bytes {mib} MiB", "pass": mode, "ms": 1e3 * s, "gflops_per_s": gflop / s})
    return rows


def weight_gradient_variants(shapes: list[tuple[int, int, int]], rounds: int, repeats: int) -> list[dict[str, Any]]:
    import jax
    import jax.numpy as jnp

    from memgpt_jax.layers import materialized_transpose

    f32 = jnp.float32
    rows = []
    for d_in, tokens, d_out in shapes:
        x = jax.random.normal(jax.random.PRNGKey(0), (tokens, d_in)).astype(jnp.bfloat16)
        g = jax.random.normal(jax.random.PRNGKey(1), (tokens, d_out)).astype(jnp.bfloat16)
        variants = {
            "TN (transposed operand)": lambda x, g: jax.lax.dot_general(
                x, g, (((0,), (0,)), ((), ())), preferred_element_type=f32),
            "materialised x^T (layers.matmul)": lambda x, g: jnp.dot(materialized_transpose(x), g,
                                                                     preferred_element_type=f32),
            "(g^T x)^T": lambda x, g: jnp.dot(g.T, x, preferred_element_type=f32).T,
        }
        for parts in (8, 32):
            if tokens % parts == 0:
                variants[f"contraction split in {parts}, summed"] = lambda x, g, c=parts: jnp.einsum(
                    "ctm,ctn->cmn", x.reshape(c, -1, d_in), g.reshape(c, -1, d_out),
                    preferred_element_type=f32).sum(0)
        compiled = {name: jax.jit(fn) for name, fn in variants.items()}
        times: dict[str, list[float]] = {name: [] for name in compiled}
        for _ in range(rounds):
            for name, fn in compiled.items():
                times[name].append(_best(fn, (x, g), repeats))
        for name, ts in times.items():
            s = statistics.median(ts)
            rows.append({"study": "weight gradient x^T g", "shape": f"{d_in}x{tokens}x{d_out} bf16->f32",
                         "variant": name, "pass": "-", "ms": 1e3 * s,
                         "gflops_per_s": 2 * d_in * tokens * d_out / s / 1e9})
    return rows


def section(payload: dict[str, Any]) -> str:
    meta = payload["meta"]
    lines = ["## Kernel variants: chunk size and weight-gradient layouts", "",
             f"`{payload.get('command', 'python -m benchmarks.kernel_variants')}` — "
             f"{machine_line(payload['machine'])}.", "",
             f"Medians over {meta['rounds']} interleaved rounds of the best of {meta['repeats']} runs; the attention "
             "GFLOP/s count the kept blocks' products (as the attention benchmark does).", "",
             markdown_table(payload["rows"], COLUMNS)]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--length", type=int, default=8192, help="sequence length of the attention sweep")
    p.add_argument("--chunk-mib", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="1k tokens, two chunk sizes, small GEMMs, 1 round")
    args = p.parse_args(argv)
    tune_host_allocator()  # as the memgpt-jax entry point (before JAX starts a thread)
    shapes = [(256, 8192, 768), (256, 8192, 1024), (1024, 8192, 256), (256, 8192, 8192)]
    if args.quick:
        args.length, args.chunk_mib, args.rounds, args.repeats = 1024, [1, 4], 1, 1
        shapes = [(256, 2048, 256)]
    if args.length % 128:
        p.error("--length must be a multiple of 128 (the benchmark's block)")
    rows = chunk_sweep(args.length, args.chunk_mib, args.dtype, args.rounds, args.repeats)
    rows += weight_gradient_variants(shapes, args.rounds, args.repeats)
    print(markdown_table(rows, COLUMNS))
    if not args.quick:
        write_results("kernel_variants", rows, COLUMNS, {**vars(args), "shapes": shapes})
        rebuild_results_md()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
