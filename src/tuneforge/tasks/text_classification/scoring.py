"""Text classification's decisions and scores: label indicator rows, per-label thresholds tuned on
dev, the decision rule, metrics and the report."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ...data.readers import TextExample
from ...evaluation.metrics import (
    format_classification_report,
    multi_label_scores,
    single_label_scores,
)

THRESHOLD_GRID = np.round(np.arange(0.05, 0.96, 0.05), 2)  # includes 0.5


def multi_hot(examples: Sequence[TextExample], labels: Sequence[str]) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    out = np.zeros((len(examples), len(labels)), dtype=int)
    for row, ex in enumerate(examples):
        for label in ex.labels or []:
            out[row, index[label]] = 1
    return out


def tune_thresholds(probabilities: np.ndarray, gold: np.ndarray) -> list[float]:
    """Per label, the threshold from THRESHOLD_GRID with the best F1 on these (dev) texts.

    Ties go to the threshold closest to 0.5, so a label with no dev evidence keeps 0.5.
    """
    thresholds = []
    for j in range(gold.shape[1]):
        best, best_key = 0.5, None
        for t in THRESHOLD_GRID:
            pred = probabilities[:, j] >= t
            tp = int(np.sum(pred & (gold[:, j] == 1)))
            denom = int(pred.sum()) + int(gold[:, j].sum())
            f1 = 2 * tp / denom if denom else 0.0
            key = (f1, -abs(float(t) - 0.5))
            if best_key is None or key > best_key:
                best, best_key = float(t), key
        thresholds.append(best)
    return thresholds


def decide(probabilities: np.ndarray, multi_label: bool, thresholds: Sequence[float] | None = None) -> np.ndarray:
    """Class index per text (single-label) or a 0/1 matrix (multi-label, per-label thresholds)."""
    if not multi_label:
        return probabilities.argmax(axis=-1)
    limits = np.asarray(thresholds if thresholds is not None else [0.5] * probabilities.shape[1])
    return (probabilities >= limits[None, :]).astype(int)


def score(examples: Sequence[TextExample], probabilities: np.ndarray, meta: dict) -> dict:
    """Metrics for labelled texts, with the loop's ``f1`` (macro single-label, micro multi-label)."""
    labels = meta["labels"]
    if meta["multi_label"]:
        scores = multi_label_scores(multi_hot(examples, labels), decide(probabilities, True, meta["thresholds"]), labels)
        headline = {"f1": scores["micro"]["f1"], "subset_accuracy": scores["subset_accuracy"],
                    "hamming_loss": scores["hamming_loss"]}
    else:
        index = {label: i for i, label in enumerate(labels)}
        gold = [index[ex.labels[0]] for ex in examples]
        scores = single_label_scores(gold, decide(probabilities, False).tolist(), labels)
        headline = {"f1": scores["macro"]["f1"], "accuracy": scores["accuracy"]}
    headline.update({f"{avg}_f1": scores[avg]["f1"] for avg in ("micro", "macro", "weighted")})
    return {**headline, "texts": len(examples), "scores": scores}


def format_report(metrics: dict, multi_label: bool) -> str:
    kind = "multi-label (per-label thresholds)" if multi_label else "single-label"
    return f"Classification report, {kind}\n" + format_classification_report(metrics["scores"])
