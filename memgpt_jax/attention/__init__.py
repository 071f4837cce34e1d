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
``make_attention_fn`` builds it from an ``AttentionConfig``: dense attention
(every causal pair) for ``pattern="dense"``, block-sparse attention on the layout
``layout.from_config(config, ...)`` for the sparse patterns (forward and
KV-cache decoding, see :mod:`memgpt_jax.attention.decode`).

Block-sparse attention on any layout::

    from memgpt_jax.attention import block_sparse_attention, layout as L
    lay = L.causal(T, block=128) & (L.local(T, block=128, window=3) | L.global_blocks(T, block=128, n=1))
    out = block_sparse_attention(q, k, v, lay, impl="xla")   # or "pallas", "reference", "auto"

Modules, from the bottom: ``block_layout`` (the ``BlockLayout`` class) ->
``layout_patterns`` (its constructors) -> ``layout`` (the public face of both);
``reference`` (the oracle), ``common``, ``xla``, ``pallas`` (the kernels) ->
``block_sparse`` (``block_sparse_attention``) -> ``decode`` (the model-facing
block attention) -> this package (``make_attention_fn``).
"""

from __future__ import annotations

import functools
from typing import Protocol

import jax

from memgpt_jax.attention import layout
from memgpt_jax.attention.block_layout import BlockLayout
from memgpt_jax.attention.block_sparse import block_sparse_attention, resolve_impl
from memgpt_jax.attention.decode import make_block_attention_fn
from memgpt_jax.attention.reference import causal_attention, fused_causal_attention, reference_attention
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


@functools.lru_cache(maxsize=None)
def make_attention_fn(config: AttentionConfig) -> AttentionFn:
    """The model-facing attention function for ``config`` (one object per config).

    Dense attention (``pattern="dense"``) uses the oracle with ``impl`` ``"auto"`` or
    ``"reference"``; with ``"xla"`` / ``"pallas"``, the block kernels on the causal
    layout: the same result, computed tile by tile without the upper-triangle tiles
    and without materialising the whole score matrix; with ``"fused"``,
    ``jax.nn.dot_product_attention`` (cuDNN's flash kernel on NVIDIA GPUs, the dense
    baseline of the GPU benchmarks). Sparse patterns run ``impl`` on their layout."""
    if config.is_dense:
        if config.impl == "fused":
            return fused_causal_attention
        if config.impl in ("auto", "reference"):
            return causal_attention
    return make_block_attention_fn(config)


__all__ = [
    "AttentionFn", "BlockLayout", "block_sparse_attention", "causal_attention", "layout", "make_attention_fn",
    "reference_attention", "resolve_impl",
]
