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

import dataclasses
import functools
import numbers
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


def dense_cpu_tile(seq_len: int) -> int:
    """The tile of the causal block kernel that ``impl="auto"`` runs dense attention with on
    CPU for ``seq_len`` query tokens (0: the oracle).

    XLA:CPU's dots reach a useful share of the matmul peak only on large tiles, while a tile
    beyond a quarter of the sequence computes mostly masked scores: 128 below 512 tokens,
    256 below 1,024, 512 from there (the tile study in ``benchmarks/HISTORY.md``
    measured the choice). Below 128 tokens the oracle's whole score matrix is small."""
    if seq_len >= 1024:
        return 512
    if seq_len >= 512:
        return 256
    return 128 if seq_len >= 128 else 0


def _auto_dense_attention(config: AttentionConfig) -> AttentionFn:
    """Dense attention for ``impl="auto"``: on CPU, the causal block kernel (tiles from
    :func:`dense_cpu_tile`) for the training / prompt forward; the oracle for attention maps,
    KV-cache decoding, short sequences and other backends."""
    blocked: dict[int, AttentionFn] = {}

    def attention_fn(q, k, v, *, q_offset=0, kv_valid=None, q_segment_ids=None, kv_segment_ids=None,
                     return_weights=False):
        tile = dense_cpu_tile(q.shape[1])
        static_zero = isinstance(q_offset, numbers.Integral) and int(q_offset) == 0
        if (jax.default_backend() != "cpu" or return_weights or not static_zero or not tile
                or k.shape[1] != q.shape[1]):
            return causal_attention(q, k, v, q_offset=q_offset, kv_valid=kv_valid, q_segment_ids=q_segment_ids,
                                    kv_segment_ids=kv_segment_ids, return_weights=return_weights)
        if tile not in blocked:
            blocked[tile] = make_block_attention_fn(dataclasses.replace(config, impl="xla", block_size=tile))
        return blocked[tile](q, k, v, kv_valid=kv_valid, q_segment_ids=q_segment_ids,
                             kv_segment_ids=kv_segment_ids)

    return attention_fn


def make_attention_fn(config: AttentionConfig, layer: int = 0) -> AttentionFn:
    """The model-facing attention function for ``config`` (one object per config, and per
    layer for a derived layout, whose layers differ; ``layer`` is ignored otherwise).

    Dense attention (``pattern="dense"``): with ``impl="reference"`` the oracle (the whole
    score matrix); with ``"xla"`` / ``"pallas"``, the block kernels on the causal layout
    (``block_size`` tiles): the same result, computed tile by tile without the
    upper-triangle tiles and without materialising the whole score matrix; with
    ``"auto"``, the xla block kernel on CPU with a tile chosen by the sequence length
    (:func:`dense_cpu_tile`; 1.6-3x faster than the oracle forward + backward from 256
    tokens) and the oracle elsewhere; with ``"fused"``, ``jax.nn.dot_product_attention``
    (cuDNN's flash kernel on NVIDIA GPUs, the dense baseline of the GPU benchmarks).
    Sparse patterns run ``impl`` on their layout."""
    return _attention_fn(config, layer if config.varies_by_layer else 0)


@functools.lru_cache(maxsize=None)
def _attention_fn(config: AttentionConfig, layer: int) -> AttentionFn:
    if config.is_dense:
        if config.impl == "fused":
            return fused_causal_attention
        if config.impl == "reference":
            return causal_attention
        if config.impl == "auto":
            return _auto_dense_attention(config)
    return make_block_attention_fn(config, layer)


__all__ = [
    "AttentionFn", "BlockLayout", "block_sparse_attention", "causal_attention", "dense_cpu_tile", "layout",
    "make_attention_fn",
    "reference_attention", "resolve_impl",
]
