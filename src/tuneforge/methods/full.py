"""Full fine-tuning: every parameter trains; the whole model is saved in Hugging Face format."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from ..schema import StrictModel
from .base import Method


class FullMethodConfig(StrictModel):
    """Every parameter trains."""

    name: Literal["full"] = "full"


class FullFineTuning(Method):
    name = "full"
    Config = FullMethodConfig
    # The training section's own defaults are full fine-tuning's budget.
    DEFAULT_TRAINING: dict = {}
    stores_full_model = True

    def prepare(self, model, cfg):
        for param in model.parameters():
            param.requires_grad_(True)
        return model

    def save(self, model, out_dir: Path, state_dict: dict | None = None) -> None:
        # safetensors is transformers' default and only format we write
        model.save_pretrained(out_dir, state_dict=state_dict)

    def load(self, base_model, folder: Path, cfg):
        return base_model  # artifacts loads the saved folder itself as the model

    def merge(self, model):
        return model
