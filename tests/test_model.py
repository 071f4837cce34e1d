"""The foundation's model checks (issue 2, item 7)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memgpt_jax import count_params, flops_per_token
from memgpt_jax import model as M
from memgpt_jax.attention import layout as L
from memgpt_jax.config import gpt2_small, small_10m, tiny
from memgpt_jax.flops import keys_per_query
from memgpt_jax.layers import activation, gelu_tanh, materialized_transpose, matmul

B, T = 2, 16
VARIANTS = {
    "gpt2": tiny(),
    "gqa_rope_rms": tiny(n_kv_heads=2, position="rope", norm="rmsnorm", activation="silu", use_bias=False),
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def lm(request):
    cfg = VARIANTS[request.param]
    model = M.build(cfg)
    params, axes = M.init(model, jax.random.key(0))
    apply = jax.jit(lambda p, ids: model.apply({"params": p}, ids).logits)
    return cfg, model, params, axes, apply


def _ids(seed, cfg, shape=(B, T)):
    return jax.random.randint(jax.random.key(seed), shape, 1, cfg.vocab_size)


def test_shapes_dtypes_and_logical_axes(lm):
    cfg, model, params, axes, apply = lm
    logits = apply(params, _ids(1, cfg))
    chex.assert_shape(logits, (B, T, cfg.vocab_size))
    chex.assert_type(logits, jnp.float32)
    chex.assert_tree_all_finite(logits)
    for leaf in jax.tree.leaves(params):
        assert leaf.dtype == jnp.float32
    # Every parameter dimension has a logical axis name.
    flat_p = jax.tree_util.tree_leaves_with_path(params)
    flat_a = dict(jax.tree_util.tree_leaves_with_path(axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)))
    for path, leaf in flat_p:
        spec = flat_a[path]
        assert len(spec) == leaf.ndim and all(isinstance(a, str) for a in spec), (path, spec)


def test_causality(lm):
    cfg, model, params, _, apply = lm
    ids = _ids(2, cfg)
    t = 7
    changed = ids.at[:, t + 1 :].set(_ids(3, cfg)[:, t + 1 :])
    a, b = apply(params, ids), apply(params, changed)
    np.testing.assert_allclose(a[:, : t + 1], b[:, : t + 1], atol=1e-6, rtol=0)
    assert np.abs(a[:, t + 1 :] - b[:, t + 1 :]).max() > 1e-3


def test_kv_cache_decode_equals_full_forward(lm):
    cfg, model, params, _, apply = lm
    ids = _ids(4, cfg)
    full = apply(params, ids)
    step = jax.jit(lambda p, c, x: M.decode_step(model, p, c, x))
    cache = M.init_cache(model, B, length=32)
    out, cache = step(params, cache, ids[:, :5])  # prefill 5 tokens at once
    pieces = [out.logits]
    for t in range(5, T):
        out, cache = step(params, cache, ids[:, t : t + 1])
        pieces.append(out.logits)
    np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), full, atol=1e-5, rtol=0)
    assert int(cache["transformer"]["cache_state"]["cache_index"]) == T


@pytest.mark.slow
def test_decode_with_left_padded_prompts():
    """Batched prompts of different lengths: left padding + explicit positions."""
    cfg = VARIANTS["gpt2"]
    model = M.build(cfg)
    params, _ = M.init(model, jax.random.key(0))
    prompt = _ids(5, cfg, (1, 6))
    n_pad = 3
    padded = jnp.concatenate([jnp.zeros((1, n_pad), jnp.int32), prompt], axis=1)
    valid = jnp.arange(6 + n_pad)[None] >= n_pad
    positions = jnp.maximum(jnp.arange(6 + n_pad)[None] - n_pad, 0)
    cache = M.init_cache(model, 1, length=16)
    out_pad, cache = M.decode_step(model, params, cache, padded, kv_valid=valid, positions=positions)
    nxt = jnp.array([[7]])
    out_pad2, _ = M.decode_step(model, params, cache, nxt, positions=jnp.array([[6]]))
    ref = model.apply({"params": params}, jnp.concatenate([prompt, nxt], axis=1)).logits
    np.testing.assert_allclose(out_pad.logits[:, n_pad:], ref[:, :6], atol=1e-5, rtol=0)
    np.testing.assert_allclose(out_pad2.logits[:, 0], ref[:, 6], atol=1e-5, rtol=0)


def test_jit_equals_no_jit(lm):
    cfg, model, params, _, apply = lm
    ids = _ids(6, cfg)
    np.testing.assert_allclose(model.apply({"params": params}, ids).logits, apply(params, ids), atol=1e-5, rtol=1e-5)


def test_bf16_compute_close_to_f32():
    cfg = VARIANTS["gpt2"]
    model32, model16 = M.build(cfg), M.build(cfg.replace(compute_dtype="bfloat16"))
    params, _ = M.init(model32, jax.random.key(0))
    ids = _ids(7, cfg)
    out16 = jax.jit(lambda p: model16.apply({"params": p}, ids, output_hidden_states=True))(params)
    assert out16.hidden_states[-1].dtype == jnp.bfloat16
    assert out16.logits.dtype == jnp.float32
    ref = model32.apply({"params": params}, ids).logits
    err = np.abs(out16.logits - ref).max()
    assert err < 0.05 * np.abs(ref).max(), err


def test_hidden_states_and_attention_weights(lm):
    cfg, model, params, _, _ = lm
    out = model.apply({"params": params}, _ids(8, cfg), output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == cfg.n_layers + 1
    assert len(out.attentions) == cfg.n_layers
    w = out.attentions[0]
    chex.assert_shape(w, (B, cfg.n_heads, T, T))
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
    assert float(jnp.abs(jnp.triu(w, k=1)).max()) == 0.0


def test_gpt2_small_parameter_count():
    assert count_params(gpt2_small()) == 124_439_808


def test_flops_per_token_matches_nanogpt_formula():
    cfg = gpt2_small()
    n_no_pos = count_params(cfg) - cfg.max_len * cfg.d_model
    expected = 6 * n_no_pos + 12 * cfg.n_layers * cfg.n_heads * cfg.head_dim * cfg.max_len
    # Ours counts matmul parameters only (no LayerNorm/bias terms): within 0.2%.
    assert abs(flops_per_token(cfg) - expected) / expected < 2e-3


@pytest.mark.parametrize("pooling", ["last", "mean", "meanmax"])
def test_padded_classification_equals_unpadded(pooling):
    cfg = tiny(num_labels=3, pooling=pooling)
    model = M.build(cfg, "classification")
    params, _ = M.init(model, jax.random.key(0))
    ids = _ids(9, cfg, (1, 10))
    padded = jnp.concatenate([ids, jnp.zeros((1, 6), jnp.int32)], axis=1)
    valid = jnp.arange(16)[None] < 10
    apply = jax.jit(model.apply)  # compiled, not run op by op
    a = apply({"params": params}, ids).logits
    b = apply({"params": params}, padded, kv_valid=valid).logits
    chex.assert_shape(a, (1, 3))
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_meanmax_pooling_by_hand():
    h = jnp.asarray(np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3) * np.array([1, -1, 1], np.float32))
    valid = jnp.asarray([[True, True, False, False], [False, False, False, False]])
    got = np.asarray(M.pool(h, valid, "meanmax"))
    want0 = np.concatenate([np.asarray(h[0, :2]).mean(0), np.asarray(h[0, :2]).max(0)])
    np.testing.assert_allclose(got[0], want0)
    np.testing.assert_allclose(got[1], np.zeros(6))  # no valid token: zeros, not -inf
    assert got.shape == (2, 6)


@pytest.mark.slow
def test_heads_share_the_backbone():
    cfg = tiny()
    lm_params, _ = M.init(M.build(cfg, "lm"), jax.random.key(0))
    qa = M.build(cfg, "qa")
    qa_params, _ = M.init(qa, jax.random.key(1))
    assert jax.tree.structure(lm_params["transformer"]) == jax.tree.structure(qa_params["transformer"])
    qa_params = {**qa_params, "transformer": lm_params["transformer"]}
    valid = jnp.arange(T)[None].repeat(B, 0) < 12
    out = qa.apply({"params": qa_params}, _ids(10, cfg), kv_valid=valid)
    chex.assert_shape([out.start_logits, out.end_logits], (B, T))
    assert float(out.start_logits[:, 12:].max()) <= -1e8


def test_too_long_input_raises():
    cfg = tiny(max_len=16)
    model = M.build(cfg)
    with pytest.raises(ValueError, match="exceeds max_len"):
        M.init(model, jax.random.key(0), seq_len=17)


def test_flops_count_only_kept_blocks():
    dense = small_10m()
    sparse = dense.replace(attention=dict(pattern="window_global", block_size=128, window=3, n_global=1))
    lay = L.from_config(sparse.attention, 2048, 2048)
    assert keys_per_query(sparse, 2048) == lay.n_kept_blocks * 128**2 / 2048 < keys_per_query(dense, 2048) == 2048
    attn_gap = 3 * 4 * dense.n_layers * dense.d_model * (2048 - keys_per_query(sparse, 2048))
    assert flops_per_token(dense, 2048) - flops_per_token(sparse, 2048) == pytest.approx(attn_gap)
    # Dense attention counts the whole score matrix (MFU); computed=True counts what the
    # causal block kernel computes, and the oracle computes the whole matrix.
    blocked = dense.replace(attention=dict(pattern="dense", impl="xla", block_size=128))
    causal_tiles = L.causal(2048, block=128).n_kept_blocks * 128**2 / 2048
    assert keys_per_query(blocked, 2048) == 2048 and keys_per_query(blocked, 2048, computed=True) == causal_tiles
    assert keys_per_query(dense, 2048, computed=True) == 2048
    assert flops_per_token(blocked, 2048, computed=True) < flops_per_token(blocked, 2048)


def test_matmul_backward_equals_autodiff_of_dot():
    """layers.matmul has its own VJP (gradients in the compute dtype, a materialised x^T on CPU):
    in float32 it equals autodiff of jnp.dot; in bf16 it agrees to bf16 rounding."""
    x = jax.random.normal(jax.random.key(0), (48, 24))
    w = jax.random.normal(jax.random.key(1), (24, 40))
    np.testing.assert_array_equal(materialized_transpose(x), x.T)
    np.testing.assert_array_equal(materialized_transpose(x[:5]), x[:5].T)  # rows not a multiple of 8
    x3 = x.reshape(2, 24, 24)  # any rank: the last two axes swap (the attention backward's dS)
    np.testing.assert_array_equal(materialized_transpose(x3), jnp.swapaxes(x3, -1, -2))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        materialized_transpose(x[0])

    def grads(mm, x, w):
        return jax.grad(lambda x, w: jnp.sum(jnp.sin(mm(x, w)) * jnp.arange(40.0)), (0, 1))(x, w)

    dot = lambda x, w: jnp.dot(x, w, preferred_element_type=jnp.float32)  # noqa: E731
    np.testing.assert_array_equal(matmul(x, w), dot(x, w))
    for got, want in zip(grads(matmul, x, w), grads(dot, x, w)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)  # summation order only
    xb, wb = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
    for got, want in zip(grads(matmul, xb, wb), grads(dot, xb, wb)):
        assert got.dtype == want.dtype == jnp.bfloat16
        scale = float(jnp.max(jnp.abs(want.astype(jnp.float32))))
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), atol=0.02 * scale)


def test_gelu_tanh_and_its_own_vjp_equal_the_formula():
    """layers.gelu_tanh recomputes its tanh in the backward: values and gradients equal
    jax.nn.gelu(approximate=True) in float32; in bf16 it returns bf16 (computed in f32)."""
    x = jnp.linspace(-8.0, 8.0, 1001)
    ref = lambda v: jax.nn.gelu(v, approximate=True)  # noqa: E731
    np.testing.assert_allclose(gelu_tanh(x), ref(x), rtol=1e-6, atol=1e-6)
    weights = jnp.cos(x)  # a cotangent that is not all ones
    got = jax.grad(lambda v: jnp.sum(gelu_tanh(v) * weights))(x)
    want = jax.grad(lambda v: jnp.sum(ref(v) * weights))(x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)  # gradients are O(1)
    assert activation("gelu_tanh", x) is not None and jnp.array_equal(activation("gelu_tanh", x), gelu_tanh(x))
    xb = x.astype(jnp.bfloat16)
    yb = gelu_tanh(xb)
    assert yb.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(yb, np.float32), ref(xb.astype(jnp.float32)), rtol=8e-3, atol=1e-2)
    gb = jax.grad(lambda v: jnp.sum(gelu_tanh(v).astype(jnp.float32)))(xb)
    assert gb.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(gb, np.float32), jax.grad(lambda v: jnp.sum(ref(v)))(xb.astype(jnp.float32)),
                               rtol=8e-3, atol=1e-2)
    with pytest.raises(ValueError, match="unknown activation"):
        activation("swish9", x)


def test_measured_peak_keeps_the_best_figure():
    """Benchmarks measure the peak again beside their kernels (``cached=False``): a measurement
    taken while the machine is busy must not replace a better one (inflating what follows)."""
    from memgpt_jax import flops

    key = f"{jax.default_backend()}:float32:64"
    flops._PEAK_CACHE.pop(key, None)
    first = flops.measured_peak_flops("float32", n=64, repeats=1)
    assert first > 0 and flops.measured_peak_flops("float32", n=64, repeats=1) == first  # cached
    flops._PEAK_CACHE[key] = best = first * 1e6  # a better figure seen earlier in the process
    assert flops.measured_peak_flops("float32", n=64, repeats=1, cached=False) == best
    flops._PEAK_CACHE.pop(key)


def _dot_operand_dtypes(hlo: str) -> list[tuple[str, str]]:
    """(lhs, rhs) element types of every dot in optimised HLO text."""
    import re

    types = dict(re.findall(r"%([\w.\-]+) = (\w+)\[", hlo))  # instruction -> element type
    for header in re.findall(r"^%?[\w.\-]+ \((.*?)\) -> ", hlo, re.M):  # computation parameters
        types.update(re.findall(r"([\w.\-]+): (\w+)\[", header))
    return [(types.get(a, "?"), types.get(b, "?"))
            for a, b in re.findall(r" dot\(%([\w.\-]+), %([\w.\-]+)\)", hlo)]


@pytest.mark.slow
@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's dot dtypes")
def test_bf16_train_step_runs_every_product_in_bf16_on_cpu():
    """No GEMM of a bf16 training step falls back to float32: XLA:CPU converts both operands
    of a bf16 product to float32 when one reaches it transposed (``g @ w^T`` in every
    ``dx``, ``dS`` in the attention kernel's ``dq``), which runs at half the speed."""
    from memgpt_jax.run_config import OptimConfig
    from memgpt_jax.training.optim import make_optimizer
    from memgpt_jax.training.state import TrainState
    from memgpt_jax.training.steps import make_loss_fn, make_train_step

    cfg = tiny(vocab_size=64, d_model=32, n_heads=2, max_len=64, compute_dtype="bfloat16").replace(
        attention=dict(pattern="window_global", block_size=16, window=1, n_global=1))
    model = M.build(cfg)
    params, _ = M.init(model, jax.random.key(0))
    tx, schedule = make_optimizer(OptimConfig(lr=1e-3, warmup_steps=0), 10)
    step = jax.jit(make_train_step(make_loss_fn("lm", model), tx, schedule))
    ids = np.zeros((2, 64), np.int32)
    batch = {"inputs": ids, "targets": ids, "loss_mask": np.ones((2, 64), bool)}
    hlo = step.lower(TrainState.create(params, tx), batch, jax.random.key(1)).compile().as_text()
    dtypes = _dot_operand_dtypes(hlo)
    assert len(dtypes) >= 10 and ("bf16", "bf16") in dtypes
    assert not [d for d in dtypes if "f32" in d], dtypes
