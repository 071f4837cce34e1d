"""``memgpt-jax quantize`` and ``memgpt-jax prune``.

    memgpt-jax quantize --checkpoint runs/shakespeare --out runs/shakespeare_int8 --bits 8
    memgpt-jax quantize --checkpoint runs/shakespeare --out runs/shakespeare_int4 --bits 4 --group 64
    memgpt-jax prune --checkpoint runs/imdb/teacher --out runs/imdb/pruned50 --sparsity 0.5 \\
        --kind global --recover-steps 200

Each prints (and writes to OUT/compression.json) the bytes on disk and in memory,
the run's evaluation metric before and after (perplexity for language models,
accuracy for classifiers) and the per-token latency on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def _load(checkpoint: str) -> tuple[Any, dict[str, Any], Any]:
    import ml_collections

    from memgpt_jax.training.checkpoint import load_params

    params, meta = load_params(checkpoint)
    if not meta.get("config"):
        raise SystemExit(f"error: {checkpoint} carries no config; cannot evaluate it")
    if meta.get("quantization"):
        raise SystemExit(f"error: {checkpoint} is already quantized")
    return params, meta, ml_collections.ConfigDict(meta["config"])


def _metric(config: Any) -> str:
    return "perplexity" if config.task == "lm" else "accuracy"


def _finish(out: str, rows: list, config: Any, extra: dict[str, Any]) -> None:
    from memgpt_jax.compress.report import print_table

    metric = _metric(config)
    print_table(rows, metric)
    report = {"metric": metric, "rows": {name: r for name, r in rows}, **extra}
    base, new = rows[0][1], rows[-1][1]
    report["size_ratio"] = base["disk_bytes"] / max(new["disk_bytes"], 1)
    report["memory_ratio"] = base["param_bytes"] / max(new["param_bytes"], 1)
    print(f"smaller on disk: {report['size_ratio']:.2f}x, in memory: {report['memory_ratio']:.2f}x; "
          f"{metric}: {base[metric]:.4f} -> {new[metric]:.4f}")
    with open(os.path.join(out, "compression.json"), "w") as f:
        json.dump(report, f, indent=2)


def cmd_quantize(args: argparse.Namespace) -> int:
    from memgpt_jax.compress import report as R
    from memgpt_jax.compress.quantize import encode, quantize_params, summary
    from memgpt_jax.config import ModelConfig
    from memgpt_jax.training.checkpoint import save_params

    params, meta, config = _load(args.checkpoint)
    mc = ModelConfig.from_dict(config.model.to_dict())
    print(f"evaluating {args.checkpoint} (float32) ...", file=sys.stderr)
    before = R.describe(params, R.params_disk_bytes(params, meta), R.evaluate(config, params, mc, args.eval_batches),
                        R.token_latency_ms(config, params, mc))
    qparams = quantize_params(params, args.bits, args.group)
    print(f"quantized tensors: {summary(qparams)}", file=sys.stderr)
    qmc = mc.replace(int8_activations=bool(args.int8_activations))
    config.model.int8_activations = bool(args.int8_activations)
    tree, spec = encode(qparams)
    quant = {"bits": args.bits, "group": args.group if args.bits == 4 else None,
             "int8_activations": bool(args.int8_activations), "tensors": spec}
    save_params(args.out, tree, {**meta, "config": config.to_dict(), "quantization": quant})
    after = R.describe(qparams, R.dir_bytes(args.out), R.evaluate(config, qparams, qmc, args.eval_batches),
                       R.token_latency_ms(config, qparams, qmc))
    name = f"int{args.bits}" + (f" g{args.group}" if args.bits == 4 else "") + (" +act" if args.int8_activations else "")
    _finish(args.out, [("float32", before), (name, after)], config, {"quantization": {k: v for k, v in quant.items()
                                                                                      if k != "tensors"}})
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from memgpt_jax.compress import report as R
    from memgpt_jax.compress.prune import apply_masks, magnitude_masks, sparsity
    from memgpt_jax.training.checkpoint import load_params, save_params

    params, meta, config = _load(args.checkpoint)
    before = R.describe(params, R.params_disk_bytes(params, meta), R.evaluate(config, params, None, args.eval_batches),
                        R.token_latency_ms(config, params))
    rows = [("dense", before)]
    pruned = apply_masks(params, magnitude_masks(params, args.sparsity, args.kind))
    os.makedirs(args.out, exist_ok=True)
    oneshot = R.describe(pruned, R.params_disk_bytes(pruned, meta),
                         R.evaluate(config, pruned, None, args.eval_batches), R.token_latency_ms(config, pruned))
    rows.append(("pruned", oneshot))
    if args.recover_steps > 0:
        from memgpt_jax.training.loop import train

        config.train.steps = args.recover_steps
        config.train.init_from = os.path.abspath(args.checkpoint)
        config.train.prune_kind = args.kind
        config.train.prune_sparsity = args.sparsity
        config.train.eval_every = 0
        config.optim.warmup_steps = min(int(config.optim.warmup_steps), args.recover_steps // 10)
        if args.lr:
            config.optim.lr = args.lr
        train(config, os.path.join(args.out, "recovery"), progress=not args.no_progress)
        recovered, _ = load_params(os.path.join(args.out, "recovery"))
        rows.append(("recovered", R.describe(recovered, R.params_disk_bytes(recovered, meta),
                                             R.evaluate(config, recovered, None, args.eval_batches),
                                             R.token_latency_ms(config, recovered))))
        pruned = recovered
    save_params(os.path.join(args.out, "final"), pruned, {**meta, "config": config.to_dict()})
    _finish(args.out, rows, config, {"pruning": {"kind": args.kind, "sparsity": args.sparsity,
                                                 "recover_steps": args.recover_steps, **sparsity(pruned)}})
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    common = dict(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p = sub.add_parser("quantize", help="int8/int4 post-training weight quantization of a run", **common)
    p.add_argument("--checkpoint", required=True, help="a run directory (its newest checkpoint)")
    p.add_argument("--out", required=True, help="new directory for the quantized checkpoint")
    p.add_argument("--bits", type=int, choices=(8, 4), default=8)
    p.add_argument("--group", type=int, default=64, help="int4 group size along the input axis (64 or 128)")
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
