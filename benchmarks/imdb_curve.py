"""IMDb: the teacher's accuracy against the CPU hours of its language-model pretraining.

    python -m benchmarks.imdb_curve --runs runs/imdb --lm-steps 0 500 1000 2000 3000

For each kept checkpoint of the LM (``configs/imdb.py:pretrain`` keeps every 500th step),
the teacher (``configs/imdb.py:teacher``, ``--variant`` for another) is fine-tuned from it
(``train.init_step``; step 0 = no pretraining) into ``RUNS/curve/lm<step>`` and evaluated
on validation and on the 2,000-review test sample. Each row: the LM step, its tokens, its
CPU hours (the wall time the LM checkpoint records, across restarts), its validation
perplexity (the LM's eval at that step, when it ran), its CPU core-hours (process CPU time,
every thread, where the checkpoint records it), and the teacher's accuracy / macro F1
and fine-tuning minutes. Finished points are reused (rerun to resume); a point whose run
is gone (a fresh machine) but which the committed ``imdb_curve.json`` holds for the same
fine-tuning config is kept from there, its ``source`` column naming the commit. Writes
``benchmarks/results/imdb_curve.{json,md,png}``: the PNG plots test-sample accuracy
against LM CPU hours with the NBSVM-bigram (91.2%, Wang & Manning 2012) and Dai & Le (2015,
92.8%) lines. Models are selected on validation; the test sample is only reported.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from benchmarks.common import RESULTS_DIR, machine_line, markdown_table, rebuild_results_md, write_results
from benchmarks.common import committed_rows as committed_rows_of, load_cached_row, save_cached_row

COLUMNS = ["lm_step", "lm_tokens_M", "lm_cpu_hours", "lm_core_hours", "lm_val_perplexity", "val_accuracy",
           "test_accuracy", "test_macro_f1", "finetune_min", "source"]
ANCHORS = (("NBSVM-bigram (Wang & Manning, 2012)", 0.912), ("LSTM LM pretraining (Dai & Le, 2015)", 0.928))


def lm_eval_perplexity(lm: str, step: int) -> float | None:
    path = os.path.join(lm, "metrics.jsonl")
    if not os.path.isfile(path):
        return None
    rows = [json.loads(line) for line in open(path) if line.strip()]
    found = [r for r in rows if r.get("split") == "eval" and r.get("step") == step and "perplexity" in r]
    return found[-1]["perplexity"] if found else None


def committed_rows(variant: str, overrides: list[str], max_examples: int) -> dict[int, dict]:
    """The points of the committed ``imdb_curve.json`` measured with this fine-tuning config, by LM step.

    Each keeps (or gains) ``source``: the commit of the run that measured it."""

    def keep(row: dict, meta: dict) -> bool:
        return (meta.get("variant", "teacher") == variant and list(meta.get("overrides") or []) == list(overrides)
                and row.get("max_examples", 0) == max_examples)

    return committed_rows_of(RESULTS_DIR / "imdb_curve.json", "lm_step", keep)


def lm_has_step(lm: str, step: int) -> bool:
    return os.path.isdir(os.path.join(lm, "checkpoints", str(step)))


TARGETS = (("the issue's target", 0.913), ("Dai & Le", 0.928))


def trend(rows: list[dict]) -> dict | None:
    """A least-squares line of test-sample accuracy against log2(LM tokens), over the
    pretrained points (LM step > 0), and where it would cross each of ``TARGETS``.

    An extrapolation, not a measurement: it assumes each doubling of pretraining keeps
    giving what the measured doublings gave (returns usually shrink, and past ~25M tokens
    the LM would repeat its data). CPU hours at the crossing use the fastest measured rate
    (hours per token of the points), the optimistic case. None with fewer than 3 points."""
    import numpy as np

    pts = [r for r in rows if r.get("lm_step") and r.get("test_accuracy") is not None and r.get("lm_tokens_M")]
    if len(pts) < 3:
        return None
    x = np.log2([r["lm_tokens_M"] for r in pts])
    y = np.array([100 * r["test_accuracy"] for r in pts])
    slope, intercept = np.polyfit(x, y, 1)
    rate = min(r["lm_cpu_hours"] / r["lm_tokens_M"] for r in pts if r.get("lm_cpu_hours"))
    out = {"points": [r["lm_step"] for r in pts], "points_per_doubling": float(slope),
           "cpu_hours_per_M_tokens": float(rate), "crossings": []}
    for name, acc in TARGETS:
        if slope <= 0:
            break
        tokens = float(2 ** ((100 * acc - intercept) / slope))
        out["crossings"].append({"target": name, "accuracy": acc, "lm_tokens_M": tokens,
                                 "lm_cpu_hours": tokens * rate})
    return out


def trend_text(t: dict | None) -> str:
    if not t:
        return ""
    steps = ", ".join(str(s) for s in t["points"])
    lines = [f"Trend (an extrapolation, `imdb_curve.trend`): over the pretrained points (LM steps {steps}) "
             f"each doubling of LM tokens gave {t['points_per_doubling']:+.2f} points of test-sample accuracy."]
    for c in t["crossings"]:
        lines.append(f"At that rate {100 * c['accuracy']:.1f}% ({c['target']}) needs about "
                     f"{c['lm_tokens_M']:,.0f}M LM tokens, {c['lm_cpu_hours']:,.0f} CPU hours at the fastest "
                     f"measured rate ({t['cpu_hours_per_M_tokens']:.3f} h per M tokens).")
    return " ".join(lines)


def measured_baseline() -> dict | None:
    """The NBSVM-bigram row of the committed ``imdb_baselines.json`` (the published baseline
    measured on our splits; its threshold fit on validation where that row exists), or None."""
    path = RESULTS_DIR / "imdb_baselines.json"
    if not path.is_file():
        return None
    payload = json.loads(path.read_text())
    rows = [r for r in payload.get("rows", []) if r["model"].startswith("NBSVM") and r["features"] == "1-2-grams"]
    # the threshold fit on validation where measured (the stronger baseline), else the paper's rule
    row = next((r for r in rows if (r.get("threshold") or "").startswith("fit on validation")), rows[0] if rows else None)
    return None if row is None else {**row, "train_examples": payload.get("meta", {}).get("train_examples")}


def baseline_text(row: dict | None) -> list[str]:
    if row is None:
        return []
    n = row.get("train_examples")
    return [f"NBSVM-bigram measured on the same splits (`python -m benchmarks.imdb_baselines`, trained on the "
            f"recipe's {f'{n:,}' if n else '?'} training reviews"
            f"{', decision threshold fit on validation' if (row.get('threshold') or '').startswith('fit') else ''}): "
            f"test sample {100 * row['test_accuracy']:.2f}%, "
            f"validation {100 * row['val_accuracy']:.2f}% (the red line); the published 91.2% is on the official "
            "25,000-review test set.", ""]


def plot(rows: list[dict], path: str, baseline: dict | None = None) -> None:
    """Test accuracy against LM CPU hours, the published anchors and, when given, ``baseline``
    (a `measured_baseline` row) as a line of its own."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    xs, ys = [r["lm_cpu_hours"] for r in rows], [100 * r["test_accuracy"] for r in rows]
    ax.plot(xs, ys, "o-", label="our teacher (test sample)")
    for x, y, r in zip(xs, ys, rows):
        ax.annotate(f"{r['lm_step']}", (x, y), textcoords="offset points", xytext=(4, -12), fontsize=8)
    for (name, acc), style in zip(ANCHORS, ("--", ":")):
        ax.axhline(100 * acc, linestyle=style, color="gray")
        ax.text(0.01, 100 * acc + 0.1, f"{name}: {100 * acc:.1f}%", fontsize=8, color="gray",
                transform=ax.get_yaxis_transform())  # x in axes units: at the left edge whatever the hours
    if baseline is not None:
        acc = 100 * baseline["test_accuracy"]
        ax.axhline(acc, linestyle="-.", color="tab:red")
        ax.text(0.01, acc - 0.3, f"NBSVM-bigram on our splits (measured): {acc:.1f}%", fontsize=8,
                color="tab:red", transform=ax.get_yaxis_transform())  # under its line: clear of the anchors
    ax.set_xlim(left=0)
    ax.set_xlabel("CPU hours of LM pretraining (2 cores)")
    ax.set_ylabel("test-sample accuracy (%)")
    ax.set_title("IMDb teacher: accuracy vs LM pretraining (labels: LM step)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def section(payload: dict) -> str:
    return "\n".join([
        "## IMDb: accuracy against LM pretraining", "",
        f"`{payload.get('command', 'python -m benchmarks.imdb_curve')}` — {machine_line(payload['machine'])}. "
        f"Teacher `configs/imdb.py:{payload['meta'].get('variant', 'teacher')}` fine-tuned from each kept LM "
        "checkpoint; CPU hours: the LM's recorded training wall time at that step.", "",
        markdown_table(payload["rows"], payload.get("columns") or COLUMNS), "",
        trend_text(trend(payload["rows"])), "",
        *baseline_text(measured_baseline()),
        "![accuracy vs pretraining](results/imdb_curve.png)",
    ])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs/imdb", help="holds lm/ (the pretraining run) and curve/ (the points)")
    p.add_argument("--lm-steps", type=int, nargs="+", default=[0, 500, 1000, 2000, 3000],
                   help="LM checkpoints to fine-tune from (0: none); each must be kept by the LM run")
    p.add_argument("--variant", default="teacher", help="configs/imdb.py variant fine-tuned at each point")
    p.add_argument("--override", action="append", default=[], metavar="FIELD=VALUE",
                   help="a config override for every point, e.g. --override train.steps=300 (repeatable)")
    p.add_argument("--max-examples", type=int, default=0, help="evaluate only this many examples per split")
    p.add_argument("--no-results-md", action="store_true")
    args = p.parse_args(argv)

    # lazy (JAX): the report imports this module for section() without JAX
    from memgpt_jax import run_config
    from memgpt_jax.apps.classify import evaluate_classifier
    from memgpt_jax.training.checkpoint import load_params
    from memgpt_jax.training.loop import train
    from memgpt_jax.training.run import open_run

    lm = os.path.join(args.runs, "lm")
    config_path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "imdb.py")
    rows = []
    earlier = committed_rows(args.variant, args.override, args.max_examples)
    for step in args.lm_steps:
        workdir = os.path.join(args.runs, "curve", f"lm{step}")
        overrides = [f"--config.train.init_from={lm if step else ''}", f"--config.train.init_step={step}",
                     *(f"--config.{o}" for o in args.override)]
        config = run_config.load(f"{config_path}:{args.variant}", overrides)
        cached = os.path.join(workdir, "curve_row.json")  # a finished point is not evaluated again
        if not os.path.isfile(cached) and step in earlier and (step == 0 or not os.path.isdir(lm)
                                                                or not lm_has_step(lm, step)):
            row = earlier[step]
            print(f"LM step {step}: kept from {row['source']} (val {row['val_accuracy']:.4f}, "
                  f"test {row['test_accuracy']:.4f})", file=sys.stderr)
            rows.append(row)
            continue
        lm_hours, core_hours, tokens = 0.0, 0.0, 0
        if step:
            _, meta = load_params(lm, step)  # the LM checkpoint must exist: kept by train.keep_period
            lm_hours = float(meta.get("wall_s") or 0.0) / 3600
            core_hours = float(meta["cpu_s"]) / 3600 if meta.get("cpu_s") else None  # older runs: not recorded
            lm_config = run_config.RunConfig.from_saved(meta["config"])
            tokens = step * lm_config.data.batch_size * lm_config.data.seq_len
        if os.path.isfile(cached):
            row = load_cached_row(cached)
            if row.get("train_steps") == config.train.steps and row.get("max_examples") == args.max_examples:
                print(f"LM step {step}: done (val {row['val_accuracy']:.4f}, test {row['test_accuracy']:.4f})",
                      file=sys.stderr)
                rows.append(row)
                continue
        print(f"== LM step {step}: fine-tuning {args.variant} in {workdir}", file=sys.stderr)
        summary = train(config, workdir, progress=False)
        run = open_run(workdir, task="classification")
        row = {"lm_step": step, "lm_tokens_M": tokens / 1e6, "lm_cpu_hours": lm_hours, "lm_core_hours": core_hours,
               "lm_val_perplexity": lm_eval_perplexity(lm, step), "finetune_min": summary["wall_s"] / 60,
               "train_steps": config.train.steps, "max_examples": args.max_examples, "source": "this run"}
        for split, prefix in (("validation", "val"), ("test", "test")):
            rep = evaluate_classifier(run, split, max_examples=args.max_examples, progress=False)
            row[f"{prefix}_accuracy"] = rep["accuracy"]
            if prefix == "test":
                row["test_macro_f1"] = rep["macro_f1"]
        print(f"LM step {step}: val {row['val_accuracy']:.4f}, test {row['test_accuracy']:.4f}", file=sys.stderr)
        save_cached_row(cached, row)
        rows.append(row)
    print(markdown_table(rows, COLUMNS))
    write_results("imdb_curve", rows, COLUMNS, {"variant": args.variant, "overrides": args.override})
    plot(rows, str(RESULTS_DIR / "imdb_curve.png"), measured_baseline())
    if not args.no_results_md:
        rebuild_results_md()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
