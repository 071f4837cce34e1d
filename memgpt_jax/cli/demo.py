"""``memgpt-jax demo``: the project's main job, offline, in minutes on a CPU.

1. generates ListOps (nested MAX/MIN/MED/SM expressions; 10 classes),
2. trains a dense Transformer teacher on it,
3. distills a smaller block-sparse student from the teacher (KL at T=2 mixed
   with the hard labels),
4. evaluates both on the test split and prints a table: parameters, attention,
   accuracy, macro F1 and examples/s, beside the majority-class baseline.

Config: ``configs/listops.py`` (variants ``demo_teacher`` and ``demo_student``:
expressions of up to 32 tokens with one level of nesting): the current directory's
when it has one (a checkout), else the copy installed with the package. Data goes to
``$MEMGPT_DATA_DIR``, else to ``WORKDIR/data``. The runs land in
``WORKDIR/teacher`` and ``WORKDIR/student``; the demo ends with commands to try
on them (classify, eval, attention-map, export), ready to paste into a new shell.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from memgpt_jax.training.run import Run

DEFAULT_CONFIG = os.path.join("configs", "listops.py")
VARIANTS = {"teacher": "demo_teacher", "student": "demo_student"}
EXAMPLE = "[MAX 2 9 [MIN 4 7 ] 0 ]"  # = 9


def _test_metrics(run: Run) -> dict[str, float]:
    """Test-split accuracy/F1 and inference examples/s (model time, compile excluded) of a finished run."""
    # lazy: keeps --help fast
    from memgpt_jax.training.evaluate import evaluate
    from memgpt_jax.training.inputs import eval_batches

    batches = list(eval_batches(run.config.replace(data={"eval_split": "test", "eval_batches": 0}), run.tokenizer))
    evaluate(run.task, run.model, run.params, batches[:1])  # compile
    t0 = time.perf_counter()
    result = evaluate(run.task, run.model, run.params, batches)
    result["examples_per_s"] = result["examples"] / (time.perf_counter() - t0)
    return result


def run_demo(args: argparse.Namespace) -> int:
    # lazy: keeps --help fast
    import numpy as np

    from memgpt_jax import run_config
    from memgpt_jax.cli.train import teacher_or_exit
    from memgpt_jax.flops import count_params
    from memgpt_jax.training.inputs import load_source
    from memgpt_jax.training.loop import train
    from memgpt_jax.training.run import open_run

    t_start = time.perf_counter()
    workdir = os.path.abspath(args.workdir)
    data_dir = os.environ.get("MEMGPT_DATA_DIR") or os.path.join(workdir, "data")
    common = [f"--config.train.seed={args.seed}", f"--config.data.data_dir={data_dir}"]
    dirs = {name: os.path.join(workdir, name) for name in ("teacher", "student")}
    steps = {"teacher": args.teacher_steps, "student": args.student_steps}
    overrides = {name: common + ([f"--config.train.steps={steps[name]}"] if steps[name] else [])
                 for name in dirs}
    overrides["student"].append(f"--config.distill.teacher={dirs['teacher']}")
    try:
        configs = {name: run_config.load(f"{args.config}:{VARIANTS[name]}", overrides[name]) for name in dirs}
    except run_config.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    progress = not args.no_progress
    walls = {}
    for i, (name, title) in enumerate((("teacher", "dense Transformer on ListOps"),
                                       ("student", "block-sparse, distilled from the teacher"))):
        print(f"== {i + 1}/3 {name}: {title}", file=sys.stderr)
        summary = train(configs[name], dirs[name], teacher=teacher_or_exit(configs[name]), progress=progress)
        walls[name] = summary["wall_s"]  # across restarts; a rerun reports the training it reuses
        if args.teacher_only:
            print(f"teacher: {dirs['teacher']}; the same command without --teacher-only distills the student "
                  "from it", file=sys.stderr)
            return 0

    print("== 3/3 evaluation on the test split", file=sys.stderr)
    rows = []
    for name in ("teacher", "student"):
        run = open_run(dirs[name], task=configs[name].task)
        m = _test_metrics(run)
        attn = run.model_config.attention
        rows.append({
            "model": name, "params": count_params(run.params),
            "attention": attn.pattern if attn.pattern == "dense" else f"{attn.pattern} (block {attn.block_size})",
            "accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "examples_per_s": m["examples_per_s"],
            "train_wall_s": walls[name],
        })
    test = load_source(configs["teacher"].data, "test")
    labels = np.asarray([int(test[i]["label"]) for i in range(len(test))])
    majority = float(np.bincount(labels, minlength=10).max() / len(labels))
    total = time.perf_counter() - t_start

    print()
    print(f"ListOps test split ({len(labels)} examples; chance 10%, majority class {majority:.1%})")
    print(f"{'model':<8} {'params':>9} {'attention':<28} {'accuracy':>8} {'macro F1':>8} {'ex/s':>8} {'train s':>8}")
    for r in rows:
        print(f"{r['model']:<8} {r['params']:>9,} {r['attention']:<28} {r['accuracy']:>8.1%} "
              f"{r['macro_f1']:>8.3f} {r['examples_per_s']:>8,.0f} {r['train_wall_s']:>8.1f}")
    print(f"{'majority':<8} {'':>9} {'(most frequent label)':<28} {majority:>8.1%}")
    teacher, student = rows
    print(f"student/teacher: parameters {student['params'] / teacher['params']:.1%}, "
          f"accuracy {student['accuracy'] / max(teacher['accuracy'], 1e-9):.1%}; wall time of this command {total:.0f}s")
    print()
    print(f"runs: teacher {dirs['teacher']}")
    print(f"      student {dirs['student']}")
    print("try next:")
    for command in next_commands(dirs, workdir):
        print(f"  {command}")
    with open(os.path.join(workdir, "demo.json"), "w") as f:
        json.dump({"rows": rows, "majority": majority, "wall_s": total, "runs": dirs}, f, indent=2)
    return 0


def executable() -> str:
    """This installation's ``memgpt-jax`` by its full path (a venv's ``bin/`` is not on a new
    shell's PATH), or this Python with ``-m`` when the command did not start from the script."""
    script = os.path.abspath(sys.argv[0])
    if os.path.basename(script) == "memgpt-jax" and os.path.isfile(script):
        return shlex.quote(script)
    return f"{shlex.quote(sys.executable)} -m memgpt_jax.cli"


