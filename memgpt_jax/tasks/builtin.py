"""The built-in tasks: language modelling (prompt -> target pairs included), classification, extractive QA.

Batch formats are those of the pipelines (``memgpt_jax.data``); any batch may carry
``example_valid [B]`` (False for filler rows of a last batch).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from memgpt_jax import data as data_lib
from memgpt_jax.data.cls_pipeline import KEEP as CLS_KEEP
from memgpt_jax.model import LMHeadModel, SequenceClassifier, SpanQA
from memgpt_jax.run_config import ConfigError, RunConfig
from memgpt_jax.tasks import Task, losses, register


def _examples(batch: dict[str, Any], rows: Any) -> Any:
    """The weight of an example-level batch: its rows, or its valid rows."""
    ex = batch.get("example_valid")
    return jnp.float32(rows.shape[0]) if ex is None else jnp.sum(ex).astype(jnp.float32)


# --------------------------------------------------------------------------- language modelling


def _lm_inputs(config: RunConfig, source: Any, tokenizer: Any, *, train: bool, teacher_offsets: Any = None,
               **common: Any) -> Any:
    dc = config.data
    if dc.dataset == "pairs":  # prompt -> target: the loss covers the targets (and the prompt if asked)
        return data_lib.PackedPairsIterator(source, tokenizer, seq_len=dc.seq_len, pack=dc.pack,
                                            prompt_keep=dc.kept(), prompt_loss=dc.prompt_loss,
                                            multi_turn=dc.multi_turn, **common)
    return data_lib.PackedLMIterator(source, tokenizer, seq_len=dc.seq_len, text_key=dc.text_key, **common)


def _lm_loss(out: Any, batch: dict[str, Any], label_smoothing: float = 0.0):
    mask = batch["loss_mask"].astype(bool)
    if batch.get("example_valid") is not None:
        mask = mask & batch["example_valid"][:, None].astype(bool)
    loss, metrics = losses.lm_cross_entropy(out.logits, batch["targets"], mask)
    return loss, metrics, jnp.sum(mask).astype(jnp.float32)


LM = register(Task(
    name="lm", head=LMHeadModel, inputs=_lm_inputs, loss=_lm_loss,
    distill_logits=lambda out: (out.logits,), distill_mask=lambda batch: batch["loss_mask"].astype(bool),
    model_inputs=("segment_ids", "positions", "kv_valid"), weight_unit="tokens", token_level=True,
    headline="perplexity",
    eval_report=lambda config: "pairs" if config.data.dataset == "pairs" else None,
    hf_architecture="GPT2LMHeadModel",
    commands=frozenset({"pretrain", "finetune", "distill", "generate", "chat", "decode"}),
))


# --------------------------------------------------------------------------- classification


def _cls_inputs(config: RunConfig, source: Any, tokenizer: Any, *, train: bool, teacher_offsets: Any = None,
                **common: Any) -> Any:
    dc = config.data
    return data_lib.ClassificationIterator(source, tokenizer, max_len=dc.seq_len, text_key=dc.text_key,
                                           truncate=CLS_KEEP[dc.kept()],
                                           length_buckets=dc.length_buckets if train else (),
                                           unlabelled=train and config.distill.enabled,
                                           teacher_offsets=teacher_offsets, **common)


def _cls_loss(out: Any, batch: dict[str, Any], label_smoothing: float = 0.0):
    # Unlabelled rows (label -1, IMDb's unsupervised reviews) count for distillation only.
    ex = batch.get("example_valid")
    labelled = batch["label"] >= 0 if ex is None else (batch["label"] >= 0) & ex.astype(bool)
    loss, metrics = losses.classification_cross_entropy(out.logits, batch["label"], labelled, label_smoothing)
    return loss, metrics, _examples(batch, batch["label"])


def _cls_rules(config: RunConfig) -> None:
    if not config.distill.enabled and "unsupervised" in config.data.train_split.split("+"):
        raise ConfigError(f"data.train_split: {config.data.train_split!r} holds unlabelled reviews, which only a "
                          "distilled student learns from: set distill.teacher, or train on 'train'")


CLASSIFICATION = register(Task(
    name="classification", head=SequenceClassifier, inputs=_cls_inputs, loss=_cls_loss,
    distill_logits=lambda out: (out.logits,), distill_mask=lambda batch: batch.get("example_valid"),
    predictions=lambda out: jnp.argmax(out.logits, axis=-1), rules=_cls_rules, teacher_offsets=True,
    headline="accuracy", eval_report=lambda config: "classifier", hf_architecture="GPT2ForSequenceClassification",
    commands=frozenset({"finetune", "distill", "classify", "interpret"}),
))


# --------------------------------------------------------------------------- extractive QA


def _qa_inputs(config: RunConfig, source: Any, tokenizer: Any, *, train: bool, teacher_offsets: Any = None,
               **common: Any) -> Any:
    dc = config.data
    return data_lib.QAIterator(source, tokenizer, max_len=dc.seq_len, doc_stride=dc.doc_stride, **common)


def _qa_loss(out: Any, batch: dict[str, Any], label_smoothing: float = 0.0):
    loss, metrics = losses.span_cross_entropy(out.start_logits, out.end_logits, batch["start"], batch["end"],
                                              batch.get("example_valid"))
    return loss, metrics, _examples(batch, batch["start"])


QA = register(Task(
    name="qa", head=SpanQA, inputs=_qa_inputs, loss=_qa_loss,
    distill_logits=lambda out: (out.start_logits, out.end_logits),
    distill_mask=lambda batch: batch.get("example_valid"),
    headline="span_accuracy", eval_report=lambda config: "spans", hf_architecture="GPT2ForQuestionAnswering",
    commands=frozenset({"finetune", "distill", "qa"}),
))
