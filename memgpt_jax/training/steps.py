"""Loss functions per task, and the pure train step (evaluation: ``training/evaluate.py``).

``train_step(state, batch, rng, teacher_params) -> (state, metrics)`` is a pure
function, compiled once. Losses are combined as weighted sums (weight = valid
tokens for LM, examples otherwise) and divided by the total weight at the end,
so gradient accumulation, pmap and pjit all compute exactly the global-batch
mean, whatever the padding on each shard.

Batch formats (numpy or jax arrays, leading axis = examples):

- ``lm``: ``inputs [B, T] int32``, ``targets [B, T] int32``, ``loss_mask [B, T]``,
  optional ``segment_ids [B, T]``, ``positions [B, T]``;
- ``classification``: ``inputs [B, T]``, ``kv_valid [B, T] bool``, ``label [B]`` (-1: unlabelled,
  trains only through distillation);
- ``qa``: ``inputs``, ``kv_valid``, ``start [B]``, ``end [B]``.
Any task may carry ``example_valid [B]`` (False for filler rows of a last batch).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from memgpt_jax.run_config import TASKS, DistillConfig
from memgpt_jax.training import losses, topk_cache
from memgpt_jax.training.state import TrainState

def model_inputs(task: str, batch: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of ``model.apply`` taken from a batch."""
    if task == "lm":
        keys = ("segment_ids", "positions", "kv_valid")
    else:
        keys = ("kv_valid",)
    return {k: batch[k] for k in keys if k in batch}


def task_loss(task: str, out: Any, batch: dict[str, Any],
              label_smoothing: float = 0.0) -> tuple[jax.Array, dict[str, jax.Array], jax.Array]:
    """The hard-label loss: ``(mean loss, metrics, weight)``; ``label_smoothing`` for classification."""
    ex_mask = batch.get("example_valid")
    if task == "lm":
        mask = batch["loss_mask"].astype(bool)
        if ex_mask is not None:
            mask = mask & ex_mask[:, None].astype(bool)
        loss, metrics = losses.lm_cross_entropy(out.logits, batch["targets"], mask)
        weight = jnp.sum(mask).astype(jnp.float32)
    elif task == "classification":
        # Unlabelled rows (label -1, IMDb's unsupervised reviews) count for distillation only.
        labelled = batch["label"] >= 0 if ex_mask is None else (batch["label"] >= 0) & ex_mask.astype(bool)
        loss, metrics = losses.classification_cross_entropy(out.logits, batch["label"], labelled, label_smoothing)
        weight = jnp.float32(batch["label"].shape[0]) if ex_mask is None else jnp.sum(ex_mask).astype(jnp.float32)
    elif task == "qa":
        loss, metrics = losses.span_cross_entropy(out.start_logits, out.end_logits, batch["start"], batch["end"], ex_mask)
        weight = jnp.float32(batch["start"].shape[0]) if ex_mask is None else jnp.sum(ex_mask).astype(jnp.float32)
    else:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    return loss, {k: v for k, v in metrics.items() if k != "tokens"}, weight


def _distill_mask(task: str, batch: dict[str, Any]) -> jax.Array | None:
    if task == "lm":
        return batch["loss_mask"].astype(bool)
    return batch.get("example_valid")


