"""The one key-and-transform table between our parameters and PyTorch names.

Every parameter of a memgpt-jax model has one row in :data:`ROWS`: its path in
our tree (``transformer/h_{i}/attn/query/kernel``), its name in the state dict
of our PyTorch module (:mod:`memgpt_jax.export.torch_model`) and its name in a
Hugging Face GPT-2 state dict, each with the transform that lays the array out
there. Both directions (export and import, to both formats) are driven by this
table alone, so a name or a transpose can only be wrong in one place.

Layouts on the PyTorch side:

- ``COPY``: same array (embeddings, norm scales and biases, 1-D biases).
- ``LINEAR(n_in)``: ``nn.Linear.weight [out, in]``: our kernel
  ``[in..., out...]`` with its ``n_in`` input axes flattened, then transposed.
- ``CONV1D``: Hugging Face ``Conv1D.weight [in, out]``: flattened, not transposed.
- ``FLAT``: a bias ``[heads, head_dim]`` flattened to ``[heads * head_dim]``.

``transform.part(slot, n)`` places an array in slot ``slot`` of ``n`` equal
parts concatenated along the last axis: GPT-2's fused ``c_attn`` holds the
query, key and value projections side by side (``[D, 3D]`` and ``[3D]``).

A row whose HF name is ``None`` cannot be expressed in a GPT-2 state dict (the
classifier's bias: ``GPT2ForSequenceClassification.score`` has none); the HF
exporter writes those tensors to a side file.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Iterable, Mapping

import numpy as np

from memgpt_jax import tasks


class ConversionError(ValueError):
    """A checkpoint cannot be converted; the message names the tensor or option."""


# --- transforms -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Transform:
    """How one of our arrays (shape ``ours``) is laid out on the other side."""

    kind: str  # "copy" | "linear" | "conv1d" | "flat"
    n_in: int = 1  # input axes of a kernel (2 for attn/out: [heads, head_dim, embed])
    slot: int = 0  # position among ``n_parts`` fused arrays
    n_parts: int = 1

    def part(self, slot: int, n_parts: int) -> "Transform":
        return dataclasses.replace(self, slot=slot, n_parts=n_parts)

    def _matrix(self, shape: tuple[int, ...]) -> tuple[int, int]:
        return math.prod(shape[: self.n_in]), math.prod(shape[self.n_in :])

    def target_shape(self, ours: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of this array's part on the other side (before fusing)."""
        if self.kind == "copy":
            return tuple(ours)
        if self.kind == "flat":
            return (math.prod(ours),)
        n_in, n_out = self._matrix(ours)
        return (n_out, n_in) if self.kind == "linear" else (n_in, n_out)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Our array -> its part on the other side."""
        if self.kind == "copy":
            return x
        if self.kind == "flat":
            return x.reshape(-1)
        m = x.reshape(self._matrix(x.shape))
        return np.ascontiguousarray(m.T) if self.kind == "linear" else m

    def inverse(self, y: np.ndarray, ours: tuple[int, ...]) -> np.ndarray:
        """The other side's part -> our array of shape ``ours``."""
        if self.kind == "linear":
            y = y.T
        return np.ascontiguousarray(y).reshape(ours)


COPY = Transform("copy")
FLAT = Transform("flat")
CONV1D = Transform("conv1d")


def LINEAR(n_in: int = 1) -> Transform:  # noqa: N802 - reads like the constants above
    return Transform("linear", n_in=n_in)


# --- the table ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Row:
    """One parameter: our path, our torch module's name, the HF GPT-2 name (``{i}`` = layer)."""

    ours: str
    torch: str
    torch_tf: Transform
    hf: str | None
    hf_tf: Transform | None


def _block(ours: str, torch: str, torch_tf: Transform, hf: str | None, hf_tf: Transform | None) -> Row:
    return Row(f"transformer/h_{{i}}/{ours}", f"transformer.h.{{i}}.{torch}", torch_tf,
               None if hf is None else f"transformer.h.{{i}}.{hf}", hf_tf)


