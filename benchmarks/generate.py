"""Generation speed: KV-cache decoding vs recomputing the full forward pass, and vs
Hugging Face GPT-2 ``generate`` in PyTorch on the same weights, side by side.

    python -m benchmarks.generate --sparse              # small_10m (random init), 16-token prompt, 512 new tokens
    python -m benchmarks.generate --checkpoint runs/shakespeare_small --new-tokens 256
    python -m benchmarks.generate --preset tiny --new-tokens 32      # a quick check

Rows (batch 1, greedy, float32, after one warm-up run each):

- ``jax kv-cache``: ``memgpt_jax.apps.generate.Generator`` (jitted prefill, then
  ``lax.scan`` chunks of ``--chunk`` steps; the host only checks for EOS between chunks);
- ``jax kv-cache (chunk 1)``: the same, one compiled call per token (the streaming mode);
- ``jax recompute``: the jitted full forward over the whole (fixed-size) sequence for
  every new token, as decoding without a cache does;
- ``hf generate (torch)``: the model exported with ``memgpt-jax export --format hf-gpt2``,
  loaded by ``transformers.GPT2LMHeadModel`` and run with ``generate(do_sample=False,
  use_cache=True)`` on this CPU with ``torch.get_num_threads()`` threads.

Also reports how many greedy tokens JAX and PyTorch agree on. Writes
``benchmarks/results/generate.{json,md}`` and rebuilds RESULTS.md (``benchmarks.report``).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from benchmarks.common import machine_line, markdown_table, rebuild_results_md, write_results

COLUMNS = ["method", "new_tokens", "seconds", "tokens_per_s", "speedup_vs_recompute", "ms_per_token"]


def _jax_model(args):
    import jax  # lazy: the report imports this module for section() without JAX

    from memgpt_jax import config as config_lib
    from memgpt_jax import model as model_lib

    if args.checkpoint:
        from memgpt_jax.training.run import open_run  # lazy: only with --checkpoint (loads Orbax)

        run = open_run(args.checkpoint, task="lm")
        return run.model, jax.tree.map(np.asarray, run.params), run.model_config, args.checkpoint
    cfg = {"tiny": config_lib.tiny, "10m": config_lib.small_10m}[args.preset]()
    model = model_lib.build(cfg)
    params, _ = model_lib.init(model, jax.random.key(0))
    return model, jax.tree.map(np.asarray, params), cfg, f"{args.preset} (random init, seed 0)"


def _timed(fn, repeats: int = 1):
    fn()  # warm-up: compiles
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def run(args) -> tuple[list[dict], dict]:
    import jax  # lazy: the report imports this module for section() without JAX
    import jax.numpy as jnp

    from memgpt_jax import model as model_lib
    from memgpt_jax.apps.generate import Generator
    from memgpt_jax.flops import count_params

    model, params, cfg, source = _jax_model(args)
    n, P = args.new_tokens, args.prompt_len
    if P + n > cfg.max_len:
        raise SystemExit(f"prompt {P} + new tokens {n} exceed the model's max_len {cfg.max_len}")
    rng = np.random.default_rng(0)
    prompt = [1] + rng.integers(5, cfg.vocab_size, P - 1).tolist()
    never = cfg.vocab_size + 1  # no EOS: every method decodes exactly n tokens
    rows = []

    gen = Generator(model, params, eos_id=never, chunk=args.chunk, prompt_bucket=1)
    t_kv, ids = _timed(lambda: gen.generate_ids([prompt], max_new_tokens=n)[0][0], args.repeats)
    gen1 = Generator(model, params, eos_id=never, chunk=1, prompt_bucket=1)
    t_kv1, ids1 = _timed(lambda: gen1.generate_ids([prompt], max_new_tokens=n)[0][0], args.repeats)
    assert ids1 == ids

    width = P + n
    fwd = jax.jit(lambda p, x, t: jnp.argmax(model.apply({"params": p}, x).logits[0, t]))

    def recompute():
        buf = np.zeros((1, width), np.int32)
        buf[0, :P] = prompt
        for t in range(P, P + n):
            buf[0, t] = int(fwd(params, buf, t - 1))
        return buf[0, P:].tolist()

    t_re, ids_re = _timed(recompute)
    same_re = int(np.sum(np.asarray(ids_re) == np.asarray(ids)))

    def row(method, seconds):
        return {"method": method, "new_tokens": n, "seconds": seconds, "tokens_per_s": n / seconds,
                "speedup_vs_recompute": t_re / seconds, "ms_per_token": 1e3 * seconds / n}

    rows += [row(f"jax kv-cache (chunk {args.chunk})", t_kv), row("jax kv-cache (chunk 1)", t_kv1),
             row("jax recompute", t_re)]
    meta = {"model": source, "params": count_params(params), "prompt_tokens": P, "batch": 1,
            "attention": cfg.attention.pattern, "recompute_tokens_equal_kv": same_re}

    if args.sparse and not args.checkpoint:  # the same model with block-sparse attention (block 64)
        scfg = cfg.replace(attention=dict(pattern="window_global", block_size=64, window=2, n_global=1))
        smodel = model_lib.build(scfg)
        sgen = Generator(smodel, params, eos_id=never, chunk=args.chunk, prompt_bucket=1)
        t_s, _ = _timed(lambda: sgen.generate_ids([prompt], max_new_tokens=n)[0][0], args.repeats)
        rows.append(row(f"jax kv-cache (chunk {args.chunk}), window_global b64", t_s))
        meta["sparse_attention"] = "window_global(block 64, window 2, 1 global)"

    if not args.no_torch and cfg.is_gpt2_compatible:
        import torch  # lazy: the torch extra (torch, transformers) is optional
        import transformers

        from memgpt_jax.export.hf_gpt2 import export_hf_gpt2  # lazy: needs the torch extra

        with tempfile.TemporaryDirectory() as tmp:
            path = export_hf_gpt2(jax.device_get(params), cfg, "lm", f"{tmp}/hf")
            hf = transformers.GPT2LMHeadModel.from_pretrained(path).eval()
        x = torch.tensor([prompt])
        kwargs = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True, num_beams=1,
                      pad_token_id=0, eos_token_id=None, attention_mask=torch.ones_like(x))
        with torch.inference_mode():
            t_hf, out = _timed(lambda: hf.generate(x, **kwargs)[0, P:].tolist(), args.repeats)
        rows.append(row("hf generate (torch)", t_hf))
        agree = 0
        for a, b in zip(out, ids):
            if a != b:
                break
            agree += 1
        meta.update(torch=torch.__version__, transformers=transformers.__version__,
                    torch_threads=torch.get_num_threads(), greedy_prefix_agreement=agree)
    return rows, meta


def section(payload: dict) -> str:
    """The RESULTS.md section, from ``results/generate.json``."""
    rows, meta = payload["rows"], payload["meta"]
    kv = rows[0]
    hf = next((r for r in rows if r["method"].startswith("hf")), None)
    lines = [
        "## Generation: KV cache vs recompute vs Hugging Face", "",
        f"`{payload.get('command', 'python -m benchmarks.generate')}` — {machine_line(payload['machine'])}.",
        f"Model: {meta['model']}, {meta['params']:,} parameters, {meta['attention']} attention; batch 1, "
        f"{meta['prompt_tokens']}-token prompt, greedy, float32, best of the timed runs after a warm-up. "
        "All rows come from one run.", "",
        markdown_table(rows, payload.get("columns") or COLUMNS), "",
        f"KV cache vs recompute: **{kv['speedup_vs_recompute']:.1f}x**; recompute and KV cache pick the same "
        f"token at {meta['recompute_tokens_equal_kv']}/{kv['new_tokens']} steps.",
    ]
    if hf:
        lines.append(f"KV cache vs Hugging Face `generate` on the exported weights: **{hf['seconds'] / kv['seconds']:.2f}x** "
                     f"(torch {meta['torch']}, transformers {meta['transformers']}, {meta['torch_threads']} threads); "
                     f"the two greedy outputs agree on the first {meta['greedy_prefix_agreement']} tokens.")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=("tiny", "10m"), default="10m")
    p.add_argument("--checkpoint", default=None, help="a trained LM run instead of a random preset")
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=512)
    p.add_argument("--chunk", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--sparse", action="store_true", help="add a row for the same weights with block-sparse attention")
    p.add_argument("--no-results-md", action="store_true", help="do not rebuild RESULTS.md")
    args = p.parse_args(argv)
    rows, meta = run(args)
    print(markdown_table(rows, COLUMNS))
    print({k: v for k, v in meta.items()})
    write_results("generate", rows, COLUMNS, meta)
    if not args.no_results_md:
        rebuild_results_md()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
