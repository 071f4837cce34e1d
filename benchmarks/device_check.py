"""One-shot accelerator check: on a machine with an NVIDIA GPU, in a few minutes.

    python -m benchmarks.device_check                 # needs a GPU (jax[cuda12]); refuses otherwise
    python -m benchmarks.device_check --dry-run       # the same code on CPU: Pallas interpreted, tiny shapes

Three parts, each written to ``benchmarks/results/device_check.json`` as soon as it is done
(a part that fails is recorded with its error, and the next one still runs):

1. **Kernels natively.** The Pallas block-sparse kernel (``backend="gpu"``, Triton, not
   interpreted) against the dense oracle (``memgpt_jax/attention/reference.py``), forward
   and ``dq, dk, dv``, on window+global, BigBird and random layouts, with padding.
2. **Kernel speed.** Forward and forward+backward of the Pallas kernel on the
   window+global layout against ``jax.nn.dot_product_attention`` (cuDNN's flash kernel,
   causal, bf16) at 4k-32k tokens; the kept-block GFLOP/s of each.
3. **Training step.** ``benchmarks/train_step.py`` GPU rows (dense fused / dense blocked /
   block-sparse), in a child process with a time limit.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import time
import traceback
from typing import Any, Callable

from benchmarks.common import RESULTS_DIR, machine, markdown_table, rebuild_results_md

TOLERANCE = {"float32": 2e-3, "bfloat16": 3e-2}


def _time(fn: Callable[[], Any], repeats: int) -> float:
    import jax

    jax.block_until_ready(fn())  # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _layouts(T: int, block: int) -> dict[str, Any]:
    from memgpt_jax.attention import layout_patterns as P

    causal = P.causal(T, block=block)
    return {
        "window_global": (P.local(T, block=block, window=2) | P.global_blocks(T, block=block, n=1)) & causal,
        "bigbird": P.bigbird(T, block=block, window=3, n_global=1, n_random=2, seed=0, causal=True),
        "random": P.random_blocks(T, block=block, n=3, seed=1, causal=True),
    }


def check_kernels(T: int, block: int, interpret: bool, layouts: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Pallas against the oracle: max |error| of the output and of dq, dk, dv (every layout of
    :func:`_layouts`, or ``layouts``)."""
    import jax
    import jax.numpy as jnp

    from memgpt_jax.attention.pallas import pallas_attention
    from memgpt_jax.attention.reference import reference_attention

    rows = []
    for dtype in ("float32", "bfloat16"):
        for name, layout in _layouts(T, block).items():
            if layouts is not None and name not in layouts:
                continue
            keys = jax.random.split(jax.random.key(0), 4)
            q, k, v, cot = (jax.random.normal(kk, (2, T, 4, 64), jnp.float32).astype(dtype) for kk in keys)
            valid = jnp.arange(T)[None, :] < jnp.array([[T], [T - block // 2]])  # one padded row

            def loss(fn, q, k, v):
                return jnp.sum(fn(q, k, v).astype(jnp.float32) * cot.astype(jnp.float32))

            ours = functools.partial(pallas_attention, layout=layout, kv_valid=valid, backend="gpu",
                                     interpret=interpret)
            oracle = functools.partial(reference_attention, mask=jnp.asarray(layout.to_dense_mask()), kv_valid=valid)
            out = [jax.jit(f)(q, k, v).astype(jnp.float32) for f in (ours, oracle)]
            grads = [jax.jit(jax.grad(functools.partial(loss, f), argnums=(0, 1, 2)))(q, k, v) for f in (ours, oracle)]
            errors = {"out": float(jnp.max(jnp.abs(out[0] - out[1])))}
            for n, a, b in zip(("dq", "dk", "dv"), grads[0], grads[1]):
                scale = float(jnp.max(jnp.abs(b.astype(jnp.float32)))) or 1.0
                errors[n] = float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32)))) / scale
            ok = all(e <= TOLERANCE[dtype] * (1 if n == "out" else 4) for n, e in errors.items())
            rows.append({"layout": name, "dtype": dtype, "T": T, **errors, "ok": ok})
    return rows


def time_kernels(lengths: list[int], block: int, repeats: int, interpret: bool) -> list[dict[str, Any]]:
    """Pallas (window+global) vs jax.nn.dot_product_attention (cuDNN, causal), bf16."""
    import jax
    import jax.numpy as jnp

    from memgpt_jax.attention.pallas import pallas_attention

    rows = []
    for T in lengths:
        layout = _layouts(T, block)["window_global"]
        keys = jax.random.split(jax.random.key(1), 3)
        q, k, v = (jax.random.normal(kk, (1, T, 8, 64), jnp.bfloat16) for kk in keys)
        ours = functools.partial(pallas_attention, layout=layout, backend="gpu", interpret=interpret)
        fused = functools.partial(jax.nn.dot_product_attention, is_causal=True,
                                  implementation=None if interpret else "cudnn")
        kept = layout.density() * T * T  # token pairs the kernel keeps (per head)
        for name, fn in (("pallas_window_global", ours), ("cudnn_causal", fused)):
            fwd = jax.jit(fn)
            step = jax.jit(jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v).astype(jnp.float32)), argnums=(0, 1, 2)))
            t_f = _time(lambda: fwd(q, k, v), repeats)
            t_fb = _time(lambda: step(q, k, v), repeats)
            pairs = kept if name.startswith("pallas") else T * (T + 1) // 2
            flops = 4 * pairs * 64 * 8  # QK^T and PV over the kept pairs, 8 heads
            rows.append({"kernel": name, "T": T, "fwd_ms": 1e3 * t_f, "fwd_bwd_ms": 1e3 * t_fb,
                         "fwd_gflops": flops / t_f / 1e9, "fwd_bwd_gflops": 3.5 * flops / t_fb / 1e9})
    return rows


