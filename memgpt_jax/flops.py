"""Parameter counts and FLOPs per token (for MFU).

FLOPs follow the usual accounting (Kaplan et al. 2020; PaLM appendix B;
nanoGPT's ``estimate_mfu``): a matmul of an ``m x k`` by ``k x n`` costs
``2mkn``; the backward pass costs twice the forward. Per token, forward:

    2 * (matmul parameters, with the tied LM head counted once)
  + 4 * n_layers * n_heads * head_dim * keys_per_query

where ``keys_per_query`` is ``seq_len`` for dense attention (the full masked
score matrix, as nanoGPT counts it for MFU) and, for block-sparse attention,
only the kept blocks: ``kept_blocks * block**2 / seq_len``. With
``computed=True`` it is what the kernel computes: dense attention through the
block kernels (``impl`` ``"xla"`` / ``"pallas"``) then counts only the kept tiles
of the causal layout. Training is three times the forward.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from memgpt_jax import model as model_lib
from memgpt_jax.attention import layout as layout_lib
from memgpt_jax.config import ModelConfig


def count_params(config_or_params: ModelConfig | Any, head: str = "lm") -> int:
    """Number of parameters of a configuration's model (``head`` selects the task
    head), or of a parameter tree. Tied embeddings are counted once."""
    if isinstance(config_or_params, ModelConfig):
        m = model_lib.build(config_or_params, head)
        ids = jax.ShapeDtypeStruct((1, 8), np.int32)
        shapes = jax.eval_shape(lambda x: m.init(jax.random.key(0), x), ids)
        tree = shapes["params"]
    else:
        tree = config_or_params
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))


def matmul_params(config: ModelConfig) -> int:
    """Parameters that take part in matmuls per token (LM head included)."""
    c = config
    attn = c.d_model * c.n_heads * c.head_dim * 2 + c.d_model * c.kv_heads * c.head_dim * 2
    mlp = 2 * c.d_model * c.mlp_dim
    return c.n_layers * (attn + mlp) + c.d_model * c.vocab_size


def keys_per_query(config: ModelConfig, seq_len: int, computed: bool = False) -> float:
    """Average number of keys each query's attention computes at ``seq_len``.

    Dense attention counts the whole score matrix (``seq_len``), the MFU convention;
    with ``computed``, dense attention through the block kernels counts the kept
    tiles of the causal layout, as it does for block-sparse attention."""
    attn = config.attention
    if attn.is_dense and not (computed and attn.impl in ("xla", "pallas")):
        return float(seq_len)
    lay = layout_lib.from_config(attn, seq_len, seq_len)
    return float(lay.n_kept_blocks) * attn.block_size**2 / seq_len


def flops_per_token(
    config: ModelConfig, seq_len: int | None = None, training: bool = True, computed: bool = False
) -> float:
    """FLOPs per token of a forward (``training=False``) or training step; ``computed``
    as in :func:`keys_per_query`."""
    seq_len = seq_len or config.max_len
    attn = 4 * config.n_layers * config.n_heads * config.head_dim * keys_per_query(config, seq_len, computed)
    forward = 2 * matmul_params(config) + attn
    return 3 * forward if training else forward


def mfu(config: ModelConfig, seq_len: int, tokens_per_second: float, peak_flops: float, training: bool = True) -> float:
    """Model FLOPs utilisation: achieved FLOP/s over ``peak_flops``."""
    return flops_per_token(config, seq_len, training) * tokens_per_second / peak_flops


_PEAK_CACHE: dict[str, float] = {}
_square = jax.jit(lambda x: jnp.dot(x, x, preferred_element_type=jnp.float32))  # compiled once per shape and dtype


def measured_peak_flops(dtype: str = "float32", n: int = 1024, repeats: int = 5, cached: bool = True) -> float:
    """The matmul FLOP/s this machine reaches on an ``n x n`` product (the MFU
    denominator we can actually measure on a CPU). Cached per process (``cached=False``
    measures again and keeps the better figure)."""
    key = f"{jax.default_backend()}:{dtype}:{n}"
    if key not in _PEAK_CACHE or not cached:
        a = jnp.ones((n, n), dtype)
        _square(a).block_until_ready()
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            _square(a).block_until_ready()
            best = min(best, time.perf_counter() - t0)
        _PEAK_CACHE[key] = max(2 * n**3 / best, _PEAK_CACHE.get(key, 0.0))
    return _PEAK_CACHE[key]
