"""The token classification task (:class:`TokenClassification`): reading and checking tagged data,
encoding, the loss, continual stages, and what a run writes."""

from __future__ import annotations

import dataclasses
from functools import cached_property
from pathlib import Path
from typing import Sequence

import torch

from ...data.encode import IGNORE_INDEX, Collator, encode_examples, special_token_template, tokenize_words
from ...data.interchange import Annotation, annotation_from_tokens
from ...data.readers import (
    TokenExample,
    check_known_tags,
    check_trainable_labels,
    detect_format,
    normalise_to_iob2,
    read_token_file,
    split_tag,
    write_conll,
    write_token_jsonl,
)
from ...evaluation.metrics import extract_entities
from ...runtime.models import is_causal_model, load_token_classifier
from ..base import Task, TaskData
from ..capabilities import (
    Consistency,
    ContinualStages,
    DataChecks,
    Interchange,
    KShotSampling,
    Perturbable,
)
from .config import TokenClassificationData, TokenClassificationEncoding, TokenClassificationOptions
from .decoding import entity_types, keep_types, label_list
from .predictor import TokenClassifier, write_predictions_tsv
from ...data.sampling import greedy_sample
from ...training.adversarial import symmetric_kl
from ..prototypes import init_head_from_prototypes


class TokenClassification(Task, DataChecks, Interchange, ContinualStages, KShotSampling, Perturbable, Consistency):
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
        # a decoder LLM trained with sft to tag the sentence inline (tasks/generative_sft.py); a decoder model too
        "generative": {"task.type": "generative_ner", **dict.fromkeys(
            ("task.decode", "task.unannotated", "task.head_init", "encoding.stride", "encoding.label_all_subwords",
             "encoding.label_position", "encoding.unspaced_words"))},
    }

    def prepare_data(self, known_labels: Sequence[str] | None = None) -> TaskData:
        data = super().prepare_data(known_labels)
        self.train_examples = data.splits["train"]
        return data

    def build_model(self, labels: list[str]):
        model = super().build_model(labels)
        if self.cfg.task.head_init == "prototypes":
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
        """Each sentence's ids as training encodes them (lone markers before unspaced words left out)."""
        prefix, suffix = special_token_template(tokenizer)
        tokenized = tokenize_words(tokenizer, [ex.words for ex in examples], unspaced_words=self.cfg.encoding.unspaced_words)
        return [prefix + ids + suffix for ids, _ in tokenized]

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
            unspaced_words=enc.unspaced_words,
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
                    label_position=self.label_position, unspaced_words=self.cfg.encoding.unspaced_words,
                    chinese_segmentation=d.chinese_segmentation, **columns)

    def write_outputs(self, run_dir, split, examples, predictions, metrics, predictor) -> None:
        if split == "test":
            write_predictions_tsv(Path(run_dir) / "test_predictions.tsv", examples, predictions)

    def prediction_divergence(self, batch, logits_a, logits_b):
        """Symmetric KL between the two tag distributions at the positions that carry a word's tag."""

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
