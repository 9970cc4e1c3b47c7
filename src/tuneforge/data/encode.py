"""From words to model inputs: sub-word alignment, overlapping windows, length-grouped batches.

The seed's three bugs are fixed here:
- labels are aligned to sub-words (first sub-word labelled, the rest ignored; or all, as an option);
- batches are padded to their own longest member, and members are grouped by length;
- an input longer than ``max_length`` is split into overlapping windows, so no word is dropped;
  each word is *owned* by the window where it has the most context on both sides, and only the
  owner trains on it and predicts it. That makes merging back trivial and exact.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Sequence

import torch

IGNORE_INDEX = -100


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


def special_token_template(tokenizer) -> tuple[list[int], list[int]]:
    """The special ids a tokenizer puts before and after one sequence, e.g. ([CLS], [SEP]).

    Learned from the tokenizer's own post-processor rather than hard-coded, so BERT, RoBERTa
    (<s> … </s>), GPT-2 (nothing) and Llama (<s> …) all work the same way.
    """
    enc = tokenizer([["hello"]], is_split_into_words=True, add_special_tokens=True)
    ids = enc["input_ids"][0]
    word_ids = enc.word_ids(0)
    content = [i for i, w in enumerate(word_ids) if w is not None]
    if not content:
        return [], []
    return list(ids[: content[0]]), list(ids[content[-1] + 1:])


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


# ---------------------------------------------------------------------------------------------
# Batching


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int, group_by_length: bool = True,
    mega_factor: int = 50,
) -> list[list[int]]:
    """Shuffled batches whose members have similar lengths, so little compute goes to padding.

    As in the Trainer's length-grouped sampler: shuffle, cut into mega-batches of
    ``mega_factor * batch_size``, sort each by length, slice into batches, then shuffle batch
    order. Deterministic in (seed, epoch), which is what makes mid-epoch resume exact.
    """
    rng = random.Random(seed * 100_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if not group_by_length:
        return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    mega = max(batch_size * mega_factor, batch_size)
    batches = []
    for i in range(0, len(order), mega):
        chunk = sorted(order[i: i + mega], key=lambda j: lengths[j], reverse=True)
        batches += [chunk[k: k + batch_size] for k in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


# Predictions (``Predictor.predict``: `tuneforge predict`, the Python API, the server) pad every input
# to its length rounded up to this multiple, and a batch only holds inputs of one padded length. An
# input is then computed at the same shape whatever else is in its batch, so its logits are
# bit-identical alone, in a file, or in a server's micro-batch (padding to a batch's longest member
# moves them by ~1e-7: softmax sums over a different number of masked keys). Rounding to 8 keeps the
# padding small; tests/test_serving.py checks the identity. Scoring (dev/test metrics, `tuneforge
# eval`) still pads to each batch's longest member, so recorded metrics stay as they were.
INFERENCE_PAD_MULTIPLE = 8


def padded_length(n_tokens: int, multiple: int = INFERENCE_PAD_MULTIPLE) -> int:
    return (n_tokens + multiple - 1) // multiple * multiple


def sorted_batches(lengths: Sequence[int], batch_size: int, pad_multiple: int | None = None) -> list[list[int]]:
    """For inference: batches in length order (order restored by the caller), each of inputs with one
    padded length (see INFERENCE_PAD_MULTIPLE; ``None``: any lengths, padded to the longest)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        from ..errors import TuneforgeError

        # a negative size would give no batches at all, and every word would come back as O
        raise TuneforgeError(f"batch size {batch_size!r}: must be a whole number of at least 1")
    order = sorted(range(len(lengths)), key=lambda j: lengths[j], reverse=True)
    if pad_multiple is None:
        return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    batches: list[list[int]] = []
    for j in order:
        if batches and len(batches[-1]) < batch_size and \
                padded_length(lengths[batches[-1][0]], pad_multiple) == padded_length(lengths[j], pad_multiple):
            batches[-1].append(j)
        else:
            batches.append([j])
    return batches


