"""Text classification's inference over long texts: per-text model outputs with windows pooled,
logits, sentence embeddings, and probabilities."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ...data.encode import SequenceCollator, encode_texts, sorted_batches
from ...data.readers import TextExample
from ...runtime.precision import autocast_context


def model_inputs_take_token_types(tokenizer) -> bool:
    return "token_type_ids" in getattr(tokenizer, "model_input_names", [])


@torch.inference_mode()
def per_text_outputs(
    model, forward, tokenizer, examples: Sequence[TextExample], meta: dict, width: int, batch_size: int = 64,
    precision: str = "fp32", pad_multiple: int | None = None,
) -> np.ndarray:
    """(texts x ``width``) outputs of ``forward(model, batch)`` (logits, embeddings...), encoded as the
    model was trained (``meta``: max_length, long_text, stride...); a text read in several windows gets
    its windows' outputs pooled (``meta["window_pooling"]``: mean or max). ``pad_multiple``: batch by
    padded length (``INFERENCE_PAD_MULTIPLE``: results independent of the other texts)."""
    inputs, _ = encode_texts(
        examples, tokenizer, None, meta["max_length"], meta["long_text"], meta["stride"], meta["head_fraction"]
    )
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    per_input = np.zeros((len(inputs), width), dtype=np.float32)
    collate = SequenceCollator(tokenizer.pad_token_id, model_inputs_take_token_types(tokenizer),
                               pad_to_multiple_of=pad_multiple)
    for batch_idx in sorted_batches([len(x.input_ids) for x in inputs], batch_size, pad_multiple):
        batch = collate([inputs[i] for i in batch_idx])
        batch.pop("n_tokens")
        with autocast_context(device, precision):
            outputs = forward(model, {k: v.to(device) for k, v in batch.items()})
        per_input[batch_idx] = outputs.float().cpu().numpy()
    model.train(was_training)
    out = np.zeros((len(examples), width), dtype=np.float32)
    owner = np.array([x.example for x in inputs], dtype=np.int64)
    pool = np.maximum.reduceat if meta.get("window_pooling") == "max" else np.add.reduceat
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]]) if len(owner) else np.array([], dtype=np.int64)
    if len(owner):
        pooled = pool(per_input, starts, axis=0)
        if meta.get("window_pooling") != "max":
            pooled /= np.diff(np.r_[starts, len(owner)])[:, None]
        out[owner[starts]] = pooled
    return out


def stack_rows(rows: Sequence[np.ndarray], n_labels: int) -> np.ndarray:
    """Per-text rows (as gathered from several processes) back into one (texts x labels) array."""
    return np.stack(rows).astype(np.float32, copy=False) if len(rows) else np.zeros((0, n_labels), np.float32)


def text_logits(
    model, tokenizer, examples: Sequence[TextExample], meta: dict, batch_size: int = 64, precision: str = "fp32",
    pad_multiple: int | None = None,
) -> np.ndarray:
    """(texts x labels) logits of a sequence classifier; a text read in several windows gets its windows' logits pooled."""
    return per_text_outputs(model, lambda m, batch: m(**batch).logits, tokenizer, examples, meta,
                            model.config.num_labels, batch_size, precision, pad_multiple)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of the token vectors under the attention mask: how sentence-transformers models
    (all-MiniLM-L6-v2 among them) are trained to embed a text."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def sentence_embeddings(encoder, tokenizer, examples: Sequence[TextExample], meta: dict, batch_size: int = 64,
                        precision: str = "fp32", pad_multiple: int | None = None) -> np.ndarray:
    """L2-normalised mean-pooled embeddings of ``encoder`` (an ``AutoModel``), one row per text."""
    def forward(model, batch):
        return torch.nn.functional.normalize(mean_pool(model(**batch).last_hidden_state, batch["attention_mask"]), dim=-1)

    out = per_text_outputs(encoder, forward, tokenizer, examples, meta, encoder.config.hidden_size, batch_size, precision,
                           pad_multiple)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)  # pooled windows: unit length again


def probabilities_from_logits(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    t = torch.from_numpy(logits)
    return (torch.sigmoid(t) if multi_label else torch.softmax(t, dim=-1)).numpy()
