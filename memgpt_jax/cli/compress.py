"""``memgpt-jax quantize``, ``memgpt-jax prune`` and ``memgpt-jax average``, and what they report.

    memgpt-jax quantize --checkpoint runs/shakespeare --out runs/shakespeare_int8 --bits 8
    memgpt-jax quantize --checkpoint runs/shakespeare --out runs/shakespeare_int4 --bits 4 --group 64
    memgpt-jax prune --checkpoint runs/imdb/teacher --out runs/imdb/pruned50 --sparsity 0.5 \\
        --kind global --recover-steps 200
    memgpt-jax average --checkpoint runs/imdb/teacher --last 3 --out runs/imdb/teacher_avg3

``average`` writes the mean of a run's last checkpoints (tail averaging of the weights:
a cheap ensemble in one model). Each prints (and writes to OUT/compression.json) the
bytes on disk and in memory,
the run's evaluation metric before and after (perplexity for language models,
accuracy for classifiers, on the run's eval split) and the per-token latency on
this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memgpt_jax.config import ModelConfig
    from memgpt_jax.training.run import Run


# -- what a compression command reports ---------------------------------------------------

def dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, files in os.walk(path) for f in files)


def run_meta(run: Run) -> dict[str, Any]:
    """The meta a params-only checkpoint derived from ``run`` carries (config, tokenizer, step)."""
    tokenizer = json.dumps(run.tokenizer.to_config()).encode() if run.tokenizer is not None else None
    return {"config": run.config.to_dict(), "tokenizer": tokenizer, "step": run.step}


def params_disk_bytes(params: Any, meta: dict[str, Any]) -> int:
    """Bytes of a params-only checkpoint of ``params`` (written to a temp dir and measured)."""
    from memgpt_jax.training.checkpoint import save_params  # lazy: keeps --help fast

    tmp = tempfile.mkdtemp(prefix="memgpt_size_")
    try:
        save_params(tmp, params, meta)
        return dir_bytes(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def evaluate_params(run: Run, params: Any, model_config: ModelConfig | None = None,
                    max_batches: int | None = None) -> dict[str, float]:
    """The evaluation metrics of ``params`` (a compressed copy of the run's) on the run's
    eval split, with the run's model or one built from ``model_config``."""
    # lazy: keeps --help fast
    from memgpt_jax import tasks
    from memgpt_jax.training.evaluate import evaluate
    from memgpt_jax.training.inputs import eval_batches

    config = run.config if max_batches is None else run.config.replace(data={"eval_batches": max_batches})
    model = run.model if model_config is None else tasks.get(run.task).build(model_config)
    return evaluate(run.task, model, params, eval_batches(config, run.tokenizer))


def token_latency_ms(run: Run, params: Any, model_config: ModelConfig | None = None, tokens: int = 32) -> float:
    """Median milliseconds per token at batch 1: KV-cache decoding for language models,
    a full forward divided by its length for task models."""
    # lazy: keeps --help fast
    import jax
    import jax.numpy as jnp

    from memgpt_jax import model as model_lib
    from memgpt_jax import tasks
    from memgpt_jax.compress.quantize import inference_params

    mc = model_config or run.model_config
    task = tasks.get(run.task)
    model = task.build(mc)
    if "generate" in task.commands:  # a generating model: time the KV-cache decode
        step = jax.jit(lambda p, c, x: model_lib.decode_step(model, inference_params(p), c, x))
        cache = model_lib.init_cache(model, 1, length=min(mc.max_len, 8 + tokens + 1))
        out, cache = step(params, cache, jnp.ones((1, 8), jnp.int32))
        tok = jnp.argmax(out.logits[:, -1:], -1)
        out, cache = step(params, cache, tok)  # compile the one-token step
        times = []
        for _ in range(tokens):
            tok = jnp.argmax(out.logits[:, -1:], -1)
            t0 = time.perf_counter()
            out, cache = step(params, cache, tok)
            out.logits.block_until_ready()
            times.append(time.perf_counter() - t0)
        return 1e3 * statistics.median(times)
    T = run.config.data.seq_len
    def head(out):  # a classifier's logits, or a span model's start logits
        return out.logits if out.logits is not None else out.start_logits

    fwd = jax.jit(lambda p, x: head(model.apply({"params": inference_params(p)}, x)))
    ids = jnp.ones((1, T), jnp.int32)
    fwd(params, ids).block_until_ready()
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        fwd(params, ids).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times) / T


def describe(params: Any, disk: int, metrics: dict[str, float], latency_ms: float) -> dict[str, Any]:
    from memgpt_jax.compress.quantize import param_bytes  # lazy: keeps --help fast

    return {"disk_bytes": disk, "param_bytes": param_bytes(params), "latency_ms_per_token": latency_ms, **metrics}


