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
``make_attention_fn`` builds it from an ``AttentionConfig``: dense causal
attention for ``pattern="dense"``, block-sparse attention on the layout
``layout.from_config(config, ...)`` for the sparse patterns (forward and
KV-cache decoding, see :mod:`memgpt_jax.attention.decode`).

Block-sparse attention on any layout::

    from memgpt_jax.attention import block_sparse_attention, layout as L
    lay = L.causal(T, block=128) & (L.local(T, block=128, window=3) | L.global_blocks(T, block=128, n=1))
    out = block_sparse_attention(q, k, v, lay, impl="xla")   # or "pallas", "dense", "auto"
"""

from __future__ import annotations

import functools
from typing import Protocol

import jax
import jax.numpy as jnp

from memgpt_jax.attention import layout
from memgpt_jax.attention.common import split_segment_ids
from memgpt_jax.attention.layout import BlockLayout
from memgpt_jax.attention.reference import causal_attention, dense_attention
from memgpt_jax.config import IMPLS as CONFIG_IMPLS
from memgpt_jax.config import AttentionConfig

IMPLS = tuple(i for i in CONFIG_IMPLS if i != "fused")  # kernels for any layout; "fused" is dense-only


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


def resolve_impl(impl: str, head_dim: int, lay: BlockLayout) -> str:
    """``"auto"`` -> ``"xla"`` on CPU, ``"pallas"`` on GPU/TPU when the kernels fit the shapes."""
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; choose one of {IMPLS}")
    if impl != "auto":
        return impl
    if jax.default_backend() == "cpu":
        return "xla"
    from memgpt_jax.attention.pallas import unsupported_reason

    return "xla" if unsupported_reason(head_dim, lay) else "pallas"


def block_sparse_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    layout: BlockLayout,
    *,
    scale: float | None = None,
    kv_valid: jax.Array | None = None,
    segment_ids=None,
    impl: str = "auto",
) -> jax.Array:
    """Attention over the token pairs kept by ``layout``, computing only kept blocks.

    Args:
      q: ``[batch, q_len, heads, head_dim]``.
      k, v: ``[batch, kv_len, kv_heads, head_dim]`` (grouped-query when ``kv_heads < heads``).
      layout: a :class:`layout.BlockLayout` for ``(q_len, kv_len)`` (shared or per head).
      scale: score scale, default ``head_dim ** -0.5``.
      kv_valid: ``[batch, kv_len]`` bool, False for padding keys.
      segment_ids: ``[batch, len]`` ints (self-attention) or a ``(q_ids, kv_ids)``
        pair: queries see keys of their own segment only.
      impl: ``"dense"`` (oracle on the materialised mask), ``"xla"`` (gathered
        blocks, any backend), ``"pallas"`` (flash kernels; interpreted on CPU) or
        ``"auto"`` (``xla`` on CPU, ``pallas`` on GPU/TPU).

    Returns ``[batch, q_len, heads, head_dim]`` in ``q``'s dtype; queries that see
    no key (all padding) give zeros.
    """
    q_ids, kv_ids = split_segment_ids(segment_ids, q.shape[1], k.shape[1])
    impl = resolve_impl(impl, q.shape[-1], layout)
    kw = dict(scale=scale, kv_valid=kv_valid, q_segment_ids=q_ids, kv_segment_ids=kv_ids)
    if impl == "dense":
        from memgpt_jax.attention.common import check_layout

        check_layout(layout, q.shape[1], k.shape[1], q.shape[2])
        return dense_attention(q, k, v, mask=jnp.asarray(layout.to_dense_mask()), **kw)
    if impl == "xla":
        from memgpt_jax.attention.xla import xla_attention

        return xla_attention(q, k, v, layout, **kw)
    from memgpt_jax.attention.pallas import pallas_attention

    return pallas_attention(q, k, v, layout, **kw)


@functools.lru_cache(maxsize=None)
def make_attention_fn(config: AttentionConfig) -> AttentionFn:
    """The model-facing attention function for ``config`` (one object per config).

    Dense attention uses the oracle (``impl`` ``"auto"`` or ``"dense"``); with ``impl``
    ``"xla"`` / ``"pallas"``, the block kernels on the full causal layout: the same
    result, computed tile by tile without the upper-triangle tiles and without
    materialising the whole score matrix; with ``"fused"``,
    ``jax.nn.dot_product_attention`` (cuDNN's flash kernel on NVIDIA GPUs, the dense
    baseline of the GPU benchmarks)."""
    from memgpt_jax.attention.decode import make_sparse_attention_fn

    if config.is_dense:
        if config.impl == "fused":
            from memgpt_jax.attention.reference import fused_causal_attention

            return fused_causal_attention
        if config.impl in ("xla", "pallas"):
            import dataclasses

            return make_sparse_attention_fn(dataclasses.replace(config, pattern="causal"))
        return causal_attention
    return make_sparse_attention_fn(config)


__all__ = [
    "AttentionFn", "BlockLayout", "block_sparse_attention", "causal_attention", "dense_attention",
    "layout", "make_attention_fn", "resolve_impl",
]
