"""The IMDb recipe's table: teacher, block-sparse student, int8 student.

    python -m benchmarks.imdb_recipe --runs runs/imdb       (after train/imdb_recipe.sh)

For each model: parameters, size on disk of an inference checkpoint (parameters
only), accuracy and macro F1 on the validation split and on the test split (the
2,000-review "test sample" of the dev archive), CPU training wall time (from each
run's ``summary.json``; each model's includes its own LM pretraining, listed apart
too), and inference examples/s on the test split (batch 64, model time after
compilation). Writes ``benchmarks/results/imdb_recipe.{json,md}`` and the "IMDb
recipe" section of RESULTS.md (rebuilt by ``benchmarks.report``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from benchmarks.common import machine_line, markdown_table, rebuild_results_md, write_results

COLUMNS = ["model", "attention", "params", "params_vs_teacher", "disk_MB", "val_accuracy", "val_macro_f1",
           "test_accuracy", "test_macro_f1", "train_wall_min", "test_examples_per_s"]


def _wall_min(run: str) -> float:
    with open(os.path.join(run, "summary.json")) as f:
        return json.load(f)["wall_s"] / 60.0


def section(payload: dict) -> str:
    """The RESULTS.md section, from ``results/imdb_recipe.json``."""
    rows, meta = payload["rows"], payload["meta"]
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
        f"{100 * rows[1]['params_vs_teacher']:.0f}% of the teacher's parameters; int8 student / teacher: "
        f"{100 * meta['int8_accuracy_ratio_test']:.1f}%. The teacher's wall time includes "
        f"{meta['lm_pretrain_wall_min']:.1f} min of LM pretraining; the student's includes "
        f"{meta.get('student_lm_wall_min', 0):.1f} min of its own.",
    ])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs/imdb", help="directory holding lm/, teacher/, student/, student_int8/")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-examples", type=int, default=0, help="evaluate only this many examples per split (0: all)")
    p.add_argument("--no-results-md", action="store_true")
    args = p.parse_args(argv)

    # lazy (JAX): the report imports this module for section() without JAX
    from memgpt_jax.apps.classify import evaluate_classifier, format_report
    from memgpt_jax.cli.compress import dir_bytes, params_disk_bytes, run_meta
    from memgpt_jax.flops import count_params
    from memgpt_jax.training.run import open_run

    lm_min = _wall_min(os.path.join(args.runs, "lm"))
    student_lm = os.path.join(args.runs, "lm_student")
    student_lm_min = _wall_min(student_lm) if os.path.isfile(os.path.join(student_lm, "summary.json")) else 0.0
    models = [("teacher", "teacher"), ("student", "student"), ("student int8", "student_int8")]
    rows, reports = [], {}
    teacher_params = None
    for name, sub in models:
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
        teacher_params = teacher_params or n_params
        row = {"model": name, "attention": opened.model_config.attention.pattern, "params": n_params,
               "params_vs_teacher": n_params / teacher_params, "disk_MB": disk / 1e6, "train_wall_min": wall}
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
        rows.append(row)
    t_acc = rows[0]["test_accuracy"]
    meta = {"lm_pretrain_wall_min": lm_min, "student_lm_wall_min": student_lm_min, "reports": reports,
            "student_accuracy_ratio_test": rows[1]["test_accuracy"] / t_acc,
            "student_accuracy_ratio_val": rows[1]["val_accuracy"] / rows[0]["val_accuracy"],
            "int8_accuracy_ratio_test": rows[2]["test_accuracy"] / t_acc}
    print(markdown_table(rows, COLUMNS))
    write_results("imdb_recipe", rows, COLUMNS, meta)
    if not args.no_results_md:
        rebuild_results_md()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
