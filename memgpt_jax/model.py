"""The memgpt-jax decoder-only Transformer, in functional Flax Linen.

Dense configurations are GPT-2 block for block: token + learned position
embeddings, pre-LayerNorm blocks (attention, then a GELU MLP), a final
LayerNorm, and an LM head tied to the token embedding. The parameter tree::

    transformer/wte/embedding            [vocab, embed]
    transformer/wpe/embedding            [max_len, embed]     (learned positions)
    transformer/h_{i}/ln_1/{scale,bias}
    transformer/h_{i}/attn/{query,key,value}/{kernel [embed, heads, head_dim], bias}
    transformer/h_{i}/attn/out/{kernel [heads, head_dim, embed], bias}
    transformer/h_{i}/ln_2/{scale,bias}
    transformer/h_{i}/mlp/{fc [embed, mlp], proj [mlp, embed]}/{kernel,bias}
    transformer/ln_f/{scale,bias}
    lm_head/kernel | score/{kernel,bias} | qa_outputs/{kernel,bias}   (per head)

Three heads share the ``transformer`` subtree, so a pretrained language model's
parameters drop straight into a classifier or a QA model:

- ``LMHeadModel``: next-token logits ``[B, T, vocab]``.
- ``SequenceClassifier``: ``[B, num_labels]``, pooling the last non-padding
  token or the mean over valid tokens (``config.pooling``).
- ``SpanQA``: start and end logits ``[B, T]`` for extractive QA.

Attention is pluggable through one argument, ``attention_fn`` (contract in
``memgpt_jax.attention``); by default it is built from ``config.attention``.

KV-cache decoding: call with ``decode=True`` and a ``cache`` collection made by
``init_cache``; each call appends its ``T`` tokens (a prompt, then one token at a
time) and attends to everything cached so far. Logits equal the full forward.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from memgpt_jax.attention import AttentionFn, make_attention_fn
from memgpt_jax.compress.quantize import QTensor, dequantize
from memgpt_jax.config import ModelConfig
from memgpt_jax.layers import Linear, Norm, activation, apply_rope, normal_init, tied_logits

Array = jax.Array


@flax.struct.dataclass
class ModelOutput:
    """What a forward pass returns.

    ``hidden_states`` (when asked) holds the embedding output and every block's
    output: ``n_layers + 1`` arrays ``[B, T, D]``. ``attentions`` (when asked)
    holds every layer's float32 weights ``[B, N, T, S]``.
    """

    logits: Any = None
    start_logits: Any = None
    end_logits: Any = None
    last_hidden_state: Any = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


class Attention(nn.Module):
    config: ModelConfig
    attention_fn: AttentionFn

    @nn.compact
    def __call__(
        self,
        x_BTD: Array,
        *,
        positions_BT: Array,
        q_offset: Array | int,
        kv_valid_BS: Array | None,
        segment_ids_BT: Array | None,
        decode: bool,
        return_weights: bool,
    ) -> tuple[Array, Array | None]:
        cfg = self.config
        N, K, H, D = cfg.n_heads, cfg.kv_heads, cfg.head_dim, cfg.d_model
        proj = dict(
            use_bias=cfg.use_bias, init_std=cfg.init_std, param_dtype=cfg.jnp_param_dtype,
            dtype=cfg.jnp_compute_dtype, int8_activations=cfg.int8_activations,
        )
        q_BTNH = Linear((N, H), ("embed", "heads", "head_dim"), name="query", **proj)(x_BTD)
        k_BTKH = Linear((K, H), ("embed", "kv_heads", "head_dim"), name="key", **proj)(x_BTD)
        v_BTKH = Linear((K, H), ("embed", "kv_heads", "head_dim"), name="value", **proj)(x_BTD)
        if cfg.position == "rope":
            q_BTNH = apply_rope(q_BTNH, positions_BT, cfg.rope_theta)
            k_BTKH = apply_rope(k_BTKH, positions_BT, cfg.rope_theta)

        segments = dict(q_segment_ids=segment_ids_BT, kv_segment_ids=segment_ids_BT)
        if decode:
            k_BTKH, v_BTKH = self._update_cache(k_BTKH, v_BTKH, q_offset)
            segments = dict(q_segment_ids=None, kv_segment_ids=None)
        out_BTNH, weights = self.attention_fn(
            q_BTNH, k_BTKH, v_BTKH, q_offset=q_offset, kv_valid=kv_valid_BS,
            return_weights=return_weights, **segments,
        )
        out_std = cfg.init_std / (2 * cfg.n_layers) ** 0.5  # GPT-2's scaled residual init
        y_BTD = Linear(
            (D,), ("heads", "head_dim", "embed"), n_in=2, name="out", **{**proj, "init_std": out_std}
        )(out_BTNH)
        return y_BTD, weights

    def _update_cache(self, k_BTKH: Array, v_BTKH: Array, index: Array | int) -> tuple[Array, Array]:
        """Writes this step's keys/values at ``index``; returns the whole cache."""
        return append_to_cache(self, "cached_key", k_BTKH, index), append_to_cache(self, "cached_value", v_BTKH, index)


