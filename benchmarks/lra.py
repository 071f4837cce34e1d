"""Long-range accuracy, LRA style: dense vs block-sparse models of equal size and budget.

    python -m benchmarks.lra                                  # ListOps 2k and byte-level IMDb 4k
    python -m benchmarks.lra --tasks listops --steps 300      # a smaller budget
    python -m benchmarks.lra --tasks listops --tiny           # seconds (the tiny variants)

Each (task, variant) is trained with ``memgpt-jax finetune`` in its own process
(``configs/lra_listops.py``, ``configs/lra_imdb_bytes.py``: the same model, only the
attention differs; the same steps, batch and schedule), resumable in ``--runs``,
then evaluated on the test split. Reports test accuracy and macro F1, training
wall time, tokens/s, and the training process's peak memory. IMDb must be
prepared (``memgpt-jax data prepare imdb``); ListOps is generated on first use.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from benchmarks.common import machine_line, markdown_table, rebuild_results_md, write_results

COLUMNS = ["task", "attention", "seq_len", "params", "steps", "batch", "test_accuracy", "test_macro_f1", "train_wall_min",
           "train_tokens_per_s", "peak_rss_mb"]
TASKS = {"listops": "configs/lra_listops.py", "text": "configs/lra_imdb_bytes.py"}
# LRA (Tay et al., 2021), test accuracy: (ListOps, Text)
LRA_REFERENCE = {"Transformer": (36.37, 64.27), "BigBird": (36.05, 64.02)}


def section(payload: dict) -> str:
    rows, meta = payload["rows"], payload["meta"]
    ref = "; ".join(f"{k} {v[0]} / {v[1]}" for k, v in LRA_REFERENCE.items())
    lines = ["## Long-range accuracy (LRA-style): dense vs block-sparse", "",
             f"`{payload.get('command', 'python -m benchmarks.lra')}` — {machine_line(payload['machine'])}. "
             f"Budget: {meta['budget']}. Same model and schedule per task; only the attention differs.", "",
             markdown_table(rows, payload.get("columns") or COLUMNS), "",
             f"For orientation, LRA's published test accuracies (ListOps / Text, full budgets on accelerators): {ref}."]
    by = {(r["task"], r["attention"]): r for r in rows}
    for task in sorted({r["task"] for r in rows}):
        d, s = by.get((task, "dense")), next((r for (t, a), r in by.items() if t == task and a != "dense"), None)
        if d and s:
            lines.append(f"- {task}: sparse / dense training wall time {s['train_wall_min'] / d['train_wall_min']:.2f}, "
                         f"peak memory {s['peak_rss_mb'] / d['peak_rss_mb']:.2f}, accuracy "
                         f"{100 * s['test_accuracy']:.1f}% vs {100 * d['test_accuracy']:.1f}%.")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--variants", nargs="+", default=["dense", "sparse"])
    p.add_argument("--steps", type=int, default=None, help="training steps per run (default: the config's)")
    p.add_argument("--batch-size", type=int, default=None, help="training batch per run (default: the config's)")
    p.add_argument("--runs", default=None, help="run directories (default runs/lra; a temp dir with --tiny)")
    p.add_argument("--tiny", action="store_true", help="the tiny variants (a smoke run)")
    args = p.parse_args(argv)

    # lazy (JAX): the report imports this module for section() without JAX
    from memgpt_jax.apps.classify import evaluate_classifier
    from memgpt_jax.training.run import open_run

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if args.runs is None:
        args.runs = tempfile.mkdtemp(prefix="memgpt_lra_tiny_") if args.tiny else "runs/lra"
    rows = []
    for task in args.tasks:
        for variant in args.variants:
            config = f"{os.path.join(root, TASKS[task])}:{'tiny' if args.tiny else variant}"
            workdir = os.path.join(args.runs, f"{task}_{variant}")
            cmd = [sys.executable, "-m", "memgpt_jax.cli", "finetune", "--config", config, "--workdir", workdir,
                   "--no-progress"]
            if args.tiny and variant == "dense":
                cmd.append("--config.model.attention.pattern=dense")
            if args.steps:
                cmd.append(f"--config.train.steps={args.steps}")
            if args.batch_size:
                cmd.append(f"--config.data.batch_size={args.batch_size}")
            print(f"== {task} {variant}: {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
            subprocess.run(cmd, check=True)
            with open(os.path.join(workdir, "summary.json")) as f:
                summary = json.load(f)
            run = open_run(workdir, task="classification")
            rep = evaluate_classifier(run, "test", batch_size=16, progress=False)
            rows.append({"task": task, "attention": run.model_config.attention.pattern,
                         "seq_len": run.config.data.seq_len, "params": summary["params"], "steps": summary["step"],
                         "batch": run.config.data.batch_size, "test_accuracy": rep["accuracy"],
                         "test_macro_f1": rep["macro_f1"], "train_wall_min": summary["wall_s"] / 60,
                         "train_tokens_per_s": summary.get("train", {}).get("tokens_per_s"),
                         "peak_rss_mb": summary.get("peak_rss_mb")})
            print(rows[-1], file=sys.stderr, flush=True)
    budget = (f"{rows[0]['steps']} steps x batch {rows[0]['batch']} per run"
              if len({(r['steps'], r['batch']) for r in rows}) == 1 else "see the steps and batch columns")
    print(markdown_table(rows, COLUMNS))
    write_results("lra", rows, COLUMNS, {**vars(args), "budget": budget})
    rebuild_results_md()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
