"""``block_sparse_attention``: attention over the pairs a layout keeps, by the chosen implementation.

::

    from memgpt_jax.attention import block_sparse_attention, layout as L
    lay = L.causal(T, block=128) & (L.local(T, block=128, window=3) | L.global_blocks(T, block=128, n=1))
    out = block_sparse_attention(q, k, v, lay, impl="xla")   # or "pallas", "reference", "auto"
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from memgpt_jax.attention.block_layout import BlockLayout
from memgpt_jax.attention.segments import check_layout, split_segment_ids
from memgpt_jax.attention.pallas import pallas_attention, unsupported_reason
from memgpt_jax.attention.reference import reference_attention
from memgpt_jax.attention.xla import xla_attention
from memgpt_jax.config import IMPLS as CONFIG_IMPLS

IMPLS = tuple(i for i in CONFIG_IMPLS if i != "fused")  # implementations for any layout; "fused" is dense-only


def resolve_impl(impl: str, head_dim: int, lay: BlockLayout) -> str:
    """``"auto"`` -> ``"xla"`` on CPU, ``"pallas"`` on GPU/TPU when the kernels fit the shapes."""
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; choose one of {IMPLS}")
    if impl != "auto":
        return impl
    if jax.default_backend() == "cpu":
        return "xla"
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
      layout: a :class:`~memgpt_jax.attention.layout.BlockLayout` for ``(q_len, kv_len)``
        (shared or per head).
      scale: score scale, default ``head_dim ** -0.5``.
      kv_valid: ``[batch, kv_len]`` bool, False for padding keys.
      segment_ids: ``[batch, len]`` ints (self-attention) or a ``(q_ids, kv_ids)``
        pair: queries see keys of their own segment only.
      impl: ``"reference"`` (the oracle on the materialised mask: every pair
        computed, then masked), ``"xla"`` (gathered blocks, any backend),
        ``"pallas"`` (flash kernels; interpreted on CPU) or ``"auto"`` (``xla`` on
        CPU, ``pallas`` on GPU/TPU).

    Returns ``[batch, q_len, heads, head_dim]`` in ``q``'s dtype; queries that see
    no key (all padding) give zeros.
    """
    q_ids, kv_ids = split_segment_ids(segment_ids, q.shape[1], k.shape[1])
    impl = resolve_impl(impl, q.shape[-1], layout)
    kw = dict(scale=scale, kv_valid=kv_valid, q_segment_ids=q_ids, kv_segment_ids=kv_ids)
    if impl == "reference":
        check_layout(layout, q.shape[1], k.shape[1], q.shape[2])
        return reference_attention(q, k, v, mask=jnp.asarray(layout.to_dense_mask()), **kw)
    if impl == "xla":
        return xla_attention(q, k, v, layout, **kw)
    return pallas_attention(q, k, v, layout, **kw)
