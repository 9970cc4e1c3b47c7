"""The reference model of DPO and IPO: the model as training started, without a second copy where
the method allows it.

=======================  ===================================================  ====================
kind                     how                                                  extra memory
=======================  ===================================================  ====================
``adapter_disabled``     an adapter method (LoRA, DoRA, IA3) trained from the  none
                         base: the same model under peft's ``disable_adapter``
``starting_weights``     any method but full, continued from another run      2x the trained
                         (``model.init_from``) or training the base's own      tensors
                         tensors (freeze, BitFit): those tensors' starting
                         values are swapped in for the reference forward
``frozen_copy``          full fine-tuning: a frozen copy of the model         1 model
``precomputed``          ``task.reference: precompute``: every pair scored    none (2 floats a pair)
                         once by the starting model before training
=======================  ===================================================  ====================

The reference forward runs in eval mode (no dropout) under ``no_grad``; ``tests/test_preference.py``
checks that the adapter-disabled reference equals a frozen copy's log-probabilities.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import torch

from .loss import Logps, sequence_logps


def unwrap(model):
    """The model inside a DistributedDataParallel wrapper (the reference forward needs no gradient sync)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


@contextmanager
def evaluating(model):
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


class Reference:
    kind = ""

    def logps(self, model, batch: dict) -> Logps:  # pragma: no cover
        raise NotImplementedError

    def describe(self) -> dict:
        return {"kind": self.kind}


class AdapterDisabled(Reference):
    kind = "adapter_disabled"

    def logps(self, model, batch: dict) -> Logps:
        inner = unwrap(model)
        with torch.no_grad(), inner.disable_adapter(), evaluating(inner):
            return sequence_logps(inner, batch)


class FrozenCopy(Reference):
    kind = "frozen_copy"

    def __init__(self, model):
        self.model = copy.deepcopy(unwrap(model)).eval().requires_grad_(False)

    def logps(self, model, batch: dict) -> Logps:
        device = batch["input_ids"].device
        if next(self.model.parameters()).device != device:  # copied before the loop placed the policy
            self.model.to(device)
        with torch.no_grad():
            return sequence_logps(self.model, batch)


class StartingWeights(Reference):
    """The trained tensors' starting values, swapped in for each reference forward and back after it
    (bit for bit: the current values are copied aside, not recomputed).

    Two things make the swap safe. Autocast caches its low-precision copy of each trainable weight for
    the rest of the autocast region, which would hand the reference forward the current weights (and
    the policy forward the reference's): the cache is cleared on each side of the swap. And the swap
    writes the tensors in place, which autograd refuses for tensors an earlier forward saved: the task
    runs the reference forward before the policy's."""

    kind = "starting_weights"

    def __init__(self, model):
        self.start = {name: p.detach().clone() for name, p in unwrap(model).named_parameters() if p.requires_grad}

    @contextmanager
    def swapped(self, model):
        params = dict(model.named_parameters())
        for name, value in self.start.items():  # taken before the loop placed the model on its device
            if value.device != params[name].device:
                self.start[name] = value.to(params[name].device)
        with torch.no_grad():
            current = {name: params[name].detach().clone() for name in self.start}
            for name, value in self.start.items():
                params[name].copy_(value)
        torch.clear_autocast_cache()
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, value in current.items():
                    params[name].copy_(value)
            torch.clear_autocast_cache()

    def logps(self, model, batch: dict) -> Logps:
        inner = unwrap(model)
        with torch.no_grad(), self.swapped(inner), evaluating(inner):
            return sequence_logps(inner, batch)


class Precomputed(Reference):
    """Reference log-probabilities computed before training: the training pairs carry theirs
    (``reference_logps`` in the batch); dev and test batches are looked up by their examples."""

    kind = "precomputed"

    def __init__(self, seconds: float = 0.0):
        self.seconds = seconds
        self.table: dict[int, tuple[float, float]] = {}  # id(dev/test example) -> (chosen, rejected)

    def logps(self, model, batch: dict) -> Logps:
        tokens = (batch["labels"][:, 1:] != -100).sum(dim=1)
        return Logps(batch["reference_logps"].to(tokens.device), tokens)

    def describe(self) -> dict:
        return {"kind": self.kind, "seconds": round(self.seconds, 2)}


def choose_reference(model, method: str, continued: bool) -> Reference:
    """The reference of the table above for a model prepared by ``method`` (``continued``: from ``model.init_from``)."""
    inner = unwrap(model)
    if method == "full":
        return FrozenCopy(inner)
    if hasattr(inner, "disable_adapter") and not continued:
        return AdapterDisabled()
    return StartingWeights(inner)
