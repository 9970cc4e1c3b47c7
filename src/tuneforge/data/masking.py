"""Raw text for masked-LM training: whole-word groups, packing into blocks, dynamic masking."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .cjk import is_cjk_ideograph as is_cjk
from .cjk import load_jieba
from .tokenizing import IGNORE_INDEX, long_inputs_expected

NO_GROUP = -1  # special tokens and document separators: never masked


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
            if segment and any(is_cjk(ch) for ch in text):
                segmenter = segmenter or load_jieba("task.chinese_segmentation")
                cjk_word = {}
                for k, (_, begin, end) in enumerate(segmenter.tokenize(text)):
                    for pos in range(begin, end):
                        cjk_word[pos] = k
            groups, previous, group = [], None, -1
            for pos, word in enumerate(words):
                key = ("word", word)
                if cjk_word is not None:
                    begin, end = enc["offset_mapping"][i][pos]
                    if end - begin == 1 and is_cjk(text[begin]) and begin in cjk_word:
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
