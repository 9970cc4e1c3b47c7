"""Zero-shot text classification: no training, labels described in words.

Two ways to score a text against each label, picked by ``task.mode`` (``auto``: ``nli`` when the model
is an NLI classifier, i.e. its labels include ``entailment``; else ``similarity``):

- **similarity**: cosine similarity between the text's sentence embedding (mean pooling, L2-normalised:
  how sentence-transformers models such as the bundled all-MiniLM-L6-v2 are trained) and each label's
  text embedding; probabilities are ``softmax(cosine / task.temperature)``.
- **nli**: each label's text is a hypothesis for the text as premise (Yin et al. 2019, the Hugging
  Face zero-shot pipeline's method); single-label probabilities are the softmax of the entailment
  logits over labels, multi-label ones each label's softmax of [contradiction, entailment].

A label's text is its description (``data.label_descriptions``: a string, or a list whose scores are
averaged) or else ``task.template`` filled with the label's name. The run folder, predictor,
``predict``/``eval``/serving and metrics are a trained classifier's (:class:`ZeroShotClassifier` is a
:class:`~tuneforge.tasks.text_classification.TextClassifier`); ``training.epochs`` is 0.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional, Sequence

import numpy as np
import torch
from pydantic import Field, model_validator

from ..artifacts.paths import resolve_path
from ..data.readers import TextExample, check_known_labels
from ..errors import ConfigError, TuneforgeError
from .base import TaskData
from .text_classification import (
    TextClassification,
    TextClassificationData,
    TextClassificationOptions,
    TextClassifier,
    per_text_outputs,
    sentence_embeddings,
)


class ZeroShotOptions(TextClassificationOptions):
    type: str = "zero_shot_classification"
    mode: Literal["auto", "similarity", "nli"] = Field(
        default="auto", description="auto: nli when the model's labels include 'entailment', else similarity")
    template: str = Field(default="This example is {}.",
                          description="a label's text when data.label_descriptions gives none; {} is the label")
    temperature: float = Field(default=0.05, gt=0, description="similarity: softmax(cosine / temperature)")

    @model_validator(mode="after")
    def _check(self) -> "ZeroShotOptions":
        if self.class_weights is not None:
            raise ValueError("'task.class_weights': a zero-shot model has no training loss to weigh; remove it")
        if "{}" not in self.template:
            raise ValueError("'task.template' needs a {} where the label goes, e.g. 'This example is {}.'")
        return self


class ZeroShotData(TextClassificationData):
    train: Optional[str] = Field(  # type: ignore[assignment]
        default=None, description="optional: only its label set is used (labels may come from label_descriptions)")

    @model_validator(mode="after")
    def _check_zero_shot(self) -> "ZeroShotData":
        if self.k_shot is not None:
            raise ValueError("'data.k_shot': a zero-shot model uses no training examples; remove it")
        if self.train is None and not self.label_descriptions:
            raise ValueError("'data.label_descriptions': give the labels (label: description) or a data.train file")
        if self.train is None and self.split is not None:
            raise ValueError("'data.split' needs data.train")
        return self


def _nli_label_ids(config) -> tuple[int, int] | None:
    """(entailment id, contradiction id) of an NLI model's config, or None when it is not one."""
    by_name = {str(name).lower(): int(i) for i, name in (config.id2label or {}).items()}
    if "entailment" not in by_name:
        return None
    contradiction = by_name.get("contradiction", by_name.get("not_entailment", by_name.get("non-entailment")))
    if contradiction is None:
        others = [i for n, i in by_name.items() if n != "entailment"]
        contradiction = others[0] if others else None
    return by_name["entailment"], contradiction


class ZeroShotClassifier(TextClassifier):
    """A zero-shot classifier loaded from a run folder: the same rows and metrics as a trained one."""

    def __init__(self, model, tokenizer, meta: dict, precision: str = "fp32"):
        super().__init__(model, tokenizer, meta, precision)
        self.zero_shot: dict = meta["zero_shot"]
        self._label_matrix: np.ndarray | None = None

    def label_texts(self) -> list[list[str]]:
        return [self.zero_shot["label_texts"][label] for label in self.labels]

    def _label_embeddings(self, batch_size: int) -> np.ndarray:
        """One unit vector per label: the normalised mean of its texts' embeddings (computed once)."""
        if self._label_matrix is None:
            texts = self.label_texts()
            flat = [TextExample(text=t) for group in texts for t in group]
            emb = sentence_embeddings(self.model, self.tokenizer, flat, self.meta, batch_size, self.precision)
            rows, start = [], 0
            for group in texts:
                mean = emb[start:start + len(group)].mean(axis=0)
                rows.append(mean / max(np.linalg.norm(mean), 1e-12))
                start += len(group)
            self._label_matrix = np.stack(rows)
        return self._label_matrix

    def predict_proba(self, examples: Sequence[TextExample], batch_size: int = 64,
                      pad_multiple: int | None = None) -> np.ndarray:
        if any(ex.text_pair is not None for ex in examples):
            raise TuneforgeError("a zero-shot classifier scores single texts; this input has text pairs")
        if self.zero_shot["mode"] == "similarity":
            cosine = sentence_embeddings(self.model, self.tokenizer, examples, self.meta, batch_size,
                                         self.precision, pad_multiple) @ self._label_embeddings(batch_size).T
            return torch.softmax(torch.from_numpy(cosine) / self.zero_shot["temperature"], dim=-1).numpy()
        return self._nli_proba(examples, batch_size, pad_multiple)

    def _nli_proba(self, examples: Sequence[TextExample], batch_size: int, pad_multiple: int | None = None) -> np.ndarray:
        """Every (text, hypothesis) pair through the NLI model; scores averaged over a label's hypotheses."""
        entail, contra = self.zero_shot["entailment_id"], self.zero_shot["contradiction_id"]
        hypotheses = [(j, h) for j, group in enumerate(self.label_texts()) for h in group]
        pairs = [TextExample(text=ex.text, text_pair=h) for ex in examples for _, h in hypotheses]
        logits = per_text_outputs(self.model, lambda m, batch: m(**batch).logits, self.tokenizer, pairs, self.meta,
                                  self.model.config.num_labels, batch_size, self.precision, pad_multiple)
        logits = logits.reshape(len(examples), len(hypotheses), -1)
        n_labels = len(self.labels)
        owner = np.array([j for j, _ in hypotheses])
        counts = np.bincount(owner, minlength=n_labels)[None, :]
        if self.multi_label:
            two = torch.softmax(torch.from_numpy(logits[:, :, [contra, entail]]), dim=-1)[..., 1].numpy()
            summed = np.zeros((len(examples), n_labels), dtype=np.float32)
            np.add.at(summed.T, owner, two.T)
            return summed / counts
        summed = np.zeros((len(examples), n_labels), dtype=np.float32)
        np.add.at(summed.T, owner, logits[:, :, entail].T)
        return torch.softmax(torch.from_numpy(summed / counts), dim=-1).numpy()


