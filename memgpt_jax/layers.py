"""Small building blocks for the model: linear maps, norms, rotary embeddings.

Every parameter carries logical axis names through
``nn.with_logical_partitioning`` so that sharding rules (one table, in
``memgpt_jax.training``) can place it on a mesh. Logical axis names used:

    vocab, embed, position, heads, kv_heads, head_dim, mlp, labels

Matmuls take their inputs in the compute dtype and accumulate in float32. ``matmul`` is
that product: on TPU/GPU a plain ``dot_general`` in the compute dtype (the matrix units
accumulate in float32; autodiff gives the backward, as for Flax's ``Dense``); in a program
lowered for CPU, :func:`cpu_matmul`, with its own backward pass laid out for XLA:CPU's fast
GEMM (``memgpt_jax.cpu_layout``).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from memgpt_jax.compress.quantize import QTensor, dequantize, int8_matmul
from memgpt_jax.cpu_layout import materialized_transpose, on_cpu

Array = jax.Array
Dtype = Any


def matmul(x: Array, w: Array) -> Array:
    """``x @ w`` for 2-D operands in the compute dtype, returned in float32: :func:`cpu_matmul`
    in a program lowered for CPU, a plain ``dot_general`` for any other platform."""
    return on_cpu(cpu_matmul, _plain_matmul, x, w)


def _plain_matmul(x: Array, w: Array) -> Array:
    return jnp.dot(x, w).astype(jnp.float32)


@jax.custom_vjp
def cpu_matmul(x: Array, w: Array) -> Array:
    """``x @ w`` for 2-D operands in the compute dtype, accumulated and returned in float32.

    The backward pass rounds the incoming gradient to the compute dtype (as mixed-precision
    training does; with float32 compute it is exact). It then runs ``dx = g @ w^T`` and
    ``dw = x^T @ g`` as bf16-in / f32-accumulate GEMMs, with ``w^T`` and ``x^T`` materialised
    on CPU. Autodiff of ``jnp.dot`` would instead run the weight gradient on a float32
    gradient against a transposed bf16 operand, which XLA:CPU runs at about a third of its
    matmul peak (``benchmarks.studies.step_parts``), and XLA:CPU runs ``g @ w^T`` with the
    transpose folded into the dot in float32 (both operands converted).
    """
    return jnp.dot(x, w, preferred_element_type=jnp.float32)


def _matmul_fwd(x: Array, w: Array) -> tuple[Array, tuple[Array, Array]]:
    return cpu_matmul(x, w), (x, w)


def _matmul_bwd(res: tuple[Array, Array], g: Array) -> tuple[Array, Array]:
    x, w = res
    g = g.astype(x.dtype)
    # w^T materialised too: XLA:CPU runs a bf16 product with a transposed right operand
    # (``g @ w^T`` folded into the dot) by converting both operands to float32.
    dx = jnp.dot(g, materialized_transpose(w), preferred_element_type=jnp.float32).astype(x.dtype)
    dw = jnp.dot(materialized_transpose(x), g.astype(w.dtype), preferred_element_type=jnp.float32)
    return dx, dw.astype(w.dtype)


cpu_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def tied_logits(x: Array, table: Array) -> Array:
    """``x @ table.T`` (tokens x vocabulary, float32) for a tied output embedding.
    On CPU the table's transpose is materialised so that the GEMM runs in XLA:CPU's fast layout."""
    return matmul(x, materialized_transpose(table))


def normal_init(std: float) -> nn.initializers.Initializer:
    return nn.initializers.normal(stddev=std)


class Linear(nn.Module):
    """``y = x @ W + b`` contracting the last ``n_in`` axes of ``x``.

    ``features`` may be a tuple (e.g. ``(heads, head_dim)``); ``kernel_axes``
    names every kernel dimension (inputs first, then outputs).
    """

    features: tuple[int, ...]
    kernel_axes: tuple[str, ...]
    n_in: int = 1
    use_bias: bool = True
    init_std: float = 0.02
    param_dtype: Dtype = jnp.float32
    dtype: Dtype = jnp.float32
    int8_activations: bool = False  # with an int8 QTensor kernel: quantize inputs per token too

    @nn.compact
    def __call__(self, x: Array) -> Array:
        in_shape = x.shape[-self.n_in :]
        kernel_shape = tuple(in_shape) + tuple(self.features)
        if len(self.kernel_axes) != len(kernel_shape):
            raise ValueError(f"kernel_axes {self.kernel_axes} do not match kernel shape {kernel_shape}")
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(normal_init(self.init_std), self.kernel_axes),
            kernel_shape,
            self.param_dtype,
        )
        n_out = len(self.features)
        # One 2-D GEMM: [tokens, in] @ [in, out]. (Contracting several axes at once makes
        # XLA:CPU's weight-gradient matmul several times slower.)
        lead = x.shape[: x.ndim - self.n_in]
        x2 = x.reshape(-1, math.prod(in_shape)).astype(self.dtype)
        if isinstance(kernel, QTensor):  # a quantized checkpoint (memgpt_jax.compress)
            if kernel.bits == 8 and self.int8_activations:
                y2 = int8_matmul(x2, kernel)  # integer GEMM, int32 accumulation
            else:
                k2 = dequantize(kernel, self.dtype).reshape(math.prod(in_shape), -1)  # fused into the read
                y2 = jnp.dot(x2, k2, preferred_element_type=jnp.float32)
        else:
            k2 = kernel.reshape(math.prod(in_shape), math.prod(self.features)).astype(self.dtype)
            y2 = matmul(x2, k2)
        y = y2.reshape(*lead, *self.features)
        if self.use_bias:
            bias = self.param(
                "bias",
                nn.with_logical_partitioning(nn.initializers.zeros_init(), self.kernel_axes[-n_out:]),
                tuple(self.features),
                self.param_dtype,
            )
            y = y + bias.astype(jnp.float32)
        return y.astype(self.dtype)


class Norm(nn.Module):
    """LayerNorm (GPT-2) or RMSNorm, computed in float32."""

    kind: str = "layernorm"
    eps: float = 1e-5
    param_dtype: Dtype = jnp.float32
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        d = x.shape[-1]
        x32 = x.astype(jnp.float32)
        scale = self.param(
            "scale", nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)), (d,), self.param_dtype
        )
        if self.kind == "layernorm":
            mean = jnp.mean(x32, axis=-1, keepdims=True)
            var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
            y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
            bias = self.param(
                "bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)), (d,), self.param_dtype
            )
            y = y * scale.astype(jnp.float32) + bias.astype(jnp.float32)
        else:
            ms = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
            y = x32 * jax.lax.rsqrt(ms + self.eps) * scale.astype(jnp.float32)
        return y.astype(self.dtype)


_GELU_C = 0.7978845608028654  # sqrt(2 / pi)
_GELU_A = 0.044715


@jax.custom_vjp
def gelu_tanh(x: Array) -> Array:
    """GPT-2's tanh-approximated GELU, computed in float32, returned in ``x``'s dtype.

    Its own VJP keeps only the input and recomputes the tanh: autodiff of the formula keeps
    several float32 intermediates of the MLP's widest activation and runs about 1.5x slower
    on CPU (forward + backward, bf16 8192 x 1024)."""
    v = x.astype(jnp.float32)
    return (0.5 * v * (1.0 + jnp.tanh(_GELU_C * v * (1.0 + _GELU_A * v * v)))).astype(x.dtype)


def _gelu_tanh_fwd(x: Array) -> tuple[Array, Array]:
    return gelu_tanh(x), x


def _gelu_tanh_bwd(x: Array, dy: Array) -> tuple[Array]:
    v = x.astype(jnp.float32)
    v2 = v * v
    t = jnp.tanh(_GELU_C * v * (1.0 + _GELU_A * v2))
    dydx = 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * _GELU_C * (1.0 + 3.0 * _GELU_A * v2)
    return ((dy.astype(jnp.float32) * dydx).astype(x.dtype),)


gelu_tanh.defvjp(_gelu_tanh_fwd, _gelu_tanh_bwd)


def activation(name: str, x: Array) -> Array:
    """The MLP nonlinearity, computed in float32 and returned in ``x``'s dtype (bf16
    elementwise math is several times slower than f32 on CPU, and no more exact)."""
    if name == "gelu_tanh":
        return gelu_tanh(x)
    fns = {"gelu": lambda v: jax.nn.gelu(v, approximate=False), "relu": jax.nn.relu, "silu": jax.nn.silu}
    if name not in fns:
        raise ValueError(f"unknown activation {name!r}")
    return fns[name](x.astype(jnp.float32)).astype(x.dtype)


def apply_rope(x_BTNH: Array, positions_BT: Array, theta: float) -> Array:
    """Rotary position embedding (rotate-half convention), computed in float32."""
    H = x_BTNH.shape[-1]
    freqs = theta ** (-jnp.arange(0, H, 2, dtype=jnp.float32) / H)  # [H/2]
    angles_BTF = positions_BT[..., None].astype(jnp.float32) * freqs
    sin = jnp.sin(angles_BTF)[:, :, None, :]
    cos = jnp.cos(angles_BTF)[:, :, None, :]
    x = x_BTNH.astype(jnp.float32)
    x1, x2 = x[..., : H // 2], x[..., H // 2 :]
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BTNH.dtype)


def logical_axes(shape_tree: Any) -> Any:
    """The logical axis names of a boxed variable tree (from ``model.init``)."""
    return nn.get_partition_spec(shape_tree)


def unbox(tree: Any) -> Any:
    return nn.meta.unbox(tree)

