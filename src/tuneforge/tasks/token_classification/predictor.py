"""Token classification's predictor (:class:`TokenClassifier`): word-level inference over windows,
entity scores and reports, entity spans, and the run folder's prediction file."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ...artifacts.paths import atomic_write_text
from ...data.encode import INFERENCE_PAD_MULTIPLE, Collator, Window, encode_examples, sorted_batches
from ...data.interchange import Annotation, annotation_from_tokens
from ...data.readers import (
    TokenExample,
    check_known_tags,
    detect_format,
    detect_text_format,
    examples_from_texts,
    normalise_to_iob2,
    read_text_lines,
    read_token_file,
)
from ...errors import InputError, TuneforgeError
from ...evaluation.metrics import (
    entity_scores,
    extract_entities,
    format_entity_report,
    token_accuracy,
    token_report,
)
from ...runtime.precision import autocast_context
from ..predictor import Predictor, Units
from .decoding import WordPredictions, allowed_transitions, decode, entity_types, keep_types


# ---------------------------------------------------------------------------------------------
# Inference


@torch.inference_mode()
def word_logprobs(
    model,
    windows: Sequence[Window],
    n_examples: int,
    n_words: Sequence[int],
    pad_token_id: int,
    batch_size: int = 64,
    precision: str = "fp32",
    pad_multiple: int | None = None,
) -> list[np.ndarray]:
    """Per example, a (words x labels) array of log-probabilities, merged back from its windows.

    Each word is read from the one window that owns it (see :mod:`tuneforge.data.encode`), so
    every word gets exactly one prediction however the input was split. ``pad_multiple``: batch by
    padded length (``INFERENCE_PAD_MULTIPLE``: results independent of the other inputs).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    n_labels = model.config.num_labels
    out = [np.zeros((n, n_labels), dtype=np.float32) for n in n_words]
    collate = Collator(pad_token_id, pad_multiple)
    for batch_idx in sorted_batches([len(w.input_ids) for w in windows], batch_size, pad_multiple):
        members = [windows[i] for i in batch_idx]
        batch = collate(members)
        with autocast_context(device, precision):
            logits = model(
                input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
            ).logits
        logp = torch.log_softmax(logits.float(), dim=-1).cpu().numpy()
        for row, window in enumerate(members):
            target = out[window.example]
            for word, pos in window.owned_positions.items():
                target[word] = logp[row, pos]
    model.train(was_training)
    return out


def predict_examples(
    model,
    tokenizer,
    examples: Sequence[TokenExample],
    labels: Sequence[str],
    max_length: int,
    stride: int,
    batch_size: int = 64,
    decode_mode: str = "viterbi",
    precision: str = "fp32",
    label_position: str = "first",
    pad_multiple: int | None = None,
    unspaced_words: str = "none",
) -> list[WordPredictions]:
    """Word-level tags for every example (empty examples get empty predictions)."""
    logps = example_logprobs(model, tokenizer, examples, max_length, stride, batch_size, precision, label_position,
                             pad_multiple, unspaced_words)
    masks = allowed_transitions(labels)
    return [decode(lp, labels, decode_mode, masks) if len(lp) else WordPredictions([], []) for lp in logps]


def example_logprobs(
    model, tokenizer, examples: Sequence[TokenExample], max_length: int, stride: int, batch_size: int = 64,
    precision: str = "fp32", label_position: str = "first", pad_multiple: int | None = None,
    unspaced_words: str = "none",
) -> list[np.ndarray]:
    """Per example, its (words x labels) log-probabilities; an empty example gets a (0 x labels) array.
    ``pad_multiple``: batch by padded length (see :func:`word_logprobs`); ``unspaced_words``: the
    alignment the run was trained with (:func:`tuneforge.data.encode.encode_examples`)."""
    nonempty = [i for i, ex in enumerate(examples) if ex.words]
    subset = [examples[i] for i in nonempty]
    windows, _ = encode_examples(subset, tokenizer, None, max_length, stride, label_position=label_position,
                                 unspaced_words=unspaced_words)
    logps = word_logprobs(
        model, windows, len(subset), [len(ex.words) for ex in subset], tokenizer.pad_token_id,
        batch_size=batch_size, precision=precision, pad_multiple=pad_multiple,
    )
    out = [np.zeros((0, model.config.num_labels), dtype=np.float32) for _ in examples]
    for i, lp in zip(nonempty, logps):
        out[i] = lp
    return out


