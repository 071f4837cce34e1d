"""Teacher-forced evaluation: one evaluator for every task kind, from a model and parameters.

``evaluate(task, model, params, batches)`` runs the model over batches and returns
weighted means of the task's metrics: loss and perplexity for language models
(prompt -> target runs included: their loss mask covers the targets only),
loss, accuracy and macro precision/recall/F1 for classifiers, the span loss for
extractive QA. It never builds a trainer, an optimizer or a teacher. The training
loop's periodic evaluation, ``memgpt-jax eval``, the compression reports, the demo
and the recipe benchmarks call it; ``evaluate_run`` does it for a saved
:class:`~memgpt_jax.training.run.Run` on one of its splits. Metrics that need
decoding (QA exact match/F1, BLEU/ROUGE of generated text) live with the
decoders in ``memgpt_jax.apps`` and are built on a ``Run`` too.
"""

from __future__ import annotations

import functools
import sys
import time
from typing import Any, Callable, Iterable, Iterator

import flax.linen as nn
import jax
import numpy as np

from memgpt_jax import tasks
from memgpt_jax.compress.quantize import inference_params
from memgpt_jax.progress import bar as progress_bar
from memgpt_jax.training import inputs as inputs_lib
from memgpt_jax.training.metrics import summarize_eval
from memgpt_jax.training.run import Run
from memgpt_jax.training.steps import model_inputs, task_loss


def eval_sums(task: str, model: nn.Module, params: Any, batch: Any) -> dict[str, jax.Array]:
    """Metric sums of one batch (each metric times its weight, and ``weight``)."""
    params = inference_params(params)  # quantized checkpoints: dequantize on the fly
    out = model.apply({"params": params}, batch["inputs"], deterministic=True, **model_inputs(task, batch))
    _, metrics, w = task_loss(task, out, batch)
    sums = {k: v * w for k, v in metrics.items()}
    sums["weight"] = w
    predict = tasks.get(task).predictions
    if predict is not None:
        sums["predictions"] = predict(out)
    return sums


@functools.lru_cache(maxsize=16)
def compiled_eval_step(task: str, model: nn.Module) -> Callable[[Any, Any], dict[str, jax.Array]]:
    """``step(params, batch) -> metric sums``, jitted once per task and model (modules are hashable)."""
    return jax.jit(functools.partial(eval_sums, task, model))


def evaluate(task: str, model: nn.Module, params: Any, batches: Iterable[dict[str, Any]], *,
             place: Callable[[dict[str, Any]], Any] = lambda b: b, full: bool = False,
             progress: bool = False, per_example: bool = False) -> dict[str, Any]:
    """Weighted means over ``batches`` (``place`` puts a host batch on the devices), and
    ``examples_per_s``: model time only, the first batch (which compiles) excluded.
    ``full``: classifiers report per-class precision/recall/F1 and the confusion matrix;
    ``per_example``: their ``predictions`` and ``labels`` too (arrays, in the batches' order)."""
    step = compiled_eval_step(task, model)
    timing = {"seconds": 0.0, "examples": 0}

    def results() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        for i, batch in enumerate(progress_bar(batches, desc="evaluate", unit="batch", leave=False, file=sys.stderr)
                                  if progress else batches):
            t0 = time.perf_counter()
            sums = jax.block_until_ready(step(params, place(batch)))
            if i:
                timing["seconds"] += time.perf_counter() - t0
                timing["examples"] += _examples(batch)
            yield sums, batch

    report = summarize_eval(results(), task, model.config.num_labels, full=full, per_example=per_example)
    if timing["seconds"] > 0:
        report["examples_per_s"] = timing["examples"] / timing["seconds"]
    return report


def _examples(batch: dict[str, Any]) -> int:
    valid = batch.get("example_valid")
    return int(np.sum(valid)) if valid is not None else len(batch["inputs"])


def evaluate_run(run: Run, split: str | None = None, *, max_batches: int | None = None,
                 batch_size: int | None = None) -> dict[str, float]:
    """``evaluate`` for a saved run on ``split`` (default: its config's eval split) of the
    data it was trained on. ``max_batches`` ``None`` uses the config's ``eval_batches``."""
    config = run.config
    changes: dict[str, Any] = {}
    if split is not None:
        changes["eval_split"] = split
    if batch_size is not None:
        changes["eval_batch_size"] = batch_size
    if max_batches is not None:
        changes["eval_batches"] = max_batches
    if changes:
        config = config.replace(data=changes)
    batches = inputs_lib.eval_batches(config, run.tokenizer)
    return evaluate(run.task, run.model, run.params, batches)


__all__ = ["compiled_eval_step", "eval_sums", "evaluate", "evaluate_run"]
