"""IA3 (Liu et al., 2022) through ``peft``: learned vectors rescale keys, values and FFN activations."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from ..schema import StrictModel
from . import peft_common


class IA3MethodConfig(StrictModel):
    """Learned rescaling vectors (peft IA3) on keys, values and the FFN."""

    name: Literal["ia3"]
    target_modules: Optional[list[str]] = Field(default=None, description="default: peft's per-architecture list")
    feedforward_modules: Optional[list[str]] = None


class IA3(peft_common.PeftMethod):
    name = "ia3"
    Config = IA3MethodConfig
    # Chosen on dev F1: MiniLM, WNUT-16 train slice of 600 tweets, full dev split, 10 epochs, seed 42
    # (README "Adaptation methods", "How the defaults were chosen"); dev F1 per learning rate:
    # 3e-3 0.351, 1e-2 0.433.
    DEFAULT_TRAINING = {"learning_rate": 1e-2, "epochs": 10}

    def prepare(self, model, cfg):
        from peft import IA3Config

        feedforward = cfg.feedforward_modules
        if cfg.target_modules is not None and feedforward is None:
            feedforward = []  # peft's FFN default only fits its own default targets
        config = IA3Config(
            task_type=peft_common.peft_task_type(model), target_modules=cfg.target_modules,
            feedforward_modules=feedforward, modules_to_save=peft_common.head_modules(model),
        )
        return peft_common.wrap(model, config)
