"""Training commands: ``pretrain``, ``finetune``, ``distill``.

    memgpt-jax pretrain --config configs/shakespeare.py --workdir runs/shakespeare
    memgpt-jax finetune --config configs/listops.py --workdir runs/listops --config.train.steps=500
    memgpt-jax distill  --config configs/listops.py:student --workdir runs/student \\
        --config.distill.teacher=runs/listops
    memgpt-jax distill  --config configs/shakespeare.py:sparse --workdir runs/student \\
        --config.distill.teacher=hf:exported/gpt2   (a Hugging Face GPT-2 of the student's vocabulary)

A run restarted with the same ``--workdir`` resumes from its newest good
checkpoint. Multi-host (Cloud TPU pods, several GPU hosts): pass ``--distributed``
on every host (and ``--coordinator/--num-processes/--process-id`` where the
platform does not provide them).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Sequence

from memgpt_jax import cli as cli_lib

if TYPE_CHECKING:
    from memgpt_jax.run_config import RunConfig
    from memgpt_jax.training.run import Run

def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="config file (configs/*.py), optionally path:variant")
    p.add_argument("--workdir", required=True, help="run directory: checkpoints, metrics.jsonl, tensorboard/")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    p.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                   help="stop at this step, with its checkpoint saved, keeping the schedule of train.steps: "
                        "a long run in slices (rerun without it, or with a later STEP, to go on)")
    p.add_argument("--distributed", action="store_true", help="call jax.distributed.initialize (multi-host)")
    p.add_argument("--coordinator", default=None, help="multi-host coordinator address host:port")
    p.add_argument("--num-processes", type=int, default=None)
    p.add_argument("--process-id", type=int, default=None)


def _open_hf_run(directory: str, task: str | None) -> Run:
    """``hf:DIR``: the converter, imported only when a teacher names one (it needs torch)."""
    from memgpt_jax.export.hf_gpt2 import open_hf_run

    return open_hf_run(directory, task)


def teacher_or_exit(config: RunConfig) -> Run | None:
    """The teacher ``config.distill.teacher`` names (``None`` when distillation is off), opened
    by :func:`memgpt_jax.training.teacher.open_teacher` with the Hugging Face converter for
    ``hf:DIR`` members; a one-line ``error:`` and exit code 2 when it cannot be opened."""
    if not config.distill.teacher:
        return None
    # lazy: keeps --help fast
    from memgpt_jax.export.mapping import ConversionError
    from memgpt_jax.training.run import RunError
    from memgpt_jax.training.teacher import open_teacher

    try:
        return open_teacher(config.distill.teacher, config.task, open_hf=_open_hf_run)
    except (FileNotFoundError, RunError, ConversionError) as e:
        print(f"error: distill.teacher={config.distill.teacher}: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def run_command(kind: str, args: argparse.Namespace, overrides: Sequence[str]) -> int:
    # lazy: keeps --help fast
    import jax

    from memgpt_jax import run_config, tasks
    from memgpt_jax.training import runlock
    from memgpt_jax.training.loop import train

    if args.distributed or args.coordinator:
        jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=args.num_processes,
                                   process_id=args.process_id)
    try:
        config = run_config.load(args.config, overrides)
        task = tasks.check(config)
    except run_config.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if kind not in task.commands:
        print(f"error: `{kind}` trains tasks {tasks.accepting(kind)}, but the config's task is {config.task!r}",
              file=sys.stderr)
        return 2
    if kind == "distill" and not config.distill.enabled:
        print("error: distill needs a teacher: --config.distill.teacher=RUN_DIR (or hf:DIR)", file=sys.stderr)
        return 2
    if args.stop_at is not None and not 0 < args.stop_at <= config.train.steps:
        print(f"error: --stop-at {args.stop_at}: must be in 1..train.steps ({config.train.steps})", file=sys.stderr)
        return 2
    # the run directory is taken before any slow set-up: a second writer is refused at once
    with runlock.hold(args.workdir, enabled=jax.process_index() == 0):
        teacher = teacher_or_exit(config)
        summary = train(config, args.workdir, teacher=teacher, progress=not args.no_progress,
                        stop_at=args.stop_at)  # errors: cli._report
    evaluated = ", ".join(f"{k} {v:.4g}" for k, v in summary["eval"].items()) or (
        "none (train.eval_every=0)" if not config.train.eval_every else "none in this command")
    print(f"done: {args.workdir} at step {summary['step']}, {summary['params']:,} parameters, "
          f"{summary['wall_s']:.1f} s of training; eval: {evaluated}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    for kind, help_text in (
        ("pretrain", "train a language model (task lm)"),
        ("finetune", "train a task model (classification, qa) from scratch or from a pretrained run"),
        ("distill", "distill a student from a teacher run (config distill.teacher)"),
    ):
        p = sub.add_parser(kind, help=help_text, description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog="Any config field can be overridden: --config.section.field=value")
        _add_run_args(p)
        p.set_defaults(func=lambda a, kind=kind: run_command(kind, a, a.overrides), accepts_overrides=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry for ``train/*.py``: ``main(["pretrain", "--config", ...])``."""
    return cli_lib.main(argv)
