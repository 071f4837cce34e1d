"""Model-facing block attention: full-sequence forward and KV-cache decoding.

:func:`make_block_attention_fn` turns an ``AttentionConfig`` into an
``AttentionFn`` (see :mod:`memgpt_jax.attention`) that computes its layout with
the block kernels: a sparse pattern's layout, or the causal layout for
``pattern="dense"`` (with ``impl="xla"`` / ``"pallas"``). One layout family,
built by :func:`layout.from_config` and cached per ``(config, q_len, kv_len)``,
serves both regimes:

- **forward / prefill** (``q_offset`` is the Python int 0): the block-sparse
  kernel chosen by ``config.impl`` runs on the layout for ``(T, S)`` rounded up
  to whole blocks (padding keys are masked, padding queries dropped);
- **decoding** (``q_offset`` traced, or non-zero): each query at absolute
  position ``p = q_offset + t`` attends to the kept key blocks of layout row
  ``p // block`` of the square cache-length layout, with the exact token mask of
  partial tiles and causality (:func:`decode_attention`). Memory is
  ``O(T * kept keys)``, meant for ``T`` up to a few blocks.

Causal patterns are row-stable, so both regimes give the same rows.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from memgpt_jax.attention import layout as L
from memgpt_jax.attention.block_sparse import block_sparse_attention
from memgpt_jax.attention.segments import NEG_INF, key_segments
from memgpt_jax.attention.reference import check_shapes, reference_attention
from memgpt_jax.attention.xla import to_streams
from memgpt_jax.config import AttentionConfig

Array = jax.Array


@functools.lru_cache(maxsize=64)
def cached_layout(config: AttentionConfig, q_len: int, kv_len: int, layer: int = 0) -> L.BlockLayout:
    """``layout.from_config(config, q_len, kv_len, layer)``, checked causal, built once."""
    return L.from_config(config, q_len, kv_len, layer).require_causal(f"pattern {config.pattern!r}")


def decode_attention(
    q_BTNH: Array,
    k_BSKH: Array,
    v_BSKH: Array,
    layout: L.BlockLayout,
    *,
    q_offset: Array | int,
    scale: float | None = None,
    kv_valid: Array | None = None,
    q_segment_ids: Array | None = None,
    kv_segment_ids: Array | None = None,
) -> Array:
    """Queries at absolute positions ``q_offset + t`` over a cache ``k, v [B, S, K, D]``.

    ``layout`` must be causal with ``kv_len == S`` and ``q_len >= S``; query ``t``
    uses layout row ``(q_offset + t) // block`` (gathered from the layout's block
    lists, which are constants) and keys ``<= q_offset + t`` only. Each query
    gathers its own kept keys, so queries go ``block`` at a time to bound memory.
    """
    B, T, S, N, K, D = check_shapes(q_BTNH, k_BSKH, v_BSKH)
    if layout.kv_len != S:
        raise ValueError(f"layout kv_len={layout.kv_len} != cache length {S}")
    scale = D**-0.5 if scale is None else scale
    step = layout.block
    if T > step:
        parts = [
            decode_attention(
                q_BTNH[:, i:i + step], k_BSKH, v_BSKH, layout, q_offset=q_offset + i, scale=scale,
                kv_valid=kv_valid, kv_segment_ids=kv_segment_ids,
                q_segment_ids=None if q_segment_ids is None else q_segment_ids[:, i:i + step])
            for i in range(0, T, step)
        ]
        return jnp.concatenate(parts, axis=1)
    b, nk = layout.block, layout.n_kv_blocks
    idx, _, mid = layout.kv_lists  # [I, nq, W]
    W = idx.shape[-1]
    pos_T = jnp.asarray(q_offset, jnp.int32) + jnp.arange(T, dtype=jnp.int32)
    pos_c = jnp.clip(pos_T, 0, layout.q_len - 1)
    idx_ITW = jnp.asarray(idx)[:, pos_c // b]
    mid_ITW = jnp.asarray(mid)[:, pos_c // b]
    table = jnp.asarray(layout.mask_table)
    keep_ITWb = table[mid_ITW, (pos_c % b)[None, :, None]]  # the query's row of each tile mask
    k_pos = idx_ITW[..., None] * b + jnp.arange(b)
    keep_ITK = (keep_ITWb & (k_pos <= pos_T[None, :, None, None])).reshape(-1, T, W * b)
    keep = keep_ITK[None, :, :, None, :]  # [1, I, T, 1, K]
    q_ids, kv_ids = key_segments(B, T, S, kv_valid, q_segment_ids, kv_segment_ids)
    if q_ids is not None:
        kv_ids_g = jnp.take(kv_ids.reshape(B, nk, b), idx_ITW, axis=1).reshape(B, -1, T, W * b)
        keep = keep & (q_ids[:, None, :, None] == kv_ids_g)[:, :, :, None, :]

    q_BHTGD, k_BHSD, v_BHSD = to_streams(q_BTNH, k_BSKH, v_BSKH, layout.heads)
    Hk = q_BHTGD.shape[1]

    def gather(x_BHSD):  # -> [B, Hk, T, W * b, D]
        x_BHnbD = x_BHSD.reshape(B, Hk, nk, b, D)
        if idx_ITW.shape[0] == 1:
            g = jnp.take(x_BHnbD, idx_ITW[0], axis=2)
        else:
            g = jax.vmap(lambda x, i: jnp.take(x, i, axis=1), in_axes=(1, 0), out_axes=1)(x_BHnbD, idx_ITW)
        return g.reshape(B, Hk, T, W * b, D)

    k_g, v_g = gather(k_BHSD), gather(v_BHSD)
    scores = jnp.einsum("bhtgd,bhtkd->bhtgk", q_BHTGD, k_g, preferred_element_type=jnp.float32)
    scores = jnp.where(keep, scores * jnp.float32(scale), NEG_INF)
    row_max = jax.lax.stop_gradient(scores.max(axis=-1, keepdims=True))
    probs = jnp.exp(scores - row_max)
    denom = probs.sum(axis=-1, keepdims=True)
    out = jnp.einsum("bhtgk,bhtkd->bhtgd", probs.astype(v_g.dtype), v_g, preferred_element_type=jnp.float32)
    has_key = row_max > NEG_INF / 2
    out = jnp.where(has_key, out / jnp.where(has_key, denom, 1.0), 0.0)
    return out.transpose(0, 2, 1, 3, 4).reshape(B, T, N, D).astype(q_BTNH.dtype)


def _round_up(x: int, m: int) -> int:
    return max(m, math.ceil(x / m) * m)


def _pad_len(x: Array | None, length: int, axis: int, value=0) -> Array | None:
    if x is None or x.shape[axis] == length:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, length - x.shape[axis])
    return jnp.pad(x, widths, constant_values=value)


def make_block_attention_fn(config: AttentionConfig, layer: int = 0):
    """The ``AttentionFn`` computing ``config``'s layout (of ``layer``, for a derived one)
    with the block kernels of ``config.impl`` (see the module docstring)."""
    if config.impl == "fused":
        raise ValueError("impl 'fused' is jax.nn.dot_product_attention, not a block kernel")
    b = config.block_size

    def weights_mask(q_offset, T: int, S: int, size: int) -> Array:
        lay = cached_layout(config, size, size, layer)
        full = jnp.asarray(lay.to_dense_mask())  # [(N,) size, size]
        rows = jax.lax.dynamic_slice_in_dim(full, jnp.asarray(q_offset, jnp.int32), T, axis=-2)
        return rows[..., :S]

    def attention_fn(q, k, v, *, q_offset=0, kv_valid=None, q_segment_ids=None,
                     kv_segment_ids=None, return_weights=False):
        B, T, S, N, K, D = check_shapes(q, k, v)
        static_zero = isinstance(q_offset, (int, np.integer)) and int(q_offset) == 0
        if return_weights:  # exact weights from the oracle on the layout's mask
            size = _round_up(max(T, S) if static_zero else S, b)
            mask = weights_mask(q_offset, T, S, size)
            return reference_attention(q, k, v, mask=mask, causal=True, q_offset=q_offset, kv_valid=kv_valid,
                                   q_segment_ids=q_segment_ids, kv_segment_ids=kv_segment_ids,
                                   return_weights=True)
        Sp = _round_up(S, b)
        if Sp != S:  # pad the keys to whole blocks; padding keys are invalid
            valid = jnp.arange(Sp) < S
            kv_valid = valid[None].repeat(B, 0) if kv_valid is None else _pad_len(kv_valid, Sp, 1, False)
            k, v = _pad_len(k, Sp, 1), _pad_len(v, Sp, 1)
            kv_segment_ids = _pad_len(kv_segment_ids, Sp, 1)
        if not static_zero:
            out = decode_attention(q, k, v, cached_layout(config, Sp, Sp, layer), q_offset=q_offset, kv_valid=kv_valid,
                                   q_segment_ids=q_segment_ids, kv_segment_ids=kv_segment_ids)
            return out, None
        Tp = _round_up(T, b)
        qp, q_seg = _pad_len(q, Tp, 1), _pad_len(q_segment_ids, Tp, 1)
        segments = None if q_seg is None else (q_seg, kv_segment_ids)
        out = block_sparse_attention(qp, k, v, cached_layout(config, Tp, Sp, layer), kv_valid=kv_valid,
                                     segment_ids=segments, impl=config.impl)
        return out[:, :T], None

    return attention_fn