def evaluate_predictions(examples: Sequence[TokenExample], predictions: Sequence[WordPredictions]) -> dict:
    gold = [ex.tags for ex in examples]
    pred = [p.tags for p in predictions]
    scores = entity_scores(gold, pred)
    return {
        "entity": scores,
        "f1": scores["micro"]["f1"],
        "precision": scores["micro"]["precision"],
        "recall": scores["micro"]["recall"],
        "macro_f1": scores["macro"]["f1"],
        "token_accuracy": token_accuracy(gold, pred),
        "sentences": len(examples),
        "words": sum(len(g) for g in gold),
    }


def format_report(examples: Sequence[TokenExample], predictions: Sequence[WordPredictions], metrics: dict) -> str:
    gold = [ex.tags for ex in examples]
    pred = [p.tags for p in predictions]
    return (
        "Entity-level report (strict IOB2, seqeval definitions)\n"
        + format_entity_report(metrics["entity"])
        + "\nToken-level report (one tag per word)\n"
        + token_report(gold, pred)
    )


def entity_spans(example: TokenExample, prediction: WordPredictions) -> list[dict]:
    """Entities as dicts: text, type, word range, char offsets (raw text only), confidence."""
    spans = []
    for kind, start, end in extract_entities(prediction.tags):
        span = {
            "type": kind,
            "start_word": start,
            "end_word": end,
            "confidence": round(float(np.mean(prediction.confidences[start:end])), 4),
        }
        if example.offsets is not None and example.text is not None:
            s, e = example.offsets[start][0], example.offsets[end - 1][1]
            span.update(text=example.text[s:e], start_char=s, end_char=e)
        else:
            span["text"] = " ".join(example.words[start:end])
        spans.append(span)
    return spans


def write_predictions_tsv(path: Path, examples: Sequence[TokenExample], preds: Sequence[WordPredictions]) -> None:
    """Word, gold tag, predicted tag; a blank line between sentences (the run folder's test_predictions.tsv)."""
    lines = []
    for ex, pred in zip(examples, preds):
        for word, gold, tag in zip(ex.words, ex.tags or [""] * len(ex.words), pred.tags):
            lines.append(f"{word}\t{gold}\t{tag}")
        lines.append("")
    atomic_write_text(path, "\n".join(lines) + "\n")