class Collator:
    """Pads a batch of windows to its own longest member (dynamic padding).

    When a window excludes labels for its ``O`` words (:func:`encode_examples`'s ``mask_unannotated``),
    the batch also holds ``o_excluded``: a (windows x ``n_labels``) boolean mask for the task's loss.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None, n_labels: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.n_labels = n_labels

    def __call__(self, windows: Sequence[Window]) -> dict:
        longest = max(len(w.input_ids) for w in windows)
        if self.pad_to_multiple_of:
            longest = padded_length(longest, self.pad_to_multiple_of)
        n = len(windows)
        input_ids = torch.full((n, longest), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((n, longest), dtype=torch.long)
        labels = torch.full((n, longest), IGNORE_INDEX, dtype=torch.long)
        real_tokens = 0
        for i, w in enumerate(windows):
            k = len(w.input_ids)
            real_tokens += k
            input_ids[i, :k] = torch.tensor(w.input_ids, dtype=torch.long)
            attention[i, :k] = 1
            labels[i, :k] = torch.tensor(w.labels, dtype=torch.long)
        batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels, "n_tokens": real_tokens}
        if any(w.excluded_for_o for w in windows):
            width = self.n_labels or 1 + max(i for w in windows for i in w.excluded_for_o)
            excluded = torch.zeros((n, width), dtype=torch.bool)
            for i, w in enumerate(windows):
                excluded[i, list(w.excluded_for_o)] = True
            batch["o_excluded"] = excluded
        return batch


# ---------------------------------------------------------------------------------------------
# Whole texts (text classification): one label per input, long texts by a declared strategy


@dataclass
class SequenceTemplate:
    """Where a tokenizer puts its special tokens around one text or a pair, and the token types.

    Learned from the tokenizer itself (like :func:`special_token_template`), so BERT's
    ``[CLS] a [SEP] b [SEP]`` with types 0/1 and RoBERTa's ``<s> a </s></s> b </s>`` both work.
    """

    prefix: list[int]
    suffix: list[int]
    pair_prefix: list[int]
    pair_middle: list[int]
    pair_suffix: list[int]
    # token type of: prefix, first text, middle, second text, suffix (pair layout)
    pair_types: tuple[int, int, int, int, int] = (0, 0, 0, 1, 1)

    def n_special(self, pair: bool) -> int:
        if pair:
            return len(self.pair_prefix) + len(self.pair_middle) + len(self.pair_suffix)
        return len(self.prefix) + len(self.suffix)

    def build(self, first: list[int], second: list[int] | None = None) -> tuple[list[int], list[int]]:
        """(input ids, token type ids) for content ids that already fit."""
        if second is None:
            ids = self.prefix + first + self.suffix
            return ids, [0] * len(ids)
        t_pre, t_a, t_mid, t_b, t_suf = self.pair_types
        ids = self.pair_prefix + first + self.pair_middle + second + self.pair_suffix
        types = (
            [t_pre] * len(self.pair_prefix) + [t_a] * len(first) + [t_mid] * len(self.pair_middle)
            + [t_b] * len(second) + [t_suf] * len(self.pair_suffix)
        )
        return ids, types


def sequence_template(tokenizer) -> SequenceTemplate:
    prefix, suffix = special_token_template(tokenizer)
    enc = tokenizer("hello", "world", add_special_tokens=True)
    ids = list(enc["input_ids"])
    types = list(enc.get("token_type_ids") or [0] * len(ids))
    seq = enc.sequence_ids(0)
    first = [i for i, s in enumerate(seq) if s == 0]
    second = [i for i, s in enumerate(seq) if s == 1]
    a0, a1, b0, b1 = first[0], first[-1] + 1, second[0], second[-1] + 1
    at = lambda i: types[i] if i < len(types) else 0  # noqa: E731
    return SequenceTemplate(
        prefix=prefix, suffix=suffix,
        pair_prefix=ids[:a0], pair_middle=ids[a1:b0], pair_suffix=ids[b1:],
        pair_types=(at(0), at(a0), at(a1) if a1 < b0 else at(b0), at(b0), at(b1) if b1 < len(ids) else at(b0)),
    )


LONG_TEXT_STRATEGIES = ("head", "tail", "head_tail", "windows")


@contextmanager
def long_inputs_expected():
    """Silence transformers' "sequence longer than the maximum" warning where the caller windows,
    packs or only counts long texts (it would be noise, not a problem)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


