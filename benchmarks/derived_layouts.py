"""Layouts derived from a teacher's attention against fixed ones at equal density.

    python -m benchmarks.derived_layouts --task listops                         # LRA ListOps, 2k tokens
    python -m benchmarks.derived_layouts --task listops --densities 0.12 0.18 0.3   # the density sweep
    python -m benchmarks.derived_layouts --task text --densities 0.18           # IMDb, whole reviews
    python -m benchmarks.derived_layouts --tiny                                 # the whole flow, minutes
    python -m benchmarks.derived_layouts --densities 0.25 0.3 --no-students     # kept mass only, no training
    python -m benchmarks.derived_layouts --task text --budget-scale 0.65   # derived at 2/3 the density
    python -m benchmarks.derived_layouts --task text --no-timing   # evaluate students not yet evaluated, re-pair

Per task: a dense teacher (``memgpt-jax finetune``, the config's ``dense`` variant); its
attention mass per block on the validation split (``memgpt-jax layout derive``, measured
once, refitted per density with ``--from``); for each density, the window + global and
BigBird layouts whose density is closest to it, and the derived layout fitted to the density
of whichever of them keeps more of the teacher's attention mass (the layout it is measured
against; never more blocks than that one, nor more tiles for the XLA kernel to compute once
its rows are padded per group: ``--max-kernel-tiles``); one student per layout, the same
model and budget, distilled from the teacher (``memgpt-jax distill``). Each row reports
the layout's density (kept blocks / all blocks, averaged over layers and heads), the
share of the teacher's attention mass it keeps (on the measured split), the student's
test accuracy (a derived student's difference from each fixed student's, paired over the
same test examples, with its 95% interval: ``paired`` in the JSON), and the training step
time (forward + backward of the student, timed in this process in interleaved rounds;
``ms_per_kept_block`` normalises it by the kept blocks, for layouts whose block counts
differ). Every command runs in its own process and resumes in ``--runs``; each row is
written to ``benchmarks/results/derived_layouts.json`` as its student finishes, so an
interrupted sweep loses no finished row.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (RESULTS_DIR, committed_rows, machine_line, markdown_table, rebuild_results_md, time_fn,
                               write_results)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLUMNS = ["task", "layout", "target_density", "budget_scale", "seed", "density", "density_by_length", "kept_blocks",
           "kernel_tiles", "teacher_mass_kept", "mass_bound", "test_accuracy", "test_macro_f1", "step_ms",
           "step_ms_iqr", "ms_per_kept_block", "steps", "train_wall_min", "same_as"]
KINDS = ("derived", "window_global", "bigbird")
PREDICTIONS = "test_predictions.npz"  # a student's test predictions and labels, in its run directory
MAX_DENSITY_GAP = 0.25  # a fixed layout stands for a target density if within this share of it
TASKS = {
    "listops": dict(config="configs/lra_listops.py", teacher="dense", student="sparse",
                    title="LRA ListOps, 2,048 tokens"),
    # IMDb from scratch (no LM pretraining: the recipe's LMs are hours), whole reviews up to 1,024
    # sentencepiece tokens in blocks of 64, 16 blocks as ListOps. (Byte-level IMDb at 4k, LRA Text,
    # trains a dense teacher to chance at this budget, 52% in the lra benchmark: nothing to distil.)
    "text": dict(config="configs/imdb.py", teacher="scratch_teacher", student="scratch_student",
                 title="IMDb, whole reviews, 1,024 sentencepiece tokens",
                 needs=("imdb/spm8k.model", ["data", "tokenizer", "train", "--dataset", "memgpt_imdb/val10_seed0",
                                                  "--splits", "train,unsupervised", "--vocab-size", "8192"])),
}


def fixed_candidates(kind: str, n: int) -> list[dict[str, Any]]:
    """Attention settings of a fixed layout kind, small enough to matter on ``n`` blocks."""
    if kind == "window_global":
        return [dict(pattern=kind, window=w, n_global=g) for w in range(n) for g in (1, 2, 3) if g < n]
    return [dict(pattern=kind, window=w, n_global=g, n_random=r, seed=0)
            for w in range(4) for g in (1, 2) for r in (1, 2, 3, 4) if w + g + r < n]


def _layouts(attention: dict[str, Any], block: int, seq_len: int, n_layers: int) -> list:
    """Each layer's layout of an attention setting at ``seq_len``."""
    from memgpt_jax.attention import layout as L
    from memgpt_jax.config import AttentionConfig

    return L.layer_layouts(AttentionConfig(block_size=block, **attention), n_layers, seq_len)


