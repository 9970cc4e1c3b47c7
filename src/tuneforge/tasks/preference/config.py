"""The config sections of ``task.type: preference``."""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import Field, model_validator

from ...schema import DataConfig, TaskOptions
from ..causal_lm.config import DecoderEncoding


class PreferenceOptions(TaskOptions):
    type: str = "preference"
    loss: Literal["dpo", "ipo", "orpo"] = Field(
        default="dpo",
        description="dpo (Rafailov et al. 2023), ipo (Azar et al. 2023, length-normalised as TRL), or orpo "
                    "(Hong et al. 2024: the answer's NLL plus an odds-ratio term, no reference model)")
    beta: float = Field(
        default=0.1, gt=0,
        description="dpo: the KL weight β; ipo: the regulariser τ (the target margin is 1/2τ); orpo: the odds-ratio "
                    "term's weight λ")
    label_smoothing: float = Field(
        default=0.0, ge=0, lt=0.5,
        description="dpo only: the share of pairs assumed mislabelled (conservative DPO); 0: plain DPO")
    reference: Literal["auto", "precompute"] = Field(
        default="auto",
        description="where the reference log-probabilities come from: auto (adapter methods: the same model with "
                    "the adapter disabled, or its starting weights swapped in; full fine-tuning: a frozen copy) or "
                    "precompute (every pair scored once by the starting model before training: no copy, no "
                    "reference forward per step)")
    chat_template: Optional[str] = Field(
        default=None,
        description="the chat template: 'chatml', a Jinja template string, or a .jinja file; default: the tokenizer's")

    @model_validator(mode="after")
    def _check(self) -> "PreferenceOptions":
        if self.label_smoothing and self.loss != "dpo":
            raise ValueError(f"'task.label_smoothing' applies to loss dpo, not {self.loss}; remove it")
        if self.reference != "auto" and self.loss == "orpo":
            raise ValueError("'task.reference' does not apply to loss orpo (it has no reference model); remove it")
        return self

    @property
    def uses_reference(self) -> bool:
        return self.loss != "orpo"


class PreferenceData(DataConfig):
    FORMATS: ClassVar[tuple[str, ...]] = ("auto", "jsonl", "json", "parquet", "arrow", "hf")


class PreferenceEncoding(DecoderEncoding):
    max_length: int = Field(default=512, ge=8, description="tokens per side of a pair (prompt and answer); longer "
                                                              "sides are cut at the end, counted")

    @model_validator(mode="after")
    def _check_packing(self) -> "PreferenceEncoding":
        if self.packing:
            raise ValueError("'encoding.packing' does not apply to task.type preference (each pair is two rows); "
                             "remove it")
        return self
