"""The ``memgpt-jax`` console entry point.

Each command lives in the module that owns the work; this file only wires
them into one ``argparse`` parser. Heavy imports (JAX) happen inside commands,
so ``memgpt-jax --help`` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import time
from typing import Callable, Sequence

# Modules that contribute commands through ``register(subparsers)``.
_COMMAND_MODULES = (
    "memgpt_jax.data.cli",
    "memgpt_jax.training.cli",
    "memgpt_jax.compress.cli",
    "memgpt_jax.export.cli",
    "memgpt_jax.apps.cli",
)


def _model_config_from_args(args: argparse.Namespace):
    from memgpt_jax import config as config_lib

    presets: dict[str, Callable[..., config_lib.ModelConfig]] = {
        "tiny": config_lib.tiny,
        "10m": config_lib.small_10m,
        "gpt2": config_lib.gpt2_small,
    }
    cfg = presets[args.preset]()
    overrides = {}
    for item in args.set or []:
        key, _, value = item.partition("=")
        if not _:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        overrides[key] = _parse_value(value)
    attention = {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("attention.")}
    plain = {k: v for k, v in overrides.items() if not k.startswith("attention.")}
    try:
        if attention:
            plain["attention"] = attention
        return cfg.replace(**plain)
    except (TypeError, ValueError) as e:
        raise SystemExit(f"invalid model configuration: {e}") from None


def _parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text.lower() == "none":
        return None
    return text


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=("tiny", "10m", "gpt2"), default="tiny",
                   help="model size preset: tiny (tests), 10m (~10M params), gpt2 (GPT-2 small)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a ModelConfig field, e.g. --set n_layers=4 --set attention.pattern=local")


def cmd_info(args: argparse.Namespace) -> int:
    from memgpt_jax.flops import count_params, flops_per_token

    cfg = _model_config_from_args(args)
    print(cfg.to_json())
    seq = args.seq_len or cfg.max_len
    print(f"parameters: {count_params(cfg):,}")
    print(f"training FLOPs/token at seq {seq}: {flops_per_token(cfg, seq):.4g}")
    print(f"GPT-2 compatible (exportable to Hugging Face): {cfg.is_gpt2_compatible}")
    return 0


def cmd_smoke(args: argparse.Namespace) -> int:
    """Forward pass and KV-cache greedy generation with a randomly initialised model."""
    import jax
    import jax.numpy as jnp

    from memgpt_jax import model as model_lib
    from memgpt_jax.flops import count_params

    cfg = _model_config_from_args(args)
    model = model_lib.build(cfg)
    params, _ = model_lib.init(model, jax.random.key(args.seed))
    print(f"model: {count_params(params):,} parameters, {cfg.n_layers} layers, width {cfg.d_model}, "
          f"compute {cfg.compute_dtype}, attention {cfg.attention.pattern}")
    B, T = args.batch, min(args.seq_len or 128, cfg.max_len)
    ids = jax.random.randint(jax.random.key(args.seed + 1), (B, T), 0, cfg.vocab_size)
    forward = jax.jit(lambda p, x: model.apply({"params": p}, x).logits)
    t0 = time.perf_counter()
    forward(params, ids).block_until_ready()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    n = 5
    for _ in range(n):
        logits = forward(params, ids)
    logits.block_until_ready()
    dt = (time.perf_counter() - t0) / n
    print(f"forward [{B}x{T}]: compile {compile_s:.2f}s, {dt * 1e3:.1f} ms/step, {B * T / dt:,.0f} tokens/s, "
          f"finite={bool(jnp.isfinite(logits).all())}")

    new = min(args.new_tokens, cfg.max_len - 8)
    step = jax.jit(lambda p, c, x: model_lib.decode_step(model, p, c, x))
    cache = model_lib.init_cache(model, B, length=8 + new)
    out, cache = step(params, cache, ids[:, :8])
    tokens = [jnp.argmax(out.logits[:, -1], axis=-1)]
    out, cache = step(params, cache, tokens[-1][:, None])  # compiles the one-token step
    tokens.append(jnp.argmax(out.logits[:, -1], axis=-1))
    jax.block_until_ready(tokens[-1])
    t0 = time.perf_counter()
    for _ in range(new - 2):
        out, cache = step(params, cache, tokens[-1][:, None])
        tokens.append(jnp.argmax(out.logits[:, -1], axis=-1))
    jax.block_until_ready(tokens[-1])
    dt = time.perf_counter() - t0
    print(f"greedy KV-cache decode: {new} tokens x {B} sequences, {B * (new - 2) / max(dt, 1e-9):,.0f} tokens/s")
    print("first sequence's token ids:", [int(t[0]) for t in tokens[:16]], "...")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Delegates to ``python -m benchmarks`` (the benchmarks live in the source checkout)."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if not (root / "benchmarks" / "__main__.py").is_file():
        raise SystemExit("error: `memgpt-jax bench` needs the source checkout (benchmarks/ beside memgpt_jax/); "
                         "install with `pip install -e .` from a clone")
    sys.path.insert(0, str(root))
    from benchmarks.__main__ import main as bench_main

    return bench_main(args.bench_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memgpt-jax",
        description="Lightweight GPT-style language models in JAX/Flax: block-sparse attention, "
        "knowledge distillation, compression, Orbax checkpoints, PyTorch export.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("info", help="print a model configuration, its parameter count and FLOPs/token")
    _add_model_args(p)
    p.add_argument("--seq-len", type=int, default=None, help="sequence length for FLOPs (default max_len)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("smoke", help="forward pass + KV-cache generation with a random model (no data needed)")
    _add_model_args(p)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_smoke)

    p = sub.add_parser("bench", help="run benchmarks and rebuild benchmarks/RESULTS.md (python -m benchmarks)",
                       add_help=False)
    p.set_defaults(func=lambda a: cmd_bench(argparse.Namespace(bench_args=[])))

    for name in _COMMAND_MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # everything after `bench` belongs to python -m benchmarks
        return int(cmd_bench(argparse.Namespace(bench_args=argv[1:])) or 0)
    args, unknown = parser.parse_known_args(argv)
    if getattr(args, "accepts_overrides", False):
        bad = [u for u in unknown if not u.startswith("--config.")]
        if bad:
            parser.error(f"unrecognized arguments: {' '.join(bad)}")
        args.overrides = unknown
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
