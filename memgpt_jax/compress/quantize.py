"""Post-training weight quantization: int8 per-channel and int4 group-wise.

- **int8**, symmetric, one scale per output channel: ``q = round(w / s)``,
  ``s = max|w| / 127`` over the input axes. For an embedding table the
  "channel" is the token row, which serves both the lookup and the tied head.
- **int4**, symmetric, one scale per group of ``group`` consecutive input
  entries and output channel (``s = max|w| / 7``), values in ``[-8, 7]`` stored
  two per byte (low nibble first) along the input axis.

Every kernel and embedding table is quantized; biases and norm scales stay
float32 (a few KB). Quantized tensors
are ``QTensor`` pytrees, so they jit, shard and checkpoint like any parameter.
The model runs on ``dequantize(qparams)`` inside ``jit``: XLA fuses the
int -> float conversion into the weight reads ("dequantize on the fly").

We write this ourselves rather than use qwix/aqt: inference-only, weight-only
quantization of a Flax Linen model is ~150 lines here, needs no change to the
model's modules, and keeps the checkpoint format ours (aqt/qwix target
quantized training and would bind the model code to their layer wrappers).
"""

from __future__ import annotations

import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


@flax.struct.dataclass
class QTensor:
    """A quantized tensor.

    int8: ``q`` int8 in the tensor's own shape; ``scale`` float32 broadcastable to it
    (one per output channel: ``[1] * n_in + out_shape``; embeddings ``[vocab, 1]``).
    int4: ``q`` uint8 ``[padded_in / 2, n_out]`` (two values a byte, along the input
    axis, zero-padded to whole groups); ``scale`` ``[padded_in / group, n_out]``.
    """

    q: Array
    scale: Array
    shape: tuple = flax.struct.field(pytree_node=False)
    bits: int = flax.struct.field(pytree_node=False)
    n_in: int = flax.struct.field(pytree_node=False, default=1)  # leading input axes
    group: int = flax.struct.field(pytree_node=False, default=0)

    @property
    def nbytes(self) -> int:
        return int(self.q.size * self.q.dtype.itemsize + self.scale.size * self.scale.dtype.itemsize)

    def matrix(self) -> tuple[Array, Array]:
        """int8 only: ``(q [in, out], scale [out])`` for an integer GEMM."""
        n_in = math.prod(self.shape[: self.n_in])
        return self.q.reshape(n_in, -1), self.scale.reshape(-1)


def pack_int4(q: Array) -> Array:
    """``[in, out]`` int values in [-8, 7] -> ``[in / 2, out]`` uint8 (low nibble = even row)."""
    u = (q.astype(jnp.int32) & 0xF).astype(jnp.uint8)
    return u[0::2] | (u[1::2] << 4)


def unpack_int4(packed: Array) -> Array:
    """Inverse of ``pack_int4``: int8 values in [-8, 7], rows interleaved back."""
    lo = (packed & 0xF).astype(jnp.int8)
    hi = (packed >> 4).astype(jnp.int8)
    lo = jnp.where(lo > 7, lo - 16, lo)
    hi = jnp.where(hi > 7, hi - 16, hi)
    return jnp.stack([lo, hi], axis=1).reshape(-1, packed.shape[-1])


