"""Magnitude pruning: unstructured (global or per layer) and 2:4 structured.

Only the kernels of linear maps are pruned (attention projections, MLP,
task heads); embeddings and norms are kept dense, as is usual. A pruned
weight is exactly zero. During recovery fine-tuning ``freeze_zeros`` keeps it
zero: its optimizer state records which weights were zero at the start and
masks every update, so pruned weights stay zero through any number of steps
(and the mask is checkpointed with the optimizer state, so resumes keep it).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

KINDS = ("global", "layer", "2:4")


def _prunable(path: tuple, leaf: Any) -> bool:
    return getattr(path[-1], "key", None) == "kernel" and np.ndim(leaf) >= 2


def _two_of_four(w: np.ndarray) -> np.ndarray:
    """Keeps the 2 largest |w| of every 4 consecutive inputs (per output column)."""
    m = w.reshape(-1, w.shape[-1])  # [in, out]
    rows = m.shape[0]
    if rows % 4:
        raise ValueError(f"2:4 pruning needs an input size divisible by 4, got {rows} (tensor {w.shape})")
    g = np.abs(m).reshape(rows // 4, 4, -1)
    order = np.argsort(-g, axis=1, kind="stable")
    keep = np.zeros_like(g, dtype=bool)
    np.put_along_axis(keep, order[:, :2], True, axis=1)
    return keep.reshape(w.shape)


def magnitude_masks(params: Any, sparsity: float = 0.5, kind: str = "global") -> Any:
    """Boolean keep-masks for the prunable kernels (``None`` elsewhere).

    ``kind``: ``"global"`` (one threshold over all kernels), ``"layer"`` (the same
    fraction of every kernel) or ``"2:4"`` (``sparsity`` is then 0.5 by construction).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown pruning kind {kind!r}; choose one of {KINDS}")
    if kind != "2:4" and not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    flat = jax.tree_util.tree_leaves_with_path(params)
    prunable = [np.asarray(leaf) for path, leaf in flat if _prunable(path, leaf)]
    threshold = None
    if kind == "global" and prunable:
        everything = np.concatenate([np.abs(w).ravel() for w in prunable])
        k = int(sparsity * everything.size)
        threshold = np.partition(everything, k)[k] if k > 0 else -1.0

    def mask(path: tuple, leaf: Any) -> Any:
        if not _prunable(path, leaf):
            return None
        w = np.asarray(leaf, np.float32)
        if kind == "2:4":
            return _two_of_four(w)
        if kind == "global":
            return np.abs(w) >= threshold if threshold >= 0 else np.ones_like(w, bool)
        k = int(sparsity * w.size)
        if k == 0:
            return np.ones_like(w, bool)
        cut = np.partition(np.abs(w).ravel(), k)[k]
        return np.abs(w) >= cut

    return jax.tree_util.tree_map_with_path(mask, params)


def apply_masks(params: Any, masks: Any) -> Any:
    return jax.tree.map(lambda p, m: p if m is None else jnp.where(m, p, 0).astype(p.dtype), params, masks,
                        is_leaf=lambda x: x is None)


def sparsity(params: Any) -> dict[str, float]:
    """Zero fraction over the prunable kernels and over all parameters."""
    zeros = total = kz = kt = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        a = np.asarray(leaf)
        z = int((a == 0).sum())
        zeros, total = zeros + z, total + a.size
        if _prunable(path, leaf):
            kz, kt = kz + z, kt + a.size
    return {"kernel_sparsity": kz / max(kt, 1), "overall_sparsity": zeros / max(total, 1)}


class FreezeZerosState(NamedTuple):
    keep: Any  # bool per parameter: False where the weight was zero at init


def freeze_zeros() -> optax.GradientTransformation:
    """Masks updates of the kernels that are exactly zero when the optimizer is created."""

    def init_fn(params: Any) -> FreezeZerosState:
        return FreezeZerosState(jax.tree_util.tree_map_with_path(
            lambda path, p: (p != 0) if _prunable(path, p) else jnp.ones((), bool), params))

    def update_fn(updates: Any, state: FreezeZerosState, params: Any = None):
        del params
        return jax.tree.map(lambda u, k: jnp.where(k, u, 0).astype(u.dtype), updates, state.keep), state

    return optax.GradientTransformation(init_fn, update_fn)
