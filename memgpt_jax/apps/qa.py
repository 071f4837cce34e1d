"""Extractive QA inference and SQuAD metrics (exact match and token F1).

``predict`` runs every window of every question through a ``SpanQA`` model and
keeps, per question, the best-scoring span (``start_logit + end_logit``, end not
before start, at most ``max_answer_tokens`` long, inside the context). Answers
are exact substrings of the context, via the tokens' character offsets.
Metrics follow the SQuAD v1.1 evaluation: lower-case, strip punctuation,
articles and extra whitespace; each prediction scores its best gold answer.
"""

from __future__ import annotations

import collections
import re
import string
import time
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from memgpt_jax import tasks
from memgpt_jax.compress.quantize import inference_params
from memgpt_jax.data.prepared import as_text
from memgpt_jax.data.qa_pipeline import QAFeature, iter_eval_features, pad_features, qa_answers
from memgpt_jax.training.run import Run

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """Token-overlap F1 as the official v1.1 script computes it: no common token (an
    empty normalized prediction or gold included, even both empty) scores 0."""
    p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = collections.Counter(p) & collections.Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Mapping[str, str], golds: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """``exact_match`` and ``f1`` in percent over the questions in ``golds``."""
    if not golds:
        raise ValueError("no questions to score")
    em = f1 = 0.0
    for qid, answers in golds.items():
        if qid not in predictions:  # the official script: "Unanswered question ... will receive score 0"
            continue
        pred = predictions[qid]
        em += max(exact_match(pred, a) for a in answers)
        f1 += max(token_f1(pred, a) for a in answers)
    n = len(golds)
    return {"exact_match": 100.0 * em / n, "f1": 100.0 * f1 / n, "questions": n}


def best_span(start_logits: np.ndarray, end_logits: np.ndarray, lo: int, hi: int,
              max_answer_tokens: int) -> tuple[float, int, int]:
    """The best ``(score, start, end)`` with ``lo <= start <= end < hi`` and
    ``end - start < max_answer_tokens``."""
    s = np.asarray(start_logits[lo:hi], np.float64)
    e = np.asarray(end_logits[lo:hi], np.float64)
    n = len(s)
    scores = s[:, None] + e[None, :]
    i, j = np.indices((n, n))
    scores = np.where((j >= i) & (j - i < max_answer_tokens), scores, -np.inf)
    flat = int(np.argmax(scores))
    a, b = divmod(flat, n)
    return float(scores[a, b]), a + lo, b + lo


class QAPredictor:
    def __init__(self, run: Run, *, batch_size: int = 16, max_len: int | None = None,
                 doc_stride: int | None = None, max_answer_tokens: int = 30) -> None:
        tasks.require(run.task, "qa", run.path)
        dc = run.config.data
        self.run, self.batch_size = run, batch_size
        self.max_len = int(max_len or dc.seq_len)
        self.doc_stride = int(doc_stride or dc.doc_stride)
        self.max_answer_tokens = max_answer_tokens
        model = run.model

        @jax.jit
        def logits(params, inputs, kv_valid):
            out = model.apply({"params": inference_params(params)}, inputs, kv_valid=kv_valid)
            return out.start_logits, out.end_logits

        self._logits = logits

    def _run(self, feats: list[QAFeature]) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for i in range(0, len(feats), self.batch_size):
            chunk = feats[i:i + self.batch_size]
            batch = pad_features(chunk, self.batch_size, self.max_len)
            s, e = self._logits(self.run.params, batch["inputs"], batch["kv_valid"])
            s, e = np.asarray(s), np.asarray(e)
            out.extend((s[r], e[r]) for r in range(len(chunk)))
        return out

    def predict(self, source: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        """Answer text per question id."""
        records, feats, owner = [], [], []
        for record, fs in iter_eval_features(source, self.run.tokenizer, max_len=self.max_len,
                                             doc_stride=self.doc_stride):
            records.append(record)
            feats.extend(fs)
            owner.extend([len(records) - 1] * len(fs))
        best: dict[int, tuple[float, str]] = {}
        for f, k, (s, e) in zip(feats, owner, self._run(feats)):
            lo, hi = f.context_offset, len(f.inputs)
            if hi <= lo:
                continue
            score, a, b = best_span(s, e, lo, hi, self.max_answer_tokens)
            context = as_text(records[k]["context"])
            text = context[int(f.char_start[a - lo]):int(f.char_end[b - lo])].strip()
            if k not in best or score > best[k][0]:
                best[k] = (score, text)
        return {as_text(records[k].get("id", str(k))): best.get(k, (0.0, ""))[1] for k in range(len(records))}

    def answer(self, question: str, context: str) -> str:
        return self.predict([{"id": "q", "question": question, "context": context}])["q"]


def evaluate_qa(run: Run, source: Sequence[Mapping[str, Any]], **kwargs: Any) -> dict[str, Any]:
    """SQuAD exact match and F1 (in percent) of ``run``'s answers to ``source``'s
    questions, ``questions_per_s``, and the ``predictions`` per question id."""
    predictor = QAPredictor(run, **kwargs)
    t0 = time.perf_counter()
    predictions = predictor.predict(source)
    seconds = time.perf_counter() - t0
    golds = {as_text(r["id"]): qa_answers(r)[0] for r in (source[i] for i in range(len(source)))}
    scores = squad_scores(predictions, golds)
    scores["questions_per_s"] = len(golds) / max(seconds, 1e-9)
    return {**scores, "predictions": predictions}
