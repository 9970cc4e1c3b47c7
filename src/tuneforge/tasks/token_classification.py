"""Token classification (NER): labels, word-level inference over windows, decoding, metrics; the task
(:class:`TokenClassification`) and its predictor (:class:`TokenClassifier`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import ClassVar, Literal, Optional, Sequence

import numpy as np
import torch
from pydantic import Field

from ..config import DataConfig, EncodingConfig, TaskOptions
from ..data.encode import IGNORE_INDEX, INFERENCE_PAD_MULTIPLE, Collator, Window, encode_examples, sorted_batches
from ..data.readers import (
    TokenExample,
    check_known_tags,
    check_trainable_labels,
    detect_format,
    detect_text_format,
    examples_from_texts,
    normalise_to_iob2,
    read_text_lines,
    read_token_file,
    split_tag,
    write_conll,
    write_token_jsonl,
)
from ..data.interchange import Annotation, annotation_from_tokens
from ..errors import InputError, TuneforgeError
from ..evaluation.metrics import entity_scores, extract_entities, format_entity_report, token_accuracy, token_report
from ..models import is_causal_model, load_token_classifier
from ..paths import atomic_write_text
from ..training.loop import autocast_context
from .base import Predictor, Task, TaskData, Units


def label_list(examples: Sequence[TokenExample]) -> list[str]:
    """All tags, ``O`` first, then grouped by entity type with B- before I-."""
    seen = {t for ex in examples for t in (ex.tags or [])}
    seen.add("O")
    return sorted(seen, key=lambda t: (t != "O", split_tag(t)[1], split_tag(t)[0]))


# ---------------------------------------------------------------------------------------------
# Decoding


def allowed_transitions(labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """IOB2 constraints as additive masks: ``I-X`` only after ``B-X``/``I-X``, never first."""
    n = len(labels)
    trans = np.zeros((n, n), dtype=np.float64)
    start = np.zeros(n, dtype=np.float64)
    for j, tag in enumerate(labels):
        prefix, kind = split_tag(tag)
        if prefix != "I":
            continue
        start[j] = -np.inf
        for i, prev in enumerate(labels):
            if prev not in (f"B-{kind}", f"I-{kind}"):
                trans[i, j] = -np.inf
    return trans, start


def viterbi(logprobs: np.ndarray, trans: np.ndarray, start: np.ndarray) -> list[int]:
    """Best tag path under the transition mask (emissions are per-word log-probabilities)."""
    n_words = logprobs.shape[0]
    if n_words == 0:
        return []
    score = logprobs[0] + start
    back = np.zeros((n_words, logprobs.shape[1]), dtype=np.int64)
    for t in range(1, n_words):
        total = score[:, None] + trans
        back[t] = total.argmax(axis=0)
        score = total.max(axis=0) + logprobs[t]
    path = [int(score.argmax())]
    for t in range(n_words - 1, 0, -1):
        path.append(int(back[t, path[-1]]))
    return path[::-1]


@dataclass
class WordPredictions:
    tags: list[str]
    confidences: list[float]  # probability of the chosen tag, per word


def decode(logprobs: np.ndarray, labels: Sequence[str], mode: str = "viterbi", masks=None) -> WordPredictions:
    if mode == "viterbi":
        trans, start = masks if masks is not None else allowed_transitions(labels)
        path = viterbi(logprobs, trans, start)
    else:
        path = logprobs.argmax(axis=-1).tolist() if len(logprobs) else []
    conf = [float(np.exp(logprobs[i, k])) for i, k in enumerate(path)]
    return WordPredictions(tags=[labels[k] for k in path], confidences=conf)


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
) -> list[WordPredictions]:
    """Word-level tags for every example (empty examples get empty predictions)."""
    logps = example_logprobs(model, tokenizer, examples, max_length, stride, batch_size, precision, label_position,
                             pad_multiple)
    masks = allowed_transitions(labels)
    return [decode(lp, labels, decode_mode, masks) if len(lp) else WordPredictions([], []) for lp in logps]


def example_logprobs(
    model, tokenizer, examples: Sequence[TokenExample], max_length: int, stride: int, batch_size: int = 64,
    precision: str = "fp32", label_position: str = "first", pad_multiple: int | None = None,
) -> list[np.ndarray]:
    """Per example, its (words x labels) log-probabilities; an empty example gets a (0 x labels) array.
    ``pad_multiple``: batch by padded length (see :func:`word_logprobs`)."""
    nonempty = [i for i, ex in enumerate(examples) if ex.words]
    subset = [examples[i] for i in nonempty]
    windows, _ = encode_examples(subset, tokenizer, None, max_length, stride, label_position=label_position)
    logps = word_logprobs(
        model, windows, len(subset), [len(ex.words) for ex in subset], tokenizer.pad_token_id,
        batch_size=batch_size, precision=precision, pad_multiple=pad_multiple,
    )
    out = [np.zeros((0, model.config.num_labels), dtype=np.float32) for _ in examples]
    for i, lp in zip(nonempty, logps):
        out[i] = lp
    return out


def entity_types(labels: Sequence[str]) -> list[str]:
    """The entity types of IOB2 tags, in order of first appearance (``O`` has none)."""
    return list(dict.fromkeys(split_tag(t)[1] for t in labels if t != "O"))


def keep_types(tags: Sequence[str], types) -> list[str]:
    """``tags`` with every entity of a type outside ``types`` turned to ``O`` (stays valid IOB2)."""
    return [t if t == "O" or split_tag(t)[1] in types else "O" for t in tags]


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


# ---------------------------------------------------------------------------------------------
# The task and its predictor


class TokenClassificationOptions(TaskOptions):
    type: str = "token_classification"
    decode: Literal["viterbi", "argmax"] = Field(
        default="viterbi", description="viterbi forbids invalid IOB2 transitions (O -> I-X)"
    )
    unannotated: Literal["mask", "o"] = Field(
        default="mask",
        description="entity types a sentence does not annotate (a continual stage's old types): 'mask' "
        "leaves them out of the loss of its O words; 'o' trains those words as plain O",
    )
    head_init: Literal["random", "prototypes"] = Field(
        default="random",
        description="prototypes: the head starts as the nearest-prototype classifier of the training "
                    "words' encoder vectors (few-shot; with training.epochs 0 it is that classifier)",
    )


class TokenClassificationData(DataConfig):
    FORMATS: ClassVar[tuple[str, ...]] = ("auto", "conll", "jsonl", "labelstudio", "doccano", "parquet", "arrow", "hf")
    token_column: int = 0
    tag_column: int = -1
    tokens_column: Optional[str] = Field(
        default=None, description="JSONL key / dataset column of the words (a list of strings); default: tokens or words")
    tags_column: Optional[str] = Field(
        default=None, description="JSONL key / dataset column of the tags (tag strings, or ClassLabel integers); "
                                  "default: tags or ner_tags")
    scheme: Literal["auto", "IOB2", "IOB1", "IO", "BIOES", "BILOU", "BMES", "BMEWO"] = "auto"  # readers.SCHEMES


class TokenClassificationEncoding(EncodingConfig):
    label_all_subwords: bool = False
    label_position: Literal["auto", "first", "last"] = Field(
        default="auto", description="sub-word a word is labelled on: auto = last for decoder models, else first"
    )


class TokenClassifier(Predictor):
    """A trained token classifier loaded from a run folder (or its ``model/`` folder)."""

    output_formats = ("jsonl", "conll", "labelstudio")

    def __init__(self, model, tokenizer, meta: dict, precision: str = "auto"):
        super().__init__(model, tokenizer, meta, precision)
        self.max_length: int = meta["max_length"]
        self.stride: int = meta["stride"]
        self.decode: str = meta.get("decode", "viterbi")
        self.label_position: str = meta.get("label_position", "first")

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
            return read_text_lines(path)
        return read_token_file(path, format, token_column, tag_column=None,
                               tokens_column=tokens_column or self.meta.get("tokens_column"))

    def predict_examples(self, examples: Sequence[TokenExample], batch_size: int = 64,
                         pad_multiple: int | None = None) -> list[WordPredictions]:
        return predict_examples(
            self.model, self.tokenizer, examples, self.labels, self.max_length, self.stride,
            batch_size, self.decode, self.precision, self.label_position, pad_multiple,
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
                                 self.precision, self.label_position)
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
            else examples_from_texts([item])[0] if isinstance(item, str)
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


class TokenClassification(Task):
    """Named-entity recognition and other word tagging: one IOB2 tag per word, entity-level scores."""

    name = "token_classification"
    Options = TokenClassificationOptions
    Data = TokenClassificationData
    Encoding = TokenClassificationEncoding
    Predictor = TokenClassifier
    metric_for_best = "f1"
    score_name = "entity F1"

    def read(self, path: str, labelled: bool = True) -> list[TokenExample]:
        d = self.cfg.data
        return read_token_file(path, d.format, d.token_column, d.tag_column if labelled else None,
                               d.tokens_column, d.tags_column)

    def normalise(self, splits: dict[str, list], report: dict) -> None:
        for name, examples in splits.items():
            if examples:
                scheme = normalise_to_iob2(examples, self.cfg.data.scheme)
                report.setdefault("scheme", {})[name] = {"read_as": scheme.detected, "rewritten": scheme.repaired,
                                                         "examples": scheme.examples}
                report[f"{name}_scheme"] = scheme.describe()
                if scheme.examples:
                    report[f"{name}_scheme_examples"] = scheme.examples

    # few-shot approaches `tuneforge curve` / `compare` can run by name (see Task.APPROACHES)
    APPROACHES = {
        "prototypes": {"task.head_init": "prototypes", "training.epochs": 0, "training.min_steps": None},
        "prototypes_ft": {"task.head_init": "prototypes"},
    }

    def prepare_data(self, known_labels: Sequence[str] | None = None) -> TaskData:
        data = super().prepare_data(known_labels)
        self.train_examples = data.splits["train"]
        return data

    def build_model(self, labels: list[str]):
        model = super().build_model(labels)
        if self.cfg.task.head_init == "prototypes":
            from .prototypes import init_head_from_prototypes

            tokenizer = self.load_tokenizer()
            windows, _, _ = self.encode(tokenizer, self.train_examples, labels)
            report = init_head_from_prototypes(model, windows, labels, tokenizer.pad_token_id)
            print(f"head initialised from prototypes of {sum(report['support_tokens'].values())} training words"
                  + (f"; borrowed for {', '.join(report['borrowed_prototype'])}" if report["borrowed_prototype"] else ""))
        return model

    def label_list(self, train: Sequence[TokenExample]) -> list[str]:
        return label_list(train)

    def mark_annotated(self, examples: Sequence[TokenExample], labels: Sequence[str]) -> None:
        types = tuple(entity_types(labels))
        for ex in examples:
            ex.annotated = types

    @classmethod
    def sniff(cls, path: str, records: list[dict]) -> bool:
        """Column files; JSONL with tokens; Label Studio spans; doccano span lists or an ``entities`` key
        (in any record: the first sentences of a file may have no entity)."""
        if not records:
            return Path(path).suffix.lower() not in (".csv", ".tsv", ".json", ".jsonl", ".ndjson")
        for record in records:
            if "tokens" in record or "words" in record or isinstance(record.get("entities"), list):
                return True
            results = [r for a in record.get("annotations") or [] for r in a.get("result") or []]
            if any(r.get("type") == "labels" for r in results if isinstance(r, dict)):
                return True
            spans = record.get("label")
            if isinstance(spans, list) and any(isinstance(s, (list, dict)) for s in spans):
                return True
        return False

    def label_counts(self, examples: Sequence[TokenExample]) -> dict[str, int]:
        """Entities per type (IOB2 spans)."""
        from collections import Counter

        return dict(Counter(kind for ex in examples for kind, _, _ in extract_entities(ex.tags or [])).most_common())

    def label_signature(self, example: TokenExample) -> tuple:
        return tuple(example.tags or ())

    def check_token_ids(self, tokenizer, examples: Sequence[TokenExample]) -> list[list[int]]:
        if not examples:
            return []
        enc = tokenizer([list(ex.words) for ex in examples], is_split_into_words=True, add_special_tokens=True)
        return [list(ids) for ids in enc["input_ids"]]

    def to_annotation(self, example: TokenExample) -> Annotation:
        return annotation_from_tokens(example)

    def write_labelled(self, examples: Sequence[TokenExample], path) -> dict:
        write_token_jsonl(examples, path)
        return {"format": "jsonl", "scheme": "IOB2"}  # normalised already, whatever scheme the source used

    def check_labels(self, splits: dict[str, list], labels: list[str], report: dict) -> None:
        check_trainable_labels(splits["train"])
        for name in ("dev", "test"):
            check_known_tags(splits[name], labels)

    def sample_k_shot(self, train, labels, k, seed):
        """Yang & Katiyar's greedy sampler: every entity type gets ``k`` mentions where the data allows."""
        from ..data.sampling import greedy_sample

        return greedy_sample(train, lambda ex: [kind for kind, _, _ in extract_entities(ex.tags)], k, seed)

    def describe(self, splits: dict[str, list], labels: list[str]) -> dict:
        return {
            "sentences": {name: len(ex) for name, ex in splits.items()},
            "words": {name: sum(len(e.words) for e in ex) for name, ex in splits.items()},
        }

    def data_summary(self, data: TaskData) -> str:
        return f"{data.report['sentences']} sentences"

    @classmethod
    def load_pretrained(cls, name_or_path, labels=None, meta=None, revision=None, trust_remote_code=False,
                        announce_new_head=True):
        return load_token_classifier(name_or_path, labels, revision, trust_remote_code, announce_new_head)

    @cached_property
    def label_position(self) -> str:
        """Where a word's tag sits: ``first`` sub-word for encoders, ``last`` for decoder models."""
        position = self.cfg.encoding.label_position
        if position == "auto":
            m = self.cfg.model
            position = "last" if is_causal_model(m.name_or_path, m.revision, m.trust_remote_code) else "first"
        return position

    def encode(self, tokenizer, examples, labels):
        enc = self.cfg.encoding
        windows, stats = encode_examples(
            examples, tokenizer, {t: i for i, t in enumerate(labels)}, enc.max_length, enc.stride,
            enc.label_all_subwords, self.label_position, mask_unannotated=self.cfg.task.unannotated == "mask",
        )
        return windows, [len(w.input_ids) for w in windows], stats

    def collator(self, tokenizer):
        labels = getattr(self, "labels", None)
        return Collator(tokenizer.pad_token_id, self.cfg.training.pad_to_multiple_of,
                        len(labels) if labels else None)

    def model_inputs(self, batch: dict) -> dict:
        return {k: v for k, v in batch.items() if k not in ("labels", "o_excluded")}

    def loss(self, model, batch: dict):
        """The model's own cross-entropy, unless the batch holds words whose ``O`` does not rule out
        some types (``task.unannotated: mask``): those types' logits are left out of those words'
        softmax, so the loss neither pushes them down nor up there."""
        excluded = batch.get("o_excluded")
        if excluded is None:
            return super().loss(model, batch)
        import torch.nn.functional as F

        labels = batch["labels"]
        outputs = model(**self.model_inputs(batch))
        logits = outputs.logits.float()
        n_labels = logits.shape[-1]
        excluded = F.pad(excluded, (0, n_labels - excluded.shape[-1]))
        is_o = (labels == self.labels.index("O")).unsqueeze(-1) & excluded.unsqueeze(1)
        logits = logits.masked_fill(is_o, torch.finfo(logits.dtype).min)
        loss = F.cross_entropy(logits.view(-1, n_labels), labels.view(-1), ignore_index=IGNORE_INDEX)
        return loss, outputs

    def output_rows(self, batch: dict, logits):
        return logits[batch["labels"] != IGNORE_INDEX]

    stages_relabel = True

    def label_kinds(self, labels: Sequence[str]) -> list[str]:
        return entity_types(labels)

    def labels_of_kinds(self, labels: Sequence[str], kinds: Sequence[str]) -> list[str]:
        return ["O"] + [t for t in labels if t != "O" and split_tag(t)[1] in kinds]

    def kind_counts(self, examples: Sequence[TokenExample]) -> dict[str, int]:
        """Entities per type (a B- tag starts one)."""
        from collections import Counter

        return dict(Counter(split_tag(t)[1] for ex in examples for t in ex.tags or [] if t.startswith("B-")))

    def restrict_examples(self, examples: Sequence[TokenExample], labels: Sequence[str]) -> list[TokenExample]:
        """Copies whose tags of types outside ``labels`` are ``O`` (a stage that annotates only those)."""
        from dataclasses import replace

        types = set(entity_types(labels))
        return [replace(ex, tags=keep_types(ex.tags, types), tag_lines=None) for ex in examples]

    def write_examples(self, examples: Sequence[TokenExample], folder: Path, name: str) -> Path:
        path = Path(folder) / f"{name}.conll"
        write_conll(examples, path)
        return path

    def tokenizer_inputs(self, examples):
        return [ex.words for ex in examples]

    def model_meta(self, labels: list[str]) -> dict:
        d = self.cfg.data
        columns = {k: getattr(d, k) for k in ("tokens_column", "tags_column") if getattr(d, k)}  # eval reads as trained
        return dict(super().model_meta(labels), decode=self.cfg.task.decode,
                    label_position=self.label_position, **columns)

    def write_outputs(self, run_dir, split, examples, predictions, metrics, predictor) -> None:
        if split == "test":
            write_predictions_tsv(Path(run_dir) / "test_predictions.tsv", examples, predictions)

    def prediction_divergence(self, batch, logits_a, logits_b):
        """Symmetric KL between the two tag distributions at the positions that carry a word's tag."""
        from ..training.adversarial import symmetric_kl

        scored = batch["labels"] != IGNORE_INDEX
        if not bool(scored.any()):
            return logits_a.sum() * 0.0
        return symmetric_kl(logits_a[scored], logits_b[scored]).mean()

    @classmethod
    def example_words(cls, example: TokenExample) -> list[str]:
        return list(example.words)

    @classmethod
    def with_words(cls, example: TokenExample, words: list[str]) -> TokenExample:
        # one word for one word: the tags stay aligned; character offsets into a raw text no longer hold
        if len(words) != len(example.words):
            raise ValueError(f"{len(words)} words for an example of {len(example.words)}")
        return dataclasses.replace(example, words=list(words), text=None, offsets=None)

    @classmethod
    def read_file(cls, path, format: str = "auto", token_column: int = 0, tag_column: int = -1) -> list[TokenExample]:
        """A CoNLL or JSONL file, tags as written (no scheme repair: a noisy copy keeps them verbatim)."""
        return read_token_file(path, format, token_column, tag_column)

    @classmethod
    def write_file(cls, examples, path, format: str = "auto", **options) -> None:
        """CoNLL (``word<TAB>tag``) or JSONL, by ``format`` or the file's extension."""
        fmt = detect_format(path) if format == "auto" else format
        (write_token_jsonl if fmt == "jsonl" else write_conll)(examples, path)
