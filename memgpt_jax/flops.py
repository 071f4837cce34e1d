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

The MFU denominator (:func:`peak_flops`) is a known figure on TPU/GPU (``KNOWN_PEAKS``,
per chip, from the vendors' spec sheets, as MaxText keeps one) and, on CPU, where no
spec sheet says what XLA reaches, the best matmul rate measured on this CPU kind
(:func:`cpu_peak_flops`: one measurement per process, the best kept on disk).
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from memgpt_jax import machine
from memgpt_jax import model as model_lib
from memgpt_jax.attention import layout as layout_lib
from memgpt_jax.config import ModelConfig


def count_params(config_or_params: ModelConfig | Any, head: Any = model_lib.LMHeadModel) -> int:
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
    kept = [lay.n_kept_blocks for lay in layout_lib.layer_layouts(attn, config.n_layers, seq_len, seq_len)]
    return float(sum(kept) / len(kept)) * attn.block_size**2 / seq_len


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


# Peak dense bf16 FLOP/s of one chip (one JAX device), from the vendors' public spec sheets;
# the first pattern that matches ``device.device_kind`` wins. NVIDIA's sheets print the
# Tensor Core figure "with sparsity": the dense peak is half of it.
KNOWN_PEAKS: tuple[tuple[str, float], ...] = (
    (r"H100.*PCIe", 756e12),  # NVIDIA H100 datasheet, H100 PCIe: BF16 Tensor Core 1,513 TFLOPS sparse
    (r"H100.*NVL", 835e12),  # H100 NVL: 1,671 TFLOPS sparse
    (r"H100", 989e12),  # H100 SXM: 1,979 TFLOPS sparse
    (r"H200.*NVL", 835e12),  # NVIDIA H200 datasheet, H200 NVL: 1,671 TFLOPS sparse
    (r"H200", 989e12),  # H200 SXM: 1,979 TFLOPS sparse
    (r"A100", 312e12),  # NVIDIA A100 datasheet: BF16 Tensor Core 312 TFLOPS dense (SXM and PCIe)
    (r"\bL4$", 121e12),  # NVIDIA L4 datasheet: BF16 Tensor Core 242 TFLOPS sparse
    (r"^TPU v4$", 275e12),  # Cloud TPU v4: 275 TFLOPS bf16 per chip
    (r"^TPU v5 ?(lite|e)$", 197e12),  # Cloud TPU v5e ("TPU v5 lite"): 197 TFLOPS bf16 per chip
    (r"^TPU v5p?$", 459e12),  # Cloud TPU v5p ("TPU v5"): 459 TFLOPS bf16 per chip
    (r"^TPU v6 ?(lite|e)$", 918e12),  # Trillium, Cloud TPU v6e ("TPU v6 lite"): 918 TFLOPS bf16 per chip
)


def known_peak_flops(device_kind: str) -> float | None:
    """The spec-sheet bf16 dense peak of one chip of ``device_kind`` (``KNOWN_PEAKS``), or
    ``None`` for a chip the table does not list (and for CPUs)."""
    return next((peak for pattern, peak in KNOWN_PEAKS if re.search(pattern, device_kind)), None)


def peak_flops(dtype: str = "float32") -> tuple[float, str]:
    """The MFU denominator of this process and where it comes from.

    On TPU/GPU: the known per-chip peak (bf16 dense, whatever ``dtype``: the usual MFU
    convention) times this process's devices, whose tokens the training loop counts; a chip
    ``KNOWN_PEAKS`` does not list is measured once per process. On CPU: ``$MEMGPT_PEAK_FLOPS``
    when set, else :func:`cpu_peak_flops` (the best rate measured on this CPU kind)."""
    devices = jax.local_devices()
    if devices[0].platform != "cpu":
        per_chip = known_peak_flops(devices[0].device_kind)
        if per_chip is not None:
            return per_chip * len(devices), f"spec sheet: {len(devices)} x {devices[0].device_kind}"
        n = 4096  # an accelerator's matmul units need a larger product to approach their peak
        return measured_peak_flops("bfloat16", n=n) * len(devices), f"measured: {n}^3 bfloat16 on 1 device"
    if os.environ.get(PEAK_ENV):
        return float(os.environ[PEAK_ENV]), f"${PEAK_ENV}"
    return cpu_peak_flops(dtype)


PEAK_ENV = "MEMGPT_PEAK_FLOPS"  # a fixed MFU denominator (FLOP/s) for this machine
PEAK_FILE_ENV = "MEMGPT_PEAK_FILE"  # where measured CPU peaks are kept


def peak_file() -> str:
    return os.environ.get(PEAK_FILE_ENV) or machine.cache_dir("peak_flops.json")


def cpu_peak_flops(dtype: str = "float32") -> tuple[float, str]:
    """The best ``1024^3`` matmul rate ever measured on this CPU kind (by this JAX version),
    and where it comes from.

    One measurement at start-up is at the mercy of whatever else runs then: on a shared
    machine it halved the peak (and doubled MFU) between identical runs. So each process
    measures once and keeps the best figure per CPU kind in :func:`peak_file`; the
    denominator only ever rises towards the machine's idle peak, and identical runs
    compare. ``$MEMGPT_PEAK_FLOPS`` fixes it instead."""
    key = f"{machine.cpu_fingerprint()}|{dtype}|1024^3|jax {jax.__version__}"
    path = peak_file()
    try:
        with open(path) as f:
            kept = json.load(f)
    except (OSError, ValueError):
        kept = {}
    kept = kept if isinstance(kept, dict) else {}
    measured, stored = measured_peak_flops(dtype), float(kept.get(key) or 0.0)
    best = max(measured, stored)
    if best > stored:
        kept[key] = best
        try:  # best effort: a read-only home keeps this process's figure only
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump(kept, f, indent=1, sort_keys=True)
            os.replace(tmp, path)
        except OSError:
            pass
    source = "measured now" if best == measured else f"best measured on this CPU, kept in {path}"
    return best, f"1024^3 {dtype} matmul on {machine.cpu_model()}: {source}"


_PEAK_CACHE: dict[str, float] = {}
_square = jax.jit(lambda x: jnp.dot(x, x, preferred_element_type=jnp.float32))  # compiled once per shape and dtype


def measured_peak_flops(dtype: str = "float32", n: int = 1024, repeats: int = 5, cached: bool = True) -> float:
    """The matmul FLOP/s this machine reaches on an ``n x n`` product (the MFU
    denominator we can actually measure on a CPU). Cached per process (``cached=False``,
    for benchmarks that measure again beside their kernels, keeps the better figure)."""
    key = f"{jax.default_backend()}:{dtype}:{n}"
    if key not in _PEAK_CACHE or not cached:
        _PEAK_CACHE[key] = max(_time_square(dtype, n, repeats), _PEAK_CACHE.get(key, 0.0))
    return _PEAK_CACHE[key]


def _time_square(dtype: str, n: int, repeats: int) -> float:
    """FLOP/s of the best of ``repeats`` timed ``n x n`` products (after one to compile)."""
    a = jnp.ones((n, n), dtype)
    _square(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        _square(a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best
