"""benchmarks/RESULTS.md is rebuilt from the JSON results (issue 9)."""

import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_report_rebuilds_every_section_from_json(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(os.path.join(ROOT, "benchmarks", "results"), results,
                    ignore=shutil.ignore_patterns("*.png", "*.md"))
    env = {**os.environ, "MEMGPT_BENCH_RESULTS": str(results)}
    out = subprocess.run([sys.executable, "-m", "benchmarks", "report"], cwd=ROOT, env=env, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "RESULTS.md").read_text()
    from benchmarks.report import SECTIONS

    for key, title, command, _ in SECTIONS:
        if (results / f"{key}.json").exists():
            assert f"## {title}" in text, key
        else:
            assert f"{title} (not run yet: `{command}`)" in text
    # every number in a rows table comes from the JSON: the first row's values appear verbatim
    payload = json.loads((results / "train_step.json").read_text())
    assert f"| {payload['rows'][0]['seq_len']} |" in text


def test_quick_run_writes_json_and_rebuilds(tmp_path):
    env = {**os.environ, "MEMGPT_BENCH_RESULTS": str(tmp_path / "results")}
    out = subprocess.run([sys.executable, "-m", "memgpt_jax.cli", "bench", "--quick", "forward"], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    payload = json.loads((tmp_path / "results" / "forward.json").read_text())
    assert payload["command"].startswith("python -m benchmarks.forward --preset tiny")
    assert payload["machine"]["cores"] and payload["machine"]["jax"]
    text = (tmp_path / "RESULTS.md").read_text()
    assert "## Forward throughput" in text and "(not run yet: `python -m benchmarks.train_step`)" in text


def test_train_step_summary_ratios():
    """The sparse-vs-dense line divides the right rows: tokens/s over the fastest dense JAX row,
    predicted by the computed FLOPs and by the whole-matrix count; PyTorch eager on the same model."""
    from benchmarks.report import _train_step_extra

    def row(framework, attention, tps, tflops, computed_gflops, mfu=0.1):
        return {"framework": framework, "attention": attention, "seq_len": 4096, "compute_dtype": "bfloat16",
                "tokens_per_s": tps, "tflops_per_s": tflops, "mfu": mfu, "computed_gflops_per_token": computed_gflops}

    rows = [row("jax", "dense", 100.0, 100.0 * 0.3e9 / 1e12, 0.3),
            row("jax", "dense(blocked b128)", 200.0, 200.0 * 0.3e9 / 1e12, 0.2, mfu=0.25),
            row("jax", "window_global(b128)", 400.0, 400.0 * 0.1e9 / 1e12, 0.1),
            row("torch eager", "window_global(b128)(SDPA token mask)", 160.0, 160.0 * 0.1e9 / 1e12, 0.1)]
    (line,) = _train_step_extra({"rows": rows}, "no_plot_single_length")
    assert "best dense JAX (dense(blocked b128)) MFU 25.0%" in line
    assert "block-sparse 2.00x its tokens/s, 100% of the 2.00x the ratio of computed FLOPs" in line
    assert "67% of 3.00x counting dense as the whole score matrix" in line
    assert "block-sparse 2.50x PyTorch eager" in line
