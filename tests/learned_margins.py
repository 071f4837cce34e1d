"""How far the suite's learned-behaviour thresholds are from what the tests reach, over seeds.

A test that asserts learned behaviour must pass on any CPU: floating point differs between
CPU kinds, so each threshold needs a margin that the worst seed still clears. Run this on a
new kind of machine to see the margins there (minutes on 2 cores)::

    python tests/learned_margins.py                 # tagging (test_task_registry) and hybrid offsets
    python tests/learned_margins.py --seeds 10 --only tagging

The digit reverser (test_seq2seq) and the copy head (test_copy_head) were measured the same
way when their step counts were set (their docstrings and the commit messages say what over
how many seeds); they take tens of minutes per seed sweep.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def tagging(seeds: int, steps: tuple[int, ...]) -> dict[str, float]:
    """test_task_registry: eval accuracy of the toy tagging task (asserted > 0.9 after 60 steps)."""
    sys.path.insert(0, HERE)
    import test_task_registry as t  # registers the task

    from memgpt_jax.training.loop import train

    out = {}
    root = tempfile.mkdtemp()
    for n in steps:
        for seed in range(seeds):
            config = t.tagging_config(os.path.join(root, "data"), steps=n).replace(train={"seed": seed},
                                                                                   data={"seed": seed})
            summary = train(config, os.path.join(root, f"run_{n}_{seed}"), progress=False)
            out[f"{n} steps, seed {seed}"] = summary["eval"]["accuracy"]
            print(f"tagging: {n} steps, seed {seed}: accuracy {summary['eval']['accuracy']:.4f}", file=sys.stderr)
    return out


def hybrid(seeds: int) -> dict[str, float]:
    """test_imdb_hybrid: out-of-fold accuracy of NBSVM offsets on the test's synthetic reviews
    (asserted > 0.8), over the seed that draws them."""
    import numpy as np

    from benchmarks import imdb_baselines, imdb_hybrid

    out = {}
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        words = {1: ["great", "fun", "moving"], 0: ["dull", "bad", "boring"]}
        docs, labels = [], []
        for i in range(40):
            label = i % 2 if i < 30 else -1
            docs.append(list(rng.choice(words[label if label >= 0 else i % 2] + ["film", "plot"], 6)))
            labels.append(label)
        imdb_baselines.load = lambda *a, d=docs, y=labels: (d, np.asarray(y))
        done = imdb_hybrid.write_offsets(os.path.join(tempfile.mkdtemp(), "offsets.npz"), "any",
                                         "train+unsupervised", np.array([2.0, 0.5, -0.25]), folds=3, n=1)
        out[f"seed {seed}"] = done["out_of_fold_accuracy"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Prints one JSON object: per test, the metric per seed and the worst.")
    p.add_argument("--seeds", type=int, default=6, help="seeds per measurement (default: %(default)s)")
    p.add_argument("--only", choices=("tagging", "hybrid"), default=None)
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error("--seeds must be >= 1")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.path.insert(0, os.path.dirname(HERE))
    report = {}
    with contextlib.redirect_stdout(sys.stderr):  # the work's own messages; stdout is the JSON
        if args.only in (None, "tagging"):
            report["tagging (> 0.9 at 60 steps)"] = tagging(args.seeds, (60, 30))
        if args.only in (None, "hybrid"):
            report["hybrid out-of-fold (> 0.8)"] = hybrid(max(args.seeds, 10))
    for values in report.values():
        values["worst"] = min(values.values())
    from memgpt_jax import machine

    report["cpu"] = machine.cpu_model()
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
