"""The offline demo as a benchmark: ``memgpt-jax demo`` in a fresh workdir, timed.

    python -m benchmarks.demo                   # defaults of the demo (configs/listops.py:demo_*)

Runs the demo in a child process (as a user would), then stores its table
(``<workdir>/demo.json``: test accuracy, macro F1, examples/s, training wall
time per model) with the command's total wall time in ``results/demo.json`` and
rebuilds RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from benchmarks.common import RESULTS_DIR, invocation, machine, machine_line, markdown_table, rebuild_results_md

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLUMNS = ["model", "params", "attention", "accuracy", "macro_f1", "examples_per_s", "train_wall_s"]


def section(payload: dict) -> str:
    rows = payload["rows"]
    return "\n".join([
        "## The demo", "",
        f"`{payload['command']}` (runs `{payload['demo_command']}`) — {machine_line(payload['machine'])}.",
        f"Whole command: **{payload['command_wall_s']:.0f} s** (data generation, both trainings, evaluation). "
        f"ListOps test split; chance 10%, majority class {100 * payload['majority']:.1f}%.", "",
        markdown_table(rows, COLUMNS), "",
        (f"Student / teacher: parameters {rows[1]['params'] / rows[0]['params']:.1%}, "
         f"test accuracy {rows[1]['accuracy'] / rows[0]['accuracy']:.1%}."),
    ])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher-steps", type=int, default=None, help="default: the demo's")
    p.add_argument("--student-steps", type=int, default=None, help="default: the demo's")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        steps = [f"--{name}-steps={n}" for name, n in (("teacher", args.teacher_steps),
                                                        ("student", args.student_steps)) if n]
        cmd = [sys.executable, "-m", "memgpt_jax.cli", "demo", "--workdir", work, "--no-progress", *steps,
               "--config", os.path.join(ROOT, "configs", "listops.py")]
        env = {k: v for k, v in os.environ.items() if k != "MEMGPT_DATA_DIR"}  # the demo's own data dir
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=env)
        wall = time.perf_counter() - t0
        with open(os.path.join(work, "demo.json")) as f:
            demo = json.load(f)
    demo.pop("runs", None)  # a deleted temporary directory
    payload = {"name": "demo", "command": invocation(), "demo_command": " ".join(["memgpt-jax demo", *steps]),
               "machine": machine(), "command_wall_s": wall, "columns": COLUMNS, **demo}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "demo.json").write_text(json.dumps(payload, indent=2))
    print(section(payload))
    rebuild_results_md()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
