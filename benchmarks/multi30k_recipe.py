"""The Multi30k en->de recipe's table: teacher, block-sparse student, int8 student.

    python -m benchmarks.multi30k_recipe --runs runs/multi30k     (after train/multi30k_recipe.sh)

For each model: parameters, BLEU and chrF (sacrebleu, detokenized) on ``val`` and
``test_2016_flickr`` with greedy decoding and with beam search (``--beam``), CPU
training wall time (``summary.json``; the student's excludes the teacher's decoding
of the train set, which is listed apart), and sentences/s decoding (batch 32).
Writes ``benchmarks/results/multi30k_recipe.{json,md}`` and the "Multi30k" section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from benchmarks.common import machine_line, markdown_table, rebuild_results_md, write_results
from memgpt_jax import run_config

COLUMNS = ["model", "attention", "params", "decoding", "val_bleu", "val_chrf", "test_bleu", "test_chrf",
           "train_wall_min", "test_sentences_per_s"]
DATASET = "memgpt_pairs/multi30k_en_de"


def section(payload: dict) -> str:
    """The RESULTS.md section, from ``results/multi30k_recipe.json``."""
    rows = payload["rows"]
    t = next((r for r in rows if r["model"] == "teacher" and r["decoding"] != "greedy"), None)
    s = next((r for r in rows if r["model"] == "student" and r["decoding"] != "greedy"), None)
    summary = (f"Student - teacher BLEU on test_2016_flickr ({t['decoding']}): **{s['test_bleu'] - t['test_bleu']:+.2f}**."
               if s and t else "")
    return "\n".join([
        "## Multi30k en->de: prompt->target fine-tuning and sequence-level distillation", "",
        f"`train/multi30k_recipe.sh`, then `{payload.get('command', 'python -m benchmarks.multi30k_recipe')}` — "
        f"{machine_line(payload['machine'])}. Configs: `configs/multi30k.py` (`teacher`, `student`). BLEU and "
        "chrF: sacrebleu corpus scores of detokenized output against the raw references; selection on `val`, "
        "report on `test_2016_flickr`.", "",
        markdown_table(rows, payload.get("columns") or COLUMNS), "", summary,
    ])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default=run_config.runs_path("multi30k"))
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--length-penalty", type=float, default=1.0)
    p.add_argument("--max-examples", type=int, default=0, help="score only the first N sentences (0: all)")
    p.add_argument("--no-results-md", action="store_true")
    args = p.parse_args(argv)

    # lazy (JAX): the report imports this module for section() without JAX
    from memgpt_jax.apps.seq2seq import evaluate_pairs, load_pairs
    from memgpt_jax.flops import count_params
    from memgpt_jax.training.run import open_run

    rows, reports = [], {}
    for name, sub in (("teacher", "teacher"), ("student", "student"), ("student int8", "student_int8")):
        run = os.path.join(args.runs, sub)
        if not os.path.isdir(run):
            print(f"skipping {name}: {run} does not exist", file=sys.stderr)
            continue
        opened = open_run(run, task="lm")
        opened = dataclasses.replace(opened, config=opened.config.replace(data={"name": DATASET}))
        wall_run = os.path.join(args.runs, "student" if opened.quantized else sub)
        with open(os.path.join(wall_run, "summary.json")) as f:
            wall = json.load(f)["wall_s"] / 60
        for beam in (1, args.beam):
            row = {"model": name, "attention": opened.model_config.attention.pattern,
                   "params": count_params(opened.model_config, "lm"),
                   "decoding": "greedy" if beam == 1 else f"beam {beam} (lp {args.length_penalty})",
                   "train_wall_min": wall}
            for split, prefix in (("val", "val"), ("test_2016_flickr", "test")):
                records = load_pairs(opened, split, max_examples=args.max_examples)
                rep = evaluate_pairs(opened, records, beam=beam, length_penalty=args.length_penalty,
                                     max_new_tokens=80, progress=False)
                print(f"{name} {split} beam {beam}: BLEU {rep['bleu']:.2f} chrF {rep['chrf']:.2f}", file=sys.stderr)
                reports[f"{name}/{split}/beam{beam}"] = rep
                row[f"{prefix}_bleu"], row[f"{prefix}_chrf"] = rep["bleu"], rep["chrf"]
                if prefix == "test":
                    row["test_sentences_per_s"] = rep["sentences_per_s"]
            rows.append(row)
    if not rows:
        raise SystemExit(f"no runs under {args.runs}")
    print(markdown_table(rows, COLUMNS))
    write_results("multi30k_recipe", rows, COLUMNS, {"reports": reports, "beam": args.beam,
                                                     "length_penalty": args.length_penalty})
    if not args.no_results_md:
        rebuild_results_md()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
