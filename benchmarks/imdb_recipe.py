"""The IMDb recipe's table: hybrid teacher, teacher, block-sparse student, int8 student.

    python -m benchmarks.imdb_recipe --runs runs/imdb       (after train/imdb_recipe.sh)

For each model: parameters, size on disk of an inference checkpoint (parameters
only), accuracy and macro F1 on the validation split and on the test split (the
2,000-review "test sample" of the dev archive), CPU training wall time (from each
run's ``summary.json``; each model's includes its own LM pretraining, listed apart
too), and inference examples/s on the test split (batch 64, model time after
compilation). Writes ``benchmarks/results/imdb_recipe.{json,md}`` and the "IMDb
recipe" section of RESULTS.md (rebuilt by ``benchmarks.report``).

The hybrid teacher's row (the Transformer teacher and NBSVM-bigram stacked on
validation) is read from ``results/imdb_hybrid.json`` and ``results/imdb_baselines.json``,
which the recipe's last two stages write (``benchmarks.imdb_baselines``,
``benchmarks.imdb_hybrid``). A model whose run is not on this machine keeps its row
from the committed ``imdb_recipe.json`` (the ``source`` column names its commit);
``--fresh`` refuses to do that.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

from benchmarks import common
from benchmarks.common import committed_rows, machine_line, markdown_table, rebuild_results_md, write_results
from memgpt_jax import run_config

COLUMNS = ["model", "attention", "params", "params_vs_teacher", "disk_MB", "val_accuracy", "val_macro_f1",
           "test_accuracy", "test_macro_f1", "train_wall_min", "test_examples_per_s", "source"]
HYBRID = "hybrid teacher (teacher + NBSVM-bigram)"
MODELS = (("teacher", "teacher"), ("student", "student"), ("student int8", "student_int8"))


def _wall_min(run: str) -> float:
    with open(os.path.join(run, "summary.json")) as f:
        return json.load(f)["wall_s"] / 60.0


def _wall_min_or(run: str, default: float) -> float:
    """A run's training wall minutes, or ``default`` (its committed figure) when the run is not here."""
    return _wall_min(run) if os.path.isfile(os.path.join(run, "summary.json")) else default


def hybrid_row(teacher: dict) -> dict | None:
    """The hybrid teacher's row from the committed stacking and baseline results (None when
    ``benchmarks.imdb_hybrid`` has not run): its parameters are the Transformer teacher's, NBSVM's
    weights (one per n-gram, plus its bias) and the 3 stacking weights; its training time the
    teacher's plus NBSVM's fit."""
    hybrid_path, base_path = common.RESULTS_DIR / "imdb_hybrid.json", common.RESULTS_DIR / "imdb_baselines.json"
    if not (hybrid_path.is_file() and base_path.is_file()):
        return None
    hybrid = json.loads(hybrid_path.read_text())
    stacked = [r for r in hybrid["rows"] if r["model"].startswith("hybrid")]
    if not stacked or hybrid["meta"].get("members") != ["teacher"]:
        return None  # only the hybrid of the recipe's own teacher is its teacher row
    ngrams = {1: "unigrams"}.get(n := int(re.search(r"(\d)gram", hybrid["meta"]["nbsvm"]).group(1)), f"1-{n}-grams")
    nbsvm = [r for r in json.loads(base_path.read_text())["rows"]
             if r["model"].startswith("NBSVM") and r["features"] == ngrams]
    if not nbsvm:
        return None
    row = {k: stacked[-1][k] for k in ("val_accuracy", "val_macro_f1", "test_accuracy", "test_macro_f1")}
    n_params = teacher["params"] + nbsvm[0]["n_features"] + 1 + 3
    return {"model": HYBRID, "attention": "dense", "params": n_params, "params_vs_teacher": n_params / teacher["params"],
            **row, "train_wall_min": teacher["train_wall_min"] + nbsvm[0]["train_s"] / 60,
            "source": f"commit {hybrid['machine'].get('commit')} (imdb_hybrid)"}


