"""Hugging Face GPT-2: export loads in transformers with logit parity; import of a random
GPT2LMHeadModel built and saved here (no download); HF teachers; formats GPT-2 cannot express."""

from __future__ import annotations

import functools
import json
import os

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from memgpt_jax import model as M  # noqa: E402
from memgpt_jax.config import tiny  # noqa: E402
from memgpt_jax.export import hf_gpt2, torch_format  # noqa: E402
from memgpt_jax.export.mapping import ConversionError  # noqa: E402
from memgpt_jax.training.run import RunError  # noqa: E402

TOL = 1e-4


def random_params(config, head, seed=0):
    rng = np.random.default_rng(seed)

    def fill(path, spec):
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        x = rng.standard_normal(spec.shape).astype(np.float32)
        return 1.0 + 0.1 * x if name.endswith("scale") else (0.5 if "embedding" in name else 0.1) * x

    return jax.tree_util.tree_map_with_path(fill, torch_format.expected_params(config, head))


def padded_inputs(config, length=24, pad=5, seed=1):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, config.vocab_size, (2, length))
    valid = np.ones((2, length), bool)
    valid[1, length - pad:] = False
    ids[~valid] = config.pad_id
    return ids, valid


@functools.lru_cache(maxsize=None)
def jax_forward(config, head):
    model = M.build(config, head)
    return jax.jit(lambda p, ids, valid: model.apply({"params": p}, ids, kv_valid=valid))


def hf_run(model, ids, valid):
    model.eval()
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(valid).long())


@pytest.mark.parametrize("variant", [{}, {"activation": "relu", "tie_embeddings": False}])
def test_hf_lm_export_loads_and_matches(tmp_path, variant):
    config = tiny(**variant)
    params = random_params(config, "lm")
    out = hf_gpt2.export_hf_gpt2(params, config, "lm", str(tmp_path / "hf"))
    hf = transformers.GPT2LMHeadModel.from_pretrained(out)
    assert hf.config.n_embd == config.d_model and hf.config.activation_function == hf_gpt2._ACT_TO_HF[config.activation]
    ids, valid = padded_inputs(config)
    ours = np.asarray(jax_forward(config, "lm")(params, ids, valid).logits)
    theirs = hf_run(hf, ids, valid).logits.numpy()
    np.testing.assert_allclose(theirs[valid], ours[valid], atol=TOL, rtol=0)  # padding rows are undefined
    # greedy generation with transformers' own cache equals ours
    prompt = ids[:1, :12]
    hf_tokens = hf.generate(torch.from_numpy(prompt).long(), max_new_tokens=10, do_sample=False,
                            pad_token_id=config.pad_id)[:, 12:].numpy()
    lm = M.build(config)
    step = jax.jit(lambda p, c, x: M.decode_step(lm, p, c, x))
    res, cache = step(params, M.init_cache(lm, 1, length=22), prompt)
    tokens = [np.asarray(res.logits[:, -1].argmax(-1))]
    for _ in range(9):
        res, cache = step(params, cache, tokens[-1][:, None])
        tokens.append(np.asarray(res.logits[:, -1].argmax(-1)))
    np.testing.assert_array_equal(hf_tokens, np.stack(tokens, axis=1))
    # ... and imports back to the same parameters and config
    config2, params2 = hf_gpt2.import_hf_gpt2(out)
    assert config2 == config
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2)))


def test_hf_classifier_and_qa_export(tmp_path):
    config = tiny(num_labels=3, pad_id=0)
    params = random_params(config, "classification", seed=1)
    out = hf_gpt2.export_hf_gpt2(params, config, "classification", str(tmp_path / "cls"))
    hf = transformers.GPT2ForSequenceClassification.from_pretrained(out)
    ids, valid = padded_inputs(config)  # right padding with pad_id: HF finds the last non-pad token
    bias = torch_format.io.load_tensors(os.path.join(out, hf_gpt2.CLASSIFIER_FILE))["score.bias"]
    ours = np.asarray(jax_forward(config, "classification")(params, ids, valid).logits)
    np.testing.assert_allclose(hf_run(hf, ids, valid).logits.numpy() + bias, ours, atol=TOL, rtol=0)
    config2, params2 = hf_gpt2.import_hf_gpt2(out)  # the bias comes back from the side file
    assert config2 == config and np.array_equal(params2["score"]["bias"], params["score"]["bias"])

    params = random_params(config, "qa", seed=2)
    out = hf_gpt2.export_hf_gpt2(params, config, "qa", str(tmp_path / "qa"))
    result = hf_run(transformers.GPT2ForQuestionAnswering.from_pretrained(out), ids, valid)
    ours = jax_forward(config, "qa")(params, ids, valid)
    np.testing.assert_allclose(result.start_logits.numpy()[valid], np.asarray(ours.start_logits)[valid], atol=TOL)
    np.testing.assert_allclose(result.end_logits.numpy()[valid], np.asarray(ours.end_logits)[valid], atol=TOL)


