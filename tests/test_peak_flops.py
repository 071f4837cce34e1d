"""The MFU denominator (memgpt_jax/flops.py, issue 40): a spec-sheet figure per chip on TPU/GPU,
one measurement per process on CPU, and no benchmark inside the training loop."""

import json
import os
import types

import jax
import pytest

from memgpt_jax import data as data_lib
from memgpt_jax import flops, run_config
from memgpt_jax.training.loop import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_known_peaks_are_the_dense_bf16_figures_per_chip():
    for kind, tflops in (("NVIDIA H100 80GB HBM3", 989), ("NVIDIA H100 PCIe", 756), ("NVIDIA H100 NVL", 835),
                         ("NVIDIA H200", 989), ("NVIDIA A100-SXM4-40GB", 312), ("NVIDIA A100 80GB PCIe", 312),
                         ("NVIDIA L4", 121), ("TPU v4", 275), ("TPU v5 lite", 197), ("TPU v5e", 197),
                         ("TPU v5", 459), ("TPU v5p", 459), ("TPU v6 lite", 918)):
        assert flops.known_peak_flops(kind) == tflops * 1e12, kind
    for kind in ("NVIDIA L40S", "TPU v3", "cpu", "Tesla V100-SXM2-16GB"):
        assert flops.known_peak_flops(kind) is None, kind


@pytest.fixture()
def counted_measurements(monkeypatch):
    """Every matmul timing ``flops`` runs, counted (each one returns 1 GFLOP/s); a fresh cache."""
    calls = []
    monkeypatch.setattr(flops, "_PEAK_CACHE", {})
    monkeypatch.setattr(flops, "_time_square", lambda dtype, n, repeats: calls.append((dtype, n)) or 1e9)
    return calls


def test_peak_is_the_table_on_accelerators_and_one_measurement_on_cpu(monkeypatch, counted_measurements):
    assert flops.peak_flops("float32") == (1e9, "measured: 1024^3 float32")  # this CPU
    assert flops.peak_flops("float32")[0] == 1e9 and counted_measurements == [("float32", 1024)]  # cached
    gpu = types.SimpleNamespace(platform="gpu", device_kind="NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(jax, "local_devices", lambda: [gpu] * 8)
    assert flops.peak_flops("bfloat16") == (8 * 989e12, "spec sheet: 8 x NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(jax, "local_devices", lambda: [types.SimpleNamespace(platform="tpu", device_kind="TPU v9")])
    peak, source = flops.peak_flops("float32")  # a chip the table does not list: measured once, in bf16
    assert peak == 1e9 and source.startswith("measured") and counted_measurements[-1] == ("bfloat16", 4096)
    assert len(counted_measurements) == 2


@pytest.mark.slow
@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU measurement")
def test_the_training_loop_measures_the_peak_once(tmp_path, monkeypatch, counted_measurements):
    """Six logged steps: one measurement (before the first step), none at the logs."""
    d = str(tmp_path / "tfds")
    monkeypatch.setenv("MEMGPT_DATA_DIR", d)
    data_lib.prepare(data_lib.listops_builder("tiny", data_dir=d), echo=lambda _: None)
    cfg = run_config.load(os.path.join(ROOT, "configs", "listops_tiny.py"),
                          ["--config.train.steps=6", "--config.train.log_every=1", "--config.train.eval_every=0"])
    summary = train(cfg, str(tmp_path / "run"), progress=False)
    assert counted_measurements == [("float32", 1024)]
    assert summary["peak_flops"] == 1e9 and summary["peak_source"] == "measured: 1024^3 float32"
    logged = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    mfus = [row["mfu"] for row in logged if "mfu" in row]
    assert len(mfus) == 6 and all(m > 0 for m in mfus)
