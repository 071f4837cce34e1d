"""Compression benchmark: int8, int4 (group 64 and 128), 50% magnitude pruning
(one-shot and with recovery) of a trained run; writes benchmarks/results/compression.{json,md}
and the "Compression" section of benchmarks/RESULTS.md.

    MEMGPT_DATA_DIR=... memgpt-jax pretrain --config configs/shakespeare.py:small --workdir runs/shakespeare_small
    MEMGPT_DATA_DIR=... python -m benchmarks.compression --checkpoint runs/shakespeare_small

Targets (issue 7): int8 >= 3.5x smaller and <= 2% perplexity increase (or <= 0.5 accuracy
points); int4 g64 >= 6x smaller and <= 10% (or 2 points); 50% pruning with recovery
<= 1 point (for a language model we report the perplexity change).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile

from benchmarks.common import markdown_table, rebuild_results_md, write_results

COLUMNS = ["variant", "disk_bytes", "size_ratio", "param_bytes", "memory_ratio", "metric", "before", "after",
           "change", "ms_per_token_before", "ms_per_token_after"]


def _row(variant: str, report: dict, base_key: str, new_key: str) -> dict:
    metric = report["metric"]
    base, new = report["rows"][base_key], report["rows"][new_key]
    change = (new[metric] / base[metric] - 1) * 100 if metric == "perplexity" else (new[metric] - base[metric]) * 100
    return {
        "variant": variant, "disk_bytes": new["disk_bytes"], "size_ratio": base["disk_bytes"] / new["disk_bytes"],
        "param_bytes": new["param_bytes"], "memory_ratio": base["param_bytes"] / new["param_bytes"],
        "metric": metric, "before": base[metric], "after": new[metric],
        "change": f"{change:+.2f}{'%' if metric == 'perplexity' else ' pts'}",
        "ms_per_token_before": base["latency_ms_per_token"], "ms_per_token_after": new["latency_ms_per_token"],
    }


def main() -> None:
    from memgpt_jax.cli import main as cli_main  # the quantize / prune commands, as a user runs them

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--recover-steps", type=int, default=200)
    p.add_argument("--eval-batches", type=int, default=None)
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="memgpt_compress_")
    extra = ["--eval-batches", str(args.eval_batches)] if args.eval_batches else []
    rows = []
    try:
        for name, flags in (("int8", ["--bits", "8"]), ("int8 + int8 activations", ["--bits", "8", "--int8-activations"]),
                            ("int4 g64", ["--bits", "4", "--group", "64"]), ("int4 g128", ["--bits", "4", "--group", "128"])):
            out = os.path.join(work, re.sub(r"\W+", "_", name))
            assert cli_main(["quantize", "--checkpoint", args.checkpoint, "--out", out, *flags, *extra]) == 0
            report = json.load(open(os.path.join(out, "compression.json")))
            rows.append(_row(name, report, "float32", list(report["rows"])[-1]))
        out = os.path.join(work, "pruned")
        assert cli_main(["prune", "--checkpoint", args.checkpoint, "--out", out, "--sparsity", "0.5", "--kind", "global",
                         "--recover-steps", str(args.recover_steps), "--no-progress", *extra]) == 0
        report = json.load(open(os.path.join(out, "compression.json")))
        rows.append(_row("50% pruned (one-shot)", report, "unpruned", "pruned"))
        if args.recover_steps:
            rows.append(_row(f"50% pruned + {args.recover_steps} recovery steps", report, "unpruned", "recovered"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_results("compression", rows, COLUMNS, vars(args))
    print(markdown_table(rows, COLUMNS))
    rebuild_results_md()


if __name__ == "__main__":
    main()
