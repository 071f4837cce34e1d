"""``BlockLayout``: which (query, key) token pairs attention keeps, at tile granularity.

A layout describes the kept pairs of a ``q_len x kv_len`` score matrix in square
``block x block`` tiles. Every tile is

- ``EMPTY``: no pair kept, never computed;
- ``FULL``: every pair kept, computed without a mask;
- ``PARTIAL``: some pairs kept; the exact token mask of the tile is stored once
  in a small table of distinct ``[block, block]`` masks (the causal diagonal of
  every row shares one entry) and referenced by id.

From these the layout derives, per query block, the padded list of kept key
blocks (``kv_indices``) with a mask id per slot, and the transposed lists per key
block for the backward pass, like splash attention's ``MaskInfo`` and
FlexAttention's ``BlockMask``. No ``T x S`` token mask is ever built except by
:meth:`BlockLayout.to_dense_mask` (for oracles and pictures).

Layouts are immutable and hashable (by a digest of their arrays), so they can be
static arguments of ``jax.jit``. They compose with ``&`` and ``|``, may carry one
map per head (``heads > 1``), and the query length may differ from the key
length. Causality is top-left aligned, as in ``jax.nn.dot_product_attention``:
query ``i`` may see key ``j`` iff ``j <= i``.

This module holds the class and its tile codes only; the constructors live in
:mod:`memgpt_jax.attention.layout_patterns`, and :mod:`memgpt_jax.attention.layout`
is the public face that exports both.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np

EMPTY, PARTIAL, FULL = 0, 1, 2
MASK_FULL, MASK_PAD = 0, 1  # ids of the all-True and all-False tiles in ``mask_table``
# A row group is added only when it saves this share of the padded tiles: measured on the
# derived ListOps layouts (blocks of 128, batch 16, bf16 forward + backward), groups that
# saved 9-18% of the tiles were 11-20% faster, those saving 4% were slower.
ROW_GROUP_MIN_SAVING = 0.08


class BlockLayout:
    """An immutable, hashable block-level attention layout.

    Args:
      codes: ``int8 [heads, nq, nk]`` tile codes (``EMPTY``/``PARTIAL``/``FULL``).
      partial_ids: ``int [heads, nq, nk]``, index into ``partial_masks`` where the
        code is ``PARTIAL`` (ignored elsewhere).
      partial_masks: ``bool [P, block, block]`` exact token masks of partial tiles.
      q_len, kv_len, block: token lengths and the tile size.

    Tiles whose mask is all True or all False are reclassified as ``FULL`` or
    ``EMPTY``, equal masks are stored once, and the layout is validated: every
    query token must keep at least one key.
    """

    def __init__(self, codes, partial_ids, partial_masks, *, q_len: int, kv_len: int, block: int):
        check_lengths(q_len, kv_len, block)
        codes = np.asarray(codes, dtype=np.int8)
        if codes.ndim == 2:
            codes = codes[None]
        nq, nk = q_len // block, kv_len // block
        if codes.ndim != 3 or codes.shape[1:] != (nq, nk):
            raise ValueError(
                f"block codes must have shape [heads, {nq}, {nk}] for q_len={q_len}, "
                f"kv_len={kv_len}, block={block}; got {codes.shape}"
            )
        if not np.isin(codes, (EMPTY, PARTIAL, FULL)).all():
            raise ValueError("block codes must be EMPTY (0), PARTIAL (1) or FULL (2)")
        ids = np.broadcast_to(np.asarray(partial_ids, dtype=np.int64).reshape(-1, nq, nk), codes.shape)
        masks = np.asarray(partial_masks, dtype=bool).reshape(-1, block, block)
        self.q_len, self.kv_len, self.block = int(q_len), int(kv_len), int(block)
        self.codes, self.partial_ids, self.partial_masks = _canonicalize(codes, ids, masks, block)
        for array in (self.codes, self.partial_ids, self.partial_masks):
            array.setflags(write=False)
        _validate_rows(self)
        digest = hashlib.sha256()
        for array in (self.codes, self.partial_ids, np.packbits(self.partial_masks)):
            digest.update(str(array.shape).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        self._key = (self.q_len, self.kv_len, self.block, digest.hexdigest())

    # Identity ------------------------------------------------------------------
    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BlockLayout) and self._key == other._key

    def __repr__(self) -> str:
        return (
            f"BlockLayout(q_len={self.q_len}, kv_len={self.kv_len}, block={self.block}, "
            f"heads={self.heads}, kept_blocks={self.n_kept_blocks:g}/{self.n_blocks}, "
            f"density={self.density():.3f})"
        )

    # Sizes -----------------------------------------------------------------------
    @property
    def heads(self) -> int:
        """Number of per-head maps (1: the same map for every head)."""
        return self.codes.shape[0]

    @property
    def n_q_blocks(self) -> int:
        return self.q_len // self.block

    @property
    def n_kv_blocks(self) -> int:
        return self.kv_len // self.block

    @property
    def n_blocks(self) -> int:
        """Tiles of the whole ``q_len x kv_len`` score matrix."""
        return self.n_q_blocks * self.n_kv_blocks

    @property
    def n_kept_blocks(self) -> float:
        """Computed (non-empty) tiles per head, averaged over per-head maps."""
        return float((self.codes != EMPTY).sum()) / self.heads

    def density(self) -> float:
        """Kept token pairs / ``(q_len * kv_len)``, averaged over heads."""
        kept = (self.codes == FULL).sum() * self.block**2
        partial = self.codes == PARTIAL
        if partial.any():
            kept += self.partial_masks.sum(axis=(1, 2))[self.partial_ids[partial]].sum()
        return float(kept) / (self.heads * self.q_len * self.kv_len)

    def ideal_speedup(self) -> float:
        """All tiles / kept tiles: the most a tile-skipping kernel can gain."""
        return self.n_blocks / self.n_kept_blocks

    @property
    def kernel_tiles(self) -> int:
        """Tiles the XLA kernel computes per stream: each row group (:meth:`row_groups`)
        padded to its longest row, over the rows' largest count across heads. What a step
        costs, where :attr:`n_kept_blocks` is what it keeps: a layout whose rows differ in
        length (the dense leading rows of a derived layout) pays for padding."""
        return padded_tiles((self.codes != EMPTY).sum(axis=2).max(axis=0))

    # Composition -------------------------------------------------------------------
    def __and__(self, other: "BlockLayout") -> "BlockLayout":
        return _combine(self, other, np.logical_and)

    def __or__(self, other: "BlockLayout") -> "BlockLayout":
        return _combine(self, other, np.logical_or)

    # Token masks -------------------------------------------------------------------
    @functools.cached_property
    def mask_table(self) -> np.ndarray:
        """``bool [2 + P, block, block]``: all-True (``MASK_FULL``), all-False (``MASK_PAD``), partials."""
        b = self.block
        return np.concatenate([np.ones((1, b, b), bool), np.zeros((1, b, b), bool), self.partial_masks])

    @functools.cached_property
    def tile_mask_ids(self) -> np.ndarray:
        """``int32 [heads, nq, nk]``: each tile's row in :attr:`mask_table` (empty tiles: ``MASK_PAD``)."""
        ids = np.where(self.codes == FULL, MASK_FULL, MASK_PAD)
        return np.where(self.codes == PARTIAL, self.partial_ids + 2, ids).astype(np.int32)

    def to_dense_mask(self) -> np.ndarray:
        """The token mask: ``bool [q_len, kv_len]``, or ``[heads, q_len, kv_len]`` when per-head."""
        tiles = self.mask_table[self.tile_mask_ids]  # [h, nq, nk, b, b]
        dense = tiles.transpose(0, 1, 3, 2, 4).reshape(self.heads, self.q_len, self.kv_len)
        return dense[0] if self.heads == 1 else dense

    def rows_dense_mask(self, positions: np.ndarray) -> np.ndarray:
        """Token mask rows ``bool [heads, len(positions), kv_len]`` for absolute query positions."""
        positions = np.asarray(positions)
        ids = self.tile_mask_ids[:, positions // self.block]  # [h, t, nk]
        rows = self.mask_table[ids, (positions % self.block)[None, :, None]]  # [h, t, nk, b]
        return rows.reshape(self.heads, len(positions), self.kv_len)

    # Causality ----------------------------------------------------------------------
    @functools.cached_property
    def _first_acausal_tile(self) -> tuple[int, int, int] | None:
        nq, nk, b = self.n_q_blocks, self.n_kv_blocks, self.block
        i, j = np.arange(nq)[:, None], np.arange(nk)[None, :]
        kept = self.codes != EMPTY
        bad = kept & (j > i)  # tiles strictly above the diagonal
        if b > 1:
            bad |= (self.codes == FULL) & (j == i)
        upper = np.triu(np.ones((b, b), bool), k=1)
        diag_partial = (self.codes == PARTIAL) & (j == i)
        if diag_partial.any():
            leaks = (self.partial_masks & upper).any(axis=(1, 2))
            bad |= diag_partial & leaks[self.partial_ids]
        hits = np.argwhere(bad)
        return tuple(int(x) for x in hits[0]) if len(hits) else None

    @property
    def is_causal(self) -> bool:
        """True when no kept pair has key position > query position."""
        return self._first_acausal_tile is None

    def require_causal(self, consumer: str = "a causal model") -> "BlockLayout":
        """Returns ``self``; raises ``ValueError`` if the layout keeps a future key."""
        hit = self._first_acausal_tile
        if hit is not None:
            h, i, j = hit
            raise ValueError(
                f"layout is not causal: head {h}, query block {i} keeps key block {j}, which holds "
                f"future keys; {consumer} needs a causal layout (combine it with "
                f"causal(q_len, kv_len, block=...) using '&')"
            )
        return self

    # Kernel-facing block lists --------------------------------------------------------
    @functools.cached_property
    def kv_lists(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(kv_indices, kv_counts, kv_mask_ids)``: per query block the kept key blocks.

        Shapes ``[heads, nq, W]``, ``[heads, nq]``, ``[heads, nq, W]`` (int32) with
        ``W`` the largest row count. Key blocks are ascending; padding slots repeat
        the last kept block (so a pipelined kernel does not fetch anything new) and
        have mask id ``MASK_PAD``.
        """
        return _block_lists(self.codes, self.tile_mask_ids)

    @functools.cached_property
    def q_lists(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The transposed lists: per key block, the query blocks that keep it.

        ``(q_indices [heads, nk, Wt], q_counts [heads, nk], q_mask_ids [heads, nk, Wt])``;
        mask ids still index tiles in ``(query, key)`` orientation.
        """
        return _block_lists(self.codes.transpose(0, 2, 1), self.tile_mask_ids.transpose(0, 2, 1))

    def row_groups(self, max_groups: int = 6) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Query blocks split into groups of similar kept count, each padded to its own max.

        A few full rows (global query tokens, the dense leading rows of a derived
        layout) would otherwise pad every row to the full key length. Returns ``[(rows
        [R], kv_indices [heads, R, Wg], mask_ids [heads, R, Wg])]``; groups are chosen to
        minimise the padded tiles (:func:`_split_by_count`).
        """
        indices, counts, mask_ids = self.kv_lists
        row_counts = counts.max(axis=0)
        bounds = _split_by_count(row_counts, max_groups)
        groups = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            rows = np.flatnonzero((row_counts > lo) & (row_counts <= hi))
            if len(rows):
                width = max(int(row_counts[rows].max()), 1)
                groups.append((rows, indices[:, rows, :width], mask_ids[:, rows, :width]))
        return groups


def check_lengths(q_len: int, kv_len: int, block: int) -> None:
    """Raises ``ValueError`` unless both lengths are positive multiples of ``block``."""
    if block < 1:
        raise ValueError(f"block size must be >= 1, got {block}")
    for name, length in (("q_len", q_len), ("kv_len", kv_len)):
        if length < 1 or length % block:
            raise ValueError(f"{name}={length} is not a positive multiple of the block size {block}")


def _validate_rows(layout: BlockLayout) -> None:
    codes, b = layout.codes, layout.block
    has_full = (codes == FULL).any(axis=2)
    for h, i in np.argwhere(~has_full):
        row = codes[h, i] == PARTIAL
        covered = np.zeros(b, bool)
        if row.any():
            covered = layout.partial_masks[layout.partial_ids[h, i, row]].any(axis=(0, 2))
        if not covered.all():
            q = i * b + int(np.flatnonzero(~covered)[0])
            where = f"head {h}, " if layout.heads > 1 else ""
            raise ValueError(
                f"invalid layout: query {q} ({where}query block {i}) keeps no key; every query "
                f"must attend to at least one key"
            )


def _canonicalize(codes: np.ndarray, ids: np.ndarray, masks: np.ndarray, b: int):
    """Reclassifies all-True/all-False partial tiles and stores each distinct mask once."""
    codes = codes.copy()
    partial = codes == PARTIAL
    new_ids = np.zeros(codes.shape, np.int32)
    table = np.zeros((0, b, b), bool)
    if not partial.any():
        return codes, new_ids, table
    used = masks[ids[partial]]  # [n, b, b]
    full, empty = used.all(axis=(1, 2)), ~used.any(axis=(1, 2))
    sub = np.where(full, FULL, np.where(empty, EMPTY, PARTIAL)).astype(np.int8)
    codes[partial] = sub
    keep = sub == PARTIAL
    if keep.any():
        packed = np.packbits(used[keep].reshape(int(keep.sum()), -1), axis=1)
        uniq, inverse = np.unique(packed, axis=0, return_inverse=True)
        table = np.unpackbits(uniq, axis=1, count=b * b).astype(bool).reshape(-1, b, b)
        flat = np.zeros(int(partial.sum()), np.int32)
        flat[keep] = inverse.reshape(-1)
        new_ids[partial] = flat
    return codes, new_ids, table


def _combine(a: BlockLayout, b: BlockLayout, op) -> BlockLayout:
    if not isinstance(b, BlockLayout):
        return NotImplemented
    if (a.q_len, a.kv_len, a.block) != (b.q_len, b.kv_len, b.block):
        raise ValueError(
            f"cannot combine layouts of different shapes: (q_len, kv_len, block) = "
            f"{(a.q_len, a.kv_len, a.block)} vs {(b.q_len, b.kv_len, b.block)}"
        )
    if a.heads != b.heads and 1 not in (a.heads, b.heads):
        raise ValueError(f"cannot combine layouts with {a.heads} and {b.heads} heads")
    heads = max(a.heads, b.heads)
    shape = (heads, a.n_q_blocks, a.n_kv_blocks)
    ca, cb = np.broadcast_to(a.codes, shape), np.broadcast_to(b.codes, shape)
    kept_a, kept_b = ca != EMPTY, cb != EMPTY
    full = op(ca == FULL, cb == FULL)
    kept = op(kept_a, kept_b)
    codes = np.where(full, FULL, np.where(kept, PARTIAL, EMPTY)).astype(np.int8)
    partial = codes == PARTIAL
    ids_a = np.broadcast_to(a.tile_mask_ids, shape)[partial]
    ids_b = np.broadcast_to(b.tile_mask_ids, shape)[partial]
    masks = op(a.mask_table[ids_a], b.mask_table[ids_b])
    ids = np.zeros(shape, np.int64)
    ids[partial] = np.arange(int(partial.sum()))
    return BlockLayout(codes, ids, masks, q_len=a.q_len, kv_len=a.kv_len, block=a.block)


def _block_lists(codes: np.ndarray, tile_ids: np.ndarray):
    """Padded per-row lists of kept column indices, counts and mask ids."""
    kept = codes != EMPTY  # [h, rows, cols]
    counts = kept.sum(axis=2).astype(np.int32)
    width = max(int(counts.max()), 1)
    cols = np.arange(codes.shape[2])
    # Stable sort puts kept columns first, in ascending order.
    order = np.argsort(~kept, axis=2, kind="stable")[..., :width]
    indices = np.take_along_axis(np.broadcast_to(cols, codes.shape), order, axis=2)
    mask_ids = np.take_along_axis(tile_ids, order, axis=2)
    slot = np.arange(width)
    pad = slot[None, None, :] >= counts[..., None]
    last = np.take_along_axis(indices, np.maximum(counts - 1, 0)[..., None], axis=2)
    indices = np.where(pad, last, indices).astype(np.int32)
    mask_ids = np.where(pad, MASK_PAD, mask_ids).astype(np.int32)
    return indices, counts, mask_ids


def padded_tiles(row_counts, max_groups: int = 6) -> int:
    """Tiles of rows with these kept counts once split into row groups (as
    :meth:`BlockLayout.row_groups` splits them) and each group padded to its largest count."""
    counts = np.asarray(row_counts, np.int64)
    bounds = _split_by_count(counts, max_groups)
    return int(sum(((counts > lo) & (counts <= hi)).sum() * max(hi, 1) for lo, hi in zip(bounds[:-1], bounds[1:])))


def _split_by_count(counts: np.ndarray, max_groups: int, min_saving: float = ROW_GROUP_MIN_SAVING) -> list[int]:
    """Count thresholds ``[-1, t1, ..., top]`` cutting the sorted row counts into groups.

    Each group is padded to its largest count, so a split into ``g`` groups costs
    ``sum(rows in group * its largest count)`` tiles; the cheapest split into each ``g``
    comes from a dynamic programme over the distinct counts. A group is added only
    while it saves at least ``min_saving`` of the tiles of the best split with one group
    fewer: each group is a loop of its own (gathers, compile time), which a small saving
    does not repay.
    """
    values = np.unique(counts).astype(np.int64)
    m = len(values)
    n_le = np.searchsorted(np.sort(counts), values, side="right")  # rows with count <= value
    g_max = max(1, min(max_groups, m))
    # cost[g, j]: the cheapest split of the rows with count <= values[j] into g groups
    cost = np.full((g_max + 1, m), np.inf)
    cut = np.zeros((g_max + 1, m), np.int64)
    cost[1] = n_le * values
    for g in range(2, g_max + 1):
        for j in range(g - 1, m):
            options = cost[g - 1, :j] + (n_le[j] - n_le[:j]) * values[j]
            cut[g, j] = int(np.argmin(options))
            cost[g, j] = options[cut[g, j]]
    g = 1
    while g < g_max and cost[g + 1, m - 1] <= (1 - min_saving) * cost[g, m - 1]:
        g += 1
    bounds, j = [int(values[-1])], m - 1
    for k in range(g, 1, -1):
        j = int(cut[k, j])
        bounds.append(int(values[j]))
    return [-1, *bounds[::-1]]
