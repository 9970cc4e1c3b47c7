"""SetFit few-shot text classification (Tunstall et al. 2022): contrastive fine-tuning of a sentence
encoder on generated text pairs, then a logistic-regression head on its embeddings.

What comes from the ``setfit`` library and what is ours:

- **pairs**: ``setfit.sampler.ContrastiveDataset`` generates them (SetFit's sampling strategies
  ``oversampling``/``undersampling``/``unique``, ``num_iterations``, ``max_pairs``), as SetFit's
  own trainer does;
- **training**: the one loop (:mod:`tuneforge.training.loop`), with SetFit's loss
  (``CosineSimilarityLoss``: mean squared error between the cosine of the two texts' mean-pooled
  embeddings and 1 / 0). SetFit's ``Trainer`` is a second training loop (sentence-transformers on
  the Hugging Face Trainer): no ``--resume`` into our checkpoints, no callbacks, no run folder; and
  its saved head is a pickle (``model_head.pkl``), which we never load;
- **head**: scikit-learn's ``LogisticRegression`` (SetFit's default head) fitted on the training
  texts' embeddings whenever the model is scored or saved, copied into a linear layer and written as
  safetensors (``setfit_head.safetensors`` next to the encoder, which loads with ``AutoModel``).

The predictor is a :class:`~tuneforge.tasks.text_classification.TextClassifier`: same rows,
metrics, ``predict``/``eval`` and serving; its probabilities are ``softmax(head(embedding))``.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal, Optional, Sequence

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from ..artifacts.paths import resolve_path
from ..data.encode import encode_texts
from ..data.readers import TextExample
from ..errors import ConfigError
from .text_classification import (
    TextClassification,
    TextClassificationOptions,
    TextClassifier,
    class_weight_vector,
    mean_pool,
    model_inputs_take_token_types,
    sentence_embeddings,
)

HEAD_FILE = "setfit_head.safetensors"


class SentenceClassifier(nn.Module):
    """A sentence encoder (``AutoModel``, mean pooling, unit-length embeddings) and a linear head.

    ``save_pretrained`` writes the encoder as a plain Hugging Face model and the head as safetensors,
    so the ``full`` method saves it like any model.
    """

    def __init__(self, body, n_labels: int):
        super().__init__()
        self.body = body
        self.config = body.config
        self.head = nn.Linear(body.config.hidden_size, n_labels)
        self.head.requires_grad_(False)  # fitted by logistic regression, not by the contrastive loss

    def embed(self, input_ids, attention_mask, **inputs) -> torch.Tensor:
        hidden = self.body(input_ids=input_ids, attention_mask=attention_mask, **inputs).last_hidden_state
        return nn.functional.normalize(mean_pool(hidden, attention_mask), dim=-1)

    def forward(self, input_ids, attention_mask, **inputs) -> torch.Tensor:
        return self.head(self.embed(input_ids, attention_mask, **inputs))

    def save_pretrained(self, folder, state_dict: dict | None = None) -> None:
        """The encoder as a Hugging Face folder and the head beside it; ``state_dict``: this module's
        weights gathered from several processes (``body.*`` and ``head.*``), else its own."""
        from safetensors.torch import save_file

        state = state_dict if state_dict is not None else self.state_dict()
        body = {k.removeprefix("body."): v for k, v in state.items() if k.startswith("body.")}
        head = {k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")}
        self.body.save_pretrained(folder, state_dict=body)
        save_file({k: v.detach().contiguous().cpu() for k, v in head.items()}, str(Path(folder) / HEAD_FILE))

    @classmethod
    def from_pretrained(cls, folder: str, n_labels: int, revision=None, trust_remote_code=False) -> "SentenceClassifier":
        from transformers import AutoModel

        model = cls(AutoModel.from_pretrained(folder, revision=revision, trust_remote_code=trust_remote_code), n_labels)
        head = Path(folder) / HEAD_FILE
        if head.exists():
            from safetensors.torch import load_file

            model.head.load_state_dict(load_file(str(head)))
        return model


class SetFitOptions(TextClassificationOptions):
    type: str = "setfit"
    sampling_strategy: Literal["oversampling", "undersampling", "unique"] = Field(
        default="oversampling", description="SetFit's pair sampling (setfit.sampler.ContrastiveDataset)")
    num_iterations: Optional[int] = Field(
        default=None, ge=1, description="if set: 2 x num_iterations x texts pairs, instead of the sampling strategy's count")
    # SetFit's oversampling makes O(n^2) pairs (24,576 for 3 x 64 texts): a cap keeps a CPU run to minutes
    max_pairs: Optional[int] = Field(default=2000, ge=2, description="at most this many pairs; null: no cap (SetFit's default)")
    head_c: float = Field(default=1.0, gt=0, description="inverse regularisation strength of the logistic-regression head")

    @model_validator(mode="after")
    def _check_setfit(self) -> "SetFitOptions":
        if self.multi_label:
            raise ValueError("'task.multi_label': the setfit task is single-label here; use text_classification")
        return self


class SetFitClassifier(TextClassifier):
    """A SetFit model loaded from a run folder: the encoder's embedding through the fitted head."""

    def predict_proba(self, examples: Sequence[TextExample], batch_size: int = 64,
                      pad_multiple: int | None = None) -> np.ndarray:
        embeddings = sentence_embeddings(self.model.body, self.tokenizer, examples, self.meta, batch_size,
                                         self.precision, pad_multiple)
        with torch.inference_mode():
            head = self.model.head
            logits = torch.from_numpy(embeddings).to(head.weight.device) @ head.weight.T + head.bias
        return torch.softmax(logits.float().cpu(), dim=-1).numpy()


