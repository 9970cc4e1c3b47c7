"""Text classification: labels, class weights, inference over long texts, thresholds, metrics; the
task (:class:`TextClassification`) and its predictor (:class:`TextClassifier`).

Single-label tasks use softmax and cross-entropy (optionally class-weighted); multi-label tasks use
a sigmoid per label, binary cross-entropy, and a decision threshold per label tuned on dev and saved
with the model. Best-checkpoint selection (the task's ``f1``) is macro-F1 for single-label tasks,
so every class counts whatever its size, and micro-F1 for multi-label tasks, where rare labels with
a handful of dev examples would make macro-F1 jumpy.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import ClassVar, Literal, Optional, Sequence, Union

import numpy as np
import torch
from pydantic import Field, model_validator

from ..config import DataConfig, EncodingConfig, TaskOptions
from ..data.encode import INFERENCE_PAD_MULTIPLE, SequenceCollator, encode_texts, sorted_batches
from ..data.interchange import Annotation, annotation_from_text
from ..data.readers import (
    TextExample,
    check_known_labels,
    check_trainable_labels,
    detect_text_format,
    read_text_file,
    write_text_file,
)
from ..distributed import map_in_order
from ..errors import ConfigError, InputError, TuneforgeError
from ..evaluation.metrics import format_classification_report, multi_label_scores, single_label_scores
from ..models import load_sequence_classifier
from ..paths import atomic_write_text
from .base import Predictor, Task, TaskData, Units
from ..training.loop import autocast_context

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


def weighted_cross_entropy(model, batch: dict, weights: torch.Tensor):
    """``(loss, outputs)``: cross-entropy with a weight per class (the task's loss when weights are set)."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    outputs = model(**inputs)
    loss = torch.nn.functional.cross_entropy(outputs.logits.float(), batch["labels"], weight=weights.to(outputs.logits.device))
    return loss, outputs


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
def per_text_outputs(
    model, forward, tokenizer, examples: Sequence[TextExample], meta: dict, width: int, batch_size: int = 64,
    precision: str = "fp32", pad_multiple: int | None = None,
) -> np.ndarray:
    """(texts x ``width``) outputs of ``forward(model, batch)`` (logits, embeddings...), encoded as the
    model was trained (``meta``: max_length, long_text, stride...); a text read in several windows gets
    its windows' outputs pooled (``meta["window_pooling"]``: mean or max). ``pad_multiple``: batch by
    padded length (``INFERENCE_PAD_MULTIPLE``: results independent of the other texts)."""
    inputs, _ = encode_texts(
        examples, tokenizer, None, meta["max_length"], meta["long_text"], meta["stride"], meta["head_fraction"]
    )
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    per_input = np.zeros((len(inputs), width), dtype=np.float32)
    collate = SequenceCollator(tokenizer.pad_token_id, model_inputs_take_token_types(tokenizer),
                               pad_to_multiple_of=pad_multiple)
    for batch_idx in sorted_batches([len(x.input_ids) for x in inputs], batch_size, pad_multiple):
        batch = collate([inputs[i] for i in batch_idx])
        batch.pop("n_tokens")
        with autocast_context(device, precision):
            outputs = forward(model, {k: v.to(device) for k, v in batch.items()})
        per_input[batch_idx] = outputs.float().cpu().numpy()
    model.train(was_training)
    out = np.zeros((len(examples), width), dtype=np.float32)
    owner = np.array([x.example for x in inputs], dtype=np.int64)
    pool = np.maximum.reduceat if meta.get("window_pooling") == "max" else np.add.reduceat
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]]) if len(owner) else np.array([], dtype=np.int64)
    if len(owner):
        pooled = pool(per_input, starts, axis=0)
        if meta.get("window_pooling") != "max":
            pooled /= np.diff(np.r_[starts, len(owner)])[:, None]
        out[owner[starts]] = pooled
    return out


