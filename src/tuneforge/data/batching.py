"""Batches: length-grouped shuffled batches for training, length-sorted batches for inference, and
the collator that pads a batch of word windows to its own longest member (dynamic padding).
"""

from __future__ import annotations

import random
from typing import Sequence

import torch

from ..errors import TuneforgeError
from .tokenizing import IGNORE_INDEX
from .windows import Window


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int, group_by_length: bool = True,
    mega_factor: int = 50,
) -> list[list[int]]:
    """Shuffled batches whose members have similar lengths, so little compute goes to padding.

    As in the Trainer's length-grouped sampler: shuffle, cut into mega-batches of
    ``mega_factor * batch_size``, sort each by length, slice into batches, then shuffle batch
    order. Deterministic in (seed, epoch), which is what makes mid-epoch resume exact.
    """
    rng = random.Random(seed * 100_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if not group_by_length:
        return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    mega = max(batch_size * mega_factor, batch_size)
    batches = []
    for i in range(0, len(order), mega):
        chunk = sorted(order[i: i + mega], key=lambda j: lengths[j], reverse=True)
        batches += [chunk[k: k + batch_size] for k in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


# Predictions (``Predictor.predict``: `tuneforge predict`, the Python API, the server) pad every input
# to its length rounded up to this multiple, and a batch only holds inputs of one padded length. An
# input is then computed at the same sequence length whatever else is in its batch, so under fp32 its
# logits are bit-identical alone, in a file, or in a server's micro-batch (padding to a batch's longest
# member moves them by ~1e-7: softmax sums over a different number of masked keys). Under bf16 the
# kernels may still depend on the batch's row count (oneDNN on AMX, cuBLAS): confidences within a few
# 1e-3, tags and labels the same (docs/serving.md says exactly what holds). Rounding to 8 keeps the
# padding small; tests/test_serving.py checks the identity. Scoring (dev/test metrics, `tuneforge
# eval`) still pads to each batch's longest member, so recorded metrics stay as they were.
INFERENCE_PAD_MULTIPLE = 8


def padded_length(n_tokens: int, multiple: int = INFERENCE_PAD_MULTIPLE) -> int:
    return (n_tokens + multiple - 1) // multiple * multiple


def sorted_batches(lengths: Sequence[int], batch_size: int, pad_multiple: int | None = None) -> list[list[int]]:
    """For inference: batches in length order (order restored by the caller), each of inputs with one
    padded length (see INFERENCE_PAD_MULTIPLE; ``None``: any lengths, padded to the longest)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        # a negative size would give no batches at all, and every word would come back as O
        raise TuneforgeError(f"batch size {batch_size!r}: must be a whole number of at least 1")
    order = sorted(range(len(lengths)), key=lambda j: lengths[j], reverse=True)
    if pad_multiple is None:
        return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    batches: list[list[int]] = []
    for j in order:
        if batches and len(batches[-1]) < batch_size and \
                padded_length(lengths[batches[-1][0]], pad_multiple) == padded_length(lengths[j], pad_multiple):
            batches[-1].append(j)
        else:
            batches.append([j])
    return batches


class Collator:
    """Pads a batch of windows to its own longest member (dynamic padding).

    When a window excludes labels for its ``O`` words (:func:`encode_examples`'s ``mask_unannotated``),
    the batch also holds ``o_excluded``: a (windows x ``n_labels``) boolean mask for the task's loss.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None, n_labels: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.n_labels = n_labels

    def __call__(self, windows: Sequence[Window]) -> dict:
        longest = max(len(w.input_ids) for w in windows)
        if self.pad_to_multiple_of:
            longest = padded_length(longest, self.pad_to_multiple_of)
        n = len(windows)
        input_ids = torch.full((n, longest), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((n, longest), dtype=torch.long)
        labels = torch.full((n, longest), IGNORE_INDEX, dtype=torch.long)
        real_tokens = 0
        for i, w in enumerate(windows):
            k = len(w.input_ids)
            real_tokens += k
            input_ids[i, :k] = torch.tensor(w.input_ids, dtype=torch.long)
            attention[i, :k] = 1
            labels[i, :k] = torch.tensor(w.labels, dtype=torch.long)
        batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels, "n_tokens": real_tokens}
        if any(w.excluded_for_o for w in windows):
            width = self.n_labels or 1 + max(i for w in windows for i in w.excluded_for_o)
            excluded = torch.zeros((n, width), dtype=torch.bool)
            for i, w in enumerate(windows):
                excluded[i, list(w.excluded_for_o)] = True
            batch["o_excluded"] = excluded
        return batch