def section(payload: dict) -> str:
    """The RESULTS.md section, from ``results/device_check.json``."""
    lines = ["## One-shot GPU check", "",
             f"`{payload.get('command', 'python -m benchmarks.device_check')}` on {', '.join(payload['devices'])}.", ""]
    for name, title in (("kernels", "Pallas (native) against the oracle: max |error| (grads relative)"),
                        ("kernel_speed", "Kernel speed, bf16, 8 heads of 64; GFLOP/s on the kept pairs"),
                        ("train_step", "Training step rows: `results/train_step_gpu.json`")):
        part = payload["parts"].get(name, {})
        lines.append(f"**{title}** ({part.get('seconds', 0):.0f} s)")
        rows = part.get("rows")
        if isinstance(rows, list) and rows:
            lines += ["", markdown_table(rows, list(rows[0]))]
        elif "error" in part:
            lines += ["", f"failed: `{part['error'][:300]}`"]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="on CPU: Pallas interpreted, tiny shapes (tests the script)")
    p.add_argument("--lengths", type=int, nargs="+", default=[4096, 8192, 16384, 32768])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--train-step-timeout", type=int, default=240, help="seconds for the train-step part")
    p.add_argument("--no-results-md", action="store_true")
    args = p.parse_args(argv)

    import jax

    backend = jax.default_backend()
    if backend != "gpu" and not args.dry_run:
        print(f"error: benchmarks/device_check.py needs an NVIDIA GPU; JAX's backend here is {backend!r} "
              "(install jax[cuda12] on a GPU machine, or try the script with --dry-run)", file=sys.stderr)
        return 2
    interpret = args.dry_run
    block = 16 if args.dry_run else 128
    lengths = [64, 128] if args.dry_run else args.lengths
    payload: dict[str, Any] = {"name": "device_check", "command": "python -m benchmarks.device_check"
                               + (" --dry-run" if args.dry_run else ""), "machine": machine(),
                               "devices": [str(d) for d in jax.devices()], "parts": {}}
    out = RESULTS_DIR / ("device_check_dry_run.json" if args.dry_run else "device_check.json")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)

    def part(name: str, fn: Callable[[], Any]) -> None:
        t0 = time.perf_counter()
        try:
            payload["parts"][name] = {"rows": fn(), "seconds": time.perf_counter() - t0}
        except Exception as e:  # noqa: BLE001 - recorded, and the next part still runs
            payload["parts"][name] = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-4000:],
                                      "seconds": time.perf_counter() - t0}
        out.write_text(json.dumps(payload, indent=2))
        print(f"{name}: {'error' if 'error' in payload['parts'][name] else 'done'} "
              f"in {payload['parts'][name]['seconds']:.0f} s", file=sys.stderr)

    # the dry run tries the code, not the kernels (tests/test_attention_kernels.py does): one layout
    part("kernels", lambda: check_kernels(lengths[-1], block, interpret,
                                          layouts=("window_global",) if args.dry_run else None))
    part("kernel_speed", lambda: time_kernels(lengths, block, 2 if args.dry_run else args.repeats, interpret))
    if not args.dry_run:
        command = [sys.executable, "-m", "benchmarks.train_step", "--seq-lens", "1024", "2048", "4096", "8192",
                   "--dtypes", "bfloat16", "--tokens-per-step", "8192", "--attention", "dense_fused",
                   "dense_blocked", "sparse", "--name", "train_step_gpu"]
        part("train_step", lambda: {"returncode": subprocess.run(command, timeout=args.train_step_timeout).returncode})
    for name in ("kernels", "kernel_speed"):
        rows = payload["parts"][name].get("rows")
        if rows:
            print(f"\n{name}\n" + markdown_table(rows, list(rows[0])))
    failed = [r for r in payload["parts"]["kernels"].get("rows", []) if not r["ok"]]
    if not args.dry_run and not args.no_results_md:
        rebuild_results_md()
    print(f"wrote {out}" + (f"; {len(failed)} kernel checks out of tolerance" if failed else ""), file=sys.stderr)
    return 1 if failed or any("error" in v for v in payload["parts"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
