"""The model-facing AttentionFn: dense and sparse patterns; forward, prefill, KV-cache decoding, weights."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memgpt_jax.attention import layout as L
from memgpt_jax.attention import dense_cpu_tile, make_attention_fn
from memgpt_jax.attention.reference import causal_attention, reference_attention
from memgpt_jax.config import PATTERNS, AttentionConfig

B, S, N, K, D, BLK = 2, 64, 4, 2, 16, 16
TOL = dict(atol=2e-5, rtol=2e-5)


# a derived layout whose heads differ (per-head kernels and decoding)
DERIVED = json.dumps({"block_size": BLK, "kind": "band", "seq_len": S, "layers": [
    [{"offsets": [0, 2], "globals": [0]}, {"offsets": [0], "globals": [1]}, {"offsets": [0, 1], "globals": []},
     {"offsets": [0, 1, 3], "globals": [0]}]]})


def config(pattern: str, impl: str = "xla") -> AttentionConfig:
    return AttentionConfig(pattern=pattern, block_size=BLK, window=1, n_global=1, n_random=1,
                           stride=2, seed=3, impl=impl, derived=DERIVED if pattern == "derived" else "")


@pytest.fixture(scope="module")
def inputs():
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    q = jax.random.normal(keys[0], (B, S, N, D))
    k = jax.random.normal(keys[1], (B, S, K, D))
    v = jax.random.normal(keys[2], (B, S, K, D))
    kv_valid = jnp.arange(S)[None, :] < jnp.array([[S - 9], [S]])
    seg = (jnp.arange(S)[None, :] >= jnp.array([[20], [41]])).astype(jnp.int32)
    return q, k, v, kv_valid, seg


def assert_oracle_values_and_grads(fn, q, k, v, **kw):
    """``fn`` gives the oracle's (causal_attention's) outputs and q/k/v gradients."""

    def loss(f, q, k, v):
        out, _ = f(q, k, v, **kw)
        return jnp.sum(out * jnp.cos(out)), out

    (_, want), gw = jax.value_and_grad(lambda *a: loss(causal_attention, *a), argnums=(0, 1, 2), has_aux=True)(q, k, v)
    (_, got), gg = jax.value_and_grad(lambda *a: loss(fn, *a), argnums=(0, 1, 2), has_aux=True)(q, k, v)
    np.testing.assert_allclose(got, want, **TOL)
    for a, b in zip(gg, gw):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def test_dense_pattern_is_causal_attention():
    assert make_attention_fn(AttentionConfig(impl="reference")) is causal_attention
    assert make_attention_fn(AttentionConfig()) is make_attention_fn(AttentionConfig())
    assert make_attention_fn(config("strided")) is make_attention_fn(config("strided"))


def _runs_block_kernel(fn, *args, **kw) -> bool:
    """Whether ``fn`` runs the xla block kernel (its own custom VJP) rather than
    materialising the whole score matrix (the oracle)."""
    return "custom_vjp_call[" in str(jax.make_jaxpr(lambda *a: fn(*a, **kw)[0])(*args))


@pytest.mark.slow
def test_auto_dense_on_cpu_runs_the_block_kernel_with_a_tile_by_length():
    """impl="auto" (the default) on CPU: the causal block kernel with large tiles from 128 tokens,
    the oracle's values and gradients (padding and packed documents included); the oracle for
    attention maps, KV-cache decoding and shorter sequences."""
    assert [dense_cpu_tile(t) for t in (64, 127, 128, 384, 512, 768, 1024, 8192)] == [0, 0, 128, 128, 256, 256,
                                                                                      512, 512]
    T = 256
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    q, k, v = (jax.random.normal(kk, (2, T, 2, 16)) for kk in keys)
    kv_valid = jnp.arange(T)[None, :] < jnp.array([[T - 37], [T]])
    seg = (jnp.arange(T)[None, :] >= jnp.array([[100], [170]])).astype(jnp.int32)
    auto = make_attention_fn(AttentionConfig(block_size=BLK))
    assert _runs_block_kernel(auto, q, k, v)
    assert_oracle_values_and_grads(auto, q, k, v, kv_valid=kv_valid, q_segment_ids=seg, kv_segment_ids=seg)
    assert not _runs_block_kernel(auto, q, k, v, return_weights=True)
    assert not _runs_block_kernel(auto, q[:, :64], k[:, :64], v[:, :64])
    out, weights = auto(q, k, v, kv_valid=kv_valid, return_weights=True)
    np.testing.assert_allclose(weights, causal_attention(q, k, v, kv_valid=kv_valid, return_weights=True)[1], **TOL)
    step = auto(q[:, 200:201], k[:, :201], v[:, :201], q_offset=200)[0]
    np.testing.assert_allclose(step, causal_attention(q[:, 200:201], k[:, :201], v[:, :201], q_offset=200)[0], **TOL)


def test_dense_through_the_block_kernel_equals_the_oracle(inputs):
    """pattern="dense" with impl="xla": the causal-layout kernel, same values and gradients."""
    q, k, v, kv_valid, seg = inputs
    fast = make_attention_fn(AttentionConfig(block_size=BLK, impl="xla"))
    assert fast is not causal_attention
    assert_oracle_values_and_grads(fast, q, k, v, kv_valid=kv_valid, q_segment_ids=seg, kv_segment_ids=seg)


def test_fused_dense_equals_the_oracle(inputs):
    """impl="fused" (jax.nn.dot_product_attention; cuDNN on GPUs): the oracle's values and
    gradients with GQA; masked, decoding and weight-returning calls fall back to the oracle."""
    q, k, v, kv_valid, seg = inputs
    fused = make_attention_fn(AttentionConfig(impl="fused"))
    assert_oracle_values_and_grads(fused, q, k, v)
    kw = dict(kv_valid=kv_valid, q_segment_ids=seg, kv_segment_ids=seg, return_weights=True)
    for a, b in zip(fused(q, k, v, **kw), causal_attention(q, k, v, **kw)):
        np.testing.assert_allclose(a, b, **TOL)
    step = fused(q[:, 5:6], k[:, :6], v[:, :6], q_offset=5)[0]
    np.testing.assert_allclose(step, causal_attention(q[:, 5:6], k[:, :6], v[:, :6], q_offset=5)[0], **TOL)
    with pytest.raises(ValueError, match="dense attention only"):
        AttentionConfig(pattern="local", impl="fused")


# the derived layout's per-head decoding is in the fast loop through test_export (cached decoding)
@pytest.mark.parametrize("pattern", [pytest.param(p, marks=pytest.mark.slow) if p == "derived" else p for p in PATTERNS])
def test_forward_decode_and_weights_agree(pattern, inputs):
    """Every pattern through the block kernel ("dense": the causal layout)."""
    q, k, v, kv_valid, seg = inputs
    fn = make_attention_fn(config(pattern))
    extras = dict(kv_valid=kv_valid, kv_segment_ids=seg)
    full, weights = fn(q, k, v, q_segment_ids=seg, **extras)
    assert weights is None
    mask = L.from_config(config(pattern), S, S).to_dense_mask()
    want = reference_attention(q, k, v, mask=mask, q_segment_ids=seg, **extras)
    np.testing.assert_allclose(full, want, **TOL)

    @jax.jit
    def decode(q_t, offset, seg_t):
        return fn(q_t, k, v, q_offset=offset, q_segment_ids=seg_t, **extras)[0]

    for offset, t in ((0, 1), (23, 1), (S - 1, 1), (BLK, BLK), (37, 5), (5, 2 * BLK + 3)):
        got = decode(q[:, offset:offset + t], jnp.int32(offset), seg[:, offset:offset + t])
        np.testing.assert_allclose(got, full[:, offset:offset + t], err_msg=f"offset {offset}", **TOL)

    out_w, w = fn(q, k, v, q_segment_ids=seg, return_weights=True, **extras)
    np.testing.assert_allclose(out_w, full, **TOL)
    assert w.shape == (B, N, S, S)
    assert not (np.asarray(w) * ~mask).any()  # no weight outside the layout (per head for "derived")
    np.testing.assert_allclose(np.asarray(w).sum(-1), 1.0, atol=1e-5)


def test_prefill_and_ragged_lengths(inputs):
    """A prompt shorter than the cache, and lengths that are not whole blocks."""
    q, k, v, kv_valid, seg = inputs
    fn = make_attention_fn(config("window_global"))
    full, _ = fn(q, k, v, kv_valid=kv_valid)
    prefill, _ = fn(q[:, :37], k, v, kv_valid=kv_valid)
    np.testing.assert_allclose(prefill, full[:, :37], **TOL)
    short, _ = fn(q[:, :37], k[:, :37], v[:, :37], kv_valid=kv_valid[:, :37])
    np.testing.assert_allclose(short, full[:, :37], **TOL)


def test_decode_grads_and_pallas_regime(inputs):
    q, k, v, kv_valid, _ = inputs
    fn = make_attention_fn(config("bigbird", impl="pallas"))
    ref = make_attention_fn(config("bigbird", impl="reference"))
    loss = lambda f: lambda q, k, v: jnp.sum(jnp.sin(f(q, k, v, kv_valid=kv_valid)[0]))  # noqa: E731
    got = jax.grad(loss(fn), argnums=(0, 1, 2))(q, k, v)
    want = jax.grad(loss(ref), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, **TOL)
