"""Kernel bodies of the flash-style block-sparse Pallas attention.

Two families share the per-tile math (``_scores``, ``_online_update``,
``_dq_tile``, ``_dkv_tile``):

- ``*_tpu``: Mosaic style. The grid is ``(batch, head, block, slot)``; the kept
  block indices and tile mask ids are scalar-prefetched (SMEM) and drive the
  ``BlockSpec`` index maps, so the pipeline fetches only kept key (or query)
  blocks; ``pl.when`` skips padding slots and VMEM scratch carries the online
  softmax state across slots.
- ``*_gpu``: Triton style. The grid is ``(batch, head, block)`` and a
  ``lax.fori_loop`` walks the kept blocks of the row, reading the block index
  from the index arrays and slicing the key/value (or query) rows in place.

Every tile takes its exact token mask from the layout's mask table (row
``MASK_FULL`` is all ones), and-ed with segment ids when padding or packing is
present. Rows that keep no key produce zeros (``l == 0``) and zero gradients.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from memgpt_jax.attention.segments import NEG_INF

_F32 = jnp.float32


def _mm(a, b, contract_a: int, contract_b: int):
    """``a @ b`` contracting the given axes, accumulated in float32."""
    return lax.dot_general(a, b, (((contract_a,), (contract_b,)), ((), ())), preferred_element_type=_F32)


def _scores(q_bD, k_bD, keep_bb, scale):
    """Masked scaled scores of one tile, ``[bq, bk]`` float32."""
    return jnp.where(keep_bb, _mm(q_bD, k_bD, 1, 1) * scale, NEG_INF)


def _online_update(q_bD, k_bD, v_bD, keep_bb, m_b1, l_b1, acc_bD, scale):
    """One step of the online softmax over a kept key tile."""
    s_bb = _scores(q_bD, k_bD, keep_bb, scale)
    m_new = jnp.maximum(m_b1, s_bb.max(axis=1, keepdims=True))
    alpha = jnp.exp(m_b1 - m_new)
    p_bb = jnp.where(keep_bb, jnp.exp(s_bb - m_new), 0.0)
    l_new = alpha * l_b1 + p_bb.sum(axis=1, keepdims=True)
    acc_new = alpha * acc_bD + _mm(p_bb.astype(v_bD.dtype), v_bD, 1, 0)
    return m_new, l_new, acc_new


def _finish(m_b1, l_b1, acc_bD):
    """``(out, logsumexp)`` of a row block; rows without keys give 0 and ``NEG_INF``."""
    has_key = l_b1 > 0
    safe_l = jnp.where(has_key, l_b1, 1.0)
    out = jnp.where(has_key, acc_bD / safe_l, 0.0)
    lse = jnp.where(has_key, m_b1 + jnp.log(safe_l), NEG_INF)
    return out, lse


def _probs(q_bD, k_bD, keep_bb, lse_b1, scale):
    return jnp.where(keep_bb, jnp.exp(_scores(q_bD, k_bD, keep_bb, scale) - lse_b1), 0.0)


def _dq_tile(q_bD, k_bD, v_bD, do_bD, keep_bb, lse_b1, delta_b1, scale):
    """Contribution of one key tile to ``dq`` (float32)."""
    p_bb = _probs(q_bD, k_bD, keep_bb, lse_b1, scale)
    ds_bb = p_bb * (_mm(do_bD, v_bD, 1, 1) - delta_b1)
    return _mm(ds_bb.astype(k_bD.dtype), k_bD, 1, 0) * scale


def _dkv_tile(q_bD, k_bD, v_bD, do_bD, keep_bb, lse_b1, delta_b1, scale):
    """Contributions of one query tile to ``(dk, dv)`` of a key tile (float32)."""
    p_bb = _probs(q_bD, k_bD, keep_bb, lse_b1, scale)
    dv = _mm(p_bb.astype(do_bD.dtype), do_bD, 0, 0)
    ds_bb = p_bb * (_mm(do_bD, v_bD, 1, 1) - delta_b1)
    dk = _mm(ds_bb.astype(q_bD.dtype), q_bD, 0, 0) * scale
    return dk, dv


def _split_ids(rest, has_ids: bool):
    if has_ids:
        return rest[0], rest[1], rest[2:]
    return None, None, rest


# --------------------------------------------------------------------------------------
# Mosaic (TPU) style: grid (batch, head, block, slot), scalar-prefetched block lists.
# --------------------------------------------------------------------------------------
def _slot(n, i, w, *, n_rows, width, per_head):
    h = n if per_head else 0
    return (h * n_rows + i) * width + w, h * n_rows + i


def fwd_kernel_tpu(idx_ref, cnt_ref, mid_ref, q_ref, k_ref, v_ref, mask_ref, *rest,
                   scale, n_rows, width, per_head, has_ids):
    qid_ref, kvid_ref, rest = _split_ids(rest, has_ids)
    o_ref, lse_ref, m_sc, l_sc, acc_sc = rest
    n, i, w = pl.program_id(1), pl.program_id(2), pl.program_id(3)
    _, row = _slot(n, i, w, n_rows=n_rows, width=width, per_head=per_head)

    @pl.when(w == 0)
    def _init():
        m_sc[...] = jnp.full(m_sc.shape, NEG_INF, _F32)
        l_sc[...] = jnp.zeros(l_sc.shape, _F32)
        acc_sc[...] = jnp.zeros(acc_sc.shape, _F32)

    @pl.when(w < cnt_ref[row])
    def _step():
        keep = mask_ref[...] != 0
        if has_ids:
            keep = keep & (qid_ref[...] == kvid_ref[...])
        m, l, acc = _online_update(q_ref[...], k_ref[...], v_ref[...], keep,
                                   m_sc[...], l_sc[...], acc_sc[...], scale)
        m_sc[...], l_sc[...], acc_sc[...] = m, l, acc

    @pl.when(w == width - 1)
    def _done():
        out, lse = _finish(m_sc[...], l_sc[...], acc_sc[...])
        o_ref[...] = out.astype(o_ref.dtype)
        lse_ref[...] = lse


def dq_kernel_tpu(idx_ref, cnt_ref, mid_ref, q_ref, k_ref, v_ref, mask_ref, *rest,
                  scale, n_rows, width, per_head, has_ids):
    qid_ref, kvid_ref, rest = _split_ids(rest, has_ids)
    do_ref, lse_ref, delta_ref, dq_ref, dq_sc = rest
    n, i, w = pl.program_id(1), pl.program_id(2), pl.program_id(3)
    _, row = _slot(n, i, w, n_rows=n_rows, width=width, per_head=per_head)

    @pl.when(w == 0)
    def _init():
        dq_sc[...] = jnp.zeros(dq_sc.shape, _F32)

    @pl.when(w < cnt_ref[row])
    def _step():
        keep = mask_ref[...] != 0
        if has_ids:
            keep = keep & (qid_ref[...] == kvid_ref[...])
        dq_sc[...] += _dq_tile(q_ref[...], k_ref[...], v_ref[...], do_ref[...], keep,
                               lse_ref[...], delta_ref[...], scale)

    @pl.when(w == width - 1)
    def _done():
        dq_ref[...] = dq_sc[...].astype(dq_ref.dtype)


def dkv_kernel_tpu(idx_ref, cnt_ref, mid_ref, q_ref, k_ref, v_ref, mask_ref, *rest,
                   scale, n_rows, width, per_head, has_ids):
    """Grid ``(batch, head, key block, slot)`` over the transposed lists (``n_rows = nk``)."""
    qid_ref, kvid_ref, rest = _split_ids(rest, has_ids)
    do_ref, lse_ref, delta_ref, dk_ref, dv_ref, dk_sc, dv_sc = rest
    n, j, w = pl.program_id(1), pl.program_id(2), pl.program_id(3)
    _, col = _slot(n, j, w, n_rows=n_rows, width=width, per_head=per_head)

    @pl.when(w == 0)
    def _init():
        dk_sc[...] = jnp.zeros(dk_sc.shape, _F32)
        dv_sc[...] = jnp.zeros(dv_sc.shape, _F32)

    @pl.when(w < cnt_ref[col])
    def _step():
        keep = mask_ref[...] != 0
        if has_ids:
            keep = keep & (qid_ref[...] == kvid_ref[...])
        dk, dv = _dkv_tile(q_ref[...], k_ref[...], v_ref[...], do_ref[...], keep,
                           lse_ref[...], delta_ref[...], scale)
        dk_sc[...] += dk
        dv_sc[...] += dv

    @pl.when(w == width - 1)
    def _done():
        dk_ref[...] = dk_sc[...]
        dv_ref[...] = dv_sc[...]


# --------------------------------------------------------------------------------------
# Triton (GPU) style: grid (batch, head, block), in-kernel loop over kept blocks.
# --------------------------------------------------------------------------------------
def _row_keep(mask_ref, mid, qid, kvid_ref, kv_start, block):
    keep = mask_ref[mid] != 0
    if qid is not None:
        keep = keep & (qid[:, None] == kvid_ref[pl.ds(kv_start, block)][None, :])
    return keep


def fwd_kernel_gpu(idx_ref, cnt_ref, mid_ref, q_ref, k_ref, v_ref, mask_ref, *rest,
                   scale, n_rows, width, per_head, has_ids, block):
    qid_ref, kvid_ref, (o_ref, lse_ref) = _split_ids(rest, has_ids)
    n, i = pl.program_id(1), pl.program_id(2)
    base, row = _slot(n, i, 0, n_rows=n_rows, width=width, per_head=per_head)
    q = q_ref[...]
    qid = qid_ref[...] if has_ids else None

    def body(w, carry):
        j, mid = idx_ref[base + w], mid_ref[base + w]
        start = pl.multiple_of(j * block, block)
        keep = _row_keep(mask_ref, mid, qid, kvid_ref, start, block)
        k = k_ref[pl.ds(start, block), :]
        v = v_ref[pl.ds(start, block), :]
        return _online_update(q, k, v, keep, *carry, scale)

    d = q.shape[-1]
    init = (jnp.full((block, 1), NEG_INF, _F32), jnp.zeros((block, 1), _F32), jnp.zeros((block, d), _F32))
    m, l, acc = lax.fori_loop(0, cnt_ref[row], body, init)
    out, lse = _finish(m, l, acc)
    o_ref[...] = out.astype(o_ref.dtype)
    lse_ref[...] = lse


def dq_kernel_gpu(idx_ref, cnt_ref, mid_ref, q_ref, k_ref, v_ref, mask_ref, *rest,
                  scale, n_rows, width, per_head, has_ids, block):
    qid_ref, kvid_ref, (do_ref, lse_ref, delta_ref, dq_ref) = _split_ids(rest, has_ids)
    n, i = pl.program_id(1), pl.program_id(2)
    base, row = _slot(n, i, 0, n_rows=n_rows, width=width, per_head=per_head)
    q, do, lse, delta = q_ref[...], do_ref[...], lse_ref[...], delta_ref[...]
    qid = qid_ref[...] if has_ids else None

    def body(w, dq):
        j, mid = idx_ref[base + w], mid_ref[base + w]
        start = pl.multiple_of(j * block, block)
        keep = _row_keep(mask_ref, mid, qid, kvid_ref, start, block)
        k = k_ref[pl.ds(start, block), :]
        v = v_ref[pl.ds(start, block), :]
        return dq + _dq_tile(q, k, v, do, keep, lse, delta, scale)

    dq = lax.fori_loop(0, cnt_ref[row], body, jnp.zeros(q.shape, _F32))
    dq_ref[...] = dq.astype(dq_ref.dtype)


def dkv_kernel_gpu(idx_ref, cnt_ref, mid_ref, q_ref, k_ref, v_ref, mask_ref, *rest,
                   scale, n_rows, width, per_head, has_ids, block):
    """Grid ``(batch, head, key block)``; loops over the query blocks that keep it."""
    qid_ref, kvid_ref, (do_ref, lse_ref, delta_ref, dk_ref, dv_ref) = _split_ids(rest, has_ids)
    n, j = pl.program_id(1), pl.program_id(2)
    base, col = _slot(n, j, 0, n_rows=n_rows, width=width, per_head=per_head)
    k, v = k_ref[...], v_ref[...]
    kvid = kvid_ref[...] if has_ids else None

    def body(w, carry):
        i, mid = idx_ref[base + w], mid_ref[base + w]
        start = pl.multiple_of(i * block, block)
        rows = pl.ds(start, block)
        keep = mask_ref[mid] != 0
        if has_ids:
            keep = keep & (qid_ref[rows][:, None] == kvid[None, :])
        dk, dv = _dkv_tile(q_ref[rows, :], k, v, do_ref[rows, :], keep, lse_ref[rows, :],
                           delta_ref[rows, :], scale)
        return carry[0] + dk, carry[1] + dv

    zeros = jnp.zeros(k.shape, _F32)
    dk, dv = lax.fori_loop(0, cnt_ref[col], body, (zeros, zeros))
    dk_ref[...] = dk
    dv_ref[...] = dv
