"""Explainability: attention heatmaps and gradient x input token saliency.

``attention_maps`` runs one forward pass with ``output_attentions=True`` and
returns every layer's weights ``[heads, T, T]``; ``render_attention`` writes one
PNG per layer (a panel per head) with token labels on both axes and, for
block-sparse models, the kept blocks of the layout outlined. ``saliency`` is
gradient x input for a classifier: the gradient of the chosen class's logit
with respect to each input embedding, dotted with that embedding.
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from matplotlib import patches
from matplotlib.figure import Figure

from memgpt_jax import tasks
from memgpt_jax.attention.layout import derived, layer_layouts
from memgpt_jax.config import read_layout_file
from memgpt_jax.compress.quantize import dequantize_params
from memgpt_jax.training.run import Run


def encode_input(run: Run, text: str, max_tokens: int | None = None) -> np.ndarray:
    tok = run.tokenizer
    ids = [tok.bos_id] + tok.encode(text).tolist()
    limit = min(max_tokens or run.model_config.max_len, run.model_config.max_len)
    return np.asarray(ids[:limit], np.int32)


def token_labels(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """A short printable label per token (sentencepiece pieces, bytes, or words)."""
    labels = []
    for i in ids:
        if hasattr(tokenizer, "id_to_piece"):
            label = tokenizer.id_to_piece(int(i))
        else:
            label = tokenizer.decode([int(i)]) or f"<{int(i)}>"
        labels.append(label.replace("\u2581", "_").replace("\n", "\\n")[:12])
    return labels


def attention_maps(run: Run, ids: np.ndarray) -> list[np.ndarray]:
    """Every layer's attention weights ``[heads, T, T]`` (float32) for one input."""
    params = dequantize_params(run.params)
    out = jax.jit(lambda p, x: run.model.apply({"params": p}, x, output_attentions=True))(
        params, jnp.asarray(ids)[None])
    return [np.asarray(w[0]) for w in out.attentions]


def kept_blocks(run: Run, T: int) -> tuple[list[np.ndarray], int] | None:
    """``([kept [heads_or_1, nq, nk] bool per layer], block)`` of a sparse model's layout for
    ``T`` tokens (``None`` for dense attention)."""
    cfg = run.model_config.attention
    if cfg.is_dense:
        return None
    b = cfg.block_size
    size = max(b, math.ceil(T / b) * b)
    return [lay.codes != 0 for lay in layer_layouts(cfg, run.model_config.n_layers, size, size)], b


def layout_file_blocks(path: str, T: int) -> tuple[list[np.ndarray], int]:
    """:func:`kept_blocks` of a derived layout file (``memgpt-jax layout derive``), to draw it
    over any run's maps, e.g. the teacher's it was derived from."""
    spec = read_layout_file(path)
    b = int(spec["block_size"])
    size = max(b, math.ceil(T / b) * b)
    return [derived(spec, layer, size).codes != 0 for layer in range(len(spec["layers"]))], b


