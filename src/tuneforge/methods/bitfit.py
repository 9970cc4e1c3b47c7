"""BitFit (Ben Zaken et al., 2022): only the bias terms of the body train, plus the head.

``peft`` has no BitFit, so it is written here: it needs nothing but ``requires_grad`` flags. The
saved file holds the biases and the head; merging is loading them, so the export is a plain model.
"""

from __future__ import annotations

from .base import SubsetOfBaseMethod, freeze_all_but_head


class BitFit(SubsetOfBaseMethod):
    name = "bitfit"
    # Starting values from the literature for this family of methods, not yet tuned on our data;
    # README ("Adaptation methods") lists what has been measured with them.
    DEFAULT_TRAINING = {"learning_rate": 1e-3, "epochs": 10}

    def prepare(self, model, cfg):
        freeze_all_but_head(model)
        for name, param in model.base_model.named_parameters():
            if name.endswith("bias"):
                param.requires_grad_(True)
        return model