def _save_random_gpt2(directory, *, safetensors: bool, strip_prefix: bool = False):
    """A small random GPT-2 built and saved with transformers (no download)."""
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=300, n_positions=64, n_embd=48, n_layer=2, n_head=4,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # GPT-2 initialises norms to 1/0 and biases to 0: perturb them all
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    if safetensors:
        hf.save_pretrained(directory)
    else:  # the original OpenAI layout: pytorch_model.bin, keys without "transformer."
        os.makedirs(directory, exist_ok=True)
        cfg.save_pretrained(directory)
        state = {k.removeprefix("transformer.") if strip_prefix else k: v for k, v in hf.state_dict().items()}
        torch.save(state, os.path.join(directory, "pytorch_model.bin"))
    return hf


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_import_random_gpt2_matches_transformers(tmp_path, fmt):
    directory = str(tmp_path / "gpt2")
    hf = _save_random_gpt2(directory, safetensors=fmt == "safetensors", strip_prefix=fmt == "bin")
    config, params = hf_gpt2.import_hf_gpt2(directory)
    assert (config.vocab_size, config.d_model, config.n_layers, config.max_len) == (300, 48, 2, 64)
    ids, valid = padded_inputs(config, length=20)
    ours = np.asarray(jax_forward(config, "lm")(params, ids, valid).logits)
    np.testing.assert_allclose(ours[valid], hf_run(hf, ids, valid).logits.numpy()[valid], atol=TOL, rtol=0)


def test_hf_teacher_for_distillation(tmp_path):
    from memgpt_jax.training.teacher import open_teacher

    directory = str(tmp_path / "teacher")
    hf = _save_random_gpt2(directory, safetensors=True)
    run = hf_gpt2.open_hf_run(directory, "lm")
    assert (run.task, run.step, run.tokenizer, run.quantized) == ("lm", 0, None, False)
    config = run.model_config
    ids, valid = padded_inputs(config, length=20)
    ours = np.asarray(run.model.apply({"params": run.params}, ids, kv_valid=valid).logits)
    np.testing.assert_allclose(ours[valid], hf_run(hf, ids, valid).logits.numpy()[valid], atol=TOL, rtol=0)
    # `distill.teacher=hf:DIR` resolves to the same run, for the student's task, through the
    # converter the command line passes in (the training layer does not import export)
    teacher = open_teacher(f"hf:{directory}", "lm", open_hf=hf_gpt2.open_hf_run)
    assert teacher.model_config == config and teacher.path == os.path.abspath(directory)
    with pytest.raises(ConversionError, match="missing tensor 'score.weight'"):
        open_teacher(f"hf:{directory}", "classification", open_hf=hf_gpt2.open_hf_run)
    with pytest.raises(RunError, match="needs a converter"):
        open_teacher(f"hf:{directory}", "lm")


@pytest.mark.parametrize("change, option", [
    ({"attention": {"pattern": "local", "block_size": 16}}, "attention.pattern='local'"),
    ({"position": "rope"}, "position='rope'"),
    ({"norm": "rmsnorm"}, "norm='rmsnorm'"),
    ({"n_kv_heads": 2}, "n_kv_heads=2"),
    ({"use_bias": False}, "use_bias=False"),
    ({"copy_dim": 8}, "copy_dim=8"),
])
def test_hf_refuses_what_gpt2_cannot_express(tmp_path, change, option):
    config = tiny(**change)
    with pytest.raises(ConversionError, match=f"cannot express .*{option}.*--format torch"):
        hf_gpt2.export_hf_gpt2(random_params(config, "lm"), config, "lm", str(tmp_path / "out"))
    assert os.listdir(tmp_path) == []


def test_hf_import_errors_name_the_problem(tmp_path):
    directory = tmp_path / "gpt2"
    _save_random_gpt2(str(directory), safetensors=True)
    hf_cfg = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**hf_cfg, "vocab_size": 320}))
    with pytest.raises(ConversionError, match="'transformer.wte.weight' has 300 rows .*vocab_size=320"):
        hf_gpt2.import_hf_gpt2(str(directory))
    (directory / "config.json").write_text(json.dumps({**hf_cfg, "n_layer": 1}))
    with pytest.raises(ConversionError, match=r"tensors \['transformer.h.1.attn.c_attn.bias'.* not used"):
        hf_gpt2.import_hf_gpt2(str(directory))
    (directory / "config.json").write_text(json.dumps({**hf_cfg, "n_embd": 64}))
    with pytest.raises(ConversionError, match=r"tensor 'transformer\.\S+' has shape \(\d+,\), expected"):
        hf_gpt2.import_hf_gpt2(str(directory))
    (directory / "config.json").write_text(json.dumps({**hf_cfg, "activation_function": "tanh"}))
    with pytest.raises(ConversionError, match="activation_function='tanh'"):
        hf_gpt2.import_hf_gpt2(str(directory))
    os.remove(directory / "model.safetensors")
    with pytest.raises(ConversionError, match="no weights found"):
        hf_gpt2.import_hf_gpt2(str(directory))
