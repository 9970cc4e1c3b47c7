"""What a task hands the loop, and the collator contract: the two things the loop reads of a task.

**The collator contract.** ``LoopTask.collate(items)`` returns one training batch as a dict:

- every key but the two below is a model input, passed as ``model(**batch)`` (or to the task's
  ``compute_loss(model, batch)``), ``labels`` included; callbacks see the same dict;
- ``n_tokens`` (required): how many real tokens (or other units of throughput) the batch holds, an int
  or a tensor to sum; counted for ``tokens/s`` and ``training.tokens``, never passed to the model;
- ``n_rows`` (optional): how many examples the batch holds, counted for ``training.samples``; by default
  the rows of ``input_ids``, so a task whose model reads no ``input_ids`` (pixels, say) must give it.

The loop pops ``n_tokens`` and ``n_rows`` (:func:`pop_counts`) before the forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

N_TOKENS = "n_tokens"
N_ROWS = "n_rows"


@dataclass
class LoopTask:
    """What the task brings to the loop.

    ``collate(items) -> batch`` (the contract above); ``save_best(model, state_dict=None)`` saves the best
    model (``state_dict``: the gathered weights when they are split); ``evaluate(model) -> metrics`` of
    dev, None without a dev set; ``compute_loss(model, batch) -> (loss, outputs)`` replaces the model's
    own loss (class weights, say); ``loss_units(batch)``: what the loss averages over (default: the
    rows); the best epoch is the one with the best dev ``metric_for_best`` (the greatest, or the least
    with ``greater_is_better=False``).
    """

    collate: Callable[[list], dict]
    save_best: Callable[..., None]
    evaluate: Callable[[object], dict] | None = None
    compute_loss: Callable[[object, dict], tuple[torch.Tensor, object]] | None = None
    loss_units: Callable[[dict], object] | None = None
    metric_for_best: str = "f1"
    greater_is_better: bool = True


def pop_counts(batch: dict) -> tuple[int, int]:
    """(tokens, rows) of a collated batch, taking ``n_tokens`` and ``n_rows`` out of it (the contract above)."""
    n_tokens = batch.pop(N_TOKENS)
    n_tokens = int(n_tokens.sum()) if torch.is_tensor(n_tokens) else int(n_tokens)
    n_rows = batch.pop(N_ROWS, None)
    return n_tokens, int(n_rows) if n_rows is not None else batch["input_ids"].shape[0]


def batch_rows(batch: dict) -> int:
    """The rows of a batch whose counts were popped: the first dimension of its first tensor input."""
    return next(v for v in batch.values() if torch.is_tensor(v)).shape[0]
