"""A pure-PyTorch twin of the memgpt-jax model, loaded from an exported directory.

This module imports only PyTorch, NumPy and safetensors (never JAX), so a
directory written by ``memgpt-jax export --format torch`` runs wherever
PyTorch does::

    from memgpt_jax.export.torch_model import TorchGPT
    model = TorchGPT.from_pretrained("exported/")          # config.json + model.safetensors
    out = model(input_ids, attention_mask=mask)             # out.logits [B, T, vocab]
    new_tokens = model.generate(prompt_ids, max_new_tokens=32)   # greedy, KV cache
    tok = Tokenizer.from_pretrained("exported/")             # text <-> ids, as the run's tokenizer

Every switch of ``ModelConfig`` is honoured: learned or rotary positions,
LayerNorm or RMSNorm (computed in float32, as in JAX), the four activations,
grouped-query attention, biases on or off, tied or untied LM head, and the
three heads (``lm``, ``classification`` with last/mean/meanmax pooling, ``qa``).
Block-sparse layouts arrive as their block table (``attention_layout.safetensors``)
and become one exact boolean token mask ``[heads, max_len, max_len]``; the
causal layouts are row-stable, so its top-left corner is the layout of any
shorter sequence. Attention is computed densely under that mask (scores and
softmax in float32, fully masked rows give zeros), mirroring
``memgpt_jax.attention.reference``. The module computes in its weights' dtype
(float32 as exported from float32 parameters; ``from_pretrained(dir, dtype=torch.bfloat16)``
for bfloat16), not the JAX ``compute_dtype``; parity is stated for float32.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

try:  # FlexAttention (torch >= 2.5): block-sparse attention that skips the masked blocks
    from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
except ImportError:  # older torch: the token-mask path serves every layout
    BlockMask = create_block_mask = flex_attention = None

_COMPILED_FLEX: list = []  # torch.compile(flex_attention), made on first use


def flex_kernel(compiled: bool = True):
    """``flex_attention``, compiled (its fused kernel: the masked blocks skipped) or eager
    (torch's reference implementation, which computes every score: for tests only)."""
    if not compiled:
        return flex_attention
    if not _COMPILED_FLEX:
        _COMPILED_FLEX.append(torch.compile(flex_attention, dynamic=False))
    return _COMPILED_FLEX[0]


FORMAT = "memgpt-jax/torch"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "memgpt_tokenizer.json"
LAYOUT_FILE = "attention_layout.safetensors"
_NEG_INF = -1e30


@dataclasses.dataclass(frozen=True)
class TorchConfig:
    """The architecture fields of ``memgpt_jax.config.ModelConfig`` the forward pass needs."""

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int | None = None
    d_ff: int | None = None
    max_len: int = 1024
    layer_norm_eps: float = 1e-5
    activation: str = "gelu_tanh"
    norm: str = "layernorm"
    position: str = "learned"
    rope_theta: float = 10000.0
    use_bias: bool = True
    tie_embeddings: bool = True
    num_labels: int = 2
    pooling: str = "last"
    pad_id: int = 0
    copy_dim: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TorchConfig":
        """From ``ModelConfig.to_dict()``; training-only fields (dropout, dtypes, ...) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def mlp_dim(self) -> int:
        return 4 * self.d_model if self.d_ff is None else self.d_ff


@dataclasses.dataclass
class TorchOutput:
    logits: torch.Tensor | None = None
    start_logits: torch.Tensor | None = None
    end_logits: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    cache: "KVCache | None" = None


@dataclasses.dataclass
class KVCache:
    """Keys/values of every layer so far, and which cached keys are real (not padding)."""

    layers: list[tuple[torch.Tensor, torch.Tensor]]
    valid: torch.Tensor  # [B, S] bool
    copy: tuple[torch.Tensor, torch.Tensor] | None = None  # the copy head's keys [B, S, C] and ids [B, S]

    @property
    def length(self) -> int:
        return self.valid.shape[1]


class Norm(nn.Module):
    """LayerNorm or RMSNorm in float32 (parameters ``weight`` [and ``bias``])."""

    def __init__(self, d: int, kind: str, eps: float) -> None:
        super().__init__()
        self.kind, self.eps = kind, eps
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d)) if kind == "layernorm" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        if self.kind == "layernorm":
            mean = x32.mean(-1, keepdim=True)
            var = (x32 - mean).square().mean(-1, keepdim=True)
            y = (x32 - mean) * torch.rsqrt(var + self.eps) * self.weight.float() + self.bias.float()
        else:
            y = x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + self.eps) * self.weight.float()
        return y.to(x.dtype)


def activation(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    if name == "gelu":
        return F.gelu(x)
    if name == "relu":
        return F.relu(x)
    if name == "silu":
        return F.silu(x)
    raise ValueError(f"unknown activation {name!r}")


def apply_rope(x_BTNH: torch.Tensor, positions_BT: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary embedding, rotate-half convention, in float32 (as ``memgpt_jax.layers.apply_rope``)."""
    H = x_BTNH.shape[-1]
    freqs = theta ** (-torch.arange(0, H, 2, dtype=torch.float32) / H)
    angles = positions_BT[..., None].float() * freqs  # [B, T, H/2]
    sin, cos = torch.sin(angles)[:, :, None, :], torch.cos(angles)[:, :, None, :]
    x = x_BTNH.float()
    x1, x2 = x[..., : H // 2], x[..., H // 2 :]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x_BTNH.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: TorchConfig, impl: str = "einsum", flex_compiled: bool = True) -> None:
        super().__init__()
        self.cfg, self.impl, self.flex_compiled = cfg, impl, flex_compiled
        N, K, H, D = cfg.n_heads, cfg.kv_heads, cfg.head_dim, cfg.d_model
        self.query = nn.Linear(D, N * H, bias=cfg.use_bias)
        self.key = nn.Linear(D, K * H, bias=cfg.use_bias)
        self.value = nn.Linear(D, K * H, bias=cfg.use_bias)
        self.out = nn.Linear(N * H, D, bias=cfg.use_bias)

    def forward(self, x_BTD, positions_BT, keep_BNTS, past=None):
        cfg = self.cfg
        B, T, _ = x_BTD.shape
        N, K, H = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        q_BTNH = self.query(x_BTD).view(B, T, N, H)
        k_BTKH = self.key(x_BTD).view(B, T, K, H)
        v_BTKH = self.value(x_BTD).view(B, T, K, H)
        if cfg.position == "rope":
            q_BTNH = apply_rope(q_BTNH, positions_BT, cfg.rope_theta)
            k_BTKH = apply_rope(k_BTKH, positions_BT, cfg.rope_theta)
        if past is not None:
            k_BTKH = torch.cat([past[0], k_BTKH], dim=1)
            v_BTKH = torch.cat([past[1], v_BTKH], dim=1)
        S, G = k_BTKH.shape[1], N // K
        if BlockMask is not None and isinstance(keep_BNTS, BlockMask):  # impl "flex", a full forward
            flex = flex_kernel(self.flex_compiled)
            o_BNTH = flex(q_BTNH.transpose(1, 2), k_BTKH.transpose(1, 2), v_BTKH.transpose(1, 2),
                          block_mask=keep_BNTS, scale=H**-0.5, enable_gqa=G > 1)
            return self.out(o_BNTH.transpose(1, 2).reshape(B, T, N * H)), (k_BTKH, v_BTKH)
        if self.impl == "sdpa":  # fused kernel; keep None means plain causal attention
            k_BNSH = k_BTKH.transpose(1, 2).repeat_interleave(G, dim=1)
            v_BNSH = v_BTKH.transpose(1, 2).repeat_interleave(G, dim=1)
            o_BNTH = F.scaled_dot_product_attention(q_BTNH.transpose(1, 2), k_BNSH, v_BNSH, attn_mask=keep_BNTS,
                                                    is_causal=keep_BNTS is None)
            return self.out(o_BNTH.transpose(1, 2).reshape(B, T, N * H)), (k_BTKH, v_BTKH)
        q_BTKGH = q_BTNH.reshape(B, T, K, G, H)
        scores = torch.einsum("btkgh,bskh->bkgts", q_BTKGH.float(), k_BTKH.float()) * H**-0.5
        scores_BNTS = scores.reshape(B, N, T, S).masked_fill(~keep_BNTS, _NEG_INF)
        weights = torch.softmax(scores_BNTS, dim=-1).masked_fill(~keep_BNTS, 0.0)  # empty rows -> 0
        probs = weights.reshape(B, K, G, T, S).to(v_BTKH.dtype)
        o_BTNH = torch.einsum("bkgts,bskh->btkgh", probs, v_BTKH).reshape(B, T, N * H).to(x_BTD.dtype)
        return self.out(o_BTNH), (k_BTKH, v_BTKH)


class MLP(nn.Module):
    def __init__(self, cfg: TorchConfig) -> None:
        super().__init__()
        self.act = cfg.activation
        self.fc = nn.Linear(cfg.d_model, cfg.mlp_dim, bias=cfg.use_bias)
        self.proj = nn.Linear(cfg.mlp_dim, cfg.d_model, bias=cfg.use_bias)

    def forward(self, x):
        return self.proj(activation(self.act, self.fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: TorchConfig, attention_impl: str = "einsum", flex_compiled: bool = True) -> None:
        super().__init__()
        self.ln_1 = Norm(cfg.d_model, cfg.norm, cfg.layer_norm_eps)
        self.attn = Attention(cfg, attention_impl, flex_compiled)
        self.ln_2 = Norm(cfg.d_model, cfg.norm, cfg.layer_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, positions, keep, past=None):
        h, kv = self.attn(self.ln_1(x), positions, keep, past)
        x = x + h
        return x + self.mlp(self.ln_2(x)), kv


class CopyHead(nn.Module):
    """``memgpt_jax.model.CopyHead``: the pointer-generator mixture of the vocabulary
    distribution and a copy attention over the tokens read so far, as log-probabilities."""

    def __init__(self, cfg: TorchConfig) -> None:
        super().__init__()
        self.query = nn.Linear(cfg.d_model, cfg.copy_dim, bias=cfg.use_bias)
        self.key = nn.Linear(cfg.d_model, cfg.copy_dim, bias=cfg.use_bias)
        self.gate = nn.Linear(cfg.d_model, 1, bias=cfg.use_bias)

    def forward(self, h_BTD, logits_BTV, ids_BT, keep_BTS, past=None):
        q_BTC, k_BTC = self.query(h_BTD).float(), self.key(h_BTD).float()
        gate_BT = self.gate(h_BTD).float()[..., 0]
        if past is not None:
            k_BTC, ids_BT = torch.cat([past[0], k_BTC], dim=1), torch.cat([past[1], ids_BT], dim=1)
        B, T, S, V = q_BTC.shape[0], q_BTC.shape[1], k_BTC.shape[1], logits_BTV.shape[-1]
        scores = torch.einsum("btc,bsc->bts", q_BTC, k_BTC) * q_BTC.shape[-1] ** -0.5
        attn = torch.softmax(scores.masked_fill(~keep_BTS, _NEG_INF), dim=-1).masked_fill(~keep_BTS, 0.0)
        copy = torch.zeros(B, T, V, dtype=torch.float32).scatter_add_(2, ids_BT[:, None, :].expand(B, T, S), attn)
        log_copy = torch.where(copy > 0, torch.log(torch.where(copy > 0, copy, 1.0)), -torch.inf)
        any_key = keep_BTS.any(-1)  # no key to copy from (a padding query): the vocabulary alone
        log_keep = torch.where(any_key, F.logsigmoid(-gate_BT), 0.0)
        log_copy_gate = torch.where(any_key, F.logsigmoid(gate_BT), -torch.inf)
        mixed = torch.logaddexp(log_keep[..., None] + torch.log_softmax(logits_BTV.float(), -1),
                                log_copy_gate[..., None] + log_copy)
        return mixed, (k_BTC, ids_BT)


class Transformer(nn.Module):
    """Embeddings, blocks, final norm (state-dict names as in ``mapping.ROWS``)."""

    def __init__(self, cfg: TorchConfig, attention_impl: str = "einsum", flex_compiled: bool = True) -> None:
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.max_len, cfg.d_model) if cfg.position == "learned" else None
        self.h = nn.ModuleList(Block(cfg, attention_impl, flex_compiled) for _ in range(cfg.n_layers))
        self.ln_f = Norm(cfg.d_model, cfg.norm, cfg.layer_norm_eps)


class TorchGPT(nn.Module):
    """The memgpt-jax model in PyTorch, for ``head`` in ``{"lm", "classification", "qa"}``.

    ``layout_mask``: optional ``bool [heads or 1, max_len, max_len]`` token mask of a
    block-sparse layout, or ``[n_layers, heads or 1, max_len, max_len]`` when the layers'
    layouts differ (a derived layout); causality is always applied on top.
    ``attention_impl``: ``"einsum"`` (default: float32 scores, the parity reference),
    ``"sdpa"`` (``F.scaled_dot_product_attention``: the fused kernel, for training speed;
    plain causal attention runs with ``is_causal=True``, anything else under the mask) or
    ``"flex"`` (FlexAttention with a ``BlockMask`` built from the layout, causality, padding
    and segments: the masked blocks are skipped, not computed). KV-cache decoding steps,
    and forwards that record gradients on a CPU (FlexAttention has no CPU backward), use
    the token mask.
    ``layout_block``: the layout's block size (the ``BlockMask`` tiles; 128 when unknown).
    ``flex_compiled``: run FlexAttention through ``torch.compile(flex_attention)`` (its
    fused kernel; compiled once per shape) rather than its eager reference, which computes
    every score. Call the model eagerly: the ``BlockMask`` of an unpadded length is built
    once and cached, which a whole-model ``torch.compile`` cannot trace.
    """

    def __init__(self, config: TorchConfig | Mapping[str, Any], head: str = "lm",
                 layout_mask: torch.Tensor | None = None, attention_impl: str = "einsum",
                 layout_block: int = 128, flex_compiled: bool = True) -> None:
        super().__init__()
        cfg = config if isinstance(config, TorchConfig) else TorchConfig.from_dict(config)
        if head not in ("lm", "classification", "qa"):
            raise ValueError(f"unknown head {head!r}; choose lm, classification or qa")
        if attention_impl not in ("einsum", "sdpa", "flex"):
            raise ValueError(f"attention_impl must be 'einsum', 'sdpa' or 'flex', got {attention_impl!r}")
        if attention_impl == "flex" and flex_attention is None:
            raise ValueError(f"attention_impl='flex' needs torch >= 2.5 (FlexAttention); this is {torch.__version__}")
        self.layout_block = int(layout_block)
        self.config, self.head, self.attention_impl = cfg, head, attention_impl
        self.transformer = Transformer(cfg, attention_impl, flex_compiled)
        self._block_masks: dict[tuple[int, int], Any] = {}  # (layer, T) -> BlockMask of an unpadded forward
        if head == "lm" and not cfg.tie_embeddings:
            self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if head == "lm" and cfg.copy_dim:
            self.copy = CopyHead(cfg)
        elif head == "classification":
            self.score = nn.Linear(cfg.d_model * (2 if cfg.pooling == "meanmax" else 1), cfg.num_labels)
        elif head == "qa":
            self.qa_outputs = nn.Linear(cfg.d_model, 2)
        if layout_mask is not None:
            layout_mask = torch.as_tensor(layout_mask, dtype=torch.bool)
            if layout_mask.ndim == 2:
                layout_mask = layout_mask[None]
            per_layer = layout_mask.ndim == 4  # [n_layers, heads or 1, L, L]: the layers' layouts differ
            if layout_mask.ndim not in (3, 4) or layout_mask.shape[-2:] != (cfg.max_len, cfg.max_len) \
                    or layout_mask.shape[-3] not in (1, cfg.n_heads) or (per_layer and len(layout_mask) != cfg.n_layers):
                raise ValueError(f"layout_mask must be [1 or {cfg.n_heads}, {cfg.max_len}, {cfg.max_len}] or "
                                 f"[{cfg.n_layers}, 1 or {cfg.n_heads}, {cfg.max_len}, {cfg.max_len}], "
                                 f"got {tuple(layout_mask.shape)}")
        self.register_buffer("layout_mask", layout_mask, persistent=False)

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, directory: str, dtype: torch.dtype | None = None,
                        attention_impl: str = "auto", flex_compiled: bool = True) -> "TorchGPT":
        """Loads ``config.json``, ``model.safetensors`` and, for sparse layouts,
        ``attention_layout.safetensors`` from an exported directory. ``"auto"``: a
        block-sparse layout runs through FlexAttention where torch has it (its masked
        blocks skipped), the token mask otherwise; dense models use ``"einsum"``."""
        from safetensors.torch import load_file  # lazy: only from_pretrained reads files

        path = os.path.join(directory, CONFIG_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"missing file {path} (write one with `memgpt-jax export --format torch`)")
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: format is {meta.get('format')!r}, expected {FORMAT!r}")
        weights = os.path.join(directory, WEIGHTS_FILE)
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"missing file {weights}")
        layout_path = os.path.join(directory, LAYOUT_FILE)
        cfg = TorchConfig.from_dict(meta["model"])
        layout = None
        if meta["model"].get("attention", {}).get("pattern", "dense") != "dense":
            if not os.path.isfile(layout_path):
                raise FileNotFoundError(f"missing file {layout_path} (the config's attention is block-sparse)")
            table = load_file(layout_path)
            layout, block = layout_mask_from_table(table, cfg.max_len), int(table["mask_table"].shape[-1])
        if attention_impl == "auto":
            attention_impl = "flex" if layout is not None and flex_attention is not None else "einsum"
        model = cls(cfg, meta["head"], layout_mask=layout, attention_impl=attention_impl,
                    layout_block=block if layout is not None else 128, flex_compiled=flex_compiled)
        state = load_file(weights)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{weights}: missing tensors {missing}, unexpected tensors {unexpected}")
        return model.to(dtype) if dtype is not None else model

    # -- forward -----------------------------------------------------------------------------
    def _layer_layout(self, layer: int) -> torch.Tensor | None:
        """``[heads or 1, max_len, max_len]``: the layout mask of ``layer`` (None: dense)."""
        lm = self.layout_mask
        return lm[layer] if lm is not None and lm.ndim == 4 else lm

    def _keep(self, B, T, S, offset, kv_valid, q_seg, kv_seg, layer=0):
        q_pos = torch.arange(T)[:, None] + offset
        keep = (torch.arange(S)[None, :] <= q_pos)[None, None]  # [1, 1, T, S]
        if self.layout_mask is not None:
            if offset + T > self.config.max_len:
                raise ValueError(f"positions up to {offset + T} exceed max_len={self.config.max_len}")
            keep = keep & self._layer_layout(layer)[None, :, offset:offset + T, :S]
        if kv_valid is not None:
            keep = keep & kv_valid[:, None, None, :]
        if q_seg is not None:
            keep = keep & (q_seg[:, :, None] == kv_seg[:, None, :])[:, None]
        return keep

    def block_mask(self, T: int, kv_valid: torch.Tensor | None = None,
                   segment_ids: torch.Tensor | None = None, layer: int = 0) -> "BlockMask":
        """The FlexAttention ``BlockMask`` of a ``T``-token forward of ``layer``: causal, the
        layout, padding (``kv_valid [B, T]``) and segments; blocks with nothing kept are skipped."""
        layout = self._layer_layout(layer)
        per_head = layout is not None and layout.shape[0] > 1

        def mask_mod(b, h, q, kv):
            keep = kv <= q
            if layout is not None:
                keep = keep & (layout[h, q, kv] if per_head else layout[0, q, kv])
            if kv_valid is not None:
                keep = keep & kv_valid[b, kv]
            if segment_ids is not None:
                keep = keep & (segment_ids[b, q] == segment_ids[b, kv])
            return keep

        batched = kv_valid is not None or segment_ids is not None
        key = (layer if self.layout_mask is not None and self.layout_mask.ndim == 4 else 0, T)
        if not batched and key in self._block_masks:
            return self._block_masks[key]
        B = (kv_valid if kv_valid is not None else segment_ids).shape[0] if batched else None
        mask = create_block_mask(mask_mod, B, layout.shape[0] if per_head else None, T, T, device="cpu",
                                 BLOCK_SIZE=self.layout_block)
        if not batched:
            self._block_masks[key] = mask
        return mask

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        use_cache: bool = False,
    ) -> TorchOutput:
        """``input_ids [B, T]``; ``attention_mask [B, T]`` (1/True for real tokens,
        our ``kv_valid``); ``segment_ids [B, T]`` for packed rows (not with a cache).
        With ``cache`` (or ``use_cache``), the tokens are appended to it (KV-cache decoding)."""
        cfg = self.config
        B, T = input_ids.shape
        offset = cache.length if cache is not None else 0
        if offset + T > cfg.max_len:
            raise ValueError(f"sequence length {offset + T} exceeds max_len={cfg.max_len}")
        valid = None if attention_mask is None else attention_mask.bool()
        if cache is not None or use_cache:
            if segment_ids is not None:
                raise ValueError("segment_ids are not supported with a KV cache")
            new = torch.ones(B, T, dtype=torch.bool) if valid is None else valid
            kv_valid = new if cache is None else torch.cat([cache.valid, new], dim=1)
        else:
            kv_valid = valid
        if position_ids is None:
            position_ids = (torch.arange(T) + offset).expand(B, T)
        plain_causal = self.layout_mask is None and kv_valid is None and segment_ids is None and offset == 0
        # FlexAttention has no CPU backward (torch 2.13): with gradients on a CPU, the token mask
        flex_ok = input_ids.device.type != "cpu" or not torch.is_grad_enabled()
        per_layer = self.layout_mask is not None and self.layout_mask.ndim == 4
        keeps = []  # one mask per layer when the layers' layouts differ, else one for all
        for layer in range(cfg.n_layers if per_layer else 1):
            if self.attention_impl == "flex" and cache is None and not use_cache and flex_ok:
                keeps.append(self.block_mask(T, kv_valid, segment_ids, layer))
            else:
                keeps.append(None if self.attention_impl == "sdpa" and plain_causal else
                             self._keep(B, T, offset + T, offset, kv_valid, segment_ids, segment_ids, layer))

        tr = self.transformer
        x = tr.wte(input_ids)
        if tr.wpe is not None:
            x = x + tr.wpe(position_ids)
        layers = []
        for i, block in enumerate(tr.h):
            x, kv = block(x, position_ids, keeps[i if per_layer else 0], None if cache is None else cache.layers[i])
            layers.append(kv)
        h = tr.ln_f(x)
        out = TorchOutput(last_hidden_state=h)
        copy_kv = None
        if self.head == "lm":
            if cfg.tie_embeddings:
                out.logits = torch.einsum("btd,vd->btv", h.float(), tr.wte.weight.float())
            else:
                out.logits = self.lm_head(h).float()
            if cfg.copy_dim:  # dense causal over the tokens so far, inside the document, valid keys
                S = offset + T
                keep = (torch.arange(S)[None, :] <= torch.arange(T)[:, None] + offset)[None]
                if kv_valid is not None:
                    keep = keep & kv_valid[:, None, :]
                if segment_ids is not None:
                    keep = keep & (segment_ids[:, :, None] == segment_ids[:, None, :])
                out.logits, copy_kv = self.copy(h, out.logits, input_ids, keep.expand(B, T, S),
                                                None if cache is None else cache.copy)
        elif self.head == "classification":
            out.logits = self.score(pool(h, valid, cfg.pooling)).float()
        else:
            logits = self.qa_outputs(h).float()
            if valid is not None:
                logits = logits.masked_fill(~valid[..., None], -1e9)
            out.start_logits, out.end_logits = logits[..., 0], logits[..., 1]
        if cache is not None or use_cache:
            out.cache = KVCache(layers, kv_valid, copy_kv)
        return out

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int,
                 attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Greedy decoding with the KV cache; returns the new tokens ``[B, max_new_tokens]``."""
        if self.head != "lm":
            raise ValueError(f"generate needs the lm head, this model has {self.head!r}")
        out = self(input_ids, attention_mask=attention_mask, use_cache=True)
        tokens = [out.logits[:, -1].argmax(-1)]
        for _ in range(max_new_tokens - 1):
            out = self(tokens[-1][:, None], cache=out.cache)
            tokens.append(out.logits[:, -1].argmax(-1))
        return torch.stack(tokens, dim=1)


def pool(h_BTD: torch.Tensor, valid_BT: torch.Tensor | None, how: str) -> torch.Tensor:
    """``[B, T, D] -> [B, D]``: the last valid token, or the mean over valid tokens;
    ``meanmax``: ``[B, 2D]``, the mean and the element-wise max over valid tokens."""
    B, T, _ = h_BTD.shape
    valid = torch.ones(B, T, dtype=torch.bool) if valid_BT is None else valid_BT.bool()
    if how in ("mean", "meanmax"):
        w = valid.float()[..., None]
        mean = (h_BTD.float() * w).sum(1) / w.sum(1).clamp_min(1.0)
        if how == "mean":
            return mean.to(h_BTD.dtype)
        top = h_BTD.float().masked_fill(~valid[..., None], float("-inf")).amax(1)
        top = torch.where(valid.any(1)[:, None], top, torch.zeros_like(top))
        return torch.cat([mean, top], dim=-1).to(h_BTD.dtype)
    last = T - 1 - valid.flip(1).int().argmax(1)  # last True position (0 if none)
    return h_BTD[torch.arange(B), last]


def layout_mask_from_table(table: Mapping[str, torch.Tensor], max_len: int) -> torch.Tensor:
    """The token mask ``bool [heads, L, L]`` of an exported block table:
    ``tile_mask_ids [heads, nq, nk]`` indexing ``mask_table [P, block, block]``; with one
    table per layer (``tile_mask_ids [layers, heads, nq, nk]``), ``[layers, heads, L, L]``."""
    for name in ("mask_table", "tile_mask_ids"):
        if name not in table:
            raise ValueError(f"attention layout file lacks tensor {name!r}")
    tiles = table["mask_table"].bool()[table["tile_mask_ids"].long()]  # [(layers,) h, nq, nk, b, b]
    *lead, nq, nk, b, _ = tiles.shape
    if (nq * b, nk * b) != (max_len, max_len):
        raise ValueError(f"attention layout covers {nq * b}x{nk * b} tokens, the config's max_len is {max_len}")
    return tiles.transpose(-3, -2).reshape(*lead, nq * b, nk * b)



class Tokenizer:
    """The exported run's tokenizer, without memgpt-jax (a sentencepiece model needs the
    ``sentencepiece`` package; the byte and ListOps vocabularies need nothing)::

        tok = Tokenizer.from_pretrained("exported/")
        ids = [tok.bos_id] + tok.encode("some text")   # the models were trained with BOS first
        text = tok.decode(model.generate(torch.tensor([ids]), max_new_tokens=20)[0].tolist())

    ``encode`` adds no special tokens; ``decode`` drops them. The ids are exactly those of
    the run's tokenizer in memgpt-jax (``memgpt_jax.data.tokenizers``)."""

    def __init__(self, spec: Mapping[str, Any], directory: str = ".") -> None:
        self.kind = spec.get("kind")
        if self.kind not in ("bytes", "listops", "sentencepiece"):
            raise ValueError(f"unknown tokenizer kind {self.kind!r} in {TOKENIZER_FILE}")
        specials = spec.get("specials") or {"pad": 0, "bos": 1, "eos": 2, "sep": 3, "unk": 4}
        self.pad_id, self.bos_id, self.eos_id = specials["pad"], specials["bos"], specials["eos"]
        self.sep_id, self.unk_id = specials["sep"], specials["unk"]
        self.num_special = int(spec.get("num_special", len(specials)))
        self._sp = None
        if self.kind == "sentencepiece":
            try:
                import sentencepiece
            except ImportError:
                raise ImportError("this export's tokenizer is a sentencepiece model: pip install sentencepiece") \
                    from None
            self._sp = sentencepiece.SentencePieceProcessor(
                model_file=os.path.join(directory, spec.get("model_file", "tokenizer.model")))
            self.vocab_size = int(self._sp.get_piece_size())
        elif self.kind == "listops":
            self.words = list(spec["words"])
            self._ids = {w: i + self.num_special for i, w in enumerate(self.words)}
            self.vocab_size = self.num_special + len(self.words)
        else:
            self.vocab_size = 256 + self.num_special

    @classmethod
    def from_pretrained(cls, directory: str) -> "Tokenizer":
        path = os.path.join(directory, TOKENIZER_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"missing file {path}: this export was written without a tokenizer "
                                    "(its run had none); feed token ids")
        with open(path, encoding="utf-8") as f:
            return cls(json.load(f), directory)

    def encode(self, text: str) -> list[int]:
        if self._sp is not None:
            return list(self._sp.encode(text))
        if self.kind == "listops":
            return [self._ids.get(w, self.unk_id) for w in text.split()]
        return [b + self.num_special for b in text.encode("utf-8")]

    def decode(self, ids: Any) -> str:
        ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
        if self._sp is not None:
            return self._sp.decode([i for i in ids if i >= self.num_special or i == self.unk_id])
        if self.kind == "listops":
            return " ".join("<unk>" if i == self.unk_id else self.words[i - self.num_special]
                            for i in ids if i == self.unk_id or self.num_special <= i < self.vocab_size)
        return bytes(i - self.num_special for i in ids
                     if self.num_special <= i < self.vocab_size).decode("utf-8", "replace")
