"""Ready for other kinds of task: two tasks defined here, trained end to end through ``tuneforge.train``
and predicted through ``tuneforge.load``, without a change to the driver, the loop or the methods.

- **next token** on a tiny random Llama built here, trained with LoRA: the task declares its model's head
  (:class:`tuneforge.methods.base.HeadSpec`: no new head, peft task type ``CAUSAL_LM``), so the
  pre-trained (tied) ``lm_head`` does not train; it memorises the continuations of a few sentences.
- **image classification** on random pixel tensors with a tiny random ViT: no tokenizer at all (the
  task's ``load_tokenizer`` gives None), ``pixel_values`` instead of ``input_ids``, and the collator's
  ``n_rows`` says how many examples a batch holds (:mod:`tuneforge.training.batch`).
"""

from __future__ import annotations

import json
import math
from typing import ClassVar

import numpy as np
import pytest
import torch

import tuneforge
from tuneforge.methods.base import HEAD_ATTRIBUTE, HeadSpec
from tuneforge.schema import TaskOptions
from tuneforge.tasks import REGISTRY, register_task
from tuneforge.tasks.base import Task
from tuneforge.tasks.predictor import Predictor

from conftest import tiny_config


class _Stats:
    def __init__(self, text: str):
        self.text = text

    def describe(self) -> str:
        return self.text


def _read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]


# ---------------------------------------------------------------------------------------------
# Next token: a causal LM


class NextTokenOptions(TaskOptions):
    type: str = "next_token"


class NextTokenModel(Predictor):
    def read(self, path, format="auto", labelled=True):
        return _read_jsonl(path)

    def predict(self, inputs, batch_size=64):
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        out = []
        with torch.inference_mode():
            for text in texts:
                ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
                logits = self.model(input_ids=ids).logits[0, -1]
                out.append({"text": text, "next": self.tokenizer.convert_ids_to_tokens(int(logits.argmax()))})
        return out

    def evaluate_examples(self, examples, batch_size=64):
        losses = []
        with torch.inference_mode():
            for ex in examples:
                ids = self.tokenizer(ex["text"], add_special_tokens=False, return_tensors="pt")["input_ids"]
                losses.append(float(self.model(input_ids=ids, labels=ids).loss))
        loss = sum(losses) / len(losses)
        return {"loss": loss, "perplexity": math.exp(loss)}, f"loss {loss:.4f}\n", losses


class NextToken(Task):
    name = "next_token"
    Options = NextTokenOptions
    Predictor = NextTokenModel
    metric_for_best: ClassVar[str] = "loss"
    greater_is_better: ClassVar[bool] = False
    score_name = "loss"

    def read(self, path, labelled=True):
        return _read_jsonl(path)

    def label_list(self, train):
        return []  # a language model predicts tokens, not labels

    @classmethod
    def load_pretrained(cls, name_or_path, labels=None, meta=None, revision=None, trust_remote_code=False,
                        announce_new_head=True):
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(name_or_path)
        setattr(model, HEAD_ATTRIBUTE, HeadSpec(modules=(), peft_task_type="CAUSAL_LM"))
        return model

    def encode(self, tokenizer, examples, labels):
        items = [dict(input_ids=tokenizer(e["text"], add_special_tokens=False)["input_ids"]) for e in examples]
        return items, [len(x["input_ids"]) for x in items], _Stats(f"{len(items)} texts")

    def collator(self, tokenizer):
        def collate(items):
            width = max(len(x["input_ids"]) for x in items)
            ids = torch.full((len(items), width), tokenizer.pad_token_id)
            mask = torch.zeros((len(items), width), dtype=torch.long)
            for row, x in enumerate(items):
                ids[row, :len(x["input_ids"])] = torch.tensor(x["input_ids"])
                mask[row, :len(x["input_ids"])] = 1
            labels = ids.masked_fill(mask == 0, -100)  # the model shifts them: each position predicts the next
            return {"input_ids": ids, "attention_mask": mask, "labels": labels, "n_tokens": int(mask.sum())}
        return collate


def build_tiny_llama(folder, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                         initializer_range=0.5)  # embeddings long enough for a norm-capped hidden state to pick a token
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


TEXTS = ["mary visited paris today", "john went to london", "google and apple met in berlin"]


@pytest.fixture()
def next_token_task():
    register_task(NextToken)
    yield NextToken
    REGISTRY.pop(NextToken.name)