def long_text_spans(
    n_tokens: int, budget: int, strategy: str, head_fraction: float = 0.25, stride: int = 0
) -> list[list[tuple[int, int]]]:
    """Which token spans of a text reach the model: one list of [start, end) spans per input.

    head / tail / head_tail give one input (head_tail: the first ``head_fraction`` of the budget
    from the start, the rest from the end); windows gives one input per overlapping window
    (:func:`window_spans`), whose logits are pooled.
    """
    if n_tokens <= budget:
        return [[(0, n_tokens)]]
    if strategy == "head":
        return [[(0, budget)]]
    if strategy == "tail":
        return [[(n_tokens - budget, n_tokens)]]
    if strategy == "head_tail":
        head = int(round(budget * head_fraction))
        return [[(0, head), (n_tokens - (budget - head), n_tokens)]]
    if strategy == "windows":
        return [[span] for span in window_spans(n_tokens, budget, min(stride, budget - 1))]
    raise ValueError(f"unknown long-text strategy {strategy!r}; choose from {', '.join(LONG_TEXT_STRATEGIES)}")


@dataclass
class TextInput:
    """One model input for a text: which example it reads, its ids, and the example's target."""

    example: int
    input_ids: list[int]
    token_type_ids: list[int]
    # class index (single-label), multi-hot floats (multi-label), None when unlabelled
    label: int | list[float] | None = None


@dataclass
class TextEncodeStats:
    examples: int = 0
    inputs: int = 0
    strategy: str = "windows"
    budget: int = 0
    long_examples: int = 0  # texts (or pairs) longer than the budget
    tokens_not_seen: int = 0  # content tokens no input contains (head / tail / head_tail cut them)
    subword_tokens: int = 0

    def describe(self) -> str:
        parts = [f"{self.examples} texts -> {self.inputs} inputs"]
        if self.long_examples:
            how = {
                "windows": "read in overlapping windows whose logits are pooled",
                "head": "cut to their first tokens", "tail": "cut to their last tokens",
                "head_tail": "cut to their first and last tokens",
            }[self.strategy]
            parts.append(f"{self.long_examples} longer than {self.budget} tokens, {how}")
        if self.tokens_not_seen:
            parts.append(f"{self.tokens_not_seen:,} of {self.subword_tokens:,} tokens not seen by the model")
        return "; ".join(parts)