def stack_rows(rows: Sequence[np.ndarray], n_labels: int) -> np.ndarray:
    """Per-text rows (as gathered from several processes) back into one (texts x labels) array."""
    return np.stack(rows).astype(np.float32, copy=False) if len(rows) else np.zeros((0, n_labels), np.float32)


def text_logits(
    model, tokenizer, examples: Sequence[TextExample], meta: dict, batch_size: int = 64, precision: str = "fp32",
    pad_multiple: int | None = None,
) -> np.ndarray:
    """(texts x labels) logits of a sequence classifier; a text read in several windows gets its windows' logits pooled."""
    return per_text_outputs(model, lambda m, batch: m(**batch).logits, tokenizer, examples, meta,
                            model.config.num_labels, batch_size, precision, pad_multiple)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of the token vectors under the attention mask: how sentence-transformers models
    (all-MiniLM-L6-v2 among them) are trained to embed a text."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def sentence_embeddings(encoder, tokenizer, examples: Sequence[TextExample], meta: dict, batch_size: int = 64,
                        precision: str = "fp32", pad_multiple: int | None = None) -> np.ndarray:
    """L2-normalised mean-pooled embeddings of ``encoder`` (an ``AutoModel``), one row per text."""
    def forward(model, batch):
        return torch.nn.functional.normalize(mean_pool(model(**batch).last_hidden_state, batch["attention_mask"]), dim=-1)

    out = per_text_outputs(encoder, forward, tokenizer, examples, meta, encoder.config.hidden_size, batch_size, precision,
                           pad_multiple)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)  # pooled windows: unit length again


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


# ---------------------------------------------------------------------------------------------
# The loaded model


