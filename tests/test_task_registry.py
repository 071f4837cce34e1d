"""A task added from outside the library: per-token tagging of generated ListOps, declared in
this module alone, trains, evaluates, saves, reopens and exports through the public API
(README "Adding a task" walks through the same steps)."""

from __future__ import annotations

import importlib.util
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memgpt_jax import data as data_lib
from memgpt_jax import tasks
from memgpt_jax.config import ModelConfig
from memgpt_jax.data.listops import CLOSE, DIGITS
from memgpt_jax.layers import Linear
from memgpt_jax.model import Transformer
from memgpt_jax.run_config import ConfigError, RunConfig
from memgpt_jax.tasks.losses import classification_cross_entropy
from memgpt_jax.training.evaluate import evaluate_run
from memgpt_jax.training.loop import train
from memgpt_jax.training.run import open_run

TAGS = 3  # 0: a digit, 1: an operator, 2: anything else (brackets, BOS, padding)


# 1. The head: the shared Transformer body, and one set of logits per token.
class TokenTagger(nn.Module):
    config: ModelConfig
    attention_fn: Any = None

    @nn.compact
    def __call__(self, input_ids, **kwargs):
        out = Transformer(self.config, self.attention_fn, name="transformer")(input_ids, **kwargs)
        logits = Linear((TAGS,), ("embed", "labels"), name="tags")(out.last_hidden_state)
        return out.replace(logits=logits.astype(jnp.float32))


# 2. The inputs: a resumable iterator (get_state/set_state) of batches with the keys the loss reads.
class TagIterator:
    def __init__(self, lm_batches, tokenizer):
        self.inner = lm_batches
        self.digits = tokenizer.encode(" ".join(DIGITS))
        self.close = tokenizer.encode(CLOSE)

    def __iter__(self):
        return self

    def __next__(self):
        b = next(self.inner)
        ids = b["inputs"]
        operator = (ids >= self.digits.max() + 1) & (ids < self.close.min())
        tags = np.where(np.isin(ids, self.digits), 0, np.where(operator, 1, 2)).astype(np.int32)
        return {"inputs": ids, "segment_ids": b["segment_ids"], "positions": b["positions"],
                "tags": tags, "tag_mask": b["loss_mask"]}

    def get_state(self):
        return self.inner.get_state()

    def set_state(self, state):
        self.inner.set_state(state)


def tag_inputs(config, source, tokenizer, *, train, teacher_offsets=None, **common):
    lm = data_lib.PackedLMIterator(source, tokenizer, seq_len=config.data.seq_len, **common)
    return TagIterator(lm, tokenizer)


# 3. The loss: (mean loss, metrics, weight); the weight here counts tagged tokens.
def tag_loss(out, batch, label_smoothing=0.0):
    mask = batch["tag_mask"].astype(bool)
    flat = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731  [B, T, ...] -> [B * T, ...]
    loss, metrics = classification_cross_entropy(flat(out.logits), flat(batch["tags"]), flat(mask), label_smoothing)
    return loss, metrics, jnp.sum(mask).astype(jnp.float32)


# 4. The declaration: one call.
TAGGING = tasks.register(tasks.Task(
    name="tagging", head=TokenTagger, inputs=tag_inputs, loss=tag_loss,
    distill_logits=lambda out: (out.logits,), distill_mask=lambda batch: batch["tag_mask"],
    model_inputs=("segment_ids", "positions"), weight_unit="tokens", headline="accuracy",
    commands=frozenset({"finetune", "distill"}),
    export_params=(("tags/kernel", "tags.weight", "linear"), ("tags/bias", "tags.bias", "copy")),
))


def tagging_config(data_dir: str, steps: int) -> RunConfig:
    return RunConfig.from_dict(dict(
        task="tagging",
        model=dict(vocab_size=32, d_model=32, n_layers=1, n_heads=2, max_len=32, dropout=0.0),
        data=dict(dataset="listops", name="memgpt_listops/tiny", data_dir=data_dir, tokenizer="listops",
                  seq_len=32, batch_size=8, eval_batch_size=8, eval_batches=4),
        optim=dict(lr=3e-3, warmup_steps=5),
        train=dict(steps=steps, log_every=10, eval_every=steps, checkpoint_every=steps),
    ))


@pytest.mark.slow
def test_a_task_declared_in_a_test_module_trains_evaluates_saves_and_reopens(tmp_path):
    assert "tagging" in tasks.names() and tasks.accepting("finetune")[-1] == "tagging"
    config = tagging_config(str(tmp_path / "data"), steps=60)
    summary = train(config, str(tmp_path / "run"), progress=False)
    assert summary["step"] == 60
    # the loop's periodic eval went through the task: token-weighted, no perplexity, no class report
    assert summary["eval"]["tokens"] > 0 and "perplexity" not in summary["eval"]
    assert summary["eval"]["accuracy"] > 0.9  # a token's tag is a function of the token: learnt in 60 steps

    run = open_run(str(tmp_path / "run"))  # the saved config names the task; the registry rebuilds its head
    assert run.task == "tagging" and isinstance(run.model, TokenTagger) and run.step == 60
    report = evaluate_run(run)
    np.testing.assert_allclose(report["accuracy"], summary["eval"]["accuracy"], rtol=1e-6)
    np.testing.assert_allclose(report["loss"], summary["eval"]["loss"], rtol=1e-5)

    if importlib.util.find_spec("torch") and importlib.util.find_spec("safetensors"):  # the [torch] extra
        # export: the weights go to the torch format and come back bit for bit (GPT-2: see below)
        from memgpt_jax.export.torch_format import export_torch, import_torch

        config_back, head, params = import_torch(export_torch(run.params, run.model_config, "tagging",
                                                              str(tmp_path / "torch")))
        assert head == "tagging" and config_back == run.model_config
        for a, b in zip(jax.tree.leaves(run.params), jax.tree.leaves(params)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    with pytest.raises(ValueError, match="'tagging' model; this needs a 'lm' model"):
        tasks.require(run.task, "generate", run.path)  # commands it did not declare refuse it
    with pytest.raises(ConfigError, match="distill.topk"):  # the shared rules hold for it too
        tasks.check(config.replace(distill={"teacher": "x", "topk": 4}))


def test_registry_refuses_unknown_and_duplicate_tasks():
    with pytest.raises(ConfigError, match=r"^task: unknown value 'nope'; choose one of \("):
        tasks.get("nope")
    assert tasks.register(TAGGING) is TAGGING  # registering the same declaration again is harmless
    from memgpt_jax.export.hf_gpt2 import architecture  # lazy: the export layer
    from memgpt_jax.export.mapping import ConversionError

    with pytest.raises(ConversionError, match="'tagging' declares no GPT-2 architecture"):
        architecture("tagging")  # hf_architecture=None: a GPT-2 export is refused, naming the task
    with pytest.raises(ValueError, match="already registered"):
        tasks.register(tasks.Task(name="tagging", head=TokenTagger, inputs=tag_inputs, loss=tag_loss,
                                  distill_logits=lambda out: (out.logits,), distill_mask=lambda b: None))
