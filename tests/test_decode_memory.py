"""Resident memory of a long prompt->target evaluation with minimum Bayes risk decoding stays
flat once every shape has compiled (issue 40: ``eval --mbr 8`` over AESLC dev grew to ~22 GB).

The workload is generated: a randomly initialised byte-level model with AESLC's shapes where
they matter for memory (context 512, batches of 32, prompts of many lengths, so several prompt
buckets compile), evaluated by the ``memgpt-jax eval --mbr`` command in a child process (with
the entry point's allocator decision). The child records its resident memory after every
``generate_ids`` call and whether XLA compiled anything during it (or loaded a program from the
persistent compilation cache): a call that compiled a new shape may grow the process (its
executable), one that compiled nothing must not.
``python tests/test_decode_memory.py --help`` runs it at other sizes and allocator settings.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "aeslc.py")

# The child: memgpt-jax's entry point with generate_ids wrapped to record VmRSS (MB) after
# each call and the number of XLA compilations so far.
CHILD = """
import json, sys
import jax
from memgpt_jax.apps import generate
from memgpt_jax.cli import main

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024

compiles, samples = [0], []
def on_event(name, seconds, **kwargs):
    if name.endswith("backend_compile_duration"):
        compiles[0] += 1
jax.monitoring.register_event_duration_secs_listener(on_event)
def on_cache_hit(name, **kwargs):  # a program loaded from the persistent cache is a new one too
    if name == "/jax/compilation_cache/cache_hits":
        compiles[0] += 1
jax.monitoring.register_event_listener(on_cache_hit)
original = generate.Generator.generate_ids
def recorded(self, *args, **kwargs):
    out = original(self, *args, **kwargs)
    samples.append((rss_mb(), compiles[0]))
    return out
generate.Generator.generate_ids = recorded
code = main(sys.argv[1:])
from memgpt_jax import hostmem
print("RSS " + json.dumps({"code": code, "samples": samples, "allocator": hostmem.allocator_setting()}))
"""


def make_workload(directory: str, n_prompts: int, *, lengths: tuple[int, ...] = (), vocab: int = 264,
                  d_model: int = 32, max_len: int = 512, seed: int = 0) -> str:
    """A prepared pairs split ``val`` of ``n_prompts`` byte prompts (lengths taken in turn from
    ``lengths``, else drawn over the whole context) and a random byte-level LM of ``vocab``
    tokens that reads them; returns the run directory. A vocabulary larger than the 264 byte
    tokens gives AESLC's buffer sizes (its 8k vocabulary); the extra ids decode to nothing."""
    import jax

    from memgpt_jax import model as model_lib
    from memgpt_jax import run_config
    from memgpt_jax.cli import main as cli_main
    from memgpt_jax.data.tokenizers import ByteTokenizer
    from memgpt_jax.training.checkpoint import save_params

    rng = random.Random(seed)
    words = ["meeting", "schedule", "report", "budget", "call", "review", "update", "deal", "gas", "price"]
    for split, n in (("train", 8), ("val", n_prompts)):
        with open(os.path.join(directory, f"{split}.jsonl"), "w") as f:
            for i in range(n):
                length = lengths[i % len(lengths)] if lengths else rng.randint(8, max_len - 48)
                body = " ".join(rng.choice(words) for _ in range(length))[:length]
                f.write(json.dumps({"prompt": body, "target": " ".join(rng.sample(words, 3))}) + "\n")
    data_dir = os.path.join(directory, "tfds")
    assert cli_main(["data", "prepare", "pairs", "--name", "memory", "--data-dir", data_dir,
                     "--split", f"train={directory}/train.jsonl", "--split", f"val={directory}/val.jsonl"]) == 0
    config = run_config.load(f"{CONFIG}:tiny", [
        f"--config.model.max_len={max_len}", f"--config.model.vocab_size={vocab}", f"--config.model.d_model={d_model}",
        f"--config.data.seq_len={max_len}", "--config.data.name=memgpt_pairs/memory",
        f"--config.data.data_dir={data_dir}"])
    model = model_lib.build(config.model, config.task)
    params, _ = model_lib.init(model, jax.random.key(seed))
    run = os.path.join(directory, "run")
    save_params(run, params, {"config": config.to_dict(), "tokenizer": json.dumps(ByteTokenizer().to_config()).encode()})
    return run


