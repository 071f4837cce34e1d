"""What a compression command reports: size on disk, parameter memory, the
evaluation metric (perplexity or accuracy) and per-token latency on this machine."""

from __future__ import annotations

import itertools
import os
import shutil
import statistics
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from memgpt_jax import model as model_lib
from memgpt_jax.compress.quantize import inference_params, param_bytes
from memgpt_jax.config import ModelConfig


def dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, files in os.walk(path) for f in files)


def params_disk_bytes(params: Any, meta: dict[str, Any]) -> int:
    """Bytes of a params-only checkpoint of ``params`` (written to a temp dir and measured)."""
    from memgpt_jax.training.checkpoint import save_params

    tmp = tempfile.mkdtemp(prefix="memgpt_size_")
    try:
        save_params(tmp, params, meta)
        return dir_bytes(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _head(task: str) -> str:
    return {"lm": "lm", "classification": "classification", "qa": "qa"}[task]


def evaluate(config: ml_collections.ConfigDict, params: Any, model_config: ModelConfig | None = None,
             max_batches: int | None = None) -> dict[str, float]:
    """The run's evaluation metric on its eval split: perplexity (lm) or accuracy and F1."""
    from memgpt_jax.training import inputs as inputs_lib
    from memgpt_jax.training.metrics import summarize_eval
    from memgpt_jax.training.steps import make_eval_step

    mc = model_config or ModelConfig.from_dict(config.model.to_dict())
    model = model_lib.build(mc, _head(config.task))
    step = jax.jit(make_eval_step(config.task, model))
    data = inputs_lib.make_data(config)
    batches = itertools.islice(data.eval(), max_batches)
    return summarize_eval(((step(params, b), b) for b in batches), config.task, mc.num_labels)


def token_latency_ms(config: ml_collections.ConfigDict, params: Any, model_config: ModelConfig | None = None,
                     tokens: int = 32) -> float:
    """Median milliseconds per token at batch 1: KV-cache decoding for language models,
    a full forward divided by its length for task models."""
    mc = model_config or ModelConfig.from_dict(config.model.to_dict())
    model = model_lib.build(mc, _head(config.task))
    if config.task == "lm":
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
    T = int(config.data.seq_len)
    fwd = jax.jit(lambda p, x: model.apply({"params": inference_params(p)}, x).logits)
    ids = jnp.ones((1, T), jnp.int32)
    fwd(params, ids).block_until_ready()
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        fwd(params, ids).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times) / T


def describe(params: Any, disk: int, metrics: dict[str, float], latency_ms: float) -> dict[str, Any]:
    return {"disk_bytes": disk, "param_bytes": param_bytes(params), "latency_ms_per_token": latency_ms, **metrics}


def print_table(rows: list[tuple[str, dict[str, Any]]], metric: str) -> None:
    print(f"{'':<12} {'disk':>12} {'param memory':>14} {metric:>12} {'ms/token':>9}")
    for name, r in rows:
        print(f"{name:<12} {r['disk_bytes']:>12,} {r['param_bytes']:>14,} {r[metric]:>12.4f} "
              f"{r['latency_ms_per_token']:>9.3f}")
