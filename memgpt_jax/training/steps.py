"""The training objective as a sum of named terms, and the pure train step (evaluation: ``training/evaluate.py``).

``train_step(state, batch, rng, teacher_params) -> (state, metrics)`` is a pure
function, compiled once. Losses are combined as weighted sums (the weight a task's
loss returns: valid tokens for token-level tasks, examples otherwise) and divided by the
total weight at the end, so gradient accumulation, pmap and pjit all compute exactly
the global-batch mean, whatever the padding on each shard.

The objective (``make_loss_fn``) is ``alpha * kd + (1 - alpha) * hard + hidden_weight *
hidden + attention_weight * attention``, each term a small function below: ``hard_term``
(the task's own loss, :mod:`memgpt_jax.tasks`), ``logit_kd_term`` (against the teacher's
logits, after ``teacher_logits``) or ``topk_kd_term`` (against a cached top-k teacher),
``hidden_term`` and ``attention_term``. Without a teacher it is ``hard`` alone.

Teacher-logit transform (``teacher_logits``): a batch that carries ``teacher_scale [B]``
and ``teacher_offset`` (broadcastable to the teacher's logits) is distilled towards
``scale * teacher_logits + offset``, per example; the classification pipeline attaches
them from ``distill.teacher_offsets`` (a stacked teacher whose other member's part was
computed ahead, one row per training record). Any task whose inputs attach the two keys
gets the same.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from memgpt_jax import tasks
from memgpt_jax.run_config import DistillConfig
from memgpt_jax.training import losses, topk_cache
from memgpt_jax.training.state import TrainState

Terms = dict[str, jax.Array]


def model_inputs(task: str, batch: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of ``model.apply`` taken from a batch."""
    return tasks.get(task).batch_inputs(batch)


def task_loss(task: str, out: Any, batch: dict[str, Any],
              label_smoothing: float = 0.0) -> tuple[jax.Array, dict[str, jax.Array], jax.Array]:
    """The hard-label loss: ``(mean loss, metrics, weight)``; ``label_smoothing`` for classification."""
    loss, metrics, weight = tasks.get(task).loss(out, batch, label_smoothing)
    return loss, {k: v for k, v in metrics.items() if k != "tokens"}, weight


def teacher_logits(logits: jax.Array, batch: dict[str, Any]) -> jax.Array:
    """The transform hook: ``teacher_scale * logits + teacher_offset`` per example when the
    batch carries them (see the module docstring), else ``logits`` unchanged."""
    if "teacher_offset" not in batch:
        return logits
    scale = batch["teacher_scale"].reshape((-1,) + (1,) * (logits.ndim - 1))
    return logits.astype(jnp.float32) * scale + batch["teacher_offset"]


def logit_kd_term(task: tasks.Task, distill: DistillConfig, out: Any, t_out: Any, batch: dict[str, Any]) -> jax.Array:
    """The divergence from the teacher's (transformed) logits, averaged over the task's logits."""
    mask = task.distill_mask(batch)
    terms = [losses.kd_divergence(s, teacher_logits(t, batch), mask, kind=distill.kind,
                                  temperature=distill.temperature, beta=distill.beta)
             for s, t in zip(task.distill_logits(out), task.distill_logits(t_out))]
    return sum(terms[1:], terms[0]) / len(terms)


def topk_kd_term(task: tasks.Task, distill: DistillConfig, out: Any, batch: dict[str, Any]) -> jax.Array:
    """Forward KL against the cached top-k teacher logits the batch carries."""
    return losses.kd_divergence_topk(out.logits, batch[topk_cache.VALUES], batch[topk_cache.INDICES],
                                     task.distill_mask(batch), temperature=distill.temperature)


def hidden_term(distill: DistillConfig, out: Any, t_out: Any, token_mask: Any, projection: Any = None) -> jax.Array:
    """Hidden-state alignment over the layer map (``projection``: the trained student-to-teacher map)."""
    terms = []
    for s_i, t_i in losses.layer_map(len(out.hidden_states) - 1, len(t_out.hidden_states) - 1):
        h = out.hidden_states[s_i]
        if projection is not None:
            h = losses.HiddenProjection(t_out.hidden_states[t_i].shape[-1]).apply({"params": projection}, h)
        terms.append(losses.hidden_alignment(h, t_out.hidden_states[t_i], token_mask, kind=distill.hidden_kind))
    return sum(terms) / len(terms)


def attention_term(out: Any, t_out: Any, token_mask: Any) -> jax.Array:
    """Attention transfer over the layer map (the embedding pair, which has no attention, skipped)."""
    pairs = losses.layer_map(len(out.attentions), len(t_out.attentions))
    att = [losses.attention_transfer(out.attentions[max(s - 1, 0)], t_out.attentions[max(t - 1, 0)], token_mask)
           for s, t in pairs if s > 0]
    return sum(att) / max(len(att), 1)


def combine(terms: Terms, distill: DistillConfig) -> jax.Array:
    """``alpha * kd + (1 - alpha) * hard`` plus the weighted feature terms present in ``terms``."""
    loss = distill.alpha * terms["kd"] + (1 - distill.alpha) * terms["hard"]
    if "hidden" in terms:
        loss = loss + distill.hidden_weight * terms["hidden"]
    if "attention" in terms:
        loss = loss + distill.attention_weight * terms["attention"]
    return loss