def append_to_cache(module: nn.Module, name: str, x: Array, index: Array | int) -> Array:
    """Writes ``x [B, T, ...]`` at position ``index`` of ``module``'s cache variable ``name``
    and returns the whole cache (``model.init`` creates it as long as the init input)."""
    is_initialized = module.has_variable("cache", name)
    cached = module.variable("cache", name, jnp.zeros, x.shape, x.dtype)
    if not is_initialized:
        return x
    start = (0, index) + (0,) * (x.ndim - 2)
    cached.value = jax.lax.dynamic_update_slice(cached.value, x.astype(cached.value.dtype), start)
    return cached.value


class MLP(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, x_BTD: Array) -> Array:
        cfg = self.config
        kw = dict(use_bias=cfg.use_bias, param_dtype=cfg.jnp_param_dtype, dtype=cfg.jnp_compute_dtype,
                  int8_activations=cfg.int8_activations)
        h_BTF = Linear((cfg.mlp_dim,), ("embed", "mlp"), init_std=cfg.init_std, name="fc", **kw)(x_BTD)
        h_BTF = activation(cfg.activation, h_BTF)
        out_std = cfg.init_std / (2 * cfg.n_layers) ** 0.5
        return Linear((cfg.d_model,), ("mlp", "embed"), init_std=out_std, name="proj", **kw)(h_BTF)


class Block(nn.Module):
    config: ModelConfig
    attention_fn: AttentionFn

    @nn.compact
    def __call__(self, x_BTD: Array, *, deterministic: bool, **attn_kwargs: Any) -> tuple[Array, Array | None]:
        cfg = self.config
        norm = dict(kind=cfg.norm, eps=cfg.layer_norm_eps, param_dtype=cfg.jnp_param_dtype, dtype=cfg.jnp_compute_dtype)
        drop = nn.Dropout(cfg.dropout)
        h, weights = Attention(cfg, self.attention_fn, name="attn")(Norm(name="ln_1", **norm)(x_BTD), **attn_kwargs)
        x_BTD = x_BTD + drop(h, deterministic=deterministic)
        h = MLP(cfg, name="mlp")(Norm(name="ln_2", **norm)(x_BTD))
        x_BTD = x_BTD + drop(h, deterministic=deterministic)
        return x_BTD, weights


class Embed(nn.Module):
    num: int
    features: int
    axes: tuple[str, str]
    init_std: float = 0.02
    param_dtype: Any = jnp.float32
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(normal_init(self.init_std), self.axes),
            (self.num, self.features),
            self.param_dtype,
        )

    def __call__(self, ids: Array) -> Array:
        table = self.embedding
        if isinstance(table, QTensor):  # int8 rows: gather codes and row scales only
            codes = jnp.take(table.q, ids, axis=0).astype(jnp.float32)
            return (codes * jnp.take(table.scale, ids, axis=0)).astype(self.dtype)
        return jnp.take(table, ids, axis=0).astype(self.dtype)

    def attend(self, x_BTD: Array) -> Array:
        """Tied output projection: float32 logits ``x @ embedding.T``."""
        table = self.embedding
        if isinstance(table, QTensor):
            return jnp.einsum("btd,vd->btv", x_BTD, dequantize(table, self.dtype), preferred_element_type=jnp.float32)
        B, T, D = x_BTD.shape
        logits = tied_logits(x_BTD.reshape(B * T, D).astype(self.dtype), table.astype(self.dtype))
        return logits.reshape(B, T, -1)


