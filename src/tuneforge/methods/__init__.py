"""Adaptation methods behind one registry.

A method says which parameters train (``prepare``) and how the trained weights are written into a
run's ``model/`` folder (``save``). Every method keeps the task head trainable and saved.
"""

from __future__ import annotations

from .full import FullFineTuning

REGISTRY = {method.name: method for method in (FullFineTuning(),)}


def get_method(name: str):
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; choose from {', '.join(sorted(REGISTRY))}") from None


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
