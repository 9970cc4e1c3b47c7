"""Whole texts (text classification): one label per input, long texts by a declared strategy
(head, tail, head_tail, or overlapping windows whose logits are pooled), and their collator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .batching import padded_length
from .tokenizing import long_inputs_expected, special_token_template
from .windows import window_spans


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
