"""The ``memgpt-jax`` console entry point: every command of the project, in one layer.

This package sits on top of the library (``data`` -> ``training`` -> ``apps``,
``export``, compression): each module here turns one group of commands into
``argparse`` subcommands through ``register(subparsers)`` and calls the library.
Heavy imports (JAX) happen inside the command functions, so ``memgpt-jax --help``
answers at once.

    memgpt-jax info --preset 10m --config.model.n_layers=4
    memgpt-jax smoke --preset tiny --config.model.attention.pattern=local
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import subprocess
import sys
import time
from typing import Sequence

DEBUG_ENV = "MEMGPT_DEBUG"
TORCH_EXTRA = ("torch", "safetensors", "transformers")  # the packages of the `torch` extra

# Modules that contribute commands through ``register(subparsers)``.
_COMMAND_MODULES = (
    "memgpt_jax.cli.data",
    "memgpt_jax.cli.train",
    "memgpt_jax.cli.demo",
    "memgpt_jax.cli.compress",
    "memgpt_jax.cli.export",
    "memgpt_jax.cli.apps",
    "memgpt_jax.cli.layout",
)

PRESETS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "presets.py")
BENCHMARKS_ENV = "MEMGPT_BENCHMARKS_ROOT"


def _model_config_from_args(args: argparse.Namespace):
    """The preset's model with the ``--config.model.*`` overrides, parsed by the run
    config loader (the one override parser of the project)."""
    from memgpt_jax import run_config  # lazy: keeps --help fast

    try:
        return run_config.load(f"{PRESETS_FILE}:{args.preset}", args.overrides).model
    except run_config.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=("tiny", "10m", "gpt2"), default="tiny",
                   help="model size preset: tiny (tests), 10m (~10M params), gpt2 (GPT-2 small)")
    p.set_defaults(accepts_overrides=True)


_MODEL_EPILOG = ("Any model field can be overridden: --config.model.n_layers=4 "
                 "--config.model.attention.pattern=local (see memgpt_jax/config.py)")


def cmd_info(args: argparse.Namespace) -> int:
    from memgpt_jax.flops import count_params, flops_per_token  # lazy: keeps --help fast

    cfg = _model_config_from_args(args)
    print(cfg.to_json())
    seq = args.seq_len or cfg.max_len
    print(f"parameters: {count_params(cfg):,}")
    print(f"training FLOPs/token at seq {seq}: {flops_per_token(cfg, seq):.4g}")
    print(f"GPT-2 compatible (exportable to Hugging Face): {cfg.is_gpt2_compatible}")
    return 0


def cmd_smoke(args: argparse.Namespace) -> int:
    """Forward pass and KV-cache greedy generation with a randomly initialised model."""
    # lazy: keeps --help fast
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


def benchmarks_root() -> str:
    """The source checkout holding ``benchmarks/``: ``$MEMGPT_BENCHMARKS_ROOT``, else the
    checkout this package was installed from (``pip install -e .``), else the current directory."""
    candidates = [os.environ[BENCHMARKS_ENV]] if os.environ.get(BENCHMARKS_ENV) else [
        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), os.getcwd()]
    for root in candidates:
        if os.path.isfile(os.path.join(root, "benchmarks", "__main__.py")):
            return os.path.abspath(root)
    raise SystemExit(f"error: `memgpt-jax bench` needs the source checkout (benchmarks/__main__.py); looked in "
                     f"{', '.join(candidates)}. Run it from a clone, or set ${BENCHMARKS_ENV} to the clone's root")


def cmd_bench(bench_args: Sequence[str]) -> int:
    """Runs ``python -m benchmarks ARGS`` in a child process, with the checkout on its path
    (relative paths in ARGS keep meaning the current directory)."""
    root = benchmarks_root()
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return subprocess.call([sys.executable, "-m", "benchmarks", *bench_args], env={**os.environ, "PYTHONPATH": path})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memgpt-jax",
        description="Lightweight GPT-style language models in JAX/Flax: block-sparse attention, "
        "knowledge distillation, compression, Orbax checkpoints, PyTorch export.",
    )
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback of an error, anywhere on the line (or set {DEBUG_ENV}=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("info", help="print a model configuration, its parameter count and FLOPs/token",
                       epilog=_MODEL_EPILOG)
    _add_model_args(p)
    p.add_argument("--seq-len", type=int, default=None, help="sequence length for FLOPs (default max_len)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("smoke", help="forward pass + KV-cache generation with a random model (no data needed)",
                       epilog=_MODEL_EPILOG)
    _add_model_args(p)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_smoke)

    p = sub.add_parser("bench", help="run benchmarks and rebuild benchmarks/RESULTS.md (python -m benchmarks)",
                       add_help=False)
    p.set_defaults(func=lambda a: cmd_bench([]))

    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from memgpt_jax.hostmem import tune_host_allocator

    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)  # the top level takes no valued option
    try:  # before JAX starts a thread: training on CPU keeps XLA's big buffers (memgpt_jax/hostmem.py)
        tune_host_allocator(command)
    except ValueError as e:  # a MEMGPT_ALLOCATOR it does not know
        print(f"memgpt-jax: error: {e}", file=sys.stderr)
        return 2
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]  # accepted anywhere on the line
    if argv[:1] == ["bench"]:  # everything after `bench` belongs to python -m benchmarks
        return cmd_bench(argv[1:])
    parser = build_parser()
    _check_command(parser, argv)
    args, unknown = parser.parse_known_args(argv)
    args.overrides = []
    if getattr(args, "accepts_overrides", False):
        bare = [u for u in unknown if u.startswith("--config.") and "=" not in u]
        if bare:  # `--config.train.steps 3`: the value would be taken for an argument of its own
            _command_parser(parser, argv).error(f"{bare[0]} takes its value after '=': {bare[0]}=VALUE")
        bad = [u for u in unknown if not u.startswith("--config.")]
        if bad:
            _unrecognized(parser, argv, bad)
        args.overrides = unknown
    elif unknown:
        _unrecognized(parser, argv, unknown)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    if not debug:  # tfds's and Orbax's absl warnings (config dumps, "no dataset_info.json"): not for users
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        return int(args.func(args) or 0)
    except SystemExit as e:  # SystemExit("error: ...") from a command: a bad input, exit 2 (Python's would be 1)
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `memgpt-jax generate ... | head`: the reader has all it wanted
        _drop_stdout()
        return 128 + 13  # SIGPIPE's status, as a shell command's
    except Exception as e:  # noqa: BLE001 - every command's last line of defence
        if debug:
            raise
        return _report(e)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """``parser``'s subcommands by name (none for a leaf command)."""
    return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})


