"""Builds ``benchmarks/RESULTS.md`` from ``benchmarks/results/*.json``.

RESULTS.md opens with the headline table (each figure beside its peer or published anchor,
the ratio, the CPU and date of the run, a link to its section), then has one section per
canonical benchmark (those of ``python -m benchmarks --list``). Every table and number is
rendered here from a JSON file a benchmark wrote; nothing is typed in by hand. A benchmark with
its own layout renders its run itself (``section(payload)`` in its module, imported here); the
benchmark modules never import this one (they rebuild RESULTS.md through
``common.rebuild_results_md``, a child process), so the imports run one way. Interpretation that
does not change with the figures lives in ``benchmarks/notes/<key>.md`` and is placed under its
run. A benchmark whose JSON is missing says which command makes it.

A section shows the current runs of its benchmark, newest first: the canonical command's
(``results/<benchmark>.json``) and the named partial runs listed here that are newer than it.
When a rerun supersedes a run, move that run's files to ``results/history/`` and drop it here;
earlier runs and finished studies are recorded in ``benchmarks/HISTORY.md``, which this module
never writes.

    python -m benchmarks report           # rebuild RESULTS.md (no benchmark is run)
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Callable

from benchmarks import (aeslc_recipe, attention_report, data, demo, derived_layouts, device_check, generate,
                        imdb_baselines, imdb_hybrid, imdb_recipe, kvret_recipe, lra, multi30k_recipe, squad_recipe,
                        task_recipes)
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
    for T in sorted({r["seq_len"] for r in rows}):  # peers at their best, where the run has both dtypes
        if not _both_dtypes(rows, T):
            continue
        parts = []
        for kind, what in (("window", "block-sparse"), ("dense", "dense")):
            ours, peer = best_steps(rows, T, kind)
            if ours and peer:
                parts.append(f"{what} {ours['tokens_per_s']:,.0f} tokens/s ({ours['compute_dtype']}) vs PyTorch's "
                             f"best {peer['tokens_per_s']:,.0f} ({peer['framework']}, {peer['compute_dtype']}): "
                             f"{_x(ours['tokens_per_s'], peer['tokens_per_s'])}")
        if parts:
            out.append(f"- {T} tokens, each side at its best dtype: " + "; ".join(parts) + ".")
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


def _attention(key: str, title: str) -> Callable[[dict[str, Any]], str]:
    def render(payload: dict[str, Any]) -> str:
        return attention_report.section(payload, key, title)

    return render


@dataclasses.dataclass(frozen=True)
class Run:
    """One results JSON of a benchmark: ``results/<key>.json``, the command that writes it."""
    key: str
    title: str
    command: str
    render: Callable[[dict[str, Any]], str] | None = None  # None: the rows table (train_step: with its ratios)


@dataclasses.dataclass(frozen=True)
class Benchmark:
    name: str  # as in ``python -m benchmarks --list``
    title: str
    runs: tuple[Run, ...]  # the canonical command's run first, then the named partial runs still current


WG = "--lengths 8192 16384 --layouts window_global --no-memory --name attention_wg"
WG_TITLE = "Window+global at 8k and 16k, f32 and bf16: peers at their best"
ALL_LAYOUTS = "Every layout and length, f32 and bf16"
ALL_LAYOUTS_BF16 = "Every layout and length (bfloat16 only, before the peers were measured in both dtypes)"
TRAIN_STEP_8K = "--dtypes bfloat16 --torch compile --tokens-per-step 8192"

# In RESULTS.md order.
BENCHMARKS: list[Benchmark] = [
    Benchmark("train_step", "Training step: tokens/s and MFU, JAX and PyTorch", (
        Run("train_step", "The full sweep", "python -m benchmarks.train_step"),
        Run("train_step_floor", "Dense step and its floor without attention, bfloat16, vs torch.compile",
            f"python -m benchmarks.train_step --seq-lens 1024 8192 --attention dense_blocked none {TRAIN_STEP_8K} "
            "--repeats 3 --name train_step_floor"),
        Run("train_step_sparse_8k", "Block-sparse step at 8k, each side at its best dtype (f32 and bf16), vs "
            "PyTorch eager and compiled",
            "python -m benchmarks.train_step --seq-lens 8192 --attention sparse --dtypes float32 bfloat16 "
            "--torch eager compile --tokens-per-step 8192 --repeats 2 --max-f32-len 0 --name train_step_sparse_8k"),
        Run("train_step_heap", "Dense and block-sparse steps, bfloat16, vs torch.compile",
            f"python -m benchmarks.train_step --seq-lens 1024 8192 --attention dense_blocked sparse {TRAIN_STEP_8K} "
            "--repeats 2 --name train_step_heap"),
        Run("train_step_gpu", "On a GPU: Pallas block-sparse vs cuDNN dense",
            "python -m benchmarks.train_step --seq-lens 1024 2048 4096 8192 --dtypes bfloat16 --tokens-per-step 8192 "
            "--attention dense_fused dense_blocked sparse --name train_step_gpu"))),
    Benchmark("forward", "Forward throughput (model only)", (
        Run("forward", "Forward throughput (model only)", "python -m benchmarks.forward"),)),
    Benchmark("generate", "Generation: KV cache vs recompute vs Hugging Face", (
        Run("generate", "Generation", "python -m benchmarks.generate --sparse", generate.section),)),
    Benchmark("attention", "Attention: block-sparse vs dense, FlexAttention and SDPA", (
        Run("attention", ALL_LAYOUTS, "python -m benchmarks.attention", _attention("attention", ALL_LAYOUTS)),
        Run("attention_wg", WG_TITLE, f"python -m benchmarks.attention {WG}", _attention("attention_wg", WG_TITLE)),
        Run("attention_bfloat16", ALL_LAYOUTS_BF16, "python -m benchmarks.attention --dtypes bfloat16 "
            "--name attention_bfloat16", _attention("attention_bfloat16", ALL_LAYOUTS_BF16)))),
    Benchmark("lra", "Long-range accuracy (LRA-style): dense vs block-sparse", (
        Run("lra", "LRA", "python -m benchmarks.lra", lra.section),)),
    Benchmark("derived_layouts", "Derived layouts: sparsity chosen from the teacher's attention", (
        Run("derived_layouts", "Derived layouts", "python -m benchmarks.derived_layouts", derived_layouts.section),)),
    Benchmark("demo", "The demo", (Run("demo", "The demo", "python -m benchmarks.demo", demo.section),)),
    Benchmark("imdb_recipe", "The IMDb recipe", (
        Run("imdb_recipe", "The IMDb recipe", "python -m benchmarks.imdb_recipe", imdb_recipe.section),)),
    Benchmark("imdb_baselines", "IMDb: linear baselines on the recipe's splits", (
        Run("imdb_baselines", "IMDb baselines", "python -m benchmarks.imdb_baselines", imdb_baselines.section),)),
    Benchmark("imdb_hybrid", "IMDb: the Transformer and NBSVM stacked (a hybrid teacher)", (
        Run("imdb_hybrid", "IMDb hybrid", "python -m benchmarks.imdb_hybrid", imdb_hybrid.section),)),
    Benchmark("multi30k_recipe", "Multi30k en->de: prompt->target fine-tuning and sequence-level distillation", (
        Run("multi30k_recipe", "Multi30k", "python -m benchmarks.multi30k_recipe", multi30k_recipe.section),)),
    Benchmark("aeslc_recipe", "AESLC email subject lines: summarization", (
        Run("aeslc_recipe", "AESLC", "python -m benchmarks.aeslc_recipe", aeslc_recipe.section),)),
    Benchmark("kvret_recipe", "KVRET in-car assistant: knowledge-grounded dialogue", (
        Run("kvret_recipe", "KVRET", "python -m benchmarks.kvret_recipe", kvret_recipe.section),)),
    Benchmark("squad_recipe", "SQuAD v1.1 extractive question answering", (
        Run("squad_recipe", "SQuAD", "python -m benchmarks.squad_recipe", squad_recipe.section),)),
    Benchmark("compression", "Compression", (Run("compression", "Compression", "python -m benchmarks.compression"),)),
    Benchmark("interop", "Interoperability", (Run("interop", "Interoperability", "python -m benchmarks.interop"),)),
    Benchmark("data", "Data", (Run("data", "Data", "python -m benchmarks.data", data.section),)),
    Benchmark("device_check", "One-shot GPU check", (
        Run("device_check", "One-shot GPU check", "python -m benchmarks.device_check", device_check.section),)),
]


def _date(payload: dict[str, Any]) -> str:
    return str(payload.get("machine", {}).get("date", ""))


def current_runs(bench: Benchmark) -> list[tuple[Run, dict[str, Any]]]:
    """The benchmark's runs that have JSON, newest first; a partial run older than the canonical
    command's is superseded by it and left out."""
    found = [(run, payload) for run in bench.runs if (payload := load(run.key)) is not None]
    canonical = next((p for run, p in found if run.key == bench.runs[0].key), None)
    if canonical is not None:
        found = [(run, p) for run, p in found if run.key == bench.runs[0].key or _date(p) > _date(canonical)]
    return sorted(found, key=lambda rp: _date(rp[1]), reverse=True)