class TextClassifier(Predictor):
    """A trained text classifier loaded from a run folder (or its ``model/`` folder)."""

    output_formats = ("jsonl", "labelstudio")

    def __init__(self, model, tokenizer, meta: dict, precision: str = "fp32"):
        super().__init__(model, tokenizer, meta, precision)
        self.multi_label: bool = meta["multi_label"]

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

    def read_inputs(self, path, format: str = "auto", text_column=None, text_pair_column=None) -> list[TextExample]:
        """CSV/TSV/JSONL by the trained columns, or raw text (``.txt``: one text a line)."""
        fmt = detect_text_format(path) if format == "auto" else format
        if fmt == "conll":
            raise TuneforgeError(f"--format {fmt}: a text classifier reads csv, tsv, jsonl or text")
        return self.read(path, fmt, labelled=False, text_column=text_column, text_pair_column=text_pair_column)

    def headline(self, metrics: dict) -> str:
        if "accuracy" in metrics:
            return f"macro F1 {metrics['f1']:.4f} · accuracy {metrics['accuracy']:.4f} on {metrics['texts']} texts"
        return (f"micro F1 {metrics['f1']:.4f} · subset accuracy {metrics['subset_accuracy']:.4f} "
                f"on {metrics['texts']} texts")

    def predict_proba(self, examples: Sequence[TextExample], batch_size: int = 64,
                      pad_multiple: int | None = None) -> np.ndarray:
        logits = text_logits(self.model, self.tokenizer, examples, self.meta, batch_size, self.precision, pad_multiple)
        return probabilities_from_logits(logits, self.multi_label)

    def units(self, examples: Sequence[TextExample], batch_size: int = 64) -> list[Units]:
        """Single-label: one unit, the class probabilities. Multi-label: one unit per label, (absent, present)."""
        probabilities = self.predict_proba(examples, batch_size) if examples else np.zeros((0, len(self.labels)))
        out = []
        for ex, probs in zip(examples, probabilities):
            given = set(ex.labels) if ex.labels is not None else None
            if self.multi_label:
                table = np.stack([1.0 - probs, probs], axis=1)
                gold = [int(label in given) for label in self.labels] if given is not None else None
                out.append(Units(names=list(self.labels), classes=["absent", "present"], probabilities=table, gold=gold))
            else:
                gold = [self.labels.index(ex.labels[0]) if ex.labels[0] in self.labels else -1] if given else None
                out.append(Units(names=["label"], classes=self.labels, probabilities=probs[None, :], gold=gold))
        return out

    def annotation(self, example: TextExample, result: dict) -> Annotation:
        """A prediction as chosen labels; the score is the chosen label's probability (the lowest chosen
        one for multi-label, 1 - the highest for a text with none chosen)."""
        chosen = result["labels"] if self.multi_label else [result["label"]]
        probs = result["probabilities"]
        if chosen:
            score = min(probs[label] for label in chosen)
        else:
            score = 1.0 - max(probs.values()) if probs else None
        return Annotation(text=example.text, text_pair=example.text_pair, choices=chosen,
                          score=None if score is None else round(float(score), 4))

    def predict_outputs(self, examples: Sequence[TextExample], batch_size: int = 64) -> list[np.ndarray]:
        """One row of label probabilities per text."""
        return list(self.predict_proba(examples, batch_size))

    def score_outputs(self, examples: Sequence[TextExample], outputs: list) -> tuple[dict, str, np.ndarray]:
        probabilities = stack_rows(outputs, len(self.labels))
        metrics = score(examples, probabilities, self.meta)
        return metrics, format_report(metrics, self.multi_label), probabilities

    def evaluate_on(self, examples: Sequence[TextExample], labels: Sequence[str], batch_size: int = 64) -> dict:
        """Scores over ``labels`` alone (a continual stage's classes): single-label, accuracy and
        macro-F1 over those classes with the prediction taken over every class the model knows (a text
        of class A called C is wrong); multi-label, micro/macro F1 over those labels' columns."""
        from sklearn.metrics import f1_score

        probabilities = self.predict_proba(examples, batch_size)
        if self.multi_label:
            decided = decide(probabilities, True, self.meta.get("thresholds"))
            column = {label: i for i, label in enumerate(self.labels)}
            pred = np.stack([decided[:, column[label]] if label in column else np.zeros(len(examples), dtype=int)
                             for label in labels], axis=1)
            gold = multi_hot(examples, labels)
            micro = f1_score(gold, pred, average="micro", zero_division=0)
            return {"f1": float(micro), "micro_f1": float(micro),
                    "macro_f1": float(f1_score(gold, pred, average="macro", zero_division=0)), "texts": len(examples)}
        names = list(self.labels) + [label for label in labels if label not in self.labels]
        index = {label: i for i, label in enumerate(names)}
        gold = [index[ex.labels[0]] for ex in examples]
        pred = probabilities.argmax(axis=-1).tolist()
        macro = f1_score(gold, pred, labels=[index[label] for label in labels], average="macro", zero_division=0)
        accuracy = float(np.mean(np.asarray(gold) == np.asarray(pred))) if gold else 0.0
        return {"f1": float(macro), "macro_f1": float(macro), "accuracy": accuracy, "texts": len(examples)}

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
            probabilities[present] = self.predict_proba([examples[i] for i in present], batch_size,
                                                        INFERENCE_PAD_MULTIPLE)
        return self.describe(examples, probabilities)

    def inputs_from_request(self, texts: list | None = None, tokens: list | None = None) -> list:
        """``texts``: strings, or ``[text, pair]`` for a model trained on text pairs."""
        if tokens is not None:
            return super().inputs_from_request(texts, tokens)
        pairs = self.meta.get("text_pair_column") is not None
        inputs = []
        for i, item in enumerate(texts or []):
            if pairs and isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item):
                inputs.append(TextExample(text=item[0], text_pair=item[1]))
            elif not pairs and isinstance(item, str):
                inputs.append(TextExample(text=item))
            else:
                want = "a [text, pair] list of two strings (this model reads text pairs)" if pairs else "a string"
                raise InputError(f"'texts[{i}]': expected {want}")
        return inputs

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
    lines = [
        json.dumps(dict(pred, gold=ex.labels if "labels" in pred else ex.labels[0]), ensure_ascii=False)
        for ex, pred in zip(examples, predictions)
    ]
    atomic_write_text(path, "\n".join(lines) + "\n")


