"""Export to PyTorch: the mapping table, the torch format, the CLI, and bad input.

Parity is checked on random weights (every norm scale and bias perturbed, so a
swapped or transposed tensor cannot hide) and random inputs with padding.
Tolerance: 1e-4 on float32 logits.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from memgpt_jax import model as M  # noqa: E402
from memgpt_jax.config import tiny  # noqa: E402
from memgpt_jax.export import io, mapping, torch_format  # noqa: E402
from memgpt_jax.export.mapping import ConversionError  # noqa: E402
from memgpt_jax.export.torch_model import TorchGPT  # noqa: E402

TOL = 1e-4
B, T = 2, 72  # 4.5 blocks of 16: sparse layouts drop tiles, and T is rounded up to whole blocks

CONFIGS = {
    "dense": (tiny(), "lm"),
    "window_global": (tiny(activation="gelu", attention=dict(pattern="window_global", block_size=16, window=1)), "lm"),
    "bigbird": (tiny(attention=dict(pattern="bigbird", block_size=16, window=1, n_global=1, n_random=1, seed=3)), "lm"),
    "rope_gqa_rms": (tiny(position="rope", norm="rmsnorm", activation="silu", n_kv_heads=2, use_bias=False,
                          tie_embeddings=False, d_ff=96), "lm"),
    "cls_last": (tiny(activation="relu", num_labels=3), "classification"),
    "cls_mean_gqa": (tiny(pooling="mean", n_kv_heads=1, attention=dict(pattern="local", block_size=16, window=1)),
                     "classification"),
    "cls_meanmax": (tiny(pooling="meanmax"), "classification"),
    "qa_rope": (tiny(position="rope"), "qa"),
    # a copy head (pointer-generator) over a block-sparse backbone: its logits are log-probabilities
    "copy_window": (tiny(copy_dim=8, attention=dict(pattern="window_global", block_size=16, window=1)), "lm"),
    # a derived layout (memgpt-jax layout derive): per-head bands in layer 0, one shared in layer 1
    "derived": (tiny(attention=dict(pattern="derived", derived=json.dumps({
        "block_size": 16, "kind": "band", "seq_len": 128, "layers": [
            [{"offsets": [0, 1], "globals": [0]}, {"offsets": [0], "globals": [2]}, {"offsets": [0, 3]},
             {"offsets": [0, 1, 2], "globals": []}],
            [{"offsets": [0], "globals": [0, 1]}]]}))), "lm"),
}


def random_params(config, head, seed=0):
    """Random weights of every parameter (norm scales around 1), exactly reproducible."""
    rng = np.random.default_rng(seed)

    def fill(path, spec):
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        x = rng.standard_normal(spec.shape).astype(np.float32)
        if name.endswith("scale"):
            return (1.0 + 0.1 * x).astype(spec.dtype)
        return ((0.5 if "embedding" in name else 0.1) * x).astype(spec.dtype)

    return jax.tree_util.tree_map_with_path(fill, torch_format.expected_params(config, head))


def inputs(config, seed=1, batch=B, length=T):
    """Random ids and a right-padded validity mask (row 1 is 7 tokens short)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, config.vocab_size, (batch, length)).astype(np.int32)
    valid = np.ones((batch, length), bool)
    valid[1, length - 7:] = False
    ids[~valid] = config.pad_id
    return ids, valid


@functools.lru_cache(maxsize=None)
def jax_forward(config, head):
    model = M.build(config, head)
    return jax.jit(lambda p, ids, valid: model.apply({"params": p}, ids, kv_valid=valid))


def jax_outputs(config, head, params, ids, valid) -> list[np.ndarray]:
    out = jax_forward(config, head)(params, ids, valid)
    return [np.asarray(out.start_logits), np.asarray(out.end_logits)] if head == "qa" else [np.asarray(out.logits)]


def torch_outputs(model, ids, valid) -> list[np.ndarray]:
    with torch.no_grad():
        out = model(torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(valid))
    if model.head == "qa":
        return [out.start_logits.numpy(), out.end_logits.numpy()]
    return [out.logits.numpy()]


