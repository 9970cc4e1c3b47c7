"""Text classification's config sections: ``task`` options (multi-label, class weights, long texts)
and ``data`` columns."""

from __future__ import annotations

from typing import ClassVar, Literal, Optional, Union

from pydantic import Field, model_validator

from ...schema import DataConfig, TaskOptions


class TextClassificationOptions(TaskOptions):
    type: str = "text_classification"
    multi_label: bool = Field(default=False, description="sigmoid + BCE, any number of labels per text")
    class_weights: Optional[Union[Literal["balanced"], dict[str, float]]] = Field(
        default=None, description="single-label loss weights: 'balanced' (n / (k * count)) or {label: weight}"
    )
    long_text: Literal["head", "tail", "head_tail", "windows"] = Field(
        default="windows",
        description="texts longer than max_length: keep the head, the tail, both, or read every window and pool",
    )
    head_fraction: float = Field(default=0.25, ge=0, le=1, description="head_tail: share of tokens kept from the head")
    window_pooling: Literal["mean", "max"] = Field(default="mean", description="windows: how window logits combine")
    tune_thresholds: bool = Field(default=True, description="multi-label: tune a threshold per label on dev")

    @model_validator(mode="after")
    def _check_weights(self) -> "TextClassificationOptions":
        if self.multi_label and self.class_weights is not None:
            raise ValueError("'task.class_weights' is for single-label tasks; remove it or set task.multi_label: false")
        if isinstance(self.class_weights, dict) and any(w <= 0 for w in self.class_weights.values()):
            raise ValueError("'task.class_weights' must be positive")
        return self


class TextClassificationData(DataConfig):
    FORMATS: ClassVar[tuple[str, ...]] = ("auto", "jsonl", "csv", "tsv", "labelstudio", "doccano", "parquet", "arrow", "hf")
    text_column: str = "text"
    text_pair_column: Optional[str] = Field(default=None, description="second text of a pair (NLI, QA matching)")
    label_column: str = "label"
    label_separator: str = Field(
        default="|", min_length=1, description="multi-label CSV/TSV: separator between labels in one cell"
    )
    allow_empty_labels: bool = Field(
        default=False, description="multi-label CSV/TSV: a row whose label cell holds no label (empty, or separators "
                                   "only) is a text with no label; false: such a row is an error at its file:line "
                                   "(JSONL says [] for none in so many words)")
    label_descriptions: Optional[dict[str, Union[str, list[str]]]] = Field(
        default=None, description="what each label means, in words (zero-shot scores texts against them); "
                                  "kept in the model's tuneforge.json")
