"""Constructors of :class:`~memgpt_jax.attention.block_layout.BlockLayout` (import them from ``layout``).

Every constructor takes ``(q_len, kv_len=None, *, block, ...)``; ``kv_len``
defaults to ``q_len``. Block-level patterns (``local``, ``strided``, ...) count
``window`` and ``stride`` in blocks. ``causal=True`` variants are intersected
with :func:`causal`, so their diagonal tiles carry the exact token mask.

The causal patterns are row-stable: row ``i`` of a layout depends only on ``i``
(never on the total length), so the layout built for a long KV cache agrees,
row by row, with the one built for a shorter training sequence.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from memgpt_jax.attention.block_layout import EMPTY, FULL, PARTIAL, BlockLayout, check_lengths

MaskFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _lengths(q_len: int, kv_len: int | None, block: int) -> tuple[int, int, int, int]:
    kv_len = q_len if kv_len is None else kv_len
    check_lengths(q_len, kv_len, block)
    return q_len, kv_len, q_len // block, kv_len // block


def _grid(q_len: int, kv_len: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Query-block and key-block indices, shaped ``[nq, 1]`` and ``[1, nk]``."""
    return np.arange(q_len // block)[:, None], np.arange(kv_len // block)[None, :]


def from_block_map(block_map, q_len: int | None = None, kv_len: int | None = None, *, block: int) -> BlockLayout:
    """Keeps every token pair of the True tiles of ``block_map`` (``[nq, nk]`` or ``[heads, nq, nk]``)."""
    block_map = np.asarray(block_map, dtype=bool)
    if block_map.ndim not in (2, 3):
        raise ValueError(f"block_map must be [nq, nk] or [heads, nq, nk], got shape {block_map.shape}")
    nq, nk = block_map.shape[-2:]
    q_len = nq * block if q_len is None else q_len
    kv_len = nk * block if kv_len is None else kv_len
    codes = np.where(block_map, FULL, EMPTY).astype(np.int8)
    return BlockLayout(codes, np.zeros(codes.shape, np.int32), np.zeros((0, block, block), bool),
                       q_len=q_len, kv_len=kv_len, block=block)


def full(q_len: int, kv_len: int | None = None, *, block: int) -> BlockLayout:
    """Every pair (not causal: the model's dense attention is :func:`causal`)."""
    q_len, kv_len, nq, nk = _lengths(q_len, kv_len, block)
    return from_block_map(np.ones((nq, nk), bool), q_len, kv_len, block=block)


def causal(q_len: int, kv_len: int | None = None, *, block: int) -> BlockLayout:
    """Key ``j`` is kept for query ``i`` iff ``j <= i`` (top-left aligned)."""
    q_len, kv_len, _, _ = _lengths(q_len, kv_len, block)
    i, j = _grid(q_len, kv_len, block)
    codes = np.where(j < i, FULL, np.where(j == i, PARTIAL, EMPTY)).astype(np.int8)
    tril = np.tril(np.ones((block, block), bool))[None]
    return BlockLayout(codes, np.zeros(codes.shape, np.int32), tril, q_len=q_len, kv_len=kv_len, block=block)


def _maybe_causal(layout: BlockLayout, is_causal: bool) -> BlockLayout:
    return layout & causal(layout.q_len, layout.kv_len, block=layout.block) if is_causal else layout


def local(q_len: int, kv_len: int | None = None, *, block: int, window: int, causal: bool = True) -> BlockLayout:
    """Sliding window of ``window`` blocks: back only (``causal``) or on both sides."""
    if window < 0:
        raise ValueError(f"window must be >= 0 blocks, got {window}")
    q_len, kv_len, _, _ = _lengths(q_len, kv_len, block)
    i, j = _grid(q_len, kv_len, block)
    keep = (i - j <= window) & (j <= i) if causal else np.abs(i - j) <= window
    return _maybe_causal(from_block_map(keep, q_len, kv_len, block=block), causal)


def global_blocks(q_len: int, kv_len: int | None = None, *, block: int, n: int, queries: bool = True) -> BlockLayout:
    """The first ``n`` key blocks are seen by every query; with ``queries``, the first
    ``n`` query blocks also see every key (BigBird's global tokens, at block level)."""
    if n < 1:
        raise ValueError(f"global_blocks needs n >= 1, got {n}")
    q_len, kv_len, _, _ = _lengths(q_len, kv_len, block)
    i, j = _grid(q_len, kv_len, block)
    keep = (j < n) | (i < n) if queries else np.broadcast_to(j < n, (i.shape[0], j.shape[1]))
    return from_block_map(keep, q_len, kv_len, block=block)


def global_tokens(q_len: int, kv_len: int | None = None, *, block: int, n_tokens: int, queries: bool = True) -> BlockLayout:
    """Token-level globals: keys ``< n_tokens`` are seen by all, queries ``< n_tokens`` see all."""
    if n_tokens < 1:
        raise ValueError(f"global_tokens needs n_tokens >= 1, got {n_tokens}")
    if queries:
        return from_mask_fn(lambda q, k: (k < n_tokens) | (q < n_tokens), q_len, kv_len, block=block)
    return from_mask_fn(lambda q, k: k < n_tokens, q_len, kv_len, block=block)


def random_blocks(
    q_len: int, kv_len: int | None = None, *, block: int, n: int, seed: int = 0, causal: bool = False
) -> BlockLayout:
    """``n`` seeded random key blocks per query block (among blocks ``<= i`` when ``causal``).

    Row ``i`` draws from ``np.random.default_rng([seed, i])``, so rows are stable
    across lengths.
    """
    if n < 1:
        raise ValueError(f"random_blocks needs n >= 1, got {n}")
    q_len, kv_len, nq, nk = _lengths(q_len, kv_len, block)
    keep = np.zeros((nq, nk), bool)
    for i in range(nq):
        candidates = min(i + 1, nk) if causal else nk
        rng = np.random.default_rng([seed, i])
        keep[i, rng.choice(candidates, size=min(n, candidates), replace=False)] = True
    return _maybe_causal(from_block_map(keep, q_len, kv_len, block=block), causal)


def strided(q_len: int, kv_len: int | None = None, *, block: int, stride: int, causal: bool = True) -> BlockLayout:
    """Sparse Transformer "strided" (Child et al. 2019) at block level.

    Query block ``i`` keeps the ``stride`` previous key blocks (``i - j < stride``)
    and every ``stride``-th block before them (``(i - j) % stride == 0``).
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1 blocks, got {stride}")
    q_len, kv_len, _, _ = _lengths(q_len, kv_len, block)
    i, j = _grid(q_len, kv_len, block)
    d = i - j
    keep = (np.abs(d) < stride) | (d % stride == 0)
    if causal:
        keep &= d >= 0
    return _maybe_causal(from_block_map(keep, q_len, kv_len, block=block), causal)


def fixed(
    q_len: int, kv_len: int | None = None, *, block: int, stride: int, n_summary: int = 1, causal: bool = True
) -> BlockLayout:
    """Sparse Transformer "fixed" (Child et al. 2019) at block level.

    Query block ``i`` keeps its own stride-aligned chunk of ``stride`` blocks
    (``i // stride == j // stride``) and the last ``n_summary`` blocks of every
    chunk (``j % stride >= stride - n_summary``), the "summary" columns.
    """
    if stride < 1 or not 1 <= n_summary <= stride:
        raise ValueError(f"fixed needs stride >= 1 and 1 <= n_summary <= stride, got {stride}, {n_summary}")
    q_len, kv_len, _, _ = _lengths(q_len, kv_len, block)
    i, j = _grid(q_len, kv_len, block)
    keep = (i // stride == j // stride) | (j % stride >= stride - n_summary)
    if causal:
        keep &= j <= i
    return _maybe_causal(from_block_map(keep, q_len, kv_len, block=block), causal)


def bigbird(
    q_len: int, kv_len: int | None = None, *, block: int, window: int, n_global: int, n_random: int,
    seed: int = 0, causal: bool = False,
) -> BlockLayout:
    """BigBird (Zaheer et al. 2020): local window | global blocks | seeded random blocks."""
    layout = local(q_len, kv_len, block=block, window=window, causal=False)
    if n_global:
        layout = layout | global_blocks(q_len, kv_len, block=block, n=n_global)
    if n_random:
        layout = layout | random_blocks(q_len, kv_len, block=block, n=n_random, seed=seed, causal=causal)
    return _maybe_causal(layout, causal)


def from_mask_fn(
    mask_fn: Callable, q_len: int, kv_len: int | None = None, *, block: int, heads: int | None = None
) -> BlockLayout:
    """Layout of a token-level predicate, classified per tile as empty/partial/full.

    ``mask_fn(q_idx, kv_idx) -> bool`` (or ``mask_fn(head, q_idx, kv_idx)`` when
    ``heads`` is given) must be vectorised NumPy: it is called with integer
    arrays ``q_idx [block, 1]`` and ``kv_idx [1, kv_len]``, one query block at a
    time, so no ``q_len x kv_len`` mask is ever held.
    """
    q_len, kv_len, nq, nk = _lengths(q_len, kv_len, block)
    n_heads = 1 if heads is None else heads
    codes = np.zeros((n_heads, nq, nk), np.int8)
    ids = np.zeros((n_heads, nq, nk), np.int64)
    masks = []
    kv_idx = np.arange(kv_len)[None, :]
    for h in range(n_heads):
        for i in range(nq):
            q_idx = np.arange(i * block, (i + 1) * block)[:, None]
            row = mask_fn(q_idx, kv_idx) if heads is None else mask_fn(h, q_idx, kv_idx)
            tiles = np.broadcast_to(np.asarray(row, bool), (block, kv_len))
            tiles = tiles.reshape(block, nk, block).transpose(1, 0, 2)  # [nk, b, b]
            any_, all_ = tiles.any(axis=(1, 2)), tiles.all(axis=(1, 2))
            codes[h, i] = np.where(all_, FULL, np.where(any_, PARTIAL, EMPTY))
            part = np.flatnonzero(any_ & ~all_)
            ids[h, i, part] = len(masks) + np.arange(len(part))
            masks.extend(tiles[part])
    table = np.stack(masks) if masks else np.zeros((0, block, block), bool)
    return BlockLayout(codes, ids, table, q_len=q_len, kv_len=kv_len, block=block)


def stack_heads(layouts: Sequence[BlockLayout]) -> BlockLayout:
    """A per-head layout: head ``h`` uses ``layouts[h]`` (all of the same shape)."""
    if not layouts:
        raise ValueError("stack_heads needs at least one layout")
    first = layouts[0]
    codes, ids, masks, offset = [], [], [], 0
    for lay in layouts:
        if (lay.q_len, lay.kv_len, lay.block) != (first.q_len, first.kv_len, first.block):
            raise ValueError("stack_heads: layouts differ in (q_len, kv_len, block)")
        codes.append(lay.codes)
        ids.append(lay.partial_ids + offset)
        masks.append(lay.partial_masks)
        offset += len(lay.partial_masks)
    return BlockLayout(np.concatenate(codes), np.concatenate(ids), np.concatenate(masks),
                       q_len=first.q_len, kv_len=first.kv_len, block=first.block)


def head_map(head: Mapping[str, Any], kind: str, n: int) -> np.ndarray:
    """The kept tiles ``bool [n, n]`` of one head of a spec, on an ``n``-block grid (causal)."""
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    if kind == "band":
        keep = np.isin(i - j, head["offsets"]) | np.isin(j, head.get("globals", [])) | (i < head.get("dense_rows", 0))
    else:
        rows = head["rows"]
        if n > len(rows):
            raise ValueError(f"the derived map covers {len(rows)} blocks; {n} were asked for")
        keep = np.zeros((n, n), bool)
        for r in range(n):
            keep[r, rows[r]] = True
    return keep & (j <= i)


def derived(spec: Mapping[str, Any], layer: int, q_len: int, kv_len: int | None = None) -> BlockLayout:
    """The causal layout of ``layer`` of a derived spec (``AttentionConfig.derived_spec``,
    fitted by :mod:`memgpt_jax.attention.derived`): per head when the layer's heads differ,
    one map when they agree. Band specs hold at any length; map specs up to theirs."""
    kv_len = q_len if kv_len is None else kv_len
    b = int(spec["block_size"])
    n = max(q_len, kv_len) // b
    maps = np.stack([head_map(h, spec["kind"], n) for h in spec["layers"][layer]])[:, : q_len // b, : kv_len // b]
    if all(np.array_equal(maps[0], m) for m in maps[1:]):
        maps = maps[:1]
    lay = from_block_map(maps[0], q_len, kv_len, block=b) if len(maps) == 1 else \
        stack_heads([from_block_map(m, q_len, kv_len, block=b) for m in maps])
    return lay & causal(q_len, kv_len, block=b)


def from_config(attn_cfg, q_len: int, kv_len: int | None = None, layer: int = 0) -> BlockLayout:
    """The causal layout named by an ``AttentionConfig`` (``pattern``, ``block_size``, ...).

    ``dense``: causal (every causal pair); ``local``: causal & local(window);
    ``window_global``: causal & (local(window) | global_blocks(n_global));
    ``strided``/``fixed``: the causal Sparse Transformer patterns with ``stride``
    (``fixed`` with one summary block per chunk); ``bigbird``: causal &
    (local(window) | global_blocks(n_global) | random_blocks(n_random, seed)); ``derived``:
    layer ``layer`` of the config's derived layout (:func:`derived`; the other patterns
    are the same in every layer).
    """
    kw = dict(block=attn_cfg.block_size)
    pattern = attn_cfg.pattern
    base = causal(q_len, kv_len, **kw)
    if pattern == "dense":
        return base
    if pattern == "local":
        return base & local(q_len, kv_len, window=attn_cfg.window, causal=False, **kw)
    if pattern == "window_global":
        win = local(q_len, kv_len, window=attn_cfg.window, causal=False, **kw)
        if attn_cfg.n_global:
            win = win | global_blocks(q_len, kv_len, n=attn_cfg.n_global, **kw)
        return base & win
    if pattern == "strided":
        return strided(q_len, kv_len, stride=attn_cfg.stride, causal=True, **kw)
    if pattern == "fixed":
        return fixed(q_len, kv_len, stride=attn_cfg.stride, causal=True, **kw)
    if pattern == "derived":
        return derived(attn_cfg.derived_spec, layer, q_len, kv_len)
    if pattern == "bigbird":
        return bigbird(q_len, kv_len, window=attn_cfg.window, n_global=attn_cfg.n_global,
                       n_random=attn_cfg.n_random, seed=attn_cfg.seed, causal=True, **kw)
    raise ValueError(f"unknown attention pattern {pattern!r}")


def layer_layouts(attn_cfg, n_layers: int, q_len: int, kv_len: int | None = None) -> list[BlockLayout]:
    """:func:`from_config` for each of ``n_layers`` layers: one object repeated when the layers
    share their layout (every pattern but ``derived``), built once."""
    if not attn_cfg.varies_by_layer:
        return [from_config(attn_cfg, q_len, kv_len)] * n_layers
    return [from_config(attn_cfg, q_len, kv_len, layer) for layer in range(n_layers)]
