"""Block-sparse kernels (xla, pallas interpreted) against the reference oracle: outputs and dq, dk, dv."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memgpt_jax.attention import block_sparse_attention, layout as L, resolve_impl
from memgpt_jax.attention.pallas import pallas_attention
from memgpt_jax.attention.reference import reference_attention
from memgpt_jax.attention.xla import xla_attention

B, T, N, D, BLK = 2, 64, 4, 16, 16
TOL = dict(atol=2e-5, rtol=2e-5)


def make_inputs(t=T, s=T, kv_heads=2, dtype=jnp.float32, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), 4)
    q = jax.random.normal(keys[0], (B, t, N, D), jnp.float32)
    k = jax.random.normal(keys[1], (B, s, kv_heads, D), jnp.float32)
    v = jax.random.normal(keys[2], (B, s, kv_heads, D), jnp.float32)
    cot = jax.random.normal(keys[3], (B, t, N, D), jnp.float32)
    return tuple(x.astype(dtype) for x in (q, k, v)) + (cot.astype(dtype),)


def random_layout(seed: int, t=T, s=T, heads=1) -> L.BlockLayout:
    """Random empty/partial/full tiles; every query keeps key ``min(q, s - 1)``."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 3, size=(heads, t // BLK, s // BLK))
    kind = np.repeat(np.repeat(kind, BLK, axis=1), BLK, axis=2)
    noise = rng.random((heads, t, s)) < 0.5
    anchor = np.arange(s)[None, :] == np.minimum(np.arange(t), s - 1)[:, None]
    mask = np.where(kind == 2, True, np.where(kind == 1, noise, False)) | anchor
    return L.from_mask_fn(lambda h, q, k: mask[h][q[:, 0]][:, k[0]], t, s, block=BLK, heads=heads)


@functools.partial(jax.jit, static_argnames=("fn",))
def out_and_grads(fn, q, k, v, cot, extras):
    out, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, **extras), q, k, v)
    return (out, *vjp(cot))


def reference_fn(mask):
    def fn(q, k, v, kv_valid=None, segment_ids=None):
        q_ids, kv_ids = (None, None) if segment_ids is None else segment_ids
        return reference_attention(q, k, v, mask=mask, kv_valid=kv_valid, q_segment_ids=q_ids, kv_segment_ids=kv_ids)
    return fn


@jax.jit
def reference_out_and_grads(q, k, v, cot, mask, extras):
    out, vjp = jax.vjp(lambda q, k, v: reference_fn(mask)(q, k, v, **extras), q, k, v)
    return (out, *vjp(cot))


def check_against_reference(layout, impl_fn, q, k, v, cot, extras=None, tol=TOL):
    extras = extras or {}
    got = out_and_grads(impl_fn, q, k, v, cot, extras)
    want = reference_out_and_grads(q, k, v, cot, jnp.asarray(layout.to_dense_mask()), extras)
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, want):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), err_msg=name, **tol)


