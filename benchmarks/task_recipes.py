"""The tables of the summarization (AESLC), dialogue (KVRET) and question-answering
(SQuAD) recipes: the dense teacher, the block-sparse student and the int8 student on the
validation split, next to published results.

    python -m benchmarks.aeslc_recipe --runs runs/aeslc    (after train/aeslc_recipe.sh)
    python -m benchmarks.kvret_recipe --runs runs/kvret    (after train/kvret_recipe.sh)
    python -m benchmarks.squad_recipe --runs runs/squad    (after train/squad_recipe.sh)

Per model: parameters, what its parameters started from (``init``: the LM run and its
checkpoint step), CPU training wall time (both from the run's ``summary.json``; wall time
across restarts; the int8 row is the student's), and the task's metrics with greedy decoding and with beam
search (prompt -> target tasks), plus examples/s of that evaluation. Metrics: ROUGE-1/2/L
(``rouge-score``, stemming) against the original subject and against all references
(best per email); BLEU (sacrebleu) and entity F1 (micro, ``memgpt_jax/data/dialogue.py``);
SQuAD exact match / F1 (the official v1.1 normalization). Writes
``benchmarks/results/<task>_recipe.{json,md}`` and the task's section of RESULTS.md.

Rows are not measured twice. A row of the committed ``<task>_recipe.json`` is kept
(``source``: the commit that measured it) when its run is the same one (same ``init``,
training wall time and quantization), with the same decoding and ``--max-examples``;
``--fresh`` measures everything again. A model whose run is gone from this machine keeps
its committed rows, so a fresh machine can add the student without retraining the teacher.
A task's ``variants`` are extra rows for the levers tried on the way (e.g. AESLC's teacher
fine-tuned from the English LM alone, without the in-domain LM). ``--no-repeat-ngram`` and
``--min-new-tokens`` decode with those constraints (``memgpt_jax.apps.generate.Sampling``) into
rows of their own; the committed rows of the same runs under other decodings are kept. Where
the split has annotators' references (AESLC dev), a human row scores each annotator's text.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from typing import Any, Callable

from benchmarks import common
from benchmarks.common import committed_rows, machine_line, markdown_table, rebuild_results_md, write_results
from memgpt_jax import run_config


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    title: str
    split: str
    metrics: tuple[tuple[str, str], ...]  # (report key, column)
    anchors: tuple[str, ...]  # published results, quoted in the section
    max_new_tokens: int = 64
    decodes: bool = True  # prompt -> target (greedy and beam rows); False: extractive QA
    lead_baseline: bool = False  # a row for the first k words of the prompt (k: the median target length)
    variants: tuple[tuple[str, str], ...] = ()  # extra (model label, run subdirectory) rows: levers tried
    # (column, published value, whose): the anchors RESULTS.md's headline table sets the best model row against
    headlines: tuple[tuple[str, float, str], ...] = ()


TASKS = {
    "aeslc": Task(
        "aeslc", "AESLC email subject lines: summarization", "dev",
        (("rouge1", "R-1"), ("rouge2", "R-2"), ("rouge_l", "R-L"), ("rouge1_multi", "R-1 all refs"),
         ("rouge2_multi", "R-2 all refs"), ("rouge_l_multi", "R-L all refs"), ("bleu", "BLEU")),
        ("Zhang & Tetreault (2019), their best system on the test split: ROUGE-1/2/L 23.67 / 10.29 / 23.44; "
         "PEGASUS-large (pretrained on huge corpora): 37.68 / 21.25 / 36.51.",
         "Target: teacher ROUGE-1 >= 20 on dev against the original subject; aim past 23.67."),
        max_new_tokens=32, lead_baseline=True,
        variants=(("teacher, English LM only", "teacher_english_lm"), ("teacher, copy head", "teacher_copy"),
                  ("student, copy head", "student_copy"), ("student int8, copy head", "student_copy_int8"),
                  ("teacher, copy head, 600 steps more", "teacher_copy_more"),
                  ("teacher, copy head, from the in-domain LM", "teacher_copy_lm")),
        headlines=(("R-1", 23.67, "Zhang & Tetreault (2019), best system, test"),)),
    "kvret": Task(
        "kvret", "KVRET in-car assistant: knowledge-grounded dialogue", "validation",
        (("bleu", "BLEU"), ("entity_f1", "entity F1"), ("entity_precision", "entity P"),
         ("entity_recall", "entity R"), ("rouge_l", "R-L")),
        ("Eric et al. (2017), test split: KV Retrieval Net BLEU 13.2, entity F1 48.0; Mem2Seq (Madotto et al., "
         "2018): BLEU 12.6, entity F1 33.4.",
         "Target: BLEU >= 10 and entity F1 >= 33 on validation; aim past the KV Retrieval Net."),
        max_new_tokens=64, variants=(("teacher, 600 steps more", "teacher_more"),
                                     ("teacher, whole dialogues", "teacher_dialogues"),
                                     ("student, whole dialogues", "student_dialogues"),
                                     ("student int8, whole dialogues", "student_dialogues_int8"),
                                     ("student, whole dialogues, 6 global blocks", "student_dialogues_kb"),
                                     ("teacher, copy head", "teacher_copy"),
                                     ("student, copy head", "student_copy"),
                                     ("student int8, copy head", "student_copy_int8"),
                                     ("student, copy head, 600 steps more", "student_copy_more")),
        headlines=(("entity F1", 48.0, "KV Retrieval Net (Eric et al. 2017), test"),
                   ("BLEU", 13.2, "KV Retrieval Net (Eric et al. 2017), test"))),
    "squad": Task(
        "squad", "SQuAD v1.1 extractive question answering", "validation",
        (("exact_match", "EM"), ("f1", "F1")),
        ("Rajpurkar et al. (2016), dev: sliding-window baseline 13.2 EM / 20.2 F1; logistic regression "
         "40.0 EM / 51.0 F1, trained on the full 87,599-question train set (here: 30 articles, ~6,800 questions).",
         "Target: teacher above the sliding window's 20.2 F1 on the held-out articles; aim for 40."),
        decodes=False, variants=(("teacher, LM step 500", "teacher_lm500"),),
        headlines=(("F1", 20.2, "sliding-window baseline (Rajpurkar et al. 2016), dev"),)),
}
MODELS = (("teacher", "teacher"), ("student", "student"), ("student int8", "student_int8"))


def columns(task: Task) -> list[str]:
    lead = ["model", "attention", "params", "init"] + (["decoding"] if task.decodes else [])
    return lead + [column for _, column in task.metrics] + ["train_wall_min", "examples_per_s", "source"]


def decoding_label(beam: int, length_penalty: float, no_repeat_ngram: int = 0, min_new_tokens: int = 0) -> str:
    """A row's ``decoding``: greedy or beam, and the output constraints when set."""
    label = "greedy" if beam == 1 else f"beam {beam} (lp {length_penalty})"
    if no_repeat_ngram:
        label += f", no repeated {no_repeat_ngram}-gram"
    if min_new_tokens:
        label += f", >= {min_new_tokens} tokens"
    return label


