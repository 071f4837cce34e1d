"""Variants of the two CPU hot spots of the training step, timed side by side.

1. The block kernel's chunk size (``xla_attention(chunk_bytes=...)``): window+global
   attention, forward and forward + backward, one chunk size after another in interleaved
   rounds (the reported time is the median over rounds of each round's best).
2. The weight-gradient GEMM ``dW = x^T g`` (bf16 in, f32 accumulation), contracting over
   the step's tokens, written four ways: the transposed operand XLA sees from autodiff
   (``TN``), a materialised transpose (``layers.materialized_transpose``, what
   ``layers.matmul`` runs on CPU), the transpose of ``g^T x``, and the contraction split
   into chunks whose partial products are summed.
3. (``--study dense_tile``) Dense causal attention as a training step sees it (8,192 tokens a
   batch): the oracle (the whole score matrix) against the causal block kernel with tiles of
   128-1,024, forward + backward, per sequence length and head shape. It chooses the tiles of
   ``impl="auto"`` on CPU (``memgpt_jax.attention.dense_cpu_tile``).

    python -m benchmarks.kernel_variants                  # 8k window+global, bf16; the step's GEMM shapes
    python -m benchmarks.kernel_variants --study dense_tile   # -> results/kernel_variants_dense_tile.json
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


def dense_tile_sweep(lengths: list[int], tiles: list[int], heads: list[int], tokens: int, dtype: str, rounds: int,
                     repeats: int) -> list[dict[str, Any]]:
    import jax
    import jax.numpy as jnp

    from memgpt_jax.attention import dense_cpu_tile
    from memgpt_jax.attention import layout as L
    from memgpt_jax.attention.reference import causal_attention
    from memgpt_jax.attention.xla import xla_attention

    rows = []
    for length in lengths:
        for n in heads:
            batch, head_dim = max(tokens // length, 1), 256 // n
            keys = jax.random.split(jax.random.PRNGKey(0), 4)
            q, k, v, cot = (jax.random.normal(kk, (batch, length, n, head_dim), jnp.float32).astype(dtype)
                            for kk in keys)
            variants = {"oracle (whole score matrix)": lambda q, k, v: causal_attention(q, k, v)[0]}
            for tile in tiles:
                if length % tile == 0 and tile <= length:
                    variants[f"block kernel, tile {tile}"] = (
                        lambda q, k, v, lay=L.causal(length, block=tile): xla_attention(q, k, v, lay))
            compiled = {name: jax.jit(lambda q, k, v, c, f=f: jax.vjp(f, q, k, v)[1](c)).lower(q, k, v, cot).compile()
                        for name, f in variants.items()}
            times: dict[str, list[float]] = {name: [] for name in compiled}
            for r in range(rounds):
                for name in (list(compiled) if r % 2 == 0 else list(compiled)[::-1]):
                    times[name].append(_best(compiled[name], (q, k, v, cot), repeats))
            causal_gflop = 3 * 4 * batch * n * head_dim * length * length / 2 / 1e9  # fwd 2 products, bwd 4
            chosen = dense_cpu_tile(length)
            for name, ts in times.items():
                s = statistics.median(ts)
                auto = (name.endswith(f"tile {chosen}") if chosen else name.startswith("oracle"))
                rows.append({"study": "dense causal: tile", "shape": f"T={length} B={batch} {n}x{head_dim} {dtype}",
                             "variant": name + (" (auto)" if auto else ""), "pass": "fwd+bwd", "ms": 1e3 * s,
                             "gflops_per_s": causal_gflop / s})
    return rows


def section(payload: dict[str, Any]) -> str:
    meta = payload["meta"]
    tiles = meta.get("study") == "dense_tile"
    title = ("Dense causal attention: the block kernel's tile (impl auto on CPU)" if tiles else
             "Kernel variants: chunk size and weight-gradient layouts")
    counted = ("the GFLOP/s count the causal half of the score matrix, forward + backward (what every variant "
               "must compute); `(auto)` marks what `impl=\"auto\"` runs at that length" if tiles else
               "the attention GFLOP/s count the kept blocks' products (as the attention benchmark does)")
    lines = [f"## {title}", "",
             f"`{payload.get('command', 'python -m benchmarks.kernel_variants')}` — "
             f"{machine_line(payload['machine'])}.", "",
             f"Medians over {meta['rounds']} interleaved rounds (order alternating) of the best of {meta['repeats']} "
             f"runs; {counted}.", "",
             markdown_table(payload["rows"], COLUMNS)]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", default="chunk_wgrad", choices=["chunk_wgrad", "dense_tile"],
                   help="chunk_wgrad: studies 1 and 2 (results/kernel_variants.json); dense_tile: study 3 "
                        "(results/kernel_variants_dense_tile.json)")
    p.add_argument("--length", type=int, default=8192, help="sequence length of the attention sweep")
    p.add_argument("--chunk-mib", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 8192], help="dense_tile: lengths")
    p.add_argument("--tiles", type=int, nargs="+", default=[128, 256, 512, 1024], help="dense_tile: tiles")
    p.add_argument("--heads", type=int, nargs="+", default=[4, 8],
                   help="dense_tile: heads of the d_model-256 model (4: head_dim 64; 8: 32, the IMDb models')")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="1k tokens, two chunk sizes, small GEMMs, 1 round")
    args = p.parse_args(argv)
    tune_host_allocator()  # as the memgpt-jax entry point (before JAX starts a thread)
    shapes = [(256, 8192, 768), (256, 8192, 1024), (1024, 8192, 256), (256, 8192, 8192)]
    if args.quick:
        args.length, args.chunk_mib, args.rounds, args.repeats = 1024, [1, 4], 1, 1
        args.lengths, args.tiles, args.heads = [256], [128, 256], [4]
        shapes = [(256, 2048, 256)]
    if args.length % 128:
        p.error("--length must be a multiple of 128 (the benchmark's block)")
    if args.study == "dense_tile":
        name = "kernel_variants_dense_tile"
        rows = dense_tile_sweep(args.lengths, args.tiles, args.heads, 8192 if not args.quick else 1024, args.dtype,
                                args.rounds, args.repeats)
    else:
        name = "kernel_variants"
        rows = chunk_sweep(args.length, args.chunk_mib, args.dtype, args.rounds, args.repeats)
        rows += weight_gradient_variants(shapes, args.rounds, args.repeats)
    print(markdown_table(rows, COLUMNS))
    if not args.quick:
        write_results(name, rows, COLUMNS, {**vars(args), **({} if args.study == "dense_tile" else {"shapes": shapes})})
        rebuild_results_md()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
