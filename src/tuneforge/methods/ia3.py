"""IA3 (Liu et al., 2022) through ``peft``: learned vectors rescale keys, values and FFN activations."""

from __future__ import annotations

from . import peft_common


class IA3(peft_common.PeftMethod):
    name = "ia3"
    # Starting values from the literature for this family of methods, not yet tuned on our data;
    # README ("Adaptation methods") lists what has been measured with them.
    DEFAULT_TRAINING = {"learning_rate": 3e-3, "epochs": 10}

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
