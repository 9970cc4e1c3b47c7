"""Text classification's predictor (:class:`TextClassifier`): a trained model's reading, prediction,
scoring and output rows, and the run folder's prediction file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from ...artifacts.paths import atomic_write_text
from ...data.encode import INFERENCE_PAD_MULTIPLE
from ...data.interchange import Annotation
from ...data.readers import TextExample, check_known_labels, detect_text_format, read_text_file
from ...errors import InputError, TuneforgeError
from ..predictor import Predictor, Units
from .inference import probabilities_from_logits, stack_rows, text_logits
from .scoring import decide, format_report, multi_hot, score


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
            m.get("allow_empty_labels", True),  # runs saved before the option read such texts as having none
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
