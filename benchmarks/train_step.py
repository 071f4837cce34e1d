"""Training-step throughput and MFU of dense and block-sparse ~10M-parameter models,
side by side with the same models exported to PyTorch.

    python -m benchmarks.train_step                         # seq 512 and 2048, dense and sparse
    python -m benchmarks.train_step --seq-lens 1024 4096 --tokens-per-step 8192
    python -m benchmarks.train_step --seq-lens 1024 --torch eager compile    # + PyTorch peers
    python -m benchmarks.train_step --seq-lens 4096 8192 --attention sparse --flex   # + FlexAttention, forward
    python -m benchmarks.train_step --seq-lens 1024 2048 4096 8192 --dtypes bfloat16 \
        --attention dense_fused sparse --name train_step_gpu      # on a GPU: cuDNN dense vs Pallas sparse

PyTorch peers (``--torch``): the JAX model's initial parameters exported with
``memgpt_jax.export`` and trained by ``benchmarks/torch_train_step.py`` in a
separate process (SDPA attention; the layout's token mask for block-sparse models),
eager and/or ``torch.compile``, same batch, sequence length and dtype.

Both sides run with the host allocator the ``memgpt-jax`` entry point uses
(``memgpt_jax/hostmem.py``; ``--allocator capped`` for its earlier setting, ``default`` for glibc's,
both sides alike). ``--attention none`` is a diagnostic on both sides: the attention's output
is V itself, everything else of the step unchanged (the floor no attention kernel goes under;
MFU counts the matmuls alone). JAX rows count the page faults of one step (``faults_per_step``: fresh memory
the kernel zero-fills), PyTorch rows those of its timed steps.

MFU = model FLOPs per token (memgpt_jax.flops: 6N + attention over computed blocks)
x tokens/s / the matmul peak measured on this machine in the same run
(memgpt_jax.flops.measured_peak_flops, f32 and bf16-in/f32-accumulate).
"""

from __future__ import annotations

import argparse
import resource
from types import SimpleNamespace

from benchmarks.common import markdown_table, rebuild_results_md, time_fn, write_results

COLUMNS = ["framework", "pass", "attention", "seq_len", "batch", "heads", "compute_dtype", "params", "step_ms",
           "compile_s", "tokens_per_s", "tflops_per_s", "peak_tflops", "mfu", "faults_per_step"]


def sparse_attention(seq_len: int) -> dict:
    """Causal window + global: 3 blocks back, 1 global block, block 128 (64 below 1k)."""
    block = 128 if seq_len >= 1024 else 64
    return dict(pattern="window_global", block_size=block, window=3, n_global=1)


def dense_block(seq_len: int) -> int:
    """The causal block kernel's tile of the ``dense_blocked`` rows: on CPU what ``impl="auto"``
    runs (``memgpt_jax.attention.dense_cpu_tile``), on accelerators the Pallas kernels' 128."""
    import jax

    from memgpt_jax.attention import dense_cpu_tile

    if jax.default_backend() == "cpu":
        return dense_cpu_tile(seq_len) or 64
    return 128 if seq_len >= 1024 else 64


