"""Host allocator settings A/B'd on the benchmark's training step, one process per measurement.

An allocator is set once per process, before JAX starts a thread (``memgpt_jax/hostmem.py``), so
the settings cannot share a process: each round starts one process per setting, the order
alternating from round to round (a drifting machine then biases neither side). Each process
compiles the ``benchmarks/train_step.py`` step (the ~10M-parameter LM, random tokens) and times
``--steps`` steps one by one, with the page faults, system time and resident memory of each:
whether and when the heap settles is part of the answer (the first steps grow the heap; the
later ones should take no page faults under ``tuned``).

    python -m benchmarks.allocator_ab                                 # dense 1k and 8k, bf16, capped vs tuned
    python -m benchmarks.allocator_ab --seq-lens 8192 --steps 10 --rounds 2
    python -m benchmarks.allocator_ab --quick                         # a smoke run (tiny, nothing written)

Reported per setting and length: the median over processes of each process's median settled
step (the steps after ``--settle``), the spread of those per-process medians, the early steps'
median, and the last step's page faults and system time. Training or other work on the machine
must be paused while it runs (2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from benchmarks.common import machine_line, markdown_table, rebuild_results_md, write_results

COLUMNS = ["seq_len", "attention", "compute_dtype", "setting", "processes", "settled_ms", "spread_ms", "early_ms",
           "faults_last_step", "sys_ms_last_step", "rss_gib", "vs_first_setting"]


def _rss_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def child(args: argparse.Namespace) -> None:
    """One process: the allocator from the environment, one compiled step, ``--steps`` timed steps."""
    from memgpt_jax.hostmem import allocator_setting, tune_host_allocator

    tune_host_allocator()  # before JAX starts a thread
    import jax

    from benchmarks.train_step import lm_train_step

    lm = lm_train_step(args.attention, args.seq_len, args.tokens_per_step, args.dtype, args.heads)
    t0 = time.perf_counter()
    jax.block_until_ready(lm.run())  # compile + the first step
    first_s = time.perf_counter() - t0
    steps = []
    for _ in range(args.steps):
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        jax.block_until_ready(lm.run())
        t1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        steps.append({"ms": 1e3 * (t1 - t0), "faults": r1.ru_minflt - r0.ru_minflt,
                      "sys_ms": 1e3 * (r1.ru_stime - r0.ru_stime), "rss_gib": _rss_gib()})
    print(json.dumps({"setting": allocator_setting(), "first_s": first_s, "steps": steps}), flush=True)


def _run_child(setting: str, seq_len: int, args: argparse.Namespace) -> dict:
    from memgpt_jax.hostmem import ENV

    cmd = [sys.executable, "-m", "benchmarks.allocator_ab", "--child", "--seq-len", str(seq_len),
           "--attention", args.attention, "--dtype", args.dtype, "--tokens-per-step", str(args.tokens_per_step),
           "--heads", str(args.heads), "--steps", str(args.steps)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, ENV: setting},
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if out.returncode != 0:
        raise RuntimeError(f"allocator_ab child ({setting}, seq {seq_len}) failed:\n{out.stderr[-2000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    if res["setting"] != setting:  # e.g. not glibc: the setting was not applied, the A/B would compare nothing
        raise RuntimeError(f"{ENV}={setting} was not applied in the child (it reports {res['setting']!r})")
    return res


def summarize(seq_len: int, setting: str, runs: list[dict], settle: int, args: argparse.Namespace) -> dict:
    """One row from the processes of one setting (see the module docstring)."""
    settled = [statistics.median(s["ms"] for s in r["steps"][settle:]) for r in runs]
    early = [s["ms"] for r in runs for s in r["steps"][:settle]]
    last = [r["steps"][-1] for r in runs]
    return {"seq_len": seq_len, "attention": args.attention, "compute_dtype": args.dtype, "setting": setting,
            "processes": len(runs), "settled_ms": statistics.median(settled),
            "spread_ms": f"{min(settled):.0f}-{max(settled):.0f}",
            "early_ms": statistics.median(early) if early else None,
            "faults_last_step": statistics.median(s["faults"] for s in last),
            "sys_ms_last_step": statistics.median(s["sys_ms"] for s in last),
            "rss_gib": max(s["rss_gib"] for s in last)}


def section(payload: dict) -> str:
    meta = payload["meta"]
    lines = ["## Host allocator A/B: the training step in alternated processes", "",
             f"`{payload.get('command', 'python -m benchmarks.allocator_ab')}` — {machine_line(payload['machine'])}.",
             "", f"{meta['rounds']} rounds, one process per setting each, the order alternating; each process "
             f"times {meta['steps']} steps after its compile; settled = the steps after the first {meta['settle']} "
             "(median per process, then the median over processes; spread = the range of the per-process "
             "medians). `vs_first_setting`: the first setting's settled time over this one's.", "",
             markdown_table(payload["rows"], COLUMNS)]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seq-lens", type=int, nargs="+", default=[1024, 8192])
    p.add_argument("--settings", nargs="+", default=["capped", "tuned"], choices=["tuned", "capped", "default"],
                   help="MEMGPT_ALLOCATOR values compared; the first is the reference of vs_first_setting")
    p.add_argument("--attention", default="dense_blocked", choices=["dense", "dense_blocked", "sparse"],
                   help="as in benchmarks/train_step.py")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--tokens-per-step", type=int, default=8192)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3, help="processes per setting and length")
    p.add_argument("--steps", type=int, default=8, help="timed steps per process")
    p.add_argument("--settle", type=int, default=2, help="early steps left out of the settled median")
    p.add_argument("--name", default="allocator_ab")
    p.add_argument("--quick", action="store_true", help="seq 128, 512 tokens a step, 1 round, 3 steps; writes nothing")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--seq-len", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return 0
    if args.quick:
        args.seq_lens, args.tokens_per_step, args.rounds, args.steps, args.settle = [128], 512, 1, 3, 1
    if args.steps <= args.settle:
        p.error(f"--steps ({args.steps}) must exceed --settle ({args.settle})")
    if len(set(args.settings)) != len(args.settings):
        p.error("--settings: each setting once")
    rows, trace = [], {}
    for seq_len in args.seq_lens:
        runs: dict[str, list[dict]] = {s: [] for s in args.settings}
        for r in range(args.rounds):
            for setting in (args.settings if r % 2 == 0 else args.settings[::-1]):
                res = _run_child(setting, seq_len, args)
                runs[setting].append(res)
                print(f"seq {seq_len} round {r + 1}/{args.rounds} {setting}: steps "
                      + " ".join(f"{s['ms']:.0f}" for s in res["steps"]) + " ms; faults "
                      + " ".join(str(s["faults"]) for s in res["steps"]), file=sys.stderr, flush=True)
        new = [summarize(seq_len, s, runs[s], args.settle, args) for s in args.settings]
        for row in new:
            row["vs_first_setting"] = new[0]["settled_ms"] / row["settled_ms"]
        rows += new
        trace[str(seq_len)] = runs
        if not args.quick:  # kept if interrupted
            write_results(args.name, rows, COLUMNS, {**vars(args), "per_step": trace, "partial": True})
    print(markdown_table(rows, COLUMNS))
    if not args.quick:
        write_results(args.name, rows, COLUMNS, {**vars(args), "per_step": trace})
        rebuild_results_md()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
