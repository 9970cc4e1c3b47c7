"""What every adaptation method provides, and the pieces our own (non-peft) methods share.

A method is one object in :data:`tuneforge.methods.REGISTRY` with:

- ``name`` and ``DEFAULT_TRAINING`` (measured learning rate / epochs that fill unset ``training.*``);
- ``prepare(model, cfg) -> model``: make exactly the intended parameters trainable (wrapping the
  model where the method needs it); the task head always trains;
- ``save(model, out_dir, state_dict=None)``: write only what training changed (the head included);
  ``state_dict``, when given, holds the weights to write (gathered from processes that each hold a
  part of them: FSDP, DeepSpeed ZeRO-3), ``model`` then only says which of them the method keeps;
- ``load(base_model, folder, cfg) -> model``: put saved weights back onto a fresh base model;
- ``merge(model) -> model``: a plain ``transformers`` model with the method folded in, or a
  :class:`~tuneforge.errors.TuneforgeError` when the method cannot be folded (adapters, prompts);
- ``stores_full_model``: True only when ``save`` writes a complete Hugging Face model.

What the task head is, and which PEFT task type wraps the model, is read from the model: a task
whose model the defaults misread (a causal LM's pre-trained ``lm_head`` is no new head; a vision
model has no PEFT task type) declares them on it as ``model.tuneforge_head`` (:class:`HeadSpec`,
set in the task's ``load_pretrained``), so no method needs a branch per task.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import TuneforgeError

# Our own methods (freeze, bitfit, adapter) save the trainable tensors under their names in the
# prepared model; loading prepares a fresh base model the same way and fills them in.
TRAINABLE_WEIGHTS_FILE = "tuneforge_method.safetensors"


@dataclass(frozen=True)
class HeadSpec:
    """What a task says of its model (``model.tuneforge_head``) when the defaults would misread it.

    ``modules``: the top-level modules that are the task head (they train, and are saved, with every
    method); ``[]`` for a model whose output layer is pre-trained (a causal LM's ``lm_head``: it trains
    only when a method's settings name it). ``peft_task_type``: the name of a ``peft.TaskType``
    (``CAUSAL_LM``...) or None for peft's plain ``PeftModel`` (vision models).
    """

    modules: tuple[str, ...] = ()
    peft_task_type: str | None = None


HEAD_ATTRIBUTE = "tuneforge_head"


def declared_head(model: nn.Module) -> HeadSpec | None:
    """The :class:`HeadSpec` the task declared on ``model``, if any."""
    return getattr(model, HEAD_ATTRIBUTE, None)


def head_module_names(model: nn.Module) -> list[str]:
    """Top-level modules outside the pre-trained body (e.g. ``classifier``): the task head.

    ``transformers`` keeps the body under ``model.base_model_prefix`` (``bert``, ``roberta``...);
    everything else a *For...Classification* model adds is head. A task's :class:`HeadSpec` on the
    model says otherwise.
    """
    declared = declared_head(model)
    if declared is not None:
        return list(declared.modules)
    prefix = getattr(model, "base_model_prefix", "")
    names = [n for n, m in model.named_children() if n != prefix and any(True for _ in m.parameters())]
    if not names or not any(n == prefix for n, _ in model.named_children()):
        raise TuneforgeError(
            f"cannot tell the task head from the body of {type(model).__name__} "
            f"(no child named {prefix!r}); use method.name=full for this model"
        )
    return names


def freeze_all_but_head(model: nn.Module) -> list[str]:
    """Freeze every parameter, then unfreeze the head; returns the head's module names."""
    heads = head_module_names(model)
    for param in model.parameters():
        param.requires_grad_(False)
    for name in heads:
        for param in getattr(model, name).parameters():
            param.requires_grad_(True)
    return heads


def transformer_layers(model: nn.Module) -> nn.ModuleList:
    """The body's stack of transformer layers (the ModuleList as long as ``num_hidden_layers``)."""
    n_layers = getattr(model.config, "num_hidden_layers", None)
    body = model.base_model
    for _, module in body.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers:
            return module
    raise TuneforgeError(
        f"cannot find the {n_layers} transformer layers of {type(model).__name__}; "
        "this method does not support the architecture yet"
    )


def trainable_tensors(model: nn.Module, state_dict: dict | None = None) -> dict[str, torch.Tensor]:
    """The trainable parameters' tensors, from ``model`` or from a ``state_dict`` of it."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    source = model.state_dict() if state_dict is None else state_dict
    return {k: v.detach().contiguous().cpu() for k, v in source.items() if k in names}


def save_trainable(model: nn.Module, out_dir: Path, method_name: str, state_dict: dict | None = None) -> None:
    from safetensors.torch import save_file

    save_file(trainable_tensors(model, state_dict), str(Path(out_dir) / TRAINABLE_WEIGHTS_FILE),
              metadata={"method": method_name})


def load_trainable(model: nn.Module, folder: Path) -> nn.Module:
    """Fill the prepared ``model``'s trainable tensors from ``folder``; every one must be there."""
    from safetensors.torch import load_file

    path = Path(folder) / TRAINABLE_WEIGHTS_FILE
    weights = load_file(str(path))
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(weights) != expected:
        missing, extra = sorted(expected - set(weights)), sorted(set(weights) - expected)
        raise TuneforgeError(
            f"{path}: saved weights do not match the method's parameters "
            f"(missing {missing[:3]}, unexpected {extra[:3]}); was the run saved by another tuneforge version?"
        )
    model.load_state_dict(weights, strict=False)
    return model


class Method:
    """The interface described at the top of this module; each method module subclasses it."""

    name = ""
    Config: type | None = None  # the method's config block (a StrictModel with ``name: Literal[...]``), beside it
    DEFAULT_TRAINING: dict = {}  # e.g. {"learning_rate": 1e-3, "epochs": 10}, measured per method
    stores_full_model = False

    def prepare(self, model, cfg):  # pragma: no cover - each method defines it
        raise NotImplementedError

    def save(self, model, out_dir: Path, state_dict: dict | None = None) -> None:  # pragma: no cover
        raise NotImplementedError

    def load(self, base_model, folder: Path, cfg):  # pragma: no cover
        raise NotImplementedError

    def merge(self, model):  # pragma: no cover
        raise NotImplementedError


class SubsetOfBaseMethod(Method):
    """A method that trains a subset of the model's parameters, its own or added ones (freeze,
    bitfit, adapter): saving writes those tensors; loading prepares a fresh base model the same way
    and fills them in. For a subset of the base's own parameters, merging is loading: the result
    already is a plain model.
    """

    def save(self, model, out_dir: Path, state_dict: dict | None = None) -> None:
        save_trainable(model, out_dir, self.name, state_dict)

    def load(self, base_model, folder: Path, cfg):
        return load_trainable(self.prepare(base_model, cfg), folder)

    def merge(self, model):
        return model
