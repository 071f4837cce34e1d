"""The xla block kernel A/B'd against its own version at a git revision, in one process.

``memgpt_jax/attention/xla.py`` as committed at ``--base`` is loaded beside the working
tree's (from ``git show``, as a module of its own), both are compiled on the same inputs,
their outputs compared, and the two are timed in interleaved rounds (the order alternating),
forward and forward + backward on the attention benchmark's window+global layout. This is how
a change to the kernel is measured: same process, same inputs, same machine state.

    python -m benchmarks.studies.kernel_ab --base be1f610~1             # the backward's delta before the loop
    python -m benchmarks.studies.kernel_ab --base HEAD --lengths 1024 --rounds 1 --repeats 1   # a smoke run

Reported: per length, pass and side, the median over rounds of each round's best of
``--repeats`` runs, the spread of the per-round bests, GFLOP/s on the kept blocks (as the
attention benchmark counts them), and the largest difference between the two sides' results.
Training or other work on the machine must be paused while it runs (2 cores).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
from types import ModuleType

from benchmarks.common import STUDIES_DIR, REPO_ROOT, machine_line, markdown_table, time_fn, write_results

KERNEL = "memgpt_jax/attention/xla.py"
COLUMNS = ["layout", "seq_len", "dtype", "pass", "variant", "ms", "spread_ms", "gflops_per_s", "speedup_vs_base",
           "max_abs_diff"]


def load_base(rev: str) -> ModuleType:
    """``KERNEL`` as committed at ``rev``, imported as the module ``_kernel_base``."""
    try:
        source = subprocess.run(["git", "show", f"{rev}:{KERNEL}"], cwd=REPO_ROOT, capture_output=True, text=True,
                                check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        stderr = getattr(e, "stderr", "") or str(e)
        raise SystemExit(f"kernel_ab: error: cannot read {KERNEL} at {rev!r}: {stderr.strip()}")
    spec = importlib.util.spec_from_loader("_kernel_base", loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules["_kernel_base"] = module  # dataclasses look their module up while the class body runs
    exec(compile(source, f"{rev}:{KERNEL}", "exec"), module.__dict__)
    return module


def ab(base: ModuleType, rev: str, layout_name: str, length: int, dtype: str, rounds: int,
       repeats: int) -> list[dict]:
    import jax
    import jax.numpy as jnp

    from benchmarks.attention import HEAD_DIM, HEADS, build_layout
    from benchmarks.attention_report import kept_gflop
    from memgpt_jax.attention import xla as current

    layout = build_layout(layout_name, length)
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    q, k, v, cot = (jax.random.normal(kk, (1, length, HEADS, HEAD_DIM), jnp.float32).astype(dtype) for kk in keys)
    sides = {f"base {rev}": base, "working tree": current}
    compiled, outputs = {}, {}
    for name, mod in sides.items():
        def attn(q, k, v, mod=mod):
            return mod.xla_attention(q, k, v, layout)

        def fwd_bwd(q, k, v, cot, attn=attn):
            return jax.vjp(attn, q, k, v)[1](cot)

        compiled[(name, "fwd")] = (jax.jit(attn).lower(q, k, v).compile(), (q, k, v))
        compiled[(name, "fwd+bwd")] = (jax.jit(fwd_bwd).lower(q, k, v, cot).compile(), (q, k, v, cot))
        for mode in ("fwd", "fwd+bwd"):
            fn, args = compiled[(name, mode)]
            outputs[(name, mode)] = jax.tree.leaves(jax.block_until_ready(fn(*args)))
    names = list(sides)
    times: dict[tuple[str, str], list[float]] = {key: [] for key in compiled}
    for r in range(rounds):
        for mode in ("fwd", "fwd+bwd"):
            for name in (names if r % 2 == 0 else names[::-1]):
                fn, args = compiled[(name, mode)]
                times[(name, mode)].append(time_fn(lambda: fn(*args), repeats=repeats)["min_s"])
    rows = []
    for mode in ("fwd", "fwd+bwd"):
        diff = max(float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))))
                   for a, b in zip(outputs[(names[0], mode)], outputs[(names[1], mode)]))
        gflop = kept_gflop({"mode": "fwd" if mode == "fwd" else "fwdbwd", "kept_blocks": layout.n_kept_blocks})
        base_s = statistics.median(times[(names[0], mode)])
        for name in names:
            ts = times[(name, mode)]
            s = statistics.median(ts)
            rows.append({"layout": layout_name, "seq_len": length, "dtype": dtype, "pass": mode, "variant": name,
                         "ms": 1e3 * s, "spread_ms": f"{1e3 * min(ts):.0f}-{1e3 * max(ts):.0f}",
                         "gflops_per_s": gflop / s, "speedup_vs_base": base_s / s, "max_abs_diff": diff})
    return rows


def section(payload: dict) -> str:
    meta = payload["meta"]
    lines = ["## Block kernel A/B against a git revision", "",
             f"`{payload.get('command', 'python -m benchmarks.studies.kernel_ab')}` — {machine_line(payload['machine'])}.", "",
             f"`{KERNEL}` at `{meta['base']}` against the working tree of the commit above, in one process: "
             f"{meta['rounds']} interleaved rounds (order alternating), each the best of {meta['repeats']} runs; "
             "ms = the median of the rounds, spread = their range; `max_abs_diff`: the largest difference between "
             "the two sides' outputs (forward) or gradients (forward + backward).", "",
             markdown_table(payload["rows"], COLUMNS)]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="git revision whose kernel is the reference, e.g. be1f610~1")
    p.add_argument("--lengths", type=int, nargs="+", default=[8192, 16384])
    p.add_argument("--layout", default="window_global", choices=["window_global", "causal", "bigbird", "strided"])
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--name", default="kernel_ab", help="results/studies/<name>.json; 'none' writes nothing")
    args = p.parse_args(argv)
    if any(n % 128 for n in args.lengths):
        p.error("--lengths must be multiples of 128 (the benchmark's block)")
    from memgpt_jax.hostmem import tune_host_allocator

    tune_host_allocator()  # as the memgpt-jax entry point (before JAX starts a thread)
    base = load_base(args.base)
    rows = []
    for length in args.lengths:
        rows += ab(base, args.base, args.layout, length, args.dtype, args.rounds, args.repeats)
        print(markdown_table(rows[-4:], COLUMNS), flush=True)
    if args.name != "none":
        path = write_results(args.name, rows, COLUMNS, vars(args), directory=STUDIES_DIR)
        print(section(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