def anchor(title: str) -> str:
    """GitHub's anchor of a ``## title`` heading."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def heading(bench: Benchmark) -> str:
    return f"{bench.title} ({bench.name})"


def _body(text: str) -> str:
    """A rendered run without the ``## ...`` heading its renderer starts with."""
    lines = text.strip().splitlines()
    if lines and lines[0].startswith("## "):
        lines = lines[1:]
    return "\n".join(lines).strip()


def _run_text(run: Run, payload: dict[str, Any]) -> str:
    render = run.render or _rows_section(run.title, run.command, extra=(
        (lambda p: _train_step_extra(p, run.key)) if run.key.startswith("train_step") else None))
    text = _body(render(payload))
    note = NOTES_DIR / f"{run.key}.md"
    if note.exists():
        text += "\n\n" + note.read_text().strip()
    return text


def section(bench: Benchmark) -> str | None:
    runs = current_runs(bench)
    if not runs:
        return None
    parts = [f"## {heading(bench)}"]
    note = NOTES_DIR / f"{bench.name}.md"
    if len(bench.runs) > 1 and note.exists():  # a benchmark of several runs: its note first, once
        parts.append(note.read_text().strip())
    for run, payload in runs:
        if len(bench.runs) > 1:
            parts.append(f"### {run.title}")
        parts.append(_run_text(run, payload))
    return "\n\n".join(parts)


