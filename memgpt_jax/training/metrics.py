"""Classification metrics: accuracy, per-class and macro precision/recall/F1, confusion, and
the paired accuracy difference of two classifiers on the same examples."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from memgpt_jax import tasks


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``[true, predicted]`` counts."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (np.asarray(labels, np.int64), np.asarray(predictions, np.int64)), 1)
    return cm


def classification_report(predictions: np.ndarray, labels: np.ndarray, num_classes: int,
                          flat: bool = False) -> dict[str, Any]:
    """Accuracy, per-class and macro precision/recall/F1 (0 where undefined), confusion.

    ``flat=True`` returns only scalar entries (for metric logs)."""
    cm = confusion_matrix(predictions, labels, num_classes)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    actual = cm.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    total = max(cm.sum(), 1)
    report: dict[str, Any] = {
        "accuracy": float(tp.sum() / total),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
    }
    if flat:
        return report
    report.update(precision=precision.tolist(), recall=recall.tolist(), f1=f1.tolist(),
                  support=actual.astype(int).tolist(), confusion=cm.tolist())
    return report


def paired_difference(correct_a: Any, correct_b: Any, z: float = 1.96) -> dict[str, float]:
    """Accuracy of classifier A minus that of B, measured on the same examples, with its
    confidence interval (``z`` 1.96: 95%). ``correct_*``: one flag per example, in the same
    order, booleans or 0/1 (``predictions == labels``, not the predictions themselves).

    Pairing removes the examples' own difficulty from the noise: only the examples one model
    gets right and the other wrong count, so two models that agree on most examples are told
    apart at differences far below the unpaired standard errors of their accuracies. The
    interval is Agresti and Min's (2005) paired Wald interval, with half an example added to
    each cell of the 2x2 table (so a handful of examples never gives a zero-width interval),
    clipped to [-1, 1]. It covers the test sample's noise only, not that of training (seeds).

    Returns fractions, not points: ``difference`` (unadjusted), ``low``, ``high``, ``se``,
    ``examples``, and ``a_only`` / ``b_only``, the examples only A or only B gets right."""
    a, b = np.asarray(correct_a), np.asarray(correct_b)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"paired_difference needs two equal, non-empty 1-D arrays; got shapes {a.shape} and {b.shape}")
    for x in (a, b):
        if x.dtype != bool and not (np.issubdtype(x.dtype, np.number) and np.isin(x, (0, 1)).all()):
            raise ValueError("paired_difference takes per-example correct flags (booleans or 0/1), e.g. "
                             f"predictions == labels; got values such as {x[:4].tolist()}")
    a, b = a.astype(bool), b.astype(bool)
    n, a_only, b_only = len(a), int(np.sum(a & ~b)), int(np.sum(b & ~a))
    m = n + 2.0  # half an example in each of the four cells
    p10, p01 = (a_only + 0.5) / m, (b_only + 0.5) / m
    centre = p10 - p01
    se = float(np.sqrt(max(p10 + p01 - centre ** 2, 0.0) / m))
    return {"difference": (a_only - b_only) / n, "low": max(-1.0, centre - z * se), "high": min(1.0, centre + z * se),
            "se": se, "examples": n, "a_only": a_only, "b_only": b_only}


def summarize_eval(results: Iterable[tuple[dict[str, Any], dict[str, Any]]], task: str,
                   num_labels: int, full: bool = False, per_example: bool = False) -> dict[str, Any]:
    """Combines per-batch ``(metric sums, batch)`` pairs from an eval step: weighted
    means, the weight (tokens or examples), perplexity for token-level tasks, and the
    classification report over the valid examples (``full``: with per-class lists and
    the confusion matrix; ``per_example``: with ``predictions`` and ``labels``, arrays in
    the batches' order, for paired comparisons of two models on the same examples)."""
    totals: dict[str, float] = {}
    preds, labels = [], []
    for sums, batch in results:
        for k, v in sums.items():
            if k == "predictions":
                keep = np.asarray(batch.get("example_valid", np.ones(len(batch["label"]), bool)))
                preds.append(np.asarray(v).reshape(-1)[keep])
                labels.append(np.asarray(batch["label"])[keep])
            else:
                totals[k] = totals.get(k, 0.0) + float(v)
    w = max(totals.pop("weight", 0.0), 1e-9)
    result = {k: v / w for k, v in totals.items()}
    spec = tasks.get(task)
    result[spec.weight_unit] = w if spec.weight_unit == "tokens" else int(round(w))
    if spec.token_level and "loss" in result:
        result["perplexity"] = float(np.exp(result["loss"]))
    if preds:
        preds, labels = np.concatenate(preds), np.concatenate(labels)
        result.update(classification_report(preds, labels, num_labels, flat=not full))
        if per_example:
            result.update(predictions=preds, labels=labels)
    return result
