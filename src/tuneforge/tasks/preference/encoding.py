"""Preference pairs as model inputs: each side is the prompt and one answer through the chat template,
labelled on the answer's tokens only (the ``sft`` task's assistant mask, last turn only); a batch holds
the chosen rows, then the rejected rows, of its pairs (one forward for both, as TRL does)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from ...data.readers.preference import SIDES
from ...errors import DataError
from ..causal_lm.encoding import IGNORE, DecoderCollator, Encoded, encode_conversation


@dataclass
class EncodedPair:
    chosen: Encoded
    rejected: Encoded
    reference: tuple[float, float] | None = None  # (chosen, rejected) reference log-probabilities, precomputed


@dataclass
class PairStats:
    pairs: int = 0
    tokens: int = 0
    answer_tokens: int = 0
    truncated: int = 0  # pairs with a side cut at max_length
    truncated_tokens: int = 0
    dropped: list[str] = field(default_factory=list)  # file:line of pairs left with no answer token on a side
    max_length: int = 0

    def describe(self) -> str:
        text = f"{self.pairs:,} pairs, {self.tokens:,} tokens ({self.answer_tokens:,} in the answers)"
        if self.truncated:
            text += (f"; {self.truncated} pairs longer than encoding.max_length {self.max_length} were cut "
                     f"({self.truncated_tokens:,} tokens lost)")
        if self.dropped:
            text += (f"; {len(self.dropped)} left with no answer token on a side after the cut were not used "
                     f"(first: {self.dropped[0]})")
        return text

    def report(self) -> dict:
        return {"pairs": self.pairs, "tokens": self.tokens, "answer_tokens": self.answer_tokens,
                "truncated": self.truncated, "truncated_tokens": self.truncated_tokens, "dropped": len(self.dropped)}


def encode_pairs(tokenizer, examples: Sequence, max_length: int) -> tuple[list[EncodedPair], list, PairStats]:
    """(encoded pairs, the examples they encode, in order, stats); a pair is cut at ``max_length`` per
    side (counted) and left out, counted and named, when a side keeps no answer token."""
    stats = PairStats(max_length=max_length)
    rows, kept = [], []
    for ex in examples:
        where = f"{ex.source}:{ex.line}"
        sides, cut = [], 0
        for side in SIDES:
            item = encode_conversation(tokenizer, ex.conversation(side), where, True, last_answer_only=True)
            stats.tokens += len(item.input_ids)
            if len(item.input_ids) > max_length:
                cut += len(item.input_ids) - max_length
                item = Encoded(item.input_ids[:max_length], item.labels[:max_length])
            sides.append(item)
        stats.pairs += 1
        if cut:
            stats.truncated += 1
            stats.truncated_tokens += cut
        answered = [sum(label != IGNORE for label in item.labels[1:]) for item in sides]
        if not all(answered):
            stats.dropped.append(where)
            continue
        stats.answer_tokens += sum(answered)
        rows.append(EncodedPair(*sides))
        kept.append(ex)
    if not rows:
        raise DataError(f"{examples[0].source if examples else 'the data'}: no pair keeps an answer token on both "
                        f"sides within encoding.max_length {max_length}")
    return rows, kept, stats


class PairCollator:
    """Pairs into one batch: rows ``[chosen_1 .. chosen_n, rejected_1 .. rejected_n]``, right-padded;
    ``reference_logps`` (2n,) when the pairs carry precomputed reference log-probabilities."""

    def __init__(self, pad_token_id: int):
        self.rows = DecoderCollator(pad_token_id)

    def __call__(self, pairs: Sequence[EncodedPair]) -> dict:
        batch = self.rows([p.chosen for p in pairs] + [p.rejected for p in pairs])
        batch["n_rows"] = len(pairs)
        if all(p.reference is not None for p in pairs):
            batch["reference_logps"] = torch.tensor([p.reference[0] for p in pairs] + [p.reference[1] for p in pairs],
                                                    dtype=torch.float32)
        return batch
