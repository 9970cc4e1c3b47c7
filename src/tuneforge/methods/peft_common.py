"""What the ``peft``-backed methods (lora, ia3, prompt) share: task type, wrapping, save and load.

Their weights are saved in PEFT's own format (``adapter_config.json`` + ``adapter_model.safetensors``)
so ``peft.PeftModel.from_pretrained(base, RUN/model)`` loads them without tuneforge. The task head
is listed in ``modules_to_save``: it trains and is saved with the adapter.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .base import Method, head_module_names


def peft_task_type(model):
    from peft import TaskType

    kind = type(model).__name__
    if kind.endswith("ForTokenClassification"):
        return TaskType.TOKEN_CLS
    if kind.endswith("ForSequenceClassification"):
        return TaskType.SEQ_CLS
    raise ConfigError(f"method: peft methods support token and sequence classifiers, not {kind}")


def wrap(model, peft_config):
    """``get_peft_model`` with one-line errors for bad method settings."""
    from peft import get_peft_model

    try:
        return get_peft_model(model, peft_config)
    except ValueError as exc:
        raise ConfigError(f"method: {str(exc).splitlines()[0]}") from None


def save(peft_model, out_dir: Path, state_dict: dict | None = None) -> None:
    extra = {} if state_dict is None else {"state_dict": state_dict}  # peft reads it from its kwargs
    peft_model.save_pretrained(str(out_dir), safe_serialization=True, **extra)


def load(base_model, folder: Path):
    from peft import PeftModel

    return PeftModel.from_pretrained(base_model, str(folder))


def head_modules(model) -> list[str]:
    return head_module_names(model)


class PeftMethod(Method):
    """Save, load and merge for a method whose ``prepare`` returns a ``peft.PeftModel``."""

    def save(self, model, out_dir: Path, state_dict: dict | None = None) -> None:
        save(model, out_dir, state_dict)

    def load(self, base_model, folder: Path, cfg):
        return load(base_model, folder)

    def merge(self, model):
        return model.merge_and_unload()
