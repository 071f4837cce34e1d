"""``memgpt-jax demo``: the project's main job, offline, in minutes on a CPU.

1. generates ListOps (nested MAX/MIN/MED/SM expressions; 10 classes),
2. trains a dense Transformer teacher on it,
3. distills a smaller block-sparse student from the teacher (KL at T=2 mixed
   with the hard labels),
4. evaluates both on the test split and prints a table: parameters, attention,
   accuracy, macro F1 and examples/s, beside the majority-class baseline.

Configs: ``configs/listops.py`` (variants ``teacher`` and ``student``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "listops.py")


def _config_path(args: argparse.Namespace) -> str:
    path = args.config or os.path.normpath(DEFAULT_CONFIG)
    if not os.path.isfile(path):
        raise SystemExit(f"error: config {path} not found; pass --config configs/listops.py")
    return path


def _test_metrics(config: Any, workdir: str, data: Any) -> dict[str, float]:
    """Test-split accuracy/F1 and inference examples/s of a finished run."""
    import jax

    from memgpt_jax.training.checkpoint import load_params
    from memgpt_jax.training.loop import Trainer

    params, _ = load_params(workdir)
    trainer = Trainer(config, workdir, progress=False)
    trainer.init_state()
    params = jax.device_put(params, trainer.param_sharding)
    batches = list(data())
    trainer.evaluate(params, batches[:1])  # compile
    t0 = time.perf_counter()
    result = trainer.evaluate(params, batches)
    result["examples_per_s"] = result["examples"] / (time.perf_counter() - t0)
    return result


def run_demo(args: argparse.Namespace) -> int:
    import numpy as np

    from memgpt_jax.flops import count_params
    from memgpt_jax.training import inputs as inputs_lib
    from memgpt_jax.training.config_io import load_config
    from memgpt_jax.training.loop import train

    t_start = time.perf_counter()
    workdir = os.path.abspath(args.workdir)
    os.environ.setdefault("MEMGPT_DATA_DIR", os.path.join(workdir, "data"))
    path = _config_path(args)
    common = [f"--config.train.seed={args.seed}"]
    teacher_cfg = load_config(f"{path}:teacher", common + [f"--config.train.steps={args.teacher_steps}"])
    student_cfg = load_config(f"{path}:student", common + [
        f"--config.train.steps={args.student_steps}",
        f"--config.distill.teacher={os.path.join(workdir, 'teacher')}",
    ])
    progress = not args.no_progress
    print("== 1/3 teacher: dense Transformer on ListOps", file=sys.stderr)
    t0 = time.perf_counter()
    train(teacher_cfg, os.path.join(workdir, "teacher"), progress=progress)
    teacher_wall = time.perf_counter() - t0
    print("== 2/3 student: block-sparse, distilled from the teacher", file=sys.stderr)
    t0 = time.perf_counter()
    train(student_cfg, os.path.join(workdir, "student"), progress=progress)
    student_wall = time.perf_counter() - t0

    print("== 3/3 evaluation on the test split", file=sys.stderr)
    rows = []
    for name, cfg, wall in (("teacher", teacher_cfg, teacher_wall), ("student", student_cfg, student_wall)):
        test_cfg = load_config(f"{path}:{name}", common + ["--config.data.eval_split=test"])
        data = inputs_lib.make_data(test_cfg)
        m = _test_metrics(test_cfg, os.path.join(workdir, name), data.eval)
        attn = cfg.model.attention
        rows.append({
            "model": name, "params": count_params(_model_config(cfg), "classification"),
            "attention": attn.pattern if attn.pattern == "dense" else f"{attn.pattern} (block {attn.block_size})",
            "accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "examples_per_s": m["examples_per_s"],
            "train_wall_s": wall,
        })
    labels = np.asarray([int(r["label"]) for r in inputs_lib._source(teacher_cfg.data, "test")])
    majority = float(np.bincount(labels, minlength=10).max() / len(labels))
    total = time.perf_counter() - t_start

    print()
    print(f"ListOps test split ({len(labels)} examples; chance 10%, majority class {majority:.1%})")
    print(f"{'model':<8} {'params':>9} {'attention':<28} {'accuracy':>8} {'macro F1':>8} {'ex/s':>8} {'train s':>8}")
    for r in rows:
        print(f"{r['model']:<8} {r['params']:>9,} {r['attention']:<28} {r['accuracy']:>8.1%} "
              f"{r['macro_f1']:>8.3f} {r['examples_per_s']:>8,.0f} {r['train_wall_s']:>8.1f}")
    print(f"student/teacher parameters: {rows[1]['params'] / rows[0]['params']:.1%}; "
          f"total wall time {total:.0f}s")
    with open(os.path.join(workdir, "demo.json"), "w") as f:
        json.dump({"rows": rows, "majority": majority, "wall_s": total}, f, indent=2)
    return 0


def _model_config(cfg: Any):
    from memgpt_jax.config import ModelConfig

    return ModelConfig.from_dict(cfg.model.to_dict())


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="offline demo: train a dense teacher and distill a block-sparse student on ListOps",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--workdir", default="runs/demo", help="where runs, data and demo.json go (default runs/demo)")
    p.add_argument("--config", default=None, help="config file with teacher/student variants (configs/listops.py)")
    p.add_argument("--teacher-steps", type=int, default=500)
    p.add_argument("--student-steps", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_demo)
