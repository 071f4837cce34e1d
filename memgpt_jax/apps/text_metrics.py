"""Text-generation metrics from the standard libraries: BLEU and chrF (sacrebleu),
ROUGE-1/2/L (Google's ``rouge-score``), exact match, and dialogue entity F1.

- **BLEU / chrF**: corpus-level sacrebleu scores with its defaults (13a tokenization
  for BLEU) on detokenized text, the standard for translation; several references per
  sentence are allowed (sacrebleu's multi-reference form).
- **ROUGE**: ``rouge_score.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)``
  F-measure, averaged over sentences, in percent. With several references a sentence
  scores its best one per ROUGE type (``RougeScorer.score_multi``), as AESLC is scored.
- **Exact match**: whitespace-normalized, lower-cased strings.
- **Entity F1** (task dialogue, KVRET): the entities of a fixed vocabulary found in each
  reference and in each output (:class:`memgpt_jax.data.dialogue.EntityMatcher`);
  micro-averaged over the corpus: TP = the multiset intersection of a turn's
  reference and output entities, FP = output entities beyond it, FN = reference
  entities beyond it, summed over all turns (turns without entities count their FPs).
"""

from __future__ import annotations

import collections
from typing import Callable, Sequence

import sacrebleu
from rouge_score import rouge_scorer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
_SCORER = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


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


def rouge(hypotheses: Sequence[str], references: Sequence[str | Sequence[str]]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure in percent; a reference may be a list (best one counts)."""
    _check(hypotheses, references)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for h, r in zip(hypotheses, references):
        refs = [r] if isinstance(r, str) else list(r)
        scores = _SCORER.score_multi(refs, h) if len(refs) > 1 else _SCORER.score(refs[0], h)
        for t in ROUGE_TYPES:
            totals[t] += scores[t].fmeasure
    return {t: 100.0 * v / len(hypotheses) for t, v in totals.items()}


def mbr_select(candidates: Sequence[Sequence[str]], utility: str = "rouge1") -> list[int]:
    """Minimum Bayes risk selection (Kumar & Byrne, 2004): per list of candidate outputs for one
    input, the index of the candidate with the highest mean ROUGE F-measure (``utility``,
    ``rouge-score``, stemming) against the other candidates, which stand in for samples of the
    model's distribution. Ties go to the earliest candidate."""
    if utility not in ROUGE_TYPES:
        raise ValueError(f"utility must be one of {ROUGE_TYPES}, got {utility!r}")
    scorer = rouge_scorer.RougeScorer([utility], use_stemmer=True)
    best = []
    for cands in candidates:
        if not cands:
            raise ValueError("mbr_select needs at least one candidate per input")
        gains = [sum(scorer.score(other, c)[utility].fmeasure for j, other in enumerate(cands) if j != i)
                 for i, c in enumerate(cands)]
        best.append(max(range(len(cands)), key=lambda i: (gains[i], -i)))
    return best


def rouge_l(hypotheses: Sequence[str], references: Sequence[str | Sequence[str]]) -> float:
    """Mean sentence ROUGE-L F-measure, in percent (``rouge-score``, stemming on)."""
    return rouge(hypotheses, references)["rougeL"]


def entity_f1(hypotheses: Sequence[str], gold: Sequence[Sequence[str]],
              extract: Callable[[str], list[str]]) -> dict[str, float]:
    """Micro precision / recall / F1 (percent) of the entities ``extract`` finds in the
    outputs against each turn's ``gold`` entities (see the module docstring)."""
    _check(hypotheses, gold)
    tp = fp = fn = 0
    for h, g in zip(hypotheses, gold):
        predicted, wanted = collections.Counter(extract(h)), collections.Counter(x.lower() for x in g)
        hit = sum((predicted & wanted).values())
        tp, fp, fn = tp + hit, fp + sum(predicted.values()) - hit, fn + sum(wanted.values()) - hit
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"entity_precision": 100 * precision, "entity_recall": 100 * recall, "entity_f1": 100 * f1,
            "entity_tp": tp, "entity_fp": fp, "entity_fn": fn}


def exact_match(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    _check(hypotheses, references)
    norm = lambda s: " ".join(s.lower().split())  # noqa: E731
    return 100.0 * sum(norm(h) == norm(r) for h, r in zip(hypotheses, references)) / len(hypotheses)


def all_metrics(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """BLEU, chrF, ROUGE-1/2/L and exact match against one reference per sentence."""
    scores = rouge(hypotheses, references)
    return {"bleu": bleu(hypotheses, references), "chrf": chrf(hypotheses, references),
            "rouge1": scores["rouge1"], "rouge2": scores["rouge2"], "rouge_l": scores["rougeL"],
            "exact_match": exact_match(hypotheses, references)}