# ---- the headline table: each figure from the newest current run that has it ----------------------

def _x(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x"


def _pct(v: float) -> str:
    return f"{100 * v:.2f}%"


def _both_dtypes(rows: list[dict[str, Any]], seq_len: int) -> bool:
    """Whether a training-step run measured ``seq_len`` in more than one dtype."""
    return len({r["compute_dtype"] for r in rows if r["seq_len"] == seq_len}) > 1


def best_steps(rows: list[dict[str, Any]], seq_len: int, kind: str) -> tuple[dict | None, dict | None]:
    """Our fastest JAX training step of ``kind`` (dense, window) at ``seq_len`` over the dtypes, and
    PyTorch's fastest on the same model (eager or compiled, any dtype): each at its best."""
    sel = [r for r in rows if r["seq_len"] == seq_len and r.get("pass", "step") == "step"
           and r["attention"].startswith(kind) and r.get("tokens_per_s")]
    fastest = lambda rs: max(rs, key=lambda r: r["tokens_per_s"], default=None)  # noqa: E731
    return (fastest([r for r in sel if r.get("framework", "jax") == "jax"]),
            fastest([r for r in sel if str(r.get("framework", "")).startswith("torch")]))


def _train_step_figure(seq_len: int, kind: str):
    """Our best JAX step of ``kind`` (dense, window) against PyTorch's best step, each at its best dtype."""
    def figure(payload: dict[str, Any]):
        ours, peer = best_steps(payload["rows"], seq_len, kind)
        if ours and peer:
            what = "block-sparse (window+global)" if kind == "window" else f"dense ({ours['attention']})"
            both = _both_dtypes(payload["rows"], seq_len)
            how = "each at its best dtype" if both else f"{ours['compute_dtype']} only"
            return (f"Training step, {what}, {seq_len // 1024}k tokens, {how}",
                    f"{ours['tokens_per_s']:,.0f} tokens/s ({ours['compute_dtype']})",
                    f"PyTorch's best, same model ({peer['framework']}, {peer['attention']}, {peer['compute_dtype']}): "
                    f"{peer['tokens_per_s']:,.0f} tokens/s", _x(ours["tokens_per_s"], peer["tokens_per_s"]))
    return figure


def _attention_figure(length: int, peer: str):
    """Ours against a peer, each at its best dtype (``flex``: same layout; ``sdpa``: dense causal)."""
    def figure(payload: dict[str, Any]):
        records = payload.get("records", [])
        ours = attention_report.best(records, impl="xla", mode="fwd", length=length, layout="window_global")
        other = (attention_report.best(records, impl="flex", mode="fwd", length=length, layout="window_global")
                 if peer == "flex" else attention_report.best(records, impl="sdpa", mode="fwd", length=length))
        if ours and other:
            name = "compiled FlexAttention" if peer == "flex" else "dense causal SDPA"
            return (f"Attention forward, window+global, {length // 1024}k tokens, each at its best dtype",
                    f"{1e3 * ours['median_s']:.1f} ms ({ours['dtype']})",
                    f"{name}: {1e3 * other['median_s']:.1f} ms ({other['dtype']})",
                    _x(other["median_s"], ours["median_s"]))
    return figure


def _lra_figure(task: str):
    def figure(payload: dict[str, Any]):
        rows = {r["attention"]: r for r in payload["rows"] if r["task"] == task}
        dense, sparse = rows.get("dense"), rows.get("bigbird")
        if not (dense and sparse):
            return None
        name = f"LRA {task} ({sparse['seq_len'] // 1024}k)"
        if task == "listops":
            published = lra.LRA_REFERENCE["BigBird"][0]
            return (f"{name}: block-sparse test accuracy (dense, same budget: {_pct(dense['test_accuracy'])})",
                    _pct(sparse["test_accuracy"]), f"LRA's published BigBird: {published}%",
                    _x(100 * sparse["test_accuracy"], published))
        return (f"{name}: block-sparse training tokens/s (test accuracy {_pct(sparse['test_accuracy'])}, "
                f"dense {_pct(dense['test_accuracy'])})", f"{sparse['train_tokens_per_s']:,.0f} tokens/s",
                f"dense, same model: {dense['train_tokens_per_s']:,.0f} tokens/s",
                _x(sparse["train_tokens_per_s"], dense["train_tokens_per_s"]))
    return figure


def _derived_figure(payload: dict[str, Any]):
    """The derived layout's kept teacher mass against the best fixed layout's, at the first density
    where both were measured."""
    rows = payload.get("rows", [])
    for task, target in dict.fromkeys((r["task"], r["target_density"]) for r in rows):
        by = {r["layout"]: r for r in rows if r["task"] == task and r["target_density"] == target
              and r.get("budget_scale", 1.0) == 1.0 and not r.get("seed")}  # equal density, seed 0
        fixed = [by[k] for k in ("window_global", "bigbird") if k in by]
        if "derived" in by and fixed:
            break
    else:
        return None
    d, best = by["derived"], max(fixed, key=lambda r: r["teacher_mass_kept"])
    return (f"Derived layout, {task}, density {d['density']:.3f}: teacher attention mass kept",
            _pct(d["teacher_mass_kept"]), f"best fixed layout ({best['layout']}, density {best['density']:.3f}): "
            f"{_pct(best['teacher_mass_kept'])}", _x(d["teacher_mass_kept"], best["teacher_mass_kept"]))


def _derived_quality_figure(task: str, sparser: bool):
    """The derived student's test accuracy against the best fixed student's, at equal density
    (``sparser`` False) or trained at 1.5x the derived density or more (the sparsest derived
    student that has such a peer), with the paired 95% interval of the difference."""
    def figure(payload: dict[str, Any]):
        rows = [r for r in payload.get("rows", []) if r["task"] == task and r.get("test_accuracy") is not None
                and not r.get("seed")]  # the seed-0 students; other seeds are in the section
        derived = sorted((r for r in rows if r["layout"] == "derived"), key=lambda r: r["density"])
        for d in derived:
            if sparser:
                best = (derived_layouts.sparser_best(d, rows, d["target_density"])  # the test
                        or derived_layouts.sparser_best(d, rows))
            else:
                best = derived_layouts.equal_best(d, rows) if d.get("budget_scale", 1.0) == 1.0 else None
            if best:
                break
        else:
            return None
        where = "1.5x its density or more" if sparser else "equal density"
        return (f"Derived layout, {task}, density {d['density']:.3f}: student test accuracy (difference "
                f"{derived_layouts.paired_text(d, best)})", _pct(d["test_accuracy"]),
                f"best fixed student at {where} ({best['layout']}, density {best['density']:.3f}): "
                f"{_pct(best['test_accuracy'])}", _x(d["test_accuracy"], best["test_accuracy"]))
    return figure


def _demo_figure(payload: dict[str, Any]):
    rows = {r["model"]: r for r in payload["rows"]}
    t, s = rows.get("teacher"), rows.get("student")
    if t and s:
        return (f"Demo (ListOps): block-sparse student test accuracy, {s['params'] / t['params']:.1%} of the "
                "teacher's parameters", _pct(s["accuracy"]), f"its dense teacher: {_pct(t['accuracy'])}",
                _x(s["accuracy"], t["accuracy"]))


def _imdb_figure(against: str):
    def figure(payload: dict[str, Any]):
        rows = {r["model"]: r for r in payload["rows"]}
        s, t = rows.get("student"), rows.get("teacher")
        hybrid = next((r for r in payload["rows"] if r["model"].startswith("hybrid")), None)
        published = imdb_baselines.PUBLISHED_NBSVM_BIGRAM
        nbsvm = f"published NBSVM-bigram: {published}% (official test set)"
        if against == "teacher" and s and t:
            return (f"IMDb: block-sparse student test-sample accuracy, {s['params'] / t['params']:.0%} of the "
                    "teacher's parameters", _pct(s["test_accuracy"]), f"its dense teacher: {_pct(t['test_accuracy'])}",
                    _x(s["test_accuracy"], t["test_accuracy"]))
        if against == "nbsvm" and s:
            return ("IMDb: block-sparse student test-sample accuracy", _pct(s["test_accuracy"]), nbsvm,
                    _x(100 * s["test_accuracy"], published))
        if against == "hybrid" and hybrid:
            return ("IMDb: hybrid teacher (Transformer + NBSVM-bigram) test-sample accuracy",
                    _pct(hybrid["test_accuracy"]), nbsvm, _x(100 * hybrid["test_accuracy"], published))
    return figure


def _multi30k_figure(payload: dict[str, Any]):
    beam = [r for r in payload["rows"] if r["decoding"] != "greedy"]
    t = next((r for r in beam if r["model"] == "teacher"), None)
    s = next((r for r in beam if r["model"] == "student"), None)
    if t and s:
        return (f"Multi30k en->de: block-sparse student BLEU, test_2016_flickr, {s['decoding']} "
                f"({s['params'] / t['params']:.0%} of the teacher's parameters; no published anchor recorded)",
                f"{s['test_bleu']:.2f}", f"its dense teacher: {t['test_bleu']:.2f}", _x(s["test_bleu"], t["test_bleu"]))


def _task_figure(name: str, column: str, published: float, whose: str):
    task = task_recipes.TASKS[name]

    def figure(payload: dict[str, Any]):
        models = [r for r in payload["rows"] if r["model"].startswith(("teacher", "student"))
                  and r.get(column) is not None]
        best = max(models, key=lambda r: r[column], default=None)
        if best:
            how = f"{best['model']}" + (f", {best['decoding']}" if "decoding" in best else "")
            return (f"{task.title.split()[0]}: {column} on {task.split}, the best model row ({how})",
                    f"{best[column]:.2f}", f"{whose}: {published}", _x(best[column], published))
    return figure


def _int8_figure(payload: dict[str, Any]):
    row = next((r for r in payload["rows"] if r["variant"] == "int8"), None)
    if row:
        return (f"int8 weights: validation {row['metric']} of a byte-level LM "
                f"({row['size_ratio']:.2f}x smaller on disk)", f"{row['after']:.3f}", f"float32: {row['before']:.3f}",
                _x(row["after"], row["before"]))


def _interop_figure(payload: dict[str, Any]):
    rows = payload["rows"]
    worst = max(rows, key=lambda r: r["max_abs_logit_diff"])
    greedy = "; every greedy continuation identical" if all(
        r["greedy_match"].split("/")[0] == r["greedy_match"].split("/")[1] for r in rows) else ""
    return (f"PyTorch export parity: largest logit difference over {len(rows)} exports "
            f"({worst['model']}, {worst['format']}){greedy}", f"{worst['max_abs_logit_diff']:.3g}",
            f"the largest logit: {worst['max_abs_logit']:.3g}",
            f"{worst['max_abs_logit_diff'] / worst['max_abs_logit']:.1e}")


def _generate_figure(peer: str):
    def figure(payload: dict[str, Any]):
        rows = payload["rows"]
        kv = rows[0]
        other = next((r for r in rows if r["method"].startswith(peer)), None)
        if other:
            name = ("recomputing every token" if peer == "jax recompute"
                    else "Hugging Face `generate` (exported weights)")
            return (f"Generation with the KV cache, {kv['new_tokens']} tokens, batch 1",
                    f"{kv['tokens_per_s']:,.0f} tokens/s", f"{name}: {other['tokens_per_s']:,.1f} tokens/s",
                    _x(kv["tokens_per_s"], other["tokens_per_s"]))
    return figure


# (benchmark, figure(payload) -> (figure, ours, peer or anchor, ratio) or None), in table order
HEADLINES: list[tuple[str, Callable[[dict[str, Any]], tuple[str, str, str, str] | None]]] = [
    ("train_step", _train_step_figure(8192, "window")),
    ("train_step", _train_step_figure(1024, "dense")),
    ("train_step", _train_step_figure(8192, "dense")),
    ("attention", _attention_figure(8192, "flex")),
    ("attention", _attention_figure(16384, "flex")),
    ("attention", _attention_figure(8192, "sdpa")),
    ("generate", _generate_figure("jax recompute")),
    ("generate", _generate_figure("hf")),
    ("lra", _lra_figure("listops")),
    ("lra", _lra_figure("text")),
    ("derived_layouts", _derived_figure),
    ("derived_layouts", _derived_quality_figure("text", sparser=False)),
    ("derived_layouts", _derived_quality_figure("text", sparser=True)),
    ("demo", _demo_figure),
    ("imdb_recipe", _imdb_figure("teacher")),
    ("imdb_recipe", _imdb_figure("nbsvm")),
    ("imdb_recipe", _imdb_figure("hybrid")),
    ("multi30k_recipe", _multi30k_figure),
    *[(f"{name}_recipe", _task_figure(name, *spec)) for name in ("aeslc", "kvret", "squad")
      for spec in task_recipes.TASKS[name].headlines],
    ("compression", _int8_figure),
    ("interop", _interop_figure),
]
HEADLINE_COLUMNS = ["figure", "ours", "peer or anchor", "ratio", "CPU", "measured", "section"]


def headline_rows() -> list[dict[str, str]]:
    """One row per headline figure, from the newest current run of its benchmark that has it."""
    benches = {b.name: b for b in BENCHMARKS}
    rows = []
    for name, figure in HEADLINES:
        bench = benches[name]
        link = f"[{name}](#{anchor(heading(bench))})"
        found = next(((p, f) for _, p in current_runs(bench) if (f := figure(p))), None)
        if found is None:
            rows.append({"figure": f"{bench.title}: not run yet", "ours": f"`{bench.runs[0].command}`",
                         "section": link})
            continue
        payload, (what, ours, peer, ratio) = found
        m = payload.get("machine", {})
        rows.append({"figure": what, "ours": ours, "peer or anchor": peer, "ratio": ratio,
                     "CPU": f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores",
                     "measured": f"{_date(payload)[:10]} ({m.get('commit', '?')})", "section": link})
    return rows


def build(path: Path = RESULTS_MD) -> str:
    """Writes RESULTS.md from the JSON results; returns its text."""
    parts = ["# Results", "",
             "Generated by `python -m benchmarks report` (or `memgpt-jax bench`) from `benchmarks/results/*.json`; "
             "each section names the command that produced its JSON, the machine and the commit it ran on. "
             "Machines are shared and noisy: compare ratios measured side by side in one run. Earlier runs and "
             "finished studies: [HISTORY.md](HISTORY.md).", "",
             "## Where the project stands", "",
             "Each figure from the newest run that measured it; ratio = ours / the peer or anchor (for times: "
             "theirs / ours), measured side by side in one run where the anchor is a peer.", "",
             markdown_table(headline_rows(), HEADLINE_COLUMNS), ""]
    body = []
    for bench in BENCHMARKS:
        text = section(bench)
        if text is None:
            parts.append(f"- {heading(bench)}: not run yet: `{bench.runs[0].command}`")
            continue
        parts.append(f"- [{heading(bench)}](#{anchor(heading(bench))})")
        body.append(text)
    parts += [""] + ["\n\n".join(body)]
    text = "\n".join(parts).rstrip() + "\n"
    path.write_text(text)
    return text


if __name__ == "__main__":
    build()
    print(f"wrote {RESULTS_MD}")