class ZeroShotClassification(TextClassification):
    """Text classification with no training (see the module docstring)."""

    name = "zero_shot_classification"
    Options = ZeroShotOptions
    Data = ZeroShotData
    Predictor = ZeroShotClassifier
    uses_training_data: ClassVar[bool] = False
    DEFAULT_TRAINING: ClassVar[dict] = {"epochs": 0}

    def __init__(self, cfg):
        super().__init__(cfg)
        if cfg.training.epochs != 0:
            raise ConfigError("training.epochs: a zero-shot model does not train; set it to 0 (or leave it unset)")
        if cfg.method.name != "full":
            raise ConfigError(f"method.name {cfg.method.name}: a zero-shot model trains nothing; remove the method block")

    def prepare_data(self, known_labels=None) -> TaskData:
        d = self.cfg.data
        descriptions = d.label_descriptions or {}
        if d.train is not None:
            data = super().prepare_data(known_labels)
            unknown = sorted(set(descriptions) - set(data.labels))
            if unknown:
                raise ConfigError(f"data.label_descriptions: {unknown[0]!r} is not a label of {d.train} "
                                  f"(labels: {', '.join(data.labels)})")
            data.splits["train"] = []  # only its labels were needed
            data.report["train_labels_only"] = True
            return data
        splits = {"train": [], "dev": self.read(d.dev) if d.dev else [], "test": self.read(d.test) if d.test else []}
        labels = sorted(descriptions)
        report: dict = {"train_file": None, "labels_from": "data.label_descriptions"}
        self.check_labels(splits, labels, report)
        report.update(self.describe(splits, labels))
        self.class_weights = None
        return TaskData(splits, labels, report)

    def check_labels(self, splits, labels, report) -> None:
        if len(labels) < 2 and not self.cfg.task.multi_label:
            raise ConfigError(f"zero-shot classification needs at least two labels; got {', '.join(labels) or 'none'}")
        for name in ("dev", "test"):
            check_known_labels(splits[name], labels)

    def mode(self, model_config) -> str:
        mode, nli = self.cfg.task.mode, _nli_label_ids(model_config)
        if mode == "auto":
            mode = "nli" if nli else "similarity"
        if mode == "nli" and nli is None:
            raise ConfigError(f"task.mode nli: {self.cfg.model.name_or_path} is not an NLI model "
                              "(its labels have no 'entailment'); use task.mode: similarity")
        if mode == "similarity" and self.cfg.task.multi_label:
            raise ConfigError("task.multi_label: similarity scores compete across labels; "
                              "multi-label zero-shot needs an NLI model (task.mode: nli)")
        return mode

    def build_model(self, labels: list[str]):
        from transformers import AutoConfig

        m = self.cfg.model
        config = AutoConfig.from_pretrained(resolve_path(m.name_or_path), revision=m.revision,
                                            trust_remote_code=m.trust_remote_code)
        self._mode = self.mode(config)
        self._nli_ids = _nli_label_ids(config)
        return self.load_pretrained(m.name_or_path, None, {"zero_shot": {"mode": self._mode}}, m.revision,
                                    m.trust_remote_code)

    @classmethod
    def load_pretrained(cls, name_or_path, labels=None, meta=None, revision=None, trust_remote_code=False,
                        announce_new_head=True):
        """The model as it is: a sentence encoder (``AutoModel``) or an NLI classifier with its own head."""
        from transformers import AutoModel, AutoModelForSequenceClassification

        auto = AutoModelForSequenceClassification if meta["zero_shot"]["mode"] == "nli" else AutoModel
        return auto.from_pretrained(resolve_path(name_or_path), revision=revision, trust_remote_code=trust_remote_code)

    def encode(self, tokenizer, examples, labels):
        class Nothing:
            def describe(self) -> str:
                return "zero-shot: nothing to encode for training"

        return [], [], Nothing()

    def model_meta(self, labels: list[str]) -> dict:
        t, d = self.cfg.task, self.cfg.data
        descriptions = d.label_descriptions or {}
        texts = {}
        for label in labels:
            given = descriptions.get(label)
            texts[label] = [given] if isinstance(given, str) else list(given) if given else [t.template.format(label)]
        zero_shot = {"mode": self._mode, "label_texts": texts, "temperature": t.temperature}
        if self._mode == "nli":
            zero_shot.update(entailment_id=self._nli_ids[0], contradiction_id=self._nli_ids[1])
        return dict(super().model_meta(labels), zero_shot=zero_shot)
