"""Token classification's labels and decoding: the tag list, IOB2 transition constraints, Viterbi
and argmax decoding into word-level tags, and entity-type filters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ...data.readers import TokenExample, split_tag


def label_list(examples: Sequence[TokenExample]) -> list[str]:
    """All tags, ``O`` first, then grouped by entity type with B- before I-."""
    seen = {t for ex in examples for t in (ex.tags or [])}
    seen.add("O")
    return sorted(seen, key=lambda t: (t != "O", split_tag(t)[1], split_tag(t)[0]))


# ---------------------------------------------------------------------------------------------
# Decoding


def allowed_transitions(labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """IOB2 constraints as additive masks: ``I-X`` only after ``B-X``/``I-X``, never first."""
    n = len(labels)
    trans = np.zeros((n, n), dtype=np.float64)
    start = np.zeros(n, dtype=np.float64)
    for j, tag in enumerate(labels):
        prefix, kind = split_tag(tag)
        if prefix != "I":
            continue
        start[j] = -np.inf
        for i, prev in enumerate(labels):
            if prev not in (f"B-{kind}", f"I-{kind}"):
                trans[i, j] = -np.inf
    return trans, start


def viterbi(logprobs: np.ndarray, trans: np.ndarray, start: np.ndarray) -> list[int]:
    """Best tag path under the transition mask (emissions are per-word log-probabilities)."""
    n_words = logprobs.shape[0]
    if n_words == 0:
        return []
    score = logprobs[0] + start
    back = np.zeros((n_words, logprobs.shape[1]), dtype=np.int64)
    for t in range(1, n_words):
        total = score[:, None] + trans
        back[t] = total.argmax(axis=0)
        score = total.max(axis=0) + logprobs[t]
    path = [int(score.argmax())]
    for t in range(n_words - 1, 0, -1):
        path.append(int(back[t, path[-1]]))
    return path[::-1]


@dataclass
class WordPredictions:
    tags: list[str]
    confidences: list[float]  # probability of the chosen tag, per word


def decode(logprobs: np.ndarray, labels: Sequence[str], mode: str = "viterbi", masks=None) -> WordPredictions:
    if mode == "viterbi":
        trans, start = masks if masks is not None else allowed_transitions(labels)
        path = viterbi(logprobs, trans, start)
    else:
        path = logprobs.argmax(axis=-1).tolist() if len(logprobs) else []
    conf = [float(np.exp(logprobs[i, k])) for i, k in enumerate(path)]
    return WordPredictions(tags=[labels[k] for k in path], confidences=conf)


def entity_types(labels: Sequence[str]) -> list[str]:
    """The entity types of IOB2 tags, in order of first appearance (``O`` has none)."""
    return list(dict.fromkeys(split_tag(t)[1] for t in labels if t != "O"))


def keep_types(tags: Sequence[str], types) -> list[str]:
    """``tags`` with every entity of a type outside ``types`` turned to ``O`` (stays valid IOB2)."""
    return [t if t == "O" or split_tag(t)[1] in types else "O" for t in tags]
