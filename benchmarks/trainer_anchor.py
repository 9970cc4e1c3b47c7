"""The anchor: the Hugging Face Trainer recipe of the `run_ner` example, reproduced faithfully.

- tokenize pre-split words with truncation, no padding (run_ner's defaults: ``padding=False``,
  ``label_all_tokens=False``): the label goes on the first sub-word, -100 on the rest;
- ``DataCollatorForTokenClassification`` pads each batch;
- ``Trainer`` with default settings apart from the hyperparameters the comparison shares
  (learning rate, batch size, epochs, seed, warmup, weight decay);
- predictions: argmax per token, read at each word's first sub-word (as run_ner's
  ``compute_metrics`` does after dropping -100 positions).

The data split is tuneforge's reader + split (same file, same seed), so both sides see the same
sentences; what is compared is everything after that.
"""

from __future__ import annotations

import math
import time

import numpy as np


def run_anchor(model_path: str, splits: dict, labels: list[str], *, learning_rate: float, batch_size: int,
               epochs: int, seed: int, warmup_ratio: float, weight_decay: float, max_length: int,
               output_dir: str, eval_batch_size: int = 64) -> dict:
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    set_seed(seed)
    label2id = {t: i for i, t in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForTokenClassification.from_pretrained(
        model_path, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id
    )

    def to_dataset(examples):
        return Dataset.from_dict({"tokens": [e.words for e in examples],
                                  "ner_tags": [[label2id[t] for t in e.tags] for e in examples]})

    def tokenize_and_align_labels(batch):  # run_ner.py, label_all_tokens=False
        enc = tokenizer(batch["tokens"], padding=False, truncation=True, max_length=max_length,
                        is_split_into_words=True)
        all_labels = []
        for i, tags in enumerate(batch["ner_tags"]):
            previous, ids = None, []
            for word in enc.word_ids(batch_index=i):
                ids.append(-100 if word is None or word == previous else tags[word])
                previous = word
            all_labels.append(ids)
        enc["labels"] = all_labels
        return enc

    train_ds = to_dataset(splits["train"]).map(tokenize_and_align_labels, batched=True, remove_columns=["tokens", "ner_tags"])
    test_ds = to_dataset(splits["test"]).map(tokenize_and_align_labels, batched=True, remove_columns=["tokens", "ner_tags"])
    args = TrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=batch_size, per_device_eval_batch_size=eval_batch_size,
        learning_rate=learning_rate, num_train_epochs=epochs, seed=seed,
        warmup_steps=int(warmup_ratio * math.ceil(len(train_ds) / batch_size) * epochs),
        weight_decay=weight_decay, save_strategy="no", eval_strategy="no", report_to=[], logging_strategy="no",
        disable_tqdm=True, use_cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(model=model, args=args, train_dataset=train_ds,
                      data_collator=DataCollatorForTokenClassification(tokenizer))
    started = time.perf_counter()
    out = trainer.train()
    train_seconds = time.perf_counter() - started
    real_tokens = sum(len(ids) for ids in train_ds["input_ids"]) * epochs

    started = time.perf_counter()
    logits = trainer.predict(test_ds).predictions
    predict_seconds = time.perf_counter() - started
    preds = np.argmax(logits, axis=-1)
    pred_tags = []
    for row, label_row in zip(preds, test_ds["labels"]):
        pred_tags.append([labels[p] for p, lab in zip(row, label_row) if lab != -100])
    # truncation can drop words: those count as "O" predictions, as a user of the recipe would get
    for i, ex in enumerate(splits["test"]):
        pred_tags[i] = pred_tags[i] + ["O"] * (len(ex.words) - len(pred_tags[i]))
    return {
        "train_seconds": train_seconds,
        "train_samples": len(train_ds) * epochs,
        "train_tokens": real_tokens,
        "train_runtime_reported": out.metrics.get("train_runtime"),
        "predict_seconds": predict_seconds,
        "test_pred_tags": pred_tags,
    }