def make_loss_fn(
    task: str,
    model: nn.Module,
    distill: DistillConfig | None = None,
    teacher: nn.Module | None = None,
    label_smoothing: float = 0.0,
) -> Callable[..., tuple[jax.Array, tuple[dict[str, jax.Array], jax.Array]]]:
    """``loss_fn(trainable, batch, rng, teacher_params) -> (loss, (metrics, weight))``;
    ``label_smoothing`` smooths a classifier's hard labels (``train.label_smoothing``)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    cached = bool(distill and distill.topk)
    if distill is not None and teacher is None and not cached:
        raise ValueError("distillation needs a teacher model (or distill.topk with a cache)")
    if cached and task != "lm":
        raise ValueError("distill.topk: the top-k cache is for language-model distillation (task lm)")
    want_hidden = bool(distill and distill.hidden_weight > 0)
    want_attn = bool(distill and distill.attention_weight > 0)

    def loss_fn(trainable: dict[str, Any], batch: dict[str, Any], rng: jax.Array, teacher_params: Any):
        kwargs = model_inputs(task, batch)
        out = model.apply(
            {"params": trainable["params"]}, batch["inputs"], deterministic=False, rngs={"dropout": rng},
            output_hidden_states=want_hidden, output_attentions=want_attn, **kwargs,
        )
        hard, metrics, weight = task_loss(task, out, batch, label_smoothing)
        if distill is None:
            return hard, (metrics, weight)
        if cached:  # precomputed teacher: no teacher forward in the step
            mask = _distill_mask(task, batch)
            kd = losses.kd_divergence_topk(out.logits, batch[topk_cache.VALUES], batch[topk_cache.INDICES],
                                           mask, temperature=distill.temperature)
            loss = distill.alpha * kd + (1 - distill.alpha) * hard
            return loss, ({**metrics, "kd": kd, "hard": hard, "loss": loss}, weight)
        t_out = teacher.apply(
            {"params": teacher_params}, batch["inputs"], deterministic=True,
            output_hidden_states=want_hidden, output_attentions=want_attn, **kwargs,
        )
        t_out = jax.lax.stop_gradient(t_out)
        mask = _distill_mask(task, batch)
        if task == "qa":
            kd = 0.5 * (
                losses.kd_divergence(out.start_logits, t_out.start_logits, mask, kind=distill.kind,
                                     temperature=distill.temperature, beta=distill.beta)
                + losses.kd_divergence(out.end_logits, t_out.end_logits, mask, kind=distill.kind,
                                       temperature=distill.temperature, beta=distill.beta)
            )
            loss = distill.alpha * kd + (1 - distill.alpha) * hard
            metrics = {**metrics, "kd": kd, "hard": hard}
        else:
            t_logits = t_out.logits
            if "teacher_offset" in batch:  # a stacked teacher: scale * its logits + a per-example offset
                t_logits = t_logits.astype(jnp.float32) * batch["teacher_scale"][:, None] + batch["teacher_offset"]
            loss, dm = losses.distillation_loss(
                out.logits, t_logits, hard, mask, kind=distill.kind,
                temperature=distill.temperature, alpha=distill.alpha, beta=distill.beta,
            )
            metrics = {**metrics, "kd": dm["kd"], "hard": dm["hard"]}
        token_mask = batch.get("loss_mask", batch.get("kv_valid"))
        if want_hidden:
            pairs = losses.layer_map(len(out.hidden_states) - 1, len(t_out.hidden_states) - 1)
            terms = []
            for s_i, t_i in pairs:
                h = out.hidden_states[s_i]
                if "hidden_proj" in trainable["aux"]:
                    h = losses.HiddenProjection(t_out.hidden_states[t_i].shape[-1]).apply(
                        {"params": trainable["aux"]["hidden_proj"]}, h)
                terms.append(losses.hidden_alignment(h, t_out.hidden_states[t_i], token_mask, kind=distill.hidden_kind))
            hid = sum(terms) / len(terms)
            loss = loss + distill.hidden_weight * hid
            metrics = {**metrics, "hidden": hid}
        if want_attn:
            pairs = losses.layer_map(len(out.attentions), len(t_out.attentions))
            att = [losses.attention_transfer(out.attentions[max(s - 1, 0)], t_out.attentions[max(t - 1, 0)], token_mask)
                   for s, t in pairs if s > 0]
            att_loss = sum(att) / max(len(att), 1)
            loss = loss + distill.attention_weight * att_loss
            metrics = {**metrics, "attention": att_loss}
        return loss, ({**metrics, "loss": loss}, weight)

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