def _report_key(name: str, split: str, decoding: str) -> str:
    """Where a row's full report lives in ``meta.reports`` (``<model>/<split>/beam<k>[/nr<n>][/min<m>]``)."""
    m = re.match(r"(?:greedy|beam (\d+) \(lp [^)]*\))(?:, no repeated (\d+)-gram)?(?:, >= (\d+) tokens)?$", decoding)
    if not m:
        return f"{name}/{split}/{decoding}"
    beam, nr, mn = m.groups()
    return f"{name}/{split}/beam{beam or 1}" + (f"/nr{nr}" if nr else "") + (f"/min{mn}" if mn else "")


def _decoding_order(row: dict[str, Any]) -> tuple:
    """Rows of one model: unconstrained greedy, beam, then constrained greedy, beam."""
    decoding = row.get("decoding") or ""
    return ("," in decoding, not decoding.startswith("greedy"))


def _evaluate(task: Task, opened: Any, beam: int, length_penalty: float, max_examples: int,
              no_repeat_ngram: int = 0, min_new_tokens: int = 0) -> dict[str, Any]:
    if not task.decodes:
        from memgpt_jax.apps.qa import evaluate_qa  # lazy (JAX): section() needs none of it
        from memgpt_jax.training.inputs import load_source

        source = load_source(opened.config.data, task.split)
        if max_examples:
            source = [source[i] for i in range(min(max_examples, len(source)))]
        report = evaluate_qa(opened, source)
        report.pop("predictions", None)
        report["examples_per_s"] = report.get("questions_per_s")
        return report
    from memgpt_jax.apps.seq2seq import entity_vocabulary, evaluate_pairs, load_pairs

    records = load_pairs(opened, task.split, max_examples=max_examples)
    report = evaluate_pairs(opened, records, beam=beam, length_penalty=length_penalty,
                            max_new_tokens=task.max_new_tokens, progress=False, entities=entity_vocabulary(opened),
                            no_repeat_ngram=no_repeat_ngram, min_new_tokens=min_new_tokens)
    report["examples_per_s"] = report["sentences_per_s"]
    return report


