"""Text classification: labels, class weights, inference over long texts, thresholds, metrics.

Single-label tasks use softmax and cross-entropy (optionally class-weighted); multi-label tasks use
a sigmoid per label, binary cross-entropy, and a decision threshold per label tuned on dev and saved
with the model. Best-checkpoint selection (the loop's ``f1``) is macro-F1 for single-label tasks,
so every class counts whatever its size, and micro-F1 for multi-label tasks, where rare labels with
a handful of dev examples would make macro-F1 jumpy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..data.encode import SequenceCollator, encode_texts, sorted_batches
from ..data.readers import TextExample, check_known_labels, read_text_file
from ..errors import ConfigError
from ..evaluation.metrics import format_classification_report, multi_label_scores, single_label_scores
from .token_classification import autocast_context

THRESHOLD_GRID = np.round(np.arange(0.05, 0.96, 0.05), 2)  # includes 0.5


def label_list(examples: Sequence[TextExample]) -> list[str]:
    labels = sorted({label for ex in examples for label in (ex.labels or [])})
    return labels


def multi_hot(examples: Sequence[TextExample], labels: Sequence[str]) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    out = np.zeros((len(examples), len(labels)), dtype=int)
    for row, ex in enumerate(examples):
        for label in ex.labels or []:
            out[row, index[label]] = 1
    return out


# ---------------------------------------------------------------------------------------------
# Training


def class_weight_vector(setting, examples: Sequence[TextExample], labels: Sequence[str]) -> list[float] | None:
    """``balanced``: n / (k * count), as scikit-learn's compute_class_weight; or a {label: weight} map
    (labels not named weigh 1)."""
    if setting is None:
        return None
    if setting == "balanced":
        counts = {label: 0 for label in labels}
        for ex in examples:
            counts[ex.labels[0]] += 1
        n, k = sum(counts.values()), len(labels)
        return [n / (k * counts[label]) if counts[label] else 1.0 for label in labels]
    unknown = sorted(set(setting) - set(labels))
    if unknown:
        raise ConfigError(
            f"task.class_weights: label {unknown[0]!r} is not in the training data (labels: {', '.join(labels)})"
        )
    return [float(setting.get(label, 1.0)) for label in labels]


def weighted_cross_entropy(weights: Sequence[float]):
    """The loop's ``compute_loss`` hook: cross-entropy with a weight per class."""
    weight = torch.tensor(list(weights), dtype=torch.float)

    def compute_loss(model, batch: dict) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**inputs).logits
        return torch.nn.functional.cross_entropy(logits.float(), batch["labels"], weight=weight.to(logits.device))

    return compute_loss


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


# ---------------------------------------------------------------------------------------------
# Inference


def model_inputs_take_token_types(tokenizer) -> bool:
    return "token_type_ids" in getattr(tokenizer, "model_input_names", [])


@torch.inference_mode()
def text_logits(
    model, tokenizer, examples: Sequence[TextExample], meta: dict, batch_size: int = 64, precision: str = "fp32"
) -> np.ndarray:
    """(texts x labels) logits; a text read in several windows gets its windows' logits pooled."""
    inputs, _ = encode_texts(
        examples, tokenizer, None, meta["max_length"], meta["long_text"], meta["stride"], meta["head_fraction"]
    )
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    n_labels = model.config.num_labels
    per_input = np.zeros((len(inputs), n_labels), dtype=np.float32)
    collate = SequenceCollator(tokenizer.pad_token_id, model_inputs_take_token_types(tokenizer))
    for batch_idx in sorted_batches([len(x.input_ids) for x in inputs], batch_size):
        batch = collate([inputs[i] for i in batch_idx])
        batch.pop("n_tokens")
        with autocast_context(device, precision):
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
        per_input[batch_idx] = logits.float().cpu().numpy()
    model.train(was_training)
    out = np.zeros((len(examples), n_labels), dtype=np.float32)
    owner = np.array([x.example for x in inputs], dtype=np.int64)
    pool = np.maximum.reduceat if meta.get("window_pooling") == "max" else np.add.reduceat
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]]) if len(owner) else np.array([], dtype=np.int64)
    if len(owner):
        pooled = pool(per_input, starts, axis=0)
        if meta.get("window_pooling") != "max":
            pooled /= np.diff(np.r_[starts, len(owner)])[:, None]
        out[owner[starts]] = pooled
    return out


