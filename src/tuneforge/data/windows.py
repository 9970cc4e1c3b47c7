"""From words to model inputs: sub-word alignment and overlapping windows for long inputs.

- labels are aligned to sub-words (first sub-word labelled, the rest ignored; or all, as an option);
- a word written with no space before it (a Chinese character) loses the lone word-start marker a
  SentencePiece (``▁``) or byte-level BPE (``Ġ``) tokenizer puts before it when it is split into
  words: the marker would double the sequence and take the word's label while saying nothing of it;
- an input longer than ``max_length`` is split into overlapping windows, so no word is dropped;
  each word is *owned* by the window where it has the most context on both sides, and only the
  owner trains on it and predicts it. That makes merging back trivial and exact.

Batching and padding the windows is :mod:`tuneforge.data.batching`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import regex

from .cjk import CJK_SCRIPTS
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
    words: int = 0
    markers_dropped: int = 0  # lone word-start markers left out before unspaced words (UNSPACED_WORDS)

    @property
    def tokens_per_word(self) -> float:
        return round(self.subword_tokens / self.words, 3) if self.words else 0.0

    def describe(self) -> str:
        parts = [f"{self.examples} examples -> {self.windows} windows, {self.tokens_per_word} sub-words a word"]
        if self.markers_dropped:
            parts.append(f"{self.markers_dropped} lone word-start markers left out before unspaced words")
        if self.split_examples:
            parts.append(f"{self.split_examples} long examples split into overlapping windows")
        if self.empty_words:
            parts.append(f"{self.empty_words} words that tokenize to nothing mapped to the unknown token")
        return "; ".join(parts)

def _fallback_token(tokenizer) -> str:
    return tokenizer.unk_token or "?"


# Which words are written with no space before them (``encoding.unspaced_words``): ``cjk``, a word
# that starts with a Chinese, Japanese or Korean character (a character-level Chinese file, or
# Chinese inside other text); ``all``, every word (a script written without spaces that a file splits
# into words); ``none``, the tokenizer's own split (what runs trained before this option recorded).
UNSPACED_WORDS = ("cjk", "all", "none")
_CJK_START = regex.compile(rf"[{CJK_SCRIPTS}]")


def unspaced_test(mode: str) -> Callable[[str], bool] | None:
    """The test ``mode`` (one of UNSPACED_WORDS) puts to a word, or None when no word is unspaced."""
    if mode not in UNSPACED_WORDS:
        raise ValueError(f"unspaced_words must be one of {', '.join(UNSPACED_WORDS)}, got {mode!r}")
    if mode == "none":
        return None
    if mode == "all":
        return lambda word: True
    return lambda word: bool(_CJK_START.match(word))


class _LoneMarkers:
    """Which token ids are nothing but a word-start marker (``▁``, ``Ġ``: they decode to blank), asked
    of the tokenizer once per id. Learned from the tokenizer, so WordPiece (which has none) is untouched."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.known: dict[int, bool] = {}

    def __call__(self, token_id: int) -> bool:
        if token_id not in self.known:
            token = self.tokenizer.convert_ids_to_tokens(token_id)
            self.known[token_id] = token in ("▁", "Ġ") or (
                token not in self.tokenizer.all_special_tokens and self.tokenizer.convert_tokens_to_string([token]).strip() == "")
        return self.known[token_id]


def drop_lone_markers(ids: list[int], word_ids: list, words: Sequence[str], unspaced: Callable[[str], bool],
                      is_marker: _LoneMarkers) -> tuple[list[int], list, int]:
    """Leave out the lone marker that starts an unspaced word split into more than one piece, so the
    word's first piece is one that carries its text. Returns ids, word ids and how many were left out."""
    keep = []
    dropped = 0
    for pos, (token, word) in enumerate(zip(ids, word_ids)):
        starts_word = word is not None and (pos == 0 or word_ids[pos - 1] != word)
        more_follow = pos + 1 < len(ids) and word_ids[pos + 1] == word
        if starts_word and more_follow and is_marker(token) and unspaced(words[word]):
            dropped += 1
            continue
        keep.append(pos)
    if not dropped:
        return ids, word_ids, 0
    return [ids[p] for p in keep], [word_ids[p] for p in keep], dropped


def tokenize_words(tokenizer, sentences: Sequence[Sequence[str]], stats: EncodeStats | None = None,
                   unspaced_words: str = "cjk"):
    """Sub-word ids and word ids for each sentence (no special tokens), in one batched call.

    Words that produce no sub-word at all (zero-width spaces, control characters, some emoji for
    some vocabularies) would silently lose their label and prediction; they are replaced by the
    unknown token and the sentence is tokenized again. Unspaced words (``unspaced_words``, see
    UNSPACED_WORDS) lose a lone word-start marker before them (:func:`drop_lone_markers`).
    """
    if not sentences:
        return []
    unspaced = unspaced_test(unspaced_words)
    is_marker = _LoneMarkers(tokenizer)
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
        if unspaced is not None:
            ids, word_ids, dropped = drop_lone_markers(ids, word_ids, words, unspaced, is_marker)
            if stats is not None:
                stats.markers_dropped += dropped
        if stats is not None:
            stats.words += len(words)
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
    unspaced_words: str = "cjk",
) -> tuple[list[Window], EncodeStats]:
    """Turn examples (``.words``, optional ``.tags``) into windows ready to batch.

    ``label_position`` is the sub-word a word's tag is trained on and read from: ``first`` for
    encoders; ``last`` for causal (decoder) models, whose first piece of a word cannot see the rest
    of it (GPT-2's first piece is often a bare space marker).

    ``mask_unannotated``: an example that annotates only some entity types (``.annotated``) gets the
    ids of the other types' tags in ``excluded_for_o``; the loss leaves them out of its ``O`` words'
    softmax, so an unannotated ``O`` does not teach that those types are absent.

    ``unspaced_words``: which words lose a lone word-start marker (UNSPACED_WORDS; a run records it).
    """
    prefix, suffix = special_token_template(tokenizer)
    budget = max_length - len(prefix) - len(suffix)
    if budget <= stride:
        raise ValueError(f"max_length {max_length} leaves {budget} tokens per window; it must exceed stride {stride}")
    stats = EncodeStats(examples=len(examples))
    continuation = continuation_table(label2id) if label2id else {}
    tokenized = tokenize_words(tokenizer, [ex.words for ex in examples], stats, unspaced_words)
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
