"""Forward-pass throughput of the model (tokens/s), f32 and bf16 compute.

    python -m benchmarks.forward                      # ~10M-parameter config, seq 512
    python -m benchmarks.forward --preset tiny --seq-len 128 --batch 2
"""

from __future__ import annotations

import argparse

from benchmarks.common import markdown_table, rebuild_results_md, time_fn, write_results

COLUMNS = ["preset", "params", "compute_dtype", "batch", "seq_len", "median_ms", "compile_s", "tokens_per_s"]


def run(preset: str, batch: int, seq_len: int, repeats: int) -> list[dict]:
    import jax

    from memgpt_jax import config as config_lib
    from memgpt_jax import model as model_lib
    from memgpt_jax.flops import count_params

    base = {"tiny": config_lib.tiny, "10m": config_lib.small_10m}[preset]()
    rows = []
    for dtype in ("float32", "bfloat16"):
        cfg = base.replace(compute_dtype=dtype, max_len=max(base.max_len, seq_len))
        model = model_lib.build(cfg)
        params, _ = model_lib.init(model, jax.random.key(0))
        ids = jax.random.randint(jax.random.key(1), (batch, seq_len), 0, cfg.vocab_size)
        forward = jax.jit(lambda p, x: model.apply({"params": p}, x).logits)
        t = time_fn(lambda: forward(params, ids), repeats=repeats)
        rows.append({
            "preset": preset, "params": count_params(params), "compute_dtype": dtype, "batch": batch,
            "seq_len": seq_len, "median_ms": t["median_s"] * 1e3, "compile_s": t["compile_s"],
            "tokens_per_s": batch * seq_len / t["median_s"],
        })
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=("tiny", "10m"), default="10m")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    rows = run(args.preset, args.batch, args.seq_len, args.repeats)
    write_results("forward", rows, COLUMNS, vars(args))
    rebuild_results_md()
    print(markdown_table(rows, COLUMNS))


if __name__ == "__main__":
    main()
