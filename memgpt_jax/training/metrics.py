"""Classification metrics: accuracy, per-class and macro precision/recall/F1, confusion."""

from __future__ import annotations

from typing import Any

import numpy as np


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
