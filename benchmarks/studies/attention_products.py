"""The ceiling of an attention kernel built from XLA:CPU's dots (issue 20, target 3).

The block kernel (``memgpt_jax.attention.xla``) is a sequence of batched products over
score tiles of ``M`` query rows and ``N`` keys (head dim ``D``). Its forward runs

    S  = Q K^T    [M, D] x [N, D]^T -> [M, N]   contraction D   ("scores")
    O  = P V      [M, N] x [N, D]   -> [M, D]   contraction N   ("P V")

and its backward recomputes ``S^T = K Q^T``, then ``dP^T = V dO^T`` (both "scores^T",
contraction D), ``dK = dS^T Q`` and ``dV = P^T dO`` ("dS^T Q", contraction M) and
``dQ = dS K`` (shaped as "P V"). Each distinct product is timed alone here, with the
kernel's operand dtypes (bf16 in, f32 out; ``float32`` on request), for several tile
shapes, in interleaved rounds, next to ``torch.einsum`` on the same shapes in the same
process (PyTorch's bf16 einsum returns bf16: half the output bytes). From the timings,

    ceiling fwd      = 2 products / (t_scores + t_PV)
    ceiling fwd+bwd  = 6 products / (t_scores + 2 t_PV + 2 t_scores^T + 2 t_dS^TQ)

counting the products as the attention benchmark does (2 forward, 6 forward + backward:
the recomputed scores are work it does not count), as GFLOP/s and as a share of the
measured ``n^3`` matmul peak: what the kernel would reach if its softmax, masks, gathers
and scatter-adds cost nothing.

    python -m benchmarks.studies.attention_products               # the kernel's tiles, bf16, with PyTorch
    python -m benchmarks.studies.attention_products --quick       # small tiles, one round (a smoke run)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from typing import Any

from benchmarks.common import STUDIES_DIR, machine_line, markdown_table, write_results
from memgpt_jax.hostmem import tune_host_allocator

# name -> (einsum, the two operands' axes); m query rows, n keys, d the head dim
PRODUCTS = {
    "scores": ("bmd,bnd->bmn", ("bmd", "bnd")),
    "scores^T": ("bnd,bmd->bnm", ("bnd", "bmd")),
    "P V": ("bmn,bnd->bmd", ("bmn", "bnd")),
    "dS^T Q": ("bnm,bmd->bnd", ("bnm", "bmd")),
}
# Not a product: the forward softmax's own arithmetic on the same float32 score tiles (row max,
# exp, row sum; the probabilities cast to the operand dtype for P V), which no kernel skips.
SOFTMAX = "softmax"
# how many times each product runs in a pass of the kernel (per tile)
USES = {"fwd": {"scores": 1, "P V": 1},
        "fwd+softmax": {"scores": 1, "P V": 1, SOFTMAX: 1},
        "fwd+bwd": {"scores": 1, "P V": 2, "scores^T": 2, "dS^T Q": 2}}
COUNTED = {"fwd": 2, "fwd+softmax": 2, "fwd+bwd": 6}  # products the attention benchmark's GFLOP/s count
# (M, N): the window+global layout's rows (5 kept blocks of b keys per query block of b), and
# long causal rows of the dense step at 8k
TILES = [(64, 320), (128, 640), (256, 1280), (512, 2560), (128, 4096)]
COLUMNS = ["tile", "product", "batch", "gflop", "jax_ms", "jax_gflops_per_s", "jax_of_peak", "torch_ms",
           "torch_gflops_per_s", "torch_of_peak"]
CEILING_COLUMNS = ["tile", "pass", "jax_gflops_per_s", "jax_of_peak", "torch_gflops_per_s", "torch_of_peak"]


def _operands(axes: tuple[str, str], m: int, n: int, d: int, batch: int, seed: int):
    import numpy as np

    size = {"b": batch, "m": m, "n": n, "d": d}
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal([size[c] for c in ax], dtype=np.float32) for ax in axes)


def _best_of(fn, repeats: int) -> float:
    import time

    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure(tiles: list[tuple[int, int]], head_dim: int, dtype: str, gflop_per_call: float, rounds: int,
            repeats: int, with_torch: bool) -> tuple[list[dict[str, Any]], float, float | None]:
    """Rows per (tile, product), the JAX and PyTorch ``n^3`` peaks (GFLOP/s)."""
    import jax
    import jax.numpy as jnp

    from memgpt_jax.flops import measured_peak_flops

    torch = None
    if with_torch:
        import torch
        torch.set_num_threads(os.cpu_count() or 1)
    jdt = jnp.dtype(dtype)
    timers: dict[tuple, Any] = {}
    rows: dict[tuple, dict[str, Any]] = {}
    for m, n in tiles:
        flop_one = 2 * m * n * head_dim
        batch = max(1, round(gflop_per_call * 1e9 / flop_one))
        scores = _operands(("bmn",), m, n, head_dim, batch, seed=len(PRODUCTS))[0]
        js = jnp.asarray(scores)  # float32, as the kernel's scores
        soft = jax.jit(lambda x: _softmax(jnp, x, jdt))
        jax.block_until_ready(soft(js))
        timers[(m, n, SOFTMAX, "jax")] = lambda soft=soft, js=js: jax.block_until_ready(soft(js))
        if torch is not None:
            ts = torch.from_numpy(scores)
            timers[(m, n, SOFTMAX, "torch")] = lambda ts=ts: _softmax(torch, ts, getattr(torch, dtype))
        rows[(m, n, SOFTMAX)] = {"tile": f"{m}x{n}", "product": SOFTMAX, "batch": batch, "gflop": None}
        for i, (name, (spec, axes)) in enumerate(PRODUCTS.items()):
            a, b = _operands(axes, m, n, head_dim, batch, seed=i)
            ja, jb = jnp.asarray(a, jdt), jnp.asarray(b, jdt)
            fn = jax.jit(lambda x, y, spec=spec: jnp.einsum(spec, x, y, preferred_element_type=jnp.float32))
            jax.block_until_ready(fn(ja, jb))
            key = (m, n, name)
            timers[key + ("jax",)] = lambda fn=fn, ja=ja, jb=jb: jax.block_until_ready(fn(ja, jb))
            if torch is not None:
                tdt = getattr(torch, dtype)
                ta, tb = torch.from_numpy(a).to(tdt), torch.from_numpy(b).to(tdt)
                timers[key + ("torch",)] = lambda spec=spec, ta=ta, tb=tb: torch.einsum(spec, ta, tb)
                timers[key + ("torch",)]()
            rows[key] = {"tile": f"{m}x{n}", "product": name, "batch": batch, "gflop": batch * flop_one / 1e9}
    samples: dict[tuple, list[float]] = {key: [] for key in timers}
    for _ in range(rounds):
        for key, fn in timers.items():
            samples[key].append(_best_of(fn, repeats))
    jax_peak = measured_peak_flops(dtype) / 1e9
    torch_peak = _torch_peak(torch, dtype) if torch is not None else None
    for key, times in samples.items():
        lib = key[-1]
        row = rows[key[:-1]]
        s = statistics.median(times)
        row[f"{lib}_ms"] = 1e3 * s
        if row["gflop"] is not None:  # a product (the softmax has only its time)
            rate = row["gflop"] / s
            row[f"{lib}_gflops_per_s"] = rate
            row[f"{lib}_of_peak"] = rate / (jax_peak if lib == "jax" else torch_peak)
    return list(rows.values()), jax_peak, torch_peak


def _softmax(xp, s, dtype):
    """The forward's softmax arithmetic on float32 scores ``[b, m, n]`` (``xp``: jax.numpy or torch):
    the probabilities in the operand dtype and the row sums."""
    if xp.__name__ == "torch":
        p = xp.exp(s - s.amax(dim=-1, keepdim=True))
        return p.to(dtype), p.sum(-1)
    p = xp.exp(s - s.max(axis=-1, keepdims=True))
    return p.astype(dtype), p.sum(-1)


def _torch_peak(torch, dtype: str, n: int = 1024, repeats: int = 5) -> float:
    a = torch.ones((n, n), dtype=getattr(torch, dtype))
    a @ a
    return 2 * n**3 / _best_of(lambda: a @ a, repeats) / 1e9


def ceilings(rows: list[dict[str, Any]], jax_peak: float, torch_peak: float | None) -> list[dict[str, Any]]:
    """Per tile and pass: the counted products' FLOPs over the time of every product the pass runs."""
    out = []
    for tile in dict.fromkeys(r["tile"] for r in rows):
        by = {r["product"]: r for r in rows if r["tile"] == tile}
        unit = by["scores"]["gflop"]  # every product of a tile has the same FLOPs
        for mode, uses in USES.items():
            row: dict[str, Any] = {"tile": tile, "pass": mode}
            for lib, peak in (("jax", jax_peak), ("torch", torch_peak)):
                if all(f"{lib}_ms" in by[p] for p in uses):
                    seconds = sum(k * by[p][f"{lib}_ms"] / 1e3 for p, k in uses.items())
                    row[f"{lib}_gflops_per_s"] = COUNTED[mode] * unit / seconds
                    row[f"{lib}_of_peak"] = row[f"{lib}_gflops_per_s"] / peak
            out.append(row)
    return out