def lead_row(task: Task, opened: Any, max_examples: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The extractive anchor: each prompt's first k words as the output, k = the median
    target length in words on train (not chosen on the evaluation split), scored as the
    models are. A model below it is not reading its input."""
    import statistics

    from memgpt_jax.apps.seq2seq import load_pairs, score_outputs
    from memgpt_jax.data.prepared import as_text

    k = int(statistics.median(len(as_text(r["target"]).split()) for r in load_pairs(opened, "train")))
    records = load_pairs(opened, task.split, max_examples=max_examples)
    report = score_outputs([" ".join(as_text(r["prompt"]).split()[:k]) for r in records], records)
    row = {"model": f"lead-{k} baseline", "attention": "-", "params": 0, "init": "-",
           "decoding": f"the first {k} words", "train_wall_min": 0.0, "examples_per_s": None, "source": "this run"}
    row.update({column: report[key] for key, column in task.metrics if key in report})
    return row, report


def human_row(task: Task, opened: Any, max_examples: int) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The human anchor, for a split whose ``references`` are the original target and then
    annotators' ones (AESLC dev): each annotator's text as the output, scored against the
    original (the plain columns) and against the other references (the best one: the "all
    refs" columns), averaged over the annotators. ``None`` without annotators."""
    from memgpt_jax.apps.seq2seq import load_pairs, score_outputs
    from memgpt_jax.data.prepared import as_text

    records = load_pairs(opened, task.split, max_examples=max_examples)
    refs = [[as_text(x) for x in r.get("references") or ()] for r in records]
    n = min((len(x) for x in refs), default=0) - 1  # references[0] is the original
    if n < 1:
        return None
    per = []
    for a in range(1, n + 1):
        hyps = [x[a] for x in refs]
        others = [{"target": as_text(r["target"]), "references": [y for j, y in enumerate(x) if j != a]}
                  for r, x in zip(records, refs)]
        per.append(score_outputs(hyps, others))
    report = {k: sum(p[k] for p in per) / n for k in per[0] if isinstance(per[0][k], float)}
    row = {"model": f"human (each of {n} annotators)", "attention": "-", "params": 0, "init": "-",
           "decoding": "an annotator's text", "train_wall_min": 0.0, "examples_per_s": None, "source": "this run"}
    row.update({column: report[key] for key, column in task.metrics if key in report})
    return row, report


def _identity(row: dict[str, Any]) -> tuple:
    """Which measurement a row is: the run (its init, training wall time, int8 or not), the
    decoding and the number of examples scored."""
    return (row.get("init"), round(row.get("train_wall_min") or 0.0, 6), bool(row.get("quantized")),
            row.get("decoding"), row.get("max_examples", 0))


def committed(task: Task, lead: bool = False) -> list[dict[str, Any]]:
    """The measured rows of the committed ``<task>_recipe.json``, each with ``source``: the
    models' (``lead=False``) or the anchors' (``lead=True``: the lead and human rows, which have
    no parameters)."""
    rows = committed_rows(common.RESULTS_DIR / f"{task.name}_recipe.json", lambda r: (r["model"], r.get("decoding")),
                          lambda row, meta: (row.get("params", 0) == 0) == lead)
    return list(rows.values())


def committed_reports(task: Task) -> dict[str, Any]:
    """The per-model reports (scores, example outputs) of the committed ``<task>_recipe.json``."""
    path = common.RESULTS_DIR / f"{task.name}_recipe.json"
    return (json.loads(path.read_text()).get("meta") or {}).get("reports") or {} if path.is_file() else {}


def run(task: Task, runs: str, *, beam: int = 4, length_penalty: float = 1.0, max_examples: int = 0,
        fresh: bool = False, no_repeat_ngram: int = 0,
        min_new_tokens: int = 0) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from memgpt_jax.flops import count_params  # lazy (JAX)
    from memgpt_jax.training.run import open_run

    old = [] if fresh else committed(task)
    old_reports = {} if fresh else committed_reports(task)
    by_identity = {_identity(r): r for r in old}
    rows, reports = [], {}
    data_run = None  # any run opened here: the lead baseline reads the data through its config

    def keep_reports(name: str) -> None:  # a kept row keeps its report (nothing measured is dropped)
        reports.update({k: v for k, v in old_reports.items() if k.startswith(f"{name}/")})

    for name, sub in (*MODELS[:1], *task.variants, *MODELS[1:]):
        path = os.path.join(runs, sub)
        # an int8 run (<run>_int8) has no training record of its own: its float run's is its
        record = os.path.join(runs, sub.removesuffix("_int8"), "summary.json")
        if not (os.path.isdir(path) and os.path.isfile(record)):
            kept = [r for r in old if r["model"] == name]
            print(f"{name}: {record if os.path.isdir(path) else path} does not exist; "
                  + (f"{len(kept)} committed row(s) kept" if kept else "skipped"), file=sys.stderr)
            rows += kept
            keep_reports(name)
        else:
            opened = data_run = open_run(path)
            with open(record) as f:
                summary = json.load(f)
            init = summary.get("init")
            base = {"model": name, "attention": opened.model_config.attention.pattern,
                    "params": count_params(opened.model_config, opened.task), "train_wall_min": summary["wall_s"] / 60,
                    "init": f"{init['from']} step {init['step']}" if init else "random",
                    "quantized": bool(opened.quantized), "max_examples": max_examples}
            mine = []  # this run's rows
            for b in ((1, beam) if task.decodes else (1,)):
                row = dict(base)
                key = f"{name}/{task.split}/beam{b}"
                if task.decodes:
                    row["decoding"] = decoding_label(b, length_penalty, no_repeat_ngram, min_new_tokens)
                    key = _report_key(name, task.split, row["decoding"])
                if _identity(row) in by_identity:
                    mine.append({**by_identity[_identity(row)], "model": name})
                    if key in old_reports:
                        reports[key] = old_reports[key]
                    print(f"{name} {row.get('decoding', '')}: measured before ({mine[-1]['source']})", file=sys.stderr)
                    continue
                report = _evaluate(task, opened, b, length_penalty, max_examples, no_repeat_ngram, min_new_tokens)
                row.update({k: report[m] for m, k in task.metrics if m in report},
                           examples_per_s=report["examples_per_s"], source="this run")
                mine.append(row)
                reports[key] = report
                print(f"{name} {row.get('decoding', '')}: "
                      + ", ".join(f"{c} {row[c]:.2f}" for _, c in task.metrics if c in row), file=sys.stderr)
            # this run's committed rows of other decodings (e.g. without the constraints) stay
            same_run = _identity(base)[:3]
            measured = {r.get("decoding") for r in mine}
            others = [r for r in old if r["model"] == name and r.get("decoding") not in measured
                      and _identity(r)[:3] == same_run]
            for r in others:
                k = _report_key(name, task.split, r.get("decoding") or "")
                if k in old_reports:
                    reports[k] = old_reports[k]
            rows += sorted(mine + others, key=_decoding_order)
    if task.lead_baseline:  # after the teacher's rows, whichever run read the data
        at = sum(1 for r in rows if r["model"] == "teacher")
        if data_run is not None:
            row, reports["lead_baseline"] = lead_row(task, data_run, max_examples)
            human = human_row(task, data_run, max_examples)
            if human is not None:
                reports["human_baseline"] = human[1]
            rows[at:at] = [row] + ([human[0]] if human else [])
        else:
            rows[at:at] = [] if fresh else committed(task, lead=True)
            reports.update({k: old_reports[k] for k in ("lead_baseline", "human_baseline") if k in old_reports})
    return rows, reports


def section_for(name: str) -> Callable[[dict], str]:
    task = TASKS[name]

    def section(payload: dict) -> str:
        return "\n".join([
            f"## {task.title}", "",
            f"`train/{name}_recipe.sh`, then `{payload.get('command', f'python -m benchmarks.{name}_recipe')}` — "
            f"{machine_line(payload['machine'])}. Config: `configs/{name}.py`; metrics on `{task.split}` "
            "(see `benchmarks/task_recipes.py` for how each is computed).", "",
            markdown_table(payload["rows"], payload.get("columns") or columns(task)), "",
            "Published: " + " ".join(task.anchors),
        ])

    return section


def main(name: str, argv: list[str] | None = None) -> int:
    task = TASKS[name]
    p = argparse.ArgumentParser(prog=f"python -m benchmarks.{name}_recipe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default=run_config.runs_path(name), help="the recipe's runs (teacher, student, student_int8)")
    p.add_argument("--beam", type=int, default=4, help="beam width of the beam rows (default: %(default)s)")
    p.add_argument("--length-penalty", type=float, default=1.0)
    p.add_argument("--max-examples", type=int, default=0, help="score only the first N examples (0: all)")
    p.add_argument("--fresh", action="store_true", help="measure every row again (default: keep the committed "
                   "rows of the same runs, and those of runs not on this machine)")
    p.add_argument("--no-repeat-ngram", type=int, default=0, metavar="N",
                   help="decode without repeating an N-gram of tokens within an output (rows of their own; 0: off)")
    p.add_argument("--min-new-tokens", type=int, default=0, metavar="M",
                   help="no end of sequence before M new tokens (rows of their own; 0: off)")
    p.add_argument("--no-results-md", action="store_true")
    args = p.parse_args(argv)
    rows, reports = run(task, args.runs, beam=args.beam, length_penalty=args.length_penalty,
                        max_examples=args.max_examples, fresh=args.fresh, no_repeat_ngram=args.no_repeat_ngram,
                        min_new_tokens=args.min_new_tokens)
    if not rows:
        raise SystemExit(f"no runs under {args.runs}: run train/{name}_recipe.sh first")
    cols = columns(task)
    print(markdown_table(rows, cols))
    write_results(f"{name}_recipe", rows, cols, {"reports": reports, "split": task.split, "beam": args.beam})
    if not args.no_results_md:
        rebuild_results_md()
    return 0