def ratios(rows: list[dict]) -> dict:
    """Accuracy ratios of the student and its int8 copy to the teacher and the hybrid teacher."""
    by = {r["model"]: r for r in rows}
    out = {}
    for teacher, tag in (("teacher", ""), (HYBRID, "_vs_hybrid")):
        if teacher not in by:
            continue
        for split in ("test", "val"):
            out[f"student_accuracy_ratio_{split}{tag}"] = by["student"][f"{split}_accuracy"] / by[teacher][f"{split}_accuracy"]
            out[f"int8_accuracy_ratio_{split}{tag}"] = by["student int8"][f"{split}_accuracy"] / by[teacher][f"{split}_accuracy"]
    return out


def section(payload: dict) -> str:
    """The RESULTS.md section, from ``results/imdb_recipe.json``."""
    rows, meta = payload["rows"], payload["meta"]
    by = {r["model"]: r for r in rows}
    hybrid = []
    if "student_accuracy_ratio_test_vs_hybrid" in meta:
        h, s = by[HYBRID], by["student"]
        hybrid = ["", f"Against the hybrid teacher ({100 * h['test_accuracy']:.1f}% test sample, "
                  f"{100 * h['val_accuracy']:.1f}% validation; `python -m benchmarks.imdb_hybrid --runs runs/imdb`): "
                  f"the student keeps **{100 * meta['student_accuracy_ratio_test_vs_hybrid']:.1f}%** of its accuracy "
                  f"on the test sample and {100 * meta['student_accuracy_ratio_val_vs_hybrid']:.1f}% on validation, "
                  f"with {100 * s['params'] / h['params']:.0f}% of its parameters; int8: "
                  f"{100 * meta['int8_accuracy_ratio_test_vs_hybrid']:.1f}% / "
                  f"{100 * meta['int8_accuracy_ratio_val_vs_hybrid']:.1f}%. Its parameters count NBSVM's "
                  "weight per n-gram; its wall time adds NBSVM's fit to the teacher's."]
    return "\n".join([
        "## The IMDb recipe", "",
        f"`train/imdb_recipe.sh`, then `{payload.get('command', 'python -m benchmarks.imdb_recipe')}` — "
        f"{machine_line(payload['machine'])}. Configs: `configs/imdb.py` (`pretrain`, `pretrain_student`, "
        "`teacher_long` (whole reviews), `student`); the budgets are in the README section \"The IMDb recipe\". Validation: 2,500 "
        "reviews carved from train (seed 0); test: the 2,000-review test sample. Disk: a parameters-only "
        "checkpoint; examples/s: batch 64 on this CPU, model time after compilation.", "",
        markdown_table(rows, payload.get("columns") or COLUMNS), "",
        f"Student / teacher accuracy: **{100 * meta['student_accuracy_ratio_test']:.1f}%** on the test sample, "
        f"{100 * meta['student_accuracy_ratio_val']:.1f}% on validation, with "
        f"{100 * by['student']['params'] / by['teacher']['params']:.0f}% of the teacher's parameters; int8 student / teacher: "
        f"{100 * meta['int8_accuracy_ratio_test']:.1f}%. The teacher's wall time includes "
        f"{meta['lm_pretrain_wall_min']:.1f} min of LM pretraining; the student's includes "
        f"{meta.get('student_lm_wall_min', 0):.1f} min of its own.",
        *hybrid,
    ])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default=run_config.runs_path("imdb"), help="directory holding lm/, teacher/, student/, student_int8/")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-examples", type=int, default=0, help="evaluate only this many examples per split (0: all)")
    p.add_argument("--fresh", action="store_true",
                   help="measure every model here (default: a model whose run is not on this machine keeps its "
                        "committed row)")
    p.add_argument("--no-results-md", action="store_true")
    args = p.parse_args(argv)

    old_path = common.RESULTS_DIR / "imdb_recipe.json"
    old = {} if args.fresh else committed_rows(old_path, "model", lambda row, meta: row["model"] != HYBRID)
    old_meta = json.loads(old_path.read_text())["meta"] if old else {}
    present = {sub: os.path.isfile(os.path.join(args.runs, "student" if sub == "student_int8" else sub, "summary.json"))
               for _, sub in MODELS}
    missing = [name for name, sub in MODELS if not present[sub] and name not in old]
    if missing:
        raise SystemExit(f"no run of {', '.join(missing)} under {args.runs} (and no committed row"
                         f"{' kept: --fresh' if args.fresh else ''}): run train/imdb_recipe.sh first")
    lm_min = _wall_min_or(os.path.join(args.runs, "lm"), old_meta.get("lm_pretrain_wall_min", 0.0))
    student_lm_min = _wall_min_or(os.path.join(args.runs, "lm_student"), old_meta.get("student_lm_wall_min", 0.0))
    rows, reports = [], {}
    for name, sub in MODELS:
        if not present[sub]:
            print(f"{name}: {os.path.join(args.runs, sub)} is not here; its committed row is kept "
                  f"({old[name]['source']})", file=sys.stderr)
            rows.append(old[name])
            reports.update({k: v for k, v in old_meta.get("reports", {}).items() if k.startswith(f"{name}/")})
            continue
        row, model_reports = measure(args, name, sub, lm_min, student_lm_min)
        rows.append(row)
        reports.update(model_reports)
    for row in rows:  # kept and measured rows alike, against the teacher in this table
        row["params_vs_teacher"] = row["params"] / rows[0]["params"]
    hybrid = hybrid_row(rows[0])
    if hybrid:
        rows.insert(0, hybrid)
    meta = {"lm_pretrain_wall_min": lm_min, "student_lm_wall_min": student_lm_min, "reports": reports, **ratios(rows)}
    print(markdown_table(rows, COLUMNS))
    write_results("imdb_recipe", rows, COLUMNS, meta)
    if not args.no_results_md:
        rebuild_results_md()
    return 0


