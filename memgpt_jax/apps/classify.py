"""Classification inference and evaluation of a trained classifier run.

``Classifier.predict`` batches texts the way training did (BOS, truncation to
the run's ``data.seq_len``, right padding with a validity mask) and returns
class probabilities. ``evaluate_classifier`` runs a prepared split and reports
accuracy, per-class and macro precision / recall / F1 and the confusion matrix.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import jax
import numpy as np

from memgpt_jax import tasks
from memgpt_jax.compress.quantize import inference_params
from memgpt_jax.data import ClassificationIterator
from memgpt_jax.data.cls_pipeline import KEEP
from memgpt_jax.training.evaluate import evaluate
from memgpt_jax.training.inputs import load_source
from memgpt_jax.training.run import Run


class Classifier:
    def __init__(self, run: Run, *, batch_size: int = 32, max_len: int | None = None,
                 truncate: str = "right") -> None:
        tasks.require(run.task, "classify", run.path)
        self.run = run
        self.batch_size = int(batch_size)
        self.max_len = int(max_len or run.config.data.seq_len)
        self.truncate = truncate  # "right" keeps the head, "left" the tail, "both" head and tail
        model = run.model

        @jax.jit
        def probs(params, inputs, kv_valid):
            out = model.apply({"params": inference_params(params)}, inputs, kv_valid=kv_valid)
            return jax.nn.softmax(out.logits, axis=-1)

        self._probs = probs

    def batches(self, texts: Sequence[str]) -> Iterable[dict[str, np.ndarray]]:
        source = [{"text": t, "label": 0} for t in texts]
        return ClassificationIterator(source, self.run.tokenizer, batch_size=self.batch_size, max_len=self.max_len,
                                      shuffle=False, num_epochs=1, drop_remainder=False, truncate=self.truncate)

    def dropped_tokens(self, texts: Sequence[str]) -> list[int]:
        """How many tokens of each text do not fit the context (and are cut by ``truncate``)."""
        budget = self.max_len - 1  # BOS
        return [max(len(self.run.tokenizer.encode(t)) - budget, 0) for t in texts]

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities ``[len(texts), num_labels]``."""
        out = []
        for batch in self.batches(texts):
            p = np.asarray(self._probs(self.run.params, batch["inputs"], batch["kv_valid"]))
            out.append(p[batch["example_valid"]])
        return np.concatenate(out) if out else np.zeros((0, self.run.model_config.num_labels), np.float32)

def evaluate_classifier(run: Run, split: str, *, batch_size: int = 64, max_examples: int = 0,
                        progress: bool = True, per_example: bool = False) -> dict[str, Any]:
    """The full classification report of ``run`` on a split of its data (the shared
    evaluator, ``training.evaluate``: accuracy, per-class and macro precision/recall/F1,
    confusion, ``examples_per_s``), with the split and the label names. ``per_example``:
    with ``predictions`` and ``labels`` (arrays in the split's order: two runs evaluated
    on one split can be compared example by example, ``paired_difference``)."""
    dc = run.config.data
    source = load_source(dc, split)
    if max_examples:
        source = [source[i] for i in range(min(max_examples, len(source)))]
    batches = ClassificationIterator(source, run.tokenizer, batch_size=batch_size, max_len=dc.seq_len, shuffle=False,
                                     num_epochs=1, drop_remainder=False, text_key=dc.text_key,
                                     truncate=KEEP[dc.kept()])  # as the run was trained
    report = evaluate(run.task, run.model, run.params, batches, full=True, progress=progress,
                      per_example=per_example)
    report.update(split=split, label_names=list(run.label_names))
    report.setdefault("examples_per_s", float("nan"))
    return report


def format_report(report: dict[str, Any]) -> str:
    names = report.get("label_names") or [str(i) for i in range(len(report["f1"]))]
    width = max(9, *(len(n) for n in names))
    lines = [f"{report.get('split', '')}: {report['examples']} examples, accuracy {report['accuracy']:.4f}, "
             f"macro F1 {report['macro_f1']:.4f}",
             f"{'class':<{width}}  precision  recall     f1  support"]
    for i, name in enumerate(names):
        lines.append(f"{name:<{width}}  {report['precision'][i]:9.4f}  {report['recall'][i]:6.4f}  "
                     f"{report['f1'][i]:.4f}  {report['support'][i]:7d}")
    lines.append(f"{'macro':<{width}}  {report['macro_precision']:9.4f}  {report['macro_recall']:6.4f}  "
                 f"{report['macro_f1']:.4f}")
    lines.append("confusion (rows: true, columns: predicted)")
    lines.append(" " * width + "  " + "  ".join(f"{n[:8]:>8}" for n in names))
    for name, row in zip(names, report["confusion"]):
        lines.append(f"{name:<{width}}  " + "  ".join(f"{c:8d}" for c in row))
    if "examples_per_s" in report:
        lines.append(f"throughput: {report['examples_per_s']:.1f} examples/s")
    return "\n".join(lines)
