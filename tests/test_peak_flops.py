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
def counted_measurements(monkeypatch, tmp_path):
    """Every matmul timing ``flops`` runs, counted (each one returns 1 GFLOP/s); a fresh cache
    in this process and on disk."""
    calls = []
    monkeypatch.setattr(flops, "_PEAK_CACHE", {})
    monkeypatch.setattr(flops, "_time_square", lambda dtype, n, repeats: calls.append((dtype, n)) or 1e9)
    monkeypatch.setenv(flops.PEAK_FILE_ENV, str(tmp_path / "peaks.json"))
    monkeypatch.delenv(flops.PEAK_ENV, raising=False)
    return calls


def test_peak_is_the_table_on_accelerators_and_one_measurement_on_cpu(monkeypatch, counted_measurements):
    peak, source = flops.peak_flops("float32")  # this CPU
    assert peak == 1e9 and source.startswith("1024^3 float32 matmul on ") and source.endswith("measured now")
    assert flops.peak_flops("float32")[0] == 1e9 and counted_measurements == [("float32", 1024)]  # cached
    gpu = types.SimpleNamespace(platform="gpu", device_kind="NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(jax, "local_devices", lambda: [gpu] * 8)
    assert flops.peak_flops("bfloat16") == (8 * 989e12, "spec sheet: 8 x NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(jax, "local_devices", lambda: [types.SimpleNamespace(platform="tpu", device_kind="TPU v9")])
    peak, source = flops.peak_flops("float32")  # a chip the table does not list: measured once, in bf16
    assert peak == 1e9 and source.startswith("measured") and counted_measurements[-1] == ("bfloat16", 4096)
    assert len(counted_measurements) == 2


def test_the_cpu_peak_is_the_best_ever_measured_on_this_cpu(monkeypatch, counted_measurements):
    """A measurement taken while the machine was busy does not lower the denominator: the best
    figure per CPU kind is kept on disk, so identical runs report comparable MFU."""
    assert flops.peak_flops("float32")[0] == 1e9
    monkeypatch.setattr(flops, "_PEAK_CACHE", {})  # a later process, on a busy machine
    monkeypatch.setattr(flops, "_time_square", lambda dtype, n, repeats: 0.5e9)
    peak, source = flops.peak_flops("float32")
    assert peak == 1e9 and "best measured on this CPU, kept in" in source
    monkeypatch.setattr(flops, "_PEAK_CACHE", {})  # a quieter moment raises it
    monkeypatch.setattr(flops, "_time_square", lambda dtype, n, repeats: 1.5e9)
    assert flops.peak_flops("float32") == (1.5e9, flops.peak_flops("float32")[1])
    assert json.loads(open(flops.peak_file()).read()) == {
        f"{flops.machine.cpu_fingerprint()}|float32|1024^3|jax {jax.__version__}": 1.5e9}
    monkeypatch.setenv(flops.PEAK_ENV, "2e12")  # or a figure the user fixes
    assert flops.peak_flops("float32") == (2e12, "$MEMGPT_PEAK_FLOPS")


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
    assert summary["peak_flops"] == 1e9 and summary["peak_source"].startswith("1024^3 float32 matmul on ")
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["peak_flops"] for r in rows if r["split"] == "train"] == [1e9] * 6  # the denominator, in each row
    logged = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    mfus = [row["mfu"] for row in logged if "mfu" in row]
    assert len(mfus) == 6 and all(m > 0 for m in mfus)
