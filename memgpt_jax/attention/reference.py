"""The reference: masked attention on the whole score matrix, the oracle every kernel is tested against.

Shapes follow ``jax.nn.dot_product_attention``::

    q_BTNH: [batch, q_len, heads, head_dim]
    k_BSKH, v_BSKH: [batch, kv_len, kv_heads, head_dim]   (kv_heads divides heads)

Scores and softmax are computed in float32 whatever the input dtype; matmuls
take the inputs as they are and accumulate in float32. A query row whose every
key is masked returns zeros (never NaN), and its weights are all zero.

This module is deliberately simple: it materialises the full ``[B, N, T, S]``
score tensor, so it is the reference, not the fast path.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array

_NEG_INF = -1e30  # finite, so fully masked rows never produce NaN


def combine_masks(
    *,
    batch: int,
    q_len: int,
    kv_len: int,
    mask: Array | Any | None = None,
    causal: bool = False,
    q_offset: Array | int = 0,
    kv_valid: Array | None = None,
    q_segment_ids: Array | None = None,
    kv_segment_ids: Array | None = None,
) -> Array | None:
    """Returns a boolean mask broadcastable to ``[B, N, T, S]`` (or ``None``: keep all).

    - ``mask``: bool, broadcastable to ``[B, N, T, S]``; a ``[T, S]`` or ``[N, T, S]``
      block-layout mask works as is.
    - ``causal``: query ``i`` (absolute position ``q_offset + i``) sees key ``j`` iff
      ``j <= q_offset + i``. With ``q_offset=0`` this is ``jax.nn``'s convention.
    - ``kv_valid``: ``[B, S]`` bool, False for padding keys.
    - ``q_segment_ids`` / ``kv_segment_ids``: ``[B, T]`` / ``[B, S]`` ints; a query
      sees only keys of its own segment (packed documents).
    """
    out = None

    def _and(a: Array | None, b: Array) -> Array:
        return b if a is None else jnp.logical_and(a, b)

    if mask is not None:
        m = jnp.asarray(mask, dtype=bool)
        while m.ndim < 4:
            m = m[None]
        out = _and(out, m)
    if causal:
        q_pos = jnp.arange(q_len)[:, None] + q_offset
        k_pos = jnp.arange(kv_len)[None, :]
        out = _and(out, (k_pos <= q_pos)[None, None])
    if kv_valid is not None:
        if kv_valid.shape != (batch, kv_len):
            raise ValueError(f"kv_valid must have shape {(batch, kv_len)}, got {kv_valid.shape}")
        out = _and(out, kv_valid.astype(bool)[:, None, None, :])
    if (q_segment_ids is None) != (kv_segment_ids is None):
        raise ValueError("q_segment_ids and kv_segment_ids must be given together")
    if q_segment_ids is not None:
        if q_segment_ids.shape != (batch, q_len) or kv_segment_ids.shape != (batch, kv_len):
            raise ValueError(
                f"segment ids must have shapes {(batch, q_len)} and {(batch, kv_len)}, "
                f"got {q_segment_ids.shape} and {kv_segment_ids.shape}"
            )
        same = q_segment_ids[:, :, None] == kv_segment_ids[:, None, :]
        out = _and(out, same[:, None])
    return out


def check_shapes(q: Array, k: Array, v: Array) -> tuple[int, int, int, int, int, int]:
    """Validates ``q, k, v`` shapes; returns ``(B, T, S, N, K, H)``."""
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(
            f"q, k, v must be rank 4 [batch, len, heads, head_dim]; got {q.shape}, {k.shape}, {v.shape}"
        )
    B, T, N, H = q.shape
    Bk, S, K, Hk = k.shape
    if k.shape != v.shape:
        raise ValueError(f"k and v shapes differ: {k.shape} vs {v.shape}")
    if Bk != B or Hk != H:
        raise ValueError(f"q {q.shape} and k {k.shape} disagree on batch or head_dim")
    if N % K:
        raise ValueError(f"query heads ({N}) must be a multiple of kv heads ({K})")
    return B, T, S, N, K, H


def reference_attention(
    q_BTNH: Array,
    k_BSKH: Array,
    v_BSKH: Array,
    *,
    mask: Array | Any | None = None,
    causal: bool = False,
    q_offset: Array | int = 0,
    kv_valid: Array | None = None,
    q_segment_ids: Array | None = None,
    kv_segment_ids: Array | None = None,
    scale: float | None = None,
    return_weights: bool = False,
) -> Array | tuple[Array, Array]:
    """Masked softmax attention over the full score matrix.

    Returns ``out_BTNH`` (dtype of ``q``), and with ``return_weights=True`` also
    the float32 attention probabilities ``[B, N, T, S]``.
    """
    B, T, S, N, K, H = check_shapes(q_BTNH, k_BSKH, v_BSKH)
    scale = H**-0.5 if scale is None else scale
    G = N // K  # query heads per kv head
    q_BTKGH = q_BTNH.reshape(B, T, K, G, H)
    scores_BKGTS = jnp.einsum(
        "btkgh,bskh->bkgts", q_BTKGH, k_BSKH, preferred_element_type=jnp.float32
    ) * jnp.float32(scale)
    scores_BNTS = scores_BKGTS.reshape(B, N, T, S)
    keep = combine_masks(
        batch=B, q_len=T, kv_len=S, mask=mask, causal=causal, q_offset=q_offset,
        kv_valid=kv_valid, q_segment_ids=q_segment_ids, kv_segment_ids=kv_segment_ids,
    )
    if keep is not None:
        scores_BNTS = jnp.where(keep, scores_BNTS, _NEG_INF)
    weights_BNTS = jax.nn.softmax(scores_BNTS, axis=-1)
    if keep is not None:  # rows with no key: all-zero weights, zero output
        weights_BNTS = jnp.where(keep, weights_BNTS, 0.0)
    probs_BKGTS = weights_BNTS.reshape(B, K, G, T, S).astype(v_BSKH.dtype)
    out_BTKGH = jnp.einsum(
        "bkgts,bskh->btkgh", probs_BKGTS, v_BSKH, preferred_element_type=jnp.float32
    )
    out_BTNH = out_BTKGH.reshape(B, T, N, H).astype(q_BTNH.dtype)
    if return_weights:
        return out_BTNH, weights_BNTS
    return out_BTNH


def causal_attention(
    q: Array,
    k: Array,
    v: Array,
    *,
    q_offset: Array | int = 0,
    kv_valid: Array | None = None,
    q_segment_ids: Array | None = None,
    kv_segment_ids: Array | None = None,
    return_weights: bool = False,
) -> tuple[Array, Array | None]:
    """The model-facing attention function (see ``memgpt_jax.attention.AttentionFn``).

    Dense attention (every causal pair) by the oracle; returns ``(out, weights or None)``.
    """
    result = reference_attention(
        q, k, v, causal=True, q_offset=q_offset, kv_valid=kv_valid,
        q_segment_ids=q_segment_ids, kv_segment_ids=kv_segment_ids,
        return_weights=return_weights,
    )
    return result if return_weights else (result, None)


def fused_uses_cudnn(dtype: Any) -> bool:
    """Whether :func:`fused_causal_attention` runs cuDNN's kernel (which skips the upper
    triangle) for inputs of ``dtype`` on this backend."""
    return jax.default_backend() == "gpu" and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16)


def fused_causal_attention(
    q: Array,
    k: Array,
    v: Array,
    *,
    q_offset: Array | int = 0,
    kv_valid: Array | None = None,
    q_segment_ids: Array | None = None,
    kv_segment_ids: Array | None = None,
    return_weights: bool = False,
) -> tuple[Array, Array | None]:
    """Dense attention (every causal pair) through ``jax.nn.dot_product_attention``: cuDNN's fused
    flash kernel on NVIDIA GPUs (bf16/f16), XLA's implementation elsewhere.

    The fused call covers plain causal self-attention, the training and prefill case.
    KV-cache decoding (``q_offset``), padding and segment masks, and returned weights
    go to :func:`causal_attention`, which gives the same result for them.
    """
    plain = (isinstance(q_offset, int) and q_offset == 0 and q.shape[1] == k.shape[1] and kv_valid is None
             and q_segment_ids is None and kv_segment_ids is None and not return_weights)
    if not plain:
        return causal_attention(q, k, v, q_offset=q_offset, kv_valid=kv_valid, q_segment_ids=q_segment_ids,
                                kv_segment_ids=kv_segment_ids, return_weights=return_weights)
    impl = "cudnn" if fused_uses_cudnn(q.dtype) else None
    out = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=impl)
    return out.astype(q.dtype), None
