"""BlockLayout: constructors against token-level predicates, algebra, lists, validation."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memgpt_jax.attention import layout as L
from memgpt_jax.config import PATTERNS, AttentionConfig

T, B = 128, 16  # tokens, block
Q_IDX, K_IDX = np.arange(T)[:, None], np.arange(T)[None, :]
CAUSAL = K_IDX <= Q_IDX


def blocks(i_tok: np.ndarray, block: int = B) -> np.ndarray:
    return i_tok // block


# Constructors equal their token-level definitions ------------------------------------------
QB, KB = blocks(Q_IDX), blocks(K_IDX)
CASES = {
    "full": (L.full(T, block=B), np.ones((T, T), bool)),
    "causal": (L.causal(T, block=B), CAUSAL),
    "local_causal": (L.local(T, block=B, window=2), CAUSAL & (QB - KB <= 2)),
    "local_both": (L.local(T, block=B, window=1, causal=False), np.abs(QB - KB) <= 1),
    "global_blocks": (L.global_blocks(T, block=B, n=2), (KB < 2) | (QB < 2)),
    "global_keys_only": (L.global_blocks(T, block=B, n=1, queries=False), np.broadcast_to(KB < 1, (T, T))),
    "global_tokens": (L.global_tokens(T, block=B, n_tokens=5), (K_IDX < 5) | (Q_IDX < 5)),
    "strided": (L.strided(T, block=B, stride=3), CAUSAL & (((QB - KB) < 3) | ((QB - KB) % 3 == 0))),
    "fixed": (L.fixed(T, block=B, stride=3, n_summary=1), CAUSAL & ((QB // 3 == KB // 3) | (KB % 3 == 2))),
    "mask_fn": (L.from_mask_fn(lambda q, k: (k <= q) & ((q - k) % 7 != 3), T, block=B), CAUSAL & ((Q_IDX - K_IDX) % 7 != 3)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_constructor_matches_token_definition(name):
    lay, expected = CASES[name]
    np.testing.assert_array_equal(lay.to_dense_mask(), expected)
    assert lay.density() == pytest.approx(expected.mean())
    kept_tiles = expected.reshape(T // B, B, T // B, B).any(axis=(1, 3)).sum()
    assert lay.n_kept_blocks == kept_tiles
    assert lay.ideal_speedup() == pytest.approx((T // B) ** 2 / kept_tiles)


def test_tile_codes_and_shared_partial_masks():
    lay = L.causal(T, block=B)
    nq = T // B
    assert (lay.codes[0] == np.where(np.tri(nq, k=-1, dtype=bool), L.FULL,
                                     np.where(np.eye(nq, dtype=bool), L.PARTIAL, L.EMPTY))).all()
    assert lay.partial_masks.shape == (1, B, B)  # every diagonal tile shares one mask
    wg = L.from_mask_fn(lambda q, k: (k <= q) & ((q - k < 3 * B) | (k < B)), T, block=B)
    assert len(wg.partial_masks) == 2  # the diagonal and the window edge


def test_bigbird_is_union_of_parts_and_random_rows_are_seeded():
    parts = L.local(T, block=B, window=1, causal=False) | L.global_blocks(T, block=B, n=1)
    rnd = L.random_blocks(T, block=B, n=2, seed=3)
    bb = L.bigbird(T, block=B, window=1, n_global=1, n_random=2, seed=3)
    np.testing.assert_array_equal(bb.to_dense_mask(), parts.to_dense_mask() | rnd.to_dense_mask())
    assert (rnd.codes[0] == L.FULL).sum(axis=1).tolist() == [2] * (T // B)
    assert rnd == L.random_blocks(T, block=B, n=2, seed=3)
    assert rnd != L.random_blocks(T, block=B, n=2, seed=4)
    causal_bb = L.bigbird(T, block=B, window=1, n_global=1, n_random=2, seed=3, causal=True)
    assert causal_bb.is_causal and not bb.is_causal


def test_rectangular_layouts():
    lay = L.causal(64, 128, block=B) & L.local(64, 128, block=B, window=1, causal=False)
    q, k = np.arange(64)[:, None], np.arange(128)[None, :]
    np.testing.assert_array_equal(lay.to_dense_mask(), (k <= q) & (np.abs(q // B - k // B) <= 1))
    tall = L.causal(128, 64, block=B)
    np.testing.assert_array_equal(tall.to_dense_mask(), np.arange(64)[None, :] <= np.arange(128)[:, None])
    assert tall.is_causal


# Algebra ------------------------------------------------------------------------------------
def _random_layout(rng: np.random.Generator, heads: int = 1) -> L.BlockLayout:
    """A random token mask with empty, partial and full tiles; the diagonal keeps rows valid."""
    nq = T // B
    tile_kind = rng.integers(0, 3, size=(heads, nq, nq))
    noise = rng.random((heads, T, T)) < 0.5
    kind = np.repeat(np.repeat(tile_kind, B, axis=1), B, axis=2)
    mask = np.where(kind == 2, True, np.where(kind == 1, noise, False)) | np.eye(T, dtype=bool)
    return L.from_mask_fn(lambda h, q, k: mask[h][q[:, 0]][:, k[0]], T, block=B, heads=heads)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), heads_a=st.sampled_from([1, 3]), heads_b=st.sampled_from([1, 3]))
def test_and_or_match_token_masks(seed, heads_a, heads_b):
    rng = np.random.default_rng(seed)
    a, b = _random_layout(rng, heads_a), _random_layout(rng, heads_b)
    ma = np.broadcast_to(a.to_dense_mask(), (3, T, T)) if heads_a > 1 or heads_b > 1 else a.to_dense_mask()
    mb = np.broadcast_to(b.to_dense_mask(), np.shape(ma))
    np.testing.assert_array_equal((a & b).to_dense_mask(), ma & mb)
    np.testing.assert_array_equal((a | b).to_dense_mask(), ma | mb)
    both = a | b
    assert both.density() == pytest.approx((ma | mb).mean())
    # Block lists reproduce the tile map; transposed lists are its transpose.
    for lists, codes in ((both.kv_lists, both.codes), (both.q_lists, both.codes.transpose(0, 2, 1))):
        idx, cnt, mid = lists
        rebuilt = np.zeros(codes.shape, bool)
        for h, r in np.ndindex(*cnt.shape):
            rebuilt[h, r, idx[h, r, : cnt[h, r]]] = True
            assert (np.diff(idx[h, r, : cnt[h, r]]) > 0).all()
            assert (mid[h, r, cnt[h, r]:] == L.MASK_PAD).all()
        np.testing.assert_array_equal(rebuilt, codes != L.EMPTY)


def test_row_groups_keep_dense_rows_apart():
    lay = L.bigbird(256, block=B, window=1, n_global=1, n_random=1, seed=0)  # row 0 is dense
    groups = lay.row_groups()
    assert len(groups) >= 2
    rows = np.sort(np.concatenate([g[0] for g in groups]))
    np.testing.assert_array_equal(rows, np.arange(16))
    light = min(groups, key=lambda g: g[1].shape[-1])
    assert light[1].shape[-1] <= 5 and 0 not in light[0]
    assert L.causal(T, block=B) == L.causal(T, block=B) and len(L.full(T, block=B).row_groups()) == 1


def test_per_head_layouts_and_hashing():
    heads = [L.causal(T, block=B), L.local(T, block=B, window=1), L.strided(T, block=B, stride=2)]
    lay = L.stack_heads(heads)
    assert lay.heads == 3
    for h, single in enumerate(heads):
        np.testing.assert_array_equal(lay.to_dense_mask()[h], single.to_dense_mask())
    assert lay.n_kept_blocks == pytest.approx(np.mean([x.n_kept_blocks for x in heads]))
    again = L.stack_heads([L.causal(T, block=B), L.local(T, block=B, window=1), L.strided(T, block=B, stride=2)])
    assert hash(lay) == hash(again) and lay == again and lay != heads[0]
    traces = []

    def scaled(x, lay):
        traces.append(lay)
        return x * lay.density()

    use = jax.jit(scaled, static_argnums=1)  # layouts are static jit arguments
    assert float(use(jnp.ones(()), lay)) == pytest.approx(lay.density())
    assert float(use(jnp.ones(()), again)) == pytest.approx(lay.density())
    assert len(traces) == 1  # an equal layout reuses the compiled function


# Validation ---------------------------------------------------------------------------------
def test_invalid_layouts_raise_with_messages():
    with pytest.raises(ValueError, match="not a positive multiple of the block size"):
        L.causal(100, block=16)
    with pytest.raises(ValueError, match="kv_len=40 is not a positive multiple"):
        L.full(64, 40, block=16)
    empty_row = np.eye(4, dtype=bool)
    empty_row[2, 2] = False
    with pytest.raises(ValueError, match=r"query 32 \(query block 2\) keeps no key"):
        L.from_block_map(empty_row, block=16)
    with pytest.raises(ValueError, match=r"query 5 .* keeps no key"):
        L.from_mask_fn(lambda q, k: (k <= q) & (q != 5), 64, block=16)
    with pytest.raises(ValueError, match="layout is not causal: head 0, query block 0 keeps key block 0"):
        L.local(64, block=16, window=1, causal=False).require_causal()
    with pytest.raises(ValueError, match="not causal"):
        L.full(64, block=16).require_causal()
    assert L.causal(64, block=16).require_causal().is_causal
    with pytest.raises(ValueError, match="different shapes"):
        L.causal(64, block=16) & L.causal(128, block=16)
    with pytest.raises(ValueError, match="2 and 3 heads"):
        L.stack_heads([L.full(64, block=16)] * 2) | L.stack_heads([L.full(64, block=16)] * 3)
    with pytest.raises(ValueError, match="window must be >= 0"):
        L.local(64, block=16, window=-1)


# Config patterns ----------------------------------------------------------------------------
# a derived layout (memgpt-jax layout derive) measured at T tokens: bands and globals hold at any length
DERIVED = json.dumps({"block_size": B, "kind": "band", "seq_len": T, "layers": [
    [{"offsets": [0, 2, 5], "globals": [1]}, {"offsets": [0, 1], "globals": [0, 3]}]]})


@pytest.mark.parametrize("pattern", PATTERNS)
def test_from_config_is_causal_and_row_stable(pattern):
    cfg = AttentionConfig(pattern=pattern, block_size=B, window=2, n_global=1, n_random=2, stride=3, seed=7,
                          derived=DERIVED if pattern == "derived" else "")
    short, long = L.from_config(cfg, T, T), L.from_config(cfg, 2 * T, 2 * T)
    assert short.is_causal and long.is_causal
    np.testing.assert_array_equal(long.to_dense_mask()[..., :T, :T], short.to_dense_mask())  # (per head: derived)
    prefill = L.from_config(cfg, T // 2, T)  # a prompt into a longer cache
    np.testing.assert_array_equal(prefill.to_dense_mask(), short.to_dense_mask()[..., : T // 2, :])


def test_from_config_patterns_compose_as_documented():
    assert L.from_config(AttentionConfig(pattern="dense", block_size=B), T, T) == L.causal(T, block=B)
    cfg = AttentionConfig(pattern="window_global", block_size=B, window=2, n_global=1)
    expected = L.causal(T, block=B) & (L.local(T, block=B, window=2, causal=False) | L.global_blocks(T, block=B, n=1))
    assert L.from_config(cfg, T, T) == expected
    cfg = AttentionConfig(pattern="local", block_size=B, window=1)
    assert L.from_config(cfg, T, T) == L.local(T, block=B, window=1)
    mask = L.from_config(AttentionConfig(pattern="bigbird", block_size=B, window=1, n_global=1,
                                         n_random=1, seed=2), T, T).to_dense_mask()
    rows = L.from_config(AttentionConfig(pattern="bigbird", block_size=B, window=1, n_global=1,
                                         n_random=1, seed=2), T, T).rows_dense_mask(np.array([3, 77, 127]))
    np.testing.assert_array_equal(rows[0], mask[[3, 77, 127]])


def test_row_groups_are_the_cheapest_split_that_pays():
    """The dynamic programme against every split of the distinct counts (brute force)."""
    import itertools

    from memgpt_jax.attention.block_layout import _split_by_count

    def cost(counts, bounds):
        return sum(counts[(counts > lo) & (counts <= hi)].size * hi for lo, hi in zip(bounds[:-1], bounds[1:]))

    rng = np.random.default_rng(0)
    for trial in range(40):
        counts = rng.integers(1, 12, size=int(rng.integers(1, 24)))
        values = sorted(set(counts.tolist()))
        best = {}  # groups -> cheapest cost over every choice of cuts
        for g in range(1, min(4, len(values)) + 1):
            best[g] = min(cost(counts, [-1, *cuts, values[-1]]) for cuts in itertools.combinations(values[:-1], g - 1))
        bounds = _split_by_count(counts, max_groups=4)
        g = len(bounds) - 1
        assert cost(counts, bounds) == best[g], (counts, bounds)
        if g > 1:  # each group it kept saved at least the threshold
            assert best[g] <= 0.92 * best[g - 1] + 1e-9
        if g < len(best):  # the next one would not have
            assert best[g + 1] > 0.92 * best[g]