def print_table(rows: list[tuple[str, dict[str, Any]]], metric: str) -> None:
    print(f"{'':<12} {'disk':>12} {'param memory':>14} {metric:>12} {'ms/token':>9}")
    for name, r in rows:
        print(f"{name:<12} {r['disk_bytes']:>12,} {r['param_bytes']:>14,} {r[metric]:>12.4f} "
              f"{r['latency_ms_per_token']:>9.3f}")


# -- the commands --------------------------------------------------------------------------

def _open(checkpoint: str) -> Run:
    from memgpt_jax.training.run import RunError, open_run  # lazy: keeps --help fast

    try:
        run = open_run(checkpoint)
    except (FileNotFoundError, RunError) as e:
        raise SystemExit(f"error: {e}") from None
    if run.quantized:
        raise SystemExit(f"error: {checkpoint} is already quantized")
    if run.tokenizer is None:
        raise SystemExit(f"error: {checkpoint} carries no tokenizer; its evaluation data cannot be encoded")
    return run


def _metric(run: Run) -> str:
    from memgpt_jax import tasks  # lazy: keeps --help fast

    return tasks.get(run.task).headline


def _measure(run: Run, params: Any, disk: int, max_batches: int | None,
             model_config: ModelConfig | None = None) -> dict[str, Any]:
    return describe(params, disk, evaluate_params(run, params, model_config, max_batches),
                    token_latency_ms(run, params, model_config))


