"""Losses for pretraining, fine-tuning and knowledge distillation.

Pure functions of arrays (plus one small Flax module, ``HiddenProjection``).
Conventions, everywhere:

- Everything is computed in float32 whatever the input dtype.
- A mask is bool (or 0/1) of the shape of the per-position loss, ``False`` on
  padding. Masked positions are replaced by harmless values *before* any math
  (the "double where"), so garbage there (inf, NaN, huge numbers) changes
  neither the loss nor its gradient.
- A masked mean divides by ``max(#valid, 1)``: a fully masked batch gives 0.
- Teacher inputs go through ``jax.lax.stop_gradient``.

Log-probabilities come from ``log_softmax``; terms ``p * (log p - log q)`` are
dropped where ``p == 0``, so ``-inf`` logits (e.g. padded vocabulary entries)
give neither NaN values nor NaN gradients.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from memgpt_jax.run_config import KD_KINDS
from memgpt_jax.tasks.losses import (  # noqa: F401  (the supervised losses, declared with the tasks)
    _ce, _clean, _masked_mean, _valid, classification_cross_entropy, lm_cross_entropy, span_cross_entropy,
)

Array = jax.Array
F32 = jnp.float32


def _kl(logp: Array, logq: Array) -> Array:
    """``KL(p || q) = sum_c p_c (log p_c - log q_c)`` over the last axis, 0 * log 0 = 0."""
    p = jnp.exp(logp)
    diff = jnp.where(p > 0, logp - logq, 0.0)
    return jnp.sum(p * diff, axis=-1)


# --------------------------------------------------------------------------- logit distillation


def kd_divergence(
    student_logits: Array,
    teacher_logits: Array,
    mask: Array | None = None,
    *,
    kind: str = "forward_kl",
    temperature: float = 2.0,
    beta: float = 0.5,
) -> Array:
    """Divergence over the last axis, mean over valid leading positions.

    With ``p_t = softmax(z_t / T)`` and ``p_s = softmax(z_s / T)``:

    - ``forward_kl``: ``T^2 KL(p_t || p_s)`` (Hinton et al.; T^2 keeps gradient
      scale independent of T).
    - ``reverse_kl``: ``T^2 KL(p_s || p_t)`` (mode-seeking).
    - ``jsd``: ``T^2 [beta KL(p_t || m) + (1 - beta) KL(p_s || m)]``,
      ``m = beta p_t + (1 - beta) p_s``; bounded by ``T^2 log 2`` at beta = 0.5.
    - ``mse``: ``mean_c (z_s - z_t)^2`` on raw logits (T is ignored).
    """
    if kind not in KD_KINDS:
        raise ValueError(f"unknown kd kind {kind!r}; choose one of {KD_KINDS}")
    valid = _valid(mask, student_logits.shape[:-1])
    z_s = _clean(student_logits, valid)
    z_t = _clean(jax.lax.stop_gradient(teacher_logits), valid)
    if kind == "mse":
        return _masked_mean(jnp.mean(jnp.square(z_s - z_t), axis=-1), valid)
    logp_s = jax.nn.log_softmax(z_s / temperature, axis=-1)
    logp_t = jax.nn.log_softmax(z_t / temperature, axis=-1)
    if kind == "forward_kl":
        div = _kl(logp_t, logp_s)
    elif kind == "reverse_kl":
        div = _kl(logp_s, logp_t)
    else:  # jsd: log m by logaddexp (exact at beta in {0, 1}); entries where both
        # p are 0 are dropped by _kl, and kept off logaddexp(-inf, -inf) whose gradient is NaN.
        dead = (jnp.exp(logp_t) == 0) & (jnp.exp(logp_s) == 0)
        a = jnp.where(dead, 0.0, jnp.log(F32(beta)) + logp_t)
        log_m = jnp.logaddexp(a, jnp.where(dead, 0.0, jnp.log(F32(1.0 - beta)) + logp_s))
        div = beta * _kl(logp_t, log_m) + (1.0 - beta) * _kl(logp_s, log_m)
    return temperature**2 * _masked_mean(div, valid)


def distillation_loss(
    student_logits: Array,
    teacher_logits: Array,
    hard_loss: Array,
    mask: Array | None = None,
    *,
    kind: str = "forward_kl",
    temperature: float = 2.0,
    alpha: float = 0.5,
    beta: float = 0.5,
) -> tuple[Array, dict[str, Array]]:
    """``alpha * kd_divergence(...) + (1 - alpha) * hard_loss``."""
    kd = kd_divergence(student_logits, teacher_logits, mask, kind=kind, temperature=temperature, beta=beta)
    hard = jnp.asarray(hard_loss, F32)
    loss = alpha * kd + (1.0 - alpha) * hard
    return loss, {"kd": kd, "hard": hard, "loss": loss}


def topk_teacher(teacher_logits: Array, k: int) -> tuple[Array, Array]:
    """The teacher's ``k`` largest logits and their int32 indices along the last axis.

    Values keep the input dtype (bf16 halves the cache); computed under stop_gradient.
    """
    values, indices = jax.lax.top_k(jax.lax.stop_gradient(teacher_logits), k)
    return values, indices.astype(jnp.int32)


def kd_divergence_topk(
    student_logits: Array,
    teacher_values: Array,
    teacher_indices: Array,
    mask: Array | None = None,
    *,
    temperature: float = 2.0,
) -> Array:
    """Forward KL against a cached top-k teacher, ``T^2`` scaled, mean over valid positions.

    ``T^2 sum_{i in topk} q_i (log q_i - log p_s[i])`` with ``q = softmax(v / T)``
    over the k cached logits and ``log p_s = log_softmax(z_s / T)`` over the
    full vocabulary, gathered at the k indices.

    Approximation: the teacher's mass outside its top k is dropped and the rest
    renormalised, so the student is not told how to spread the tail (it is
    still normalised over the full vocabulary, so tail mass is penalised only
    through the top-k terms). Exact when ``k`` equals the vocabulary size; the
    error grows with the teacher's tail mass, i.e. with T.
    """
    valid = _valid(mask, student_logits.shape[:-1])
    logp_s = jax.nn.log_softmax(_clean(student_logits, valid) / temperature, axis=-1)
    values = _clean(jax.lax.stop_gradient(teacher_values), valid)
    indices = _clean(teacher_indices, valid)
    logq = jax.nn.log_softmax(values / temperature, axis=-1)
    div = _kl(logq, jnp.take_along_axis(logp_s, indices, axis=-1))
    return temperature**2 * _masked_mean(div, valid)


# --------------------------------------------------------------------------- feature distillation


class HiddenProjection(nn.Module):
    """Bias-free ``h_s @ W``, ``W: [embed, teacher_embed]``, mapping student width to teacher width."""

    features: int
    init_std: float = 0.02

    @nn.compact
    def __call__(self, x_BTD: Array) -> Array:
        init = nn.with_logical_partitioning(nn.initializers.normal(self.init_std), ("embed", "teacher_embed"))
        kernel = self.param("kernel", init, (x_BTD.shape[-1], self.features), F32)
        return jnp.einsum("...d,de->...e", x_BTD.astype(F32), kernel, preferred_element_type=F32)


def hidden_alignment(
    student_hidden: Array, teacher_hidden: Array, mask_BT: Array | None = None, *, kind: str = "cosine"
) -> Array:
    """Hidden-state matching for ``[B, T, D]`` states of equal width, mean over valid tokens.

    ``cosine``: ``1 - <h_s, h_t> / (|h_s| |h_t|)`` (with a tiny epsilon under the
    norms, so zero vectors are safe); ``mse``: ``mean_d (h_s - h_t)^2``.
    Project the student with ``HiddenProjection`` first when widths differ.
    """
    if student_hidden.shape[-1] != teacher_hidden.shape[-1]:
        raise ValueError(
            f"widths differ ({student_hidden.shape[-1]} vs {teacher_hidden.shape[-1]}); use HiddenProjection"
        )
    valid_BT = _valid(mask_BT, student_hidden.shape[:-1])
    h_s = _clean(student_hidden, valid_BT)
    h_t = _clean(jax.lax.stop_gradient(teacher_hidden), valid_BT)
    if kind == "cosine":
        unit = lambda h: h * jax.lax.rsqrt(jnp.sum(jnp.square(h), axis=-1, keepdims=True) + 1e-12)  # noqa: E731
        per_tok = 1.0 - jnp.sum(unit(h_s) * unit(h_t), axis=-1)
    elif kind == "mse":
        per_tok = jnp.mean(jnp.square(h_s - h_t), axis=-1)
    else:
        raise ValueError(f"unknown hidden alignment kind {kind!r}; choose 'cosine' or 'mse'")
    return _masked_mean(per_tok, valid_BT)


def layer_map(n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``: student hidden state ``i`` against teacher hidden state ``j``.

    Arguments are layer counts; ``hidden_states`` hold ``n_layers + 1`` entries
    (embedding output first), so ``i`` runs over ``0..n_student`` and
    ``j = round(i * n_teacher / n_student)``: 0 -> 0, last -> last, uniform in
    between (6 student vs 12 teacher layers: every other teacher layer).
    """
    if n_student < 1 or n_teacher < 1:
        raise ValueError(f"layer counts must be >= 1, got {n_student} and {n_teacher}")
    return [(i, (2 * i * n_teacher + n_student) // (2 * n_student)) for i in range(n_student + 1)]


def _group_heads(attn_BNTS: Array, n: int) -> Array:
    """Averages consecutive groups of heads down to ``n`` heads."""
    b, heads, t, s = attn_BNTS.shape
    return attn_BNTS.reshape(b, n, heads // n, t, s).mean(axis=2)


def attention_transfer(
    student_attn_BNTS: Array, teacher_attn_BNTS: Array, mask_BT: Array | None = None, *, eps: float = 1e-10
) -> Array:
    """Mean over heads and valid query rows of ``KL(A_t[row] || A_s[row])`` on attention probabilities.

    Head counts may differ: when one divides the other, the larger side averages
    groups of consecutive heads down to the smaller count; otherwise both
    average all heads. Rows are compared as ``sum_s a_t (log a_t - log max(a_s, eps))``
    with ``0 log 0 = 0``, so zeros (masked keys) are safe; ``mask_BT`` marks valid queries.
    """
    n_s, n_t = student_attn_BNTS.shape[1], teacher_attn_BNTS.shape[1]
    n = min(n_s, n_t) if max(n_s, n_t) % min(n_s, n_t) == 0 else 1
    b, _, t, _ = student_attn_BNTS.shape
    valid_BT = _valid(mask_BT, (b, t))
    valid_BNT = jnp.broadcast_to(valid_BT[:, None, :], (b, n, t))
    rows = valid_BT[:, None, :, None]
    a_s = _group_heads(jnp.where(rows, student_attn_BNTS.astype(F32), 0.0), n)
    a_t = _group_heads(jnp.where(rows, jax.lax.stop_gradient(teacher_attn_BNTS).astype(F32), 0.0), n)
    log_t = jnp.log(jnp.where(a_t > 0, a_t, 1.0))
    kl_BNT = jnp.sum(jnp.where(a_t > 0, a_t * (log_t - jnp.log(jnp.maximum(a_s, eps))), 0.0), axis=-1)
    return _masked_mean(kl_BNT, valid_BNT)
