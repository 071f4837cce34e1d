"""Training-step throughput and MFU of dense and block-sparse ~10M-parameter models.

    python -m benchmarks.train_step                         # seq 512 and 2048, dense and sparse
    python -m benchmarks.train_step --seq-lens 1024 4096 --tokens-per-step 8192

MFU = model FLOPs per token (memgpt_jax.flops: 6N + attention over computed blocks)
x tokens/s / the matmul peak measured on this machine in the same run
(memgpt_jax.flops.measured_peak_flops, f32 and bf16-in/f32-accumulate).
"""

from __future__ import annotations

import argparse

from benchmarks.common import markdown_table, time_fn, write_results

COLUMNS = ["attention", "seq_len", "batch", "compute_dtype", "params", "step_ms", "compile_s", "tokens_per_s",
           "tflops_per_s", "peak_tflops", "mfu"]


def sparse_attention(seq_len: int) -> dict:
    """Causal window + global: 3 blocks back, 1 global block, block 128 (64 below 1k)."""
    block = 128 if seq_len >= 1024 else 64
    return dict(pattern="window_global", block_size=block, window=3, n_global=1)


def bench(attention: str, seq_len: int, tokens: int, dtype: str, repeats: int) -> dict:
    import jax
    import numpy as np

    from memgpt_jax import config as config_lib
    from memgpt_jax import model as model_lib
    from memgpt_jax.flops import count_params, flops_per_token, measured_peak_flops
    from memgpt_jax.training.optim import make_optimizer
    from memgpt_jax.training.state import TrainState
    from memgpt_jax.training.steps import make_loss_fn, make_train_step

    attn = dict(pattern="dense") if attention == "dense" else sparse_attention(seq_len)
    cfg = config_lib.small_10m(max_len=seq_len, compute_dtype=dtype).replace(attention=attn)
    model = model_lib.build(cfg)
    params, _ = model_lib.init(model, jax.random.key(0))
    tx, schedule = make_optimizer(dict(lr=1e-4, warmup_steps=0), 100)
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

    t = time_fn(run, repeats=repeats)
    tps = batch_size * seq_len / t["median_s"]
    achieved = flops_per_token(cfg, seq_len) * tps
    peak = measured_peak_flops("bfloat16" if dtype == "bfloat16" else "float32")
    row = {
        "attention": "dense" if attention == "dense" else f"window_global(b{attn['block_size']})",
        "seq_len": seq_len, "batch": batch_size, "compute_dtype": dtype, "params": count_params(params),
        "step_ms": t["median_s"] * 1e3, "compile_s": t["compile_s"], "tokens_per_s": tps,
        "tflops_per_s": achieved / 1e12, "peak_tflops": peak / 1e12, "mfu": achieved / peak,
    }
    print(row, flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seq-lens", type=int, nargs="+", default=[512, 2048])
    p.add_argument("--attention", nargs="+", default=["dense", "sparse"], choices=["dense", "sparse"])
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--tokens-per-step", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--name", default="train_step")
    args = p.parse_args()
    rows = [bench(a, s, args.tokens_per_step, d, args.repeats)
            for s in args.seq_lens for a in args.attention for d in args.dtypes]
    write_results(args.name, rows, COLUMNS, vars(args))
    print(markdown_table(rows, COLUMNS))


if __name__ == "__main__":
    main()
