"""Optimisers and learning-rate schedules (optax).

AdamW with a weight-decay mask (matrices decay; biases, norms and embeddings
do not, as in GPT-2/nanoGPT), global-norm gradient clipping, and one of four
schedules chosen by name in the config:

- ``"cosine"``: linear warmup, then cosine decay to ``end_lr_ratio * lr``;
- ``"linear"``: linear warmup, then linear decay;
- ``"constant"``: linear warmup, then flat;
- ``"inverse_sqrt"``: linear warmup, then ``lr * sqrt(warmup / step)``.

``layer_decay < 1`` gives layer-wise rates for fine-tuning (ULMFiT's discriminative
fine-tuning, ELECTRA's layer-wise decay): the head and final norm train at ``lr``,
block ``i`` of ``L`` at ``lr * layer_decay ** (L - i)``, the embeddings at
``lr * layer_decay ** (L + 1)`` (``layer_scales``).

Gradient accumulation is done in the train step (a scan over micro-batches),
not here, so that an accumulated step equals a large-batch step exactly.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from memgpt_jax.run_config import SCHEDULES, OptimConfig


def make_schedule(
    *, lr: float, schedule: str, warmup_steps: int, total_steps: int, end_lr_ratio: float = 0.1
) -> optax.Schedule:
    if schedule not in SCHEDULES:
        raise ValueError(f"optim.schedule: unknown schedule {schedule!r}; choose one of {SCHEDULES}")
    if lr <= 0:
        raise ValueError(f"optim.lr: must be > 0, got {lr}")
    if warmup_steps < 0 or total_steps < 1:
        raise ValueError(f"optim: need warmup_steps >= 0 and total_steps >= 1, got {warmup_steps}, {total_steps}")
    warmup = max(warmup_steps, 0)
    end = lr * end_lr_ratio
    if schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, max(warmup, 1), max(total_steps, warmup + 1), end)
    if schedule == "linear":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, lr, max(warmup, 1)),
             optax.linear_schedule(lr, end, max(total_steps - warmup, 1))],
            [max(warmup, 1)],
        )
    if schedule == "constant":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, lr, max(warmup, 1)), optax.constant_schedule(lr)], [max(warmup, 1)]
        )

    def inverse_sqrt(step: jax.Array) -> jax.Array:
        step = jnp.asarray(step, jnp.float32) + 1.0
        w = jnp.float32(max(warmup, 1))
        return lr * jnp.minimum(step / w, jnp.sqrt(w / step))

    return inverse_sqrt


def decay_mask(params: Any) -> Any:
    """True for parameters that get weight decay: kernels of linear maps (ndim >= 2)
    that are not embeddings."""

    def decide(path: tuple, leaf: jax.Array) -> bool:
        names = [getattr(p, "key", str(p)) for p in path]
        return leaf.ndim >= 2 and "embedding" not in names

    return jax.tree_util.tree_map_with_path(decide, params)


def layer_scales(params: Any, decay: float) -> Any:
    """The rate multiplier of every parameter (see the module docstring), by where it
    sits under ``transformer``: in block ``h_<i>``, in the final norm ``ln_f`` (1), or
    elsewhere there (the embeddings); parameters outside ``transformer`` (heads, the
    distillation projections) get 1. Works on any tree that holds the model's."""

    def where(path: tuple) -> str | None:
        names = [str(getattr(p, "key", p)) for p in path]
        i = names.index("transformer") if "transformer" in names else -1
        return names[i + 1] if 0 <= i < len(names) - 1 else None

    def block(name: str | None) -> int | None:
        return int(name[2:]) if name and name.startswith("h_") and name[2:].isdigit() else None

    paths = [p for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    n = max((block(where(p)) for p in paths if block(where(p)) is not None), default=-1) + 1

    def scale(path: tuple, leaf: Any) -> float:
        name = where(path)
        if name is None or name == "ln_f":
            return 1.0
        i = block(name)
        return decay ** (n - i) if i is not None else decay ** (n + 1)

    return jax.tree_util.tree_map_with_path(scale, params)


def scale_by_layer(decay: float) -> optax.GradientTransformation:
    """Multiplies each update by its :func:`layer_scales` factor (after AdamW: the rate
    and the weight decay of a layer scale together)."""

    def init(params: Any) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        del params
        scales = layer_scales(updates, decay)
        return jax.tree.map(lambda u, s: u * jnp.asarray(s, u.dtype), updates, scales), state

    return optax.GradientTransformation(init, update)


def make_optimizer(optim: OptimConfig, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW + clipping (+ layer-wise rates) from the ``optim`` section; returns ``(tx,
    schedule)``. ``optim.total_steps`` 0 means ``total_steps`` (the run's ``train.steps``)."""
    schedule = make_schedule(lr=optim.lr, schedule=optim.schedule, warmup_steps=optim.warmup_steps,
                             total_steps=optim.total_steps or total_steps, end_lr_ratio=optim.end_lr_ratio)
    parts = []
    if optim.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(optim.grad_clip))
    parts.append(optax.adamw(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps, weight_decay=optim.weight_decay,
                             mask=decay_mask))
    if optim.layer_decay < 1.0:
        parts.append(scale_by_layer(optim.layer_decay))
    return optax.chain(*parts), schedule
