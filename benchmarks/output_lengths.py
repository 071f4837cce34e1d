"""How long a model's outputs are next to the references, and what each length scores: the
diagnosis behind a summarization figure (are subjects too short? repeated words?).

    memgpt-jax decode --checkpoint runs/aeslc/teacher_copy --split dev --max-new-tokens 32 --out dev.jsonl
    python -m benchmarks.output_lengths --checkpoint runs/aeslc/teacher_copy --split dev --decoded dev.jsonl

``--decoded`` is the JSONL that ``decode --out`` writes (its ``target`` is the model's
output), in the split's order. Words are whitespace-separated; ROUGE-1 is the F-measure of
``rouge-score`` (stemming) against each example's own target, as ``memgpt-jax eval`` reports it.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
from typing import Any, Sequence


def length_report(outputs: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Mean / median words of outputs and references, the share of outputs repeating a word
    (case-insensitive), and per output length in words: how many, and their mean ROUGE-1."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)
    if len(outputs) != len(references) or not outputs:
        raise ValueError(f"{len(outputs)} outputs for {len(references)} references")
    out_words = [len(o.split()) for o in outputs]
    ref_words = [len(r.split()) for r in references]
    r1 = [100.0 * scorer.score(r, o)["rouge1"].fmeasure for o, r in zip(outputs, references)]
    repeats = [len({w.lower() for w in o.split()}) < len(o.split()) for o in outputs]
    by_len = collections.defaultdict(list)
    for n, score in zip(out_words, r1):
        by_len[min(n, 8)].append(score)
    return {
        "examples": len(outputs),
        "output_words_mean": statistics.mean(out_words), "output_words_median": statistics.median(out_words),
        "reference_words_mean": statistics.mean(ref_words),
        "reference_words_median": statistics.median(ref_words),
        "rouge1": statistics.mean(r1),
        "repeated_word_share": 100.0 * sum(repeats) / len(outputs),
        "by_output_words": {("8+" if n == 8 else str(n)): {"share": 100.0 * len(v) / len(outputs),
                                                          "rouge1": statistics.mean(v)}
                            for n, v in sorted(by_len.items())},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.output_lengths", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="the run whose dataset holds the references")
    p.add_argument("--split", required=True)
    p.add_argument("--decoded", required=True, help="JSONL from `memgpt-jax decode --split ... --out`")
    args = p.parse_args(argv)
    from memgpt_jax.apps.seq2seq import load_pairs  # lazy: --help without JAX
    from memgpt_jax.data.prepared import as_text
    from memgpt_jax.training.run import open_run

    try:
        with open(args.decoded) as f:
            outputs = [json.loads(line)["target"] for line in f if line.strip()]
    except (OSError, ValueError, KeyError) as err:
        raise SystemExit(f"error: --decoded {args.decoded}: {err}") from None
    records = load_pairs(open_run(args.checkpoint), args.split)
    if len(outputs) != len(records):
        raise SystemExit(f"error: {args.decoded} holds {len(outputs)} outputs, {args.split} {len(records)} examples")
    report = length_report(outputs, [as_text(r["target"]) for r in records])
    print(f"{report['examples']} examples: output words mean {report['output_words_mean']:.2f} "
          f"(median {report['output_words_median']:g}), reference {report['reference_words_mean']:.2f} "
          f"(median {report['reference_words_median']:g}); ROUGE-1 {report['rouge1']:.2f}; "
          f"{report['repeated_word_share']:.1f}% of outputs repeat a word")
    for n, row in report["by_output_words"].items():
        print(f"  {n:>2} words: {row['share']:5.1f}% of outputs, ROUGE-1 {row['rouge1']:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
