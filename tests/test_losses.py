"""Losses: values against NumPy references, masking, stop-gradient, edge cases."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memgpt_jax.training import losses as L

KINDS = L.KD_KINDS
RNG = np.random.default_rng(0)


def randn(*shape, scale=1.0):
    return (scale * RNG.standard_normal(shape)).astype(np.float32)


def np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_kl(logp, logq):
    p = np.exp(logp)
    return np.sum(np.where(p > 0, p * (logp - logq), 0.0), -1)


def np_mean(x, mask):
    m = np.broadcast_to(mask, x.shape).astype(np.float64)
    return float((x * m).sum() / max(m.sum(), 1.0))


def np_kd(zs, zt, mask, kind, T, beta=0.5):
    if kind == "mse":
        return np_mean(((zs - zt) ** 2).mean(-1), mask)
    ls, lt = np_log_softmax(zs / T), np_log_softmax(zt / T)
    if kind == "forward_kl":
        d = np_kl(lt, ls)
    elif kind == "reverse_kl":
        d = np_kl(ls, lt)
    else:
        lm = np.log(beta * np.exp(lt) + (1 - beta) * np.exp(ls))
        d = beta * np_kl(lt, lm) + (1 - beta) * np_kl(ls, lm)
    return T**2 * np_mean(d, mask)


# A batch with one padded position; every test shares these shapes.
ZS, ZT = randn(2, 3, 7, scale=2), randn(2, 3, 7, scale=2)
MASK = np.array([[1, 1, 0], [1, 1, 1]], bool)


def garble(x, mask, value):
    """``x`` with masked-out leading positions overwritten by ``value``."""
    m = mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))
    return np.where(m, x, np.asarray(value, x.dtype))


# --------------------------------------------------------------------------- supervised


def test_lm_cross_entropy_matches_numpy():
    y = RNG.integers(0, 7, (2, 3))
    loss, m = L.lm_cross_entropy(ZS, y, MASK, z_loss=1e-2)
    ls = np_log_softmax(ZS)
    ce = -np.take_along_axis(ls, y[..., None], -1)[..., 0]
    lse = np.log(np.exp(ZS).sum(-1))
    np.testing.assert_allclose(m["loss"], np_mean(ce, MASK), rtol=1e-5)
    np.testing.assert_allclose(loss, np_mean(ce + 1e-2 * lse**2, MASK), rtol=1e-5)
    np.testing.assert_allclose(m["accuracy"], np_mean(ZS.argmax(-1) == y, MASK))
    assert float(m["tokens"]) == 5
    chex.assert_shape(loss, ())
    chex.assert_type(loss, jnp.float32)
    plain, m0 = L.lm_cross_entropy(ZS, y, MASK)
    assert set(m0) == {"loss", "accuracy", "tokens"}
    np.testing.assert_allclose(plain, m["loss"], rtol=1e-6)


def test_cross_entropy_gradient_is_softmax_minus_onehot_and_accuracy_needs_a_unique_max():
    z = randn(4, 6, scale=30.0)  # large logits: the max shift keeps exp finite
    y = np.array([0, 3, 5, 2])
    g = jax.grad(lambda z: L.lm_cross_entropy(z, y)[0])(z)
    onehot = np.eye(6, dtype=np.float32)[y]
    np.testing.assert_allclose(g, (np.exp(np_log_softmax(z)) - onehot) / 4, atol=1e-6)
    ties = np.array([[2.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 1.0, 3.0], [1.0, 1.0, 1.0]], np.float32)
    _, m = L.lm_cross_entropy(ties, np.array([0, 0, 2, 1]))
    assert float(m["accuracy"]) == 0.5  # rows 0 and 3 tie at the maximum: not a correct guess


def test_classification_cross_entropy_label_smoothing():
    z, y, mask, eps = ZS[0], np.array([1, 4, 6]), np.array([1, 0, 1], bool), 0.1
    loss, m = L.classification_cross_entropy(z, y, mask, label_smoothing=eps)
    q = (1 - eps) * np.eye(7)[y] + eps / 7
    np.testing.assert_allclose(loss, np_mean(-(q * np_log_softmax(z)).sum(-1), mask), rtol=1e-5)
    np.testing.assert_allclose(m["accuracy"], np_mean(z.argmax(-1) == y, mask))


def test_span_cross_entropy():
    s, e = ZS[:, 0], ZT[:, 0]
    start, end = s.argmax(-1), np.array([e[0].argmax(), (e[1].argmax() + 1) % 7])
    loss, m = L.span_cross_entropy(s, e, start, end)
    ce = lambda z, y: -np.take_along_axis(np_log_softmax(z), y[:, None], -1)[:, 0]  # noqa: E731
    np.testing.assert_allclose(loss, np.mean(0.5 * (ce(s, start) + ce(e, end))), rtol=1e-5)
    assert float(m["start_accuracy"]) == 1.0 and float(m["end_accuracy"]) == 0.5
    assert float(m["span_accuracy"]) == 0.5


# --------------------------------------------------------------------------- logit distillation


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("T", [1.0, 2.0])
def test_kd_matches_numpy(kind, T):
    got = L.kd_divergence(ZS, ZT, MASK, kind=kind, temperature=T, beta=0.3)
    np.testing.assert_allclose(got, np_kd(ZS, ZT, MASK, kind, T, beta=0.3), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("T", [1.0, 2.0])
def test_kd_zero_when_student_equals_teacher(kind, T):
    assert abs(float(L.kd_divergence(ZT, ZT, MASK, kind=kind, temperature=T))) < 1e-6


def test_temperature_squared_scaling():
    # T^2 * KL(softmax(zt/T) || softmax(zs/T)), checked against the unscaled divergence.
    for T in (1.0, 3.0):
        unscaled = np_kl(np_log_softmax(ZT / T), np_log_softmax(ZS / T)).mean()
        np.testing.assert_allclose(L.kd_divergence(ZS, ZT, temperature=T) / T**2, unscaled, rtol=1e-5)


def test_distillation_loss_mixes():
    loss, m = L.distillation_loss(ZS, ZT, 3.0, MASK, alpha=0.25)
    np.testing.assert_allclose(m["kd"], np_kd(ZS, ZT, MASK, "forward_kl", 2.0), rtol=1e-5)
    np.testing.assert_allclose(loss, 0.25 * m["kd"] + 0.75 * 3.0, rtol=1e-6)
    assert set(m) == {"kd", "hard", "loss"}


def test_jsd_symmetric_and_bounded():
    a = L.kd_divergence(ZS, ZT, kind="jsd", temperature=1.0)
    b = L.kd_divergence(ZT, ZS, kind="jsd", temperature=1.0)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    # Disjoint one-hot distributions reach the bound; it is never exceeded.
    far = np.where(np.eye(7, dtype=bool), 1e4, -1e4).astype(np.float32)
    top = L.kd_divergence(far, np.roll(far, 1, axis=-1), kind="jsd", temperature=1.0)
    np.testing.assert_allclose(top, np.log(2), rtol=1e-5)
    for scale in (0.1, 10.0, 100.0):
        assert float(L.kd_divergence(ZS * scale, ZT * scale, kind="jsd", temperature=1.0)) <= np.log(2) + 1e-6


def test_topk_full_vocab_equals_forward_kl():
    v, i = L.topk_teacher(ZT, k=7)
    chex.assert_type(i, jnp.int32)
    full = L.kd_divergence(ZS, ZT, MASK, temperature=2.0)
    np.testing.assert_allclose(L.kd_divergence_topk(ZS, v, i, MASK, temperature=2.0), full, rtol=1e-5)


def test_topk_partial_matches_numpy():
    v, i = L.topk_teacher(ZT, k=3)
    got = L.kd_divergence_topk(ZS, v, i, MASK, temperature=2.0)
    logq = np_log_softmax(np.asarray(v) / 2.0)
    logp = np.take_along_axis(np_log_softmax(ZS / 2.0), np.asarray(i), -1)
    np.testing.assert_allclose(got, 4.0 * np_mean(np_kl(logq, logp), MASK), rtol=1e-5)


def test_neg_inf_logits_are_safe():
    # A padded vocabulary entry at -inf in both models: finite loss and gradients.
    zs, zt = ZS.copy(), ZT.copy()
    zs[..., -1] = zt[..., -1] = -np.inf
    for kind in ("forward_kl", "reverse_kl", "jsd"):
        loss, g = jax.value_and_grad(lambda s: L.kd_divergence(s, zt, MASK, kind=kind))(zs)
        np.testing.assert_allclose(loss, np_kd(ZS[..., :-1], ZT[..., :-1], MASK, kind, 2.0), rtol=1e-5)
        assert np.isfinite(np.asarray(g)).all(), kind
    v, i = L.topk_teacher(zt, k=7)
    assert np.isfinite(float(L.kd_divergence_topk(zs, v, i, MASK)))


def test_bf16_inputs():
    for kind in KINDS:
        got = L.kd_divergence(ZS.astype(jnp.bfloat16), jnp.asarray(ZT, jnp.bfloat16), MASK, kind=kind)
        chex.assert_type(got, jnp.float32)
        np.testing.assert_allclose(got, np_kd(ZS, ZT, MASK, kind, 2.0), rtol=5e-2, atol=1e-2)
    y = RNG.integers(0, 7, (2, 3))
    loss, _ = L.lm_cross_entropy(jnp.asarray(ZS, jnp.bfloat16), y, MASK)
    chex.assert_type(loss, jnp.float32)
    h = jnp.asarray(ZS, jnp.bfloat16)
    chex.assert_type(L.hidden_alignment(h, h, kind="mse"), jnp.float32)


# --------------------------------------------------------------------------- masking and gradients


@jax.jit
def all_losses(zs, zt, mask):
    """Every loss, as a dict, on [2, 3, 7] student/teacher tensors and a [2, 3] mask."""
    y = np.arange(6).reshape(2, 3)
    v, i = L.topk_teacher(zt, k=3)
    # Attention rows from finite logits (garbage probabilities: test_attention_transfer_garbage_rows).
    attn_s, attn_t = (jax.nn.softmax(jnp.nan_to_num(z[:, None, :, :3], posinf=0.0, neginf=0.0), -1) for z in (zs, zt))
    out = {kind: L.kd_divergence(zs, zt, mask, kind=kind) for kind in KINDS}
    out |= {
        "lm": L.lm_cross_entropy(zs, y, mask, z_loss=1e-3)[0],
        "cls": L.classification_cross_entropy(zs[:, 0], y[:, 0], mask[:, 2], label_smoothing=0.1)[0],
        "span": L.span_cross_entropy(zs[..., 0], zs[..., 1], y[:, 0] % 3, y[:, 1] % 3, mask[:, 2])[0],
        "topk": L.kd_divergence_topk(zs, v, i, mask),
        "cos": L.hidden_alignment(zs, zt, mask, kind="cosine"),
        "mse_h": L.hidden_alignment(zs, zt, mask, kind="mse"),
        "attn": L.attention_transfer(attn_s, attn_t, mask),
    }
    return out


total_grads = jax.jit(jax.grad(lambda zs, zt, mask: sum(all_losses(zs, zt, mask).values()), argnums=(0, 1)))


@pytest.mark.parametrize("value", [1e4, np.inf, np.nan])
def test_masked_positions_do_not_matter(value):
    ref = all_losses(ZS, ZT, MASK)
    got = all_losses(garble(ZS, MASK, value), garble(ZT, MASK, -value), MASK)
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-6, err_msg=name)
    grads, _ = total_grads(garble(ZS, MASK, value), garble(ZT, MASK, value), MASK)
    assert np.isfinite(np.asarray(grads)).all()
    assert np.all(np.asarray(grads)[~MASK] == 0)


def test_fully_masked_gives_zero():
    none = np.zeros_like(MASK)
    zs, zt = garble(ZS, none, np.nan), garble(ZT, none, np.nan)  # all garbage, all masked
    for name, v in all_losses(zs, zt, none).items():
        assert float(v) == 0.0, name
    grads, _ = total_grads(zs, zt, none)
    assert np.all(np.asarray(grads) == 0)
    assert float(L.lm_cross_entropy(ZS, np.zeros((2, 3), int), none)[1]["tokens"]) == 0


def test_no_gradient_reaches_teacher():
    _, g = total_grads(ZS, ZT, MASK)
    assert np.all(np.asarray(g) == 0)
    g_topk = jax.grad(lambda v: L.kd_divergence_topk(ZS, v, jnp.argsort(-ZT, -1)[..., :3]))(ZT[..., :3])
    assert np.all(np.asarray(g_topk) == 0)
    g_student = jax.grad(lambda s: L.kd_divergence(s, ZT))(ZS)
    assert np.abs(np.asarray(g_student)).sum() > 0


# --------------------------------------------------------------------------- feature distillation


def test_hidden_alignment_matches_numpy():
    hs, ht = ZS, ZT
    cos = (hs * ht).sum(-1) / np.linalg.norm(hs, axis=-1) / np.linalg.norm(ht, axis=-1)
    np.testing.assert_allclose(L.hidden_alignment(hs, ht, MASK), np_mean(1 - cos, MASK), rtol=1e-5)
    np.testing.assert_allclose(
        L.hidden_alignment(hs, ht, MASK, kind="mse"), np_mean(((hs - ht) ** 2).mean(-1), MASK), rtol=1e-5
    )
    assert abs(float(L.hidden_alignment(3.0 * ht, ht))) < 1e-6  # cosine ignores scale
    assert np.isfinite(float(L.hidden_alignment(np.zeros_like(hs), ht)))
    with pytest.raises(ValueError, match="HiddenProjection"):
        L.hidden_alignment(hs, ht[..., :4])


def test_hidden_projection_shapes_and_axes():
    proj = L.HiddenProjection(features=5)
    variables = proj.init(jax.random.key(0), ZS)
    chex.assert_shape(nn.meta.unbox(variables)["params"]["kernel"], (7, 5))
    spec = nn.get_partition_spec(variables)["params"]["kernel"]
    assert tuple(spec) == ("embed", "teacher_embed")
    out = proj.apply(variables, ZS)
    chex.assert_shape(out, (2, 3, 5))
    assert "bias" not in variables["params"]


def test_layer_map():
    assert L.layer_map(6, 12) == [(i, 2 * i) for i in range(7)]
    assert L.layer_map(3, 3) == [(0, 0), (1, 1), (2, 2), (3, 3)]
    pairs = L.layer_map(4, 6)
    assert pairs[0] == (0, 0) and pairs[-1] == (4, 6) and len(pairs) == 5
    assert all(a[1] < b[1] for a, b in zip(pairs, pairs[1:]))


def np_attn_kl(a_s, a_t, mask):
    log_t = np.log(np.where(a_t > 0, a_t, 1.0))
    kl = np.sum(np.where(a_t > 0, a_t * (log_t - np.log(np.maximum(a_s, 1e-10))), 0.0), -1)
    return np_mean(kl, mask[:, None, :])


def causal_probs(*shape):
    z = randn(*shape) + np.where(np.tril(np.ones(shape[-2:], bool)), 0, -np.inf)
    return np.exp(np_log_softmax(z))


def test_attention_transfer():
    a_s, a_t = causal_probs(2, 2, 3, 3), causal_probs(2, 4, 3, 3)  # zeros above the diagonal
    assert float(L.attention_transfer(a_t, a_t, MASK)) < 1e-6
    # 4 teacher heads -> 2 by averaging consecutive pairs.
    grouped = a_t.reshape(2, 2, 2, 3, 3).mean(2)
    np.testing.assert_allclose(L.attention_transfer(a_s, a_t, MASK), np_attn_kl(a_s, grouped, MASK), rtol=1e-5)
    # 3 vs 2 heads: both sides average all heads.
    a_s3 = causal_probs(2, 3, 3, 3)
    want = np_attn_kl(a_s3.mean(1, keepdims=True), a_t[:, :2].mean(1, keepdims=True), MASK)
    np.testing.assert_allclose(L.attention_transfer(a_s3, a_t[:, :2], MASK), want, rtol=1e-5)
    g = jax.grad(lambda s: L.attention_transfer(s, a_t, MASK))(a_s)
    assert np.isfinite(np.asarray(g)).all()


def test_attention_transfer_garbage_rows():
    a_s, a_t = causal_probs(2, 2, 3, 3), causal_probs(2, 2, 3, 3)
    ref = L.attention_transfer(a_s, a_t, MASK)
    for value in (np.nan, np.inf, -1.0):
        rows = MASK[:, None, :, None]  # padded query rows hold garbage in every head
        bad_s, bad_t = np.where(rows, a_s, value), np.where(rows, a_t, value)
        loss, g = jax.value_and_grad(L.attention_transfer)(bad_s, bad_t, MASK)
        np.testing.assert_allclose(loss, ref, rtol=1e-6)
        g = np.asarray(g)
        assert np.isfinite(g).all() and np.all(g[:, 0][~MASK] == 0) and np.all(g[:, 1][~MASK] == 0)


# --------------------------------------------------------------------------- the objective's named terms
# training/steps.make_loss_fn sums these; each is checked here against its parts.

from memgpt_jax import tasks  # noqa: E402
from memgpt_jax.model import ModelOutput  # noqa: E402
from memgpt_jax.run_config import DistillConfig  # noqa: E402
from memgpt_jax.training import steps as S  # noqa: E402
from memgpt_jax.training import topk_cache  # noqa: E402

DISTILL = DistillConfig(teacher="t", alpha=0.3, temperature=1.5, hidden_weight=0.5, attention_weight=0.25)


def test_hard_term_is_the_tasks_loss_over_valid_rows_and_tokens():
    y = RNG.integers(0, 7, (2, 3))
    batch = {"targets": y, "loss_mask": MASK, "example_valid": np.array([True, False])}
    loss, metrics, weight = S.task_loss("lm", ModelOutput(logits=ZS), batch)
    want = MASK & np.array([[True], [False]])
    np.testing.assert_allclose(loss, L.lm_cross_entropy(ZS, y, want)[0], rtol=1e-6)
    assert float(weight) == want.sum() and "tokens" not in metrics


def test_teacher_logits_transform_scales_and_shifts_each_example():
    z = randn(3, 4)
    assert S.teacher_logits(z, {}) is z  # no transform keys: the teacher as it is
    scale, offset = np.array([0.5, 1.0, 2.0], np.float32), randn(3, 4)
    got = S.teacher_logits(z, {"teacher_scale": scale, "teacher_offset": offset})
    np.testing.assert_allclose(got, z * scale[:, None] + offset, rtol=1e-6)
    z3 = randn(3, 2, 4)  # token-level logits broadcast the per-example scale over positions
    got3 = S.teacher_logits(z3, {"teacher_scale": scale, "teacher_offset": np.float32(1.0)})
    np.testing.assert_allclose(got3, z3 * scale[:, None, None] + 1.0, rtol=1e-6)


def test_logit_kd_term_averages_the_tasks_logits_after_the_transform():
    s, e, ts, te = randn(2, 5), randn(2, 5), randn(2, 5), randn(2, 5)
    batch = {"example_valid": np.array([True, True])}
    got = S.logit_kd_term(tasks.get("qa"), DISTILL, ModelOutput(start_logits=s, end_logits=e),
                          ModelOutput(start_logits=ts, end_logits=te), batch)
    want = (np_kd(s, ts, True, "forward_kl", 1.5) + np_kd(e, te, True, "forward_kl", 1.5)) / 2
    np.testing.assert_allclose(got, want, rtol=1e-5)
    offset = randn(2, 5)
    shifted = {**batch, "teacher_scale": np.ones(2, np.float32), "teacher_offset": offset}
    got = S.logit_kd_term(tasks.get("classification"), DISTILL, ModelOutput(logits=s), ModelOutput(logits=ts), shifted)
    np.testing.assert_allclose(got, np_kd(s, ts + offset, True, "forward_kl", 1.5), rtol=1e-5)


def test_topk_kd_term_is_the_full_kd_when_k_is_the_vocabulary():
    values, indices = L.topk_teacher(jnp.asarray(ZT), ZT.shape[-1])
    batch = {"loss_mask": MASK, topk_cache.VALUES: values, topk_cache.INDICES: indices}
    got = S.topk_kd_term(tasks.get("lm"), DISTILL, ModelOutput(logits=ZS), batch)
    np.testing.assert_allclose(got, np_kd(ZS, ZT, MASK, "forward_kl", 1.5), rtol=1e-5)


def test_hidden_term_pairs_layers_by_the_layer_map():
    student = tuple(randn(2, 3, 4) for _ in range(3))  # 2 layers: embeddings + 2 blocks
    teacher = tuple(randn(2, 3, 4) for _ in range(5))  # 4 layers
    got = S.hidden_term(DISTILL, ModelOutput(hidden_states=student), ModelOutput(hidden_states=teacher), MASK)
    want = np.mean([float(L.hidden_alignment(student[i], teacher[j], MASK)) for i, j in [(0, 0), (1, 2), (2, 4)]])
    np.testing.assert_allclose(got, want, rtol=1e-5)
    same = S.hidden_term(DISTILL, ModelOutput(hidden_states=teacher), ModelOutput(hidden_states=teacher), MASK)
    assert abs(float(same)) < 1e-6
    proj = L.HiddenProjection(4).init(jax.random.key(0), jnp.zeros((1, 1, 4)))["params"]  # a width map, when given
    mapped = S.hidden_term(DISTILL, ModelOutput(hidden_states=student), ModelOutput(hidden_states=teacher), MASK,
                           projection=proj)
    assert abs(float(mapped) - float(got)) > 1e-4


def test_attention_term_skips_the_embedding_pair():
    student = tuple(causal_probs(2, 2, 3, 3) for _ in range(2))
    teacher = tuple(causal_probs(2, 2, 3, 3) for _ in range(4))
    got = S.attention_term(ModelOutput(attentions=student), ModelOutput(attentions=teacher), MASK)
    want = np.mean([float(L.attention_transfer(student[0], teacher[1], MASK)),
                    float(L.attention_transfer(student[1], teacher[3], MASK))])
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_combine_weighs_the_terms_present():
    terms = {"hard": jnp.float32(2.0), "kd": jnp.float32(1.0)}
    assert float(S.combine(terms, DISTILL)) == pytest.approx(0.3 * 1.0 + 0.7 * 2.0)
    full = {**terms, "hidden": jnp.float32(4.0), "attention": jnp.float32(8.0)}
    assert float(S.combine(full, DISTILL)) == pytest.approx(0.3 + 1.4 + 0.5 * 4.0 + 0.25 * 8.0)
