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
    # a headline figure is computed from its run's rows: block-sparse over torch.compile at 8k
    rows = json.loads((results / "train_step_heap.json").read_text())["rows"]
    ours, peer = (next(r["tokens_per_s"] for r in rows if r["seq_len"] == 8192 and r["attention"].startswith("window")
                       and r.get("framework") == fw) for fw in ("jax", "torch compile"))
    line = next(li for li in headline.splitlines() if li.startswith("| Training step, block-sparse"))
    assert f"| {ours / peer:.2f}x | AMD EPYC, 2 cores | 2026-12-03 (70bcdae) |" in line
    assert "| Zhang & Tetreault (2019), best system, test: 23.67 |" in headline  # a published anchor


def test_headline_names_the_command_of_a_missing_run(tmp_path):
    _, text = _report(tmp_path, drop=("train_step_floor", "train_step_heap", "lra"))
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


def test_step_parts_gemms_are_the_step_shapes_in_their_layouts():
    """Each GEMM row computes the product its layout names (A @ B, A @ B^T, A^T @ B, batched),
    and the listed shapes add up to the model's matmul FLOPs per step."""
    import numpy as np

    from benchmarks.studies.step_parts import gemm_shapes, jax_gemm
    from memgpt_jax import config as config_lib
    from memgpt_jax.flops import matmul_params

    for layout in ("NN", "NT", "TN"):
        for batch in (1, 3):
            g = {"layout": layout, "batch": batch, "m": 5, "k": 7, "n": 4}
            f, a, b = jax_gemm(g, "float32")
            out = np.asarray(f(a, b))
            a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
            a = np.swapaxes(a, -1, -2) if layout == "TN" else a  # stored [k, m]
            b = np.swapaxes(b, -1, -2) if layout == "NT" else b  # stored [n, k]
            assert out.shape == ((batch, 5, 4) if batch > 1 else (5, 4))
            np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-5)
    cfg = config_lib.small_10m(n_heads=4)
    tokens, seq = 2048, 1024
    gemms = gemm_shapes(tokens, cfg.d_model, cfg.mlp_dim, cfg.vocab_size, cfg.n_layers, cfg.n_heads,
                        cfg.head_dim, 128, seq)
    forward = {g["gemm"]: 2 * g["batch"] * g["m"] * g["k"] * g["n"] * g["count_per_step"] for g in gemms}
    # QKV + MLP up + MLP down + LM head forwards; the out projection (D x D) is not listed separately
    listed = (forward["QKV projection, forward"] + forward["MLP up, forward"] + forward["MLP down, forward"]
              + forward["LM head, forward"])
    out_proj = 2 * tokens * cfg.n_layers * cfg.d_model**2
    assert listed + out_proj == 2 * tokens * matmul_params(cfg)
    # attention tiles cover the causal blocks: 8 query blocks, on average 4.5 blocks of keys each
    qk = next(g for g in gemms if g["gemm"] == "attention scores Q K^T")
    assert qk["batch"] == 2 * 4 * 8 and qk["n"] == 128 * 9 // 2 and qk["k"] == cfg.head_dim


def test_step_parts_summary_mfu_and_ceiling():
    from benchmarks.studies.step_parts import summary

    def row(kind, ms, gflop):
        return {"compute_dtype": "bfloat16", "kind": kind, "ms": ms, "gflop": gflop, "peak_gflops": 100.0,
                "of_peak": None if gflop is None else gflop / (ms / 1e3) / 100.0}

    rows = [row("total", 1000.0, 20.0), row("total", 900.0, 20.0), row("matmul", 300.0, 5.0),
            row("matmul", 200.0, 10.0), row("derived", 400.0, None), row("derived", 100.0, None)]
    (line,) = summary({"rows": rows})
    # MFU 20 GFLOP / 1 s / 100 GFLOP/s; ceiling 20 GFLOP / 0.5 s / 100
    assert "20.0% MFU" in line and "500 of its 1,000 ms" in line and "reach 40.0%" in line


