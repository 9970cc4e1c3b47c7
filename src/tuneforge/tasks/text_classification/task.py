"""The text classification task (:class:`TextClassification`): reading and checking labelled texts,
class weights, encoding, the loss, dev thresholds, continual stages, and what a run writes."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Sequence

import torch

from ...artifacts.paths import atomic_write_text
from ...data.encode import SequenceCollator, encode_texts
from ...data.interchange import Annotation, annotation_from_text
from ...data.readers import (
    TextExample,
    check_known_labels,
    check_trainable_labels,
    read_text_file,
    write_text_file,
)
from ...errors import ConfigError
from ...runtime.distributed import map_in_order
from ...runtime.models import load_sequence_classifier
from ...schema import EncodingConfig
from ..base import Task, TaskData
from ..capabilities import (
    Consistency,
    ContinualStages,
    DataChecks,
    Interchange,
    KShotSampling,
    Perturbable,
)
from ..predictor import Predictor
from .config import TextClassificationData, TextClassificationOptions
from .inference import model_inputs_take_token_types, stack_rows
from .predictor import TextClassifier, write_predictions_jsonl
from .scoring import multi_hot, score, tune_thresholds
from ...data.sampling import greedy_sample, sample_per_class
from ...evaluation.plots import save_confusion_matrix_png
from ...training.adversarial import bernoulli_symmetric_kl, symmetric_kl


def label_list(examples: Sequence[TextExample]) -> list[str]:
    labels = sorted({label for ex in examples for label in (ex.labels or [])})
    return labels


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


class TextClassification(Task, DataChecks, Interchange, ContinualStages, KShotSampling, Perturbable, Consistency):
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
        # a decoder LLM's demonstrations (tasks/in_context.py); model.name_or_path must name a causal LM
        "in_context": {"task.type": "in_context_classification", "task.class_weights": None, "data.k_shot": None,
                       "training.epochs": None, "training.min_steps": None},
        # a decoder LLM trained with sft to answer the label (tasks/generative_sft.py); a decoder model too
        "generative": {"task.type": "generative_classification", **dict.fromkeys(
            ("task.multi_label", "task.class_weights", "task.long_text", "task.head_fraction", "task.window_pooling",
             "task.tune_thresholds", "encoding.stride"))},
    }

    def read(self, path: str, labelled: bool = True) -> list[TextExample]:
        d, t = self.cfg.data, self.cfg.task
        return read_text_file(path, d.format, d.text_column, d.label_column if labelled else None,
                              d.text_pair_column, t.multi_label, d.label_separator, d.allow_empty_labels)

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
            "allow_empty_labels": d.allow_empty_labels,
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