def _pair_allocation(n_first: int, n_second: int, budget: int) -> tuple[int, int]:
    """Longest first: the second text keeps at most half the budget unless the first needs less."""
    if n_first + n_second <= budget:
        return n_first, n_second
    second = min(n_second, max(budget - n_first, budget // 2))
    return budget - second, second


def encode_texts(
    examples: Sequence,
    tokenizer,
    label2id: dict[str, int] | None,
    max_length: int,
    long_text: str = "windows",
    stride: int = 32,
    head_fraction: float = 0.25,
    multi_label: bool = False,
) -> tuple[list[TextInput], TextEncodeStats]:
    """Texts (``.text``, optional ``.text_pair`` and ``.labels``) -> model inputs of at most ``max_length``.

    Every input of a long text carries the text's label, so with ``windows`` training sees the
    whole document and inference pools the windows' logits.
    """
    template = sequence_template(tokenizer)
    stats = TextEncodeStats(examples=len(examples), strategy=long_text)
    with long_inputs_expected():  # we handle texts longer than the model's maximum below
        firsts = tokenizer([ex.text for ex in examples], add_special_tokens=False)["input_ids"] if examples else []
        pair_texts = [ex.text_pair for ex in examples if getattr(ex, "text_pair", None) is not None]
        seconds = iter(tokenizer(pair_texts, add_special_tokens=False)["input_ids"] if pair_texts else [])
    inputs: list[TextInput] = []
    for index, (ex, first) in enumerate(zip(examples, firsts)):
        second = next(seconds) if getattr(ex, "text_pair", None) is not None else None
        budget = max_length - template.n_special(second is not None)
        if budget < 2:
            raise ValueError(f"max_length {max_length} leaves no room for text next to the special tokens")
        stats.budget = max(stats.budget, budget)
        target = None
        if label2id is not None and getattr(ex, "labels", None) is not None:
            if multi_label:
                target = [0.0] * len(label2id)
                for label in ex.labels:
                    target[label2id[label]] = 1.0
            else:
                target = label2id[ex.labels[0]]
        stats.subword_tokens += len(first) + len(second or [])
        if len(first) + len(second or []) > budget:
            stats.long_examples += 1
        n_first = budget
        if second is not None:
            n_first, n_second = _pair_allocation(len(first), len(second), budget)
            if n_second < len(second):
                # the second text of a pair is short by nature (a question, a hypothesis): it is cut,
                # never windowed, and the cut is counted
                how = "head" if long_text == "windows" else long_text
                (cut,) = long_text_spans(len(second), n_second, how, head_fraction)
                stats.tokens_not_seen += len(second) - n_second
                second = [t for s, e in cut for t in second[s:e]]
        pieces = long_text_spans(len(first), n_first, long_text, head_fraction, stride)
        if long_text != "windows":
            stats.tokens_not_seen += len(first) - sum(e - s for s, e in pieces[0])
        for spans in pieces:
            content = [t for s, e in spans for t in first[s:e]]
            ids, types = template.build(content, second)
            inputs.append(TextInput(example=index, input_ids=ids, token_type_ids=types, label=target))
    stats.inputs = len(inputs)
    return inputs, stats


class SequenceCollator:
    """Pads a batch of :class:`TextInput` to its own longest member; one label per input."""

    def __init__(self, pad_token_id: int, token_types: bool = True, multi_label: bool = False,
                 pad_to_multiple_of: int | None = None):
        self.pad_token_id = pad_token_id
        self.token_types = token_types  # only models that take token_type_ids get them
        self.multi_label = multi_label
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, items: Sequence[TextInput]) -> dict:
        longest = max(len(x.input_ids) for x in items)
        if self.pad_to_multiple_of:
            longest = padded_length(longest, self.pad_to_multiple_of)
        n = len(items)
        input_ids = torch.full((n, longest), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((n, longest), dtype=torch.long)
        types = torch.zeros((n, longest), dtype=torch.long)
        for i, x in enumerate(items):
            k = len(x.input_ids)
            input_ids[i, :k] = torch.tensor(x.input_ids, dtype=torch.long)
            attention[i, :k] = 1
            types[i, :k] = torch.tensor(x.token_type_ids, dtype=torch.long)
        batch = {"input_ids": input_ids, "attention_mask": attention}
        if self.token_types:
            batch["token_type_ids"] = types
        if items[0].label is not None:
            dtype = torch.float if self.multi_label else torch.long
            batch["labels"] = torch.tensor([x.label for x in items], dtype=dtype)
        batch["n_tokens"] = int(attention.sum())
        return batch


# ---------------------------------------------------------------------------------------------
# Raw text for masked-LM training: whole-word groups, packing into blocks, dynamic masking

NO_GROUP = -1  # special tokens and document separators: never masked


def _jieba():
    try:
        import jieba
    except ImportError:  # pragma: no cover - jieba is a dependency; an install without it gets a clear line
        from ..errors import ConfigError

        raise ConfigError("task.chinese_segmentation jieba needs the jieba package (pip install jieba); "
                          "or set task.chinese_segmentation: characters") from None
    jieba.setLogLevel(60)  # it logs its dictionary loading at INFO on every start
    return jieba


def _is_cjk(ch: str) -> bool:
    from ..vocab import is_cjk

    return is_cjk(ch)


def word_groups(tokenizer, texts: Sequence[str], whole_word: bool = True, chinese: str = "jieba",
                batch_size: int = 1000) -> list[tuple[list[int], list[int]]]:
    """Token ids of each text (no special tokens) and, per token, the index of the unit that is
    masked as a whole: a word of the tokenizer's pre-tokeniser (all its word pieces), except that
    neighbouring Chinese characters the segmenter (``chinese="jieba"``) puts in one word share a unit;
    ``chinese="characters"`` masks Chinese character by character. ``whole_word=False``: every token
    is its own unit."""
    segment = whole_word and chinese == "jieba"
    segmenter = None  # jieba loads its dictionary (about a second) only when Chinese text comes
    out = []
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start:start + batch_size])
        with long_inputs_expected():  # documents are packed into blocks
            enc = tokenizer(chunk, add_special_tokens=False, return_offsets_mapping=segment)
        for i, text in enumerate(chunk):
            ids = list(enc["input_ids"][i])
            if not whole_word:
                out.append((ids, list(range(len(ids)))))
                continue
            words = enc.word_ids(i)
            cjk_word = None
            if segment and any(_is_cjk(ch) for ch in text):
                segmenter = segmenter or _jieba()
                cjk_word = {}
                for k, (_, begin, end) in enumerate(segmenter.tokenize(text)):
                    for pos in range(begin, end):
                        cjk_word[pos] = k
            groups, previous, group = [], None, -1
            for pos, word in enumerate(words):
                key = ("word", word)
                if cjk_word is not None:
                    begin, end = enc["offset_mapping"][i][pos]
                    if end - begin == 1 and _is_cjk(text[begin]) and begin in cjk_word:
                        key = ("cjk", cjk_word[begin])
                if key != previous:
                    group += 1
                    previous = key
                groups.append(group)
            out.append((ids, groups))
    return out


