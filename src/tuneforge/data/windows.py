"""From words to model inputs: sub-word alignment and overlapping windows for long inputs.

- labels are aligned to sub-words (first sub-word labelled, the rest ignored; or all, as an option);
- an input longer than ``max_length`` is split into overlapping windows, so no word is dropped;
  each word is *owned* by the window where it has the most context on both sides, and only the
  owner trains on it and predicts it. That makes merging back trivial and exact.

Batching and padding the windows is :mod:`tuneforge.data.batching`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from .tokenizing import IGNORE_INDEX, long_inputs_expected, special_token_template


@dataclass
class Window:
    """One model input: a slice of one example's sub-words plus the model's special tokens."""

    example: int
    input_ids: list[int]
    labels: list[int]
    # for each position: the word index it belongs to, or None for special tokens
    word_ids: list[int | None]
    # word index -> position of that word's first sub-word, for the words this window owns
    owned_positions: dict[int, int] = field(default_factory=dict)
    # label ids an ``O`` of this window does not rule out (types its example does not annotate)
    excluded_for_o: tuple[int, ...] = ()


@dataclass
class EncodeStats:
    examples: int = 0
    windows: int = 0
    split_examples: int = 0  # examples that needed more than one window
    empty_words: int = 0  # words that tokenized to nothing and were mapped to the unknown token
    subword_tokens: int = 0

    def describe(self) -> str:
        parts = [f"{self.examples} examples -> {self.windows} windows"]
        if self.split_examples:
            parts.append(f"{self.split_examples} long examples split into overlapping windows")
        if self.empty_words:
            parts.append(f"{self.empty_words} words that tokenize to nothing mapped to the unknown token")
        return "; ".join(parts)

def _fallback_token(tokenizer) -> str:
    return tokenizer.unk_token or "?"


def tokenize_words(tokenizer, sentences: Sequence[Sequence[str]], stats: EncodeStats | None = None):
    """Sub-word ids and word ids for each sentence (no special tokens), in one batched call.

    Words that produce no sub-word at all (zero-width spaces, control characters, some emoji for
    some vocabularies) would silently lose their label and prediction; they are replaced by the
    unknown token and the sentence is tokenized again.
    """
    if not sentences:
        return []
    with long_inputs_expected():
        enc = tokenizer([list(s) for s in sentences], is_split_into_words=True, add_special_tokens=False)
    out = []
    for i, words in enumerate(sentences):
        ids = list(enc["input_ids"][i])
        word_ids = list(enc.word_ids(i))
        present = set(w for w in word_ids if w is not None)
        if len(present) != len(words):
            missing = [j for j in range(len(words)) if j not in present]
            if stats is not None:
                stats.empty_words += len(missing)
            patched = [(_fallback_token(tokenizer) if j in missing else w) for j, w in enumerate(words)]
            with long_inputs_expected():
                again = tokenizer([patched], is_split_into_words=True, add_special_tokens=False)
            ids, word_ids = list(again["input_ids"][0]), list(again.word_ids(0))
            if len(set(w for w in word_ids if w is not None)) != len(words):
                raise ValueError(f"could not tokenize every word of {list(words)!r}")
        out.append((ids, word_ids))
    return out


def window_spans(n_tokens: int, budget: int, stride: int) -> list[tuple[int, int]]:
    """[start, end) token spans of at most ``budget`` tokens, consecutive ones sharing ``stride``."""
    if n_tokens <= budget:
        return [(0, n_tokens)]
    step = budget - stride
    spans = []
    start = 0
    while True:
        end = min(start + budget, n_tokens)
        spans.append((start, end))
        if end == n_tokens:
            return spans
        start += step


def assign_owners(anchor_positions: Sequence[int], spans: Sequence[tuple[int, int]]) -> list[int]:
    """For each word (by its anchor sub-word position), the window that sees it with most context."""
    owners = []
    for pos in anchor_positions:
        best, best_margin = -1, -1
        for w, (start, end) in enumerate(spans):
            if start <= pos < end:
                margin = min(pos - start, end - 1 - pos)
                if margin > best_margin:
                    best, best_margin = w, margin
        owners.append(best)
    return owners


def encode_examples(
    examples: Sequence,
    tokenizer,
    label2id: dict[str, int] | None,
    max_length: int,
    stride: int,
    label_all_subwords: bool = False,
    label_position: str = "first",
    mask_unannotated: bool = False,
) -> tuple[list[Window], EncodeStats]:
    """Turn examples (``.words``, optional ``.tags``) into windows ready to batch.

    ``label_position`` is the sub-word a word's tag is trained on and read from: ``first`` for
    encoders; ``last`` for causal (decoder) models, whose first piece of a word cannot see the rest
    of it (GPT-2's first piece is often a bare space marker).

    ``mask_unannotated``: an example that annotates only some entity types (``.annotated``) gets the
    ids of the other types' tags in ``excluded_for_o``; the loss leaves them out of its ``O`` words'
    softmax, so an unannotated ``O`` does not teach that those types are absent.
    """
    prefix, suffix = special_token_template(tokenizer)
    budget = max_length - len(prefix) - len(suffix)
    if budget <= stride:
        raise ValueError(f"max_length {max_length} leaves {budget} tokens per window; it must exceed stride {stride}")
    stats = EncodeStats(examples=len(examples))
    continuation = continuation_table(label2id) if label2id else {}
    tokenized = tokenize_words(tokenizer, [ex.words for ex in examples], stats)
    windows: list[Window] = []
    for index, (ex, (ids, word_ids)) in enumerate(zip(examples, tokenized)):
        stats.subword_tokens += len(ids)
        anchors: dict[int, int] = {}  # word -> position its tag is trained on and read from
        for pos, w in enumerate(word_ids):
            if w is not None and (label_position == "last" or w not in anchors):
                anchors[w] = pos
        spans = window_spans(len(ids), budget, stride)
        if len(spans) > 1:
            stats.split_examples += 1
        words_in_order = sorted(anchors)
        owners = assign_owners([anchors[w] for w in words_in_order], spans)
        owner_of = dict(zip(words_in_order, owners))
        tag_ids = None
        excluded: tuple[int, ...] = ()
        if label2id is not None and getattr(ex, "tags", None) is not None:
            tag_ids = [label2id[t] for t in ex.tags]
            annotated = getattr(ex, "annotated", None)
            if mask_unannotated and annotated is not None:
                excluded = tuple(i for t, i in label2id.items() if t != "O" and t[2:] not in annotated)
        for w_index, (start, end) in enumerate(spans):
            labels = [IGNORE_INDEX] * len(prefix)
            owned: dict[int, int] = {}
            for pos in range(start, end):
                word = word_ids[pos]
                label = IGNORE_INDEX
                if owner_of[word] == w_index:
                    is_anchor = anchors[word] == pos
                    if is_anchor:
                        owned[word] = len(prefix) + pos - start
                    if tag_ids is not None and (is_anchor or label_all_subwords):
                        label = tag_ids[word] if is_anchor else continuation.get(tag_ids[word], tag_ids[word])
                labels.append(label)
            labels += [IGNORE_INDEX] * len(suffix)
            windows.append(
                Window(
                    example=index,
                    input_ids=prefix + ids[start:end] + suffix,
                    labels=labels,
                    word_ids=[None] * len(prefix) + word_ids[start:end] + [None] * len(suffix),
                    owned_positions=owned,
                    excluded_for_o=excluded,
                )
            )
    stats.windows = len(windows)
    return windows, stats


def continuation_table(label2id: dict[str, int]) -> dict[int, int]:
    """With all sub-words labelled, a B-X word's later pieces are I-X (as run_ner's b_to_i_label)."""
    return {
        i: label2id[f"I-{tag[2:]}"]
        for tag, i in label2id.items()
        if tag.startswith("B-") and f"I-{tag[2:]}" in label2id
    }