def padding_and_segments(t=T, s=T):
    kv_valid = jnp.arange(s)[None, :] < jnp.array([[s - 13], [s]])
    seg_q = (jnp.arange(t)[None, :] >= jnp.array([[t // 3], [t // 2 + 5]])).astype(jnp.int32)
    seg_k = (jnp.arange(s)[None, :] >= jnp.array([[t // 3], [t // 2 + 5]])).astype(jnp.int32)
    return kv_valid, (seg_q, seg_k)


# A derived layout (memgpt-jax layout derive) on this grid: per-head bands and global blocks
DERIVED_SPEC = {"block_size": BLK, "kind": "band", "seq_len": T, "layers": [
    [{"offsets": [0], "globals": [0]}],
    [{"offsets": [0, 1], "globals": [0]}, {"offsets": [0], "globals": []}, {"offsets": [0, 2], "globals": [1]},
     {"offsets": [0, 1, 2, 3], "globals": []}]]}


# Layout cases: (layout, kv_heads, extras kind) ------------------------------------------------
def _cases():
    causal = L.causal(T, block=BLK)
    return {
        "random0": (random_layout(0), 2, None),
        "random1_mha": (random_layout(1), 4, None),
        "random2_mqa_padded": (random_layout(2), 1, "pad"),
        "causal": (causal, 2, None),
        "local": (L.local(T, block=BLK, window=1), 2, None),
        "window_global": (causal & (L.local(T, block=BLK, window=1) | L.global_blocks(T, block=BLK, n=1)), 2, "seg"),
        "global_tokens": (causal & (L.local(T, block=BLK, window=0) | L.global_tokens(T, block=BLK, n_tokens=5)), 2, None),
        "strided": (L.strided(T, block=BLK, stride=2), 2, None),
        "fixed_padded": (L.fixed(T, block=BLK, stride=2), 2, "pad"),
        "bigbird_full_rows": (L.bigbird(T, block=BLK, window=0, n_global=1, n_random=1, seed=5), 2, None),
        "bigbird_causal": (L.bigbird(T, block=BLK, window=1, n_global=1, n_random=1, seed=5, causal=True), 2, "both"),
        "mask_fn_or": (L.from_mask_fn(lambda q, k: (q - k) % 5 == 0, T, block=BLK) | causal, 2, None),
        "per_head": (L.stack_heads([causal, L.local(T, block=BLK, window=0), random_layout(3), L.full(T, block=BLK)]), 2, "both"),
        "derived_per_head": (L.derived(DERIVED_SPEC, 1, T), 2, "both"),
    }


CASES = _cases()


def extras_for(kind, t=T, s=T):
    kv_valid, segs = padding_and_segments(t, s)
    return {None: {}, "pad": {"kv_valid": kv_valid}, "seg": {"segment_ids": segs},
            "both": {"kv_valid": kv_valid, "segment_ids": segs}}[kind]


# The costliest layouts to compile run in the full suite only (`-m "not slow"` skips them);
# the fast loop keeps one of each family.
SLOW_CASES = {"bigbird_causal", "strided", "random1_mha", "random2_mqa_padded"}


def _marked(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_CASES else n for n in names]


@pytest.mark.parametrize("name", _marked(sorted(CASES)))
def test_xla_matches_reference(name):
    layout, kv_heads, kind = CASES[name]
    q, k, v, cot = make_inputs(kv_heads=kv_heads, seed=hash(name) % 1000)
    fn = functools.partial(block_sparse_attention, layout=layout, impl="xla")
    check_against_reference(layout, fn, q, k, v, cot, extras_for(kind))


@pytest.mark.parametrize("t,s", [(64, 128), (128, 64)])
def test_xla_rectangular_matches_reference(t, s):
    layout = random_layout(t + s, t, s) | L.causal(t, s, block=BLK)
    q, k, v, cot = make_inputs(t, s)
    fn = functools.partial(block_sparse_attention, layout=layout, impl="xla")
    check_against_reference(layout, fn, q, k, v, cot, extras_for("both", t, s))


def test_xla_small_chunks_match_reference():
    """Many chunks and padded chunk rows (chunk_bytes forces one or two rows per chunk)."""
    layout, kv_heads, _ = CASES["bigbird_full_rows"]
    q, k, v, cot = make_inputs(kv_heads=kv_heads)
    fn = functools.partial(xla_attention, layout=layout, chunk_bytes=40_000)
    check_against_reference(layout, fn, q, k, v, cot)


# Merged forward rows (xla.FORWARD_MERGE): with the cost rule lifted every group of two rows or
# more merges, so odd groups (a padded pair or triple), per-head unions, masks of the key blocks a
# query block does not keep, padding and segments all meet the oracle; under jax.grad the forward
# runs single rows, which every test above checks.
@pytest.mark.parametrize("name,merge", [("window_global", 2), ("per_head", 3), ("mask_fn_or", 3),
                                        pytest.param("random0", 3, marks=pytest.mark.slow),
                                        pytest.param("bigbird_causal", 2, marks=pytest.mark.slow)])
def test_xla_merged_forward_rows_match_reference(monkeypatch, name, merge):
    from memgpt_jax.attention import xla

    monkeypatch.setattr(xla, "MERGE_MAX_EXTRA", float("inf"))
    layout, kv_heads, kind = CASES[name]
    groups = xla._Plan(layout, 1.0, xla.DEFAULT_CHUNK_BYTES, merge).groups(B, 2, 1)
    assert any(rows.shape[1] == merge for rows, *_ in groups)
    q, k, v, _ = make_inputs(kv_heads=kv_heads, seed=11)
    extras = extras_for(kind)
    got = jax.jit(functools.partial(xla_attention, layout=layout, merge=merge, **_kernel_extras(extras)))(q, k, v)
    want = reference_fn(jnp.asarray(layout.to_dense_mask()))(q, k, v, **extras)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), **TOL)


def _kernel_extras(extras):
    seg = extras.get("segment_ids")
    return {"kv_valid": extras.get("kv_valid"), "q_segment_ids": None if seg is None else seg[0],
            "kv_segment_ids": None if seg is None else seg[1]}


def test_merge_rows_unites_key_blocks_where_it_pays():
    from memgpt_jax.attention import xla
    from memgpt_jax.attention.block_layout import MASK_PAD
    from benchmarks.attention import build_layout

    # window + global at 8k (block 0, the diagonal and 3 blocks back): pairs of rows keep 6 blocks
    # for their 2 x 5, +20%, and merge
    layout = build_layout("window_global", 8192)
    groups = xla._Plan(layout, 1.0, xla.DEFAULT_CHUNK_BYTES, merge=2).groups(1, 4, 1)
    rows, n_rows, _, _, idx, mid = max(groups, key=lambda g: g[1])
    assert rows.shape[1] == 2 and idx.shape[-1] == 6 and n_rows == 64
    pair = rows[10]
    assert list(pair) == [20, 21] and list(idx[0, 10]) == [0, 17, 18, 19, 20, 21]
    own = layout.codes[0][pair[:, None], idx[0, 10][None, :]] != 0  # [2, 6]: each query block's own keys
    assert ((mid[0, 10] != MASK_PAD) == own).all() and list((~own).sum(axis=1)) == [1, 1]
    # rows whose key blocks barely overlap stay single: their union would double the tiles
    disjoint = L.from_block_map(np.eye(8, dtype=bool)[:, ::-1] | np.eye(8, dtype=bool), block=BLK)
    (rows, _, _, _, idx, mid), = xla._Plan(disjoint, 1.0, xla.DEFAULT_CHUNK_BYTES, merge=2).groups(1, 1, 1)
    assert rows.shape[1] == 1 and idx.shape[-1] == 2
    with pytest.raises(ValueError, match="merge"):
        xla_attention(*make_inputs()[:3], layout=CASES["causal"][0], merge=0)


@pytest.mark.parametrize("name", [pytest.param("window_global", marks=pytest.mark.slow), "per_head"])
def test_xla_bf16_moves_inputs_as_bits_and_matches_f32(name):
    """bf16 inputs cross the kernel's gathers and loops as uint16 bit patterns: the compiled
    forward + backward gathers no float32 copy of them (XLA:CPU runs a bf16 gather in f32),
    and the outputs and gradients are the float32 kernel's on the same values, to bf16 rounding."""
    import re

    layout, kv_heads, kind = CASES[name]
    q, k, v, cot = make_inputs(kv_heads=kv_heads, dtype=jnp.bfloat16, seed=7)
    fn = functools.partial(block_sparse_attention, layout=layout, impl="xla")
    extras = extras_for(kind)
    hlo = out_and_grads.lower(fn, q, k, v, cot, extras).compile().as_text()
    assert "gather(" in hlo and not re.search(r"= f32\[[^\]]*\](\{[^}]*\})? gather\(", hlo)
    got = out_and_grads(fn, q, k, v, cot, extras)
    want = out_and_grads(fn, *(x.astype(jnp.float32) for x in (q, k, v, cot)), extras)
    for label, a, b in zip(("out", "dq", "dk", "dv"), got, want):
        assert a.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b), atol=0.05, rtol=0.02, err_msg=label)


PALLAS_CASES = [
    pytest.param("tpu", "window_global", marks=pytest.mark.slow),
    ("tpu", "per_head"),
    pytest.param("tpu", "random2_mqa_padded", marks=pytest.mark.slow),
    pytest.param("gpu", "bigbird_causal", marks=pytest.mark.slow),
    ("gpu", "random0"),
    pytest.param("tpu", "derived_per_head", marks=pytest.mark.slow),
    pytest.param("gpu", "derived_per_head", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("backend,name", PALLAS_CASES)
def test_pallas_interpret_matches_reference(backend, name):
    layout, kv_heads, kind = CASES[name]
    q, k, v, cot = make_inputs(kv_heads=kv_heads, seed=7)

    def fn(q, k, v, kv_valid=None, segment_ids=None):
        q_ids, kv_ids = (None, None) if segment_ids is None else segment_ids
        return pallas_attention(q, k, v, layout, kv_valid=kv_valid, q_segment_ids=q_ids,
                                kv_segment_ids=kv_ids, backend=backend, interpret=True)

    check_against_reference(layout, fn, q, k, v, cot, extras_for(kind))


@pytest.mark.slow
def test_pallas_rectangular_matches_reference():
    layout = random_layout(11, 32, 64) | L.causal(32, 64, block=BLK)
    q, k, v, cot = make_inputs(32, 64)
    fn = functools.partial(pallas_attention, layout=layout, backend="tpu", interpret=True)
    check_against_reference(layout, fn, q, k, v, cot)


# Agreement with jax.nn.dot_product_attention ---------------------------------------------------
@pytest.mark.parametrize("impl", ["xla", "pallas"])
def test_full_and_causal_layouts_equal_jax_nn(impl):
    q, k, v, cot = make_inputs()
    for layout, is_causal in ((L.full(T, block=BLK), False), (L.causal(T, block=BLK), True)):
        fn = functools.partial(block_sparse_attention, layout=layout, impl=impl)
        ref = functools.partial(jax.nn.dot_product_attention, is_causal=is_causal)
        got = out_and_grads(fn, q, k, v, cot, {})
        want = out_and_grads(ref, q, k, v, cot, {})
        for a, b in zip(got, want):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOL)


# bf16: error no more than a few times the oracle's in bf16, both against float64 -----------------
def _attention_f64(q, k, v, mask):
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    k, v = (np.repeat(x, q.shape[2] // x.shape[2], axis=2) for x in (k, v))
    s = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
    s = np.where(mask, s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return np.einsum("bnts,bsnh->btnh", p / p.sum(-1, keepdims=True), v)


@pytest.mark.parametrize("impl", ["xla", "pallas"])
def test_bf16_error_is_within_a_few_times_reference_bf16(impl):
    layout = CASES["window_global"][0]
    q, k, v, _ = make_inputs(dtype=jnp.bfloat16, seed=3)
    mask = layout.to_dense_mask()
    exact = _attention_f64(q, k, v, mask)
    ref_err = np.abs(np.asarray(reference_attention(q, k, v, mask=mask), np.float64) - exact).max()
    got = jax.jit(functools.partial(block_sparse_attention, layout=layout, impl=impl))(q, k, v)
    assert got.dtype == jnp.bfloat16
    err = np.abs(np.asarray(got, np.float64) - exact).max()
    assert err <= 3 * ref_err + 1e-6, (err, ref_err)


def test_auto_and_reference_impls():
    assert resolve_impl("auto", D, L.causal(T, block=BLK)) == "xla"  # the tests run on CPU
    with pytest.raises(ValueError, match="unknown impl"):
        resolve_impl("cuda", D, L.causal(T, block=BLK))
    layout = CASES["strided"][0]
    q, k, v, _ = make_inputs()
    np.testing.assert_allclose(block_sparse_attention(q, k, v, layout, impl="reference"),
                               reference_attention(q, k, v, mask=layout.to_dense_mask()), **TOL)
    with pytest.raises(ValueError, match="unknown impl 'dense'"):  # the oracle's old name
        block_sparse_attention(q, k, v, layout, impl="dense")
    with pytest.raises(ValueError, match="layout is for q_len=64"):
        block_sparse_attention(q[:, :32], k, v, layout)


@pytest.mark.slow
def test_xla_memory_is_linear_in_length():
    """Compiled fwd+bwd temporaries grow ~linearly and stay far below one whole score matrix."""
    temps = {}
    for t in (4096, 8192):
        layout = L.causal(t, block=128) & (L.local(t, block=128, window=2) | L.global_blocks(t, block=128, n=1))
        x = jax.ShapeDtypeStruct((1, t, 4, 64), jnp.float32)
        loss = lambda q, k, v: block_sparse_attention(q, k, v, layout, impl="xla").sum()  # noqa: E731,B023
        compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(x, x, x).compile()
        temps[t] = compiled.memory_analysis().temp_size_in_bytes
    whole_scores = 4 * 8192 * 8192 * 4  # one f32 [heads, T, T] score matrix: 1 GiB
    assert temps[8192] < whole_scores / 16, temps
    assert temps[8192] < 2.2 * temps[4096], temps