def _command_parser(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser of the (sub)command ``argv`` names: ``data prepare listops`` -> its own."""
    for word in (w for w in argv if not w.startswith("-")):
        if word not in _subcommands(parser):
            break
        parser = _subcommands(parser)[word]
    return parser


def _check_command(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """A mistyped command (``classfy``) exits 2 naming the closest ones."""
    word = next((w for w in argv if not w.startswith("-")), None)
    commands = _subcommands(parser)
    if word is not None and word not in commands:
        close = difflib.get_close_matches(word, list(commands), n=2, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}?" if close else f"choose from {', '.join(commands)}"
        parser.error(f"unknown command {word!r}; {hint}")


def _unrecognized(parser: argparse.ArgumentParser, argv: Sequence[str], bad: Sequence[str]) -> None:
    """Exits 2 with the command's own usage and, for each unknown flag, the closest of its flags."""
    command = _command_parser(parser, argv)
    flags = [option for action in command._actions for option in action.option_strings if option.startswith("--")]
    hints = []
    for word in bad:
        name = word.split("=", 1)[0]
        if name.startswith("--"):
            close = difflib.get_close_matches(name, flags, n=1, cutoff=0.6)
            if close:
                hints.append((name, close[0]))
    if len(hints) == 1:
        hint = f"; did you mean {hints[0][1]}?"
    elif hints:
        hint = "; did you mean " + ", ".join(f"{good} for {typo}" for typo, good in hints) + "?"
    else:
        hint = f" (see {command.prog} --help)"
    command.error(f"unrecognized arguments: {' '.join(bad)}{hint}")


def _drop_stdout() -> None:
    """Points stdout at /dev/null, so that the interpreter's last flush of a closed pipe
    raises nothing more."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _report(error: Exception) -> int:
    """One line for an error that escaped a command; the exit status says what kind it was."""
    loop = sys.modules.get("memgpt_jax.training.loop")  # imported if and only if a run trained
    if loop is not None and isinstance(error, loop.TrainingInterrupted):
        print(str(error), file=sys.stderr)
        return 128 + error.signum
    if loop is not None and isinstance(error, loop.NonFiniteLossError):
        print(f"error: {error}", file=sys.stderr)
        return 3
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, ModuleNotFoundError) and error.name and error.name.split(".")[0] in TORCH_EXTRA:
        print(f"error: {message}: this needs the torch extra: pip install torch==2.13.0 (a CPU build), then "
              "'memgpt-jax[torch]' (in a checkout: pip install -e '.[torch]')", file=sys.stderr)
        return 2
    if isinstance(error, (ValueError, OSError)):  # bad input (ConfigError, DataError, ConversionError, ...)
        print(f"error: {message}", file=sys.stderr)
        return 2
    print(f"error: {type(error).__name__}: {message} (run with --debug or {DEBUG_ENV}=1 for the traceback)",
          file=sys.stderr)
    return 1


__all__ = ["build_parser", "main"]