ROWS: tuple[Row, ...] = (
    # our path                      our torch module            layout      HF GPT-2               layout
    Row("transformer/wte/embedding", "transformer.wte.weight", COPY, "transformer.wte.weight", COPY),
    Row("transformer/wpe/embedding", "transformer.wpe.weight", COPY, "transformer.wpe.weight", COPY),
    _block("ln_1/scale", "ln_1.weight", COPY, "ln_1.weight", COPY),
    _block("ln_1/bias", "ln_1.bias", COPY, "ln_1.bias", COPY),
    _block("attn/query/kernel", "attn.query.weight", LINEAR(), "attn.c_attn.weight", CONV1D.part(0, 3)),
    _block("attn/key/kernel", "attn.key.weight", LINEAR(), "attn.c_attn.weight", CONV1D.part(1, 3)),
    _block("attn/value/kernel", "attn.value.weight", LINEAR(), "attn.c_attn.weight", CONV1D.part(2, 3)),
    _block("attn/query/bias", "attn.query.bias", FLAT, "attn.c_attn.bias", FLAT.part(0, 3)),
    _block("attn/key/bias", "attn.key.bias", FLAT, "attn.c_attn.bias", FLAT.part(1, 3)),
    _block("attn/value/bias", "attn.value.bias", FLAT, "attn.c_attn.bias", FLAT.part(2, 3)),
    _block("attn/out/kernel", "attn.out.weight", LINEAR(2), "attn.c_proj.weight", Transform("conv1d", n_in=2)),
    _block("attn/out/bias", "attn.out.bias", COPY, "attn.c_proj.bias", COPY),
    _block("ln_2/scale", "ln_2.weight", COPY, "ln_2.weight", COPY),
    _block("ln_2/bias", "ln_2.bias", COPY, "ln_2.bias", COPY),
    _block("mlp/fc/kernel", "mlp.fc.weight", LINEAR(), "mlp.c_fc.weight", CONV1D),
    _block("mlp/fc/bias", "mlp.fc.bias", COPY, "mlp.c_fc.bias", COPY),
    _block("mlp/proj/kernel", "mlp.proj.weight", LINEAR(), "mlp.c_proj.weight", CONV1D),
    _block("mlp/proj/bias", "mlp.proj.bias", COPY, "mlp.c_proj.bias", COPY),
    Row("transformer/ln_f/scale", "transformer.ln_f.weight", COPY, "transformer.ln_f.weight", COPY),
    Row("transformer/ln_f/bias", "transformer.ln_f.bias", COPY, "transformer.ln_f.bias", COPY),
    # heads
    Row("lm_head/kernel", "lm_head.weight", LINEAR(), "lm_head.weight", LINEAR()),
    Row("score/kernel", "score.weight", LINEAR(), "score.weight", LINEAR()),
    Row("score/bias", "score.bias", COPY, None, None),  # GPT2ForSequenceClassification has no bias
    Row("qa_outputs/kernel", "qa_outputs.weight", LINEAR(), "qa_outputs.weight", LINEAR()),
    Row("qa_outputs/bias", "qa_outputs.bias", COPY, "qa_outputs.bias", COPY),
    # the copy head (model.CopyHead): no place in a GPT-2 checkpoint
    Row("copy/query/kernel", "copy.query.weight", LINEAR(), None, None),
    Row("copy/query/bias", "copy.query.bias", COPY, None, None),
    Row("copy/key/kernel", "copy.key.weight", LINEAR(), None, None),
    Row("copy/key/bias", "copy.key.bias", COPY, None, None),
    Row("copy/gate/kernel", "copy.gate.weight", LINEAR(), None, None),
    Row("copy/gate/bias", "copy.gate.bias", COPY, None, None),
)

FORMATS = ("torch", "hf")


def _pattern(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)") + "$")


_ROW_PATTERNS = tuple((_pattern(r.ours), r) for r in ROWS)


