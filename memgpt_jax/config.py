"""Model configuration: frozen, validated on construction.

A ``ModelConfig`` fully describes the architecture of a memgpt-jax model. It is
a frozen dataclass (hashable, so it can be a static argument to ``jax.jit``) and
every invalid combination fails at construction with a ``ValueError`` that names
the offending field.

Dense configurations with the defaults (learned positions, LayerNorm, GELU MLP,
tied embeddings, biases) have exactly GPT-2's block structure, so they map one
to one onto Hugging Face GPT-2 weights. Everything beyond GPT-2 (RoPE, RMSNorm,
grouped-query attention, block-sparse attention) is a switch here, not a fork.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any, Mapping

_DTYPES = ("float32", "bfloat16", "float16")
# "dense" is the model's full causal attention (every causal pair): the baseline sparse runs
# are compared against. The others are block-sparse layouts (memgpt_jax.attention.layout).
# "derived": per-layer, per-head layouts chosen from a teacher's attention (`memgpt-jax layout
# derive`), read from ``layout_file``.
PATTERNS = ("dense", "local", "window_global", "strided", "fixed", "bigbird", "derived")
DERIVED_FORMAT = "memgpt-jax-derived-layout/1"
# "reference": the oracle on the materialised mask (memgpt_jax.attention.reference);
# "xla" / "pallas": the block kernels; "fused": jax.nn.dot_product_attention (dense only);
# "auto": the oracle for "dense", otherwise "xla" on CPU and "pallas" on GPU/TPU.
IMPLS = ("auto", "reference", "xla", "pallas", "fused")


def _fail(field: str, message: str) -> None:
    raise ValueError(f"{field}: {message}")


@dataclasses.dataclass(frozen=True)
class AttentionConfig:
    """Which attention the model computes and how.

    ``pattern`` names what attention keeps: ``"dense"`` every causal pair (the
    baseline), the others a block-sparse layout built by
    ``memgpt_jax.attention.layout.from_config`` from the fields below; sizes are
    in tokens except ``window``/``n_global``/``n_random``/``stride``, which count
    blocks. ``impl`` says how it is computed (see ``IMPLS``); dense attention with
    ``impl="xla"`` or ``"pallas"`` runs the block kernels on the causal layout
    (``block_size`` tiles), which skip the tiles above the diagonal.

    ``pattern="derived"`` reads ``layout_file`` (written by ``memgpt-jax layout derive``):
    per layer and head, the block offsets and global blocks kept. The file's layout is
    copied into ``derived`` (its canonical JSON) and its block size into ``block_size``, so
    a saved run carries its layout and needs the file no more; a config that already
    holds ``derived`` does not read the file.
    """

    pattern: str = "dense"
    block_size: int = 128
    window: int = 3  # blocks on each side kept by local/bigbird (causal: blocks back)
    n_global: int = 1  # leading global blocks (window_global, bigbird)
    n_random: int = 0  # seeded random key blocks per query row (bigbird)
    stride: int = 4  # blocks between summary columns (strided/fixed)
    seed: int = 0  # seed of the random blocks
    # "auto" | "reference" | "xla" | "pallas" | "fused" (dense pattern only: jax.nn.dot_product_attention,
    # cuDNN's fused kernel on NVIDIA GPUs)
    impl: str = "auto"
    layout_file: str = ""  # pattern "derived": the file `memgpt-jax layout derive` wrote
    derived: str = ""  # pattern "derived": the layout itself (canonical JSON; filled from layout_file)

    def __post_init__(self) -> None:
        if self.pattern != "derived" and (self.layout_file or self.derived):
            _fail("attention.layout_file", f"a layout file is read by pattern 'derived' only (pattern is "
                                           f"{self.pattern!r}); add --config.model.attention.pattern=derived")
        if self.derived:  # a saved config's copy
            check_derived_spec(self.derived_spec, "attention.derived")
        elif self.pattern == "derived":
            if not self.layout_file:
                _fail("attention.layout_file", "pattern 'derived' needs the file `memgpt-jax layout derive` wrote "
                                               "(--config.model.attention.layout_file=FILE)")
            spec = read_layout_file(self.layout_file)  # checked
            object.__setattr__(self, "derived", json.dumps(spec, sort_keys=True, separators=(",", ":")))
        if self.derived:
            object.__setattr__(self, "block_size", int(self.derived_spec["block_size"]))
        if self.pattern not in PATTERNS:
            hint = f"; {_RENAMED_PATTERNS[self.pattern]}" if self.pattern in _RENAMED_PATTERNS else ""
            _fail("attention.pattern", f"unknown pattern {self.pattern!r}; choose one of {PATTERNS}{hint}")
        if self.impl not in IMPLS:
            hint = f"; {_RENAMED_IMPLS[self.impl]}" if self.impl in _RENAMED_IMPLS else ""
            _fail("attention.impl", f"unknown implementation {self.impl!r}; choose one of {IMPLS}{hint}")
        if self.impl == "fused" and self.pattern != "dense":
            _fail("attention.impl", f"'fused' (jax.nn.dot_product_attention) computes dense attention only; "
                                    f"pattern {self.pattern!r} needs 'auto', 'xla', 'pallas' or 'reference'")
        if self.block_size < 1:
            _fail("attention.block_size", f"must be >= 1, got {self.block_size}")
        for name in ("window", "n_global", "n_random"):
            if getattr(self, name) < 0:
                _fail(f"attention.{name}", f"must be >= 0, got {getattr(self, name)}")
        if self.stride < 1:
            _fail("attention.stride", f"must be >= 1, got {self.stride}")

    @property
    def is_dense(self) -> bool:
        """Every causal pair is kept (whatever ``impl`` computes it)."""
        return self.pattern == "dense"

    @property
    def varies_by_layer(self) -> bool:
        """Each layer has its own layout (a derived one); every other pattern shares one."""
        return self.pattern == "derived"

    @property
    def derived_spec(self) -> dict[str, Any]:
        """The derived layout (``block_size``, ``kind``, ``seq_len``, ``layers``); ``{}`` otherwise."""
        return _parse_spec(self.derived) if self.derived else {}


def read_layout_file(path: str) -> dict[str, Any]:
    """The layout of a file written by ``memgpt-jax layout derive``: ``{"block_size", "kind",
    "seq_len", "layers"}``, checked. Raises ``ValueError`` naming the file and what is wrong."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"attention.layout_file: {path} does not exist (write one with `memgpt-jax layout "
                         f"derive --teacher RUN --out {path}`)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"attention.layout_file: cannot read {path} ({e})") from None
    if not isinstance(data, dict) or data.get("format") != DERIVED_FORMAT:
        raise ValueError(f"attention.layout_file: {path} is not a derived layout (its format is "
                         f"{data.get('format') if isinstance(data, dict) else None!r}, expected {DERIVED_FORMAT!r})")
    spec = {k: data.get(k) for k in ("block_size", "kind", "seq_len", "layers")}
    check_derived_spec(spec, f"attention.layout_file ({path})")
    return spec


