"""Prompt tuning (Lester et al., 2021) and P-tuning (Liu et al., 2021) through ``peft``.

Both prepend ``num_virtual_tokens`` trainable embeddings to every input. For token classification
the model then emits logits for the virtual positions too, and peft passes the labels through
unchanged, so the shapes disagree; :class:`VirtualTokenAligner` gives the virtual positions the
ignore label during training and drops their logits, so the rest of tuneforge sees one logit row
per real token as with any other method.

P-tuning v2 / prefix tuning (``kind: prefix``) hands per-layer key/value prefixes to the body as
``past_key_values``. transformers 5 encoders (BERT, RoBERTa, DeBERTa...) no longer take that
argument (it became ``cache`` and serves decoder use only), so peft refuses them with "Model does
not support past key values"; the method reports that as a config error naming ``method.kind``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import torch
from pydantic import Field
from torch import nn

from ..errors import ConfigError, TuneforgeError
from ..schema import StrictModel
from . import peft_common

IGNORE_INDEX = -100


class VirtualTokenAligner(nn.Module):
    """Wraps a prompt-learning PeftModel so logits and labels cover only the real tokens."""

    def __init__(self, peft_model, num_virtual_tokens: int):
        super().__init__()
        self.peft_model = peft_model
        self.num_virtual_tokens = num_virtual_tokens

    @property
    def config(self):
        return self.peft_model.config

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        if labels is not None:
            virtual = torch.full((labels.shape[0], self.num_virtual_tokens), IGNORE_INDEX,
                                 dtype=labels.dtype, device=labels.device)
            labels = torch.cat([virtual, labels], dim=1)
        output = self.peft_model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
        output.logits = output.logits[:, self.num_virtual_tokens:]
        return output


class PromptMethodConfig(StrictModel):
    """Trainable virtual tokens prepended to the input (peft prompt tuning or P-tuning)."""

    name: Literal["prompt"]
    kind: Literal["prompt_tuning", "p_tuning", "prefix"] = "prompt_tuning"
    num_virtual_tokens: int = Field(default=20, ge=1)
    encoder_hidden_size: Optional[int] = Field(default=None, ge=1, description="p_tuning's prompt encoder width")


class PromptLearning(peft_common.PeftMethod):
    name = "prompt"
    Config = PromptMethodConfig
    # Chosen on dev F1: MiniLM, WNUT-16 train slice of 600 tweets, full dev split, 10 epochs, seed 42
    # (README "Adaptation methods", "How the defaults were chosen"); dev F1 per learning rate:
    # 1e-2 0.417, 3e-2 0.455, 1e-1 0.385.
    DEFAULT_TRAINING = {"learning_rate": 3e-2, "epochs": 10}

    def _peft_config(self, model, cfg):
        from peft import PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig

        common = dict(task_type=peft_common.peft_task_type(model), num_virtual_tokens=cfg.num_virtual_tokens,
                      modules_to_save=peft_common.head_modules(model))
        if cfg.kind == "prompt_tuning":
            # start from embeddings of real vocabulary entries rather than noise
            return PromptTuningConfig(prompt_tuning_init="SAMPLE_VOCAB", **common)
        if cfg.kind == "p_tuning":
            extra = {"encoder_hidden_size": cfg.encoder_hidden_size} if cfg.encoder_hidden_size else {}
            return PromptEncoderConfig(**common, **extra)
        return PrefixTuningConfig(**common)

    def _align(self, peft_model, cfg):
        from peft import TaskType

        if cfg.kind == "prefix" or peft_model.peft_config["default"].task_type != TaskType.TOKEN_CLS:
            # prefixes live in the attention keys/values; a sequence classifier has one logit row
            # per input: either way there are no extra positions to drop
            return peft_model
        return VirtualTokenAligner(peft_model, cfg.num_virtual_tokens)

    def prepare(self, model, cfg):
        peft_model = peft_common.wrap(model, self._peft_config(model, cfg))
        if cfg.kind == "prefix":
            self._check_prefix_runs(peft_model)
        return self._align(peft_model, cfg)

    def _check_prefix_runs(self, peft_model) -> None:
        ids = torch.ones((1, 2), dtype=torch.long, device=peft_model.device)
        try:
            with torch.no_grad():
                peft_model(input_ids=ids, attention_mask=torch.ones_like(ids))
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"method.kind: prefix tuning does not run on {peft_model.config.model_type!r} "
                f"({str(exc).splitlines()[0]}); transformers 5 encoders take no past_key_values — "
                "use kind prompt_tuning or p_tuning"
            ) from None

    def save(self, model, out_dir: Path, state_dict: dict | None = None) -> None:
        if state_dict is not None and hasattr(model, "peft_model"):  # the aligner's keys: peft_model.<peft key>
            state_dict = {k.removeprefix("peft_model."): v for k, v in state_dict.items()}
        peft_common.save(getattr(model, "peft_model", model), out_dir, state_dict)

    def load(self, base_model, folder: Path, cfg):
        return self._align(peft_common.load(base_model, folder), cfg)

    def merge(self, model):
        raise TuneforgeError(
            "export --merge: prompt tuning adds virtual input tokens, which cannot be folded into the "
            "base weights; load this run with tuneforge.load instead"
        )