def lookup(path: str, fmt: str) -> tuple[str | None, Transform | None]:
    """``(target name, transform)`` of our parameter ``path`` in format ``fmt`` ("torch" | "hf")."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {FORMATS}")
    for pattern, row in _ROW_PATTERNS:
        match = pattern.match(path)
        if match:
            name, tf = (row.torch, row.torch_tf) if fmt == "torch" else (row.hf, row.hf_tf)
            if name is None:
                return None, None
            return (name.replace("{i}", match.group("i")) if "{i}" in name else name), tf
    for name in tasks.names():  # a task's own head parameters (Task.export_params): torch only
        for ours, torch, kind in tasks.get(name).export_params:
            if path == ours:
                return (torch, LINEAR() if kind == "linear" else COPY) if fmt == "torch" else (None, None)
    raise ConversionError(f"parameter {path!r} has no row in memgpt_jax.export.mapping.ROWS nor in a task's "
                          "export_params")


# --- trees ------------------------------------------------------------------------------------
def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": x}} -> {"a/b": x}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, path + "/"))
        else:
            out[path] = value
    return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten`."""
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


# --- the two directions -------------------------------------------------------------------------
def to_target(params: Mapping[str, Any], fmt: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Our parameter tree -> ``(tensors, leftovers)``.

    ``tensors`` maps target names to NumPy arrays (fused entries concatenated);
    ``leftovers`` holds our parameters the format cannot express (HF: the
    classifier bias), by our path.
    """
    parts: dict[str, dict[int, np.ndarray]] = {}
    fused: dict[str, int] = {}
    leftovers: dict[str, np.ndarray] = {}
    for path, value in flatten(params).items():
        name, tf = lookup(path, fmt)
        array = np.asarray(value)
        if name is None:
            leftovers[path] = array
            continue
        slots = parts.setdefault(name, {})
        slots[tf.slot] = tf.forward(array)
        fused[name] = tf.n_parts
    tensors = {}
    for name, slots in parts.items():
        if len(slots) != fused[name]:
            raise ConversionError(f"tensor {name!r} fuses {fused[name]} arrays but only slots {sorted(slots)} exist")
        tensors[name] = slots[0] if fused[name] == 1 else np.concatenate([slots[s] for s in range(fused[name])], -1)
    return tensors, leftovers


def from_target(
    tensors: Mapping[str, np.ndarray],
    expected: Mapping[str, Any],
    fmt: str,
    *,
    source: str,
    ignore: Iterable[str] = (),
    defaults: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Target tensors -> our parameter tree, shaped like ``expected``.

    ``expected`` is our parameter tree of the target config (arrays or
    ``ShapeDtypeStruct``s). ``defaults`` supplies our parameters the format
    cannot express (by our path). Raises :class:`ConversionError` naming the
    tensor for a missing tensor, a shape mismatch, or a tensor nothing uses
    (unless listed in ``ignore``).
    """
    out: dict[str, np.ndarray] = {}
    used: set[str] = set()
    for path, spec in flatten(expected).items():
        shape = tuple(spec.shape)
        name, tf = lookup(path, fmt)
        if name is None:
            if defaults is None or path not in defaults:
                raise ConversionError(f"{source}: no value for {path!r}, which the format cannot store")
            value = np.asarray(defaults[path])
        else:
            if name not in tensors:
                raise ConversionError(f"{source}: missing tensor {name!r} (our {path}, shape {shape})")
            full = np.asarray(tensors[name])
            part_shape = tf.target_shape(shape)
            want = part_shape[:-1] + (part_shape[-1] * tf.n_parts,)
            if tuple(full.shape) != want:
                raise ConversionError(
                    f"{source}: tensor {name!r} has shape {tuple(full.shape)}, expected {want} "
                    f"for our {path} of shape {shape}"
                )
            used.add(name)
            width = part_shape[-1]
            value = tf.inverse(full[..., tf.slot * width:(tf.slot + 1) * width], shape)
        if value.shape != shape:
            raise ConversionError(f"{source}: {path!r} has shape {value.shape}, expected {shape}")
        out[path] = value
    unused = sorted(set(tensors) - used - set(ignore))
    if unused:
        raise ConversionError(
            f"{source}: tensors {unused[:6]}{' ...' if len(unused) > 6 else ''} are not used by the "
            "configuration (more layers, another head, or a mismatched config?)"
        )
    return unflatten(out)
