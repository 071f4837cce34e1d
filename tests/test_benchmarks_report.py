"""benchmarks/RESULTS.md is rebuilt from the JSON results (issue 9)."""

import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _report(tmp_path, drop=()):
    """RESULTS.md rebuilt from a copy of the committed JSON (less ``drop``) by ``python -m benchmarks report``."""
    results = tmp_path / "results"
    shutil.copytree(os.path.join(ROOT, "benchmarks", "results"), results,
                    ignore=shutil.ignore_patterns("*.png", "*.md", "history", "studies"))
    for key in drop:
        (results / f"{key}.json").unlink()
    env = {**os.environ, "MEMGPT_BENCH_RESULTS": str(results)}
    out = subprocess.run([sys.executable, "-m", "benchmarks", "report"], cwd=ROOT, env=env, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    return results, (tmp_path / "RESULTS.md").read_text()


def test_report_opens_with_the_headline_table_then_one_section_per_benchmark(tmp_path):
    (tmp_path / "HISTORY.md").write_text("frozen\n")
    results, text = _report(tmp_path)
    assert (tmp_path / "HISTORY.md").read_text() == "frozen\n"  # the history is never rewritten
    from benchmarks.__main__ import BENCHMARKS as LISTED
    from benchmarks.report import BENCHMARKS, anchor, heading

    first_section = text.index("\n## ", text.index("## Where the project stands") + 1)
    headline = text[:first_section]
    assert text.splitlines()[0] == "# Results" and "| figure | ours | peer or anchor | ratio | CPU |" in headline
    for bench in BENCHMARKS:
        assert bench.name in LISTED or bench.name == "device_check", bench.name  # canonical benchmarks only
        runs = [r for r in bench.runs if (results / f"{r.key}.json").exists()]
        if runs:
            assert text.count(f"\n## {heading(bench)}\n") == 1 and f"(#{anchor(heading(bench))})" in headline
        else:
            assert f"{heading(bench)}: not run yet: `{bench.runs[0].command}`" in text
    # a headline figure is computed from its run's rows: block-sparse at 8k, our fastest step over
    # PyTorch's fastest (eager or compiled), each over both dtypes
    rows = json.loads((results / "train_step_sparse_8k.json").read_text())["rows"]
    ours, peer = (max(r["tokens_per_s"] for r in rows if r["seq_len"] == 8192 and r["attention"].startswith("window")
                      and r.get("framework").startswith(fw)) for fw in ("jax", "torch"))
    line = next(li for li in headline.splitlines() if li.startswith("| Training step, block-sparse"))
    assert "each at its best dtype" in line and f"| {ours / peer:.2f}x | AMD EPYC, 2 cores | 2026-12-07 (e4fbd6c) |" in line
    assert "| Zhang & Tetreault (2019), best system, test: 23.67 |" in headline  # a published anchor


def test_headline_names_the_command_of_a_missing_run(tmp_path):
    _, text = _report(tmp_path, drop=("train_step_floor", "train_step_sparse_8k", "train_step_heap", "lra"))
    headline = text[:text.index("\n- ")]  # the table, before the list of sections
    for title, command in (("Training step: tokens/s and MFU, JAX and PyTorch", "python -m benchmarks.train_step"),
                           ("Long-range accuracy (LRA-style): dense vs block-sparse", "python -m benchmarks.lra")):
        assert f"| {title}: not run yet | `{command}` |" in headline
    assert "Training step: tokens/s and MFU, JAX and PyTorch (train_step): not run yet" in text


def test_a_partial_run_older_than_the_full_run_is_superseded(tmp_path, monkeypatch):
    from benchmarks import report

    payloads = {"train_step": {"machine": {"date": "2026-12-05T10:00"}, "rows": []},
                "train_step_floor": {"machine": {"date": "2026-12-03"}, "rows": []},
                "train_step_gpu": {"machine": {"date": "2026-12-06T09:00"}, "rows": []}}
    monkeypatch.setattr(report, "load", payloads.get)
    bench = next(b for b in report.BENCHMARKS if b.name == "train_step")
    assert [run.key for run, _ in report.current_runs(bench)] == ["train_step_gpu", "train_step"]
    del payloads["train_step"]
    assert [run.key for run, _ in report.current_runs(bench)] == ["train_step_gpu", "train_step_floor"]


def test_list_shows_the_canonical_benchmarks_only():
    out = subprocess.run([sys.executable, "-m", "benchmarks", "--list"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    names = [line.split()[0] for line in out.stdout.splitlines()]
    assert {"train_step", "attention", "imdb_recipe", "imdb_hybrid", "squad_recipe"} <= set(names)
    assert not {"step_parts", "kernel_ab", "attention_products"} & set(names)
    assert all(os.path.exists(os.path.join(ROOT, "benchmarks", f"{n}.py")) for n in names)


@pytest.mark.slow
def test_quick_run_writes_json_and_rebuilds(tmp_path):
    env = {**os.environ, "MEMGPT_BENCH_RESULTS": str(tmp_path / "results")}
    out = subprocess.run([sys.executable, "-m", "memgpt_jax.cli", "bench", "--quick", "forward"], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    payload = json.loads((tmp_path / "results" / "forward.json").read_text())
    assert payload["command"].startswith("python -m benchmarks.forward --preset tiny")
    assert payload["machine"]["cores"] and payload["machine"]["jax"]
    text = (tmp_path / "RESULTS.md").read_text()
    assert "## Forward throughput" in text and "(train_step): not run yet: `python -m benchmarks.train_step`" in text


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
    assert "without attention" not in line  # no attention-free rows

    def step(framework, attention, ms):
        return {**row(framework, attention, 4096e3 / ms, 0.0, 0.1), "step_ms": ms}

    rows = [step("jax", "dense(blocked b512)", 4000.0), step("torch compile", "dense(SDPA causal)", 3000.0),
            step("jax", "none (output = V)", 2600.0), step("torch compile", "none (output = V)", 2400.0)]
    (line,) = _train_step_extra({"rows": rows}, "no_plot_single_length")
    assert "dense 0.75x PyTorch compile's dense step" in line  # the none rows are not dense rows
    assert "without attention 2,600 vs 2,400 ms (0.92x torch.compile)" in line
    assert "attention costs us 1,400 ms, torch.compile 600 ms" in line
    assert "the dense step would be 0.94x" in line  # 3000 / (2600 + 600)


@pytest.mark.slow
def test_device_check_refuses_without_a_gpu_and_dry_runs_on_cpu(tmp_path):
    """benchmarks/device_check.py: one line and exit 2 without a GPU; --dry-run runs every
    part on CPU (Pallas interpreted, tiny shapes, one layout) and writes its JSON."""
    env = {**os.environ, "MEMGPT_BENCH_RESULTS": str(tmp_path), "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-m", "benchmarks.device_check"], cwd=ROOT, env=env, capture_output=True,
                         text=True)
    assert out.returncode == 2 and "needs an NVIDIA GPU" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run([sys.executable, "-m", "benchmarks.device_check", "--dry-run"], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    payload = json.loads((tmp_path / "device_check_dry_run.json").read_text())
    rows = payload["parts"]["kernels"]["rows"]
    assert all(r["ok"] for r in rows) and [(r["layout"], r["dtype"]) for r in rows] == [
        ("window_global", "float32"), ("window_global", "bfloat16")]
    assert {r["kernel"] for r in payload["parts"]["kernel_speed"]["rows"]} == {"pallas_window_global", "cudnn_causal"}


def test_train_step_peers_at_their_best_dtype():
    """Each side's fastest dtype (and PyTorch's fastest framework) is compared; a run of one dtype says so."""
    from benchmarks.report import _train_step_extra, _train_step_figure

    def row(framework, attention, dtype, tps):
        return {"framework": framework, "attention": attention, "seq_len": 8192, "compute_dtype": dtype,
                "tokens_per_s": tps, "tflops_per_s": 1e-3, "mfu": 0.1, "step_ms": 1e3}

    rows = [row("jax", "window_global(b128)", "bfloat16", 900.0), row("jax", "window_global(b128)", "float32", 600.0),
            row("torch eager", "window_global(b128)(SDPA token mask)", "float32", 400.0),
            row("torch compile", "window_global(b128)(SDPA token mask)", "bfloat16", 300.0),
            row("torch compile", "window_global(b128)(SDPA token mask)", "float32", 450.0)]
    what, ours, peer, ratio = _train_step_figure(8192, "window")({"rows": rows})
    assert "each at its best dtype" in what and ours == "900 tokens/s (bfloat16)" and ratio == "2.00x"
    assert "torch compile" in peer and "float32): 450 tokens/s" in peer
    lines = _train_step_extra({"rows": rows}, "no_plot_single_length")
    assert any("each side at its best dtype: block-sparse 900 tokens/s (bfloat16) vs PyTorch's best 450 "
               "(torch compile, float32): 2.00x" in line for line in lines), lines
    what, *_ = _train_step_figure(8192, "window")({"rows": [r for r in rows if r["compute_dtype"] == "bfloat16"]})
    assert what.endswith("bfloat16 only")


def test_attention_targets_give_the_spread_of_best_against_best_per_round():
    """Each interleaved round's ratio, the peer's best dtype over ours' best, beside the median ratio."""
    from benchmarks.attention_report import round_ratios, targets

    def rec(impl, dtype, rounds, layout="window_global"):
        return dict(impl=impl, mode="fwd", layout=layout, length=8192, dtype=dtype, median_s=sorted(rounds)[1],
                    round_medians=rounds, density=0.06, kept_blocks=310.0)

    records = [rec("xla", "float32", [0.060, 0.062, 0.070]), rec("xla", "bfloat16", [0.040, 0.045, 0.041]),
               rec("flex", "float32", [0.060, 0.070, 0.064]), rec("flex", "bfloat16", [0.100, 0.050, 0.110])]
    ratios = round_ratios(records, dict(impl="flex", mode="fwd"), dict(impl="xla", mode="fwd"))
    assert ratios == pytest.approx([0.060 / 0.040, 0.050 / 0.045, 0.064 / 0.041])  # each round's own best dtypes
    text = targets(records, {})
    assert "vs FlexAttention at its best 64.0 (f32) ms: 1.56x (rounds 1.11-1.56x, 3 rounds)" in text
