"""Builds ``benchmarks/RESULTS.md`` from ``benchmarks/results/*.json``.

Every table and number in RESULTS.md is rendered here from a JSON file a
benchmark wrote; nothing is typed in by hand. A benchmark with its own layout
renders its section itself (``section(payload)`` in its module, imported here);
the benchmark modules never import this one (they rebuild RESULTS.md through
``common.rebuild_results_md``, a child process), so the imports run one way. Interpretation that does not
change with the figures lives in ``benchmarks/notes/<key>.md`` and is placed
under its section. Sections whose JSON is missing say which command makes it.

    python -m benchmarks report           # rebuild RESULTS.md (no benchmark is run)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from benchmarks import (aeslc_recipe, allocator_ab, attention_products, attention_report, data, demo, device_check,
                        generate, imdb_ablation, imdb_baselines, imdb_curve, imdb_hybrid, imdb_recipe, kernel_variants,
                        kvret_recipe, lra, multi30k_recipe, squad_recipe, step_gemms, step_parts)
from benchmarks.common import RESULTS_DIR, machine_line, markdown_table

ROOT = Path(__file__).resolve().parent
NOTES_DIR = ROOT / "notes"
RESULTS_MD = RESULTS_DIR.parent / "RESULTS.md"


def load(key: str) -> dict[str, Any] | None:
    path = RESULTS_DIR / f"{key}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _command(payload: dict[str, Any], default: str) -> str:
    return payload.get("command") or payload.get("meta", {}).get("command") or default


def _rows_section(title: str, default_command: str, columns: list[str] | None = None,
                  extra: Callable[[dict[str, Any]], list[str]] | None = None) -> Callable[[dict[str, Any]], str]:
    def render(payload: dict[str, Any]) -> str:
        rows = payload.get("rows", [])
        cols = columns or payload.get("columns") or (list(rows[0]) if rows else [])
        lines = [f"## {title}", "", f"`{_command(payload, default_command)}` — {machine_line(payload['machine'])}.",
                 "", markdown_table(rows, cols)]
        if extra:
            lines += [""] + extra(payload)
        return "\n".join(lines)

    return render


def _train_step_extra(payload: dict[str, Any], key: str = "train_step") -> list[str]:
    """Plot, then per (length, dtype): block-sparse vs the fastest dense JAX row (and the
    FLOPs ratio that predicts), vs PyTorch eager on the same sparse model, and dense MFU."""
    rows = payload["rows"]
    out = []
    png = plot_train_step(payload, key)
    if png:
        out += [f"![tokens/s by sequence length](results/{png.name})", ""]
    fpt = lambda r: r["tflops_per_s"] * 1e12 / r["tokens_per_s"]  # noqa: E731  model FLOPs per token
    for T, dt in sorted({(r["seq_len"], r["compute_dtype"]) for r in rows}):
        sel = [r for r in rows if r["seq_len"] == T and r["compute_dtype"] == dt]
        jax_rows = [r for r in sel if r.get("framework", "jax") == "jax"]
        jax_steps = [r for r in jax_rows if r.get("pass", "step") == "step"]
        dense = max((r for r in jax_steps if r["attention"].startswith("dense")), key=lambda r: r["tokens_per_s"],
                    default=None)
        sparse = next((r for r in jax_steps if r["attention"].startswith("window_global")), None)
        parts = []
        if dense:
            parts.append(f"best dense JAX ({dense['attention']}) MFU {100 * dense['mfu']:.1f}%")
        if dense and sparse:
            achieved, predicted = sparse["tokens_per_s"] / dense["tokens_per_s"], fpt(dense) / fpt(sparse)
            done = lambda r: r.get("computed_gflops_per_token", fpt(r) / 1e9)  # noqa: E731  FLOPs it computes
            computed = done(dense) / done(sparse)
            parts.append(f"block-sparse {achieved:.2f}x its tokens/s, {100 * achieved / computed:.0f}% of the "
                         f"{computed:.2f}x the ratio of computed FLOPs predicts ({100 * achieved / predicted:.0f}% "
                         f"of {predicted:.2f}x counting dense as the whole score matrix)")
        step = lambda fw, kind: next((r for r in sel if r.get("framework") == fw  # noqa: E731
                                      and r.get("pass", "step") == "step" and r["attention"].startswith(kind)), None)
        for fw in ("torch eager", "torch compile"):
            peer = step(fw, "window")
            if sparse and peer:
                parts.append(f"block-sparse {sparse['tokens_per_s'] / peer['tokens_per_s']:.2f}x PyTorch "
                             f"{fw.split()[1]} on the same model (SDPA, token mask)")
        dense_peer = step("torch compile", "dense")
        if dense and dense_peer:
            parts.append(f"dense {dense['tokens_per_s'] / dense_peer['tokens_per_s']:.2f}x PyTorch compile's dense step")
        floor, floor_peer = step("jax", "none"), step("torch compile", "none")
        if dense and dense_peer and floor and floor_peer:  # the attention-free diagnostic on both sides
            theirs = dense_peer["step_ms"] - floor_peer["step_ms"]
            parts.append(f"without attention {floor['step_ms']:,.0f} vs {floor_peer['step_ms']:,.0f} ms "
                         f"({floor_peer['step_ms'] / floor['step_ms']:.2f}x torch.compile); attention costs us "
                         f"{dense['step_ms'] - floor['step_ms']:,.0f} ms, torch.compile {theirs:,.0f} ms; with "
                         f"attention as fast as torch.compile's the dense step would be "
                         f"{dense_peer['step_ms'] / (floor['step_ms'] + theirs):.2f}x")
        ours_fwd = next((r for r in jax_rows if r.get("pass") == "forward"), None)
        flex = next((r for r in sel if r.get("pass") == "forward" and "FlexAttention" in r["attention"]), None)
        if ours_fwd and flex:
            parts.append(f"block-sparse forward {ours_fwd['tokens_per_s'] / flex['tokens_per_s']:.2f}x the exported "
                         "model's forward with compiled FlexAttention")
        if parts:
            out.append(f"- {T} tokens, {dt}: " + "; ".join(parts) + ".")
    return out


def plot_train_step(payload: dict[str, Any], key: str = "train_step") -> Path | None:
    rows = [r for r in payload.get("rows", []) if r.get("tokens_per_s")]
    if len({r["seq_len"] for r in rows}) < 2:
        return None
    import matplotlib  # lazy: only when there is a curve to plot (the report renders tables without it)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after matplotlib.use("Agg"): no display backend

    fig, ax = plt.subplots(figsize=(6.5, 4))
    series: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        label = f"{r.get('framework', 'jax')} {r['attention']} {r['compute_dtype']}"
        series.setdefault(label, []).append((r["seq_len"], r["tokens_per_s"]))
    for label, pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length")
    ax.set_ylabel("training tokens/s")
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = RESULTS_DIR / f"{key}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _allocator_ab(base: str = "train_step_tuned", base_label: str = "tuned",
                  this_label: str = "default") -> Callable[[dict[str, Any]], str]:
    """The host-allocator A/B: each row of this run beside the same row of ``base`` (a run
    with the entry point's setting of its day), in tokens/s."""

    def render(payload: dict[str, Any]) -> str:
        command = _command(payload, f"python -m benchmarks.train_step --allocator {this_label}")
        lines = [f"## Training step: the host allocator A/B ({base_label} / {this_label})", "",
                 f"`{command}` against the same rows of `{base}` — {machine_line(payload['machine'])}.", ""]
        other = load(base)
        if other is None:
            return "\n".join(lines + [f"(`{base}` is not run yet: no A/B.)"])
        key = lambda r: (r.get("framework", "jax"), r.get("pass", "step"), r["attention"], r["seq_len"],  # noqa: E731
                         r["compute_dtype"])
        by_key = {key(r): r for r in other["rows"]}
        rows = []
        for r in payload["rows"]:
            t = by_key.get(key(r))
            if t is None:
                continue
            rows.append({"framework": r.get("framework", "jax"), "pass": r.get("pass", "step"),
                         "attention": r["attention"], "seq_len": r["seq_len"], "compute_dtype": r["compute_dtype"],
                         f"tokens_per_s {base_label}": t["tokens_per_s"],
                         f"tokens_per_s {this_label}": r["tokens_per_s"],
                         f"{base_label} / {this_label}": t["tokens_per_s"] / r["tokens_per_s"],
                         f"faults {base_label}": t.get("faults_per_step"),
                         f"faults {this_label}": r.get("faults_per_step")})
        cols = ["framework", "pass", "attention", "seq_len", "compute_dtype", f"tokens_per_s {base_label}",
                f"tokens_per_s {this_label}", f"{base_label} / {this_label}", f"faults {base_label}",
                f"faults {this_label}"]
        return "\n".join(lines + [markdown_table(rows, cols)])

    return render


def _attention(tag: str, title: str | None = None) -> Callable[[dict[str, Any]], str]:
    def render(payload: dict[str, Any]) -> str:
        return attention_report.section(payload, f"attention_{tag}", title)

    return render


WINDOW_GLOBAL_TITLE = "Attention: window+global at 8k and 16k (bfloat16), against FlexAttention"

# (key = results/<key>.json, title, the command that makes it, renderer), in RESULTS.md order.
SECTIONS: list[tuple[str, str, str, Callable[[dict[str, Any]], str]]] = [
    ("train_step", "Training step: tokens/s and MFU, JAX and PyTorch",
     "python -m benchmarks.train_step", None),
    ("train_step_bf16", "Training step, bfloat16, every GEMM in bf16: JAX vs PyTorch (SDPA)",
     "python -m benchmarks.train_step --seq-lens 1024 4096 8192 --attention dense_blocked sparse --dtypes bfloat16 "
     "--torch compile --tokens-per-step 8192 --repeats 2 --name train_step_bf16", None),
    ("train_step_bf16_rerun", "Training step, bfloat16, every GEMM in bf16: the 4k block-sparse rows again",
     "python -m benchmarks.train_step --seq-lens 4096 --attention sparse --dtypes bfloat16 --torch compile "
     "--tokens-per-step 8192 --repeats 2 --name train_step_bf16_rerun", None),
    ("train_step_tuned", "Training step, bfloat16: JAX vs PyTorch (SDPA, compiled FlexAttention), allocator tuned "
     "(before the backward's GEMMs ran in bf16)",
     "python -m benchmarks.train_step --seq-lens 1024 4096 8192 --attention dense_blocked sparse --dtypes bfloat16 "
     "--torch eager compile --flex --tokens-per-step 8192 --repeats 2 --name train_step_tuned", None),
    ("train_step_default_alloc", "Training step: the host allocator A/B",
     "python -m benchmarks.train_step --seq-lens 1024 8192 --attention dense_blocked sparse --dtypes bfloat16 "
     "--torch eager --tokens-per-step 8192 --repeats 2 --allocator default --name train_step_default_alloc",
     _allocator_ab()),
    ("train_step_heap", "Training step, bfloat16: JAX vs torch.compile, every buffer from the heap "
     "(allocator tuned)",
     "python -m benchmarks.train_step --seq-lens 1024 8192 --attention dense_blocked sparse --dtypes bfloat16 "
     "--torch compile --tokens-per-step 8192 --repeats 2 --name train_step_heap", None),
    ("train_step_capped", "Training step: the host allocator A/B (tuned / capped)",
     "python -m benchmarks.train_step --seq-lens 1024 8192 --attention dense_blocked --dtypes bfloat16 --torch compile "
     "--tokens-per-step 8192 --repeats 2 --allocator capped --name train_step_capped",
     _allocator_ab("train_step_heap", "tuned", "capped")),
    ("allocator_ab", "Host allocator A/B: the training step in alternated processes",
     "python -m benchmarks.allocator_ab", allocator_ab.section),
    ("train_step_tiles", "Training step, bfloat16: dense through the block kernel with the auto tile, vs torch.compile",
     "python -m benchmarks.train_step --seq-lens 1024 8192 --attention dense_blocked --dtypes bfloat16 --torch compile "
     "--tokens-per-step 8192 --repeats 3 --name train_step_tiles", None),
    ("train_step_floor", "Training step, bfloat16: the floor without attention, JAX and torch.compile",
     "python -m benchmarks.train_step --seq-lens 1024 8192 --attention dense_blocked none --dtypes bfloat16 "
     "--torch compile --tokens-per-step 8192 --repeats 3 --name train_step_floor", None),
    ("train_step_gpu", "Training step on a GPU: Pallas block-sparse vs cuDNN dense",
     "python -m benchmarks.train_step --seq-lens 1024 2048 4096 8192 --dtypes bfloat16 --tokens-per-step 8192 "
     "--attention dense_fused dense_blocked sparse --name train_step_gpu", None),
    ("device_check", "One-shot GPU check", "python -m benchmarks.device_check", device_check.section),
    ("step_parts", "Where the dense step's time goes", "python -m benchmarks.step_parts", step_parts.section),
    ("step_parts_default_alloc", "Where the dense step's time goes: glibc's default allocator",
     "python -m benchmarks.step_parts --dtypes bfloat16 --repeats 3 --allocator default --name step_parts_default_alloc",
     step_parts.section),
    ("kernel_variants", "Kernel variants: chunk size and weight-gradient layouts", "python -m benchmarks.kernel_variants",
     kernel_variants.section),
    ("kernel_variants_dense_tile", "Dense causal attention: the block kernel's tile (impl auto on CPU)",
     "python -m benchmarks.kernel_variants --study dense_tile", kernel_variants.section),
    ("attention_products", "Attention products alone: the ceiling of a kernel built from XLA:CPU's dots",
     "python -m benchmarks.attention_products", attention_products.section),
    ("step_gemms", "The training step's GEMMs alone: XLA:CPU against PyTorch on the same shapes",
     "python -m benchmarks.step_gemms", step_gemms.section),
    ("forward", "Forward throughput (model only)", "python -m benchmarks.forward", None),
    ("generate", "Generation: KV cache vs recompute vs Hugging Face", "python -m benchmarks.generate --sparse",
     generate.section),
    ("attention_float32", "Attention: block-sparse vs dense (float32)",
     "python -m benchmarks.attention --dtype float32", _attention("float32")),
    ("attention_bfloat16", "Attention: block-sparse vs dense (bfloat16)",
     "python -m benchmarks.attention --dtype bfloat16", _attention("bfloat16")),
    ("attention_bfloat16_wg", WINDOW_GLOBAL_TITLE,
     "python -m benchmarks.attention --dtype bfloat16 --lengths 8192 16384 --layouts window_global --no-memory",
     _attention("bfloat16_wg", WINDOW_GLOBAL_TITLE)),
    ("attention_bfloat16_wg_rerun", WINDOW_GLOBAL_TITLE + ": rerun after the dq fix (a slower machine)",
     "python -m benchmarks.attention --dtype bfloat16 --lengths 8192 16384 --layouts window_global --no-memory",
     _attention("bfloat16_wg_rerun", WINDOW_GLOBAL_TITLE + ": rerun after the dq fix (a slower machine)")),
    ("attention_bfloat16_wg_bits", WINDOW_GLOBAL_TITLE + ": the kernel moving bf16 as bits",
     "python -m benchmarks.attention --dtype bfloat16 --lengths 8192 16384 --layouts window_global --no-memory",
     _attention("bfloat16_wg_bits", WINDOW_GLOBAL_TITLE + ": the kernel moving bf16 as bits")),
    ("attention_bfloat16_wg_delta", WINDOW_GLOBAL_TITLE + ": the backward's delta before the loop",
     "python -m benchmarks.attention --dtype bfloat16 --lengths 8192 16384 --layouts window_global --no-memory",
     _attention("bfloat16_wg_delta", WINDOW_GLOBAL_TITLE + ": the backward's delta before the loop")),
    ("attention_bfloat16_wg_delta_rerun", WINDOW_GLOBAL_TITLE + ": the backward's delta before the loop, rerun",
     "python -m benchmarks.attention --dtype bfloat16 --lengths 8192 16384 --layouts window_global --no-memory",
     _attention("bfloat16_wg_delta_rerun", WINDOW_GLOBAL_TITLE + ": the backward's delta before the loop, rerun")),
    ("attention_bfloat16_wg_qt", WINDOW_GLOBAL_TITLE + ": the backward's K Q^T and V dO^T on transposed copies",
     "python -m benchmarks.attention --dtype bfloat16 --lengths 8192 16384 --layouts window_global --no-memory",
     _attention("bfloat16_wg_qt", WINDOW_GLOBAL_TITLE + ": the backward's K Q^T and V dO^T on transposed copies")),
    ("attention_bfloat16_wg_qt_rerun", WINDOW_GLOBAL_TITLE + ": the backward's transposed copies, rerun (a quiet hour)",
     "python -m benchmarks.attention --dtype bfloat16 --lengths 8192 16384 --layouts window_global --no-memory",
     _attention("bfloat16_wg_qt_rerun", WINDOW_GLOBAL_TITLE + ": the backward's transposed copies, rerun (a quiet hour)")),
    ("lra", "Long-range accuracy (LRA-style): dense vs block-sparse", "python -m benchmarks.lra", lra.section),
    ("demo", "The demo", "python -m benchmarks.demo", demo.section),
    ("imdb_recipe", "The IMDb recipe", "python -m benchmarks.imdb_recipe", imdb_recipe.section),
    ("imdb_curve", "IMDb: accuracy against LM pretraining", "python -m benchmarks.imdb_curve", imdb_curve.section),
    ("imdb_ablation", "IMDb: ablation of the levers (validation)", "python -m benchmarks.imdb_ablation",
     imdb_ablation.section),
    ("imdb_baselines", "IMDb: linear baselines on the recipe's splits", "python -m benchmarks.imdb_baselines",
     imdb_baselines.section),
    ("imdb_hybrid", "IMDb: the Transformer and NBSVM stacked (a hybrid teacher)", "python -m benchmarks.imdb_hybrid",
     imdb_hybrid.section),
    ("multi30k_recipe", "Multi30k en->de", "python -m benchmarks.multi30k_recipe",
     multi30k_recipe.section),
    ("aeslc_recipe", "AESLC email subject lines: summarization", "python -m benchmarks.aeslc_recipe",
     aeslc_recipe.section),
    ("kvret_recipe", "KVRET in-car assistant: knowledge-grounded dialogue", "python -m benchmarks.kvret_recipe",
     kvret_recipe.section),
    ("squad_recipe", "SQuAD v1.1 extractive question answering", "python -m benchmarks.squad_recipe",
     squad_recipe.section),
    ("compression", "Compression", "python -m benchmarks.compression", None),
    ("interop", "Interoperability", "python -m benchmarks.interop", None),
    ("data", "Data", "python -m benchmarks.data", data.section),
]


def _renderer(key: str, title: str, command: str, fn) -> Callable[[dict[str, Any]], str]:
    if fn is not None:
        return fn
    extra = (lambda payload: _train_step_extra(payload, key)) if key.startswith("train_step") else None
    return _rows_section(title, command, extra=extra)


def build(path: Path = RESULTS_MD) -> str:
    """Writes RESULTS.md from the JSON results; returns its text."""
    parts = ["# Results", "",
             "Generated by `python -m benchmarks report` (or `memgpt-jax bench`) from `benchmarks/results/*.json`; "
             "each section names the command that produced its JSON and the machine it ran on. Machines are "
             "shared and noisy: compare ratios measured side by side in one run.", ""]
    index = []
    body = []
    for key, title, command, fn in SECTIONS:
        payload = load(key)
        index.append(f"- {title}" + ("" if payload else f" (not run yet: `{command}`)"))
        if payload is None:
            continue
        text = _renderer(key, title, command, fn)(payload).strip()
        note = NOTES_DIR / f"{key}.md"
        if note.exists():
            text += "\n\n" + note.read_text().strip()
        body.append(text)
    parts += index + [""] + ["\n\n".join(body)]
    text = "\n".join(parts).rstrip() + "\n"
    path.write_text(text)
    return text


if __name__ == "__main__":
    build()
    print(f"wrote {RESULTS_MD}")