_WHITESPACE = re.compile(r"(\s+)")


def _words(text: str) -> list[str]:
    return [part for part in _WHITESPACE.split(text)[::2] if part]


def _rejoin(text: str, words: list[str]) -> str:
    """``text`` with its words replaced in order by ``words``, every run of whitespace kept as it was."""
    parts = _WHITESPACE.split(text)
    slots = [i for i in range(0, len(parts), 2) if parts[i]]
    if len(slots) != len(words):
        raise ValueError(f"{len(words)} words for a text of {len(slots)}")
    for i, word in zip(slots, words):
        parts[i] = word
    return "".join(parts)


# ---------------------------------------------------------------------------------------------
# The task


class TextClassificationOptions(TaskOptions):
    type: str = "text_classification"
    multi_label: bool = Field(default=False, description="sigmoid + BCE, any number of labels per text")
    class_weights: Optional[Union[Literal["balanced"], dict[str, float]]] = Field(
        default=None, description="single-label loss weights: 'balanced' (n / (k * count)) or {label: weight}"
    )
    long_text: Literal["head", "tail", "head_tail", "windows"] = Field(
        default="windows",
        description="texts longer than max_length: keep the head, the tail, both, or read every window and pool",
    )
    head_fraction: float = Field(default=0.25, ge=0, le=1, description="head_tail: share of tokens kept from the head")
    window_pooling: Literal["mean", "max"] = Field(default="mean", description="windows: how window logits combine")
    tune_thresholds: bool = Field(default=True, description="multi-label: tune a threshold per label on dev")

    @model_validator(mode="after")
    def _check_weights(self) -> "TextClassificationOptions":
        if self.multi_label and self.class_weights is not None:
            raise ValueError("'task.class_weights' is for single-label tasks; remove it or set task.multi_label: false")
        if isinstance(self.class_weights, dict) and any(w <= 0 for w in self.class_weights.values()):
            raise ValueError("'task.class_weights' must be positive")
        return self


class TextClassificationData(DataConfig):
    FORMATS: ClassVar[tuple[str, ...]] = ("auto", "jsonl", "csv", "tsv", "labelstudio", "doccano", "parquet", "arrow", "hf")
    text_column: str = "text"
    text_pair_column: Optional[str] = Field(default=None, description="second text of a pair (NLI, QA matching)")
    label_column: str = "label"
    label_separator: str = Field(
        default="|", min_length=1, description="multi-label CSV/TSV: separator between labels in one cell"
    )
    label_descriptions: Optional[dict[str, Union[str, list[str]]]] = Field(
        default=None, description="what each label means, in words (zero-shot scores texts against them); "
                                  "kept in the model's tuneforge.json")