def quantize(w: Array, bits: int = 8, group: int = 64, n_in: int = 1) -> QTensor:
    """Quantizes one tensor whose first ``n_in`` axes are inputs (``n_in=0``: an
    embedding, one scale per row)."""
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits}")
    w = jnp.asarray(w, jnp.float32)
    if bits == 8:
        axes = (1,) if n_in == 0 else tuple(range(n_in))
        scale = jnp.max(jnp.abs(w), axis=axes, keepdims=True) / 127.0
        scale = jnp.where(scale == 0, 1.0, scale)
        q = jnp.clip(jnp.round(w / scale), -127, 127).astype(jnp.int8)
        return QTensor(q, scale, tuple(w.shape), 8, n_in, 0)
    m = w.T if n_in == 0 else w.reshape(math.prod(w.shape[:n_in]), -1)  # [in, out]
    rows, cols = m.shape
    if group < 2 or group % 2:
        raise ValueError(f"int4 group must be an even number >= 2, got {group}")
    g = min(group, rows + rows % 2)
    padded = -(-rows // g) * g  # zero rows up to a whole number of groups; dropped on dequantize
    m = jnp.pad(m, ((0, padded - rows), (0, 0)))
    grouped = m.reshape(padded // g, g, cols)
    scale = jnp.max(jnp.abs(grouped), axis=1) / 7.0  # [in/g, out]
    scale = jnp.where(scale == 0, 1.0, scale)
    q = jnp.clip(jnp.round(grouped / scale[:, None, :]), -8, 7).reshape(padded, cols)
    return QTensor(pack_int4(q), scale, tuple(w.shape), 4, n_in, g)


def dequantize(t: QTensor, dtype: Any = jnp.float32) -> Array:
    if t.bits == 8:
        return (t.q.astype(jnp.float32) * t.scale).astype(dtype)
    q = unpack_int4(t.q).astype(jnp.float32)
    padded, cols = q.shape
    m = (q.reshape(padded // t.group, t.group, cols) * t.scale[:, None, :]).reshape(padded, cols)
    rows = t.shape[1] if t.n_in == 0 else math.prod(t.shape[: t.n_in])
    m = m[:rows]
    return (m.T if t.n_in == 0 else m).reshape(t.shape).astype(dtype)


def _input_axes(path: tuple, ndim: int) -> int:
    """How many leading axes of a parameter are inputs (0 marks an embedding table)."""
    names = [getattr(p, "key", None) for p in path]
    if "embedding" in names:
        return 0
    if len(names) >= 2 and names[-2] == "out" and ndim == 3:  # attn/out: [heads, head_dim, embed]
        return 2
    return 1


def quantize_params(params: Any, bits: int = 8, group: int = 64) -> Any:
    """Quantizes every kernel and embedding; the rest is kept as is. (int4: an input
    size that the group does not divide is zero-padded to whole groups.)"""

    def one(path: tuple, w: Any) -> Any:
        if np.ndim(w) < 2 or getattr(path[-1], "key", None) not in ("kernel", "embedding"):
            return w
        return quantize(w, bits, group, _input_axes(path, np.ndim(w)))

    return jax.tree_util.tree_map_with_path(one, params)


def dequantize_params(qparams: Any, dtype: Any = jnp.float32) -> Any:
    return jax.tree.map(lambda x: dequantize(x, dtype) if isinstance(x, QTensor) else x, qparams,
                        is_leaf=lambda x: isinstance(x, QTensor))


def inference_params(qparams: Any, dtype: Any = jnp.float32) -> Any:
    """What ``model.apply`` takes: int8 tensors stay int8 (the model reads them
    directly), int4 tensors are unpacked and scaled. Call inside ``jit`` so the
    dequantization happens on the fly."""
    return jax.tree.map(lambda x: dequantize(x, dtype) if isinstance(x, QTensor) and x.bits == 4 else x,
                        qparams, is_leaf=lambda x: isinstance(x, QTensor))


def param_bytes(tree: Any) -> int:
    """Bytes the parameters occupy in memory (quantized tensors at their packed size)."""
    total = 0
    for leaf in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, QTensor)):
        total += leaf.nbytes if isinstance(leaf, QTensor) else int(np.asarray(leaf).nbytes)
    return total


def summary(qparams: Any) -> dict[str, int]:
    """Counts of tensors per storage kind."""
    counts: dict[str, int] = {}
    for leaf in jax.tree.leaves(qparams, is_leaf=lambda x: isinstance(x, QTensor)):
        kind = f"int{leaf.bits}" if isinstance(leaf, QTensor) else str(np.asarray(leaf).dtype)
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def quantize_activations_int8(x: Array) -> tuple[Array, Array]:
    """Dynamic per-token int8 quantization of activations: ``(q int8, scale [..., 1])``."""
    scale = jnp.max(jnp.abs(x.astype(jnp.float32)), axis=-1, keepdims=True) / 127.0
    scale = jnp.where(scale == 0, 1.0, scale)
    return jnp.clip(jnp.round(x / scale), -127, 127).astype(jnp.int8), scale


def int8_matmul(x_NI: Array, w: QTensor) -> Array:
    """``x @ W`` for ``x: [tokens, in]`` with int8 activations (per token) and an int8
    per-output-channel kernel, accumulated in int32; returns float32 ``[tokens, out]``."""
    if w.bits != 8 or w.n_in == 0:
        raise ValueError("int8_matmul needs an int8 per-output-channel kernel")
    q_IO, scale_O = w.matrix()
    xq, xs = quantize_activations_int8(x_NI)
    acc = jnp.dot(xq, q_IO, preferred_element_type=jnp.int32)
    return acc.astype(jnp.float32) * xs * scale_O


def encode(qparams: Any) -> tuple[Any, dict[str, Any]]:
    """Plain arrays for a checkpoint: each ``QTensor`` becomes ``{"q", "scale"}``;
    returns ``(tree, spec)`` where ``spec`` (JSON) records how to rebuild them."""
    spec: dict[str, Any] = {}

    def one(path: tuple, x: Any) -> Any:
        if not isinstance(x, QTensor):
            return x
        key = "/".join(str(getattr(p, "key", p)) for p in path)
        spec[key] = {"shape": list(x.shape), "bits": x.bits, "n_in": x.n_in, "group": x.group}
        return {"q": x.q, "scale": x.scale}

    tree = jax.tree_util.tree_map_with_path(one, qparams, is_leaf=lambda x: isinstance(x, QTensor))
    return tree, spec


def decode(tree: Any, spec: dict[str, Any]) -> Any:
    """Inverse of ``encode``."""

    def walk(node: Any, prefix: str) -> Any:
        if prefix in spec:
            s = spec[prefix]
            return QTensor(jnp.asarray(node["q"]), jnp.asarray(node["scale"]), tuple(s["shape"]), s["bits"],
                           s["n_in"], s["group"])
        if isinstance(node, dict):
            return {k: walk(v, f"{prefix}/{k}" if prefix else k) for k, v in node.items()}
        return node

    return walk(tree, "")
