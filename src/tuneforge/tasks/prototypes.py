"""A classification head initialised as a nearest-prototype classifier (few-shot NER).

Each label's prototype is the mean of the pre-trained encoder's vectors at the positions labelled
with it in the training windows (ProtoBERT / the prototypical networks of Snell et al. 2017, and
"weight imprinting", Qi et al. 2018). With unit-variance isotropic Gaussians around the prototypes,
sharing one variance sigma^2 (pooled over the support tokens), the Bayes classifier is linear:
    logit_c(h) = (mu_c . h - |mu_c|^2 / 2) / sigma^2 + log prior_c

which is exactly a linear head: weight ``mu_c / sigma^2``, bias ``-|mu_c|^2 / (2 sigma^2) + log prior_c``.
So the model stays a plain ``...ForTokenClassification`` (saved, loaded, served, merged like any),
with ``training.epochs: 0`` it *is* nearest-prototype token classification (argmax = the nearest
prototype after the prior), and with training it starts fine-tuning from there instead of from a
random head. A label with no support token (an ``I-X`` whose type only had one-word mentions in the
sample) borrows its type's other prototype with a prior of half a token.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..data.encode import IGNORE_INDEX, Collator, Window, sorted_batches
from ..data.readers import split_tag
from ..errors import TuneforgeError


def head_linear(model, n_labels: int) -> nn.Linear:
    """The head's output layer (``classifier`` for BERT-style models, ``score`` for decoders)."""
    for name in ("classifier", "score"):
        layer = getattr(model, name, None)
        if isinstance(layer, nn.Linear) and layer.out_features == n_labels:
            return layer
    raise TuneforgeError(f"task.head_init prototypes: cannot find the {n_labels}-way output layer of "
                         f"{type(model).__name__}; use task.head_init: random")


@torch.no_grad()
def label_prototypes(model, windows: list[Window], n_labels: int, pad_token_id: int, batch_size: int = 32
                     ) -> tuple[np.ndarray, np.ndarray, float]:
    """(prototypes [labels x hidden], support counts, pooled per-dimension variance) from the encoder's
    last hidden states at the labelled positions of ``windows``."""
    was_training = model.training
    model.eval()
    body = model.base_model
    device = next(model.parameters()).device
    collate = Collator(pad_token_id)
    vectors, targets = [], []
    for batch_idx in sorted_batches([len(w.input_ids) for w in windows], batch_size):
        batch = collate([windows[i] for i in batch_idx])
        hidden = body(input_ids=batch["input_ids"].to(device),
                      attention_mask=batch["attention_mask"].to(device)).last_hidden_state.float().cpu()
        keep = batch["labels"] != IGNORE_INDEX
        vectors.append(hidden[keep])
        targets.append(batch["labels"][keep])
    model.train(was_training)
    h = torch.cat(vectors).numpy().astype(np.float64)
    y = torch.cat(targets).numpy()
    counts = np.bincount(y, minlength=n_labels)
    sums = np.zeros((n_labels, h.shape[1]))
    np.add.at(sums, y, h)
    prototypes = sums / np.maximum(counts, 1)[:, None]
    variance = float(((h - prototypes[y]) ** 2).sum() / (h.shape[0] * h.shape[1]))
    return prototypes, counts, variance


@torch.no_grad()
def init_head_from_prototypes(model, windows: list[Window], labels: list[str], pad_token_id: int) -> dict:
    """Set the head to the nearest-prototype classifier of the module docstring; returns a report."""
    if not windows:
        raise TuneforgeError("task.head_init prototypes: no training windows to build prototypes from")
    n = len(labels)
    prototypes, counts, variance = label_prototypes(model, windows, n, pad_token_id)
    total = counts.sum()
    borrowed = []
    for j, tag in enumerate(labels):
        if counts[j]:
            continue
        prefix, kind = split_tag(tag)
        partner = labels.index(f"{'B' if prefix == 'I' else 'I'}-{kind}") if prefix in ("B", "I") and \
            f"{'B' if prefix == 'I' else 'I'}-{kind}" in labels else None
        if partner is not None and counts[partner]:
            prototypes[j] = prototypes[partner]
        else:
            prototypes[j] = prototypes[counts > 0].mean(axis=0)
        borrowed.append(tag)
    prior = np.where(counts > 0, counts, 0.5) / total
    alpha = 1.0 / max(variance, 1e-12)
    weight = alpha * prototypes
    bias = -alpha * (prototypes ** 2).sum(axis=1) / 2 + np.log(prior)
    layer = head_linear(model, n)
    layer.weight.copy_(torch.as_tensor(weight, dtype=layer.weight.dtype))
    layer.bias.copy_(torch.as_tensor(bias, dtype=layer.bias.dtype))
    return {"support_tokens": {tag: int(c) for tag, c in zip(labels, counts)}, "variance": round(variance, 6),
            "borrowed_prototype": borrowed, "scale": round(alpha, 6), "log_prior_min": round(math.log(prior.min()), 3)}