def density_of(attention: dict[str, Any], block: int, seq_len: int, n_layers: int = 1) -> tuple[float, float]:
    """``(density, kept blocks per head)`` of a layout at ``seq_len``, averaged over layers and heads."""
    kept = float(np.mean([lay.n_kept_blocks for lay in _layouts(attention, block, seq_len, n_layers)]))
    return kept / (seq_len // block) ** 2, kept


def kernel_tiles_of(attention: dict[str, Any], block: int, seq_len: int, n_layers: int = 1) -> float:
    """Tiles per head the XLA kernel computes (``BlockLayout.kernel_tiles``: row groups padded to
    their longest row), averaged over layers: what a step costs, where kept blocks are what it keeps."""
    return float(np.mean([lay.kernel_tiles for lay in _layouts(attention, block, seq_len, n_layers)]))


def length_shares(config, tokenizer, steps: int) -> dict[int, float]:
    """The share of a run's training batches padded to each row length (its ``length_buckets``),
    read off the training pipeline itself over ``steps`` batches; ``{seq_len: 1.0}`` without buckets."""
    if not config.data.length_buckets:
        return {config.data.seq_len: 1.0}
    from memgpt_jax.training.inputs import make_iterator

    batches = make_iterator(config, config.data.train_split, tokenizer, train=True, batch_size=config.data.batch_size)
    counts: dict[int, int] = {}
    for _ in range(steps):
        t = int(next(batches)["inputs"].shape[1])
        counts[t] = counts.get(t, 0) + 1
    return {t: c / steps for t, c in sorted(counts.items())}


def density_by_length(attention: dict[str, Any], block: int, shares: dict[int, float], n_layers: int) -> float:
    """The density a student's batches meet: each row length's density (kept blocks / all blocks
    at that length) weighted by the share of batches padded to it. Equal densities at the full
    length can differ here: a layout with dense leading rows is fully causal on short texts."""
    return float(sum(w * density_of(attention, block, t, n_layers)[0] for t, w in shares.items()))


def fitted_for(layout_file: str, n_layers: int, n_heads: int, tiles: int) -> bool:
    """Whether a derived layout file was fitted for this student (its layers, heads) within ``tiles``,
    by the current fit (heads shared within ``SHARE_TOLERANCE``)."""
    with open(layout_file, encoding="utf-8") as f:
        payload = json.load(f)
    from memgpt_jax.attention.derived import SHARE_TOLERANCE

    prov = payload.get("provenance", {})
    return (len(payload["layers"]) == n_layers and all(len(h) in (1, n_heads) for h in payload["layers"])
            and prov.get("max_kernel_tiles") == tiles and prov.get("share_tolerance") == SHARE_TOLERANCE)


def closest(kind: str, target: float, block: int, seq_len: int) -> tuple[dict[str, Any], float]:
    """The ``kind`` settings whose density is closest to ``target`` (ties: the sparser)."""
    scored = [(abs(d - target), d, c) for c in fixed_candidates(kind, seq_len // block)
              for d in [density_of(c, block, seq_len)[0]]]
    if not scored:
        raise ValueError(f"{seq_len // block} blocks ({seq_len} tokens in blocks of {block}) leave no sparse {kind} "
                         "layout: use a smaller block or a longer sequence")
    _, d, c = min(scored, key=lambda x: (x[0], x[1]))
    return c, d


def fixed_at(target: float, block: int, seq_len: int) -> dict[str, tuple[dict[str, Any], float]]:
    """Per fixed kind, its layout closest to ``target`` and that layout's density. A kind whose
    nearest layout is further than ``MAX_DENSITY_GAP`` from the target is not at this density
    (BigBird's sparsest keeps 0.17 of ListOps' blocks): said on stderr and left out."""
    out = {}
    for kind in KINDS[1:]:
        config, d = closest(kind, target, block, seq_len)
        if abs(d - target) <= MAX_DENSITY_GAP * target:
            out[kind] = (config, d)
        else:
            print(f"{kind}: no layout within {MAX_DENSITY_GAP:.0%} of density {target:g} (nearest {d:.3f}); left "
                  "out at this density", file=sys.stderr, flush=True)
    return out


def refit(layout_file: str, derive, *, stale: tuple, old: dict, rows: list, key) -> None:
    """Replaces a layout file fitted by an earlier version of the fit (another student shape, no
    kernel budget, heads not shared). The new fit is written beside it first; only if its layout
    differs is the student trained on the old one moved aside (to a free ``.superseded`` name) and
    its row (``stale``) dropped, and the new file moved in last: an interruption anywhere leaves
    either the old file with its student or the new file without one."""
    scratch = tempfile.mkdtemp(prefix="memgpt_refit_")
    fresh_file = os.path.join(scratch, os.path.basename(layout_file))  # the mass file is named after it
    derive(fresh_file)
    with open(layout_file, encoding="utf-8") as f, open(fresh_file, encoding="utf-8") as g:
        changed = json.load(f)["layers"] != json.load(g)["layers"]
    base = layout_file[:-len(".json")]
    seeds = [os.path.join(os.path.dirname(base), n) for n in sorted(os.listdir(os.path.dirname(base) or "."))
             if re.fullmatch(re.escape(os.path.basename(base)) + r"_s\d+", n)]  # its students of other seeds
    for student in [base, *seeds] if changed else []:
        if os.path.isdir(student):
            aside = next(f"{student}.superseded{i or ''}" for i in range(1000)
                         if not os.path.exists(f"{student}.superseded{i or ''}"))
            print(f"the layout changed: {student} moves to {aside}", file=sys.stderr, flush=True)
            os.replace(student, aside)
    if changed:  # the rows of its students, every seed's (their keys start with ``stale``)
        for k in [k for k in old if k[:len(stale)] == stale]:
            old.pop(k)
        rows[:] = [r for r in rows if key(r)[:len(stale)] != stale]
    mass_name = os.path.basename(layout_file) + ".mass.npy"
    shutil.move(os.path.join(scratch, mass_name), os.path.join(os.path.dirname(layout_file) or ".", mass_name))
    shutil.move(fresh_file, layout_file)
    shutil.rmtree(scratch, ignore_errors=True)


def row_name(row: dict[str, Any], kind: str | None = None) -> str:
    """``run_name`` of a row (its layout, density, budget scale and seed; ``kind`` for another layout's)."""
    return run_name(kind or row["layout"], row["target_density"], row.get("budget_scale", 1.0), row.get("seed", 0))


def row_run(row: dict[str, Any], runs: str) -> str:
    """The run directory of a row's student (a derived row that is a fixed layout: that one's)."""
    return os.path.join(runs, row_name(row, row.get("same_as")))


def also_timed(rows: list[dict[str, Any]], task: str, densities: list[float], runs: str,
               timed: dict[str, Any]) -> dict[str, str]:
    """``{name: run directory}`` of the trained students of ``task`` at ``densities`` that this
    process did not visit (``timed``), e.g. the equal-density derived student in a --budget-scale
    run: every student of a density is timed in the same rounds, so a row's step time is only
    ever compared with those measured in its own process."""
    out = {}
    for r in rows:
        name = row_name(r)
        workdir = os.path.join(runs, name)
        if (r["task"] == task and r["target_density"] in densities and name not in timed and not r.get("same_as")
                and not r.get("seed") and os.path.isfile(os.path.join(workdir, "summary.json"))):
            out[name] = workdir
    return out


def paired_with_fixed(derived: dict[str, Any], rows: list[dict[str, Any]], runs: str) -> dict[str, list[float]]:
    """``{"LAYOUT DENSITY": [difference, low, high]}``: the derived student's test accuracy minus
    each fixed student's, example by example on the same test examples, with its 95% interval
    (``metrics.paired_difference``); fixed students whose predictions are not in ``runs`` are left out."""
    from memgpt_jax.training.metrics import paired_difference

    def correct(row: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:  # (right or not, labels)
        path = os.path.join(row_run(row, runs), PREDICTIONS)
        if not os.path.isfile(path):
            return None
        with np.load(path) as z:
            return z["predictions"] == z["labels"], z["labels"]

    mine = correct(derived)
    if mine is None:
        return {}
    out = {}
    for f in rows:
        theirs = correct(f) if f["layout"] in KINDS[1:] and f.get("seed", 0) == derived.get("seed", 0) else None
        if theirs is None or not np.array_equal(theirs[1], mine[1]):  # another test sample: not comparable
            continue
        p = paired_difference(mine[0], theirs[0])
        out[f"{f['layout']} {f['target_density']:g}"] = [round(p["difference"], 4), round(p["low"], 4),
                                                         round(p["high"], 4)]
    return out


def paired_text(d: dict[str, Any], best: dict[str, Any]) -> str:
    """``+0.3 points`` with the paired 95% interval and what it says, where both students' predictions were kept."""
    text = f"{100 * (d['test_accuracy'] - best['test_accuracy']):+.2f} points"
    p = d.get("paired", {}).get(f"{best['layout']} {best['target_density']:g}")
    if not p:
        return text
    diff, low, high = (100 * v for v in p)
    says = ("better" if low > 0 else "worse" if high < 0 else
            "no difference shown; within 1 point at worst" if low >= -1 else "no difference shown")
    return f"{text}, 95% interval {low:+.1f} to {high:+.1f} paired over the test examples: {says}"


def run_name(kind: str, target: float, scale: float = 1.0, seed: int = 0) -> str:
    """A student's run directory (and, for seed 0, a derived layout's file, with ``.json``) in ``--runs``."""
    return (f"{kind}_{target:g}" + (f"_x{scale:g}" if kind == "derived" and scale != 1.0 else "")
            + (f"_s{seed}" if seed else ""))


def _overrides(attention: dict[str, Any]) -> list[str]:
    return [f"--config.model.attention.{k}={v}" for k, v in attention.items()]


def _cli(*args: str) -> None:
    cmd = [sys.executable, "-m", "memgpt_jax.cli", *args]
    print("== memgpt-jax " + " ".join(args), file=sys.stderr, flush=True)
    rc = subprocess.run(cmd).returncode
    if rc:  # its own error is printed above; what finished before it is kept in --runs and the results
        raise SystemExit(f"python -m benchmarks.derived_layouts: `memgpt-jax {args[0]}` failed (exit {rc}); "
                         "rerunning resumes from what is saved")


def same_blocks(a: dict[str, Any], b: dict[str, Any], block: int, seq_len: int, n_layers: int) -> bool:
    """Whether two attention settings keep the same tiles in every layer and head at ``seq_len``."""
    return all(np.array_equal(*np.broadcast_arrays(la.codes != 0, lb.codes != 0))
               for la, lb in zip(_layouts(a, block, seq_len, n_layers), _layouts(b, block, seq_len, n_layers)))


def kept_mass_of(attention: dict[str, Any], block: int, mass: np.ndarray) -> float:
    """The teacher's attention mass (``[layers, heads, n, n]``) inside a layout, averaged over layers and heads."""
    from memgpt_jax.attention import derived as D

    lays = _layouts(attention, block, mass.shape[-1] * block, len(mass))
    return float(np.mean([D.kept_mass(m, lay).mean() for m, lay in zip(mass, lays)]))


def step_times(configs: dict[str, Any], seq_len: int, batch: int, rounds: int) -> dict[str, tuple[float, ...]]:
    """``(median, 25th, 75th percentile)`` forward + backward time (ms) of each student model
    config, one call per config per round, the rounds interleaved (their order rotating)."""
    import jax
    import jax.numpy as jnp

    from memgpt_jax import model as model_lib

    fns = {}
    for name, mc in configs.items():
        model = model_lib.build(mc, "classification")
        ids = jnp.asarray(np.random.default_rng(0).integers(3, mc.vocab_size, size=(batch, seq_len)), jnp.int32)
        params = jax.jit(model.init)(jax.random.PRNGKey(0), ids)["params"]
        labels = jnp.zeros((batch,), jnp.int32)

        def loss(p, model=model, ids=ids, labels=labels):
            logits = model.apply({"params": p}, ids).logits.astype(jnp.float32)
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))

        grad = jax.jit(jax.grad(loss))
        jax.block_until_ready(grad(params))  # compile
        fns[name] = (grad, params)
    samples: dict[str, list[float]] = {name: [] for name in configs}
    names = list(fns)
    for r in range(rounds if names else 0):  # each round starts one config later: no config always runs first or last
        for name in names[r % len(names):] + names[:r % len(names)]:
            grad, params = fns[name]
            samples[name].append(time_fn(lambda g=grad, p=params: jax.block_until_ready(g(p)), repeats=1,
                                         warmup=0)["median_s"])
    return {name: tuple(1e3 * float(np.percentile(s, q)) for q in (50, 25, 75)) for name, s in samples.items()}


def section(payload: dict) -> str:
    rows, meta = payload["rows"], payload.get("meta", {})
    lines = ["## Derived layouts: sparsity chosen from the teacher's attention", "",
             f"`{payload.get('command', 'python -m benchmarks.derived_layouts')}` — {machine_line(payload['machine'])}. "
             "Per task one dense teacher; per density the window + global and BigBird layouts closest to it and the "
             "derived layout within the density of the one that keeps more teacher mass; students of the same model and budget distilled "
             "from the teacher. `teacher_mass_kept`: the share of the teacher's attention (validation split) inside "
             "the layout; `mass_bound`: the most any layout of the derived layout's kept-block budget keeps (the "
             "heaviest tiles of each head, a map valid only at the measured length); `kernel_tiles`: the tiles per "
             "head the XLA kernel computes (row groups padded to their longest row), "
             "which the derived layout may not exceed either; `density_by_length`: the density at the row lengths "
             "of the students' batches (length buckets), weighted by their share; `ms_per_kept_block`: the student's "
             "forward + backward step time over its kept blocks. Accuracy differences come with their 95% interval "
             "paired over the same test examples (the test sample's noise; each row is one training run, `seed` "
             "names the others). The table gathers rows over several runs (per task, density, --budget-scale and "
             "--seed; the command above is the newest); students of one density are timed in the same rounds.", "",
             markdown_table(rows, payload.get("columns") or COLUMNS)]
    for task in sorted({r["task"] for r in rows}):
        for target in sorted({r["target_density"] for r in rows if r["task"] == task}):
            by = {r["layout"]: r for r in rows if r["task"] == task and r["target_density"] == target
                  and r.get("budget_scale", 1.0) == 1.0 and not r.get("seed")}
            d = by.get("derived")
            fixed = [by[k] for k in KINDS[1:] if k in by]
            if not d or not fixed:
                continue
            best_mass = max(fixed, key=lambda r: r["teacher_mass_kept"])
            parts = [f"- {task} at density ~{target}: the derived layout keeps "
                     f"{d['teacher_mass_kept'] / best_mass['teacher_mass_kept']:.2f}x the teacher's attention mass of "
                     f"the best fixed layout ({best_mass['layout']})"]
            if d.get("mass_bound"):
                parts[0] += (f" (any layout of its kept blocks keeps at most {100 * d['mass_bound']:.1f}%, "
                             f"{d['mass_bound'] / best_mass['teacher_mass_kept']:.2f}x)")
            best = equal_best(d, rows)
            if d.get("test_accuracy") is not None and best:
                parts.append(f"student accuracy {100 * d['test_accuracy']:.2f}% vs {100 * best['test_accuracy']:.2f}% "
                             f"({best['layout']}, {paired_text(d, best)})")
            if d.get("step_ms") and best_mass.get("step_ms"):
                tiles = (f" ({d['kernel_tiles']:g} kernel tiles a head against {best_mass['kernel_tiles']:g})"
                         if d.get("kernel_tiles") and best_mass.get("kernel_tiles") else "")
                parts.append(f"step time {d['step_ms'] / best_mass['step_ms']:.2f}x{tiles}")
            lines.append("; ".join(parts) + ".")
        lines += seed_lines(rows, task) + sparser_lines(rows, task)
    if meta.get("plot"):
        lines += ["", f"![quality against density]({meta['plot']})"]
    return "\n".join(lines)


def equal_best(d: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The best fixed student (by test accuracy) of ``d``'s task, target density and seed, or None."""
    scored = [r for r in rows if r["task"] == d["task"] and r["layout"] in KINDS[1:]
              and r["target_density"] == d["target_density"] and r.get("seed", 0) == d.get("seed", 0)
              and r.get("budget_scale", 1.0) == 1.0 and r.get("test_accuracy") is not None]
    return max(scored, key=lambda r: r["test_accuracy"]) if scored else None


def sparser_best(d: dict[str, Any], rows: list[dict[str, Any]], target: float | None = None) -> dict[str, Any] | None:
    """The issue's other way to win: the best fixed student (by test accuracy) of ``d``'s task and
    seed trained at 1.5x the derived student's density or more (the derived layout at no more
    than two-thirds of the density), among those of target density ``target`` (None: any), or None."""
    denser = [r for r in rows if r["task"] == d["task"] and r["layout"] in KINDS[1:]
              and r.get("seed", 0) == d.get("seed", 0) and target in (None, r["target_density"])
              and r.get("test_accuracy") is not None and r["density"] >= 1.5 * d["density"] - 1e-3]
    return max(denser, key=lambda r: r["test_accuracy"]) if denser else None


def seed_lines(rows: list[dict[str, Any]], task: str) -> list[str]:
    """Each equal-density derived student of another seed (``--seed``) against the fixed students
    of its seed: whether the seed-0 comparison holds for another training run."""
    lines = []
    for d in rows:
        if not (d["task"] == task and d["layout"] == "derived" and d.get("seed") and d.get("test_accuracy") is not None
                and d.get("budget_scale", 1.0) == 1.0):
            continue
        best = equal_best(d, rows)
        if best:
            lines.append(f"- {task} at density ~{d['target_density']}, seed {d['seed']}: derived student "
                         f"{100 * d['test_accuracy']:.2f}% vs {100 * best['test_accuracy']:.2f}% "
                         f"({best['layout']}, {paired_text(d, best)}).")
    return lines


def sparser_lines(rows: list[dict[str, Any]], task: str) -> list[str]:
    """Each derived student of ``task`` against ``sparser_best`` of each target density."""
    lines = []
    for d in (r for r in rows if r["task"] == task and r["layout"] == "derived" and r.get("test_accuracy") is not None):
        for best in filter(None, (sparser_best(d, rows, t) for t in sorted({r["target_density"] for r in rows
                                                                            if r["task"] == task}))):
            seed = f", seed {d['seed']}" if d.get("seed") else ""
            lines.append(f"- {task}: the derived student at density {d['density']:.3f}{seed}, "
                         f"{100 * d['test_accuracy']:.2f}%, against the best fixed student at ~{best['target_density']} "
                         f"({best['layout']} at {best['density']:.3f}; the derived density is "
                         f"{d['density'] / best['density']:.2f}x that): {100 * best['test_accuracy']:.2f}% "
                         f"({paired_text(d, best)})"
                         + (f"; step time {d['step_ms'] / best['step_ms']:.2f}x" if d.get("step_ms") and best.get("step_ms")
                            and d["target_density"] == best["target_density"] else "")  # timed in one process
                         + ".")
    return lines


def plot(rows: list[dict[str, Any]], path: str) -> str | None:
    """Test accuracy against density per layout kind, one panel per task with several densities."""
    tasks = sorted({r["task"] for r in rows if r.get("test_accuracy") is not None})
    tasks = [t for t in tasks if len({r["target_density"] for r in rows if r["task"] == t}) >= 2]
    if not tasks:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5 * len(tasks), 3.6))
    for ax, task in zip(fig.subplots(1, len(tasks), squeeze=False)[0], tasks):
        for kind, marker in zip(KINDS, "os^"):
            pts = sorted((r["density"], r["test_accuracy"]) for r in rows
                         if r["task"] == task and r["layout"] == kind and r.get("test_accuracy") is not None
                         and not r.get("seed"))
            if pts:
                ax.plot(*zip(*pts), marker=marker, label=kind)
        ax.set_title(task)
        ax.set_xlabel("density (kept blocks / all blocks)")
        ax.set_ylabel("student test accuracy")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return os.path.basename(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.derived_layouts", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=sorted(TASKS), default="listops",
                   help="listops: LRA ListOps at 2k tokens; text: IMDb, whole reviews (default: %(default)s)")
    p.add_argument("--densities", type=float, nargs="+", default=None,
                   help="target densities, kept blocks / all blocks (default: 0.18; with --tiny 0.25, which the "
                        "fixed layouts reach on its 8 blocks)")
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS),
                   help="layouts to train students on (default: all)")
    p.add_argument("--steps", type=int, default=None, help="training steps of teacher and students (default: the config's)")
    p.add_argument("--examples", type=int, default=256,
                   help="validation examples the attention mass is measured on (default: %(default)s)")
    p.add_argument("--runs", default=None, help="run directories (default: runs/derived_layouts/TASK; a temp dir "
                                                "with --tiny)")
    p.add_argument("--rounds", type=int, default=15,
                   help="interleaved timing rounds of the step times (default: %(default)s)")
    p.add_argument("--tiny", action="store_true",
                   help="tiny models, 2 steps: the whole flow in a few minutes, into a temp dir or --runs DIR, "
                        "its table in DIR/results (the committed table is not touched)")
    p.add_argument("--no-students", action="store_true",
                   help="only the layouts and the teacher mass each keeps, printed; no student trained, no row "
                        "saved. Seconds once --runs holds the teacher and its mass; without them the teacher is "
                        "trained and measured first (tens of minutes)")
    p.add_argument("--budget-scale", type=float, default=1.0, metavar="F",
                   help="fit the derived layout to F times the density of the fixed layout it is measured against "
                        "(default 1: equal density; 0.65 tests the other way to win, matching the fixed students "
                        "at two-thirds of their density: its row carries budget_scale)")
    p.add_argument("--seed", type=int, default=0,
                   help="the students' training seed (initialisation and batch order; the teacher and the "
                        "layouts are the same for every seed). Seeds other than 0 train into their own run "
                        "directories (e.g. derived_0.18_s1), add rows "
                        "that carry their seed, are compared with the fixed students of their own seed, and are "
                        "not timed (default: %(default)s)")
    p.add_argument("--no-timing", action="store_true",
                   help="keep the recorded step times (no timing rounds): evaluates the students these options "
                        "select (--task, --densities, --budget-scale, --seed) that have no kept predictions, and "
                        "pairs every derived student of the task again")
    p.add_argument("--no-results-md", action="store_true", help="do not rebuild benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    args.densities = args.densities or ([0.25] if args.tiny else [0.18])
    if any(not 0 < d <= 1 for d in args.densities):
        p.error("--densities must be in (0, 1]")
    if not 0 < args.budget_scale <= 1:
        p.error("--budget-scale must be in (0, 1]")
    if args.seed < 0:
        p.error("--seed must be 0 or more")
    if args.rounds < 1 or args.examples < 1 or (args.steps is not None and args.steps < 1):
        p.error("--rounds, --examples and --steps must be 1 or more")
    args.no_timing = args.no_timing or args.seed != 0  # another seed's student is the same model as seed 0's

    from memgpt_jax import run_config  # lazy (JAX via the run's modules)
    from memgpt_jax.apps.classify import evaluate_classifier
    from memgpt_jax.training.run import open_run

    task = TASKS[args.task]
    config = os.path.join(ROOT, task["config"])
    runs = args.runs or (tempfile.mkdtemp(prefix="memgpt_derived_tiny_") if args.tiny
                         else os.path.join("runs", "derived_layouts", args.task))
    os.makedirs(runs, exist_ok=True)
    teacher_variant, student_variant = ("tiny", "tiny") if args.tiny else (task["teacher"], task["student"])
    if "needs" in task and not args.tiny:  # what the configs read (the tokenizer), made once
        path, command = task["needs"]
        path = run_config.runs_path(path)  # where the config looks for it
        if not os.path.isfile(path):
            _cli(*command, "--output", path)
    steps = [f"--config.train.steps={args.steps}"] if args.steps else []
    if args.tiny:  # 2 steps, and 8 blocks a row whatever the task's tiny config (its blocks are the real ones)
        steps = ["--config.train.steps=2",
                 f"--config.model.attention.block_size={run_config.load(f'{config}:tiny').data.seq_len // 8}"]
    common = ["--no-progress", *steps]
    teacher = os.path.join(runs, "teacher")
    if not os.path.isfile(os.path.join(teacher, "summary.json")):
        print(f"no teacher in {teacher}: training it first ({teacher_variant} variant, dense attention)",
              file=sys.stderr, flush=True)
        _cli("finetune", "--config", f"{config}:{teacher_variant}", "--workdir", teacher, *common,
             "--config.model.attention.pattern=dense")
    student_cfg = run_config.load(f"{config}:{student_variant}", steps)
    mc = student_cfg.model
    block, seq = mc.attention.block_size, student_cfg.data.seq_len
    measured = os.path.join(runs, "mass.json")
    if not os.path.isfile(measured):
        _cli("layout", "derive", "--teacher", teacher, "--examples", str(args.examples), "--density",
             str(max(args.densities)), "--out", measured, "--block", str(block), "--no-progress")
    from memgpt_jax.attention import derived as D

    mass = D.group_mass(D.read_mass(measured), mc.n_layers, mc.n_heads)  # the teacher's heads, as the student's
    shares = None  # the student's batch lengths (read once, when a row needs them)

    # what was measured before (same task, density, layout, steps) is kept
    results = RESULTS_DIR if not args.tiny else Path(runs) / "results"  # a smoke run leaves the committed table
    key = lambda r: (r["task"], r["layout"], r["target_density"], r["steps"],  # noqa: E731
                     r.get("budget_scale", 1.0), r.get("seed", 0))
    old = committed_rows(results / "derived_layouts.json", key, lambda row, meta: True)
    rows = list(old.values())

    fresh: set = set()  # the rows this process measured; the file's others may be newer than ours

    def save() -> None:
        # what another process wrote since this one started (the other task, a retiming) is kept
        merged = committed_rows(results / "derived_layouts.json", key, lambda row, meta: True)
        merged.update({key(r): {**merged.get(key(r), {}), **r} for r in rows if key(r) in fresh})
        rows[:] = list(merged.values())  # the file's other rows as they are now (a row deleted there stays gone)
        rows.sort(key=lambda r: (r["task"], r["target_density"], r.get("seed", 0),
                                 KINDS.index(r["layout"]) if r["layout"] in KINDS else -1))
        results.mkdir(parents=True, exist_ok=True)
        png = plot(rows, str(results / "derived_layouts.png"))
        write_results("derived_layouts", rows, COLUMNS, {"plot": png, "examples": args.examples}, directory=results)
        if not args.no_results_md and not args.tiny:
            rebuild_results_md()

    students = {}
    for target in args.densities:
        fixed = fixed_at(target, block, seq)
        if not fixed:
            continue
        # the derived layout gets the budget of the fixed layout that keeps the most teacher mass (the
        # one it is measured against), never more: in kept blocks and in the tiles the kernel computes
        # for them (rows padded per group)
        best = max(fixed.values(), key=lambda cd: kept_mass_of(cd[0], block, mass))
        budget, tiles = best[1] * args.budget_scale, round(kernel_tiles_of(best[0], block, seq))
        layout_file = os.path.join(runs, f"{run_name('derived', target, args.budget_scale)}.json")
        if args.no_students:  # a scratch fit: the recorded layout of this density is not replaced
            layout_file = os.path.join(tempfile.mkdtemp(prefix="memgpt_derived_"), os.path.basename(layout_file))
        derive = lambda out: _cli("layout", "derive", "--from", measured, "--density", repr(budget),  # noqa: E731
                                  "--out", out, "--layers", str(mc.n_layers), "--heads", str(mc.n_heads),
                                  "--max-kernel-tiles", str(tiles))
        if os.path.isfile(layout_file) and not fitted_for(layout_file, mc.n_layers, mc.n_heads, tiles):
            print(f"{layout_file}: fitted by an earlier version of the fit; fitting again", file=sys.stderr, flush=True)
            refit(layout_file, derive, stale=(args.task, "derived", target, student_cfg.train.steps,
                                              args.budget_scale), old=old, rows=rows, key=key)
        if not os.path.isfile(layout_file):
            derive(layout_file)
        layouts = {"derived": dict(pattern="derived", layout_file=layout_file), **{k: c for k, (c, _) in fixed.items()}}
        # a derived layout that keeps exactly a fixed layout's blocks is that layout: its student is not
        # trained twice (the row says so, and carries the fixed student's figures)
        same = next((k for k in fixed if same_blocks(layouts["derived"], layouts[k], block, seq, mc.n_layers)),
                    None)
        order = sorted((k for k in args.kinds if k in layouts), key=lambda k: k == "derived")  # fixed ones first
        for kind in order:
            attention = layouts[kind]
            name = run_name(kind, target, args.budget_scale, args.seed)
            workdir = os.path.join(runs, name)
            density, kept = density_of(attention, block, seq, mc.n_layers)
            row = {"task": args.task, "layout": kind, "target_density": target, "density": round(density, 4),
                   "kept_blocks": round(kept, 1), "kernel_tiles": round(kernel_tiles_of(attention, block, seq,
                                                                                          mc.n_layers), 1),
                   "teacher_mass_kept": round(kept_mass_of(attention, block, mass), 4),
                   "steps": student_cfg.train.steps,
                   "attention": {k: v for k, v in attention.items() if k != "layout_file"}}
            if kind == "derived" and args.budget_scale != 1.0:
                row["budget_scale"] = args.budget_scale
            if args.seed:
                row["seed"] = args.seed
            if kind == "derived":  # the most any layout of its budget keeps: the heaviest tiles themselves
                row["mass_bound"] = round(D.summarize(D.fit(mass, budget, block=block, raw=True), mass)
                                          ["kept_mass"]["overall"], 4)
            if args.no_students:
                print(row, flush=True)
                continue
            if shares is None:
                shares = length_shares(student_cfg, open_run(teacher).tokenizer, student_cfg.train.steps)
                print(f"the students' batches by row length: {shares}", file=sys.stderr, flush=True)
            row["density_by_length"] = round(density_by_length(attention, block, shares, mc.n_layers), 4)
            if kind == "derived" and same is not None and same in args.kinds:
                twin = next(r for r in rows if key(r) == (args.task, same, target, row["steps"], 1.0, args.seed))
                row.update({k: twin.get(k) for k in ("test_accuracy", "test_macro_f1", "train_wall_min")},
                           same_as=same)
                # its step is still timed: the same blocks through the derived pattern's own path
                students[name] = run_config.load(f"{config}:{student_variant}",
                                                                 [*steps, *_overrides(attention)]).model
                rows[:] = [r for r in rows if key(r) != key(row)] + [row]
                fresh.add(key(row))
                save()
                continue
            trained = not os.path.isfile(os.path.join(workdir, "summary.json"))
            if trained:
                _cli("distill", "--config", f"{config}:{student_variant}", "--workdir", workdir, *common,
                     f"--config.distill.teacher={teacher}", *_overrides(attention),
                     *([f"--config.train.seed={args.seed}", f"--config.data.seed={args.seed}"] if args.seed else []))
            run = open_run(workdir, task="classification")
            students[name] = run.model_config
            measured_before = {} if trained else old.get(key(row), {})  # a student trained now is evaluated now
            predictions = os.path.join(workdir, PREDICTIONS)
            if measured_before.get("test_accuracy") is not None and os.path.isfile(predictions):
                # refresh the layout's figures, keep the student's
                row.update({k: measured_before.get(k) for k in ("test_accuracy", "test_macro_f1", "train_wall_min")})
            else:  # evaluated, its predictions kept for the paired comparisons
                print(f"evaluating {workdir} on the test split", file=sys.stderr, flush=True)
                rep = evaluate_classifier(run, "test", batch_size=16, progress=False, per_example=True)
                np.savez(predictions, predictions=rep["predictions"], labels=rep["labels"])
                with open(os.path.join(workdir, "summary.json")) as f:
                    summary = json.load(f)
                row.update(test_accuracy=round(rep["accuracy"], 4), test_macro_f1=round(rep["macro_f1"], 4),
                           train_wall_min=round(summary["wall_s"] / 60, 2))
            rows[:] = [r for r in rows if key(r) != key(row)] + [row]
            fresh.add(key(row))
            print(row, file=sys.stderr, flush=True)
            save()
    if args.no_students:
        return 0
    for r in rows:  # every derived student against every fixed one of the task, example by example
        if r["task"] == args.task and r["layout"] == "derived":
            paired = paired_with_fixed(r, [f for f in rows if f["task"] == args.task], runs)
            if paired:
                r["paired"] = paired
                fresh.add(key(r))
    save()
    if args.no_timing:
        print(markdown_table(rows, COLUMNS))
        return 0
    for name, workdir in also_timed(rows, args.task, args.densities, runs, students).items():
        students[name] = open_run(workdir, task="classification").model_config
    times = step_times(students, seq, student_cfg.data.batch_size if not args.tiny else 2, args.rounds)
    for r in rows:
        name = row_name(r)  # another seed's name is never timed: the same model as seed 0's
        if r["task"] == args.task and name in times:
            median, p25, p75 = times[name]
            r["step_ms"] = round(median, 1)
            r["step_ms_iqr"] = f"{p25:.0f}-{p75:.0f}"
            r["ms_per_kept_block"] = round(median / r["kept_blocks"], 3)
            fresh.add(key(r))
    save()
    print(markdown_table(rows, COLUMNS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
