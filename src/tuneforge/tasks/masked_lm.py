"""Masked-language-model training on raw text: continued pre-training of an encoder on a language or
domain before fine-tuning. The task (:class:`MaskedLM`) and its predictor (:class:`MaskedLMModel`).

- **Data**: ``.txt`` (one document a line), ``.jsonl`` (``data.text_column``) or a folder of them;
  without ``data.dev`` or ``data.split``, ``data.eval_share`` of the documents is held out for
  evaluation (at most ``data.max_eval_documents``).
- **Encoding**: documents are tokenised, joined with the separator token and cut into blocks of
  ``encoding.max_length`` (:func:`tuneforge.data.encode.pack_documents`): no padding, no token lost.
- **Masking**: dynamic (new masks every epoch) by a generator whose state is checkpointed, so it is
  deterministic by seed and exact after ``--resume``; whole-word (all pieces of a word; neighbouring
  Chinese characters of one jieba word) with BERT's 80/10/10 replacement
  (:class:`tuneforge.data.encode.MaskingCollator`).
- **Loss**: cross-entropy on the masked tokens; for BERT/RoBERTa-style models only the masked
  positions go through the vocabulary projection (the model's own forward would project all of them,
  about half the compute of a MiniLM step), with the same result.
- **Scores**: dev loss picks the best checkpoint (lower is better); perplexity = exp(loss) over the
  masked tokens of a fixed masking (seed :data:`EVAL_MASK_SEED`), so numbers compare across epochs,
  runs and models.
- **Result**: ``RUN/model`` is a Hugging Face masked-LM folder (``AutoModelForMaskedLM``,
  ``pipeline("fill-mask")``) that a fine-tuning config names as ``model.name_or_path`` (the MLM
  head is dropped, the encoder kept). LoRA runs save an adapter; ``tuneforge export --merge`` folds it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar, Literal, Optional, Sequence

import torch
from pydantic import Field, model_validator

from ..data.encode import (
    Block,
    MaskingCollator,
    PackStats,
    pack_documents,
    special_token_template,
    word_groups,
)
from ..data.readers import TextExample, read_documents
from ..errors import ConfigError, TuneforgeError
from ..runtime.models import load_masked_lm
from ..runtime.precision import autocast_context
from ..schema import DataConfig, EncodingConfig, TaskOptions
from ..training.callbacks import Callback
from .base import Task, TaskData, hold_out_documents
from .predictor import Predictor

EVAL_MASK_SEED = 20240601  # one fixed masking for every evaluation

# Model types whose masked-LM head is one module applied to the encoder's hidden states, so it can be
# run on the masked positions alone (others go through the model's own forward).
HEAD_OF_MODEL_TYPE = {"bert": "cls", "roberta": "lm_head", "xlm-roberta": "lm_head", "camembert": "lm_head"}


# ---------------------------------------------------------------------------------------------
# Loss


def _masked_lm_model(model):
    """The transformers *ForMaskedLM model inside ``model`` (itself, or the one a peft wrapper holds)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def masked_logits(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) at the positions to predict (labels != -100) only."""
    labels = batch["labels"]
    selected = labels != -100
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    mlm = _masked_lm_model(model)
    head_name = HEAD_OF_MODEL_TYPE.get(getattr(mlm.config, "model_type", ""))
    distributed = isinstance(model, torch.nn.parallel.DistributedDataParallel)
    if head_name is None or distributed or not hasattr(mlm, head_name):
        # the model's own forward (DDP must see it to synchronise gradients)
        logits = model(**inputs).logits
        return logits[selected], labels[selected]
    hidden = getattr(mlm, mlm.base_model_prefix)(**inputs)[0]
    return getattr(mlm, head_name)(hidden[selected]), labels[selected]


def masked_lm_loss(model, batch: dict):
    """``(mean cross-entropy over the masked tokens, None)``: the task's loss for the loop."""
    logits, labels = masked_logits(model, batch)
    return torch.nn.functional.cross_entropy(logits.float(), labels), None


# ---------------------------------------------------------------------------------------------
# Encoding shared by training and the predictor


def encode_documents(tokenizer, texts: Sequence[str], max_length: int, whole_word: bool,
                     chinese: str) -> tuple[list[Block], PackStats]:
    prefix, suffix = special_token_template(tokenizer)
    separator = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if separator is None:
        raise ConfigError("task.type masked_lm: the tokenizer has no separator (sep or eos) token to join documents")
    stats = PackStats(masking=("whole words" + (", jieba words for Chinese" if chinese == "jieba"
                                                  else ", Chinese character by character")) if whole_word
                      else "token by token")
    blocks = pack_documents(word_groups(tokenizer, texts, whole_word, chinese), prefix, suffix, separator,
                            max_length, stats)
    return blocks, stats