@pytest.mark.slow
def test_step_parts_quick_run(tmp_path):
    """The step-parts study runs end to end on tiny shapes, into results/studies, and its rows
    are consistent: the remainder is forward + backward minus the timed matmul parts, and the
    AdamW update alone is a small part of the step."""
    from benchmarks.studies.step_parts import section

    env = {**os.environ, "MEMGPT_BENCH_RESULTS": str(tmp_path / "results")}
    out = subprocess.run([sys.executable, "-m", "benchmarks.studies.step_parts", "--quick", "--no-torch"], cwd=ROOT,
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert not (tmp_path / "results" / "step_parts_quick.json").exists()
    payload = json.loads((tmp_path / "results" / "studies" / "step_parts_quick.json").read_text())
    ms = {r["kind"] + ":" + r["part"].split(",")[0].split(" (")[0]: r["ms"] for r in payload["rows"]}
    step, fwd_bwd = ms["total:training step"], ms["total:forward + backward"]
    parts = sum(r["ms"] for r in payload["rows"] if r["kind"] == "matmul")
    assert abs(ms["derived:remainder: norms"] - (fwd_bwd - parts)) < 1e-6
    assert 0 < ms["part:AdamW update alone"] < step
    assert all(g["jax_f32_gflops"] > 0 for g in payload["meta"]["gemms"])
    assert section(payload).startswith("## Where the dense step's time goes")
    assert "## Where the dense step's time goes" in out.stdout  # the study prints its section


def test_attention_product_ceilings_by_hand():
    """The ceilings: counted products' FLOPs (2 fwd, 6 fwd+bwd) over the time of every product
    the pass runs (fwd: scores + P V; fwd+bwd: scores + 2 P V + 2 scores^T + 2 dS^T Q)."""
    from benchmarks.studies.attention_products import ceilings

    ms = {"scores": 1.0, "P V": 2.0, "scores^T": 3.0, "dS^T Q": 4.0}
    rows = [{"tile": "128x640", "product": p, "gflop": 0.1, "jax_ms": t} for p, t in ms.items()]
    fwd, fwd_bwd = ceilings(rows, jax_peak=100.0, torch_peak=None)
    assert fwd["pass"] == "fwd" and fwd["jax_gflops_per_s"] == pytest.approx(0.2 / 0.003)
    assert fwd["jax_of_peak"] == pytest.approx(0.2 / 0.003 / 100)
    assert fwd_bwd["jax_gflops_per_s"] == pytest.approx(0.6 / 0.019)  # 1 + 2*2 + 2*3 + 2*4 ms
    assert "torch_gflops_per_s" not in fwd  # no PyTorch timings, no PyTorch ceiling


@pytest.mark.slow
def test_attention_products_quick_run(tmp_path):
    """The attention-products study runs end to end on tiny tiles, into results/studies, timing
    every product of every tile and rendering its section."""
    from benchmarks.studies.attention_products import PRODUCTS, section

    env = {**os.environ, "MEMGPT_BENCH_RESULTS": str(tmp_path / "results")}
    out = subprocess.run([sys.executable, "-m", "benchmarks.studies.attention_products", "--quick", "--no-torch"],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert not (tmp_path / "results" / "attention_products_quick.json").exists()
    payload = json.loads((tmp_path / "results" / "studies" / "attention_products_quick.json").read_text())
    assert len(payload["rows"]) == 2 * len(PRODUCTS) and all(r["jax_gflops_per_s"] > 0 for r in payload["rows"])
    assert [c["pass"] for c in payload["meta"]["ceilings"]] == ["fwd", "fwd+bwd"] * 2
    assert section(payload).startswith("## Attention products alone") and "## Attention products alone" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "benchmarks.studies.attention_products", "--tiles", "128by640"],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "MxN" in bad.stderr


@pytest.mark.slow
def test_device_check_refuses_without_a_gpu_and_dry_runs_on_cpu(tmp_path):
    """benchmarks/device_check.py: one line and exit 2 without a GPU; --dry-run runs every
    part on CPU (Pallas interpreted, tiny shapes) and writes its JSON."""
    env = {**os.environ, "MEMGPT_BENCH_RESULTS": str(tmp_path), "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-m", "benchmarks.device_check"], cwd=ROOT, env=env, capture_output=True,
                         text=True)
    assert out.returncode == 2 and "needs an NVIDIA GPU" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run([sys.executable, "-m", "benchmarks.device_check", "--dry-run"], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    payload = json.loads((tmp_path / "device_check_dry_run.json").read_text())
    assert all(r["ok"] for r in payload["parts"]["kernels"]["rows"]) and len(payload["parts"]["kernels"]["rows"]) == 6
    assert {r["kernel"] for r in payload["parts"]["kernel_speed"]["rows"]} == {"pallas_window_global", "cudnn_causal"}


def test_kernel_ab_loads_the_kernel_of_a_revision():
    """The A/B's base side is the kernel as committed at a revision, a module of its own; a bad
    revision is a clear error."""
    import jax
    import numpy as np

    from benchmarks.studies.kernel_ab import load_base
    from memgpt_jax.attention import layout as L
    from memgpt_jax.attention import xla

    base = load_base("HEAD")
    assert base is not xla and base.__name__ == "_kernel_base"
    lay = L.causal(64, block=16)
    q = jax.random.normal(jax.random.PRNGKey(0), (1, 64, 2, 8))
    np.testing.assert_allclose(base.xla_attention(q, q, q, lay), xla.xla_attention(q, q, q, lay), atol=1e-6)
    with pytest.raises(SystemExit, match="cannot read memgpt_jax/attention/xla.py at 'no-such-rev'"):
        load_base("no-such-rev")