def test_a_next_token_task_on_a_tiny_llama_trains_with_lora_and_leaves_the_lm_head_alone(
        next_token_task, tiny_tokenizer, tiny_bert, tmp_path):
    llama = build_tiny_llama(tmp_path / "llama", tiny_tokenizer)
    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS * 4), encoding="utf-8")
    cfg = tiny_config(tiny_bert, tmp_path, tmp_path / "run", epochs=30, batch_size=4, learning_rate=1e-2)
    cfg.update(task={"type": "next_token"}, model={"name_or_path": str(llama)},
               data={"train": str(data), "dev": str(data), "test": str(data)},
               method={"name": "lora", "r": 8, "dropout": 0.0})

    result = tuneforge.train(cfg)

    first, best = result.metrics["history"][0]["dev_loss"], result.metrics["test"]["loss"]
    assert best < 0.25 * first  # it learned the texts

    model = tuneforge.load(result.run_dir)
    assert isinstance(model, NextTokenModel)
    assert [row["next"] for row in model.predict(["mary visited", "john went to"])] == ["paris", "london"]
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(llama))
    lm_head = model.model.get_output_embeddings().weight
    assert torch.equal(lm_head, base.get_output_embeddings().weight)  # bit-identical: it did not train
    lora = {n: p.numel() for n, p in model.model.named_parameters() if "lora_" in n}
    assert lora and not any("lm_head" in n or "embed" in n for n in lora)
    assert result.metrics["parameters"]["trainable"] == sum(lora.values())  # the adapters and nothing else


# ---------------------------------------------------------------------------------------------
# Image classification: no tokenizer


class ImageOptions(TaskOptions):
    type: str = "image_classification"


class ImageClassifier(Predictor):
    def read(self, path, format="auto", labelled=True):
        return _read_jsonl(path)

    def _predict_ids(self, pixels: list) -> list[int]:
        with torch.inference_mode():
            logits = self.model(pixel_values=torch.tensor(np.array(pixels), dtype=torch.float32)).logits
        return logits.argmax(-1).tolist()

    def predict(self, inputs, batch_size=64):
        return [{"label": self.labels[i]} for i in self._predict_ids([x["pixels"] for x in inputs])]

    def evaluate_examples(self, examples, batch_size=64):
        predicted = [self.labels[i] for i in self._predict_ids([x["pixels"] for x in examples])]
        accuracy = sum(p == x["label"] for p, x in zip(predicted, examples)) / len(examples)
        return {"f1": accuracy, "accuracy": accuracy}, f"accuracy {accuracy:.4f}\n", predicted


class ImageClassification(Task):
    name = "image_classification"
    Options = ImageOptions
    Predictor = ImageClassifier

    def read(self, path, labelled=True):
        return _read_jsonl(path)

    def label_list(self, train):
        return sorted({x["label"] for x in train})

    def load_tokenizer(self):
        return None  # pixels in, no text

    @classmethod
    def load_saved_tokenizer(cls, folder, full_model, trust_remote_code=False):
        return None

    @classmethod
    def load_pretrained(cls, name_or_path, labels=None, meta=None, revision=None, trust_remote_code=False,
                        announce_new_head=True):
        from transformers import ViTForImageClassification

        labels = labels if labels is not None else meta["labels"]
        model = ViTForImageClassification.from_pretrained(
            name_or_path, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)})
        setattr(model, HEAD_ATTRIBUTE, HeadSpec(modules=("classifier",), peft_task_type=None))
        return model

    def encode(self, tokenizer, examples, labels):
        items = [{"pixel_values": torch.tensor(x["pixels"], dtype=torch.float32), "labels": labels.index(x["label"])}
                 for x in examples]
        return items, [1] * len(items), _Stats(f"{len(items)} images")

    def collator(self, tokenizer):
        def collate(items):
            return {"pixel_values": torch.stack([x["pixel_values"] for x in items]),
                    "labels": torch.tensor([x["labels"] for x in items]),
                    "n_tokens": len(items), "n_rows": len(items)}
        return collate


def build_tiny_vit(folder):
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(image_size=8, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=4, intermediate_size=64)
    torch.manual_seed(0)
    ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    return folder


@pytest.fixture()
def image_task():
    register_task(ImageClassification)
    yield ImageClassification
    REGISTRY.pop(ImageClassification.name)


def test_an_image_task_with_a_tiny_vit_and_no_tokenizer_trains_and_predicts(image_task, tiny_bert, tmp_path):
    vit = build_tiny_vit(tmp_path / "vit")
    rng = np.random.default_rng(0)
    rows = [{"pixels": (rng.normal(size=(3, 8, 8)) + (1.5 if k % 2 else -1.5)).round(3).tolist(),
             "label": "bright" if k % 2 else "dark"} for k in range(24)]
    data = tmp_path / "images.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = tiny_config(tiny_bert, tmp_path, tmp_path / "run", epochs=8, batch_size=8, learning_rate=3e-3)
    cfg.update(task={"type": "image_classification"}, model={"name_or_path": str(vit)},
               data={"train": str(data), "dev": str(data), "test": str(data)})

    result = tuneforge.train(cfg)

    assert result.metrics["test"]["accuracy"] == 1.0
    assert result.metrics["training"]["samples"] == 8 * 24  # n_rows counted every image of every epoch
    assert not (result.run_dir / "model" / "tokenizer_config.json").exists()
    model = tuneforge.load(result.run_dir)
    assert isinstance(model, ImageClassifier) and model.tokenizer is None
    assert [r["label"] for r in model.predict(rows[:4])] == ["dark", "bright", "dark", "bright"]
