"""Text-generation metrics: BLEU and chrF (sacrebleu, on detokenized text), ROUGE-L, exact match.

BLEU and chrF are corpus-level sacrebleu scores with its defaults (13a
tokenization for BLEU), the standard for reporting translation quality.
ROUGE-L is the LCS-based F-measure on lower-cased word tokens, averaged over
sentences (as the ``rouge-score`` package computes ``rougeL`` with its default
tokenizer, minus stemming). Exact match compares whitespace-normalized,
lower-cased strings.
"""

from __future__ import annotations

import re
from typing import Sequence

import sacrebleu

_WORD = re.compile(r"[a-z0-9]+")


def _check(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise ValueError("no sentences to score")


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    _check(hypotheses, references)
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def chrf(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    _check(hypotheses, references)
    return float(sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score)


def _lcs(a: list[str], b: list[str]) -> int:
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Mean sentence ROUGE-L F1, in percent."""
    _check(hypotheses, references)
    total = 0.0
    for h, r in zip(hypotheses, references):
        ht, rt = _WORD.findall(h.lower()), _WORD.findall(r.lower())
        lcs = _lcs(ht, rt)
        if lcs:
            p, rc = lcs / len(ht), lcs / len(rt)
            total += 2 * p * rc / (p + rc)
    return 100.0 * total / len(hypotheses)


def exact_match(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    _check(hypotheses, references)
    norm = lambda s: " ".join(s.lower().split())  # noqa: E731
    return 100.0 * sum(norm(h) == norm(r) for h, r in zip(hypotheses, references)) / len(hypotheses)


def all_metrics(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    return {"bleu": bleu(hypotheses, references), "chrf": chrf(hypotheses, references),
            "rouge_l": rouge_l(hypotheses, references), "exact_match": exact_match(hypotheses, references)}