class CacheState(nn.Module):
    """Decode bookkeeping shared by all layers: the write index and the validity
    of every cached key (so left-padded prompts stay masked for the whole decode)."""

    @nn.compact
    def __call__(self, B: int, T: int, kv_valid: Array | None) -> tuple[Array | int, Array | None]:
        is_initialized = self.has_variable("cache", "cache_index")
        index = self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
        valid = self.variable("cache", "kv_valid", jnp.zeros, (B, T), jnp.bool_)
        if not is_initialized:  # model.init: the cache is as long as the init input
            return 0, kv_valid
        start = index.value
        new_valid = jnp.ones((B, T), jnp.bool_) if kv_valid is None else kv_valid.astype(jnp.bool_)
        valid.value = jax.lax.dynamic_update_slice(valid.value, new_valid, (0, start))
        index.value = start + T
        return start, valid.value


class Transformer(nn.Module):
    """The shared backbone: embeddings, blocks, final norm. Returns a ``ModelOutput``."""

    config: ModelConfig
    attention_fn: AttentionFn | None = None

    def setup(self) -> None:
        cfg = self.config
        emb = dict(init_std=cfg.init_std, param_dtype=cfg.jnp_param_dtype, dtype=cfg.jnp_compute_dtype)
        self.wte = Embed(cfg.vocab_size, cfg.d_model, ("vocab", "embed"), **emb)
        if cfg.position == "learned":
            self.wpe = Embed(cfg.max_len, cfg.d_model, ("position", "embed"), **{**emb, "init_std": 0.01})
        self.h = [Block(cfg, self.attention_fn or make_attention_fn(cfg.attention, i), name=f"h_{i}")
                  for i in range(cfg.n_layers)]
        self.ln_f = Norm(cfg.norm, cfg.layer_norm_eps, cfg.jnp_param_dtype, cfg.jnp_compute_dtype)
        self.drop = nn.Dropout(cfg.dropout)
        self.cache_state = CacheState()

    def __call__(
        self,
        input_ids: Array,
        *,
        positions: Array | None = None,
        kv_valid: Array | None = None,
        segment_ids: Array | None = None,
        deterministic: bool = True,
        decode: bool = False,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        embed_delta: Array | None = None,
    ) -> ModelOutput:
        """``input_ids: [B, T]`` int. ``kv_valid: [B, T]`` bool marks real (non-padding)
        tokens. ``segment_ids: [B, T]`` keeps attention inside packed documents.
        ``positions: [B, T]`` default ``0..T-1`` (continuing from the cache when decoding).
        ``embed_delta: [B, T, D]`` is added to the input embeddings (for gradients with
        respect to them: saliency).
        """
        cfg = self.config
        B, T = input_ids.shape
        if T > cfg.max_len:
            raise ValueError(f"sequence length {T} exceeds max_len={cfg.max_len}")
        q_offset, kv_valid_BS = self.cache_state(B, T, kv_valid) if decode else (0, kv_valid)
        if decode and segment_ids is not None:
            raise ValueError("segment_ids are not supported with decode=True")
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32) + q_offset, (B, T))
        x_BTD = self.wte(input_ids)
        if cfg.position == "learned":
            x_BTD = x_BTD + self.wpe(positions)
        if embed_delta is not None:
            x_BTD = x_BTD + embed_delta.astype(x_BTD.dtype)
        x_BTD = self.drop(x_BTD, deterministic=deterministic)

        hidden, attentions = [x_BTD], []
        for block in self.h:
            x_BTD, weights = block(
                x_BTD, deterministic=deterministic, positions_BT=positions, q_offset=q_offset,
                kv_valid_BS=kv_valid_BS, segment_ids_BT=segment_ids, decode=decode,
                return_weights=output_attentions,
            )
            hidden.append(x_BTD)
            attentions.append(weights)
        x_BTD = self.ln_f(x_BTD)
        return ModelOutput(
            last_hidden_state=x_BTD,
            hidden_states=tuple(hidden) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )

    def attend(self, x_BTD: Array) -> Array:
        return self.wte.attend(x_BTD)


