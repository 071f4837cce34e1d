"""The Pallas kernels lower for real hardware (Triton for CUDA, Mosaic for TPU) from this CPU.

``jax.export`` with a foreign platform runs the Pallas -> Triton / Mosaic
lowering, which catches unsupported ops, block shapes and index maps without a
device. (The final Triton/Mosaic compilation still happens on the device.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from memgpt_jax.attention import layout as L
from memgpt_jax.attention.pallas import pallas_attention, unsupported_reason

T, BLK, N, K, D = 512, 128, 4, 2, 64


@pytest.fixture()
def fake_tpu_info(monkeypatch):
    """Mosaic lowering asks the default device for its TPU generation; pretend a v5e."""
    tpu_info = pytest.importorskip("jax._src.pallas.mosaic.tpu_info")
    monkeypatch.setitem(tpu_info.registry, jax.devices()[0].device_kind,
                        lambda: tpu_info.get_tpu_info_for_chip(tpu_info.ChipVersion.TPU_V5E, 1))


@pytest.mark.parametrize("backend,platform", [("gpu", "cuda"), ("tpu", "tpu")])
def test_pallas_fwd_and_bwd_lower(backend, platform, fake_tpu_info):
    window = L.causal(T, block=BLK) & (L.local(T, block=BLK, window=1) | L.global_blocks(T, block=BLK, n=1))
    per_head = L.stack_heads([window, L.causal(T, block=BLK), L.strided(T, block=BLK, stride=2), window])
    x_q = jax.ShapeDtypeStruct((1, T, N, D), jnp.bfloat16)
    x_kv = jax.ShapeDtypeStruct((1, T, K, D), jnp.bfloat16)
    valid = jax.ShapeDtypeStruct((1, T), jnp.bool_)
    checks = [jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")]
    target = "tpu_custom_call" if backend == "tpu" else "triton"
    for layout, kv_valid in ((window, None), (per_head, valid)):
        assert unsupported_reason(D, layout, backend) is None

        def loss(q, k, v, valid, layout=layout, use_valid=kv_valid is not None):
            out = pallas_attention(q, k, v, layout, backend=backend, interpret=False,
                                   kv_valid=valid if use_valid else None)
            return out.astype(jnp.float32).sum()

        grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
        exported = jax.export.export(grads, platforms=[platform], disabled_checks=checks)(x_q, x_kv, x_kv, valid)
        text = exported.mlir_module()
        assert text.count(target) >= 3, "forward, dq and dk/dv kernels"


def test_cpu_layout_measures_stay_out_of_accelerator_programs():
    """``layers.matmul``'s own backward and ``cpu_layout``'s materialised transposes are XLA:CPU
    measures, chosen per platform when a program is lowered: a bf16 block-sparse model's gradient
    lowered here for TPU or GPU carries none of them (its products are plain dot_generals in the
    compute dtype, autodiff's transposes folded into them); lowered for CPU it still does."""
    import numpy as np

    from memgpt_jax import model as model_lib
    from memgpt_jax.config import tiny
    from memgpt_jax.cpu_layout import SCOPE

    cfg = tiny(vocab_size=64, d_model=32, n_heads=2, max_len=64, compute_dtype="bfloat16").replace(
        attention=dict(pattern="window_global", block_size=16, window=1, n_global=1, impl="xla"))
    model = model_lib.build(cfg)
    params, _ = model_lib.init(model, jax.random.key(0))
    ids = np.zeros((2, 64), np.int32)

    def loss(params, ids):
        return model.apply({"params": params}, ids).logits.astype(jnp.float32).mean()

    traced = jax.jit(jax.grad(loss)).trace(params, ids)
    text = {p: traced.lower(lowering_platforms=(p,)).as_text(debug_info=True) for p in ("cpu", "cuda", "tpu")}
    n_linear = 4 * cfg.n_layers  # q/k/v (or qkv) and output projections, two MLP matmuls: at least this many
    assert text["cpu"].count(SCOPE) >= n_linear, "the CPU program keeps its layout measures"
    for platform in ("cuda", "tpu"):
        assert SCOPE not in text[platform], platform
        ops = [line for line in text[platform].splitlines() if "stablehlo.dot_general" in line]
        assert len(ops) >= 3 * n_linear  # forward, dx and dw of every Linear
        linear = [op for op in ops if "x32xbf16>, tensor<32x" in op]  # products with a d_model-wide weight
        assert linear and all(op.count("bf16") >= 3 for op in linear), linear  # bf16 in, bf16 out: no f32 GEMM
