"""Where the dense training step's time goes, and how fast this machine runs its GEMMs.

    python -m benchmarks.studies.step_parts                 # the train_step model, 8 x 1024 tokens, bf16 and f32
    python -m benchmarks.studies.step_parts --quick         # tiny shapes (a smoke run)

It explains the dense-MFU figure of ``benchmarks.train_step`` and writes ``results/studies/step_parts.json``
with two tables:

1. Parts of one training step of the dense model (``small_10m(n_heads=4)``, exact attention
   through the causal block kernel), per compute dtype. It times the whole step (forward,
   backward and AdamW, its state donated as in training) and forward + backward alone. Then
   each part is timed alone, forward and backward:
   - attention (x n_layers);
   - the QKV/out and MLP GEMMs (x n_layers);
   - the tied LM head with cross-entropy;
   - the AdamW update (donated).
   One row is derived: the remainder (norms, activations, residuals, embedding, dropout)
   is forward + backward minus the matmul parts.
   Each row shows its model FLOPs (3x the forward's), GFLOP/s and share of the matmul peak.
   The step rows count FLOPs as MFU does (dense attention = the whole score matrix), so
   their ``of_peak`` is the MFU; the attention row counts the causal blocks it computes.
2. Every GEMM shape of that step: forward, input gradient and weight gradient, as they are
   laid out (``NN``: A @ B, ``NT``: A @ B^T, ``TN``: A^T @ B). Each runs in JAX (bf16 in with
   f32 accumulation, and f32) and, when PyTorch is installed, in ``torch.matmul`` on the same
   CPU in its own process. All are shown in GFLOP/s and as a share of the JAX peak of
   their dtype (``memgpt_jax.flops.measured_peak_flops``, a 1024^3 product). Weight
   gradients are also timed as the model runs them: ``layers.matmul`` multiplies a
   materialised transpose (``jax_bf16_xT_gflops``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

from benchmarks.common import STUDIES_DIR, machine_line, markdown_table, write_results
from memgpt_jax.hostmem import ENV as ALLOCATOR_ENV, allocator_setting, tune_host_allocator

PART_COLUMNS = ["compute_dtype", "part", "ms", "share_of_step", "gflop", "gflops_per_s", "of_peak"]
GEMM_COLUMNS = ["gemm", "layout", "batch", "m", "k", "n", "count_per_step", "jax_bf16_gflops", "jax_bf16_of_peak",
                "jax_bf16_xT_gflops", "jax_f32_gflops", "jax_f32_of_peak", "torch_bf16_gflops", "torch_f32_gflops"]


def _best_s(f, *args, repeats: int) -> float:
    import jax  # lazy: the PyTorch GEMM child process and the report (which imports section) run without JAX

    jax.block_until_ready(f(*args))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def gemm_shapes(tokens: int, d_model: int, mlp: int, vocab: int, n_layers: int, heads: int, head_dim: int,
                block: int, seq_len: int) -> list[dict[str, Any]]:
    """The step's GEMMs: ``(name, layout, batch, m, k, n, count per step)``.

    Attention tiles are the block kernel's: a query block of ``block`` rows against the
    average causal row of keys.
    """
    n, D, F, V, L = tokens, d_model, mlp, vocab, n_layers
    rows_per_seq = seq_len // block
    keys = block * (rows_per_seq + 1) // 2  # the average causal row, in whole blocks
    tiles = (tokens // seq_len) * heads * rows_per_seq
    spec = [
        ("QKV projection, forward", "NN", 1, n, D, 3 * D, L),
        ("QKV projection, input gradient", "NT", 1, n, 3 * D, D, L),
        ("QKV projection, weight gradient", "TN", 1, D, n, 3 * D, L),
        ("MLP up, forward", "NN", 1, n, D, F, L),
        ("MLP down, forward", "NN", 1, n, F, D, L),
        ("MLP up, weight gradient", "TN", 1, D, n, F, L),
        ("LM head, forward", "NN", 1, n, D, V, 1),  # on the materialised table^T (model.Embed.attend)
        ("LM head, input gradient", "NT", 1, n, V, D, 1),
        ("LM head, weight gradient", "TN", 1, D, n, V, 1),
        ("attention scores Q K^T", "NT", tiles, block, head_dim, keys, L),
        ("attention P V", "NN", tiles, block, keys, head_dim, L),
        ("attention dK = dS^T Q", "NN", tiles, keys, block, head_dim, L),
        ("peak reference 1024^3", "NN", 1, 1024, 1024, 1024, 0),
    ]
    return [dict(zip(("gemm", "layout", "batch", "m", "k", "n", "count_per_step"), s)) for s in spec]


def _operand_shapes(g: dict[str, Any]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    m, k, n, b = g["m"], g["k"], g["n"], g["batch"]
    a = (k, m) if g["layout"] == "TN" else (m, k)
    w = (n, k) if g["layout"] == "NT" else (k, n)
    return ((b, *a), (b, *w)) if b > 1 else (a, w)


def jax_gemm(g: dict[str, Any], dtype: str):
    """``(f, a, b)``: the jitted product of one GEMM (f32 accumulation) and operands laid out as ``g["layout"]``."""
    import jax  # lazy: the PyTorch GEMM child process and the report (which imports section) run without JAX
    import jax.numpy as jnp

    sa, sb = _operand_shapes(g)
    batched = g["batch"] > 1
    # contracting dims: A's k axis and B's k axis, as the layout puts them
    ca = (1 if batched else 0) if g["layout"] == "TN" else (2 if batched else 1)
    cb = (2 if batched else 1) if g["layout"] == "NT" else (1 if batched else 0)
    dims = (((ca,), (cb,)), ((0,), (0,)) if batched else ((), ()))
    f = jax.jit(lambda a, b: jax.lax.dot_general(a, b, dims, preferred_element_type=jnp.float32))
    return f, jax.random.normal(jax.random.key(0), sa, dtype), jax.random.normal(jax.random.key(1), sb, dtype)


def _jax_gemm_gflops(g: dict[str, Any], dtype: str, repeats: int, materialize: bool = False) -> float:
    """GFLOP/s of one GEMM; ``materialize``: a ``TN`` product run as ``layers.matmul`` runs its
    weight gradients, ``materialized_transpose(A) @ B`` (the copy included in the time)."""
    import jax  # lazy: the PyTorch GEMM child process and the report (which imports section) run without JAX
    import jax.numpy as jnp

    from memgpt_jax.layers import materialized_transpose

    f, a, b = jax_gemm(g, dtype)
    if materialize:
        f = jax.jit(lambda a, b: jnp.dot(materialized_transpose(a), b, preferred_element_type=jnp.float32))
    return 2 * g["batch"] * g["m"] * g["k"] * g["n"] / _best_s(f, a, b, repeats=repeats) / 1e9


def torch_gemms(gemms: list[dict[str, Any]], repeats: int) -> list[dict[str, float]]:
    """``torch.matmul`` GFLOP/s of every GEMM (bf16 and f32), in this process."""
    import torch  # lazy: the torch extra is optional (the JAX process never imports it)

    torch.set_num_threads(os.cpu_count() or 1)
    out = []
    for g in gemms:
        res = {}
        for dtype, key in ((torch.bfloat16, "torch_bf16_gflops"), (torch.float32, "torch_f32_gflops")):
            sa, sb = _operand_shapes(g)
            a, b = torch.randn(sa, dtype=dtype), torch.randn(sb, dtype=dtype)
            a = a.transpose(-1, -2) if g["layout"] == "TN" else a  # a strided view, as autograd passes it
            b = b.transpose(-1, -2) if g["layout"] == "NT" else b
            torch.matmul(a, b)
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                torch.matmul(a, b)
                best = min(best, time.perf_counter() - t0)
            res[key] = 2 * g["batch"] * g["m"] * g["k"] * g["n"] / best / 1e9
        out.append(res)
    return out


def step_parts(seq_len: int, batch: int, dtype: str, repeats: int, heads: int) -> list[dict[str, Any]]:
    import jax  # lazy: the PyTorch GEMM child process and the report (which imports section) run without JAX
    import jax.numpy as jnp
    import numpy as np

    import optax

    from memgpt_jax import config as config_lib
    from memgpt_jax import model as model_lib
    from memgpt_jax.attention import make_attention_fn
    from memgpt_jax.flops import flops_per_token, keys_per_query, measured_peak_flops
    from memgpt_jax.layers import activation, matmul, tied_logits
    from memgpt_jax.run_config import OptimConfig
    from memgpt_jax.training.optim import make_optimizer
    from memgpt_jax.training.state import TrainState
    from memgpt_jax.training.steps import make_loss_fn, make_train_step

    from benchmarks.train_step import dense_block

    block = dense_block(seq_len)
    cfg = config_lib.small_10m(max_len=seq_len, compute_dtype=dtype, n_heads=heads).replace(
        attention=dict(pattern="dense", impl="xla", block_size=block))  # the train_step "dense(blocked)" row
    D, L, V, F, H, d = cfg.d_model, cfg.n_layers, cfg.vocab_size, cfg.mlp_dim, cfg.n_heads, cfg.head_dim
    n = batch * seq_len
    model = model_lib.build(cfg)
    params, _ = model_lib.init(model, jax.random.key(0))
    rng = np.random.default_rng(0)
    ids = rng.integers(0, V, (batch, seq_len + 1), dtype=np.int32)
    data = {"inputs": ids[:, :-1], "targets": ids[:, 1:], "loss_mask": np.ones((batch, seq_len), bool)}
    key = jax.random.key(1)
    loss_fn = make_loss_fn("lm", model)
    fwd_bwd = jax.jit(jax.grad(lambda p: loss_fn({"params": p}, data, key, None)[0]))
    t_fwd_bwd = _best_s(fwd_bwd, params, repeats=repeats)
    tx, schedule = make_optimizer(OptimConfig(lr=1e-4, warmup_steps=0), 100)
    step = jax.jit(make_train_step(loss_fn, tx, schedule), donate_argnums=(0,))  # as training runs it
    carry = {"state": TrainState.create(jax.tree.map(jnp.copy, params), tx)}  # donated: params stay for the parts

    def one_step():
        carry["state"], metrics = step(carry["state"], data, key)
        return metrics["loss"]

    t_step = _best_s(one_step, repeats=repeats)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)

    def adamw(opt_carry):  # the update alone, donated as in the step
        updates, opt_state = tx.update(grads, opt_carry["opt"], opt_carry["params"])
        return {"params": optax.apply_updates(opt_carry["params"], updates), "opt": opt_state}

    update = jax.jit(adamw, donate_argnums=(0,))
    opt_carry = {"value": {"params": jax.tree.map(jnp.copy, params), "opt": tx.init(params)}}

    def one_update():
        opt_carry["value"] = update(opt_carry["value"])
        return opt_carry["value"]["params"]

    t_update = _best_s(one_update, repeats=repeats)

    cdt = jnp.dtype(dtype)
    mm = lambda a, b: matmul(a.astype(cdt), b.astype(cdt))  # noqa: E731  (the model's GEMM, backward included)
    x = jax.random.normal(jax.random.key(2), (n, D), jnp.float32)
    table = params["transformer"]["wte"]["embedding"]
    targets = jnp.asarray(data["targets"].reshape(-1))

    def head(x, table):  # the model's tied head (model.Embed.attend) and cross-entropy
        logp = jax.nn.log_softmax(tied_logits(x.astype(cdt), table.astype(cdt)))
        return -jnp.mean(jnp.take_along_axis(logp, targets[:, None], axis=-1))

    t_head = _best_s(jax.jit(jax.grad(head, (0, 1))), x, table, repeats=repeats)
    attend = make_attention_fn(cfg.attention)
    q = jax.random.normal(jax.random.key(3), (batch, seq_len, H, d), cdt)
    attn_grad = jax.jit(jax.grad(lambda q, k, v: jnp.sum(attend(q, k, v)[0].astype(jnp.float32)), (0, 1, 2)))
    t_attn = L * _best_s(attn_grad, q, q, q, repeats=repeats)
    w = [jax.random.normal(jax.random.key(4 + i), s) for i, s in enumerate(((D, 3 * D), (D, D), (D, F), (F, D)))]

    def gemms(x, wqkv, wo, w1, w2):
        a = mm(mm(x, wqkv).astype(cdt)[:, :D], wo)
        return jnp.sum(a) + jnp.sum(mm(activation(cfg.activation, mm(x, w1).astype(cdt)), w2))

    t_gemms = L * _best_s(jax.jit(jax.grad(gemms, (0, 1, 2, 3, 4))), x, *w, repeats=repeats)

    peak = measured_peak_flops(dtype)
    attn_flops = 3 * 4 * L * H * d * n * keys_per_query(cfg, seq_len, computed=True)  # the causal tiles
    model_flops = flops_per_token(cfg, seq_len) * n  # as MFU counts them: dense attention = the whole matrix
    parts = [  # (name, kind, seconds, model FLOPs)
        ("training step (forward, backward, AdamW)", "total", t_step, model_flops),
        ("forward + backward", "total", t_fwd_bwd, model_flops),
        (f"attention, causal block kernel (x{L})", "matmul", t_attn, attn_flops),
        (f"QKV/out + MLP GEMMs (x{L})", "matmul", t_gemms, 6 * n * L * (3 * D * D + D * D + 2 * D * F)),
        ("LM head + cross-entropy", "matmul", t_head, 6 * n * D * V),
        ("remainder: norms, activations, residuals, embedding", "derived", t_fwd_bwd - t_attn - t_gemms - t_head,
         None),
        ("AdamW update alone (donated)", "part", t_update, None),
    ]
    rows = []
    for name, kind, t, fl in parts:
        r = {"compute_dtype": dtype, "part": name, "kind": kind, "ms": 1e3 * t, "share_of_step": t / t_step,
             "gflop": None if fl is None else fl / 1e9, "gflops_per_s": None if fl is None else fl / t / 1e9,
             "of_peak": None if fl is None else fl / t / peak, "tokens": n, "peak_gflops": peak / 1e9}
        print(r, flush=True)
        rows.append(r)
    return rows


def summary(payload: dict[str, Any]) -> list[str]:
    """Per dtype: the step's MFU, and the MFU it would have if everything but the timed
    matmul parts (attention, GEMMs, LM head) took no time."""
    out = []
    for dtype in dict.fromkeys(r["compute_dtype"] for r in payload["rows"]):
        rows = [r for r in payload["rows"] if r["compute_dtype"] == dtype]
        step = rows[0]  # the whole training step
        matmul_s = sum(r["ms"] for r in rows if r["kind"] == "matmul") / 1e3
        ceiling = step["gflop"] * 1e9 / matmul_s / (step["peak_gflops"] * 1e9)
        out.append(f"- {dtype}: the step runs at {100 * step['of_peak']:.1f}% MFU. Attention, GEMMs and LM head take "
                   f"{1e3 * matmul_s:,.0f} of its {step['ms']:,.0f} ms: with the rest free, it would reach "
                   f"{100 * ceiling:.1f}%.")
    return out


def section(payload: dict[str, Any]) -> str:
    meta = payload["meta"]
    title = "Where the dense step's time goes"
    if meta.get("allocator") == "default":
        title += ": glibc's default allocator"
    lines = [f"## {title}", "",
             f"`{payload.get('command', 'python -m benchmarks.studies.step_parts')}` — {machine_line(payload['machine'])}.", "",
             f"Parts of one training step of the train-step benchmark's dense model at {meta['seq_len']} tokens, "
             f"{meta['batch']} sequences (each part also timed alone, forward + backward):", "",
             markdown_table(payload["rows"], PART_COLUMNS), "", *summary(payload), "",
             "The GEMMs of that step, alone (GFLOP/s; `of_peak`: share of the 1024^3 JAX peak of the dtype; "
             "`jax_bf16_xT`: a weight gradient as `layers.matmul` runs it, on a materialised transpose, the copy "
             "included):", "",
             markdown_table(meta["gemms"], GEMM_COLUMNS)]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--batch", type=int, default=8, help="sequences per step (train_step: 8192 tokens at 1k)")
    p.add_argument("--heads", type=int, default=4, help="as in benchmarks.train_step (4 x 64)")
    p.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"], choices=["bfloat16", "float32"])
    p.add_argument("--repeats", type=int, default=5, help="each time is the best of this many runs")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch GEMM column")
    p.add_argument("--quick", action="store_true",
                   help="tiny shapes: 2 x 256 tokens, float32, 1 repeat; writes NAME_quick.json (a smoke run)")
    p.add_argument("--name", default="step_parts", help="results name (benchmarks/results/studies/NAME.json)")
    p.add_argument("--allocator", choices=["tuned", "default"], default="tuned",
                   help="host allocator of the JAX and PyTorch processes: tuned = the memgpt-jax entry point's "
                        "(memgpt_jax/hostmem.py), default = glibc's")
    p.add_argument("--torch-gemms-json", help=argparse.SUPPRESS)  # internal: the PyTorch child process
    args = p.parse_args(argv)
    if args.allocator == "default":  # the PyTorch child inherits it
        os.environ[ALLOCATOR_ENV] = "default"
    tune_host_allocator()  # as the memgpt-jax entry point (before JAX starts a thread)
    if args.torch_gemms_json:
        spec = json.loads(args.torch_gemms_json)
        print(json.dumps(torch_gemms(spec["gemms"], spec["repeats"])))
        return 0
    if args.quick:
        args.seq_len, args.batch, args.dtypes, args.repeats = 256, 2, ["float32"], 1
    if args.seq_len % 64 or args.batch < 1:
        p.error("--seq-len must be a multiple of 64 and --batch at least 1")

    from memgpt_jax import config as config_lib  # lazy: imports JAX, as above

    rows = []
    for dtype in args.dtypes:
        rows += step_parts(args.seq_len, args.batch, dtype, args.repeats, args.heads)
    cfg = config_lib.small_10m(n_heads=args.heads)
    from benchmarks.train_step import dense_block

    block = dense_block(args.seq_len)
    gemms = gemm_shapes(args.batch * args.seq_len, cfg.d_model, cfg.mlp_dim, cfg.vocab_size, cfg.n_layers,
                        cfg.n_heads, cfg.head_dim, block, args.seq_len)
    from memgpt_jax.flops import measured_peak_flops  # lazy: imports JAX, as above

    for g in gemms:
        for dtype, key in (("bfloat16", "jax_bf16"), ("float32", "jax_f32")):
            g[f"{key}_gflops"] = _jax_gemm_gflops(g, dtype, args.repeats)
            g[f"{key}_of_peak"] = g[f"{key}_gflops"] * 1e9 / measured_peak_flops(dtype)
        if g["layout"] == "TN" and g["batch"] == 1:  # how the model runs it (layers.matmul)
            g["jax_bf16_xT_gflops"] = _jax_gemm_gflops(g, "bfloat16", args.repeats, materialize=True)
        print(g, flush=True)
    if not args.no_torch:
        try:
            import torch  # noqa: F401  (lazy: is the optional torch extra installed?)
        except ImportError:
            print("PyTorch is not installed: no PyTorch column", file=sys.stderr)
        else:
            spec = json.dumps({"gemms": [{k: g[k] for k in ("layout", "batch", "m", "k", "n")} for g in gemms],
                               "repeats": args.repeats})
            out = subprocess.run([sys.executable, "-m", "benchmarks.studies.step_parts", "--torch-gemms-json", spec],
                                 capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
            if out.returncode != 0:
                raise RuntimeError(f"the PyTorch GEMM process failed:\n{out.stderr[-2000:]}")
            for g, t in zip(gemms, json.loads(out.stdout.strip().splitlines()[-1])):
                g.update(t)
    meta = {**vars(args), "gemms": gemms, "tokens": args.batch * args.seq_len, "allocator": allocator_setting()}
    meta.pop("torch_gemms_json")
    path = write_results(f"{args.name}_quick" if args.quick else args.name, rows, PART_COLUMNS, meta,
                         directory=STUDIES_DIR)
    print(section(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