@functools.lru_cache(maxsize=None)
def _jax_decode_step(config):
    model = M.build(config)
    return model, jax.jit(lambda p, c, x: M.decode_step(model, p, c, x))


def jax_greedy(config, params, prompt, n):
    model, step = _jax_decode_step(config)
    cache = M.init_cache(model, prompt.shape[0], length=config.max_len)
    out, cache = step(params, cache, jnp.asarray(prompt))
    tokens = [jnp.argmax(out.logits[:, -1], -1)]
    for _ in range(n - 1):
        out, cache = step(params, cache, tokens[-1][:, None])
        tokens.append(jnp.argmax(out.logits[:, -1], -1))
    return np.stack([np.asarray(t) for t in tokens], axis=1)


def tree_equal(a, b) -> bool:
    fa, fb = mapping.flatten(a), mapping.flatten(b)
    return fa.keys() == fb.keys() and all(
        np.asarray(fa[k]).dtype == np.asarray(fb[k]).dtype and np.array_equal(np.asarray(fa[k]), np.asarray(fb[k]))
        for k in fa)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every config of CONFIGS exported once: ``{name: (config, head, params, directory)}``."""
    root = tmp_path_factory.mktemp("torch_exports")
    out = {}
    for i, (name, (config, head)) in enumerate(CONFIGS.items()):
        params = random_params(config, head, seed=i)
        out[name] = (config, head, params, torch_format.export_torch(params, config, head, str(root / name)))
    return out


# --- the mapping table ------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_round_trip_is_exact(name, exported):
    config, head, params, directory = exported[name]
    tensors, leftovers = mapping.to_target(params, "torch")
    assert not leftovers
    back = mapping.from_target(tensors, torch_format.expected_params(config, head), "torch", source="test")
    assert tree_equal(params, back)
    config2, head2, from_files = torch_format.import_torch(directory)  # through safetensors on disk
    assert (config2, head2) == (config, head)
    assert tree_equal(params, from_files)


def test_round_trip_bfloat16_is_bit_exact(tmp_path):
    config = tiny(param_dtype="bfloat16", n_layers=1)
    params = random_params(config, "lm")
    assert mapping.flatten(params)["transformer/wte/embedding"].dtype.name == "bfloat16"
    torch_format.export_torch(params, config, "lm", str(tmp_path / "bf16"))
    assert tree_equal(params, torch_format.import_torch(str(tmp_path / "bf16"))[2])


def test_hf_fusion_matches_the_layout_of_gpt2():
    """c_attn is [q | k | v] along the output axis of a Conv1D [in, out] weight."""
    config = tiny(n_layers=1)
    params = random_params(config, "lm")
    tensors, _ = mapping.to_target(params, "hf")
    attn = params["transformer"]["h_0"]["attn"]
    D = config.d_model
    w = tensors["transformer.h.0.attn.c_attn.weight"]
    assert w.shape == (D, 3 * D)
    np.testing.assert_array_equal(w[:, D:2 * D], attn["key"]["kernel"].reshape(D, D))
    np.testing.assert_array_equal(tensors["transformer.h.0.attn.c_attn.bias"][2 * D:], attn["value"]["bias"].reshape(-1))
    np.testing.assert_array_equal(tensors["transformer.h.0.attn.c_proj.weight"], attn["out"]["kernel"].reshape(D, D))


# --- parity -------------------------------------------------------------------------------------
def _sparse_slow(names):
    """A block-sparse export runs FlexAttention, which PyTorch compiles (minutes on CPU): those
    cases run in the full suite; the fast loop (`-m "not slow"`) keeps the dense ones."""
    return [pytest.param(n, marks=pytest.mark.slow) if not CONFIGS[n][0].attention.is_dense else n for n in names]


@pytest.mark.parametrize("name", _sparse_slow(sorted(CONFIGS)))
def test_torch_logits_match_jax(name, exported):
    config, head, params, directory = exported[name]
    model = TorchGPT.from_pretrained(directory)
    assert (model.layout_mask is None) == config.attention.is_dense
    ids, valid = inputs(config)
    for ours, theirs in zip(jax_outputs(config, head, params, ids, valid), torch_outputs(model, ids, valid)):
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(theirs, ours, atol=TOL, rtol=0)


@pytest.mark.slow
def test_sparse_mask_is_applied(exported):
    """The same weights without the layout give different logits: the mask is not a no-op."""
    config, head, params, directory = exported["window_global"]
    sparse = TorchGPT.from_pretrained(directory)
    causal = torch.ones(T, T).tril().bool()
    assert (sparse.layout_mask[0, :T, :T] & causal).sum() < causal.sum()  # tiles dropped within T
    dense = TorchGPT(sparse.config, head)
    dense.load_state_dict(sparse.state_dict())
    ids, valid = inputs(config)
    assert np.abs(torch_outputs(sparse, ids, valid)[0] - torch_outputs(dense, ids, valid)[0]).max() > 1e-2


@pytest.mark.slow
def test_sparse_exports_run_flex_attention_with_their_layout(exported):
    """A block-sparse export runs FlexAttention with a BlockMask of its layout by default
    (masked blocks skipped): the same logits as the token-mask reference, padding included."""
    sparse = [n for n in sorted(CONFIGS) if not CONFIGS[n][0].attention.is_dense]
    assert sparse
    for name in sparse:
        config, head, params, directory = exported[name]
        flex = TorchGPT.from_pretrained(directory)
        assert flex.attention_impl == "flex" and flex.layout_block == config.attention.block_size
        ref = TorchGPT.from_pretrained(directory, attention_impl="einsum")
        ids, valid = inputs(config)
        for a, b in zip(torch_outputs(flex, ids, valid), torch_outputs(ref, ids, valid)):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
        bm = flex.block_mask(T)
        n = -(-T // flex.layout_block)
        assert int(bm.kv_num_blocks.sum()) < n * (n + 1) // 2 * (bm.kv_num_blocks.shape[1])  # blocks skipped


@pytest.mark.parametrize("name", ["dense", "window_global", "rope_gqa_rms"])
def test_sdpa_attention_matches_the_reference(name, exported):
    """The fused SDPA path (used for PyTorch training baselines) gives the einsum logits and grads."""
    config, head, params, directory = exported[name]
    ref = TorchGPT.from_pretrained(directory, attention_impl="einsum")
    fused = TorchGPT.from_pretrained(directory, attention_impl="sdpa")
    ids = torch.as_tensor(np.asarray(inputs(config)[0]), dtype=torch.long)
    outs = []
    for model in (ref, fused):
        model.zero_grad()
        out = model(ids)
        logits = out.logits
        logits.float().square().mean().backward()
        grad = next(model.transformer.h[0].attn.query.parameters()).grad.clone()
        outs.append((logits.detach(), grad))
    torch.testing.assert_close(outs[1][0], outs[0][0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(outs[1][1], outs[0][1], atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("name", _sparse_slow(["dense", "bigbird", "rope_gqa_rms", "copy_window"]))
def test_greedy_generation_matches_token_for_token(name, exported):
    config, _, params, directory = exported[name]
    prompt = inputs(config, seed=5, length=30)[0][:1]  # 30 + 40 tokens: across 5 blocks of 16
    ours = jax_greedy(config, params, prompt, 40)
    theirs = TorchGPT.from_pretrained(directory).generate(torch.from_numpy(prompt).long(), 40).numpy()
    np.testing.assert_array_equal(theirs, ours)


@pytest.mark.parametrize("name", ["dense", "bigbird", "rope_gqa_rms", "copy_window", "derived"])
def test_cached_decoding_logits_match_jax(name, exported):
    """Random tokens fed one at a time through both KV caches (greedy runs of random
    models repeat themselves; this covers diverse content at every position)."""
    config, _, params, directory = exported[name]
    ids = inputs(config, seed=6, length=70)[0][:1]
    model, step = _jax_decode_step(config)
    cache = M.init_cache(model, 1, length=config.max_len)
    out, cache = step(params, cache, jnp.asarray(ids[:, :30]))
    ours = [np.asarray(out.logits)]
    for t in range(30, 70):
        out, cache = step(params, cache, jnp.asarray(ids[:, t:t + 1]))
        ours.append(np.asarray(out.logits))
    tm = TorchGPT.from_pretrained(directory)
    with torch.no_grad():
        tout = tm(torch.from_numpy(ids[:, :30]).long(), use_cache=True)
        theirs = [tout.logits.numpy()]
        for t in range(30, 70):
            tout = tm(torch.from_numpy(ids[:, t:t + 1]).long(), cache=tout.cache)
            theirs.append(tout.logits.numpy())
    np.testing.assert_allclose(np.concatenate(theirs, 1), np.concatenate(ours, 1), atol=TOL, rtol=0)


# --- the CLI from an Orbax checkpoint and back -----------------------------------------------------
def _save_run(workdir, config, head, params, tokenizer: bytes | None):
    from memgpt_jax.training.checkpoint import save_params

    save_params(str(workdir), params, {"config": {"task": head, "model": config.to_dict()}, "tokenizer": tokenizer})


def test_cli_export_and_import_round_trip(tmp_path, capsys):
    from memgpt_jax.cli import main
    from memgpt_jax.training.checkpoint import load_params

    config, head = CONFIGS["bigbird"]
    params = random_params(config, head, seed=11)
    _save_run(tmp_path / "run", config, head, params, json.dumps({"kind": "bytes"}).encode())
    out = tmp_path / "exported"
    assert main(["export", "--checkpoint", str(tmp_path / "run"), "--out", str(out), "--format", "torch"]) == 0
    assert sorted(os.listdir(out)) == [".memgpt-export.json", "attention_layout.safetensors", "config.json",
                                       "memgpt_tokenizer.json", "model.safetensors", "modeling_memgpt.py"]
    assert json.loads((out / "memgpt_tokenizer.json").read_text())["kind"] == "bytes"
    # the directory runs in a process where JAX and memgpt_jax cannot be imported: text -> ids -> logits
    ids, valid = inputs(config)
    np.save(tmp_path / "ids.npy", ids)
    np.save(tmp_path / "valid.npy", valid)
    text = "a café, twice: a café"
    script = (
        "import sys; sys.modules.update(jax=None, flax=None, memgpt_jax=None)\n"
        f"sys.path.insert(0, {str(out)!r})\n"
        "import json, numpy as np, torch\n"
        "from modeling_memgpt import Tokenizer, TorchGPT\n"
        f"ids, valid = (torch.from_numpy(np.load({str(tmp_path)!r} + f'/{{n}}.npy')) for n in ('ids', 'valid'))\n"
        f"m = TorchGPT.from_pretrained({str(out)!r})\n"
        f"np.save({str(tmp_path / 'logits.npy')!r}, m(ids.long(), attention_mask=valid).logits.detach().numpy())\n"
        f"tok = Tokenizer.from_pretrained({str(out)!r})\n"
        f"text_ids = [tok.bos_id] + tok.encode({text!r})\n"
        "logits = m(torch.tensor([text_ids])).logits\n"
        f"np.save({str(tmp_path / 'text_logits.npy')!r}, logits.detach().numpy())\n"
        "print(json.dumps({'ids': text_ids, 'decoded': tok.decode(text_ids)}))\n"
    )
    ran = subprocess.run([sys.executable, "-c", script], check=True, env={**os.environ, "PYTHONPATH": ""},
                         capture_output=True, text=True)
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), jax_outputs(config, head, params, ids, valid)[0],
                               atol=TOL, rtol=0)
    theirs = json.loads(ran.stdout)
    from memgpt_jax.data.tokenizers import ByteTokenizer

    assert theirs == {"ids": [1] + ByteTokenizer().encode(text).tolist(), "decoded": text}
    text_ids = np.asarray([theirs["ids"]], np.int32)
    np.testing.assert_allclose(np.load(tmp_path / "text_logits.npy"),
                               jax_outputs(config, head, params, text_ids, np.ones_like(text_ids, bool))[0],
                               atol=TOL, rtol=0)
    # ... and back into an Orbax checkpoint, bit-exact
    assert main(["import", "--source", str(out), "--format", "torch", "--workdir", str(tmp_path / "back")]) == 0
    back, meta = load_params(str(tmp_path / "back"))
    assert tree_equal(params, jax.tree.map(np.asarray, back))
    assert meta["config"]["task"] == head and meta["tokenizer"] == b'{"kind": "bytes"}'
    # an existing --out is refused, and kept
    assert main(["export", "--checkpoint", str(tmp_path / "run"), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.slow
def test_exported_tokenizers_load_without_memgpt_jax(tmp_path):
    """Each tokenizer kind, as an export writes it, gives the ids of ours in a process where
    memgpt_jax cannot be imported, and reads back into the checkpoint's form unchanged."""
    import shutil

    from memgpt_jax.data.spm import train_sentencepiece
    from memgpt_jax.data.tokenizers import ByteTokenizer, ListOpsTokenizer
    from memgpt_jax.export import torch_format, torch_model

    corpus = [f"the {w} sat on the mat near {n} cafés" for w in ("cat", "dog", "bird") for n in range(30)]
    toks = {"bytes": ByteTokenizer(), "listops": ListOpsTokenizer(),
            "sentencepiece": train_sentencepiece(corpus, vocab_size=300, hard_vocab_limit=False, num_threads=1)}
    texts = {"bytes": "naïve café ✓", "listops": "[MAX 2 9 [MIN 4 7 ] oops 0 ]",
             "sentencepiece": "the cat sat near 7 cafés, zebra"}
    shutil.copy(torch_model.__file__, tmp_path / "modeling_memgpt.py")
    for kind, tok in toks.items():
        config = json.dumps(tok.to_config()).encode()
        (tmp_path / kind).mkdir()
        torch_format.write_tokenizer(str(tmp_path / kind), config)
        assert torch_format.read_tokenizer(str(tmp_path / kind)) == config
    script = (
        "import json, sys; sys.modules.update(jax=None, flax=None, memgpt_jax=None)\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "from modeling_memgpt import Tokenizer\n"
        f"texts = {texts!r}\n"
        "out = {}\n"
        "for kind, text in texts.items():\n"
        f"    tok = Tokenizer.from_pretrained({str(tmp_path)!r} + '/' + kind)\n"
        "    ids = tok.encode(text)\n"
        "    out[kind] = [ids, tok.decode([tok.bos_id] + ids + [tok.eos_id]), tok.vocab_size]\n"
        "print(json.dumps(out))\n"
    )
    ran = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": ""})
    for kind, (ids, decoded, vocab_size) in json.loads(ran.stdout).items():
        tok = toks[kind]
        assert ids == tok.encode(texts[kind]).tolist(), kind
        assert decoded == tok.decode([tok.bos_id] + ids + [tok.eos_id]) and vocab_size == tok.vocab_size, kind