def no_attention(q, k, v, **_):
    """The ``none`` rows' attention: its output is V (heads repeated for grouped KV), no weights.
    The step without attention's cost: the floor that no attention kernel can go under."""
    import jax.numpy as jnp

    return jnp.repeat(v, q.shape[2] // v.shape[2], axis=2), None


def lm_train_step(attention: str, seq_len: int, tokens: int, dtype: str, heads: int = 4) -> SimpleNamespace:
    """The benchmark's jitted LM training step on a fixed random batch, ready to call.

    ``run()`` takes one step (the state is donated and kept in ``holder``) and returns the loss;
    also returned: ``step`` (the jitted step itself), ``cfg``, ``attn``, ``model``, ``host_params`` (the initial parameters on the
    host), ``batch``, ``batch_size``, ``key``."""
    import jax
    import numpy as np

    from memgpt_jax import config as config_lib
    from memgpt_jax import model as model_lib
    from memgpt_jax.run_config import OptimConfig
    from memgpt_jax.training.optim import make_optimizer
    from memgpt_jax.training.state import TrainState
    from memgpt_jax.training.steps import make_loss_fn, make_train_step

    if attention == "dense":
        attn = dict(pattern="dense", impl="reference")  # the oracle: the whole score matrix
    elif attention == "dense_fused":  # jax.nn.dot_product_attention: cuDNN flash attention on NVIDIA GPUs
        attn = dict(pattern="dense", impl="fused")
    elif attention == "dense_blocked":  # the same result through the block kernel on the causal layout
        attn = dict(pattern="dense", impl="xla", block_size=dense_block(seq_len))
    elif attention == "none":  # diagnostic: the attention's output is V (everything else of the step stays)
        attn = dict(pattern="dense", impl="reference")
    else:
        attn = sparse_attention(seq_len)
    cfg = config_lib.small_10m(max_len=seq_len, compute_dtype=dtype, n_heads=heads).replace(attention=attn)
    model = model_lib.build(cfg, attention_fn=no_attention if attention == "none" else None)
    params, _ = model_lib.init(model, jax.random.key(0))
    host_params = jax.tree.map(np.asarray, params)  # the step donates its state
    tx, schedule = make_optimizer(OptimConfig(lr=1e-4, warmup_steps=0), 100)
    step = jax.jit(make_train_step(make_loss_fn("lm", model), tx, schedule), donate_argnums=(0,))
    batch_size = max(tokens // seq_len, 1)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, cfg.vocab_size, (batch_size, seq_len + 1), dtype=np.int32)
    batch = {"inputs": ids[:, :-1], "targets": ids[:, 1:], "loss_mask": np.ones((batch_size, seq_len), bool)}
    holder = {"state": TrainState.create(params, tx)}
    key = jax.random.key(1)

    def run():
        holder["state"], metrics = step(holder["state"], batch, key)
        return metrics["loss"]

    return SimpleNamespace(run=run, step=step, holder=holder, cfg=cfg, attn=attn, model=model,
                           host_params=host_params, batch=batch, batch_size=batch_size, key=key)


def bench(attention: str, seq_len: int, tokens: int, dtype: str, repeats: int,
          torch_modes: tuple[str, ...] = (), heads: int = 4, flex: bool = False) -> list[dict]:
    import jax

    from memgpt_jax.attention.reference import fused_uses_cudnn
    from memgpt_jax.flops import count_params, flops_per_token, matmul_params, measured_peak_flops
    from memgpt_jax.training.steps import make_loss_fn

    lm = lm_train_step(attention, seq_len, tokens, dtype, heads)
    run, holder, cfg, attn, model = lm.run, lm.holder, lm.cfg, lm.attn, lm.model
    host_params, batch, batch_size, key = lm.host_params, lm.batch, lm.batch_size, lm.key

    t = time_fn(run, repeats=repeats)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    jax.block_until_ready(run())  # one more step: the page faults it takes (fresh memory the kernel zero-fills)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    peak = measured_peak_flops("bfloat16" if dtype == "bfloat16" else "float32")
    name = {"dense": "dense", "dense_fused": "dense(fused)", "dense_blocked": f"dense(blocked b{attn.get('block_size')})",
            "sparse": f"window_global(b{attn.get('block_size')})", "none": "none (output = V)"}[attention]
    fpt = flops_per_token(cfg, seq_len)  # MFU accounting: dense attention counts the whole score matrix
    if attention == "none":  # no attention FLOPs: the matmuls alone (forward 2N, step 6N)
        fpt = 6 * matmul_params(cfg)
    # What each implementation computes: the causal block kernels (and cuDNN) skip the upper triangle.
    skips_upper = attention == "dense_blocked" or (attention == "dense_fused" and fused_uses_cudnn(dtype))
    computed = fpt if attention == "none" else flops_per_token(
        cfg.replace(attention=dict(pattern="dense", impl="xla", block_size=attn.get("block_size", 128)))
        if skips_upper else cfg, seq_len, computed=True)

    def row(framework: str, step_s: float, compile_s: float, forward: bool = False,
            faults: float | None = None) -> dict:
        tps = batch_size * seq_len / step_s
        label = name if framework == "jax" or attention == "none" else (
            "dense(SDPA causal)" if attention.startswith("dense") else
            f"{name}(compiled FlexAttention, BlockMask)" if forward else f"{name}(SDPA token mask)")
        # A forward is a third of a step's model FLOPs (MFU accounting: 2N + attention of 6N + attention).
        f_tok, c_tok = (fpt / 3, computed / 3) if forward else (fpt, computed)
        r = {"framework": framework, "pass": "forward" if forward else "step", "attention": label,
             "seq_len": seq_len, "batch": batch_size,
             "heads": f"{cfg.n_heads}x{cfg.head_dim}", "compute_dtype": dtype,
             "params": count_params(host_params), "step_ms": step_s * 1e3,
             "compile_s": compile_s, "tokens_per_s": tps, "tflops_per_s": f_tok * tps / 1e12,
             "peak_tflops": peak / 1e12, "mfu": f_tok * tps / peak,
             "computed_gflops_per_token": (c_tok if framework == "jax" or forward else f_tok) / 1e9,
             "faults_per_step": faults}
        print(r, flush=True)
        return r

    rows = [row("jax", t["median_s"], t["compile_s"], faults=faults)]
    holder.clear()  # free the JAX train state before the PyTorch peers run
    flex = flex and attention == "sparse"
    if flex:  # FlexAttention has no CPU backward: the fair sparse peer is timed forward only, against ours
        forward = jax.jit(lambda p, b: make_loss_fn("lm", model)({"params": p, "aux": {}}, b, key, None)[0])
        dev_params = jax.device_put(host_params)
        tf = time_fn(lambda: forward(dev_params, batch), repeats=repeats)
        rows.append(row("jax", tf["median_s"], tf["compile_s"], forward=True))
    if torch_modes or flex:
        import os
        import tempfile

        from memgpt_jax.export.torch_format import export_torch

        with tempfile.TemporaryDirectory() as tmp:  # one export serves every mode
            export_torch(host_params, cfg, "lm", os.path.join(tmp, "model"))
            for mode in torch_modes:
                step_s, compile_s, peer_faults = _torch_peer(os.path.join(tmp, "model"), mode, seq_len, batch_size,
                                                             dtype, repeats, none=attention == "none")
                rows.append(row(f"torch {mode}", step_s, compile_s, faults=peer_faults))
            if flex:
                step_s, compile_s, _ = _torch_peer(os.path.join(tmp, "model"), "eager", seq_len, batch_size, dtype,
                                                   repeats, flex=True)
                rows.append(row("torch eager", step_s, compile_s, forward=True))
    return rows


def _torch_peer(export_dir: str, mode: str, seq_len: int, batch: int, dtype: str, repeats: int,
                flex: bool = False, none: bool = False) -> tuple[float, float, float | None]:
    import json
    import os
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_train_step.py")
    from memgpt_jax.hostmem import ENV, allocator_setting

    env = {**os.environ, ENV: allocator_setting()}  # the same as ours
    out = subprocess.run([sys.executable, script, "--export", export_dir, "--seq-len", str(seq_len), "--batch",
                          str(batch), "--mode", mode, "--dtype", dtype, "--repeats", str(repeats),
                          *(("--attention-impl", "flex", "--forward-only") if flex else ()),
                          *(("--attention-impl", "none") if none else ())],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"torch peer failed:\n{out.stderr[-2000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return res["step_s"], res["compile_s"], res.get("faults_per_step")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seq-lens", type=int, nargs="+", default=[512, 2048])
    p.add_argument("--attention", nargs="+", default=["dense", "dense_blocked", "sparse"],
                   choices=["dense", "dense_fused", "dense_blocked", "sparse", "none"],
                   help="dense = the oracle; dense_fused = jax.nn.dot_product_attention (cuDNN on NVIDIA GPUs); "
                        "dense_blocked = dense attention through the causal-layout block kernel; sparse = "
                        "window_global through the block kernels (Pallas on GPU/TPU); none = a diagnostic on "
                        "both sides, the attention's output is V: the step's floor without attention")
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--tokens-per-step", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--max-oracle-len", type=int, default=2048,
                   help="skip the dense oracle (whole score matrix in memory) above this length")
    p.add_argument("--max-f32-len", type=int, default=0,
                   help="float32 rows only up to this length (0: every length)")
    p.add_argument("--heads", type=int, default=4,
                   help="attention heads of the d_model-256 model (4 = head_dim 64, GPT-2's; 8 = head_dim 32)")
    p.add_argument("--name", default="train_step")
    p.add_argument("--torch", nargs="*", default=[], choices=["eager", "compile"],
                   help="also time the PyTorch peer (eager and/or torch.compile)")
    p.add_argument("--flex", action="store_true",
                   help="block-sparse rows also get the forward-only pair: ours vs the exported model with "
                        "FlexAttention (compiled) and the layout's BlockMask (no CPU backward in torch)")
    p.add_argument("--allocator", choices=["tuned", "capped", "default"], default="tuned",
                   help="host allocator of both sides (memgpt_jax/hostmem.py): tuned = the memgpt-jax entry point's, "
                        "capped = its earlier setting (heap up to 1 GiB), default = glibc's")
    args = p.parse_args()
    import os

    from memgpt_jax.hostmem import ENV, tune_host_allocator

    os.environ[ENV] = args.allocator
    tune_host_allocator()  # before JAX starts a thread
    rows, peers_done = [], set()
    for s in args.seq_lens:
        for a in args.attention:
            if a == "dense" and s > args.max_oracle_len:
                continue
            for d in args.dtypes:
                if d == "float32" and args.max_f32_len and s > args.max_f32_len:
                    continue
                # Every dense variant exports to the same PyTorch model (SDPA, is_causal): time its peers once.
                peer = (s, d, "dense" if a.startswith("dense") else a)
                modes = () if peer in peers_done else tuple(args.torch)
                peers_done.add(peer)
                rows += bench(a, s, args.tokens_per_step, d, args.repeats, modes, args.heads, args.flex)
                write_results(args.name, rows, COLUMNS, {**vars(args), "partial": True})  # kept if interrupted
    write_results(args.name, rows, COLUMNS, vars(args))
    rebuild_results_md()
    print(markdown_table(rows, COLUMNS))


if __name__ == "__main__":
    main()
