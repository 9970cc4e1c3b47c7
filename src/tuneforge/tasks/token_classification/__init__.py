"""Token classification (NER): labels, word-level inference over windows, decoding, metrics; the task
(:class:`TokenClassification`) and its predictor (:class:`TokenClassifier`)."""

from __future__ import annotations

from .config import TokenClassificationData, TokenClassificationEncoding, TokenClassificationOptions
from .decoding import (
    WordPredictions,
    allowed_transitions,
    decode,
    entity_types,
    keep_types,
    label_list,
    viterbi,
)
from .predictor import (
    TokenClassifier,
    entity_spans,
    evaluate_predictions,
    example_logprobs,
    format_report,
    predict_examples,
    word_logprobs,
    write_predictions_tsv,
)
from .task import TokenClassification

__all__ = [
    "TokenClassification",
    "TokenClassificationData",
    "TokenClassificationEncoding",
    "TokenClassificationOptions",
    "TokenClassifier",
    "WordPredictions",
    "allowed_transitions",
    "decode",
    "entity_spans",
    "entity_types",
    "evaluate_predictions",
    "example_logprobs",
    "format_report",
    "keep_types",
    "label_list",
    "predict_examples",
    "viterbi",
    "word_logprobs",
    "write_predictions_tsv",
]