def test_export_of_quantized_checkpoint_is_its_dequantized_model(tmp_path):
    from memgpt_jax.compress.quantize import dequantize_params, encode, quantize_params
    from memgpt_jax.cli.export import export_checkpoint
    from memgpt_jax.training.checkpoint import save_params

    config, head = CONFIGS["dense"]
    qparams = quantize_params(random_params(config, head, seed=2), 8)
    tree, spec = encode(qparams)
    save_params(str(tmp_path / "q"), tree, {"config": {"task": head, "model": config.to_dict()},
                                            "quantization": {"bits": 8, "group": None, "tensors": spec}})
    export_checkpoint(str(tmp_path / "q"), str(tmp_path / "out"), "torch")
    ids, valid = inputs(config)
    np.testing.assert_allclose(torch_outputs(TorchGPT.from_pretrained(str(tmp_path / "out")), ids, valid)[0],
                               jax_outputs(config, head, dequantize_params(qparams), ids, valid)[0], atol=TOL, rtol=0)


# --- bad input ----------------------------------------------------------------------------------------
def test_missing_checkpoint_and_files_are_named(tmp_path, exported, capsys):
    from memgpt_jax.cli import main

    assert main(["export", "--checkpoint", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert "nothing does not exist: give a run directory" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(ConversionError, match="missing file .*config.json"):
        torch_format.import_torch(str(tmp_path))
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(os.path.join(exported["bigbird"][3], "config.json"), broken / "config.json")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        TorchGPT.from_pretrained(str(broken))
    with pytest.raises(ConversionError, match="missing file .*model.safetensors"):
        torch_format.import_torch(str(broken))


def test_shape_and_vocab_mismatches_name_the_tensor(tmp_path, exported):
    config, head, params, directory = exported["dense"]
    tensors = io.load_tensors(os.path.join(directory, "model.safetensors"))
    expected = torch_format.expected_params(config.replace(vocab_size=300), head)
    with pytest.raises(ConversionError, match=r"'transformer.wte.weight' has shape \(256, 64\), expected \(300, 64\)"):
        mapping.from_target(tensors, expected, "torch", source="x")
    del tensors["transformer.h.1.mlp.proj.bias"]
    with pytest.raises(ConversionError, match="missing tensor 'transformer.h.1.mlp.proj.bias'"):
        mapping.from_target(tensors, torch_format.expected_params(config, head), "torch", source="x")
    tensors["transformer.h.1.mlp.proj.bias"] = np.zeros(64, np.float32)
    tensors["transformer.h.2.ln_1.weight"] = np.zeros(64, np.float32)  # a third layer the config lacks
    with pytest.raises(ConversionError, match="transformer.h.2.ln_1.weight.*not used"):
        mapping.from_target(tensors, torch_format.expected_params(config, head), "torch", source="x")
    with pytest.raises(ConversionError, match=r"'transformer/h_0/mlp/fc/\w+' has shape"):
        torch_format.export_torch(params, config.replace(d_ff=128), head, str(tmp_path / "never"))
    assert not (tmp_path / "never").exists()


def test_failed_export_leaves_nothing_that_looks_complete(tmp_path, exported, monkeypatch):
    config, head, params, _ = exported["bigbird"]

    def fail(path, data):
        raise OSError("disk full")

    monkeypatch.setattr(io, "write_json", fail)  # fails after the weights are written
    with pytest.raises(OSError, match="disk full"):
        torch_format.export_torch(params, config, head, str(tmp_path / "out"))
    assert os.listdir(tmp_path) == []  # neither out nor a partial directory


@pytest.mark.slow
def test_torch_benchmark_peer_times_a_forward_and_refuses_flex_training(exported):
    """benchmarks/torch_train_step.py: the PyTorch peer of the train-step benchmark."""
    _, _, _, directory = exported["window_global"]
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks",
                          "torch_train_step.py")
    base = [sys.executable, script, "--export", directory, "--seq-len", "32", "--batch", "2", "--repeats", "1"]
    out = subprocess.run(base + ["--forward-only"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["step_s"] > 0 and result["threads"] >= 1 and result["faults_per_step"] >= 0
    bad = subprocess.run(base + ["--attention-impl", "flex"], capture_output=True, text=True)
    assert bad.returncode == 2 and "forward only on CPU" in bad.stderr
    floor = subprocess.run(base + ["--attention-impl", "none"], capture_output=True, text=True)  # a full step
    assert floor.returncode == 0, floor.stderr[-2000:]
    assert json.loads(floor.stdout.strip().splitlines()[-1])["step_s"] > 0