def _finish(out: str, rows: list, run: Run, extra: dict[str, Any]) -> None:
    metric = _metric(run)
    print_table(rows, metric)
    report = {"metric": metric, "rows": {name: r for name, r in rows}, **extra}
    base, new = rows[0][1], rows[-1][1]
    report["size_ratio"] = base["disk_bytes"] / max(new["disk_bytes"], 1)
    report["memory_ratio"] = base["param_bytes"] / max(new["param_bytes"], 1)
    print(f"smaller on disk: {report['size_ratio']:.2f}x, in memory: {report['memory_ratio']:.2f}x; "
          f"{metric}: {base[metric]:.4f} -> {new[metric]:.4f}")
    with open(os.path.join(out, "compression.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {out} (try: memgpt-jax eval --checkpoint {out})", file=sys.stderr)


def _check_out(out: str) -> None:
    """``--out`` must be new (or an empty directory): checked before any work."""
    if os.path.lexists(out) and not (os.path.isdir(out) and not os.listdir(out)):
        raise FileExistsError(f"--out {out} already exists and is not empty; choose a new --out")


def cmd_quantize(args: argparse.Namespace) -> int:
    # lazy: keeps --help fast
    from memgpt_jax.compress.quantize import encode, quantize_params, summary
    from memgpt_jax.training.checkpoint import save_params

    _check_out(args.out)
    run = _open(args.checkpoint)
    meta = run_meta(run)
    print(f"evaluating {args.checkpoint} (float32) ...", file=sys.stderr)
    before = _measure(run, run.params, params_disk_bytes(run.params, meta), args.eval_batches)
    qparams = quantize_params(run.params, args.bits, args.group)
    print(f"quantized tensors: {summary(qparams)}", file=sys.stderr)
    qconfig = run.config.replace(model={"int8_activations": bool(args.int8_activations)})
    tree, spec = encode(qparams)
    quant = {"bits": args.bits, "group": args.group if args.bits == 4 else None,
             "int8_activations": bool(args.int8_activations), "tensors": spec}
    save_params(args.out, tree, {**meta, "config": qconfig.to_dict(), "quantization": quant})
    after = _measure(run, qparams, dir_bytes(args.out), args.eval_batches, qconfig.model)
    name = f"int{args.bits}" + (f" g{args.group}" if args.bits == 4 else "") + (" +act" if args.int8_activations else "")
    _finish(args.out, [("float32", before), (name, after)], run,
            {"quantization": {k: v for k, v in quant.items() if k != "tensors"}})
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    # lazy: keeps --help fast
    from memgpt_jax.cli.train import teacher_or_exit
    from memgpt_jax.compress.prune import apply_masks, magnitude_masks, sparsity
    from memgpt_jax.training.checkpoint import load_params, save_params
    from memgpt_jax.training.loop import train

    _check_out(args.out)
    run = _open(args.checkpoint)
    meta = run_meta(run)
    rows = [("unpruned", _measure(run, run.params, params_disk_bytes(run.params, meta), args.eval_batches))]
    pruned = apply_masks(run.params, magnitude_masks(run.params, args.sparsity, args.kind))
    os.makedirs(args.out, exist_ok=True)
    rows.append(("pruned", _measure(run, pruned, params_disk_bytes(pruned, meta), args.eval_batches)))
    config = run.config
    if args.recover_steps > 0:
        optim = {"warmup_steps": min(config.optim.warmup_steps, args.recover_steps // 10)}
        if args.lr:
            optim["lr"] = args.lr
        config = config.replace(
            train={"steps": args.recover_steps, "init_from": os.path.abspath(args.checkpoint),
                   "prune_kind": args.kind, "prune_sparsity": args.sparsity, "eval_every": 0},
            optim=optim, distill={"init_from_teacher": False})  # a distilled run keeps its teacher; not its layers
        train(config, os.path.join(args.out, "recovery"), teacher=teacher_or_exit(config),
              progress=not args.no_progress)
        recovered, _ = load_params(os.path.join(args.out, "recovery"))
        rows.append(("recovered", _measure(run, recovered, params_disk_bytes(recovered, meta), args.eval_batches)))
        pruned = recovered
    save_params(args.out, pruned, {**meta, "config": config.to_dict()})
    _finish(args.out, rows, run, {"pruning": {"kind": args.kind, "sparsity": args.sparsity,
                                              "recover_steps": args.recover_steps, **sparsity(pruned)}})
    return 0


def cmd_average(args: argparse.Namespace) -> int:
    # lazy: keeps --help fast
    import jax
    import numpy as np

    from memgpt_jax.training.checkpoint import load_params, save_params

    _check_out(args.out)
    run = _open(args.checkpoint)
    folder = os.path.join(run.path, "checkpoints")
    steps = sorted(int(d) for d in os.listdir(folder) if d.isdigit())
    chosen = sorted(args.steps) if args.steps else steps[-args.last:]
    missing = sorted(set(chosen) - set(steps))
    if missing or len(chosen) < 2:
        raise SystemExit(f"error: {run.path} has checkpoints {steps}; averaging needs at least two of them"
                         + (f" (no {missing})" if missing else "") + ": raise train.keep before training, or "
                         "choose --steps among those")
    print(f"averaging steps {chosen} of {run.path}", file=sys.stderr)
    trees = [load_params(run.path, s)[0] for s in chosen]
    mean = jax.tree.map(lambda *xs: (sum(np.asarray(x, np.float64) for x in xs) / len(xs)).astype(xs[0].dtype),
                        *trees)
    meta = {**run_meta(run), "averaged_steps": chosen}
    newest = trees[-1]
    rows = [(f"step {chosen[-1]}", _measure(run, newest, params_disk_bytes(newest, meta), args.eval_batches))]
    save_params(args.out, mean, meta, step=chosen[-1])
    rows.append((f"mean of {len(chosen)}", _measure(run, mean, dir_bytes(args.out), args.eval_batches)))
    _finish(args.out, rows, run, {"averaged_steps": chosen})
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    common = dict(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p = sub.add_parser("quantize", help="int8/int4 post-training weight quantization of a run", **common)
    p.add_argument("--checkpoint", required=True, help="a run directory (its newest checkpoint)")
    p.add_argument("--out", required=True, help="new directory for the quantized checkpoint")
    p.add_argument("--bits", type=int, choices=(8, 4), default=8)
    p.add_argument("--group", type=int, choices=(64, 128), default=64,
                   help="int4 group size along the input axis (default: %(default)s)")
    p.add_argument("--int8-activations", action="store_true", help="int8: also quantize activations (integer GEMMs)")
    p.add_argument("--eval-batches", type=int, default=None, help="cap on evaluation batches (default: config's)")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("prune", help="magnitude pruning (global, per layer, 2:4) with optional recovery", **common)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--kind", choices=("global", "layer", "2:4"), default="global")
    p.add_argument("--recover-steps", type=int, default=0, help="fine-tune this many steps, pruned weights held at 0")
    p.add_argument("--lr", type=float, default=None, help="recovery learning rate (default: the run's)")
    p.add_argument("--eval-batches", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("average", help="the mean of a run's last checkpoints (weight averaging), evaluated",
                       **common)
    p.add_argument("--checkpoint", required=True, help="a run directory whose kept checkpoints are averaged")
    p.add_argument("--out", required=True, help="new directory for the averaged checkpoint")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--last", type=int, default=3, help="average the newest N kept checkpoints (default: 3)")
    group.add_argument("--steps", type=int, nargs="+", help="average these steps instead")
    p.add_argument("--eval-batches", type=int, default=None, help="cap on evaluation batches (default: config's)")
    p.set_defaults(func=cmd_average)