def _head_kwargs(cfg: ModelConfig) -> dict[str, Any]:
    return dict(param_dtype=cfg.jnp_param_dtype, dtype=cfg.jnp_compute_dtype, init_std=cfg.init_std)


class CopyHead(nn.Module):
    """A pointer-generator copy head (See et al., 2017) for a decoder-only model.

    From the final hidden states it forms one attention of width ``config.copy_dim`` over the
    tokens read so far (causal, inside the packed document, valid keys only) and a gate
    ``g = sigmoid(w . h + b)``; the next-token distribution is
    ``(1 - g) * softmax(logits) + g * copy``, ``copy[v]`` the attention mass on earlier tokens
    whose id is ``v``. A knowledge-grounded reply can then name a value by pointing at it in
    its prompt instead of generating it from the vocabulary. Returns the mixture's float32
    log-probabilities (``-inf`` where both parts are 0), which every consumer of ``logits``
    (losses, distillation, sampling, beam search) reads as logits: ``log_softmax`` leaves
    them unchanged.

    The copy attention is dense (every earlier token of the document), also under a
    block-sparse backbone: one narrow head, ``T x T x copy_dim`` multiply-adds, small beside
    the ``T x vocab`` logits it is mixed into. Decoding keeps its own cache (keys, token ids,
    and a ``CacheState`` for positions and validity), so a KV-cached decode equals the full
    forward.
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, h_BTD: Array, logits_BTV: Array, input_ids: Array, *, kv_valid: Array | None,
                 segment_ids: Array | None, decode: bool) -> Array:
        cfg = self.config
        B, T, _ = h_BTD.shape
        kw = dict(use_bias=cfg.use_bias, init_std=cfg.init_std, param_dtype=cfg.jnp_param_dtype,
                  dtype=cfg.jnp_compute_dtype, int8_activations=cfg.int8_activations)
        q_BTC = Linear((cfg.copy_dim,), ("embed", "head_dim"), name="query", **kw)(h_BTD).astype(jnp.float32)
        k_BTC = Linear((cfg.copy_dim,), ("embed", "head_dim"), name="key", **kw)(h_BTD).astype(jnp.float32)
        gate_BT = Linear((1,), ("embed", "labels"), name="gate", **kw)(h_BTD)[..., 0].astype(jnp.float32)
        ids_BS = input_ids
        if decode:
            q_offset, valid_BS = CacheState(name="cache_state")(B, T, kv_valid)
            k_BTC = append_to_cache(self, "cached_key", k_BTC, q_offset)
            ids_BS = append_to_cache(self, "cached_ids", input_ids.astype(jnp.int32), q_offset)
        else:
            q_offset, valid_BS = 0, kv_valid
        S = k_BTC.shape[1]
        keep_BTS = (jnp.arange(S)[None, :] <= jnp.arange(T)[:, None] + q_offset)[None]
        if valid_BS is not None:
            keep_BTS = keep_BTS & valid_BS.astype(bool)[:, None, :]
        if segment_ids is not None and not decode:
            keep_BTS = keep_BTS & (segment_ids[:, :, None] == segment_ids[:, None, :])
        scores_BTS = jnp.einsum("btc,bsc->bts", q_BTC, k_BTC) / cfg.copy_dim ** 0.5
        attn_BTS = jax.nn.softmax(jnp.where(keep_BTS, scores_BTS, -1e30), axis=-1)
        attn_BTS = jnp.where(keep_BTS, attn_BTS, 0.0)
        V = logits_BTV.shape[-1]
        copy_BTV = jax.vmap(lambda a_TS, ids_S: jnp.zeros((T, V), jnp.float32).at[:, ids_S].add(a_TS))(
            attn_BTS, ids_BS)
        has_BTV = copy_BTV > 0
        log_copy_BTV = jnp.where(has_BTV, jnp.log(jnp.where(has_BTV, copy_BTV, 1.0)), -jnp.inf)
        log_vocab_BTV = jax.nn.log_softmax(logits_BTV.astype(jnp.float32), axis=-1)
        any_key_BT = keep_BTS.any(axis=-1)  # no key to copy from (a padding query): the vocabulary alone
        log_keep_BT = jnp.where(any_key_BT, jax.nn.log_sigmoid(-gate_BT), 0.0)
        log_copy_gate_BT = jnp.where(any_key_BT, jax.nn.log_sigmoid(gate_BT), -jnp.inf)
        return jnp.logaddexp(log_keep_BT[..., None] + log_vocab_BTV, log_copy_gate_BT[..., None] + log_copy_BTV)


class LMHeadModel(nn.Module):
    """Language model: ``logits [B, T, vocab]`` (float32). With ``config.copy_dim > 0`` the
    logits are a ``CopyHead``'s log-probabilities."""

    config: ModelConfig
    attention_fn: AttentionFn | None = None

    @nn.compact
    def __call__(self, input_ids: Array, **kwargs: Any) -> ModelOutput:
        cfg = self.config
        transformer = Transformer(cfg, self.attention_fn, name="transformer")
        out = transformer(input_ids, **kwargs)
        h = out.last_hidden_state
        if cfg.tie_embeddings:
            logits = transformer.attend(h)  # the shared token embedding, transposed
        else:
            logits = Linear(
                (cfg.vocab_size,), ("embed", "vocab"), use_bias=False, name="lm_head", **_head_kwargs(cfg)
            )(h).astype(jnp.float32)
        if cfg.copy_dim:
            logits = CopyHead(cfg, name="copy")(
                h, logits, input_ids, kv_valid=kwargs.get("kv_valid"), segment_ids=kwargs.get("segment_ids"),
                decode=kwargs.get("decode", False))
        return out.replace(logits=logits)


