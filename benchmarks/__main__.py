"""Run benchmarks and rebuild ``benchmarks/RESULTS.md`` (also ``memgpt-jax bench``).

    python -m benchmarks                      # every benchmark with its full settings (hours on a CPU)
    python -m benchmarks train_step generate  # chosen ones
    python -m benchmarks --quick              # tiny shapes, minutes; results go to $MEMGPT_BENCH_RESULTS
    python -m benchmarks report               # only rebuild RESULTS.md from benchmarks/results/*.json
    python -m benchmarks --list

These are the canonical benchmarks; the diagnostics of the speed work live apart, in
``benchmarks/studies`` (``python -m benchmarks.studies.<name>``), outside this list and run.
Each benchmark runs in its own process (``python -m benchmarks.<name> ...``) and writes
``benchmarks/results/<name>.json``; RESULTS.md is then rebuilt from all the JSON files
(tables, PNG plots, the machine, library versions and the commit of each run). The same
commands run unchanged on GPU and TPU hosts: JAX picks the accelerator, and the
``machine`` block of each JSON records the backend and devices.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

# name -> (full arguments, quick arguments or None when it needs trained runs)
BENCHMARKS: dict[str, tuple[list[str], list[str] | None]] = {
    "train_step": (["--seq-lens", "1024", "2048", "4096", "8192", "--dtypes", "bfloat16", "float32", "--max-f32-len",
                    "1024", "--tokens-per-step", "8192", "--repeats", "3", "--torch", "eager", "compile"],
                   ["--seq-lens", "128", "256", "--tokens-per-step", "256", "--dtypes", "float32", "--repeats", "1",
                    "--torch", "eager"]),
    "forward": ([], ["--preset", "tiny", "--seq-len", "64", "--batch", "2", "--repeats", "1"]),
    "generate": (["--sparse"], ["--preset", "tiny", "--new-tokens", "16", "--repeats", "1", "--sparse"]),
    "attention": ([], ["--quick", "--no-torch", "--lengths", "256", "--layouts", "window_global"]),
    "interop": ([], ["--preset", "tiny", "--seq-len", "64", "--new-tokens", "8", "--repeats", "1"]),
    "lra": ([], ["--tasks", "listops", "--tiny"]),
    "derived_layouts": (["--densities", "0.12", "0.18", "0.3"], ["--tiny", "--examples", "8", "--rounds", "1"]),
    "data": ([], None),
    "demo": ([], ["--teacher-steps", "2", "--student-steps", "2"]),
    "compression": (["--checkpoint", "runs/shakespeare_small"], None),
    # the recipes' tables, after train/<name>.sh (each reads its runs from its own default --runs)
    "imdb_recipe": ([], None),
    "imdb_baselines": (["--ngrams", "1", "2", "3", "--save-values", "runs/imdb/nbsvm"], None),
    "imdb_hybrid": ([], None),
    "multi30k_recipe": ([], None),
    "aeslc_recipe": ([], None),
    "kvret_recipe": ([], None),
    "squad_recipe": ([], None),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", help="benchmarks to run (default: all), or 'report'")
    p.add_argument("--quick", action="store_true", help="tiny shapes (a smoke run); skips those needing trained runs")
    p.add_argument("--list", action="store_true", help="list the benchmarks and their commands")
    p.add_argument("--keep-going", action="store_true", help="run the rest when one fails")
    args = p.parse_args(argv)
    if args.list:
        for name, (full, quick) in BENCHMARKS.items():
            print(f"{name:16} python -m benchmarks.{name} {' '.join(full)}".rstrip())
        return 0
    if args.names == ["report"]:
        from benchmarks.report import RESULTS_MD, build

        build()
        print(f"rebuilt {RESULTS_MD}")
        return 0
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        p.error(f"unknown benchmarks {unknown}; choose from {sorted(BENCHMARKS)} or 'report'")
    env = dict(os.environ)
    if args.quick and not env.get("MEMGPT_BENCH_RESULTS"):
        env["MEMGPT_BENCH_RESULTS"] = os.path.join(tempfile.mkdtemp(prefix="memgpt_bench_"), "results")
        print(f"quick run: results go to {env['MEMGPT_BENCH_RESULTS']}", file=sys.stderr)
    failed = []
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for name in args.names or list(BENCHMARKS):
        full, quick = BENCHMARKS[name]
        if args.quick and quick is None:
            print(f"== {name}: skipped in a quick run (needs data or trained runs)", file=sys.stderr)
            continue
        cmd = [sys.executable, "-m", f"benchmarks.{name}", *(quick if args.quick else full)]
        print(f"== {name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, env=env, cwd=root).returncode
        print(f"== {name}: exit {rc} after {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        if rc:
            failed.append(name)
            if not args.keep_going:
                break
    # the report is built in the runs' environment (where their results went)
    subprocess.run([sys.executable, "-m", "benchmarks.report"], env=env, cwd=root, check=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