class TokenClassifier(Predictor):
    """A trained token classifier loaded from a run folder (or its ``model/`` folder)."""

    output_formats = ("jsonl", "conll", "labelstudio")

    def __init__(self, model, tokenizer, meta: dict, precision: str = "auto"):
        super().__init__(model, tokenizer, meta, precision)
        self.max_length: int = meta["max_length"]
        self.stride: int = meta["stride"]
        self.decode: str = meta.get("decode", "viterbi")
        self.label_position: str = meta.get("label_position", "first")
        # runs trained before these were recorded: the tokenizer's own split, Chinese by characters
        self.unspaced_words: str = meta.get("unspaced_words", "none")
        self.chinese_segmentation: str = meta.get("chinese_segmentation", "characters")

    def read(self, path, format: str = "auto", labelled: bool = True, token_column: int = 0,
             tag_column: int = -1, scheme: str = "auto", tokens_column: str | None = None,
             tags_column: str | None = None) -> list[TokenExample]:
        """Any token data (CoNLL, JSONL, Parquet, hf:...; JSONL keys and dataset columns as trained unless
        given); labelled files are normalised to IOB2 and checked against the labels."""
        examples = read_token_file(path, format, token_column, tag_column if labelled else None,
                                   tokens_column or self.meta.get("tokens_column"),
                                   tags_column or self.meta.get("tags_column"))
        if labelled:
            normalise_to_iob2(examples, scheme)
            check_known_tags(examples, self.labels)
        return examples

    def read_inputs(self, path, format: str = "auto", token_column: int = 0,
                    tokens_column: str | None = None) -> list[TokenExample]:
        """Raw text (``.txt``: one text a line, pre-tokenized with character offsets), CoNLL, JSONL, a dataset..."""
        if format in ("csv", "tsv"):
            raise TuneforgeError(f"--format {format}: a token classifier reads conll, jsonl or text")
        if format == "auto":
            format = "text" if detect_text_format(path) == "text" else detect_format(path)
        if format == "text":
            return read_text_lines(path, self.chinese_segmentation)
        return read_token_file(path, format, token_column, tag_column=None,
                               tokens_column=tokens_column or self.meta.get("tokens_column"))

    def predict_examples(self, examples: Sequence[TokenExample], batch_size: int = 64,
                         pad_multiple: int | None = None) -> list[WordPredictions]:
        return predict_examples(
            self.model, self.tokenizer, examples, self.labels, self.max_length, self.stride,
            batch_size, self.decode, self.precision, self.label_position, pad_multiple, self.unspaced_words,
        )

    def predict_outputs(self, examples: Sequence[TokenExample], batch_size: int = 64) -> list[WordPredictions]:
        return self.predict_examples(examples, batch_size)

    def score_outputs(self, examples: Sequence[TokenExample], outputs: list[WordPredictions]):
        metrics = evaluate_predictions(examples, outputs)
        return metrics, format_report(examples, outputs, metrics), outputs

    def evaluate_on(self, examples: Sequence[TokenExample], labels: Sequence[str], batch_size: int = 64) -> dict:
        """Entity scores over the types ``labels`` annotate: entities predicted of other types are
        turned to ``O`` first (this data cannot say whether they are right)."""
        types = set(entity_types(labels))
        preds = [WordPredictions(keep_types(p.tags, types), p.confidences)
                 for p in self.predict_examples(examples, batch_size)]
        return evaluate_predictions(examples, preds)

    def units(self, examples: Sequence[TokenExample], batch_size: int = 64) -> list[Units]:
        """Each word is a unit; its probabilities are the tag softmax (before Viterbi decoding)."""
        logps = example_logprobs(self.model, self.tokenizer, examples, self.max_length, self.stride, batch_size,
                                 self.precision, self.label_position, unspaced_words=self.unspaced_words)
        index = {tag: i for i, tag in enumerate(self.labels)}
        return [
            Units(names=list(ex.words), classes=self.labels, probabilities=np.exp(lp),
                  gold=[index.get(t, -1) for t in ex.tags] if ex.tags is not None else None)
            for ex, lp in zip(examples, logps)
        ]


    def predict(self, inputs, batch_size: int = 64) -> list[dict]:
        """Tag raw texts (``str`` or list of ``str``), pre-split word lists, or TokenExamples.

        Each result: ``{"words", "tags", "confidences", "entities"}``; entities carry character
        offsets when raw text was given.
        """
        if isinstance(inputs, str):
            inputs = [inputs]
        examples = [
            item if isinstance(item, TokenExample)
            else examples_from_texts([item], chinese=self.chinese_segmentation)[0] if isinstance(item, str)
            else TokenExample(words=list(item))
            for item in inputs
        ]
        preds = self.predict_examples(examples, batch_size, INFERENCE_PAD_MULTIPLE)
        return [
            {
                "words": ex.words,
                "tags": p.tags,
                "confidences": [round(c, 4) for c in p.confidences],
                "entities": entity_spans(ex, p),
            }
            for ex, p in zip(examples, preds)
        ]

    def inputs_from_request(self, texts: list | None = None, tokens: list | None = None) -> list:
        """``texts`` (raw strings: entities get character offsets) or ``tokens`` (pre-split words)."""
        if tokens is None:
            return super().inputs_from_request(texts)
        for i, words in enumerate(tokens):
            if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
                raise InputError(f"'tokens[{i}]': expected a list of strings (the words of one text)")
        return [TokenExample(words=list(words)) for words in tokens]

    def annotation(self, example: TokenExample, result: dict) -> Annotation:
        """A prediction as spans over the text (raw text's own offsets, else the words joined), with
        each entity's confidence and the mean word confidence as the score."""
        ann = annotation_from_tokens(TokenExample(words=example.words, tags=result["tags"], text=example.text,
                                                  offsets=example.offsets))
        ann.scores = [e["confidence"] for e in result["entities"]]
        confidences = result["confidences"]
        ann.score = round(float(np.mean(confidences)), 4) if confidences else None
        return ann

    def format_output(self, results: list[dict], output_format: str = "jsonl") -> str:
        if output_format != "conll":
            return super().format_output(results, output_format)
        lines = []
        for r in results:
            lines += [f"{w}\t{t}" for w, t in zip(r["words"], r["tags"])] + [""]
        return "\n".join(lines) + "\n"

    def count_output(self, results: list[dict]) -> dict[str, int]:
        return {"predictions": len(results), "entities": sum(len(r["entities"]) for r in results)}

    def headline(self, metrics: dict) -> str:
        return (f"entity F1 {metrics['f1']:.4f} (P {metrics['precision']:.4f}, R {metrics['recall']:.4f}) "
                f"on {metrics['sentences']} sentences")