def next_commands(dirs: dict[str, str], workdir: str) -> list[str]:
    """Commands to try on the demo's runs, each runnable as is in a new shell."""
    cli = executable()
    student, teacher = shlex.quote(dirs["student"]), shlex.quote(dirs["teacher"])
    return [
        f"{cli} classify --checkpoint {student} {shlex.quote(EXAMPLE)}",
        f"{cli} eval --checkpoint {teacher} --split test",
        (f"{cli} attention-map --checkpoint {student} --text {shlex.quote(EXAMPLE)} "
         f"--out {shlex.quote(os.path.join(workdir, 'maps'))}"),
        f"{cli} export --checkpoint {student} --out {shlex.quote(os.path.join(workdir, 'student-torch'))} "
        "--overwrite",
    ]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="offline demo: train a dense teacher and distill a block-sparse student on ListOps",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--workdir", default="runs/demo", help="where runs, data and demo.json go (default runs/demo)")
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help="config file with demo_teacher/demo_student variants (default: %(default)s, the "
                        "current directory's if it has one, else the installed copy)")
    p.add_argument("--teacher-steps", type=int, default=None, help="default: the config's train.steps")
    p.add_argument("--student-steps", type=int, default=None, help="default: the config's train.steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--teacher-only", action="store_true",
                   help="stop after training the teacher (a later run without it reuses that teacher)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_demo)
