"""Compression (issue 7): quantization error bounds, int4 packing, pruning that
stays pruned through training, quantized checkpoints, and the commands."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memgpt_jax import data as data_lib
from memgpt_jax import model as M
from memgpt_jax.cli import main as cli_main
from memgpt_jax.compress import prune as P
from memgpt_jax.compress import quantize as Q
from memgpt_jax.config import tiny
from memgpt_jax.training.checkpoint import load_params, save_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "listops_tiny.py")


@pytest.mark.parametrize("shape, n_in", [((64, 48), 1), ((4, 16, 32), 2), ((128, 32), 0)])
def test_int8_error_bound(shape, n_in):
    w = jax.random.normal(jax.random.key(0), shape) * 0.3
    t = Q.quantize(w, 8, n_in=n_in)
    assert t.q.dtype == jnp.int8 and t.q.shape == shape
    err = jnp.abs(Q.dequantize(t) - w)
    assert bool(jnp.all(err <= t.scale / 2 + 1e-7))


@pytest.mark.slow
def test_int4_error_bound_and_packing():
    w = jax.random.normal(jax.random.key(1), (128, 24))
    t = Q.quantize(w, 4, group=64)
    assert t.q.dtype == jnp.uint8 and t.q.shape == (64, 24) and t.scale.shape == (2, 24)
    err = jnp.abs(Q.dequantize(t) - w).reshape(2, 64, 24)
    assert bool(jnp.all(err <= t.scale[:, None, :] / 2 + 1e-6))
    odd = jax.random.normal(jax.random.key(4), (96, 5))  # 96 = 1.5 groups of 64: zero-padded
    t_odd = Q.quantize(odd, 4, group=64)
    assert t_odd.q.shape == (64, 5) and t_odd.scale.shape == (2, 5)
    assert Q.dequantize(t_odd).shape == (96, 5) and float(jnp.max(jnp.abs(Q.dequantize(t_odd) - odd))) < 0.5
    every = jnp.arange(-8, 8, dtype=jnp.int8).reshape(16, 1).repeat(3, axis=1)
    np.testing.assert_array_equal(Q.unpack_int4(Q.pack_int4(every)), every)


def test_int4_round_trip_exact_on_representable_values():
    rng = np.random.default_rng(0)
    k = rng.integers(-7, 8, (128, 16)).astype(np.float32)
    k[0], k[64] = 7, -7  # every group reaches +-7, so scale = step exactly
    step = np.float32(0.125)
    w = jnp.asarray(k * step)
    np.testing.assert_array_equal(Q.dequantize(Q.quantize(w, 4, group=64)), w)


def test_int8_matmul_close_to_float():
    x = jax.random.normal(jax.random.key(2), (8, 64))
    w = jax.random.normal(jax.random.key(3), (64, 32)) * 0.1
    y = Q.int8_matmul(x, Q.quantize(w, 8))
    ref = x @ w
    assert float(jnp.max(jnp.abs(y - ref))) < 0.02 * float(jnp.max(jnp.abs(ref)))


@pytest.fixture(scope="module")
def lm():
    cfg = tiny()
    model = M.build(cfg)
    params, _ = M.init(model, jax.random.key(0))
    ids = jax.random.randint(jax.random.key(1), (2, 16), 0, cfg.vocab_size)
    return cfg, model, params, ids


@pytest.mark.parametrize("bits", [8, pytest.param(4, marks=pytest.mark.slow)])
def test_quantized_model_and_checkpoint_restore(lm, tmp_path, bits):
    cfg, model, params, ids = lm
    apply = jax.jit(lambda p: model.apply({"params": Q.inference_params(p)}, ids).logits)
    ref = apply(params)
    qparams = Q.quantize_params(params, bits, 64)
    assert Q.param_bytes(qparams) < Q.param_bytes(params) / (3.4 if bits == 8 else 5.0)
    out = apply(qparams)
    assert float(jnp.max(jnp.abs(out - ref))) < (0.05 if bits == 8 else 0.5)
    tree, spec = Q.encode(qparams)
    save_params(str(tmp_path / "q"), tree, {"config": {"model": cfg.to_dict()}, "quantization": {"tensors": spec}})
    restored, meta = load_params(str(tmp_path / "q"))
    assert Q.summary(restored) == Q.summary(qparams)
    np.testing.assert_array_equal(apply(restored), out)


def test_two_of_four_and_global_masks(lm):
    _, _, params, _ = lm
    masks = P.magnitude_masks(params, kind="2:4")
    fc = masks["transformer"]["h_0"]["mlp"]["fc"]["kernel"]
    assert np.all(fc.reshape(-1, 4, fc.shape[-1]).sum(axis=1) == 2)
    pruned = P.apply_masks(params, P.magnitude_masks(params, 0.5, "global"))
    assert abs(P.sparsity(pruned)["kernel_sparsity"] - 0.5) < 0.01
    assert masks["transformer"]["wte"]["embedding"] is None  # embeddings stay dense
    layer = P.apply_masks(params, P.magnitude_masks(params, 0.3, "layer"))
    k = np.asarray(layer["transformer"]["h_1"]["attn"]["query"]["kernel"])
    assert abs((k == 0).mean() - 0.3) < 0.01


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tfds"))
    os.environ["MEMGPT_DATA_DIR"] = d
    data_lib.prepare(data_lib.listops_builder("tiny", data_dir=d), echo=lambda _: None)
    run = str(tmp_path_factory.mktemp("run") / "teacher")
    assert cli_main(["finetune", "--config", TINY, "--workdir", run, "--no-progress", "--config.train.steps=4",
                     "--config.train.mesh=(1,1,1)"]) == 0
    return run


@pytest.mark.slow
def test_pruned_weights_stay_zero_through_training(tiny_run, tmp_path, capsys):
    out = str(tmp_path / "pruned")
    assert cli_main(["prune", "--checkpoint", tiny_run, "--out", out, "--sparsity", "0.5", "--kind", "global",
                     "--recover-steps", "3", "--eval-batches", "2", "--no-progress"]) == 0
    before, _ = load_params(tiny_run)
    after, _ = load_params(os.path.join(out, "recovery"))
    mask = P.magnitude_masks(before, 0.5, "global")
    changed = False
    for m, a, b in zip(jax.tree.leaves(mask, is_leaf=lambda x: x is None),
                       jax.tree.leaves(after), jax.tree.leaves(before)):
        if m is None:
            continue
        assert np.all(np.asarray(a)[~m] == 0)  # pruned stays exactly zero
        changed |= bool(np.any(np.asarray(a)[m] != np.asarray(b)[m]))  # the rest trained
    assert changed
    report = json.load(open(os.path.join(out, "compression.json")))
    assert set(report["rows"]) == {"unpruned", "pruned", "recovered"}
    assert abs(report["pruning"]["kernel_sparsity"] - 0.5) < 0.01


def test_quantize_command(tiny_run, tmp_path, capsys):
    out = str(tmp_path / "int8")
    assert cli_main(["quantize", "--checkpoint", tiny_run, "--out", out, "--bits", "8", "--eval-batches", "2"]) == 0
    report = json.load(open(os.path.join(out, "compression.json")))
    assert report["memory_ratio"] > 2.5 and 0 <= report["rows"]["int8"]["accuracy"] <= 1
    assert "smaller on disk" in capsys.readouterr().out
    params, meta = load_params(out)
    assert meta["quantization"]["bits"] == 8 and Q.summary(params).get("int8", 0) > 0
    assert cli_main(["quantize", "--checkpoint", out, "--out", str(tmp_path / "again")]) == 2
    assert "already quantized" in capsys.readouterr().err
