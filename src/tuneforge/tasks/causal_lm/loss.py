"""The next-token loss, projecting only the positions that are trained on.

A causal LM's own forward projects every position onto the vocabulary (SmolLM2: 576 x 49,152, about a
fifth of the model's multiply-adds per token, and a float logits tensor of batch x length x 49,152).
With the loss on assistant answers only, most positions are never scored: here the body runs as usual
and only the hidden states whose next token is a label go through the output layer. The result is the
model's own mean cross-entropy (shifted labels, -100 ignored), which ``tests/test_sft.py`` checks
against ``model(**batch).loss``.
"""

from __future__ import annotations

import torch

from .encoding import IGNORE

# Model types whose logits are the output embedding applied to the body's last hidden state, nothing
# else (no soft-capping or scaling of logits): these run the selective projection.
PLAIN_HEAD_TYPES = {"llama", "mistral", "qwen2", "qwen3", "gpt2", "gpt_neox", "phi3", "olmo2"}
MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids")


def _inner(model):
    """The transformers *ForCausalLM inside ``model`` (itself, or the one a peft wrapper holds)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def predicted_logits(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, targets) of the positions whose next token is a label."""
    targets = batch["labels"][:, 1:]
    selected = targets != IGNORE
    inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
    lm = _inner(model)
    body = getattr(lm, getattr(lm, "base_model_prefix", ""), None)
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    distributed = isinstance(model, torch.nn.parallel.DistributedDataParallel)
    if getattr(lm.config, "model_type", "") not in PLAIN_HEAD_TYPES or body is None or head is None or distributed:
        logits = model(**inputs, use_cache=False).logits  # DDP must see the forward to synchronise gradients
        return logits[:, :-1][selected], targets[selected]
    hidden = body(**inputs, use_cache=False)[0]
    return head(hidden[:, :-1][selected]), targets[selected]


def next_token_loss(model, batch: dict):
    """``(mean cross-entropy over the predicted tokens, None)``: the task's loss for the loop."""
    logits, targets = predicted_logits(model, batch)
    return torch.nn.functional.cross_entropy(logits.float(), targets), None


def predicted_tokens(batch: dict):
    """How many tokens the loss averages over (the loop weighs processes' shares by it)."""
    return (batch["labels"][:, 1:] != IGNORE).sum()


@torch.inference_mode()
def summed_loss(model, batch: dict) -> tuple[float, int]:
    """(summed cross-entropy, tokens) of one batch, for dev/test loss and perplexity."""
    logits, targets = predicted_logits(model, batch)
    return float(torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")), int(targets.numel())
