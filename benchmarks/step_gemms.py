"""The training step's GEMMs alone, XLA:CPU against PyTorch on the same shapes (issue 20).

`benchmarks.train_step --attention none` measured the step without attention (its floor):
ours 0.80x torch.compile at 1k tokens, 0.65x at 8k. This benchmark asks how much of that
gap is the matrix products themselves. It traces the benchmark's own jitted training step
(`train_step.lm_train_step`: the same model, batch and optimizer), collects every
``dot_general`` the step runs (forward, our custom backward with its materialised
transposes, the LM head; scanned or looped bodies counted as many times as they run) and
every materialised transpose (``cpu_layout.materialized_transpose``: a copy PyTorch never
makes, its BLAS reads transposed operands in place), then times each distinct product
alone, in JAX (jit of the same ``dot_general``, bf16 in, f32 out as the step runs it) and
in PyTorch (``torch.einsum`` on the same operands: bf16 out), in interleaved rounds in one
process. The totals say what the step's GEMMs cost in each library per step:

    gemm share = sum(count x time) over the step's products,  ours / PyTorch's

against the whole step's times in `train_step_floor` (same shapes). Attention's own products
are timed by `benchmarks.attention_products`; ``--attention none`` (the default) leaves them
out so the totals compare with the floor.

    python -m benchmarks.step_gemms --seq-lens 1024 8192                # bf16, 8,192 tokens a step
    python -m benchmarks.step_gemms --quick                             # tiny, a smoke run
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections import Counter
from typing import Any

from benchmarks.attention_products import _best_of
from benchmarks.common import machine_line, markdown_table, rebuild_results_md, write_results

COLUMNS = ["seq_len", "op", "lhs", "rhs", "out", "count", "gflop", "jax_ms", "jax_gflops_per_s", "torch_ms",
           "torch_gflops_per_s", "jax_vs_torch"]
TOTAL_COLUMNS = ["seq_len", "what", "jax_ms_per_step", "torch_ms_per_step", "jax_vs_torch"]
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _sub_jaxprs(value):
    """The jaxprs held by an equation parameter (closed or open, alone or in a sequence)."""
    from jax.extend import core

    items = value if isinstance(value, (tuple, list)) else (value,)
    for item in items:
        if isinstance(item, core.ClosedJaxpr):
            yield item.jaxpr
        elif isinstance(item, core.Jaxpr):
            yield item


def collect(jaxpr, mult: int = 1, dots: Counter | None = None, copies: Counter | None = None,
            loops: list | None = None) -> tuple[Counter, Counter, list]:
    """Every ``dot_general`` of ``jaxpr`` (recursively) by (lhs shape, lhs dtype, rhs shape, rhs
    dtype, dimension numbers, result dtype), and every transpose of a rank>=3 operand (the
    materialised copies) by (shape, permutation, dtype), each with how many times a step runs
    it: a ``scan`` body counts ``length`` times. ``loops``: the while loops met (their bodies
    counted once: their trip count is a runtime value)."""
    dots = Counter() if dots is None else dots
    copies = Counter() if copies is None else copies
    loops = [] if loops is None else loops
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            lhs, rhs = (v.aval for v in eqn.invars)
            out = eqn.outvars[0].aval
            dims = eqn.params["dimension_numbers"]
            key = (tuple(lhs.shape), str(lhs.dtype), tuple(rhs.shape), str(rhs.dtype),
                   tuple(tuple(map(tuple, d)) for d in dims), str(out.dtype))
            dots[key] += mult
        elif name == "transpose" and eqn.invars[0].aval.ndim >= 3:
            aval = eqn.invars[0].aval
            copies[(tuple(aval.shape), tuple(eqn.params["permutation"]), str(aval.dtype))] += mult
        inner = mult * (int(eqn.params["length"]) if name == "scan" else 1)
        if name == "while":
            loops.append(name)
        for value in eqn.params.values():
            for sub in _sub_jaxprs(value):
                collect(sub, inner, dots, copies, loops)
    return dots, copies, loops


def einsum_spec(lhs_ndim: int, rhs_ndim: int, dims) -> str:
    """The einsum equation of a ``dot_general`` with these dimension numbers (output: batch,
    then the lhs's free axes, then the rhs's, as ``dot_general`` orders them)."""
    (lc, rc), (lb, rb) = dims
    letters = iter(LETTERS)
    lhs = [None] * lhs_ndim
    rhs = [None] * rhs_ndim
    for i, j in zip(lb, rb):
        lhs[i] = rhs[j] = next(letters)
    for i, j in zip(lc, rc):
        lhs[i] = rhs[j] = next(letters)
    for axes in (lhs, rhs):
        for i, c in enumerate(axes):
            if c is None:
                axes[i] = next(letters)
    out = [lhs[i] for i in lb] + [c for i, c in enumerate(lhs) if i not in lb and i not in lc] + \
          [c for j, c in enumerate(rhs) if j not in rb and j not in rc]
    return f"{''.join(lhs)},{''.join(rhs)}->{''.join(out)}"


def dot_flops(lhs_shape, rhs_shape, dims) -> int:
    """2 x every lhs element (batch x free x contracted) x the rhs's free size."""
    import math

    (_, rc), (_, rb) = dims
    return 2 * math.prod(lhs_shape) * math.prod(n for j, n in enumerate(rhs_shape) if j not in rc and j not in rb)