@dataclass
class Block:
    """``max_length`` tokens of packed text: ids and, per position, its whole-word unit (NO_GROUP: never masked)."""

    input_ids: list[int]
    groups: list[int]


@dataclass
class PackStats:
    documents: int = 0
    empty_documents: int = 0  # documents that tokenise to nothing (skipped)
    tokens: int = 0  # text tokens packed (separators and special tokens not counted)
    blocks: int = 0
    block_length: int = 0
    masking: str = ""

    def describe(self) -> str:
        text = (f"{self.documents:,} documents, {self.tokens:,} tokens -> {self.blocks:,} blocks of "
                f"{self.block_length} tokens")
        if self.empty_documents:
            text += f"; {self.empty_documents} documents tokenise to nothing (skipped)"
        return text + (f"; {self.masking}" if self.masking else "")


def pack_documents(tokenized: Sequence[tuple[list[int], list[int]]], prefix: Sequence[int], suffix: Sequence[int],
                   separator: int, max_length: int, stats: PackStats | None = None) -> list[Block]:
    """Join documents into one stream with ``separator`` between them and cut it into blocks of
    ``max_length`` (the model's special tokens around each): no padding, no token dropped. Only the
    last block may be shorter. A word cut by a block boundary becomes two units, one per block."""
    budget = max_length - len(prefix) - len(suffix)
    if budget < 1:
        raise ValueError(f"max_length {max_length} leaves no room next to the special tokens")
    stream_ids: list[int] = []
    stream_groups: list[int] = []
    offset = 0
    for ids, groups in tokenized:
        if not ids:
            if stats is not None:
                stats.empty_documents += 1
            continue
        if stream_ids:
            stream_ids.append(separator)
            stream_groups.append(NO_GROUP)
        stream_ids += ids
        stream_groups += [g + offset for g in groups]
        offset += max(groups) + 1
        if stats is not None:
            stats.tokens += len(ids)
    blocks = []
    for start in range(0, len(stream_ids), budget):
        ids, groups = stream_ids[start:start + budget], stream_groups[start:start + budget]
        blocks.append(Block(list(prefix) + ids + list(suffix),
                            [NO_GROUP] * len(prefix) + groups + [NO_GROUP] * len(suffix)))
    if stats is not None:
        stats.documents = len(tokenized)
        stats.blocks = len(blocks)
        stats.block_length = max_length
    return blocks


