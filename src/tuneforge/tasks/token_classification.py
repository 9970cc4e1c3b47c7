"""Token classification (NER): labels, word-level inference over windows, decoding, metrics."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..data.encode import Collator, Window, encode_examples, sorted_batches
from ..data.readers import TokenExample, split_tag
from ..evaluation.metrics import entity_scores, extract_entities, format_entity_report, token_accuracy, token_report


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


def autocast_context(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


@torch.inference_mode()
def word_logprobs(
    model,
    windows: Sequence[Window],
    n_examples: int,
    n_words: Sequence[int],
    pad_token_id: int,
    batch_size: int = 64,
    precision: str = "fp32",
) -> list[np.ndarray]:
    """Per example, a (words x labels) array of log-probabilities, merged back from its windows.

    Each word is read from the one window that owns it (see :mod:`tuneforge.data.encode`), so
    every word gets exactly one prediction however the input was split.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    n_labels = model.config.num_labels
    out = [np.zeros((n, n_labels), dtype=np.float32) for n in n_words]
    collate = Collator(pad_token_id)
    for batch_idx in sorted_batches([len(w.input_ids) for w in windows], batch_size):
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
) -> list[WordPredictions]:
    """Word-level tags for every example (empty examples get empty predictions)."""
    nonempty = [i for i, ex in enumerate(examples) if ex.words]
    subset = [examples[i] for i in nonempty]
    windows, _ = encode_examples(subset, tokenizer, None, max_length, stride, label_position=label_position)
    logps = word_logprobs(
        model, windows, len(subset), [len(ex.words) for ex in subset], tokenizer.pad_token_id,
        batch_size=batch_size, precision=precision,
    )
    masks = allowed_transitions(labels)
    results = [WordPredictions([], []) for _ in examples]
    for i, lp in zip(nonempty, logps):
        results[i] = decode(lp, labels, decode_mode, masks)
    return results


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
