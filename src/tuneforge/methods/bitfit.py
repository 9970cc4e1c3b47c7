"""BitFit (Ben Zaken et al., 2022): only the bias terms of the body train, plus the head.

``peft`` has no BitFit, so it is written here: it needs nothing but ``requires_grad`` flags. The
saved file holds the biases and the head; merging is loading them, so the export is a plain model.
"""

from __future__ import annotations

from typing import Literal

from ..schema import StrictModel
from .base import SubsetOfBaseMethod, freeze_all_but_head


class BitFitMethodConfig(StrictModel):
    """Bias terms (and the head) only."""

    name: Literal["bitfit"]


class BitFit(SubsetOfBaseMethod):
    name = "bitfit"
    Config = BitFitMethodConfig
    # Chosen on dev F1: MiniLM, WNUT-16 train slice of 600 tweets, full dev split, 10 epochs, seed 42
    # (README "Adaptation methods", "How the defaults were chosen"); dev F1 per learning rate:
    # 1e-3 0.330, 3e-3 0.424, 1e-2 0.491, 3e-2 0.500; 1e-2 and 3e-2 are within noise on 240 dev
    # tweets, and the lower one keeps a margin from divergence on longer runs.
    DEFAULT_TRAINING = {"learning_rate": 1e-2, "epochs": 10}

    def prepare(self, model, cfg):
        freeze_all_but_head(model)
        for name, param in model.base_model.named_parameters():
            if name.endswith("bias"):
                param.requires_grad_(True)
        return model
