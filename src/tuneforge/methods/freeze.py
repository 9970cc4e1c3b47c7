"""Freeze the body: train the head only, or the top ``train_top_layers`` transformer layers plus head.

Only the trained tensors are saved (a small safetensors file); loading puts them onto the base model.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..errors import ConfigError
from ..schema import StrictModel
from .base import SubsetOfBaseMethod, freeze_all_but_head, transformer_layers


class FreezeMethodConfig(StrictModel):
    """The head trains, plus the top ``train_top_layers`` transformer layers."""

    name: Literal["freeze"]
    train_top_layers: int = Field(default=0, ge=0, description="0 = head only")


class FreezeBody(SubsetOfBaseMethod):
    name = "freeze"
    Config = FreezeMethodConfig
    # Not yet measured on our data (the other methods' sweeps came first): a starting value from the
    # literature for head-only training; README ("Adaptation methods") says so.
    DEFAULT_TRAINING = {"learning_rate": 1e-3, "epochs": 10}

    def prepare(self, model, cfg):
        freeze_all_but_head(model)
        k = cfg.train_top_layers
        if k:
            layers = transformer_layers(model)
            if k > len(layers):
                raise ConfigError(f"method.train_top_layers: {k} is more than the model's {len(layers)} layers")
            for layer in list(layers)[-k:]:
                for param in layer.parameters():
                    param.requires_grad_(True)
        if not any(p.requires_grad for p in model.parameters()):  # a decoder's lm_head is no new head
            raise ConfigError("method.name freeze: with train_top_layers 0 nothing trains (this model has no new "
                              "head); set method.train_top_layers to the number of top layers to train")
        return model