class MaskingCollator:
    """Pads blocks and masks them: each whole-word unit is chosen with ``mlm_probability`` (at least one
    per block), every token of a chosen unit is predicted and, token by token, replaced by the mask
    token (``mask_replace_prob``), a random token (``random_replace_prob``) or kept.

    Why not transformers' DataCollatorForLanguageModeling: its whole-word mode finds words by gaps in
    the character offsets (a run of Chinese characters, written without spaces, is one "word"), and it
    turns the random/unchanged replacements off; BERT's recipe is 80/10/10 for whole words too.

    The masks come from ``generator``, whose state the task saves in every checkpoint (a callback), so
    they are deterministic by seed, new each epoch, and the same after ``--resume``.
    """

    def __init__(self, pad_id: int, mask_id: int, vocab_size: int, mlm_probability: float = 0.15,
                 mask_replace_prob: float = 0.8, random_replace_prob: float = 0.1, seed: int = 0):
        self.pad_id, self.mask_id, self.vocab_size = pad_id, mask_id, vocab_size
        self.mlm_probability = mlm_probability
        self.mask_replace_prob, self.random_replace_prob = mask_replace_prob, random_replace_prob
        self.generator = torch.Generator().manual_seed(seed)

    def pad(self, blocks: Sequence[Block]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        longest = max(len(b.input_ids) for b in blocks)
        n = len(blocks)
        input_ids = torch.full((n, longest), self.pad_id, dtype=torch.long)
        groups = torch.full((n, longest), NO_GROUP, dtype=torch.long)
        attention = torch.zeros((n, longest), dtype=torch.long)
        for i, b in enumerate(blocks):
            k = len(b.input_ids)
            input_ids[i, :k] = torch.tensor(b.input_ids, dtype=torch.long)
            groups[i, :k] = torch.tensor(b.groups, dtype=torch.long)
            attention[i, :k] = 1
        return input_ids, groups, attention

    def mask(self, input_ids: torch.Tensor, groups: torch.Tensor,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked input ids, labels: the original id where a token is to be predicted, else -100)."""
        g = generator if generator is not None else self.generator
        n_rows = input_ids.shape[0]
        valid = groups != NO_GROUP
        # one unit per (row, group): the same word cut by a block boundary is masked independently
        key = torch.arange(n_rows).unsqueeze(1) * (int(groups.max()) + 2) + groups
        units, inverse = torch.unique(key[valid], return_inverse=True)
        chosen = torch.rand(len(units), generator=g) < self.mlm_probability
        unit_row = units // (int(groups.max()) + 2)
        for row in range(n_rows):  # at least one unit per block, as BERT does: no block without a target
            mine = (unit_row == row).nonzero().flatten()
            if len(mine) and not chosen[mine].any():
                chosen[mine[torch.randint(len(mine), (1,), generator=g)]] = True
        masked = torch.zeros_like(valid)
        masked[valid] = chosen[inverse]
        labels = torch.where(masked, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
        draw = torch.rand(input_ids.shape, generator=g)
        random_ids = torch.randint(self.vocab_size, input_ids.shape, generator=g)
        to_mask = masked & (draw < self.mask_replace_prob)
        to_random = masked & ~to_mask & (draw < self.mask_replace_prob + self.random_replace_prob)
        out = input_ids.clone()
        out[to_mask] = self.mask_id
        out[to_random] = random_ids[to_random]
        return out, labels

    def __call__(self, blocks: Sequence[Block], generator: torch.Generator | None = None) -> dict:
        input_ids, groups, attention = self.pad(blocks)
        masked, labels = self.mask(input_ids, groups, generator)
        return {"input_ids": masked, "attention_mask": attention, "labels": labels,
                "n_tokens": int(attention.sum())}
