"""What the ``peft``-backed methods (lora, ia3, prompt) share: task type, wrapping, save and load.

Their weights are saved in PEFT's own format (``adapter_config.json`` + ``adapter_model.safetensors``)
so ``peft.PeftModel.from_pretrained(base, RUN/model)`` loads them without tuneforge. The task head
is listed in ``modules_to_save``: it trains and is saved with the adapter.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path

from ..data.vocab import CONFIG_KEY
from ..errors import ConfigError
from .base import Method, declared_head, head_module_names


def peft_task_type(model):
    from peft import TaskType

    declared = declared_head(model)
    if declared is not None:
        return TaskType[declared.peft_task_type] if declared.peft_task_type else None
    kind = type(model).__name__
    if kind.endswith("ForTokenClassification"):
        return TaskType.TOKEN_CLS
    if kind.endswith("ForSequenceClassification"):
        return TaskType.SEQ_CLS
    if kind.endswith("ForMaskedLM"):
        return None  # peft has no masked-LM task type; the plain PeftModel passes everything through
    raise ConfigError(f"method: peft methods support token and sequence classifiers and masked LMs, not {kind}")


@contextmanager
def _peft_model_built():
    """peft (0.21) reads ``model.is_gradient_checkpointing``, which transformers 5 deprecates with a
    FutureWarning at every wrap and load: a warning for peft to fix, not our users; that one is held."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def wrap(model, peft_config):
    """``get_peft_model`` with one-line errors for bad method settings."""
    from peft import get_peft_model

    try:
        with _peft_model_built():
            return get_peft_model(model, peft_config)
    except ValueError as exc:
        raise ConfigError(f"method: {str(exc).splitlines()[0]}") from None


def save(peft_model, out_dir: Path, state_dict: dict | None = None) -> None:
    extra = {} if state_dict is None else {"state_dict": state_dict}  # peft reads it from its kwargs
    base = getattr(peft_model.peft_config.get("default"), "base_model_name_or_path", None)
    if base and Path(base).is_dir() and not (Path(base) / "config.json").exists():
        # a GGUF base folder has no config.json: peft then warns and keeps the embeddings out, as here
        extra["save_embedding_layers"] = False
    peft_model.save_pretrained(str(out_dir), safe_serialization=True, **extra)


def load(base_model, folder: Path):
    from peft import PeftModel

    with _peft_model_built():
        return PeftModel.from_pretrained(base_model, str(folder))


def head_modules(model) -> list[str]:
    """The task head, which trains and is saved with the adapter.

    A head that holds output embeddings tied to the input embeddings (a masked-LM head's decoder) is
    listed by its other parts (``cls.predictions.transform``): peft would copy the tied matrix,
    untying it and training the whole vocabulary projection. The rows that must train, those of added
    tokens, do so through ``trainable_token_indices`` (:func:`new_token_indices`); the head's
    per-token output bias stays as it is.
    """
    names = head_module_names(model)
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is None or output.weight is not model.get_input_embeddings().weight:
        return names
    parts: list[str] = []

    def walk(prefix: str, module) -> None:
        if module is output:
            return
        if not any(m is output for m in module.modules()):
            parts.append(prefix)
            return
        for name, child in module.named_children():
            walk(f"{prefix}.{name}", child)

    for name in names:
        walk(name, getattr(model, name))
    return parts


def new_token_indices(model) -> list[int]:
    """Ids of tokens a vocabulary extension added (``tuneforge vocab extend`` records the original
    vocabulary size in config.json): their embedding rows start untrained, so they must train."""
    record = getattr(model.config, CONFIG_KEY, None) or {}
    base = record.get("base_vocab_size")
    rows = model.get_input_embeddings().weight.shape[0]
    return list(range(base, rows)) if base is not None and base < rows else []


class PeftMethod(Method):
    """Save, load and merge for a method whose ``prepare`` returns a ``peft.PeftModel``."""

    def save(self, model, out_dir: Path, state_dict: dict | None = None) -> None:
        save(model, out_dir, state_dict)

    def load(self, base_model, folder: Path, cfg):
        return load(base_model, folder)

    def merge(self, model):
        return model.merge_and_unload()