def check_derived_spec(spec: Mapping[str, Any], where: str) -> None:
    """Raises ``ValueError`` unless ``spec`` is a well-formed derived layout.

    ``kind="band"``: per head ``offsets`` (block distances back, ``0`` included: the
    diagonal), ``globals`` (absolute key blocks) and ``dense_rows`` (the first query blocks,
    which keep every earlier block), meaningful at any length;
    ``kind="map"``: per head ``rows`` (row ``i``: the key blocks query block ``i`` keeps,
    ``i`` included), for lengths up to ``seq_len``."""
    def bad(message: str) -> None:
        raise ValueError(f"{where}: {message}")

    block, kind, seq_len, layers = (spec.get(k) for k in ("block_size", "kind", "seq_len", "layers"))
    if not isinstance(block, int) or block < 1:
        bad(f"block_size must be a positive integer, got {block!r}")
    if kind not in ("band", "map"):
        bad(f"kind must be 'band' or 'map', got {kind!r}")
    if not isinstance(seq_len, int) or seq_len < block or seq_len % block:
        bad(f"seq_len must be a positive multiple of block_size={block}, got {seq_len!r}")
    if not isinstance(layers, list) or not layers or not all(isinstance(heads, list) and heads for heads in layers):
        bad("layers must be a non-empty list of non-empty lists of heads")

    def ints(values: Any, what: str) -> list[int]:
        if not isinstance(values, list) or not all(isinstance(v, int) and v >= 0 for v in values):
            bad(f"{what} must be a list of non-negative integers, got {values!r}")
        return values

    n = seq_len // block
    for li, heads in enumerate(layers):
        for hi, head in enumerate(heads):
            at = f"layer {li} head {hi}"
            if not isinstance(head, dict):
                bad(f"{at} must be an object")
            if kind == "band":
                if 0 not in ints(head.get("offsets"), f"{at} offsets"):
                    bad(f"{at} offsets must include 0 (the diagonal block: every query sees itself)")
                ints(head.get("globals", []), f"{at} globals")
                rows = head.get("dense_rows", 0)
                if not isinstance(rows, int) or rows < 0:
                    bad(f"{at} dense_rows must be a non-negative integer, got {rows!r}")
            else:
                rows = head.get("rows")
                if not isinstance(rows, list) or len(rows) != n:
                    bad(f"{at} rows must list the kept key blocks of each of the {n} query blocks")
                for i, row in enumerate(rows):
                    if i not in ints(row, f"{at} row {i}") or max(row) > i:
                        bad(f"{at} row {i} must keep block {i} (the diagonal) and no later block")


