"""Tests of the studies, outside the core suite: ``python -m pytest benchmarks/studies``.

Each study runs end to end on tiny shapes, and its helpers compute what they claim.
"""

import json
import os
import subprocess
import sys

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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

    ms = {"scores": 1.0, "P V": 2.0, "scores^T": 3.0, "dS^T Q": 4.0, "softmax": 0.5}
    rows = [{"tile": "128x640", "product": p, "gflop": None if p == "softmax" else 0.1, "jax_ms": t}
            for p, t in ms.items()]
    fwd, fwd_softmax, fwd_bwd = ceilings(rows, jax_peak=100.0, torch_peak=None)
    assert fwd["pass"] == "fwd" and fwd["jax_gflops_per_s"] == pytest.approx(0.2 / 0.003)
    assert fwd_softmax["jax_gflops_per_s"] == pytest.approx(0.2 / 0.0035)  # the softmax's time counts, not its FLOPs
    assert fwd["jax_of_peak"] == pytest.approx(0.2 / 0.003 / 100)
    assert fwd_bwd["jax_gflops_per_s"] == pytest.approx(0.6 / 0.019)  # 1 + 2*2 + 2*3 + 2*4 ms
    assert "torch_gflops_per_s" not in fwd  # no PyTorch timings, no PyTorch ceiling


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
    assert len(payload["rows"]) == 2 * (len(PRODUCTS) + 1)  # each product and the softmax, per tile
    assert all(r["jax_gflops_per_s"] > 0 for r in payload["rows"] if r["product"] != "softmax")
    assert all(r["jax_ms"] > 0 for r in payload["rows"])
    assert [c["pass"] for c in payload["meta"]["ceilings"]] == ["fwd", "fwd+softmax", "fwd+bwd"] * 2
    assert section(payload).startswith("## Attention products alone") and "## Attention products alone" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "benchmarks.studies.attention_products", "--tiles", "128by640"],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "MxN" in bad.stderr


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
