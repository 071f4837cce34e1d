"""Layouts derived from a teacher: where a trained model's attention goes, block by block.

:func:`block_mass` runs a run's model (normally a dense teacher) over examples of a prepared
split and adds up, per layer and head, the attention probability in each ``block x block``
tile of the score matrix: a ``float64 [layers, heads, n, n]`` array whose row ``i`` sums to
the number of real query tokens in block ``i``. :func:`derive` fits a layout to it under a
density budget and writes the layout file a model config names
(``attention.pattern="derived"``, ``attention.layout_file=FILE``)::

    memgpt-jax layout derive --teacher runs/listops/teacher --split validation \\
        --examples 256 --density 0.2 --out runs/listops/derived.json

The fitting itself (band or raw map, greedy by mass per tile) is
:mod:`memgpt_jax.attention.derived`.
"""

from __future__ import annotations

import datetime
import math
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from memgpt_jax.attention import derived as derived_lib
from memgpt_jax.compress.quantize import inference_params
from memgpt_jax.progress import bar as progress_bar
from memgpt_jax.training import inputs as inputs_lib
from memgpt_jax.training.run import Run
from memgpt_jax.training.steps import model_inputs


def _pad_to(x: np.ndarray, length: int, value: Any = 0) -> np.ndarray:
    x = np.asarray(x)
    if x.shape[1] > length:
        raise ValueError(f"a batch holds {x.shape[1]} tokens, more than the {length} measured")
    widths = [(0, 0)] * x.ndim
    widths[1] = (0, length - x.shape[1])
    return np.pad(x, widths, constant_values=value)


def block_mass(run: Run, split: str, examples: int, *, block: int, seq_len: int | None = None,
               batch_size: int | None = None, progress: bool = False,
               on_batch: Callable[[int], None] | None = None) -> tuple[np.ndarray, int]:
    """``(mass [layers, heads, n, n], examples read)``: the attention mass of ``run``'s model on
    up to ``examples`` examples of ``split``, in tiles of ``block`` over ``seq_len`` tokens
    (default: the run's ``data.seq_len``, rounded up to whole blocks). Padding queries count
    nothing; every real query contributes its probabilities (summing to 1)."""
    if examples < 1:
        raise ValueError(f"--examples must be >= 1, got {examples}")
    config = run.config
    length = seq_len or config.data.seq_len or run.model_config.max_len
    length = block * math.ceil(length / block)
    if length > run.model_config.max_len:
        raise ValueError(f"{length} tokens (whole blocks of {block}) exceed the model's max_len "
                         f"{run.model_config.max_len}; pass a smaller --seq-len or --block")
    # one layer's [batch, heads, T, T] float32 probabilities within ~256 MB
    fits = max(1, (256 << 20) // (run.model_config.n_heads * length * length * 4))
    bs = batch_size or min(config.data.eval_batch_size, examples, fits)
    config = config.replace(data={"eval_split": split, "eval_batches": 0, "eval_batch_size": bs})
    batches = inputs_lib.eval_batches(config, run.tokenizer)
    model, task, n = run.model, run.task, length // block

    @jax.jit
    def mass_of(params, ids, valid_q, extra):
        out = model.apply({"params": inference_params(params)}, ids, deterministic=True, output_attentions=True,
                          **extra)
        per_layer = []
        for w in out.attentions:  # [B, N, T, T] each
            w = w.astype(jnp.float32) * valid_q[:, None, :, None]
            B, N = w.shape[:2]
            per_layer.append(w.reshape(B, N, n, block, n, block).sum(axis=(0, 3, 5)))
        return jnp.stack(per_layer)

    total = np.zeros((run.model_config.n_layers, run.model_config.n_heads, n, n), np.float64)
    seen = 0
    bar = progress_bar(total=examples, desc="attention mass", unit="example", file=sys.stderr) if progress else None
    for batch in batches:
        ids = _pad_to(batch["inputs"], length)
        extra = {k: _pad_to(v, length, False if np.asarray(v).dtype == bool else 0)
                 for k, v in model_inputs(task, batch).items()}
        valid_q = extra.get("kv_valid", np.ones(ids.shape, bool)).astype(bool)
        rows = batch.get("example_valid")
        rows = np.ones(len(ids), bool) if rows is None else np.asarray(rows, bool)
        take = np.flatnonzero(rows)[: examples - seen]
        valid_q = valid_q & np.isin(np.arange(len(ids)), take)[:, None]
        total += np.asarray(mass_of(run.params, jnp.asarray(ids), jnp.asarray(valid_q), extra), np.float64)
        seen += len(take)
        if bar is not None:
            bar.update(len(take))
        if on_batch is not None:
            on_batch(seen)
        if seen >= examples:
            break
    if bar is not None:
        bar.close()
    if seen == 0:
        raise ValueError(f"split {split!r} gave no examples")
    return total, seen


def derive(run: Run, split: str, examples: int, density: float, out: str, *, block: int | None = None,
           seq_len: int | None = None, layers: int | None = None, heads: int | None = None, raw: bool = False,
           max_tiles: int | None = None, share_tolerance: float = derived_lib.SHARE_TOLERANCE,
           batch_size: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Measures the mass, fits the layout and writes ``out`` (and its mass array); returns the
    file's payload. ``layers``/``heads``: the student's, when they differ from the teacher's
    (consecutive teacher layers and heads are averaged into each). ``max_tiles``: the tiles
    each layer may cost the XLA kernel per head (:func:`memgpt_jax.attention.derived.fit`)."""
    block = block or run.model_config.attention.block_size
    derived_lib.budget_blocks(density, 1)  # the density's range, before any work
    mass, seen = block_mass(run, split, examples, block=block, seq_len=seq_len, batch_size=batch_size,
                            progress=progress)
    mass = derived_lib.group_mass(mass, layers or mass.shape[0], heads or mass.shape[1])
    spec = derived_lib.fit(mass, density, block=block, raw=raw, max_tiles=max_tiles, share_tolerance=share_tolerance)
    provenance = {"teacher": run.path, "teacher_step": run.step, "dataset": run.config.data.name or
                  run.config.data.dataset, "split": split, "examples": seen, "density": density,
                  "max_kernel_tiles": max_tiles, "share_tolerance": share_tolerance,
                  "teacher_layers": run.model_config.n_layers, "teacher_heads": run.model_config.n_heads,
                  "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    return derived_lib.write_file(out, spec, mass, provenance)


__all__ = ["block_mass", "derive"]
