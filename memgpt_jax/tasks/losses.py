"""The hard-label losses of the built-in tasks, and the masked-mean helpers every loss shares.

They sit with the tasks (one layer below training) because a task declares its loss;
``memgpt_jax.training.losses`` re-exports them next to the distillation losses, whose
conventions they share (float32 math, the "double where" on masked positions, a masked
mean that divides by ``max(#valid, 1)``; see that module's docstring).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array
F32 = jnp.float32


# --------------------------------------------------------------------------- helpers


def _valid(mask: Array | None, shape: tuple[int, ...]) -> Array:
    """Bool validity of ``shape``; all True when ``mask`` is None."""
    if mask is None:
        return jnp.ones(shape, bool)
    return jnp.broadcast_to(jnp.asarray(mask) != 0, shape)


def _clean(x: Array, valid: Array, fill: float | int = 0) -> Array:
    """``x`` in float32 (ints kept) with invalid leading positions set to ``fill``."""
    x = jnp.asarray(x)
    x = x if jnp.issubdtype(x.dtype, jnp.integer) else x.astype(F32)
    v = valid.reshape(valid.shape + (1,) * (x.ndim - valid.ndim))
    return jnp.where(v, x, jnp.asarray(fill, x.dtype))


def _masked_mean(x: Array, valid: Array) -> Array:
    """``sum(x * valid) / max(sum(valid), 1)``; x and valid of the same shape."""
    total = jnp.sum(jnp.where(valid, x.astype(F32), 0.0))
    return total / jnp.maximum(jnp.sum(valid, dtype=F32), 1.0)


def _ce(logits_NC: Array, labels_N: Array) -> tuple[Array, Array, Array]:
    """Per-row ``(ce, logsumexp, correct)`` with ``ce = lse - logits[label]``.

    ``correct``: the label's logit is the row's unique maximum. It is read off the max that
    the logsumexp needs anyway, not from an ``argmax``: XLA:CPU runs argmax's (value, index)
    reduce unvectorised, about 6% of a 10M-parameter LM's step over an 8k vocabulary."""
    max_N = jax.lax.stop_gradient(jnp.max(logits_NC, axis=-1))
    shift_N = jnp.where(jnp.isfinite(max_N), max_N, 0.0)
    lse_N = shift_N + jnp.log(jnp.sum(jnp.exp(logits_NC - shift_N[..., None]), axis=-1))
    picked_N = jnp.take_along_axis(logits_NC, labels_N[..., None], axis=-1)[..., 0]
    ties_N = jnp.sum(logits_NC == max_N[..., None], axis=-1)
    correct_N = ((picked_N == max_N) & (ties_N == 1)).astype(F32)
    return lse_N - picked_N, lse_N, correct_N


# --------------------------------------------------------------------------- supervised


def lm_cross_entropy(
    logits_BTV: Array, targets_BT: Array, mask_BT: Array | None = None, z_loss: float = 0.0
) -> tuple[Array, dict[str, Array]]:
    """Token cross-entropy ``CE_t = logsumexp(z_t) - z_t[y_t]``, mean over valid tokens.

    Targets are already aligned with the logits (shift before calling). With
    ``z_loss > 0`` the objective adds ``z_loss * logsumexp(z_t)**2`` (PaLM's
    z-loss, keeps the softmax normaliser near 1). ``metrics["loss"]`` is the
    plain cross-entropy (so ``exp`` of it is the perplexity); when ``z_loss > 0``
    ``metrics["z_loss"]`` holds the added term. ``metrics["tokens"]`` counts valid tokens.
    """
    valid_BT = _valid(mask_BT, targets_BT.shape)
    ce_BT, lse_BT, correct_BT = _ce(_clean(logits_BTV, valid_BT), _clean(targets_BT, valid_BT))
    ce = _masked_mean(ce_BT, valid_BT)
    metrics = {
        "loss": ce,
        "accuracy": _masked_mean(correct_BT, valid_BT),
        "tokens": jnp.sum(valid_BT, dtype=F32),
    }
    loss = ce
    if z_loss:
        metrics["z_loss"] = z_loss * _masked_mean(jnp.square(lse_BT), valid_BT)
        loss = ce + metrics["z_loss"]
    return loss, metrics


def classification_cross_entropy(
    logits_BC: Array, labels_B: Array, mask_B: Array | None = None, label_smoothing: float = 0.0
) -> tuple[Array, dict[str, Array]]:
    """``-sum_c q_c log softmax(z)_c`` with ``q = (1 - eps) onehot(y) + eps / C``, mean over valid rows.

    ``metrics["loss"]`` is the returned (smoothed) loss.
    """
    valid_B = _valid(mask_B, labels_B.shape)
    logits_BC, labels_B = _clean(logits_BC, valid_B), _clean(labels_B, valid_B)
    ce_B, lse_B, correct_B = _ce(logits_BC, labels_B)
    if label_smoothing:
        # -mean_c log p_c = lse - mean_c z_c; mix with the one-hot term.
        uniform_B = lse_B - jnp.mean(logits_BC, axis=-1)
        ce_B = (1.0 - label_smoothing) * ce_B + label_smoothing * uniform_B
    loss = _masked_mean(ce_B, valid_B)
    return loss, {"loss": loss, "accuracy": _masked_mean(correct_B, valid_B)}


def span_cross_entropy(
    start_logits_BT: Array, end_logits_BT: Array, start_B: Array, end_B: Array, mask_B: Array | None = None
) -> tuple[Array, dict[str, Array]]:
    """Extractive QA: ``(CE(start) + CE(end)) / 2`` over the token axis, mean over valid examples.

    Padding *tokens* should carry very negative (or -inf) logits; ``mask_B``
    drops whole examples. ``span_accuracy`` counts examples with both ends right.
    """
    valid_B = _valid(mask_B, start_B.shape)
    ce_s, _, ok_s = _ce(_clean(start_logits_BT, valid_B), _clean(start_B, valid_B))
    ce_e, _, ok_e = _ce(_clean(end_logits_BT, valid_B), _clean(end_B, valid_B))
    loss = _masked_mean(0.5 * (ce_s + ce_e), valid_B)
    return loss, {
        "loss": loss,
        "start_accuracy": _masked_mean(ok_s, valid_B),
        "end_accuracy": _masked_mean(ok_e, valid_B),
        "span_accuracy": _masked_mean(ok_s * ok_e, valid_B),
    }