def fresh_layout(model_changes: Mapping[str, Any]) -> dict[str, Any]:
    """Model-section changes in which a new ``attention.layout_file`` is read again: the
    ``derived`` copy of the old file is dropped unless the changes set it too."""
    changes = dict(model_changes)
    attn = changes.get("attention")
    if isinstance(attn, Mapping) and "layout_file" in attn and "derived" not in attn:
        changes["attention"] = {**attn, "derived": ""}
    return changes


@functools.lru_cache(maxsize=32)
def _parse_spec(text: str) -> dict[str, Any]:
    return json.loads(text)


# Names older versions saved, with what replaced them (messages, and upgrade_attention_dict).
_RENAMED_IMPLS = {"dense": "'dense' was renamed 'reference' (the oracle on the materialised mask)"}
_RENAMED_PATTERNS = {"causal": "'causal' was removed: it is pattern='dense' with impl='xla' or 'pallas'"}


def upgrade_attention_dict(d: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Maps an attention config saved by an older version to today's names.

    Returns ``(new_dict, notes)``: a new dict (``d`` is not changed) and one note per
    change (empty when nothing was old):

    - ``impl="dense"`` (the oracle) -> ``impl="reference"``;
    - ``pattern="causal"`` (full causal attention through the block kernels) ->
      ``pattern="dense"`` with ``impl="xla"`` when it was ``"auto"`` (or absent), the
      same values through the portable block kernel (``"auto"`` picked ``"pallas"`` on
      GPU/TPU; set it by hand there); ``"xla"``, ``"pallas"`` stay and ``"dense"``
      becomes ``"reference"``.
    """
    out, notes = dict(d), []
    if out.get("impl") == "dense":
        out["impl"] = "reference"
        notes.append("attention.impl: 'dense' (the oracle) is now called 'reference'")
    if out.get("pattern") == "causal":
        out["pattern"] = "dense"
        if out.get("impl", "auto") == "auto":
            out["impl"] = "xla"
            notes.append("attention.pattern: 'causal' (impl 'auto') is now pattern 'dense' with impl 'xla' "
                         "(the causal block kernel; use 'pallas' on GPU/TPU)")
        else:
            notes.append(f"attention.pattern: 'causal' is now pattern 'dense' (impl {out['impl']!r})")
    return out, notes


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of a decoder-only Transformer.

    Sizes: ``d_model`` is the residual width, ``n_heads`` query heads of
    ``d_model // n_heads`` each, ``n_kv_heads`` key/value heads (grouped-query
    attention when smaller than ``n_heads``; ``None`` means equal), ``d_ff`` the
    MLP width (``None`` means ``4 * d_model``), ``max_len`` the context length.
    """

    vocab_size: int = 50257
    d_model: int = 768
    n_layers: int = 12
    n_heads: int = 12
    n_kv_heads: int | None = None
    d_ff: int | None = None
    max_len: int = 1024
    dropout: float = 0.0  # embedding and residual dropout (GPT-2: 0.1)
    layer_norm_eps: float = 1e-5
    activation: str = "gelu_tanh"  # GPT-2's "gelu_new"; or "gelu", "relu", "silu"
    norm: str = "layernorm"  # or "rmsnorm"
    position: str = "learned"  # or "rope"
    rope_theta: float = 10000.0
    use_bias: bool = True
    tie_embeddings: bool = True
    init_std: float = 0.02
    param_dtype: str = "float32"
    compute_dtype: str = "float32"
    # Inference: with int8-quantized weights (memgpt_jax.compress), also quantize the
    # activations per token and run integer matmuls (int32 accumulation).
    int8_activations: bool = False
    # Task heads.
    num_labels: int = 2  # sequence classification
    # "last" (last non-padding token), "mean" (over valid tokens), or "meanmax" (the mean and
    # the element-wise max over valid tokens, concatenated: the head reads 2 x d_model)
    pooling: str = "last"
    pad_id: int = 0
    # Language models: width of a pointer-generator copy head (``model.CopyHead``: the next
    # token may be copied from the tokens read so far); 0 = none.
    copy_dim: int = 0
    attention: AttentionConfig = dataclasses.field(default_factory=AttentionConfig)

    def __post_init__(self) -> None:
        if isinstance(self.attention, Mapping):  # from JSON / ConfigDict
            object.__setattr__(self, "attention", AttentionConfig(**self.attention))
        positive = ("vocab_size", "d_model", "n_layers", "n_heads", "max_len", "num_labels")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                _fail(name, f"must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            _fail("n_heads", f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.n_kv_heads is not None:
            if self.n_kv_heads < 1 or self.n_heads % self.n_kv_heads:
                _fail("n_kv_heads", f"must be >= 1 and divide n_heads={self.n_heads}, got {self.n_kv_heads}")
        if not isinstance(self.copy_dim, int) or self.copy_dim < 0:
            _fail("copy_dim", f"must be a non-negative integer (0: no copy head), got {self.copy_dim!r}")
        if self.d_ff is not None and self.d_ff < 1:
            _fail("d_ff", f"must be a positive integer, got {self.d_ff}")
        if not 0.0 <= self.dropout < 1.0:
            _fail("dropout", f"must be in [0, 1), got {self.dropout}")
        if self.layer_norm_eps <= 0:
            _fail("layer_norm_eps", f"must be > 0, got {self.layer_norm_eps}")
        choices = {
            "activation": ("gelu_tanh", "gelu", "relu", "silu"),
            "norm": ("layernorm", "rmsnorm"),
            "position": ("learned", "rope"),
            "pooling": ("last", "mean", "meanmax"),
            "param_dtype": _DTYPES,
            "compute_dtype": _DTYPES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                _fail(name, f"unknown value {getattr(self, name)!r}; choose one of {allowed}")
        if self.position == "rope" and self.head_dim % 2:
            _fail("position", f"rope needs an even head_dim, got {self.head_dim}")
        if not 0 <= self.pad_id < self.vocab_size:
            _fail("pad_id", f"must be a token id in [0, {self.vocab_size}), got {self.pad_id}")
        if self.init_std <= 0:
            _fail("init_std", f"must be > 0, got {self.init_std}")
        attn = self.attention
        if attn.derived:
            spec = attn.derived_spec
            n_layers = len(spec["layers"])
            if n_layers != self.n_layers:
                _fail("attention.layout_file", f"the derived layout has {n_layers} layers, the model {self.n_layers}: "
                                               f"derive it with --layers {self.n_layers}")
            for heads in spec["layers"]:
                if len(heads) not in (1, self.n_heads):
                    _fail("attention.layout_file", f"the derived layout has {len(heads)} heads per layer, the model "
                                                   f"{self.n_heads}: derive it with --heads {self.n_heads} (or 1)")
            if spec["kind"] == "map" and self.max_len > spec["seq_len"]:
                _fail("attention.layout_file", f"the derived layout is a raw map of {spec['seq_len']} tokens, "
                                               f"max_len is {self.max_len}: derive a band layout (without --raw), "
                                               f"which holds at any length")
        if not attn.is_dense and self.max_len % attn.block_size:
            _fail(
                "attention.block_size",
                f"max_len={self.max_len} must be a multiple of block_size={attn.block_size} for sparse attention",
            )

    # Derived sizes ---------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def mlp_dim(self) -> int:
        return 4 * self.d_model if self.d_ff is None else self.d_ff

    @property
    def jnp_param_dtype(self) -> Any:
        import jax.numpy as jnp  # lazy: the CLI's --help and the PyTorch side read the config without JAX

        return jnp.dtype(self.param_dtype)

    @property
    def jnp_compute_dtype(self) -> Any:
        import jax.numpy as jnp  # lazy: as in jnp_param_dtype

        return jnp.dtype(self.compute_dtype)

    @property
    def is_gpt2_compatible(self) -> bool:
        """True when the config maps one to one onto Hugging Face GPT-2."""
        return (
            self.attention.is_dense
            and self.position == "learned"
            and self.norm == "layernorm"
            and self.activation == "gelu_tanh"
            and self.use_bias
            and self.tie_embeddings
            and self.kv_heads == self.n_heads
        )

    # Serialisation -----------------------------------------------------------
    def replace(self, **changes: Any) -> "ModelConfig":
        changes = fresh_layout(changes)
        if "attention" in changes and isinstance(changes["attention"], Mapping):
            changes["attention"] = dataclasses.replace(self.attention, **changes["attention"])
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"ModelConfig: unknown fields {unknown}")
        data = dict(data)
        if "attention" in data and isinstance(data["attention"], Mapping):
            attn_known = {f.name for f in dataclasses.fields(AttentionConfig)}
            bad = sorted(set(data["attention"]) - attn_known)
            if bad:
                raise ValueError(f"attention: unknown fields {bad}")
            data["attention"] = AttentionConfig(**data["attention"])
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        return cls.from_dict(json.loads(text))


def gpt2_small() -> ModelConfig:
    """GPT-2 small (124M): 12 layers, 12 heads, width 768, 1024 positions."""
    return ModelConfig()


def tiny(**overrides: Any) -> ModelConfig:
    """A tiny configuration for tests and smoke runs."""
    base = dict(vocab_size=256, d_model=64, n_layers=2, n_heads=4, max_len=128)
    base.update(overrides)
    return ModelConfig(**base)


def small_10m(**overrides: Any) -> ModelConfig:
    """About 10M parameters (8k vocabulary): the size our benchmarks use."""
    base = dict(vocab_size=8192, d_model=256, n_layers=10, n_heads=8, max_len=2048)
    base.update(overrides)
    return ModelConfig(**base)