def make_collator(tokenizer, meta: dict, seed: int) -> MaskingCollator:
    if tokenizer.mask_token_id is None:
        raise ConfigError("task.type masked_lm: the tokenizer has no mask token; pick a masked-LM model (BERT, RoBERTa...)")
    return MaskingCollator(tokenizer.pad_token_id, tokenizer.mask_token_id, len(tokenizer), meta["mlm_probability"],
                           meta["mask_replace_prob"], meta["random_replace_prob"], seed)


# ---------------------------------------------------------------------------------------------
# The loaded model


class MaskedLMModel(Predictor):
    """A masked-LM run loaded from its folder: perplexity on text files, fill-mask predictions."""

    def read(self, path, format: str = "auto", labelled: bool = True, text_column=None) -> list[TextExample]:
        """Documents from ``.txt`` / ``.jsonl`` files or a folder (``labelled`` has no meaning here)."""
        return read_documents(path, format, text_column or self.meta.get("text_column", "text"))

    def read_inputs(self, path, format: str = "auto", text_column=None) -> list[TextExample]:
        return self.read(path, format, False, text_column)

    @torch.inference_mode()
    def evaluate_examples(self, examples: Sequence[TextExample], batch_size: int = 64):
        """Loss and perplexity over one fixed masking of the packed documents."""
        m = self.meta
        blocks, stats = encode_documents(self.tokenizer, [ex.text for ex in examples], m["max_length"],
                                         m["whole_word_mask"], m["chinese_segmentation"])
        collate = make_collator(self.tokenizer, m, EVAL_MASK_SEED)
        was_training = self.model.training
        self.model.eval()
        device = next(self.model.parameters()).device
        total, count = 0.0, 0
        for start in range(0, len(blocks), batch_size):
            batch = collate(blocks[start:start + batch_size])
            batch.pop("n_tokens")
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast_context(device, self.precision):
                logits, labels = masked_logits(self.model, batch)
            total += float(torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum"))
            count += int(labels.numel())
        self.model.train(was_training)
        loss = total / count if count else float("nan")
        metrics = {"loss": loss, "perplexity": math.exp(loss) if count else float("nan"), "masked_tokens": count,
                   "tokens": stats.tokens, "documents": len(examples), "blocks": stats.blocks}
        report = (f"masked-LM loss {loss:.4f} · perplexity {metrics['perplexity']:.2f} over {count:,} masked tokens "
                  f"({stats.describe()})\n")
        return metrics, report, None

    @torch.inference_mode()
    def predict(self, inputs, batch_size: int = 64, top_k: int = 5) -> list[dict]:
        """Fill in every mask token of each text: ``{"text", "predictions": [[{"token_str", "token",
        "score"}, ... top_k] per mask, left to right]}`` (the shape of ``pipeline("fill-mask")``)."""
        if isinstance(inputs, (str, TextExample)):
            inputs = [inputs]
        texts = [x.text if isinstance(x, TextExample) else x for x in inputs]
        mask = self.tokenizer.mask_token
        self.model.eval()
        device = next(self.model.parameters()).device
        results = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            enc = self.tokenizer(chunk, padding=True, truncation=True, max_length=self.meta["max_length"],
                                 return_tensors="pt")
            enc = {k: v.to(device) for k, v in enc.items()}
            with autocast_context(device, self.precision):
                logits = self.model(**enc).logits.float()
            probs = torch.softmax(logits, dim=-1)
            for row, text in enumerate(chunk):
                positions = (enc["input_ids"][row] == self.tokenizer.mask_token_id).nonzero().flatten().tolist()
                if mask not in text:
                    results.append({"text": text, "predictions": [],
                                    "note": f"no {mask} in the text"})
                    continue
                preds = []
                for pos in positions:
                    scores, ids = probs[row, pos].topk(top_k)
                    preds.append([{"token_str": self.tokenizer.decode([i]).strip(), "token": int(i),
                                   "score": round(float(s), 4)} for s, i in zip(scores.tolist(), ids.tolist())])
                results.append({"text": text, "predictions": preds})
        return results

    def describe_output(self, results: list[dict]) -> str:
        return f"{len(results)} texts ({sum(len(r['predictions']) for r in results)} masks filled)"

    def headline(self, metrics: dict) -> str:
        return (f"perplexity {metrics['perplexity']:.2f} (loss {metrics['loss']:.4f}) over "
                f"{metrics['masked_tokens']:,} masked tokens of {metrics['documents']:,} documents")


# ---------------------------------------------------------------------------------------------
# The task


class MaskedLMOptions(TaskOptions):
    type: str = "masked_lm"
    mlm_probability: float = Field(default=0.15, gt=0, lt=1, description="share of words (or tokens) to predict")
    mask_replace_prob: float = Field(default=0.8, ge=0, le=1, description="predicted tokens shown as the mask token")
    random_replace_prob: float = Field(default=0.1, ge=0, le=1, description="predicted tokens shown as a random token")
    whole_word_mask: bool = Field(default=True, description="mask all pieces of a word together")
    chinese_segmentation: Literal["jieba", "characters"] = Field(
        default="jieba", description="whole-word masking of Chinese: jieba words, or character by character"
    )

    @model_validator(mode="after")
    def _check_replacement(self) -> "MaskedLMOptions":
        if self.mask_replace_prob + self.random_replace_prob > 1 + 1e-9:
            raise ValueError("'task.mask_replace_prob' + 'task.random_replace_prob' must not exceed 1")
        return self


class MaskedLMData(DataConfig):
    FORMATS: ClassVar[tuple[str, ...]] = ("auto", "text", "jsonl", "parquet", "arrow", "hf")
    text_column: str = Field(default="text", description="the text key of .jsonl records, the text column of a dataset")
    eval_share: float = Field(default=0.05, ge=0, lt=1,
                              description="share of train documents held out for evaluation when no dev/split is given")
    max_eval_documents: Optional[int] = Field(default=2000, ge=1, description="cap on the held-out documents")


class MaskedLMEncoding(EncodingConfig):
    stride: Optional[int] = Field(default=None, description="not used: text is packed into blocks, not windowed")

    @model_validator(mode="after")
    def _check_stride(self) -> "MaskedLMEncoding":  # replaces the windowing check: there are no windows
        if self.stride is not None:
            raise ValueError("'encoding.stride' does not apply to task.type masked_lm (text is packed into "
                             "blocks, not windowed); remove it")
        return self


class MaskingState(Callback):
    """Keeps the masking generator's state in every checkpoint (exact masks after ``--resume``)."""

    name = "masking"

    def __init__(self, collator: MaskingCollator):
        self.collator = collator

    def state_dict(self) -> dict:
        return {"generator": self.collator.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.collator.generator.set_state(state["generator"].to(torch.uint8))


class MaskedLM(Task):
    """Continued pre-training: predict masked words of raw text; best checkpoint by dev loss."""

    name = "masked_lm"
    Options = MaskedLMOptions
    Data = MaskedLMData
    Encoding = MaskedLMEncoding
    Predictor = MaskedLMModel
    metric_for_best = "loss"
    greater_is_better = False
    score_name = "loss"

    def read(self, path: str, labelled: bool = True) -> list[TextExample]:
        d = self.cfg.data
        return read_documents(path, d.format, d.text_column)

    def normalise(self, splits: dict[str, list], report: dict) -> None:
        hold_out_documents(self.cfg.data, splits, report)

    def label_list(self, train) -> list[str]:
        return []

    def describe(self, splits, labels) -> dict:
        return {"documents": {name: len(ex) for name, ex in splits.items()},
                "characters": {name: sum(len(e.text) for e in ex) for name, ex in splits.items()}}

    def data_summary(self, data: TaskData) -> str:
        return f"{data.report['documents']} documents"

    @classmethod
    def load_pretrained(cls, name_or_path, labels=None, meta=None, revision=None, trust_remote_code=False,
                        announce_new_head=True):
        return load_masked_lm(name_or_path, revision, trust_remote_code, announce_new_head)

    def build_model(self, labels):
        m = self.cfg.model
        if self.cfg.method.name not in ("full", "lora"):
            raise ConfigError(f"method.name {self.cfg.method.name}: task.type masked_lm trains with full or lora")
        return self.load_pretrained(m.name_or_path, None, None, m.revision, m.trust_remote_code)

    def encode(self, tokenizer, examples, labels):
        t, e = self.cfg.task, self.cfg.encoding
        blocks, stats = encode_documents(tokenizer, [ex.text for ex in examples], e.max_length, t.whole_word_mask,
                                         t.chinese_segmentation)
        if not blocks:
            raise TuneforgeError(f"{self.cfg.data.train}: the training documents tokenise to nothing")
        return blocks, [len(b.input_ids) for b in blocks], stats

    def collator(self, tokenizer):
        self._collator = make_collator(tokenizer, self.model_meta([]), self.cfg.training.seed)
        return self._collator

    def callbacks(self) -> list:
        return [MaskingState(self._collator)]

    def loss(self, model, batch: dict):
        return masked_lm_loss(model, batch)

    def tokenizer_inputs(self, examples) -> list:
        return [ex.text for ex in examples]

    def model_meta(self, labels) -> dict:
        t, e = self.cfg.task, self.cfg.encoding
        return {"labels": [], "max_length": e.max_length, "mlm_probability": t.mlm_probability,
                "mask_replace_prob": t.mask_replace_prob, "random_replace_prob": t.random_replace_prob,
                "whole_word_mask": t.whole_word_mask, "chinese_segmentation": t.chinese_segmentation,
                "text_column": self.cfg.data.text_column}

    @classmethod
    def summary(cls, metrics: dict) -> str:
        scores = {k: round(metrics[k]["perplexity"], 3) for k in ("dev", "test") if "perplexity" in metrics.get(k, {})}
        return f"perplexity {scores}" if scores else "no dev or test set scored"

    def write_outputs(self, run_dir: Path, split, examples, predictions, metrics, predictor) -> None:
        return None