def section(payload: dict[str, Any]) -> str:
    meta = payload["meta"]
    torch_peak = f"{meta['torch_peak_gflops']:.0f}" if meta.get("torch_peak_gflops") else "-"
    return "\n".join([
        "## Attention products alone: the ceiling of a kernel built from XLA:CPU's dots", "",
        f"`{payload.get('command', 'python -m benchmarks.studies.attention_products')}` — {machine_line(payload['machine'])}.",
        "",
        f"Head dim {meta['head_dim']}, {meta['dtype']} operands, float32 output in JAX (the kernel's), "
        f"{meta['dtype']} in PyTorch; medians over {meta['rounds']} interleaved rounds of the best of "
        f"{meta['repeats']} runs. `of_peak`: share of the same library's 1024^3 {meta['dtype']} product "
        f"in this process (JAX {meta['jax_peak_gflops']:.0f} GFLOP/s, PyTorch {torch_peak}). Tiles are "
        "`M x N` (query rows x keys).", "",
        markdown_table(payload["rows"], COLUMNS), "",
        "The ceilings: the counted products' FLOPs (2 forward, 6 forward + backward) over the time of "
        "every product the pass runs, nothing else costing anything; `fwd+softmax` adds the softmax's own "
        "arithmetic on the same score tiles (row max, exp, row sum, the cast for P V), which every kernel "
        "pays:", "",
        markdown_table(meta["ceilings"], CEILING_COLUMNS)])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiles", nargs="+", default=[f"{m}x{n}" for m, n in TILES],
                   help="tiles as MxN (query rows x keys)")
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--gflop", type=float, default=1.0, help="GFLOP per timed call (sets each tile's batch)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-torch", action="store_true", help="JAX only")
    p.add_argument("--quick", action="store_true", help="two small tiles, one round (writes attention_products_quick.json)")
    args = p.parse_args(argv)
    try:
        tiles = [tuple(int(x) for x in t.lower().split("x")) for t in args.tiles]
    except ValueError:
        p.error(f"--tiles takes MxN pairs such as 128x640, got {args.tiles}")
    if any(len(t) != 2 or min(t) < 1 for t in tiles):
        p.error(f"--tiles takes MxN pairs of positive sizes, got {args.tiles}")
    if args.quick:
        tiles, args.gflop, args.rounds, args.repeats = [(32, 96), (64, 128)], 0.01, 1, 1
    tune_host_allocator()  # as the memgpt-jax entry point (before JAX starts a thread)
    rows, jax_peak, torch_peak = measure(tiles, args.head_dim, args.dtype, args.gflop, args.rounds, args.repeats,
                                         with_torch=not args.no_torch)
    ceiling_rows = ceilings(rows, jax_peak, torch_peak)
    meta = {**vars(args), "jax_peak_gflops": jax_peak, "torch_peak_gflops": torch_peak, "ceilings": ceiling_rows}
    path = write_results("attention_products_quick" if args.quick else "attention_products", rows, COLUMNS, meta,
                         directory=STUDIES_DIR)
    print(section(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