def render_attention(maps: Sequence[np.ndarray], labels: Sequence[str], out_dir: str, *,
                     layers: Sequence[int] | None = None, heads: Sequence[int] | None = None,
                     blocks: tuple[np.ndarray, int] | None = None, title: str = "") -> list[str]:
    """Writes ``layer_{i}.png`` per layer; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    T = len(labels)
    paths = []
    for li in layers if layers is not None else range(len(maps)):
        if not 0 <= li < len(maps):
            raise ValueError(f"layer {li} out of range (the model has {len(maps)} layers)")
        w = maps[li]
        hs = list(heads) if heads is not None else list(range(w.shape[0]))
        cols = min(4, len(hs))
        rows = math.ceil(len(hs) / cols)
        cell = max(3.0, 0.16 * T)
        fig = Figure(figsize=(cell * cols, cell * rows))  # no pyplot: no global backend or figure registry
        axes = fig.subplots(rows, cols, squeeze=False)
        for ax in axes.flat[len(hs):]:
            ax.axis("off")
        for ax, h in zip(axes.flat, hs):
            if not 0 <= h < w.shape[0]:
                raise ValueError(f"head {h} out of range (the model has {w.shape[0]} heads)")
            ax.imshow(w[h], cmap="viridis", vmin=0.0, vmax=max(float(w[h].max()), 1e-6), interpolation="nearest")
            ax.set_title(f"layer {li} head {h}", fontsize=9)
            if T <= 96:
                ax.set_xticks(range(T), labels, rotation=90, fontsize=6)
                ax.set_yticks(range(T), labels, fontsize=6)
            ax.set_xlabel("key", fontsize=8)
            ax.set_ylabel("query", fontsize=8)
            if blocks is not None:
                kept, b = blocks
                if li >= len(kept):
                    raise ValueError(f"the layout drawn has {len(kept)} layers; layer {li} has none")
                k = kept[li][h % kept[li].shape[0]]
                for qi, ki in zip(*np.nonzero(k)):
                    if qi * b >= T or ki * b >= T:
                        continue
                    ax.add_patch(patches.Rectangle((ki * b - 0.5, qi * b - 0.5), min(b, T - ki * b), min(b, T - qi * b),
                                                   fill=False, edgecolor="white", linewidth=0.8))
        if title:
            fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        path = os.path.join(out_dir, f"layer_{li}.png")
        fig.savefig(path, dpi=100)
        paths.append(path)
    return paths


def saliency(run: Run, ids: np.ndarray, label: int | None = None) -> tuple[np.ndarray, int, np.ndarray]:
    """Gradient x input per token for a classifier: ``(scores [T], label, probs)``;
    ``label`` defaults to the predicted class."""
    tasks.require(run.task, "interpret", run.path)
    params = dequantize_params(run.params)
    model = run.model
    n_labels = run.model_config.num_labels
    if label is not None and not 0 <= int(label) < n_labels:
        raise ValueError(f"label {label} out of range for {n_labels} classes")

    @jax.jit
    def explain(params, x_BT, label):  # one program: the logits and the chosen logit's gradient
        def logits_fn(delta):
            return model.apply({"params": params}, x_BT, embed_delta=delta).logits[0]

        zero = jnp.zeros((*x_BT.shape, run.model_config.d_model), jnp.float32)
        logits, pullback = jax.vjp(logits_fn, zero)
        chosen = jnp.where(label < 0, jnp.argmax(logits), label)
        (grad,) = pullback(jax.nn.one_hot(chosen, logits.shape[-1], dtype=logits.dtype))
        return logits, chosen, grad[0]

    logits, chosen, grad = explain(params, jnp.asarray(ids)[None], jnp.int32(-1 if label is None else label))
    probs = np.asarray(jax.nn.softmax(logits))
    label = int(chosen)
    emb = _input_embeddings(params, run, ids)
    return np.asarray(jnp.sum(grad * emb, axis=-1)), label, probs


def _input_embeddings(params: Any, run: Run, ids: np.ndarray) -> jax.Array:
    tr = params["transformer"]
    emb = jnp.asarray(tr["wte"]["embedding"])[ids]
    if run.model_config.position == "learned":
        emb = emb + jnp.asarray(tr["wpe"]["embedding"])[: len(ids)]
    return emb.astype(jnp.float32)


def render_saliency(scores: np.ndarray, labels: Sequence[str], path: str, title: str = "") -> str:
    T = len(labels)
    fig = Figure(figsize=(max(4.0, 0.18 * T), 2.6))
    ax = fig.subplots()
    lim = max(float(np.abs(scores).max()), 1e-9)
    ax.bar(range(T), scores, color=["tab:red" if s < 0 else "tab:green" for s in scores])
    ax.set_ylim(-lim * 1.05, lim * 1.05)
    ax.set_xticks(range(T), labels, rotation=90, fontsize=6)
    ax.set_ylabel("gradient x input")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
