"""Adaptation methods behind one registry: one module per method (see :mod:`.base` for the interface).

A method says which parameters train (``prepare``), how the trained weights are written into a
run's ``model/`` folder (``save``: only what changed), how they go back onto the base model
(``load``) and how they fold into a plain model (``merge``). Every method trains and saves the
task head. ``DEFAULT_TRAINING`` holds each method's measured learning rate and epochs.
"""

from __future__ import annotations

from .adapter import BottleneckAdapters
from .bitfit import BitFit
from .freeze import FreezeBody
from .full import FullFineTuning
from .ia3 import IA3
from .lora import LoRA
from .prompt import PromptLearning

REGISTRY = {
    method.name: method
    for method in (FullFineTuning(), FreezeBody(), LoRA(), IA3(), PromptLearning(), BottleneckAdapters(), BitFit())
}


def register_method(method):
    """Add a method object (its class defines ``name``, ``Config`` and the interface of :mod:`.base`);
    its ``name`` becomes a valid ``method.name``, its ``Config`` the shape of that block."""
    if not method.name:
        raise ValueError(f"{type(method).__name__} has no name")
    REGISTRY[method.name] = method
    return method


def get_method(name: str):
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; choose from {', '.join(sorted(REGISTRY))}") from None


def method_training_defaults(name: str) -> dict:
    """The method's default ``training`` values; empty for an unknown name (validation reports it)."""
    method = REGISTRY.get(name)
    return dict(method.DEFAULT_TRAINING) if method is not None else {}


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts.

    peft keeps a frozen copy of each head it trains (``original_module``); it is not part of the
    model being trained, so it is not counted.
    """
    trainable = total = 0
    for name, param in model.named_parameters():
        if ".original_module." in name:
            continue
        total += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    return trainable, total