class TextClassification(Task):
    """Sentiment, topic, intent, spam...: one label (softmax) or any set of labels (sigmoid) per text."""

    name = "text_classification"
    Options = TextClassificationOptions
    Data = TextClassificationData
    Encoding = EncodingConfig
    Predictor = TextClassifier
    metric_for_best = "f1"
    # few-shot approaches `tuneforge curve` / `compare` can run by name (see Task.APPROACHES)
    APPROACHES = {
        "setfit": {"task.type": "setfit", "training.learning_rate": None, "training.epochs": None,
                   "training.batch_size": None, "training.min_steps": None},
        "zero_shot": {"task.type": "zero_shot_classification", "task.class_weights": None, "data.k_shot": None,
                      "training.epochs": None, "training.min_steps": None},
    }

    def read(self, path: str, labelled: bool = True) -> list[TextExample]:
        d, t = self.cfg.data, self.cfg.task
        return read_text_file(path, d.format, d.text_column, d.label_column if labelled else None,
                              d.text_pair_column, t.multi_label, d.label_separator)

    def label_list(self, train: Sequence[TextExample]) -> list[str]:
        return label_list(train)

    @classmethod
    def sniff(cls, path: str, records: list[dict]) -> bool:
        """CSV/TSV tables; JSON records with a text and a label (a string or number, or a non-empty list
        of strings: an empty list is no evidence, a span list's sentence may have no entity); Label
        Studio choices."""
        if not records:
            return Path(path).suffix.lower() in (".csv", ".tsv")
        for record in records:
            results = [r for a in record.get("annotations") or [] for r in a.get("result") or []]
            if any(isinstance(r, dict) and r.get("type") == "choices" for r in results):
                return True
            label = record.get("label", record.get("labels"))
            if "text" in record and (isinstance(label, str) or (isinstance(label, int) and not isinstance(label, bool))
                                     or (isinstance(label, list) and label and all(isinstance(x, str) for x in label))):
                return True
        return False

    def label_counts(self, examples: Sequence[TextExample]) -> dict[str, int]:
        """Texts per label (a multi-label text counts once for each of its labels)."""
        from collections import Counter

        return dict(Counter(label for ex in examples for label in ex.labels or []).most_common())

    def label_signature(self, example: TextExample) -> tuple:
        return tuple(sorted(example.labels or ()))

    def check_token_ids(self, tokenizer, examples: Sequence[TextExample]) -> list[list[int]]:
        if not examples:
            return []
        pairs = [ex.text_pair for ex in examples] if examples[0].text_pair is not None else None
        enc = tokenizer([ex.text for ex in examples], pairs, add_special_tokens=True, truncation=False)
        return [list(ids) for ids in enc["input_ids"]]

    def long_input_handling(self) -> str:
        mode = self.cfg.task.long_text
        if mode == "windows":
            return f"split into overlapping windows (task.long_text: windows, {self.cfg.task.window_pooling} pooling)"
        return f"cut to max_length, the rest never read (task.long_text: {mode})"

    def to_annotation(self, example: TextExample) -> Annotation:
        return annotation_from_text(example)

    def write_labelled(self, examples: Sequence[TextExample], path) -> dict:
        """JSONL under this config's keys: the label a string, or a list for multi-label."""
        d, multi = self.cfg.data, self.cfg.task.multi_label
        rows = []
        for ex in examples:
            row = {d.text_column: ex.text}
            if d.text_pair_column:
                row[d.text_pair_column] = ex.text_pair
            row[d.label_column] = list(ex.labels or []) if multi else ex.labels[0]
            rows.append(json.dumps(row, ensure_ascii=False) + "\n")
        atomic_write_text(path, "".join(rows))
        return {"format": "jsonl"}

    def check_labels(self, splits: dict[str, list], labels: list[str], report: dict) -> None:
        if "labels_not_annotated" not in report:  # a continued run's earlier classes count: one new class is enough
            check_trainable_labels(splits["train"], self.cfg.task.multi_label)
        for name in ("dev", "test"):
            check_known_labels(splits[name], labels)

    def sample_k_shot(self, train, labels, k, seed):
        """Exactly ``k`` texts per class; multi-label sets use the greedy sampler (a text carries several labels)."""
        from ..data.sampling import greedy_sample, sample_per_class

        if self.cfg.task.multi_label:
            return greedy_sample(train, lambda ex: ex.labels or [], k, seed)
        return sample_per_class(train, lambda ex: ex.labels[0], k, seed)

    def describe(self, splits: dict[str, list], labels: list[str]) -> dict:
        return {
            "texts": {name: len(ex) for name, ex in splits.items()},
            "label_counts": {name: {label: sum(label in (e.labels or []) for e in ex) for label in labels}
                             for name, ex in splits.items()},
        }

    def prepare_data(self, known_labels: Sequence[str] | None = None) -> TaskData:
        data = super().prepare_data(known_labels)
        weights = class_weight_vector(self.cfg.task.class_weights, data.splits["train"], data.labels)
        self.class_weights = None if weights is None else torch.tensor(weights, dtype=torch.float)
        if weights is not None:
            data.report["class_weights"] = dict(zip(data.labels, weights))
        return data

    def data_summary(self, data: TaskData) -> str:
        return f"{data.report['texts']} texts, {len(data.labels)} labels"

    @classmethod
    def load_pretrained(cls, name_or_path, labels=None, meta=None, revision=None, trust_remote_code=False,
                        announce_new_head=True):
        multi_label = bool((meta or {}).get("multi_label"))
        return load_sequence_classifier(name_or_path, labels, multi_label, revision, trust_remote_code,
                                        announce_new_head)

    def build_model(self, labels: list[str]):
        m = self.cfg.model
        return self.load_pretrained(m.name_or_path, labels, {"multi_label": self.cfg.task.multi_label},
                                    m.revision, m.trust_remote_code)

    def encode(self, tokenizer, examples, labels):
        t, e = self.cfg.task, self.cfg.encoding
        inputs, stats = encode_texts(examples, tokenizer, {label: i for i, label in enumerate(labels)}, e.max_length,
                                     t.long_text, e.stride, t.head_fraction, t.multi_label)
        return inputs, [len(x.input_ids) for x in inputs], stats

    def collator(self, tokenizer):
        return SequenceCollator(tokenizer.pad_token_id, model_inputs_take_token_types(tokenizer),
                                self.cfg.task.multi_label)

    def loss(self, model, batch: dict):
        if getattr(self, "class_weights", None) is None:
            return super().loss(model, batch)
        return weighted_cross_entropy(model, batch, self.class_weights)

    def loss_units(self, batch: dict):
        """With class weights, cross-entropy's mean divides by the batch's summed weights, not its size."""
        if getattr(self, "class_weights", None) is None:
            return super().loss_units(batch)
        return self.class_weights.to(batch["labels"].device)[batch["labels"]].sum()

    def model_meta(self, labels: list[str]) -> dict:
        t, d, e = self.cfg.task, self.cfg.data, self.cfg.encoding
        return {
            "labels": list(labels), "multi_label": t.multi_label,
            "thresholds": [0.5] * len(labels) if t.multi_label else None,
            "max_length": e.max_length, "stride": e.stride, "long_text": t.long_text,
            "head_fraction": t.head_fraction, "window_pooling": t.window_pooling,
            "text_column": d.text_column, "text_pair_column": d.text_pair_column, "label_column": d.label_column,
            "label_separator": d.label_separator, "label_descriptions": d.label_descriptions,
        }

    def evaluate_dev(self, model, tokenizer, examples, meta: dict, precision: str) -> dict:
        """Dev scores; a multi-label model first gets its thresholds tuned on these texts (saved with it,
        since the best checkpoint is saved right after, for the same weights)."""
        predictor = self.predictor(model, tokenizer, meta, precision)
        rows = map_in_order(lambda share: predictor.predict_outputs(share, self.cfg.training.eval_batch_size), examples)
        probabilities = stack_rows(rows, len(meta["labels"]))
        if self.cfg.task.multi_label and self.cfg.task.tune_thresholds:
            meta["thresholds"] = tune_thresholds(probabilities, multi_hot(examples, meta["labels"]))
        return score(examples, probabilities, meta)

    def final_metrics(self, predictor: Predictor) -> dict:
        multi = self.cfg.task.multi_label
        return {"thresholds": dict(zip(predictor.labels, predictor.meta["thresholds"])) if multi else None}

    def distillation_loss(self, batch: dict, student_logits, teacher_logits, temperature: float = 1.0):
        """Multi-label: the Bernoulli KL(teacher || student) per old label, summed over labels and
        averaged over texts; single-label: the base class's softmax KL."""
        if not self.cfg.task.multi_label:
            return super().distillation_loss(batch, student_logits, teacher_logits, temperature)
        import torch.nn.functional as F

        n_old = teacher_logits.shape[-1]
        student = student_logits[..., :n_old].float() / temperature
        teacher = teacher_logits.float() / temperature
        target = torch.sigmoid(teacher)
        kl = (F.binary_cross_entropy_with_logits(student, target, reduction="none")
              - F.binary_cross_entropy_with_logits(teacher, target, reduction="none"))
        return kl.sum(-1).mean() * temperature ** 2

    def restrict_examples(self, examples: Sequence[TextExample], labels: Sequence[str]) -> list[TextExample]:
        """The texts with a label among ``labels`` (multi-label: those labels kept, texts left with none dropped)."""
        from dataclasses import replace

        keep = set(labels)
        out = []
        for ex in examples:
            kept = [label for label in ex.labels or [] if label in keep]
            if kept and (self.cfg.task.multi_label or len(kept) == len(ex.labels)):
                out.append(replace(ex, labels=kept))
        return out

    def write_examples(self, examples: Sequence[TextExample], folder: Path, name: str) -> Path:
        """JSONL under the run's column names (``data.text_column``, ``label_column``...)."""
        d = self.cfg.data
        lines = []
        for ex in examples:
            row = {d.text_column: ex.text}
            if ex.text_pair is not None and d.text_pair_column:
                row[d.text_pair_column] = ex.text_pair
            row[d.label_column] = ex.labels if self.cfg.task.multi_label else ex.labels[0]
            lines.append(json.dumps(row, ensure_ascii=False))
        path = Path(folder) / f"{name}.jsonl"
        atomic_write_text(path, "\n".join(lines) + "\n")
        return path

    def write_outputs(self, run_dir, split, examples, predictions, metrics, predictor) -> None:
        from ..evaluation.plots import save_confusion_matrix_png

        run_dir = Path(run_dir)
        if not self.cfg.task.multi_label:
            save_confusion_matrix_png(
                metrics["scores"]["confusion_matrix"], predictor.labels, run_dir / f"confusion_{split}.png",
                title=f"{split}: rows gold, columns predicted",
            )
        if split == "test":
            write_predictions_jsonl(run_dir / "test_predictions.jsonl", examples, predictor.describe(examples, predictions))

    def prediction_divergence(self, batch, logits_a, logits_b):
        """Symmetric KL between the two predictions: over classes (softmax), or per label (sigmoid) for multi-label."""
        from ..training.adversarial import bernoulli_symmetric_kl, symmetric_kl

        divergence = bernoulli_symmetric_kl if self.cfg.task.multi_label else symmetric_kl
        return divergence(logits_a, logits_b).mean()

    @classmethod
    def example_words(cls, example: TextExample) -> list[str]:
        """The whitespace-separated words of the text, then of the pair."""
        return _words(example.text) + (_words(example.text_pair) if example.text_pair is not None else [])

    @classmethod
    def with_words(cls, example: TextExample, words: list[str]) -> TextExample:
        """The same whitespace between the words, so the text keeps its layout (and its word count)."""
        n_text = len(_words(example.text))
        text = _rejoin(example.text, words[:n_text])
        pair = _rejoin(example.text_pair, words[n_text:]) if example.text_pair is not None else None
        return dataclasses.replace(example, text=text, text_pair=pair)

    @classmethod
    def read_file(cls, path, format: str = "auto", text_column: str = "text", label_column: str = "label",
                  text_pair_column: str | None = None, multi_label: bool = False,
                  label_separator: str = "|") -> list[TextExample]:
        return read_text_file(path, format, text_column, label_column, text_pair_column, multi_label, label_separator)

    @classmethod
    def write_file(cls, examples, path, format: str = "auto", text_column: str = "text", label_column: str = "label",
                   text_pair_column: str | None = None, multi_label: bool = False, label_separator: str = "|") -> None:
        write_text_file(examples, path, format, text_column, label_column, text_pair_column, multi_label,
                        label_separator)

    @classmethod
    def summary(cls, metrics: dict) -> str:
        text = super().summary(metrics)
        if metrics.get("metric_for_best", "f1") != "f1" or text.startswith("no "):
            return text
        return ("micro F1" if metrics.get("thresholds") is not None else "macro F1") + text[len(cls.score_name):]
