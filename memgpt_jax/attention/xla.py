"""Gather-based block-sparse attention in plain JAX: the CPU default, a fallback everywhere.

For each query block the kept key/value blocks are gathered (padded to the
largest row of its group), scores are computed on those tiles only, partial
tiles get their exact token mask, and the softmax runs over kept entries only.
Query blocks are processed in chunks (``lax.map`` / ``lax.scan``), so memory is
bounded by one chunk of tiles plus the inputs: linear in sequence length for a
fixed number of kept blocks per row. Rows of very different kept counts (global
query tokens, strided summaries) are split into groups
(:meth:`BlockLayout.row_groups`), so a few full rows do not inflate the padding
of every other row. Outside of ``jax.grad`` (inference, prefill), pairs of query
blocks of a group share one row where the union of their key blocks costs at most a
quarter more tiles (:data:`FORWARD_MERGE`): fewer, larger products. The token masks
of all slots are laid out like the score tiles once per call (a few bytes per kept
pair), so applying them is a streaming select rather than a gather per element.

Two-byte float inputs and outputs (bf16, f16) travel through the gathers and the loops
as their uint16 bit patterns (:func:`_as_bits`): XLA:CPU would otherwise run those gathers,
per-chunk slices and the stacking of the chunks' outputs in float32, converting each whole
input before the loop, moving twice the bytes per chunk, and converting the whole output
buffer there and back at every chunk.

The gradient is a ``custom_vjp`` in the style of FlashAttention: the forward pass
saves only the output and the row log-sum-exp; the backward pass recomputes the
probabilities per chunk and accumulates ``dk``/``dv`` into their blocks
(scatter-add over the same block indices), so nothing of size ``T x S`` is kept.

Shapes inside: ``B`` batch, ``H`` streams (kv heads; query heads for per-head
layouts), ``G`` query heads per stream, ``n`` blocks, ``b`` block size, ``R``
query blocks of a chunk, ``W`` kept slots per row, ``Q = G * b`` query rows per
block, ``D`` head dim, ``I`` layout maps (1 or ``H``).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from memgpt_jax.attention.block_layout import MASK_PAD, BlockLayout
from memgpt_jax.attention.segments import NEG_INF, check_layout, key_segments
from memgpt_jax.attention.reference import check_shapes
from memgpt_jax.cpu_layout import materialized_transpose

Array = jax.Array
_F32 = jnp.float32
_NO_KEY_LSE = 1e30  # log-sum-exp stored for rows without keys: exp(s - lse) == 0

DEFAULT_CHUNK_BYTES = 4 << 20  # f32 score bytes per chunk: stays in the last-level cache


def to_streams(q_BTNH: Array, k_BSKH: Array, v_BSKH: Array, layout_heads: int):
    """Head-major views ``(q [B, H, T, G, D], k [B, H, S, D], v [B, H, S, D])``.

    With a shared layout the streams are the ``K`` kv heads and ``G = N // K``
    query heads ride along each; with per-head layouts every query head is its
    own stream (kv heads repeated).
    """
    B, T, N, D = q_BTNH.shape
    K = k_BSKH.shape[2]
    if layout_heads != 1:
        k_BSKH, v_BSKH = (jnp.repeat(x, N // K, axis=2) for x in (k_BSKH, v_BSKH))
    hk = k_BSKH.shape[2]
    q_BHTGD = q_BTNH.reshape(B, T, hk, N // hk, D).transpose(0, 2, 1, 3, 4)
    return q_BHTGD, k_BSKH.transpose(0, 2, 1, 3), v_BSKH.transpose(0, 2, 1, 3)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Static description of one call: the layout and how its rows are chunked.

    ``merge`` query blocks share one row of the forward pass (their key lists united),
    where that adds at most ``MERGE_MAX_EXTRA`` tiles to the group (:func:`_merge_rows`).
    """

    layout: BlockLayout
    scale: float
    chunk_bytes: int
    merge: int = 1

    def groups(self, B: int, H: int, G: int):
        """Per row group: ``(rows_padded [R', m], n_rows, n_chunks, rows_per_chunk, idx [I, R', W],
        mid [I, R', m, W])`` (NumPy), ``m`` query blocks per row (1, or ``merge`` where it pays)."""
        b = self.layout.block
        out = []
        for rows, idx, mid in self.layout.row_groups():
            n_rows = len(rows)
            rows, idx, mid = _merge_rows(rows, idx, mid, self.merge)
            m, W = rows.shape[1], idx.shape[-1]
            per_row = B * H * G * m * b * W * b * 4
            target = max(1, min(len(rows), self.chunk_bytes // per_row))
            rc = next((r for r in range(target, max(target // 2, 1) - 1, -1) if len(rows) % r == 0), target)
            nc = math.ceil(len(rows) / rc)
            pad = nc * rc - len(rows)  # repeat the last row; its results are dropped
            rows_p = np.concatenate([rows, np.repeat(rows[-1:], pad, axis=0)])
            idx_p = np.concatenate([idx, np.repeat(idx[:, -1:], pad, axis=1)], axis=1)
            mid_p = np.concatenate([mid, np.repeat(mid[:, -1:], pad, axis=1)], axis=1)
            out.append((rows_p, n_rows, nc, rc, idx_p, mid_p))
        return out


# The forward pass outside of jax.grad runs pairs of query blocks as one row (products of 2b query
# rows against the union of their key blocks) where the union costs at most a quarter more tiles:
# on XLA:CPU the larger products more than repay the masked extra. Window + global (+20% tiles),
# `python -m benchmarks.studies.kernel_ab --base 2cad3ad`, AMD EPYC: forward 6-9% faster in bf16
# at 8k / 16k, 9-17% in f32. Under jax.grad the forward keeps single rows, as the backward does:
# merged there, the bf16 forward + backward at 8k ran 15% slower. Four blocks a row were slower
# everywhere (a one-off study).
FORWARD_MERGE = 2
MERGE_MAX_EXTRA = 0.25


def _merge_rows(rows: np.ndarray, idx: np.ndarray, mid: np.ndarray, m: int):
    """``m`` consecutive rows of a group as one: ``(rows [R', m], idx [I, R', W'], mid [I, R', m, W'])``.

    Each merged row keeps the union of its rows' key blocks (ascending, padded by repeating
    the last); a block that one of its query blocks does not keep gets that query block's
    mask ``MASK_PAD``. Returns the group unmerged (``m = 1``) where merging would add more
    than ``MERGE_MAX_EXTRA`` of its tiles, or it has a single row.
    """
    single = rows[:, None], idx, mid[:, :, None]
    R, W = len(rows), idx.shape[-1]
    if m == 1 or R < 2:
        return single
    pad = -R % m
    rows_m = np.concatenate([rows, np.repeat(rows[-1:], pad)]).reshape(-1, m)
    idx_m = np.concatenate([idx, np.repeat(idx[:, -1:], pad, axis=1)], axis=1)
    mid_m = np.concatenate([mid, np.repeat(mid[:, -1:], pad, axis=1)], axis=1)
    I, n = idx.shape[0], len(rows_m)
    idx_m, mid_m = idx_m.reshape(I, n, m, W), mid_m.reshape(I, n, m, W)
    unions = [[np.unique(idx_m[i, r]) for r in range(n)] for i in range(I)]
    width = max(len(u) for per_head in unions for u in per_head)
    if n * m * width > (1 + MERGE_MAX_EXTRA) * R * W:
        return single
    idx_u = np.zeros((I, n, width), np.int32)
    mid_u = np.full((I, n, m, width), MASK_PAD, np.int32)
    for i in range(I):
        for r in range(n):
            u = unions[i][r]
            idx_u[i, r] = np.concatenate([u, np.repeat(u[-1:], width - len(u))])
            for s in range(m):
                real = mid_m[i, r, s] != MASK_PAD  # padding slots repeat a kept block: not its mask
                slot = {int(k): int(t) for k, t in zip(idx_m[i, r, s][real], mid_m[i, r, s][real])}
                mid_u[i, r, s, :len(u)] = [slot.get(int(k), MASK_PAD) for k in u]
    return rows_m, idx_u, mid_u


def _to_chunks(x_Bn, rows_p, nc: int, rc: int):
    """Rows of ``x [B, n, b, H, G, ...]`` -> chunk-major ``[nc, B, rc, m * b, H, G, ...]``, ``rows_p [nc * rc, m]``
    (``m`` query blocks a row; free when B == 1 and the rows are all of them, in order)."""
    if not np.array_equal(rows_p.reshape(-1), np.arange(x_Bn.shape[1])):
        x_Bn = jnp.take(x_Bn, rows_p.reshape(-1), axis=1)
    B, m = x_Bn.shape[0], rows_p.shape[1]
    x = x_Bn.reshape(B, nc, rc, m * x_Bn.shape[2], *x_Bn.shape[3:])
    return jnp.moveaxis(x, 1, 0)


def _from_chunks(x_c, n_rows: int, b: int):
    """Inverse of :func:`_to_chunks`, padding rows dropped: ``[B, n_rows, b, H, G, ...]``."""
    nc, B, rc, qb = x_c.shape[:4]
    return jnp.moveaxis(x_c, 0, 1).reshape(B, nc * rc * (qb // b), b, *x_c.shape[4:])[:, :n_rows]


def _to_tile_chunks(x_Bn, rows_p, nc: int, rc: int):
    """Rows of ``x [B, n, b, H, G, ...]`` -> ``[nc, B, H, rc, G * b, ...]``: one transpose up front.

    (The backward pass reads three such inputs per chunk; transposing them once
    is cheaper there than per chunk, while the forward pass prefers :func:`_tiles`.)
    """
    return jax.vmap(_tiles)(_to_chunks(x_Bn, rows_p, nc, rc))


def _tiles(x_BRbHG):
    """A chunk's rows ``[B, R, b, H, G, ...]`` -> score-tile order ``[B, H, R, G * b, ...]``."""
    B, R, b, H, G = x_BRbHG.shape[:5]
    rest = x_BRbHG.shape[5:]
    perm = (0, 3, 1, 4, 2) + tuple(range(5, 5 + len(rest)))
    return x_BRbHG.transpose(perm).reshape(B, H, R, G * b, *rest)


def _untiles(x_BHRQ, b: int):
    """Inverse of :func:`_tiles`."""
    B, H, R, Q = x_BHRQ.shape[:4]
    rest = x_BHRQ.shape[4:]
    perm = (0, 2, 4, 1, 3) + tuple(range(5, 5 + len(rest)))
    return x_BHRQ.reshape(B, H, R, Q // b, b, *rest).transpose(perm)


def _as_bits(x):
    """A two-byte float array as its uint16 bit patterns (other dtypes unchanged): gathered
    and sliced as they are, where XLA:CPU would run a bf16 gather or loop slice in float32."""
    if jnp.issubdtype(x.dtype, jnp.floating) and x.dtype.itemsize == 2:
        return jax.lax.bitcast_convert_type(x, jnp.uint16)
    return x


def _from_bits(x, dtype):
    """Inverse of :func:`_as_bits` for an array that was ``dtype``."""
    return x if x.dtype == dtype else jax.lax.bitcast_convert_type(x, dtype)


def _take_rows(x, rows, axis: int):
    """``jnp.take`` of float32 rows (the log-sum-exp) as their bits: every gather of the kernel
    moves bits, none converts floats (a property its tests read off the compiled program)."""
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    return jax.lax.bitcast_convert_type(jnp.take(bits, rows, axis=axis), x.dtype)


def _gather_kv(x_BnbHD, idx_IRW, dtype):
    """Kept blocks per row: ``[B, n, b, H, D]`` (bits, :func:`_as_bits`) -> ``[B, H, R, W * b, D]`` in ``dtype``."""
    B, _, b, H, D = x_BnbHD.shape
    I, R, W = idx_IRW.shape
    if I == 1:
        g = jnp.take(x_BnbHD, idx_IRW[0], axis=1)  # [B, R, W, b, H, D]
        g = g.transpose(0, 4, 1, 2, 3, 5).reshape(B, H, R, W * b, D)
    else:
        g = jax.vmap(lambda x, i: jnp.take(x, i, axis=1), in_axes=(3, 0))(x_BnbHD, idx_IRW)  # [H, B, R, W, b, D]
        g = g.transpose(1, 0, 2, 3, 4, 5).reshape(B, H, R, W * b, D)
    return _from_bits(g, dtype)


def _scatter_add_kv(acc_BHnbD, upd_BHRWbD, idx_IRW):
    """``acc[:, h, idx[r, w]] += upd[:, h, r, w]`` (indices may repeat)."""
    if idx_IRW.shape[0] == 1:
        return acc_BHnbD.at[:, :, idx_IRW[0]].add(upd_BHRWbD)
    add = lambda a, u, i: a.at[:, i].add(u)  # noqa: E731
    return jax.vmap(add, in_axes=(1, 1, 0), out_axes=1)(acc_BHnbD, upd_BHRWbD, idx_IRW)


def _mask_chunks(table: np.ndarray, mid: np.ndarray, nc: int, rc: int, transposed: bool) -> Array:
    """Token masks of every slot, laid out like the score tiles of each chunk.

    ``mid [I, R, m, W]`` (``m`` query blocks a row) -> ``[nc, I, rc, m * b, W * b]`` (query-major)
    or, ``transposed``, ``[nc, I, rc, W * b, m * b]``.
    Built once per call: a select reading a contiguous mask is much faster than
    one that gathers and transposes mask tiles element by element. The layout is
    static, so the tiles are laid out here in NumPy and enter the program as a
    constant: left to XLA, folding the same gather costs seconds of compile time per
    layer at long lengths.
    """
    I, _, m, W = mid.shape
    b = table.shape[-1]
    tiles = table[mid.reshape(I, nc, rc, m, W).swapaxes(0, 1)]  # [nc, I, rc, m, W, b(q), b(k)]
    if transposed:
        tiles = tiles.transpose(0, 1, 2, 4, 6, 3, 5).reshape(nc, I, rc, W * b, m * b)
    else:
        tiles = tiles.transpose(0, 1, 2, 3, 5, 4, 6).reshape(nc, I, rc, m * b, W * b)
    return jax.lax.optimization_barrier(jnp.asarray(tiles))


def _masked_scores(plan, q_BHRQD, k_BHRKD, idx_IRW, keep_IRbK, qid_BRb, kvid_Bnb):
    """Scaled scores ``[B, H, R, G, qb, W * b]`` (f32) with dropped pairs at ``NEG_INF`` (``qb``
    query rows a head: the block, or the blocks of a merged row, as ``keep``'s).

    (Gathering the keys transposed, ``[D, W * b]``, so that ``Q K^T`` reads both operands as
    stored, made the forward 3-18% slower: the transposing gather costs more than it saves.)"""
    B, H, R, Q, D = q_BHRQD.shape
    I, _, W = idx_IRW.shape
    b, qb = plan.layout.block, keep_IRbK.shape[-2]
    scores = jnp.einsum("bhrqd,bhrkd->bhrqk", q_BHRQD, k_BHRKD, preferred_element_type=_F32)
    scores = scores.reshape(B, H, R, Q // qb, qb, W * b) * _F32(plan.scale)
    keep = keep_IRbK.reshape(1, I, R, 1, qb, W * b)
    if qid_BRb is not None:
        kvid_BIRK = jnp.take(kvid_Bnb, idx_IRW, axis=1).reshape(B, I, R, 1, W * b)
        keep = keep & (qid_BRb[:, None, :, :, None] == kvid_BIRK)[:, :, :, None]
    return jnp.where(keep, scores, NEG_INF)


def _chunk_forward(plan, q_BHRQD, idx, keep, qid, k_BnbHD, v_BnbHD, kvid_Bnb, kv_dtypes):
    """Output ``[B, H, R, Q, D]`` (f32) and log-sum-exp ``[B, H, R, Q]`` of one chunk
    (``k``, ``v`` as bits, of ``kv_dtypes``)."""
    B, H, R, Q, D = q_BHRQD.shape
    k_g, v_g = _gather_kv(k_BnbHD, idx, kv_dtypes[0]), _gather_kv(v_BnbHD, idx, kv_dtypes[1])
    scores = _masked_scores(plan, q_BHRQD, k_g, idx, keep, qid, kvid_Bnb)
    row_max = scores.max(axis=-1, keepdims=True)
    probs = jnp.exp(scores - row_max)  # dropped pairs underflow to exactly 0
    denom = probs.sum(axis=-1).reshape(B, H, R, Q, 1)
    row_max = row_max.reshape(B, H, R, Q, 1)
    probs = probs.reshape(B, H, R, Q, -1).astype(v_g.dtype)
    out = jnp.einsum("bhrqk,bhrkd->bhrqd", probs, v_g, preferred_element_type=_F32)
    has_key = row_max > NEG_INF / 2  # rows whose every key is dropped give zeros
    out = jnp.where(has_key, out / jnp.where(has_key, denom, 1.0), 0.0)
    lse = jnp.where(has_key, row_max + jnp.log(jnp.where(has_key, denom, 1.0)), _NO_KEY_LSE)
    return out, lse[..., 0]


def _chunk_backward(plan, q_BHRQD, qt_BHRDQ, do_BHRQD, dot_BHRDQ, delta_BHRQ, lse_BHRQ, idx, keep_t, qid, k_BnbHD,
                    v_BnbHD, kvid, kv_dtypes):
    """``dq [B, H, R, Q, D]`` and per-slot ``dk, dv [B, H, R, W, b, D]`` (f32) of one chunk.

    Works on transposed tiles ``[key, query]`` so that ``dk = dS^T q`` and
    ``dv = P^T dO`` are plain matmuls; ``keep_t [I, R, W * b, b]`` is the transposed mask;
    ``k``, ``v`` come as bits, of ``kv_dtypes``; ``delta = rowsum(dO * O)`` (f32) comes
    precomputed for every row (:func:`_backward`). ``qt``, ``dot``: ``q`` and ``dO`` with
    their last two axes swapped in memory, so that ``S^T = K Q^T`` and ``dP^T = V dO^T``
    read both operands as stored: XLA:CPU runs these products about twice as fast as with
    both operands contracted on their last axis.
    """
    B, H, R, Q, D = q_BHRQD.shape
    I, _, W = idx.shape
    b = plan.layout.block
    k_g, v_g = _gather_kv(k_BnbHD, idx, kv_dtypes[0]), _gather_kv(v_BnbHD, idx, kv_dtypes[1])
    scores_t = jnp.einsum("bhrkd,bhrdq->bhrkq", k_g, qt_BHRDQ, preferred_element_type=_F32)
    scores_t = scores_t.reshape(B, H, R, W * b, Q // b, b) * _F32(plan.scale)
    keep = keep_t.reshape(1, I, R, W * b, 1, b)
    if qid is not None:
        kvid_BIRK = jnp.take(kvid, idx, axis=1).reshape(B, I, R, W * b, 1, 1)
        keep = keep & (qid[:, None, :, None, None, :] == kvid_BIRK)
    scores_t = jnp.where(keep, scores_t, NEG_INF).reshape(B, H, R, W * b, Q)
    probs_t = jnp.exp(scores_t - lse_BHRQ[:, :, :, None, :])
    dprobs_t = jnp.einsum("bhrkd,bhrdq->bhrkq", v_g, dot_BHRDQ, preferred_element_type=_F32)
    dscores_t = probs_t * (dprobs_t - delta_BHRQ[:, :, :, None, :])
    scale = _F32(plan.scale)
    dk = jnp.einsum("bhrkq,bhrqd->bhrkd", dscores_t.astype(q_BHRQD.dtype), q_BHRQD, preferred_element_type=_F32)
    dv = jnp.einsum("bhrkq,bhrqd->bhrkd", probs_t.astype(do_BHRQD.dtype), do_BHRQD, preferred_element_type=_F32)
    dscores = materialized_transpose(dscores_t.astype(k_g.dtype))  # else dq's dot runs in f32 on CPU
    dq = jnp.einsum("bhrqk,bhrkd->bhrqd", dscores, k_g, preferred_element_type=_F32) * scale
    return dq, (dk * scale).reshape(B, H, R, W, b, D), dv.reshape(B, H, R, W, b, D)


def _split(q_BTNH, k_BSKH, v_BSKH, layout):
    """Block views ``q [B, nq, b, H, G, D]``, ``k, v [B, nk, b, H, D]`` (free reshapes)."""
    B, T, N, D = q_BTNH.shape
    S, K = k_BSKH.shape[1], k_BSKH.shape[2]
    b = layout.block
    if layout.heads != 1:
        k_BSKH, v_BSKH = (jnp.repeat(x, N // K, axis=2) for x in (k_BSKH, v_BSKH))
    H = k_BSKH.shape[2]
    return (q_BTNH.reshape(B, T // b, b, H, N // H, D), k_BSKH.reshape(B, S // b, b, H, D),
            v_BSKH.reshape(B, S // b, b, H, D))


def _ids_to_blocks(qid_BT, kvid_BS, b):
    if qid_BT is None:
        return None, None
    return qid_BT.reshape(qid_BT.shape[0], -1, b), kvid_BS.reshape(kvid_BS.shape[0], -1, b)


def _rows_of(x_Bn, rows_p, nc: int, rc: int):
    """Per-block ids ``x [B, n, b]`` at the rows of a group -> ``[nc, B, rc, m * b]``."""
    B, b = x_Bn.shape[0], x_Bn.shape[2]
    x = jnp.take(x_Bn, rows_p.reshape(-1), axis=1).reshape(B, nc, rc, rows_p.shape[1] * b)
    return x.swapaxes(0, 1)


def _forward(plan: _Plan, q_BTNH, k_BSKH, v_BSKH, qid_BT, kvid_BS):
    """Output ``[B, T, N, D]`` and the row log-sum-exp ``[B, H, nq, G, b]`` (f32, block order)."""
    lay, b = plan.layout, plan.layout.block
    q_Bn, k_Bn, v_Bn = (_as_bits(x) for x in _split(q_BTNH, k_BSKH, v_BSKH, lay))
    kv_dtypes = (k_BSKH.dtype, v_BSKH.dtype)
    B, nq, _, H, G, D = q_Bn.shape
    qid_Bnb, kvid_Bnb = _ids_to_blocks(qid_BT, kvid_BS, b)
    table = np.asarray(lay.mask_table)
    outs, lses, order = [], [], []
    for rows_p, n_rows, nc, rc, idx, mid in plan.groups(B, H, G):
        q_c = _to_chunks(q_Bn, rows_p, nc, rc)
        qb = rows_p.shape[1] * b
        xs = (q_c, jnp.asarray(idx.reshape(-1, nc, rc, idx.shape[-1]).swapaxes(0, 1)),
              _mask_chunks(table, mid, nc, rc, transposed=False),
              None if qid_Bnb is None else _rows_of(qid_Bnb, rows_p, nc, rc))

        def body(x, qb=qb):
            q_tiles = _from_bits(_tiles(x[0]), q_BTNH.dtype)
            out, lse = _chunk_forward(plan, q_tiles, x[1], x[2], x[3], k_Bn, v_Bn, kvid_Bnb, kv_dtypes)
            return _as_bits(_untiles(out.astype(q_BTNH.dtype), qb)), lse  # bits: stacked in place

        out_c, lse_c = jax.lax.map(body, xs)  # [nc, B, rc, qb, H, G, D], [nc, B, H, rc, G * qb]
        outs.append(_from_chunks(_from_bits(out_c, q_BTNH.dtype), n_rows, b))
        m = rows_p.shape[1]  # the log-sum-exp per query block: [B, H, rows, G, b]
        lse = jnp.moveaxis(lse_c, 0, 2).reshape(B, H, nc * rc, G, m, b).swapaxes(3, 4)
        lses.append(lse.reshape(B, H, nc * rc * m, G, b)[:, :, :n_rows])
        order.append(rows_p.reshape(-1)[:n_rows])
    out = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=1)
    lse = lses[0] if len(lses) == 1 else jnp.concatenate(lses, axis=2)
    order = np.concatenate(order)
    if not np.array_equal(order, np.arange(nq)):
        out = jnp.take(out, np.argsort(order), axis=1)
        lse = _take_rows(lse, np.argsort(order), axis=2)
    return out.reshape(q_BTNH.shape), lse


def _backward(plan: _Plan, res, do_BTNH):
    q_BTNH, k_BSKH, v_BSKH, qid_BT, kvid_BS, out_BTNH, lse_BHnGb = res
    plan = dataclasses.replace(plan, merge=1)  # single rows, as the forward under grad (see FORWARD_MERGE)
    lay, b = plan.layout, plan.layout.block
    q_Bn, k_Bn, v_Bn = (_as_bits(x) for x in _split(q_BTNH, k_BSKH, v_BSKH, lay))
    kv_dtypes = (k_BSKH.dtype, v_BSKH.dtype)
    B, nq, _, H, G, D = q_Bn.shape
    qid_Bnb, kvid_Bnb = _ids_to_blocks(qid_BT, kvid_BS, b)
    do_Bn, out_Bn = _as_bits(do_BTNH.reshape(q_Bn.shape)), _as_bits(out_BTNH.reshape(q_Bn.shape))
    table = np.asarray(lay.mask_table)
    zeros = jnp.zeros((B, H, k_Bn.shape[1], b, D), _F32)
    dk_acc, dv_acc = zeros, zeros
    dqs, order = [], []
    for rows_p, n_rows, nc, rc, idx, mid in plan.groups(B, H, G):
        W = idx.shape[-1]
        lse = lse_BHnGb if np.array_equal(rows_p[:, 0], np.arange(nq)) else _take_rows(lse_BHnGb, rows_p[:, 0], 2)
        lse_c = jnp.moveaxis(lse.reshape(B, H, nc, rc, G * b), 2, 0)
        do_c = _to_tile_chunks(do_Bn, rows_p, nc, rc)
        # FlashAttention's delta = rowsum(dO * O), for every row before the loop: computed per chunk,
        # XLA:CPU fuses it into the fusion of the dO V^T product, which then runs at half speed.
        delta_c = jnp.sum(_from_bits(do_c, do_BTNH.dtype).astype(_F32)
                          * _from_bits(_to_tile_chunks(out_Bn, rows_p, nc, rc), out_BTNH.dtype).astype(_F32), axis=-1)
        q_c = _to_tile_chunks(q_Bn, rows_p, nc, rc)
        xs = (q_c, materialized_transpose(q_c), do_c, materialized_transpose(do_c), delta_c, lse_c,
              jnp.asarray(idx.reshape(-1, nc, rc, W).swapaxes(0, 1)),
              _mask_chunks(table, mid, nc, rc, transposed=True),
              None if qid_Bnb is None else _rows_of(qid_Bnb, rows_p, nc, rc))

        def body(carry, x):
            q_c, qt_c, do_c, dot_c, delta, lse, idx_c, keep_c, qid_c = x
            q_c, qt_c = _from_bits(q_c, q_BTNH.dtype), _from_bits(qt_c, q_BTNH.dtype)
            do_c, dot_c = _from_bits(do_c, do_BTNH.dtype), _from_bits(dot_c, do_BTNH.dtype)
            dq, dk, dv = _chunk_backward(plan, q_c, qt_c, do_c, dot_c, delta, lse, idx_c, keep_c, qid_c, k_Bn, v_Bn,
                                         kvid_Bnb, kv_dtypes)
            return (_scatter_add_kv(carry[0], dk, idx_c), _scatter_add_kv(carry[1], dv, idx_c)), dq

        (dk_acc, dv_acc), dq_c = jax.lax.scan(body, (dk_acc, dv_acc), xs)
        dqs.append(_from_chunks(jax.vmap(functools.partial(_untiles, b=b))(dq_c), n_rows, b))
        order.append(rows_p[:n_rows, 0])
    dq = dqs[0] if len(dqs) == 1 else jnp.concatenate(dqs, axis=1)
    order = np.concatenate(order)
    if not np.array_equal(order, np.arange(nq)):
        dq = jnp.take(dq, np.argsort(order), axis=1)
    S, K = k_BSKH.shape[1], k_BSKH.shape[2]

    def finish(acc_BHnbD, like):  # [B, H, nk, b, D] -> [B, S, K, D], summing repeated kv heads
        g = acc_BHnbD.transpose(0, 2, 3, 1, 4).reshape(B, S, H, D)
        if H != K:
            g = g.reshape(B, S, K, H // K, D).sum(axis=3)
        return g.astype(like.dtype)

    return (dq.reshape(q_BTNH.shape).astype(q_BTNH.dtype), finish(dk_acc, k_BSKH), finish(dv_acc, v_BSKH),
            None, None)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _attention(plan: _Plan, q_BTNH, k_BSKH, v_BSKH, qid_BT, kvid_BS):
    return _forward(plan, q_BTNH, k_BSKH, v_BSKH, qid_BT, kvid_BS)[0]


def _attention_fwd(plan: _Plan, q_BTNH, k_BSKH, v_BSKH, qid_BT, kvid_BS):
    out, lse = _forward(dataclasses.replace(plan, merge=1), q_BTNH, k_BSKH, v_BSKH, qid_BT, kvid_BS)
    return out, (q_BTNH, k_BSKH, v_BSKH, qid_BT, kvid_BS, out, lse)


_attention.defvjp(_attention_fwd, _backward)


def xla_attention(
    q_BTNH: Array,
    k_BSKH: Array,
    v_BSKH: Array,
    layout: BlockLayout,
    *,
    scale: float | None = None,
    kv_valid: Array | None = None,
    q_segment_ids: Array | None = None,
    kv_segment_ids: Array | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    merge: int = FORWARD_MERGE,
) -> Array:
    """Block-sparse attention computing only the kept tiles of ``layout``.

    ``q_BTNH [B, T, N, D]``, ``k_BSKH, v_BSKH [B, S, K, D]`` (``K`` divides ``N``);
    returns ``[B, T, N, D]`` in ``q``'s dtype. Queries with no visible key give
    zeros. ``chunk_bytes`` bounds the float32 scores of one chunk of query blocks;
    ``merge`` query blocks share a row of the forward pass where that pays (``FORWARD_MERGE``).
    """
    if merge < 1:
        raise ValueError(f"merge must be >= 1 query blocks a row, got {merge}")
    B, T, S, N, K, D = check_shapes(q_BTNH, k_BSKH, v_BSKH)
    check_layout(layout, T, S, N)
    plan = _Plan(layout=layout, scale=float(D**-0.5 if scale is None else scale), chunk_bytes=int(chunk_bytes),
                 merge=int(merge))
    q_ids, kv_ids = key_segments(B, T, S, kv_valid, q_segment_ids, kv_segment_ids)
    return _attention(plan, q_BTNH, k_BSKH, v_BSKH, q_ids, kv_ids)
