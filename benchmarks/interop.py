"""Interoperability figures: logit parity and export/import wall time, ~10M parameters.

    python -m benchmarks.interop                         # small_10m, batch 2 x 512, 32 greedy tokens
    python -m benchmarks.interop --preset tiny --seq-len 64 --new-tokens 8   # a quick check

For a dense model (``torch`` and ``hf-gpt2`` formats) and a block-sparse one
(``window_global``, block 128; ``torch`` only) with randomly initialised weights
(``model.init``, seed 0), saved as an Orbax checkpoint: the time to export the
checkpoint (restore + convert + write), to import the directory back into our
parameters, and to load it as a PyTorch module; the largest absolute difference
between JAX and PyTorch float32 logits on random tokens; greedy tokens that
match (PyTorch KV cache vs JAX KV cache); and whether JAX -> files -> JAX is
bit-exact. Writes ``benchmarks/results/interop.{json,md}``.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from benchmarks.common import markdown_table, rebuild_results_md, time_fn, write_results

COLUMNS = ["model", "format", "params", "seq_len", "export_s", "import_s", "torch_load_s",
           "max_abs_logit_diff", "max_abs_logit", "greedy_match", "round_trip_exact"]


def _timed(fn, repeats: int) -> tuple[float, object]:
    """Median wall seconds of ``fn()`` over ``repeats`` runs after one warm-up, and its last result."""
    box = {}

    def call():
        box["out"] = fn()
        return []

    return time_fn(call, repeats=repeats)["median_s"], box["out"]


def _greedy_jax(model_lib, model, params, prompt, n):
    import jax
    import jax.numpy as jnp

    step = jax.jit(lambda p, c, x: model_lib.decode_step(model, p, c, x))
    out, cache = step(params, model_lib.init_cache(model, prompt.shape[0], length=prompt.shape[1] + n), prompt)
    tokens = [jnp.argmax(out.logits[:, -1], -1)]
    for _ in range(n - 1):
        out, cache = step(params, cache, tokens[-1][:, None])
        tokens.append(jnp.argmax(out.logits[:, -1], -1))
    return np.stack([np.asarray(t) for t in tokens], 1)


def run(preset: str, batch: int, seq_len: int, new_tokens: int, repeats: int, workdir: str) -> list[dict]:
    import jax
    import torch
    import transformers

    from memgpt_jax import config as config_lib
    from memgpt_jax import model as model_lib
    from memgpt_jax.cli.export import export_checkpoint
    from memgpt_jax.export import hf_gpt2, mapping, torch_format
    from memgpt_jax.export.torch_model import TorchGPT
    from memgpt_jax.flops import count_params
    from memgpt_jax.training.checkpoint import save_params

    base = {"tiny": config_lib.tiny, "10m": config_lib.small_10m}[preset]()
    block = 16 if preset == "tiny" else 128
    variants = {
        "dense": (base, ("torch", "hf-gpt2")),
        "window_global": (base.replace(attention=dict(pattern="window_global", block_size=block, window=1)), ("torch",)),
    }
    rng = np.random.default_rng(0)
    ids = rng.integers(0, base.vocab_size, (batch, seq_len)).astype(np.int32)
    prompt = ids[:1, : min(16, seq_len)]
    rows = []
    for name, (cfg, formats) in variants.items():
        model = model_lib.build(cfg)
        params, _ = model_lib.init(model, jax.random.key(0))
        params = jax.tree.map(np.asarray, params)
        run_dir = f"{workdir}/{name}-run"
        save_params(run_dir, params, {"config": {"task": "lm", "model": cfg.to_dict()}})
        ours = np.asarray(jax.jit(lambda p, x: model.apply({"params": p}, x).logits)(params, ids))
        ours_greedy = _greedy_jax(model_lib, model, params, prompt, new_tokens)
        for fmt in formats:
            out = f"{workdir}/{name}-{fmt}"
            export_s, _ = _timed(lambda: export_checkpoint(run_dir, out, fmt, overwrite=True), repeats)
            if fmt == "torch":
                import_s, (_, _, back) = _timed(lambda: torch_format.import_torch(out), repeats)
                load_s, tm = _timed(lambda: TorchGPT.from_pretrained(out), repeats)
                with torch.no_grad():
                    theirs = tm(torch.from_numpy(ids).long()).logits.numpy()
                greedy = tm.generate(torch.from_numpy(prompt).long(), new_tokens).numpy()
            else:
                import_s, (_, back) = _timed(lambda: hf_gpt2.import_hf_gpt2(out), repeats)
                load_s, hm = _timed(lambda: transformers.GPT2LMHeadModel.from_pretrained(out).eval(), repeats)
                with torch.no_grad():
                    theirs = hm(torch.from_numpy(ids).long()).logits.numpy()
                    greedy = hm.generate(torch.from_numpy(prompt).long(), max_new_tokens=new_tokens,
                                         do_sample=False, pad_token_id=cfg.pad_id)[:, prompt.shape[1]:].numpy()
            fa, fb = mapping.flatten(params), mapping.flatten(back)
            exact = fa.keys() == fb.keys() and all(np.array_equal(fa[k], fb[k]) for k in fa)
            rows.append({
                "model": f"{preset} {name}", "format": fmt, "params": count_params(params), "seq_len": seq_len,
                "export_s": export_s, "import_s": import_s, "torch_load_s": load_s,
                "max_abs_logit_diff": float(np.abs(theirs - ours).max()), "max_abs_logit": float(np.abs(ours).max()),
                "greedy_match": f"{int((greedy == ours_greedy).sum())}/{ours_greedy.size}",
                "round_trip_exact": exact,
            })
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=("tiny", "10m"), default="10m")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        rows = run(args.preset, args.batch, args.seq_len, args.new_tokens, args.repeats, workdir)
    name = "interop" if args.preset == "10m" else f"interop_{args.preset}"
    write_results(name, rows, COLUMNS, {**vars(args), "wall_s": time.perf_counter() - t0})
    rebuild_results_md()
    print(markdown_table(rows, COLUMNS))


if __name__ == "__main__":
    main()
