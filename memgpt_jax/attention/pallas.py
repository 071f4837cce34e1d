"""Flash-style block-sparse attention in Pallas: forward, dq and dk/dv kernels under ``custom_vjp``.

The forward pass keeps an online softmax over the kept key blocks of each query
block and saves only ``out`` and the row log-sum-exp; the backward pass
recomputes probabilities tile by tile: one kernel walks each query block's kept
key blocks for ``dq``, another walks each key block's kept query blocks (the
layout's transposed lists) for ``dk``/``dv``. Nothing of size ``T x S`` is ever
stored, and empty tiles cost nothing.

Two lowerings of the same math (see :mod:`pallas_kernels`):

- ``backend="tpu"`` (Mosaic): block lists are scalar-prefetched and drive the
  ``BlockSpec`` index maps, so only kept blocks are DMA-ed into VMEM.
- ``backend="gpu"`` (Triton): the index arrays are read inside the kernel and a
  loop walks the kept blocks.

On CPU both run with ``interpret=True`` (for tests). GQA: ``dk``/``dv`` are
computed per query head and summed over each group of heads.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as pltriton

from memgpt_jax.attention import pallas_kernels as kern
from memgpt_jax.attention.block_layout import BlockLayout
from memgpt_jax.attention.segments import check_layout, key_segments
from memgpt_jax.attention.reference import check_shapes

Array = jax.Array
_F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class _Static:
    """Everything static about one call (hashable: a ``custom_vjp`` nondiff argument)."""

    layout: BlockLayout
    scale: float
    group: int  # query heads per kv head
    backend: str  # "tpu" | "gpu"
    interpret: bool


def default_backend() -> str:
    """``"gpu"`` on GPUs, ``"tpu"`` elsewhere (TPU; CPU runs it interpreted)."""
    return "gpu" if jax.default_backend() in ("gpu", "cuda", "rocm") else "tpu"


def unsupported_reason(head_dim: int, layout: BlockLayout, backend: str | None = None) -> str | None:
    """Why the compiled kernels cannot run these shapes (``None``: they can)."""
    backend = backend or default_backend()
    b = layout.block
    if backend == "gpu":
        pow2 = lambda x: x >= 16 and not x & (x - 1)  # noqa: E731
        if not (pow2(b) and pow2(head_dim)):
            return f"Triton needs power-of-two block and head_dim >= 16, got {b} and {head_dim}"
    elif b % 128:
        return f"Mosaic needs block % 128 == 0, got {b}"
    return None


def _lists(layout: BlockLayout, transposed: bool):
    idx, cnt, mid = layout.q_lists if transposed else layout.kv_lists
    return idx.shape[-1], [jnp.asarray(a.reshape(-1)) for a in (idx, cnt, mid)]


def _index_maps(st: _Static, n_rows: int, width: int):
    """Index maps of the TPU grid ``(batch, head, block, slot)``: the kept block of a slot."""
    per_head = st.layout.heads > 1

    def kept(bb, n, i, w, idx_ref):
        slot, _ = kern._slot(n, i, w, n_rows=n_rows, width=width, per_head=per_head)
        return idx_ref[slot]

    def mask_id(bb, n, i, w, idx_ref, cnt_ref, mid_ref):
        slot, _ = kern._slot(n, i, w, n_rows=n_rows, width=width, per_head=per_head)
        return mid_ref[slot]

    return kept, mask_id


def _call(st: _Static, kernel, *, transposed: bool, q, k, v, ids, extra, out_shape, scratch_cols):
    """Builds and runs one ``pallas_call`` (forward, dq or dk/dv kernel).

    ``q, k, v`` are head-major (``[B, N, T, D]``, ``[B, K, S, D]``); ``ids`` is
    ``()`` or ``(q_ids [B, T], kv_ids [B, S])``; ``extra`` are query-row tensors
    (``do [B, N, T, D]``, ``lse``/``delta [B, N, T, 1]``) blocked like ``q``.
    ``transposed`` walks key blocks over the layout's transposed lists (dk/dv).
    """
    lay, g = st.layout, st.group
    b = lay.block
    B, N, T, D = q.shape
    has_ids = bool(ids)
    n_rows = lay.n_kv_blocks if transposed else lay.n_q_blocks
    width, lists = _lists(lay, transposed)
    table = jnp.asarray(lay.mask_table, jnp.int32)
    params = dict(scale=st.scale, n_rows=n_rows, width=width, per_head=lay.heads > 1, has_ids=has_ids)

    if st.backend == "tpu":
        kept, mask_id = _index_maps(st, n_rows, width)
        if transposed:  # grid over key blocks; the slot names a query block
            q_map = lambda bb, n, j, w, *r: (bb, n, kept(bb, n, j, w, r[0]), 0)  # noqa: E731
            kv_map = lambda bb, n, j, w, *r: (bb, n // g, j, 0)  # noqa: E731
            qid_map = lambda bb, n, j, w, *r: (bb, kept(bb, n, j, w, r[0]), 0)  # noqa: E731
            kvid_map = lambda bb, n, j, w, *r: (bb, 0, j)  # noqa: E731
            out_map = lambda bb, n, j, w, *r: (bb, n, j, 0)  # noqa: E731
        else:
            q_map = lambda bb, n, i, w, *r: (bb, n, i, 0)  # noqa: E731
            kv_map = lambda bb, n, i, w, *r: (bb, n // g, kept(bb, n, i, w, r[0]), 0)  # noqa: E731
            qid_map = lambda bb, n, i, w, *r: (bb, i, 0)  # noqa: E731
            kvid_map = lambda bb, n, i, w, *r: (bb, 0, kept(bb, n, i, w, r[0]))  # noqa: E731
            out_map = q_map
        tile = pl.BlockSpec((None, None, b, D), q_map)
        col = pl.BlockSpec((None, None, b, 1), q_map)
        in_specs = [tile, pl.BlockSpec((None, None, b, D), kv_map), pl.BlockSpec((None, None, b, D), kv_map),
                    pl.BlockSpec((None, b, b), lambda *a: (mask_id(*a), 0, 0))]
        if has_ids:
            in_specs += [pl.BlockSpec((None, b, 1), qid_map), pl.BlockSpec((None, 1, b), kvid_map)]
            ids = [ids[0][:, :, None], ids[1][:, None, :]]
        in_specs += [tile if x.shape[-1] == D else col for x in extra]
        out_specs = [pl.BlockSpec((None, None, b, s.shape[-1]), out_map) for s in out_shape]
        scratch = [pltpu.VMEM((b, c), _F32) for c in scratch_cols]
        grid_spec = pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=3, grid=(B, N, n_rows, width), in_specs=in_specs,
            out_specs=out_specs, scratch_shapes=scratch)
        call = pl.pallas_call(
            functools.partial(kernel, **params), grid_spec=grid_spec, out_shape=out_shape,
            compiler_params=pltpu.CompilerParams(
                dimension_semantics=("parallel", "parallel", "parallel", "arbitrary")),
            interpret=st.interpret, name=kernel.__name__)
        return call(*lists, q, k, v, table, *ids, *extra)

    whole = lambda x: pl.BlockSpec(x.shape, lambda *a: (0,) * x.ndim)  # noqa: E731
    if transposed:  # grid (batch, head, key block): whole query rows, one key tile
        q_spec = lambda c: pl.BlockSpec((None, None, T, c), lambda bb, n, j: (bb, n, 0, 0))  # noqa: E731
        kv_spec = pl.BlockSpec((None, None, b, D), lambda bb, n, j: (bb, n // g, j, 0))
        id_specs = [pl.BlockSpec((None, T), lambda bb, n, j: (bb, 0)), pl.BlockSpec((None, b), lambda bb, n, j: (bb, j))]
        out_spec = lambda c: pl.BlockSpec((None, None, b, c), lambda bb, n, j: (bb, n, j, 0))  # noqa: E731
    else:  # grid (batch, head, query block): one query tile, whole key rows
        q_spec = lambda c: pl.BlockSpec((None, None, b, c), lambda bb, n, i: (bb, n, i, 0))  # noqa: E731
        kv_spec = pl.BlockSpec((None, None, k.shape[2], D), lambda bb, n, i: (bb, n // g, 0, 0))
        id_specs = [pl.BlockSpec((None, b), lambda bb, n, i: (bb, i)),
                    pl.BlockSpec((None, k.shape[2]), lambda bb, n, i: (bb, 0))]
        out_spec = q_spec
    in_specs = [whole(a) for a in lists] + [q_spec(D), kv_spec, kv_spec, whole(table)]
    in_specs += id_specs if has_ids else []
    in_specs += [q_spec(x.shape[-1]) for x in extra]
    call = pl.pallas_call(
        functools.partial(kernel, block=b, **params), grid=(B, N, n_rows), in_specs=in_specs,
        out_specs=[out_spec(s.shape[-1]) for s in out_shape], out_shape=out_shape,
        compiler_params=pltriton.CompilerParams(num_warps=4, num_stages=2),
        interpret=st.interpret, name=kernel.__name__)
    return call(*lists, q, k, v, table, *ids, *extra)


def _kernel(st: _Static, name: str):
    return getattr(kern, f"{name}_kernel_{st.backend}")


def _forward(st: _Static, q, k, v, ids):
    B, N, T, D = q.shape
    out_shape = [jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((B, N, T, 1), _F32)]
    return _call(st, _kernel(st, "fwd"), transposed=False, q=q, k=k, v=v, ids=ids, extra=(),
                 out_shape=out_shape, scratch_cols=(1, 1, D))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _flash(st: _Static, q, k, v, ids):
    return _forward(st, q, k, v, ids)[0]


def _flash_fwd(st: _Static, q, k, v, ids):
    out, lse = _forward(st, q, k, v, ids)
    return out, (q, k, v, ids, out, lse)


def _flash_bwd(st: _Static, res, do):
    q, k, v, ids, out, lse = res
    B, N, T, D = q.shape
    K, S = k.shape[1], k.shape[2]
    delta = jnp.sum(do.astype(_F32) * out.astype(_F32), axis=-1, keepdims=True)
    row_tensors = (do, lse, delta)
    (dq,) = _call(st, _kernel(st, "dq"), transposed=False, q=q, k=k, v=v, ids=ids, extra=row_tensors,
                  out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype)], scratch_cols=(D,))
    per_head = jax.ShapeDtypeStruct((B, N, S, D), _F32)
    dk, dv = _call(st, _kernel(st, "dkv"), transposed=True, q=q, k=k, v=v, ids=ids, extra=row_tensors,
                   out_shape=[per_head, per_head], scratch_cols=(D, D))
    dk = dk.reshape(B, K, N // K, S, D).sum(axis=2).astype(k.dtype)
    dv = dv.reshape(B, K, N // K, S, D).sum(axis=2).astype(v.dtype)
    return dq, dk, dv, None


_flash.defvjp(_flash_fwd, _flash_bwd)


def pallas_attention(
    q_BTNH: Array,
    k_BSKH: Array,
    v_BSKH: Array,
    layout: BlockLayout,
    *,
    scale: float | None = None,
    kv_valid: Array | None = None,
    q_segment_ids: Array | None = None,
    kv_segment_ids: Array | None = None,
    backend: str | None = None,
    interpret: bool | None = None,
) -> Array:
    """Block-sparse flash attention; same contract as :func:`xla.xla_attention`.

    ``backend``: ``"tpu"`` (Mosaic, scalar prefetch) or ``"gpu"`` (Triton);
    default from the JAX backend. ``interpret`` defaults to True on CPU.
    """
    B, T, S, N, K, D = check_shapes(q_BTNH, k_BSKH, v_BSKH)
    check_layout(layout, T, S, N)
    backend = backend or default_backend()
    if backend not in ("tpu", "gpu"):
        raise ValueError(f"pallas backend must be 'tpu' or 'gpu', got {backend!r}")
    interpret = jax.default_backend() == "cpu" if interpret is None else interpret
    scale = float(D**-0.5 if scale is None else scale)
    st = _Static(layout=layout, scale=scale, group=N // K, backend=backend, interpret=bool(interpret))
    q_ids, kv_ids = key_segments(B, T, S, kv_valid, q_segment_ids, kv_segment_ids)
    ids = () if q_ids is None else (q_ids, kv_ids)
    out = _flash(st, q_BTNH.transpose(0, 2, 1, 3), k_BSKH.transpose(0, 2, 1, 3),
                 v_BSKH.transpose(0, 2, 1, 3), ids)
    return out.transpose(0, 2, 1, 3)
