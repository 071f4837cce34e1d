"""Layout checks and the padding/segment masks shared by the block-sparse kernels (XLA, Pallas, decoding)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from memgpt_jax.attention.block_layout import BlockLayout

Array = jax.Array

NEG_INF = -1e30  # finite "minus infinity": fully masked rows never produce NaN
INVALID_KEY = np.iinfo(np.int32).min  # segment id given to padding keys; no query has it


def check_layout(layout: BlockLayout, q_len: int, kv_len: int, heads: int) -> None:
    """Raises ``ValueError`` unless ``layout`` fits ``q [.., q_len, heads, ..]`` and ``k [.., kv_len, ..]``."""
    if not isinstance(layout, BlockLayout):
        raise TypeError(f"layout must be a BlockLayout, got {type(layout).__name__}")
    if (layout.q_len, layout.kv_len) != (q_len, kv_len):
        raise ValueError(
            f"layout is for q_len={layout.q_len}, kv_len={layout.kv_len} but got "
            f"q_len={q_len}, kv_len={kv_len}"
        )
    if layout.heads not in (1, heads):
        raise ValueError(f"layout has {layout.heads} per-head maps but q has {heads} heads")


def key_segments(
    batch: int,
    q_len: int,
    kv_len: int,
    kv_valid: Array | None,
    q_segment_ids: Array | None,
    kv_segment_ids: Array | None,
) -> tuple[Array | None, Array | None]:
    """Folds key padding and segment ids into one pair of int32 id arrays.

    Query ``t`` may see key ``s`` iff ``q_ids[b, t] == kv_ids[b, s]``. Padding keys
    get ``INVALID_KEY`` (``int32`` minimum), which must not be a real segment id.
    Returns ``(None, None)`` when neither padding nor segments are given.
    """
    if (q_segment_ids is None) != (kv_segment_ids is None):
        raise ValueError("q_segment_ids and kv_segment_ids must be given together")
    if kv_valid is None and q_segment_ids is None:
        return None, None
    if q_segment_ids is None:
        q_ids = jnp.zeros((batch, q_len), jnp.int32)
        kv_ids = jnp.zeros((batch, kv_len), jnp.int32)
    else:
        if q_segment_ids.shape != (batch, q_len) or kv_segment_ids.shape != (batch, kv_len):
            raise ValueError(
                f"segment ids must have shapes {(batch, q_len)} and {(batch, kv_len)}, "
                f"got {q_segment_ids.shape} and {kv_segment_ids.shape}"
            )
        q_ids = q_segment_ids.astype(jnp.int32)
        kv_ids = kv_segment_ids.astype(jnp.int32)
    if kv_valid is not None:
        if kv_valid.shape != (batch, kv_len):
            raise ValueError(f"kv_valid must have shape {(batch, kv_len)}, got {kv_valid.shape}")
        kv_ids = jnp.where(kv_valid.astype(bool), kv_ids, INVALID_KEY)
    return q_ids, kv_ids


def split_segment_ids(segment_ids, q_len: int, kv_len: int) -> tuple[Array | None, Array | None]:
    """``segment_ids`` as given to ``block_sparse_attention``: ``None``, one array
    (self-attention, ``q_len == kv_len``) or a ``(q_ids, kv_ids)`` pair."""
    if segment_ids is None:
        return None, None
    if isinstance(segment_ids, (tuple, list)):
        q_ids, kv_ids = segment_ids
        return q_ids, kv_ids
    if q_len != kv_len:
        raise ValueError("a single segment_ids array needs q_len == kv_len; pass (q_ids, kv_ids)")
    return segment_ids, segment_ids
