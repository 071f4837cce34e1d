"""Training commands: ``pretrain``, ``finetune``, ``distill``, ``demo``.

    memgpt-jax pretrain --config configs/shakespeare.py --workdir runs/shakespeare
    memgpt-jax finetune --config configs/listops.py --workdir runs/listops --config.train.steps=500
    memgpt-jax distill  --config configs/listops_student.py --workdir runs/student \
        --config.distill.teacher=runs/listops

A run restarted with the same ``--workdir`` resumes from its newest good
checkpoint. Multi-host (Cloud TPU pods, several GPU hosts): pass ``--distributed``
on every host (and ``--coordinator/--num-processes/--process-id`` where the
platform does not provide them).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

_EXPECTED = {
    "pretrain": ("lm",),
    "finetune": ("classification", "qa", "lm"),
    "distill": ("lm", "classification", "qa"),
}


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="config file (configs/*.py), optionally path:arg")
    p.add_argument("--workdir", required=True, help="run directory: checkpoints, metrics.jsonl, tensorboard/")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    p.add_argument("--distributed", action="store_true", help="call jax.distributed.initialize (multi-host)")
    p.add_argument("--coordinator", default=None, help="multi-host coordinator address host:port")
    p.add_argument("--num-processes", type=int, default=None)
    p.add_argument("--process-id", type=int, default=None)


def run_command(kind: str, args: argparse.Namespace, overrides: Sequence[str]) -> int:
    if args.distributed or args.coordinator:
        import jax

        jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=args.num_processes,
                                   process_id=args.process_id)
    from memgpt_jax.training.config_io import load_config
    from memgpt_jax.training.loop import NonFiniteLossError, train

    try:
        config = load_config(args.config, overrides)
    except (FileNotFoundError, KeyError, TypeError, ValueError, AttributeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if config.task not in _EXPECTED[kind]:
        print(f"error: `{kind}` trains tasks {_EXPECTED[kind]}, but the config's task is {config.task!r}",
              file=sys.stderr)
        return 2
    if kind == "distill" and not config.get("distill", {}).get("teacher"):
        print("error: distill needs a teacher: --config.distill.teacher=RUN_DIR", file=sys.stderr)
        return 2
    try:
        summary = train(config, args.workdir, progress=not args.no_progress)
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    print(f"done: step {summary['step']}, {summary['params']:,} parameters, {summary['wall_s']:.1f}s; "
          f"eval {summary['eval']}")
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

    from memgpt_jax.training import demo

    demo.register(sub)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry for ``train/*.py``: ``main(["pretrain", "--config", ...])``."""
    from memgpt_jax.cli import main as cli_main

    return cli_main(argv)
