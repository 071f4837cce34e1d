"""Attention for memgpt-jax.

The model calls attention through one function with this contract
(``AttentionFn``)::

    out_BTNH, weights_BNTS_or_None = attention_fn(
        q_BTNH, k_BSKH, v_BSKH, *,
        q_offset,        # absolute position of q[:, 0] (int or traced scalar; KV-cache decoding)
        kv_valid,        # [B, S] bool or None: False for padding keys
        q_segment_ids,   # [B, T] int or None: packed documents
        kv_segment_ids,  # [B, S] int or None
        return_weights,  # bool: also return float32 [B, N, T, S] probabilities
    )

The function owns causality (every memgpt-jax model is causal).
``make_attention_fn`` builds it from an ``AttentionConfig``.
"""

from __future__ import annotations

from typing import Protocol

import jax

from memgpt_jax.attention.reference import causal_attention, dense_attention
from memgpt_jax.config import AttentionConfig


class AttentionFn(Protocol):
    def __call__(
        self,
        q: jax.Array,
        k: jax.Array,
        v: jax.Array,
        *,
        q_offset: jax.Array | int = 0,
        kv_valid: jax.Array | None = None,
        q_segment_ids: jax.Array | None = None,
        kv_segment_ids: jax.Array | None = None,
        return_weights: bool = False,
    ) -> tuple[jax.Array, jax.Array | None]: ...


def make_attention_fn(config: AttentionConfig) -> AttentionFn:
    """The model-facing attention function for ``config``."""
    if config.is_dense:
        return causal_attention
    raise NotImplementedError(f"attention pattern {config.pattern!r} is not available yet")


__all__ = ["AttentionFn", "causal_attention", "dense_attention", "make_attention_fn"]
