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
