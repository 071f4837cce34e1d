"""Optimisers and learning-rate schedules (optax).

AdamW with a weight-decay mask (matrices decay; biases, norms and embeddings
do not, as in GPT-2/nanoGPT), global-norm gradient clipping, and one of four
schedules chosen by name in the config:

- ``"cosine"``: linear warmup, then cosine decay to ``end_lr_ratio * lr``;
- ``"linear"``: linear warmup, then linear decay;
- ``"constant"``: linear warmup, then flat;
- ``"inverse_sqrt"``: linear warmup, then ``lr * sqrt(warmup / step)``.

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


def make_optimizer(optim: OptimConfig, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW + clipping from the ``optim`` section; returns ``(tx, schedule)``.
    ``optim.total_steps`` 0 means ``total_steps`` (the run's ``train.steps``)."""
    schedule = make_schedule(lr=optim.lr, schedule=optim.schedule, warmup_steps=optim.warmup_steps,
                             total_steps=optim.total_steps or total_steps, end_lr_ratio=optim.end_lr_ratio)
    parts = []
    if optim.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(optim.grad_clip))
    parts.append(optax.adamw(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps, weight_decay=optim.weight_decay,
                             mask=decay_mask))
    return optax.chain(*parts), schedule