def pool(h_BTD: Array, kv_valid: Array | None, how: str) -> Array:
    """Pools ``[B, T, D] -> [B, D]``: the last valid token, or the mean of valid tokens;
    ``meanmax``: ``[B, 2D]``, the mean and the element-wise max of valid tokens (0 for a row
    without one)."""
    B, T, _ = h_BTD.shape
    valid = jnp.ones((B, T), bool) if kv_valid is None else kv_valid.astype(bool)
    if how in ("mean", "meanmax"):
        w = valid.astype(jnp.float32)[..., None]
        mean = jnp.sum(h_BTD.astype(jnp.float32) * w, axis=1) / jnp.maximum(w.sum(axis=1), 1.0)
        if how == "mean":
            return mean.astype(h_BTD.dtype)
        top = jnp.max(jnp.where(valid[..., None], h_BTD.astype(jnp.float32), -jnp.inf), axis=1)
        top = jnp.where(valid.any(axis=1)[:, None], top, 0.0)
        return jnp.concatenate([mean, top], axis=-1).astype(h_BTD.dtype)
    last = T - 1 - jnp.argmax(valid[:, ::-1], axis=1)  # last True position (0 if none)
    return jnp.take_along_axis(h_BTD, last[:, None, None], axis=1)[:, 0]


class SequenceClassifier(nn.Module):
    """Sequence classification: ``logits [B, num_labels]`` (float32)."""

    config: ModelConfig
    attention_fn: AttentionFn | None = None

    @nn.compact
    def __call__(self, input_ids: Array, *, kv_valid: Array | None = None, **kwargs: Any) -> ModelOutput:
        cfg = self.config
        out = Transformer(cfg, self.attention_fn, name="transformer")(input_ids, kv_valid=kv_valid, **kwargs)
        pooled_BD = pool(out.last_hidden_state, kv_valid, cfg.pooling)
        logits = Linear((cfg.num_labels,), ("embed", "labels"), name="score", **_head_kwargs(cfg))(pooled_BD)
        return out.replace(logits=logits.astype(jnp.float32))


