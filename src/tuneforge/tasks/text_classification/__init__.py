"""Text classification: labels, class weights, inference over long texts, thresholds, metrics; the
task (:class:`TextClassification`) and its predictor (:class:`TextClassifier`).

Single-label tasks use softmax and cross-entropy (optionally class-weighted); multi-label tasks use
a sigmoid per label, binary cross-entropy, and a decision threshold per label tuned on dev and saved
with the model. Best-checkpoint selection (the task's ``f1``) is macro-F1 for single-label tasks,
so every class counts whatever its size, and micro-F1 for multi-label tasks, where rare labels with
a handful of dev examples would make macro-F1 jumpy.
"""

from __future__ import annotations

from .config import TextClassificationData, TextClassificationOptions
from .inference import (
    mean_pool,
    model_inputs_take_token_types,
    per_text_outputs,
    probabilities_from_logits,
    sentence_embeddings,
    stack_rows,
    text_logits,
)
from .predictor import TextClassifier, write_predictions_jsonl
from .scoring import THRESHOLD_GRID, decide, format_report, multi_hot, score, tune_thresholds
from .task import TextClassification, class_weight_vector, label_list, weighted_cross_entropy

__all__ = [
    "THRESHOLD_GRID",
    "TextClassification",
    "TextClassificationData",
    "TextClassificationOptions",
    "TextClassifier",
    "class_weight_vector",
    "decide",
    "format_report",
    "label_list",
    "mean_pool",
    "model_inputs_take_token_types",
    "multi_hot",
    "per_text_outputs",
    "probabilities_from_logits",
    "score",
    "sentence_embeddings",
    "stack_rows",
    "text_logits",
    "tune_thresholds",
    "weighted_cross_entropy",
    "write_predictions_jsonl",
]
