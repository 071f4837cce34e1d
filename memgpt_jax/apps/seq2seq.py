"""Prompt -> target decoding and evaluation for models fine-tuned on pairs.

The model reads ``[BOS] prompt [SEP]`` (:func:`memgpt_jax.data.pairs_pipeline.encode_prompt`)
and writes the target up to EOS. ``decode`` batches prompts (greedy, or beam
search with a length penalty), KV-cached, and block-sparse models decode over
their kept blocks. ``evaluate_pairs`` decodes a prepared split and scores the
detokenized outputs with BLEU, chrF (sacrebleu), ROUGE-L and exact match.
``write_distillation_pairs`` is sequence-level knowledge distillation's data
step (Kim & Rush, 2016): the teacher's outputs replace the targets.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Mapping, Sequence


from memgpt_jax import tasks
from memgpt_jax.apps.generate import Generator, Sampling
from memgpt_jax.apps.text_metrics import all_metrics, entity_f1, mbr_select, rouge
from memgpt_jax.data.dialogue import EntityMatcher
from memgpt_jax.data.prepared import as_text, dataset_metadata
from memgpt_jax.data.pairs_pipeline import encode_prompt, keep_prompt
from memgpt_jax.progress import bar as progress_bar
from memgpt_jax.training.inputs import load_source
from memgpt_jax.training.run import Run


def _generator(run: Run, chunk: int = 32) -> Generator:
    return Generator(run.model, run.params, eos_id=run.tokenizer.eos_id, pad_id=run.tokenizer.pad_id,
                     chunk=chunk)


def decode(run: Run, prompts: Sequence[str], *, beam: int = 1, length_penalty: float = 1.0,
           max_new_tokens: int = 64, batch_size: int = 32, progress: bool = False,
           generator: Generator | None = None, no_repeat_ngram: int = 0, min_new_tokens: int = 0,
           mbr: int = 0, mbr_temperature: float = 0.7, seed: int = 0) -> list[str]:
    """Target text for each prompt (``no_repeat_ngram``, ``min_new_tokens``: see :class:`Sampling`).

    ``mbr = n`` decodes by minimum Bayes risk: the greedy output and ``n`` outputs sampled at
    ``mbr_temperature`` (seeds ``seed .. seed + n - 1``) are the candidates, and the one that
    agrees best with the others (ROUGE-1, :func:`mbr_select`) is the output."""
    constraints = Sampling(no_repeat_ngram=no_repeat_ngram, min_new_tokens=min_new_tokens)  # validated up front
    if mbr < 0:
        raise ValueError(f"mbr must be >= 0 (0: off), got {mbr}")
    if mbr and beam != 1:
        raise ValueError("minimum Bayes risk decoding (mbr) samples its candidates: use it with beam 1")
    sampled = Sampling(temperature=mbr_temperature, no_repeat_ngram=no_repeat_ngram,
                       min_new_tokens=min_new_tokens) if mbr else None
    if sampled is not None and sampled.greedy:
        raise ValueError("mbr_temperature must be > 0")
    tasks.require(run.task, "decode", run.path)
    gen = generator or _generator(run)
    tok = run.tokenizer
    limit = run.model_config.max_len - max_new_tokens
    if limit < 3:
        raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in {run.model_config.max_len}")
    keep = run.config.data.kept()  # as the run was trained: the end or the beginning of a long prompt
    multi_turn = run.config.data.multi_turn  # earlier replies read as [SEP] reply [EOS], as trained
    encoded = [[ids[0], *keep_prompt(ids[1:-1], limit - 2, keep), ids[-1]]
               for ids in (encode_prompt(tok, p, multi_turn) for p in prompts)]
    # similar lengths together: less padding per batch
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    out: list[str] = [""] * len(encoded)
    batches = range(0, len(order), batch_size)
    if progress:
        batches = progress_bar(batches, desc=f"decode (beam {beam})", unit="batch", file=sys.stderr)
    for start in batches:
        idx = order[start:start + batch_size]
        chunk = [encoded[i] for i in idx]
        if beam == 1:
            ids, _ = gen.generate_ids(chunk, max_new_tokens=max_new_tokens, sampling=constraints)
        else:
            ids, _ = gen.beam_search(chunk, beam=beam, max_new_tokens=max_new_tokens, length_penalty=length_penalty,
                                     no_repeat_ngram=no_repeat_ngram, min_new_tokens=min_new_tokens)
        texts = [tok.decode(row).strip() for row in ids]
        if mbr:
            candidates = [[t] for t in texts]
            for s in range(mbr):
                ids, _ = gen.generate_ids(chunk, max_new_tokens=max_new_tokens, sampling=sampled, seed=seed + s)
                for c, row in zip(candidates, ids):
                    c.append(tok.decode(row).strip())
            texts = [c[k] for c, k in zip(candidates, mbr_select(candidates))]
        for i, text in zip(idx, texts):
            out[i] = text
    return out


def load_pairs(run: Run, split: str, *, max_examples: int = 0) -> list[Mapping[str, Any]]:
    """The first ``max_examples`` (0: all) prompt/target records of ``split`` of the run's
    dataset (``run.config.data``; give a run another one with ``run.config.replace``)."""
    dc = run.config.data
    if not dc.name:
        raise ValueError(f"{run.path}: its config names no dataset; pass --dataset")
    source = load_source(dc, split)
    n = len(source) if not max_examples else min(max_examples, len(source))
    return [source[i] for i in range(n)]


def entity_vocabulary(run: Run) -> list[str] | None:
    """The entity list stored with the run's dataset (dialogue datasets), else ``None``."""
    dc = run.config.data
    return dataset_metadata(dc.name, dc.data_dir).get("entities") if dc.name else None