def make_loss_fn(
    task: str,
    model: nn.Module,
    distill: DistillConfig | None = None,
    teacher: nn.Module | None = None,
    label_smoothing: float = 0.0,
) -> Callable[..., tuple[jax.Array, tuple[dict[str, jax.Array], jax.Array]]]:
    """``loss_fn(trainable, batch, rng, teacher_params) -> (loss, (metrics, weight))``;
    ``label_smoothing`` smooths a classifier's hard labels (``train.label_smoothing``)."""
    spec = tasks.get(task)
    cached = bool(distill and distill.topk)
    if distill is not None and teacher is None and not cached:
        raise ValueError("distillation needs a teacher model (or distill.topk with a cache)")
    if cached and not spec.token_level:
        raise ValueError(f"distill.topk: the top-k cache is for token-level distillation, not task {task!r}")
    want_hidden = bool(distill and distill.hidden_weight > 0)
    want_attn = bool(distill and distill.attention_weight > 0)

    def loss_fn(trainable: dict[str, Any], batch: dict[str, Any], rng: jax.Array, teacher_params: Any):
        kwargs = spec.batch_inputs(batch)
        out = model.apply(
            {"params": trainable["params"]}, batch["inputs"], deterministic=False, rngs={"dropout": rng},
            output_hidden_states=want_hidden, output_attentions=want_attn, **kwargs,
        )
        hard, metrics, weight = task_loss(task, out, batch, label_smoothing)
        if distill is None:
            return hard, (metrics, weight)
        terms = {"hard": hard}
        if cached:  # precomputed teacher: no teacher forward in the step
            terms["kd"] = topk_kd_term(spec, distill, out, batch)
        else:
            t_out = jax.lax.stop_gradient(teacher.apply(
                {"params": teacher_params}, batch["inputs"], deterministic=True,
                output_hidden_states=want_hidden, output_attentions=want_attn, **kwargs,
            ))
            terms["kd"] = logit_kd_term(spec, distill, out, t_out, batch)
            token_mask = batch.get("loss_mask", batch.get("kv_valid"))
            if want_hidden:
                terms["hidden"] = hidden_term(distill, out, t_out, token_mask, trainable["aux"].get("hidden_proj"))
            if want_attn:
                terms["attention"] = attention_term(out, t_out, token_mask)
        loss = combine(terms, distill)
        return loss, ({**metrics, **terms, "loss": loss}, weight)

    return loss_fn


def _split_micro(batch: dict[str, Any], n: int) -> dict[str, Any]:
    def split(x: jax.Array) -> jax.Array:
        if x.shape[0] % n:
            raise ValueError(f"batch size {x.shape[0]} is not divisible by train.accum_steps={n}")
        return x.reshape(n, x.shape[0] // n, *x.shape[1:])

    return jax.tree.map(split, batch)


def _weighted_grads(loss_fn: Callable, trainable: Any, batch: Any, rng: jax.Array, teacher_params: Any, accum: int):
    """Sums over micro-batches of ``(loss * w, grads * w, metrics * w, w)``."""

    def one(mb: Any, key: jax.Array):
        def weighted(tr):
            loss, (metrics, w) = loss_fn(tr, mb, key, teacher_params)
            return loss * w, (metrics, w)

        (lw, (metrics, w)), g = jax.value_and_grad(weighted, has_aux=True)(trainable)
        return g, jax.tree.map(lambda m: m * w, metrics), w

    if accum == 1:
        return one(batch, rng)
    micro = _split_micro(batch, accum)
    keys = jax.random.split(rng, accum)

    def body(carry, xs):
        mb, key = xs
        g, m, w = one(mb, key)
        return jax.tree.map(jnp.add, carry, (g, m, w)), None

    zero = jax.eval_shape(one, jax.tree.map(lambda x: x[0], micro), keys[0])
    init = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), zero)
    total, _ = jax.lax.scan(body, init, (micro, keys))
    return total


def make_train_step(
    loss_fn: Callable, tx: optax.GradientTransformation, schedule: optax.Schedule, *,
    accum_steps: int = 1, axis_name: str | None = None,
) -> Callable[[TrainState, Any, jax.Array, Any], tuple[TrainState, dict[str, jax.Array]]]:
    """The pure step. ``rng`` is the run's base key; the step folds in its own
    counter (and the device index when mapped over ``axis_name``, as under pmap),
    so a resumed run draws the same randomness as an uninterrupted one; gradients
    and metrics are summed over ``axis_name``."""

    def train_step(state: TrainState, batch: Any, rng: jax.Array, teacher_params: Any = None):
        key = jax.random.fold_in(rng, state.step)
        if axis_name is not None:
            key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
        trainable = {"params": state.params, "aux": state.aux}
        g, m, w = _weighted_grads(loss_fn, trainable, batch, key, teacher_params, accum_steps)
        if axis_name is not None:
            g, m, w = jax.lax.psum((g, m, w), axis_name)
        w_safe = jnp.maximum(w, 1e-9)
        grads = jax.tree.map(lambda x: x / w_safe, g)
        metrics = {k: v / w_safe for k, v in m.items()}
        new_state = state.apply_gradients(grads, tx)
        metrics["grad_norm"] = optax.global_norm(grads)
        metrics["lr"] = jnp.asarray(schedule(state.step), jnp.float32)
        metrics["weight"] = w
        return new_state, metrics

    return train_step