class SpanQA(nn.Module):
    """Extractive QA: ``start_logits, end_logits [B, T]``; padding positions get -1e9."""

    config: ModelConfig
    attention_fn: AttentionFn | None = None

    @nn.compact
    def __call__(self, input_ids: Array, *, kv_valid: Array | None = None, **kwargs: Any) -> ModelOutput:
        cfg = self.config
        out = Transformer(cfg, self.attention_fn, name="transformer")(input_ids, kv_valid=kv_valid, **kwargs)
        logits_BT2 = Linear((2,), ("embed", "labels"), name="qa_outputs", **_head_kwargs(cfg))(out.last_hidden_state)
        logits_BT2 = logits_BT2.astype(jnp.float32)
        if kv_valid is not None:
            logits_BT2 = jnp.where(kv_valid[..., None], logits_BT2, -1e9)
        return out.replace(start_logits=logits_BT2[..., 0], end_logits=logits_BT2[..., 1])


# The heads by name, for code that builds a model without the task registry (tests, notebooks);
# a task (memgpt_jax.tasks) declares its head class, which build() also takes.
HEADS: dict[str, type[nn.Module]] = {"lm": LMHeadModel, "classification": SequenceClassifier, "qa": SpanQA}


def build(config: ModelConfig, head: str | type[nn.Module] = LMHeadModel,
          attention_fn: AttentionFn | None = None) -> nn.Module:
    """The model with ``head``: a head class (a task's ``head``) or a name in ``HEADS``."""
    if isinstance(head, str):
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; choose one of {sorted(HEADS)}")
        head = HEADS[head]
    return head(config, attention_fn)


def init(model: nn.Module, rng: Array, seq_len: int | None = None, batch: int = 1) -> tuple[Any, Any]:
    """Initialises ``model``; returns ``(params, logical_axes)``.

    ``params`` are plain arrays; ``logical_axes`` is the matching tree of
    ``PartitionSpec``s of logical axis names (for the sharding rules).
    """
    seq_len = seq_len or min(model.config.max_len, 8)
    ids = jnp.zeros((batch, seq_len), jnp.int32)
    variables = jax.jit(model.init)(rng, ids)
    boxed = variables["params"]
    return nn.meta.unbox(boxed), nn.get_partition_spec(boxed)


def logical_axes(model: nn.Module, seq_len: int | None = None) -> Any:
    """The logical-axis ``PartitionSpec`` tree of ``model``'s parameters, from shapes
    alone (``jax.eval_shape``: nothing is computed or compiled)."""
    ids = jnp.zeros((1, seq_len or min(model.config.max_len, 8)), jnp.int32)
    boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), ids))["params"]
    return nn.get_partition_spec(boxed)


def init_cache(model: nn.Module, batch: int, length: int | None = None) -> Any:
    """An empty KV cache for ``batch`` sequences of up to ``length`` tokens."""
    length = length or model.config.max_len
    ids = jnp.zeros((batch, length), jnp.int32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), ids, decode=True))
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["cache"])


def forward_fn(model: nn.Module) -> Callable[..., ModelOutput]:
    """``f(params, input_ids, **kwargs) -> ModelOutput`` for the full sequence."""

    def f(params: Any, input_ids: Array, **kwargs: Any) -> ModelOutput:
        return model.apply({"params": params}, input_ids, **kwargs)

    return f


def decode_step(model: nn.Module, params: Any, cache: Any, input_ids: Array, **kwargs: Any) -> tuple[ModelOutput, Any]:
    """Appends ``input_ids [B, T]`` to ``cache``; returns ``(output, new_cache)``."""
    out, mutated = model.apply(
        {"params": params, "cache": cache}, input_ids, decode=True, mutable=["cache"], **kwargs
    )
    return out, mutated["cache"]