def measure(args, name: str, sub: str, lm_min: float, student_lm_min: float) -> tuple[dict, dict]:
    """One model's row (accuracy and macro F1 on validation and the test sample, size, speed, wall time)."""
    # lazy (JAX): the report imports this module for section() without JAX
    from memgpt_jax.apps.classify import evaluate_classifier, format_report
    from memgpt_jax.cli.compress import dir_bytes, params_disk_bytes, run_meta
    from memgpt_jax.flops import count_params
    from memgpt_jax.training.run import open_run

    run = os.path.join(args.runs, sub)
    opened = open_run(run, task="classification")
    if opened.quantized:
        disk = dir_bytes(os.path.join(run, "checkpoints"))
        wall = _wall_min(os.path.join(args.runs, "student")) + student_lm_min
        n_params = count_params(opened.model_config, "classification")
    else:
        disk = params_disk_bytes(opened.params, run_meta(opened))
        wall = _wall_min(run) + (lm_min if name == "teacher" else student_lm_min)
        n_params = count_params(opened.params)
    row = {"model": name, "attention": opened.model_config.attention.pattern, "params": n_params,
           "disk_MB": disk / 1e6, "train_wall_min": wall, "source": "this run"}
    reports = {}
    for split, prefix in (("validation", "val"), ("test", "test")):
        print(f"evaluating {name} on {split} ...", file=sys.stderr)
        rep = evaluate_classifier(opened, split, batch_size=args.batch_size, max_examples=args.max_examples,
                                  progress=False)
        print(format_report(rep), file=sys.stderr)
        reports[f"{name}/{split}"] = rep
        row[f"{prefix}_accuracy"] = rep["accuracy"]
        row[f"{prefix}_macro_f1"] = rep["macro_f1"]
        if split == "test":
            row["test_examples_per_s"] = rep["examples_per_s"]
    return row, reports


if __name__ == "__main__":
    raise SystemExit(main())
