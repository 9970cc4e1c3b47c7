"""Tasks behind one registry: one module per task (the interface is in :mod:`.base`).

``task.type`` in a config picks the task; ``tuneforge.json`` in a saved model names it again, so a
run folder loads as its task's predictor. Adding a task is one module and one line below (or
:func:`register_task` from outside the package, as the tests do).
"""

from __future__ import annotations

from .base import Task, TaskData
from .causal_lm import SFT, CausalLM
from .generative_sft import GenerativeClassification, GenerativeNER
from .in_context import InContextClassification
from .masked_lm import MaskedLM
from .predictor import Predictor
from .preference import Preference
from .setfit import SetFitClassification
from .text_classification import TextClassification
from .token_classification import TokenClassification
from .zero_shot import ZeroShotClassification
from ..errors import ConfigError

REGISTRY: dict[str, type[Task]] = {
    task.name: task
    for task in (TokenClassification, TextClassification, MaskedLM, ZeroShotClassification, SetFitClassification,
                 CausalLM, SFT, Preference, InContextClassification, GenerativeNER, GenerativeClassification)
}


def register_task(task: type[Task]) -> type[Task]:
    """Add a task class (usable as a decorator); its ``name`` becomes a valid ``task.type``."""
    if not task.name:
        raise ValueError(f"{task.__name__} has no name")
    REGISTRY[task.name] = task
    return task


def get_task(name: str) -> type[Task]:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown task type {name!r}; choose one of {', '.join(REGISTRY)}") from None


def make_task(cfg) -> Task:
    """The task of a validated config, ready for the driver."""
    return get_task(cfg.task.type)(cfg)


__all__ = ["Predictor", "REGISTRY", "Task", "TaskData", "get_task", "make_task", "register_task"]