def measure(run: str, *, mbr: int = 8, max_new_tokens: int = 32, env: dict | None = None) -> dict:
    """Runs ``memgpt-jax eval --mbr`` (batches of 32) over the run's ``val`` split in a child
    process; its ``(RSS MB, compilations so far)`` after each ``generate_ids`` call."""
    argv = ["eval", "--checkpoint", run, "--split", "val", "--no-progress", "--mbr", str(mbr), "--batch-size", "32",
            "--max-new-tokens", str(max_new_tokens), "--json", os.path.join(run, "eval.json")]
    out = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    line = next((x for x in out.stdout.splitlines() if x.startswith("RSS ")), None)
    if out.returncode or line is None:
        raise RuntimeError(f"the eval child failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    report = json.loads(line[4:])
    assert report["code"] == 0, out.stderr[-2000:]
    return report


def steady_growth_mb(samples: list, skip: int = 0) -> tuple[float, int]:
    """RSS growth over each stretch of calls that compiled nothing, its first ``skip`` calls
    left out (the allocator's own warm-up on new shapes), summed; and how many calls counted."""
    growth, calls, stretch = 0.0, 0, []

    def close(stretch: list) -> tuple[float, int]:
        kept = stretch[skip:]  # RSS before the first counted call, then after each
        return (kept[-1] - kept[0], len(kept) - 1) if len(kept) > 1 else (0.0, 0)

    for (prev_rss, prev_compiles), (rss, compiles) in zip(samples, samples[1:]):
        if compiles != prev_compiles:
            growth, calls, stretch = growth + close(stretch)[0], calls + close(stretch)[1], []
            continue
        stretch = (stretch or [prev_rss]) + [rss]
    return growth + close(stretch)[0], calls + close(stretch)[1]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_eval_mbr_resident_memory_stays_flat_after_warm_up(tmp_path):
    """Two prompt buckets, four batches each, 9 decodes a batch (greedy + 8 samples). Warm-up:
    the calls that compile a bucket's shapes and the next 16 (the allocator settles on new
    shapes within a batch or two). After it, each bucket's last two batches add less than 32 MB
    in all; each call's KV cache (32 x 464 positions x keys and values x 32 float32 in the long
    bucket: about 4 MB) left behind would add over 70 MB."""
    run = make_workload(str(tmp_path), n_prompts=8 * 32, lengths=(40, 420))
    report = measure(run, mbr=8)
    assert report["allocator"] == "default", report["allocator"]  # eval is not a training command
    growth, calls = steady_growth_mb(report["samples"], skip=16)
    assert calls >= 2 * 2 * 9, report
    assert growth < 32, (growth, report)


def main() -> None:
    p = argparse.ArgumentParser(description="RSS of `memgpt-jax eval --mbr` on a generated workload")
    p.add_argument("--dir", required=True, help="a directory for the data and the run (reused when it has them)")
    p.add_argument("--prompts", type=int, default=640)
    p.add_argument("--vocab", type=int, default=8192, help="model vocabulary (AESLC's: 8k)")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--mbr", type=int, default=8)
    p.add_argument("--allocator", action="append", default=None,
                   help="MEMGPT_ALLOCATOR of the eval child (repeatable; default: the entry point's decision)")
    args = p.parse_args()
    run = os.path.join(args.dir, "run")
    if not os.path.isdir(run):  # else the workload made by an earlier call
        os.makedirs(args.dir, exist_ok=True)
        run = make_workload(args.dir, args.prompts, vocab=args.vocab, d_model=args.d_model)
    for allocator in args.allocator or [None]:
        report = measure(run, mbr=args.mbr, env={"MEMGPT_ALLOCATOR": allocator} if allocator else None)
        rss = [r for r, _ in report["samples"]]
        growth, calls = steady_growth_mb(report["samples"])
        print(json.dumps({"allocator": report["allocator"], "calls": len(rss), "compiles": report["samples"][-1][1],
                          "first_mb": round(rss[0]), "last_mb": round(rss[-1]), "peak_mb": round(max(rss)),
                          "growth_in_calls_without_compiles_mb": round(growth), "calls_without_compiles": calls}),
              flush=True)


if __name__ == "__main__":
    main()