def measure(seq_len: int, tokens: int, dtype: str, heads: int, attention: str, rounds: int, repeats: int,
            with_torch: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows per distinct product and copy of the step at ``seq_len``, and what the trace found."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks.train_step import lm_train_step

    torch = None
    if with_torch:
        import torch
        torch.set_num_threads(os.cpu_count() or 1)
    job = lm_train_step(attention, seq_len, tokens, dtype, heads)
    jaxpr = jax.make_jaxpr(job.step)(job.holder["state"], job.batch, job.key).jaxpr
    dots, copies, loops = collect(jaxpr)
    rng = np.random.default_rng(0)
    timers: dict[tuple, Any] = {}
    rows: dict[tuple, dict[str, Any]] = {}
    for i, (key, count) in enumerate(dots.items()):
        lhs_shape, lhs_dt, rhs_shape, rhs_dt, dims, out_dt = key
        spec = einsum_spec(len(lhs_shape), len(rhs_shape), dims)
        a = rng.standard_normal(lhs_shape, dtype=np.float32)
        b = rng.standard_normal(rhs_shape, dtype=np.float32)
        ja, jb = jnp.asarray(a, lhs_dt), jnp.asarray(b, rhs_dt)
        fn = jax.jit(lambda x, y, dims=dims, out_dt=out_dt: jax.lax.dot_general(
            x, y, dims, preferred_element_type=jnp.dtype(out_dt)))
        out = jax.block_until_ready(fn(ja, jb))
        timers[(i, "jax")] = lambda fn=fn, ja=ja, jb=jb: jax.block_until_ready(fn(ja, jb))
        if torch is not None:
            ta = torch.from_numpy(a).to(getattr(torch, lhs_dt))
            tb = torch.from_numpy(b).to(getattr(torch, rhs_dt))
            timers[(i, "torch")] = lambda spec=spec, ta=ta, tb=tb: torch.einsum(spec, ta, tb)
            timers[(i, "torch")]()
        rows[i] = {"seq_len": seq_len, "op": f"dot {spec}", "lhs": f"{list(lhs_shape)} {lhs_dt}",
                   "rhs": f"{list(rhs_shape)} {rhs_dt}", "out": f"{list(out.shape)} {out_dt}", "count": count,
                   "gflop": dot_flops(lhs_shape, rhs_shape, dims) / 1e9}
    for i, (key, count) in enumerate(copies.items(), start=len(rows)):
        shape, perm, dt = key
        x = jnp.asarray(rng.standard_normal(shape, dtype=np.float32), dt)
        fn = jax.jit(lambda v, perm=perm: jnp.transpose(v, perm))
        jax.block_until_ready(fn(x))
        timers[(i, "jax")] = lambda fn=fn, x=x: jax.block_until_ready(fn(x))
        rows[i] = {"seq_len": seq_len, "op": f"copy (transpose {list(perm)})", "lhs": f"{list(shape)} {dt}",
                   "rhs": "", "out": "", "count": count, "gflop": 0.0,
                   **({"torch_ms": 0.0} if torch is not None else {})}  # PyTorch reads transposes in place
    samples: dict[tuple, list[float]] = {key: [] for key in timers}
    for _ in range(rounds):
        for key, fn in timers.items():
            samples[key].append(_best_of(fn, repeats))
    for (i, lib), times in samples.items():
        s = statistics.median(times)
        row = rows[i]
        row[f"{lib}_ms"] = 1e3 * s
        if row["gflop"]:
            row[f"{lib}_gflops_per_s"] = row["gflop"] / s
    for row in rows.values():
        if row.get("torch_ms"):
            row["jax_vs_torch"] = row["torch_ms"] / row["jax_ms"]
    return list(rows.values()), {"dots": sum(dots.values()), "copies": sum(copies.values()), "while_loops": len(loops)}


def totals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per sequence length: the products, the copies and both, per step (count x time)."""
    out = []
    for seq_len in dict.fromkeys(r["seq_len"] for r in rows):
        mine = [r for r in rows if r["seq_len"] == seq_len]
        for what, pick in (("GEMMs", lambda r: r["op"].startswith("dot")),
                           ("materialised transposes", lambda r: r["op"].startswith("copy")),
                           ("GEMMs + transposes", lambda r: True)):
            chosen = [r for r in mine if pick(r)]
            row = {"seq_len": seq_len, "what": what,
                   "jax_ms_per_step": sum(r["count"] * r["jax_ms"] for r in chosen)}
            if all("torch_ms" in r for r in chosen):
                row["torch_ms_per_step"] = sum(r["count"] * r["torch_ms"] for r in chosen)
                if row["jax_ms_per_step"]:
                    row["jax_vs_torch"] = row["torch_ms_per_step"] / row["jax_ms_per_step"]
            out.append(row)
    return out


def section(payload: dict[str, Any]) -> str:
    meta = payload["meta"]
    return "\n".join([
        "## The training step's GEMMs alone: XLA:CPU against PyTorch on the same shapes", "",
        f"`{payload.get('command', 'python -m benchmarks.step_gemms')}` — {machine_line(payload['machine'])}.", "",
        f"Every product of the `train_step` benchmark's step (`small_10m(n_heads={meta['heads']})`, "
        f"{meta['tokens']:,} tokens a step, {meta['dtype']}, attention `{meta['attention']}`), traced from its "
        "jaxpr and timed alone: JAX runs the step's own `dot_general` (f32 out), PyTorch `torch.einsum` on the "
        f"same operands ({meta['dtype']} out); medians over {meta['rounds']} interleaved rounds of the best of "
        f"{meta['repeats']}. `count`: times a step runs it. Materialised transposes are copies our backward "
        "makes for XLA:CPU's fast GEMM layout; PyTorch's BLAS reads transposed operands in place (0 ms). "
        "`jax_vs_torch` > 1: ours faster.", "",
        markdown_table(meta["totals"], TOTAL_COLUMNS), "",
        "<details><summary>Per product</summary>", "",
        markdown_table(payload["rows"], COLUMNS), "", "</details>"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seq-lens", type=int, nargs="+", default=[1024, 8192])
    p.add_argument("--tokens-per-step", type=int, default=8192)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--heads", type=int, default=4, help="as train_step's --heads")
    p.add_argument("--attention", default="none", choices=["none", "dense_blocked", "sparse"],
                   help="the step traced (default none: the attention-free floor's products)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-torch", action="store_true", help="JAX only")
    p.add_argument("--quick", action="store_true", help="a 128-token step, one round (writes step_gemms_quick.json)")
    args = p.parse_args(argv)
    if min(args.seq_lens) < 1 or args.tokens_per_step < 1:
        p.error("--seq-lens and --tokens-per-step take positive sizes")
    if args.quick:
        args.seq_lens, args.tokens_per_step, args.rounds, args.repeats = [128], 256, 1, 1
    from memgpt_jax.hostmem import tune_host_allocator

    tune_host_allocator()  # as the memgpt-jax entry point (before JAX starts a thread)
    rows, traced = [], {}
    for seq_len in args.seq_lens:
        got, traced[seq_len] = measure(seq_len, args.tokens_per_step, args.dtype, args.heads, args.attention,
                                       args.rounds, args.repeats, with_torch=not args.no_torch)
        rows += got
    total_rows = totals(rows)
    print(markdown_table(total_rows, TOTAL_COLUMNS))
    write_results("step_gemms_quick" if args.quick else "step_gemms", rows, COLUMNS,
                  {"tokens": args.tokens_per_step, "dtype": args.dtype, "heads": args.heads,
                   "attention": args.attention, "rounds": args.rounds, "repeats": args.repeats, "traced": traced,
                   "totals": total_rows})
    if not args.quick:
        rebuild_results_md()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