def score_outputs(hyps: Sequence[str], records: Sequence[Mapping[str, Any]],
                  entities: Sequence[str] | None = None) -> dict[str, Any]:
    """Scores outputs against the records' targets (BLEU, chrF, ROUGE, exact match); records
    with ``references`` also get ROUGE against all of them (``*_multi``: the best reference
    per sentence), and with ``entities`` and the dataset's entity vocabulary, entity F1."""
    refs = [as_text(r["target"]) for r in records]
    report: dict[str, Any] = all_metrics(hyps, refs)
    if records and "references" in records[0]:
        multi = [[as_text(x) for x in r["references"]] or [t] for r, t in zip(records, refs)]
        report.update({f"{k.replace('rougeL', 'rouge_l')}_multi": v for k, v in rouge(hyps, multi).items()})
    if records and "entities" in records[0] and entities:
        gold = [[as_text(x) for x in r["entities"]] for r in records]
        report.update(entity_f1(hyps, gold, EntityMatcher(entities)))
    return report


def evaluate_pairs(run: Run, records: Sequence[Mapping[str, Any]], *, beam: int = 1,
                   length_penalty: float = 1.0, max_new_tokens: int = 64, batch_size: int = 32,
                   progress: bool = True, entities: Sequence[str] | None = None, no_repeat_ngram: int = 0,
                   min_new_tokens: int = 0, mbr: int = 0, mbr_temperature: float = 0.7) -> dict[str, Any]:
    """Decodes the prompts (:func:`decode`), times it, and scores the outputs (:func:`score_outputs`)."""
    prompts = [as_text(r["prompt"]) for r in records]
    refs = [as_text(r["target"]) for r in records]
    gen = _generator(run)
    kwargs = dict(beam=beam, length_penalty=length_penalty, max_new_tokens=max_new_tokens, batch_size=batch_size,
                  generator=gen, no_repeat_ngram=no_repeat_ngram, min_new_tokens=min_new_tokens, mbr=mbr,
                  mbr_temperature=mbr_temperature)
    decode(run, prompts[:1], **kwargs)  # compile outside the timing (the first batch shape)
    t0 = time.perf_counter()
    hyps = decode(run, prompts, progress=progress, **kwargs)
    seconds = time.perf_counter() - t0
    report = score_outputs(hyps, records, entities)
    report.update(sentences=len(hyps), sentences_per_s=len(hyps) / max(seconds, 1e-9), beam=beam,
                  length_penalty=length_penalty, no_repeat_ngram=no_repeat_ngram, min_new_tokens=min_new_tokens)
    if mbr:
        report.update(mbr=mbr, mbr_temperature=mbr_temperature)
    report["examples"] = [{"prompt": p, "reference": r, "output": h} for p, r, h in zip(prompts[:5], refs, hyps)]
    return report


def write_distillation_pairs(run: Run, records: Sequence[Mapping[str, Any]], out: str, **kwargs: Any) -> int:
    """Writes ``{"prompt", "target"}`` JSONL with the teacher's outputs as targets; returns the count."""
    prompts = [as_text(r["prompt"]) for r in records]
    hyps = decode(run, prompts, **kwargs)
    n = 0
    with open(out, "w", encoding="utf-8") as f:
        for p, h in zip(prompts, hyps):
            if h.strip():
                f.write(json.dumps({"prompt": p, "target": h}, ensure_ascii=False) + "\n")
                n += 1
    return n