def probabilities_from_logits(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    t = torch.from_numpy(logits)
    return (torch.sigmoid(t) if multi_label else torch.softmax(t, dim=-1)).numpy()


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


def model_meta(cfg, labels: Sequence[str]) -> dict:
    """What ``tuneforge.json`` keeps for a text classifier: enough to predict and evaluate as trained."""
    t, d, e = cfg.task, cfg.data, cfg.encoding
    return {
        "task": t.type, "labels": list(labels), "multi_label": t.multi_label,
        "thresholds": [0.5] * len(labels) if t.multi_label else None,
        "max_length": e.max_length, "stride": e.stride, "long_text": t.long_text,
        "head_fraction": t.head_fraction, "window_pooling": t.window_pooling,
        "text_column": d.text_column, "text_pair_column": d.text_pair_column, "label_column": d.label_column,
        "label_separator": d.label_separator,
    }


# ---------------------------------------------------------------------------------------------
# The loaded model


class TextClassifier:
    """A trained text classifier loaded from a run folder (or its ``model/`` folder)."""

    def __init__(self, model, tokenizer, meta: dict, precision: str = "fp32"):
        from ..training.loop import resolve_precision

        self.model = model
        self.tokenizer = tokenizer
        self.meta = meta
        self.labels: list[str] = meta["labels"]
        self.multi_label: bool = meta["multi_label"]
        self.precision = resolve_precision(precision, next(model.parameters()).device)

    def read(self, path, format: str = "auto", labelled: bool = True, text_column=None, text_pair_column=None,
             label_column=None) -> list[TextExample]:
        """Read a file with the column names this model was trained with (unless given)."""
        m = self.meta
        examples = read_text_file(
            path, format, text_column or m["text_column"],
            (label_column or m["label_column"]) if labelled else None,
            text_pair_column or m.get("text_pair_column"), self.multi_label, m.get("label_separator", "|"),
        )
        if labelled:
            check_known_labels(examples, self.labels)
        return examples

    def predict_proba(self, examples: Sequence[TextExample], batch_size: int = 64) -> np.ndarray:
        logits = text_logits(self.model, self.tokenizer, examples, self.meta, batch_size, self.precision)
        return probabilities_from_logits(logits, self.multi_label)

    def evaluate_examples(self, examples: Sequence[TextExample], batch_size: int = 64) -> tuple[dict, str, np.ndarray]:
        probabilities = self.predict_proba(examples, batch_size)
        metrics = score(examples, probabilities, self.meta)
        return metrics, format_report(metrics, self.multi_label), probabilities

    def predict(self, inputs, batch_size: int = 64) -> list[dict]:
        """Label raw texts (``str``, a list of them, ``(text, pair)`` tuples, or TextExamples).

        Single-label: ``{"text", "label", "probability", "probabilities"}``; multi-label:
        ``{"text", "labels", "probabilities"}`` with the labels over their saved thresholds.
        """
        if isinstance(inputs, (str, tuple)):
            inputs = [inputs]
        examples = [
            item if isinstance(item, TextExample)
            else TextExample(text=item[0], text_pair=item[1]) if isinstance(item, tuple)
            else TextExample(text=item)
            for item in inputs
        ]
        # blank lines of a text file stay in the output (so it lines up with the input), unlabelled
        present = [i for i, ex in enumerate(examples) if ex.text.strip()]
        probabilities = np.zeros((len(examples), len(self.labels)), dtype=np.float32)
        if present:
            probabilities[present] = self.predict_proba([examples[i] for i in present], batch_size)
        return self.describe(examples, probabilities)

    def describe(self, examples: Sequence[TextExample], probabilities: np.ndarray) -> list[dict]:
        """Prediction rows for texts whose probabilities are already computed."""
        decisions = decide(probabilities, self.multi_label, self.meta.get("thresholds"))
        results = []
        for ex, probs, decision in zip(examples, probabilities, decisions):
            row: dict = {"text": ex.text}
            if not ex.text.strip():
                results.append(dict(row, **({"labels": []} if self.multi_label else {"label": None}), probabilities={}))
                continue
            if ex.text_pair is not None:
                row["text_pair"] = ex.text_pair
            if self.multi_label:
                row["labels"] = [label for label, on in zip(self.labels, decision) if on]
            else:
                row["label"] = self.labels[int(decision)]
                row["probability"] = round(float(probs[int(decision)]), 4)
            row["probabilities"] = {label: round(float(p), 4) for label, p in zip(self.labels, probs)}
            results.append(row)
        return results


def write_predictions_jsonl(path: Path, examples: Sequence[TextExample], predictions: Sequence[dict]) -> None:
    """Gold next to predicted, one JSON object a line (the run folder's test_predictions.jsonl)."""
    from ..paths import atomic_write_text

    lines = [
        json.dumps(dict(pred, gold=ex.labels if "labels" in pred else ex.labels[0]), ensure_ascii=False)
        for ex, pred in zip(examples, predictions)
    ]
    atomic_write_text(path, "\n".join(lines) + "\n")
