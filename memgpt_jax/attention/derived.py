"""Block layouts chosen from a teacher's attention: fitting, building and scoring them.

``memgpt-jax layout derive`` runs a dense teacher over a sample of a split and adds up,
per layer and head, the attention probability that falls in each ``block x block`` tile
(:func:`block_mass`, a ``[layers, heads, n, n]`` array). This module turns such a mass
array into a layout under a budget of kept blocks, and builds the layout a model config
names:

- **band** (the default, :func:`fit_band`): per head a set of block *offsets* (query
  block ``i`` keeps key block ``i - d`` for each offset ``d``; ``0``, the diagonal, is
  always kept, so every query sees itself and causality stays exact), a set of
  absolute *global* key blocks, and ``dense_rows``: the first query blocks keep every
  earlier block (the global queries of window + global and BigBird, where attention is
  concentrated). All mean the same thing at any sequence length, so a
  layout measured at 2k tokens serves a model of 8k. Chosen by greedy fills (the
  candidate whose not-yet-kept tiles hold the most mass per tile, or the most mass,
  comes next) from several starts, then improved by swaps, within the budget.
- **map** (:func:`fit_map`, ``--raw``): per head the kept tiles themselves, the
  diagonal plus the tiles of most mass; it holds for sequences up to the measured length.

The budget is a *density*: kept tiles over all ``n x n`` tiles of the square score
matrix, per head (:meth:`BlockLayout.n_kept_blocks` / :attr:`BlockLayout.n_blocks`).
:func:`kept_mass` scores any layout (derived or fixed) against the same mass array.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

import numpy as np

from memgpt_jax.attention.block_layout import EMPTY, BlockLayout, padded_tiles
from memgpt_jax.attention.layout_patterns import derived as layout_from_spec
from memgpt_jax.attention.layout_patterns import head_map
from memgpt_jax.config import DERIVED_FORMAT, check_derived_spec

_EPS = 1e-12


def budget_blocks(density: float, n: int) -> int:
    """Kept tiles per head that ``density`` allows on an ``n x n`` block grid, rounded down (at
    least the diagonal, which every causal layout keeps)."""
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    return max(n, math.floor(density * n * n + 1e-3))  # never above it (a density printed to 6 digits aside)


def _cover(candidates: np.ndarray, chosen: set[int], base: np.ndarray) -> np.ndarray:
    kept = base.copy()
    for c in chosen:
        kept |= candidates[c]
    return kept


def _fill(mass: np.ndarray, candidates: np.ndarray, chosen: set[int], base: np.ndarray, budget: int,
          by_ratio: bool, affordable=None) -> set[int]:
    """Adds candidates greedily (most new mass per new tile, or most new mass) while the budget
    allows; with ``affordable`` (kept map -> bool, the kernel's tile budget) only candidates it accepts."""
    chosen = set(chosen)
    kept = _cover(candidates, chosen, base)
    while True:
        new = candidates & ~kept  # [C, n, n]
        cost = new.sum(axis=(1, 2))
        gain = (new * mass).sum(axis=(1, 2))
        ok = (cost > 0) & (cost <= budget - kept.sum()) & (gain > _EPS)
        score = np.where(ok, gain / np.maximum(cost, 1) if by_ratio else gain, -np.inf)
        best = next((int(c) for c in np.argsort(-score, kind="stable") if ok[c]
                     and (affordable is None or affordable(kept | candidates[c]))), None)
        if best is None:
            return chosen
        chosen.add(best)
        kept |= candidates[best]


def _improve(mass: np.ndarray, candidates: np.ndarray, chosen: set[int], base: np.ndarray, budget: int,
             affordable=None) -> set[int]:
    """Swaps one chosen candidate for one or more others while that keeps more mass within the budget."""
    best_mass = float(mass[_cover(candidates, chosen, base)].sum())
    improved = True
    while improved:
        improved = False
        for c in sorted(chosen):
            trial = _fill(mass, candidates, chosen - {c}, base, budget, by_ratio=True, affordable=affordable)
            value = float(mass[_cover(candidates, trial, base)].sum())
            if value > best_mass + _EPS:
                chosen, best_mass, improved = trial, value, True
                break
    return chosen


def fit_band(mass: np.ndarray, density: float, *, max_tiles: int | None = None,
             floor_counts: np.ndarray | None = None) -> dict[str, list[int]]:
    """One head's band layout from its block mass ``[n, n]`` (causal: mass above the diagonal
    is ignored): ``{"offsets": [...], "globals": [...]}`` within the budget of ``density``.

    The search: greedy fills (most mass per new tile; most mass) from nothing and from every
    window + leading-globals start that fits (so the fixed window + global layouts are among
    the starts: a derived layout never keeps less of the mass than the best of them at the
    same budget), the best improved by swapping out one offset or global at a time.

    ``max_tiles``: a second budget, the tiles the XLA kernel computes
    (:func:`~memgpt_jax.attention.block_layout.padded_tiles` of the row counts, each at
    least ``floor_counts``, the layer's other heads: the kernel pads a row to its longest
    across heads). Kept blocks count what a layout keeps; padded tiles what it costs to run."""
    n = mass.shape[0]
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    lower = j <= i
    mass = np.where(lower, mass, 0.0)
    offsets = [(i - j == d) for d in range(1, n)]
    globals_ = [(j == g) & lower for g in range(n)]
    dense_rows = [(i < r) & lower for r in range(2, n + 1)]  # the first r query blocks see everything before
    candidates = np.stack(offsets + globals_ + dense_rows)
    base, budget = i == j, budget_blocks(density, n)
    affordable = None
    if max_tiles is not None:
        floor = np.zeros(n, np.int64) if floor_counts is None else np.asarray(floor_counts, np.int64)
        affordable = lambda kept: padded_tiles(np.maximum(kept.sum(axis=1), floor)) <= max_tiles  # noqa: E731
        if not affordable(base):
            raise ValueError(f"a budget of {max_tiles} kernel tiles is below what the diagonal alone costs "
                             f"({padded_tiles(np.maximum(1, floor))} tiles)")
    starts = [set()]
    for w in range(n):
        for g in range(n + 1):
            start = set(range(w)) | {len(offsets) + k for k in range(g)}
            kept = _cover(candidates, start, base)
            if kept.sum() <= budget and (affordable is None or affordable(kept)):
                starts.append(start)
    best, best_mass = set(), -1.0
    for start in starts:
        for by_ratio in (True, False):
            chosen = _fill(mass, candidates, start, base, budget, by_ratio, affordable)
            value = float(mass[_cover(candidates, chosen, base)].sum())
            if value > best_mass + _EPS:
                best, best_mass = chosen, value
    best = _improve(mass, candidates, best, base, budget, affordable)
    for c in sorted(best):  # drop what the others cover anyway
        if np.array_equal(_cover(candidates, best - {c}, base), _cover(candidates, best, base)):
            best = best - {c}
    n_band = len(offsets) + len(globals_)
    head = {"offsets": [0] + sorted(c + 1 for c in best if c < len(offsets)),
            "globals": sorted(c - len(offsets) for c in best if len(offsets) <= c < n_band)}
    rows = [c - n_band + 2 for c in best if c >= n_band]
    if rows:
        head["dense_rows"] = max(rows)
    return head


def fit_map(mass: np.ndarray, density: float) -> dict[str, list[list[int]]]:
    """One head's raw map: the diagonal, then the causal tiles of most mass, within the budget."""
    n = mass.shape[0]
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    keep = i == j
    room = budget_blocks(density, n) - n
    order = np.argsort(-np.where((j < i), mass, -np.inf), axis=None, kind="stable")
    for flat in order[:max(room, 0)]:
        r, c = divmod(int(flat), n)
        if c < r:
            keep[r, c] = True
    return {"rows": [np.flatnonzero(keep[r]).tolist() for r in range(n)]}


def kept_mass(mass_HNN: np.ndarray, layout: BlockLayout) -> np.ndarray:
    """Share of each head's attention mass ``[heads, n, n]`` inside ``layout``'s kept tiles: ``[heads]``.

    Partial tiles (the diagonal) count whole: the mass array is measured with causal
    attention, which puts nothing above the diagonal."""
    kept = layout.codes != EMPTY  # [1 or heads, n, n]
    n = kept.shape[-1]
    if mass_HNN.shape[-1] < n:
        raise ValueError(f"the mass array covers {mass_HNN.shape[-1]} blocks, the layout {n}")
    mass = mass_HNN[:, :n, :n]
    kept = np.broadcast_to(kept, mass.shape)
    return (mass * kept).sum(axis=(1, 2)) / np.maximum(mass.sum(axis=(1, 2)), _EPS)


def group_mass(mass_LHNN: np.ndarray, layers: int, heads: int) -> np.ndarray:
    """Mass of ``L`` teacher layers and ``H`` heads averaged into ``layers x heads`` groups of
    consecutive layers and heads (a student of another depth or width; ``heads=1``: one layout
    shared by a layer's heads)."""
    L, H = mass_LHNN.shape[:2]
    for name, want, have in (("layers", layers, L), ("heads", heads, H)):
        if not 1 <= want <= have:
            raise ValueError(f"--{name} {want}: must be in 1..{have} (the teacher's {name})")
    by_layer = np.stack([g.mean(axis=0) for g in np.array_split(mass_LHNN, layers, axis=0)])
    return np.stack([g.mean(axis=1) for g in np.array_split(by_layer, heads, axis=1)], axis=1)


# A layer's heads share one band layout unless their own layouts keep more than this share of the
# teacher's mass (averaged over the heads) beyond it. Per-head layouts cost the XLA kernel a gather
# per head: on ListOps at density 0.12 (32 kernel tiles each, B=16, 2k tokens), a student whose
# second layer had two head layouts stepped in 822 ms against window + global's 738 (1.11x), with
# the shared fit keeping the same 70.0% of the mass (`python -m benchmarks.derived_layouts --task
# listops --densities 0.3 0.12` at commit 04b891a, before this rule; that row was then replaced).
SHARE_TOLERANCE = 0.005


def fit(mass_LHNN: np.ndarray, density: float, *, block: int, raw: bool = False,
        max_tiles: int | None = None, share_tolerance: float = SHARE_TOLERANCE) -> dict[str, Any]:
    """The derived spec (``block_size``, ``kind``, ``seq_len``, ``layers``) of a mass array.

    ``max_tiles`` (band layouts): each layer costs the XLA kernel at most this many tiles per
    head (:attr:`BlockLayout.kernel_tiles`); the heads are fitted in turn, each within what
    the earlier ones already pad the rows to. ``share_tolerance``: a band layer whose heads'
    own layouts keep no more than this share of the mass beyond one layout fitted to their mean
    mass gets that one layout in every head (:data:`SHARE_TOLERANCE`)."""
    n = mass_LHNN.shape[-1]
    if raw and max_tiles is not None:
        raise ValueError("max_tiles applies to band layouts, not --raw maps")
    layers = []
    for layer in mass_LHNN:
        if raw:
            layers.append([fit_map(m, density) for m in layer])
            continue
        heads, floor = [], np.zeros(n, np.int64)
        for m in layer:
            head = fit_band(m, density, max_tiles=max_tiles, floor_counts=floor)
            floor = np.maximum(floor, head_map(head, "band", n).sum(axis=1))
            heads.append(head)
        if len(heads) > 1 and any(h != heads[0] for h in heads[1:]):
            shared = fit_band(layer.mean(axis=0), density, max_tiles=max_tiles)
            own = np.mean([_band_mass(m, h, n) for m, h in zip(layer, heads)])
            if np.mean([_band_mass(m, shared, n) for m in layer]) >= own - share_tolerance:
                heads = [dict(shared) for _ in heads]
        layers.append(heads)
    spec = {"block_size": int(block), "kind": "map" if raw else "band", "seq_len": int(n * block), "layers": layers}
    check_derived_spec(spec, "the fitted layout")
    return spec


def _band_mass(mass: np.ndarray, head: Mapping[str, Any], n: int) -> float:
    """Share of one head's mass ``[n, n]`` inside a band head's kept tiles."""
    return float((mass * head_map(head, "band", n)).sum() / max(float(mass.sum()), _EPS))


def summarize(spec: Mapping[str, Any], mass_LHNN: np.ndarray) -> dict[str, Any]:
    """Per head and overall: the teacher's attention mass kept and the density, at the measured length;
    per layer the tiles the XLA kernel computes per head (:attr:`BlockLayout.kernel_tiles`)."""
    n = mass_LHNN.shape[-1]
    seq = n * int(spec["block_size"])
    per_mass, per_density, per_tiles = [], [], []
    for li in range(len(spec["layers"])):
        lay = layout_from_spec(spec, li, seq)
        kept = np.broadcast_to(lay.codes != EMPTY, (mass_LHNN.shape[1], n, n))
        per_mass.append([round(float(x), 4) for x in kept_mass(mass_LHNN[li], lay)])
        per_density.append([round(float(k.sum()) / (n * n), 4) for k in kept])
        per_tiles.append(lay.kernel_tiles)
    return {"kept_mass": {"overall": round(float(np.mean(per_mass)), 4), "per_head": per_mass},
            "density": {"overall": round(float(np.mean(per_density)), 4), "per_head": per_density},
            "kernel_tiles": per_tiles}


def write_file(path: str, spec: Mapping[str, Any], mass_LHNN: np.ndarray, provenance: Mapping[str, Any]) -> dict:
    """Writes the layout file (JSON: the spec, its provenance and what it keeps) and the mass
    array beside it (``<path>.mass.npy``, for scoring other layouts); returns the payload."""
    payload = {"format": DERIVED_FORMAT, **spec, "provenance": dict(provenance),
               **summarize(spec, mass_LHNN), "mass_file": _mass_name(path)}
    np.save(_mass_path(path), mass_LHNN.astype(np.float32))
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
    return payload


def read_mass(path: str) -> np.ndarray:
    """The mass array written beside a layout file: ``float32 [layers, heads, n, n]``."""
    return np.load(_mass_path(path))


def _mass_name(path: str) -> str:
    return os.path.basename(path) + ".mass.npy"


def _mass_path(path: str) -> str:
    return os.path.join(os.path.dirname(path), _mass_name(path))


def summary_lines(payload: Mapping[str, Any], mass_LHNN: np.ndarray | None = None) -> list[str]:
    """What a layout file holds, for people: provenance, the mass kept, where the teacher's
    attention goes (with its mass array), and per layer and head what is kept."""
    prov = payload.get("provenance", {})
    lines = [f"{payload['kind']} layout, blocks of {payload['block_size']}, measured at {payload['seq_len']} tokens "
             f"on {prov.get('examples', '?')} examples of {prov.get('dataset', '?')}:{prov.get('split', '?')} "
             f"(teacher {prov.get('teacher', '?')} step {prov.get('teacher_step', '?')})",
             f"keeps {100 * payload['kept_mass']['overall']:.1f}% of the teacher's attention mass at density "
             f"{payload['density']['overall']:.3f} (kept blocks / all blocks)"]
    if payload.get("kernel_tiles"):  # files written before the kernel's count was recorded lack it
        budget = prov.get("max_kernel_tiles")
        lines.append("the XLA kernel computes " + ", ".join(f"{t}" for t in payload["kernel_tiles"])
                     + " tiles a head per layer (rows padded per group)"
                     + (f", within --max-kernel-tiles {budget}" if budget is not None else ""))
        asked = prov.get("density")
        if budget is not None and asked is not None and payload["density"]["overall"] < 0.9 * asked:
            lines.append(f"(density {payload['density']['overall']:.3f}, below the {asked:g} asked for: the kernel "
                         "budget bound first)")
    if mass_LHNN is not None:  # each head's share, averaged over layers and heads
        share = (mass_LHNN / np.maximum(mass_LHNN.sum(axis=(2, 3), keepdims=True), _EPS)).mean(axis=(0, 1))
        columns = share.sum(axis=0)
        top = np.argsort(-columns, kind="stable")[:3]
        lines.append(f"the teacher's attention: {100 * np.trace(share):.1f}% on the diagonal blocks; by key block "
                     + ", ".join(f"{int(j)}: {100 * columns[j]:.1f}%" for j in top))
    masses = payload["kept_mass"]["per_head"]
    for li, layer in enumerate(payload["layers"]):
        for hi, head in enumerate(layer):
            if payload["kind"] == "band":
                rows = f", dense rows 0..{head['dense_rows'] - 1}" if head.get("dense_rows") else ""
                kept = f"offsets {head['offsets']}, globals {head.get('globals', [])}{rows}"
            else:
                kept = f"{sum(len(r) for r in head['rows'])} tiles"
            lines.append(f"  layer {li} head {hi}: {kept} (mass {100 * masses[li][hi]:.1f}%)")
    return lines
