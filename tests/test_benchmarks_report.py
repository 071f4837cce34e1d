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