class PairCollator:
    """Pads both texts of every pair into one batch of 2B rows (first texts, then second texts), so
    one forward pass embeds them all; ``labels`` holds the B pair targets."""

    def __init__(self, pad_id: int, token_types: bool):
        self.pad_id, self.token_types = pad_id, token_types

    def __call__(self, items: list[dict]) -> dict:
        rows = [x["a"] for x in items] + [x["b"] for x in items]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r)
            mask[i, :len(r)] = 1
        batch = {"input_ids": ids, "attention_mask": mask,
                 "labels": torch.tensor([x["label"] for x in items], dtype=torch.float),
                 "n_tokens": int(mask.sum())}
        if self.token_types:
            batch["token_type_ids"] = torch.zeros_like(ids)
        return batch


class PairStats:
    def __init__(self, n_pairs: int, n_texts: int, positive: int, strategy: str):
        self.n_pairs, self.n_texts, self.positive, self.strategy = n_pairs, n_texts, positive, strategy

    def describe(self) -> str:
        return (f"{self.n_pairs:,} SetFit pairs ({self.positive:,} positive) from {self.n_texts:,} texts "
                f"({self.strategy})")


class SetFitClassification(TextClassification):
    """Few-shot text classification the SetFit way (see the module docstring)."""

    name = "setfit"
    Options = SetFitOptions
    Predictor = SetFitClassifier
    # SetFit's own defaults (setfit.TrainingArguments): body learning rate 2e-5, one epoch over the pairs, 16 pairs a batch
    DEFAULT_TRAINING: ClassVar[dict] = {"learning_rate": 2e-5, "epochs": 1, "batch_size": 16}
    REQUIRES: ClassVar[tuple[tuple[str, str], ...]] = (("setfit", "fewshot"),)

    def __init__(self, cfg):
        super().__init__(cfg)
        if cfg.method.name != "full":
            raise ConfigError(f"method.name {cfg.method.name}: the setfit task fine-tunes the whole encoder "
                              "(method full); remove the method block")
        self._head_state: tuple | None = None

    def prepare_data(self, known_labels=None):
        data = super().prepare_data(known_labels)
        self.train_examples = data.splits["train"]
        self.labels = data.labels
        return data

    def build_model(self, labels: list[str]):
        m = self.cfg.model
        return self.load_pretrained(m.name_or_path, labels, {}, m.revision, m.trust_remote_code)

    @classmethod
    def load_pretrained(cls, name_or_path, labels=None, meta=None, revision=None, trust_remote_code=False,
                        announce_new_head=True):
        n_labels = len(labels if labels is not None else (meta or {})["labels"])
        return SentenceClassifier.from_pretrained(resolve_path(name_or_path), n_labels, revision, trust_remote_code)

    def encode(self, tokenizer, examples, labels):
        """SetFit's pairs (``setfit.sampler.ContrastiveDataset``), each text cut to ``encoding.max_length``."""
        from setfit.sampler import ContrastiveDataset

        t, e = self.cfg.task, self.cfg.encoding
        texts = [ex.text for ex in examples]
        index = {label: i for i, label in enumerate(labels)}
        pairs = list(ContrastiveDataset(texts, [index[ex.labels[0]] for ex in examples], multilabel=False,
                                        num_iterations=t.num_iterations, sampling_strategy=t.sampling_strategy,
                                        max_pairs=t.max_pairs or -1))
        unique = sorted(set(texts))
        inputs, _ = encode_texts([TextExample(text=x) for x in unique], tokenizer, None, e.max_length, "head",
                                 e.stride, t.head_fraction)
        ids = {text: inp.input_ids for text, inp in zip(unique, inputs)}
        items = [{"a": ids[p["sentence_1"]], "b": ids[p["sentence_2"]], "label": float(p["label"])} for p in pairs]
        stats = PairStats(len(items), len(texts), sum(1 for p in pairs if p["label"] == 1.0),
                          t.sampling_strategy if t.num_iterations is None else f"{t.num_iterations} iterations")
        return items, [len(x["a"]) + len(x["b"]) for x in items], stats

    def collator(self, tokenizer):
        return PairCollator(tokenizer.pad_token_id, model_inputs_take_token_types(tokenizer))

    def loss(self, model, batch: dict):
        """SetFit's CosineSimilarityLoss: (cos(u, v) - target)^2, u and v the pair's embeddings."""
        targets = batch["labels"]
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        embeddings = model.embed(**inputs)
        n = targets.shape[0]
        cosine = (embeddings[:n] * embeddings[n:]).sum(-1)
        return nn.functional.mse_loss(cosine.float(), targets), embeddings

    def fit_head(self, model, tokenizer, meta: dict, precision: str) -> None:
        """Logistic regression on the training texts' embeddings (SetFit's default head), into ``model.head``.

        Refitted only when the encoder changed since the last fit (the optimizer bumps its weights' versions).
        """
        from sklearn.linear_model import LogisticRegression

        state = tuple(p._version for p in model.body.parameters())
        if state == self._head_state:
            return
        examples = self.train_examples
        embeddings = sentence_embeddings(model.body, tokenizer, examples, meta, self.cfg.training.eval_batch_size,
                                         precision)
        index = {label: i for i, label in enumerate(self.labels)}
        gold = np.array([index[ex.labels[0]] for ex in examples])
        weights = class_weight_vector(self.cfg.task.class_weights, examples, self.labels)
        classifier = LogisticRegression(C=self.cfg.task.head_c, max_iter=1000, class_weight=(
            {i: w for i, w in enumerate(weights)} if weights is not None else None))
        classifier.fit(embeddings, gold)
        weight = np.zeros((len(self.labels), embeddings.shape[1]), dtype=np.float32)
        bias = np.full(len(self.labels), -30.0, dtype=np.float32)  # a label training never saw is never predicted
        if len(classifier.classes_) == 2:  # scikit-learn keeps one row: p(second) = sigmoid(z) = softmax([-z/2, z/2])
            rows = np.stack([-classifier.coef_[0] / 2, classifier.coef_[0] / 2])
            offsets = np.array([-classifier.intercept_[0] / 2, classifier.intercept_[0] / 2])
        else:
            rows, offsets = classifier.coef_, classifier.intercept_
        weight[classifier.classes_] = rows
        bias[classifier.classes_] = offsets
        with torch.no_grad():
            model.head.weight.copy_(torch.from_numpy(weight))
            model.head.bias.copy_(torch.from_numpy(bias))
        self._head_state = state

    def evaluate_dev(self, model, tokenizer, examples, meta: dict, precision: str) -> dict:
        self.fit_head(model, tokenizer, meta, precision)
        metrics, _, _ = self.predictor(model, tokenizer, meta, precision).evaluate_examples(
            examples, self.cfg.training.eval_batch_size)
        return metrics

    def before_save(self, model, tokenizer, meta: dict, precision: str) -> None:
        self.fit_head(model, tokenizer, meta, precision)

    def model_meta(self, labels: list[str]) -> dict:
        t = self.cfg.task
        return dict(super().model_meta(labels), setfit={
            "pooling": "mean", "normalize": True, "head": "logistic_regression", "head_file": HEAD_FILE,
            "sampling_strategy": t.sampling_strategy, "num_iterations": t.num_iterations, "max_pairs": t.max_pairs})
