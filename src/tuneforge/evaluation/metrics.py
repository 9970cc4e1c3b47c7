"""Entity-level metrics with seqeval's strict IOB2 definitions, and the token-level report.

Why not call seqeval directly: we need the same entity extraction for `predict` spans anyway,
and seqeval's strict mode builds Python objects per token (slow on large sets). Parity with
``seqeval.metrics.classification_report(mode="strict", scheme=IOB2)`` is asserted in the tests.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from ..data.tags import extract_entities, split_tag  # extract_entities lives with the tag schemes (data)


def _prf(tp: int, n_pred: int, n_true: int) -> tuple[float, float, float]:
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def entity_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict:
    """Per-type and micro/macro/weighted precision, recall, F1 and support.

    Returns ``{"per_type": {type: {...}}, "micro": {...}, "macro": {...}, "weighted": {...}}``.
    """
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sequences but {len(pred)} predicted")
    true_counts: Counter = Counter()
    pred_counts: Counter = Counter()
    hit_counts: Counter = Counter()
    for sent, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sequence {sent}: {len(g)} gold tags but {len(p)} predicted")
        g_ents = set(extract_entities(g))
        p_ents = set(extract_entities(p))
        for kind, _, _ in g_ents:
            true_counts[kind] += 1
        for kind, _, _ in p_ents:
            pred_counts[kind] += 1
        for kind, _, _ in g_ents & p_ents:
            hit_counts[kind] += 1
    types = sorted(set(true_counts) | set(pred_counts))
    per_type = {}
    for kind in types:
        p, r, f = _prf(hit_counts[kind], pred_counts[kind], true_counts[kind])
        per_type[kind] = {"precision": p, "recall": r, "f1": f, "support": true_counts[kind]}
    total_true = sum(true_counts.values())
    mp, mr, mf = _prf(sum(hit_counts.values()), sum(pred_counts.values()), total_true)
    n = len(types) or 1
    macro = {
        key: sum(per_type[k][key] for k in types) / n if types else 0.0 for key in ("precision", "recall", "f1")
    }
    weighted = {
        key: (sum(per_type[k][key] * per_type[k]["support"] for k in types) / total_true) if total_true else 0.0
        for key in ("precision", "recall", "f1")
    }
    return {
        "per_type": per_type,
        "micro": {"precision": mp, "recall": mr, "f1": mf, "support": total_true},
        "macro": {**macro, "support": total_true},
        "weighted": {**weighted, "support": total_true},
    }


def format_entity_report(scores: dict, digits: int = 4) -> str:
    """A seqeval-style table: one row per entity type, then micro/macro/weighted averages."""
    rows = [(name, v) for name, v in scores["per_type"].items()]
    rows_avg = [("micro avg", scores["micro"]), ("macro avg", scores["macro"]), ("weighted avg", scores["weighted"])]
    width = max([len(name) for name, _ in rows + rows_avg] + [12])
    head = f"{'':>{width}}  {'precision':>9}  {'recall':>9}  {'f1-score':>9}  {'support':>9}"
    lines = [head, ""]
    fmt = lambda name, v: (  # noqa: E731
        f"{name:>{width}}  {v['precision']:>9.{digits}f}  {v['recall']:>9.{digits}f}  "
        f"{v['f1']:>9.{digits}f}  {v['support']:>9}"
    )
    lines += [fmt(name, v) for name, v in rows]
    lines.append("")
    lines += [fmt(name, v) for name, v in rows_avg]
    return "\n".join(lines) + "\n"


def token_report(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], digits: int = 4) -> str:
    """The seed's per-tag classification report, done right: over flattened word tags."""
    from sklearn.metrics import classification_report

    flat_gold = [t for seq in gold for t in seq]
    flat_pred = [t for seq in pred for t in seq]
    labels = sorted(set(flat_gold) | set(flat_pred), key=lambda t: (t == "O", split_tag(t)[1], t))
    return classification_report(flat_gold, flat_pred, labels=labels, digits=digits, zero_division=0)


def token_accuracy(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> float:
    total = sum(len(g) for g in gold)
    right = sum(a == b for g, p in zip(gold, pred) for a, b in zip(g, p))
    return right / total if total else 0.0


# ---------------------------------------------------------------------------------------------
# Text classification (scikit-learn's definitions; parity is asserted in the tests)


def _per_class(precision, recall, f1, support, labels: Sequence[str]) -> dict:
    return {
        label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for label, p, r, f, s in zip(labels, precision, recall, f1, support)
    }


def _averages(y_true, y_pred, n_labels: int) -> dict:
    from sklearn.metrics import precision_recall_fscore_support

    out = {}
    for average in ("micro", "macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=list(range(n_labels)), average=average, zero_division=0
        )
        out[average] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    return out


def single_label_scores(gold: Sequence[int], pred: Sequence[int], labels: Sequence[str]) -> dict:
    """Accuracy, micro/macro/weighted P/R/F1, per-class P/R/F1/support and the confusion matrix.

    Class indices refer to ``labels``; every label gets a row even when absent from this set
    (its support is 0), so reports and matrices line up across runs.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    index = list(range(len(labels)))
    p, r, f, s = precision_recall_fscore_support(gold, pred, labels=index, average=None, zero_division=0)
    return {
        "accuracy": float(accuracy_score(gold, pred)),
        **_averages(gold, pred, len(labels)),
        "per_class": _per_class(p, r, f, s, labels),
        "confusion_matrix": confusion_matrix(gold, pred, labels=index).tolist(),
        "labels": list(labels),
    }


def multi_label_scores(gold, pred, labels: Sequence[str]) -> dict:
    """For (texts x labels) 0/1 matrices: micro/macro/weighted P/R/F1, subset accuracy, Hamming loss,
    per-label P/R/F1/support and a 2x2 confusion matrix per label ([[tn, fp], [fn, tp]])."""
    import numpy as np
    from sklearn.metrics import accuracy_score, hamming_loss, multilabel_confusion_matrix, precision_recall_fscore_support

    gold, pred = np.asarray(gold, dtype=int), np.asarray(pred, dtype=int)
    p, r, f, s = precision_recall_fscore_support(gold, pred, average=None, zero_division=0)
    return {
        "subset_accuracy": float(accuracy_score(gold, pred)),
        "hamming_loss": float(hamming_loss(gold, pred)),
        **_averages(gold, pred, len(labels)),
        "per_class": _per_class(p, r, f, s, labels),
        "confusion_matrix": {
            label: m.tolist() for label, m in zip(labels, multilabel_confusion_matrix(gold, pred))
        },
        "labels": list(labels),
    }


def format_classification_report(scores: dict, digits: int = 4) -> str:
    """The familiar table: one row per class, then the averages (same layout as the entity report)."""
    support = sum(v["support"] for v in scores["per_class"].values())
    as_rows = {"per_type": scores["per_class"]}
    for average in ("micro", "macro", "weighted"):
        as_rows[average] = dict(scores[average], support=support)
    text = format_entity_report(as_rows, digits)
    if "accuracy" in scores:
        text += f"\naccuracy {scores['accuracy']:.{digits}f}\n"
    else:
        text += f"\nsubset accuracy {scores['subset_accuracy']:.{digits}f} · Hamming loss {scores['hamming_loss']:.{digits}f}\n"
    return text
